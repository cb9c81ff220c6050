"""linear_cross_entropy (cross-entropy of input @ W.T + b, the logits computed block by block):
the oracle itself against loops and PyTorch; the kernel against the oracle over the option
matrix, block sizes, grad_wrt subsets and gradient buffers; finite differences; PyTorch;
thread-count determinism; edge cases and bad input."""
import itertools

import numpy as np
import pytest

import fastloss as fl
import fastloss.reference as ref
from helpers import assert_close, fd_grad

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
NAMES = ("input", "linear_weight", "linear_bias")


def _problem(rng, lead, D, V, dtype=np.float64, bias=True, ignore=False):
    """input (*lead, D), linear_weight (V, D), linear_bias (V,) or None, labels of shape lead
    (every third one ignored with ignore=True); logits of order 3."""
    x = rng.standard_normal(tuple(lead) + (D,)).astype(dtype)
    W = (rng.standard_normal((V, D)) * 3 / np.sqrt(D)).astype(dtype)
    b = rng.standard_normal(V).astype(dtype) if bias else None
    y = rng.integers(0, V, size=lead).astype(np.int64)
    if ignore and y.size:
        y.reshape(-1)[::3] = -100
    return x, W, b, y


def _row_bytes(V, dtype):
    return V * np.dtype(dtype).itemsize


def _check(fast, oracle, dtype):
    """(loss, grads) against the oracle's: dtypes, shapes and values."""
    loss, grads = fast
    rloss, rgrads = oracle
    assert np.asarray(loss).dtype == dtype
    assert_close(loss, rloss, dtype)
    assert isinstance(grads, tuple) and len(grads) == len(rgrads)
    for g, rg in zip(grads, rgrads):
        assert g.dtype == dtype
        assert_close(g, rg, dtype, grad=True)


# --- the oracle itself ---------------------------------------------------------------------------

def _loop_loss(x, W, b, y, weight=None, ignore_index=-100, label_smoothing=0.0, z_loss=0.0,
               softcap=None, reduction="mean"):
    """The loss with explicit loops over tokens and classes, straight from the definition:
    per counted token, (1 - eps) w_y (-log p_y) + eps / V sum_c w_c (-log p_c) + z_loss w_y lse^2
    over softcapped logits; "mean" divides by the sum of w_y over counted tokens."""
    V, D = W.shape
    xs = np.asarray(x, np.float64).reshape(-1, D)
    ys = np.asarray(y).reshape(-1)
    w = np.ones(V) if weight is None else weight
    eps = label_smoothing
    per, denom = [], 0.0
    for n in range(xs.shape[0]):
        if ys[n] == ignore_index:
            per.append(0.0)
            continue
        z = []
        for v in range(V):
            zv = sum(xs[n, d] * W[v, d] for d in range(D)) + (0.0 if b is None else b[v])
            z.append(softcap * np.tanh(zv / softcap) if softcap else zv)
        m = max(z)
        lse = m + np.log(sum(np.exp(zv - m) for zv in z))
        wy = w[ys[n]]
        l = (1 - eps) * wy * (lse - z[ys[n]])
        l += eps / V * sum(w[c] * (lse - z[c]) for c in range(V))
        l += z_loss * wy * lse ** 2
        per.append(l)
        denom += wy
    per = np.array(per).reshape(np.shape(y))
    if reduction == "none":
        return per
    return per.sum() / denom if reduction == "mean" else per.sum()


ORACLE_CASES = [
    dict(),
    dict(weight=np.array([0.5, 1.0, 2.0, 1.5, 0.3]), label_smoothing=0.2, reduction="sum"),
    dict(z_loss=0.05, softcap=2.5, weight=np.array([0.5, 1.0, 2.0, 1.5, 0.3])),
    dict(reduction="none", label_smoothing=0.1, z_loss=0.1),
]


