"""Classification losses: softmax cross-entropy, binary cross-entropy with logits,
sigmoid focal loss, and the softmax family (logsumexp, softmax, log_softmax).

Thin wrappers: check and coerce the arguments (fastloss/_checks.py), lay the
data out as C-contiguous rows or a flat array, call one fused kernel from
fastloss/_classification.pyx, reduce. See ../shared/DESIGN.md for the conventions.
"""
import math

import numpy as np

from . import _classification as _k
from . import _config
from ._checks import (as_float_array, as_labels, check_broadcast, check_class_axis, check_grad_out,
                      check_labels, check_real, check_reduction, reduce_total)

_config.register_kernels(_k)


# --- layout helpers -------------------------------------------------------------------

def _as_rows(x, axis):
    """x with the class axis moved last, as C-contiguous (N, C) rows (a view when x
    already is)."""
    xm = np.moveaxis(x, axis, -1)
    return np.ascontiguousarray(xm).reshape(-1, xm.shape[-1])


def _grad_rows(x, axis, n, grad_out, name="grad_out"):
    """(g2, finish): an (n, C) buffer the kernel writes, and a function turning it into
    the gradient of x's shape (written into grad_out when given)."""
    C = x.shape[axis]
    last = axis == x.ndim - 1
    if grad_out is not None:
        check_grad_out(grad_out, x.shape, x.dtype, name)
        if last:
            return grad_out.reshape(n, C), lambda g2: grad_out
    g2 = np.empty((n, C), dtype=x.dtype)
    moved = np.moveaxis(x, axis, -1).shape

    def finish(g2):
        g = np.moveaxis(g2.reshape(moved), -1, axis)
        if grad_out is None:
            return g
        grad_out[...] = g
        return grad_out
    return g2, finish


def _check_grad_request(return_grad, grad_out):
    if grad_out is not None and not return_grad:
        raise ValueError("grad_out is only used with return_grad=True")


