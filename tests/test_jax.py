"""fastloss.jax: same values and gradients as the NumPy API, parity with optax (and with
pure-JAX formulas differentiated by JAX) under jit, grad and vmap."""
import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

import fastloss  # noqa: E402
import fastloss.jax as flj  # noqa: E402

N, C = 6, 5


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _data(seed=0):
    r = np.random.default_rng(seed)
    x, y = r.standard_normal((2, N, C))
    labels = r.integers(0, C, N)
    boxes = np.concatenate([r.random((N, 2)), r.random((N, 2)) + 1.0], axis=1)
    cov = np.eye(2) + 0.1 * np.ones((2, 2))
    return dict(x=x, y=y, labels=labels, probs=np.exp(y) / np.exp(y).sum(-1, keepdims=True),
                bits=(y > 0).astype(float), var=r.random((N, C)) + 0.5, boxes=boxes,
                boxes2=boxes + 0.1 * r.random((N, 4)), cov=np.tile(cov, (N, 1, 1)),
                w=r.random(N) + 0.5)


# Every public function once: name, array arguments (keys of _data), options.
CASES = [
    ("cross_entropy", ("x", "labels"), dict(label_smoothing=0.1, z_loss=1e-2)),
    ("cross_entropy", ("x", "probs"), dict(softcap=3.0)),
    ("binary_cross_entropy_with_logits", ("x", "bits"), {}),
    ("sigmoid_focal_loss", ("x", "bits"), dict(gamma=1.5)),
    ("logsumexp", ("x",), {}),
    ("entropy", ("x",), {}),
    ("kl_divergence", ("x", "y"), dict(temperature=2.0)),
    ("js_divergence", ("x", "y"), {}),
    ("distillation_loss", ("x", "y"), dict(temperature=2.0)),
    ("mse_loss", ("x", "y"), {}),
    ("l1_loss", ("x", "y"), {}),
    ("huber_loss", ("x", "y"), dict(delta=0.5)),
    ("smooth_l1_loss", ("x", "y"), dict(beta=0.5)),
    ("log_cosh_loss", ("x", "y"), {}),
    ("gaussian_nll_loss", ("x", "y", "var"), {}),
    ("gaussian_kl", ("x", "y"), {}),
    ("gaussian_kl", ("x", "y", "y", "x"), {}),
    ("mvn_kl", ("x2", "cov", "y2", "cov"), {}),
    ("vae_loss", ("x", "y", "x", "y"), {}),
    ("generalized_box_iou_loss", ("boxes", "boxes2"), {}),
    ("distance_box_iou_loss", ("boxes", "boxes2"), {}),
    ("complete_box_iou_loss", ("boxes", "boxes2"), {}),
    ("triplet_margin_loss", ("x", "y", "var"), {}),
    ("batch_hard_triplet_loss", ("x", "labels"), {}),
    ("info_nce_loss", ("x", "y"), {}),
    ("nt_xent_loss", ("x", "y"), {}),
]


def _args(keys, d):
    d = dict(d, x2=d["x"][:, :2], y2=d["y"][:, :2])
    return [d[k] for k in keys]


def test_every_function_has_a_case():
    assert {c[0] for c in CASES} == set(flj.__all__)


@pytest.mark.parametrize("name,keys,opts", CASES, ids=[f"{c[0]}-{c[1][-1]}" for c in CASES])
def test_value_and_gradients_are_the_numpy_calls(x64, name, keys, opts):
    _check_numpy_call(name, keys, opts)


