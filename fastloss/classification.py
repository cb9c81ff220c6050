"""Classification losses: softmax cross-entropy, binary cross-entropy with logits,
sigmoid focal loss, and the softmax family (logsumexp, softmax, log_softmax).

Thin wrappers over the shared layer (ARCHITECTURE.md): validate every argument
(_checks.py), lay the data out as rows or flat arrays (_layout.py), call one fused
kernel of _classification.pyx (row cross-entropy through _xent.py), reduce
(_reduce.py).
"""
import math
from typing import NamedTuple

import numpy as np

from . import _classification as _k
from . import _config
from ._blas import product
from ._checks import (as_float_array, check_axis, check_broadcast, check_choice, check_class_axis,
                      check_class_weight, check_grad_out, check_grad_outs, check_grad_request,
                      check_ignore_index, check_linear_layer, check_names, check_no_overlap,
                      check_real, check_reduction, check_same_shape, compute_dtype, grad_out_apart,
                      half_bits, half_kind, result_dtype, whole_labels)
from ._mask import check_where, document, element_mask, independent
from ._layout import as_rows, flat_full, grad_buffers, grad_rows, periodic
from ._reduce import grad_scale, reduce_elements, reduce_rows
from ._xent import label_rows, new_stats, prepare_labels, prob_rows, weight_sum

__all__ = ["cross_entropy", "linear_cross_entropy", "binary_cross_entropy_with_logits",
           "sigmoid_focal_loss", "logsumexp", "softmax", "log_softmax"]

_config.register_kernels(_k)


# --- softmax cross-entropy ------------------------------------------------------------

class CrossEntropyStats(NamedTuple):
    """Per-row statistics of :func:`cross_entropy` (``return_stats=True``), each of the
    per-row loss's shape: log-sum-exp of the logits the loss uses (after `softcap`), the
    index of the largest logit (as ``np.argmax``) and whether it is the target's class in
    a row that counts."""
    lse: np.ndarray
    argmax: np.ndarray
    correct: np.ndarray