@pytest.mark.parametrize("kw", ORACLE_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_oracle_against_loops(rng, kw, bias):
    """Loss by loops; gradients by finite differences of the loop loss (independent of the
    oracle's chain rule)."""
    x, W, b, _ = _problem(rng, (2, 2), 3, 5, bias=bias)
    y = np.array([[0, 4], [-100, 2]])
    loss, grads = ref.linear_cross_entropy(x, W, y, linear_bias=b, return_grad=True, **kw)
    np.testing.assert_allclose(loss, _loop_loss(x, W, b, y, **kw), rtol=1e-13, atol=1e-15)
    assert len(grads) == (3 if bias else 2)

    def total(xx, WW, bb):
        return np.sum(_loop_loss(xx, WW, bb, y, **kw))
    expected = [fd_grad(lambda z: total(z, W, b), x), fd_grad(lambda z: total(x, z, b), W)]
    if bias:
        expected.append(fd_grad(lambda z: total(x, W, z), b))
    for g, e, a in zip(grads, expected, (x, W, b)):
        assert g.shape == a.shape
        np.testing.assert_allclose(g, e, rtol=1e-7, atol=1e-9)
    # grad_wrt picks the named gradients in argument order
    names = ("linear_bias", "input") if bias else ("linear_weight",)
    _, picked = ref.linear_cross_entropy(x, W, y, linear_bias=b, return_grad=True, grad_wrt=names, **kw)
    want = [g for nm, g in zip(NAMES, grads) if nm in names]
    assert len(picked) == len(want)
    for g, e in zip(picked, want):
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_oracle_matches_pytorch(rng, reduction):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    if not hasattr(F, "linear_cross_entropy"):
        pytest.skip("torch.nn.functional.linear_cross_entropy needs a newer PyTorch")
    x, W, b, y = _problem(rng, (12,), 6, 9, ignore=True)
    w = rng.uniform(0.2, 2.0, 9)
    leaves = [torch.tensor(a, requires_grad=True) for a in (x, W, b)]
    lt = F.linear_cross_entropy(leaves[0], leaves[1], torch.tensor(y), linear_bias=leaves[2],
                                weight=torch.tensor(w), reduction=reduction, label_smoothing=0.1)
    lt.sum().backward()
    loss, grads = ref.linear_cross_entropy(x, W, y, linear_bias=b, weight=w, reduction=reduction,
                                           label_smoothing=0.1, return_grad=True)
    np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=1e-12, atol=1e-14)
    for g, leaf in zip(grads, leaves):
        np.testing.assert_allclose(g, leaf.grad.numpy(), rtol=1e-10, atol=1e-14)


# --- against the oracle --------------------------------------------------------------------------

