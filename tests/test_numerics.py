"""Accuracy where the softmax and sigmoid losses used to lose it (issue 11): temperature
overflow in the divergences, cross-entropy cancellation at large logits on every path,
focal loss as p_t -> 1, the cross-entropy oracle's class axis for probability targets,
and logsumexp / softmax over several axes or of a 0-d array. Exact values come from
formulas evaluated with Python floats on exactly representable inputs, not from the
code under test."""
import math

import numpy as np
import pytest

import fastloss as fl
import fastloss.reference as ref
from helpers import assert_close

ULP64 = 2.0 ** -52


# --- temperature --------------------------------------------------------------------

P_BIG = np.array([0.7, 1e30, -0.7, -0.8])
Q_SMALL = np.array([0.0, 0.0, 2.0, 0.0])


@pytest.mark.parametrize("f, args, want", [
    ("kl_divergence", (P_BIG, Q_SMALL), 1.4401674799598643),
    ("js_divergence", (P_BIG, Q_SMALL), None),
    ("distillation_loss", (Q_SMALL, P_BIG), 144.01674799598644),
])
def test_issue_temperature_reproducers(f, args, want, simd):
    loss, grads = getattr(fl, f)(*args, temperature=10.0, return_grad=True)
    rloss, rgrads = getattr(ref, f)(*args, temperature=10.0, return_grad=True)
    if want is not None:
        assert abs(loss - want) <= 4 * ULP64 * want
        assert abs(rloss - want) <= 4 * ULP64 * want
    assert_close(loss, rloss, np.float64)
    for g, rg in zip(grads if isinstance(grads, tuple) else (grads,),
                     rgrads if isinstance(rgrads, tuple) else (rgrads,)):
        assert np.isfinite(g).all()
        assert_close(g, rg, np.float64, grad=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("temperature", [0.01, 0.5, 2.0, 3.0, 10.0])
def test_divergences_never_overflow(dtype, temperature, simd, rng):
    """Large finite logits at any temperature: losses and gradients match the oracle
    (which shifts by the max first too). Rows: a 1e30 logit in p or q (the shifted logit
    of the max was +-1e13 instead of 0 through an FMA), and rows of logits near max / 4
    (x / T overflowed for T < 1)."""
    p = rng.normal(size=(6, 37)).astype(dtype)
    q = rng.normal(size=(6, 37)).astype(dtype)
    p[0, 3], q[1, 5] = 1e30, 1e30
    near = float(np.finfo(dtype).max) / 4
    p[2] = near * (1 - rng.integers(0, 8, size=37) * 2.0 ** -20)
    q[3] = near * (1 - rng.integers(0, 8, size=37) * 2.0 ** -20)
    p[4], q[4] = p[2], q[3]
    spread = lambda a: np.max(a, -1).astype(float) - np.min(a, -1)   # noqa: E731
    for f in ("kl_divergence", "js_divergence", "entropy", "distillation_loss"):
        args = (p,) if f == "entropy" else (p, q)
        kw = {} if f == "entropy" else {"temperature": temperature}
        loss, grads = getattr(fl, f)(*args, reduction="none", return_grad=True, **kw)
        rloss, rgrads = getattr(ref, f)(*args, reduction="none", return_grad=True, **kw)
        # rows with a 1e30 logit have divergences ~1e30 / T: what is left of each term after
        # the cancellation of such numbers is good to a few ulps of them, not of the result
        tol = 1e-9 if dtype == np.float64 else 1e-4
        assert np.isfinite(loss).all(), (f, loss)
        np.testing.assert_allclose(loss, rloss, rtol=tol, atol=tol)
        for g, rg in zip(grads if isinstance(grads, tuple) else (grads,),
                         rgrads if isinstance(rgrads, tuple) else (rgrads,)):
            assert np.isfinite(g).all(), f
            # each gradient entry is a difference of terms as large as the row's shifted
            # logits (x - max) / T, times the 1 / (T n) of the chain rule and the mean
            terms = (spread(p) + spread(q)) / temperature ** 2 / p.shape[0]
            assert (np.abs(g - rg) <= tol * (np.max(np.abs(rg), -1) + terms + 1)[:, None]).all(), f


# --- cross-entropy at large logits ---------------------------------------------------

def test_issue_cross_entropy_reproducers(simd):
    for big in (1e20, 1e6, 1e300):
        x = np.array([[big, big, 0.0]])
        for dtype in (np.float32, np.float64):
            if big > float(np.finfo(dtype).max):
                continue
            loss = fl.cross_entropy(x.astype(dtype), np.array([0]))
            assert loss == np.asarray(math.log(2), dtype), (big, dtype, loss)
        assert ref.cross_entropy(x, np.array([0])) == math.log(2)


def _ce_tol(dtype):
    """A few ulps of the loss, or of 1 where it is smaller: log(sum exp(x - max)) holds the
    sum's rounding at 1 (as PyTorch's x - max - log(sum exp(x - max)) does); float32 sums
    the exponentials in float32."""
    eps = np.finfo(dtype).eps
    return dict(rtol=8 * eps if dtype == np.float64 else 2e-6, atol=4 * eps)


def _offset_rows(rng, n, C, offset, dtype):
    """Rows offset + k / 64 with small integers k: exact in dtype, so x - max is exact."""
    k = rng.integers(-400, 400, size=(n, C))
    return (offset + k / 64.0).astype(dtype)


def _exact_ce(x, y=None, t=None, w=None, eps=0.0):
    """Cross-entropy of each row (the class axis last) from exact differences x - max,
    with math.fsum: labels y or probabilities t, class weights w, label smoothing eps."""
    x = np.asarray(x, dtype=np.float64)
    C = x.shape[-1]
    w = np.ones(C) if w is None else np.asarray(w, dtype=np.float64)
    out = []
    for r in range(x.shape[0]):
        m = x[r].max()
        d = [m - v for v in x[r]]                       # exact, >= 0
        logs = math.log(math.fsum(math.exp(-v) for v in d))
        nll = [dk + logs for dk in d]                   # -log p_k, no cancellation
        if t is None:
            tgt = np.zeros(C)
            tgt[y[r]] = 1.0
            coef = (1 - eps) * tgt * w[y[r]] + eps / C * w
        else:
            coef = ((1 - eps) * np.asarray(t[r], np.float64) + eps / C) * w
        out.append(math.fsum(c * v for c, v in zip(coef, nll) if c != 0))
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [3, 40, 5000])
@pytest.mark.parametrize("option", ["plain", "weight", "smoothing", "probs", "probs_smoothing"])
def test_cross_entropy_accurate_at_large_logits(dtype, C, option, simd, rng):
    offset = 1e6 if dtype == np.float64 else 2.0 ** 17
    x = _offset_rows(rng, 9, C, offset, dtype)
    y = rng.integers(0, C, size=9)
    w = rng.uniform(0.5, 2.0, size=C).astype(dtype) if option == "weight" else None
    eps = 0.1 if "smoothing" in option else 0.0
    t = rng.dirichlet(np.ones(C), size=9).astype(dtype) if "probs" in option else None
    target = t if t is not None else y
    want = _exact_ce(x, y, t, w, eps)
    got = fl.cross_entropy(x, target, weight=w, label_smoothing=eps, reduction="none")
    np.testing.assert_allclose(got, want, **_ce_tol(dtype))
    # with the gradient (exponentials kept per chunk) and in place
    got, g = fl.cross_entropy(x.copy(), target, weight=w, label_smoothing=eps, reduction="none",
                              return_grad=True)
    np.testing.assert_allclose(got, want, **_ce_tol(dtype))
    xc = x.copy()
    got, _ = fl.cross_entropy(xc, target, weight=w, label_smoothing=eps, reduction="none",
                              return_grad=True, grad_out=xc)
    np.testing.assert_allclose(got, want, **_ce_tol(dtype))
    np.testing.assert_allclose(ref.cross_entropy(x, target, weight=w, label_smoothing=eps,
                                                 reduction="none"), want, **_ce_tol(np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_strided_axis_accurate_at_large_logits(dtype, simd, rng):
    """Class axis 1 with >= 16 positions after it: the strided (N, C, D) kernel."""
    offset = 1e6 if dtype == np.float64 else 2.0 ** 17
    x = _offset_rows(rng, 2 * 20, 7, offset, dtype).reshape(2, 20, 7).transpose(0, 2, 1).copy()
    y = rng.integers(0, 7, size=(2, 20))
    for eps in (0.0, 0.1):
        got = fl.cross_entropy(x, y, axis=1, label_smoothing=eps, reduction="none")
        want = _exact_ce(np.moveaxis(x, 1, -1).reshape(-1, 7), y.reshape(-1), eps=eps).reshape(2, 20)
        np.testing.assert_allclose(got, want, **_ce_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("eps, zl", [(0.0, 0.0), (0.1, 0.0), (0.0, 1e-4)])
def test_linear_cross_entropy_accurate_at_large_logits(dtype, eps, zl, simd, rng, monkeypatch):
    """Logits input @ W.T with input = 1 and W one column: exactly the offset rows. The
    loss-only path (in one chunk of classes, and in chunks of 64) and the gradient path."""
    offset = 1e6 if dtype == np.float64 else 2.0 ** 17
    V = 300
    logits = _offset_rows(rng, 1, V, offset, dtype)[0]
    h, W = np.ones((5, 1), dtype), logits[:, None].copy()
    y = rng.integers(0, V, size=5)
    lg = logits.astype(np.float64)
    lse = lg.max() + math.log(math.fsum(math.exp(v - lg.max()) for v in lg))
    want = _exact_ce(np.tile(lg, (5, 1)), y, eps=eps) + zl * lse ** 2
    tol = _ce_tol(dtype)
    for chunk in (8192, 64):
        monkeypatch.setattr(fl.classification, "_LOSS_CHUNK_CLASSES", chunk)
        got = fl.linear_cross_entropy(h, W, y, label_smoothing=eps, z_loss=zl, reduction="none")
        np.testing.assert_allclose(got, want, **tol)
    got, _ = fl.linear_cross_entropy(h, W, y, label_smoothing=eps, z_loss=zl, reduction="none",
                                     return_grad=True)
    np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_softmax_and_logsumexp_at_large_logits(dtype, simd):
    x = np.array([[1e20, 1e20, 0.0], [3.0, 3.0, 3.0]], dtype=dtype)
    ls = fl.log_softmax(x)
    want = np.array([[-math.log(2), -math.log(2), -float(x[0, 0])], [-math.log(3)] * 3])
    np.testing.assert_allclose(ls, want.astype(dtype), rtol=2 * np.finfo(dtype).eps)
    np.testing.assert_allclose(ref.log_softmax(x), want, rtol=4 * ULP64)
    np.testing.assert_allclose(fl.softmax(x)[0], [0.5, 0.5, 0.0])
    assert fl.logsumexp(x)[0] == np.asarray(1e20, dtype)


def test_bce_large_logits_keep_relative_accuracy(simd):
    for x, t in ((40.0, 1.0), (-40.0, 0.0), (700.0, 1.0)):
        got = fl.binary_cross_entropy_with_logits(np.array([x]), np.array([t]), reduction="none")[0]
        assert abs(got - math.log1p(math.exp(-abs(x)))) <= 4 * ULP64 * got


# --- focal loss as p_t -> 1 ----------------------------------------------------------

def _exact_focal(x, gamma):
    """Focal loss (alpha = -1) of logit x >= 0 with target 1 and its derivative:
    l = q^gamma s, s = softplus(-x) = log1p(e^-x), q = sigmoid(-x);
    dl/dx = -q^gamma (gamma (1 - q) s + q)."""
    e = math.exp(-x)
    s, q = math.log1p(e), e / (1 + e)
    return q ** gamma * s, -(q ** gamma) * (gamma * (1 - q) * s + q)


def test_issue_focal_reproducers(simd):
    f = fl.sigmoid_focal_loss
    got = f(np.float32([10.0, 15.0]), np.float32([1.0, 1.0]), alpha=-1, gamma=0, reduction="none")
    np.testing.assert_allclose(got, [4.53989e-05, 3.059023e-07], rtol=2e-6)
    got = f(np.float64([37.0]), np.float64([1.0]), alpha=-1, gamma=0, reduction="none")
    np.testing.assert_allclose(got, [_exact_focal(37.0, 0)[0]], rtol=4 * ULP64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_relative_accuracy(dtype, gamma, simd):
    top = 60.0 if dtype == np.float32 else 600.0   # loss > smallest normal number
    xs = np.linspace(0.0, top, 41)
    exact = np.array([_exact_focal(x, gamma) for x in xs])
    for sign in (1, -1):                         # x with target 1, -x with target 0: the same
        x = (sign * xs).astype(dtype)
        t = np.full(xs.size, 1.0 if sign > 0 else 0.0, dtype)
        loss, g = fl.sigmoid_focal_loss(x, t, alpha=-1, gamma=gamma, reduction="none", return_grad=True)
        keep = exact[:, 0] > np.finfo(dtype).tiny * 1e3
        rtol = 64 * np.finfo(dtype).eps
        np.testing.assert_allclose(loss[keep], exact[keep, 0], rtol=rtol)
        np.testing.assert_allclose(g[keep], sign * exact[keep, 1], rtol=rtol)
        rl, rg = ref.sigmoid_focal_loss(x, t, alpha=-1, gamma=gamma, reduction="none", return_grad=True)
        np.testing.assert_allclose(rl[keep], exact[keep, 0], rtol=64 * ULP64)
        np.testing.assert_allclose(rg[keep], sign * exact[keep, 1], rtol=64 * ULP64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_focal_soft_targets_match_the_accurate_oracle(dtype, simd, rng):
    x = rng.uniform(-30, 30, size=500).astype(dtype)
    t = rng.uniform(0, 1, size=500).astype(dtype)
    t[:100] = rng.choice([0.0, 1.0], size=100)
    for gamma in (0.0, 2.0):
        loss, g = fl.sigmoid_focal_loss(x, t, gamma=gamma, reduction="none", return_grad=True)
        rl, rg = ref.sigmoid_focal_loss(x, t, gamma=gamma, reduction="none", return_grad=True)
        np.testing.assert_allclose(loss, rl, rtol=64 * np.finfo(dtype).eps)
        assert_close(g, rg, dtype, grad=True)


def test_focal_matches_torchvision_formula_at_moderate_logits():
    torch = pytest.importorskip("torch")
    x = torch.linspace(-8, 8, 33, dtype=torch.float64)
    t = (torch.arange(33) % 2).to(torch.float64)
    p = torch.sigmoid(x)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    want = (0.25 * t + 0.75 * (1 - t)) * ce * (1 - p_t) ** 2
    got = fl.sigmoid_focal_loss(x.numpy(), t.numpy(), reduction="none")
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-9)   # torchvision cancels at |x| > 8


# --- the cross-entropy oracle's class axis --------------------------------------------

@pytest.mark.parametrize("shape, axis", [((4, 1, 4), -3), ((3, 5, 2), 1), ((3, 5, 2), 0), ((2, 3, 4), -1)])
def test_reference_cross_entropy_probability_target_axis(shape, axis, rng):
    """The oracle against explicit loops (and the kernel against the oracle)."""
    x = rng.normal(size=shape)
    t = rng.dirichlet(np.ones(shape[axis]), size=x.size // shape[axis])
    t = np.moveaxis(t.reshape(np.moveaxis(x, axis, -1).shape), -1, axis)
    loss, g = ref.cross_entropy(x, t, axis=axis, reduction="none", return_grad=True)
    xm, tm = np.moveaxis(x, axis, -1), np.moveaxis(t, axis, -1)
    want = np.empty(xm.shape[:-1])
    want_g = np.empty(xm.shape)
    for idx in np.ndindex(*xm.shape[:-1]):
        row = xm[idx]
        lse = math.log(sum(math.exp(v) for v in row))
        want[idx] = -sum(tk * (v - lse) for tk, v in zip(tm[idx], row))
        want_g[idx] = np.exp(row - lse) * tm[idx].sum() - tm[idx]
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    assert g.shape == x.shape
    np.testing.assert_allclose(g, np.moveaxis(want_g, -1, axis), rtol=1e-12, atol=1e-15)
    fast = fl.cross_entropy(x, t, axis=axis, reduction="none", return_grad=True)
    assert_close(fast[0], loss, np.float64)
    assert_close(fast[1], g, np.float64, grad=True)


def test_reference_cross_entropy_probability_target_axis_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(3, 5, 4))
    t = rng.dirichlet(np.ones(5), size=12).reshape(3, 4, 5).transpose(0, 2, 1)
    xt = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.cross_entropy(xt, torch.tensor(t), reduction="sum")
    want.backward()
    loss, g = ref.cross_entropy(x, t, axis=1, reduction="sum", return_grad=True)
    np.testing.assert_allclose(loss, want.item(), rtol=1e-12)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-12, atol=1e-15)


# --- several axes, 0-d arrays --------------------------------------------------------

@pytest.mark.parametrize("axis", [(0, 1), (1, 0), (-1, 0), (0, 2), None, (2,), (0, 1, 2)])
def test_logsumexp_softmax_over_several_axes(axis, rng):
    special = pytest.importorskip("scipy.special")
    x = rng.normal(size=(3, 4, 5))
    want = special.logsumexp(x, axis=axis)
    lse, g = fl.logsumexp(x, axis=axis, return_grad=True)
    np.testing.assert_allclose(lse, want, rtol=1e-13)
    np.testing.assert_allclose(ref.logsumexp(x, axis=axis), want, rtol=1e-13)
    np.testing.assert_allclose(g, special.softmax(x, axis=axis), rtol=1e-12)
    np.testing.assert_allclose(fl.softmax(x, axis=axis), special.softmax(x, axis=axis), rtol=1e-12)
    np.testing.assert_allclose(fl.log_softmax(x, axis=axis), special.log_softmax(x, axis=axis),
                               rtol=1e-12, atol=1e-14)
    out = np.empty_like(x)
    assert fl.softmax(x, axis=axis, out=out) is out
    np.testing.assert_allclose(out, special.softmax(x, axis=axis), rtol=1e-12)
    x32 = x.astype(np.float32)
    assert fl.logsumexp(x32, axis=axis).dtype == np.float32


def test_logsumexp_several_axes_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(3, 4, 5))
    np.testing.assert_allclose(fl.logsumexp(x, axis=(0, 1)),
                               torch.logsumexp(torch.tensor(x), dim=(0, 1)).numpy(), rtol=1e-13)


def test_zero_dim_inputs():
    """A 0-d array is one class (SciPy, PyTorch): softmax 1, log_softmax 0, logsumexp x."""
    x = np.float64(2.5)
    for axis in (0, -1, None):
        assert fl.softmax(x, axis=axis) == 1.0 and fl.softmax(x, axis=axis).shape == ()
        assert fl.log_softmax(x, axis=axis) == 0.0
        lse, g = fl.logsumexp(x, axis=axis, return_grad=True)
        assert lse == 2.5 and g == 1.0 and g.shape == ()
        assert ref.logsumexp(x, axis=axis) == 2.5 and ref.softmax(x, axis=axis) == 1.0
    torch = pytest.importorskip("torch")
    assert torch.softmax(torch.tensor(2.5), 0).item() == 1.0
    assert torch.logsumexp(torch.tensor(2.5), 0).item() == 2.5


def test_several_axes_errors():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="distinct"):
        fl.logsumexp(x, axis=(0, 0))
    with pytest.raises(ValueError, match="out of range"):
        fl.logsumexp(x, axis=(0, 2))
    with pytest.raises(TypeError, match="axis"):
        fl.softmax(x, axis=(0, "1"))
    with pytest.raises(ValueError, match="no classes"):
        fl.logsumexp(np.zeros((2, 0)), axis=(0, 1))
