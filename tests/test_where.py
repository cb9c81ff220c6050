"""where= on every loss (DESIGN.md "Masks"): masked items count for nothing in the sum,
the mean's denominator or the gradient. The oracle of a masked call is the same loss on
the unmasked items alone (rows taken out with NumPy indexing); the gradient of a masked
item is 0, whatever its input holds."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastloss

N = 7
KEEP = np.array([1, 0, 1, 1, 0, 1, 1], bool)


def _spd(rng, n, d):
    a = rng.standard_normal((n, d, d))
    return a @ np.swapaxes(a, -1, -2) + d * np.eye(d)


def _cases():
    """name -> (fn, per-sample inputs (first axis N), other per-sample inputs, kwargs,
    number of gradients, compacted: the rows meet each other)."""
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((N, 5)), rng.standard_normal((N, 5))
    p = rng.dirichlet(np.ones(5), N)
    y = rng.integers(0, 5, N)
    boxes = np.concatenate([rng.random((N, 2)), 1 + rng.random((N, 2))], axis=1)
    mu, lv = rng.standard_normal((N, 3)), 0.3 * rng.standard_normal((N, 3))
    pos, neg = x + 0.1 * rng.standard_normal((N, 5)), rng.standard_normal((N, 5))
    return {
        "cross_entropy:labels": (fastloss.cross_entropy, [x], [y], {"label_smoothing": 0.1}, 1, False),
        "cross_entropy:probs": (fastloss.cross_entropy, [x], [p], {"z_loss": 0.01}, 1, False),
        "cross_entropy:weighted": (fastloss.cross_entropy, [x], [y],
                                   {"weight": np.arange(1.0, 6.0)}, 1, False),
        "binary_cross_entropy_with_logits": (fastloss.binary_cross_entropy_with_logits, [x],
                                             [p], {"pos_weight": np.full(5, 2.0)}, 1, False),
        "sigmoid_focal_loss": (fastloss.sigmoid_focal_loss, [x], [p], {}, 1, False),
        "entropy": (fastloss.entropy, [x], [], {}, 1, False),
        "kl_divergence": (fastloss.kl_divergence, [x, t], [], {"temperature": 2.0}, 2, False),
        "js_divergence": (fastloss.js_divergence, [x, t], [], {"beta": 0.3}, 2, False),
        "distillation_loss": (fastloss.distillation_loss, [x, t], [],
                              {"temperature": 2.0}, 1, False),
        "distillation_loss:target": (fastloss.distillation_loss, [x, t], [],
                                     {"target": np.where(np.arange(N) == 2, -100, y)}, 1, False),
        "mse_loss": (fastloss.mse_loss, [x], [t], {"weight": np.arange(5.0)}, 1, False),
        "l1_loss": (fastloss.l1_loss, [x], [t], {}, 1, False),
        "huber_loss": (fastloss.huber_loss, [x], [t], {"delta": 0.5}, 1, False),
        "smooth_l1_loss": (fastloss.smooth_l1_loss, [x], [t], {}, 1, False),
        "log_cosh_loss": (fastloss.log_cosh_loss, [x], [t], {}, 1, False),
        "generalized_box_iou_loss": (fastloss.generalized_box_iou_loss, [boxes, boxes + 0.1],
                                     [], {}, 2, False),
        "distance_box_iou_loss": (fastloss.distance_box_iou_loss, [boxes, boxes * 1.1], [], {},
                                  2, False),
        "complete_box_iou_loss": (fastloss.complete_box_iou_loss, [boxes, boxes + 0.2], [], {},
                                  2, False),
        "gaussian_kl": (fastloss.gaussian_kl, [mu, lv], [], {}, 2, False),
        "mvn_kl": (fastloss.mvn_kl, [mu, _spd(rng, N, 3), mu[::-1].copy(), _spd(rng, N, 3)], [],
                   {}, 4, False),
        "vae_loss": (fastloss.vae_loss, [x], [t, mu, lv], {"beta": 0.5}, 3, False),
        "gaussian_nll_loss": (fastloss.gaussian_nll_loss, [x], [t, 0.5 + rng.random((N, 5))],
                              {}, 2, False),
        "triplet_margin_loss": (fastloss.triplet_margin_loss, [x, pos, neg], [], {}, 3, False),
        "batch_hard_triplet_loss": (fastloss.batch_hard_triplet_loss, [x], [y % 2], {}, 1, True),
        "info_nce_loss": (fastloss.info_nce_loss, [x, pos], [], {"symmetric": True}, 2, True),
        "nt_xent_loss": (fastloss.nt_xent_loss, [x, pos], [], {}, 2, True),
    }


CASES = _cases()


ELEMENTWISE = {"binary_cross_entropy_with_logits", "sigmoid_focal_loss", "mse_loss", "l1_loss",
               "huber_loss", "smooth_l1_loss", "log_cosh_loss", "gaussian_nll_loss"}


def _where(name, keep=KEEP):
    """keep as a mask of the per-item loss: per row, or (N, 1) for per-element losses."""
    return keep[:, None] if name in ELEMENTWISE else keep


def _call(name, keep=None, **kw):
    fn, diff, other, kwargs, _, _ = CASES[name]
    args = [a if keep is None else a[keep] for a in diff + other]
    kwargs = dict(kwargs)
    if keep is not None and "target" in kwargs:
        kwargs["target"] = kwargs["target"][keep]
    return fn(*args, **kwargs, **kw)


def _grads(out):
    g = out[1]
    return list(g) if isinstance(g, tuple) else [g]


def _diff_inputs(name):
    fn, diff, other, _, ngrad, _ = CASES[name]
    if name == "vae_loss":
        return [diff[0], other[1], other[2]]
    if name == "gaussian_nll_loss":
        return [diff[0], other[1]]
    return diff[:ngrad]


def test_every_loss_has_where():
    import inspect
    losses = {n for n in fastloss.__all__ if callable(getattr(fastloss, n))
              and "reduction" in inspect.signature(getattr(fastloss, n)).parameters}
    assert losses and all("where" in inspect.signature(getattr(fastloss, n)).parameters
                          for n in losses)
    assert losses <= {c.split(":")[0] for c in CASES} | {"linear_cross_entropy"}


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_masked_equals_the_unmasked_rows_alone(name, reduction):
    got = _call(name, where=_where(name), reduction=reduction, return_grad=True)
    want = _call(name, keep=KEEP, reduction=reduction, return_grad=True)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12, atol=1e-14)
    for g, w, a in zip(_grads(got), _grads(want), _diff_inputs(name)):
        assert g.shape == np.shape(a)
        if g.shape[:1] == (N,):
            np.testing.assert_allclose(g[KEEP], w, rtol=1e-12, atol=1e-14)
            assert not g[~KEEP].any()
        else:                   # a gradient summed over the rows (none in this table)
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(CASES))
def test_none_holds_zero_where_masked(name):
    got = _call(name, where=_where(name), reduction="none")
    want = _call(name, keep=KEEP, reduction="none")
    if name == "nt_xent_loss":       # two views per pair, z1's rows first
        got, want = got.reshape(2, N), want.reshape(2, -1)
        np.testing.assert_allclose(got[:, KEEP], want, rtol=1e-12)
        assert not got[:, ~KEEP].any()
        return
    np.testing.assert_allclose(got[KEEP], want, rtol=1e-12, atol=1e-14)
    assert not got[~KEEP].any()


# inputs checked before the mask applies: NaN covariances and boxes are errors
CHECKED = {"mvn_kl", "generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"}


@pytest.mark.parametrize("name", sorted(n for n in CASES if not CASES[n][5] and n not in CHECKED))
def test_nan_and_inf_in_masked_rows_count_for_nothing(name):
    fn, diff, other, kwargs, _, _ = CASES[name]
    bad = [a.copy() for a in diff]
    bad[0][1] = np.nan
    bad[0][4] = np.inf
    args = bad + other
    if name == "vae_loss":
        args = [bad[0]] + other
    loss, *g = fn(*args, **kwargs, where=_where(name), return_grad=True)
    want = _call(name, keep=KEEP, return_grad=True)
    np.testing.assert_allclose(loss, want[0], rtol=1e-12)
    for gi in _grads((loss, *g)):
        if gi.shape[:1] == (N,):
            assert not gi[~KEEP].any() and np.isfinite(gi).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_where_all_true_is_no_mask(name):
    ones = np.ones(N, bool)
    got = _call(name, where=_where(name, ones), return_grad=True)
    want = _call(name, return_grad=True)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-13)
    for g, w in zip(_grads(got), _grads(want)):
        np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-15)


def test_where_broadcasts_to_elements():
    rng = np.random.default_rng(1)
    x, t = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    cols = np.array([True, False, True, True, False, True])
    loss, g = fastloss.mse_loss(x, t, where=cols, return_grad=True)   # (6,) against (4, 6)
    r = x - t
    assert loss == pytest.approx(np.mean(r[:, cols] ** 2), rel=1e-13)
    np.testing.assert_allclose(g, np.where(cols, 2 * r / (4 * cols.sum()), 0), rtol=1e-13)
    w = rng.random(6)
    loss = fastloss.mse_loss(x, t, weight=w, where=cols)
    assert loss == pytest.approx(np.sum((w * r * r)[:, cols]) / (4 * np.sum(w[cols])), rel=1e-13)


def test_where_into_grad_out_and_in_place():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((N, 5)).astype(np.float32)
    p = rng.dirichlet(np.ones(5), N).astype(np.float32)
    want = fastloss.cross_entropy(x, p, where=KEEP, return_grad=True)
    buf = np.full_like(x, 7.0)
    loss, g = fastloss.cross_entropy(x, p, where=KEEP, return_grad=True, grad_out=buf)
    assert g is buf and loss == want[0]
    np.testing.assert_array_equal(buf, want[1])
    xc = x.copy()
    loss, g = fastloss.cross_entropy(xc, p, where=KEEP, return_grad=True, grad_out=xc)
    assert g is xc
    np.testing.assert_array_equal(xc, want[1])
    q = rng.standard_normal((N, 5))
    bufs = (np.empty((N, 5)), np.empty((N, 5)))
    loss, g = fastloss.info_nce_loss(x.astype(np.float64), q, where=KEEP, return_grad=True,
                                     grad_out=bufs)
    assert g[0] is bufs[0] and g[1] is bufs[1] and not bufs[0][~KEEP].any()


def test_class_axis_not_last():
    """(N, C, d) logits (PyTorch's layout): where has the rows' shape (N, d)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 20))
    y = rng.integers(0, 4, (3, 20))
    w = rng.random((3, 20)) > 0.3
    loss, g = fastloss.cross_entropy(x, y, axis=1, where=w, return_grad=True)
    want = fastloss.cross_entropy(x, np.where(w, y, -100), axis=1, return_grad=True)
    assert loss == want[0]
    np.testing.assert_array_equal(g, want[1])
    q = rng.standard_normal((3, 4, 20))
    loss, (gp, gq) = fastloss.kl_divergence(x, q, axis=1, where=w, return_grad=True)
    rows = fastloss.kl_divergence(x, q, axis=1, reduction="none")
    assert loss == pytest.approx(rows[w].mean(), rel=1e-13)
    assert not gp.transpose(0, 2, 1)[~w].any() and gp.transpose(0, 2, 1)[w].any()