# (lead shape, bias, class weights, ignored tokens, label_smoothing, z_loss, softcap)
OPTIONS = [
    ((50,), False, False, False, 0.0, 0.0, None),
    ((50,), True, True, True, 0.0, 0.0, None),
    ((4, 11), True, False, True, 0.2, 0.0, None),
    ((4, 11), False, True, False, 0.0, 1e-2, None),
    ((47,), True, False, False, 0.0, 0.0, 12.0),
    ((3, 2, 7), True, True, True, 0.1, 1e-2, 10.0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("lead,bias,weighted,ignore,smoothing,z_loss,softcap", OPTIONS)
def test_matches_oracle(rng, dtype, reduction, lead, bias, weighted, ignore, smoothing, z_loss, softcap):
    D, V = 13, 37
    x, W, b, y = _problem(rng, lead, D, V, dtype, bias, ignore)
    kw = dict(linear_bias=b, weight=rng.uniform(0.1, 2.0, V) if weighted else None,
              label_smoothing=smoothing, z_loss=z_loss, softcap=softcap, reduction=reduction)
    expected = ref.linear_cross_entropy(x, W, y, return_grad=True, **kw)
    n, row = int(np.prod(lead)), _row_bytes(V, dtype)
    # one block (default budget, and exactly n rows), one row per block, 3 rows per block
    # (a last partial block unless 3 divides n), 7 rows plus a few spare bytes
    for block_bytes in (None, n * row, row, 3 * row, 7 * row + 5):
        got = fl.linear_cross_entropy(x, W, y, return_grad=True, block_bytes=block_bytes, **kw)
        _check(got, expected, dtype)
        assert [g.shape for g in got[1]] == [a.shape for a in (x, W, b) if a is not None]
    loss_only = fl.linear_cross_entropy(x, W, y, block_bytes=3 * row, **kw)
    assert_close(loss_only, expected[0], dtype)
    if reduction == "none":
        assert loss_only.shape == lead


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("lead,bias,weighted,ignore,smoothing,z_loss,softcap", OPTIONS)
def test_loss_only_in_class_chunks(monkeypatch, rng, dtype, reduction, lead, bias, weighted, ignore,
                                   smoothing, z_loss, softcap):
    """The loss-only path reads the classes in chunks (an online log-sum-exp): chunks of 8
    of 37 classes, the last one partial, and token blocks of 4, 9 and all rows."""
    from fastloss import classification
    monkeypatch.setattr(classification, "_LOSS_CHUNK_CLASSES", 8)
    D, V = 13, 37
    x, W, b, y = _problem(rng, lead, D, V, dtype, bias, ignore)
    kw = dict(linear_bias=b, weight=rng.uniform(0.1, 2.0, V) if weighted else None,
              label_smoothing=smoothing, z_loss=z_loss, softcap=softcap, reduction=reduction)
    expected = ref.linear_cross_entropy(x, W, y, **kw)
    item = np.dtype(dtype).itemsize
    for block_bytes in (V * item, 2 * V * item + 1, None):     # 4, 9 and all rows per block
        assert_close(fl.linear_cross_entropy(x, W, y, block_bytes=block_bytes, **kw), expected, dtype)
    # the chunked loss equals the blocked path's (which returns gradients too)
    with_grad = fl.linear_cross_entropy(x, W, y, return_grad=True, grad_wrt=("input",), **kw)[0]
    assert_close(fl.linear_cross_entropy(x, W, y, **kw), with_grad, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_only_chunks_large_and_masked_logits(monkeypatch, rng, dtype, smoothing):
    """The chunks' log-sum-exps combine in float64: logits offset by 1e4 (float32) or 1e8
    (float64) through the bias lose nothing (multiples of 1/64: every logit exact in both
    dtypes, so the oracle sees the same ones), and a chunk of classes masked out by a -inf
    bias (a vocabulary mask) counts for nothing."""
    from fastloss import classification
    monkeypatch.setattr(classification, "_LOSS_CHUNK_CLASSES", 8)
    D, V = 13, 37
    x = (rng.integers(-4, 5, (30, D)) / 8).astype(dtype)
    W = (rng.integers(-4, 5, (V, D)) / 8).astype(dtype)
    b = (rng.integers(-16, 17, V) / 8).astype(dtype)
    y = rng.integers(0, V, 30)
    big = b + dtype(1e4 if dtype == np.float32 else 1e8)
    masked = b.copy()
    masked[8:16] = -np.inf
    y[y // 8 == 1] = 0                                    # no label in the masked chunk
    weight = rng.uniform(0.1, 2.0, V)
    for bias in (big, masked):
        for kw in (dict(), dict(weight=weight, z_loss=1e-6 if bias is big else 1e-2)):
            expected = ref.linear_cross_entropy(x, W, y, linear_bias=bias, reduction="none",
                                                label_smoothing=smoothing if bias is big else 0.0,
                                                **kw)
            got = fl.linear_cross_entropy(x, W, y, linear_bias=bias, reduction="none",
                                          label_smoothing=smoothing if bias is big else 0.0, **kw)
            assert np.all(np.isfinite(got))
            assert_close(got, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scipy_gemm", [True, False])
@pytest.mark.parametrize("accumulate", [False, True])
def test_product(monkeypatch, rng, dtype, scipy_gemm, accumulate):
    """_blas.product: out = a @ b or out += a @ b, with SciPy's gemm or NumPy alone, for
    C-, F-ordered and strided operands (linear_cross_entropy passes S.T, W.T, slices) and
    C-, F-ordered and strided out (SciPy works on a copy of a strided out, written back);
    several NumPy row slices of out when accumulating."""
    from fastloss import _blas
    if not scipy_gemm:
        monkeypatch.setattr(_blas, "scipy_blas", lambda dtype: None)
    monkeypatch.setattr(_blas, "_ACCUMULATE_BYTES", 16 * 9 * np.dtype(dtype).itemsize)
    S = rng.standard_normal((5, 70)).astype(dtype)
    h = rng.standard_normal((10, 18)).astype(dtype)
    base = rng.standard_normal((70, 18)).astype(dtype)
    for a in (S.T, np.ascontiguousarray(S.T), S[:, ::1].T[::2]):
        for b in (h[:5, :9], h[::2, ::2], np.asfortranarray(h[:5, :9])):
            m = a.shape[0]
            for out in (base[:m, :9].copy(), np.asfortranarray(base[:m, :9]), base.copy()[:m, ::2]):
                expected = (out.astype(np.float64) if accumulate else 0) + a.astype(np.float64) @ b
                _blas.product(out, a, b, accumulate=accumulate)
                assert_close(out, expected, dtype)


def test_weight_gradient_without_scipy(monkeypatch, rng):
    """Without SciPy the weight gradient accumulates over token blocks through NumPy alone
    (a temporary of a few rows): the same gradients as with SciPy's gemm, to rounding."""
    from fastloss import _blas
    x, W, b, y = _problem(rng, (40,), 9, 300, np.float32, ignore=True)
    block = 7 * _row_bytes(300, np.float32)
    with_scipy = fl.linear_cross_entropy(x, W, y, linear_bias=b, return_grad=True, block_bytes=block)
    monkeypatch.setattr(_blas, "scipy_blas", lambda dtype: None)
    monkeypatch.setattr(_blas, "_ACCUMULATE_BYTES", 64 * 9 * 4)      # several row slices of W
    without = fl.linear_cross_entropy(x, W, y, linear_bias=b, return_grad=True, block_bytes=block)
    expected = ref.linear_cross_entropy(x, W, y, linear_bias=b, return_grad=True)
    _check(without, expected, np.float32)
    _check(with_scipy, expected, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_simd_levels(simd, rng, dtype):
    x, W, b, y = _problem(rng, (5, 9), 16, 70, dtype, ignore=True)
    kw = dict(linear_bias=b, weight=rng.uniform(0.1, 2.0, 70), label_smoothing=0.1, z_loss=1e-3,
              softcap=15.0)
    expected = ref.linear_cross_entropy(x, W, y, return_grad=True, **kw)
    for block_bytes in (None, 4 * _row_bytes(70, dtype)):
        _check(fl.linear_cross_entropy(x, W, y, return_grad=True, block_bytes=block_bytes, **kw),
               expected, dtype)


def test_default_block_budget(rng):
    """block_bytes=None is LINEAR_BLOCK_BYTES (128 MiB): the same bits as passing it."""
    from fastloss import classification
    assert classification.LINEAR_BLOCK_BYTES == 128 * 2 ** 20
    x, W, b, y = _problem(rng, (20,), 8, 30, np.float32, ignore=True)
    a = fl.linear_cross_entropy(x, W, y, linear_bias=b, return_grad=True)
    c = fl.linear_cross_entropy(x, W, y, linear_bias=b, return_grad=True,
                                block_bytes=classification.LINEAR_BLOCK_BYTES)
    assert a[0].tobytes() == c[0].tobytes()
    for g0, g1 in zip(a[1], c[1]):
        assert g0.tobytes() == g1.tobytes()


# --- grad_wrt and grad_out -----------------------------------------------------------------------

SUBSETS = [s for k in (1, 2, 3) for s in itertools.combinations(NAMES, k)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_grad_wrt_subsets_and_buffers(rng, dtype, bias):
    x, W, b, y = _problem(rng, (3, 8), 10, 23, dtype, bias, ignore=True)
    kw = dict(linear_bias=b, label_smoothing=0.1, block_bytes=5 * _row_bytes(23, dtype))
    loss_all, grads_all = ref.linear_cross_entropy(x, W, y, linear_bias=b, label_smoothing=0.1,
                                                   return_grad=True, grad_wrt=NAMES[:2 + bias])
    default = fl.linear_cross_entropy(x, W, y, return_grad=True, **kw)
    _check(default, (loss_all, grads_all), dtype)   # default: input, weight (and bias if given)
    subsets = [s for s in SUBSETS if bias or "linear_bias" not in s]
    shapes = dict(zip(NAMES, (x.shape, W.shape, (23,))))
    for names in subsets:
        want = tuple(g for nm, g in zip(NAMES, grads_all) if nm in names)
        for order in (names, names[::-1]):          # returned in argument order either way
            loss, grads = fl.linear_cross_entropy(x, W, y, return_grad=True, grad_wrt=order, **kw)
            _check((loss, grads), (loss_all, want), dtype)
            assert loss == default[0]
        # into buffers (garbage-filled): the same numbers, the buffers themselves returned
        bufs = tuple(np.full(shapes[nm], 7.0, dtype) for nm in names)
        grad_out = bufs[0] if len(bufs) == 1 else bufs
        loss2, grads2 = fl.linear_cross_entropy(x, W, y, return_grad=True, grad_wrt=list(names),
                                                grad_out=grad_out, **kw)
        assert loss2 == loss
        assert len(grads2) == len(bufs)
        for g2, buf, g in zip(grads2, bufs, grads):
            assert g2 is buf
            np.testing.assert_array_equal(buf, g)


def test_grad_out_one_tuple(rng):
    """One requested gradient: a 1-tuple of buffers works as well as a bare array."""
    x, W, b, y = _problem(rng, (9,), 4, 6)
    buf = np.empty_like(W)
    _, (g,) = fl.linear_cross_entropy(x, W, y, return_grad=True, grad_wrt=("linear_weight",),
                                      grad_out=(buf,))
    assert g is buf
    assert_close(buf, ref.linear_cross_entropy(x, W, y, return_grad=True,
                                               grad_wrt=("linear_weight",))[1][0], np.float64, grad=True)


# --- finite differences --------------------------------------------------------------------------

@pytest.mark.parametrize("lead,kw", [
    ((5,), dict()),
    ((5,), dict(weight=np.array([0.5, 1.0, 2.0, 0.3]), label_smoothing=0.25, block_bytes=2 * 32)),
    ((2, 3), dict(z_loss=0.05, softcap=3.0, reduction="sum", block_bytes=32)),
    ((2, 3), dict(reduction="none", z_loss=0.1, label_smoothing=0.1, weight=np.array([1.0, 0.2, 3.0, 1.0]))),
])
@pytest.mark.parametrize("bias", [True, False])
def test_finite_differences(rng, lead, kw, bias):
    x, W, b, y = _problem(rng, lead, 3, 4, bias=bias)
    y.reshape(-1)[1] = -100
    _, grads = fl.linear_cross_entropy(x, W, y, linear_bias=b, return_grad=True, **kw)

    def total(xx, WW, bb):
        return np.sum(fl.linear_cross_entropy(xx, WW, y, linear_bias=bb, **kw))
    expected = [fd_grad(lambda z: total(z, W, b), x), fd_grad(lambda z: total(x, z, b), W)]
    if bias:
        expected.append(fd_grad(lambda z: total(x, W, z), b))
    assert len(grads) == len(expected)
    for g, e in zip(grads, expected):
        np.testing.assert_allclose(g, e, rtol=1e-7, atol=1e-9)


# --- PyTorch parity ------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted,ignore,smoothing", [
    (False, False, 0.0), (True, False, 0.0), (False, True, 0.0), (False, False, 0.15), (True, True, 0.15),
])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_pytorch(rng, reduction, weighted, ignore, smoothing, bias):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    if not hasattr(F, "linear_cross_entropy"):
        pytest.skip("torch.nn.functional.linear_cross_entropy needs a newer PyTorch")
    V = 29
    x, W, b, y = _problem(rng, (21,), 7, V, bias=bias, ignore=ignore)
    w = rng.uniform(0.2, 2.0, V) if weighted else None
    leaves = [torch.tensor(a, requires_grad=True) for a in (x, W, b) if a is not None]
    lt = F.linear_cross_entropy(leaves[0], leaves[1], torch.tensor(y),
                                linear_bias=leaves[2] if bias else None,
                                weight=None if w is None else torch.tensor(w), reduction=reduction,
                                label_smoothing=smoothing)
    lt.sum().backward()
    loss, grads = fl.linear_cross_entropy(x, W, y, linear_bias=b, weight=w, reduction=reduction,
                                          label_smoothing=smoothing, return_grad=True,
                                          block_bytes=4 * _row_bytes(V, np.float64))
    np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert len(grads) == len(leaves)
    for g, leaf in zip(grads, leaves):
        np.testing.assert_allclose(g, leaf.grad.numpy(), rtol=1e-10, atol=1e-13)


# --- determinism --------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_bitwise_identical_across_threads(rng, dtype):
    V = 100
    x, W, b, y = _problem(rng, (8, 50), 16, V, dtype, ignore=True)   # 40k logits: threaded
    cases = [dict(linear_bias=b, label_smoothing=0.1),
             dict(linear_bias=b, weight=rng.uniform(0.5, 2, V), z_loss=1e-3, softcap=20.0,
                  block_bytes=7 * _row_bytes(V, dtype)),                # many blocks, last partial
             dict(reduction="none", block_bytes=350 * _row_bytes(V, dtype))]   # threaded blocks
    results = []
    for n in (1, 2, 3):
        with fl.threads(n):
            results.append([fl.linear_cross_entropy(x, W, y, return_grad=True, **kw) for kw in cases])
    for other in results[1:]:
        for (l0, g0), (l1, g1) in zip(results[0], other):
            assert np.asarray(l0).tobytes() == np.asarray(l1).tobytes()
            assert len(g0) == len(g1)
            for a, c in zip(g0, g1):
                assert a.tobytes() == c.tobytes()
    # the loss-only path (classes in chunks) too
    kw = dict(linear_bias=b, weight=rng.uniform(0.5, 2, V), label_smoothing=0.1, z_loss=1e-3,
              reduction="none", block_bytes=350 * _row_bytes(V, dtype))
    losses = []
    for n in (1, 2, 3):
        with fl.threads(n):
            losses.append(fl.linear_cross_entropy(x, W, y, **kw).tobytes())
    assert losses[0] == losses[1] == losses[2]


# --- dtypes and layouts --------------------------------------------------------------------------

@pytest.mark.parametrize("x_dtype,w_dtype,expected", [
    (np.float32, np.float32, np.float32),
    (np.float32, np.float64, np.float64),
    (np.float64, np.float32, np.float64),
    (np.float16, np.float16, np.float32),
    (np.int64, np.float32, np.float64),
])
def test_compute_dtype(rng, x_dtype, w_dtype, expected):
    x = (rng.standard_normal((6, 5)) * 2).astype(x_dtype)
    W = rng.standard_normal((8, 5)).astype(w_dtype)
    b = rng.standard_normal(8).astype(np.float32)
    y = rng.integers(0, 8, 6)
    loss, grads = fl.linear_cross_entropy(x, W, y, linear_bias=b, return_grad=True)
    assert np.asarray(loss).dtype == expected
    assert [g.dtype for g in grads] == [expected] * 3
    rl, rg = ref.linear_cross_entropy(x, W, y, linear_bias=b, return_grad=True)
    assert_close(loss, rl, expected)
    for g, e in zip(grads, rg):
        assert_close(g, e, expected, grad=True)


def test_layouts_and_inputs_untouched(rng):
    x, W, b, y = _problem(rng, (30,), 9, 20, np.float32, ignore=True)
    kw = dict(linear_bias=b, label_smoothing=0.1, return_grad=True, block_bytes=4 * _row_bytes(20, np.float32))
    expected = ref.linear_cross_entropy(x, W, y, linear_bias=b, label_smoothing=0.1, return_grad=True)
    big = np.zeros((60, 18), np.float32)
    big[::2, ::2] = x
    xs = big[::2, ::2]                                  # strided
    Wf = np.asfortranarray(W)                           # Fortran order
    yw = np.zeros(60, np.int32)
    yw[::2] = y
    copies = [a.copy() for a in (xs, Wf, b, yw)]
    _check(fl.linear_cross_entropy(xs, Wf, yw[::2], **kw), expected, np.float32)
    for a, c in zip((xs, Wf, b, yw), copies):
        np.testing.assert_array_equal(a, c)


# --- edge cases ----------------------------------------------------------------------------------

def _chain(G, x, W):
    """The linear layer's gradients from a logits gradient G (..., V), in float64."""
    G2 = G.astype(np.float64).reshape(-1, W.shape[0])
    x2 = x.astype(np.float64).reshape(-1, W.shape[1])
    return (G2 @ W.astype(np.float64)).reshape(x.shape), G2.T @ x2, G2.sum(axis=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_ignored(rng, dtype, reduction):
    x, W, b, _ = _problem(rng, (2, 5), 6, 11, dtype)
    y = np.full((2, 5), -7)
    kw = dict(linear_bias=b, ignore_index=-7, reduction=reduction, label_smoothing=0.1, z_loss=1e-2)
    loss, grads = fl.linear_cross_entropy(x, W, y, return_grad=True, block_bytes=3 * _row_bytes(11, dtype), **kw)
    logits = (x.astype(np.float64) @ W.T.astype(np.float64) + b).astype(dtype)
    closs, G = fl.cross_entropy(logits, y, return_grad=True, **{k: v for k, v in kw.items() if k != "linear_bias"})
    if reduction == "mean":
        assert np.isnan(loss) and np.isnan(closs)
    elif reduction == "sum":
        assert loss == 0 == closs
    else:
        assert loss.shape == (2, 5)
        np.testing.assert_array_equal(loss, 0)
    np.testing.assert_array_equal(G, 0)                     # nothing counts: zero gradient
    for g, e, a in zip(grads, _chain(G, x, W), (x, W, b)):
        assert g.shape == a.shape
        np.testing.assert_array_equal(g, e)


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_weight_sum(rng, dtype):
    """Counted tokens whose class weights sum to 0: "mean" is 0 / 0 = NaN, and the gradients
    are what cross_entropy gives for the same logits, chained (NaN where a counted token
    enters, 0 at ignored tokens)."""
    x, W, b, _ = _problem(rng, (6,), 4, 5, dtype)
    y = np.array([0, -100, 0, 2, -100, 2])
    w = np.array([0.0, 1.0, 0.0, 1.0, 1.0])
    loss, (gx, gW, gb) = fl.linear_cross_entropy(x, W, y, linear_bias=b, weight=w, return_grad=True)
    logits = (x.astype(np.float64) @ W.T.astype(np.float64) + b).astype(dtype)
    closs, G = fl.cross_entropy(logits, y, weight=w, return_grad=True)
    assert np.isnan(loss) and np.isnan(closs)
    ex, eW, eb = _chain(G, x, W)
    assert np.array_equal(np.isnan(gx), np.isnan(ex)) and np.all(gx[[1, 4]] == 0)
    assert np.array_equal(np.isnan(gW), np.isnan(eW))
    assert np.array_equal(np.isnan(gb), np.isnan(eb))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead", [(0,), (2, 0)])
def test_zero_tokens(dtype, lead):
    x = np.zeros(lead + (4,), dtype)
    W = np.ones((5, 4), dtype)
    b = np.ones(5, dtype)
    y = np.zeros(lead, np.int64)
    assert np.isnan(fl.linear_cross_entropy(x, W, y, linear_bias=b))
    assert fl.linear_cross_entropy(x, W, y, reduction="sum") == 0
    assert fl.linear_cross_entropy(x, W, y, reduction="none").shape == lead
    loss, (gx, gW, gb) = fl.linear_cross_entropy(x, W, y, linear_bias=b, reduction="sum",
                                                  return_grad=True, block_bytes=_row_bytes(5, dtype))
    assert loss == 0
    assert gx.shape == x.shape and gW.shape == W.shape and gb.shape == b.shape
    np.testing.assert_array_equal(gW, 0)
    np.testing.assert_array_equal(gb, 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead", [(3,), (2, 3)])
def test_zero_features(rng, dtype, lead):
    """D = 0: the logits are the bias (or 0), every gradient but the bias's is empty
    (was a reshape error of the tokens' (N, 0) view)."""
    x, W, b = np.zeros(lead + (0,), dtype), np.zeros((5, 0), dtype), rng.standard_normal(5).astype(dtype)
    y = rng.integers(0, 5, lead)
    for bias in (None, b):
        for kw in ({}, {"label_smoothing": 0.1}):
            expected = ref.linear_cross_entropy(x, W, y, linear_bias=bias, return_grad=True, **kw)
            got = fl.linear_cross_entropy(x, W, y, linear_bias=bias, return_grad=True, **kw)
            _check(got, expected, dtype)
            assert_close(fl.linear_cross_entropy(x, W, y, linear_bias=bias, **kw), expected[0], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lead,y", [((1,), np.array([3])), ((), np.array(3))])
def test_single_token(rng, dtype, lead, y):
    """One token, as (1, D) or as an unbatched (D,) input with a 0-d label."""
    x, W, b, _ = _problem(rng, lead, 6, 9, dtype)
    for reduction in REDUCTIONS:
        kw = dict(linear_bias=b, label_smoothing=0.1, reduction=reduction)
        got = fl.linear_cross_entropy(x, W, y, return_grad=True, **kw)
        _check(got, ref.linear_cross_entropy(x, W, y, return_grad=True, **kw), dtype)
        if reduction == "none":
            assert np.shape(got[0]) == lead


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_class(rng, dtype):
    """V = 1: log p = 0 for every token, so the loss and every gradient are 0."""
    x, W, b, _ = _problem(rng, (7,), 5, 1, dtype)
    y = np.zeros(7, np.int64)
    loss, grads = fl.linear_cross_entropy(x, W, y, linear_bias=b, label_smoothing=0.1, return_grad=True,
                                          block_bytes=2 * _row_bytes(1, dtype))
    assert loss == 0
    for g in grads:
        np.testing.assert_array_equal(g, 0)
    kw = dict(linear_bias=b, z_loss=0.1, reduction="none")   # z_loss: lse = the logit itself
    _check(fl.linear_cross_entropy(x, W, y, return_grad=True, **kw),
           ref.linear_cross_entropy(x, W, y, return_grad=True, **kw), dtype)


# --- bad input -----------------------------------------------------------------------------------

def _small(dtype=np.float64):
    x = np.zeros((4, 3), dtype)
    W = np.zeros((5, 3), dtype)
    return x, W, np.array([0, 1, 4, 2])


@pytest.mark.parametrize("args,kwargs,exc,match", [
    ((np.zeros((4, 2)), np.zeros((5, 3))), {}, ValueError, "linear_weight"),          # D mismatch
    ((np.zeros((4, 3)), np.zeros(3)), {}, ValueError, "linear_weight"),               # W not 2-D
    (None, dict(linear_bias=np.zeros(4)), ValueError, "linear_bias"),
    (None, dict(linear_bias=np.zeros((5, 1))), ValueError, "linear_bias"),
    (None, dict(weight=np.ones(4)), ValueError, "weight"),
    (None, dict(reduction="avg"), ValueError, "reduction"),
    (None, dict(label_smoothing=1.5), ValueError, "label_smoothing"),
    (None, dict(z_loss=-1.0), ValueError, "z_loss"),
    (None, dict(softcap=0.0), ValueError, "softcap"),
    (None, dict(block_bytes=5 * 8 - 1), ValueError, "block_bytes"),                  # < one row
    (None, dict(block_bytes=0), ValueError, "block_bytes"),
    (None, dict(grad_wrt=("input",)), ValueError, "grad_wrt"),                       # no return_grad
    (None, dict(grad_out=np.zeros((4, 3))), ValueError, "return_grad"),
    (None, dict(return_grad=True, grad_wrt=("linear_bias",)), ValueError, "linear_bias"),
    (None, dict(return_grad=True, grad_wrt=("input", "bias")), ValueError, "grad_wrt"),
    ((np.zeros((4, 3), complex), np.zeros((5, 3))), {}, TypeError, "input"),
    ((np.zeros((4, 3)), np.zeros((5, 3), complex)), {}, TypeError, "linear_weight"),
])
def test_bad_options(args, kwargs, exc, match):
    x, W, y = _small()
    if args is not None:
        x, W = args
    with pytest.raises(exc, match=match):
        fl.linear_cross_entropy(x, W, y, **kwargs)


def test_bad_labels():
    x, W, _ = _small()
    with pytest.raises(IndexError, match=r"target\[2\] = 5 is out of range"):
        fl.linear_cross_entropy(x, W, np.array([0, 1, 5, 0]))
    with pytest.raises(IndexError, match=r"target\[1\] = -1"):
        fl.linear_cross_entropy(x, W, np.array([0, -1, 0, 0]))
    with pytest.raises(IndexError, match=r"target\[\(1, 0\)\]"):
        fl.linear_cross_entropy(np.zeros((2, 2, 3)), W, np.array([[0, 1], [7, 0]]))
    with pytest.raises(IndexError):
        fl.linear_cross_entropy(x, W, np.array([0, 1, 2, -100]), ignore_index=-1)
    with pytest.raises(ValueError, match="target"):
        fl.linear_cross_entropy(x, W, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="target"):
        fl.linear_cross_entropy(np.zeros((2, 2, 3)), W, np.array([0, 1, 2, 3]))
    with pytest.raises(TypeError, match="target"):
        fl.linear_cross_entropy(x, W, np.array([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(TypeError, match="target"):
        fl.linear_cross_entropy(x, W, np.array([True, False, True, False]))


def test_bad_grad_out():
    x, W, y = _small()
    b = np.zeros(5)
    kw = dict(linear_bias=b, return_grad=True)
    with pytest.raises(ValueError, match="grad_out"):                  # 2 buffers for 3 gradients
        fl.linear_cross_entropy(x, W, y, grad_out=(np.empty_like(x), np.empty_like(W)), **kw)
    with pytest.raises(ValueError, match="grad_out"):                  # a bare array for 3
        fl.linear_cross_entropy(x, W, y, grad_out=np.empty_like(x), **kw)
    with pytest.raises(ValueError, match="grad_out"):                  # wrong shape
        fl.linear_cross_entropy(x, W, y, grad_out=(np.empty_like(x), np.empty((3, 5)), np.empty(5)), **kw)
    with pytest.raises(TypeError, match="grad_out"):                   # wrong dtype
        fl.linear_cross_entropy(x, W, y, grad_out=(np.empty_like(x), np.empty((5, 3), np.float32),
                                                   np.empty(5)), **kw)
    with pytest.raises(TypeError, match="grad_out"):                   # float32 buffer, float64 compute
        fl.linear_cross_entropy(x.astype(np.float32), W, y, grad_wrt=("input",),
                                grad_out=np.empty((4, 3), np.float32), return_grad=True)
    with pytest.raises(ValueError, match="grad_out"):                  # not C-contiguous
        fl.linear_cross_entropy(x, W, y, grad_wrt=("linear_weight",), return_grad=True,
                                grad_out=np.empty((5, 3), order="F"))
    ro = np.empty((5, 3))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="grad_out"):                  # read-only
        fl.linear_cross_entropy(x, W, y, grad_wrt=("linear_weight",), return_grad=True, grad_out=ro)


@pytest.mark.parametrize("slot,buffer", [
    (0, "input"),               # the input's gradient into the input itself
    (1, "linear_weight"),
    (2, "linear_bias"),
    (1, "input"),               # the weight's gradient into the input (D = V: same shape)
    (2, "row of linear_weight"),
    (1, "grad_out[0]"),         # two gradients into one buffer
])
def test_grad_out_overlapping_an_input(rng, slot, buffer):
    x, W, b, y = _problem(rng, (5,), 5, 5)
    copies = [a.copy() for a in (x, W, b)]
    bufs = [np.empty_like(x), np.empty_like(W), np.empty_like(b)]
    bufs[slot] = {"input": x, "linear_weight": W, "linear_bias": b, "row of linear_weight": W[2],
                  "grad_out[0]": bufs[0]}[buffer]
    with pytest.raises(ValueError, match="grad_out"):
        fl.linear_cross_entropy(x, W, y, linear_bias=b, return_grad=True, grad_out=tuple(bufs))
    for a, c in zip((x, W, b), copies):      # checked before any work: inputs untouched
        np.testing.assert_array_equal(a, c)


def test_errors_before_any_work(rng):
    """A bad label is found before a buffer is written."""
    x, W, b, y = _problem(rng, (6,), 4, 5)
    y[4] = 9
    bufs = (np.full_like(x, 7.0), np.full_like(W, 7.0), np.full_like(b, 7.0))
    with pytest.raises(IndexError, match=r"target\[4\]"):
        fl.linear_cross_entropy(x, W, y, linear_bias=b, return_grad=True, grad_out=bufs,
                                block_bytes=_row_bytes(5, np.float64))
    for buf in bufs:
        np.testing.assert_array_equal(buf, 7.0)
