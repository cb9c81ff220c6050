"""Metric-learning and contrastive losses: pairwise distances, the triplet margin
loss, batch-hard / batch-all triplet mining, InfoNCE (and CLIP) and NT-Xent (SimCLR).

Thin wrappers over the shared layer (ARCHITECTURE.md): validate every argument
(_checks.py), then alternate NumPy matrix products (BLAS, with BLAS's own threads)
with the fused epilogues of _metric.pyx, never both at once (the epilogues run on
fastloss's thread pool, whose calling thread takes the blocks that pool threads
stuck behind BLAS's still-spinning workers do not). The similarity matrix of the
contrastive losses is traversed by two kernels (statistics, then the gradient of the
logits written in place), and the gradient goes back to the embeddings through BLAS.
NT-Xent's similarity blocks are symmetric: with SciPy installed (and bounded logits)
they are lower triangles from SciPy's BLAS syrk (half the products), read back by symm.
"""
import math

import numpy as np

from . import _blas, _config
from . import _metric as _k
from ._checks import (as_float_array, as_labels, check_choice, check_grad_request, check_matrix,
                      check_no_overlap, check_real, check_reduction, check_same_shape,
                      check_temperature, grad_out_apart, grad_out_names, result_dtype)
from ._layout import grad_buffers
from ._mask import compact, document, independent
from ._reduce import grad_scale, reduce_rows
from ._xent import label_rows

__all__ = ["pairwise_distances", "triplet_margin_loss", "batch_hard_triplet_loss", "info_nce_loss",
           "nt_xent_loss"]

_config.register_kernels(_k)

# torch.nn.functional.normalize's eps: x / max(||x||, eps).
NORMALIZE_EPS = 1e-12
# Similarity matrices up to this size are kept whole (two products); larger ones are
# processed in blocks of rows (about _BLOCK_BYTES each), so memory stays bounded.
_S_MAX_BYTES = 1 << 30
_BLOCK_BYTES = 64 << 20
_METRICS = ("sqeuclidean", "euclidean", "cosine")


# --- helpers ----------------------------------------------------------------------------

# Rows per block of the batch-hard triangle walk. With SciPy, a walk whose N x N products
# take at most HARD_SYRK_BYTES is one block, the whole triangle from one syrk (2048 rows of
# float32); above, the triangle no longer stays in the last-level cache while it is mined
# (4096 x 128 float32: 28 ms against 19 ms in blocks, Zen 4 with 32 MiB of L3).
HARD_BLOCK = 512
HARD_SYRK_BYTES = 16 << 20


