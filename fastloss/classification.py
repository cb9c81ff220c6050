"""Classification losses: softmax cross-entropy, binary cross-entropy with logits,
sigmoid focal loss, and the softmax family (logsumexp, softmax, log_softmax).

Thin wrappers over the shared layer (ARCHITECTURE.md): validate every argument
(_checks.py), lay the data out as rows or flat arrays (_layout.py), call one fused
kernel of _classification.pyx (row cross-entropy through _xent.py), reduce
(_reduce.py).
"""
import math

import numpy as np

from . import _classification as _k
from . import _config
from ._checks import (as_float_array, check_axis, check_broadcast, check_class_axis,
                      check_class_weight, check_grad_out, check_grad_outs, check_grad_request,
                      check_linear_layer, check_names, check_no_overlap, check_real,
                      check_reduction, check_same_shape, result_dtype)
from ._layout import as_rows, flat_full, grad_buffers, grad_rows, periodic
from ._reduce import grad_scale, reduce_elements, reduce_rows
from ._xent import label_rows, prepare_labels, prob_rows, weight_sum

__all__ = ["cross_entropy", "linear_cross_entropy", "binary_cross_entropy_with_logits",
           "sigmoid_focal_loss", "logsumexp", "softmax", "log_softmax"]

_config.register_kernels(_k)


# --- softmax cross-entropy ------------------------------------------------------------

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
    check_grad_request(return_grad, grad_out)
    grad_out = check_grad_outs(grad_out, ["logits"])[0]
    ax = check_class_axis(x, axis, "logits")
    C = x.shape[ax]
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    zl = check_real(z_loss, "z_loss", 0.0)
    cap = 0.0 if softcap is None else check_real(softcap, "softcap", 0.0, low_open=True)
    ignore_index = int(ignore_index)
    cw = check_class_weight(weight, C, x.dtype)
    t = np.asarray(target)
    row_shape = x.shape[:ax] + x.shape[ax + 1:]
    if t.dtype.kind in "iu":
        labels, denom = prepare_labels(t, row_shape, C, ignore_index, cw,
                                       against=f"logits {x.shape} without axis {axis}")
    elif t.dtype.kind == "f":
        probs = as_float_array(t, "target", x.dtype)
        check_same_shape(x, "logits", probs, "probability target")
        labels = None
        denom = float(math.prod(row_shape))
    else:
        raise TypeError(f"target must be integer labels or float probabilities, got dtype {t.dtype}")

    check_no_overlap([("grad_out", grad_out)],
                     [("logits", x), ("target", probs if labels is None else labels), ("weight", cw)],
                     in_place=("logits",))
    gscale = grad_scale(reduction, denom)
    D = math.prod(x.shape[ax + 1:])
    if labels is not None and ax != x.ndim - 1 and cap == 0 and D >= STRIDED_MIN_POSITIONS:
        rows, grad = _label_strided(x, ax, labels, cw, ignore_index, eps, zl, gscale,
                                    return_grad, grad_out)
    else:
        x2 = as_rows(x, ax)
        g2 = finish = None
        if return_grad:
            g2, finish = grad_rows(x, ax, grad_out)
        if labels is not None:
            rows = label_rows(x2, labels, class_weight=cw, ignore_index=ignore_index, smoothing=eps,
                              z_loss=zl, softcap=cap, gscale=gscale, grad=g2)
        else:
            rows = prob_rows(x2, as_rows(probs, ax), class_weight=cw, smoothing=eps, z_loss=zl,
                             softcap=cap, gscale=gscale, grad=g2)
        grad = finish(g2) if return_grad else None
    loss = reduce_rows(rows, row_shape, denom, reduction, x.dtype)
    return (loss, grad) if return_grad else loss


# A class axis that is not the last is read in place (no transposing copy) when at least
# this many positions follow it: a vector then holds neighbouring positions.
STRIDED_MIN_POSITIONS = 16