def test_masked_labels_are_not_checked_and_match_ignore_index():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((N, 5))
    y = rng.integers(0, 5, N)
    y[~KEEP] = 99                    # padding labels outside [0, C): never read
    for fn in (fastloss.cross_entropy,):
        got = fn(x, y, where=KEEP, return_grad=True)
        want = fn(x, np.where(KEEP, y, -100), return_grad=True)
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])
    W = rng.standard_normal((5, 3))
    h = x[:, :3]
    got = fastloss.linear_cross_entropy(h, W, y, where=KEEP, return_grad=True)
    want = fastloss.linear_cross_entropy(h, W, np.where(KEEP, y, -100), return_grad=True)
    assert got[0] == want[0]
    for a, b in zip(got[1], want[1]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(IndexError, match="target"):
        fastloss.cross_entropy(x, y, where=np.ones(N, bool))


def test_torch_ignore_index_parity():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((N, 5))
    y = rng.integers(0, 5, N)
    w = np.arange(1.0, 6.0)
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(xt, torch.tensor(np.where(KEEP, y, -100)),
                                            weight=torch.tensor(w), label_smoothing=0.2)
    ref.backward()
    loss, g = fastloss.cross_entropy(x, y, weight=w, label_smoothing=0.2, where=KEEP,
                                     return_grad=True)
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("fn", [fastloss.entropy, fastloss.kl_divergence, fastloss.js_divergence])
def test_labels_ignore_index_on_divergences(fn):
    rng = np.random.default_rng(6)
    args = [rng.standard_normal((2, N, 5)) for _ in range(1 if fn is fastloss.entropy else 2)]
    labels = rng.integers(0, 5, (2, N))
    labels[0, 1] = labels[1, 3] = -1
    got = fn(*args, labels=labels, ignore_index=-1, return_grad=True)
    want = fn(*args, where=labels != -1, return_grad=True)
    assert got[0] == want[0]
    for a, b in zip(_grads(got), _grads(want)):
        np.testing.assert_array_equal(a, b)
    rows = fn(*args, reduction="none")
    assert got[0] == pytest.approx(rows[labels != -1].mean(), rel=1e-13)
    both = fn(*args, labels=labels, ignore_index=-1, where=np.arange(N) != 0)
    assert both == pytest.approx(rows[(labels != -1) & (np.arange(N) != 0)].mean(), rel=1e-13)
    with pytest.raises(ValueError, match="labels have shape"):
        fn(*args, labels=labels[0])
    with pytest.raises(TypeError, match="labels"):
        fn(*args, labels=labels.astype(float))


def test_broadcast_inputs_get_only_unmasked_rows():
    """mu_q (D,) broadcast against (N, D): its gradient sums the unmasked rows only."""
    rng = np.random.default_rng(7)
    mu, lv, mq = rng.standard_normal((N, 3)), rng.standard_normal((N, 3)), rng.standard_normal(3)
    got = fastloss.gaussian_kl(mu, lv, mq, where=KEEP, return_grad=True)
    want = fastloss.gaussian_kl(mu[KEEP], lv[KEEP], mq, return_grad=True)
    assert got[0] == pytest.approx(want[0], rel=1e-13)
    np.testing.assert_allclose(got[1][2], want[1][2], rtol=1e-13)
    x, t, v = rng.standard_normal((N, 4)), rng.standard_normal((N, 4)), 0.5 + rng.random(N)
    out = (np.empty((N, 4)), np.empty(N))
    got = fastloss.gaussian_nll_loss(x, t, v, where=KEEP[:, None], return_grad=True, grad_out=out)
    want = fastloss.gaussian_nll_loss(x[KEEP], t[KEEP], v[KEEP], return_grad=True)
    assert got[1][1] is out[1]
    np.testing.assert_allclose(out[1][KEEP], want[1][1], rtol=1e-13)
    assert not out[1][~KEEP].any()


def test_stats_under_where():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((N, 5))
    y = np.argmax(x, axis=1)                 # every row correct
    _, st = fastloss.cross_entropy(x, y, where=KEEP, return_stats=True)
    np.testing.assert_array_equal(st.correct, KEEP)
    np.testing.assert_array_equal(st.argmax, y)
    p = np.eye(5)[y]
    _, st = fastloss.cross_entropy(x, p, where=KEEP, return_stats=True)
    np.testing.assert_array_equal(st.correct, KEEP)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_inputs(dtype):
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    rng = np.random.default_rng(9)
    x = rng.standard_normal((N, 64)).astype(dtype)
    q = rng.standard_normal((N, 64)).astype(dtype)
    y = rng.integers(0, 64, N)
    for got, want in ((fastloss.cross_entropy(x, y, where=KEEP, return_grad=True),
                       fastloss.cross_entropy(x[KEEP], y[KEEP], return_grad=True)),
                      (fastloss.kl_divergence(x, q, where=KEEP, return_grad=True),
                       fastloss.kl_divergence(x[KEEP], q[KEEP], return_grad=True))):
        assert got[0] == want[0]
        g, w = _grads(got)[0], _grads(want)[0]
        assert g.dtype == x.dtype
        np.testing.assert_array_equal(g[KEEP], w)
        assert not g[~KEEP].astype(np.float32).any()


def test_nothing_kept():
    x = np.ones((3, 4))
    none = np.zeros(3, bool)
    loss, g = fastloss.kl_divergence(x, x, where=none, return_grad=True)
    assert np.isnan(loss) and not g[0].any()            # 0 / 0, as an all-ignored mean
    assert fastloss.mse_loss(x, x, where=none[:, None], reduction="sum") == 0
    boxes = np.array([[0.0, 0.0, 1.0, 1.0]] * 3)
    assert fastloss.generalized_box_iou_loss(boxes, boxes, where=none) == 0   # torchvision's mean


def test_bad_where():
    x = np.ones((3, 4))
    with pytest.raises(TypeError, match="where must be a boolean array"):
        fastloss.entropy(x, where=np.ones(3))
    with pytest.raises(ValueError, match="where of shape"):
        fastloss.entropy(x, where=np.ones(4, bool))
    with pytest.raises(ValueError, match="where of shape"):
        fastloss.mse_loss(x, x, where=np.ones((3, 4, 1), bool))
    with pytest.raises(ValueError, match="where keeps 1 of 3 samples"):
        fastloss.nt_xent_loss(x, x, where=np.array([True, False, False]))


ROW_LOSSES = {
    "cross_entropy": lambda x, r: (fastloss.cross_entropy, [x], [r.integers(0, x.shape[-1], x.shape[0])]),
    "cross_entropy:probs": lambda x, r: (fastloss.cross_entropy, [x],
                                         [r.dirichlet(np.ones(x.shape[-1]), x.shape[0]).astype(x.dtype)]),
    "kl_divergence": lambda x, r: (fastloss.kl_divergence, [x, x[::-1].copy()], []),
    "entropy": lambda x, r: (fastloss.entropy, [x], []),
    "mse_loss": lambda x, r: (fastloss.mse_loss, [x], [x[::-1].copy()]),
}


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 24), c=st.integers(1, 40), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**32 - 1), name=st.sampled_from(sorted(ROW_LOSSES)),
       reduction=st.sampled_from(["mean", "sum"]))
