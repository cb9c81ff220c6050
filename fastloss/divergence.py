"""Divergences and probabilistic losses: entropy, KL and Jensen-Shannon divergences
between softmax distributions, knowledge distillation, diagonal and full-covariance
Gaussian KL, the VAE loss and PyTorch's Gaussian negative log-likelihood.

Thin wrappers: check and coerce the arguments (fastloss/_checks.py), lay the data out
as C-contiguous rows or flat arrays, call one fused kernel from
fastloss/_divergence.pyx, reduce. See ../shared/DESIGN.md for the conventions; for
losses over distributions "mean" averages over distributions (PyTorch's "batchmean",
accepted as an alias).
"""
import math

import numpy as np

from . import _config
from . import _divergence as _k
from . import _gaussian as _gk
from ._checks import (as_float_array, as_labels, check_broadcast, check_class_axis, check_grad_out,
                      check_labels, check_real, check_reduction, reduce_total, result_dtype)
from .classification import _as_rows, _grad_rows, label_rows

_config.register_kernels(_k)
_config.register_kernels(_gk)

# "none" on Gaussian rows shorter than this: per-element losses summed by NumPy,
# instead of one kernel call per row.
_SHORT_ROW = 64


# --- shared helpers -------------------------------------------------------------------

def _check_grad_request(return_grad, grad_out):
    if grad_out is not None and not return_grad:
        raise ValueError("grad_out is only used with return_grad=True")


def _grad_outs(grad_out, names):
    """grad_out as a list with one entry (None or an array) per gradient; a single
    gradient takes a bare array, several take a tuple of that length."""
    k = len(names)
    if grad_out is None:
        return [None] * k
    if k == 1:
        if isinstance(grad_out, (tuple, list)):
            if len(grad_out) != 1:
                raise ValueError(f"grad_out must be one array (the gradient of {names[0]})")
            return list(grad_out)
        return [grad_out]
    if not isinstance(grad_out, (tuple, list)) or len(grad_out) != k:
        raise ValueError(f"grad_out must be a tuple of {k} arrays (one per gradient: "
                         f"{', '.join(names)}), or None")
    return list(grad_out)


def _check_temperature(temperature):
    t = check_real(temperature, "temperature", 0.0, low_open=True)
    if math.isinf(t):
        raise ValueError("temperature must be finite")
    return t


def _gscale(reduction, denom):
    if reduction != "mean":
        return 1.0
    return 1.0 / denom if denom else math.inf


def _finish_rows(rows, row_shape, reduction, dtype):
    if reduction == "none":
        return rows.astype(dtype).reshape(row_shape)
    return reduce_total(float(np.sum(rows)), rows.size, reduction, dtype)


def _pair_setup(p_logits, q_logits, axis, names):
    """Two logit arrays of one shape and compute dtype, and the class axis."""
    a = as_float_array(p_logits, names[0])
    b = as_float_array(q_logits, names[1])
    dt = result_dtype(a, b)
    a, b = a.astype(dt, copy=False), b.astype(dt, copy=False)
    ax = check_class_axis(a, axis, names[0])
    if b.shape != a.shape:
        raise ValueError(f"{names[1]} has shape {b.shape}, expected the shape of {names[0]} {a.shape}")
    return a, b, ax


def _pair_call(kind, a, b, ax, inv_t, beta, reduction, return_grad, grad_out, names):
    a2, b2 = _as_rows(a, ax), _as_rows(b, ax)
    n = a2.shape[0]
    row_shape = a.shape[:ax] + a.shape[ax + 1:]
    gs = _gscale(reduction, n) * inv_t
    ga = gb = None
    if return_grad:
        outs = _grad_outs(grad_out, names)
        ga, fa = _grad_rows(a, ax, n, outs[0], "grad_out[0]")
        gb, fb = _grad_rows(b, ax, n, outs[1], "grad_out[1]")
    rows = np.empty(n, dtype=np.float64)
    _k.pair_rows(kind, a2, b2, ga, gb, inv_t, beta, gs, gs, False, None, 0, rows,
                 _config.threads_for(2 * a2.size))
    loss = _finish_rows(rows, row_shape, reduction, a.dtype)
    return (loss, (fa(ga), fb(gb))) if return_grad else loss


