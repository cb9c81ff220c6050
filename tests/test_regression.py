"""Regression and bounding-box losses against the float64 oracles, finite differences and
PyTorch (torchvision's box formulas written with torch ops); edge cases, layouts, weights,
determinism, gradient buffers and bad input."""

import numpy as np
import pytest

import fastloss as fl
import fastloss.reference.regression as ref
from fastloss import _regression, _runtime
from fastloss.regression import (complete_box_iou_loss, distance_box_iou_loss,
                                 generalized_box_iou_loss, huber_loss, l1_loss, log_cosh_loss,
                                 mse_loss, smooth_l1_loss)
from helpers import assert_close, check_loss_and_grads, fd_grad

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]

# (name, fast function, oracle, extra keyword arguments)
ELEMENTWISE = [
    ("mse", mse_loss, ref.mse_loss, {}),
    ("l1", l1_loss, ref.l1_loss, {}),
    ("huber", huber_loss, ref.huber_loss, {}),
    ("huber_d0.3", huber_loss, ref.huber_loss, dict(delta=0.3)),
    ("smooth_l1", smooth_l1_loss, ref.smooth_l1_loss, {}),
    ("smooth_l1_b2.5", smooth_l1_loss, ref.smooth_l1_loss, dict(beta=2.5)),
    ("smooth_l1_b0", smooth_l1_loss, ref.smooth_l1_loss, dict(beta=0.0)),
    ("log_cosh", log_cosh_loss, ref.log_cosh_loss, {}),
]
ELEM_IDS = [e[0] for e in ELEMENTWISE]

BOXES = [
    ("giou", generalized_box_iou_loss, ref.generalized_box_iou_loss),
    ("diou", distance_box_iou_loss, ref.distance_box_iou_loss),
    ("ciou", complete_box_iou_loss, ref.complete_box_iou_loss),
]
BOX_IDS = [b[0] for b in BOXES]

# float32 box gradients: the formulas subtract nearly equal terms (1/(U+eps) - 1/(C+eps),
# 1 - iou + v), so float32 arithmetic (ours, and PyTorch's) is a few 1e-6 off the float64
# oracle relative to the largest entry.
BOX_GRAD_RTOL32 = 2e-5


def _pair(rng, shape, dtype, scale=2.0):
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    t = (rng.standard_normal(shape) * scale).astype(dtype)
    return x, t


# --- elementwise losses against the oracles ---------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("wshape", [None, (37, 29), (29,), (37, 1), ()])
@pytest.mark.parametrize("name,fast,oracle,kw", ELEMENTWISE, ids=ELEM_IDS)
def test_elementwise_matrix(simd, rng, dtype, reduction, wshape, name, fast, oracle, kw):
    x, t = _pair(rng, (37, 29), dtype)        # 1073 elements: several sum blocks and a vector tail
    w = None if wshape is None else rng.uniform(0.1, 2.0, wshape)
    args = dict(kw, weight=w, reduction=reduction, return_grad=True)
    check_loss_and_grads(fast(x, t, **args), oracle(x, t, **args), dtype)
    assert_close(fast(x, t, **dict(args, return_grad=False)), oracle(x, t, **args)[0], dtype)


# Residuals across the whole range: zero, tiny, the beta/delta kinks, large, huge (whose
# square still fits the dtype), inf.
EXTREMES = [0.0, -0.0, 1e-30, -1e-30, 1e-12, 3e-8, -3e-8, 1e-4, 0.3, -0.3, 0.69, 0.71, 1.0, -1.0,
            2.5, -2.5, 3.0, 17.0, -40.0, 88.5, 1e4, -1e4, np.inf, -np.inf]
