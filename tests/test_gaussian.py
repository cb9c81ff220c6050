"""The Gaussian family (gaussian_kl, mvn_kl, vae_loss, gaussian_nll_loss) against the
float64 oracles, finite differences and PyTorch; edge cases and bad input."""

import fastloss
import numpy as np
import pytest

from fastloss.gaussian import gaussian_kl, gaussian_nll_loss, mvn_kl, vae_loss
from fastloss.reference import gaussian as ref
from helpers import assert_close, check_loss_and_grads, fd_grad, torch_leaf

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


# --- Gaussian KL -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("which", ["std", "mu_q", "both", "logvar_q", "broadcast"])
@pytest.mark.parametrize("D", [1, 5, 70])
def test_gaussian_kl_matrix(simd, rng, dtype, reduction, which, D):
    mp = rng.standard_normal((6, 3, D)).astype(dtype)
    lvp = rng.standard_normal((6, 3, D)).astype(dtype)
    mq = rng.standard_normal((6, 3, D)).astype(dtype)
    lvq = rng.standard_normal((6, 3, D)).astype(dtype)
    args = {"std": (mp, lvp), "mu_q": (mp, lvp, mq), "both": (mp, lvp, mq, lvq),
            "logvar_q": (mp, lvp, None, lvq),
            "broadcast": (mp, lvp[:1], mq[0, 0], lvq[:, :, :1])}[which]
    kw = dict(reduction=reduction, return_grad=True)
    fast, oracle = gaussian_kl(*args, **kw), ref.gaussian_kl(*args, **kw)
    check_loss_and_grads(fast, oracle, dtype)
    for g, a in zip(fast[1], [a for a in args if a is not None]):
        assert g.shape == a.shape


def test_gaussian_kl_vae_term_and_finite_differences(rng):
    mu, lv = rng.standard_normal((4, 6)), rng.standard_normal((4, 6))
    vae_term = np.mean(-0.5 * np.sum(1 + lv - mu ** 2 - np.exp(lv), axis=-1))
    assert gaussian_kl(mu, lv) == pytest.approx(vae_term, rel=1e-13)
    mq, lvq = rng.standard_normal((4, 6)), rng.standard_normal((1, 6))
    _, g = gaussian_kl(mu, lv, mq, lvq, return_grad=True)
    args = [mu, lv, mq, lvq]
    for i in range(4):
        def f(a, i=i):
            aa = list(args)
            aa[i] = a
            return gaussian_kl(*aa)
        np.testing.assert_allclose(g[i], fd_grad(f, args[i]), atol=1e-8)


def test_gaussian_kl_edge_cases():
    assert gaussian_kl(np.zeros((3, 4)), np.zeros((3, 4))) == 0.0
    loss, (g1, g2) = gaussian_kl(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32),
                                 reduction="none", return_grad=True)
    assert loss.shape == (0,) and g1.shape == (0, 4)
    assert np.isnan(gaussian_kl(np.zeros((0, 4)), np.zeros((0, 4))))
    l0 = gaussian_kl(np.zeros((2, 0)), np.zeros((2, 0)), reduction="none")
    np.testing.assert_array_equal(l0, [0.0, 0.0])
    mu = np.zeros((2, 3))
    mu[1, 1] = np.nan
    out = gaussian_kl(mu, np.zeros((2, 3)), reduction="none")
    assert out[0] == 0.0 and np.isnan(out[1])
    # univariate: last axis of 1
    u = gaussian_kl(np.array([[1.0]]), np.array([[0.0]]), np.array([[0.0]]), np.array([[np.log(4.0)]]))
    assert u == pytest.approx(0.5 * (np.log(4) + (1 + 1) / 4 - 1), rel=1e-14)


# --- full-covariance KL ------------------------------------------------------------------------

def _spd(rng, batch, d):
    a = rng.standard_normal(batch + (d, d))
    return a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batch_p,batch_q", [((), ()), ((5,), (5,)), ((2, 3), ()), ((4,), (1,))])
def test_mvn_kl_matrix(rng, dtype, reduction, batch_p, batch_q):
    _check_mvn_dims(rng, dtype, reduction, batch_p, batch_q, 4, spd=_spd)


