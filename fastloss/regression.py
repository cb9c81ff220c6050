"""Regression losses (MSE, L1, Huber, smooth L1, log-cosh) and bounding-box IoU
losses (GIoU, DIoU, CIoU).

Thin wrappers over the shared layer (ARCHITECTURE.md): validate every argument
(_checks.py), lay the data out as flat C-contiguous arrays or (n, 4) boxes
(_layout.py), call one fused kernel of _regression.pyx, reduce (_reduce.py).
"""
import math

import numpy as np

from . import _config
from . import _regression as _k
from ._checks import (as_float_array, check_broadcast, check_grad_request, check_no_overlap,
                      check_real, check_reduction, check_same_shape, grad_out_apart)
from ._layout import flat_full, grad_buffers, periodic
from ._mask import check_where, document, element_mask, independent
from ._reduce import grad_scale, reduce_elements

__all__ = ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "log_cosh_loss",
           "generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"]

_config.register_kernels(_k)


# --- elementwise losses ---------------------------------------------------------------

def _elementwise(name, input, target, param, weight, where, reduction, return_grad, grad_out):
    x = as_float_array(input, "input")
    reduction = check_reduction(reduction)
    check_grad_request(return_grad, grad_out)
    t = as_float_array(target, "target", x.dtype)
    check_same_shape(x, "input", t, "target", "input and target must match exactly; they are "
                     "not broadcast")
    n = x.size
    w = wa = None
    period, denom = 1, float(n)
    if weight is not None:
        wa = as_float_array(weight, "weight", x.dtype)
        check_broadcast(wa, x.shape, "weight", against="input")
        w, period = periodic(wa, x.shape)
        # sum of the broadcast weights: the period's C-ordered weights (so the sum does not
        # depend on the weight's memory layout), each repeated n / period times
        denom = float(np.sum(w[:period], dtype=np.float64)) * (n // period) if n else 0.0
    mask = None
    if where is not None:        # in the kernel: masked elements count for nothing
        mask = element_mask(where, x.shape)
        if w is None:
            denom = float(np.count_nonzero(mask))
        elif n:                  # the kept elements' weights (the period's, tiled n / period times)
            denom = float(np.sum(np.broadcast_to(w[:period], (n // period, period)),
                                 where=mask.view(bool).reshape(-1, period), dtype=np.float64))
    g = grad_buffers(grad_out, ["input"], x.shape, x.dtype)[0] if return_grad else None
    if grad_out is not None:
        check_no_overlap([("grad_out", g)], [("input", x)], in_place=("input",))
    lout = np.empty(n, dtype=x.dtype) if reduction == "none" else None
    total = _k.elementwise(name, flat_full(x, x.shape), flat_full(t, x.shape), w, period, mask,
                           lout, g.reshape(-1) if g is not None else None, param,
                           grad_scale(reduction, denom), _config.threads_for(n))
    loss = reduce_elements(total, lout, x.shape, denom, reduction, x.dtype)
    return (loss, g) if return_grad else loss


def _elementwise_doc(summary, math, notes, params="", example=""):
    """A numpydoc docstring of an elementwise loss: its own summary, formulas (r the residual
    input - target), parameters and example around the parameters they all share."""
    return summary + """

    Parameters
    ----------
    input, target : array_like
        Arrays of exactly the same shape (no broadcasting: a (4,) input against a (4, 1)
        target is a ValueError, not a (4, 4) loss). Computed in the input's dtype
        (float32/float64 kept; float16 -> float32; ints, bool -> float64); target is
        converted to it.
""" + params + """    weight : array_like, optional
        Per-element weights broadcast against input; "mean" is then
        sum(weight * loss) / sum(weight) over the broadcast weights (NaN when that is 0).
    reduction : {"mean", "sum", "none"}, default "mean"
        "none" gives the per-element (weighted) losses.
    return_grad : bool, default False
        Also return the gradient with respect to input (the gradient with respect to
        target is its negative).
    grad_out : ndarray, optional
        A C-contiguous buffer of input's shape and dtype to write it into; it may be
        `input` itself (in place), and must not otherwise overlap input, target or weight
        (ValueError).

    Returns
    -------
    loss : scalar or ndarray
        A NumPy scalar of the compute dtype, or input's shape with "none".
    grad : ndarray
        With ``return_grad=True``: input's shape and dtype.

    Notes
    -----
    With :math:`r = \\mathrm{input} - \\mathrm{target}`:

    .. math::

        """ + math + """

    """ + notes + """

    Examples
    --------
    >>> x, t = np.array([0.5, -1.0, 3.0]), np.array([0.0, 1.0, 2.5])
""" + example


@grad_out_apart("input")
def mse_loss(input, target, *, weight=None, where=None, reduction="mean", return_grad=False,
             grad_out=None):
    return _elementwise("mse", input, target, 0.0, weight, where, reduction, return_grad, grad_out)


mse_loss.__doc__ = _elementwise_doc(
    "Mean squared error: (input - target)**2, gradient 2 (input - target).",
    r"l = r^2, \qquad \frac{\partial l}{\partial\, \mathrm{input}} = 2 r",
    "Equivalent: ``torch.nn.functional.mse_loss`` (which broadcasts mismatched shapes with a\n"
    "    warning; fastloss raises), ``optax.squared_error`` (no 1/2, no reduction).",
    example="""    >>> loss, grad = fastloss.mse_loss(x, t, return_grad=True)
    >>> print(round(float(loss), 4), np.round(grad, 4))
    1.5 [ 0.3333 -1.3333  0.3333]
    """)


@grad_out_apart("input")
def l1_loss(input, target, *, weight=None, where=None, reduction="mean", return_grad=False,
            grad_out=None):
    return _elementwise("l1", input, target, 0.0, weight, where, reduction, return_grad, grad_out)


l1_loss.__doc__ = _elementwise_doc(
    "Mean absolute error: ``|input - target|``, gradient ``sign(input - target)`` with\n"
    "    sign(0) = 0 (as PyTorch).",
    r"l = |r|, \qquad \frac{\partial l}{\partial\, \mathrm{input}} = \mathrm{sign}(r)",
    "Equivalent: ``torch.nn.functional.l1_loss``.",
    example="""    >>> loss, grad = fastloss.l1_loss(x, t, return_grad=True)
    >>> print(round(float(loss), 4), np.round(grad, 4))
    1.0 [ 0.3333 -0.3333  0.3333]
    """)


@grad_out_apart("input")
def huber_loss(input, target, *, delta=1.0, weight=None, where=None, reduction="mean",
               return_grad=False,
               grad_out=None):
    d = check_real(delta, "delta", 0.0, low_open=True)
    return _elementwise("huber", input, target, d, weight, where, reduction, return_grad, grad_out)


huber_loss.__doc__ = _elementwise_doc(
    "PyTorch's huber_loss: ``r**2 / 2`` where ``|r| <= delta``, else\n"
    "    ``delta * (|r| - delta / 2)``, with r = input - target; gradient clip(r, -delta, delta).",
    r"l = \begin{cases} r^2 / 2 & |r| \le \delta \\ \delta (|r| - \delta / 2) & \text{else}"
    r"\end{cases}, \qquad \frac{\partial l}{\partial\, \mathrm{input}} = "
    r"\mathrm{clip}(r, -\delta, \delta)",
    "Equal to delta * smooth_l1_loss(beta=delta). Equivalent:\n"
    "    ``torch.nn.functional.huber_loss``, ``optax.huber_loss``.",
    params="""    delta : float > 0, default 1
        The threshold between the quadratic and the linear part.
""",
    example="""    >>> loss, grad = fastloss.huber_loss(x, t, return_grad=True)
    >>> print(round(float(loss), 4), np.round(grad, 4))
    0.5833 [ 0.1667 -0.3333  0.1667]
    """)


@grad_out_apart("input")
def smooth_l1_loss(input, target, *, beta=1.0, weight=None, where=None, reduction="mean",
                   return_grad=False,
                   grad_out=None):
    b = check_real(beta, "beta", 0.0)
    return _elementwise("smooth_l1", input, target, b, weight, where, reduction, return_grad,
                        grad_out)


smooth_l1_loss.__doc__ = _elementwise_doc(
    "PyTorch's smooth_l1_loss: ``r**2 / (2 beta)`` where ``|r| < beta``, else\n"
    "    ``|r| - beta / 2``, with r = input - target; gradient r / beta or sign(r).",
    r"l = \begin{cases} r^2 / (2\beta) & |r| < \beta \\ |r| - \beta / 2 & \text{else}"
    r"\end{cases}, \qquad \frac{\partial l}{\partial\, \mathrm{input}} = "
    r"\begin{cases} r / \beta & |r| < \beta \\ \mathrm{sign}(r) & \text{else}\end{cases}",
    "beta = 0 is l1_loss. Equivalent: ``torch.nn.functional.smooth_l1_loss``.",
    params="""    beta : float >= 0, default 1
        The threshold between the quadratic and the linear part.
""",
    example="""    >>> loss, grad = fastloss.smooth_l1_loss(x, t, return_grad=True)
    >>> print(round(float(loss), 4), np.round(grad, 4))
    0.5833 [ 0.1667 -0.3333  0.1667]
    """)


@grad_out_apart("input")
def log_cosh_loss(input, target, *, weight=None, where=None, reduction="mean", return_grad=False,
                  grad_out=None):
    return _elementwise("log_cosh", input, target, 0.0, weight, where, reduction, return_grad,
                        grad_out)


log_cosh_loss.__doc__ = _elementwise_doc(
    "log(cosh(input - target)), gradient tanh(input - target).",
    r"l = \log\cosh r, \qquad \frac{\partial l}{\partial\, \mathrm{input}} = \tanh r",
    "Never overflows (``|r| + log1p(exp(-2|r|)) - log 2`` for large ``|r|``) and keeps full\n"
    "    relative accuracy for tiny residuals (through expm1, where the textbook formula\n"
    "    cancels). PyTorch has no log-cosh loss; ``optax.log_cosh`` is the same (no reduction).",
    example="""    >>> loss, grad = fastloss.log_cosh_loss(x, t, return_grad=True)
    >>> print(round(float(loss), 4), np.round(grad, 4))
    0.5217 [ 0.154  -0.3213  0.154 ]
    """)


# --- bounding-box losses --------------------------------------------------------------

def _as_boxes(a, name, dtype=None):
    b = as_float_array(a, name, dtype)
    if b.ndim == 0 or b.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4) with boxes as (x1, y1, x2, y2), "
                         f"got {b.shape}")
    return b


def _box(kind, boxes1, boxes2, eps, where, reduction, return_grad, grad_out):
    b1 = _as_boxes(boxes1, "boxes1")
    b2 = _as_boxes(boxes2, "boxes2", b1.dtype)
    reduction = check_reduction(reduction)
    check_grad_request(return_grad, grad_out)
    check_same_shape(b1, "boxes1", b2, "boxes2", "box pairs must match exactly; they are not "
                     "broadcast")
    e = check_real(eps, "eps", 0.0)
    lead = b1.shape[:-1]
    n = math.prod(lead)
    nt = _config.threads_for(4 * n)
    c1 = np.ascontiguousarray(b1).reshape(n, 4)
    c2 = np.ascontiguousarray(b2).reshape(n, 4)
    for name, c in (("boxes1", c1), ("boxes2", c2)):
        bad = _k.box_first_bad(c, nt)
        if bad >= 0:
            pos = np.unravel_index(bad, lead) if lead else ()
            pos = tuple(int(i) for i in pos)
            at = f"{name}[{pos[0] if len(pos) == 1 else pos}]" if pos else name
            raise ValueError(f"{at} = {c[bad].tolist()} has x2 < x1 or y2 < y1 "
                             f"(boxes must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2)")
    if where is not None:
        m = check_where(where, lead)
        return independent(lambda: _box(kind, b1, b2, e, None, "none", return_grad, grad_out),
                           m, lead, "sum" if reduction == "mean" and not m.any() else reduction,
                           return_grad)
    g1 = g2 = None
    if return_grad:
        g1, g2 = grad_buffers(grad_out, ["boxes1", "boxes2"], b1.shape, b1.dtype)
        if grad_out is not None:
            check_no_overlap([("grad_out[0]", g1), ("grad_out[1]", g2)],
                             [("boxes1", c1), ("boxes2", c2)])
    if reduction == "mean" and n == 0:
        reduction = "sum"     # torchvision: the mean of no pairs is 0 (0.0 * loss.sum())
    lout = np.empty(n, dtype=b1.dtype) if reduction == "none" else None
    total = _k.box(kind, c1, c2, lout, g1.reshape(n, 4) if g1 is not None else None,
                   g2.reshape(n, 4) if g2 is not None else None, e, grad_scale(reduction, n), nt)
    loss = reduce_elements(total, lout, lead, n, reduction, b1.dtype)
    return (loss, (g1, g2)) if return_grad else loss


def _box_doc(summary, math, notes, example):
    """A numpydoc docstring of a box loss around the parameters they all share."""
    return summary + """

    Parameters
    ----------
    boxes1, boxes2 : array_like, shape (..., 4)
        Arrays of the same shape, boxes as (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2 (else
        ValueError naming the position; torchvision does not check). Zero-area boxes give a
        finite loss and gradient (for eps > 0). Computed in boxes1's dtype; boxes2 is
        converted to it.
    eps : float >= 0, default 1e-7
        Added to the denominators as torchvision does.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" over box pairs (0 for none, as torchvision), "sum", or "none" (per pair, shape
        boxes1.shape[:-1]). torchvision's default is "none".
    return_grad : bool, default False
        Also return (grad_boxes1, grad_boxes2).
    grad_out : tuple of two ndarray, optional
        C-contiguous buffers of boxes1's shape and dtype for them.

    Returns
    -------
    loss : scalar or ndarray
        Compute dtype; "none": boxes1.shape[:-1].
    grads : tuple of two ndarray
        With ``return_grad=True``: (grad_boxes1, grad_boxes2), boxes1's shape.

    Notes
    -----
    With :math:`I` and :math:`U` the intersection and union areas,
    :math:`\\mathrm{IoU} = I / (U + \\epsilon)`, and :math:`C` the smallest box enclosing both:

    .. math::

        """ + math + """

    The gradient is the exact derivative of this formula with respect to the eight
    coordinates. At ties of the min/max defining the intersection and enclosing box, the
    gradient is split evenly between the two boxes, as PyTorch's autograd does.
    """ + notes + """

    Examples
    --------
    >>> b1, b2 = np.array([[0.0, 0.0, 2.0, 2.0]]), np.array([[1.0, 1.0, 3.0, 3.0]])
""" + example


@grad_out_apart("boxes1", "boxes2")
def generalized_box_iou_loss(boxes1, boxes2, *, eps=1e-7, where=None, reduction="mean",
                             return_grad=False,
                             grad_out=None):
    return _box(_k.GIOU, boxes1, boxes2, eps, where, reduction, return_grad, grad_out)


generalized_box_iou_loss.__doc__ = _box_doc(
    "torchvision's generalized_box_iou_loss: 1 - IoU + (area(C) - union) / area(C), C the\n"
    "    smallest box enclosing both.",
    r"l = 1 - \mathrm{IoU} + \frac{|C| - U}{|C| + \epsilon}",
    "Equivalent: ``torchvision.ops.generalized_box_iou_loss``.",
    """    >>> loss, (g1, g2) = fastloss.generalized_box_iou_loss(b1, b2, return_grad=True)
    >>> print(round(float(loss), 4), np.round(g1, 4))
    1.0794 [[-0.0779 -0.0779 -0.2336 -0.2336]]
    """)


@grad_out_apart("boxes1", "boxes2")
def distance_box_iou_loss(boxes1, boxes2, *, eps=1e-7, where=None, reduction="mean",
                          return_grad=False,
                          grad_out=None):
    return _box(_k.DIOU, boxes1, boxes2, eps, where, reduction, return_grad, grad_out)


distance_box_iou_loss.__doc__ = _box_doc(
    "torchvision's distance_box_iou_loss: ``1 - IoU + |center1 - center2|**2 / diagonal(C)**2``,\n"
    "    C the smallest enclosing box.",
    r"l = 1 - \mathrm{IoU} + \frac{\|c_1 - c_2\|^2}{\mathrm{diag}(C)^2 + \epsilon}",
    "Equivalent: ``torchvision.ops.distance_box_iou_loss``.",
    """    >>> loss, (g1, g2) = fastloss.distance_box_iou_loss(b1, b2, return_grad=True)
    >>> print(round(float(loss), 4), np.round(g1, 4))
    0.9683 [[-0.0593 -0.0593 -0.178  -0.178 ]]
    """)


@grad_out_apart("boxes1", "boxes2")
def complete_box_iou_loss(boxes1, boxes2, *, eps=1e-7, where=None, reduction="mean",
                          return_grad=False,
                          grad_out=None):
    return _box(_k.CIOU, boxes1, boxes2, eps, where, reduction, return_grad, grad_out)


complete_box_iou_loss.__doc__ = _box_doc(
    "torchvision's complete_box_iou_loss: the DIoU loss plus alpha * v.",
    r"l = l_\mathrm{DIoU} + \alpha v, \quad v = \frac{4}{\pi^2} \left(\mathrm{atan}"
    r"\frac{w_2}{h_2} - \mathrm{atan}\frac{w_1}{h_1}\right)^2, \quad "
    r"\alpha = \frac{v}{1 - \mathrm{IoU} + v + \epsilon}",
    "As in torchvision, alpha is a constant in the gradient (computed under no_grad).\n"
    "    atan(w / h) is evaluated as atan2(w, h): the same for h > 0, and finite for\n"
    "    zero-height boxes (torchvision gives NaN for 0/0); a point box (w = h = 0) has no\n"
    "    aspect ratio, so v = 0 for its pairs. Equivalent:\n"
    "    ``torchvision.ops.complete_box_iou_loss``.",
    """    >>> loss, (g1, g2) = fastloss.complete_box_iou_loss(b1, b2, return_grad=True)
    >>> print(round(float(loss), 4), np.round(g1, 4))     # same aspect ratio: v = 0
    0.9683 [[-0.0593 -0.0593 -0.178  -0.178 ]]
    """)


for _fn in (mse_loss, l1_loss, huber_loss, smooth_l1_loss, log_cosh_loss):
    document(_fn, "element",
             "        With `weight`, the mean's denominator is the sum of the unmasked weights.\n")
for _fn in (generalized_box_iou_loss, distance_box_iou_loss, complete_box_iou_loss):
    document(_fn, "pair", "        The mean of no pairs is 0 (as torchvision's for no boxes).\n")