HUGE = {np.float32: [1e18, -1e18], np.float64: [3e150, -3e150]}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,fast,oracle,kw", ELEMENTWISE, ids=ELEM_IDS)
def test_elementwise_extremes(simd, dtype, name, fast, oracle, kw):
    x = np.array(EXTREMES + HUGE[dtype], dtype)
    t = np.zeros_like(x)
    loss, g = fast(x, t, reduction="none", return_grad=True, **kw)
    rloss, rg = oracle(x, t, reduction="none", return_grad=True, **kw)
    assert not np.isnan(loss).any() and not np.isnan(g).any()
    assert_close(loss, rloss, dtype)
    assert_close(g, rg, dtype)
    # the same residuals with a non-zero target (r = x - t is what matters)
    t = np.full_like(x, 0.75)
    assert_close(fast(x + t, t, reduction="none", **kw), oracle(x + t, t, reduction="none", **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_cosh_relative_accuracy(simd, dtype):
    """Tiny residuals keep full relative accuracy (r + log1p(exp(-2r)) - log 2 would give
    0 or noise), large ones do not overflow (log(cosh(r)) would)."""
    eps = np.finfo(dtype).eps
    r = np.concatenate([np.logspace(-18, 2.5, 2000), -np.logspace(-18, 2.5, 2000)]).astype(dtype)
    loss, g = log_cosh_loss(r, np.zeros_like(r), reduction="none", return_grad=True)
    rloss, rg = ref.log_cosh_loss(r, np.zeros_like(r), reduction="none", return_grad=True)
    np.testing.assert_allclose(loss, rloss, rtol=8 * eps, atol=0)
    np.testing.assert_allclose(g, rg, rtol=4 * eps, atol=0)
    big = np.array([1e30, -1e38], dtype)
    np.testing.assert_allclose(log_cosh_loss(big, np.zeros_like(big), reduction="none"),
                               np.abs(big.astype(np.float64)) - np.log(2.0), rtol=eps)


@pytest.mark.parametrize("name,fast,oracle,kw", ELEMENTWISE, ids=ELEM_IDS)
def test_elementwise_finite_differences(rng, name, fast, oracle, kw):
    x = rng.standard_normal((3, 4)) * 2
    t = x + rng.choice([-1, 1], x.shape) * rng.uniform(0.05, 4.0, x.shape)   # residuals off 0
    bound = kw.get("delta", kw.get("beta", 1.0))
    r = x - t
    r[np.abs(np.abs(r) - bound) < 0.01] += 0.05                              # and off the kink
    x = t + r
    w = rng.uniform(0.2, 2.0, (1, 4))
    for args in (dict(kw), dict(kw, weight=w), dict(kw, weight=w, reduction="sum"),
                 dict(kw, reduction="none")):
        _, g = fast(x, t, return_grad=True, **args)
        np.testing.assert_allclose(g, fd_grad(lambda z: np.sum(fast(z, t, **args)), x, h=1e-3),
                                   rtol=1e-8, atol=1e-10)


def test_sign_of_zero_residual():
    """L1 (and smooth L1 with beta = 0) have gradient 0 at r = 0, as PyTorch."""
    x = np.array([1.0, 2.0, -3.0])
    for fn in (l1_loss, lambda a, b, **k: smooth_l1_loss(a, b, beta=0.0, **k)):
        _, g = fn(x, x.copy(), reduction="sum", return_grad=True)
        np.testing.assert_array_equal(g, 0.0)
        _, g = fn(x, x - 1, reduction="sum", return_grad=True)
        np.testing.assert_array_equal(g, 1.0)


def test_huber_is_delta_times_smooth_l1(rng):
    x, t = _pair(rng, (50,), np.float64)
    for d in (0.25, 1.0, 3.0):
        lh, gh = huber_loss(x, t, delta=d, reduction="none", return_grad=True)
        ls, gs = smooth_l1_loss(x, t, beta=d, reduction="none", return_grad=True)
        np.testing.assert_allclose(lh, d * ls, rtol=1e-14)
        np.testing.assert_allclose(gh, d * gs, rtol=1e-14)


# --- weights ------------------------------------------------------------------------------------

def test_weighted_mean_semantics(rng):
    x, t = _pair(rng, (6, 5), np.float64)
    w = rng.uniform(0.1, 3.0, (6, 1))
    for fn in (mse_loss, l1_loss, huber_loss, smooth_l1_loss, log_cosh_loss):
        per = fn(x, t, reduction="none")
        wb = np.broadcast_to(w, x.shape)
        np.testing.assert_allclose(fn(x, t, weight=w), np.sum(wb * per) / np.sum(wb), rtol=1e-13)
        np.testing.assert_allclose(fn(x, t, weight=w, reduction="sum"), np.sum(wb * per), rtol=1e-13)
        np.testing.assert_allclose(fn(x, t, weight=w, reduction="none"), wb * per, rtol=1e-14)
        # a constant weight changes nothing in the mean
        np.testing.assert_allclose(fn(x, t, weight=2.5), fn(x, t), rtol=1e-14)
        _, g1 = fn(x, t, weight=np.ones(5), return_grad=True)
        _, g0 = fn(x, t, return_grad=True)
        np.testing.assert_allclose(g1, g0, rtol=1e-14)
    # all weights zero: the mean is 0/0
    assert np.isnan(mse_loss(x, t, weight=np.zeros(5)))
    assert mse_loss(x, t, weight=np.zeros(5), reduction="sum") == 0.0


def test_weight_tiling_large(rng):
    """Weights that broadcast over leading axes stay small and are tiled across blocks;
    block boundaries that fall mid-period must read the right weights."""
    n_rows, C = 3 * _runtime.ELEMENT_BLOCK // 7 + 5, 7
    x, t = _pair(rng, (n_rows, C), np.float32)
    for w in (rng.uniform(0.1, 2.0, C), rng.uniform(0.1, 2.0, (n_rows, 1)), rng.uniform(0.1, 2.0, (n_rows, C))):
        for fn, oracle in ((huber_loss, ref.huber_loss), (log_cosh_loss, ref.log_cosh_loss)):
            check_loss_and_grads(fn(x, t, weight=w, return_grad=True), oracle(x, t, weight=w, return_grad=True), np.float32)
            assert_close(fn(x, t, weight=w, reduction="none"), oracle(x, t, weight=w, reduction="none"),
                         np.float32)


# --- PyTorch parity ---------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_elementwise_match_pytorch(rng, reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, t = _pair(rng, (8, 9), np.float64)
    x[0, :3] = t[0, :3]                            # r = 0: sign(0) = 0 in the L1 gradients
    cases = [(mse_loss, {}, lambda a, b: F.mse_loss(a, b, reduction=reduction)),
             (l1_loss, {}, lambda a, b: F.l1_loss(a, b, reduction=reduction))]
    for d in (0.5, 1.0, 2.0):
        cases.append((huber_loss, dict(delta=d), lambda a, b, d=d: F.huber_loss(a, b, delta=d, reduction=reduction)))
    for b_ in (0.0, 0.5, 1.0, 3.0):
        cases.append((smooth_l1_loss, dict(beta=b_),
                      lambda a, b, b_=b_: F.smooth_l1_loss(a, b, beta=b_, reduction=reduction)))

    def torch_log_cosh(a, b):
        per = torch.log(torch.cosh(a - b))
        return {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    cases.append((log_cosh_loss, {}, torch_log_cosh))
    for fn, kw, tfn in cases:
        xt = torch.tensor(x, requires_grad=True)
        lt = tfn(xt, torch.tensor(t))
        lt.sum().backward()
        loss, g = fn(x, t, reduction=reduction, return_grad=True, **kw)
        np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-13, atol=1e-15)


# --- elementwise edge cases ----------------------------------------------------------------------

@pytest.mark.parametrize("name,fast,oracle,kw", ELEMENTWISE, ids=ELEM_IDS)
def test_elementwise_nan_propagates(simd, name, fast, oracle, kw):
    for dtype in DTYPES:
        x = np.linspace(-3, 3, 37).astype(dtype)
        t = np.zeros_like(x)
        x[5] = np.nan
        t[30] = np.nan
        loss, g = fast(x, t, reduction="none", return_grad=True, **kw)
        np.testing.assert_array_equal(np.isnan(loss), np.isnan(x - t))
        np.testing.assert_array_equal(np.isnan(g), np.isnan(x - t))
        assert np.isnan(fast(x, t, **kw))
        w = np.ones_like(x)
        w[12] = np.nan
        assert np.isnan(fast(x, np.zeros_like(x), weight=w, reduction="sum", **kw))


# Special values (the README's table): the residual r = input - target carries them; the
# loss and gradient are the formula's: |r| = inf gives loss inf and the gradient's limit
# (mse: r itself, l1 / smooth L1 / log-cosh: sign(r), Huber: sign(r) delta); inf - inf and
# NaN give NaN for both. Other elements are untouched.
ELEM_SPECIAL = [("input", np.inf), ("input", -np.inf), ("input", np.nan), ("target", np.inf),
                ("target", -np.inf), ("target", np.nan), ("both", np.inf), ("both", -np.inf)]
GRAD_AT_INF = {"mse": np.inf, "l1": 1.0, "huber": 1.0, "huber_d0.3": 0.3, "smooth_l1": 1.0,
               "smooth_l1_b2.5": 1.0, "smooth_l1_b0": 1.0, "log_cosh": 1.0}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")    # the oracles' inf - inf
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arg,value", ELEM_SPECIAL, ids=str)
@pytest.mark.parametrize("name,fast,oracle,kw", ELEMENTWISE, ids=ELEM_IDS)
def test_elementwise_special(simd, dtype, arg, value, name, fast, oracle, kw):
    x = np.linspace(-2, 2, 19).astype(dtype)
    t = np.full_like(x, 0.25)
    if arg in ("input", "both"):
        x[3] = value
    if arg in ("target", "both"):
        t[3] = value
    loss, g = fast(x, t, reduction="none", return_grad=True, **kw)
    rloss, rg = oracle(x, t, reduction="none", return_grad=True, **kw)
    assert_close(loss, rloss, dtype)             # NaN and inf in the same places
    assert_close(g, rg, dtype, grad=True)
    r = np.float64(x[3]) - np.float64(t[3])
    if np.isnan(r):
        assert np.isnan(loss[3]) and np.isnan(g[3])
    else:
        assert loss[3] == np.inf and g[3] == dtype(np.sign(r) * GRAD_AT_INF[name])
    assert np.isfinite(np.delete(loss, 3)).all() and np.isfinite(np.delete(g, 3)).all()
    for red in ("mean", "sum"):
        assert_close(fast(x, t, reduction=red, **kw), oracle(x, t, reduction=red, **kw), dtype)


def test_elementwise_empty_and_scalar():
    for fn in (mse_loss, l1_loss, huber_loss, smooth_l1_loss, log_cosh_loss):
        e = np.zeros((0, 3), np.float32)
        loss, g = fn(e, e, return_grad=True)
        assert np.isnan(loss) and loss.dtype == np.float32 and g.shape == (0, 3)
        assert fn(e, e, reduction="sum") == 0.0
        assert fn(e, e, reduction="none").shape == (0, 3)
        assert np.isnan(fn(e, e, weight=np.ones(3)))
        loss, g = fn(np.float64(2.0), 0.5, reduction="none", return_grad=True)
        assert loss.shape == () and g.shape == ()
        np.testing.assert_allclose(loss, fn(np.array([2.0]), np.array([0.5]), reduction="none")[0], rtol=1e-15)


def test_elementwise_dtypes():
    x = np.arange(12).reshape(3, 4)
    t = np.ones((3, 4), np.float32)
    loss, g = mse_loss(x, t, return_grad=True)           # int input: float64, target follows
    assert loss.dtype == np.float64 and g.dtype == np.float64
    np.testing.assert_allclose(loss, np.mean((x - 1.0) ** 2), rtol=1e-15)
    loss, g = huber_loss(x.astype(np.float16), t, return_grad=True)   # float16: float32
    assert loss.dtype == np.float32 and g.dtype == np.float32
    loss, g = l1_loss(x.astype(np.float32), t.astype(np.float64), return_grad=True)
    assert loss.dtype == np.float32 and g.dtype == np.float32     # the input's dtype rules
    assert l1_loss(np.array([True, False]), np.array([0, 0])).dtype == np.float64


@pytest.mark.parametrize("name,fast,oracle,kw", ELEMENTWISE[::2], ids=ELEM_IDS[::2])
def test_elementwise_layouts(rng, name, fast, oracle, kw):
    base_x, base_t = _pair(rng, (40, 30), np.float64)
    w = rng.uniform(0.5, 1.5, (40, 30))
    expected = fast(base_x, base_t, weight=w, return_grad=True, **kw)
    for conv in (np.asfortranarray, lambda a: np.ascontiguousarray(a[:, ::-1])[:, ::-1]):
        got = fast(conv(base_x), conv(base_t), weight=conv(w), return_grad=True, **kw)
        np.testing.assert_allclose(got[0], expected[0], rtol=1e-14)
        np.testing.assert_array_equal(got[1], expected[1])
        assert got[1].flags.c_contiguous
    # a strided view (every other column) equals its contiguous copy
    xs, ts = base_x[:, ::2], base_t[:, ::2]
    np.testing.assert_array_equal(fast(xs, ts, reduction="none", **kw),
                                  fast(xs.copy(), ts.copy(), reduction="none", **kw))


def test_elementwise_grad_out(rng):
    x, t = _pair(rng, (20, 7), np.float32)
    buf = np.full(x.shape, 7.0, np.float32)
    for fn in (mse_loss, l1_loss, huber_loss, smooth_l1_loss, log_cosh_loss):
        loss, g = fn(x, t, return_grad=True, grad_out=buf)
        assert g is buf
        loss2, g2 = fn(x, t, return_grad=True)
        assert loss == loss2
        np.testing.assert_array_equal(buf, g2)


# --- determinism ---------------------------------------------------------------------------

def test_elementwise_bitwise_identical_across_threads(rng):
    n = 3 * _runtime.ELEMENT_BLOCK + 123          # several blocks, above SERIAL_BELOW
    x, t = _pair(rng, (n,), np.float32, scale=3.0)
    w = rng.uniform(0.1, 2.0, 1000)[np.arange(n) % 1000].reshape(n)
    results = []
    for nt in (1, 2, 3):
        with fl.threads(nt):
            results.append([fn(x, t, weight=wt, return_grad=True, **kw)
                            for _, fn, _, kw in ELEMENTWISE for wt in (None, w)])
    for other in results[1:]:
        for (l0, g0), (l1, g1) in zip(results[0], other):
            assert l0.tobytes() == l1.tobytes()
            assert g0.tobytes() == g1.tobytes()


# --- elementwise bad input ------------------------------------------------------------------

def test_elementwise_bad_input():
    x = np.zeros(4)
    with pytest.raises(ValueError, match=r"target has shape \(4, 1\).*not broadcast"):
        mse_loss(x, np.zeros((4, 1)))          # PyTorch broadcasts this into a (4, 4) loss
    with pytest.raises(ValueError, match="target has shape"):
        l1_loss(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="weight of shape"):
        mse_loss(x, x, weight=np.ones(3))
    with pytest.raises(ValueError, match="weight of shape"):
        mse_loss(x, x, weight=np.ones((2, 4)))    # would enlarge the loss
    with pytest.raises(ValueError, match="delta must be > 0"):
        huber_loss(x, x, delta=0.0)
    with pytest.raises(ValueError, match="delta"):
        huber_loss(x, x, delta=-1.0)
    with pytest.raises(ValueError, match="delta must not be NaN"):
        huber_loss(x, x, delta=np.nan)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        smooth_l1_loss(x, x, beta=-0.1)
    with pytest.raises(TypeError, match="beta"):
        smooth_l1_loss(x, x, beta="big")
    with pytest.raises(ValueError, match="reduction"):
        log_cosh_loss(x, x, reduction="avg")
    with pytest.raises(TypeError, match="input must be real"):
        mse_loss(x + 1j, x)
    with pytest.raises(TypeError, match="target"):
        mse_loss(x, np.array(["a", "b", "c", "d"]))
    with pytest.raises(TypeError, match="weight"):
        mse_loss(x, x, weight=np.ones(4, complex))
    with pytest.raises(ValueError, match="return_grad"):
        mse_loss(x, x, grad_out=np.zeros(4))
    with pytest.raises(ValueError, match="grad_out has shape"):
        mse_loss(x, x, return_grad=True, grad_out=np.zeros(5))
    with pytest.raises(TypeError, match="grad_out has dtype"):
        mse_loss(x, x, return_grad=True, grad_out=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        mse_loss(np.zeros((4, 4)), np.zeros((4, 4)), return_grad=True, grad_out=np.zeros((4, 4)).T)


def test_elementwise_kernel_names_its_loss():
    """The kernel takes the loss by name (csrc/fl_regression_impl.h's FL_REG_KINDS)."""
    x = np.arange(5.0)
    assert _regression.elementwise("mse", x, x + 1, None, 1, None, None, None, 0.0, 1.0, 1) == 5.0
    with pytest.raises(ValueError, match="no elementwise regression loss named 'nope'"):
        _regression.elementwise("nope", x, x, None, 1, None, None, None, 0.0, 1.0, 1)


# --- boxes ---------------------------------------------------------------------------------

def _boxes(rng, n, scale=10.0):
    # sides >= 0.5: thinner identical boxes make float32 gradients ill-conditioned (eps
    # = 1e-7 is then below the resolution of the areas; PyTorch's float32 shares that),
    # zero sides are tested on purpose in _box_pairs
    lo = rng.uniform(0, scale, (n, 2))
    return np.concatenate([lo, lo + rng.uniform(0.5, scale / 2, (n, 2))], axis=1)


def _box_pairs(rng, n):
    """Random pairs plus the hard cases: identical boxes, shared corners and edges
    (ties in every min/max), disjoint, nested, touching, zero-width/height, points."""
    b1, b2 = _boxes(rng, n), _boxes(rng, n)
    b2[0] = b1[0]                                            # identical
    b2[1, :2] = b1[1, :2]                                    # shared lower-left corner
    b2[2, 2:] = b1[2, 2:]                                    # shared upper-right corner
    b2[2, :2] = np.minimum(b2[2, :2], b2[2, 2:])
    b2[3] = b1[3] + [20, 20, 20, 20]                         # disjoint
    b2[4] = b1[4] + [0.5, 0.5, -0.5, -0.5]                   # nested
    b2[4, 2:] = np.maximum(b2[4, 2:], b2[4, :2])
    b2[5] = [b1[5, 2], b1[5, 1], b1[5, 2] + 1, b1[5, 3]]    # touching along an edge
    b1[6, 2] = b1[6, 0]                                      # zero width
    b2[7, 3] = b2[7, 1]                                      # zero height
    b1[8, 2:] = b1[8, :2]                                    # a point
    b1[9, 2:] = b1[9, :2]                                    # two equal points
    b2[9] = b1[9]
    b1[10, 2] = b1[10, 0]                                    # zero width against zero height
    b2[10, 3] = b2[10, 1]
    for b in (b1, b2):                                       # keep every box valid
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2])
    return b1, b2


def _assert_box_grads(g, rg, dtype):
    if dtype == np.float64:
        assert_close(g, rg, dtype, grad=True)
    else:
        scale = np.max(np.abs(rg))
        np.testing.assert_allclose(g, rg, rtol=BOX_GRAD_RTOL32, atol=1e-6 + BOX_GRAD_RTOL32 * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,fast,oracle", BOXES, ids=BOX_IDS)
def test_box_matrix(simd, rng, dtype, reduction, name, fast, oracle):
    b1, b2 = _box_pairs(rng, 2 * 16 + 5)                     # full vectors and a tail at every width
    b1, b2 = b1.astype(dtype), b2.astype(dtype)
    loss, (g1, g2) = fast(b1, b2, reduction=reduction, return_grad=True)
    rloss, (r1, r2) = oracle(b1, b2, reduction=reduction, return_grad=True)
    assert np.asarray(loss).dtype == dtype and g1.dtype == dtype and g2.dtype == dtype
    assert_close(loss, rloss, dtype)
    _assert_box_grads(g1, r1, dtype)
    _assert_box_grads(g2, r2, dtype)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(g1)) and np.all(np.isfinite(g2))
    assert_close(fast(b1, b2, reduction=reduction), rloss, dtype)


@pytest.mark.parametrize("name,fast,oracle", BOXES, ids=BOX_IDS)
def test_box_leading_shape_and_eps(rng, name, fast, oracle):
    b1, b2 = _boxes(rng, 15).reshape(3, 5, 4), _boxes(rng, 15).reshape(3, 5, 4)
    for eps in (1e-7, 0.0, 0.5):
        loss, (g1, g2) = fast(b1, b2, eps=eps, reduction="none", return_grad=True)
        rloss, (r1, r2) = oracle(b1, b2, eps=eps, reduction="none", return_grad=True)
        assert loss.shape == (3, 5) and g1.shape == (3, 5, 4)
        assert_close(loss, rloss, np.float64)
        assert_close(g1, r1, np.float64, grad=True)
        assert_close(g2, r2, np.float64, grad=True)


@pytest.mark.parametrize("name,fast,oracle", BOXES, ids=BOX_IDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_box_finite_differences(rng, name, fast, oracle, reduction):
    b1 = _boxes(rng, 6)
    b2 = b1 + rng.uniform(-2, 2, (6, 4))                     # overlapping, no ties
    b2[:, 2:] = np.maximum(b2[:, 2:], b2[:, :2] + 0.5)
    b2[5] += 30                                              # one disjoint pair
    _, (g1, g2) = fast(b1, b2, reduction=reduction, return_grad=True)
    if name == "ciou":
        # torchvision holds alpha constant in the gradient: differentiate with alpha frozen
        x1, y1, x2, y2 = b1.T
        X1, Y1, X2, Y2 = b2.T
        da = np.arctan2(X2 - X1, Y2 - Y1) - np.arctan2(x2 - x1, y2 - y1)
        v = 4 / np.pi ** 2 * da ** 2
        iou = 1 - (ref.distance_box_iou_loss(b1, b2, reduction="none")
                   - _center_term(b1, b2))
        alpha = v / (1 - iou + v + 1e-7)

        def f(p, q):
            d = ref.distance_box_iou_loss(p, q, reduction="none")
            dap = np.arctan2(q[:, 2] - q[:, 0], q[:, 3] - q[:, 1]) - np.arctan2(p[:, 2] - p[:, 0], p[:, 3] - p[:, 1])
            per = d + alpha * 4 / np.pi ** 2 * dap ** 2
            return per.mean() if reduction == "mean" else per.sum()
    else:
        def f(p, q):
            return fast(p, q, reduction=reduction)
    np.testing.assert_allclose(g1, fd_grad(lambda p: f(p, b2), b1, h=1e-4), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(g2, fd_grad(lambda q: f(b1, q), b2, h=1e-4), rtol=1e-7, atol=1e-10)


def _center_term(b1, b2):
    dx = (b1[:, 0] + b1[:, 2]) / 2 - (b2[:, 0] + b2[:, 2]) / 2
    dy = (b1[:, 1] + b1[:, 3]) / 2 - (b2[:, 1] + b2[:, 3]) / 2
    cw = np.maximum(b1[:, 2], b2[:, 2]) - np.minimum(b1[:, 0], b2[:, 0])
    ch = np.maximum(b1[:, 3], b2[:, 3]) - np.minimum(b1[:, 1], b2[:, 1])
    return (dx ** 2 + dy ** 2) / (cw ** 2 + ch ** 2 + 1e-7)


def _torchvision(torch, name):
    """torchvision.ops' generalized/distance/complete_box_iou_loss (reduction="none"),
    transcribed with torch operations (torchvision does not install beside torch's CPU
    build here)."""
    def inter_union(boxes1, boxes2):
        x1, y1, x2, y2 = boxes1.unbind(dim=-1)
        x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
        xkis1, ykis1 = torch.max(x1, x1g), torch.max(y1, y1g)
        xkis2, ykis2 = torch.min(x2, x2g), torch.min(y2, y2g)
        intsctk = torch.zeros_like(x1)
        mask = (ykis2 > ykis1) & (xkis2 > xkis1)
        intsctk[mask] = (xkis2[mask] - xkis1[mask]) * (ykis2[mask] - ykis1[mask])
        unionk = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsctk
        return intsctk, unionk

    def enclosing(boxes1, boxes2):
        x1, y1, x2, y2 = boxes1.unbind(dim=-1)
        x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
        return torch.min(x1, x1g), torch.min(y1, y1g), torch.max(x2, x2g), torch.max(y2, y2g)

    def giou(boxes1, boxes2, eps):
        intsctk, unionk = inter_union(boxes1, boxes2)
        iouk = intsctk / (unionk + eps)
        xc1, yc1, xc2, yc2 = enclosing(boxes1, boxes2)
        area_c = (xc2 - xc1) * (yc2 - yc1)
        miouk = iouk - ((area_c - unionk) / (area_c + eps))
        return 1 - miouk

    def diou_iou(boxes1, boxes2, eps):
        intsct, union = inter_union(boxes1, boxes2)
        iou = intsct / (union + eps)
        xc1, yc1, xc2, yc2 = enclosing(boxes1, boxes2)
        diagonal_distance_squared = ((xc2 - xc1) ** 2) + ((yc2 - yc1) ** 2) + eps
        x1, y1, x2, y2 = boxes1.unbind(dim=-1)
        x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
        x_p, y_p = (x2 + x1) / 2, (y2 + y1) / 2
        x_g, y_g = (x1g + x2g) / 2, (y1g + y2g) / 2
        centers_distance_squared = ((x_p - x_g) ** 2) + ((y_p - y_g) ** 2)
        return 1 - iou + (centers_distance_squared / diagonal_distance_squared), iou

    def ciou(boxes1, boxes2, eps):
        diou_loss, iou = diou_iou(boxes1, boxes2, eps)
        x1, y1, x2, y2 = boxes1.unbind(dim=-1)
        x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
        w_pred, h_pred, w_gt, h_gt = x2 - x1, y2 - y1, x2g - x1g, y2g - y1g
        v = (4 / (torch.pi ** 2)) * torch.pow((torch.atan(w_gt / h_gt) - torch.atan(w_pred / h_pred)), 2)
        with torch.no_grad():
            alpha = v / (1 - iou + v + eps)
        return diou_loss + alpha * v

    return {"giou": giou, "diou": lambda a, b, eps: diou_iou(a, b, eps)[0], "ciou": ciou}[name]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name,fast,oracle", BOXES, ids=BOX_IDS)
def test_box_match_torchvision(rng, name, fast, oracle, reduction):
    torch = pytest.importorskip("torch")
    b1, b2 = _box_pairs(rng, 40)
    if name == "ciou":                      # torchvision's atan(w / h) is NaN for 0 / 0
        keep = np.all(b1[:, 2:] > b1[:, :2], axis=1) & np.all(b2[:, 2:] > b2[:, :2], axis=1)
        b1, b2 = b1[keep], b2[keep]
    t1 = torch.tensor(b1, requires_grad=True)
    t2 = torch.tensor(b2, requires_grad=True)
    per = _torchvision(torch, name)(t1, t2, 1e-7)
    lt = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    lt.sum().backward()
    loss, (g1, g2) = fast(b1, b2, reduction=reduction, return_grad=True)
    np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(g1, t1.grad.numpy(), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(g2, t2.grad.numpy(), rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("name,fast,oracle", BOXES, ids=BOX_IDS)
def test_box_degenerate_finite(simd, name, fast, oracle):
    """Zero-area boxes: finite loss and gradient (CIoU included, where torchvision's
    atan(w / h) gives NaN for zero heights)."""
    pts = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 3.0], [0.0, 0.0, 4.0, 0.0],
                    [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 5.0, 3.0, 5.0]])
    other = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 0.0], [1.0, -1.0, 1.0, 1.0],
                      [0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0], [0.0, 4.0, 2.0, 6.0]])
    for dtype in DTYPES:
        for a, b in ((pts, other), (other, pts)):
            loss, (g1, g2) = fast(a.astype(dtype), b.astype(dtype), reduction="none", return_grad=True)
            assert np.all(np.isfinite(loss)) and np.all(np.isfinite(g1)) and np.all(np.isfinite(g2))
            rloss, (r1, r2) = oracle(a, b, reduction="none", return_grad=True)
            assert_close(loss, rloss, dtype)
            _assert_box_grads(g1, r1, dtype)


