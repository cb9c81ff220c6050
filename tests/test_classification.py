"""Classification losses against the float64 oracles, finite differences and PyTorch;
edge cases, layouts, gradient buffers and bad input."""
import itertools

import numpy as np
import pytest

import fastloss as fl
import fastloss.reference as ref
from helpers import assert_close, check_loss_and_grads, fd_grad

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


def _logits(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _labels(rng, shape, C, ignore=False, dtype=np.int64):
    y = rng.integers(0, C, size=shape).astype(dtype)
    if ignore and y.size:
        y.reshape(-1)[::3] = -100
    return y


# --- cross-entropy against the oracle ----------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted,ignore,smoothing,z_loss",
                         list(itertools.product([False, True], [False, True], [0.0, 0.2], [0.0, 1e-2])))
@pytest.mark.parametrize("C", [7, 37])   # 7: the many-rows-per-vector path; 37: vector tails
def test_cross_entropy_labels_matrix(simd, rng, dtype, reduction, weighted, ignore, smoothing, z_loss, C):
    x = _logits(rng, (19, C), dtype)
    y = _labels(rng, 19, C, ignore)
    kw = dict(weight=rng.uniform(0.1, 2.0, C) if weighted else None, label_smoothing=smoothing,
              z_loss=z_loss, reduction=reduction, return_grad=True)
    check_loss_and_grads(fl.cross_entropy(x, y, **kw), ref.cross_entropy(x, y, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted,smoothing,z_loss",
                         list(itertools.product([False, True], [0.0, 0.3], [0.0, 1e-2])))
@pytest.mark.parametrize("C", [5, 21, 100, 256, 300])
def test_cross_entropy_probs_matrix(simd, rng, dtype, reduction, weighted, smoothing, z_loss, C):
    """The blocked rows up to 256 classes (a partial block included), the row path above."""
    x = _logits(rng, (37, C), dtype)
    t = rng.dirichlet(np.ones(C), 37).astype(dtype)
    t[0, :5] = 0.0
    x[1, 3] = -np.inf                             # a class of probability 0 ...
    t[1, 3] = 0.0                                 # ... and no target there: adds 0
    kw = dict(weight=rng.uniform(0.1, 2.0, C) if weighted else None, label_smoothing=smoothing,
              z_loss=z_loss, reduction=reduction, return_grad=True)
    check_loss_and_grads(fl.cross_entropy(x, t, **kw), ref.cross_entropy(x, t, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted,smoothing,z_loss", [(False, 0.0, 0.0), (True, 0.2, 1e-2)])
@pytest.mark.parametrize("shape,axis", [((3, 5, 37), 1), ((2, 4, 4, 5), 1), ((6, 16), 0), ((2, 3, 19, 2), 2)])
def test_cross_entropy_class_axis_in_place_layout(simd, rng, dtype, reduction, weighted, smoothing,
                                                  z_loss, shape, axis):
    """A class axis followed by >= 16 positions is read in place (vectors across positions)."""
    x = _logits(rng, shape, dtype)
    C = shape[axis]
    y = _labels(rng, shape[:axis] + shape[axis + 1:], C, ignore=True)
    kw = dict(axis=axis, weight=rng.uniform(0.1, 2.0, C) if weighted else None,
              label_smoothing=smoothing, z_loss=z_loss, reduction=reduction, return_grad=True)
    check_loss_and_grads(fl.cross_entropy(x, y, **kw), ref.cross_entropy(x, y, **kw), dtype)
    # in place: the logits become their gradient
    xc = x.copy()
    loss, g = fl.cross_entropy(xc, y, grad_out=xc, **kw)
    assert g is xc
    check_loss_and_grads((loss, xc), ref.cross_entropy(x, y, **kw), dtype)


def test_cross_entropy_class_axis_special_values(simd):
    x = np.zeros((2, 3, 20))
    x[0, :, 4] = np.nan
    x[1, :, 7] = -np.inf
    x[1, 0, 9] = -np.inf
    y = np.zeros((2, 20), np.int64)
    y[1, 9] = 2
    loss, g = fl.cross_entropy(x, y, axis=1, reduction="none", return_grad=True)
    assert np.isnan(loss[0, 4]) and np.all(np.isnan(g[0, :, 4]))
    assert np.isnan(loss[1, 7])                                    # all -inf: NaN, as PyTorch
    np.testing.assert_allclose(loss[1, 9], np.log(2.0), rtol=1e-15)  # a -inf class has p = 0
    assert g[1, 0, 9] == 0
    rest = np.ones((2, 20), bool)
    rest[0, 4] = rest[1, 7] = rest[1, 9] = False
    np.testing.assert_allclose(loss[rest], np.log(3.0), rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("labels", [True, False])
def test_cross_entropy_softcap(simd, rng, dtype, labels):
    x = _logits(rng, (6, 30), dtype, scale=20.0)
    t = _labels(rng, 6, 30) if labels else rng.dirichlet(np.ones(30), 6).astype(dtype)
    kw = dict(softcap=15.0, z_loss=1e-3, label_smoothing=0.1, return_grad=True)
    check_loss_and_grads(fl.cross_entropy(x, t, **kw), ref.cross_entropy(x, t, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 2, 15, 16, 17, 1000, 200_000])
def test_cross_entropy_row_lengths(rng, dtype, C):
    """Short rows, vector-width boundaries, and rows past FL_ROW_CACHE_BYTES (online softmax)."""
    n = 3 if C > 1000 else 8
    x = _logits(rng, (n, C), dtype)
    y = _labels(rng, n, C)
    for labels_or_probs in (y, rng.dirichlet(np.ones(C), n).astype(dtype)):
        kw = dict(label_smoothing=0.1, return_grad=True)
        check_loss_and_grads(fl.cross_entropy(x, labels_or_probs, **kw), ref.cross_entropy(x, labels_or_probs, **kw), dtype)
        assert_close(fl.cross_entropy(x, labels_or_probs), ref.cross_entropy(x, labels_or_probs), dtype)


# --- finite differences ----------------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    dict(),
    dict(weight=np.array([0.5, 1.0, 2.0, 1.5, 0.3]), label_smoothing=0.25),
    dict(z_loss=0.05, softcap=4.0),
    dict(reduction="sum", label_smoothing=0.1, weight=np.array([0.5, 1.0, 2.0, 1.5, 0.3])),
    dict(reduction="none", z_loss=0.1),
])
@pytest.mark.parametrize("labels", [True, False])
def test_cross_entropy_finite_differences(rng, kw, labels):
    x = rng.standard_normal((4, 5)) * 2
    t = np.array([0, 4, -100, 2]) if labels else rng.dirichlet(np.ones(5), 4)
    _, g = fl.cross_entropy(x, t, return_grad=True, **kw)

    def f(z):
        return np.sum(fl.cross_entropy(z, t, **kw))
    np.testing.assert_allclose(g, fd_grad(f, x, h=1e-3), rtol=1e-7, atol=1e-9)


# --- layouts -------------------------------------------------------------------------------

def test_cross_entropy_lm_shape_and_pytorch_layout(rng):
    B, T, V = 3, 5, 50
    x = _logits(rng, (B, T, V), np.float64)
    y = _labels(rng, (B, T), V, ignore=True)
    loss, g = fl.cross_entropy(x, y, return_grad=True)
    rl, rg = ref.cross_entropy(x, y, return_grad=True)
    assert g.shape == x.shape
    assert_close(loss, rl, np.float64)
    assert_close(g, rg, np.float64, grad=True)
    # PyTorch layout (N, C, d1): same numbers with the class axis at 1
    xt = np.ascontiguousarray(np.moveaxis(x, 2, 1))
    loss1, g1 = fl.cross_entropy(xt, y, axis=1, return_grad=True)
    assert_close(loss1, rl, np.float64)
    assert_close(np.moveaxis(g1, 1, 2), rg, np.float64, grad=True)
    per = fl.cross_entropy(xt, y, axis=1, reduction="none")
    assert per.shape == (B, T)


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "memmap"])
def test_cross_entropy_layouts_match_contiguous(rng, tmp_path, layout):
    x = _logits(rng, (40, 33), np.float32)
    y = _labels(rng, 40, 33, ignore=True)
    expected = fl.cross_entropy(x, y, label_smoothing=0.1, return_grad=True)
    if layout == "fortran":
        xv = np.asfortranarray(x)
    elif layout == "strided":
        big = np.zeros((80, 66), np.float32)
        big[::2, ::2] = x
        xv = big[::2, ::2]
    elif layout == "readonly":
        xv = x.copy()
        xv.flags.writeable = False
    else:
        path = tmp_path / "x.npy"
        np.save(path, x)
        xv = np.load(path, mmap_mode="r")
    got = fl.cross_entropy(xv, y, label_smoothing=0.1, return_grad=True)
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(x, np.asarray(xv))  # input untouched


