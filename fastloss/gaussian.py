"""The Gaussian family: KL divergence between diagonal and full-covariance Gaussians,
the VAE loss and PyTorch's Gaussian negative log-likelihood. "mean" averages over
distributions (PyTorch's "batchmean", accepted as an alias) except for
gaussian_nll_loss, whose mean is over elements as in PyTorch.

Thin wrappers over the shared layer (ARCHITECTURE.md): validate every argument
(_checks.py), lay the data out as flat arrays broadcast to a common shape
(_layout.py), call one fused kernel of _gaussian.pyx, reduce (_reduce.py); mvn_kl runs one
float64 kernel per pair of matrices up to dimension _MVN_KERNEL_D, NumPy/LAPACK above.
"""
import math

import numpy as np

from . import _config, _pool
from . import _gaussian as _k
from ._checks import (as_float_array, check_broadcast, check_choice, check_covariance,
                      check_grad_out, check_grad_outs, check_grad_request, check_no_overlap,
                      check_nonnegative, check_real, check_reduction, check_var_layout, grad_out_apart,
                      grad_out_names, negative_entries, result_dtype)
from ._mask import broadcast_inputs, document, independent
from ._layout import BroadcastGrad, flat_full, row_sums, unbroadcast
from ._reduce import grad_scale, reduce_elements, reduce_rows, reduce_total

__all__ = ["gaussian_kl", "mvn_kl", "vae_loss", "gaussian_nll_loss"]

_config.register_kernels(_k)

_VAR_NEGATIVE = "variances must be >= 0"

# "none" on rows shorter than this: per-element losses summed by NumPy, instead of one
# kernel call per row.
_SHORT_ROW = 64

# mvn_kl: dimensions up to this run the per-matrix kernel (unblocked loops on float64
# scratch of 8 d x d per thread); larger ones LAPACK, whose blocked routines win there.
_MVN_KERNEL_D = 64


def _row_losses(kernel, nrows, D, dtype):
    """Per-row float64 sums of an elementwise kernel's losses over rows of D elements:
    kernel(D, rows, None) sums rows of D >= _SHORT_ROW itself; shorter rows come back
    per element (kernel(1, None, elem)) and NumPy sums them."""
    if D >= _SHORT_ROW:
        rows = np.empty(nrows, dtype=np.float64)
        kernel(D, rows, None)
        return rows
    elem = np.empty(nrows * D, dtype=dtype)
    kernel(1, None, elem)
    return row_sums(elem, nrows, D)


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