def test_box_nan_propagates():
    b1 = np.array([[0.0, 0.0, 2.0, 2.0], [np.nan, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    b2 = np.array([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, np.nan]])
    for _, fast, _ in BOXES:
        loss, (g1, g2) = fast(b1, b2, reduction="none", return_grad=True)
        np.testing.assert_array_equal(np.isnan(loss), [False, True, True])
        assert np.isnan(g1[1]).any() and np.isnan(g2[2]).any()
        assert np.isnan(fast(b1, b2))


# Box special values: a coordinate at +-inf on its own side (x1, y1 = -inf or x2, y2 = inf)
# makes areas inf and every ratio inf / inf: loss and both boxes' gradients NaN for that
# pair, as the formula (and torchvision) gives; NaN likewise. +inf in x1 or y1 (or -inf in x2,
# y2) is a box with x2 < x1: ValueError. Other pairs are untouched.
BOX_SPECIAL = [(0, -np.inf), (1, -np.inf), (2, np.inf), (3, np.inf), (0, np.nan), (3, np.nan)]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("col,value", BOX_SPECIAL, ids=str)
@pytest.mark.parametrize("kind,fast,oracle", BOXES, ids=BOX_IDS)
def test_box_special(dtype, which, col, value, kind, fast, oracle):
    b = [np.array([[0, 0, 2, 2], [1, 1, 3, 4], [0, 1, 2, 5]], dtype),
         np.array([[1, 1, 3, 3], [0, 0, 2, 2], [1, 0, 4, 2]], dtype)]
    b[which][1, col] = value
    loss, (g1, g2) = fast(*b, reduction="none", return_grad=True)
    rloss, (r1, r2) = oracle(*b, reduction="none", return_grad=True)
    assert_close(loss, rloss, dtype)
    assert np.isnan(loss[1]) and np.isnan(g1[1]).all() and np.isnan(g2[1]).all()
    assert np.isnan(r1[1]).all() and np.isnan(r2[1]).all()
    keep = [0, 2]
    assert np.isfinite(loss[keep]).all()
    _assert_box_grads(g1[keep], r1[keep], dtype)
    _assert_box_grads(g2[keep], r2[keep], dtype)
    if not np.isnan(value):
        b[which][1, col] = -value         # the wrong side: x2 < x1 or y2 < y1
        with pytest.raises(ValueError, match="x2 < x1 or y2 < y1"):
            fast(*b)


def test_box_empty_layouts_and_dtypes(rng):
    e = np.zeros((0, 4))
    for _, fast, oracle in BOXES:
        # torchvision: "mean" of no pairs is 0.0 * loss.sum() = 0, with an empty gradient
        for dtype in DTYPES:
            loss, (g1, g2) = fast(e.astype(dtype), e.astype(dtype), return_grad=True)
            assert loss == 0.0 and loss.dtype == dtype
            assert g1.shape == g2.shape == (0, 4) and g1.dtype == g2.dtype == dtype
        assert oracle(e, e) == 0.0 and oracle(e, e, return_grad=True)[1][0].shape == (0, 4)
        assert fast(e, e, reduction="sum") == 0.0
        assert fast(np.zeros((2, 0, 4)), np.zeros((2, 0, 4)), reduction="none").shape == (2, 0)
    b1, b2 = _boxes(rng, 30), _boxes(rng, 30)
    expected = generalized_box_iou_loss(b1, b2, reduction="none", return_grad=True)
    f1, f2 = np.asfortranarray(b1), np.ascontiguousarray(np.concatenate([b2, b2], 1))[:, :4]
    got = generalized_box_iou_loss(f1, f2, reduction="none", return_grad=True)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1][0], expected[1][0])
    # integer ground-truth boxes follow boxes1's dtype
    bi = np.round(b2).astype(np.int32)
    bi[:, 2:] = np.maximum(bi[:, 2:], bi[:, :2])
    loss, (g1, g2) = complete_box_iou_loss(b1.astype(np.float32), bi, return_grad=True)
    assert loss.dtype == np.float32 and g1.dtype == np.float32 and g2.dtype == np.float32
    assert complete_box_iou_loss(bi, bi).dtype == np.float64
    # a single pair of shape (4,)
    loss = distance_box_iou_loss(b1[0], b2[0], reduction="none")
    assert loss.shape == () and loss == distance_box_iou_loss(b1[:1], b2[:1], reduction="none")[0]