def test_property_masked_rows_are_the_kept_rows(n, c, dtype, seed, name, reduction):
    r = np.random.default_rng(seed)
    x = (3 * r.standard_normal((n, c))).astype(dtype)
    keep = r.random(n) < r.random()                     # all kept or none kept included
    fn, diff, other = ROW_LOSSES[name](x, r)
    where = keep[:, None] if name == "mse_loss" else keep
    got = fn(*diff, *other, where=where, reduction=reduction, return_grad=True)
    want = fn(*[a[keep] for a in diff + other], reduction=reduction, return_grad=True)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[0], want[0], rtol=tol, atol=tol * 1e-3)
    for g, w in zip(_grads(got), _grads(want)):
        assert g.dtype == dtype and g.shape == x.shape
        np.testing.assert_allclose(g[keep], w, rtol=tol, atol=tol * 1e-3)
        assert not g[~keep].any()


def test_grad_out_checked_as_without_where():
    """The masked paths that write grad_out themselves check it as the unmasked call
    does: shape and dtype, and no overlap with an input."""
    rng = np.random.default_rng(12)
    q, k = rng.standard_normal((N, 4)), rng.standard_normal((N, 4))
    with pytest.raises(ValueError, match=r"grad_out\[0\] must not overlap query"):
        fastloss.info_nce_loss(q, k, where=KEEP, return_grad=True, grad_out=(q, np.empty_like(k)))
    with pytest.raises(ValueError, match=r"grad_out\[1\]"):
        fastloss.nt_xent_loss(q, k, where=KEEP, return_grad=True,
                              grad_out=(np.empty_like(q), np.empty((N, 5))))
    mu, lv = rng.standard_normal((N, 3)), rng.standard_normal((N, 3))
    with pytest.raises(ValueError, match=r"grad_out\[1\] must not overlap logvar_p"):
        fastloss.gaussian_kl(mu, lv, where=KEEP, return_grad=True, grad_out=(np.empty_like(mu), lv))
    with pytest.raises(TypeError):
        fastloss.gaussian_kl(mu, lv, where=KEEP, return_grad=True,
                             grad_out=(np.empty((N, 3), np.float32), np.empty_like(lv)))