@grad_out_apart("mu_p", "logvar_p", "mu_q", "logvar_q")
def gaussian_kl(mu_p, logvar_p, mu_q=None, logvar_q=None, *, where=None, reduction="mean",
                return_grad=False, grad_out=None):
    r"""KL(N(mu_p, exp(logvar_p)) || N(mu_q, exp(logvar_q))) of diagonal Gaussians.

    Summed over the last axis (the latent dimensions) and reduced over the others; q
    defaults to N(0, I) (mu_q = 0, logvar_q = 0 for whichever is None), which gives the VAE
    term ``-0.5 * sum(1 + logvar - mu**2 - exp(logvar))``. Univariate Gaussians: a last axis
    of 1.

    Parameters
    ----------
    mu_p, logvar_p : array_like
        Mean and log-variance of p; the arrays broadcast together.
    mu_q, logvar_q : array_like, optional
        Of q (None: 0).
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" over distributions ("batchmean" is an alias); "none": the broadcast shape
        without the last axis.
    return_grad : bool, default False
        A tuple of gradients, one per array given, in argument order (each of its array's
        shape).
    grad_out : tuple of ndarray, optional
        A tuple of buffers, one per array given.

    Returns
    -------
    loss : scalar or ndarray
        Compute dtype.
    grads : tuple of ndarray
        With ``return_grad=True``.

    Notes
    -----
    Per latent dimension, with :math:`\Delta = \mu_p - \mu_q`,
    :math:`\sigma^2 = e^{\mathrm{logvar}}`:

    .. math::

        \mathrm{KL} = \tfrac12 \left(\log \sigma_q^2 - \log \sigma_p^2
            + \frac{\sigma_p^2 + \Delta^2}{\sigma_q^2} - 1\right)

    .. math::

        \frac{\partial}{\partial \mu_p} = \frac{\Delta}{\sigma_q^2}
            = -\frac{\partial}{\partial \mu_q}, \qquad
        \frac{\partial}{\partial \mathrm{logvar}_p}
            = \tfrac12 \left(\frac{\sigma_p^2}{\sigma_q^2} - 1\right), \qquad
        \frac{\partial}{\partial \mathrm{logvar}_q}
            = \tfrac12 \left(1 - \frac{\sigma_p^2 + \Delta^2}{\sigma_q^2}\right)

    Equivalent: ``torch.distributions.kl_divergence(Normal(...), Normal(...)).sum(-1)``.

    Examples
    --------
    >>> mu, logvar = np.array([[0.5, -0.5]]), np.array([[0.0, np.log(2.0)]])
    >>> loss, (g_mu, g_logvar) = fastloss.gaussian_kl(mu, logvar, return_grad=True)
    >>> print(round(float(loss), 4), np.round(g_mu, 4), np.round(g_logvar, 4))
    0.4034 [[ 0.5 -0.5]] [[0.  0.5]]
    """
    reduction = check_reduction(reduction, batchmean=True)
    check_grad_request(return_grad, grad_out)
    names = [nm for nm, a in zip(("mu_p", "logvar_p", "mu_q", "logvar_q"),
                                 (mu_p, logvar_p, mu_q, logvar_q)) if a is not None]
    given = {"mu_p": mu_p, "logvar_p": logvar_p, "mu_q": mu_q, "logvar_q": logvar_q}
    arrs, dtype = _as_arrays([given[nm] for nm in names], names)
    shape = _broadcast_shape(arrs, names)
    if len(shape) == 0:
        raise ValueError("mu_p must have at least one dimension (the latent dimensions)")
    D = shape[-1]
    row_shape = shape[:-1]
    if where is not None:
        return broadcast_inputs(
            lambda *full: gaussian_kl(**dict(zip(names, full)), reduction="none",
                                      return_grad=return_grad),
            where, row_shape, reduction, return_grad, grad_out, arrs, names, [shape] * len(arrs),
            dtype)
    nrows = math.prod(row_shape)
    flat = dict(zip(names, (flat_full(a, shape) for a in arrs)))
    grads = {}
    if return_grad:
        outs = check_grad_outs(grad_out, names)
        for i, (nm, a) in enumerate(zip(names, arrs)):
            grads[nm] = BroadcastGrad(a.shape, shape, dtype, outs[i], f"grad_out[{i}]")
        check_no_overlap(grad_out_names(outs), list(zip(names, arrs)))
    gbuf = [grads[nm].buf if nm in grads else None for nm in ("mu_p", "logvar_p", "mu_q", "logvar_q")]
    nt = _config.threads_for(flat["mu_p"].size)
    gs = grad_scale(reduction, nrows)
    args = (flat["mu_p"], flat["logvar_p"], flat.get("mu_q"), flat.get("logvar_q"), *gbuf)
    if reduction != "none":
        total = _k.gauss_kl(*args, max(D, 1), None, None, gs, nt)
        loss = reduce_total(total, nrows, reduction, dtype)
    else:
        rows = _row_losses(lambda D, rows, elem: _k.gauss_kl(*args, D, rows, elem, gs, nt),
                           nrows, D, dtype)
        loss = rows.astype(dtype).reshape(row_shape)
    if not return_grad:
        return loss
    return loss, tuple(grads[nm].result() for nm in names)


