"""float16 and bfloat16 inputs read natively (README, Conventions): every half result equals
the float32 call on the upcast input (the kernels convert exactly and compute in float32),
its gradient that float32 gradient rounded to the half dtype (within 1 half ulp), at every
SIMD level, in place and into grad_out; and the conversions themselves, float16 over all
65536 bit patterns against NumPy, bfloat16 against ml_dtypes."""
import tracemalloc

import numpy as np
import pytest

import fastloss
import fastloss.reference
from fastloss import _classification as _k

HALF = ["float16", "bfloat16"]


@pytest.fixture(params=HALF)
def half(request):
    """The half dtype (bfloat16 needs ml_dtypes)."""
    if request.param == "bfloat16":
        return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    return np.dtype(np.float16)


def _logits(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _ordered(h):
    """Half values as integers in value order: neighbours differ by 1 (+0 and -0 both 0)."""
    b = h.view(np.uint16).astype(np.int32)
    return np.where(b & 0x8000, -(b & 0x7FFF), b)


def assert_rounded(g, g32):
    """g (half) is the float32 gradient g32 rounded to g's dtype, within 1 half ulp; NaN
    where g32 is NaN."""
    assert g.dtype != np.float32 and g.shape == g32.shape
    nan = np.isnan(g32)
    np.testing.assert_array_equal(np.isnan(g.astype(np.float32)), nan)
    diff = np.abs(_ordered(g) - _ordered(g32.astype(g.dtype)))[~nan]
    assert diff.max(initial=0) <= 1, f"{np.count_nonzero(diff > 1)} entries off by more than 1 ulp"


def assert_exactly_rounded(g, g32):
    """g (half) is g32 rounded by the kernels' own conversion, bit for bit (the paths that
    read half rows directly compute exactly what the float32 kernel does)."""
    kind = 0 if g.dtype == np.float16 else 1
    np.testing.assert_array_equal(g.view(np.uint16), _to_half(kind, g32.ravel()).reshape(g.shape))


def assert_same_loss(loss, loss32):
    """The half call's loss is the float32 call's, in float32, up to float32 rounding."""
    assert np.asarray(loss).dtype == np.float32
    np.testing.assert_allclose(loss, loss32, rtol=4e-7, atol=0)


def _pairs(rng, shape, dtype):
    return _logits(rng, shape, dtype), _logits(rng, shape, dtype, 2.0)


# (name, call(inputs, **kw), makes the inputs from (rng, dtype)), the gradients' count
CASES = {
    "ce_labels": (lambda x, **kw: fastloss.cross_entropy(x[0], x[1], **kw),
                  lambda rng, dt: (_logits(rng, (6, 7, 300), dt), rng.integers(0, 300, (6, 7)))),
    "ce_small_c": (lambda x, **kw: fastloss.cross_entropy(x[0], x[1], **kw),
                   lambda rng, dt: (_logits(rng, (301, 10), dt), rng.integers(0, 10, 301))),
    "ce_long_rows": (lambda x, **kw: fastloss.cross_entropy(x[0], x[1], **kw),
                     lambda rng, dt: (_logits(rng, (3, 40000), dt), rng.integers(0, 40000, 3))),
    "ce_options": (lambda x, **kw: fastloss.cross_entropy(x[0], x[1], label_smoothing=0.1, z_loss=1e-3,
                                                          softcap=5.0, ignore_index=2, weight=x[2], **kw),
                   lambda rng, dt: (_logits(rng, (50, 33), dt), rng.integers(0, 33, 50),
                                    rng.random(33) + 0.5)),
    "ce_probs": (lambda x, **kw: fastloss.cross_entropy(x[0], x[1], **kw),
                 lambda rng, dt: (_logits(rng, (40, 70), dt), rng.dirichlet(np.ones(70), 40).astype(dt))),
    "ce_axis1": (lambda x, **kw: fastloss.cross_entropy(x[0], x[1], axis=1, **kw),   # upcast path
                 lambda rng, dt: (_logits(rng, (3, 5, 40), dt), rng.integers(0, 5, (3, 40)))),
    "logsumexp": (lambda x, **kw: fastloss.logsumexp(x[0], **kw),
                  lambda rng, dt: (_logits(rng, (20, 5000), dt),)),
    "entropy": (lambda x, **kw: fastloss.entropy(x[0], **kw),
                lambda rng, dt: (_logits(rng, (30, 500), dt),)),
    "kl": (lambda x, **kw: fastloss.kl_divergence(x[0], x[1], temperature=2.0, **kw),
           lambda rng, dt: _pairs(rng, (30, 500), dt)),
    "js": (lambda x, **kw: fastloss.js_divergence(x[0], x[1], beta=0.3, **kw),
           lambda rng, dt: _pairs(rng, (30, 500), dt)),
    "distillation": (lambda x, **kw: fastloss.distillation_loss(x[0], x[1], temperature=2.0, **kw),
                     lambda rng, dt: _pairs(rng, (30, 500), dt)),
}
REDUCED = [k for k in CASES if k != "logsumexp"]


def _both(name, rng, half, **kw):
    """(half inputs, the half call's result, the float32 call's on the upcast inputs)."""
    call, make = CASES[name]
    xs = make(rng, half)
    x32 = tuple(a.astype(np.float32) if a.dtype == half else a for a in xs)
    return xs, call(xs, **kw), call(x32, **kw)


def _grads(g):
    return g if isinstance(g, tuple) else (g,)


@pytest.mark.parametrize("name", REDUCED)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_float32(simd, rng, half, name, reduction):
    xs, (loss, g), (loss32, g32) = _both(name, rng, half, reduction=reduction, return_grad=True)
    assert_same_loss(loss, loss32)
    assert_same_loss(CASES[name][0](xs, reduction=reduction), loss32)     # loss only
    for a, b in zip(_grads(g), _grads(g32)):
        assert a.dtype == half
        assert_rounded(a, b)


@pytest.mark.parametrize("C", [500, 100, 10])
@pytest.mark.parametrize("alpha", [0.3, 1.0])
def test_distillation_with_target(simd, rng, half, C, alpha):
    """With a target both terms' gradient is computed in float32 in one pass and rounded
    to half once; the loss alone (alpha = 1: the labels only skip rows, and above 256
    classes the half rows are read directly) is the float32 call's on the upcast."""
    s, t = _pairs(rng, (30, C), half)
    y = rng.integers(0, C, 30)
    y[3] = -100
    kw = dict(target=y, alpha=alpha, reduction="none")
    s32, t32 = s.astype(np.float32), t.astype(np.float32)
    loss, g = fastloss.distillation_loss(s, t, return_grad=True, **kw)
    loss32, g32 = fastloss.distillation_loss(s32, t32, return_grad=True, **kw)
    assert_same_loss(loss, loss32)
    assert g.dtype == half
    assert_rounded(g, g32)
    np.testing.assert_array_equal(fastloss.distillation_loss(s, t, **kw),
                                  fastloss.distillation_loss(s32, t32, **kw))


@pytest.mark.parametrize("C", [100, 300, 5000])
def test_logsumexp_softmax(simd, rng, half, C):
    """Exactly the float32 call on the upcast, rounded by the kernels' conversion, with rows
    holding inf, NaN, only -inf and half -inf (above 256 classes the half rows are read
    directly: fl_softmax_half)."""
    x = _logits(rng, (20, C), half)
    x[1, 5], x[2], x[3, 7], x[4, :C // 2] = np.inf, -np.inf, np.nan, -np.inf
    x32 = x.astype(np.float32)
    lse, g = fastloss.logsumexp(x, return_grad=True)
    lse32, g32 = fastloss.logsumexp(x32, return_grad=True)
    np.testing.assert_array_equal(lse, lse32.astype(np.float32))
    assert_exactly_rounded(g, g32)
    for fn in (fastloss.softmax, fastloss.log_softmax):
        assert_exactly_rounded(fn(x), fn(x32))
        xi = x.copy()
        assert fn(xi, out=xi) is xi
        assert_exactly_rounded(xi, fn(x32))
    assert_same_loss(fastloss.logsumexp(x[5:], axis=None), fastloss.logsumexp(x32[5:], axis=None))


@pytest.mark.parametrize("name", ["ce_labels", "ce_long_rows", "ce_probs", "ce_axis1", "entropy", "kl",
                                  "js", "distillation"])
def test_grad_out_and_in_place(rng, half, name, n_threads):
    """Into a grad_out buffer and over the inputs (every half function allows grad_out =
    its logits): the same gradients, for any thread count."""
    call, make = CASES[name]
    xs = make(rng, half)
    loss, g = call(xs, return_grad=True)
    g = _grads(g)
    bufs = tuple(np.empty_like(a) for a in g)
    loss2, g2 = call(xs, return_grad=True, grad_out=bufs if len(bufs) > 1 else bufs[0])
    assert loss2 == loss and all(a is b for a, b in zip(_grads(g2), bufs))
    xi = tuple(a.copy() for a in xs)
    outs = xi[:len(g)]
    loss3, g3 = call(xi, return_grad=True, grad_out=outs if len(outs) > 1 else outs[0])
    assert loss3 == loss
    for a, b, c in zip(_grads(g3), outs, g):
        assert a is b
        np.testing.assert_array_equal(a.view(np.uint16), c.view(np.uint16))


@pytest.mark.parametrize("C", [300, 9000])
def test_direct_gradient_rows(simd, rng, half, C):
    """Label rows of more than 256 classes with a gradient are read and written as half a
    chunk at a time (xent_label_half_grad): loss, statistics and gradient are exactly the
    float32 call's on the upcast, its gradient rounded by the kernels' own conversion; with
    rows holding inf, NaN or only -inf, a whole chunk of -inf (C = 9000: three chunks),
    an ignored row, and label smoothing with class weights and the z-loss."""
    x = _logits(rng, (9, C), half)
    x[0, 5], x[1], x[2, C - 1], x[3, :C // 2] = np.inf, -np.inf, np.nan, -np.inf
    y = rng.integers(0, C, 9)
    y[3], y[4] = C - 1, -100
    x32 = x.astype(np.float32)
    for opts in ({}, dict(label_smoothing=0.1, weight=rng.random(C) + 0.5, z_loss=1e-3)):
        kw = dict(opts, reduction="none", return_grad=True, return_stats=True)
        loss, g, st = fastloss.cross_entropy(x, y, **kw)
        loss32, g32, st32 = fastloss.cross_entropy(x32, y, **kw)
        np.testing.assert_array_equal(loss, loss32)
        for a, b in zip(st, st32):
            np.testing.assert_array_equal(a, b)
        assert_exactly_rounded(g, g32)
        assert np.isnan(g[:3].astype(np.float32)).all() and not g[4].any()


@pytest.mark.parametrize("C", [20, 300])
def test_special_values(simd, rng, half, C):
    """inf, -inf and NaN in half logits give what the float32 call gives on the upcast
    (C = 300: rows converted one at a time, above 256 classes)."""
    x = _logits(rng, (8, C), half)
    x[0, 3], x[1, :] = np.inf, -np.inf
    x[2, 5], x[3, 0] = np.nan, -np.inf
    y = np.arange(8)
    for name, call in (("ce", lambda a: fastloss.cross_entropy(a, y, reduction="none", return_grad=True)),
                       ("entropy", lambda a: fastloss.entropy(a, reduction="none", return_grad=True)),
                       ("kl", lambda a: fastloss.kl_divergence(a, a[::-1].copy(), reduction="none",
                                                               return_grad=True))):
        (loss, g), (loss32, g32) = call(x), call(x.astype(np.float32))
        np.testing.assert_array_equal(loss, loss32, err_msg=name)
        for a, b in zip(_grads(g), _grads(g32)):
            assert_rounded(a, b)


def test_ignore_index_and_empty(rng, half):
    x = _logits(rng, (5, 9), half)
    y = np.array([1, -100, 3, -100, 0])
    loss, g = fastloss.cross_entropy(x, y, return_grad=True)
    loss32, g32 = fastloss.cross_entropy(x.astype(np.float32), y, return_grad=True)
    assert_same_loss(loss, loss32)
    assert_rounded(g, g32)
    assert not g[1].any() and not g[3].any()
    loss, g = fastloss.cross_entropy(x[:0], y[:0], reduction="sum", return_grad=True)
    assert loss == 0 and g.dtype == half and g.shape == (0, 9)


def test_mixed_dtypes_upcast(rng, half):
    """A half array with another dtype is computed in float32 (or float64) as before; a half
    float target is not taken as labels."""
    a, b = _pairs(rng, (4, 6), half)
    loss, (ga, gb) = fastloss.kl_divergence(a, b.astype(np.float32), return_grad=True)
    assert loss.dtype == ga.dtype == gb.dtype == np.float32
    loss, g = fastloss.cross_entropy(a, b.astype(np.float32), return_grad=True)
    assert loss.dtype == np.float32 and g.dtype == half      # the logits' dtype
    loss, g = fastloss.mse_loss(a, b, return_grad=True)       # no half path: float32
    assert loss.dtype == g.dtype == np.float32
    with pytest.raises(ValueError, match="labels"):
        fastloss.cross_entropy(a, np.zeros(4, dtype=half))


def test_grad_out_dtype_checked(rng, half):
    x = _logits(rng, (4, 6), half)
    with pytest.raises(TypeError, match="grad_out"):
        fastloss.cross_entropy(x, np.zeros(4, int), return_grad=True, grad_out=np.empty((4, 6), np.float32))


def test_no_full_size_copy(half):
    """Loss only on (64, 32000) half logits with 2 threads: no upcast copy (it would be twice
    the input), only a few rows of per-thread scratch."""
    x = np.zeros((64, 32000), dtype=half)
    y = np.zeros(64, dtype=np.int64)
    q = np.ones((64, 32000), dtype=half)
    with fastloss.threads(2):
        for call in (lambda: fastloss.cross_entropy(x, y), lambda: fastloss.kl_divergence(x, q)):
            call()
            tracemalloc.start()
            try:
                call()
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < x.nbytes // 4, peak


# --- the conversions themselves ---------------------------------------------------------

def _to_float(kind, h):
    f = np.empty(h.size, np.float32)
    _k.half_convert(kind, np.ascontiguousarray(h, np.uint16), f, False)
    return f


def _to_half(kind, f):
    h = np.empty(f.size, np.uint16)
    _k.half_convert(kind, h, np.ascontiguousarray(f, np.float32), True)
    return h


def _float32_cases(rng, half_bits_to_float, inf_bits):
    """Random float32 bit patterns (all exponents), specials, and for every finite half value
    the midpoint to its successor and its two float32 neighbours (the ties and near-ties);
    inf_bits: the half type's +inf."""
    bits = rng.integers(0, 2 ** 32, 1 << 18, dtype=np.uint64).astype(np.uint32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65520.0, 65519.996, 1e-8, -6e-8,
                        2.0 ** -25, 2.0 ** -24, 3.4e38], np.float32).view(np.uint32)
    h = np.arange(0, inf_bits, dtype=np.uint32)
    lo, hi = half_bits_to_float(h), half_bits_to_float(h + 1)
    mid = ((lo.astype(np.float64) + hi) / 2).astype(np.float32).view(np.uint32)
    ties = np.concatenate([mid, mid - 1, mid + 1])
    ties = np.concatenate([ties, ties | 0x80000000])
    return np.concatenate([bits, special, ties]).view(np.float32)


def test_float16_conversion_exhaustive(simd):
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    want = h.view(np.float16).astype(np.float32)
    got = _to_float(0, h)
    nan = np.isnan(want)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])
    assert np.isnan(got[nan]).all()
    np.testing.assert_array_equal(_to_half(0, got)[~nan], h[~nan])       # round trip
    f = _float32_cases(np.random.default_rng(1),
                       lambda b: b.astype(np.uint16).view(np.float16).astype(np.float32), 0x7C00)
    with np.errstate(over="ignore", invalid="ignore"):
        want = f.astype(np.float16)
    nan = np.isnan(f)
    np.testing.assert_array_equal(_to_half(0, f)[~nan], want.view(np.uint16)[~nan])
    assert np.isnan(_to_half(0, f)[nan].view(np.float16)).all()


