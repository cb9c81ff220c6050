"""Metric-learning and contrastive losses against the float64 oracles, finite differences
and PyTorch; determinism across threads, the blocked (large-matrix) paths, edge cases,
layouts, gradient buffers and bad input."""
import numpy as np
import pytest

import fastloss as fl
from fastloss import _blas, _metric, metric
from fastloss.metric import (batch_hard_triplet_loss, info_nce_loss, nt_xent_loss, pairwise_distances,
                             triplet_margin_loss)
from fastloss.reference import metric as ref
from helpers import TOL, assert_close, fd_grad

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


def _as_tuple(g):
    return g if isinstance(g, tuple) else (g,)


def _check(fast, oracle, dtype, loss_tol=None):
    loss, grads = fast
    rloss, rgrads = oracle
    assert np.asarray(loss).dtype == dtype
    if loss_tol is None:
        assert_close(loss, rloss, dtype)
    else:
        np.testing.assert_allclose(np.asarray(loss, np.float64), rloss, **loss_tol)
    for g, r in zip(_as_tuple(grads), _as_tuple(rgrads)):
        assert g.dtype == dtype
        assert_close(g, r, dtype, grad=True)


def _emb(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# --- pairwise distances -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric_name", ["sqeuclidean", "euclidean", "cosine"])
@pytest.mark.parametrize("self_", [False, True])
def test_pairwise_distances_oracle(simd, rng, dtype, metric_name, self_):
    x = _emb(rng, (41, 19), dtype)
    y = None if self_ else _emb(rng, (23, 19), dtype)
    d = pairwise_distances(x, y, metric=metric_name)
    r = ref.pairwise_distances(x, y, metric=metric_name)
    assert d.dtype == dtype and d.shape == r.shape
    # the GEMM identity loses about eps * (||a||^2 + ||b||^2) in absolute terms
    scale = 2 * np.max(np.sum(np.asarray(x, np.float64) ** 2, axis=1))
    eps = np.finfo(dtype).eps
    atol = {"sqeuclidean": 64 * eps * scale, "euclidean": 64 * eps * np.sqrt(scale),
            "cosine": 64 * eps}[metric_name]
    np.testing.assert_allclose(d, r, rtol=TOL[np.dtype(dtype)]["rtol"] * 10, atol=atol)
    if self_:
        assert np.all(np.diag(d) == 0)
        assert np.all(d >= 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("metric_name", ["sqeuclidean", "euclidean", "cosine"])
@pytest.mark.parametrize("syrk", [True, False], ids=["syrk", "gemm"])
def test_pairwise_self_syrk_and_gemm(simd, rng, monkeypatch, dtype, metric_name, syrk):
    """x with itself: with SciPy the lower triangle from syrk, each distance computed once
    and mirrored (tiles of the vector width in strips of 16 columns: sizes around both), else
    NumPy's gemm; both match the oracle, the syrk path exactly symmetric."""
    if syrk:
        pytest.importorskip("scipy")
    else:
        monkeypatch.setattr(_blas, "scipy_blas", lambda dtype: None)
    eps = np.finfo(dtype).eps
    for N in (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 47, 64, 100):
        x = _emb(rng, (N, 6), dtype)
        x[N // 2] = 0                               # a zero row (cosine: distance 1)
        d = pairwise_distances(x, metric=metric_name)
        r = ref.pairwise_distances(x, metric=metric_name)
        scale = 2 * np.max(np.sum(np.asarray(x, np.float64) ** 2, axis=1))
        atol = {"sqeuclidean": 64 * eps * scale, "euclidean": 64 * eps * np.sqrt(scale),
                "cosine": 64 * eps}[metric_name]
        np.testing.assert_allclose(d, r, rtol=TOL[np.dtype(dtype)]["rtol"] * 10, atol=atol)
        assert np.all(np.diag(d) == 0) and np.all(d >= 0)
        if syrk:
            np.testing.assert_array_equal(d, d.T)


def test_pairwise_distances_blocks_and_layouts(rng, monkeypatch):
    x = _emb(rng, (300, 10), np.float64)
    y = np.asfortranarray(_emb(rng, (120, 10), np.float64))
    full = pairwise_distances(x, y, metric="euclidean")
    monkeypatch.setattr(metric, "_BLOCK_BYTES", 2000)        # blocks of 2 rows
    blocked = pairwise_distances(x[:, ::1], y, metric="euclidean")
    np.testing.assert_array_equal(full, blocked)
    np.testing.assert_allclose(full, ref.pairwise_distances(x, y, metric="euclidean"), rtol=1e-12)
    ints = pairwise_distances(np.arange(12).reshape(4, 3))
    assert ints.dtype == np.float64
    np.testing.assert_allclose(ints, ref.pairwise_distances(np.arange(12).reshape(4, 3)))
    assert pairwise_distances(x.astype(np.float16)).dtype == np.float32
    assert pairwise_distances(x.astype(np.float32), y).dtype == np.float64


def test_pairwise_distances_edges():
    assert pairwise_distances(np.zeros((0, 3)), np.ones((4, 3))).shape == (0, 4)
    assert pairwise_distances(np.zeros((2, 0))).tolist() == [[0, 0], [0, 0]]
    z = np.array([[0.0, 0.0], [1.0, 0.0]])
    c = pairwise_distances(z, z[::-1].copy(), metric="cosine")
    assert c[0, 0] == 1.0 and c[1, 0] == 0.0      # a zero row has similarity 0
    x = np.array([[1.0, 2.0], [np.nan, 0.0], [3.0, 1.0]])
    for m in ("sqeuclidean", "euclidean", "cosine"):
        d = pairwise_distances(x, metric=m)
        assert np.isnan(d[1]).all() and np.isnan(d[:, 1]).all()
        assert not np.isnan(d[[0, 2]][:, [0, 2]]).any()


def test_pairwise_distances_bad_input():
    with pytest.raises(ValueError, match="metric"):
        pairwise_distances(np.ones((2, 2)), metric="manhattan")
    with pytest.raises(ValueError, match="y has 3 features"):
        pairwise_distances(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="x must be at least 2-D"):
        pairwise_distances(np.ones(3))
    with pytest.raises(ValueError, match="batch shapes of x"):
        pairwise_distances(np.ones((2, 3, 2)), np.ones((4, 3, 2)))
    with pytest.raises(TypeError, match="x must be real"):
        pairwise_distances(np.ones((2, 2), complex))


@pytest.mark.parametrize("metric_name", ["sqeuclidean", "euclidean", "cosine"])
@pytest.mark.parametrize("xb,yb", [((3,), (3,)), ((2, 1), (1, 4)), ((), (2,)), ((2, 3), None)])
def test_pairwise_distances_batched(rng, metric_name, xb, yb):
    """(..., N, D) x (..., M, D) -> (..., N, M), batch dimensions broadcast as torch.cdist."""
    x = _emb(rng, xb + (5, 3), np.float64)
    y = None if yb is None else _emb(rng, yb + (4, 3), np.float64)
    d = pairwise_distances(x, y, metric=metric_name)
    batch = xb if y is None else np.broadcast_shapes(xb, yb)
    assert d.shape == batch + (5, 5 if y is None else 4)
    xf = np.broadcast_to(x, batch + x.shape[-2:])
    yf = xf if y is None else np.broadcast_to(y, batch + y.shape[-2:])
    for i in np.ndindex(batch):
        want = ref.pairwise_distances(xf[i], None if y is None else yf[i], metric=metric_name)
        np.testing.assert_allclose(d[i], want, rtol=1e-12, atol=1e-12)
    torch = pytest.importorskip("torch")
    if metric_name != "cosine":
        t = torch.cdist(torch.from_numpy(x), torch.from_numpy(x if y is None else y)).numpy()
        np.testing.assert_allclose(d, t ** 2 if metric_name == "sqeuclidean" else t,
                                   rtol=1e-10, atol=1e-12)
    assert pairwise_distances(np.ones((2, 0, 3)), np.ones((4, 3))).shape == (2, 0, 4)


# Special values: an entry of +inf, -inf or NaN in one row. A non-finite row is computed from
# the direct formula and affects only its own row and column (test_pairwise_special).
SPECIAL = [np.inf, -np.inf, np.nan]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")    # the oracles' inf - inf
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", SPECIAL, ids=str)
@pytest.mark.parametrize("metric_name", ["sqeuclidean", "euclidean", "cosine"])
@pytest.mark.parametrize("where", ["x", "y", "self", "two rows"])
def test_pairwise_special(rng, dtype, value, metric_name, where):
    x, y = _emb(rng, (6, 3), dtype), _emb(rng, (5, 3), dtype)
    (y if where == "y" else x)[2, 1] = value
    if where == "two rows":
        x[4, 1] = -value       # inf - (-inf) = inf, (-inf) - inf = -inf: both inf when squared
    yy = None if where in ("self", "two rows") else y
    d = pairwise_distances(x, yy, metric=metric_name)
    r = ref.pairwise_distances(x, yy, metric=metric_name)
    np.testing.assert_array_equal(np.isnan(d), np.isnan(r))
    np.testing.assert_array_equal(np.isinf(d), np.isinf(r))
    ok = np.isfinite(r)
    np.testing.assert_allclose(d[ok], r[ok], rtol=1e-4, atol=1e-5)
    bad = 2
    keep_r = np.arange(d.shape[0]) != bad if where != "y" else slice(None)
    keep_c = np.arange(d.shape[1]) != bad if where != "x" else slice(None)
    if where != "two rows":
        assert np.isfinite(d[keep_r][:, keep_c]).all()      # the other rows are not poisoned
    if metric_name != "cosine":
        # inf against any finite row, NaN on its own diagonal (x - x = inf - inf) as torch.cdist
        line = d[:, bad] if where == "y" else d[bad]
        want = np.isnan(value) or (where in ("self", "two rows"))
        assert np.isnan(line).any() == want
        if not np.isnan(value):
            fin = np.isfinite(y).all(1) if where == "x" else np.isfinite(x).all(1)
            assert np.isinf(line[fin]).all()
    else:
        assert np.isnan(d[:, bad] if where == "y" else d[bad]).all()


def _assert_same_special(fast, oracle, dtype):
    """assert_close on the loss and each gradient: NaN and inf (with signs) in the same places."""
    assert_close(fast[0], oracle[0], dtype)
    for f, r in zip(fast[1:], oracle[1:]):
        assert_close(f, r, dtype, grad=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("metric_name", ["sqeuclidean", "euclidean", "cosine"])
def test_pairwise_overflowing_rows(rng, metric_name):
    """A finite float32 row whose squared norm overflows float32 is computed directly too:
    the oracle's values rounded to float32 (inf where they overflow), 0 on the diagonal."""
    x = _emb(rng, (5, 3), np.float32)
    x[1] *= np.float32(1e20)
    d = pairwise_distances(x, metric=metric_name)
    r = ref.pairwise_distances(x, metric=metric_name).astype(np.float32)
    assert not np.isnan(d).any() and np.all(np.diag(d) == 0)
    np.testing.assert_allclose(d, r, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")    # the oracles' inf - inf
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", SPECIAL, ids=str)
@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("kw", [dict(), dict(p=1.0), dict(p=np.inf), dict(p=3.0), dict(swap=True),
                                dict(squared=True)], ids=str)
def test_triplet_special(rng, dtype, value, which, kw):
    """inf or NaN in the anchor, positive or negative of row 1: losses and gradients as the
    oracle (a NaN loss has NaN gradients in all three rows; a hinge below 0 has zero ones;
    a distance that does not enter, e.g. the unused one of swap, contributes nothing);
    the other rows are untouched."""
    t = [_emb(rng, (4, 6), dtype) for _ in range(3)]
    t[which][1, 2] = value
    loss, g = triplet_margin_loss(*t, reduction="none", return_grad=True, **kw)
    rloss, rg = ref.triplet_margin_loss(*t, reduction="none", return_grad=True, **kw)
    _assert_same_special((loss,) + g, (rloss,) + rg, dtype)
    assert np.isfinite(np.delete(loss, 1)).all()
    assert all(np.isfinite(np.delete(gi, 1, 0)).all() for gi in g)
    if np.isnan(loss[1]):
        assert all(np.isnan(gi[1]).all() for gi in g)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")    # the oracles' inf - inf
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", SPECIAL, ids=str)
@pytest.mark.parametrize("kw", [dict(), dict(squared=True), dict(mining="all"),
                                dict(mining="all", squared=True)], ids=str)
def test_batch_hard_special(simd, rng, dtype, value, kw):
    """One embedding with an inf or NaN entry: the distances are pairwise_distances' (the
    GEMM identity alone gave NaN everywhere); anchors meeting a NaN distance, or with
    d_ap - d_an = inf - inf, have loss NaN and make the gradient NaN; other anchors keep
    their finite (or inf) losses."""
    E = _emb(rng, (10, 5), dtype)
    lab = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0])
    E[2, 1] = value
    loss, g = batch_hard_triplet_loss(E, lab, reduction="none", return_grad=True, **kw)
    rloss, rg = ref.batch_hard_triplet_loss(E, lab, reduction="none", return_grad=True, **kw)
    _assert_same_special((loss, g), (rloss, rg), dtype)
    if np.isnan(value):
        assert np.isnan(loss).all() and np.isnan(g).all()
    else:
        assert np.isnan(loss[2]) and np.isnan(g).all()
        assert np.isfinite(loss[lab != 1]).all()      # anchors of other labels: finite
        assert np.isposinf(loss[[3, 7]]).all()        # the farthest positive is at inf
    fin = E.copy()
    fin[2, 1] = 0.0                                    # a finite batch keeps the fast path
    _check(batch_hard_triplet_loss(fin, lab, return_grad=True, **kw),
           ref.batch_hard_triplet_loss(fin, lab, return_grad=True, **kw), dtype)



# --- triplet margin loss ------------------------------------------------------------------

TRIPLET_CASES = [dict(), dict(swap=True), dict(p=1.0), dict(p=np.inf), dict(p=3.0),
                 dict(p=1.5, swap=True, margin=0.3), dict(squared=True), dict(margin=0.0, eps=0.0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kw", TRIPLET_CASES, ids=str)
def test_triplet_oracle(simd, rng, dtype, reduction, kw):
    a, p, n = (_emb(rng, (37, 21), dtype) for _ in range(3))
    kw = dict(kw, reduction=reduction, return_grad=True)
    # a loss is a difference of distances, each rounded to the dtype
    scale = 4.0 * 21 if kw.get("squared") else np.sqrt(4.0 * 21)
    tol = dict(rtol=TOL[np.dtype(dtype)]["rtol"], atol=TOL[np.dtype(dtype)]["atol"] + 8 * np.finfo(dtype).eps * scale)
    _check(triplet_margin_loss(a, p, n, **kw), ref.triplet_margin_loss(a, p, n, **kw), dtype, tol)


@pytest.mark.parametrize("kw", [dict(), dict(swap=True), dict(p=1.0), dict(p=3.0), dict(squared=True),
                                dict(p=np.inf, swap=True)], ids=str)
def test_triplet_fd(rng, kw):
    a, p, n = (_emb(rng, (4, 5), np.float64) for _ in range(3))
    _, grads = triplet_margin_loss(a, p, n, margin=3.0, return_grad=True, **kw)
    for i, g in enumerate(grads):
        def f(x, i=i):
            args = [a, p, n]
            args[i] = x
            return triplet_margin_loss(*args, margin=3.0, **kw)
        np.testing.assert_allclose(g, fd_grad(f, [a, p, n][i], h=1e-5), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kw", [dict(), dict(swap=True, margin=0.5), dict(p=1.0), dict(p=3.0),
                                dict(p=np.inf)], ids=str)
def test_triplet_torch(rng, kw):
    torch = pytest.importorskip("torch")
    a, p, n = (_emb(rng, (33, 17), np.float64) for _ in range(3))
    ts = [torch.tensor(t, requires_grad=True) for t in (a, p, n)]
    tl = torch.nn.functional.triplet_margin_loss(*ts, **kw)
    tl.backward()
    loss, grads = triplet_margin_loss(a, p, n, return_grad=True, **kw)
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-12)
    for g, t in zip(grads, ts):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_triplet_edges():
    a = np.zeros((0, 4))
    assert np.isnan(triplet_margin_loss(a, a, a))
    assert triplet_margin_loss(a, a, a, reduction="sum") == 0
    loss, grads = triplet_margin_loss(a, a, a, reduction="none", return_grad=True)
    assert loss.shape == (0,) and all(g.shape == (0, 4) for g in grads)
    # one triplet as 1-D vectors; "none" gives a 0-d array
    v = np.array([1.0, 2.0, 3.0])
    assert triplet_margin_loss(v, v, v + 10, reduction="none").shape == ()
    # identical anchor and positive: distance ||eps||, the gradient stays finite
    loss, grads = triplet_margin_loss(v, v, v, margin=1.0, eps=0.0, return_grad=True)
    assert loss == 1.0 and all(np.all(g == 0) for g in grads[:2])
    # NaN propagates, an infinitely far negative gives 0
    x = np.ones((3, 4))
    y = x.copy()
    y[1, 2] = np.nan
    l, grads = triplet_margin_loss(x, x + 0.5, y, reduction="none", return_grad=True)
    assert np.isnan(l[1]) and not np.isnan(l[[0, 2]]).any() and np.isnan(grads[0][1]).all()
    y[1, 2] = np.inf
    assert triplet_margin_loss(x, x + 0.5, y, reduction="none")[1] == 0
    # layouts and dtypes
    a, p, n = (np.asfortranarray(np.random.default_rng(0).standard_normal((6, 3))) for _ in range(3))
    ref_l = ref.triplet_margin_loss(a, p, n)
    np.testing.assert_allclose(triplet_margin_loss(a, p[:, ::1], n), ref_l, rtol=1e-12)
    assert triplet_margin_loss(a.astype(np.float16), p.astype(np.float16), n.astype(np.float16)).dtype == np.float32
    assert triplet_margin_loss(a.astype(np.float32), p, n).dtype == np.float64
    assert triplet_margin_loss(np.ones((2, 2), int), np.zeros((2, 2), int), np.ones((2, 2), int)).dtype == np.float64


def test_triplet_bad_input():
    x = np.ones((3, 4))
    with pytest.raises(ValueError, match="positive has shape"):
        triplet_margin_loss(x, np.ones((3, 5)), x)
    with pytest.raises(ValueError, match="negative has shape"):
        triplet_margin_loss(x, x, np.ones((2, 4)))
    with pytest.raises(ValueError, match="margin"):
        triplet_margin_loss(x, x, x, margin=-1)
    with pytest.raises(ValueError, match="p must be >"):
        triplet_margin_loss(x, x, x, p=0)
    with pytest.raises(ValueError, match="eps"):
        triplet_margin_loss(x, x, x, eps=-1e-3)
    with pytest.raises(ValueError, match="p must be 2"):
        triplet_margin_loss(x, x, x, p=1, squared=True)
    with pytest.raises(ValueError, match="anchor must be"):
        triplet_margin_loss(np.ones((2, 2, 2)), np.ones((2, 2, 2)), np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="reduction"):
        triplet_margin_loss(x, x, x, reduction="avg")
    with pytest.raises(ValueError, match="grad_out"):
        triplet_margin_loss(x, x, x, grad_out=(x, x, x))
    with pytest.raises(ValueError, match="grad_out must be a tuple of 3 arrays"):
        triplet_margin_loss(x, x, x, return_grad=True, grad_out=(x.copy(),))


def test_triplet_grad_out(rng):
    a, p, n = (_emb(rng, (5, 3), np.float32) for _ in range(3))
    bufs = tuple(np.full_like(a, 7) for _ in range(3))
    _, grads = triplet_margin_loss(a, p, n, margin=5.0, return_grad=True, grad_out=bufs)
    assert all(g is b for g, b in zip(grads, bufs))
    expected = ref.triplet_margin_loss(a, p, n, margin=5.0, return_grad=True)[1]
    for g, e in zip(grads, expected):
        assert_close(g, e, np.float32, grad=True)


# --- batch-hard / batch-all ---------------------------------------------------------------

BH_CASES = [dict(), dict(squared=True, margin=5.0), dict(mining="all"), dict(mining="all", squared=True),
            dict(margin=0.0)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kw", BH_CASES, ids=str)
def test_batch_hard_oracle(simd, rng, dtype, reduction, kw):
    if dtype == np.float32:
        # float32 mining uses GEMM-identity distances: with halves as coordinates they are
        # exact, so the choices (and ties) are the oracle's; random data would now and then
        # put a candidate or a triplet within rounding of another / of the margin
        E = (rng.integers(-6, 7, (45, 9)) / 2).astype(dtype)
    else:
        E = _emb(rng, (45, 9), dtype)
    lab = rng.integers(0, 5, 45)
    lab[:2] = 99        # one class of two
    lab[2] = 100        # an anchor without a positive
    kw = dict(kw, reduction=reduction, return_grad=True)
    _check(batch_hard_triplet_loss(E, lab, **kw), ref.batch_hard_triplet_loss(E, lab, **kw), dtype)


@pytest.mark.parametrize("kw", [dict(), dict(squared=True), dict(mining="all"),
                                dict(mining="all", squared=True, reduction="sum")], ids=str)
def test_batch_hard_fd(rng, kw):
    E = _emb(rng, (10, 4), np.float64)
    lab = np.array([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    _, g = batch_hard_triplet_loss(E, lab, margin=1.0, return_grad=True, **kw)
    num = fd_grad(lambda x: batch_hard_triplet_loss(x, lab, margin=1.0, **kw), E, h=1e-6)
    # finite differences carry ~eps * |loss| / h of rounding noise: scale atol with the gradient
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8 * max(1.0, np.abs(num).max()))


def _torch_batch_hard(torch, E, lab, margin, squared):
    d = torch.cdist(E, E) if not squared else torch.cdist(E, E) ** 2
    same = lab[:, None] == lab[None, :]
    eye = torch.eye(len(lab), dtype=torch.bool)
    pm, nm = same & ~eye, ~same
    valid = pm.any(1) & nm.any(1)
    dp = torch.where(pm, d, torch.full_like(d, -float("inf"))).max(1).values
    dn = torch.where(nm, d, torch.full_like(d, float("inf"))).min(1).values
    return torch.relu(dp - dn + margin)[valid].mean()


@pytest.mark.parametrize("squared", [False, True])
def test_batch_hard_torch(rng, squared):
    torch = pytest.importorskip("torch")
    E = _emb(rng, (40, 6), np.float64)
    lab = rng.integers(0, 4, 40)
    tE = torch.tensor(E, requires_grad=True)
    tl = _torch_batch_hard(torch, tE, torch.tensor(lab), 0.8, squared)
    tl.backward()
    loss, g = batch_hard_triplet_loss(E, lab, margin=0.8, squared=squared, return_grad=True)
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-12)
    np.testing.assert_allclose(g, tE.grad.numpy(), rtol=1e-9, atol=1e-13)


def test_batch_all_torch(rng):
    torch = pytest.importorskip("torch")
    E = _emb(rng, (24, 5), np.float64)
    lab = rng.integers(0, 3, 24)
    tE = torch.tensor(E, requires_grad=True)
    d = torch.cdist(tE, tE)
    tl_ = torch.tensor(lab)
    same = tl_[:, None] == tl_[None, :]
    ok = (same & ~torch.eye(24, dtype=torch.bool))[:, :, None] & (~same)[:, None, :]
    t = torch.relu(d[:, :, None] - d[:, None, :] + 1.0) * ok
    tl = t.sum() / (t > 0).sum()
    tl.backward()
    loss, g = batch_hard_triplet_loss(E, lab, mining="all", return_grad=True)
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-12)
    np.testing.assert_allclose(g, tE.grad.numpy(), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("block", [7, 64, 512, None], ids=["7", "64", "512", "syrk"])
def test_batch_hard_blocks_and_ties(rng, monkeypatch, block):
    """The triangle walk (row and column parts) over blocks of that many rows of gemm
    products, or (None) one block of syrk's triangle, with exact ties (duplicated rows):
    the first index wins, as the oracle's argmax/argmin."""
    if block is None:
        pytest.importorskip("scipy")
    else:
        monkeypatch.setattr(metric, "HARD_SYRK_BYTES", 0)
        monkeypatch.setattr(metric, "HARD_BLOCK", block)
    E = np.repeat(_emb(rng, (35, 3), np.float64), 2, axis=0)
    lab = rng.integers(0, 4, 70)
    for kw in (dict(), dict(squared=True)):
        _check(batch_hard_triplet_loss(E, lab, return_grad=True, **kw),
               ref.batch_hard_triplet_loss(E, lab, return_grad=True, **kw), np.float64)


def test_batch_hard_edges():
    E = np.random.default_rng(3).standard_normal((6, 3))
    for mining in ("hard", "all"):
        for lab in (np.zeros(6, int), np.arange(6)):        # no negatives / no positives
            loss, g = batch_hard_triplet_loss(E, lab, mining=mining, return_grad=True)
            assert loss == 0 and np.all(g == 0)
        En = E.copy()
        En[2, 1] = np.nan
        assert np.isnan(batch_hard_triplet_loss(En, [0, 0, 1, 1, 2, 2], mining=mining))
        g = batch_hard_triplet_loss(En, [0, 0, 1, 1, 2, 2], mining=mining, return_grad=True)[1]
        assert np.isnan(g).any()
    # labels of any integer dtype; non-contiguous embeddings
    lab = np.array([5, 5, -3, -3, 7, 7], dtype=np.int8)
    Ef = np.asfortranarray(E)
    np.testing.assert_allclose(batch_hard_triplet_loss(Ef, lab), ref.batch_hard_triplet_loss(E, lab),
                               rtol=1e-12)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("mining", ["hard", "all"])
def test_batch_hard_wide_labels(rng, mining):
    """Labels are only compared: int32 values are used as they are, labels beyond int32
    (here 2**40 + k, -2**40 - k) by their ranks; both give the small labels' result, also
    with an inf row (the direct-distance path, which counts each label's rows)."""
    E = _emb(rng, (30, 4), np.float64)
    small = rng.integers(0, 4, 30)
    for lab in (small - 2, np.where(small % 2, 2**40 + small, -2**40 - small)):
        for Ei in (E, np.where(np.arange(30)[:, None] == 3, np.inf, E)):
            want = batch_hard_triplet_loss(Ei, small, mining=mining, reduction="none",
                                           return_grad=True)
            got = batch_hard_triplet_loss(Ei, lab, mining=mining, reduction="none", return_grad=True)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])


def test_batch_hard_bad_input():
    E = np.ones((4, 3))
    with pytest.raises(ValueError, match="labels must have shape"):
        batch_hard_triplet_loss(E, [0, 1, 2])
    with pytest.raises(TypeError, match="labels must hold integer"):
        batch_hard_triplet_loss(E, np.zeros(4))
    with pytest.raises(ValueError, match="embeddings must have at least 2 rows"):
        batch_hard_triplet_loss(np.ones((1, 3)), [0])
    with pytest.raises(ValueError, match="embeddings must be 2-D"):
        batch_hard_triplet_loss(np.ones(4), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="margin"):
        batch_hard_triplet_loss(E, [0, 0, 1, 1], margin=-0.1)
    with pytest.raises(ValueError, match="mining"):
        batch_hard_triplet_loss(E, [0, 0, 1, 1], mining="semi")


# --- InfoNCE / CLIP -----------------------------------------------------------------------

NCE_CASES = [dict(), dict(symmetric=True), dict(normalize=False, temperature=2.0),
             dict(symmetric=True, normalize=False, temperature=3.0), dict(symmetric=True, temperature=0.01)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kw", NCE_CASES, ids=str)
def test_info_nce_oracle(simd, rng, dtype, reduction, kw):
    q, k = _emb(rng, (70, 13), dtype), _emb(rng, (70, 13), dtype)
    kw = dict(kw, reduction=reduction, return_grad=True)
    # the losses are differences of logits of size 1/temperature, rounded to the dtype
    t = kw.get("temperature", 0.07)
    tol = dict(rtol=TOL[np.dtype(dtype)]["rtol"], atol=TOL[np.dtype(dtype)]["atol"] + 16 * np.finfo(dtype).eps / t)
    _check(info_nce_loss(q, k, **kw), ref.info_nce_loss(q, k, **kw), dtype, tol)


@pytest.mark.parametrize("kw", [dict(), dict(symmetric=True), dict(symmetric=True, normalize=False)], ids=str)
def test_info_nce_fd(rng, kw):
    q, k = _emb(rng, (5, 3), np.float64), _emb(rng, (5, 3), np.float64)
    _, (gq, gk) = info_nce_loss(q, k, temperature=0.5, return_grad=True, **kw)
    np.testing.assert_allclose(gq, fd_grad(lambda x: info_nce_loss(x, k, temperature=0.5, **kw), q, h=1e-5),
                               rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gk, fd_grad(lambda x: info_nce_loss(q, x, temperature=0.5, **kw), k, h=1e-5),
                               rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("symmetric", [False, True])
def test_info_nce_torch(rng, symmetric):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    q, k = _emb(rng, (30, 8), np.float64), _emb(rng, (30, 8), np.float64)
    tq, tk = torch.tensor(q, requires_grad=True), torch.tensor(k, requires_grad=True)
    L = F.normalize(tq, dim=1) @ F.normalize(tk, dim=1).T / 0.07
    y = torch.arange(30)
    tl = F.cross_entropy(L, y)
    if symmetric:
        tl = 0.5 * (tl + F.cross_entropy(L.T, y))
    tl.backward()
    loss, (gq, gk) = info_nce_loss(q, k, symmetric=symmetric, return_grad=True)
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-12)
    np.testing.assert_allclose(gq, tq.grad.numpy(), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(gk, tk.grad.numpy(), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("kw", [dict(), dict(symmetric=True), dict(symmetric=True, normalize=False),
                                dict(symmetric=True, temperature=0.01)], ids=str)
def test_info_nce_blocked(rng, monkeypatch, kw):
    """Matrices too large to keep whole go by blocks of rows (recomputing the products
    for the symmetric loss); same results to rounding."""
    q, k = _emb(rng, (200, 6), np.float64), _emb(rng, (200, 6), np.float64)
    full = info_nce_loss(q, k, return_grad=True, **kw)
    monkeypatch.setattr(metric, "_S_MAX_BYTES", 1000)
    monkeypatch.setattr(metric, "_BLOCK_BYTES", 64 * 200 * 8)     # one group of rows per block
    blocked = info_nce_loss(q, k, return_grad=True, **kw)
    _check(blocked, full, np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bounded_and_general_kernels_agree(rng, monkeypatch, dtype):
    """Logits bounded by the row norms take one-exponential kernels; the general
    (max-shifted) ones must give the same results."""
    q, k = _emb(rng, (150, 12), dtype), _emb(rng, (150, 12), dtype)
    assert metric._logit_bound(q, k, 1) is not None
    fast = [info_nce_loss(q, k, symmetric=True, return_grad=True, temperature=0.2),
            nt_xent_loss(q, k, return_grad=True, temperature=0.2)]
    monkeypatch.setattr(metric, "_logit_bound", lambda a, b, nt: None)
    slow = [info_nce_loss(q, k, symmetric=True, return_grad=True, temperature=0.2),
            nt_xent_loss(q, k, return_grad=True, temperature=0.2)]
    for f, g in zip(fast, slow):
        _check(f, (np.asarray(g[0], np.float64), tuple(np.asarray(x, np.float64) for x in g[1])), dtype)


def test_info_nce_edges(rng):
    q, k = _emb(rng, (6, 4), np.float64), _emb(rng, (6, 4), np.float64)
    q[2, 0] = np.nan
    for sym in (False, True):
        assert np.isnan(info_nce_loss(q, k, symmetric=sym))
    # huge logits (tiny temperature): no overflow
    q, k = _emb(rng, (6, 4), np.float64), _emb(rng, (6, 4), np.float64)
    for sym in (False, True):
        _check(info_nce_loss(q, k, temperature=1e-4, symmetric=sym, return_grad=True),
               ref.info_nce_loss(q, k, temperature=1e-4, symmetric=sym, return_grad=True), np.float64)
    # a zero row normalises to zero (F.normalize), finite gradient
    q[0] = 0
    loss, (gq, gk) = info_nce_loss(q, k, return_grad=True)
    assert np.isfinite(loss) and np.isfinite(gq).all()
    _check((loss, (gq, gk)), ref.info_nce_loss(q, k, return_grad=True), np.float64)
    # layouts, dtypes, grad_out
    qf = np.asfortranarray(q)
    np.testing.assert_allclose(info_nce_loss(qf, k[::1]), ref.info_nce_loss(q, k), rtol=1e-12)
    assert info_nce_loss(q.astype(np.float16), k.astype(np.float16)).dtype == np.float32
    bufs = (np.empty((6, 4)), np.empty((6, 4)))
    _, gs = info_nce_loss(q, k, symmetric=True, return_grad=True, grad_out=bufs)
    assert gs[0] is bufs[0] and gs[1] is bufs[1]


def test_info_nce_bad_input():
    x = np.ones((4, 3))
    with pytest.raises(ValueError, match="key has shape"):
        info_nce_loss(x, np.ones((4, 2)))
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(x, x, temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(x, x, temperature=-1)
    with pytest.raises(ValueError, match="query must have at least 2 rows"):
        info_nce_loss(np.ones((1, 3)), np.ones((1, 3)))
    with pytest.raises(ValueError, match="query must be 2-D"):
        info_nce_loss(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match=r"grad_out\[1\]"):
        info_nce_loss(x, x, return_grad=True, grad_out=(np.empty((4, 3)), np.empty((4, 4))))


# --- NT-Xent ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", [0.5, 0.05, 0.02])     # 0.02: beyond the bounded kernels
@pytest.mark.parametrize("syrk", [True, False], ids=["syrk", "gemm"])
def test_nt_xent_oracle(simd, rng, monkeypatch, dtype, reduction, temperature, syrk):
    """With SciPy and bounded logits S is a syrk triangle, its gradient read back by
    symm; else the whole S from gemm. 40 pairs: 80 rows, the last row group partial."""
    if not syrk:
        monkeypatch.setattr(_blas, "scipy_blas", lambda dtype: None)
    elif _blas.scipy_blas(dtype) is None:
        pytest.skip("SciPy not installed")
    a, b = _emb(rng, (40, 11), dtype), _emb(rng, (40, 11), dtype)
    kw = dict(temperature=temperature, reduction=reduction, return_grad=True)
    tol = dict(rtol=TOL[np.dtype(dtype)]["rtol"],
               atol=TOL[np.dtype(dtype)]["atol"] + 16 * np.finfo(dtype).eps / temperature)
    _check(nt_xent_loss(a, b, **kw), ref.nt_xent_loss(a, b, **kw), dtype, tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", [0.5, 0.05, 0.02])     # 0.02: beyond the bounded kernels
@pytest.mark.parametrize("syrk", [True, False], ids=["syrk", "gemm"])
def test_nt_xent_loss_only(simd, rng, monkeypatch, dtype, reduction, temperature, syrk):
    """The loss-only path (three blocks of S; with SciPy, S_AA and S_BB as syrk triangles
    summed by rows and columns at once) against the oracle; 70 rows: several row groups,
    the last one partial."""
    if not syrk:
        monkeypatch.setattr(_blas, "scipy_blas", lambda dtype: None)
    elif _blas.scipy_blas(dtype) is None:
        pytest.skip("SciPy not installed")
    a, b = _emb(rng, (70, 11), dtype), _emb(rng, (70, 11), dtype)
    kw = dict(temperature=temperature, reduction=reduction)
    tol = dict(rtol=TOL[np.dtype(dtype)]["rtol"],
               atol=TOL[np.dtype(dtype)]["atol"] + 16 * np.finfo(dtype).eps / temperature)
    loss = nt_xent_loss(a, b, **kw)
    assert np.asarray(loss).dtype == dtype
    np.testing.assert_allclose(np.asarray(loss, np.float64), ref.nt_xent_loss(a, b, **kw), **tol)
    # the loss of the gradient path (the whole S) agrees
    np.testing.assert_allclose(loss, nt_xent_loss(a, b, return_grad=True, **kw)[0], **tol)


def test_nt_xent_fd(rng):
    a, b = _emb(rng, (4, 3), np.float64), _emb(rng, (4, 3), np.float64)
    _, (ga, gb) = nt_xent_loss(a, b, temperature=0.3, return_grad=True)
    np.testing.assert_allclose(ga, fd_grad(lambda x: nt_xent_loss(x, b, temperature=0.3), a, h=1e-5),
                               rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(gb, fd_grad(lambda x: nt_xent_loss(a, x, temperature=0.3), b, h=1e-5),
                               rtol=1e-7, atol=1e-9)


def test_nt_xent_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    a, b = _emb(rng, (25, 7), np.float64), _emb(rng, (25, 7), np.float64)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    z = F.normalize(torch.cat([ta, tb]), dim=1)
    L = (z @ z.T / 0.5).masked_fill(torch.eye(50, dtype=torch.bool), -float("inf"))
    tl = F.cross_entropy(L, (torch.arange(50) + 25) % 50)
    tl.backward()
    loss, (ga, gb) = nt_xent_loss(a, b, return_grad=True)
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-12)
    np.testing.assert_allclose(ga, ta.grad.numpy(), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-9, atol=1e-13)


def test_nt_xent_blocked(rng, monkeypatch):
    a, b = _emb(rng, (90, 5), np.float64), _emb(rng, (90, 5), np.float64)
    full = nt_xent_loss(a, b, return_grad=True, reduction="sum")
    monkeypatch.setattr(metric, "_S_MAX_BYTES", 1000)
    monkeypatch.setattr(metric, "_BLOCK_BYTES", 50 * 180 * 8)
    _check(nt_xent_loss(a, b, return_grad=True, reduction="sum"), full, np.float64)


def test_nt_xent_edges_and_bad_input(rng):
    a, b = _emb(rng, (5, 3), np.float64), _emb(rng, (5, 3), np.float64)
    b[1, 1] = np.nan
    assert np.isnan(nt_xent_loss(a, b))
    assert nt_xent_loss(a, b, reduction="none").shape == (10,)
    with pytest.raises(ValueError, match="z2 has shape"):
        nt_xent_loss(a, b[:4])
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(a, a, temperature=0.0)
    with pytest.raises(ValueError, match="z1 must have at least 2 rows"):
        nt_xent_loss(a[:1], a[:1])


# --- determinism: bit-identical for 1, 2, 3 threads ----------------------------------------

def _run_all(rng_seed=7):
    rng = np.random.default_rng(rng_seed)
    x = _emb(rng, (400, 24), np.float32)
    a, p, n = (_emb(rng, (700, 48), np.float32) for _ in range(3))
    lab = rng.integers(0, 6, 400)
    q, k = _emb(rng, (260, 16), np.float32), _emb(rng, (260, 16), np.float32)
    out = [pairwise_distances(x, metric="euclidean"), pairwise_distances(x, x[:200], metric="cosine")]
    for r in (triplet_margin_loss(a, p, n, swap=True, return_grad=True),
              batch_hard_triplet_loss(x, lab, return_grad=True),
              batch_hard_triplet_loss(x, lab, mining="all", return_grad=True),
              info_nce_loss(q, k, symmetric=True, return_grad=True),
              info_nce_loss(q, k, return_grad=True),
              nt_xent_loss(q, k, return_grad=True)):
        out.append(r[0])
        out.extend(_as_tuple(r[1]))
    out.append(nt_xent_loss(q, k, reduction="none"))
    return out


@pytest.mark.parametrize("syrk", [True, False], ids=["syrk", "gemm"])
def test_determinism_across_threads(monkeypatch, syrk):
    monkeypatch.setattr(metric, "HARD_BLOCK", 100)      # several blocks of the triangle walk
    if not syrk:
        monkeypatch.setattr(_blas, "scipy_blas", lambda dtype: None)
    results = []
    for nt in (1, 2, 3):
        with fl.threads(nt):
            results.append(_run_all())
    for other in results[1:]:
        for u, v in zip(results[0], other):
            np.testing.assert_array_equal(u, v)


def test_vector_sqrt(simd):
    x = np.concatenate([np.random.default_rng(0).uniform(0, 1e6, 1000), [0.0, np.inf, np.nan, 5e-324, 2.0]])
    for dt in (np.float32, np.float64):
        xs = x.astype(dt)
        y = np.empty_like(xs)
        _metric.vector_sqrt(xs, y)
        np.testing.assert_array_equal(y, np.sqrt(xs))      # correctly rounded


def test_concurrent_python_threads():
    """Calls from several Python threads at once give the single-call results."""
    from concurrent.futures import ThreadPoolExecutor
    expected = _run_all(11)
    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: _run_all(11), range(4)))
    for res in results:
        for u, v in zip(expected, res):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D", [32, 33])
@pytest.mark.parametrize("opts", [{}, {"swap": True}, {"p": 1.0}])
def test_triplet_streamed_gradients_match(rng, dtype, D, opts):
    """Triplet gradients past the streaming threshold (set to 0 here) go out with streaming
    stores where D is a whole number of vectors (a block's rows as one run; else plain): the
    same bits as plain stores from any alignment, with inactive, active and NaN rows."""
    from helpers import check_streamed_grads
    a, p, n = (rng.standard_normal((1500, D)).astype(dtype) for _ in range(3))
    a[7, 3] = np.nan
    check_streamed_grads(lambda g: triplet_margin_loss(a, p, n, return_grad=True, grad_out=g, **opts),
                         (a.shape,) * 3, dtype)


def test_zero_width_embeddings(capfd):
    """D = 0 (every distance 0, every similarity 0): the reference's values and empty
    gradients, with no BLAS call (OpenBLAS's syrk rejects k = 0 on stderr)."""
    z, lab = np.zeros((4, 0)), np.array([0, 0, 1, 1])
    for name, args in (("nt_xent_loss", (z, z)), ("info_nce_loss", (z, z)),
                       ("batch_hard_triplet_loss", (z, lab))):
        loss, g = getattr(fl, name)(*args, return_grad=True)
        np.testing.assert_allclose(loss, getattr(ref, name)(*args), rtol=1e-15)
        assert all(gi.shape == (4, 0) for gi in (g if isinstance(g, tuple) else (g,)))
    np.testing.assert_array_equal(fl.pairwise_distances(z), np.zeros((4, 4)))
    assert "DSYRK" not in capfd.readouterr().err