# --- discrete distributions -----------------------------------------------------------

def entropy(logits, *, axis=-1, reduction="mean", return_grad=False, grad_out=None):
    """Shannon entropy H(softmax(logits)) of each distribution along `axis` (nats).

    Probabilities p can be passed as np.log(p): zeros become -inf and count 0 (0 log 0 = 0).
    reduction: "mean" (over distributions; "batchmean" is an alias), "sum" or "none".
    grad_out: a C-contiguous buffer for the gradient, which may be `logits` itself.
    """
    reduction = check_reduction(reduction, batchmean=True)
    _check_grad_request(return_grad, grad_out)
    x = as_float_array(logits, "logits")
    ax = check_class_axis(x, axis, "logits")
    x2 = _as_rows(x, ax)
    n = x2.shape[0]
    g2 = None
    if return_grad:
        g2, finish = _grad_rows(x, ax, n, _grad_outs(grad_out, ["logits"])[0], "grad_out")
    rows = np.empty(n, dtype=np.float64)
    _k.entropy(x2, g2, _gscale(reduction, n), rows, _config.threads_for(x2.size))
    loss = _finish_rows(rows, x.shape[:ax] + x.shape[ax + 1:], reduction, x.dtype)
    return (loss, finish(g2)) if return_grad else loss


def kl_divergence(p_logits, q_logits, *, axis=-1, temperature=1.0, reduction="mean",
                  return_grad=False, grad_out=None):
    """KL(softmax(p_logits / T) || softmax(q_logits / T)) of each distribution along `axis`.

    No T**2 factor (see distillation_loss). +inf where q has no mass on p's support;
    classes where p is 0 (logit -inf) count 0. The reverse KL is the same call with the
    arguments swapped.
    reduction: "mean" (over distributions, PyTorch's "batchmean", also accepted), "sum"
    or "none". return_grad: gradients with respect to both inputs, (grad_p, grad_q);
    grad_out: a tuple of two C-contiguous buffers (either may be its input array).
    """
    reduction = check_reduction(reduction, batchmean=True)
    _check_grad_request(return_grad, grad_out)
    t = _check_temperature(temperature)
    a, b, ax = _pair_setup(p_logits, q_logits, axis, ("p_logits", "q_logits"))
    return _pair_call("kl", a, b, ax, 1.0 / t, 0.5, reduction, return_grad, grad_out,
                      ["p_logits", "q_logits"])


def js_divergence(p_logits, q_logits, *, beta=0.5, axis=-1, temperature=1.0, reduction="mean",
                  return_grad=False, grad_out=None):
    """Generalised Jensen-Shannon divergence of p = softmax(p_logits / T) and
    q = softmax(q_logits / T) along `axis`:
        beta * KL(p || m) + (1 - beta) * KL(q || m),  m = beta * p + (1 - beta) * q.
    beta = 0.5 is the symmetric JSD (at most log 2); beta = 0 or 1 gives exactly 0.
    Reductions and gradients (grad_p, grad_q) as kl_divergence.
    """
    reduction = check_reduction(reduction, batchmean=True)
    _check_grad_request(return_grad, grad_out)
    t = _check_temperature(temperature)
    bt = check_real(beta, "beta", 0.0, 1.0)
    a, b, ax = _pair_setup(p_logits, q_logits, axis, ("p_logits", "q_logits"))
    return _pair_call("js", a, b, ax, 1.0 / t, bt, reduction, return_grad, grad_out,
                      ["p_logits", "q_logits"])