def _label_strided(x, ax, labels, cw, ignore_index, eps, zl, gscale, return_grad, grad_out):
    """Per-position losses (float64, flat) and the gradient (or None) for integer labels
    with the classes on axis ax < ndim - 1, e.g. PyTorch's (N, C, H, W)."""
    A, C, D = math.prod(x.shape[:ax]), x.shape[ax], math.prod(x.shape[ax + 1:])
    x3 = np.ascontiguousarray(x).reshape(A, C, D)
    grad = grad_buffers(grad_out, ["logits"], x.shape, x.dtype)[0] if return_grad else None
    rows = np.empty((A, D), dtype=np.float64)
    _k.xent_label_strided(x3, labels.reshape(A, D), None if grad is None else grad.reshape(A, C, D),
                          cw, weight_sum(cw, C), ignore_index, eps, zl, gscale, rows,
                          _config.threads_for(x.size))
    return rows.reshape(-1), grad


# --- the language-model head and its cross-entropy ------------------------------------

# Default budget of linear_cross_entropy's block of logits (rows x V x itemsize).
LINEAR_BLOCK_BYTES = 64 << 20
# Rows of the weight gradient updated per product when it accumulates over token blocks:
# a (rows, D) product of this many bytes stays in the last-level cache until it is added.
_ACCUMULATE_BYTES = 4 << 20
_LINEAR_GRADS = ("input", "linear_weight", "linear_bias")


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                         ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None,
                         reduction="mean", return_grad=False, grad_out=None, grad_wrt=None,
                         block_bytes=None):
    """cross_entropy(input @ linear_weight.T + linear_bias, target, ...) without the
    (N, V) logits: PyTorch's F.linear_cross_entropy, plus z_loss and softcap.

    input: (..., D); linear_weight: (V, D); linear_bias: (V,) or None; target: integer
    labels of shape input.shape[:-1]; weight, ignore_index, label_smoothing, z_loss,
    softcap, reduction: as cross_entropy. The tokens go in blocks whose logits take at
    most block_bytes (default LINEAR_BLOCK_BYTES): per block one product for the logits,
    the fused cross-entropy kernel writing the logits' gradient in place, and the
    products back to the input and the weight (BLAS through NumPy's matmul); without
    gradients (and softcap) the classes are read in chunks instead, each chunk's
    log-sum-exp taken relative to its max, so each block of tokens reads the weight once.
    return_grad: (loss, grads), the gradients named by grad_wrt in argument order;
    grad_wrt: names from ("input", "linear_weight", "linear_bias"), by default the
    input, the weight and (when given) the bias; a frozen head asks for ("input",) and
    skips the weight-gradient product. grad_out: one buffer per requested gradient.
    """
    h = as_float_array(input, "input")
    w = as_float_array(linear_weight, "linear_weight")
    dtype = result_dtype(h, w)
    reduction = check_reduction(reduction)
    check_grad_request(return_grad, grad_out, grad_wrt)
    b = check_linear_layer(h, w, linear_bias, dtype)
    V, D = w.shape
    cw = check_class_weight(weight, V, dtype)
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    zl = check_real(z_loss, "z_loss", 0.0)
    cap = 0.0 if softcap is None else check_real(softcap, "softcap", 0.0, low_open=True)
    ignore_index = int(ignore_index)
    row_shape = h.shape[:-1]
    labels, denom = prepare_labels(target, row_shape, V, ignore_index, cw,
                                   against=f"input {h.shape} without its last axis")
    budget = (LINEAR_BLOCK_BYTES if block_bytes is None
              else int(check_real(block_bytes, "block_bytes", V * dtype.itemsize, finite=True)))
    R = budget // (V * dtype.itemsize)
    wrt = ()
    if return_grad:
        given = _LINEAR_GRADS if b is not None else _LINEAR_GRADS[:2]
        wrt = given if grad_wrt is None else check_names(grad_wrt, "grad_wrt", given)
    shapes = {"input": h.shape, "linear_weight": (V, D), "linear_bias": (V,)}
    grads = dict(zip(wrt, grad_buffers(grad_out, list(wrt), [shapes[n] for n in wrt], dtype)))
    if grad_out is not None:
        check_no_overlap([(f"grad_out[{i}]", grads[n]) for i, n in enumerate(wrt)],
                         [("input", h), ("linear_weight", w), ("linear_bias", b), ("target", labels),
                          ("weight", cw)])

    h2 = np.ascontiguousarray(h, dtype=dtype).reshape(-1, D)
    W = np.ascontiguousarray(w, dtype=dtype)
    if not return_grad and cap == 0:
        rows = _linear_xent_loss(h2, W, b, labels, cw, ignore_index, eps, zl, budget)
    else:
        rows = _linear_xent_blocks(h2, W, b, labels, cw, ignore_index, eps, zl, cap,
                                   grad_scale(reduction, denom), grads, min(R, max(h2.shape[0], 1)))
    loss = reduce_rows(rows, row_shape, denom, reduction, dtype)
    return (loss, tuple(grads[n] for n in wrt)) if return_grad else loss