def _spd_error(cov, name):
    """ValueError naming the first matrix of cov (float64, (..., d, d)) that is not SPD."""
    flat = cov.reshape((-1,) + cov.shape[-2:])
    for i in range(flat.shape[0]):
        try:
            np.linalg.cholesky(flat[i])
        except np.linalg.LinAlgError:
            return _spd_error_at(i, cov.shape[:-2], name)
    return _spd_error_at(None, cov.shape[:-2], name)


def _spd_error_at(i, batch, name):
    """ValueError naming matrix i (flat index into the batch shape, or None) of cov."""
    where = ""
    if batch and i is not None:
        where = f" (batch index {tuple(int(j) for j in np.unravel_index(i, batch))})"
    return ValueError(f"{name} is not symmetric positive definite{where}")


def _own_index(own, batch):
    """Per element of the batch, the flat index of an input's matrix (or vector) in its
    own batch shape `own` (None: the same)."""
    if own == batch:
        return None
    n = math.prod(own)
    return np.ascontiguousarray(np.broadcast_to(np.arange(n, dtype=np.int64).reshape(own), batch)).reshape(-1)


def _mvn_kl_kernel(arrs, dtype, batch, d, reduction, outs):
    """mvn_kl for d <= _MVN_KERNEL_D (checked arguments, grad_out buffers or None): one
    kernel call, which also checks the covariances (check_covariance's rules, then
    positive definiteness); any failure is raised here, before a result is returned,
    with check_covariance's or _spd_error's message."""
    nb = math.prod(batch)
    own = [a.shape[:a.ndim - k] for a, k in zip(arrs, (1, 2, 1, 2))]
    idx = [_own_index(b, batch) for b in own]
    flat = [np.ascontiguousarray(a, dtype=dtype).reshape(-1) for a in arrs]
    tol_p, tol_q = (64 * np.finfo(a.dtype).eps for a in (arrs[1], arrs[3]))
    grads = None
    if outs is not None:
        # full-shape inputs: straight into grad_out (or a fresh buffer); broadcast ones in
        # float64, summed over the batch below and rounded once, as the LAPACK path
        grads = [np.empty(batch + a.shape[len(b):], np.float64) if i is not None
                 else out if out is not None else _pool.empty(a.shape, dtype)
                 for a, b, i, out in zip(arrs, own, idx, outs)]
    per = np.empty(nb, np.float64)
    status = np.empty(nb, np.int8)
    _k.mvn_kl(*flat, d, nb, idx, tol_p, tol_q, grads, grad_scale(reduction, nb), per, status,
              _config.threads_for(nb * d ** 3))
    if status.any():
        # the other matrices' gradients are written: no buffer keeps a mix of those and
        # its old values
        for out in outs or ():
            if out is not None:
                out[...] = np.nan
        check_covariance(arrs[1], "cov_p")
        check_covariance(arrs[3], "cov_q")
        for m, code, name in ((1, 1, "cov_p"), (3, 2, "cov_q")):
            bad = np.flatnonzero(status == code)
            if bad.size:
                first = int(np.min(idx[m][bad])) if idx[m] is not None else int(bad[0])
                raise _spd_error_at(first, own[m], name)
    loss = reduce_rows(per, batch, nb, reduction, dtype)
    if outs is None:
        return loss
    return loss, tuple(g if g.shape == a.shape else _summed(g, a.shape, dtype, out)
                       for g, a, out in zip(grads, arrs, outs))


def _summed(g, shape, dtype, out):
    """A full-batch gradient g summed over the axes an input of `shape` was broadcast
    along, in dtype, into out when given."""
    r = unbroadcast(g, shape).astype(dtype)
    if out is None:
        return r
    out[...] = r
    return out


def _cholesky(c, name):
    try:
        return np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        raise _spd_error(c, name) from None