def _block_rows(n_rows, row_bytes, multiple=1):
    """Rows per block of about _BLOCK_BYTES, a multiple of `multiple`."""
    b = max(multiple, (_BLOCK_BYTES // max(row_bytes, 1)) // multiple * multiple)
    return min(b, n_rows)


def _label_ids(lab):
    """int32 labels with the same equalities as the int64 labels lab (the kernels only
    compare them): lab itself when it fits, else the ranks among its distinct values
    (np.unique's sort cost about 4% of a 1024 x 128 batch-hard call)."""
    if lab.size and (lab.min() < np.iinfo(np.int32).min or lab.max() > np.iinfo(np.int32).max):
        return np.unique(lab, return_inverse=True)[1].reshape(-1).astype(np.int32)
    return lab.astype(np.int32)


def _operand_copy(x):
    """The right-hand operand of x @ x.T as a separate buffer: NumPy sends x @ x.T to syrk
    and mirrors the triangle serially, slower here than a plain gemm."""
    return np.array(x, copy=True)


# --- pairwise distances -----------------------------------------------------------------

def pairwise_distances(x, y=None, *, metric="sqeuclidean"):
    r"""Distances between the rows of x (..., N, D) and y (..., M, D), shape (..., N, M).

    Parameters
    ----------
    x : array_like, shape (..., N, D)
        At least 2-D.
    y : array_like, shape (..., M, D), optional
        None: x and itself (the diagonal is then exactly 0). The batch dimensions broadcast
        as in torch.cdist.
    metric : {"sqeuclidean", "euclidean", "cosine"}, default "sqeuclidean"
        "sqeuclidean": ``||a||^2 + ||b||^2 - 2 a.b`` clamped at 0 (the GEMM identity: BLAS
        does the products; nearby points lose precision, about eps * (||a||^2 + ||b||^2));
        "euclidean": its square root; "cosine": ``1 - a.b / (||a|| ||b||)`` clipped to
        [0, 2], zero rows have similarity 0 (distance 1).

    Returns
    -------
    ndarray, shape (..., N, M)
        The inputs' dtype (float64 if either is), computed straight into the output (row
        blocks of products; x with itself and SciPy installed: one syrk's lower triangle,
        mirrored, so exactly symmetric): no float64 or second (N, M) temporary.

    Notes
    -----
    .. math::

        D_{ij} = \max(\|x_i\|^2 + \|y_j\|^2 - 2\, x_i \cdot y_j,\ 0)

    No gradient: it is not a loss (the triplet losses differentiate their own distances). A
    row with inf or NaN entries (or whose squared norm overflows) is computed from the
    direct formula ``||a - b||^2`` instead, so it affects only its own row and column: inf
    against a finite row, NaN where inf - inf or NaN occurs (its own diagonal entry
    included, as torch.cdist); cosine: NaN for the whole row and column.
    Equivalent: ``torch.cdist`` (``**2`` for "sqeuclidean"),
    ``scipy.spatial.distance.cdist``.

    Examples
    --------
    >>> pts = np.array([[0.0, 0.0], [3.0, 4.0]])
    >>> print(fastloss.pairwise_distances(pts))
    [[ 0. 25.]
     [25.  0.]]
    >>> print(fastloss.pairwise_distances(pts, metric="euclidean"))
    [[0. 5.]
     [5. 0.]]
    """
    check_choice(metric, "metric", _METRICS)
    xa = _points(x, "x")
    if y is None:
        dtype, ya, batch = xa.dtype, None, xa.shape[:-2]
    else:
        ya = _points(y, "y")
        if ya.shape[-1] != xa.shape[-1]:
            raise ValueError(f"y has {ya.shape[-1]} features (columns), x has {xa.shape[-1]}")
        try:
            batch = np.broadcast_shapes(xa.shape[:-2], ya.shape[:-2])
        except ValueError:
            raise ValueError(f"the batch shapes of x {xa.shape[:-2]} and y {ya.shape[:-2]} do not "
                             f"broadcast together") from None
        dtype = result_dtype(xa, ya)
    N, M = xa.shape[-2], (xa if ya is None else ya).shape[-2]
    out = np.empty(batch + (N, M), dtype=dtype)
    xb = np.broadcast_to(xa, batch + xa.shape[-2:])
    yb = None if ya is None else np.broadcast_to(ya, batch + ya.shape[-2:])
    for i in np.ndindex(batch):
        _distances(xb[i], None if yb is None else yb[i], metric, dtype, out[i])
    return out


def _points(a, name):
    x = as_float_array(a, name)
    if x.ndim < 2:
        raise ValueError(f"{name} must be at least 2-D (..., n_samples, n_features), got shape "
                         f"{x.shape}")
    return x


def _distances(x, y, metric, dtype, out):
    """pairwise_distances of one (N, D) x and (M, D) y (None: x) into out (N, M)."""
    xa = np.ascontiguousarray(x, dtype=dtype)
    yc = xa if y is None else np.ascontiguousarray(y, dtype=dtype)
    N, M = xa.shape[0], yc.shape[0]
    if N == 0 or M == 0:
        return
    nt = _config.threads_for(N * M)
    ntn = _config.threads_for(xa.size + yc.size)
    xn = np.empty(N)
    _k.sq_norms(xa, xn, ntn)
    yn = xn if y is None else np.empty(M)
    if y is not None:
        _k.sq_norms(yc, yn, ntn)
    if metric == "cosine":
        with np.errstate(divide="ignore"):
            a = np.where(xn == 0, 0.0, 1.0 / np.sqrt(xn)).astype(dtype)     # NaN stays NaN
            b = a if y is None else np.where(yn == 0, 0.0, 1.0 / np.sqrt(yn)).astype(dtype)
        mode = _k.DIST_COSINE
    else:
        a = xn.astype(dtype)
        b = a if y is None else yn.astype(dtype)
        mode = _k.DIST_SQ if metric == "sqeuclidean" else _k.DIST_EUCLID
    blas = _blas.scipy_blas(dtype) if y is None and xa.shape[1] > 0 else None
    if blas is not None:
        # x with itself and SciPy: the lower triangle of x x^T (syrk: half the products of
        # a gemm), then each distance computed once and mirrored (exactly symmetric)
        _blas.lower_gram(blas.syrk, xa, out)
        _k.dist_sym(out, a, mode, nt)
    else:
        if y is None:
            yc = _operand_copy(xa)
        B = _block_rows(N, M * dtype.itemsize)
        for r0 in range(0, N, B):
            r1 = min(N, r0 + B)
            blk = out[r0:r1]
            np.matmul(xa[r0:r1], yc.T, out=blk)
            _k.dist_epilogue(blk, a[r0:r1], b, r0 if y is None else -1, mode, nt)
    # Rows whose squared norm is not finite in the dtype (inf or NaN entries, or overflow):
    # the identity would give NaN (inf - inf) for every pair, so they are recomputed
    # directly (the norms say which, at no cost).
    bad_x = _nonfinite_rows(xn, dtype)
    bad_y = bad_x if y is None else _nonfinite_rows(yn, dtype)
    for i in bad_x:
        out[i] = _direct(xa[i], yc, metric)
    for j in bad_y:
        out[:, j] = _direct(yc[j], xa, metric)
    if y is None and bad_x.size:
        d = out[bad_x, bad_x]
        out[bad_x, bad_x] = np.where(np.isnan(d), d, 0)


def _nonfinite_rows(sq, dtype):
    """Indices of the float64 squared norms sq that are NaN or overflow dtype."""
    return np.flatnonzero(~(sq <= np.finfo(dtype).max))


def _direct(v, w, metric):
    """The distances of one row v to every row of w from the formula itself, in float64."""
    v, w = v.astype(np.float64), w.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if metric == "cosine":
            nw = np.sqrt(np.sum(w * w, axis=1))
            s = (w / np.where(nw > 0, nw, 1.0)[:, None]) @ (v / np.sqrt(np.sum(v * v)))
            return np.clip(1.0 - s, 0.0, 2.0)
        d = np.sum((w - v) ** 2, axis=1)
    return np.sqrt(d) if metric == "euclidean" else d


# --- triplet margin loss ----------------------------------------------------------------

@grad_out_apart("anchor", "positive", "negative")
def triplet_margin_loss(anchor, positive, negative, *, margin=1.0, p=2.0, eps=1e-6, swap=False,
                        squared=False, where=None, reduction="mean", return_grad=False,
                        grad_out=None):
    r"""PyTorch's triplet_margin_loss: ``max(d(a, p) - d(a, n) + margin, 0)`` per triplet.

    Parameters
    ----------
    anchor, positive, negative : array_like, shape (N, D) or (D,)
        Triplets (one triplet: (D,)), of one shape.
    margin : float >= 0, default 1
        The margin.
    p : float > 0, default 2
        The norm of ``d(x, y) = ||x - y + eps||_p`` (inf allowed), not squared.
    eps : float >= 0, default 1e-6
        Added to the difference, as PyTorch.
    swap : bool, default False
        Use ``min(d(a, n), d(p, n))`` as the negative distance (ties split the gradient, as
        torch.min).
    squared : bool, default False
        Use d(x, y)^2 (p=2 only), the FaceNet form.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" over triplets; "none": shape (N,) (or a scalar for one triplet).
    return_grad : bool, default False
        Also return the gradients (anchor, positive, negative).
    grad_out : tuple of three ndarray, optional
        Buffers for them.

    Returns
    -------
    loss : scalar or ndarray
        Compute dtype.
    grads : tuple of three ndarray
        With ``return_grad=True``: each of anchor's shape.

    Notes
    -----
    With :math:`u = a - p + \epsilon`, :math:`v = a - n + \epsilon`:

    .. math::

        l = \max(\|u\|_p - \|v\|_p + m,\ 0), \qquad
        \frac{\partial l}{\partial a} = \nabla\|u\|_p - \nabla\|v\|_p, \quad
        \nabla\|u\|_p = \frac{\mathrm{sign}(u)\, |u|^{p-1}}{\|u\|_p^{p-1}}

    (and :math:`-\nabla\|u\|_p` for the positive, :math:`\nabla\|v\|_p` for the
    negative) where the hinge is active. The hinge passes the gradient where its argument is
    >= 0 (PyTorch's clamp_min), and a distance of 0 has a zero subgradient. Special values:
    the formula evaluated directly (inf in one input: d = inf, so the loss is inf, 0, or NaN
    for inf - inf); a NaN loss has NaN gradients in all three rows (PyTorch's are NaN or 0
    depending on p). Equivalent: ``torch.nn.functional.triplet_margin_loss``.

    Examples
    --------
    >>> a = np.array([[0.0, 0.0], [1.0, 1.0]])
    >>> p, n = np.array([[3.0, 4.0], [1.0, 2.0]]), np.array([[0.0, 5.0], [4.0, 5.0]])
    >>> loss, (g_a, g_p, g_n) = fastloss.triplet_margin_loss(a, p, n, reduction="none",
    ...                                                       return_grad=True)
    >>> print(np.round(loss, 4))
    [1. 0.]
    >>> print(np.round(g_a, 4))
    [[-0.6  0.2]
     [ 0.   0. ]]
    """
    reduction = check_reduction(reduction)
    check_grad_request(return_grad, grad_out)
    a = as_float_array(anchor, "anchor")
    pos = as_float_array(positive, "positive")
    neg = as_float_array(negative, "negative")
    if a.ndim not in (1, 2):
        raise ValueError(f"anchor must be 1-D (D,) or 2-D (N, D), got shape {a.shape}")
    check_same_shape(a, "anchor", pos, "positive")
    check_same_shape(a, "anchor", neg, "negative")
    m = check_real(margin, "margin", 0.0)
    pe = check_real(p, "p", 0.0, low_open=True)
    e = check_real(eps, "eps", 0.0)
    if squared and pe != 2.0:
        raise ValueError(f"squared=True is the squared Euclidean distance: p must be 2, got {pe}")
    dtype = result_dtype(a, pos, neg)
    shape = a.shape
    D = shape[-1]
    N = 1 if a.ndim == 1 else shape[0]
    if where is not None:
        return independent(lambda: triplet_margin_loss(
            a, pos, neg, margin=m, p=pe, eps=e, swap=swap, squared=squared, reduction="none",
            return_grad=return_grad, grad_out=grad_out), where, shape[:-1], reduction, return_grad)
    a2, p2, n2 = (np.ascontiguousarray(t, dtype=dtype).reshape(N, D) for t in (a, pos, neg))
    kind = {1.0: _k.PNORM_1, 2.0: _k.PNORM_2, math.inf: _k.PNORM_INF}.get(pe, _k.PNORM_GEN)
    gs = grad_scale(reduction, N)
    grads = (grad_buffers(grad_out, ["anchor", "positive", "negative"], shape, dtype)
             if return_grad else None)
    if grad_out is not None:
        check_no_overlap(grad_out_names(grads), [("anchor", a2), ("positive", p2), ("negative", n2)])
    g2 = [g.reshape(N, D) for g in grads] if grads else [None, None, None]
    rows = np.empty(N)
    _k.triplet(a2, p2, n2, g2[0], g2[1], g2[2], kind, pe, e, m, bool(swap), bool(squared), gs,
               rows, _config.threads_for(3 * a2.size))
    loss = reduce_rows(rows, shape[:-1], N, reduction, dtype)
    return (loss, tuple(grads)) if return_grad else loss


# --- batch-hard / batch-all triplet loss ------------------------------------------------

@grad_out_apart("embeddings")
def batch_hard_triplet_loss(embeddings, labels, *, margin=1.0, squared=False, mining="hard",
                            where=None, reduction="mean", return_grad=False, grad_out=None):
    r"""Triplet loss with triplets mined inside the batch from integer labels.

    Hermans et al. 2017; distances Euclidean (or squared with ``squared=True``).

    Parameters
    ----------
    embeddings : array_like, shape (N, D)
        N >= 2.
    labels : array_like of int, shape (N,)
        Class of each row.
    margin : float >= 0, default 1
        The margin.
    squared : bool, default False
        Squared Euclidean distances.
    mining : {"hard", "all"}, default "hard"
        "hard": per anchor its farthest positive (same label, another row) and nearest
        negative (ties: first row); anchors without a positive or a negative are skipped.
        The distances of the chosen pairs are recomputed exactly from the embeddings; the
        mining uses the GEMM identity in the embeddings' dtype. "all": every valid triplet
        (a, p, n).
    reduction : {"mean", "sum", "none"}, default "mean"
        "hard": "mean" averages over the anchors that have both (0 when none has). "all":
        "mean" is the sum of the positive losses over their number (0 when there is none);
        "none" gives each anchor's sum.
    return_grad : bool, default False
        Also return the gradient with respect to the embeddings (zero subgradient at
        distance 0).
    grad_out : ndarray, optional
        A buffer for it.

    Returns
    -------
    loss : scalar or ndarray
        Compute dtype; "none": shape (N,).
    grad : ndarray
        With ``return_grad=True``: (N, D).

    Notes
    -----
    For "hard", per anchor a:

    .. math::

        l_a = \max\left(\max_{p:\, y_p = y_a} d_{ap} - \min_{n:\, y_n \ne y_a} d_{an}
              + m,\ 0\right), \qquad
        \frac{\partial d_{ap}}{\partial e_a} = \frac{e_a - e_p}{d_{ap}}

    (:math:`2 (e_a - e_p)` for squared distances), through the chosen pairs only.
    Special values: distances are those of pairwise_distances (inf to a row with an inf
    entry, NaN where inf - inf or NaN occurs); an anchor that meets a NaN distance, or whose
    d_ap - d_an is NaN (inf - inf), has loss NaN, and then the whole gradient is NaN. Other
    anchors are unaffected. No PyTorch function; pytorch-metric-learning's
    ``BatchHardMiner`` + ``TripletMarginLoss`` is the usual combination.

    Examples
    --------
    >>> e = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 3.0]])
    >>> y = np.array([0, 0, 1, 1])
    >>> print(np.round(fastloss.batch_hard_triplet_loss(e, y, margin=2.0, reduction="none"), 4))
    [1.     0.7639 1.     0.    ]
    """
    reduction = check_reduction(reduction)
    check_grad_request(return_grad, grad_out)
    check_choice(mining, "mining", ("hard", "all"))
    E = check_matrix(embeddings, "embeddings", min_rows=2)
    lab = as_labels(labels, "labels")
    N, D = E.shape
    if lab.shape != (N,):
        raise ValueError(f"labels must have shape ({N},) (one per embedding row), got {lab.shape}")
    m = check_real(margin, "margin", 0.0)
    if where is not None:
        return compact(lambda e, y: batch_hard_triplet_loss(
            e, y, margin=m, squared=squared, mining=mining, reduction=reduction,
            return_grad=return_grad), where, N, reduction, return_grad, grad_out, [E],
            ["embeddings"], others=[lab])
    dtype = E.dtype
    E = np.ascontiguousarray(E)
    lab32 = _label_ids(lab)
    sq = np.empty(N)
    _k.sq_norms(E, sq, _config.threads_for(E.size))
    sqT = sq.astype(dtype)
    Gd = None
    if _nonfinite_rows(sq, dtype).size:
        # A row with inf or NaN entries (or an overflowing norm): the identity would give
        # NaN for all its pairs. Rare, so the kernels mine the distances of
        # pairwise_distances (direct for such rows) given as products Gd = -d^2 / 2 with
        # zero norms: 0 + 0 - 2 Gd is d^2 exactly. Self-distances are 0.
        Gd = np.empty((N, N), dtype=dtype)
        _distances(E, None, "sqeuclidean", dtype, Gd)
        np.fill_diagonal(Gd, 0)
        Gd *= -0.5
        sqT = np.zeros(N, dtype=dtype)
    nt = _config.threads_for(N * N)
    grad = grad_buffers(grad_out, ["embeddings"], (N, D), dtype)[0] if return_grad else None
    if grad_out is not None:
        check_no_overlap([("grad_out", grad)], [("embeddings", E)])
    rows = np.empty(N)
    if mining == "hard":
        # Mining over the lower triangle of the products, by rows then by columns: in one
        # block when the whole triangle is at hand (the distances' Gd, or SciPy's syrk:
        # half the products of a gemm, in one BLAS call), else in blocks of rows, each
        # against the rows up to its end (about half the products of the full matrix).
        bp, bn = np.empty(N, dtype=dtype), np.empty(N, dtype=dtype)
        pos, neg, nanf = (np.empty(N, dtype=np.int32) for _ in range(3))
        tri = Gd                                # the whole triangle, or None
        blas = _blas.scipy_blas(dtype) if N * N * dtype.itemsize <= HARD_SYRK_BYTES else None
        if tri is None and blas is not None:
            tri = np.empty((N, N), dtype=dtype)
            _blas.lower_gram(blas.syrk, E, tri)
        B = N if tri is not None else min(N, HARD_BLOCK)
        if tri is None:
            buf = np.empty(B * N, dtype=dtype)
            first = _operand_copy(E[:B])        # block 0, E_b E_b^T, as a gemm
        for r0 in range(0, N, B):
            r1 = min(N, r0 + B)
            if tri is None:
                blk = buf[:(r1 - r0) * r1].reshape(r1 - r0, r1)
                np.matmul(E[r0:r1], (first if r0 == 0 else E[:r1]).T, out=blk)
            else:
                blk = tri
            ntb = _config.threads_for(blk.size)
            _k.hard_rows(blk, r0, sqT, lab32, bp, pos, bn, neg, nanf, ntb)
            _k.hard_cols(blk, r0, sqT, lab32, bp, pos, bn, neg, nanf, ntb)
        if Gd is not None:
            # negatives all at distance inf are never "nearer" than the initial inf: the
            # nearest is then the first of them
            _, inv, count = np.unique(lab32, return_inverse=True, return_counts=True)
            miss = np.flatnonzero((neg < 0) & (count[inv] < N))
            neg[miss] = [np.argmax(lab32 != lab32[i]) for i in miss]
        cp, cn = np.empty(N), np.empty(N)
        ntv = _config.threads_for(E.size)
        _k.hard_finish(E, pos, neg, nanf, m, bool(squared), rows, cp, cn, ntv)
        denom = float(np.count_nonzero((pos >= 0) & (neg >= 0)))
        if reduction == "mean" and not denom:
            reduction = "sum"     # nothing qualifies: the loss is the sum (0, or NaN from NaN)
        if grad is not None:
            grad[...] = 0
            _k.hard_scatter(E, grad, pos, neg, cp, cn, grad_scale(reduction, denom), ntv)
    else:
        if Gd is None:
            G = np.empty((N, N), dtype=dtype)
            np.matmul(E, _operand_copy(E).T, out=G)
        else:
            # a triplet with d_ap = d_an = inf has loss inf - inf = NaN, which the kernel's
            # counting (by comparisons) does not see
            same, inf = lab32[:, None] == lab32[None, :], np.isinf(Gd)
            np.fill_diagonal(same, False)
            nan_rows = (inf & same).any(1) & (inf & (lab32[:, None] != lab32[None, :])).any(1)
            G = Gd
        count = np.empty(N, dtype=np.int64)
        _k.all_mine(G, sqT, lab32, m, bool(squared), rows, count, nt)
        if Gd is not None:
            rows[nan_rows] = np.nan
        denom = float(np.sum(count))
        if reduction == "mean" and not denom:
            reduction = "sum"     # as for mining="hard"
        if grad is not None:
            gs = grad_scale(reduction, denom)
            # dL/dE = 2 (diag(rowsum Ws) E - Ws E), Ws = gs (W + W^T): one product with a
            # ones column appended for the row sums.
            _k.sym_add(G, 2.0 * gs, nt)
            E1 = np.empty((N, D + 1), dtype=dtype)
            E1[:, :D] = E
            E1[:, D] = 1
            R = G @ E1
            np.multiply(E, R[:, D:], out=grad)
            grad -= R[:, :D]
    if grad is not None and np.isnan(rows).any():
        grad[...] = np.nan    # the mined pairs of a NaN anchor are undefined
    loss = reduce_rows(rows, (N,), denom, reduction, dtype)
    return (loss, grad) if return_grad else loss


# --- InfoNCE / CLIP ---------------------------------------------------------------------

def _views_setup(x1, x2, names, temperature, reduction, return_grad, grad_out, where=None):
    """Two checked (N, D) views (N >= 2) as C-contiguous arrays of one dtype, the
    temperature, the reduction and the gradient buffers (or None; also with `where`, whose
    call allocates its own)."""
    reduction = check_reduction(reduction)
    check_grad_request(return_grad, grad_out)
    a = check_matrix(x1, names[0], min_rows=2)
    b = check_matrix(x2, names[1])
    check_same_shape(a, names[0], b, names[1])
    t = check_temperature(temperature)
    dtype = result_dtype(a, b)
    a = np.ascontiguousarray(a, dtype=dtype)
    b = np.ascontiguousarray(b, dtype=dtype)
    if where is not None or not return_grad:
        return a, b, t, reduction, None
    grads = grad_buffers(grad_out, list(names), a.shape, dtype)
    if grad_out is not None:
        check_no_overlap(grad_out_names(grads), list(zip(names, (a, b))))
    return a, b, t, reduction, grads



def _normalized(x, scale, normalize, nt):
    """scale * x / max(||x||, eps) row-wise (or scale * x), as a new C-contiguous array."""
    if normalize:
        out = np.empty_like(x)
        _k.normalize(x, out, scale, NORMALIZE_EPS, nt)
        return out
    return x * x.dtype.type(scale) if scale != 1.0 else x


def _normalized_grad(x, gh, g, scale, normalize, nt):
    """The gradient with respect to x of <gh, _normalized(x, scale)>, into g."""
    if normalize:
        _k.normalize_grad(x, gh, g, NORMALIZE_EPS, scale, nt)
    else:
        np.multiply(gh, x.dtype.type(scale), out=g)
    return g


def _logit_bound(a, b, nt):
    """U with |a_i . b_j| <= U for all rows (Cauchy-Schwarz, plus the product's rounding),
    when 2U + log(rows of b) <= 80: exp(S - U) is then a normal number everywhere and the
    one-exponential kernels apply. None otherwise (or for NaN/inf)."""
    na = np.empty(a.shape[0])
    _k.sq_norms(a, na, nt)
    nb = na
    if b is not a:
        nb = np.empty(b.shape[0])
        _k.sq_norms(b, nb, nt)
    u = math.sqrt(float(np.max(na))) * math.sqrt(float(np.max(nb)))
    u *= 1.0 + 4.0 * a.shape[1] * np.finfo(a.dtype).eps
    if not math.isfinite(u) or 2.0 * u + math.log(b.shape[0]) > 80.0:
        return None
    return u


def _sym_ce(qs, kh, gs, want_grad, nt):
    """Symmetric (CLIP) cross-entropy of S = qs kh^T with positives on the diagonal:
    per-row losses 0.5 (lse_row_i - S_ii) + 0.5 (lse_col_i - S_ii), and with want_grad
    (dS kh, dS^T qs) for dS = gs * d(sum of the losses)/dS."""
    N, dtype = qs.shape[0], qs.dtype
    G = _k.CE_GROUP
    ng = -(-N // G)
    U = _logit_bound(qs, kh, _config.threads_for(qs.size))
    rlse = np.empty(N)
    diag = np.empty(N)
    csum = np.empty((ng, N), dtype=dtype)
    cmax = np.empty((ng, N), dtype=dtype) if U is None else None
    clse = np.empty(N, dtype=dtype)
    full = N * N * dtype.itemsize <= _S_MAX_BYTES
    B = N if full else _block_rows(N, N * dtype.itemsize, G)
    S = np.empty((B, N), dtype=dtype)
    idx = np.arange(B)
    for r0 in range(0, N, B):               # pass 1: statistics
        r1 = min(N, r0 + B)
        Sb = S[:r1 - r0]
        np.matmul(qs[r0:r1], kh.T, out=Sb)
        diag[r0:r1] = Sb[idx[:r1 - r0], idx[:r1 - r0] + r0]
        if U is None:
            _k.ce_stats(Sb, r0, rlse, cmax, csum, nt)
        else:
            _k.ce_stats_bounded(Sb, r0, rlse, csum, U, nt)
    if U is None:
        _k.ce_col_lse(cmax, csum, clse, nt)
        clse64 = clse.astype(np.float64)
    else:
        clse64 = U + np.log(np.sum(csum, axis=0, dtype=np.float64))
        clse[...] = clse64
    rows = 0.5 * (rlse - diag) + 0.5 * (clse64 - diag)
    if not want_grad:
        return rows, None, None
    gq = np.empty_like(qs)
    gk = np.empty_like(kh) if full else np.zeros_like(kh)
    bvec = None if U is None else np.exp(U - clse64).astype(dtype)
    for r0 in range(0, N, B):               # pass 2: gradient of the logits, back through BLAS
        r1 = min(N, r0 + B)
        Sb = S[:r1 - r0]
        if not full:
            np.matmul(qs[r0:r1], kh.T, out=Sb)
        if U is None:
            _k.ce_grad(Sb, r0, rlse, 0.5 * gs, clse, 0.5 * gs, 0, N, gs, nt)
        else:
            _k.ce_grad_bounded(Sb, r0, rlse, 0.5 * gs, bvec, 0.5 * gs, U, 0, N, gs, nt)
        _logit_grad_back(Sb, qs, kh, r0, gq, gk, full)
    return rows, gq, gk


def _row_ce(qs, kh, labels_of, gs, want_grad, mask_self=False):
    """Row-wise cross-entropy of S = qs kh^T (row i's label labels_of(rows)), through
    _xent.label_rows in place. Returns per-row losses and, with want_grad,
    (dS kh, dS^T qs). mask_self: S_ii = -inf (self-similarity excluded)."""
    N, M, dtype = qs.shape[0], kh.shape[0], qs.dtype
    full = N * M * dtype.itemsize <= _S_MAX_BYTES
    B = N if full else _block_rows(N, M * dtype.itemsize)
    S = np.empty((B, M), dtype=dtype)
    rows = np.empty(N)
    gq = np.empty_like(qs) if want_grad else None
    gk = (np.empty_like(kh) if full else np.zeros_like(kh)) if want_grad else None
    for r0 in range(0, N, B):
        r1 = min(N, r0 + B)
        Sb = S[:r1 - r0]
        np.matmul(qs[r0:r1], kh.T, out=Sb)
        if mask_self:
            i = np.arange(r1 - r0)
            Sb[i, i + r0] = -np.inf
        rows[r0:r1] = label_rows(Sb, labels_of(r0, r1), gscale=gs, grad=Sb if want_grad else None,
                                 n_threads=_config.threads_for(Sb.size))
        if want_grad:
            _logit_grad_back(Sb, qs, kh, r0, gq, gk, full)
    return rows, gq, gk


def _logit_grad_back(dS, qs, kh, r0, gq, gk, full):
    """The gradient dS of the logits rows r0.. of S = qs kh^T, back through the product:
    into gq's rows, and into gk (accumulated over row blocks unless S is whole)."""
    r1 = r0 + dS.shape[0]
    np.matmul(dS, kh, out=gq[r0:r1])
    if full:
        np.matmul(dS.T, qs, out=gk)
    else:
        gk += dS.T @ qs[r0:r1]


@grad_out_apart("query", "key")
def info_nce_loss(query, key, *, temperature=0.07, symmetric=False, normalize=True,
                  where=None, reduction="mean", return_grad=False, grad_out=None):
    r"""InfoNCE: softmax cross-entropy of ``q k^T / temperature`` with row i's positive at column i.

    Parameters
    ----------
    query, key : array_like, shape (N, D)
        N >= 2; pairs (query_i, key_i) are the positives.
    temperature : float > 0, default 0.07
        Finite.
    symmetric : bool, default False
        Average the row and column cross-entropies (the CLIP loss; "none" gives
        0.5 (row_i + col_i)).
    normalize : bool, default True
        L2-normalise both inputs first (x / max(||x||, 1e-12), as F.normalize); the gradient
        goes through the normalisation.
    reduction : {"mean", "sum", "none"}, default "mean"
        "none": shape (N,).
    return_grad : bool, default False
        Also return (grad_query, grad_key).
    grad_out : tuple of two ndarray, optional
        Buffers for them.

    Returns
    -------
    loss : scalar or ndarray
        Compute dtype.
    grads : tuple of two ndarray
        With ``return_grad=True``.

    Notes
    -----
    With :math:`S = \hat q \hat k^T / \tau` (normalised rows):

    .. math::

        l_i = \mathrm{lse}(S_{i\cdot}) - S_{ii}, \qquad
        \frac{\partial l_i}{\partial S_{ij}} = \mathrm{softmax}(S_{i\cdot})_j - [i = j]

    then :math:`\partial L / \partial \hat q = G \hat k / \tau`,
    :math:`\partial L / \partial \hat k = G^T \hat q / \tau` and back through the
    normalisation. The PyTorch idiom is ``F.cross_entropy(q @ k.T / t, arange(N))`` (and
    its transpose for CLIP).

    Examples
    --------
    >>> q, k = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.1], [0.2, 1.0]])
    >>> print(round(float(fastloss.info_nce_loss(q, k, temperature=0.5)), 4))
    0.1713
    >>> print(round(float(fastloss.info_nce_loss(q, k, temperature=0.5, symmetric=True)), 4))
    0.1715
    """
    q, k, t, reduction, grads = _views_setup(query, key, ("query", "key"), temperature, reduction,
                                             return_grad, grad_out, where)
    if where is not None:
        return compact(lambda q_, k_: info_nce_loss(
            q_, k_, temperature=t, symmetric=symmetric, normalize=normalize, reduction=reduction,
            return_grad=return_grad), where, q.shape[0], reduction, return_grad, grad_out, [q, k],
            ["query", "key"])
    N, dtype = q.shape[0], q.dtype
    ntv = _config.threads_for(q.size)
    nt = _config.threads_for(N * N)
    qs = _normalized(q, 1.0 / t, normalize, ntv)      # S = qs kh^T is already divided by t
    kh = _normalized(k, 1.0, normalize, ntv)
    gs = grad_scale(reduction, N)
    if symmetric:
        rows, gq, gk = _sym_ce(qs, kh, gs, return_grad, nt)
    else:
        rows, gq, gk = _row_ce(qs, kh, lambda r0, r1: np.arange(r0, r1, dtype=np.int64), gs,
                               return_grad)
    loss = reduce_rows(rows, (N,), N, reduction, dtype)
    if not return_grad:
        return loss
    _normalized_grad(q, gq, grads[0], 1.0 / t, normalize, ntv)
    _normalized_grad(k, gk, grads[1], 1.0, normalize, ntv)
    return loss, tuple(grads)


# --- NT-Xent (SimCLR) -------------------------------------------------------------------

@grad_out_apart("z1", "z2")
def nt_xent_loss(z1, z2, *, temperature=0.5, where=None, reduction="mean", return_grad=False,
                 grad_out=None):
    r"""SimCLR's NT-Xent loss over the 2N views ``z = [z1; z2]``.

    Parameters
    ----------
    z1, z2 : array_like, shape (N, D)
        The two views, N >= 2.
    temperature : float > 0, default 0.5
        Finite.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" averages the 2N views; "none" gives the 2N per-view losses, z1's rows first.
    return_grad : bool, default False
        Also return (grad_z1, grad_z2).
    grad_out : tuple of two ndarray, optional
        Buffers for them.

    Returns
    -------
    loss : scalar or ndarray
        Compute dtype; "none": shape (2N,).
    grads : tuple of two ndarray
        With ``return_grad=True``.

    Notes
    -----
    Cosine similarities / temperature, self-similarity excluded, the positive of view i is
    its pair (i + N mod 2N), softmax cross-entropy per view. Cosine similarity is that of
    x / max(||x||, 1e-12). With :math:`S_{ij} = \cos(z_i, z_j) / \tau` and
    :math:`S_{ii} = -\infty`:

    .. math::

        l_i = \mathrm{lse}(S_{i\cdot}) - S_{i, i+N \bmod 2N}, \qquad
        \frac{\partial l_i}{\partial S_{ij}} = \mathrm{softmax}(S_{i\cdot})_j
            - [j = i + N \bmod 2N]

    and back through the (symmetric) product and the normalisation. No PyTorch function;
    the usual code builds S and calls ``F.cross_entropy``.

    Examples
    --------
    >>> z1, z2 = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.1], [0.2, 1.0]])
    >>> print(round(float(fastloss.nt_xent_loss(z1, z2)), 4))
    0.322
    """
    a, b, t, reduction, grads = _views_setup(z1, z2, ("z1", "z2"), temperature, reduction,
                                             return_grad, grad_out, where)
    if where is not None:
        return compact(lambda a_, b_: nt_xent_loss(a_, b_, temperature=t, reduction=reduction,
                                                   return_grad=return_grad),
                       where, a.shape[0], reduction, return_grad, grad_out, [a, b], ["z1", "z2"],
                       none_repeat=2)
    (N, D), dtype = a.shape, a.dtype
    n2 = 2 * N
    ntv = _config.threads_for(a.size)
    nt = _config.threads_for(n2 * n2)
    scale = 1.0 / math.sqrt(t)                 # S = zs zs^T = cos / t
    zs = np.empty((n2, D), dtype=dtype)
    _k.normalize(a, zs[:N], scale, NORMALIZE_EPS, ntv)
    _k.normalize(b, zs[N:], scale, NORMALIZE_EPS, ntv)
    gs = grad_scale(reduction, n2)
    if not return_grad and n2 * n2 * dtype.itemsize <= _S_MAX_BYTES:
        rows = _nt_xent_rows(zs, N, nt, ntv)
    elif n2 * n2 * dtype.itemsize <= _S_MAX_BYTES:
        # S is symmetric: row statistics suffice, and the gradient of the logits,
        # symmetrised (dS + dS^T), goes back through one product. With SciPy and bounded
        # logits only S's lower triangle is formed (syrk: half the products), summed by
        # rows and columns at once, turned into dS's and read back by symm.
        S = np.empty((n2, n2), dtype=dtype)
        U = _logit_bound(zs, zs, ntv)
        blas = None if U is None else _blas.scipy_blas(dtype)
        if blas is not None:
            _blas.lower_gram(blas.syrk, zs, S)
            rsum, csum = np.empty(n2), np.empty((-(-n2 // _k.CE_GROUP), n2), dtype=dtype)
            _k.ce_tri_stats_bounded(S, rsum, csum, U, nt)
            rlse = U + np.log(rsum + np.sum(csum, axis=0, dtype=np.float64))
            posv = S[np.arange(N, n2), np.arange(N)].astype(np.float64)   # (N + k, k): lower
            rows = rlse - np.concatenate([posv, posv])
            _k.ce_grad_bounded(S, 0, rlse, gs, np.exp(U - rlse).astype(dtype), gs, U, N, n2,
                               2.0 * gs, nt, True)
            gz = np.empty_like(zs)
            _blas.lower_symm(blas.symm, S, zs, gz)
        else:
            np.matmul(zs, _operand_copy(zs).T, out=S)
            np.fill_diagonal(S, -np.inf)
            i = np.arange(n2)
            posv = S[i, (i + N) % n2].astype(np.float64)
            rlse = np.empty(n2)
            _k.ce_stats(S, 0, rlse, None, None, nt)
            rows = rlse - posv
            if U is None:
                _k.ce_grad(S, 0, rlse, gs, rlse.astype(dtype), gs, N, n2, 2.0 * gs, nt)
            else:
                _k.ce_grad_bounded(S, 0, rlse, gs, np.exp(U - rlse).astype(dtype), gs, U, N, n2,
                                   2.0 * gs, nt)
            gz = S @ zs
    else:
        rows, gz, gz2 = _row_ce(zs, zs, lambda r0, r1: (np.arange(r0, r1, dtype=np.int64) + N) % n2,
                                gs, return_grad, mask_self=True)
        if return_grad:
            gz += gz2
    loss = reduce_rows(rows, (n2,), n2, reduction, dtype)
    if not return_grad:
        return loss
    _k.normalize_grad(a, np.ascontiguousarray(gz[:N]), grads[0], NORMALIZE_EPS, scale, ntv)
    _k.normalize_grad(b, np.ascontiguousarray(gz[N:]), grads[1], NORMALIZE_EPS, scale, ntv)
    return loss, tuple(grads)


def _nt_xent_rows(zs, N, nt, ntv):
    """NT-Xent per-view losses without gradient, from three of the four N x N blocks of
    the symmetric S = zs zs^T (A = z1's rows, B = z2's): S_AA, S_AB, S_BB, S_BA being
    S_AB^T. Three products instead of one of four times their work (the product is
    most of the call): a row of A takes the log-sum-exp of its rows in S_AA and S_AB,
    a row of B of its column in S_AB and its row in S_BB; the positives are S_AB's
    diagonal. With SciPy and bounded logits (_logit_bound), S_AA and S_BB are lower
    triangles from syrk (half a gemm's products each), summed over rows and columns at
    once by ce_tri_stats_bounded."""
    dtype, G = zs.dtype, _k.CE_GROUP
    a, b = zs[:N], zs[N:]
    ng = -(-N // G)
    M = np.empty((N, N), dtype=dtype)
    csum = np.empty((ng, N), dtype=dtype)
    blas = _blas.scipy_blas(dtype)
    U = None if blas is None else _logit_bound(zs, zs, ntv)     # only the syrk path uses it
    if U is not None:
        lse = []                                # log-sum-exp of S_AA's, S_BB's rows
        for p in (a, b):
            _blas.lower_gram(blas.syrk, p, M)
            rsum = np.empty(N)
            _k.ce_tri_stats_bounded(M, rsum, csum, U, nt)
            with np.errstate(divide="ignore"):
                lse.append(U + np.log(rsum + np.sum(csum, axis=0, dtype=np.float64)))
        # S_AB by the same BLAS as the triangles (a second library's threads would still be
        # spinning)
        _blas.product(M, a, b.T)
        pos = np.diagonal(M).astype(np.float64)
        rab = np.empty(N)
        _k.ce_stats_bounded(M, 0, rab, csum, U, nt)
        clse = U + np.log(np.sum(csum, axis=0, dtype=np.float64))
        with np.errstate(invalid="ignore"):
            return np.concatenate([np.logaddexp(lse[0], rab) - pos, np.logaddexp(clse, lse[1]) - pos])
    bc = _operand_copy(b)
    r = np.empty((3, N))                       # row log-sum-exp of S_AA, S_AB, S_BB
    for k, (p, q) in enumerate(((a, _operand_copy(a)), (a, bc), (b, bc))):
        np.matmul(p, q.T, out=M)
        if k == 1:
            pos = np.diagonal(M).astype(np.float64)
            cmax = np.empty((ng, N), dtype=dtype)
            clse = np.empty(N, dtype=dtype)
            _k.ce_stats(M, 0, r[k], cmax, csum, nt)
            _k.ce_col_lse(cmax, csum, clse, _config.threads_for(N))
        else:
            np.fill_diagonal(M, -np.inf)
            _k.ce_stats(M, 0, r[k], None, None, nt)
    with np.errstate(invalid="ignore"):
        return np.concatenate([np.logaddexp(r[0], r[1]) - pos,
                               np.logaddexp(clse.astype(np.float64), r[2]) - pos])


document(triplet_margin_loss, "triplet")
_COMPACT_NOTE = ("        A masked sample leaves the batch: it is neither an anchor nor a negative (nor,\n"
                 "        for labels, a positive).\n")
for _fn in (batch_hard_triplet_loss, info_nce_loss):
    document(_fn, "sample", _COMPACT_NOTE)
document(nt_xent_loss, "pair", "        Shape (N,): a masked pair's two views leave the batch (neither anchors nor\n"
                               "        negatives); ``\"none\"`` holds 0 at both.\n")