def _periodic(w, shape, dtype, name):
    """A weight array broadcast against `shape`, as (tiled, period): element i of the
    flat broadcast result is tiled[i % period], and every run of ELEMENT_BLOCK entries
    starting at i % period lies inside `tiled` (so a kernel block reads it contiguously).
    A weight that broadcasts only over leading axes (e.g. per-class pos_weight of shape
    (C,)) stays small; anything else is materialised."""
    w = as_float_array(w, name, dtype)
    check_broadcast(w, shape, name)
    n = math.prod(shape)
    ws = (1,) * (len(shape) - w.ndim) + w.shape
    lead = 0
    while lead < len(shape) and ws[lead] == 1:
        lead += 1
    if ws[lead:] == tuple(shape[lead:]):
        base = np.ascontiguousarray(w).reshape(-1)
    else:
        base = np.ascontiguousarray(np.broadcast_to(w, shape)).reshape(-1)
    period = base.size
    if period >= n or period == 0:
        return base, max(period, 1)
    reps = -(-(_k.ELEMENT_BLOCK + period) // period)
    return np.tile(base, reps), period


# --- softmax cross-entropy ------------------------------------------------------------

def _weight_sum(class_weight, C):
    """sum of the class weights (C without weights): label smoothing's total weight."""
    return float(C) if class_weight is None else float(np.sum(class_weight, dtype=np.float64))


def label_rows(x2, labels, *, class_weight=None, ignore_index=-100, smoothing=0.0, z_loss=0.0,
               softcap=0.0, gscale=1.0, grad=None, n_threads=None):
    """Building block for row-wise softmax losses: per-row cross-entropy (float64,
    already weighted) of C-contiguous (N, C) rows x2 against checked int64 labels;
    the gradient of gscale * sum(rows) goes into grad ((N, C) of x2's dtype, may be x2)."""
    loss = np.empty(x2.shape[0], dtype=np.float64)
    nt = _config.threads_for(x2.size) if n_threads is None else n_threads
    _k.xent_label(x2, labels, grad, class_weight, _weight_sum(class_weight, x2.shape[1]),
                  ignore_index, smoothing, z_loss, softcap, gscale, loss, nt)
    return loss


def prob_rows(x2, t2, *, class_weight=None, smoothing=0.0, z_loss=0.0, softcap=0.0, gscale=1.0,
              grad=None, n_threads=None):
    """As label_rows, with (N, C) probability targets t2 of x2's dtype."""
    loss = np.empty(x2.shape[0], dtype=np.float64)
    nt = _config.threads_for(x2.size) if n_threads is None else n_threads
    _k.xent_prob(x2, t2, grad, class_weight, smoothing, z_loss, softcap, gscale, loss, nt)
    return loss


def cross_entropy(logits, target, *, axis=-1, weight=None, ignore_index=-100, label_smoothing=0.0,
                  z_loss=0.0, softcap=None, reduction="mean", return_grad=False, grad_out=None):
    """Softmax cross-entropy between logits and integer labels or probability targets.

    logits: (..., C, ...) with the classes along `axis` (-1: NumPy/JAX layout, so
    (B, T, V) LM logits work directly; 1: PyTorch's (N, C, d1, ...)).
    target: integer labels of logits' shape without `axis` (ignore_index marks rows
    that count for nothing), or float probabilities of logits' shape.
    weight: per-class weights (C,). label_smoothing: eps in [0, 1], PyTorch's rule.
    z_loss: adds z_loss * logsumexp(row)**2 per row (PaLM), weighted like the row.
    softcap: logits become softcap * tanh(logits / softcap) first (Gemma-2).
    reduction: "mean" (labels: sum(w_y * l) / sum(w_y) over counted rows, NaN when
    none counts; probabilities: over positions), "sum" or "none".
    return_grad: also return d(loss)/d(logits); grad_out: a C-contiguous buffer for it,
    which may be `logits` itself (overwritten in place).
    """
    x = as_float_array(logits, "logits")
    reduction = check_reduction(reduction)
    _check_grad_request(return_grad, grad_out)
    ax = check_class_axis(x, axis, "logits")
    C = x.shape[ax]
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    zl = check_real(z_loss, "z_loss", 0.0)
    cap = 0.0 if softcap is None else check_real(softcap, "softcap", 0.0, low_open=True)
    ignore_index = int(ignore_index)
    cw = None
    if weight is not None:
        cw = np.ascontiguousarray(as_float_array(weight, "weight", x.dtype))
        if cw.shape != (C,):
            raise ValueError(f"weight must have shape ({C},) (one per class), got {cw.shape}")

    t = np.asarray(target)
    row_shape = x.shape[:ax] + x.shape[ax + 1:]
    if t.dtype.kind in "iu":
        labels = as_labels(t)
        if labels.shape != row_shape:
            raise ValueError(f"target labels have shape {labels.shape}, expected {row_shape} "
                             f"(logits {x.shape} without axis {axis})")
        check_labels(labels, C, ignore_index)
        labels = labels.reshape(-1)
        counted = labels != ignore_index
        denom = (float(np.count_nonzero(counted)) if cw is None
                 else float(np.sum(cw[labels[counted]], dtype=np.float64)))
    elif t.dtype.kind == "f":
        probs = as_float_array(t, "target", x.dtype)
        if probs.shape != x.shape:
            raise ValueError(f"probability target has shape {probs.shape}, expected the logits' "
                             f"shape {x.shape}")
        labels = None
        denom = float(math.prod(row_shape))
    else:
        raise TypeError(f"target must be integer labels or float probabilities, got dtype {t.dtype}")

    gscale = 1.0
    if reduction == "mean":
        gscale = 1.0 / denom if denom != 0 else math.inf
    D = math.prod(x.shape[ax + 1:])
    if labels is not None and ax != x.ndim - 1 and cap == 0 and D >= STRIDED_MIN_POSITIONS:
        rows, grad = _label_strided(x, ax, labels, cw, ignore_index, eps, zl, gscale,
                                    return_grad, grad_out)
    else:
        x2 = _as_rows(x, ax)
        g2 = finish = None
        if return_grad:
            g2, finish = _grad_rows(x, ax, x2.shape[0], grad_out)
        if labels is not None:
            rows = label_rows(x2, labels, class_weight=cw, ignore_index=ignore_index, smoothing=eps,
                              z_loss=zl, softcap=cap, gscale=gscale, grad=g2)
        else:
            t2 = _as_rows(probs, ax)
            rows = prob_rows(x2, t2, class_weight=cw, smoothing=eps, z_loss=zl, softcap=cap,
                             gscale=gscale, grad=g2)
        grad = finish(g2) if return_grad else None
    if reduction == "none":
        loss = rows.astype(x.dtype).reshape(row_shape)
    else:
        loss = reduce_total(float(np.sum(rows)), denom, reduction, x.dtype)
    return (loss, grad) if return_grad else loss


# A class axis that is not the last is read in place (no transposing copy) when at least
# this many positions follow it: a vector then holds neighbouring positions.
STRIDED_MIN_POSITIONS = 16


def _label_strided(x, ax, labels, cw, ignore_index, eps, zl, gscale, return_grad, grad_out):
    """Per-position losses (float64, flat) and the gradient (or None) for integer labels
    with the classes on axis ax < ndim - 1, e.g. PyTorch's (N, C, H, W)."""
    A, C, D = math.prod(x.shape[:ax]), x.shape[ax], math.prod(x.shape[ax + 1:])
    x3 = np.ascontiguousarray(x).reshape(A, C, D)
    grad = None
    if return_grad:
        grad = (check_grad_out(grad_out, x.shape, x.dtype) if grad_out is not None
                else np.empty(x.shape, dtype=x.dtype))
    rows = np.empty((A, D), dtype=np.float64)
    _k.xent_label_strided(x3, labels.reshape(A, D), None if grad is None else grad.reshape(A, C, D),
                          cw, _weight_sum(cw, C), ignore_index, eps, zl, gscale, rows,
                          _config.threads_for(x.size))
    return rows.reshape(-1), grad


# --- sigmoid losses -------------------------------------------------------------------

def _elementwise_setup(logits, target, reduction, return_grad, grad_out):
    x = as_float_array(logits, "logits")
    reduction = check_reduction(reduction)
    _check_grad_request(return_grad, grad_out)
    t = as_float_array(target, "target", x.dtype)
    if t.shape != x.shape:
        raise ValueError(f"target has shape {t.shape}, expected the logits' shape {x.shape}")
    g = None
    if return_grad:
        g = (check_grad_out(grad_out, x.shape, x.dtype) if grad_out is not None
             else np.empty(x.shape, dtype=x.dtype))
    return x, t, reduction, g


def _elementwise_finish(x, total, lout, g, reduction, return_grad):
    loss = lout.reshape(x.shape) if reduction == "none" else reduce_total(total, x.size, reduction, x.dtype)
    return (loss, g) if return_grad else loss


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     reduction="mean", return_grad=False, grad_out=None):
    """PyTorch's binary_cross_entropy_with_logits (soft targets allowed, no clamping):
    l = weight * [(1 - t) x + (1 + (pos_weight - 1) t) softplus(-x)].
    weight broadcasts against logits, pos_weight too (from the right, e.g. (C,) per class);
    "mean" is over all elements (as PyTorch, also with weight)."""
    x, t, reduction, g = _elementwise_setup(logits, target, reduction, return_grad, grad_out)
    w = wp = pw = pwp = None
    if weight is not None:
        w, wp = _periodic(weight, x.shape, x.dtype, "weight")
    if pos_weight is not None:
        pw, pwp = _periodic(pos_weight, x.shape, x.dtype, "pos_weight")
    xf = np.ascontiguousarray(x).reshape(-1)
    tf = np.ascontiguousarray(t).reshape(-1)
    lout = np.empty(x.size, dtype=x.dtype) if reduction == "none" else None
    gscale = 1.0 / x.size if reduction == "mean" and x.size else 1.0
    total = _k.bce(xf, tf, w, wp or 1, pw, pwp or 1, lout,
                   g.reshape(-1) if g is not None else None, gscale, _config.threads_for(x.size))
    return _elementwise_finish(x, total, lout, g, reduction, return_grad)


