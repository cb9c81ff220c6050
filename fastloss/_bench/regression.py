"""Benchmark cases for fastloss.regression: mse_loss, l1_loss, huber_loss, smooth_l1_loss,
log_cosh_loss (elementwise) and generalized/distance/complete_box_iou_loss (box pairs).

Peers: NumPy in the input dtype (elementwise) or the float64 oracle from
fastloss.reference (boxes); PyTorch's functional losses (mse, l1, huber, smooth_l1) or
torchvision's formulas written with torch ops (log-cosh, boxes; torchvision itself is
not needed); JAX jit(value_and_grad) of optax's formulas.
"""
import math

import numpy as np

from .. import regression as fl
from ..reference import regression as ref
from .builders import loss_cases, size
from .core import peer

FAMILY = "regression"
LOG2 = math.log(2.0)


# --- inputs -------------------------------------------------------------------------

def make_pair(shape, dtype, rng):
    """Predictions ~ N(0, 1) and targets at a residual of 0.05 + |N(0, 1.5^2)| either way
    (both sides of the Huber/smooth-L1 knee; never 0, where the libraries' subgradients
    of |r| differ: JAX takes 1, PyTorch and fastloss 0)."""
    dt = np.dtype(dtype)
    x = rng.standard_normal(shape, dtype=dt)
    r = 0.05 + np.abs(rng.standard_normal(shape, dtype=dt)) * np.asarray(1.5, dt)
    r *= np.where(rng.random(shape) < 0.5, -1, 1).astype(dt)
    return {"x": x, "t": x + r}


def make_boxes(shape, dtype, rng):
    """(N, 4) box pairs (x1, y1, x2, y2): boxes2 are boxes1 moved and resized a little
    (mostly overlapping, some not)."""
    n = shape[0]
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(1, 50, (n, 2))
    b1 = np.concatenate([xy, xy + wh], axis=1)
    xy2 = xy + rng.normal(0, 8, (n, 2))
    wh2 = wh * rng.uniform(0.5, 1.5, (n, 2))
    b2 = np.concatenate([xy2, xy2 + wh2], axis=1)
    return {"b1": b1.astype(dtype), "b2": b2.astype(dtype)}


# --- NumPy peers (input dtype) ----------------------------------------------------------

def _np_elementwise(point):
    def f(x, t, grad):
        r = x - t
        per, g = point(r)
        loss = np.mean(per)
        if not grad:
            return loss
        g *= g.dtype.type(1.0 / r.size)
        return loss, g
    return f


np_mse = _np_elementwise(lambda r: (r * r, 2 * r))
np_l1 = _np_elementwise(lambda r: (np.abs(r), np.sign(r)))
np_huber = _np_elementwise(lambda r: (np.where(np.abs(r) <= 1, 0.5 * r * r, np.abs(r) - 0.5),
                                      np.clip(r, -1, 1)))
np_smooth_l1 = np_huber                        # beta = delta = 1: the same function
np_log_cosh = _np_elementwise(lambda r: (np.logaddexp(r, -r) - r.dtype.type(LOG2), np.tanh(r)))


# --- PyTorch and JAX peers ----------------------------------------------------------------

def xp_mse(xp, x, t):
    return xp.mean((x - t) ** 2)


def xp_l1(xp, x, t):
    return xp.mean(xp.abs(x - t))


def xp_huber(xp, x, t, delta=1.0):
    """optax.huber_loss."""
    a = xp.abs(x - t)
    q = a - xp.clip_min(a - delta, 0.0)              # min(a, delta)
    return xp.mean(0.5 * q * q + delta * (a - q))


def xp_log_cosh(xp, x, t):
    """optax.log_cosh."""
    r = x - t
    return xp.mean(xp.logaddexp(r, -r) - LOG2)


def _torch_fn(name, **kw):
    return lambda x, t: getattr(peer("torch").nn.functional, name)(x, t, **kw)


