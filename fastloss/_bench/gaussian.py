"""Benchmark cases for fastloss.gaussian: gaussian_kl, gaussian_nll_loss, vae_loss
(elementwise with row sums) and mvn_kl (small full covariances, LAPACK).

Peers: NumPy in the input dtype where the gradient is a few lines, else the float64
oracle from fastloss.reference; PyTorch's gaussian_nll_loss, or the formula in torch
ops; JAX jit(value_and_grad) of the same formula.
"""
import numpy as np

from .. import gaussian as fl
from ..reference import gaussian as ref
from .builders import bytes_formula, loss_cases, rows_bytes, size
from .core import peer

FAMILY = "gaussian"


# --- inputs -------------------------------------------------------------------------

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

_ELEM = [size((65536, 128), (2048, 128))]

CASES = (
    loss_cases("gaussian_kl", FAMILY, fl.gaussian_kl, ("mu", "lv"), make_latent, _ELEM,
               wrt=(0, 1), numpy=np_gaussian_kl, xp_fn=xp_gaussian_kl,
               nbytes=rows_bytes(2, 2),
               formula=bytes_formula("read mu, logvar 2 n s", "write 2 grads 2 n s"))
    + loss_cases("gaussian_nll_loss", FAMILY, fl.gaussian_nll_loss, ("x", "t", "var"), make_nll,
                 [size((8192, 1024), (256, 1024))], wrt=(0, 2), numpy=np_gaussian_nll,
                 xp_fn=xp_gaussian_nll, torch=torch_gaussian_nll, nbytes=rows_bytes(3, 2),
                 formula=bytes_formula("read input, target, var 3 n s", "write 2 grads 2 n s"))
    + loss_cases("vae_loss", FAMILY, fl.vae_loss, ("recon", "x", "mu", "lv"), make_vae,
                 [size((8192, 784), (256, 784))], wrt=(0, 2, 3), numpy=np_vae, xp_fn=xp_vae,
                 nbytes=lambda shp, s, g: s * (shp[0] * shp[1] * (3 if g else 2)
                                               + shp[0] * 32 * (4 if g else 2)),
                 formula=bytes_formula("read recon, x 2 B D s + mu, logvar 2 B L s",
                                       "write grads B D s + 2 B L s"))
    + loss_cases("mvn_kl", FAMILY, fl.mvn_kl, ("mu_p", "cov_p", "mu_q", "cov_q"), make_mvn,
                 [size((4096, 8), (256, 8))], wrt=(0, 1, 2, 3), oracle=ref.mvn_kl,
                 xp_fn=xp_mvn_kl,
                 skip={"jax": "not run: jit of batched inv/slogdet (4096 8x8 matrices) hung "
                              "intermittently in block_until_ready with jax 0.10.2 on CPU (XLA "
                              "thread pool; XLA_FLAGS=--xla_cpu_multi_thread_eigen=false is the "
                              "known workaround)"})
)