def test_cross_entropy_unbatched(rng):
    x = rng.standard_normal(7)
    loss, g = fl.cross_entropy(x, 3, return_grad=True)
    rl, rg = ref.cross_entropy(x, np.array(3), return_grad=True)
    assert_close(loss, rl, np.float64)
    assert_close(g, rg, np.float64, grad=True)


@pytest.mark.parametrize("label_dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64])
def test_cross_entropy_label_dtypes(rng, label_dtype):
    x = _logits(rng, (10, 7), np.float64)
    y = rng.integers(0, 7, 10)
    assert fl.cross_entropy(x, y.astype(label_dtype)) == fl.cross_entropy(x, y)


def test_input_dtype_conversion(rng):
    y = np.array([0, 2, 1])
    x16 = rng.standard_normal((3, 4)).astype(np.float16)
    loss, g = fl.cross_entropy(x16, y, return_grad=True)
    assert loss.dtype == np.float32 and g.dtype == np.float16   # read natively (tests/test_half.py)
    xi = np.array([[1, 2, 3, 4], [0, 0, 0, 0], [5, -1, 2, 0]])
    loss, g = fl.cross_entropy(xi, y, return_grad=True)
    assert loss.dtype == np.float64
    assert_close(loss, ref.cross_entropy(xi, y), np.float64)
    assert fl.binary_cross_entropy_with_logits([True, False], [1, 0]).dtype == np.float64


# --- edge cases --------------------------------------------------------------------------------

def test_empty_batch():
    x = np.zeros((0, 5), np.float32)
    y = np.zeros(0, np.int64)
    assert np.isnan(fl.cross_entropy(x, y))
    assert fl.cross_entropy(x, y, reduction="sum") == 0
    assert fl.cross_entropy(x, y, reduction="none").shape == (0,)
    loss, g = fl.cross_entropy(x, y, return_grad=True)
    assert g.shape == (0, 5)
    assert fl.binary_cross_entropy_with_logits(np.zeros(0), np.zeros(0), reduction="sum") == 0


def test_one_class(rng):
    x = rng.standard_normal((4, 1))
    loss, g = fl.cross_entropy(x, np.zeros(4, np.int64), return_grad=True)
    assert loss == 0 and np.all(g == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_ignored(dtype):
    x = np.ones((3, 4), dtype)
    y = np.full(3, -100)
    loss, g = fl.cross_entropy(x, y, return_grad=True)
    assert np.isnan(loss)                         # 0 / 0, as PyTorch
    np.testing.assert_array_equal(g, 0)
    assert fl.cross_entropy(x, y, reduction="sum") == 0
    # a custom ignore_index
    loss = fl.cross_entropy(x, np.array([1, -5, 2]), ignore_index=-5, reduction="none")
    assert loss[1] == 0 and loss[0] > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_logits(simd, dtype):
    x = np.array([[1e4, -1e4, 0.0, 5e3], [-1e4, -1e4, -1e4, -1e4], [3e4, 3e4, -3e4, 0]], dtype)
    y = np.array([1, 2, 0])
    loss, g = fl.cross_entropy(x, y, reduction="none", return_grad=True)
    rl, rg = ref.cross_entropy(x, y, reduction="none", return_grad=True)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(g))
    assert_close(loss, rl, dtype)
    assert_close(g, rg, dtype, grad=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_neg_inf_logits(simd, dtype):
    """-inf logits are classes of probability 0; a zero target there contributes exactly 0."""
    x = np.array([[0.0, -np.inf, 1.0], [-np.inf, 2.0, -np.inf]], dtype)
    loss, g = fl.cross_entropy(x, np.array([0, 1]), return_grad=True, reduction="none")
    assert_close(loss, ref.cross_entropy(x, np.array([0, 1]), reduction="none"), dtype)
    assert loss[1] == 0 and np.all(np.isfinite(g))
    t = np.array([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]], dtype)
    loss, g = fl.cross_entropy(x, t, return_grad=True, reduction="none")
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(g))
    assert_close(loss, ref.cross_entropy(x, t, reduction="none"), dtype)
    # the label itself at -inf: infinite loss, as the math says
    assert fl.cross_entropy(x, np.array([1, 1]), reduction="none")[0] == np.inf


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [5, 300_000])
def test_nan_propagates(simd, dtype, C):
    x = np.zeros((3, C), dtype)
    x[1, C // 2] = np.nan
    loss = fl.cross_entropy(x, np.array([0, 0, 0]), reduction="none")
    assert np.isnan(loss[1]) and not np.isnan(loss[0]) and not np.isnan(loss[2])
    _, g = fl.cross_entropy(x, np.array([0, 0, 0]), return_grad=True)
    assert np.all(np.isnan(g[1])) and not np.any(np.isnan(g[0]))
    assert np.isnan(fl.cross_entropy(x, np.array([0, 0, 0])))
    assert np.isnan(fl.binary_cross_entropy_with_logits(x, np.zeros_like(x)))
    assert np.isnan(fl.logsumexp(x)[1])


# --- gradient buffers ----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_out_reuse_and_in_place(rng, dtype):
    x = _logits(rng, (20, 50), dtype)
    y = _labels(rng, 20, 50, ignore=True)
    loss, g = fl.cross_entropy(x, y, return_grad=True)
    buf = np.full_like(x, 7.0)
    loss2, g2 = fl.cross_entropy(x, y, return_grad=True, grad_out=buf)
    assert g2 is buf and loss2 == loss
    np.testing.assert_array_equal(buf, g)
    xc = x.copy()
    loss3, g3 = fl.cross_entropy(xc, y, return_grad=True, grad_out=xc, label_smoothing=0.0)
    assert g3 is xc and loss3 == loss
    np.testing.assert_array_equal(xc, g)  # logits overwritten by their gradient
    # in place with smoothing, weights and a long row (online path)
    xl = _logits(rng, (2, 250_000), np.float32)
    yl = np.array([3, 9])
    kw = dict(label_smoothing=0.1, weight=rng.uniform(0.5, 1, 250_000), z_loss=1e-3, return_grad=True)
    l4, g4 = fl.cross_entropy(xl, yl, **kw)
    l5, g5 = fl.cross_entropy(xl, yl, grad_out=xl, **kw)
    assert l4 == l5
    np.testing.assert_array_equal(g5, g4)
    # axis=1 with grad_out
    x3 = _logits(rng, (4, 6, 5), dtype)
    y3 = _labels(rng, (4, 5), 6)
    buf3 = np.empty_like(x3)
    _, g6 = fl.cross_entropy(x3, y3, axis=1, return_grad=True, grad_out=buf3)
    assert g6 is buf3
    assert_close(buf3, ref.cross_entropy(x3, y3, axis=1, return_grad=True)[1], dtype, grad=True)


def test_grad_out_checked(rng):
    x = _logits(rng, (4, 5), np.float32)
    y = np.array([0, 1, 2, 3])
    with pytest.raises(ValueError, match="grad_out has shape"):
        fl.cross_entropy(x, y, return_grad=True, grad_out=np.empty((5, 4), np.float32))
    with pytest.raises(TypeError, match="grad_out has dtype"):
        fl.cross_entropy(x, y, return_grad=True, grad_out=np.empty((4, 5), np.float64))
    with pytest.raises(ValueError, match="grad_out must be C-contiguous"):
        fl.cross_entropy(x, y, return_grad=True, grad_out=np.empty((4, 5), np.float32, order="F"))
    with pytest.raises(ValueError, match="return_grad"):
        fl.cross_entropy(x, y, grad_out=np.empty((4, 5), np.float32))
    ro = np.empty((4, 5), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        fl.cross_entropy(x, y, return_grad=True, grad_out=ro)
    with pytest.raises(ValueError, match="grad_out has shape"):
        fl.binary_cross_entropy_with_logits(x, x, return_grad=True, grad_out=np.empty(3, np.float32))


# --- bad input -------------------------------------------------------------------------------------

def test_bad_labels():
    x = np.zeros((4, 3))
    with pytest.raises(IndexError, match=r"target\[2\] = 3 is out of range"):
        fl.cross_entropy(x, np.array([0, 1, 3, 0]))
    with pytest.raises(IndexError, match=r"target\[1\] = -1"):
        fl.cross_entropy(x, np.array([0, -1, 0, 0]))
    with pytest.raises(IndexError, match=r"target\[\(1, 0\)\]"):
        fl.cross_entropy(np.zeros((2, 2, 3)), np.array([[0, 1], [7, 0]]))
    with pytest.raises(IndexError):
        fl.cross_entropy(x, np.array([0, 1, 2, -100]), ignore_index=-1)


@pytest.mark.parametrize("value,exc,match", [
    (2.0, TypeError, "ignore_index must be an integer"), ("5", TypeError, "ignore_index must be an integer"),
    (2 ** 63, ValueError, "does not fit int64"), (-2 ** 63 - 1, ValueError, "does not fit int64")])
def test_bad_ignore_index(value, exc, match):
    """A float or str ignore_index is not truncated into a label; one int64 cannot hold is
    a ValueError (it was an OverflowError from deep inside)."""
    x, y = np.zeros((4, 3)), np.array([0, 1, 2, 0])
    for call in [lambda: fl.cross_entropy(x, y, ignore_index=value),
                 lambda: fl.distillation_loss(x, x, target=y, ignore_index=value),
                 lambda: fl.linear_cross_entropy(x, np.zeros((5, 3)), y, ignore_index=value)]:
        with pytest.raises(exc, match=match):
            call()
    assert fl.cross_entropy(x, y, ignore_index=np.int32(2)) == fl.cross_entropy(x, y, ignore_index=2)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 1000])