@grad_out_apart("logits")
def cross_entropy(logits, target, *, axis=-1, weight=None, ignore_index=-100, label_smoothing=0.0,
                  z_loss=0.0, softcap=None, target_kind=None, where=None, reduction="mean",
                  return_grad=False, grad_out=None, return_stats=False):
    r"""Softmax cross-entropy between logits and integer labels or probability targets.

    Integer ``target`` means class labels, float ``target`` probabilities: the dtype decides,
    unless `target_kind` says otherwise.

    Parameters
    ----------
    logits : array_like, shape (..., C, ...)
        The classes along `axis` (-1: NumPy/JAX layout, so (B, T, V) LM logits work
        directly; 1: PyTorch's (N, C, d1, ...)). float32/float64 kept, float16 and bfloat16
        read natively and computed in float32, integers and bool in float64.
    target : array_like
        Integer labels of logits' shape without `axis` (`ignore_index` marks rows that count
        for nothing), or float probabilities of logits' shape.
    axis : int, default -1
        The class axis.
    weight : array_like, shape (C,), optional
        Per-class weights.
    ignore_index : int, default -100
        Label of rows that count for nothing (labels only): loss 0 with ``"none"``, left out
        of the mean's denominator, gradient row 0.
    label_smoothing : float in [0, 1], default 0
        :math:`\varepsilon`, PyTorch's rule.
    z_loss : float >= 0, default 0
        Adds ``z_loss * logsumexp(row)**2`` per row (PaLM), weighted like the row.
    softcap : float > 0, optional
        Logits become ``softcap * tanh(logits / softcap)`` first (Gemma-2).
    target_kind : {"labels", "probs"}, optional
        What `target` holds when its dtype cannot say: "labels" takes whole numbers in a
        float array (e.g. read from CSV) as class labels (ValueError naming the first that
        is not), "probs" takes an integer array (e.g. one-hot) as probabilities. Default:
        by dtype.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean": labels: :math:`\sum_i w_{y_i} l_i / \sum_i w_{y_i}` over counted rows, NaN
        when none counts; probabilities: over positions.
    return_grad : bool, default False
        Also return d(loss)/d(logits).
    grad_out : ndarray, optional
        A C-contiguous buffer for the gradient (logits' shape, compute dtype; half logits:
        their dtype), which may be `logits` itself (overwritten in place).
    return_stats : bool, default False
        Also return per-row statistics from the same pass over the logits (perplexity and
        accuracy without a second pass).

    Returns
    -------
    loss : scalar or ndarray
        A NumPy scalar of the compute dtype, or with ``"none"`` the per-row losses of shape
        logits.shape without `axis`.
    grad : ndarray
        With ``return_grad=True``: the gradient of `loss`, logits' shape, compute dtype
        (half logits: their dtype).
    stats : CrossEntropyStats
        With ``return_stats=True``, last: ``(lse, argmax, correct)``, each of the per-row
        loss's shape (every row, ignored ones too). `lse` (float64): the log-sum-exp of the
        row's logits after `softcap` (the one the loss uses; a row whose max is +-inf or NaN
        has it as its lse, as :func:`logsumexp`). `argmax` (int64): the index of the row's
        largest logit as given (before `softcap`), the first one on ties, the first NaN in a
        row with NaN (``np.argmax``'s rule). `correct` (bool): ``argmax == label`` in a row
        that counts (False where the label is `ignore_index`); probability targets: argmax
        equals the target's argmax.

    See Also
    --------
    linear_cross_entropy : the same loss of ``input @ linear_weight.T`` without the logits.
    fastloss.reference.cross_entropy : the float64 oracle.

    Notes
    -----
    With :math:`p = \mathrm{softmax}(x_i)` over the C classes of row i, label y, class
    weights :math:`w` (1 without `weight`), :math:`W = \sum_k w_k` and smoothing
    :math:`\varepsilon`:

    .. math::

        l_i = (1 - \varepsilon)\, w_y (\mathrm{lse}(x_i) - x_{iy})
              + \frac{\varepsilon}{C} \sum_k w_k (\mathrm{lse}(x_i) - x_{ik})
              + z\, w_y\, \mathrm{lse}(x_i)^2

    .. math::

        \frac{\partial l_i}{\partial x_{ik}} = (1 - \varepsilon)\, w_y (p_k - [k = y])
              + \frac{\varepsilon}{C} (W p_k - w_k) + 2 z\, w_y\, \mathrm{lse}(x_i)\, p_k

    With probability targets t: :math:`l_i = -\sum_k w_k t_k \log p_k`. The gradient is then
    scaled by the reduction (1 / denominator for "mean").

    Equivalent: ``torch.nn.functional.cross_entropy`` (same semantics for weight x
    ignore_index x label_smoothing x reduction; PyTorch has no z_loss or softcap) and
    ``optax.softmax_cross_entropy_with_integer_labels``. Differences: the class axis is last
    by default (PyTorch: axis 1); terms with target probability 0 contribute exactly 0, so
    ``-inf`` logits are legal.

    Examples
    --------
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]])
    >>> loss, grad = fastloss.cross_entropy(logits, np.array([0, 1]), return_grad=True)
    >>> print(round(float(loss), 4))
    0.3964
    >>> print(np.round(grad, 4))
    [[-0.1072  0.0876  0.0196]
     [ 0.106  -0.2119  0.106 ]]
    >>> print(np.round(fastloss.cross_entropy(logits, np.array([0, -100]), reduction="none"), 4))
    [0.2413 0.    ]
    >>> probs = np.array([[0.7, 0.2, 0.1], [0.0, 1.0, 0.0]])
    >>> print(round(float(fastloss.cross_entropy(logits, probs)), 4))
    0.6964

    Token accuracy and perplexity from the same pass:

    >>> loss, stats = fastloss.cross_entropy(logits, np.array([0, 2]), return_stats=True)
    >>> print(np.round(stats.lse, 4), stats.argmax, stats.correct)
    [2.2413 1.5514] [0 1] [ True False]
    >>> print(round(float(np.exp(loss)), 4), stats.correct.mean())
    2.4507 0.5
    """
    x = as_float_array(logits, "logits", half=True)
    reduction = check_reduction(reduction)
    check_grad_request(return_grad, grad_out)
    grad_out = check_grad_outs(grad_out, ["logits"])[0]
    ax = check_class_axis(x, axis, "logits")
    C = x.shape[ax]
    eps = check_real(label_smoothing, "label_smoothing", 0.0, 1.0)
    zl = check_real(z_loss, "z_loss", 0.0)
    cap = 0.0 if softcap is None else check_real(softcap, "softcap", 0.0, low_open=True)
    ignore_index = check_ignore_index(ignore_index)
    t = np.asarray(target)
    if target_kind is not None:
        check_choice(target_kind, "target_kind", ("labels", "probs"))
        if target_kind == "labels":
            t = whole_labels(t)
        elif t.dtype.kind in "iub":
            t = t.astype(compute_dtype(x))
    D = math.prod(x.shape[ax + 1:])
    strided = t.dtype.kind in "iu" and ax != x.ndim - 1 and cap == 0 and D >= STRIDED_MIN_POSITIONS
    xin = x
    if half_kind(x.dtype) is not None and (strided or (t.dtype.kind not in "iu" and t.dtype != x.dtype)):
        # half rows are read natively, not columns or targets of another dtype: those are
        # computed on a float32 copy, and the gradient rounded to the logits' dtype at the end
        x = x.astype(np.float32)
        if grad_out is not None:
            check_grad_out(grad_out, x.shape, xin.dtype)
    cw = check_class_weight(weight, C, compute_dtype(x))
    row_shape = x.shape[:ax] + x.shape[ax + 1:]
    if t.dtype.kind in "iu":
        labels, denom = prepare_labels(t, row_shape, C, ignore_index, cw,
                                       against=f"logits {x.shape} without axis {axis}",
                                       where=None if where is None else check_where(where, row_shape))
    elif t.dtype.kind == "f" or half_kind(t.dtype) is not None:
        if t.shape == row_shape != x.shape:
            raise ValueError(f"target is {t.dtype} with the shape of labels {t.shape}: the dtype "
                             f"decides, an integer target holds class labels and a float one "
                             f"probabilities of logits' shape {x.shape}; for labels pass "
                             f"target_kind='labels' (or target.astype(np.int64))")
        probs = as_float_array(t, "target", x.dtype)
        check_same_shape(x, "logits", probs, "probability target")
        labels = None
        denom = float(math.prod(row_shape))
        if where is not None:
            return independent(
                lambda: cross_entropy(logits, target, axis=axis, weight=weight, label_smoothing=eps,
                                      z_loss=zl, softcap=softcap, reduction="none",
                                      return_grad=return_grad, grad_out=grad_out,
                                      return_stats=return_stats),
                where, row_shape, reduction, return_grad, axes=[(ax,)], stats=return_stats)
    else:
        raise TypeError(f"target must be integer labels or float probabilities (the dtype "
                        f"decides), got dtype {t.dtype}")

    check_no_overlap([("grad_out", grad_out)], [("logits", xin)], in_place=("logits",))
    gscale = grad_scale(reduction, denom)
    gout = grad_out if x is xin else None
    stats = new_stats(math.prod(row_shape)) if return_stats else None
    if strided:
        rows, grad = _label_strided(x, ax, labels, cw, ignore_index, eps, zl, gscale,
                                    return_grad, gout, stats)
    else:
        x2 = as_rows(x, ax)
        g2 = finish = None
        if return_grad:
            g2, finish = grad_rows(x, ax, gout)
        if labels is not None:
            rows = label_rows(x2, labels, class_weight=cw, ignore_index=ignore_index, smoothing=eps,
                              z_loss=zl, softcap=cap, gscale=gscale, grad=g2, stats=stats)
        else:
            rows = prob_rows(x2, as_rows(probs, ax), class_weight=cw, smoothing=eps, z_loss=zl,
                             softcap=cap, gscale=gscale, grad=g2, stats=stats)
        grad = finish(g2) if return_grad else None
    if return_grad and x is not xin:      # the float32 copy's gradient, rounded
        if grad_out is None:
            grad = grad.astype(xin.dtype)
        else:
            grad_out[...] = grad
            grad = grad_out
    loss = reduce_rows(rows, row_shape, denom, reduction, compute_dtype(x))
    out = (loss, grad) if return_grad else (loss,)
    if return_stats:
        lse, am, ok = stats
        out += (CrossEntropyStats(lse.reshape(row_shape), am.reshape(row_shape),
                                  ok.view(bool).reshape(row_shape)),)
    return out if len(out) > 1 else loss


