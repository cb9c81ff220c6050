"""Benchmark cases for fastloss.divergence: entropy, kl_divergence, js_divergence,
distillation_loss (rows of logits). The Gaussian family's cases are in gaussian.py.

Peers: NumPy in the input dtype; PyTorch's kl_div, or the formula in torch ops; JAX
jit(value_and_grad) of the same formula.
"""
import numpy as np

from .. import divergence as fl
from .builders import bytes_formula, half_cases, loss_cases, rows_bytes, size
from .core import peer

FAMILY = "divergence"
T_DISTILL = 2.0


# --- inputs -------------------------------------------------------------------------

def make_pair(shape, dtype, rng):
    """Two logit arrays ~ N(0, 2^2) (rows are distributions over the last axis) and
    int64 labels (for distillation's hard-label term)."""
    dt = np.dtype(dtype)
    two = np.asarray(2, dt)
    return {"p": rng.standard_normal(shape, dtype=dt) * two,
            "q": rng.standard_normal(shape, dtype=dt) * two,
            "y": rng.integers(0, shape[-1], shape[0])}


# --- NumPy peers (input dtype) ----------------------------------------------------------

def _log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    z = x - m
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def np_entropy(x, grad):
    lp = _log_softmax(x)
    p = np.exp(lp)
    h = -np.sum(p * lp, axis=1)
    loss = np.mean(h)
    if not grad:
        return loss
    lp += h[:, None]
    lp *= p
    lp *= lp.dtype.type(-1.0 / x.shape[0])
    return loss, lp


def np_kl(p, q, grad):
    lp, lq = _log_softmax(p), _log_softmax(q)
    pp = np.exp(lp)
    diff = lp - lq
    kl = np.sum(pp * diff, axis=1)
    loss = np.mean(kl)
    if not grad:
        return loss
    s = diff.dtype.type(1.0 / p.shape[0])
    diff -= kl[:, None]
    diff *= pp
    diff *= s
    gq = np.exp(lq)
    gq -= pp
    gq *= s
    return loss, diff, gq


def np_kl_f32(p, q, grad):
    """Half logits: NumPy computes on float32 copies."""
    return np_kl(p.astype(np.float32), q.astype(np.float32), grad)


def np_js(p, q, grad, beta=0.5):
    lp, lq = _log_softmax(p), _log_softmax(q)
    pp, qq = np.exp(lp), np.exp(lq)
    lm = np.log(beta * pp + (1 - beta) * qq)
    lp -= lm
    lq -= lm
    kp = np.sum(pp * lp, axis=1)
    kq = np.sum(qq * lq, axis=1)
    loss = np.mean(beta * kp + (1 - beta) * kq)
    if not grad:
        return loss
    s = p.dtype.type(1.0 / p.shape[0])
    lp -= kp[:, None]
    lp *= pp
    lp *= beta * s
    lq -= kq[:, None]
    lq *= qq
    lq *= (1 - beta) * s
    return loss, lp, lq


def np_distill(s, t, y, grad, T=T_DISTILL, alpha=0.5):
    n = s.shape[0]
    rows = np.arange(n)
    ls_t = _log_softmax(s / s.dtype.type(T))
    lt_t = _log_softmax(t / t.dtype.type(T))
    pt = np.exp(lt_t)
    kl = np.sum(pt * (lt_t - ls_t), axis=1)
    ls = _log_softmax(s)
    loss = np.mean(alpha * T * T * kl - (1 - alpha) * ls[rows, y])
    if not grad:
        return loss
    g = np.exp(ls)
    g[rows, y] -= 1
    g *= (1 - alpha) / n
    np.exp(ls_t, out=ls_t)
    ls_t -= pt
    ls_t *= alpha * T / n
    g += ls_t
    return loss, g


# --- PyTorch and JAX peers --------------------------------------------------------------

def xp_entropy(xp, x):
    lp = xp.log_softmax(x, -1)
    return -xp.mean(xp.sum(xp.exp(lp) * lp, -1))


def xp_kl(xp, p, q):
    lp, lq = xp.log_softmax(p, -1), xp.log_softmax(q, -1)
    return xp.mean(xp.sum(xp.exp(lp) * (lp - lq), -1))


def torch_kl(p, q):
    torch = peer("torch")
    return torch.nn.functional.kl_div(torch.log_softmax(q, -1), torch.log_softmax(p, -1),
                                      reduction="batchmean", log_target=True)


def xp_js(xp, p, q, beta=0.5):
    lp, lq = xp.log_softmax(p, -1), xp.log_softmax(q, -1)
    pp, qq = xp.exp(lp), xp.exp(lq)
    lm = xp.log(beta * pp + (1 - beta) * qq)
    return xp.mean(beta * xp.sum(pp * (lp - lm), -1) + (1 - beta) * xp.sum(qq * (lq - lm), -1))


def xp_distill(xp, s, t, y, T=T_DISTILL, alpha=0.5):
    lt = xp.log_softmax(t / T, -1)
    kl = xp.sum(xp.exp(lt) * (lt - xp.log_softmax(s / T, -1)), -1)
    ce = -xp.pick(xp.log_softmax(s, -1), y)
    return xp.mean(alpha * T * T * kl + (1 - alpha) * ce)


# --- the cases ------------------------------------------------------------------------

_ROWS = [size((1024, 8192), (64, 1024)),
         # few classes (CIFAR-10-like heads): rows of a vector or less, a blocked path
         size((65536, 10), (8192, 10), "c10")]

CASES = (
    loss_cases("entropy", FAMILY, fl.entropy, ("p",), make_pair, _ROWS, numpy=np_entropy,
               xp_fn=xp_entropy, nbytes=rows_bytes(1, 1),
               formula=bytes_formula("read logits N C s", "write grad N C s"))
    + loss_cases("kl_divergence", FAMILY, fl.kl_divergence, ("p", "q"), make_pair, _ROWS,
                 wrt=(0, 1), numpy=np_kl, xp_fn=xp_kl, torch=torch_kl, nbytes=rows_bytes(2, 2),
                 formula=bytes_formula("read p, q logits 2 N C s", "write 2 grads 2 N C s"))
    + half_cases("kl_divergence", make_pair, ("p", "q"), _ROWS, rows_bytes(2, 2), family=FAMILY,
                 fl_fn=fl.kl_divergence, args=("p", "q"), wrt=(0, 1), numpy=np_kl_f32,
                 xp_fn=xp_kl, torch=torch_kl, notes={"numpy": "on float32 copies"},
                 formula=bytes_formula("read p, q logits 2 N C s", "write 2 grads 2 N C s"))
    + loss_cases("js_divergence", FAMILY, fl.js_divergence, ("p", "q"), make_pair, _ROWS,
                 wrt=(0, 1), numpy=np_js, xp_fn=xp_js, nbytes=rows_bytes(2, 2),
                 formula=bytes_formula("read p, q logits 2 N C s", "write 2 grads 2 N C s"))
    + loss_cases("distillation_loss", FAMILY, fl.distillation_loss, ("p", "q"), make_pair, _ROWS,
                 kw_inputs={"target": "y"}, kwargs={"temperature": T_DISTILL, "alpha": 0.5},
                 numpy=np_distill, xp_fn=xp_distill,
                 nbytes=lambda shp, s, g: int(np.prod(shp)) * s * (3 if g else 2) + 8 * shp[0],
                 formula=bytes_formula("read student, teacher 2 N C s + labels 8 N",
                                       "write grad N C s"))
)
