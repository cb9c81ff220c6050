"""NumPy float64 oracles for the metric-learning and contrastive losses: plain formulas
(direct differences, explicit masks and triplet tensors, log-softmax), same signatures
as the fast functions, used by the tests and the benchmark."""
import numpy as np

from .common import finish, reduce

__all__ = ["pairwise_distances", "triplet_margin_loss", "batch_hard_triplet_loss", "info_nce_loss",
           "nt_xent_loss"]

_EPS = 1e-12


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def pairwise_distances(x, y=None, *, metric="sqeuclidean"):
    x = _f64(x)
    yy = x if y is None else _f64(y)
    if metric == "cosine":
        nx = np.linalg.norm(x, axis=1)
        ny = np.linalg.norm(yy, axis=1)
        xh = x / np.where(nx > 0, nx, 1.0)[:, None]
        yh = yy / np.where(ny > 0, ny, 1.0)[:, None]
        d = np.clip(1.0 - xh @ yh.T, 0.0, 2.0)
    else:
        diff = x[:, None, :] - yy[None, :, :]
        d = np.sum(diff * diff, axis=-1)
        if metric == "euclidean":
            d = np.sqrt(d)
    if y is None:
        i = np.arange(x.shape[0])
        d[i, i] = np.where(np.isnan(d[i, i]), np.nan, 0.0)
    return d


def _pdist(u, p, squared):
    """||u||_p per row and d||u||_p / du (zero at 0); squared: ||u||^2 and 2u."""
    if squared:
        return np.sum(u * u, axis=-1), 2 * u
    au = np.abs(u)
    if p == np.inf:
        d = np.max(au, axis=-1)
        hit = au == d[:, None]
        g = np.sign(u) * hit / np.maximum(hit.sum(-1), 1)[:, None]
        return d, g
    if p == 1:
        return np.sum(au, axis=-1), np.sign(u)
    d = np.sum(au ** p, axis=-1) ** (1.0 / p)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.sign(u) * au ** (p - 1) / d[:, None] ** (p - 1)
    g = np.where((d[:, None] > 0) & (u != 0), g, 0.0)
    return d, g


def triplet_margin_loss(anchor, positive, negative, *, margin=1.0, p=2.0, eps=1e-6, swap=False,
                        squared=False, reduction="mean", return_grad=False):
    a, pp, n = (_f64(t) for t in (anchor, positive, negative))
    shape = a.shape
    a, pp, n = (t.reshape(-1, shape[-1]) for t in (a, pp, n))
    d1, u1 = _pdist(a - pp + eps, p, squared)
    d2, u2 = _pdist(a - n + eps, p, squared)
    wa, wp = np.ones_like(d1), np.zeros_like(d1)
    dneg = d2
    u3 = np.zeros_like(u2)
    if swap:
        d3, u3 = _pdist(pp - n + eps, p, squared)
        dneg = np.minimum(d2, d3)
        wa = np.where(d2 < d3, 1.0, np.where(d2 > d3, 0.0, 0.5))
        wp = 1.0 - wa
    x = d1 - dneg + margin
    per = np.maximum(x, 0.0)
    # a distance with weight 0 does not enter (its derivative, possibly NaN, is not used)
    u2 = np.where(wa[:, None] != 0, wa[:, None] * u2, 0.0)
    u3 = np.where(wp[:, None] != 0, wp[:, None] * u3, 0.0)

    def hinge(g):   # clamp_min's subgradient (active at x >= 0); NaN where the loss is NaN
        return np.where(np.isnan(x)[:, None], np.nan, np.where((x >= 0)[:, None], g, 0.0))
    ga, gp, gn = hinge(u1 - u2), hinge(-u1 - u3), hinge(u2 + u3)
    loss, scale = reduce(per.reshape(shape[:-1]), reduction, per.size)
    grads = tuple((g * scale).reshape(shape) for g in (ga, gp, gn))
    return finish(loss, grads, return_grad)