def distillation_loss(student_logits, teacher_logits, *, temperature=1.0, target=None, alpha=0.5,
                      axis=-1, ignore_index=-100, reduction="mean", return_grad=False, grad_out=None):
    """Hinton's knowledge-distillation loss, per distribution along `axis`:
        T**2 * KL(softmax(teacher / T) || softmax(student / T)),
    and with hard labels `target` (integers, logits' shape without `axis`):
        alpha * that + (1 - alpha) * cross_entropy(student, target).
    Rows whose target is ignore_index count for nothing in either term (padding), and
    "mean" divides by the rows that count (all rows without target).
    return_grad: the gradient with respect to the student logits only; grad_out may be
    `student_logits` itself.
    """
    reduction = check_reduction(reduction, batchmean=True)
    _check_grad_request(return_grad, grad_out)
    T = _check_temperature(temperature)
    al = check_real(alpha, "alpha", 0.0, 1.0)
    s, t, ax = _pair_setup(student_logits, teacher_logits, axis, ("student_logits", "teacher_logits"))
    C = s.shape[ax]
    row_shape = s.shape[:ax] + s.shape[ax + 1:]
    s2, t2 = _as_rows(s, ax), _as_rows(t, ax)
    n = s2.shape[0]
    labels = None
    ignore_index = int(ignore_index)
    if target is not None:
        labels = as_labels(target, "target")
        if labels.shape != row_shape:
            raise ValueError(f"target has shape {labels.shape}, expected {row_shape} "
                             f"(student_logits {s.shape} without axis {axis})")
        check_labels(labels, C, ignore_index)
        labels = labels.reshape(-1)
        denom = float(np.count_nonzero(labels != ignore_index))
        w_kl, w_ce = al, 1.0 - al
    else:
        denom = float(n)
        w_kl, w_ce = 1.0, 0.0
    gs = _gscale(reduction, denom)
    g2 = None
    if return_grad:
        g2, finish = _grad_rows(s, ax, n, _grad_outs(grad_out, ["student_logits"])[0], "grad_out")
        if w_ce > 0 and w_kl > 0 and np.shares_memory(g2, s2):
            s2 = s2.copy()   # the cross-entropy pass writes g2 before the KL pass reads s2
    nt = _config.threads_for(2 * s2.size)
    rows = np.zeros(n, dtype=np.float64)
    if w_ce > 0:
        rows += w_ce * label_rows(s2, labels, ignore_index=ignore_index, gscale=gs * w_ce, grad=g2,
                                  n_threads=nt)
    if w_kl > 0:
        kl = np.empty(n, dtype=np.float64)
        _k.pair_rows("kl", t2, s2, None, g2, 1.0 / T, 0.5, 0.0, gs * w_kl * T, w_ce > 0,
                     labels, ignore_index, kl, nt)
        rows += (w_kl * T * T) * kl
    if reduction == "none":
        loss = rows.astype(s.dtype).reshape(row_shape)
    else:
        loss = reduce_total(float(np.sum(rows)), denom, reduction, s.dtype)
    return (loss, finish(g2)) if return_grad else loss


# --- elementwise helpers --------------------------------------------------------------

def _flat_full(a, shape):
    """a broadcast to `shape`, C-contiguous and flat (a view when it already is)."""
    if a.shape != tuple(shape):
        a = np.broadcast_to(a, shape)
    return np.ascontiguousarray(a).reshape(-1)


def _unbroadcast(g, shape):
    """Sum a full-shape gradient over the axes an input of `shape` was broadcast along."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and g.shape[lead + i] != 1)
    return np.sum(g, axis=axes, dtype=np.float64).reshape(shape).astype(g.dtype)


class _Grad:
    """Gradient of one input computed at the broadcast shape: `buf` is the flat buffer
    the kernel writes; result() gives the gradient of the input's shape (into grad_out)."""

    def __init__(self, in_shape, full_shape, dtype, grad_out, name):
        self.in_shape, self.out = tuple(in_shape), grad_out
        if grad_out is not None:
            check_grad_out(grad_out, in_shape, dtype, name)
        if self.in_shape == tuple(full_shape) and grad_out is not None:
            self.full = grad_out
        else:
            self.full = np.empty(full_shape, dtype=dtype)
        self.buf = self.full.reshape(-1)

    def result(self):
        if self.full is self.out:
            return self.out
        g = _unbroadcast(self.full, self.in_shape)
        if self.out is None:
            return g
        self.out[...] = g
        return self.out