def _linear_xent_blocks(h2, W, b, labels, cw, ignore_index, eps, zl, cap, gscale, grads, R):
    """Per-token losses of the logits h2 @ W.T + b, R tokens at a time; the requested
    gradients (dict of buffers) are written as the blocks go."""
    N, D = h2.shape
    V = W.shape[0]
    rows = np.empty(N, dtype=np.float64)
    S = np.empty((R, V), dtype=W.dtype)
    g_in, g_w, g_b = (grads.get(n) for n in _LINEAR_GRADS)
    g_in = None if g_in is None else g_in.reshape(N, D)
    b_sum = np.zeros(V, dtype=np.float64) if g_b is not None else None
    if g_w is not None and N == 0:
        g_w[...] = 0
    for r0 in range(0, N, R):
        r1 = min(N, r0 + R)
        Sb, hb = S[:r1 - r0], h2[r0:r1]
        np.matmul(hb, W.T, out=Sb)
        if b is not None:
            Sb += b
        rows[r0:r1] = label_rows(Sb, labels[r0:r1], class_weight=cw, ignore_index=ignore_index,
                                 smoothing=eps, z_loss=zl, softcap=cap, gscale=gscale,
                                 grad=Sb if grads else None,
                                 n_threads=_config.threads_after_blas(Sb.size))
        if g_in is not None:
            np.matmul(Sb, W, out=g_in[r0:r1])
        if g_w is not None:
            if r0 == 0:
                np.matmul(Sb.T, hb, out=g_w)
            else:
                _add_product(g_w, Sb.T, hb)
        if b_sum is not None:
            b_sum += np.sum(Sb, axis=0, dtype=np.float64)
    if g_b is not None:
        g_b[...] = b_sum
    return rows


# Classes per logits chunk of the loss-only path: wide enough for an efficient product,
# and the tokens of one chunk of logits (the budget over this width) share each read of
# the weight.
_LOSS_CHUNK_CLASSES = 8192


