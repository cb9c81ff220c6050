"""fastloss as differentiable PyTorch ops on CPU tensors (the optional extra `fastloss[torch]`).

    import fastloss.torch as flt
    loss = flt.cross_entropy(logits, labels)  # (N, C) or (N, C, d1, ...), as F.cross_entropy
    loss.backward()                               # the gradient fastloss computed with the loss

Each function calls the fastloss function of the same name on zero-copy NumPy views of the
tensors and adds no semantics of its own: the same values and gradients as the NumPy call.
Where PyTorch (or torchvision) has the loss, the function has its name and signature (options
that follow PyTorch's deprecated size_average/reduce are keyword-only here); the others keep
fastloss's names and signatures (kl_divergence takes logits, as fastloss does: it is not
torch's kl_div). The nn.Module drop-ins subclass their torch.nn namesakes.

- One opaque op, torch.ops.fastloss.loss (torch.library.custom_op, with register_fake and
  register_autograd), so torch.compile (torch.jit.trace, make_fx) keeps it as one node;
  called eagerly on plain tensors, the same body and backward run as a
  torch.autograd.Function, whose dispatch costs less than the custom op's (most of a small
  batch's time). The loss and its gradient come
  from one fused fastloss call in forward; backward scales the saved gradient by the incoming
  one: grad_output == 1 returns it as is, otherwise one multiply.
- Gradient work only for inputs that require grad (none under torch.no_grad). An input that
  fastloss has no gradient for (targets, weights) must not require grad: ValueError.
- dtypes: floating tensors are promoted together (torch's rule), float16/bfloat16 to float32,
  computed there; the loss comes back in that compute dtype (fastloss's rule for float16),
  the gradients in each input's own dtype.
- CPU tensors only: a CUDA or meta tensor is a ValueError naming the argument.
- reduction="none": the gradient of each per-sample loss must touch only its own sample,
  which holds for the elementwise and row-wise losses; for the losses that couple a batch
  (linear_cross_entropy's weight, batch_hard_triplet_loss, info_nce_loss, nt_xent_loss,
  broadcast inputs) backward takes only a grad_output with one value everywhere
  (loss.sum(), loss.mean()), and raises otherwise.

Threads: fastloss takes its default count from OpenMP, as PyTorch does (libgomp). Until
fastloss.set_num_threads is called, fastloss uses OpenMP's setting, so torch.set_num_threads(n)
sets fastloss's threads too; fastloss.set_num_threads(n) then pins fastloss's own count
(torch's is left alone).

Example (the value and the gradient of the NumPy call, through autograd):

>>> import torch
>>> import fastloss.torch as flt
>>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]], requires_grad=True)
>>> loss = flt.cross_entropy(logits, torch.tensor([0, 1]))
>>> (3 * loss).backward()
>>> print(round(loss.item(), 4), (logits.grad[0] / 3).numpy().round(4))
0.3964 [-0.1072  0.0876  0.0196]
"""
import ast
import functools
import math
from collections import namedtuple

import numpy as np
import torch

import fastloss as _fl

__all__ = [
    "cross_entropy", "linear_cross_entropy", "binary_cross_entropy_with_logits",
    "sigmoid_focal_loss", "logsumexp", "entropy", "kl_divergence", "js_divergence",
    "distillation_loss", "gaussian_kl", "mvn_kl", "vae_loss", "gaussian_nll_loss",
    "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "log_cosh_loss",
    "generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss",
    "triplet_margin_loss", "batch_hard_triplet_loss", "info_nce_loss", "nt_xent_loss",
    "CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "L1Loss", "HuberLoss",
    "SmoothL1Loss", "GaussianNLLLoss", "TripletMarginLoss",
]

# --- the table: each fastloss function once ------------------------------------------------

