"""fastloss.dask: the losses on Dask arrays equal the in-memory calls (float64, 1e-12
relative) on a multi-process LocalCluster and on the threaded scheduler."""
import logging

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

import fastloss  # noqa: E402
import fastloss.dask as fld  # noqa: E402

RTOL = 1e-12


@pytest.fixture(scope="module")
def cluster_client():
    """Two worker processes of one thread each: the graphs (and fastloss) are pickled to
    separate processes."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture(params=["distributed", "threads"])
def compute(request):
    """compute(*lazy) -> the values, on the cluster or the threaded scheduler."""
    if request.param == "threads":
        return lambda *objs: dask.compute(*objs, scheduler="threads")
    client = request.getfixturevalue("cluster_client")
    return lambda *objs: dask.compute(*objs, scheduler=client.get)


def _flat(result):
    """(loss, grad) / (loss, (g1, g2)) / loss as a flat list of arrays."""
    if not isinstance(result, tuple):
        return [result]
    loss, g = result
    return [loss] + (list(g) if isinstance(g, tuple) else [g])


def check_same(compute, fn, args, dargs, reductions=("mean", "sum", "none"), **kw):
    """fastloss.dask.fn on the Dask arguments equals fastloss.fn on the NumPy ones, for
    every reduction, with and without gradients (one compute for all of them)."""
    reductions = [r for r in reductions if "reduction" not in kw]
    calls = [dict(kw, reduction=r, return_grad=g) for r in reductions for g in (False, True)] or \
        [dict(kw, return_grad=g) for g in (False, True)]
    lazy = [getattr(fld, fn)(*dargs, **c) for c in calls]
    got = compute(*lazy)
    for c, res in zip(calls, got):
        want = getattr(fastloss, fn)(*args, **c)
        for w, g in zip(_flat(want), _flat(res), strict=True):
            w, g = np.asarray(w), np.asarray(g)
            assert g.shape == w.shape and g.dtype == w.dtype, (fn, c)
            # the loss to rounding; a gradient entry may differ by a few ulps of the
            # largest entry (the 1/denominator scale is applied after the block's
            # kernel instead of inside it)
            atol = 0.0 if g is _flat(res)[0] else 1e-15 * float(np.nanmax(np.abs(w), initial=0))
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=atol, err_msg=f"{fn} {c}")


RNG = np.random.default_rng(15)
N, C = 103, 7
X = RNG.standard_normal((N, C))
P = RNG.random((N, C))
LABELS = RNG.integers(0, C, N)
LABELS[::4] = -100
CW = RNG.random(C) + 0.1
ROWS = ((40, 13, 50), (C,))           # unequal chunks along the rows


def dx(a, chunks=ROWS):
    return da.from_array(a, chunks=chunks)


@pytest.mark.parametrize("opts", [{}, dict(weight=CW), dict(weight=CW, label_smoothing=0.2),
                                  dict(label_smoothing=0.1, z_loss=1e-3, softcap=3.0),
                                  dict(ignore_index=2)])
def test_cross_entropy_labels(compute, opts):
    y = np.where(LABELS == -100, opts.get("ignore_index", -100), LABELS)
    check_same(compute, "cross_entropy", (X, y), (dx(X), da.from_array(y, chunks=17)), **opts)


def test_cross_entropy_dask_class_weight_and_class_axis_1(compute):
    x = RNG.standard_normal((6, C, 5))
    y = RNG.integers(0, C, (6, 5))
    y[0, :3] = -100
    check_same(compute, "cross_entropy", (x, y),
               (dx(x, ((2, 4), C, (3, 2))), dx(y, ((3, 3), (1, 4)))), axis=1,
               weight=da.from_array(CW), label_smoothing=0.1)


def test_cross_entropy_probabilities(compute):
    check_same(compute, "cross_entropy", (X, P), (dx(X), dx(P, 30)), label_smoothing=0.1,
               weight=CW)


def test_zero_denominator_is_nan_as_in_memory(compute):
    y = np.full(N, -100)
    check_same(compute, "cross_entropy", (X, y), (dx(X), dx(y, 50)), reduction="mean")
    w0 = np.zeros(C)
    check_same(compute, "cross_entropy", (X, LABELS), (dx(X), dx(LABELS, 50)), weight=w0,
               reduction="mean")


@pytest.mark.parametrize("fn, opts", [
    ("mse_loss", dict(weight=CW)), ("l1_loss", {}), ("huber_loss", dict(delta=0.5)),
    ("smooth_l1_loss", dict(beta=0.3, weight=RNG.random((N, 1)))), ("log_cosh_loss", {}),
    ("binary_cross_entropy_with_logits", dict(weight=CW, pos_weight=CW + 1)),
    ("sigmoid_focal_loss", dict(alpha=0.3)),
])
def test_elementwise(compute, fn, opts):
    check_same(compute, fn, (X, P), (dx(X, ((60, 43), (3, 4))), dx(P, 25)), **opts)


def test_regression_dask_weight(compute):
    w = RNG.random((N, C))
    check_same(compute, "mse_loss", (X, P), (dx(X), dx(P)), weight=dx(w, 20))


@pytest.mark.parametrize("fn, opts", [
    ("entropy", {}), ("kl_divergence", dict(temperature=2.0)), ("js_divergence", dict(beta=0.3)),
    ("distillation_loss", dict(temperature=2.0)),
    ("distillation_loss", dict(target=LABELS, alpha=0.3)),
])
def test_divergences(compute, fn, opts):
    args = (X,) if fn == "entropy" else (X, P)
    dopts = dict(opts, target=dx(LABELS, 17)) if "target" in opts else opts
    want = dict(opts)
    for reduction in ("mean", "none"):
        r_np = getattr(fastloss, fn)(*args, reduction=reduction, return_grad=True, **want)
        r_da = compute(getattr(fld, fn)(*[dx(a) for a in args], reduction=reduction,
                                        return_grad=True, **dopts))[0]
        for w, g in zip(_flat(r_np), _flat(r_da), strict=True):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=1e-15 * np.max(np.abs(w)))


def test_logsumexp_and_boxes(compute):
    check_same(compute, "logsumexp", (X,), (dx(X),), reductions=())
    b = RNG.random((50, 4))
    b[:, 2:] += b[:, :2]
    b2 = b[::-1] + 0.1
    check_same(compute, "complete_box_iou_loss", (b, b2), (dx(b, (13, 4)), dx(b2, (20, 4))))


def test_float32_close(compute):
    x = X.astype(np.float32)
    loss, g = compute(*fld.cross_entropy(dx(x), LABELS, weight=CW, return_grad=True))
    want, gw = fastloss.cross_entropy(x, LABELS, weight=CW, return_grad=True)
    assert loss.dtype == np.float32 and g.dtype == np.float32
    # float64 partials, rounded once: the in-memory value up to the order of the additions
    np.testing.assert_array_max_ulp(loss, want, maxulp=1)
    # a sum that cancels (class weights +1 and -1 on mirrored rows): partials rounded to
    # float32 per block gave 0.0 here instead of the in-memory 1.8e-5
    h = np.float32(np.random.default_rng(1).standard_normal((52, C)) * 30)
    xs = np.concatenate([h, h[:, [1, 0, 2, 3, 4, 5, 6]] + np.float32(1e-2)])
    ys, cw = np.repeat([0, 1], 52), np.float32([1, -1, 1, 1, 1, 1, 1])
    lazy = fld.cross_entropy(dx(xs, (13, C)), ys, weight=cw, reduction="sum")
    np.testing.assert_array_max_ulp(compute(lazy)[0], fastloss.cross_entropy(
        xs, ys, weight=cw, reduction="sum"), maxulp=1)
    np.testing.assert_allclose(g, gw, rtol=1e-6, atol=1e-8)


def test_workers_import_this_fastloss(cluster_client):
    import fastloss as here
    paths = cluster_client.run(lambda: __import__("fastloss").__file__)
    assert set(paths.values()) == {here.__file__}


def test_results_are_lazy_and_numpy_passes_through():
    lazy = fld.cross_entropy(dx(X), LABELS, return_grad=True)
    assert isinstance(lazy[0], da.Array) and lazy[0].shape == ()
    assert isinstance(lazy[1], da.Array) and lazy[1].chunks == dx(X).chunks
    got = fld.cross_entropy(X, LABELS)
    assert isinstance(got, np.float64) and got == fastloss.cross_entropy(X, LABELS)


def test_bad_input():
    with pytest.raises(ValueError, match="class axis 1.*rechunk"):
        fld.cross_entropy(dx(X, (50, 3)), LABELS)
    with pytest.raises(ValueError, match="grad_out is not taken"):
        fld.mse_loss(dx(X), P, return_grad=True, grad_out=np.empty_like(X))
    with pytest.raises(ValueError, match="return_stats is not taken"):
        fld.cross_entropy(dx(X), LABELS, return_stats=True)
    with pytest.raises(ValueError, match="where= is not taken with Dask arrays by fastloss.dask.generalized_box_iou_loss"):
        boxes = np.tile([0.0, 0.0, 1.0, 1.0], (4, 1))
        fld.generalized_box_iou_loss(dx(boxes, 2), boxes, where=np.ones(4, bool))
    with pytest.raises(ValueError, match=r"where of shape \(5,\) does not broadcast"):
        fld.kl_divergence(dx(X), dx(X), where=np.ones(5, bool))
    with pytest.raises(TypeError, match="where must be a boolean array"):
        fld.entropy(dx(X), where=np.ones(N))
    with pytest.raises(ValueError, match="target_kind is not taken"):
        fld.cross_entropy(dx(X), LABELS.astype(float), target_kind="labels")
    with pytest.raises(ValueError, match="label_smoothing"):
        fld.cross_entropy(dx(X), LABELS, label_smoothing=2.0)      # at graph time
    with pytest.raises(ValueError, match="reduction"):
        fld.entropy(dx(X), reduction="avg")
    with pytest.raises(ValueError, match="target has shape"):
        fld.cross_entropy(dx(X), LABELS[:-1])
    with pytest.raises(ValueError, match="does not broadcast"):
        fld.mse_loss(dx(X), P, weight=np.ones(3))
    with pytest.raises(ValueError, match="int axis"):
        fld.logsumexp(dx(X), axis=None)
    bad = LABELS.copy()
    bad[90] = C
    lazy = fld.cross_entropy(dx(X), dx(bad, 17))                      # a value: at compute time
    with pytest.raises(IndexError, match="out of range"):
        lazy.compute(scheduler="sync")


def test_whole_batch_losses(compute):
    q, k = X[:, :4], P[:, :4]
    lazy = fld.info_nce_loss(dx(q, -1), dx(k, -1), return_grad=True)
    (got,) = compute(lazy)
    want = fastloss.info_nce_loss(q, k, return_grad=True)
    for w, g in zip(_flat(want), _flat(got), strict=True):
        np.testing.assert_array_equal(g, w)
    with pytest.raises(ValueError, match="whole batch.*query in 3 chunks"):
        fld.info_nce_loss(dx(q, ((40, 13, 50), 4)), dx(k, -1))


def test_blocks_leave_the_process_setting_alone():
    """Each block sets its own thread's count (the threaded scheduler runs several at
    once): the user's process-wide setting is the same during and after."""
    fastloss.set_num_threads(2)
    try:
        dask.compute(fld.entropy(dx(X, 10)), scheduler="threads", num_workers=4)
        assert fastloss.get_num_threads() == 2
    finally:
        fastloss.set_num_threads(None)


