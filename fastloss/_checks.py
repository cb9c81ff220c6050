"""Input validation and coercion shared by every public function.

Everything here runs before any kernel: a bad argument raises a ValueError,
TypeError or IndexError naming it, and the kernels only ever see arrays whose
shapes, dtypes and index ranges are known to be right.
"""
import operator

import numpy as np

REDUCTIONS = ("mean", "sum", "none")


def as_float_array(a, name, dtype=None):
    """`a` as a float32/float64 array. float32/float64 keep their dtype, float16 becomes
    float32, other real dtypes (ints, bool) float64; complex/object/strings: TypeError.
    With dtype, the result has that dtype instead."""
    arr = np.asarray(a)
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    if kind not in "fiub":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype in (np.float32, np.float64):
        return arr
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    return arr.astype(np.float64)   # ints, bool, longdouble


def result_dtype(*arrays):
    """Compute dtype of several float inputs: float64 if any is float64."""
    return np.result_type(*[a.dtype for a in arrays])


def as_labels(target, name="target"):
    """Integer class labels as an int64 array."""
    arr = np.asarray(target)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise IndexError(f"{name} has a label larger than int64 can hold")
    return np.asarray(arr, dtype=np.int64, order="C")


def check_labels(labels, n_classes, ignore_index, name="target"):
    """IndexError naming the first position whose label is outside [0, n_classes)
    and is not ignore_index."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= n_classes))
    if bad.any():
        pos = np.unravel_index(int(np.argmax(bad)), labels.shape)
        pos = tuple(int(i) for i in pos)
        raise IndexError(f"{name}[{pos if len(pos) != 1 else pos[0]}] = {labels[pos]} is out of "
                         f"range for {n_classes} classes (expected 0 <= label < {n_classes} "
                         f"or ignore_index={ignore_index})")


def check_reduction(reduction, batchmean=False):
    """One of "mean", "sum", "none" ("batchmean" is accepted as "mean" where allowed)."""
    if batchmean and reduction == "batchmean":
        return "mean"
    allowed = REDUCTIONS + (("batchmean",) if batchmean else ())
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(f"reduction must be one of {allowed}, got {reduction!r}")
    return reduction


def check_axis(axis, ndim, name="axis"):
    """axis as a non-negative int < ndim."""
    try:
        a = operator.index(axis)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {axis!r}") from None
    if not -ndim <= a < ndim:
        raise ValueError(f"{name}={a} is out of range for an array of {ndim} dimension(s)")
    return a % ndim


def check_class_axis(x, axis, name):
    """The class axis of x as a non-negative int; ValueError for a 0-d x or no classes."""
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the classes)")
    ax = check_axis(axis, x.ndim)
    if x.shape[ax] == 0:
        raise ValueError(f"{name} has no classes along axis {axis}")
    return ax


def check_real(value, name, low=None, high=None, low_open=False):
    """A finite Python float within [low, high] ((low, high] with low_open)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if v != v:
        raise ValueError(f"{name} must not be NaN")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be <= {high}, got {v}")
    return v


def check_grad_out(grad_out, shape, dtype, name="grad_out"):
    """A preallocated gradient buffer: writeable, C-contiguous, of the exact shape and dtype."""
    if not isinstance(grad_out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(grad_out).__name__}")
    if grad_out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {grad_out.shape}, expected {tuple(shape)}")
    if grad_out.dtype != dtype:
        raise TypeError(f"{name} has dtype {grad_out.dtype}, expected {np.dtype(dtype)}")
    if not grad_out.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not grad_out.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return grad_out


def check_broadcast(arr, shape, name, against="logits"):
    """ValueError unless arr broadcasts to `shape` without enlarging it."""
    try:
        out = np.broadcast_shapes(arr.shape, tuple(shape))
    except ValueError:
        out = None
    if out != tuple(shape):
        raise ValueError(f"{name} of shape {arr.shape} does not broadcast to the shape of "
                         f"{against} {tuple(shape)}")


def reduce_total(total, count, reduction, dtype):
    """A reduced scalar of the compute dtype; mean of zero items is NaN (as PyTorch)."""
    if reduction == "sum":
        return dtype.type(total)
    with np.errstate(invalid="ignore", divide="ignore"):
        return dtype.type(np.float64(total) / np.float64(count))