def test_label_scan(simd, rng, n):
    """The one-pass label check (csrc label_scan) at every SIMD level, n around a vector:
    the first bad label's position (either end of the range, int64's extremes, the first
    of two) and the count of rows that are not ignore_index, which the mean divides by."""
    C = 5
    x = rng.standard_normal((n, C))
    for ignore in [-100, 0, C]:
        y = rng.integers(0, C, n)
        y[rng.random(n) < 0.3] = ignore
        counted = np.count_nonzero(y != ignore)
        total = fl.cross_entropy(x, y, ignore_index=ignore, reduction="sum")
        mean = fl.cross_entropy(x, y, ignore_index=ignore)
        assert (np.isnan(mean) if counted == 0 else mean == pytest.approx(total / counted, rel=1e-15))
        for bad in [C, -1, np.iinfo(np.int64).max, np.iinfo(np.int64).min]:
            if bad == ignore:
                continue
            for pos in sorted({0, n // 2, n - 1}):
                yb = y.copy()
                yb[pos] = bad
                if pos + 1 < n:
                    yb[-1] = C + 1                      # a later bad label is not the one named
                with pytest.raises(IndexError, match=rf"target\[{pos}\] = {bad} is out of range"):
                    fl.cross_entropy(x, yb, ignore_index=ignore)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(reduction="avg"), ValueError, "reduction"),
    (dict(label_smoothing=1.5), ValueError, "label_smoothing"),
    (dict(label_smoothing=-0.1), ValueError, "label_smoothing"),
    (dict(z_loss=-1.0), ValueError, "z_loss"),
    (dict(softcap=0.0), ValueError, "softcap"),
    (dict(softcap=-3.0), ValueError, "softcap"),
    (dict(weight=np.ones(4)), ValueError, "weight"),
    (dict(weight=np.ones((3, 1))), ValueError, "weight"),
    (dict(axis=2), ValueError, "axis"),
    (dict(axis=1.5), TypeError, "axis"),
    (dict(label_smoothing=float("nan")), ValueError, "label_smoothing"),
])
def test_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fl.cross_entropy(np.zeros((4, 3)), np.array([0, 1, 2, 0]), **kwargs)