def test_mvn_kl_finite_differences_and_diagonal(rng):
    d = 3
    mp, Sp, mq, Sq = rng.standard_normal(d), _spd(rng, (), d), rng.standard_normal(d), _spd(rng, (), d)
    _, g = mvn_kl(mp, Sp, mq, Sq, return_grad=True)
    sym = lambda S: 0.5 * (S + S.T)
    fs = [lambda a: mvn_kl(a, Sp, mq, Sq), lambda a: mvn_kl(mp, sym(a), mq, Sq),
          lambda a: mvn_kl(mp, Sp, a, Sq), lambda a: mvn_kl(mp, Sp, mq, sym(a))]
    for gi, f, a in zip(g, fs, (mp, Sp, mq, Sq)):
        np.testing.assert_allclose(gi, fd_grad(f, a, h=1e-4), atol=1e-7)
    # diagonal covariances agree with gaussian_kl
    vp, vq = rng.uniform(0.5, 2, (2, d)), rng.uniform(0.5, 2, (2, d))
    mu = rng.standard_normal((2, d))
    full = mvn_kl(mu, vp[..., None] * np.eye(d), 0 * mu, vq[..., None] * np.eye(d), reduction="none")
    np.testing.assert_allclose(full, gaussian_kl(mu, np.log(vp), 0 * mu, np.log(vq), reduction="none"),
                               rtol=1e-12)


def test_mvn_kl_errors(rng):
    d = 3
    mp, Sp, mq, Sq = rng.standard_normal((2, d)), _spd(rng, (2,), d), rng.standard_normal(d), _spd(rng, (), d)
    bad = Sq.copy()
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match="cov_q is not symmetric positive definite"):
        mvn_kl(mp, Sp, mq, bad)
    badp = Sp.copy()
    badp[1] = -np.eye(d)
    with pytest.raises(ValueError, match=r"cov_p is not symmetric positive definite \(batch index \(1,\)\)"):
        mvn_kl(mp, badp, mq, Sq)
    nanq = Sq.copy()
    nanq[1, 1] = np.nan
    with pytest.raises(ValueError, match="cov_q contains NaN"):
        mvn_kl(mp, Sp, mq, nanq)
    asym = Sq.copy()
    asym[0, 1] += 0.5
    with pytest.raises(ValueError, match="cov_q is not symmetric"):
        mvn_kl(mp, Sp, mq, asym)
    with pytest.raises(ValueError, match="cov_p has shape"):
        mvn_kl(mp, Sp[..., :2], mq, Sq)
    with pytest.raises(ValueError, match="mu_q has shape"):
        mvn_kl(mp, Sp, mq[:2], Sq)
    with pytest.raises(ValueError, match="batch shapes"):
        mvn_kl(mp, _spd(rng, (3,), d), mq, Sq)
    with pytest.raises(ValueError, match="cov_p must have at least 2"):
        mvn_kl(mp, np.ones(3), mq, Sq)
    nan_mu = mp.copy()
    nan_mu[0, 0] = np.nan
    assert np.isnan(mvn_kl(nan_mu, Sp, mq, Sq, reduction="none")[0])



# The kernel path (d <= 64, one C kernel per pair of matrices) and the LAPACK path (d > 64).

def _spd_scaled(rng, batch, d):
    """Well conditioned at any d (eigenvalues in about [0.5, 4.5])."""
    a = rng.standard_normal(batch + (d, d))
    return a @ np.swapaxes(a, -1, -2) / d + 0.5 * np.eye(d)


MVN_BATCHES = [((3,), (3,)), ((2, 3), ()), ((2, 1), (3,)), ((), ())]


def _check_mvn_dims(rng, dtype, reduction, batch_p, batch_q, d, spd=None):
    """Loss and the four gradients (broadcast ones summed) against the oracle; covariances
    from spd (default _spd_scaled)."""
    spd = spd or _spd_scaled
    args = (rng.standard_normal(batch_p + (d,)).astype(dtype), spd(rng, batch_p, d).astype(dtype),
            rng.standard_normal(batch_q + (d,)).astype(dtype), spd(rng, batch_q, d).astype(dtype))
    kw = dict(reduction=reduction, return_grad=True)
    fast, oracle = mvn_kl(*args, **kw), ref.mvn_kl(*args, **kw)
    check_loss_and_grads(fast, oracle, dtype)
    for g, a in zip(fast[1], args):
        assert g.shape == a.shape
    assert_close(mvn_kl(*args, reduction=reduction), oracle[0], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batch_p,batch_q", MVN_BATCHES)
@pytest.mark.parametrize("d", [1, 2, 8, 64])
def test_mvn_kl_kernel_dims(simd, rng, dtype, reduction, batch_p, batch_q, d):
    _check_mvn_dims(rng, dtype, reduction, batch_p, batch_q, d)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("batch_p,batch_q", MVN_BATCHES)
def test_mvn_kl_lapack_dim(rng, dtype, reduction, batch_p, batch_q):
    _check_mvn_dims(rng, dtype, reduction, batch_p, batch_q, 65)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 3, 8])