def test_box_grad_out(rng):
    b1, b2 = _boxes(rng, 50).astype(np.float32), _boxes(rng, 50).astype(np.float32)
    bufs = (np.full((50, 4), 3.0, np.float32), np.full((50, 4), 3.0, np.float32))
    for _, fast, _ in BOXES:
        loss, (g1, g2) = fast(b1, b2, return_grad=True, grad_out=bufs)
        assert g1 is bufs[0] and g2 is bufs[1]
        loss2, (h1, h2) = fast(b1, b2, return_grad=True)
        assert loss == loss2
        np.testing.assert_array_equal(g1, h1)
        np.testing.assert_array_equal(g2, h2)


def test_box_bitwise_identical_across_threads(rng):
    n = 3 * _regression.BOX_BLOCK + 5                       # several blocks, 4n > SERIAL_BELOW
    b1, b2 = _boxes(rng, n).astype(np.float32), _boxes(rng, n).astype(np.float32)
    results = []
    for nt in (1, 2, 3):
        with fl.threads(nt):
            results.append([fast(b1, b2, return_grad=True) for _, fast, _ in BOXES])
    for other in results[1:]:
        for (l0, (a0, b0)), (l1, (a1, b1_)) in zip(results[0], other):
            assert l0.tobytes() == l1.tobytes()
            assert a0.tobytes() == a1.tobytes() and b0.tobytes() == b1_.tobytes()