# tensors: the fastloss argument names that take tensors, in order; diff: those fastloss
# returns gradients for (its gradient tuple's order); none: how a reduction="none" loss
# lines up with the gradients: "axis" (the class axis option is removed), "lead" (the loss
# is the leading dims of each input), "batch" (a sample's loss depends on the whole batch);
# shape: the reduction="none" loss shape from the tensors' shapes and the options;
# event ("lead"): the trailing dims of a differentiable input that are not the loss's, for
# all of them or by name; None: the loss is each input's axis 0 (vae_loss).
_Spec = namedtuple("_Spec", "tensors diff none shape event", defaults=(0,))


def _bcast(*names):
    return lambda s, o: torch.broadcast_shapes(*(s[n] for n in names if n in s))


def _drop_axis(*names):
    def shape(s, o):
        full = torch.broadcast_shapes(*(s[n] for n in names))
        axis = o["axis"] % len(full) if full else 0
        return full[:axis] + full[axis + 1:]
    return shape


def _lead(name, dims=-1):
    return lambda s, o: s[name][:dims]


_ELEMENTWISE = _Spec(("input", "target", "weight"), ("input",), "lead",
                     _bcast("input", "target", "weight"))
_BOXES = _Spec(("boxes1", "boxes2"), ("boxes1", "boxes2"), "lead",
               lambda s, o: torch.broadcast_shapes(s["boxes1"], s["boxes2"])[:-1], 1)
_SPECS = {
    "cross_entropy": _Spec(("logits", "target", "weight"), ("logits",), "axis",
                           _drop_axis("logits")),
    "linear_cross_entropy": _Spec(
        ("input", "linear_weight", "target", "linear_bias", "weight"),
        ("input", "linear_weight", "linear_bias"), "batch", _lead("input")),
    "binary_cross_entropy_with_logits": _Spec(
        ("logits", "target", "weight", "pos_weight"), ("logits",), "lead",
        _bcast("logits", "target", "weight", "pos_weight")),
    "sigmoid_focal_loss": _Spec(("logits", "target"), ("logits",), "lead",
                                _bcast("logits", "target")),
    "logsumexp": _Spec(("x",), ("x",), "axis", _drop_axis("x")),
    "entropy": _Spec(("logits",), ("logits",), "axis", _drop_axis("logits")),
    "kl_divergence": _Spec(("p_logits", "q_logits"), ("p_logits", "q_logits"), "axis",
                           _drop_axis("p_logits", "q_logits")),
    "js_divergence": _Spec(("p_logits", "q_logits"), ("p_logits", "q_logits"), "axis",
                           _drop_axis("p_logits", "q_logits")),
    "distillation_loss": _Spec(("student_logits", "teacher_logits", "target"),
                               ("student_logits",), "axis",
                               _drop_axis("student_logits", "teacher_logits")),
    "gaussian_kl": _Spec(("mu_p", "logvar_p", "mu_q", "logvar_q"),
                         ("mu_p", "logvar_p", "mu_q", "logvar_q"), "lead",
                         lambda s, o: torch.broadcast_shapes(*s.values())[:-1], 1),
    "mvn_kl": _Spec(("mu_p", "cov_p", "mu_q", "cov_q"), ("mu_p", "cov_p", "mu_q", "cov_q"),
                    "lead", _lead("mu_p"), {"mu_p": 1, "cov_p": 2, "mu_q": 1, "cov_q": 2}),
    "vae_loss": _Spec(("recon", "x", "mu", "logvar"), ("recon", "mu", "logvar"), "lead",
                      _lead("mu", 1), None),
    "gaussian_nll_loss": _Spec(("input", "target", "var"), ("input", "var"), "lead",
                               _bcast("input", "target", "var")),
    "mse_loss": _ELEMENTWISE, "l1_loss": _ELEMENTWISE, "huber_loss": _ELEMENTWISE,
    "smooth_l1_loss": _ELEMENTWISE, "log_cosh_loss": _ELEMENTWISE,
    "generalized_box_iou_loss": _BOXES, "distance_box_iou_loss": _BOXES,
    "complete_box_iou_loss": _BOXES,
    "triplet_margin_loss": _Spec(("anchor", "positive", "negative"),
                                 ("anchor", "positive", "negative"), "lead",
                                 lambda s, o: torch.broadcast_shapes(*s.values())[:-1], 1),
    "batch_hard_triplet_loss": _Spec(("embeddings", "labels"), ("embeddings",), "batch",
                                     _lead("embeddings", 1)),
    "info_nce_loss": _Spec(("query", "key"), ("query", "key"), "batch", _lead("query", 1)),
    "nt_xent_loss": _Spec(("z1", "z2"), ("z1", "z2"), "batch",
                          lambda s, o: (2 * s["z1"][0],)),
}


