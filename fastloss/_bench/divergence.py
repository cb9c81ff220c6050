"""Benchmark cases for fastloss.divergence: entropy, kl_divergence, js_divergence,
distillation_loss (rows of logits), gaussian_kl, gaussian_nll_loss, vae_loss
(elementwise with row sums) and mvn_kl (small full covariances, LAPACK).

Peers: NumPy in the input dtype where the gradient is a few lines, else the float64
oracle from fastloss.reference; PyTorch's kl_div and gaussian_nll_loss, or the formula
in torch ops; JAX jit(value_and_grad) of the same formula.
"""
import numpy as np

from .. import divergence as fl
from ..reference import divergence as ref
from .builders import loss_cases, size
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


def make_latent(shape, dtype, rng):
    """mu ~ N(0, 1), logvar ~ N(0, 0.5^2)."""
    dt = np.dtype(dtype)
    return {"mu": rng.standard_normal(shape, dtype=dt),
            "lv": rng.standard_normal(shape, dtype=dt) * np.asarray(0.5, dt)}


def make_nll(shape, dtype, rng):
    dt = np.dtype(dtype)
    x = rng.standard_normal(shape, dtype=dt)
    return {"x": x, "t": x + rng.standard_normal(shape, dtype=dt),
            "var": rng.uniform(0.1, 2.0, shape).astype(dt)}


def make_vae(shape, dtype, rng):
    """recon and x of `shape` (batch, data), mu and logvar (batch, 32)."""
    dt = np.dtype(dtype)
    b = shape[0]
    return {"recon": rng.standard_normal(shape, dtype=dt), "x": rng.random(shape).astype(dt),
            "mu": rng.standard_normal((b, 32), dtype=dt),
            "lv": rng.standard_normal((b, 32), dtype=dt) * np.asarray(0.5, dt)}


def make_mvn(shape, dtype, rng):
    """shape (B, d): B pairs of d-dimensional normals, covariances A A^T / d + I/2."""
    b, d = shape
    out = {}
    for k in ("p", "q"):
        a = rng.standard_normal((b, d, d))
        out["mu_" + k] = rng.standard_normal((b, d)).astype(dtype)
        out["cov_" + k] = (a @ np.swapaxes(a, 1, 2) / d + 0.5 * np.eye(d)).astype(dtype)
    return out


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


def np_gaussian_kl(mu, lv, grad):
    e = np.exp(lv)
    loss = np.mean(np.sum(-0.5 * (1 + lv - mu * mu - e), axis=1))
    if not grad:
        return loss
    s = mu.dtype.type(1.0 / mu.shape[0])
    return loss, mu * s, (0.5 * s) * (e - 1)


def np_gaussian_nll(x, t, var, grad, eps=1e-6):
    vc = np.maximum(var, var.dtype.type(eps))
    d = x - t
    d2v = d * d / vc
    loss = 0.5 * np.mean(np.log(vc) + d2v)
    if not grad:
        return loss
    s = x.dtype.type(1.0 / x.size)
    gx = d / vc * s
    gv = (0.5 * s) * (1 - d2v) / vc
    return loss, gx, gv


def np_vae(recon, x, mu, lv, grad):
    b = recon.shape[0]
    d = recon - x
    e = np.exp(lv)
    per = np.sum(d * d, axis=1) + np.sum(-0.5 * (1 + lv - mu * mu - e), axis=1)
    loss = np.mean(per)
    if not grad:
        return loss
    s = recon.dtype.type(1.0 / b)
    d *= 2 * s
    return loss, d, mu * s, (0.5 * s) * (e - 1)


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


def xp_gaussian_kl(xp, mu, lv):
    return xp.mean(xp.sum(-0.5 * (1 + lv - mu * mu - xp.exp(lv)), -1))


def xp_gaussian_nll(xp, x, t, var, eps=1e-6):
    vc = xp.clip_min(var, eps)
    return 0.5 * xp.mean(xp.log(vc) + (x - t) ** 2 / vc)


def torch_gaussian_nll(x, t, var):
    return peer("torch").nn.functional.gaussian_nll_loss(x, t, var)


def xp_vae(xp, recon, x, mu, lv):
    rec = xp.sum((recon - x) ** 2, -1)
    return xp.mean(rec + xp.sum(-0.5 * (1 + lv - mu * mu - xp.exp(lv)), -1))


