"""cross_entropy(..., return_stats=True): per-row log-sum-exp, argmax and correct from the
row kernels' own pass, against a NumPy float64 logsumexp (scipy's rule) and np.argmax on the
same inputs, on every kernel path (short rows, long rows in chunks, rows too long to keep,
soft-capped rows, a class axis that is not last, probability targets, half inputs) and SIMD
level; the loss and the gradient are the same bits with and without the statistics, for any
thread count."""
import numpy as np
import pytest

import fastloss
from fastloss import CrossEntropyStats

from helpers import special_rows

# rows of 5 (the transposed short-row path), 33, 1000 and 9000 (three chunks of 4096) classes
CLASSES = [5, 33, 100, 1000, 9000]
LONG = 256 * 4096 + 10          # longer than the kernels keep: the online (streaming) path


def logsumexp(x, axis=-1):
    """float64 log-sum-exp with scipy.special.logsumexp's rule for rows whose max is not
    finite (+inf, -inf for an all -inf row, NaN); NumPy only (the wheel check has no SciPy)."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    shift = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.log(np.sum(np.exp(x - shift), axis=axis, keepdims=True)) + shift
    return np.squeeze(out, axis=axis)


def _bf16():
    return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)


def expected(x, target, *, axis=-1, softcap=None, ignore_index=-100):
    """(lse, argmax, correct) by NumPy/SciPy in float64 from the logits as passed."""
    x64 = np.asarray(x).astype(np.float64)
    xc = softcap * np.tanh(x64 / softcap) if softcap else x64
    t = np.asarray(target)
    am = np.argmax(x64, axis=axis)
    with np.errstate(invalid="ignore"):
        lse = logsumexp(xc, axis=axis)
    if t.dtype.kind in "iu":
        correct = (am == t) & (t != ignore_index)
    else:
        correct = am == np.argmax(t.astype(np.float64), axis=axis)
    return lse, am, correct


def stats_call(x, target, **kw):
    """cross_entropy with return_stats, after checking that the loss (and gradient) are the
    bits of the call without it; returns the stats."""
    plain = fastloss.cross_entropy(x, target, **kw)
    got = fastloss.cross_entropy(x, target, return_stats=True, **kw)
    assert isinstance(got, tuple) and len(got) == (3 if kw.get("return_grad") else 2)
    st = got[-1]
    assert isinstance(st, CrossEntropyStats)
    if kw.get("return_grad"):
        np.testing.assert_array_equal(got[0], plain[0], strict=True)
        np.testing.assert_array_equal(got[1], plain[1], strict=True)
    else:
        np.testing.assert_array_equal(got[0], plain, strict=True)
    return st


def check(st, want, dtype, shape):
    lse, am, correct = want
    assert st.lse.dtype == np.float64 and st.argmax.dtype == np.int64 and st.correct.dtype == bool
    assert st.lse.shape == st.argmax.shape == st.correct.shape == shape
    np.testing.assert_array_equal(st.argmax, am)
    np.testing.assert_array_equal(st.correct, correct)
    tol = 1e-12 if np.dtype(dtype) == np.float64 else 2e-5     # half: computed in float32
    np.testing.assert_allclose(st.lse, lse, rtol=tol, atol=tol)


def _labels(rng, shape, C, ignored=0.2):
    y = rng.integers(0, C, size=shape)
    return np.where(rng.random(shape) < ignored, -100, y)


@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("return_grad", [False, True])
def test_labels_match_numpy(simd, rng, C, dtype, return_grad):
    x = (rng.standard_normal((37, C)) * 4).astype(dtype)
    y = _labels(rng, 37, C)
    y[:3] = np.argmax(x[:3], axis=-1)            # some rows right for sure
    st = stats_call(x, y, return_grad=return_grad)
    check(st, expected(x, y), dtype, (37,))
    assert st.correct[:3].all() and not st.correct[y == -100].any()


@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("return_grad", [False, True])
def test_ties_infinities_nan(simd, C, return_grad):
    """np.argmax's rule: the first maximum, the first NaN; rows of -inf, +inf and NaN get
    logsumexp's lse. Positions sit in different chunks for the long rows."""
    far = C - 1
    x = special_rows(C)[:8]
    y = np.array([1, 0, far, 2, far, 1, far // 2, 1])
    for dtype in (np.float64, np.float32):
        xd = x.astype(dtype)
        with np.errstate(invalid="ignore"):
            st = stats_call(xd, y, return_grad=return_grad, reduction="none")
        check(st, expected(xd, y), dtype, (8,))
    np.testing.assert_array_equal(st.argmax, [1, 0, far, 2, far, 1, far // 2, 1])


@pytest.mark.parametrize("return_grad", [False, True])
def test_rows_too_long_to_keep(rng, return_grad):
    """The online path (no exponentials kept): the maximum and a tie in the last chunk."""
    x = rng.standard_normal((3, LONG)).astype(np.float32)
    x[0, LONG - 3] = 10.0
    x[1, [LONG - 7, LONG - 2]] = 10.0
    x[2, [5, LONG - 1]] = np.nan
    y = np.array([LONG - 3, 0, 5])
    with np.errstate(invalid="ignore"):
        st = stats_call(x, y, return_grad=return_grad, reduction="none")
    check(st, expected(x, y), np.float32, (3,))
    np.testing.assert_array_equal(st.argmax, [LONG - 3, LONG - 7, 5])


@pytest.mark.parametrize("C", [5, 1000])
def test_softcap(simd, rng, C):
    """lse of the capped logits (the loss's); argmax of the logits as given, also where the
    cap rounds two of them to the same value."""
    x = rng.standard_normal((20, C)) * 30
    x[0, [1, 3]] = [1000.0, 2000.0]               # both 30 * tanh(...) == 30.0
    assert np.tanh(1000.0 / 30) * 30 == np.tanh(2000.0 / 30) * 30
    y = _labels(rng, 20, C)
    for dtype in (np.float64, np.float32):
        xd = x.astype(dtype)
        st = stats_call(xd, y, softcap=30.0, return_grad=True)
        check(st, expected(xd, y, softcap=30.0), dtype, (20,))
        assert st.argmax[0] == 3
        t = fastloss.softmax(rng.standard_normal((20, C)).astype(dtype))
        check(stats_call(xd, t, softcap=30.0), expected(xd, t, softcap=30.0), dtype, (20,))


@pytest.mark.parametrize("T", [40, 3])            # positions >= 16: the strided kernel
@pytest.mark.parametrize("C", [5, 70])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_class_axis_not_last(simd, rng, T, C, dtype):
    x = (rng.standard_normal((4, C, T)) * 3).astype(dtype)
    x[0, [1, C - 1], 2] = 99.0                    # a tie along the class axis
    x[1, :, 0] = -np.inf
    x[2, [3, 0], 1] = np.nan
    y = _labels(rng, (4, T), C)
    with np.errstate(invalid="ignore"):
        st = stats_call(x, y, axis=1, return_grad=True)
    check(st, expected(x, y, axis=1), dtype, (4, T))
    assert st.argmax[0, 2] == 1 and st.argmax[1, 0] == 0 and st.argmax[2, 1] == 0
    st = stats_call(x, y, axis=1)                 # loss only: the kernel without g
    check(st, expected(x, y, axis=1), dtype, (4, T))


@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_probabilities(simd, rng, C, dtype):
    x = (rng.standard_normal((25, C)) * 3).astype(dtype)
    t = fastloss.softmax((rng.standard_normal((25, C)) * 3).astype(dtype))
    t[:4] = fastloss.softmax(x[:4] * 5)           # the same argmax: correct
    t[4] = 0
    t[4, [0, 2]] = 0.5                            # a tied target: its first index
    for return_grad in (False, True):
        st = stats_call(x, t, return_grad=return_grad, label_smoothing=0.1)
        check(st, expected(x, t), dtype, (25,))
    assert st.correct[:4].all()


@pytest.mark.parametrize("C", [5, 1000])
@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half(simd, rng, half, C):
    """Half logits: the statistics of their float32 upcast (exact), from the half kernel;
    labels, probabilities and a class axis that is not last."""
    dt = _bf16() if half == "bfloat16" else np.dtype(half)
    x = (rng.standard_normal((30, C)) * 3).astype(dt)
    x[0, [1, 3]] = x[0].max() + 1                 # a tie (exact in any half format)
    y = _labels(rng, 30, C)
    st = stats_call(x, y, return_grad=True)
    check(st, expected(x, y), dt, (30,))
    assert st.argmax[0] == 1
    t = fastloss.softmax(rng.standard_normal((30, C)).astype(np.float32)).astype(dt)
    check(stats_call(x, t, softcap=5.0), expected(x, t, softcap=5.0), dt, (30,))
    x3 = (rng.standard_normal((2, C, 20)) * 3).astype(dt)
    y3 = _labels(rng, (2, 20), C)
    check(stats_call(x3, y3, axis=1, return_grad=True), expected(x3, y3, axis=1), dt, (2, 20))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions_and_grad_out(rng, reduction):
    """Stats come last, per row whatever the reduction; grad_out is still the gradient."""
    x = rng.standard_normal((6, 7, 50)).astype(np.float32)
    y = _labels(rng, (6, 7), 50)
    buf = np.empty_like(x)
    loss, grad, st = fastloss.cross_entropy(x, y, reduction=reduction, return_grad=True,
                                            grad_out=buf, return_stats=True)
    assert grad is buf
    ref_loss, ref_grad = fastloss.cross_entropy(x, y, reduction=reduction, return_grad=True)
    np.testing.assert_array_equal(loss, ref_loss, strict=True)
    np.testing.assert_array_equal(grad, ref_grad)
    check(st, expected(x, y), np.float32, (6, 7))
    # in place: the statistics are those of the logits before they are overwritten
    want = expected(x, y)
    _, g, st = fastloss.cross_entropy(x, y, reduction=reduction, return_grad=True, grad_out=x,
                                      return_stats=True)
    assert g is x
    check(st, want, np.float32, (6, 7))
    x3 = rng.standard_normal((6, 50, 20)).astype(np.float32)     # the strided kernel in place
    y3 = _labels(rng, (6, 20), 50)
    want = expected(x3, y3, axis=1)
    _, g, st = fastloss.cross_entropy(x3, y3, axis=1, reduction=reduction, return_grad=True,
                                      grad_out=x3, return_stats=True)
    assert g is x3
    check(st, want, np.float32, (6, 20))


def test_threads_same_bits(rng):
    x = (rng.standard_normal((700, 300)) * 3).astype(np.float32)
    y = _labels(rng, 700, 300)
    x3 = np.ascontiguousarray(np.moveaxis(x.reshape(7, 100, 300), 2, 1))   # (7, 300, 100)
    results = []
    for n in (1, 2, 3):
        with fastloss.threads(n):
            r = [fastloss.cross_entropy(x, y, return_grad=True, return_stats=True),
                 fastloss.cross_entropy(x3, y.reshape(7, 100), axis=1, return_grad=True,
                                        return_stats=True)]
        results.append(r)
        check(r[0][2], expected(x, y), np.float32, (700,))
    for r in results[1:]:
        for (loss, grad, st), (loss1, grad1, st1) in zip(r, results[0]):
            np.testing.assert_array_equal(loss, loss1, strict=True)
            np.testing.assert_array_equal(grad, grad1, strict=True)
            for a, b in zip(st, st1):
                np.testing.assert_array_equal(a, b, strict=True)
    cols, rows = results[0][1][2], results[0][0][2]   # the strided kernel agrees with the rows'
    np.testing.assert_array_equal(cols.argmax.reshape(-1), rows.argmax)
    np.testing.assert_array_equal(cols.correct.reshape(-1), rows.correct)
    np.testing.assert_allclose(cols.lse.reshape(-1), rows.lse, rtol=1e-6)


def test_empty_and_ignored_rows():
    st = fastloss.cross_entropy(np.zeros((0, 4)), np.zeros(0, np.int64), return_stats=True)[1]
    assert st.lse.shape == st.argmax.shape == st.correct.shape == (0,)
    x = np.array([[0.0, 2.0, 1.0], [4.0, 0.0, 0.0]])
    st = fastloss.cross_entropy(x, np.array([-100, -100]), return_stats=True)[1]
    np.testing.assert_array_equal(st.argmax, [1, 0])      # ignored rows: stats all the same
    np.testing.assert_allclose(st.lse, logsumexp(x, axis=-1), rtol=1e-14)
    assert not st.correct.any()