def test_bfloat16_conversion(simd):
    bf16 = pytest.importorskip("ml_dtypes").bfloat16
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    want = h.view(bf16).astype(np.float32)
    got = _to_float(1, h)
    nan = np.isnan(want)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])
    assert np.isnan(got[nan]).all()
    f = _float32_cases(np.random.default_rng(2), lambda b: (b << 16).view(np.float32), 0x7F80)
    with np.errstate(invalid="ignore"):
        want = f.astype(bf16)
    nan = np.isnan(f)
    np.testing.assert_array_equal(_to_half(1, f)[~nan], want.view(np.uint16)[~nan])
    assert np.isnan(_to_half(1, f)[nan].view(bf16).astype(np.float32)).all()


# --- loss-only rows in one pass (row_lse1, kl_row1): float32, and half read in registers --

@pytest.fixture(params=["float32", "float16", "bfloat16"])
def dt3(request):
    """float32 (the one-pass rows' float32 path) and the half dtypes (their direct path)."""
    if request.param == "bfloat16":
        return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    return np.dtype(request.param)


def _one_pass_rows(rng, n=8, C=1001):
    """Rows for the running max: rising along the row (a rescale every group), falling, more
    than a group of -inf first, the max tied in two groups, a wide range (exp underflows),
    random; C > a group, not a multiple of one."""
    x = rng.standard_normal((n, C)) * 3
    x[0] += np.linspace(-40, 40, C)
    x[1] -= np.linspace(-40, 40, C)
    x[2, :C * 3 // 10] = -np.inf                  # 300, 200, 700 at the default C
    x[3, C // 5] = x[3, C * 7 // 10] = 20.0
    x[4] *= 30
    return x


def _np_lse(x):
    m = np.max(x, axis=-1, keepdims=True)
    return (m + np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True)))[..., 0]