@grad_out_apart("mu_p", "cov_p", "mu_q", "cov_q")
def mvn_kl(mu_p, cov_p, mu_q, cov_q, *, where=None, reduction="mean", return_grad=False,
           grad_out=None):
    r"""KL(N(mu_p, cov_p) || N(mu_q, cov_q)) of full-covariance multivariate normals.

    Computed through Cholesky factors and triangular solves in float64, returned in the
    inputs' dtype (a kernel per pair of matrices up to d = 64, LAPACK above).

    Parameters
    ----------
    mu_p, mu_q : array_like, shape (..., d)
        Means.
    cov_p, cov_q : array_like, shape (..., d, d)
        Covariances; batch dimensions broadcast together. A covariance that is not
        symmetric positive definite, or holds NaN or inf: ValueError naming it, before
        any gradient is written; for d <= 64 the batched kernel finds it while writing the
        others' gradients, and the buffers of `grad_out` are then filled with NaN.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" over distributions ("batchmean" is an alias); "none": the batch shape.
    return_grad : bool, default False
        Return (grad_mu_p, grad_cov_p, grad_mu_q, grad_cov_q); the covariance gradients are
        the symmetric ones (the gradient with respect to a symmetric matrix, as PyTorch).
    grad_out : tuple of four ndarray, optional
        Buffers for them.

    Returns
    -------
    loss : scalar or ndarray
        The inputs' dtype.
    grads : tuple of four ndarray
        With ``return_grad=True``.

    Notes
    -----
    With :math:`\Delta = \mu_p - \mu_q`:

    .. math::

        \mathrm{KL} = \tfrac12 \left(\mathrm{tr}(\Sigma_q^{-1} \Sigma_p)
            + \Delta^T \Sigma_q^{-1} \Delta - d + \log\det \Sigma_q
            - \log\det \Sigma_p\right)

    .. math::

        \frac{\partial}{\partial \mu_p} = \Sigma_q^{-1} \Delta, \quad
        \frac{\partial}{\partial \Sigma_p} = \tfrac12 (\Sigma_q^{-1} - \Sigma_p^{-1}),
        \quad
        \frac{\partial}{\partial \Sigma_q} = \tfrac12 \left(\Sigma_q^{-1}
            - \Sigma_q^{-1} \Sigma_p \Sigma_q^{-1} - \alpha \alpha^T\right),\
        \alpha = \Sigma_q^{-1} \Delta

    A mean with an inf entry (mu_p - mu_q infinite, not NaN): loss +inf, NaN gradients for
    mu_p, mu_q and cov_q. Equivalent: ``torch.distributions.kl_divergence`` of two
    ``MultivariateNormal``.

    Examples
    --------
    >>> cov = np.array([[2.0, 0.5], [0.5, 1.0]])
    >>> print(round(float(fastloss.mvn_kl(np.zeros(2), cov, np.zeros(2), np.eye(2))), 4))
    0.2202
    >>> diag = fastloss.mvn_kl(np.zeros(2), np.diag([2.0, 1.0]), np.zeros(2), np.eye(2))
    >>> same = fastloss.gaussian_kl(np.zeros(2), np.log([2.0, 1.0]))
    >>> print(round(float(diag), 4), round(float(same), 4))
    0.1534 0.1534
    """
    reduction = check_reduction(reduction, batchmean=True)
    check_grad_request(return_grad, grad_out)
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
    if where is not None:
        return broadcast_inputs(
            lambda *full: mvn_kl(*full, reduction="none", return_grad=return_grad), where, batch,
            reduction, return_grad, grad_out, arrs, list(names),
            [batch + (d,), batch + (d, d)] * 2, dtype)
    outs = check_grad_outs(grad_out, list(names)) if return_grad else None
    if return_grad:
        for i, a in enumerate(arrs):
            if outs[i] is not None:
                check_grad_out(outs[i], a.shape, dtype, f"grad_out[{i}]")
        check_no_overlap(grad_out_names(outs), list(zip(names, arrs)))
    if d <= _MVN_KERNEL_D:
        return _mvn_kl_kernel(arrs, dtype, batch, d, reduction, outs)
    Sp, Sq = check_covariance(sp, "cov_p"), check_covariance(sq, "cov_q")
    Lp, Lq = _cholesky(Sp, "cov_p"), _cholesky(Sq, "cov_q")
    Lp = np.broadcast_to(Lp, batch + (d, d))
    Lq = np.broadcast_to(Lq, batch + (d, d))
    delta = np.broadcast_to(mp.astype(np.float64) - mq.astype(np.float64), batch + (d,))
    M = np.linalg.solve(Lq, Lp)                          # Lq^-1 Lp
    z = np.linalg.solve(Lq, delta[..., None])[..., 0]    # Lq^-1 (mu_p - mu_q)
    logdet = (np.sum(np.log(np.diagonal(Lq, axis1=-2, axis2=-1)), axis=-1)
              - np.sum(np.log(np.diagonal(Lp, axis1=-2, axis2=-1)), axis=-1))
    per = 0.5 * (np.sum(M * M, axis=(-2, -1)) + np.sum(z * z, axis=-1) - d) + logdet
    # An infinite mean difference: the Mahalanobis term is +inf (a positive definite form),
    # where the triangular solve gives inf - inf = NaN. Its gradients stay NaN.
    per = np.where(np.isinf(delta).any(-1) & ~np.isnan(delta).any(-1), np.inf, per)
    nb = math.prod(batch)
    loss = reduce_rows(per, batch, nb, reduction, dtype)
    if not return_grad:
        return loss
    gs = grad_scale(reduction, nb)
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
    return loss, tuple(_summed(gi, a.shape, dtype, out) for gi, a, out in zip(g, arrs, outs))