def _row_sums(elem, nrows, D):
    return np.sum(elem.reshape(nrows, D), axis=1, dtype=np.float64) if D else np.zeros(nrows)


def _as_arrays(values, names):
    """Float arrays of one compute dtype; Python scalars (weakly typed, as in NumPy) take
    the dtype of the array arguments."""
    strong = [as_float_array(v, nm) for v, nm in zip(values, names)
              if not isinstance(v, (int, float))]
    dtype = result_dtype(*strong) if strong else np.dtype(np.float64)
    return [as_float_array(v, nm, dtype) for v, nm in zip(values, names)], dtype


def _broadcast_shape(arrays, names):
    try:
        return np.broadcast_shapes(*[a.shape for a in arrays])
    except ValueError:
        shapes = ", ".join(f"{nm} {a.shape}" for nm, a in zip(names, arrays))
        raise ValueError(f"shapes do not broadcast together: {shapes}") from None


# --- continuous distributions ---------------------------------------------------------

def gaussian_kl(mu_p, logvar_p, mu_q=None, logvar_q=None, *, reduction="mean", return_grad=False,
                grad_out=None):
    """KL(N(mu_p, exp(logvar_p)) || N(mu_q, exp(logvar_q))) of diagonal Gaussians, summed
    over the last axis (the latent dimensions) and reduced over the others; q defaults to
    N(0, I) (mu_q = 0, logvar_q = 0 for whichever is None), which gives the VAE term
    -0.5 * sum(1 + logvar - mu**2 - exp(logvar)). Univariate Gaussians: a last axis of 1.

    The arrays broadcast together. reduction: "mean" (over distributions; "batchmean" is
    an alias), "sum" or "none" (shape without the last axis). return_grad: a tuple of
    gradients, one per array given, in argument order; grad_out a tuple of buffers.
    """
    reduction = check_reduction(reduction, batchmean=True)
    _check_grad_request(return_grad, grad_out)
    names = [nm for nm, a in zip(("mu_p", "logvar_p", "mu_q", "logvar_q"),
                                 (mu_p, logvar_p, mu_q, logvar_q)) if a is not None]
    given = {"mu_p": mu_p, "logvar_p": logvar_p, "mu_q": mu_q, "logvar_q": logvar_q}
    arrs, dtype = _as_arrays([given[nm] for nm in names], names)
    shape = _broadcast_shape(arrs, names)
    if len(shape) == 0:
        raise ValueError("mu_p must have at least one dimension (the latent dimensions)")
    D = shape[-1]
    row_shape = shape[:-1]
    nrows = math.prod(row_shape)
    flat = dict(zip(names, (_flat_full(a, shape) for a in arrs)))
    grads = {}
    if return_grad:
        outs = _grad_outs(grad_out, names)
        for i, (nm, a) in enumerate(zip(names, arrs)):
            grads[nm] = _Grad(a.shape, shape, dtype, outs[i], f"grad_out[{i}]")
    gbuf = [grads[nm].buf if nm in grads else None for nm in ("mu_p", "logvar_p", "mu_q", "logvar_q")]
    nt = _config.threads_for(flat["mu_p"].size)
    gs = _gscale(reduction, nrows)
    args = (flat["mu_p"], flat["logvar_p"], flat.get("mu_q"), flat.get("logvar_q"), *gbuf)
    if reduction != "none":
        total = _gk.gauss_kl(*args, max(D, 1), None, None, gs, nt)
        loss = reduce_total(total, nrows, reduction, dtype)
    else:
        if D >= _SHORT_ROW:
            rows = np.empty(nrows, dtype=np.float64)
            _gk.gauss_kl(*args, D, rows, None, gs, nt)
        else:
            elem = np.empty(flat["mu_p"].size, dtype=dtype)
            _gk.gauss_kl(*args, max(D, 1), None, elem, gs, nt)
            rows = _row_sums(elem, nrows, D)
        loss = rows.astype(dtype).reshape(row_shape)
    if not return_grad:
        return loss
    return loss, tuple(grads[nm].result() for nm in names)


