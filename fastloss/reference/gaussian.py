"""NumPy float64 oracles for the Gaussian family (gaussian_kl, mvn_kl, vae_loss,
gaussian_nll_loss): plain formulas, same signatures as the fast functions (less
grad_out), used by the tests and the benchmark."""
import math

import numpy as np

from .classification import binary_cross_entropy_with_logits
from .common import finish, reduce

__all__ = ["gaussian_kl", "mvn_kl", "vae_loss", "gaussian_nll_loss"]


def gaussian_kl(mu_p, logvar_p, mu_q=None, logvar_q=None, *, reduction="mean", return_grad=False):
    given = [a is not None for a in (mu_p, logvar_p, mu_q, logvar_q)]
    mp, lvp = np.asarray(mu_p, np.float64), np.asarray(logvar_p, np.float64)
    mq = np.zeros(()) if mu_q is None else np.asarray(mu_q, np.float64)
    lvq = np.zeros(()) if logvar_q is None else np.asarray(logvar_q, np.float64)
    dm = mp - mq
    vr = np.exp(lvp - lvq)
    per_el = 0.5 * (lvq - lvp + vr + dm ** 2 / np.exp(lvq) - 1)
    per = np.sum(per_el, axis=-1)
    loss, scale = reduce(per, reduction, per.size)
    shape = per_el.shape
    full = [dm / np.exp(lvq), 0.5 * (vr - 1), -dm / np.exp(lvq), 0.5 * (1 - vr - dm ** 2 / np.exp(lvq))]
    arrs = (mp, lvp, mq, lvq)
    grads = tuple(_sum_to(np.broadcast_to(g, shape) * scale, a.shape)
                  for g, a, k in zip(full, arrs, given) if k)
    return finish(loss, grads, return_grad)


def _sum_to(g, shape):
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and g.shape[lead + i] != 1)
    return np.sum(g, axis=axes).reshape(shape)


def mvn_kl(mu_p, cov_p, mu_q, cov_q, *, reduction="mean", return_grad=False):
    """With explicit inverses and slogdet: a different route from the kernel's Cholesky."""
    mp, Sp = np.asarray(mu_p, np.float64), np.asarray(cov_p, np.float64)
    mq, Sq = np.asarray(mu_q, np.float64), np.asarray(cov_q, np.float64)
    d = mp.shape[-1]
    batch = np.broadcast_shapes(mp.shape[:-1], Sp.shape[:-2], mq.shape[:-1], Sq.shape[:-2])
    Sp_b = np.broadcast_to(Sp, batch + (d, d))
    Sq_b = np.broadcast_to(Sq, batch + (d, d))
    delta = np.broadcast_to(mp - mq, batch + (d,))
    Sq_inv = np.linalg.inv(Sq_b)
    Sp_inv = np.linalg.inv(Sp_b)
    tr = np.trace(Sq_inv @ Sp_b, axis1=-2, axis2=-1)
    maha = np.einsum("...i,...ij,...j->...", delta, Sq_inv, delta)
    # the documented rule for an infinite mean difference: +inf (the form is positive
    # definite), NaN gradients where the difference enters
    inf_mean = ~np.isfinite(delta).all(-1)
    maha = np.where(inf_mean & ~np.isnan(delta).any(-1), np.inf, maha)
    per = 0.5 * (tr + maha - d + np.linalg.slogdet(Sq_b)[1] - np.linalg.slogdet(Sp_b)[1])
    loss, scale = reduce(per, reduction, per.size)
    a = np.einsum("...ij,...j->...i", Sq_inv, delta)
    a = np.where(inf_mean[..., None], np.nan, a)
    g = [a, 0.5 * (Sq_inv - Sp_inv), -a,
         0.5 * (Sq_inv - Sq_inv @ Sp_b @ Sq_inv - a[..., :, None] * a[..., None, :])]
    grads = tuple(_sum_to(gi * scale, arr.shape) for gi, arr in zip(g, (mp, Sp, mq, Sq)))
    return finish(loss, grads, return_grad)


def vae_loss(recon, x, mu, logvar, *, recon_loss="mse", beta=1.0, reduction="mean",
             return_grad=False):
    r, xt = np.asarray(recon, np.float64), np.asarray(x, np.float64)
    m, lv = np.asarray(mu, np.float64), np.asarray(logvar, np.float64)
    xt = np.broadcast_to(xt, r.shape)
    if recon_loss == "mse":
        rec_el, grec = (r - xt) ** 2, 2 * (r - xt)
    else:
        # the kernel's per-element values are binary_cross_entropy_with_logits' (special
        # values included): its oracle
        rec_el, grec = binary_cross_entropy_with_logits(r, xt, reduction="none", return_grad=True)
    B = r.shape[0]
    rec = np.sum(rec_el.reshape(B, -1), axis=1)
    kl = np.sum((-0.5 * (1 + lv - m ** 2 - np.exp(lv))).reshape(B, -1), axis=1)
    per = rec + beta * kl
    loss, scale = reduce(per, reduction, B)
    grads = (grec * scale, beta * m * scale, beta * 0.5 * (np.exp(lv) - 1) * scale)
    return finish(loss, grads, return_grad)


def gaussian_nll_loss(input, target, var, *, full=False, eps=1e-6, reduction="mean",
                      return_grad=False):
    x, t = np.asarray(input, np.float64), np.asarray(target, np.float64)
    v = np.asarray(var, np.float64)
    vshape = v.shape
    if v.shape != x.shape and v.ndim and v.shape == x.shape[:-1]:
        v = v[..., None]
    vc = np.where(v < eps, eps, v)     # PyTorch's clamp: -0 stays -0 at eps = 0, NaN stays NaN
    d = x - t
    per = 0.5 * (np.log(vc) + d ** 2 / vc) + (0.5 * math.log(2 * math.pi) if full else 0.0)
    per = np.broadcast_to(per, x.shape)
    loss, scale = reduce(per, reduction, per.size)
    gx = np.broadcast_to(d / vc, x.shape) * scale
    gv = np.broadcast_to(0.5 * (1 / vc - d ** 2 / vc ** 2), x.shape) * scale
    gv = _sum_to(gv, v.shape).reshape(vshape)
    return finish(loss, (gx, gv), return_grad)