def test_mvn_kl_kernel_matches_lapack_path(monkeypatch, rng, dtype, d):
    """The kernel gives the LAPACK path's results to float64 rounding (float32: the same
    float64 values rounded once), broadcast gradients included."""
    import fastloss.gaussian as fg
    args = (rng.standard_normal((4, d)).astype(dtype), _spd_scaled(rng, (4,), d).astype(dtype),
            rng.standard_normal((d,)).astype(dtype), _spd_scaled(rng, (1,), d).astype(dtype))
    fast = mvn_kl(*args, reduction="none", return_grad=True)
    monkeypatch.setattr(fg, "_MVN_KERNEL_D", -1)
    lapack = mvn_kl(*args, reduction="none", return_grad=True)
    rtol = 1e-12 if dtype == np.float64 else 2 ** -23
    for a, b in zip((fast[0],) + fast[1], (lapack[0],) + lapack[1]):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.max(np.abs(b)))


def test_mvn_kl_batch_finite_differences(rng):
    """d = 3, a batch against a shared cov_q and mu_q, reduction "mean"."""
    d = 3
    mp, Sp = rng.standard_normal((2, d)), _spd_scaled(rng, (2,), d)
    mq, Sq = rng.standard_normal(d), _spd_scaled(rng, (), d)
    _, g = mvn_kl(mp, Sp, mq, Sq, return_grad=True)
    sym = lambda S: 0.5 * (S + np.swapaxes(S, -1, -2))
    fs = [lambda a: mvn_kl(a, Sp, mq, Sq), lambda a: mvn_kl(mp, sym(a), mq, Sq),
          lambda a: mvn_kl(mp, Sp, a, Sq), lambda a: mvn_kl(mp, Sp, mq, sym(a))]
    for gi, f, a in zip(g, fs, (mp, Sp, mq, Sq)):
        np.testing.assert_allclose(gi, fd_grad(f, a, h=1e-4), atol=1e-8)


def test_mvn_kl_threads_bit_identical(rng):
    import fastloss
    d = 8
    args = (rng.standard_normal((300, d)), _spd_scaled(rng, (300,), d), rng.standard_normal(d),
            _spd_scaled(rng, (), d))
    with fastloss.threads(1):
        one = mvn_kl(*args, return_grad=True)
    with fastloss.threads(2):
        two = mvn_kl(*args, return_grad=True)
    assert one[0] == two[0]
    for a, b in zip(one[1], two[1]):
        np.testing.assert_array_equal(a, b)


def test_mvn_kl_grad_out_broadcast(rng):
    """grad_out for full and broadcast inputs: the fresh call's values, in the buffers."""
    d = 4
    args = (rng.standard_normal((5, d)).astype(np.float32), _spd_scaled(rng, (5,), d).astype(np.float32),
            rng.standard_normal((1, d)).astype(np.float32), _spd_scaled(rng, (), d).astype(np.float32))
    loss, want = mvn_kl(*args, return_grad=True)
    outs = tuple(np.full(a.shape, np.nan, np.float32) for a in args)
    loss2, got = mvn_kl(*args, return_grad=True, grad_out=outs)
    assert loss2 == loss
    for g, w, o in zip(got, want, outs):
        assert g is o
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("d", [3, 65])
def test_mvn_kl_not_spd_index(rng, d):
    """The first matrix that is not positive definite, in the covariance's own batch
    shape, from the kernel (d = 3) as from LAPACK (d = 65); cov_p before cov_q; NaN and
    asymmetry before positive definiteness."""
    mp, mq = rng.standard_normal((2, 3, d)), rng.standard_normal(d)
    Sp, Sq = _spd_scaled(rng, (2, 3), d), _spd_scaled(rng, (3,), d)
    badp, badq = Sp.copy(), Sq.copy()
    badp[1, 0] = -np.eye(d)
    badp[1, 2, 0, 0] = -1.0
    badq[2] = np.diag(np.r_[1.0, -np.ones(d - 1)])
    with pytest.raises(ValueError, match=r"cov_p is not symmetric positive definite \(batch index \(1, 0\)\)"):
        mvn_kl(mp, badp, mq, badq)
    with pytest.raises(ValueError, match=r"cov_q is not symmetric positive definite \(batch index \(2,\)\)"):
        mvn_kl(mp, Sp, mq, badq)
    with pytest.raises(ValueError, match=r"cov_q is not symmetric positive definite$"):
        mvn_kl(mp, Sp, mq, badq[2])
    nanq = Sq.copy()
    nanq[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="cov_q contains NaN"):
        mvn_kl(mp, badp, mq, nanq)
    asym = Sp.copy()
    asym[0, 0, 0, 1] += 0.5
    with pytest.raises(ValueError, match="cov_p is not symmetric"):
        mvn_kl(mp, asym, mq, badq)
    infp = Sp.copy()
    infp[1, 1, 0, 0] = np.inf
    with pytest.raises(ValueError, match="cov_p contains infinite"):
        mvn_kl(mp, infp, mq, Sq)
    with pytest.raises(ValueError, match="cov_p is not symmetric positive definite"):
        mvn_kl(mp, badp, mq, Sq, return_grad=True)