@grad_out_apart("recon", "mu", "logvar")
def vae_loss(recon, x, mu, logvar, *, recon_loss="mse", beta=1.0, where=None, reduction="mean",
             return_grad=False, grad_out=None):
    r"""VAE loss per sample (axis 0 is the batch).

    The reconstruction term summed over the data dimensions plus beta times
    KL(N(mu, exp(logvar)) || N(0, I)) summed over the latent dimensions, then reduced over
    the batch (both terms on the same per-sample scale).

    Parameters
    ----------
    recon : array_like, shape (B, ...)
        The reconstruction (logits for "bce").
    x : array_like
        The data; broadcasts to recon's shape.
    mu, logvar : array_like, shape (B, ...)
        The encoder's mean and log-variance, of one shape.
    recon_loss : {"mse", "bce"}, default "mse"
        "mse": sum of (recon - x)**2; "bce": recon are logits, x targets in [0, 1]: binary
        cross-entropy with logits, summed.
    beta : float >= 0, default 1
        Weight of the KL term (beta-VAE).
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" over samples, "sum", or "none" (one loss per sample).
    return_grad : bool, default False
        Return (grad_recon, grad_mu, grad_logvar).
    grad_out : tuple of three ndarray, optional
        Buffers for them.

    Returns
    -------
    loss : scalar or ndarray
        Compute dtype; ``"none"``: shape (B,).
    grads : tuple of three ndarray
        With ``return_grad=True``.

    Notes
    -----
    .. math::

        l_b = \sum_j r(\hat x_{bj}, x_{bj})
            - \frac{\beta}{2} \sum_k \left(1 + \mathrm{logvar}_{bk} - \mu_{bk}^2
            - e^{\mathrm{logvar}_{bk}}\right)

    with :math:`r = (\hat x - x)^2` (gradient :math:`2(\hat x - x)`) or the BCE with logits
    (gradient :math:`\sigma(\hat x) - x`); :math:`\partial l / \partial \mu = \beta \mu`,
    :math:`\partial l / \partial\, \mathrm{logvar} = \tfrac{\beta}{2}
    (e^{\mathrm{logvar}} - 1)`. The PyTorch idiom is
    ``F.mse_loss(recon, x, reduction="sum")`` plus the KL term, divided by the batch size.

    Examples
    --------
    >>> recon, x = np.array([[0.5, 1.0], [0.0, 0.0]]), np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> mu, logvar = np.array([[0.5, -0.5]] * 2), np.array([[0.0, np.log(2.0)]] * 2)
    >>> print(np.round(fastloss.vae_loss(recon, x, mu, logvar, reduction="none"), 4))
    [0.6534 1.4034]
    """
    reduction = check_reduction(reduction, batchmean=True)
    check_grad_request(return_grad, grad_out)
    check_choice(recon_loss, "recon_loss", ("mse", "bce"))
    bt = check_real(beta, "beta", 0.0, finite=True)
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
    if where is not None:
        return independent(lambda: vae_loss(r, xt, m, lv, recon_loss=recon_loss, beta=bt,
                                            reduction="none", return_grad=return_grad,
                                            grad_out=grad_out), where, (B,), reduction, return_grad)
    Dr, Dz = math.prod(r.shape[1:]), math.prod(m.shape[1:])
    rf, xf = flat_full(r, r.shape), flat_full(xt, r.shape)
    mf, lvf = flat_full(m, m.shape), flat_full(lv, m.shape)
    gr = gm = glv = None
    if return_grad:
        outs = check_grad_outs(grad_out, ["recon", "mu", "logvar"])
        gr, gm, glv = (BroadcastGrad(shp, shp, dtype, o, f"grad_out[{i}]")
                       for i, (shp, o) in enumerate(zip((r.shape, m.shape, m.shape), outs)))
        check_no_overlap(grad_out_names(outs), [("recon", r), ("mu", m), ("logvar", lv)])
    gs = grad_scale(reduction, B)
    mode = 0 if recon_loss == "mse" else 1
    nt_r, nt_z = _config.threads_for(rf.size), _config.threads_for(mf.size)
    g_r = gr.buf if gr else None
    g_m, g_lv = (gm.buf, glv.buf) if gm else (None, None)
    if reduction != "none":
        total = _k.recon(rf, xf, mode, g_r, 1, None, None, gs, nt_r)
        total += bt * _k.gauss_kl(mf, lvf, None, None, g_m, g_lv, None, None, 1, None, None,
                                  gs * bt, nt_z)
        loss = reduce_total(total, B, reduction, dtype)
    else:
        rows = _row_losses(lambda D, rows, elem: _k.recon(rf, xf, mode, g_r, D, rows, elem, gs, nt_r),
                           B, Dr, dtype)
        rows_z = _row_losses(lambda D, rows, elem: _k.gauss_kl(mf, lvf, None, None, g_m, g_lv, None,
                                                               None, D, rows, elem, gs * bt, nt_z),
                             B, Dz, dtype)
        loss = (rows + bt * rows_z).astype(dtype)
    if not return_grad:
        return loss
    return loss, (gr.result(), gm.result(), glv.result())


