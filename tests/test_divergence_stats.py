"""kl_divergence / distillation_loss(..., return_stats=True): each row's argmax of both
inputs and their agreement from the KL row kernels' own pass, against np.argmax on the same
inputs, on every kernel path (the one-pass loss-only rows, their exact fallback for rows
with NaN or inf, the gradient rows with and without kept exponentials, half rows read
directly and through float32 scratch, rows skipped by ignore_index) and SIMD level; the loss
and the gradients are the same bits with and without the statistics."""
import numpy as np
import pytest

import fastloss
from fastloss import DistillationStats, DivergenceStats

from helpers import special_rows

# 9: one partial group; 1000: many groups (maxima in later groups); 60000 float32 /
# 30000 float64: rows longer than the kernel keeps (the gradient pass recomputes)
CLASSES = [9, 1000]
LONG = {np.dtype(np.float32): 60000, np.dtype(np.float64): 30000}


def _bf16():
    return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)


def _half(name):
    return _bf16() if name == "bfloat16" else np.dtype(name)


def argmax(x, axis=-1):
    """np.argmax of the logits as passed (half: of their exact float64 values)."""
    return np.argmax(np.asarray(x).astype(np.float64), axis=axis)


def stats_call(fn, x, y, **kw):
    """fn(x, y, return_stats=True, **kw) after checking that its loss (and gradients) are
    the bits of the call without stats; returns the stats."""
    plain = fn(x, y, **kw)
    got = fn(x, y, return_stats=True, **kw)
    assert isinstance(got, tuple) and len(got) == (3 if kw.get("return_grad") else 2)
    if kw.get("return_grad"):
        np.testing.assert_array_equal(got[0], plain[0], strict=True)
        for g, g0 in zip(*(v if isinstance(v, tuple) else (v,) for v in (got[1], plain[1]))):
            np.testing.assert_array_equal(g, g0, strict=True)
    else:
        np.testing.assert_array_equal(got[0], plain, strict=True)
    return got[-1]


def check(st, am_first, am_second, counted=True):
    """st's fields in order against the argmaxes wanted; agree where counted."""
    assert type(st) in (DivergenceStats, DistillationStats)
    assert st[0].dtype == st[1].dtype == np.int64 and st[2].dtype == bool
    assert st[0].shape == st[1].shape == st[2].shape == np.shape(am_first)
    np.testing.assert_array_equal(st[0], am_first)
    np.testing.assert_array_equal(st[1], am_second)
    np.testing.assert_array_equal(st[2], (am_first == am_second) & counted)


def kl_stats(p, q, **kw):
    st = stats_call(fastloss.kl_divergence, p, q, **kw)
    assert isinstance(st, DivergenceStats)
    return st


def _pair(rng, shape, dtype, agree_rows=5):
    p = (rng.standard_normal(shape) * 3).astype(dtype)
    q = (rng.standard_normal(shape) * 3).astype(dtype)
    q[:agree_rows] = p[:agree_rows]               # some rows agree for sure
    return p, q


@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("return_grad", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.3, 4.0])
def test_kl_matches_numpy(simd, rng, C, dtype, return_grad, temperature):
    p, q = _pair(rng, (30, C), dtype)
    st = kl_stats(p, q, temperature=temperature, return_grad=return_grad, reduction="none")
    check(st, argmax(p), argmax(q))
    assert st.agree[:5].all()


@pytest.mark.parametrize("return_grad", [False, True])
def test_kl_rows_too_long_to_keep(rng, return_grad):
    for dtype, C in LONG.items():
        p, q = _pair(rng, (3, C), dtype, agree_rows=1)
        p[1, [C - 7, C - 2]] = q[1, [C - 7, 5]] = 50.0       # ties far apart
        st = kl_stats(p, q, return_grad=return_grad, reduction="none")
        check(st, argmax(p), argmax(q))
        assert st.argmax_p[1] == C - 7 and st.argmax_q[1] == 5


