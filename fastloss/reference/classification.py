"""NumPy float64 oracles for the classification losses: plain formulas, same
signatures as the fast functions, used by the tests and the benchmark."""
import math

import numpy as np

from .common import finish, reduce
from .common import log_softmax as _log_softmax

__all__ = ["cross_entropy", "linear_cross_entropy", "binary_cross_entropy_with_logits",
           "sigmoid_focal_loss", "logsumexp", "softmax", "log_softmax"]


def cross_entropy(logits, target, *, axis=-1, weight=None, ignore_index=-100, label_smoothing=0.0,
                  z_loss=0.0, softcap=None, reduction="mean", return_grad=False):
    x = np.moveaxis(np.asarray(logits, dtype=np.float64), axis, -1)
    C = x.shape[-1]
    xc = softcap * np.tanh(x / softcap) if softcap else x
    logp, lse = _log_softmax(xc)
    p = np.exp(logp)
    w = np.ones(C) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = label_smoothing
    t = np.asarray(target)
    if t.dtype.kind not in "iu":            # probabilities: the class axis moves like the logits'
        t = np.moveaxis(t, axis, -1)
    with np.errstate(invalid="ignore"):
        if t.dtype.kind in "iu":
            valid = t != ignore_index
            y = np.where(valid, t, 0)
            wy = np.where(valid, w[y], 0.0)
            onehot = (np.arange(C) == y[..., None]).astype(np.float64)
            nll = -np.sum(onehot * np.where(onehot > 0, logp, 0.0), axis=-1)
            per = (1 - eps) * wy * nll
            coef = (1 - eps) * wy
            if eps > 0:
                per = per + eps / C * np.where(valid, -np.sum(np.where(w != 0, w * logp, 0.0), axis=-1), 0.0)
                coef = coef + np.where(valid, eps / C * w.sum(), 0.0)
            if z_loss > 0:
                per = per + z_loss * wy * np.where(valid, lse, 0.0) ** 2
                coef = coef + 2 * z_loss * wy * np.where(valid, lse, 0.0)
            grad = coef[..., None] * p - (1 - eps) * wy[..., None] * onehot
            if eps > 0:
                grad = grad - eps / C * w * valid[..., None]
            per = np.where(valid, per, 0.0)
            denom = wy.sum()
        else:
            valid = np.ones(x.shape[:-1], dtype=bool)
            tt = (1 - eps) * np.asarray(t, dtype=np.float64) + eps / C
            wt = w * tt
            per = -np.sum(np.where(wt != 0, wt * logp, 0.0), axis=-1) + z_loss * lse ** 2
            grad = (wt.sum(-1) + 2 * z_loss * lse)[..., None] * p - wt
            denom = per.size
    if softcap:
        grad = grad * (1 - (xc / softcap) ** 2)
    loss, scale = reduce(per, reduction, denom)
    # rows that count for nothing have gradient 0; counted rows under a scale of 1/0 = inf
    # are NaN (README), not the +-inf of a nonzero entry times inf
    grad = np.where(valid[..., None], grad * (scale if np.isfinite(scale) else np.nan), 0.0)
    return finish(loss, np.moveaxis(grad, -1, axis), return_grad)