@grad_out_apart("input", "var")
def gaussian_nll_loss(input, target, var, *, full=False, eps=1e-6, where=None, reduction="mean",
                      return_grad=False, grad_out=None):
    r"""PyTorch's gaussian_nll_loss.

    Parameters
    ----------
    input : array_like
        The predicted means.
    target : array_like
        Broadcasts to input's shape.
    var : array_like
        The input's shape (heteroscedastic), one per last-axis row (shape[:-1] or a last
        axis of 1), the input's shape with one other axis of size 1, or a scalar; negative
        entries: ValueError.
    full : bool, default False
        Add the constant 0.5 * log(2 pi).
    eps : float >= 0, default 1e-6
        var is clamped at eps.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" over elements (as PyTorch, not over distributions), "sum", "none".
    return_grad : bool, default False
        Return (grad_input, grad_var), grad_var of var's shape (the gradient with respect to
        target is -grad_input).
    grad_out : tuple of two ndarray, optional
        Buffers for them.

    Returns
    -------
    loss : scalar or ndarray
        Compute dtype; ``"none"``: input's shape.
    grads : tuple of two ndarray
        With ``return_grad=True``.

    Notes
    -----
    With :math:`v = \max(\mathrm{var}, \varepsilon)`, per element:

    .. math::

        l = \tfrac12 \left(\log v + \frac{(x - t)^2}{v}\right)
            \ [+ \tfrac12 \log 2\pi], \qquad
        \frac{\partial l}{\partial x} = \frac{x - t}{v}, \qquad
        \frac{\partial l}{\partial\, \mathrm{var}} = \frac{1}{2v}
            - \frac{(x - t)^2}{2 v^2}

    As in PyTorch, the eps clamp passes the gradient straight through. Equivalent:
    ``torch.nn.functional.gaussian_nll_loss`` (same semantics and broadcasting of var).

    Examples
    --------
    >>> loss = fastloss.gaussian_nll_loss(np.array([1.0, 2.0]), np.array([1.5, 2.0]),
    ...                                   np.array([0.5, 2.0]))
    >>> print(round(float(loss), 4))
    0.125
    """
    reduction = check_reduction(reduction)
    check_grad_request(return_grad, grad_out)
    (xa, ta, va), dtype = _as_arrays((input, target, var), ("input", "target", "var"))
    e = check_real(eps, "eps", 0.0)
    check_broadcast(ta, xa.shape, "target", against="input")
    shape = xa.shape
    layout = check_var_layout(va, shape)
    # PyTorch's var >= 0 check; the kernel makes it in its pass over a full var when
    # it writes only arrays of its own (a pass of its own cost the loss a fifth)
    in_kernel = layout == "full" and where is None and grad_out is None
    if not in_kernel:
        check_nonnegative(va, "var", _VAR_NEGATIVE)
    if where is not None:
        # var per row as (..., 1), so that it broadcasts against input
        vb = va.reshape(shape[:-1] + (1,)) if layout == "row" else va
        return broadcast_inputs(
            lambda xf, vf: gaussian_nll_loss(xf, ta, vf, full=full, eps=e, reduction="none",
                                             return_grad=return_grad),
            where, shape, reduction, return_grad, grad_out, [xa, vb], ["input", "var"],
            [shape, shape], dtype, in_shapes=[shape, va.shape])
    n = xa.size
    D = shape[-1] if len(shape) else 1
    nrows = n // D if D else math.prod(shape[:-1])
    per_row = layout in ("scalar", "row")
    gx = gv = None
    if return_grad:
        outs = check_grad_outs(grad_out, ["input", "var"])
        gx = BroadcastGrad(shape, shape, dtype, outs[0], "grad_out[0]")
        gv = BroadcastGrad(va.shape, va.shape if per_row else shape, dtype, outs[1], "grad_out[1]")
        check_no_overlap(grad_out_names(outs), [("input", xa), ("var", va)])
    xf, tf = flat_full(xa, shape), flat_full(ta, shape)
    cst = 0.5 * math.log(2 * math.pi) if full else 0.0
    gs = grad_scale(reduction, n)
    nt = _config.threads_for(n)
    elem = np.empty(n, dtype=dtype) if reduction == "none" else None
    if per_row:
        vrow = (np.full(nrows, va, dtype=dtype) if layout == "scalar"
                else np.ascontiguousarray(va).reshape(-1))
        # zeros: rows of no elements (D = 0), which the kernel skips, have gradient 0
        grow = np.zeros(nrows, dtype=dtype) if return_grad else None
        total, _ = _k.nll(xf, tf, vrow, True, gx.buf if gx else None, grow, D, elem, e, cst, gs, nt)
        if return_grad:
            gv.full[...] = (np.sum(grow, dtype=np.float64) if layout == "scalar"
                            else grow.reshape(va.shape))
    else:
        vf = flat_full(va, shape)
        total, negative = _k.nll(xf, tf, vf, False, gx.buf if gx else None, gv.buf if gv else None,
                                 max(D, 1), elem, e, cst, gs, nt)
        if negative:
            raise negative_entries("var", _VAR_NEGATIVE)
    loss = reduce_elements(total, elem, shape, n, reduction, dtype)
    if not return_grad:
        return loss
    return loss, (gx.result(), gv.result())


document(gaussian_kl, "distribution")
document(mvn_kl, "distribution")
document(vae_loss, "sample")
document(gaussian_nll_loss, "element")
