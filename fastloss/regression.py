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
                      check_real, check_reduction, check_same_shape)
from ._layout import flat_full, grad_buffers, periodic
from ._reduce import grad_scale, reduce_elements

__all__ = ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "log_cosh_loss",
           "generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"]

_config.register_kernels(_k)


# --- elementwise losses ---------------------------------------------------------------

def _elementwise(name, input, target, param, weight, reduction, return_grad, grad_out):
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
    g = grad_buffers(grad_out, ["input"], x.shape, x.dtype)[0] if return_grad else None
    if grad_out is not None:
        check_no_overlap([("grad_out", g)], [("input", x), ("target", t), ("weight", wa)],
                         in_place=("input",))
    lout = np.empty(n, dtype=x.dtype) if reduction == "none" else None
    total = _k.elementwise(name, flat_full(x, x.shape), flat_full(t, x.shape), w, period, lout,
                           g.reshape(-1) if g is not None else None, param,
                           grad_scale(reduction, denom), _config.threads_for(n))
    loss = reduce_elements(total, lout, x.shape, denom, reduction, x.dtype)
    return (loss, g) if return_grad else loss


_COMMON_DOC = """
    input, target: arrays of exactly the same shape (no broadcasting: a (4,) input
    against a (4, 1) target is a ValueError, not a (4, 4) loss). Computed in the
    input's dtype (float32/float64 kept; float16 -> float32; ints, bool -> float64);
    target is converted to it.
    weight: per-element weights broadcast against input; "mean" is then
    sum(weight * loss) / sum(weight) over the broadcast weights (NaN when that is 0).
    reduction: "mean" (default), "sum" or "none" (per-element, weighted, losses).
    return_grad: also return the gradient with respect to input (the gradient with
    respect to target is its negative). grad_out: a C-contiguous buffer of input's
    shape and dtype to write it into; it may be `input` itself (in place), and must not
    otherwise overlap input, target or weight (ValueError).
    """


def mse_loss(input, target, *, weight=None, reduction="mean", return_grad=False, grad_out=None):
    return _elementwise("mse", input, target, 0.0, weight, reduction, return_grad, grad_out)


mse_loss.__doc__ = """Mean squared error: (input - target)**2, gradient 2 (input - target).
    """ + _COMMON_DOC


def l1_loss(input, target, *, weight=None, reduction="mean", return_grad=False, grad_out=None):
    return _elementwise("l1", input, target, 0.0, weight, reduction, return_grad, grad_out)


l1_loss.__doc__ = """Mean absolute error: |input - target|, gradient sign(input - target)
    with sign(0) = 0 (as PyTorch).
    """ + _COMMON_DOC


def huber_loss(input, target, *, delta=1.0, weight=None, reduction="mean", return_grad=False,
               grad_out=None):
    d = check_real(delta, "delta", 0.0, low_open=True)
    return _elementwise("huber", input, target, d, weight, reduction, return_grad, grad_out)


huber_loss.__doc__ = """PyTorch's huber_loss: r**2 / 2 where |r| <= delta, else
    delta * (|r| - delta / 2), with r = input - target; gradient clip(r, -delta, delta).
    Equal to delta * smooth_l1_loss(beta=delta). delta must be > 0.
    """ + _COMMON_DOC


def smooth_l1_loss(input, target, *, beta=1.0, weight=None, reduction="mean", return_grad=False,
                   grad_out=None):
    b = check_real(beta, "beta", 0.0)
    return _elementwise("smooth_l1", input, target, b, weight, reduction, return_grad, grad_out)


smooth_l1_loss.__doc__ = """PyTorch's smooth_l1_loss: r**2 / (2 beta) where |r| < beta, else
    |r| - beta / 2, with r = input - target; gradient r / beta or sign(r). beta must be
    >= 0; beta = 0 is l1_loss.
    """ + _COMMON_DOC


def log_cosh_loss(input, target, *, weight=None, reduction="mean", return_grad=False,
                  grad_out=None):
    return _elementwise("log_cosh", input, target, 0.0, weight, reduction, return_grad, grad_out)


log_cosh_loss.__doc__ = """log(cosh(input - target)), gradient tanh(input - target). Never
    overflows (|r| + log1p(exp(-2|r|)) - log 2 for large |r|) and keeps full relative
    accuracy for tiny residuals (through expm1, where the textbook formula cancels).
    """ + _COMMON_DOC


# --- bounding-box losses --------------------------------------------------------------

def _as_boxes(a, name, dtype=None):
    b = as_float_array(a, name, dtype)
    if b.ndim == 0 or b.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4) with boxes as (x1, y1, x2, y2), "
                         f"got {b.shape}")
    return b


def _box(kind, boxes1, boxes2, eps, reduction, return_grad, grad_out):
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
            where = f"{name}[{pos[0] if len(pos) == 1 else pos}]" if pos else name
            raise ValueError(f"{where} = {c[bad].tolist()} has x2 < x1 or y2 < y1 "
                             f"(boxes must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2)")
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


_BOX_DOC = """
    boxes1, boxes2: (..., 4) arrays of the same shape, boxes as (x1, y1, x2, y2) with
    x1 <= x2 and y1 <= y2 (else ValueError; torchvision does not check). Zero-area
    boxes give a finite loss and gradient (for eps > 0). Computed in boxes1's dtype;
    boxes2 is converted to it.
    eps: >= 0, added to the denominators as torchvision does.
    reduction: "mean" (default, over box pairs; 0 for none, as torchvision), "sum" or "none"
    (per pair, shape boxes1.shape[:-1]). torchvision's default is "none".
    return_grad: also return (grad_boxes1, grad_boxes2); grad_out: a tuple of two
    C-contiguous buffers of boxes1's shape and dtype for them. At ties of the
    min/max defining the intersection and enclosing box, the gradient is split
    evenly between the two boxes, as PyTorch's autograd does.
    """


def generalized_box_iou_loss(boxes1, boxes2, *, eps=1e-7, reduction="mean", return_grad=False,
                             grad_out=None):
    return _box(_k.GIOU, boxes1, boxes2, eps, reduction, return_grad, grad_out)


generalized_box_iou_loss.__doc__ = """torchvision's generalized_box_iou_loss:
    1 - IoU + (area(C) - union) / area(C), C the smallest box enclosing both.
    """ + _BOX_DOC


def distance_box_iou_loss(boxes1, boxes2, *, eps=1e-7, reduction="mean", return_grad=False,
                          grad_out=None):
    return _box(_k.DIOU, boxes1, boxes2, eps, reduction, return_grad, grad_out)


distance_box_iou_loss.__doc__ = """torchvision's distance_box_iou_loss:
    1 - IoU + |center1 - center2|**2 / diagonal(C)**2, C the smallest enclosing box.
    """ + _BOX_DOC


def complete_box_iou_loss(boxes1, boxes2, *, eps=1e-7, reduction="mean", return_grad=False,
                          grad_out=None):
    return _box(_k.CIOU, boxes1, boxes2, eps, reduction, return_grad, grad_out)


complete_box_iou_loss.__doc__ = """torchvision's complete_box_iou_loss: the DIoU loss plus
    alpha * v, v = 4 / pi**2 * (atan(w2 / h2) - atan(w1 / h1))**2 and
    alpha = v / (1 - IoU + v + eps). As in torchvision, alpha is a constant in the
    gradient (computed under no_grad). atan(w / h) is evaluated as atan2(w, h): the
    same for h > 0, and finite for zero-height boxes (torchvision gives NaN for 0/0); a
    point box (w = h = 0) has no aspect ratio, so v = 0 for its pairs.
    """ + _BOX_DOC
