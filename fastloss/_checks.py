"""Input validation and coercion shared by every public function.

Everything here runs before any kernel: a bad argument raises a ValueError,
TypeError or IndexError naming it, and the kernels only ever see arrays whose
shapes, dtypes and index ranges are known to be right.
"""
import functools
import inspect
import math
import operator

import numpy as np

from ._classification import label_scan
from ._config import threads_for
from ._runtime import any_negative

REDUCTIONS = ("mean", "sum", "none")


def half_kind(dtype):
    """The half-precision kind of a dtype for the kernels (fastloss/_half.pxd): 0 float16,
    1 bfloat16 (ml_dtypes', told by its name, so ml_dtypes is never imported here), None
    for any other dtype."""
    if dtype.itemsize != 2:      # first: dtype.name is slow, and this runs on every call
        return None
    if dtype == np.float16:
        return 0
    return 1 if dtype.name == "bfloat16" else None


def half_bits(a):
    """A half array (or None) as its uint16 bits, what the half kernels take."""
    return None if a is None else a.view(np.uint16)


def compute_dtype(x):
    """The dtype a kernel computes x's losses in (and the loss's dtype): float32 for half."""
    return np.dtype(np.float32) if half_kind(x.dtype) is not None else x.dtype


def as_float_array(a, name, dtype=None, half=False):
    """`a` as a float32/float64 array. float32/float64 keep their dtype, float16 and bfloat16
    become float32 (with half, they are kept: a kernel with a half path reads them), other
    real dtypes (ints, bool) float64; complex/object/strings: TypeError. With dtype, the
    result has that dtype instead."""
    arr = np.asarray(a)
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    if kind not in "fiub" and half_kind(arr.dtype) is None:
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if dtype is not None:
        return arr.astype(dtype, copy=False)
    if arr.dtype in (np.float32, np.float64):
        return arr
    if half_kind(arr.dtype) is not None:
        return arr if half else arr.astype(np.float32)
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


def whole_labels(target, name="target"):
    """Class labels held in a float array (read from CSV, say) as int64: each a whole
    number, else ValueError naming the first that is not."""
    t = np.asarray(target)
    if t.dtype.kind in "iu":
        return t
    if t.dtype.kind not in "fb" and half_kind(t.dtype) is None:
        raise TypeError(f"{name} must hold class labels (integers, or whole numbers in a float "
                        f"array), got dtype {t.dtype}")
    f = t.astype(np.float64)
    bad = ~np.isfinite(f) | (f != np.round(f)) | (np.abs(f) > 2.0**62)
    if bad.any():
        i = np.unravel_index(int(np.argmax(bad)), t.shape)
        pos = tuple(int(j) for j in i)
        raise ValueError(f"{name}[{pos[0] if len(pos) == 1 else pos}] = {f[i]} is not a whole "
                         f"number (target_kind='labels')")
    return f.astype(np.int64)


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


def check_real(value, name, low=None, high=None, low_open=False, finite=False):
    """A Python float, not NaN, within [low, high] ((low, high] with low_open); with
    finite, also not infinite."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if v != v:
        raise ValueError(f"{name} must not be NaN")
    if finite and v in (math.inf, -math.inf):
        raise ValueError(f"{name} must be finite, got {v}")
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



def check_temperature(temperature, name="temperature"):
    """A softmax temperature: finite and > 0."""
    return check_real(temperature, name, 0.0, low_open=True, finite=True)


def check_choice(value, name, choices):
    """value, which must be one of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_grad_request(return_grad, grad_out, grad_wrt=None):
    """grad_out (and grad_wrt, where a function takes it) only with return_grad=True."""
    for name, value in (("grad_out", grad_out), ("grad_wrt", grad_wrt)):
        if value is not None and not return_grad:
            raise ValueError(f"{name} is only used with return_grad=True")


def check_grad_outs(grad_out, names):
    """grad_out as a list with one entry (None or a buffer) per gradient: a function with
    one gradient takes a bare array (or a 1-tuple), one with several a tuple of that
    length. The buffers themselves are checked by check_grad_out."""
    k = len(names)
    if grad_out is None:
        return [None] * k
    if isinstance(grad_out, (tuple, list)):
        if len(grad_out) == k:
            return list(grad_out)
    elif k == 1:
        return [grad_out]
    what = (f"one array (the gradient of {names[0]})" if k == 1 else
            f"a tuple of {k} arrays (one per gradient: {', '.join(names)})")
    raise ValueError(f"grad_out must be {what}, or None")


def check_same_shape(a, a_name, b, b_name, note=""):
    """ValueError unless b has a's shape exactly (no broadcasting)."""
    if b.shape != a.shape:
        raise ValueError(f"{b_name} has shape {b.shape}, expected the shape of {a_name} {a.shape}"
                         + (f" ({note})" if note else ""))