def _special(C, dtype):
    """Rows of (p, q) for np.argmax's rule: ties, -inf, +inf, NaN, a maximum in a middle
    group and a rising row, each on either side."""
    x = special_rows(C)
    y = np.roll(x, 3, axis=0)                     # every kind of row against every other
    y[6] = x[6]                                   # equal rows agree
    return x.astype(dtype), y.astype(dtype)


@pytest.mark.parametrize("C", [9, 1000])
@pytest.mark.parametrize("return_grad", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kl_ties_infinities_nan(simd, C, return_grad, temperature):
    for dtype in (np.float64, np.float32):
        p, q = _special(C, dtype)
        with np.errstate(invalid="ignore"):
            for a, b in ((p, q), (q, p)):
                st = kl_stats(a, b, temperature=temperature, return_grad=return_grad,
                              reduction="none")
                check(st, argmax(a), argmax(b))
    far = C - 1
    np.testing.assert_array_equal(st.argmax_q[:10], [1, 0, far, 2, far, 1, far // 2, 1, far // 3, far])
    assert st.agree[6]


@pytest.mark.parametrize("C", [9, 1000])
@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("return_grad", [False, True])
def test_kl_half(simd, rng, half, C, return_grad):
    """Half logits, read directly (loss only) or through float32 scratch (gradients): the
    argmaxes of their exact values; special rows take the exact path."""
    dt = _half(half)
    p, q = _pair(rng, (20, C), dt)
    st = kl_stats(p, q, return_grad=return_grad, temperature=2.0)
    check(st, argmax(p), argmax(q))
    sp, sq = _special(C, np.float32)
    sp, sq = sp.astype(dt), sq.astype(dt)
    with np.errstate(invalid="ignore"):
        check(kl_stats(sp, sq, return_grad=return_grad, reduction="none"), argmax(sp), argmax(sq))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kl_class_axis_not_last(rng, dtype):
    p, q = _pair(rng, (4, 50, 6), dtype, agree_rows=1)
    p[1, [3, 40], 2] = 99.0                       # a tie along the class axis
    q[2, :, 0] = -np.inf
    for return_grad in (False, True):
        st = kl_stats(p, q, axis=1, return_grad=return_grad, reduction="none")
        check(st, argmax(p, axis=1), argmax(q, axis=1))
    assert st.argmax_p.shape == (4, 6) and st.argmax_p[1, 2] == 3 and st.argmax_q[2, 0] == 0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_kl_masks(rng, reduction):
    """where= and labels=: the loss and gradients as without stats, the argmaxes of every
    row, agree False in the rows that count for nothing."""
    p, q = _pair(rng, (6, 7, 40), np.float32, agree_rows=3)
    keep = rng.random((6, 7)) < 0.6
    keep[0] = False                               # rows that agree, masked
    labels = np.where(keep, 1, -100)
    for kw in (dict(where=keep), dict(where=keep[:, :1]), dict(labels=labels),
               dict(labels=labels, where=np.ones((1, 7), bool))):
        for return_grad in (False, True):
            st = kl_stats(p, q, reduction=reduction, return_grad=return_grad, **kw)
            counted = np.broadcast_to(kw.get("where", True) & (kw.get("labels", 0) != -100),
                                      (6, 7))
            check(st, argmax(p), argmax(q), counted)
    assert not st.agree[0].any() and st.agree[1].any()


@pytest.mark.parametrize("C", [9, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, "float16", "bfloat16"])
@pytest.mark.parametrize("return_grad", [False, True])
def test_distillation(simd, rng, C, dtype, return_grad):
    """Student and teacher argmaxes, without target and with one (ignore_index rows, whose
    KL the kernel skips, still have both); alpha 0 and 1; temperature != 1."""
    dt = _half(dtype) if isinstance(dtype, str) else np.dtype(dtype)
    s, t = _pair(rng, (25, C), dt)
    y = rng.integers(0, C, 25)
    y[1::3] = -100
    fn = fastloss.distillation_loss
    for kw in (dict(), dict(target=y), dict(target=y, alpha=0.0), dict(target=y, alpha=1.0),
               dict(target=y, temperature=3.0, reduction="none")):
        st = stats_call(fn, s, t, return_grad=return_grad, **kw)
        assert isinstance(st, DistillationStats)
        counted = y != -100 if "target" in kw else True
        check(st, argmax(s), argmax(t), counted)
    assert st.agree[[0, 2, 3]].all() and not st.agree[1]


def test_distillation_special_rows_and_masks(rng):
    s, t = _special(1000, np.float32)
    y = np.arange(10) * 7
    y[[1, 3, 6]] = -100                           # skipped rows: the exact path for argmaxes
    keep = np.arange(10) % 4 != 0
    fn = fastloss.distillation_loss
    with np.errstate(invalid="ignore"):
        for half in (None, "float16"):
            a, b = (s, t) if half is None else (s.astype(half), t.astype(half))
            for return_grad in (False, True):
                st = stats_call(fn, a, b, target=y, return_grad=return_grad, reduction="none")
                check(st, argmax(a), argmax(b), y != -100)
                st = stats_call(fn, a, b, target=y, where=keep, return_grad=return_grad)
                check(st, argmax(a), argmax(b), (y != -100) & keep)
                st = stats_call(fn, a, b, where=keep, return_grad=return_grad)
                check(st, argmax(a), argmax(b), keep)


def test_in_place_gradients():
    """grad_out over an input: the stats are the argmaxes of the inputs before they are
    overwritten (distillation with target and alpha 0: the KL pass still reads the student
    after the cross-entropy pass wrote its gradient; alpha 1: ignored rows' gradients are
    zeroed in the student)."""
    rng = np.random.default_rng(5)
    p, q = _pair(rng, (12, 300), np.float32)
    want = argmax(p), argmax(q)
    ref = fastloss.kl_divergence(p, q, return_grad=True)
    qc = q.copy()
    loss, (gp, gq), st = fastloss.kl_divergence(p, qc, return_grad=True, grad_out=(None, qc),
                                                return_stats=True)
    assert gq is qc
    np.testing.assert_array_equal(loss, ref[0], strict=True)
    np.testing.assert_array_equal(gq, ref[1][1], strict=True)
    check(st, *want)
    y = rng.integers(0, 300, 12)
    y[::4] = -100                                 # skipped rows: zeroed after their argmaxes
    for alpha in (0.0, 0.5, 1.0):
        ref = fastloss.distillation_loss(p, q, target=y, alpha=alpha, return_grad=True)
        s = p.copy()
        loss, g, st = fastloss.distillation_loss(s, q, target=y, alpha=alpha, return_grad=True,
                                                 grad_out=s, return_stats=True)
        assert g is s
        np.testing.assert_array_equal(loss, ref[0], strict=True)
        np.testing.assert_array_equal(g, ref[1], strict=True)
        check(st, *want, y != -100)


def test_threads_same_bits(rng):
    p, q = _pair(rng, (700, 300), np.float32)
    results = []
    for n in (1, 2, 3):
        with fastloss.threads(n):
            results.append([fastloss.kl_divergence(p, q, return_stats=True),
                            fastloss.kl_divergence(p, q, return_grad=True, return_stats=True)])
    for r in results:
        for out in r:
            check(out[-1], argmax(p), argmax(q))
            for a, b in zip(out[-1], results[0][0][-1]):
                np.testing.assert_array_equal(a, b, strict=True)


def test_empty_and_js_untouched():
    st = fastloss.kl_divergence(np.zeros((0, 4)), np.zeros((0, 4)), return_stats=True)[1]
    assert st.argmax_p.shape == st.argmax_q.shape == st.agree.shape == (0,)
    st = fastloss.distillation_loss(np.zeros((2, 0, 3)), np.zeros((2, 0, 3)), return_stats=True)[1]
    assert st.agree.shape == (2, 0)
    with pytest.raises(TypeError):
        fastloss.js_divergence(np.zeros((2, 3)), np.zeros((2, 3)), return_stats=True)


def test_dask_refuses_stats():
    da = pytest.importorskip("dask.array")
    from fastloss import dask as fld
    x = da.from_array(np.zeros((4, 3)), chunks=2)
    for fn in (fld.kl_divergence, fld.distillation_loss):
        with pytest.raises(ValueError, match="return_stats is not taken"):
            fn(x, x, return_stats=True)