def _check_numpy_call(name, keys, opts):
    args = _args(keys, _data())
    loss, grads = getattr(fastloss, name)(*args, **opts, return_grad=True)
    grads = grads if isinstance(grads, tuple) else (grads,)
    spec = flj._SPECS[name]
    params = list(flj.__dict__[name].__signature__.parameters)
    argnums = [i for i, k in enumerate(params[:len(args)]) if k in spec.grads]
    jargs = [jnp.asarray(a) for a in args]
    f = getattr(flj, name)
    val, jgrads = jax.value_and_grad(lambda *a: 3 * f(*a, **opts).sum(), argnums=argnums)(*jargs)
    assert val.dtype == jnp.float64
    np.testing.assert_allclose(val, 3 * np.sum(loss), rtol=1e-14)   # logsumexp: per row
    assert len(jgrads) == len(grads)
    for jg, g in zip(jgrads, grads):
        np.testing.assert_allclose(jg, 3 * g, rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(jax.jit(lambda *a: f(*a, **opts))(*jargs), loss, rtol=1e-14)


@pytest.mark.parametrize("name,keys,opts", CASES, ids=[f"{c[0]}-{c[1][-1]}" for c in CASES])
def test_mixed_float_dtypes_are_the_numpy_calls(x64, name, keys, opts):
    """float32 first and float64 after it (and the reverse): the NumPy call's compute dtype,
    value and gradients (each in its input's dtype)."""
    for first, rest in ((np.float32, np.float64), (np.float64, np.float32)):
        args = [a.astype(first if i == 0 else rest) if a.dtype.kind == "f" else a
                for i, a in enumerate(_args(keys, _data()))]
        loss, grads = getattr(fastloss, name)(*args, **opts, return_grad=True)
        grads = grads if isinstance(grads, tuple) else (grads,)
        params = list(flj.__dict__[name].__signature__.parameters)
        argnums = [i for i, k in enumerate(params[:len(args)]) if k in flj._SPECS[name].grads]
        f = getattr(flj, name)
        val = f(*map(jnp.asarray, args), **opts)
        assert val.dtype == np.asarray(loss).dtype
        np.testing.assert_array_equal(val, loss)
        jgrads = jax.grad(lambda *a: f(*a, **opts).sum(), argnums=argnums)(*map(jnp.asarray, args))
        for i, jg, g in zip(argnums, jgrads, grads):
            assert jg.dtype == args[i].dtype
            np.testing.assert_array_equal(jg, g.astype(args[i].dtype))


def test_per_sample_gradients_of_vae_and_mvn_kl(x64):
    """reduction="none" with one cotangent per sample: vae_loss and mvn_kl take it (their
    inputs are per sample), each row's gradient the NumPy call's on that row."""
    r = np.random.default_rng(3)
    w = np.arange(1.0, 5.0)
    cov = np.stack([np.eye(3) * (i + 1) for i in range(4)])
    for name, args in (("vae_loss", [r.standard_normal(s) for s in ((4, 5), (4, 5), (4, 2), (4, 2))]),
                       ("mvn_kl", [r.standard_normal((4, 3)), cov, r.standard_normal((4, 3)), cov])):
        f = getattr(flj, name)
        g = jax.grad(lambda a0: (f(a0, *map(jnp.asarray, args[1:]), reduction="none") * w).sum())(
            jnp.asarray(args[0]))
        want = np.concatenate([w[i] * getattr(fastloss, name)(*(a[i:i + 1] for a in args),
                                                              reduction="sum", return_grad=True)[1][0]
                               for i in range(4)])
        np.testing.assert_allclose(g, want, rtol=1e-13)


def test_vmap_of_a_per_sample_loss_of_fixed_rank(x64):
    """triplet_margin_loss takes (N, D) inputs: vmap of its "none" loss runs one call per
    batch element, as a loop does."""
    a, p, n = np.random.default_rng(4).standard_normal((3, 2, 6, 4))
    got = jax.vmap(lambda *v: flj.triplet_margin_loss(*v, reduction="none"))(a, p, n)
    want = np.stack([fastloss.triplet_margin_loss(a[b], p[b], n[b], reduction="none") for b in range(2)])
    np.testing.assert_allclose(got, want, rtol=1e-14)


# optax parity, per example (reduction="none") with a random cotangent per row, float64.
def _per_row(v):
    return v.sum(-1) if v.ndim == 2 else v


OPTAX = [
    ("cross_entropy", ("x", "labels"), {}, optax.softmax_cross_entropy_with_integer_labels, {}),
    ("cross_entropy", ("x", "probs"), {}, optax.softmax_cross_entropy, {}),
    ("cross_entropy", ("x", "probs"), {}, optax.safe_softmax_cross_entropy, {}),
    ("binary_cross_entropy_with_logits", ("x", "bits"), {}, optax.sigmoid_binary_cross_entropy, {}),
    ("sigmoid_focal_loss", ("x", "bits"), dict(alpha=0.25, gamma=2.0), optax.sigmoid_focal_loss,
     dict(alpha=0.25, gamma=2.0)),
    ("huber_loss", ("x", "y"), dict(delta=0.7), optax.huber_loss, dict(delta=0.7)),
    ("log_cosh_loss", ("x", "y"), {}, optax.log_cosh, {}),
    ("mse_loss", ("x", "y"), {}, lambda p, t: 2 * optax.l2_loss(p, t), {}),
    ("mse_loss", ("x", "y"), {}, optax.squared_error, {}),
    ("kl_divergence", ("x", "y"), {},
     lambda p, q: optax.kl_divergence(jax.nn.log_softmax(q), jax.nn.softmax(p)), {}),
]


@pytest.mark.parametrize("name,keys,opts,ref,ref_opts", OPTAX,
                         ids=[f"{c[0]}-{getattr(c[3], '__name__', 'lambda')}" for c in OPTAX])
def test_optax_parity(x64, name, keys, opts, ref, ref_opts):
    d = _data(1)
    args = [jnp.asarray(a) for a in _args(keys, d)]
    w = jnp.asarray(d["w"])
    ours = getattr(flj, name)(*args, **opts, reduction="none")
    theirs = ref(*args, **ref_opts)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    diff = 2 if name in ("kl_divergence", "huber_loss", "log_cosh_loss", "mse_loss") else 1
    argnums = tuple(range(diff))
    g1 = jax.grad(lambda *a: (w * _per_row(getattr(flj, name)(*a, **opts, reduction="none"))).sum(),
                  argnums=argnums)(*args)
    g2 = jax.grad(lambda *a: (w * _per_row(ref(*a, **ref_opts))).sum(), argnums=argnums)(*args)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    # The mean: optax's per-example losses averaged.
    m = getattr(flj, name)(*args, **opts)
    np.testing.assert_allclose(m, theirs.mean(), rtol=1e-12)


def _ce_formula(x, t, weight, ignore_index, eps, reduction):
    """PyTorch's cross-entropy rule in pure JAX (class weights, ignore_index, smoothing)."""
    logp = jax.nn.log_softmax(x)
    keep = t != ignore_index
    tt = jnp.where(keep, t, 0)
    wt = jnp.where(keep, weight[tt], 0.0)
    nll = -jnp.take_along_axis(logp, tt[:, None], 1)[:, 0] * wt
    smooth = -(logp * weight).sum(-1) * keep / x.shape[-1]
    per = (1 - eps) * nll + eps * smooth
    return {"none": per, "sum": per.sum(), "mean": per.sum() / wt.sum()}[reduction]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_cross_entropy_options_vs_pure_jax(x64, reduction, eps):
    d = _data(2)
    x, t, weight = jnp.asarray(d["x"]), jnp.asarray(d["labels"]).at[1].set(-7), jnp.asarray(d["var"][0])
    w = jnp.asarray(d["w"]) if reduction == "none" else 1.0
    kw = dict(weight=weight, ignore_index=-7, label_smoothing=eps, reduction=reduction)
    ours = flj.cross_entropy(x, t, **kw)
    np.testing.assert_allclose(ours, _ce_formula(x, t, weight, -7, eps, reduction), rtol=1e-12)
    g1 = jax.jit(jax.grad(lambda x: (w * flj.cross_entropy(x, t, **kw)).sum()))(x)
    g2 = jax.grad(lambda x: (w * _ce_formula(x, t, weight, -7, eps, reduction)).sum())(x)
    np.testing.assert_allclose(g1, g2, rtol=1e-11, atol=1e-14)
    assert np.all(g1[1] == 0)   # the ignored row


def test_gradients_vs_finite_differences(x64):
    """z_loss, softcap, axis=0 and a target differentiated through -grad(input)."""
    d = _data(3)
    x, y, t = jnp.asarray(d["x"]), jnp.asarray(d["y"]), jnp.asarray(d["labels"][:C])
    for f, arg in [(lambda x: flj.cross_entropy(x, t, axis=0, z_loss=0.1, softcap=2.0), x),
                   (lambda y: flj.huber_loss(x, y, delta=0.3, reduction="sum"), y),
                   (lambda v: flj.gaussian_nll_loss(x, y, v), jnp.asarray(d["var"]))]:
        g, fj, a, h = jax.grad(f)(arg), jax.jit(f), np.asarray(arg), 1e-5
        fd = np.zeros(a.shape)
        for i in np.ndindex(a.shape):
            e = np.zeros(a.shape)
            e[i] = h
            fd[i] = (fj(a + e) - fj(a - e)) / (2 * h)
        np.testing.assert_allclose(g, fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("axis", [None, (0, 2), 1, (-1,)])
def test_logsumexp_axes_vs_jax(x64, axis):
    """Tuples and None of axes, counted from the end for vmap, against jax.nn.logsumexp."""
    x = jnp.asarray(np.random.default_rng(9).standard_normal((3, 4, 5)))
    ref = jax.nn.logsumexp(x, axis=axis)
    w = jnp.arange(1.0, ref.size + 1).reshape(ref.shape)
    np.testing.assert_allclose(flj.logsumexp(x, axis=axis), ref, rtol=1e-13)
    g1 = jax.grad(lambda z: (w * flj.logsumexp(z, axis=axis)).sum())(x)
    g2 = jax.grad(lambda z: (w * jax.nn.logsumexp(z, axis=axis)).sum())(x)
    np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-15)
    xs = jnp.stack([x, 2 * x])
    np.testing.assert_allclose(jax.vmap(lambda z: flj.logsumexp(z, axis=axis))(xs),
                               jax.nn.logsumexp(xs, axis=_shift(axis)), rtol=1e-13)


def _shift(axis):
    """The same axes of each element of a batch stacked in front."""
    axes = range(3) if axis is None else np.atleast_1d(axis)
    return tuple(int(a) + 1 if a >= 0 else int(a) for a in axes)


# vmap against a Python loop; `batched` says which vmap_method the call takes.
VMAP = [
    (lambda x, y, t: flj.cross_entropy(x, t, reduction="none"), True),
    (lambda x, y, t: flj.cross_entropy(x.T, t, axis=0, reduction="none"), True),
    (lambda x, y, t: flj.cross_entropy(x, t, label_smoothing=0.1), False),
    (lambda x, y, t: flj.cross_entropy(x, t, weight=jnp.arange(1.0, C + 1), reduction="none"), False),
    (lambda x, y, t: flj.kl_divergence(x, y, reduction="none"), True),
    (lambda x, y, t: flj.distillation_loss(x, y, target=t, reduction="none"), True),
    (lambda x, y, t: flj.huber_loss(x, y, reduction="none"), True),
    (lambda x, y, t: flj.mse_loss(x, y, weight=jnp.arange(1.0, C + 1), reduction="none"), False),
    (lambda x, y, t: flj.logsumexp(x), True),
    (lambda x, y, t: flj.gaussian_kl(x, y, reduction="none"), True),
    (lambda x, y, t: flj.info_nce_loss(x, y), False),
]


@pytest.mark.parametrize("i", range(len(VMAP)))
def test_vmap_matches_a_loop(i):
    _check_vmap(i)


def _check_vmap(i):
    f, batched = VMAP[i]
    r = np.random.default_rng(4)
    xs, ys = jnp.asarray(r.standard_normal((2, 3, N, C)), jnp.float32)
    t = jnp.asarray(r.integers(0, C, N))     # shared by every batch element (not batched)
    jaxpr = str(jax.make_jaxpr(jax.vmap(f, in_axes=(0, 0, None)))(xs, ys, t))
    assert ("scan[" not in jaxpr) == batched, jaxpr
    out = jax.jit(jax.vmap(f, in_axes=(0, 0, None)))(xs, ys, t)
    loop = jnp.stack([f(xs[b], ys[b], t) for b in range(3)])
    np.testing.assert_allclose(out, loop, rtol=1e-6, atol=1e-7)
    g = jax.vmap(jax.grad(lambda x, y: (f(x, y, t) ** 2).sum()))(xs, ys)
    gl = jnp.stack([jax.grad(lambda x: (f(x, ys[b], t) ** 2).sum())(xs[b]) for b in range(3)])
    np.testing.assert_allclose(g, gl, rtol=1e-5, atol=1e-7)


def test_pure_callback_path(x64, monkeypatch):
    """Where jax has no buffer_callback, jax.pure_callback runs the same calls."""
    monkeypatch.setattr(flj, "_buffer_callback", None)
    for case in CASES[:3] + CASES[6:8] + CASES[14:15]:
        _check_numpy_call(*case)
    for i in (0, 2, 4):
        _check_vmap(i)
    jaxpr = str(jax.make_jaxpr(lambda x: flj.entropy(x))(jnp.ones((2, 3))))
    assert "pure_callback" in jaxpr and "buffer_callback" not in jaxpr


def test_gradients_leave_the_callers_array_alone():
    """fastloss writes into XLA's output buffers, never into an input the caller holds."""
    d = _data(8)
    x, t = jnp.asarray(d["x"], jnp.float32), jnp.asarray(d["labels"])
    before = np.array(x)
    g = jax.grad(flj.cross_entropy)(x, t)
    both = jax.jit(lambda x: (jax.grad(flj.cross_entropy)(x, t), x + 0, jax.grad(flj.mse_loss)(2 * x, x)))
    g2, x2, gm = both(x)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(x2, before)
    np.testing.assert_array_equal(g2, g)
    np.testing.assert_allclose(gm, 2 * before / before.size, rtol=1e-6)


def test_dtypes():
    d = _data(5)
    x, t = jnp.asarray(d["x"], jnp.float32), jnp.asarray(d["labels"])
    loss, g = jax.value_and_grad(flj.cross_entropy)(x, t)
    assert loss.dtype == g.dtype == jnp.float32
    for half in (jnp.bfloat16, jnp.float16):
        lh, gh = jax.value_and_grad(flj.cross_entropy)(x.astype(half), t)
        assert lh.dtype == jnp.float32 and gh.dtype == half
        l32, g32 = jax.value_and_grad(flj.cross_entropy)(x.astype(half).astype(jnp.float32), t)
        assert lh == l32
        np.testing.assert_array_equal(gh, g32.astype(half))
    # Integer labels get a float0 cotangent.
    _, vjp = jax.vjp(flj.cross_entropy, x, t)
    gx, gt = vjp(jnp.float32(2.0))
    np.testing.assert_allclose(gx, 2 * g, rtol=1e-6)
    assert gt.dtype == jax.dtypes.float0


def test_errors():
    d = _data(6)
    x, y, t = jnp.asarray(d["x"]), jnp.asarray(d["y"]), jnp.asarray(d["labels"])
    with pytest.raises(TypeError, match="'target'.*stop_gradient"):
        jax.grad(flj.cross_entropy, argnums=1)(x, jax.nn.softmax(y))
    with pytest.raises(TypeError, match="'teacher_logits'"):
        jax.grad(flj.distillation_loss, argnums=1)(x, y)
    with pytest.raises(TypeError, match='reduction="none"'):
        jax.grad(lambda x: flj.info_nce_loss(x, y, reduction="none").sum())(x)
    with pytest.raises(TypeError, match='reduction="none"'):
        jax.grad(lambda v: flj.gaussian_nll_loss(x, y, v, reduction="none").sum())(x[:, 0] ** 2)
    with pytest.raises(TypeError, match="return_grad"):
        flj.cross_entropy(x, t, return_grad=True)
    with pytest.raises(ValueError, match="axis"):
        flj.cross_entropy(x, t, axis=2)
    # The stop_gradient way works, and fastloss's own checks come through the callback.
    jax.grad(flj.cross_entropy)(x, jax.lax.stop_gradient(jax.nn.softmax(y)))
    with pytest.raises(Exception, match="target"):
        jax.jit(flj.cross_entropy)(x, t.at[0].set(C)).block_until_ready()
    # A list option (part of the hashed call) and a traced one (an operand) work too.
    wl = [1.0, 2.0, 3.0, 4.0, 5.0]
    np.testing.assert_allclose(flj.cross_entropy(x, t, weight=wl),
                               fastloss.cross_entropy(np.asarray(x), np.asarray(t), weight=wl))
    np.testing.assert_allclose(jax.jit(lambda x, tmp: flj.kl_divergence(x, y, temperature=tmp))(x, 2.0),
                               fastloss.kl_divergence(np.asarray(x), np.asarray(y), temperature=2.0),
                               rtol=1e-6)


@pytest.mark.parametrize("n", [3, 4])
def test_broadcast_inputs_with_reduction_none(x64, n):
    """A prior mean (gaussian_kl, mvn_kl) broadcast over the batch: the per-sample losses
    have the batch's shape, as the NumPy call's; the broadcast input's gradient needs a
    reduced loss (also where the batch is as long as its own axis, n = 3), the other
    inputs' gradients still take one cotangent per sample."""
    rng = np.random.default_rng(n)
    mu, lv = rng.standard_normal(3), rng.standard_normal((n, 3))
    a = rng.standard_normal((n, 3, 3))
    mq, cov = rng.standard_normal((n, 3)), a @ a.transpose(0, 2, 1) + np.eye(3)
    w = jnp.arange(1.0, n + 1)
    for f, args in ((flj.gaussian_kl, (mu, lv)), (flj.mvn_kl, (mu, cov, mq, cov))):
        loss = f(*map(jnp.asarray, args), reduction="none")
        np.testing.assert_array_equal(loss, getattr(fastloss, f.__name__)(*args, reduction="none"))
        with pytest.raises(TypeError, match='reduction="none"'):
            jax.grad(lambda m: (f(m, *args[1:], reduction="none") * w).sum())(jnp.asarray(mu))
    g = jax.grad(lambda v: (flj.gaussian_kl(mu, v, reduction="none") * w).sum())(jnp.asarray(lv))
    want = 0.5 * (np.exp(lv) - 1) * np.asarray(w)[:, None]      # d KL(N(mu, e^v) || N(0, 1)) / dv
    np.testing.assert_allclose(g, want, rtol=1e-13)


def test_training_step_matches_optax():
    """A jitted SGD step of a linear classifier: the same parameters as with optax's loss."""
    r = np.random.default_rng(7)
    feats = jnp.asarray(r.standard_normal((32, 8)), jnp.float32)
    t = jnp.asarray(r.integers(0, C, 32))
    w0 = jnp.asarray(0.1 * r.standard_normal((8, C)), jnp.float32)
    opt = optax.sgd(0.5)

    def make_step(loss):
        @jax.jit
        def step(w, state):
            val, g = jax.value_and_grad(lambda w: loss(feats @ w, t))(w)
            upd, state = opt.update(g, state)
            return optax.apply_updates(w, upd), state, val
        return step

    ref = lambda z, t: optax.softmax_cross_entropy_with_integer_labels(z, t).mean()  # noqa: E731
    runs = []
    for loss in (flj.cross_entropy, ref):
        w, state, vals = w0, opt.init(w0), []
        step = make_step(loss)
        for _ in range(5):
            w, state, val = step(w, state)
            vals.append(val)
        runs.append((w, vals))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=1e-5)
    assert runs[0][1][-1] < runs[0][1][0]


@pytest.mark.parametrize("name", ["cross_entropy", "kl_divergence", "mse_loss", "info_nce_loss"])
def test_where_under_jit_and_grad(name):
    """where= passes through the JAX wrapper: jit(grad) equals the NumPy call's gradient."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 5)).astype(np.float32)
    other = {"cross_entropy": rng.integers(0, 5, 6), "kl_divergence": x[::-1].copy(),
             "mse_loss": x.T.copy().reshape(6, 5), "info_nce_loss": x[::-1].copy()}[name]
    keep = np.array([1, 0, 1, 1, 0, 1], bool)
    w = keep[:, None] if name == "mse_loss" else keep
    fn, ref = getattr(flj, name), getattr(fastloss, name)
    g = jax.jit(jax.grad(lambda a: fn(a, other, where=w)))(x)
    loss, want = ref(x, other, where=w, return_grad=True)
    want = want[0] if isinstance(want, tuple) else want
    assert float(fn(x, other, where=w)) == float(loss)
    np.testing.assert_array_equal(np.asarray(g), want)
    assert not np.asarray(g)[~keep].any()
