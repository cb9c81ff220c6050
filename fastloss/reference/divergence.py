"""NumPy float64 oracles for the divergences between softmax distributions: plain
formulas, same signatures as the fast functions (less grad_out), used by the tests and
the benchmark. The Gaussian family's oracles are in gaussian.py."""
import numpy as np

from .common import finish, log_softmax, reduce

__all__ = ["entropy", "kl_divergence", "js_divergence", "distillation_loss"]


def _log_softmax(x, axis, temperature=1.0):
    """log softmax(x / T) with the class axis last (common.log_softmax: NaN for a row
    whose max is not finite)."""
    return log_softmax(np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1), temperature)[0]


def _plogr(p, r):
    """p * r with 0 wherever p == 0 (0 log 0 = 0); NaN stays NaN."""
    with np.errstate(invalid="ignore"):
        return np.where(p == 0, 0.0, p * r)


def entropy(logits, *, axis=-1, reduction="mean", return_grad=False):
    lp = _log_softmax(logits, axis)
    p = np.exp(lp)
    H = -np.sum(_plogr(p, lp), axis=-1)
    grad = -_plogr(p, lp + H[..., None])
    loss, scale = reduce(H, reduction, H.size)
    return finish(loss, np.moveaxis(grad * scale, -1, axis), return_grad)


def kl_divergence(p_logits, q_logits, *, axis=-1, temperature=1.0, reduction="mean",
                  return_grad=False):
    lp = _log_softmax(p_logits, axis, temperature)
    lq = _log_softmax(q_logits, axis, temperature)
    p, q = np.exp(lp), np.exp(lq)
    with np.errstate(invalid="ignore"):
        kl = np.sum(_plogr(p, lp - lq), axis=-1)
        # p (log p - log q) - p KL: NaN where p = 0 and KL = +inf, as the kernel
        gp = (_plogr(p, lp - lq) - p * kl[..., None]) / temperature
    gq = (q - p) / temperature
    loss, scale = reduce(kl, reduction, kl.size)
    g = (np.moveaxis(gp * scale, -1, axis), np.moveaxis(gq * scale, -1, axis))
    return finish(loss, g, return_grad)


def js_divergence(p_logits, q_logits, *, beta=0.5, axis=-1, temperature=1.0, reduction="mean",
                  return_grad=False):
    lp = _log_softmax(p_logits, axis, temperature)
    lq = _log_softmax(q_logits, axis, temperature)
    p, q = np.exp(lp), np.exp(lq)
    with np.errstate(divide="ignore", invalid="ignore"):
        lm = np.log(beta * p + (1 - beta) * q)
        kp = np.sum(_plogr(p, lp - lm), axis=-1)
        kq = np.sum(_plogr(q, lq - lm), axis=-1)
        gp = beta * _plogr(p, lp - lm - kp[..., None]) / temperature
        gq = (1 - beta) * _plogr(q, lq - lm - kq[..., None]) / temperature
    if beta in (0.0, 1.0):          # m is one of p, q: the divergence is 0
        js, gp, gq = np.zeros_like(kp), np.zeros_like(gp), np.zeros_like(gq)
    else:
        js = beta * kp + (1 - beta) * kq
    # a pair with a row that is no distribution (README "Special values"): NaN rows
    bad = (np.isnan(lp).any(axis=-1) | np.isnan(lq).any(axis=-1))[..., None]
    js = np.where(bad[..., 0], np.nan, js)
    gp, gq = np.where(bad, np.nan, gp), np.where(bad, np.nan, gq)
    loss, scale = reduce(js, reduction, js.size)
    g = (np.moveaxis(gp * scale, -1, axis), np.moveaxis(gq * scale, -1, axis))
    return finish(loss, g, return_grad)


def distillation_loss(student_logits, teacher_logits, *, temperature=1.0, target=None, alpha=0.5,
                      axis=-1, ignore_index=-100, reduction="mean", return_grad=False):
    T = temperature
    ls_T = _log_softmax(student_logits, axis, T)
    lt_T = _log_softmax(teacher_logits, axis, T)
    pt = np.exp(lt_T)
    kl = np.sum(_plogr(pt, lt_T - ls_T), axis=-1)
    gkl = T * (np.exp(ls_T) - pt)                       # d(T^2 KL)/ds
    if target is None:
        per, grad, denom = T * T * kl, gkl, kl.size
    else:
        y = np.asarray(target)
        valid = y != ignore_index
        ls = _log_softmax(student_logits, axis)
        yi = np.where(valid, y, 0)[..., None]
        onehot = np.zeros_like(ls)
        np.put_along_axis(onehot, yi, 1.0, axis=-1)
        ce = -np.take_along_axis(ls, yi, axis=-1)[..., 0]
        # a term of weight 0 (alpha = 0 or 1) is left out: 0, even where it is inf or NaN
        kl_t, kl_g = (alpha * T * T * kl, alpha * gkl) if alpha != 0 else (0.0, 0.0)
        ce_t, ce_g = ((1 - alpha) * ce, (1 - alpha) * (np.exp(ls) - onehot)) if alpha != 1 else (0.0, 0.0)
        per = np.where(valid, kl_t + ce_t, 0.0)
        grad = np.broadcast_to(kl_g + ce_g, ls.shape)
        denom = np.count_nonzero(valid)
    loss, scale = reduce(per, reduction, denom)
    with np.errstate(invalid="ignore"):
        grad = grad * scale
    if target is not None:                  # 0 where nothing counts, also under a scale of 1/0
        grad = np.where(valid[..., None], grad, 0.0)
    return finish(loss, np.moveaxis(grad, -1, axis), return_grad)