def check_matrix(a, name, min_rows=0):
    """a as a float array (as_float_array) that is 2-D (n_samples, n_features) with at
    least min_rows rows."""
    x = as_float_array(a, name)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {x.shape}")
    if x.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} rows, got {x.shape[0]}")
    return x


def check_linear_layer(x, weight, bias, dtype):
    """A linear layer applied to x's last axis: weight (V, D) with V >= 1 and D matching x,
    bias None or (V,) (returned as an array of dtype)."""
    if x.ndim == 0:
        raise ValueError("input must have at least one dimension (the features)")
    D = x.shape[-1]
    if weight.ndim != 2 or weight.shape[1] != D:
        raise ValueError(f"linear_weight must have shape (V, {D}) for input of {D} features, "
                         f"got {weight.shape}")
    V = weight.shape[0]
    if V == 0:
        raise ValueError("linear_weight has no rows (no classes)")
    if bias is None:
        return None
    b = as_float_array(bias, "linear_bias", dtype)
    if b.shape != (V,):
        raise ValueError(f"linear_bias must have shape ({V},) (one per class), got {b.shape}")
    return b


def check_class_weight(weight, n_classes, dtype, name="weight"):
    """Per-class weights as a C-contiguous (C,) array of dtype (None stays None)."""
    if weight is None:
        return None
    cw = np.ascontiguousarray(as_float_array(weight, name, dtype))
    if cw.shape != (n_classes,):
        raise ValueError(f"{name} must have shape ({n_classes},) (one per class), got {cw.shape}")
    return cw


def check_ignore_index(value, name="ignore_index"):
    """An integer (Python or NumPy, not float or str) that int64 holds, as int: the kernels
    compare int64 labels with it."""
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None
    if not -(1 << 63) <= v < (1 << 63):
        raise ValueError(f"{name} = {v} does not fit int64, which labels are compared in")
    return v


def check_label_array(target, row_shape, n_classes, ignore_index, name="target", against="",
                      where=None):
    """Integer labels of shape row_shape, each in [0, n_classes) or ignore_index, as a flat
    int64 array, and the number of rows that count (label != ignore_index and, with `where`
    (boolean, row_shape), where True; the others' labels become ignore_index). One pass of
    a C kernel: a handful of NumPy passes took 50 us of a 390 us cross-entropy of 65536 rows."""
    labels = as_labels(target, name)
    if labels.shape != tuple(row_shape):
        raise ValueError(f"{name} labels have shape {labels.shape}, expected {tuple(row_shape)}"
                         + (f" ({against})" if against else ""))
    labels = labels.reshape(-1)
    if where is not None and not where.all():
        where = np.broadcast_to(where, row_shape).reshape(-1)
        labels = np.where(where, labels, ignore_index)
    counted, i = label_scan(labels, n_classes, ignore_index)
    if i >= 0:
        pos = tuple(int(j) for j in np.unravel_index(i, row_shape))
        raise IndexError(f"{name}[{pos if len(pos) != 1 else pos[0]}] = {labels[i]} is out of "
                         f"range for {n_classes} classes (expected 0 <= label < {n_classes} "
                         f"or ignore_index={ignore_index})")
    return labels, counted


def check_covariance(cov, name):
    """Symmetric (to a few ulps of its largest entry), NaN-free covariance, float64."""
    if np.isnan(cov).any():
        raise ValueError(f"{name} contains NaN")
    if not np.isfinite(cov).all():
        raise ValueError(f"{name} contains infinite entries (not symmetric positive definite)")
    c = cov.astype(np.float64)
    if c.size:
        scale = np.max(np.abs(c), axis=(-2, -1))
        asym = np.max(np.abs(c - np.swapaxes(c, -1, -2)), axis=(-2, -1))
        tol = 64 * np.finfo(cov.dtype).eps * scale
        if np.any(asym > tol):
            raise ValueError(f"{name} is not symmetric (max |cov - cov^T| = {float(np.max(asym)):.3g})")
    return 0.5 * (c + np.swapaxes(c, -1, -2))


def check_var_layout(v, shape):
    """How var of shape v.shape applies to an input of `shape` (PyTorch's rules):
    "full" (same shape), "scalar", "row" (one per last-axis row: shape[:-1] or (..., 1)),
    or ("axis", i) (size 1 along axis i only, other than the last)."""
    if v.shape == shape:
        return "full"
    if v.ndim == 0:
        return "scalar"
    if len(shape) >= 1 and v.shape == shape[:-1]:
        return "row"
    if v.ndim == len(shape):
        diff = [i for i, (a, b) in enumerate(zip(shape, v.shape)) if a != b]
        if len(diff) == 1 and v.shape[diff[0]] == 1:
            return "row" if diff[0] == len(shape) - 1 else ("axis", diff[0])
    raise ValueError(f"var has shape {v.shape}, which does not fit input of shape {shape}: "
                     f"expected {shape}, {shape[:-1]}, the input's shape with one axis of size "
                     f"1, or a scalar")