def test_box_bad_input():
    good = np.array([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 3.0], [0.0, 0.0, 1.0, 1.0]])
    bad = good.copy()
    bad[2] = [0.0, 2.0, 1.0, 1.0]                            # y2 < y1
    with pytest.raises(ValueError, match=r"boxes1\[2\] = \[0.0, 2.0, 1.0, 1.0\] has x2 < x1 or y2 < y1"):
        generalized_box_iou_loss(bad, good)
    with pytest.raises(ValueError, match=r"boxes2\[\(1, 0\)\]"):
        distance_box_iou_loss(good.reshape(3, 1, 4), bad.reshape(3, 1, 4)[[0, 2, 1]])
    swapped = good.copy()
    swapped[0] = [1.0, 0.0, 0.0, 1.0]                        # x2 < x1
    with pytest.raises(ValueError, match=r"boxes2\[0\]"):
        complete_box_iou_loss(good, swapped)
    big = np.tile(good, (20000, 1))
    big[54321] = [5.0, 5.0, 4.0, 6.0]
    with pytest.raises(ValueError, match=r"boxes1\[54321\]"):      # found by the parallel check
        generalized_box_iou_loss(big, np.tile(good, (20000, 1)))
    with pytest.raises(ValueError, match=r"boxes1 must have shape \(\.\.\., 4\)"):
        generalized_box_iou_loss(np.zeros((3, 5)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="boxes1 must have shape"):
        generalized_box_iou_loss(np.float64(1.0), np.float64(1.0))
    with pytest.raises(ValueError, match=r"boxes2 has shape \(1, 4\).*not broadcast"):
        generalized_box_iou_loss(good, good[:1])
    with pytest.raises(ValueError, match="eps must be >= 0"):
        generalized_box_iou_loss(good, good, eps=-1e-7)
    with pytest.raises(ValueError, match="reduction"):
        generalized_box_iou_loss(good, good, reduction="batchmean")
    with pytest.raises(TypeError, match="boxes2 must be real"):
        generalized_box_iou_loss(good, good + 0j)
    with pytest.raises(ValueError, match="return_grad"):
        generalized_box_iou_loss(good, good, grad_out=(np.zeros((3, 4)), np.zeros((3, 4))))
    with pytest.raises(ValueError, match="grad_out must be a tuple of 2 arrays"):
        generalized_box_iou_loss(good, good, return_grad=True, grad_out=np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"grad_out\[1\] has shape"):
        generalized_box_iou_loss(good, good, return_grad=True, grad_out=(np.zeros((3, 4)), np.zeros(12)))
    shared = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"grad_out\[0\] must not overlap grad_out\[1\]"):
        generalized_box_iou_loss(good, good, return_grad=True, grad_out=(shared, shared))
    with pytest.raises(ValueError, match=r"grad_out\[0\] must not overlap boxes1"):
        g1 = good.copy()
        generalized_box_iou_loss(g1, good, return_grad=True, grad_out=(g1, np.zeros((3, 4))))


