"""Benchmark cases for fastloss.metric: pairwise_distances, triplet_margin_loss,
batch_hard_triplet_loss, info_nce_loss, nt_xent_loss.

Peers: NumPy in the input dtype (GEMM identity for distances, hard mining with
argmax/argmin), or the float64 oracle from fastloss.reference (InfoNCE, NT-Xent);
SciPy's cdist for the distances; PyTorch's triplet_margin_loss, or the formula in
torch ops; JAX jit(value_and_grad) of the same formula. Mining peers choose the pairs
without gradient and recompute the chosen distances exactly (as fastloss does).
"""
import importlib

import numpy as np

from .. import metric as fl
from ..reference import metric as ref
from .builders import jax_impl, loss_cases, numpy_impl, size
from .core import Case, peer

FAMILY = "metric"
N_CLASSES = 32


# --- inputs -------------------------------------------------------------------------

def make_xy(shape, dtype, rng):
    dt = np.dtype(dtype)
    return {"x": rng.standard_normal(shape, dtype=dt), "y": rng.standard_normal(shape, dtype=dt)}


def make_triplets(shape, dtype, rng):
    """Anchors ~ N(0, 1); positives and negatives at about the same distance (the hinge is
    active for about half of the triplets)."""
    dt = np.dtype(dtype)
    a = rng.standard_normal(shape, dtype=dt)
    p = a + rng.standard_normal(shape, dtype=dt) * np.asarray(0.7, dt)
    n = a + rng.standard_normal(shape, dtype=dt) * np.asarray(0.75, dt)
    return {"a": a, "p": p, "n": n}


def make_embeddings(shape, dtype, rng):
    """Embeddings around N_CLASSES class centres, int64 labels."""
    n, d = shape
    lab = rng.permutation(np.arange(n) % N_CLASSES)
    centres = rng.standard_normal((N_CLASSES, d))
    e = centres[lab] + rng.standard_normal((n, d))
    return {"e": e.astype(dtype), "lab": lab.astype(np.int64)}


def make_views(shape, dtype, rng):
    """Two views of a batch: z2 = z1 + noise."""
    dt = np.dtype(dtype)
    z1 = rng.standard_normal(shape, dtype=dt)
    return {"z1": z1, "z2": z1 + rng.standard_normal(shape, dtype=dt) * np.asarray(0.5, dt)}


# --- NumPy peers (input dtype) ----------------------------------------------------------

def np_sqeuclidean(x, y):
    d = x @ y.T
    d *= -2
    d += np.einsum("ij,ij->i", x, x)[:, None]
    d += np.einsum("ij,ij->i", y, y)[None, :]
    np.maximum(d, 0, out=d)
    return d


def np_triplet(a, p, n, grad, margin=1.0, eps=1e-6):
    up = a - p + a.dtype.type(eps)
    un = a - n + a.dtype.type(eps)
    out = _np_hinge(up, un, margin, grad, np.greater_equal)
    if not grad:
        return out
    loss, up, un = out
    return loss, up - un, -up, un


def _np_hinge(up, un, margin, grad, active):
    """Mean of max(|up| - |un| + margin, 0) over rows; with grad also up and un scaled in
    place by the hinge's (active(x, 0)) weight over their norms."""
    dp = np.sqrt(np.einsum("ij,ij->i", up, up))
    dn = np.sqrt(np.einsum("ij,ij->i", un, un))
    x = dp - dn + margin
    loss = np.mean(np.maximum(x, 0))
    if not grad:
        return loss
    w = (active(x, 0) / up.shape[0]).astype(up.dtype)
    up *= (w / np.where(dp > 0, dp, 1))[:, None]
    un *= (w / np.where(dn > 0, dn, 1))[:, None]
    return loss, up, un


def np_batch_hard(e, lab, grad, margin=1.0):
    sq = np.einsum("ij,ij->i", e, e)
    d2 = sq[:, None] + sq[None, :] - 2 * (e @ e.T)
    same = lab[:, None] == lab[None, :]
    pos = same.copy()
    np.fill_diagonal(pos, False)
    p_idx = np.argmax(np.where(pos, d2, -np.inf), axis=1)
    n_idx = np.argmin(np.where(same, np.inf, d2), axis=1)
    out = _np_hinge(e - e[p_idx], e - e[n_idx], margin, grad, np.greater)
    if not grad:
        return out
    loss, up, un = out
    g = up - un
    np.add.at(g, p_idx, -up)
    np.add.at(g, n_idx, un)
    return loss, g


# --- PyTorch and JAX peers --------------------------------------------------------------

def xp_sqeuclidean(xp, x, y):
    d = xp.sum(x * x, -1)[:, None] + xp.sum(y * y, -1)[None, :] - 2 * xp.matmul(x, y.T)
    return xp.clip_min(d, 0.0)


def torch_sqeuclidean(x, y):
    return peer("torch").cdist(x, y) ** 2


def xp_triplet(xp, a, p, n, margin=1.0, eps=1e-6):
    dp = xp.sqrt(xp.sum((a - p + eps) ** 2, -1))
    dn = xp.sqrt(xp.sum((a - n + eps) ** 2, -1))
    return xp.mean(xp.clip_min(dp - dn + margin, 0.0))