def test_block_threads_travel_with_the_graph(monkeypatch):
    """Each block's kernel runs with the BLOCK_THREADS of when the graph was built."""
    seen = []

    def spy(logits, *, axis=-1, reduction="mean", return_grad=False, grad_out=None):
        seen.append(fastloss.get_num_threads())
        return fastloss.entropy(logits, axis=axis, reduction=reduction, return_grad=return_grad,
                                grad_out=grad_out)
    entropy = fld._dask_version(spy, fld._PLANS["entropy"])
    monkeypatch.setattr(fld, "BLOCK_THREADS", 3)
    lazy = entropy(dx(X, 10), return_grad=True)
    monkeypatch.setattr(fld, "BLOCK_THREADS", 1)
    seen.clear()                                   # the option check ran on one thread
    got = dask.compute(*lazy, scheduler="threads")
    assert seen == [3] * 11
    np.testing.assert_allclose(got[0], fastloss.entropy(X), rtol=RTOL)


def test_out_of_core_memmap_and_zarr(compute, tmp_path):
    """The README's out-of-core recipe: a memory-mapped .npy file and, when zarr is
    installed, a Zarr array on disk, read block by block by the workers."""
    np.save(tmp_path / "x.npy", X)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    check_same(compute, "cross_entropy", (X, LABELS), (dx(mm), dx(LABELS, ROWS[:1])),
               weight=CW)
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=X.shape, chunks=(40, C),
                          dtype=X.dtype)
    z[:] = X
    zx = da.from_zarr(str(tmp_path / "x.zarr"))
    assert zx.numblocks == (3, 1)
    check_same(compute, "cross_entropy", (X, LABELS), (zx, LABELS), label_smoothing=0.1)