def xp_mvn_kl(xp, mp, cp, mq, cq):
    d = mp.shape[-1]
    iq = xp.linalg.inv(cq)
    dm = mq - mp
    tr = xp.einsum("bij,bji->b", iq, cp)
    maha = xp.einsum("bi,bij,bj->b", dm, iq, dm)
    per = 0.5 * (tr + maha - d + xp.linalg.slogdet(cq)[1] - xp.linalg.slogdet(cp)[1])
    return xp.mean(per)


# --- the cases ------------------------------------------------------------------------

def _rows_bytes(k_in, k_grad):
    """k_in arrays of the case's shape read, k_grad written with the gradient."""
    return lambda shape, s, grad: int(np.prod(shape)) * s * (k_in + (k_grad if grad else 0))


def _formula(text_in, text_grad):
    return lambda grad: text_in + (" + " + text_grad if grad else "")


_ROWS = [size((1024, 8192), (64, 1024))]
_ELEM = [size((65536, 128), (2048, 128))]

CASES = (
    loss_cases("entropy", FAMILY, fl.entropy, ("p",), make_pair, _ROWS, numpy=np_entropy,
               xp_fn=xp_entropy, nbytes=_rows_bytes(1, 1),
               formula=_formula("read logits N C s", "write grad N C s"))
    + loss_cases("kl_divergence", FAMILY, fl.kl_divergence, ("p", "q"), make_pair, _ROWS,
                 wrt=(0, 1), numpy=np_kl, xp_fn=xp_kl, torch=torch_kl, nbytes=_rows_bytes(2, 2),
                 formula=_formula("read p, q logits 2 N C s", "write 2 grads 2 N C s"))
    + loss_cases("js_divergence", FAMILY, fl.js_divergence, ("p", "q"), make_pair, _ROWS,
                 wrt=(0, 1), numpy=np_js, xp_fn=xp_js, nbytes=_rows_bytes(2, 2),
                 formula=_formula("read p, q logits 2 N C s", "write 2 grads 2 N C s"))
    + loss_cases("distillation_loss", FAMILY, fl.distillation_loss, ("p", "q"), make_pair, _ROWS,
                 kw_inputs={"target": "y"}, kwargs={"temperature": T_DISTILL, "alpha": 0.5},
                 numpy=np_distill, xp_fn=xp_distill,
                 nbytes=lambda shp, s, g: int(np.prod(shp)) * s * (3 if g else 2) + 8 * shp[0],
                 formula=_formula("read student, teacher 2 N C s + labels 8 N",
                                  "write grad N C s"))
    + loss_cases("gaussian_kl", FAMILY, fl.gaussian_kl, ("mu", "lv"), make_latent, _ELEM,
                 wrt=(0, 1), numpy=np_gaussian_kl, xp_fn=xp_gaussian_kl,
                 nbytes=_rows_bytes(2, 2),
                 formula=_formula("read mu, logvar 2 n s", "write 2 grads 2 n s"))
    + loss_cases("gaussian_nll_loss", FAMILY, fl.gaussian_nll_loss, ("x", "t", "var"), make_nll,
                 [size((8192, 1024), (256, 1024))], wrt=(0, 2), numpy=np_gaussian_nll,
                 xp_fn=xp_gaussian_nll, torch=torch_gaussian_nll, nbytes=_rows_bytes(3, 2),
                 formula=_formula("read input, target, var 3 n s", "write 2 grads 2 n s"))
    + loss_cases("vae_loss", FAMILY, fl.vae_loss, ("recon", "x", "mu", "lv"), make_vae,
                 [size((8192, 784), (256, 784))], wrt=(0, 2, 3), numpy=np_vae, xp_fn=xp_vae,
                 nbytes=lambda shp, s, g: s * (shp[0] * shp[1] * (3 if g else 2)
                                               + shp[0] * 32 * (4 if g else 2)),
                 formula=_formula("read recon, x 2 B D s + mu, logvar 2 B L s",
                                  "write grads B D s + 2 B L s"))
    + loss_cases("mvn_kl", FAMILY, fl.mvn_kl, ("mu_p", "cov_p", "mu_q", "cov_q"), make_mvn,
                 [size((4096, 8), (256, 8))], wrt=(0, 1, 2, 3), oracle=ref.mvn_kl,
                 xp_fn=xp_mvn_kl,
                 skip={"jax": "not run: jit of batched inv/slogdet (4096 8x8 matrices) hung "
                              "intermittently in block_until_ready with jax 0.10.2 on CPU (XLA "
                              "thread pool; XLA_FLAGS=--xla_cpu_multi_thread_eigen=false is the "
                              "known workaround)"})
)
