"""NumPy float64 oracles for the regression and bounding-box losses: plain formulas,
same signatures as the fast functions (less grad_out), used by the tests and the
benchmark."""
import numpy as np

from .common import finish, reduce

__all__ = ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "log_cosh_loss",
           "generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"]


def _elementwise(point, input, target, weight, reduction, return_grad):
    x = np.asarray(input, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    r = x - t
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        per, grad = point(r)
    denom = per.size
    if weight is not None:
        w = np.broadcast_to(np.asarray(weight, dtype=np.float64), r.shape)
        per, grad = w * per, w * grad
        denom = np.sum(w)
    loss, scale = reduce(per, reduction, denom)
    with np.errstate(invalid="ignore"):
        return finish(loss, grad * scale, return_grad)


def mse_loss(input, target, *, weight=None, reduction="mean", return_grad=False):
    return _elementwise(lambda r: (r * r, 2 * r), input, target, weight, reduction, return_grad)


def l1_loss(input, target, *, weight=None, reduction="mean", return_grad=False):
    return _elementwise(lambda r: (np.abs(r), np.sign(r)), input, target, weight, reduction,
                        return_grad)


def smooth_l1_loss(input, target, *, beta=1.0, weight=None, reduction="mean", return_grad=False):
    def point(r):
        a = np.abs(r)
        inside = a < beta
        return (np.where(inside, 0.5 * r * r / beta, a - 0.5 * beta),
                np.where(inside, r / beta, np.sign(r)))
    return _elementwise(point, input, target, weight, reduction, return_grad)


def huber_loss(input, target, *, delta=1.0, weight=None, reduction="mean", return_grad=False):
    def point(r):
        a = np.abs(r)
        return (np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta)),
                np.clip(r, -delta, delta))
    return _elementwise(point, input, target, weight, reduction, return_grad)


def log_cosh_loss(input, target, *, weight=None, reduction="mean", return_grad=False):
    def point(r):
        a = np.abs(r)
        # cosh(a) - 1 = 2 sinh(a/2)^2 keeps tiny a accurate; the other form cannot overflow
        small = np.log1p(2 * np.sinh(np.minimum(a, 1) / 2) ** 2)
        large = a + np.log1p(np.exp(-2 * a)) - np.log(2.0)
        return np.where(a < 1, small, large), np.tanh(r)
    return _elementwise(point, input, target, weight, reduction, return_grad)


# --- boxes ------------------------------------------------------------------------------

def _share(a, b, greater):
    """d max(a, b)/da (greater) or d min(a, b)/da: 1, 0, 1/2 on ties (PyTorch's rule)."""
    win = a > b if greater else a < b
    return np.where(win, 1.0, np.where(a == b, 0.5, 0.0))