def sigmoid_focal_loss(logits, target, *, alpha=0.25, gamma=2.0, reduction="mean",
                       return_grad=False, grad_out=None):
    """torchvision's sigmoid_focal_loss: alpha_t * bce(x, t) * (1 - p_t)**gamma with
    p = sigmoid(x), p_t = p t + (1 - p)(1 - t); alpha < 0 disables the alpha weighting."""
    x, t, reduction, g = _elementwise_setup(logits, target, reduction, return_grad, grad_out)
    a = check_real(alpha, "alpha", high=1.0)
    gm = check_real(gamma, "gamma", 0.0)
    xf = np.ascontiguousarray(x).reshape(-1)
    tf = np.ascontiguousarray(t).reshape(-1)
    lout = np.empty(x.size, dtype=x.dtype) if reduction == "none" else None
    gscale = 1.0 / x.size if reduction == "mean" and x.size else 1.0
    total = _k.focal(xf, tf, a, gm, lout, g.reshape(-1) if g is not None else None, gscale,
                     _config.threads_for(x.size))
    return _elementwise_finish(x, total, lout, g, reduction, return_grad)


# --- softmax family -------------------------------------------------------------------

def _softmax_call(x, axis, out, log_out, want_out):
    x = as_float_array(x, "x")
    ax = check_class_axis(x, axis, "x")
    x2 = _as_rows(x, ax)
    n = x2.shape[0]
    lse = np.empty(n, dtype=np.float64)
    o2 = finish = None
    if want_out:
        o2, finish = _grad_rows(x, ax, n, out, "out")
    _k.softmax_rows(x2, o2, log_out, lse, _config.threads_for(x2.size))
    return x, ax, lse, (finish(o2) if want_out else None)


def logsumexp(x, *, axis=-1, return_grad=False, grad_out=None):
    """log(sum(exp(x))) along axis, without overflow; the gradient is softmax(x)."""
    _check_grad_request(return_grad, grad_out)
    xa, ax, lse, g = _softmax_call(x, axis, grad_out, False, return_grad)
    val = lse.astype(xa.dtype).reshape(xa.shape[:ax] + xa.shape[ax + 1:])
    val = val[()] if val.ndim == 0 else val
    return (val, g) if return_grad else val


def softmax(x, *, axis=-1, out=None):
    """exp(x - logsumexp(x)) along axis; out: a C-contiguous buffer (may be x)."""
    return _softmax_call(x, axis, out, False, True)[3]


def log_softmax(x, *, axis=-1, out=None):
    """x - logsumexp(x) along axis; out: a C-contiguous buffer (may be x)."""
    return _softmax_call(x, axis, out, True, True)[3]