def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                         ignore_index=-100, label_smoothing=0.0, z_loss=0.0, softcap=None,
                         reduction="mean", return_grad=False, grad_wrt=None):
    """cross_entropy of the materialised logits input @ W.T + b (class axis last), and the
    chain rule through the linear layer: with G = d loss / d logits, grad_input = G @ W,
    grad_weight = G^T @ input and grad_bias = sum of G, over all tokens. No grad_out or
    block_bytes (performance-only): the N x V logits are materialised at once."""
    x = np.asarray(input, dtype=np.float64)
    W = np.asarray(linear_weight, dtype=np.float64)
    logits = x @ W.T
    if linear_bias is not None:
        logits = logits + np.asarray(linear_bias, dtype=np.float64)
    loss, G = cross_entropy(logits, target, weight=weight, ignore_index=ignore_index,
                            label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
                            reduction=reduction, return_grad=True)
    if not return_grad:
        return loss
    if grad_wrt is None:
        grad_wrt = ("input", "linear_weight") + (("linear_bias",) if linear_bias is not None else ())
    G2 = G.reshape(-1, W.shape[0])                  # (tokens, V)
    x2 = x.reshape(G2.shape[0], W.shape[1])         # (tokens, D)
    grads = {"input": G @ W, "linear_weight": G2.T @ x2, "linear_bias": G2.sum(axis=0)}
    return loss, tuple(g for name, g in grads.items() if name in grad_wrt)  # argument order


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None,
                                     reduction="mean", return_grad=False):
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    pw = 1.0 if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)
    w = 1.0 if weight is None else np.asarray(weight, dtype=np.float64)
    lw = 1 + (pw - 1) * t
    with np.errstate(invalid="ignore", over="ignore"):
        # (1 - t) x + lw softplus(-x), as the kernel arranges it (no cancellation, and an
        # infinite logit gives inf, or NaN (0 * inf) where the target is all on its side)
        per = w * (np.where(x < 0, -pw * t * x, (1 - t) * x) + lw * np.log1p(np.exp(-np.abs(x))))
        grad = w * ((1 - t) - lw / (1 + np.exp(x)))      # sigmoid(-x) = 1 / (1 + e^x)
    per, grad = np.broadcast_arrays(per, grad)
    loss, scale = reduce(per, reduction, per.size)
    return finish(loss, grad * scale, return_grad)


def sigmoid_focal_loss(logits, target, *, alpha=0.25, gamma=2.0, reduction="mean",
                       return_grad=False):
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        p, q = 1 / (1 + np.exp(-x)), 1 / (1 + np.exp(x))      # sigmoid(x), sigmoid(-x)
        # bce and p - t in forms that do not cancel as p_t -> 1 (see the kernel)
        ce = np.where(x < 0, -t * x, (1 - t) * x) + np.log1p(np.exp(-np.abs(x)))
        dce = np.where(x < 0, p - t, (1 - t) - q)
        omp = p * (1 - t) + q * t                               # 1 - p_t
        f = np.where(omp < 0, np.nan, np.abs(omp) ** gamma) if gamma > 0 else np.ones_like(omp)
        df = np.where(omp == 0, 0.0, -gamma * f / omp * p * q * (2 * t - 1))
    a_t = alpha * t + (1 - alpha) * (1 - t) if alpha >= 0 else 1.0
    per = a_t * ce * f
    grad = a_t * (dce * f + ce * df)
    loss, scale = reduce(per, reduction, per.size)
    return finish(loss, grad * scale, return_grad)


def _axes_last(x, axis):
    """x (float64) with the axes of `axis` (an int, a tuple, or None: all) merged into one
    last axis, and a function that puts an array of that layout back in x's shape."""
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(range(x.ndim)) if axis is None else np.atleast_1d(axis).tolist()
    if x.ndim == 0:
        if any(a not in (0, -1) for a in axes):
            raise ValueError(f"axis {axis} is out of range for a 0-d array")
        return x.reshape(1), lambda y: y.reshape(())
    axes = [a % x.ndim for a in axes]
    dest = list(range(x.ndim - len(axes), x.ndim))
    xm = np.moveaxis(x, axes, dest)
    k = x.ndim - len(axes)
    return (xm.reshape(xm.shape[:k] + (math.prod(xm.shape[k:]),)),   # -1 fails for size 0
            lambda y: np.moveaxis(y.reshape(xm.shape), dest, axes))


def logsumexp(x, *, axis=-1, return_grad=False):
    xl, back = _axes_last(x, axis)
    logp, lse = _log_softmax(xl)
    return finish(lse[()] if lse.ndim == 0 else lse, back(np.exp(logp)), return_grad)


def softmax(x, *, axis=-1):
    xl, back = _axes_last(x, axis)
    return back(np.exp(_log_softmax(xl)[0]))


def log_softmax(x, *, axis=-1):
    xl, back = _axes_last(x, axis)
    return back(_log_softmax(xl)[0])