def test_one_pass_cross_entropy(simd, rng, dt3):
    """Loss only (and with stats) against the float64 oracle on the same values, the argmax
    NumPy's; equal to the gradient path's loss within float32 rounding; half rows give
    exactly the float32 call on the upcast."""
    x = _one_pass_rows(rng).astype(dt3)
    y = rng.integers(0, x.shape[1], x.shape[0])
    y[2] = 500
    x64 = x.astype(np.float64)
    loss, st = fastloss.cross_entropy(x, y, reduction="none", return_stats=True)
    np.testing.assert_allclose(loss, fastloss.reference.cross_entropy(x64, y, reduction="none"),
                               rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(st.lse, _np_lse(x64), rtol=2e-7, atol=0)
    np.testing.assert_array_equal(st.argmax, np.argmax(x64, axis=-1))
    assert st.argmax[3] == 200
    np.testing.assert_array_equal(fastloss.cross_entropy(x, y, reduction="none"), loss)
    np.testing.assert_allclose(loss, fastloss.cross_entropy(x, y, reduction="none", return_grad=True)[0],
                               rtol=1e-6, atol=1e-6)
    if dt3 != np.float32:
        loss32, st32 = fastloss.cross_entropy(x.astype(np.float32), y, reduction="none", return_stats=True)
        np.testing.assert_array_equal(loss, loss32)
        for a, b in zip(st, st32):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("C", [3, 17, 33, 65, 100, 129, 200, 257, 300, 333])
def test_one_pass_short_rows(simd, rng, dt3, C):
    """Rows shorter than a group or ending in a partial one (a group is 8 vectors: 16 to 128
    elements by level and dtype), the special values (special_rows) in that last group: the
    one-pass loss (row_lse1, kl_row1; cross_entropy's above FL_MID_C = 256 classes) reads
    only the vectors that hold the row, and equals the gradient path's loss, which reads the
    row its own way."""
    from helpers import special_rows
    x = np.concatenate([special_rows(C), rng.standard_normal((6, C)) * 4]).astype(dt3)
    y = rng.integers(0, C, x.shape[0])
    loss = fastloss.cross_entropy(x, y, reduction="none")
    with_grad = fastloss.cross_entropy(x, y, reduction="none", return_grad=True)[0]
    np.testing.assert_allclose(loss, with_grad, rtol=2e-6, atol=1e-6)
    ok = np.isfinite(x.astype(np.float64)).all(axis=1)
    np.testing.assert_allclose(loss[ok], fastloss.reference.cross_entropy(
        x[ok].astype(np.float64), y[ok], reduction="none"), rtol=2e-6, atol=1e-6)
    q = np.roll(x, 1, axis=0)
    kl = fastloss.kl_divergence(x, q, reduction="none")
    np.testing.assert_allclose(kl, fastloss.kl_divergence(x, q, reduction="none", return_grad=True)[0],
                               rtol=2e-5, atol=2e-6)


def test_one_pass_half_values_exact(simd, half):
    """Every finite half value, read in registers (and, past the last whole vector, one by
    one), is its exact float32: alone in a row of -inf, it is the row's lse and argmax."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    v = bits.view(half)
    v = v[np.isfinite(v.astype(np.float32))]
    C = 301                                   # above FL_MID_C: read as half (xent_label_half)
    x = np.full((v.size, C), -np.inf, dtype=half)
    pos = np.arange(v.size) % C
    x[np.arange(v.size), pos] = v
    loss, st = fastloss.cross_entropy(x, pos, reduction="none", return_stats=True)
    np.testing.assert_array_equal(st.lse, v.astype(np.float32))      # -0's lse: -0 + log 1 = +0
    np.testing.assert_array_equal(st.argmax, pos)
    assert not loss.any()


def _special_rows(C=300):
    """Rows only the exact path gives a meaning: NaN, +inf, all -inf, NaN after a group of
    -inf, +inf and NaN; and a finite row after a group of -inf."""
    x = np.random.default_rng(5).standard_normal((7, C))
    x[0, 200] = np.nan
    x[1, 250] = np.inf
    x[2] = -np.inf
    x[3, :200] = -np.inf
    x[3, 10] = np.nan
    x[4, 20], x[4, 290] = np.inf, np.nan
    x[5, :150] = -np.inf
    return x


def test_one_pass_special_rows(simd, dt3):
    """NaN and inf give what the gradient path (unchanged: README's table) gives; stats too."""
    x = _special_rows().astype(dt3)
    y = np.full(x.shape[0], 160)
    loss, st = fastloss.cross_entropy(x, y, reduction="none", return_stats=True)
    lg, _, sg = fastloss.cross_entropy(x, y, reduction="none", return_grad=True, return_stats=True)
    np.testing.assert_array_equal(loss[:5], lg[:5])
    assert np.isnan(loss[:5]).all() and np.isfinite(loss[5:]).all()
    np.testing.assert_allclose(loss[5:], lg[5:], rtol=1e-6)
    np.testing.assert_array_equal(st.lse[:5], sg.lse[:5])          # NaN, inf, -inf, NaN, NaN
    np.testing.assert_allclose(st.lse[5:], _np_lse(x[5:].astype(np.float64)), rtol=2e-7)
    np.testing.assert_array_equal(st.argmax, np.argmax(x.astype(np.float64), axis=-1))
    b = np.random.default_rng(6).standard_normal(x.shape).astype(dt3)
    b[6, 40] = -np.inf                                      # q has no mass where p has
    for p, q in ((x, b), (b, x)):
        kl = fastloss.kl_divergence(p, q, reduction="none")
        kg = fastloss.kl_divergence(p, q, reduction="none", return_grad=True)[0]
        np.testing.assert_array_equal(kl[:5], kg[:5])
        np.testing.assert_allclose(kl[5:], kg[5:], rtol=1e-6)
    assert fastloss.kl_divergence(x, b, reduction="none")[6] == np.inf


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("C", [1001, 100])
def test_one_pass_kl(simd, rng, dt3, temperature, C):
    """Loss only against the float64 oracle and the gradient path's loss; KL(p || p) is
    exactly 0 however often the maxima move; half: exactly the float32 call on the upcast
    (at 100 classes the blocked rows of kl_mid, which half rows reach through a block
    converted to float32)."""
    a = _one_pass_rows(rng, C=C).astype(dt3)
    b = (_one_pass_rows(rng, C=C) + rng.standard_normal(a.shape)).astype(dt3)
    kl = fastloss.kl_divergence(a, b, temperature=temperature, reduction="none")
    ref = fastloss.reference.kl_divergence(a.astype(np.float64), b.astype(np.float64),
                                           temperature=temperature, reduction="none")
    np.testing.assert_allclose(kl, ref, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(kl, fastloss.kl_divergence(a, b, temperature=temperature, reduction="none",
                                                          return_grad=True)[0], rtol=2e-6, atol=2e-6)
    assert not fastloss.kl_divergence(a, a, temperature=temperature, reduction="none").any()
    if dt3 != np.float32:
        np.testing.assert_array_equal(kl, fastloss.kl_divergence(a.astype(np.float32), b.astype(np.float32),
                                                                 temperature=temperature, reduction="none"))