# the argument that takes integer class labels (kept as they are; floating: probabilities)
_LABELS = {"cross_entropy": "target", "linear_cross_entropy": "target",
           "distillation_loss": "target", "batch_hard_triplet_loss": "labels"}


# --- the op ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _parse(options):
    """The options repr read back, once per distinct string (ast.literal_eval: ~45 us,
    twice a call: the body and its autograd context)."""
    opts = ast.literal_eval(options)
    return opts, tuple(opts.pop("tensors")), tuple(opts.pop("need"))


def _unpack(name, options):
    """(spec, fastloss keyword options (a fresh dict), names of the given tensors, their
    gradient flags)."""
    opts, names, need = _parse(options)
    return _SPECS[name], dict(opts), names, need


def _grad_names(spec, names):
    return [n for n in spec.diff if n in names]


def _loss_shape(spec, opts, shapes):
    if opts.get("reduction", "none") == "none":
        return tuple(spec.shape(shapes, opts))
    return ()


def _loss(name: str, tensors: list[torch.Tensor], options: str) -> list[torch.Tensor]:
    """[loss, one gradient per differentiable tensor given (empty where not needed)]:
    fastloss.<name> on NumPy views of the tensors. The body of the op (_loss_op) and of
    its eager path (_EagerLoss)."""
    spec, opts, names, need = _unpack(name, options)
    arrays = {n: t.detach().numpy() for n, t in zip(names, tensors)}
    grad_names = _grad_names(spec, names)
    wanted = [n for n, k in zip(grad_names, need) if k]
    if wanted:
        opts["return_grad"] = True
        if name == "linear_cross_entropy":
            opts["grad_wrt"] = tuple(wanted)   # skips the products nobody asked for
    out = getattr(_fl, name)(**arrays, **opts)
    loss, grads = out if wanted else (out, ())
    grads = grads if isinstance(grads, tuple) else (grads,)
    if name != "linear_cross_entropy":
        grads = [g for g, k in zip(grads, need) if k]
    got = dict(zip(wanted, grads))
    byname = dict(zip(names, tensors))
    loss = _as_tensor(np.asarray(loss))
    return [loss] + [_as_tensor(got[n], _grad_strides(byname[n], spec, opts)) if n in got
                     else loss.new_empty(0) for n in grad_names]


_loss_op = torch.library.custom_op("fastloss::loss", _loss, mutates_args=(), device_types="cpu")


def _as_tensor(a, strides=None):
    """The fresh array a as a tensor, copied into the given strides (register_fake's
    layout) if it has others; a read-only array (a broadcast view) is copied."""
    t = torch.from_numpy(a if a.flags.writeable else a.copy())
    if strides is not None and t.stride() != strides:
        return torch.empty_strided(t.shape, strides, dtype=t.dtype).copy_(t)
    return t


def _grad_strides(t, spec, opts):
    """fastloss's gradient layout for input t: C order, with the class axis last in
    memory for the row-wise losses (whatever t's own strides)."""
    shape = list(t.shape)
    order = list(range(len(shape)))            # dims from the slowest to the fastest
    if spec.none == "axis" and shape:
        axis = opts.get("axis", -1) % len(shape)
        order = order[:axis] + order[axis + 1:] + [axis]
    strides, step = [0] * len(shape), 1
    for d in reversed(order):
        strides[d], step = step, step * max(shape[d], 1)
    return tuple(strides)