def _linear_xent_loss(h2, W, b, labels, cw, ignore_index, eps, zl, budget):
    """Per-token losses without gradients, a chunk of classes at a time, so each block of
    tokens reads the weight once and the products stay wide. Each chunk's logits are
    shifted by their row max before its log-sum-exp (and smoothing sum), and the chunks
    combine relative to the largest max: the row kernels' loss formula then never
    subtracts two large numbers (lse - x_y would, at large logits)."""
    N, V = h2.shape[0], W.shape[0]
    Vc = max(1, min(V, _LOSS_CHUNK_CLASSES, budget // W.itemsize))
    R = max(1, min(N, budget // (Vc * W.itemsize)))
    buf = np.empty(R * Vc, dtype=W.dtype)
    counted = labels != ignore_index
    y = np.where(counted, labels, -1)
    wy = np.zeros(N)
    wy[counted] = 1.0 if cw is None else cw[labels[counted]]
    cw64 = np.ones(V) if cw is None else cw.astype(np.float64)
    rows = np.empty(N, dtype=np.float64)
    starts = range(0, V, Vc)
    # per row and chunk: the shift (max, or 0 for an all -inf chunk), the log-sum-exp
    # and the smoothing sum sum_k w_k (shift - x_k) of the shifted logits
    ref, lse, sd = (np.empty((len(starts), R)) for _ in range(3))
    wc = np.add.reduceat(cw64, list(starts))[:, None]
    for r0 in range(0, N, R):
        r1 = min(N, r0 + R)
        n, hb, yb = r1 - r0, h2[r0:r1], y[r0:r1]
        xy = np.zeros(n)
        for c, v0 in enumerate(starts):
            v1 = min(V, v0 + Vc)
            S = buf[:n * (v1 - v0)].reshape(n, v1 - v0)
            np.matmul(hb, W[v0:v1].T, out=S)
            if b is not None:
                S += b[v0:v1]
            here = np.nonzero((yb >= v0) & (yb < v1))[0]
            xy[here] = S[here, yb[here] - v0]
            mc = S.max(axis=1)
            ref[c, :n] = np.where(mc == -np.inf, 0.0, mc)
            S -= ref[c, :n, None].astype(S.dtype)
            _k.softmax_rows(S, None, False, lse[c, :n], _config.threads_after_blas(S.size))
            if eps > 0:
                sd[c, :n] = -np.einsum("ij,j->i", S, cw64[v0:v1], dtype=np.float64)
        M = ref[:, :n].max(axis=0)
        with np.errstate(invalid="ignore"):
            logs = np.log(np.sum(np.exp(lse[:, :n] + (ref[:, :n] - M)), axis=0))
            sdm = np.sum(sd[:, :n] + wc * (M - ref[:, :n]), axis=0) if eps > 0 else xy
        _k.label_losses(M, logs, xy, sdm, wy[r0:r1], counted[r0:r1].view(np.uint8), V,
                        weight_sum(cw, V), eps, zl, rows[r0:r1])
    return rows


def _add_product(out, a, b):
    """out += a @ b, a few rows of out at a time (no temporary of out's size)."""
    step = max(1, _ACCUMULATE_BYTES // (out.shape[1] * out.itemsize))
    tmp = np.empty((min(step, out.shape[0]), out.shape[1]), dtype=out.dtype)
    for i in range(0, out.shape[0], step):
        t = tmp[:min(step, out.shape[0] - i)]
        np.matmul(a[i:i + step], b, out=t)
        out[i:i + step] += t


# --- sigmoid losses -------------------------------------------------------------------

def _sigmoid_setup(logits, target, reduction, return_grad, grad_out):
    """Checked logits and target of one shape, as flat arrays, and the gradient buffer."""
    x = as_float_array(logits, "logits")
    reduction = check_reduction(reduction)
    check_grad_request(return_grad, grad_out)
    t = as_float_array(target, "target", x.dtype)
    check_same_shape(x, "logits", t, "target")
    g = grad_buffers(grad_out, ["logits"], x.shape, x.dtype)[0] if return_grad else None
    check_no_overlap([("grad_out", g)], [("logits", x), ("target", t)], in_place=("logits",))
    return x, flat_full(x, x.shape), flat_full(t, x.shape), reduction, g


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     reduction="mean", return_grad=False, grad_out=None):
    """PyTorch's binary_cross_entropy_with_logits (soft targets allowed, no clamping):
    l = weight * [(1 - t) x + (1 + (pos_weight - 1) t) softplus(-x)].
    weight broadcasts against logits, pos_weight too (from the right, e.g. (C,) per class);
    "mean" is over all elements (as PyTorch, also with weight). grad_out may be `logits`
    itself (in place)."""
    x, xf, tf, reduction, g = _sigmoid_setup(logits, target, reduction, return_grad, grad_out)
    wa, pwa = _weight(weight, x, "weight"), _weight(pos_weight, x, "pos_weight")
    check_no_overlap([("grad_out", g)], [("weight", wa), ("pos_weight", pwa)])
    w, wp = (None, 1) if wa is None else periodic(wa, x.shape)
    pw, pwp = (None, 1) if pwa is None else periodic(pwa, x.shape)
    lout = np.empty(x.size, dtype=x.dtype) if reduction == "none" else None
    total = _k.bce(xf, tf, w, wp, pw, pwp, lout, g.reshape(-1) if g is not None else None,
                   grad_scale(reduction, x.size), _config.threads_for(x.size))
    loss = reduce_elements(total, lout, x.shape, x.size, reduction, x.dtype)
    return (loss, g) if return_grad else loss


def _weight(w, x, name):
    """A weight that broadcasts against x, in x's dtype (None stays None)."""
    if w is None:
        return None
    w = as_float_array(w, name, x.dtype)
    check_broadcast(w, x.shape, name)
    return w


def sigmoid_focal_loss(logits, target, *, alpha=0.25, gamma=2.0, reduction="mean",
                       return_grad=False, grad_out=None):
    """torchvision's sigmoid_focal_loss: alpha_t * bce(x, t) * (1 - p_t)**gamma with
    p = sigmoid(x), p_t = p t + (1 - p)(1 - t); alpha < 0 disables the alpha weighting.
    grad_out may be `logits` itself (in place)."""
    x, xf, tf, reduction, g = _sigmoid_setup(logits, target, reduction, return_grad, grad_out)
    a = check_real(alpha, "alpha", high=1.0)
    gm = check_real(gamma, "gamma", 0.0)
    lout = np.empty(x.size, dtype=x.dtype) if reduction == "none" else None
    total = _k.focal(xf, tf, a, gm, lout, g.reshape(-1) if g is not None else None,
                     grad_scale(reduction, x.size), _config.threads_for(x.size))
    loss = reduce_elements(total, lout, x.shape, x.size, reduction, x.dtype)
    return (loss, g) if return_grad else loss


# --- softmax family -------------------------------------------------------------------

def _merged_axes(x, axis):
    """For a tuple or None axis (all axes), or a 0-d x (one class, as SciPy and PyTorch
    take it): x with those axes merged into one last axis, and a function putting an
    array of that layout back in x's shape. None for an int axis of an array."""
    if x.ndim > 0 and not (axis is None or isinstance(axis, tuple)):
        return None
    axes = (tuple(range(x.ndim)) if axis is None
            else tuple(check_axis(a, max(x.ndim, 1)) for a in (axis if isinstance(axis, tuple) else (axis,))))
    if x.ndim == 0:
        return x.reshape(1), lambda y: y.reshape(())
    if len(set(axes)) != len(axes) or not axes:
        raise ValueError(f"axis must name distinct axes, got {axis!r}")
    dest = tuple(range(x.ndim - len(axes), x.ndim))
    xm = np.moveaxis(x, axes, dest)
    k = x.ndim - len(axes)
    return (xm.reshape(xm.shape[:k] + (math.prod(xm.shape[k:]),)),   # -1 fails for size 0
            lambda y: np.moveaxis(y.reshape(xm.shape), dest, axes))


def _softmax_call(x, axis, out, log_out, want_out, name="out"):
    """(dtype, log-sum-exp of each row in x's shape less the class axes, softmax or
    log-softmax or None)."""
    x = as_float_array(x, "x")
    merged = _merged_axes(x, axis)
    if merged is not None:                # through a merged copy, then into x's layout
        if want_out and out is not None:
            check_grad_out(out, x.shape, x.dtype, name)
            check_no_overlap([(name, out)], [("x", x)], in_place=("x",))
        dt, lse, o = _softmax_call(merged[0], -1, None, log_out, want_out)
        if want_out:
            o = merged[1](o)
            if out is not None:
                out[...] = o
                o = out
        return dt, lse, o
    ax = check_class_axis(x, axis, "x")
    x2 = as_rows(x, ax)
    lse = np.empty(x2.shape[0], dtype=np.float64)
    o2 = finish = None
    if want_out:
        o2, finish = grad_rows(x, ax, out, name)
        check_no_overlap([(name, out)], [("x", x)], in_place=("x",))
    _k.softmax_rows(x2, o2, log_out, lse, _config.threads_for(x2.size))
    return x.dtype, lse.reshape(x.shape[:ax] + x.shape[ax + 1:]), (finish(o2) if want_out else None)


def logsumexp(x, *, axis=-1, return_grad=False, grad_out=None):
    """log(sum(exp(x))) along axis (an int, a tuple of ints, or None: all axes), without
    overflow; the gradient is softmax(x) over those axes (grad_out may be x itself). A row
    with a +inf gives +inf, one of only -inf gives -inf, a NaN gives NaN (as SciPy and
    PyTorch); the gradient of such a row is NaN."""
    check_grad_request(return_grad, grad_out)
    dt, lse, g = _softmax_call(x, axis, check_grad_outs(grad_out, ["x"])[0], False, return_grad,
                               "grad_out")
    val = lse.astype(dt)
    val = val[()] if val.ndim == 0 else val
    return (val, g) if return_grad else val


def softmax(x, *, axis=-1, out=None):
    """exp(x - logsumexp(x)) along axis (as logsumexp's); out: a C-contiguous buffer (may
    be x). A row with a NaN or +inf, or of only -inf, gives NaN."""
    return _softmax_call(x, axis, out, False, True)[2]


def log_softmax(x, *, axis=-1, out=None):
    """x - logsumexp(x) along axis (as logsumexp's); out: a C-contiguous buffer (may be x).
    A row with a NaN or +inf, or of only -inf, gives NaN."""
    return _softmax_call(x, axis, out, True, True)[2]