@pytest.mark.parametrize("lapack", [False, True])
def test_mvn_kl_error_and_grad_out(monkeypatch, rng, lapack):
    """A covariance that is not SPD leaves no buffer of grad_out with other matrices'
    gradients: the batched kernel, which writes those before it meets the bad one, fills
    them with NaN; the LAPACK path (d > 64) raises before writing any."""
    import fastloss.gaussian as fg
    if lapack:
        monkeypatch.setattr(fg, "_MVN_KERNEL_D", -1)
    d = 3
    mp, mq = rng.standard_normal((4, d)), rng.standard_normal((4, d))
    Sp, Sq = _spd_scaled(rng, (4,), d), _spd_scaled(rng, (4,), d)
    Sq[3] = -np.eye(d)                 # the last matrix: the others' gradients come first
    outs = tuple(np.zeros_like(a) for a in (mp, Sp, mq, Sq))
    with pytest.raises(ValueError, match=r"cov_q is not symmetric positive definite \(batch index \(3,\)\)"):
        mvn_kl(mp, Sp, mq, Sq, return_grad=True, grad_out=outs)
    for o in outs:
        assert (~o.any() if lapack else np.isnan(o).all())
    # a bad grad_out itself is rejected before anything is written
    short = (np.zeros((3, d)),) + outs[1:]
    keep = np.zeros_like(Sp)
    with pytest.raises(ValueError, match="grad_out"):
        mvn_kl(mp, Sp, mq, Sq, return_grad=True, grad_out=(short[0], keep, outs[2], outs[3]))
    assert not keep.any()


def test_mvn_kl_float32_symmetry_tolerance(rng):
    """float32 covariances with float64 means: the symmetry check keeps float32's
    tolerance (64 eps of the covariance's dtype), as check_covariance does."""
    d = 5
    S = _spd_scaled(rng, (2,), d).astype(np.float32)
    S[:, 0, 1] = np.nextafter(S[:, 1, 0], np.float32(np.inf))
    mp, mq = rng.standard_normal((2, d)), rng.standard_normal(d)
    loss, g = mvn_kl(mp, S, mq, S[0], return_grad=True)
    assert np.asarray(loss).dtype == np.float64
    assert_close(loss, ref.mvn_kl(mp, S, mq, S[0]), np.float64)


# --- VAE -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("recon_loss", ["mse", "bce"])
@pytest.mark.parametrize("shapes", [((7, 3, 40), (7, 80)), ((7, 5), (7, 3)), ((7,), (7,))])
def test_vae_matrix(simd, rng, dtype, reduction, recon_loss, shapes):
    rs, zs = shapes
    r = rng.standard_normal(rs).astype(dtype)
    x = rng.uniform(size=rs).astype(dtype)
    mu, lv = rng.standard_normal(zs).astype(dtype), rng.standard_normal(zs).astype(dtype)
    kw = dict(recon_loss=recon_loss, beta=2.5, reduction=reduction, return_grad=True)
    check_loss_and_grads(vae_loss(r, x, mu, lv, **kw), ref.vae_loss(r, x, mu, lv, **kw), dtype)


def test_vae_finite_differences_and_terms(rng):
    r, x = rng.standard_normal((3, 4)), rng.uniform(size=(3, 4))
    mu, lv = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    for mode in ("mse", "bce"):
        _, g = vae_loss(r, x, mu, lv, recon_loss=mode, beta=0.7, return_grad=True)
        args = [r, mu, lv]
        for i, pos in enumerate((0, 2, 3)):
            def f(a, pos=pos):
                aa = [r, x, mu, lv]
                aa[pos] = a
                return vae_loss(*aa, recon_loss=mode, beta=0.7)
            np.testing.assert_allclose(g[i], fd_grad(f, args[i]), atol=1e-8)
    # both terms per sample, then the batch mean
    want = np.mean(np.sum((r - x) ** 2, axis=1)) + 0.7 * gaussian_kl(mu, lv)
    assert vae_loss(r, x, mu, lv, beta=0.7) == pytest.approx(want, rel=1e-13)
    assert vae_loss(r, x[:1], mu, lv) == vae_loss(r, np.broadcast_to(x[:1], r.shape).copy(), mu, lv)


# --- Gaussian NLL -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("var_shape", ["full", "short", "last1", "middle1", "scalar"])
@pytest.mark.parametrize("full", [False, True])
def test_gaussian_nll_matrix(simd, rng, dtype, reduction, var_shape, full):
    shape = (5, 4, 19)
    x, t = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    vs = {"full": shape, "short": shape[:-1], "last1": (5, 4, 1), "middle1": (5, 1, 19)}
    var = 0.7 if var_shape == "scalar" else rng.uniform(0.05, 2.0, vs[var_shape]).astype(dtype)
    if var_shape != "scalar":
        var.reshape(-1)[::7] = 1e-9               # below eps: clamped
    kw = dict(full=full, eps=1e-4, reduction=reduction, return_grad=True)
    fast, oracle = gaussian_nll_loss(x, t, var, **kw), ref.gaussian_nll_loss(x, t, var, **kw)
    check_loss_and_grads(fast, oracle, dtype)
    assert fast[1][1].shape == np.shape(var)