@_loss_op.register_fake
def _(name, tensors, options):
    spec, opts, names, need = _unpack(name, options)
    byname = dict(zip(names, tensors))
    dtype = next(t.dtype for t in tensors if t.is_floating_point())
    loss = tensors[0].new_empty(_loss_shape(spec, opts, {n: t.shape for n, t in byname.items()}),
                                dtype=dtype)
    return [loss] + [loss.new_empty_strided(byname[n].shape,
                                            _grad_strides(byname[n], spec, opts)) if k
                     else loss.new_empty(0) for n, k in zip(_grad_names(spec, names), need)]


def _setup_context(ctx, inputs, output):
    name, tensors, options = inputs
    spec, opts, names, need = _unpack(name, options)
    ctx.name, ctx.spec, ctx.opts, ctx.names = name, spec, opts, names
    ctx.save_for_backward(*output[1:])
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)   # else backward gets full-size zeros for the gradients


def _per_sample(ctx, name, g, go):
    """go shaped to multiply the gradient g of input `name` when each sample's loss touches
    only its own slice of that input (reduction="none", the input not broadcast over the
    samples: g's dims are the loss's and then the input's own); None otherwise."""
    spec = ctx.spec
    if spec.none == "axis" and g.dim() == go.dim() + 1:
        axis = ctx.opts["axis"] % g.dim()
        if g.shape[:axis] + g.shape[axis + 1:] == go.shape:
            return go.unsqueeze(axis)
    elif spec.none == "lead":
        event = spec.event.get(name) if isinstance(spec.event, dict) else spec.event
        event = g.dim() - go.dim() if event is None else event
        if g.dim() == go.dim() + event and g.shape[:go.dim()] == go.shape:
            return go.reshape(go.shape + (1,) * event)
    return None


def _scale(ctx, name, g, go):
    """The gradient g of (the sum of) the losses with respect to input `name`, scaled by
    the incoming gradient go."""
    # values are known only in eager mode: traced (fake, functional) tensors take the
    # branch-free path
    compiling = type(go) is not torch.Tensor or torch.compiler.is_compiling()
    if go.dim() == 0 or ctx.opts.get("reduction", "none") != "none":
        if not compiling and go.item() == 1.0:
            return g                           # loss.backward(): the saved gradient as is
        return g * go
    go_b = _per_sample(ctx, name, g, go)
    if go_b is not None:
        return g * go_b
    first = go.reshape(-1)[:1]
    msg = (f"fastloss.torch.{ctx.name}: with reduction='none' the gradient of one sample's "
           "loss reaches other samples (or a broadcast input), so backward takes only a "
           "grad_output with one value everywhere (loss.sum(), loss.mean())")
    uniform = (go == first).all()
    if compiling:
        torch._assert_async(uniform, msg)      # checked when the compiled graph runs
    elif not uniform:
        raise RuntimeError(msg)
    return g * first.reshape(())


def _backward(ctx, grads):
    go = grads[0]
    if go is None:                     # no gradient reached the loss (undefined: zero)
        return None, [None] * len(ctx.names), None
    saved = dict(zip(_grad_names(ctx.spec, ctx.names), ctx.saved_tensors))
    # an empty saved gradient: not asked for (or an empty input, whose gradient is empty)
    return None, [_scale(ctx, n, saved[n], go) if n in saved and saved[n].numel() else None
                  for n in ctx.names], None


torch.library.register_autograd("fastloss::loss", _backward, setup_context=_setup_context)


class _EagerLoss(torch.autograd.Function):
    """The op's eager path: the same body, context and backward as an autograd.Function.
    The custom op's dispatch and autograd wrapping cost more than a small batch's loss (a
    (64, 10) cross-entropy forward and backward: 510-740 us through the op, 210-250 us
    here, F.cross_entropy 74 us: bench/torch_training_step.py --part c); torch.compile
    and the other tracers take the op itself (_tracing)."""

    @staticmethod
    def forward(ctx, name, options, *tensors):   # no setup_context: apply would inspect.signature
        out = _loss(name, list(tensors), options)
        _setup_context(ctx, (name, tensors, options), out)
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        return (None, None, *_backward(ctx, grads)[1])