@pytest.mark.parametrize("fn", ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [3 * 16384 + 1001, 2 * 16384, 16384 + 16, 5])
def test_elementwise_streaming_stores_match(rng, fn, dtype, n):
    """Regression gradients past the streaming threshold go out with streaming stores,
    shifted onto aligned addresses where grad_out is not aligned to whole vectors: the same
    bits and the same loss as plain stores, with a mask and weights, at every offset, for
    blocks ending on a whole vector or a partial one; nothing written outside grad_out."""
    x = rng.standard_normal(n).astype(dtype)
    t = rng.standard_normal(n).astype(dtype)
    kw = {"reduction": "sum", "return_grad": True}
    extras = [{}, {"where": rng.random(n) < 0.9}]
    if fn == "mse_loss":
        extras.append({"weight": rng.random(n).astype(dtype)})
    call = getattr(fl, fn)
    item = np.dtype(dtype).itemsize
    mem = np.empty(n + 256 // item, dtype)
    start = (-mem.ctypes.data % 64) // item          # 64-byte aligned: every SIMD level
    for extra in extras:
        want = call(x, t, **kw, **extra)
        old = _runtime.set_stream_bytes(0)
        try:
            for off in range(start, start + 64 // item + 1):
                mem[...] = 7
                got = call(x, t, **kw, **extra, grad_out=mem[off:off + n])
                assert got[0] == want[0]
                np.testing.assert_array_equal(mem[off:off + n], want[1])
                assert (mem[:off] == 7).all() and (mem[off + n:] == 7).all()
        finally:
            _runtime.set_stream_bytes(old)
