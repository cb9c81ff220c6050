"""fastloss.torch: the op (opcheck), gradients (gradcheck, float64), parity with
torch.nn.functional, autograd semantics, dtypes, devices, torch.compile, the Modules."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import fastloss  # noqa: E402
import fastloss.torch as flt  # noqa: E402


def _t(*shape, seed=0, positive=False, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
    return x.abs() + 0.1 if positive else x


def _labels(n, c, seed=1):
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))


def _boxes(n, seed):
    xy = _t(n, 2, seed=seed)
    return torch.cat([xy, xy + _t(n, 2, seed=seed + 1, positive=True)], dim=1)


def _spd(n, d, seed):
    a = _t(n, d, d, seed=seed)
    return a @ a.transpose(1, 2) + torch.eye(d, dtype=torch.float64)


# name: (function, differentiable inputs, other arguments, options); float64, small
CASES = {
    "cross_entropy": (flt.cross_entropy, [_t(5, 4)], [_labels(5, 4)], {}),
    "cross_entropy_nchw": (flt.cross_entropy, [_t(3, 4, 2)],
                           [torch.tensor([[0, 3], [1, 2], [3, 0]])], {}),
    "linear_cross_entropy": (lambda x, w, b, t, **kw: flt.linear_cross_entropy(
        x, w, t, linear_bias=b, **kw), [_t(5, 3), _t(4, 3, seed=2), _t(4, seed=3)],
        [_labels(5, 4)], {}),
    "binary_cross_entropy_with_logits": (
        flt.binary_cross_entropy_with_logits, [_t(4, 3)],
        [(_t(4, 3, seed=2) > 0).double(), _t(4, 3, seed=3, positive=True)],
        {"pos_weight": _t(3, seed=4, positive=True)}),
    "sigmoid_focal_loss": (flt.sigmoid_focal_loss, [_t(4, 3)],
                           [(_t(4, 3, seed=2) > 0).double()], {}),
    "logsumexp": (flt.logsumexp, [_t(4, 3)], [], {}),
    "entropy": (flt.entropy, [_t(4, 3)], [], {}),
    "kl_divergence": (flt.kl_divergence, [_t(4, 3), _t(4, 3, seed=2)], [], {}),
    "js_divergence": (flt.js_divergence, [_t(4, 3), _t(4, 3, seed=2)], [], {}),
    "distillation_loss": (flt.distillation_loss, [_t(4, 3)], [_t(4, 3, seed=2)],
                          {"target": _labels(4, 3), "temperature": 2.0}),
    "gaussian_kl": (flt.gaussian_kl, [_t(4, 3), _t(4, 3, seed=2), _t(4, 3, seed=3),
                                      _t(4, 3, seed=4)], [], {}),
    # covariances through (a + a^T) / 2: finite differences keep them symmetric
    "mvn_kl": (lambda mp, cp, mq, cq, **kw: flt.mvn_kl(mp, (cp + cp.mT) / 2, mq, (cq + cq.mT) / 2,
                                                       **kw),
               [_t(2, 3), _spd(2, 3, 2), _t(2, 3, seed=3), _spd(2, 3, 4)], [], {}),
    "vae_loss": (lambda r, mu, lv, x, **kw: flt.vae_loss(r, x, mu, lv, **kw),
                 [_t(4, 5), _t(4, 2, seed=2), _t(4, 2, seed=3)], [_t(4, 5, seed=4)], {}),
    "gaussian_nll_loss": (lambda x, v, t, **kw: flt.gaussian_nll_loss(x, t, v, **kw),
                          [_t(4, 3), _t(4, 3, seed=2, positive=True)], [_t(4, 3, seed=3)], {}),
    "mse_loss": (flt.mse_loss, [_t(4, 3)], [_t(4, 3, seed=2)], {}),
    "l1_loss": (flt.l1_loss, [_t(4, 3)], [_t(4, 3, seed=2)], {}),
    "huber_loss": (flt.huber_loss, [_t(4, 3)], [_t(4, 3, seed=2)], {"delta": 0.7}),
    "smooth_l1_loss": (flt.smooth_l1_loss, [_t(4, 3)], [_t(4, 3, seed=2)], {"beta": 0.7}),
    "log_cosh_loss": (flt.log_cosh_loss, [_t(4, 3)], [_t(4, 3, seed=2)], {}),
    "generalized_box_iou_loss": (flt.generalized_box_iou_loss, [_boxes(3, 1), _boxes(3, 5)],
                                 [], {}),
    "distance_box_iou_loss": (flt.distance_box_iou_loss, [_boxes(3, 1), _boxes(3, 5)], [], {}),
    "complete_box_iou_loss": (flt.complete_box_iou_loss, [_boxes(3, 1), _boxes(3, 5)], [], {}),
    "triplet_margin_loss": (flt.triplet_margin_loss,
                            [_t(4, 3), _t(4, 3, seed=2), _t(4, 3, seed=3)], [], {}),
    "batch_hard_triplet_loss": (flt.batch_hard_triplet_loss, [_t(6, 3)],
                                [torch.tensor([0, 0, 1, 1, 2, 2])], {"margin": 2.0}),
    "info_nce_loss": (flt.info_nce_loss, [_t(4, 3), _t(4, 3, seed=2)], [],
                      {"temperature": 0.5}),
    "nt_xent_loss": (flt.nt_xent_loss, [_t(4, 3), _t(4, 3, seed=2)], [], {}),
}
COUPLED = {"linear_cross_entropy", "batch_hard_triplet_loss", "info_nce_loss", "nt_xent_loss"}


def _call(case, reduction, requires_grad=True):
    fn, diff, other, opts = CASES[case]
    diff = [d.clone().requires_grad_(requires_grad) for d in diff]
    if case != "logsumexp":
        opts = dict(opts, reduction=reduction)
    return diff, (lambda *d: fn(*d, *other, **opts))


def test_every_public_loss_with_a_gradient_is_wrapped():
    no_grad = {"softmax", "log_softmax", "pairwise_distances"}
    losses = [n for n in fastloss.__all__ if callable(getattr(fastloss, n))
              and n not in no_grad and "threads" not in n and "simd" not in n
              and n not in ("show_config", "available_levels", "release_memory",
                            "set_pool_limit")]
    assert sorted(losses) == sorted(flt._SPECS)
    assert set(losses) <= set(flt.__all__)


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradcheck(case):
    if case == "complete_box_iou_loss":
        pytest.skip("alpha is a constant in its gradient (torchvision's convention)")
    reductions = ["mean"] if case == "logsumexp" else ["mean", "sum", "none"]
    for reduction in reductions:
        if reduction == "none" and case in COUPLED:
            continue
        diff, f = _call(case, reduction)
        assert torch.autograd.gradcheck(f, diff), reduction


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_as_the_numpy_call(case, monkeypatch):
    """Value and gradients: what fastloss.<name> returns on the same arrays."""
    diff, f = _call(case, "sum")
    seen = {}
    name = case.replace("_nchw", "")
    orig = getattr(fastloss, name)

    def spy(*args, **kw):
        out = orig(*args, **kw)
        seen.update(kw=kw, out=out)
        return out
    monkeypatch.setattr(fastloss, name, spy)
    loss = f(*diff)
    loss.sum().backward()
    want_loss, want_grads = seen["out"]
    np.testing.assert_array_equal(loss.detach().numpy(), want_loss)
    want_grads = want_grads if isinstance(want_grads, tuple) else (want_grads,)
    assert len(want_grads) == len(diff)
    for d, g in zip(diff, want_grads):
        np.testing.assert_array_equal(d.grad.numpy(), g)


def _op_calls():
    """(name, tensors, options repr) of a few calls of the op, inputs requiring grad where
    their gradient is asked for."""
    x, w, b = _t(5, 3).requires_grad_(), _t(4, 3, seed=2), _t(4, seed=3).requires_grad_()
    calls = [
        ("cross_entropy", [_t(3, 4, 2).requires_grad_(), torch.tensor([[0, 3], [1, 2], [3, 0]])],
         dict(axis=1, reduction="none", label_smoothing=0.1), [True]),
        ("kl_divergence", [_t(4, 3).requires_grad_(), _t(4, 3, seed=2)], dict(reduction="mean"),
         [True, False]),
        ("linear_cross_entropy", [x, w, _labels(5, 4), b], dict(reduction="sum"),
         [True, False, True]),
        ("triplet_margin_loss", [_t(4, 3).requires_grad_() for _ in range(3)],
         dict(reduction="none"), [True, True, True]),
        ("vae_loss", [_t(4, 5).requires_grad_(), _t(4, 5, seed=2), _t(4, 2, 3, seed=3).requires_grad_(),
                      _t(4, 2, 3, seed=4).requires_grad_()], dict(reduction="none"), [True, True, True]),
    ]
    for name, tensors, opts, need in calls:
        names = [n for n in flt._SPECS[name].tensors][:len(tensors)]
        if name == "linear_cross_entropy":
            names = ["input", "linear_weight", "target", "linear_bias"]
        yield name, tensors, repr(dict(opts, tensors=names, need=need))


def test_opcheck():
    for name, tensors, options in _op_calls():
        torch.library.opcheck(torch.ops.fastloss.loss.default, (name, tensors, options))


def test_eager_path_is_the_op():
    """Outside torch.compile the functions call the op's body through an autograd.Function
    (the custom op's dispatch costs more than a small batch's loss): the same loss and
    gradients as the op, for a grad_output other than 1."""
    for name, tensors, options in _op_calls():
        outs = []
        for call in (lambda t: torch.ops.fastloss.loss.default(name, t, options),
                     lambda t: flt._EagerLoss.apply(name, options, *t)):
            leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]
            loss = call(leaves)[0]
            (loss * torch.linspace(0.5, 2.0, loss.numel()).reshape(loss.shape)).sum().backward()
            outs.append([loss.detach()] + [t.grad for t in leaves if t.requires_grad])
        for a, b in zip(*outs):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    loss = flt.cross_entropy(_t(4, 3).requires_grad_(), torch.tensor([0, 1, 2, 0]))
    assert type(loss.grad_fn).__name__ == "_EagerLossBackward"


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_tracers_see_the_op():
    """make_fx and torch.jit.trace record the op (the eager path's NumPy body would be
    invisible to them: a traced graph with the loss baked in as a constant)."""
    from torch.fx.experimental.proxy_tensor import make_fx
    y = torch.tensor([0, 1, 2, 0])
    f = lambda a: flt.cross_entropy(a, y, label_smoothing=0.1)   # noqa: E731
    gm = make_fx(f)(_t(4, 3))
    assert torch.ops.fastloss.loss.default in [n.target for n in gm.graph.nodes]
    traced = torch.jit.trace(f, (_t(4, 3),))
    x = _t(4, 3, seed=5)
    assert gm(x) == f(x) and traced(x) == f(x)


# --- parity with torch.nn.functional ----------------------------------------------------------

def _grad_and_value(f, x):
    x = x.clone().requires_grad_()
    loss = f(x)
    (loss * torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
     if loss.dim() else loss).sum().backward()
    return loss.detach(), x.grad


def _assert_same(f_ours, f_torch, x, tol=1e-12):
    lo, go = _grad_and_value(f_ours, x)
    lt, gt = _grad_and_value(f_torch, x)
    torch.testing.assert_close(lo, lt, rtol=tol, atol=tol)
    torch.testing.assert_close(go, gt, rtol=tol, atol=tol)


@pytest.mark.parametrize("weight", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_as_torch(weight, ignore_index, label_smoothing, reduction):
    x, t = _t(8, 5), _labels(8, 5)
    t[0] = ignore_index
    kw = dict(weight=_t(5, seed=4, positive=True) if weight else None,
              ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    _assert_same(lambda a: flt.cross_entropy(a, t, **kw), lambda a: F.cross_entropy(a, t, **kw),
                 x)
    # PyTorch's (N, C, d1) layout and class-probability targets
    x3, t3 = _t(3, 5, 2), torch.tensor([[0, 4], [ignore_index, 2], [3, 1]])
    _assert_same(lambda a: flt.cross_entropy(a, t3, **kw),
                 lambda a: F.cross_entropy(a, t3, **kw), x3)
    if ignore_index != -100:
        return                                   # torch: not with class probabilities
    p = torch.softmax(_t(8, 5, seed=7), dim=1)
    _assert_same(lambda a: flt.cross_entropy(a, p, **kw), lambda a: F.cross_entropy(a, p, **kw),
                 x)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_other_losses_as_torch(reduction):
    x, y = _t(6, 4), _t(6, 4, seed=2)
    r = dict(reduction=reduction)
    w, pw, b = _t(6, 4, seed=3, positive=True), _t(4, seed=4, positive=True), (y > 0).double()
    pairs = [
        (lambda a: flt.binary_cross_entropy_with_logits(a, b, w, pos_weight=pw, **r),
         lambda a: F.binary_cross_entropy_with_logits(a, b, w, pos_weight=pw, **r)),
        (lambda a: flt.mse_loss(a, y, **r), lambda a: F.mse_loss(a, y, **r)),
        (lambda a: flt.l1_loss(a, y, **r), lambda a: F.l1_loss(a, y, **r)),
        (lambda a: flt.huber_loss(a, y, delta=0.5, **r),
         lambda a: F.huber_loss(a, y, delta=0.5, **r)),
        (lambda a: flt.smooth_l1_loss(a, y, beta=0.5, **r),
         lambda a: F.smooth_l1_loss(a, y, beta=0.5, **r)),
        (lambda a: flt.gaussian_nll_loss(a, y, w, full=True, **r),
         lambda a: F.gaussian_nll_loss(a, y, w, full=True, **r)),
        (lambda a: flt.gaussian_nll_loss(y, x, a.abs() + 0.1, **r),
         lambda a: F.gaussian_nll_loss(y, x, a.abs() + 0.1, **r)),
        (lambda a: flt.triplet_margin_loss(a, y, w, margin=2.0, swap=True, **r),
         lambda a: F.triplet_margin_loss(a, y, w, margin=2.0, swap=True, **r)),
        (lambda a: flt.triplet_margin_loss(y, a, w, margin=2.0, p=1.0, **r),
         lambda a: F.triplet_margin_loss(y, a, w, margin=2.0, p=1.0, **r)),
    ]
    for ours, theirs in pairs:
        _assert_same(ours, theirs, x)
    if reduction == "mean":
        _assert_same(lambda a: flt.logsumexp(a, 1, keepdim=True),
                     lambda a: torch.logsumexp(a, 1, keepdim=True), x)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_cross_entropy_as_torch(reduction):
    h, w, b, t = _t(7, 3), _t(5, 3, seed=2), _t(5, seed=3), _labels(7, 5)
    t[1] = -100
    grads = []
    for f in (flt.linear_cross_entropy, F.linear_cross_entropy):
        args = [a.clone().requires_grad_() for a in (h, w, b)]
        loss = f(args[0], args[1], t, linear_bias=args[2], reduction=reduction,
                 ignore_index=-100, label_smoothing=0.1)
        loss.backward()
        grads.append([loss.detach()] + [a.grad for a in args])
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_modules_as_torch():
    x, y, v = _t(6, 4), _t(6, 4, seed=2), _t(6, 4, seed=3, positive=True)
    t, w = _labels(6, 4), _t(4, seed=4, positive=True)
    pairs = [
        ("CrossEntropyLoss", dict(weight=w, ignore_index=1, label_smoothing=0.1), (t,)),
        ("BCEWithLogitsLoss", dict(pos_weight=w, reduction="sum"), ((y > 0).double(),)),
        ("MSELoss", dict(reduction="none"), (y,)), ("L1Loss", {}, (y,)),
        ("HuberLoss", dict(delta=0.5), (y,)), ("SmoothL1Loss", dict(beta=0.5), (y,)),
        ("GaussianNLLLoss", dict(full=True), (y, v)),
        ("TripletMarginLoss", dict(margin=2.0, p=1.0, swap=True), (y, v)),
    ]
    for name, kw, rest in pairs:
        ours, theirs = getattr(flt, name)(**kw), getattr(torch.nn, name)(**kw)
        assert isinstance(ours, type(theirs))
        _assert_same(lambda a: ours(a, *rest), lambda a: theirs(a, *rest), x)


# --- autograd semantics --------------------------------------------------------------------------

def test_scaled_accumulated_and_retained_backward():
    x, t = _t(6, 5).requires_grad_(), _labels(6, 5)
    flt.cross_entropy(x, t).backward()
    g1 = x.grad
    g1_copy = g1.clone()
    x.grad = None
    (3 * flt.cross_entropy(x, t)).backward()
    torch.testing.assert_close(x.grad, 3 * g1_copy, rtol=1e-15, atol=0)
    x.grad = None
    flt.cross_entropy(x * 2, t).backward()       # a second call: the first .grad unchanged
    assert torch.equal(g1, g1_copy)
    x.grad = None
    loss = flt.cross_entropy(x, t)
    loss.backward(retain_graph=True)
    loss.backward(retain_graph=True)             # twice: accumulated, the saved one intact
    torch.testing.assert_close(x.grad, 2 * g1_copy, rtol=1e-15, atol=0)
    (0.5 * loss).backward()
    torch.testing.assert_close(x.grad, 2.5 * g1_copy, rtol=1e-15, atol=0)
    y = x * 1.0                                  # a non-leaf gradient, twice through the graph
    (flt.cross_entropy(y, t) + flt.cross_entropy(y, t)).backward()


def test_coupled_losses_with_reduction_none():
    """A batch-coupled "none" loss takes a uniform grad_output only."""
    diff, f = _call("info_nce_loss", "none")
    f(*diff).mean().backward()
    want, f_mean = _call("info_nce_loss", "mean")
    f_mean(*want).backward()
    torch.testing.assert_close(diff[0].grad, want[0].grad, rtol=1e-14, atol=1e-15)
    loss = f(*diff)
    with pytest.raises(RuntimeError, match="grad_output with one value"):
        (loss * torch.arange(loss.numel())).sum().backward()
    # a broadcast input couples the samples too
    x, v = _t(4, 3).requires_grad_(), _t(4, 1, positive=True).requires_grad_()
    loss = flt.gaussian_nll_loss(x, _t(4, 3, seed=2), v, reduction="none")
    with pytest.raises(RuntimeError, match="grad_output with one value"):
        (loss * torch.arange(loss.numel()).reshape(loss.shape)).sum().backward()


@pytest.mark.parametrize("n", [3, 4])
def test_broadcast_inputs_with_reduction_none(n):
    """An input broadcast over the samples (a shared prior mean, one covariance for the
    batch) couples them: backward takes a uniform grad_output only and gives the "sum"
    call's gradient, also where the batch is as long as the input's own axis (n = 3: the
    shapes line up by accident)."""
    calls = [
        (lambda mu, lv, **kw: flt.gaussian_kl(mu, lv, **kw), [_t(3), _t(n, 3, seed=2)]),
        (lambda mp, cp, **kw: flt.mvn_kl(mp, cp, _t(n, 3, seed=3), _spd(n, 3, 4), **kw),
         [_t(n, 3), _spd(1, 3, 2)[0]]),
    ]
    for f, tensors in calls:
        leaves = [t.clone().requires_grad_() for t in tensors]
        loss = f(*leaves, reduction="none")
        weights = torch.arange(loss.numel(), dtype=loss.dtype).reshape(loss.shape)
        with pytest.raises(RuntimeError, match="grad_output with one value"):
            (loss * weights).sum().backward(retain_graph=True)
        (2 * loss).sum().backward()
        want = [t.clone().requires_grad_() for t in tensors]
        (2 * f(*want, reduction="sum")).backward()
        for a, b in zip(leaves, want):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-14, atol=1e-15)


def test_logsumexp_takes_one_dim():
    with pytest.raises(TypeError, match="dim must be one int"):
        flt.logsumexp(_t(3, 4), dim=(0, 1))


def _recording(monkeypatch, name):
    calls = []
    orig = getattr(fastloss, name)

    def spy(*args, **kw):
        calls.append({k: kw.get(k) for k in ("return_grad", "grad_wrt")})
        return orig(*args, **kw)
    monkeypatch.setattr(fastloss, name, spy)
    return calls


def test_no_gradient_work_without_requires_grad(monkeypatch):
    calls = _recording(monkeypatch, "cross_entropy")
    x, t = _t(6, 5), _labels(6, 5)
    flt.cross_entropy(x, t)
    with torch.no_grad():
        flt.cross_entropy(x.requires_grad_(), t)
    with torch.inference_mode():
        flt.cross_entropy(x, t)
    flt.cross_entropy(x, t)
    assert [c["return_grad"] for c in calls] == [None, None, None, True]
    # a frozen head: only the input's product
    calls = _recording(monkeypatch, "linear_cross_entropy")
    h, w = _t(6, 3).requires_grad_(), _t(5, 3, seed=2)
    flt.linear_cross_entropy(h, w, _labels(6, 5)).backward()
    assert calls[-1] == dict(return_grad=True, grad_wrt=("input",))
    assert w.grad is None and h.grad.shape == h.shape
    # one of two differentiable inputs: its gradient only reaches it
    p, q = _t(4, 3).requires_grad_(), _t(4, 3, seed=2)
    flt.kl_divergence(p, q).backward()
    assert q.grad is None and p.grad is not None


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    x, t = _t(6, 5).to(dtype).requires_grad_(), _labels(6, 5)
    loss = flt.cross_entropy(x, t)
    loss.backward()
    assert loss.dtype == torch.float32 and x.grad.dtype == dtype
    want = fastloss.cross_entropy(x.detach().float().numpy(), t.numpy(), axis=1,
                                  return_grad=True)
    assert loss.item() == want[0]
    torch.testing.assert_close(x.grad, torch.from_numpy(want[1]).to(dtype), rtol=0, atol=0)


def test_bad_arguments():
    x, t = _t(6, 5), _labels(6, 5)
    with pytest.raises(ValueError, match="logits is on device meta"):
        flt.cross_entropy(x.to("meta"), t)
    with pytest.raises(ValueError, match="target is on device meta"):
        flt.mse_loss(x, x.to("meta"))
    with pytest.raises(ValueError, match="target requires grad"):
        flt.mse_loss(x, x.clone().requires_grad_())
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        flt.mse_loss(x, x.numpy())
    with pytest.raises(ValueError, match="reduction"):
        flt.mse_loss(x, x, reduction="avg")
    with pytest.raises(ValueError, match="delta must be finite"):
        flt.huber_loss(x, x, delta=float("inf"))


def test_torch_compile():
    x, t = _t(6, 5), _labels(6, 5)

    def step(a, b):
        return flt.cross_entropy(a * 2, b, label_smoothing=0.1)
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    got, want = _grad_and_value(lambda a: compiled(a, t), x), _grad_and_value(
        lambda a: step(a, t), x)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-15, atol=0)
    # a batch-coupled "none" loss: the uniform-grad_output check runs in the compiled graph
    q, k = _t(4, 3).requires_grad_(), _t(4, 3, seed=2)
    nce = torch.compile(lambda a, b: flt.info_nce_loss(a, b, reduction="none"),
                        backend="aot_eager", fullgraph=True)
    nce(q, k).mean().backward()
    with pytest.raises(RuntimeError, match="grad_output with one value"):
        (nce(q, k) * torch.arange(4)).sum().backward()