# --- the call: checks, dtypes, options --------------------------------------------------------

def _call(name, tensors, **options):
    """fastloss.<name> on the given tensors (None: not given) as one differentiable op."""
    spec = _SPECS[name]
    given = {n: t for n, t in tensors.items() if t is not None}
    where = f"fastloss.torch.{name}:"
    for n, t in given.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{where} {n} must be a torch.Tensor, got {type(t).__name__}")
        if t.device.type != "cpu":
            raise ValueError(f"{where} {n} is on device {t.device}; fastloss.torch computes "
                             "on CPU tensors only (move it with .cpu(), or use torch's loss)")
        if t.requires_grad and n not in spec.diff and torch.is_grad_enabled():
            raise ValueError(f"{where} {n} requires grad, but fastloss.{name} has no "
                             "gradient for it; detach it")
    # every tensor but integer class labels in one compute dtype: torch's type promotion
    # over the floating ones, at least float32 (half precision is computed in float32)
    cast = [n for n, t in given.items()
            if not (n == _LABELS.get(name) and not t.is_floating_point())]
    dtype = torch.float32
    for n in cast:
        if given[n].is_floating_point():
            dtype = torch.promote_types(dtype, given[n].dtype)
    dtype = dtype if dtype == torch.float64 else torch.float32
    given = {n: t.to(dtype) if n in cast and t.dtype != dtype else t for n, t in given.items()}
    grad_on = torch.is_grad_enabled()
    need = [grad_on and given[n].requires_grad for n in spec.diff if n in given]
    for k, v in options.items():
        if isinstance(v, float) and not math.isfinite(v):
            # the op's options travel as a repr (torch.compile traces it), read back by
            # ast.literal_eval, which has no literal for inf or nan
            raise ValueError(f"{where} {k} must be finite in fastloss.torch, got {v}")
    opts = repr(dict(options, tensors=list(given), need=need))
    if _tracing(given.values()):
        return _loss_op(name, list(given.values()), opts)[0]
    return _EagerLoss.apply(name, opts, *given.values())[0]


def _tracing(tensors):
    """Whether a tracer may see the call (torch.compile, torch.jit.trace, make_fx, fake or
    other subclassed tensors): it takes the op, one node to them, not _EagerLoss, whose
    forward they cannot follow into NumPy."""
    return (torch.compiler.is_compiling() or torch.jit.is_tracing()
            or torch._C._len_torch_dispatch_stack() > 0
            or any(type(t) not in (torch.Tensor, torch.nn.Parameter) for t in tensors))


# --- PyTorch's names and signatures -----------------------------------------------------------

def cross_entropy(input, target, weight=None, *, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, z_loss=0.0, softcap=None):
    """F.cross_entropy: input (N, C) or (N, C, d1, ...) (class axis 1), (C,) unbatched;
    integer labels, or class probabilities when target is floating. z_loss, softcap: as
    fastloss.cross_entropy."""
    return _call("cross_entropy", dict(logits=input, target=target, weight=weight),
                 axis=1 if input.dim() > 1 else 0, ignore_index=ignore_index,
                 reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss,
                 softcap=softcap)


def linear_cross_entropy(input, linear_weight, target, *, linear_bias=None, weight=None,
                         reduction="mean", ignore_index=-100, label_smoothing=0.0, z_loss=0.0,
                         softcap=None):
    """F.linear_cross_entropy: cross_entropy(input @ linear_weight.T + linear_bias, target)
    without the (N, V) logits, by fastloss.linear_cross_entropy (blocks of tokens, NumPy's
    BLAS); gradients to input, linear_weight and linear_bias, each only when it requires grad."""
    return _call("linear_cross_entropy", dict(input=input, linear_weight=linear_weight,
                                              target=target, linear_bias=linear_bias,
                                              weight=weight),
                 reduction=reduction, ignore_index=ignore_index,
                 label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap)