def check_nonnegative(a, name, what):
    """ValueError when an entry of the float32/float64 array a is below 0 (NaN is not). A
    C-contiguous a is read once on the kernels' threads when they are several (any_negative:
    32 MB of var, Zen 3 VM, 2026-12-03: 0.7-1.2 ms on two threads, np.min 1.3 ms on one);
    else np.min reads it (as fast on one thread), and only a NaN minimum, which would hide a
    negative entry, looks again."""
    if not a.size:
        return
    nt = threads_for(a.size)
    if a.flags.c_contiguous and nt > 1:
        bad = any_negative(a, nt)
    else:
        m = np.min(a)
        bad = m < 0 or (m != m and np.any(a < 0))
    if bad:
        raise negative_entries(name, what)


def negative_entries(name, what):
    """check_nonnegative's error, for kernels that look for negative entries themselves."""
    return ValueError(f"{name} has negative entries ({what})")


def check_names(value, name, allowed):
    """A tuple of distinct names from `allowed`, in allowed's order (a str is one name)."""
    names = (value,) if isinstance(value, str) else value
    try:
        chosen = set(names)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of names from {tuple(allowed)}, got {value!r}") from None
    unknown = sorted(str(n) for n in chosen if n not in allowed)
    if unknown:
        raise ValueError(f"{name} names {unknown}, expected names from {tuple(allowed)}")
    return tuple(n for n in allowed if n in chosen)


# Work bound of the exact overlap test (np.shares_memory); past it the answer counts as
# overlapping. Layouts that reach it are far from anything a wrapper is given.
OVERLAP_MAX_WORK = 1 << 16


def check_no_overlap(outputs, inputs, in_place=()):
    """ValueError naming both when an output shares memory with an input or with another
    output. outputs, inputs: (name, array) pairs; None arrays are skipped. in_place: names
    of inputs an output may be exactly (same start, shape, strides, dtype), where the
    kernel reads each element before it writes it. The bounds test decides when the
    extents are disjoint, the exact test otherwise (giving up counts as overlapping)."""
    outs = [(n, a) for n, a in outputs if a is not None]
    ins = [(n, a) for n, a in inputs if a is not None]
    for i, (name, out) in enumerate(outs):
        for other_name, other in outs[i + 1:] + ins:
            if not np.may_share_memory(out, other):
                continue
            if other_name in in_place and _same_memory(out, other):
                continue
            try:
                shared = np.shares_memory(out, other, max_work=OVERLAP_MAX_WORK)
            except np.exceptions.TooHardError:
                shared = True
            if shared:
                allowed = f" (it may be exactly {' or '.join(in_place)})" if in_place else ""
                raise ValueError(f"{name} must not overlap {other_name}{allowed}")


def grad_out_apart(*own):
    """Decorator of a public loss: its grad_out (an array, or a tuple of arrays and None) must
    not share memory with any array argument as the caller gave it besides `own`: targets,
    weights, labels and where= masks, checked here once for every path (the masked and
    labelled ones copy them). ValueError naming both, before anything runs. `own`, the
    inputs with gradients, the function checks itself, after converting them, with the
    outputs against each other and its exact in-place uses."""
    def wrap(fn):
        names = list(inspect.signature(fn).parameters)
        skip = frozenset(own) | {"grad_out"}

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            go = kwargs.get("grad_out")
            if go is not None:
                bufs = go if isinstance(go, tuple) else (go,)
                for name, a in (*zip(names, args), *kwargs.items()):
                    if isinstance(a, np.ndarray) and name not in skip:
                        for i, b in enumerate(bufs):
                            # the bounds test first (cheap), the exact one in check_no_overlap
                            if isinstance(b, np.ndarray) and np.may_share_memory(a, b):
                                check_no_overlap(grad_out_names(bufs)[i:i + 1], [(name, a)])
            return fn(*args, **kwargs)
        return checked
    return wrap


def grad_out_names(buffers):
    """(name, buffer) pairs for check_no_overlap, named as grad_out's entries: grad_out for
    one gradient, grad_out[i] for several."""
    return [("grad_out" if len(buffers) == 1 else f"grad_out[{i}]", b) for i, b in enumerate(buffers)]


def _same_memory(a, b):
    """a and b view exactly the same elements in the same order (strides of length-1 axes
    do not matter)."""
    return (a.dtype == b.dtype and a.shape == b.shape
            and all(s == t for s, t, n in zip(a.strides, b.strides, a.shape) if n > 1)
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])