# A class axis that is not the last is read in place (no transposing copy) when at least
# this many positions follow it: a vector then holds neighbouring positions.
STRIDED_MIN_POSITIONS = 16


def _label_strided(x, ax, labels, cw, ignore_index, eps, zl, gscale, return_grad, grad_out,
                   stats=None):
    """Per-position losses (float64, flat) and the gradient (or None) for integer labels
    with the classes on axis ax < ndim - 1, e.g. PyTorch's (N, C, H, W); the positions'
    statistics into stats (new_stats's flat arrays, or None)."""
    A, C, D = math.prod(x.shape[:ax]), x.shape[ax], math.prod(x.shape[ax + 1:])
    x3 = np.ascontiguousarray(x).reshape(A, C, D)
    grad = grad_buffers(grad_out, ["logits"], x.shape, x.dtype)[0] if return_grad else None
    rows = np.empty((A, D), dtype=np.float64)
    _k.xent_label_strided(x3, labels.reshape(A, D), None if grad is None else grad.reshape(A, C, D),
                          cw, weight_sum(cw, C), ignore_index, eps, zl, gscale, rows, stats,
                          _config.threads_for(x.size))
    return rows.reshape(-1), grad


# --- the language-model head and its cross-entropy ------------------------------------

# Default budget of linear_cross_entropy's block of logits (rows x V x itemsize).
LINEAR_BLOCK_BYTES = 128 << 20
_LINEAR_GRADS = ("input", "linear_weight", "linear_bias")


