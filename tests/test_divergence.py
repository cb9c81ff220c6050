"""Divergences between softmax distributions against the float64 oracles, finite
differences and PyTorch; layouts, threads, streaming stores, edge cases and bad input.
The Gaussian family's tests are in test_gaussian.py; the few tests below that call both
families (dtype conversion, threads) stay here whole."""

import numpy as np
import pytest

import fastloss
from fastloss import _divergence as _k, _runtime
from fastloss.divergence import distillation_loss, entropy, js_divergence, kl_divergence
from fastloss.gaussian import gaussian_kl, gaussian_nll_loss, vae_loss
from fastloss.reference import divergence as ref
from helpers import check_loss_and_grads, fd_grad, torch_leaf

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


def _logits(rng, shape, dtype=np.float64, scale=3.0, zeros=False):
    x = rng.standard_normal(shape) * scale
    if zeros and x.size:                 # some classes with probability 0
        x.reshape(-1, x.shape[-1])[::2, 1] = -np.inf
    return x.astype(dtype)


# --- softmax rows against the oracles ----------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
@pytest.mark.parametrize("C", [7, 37, 300])
def test_entropy_matrix(simd, rng, dtype, reduction, C):
    x = _logits(rng, (11, C), dtype, zeros=True)
    kw = dict(reduction=reduction, return_grad=True)
    check_loss_and_grads(entropy(x, **kw), ref.entropy(x, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 3, 10, 17, 100, 256])