def test_gaussian_nll_finite_differences(rng):
    x, t = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    for var in (rng.uniform(0.5, 2, (3, 4)), rng.uniform(0.5, 2, (3,)), rng.uniform(0.5, 2, (1, 4))):
        _, (gx, gv) = gaussian_nll_loss(x, t, var, full=True, return_grad=True)
        np.testing.assert_allclose(gx, fd_grad(lambda a: gaussian_nll_loss(a, t, var, full=True), x), atol=1e-8)
        np.testing.assert_allclose(gv, fd_grad(lambda v: gaussian_nll_loss(x, t, v, full=True), var, h=1e-4),
                                   atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_nll_sum_of_logs(simd, rng, dtype):
    """The reduced loss sums log var as logs of per-lane products of mantissas: as accurate
    as a sum of logs where var is near 1 (small logs), across blocks and lane tails, and
    0, -0, inf and NaN in var give what their logs give."""
    for n in (1, 17, 255, 256, 257, 3001):
        x = (rng.standard_normal(n) * 0.01).astype(dtype)
        var = (1 + rng.standard_normal(n) * 1e-3).astype(dtype)
        want = ref.gaussian_nll_loss(x, 0.0, var, reduction="sum")
        assert gaussian_nll_loss(x, 0.0, var, reduction="sum") == pytest.approx(
            want, rel=2e-5 if dtype == np.float32 else 1e-12, abs=0)
        wide = (10.0 ** rng.uniform(-30, 30, n)).astype(dtype)   # exponents from -100 to 100
        logs = 0.5 * np.log(wide.astype(np.float64))                # the loss at x = t
        got = gaussian_nll_loss(np.zeros(n, dtype), 0.0, wide, eps=0.0, reduction="sum")
        assert abs(got - logs.sum()) <= 1e-6 * np.abs(logs).sum()
    # var 0: log 0 + 1 / 0 = -inf + inf; -0: -inf - inf; inf: inf + 0
    for special, want in ((0.0, np.nan), (-0.0, -np.inf), (np.inf, np.inf), (np.nan, np.nan)):
        var = np.ones(300, dtype)
        var[123] = special
        with np.errstate(divide="ignore", invalid="ignore"):
            oracle = ref.gaussian_nll_loss(np.ones(300), 0.0, var, eps=0.0, reduction="sum")
        got = gaussian_nll_loss(np.ones(300, dtype), 0.0, var, eps=0.0, reduction="sum")
        np.testing.assert_equal([got, oracle], [want, want])


def test_gaussian_nll_edge_cases():
    assert np.isnan(gaussian_nll_loss(np.array([1.0, np.nan]), np.zeros(2), np.ones(2)))
    loss, (gx, gv) = gaussian_nll_loss(np.zeros((0, 3)), np.zeros((0, 3)), np.ones((0, 3)),
                                       reduction="none", return_grad=True)
    assert loss.shape == (0, 3) and gv.shape == (0, 3)
    # target broadcasts to the input
    x = np.arange(6.0).reshape(2, 3)
    assert gaussian_nll_loss(x, 1.0, 2.0) == pytest.approx(
        gaussian_nll_loss(x, np.ones((2, 3)), np.full((2, 3), 2.0)), rel=1e-14)
    assert gaussian_nll_loss(np.float64(1.0), 0.0, 1.0) == pytest.approx(0.5)


# --- PyTorch parity --------------------------------------------------------------------------------

def test_gaussians_match_pytorch(rng):
    torch = pytest.importorskip("torch")
    D = torch.distributions
    mp, lvp, mq, lvq = (rng.standard_normal((5, 4)) for _ in range(4))
    ts = [torch_leaf(a) for a in (mp, lvp, mq, lvq)]
    want = D.kl_divergence(D.Normal(ts[0], torch.exp(0.5 * ts[1])),
                           D.Normal(ts[2], torch.exp(0.5 * ts[3]))).sum(-1).mean()
    want.backward()
    loss, g = gaussian_kl(mp, lvp, mq, lvq, return_grad=True)
    assert loss == pytest.approx(want.item(), rel=1e-12)
    for a, b in zip(g, ts):
        np.testing.assert_allclose(a, b.grad.numpy(), atol=1e-13)
    d = 3
    args = (rng.standard_normal((2, d)), _spd(rng, (2,), d), rng.standard_normal((2, d)), _spd(rng, (2,), d))
    ts = [torch_leaf(a) for a in args]
    want = D.kl_divergence(D.MultivariateNormal(ts[0], covariance_matrix=ts[1]),
                           D.MultivariateNormal(ts[2], covariance_matrix=ts[3])).sum()
    want.backward()
    loss, g = mvn_kl(*args, reduction="sum", return_grad=True)
    assert loss == pytest.approx(want.item(), rel=1e-10)
    for a, b in zip(g, ts):
        np.testing.assert_allclose(a, b.grad.numpy(), atol=1e-10)
    x, t, v = rng.standard_normal((4, 6)), rng.standard_normal((4, 6)), rng.uniform(0.1, 2, (4, 1))
    v[0] = 1e-8
    tx, tv = torch_leaf(x), torch_leaf(v)
    want = torch.nn.functional.gaussian_nll_loss(tx, torch.tensor(t), tv, full=True, eps=1e-3)
    want.backward()
    loss, (gx, gv) = gaussian_nll_loss(x, t, v, full=True, eps=1e-3, return_grad=True)
    assert loss == pytest.approx(want.item(), rel=1e-12)
    np.testing.assert_allclose(gx, tx.grad.numpy(), atol=1e-13)
    np.testing.assert_allclose(gv, tv.grad.numpy(), rtol=1e-12)
    r, xx = rng.standard_normal((4, 10)), rng.uniform(size=(4, 10))
    tr, tm, tl = torch_leaf(r), torch_leaf(mp[:4]), torch_leaf(lvp[:4])
    rec = torch.nn.functional.binary_cross_entropy_with_logits(tr, torch.tensor(xx), reduction="none").sum(1)
    kl = -0.5 * (1 + tl - tm ** 2 - tl.exp()).sum(1)
    want = (rec + 2.0 * kl).mean()
    want.backward()
    loss, g = vae_loss(r, xx, mp[:4], lvp[:4], recon_loss="bce", beta=2.0, return_grad=True)
    assert loss == pytest.approx(want.item(), rel=1e-12)
    for a, b in zip(g, (tr, tm, tl)):
        np.testing.assert_allclose(a, b.grad.numpy(), atol=1e-14)


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,exc,match", [
    (lambda: gaussian_kl(np.zeros((2, 3)), np.zeros((2, 4))), ValueError, "do not broadcast"),
    (lambda: gaussian_kl(np.float64(0.0), np.float64(0.0)), ValueError, "at least one dimension"),
    (lambda: gaussian_kl(np.zeros(3), np.zeros(3), reduction="avg"), ValueError, "reduction"),
    (lambda: gaussian_kl(np.zeros(3), np.zeros(3) + 1j), TypeError, "logvar_p"),
    (lambda: gaussian_kl(np.zeros(3), np.zeros(3), return_grad=True, grad_out=(np.zeros(3),)), ValueError,
     "tuple of 2"),
    (lambda: gaussian_kl(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(3), return_grad=True,
                         grad_out=(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)))), ValueError,
     r"grad_out\[2\] has shape"),
    (lambda: vae_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 2)),
                      recon_loss="l1"), ValueError, "recon_loss"),
    (lambda: vae_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 2)), beta=-1),
     ValueError, "beta"),
    (lambda: vae_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((3, 2)), np.zeros((3, 2))),
     ValueError, "batch size"),
    (lambda: vae_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 3))),
     ValueError, "logvar has shape"),
    (lambda: vae_loss(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros((2, 2)), np.zeros((2, 2))),
     ValueError, "x of shape"),
    (lambda: vae_loss(np.float64(0), np.float64(0), np.zeros(2), np.zeros(2)), ValueError, "batch axis"),
    (lambda: gaussian_nll_loss(np.zeros((2, 3)), np.zeros((2, 3)), -np.ones((2, 3))), ValueError,
     "var has negative"),
    (lambda: gaussian_nll_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((3, 2))), ValueError,
     "var has shape"),
    (lambda: gaussian_nll_loss(np.zeros((2, 3)), np.zeros((2, 3)), np.ones((1, 1))), ValueError,
     "var has shape"),
    (lambda: gaussian_nll_loss(np.zeros((2, 3)), np.zeros((3, 3)), np.ones((2, 3))), ValueError,
     "target of shape"),
    (lambda: gaussian_nll_loss(np.zeros(3), np.zeros(3), np.ones(3), eps=-1.0), ValueError, "eps"),
    (lambda: gaussian_nll_loss(np.zeros(3), np.zeros(3), np.ones(3), reduction="batchmean"), ValueError,
     "reduction"),
])
def test_bad_gaussian_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_nll_negative_var_anywhere(dtype, nthreads, simd):
    """One negative var entry anywhere (first, middle, last element of several work items,
    a vector's tail lanes) is a ValueError on every path and SIMD level: found by the kernel
    when it writes only arrays of its own, else before it runs (a caller's grad_out left
    untouched); -0.0 is not negative."""
    shape = (3, 40001)                        # several ELEMENT_BLOCK work items, a partial vector
    x = np.zeros(shape, dtype)
    for pos in [(0, 0), (1, 12345), (2, 39999), (2, 40000)]:
        var = np.ones(shape, dtype)
        var[pos] = -1e-30
        with fastloss.threads(nthreads):
            for kw in [{}, {"reduction": "none"}, {"reduction": "sum", "return_grad": True},
                       {"where": np.ones(shape, bool)}]:
                with pytest.raises(ValueError, match="var has negative"):
                    gaussian_nll_loss(x, x, var, **kw)
            x2 = np.zeros((3, 2) + shape[1:], dtype)
            with pytest.raises(ValueError, match="var has negative"):   # the "axis" layout
                gaussian_nll_loss(x2, x2, var[:, None])
            bufs = (np.full(shape, 7, dtype), np.full(shape, 7, dtype))
            with pytest.raises(ValueError, match="var has negative"):
                gaussian_nll_loss(x, x, var, return_grad=True, grad_out=bufs)
            assert (bufs[0] == 7).all() and (bufs[1] == 7).all()
        var[pos] = -0.0
        assert gaussian_nll_loss(x, x, var) == gaussian_nll_loss(x, x, np.abs(var))