@grad_out_apart("input", "linear_weight", "linear_bias")
def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                         ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None,
                         where=None, reduction="mean", return_grad=False, grad_out=None, grad_wrt=None,
                         block_bytes=None):
    r"""The language-model head and its cross-entropy without the (N, V) logits.

    ``cross_entropy(input @ linear_weight.T + linear_bias, target, ...)``: PyTorch's
    ``F.linear_cross_entropy``, plus `z_loss` and `softcap`. The tokens go in blocks whose
    logits take at most `block_bytes` (default ``LINEAR_BLOCK_BYTES``, 128 MiB), in blocks of
    even size: per block one product for the logits, the fused cross-entropy kernel writing
    the logits' gradient in place, and the products back to the input and the weight (every
    product through SciPy's BLAS when SciPy is installed, the weight's gradient accumulating
    over the blocks in gemm; else NumPy's matmul and a small temporary); without gradients (and
    softcap) the classes are read in chunks of at most 16 MiB of logits instead, each chunk's
    log-sum-exp taken relative to its max, so each block of up to 2048 tokens reads the
    weight once.

    Parameters
    ----------
    input : array_like, shape (..., D)
        The hidden states.
    linear_weight : array_like, shape (V, D)
        The head's weight.
    target : array_like of int, shape input.shape[:-1]
        Integer labels.
    linear_bias : array_like, shape (V,), optional
        The head's bias.
    weight, ignore_index, label_smoothing, z_loss, softcap, where, reduction
        As :func:`cross_entropy`.
    return_grad : bool, default False
        Return ``(loss, grads)``, the gradients named by `grad_wrt` in argument order.
    grad_out : tuple of ndarray, optional
        One C-contiguous buffer per requested gradient.
    grad_wrt : sequence of str, optional
        Names from ("input", "linear_weight", "linear_bias"); by default the input, the
        weight and (when given) the bias. A frozen head asks for ("input",) and skips the
        weight-gradient product.
    block_bytes : int, optional
        Budget of one block of logits (rows x V x itemsize), at least one row; trades memory
        for time.

    Returns
    -------
    loss : scalar or ndarray
        As :func:`cross_entropy` (``"none"``: shape input.shape[:-1]).
    grads : tuple of ndarray
        With ``return_grad=True``: ``(grad_input, grad_linear_weight[, grad_linear_bias])`` (or
        those named by `grad_wrt`), each of its argument's shape, in the compute dtype.

    See Also
    --------
    cross_entropy : the loss of given logits.

    Notes
    -----
    With logits :math:`s = h W^T + b` and :math:`G = \partial L / \partial s` (the
    cross-entropy gradient, written over each block of logits in place):

    .. math::

        \frac{\partial L}{\partial h} = G W, \qquad
        \frac{\partial L}{\partial W} = G^T h, \qquad
        \frac{\partial L}{\partial b} = \sum_i G_i

    Equivalent: ``torch.nn.functional.linear_cross_entropy`` (PyTorch has no z_loss or
    softcap), Liger-Kernel's fused linear cross-entropy.

    Examples
    --------
    >>> h = np.array([[1.0, -1.0], [0.5, 2.0]])
    >>> W = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> y = np.array([2, 1])
    >>> loss, (g_h, g_W) = fastloss.linear_cross_entropy(h, W, y, return_grad=True)
    >>> print(round(float(loss), 4), round(float(fastloss.cross_entropy(h @ W.T, y)), 4))
    1.2313 1.2313
    >>> print(g_h.shape, g_W.shape)
    (2, 2) (3, 2)
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
    ignore_index = check_ignore_index(ignore_index)
    row_shape = h.shape[:-1]
    labels, denom = prepare_labels(target, row_shape, V, ignore_index, cw,
                                   against=f"input {h.shape} without its last axis",
                                   where=None if where is None else check_where(where, row_shape))
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
                         [("input", h), ("linear_weight", w), ("linear_bias", b)])

    h2 = np.ascontiguousarray(h, dtype=dtype).reshape(math.prod(row_shape), D)
    W = np.ascontiguousarray(w, dtype=dtype)
    if not return_grad and cap == 0:
        rows = _linear_xent_loss(h2, W, b, labels, cw, ignore_index, eps, zl, budget)
    else:
        rows = _linear_xent_blocks(h2, W, b, labels, cw, ignore_index, eps, zl, cap,
                                   grad_scale(reduction, denom), grads, _even_blocks(h2.shape[0], R))
    loss = reduce_rows(rows, row_shape, denom, reduction, dtype)
    return (loss, tuple(grads[n] for n in wrt)) if return_grad else loss


def _even_blocks(N, R):
    """Rows per block of N tokens, at most R: the fewest blocks, of nearly equal size (a
    short last block would make a small, inefficient product)."""
    n_blocks = max(1, -(-N // R))
    return max(1, -(-N // n_blocks))


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
        product(Sb, hb, W.T)
        if b is not None:
            Sb += b
        rows[r0:r1] = label_rows(Sb, labels[r0:r1], class_weight=cw, ignore_index=ignore_index,
                                 smoothing=eps, z_loss=zl, softcap=cap, gscale=gscale,
                                 grad=Sb if grads else None,
                                 n_threads=_config.threads_for(Sb.size))
        if g_in is not None:
            product(g_in[r0:r1], Sb, W)
        if g_w is not None:
            product(g_w, Sb.T, hb, accumulate=r0 > 0)
        if b_sum is not None:
            b_sum += np.sum(Sb, axis=0, dtype=np.float64)
    if g_b is not None:
        g_b[...] = b_sum
    return rows


# The loss-only path's chunk of logits: at most this many bytes (and the budget), up to
# _LOSS_TOKENS tokens by at least _LOSS_MIN_CLASSES (products still efficient) and at
# most _LOSS_CHUNK_CLASSES classes; the tokens of one chunk share each read of the weight.
# 16 MiB of up to 2048 tokens: the loss took 1.06-1.07x one full product (2 threads,
# 2048 x 1024 x 32000 and 1024 x 1024 x 128256), with 8 MiB of 1024 tokens 1.19x.
_LOSS_BLOCK_BYTES = 16 << 20
_LOSS_TOKENS = 2048
_LOSS_MIN_CLASSES = 256
_LOSS_CHUNK_CLASSES = 8192


def _linear_xent_loss(h2, W, b, labels, cw, ignore_index, eps, zl, budget):
    """Per-token losses without gradients, a chunk of classes at a time, so each block of
    tokens reads the weight once and the products stay wide. Each chunk's log-sum-exp
    (and smoothing sum) is taken relative to its row max by the row kernel, and the chunks
    combine relative to the largest max: the row kernels' loss formula then never
    subtracts two large numbers (lse - x_y would, at large logits)."""
    N, V, item = h2.shape[0], W.shape[0], W.itemsize
    cap = min(budget, _LOSS_BLOCK_BYTES)
    Vc = max(1, min(V, _LOSS_CHUNK_CLASSES, cap // item,
                    max(_LOSS_MIN_CLASSES, cap // (max(1, min(N, _LOSS_TOKENS)) * item))))
    R = max(1, min(N, cap // (Vc * item)))
    buf = np.empty(R * Vc, dtype=W.dtype)
    counted = labels != ignore_index
    y = np.where(counted, labels, -1)
    wy = np.zeros(N)
    wy[counted] = 1.0 if cw is None else cw[labels[counted]]
    cw64 = np.ones(V) if cw is None else cw.astype(np.float64)
    rows = np.empty(N, dtype=np.float64)
    starts = range(0, V, Vc)
    # per row and chunk: the shift (max, or 0 for an all -inf chunk), the log-sum-exp
    # and the smoothing sum sum_k w_k (shift - x_k) relative to it
    ref, lse, sd = (np.empty((len(starts), R)) for _ in range(3))
    wc = np.add.reduceat(cw64, list(starts))[:, None]
    for r0 in range(0, N, R):
        r1 = min(N, r0 + R)
        n, hb, yb = r1 - r0, h2[r0:r1], y[r0:r1]
        xy = np.zeros(n)
        for c, v0 in enumerate(starts):
            v1 = min(V, v0 + Vc)
            S = buf[:n * (v1 - v0)].reshape(n, v1 - v0)
            product(S, hb, W[v0:v1].T)
            if b is not None:
                S += b[v0:v1]
            here = np.nonzero((yb >= v0) & (yb < v1))[0]
            xy[here] = S[here, yb[here] - v0]
            _k.softmax_rows(S, None, False, lse[c, :n], _config.threads_for(S.size), ref[c, :n])
            if eps > 0:
                S -= ref[c, :n, None].astype(S.dtype)       # (ref: S's own max, cast exactly)
                sd[c, :n] = -np.einsum("ij,j->i", S, cw64[v0:v1], dtype=np.float64)
        M = ref[:, :n].max(axis=0)
        with np.errstate(invalid="ignore"):
            logs = np.log(np.sum(np.exp(lse[:, :n] + (ref[:, :n] - M)), axis=0))
            sdm = np.sum(sd[:, :n] + wc * (M - ref[:, :n]), axis=0) if eps > 0 else xy
        _k.label_losses(M, logs, xy, sdm, wy[r0:r1], counted[r0:r1].view(np.uint8), V,
                        weight_sum(cw, V), eps, zl, rows[r0:r1])
    return rows


# --- sigmoid losses -------------------------------------------------------------------

def _sigmoid_setup(logits, target, reduction, return_grad, grad_out):
    """Checked logits and target of one shape, as flat arrays, and the gradient buffer."""
    x = as_float_array(logits, "logits")
    reduction = check_reduction(reduction)
    check_grad_request(return_grad, grad_out)
    t = as_float_array(target, "target", x.dtype)
    check_same_shape(x, "logits", t, "target")
    g = grad_buffers(grad_out, ["logits"], x.shape, x.dtype)[0] if return_grad else None
    check_no_overlap([("grad_out", g)], [("logits", x)], in_place=("logits",))
    return x, flat_full(x, x.shape), flat_full(t, x.shape), reduction, g


@grad_out_apart("logits")
def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None, where=None,
                                     reduction="mean", return_grad=False, grad_out=None):
    r"""PyTorch's binary_cross_entropy_with_logits (soft targets allowed, no clamping).

    Parameters
    ----------
    logits : array_like
        Any shape.
    target : array_like
        logits' shape; probabilities in [0, 1] (soft targets allowed).
    weight : array_like, optional
        Broadcasts against logits.
    pos_weight : array_like, optional
        Broadcasts against logits too (from the right, e.g. (C,) per class).
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" is over all elements (as PyTorch, also with weight).
    return_grad : bool, default False
        Also return the gradient with respect to logits.
    grad_out : ndarray, optional
        A C-contiguous buffer for it; may be `logits` itself (in place).

    Returns
    -------
    loss : scalar or ndarray
        Compute-dtype scalar, or per-element losses (logits' shape) with ``"none"``.
    grad : ndarray
        With ``return_grad=True``: logits' shape and compute dtype.

    Notes
    -----
    With :math:`w` = weight, :math:`q` = pos_weight, :math:`\sigma` the sigmoid:

    .. math::

        l = w \left[(1 - t)\, x + (1 + (q - 1)\, t)\, \mathrm{softplus}(-x)\right],
        \qquad
        \frac{\partial l}{\partial x} = w \left[(1 - t) - (1 + (q - 1)\, t)\,
        \sigma(-x)\right]

    Equivalent: ``torch.nn.functional.binary_cross_entropy_with_logits`` (same formula and
    broadcasting), ``optax.sigmoid_binary_cross_entropy`` (no weights).

    Examples
    --------
    >>> x, t = np.array([1.0, -2.0, 0.5]), np.array([1.0, 0.0, 1.0])
    >>> loss, grad = fastloss.binary_cross_entropy_with_logits(x, t, return_grad=True)
    >>> print(round(float(loss), 4), np.round(grad, 4))
    0.3048 [-0.0896  0.0397 -0.1258]
    """
    x, xf, tf, reduction, g = _sigmoid_setup(logits, target, reduction, return_grad, grad_out)
    wa, pwa = _weight(weight, x, "weight"), _weight(pos_weight, x, "pos_weight")
    w, wp = (None, 1) if wa is None else periodic(wa, x.shape)
    pw, pwp = (None, 1) if pwa is None else periodic(pwa, x.shape)
    mask, denom = _element_mask(where, x)
    lout = np.empty(x.size, dtype=x.dtype) if reduction == "none" else None
    total = _k.bce(xf, tf, w, wp, pw, pwp, mask, lout, g.reshape(-1) if g is not None else None,
                   grad_scale(reduction, denom), _config.threads_for(x.size))
    loss = reduce_elements(total, lout, x.shape, denom, reduction, x.dtype)
    return (loss, g) if return_grad else loss


def _element_mask(where, x):
    """where= of an elementwise sigmoid loss as the kernels take it (None, or
    _mask.element_mask's bytes), and the mean's denominator: the kept elements (weights do
    not enter it, PyTorch's rule)."""
    if where is None:
        return None, float(x.size)
    mask = element_mask(where, x.shape)
    return mask, float(np.count_nonzero(mask))


def _weight(w, x, name):
    """A weight that broadcasts against x, in x's dtype (None stays None)."""
    if w is None:
        return None
    w = as_float_array(w, name, x.dtype)
    check_broadcast(w, x.shape, name)
    return w


@grad_out_apart("logits")
def sigmoid_focal_loss(logits, target, *, alpha=0.25, gamma=2.0, where=None, reduction="mean",
                       return_grad=False, grad_out=None):
    r"""torchvision's sigmoid_focal_loss.

    Parameters
    ----------
    logits : array_like
        Any shape.
    target : array_like
        logits' shape, in [0, 1].
    alpha : float <= 1, default 0.25
        Weight of the positives; ``alpha < 0`` disables the alpha weighting.
    gamma : float >= 0, default 2
        Focusing exponent.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" over elements (torchvision's default is "none").
    return_grad : bool, default False
        Also return the gradient with respect to logits.
    grad_out : ndarray, optional
        A C-contiguous buffer for it; may be `logits` itself (in place).

    Returns
    -------
    loss : scalar or ndarray
        Compute-dtype scalar, or per-element losses with ``"none"``.
    grad : ndarray
        With ``return_grad=True``: logits' shape and compute dtype.

    Notes
    -----
    With :math:`p = \sigma(x)`, :math:`p_t = p t + (1 - p)(1 - t)`,
    :math:`\alpha_t = \alpha t + (1 - \alpha)(1 - t)` (1 for :math:`\alpha < 0`):

    .. math::

        l = \alpha_t\, \mathrm{bce}(x, t)\, (1 - p_t)^\gamma

    The gradient is that of this formula (product rule through :math:`p_t`), with
    :math:`1 - p_t` and :math:`\log p_t` computed without cancellation.
    Equivalent: ``torchvision.ops.sigmoid_focal_loss``, ``optax.sigmoid_focal_loss``.

    Examples
    --------
    >>> x, t = np.array([1.0, -2.0, 0.5]), np.array([1.0, 0.0, 1.0])
    >>> loss, grad = fastloss.sigmoid_focal_loss(x, t, return_grad=True)
    >>> print(round(float(loss), 4), np.round(grad, 4))
    0.008 [-0.0044  0.0012 -0.0115]
    """
    x, xf, tf, reduction, g = _sigmoid_setup(logits, target, reduction, return_grad, grad_out)
    a = check_real(alpha, "alpha", high=1.0)
    gm = check_real(gamma, "gamma", 0.0)
    mask, denom = _element_mask(where, x)
    lout = np.empty(x.size, dtype=x.dtype) if reduction == "none" else None
    total = _k.focal(xf, tf, a, gm, mask, lout, g.reshape(-1) if g is not None else None,
                     grad_scale(reduction, denom), _config.threads_for(x.size))
    loss = reduce_elements(total, lout, x.shape, denom, reduction, x.dtype)
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
    """(compute dtype, log-sum-exp of each row in x's shape less the class axes, softmax or
    log-softmax, in x's dtype, or None)."""
    x = as_float_array(x, "x", half=True)
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
    if half_kind(x.dtype) is None:
        _k.softmax_rows(x2, o2, log_out, lse, _config.threads_for(x2.size))
    else:
        _k.softmax_rows_half(half_kind(x.dtype), half_bits(x2), half_bits(o2), log_out, lse,
                             _config.threads_for(x2.size))
    return compute_dtype(x), lse.reshape(x.shape[:ax] + x.shape[ax + 1:]), (finish(o2) if want_out else None)


@grad_out_apart("x")
def logsumexp(x, *, axis=-1, return_grad=False, grad_out=None):
    r"""log(sum(exp(x))) along axis, without overflow.

    Parameters
    ----------
    x : array_like
        Any shape.
    axis : int, tuple of int or None, default -1
        The axes reduced (None: all axes).
    return_grad : bool, default False
        Also return the gradient, softmax(x) over those axes.
    grad_out : ndarray, optional
        A C-contiguous buffer of x's shape for it (may be x itself).

    Returns
    -------
    lse : scalar or ndarray
        x's shape without the reduced axes, compute dtype.
    grad : ndarray
        With ``return_grad=True``: x's shape.

    Notes
    -----
    .. math::

        \mathrm{lse}(x) = m + \log \sum_k e^{x_k - m},\ m = \max_k x_k, \qquad
        \frac{\partial\, \mathrm{lse}}{\partial x_k} = \mathrm{softmax}(x)_k

    A row with a +inf gives +inf, one of only -inf gives -inf, a NaN gives NaN (as SciPy and
    PyTorch); the gradient of such a row is NaN.
    Equivalent: ``scipy.special.logsumexp``, ``torch.logsumexp`` (PyTorch's default axis is
    not -1: it has none).

    Examples
    --------
    >>> lse, grad = fastloss.logsumexp(np.array([[0.0, 0.0], [1000.0, 1000.0]]),
    ...                                return_grad=True)
    >>> print([float(v) for v in np.round(lse, 4)])
    [0.6931, 1000.6931]
    >>> print(grad)
    [[0.5 0.5]
     [0.5 0.5]]
    """
    check_grad_request(return_grad, grad_out)
    dt, lse, g = _softmax_call(x, axis, check_grad_outs(grad_out, ["x"])[0], False, return_grad,
                               "grad_out")
    val = lse.astype(dt)
    val = val[()] if val.ndim == 0 else val
    return (val, g) if return_grad else val


def softmax(x, *, axis=-1, out=None):
    r"""exp(x - logsumexp(x)) along axis.

    Parameters
    ----------
    x : array_like
        Any shape.
    axis : int, tuple of int or None, default -1
        As :func:`logsumexp`'s.
    out : ndarray, optional
        A C-contiguous buffer of x's shape and compute dtype (may be x).

    Returns
    -------
    ndarray
        x's shape, compute dtype.

    Notes
    -----
    .. math:: \mathrm{softmax}(x)_k = e^{x_k - \mathrm{lse}(x)}

    A row with a NaN or +inf, or of only -inf, gives NaN (as PyTorch).
    Equivalent: ``scipy.special.softmax``, ``torch.softmax``. No gradient is offered: it is a
    Jacobian-vector product, not a loss.

    Examples
    --------
    >>> print(np.round(fastloss.softmax(np.array([1.0, 2.0, 3.0])), 4))
    [0.09   0.2447 0.6652]
    """
    return _softmax_call(x, axis, out, False, True)[2]


def log_softmax(x, *, axis=-1, out=None):
    r"""x - logsumexp(x) along axis.

    Parameters
    ----------
    x : array_like
        Any shape.
    axis : int, tuple of int or None, default -1
        As :func:`logsumexp`'s.
    out : ndarray, optional
        A C-contiguous buffer of x's shape and compute dtype (may be x).

    Returns
    -------
    ndarray
        x's shape, compute dtype.

    Notes
    -----
    .. math:: \log \mathrm{softmax}(x)_k = x_k - \mathrm{lse}(x)

    A row with a NaN or +inf, or of only -inf, gives NaN.
    Equivalent: ``scipy.special.log_softmax``, ``torch.log_softmax``.

    Examples
    --------
    >>> print(np.round(fastloss.log_softmax(np.array([1.0, 2.0, 3.0])), 4))
    [-2.4076 -1.4076 -0.4076]
    """
    return _softmax_call(x, axis, out, True, True)[2]


for _fn, _items in ((cross_entropy, "row"), (binary_cross_entropy_with_logits, "element"),
                    (sigmoid_focal_loss, "element")):
    document(_fn, _items)