KEEP = RNG.random(N) > 0.3


@pytest.mark.parametrize("fn, args, opts", [
    ("cross_entropy", "labels", dict(weight=CW, label_smoothing=0.1)),
    ("cross_entropy", "probs", {}),
    ("entropy", "x", dict(labels=LABELS)),
    ("kl_divergence", "xp", {}),
    ("js_divergence", "xp", dict(labels=LABELS, ignore_index=3)),
    ("distillation_loss", "xp", dict(target=LABELS)),
    ("mse_loss", "xp", dict(weight=CW, where=KEEP[:, None])),
    ("binary_cross_entropy_with_logits", "xp", dict(where=np.arange(C) > 2)),
    ("info_nce_loss", "xp", {}),
    ("gaussian_kl", "xp", {}),
])
def test_where(compute, fn, args, opts):
    """where= (NumPy or Dask, per row or broadcast per element) and labels= give the
    in-memory masked results; the mean divides by the kept rows' (weighted) count."""
    arrays = {"labels": (X, LABELS), "probs": (X, P / P.sum(1, keepdims=True)), "x": (X,),
              "xp": (X, P)}[args]
    whole = fn in ("info_nce_loss", "gaussian_kl")
    dargs = tuple(dx(a, -1 if whole else ROWS[0] if a.ndim == 1 else ROWS) for a in arrays)
    opts = dict({"where": KEEP}, **opts)
    check_same(compute, fn, arrays, dargs, **opts)
    if "where" in opts and opts["where"] is KEEP and not whole:        # a Dask mask too
        check_same(compute, fn, arrays, dargs, **dict(opts, where=dx(KEEP, 29)))