def _spd_error(cov, name):
    """ValueError naming the first matrix of cov (float64, (..., d, d)) that is not SPD."""
    batch = cov.shape[:-2]
    flat = cov.reshape((-1,) + cov.shape[-2:])
    for i in range(flat.shape[0]):
        try:
            np.linalg.cholesky(flat[i])
        except np.linalg.LinAlgError:
            pos = np.unravel_index(i, batch) if batch else ()
            where = f" (batch index {tuple(int(j) for j in pos)})" if batch else ""
            return ValueError(f"{name} is not symmetric positive definite{where}")
    return ValueError(f"{name} is not symmetric positive definite")


def _check_cov(cov, name):
    """Symmetric (to a few ulps of its largest entry), NaN-free covariance, float64."""
    if np.isnan(cov).any():
        raise ValueError(f"{name} contains NaN")
    if not np.isfinite(cov).all():
        raise ValueError(f"{name} contains infinite entries (not symmetric positive definite)")
    c = cov.astype(np.float64)
    if c.size:
        scale = np.max(np.abs(c), axis=(-2, -1))
        asym = np.max(np.abs(c - np.swapaxes(c, -1, -2)), axis=(-2, -1))
        tol = 64 * np.finfo(cov.dtype).eps * scale
        if np.any(asym > tol):
            raise ValueError(f"{name} is not symmetric (max |cov - cov^T| = {float(np.max(asym)):.3g})")
    return 0.5 * (c + np.swapaxes(c, -1, -2))


def _cholesky(c, name):
    try:
        return np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        raise _spd_error(c, name) from None