@pytest.mark.parametrize("var", [np.array([1.0, -2.0, 1.0]), np.array([[1.0], [1.0], [-2.0]]),
                                 np.float64(-1.0)], ids=["row", "row1", "scalar"])
def test_nll_negative_var_per_row_masked_or_empty(var):
    """The check on the per-row and scalar variances, with a where= mask (masked entries
    too, as PyTorch checks all of var) and on an empty input, where no kernel reads var."""
    x = np.zeros((3, 5))
    for kw in [{}, {"where": np.zeros((3, 5), bool)}, {"return_grad": True}]:
        with pytest.raises(ValueError, match="var has negative"):
            gaussian_nll_loss(x, x, var, **kw)
    with pytest.raises(ValueError, match="var has negative"):
        gaussian_nll_loss(np.zeros((0, 5)), np.zeros((0, 5)), np.float64(-1.0))


def test_nll_negative_var_next_to_nan():
    """A NaN variance does not hide a negative one (np.min(var) would be NaN there)."""
    var = np.ones((4, 40000))
    var[0, 0], var[3, 39999] = np.nan, -1.0
    with pytest.raises(ValueError, match="var has negative"):
        gaussian_nll_loss(np.zeros_like(var), np.zeros_like(var), var)


# --- special values (the README's table) -------------------------------------------------------
# One entry of row 1 set to +inf, -inf or NaN: loss and gradients are the formula evaluated
# directly, as the oracle (and torch.distributions) does: e.g. gaussian_kl with logvar_p = +inf
# is -inf + inf = NaN, with mu_p = inf it is inf; gaussian_nll_loss with var = inf is inf with
# zero gradients. Exceptions, documented: mvn_kl with an infinite mean is +inf (the Mahalanobis
# term of a positive definite form; the triangular solve alone gives NaN) with NaN gradients for
# mu_p, mu_q and cov_q; non-finite covariances and var = -inf are ValueErrors. Other rows are
# untouched.