SIGMOID = {
    "binary_cross_entropy_with_logits": (fastloss.binary_cross_entropy_with_logits,
                                         {"weight": np.linspace(0.5, 2.0, 37),
                                          "pos_weight": np.full(37, 3.0)}),
    "sigmoid_focal_loss": (fastloss.sigmoid_focal_loss, {}),
    "sigmoid_focal_loss:gamma": (fastloss.sigmoid_focal_loss, {"gamma": 0.5, "alpha": -1.0}),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(SIGMOID))
def test_sigmoid_where_per_element_in_the_kernel(simd, monkeypatch, name, dtype):
    """A mask per element (not per row) and a (C,) mask broadcast over rows, in the BCE and
    focal kernels (the generic `independent` path is not taken): the loss is the oracle's
    per-element losses summed over the kept elements (over their count for "mean"), the
    gradient the oracle's, scaled alike, where kept and exactly 0 elsewhere, also where the
    logits hold NaN or inf; "none" holds 0 where masked."""
    import fastloss.classification
    import fastloss.reference as ref

    def no_generic_path(*args, **kwargs):
        raise AssertionError("the generic where= path was taken")
    monkeypatch.setattr(fastloss.classification, "independent", no_generic_path)
    fn, kw = SIGMOID[name]
    r = np.random.default_rng(13)
    x = (3 * r.standard_normal((300, 37))).astype(dtype)   # > one kernel block of elements
    t = r.random((300, 37)).astype(dtype)
    t[::3] = np.round(t[::3])
    rfn = getattr(ref, name.split(":")[0])
    rl, rg = rfn(x, t, **kw, reduction="none", return_grad=True)
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for keep in (r.random(x.shape) < 0.6, r.random(37) < 0.5):
        full = np.broadcast_to(keep, x.shape)
        bad = x.copy()
        bad[~full] = np.where(r.random(np.count_nonzero(~full)) < 0.5, np.nan, np.inf)
        n = np.count_nonzero(full)
        for reduction, scale in (("mean", 1.0 / n), ("sum", 1.0)):
            loss, g = fn(bad, t, **kw, where=keep, reduction=reduction, return_grad=True)
            assert loss.dtype == dtype and g.dtype == dtype
            np.testing.assert_allclose(loss, np.sum(rl[full]) * scale, **tol)
            np.testing.assert_allclose(g, np.where(full, rg * scale, 0), **tol)
            assert not g[~full].any()
        none = fn(bad, t, **kw, where=keep, reduction="none")
        np.testing.assert_allclose(none, np.where(full, rl, 0), **tol)
        assert not none[~full].any()
    nothing = np.zeros(37, bool)
    loss, g = fn(x, t, **kw, where=nothing, return_grad=True)     # mean of nothing: NaN
    assert np.isnan(loss) and not g.any()
    assert fn(x, t, **kw, where=nothing, reduction="sum") == 0