def _box(kind, boxes1, boxes2, eps, reduction, return_grad):
    b1 = np.asarray(boxes1, dtype=np.float64)
    b2 = np.asarray(boxes2, dtype=np.float64)
    x1, y1, x2, y2 = np.moveaxis(b1, -1, 0)
    X1, Y1, X2, Y2 = np.moveaxis(b2, -1, 0)
    w1, h1, w2, h2 = x2 - x1, y2 - y1, X2 - X1, Y2 - Y1
    iw = np.minimum(x2, X2) - np.maximum(x1, X1)
    ih = np.minimum(y2, Y2) - np.maximum(y1, Y1)
    ov = (iw > 0) & (ih > 0)
    inter = np.where(ov, iw * ih, 0.0)
    union = w1 * h1 + w2 * h2 - inter
    iou = inter / (union + eps)
    cw = np.maximum(x2, X2) - np.minimum(x1, X1)
    ch = np.maximum(y2, Y2) - np.minimum(y1, Y1)
    zero = np.zeros_like(iou)
    # dL/d(intermediate) per pair, for a unit upstream gradient
    d_iou = -1.0
    d_union_extra, d_cw, d_ch, d_dx, d_dy = zero, zero, zero, zero, zero
    d_w1, d_h1, d_w2, d_h2 = zero, zero, zero, zero
    if kind == "giou":
        area_c = cw * ch
        per = 1 - iou + (area_c - union) / (area_c + eps)
        d_area_c = (union + eps) / (area_c + eps) ** 2
        d_union_extra = -1 / (area_c + eps)
        d_cw, d_ch = d_area_c * ch, d_area_c * cw
    else:
        dx = (x1 + x2) / 2 - (X1 + X2) / 2
        dy = (y1 + y2) / 2 - (Y1 + Y2) / 2
        c2 = dx ** 2 + dy ** 2
        d2 = cw ** 2 + ch ** 2 + eps
        per = 1 - iou + c2 / d2
        d_d2 = -c2 / d2 ** 2
        d_cw, d_ch = d_d2 * 2 * cw, d_d2 * 2 * ch
        d_dx, d_dy = 2 * dx / d2, 2 * dy / d2
        if kind == "ciou":
            # atan(w/h) as atan2(w, h) (finite for h = 0); a point (w = h = 0) has no
            # aspect ratio: no penalty and no gradient through v
            r1, r2 = w1 ** 2 + h1 ** 2, w2 ** 2 + h2 ** 2
            shaped = (r1 > 0) & (r2 > 0)
            da = np.where(shaped, np.arctan2(w2, h2) - np.arctan2(w1, h1), 0.0)
            v = 4 / np.pi ** 2 * da ** 2
            alpha = v / (1 - iou + v + eps)
            per = per + alpha * v
            d_da = alpha * 8 / np.pi ** 2 * da
            with np.errstate(invalid="ignore", divide="ignore"):
                d_w1 = np.where(shaped, -d_da * h1 / r1, 0.0)
                d_h1 = np.where(shaped, d_da * w1 / r1, 0.0)
                d_w2 = np.where(shaped, d_da * h2 / r2, 0.0)
                d_h2 = np.where(shaped, -d_da * w2 / r2, 0.0)
    # iou = inter / (union + eps), union = area1 + area2 - inter
    d_union = d_iou * -inter / (union + eps) ** 2 + d_union_extra
    d_inter = d_iou / (union + eps) - d_union
    d_w1, d_h1 = d_w1 + d_union * h1, d_h1 + d_union * w1
    d_w2, d_h2 = d_w2 + d_union * h2, d_h2 + d_union * w2
    d_iw = np.where(ov, d_inter * ih, 0.0)
    d_ih = np.where(ov, d_inter * iw, 0.0)
    g1 = np.empty(b1.shape)
    g2 = np.empty(b1.shape)
    for j, (lo1, hi1, lo2, hi2, d_s1, d_s2, d_i, d_c, d_ctr) in enumerate((
            (x1, x2, X1, X2, d_w1, d_w2, d_iw, d_cw, d_dx),
            (y1, y2, Y1, Y2, d_h1, d_h2, d_ih, d_ch, d_dy))):
        s_lo, s_hi = _share(lo1, lo2, True), _share(hi1, hi2, False)     # intersection corners
        e_lo, e_hi = _share(lo1, lo2, False), _share(hi1, hi2, True)     # enclosure corners
        g1[..., j] = -d_s1 - d_i * s_lo - d_c * e_lo + d_ctr / 2
        g1[..., j + 2] = d_s1 + d_i * s_hi + d_c * e_hi + d_ctr / 2
        g2[..., j] = -d_s2 - d_i * (1 - s_lo) - d_c * (1 - e_lo) - d_ctr / 2
        g2[..., j + 2] = d_s2 + d_i * (1 - s_hi) + d_c * (1 - e_hi) - d_ctr / 2
    if reduction == "mean" and per.size == 0:
        reduction = "sum"     # torchvision: 0.0 * loss.sum()
    loss, scale = reduce(per, reduction, per.size)
    return finish(loss, (g1 * scale, g2 * scale), return_grad)


def generalized_box_iou_loss(boxes1, boxes2, *, eps=1e-7, reduction="mean", return_grad=False):
    return _box("giou", boxes1, boxes2, eps, reduction, return_grad)


def distance_box_iou_loss(boxes1, boxes2, *, eps=1e-7, reduction="mean", return_grad=False):
    return _box("diou", boxes1, boxes2, eps, reduction, return_grad)


def complete_box_iou_loss(boxes1, boxes2, *, eps=1e-7, reduction="mean", return_grad=False):
    return _box("ciou", boxes1, boxes2, eps, reduction, return_grad)