def _rows(rng, n, shape, dtype):
    return [rng.uniform(-1, 1, shape).astype(dtype) for _ in range(n)]


SPECIAL_CALLS = {
    "gaussian_kl": (gaussian_kl, ref.gaussian_kl, ("mu_p", "logvar_p", "mu_q", "logvar_q"), {}),
    "vae_mse": (vae_loss, ref.vae_loss, ("recon", "x", "mu", "logvar"), {}),
    "gaussian_nll": (gaussian_nll_loss, ref.gaussian_nll_loss, ("input", "target", "var"), {}),
    "gaussian_nll_full": (gaussian_nll_loss, ref.gaussian_nll_loss, ("input", "target", "var"),
                          dict(full=True)),
    "mvn_kl": (mvn_kl, ref.mvn_kl, ("mu_p", "cov_p", "mu_q", "cov_q"), {}),
}
SPECIAL_CASES = [(f, arg) for f, (_, _, names, _) in SPECIAL_CALLS.items() for arg in names]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")    # the oracles' inf - inf
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan], ids=str)
@pytest.mark.parametrize("fname,arg", SPECIAL_CASES, ids=str)
def test_gaussian_special(simd, rng, dtype, value, fname, arg):
    fast, oracle, names, kw = SPECIAL_CALLS[fname]
    if fname == "mvn_kl":
        args = [rng.standard_normal((3, 2)).astype(dtype), _spd(rng, (3,), 2).astype(dtype),
                rng.standard_normal((3, 2)).astype(dtype), _spd(rng, (3,), 2).astype(dtype)]
    else:
        args = _rows(rng, len(names), (3, 4), dtype)
        if fname.startswith("gaussian_nll"):
            args[2] = np.abs(args[2]) + dtype(0.1)
    k = names.index(arg)
    args[k].reshape(3, -1)[1, 0] = value
    rejected = (fname == "mvn_kl" and arg.startswith("cov")) or (arg == "var" and value == -np.inf)
    if rejected:
        with pytest.raises(ValueError, match=arg):
            fast(*args, **kw)
        return
    loss, grads = fast(*args, reduction="none", return_grad=True, **kw)
    rloss, rgrads = oracle(*args, reduction="none", return_grad=True, **kw)
    assert_close(loss, rloss, dtype)                # NaN and inf in the same places
    for g, r in zip(grads, rgrads):
        assert_close(g, r, dtype, grad=True)
    if fname.startswith("gaussian_nll"):            # per-element losses: row 1, column 0
        assert np.isfinite(np.delete(loss.reshape(-1), 4)).all()
    else:
        assert np.isfinite(loss[[0, 2]]).all()
    if np.isnan(value):
        assert np.isnan(loss).any()
    if fname == "mvn_kl":
        assert np.isnan(loss[1]) if np.isnan(value) else loss[1] == np.inf
    assert_close(fast(*args, **kw), oracle(*args, **kw), dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan], ids=str)