def torch_triplet(a, p, n):
    return peer("torch").nn.functional.triplet_margin_loss(a, p, n, margin=1.0, p=2, eps=1e-6)


def xp_batch_hard(xp, e, lab, margin=1.0):
    sq = xp.sum(e * e, -1)
    d2 = xp.stop(sq[:, None] + sq[None, :] - 2 * xp.matmul(e, e.T))
    same = lab[:, None] == lab[None, :]
    idx = xp.arange(e.shape[0])
    pos = same & (idx[:, None] != idx[None, :])
    p_idx = xp.argmax(xp.where(pos, d2, -np.inf), 1)
    n_idx = xp.argmin(xp.where(same, np.inf, d2), 1)
    dp = xp.sqrt(xp.sum((e - e[p_idx]) ** 2, -1))
    dn = xp.sqrt(xp.sum((e - e[n_idx]) ** 2, -1))
    return xp.mean(xp.clip_min(dp - dn + margin, 0.0))


def _normalize(xp, x):
    return x / xp.clip_min(xp.sqrt(xp.sum(x * x, -1)), 1e-12)[:, None]


def xp_info_nce(xp, q, k, temperature=0.07):
    s = xp.matmul(_normalize(xp, q), _normalize(xp, k).T) / temperature
    return xp.mean(xp.logsumexp(s, -1) - xp.pick(s, xp.arange(q.shape[0])))


def xp_nt_xent(xp, z1, z2, temperature=0.5):
    z = _normalize(xp, xp.concat([z1, z2]))
    s = xp.matmul(z, z.T) / temperature
    m = z.shape[0]
    idx = xp.arange(m)
    s = xp.where(idx[:, None] == idx[None, :], -np.inf, s)
    return xp.mean(xp.logsumexp(s, -1) - xp.pick(s, (idx + m // 2) % m))


# --- the cases ------------------------------------------------------------------------

def _gram_products(shape, grad):
    """One N x N product of N x D rows (distances, mining: their gradients are gathers)."""
    n, d = shape
    return [(n, d, n)], "x @ y.T or e @ e.T (N D N)"


def _info_nce_products(shape, grad):
    n, d = shape
    if not grad:
        return [(n, d, n)], "S = q @ k.T (N D N)"
    return [(n, d, n), (n, n, d), (n, n, d)], "S = q @ k.T, dS @ k, dS.T @ q (3 N D N)"


def _nt_xent_products(shape, grad):
    m, d = 2 * shape[0], shape[1]
    if not grad:
        return [(m, d, m)], "S = z @ z.T of the 2N views (4 N D N)"
    return [(m, d, m), (m, m, d)], "S = z @ z.T of the 2N views, dS @ z (8 N D N)"


def _pairwise_case(shape, quick):
    from .builders import xp
    impls = {
        "fastloss": lambda d: (lambda: fl.pairwise_distances(d["x"], d["y"])),
        "numpy": numpy_impl(np_sqeuclidean, ("x", "y")),
        "scipy": lambda d: (lambda: importlib.import_module("scipy.spatial.distance").cdist(
            d["x"], d["y"], "sqeuclidean")),
        "torch": lambda d: (lambda: torch_sqeuclidean(d.torch("x"), d.torch("y"))),
        "jax": jax_impl(lambda x, y: xp_sqeuclidean(xp("jax"), x, y), "fwd", ("x", "y")),
    }
    return [Case(func="pairwise_distances", family=FAMILY, variant="fwd", shape=shape,
                 quick_shape=quick, make=make_xy, impls=impls,
                 products=lambda shp: _gram_products(shp, False)[0],
                 products_formula=_gram_products(shape, False)[1],
                 peer_notes={"scipy": "scipy.spatial.distance.cdist (direct differences, "
                                      "float64)", "torch": "torch.cdist(x, y) ** 2"})]


CASES = (
    _pairwise_case((2048, 128), (128, 32))
    + loss_cases("triplet_margin_loss", FAMILY, fl.triplet_margin_loss, ("a", "p", "n"),
                 make_triplets, [size((65536, 128), (2048, 128))], wrt=(0, 1, 2),
                 numpy=np_triplet, xp_fn=xp_triplet, torch=torch_triplet,
                 nbytes=lambda shp, s, g: 3 * shp[0] * shp[1] * s * (2 if g else 1),
                 formula=lambda g: "read anchor, positive, negative 3 N D s"
                                   + (" + write 3 grads 3 N D s" if g else ""))
    + loss_cases("batch_hard_triplet_loss", FAMILY, fl.batch_hard_triplet_loss, ("e", "lab"),
                 make_embeddings, [size((1024, 128), (128, 32))], numpy=np_batch_hard,
                 xp_fn=xp_batch_hard, products=_gram_products)
    + loss_cases("info_nce_loss", FAMILY, fl.info_nce_loss, ("z1", "z2"), make_views,
                 [size((2048, 256), (128, 32))], wrt=(0, 1), oracle=ref.info_nce_loss,
                 xp_fn=xp_info_nce, products=_info_nce_products)
    + loss_cases("nt_xent_loss", FAMILY, fl.nt_xent_loss, ("z1", "z2"), make_views,
                 [size((1024, 256), (64, 32))], wrt=(0, 1), oracle=ref.nt_xent_loss,
                 xp_fn=xp_nt_xent, products=_nt_xent_products)
)