def mvn_kl(mu_p, cov_p, mu_q, cov_q, *, reduction="mean", return_grad=False, grad_out=None):
    """KL(N(mu_p, cov_p) || N(mu_q, cov_q)) of full-covariance multivariate normals:
    means (..., d), covariances (..., d, d), batch dimensions broadcast together.
        0.5 * (tr(cov_q^-1 cov_p) + (mu_q - mu_p)^T cov_q^-1 (mu_q - mu_p) - d
               + log det cov_q - log det cov_p),
    through Cholesky factors and triangular solves (LAPACK, computed in float64 and
    returned in the inputs' dtype). A covariance that is not symmetric positive definite,
    or holds NaN: ValueError naming it.
    reduction: "mean" (over distributions; "batchmean" is an alias), "sum", "none".
    return_grad: (grad_mu_p, grad_cov_p, grad_mu_q, grad_cov_q); the covariance gradients
    are the symmetric ones (the gradient with respect to a symmetric matrix, as PyTorch).
    """
    reduction = check_reduction(reduction, batchmean=True)
    _check_grad_request(return_grad, grad_out)
    names = ("mu_p", "cov_p", "mu_q", "cov_q")
    arrs = [as_float_array(a, nm) for nm, a in zip(names, (mu_p, cov_p, mu_q, cov_q))]
    dtype = result_dtype(*arrs)
    mp, sp, mq, sq = arrs
    for nm, a, k in zip(names, arrs, (1, 2, 1, 2)):
        if a.ndim < k:
            raise ValueError(f"{nm} must have at least {k} dimension(s), got shape {a.shape}")
    d = mp.shape[-1]
    for nm, a in (("cov_p", sp), ("cov_q", sq)):
        if a.shape[-2:] != (d, d):
            raise ValueError(f"{nm} has shape {a.shape}, expected (..., {d}, {d}) for means of "
                             f"dimension {d}")
    if mq.shape[-1] != d:
        raise ValueError(f"mu_q has shape {mq.shape}, expected (..., {d}) like mu_p")
    try:
        batch = np.broadcast_shapes(mp.shape[:-1], sp.shape[:-2], mq.shape[:-1], sq.shape[:-2])
    except ValueError:
        raise ValueError(f"batch shapes do not broadcast together: mu_p {mp.shape[:-1]}, "
                         f"cov_p {sp.shape[:-2]}, mu_q {mq.shape[:-1]}, cov_q {sq.shape[:-2]}") from None
    Sp, Sq = _check_cov(sp, "cov_p"), _check_cov(sq, "cov_q")
    outs = _grad_outs(grad_out, list(names)) if return_grad else None
    if return_grad:
        for i, a in enumerate(arrs):
            if outs[i] is not None:
                check_grad_out(outs[i], a.shape, dtype, f"grad_out[{i}]")
    Lp, Lq = _cholesky(Sp, "cov_p"), _cholesky(Sq, "cov_q")
    Lp = np.broadcast_to(Lp, batch + (d, d))
    Lq = np.broadcast_to(Lq, batch + (d, d))
    delta = np.broadcast_to(mp.astype(np.float64) - mq.astype(np.float64), batch + (d,))
    M = np.linalg.solve(Lq, Lp)                          # Lq^-1 Lp
    z = np.linalg.solve(Lq, delta[..., None])[..., 0]    # Lq^-1 (mu_p - mu_q)
    logdet = (np.sum(np.log(np.diagonal(Lq, axis1=-2, axis2=-1)), axis=-1)
              - np.sum(np.log(np.diagonal(Lp, axis1=-2, axis2=-1)), axis=-1))
    per = 0.5 * (np.sum(M * M, axis=(-2, -1)) + np.sum(z * z, axis=-1) - d) + logdet
    nb = math.prod(batch)
    if reduction == "none":
        loss = per.astype(dtype).reshape(batch)
    else:
        loss = reduce_total(float(np.sum(per)), nb, reduction, dtype)
    if not return_grad:
        return loss
    gs = _gscale(reduction, nb)
    eye = np.eye(d)
    Lq_inv = np.linalg.solve(Lq, np.broadcast_to(eye, Lq.shape))
    Lp_inv = np.linalg.solve(Lp, np.broadcast_to(eye, Lp.shape))
    Sq_inv = np.swapaxes(Lq_inv, -1, -2) @ Lq_inv
    Sp_inv = np.swapaxes(Lp_inv, -1, -2) @ Lp_inv
    alpha = (np.swapaxes(Lq_inv, -1, -2) @ z[..., None])[..., 0]     # Sq^-1 (mu_p - mu_q)
    B = np.swapaxes(Lq_inv, -1, -2) @ M                               # Sq^-1 Lp
    g = [gs * alpha,
         0.5 * gs * (Sq_inv - Sp_inv),
         -gs * alpha,
         0.5 * gs * (Sq_inv - B @ np.swapaxes(B, -1, -2) - alpha[..., :, None] * alpha[..., None, :])]
    res = []
    for gi, a, out in zip(g, arrs, outs):
        r = _unbroadcast(gi, a.shape).astype(dtype)
        if out is not None:
            out[...] = r
            r = out
        res.append(r)
    return loss, tuple(res)