def binary_cross_entropy_with_logits(input, target, weight=None, *, reduction="mean",
                                     pos_weight=None):
    """F.binary_cross_entropy_with_logits."""
    return _call("binary_cross_entropy_with_logits",
                 dict(logits=input, target=target, weight=weight, pos_weight=pos_weight),
                 reduction=reduction)


def sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2.0, reduction="none"):
    """torchvision.ops.sigmoid_focal_loss (its default reduction, "none")."""
    return _call("sigmoid_focal_loss", dict(logits=inputs, target=targets), alpha=alpha,
                 gamma=gamma, reduction=reduction)


def logsumexp(input, dim=-1, keepdim=False):
    """torch.logsumexp over one dim."""
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"fastloss.torch.logsumexp: dim must be one int, got {dim!r}")
    out = _call("logsumexp", dict(x=input), axis=dim)
    return out.unsqueeze(dim) if keepdim else out


def mse_loss(input, target, *, reduction="mean", weight=None):
    """F.mse_loss."""
    return _call("mse_loss", dict(input=input, target=target, weight=weight),
                 reduction=reduction)


def l1_loss(input, target, *, reduction="mean", weight=None):
    """F.l1_loss."""
    return _call("l1_loss", dict(input=input, target=target, weight=weight),
                 reduction=reduction)


def huber_loss(input, target, reduction="mean", delta=1.0, weight=None):
    """F.huber_loss; with a weight, reduction="mean" is sum(w l) / sum(w) (fastloss's rule
    for every regression loss, as F.mse_loss and F.l1_loss), where F.huber_loss takes
    mean(w l)."""
    return _call("huber_loss", dict(input=input, target=target, weight=weight), delta=delta,
                 reduction=reduction)


def smooth_l1_loss(input, target, *, reduction="mean", beta=1.0):
    """F.smooth_l1_loss."""
    return _call("smooth_l1_loss", dict(input=input, target=target), beta=beta,
                 reduction=reduction)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """F.gaussian_nll_loss (var a tensor, or a float for one variance everywhere)."""
    if not isinstance(var, torch.Tensor):
        var = torch.full((1,), float(var), dtype=input.dtype)
    return _call("gaussian_nll_loss", dict(input=input, target=target, var=var), full=full,
                 eps=eps, reduction=reduction)


def triplet_margin_loss(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False,
                        *, reduction="mean", squared=False):
    """F.triplet_margin_loss; squared: as fastloss.triplet_margin_loss."""
    return _call("triplet_margin_loss",
                 dict(anchor=anchor, positive=positive, negative=negative), margin=margin,
                 p=p, eps=eps, swap=swap, squared=squared, reduction=reduction)


def _box_loss(name):
    def loss(boxes1, boxes2, reduction="none", eps=1e-7):
        return _call(name, dict(boxes1=boxes1, boxes2=boxes2), eps=eps, reduction=reduction)
    loss.__name__ = loss.__qualname__ = name
    loss.__doc__ = f"torchvision.ops.{name} (boxes (N, 4) as x1, y1, x2, y2)."
    return loss


generalized_box_iou_loss = _box_loss("generalized_box_iou_loss")
distance_box_iou_loss = _box_loss("distance_box_iou_loss")
complete_box_iou_loss = _box_loss("complete_box_iou_loss")


# --- fastloss's own names and signatures ------------------------------------------------------

def entropy(logits, *, axis=-1, reduction="mean"):
    """fastloss.entropy."""
    return _call("entropy", dict(logits=logits), axis=axis, reduction=reduction)


def kl_divergence(p_logits, q_logits, *, axis=-1, temperature=1.0, reduction="mean"):
    """fastloss.kl_divergence (of logits; not torch's kl_div, which takes log-probabilities)."""
    return _call("kl_divergence", dict(p_logits=p_logits, q_logits=q_logits), axis=axis,
                 temperature=temperature, reduction=reduction)


def js_divergence(p_logits, q_logits, *, beta=0.5, axis=-1, temperature=1.0,
                  reduction="mean"):
    """fastloss.js_divergence."""
    return _call("js_divergence", dict(p_logits=p_logits, q_logits=q_logits), beta=beta,
                 axis=axis, temperature=temperature, reduction=reduction)