def test_entropy_blocked_rows(simd, rng, dtype, C):
    """Rows of at most 256 classes run in blocks of rows (transposed up to 48 classes, 32 in
    float64: entropy_small; entropy_mid above): a row holding a NaN, an infinity or a sum
    that overflows gets the row path's result inside its block, and every row has the bits
    it has alone, in place too."""
    x = _logits(rng, (37, C), dtype)
    x[3, 0], x[5, -1], x[8], x[13, 0] = np.nan, np.inf, -np.inf, -np.inf
    if C >= 3:
        x[11, :2], x[11, 2] = np.finfo(dtype).max / 2, -np.inf   # finite max, the sum overflows
    loss, g = entropy(x, reduction="none", return_grad=True)
    want, want_g = ref.entropy(x.astype(np.float64), reduction="none", return_grad=True)
    tol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(loss, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(g, want_g, rtol=tol, atol=tol)
    bad = [3, 5, 8] + ([13] if C == 1 else [])         # C = 1: row 13 is all -inf
    assert np.isnan(loss[bad]).all() and np.isfinite(np.delete(loss, bad)).all()
    for i in range(x.shape[0]):
        li, gi = entropy(x[i:i + 1], reduction="none", return_grad=True)
        np.testing.assert_array_equal(li, loss[i:i + 1])
        np.testing.assert_array_equal(gi, g[i:i + 1])
    xc = x.copy()
    entropy(xc, reduction="none", return_grad=True, grad_out=xc)
    np.testing.assert_array_equal(xc, g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", [1.0, 0.3, 2.5])
@pytest.mark.parametrize("C", [1, 3, 10, 17, 100, 256])
@pytest.mark.parametrize("kind", ["kl", "js"])
def test_pair_blocked_rows(simd, rng, dtype, temperature, C, kind):
    """KL and JS rows of at most 256 classes run in blocks of row pairs (transposed up to 48
    classes, 32 in float64: kl_small, js_small; kl_mid, js_mid above): a pair holding a NaN
    or an infinity gets the row path's result inside its block, equal rows give KL exactly 0,
    and every pair has the bits it has alone, in place either way round too."""
    fn, oracle = {"kl": (kl_divergence, ref.kl_divergence),
                  "js": (js_divergence, ref.js_divergence)}[kind]
    p, q = _logits(rng, (37, C), dtype, zeros=C > 1), _logits(rng, (37, C), dtype)
    p[3, 0], q[5, -1], p[8], q[13, 0] = np.nan, np.inf, -np.inf, -np.inf
    q[20] = p[20]
    kw = dict(temperature=temperature, reduction="none", return_grad=True)
    if kind == "js":
        kw["beta"] = 0.3
    loss, (ga, gb) = fn(p, q, **kw)
    check_loss_and_grads((loss, (ga, gb)), oracle(p, q, **kw), dtype)
    assert np.isnan(loss[[3, 5, 8]]).all() and (kind == "js" or loss[20] == 0)
    for i in range(p.shape[0]):
        li, (gai, gbi) = fn(p[i:i + 1], q[i:i + 1], **kw)
        np.testing.assert_array_equal(li, loss[i:i + 1])
        np.testing.assert_array_equal(gai, ga[i:i + 1])
        np.testing.assert_array_equal(gbi, gb[i:i + 1])
    for swap in (False, True):
        pc, qc = p.copy(), q.copy()
        fn(pc, qc, grad_out=(qc, pc) if swap else (pc, qc), **kw)
        np.testing.assert_array_equal(qc if swap else pc, ga)
        np.testing.assert_array_equal(pc if swap else qc, gb)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("C", [7, 37, 300])
def test_kl_matrix(simd, rng, dtype, reduction, temperature, C):
    p = _logits(rng, (11, C), dtype, zeros=True)
    q = _logits(rng, (11, C), dtype)
    kw = dict(temperature=temperature, reduction=reduction, return_grad=True)
    check_loss_and_grads(kl_divergence(p, q, **kw), ref.kl_divergence(p, q, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("beta,temperature", [(0.5, 1.0), (0.2, 2.0), (0.0, 1.0), (1.0, 1.0)])
@pytest.mark.parametrize("C", [7, 300])
def test_js_matrix(simd, rng, dtype, reduction, beta, temperature, C):
    p = _logits(rng, (9, C), dtype, zeros=True)
    q = _logits(rng, (9, C), dtype)
    q[1, 3] = -np.inf
    kw = dict(beta=beta, temperature=temperature, reduction=reduction, return_grad=True)
    check_loss_and_grads(js_divergence(p, q, **kw), ref.js_divergence(p, q, **kw), dtype)


def test_js_properties(rng):
    p, q = _logits(rng, (6, 40)), _logits(rng, (6, 40))
    js = js_divergence(p, q, reduction="none")
    assert np.all(js >= 0) and np.all(js <= np.log(2) + 1e-12)
    np.testing.assert_allclose(js, js_divergence(q, p, reduction="none"), rtol=1e-12)
    assert np.all(js_divergence(p, p, reduction="none") < 1e-15)
    # disjoint supports: exactly log 2
    a = np.array([[0.0, -np.inf]]); b = np.array([[-np.inf, 0.0]])
    assert js_divergence(a, b) == pytest.approx(np.log(2), rel=1e-15)
    assert js_divergence(p, q, beta=0.0) == 0.0 and js_divergence(p, q, beta=1.0) == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("labels,alpha", [(False, 0.5), (True, 0.0), (True, 0.3), (True, 1.0)])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_distillation_matrix(simd, rng, dtype, reduction, labels, alpha, temperature):
    C = 37
    s, t = _logits(rng, (13, C), dtype), _logits(rng, (13, C), dtype, zeros=True)
    y = None
    if labels:
        y = rng.integers(0, C, 13)
        y[::4] = -100
    kw = dict(temperature=temperature, target=y, alpha=alpha, reduction=reduction, return_grad=True)
    check_loss_and_grads(distillation_loss(s, t, **kw), ref.distillation_loss(s, t, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("C", [1, 3, 10, 17, 32, 48, 100])
def test_distillation_blocked_rows(simd, rng, dtype, temperature, C):
    """Distillation with hard labels on rows of few classes (kl_small: the cross-entropy
    and the skipped rows in the transposed block): rows with a NaN or an infinity and
    ignored rows among the others, each row's bits as alone, the gradient over the
    student's logits the same as into a separate buffer."""
    s, t = _logits(rng, (37, C), dtype), _logits(rng, (37, C), dtype, zeros=C > 1)
    s[3, 0], t[5, -1], s[8], t[13, 0] = np.nan, np.inf, -np.inf, -np.inf
    y = rng.integers(0, C, 37)
    y[[2, 5, 11, 30]] = -100
    kw = dict(temperature=temperature, alpha=0.3, reduction="none", return_grad=True)
    loss, g = distillation_loss(s, t, target=y, **kw)
    check_loss_and_grads((loss, g), ref.distillation_loss(s, t, target=y, **kw), dtype)
    assert np.isnan(loss[[3, 8]]).all() and (loss[[2, 5, 11, 30]] == 0).all()
    for i in range(s.shape[0]):
        li, gi = distillation_loss(s[i:i + 1], t[i:i + 1], target=y[i:i + 1], **kw)
        np.testing.assert_array_equal(li, loss[i:i + 1])
        np.testing.assert_array_equal(gi, g[i:i + 1])
    x = s.copy()
    distillation_loss(x, t, target=y, grad_out=x, **kw)
    np.testing.assert_array_equal(x, g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_distillation_with_target_long_rows_in_place(simd, rng, dtype, temperature):
    """The cross-entropy term in the KL kernel's pass on rows too long for its scratch (the
    gradient pass recomputes the exponentials, three at T != 1), the gradient written over
    the student's logits: as the oracle, and the same as into a separate buffer."""
    C = 60000 if dtype == np.float32 else 30000
    s, t = _logits(rng, (3, C), dtype), _logits(rng, (3, C), dtype)
    y = np.array([5, -100, C - 1])
    kw = dict(temperature=temperature, target=y, alpha=0.4, return_grad=True)
    got = distillation_loss(s, t, **kw)
    check_loss_and_grads(got, ref.distillation_loss(s, t, **kw), dtype)
    x = s.copy()
    loss, g = distillation_loss(x, t, grad_out=x, **kw)
    assert g is x and loss == got[0]
    np.testing.assert_array_equal(g, got[1])


def test_distillation_is_scaled_kl_and_cross_entropy(rng):
    s, t = _logits(rng, (8, 20)), _logits(rng, (8, 20))
    T = 2.0
    kl = kl_divergence(t, s, temperature=T)
    assert distillation_loss(s, t, temperature=T) == pytest.approx(T * T * kl, rel=1e-13)
    y = rng.integers(0, 20, 8)
    ce = fastloss.cross_entropy(s, y)
    mixed = distillation_loss(s, t, temperature=T, target=y, alpha=0.25)
    assert mixed == pytest.approx(0.25 * T * T * kl + 0.75 * ce, rel=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 2, 15, 16, 17, 33, 256, 257])
def test_row_lengths(rng, dtype, C):
    """Vector tails and sum blocks at every alignment."""
    p, q = _logits(rng, (5, C), dtype), _logits(rng, (5, C), dtype)
    kw = dict(reduction="none", return_grad=True)
    check_loss_and_grads(kl_divergence(p, q, **kw), ref.kl_divergence(p, q, **kw), dtype)
    check_loss_and_grads(js_divergence(p, q, **kw), ref.js_divergence(p, q, **kw), dtype)
    check_loss_and_grads(entropy(p, **kw), ref.entropy(p, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_rows_recompute(rng, dtype):
    """Rows too long for the per-thread scratch recompute exp in the gradient pass."""
    C = 70000 if dtype == np.float32 else 30000
    p, q = _logits(rng, (2, C), dtype), _logits(rng, (2, C), dtype, zeros=True)
    kw = dict(temperature=1.5, return_grad=True)
    check_loss_and_grads(kl_divergence(p, q, **kw), ref.kl_divergence(p, q, **kw), dtype)
    check_loss_and_grads(js_divergence(p, q, **kw), ref.js_divergence(p, q, **kw), dtype)
    check_loss_and_grads(entropy(q, return_grad=True), ref.entropy(q, return_grad=True), dtype)
    s = distillation_loss(p, q, temperature=2.0, target=np.array([3, -100]), alpha=0.5, return_grad=True)
    r = ref.distillation_loss(p, q, temperature=2.0, target=np.array([3, -100]), alpha=0.5, return_grad=True)
    check_loss_and_grads(s, r, dtype)


# --- finite differences --------------------------------------------------------------------

def test_softmax_rows_finite_differences(rng):
    p, q = _logits(rng, (3, 6), scale=1.0), _logits(rng, (3, 6), scale=1.0)
    T = 1.7
    for fn, kw in [(kl_divergence, dict(temperature=T)), (js_divergence, dict(beta=0.3, temperature=T))]:
        _, (gp, gq) = fn(p, q, reduction="sum", return_grad=True, **kw)
        np.testing.assert_allclose(gp, fd_grad(lambda a: fn(a, q, reduction="sum", **kw), p), atol=1e-8)
        np.testing.assert_allclose(gq, fd_grad(lambda b: fn(p, b, reduction="sum", **kw), q), atol=1e-8)
    _, g = entropy(p, return_grad=True)
    np.testing.assert_allclose(g, fd_grad(lambda a: entropy(a), p), atol=1e-8)
    y = np.array([1, -100, 4])
    for tgt in (None, y):
        _, g = distillation_loss(p, q, temperature=T, target=tgt, alpha=0.4, return_grad=True)
        f = lambda s: distillation_loss(s, q, temperature=T, target=tgt, alpha=0.4)
        np.testing.assert_allclose(g, fd_grad(f, p), atol=1e-8)


# --- semantics and edge cases --------------------------------------------------------------

def test_zero_probabilities_and_infinite_kl(simd):
    with np.errstate(divide="ignore"):
        p = np.log(np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]))
        q = np.log(np.array([[0.25, 0.25, 0.5], [0.5, 0.5, 0.0]]))
    kl, (gp, gq) = kl_divergence(p, q, reduction="none", return_grad=True)
    assert kl[0] == pytest.approx(np.log(2), rel=1e-14)      # 0 log 0 = 0
    assert kl[1] == np.inf                                    # q has no mass where p has
    assert gp[0, 2] == 0.0 and np.all(np.isfinite(gp[0])) and np.all(np.isfinite(gq))
    assert entropy(p[:1]) == pytest.approx(np.log(2), rel=1e-14)
    assert np.isfinite(js_divergence(p, q, reduction="none")).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_degenerate_rows(simd, dtype):
    p = np.zeros((4, 20), dtype)
    q = np.zeros((4, 20), dtype)
    p[0, 5] = np.nan          # NaN logit
    q[1, 7] = np.nan
    p[2, :] = -np.inf         # no distribution
    q[3, 2] = np.inf          # +inf logit
    for fn in (kl_divergence, js_divergence):
        loss, (gp, gq) = fn(p, q, reduction="none", return_grad=True)
        assert np.all(np.isnan(loss)), fn
        assert np.isnan(gp).all() and np.isnan(gq).all()
        assert np.isnan(fn(p, q))
    assert np.isnan(entropy(p, reduction="none")[[0, 2]]).all()
    ok = np.zeros((2, 20), dtype)
    assert entropy(ok) == pytest.approx(np.log(20), rel=1e-6)
    assert np.isnan(distillation_loss(q, p, target=np.arange(4))).all()


def test_huge_finite_logits_not_mistaken_for_nan(simd):
    """The max sweep's NaN check sums the row; an overflowing sum must not flag the row."""
    x = np.full((1, 40), 3e38, np.float32)
    x[0, 1] = -np.inf
    y = np.zeros((1, 40), np.float32)
    assert np.isfinite(kl_divergence(x, y))
    assert kl_divergence(x, y) == pytest.approx(np.log(40 / 39), rel=1e-5)


def test_empty_batch():
    for fn in (kl_divergence, js_divergence, distillation_loss):
        a = np.zeros((0, 5), np.float32)
        assert np.isnan(fn(a, a))
        assert fn(a, a, reduction="sum") == 0.0
        loss, g = fn(a, a, reduction="none", return_grad=True)
        assert loss.shape == (0,) and loss.dtype == np.float32
    loss, g = entropy(np.zeros((3, 0, 4)), reduction="none", return_grad=True)
    assert loss.shape == (3, 0) and g.shape == (3, 0, 4)


def test_axis_layouts(rng):
    p, q = _logits(rng, (4, 9, 5)), _logits(rng, (4, 9, 5))
    loss, (gp, gq) = kl_divergence(p, q, axis=1, reduction="none", return_grad=True)
    rl, (rp, rq) = kl_divergence(np.moveaxis(p, 1, -1), np.moveaxis(q, 1, -1), reduction="none",
                                 return_grad=True)
    np.testing.assert_array_equal(loss, rl)
    np.testing.assert_array_equal(gp, np.moveaxis(rp, -1, 1))
    # Fortran order and strided views give the same as contiguous copies
    pf, qs = np.asfortranarray(p), q[:, ::-1][:, ::-1]
    for fn in (kl_divergence, js_divergence):
        a = fn(pf, qs, axis=-1, reduction="none", return_grad=True)
        b = fn(p.copy(), q.copy(), axis=-1, reduction="none", return_grad=True)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1][0], b[1][0])
    e1 = entropy(p, axis=0, reduction="none")
    np.testing.assert_array_equal(e1, entropy(np.moveaxis(p, 0, -1), reduction="none"))


def test_dtype_conversion(rng):
    p16 = _logits(rng, (3, 8), np.float16, scale=1.0)
    assert kl_divergence(p16, p16).dtype == np.float32
    assert entropy(np.ones((2, 4), np.int32)).dtype == np.float64
    assert kl_divergence(p16, np.zeros((3, 8))).dtype == np.float64
    assert gaussian_kl(np.zeros((2, 3), np.float32), 0.5).dtype == np.float32    # weak scalar
    assert gaussian_nll_loss(np.zeros(4, np.float32), np.ones(4, np.float32), 2.0).dtype == np.float32


def test_grad_out_buffers_and_in_place(rng):
    p, q = _logits(rng, (6, 30), np.float32), _logits(rng, (6, 30), np.float32)
    want = kl_divergence(p, q, return_grad=True)
    bufs = (np.empty_like(p), np.empty_like(q))
    loss, g = kl_divergence(p, q, return_grad=True, grad_out=bufs)
    assert g[0] is bufs[0] and g[1] is bufs[1]
    np.testing.assert_array_equal(g[0], want[1][0])
    pc, qc = p.copy(), q.copy()       # in place, and crossed
    for out in ((pc, qc), (qc, pc)):
        pc[...], qc[...] = p, q
        loss, g = kl_divergence(pc, qc, return_grad=True, grad_out=out)
        assert loss == want[0]
        np.testing.assert_array_equal(g[0], want[1][0])
        np.testing.assert_array_equal(g[1], want[1][1])
    wj = js_divergence(p, q, return_grad=True)
    pc[...], qc[...] = p, q
    _, g = js_divergence(pc, qc, return_grad=True, grad_out=(pc, qc))
    np.testing.assert_array_equal(pc, wj[1][0])
    we = entropy(p, return_grad=True)
    pc[...] = p
    entropy(pc, return_grad=True, grad_out=pc)
    np.testing.assert_array_equal(pc, we[1])
    y = rng.integers(0, 30, 6)
    wd = distillation_loss(p, q, target=y, temperature=2.0, return_grad=True)
    pc[...] = p
    ld, gd = distillation_loss(pc, q, target=y, temperature=2.0, return_grad=True, grad_out=pc)
    assert gd is pc and ld == wd[0]
    np.testing.assert_array_equal(pc, wd[1])
    # axis not last: written into the buffer
    buf = (np.empty((30, 6), np.float32), np.empty((30, 6), np.float32))
    _, g = kl_divergence(p.T, q.T, axis=0, return_grad=True, grad_out=buf)
    assert g[0] is buf[0]
    np.testing.assert_array_equal(buf[0], want[1][0].T)


@pytest.mark.parametrize("fn", ["kl", "js", "entropy", "distill"])
def test_streaming_stores_match(rng, fn):
    """Big gradients go out with streaming stores, from any alignment of the buffer."""
    p, q = _logits(rng, (33, 45), np.float32), _logits(rng, (33, 45), np.float32)
    y = rng.integers(0, 45, 33)
    call = {"kl": lambda a, b, **k: kl_divergence(a, b, **k),
            "js": lambda a, b, **k: js_divergence(a, b, **k),
            "entropy": lambda a, b, **k: entropy(a, **k),
            "distill": lambda a, b, **k: distillation_loss(a, b, target=y, **k)}[fn]
    want = call(p, q, return_grad=True)
    old = _runtime.set_stream_bytes(0)
    try:
        for off in range(3):
            mem = np.zeros(2 * p.size + 8, np.float32)
            bufs = (mem[off:off + p.size].reshape(p.shape),
                    mem[p.size + 4 + off:2 * p.size + 4 + off].reshape(p.shape))
            got = call(p, q, return_grad=True, grad_out=bufs if fn in ("kl", "js") else bufs[0])
            assert got[0] == want[0]
            for a, b in zip(np.atleast_1d(got[1]) if fn in ("kl", "js") else [got[1]],
                            want[1] if fn in ("kl", "js") else [want[1]]):
                np.testing.assert_array_equal(a, b)
    finally:
        _runtime.set_stream_bytes(old)


def test_bitwise_identical_across_threads(rng):
    p, q = _logits(rng, (300, 500), np.float32), _logits(rng, (300, 500), np.float32)
    y = rng.integers(0, 500, 300)
    mu, lv = rng.standard_normal((400, 200)).astype(np.float32), rng.standard_normal((400, 200)).astype(np.float32)
    x, t = rng.standard_normal((500, 130)), rng.standard_normal((500, 130))
    var = rng.uniform(0.1, 2, (500, 130))
    calls = [lambda: kl_divergence(p, q, return_grad=True),
             lambda: js_divergence(p, q, return_grad=True),
             lambda: entropy(p, return_grad=True),
             lambda: distillation_loss(p, q, target=y, temperature=2.0, return_grad=True),
             lambda: gaussian_kl(mu, lv, return_grad=True),
             lambda: gaussian_kl(mu, lv, mu[::-1], lv[::-1], reduction="none", return_grad=True),
             lambda: vae_loss(x[:400], t[:400], mu, lv, recon_loss="bce", return_grad=True),
             lambda: vae_loss(x[:400], t[:400], mu, lv, reduction="none", return_grad=True),
             lambda: gaussian_nll_loss(x, t, var, return_grad=True),
             lambda: gaussian_nll_loss(x, t, var[:, 0], return_grad=True)]
    for call in calls:
        results = []
        for n in (1, 2, 3):
            with fastloss.threads(n):
                results.append(call())
        for r in results[1:]:
            for a, b in zip(_flatten(r), _flatten(results[0])):
                np.testing.assert_array_equal(a, b)


def _flatten(r):
    out = []
    for v in (r if isinstance(r, tuple) else (r,)):
        out.extend(_flatten(v) if isinstance(v, tuple) else [np.asarray(v)])
    return out


# --- PyTorch parity --------------------------------------------------------------------------------

def test_softmax_rows_match_pytorch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    p, q = _logits(rng, (6, 11)), _logits(rng, (6, 11))
    T = 2.0
    tp, tq = torch_leaf(p), torch_leaf(q)
    want = F.kl_div(F.log_softmax(tq / T, -1), F.log_softmax(tp / T, -1), reduction="batchmean",
                    log_target=True)
    want.backward()
    loss, (gp, gq) = kl_divergence(p, q, temperature=T, reduction="batchmean", return_grad=True)
    assert loss == pytest.approx(want.item(), rel=1e-12)
    np.testing.assert_allclose(gp, tp.grad.numpy(), atol=1e-14)
    np.testing.assert_allclose(gq, tq.grad.numpy(), atol=1e-14)
    tx = torch_leaf(p)
    h = torch.distributions.Categorical(logits=tx).entropy().mean()
    h.backward()
    loss, g = entropy(p, return_grad=True)
    assert loss == pytest.approx(h.item(), rel=1e-12)
    np.testing.assert_allclose(g, tx.grad.numpy(), atol=1e-14)
    # generalised JSD as in TRL's GKD trainer (beta weights the first argument)
    beta = 0.3
    tp, tq = torch_leaf(p), torch_leaf(q)
    lp, lq = F.log_softmax(tp, -1), F.log_softmax(tq, -1)
    lm = torch.logsumexp(torch.stack([lp + np.log(beta), lq + np.log(1 - beta)]), dim=0)
    jsd = (beta * F.kl_div(lm, lp, reduction="none", log_target=True)
           + (1 - beta) * F.kl_div(lm, lq, reduction="none", log_target=True)).sum(-1).mean()
    jsd.backward()
    loss, (gp, gq) = js_divergence(p, q, beta=beta, return_grad=True)
    assert loss == pytest.approx(jsd.item(), rel=1e-12)
    np.testing.assert_allclose(gp, tp.grad.numpy(), atol=1e-14)
    np.testing.assert_allclose(gq, tq.grad.numpy(), atol=1e-14)
    # Hinton distillation
    y = rng.integers(0, 11, 6)
    ts = torch_leaf(p)
    kd = F.kl_div(F.log_softmax(ts / T, -1), F.softmax(torch.tensor(q) / T, -1),
                  reduction="batchmean") * T * T
    total = 0.4 * kd + 0.6 * F.cross_entropy(ts, torch.tensor(y))
    total.backward()
    loss, g = distillation_loss(p, q, temperature=T, target=y, alpha=0.4, return_grad=True)
    assert loss == pytest.approx(total.item(), rel=1e-12)
    np.testing.assert_allclose(g, ts.grad.numpy(), atol=1e-14)


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,exc,match", [
    (lambda p, q: kl_divergence(p, q[:, :3]), ValueError, "q_logits has shape"),
    (lambda p, q: kl_divergence(p, q, temperature=0.0), ValueError, "temperature"),
    (lambda p, q: kl_divergence(p, q, temperature=-1), ValueError, "temperature"),
    (lambda p, q: js_divergence(p, q, temperature=np.inf), ValueError, "temperature"),
    (lambda p, q: kl_divergence(p, q, temperature=np.nan), ValueError, "temperature"),
    (lambda p, q: kl_divergence(p, q, temperature="hot"), TypeError, "temperature"),
    (lambda p, q: js_divergence(p, q, beta=1.5), ValueError, "beta"),
    (lambda p, q: js_divergence(p, q, beta=-0.1), ValueError, "beta"),
    (lambda p, q: distillation_loss(p, q, alpha=2.0), ValueError, "alpha"),
    (lambda p, q: distillation_loss(p, q, target=np.array([0, 1, 9, 2])), IndexError, r"target\[2\]"),
    (lambda p, q: distillation_loss(p, q, target=np.zeros(3, int)), ValueError, "target labels have shape"),
    (lambda p, q: distillation_loss(p, q, target=np.zeros(4)), TypeError, "target"),
    (lambda p, q: distillation_loss(p, q[:2]), ValueError, "teacher_logits has shape"),
    (lambda p, q: kl_divergence(p, q, reduction="avg"), ValueError, "reduction"),
    (lambda p, q: entropy(p, reduction="batch"), ValueError, "reduction"),
    (lambda p, q: kl_divergence(p, q, axis=2), ValueError, "axis"),
    (lambda p, q: entropy(np.float64(1.0)), ValueError, "logits must have at least one"),
    (lambda p, q: entropy(np.zeros((3, 0))), ValueError, "no classes"),
    (lambda p, q: kl_divergence(p + 1j, q), TypeError, "p_logits must be real"),
    (lambda p, q: entropy(np.array(["a"])), TypeError, "logits"),
    (lambda p, q: kl_divergence(p, q, grad_out=(p, q)), ValueError, "grad_out is only used"),
    (lambda p, q: kl_divergence(p, q, return_grad=True, grad_out=p), ValueError, "tuple of 2"),
    (lambda p, q: kl_divergence(p, q, return_grad=True, grad_out=(p, q[:2])), ValueError, r"grad_out\[1\] has shape"),
    (lambda p, q: kl_divergence(p, q, return_grad=True, grad_out=(p.astype(np.float32), q)), TypeError,
     r"grad_out\[0\] has dtype"),
    (lambda p, q: entropy(p, return_grad=True, grad_out=np.zeros((5, 4)).T), ValueError, "grad_out"),
])
def test_bad_softmax_input(call, exc, match):
    p, q = np.zeros((4, 5)), np.zeros((4, 5))
    with pytest.raises(exc, match=match):
        call(p, q)


def test_concurrent_python_threads(rng):
    """Kernels release the GIL; concurrent calls give the same results as serial ones."""
    import threading
    p, q = _logits(rng, (200, 300), np.float32), _logits(rng, (200, 300), np.float32)
    mu, lv = rng.standard_normal((300, 120)), rng.standard_normal((300, 120))
    want = [kl_divergence(p, q, return_grad=True), gaussian_kl(mu, lv, return_grad=True)]
    out = [None] * 8

    def work(i):
        out[i] = (kl_divergence(p, q, return_grad=True) if i % 2 == 0
                  else gaussian_kl(mu, lv, return_grad=True))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, r in enumerate(out):
        for a, b in zip(_flatten(r), _flatten(want[i % 2])):
            np.testing.assert_array_equal(a, b)