def vae_loss(recon, x, mu, logvar, *, recon_loss="mse", beta=1.0, reduction="mean",
             return_grad=False, grad_out=None):
    """VAE loss per sample (axis 0 is the batch): the reconstruction term summed over the
    data dimensions plus beta times KL(N(mu, exp(logvar)) || N(0, I)) summed over the
    latent dimensions, then reduced over the batch (both terms on the same per-sample
    scale).
    recon_loss: "mse" (sum of (recon - x)**2) or "bce" (recon are logits, x targets in
    [0, 1]: binary cross-entropy with logits, summed). x broadcasts to recon's shape.
    reduction: "mean" (over samples), "sum" or "none" (one loss per sample).
    return_grad: (grad_recon, grad_mu, grad_logvar); grad_out a tuple of three buffers.
    """
    reduction = check_reduction(reduction, batchmean=True)
    _check_grad_request(return_grad, grad_out)
    if recon_loss not in ("mse", "bce"):
        raise ValueError(f"recon_loss must be 'mse' or 'bce', got {recon_loss!r}")
    bt = check_real(beta, "beta", 0.0)
    if math.isinf(bt):
        raise ValueError("beta must be finite")
    names = ("recon", "x", "mu", "logvar")
    (r, xt, m, lv), dtype = _as_arrays((recon, x, mu, logvar), names)
    if r.ndim == 0 or m.ndim == 0:
        raise ValueError("recon and mu must have a batch axis (axis 0)")
    check_broadcast(xt, r.shape, "x", against="recon")
    if lv.shape != m.shape:
        raise ValueError(f"logvar has shape {lv.shape}, expected the shape of mu {m.shape}")
    if m.shape[0] != r.shape[0]:
        raise ValueError(f"mu has batch size {m.shape[0]}, recon has {r.shape[0]} (axis 0)")
    B = r.shape[0]
    Dr, Dz = math.prod(r.shape[1:]), math.prod(m.shape[1:])
    rf, xf = _flat_full(r, r.shape), _flat_full(xt, r.shape)
    mf, lvf = _flat_full(m, m.shape), _flat_full(lv, m.shape)
    gr = gm = glv = None
    if return_grad:
        outs = _grad_outs(grad_out, ["recon", "mu", "logvar"])
        gr, gm, glv = (_Grad(shp, shp, dtype, o, f"grad_out[{i}]")
                       for i, (shp, o) in enumerate(zip((r.shape, m.shape, m.shape), outs)))
    gs = _gscale(reduction, B)
    mode = 0 if recon_loss == "mse" else 1
    nt_r, nt_z = _config.threads_for(rf.size), _config.threads_for(mf.size)
    g_r = gr.buf if gr else None
    g_m, g_lv = (gm.buf, glv.buf) if gm else (None, None)
    if reduction != "none":
        total = _gk.recon(rf, xf, mode, g_r, 1, None, None, gs, nt_r)
        total += bt * _gk.gauss_kl(mf, lvf, None, None, g_m, g_lv, None, None, 1, None, None,
                                  gs * bt, nt_z)
        loss = reduce_total(total, B, reduction, dtype)
    else:
        rows = np.empty(B, dtype=np.float64)
        rows_z = np.empty(B, dtype=np.float64)
        if Dr >= _SHORT_ROW:
            _gk.recon(rf, xf, mode, g_r, Dr, rows, None, gs, nt_r)
        else:
            elem = np.empty(rf.size, dtype=dtype)
            _gk.recon(rf, xf, mode, g_r, 1, None, elem, gs, nt_r)
            rows = _row_sums(elem, B, Dr)
        if Dz >= _SHORT_ROW:
            _gk.gauss_kl(mf, lvf, None, None, g_m, g_lv, None, None, Dz, rows_z, None, gs * bt, nt_z)
        else:
            elem = np.empty(mf.size, dtype=dtype)
            _gk.gauss_kl(mf, lvf, None, None, g_m, g_lv, None, None, 1, None, elem, gs * bt, nt_z)
            rows_z = _row_sums(elem, B, Dz)
        loss = (rows + bt * rows_z).astype(dtype)
    if not return_grad:
        return loss
    return loss, (gr.result(), gm.result(), glv.result())