def distillation_loss(student_logits, teacher_logits, *, temperature=1.0, target=None,
                      alpha=0.5, axis=-1, ignore_index=-100, reduction="mean"):
    """fastloss.distillation_loss (gradient to the student)."""
    return _call("distillation_loss", dict(student_logits=student_logits,
                                           teacher_logits=teacher_logits, target=target),
                 temperature=temperature, alpha=alpha, axis=axis, ignore_index=ignore_index,
                 reduction=reduction)


def gaussian_kl(mu_p, logvar_p, mu_q=None, logvar_q=None, *, reduction="mean"):
    """fastloss.gaussian_kl."""
    return _call("gaussian_kl", dict(mu_p=mu_p, logvar_p=logvar_p, mu_q=mu_q,
                                     logvar_q=logvar_q), reduction=reduction)


def mvn_kl(mu_p, cov_p, mu_q, cov_q, *, reduction="mean"):
    """fastloss.mvn_kl."""
    return _call("mvn_kl", dict(mu_p=mu_p, cov_p=cov_p, mu_q=mu_q, cov_q=cov_q),
                 reduction=reduction)


def vae_loss(recon, x, mu, logvar, *, recon_loss="mse", beta=1.0, reduction="mean"):
    """fastloss.vae_loss (gradients to recon, mu, logvar)."""
    return _call("vae_loss", dict(recon=recon, x=x, mu=mu, logvar=logvar),
                 recon_loss=recon_loss, beta=beta, reduction=reduction)


def log_cosh_loss(input, target, *, weight=None, reduction="mean"):
    """fastloss.log_cosh_loss."""
    return _call("log_cosh_loss", dict(input=input, target=target, weight=weight),
                 reduction=reduction)


def batch_hard_triplet_loss(embeddings, labels, *, margin=1.0, squared=False, mining="hard",
                            reduction="mean"):
    """fastloss.batch_hard_triplet_loss."""
    return _call("batch_hard_triplet_loss", dict(embeddings=embeddings, labels=labels),
                 margin=margin, squared=squared, mining=mining, reduction=reduction)


def info_nce_loss(query, key, *, temperature=0.07, symmetric=False, normalize=True,
                  reduction="mean"):
    """fastloss.info_nce_loss."""
    return _call("info_nce_loss", dict(query=query, key=key), temperature=temperature,
                 symmetric=symmetric, normalize=normalize, reduction=reduction)


def nt_xent_loss(z1, z2, *, temperature=0.5, reduction="mean"):
    """fastloss.nt_xent_loss."""
    return _call("nt_xent_loss", dict(z1=z1, z2=z2), temperature=temperature,
                 reduction=reduction)


# --- nn.Module drop-ins: torch.nn's classes (constructor, state) with fastloss's forward -------

class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    def forward(self, input, target):
        return cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    def forward(self, input, target):
        return binary_cross_entropy_with_logits(input, target, self.weight,
                                                reduction=self.reduction,
                                                pos_weight=self.pos_weight)


class MSELoss(torch.nn.MSELoss):
    def forward(self, input, target):
        return mse_loss(input, target, reduction=self.reduction)


class L1Loss(torch.nn.L1Loss):
    def forward(self, input, target):
        return l1_loss(input, target, reduction=self.reduction)


class HuberLoss(torch.nn.HuberLoss):
    def forward(self, input, target):
        return huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class SmoothL1Loss(torch.nn.SmoothL1Loss):
    def forward(self, input, target):
        return smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class GaussianNLLLoss(torch.nn.GaussianNLLLoss):
    def forward(self, input, target, var):
        return gaussian_nll_loss(input, target, var, full=self.full, eps=self.eps,
                                 reduction=self.reduction)


class TripletMarginLoss(torch.nn.TripletMarginLoss):
    def forward(self, anchor, positive, negative):
        return triplet_margin_loss(anchor, positive, negative, self.margin, self.p, self.eps,
                                   self.swap, reduction=self.reduction)