@pytest.mark.parametrize("arg", ["recon", "x"])
def test_vae_bce_special_is_bce(rng, value, arg):
    """recon_loss="bce": the reconstruction term of special values is
    binary_cross_entropy_with_logits' (its table), summed per sample."""
    from fastloss import binary_cross_entropy_with_logits
    r, x, mu, lv = _rows(rng, 4, (3, 4), np.float64)
    x = np.abs(x)
    (r if arg == "recon" else x)[1, 0] = value
    loss, (gr, gm, glv) = vae_loss(r, x, mu, lv, recon_loss="bce", reduction="none", return_grad=True)
    bl, bg = binary_cross_entropy_with_logits(r, x, reduction="none", return_grad=True)
    kl = gaussian_kl(mu, lv, reduction="none")
    np.testing.assert_allclose(loss, np.sum(bl, axis=1) + kl, rtol=1e-13)
    np.testing.assert_array_equal(gr, bg)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["kl_prior", "kl_full", "kl_rows", "nll", "nll_row_var", "nll_none",
                                  "vae_mse", "vae_bce"])
def test_streamed_gradients_match(rng, case, dtype):
    """Gradients past the streaming threshold (set to 0 here) go out with streaming
    stores: the same bits as plain stores from any alignment of each grad_out buffer, over
    several element blocks and a partial vector at the end."""
    from helpers import check_streamed_grads
    shape = (257, 131)                                 # 33667 elements: three blocks and a tail
    if case in ("kl_rows", "nll_row_var"):
        shape = (17, 2053)     # rows of at least STREAM_RUN (_blocks.pxd), two work items
    a, b, c, d = (rng.standard_normal(shape).astype(dtype) for _ in range(4))
    var = rng.uniform(0.1, 2.0, shape).astype(dtype)
    kw = {"return_grad": True}
    if case == "kl_prior":
        call, shapes = lambda g: gaussian_kl(a, b, **kw, grad_out=g), (shape, shape)
    elif case == "kl_full":
        call, shapes = lambda g: gaussian_kl(a, b, c, d, **kw, grad_out=g), (shape,) * 4
    elif case == "kl_rows":
        call, shapes = lambda g: gaussian_kl(a, b, reduction="none", **kw, grad_out=g), (shape, shape)
    elif case == "nll":
        call, shapes = lambda g: gaussian_nll_loss(a, b, var, **kw, grad_out=g), (shape, shape)
    elif case == "nll_row_var":
        v = var[:, :1].copy()
        call, shapes = lambda g: gaussian_nll_loss(a, b, v, **kw, grad_out=g), (shape, v.shape)
    elif case == "nll_none":
        call, shapes = (lambda g: gaussian_nll_loss(a, b, var, reduction="none", **kw, grad_out=g),
                        (shape, shape))
    else:
        x = rng.random(shape).astype(dtype)
        mu, lv = a[:, :32].copy(), b[:, :32].copy()
        rl = "mse" if case == "vae_mse" else "bce"
        call = lambda g: vae_loss(a, x, mu, lv, recon_loss=rl, **kw, grad_out=g)
        shapes = (shape, mu.shape, mu.shape)
    check_streamed_grads(call, shapes, dtype)