def _var_layout(v, shape):
    """How var of shape v.shape applies to an input of `shape` (PyTorch's rules):
    "full" (same shape), "scalar", "row" (one per last-axis row: shape[:-1] or (..., 1)),
    or ("axis", i) (size 1 along axis i only, other than the last)."""
    if v.shape == shape:
        return "full"
    if v.ndim == 0:
        return "scalar"
    if len(shape) >= 1 and v.shape == shape[:-1]:
        return "row"
    if v.ndim == len(shape):
        diff = [i for i, (a, b) in enumerate(zip(shape, v.shape)) if a != b]
        if len(diff) == 1 and v.shape[diff[0]] == 1:
            return "row" if diff[0] == len(shape) - 1 else ("axis", diff[0])
    raise ValueError(f"var has shape {v.shape}, which does not fit input of shape {shape}: "
                     f"expected {shape}, {shape[:-1]}, the input's shape with one axis of size "
                     f"1, or a scalar")


def gaussian_nll_loss(input, target, var, *, full=False, eps=1e-6, reduction="mean",
                      return_grad=False, grad_out=None):
    """PyTorch's gaussian_nll_loss: 0.5 * (log(max(var, eps)) + (input - target)**2 /
    max(var, eps)) per element (+ 0.5 * log(2 pi) with full=True).

    var: the input's shape (heteroscedastic), one per last-axis row (shape[:-1] or a last
    axis of 1), the input's shape with one other axis of size 1, or a scalar; negative
    entries: ValueError. target broadcasts to input's shape. As in PyTorch, the eps clamp
    passes the gradient straight through. reduction: "mean" over elements, "sum", "none".
    return_grad: (grad_input, grad_var), grad_var of var's shape (the gradient with
    respect to target is -grad_input).
    """
    reduction = check_reduction(reduction)
    _check_grad_request(return_grad, grad_out)
    (xa, ta, va), dtype = _as_arrays((input, target, var), ("input", "target", "var"))
    e = check_real(eps, "eps", 0.0)
    check_broadcast(ta, xa.shape, "target", against="input")
    shape = xa.shape
    layout = _var_layout(va, shape)
    if va.size and np.min(va) < 0:
        raise ValueError("var has negative entries (variances must be >= 0)")
    n = xa.size
    D = shape[-1] if len(shape) else 1
    nrows = n // D if D else 0
    per_row = layout in ("scalar", "row") and D > 0
    gx = gv = None
    if return_grad:
        outs = _grad_outs(grad_out, ["input", "var"])
        gx = _Grad(shape, shape, dtype, outs[0], "grad_out[0]")
        gv = _Grad(va.shape, va.shape if per_row else shape, dtype, outs[1], "grad_out[1]")
    xf, tf = _flat_full(xa, shape), _flat_full(ta, shape)
    cst = 0.5 * math.log(2 * math.pi) if full else 0.0
    gs = _gscale(reduction, n)
    nt = _config.threads_for(n)
    elem = np.empty(n, dtype=dtype) if reduction == "none" else None
    if per_row:
        vrow = (np.full(nrows, va, dtype=dtype) if layout == "scalar"
                else np.ascontiguousarray(va).reshape(-1))
        grow = np.empty(nrows, dtype=dtype) if return_grad else None
        total = _gk.nll(xf, tf, vrow, True, gx.buf if gx else None, grow, D, elem, e, cst, gs, nt)
        if return_grad:
            gv.full[...] = (np.sum(grow, dtype=np.float64) if layout == "scalar"
                            else grow.reshape(va.shape))
    else:
        vf = _flat_full(va, shape)
        total = _gk.nll(xf, tf, vf, False, gx.buf if gx else None, gv.buf if gv else None,
                       max(D, 1), elem, e, cst, gs, nt)
    loss = elem.reshape(shape) if reduction == "none" else reduce_total(total, n, reduction, dtype)
    if not return_grad:
        return loss
    return loss, (gx.result(), gv.result())