def test_bad_shapes_and_types():
    with pytest.raises(ValueError, match="target labels have shape"):
        fl.cross_entropy(np.zeros((4, 3)), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="probability target has shape"):
        fl.cross_entropy(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(TypeError, match="logits must be real"):
        fl.cross_entropy(np.zeros((4, 3), complex), np.array([0, 1, 2, 0]))
    with pytest.raises(TypeError, match="logits"):
        fl.cross_entropy(np.array([[None, 1]], dtype=object), np.array([0]))
    with pytest.raises(TypeError, match="the dtype decides"):
        fl.cross_entropy(np.zeros((2, 3)), np.array([True, False]))
    # float labels (read from a CSV): the error says the dtype decides and how to convert
    with pytest.raises(ValueError, match=r"float64 with the shape of labels \(4,\).*astype"):
        fl.cross_entropy(np.zeros((4, 3)), np.array([0.0, 1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="shape of labels"):
        fl.cross_entropy(np.zeros((4, 3, 5)), np.zeros((4, 5), np.float32), axis=1)
    with pytest.raises(ValueError, match="no classes"):
        fl.cross_entropy(np.zeros((2, 0)), np.array([0, 0]))
    with pytest.raises(ValueError, match="x has no classes"):
        fl.softmax(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="axis=1 is out of range"):
        fl.logsumexp(np.float64(1.0), axis=1)      # a 0-d x is one class: axis 0, -1 or None
    with pytest.raises(ValueError, match="target has shape"):
        fl.binary_cross_entropy_with_logits(np.zeros((4, 3)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="pos_weight"):
        fl.binary_cross_entropy_with_logits(np.zeros((4, 3)), np.zeros((4, 3)), pos_weight=np.ones(4))
    with pytest.raises(ValueError, match="weight"):
        fl.binary_cross_entropy_with_logits(np.zeros((4, 3)), np.zeros((4, 3)), weight=np.ones((2, 3)))
    with pytest.raises(ValueError, match="gamma"):
        fl.sigmoid_focal_loss(np.zeros(3), np.zeros(3), gamma=-1)
    with pytest.raises(ValueError, match="reduction"):
        fl.sigmoid_focal_loss(np.zeros(3), np.zeros(3), reduction="max")


# --- binary cross-entropy and focal loss -----------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight_shape,pos_shape", [
    (None, None), ((), None), ((97,), (97,)), ((300, 1), None), (None, (1, 97)),
    ((300, 97), ()), ((1, 97), (300, 97)),
])
def test_bce_matrix(simd, rng, dtype, reduction, weight_shape, pos_shape):
    shape = (300, 97)  # > one kernel block: exercises the tiled periodic weights
    x = _logits(rng, shape, dtype)
    t = rng.uniform(0, 1, shape).astype(dtype)
    t[::4] = np.round(t[::4])
    kw = dict(reduction=reduction, return_grad=True,
              weight=None if weight_shape is None else rng.uniform(0, 2, weight_shape),
              pos_weight=None if pos_shape is None else rng.uniform(0.5, 3, pos_shape))
    check_loss_and_grads(fl.binary_cross_entropy_with_logits(x, t, **kw),
           ref.binary_cross_entropy_with_logits(x, t, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_extremes(simd, dtype):
    x = np.array([-1e4, -100, -30, -1e-8, 0, 1e-8, 30, 100, 1e4, -np.inf, np.inf], dtype)
    t = np.array([1, 0.5, 0, 1, 0.3, 0, 1, 0, 0.2, 0, 0], dtype)
    loss, g = fl.binary_cross_entropy_with_logits(x, t, reduction="none", return_grad=True)
    rl, rg = ref.binary_cross_entropy_with_logits(x, t, reduction="none", return_grad=True)
    assert_close(loss[:9], rl[:9], dtype)
    assert_close(g, rg, dtype, grad=True)
    # infinite logits: PyTorch's formula gives (1 - t) x + softplus(-x) = -inf + inf = NaN at -inf
    # and +inf at +inf with target 0; we match it
    assert np.isnan(loss[9]) and loss[10] == np.inf


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 2.0), (0.7, 0.0), (0.25, 0.5), (0.5, 3.0)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_focal_matrix(simd, rng, dtype, alpha, gamma, reduction):
    x = _logits(rng, (50, 13), dtype)
    t = (rng.uniform(size=(50, 13)) < 0.3).astype(dtype)
    kw = dict(alpha=alpha, gamma=gamma, reduction=reduction, return_grad=True)
    check_loss_and_grads(fl.sigmoid_focal_loss(x, t, **kw), ref.sigmoid_focal_loss(x, t, **kw), dtype)


@pytest.mark.parametrize("fn,kw", [
    (fl.binary_cross_entropy_with_logits, dict(weight=np.array([0.5, 2.0, 1.0]), pos_weight=np.array([3.0, 0.5, 1.0]))),
    (fl.binary_cross_entropy_with_logits, dict(reduction="sum")),
    (fl.sigmoid_focal_loss, dict(alpha=0.25, gamma=2.0)),
    (fl.sigmoid_focal_loss, dict(alpha=-1, gamma=0.5, reduction="sum")),
])
def test_sigmoid_finite_differences(rng, fn, kw):
    x = rng.standard_normal((4, 3)) * 2
    t = rng.uniform(0, 1, (4, 3))
    _, g = fn(x, t, return_grad=True, **kw)
    np.testing.assert_allclose(g, fd_grad(lambda z: fn(z, t, **kw), x), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_plain_vectors_match_the_full_path(simd, rng, dtype):
    """vexp skips its clamps and special cases for a vector wholly in its plain range: the
    same values next to a special lane (NaN, -inf, +inf, out of range: the full path in
    every vector, at any width) give the same bits."""
    from fastloss import _classification as _k
    hi = 709.0 if dtype == np.float64 else 88.0
    x = np.concatenate([rng.uniform(-80, hi, 4000), -rng.exponential(2, 4000), [0, hi, -1e-30]])
    x = x.astype(dtype)
    plain = np.empty_like(x)
    _k.vector_math("exp", x, plain)
    mixed = np.empty(2 * x.size, dtype)
    mixed[0::2] = np.resize(np.array([np.nan, -np.inf, np.inf, 1e4, -1e4], dtype), x.size)
    mixed[1::2] = x
    y = np.empty_like(mixed)
    _k.vector_math("exp", mixed, y)
    np.testing.assert_array_equal(y[1::2].copy().view(np.uint8), plain.view(np.uint8))
    np.testing.assert_allclose(plain, np.exp(x.astype(np.float64)), rtol=3 * np.finfo(dtype).eps)


# --- softmax family ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 10, 33, 250_000])
def test_softmax_family(simd, rng, dtype, C):
    x = _logits(rng, (3, C), dtype)
    assert_close(fl.logsumexp(x), ref.logsumexp(x), dtype)
    assert_close(fl.softmax(x), ref.softmax(x), dtype, grad=True)
    assert_close(fl.log_softmax(x), ref.log_softmax(x), dtype)
    val, g = fl.logsumexp(x, return_grad=True)
    assert_close(g, ref.softmax(x), dtype, grad=True)
    out = x.copy()
    assert fl.softmax(out, out=out) is out
    assert_close(out, ref.softmax(x), dtype, grad=True)
    out = x.copy()
    assert fl.log_softmax(out, out=out) is out
    assert_close(out, ref.log_softmax(x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [3, 10, 17, 33, 49, 64, 100, 255, 256, 257])
def test_softmax_blocked_rows(simd, rng, dtype, C):
    """Rows of up to 256 classes run in blocks of W rows (softmax_rows' blocked path; 257: the
    row path): the special rows (NaN, +inf, all -inf: the row path) among finite ones in
    one block, row counts around the vector widths, in place, and each row's bits the same
    wherever it sits in a block."""
    from helpers import special_rows
    x = np.concatenate([_logits(rng, (7, C), np.float64), special_rows(C),
                        _logits(rng, (20, C), np.float64)]).astype(dtype)
    with np.errstate(invalid="ignore"):
        want = [ref.logsumexp(x), ref.softmax(x), ref.log_softmax(x)]
    got = [fl.logsumexp(x), fl.softmax(x), fl.log_softmax(x)]
    for g, w, grad in zip(got, want, [False, True, False]):
        assert np.array_equal(np.isnan(g), np.isnan(w))
        ok = ~np.isnan(w)
        assert_close(np.where(ok, g, 0), np.where(ok, w, 0), dtype, grad=grad)
    for n in [1, 3, 16, 17]:
        for k in [0, 5, 11]:
            for f, full in zip([fl.logsumexp, fl.softmax, fl.log_softmax], got):
                np.testing.assert_array_equal(f(x[k:k + n]), full[k:k + n])
    for f, full in [(fl.softmax, got[1]), (fl.log_softmax, got[2])]:
        out = x.copy()
        assert f(out, out=out) is out
        np.testing.assert_array_equal(out, full)


def test_softmax_axis_and_scipy(rng):
    scipy_special = pytest.importorskip("scipy.special")
    x = rng.standard_normal((4, 5, 6))
    for axis in (0, 1, 2, -1):
        np.testing.assert_allclose(fl.logsumexp(x, axis=axis), scipy_special.logsumexp(x, axis=axis), rtol=1e-13)
        np.testing.assert_allclose(fl.softmax(x, axis=axis), scipy_special.softmax(x, axis=axis), rtol=1e-13)
        np.testing.assert_allclose(fl.log_softmax(x, axis=axis), scipy_special.log_softmax(x, axis=axis), rtol=1e-13)
    assert np.ndim(fl.logsumexp(np.arange(3.0))) == 0


# --- determinism --------------------------------------------------------------------------------------

def test_bitwise_identical_across_threads(rng):
    x = _logits(rng, (700, 1001), np.float32)          # 700k elements: many blocks
    y = _labels(rng, 700, 1001, ignore=True)
    t = rng.uniform(size=(700, 1001)).astype(np.float32)
    x4 = _logits(rng, (3, 5, 64, 130), np.float32)     # class axis 1, many column blocks
    y4 = _labels(rng, (3, 64, 130), 5, ignore=True)
    results = []
    for n in (1, 2, 3, 7):
        with fl.threads(n):
            results.append((fl.cross_entropy(x, y, return_grad=True, label_smoothing=0.1),
                            fl.cross_entropy(x4, y4, axis=1, return_grad=True),
                            fl.binary_cross_entropy_with_logits(x, t, return_grad=True,
                                                                pos_weight=np.linspace(1, 2, 1001)),
                            fl.sigmoid_focal_loss(x, t, return_grad=True)))
    for other in results[1:]:
        for (l0, g0), (l1, g1) in zip(results[0], other):
            assert l0.tobytes() == l1.tobytes()
            assert g0.tobytes() == g1.tobytes()


def test_concurrent_python_threads(rng):
    """Kernels release the GIL; concurrent calls are safe and give the same results."""
    from concurrent.futures import ThreadPoolExecutor
    xs = [_logits(rng, (300, 200), np.float32) for _ in range(6)]
    ys = [_labels(rng, 300, 200) for _ in range(6)]
    expected = [fl.cross_entropy(x, y, return_grad=True) for x, y in zip(xs, ys)]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(lambda a: fl.cross_entropy(a[0], a[1], return_grad=True), zip(xs, ys)))
    for (l0, g0), (l1, g1) in zip(expected, got):
        assert l0 == l1
        np.testing.assert_array_equal(g0, g1)


# --- PyTorch parity -------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted,smoothing,probs", list(itertools.product([False, True], [0.0, 0.15], [False, True])))
def test_cross_entropy_matches_pytorch(rng, reduction, weighted, smoothing, probs):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((8, 6, 3)) * 2          # PyTorch layout (N, C, d)
    if probs:
        t = np.moveaxis(rng.dirichlet(np.ones(6), (8, 3)), -1, 1)
    else:
        t = rng.integers(0, 6, (8, 3))
        t[0, 1] = t[5, 2] = -100
    w = rng.uniform(0.2, 2.0, 6) if weighted else None
    xt = torch.tensor(x, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(xt, torch.tensor(t), weight=None if w is None else torch.tensor(w),
                                           label_smoothing=smoothing, reduction=reduction)
    lt.sum().backward()
    loss, g = fl.cross_entropy(x, t, axis=1, weight=w, label_smoothing=smoothing, reduction=reduction,
                               return_grad=True)
    np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_bce_and_focal_match_pytorch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((16, 5)) * 3
    t = rng.uniform(size=(16, 5))
    w = rng.uniform(size=(16, 1))
    pw = rng.uniform(0.5, 2, 5)
    for reduction in REDUCTIONS:
        xt = torch.tensor(x, requires_grad=True)
        lt = F.binary_cross_entropy_with_logits(xt, torch.tensor(t), weight=torch.tensor(w),
                                                pos_weight=torch.tensor(pw), reduction=reduction)
        lt.sum().backward()
        loss, g = fl.binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=pw, reduction=reduction,
                                                      return_grad=True)
        np.testing.assert_allclose(loss, lt.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-10, atol=1e-15)

    def torchvision_focal(inputs, targets, alpha, gamma):     # torchvision.ops.sigmoid_focal_loss
        p = torch.sigmoid(inputs)
        ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = ce * ((1 - p_t) ** gamma)
        if alpha >= 0:
            loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
        return loss.mean()
    tb = (t > 0.5).astype(np.float64)
    for alpha, gamma in [(0.25, 2.0), (-1, 1.5)]:
        xt = torch.tensor(x, requires_grad=True)
        lt = torchvision_focal(xt, torch.tensor(tb), alpha, gamma)
        lt.backward()
        loss, g = fl.sigmoid_focal_loss(x, tb, alpha=alpha, gamma=gamma, return_grad=True)
        np.testing.assert_allclose(loss, lt.item(), rtol=1e-12)
        np.testing.assert_allclose(g, xt.grad.numpy(), rtol=1e-9, atol=1e-15)


def test_target_kind():
    """target_kind says what the target holds when its dtype cannot: float labels (from a
    CSV) and integer probabilities (one-hot) give the same results as the right dtype."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((6, 4))
    y = np.array([0, 3, -100, 1, 2, 3])
    want = fl.cross_entropy(x, y, return_grad=True)
    for t in (y.astype(np.float64), y.astype(np.float32), y.astype(np.float16)):
        got = fl.cross_entropy(x, t, target_kind="labels", return_grad=True)
        assert got[0] == want[0]
        np.testing.assert_array_equal(got[1], want[1])
    onehot = np.eye(4, dtype=np.int8)[y[y >= 0]]
    got = fl.cross_entropy(x[y >= 0], onehot, target_kind="probs", return_grad=True)
    want = fl.cross_entropy(x[y >= 0], onehot.astype(np.float64), return_grad=True)
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    assert fl.cross_entropy(x, y, target_kind="labels") == fl.cross_entropy(x, y)
    with pytest.raises(ValueError, match=r"target\[1\] = 2.5 is not a whole number"):
        fl.cross_entropy(x, np.array([0, 2.5, 1, 1, 0, 0]), target_kind="labels")
    with pytest.raises(ValueError, match=r"target\[0\] = nan is not a whole number"):
        fl.cross_entropy(x, np.array([np.nan, 2, 1, 1, 0, 0]), target_kind="labels")
    with pytest.raises(IndexError, match="out of range"):
        fl.cross_entropy(x, np.array([0, 4.0, 1, 1, 0, 0]), target_kind="labels")
    with pytest.raises(ValueError, match="target_kind must be one of"):
        fl.cross_entropy(x, y, target_kind="prob")
    with pytest.raises(ValueError, match="target_kind='labels'"):
        fl.cross_entropy(x, y.astype(np.float64))