def test_sigmoid_where_bitwise_identical_across_threads():
    r = np.random.default_rng(14)
    x = r.standard_normal((700, 1001)).astype(np.float32)
    t = r.random((700, 1001)).astype(np.float32)
    keep = r.random((700, 1001)) < 0.7
    results = []
    for n in (1, 2, 3):
        with fastloss.threads(n):
            results.append([fastloss.binary_cross_entropy_with_logits(x, t, where=keep, return_grad=True),
                            fastloss.sigmoid_focal_loss(x, t, where=keep, return_grad=True)])
    for other in results[1:]:
        for (l0, g0), (l1, g1) in zip(results[0], other):
            assert l0.tobytes() == l1.tobytes() and g0.tobytes() == g1.tobytes()


@pytest.mark.parametrize("fn", [fastloss.entropy, fastloss.kl_divergence, fastloss.js_divergence,
                                fastloss.distillation_loss, fastloss.cross_entropy])
def test_mask_broadcast_over_rows(fn):
    """A (T,) mask against (B, T) rows counts B * kept rows in the mean, as the same mask
    written out at full size."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((3, 5, 4))
    other = rng.integers(0, 4, (3, 5)) if fn is fastloss.cross_entropy else rng.standard_normal((3, 5, 4))
    args = (x,) if fn is fastloss.entropy else (x, other)
    keep = np.array([True, False, True, True, False])
    for reduction in ("mean", "sum", "none"):
        got = fn(*args, where=keep, reduction=reduction, return_grad=True)
        want = fn(*args, where=np.broadcast_to(keep, (3, 5)).copy(), reduction=reduction,
                  return_grad=True)
        np.testing.assert_array_equal(got[0], want[0])
        for g, w in zip(_grads(got), _grads(want)):
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("layout", ["fortran", "strided", "reversed", "broadcast"])
def test_mask_layout_keeps_the_bits(layout):
    """A mask in Fortran order, strided, with negative strides or a broadcast view gives the
    bits of the same mask in C order (the masked sums add in C order, not the mask's)."""
    r = np.random.default_rng(0)
    x, t = r.standard_normal((400, 30, 8)), r.standard_normal((400, 30, 8))
    calls = [lambda w: fastloss.entropy(x, where=w, reduction="sum"),
             lambda w: fastloss.kl_divergence(x, t, where=w),
             lambda w: fastloss.cross_entropy(x, np.exp(t) / np.exp(t).sum(-1, keepdims=True),
                                              where=w),
             lambda w: fastloss.gaussian_kl(x, t, where=w, reduction="sum"),
             lambda w: fastloss.gaussian_nll_loss(x[..., 0], t[..., 0], np.abs(t[..., 1]) + 0.1,
                                                  where=w, reduction="sum")]
    for seed in range(4):        # which masks change the last bit is a matter of luck
        m = np.random.default_rng(seed).uniform(size=(400, 30)) < 0.8
        if layout == "broadcast":
            m = np.broadcast_to(m[:, :1], m.shape)
        other = {"fortran": np.asfortranarray(m), "strided": np.repeat(m, 2, axis=1)[:, ::2],
                 "reversed": m[::-1].copy()[::-1], "broadcast": m}[layout]
        m = np.ascontiguousarray(m)
        for call in calls:
            assert call(m).tobytes() == call(other).tobytes()