def batch_hard_triplet_loss(embeddings, labels, *, margin=1.0, squared=False, mining="hard",
                            reduction="mean", return_grad=False):
    E = _f64(embeddings)
    lab = np.asarray(labels).reshape(-1)
    N = E.shape[0]
    diff = E[:, None, :] - E[None, :, :]                   # (N, N, D): e_i - e_j
    sq = np.sum(diff * diff, axis=-1)
    d = sq if squared else np.sqrt(sq)
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = 2 * diff if squared else np.where((d > 0)[..., None], diff / d[..., None], 0.0)
    same = lab[:, None] == lab[None, :]
    eye = np.eye(N, dtype=bool)
    posm, negm = same & ~eye, ~same
    Wt = np.zeros((N, N))                                  # dL/dd_ij
    if mining == "hard":
        per = np.zeros(N)
        valid = posm.any(1) & negm.any(1)
        for i in np.flatnonzero(valid):
            p = np.flatnonzero(posm[i])[np.argmax(d[i, posm[i]])]
            n = np.flatnonzero(negm[i])[np.argmin(d[i, negm[i]])]
            x = d[i, p] - d[i, n] + margin
            per[i] = max(x, 0.0)
            if x > 0:
                Wt[i, p] += 1
                Wt[i, n] -= 1
        denom = valid.sum()
    else:
        t = d[:, :, None] - d[:, None, :] + margin           # (a, p, n)
        ok = posm[:, :, None] & negm[:, None, :]
        lt = np.where(ok, np.maximum(t, 0.0), 0.0)
        act = ok & (t > 0)
        per = lt.sum(axis=(1, 2))
        Wt += act.sum(axis=2) - act.sum(axis=1)
        denom = act.sum()
    # an anchor that meets a NaN distance has loss NaN, with or without a pair
    per[np.isnan(np.where(eye, 0.0, d)).any(axis=1)] = np.nan
    if reduction == "mean" and denom == 0:
        loss, scale = np.float64(np.sum(per)), 0.0
    else:
        loss, scale = reduce(per, reduction, denom)
    # d_ij depends on e_i through dd[i, j] and on e_j through -dd[i, j]
    g = np.einsum("ij,ijk->ik", Wt, dd) - np.einsum("ij,ijk->jk", Wt, dd)
    if np.isnan(per).any():
        g[...] = np.nan      # the documented rule: a NaN anchor makes the gradient NaN
    return finish(loss, g * scale, return_grad)


def _normalize(x):
    nrm = np.linalg.norm(x, axis=1, keepdims=True)
    den = np.maximum(nrm, _EPS)
    return x / den, den, nrm


def _normalize_backward(x, den, nrm, gh):
    y = x / den
    proj = np.where(nrm > _EPS, y * np.sum(y * gh, axis=1, keepdims=True), 0.0)
    return (gh - proj) / den


def _log_softmax(S):
    m = np.max(S, axis=1, keepdims=True)
    lse = m + np.log(np.sum(np.exp(S - m), axis=1, keepdims=True))
    return S - lse


def info_nce_loss(query, key, *, temperature=0.07, symmetric=False, normalize=True,
                  reduction="mean", return_grad=False):
    q, k = _f64(query), _f64(key)
    if normalize:
        qh, qd, qn = _normalize(q)
        kh, kd, kn = _normalize(k)
    else:
        qh, kh = q, k
    S = qh @ kh.T / temperature
    N = S.shape[0]
    eye = np.eye(N)
    lr = _log_softmax(S)
    per = -np.diag(lr)
    dS = np.exp(lr) - eye
    if symmetric:
        lc = _log_softmax(S.T)
        per = 0.5 * per - 0.5 * np.diag(lc)
        dS = 0.5 * dS + 0.5 * (np.exp(lc) - eye).T
    loss, scale = reduce(per, reduction, N)
    dS = dS * scale / temperature
    gq, gk = dS @ kh, dS.T @ qh
    if normalize:
        gq = _normalize_backward(q, qd, qn, gq)
        gk = _normalize_backward(k, kd, kn, gk)
    return finish(loss, (gq, gk), return_grad)


def nt_xent_loss(z1, z2, *, temperature=0.5, reduction="mean", return_grad=False):
    z = np.concatenate([_f64(z1), _f64(z2)])
    N = z.shape[0] // 2
    zh, zd, zn = _normalize(z)
    S = zh @ zh.T / temperature
    S[np.diag_indices(2 * N)] = -np.inf
    lr = _log_softmax(S)
    tgt = (np.arange(2 * N) + N) % (2 * N)
    per = -lr[np.arange(2 * N), tgt]
    Y = np.zeros_like(S)
    Y[np.arange(2 * N), tgt] = 1.0
    dS = np.exp(lr) - Y
    loss, scale = reduce(per, reduction, 2 * N)
    dS = dS * scale / temperature
    gz = _normalize_backward(z, zd, zn, (dS + dS.T) @ zh)
    return finish(loss, (gz[:N], gz[N:]), return_grad)