def _box_common(xp, b1, b2, eps):
    """torchvision's _loss_inter_union and the enclosing box."""
    x1, y1, x2, y2 = b1[:, 0], b1[:, 1], b1[:, 2], b1[:, 3]
    X1, Y1, X2, Y2 = b2[:, 0], b2[:, 1], b2[:, 2], b2[:, 3]
    iw = xp.minimum(x2, X2) - xp.maximum(x1, X1)
    ih = xp.minimum(y2, Y2) - xp.maximum(y1, Y1)
    inter = xp.where((iw > 0) & (ih > 0), iw * ih, 0.0 * iw)
    union = (x2 - x1) * (y2 - y1) + (X2 - X1) * (Y2 - Y1) - inter
    iou = inter / (union + eps)
    cw = xp.maximum(x2, X2) - xp.minimum(x1, X1)
    ch = xp.maximum(y2, Y2) - xp.minimum(y1, Y1)
    return (x1, y1, x2, y2, X1, Y1, X2, Y2), union, iou, cw, ch


def xp_giou(xp, b1, b2, eps=1e-7):
    _, union, iou, cw, ch = _box_common(xp, b1, b2, eps)
    area_c = cw * ch
    return xp.mean(1 - iou + (area_c - union) / (area_c + eps))


def _diou(xp, b1, b2, eps):
    (x1, y1, x2, y2, X1, Y1, X2, Y2), _, iou, cw, ch = _box_common(xp, b1, b2, eps)
    diag = cw * cw + ch * ch + eps
    dx = (x1 + x2) / 2 - (X1 + X2) / 2
    dy = (y1 + y2) / 2 - (Y1 + Y2) / 2
    return 1 - iou + (dx * dx + dy * dy) / diag, iou, (x2 - x1, y2 - y1, X2 - X1, Y2 - Y1)


def xp_diou(xp, b1, b2, eps=1e-7):
    return xp.mean(_diou(xp, b1, b2, eps)[0])


def xp_ciou(xp, b1, b2, eps=1e-7):
    """torchvision's complete_box_iou_loss (alpha without gradient)."""
    loss, iou, (w1, h1, w2, h2) = _diou(xp, b1, b2, eps)
    v = (4 / math.pi ** 2) * (xp.atan2(w2, h2) - xp.atan2(w1, h1)) ** 2
    alpha = xp.stop(v / (1 - iou + v + eps))
    return xp.mean(loss + alpha * v)


# --- the cases ------------------------------------------------------------------------

def _elem_bytes(shape, s, grad):
    return int(np.prod(shape)) * s * (3 if grad else 2)


def _elem_formula(grad):
    return "read input, target (2 n s)" + (" + write grad (n s)" if grad else "")


def _box_bytes(shape, s, grad):
    return 2 * shape[0] * 4 * s * (2 if grad else 1)


def _box_formula(grad):
    return "read boxes1, boxes2 (2 N 4 s)" + (" + write 2 grads (2 N 4 s)" if grad else "")


_ELEM = [size((8192, 1024), (256, 1024))]
_BOX = [size((131072, 4), (4096, 4))]


def _elementwise(func, np_fn, xp_fn, torch_fn=None):
    return loss_cases(func, FAMILY, getattr(fl, func), ("x", "t"), make_pair, _ELEM,
                      numpy=np_fn, xp_fn=xp_fn, torch=torch_fn, nbytes=_elem_bytes,
                      formula=_elem_formula)


def _boxes(func, xp_fn):
    return loss_cases(func, FAMILY, getattr(fl, func), ("b1", "b2"), make_boxes, _BOX,
                      wrt=(0, 1), oracle=getattr(ref, func), xp_fn=xp_fn, nbytes=_box_bytes,
                      formula=_box_formula,
                      notes={"torch": "torchvision's formula in torch ops"})


CASES = (
    _elementwise("mse_loss", np_mse, xp_mse, _torch_fn("mse_loss"))
    + _elementwise("l1_loss", np_l1, xp_l1, _torch_fn("l1_loss"))
    + _elementwise("huber_loss", np_huber, xp_huber, _torch_fn("huber_loss", delta=1.0))
    + _elementwise("smooth_l1_loss", np_smooth_l1, xp_huber, _torch_fn("smooth_l1_loss", beta=1.0))
    + _elementwise("log_cosh_loss", np_log_cosh, xp_log_cosh)
    + _boxes("generalized_box_iou_loss", xp_giou)
    + _boxes("distance_box_iou_loss", xp_diou)
    + _boxes("complete_box_iou_loss", xp_ciou)
)
