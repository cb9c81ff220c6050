"""fastloss in JAX: the losses as JAX functions, differentiable and usable under jit, grad
and vmap (the optional extra `fastloss[jax]`; CPU only: the kernels run on the host).

    import jax, fastloss.jax as flj
    loss = flj.cross_entropy(logits, labels)                          # a 0-d jax.Array
    loss, g = jax.jit(jax.value_and_grad(flj.cross_entropy))(logits, labels)

Each function takes the arguments of the fastloss function of the same name, except
return_grad and grad_out (use jax.grad); it calls that function from inside the XLA
computation and adds no semantics of its own: the value is the NumPy call's, in its
compute dtype. The call goes through jax.experimental.buffer_callback where jax has it
(fastloss writes the loss and gradients straight into the buffers XLA returns), else
through jax.pure_callback (which copies the inputs and outputs: at (2048, 32000) float32
that costs more than the loss itself).

- Gradients: jax.custom_vjp. When an input is differentiated, the forward pass makes one
  fused fastloss call (return_grad=True) and keeps the gradients; the backward pass scales
  them by the cotangent (a scalar, or one per row / element for reduction="none"). A call
  that nothing differentiates computes the loss only.
- Differentiable inputs are those fastloss returns gradients for (listed in each
  function's docstring), plus `target` of the regression losses and gaussian_nll_loss
  (minus the input's gradient, as fastloss documents). Differentiating any other float
  input (probability targets, teacher logits, weights) raises TypeError: wrap it in
  jax.lax.stop_gradient. The losses over a whole batch (batch_hard_triplet_loss,
  info_nce_loss, nt_xent_loss), and inputs broadcast against the per-sample loss
  (a var per row in gaussian_nll_loss, a prior mean or covariance shared by the batch in
  gaussian_kl and mvn_kl), are differentiable only when reduced.
- dtypes: float32, or float64 under jax_enable_x64; float16/bfloat16 inputs are computed
  in float32 and their gradients come back in their own dtype. Mixed float inputs are
  computed in the NumPy call's dtype (the divergences, the Gaussian and metric losses
  promote their float inputs together; the others follow their first input).
- vmap (the callback's vmap_method): a reduced loss is computed once per batch element
  ("sequential"). With reduction="none" the row and elementwise losses, whose arrays all
  have the first input's number of dimensions (integer labels one fewer), take the whole
  batch in one call ("broadcast_all"): every row stays a row, the class axis is counted
  from the end.
- Errors found by fastloss (a label out of range, a bad shape) are raised inside the
  callback; JAX re-raises them with fastloss's message.

Example (the loss and its gradient under jit, as the NumPy call gives them):

>>> import jax
>>> import fastloss.jax as flj
>>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]], dtype=np.float32)
>>> loss, g = jax.jit(jax.value_and_grad(flj.cross_entropy))(logits, np.array([0, 1]))
>>> print(round(float(loss), 4), np.round(np.asarray(g), 4)[0])
0.3964 [-0.1072  0.0876  0.0196]
"""
import functools
import inspect
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import fastloss as _fl
from . import _runtime

try:   # jax >= 0.7: outputs written in place; jax.pure_callback copies them (and the inputs)
    from jax.experimental.buffer_callback import buffer_callback as _buffer_callback
except ImportError:  # pragma: no cover
    _buffer_callback = None


class _Spec(NamedTuple):
    grads: tuple            # inputs fastloss returns gradients for, in its order
    out: str                # shape of the reduction="none" loss (see _Call.loss_shape)
    per_sample: tuple = ()  # inputs indexed like the per-sample loss; () if coupled
    neg: tuple = ()         # (input, source): its gradient is minus the source's
    matrices: tuple = ()    # "last": inputs with two trailing dims of their own, not one
    promote: bool = False   # compute dtype from every float input (else the first's), as NumPy
    fixed_rank: bool = False  # "last": no leading dims beyond the samples' (vmap: one call each)


_ROWS = ("logits", "target")
# Losses of input - target: fastloss documents the target's gradient as minus the input's.
_DIFF = _Spec(("input",), "elem", ("input", "target", "weight"), (("target", "input"),))
_SPECS = {
    "cross_entropy": _Spec(("logits",), "rows", _ROWS),
    "binary_cross_entropy_with_logits": _Spec(("logits",), "elem",
                                              _ROWS + ("weight", "pos_weight")),
    "sigmoid_focal_loss": _Spec(("logits",), "elem", _ROWS),
    "logsumexp": _Spec(("x",), "rows", ("x",)),
    "entropy": _Spec(("logits",), "rows", ("logits",)),
    "kl_divergence": _Spec(("p_logits", "q_logits"), "rows", ("p_logits", "q_logits"),
                           promote=True),
    "js_divergence": _Spec(("p_logits", "q_logits"), "rows", ("p_logits", "q_logits"),
                           promote=True),
    "distillation_loss": _Spec(("student_logits",), "rows",
                               ("student_logits", "teacher_logits", "target"), promote=True),
    "mse_loss": _DIFF,
    "l1_loss": _DIFF,
    "huber_loss": _DIFF,
    "smooth_l1_loss": _DIFF,
    "log_cosh_loss": _DIFF,
    "gaussian_nll_loss": _Spec(("input", "var"), "elem", ("input", "target", "var"),
                               (("target", "input"),), promote=True),
    "gaussian_kl": _Spec(("mu_p", "logvar_p", "mu_q", "logvar_q"), "last",
                         ("mu_p", "logvar_p", "mu_q", "logvar_q"), promote=True),
    "mvn_kl": _Spec(("mu_p", "cov_p", "mu_q", "cov_q"), "last",
                    ("mu_p", "cov_p", "mu_q", "cov_q"), matrices=("cov_p", "cov_q"), promote=True),
    "vae_loss": _Spec(("recon", "mu", "logvar"), "first", ("recon", "x", "mu", "logvar"),
                      promote=True),
    "generalized_box_iou_loss": _Spec(("boxes1", "boxes2"), "last", ("boxes1", "boxes2")),
    "distance_box_iou_loss": _Spec(("boxes1", "boxes2"), "last", ("boxes1", "boxes2")),
    "complete_box_iou_loss": _Spec(("boxes1", "boxes2"), "last", ("boxes1", "boxes2")),
    "triplet_margin_loss": _Spec(("anchor", "positive", "negative"), "last",
                                 ("anchor", "positive", "negative"), promote=True,
                                 fixed_rank=True),
    "batch_hard_triplet_loss": _Spec(("embeddings",), "first"),
    "info_nce_loss": _Spec(("query", "key"), "first", promote=True),
    "nt_xent_loss": _Spec(("z1", "z2"), "pairs", promote=True),
}

__all__ = list(_SPECS)


class _Call(NamedTuple):
    """One call, hashable (custom_vjp's static argument): the arrays by name, the rest."""
    name: str
    arrays: tuple           # names of the array arguments, in the order they are passed
    shapes: tuple
    dtypes: tuple           # the caller's dtypes (cotangents come back in them)
    static: tuple           # (name, value) of every other argument
    dtype: np.dtype         # compute dtype: of the loss and of the gradients from fastloss

    def kw(self, key, default=None):
        return dict(self.static).get(key, default)

    @property
    def spec(self):
        return _SPECS[self.name]

    @property
    def reduced(self):
        return self.name != "logsumexp" and self.kw("reduction") != "none"

    def own_dims(self, name):
        """"last": the trailing dims of input `name` that are its own (not the loss's)."""
        return 2 if name in self.spec.matrices else 1

    def loss_shape(self):
        if self.reduced:
            return ()
        s = self.shapes[0]
        axes = np.atleast_1d(self.kw("axis", -1)) + len(s)
        # "last": the inputs' leading dims broadcast together (a shared prior mean)
        return {"rows": lambda: tuple(d for i, d in enumerate(s) if i not in axes),
                "elem": lambda: s, "first": lambda: s[:1], "pairs": lambda: (2 * s[0],),
                "last": lambda: np.broadcast_shapes(*(t[:len(t) - self.own_dims(n)] for n, t
                                                      in zip(self.arrays, self.shapes)))
                }[self.spec.out]()

    def per_sample(self, name):
        """Whether `name` is indexed like the per-sample loss (one row or element each, not
        broadcast over the samples)."""
        i = self.arrays.index(name)
        shape, first = self.shapes[i], len(self.shapes[0])
        if name not in self.spec.per_sample:
            return False
        if self.spec.out == "last":
            return shape[:len(shape) - self.own_dims(name)] == self.loss_shape()
        if self.spec.out == "first":
            return shape[:1] == self.loss_shape()
        labels = self.spec.out == "rows" and np.issubdtype(self.dtypes[i], np.integer)
        return len(shape) == first or labels and len(shape) == first - 1

    def cotangent_layout(self, name):
        """How a reduction="none" cotangent lines up with `name`'s gradient, or None."""
        if self.spec.out == "rows" and self.shapes[self.arrays.index(name)] == self.shapes[0]:
            return "axis"
        shape, loss = self.shapes[self.arrays.index(name)], self.loss_shape()
        if self.per_sample(name) and shape[:len(loss)] == loss:
            return "prefix"
        return None


def _run(call, want, outs, arrays):
    """fastloss on NumPy views: the loss into outs[0], the gradients of `want` into the rest."""
    kwargs = dict(call.static, **dict(zip(call.arrays, arrays)))
    fn = getattr(_fl, call.name)
    if not want:
        np.copyto(outs[0], fn(**kwargs))
        return
    given = [g for g in call.spec.grads if g in call.arrays]   # gaussian_kl's optional q
    grad_out = tuple(outs[1 + want.index(g)] if g in want else None for g in given)
    np.copyto(outs[0], fn(**kwargs, return_grad=True, grad_out=grad_out)[0])


def _write(call, want, ctx, outs, *arrays):
    # buffer_callback: fastloss writes straight into the buffers XLA returns (no copies).
    outs = [np.asarray(o) for o in outs]
    for o in outs:      # fresh from XLA's allocator: huge pages before the first write
        _runtime.advise_hugepages(o)
    _run(call, want, outs, [np.asarray(a) for a in arrays])


def _fresh(call, want, shapes, *arrays):
    batch = arrays[0].shape[:arrays[0].ndim - len(call.shapes[0])]   # vmap "broadcast_all"
    outs = [np.empty(batch + s.shape, s.dtype) for s in shapes]
    _run(call, want, outs, [np.asarray(a) for a in arrays])
    return tuple(outs)


def _callback(call, want, arrays):
    # Half precision goes to fastloss as float32 (it computes there anyway).
    arrays = [a.astype(jnp.float32) if a.dtype in (jnp.float16, jnp.bfloat16) else a
              for a in arrays]
    shapes = (jax.ShapeDtypeStruct(call.loss_shape(), call.dtype),
              *(jax.ShapeDtypeStruct(call.shapes[call.arrays.index(w)], call.dtype) for w in want))
    # the whole vmapped batch in one call where the kernels take any leading dims
    batched = (not call.reduced and call.spec.out in ("rows", "elem", "last")
               and not call.spec.fixed_rank and all(call.per_sample(n) for n in call.arrays))
    method = "broadcast_all" if batched else "sequential"
    if _buffer_callback is not None:
        # Fresh output buffers, not the gradient over the input (input_output_aliases):
        # XLA copied a live input first, and with huge pages (_write) a fresh buffer costs
        # less than that copy (2048 x 32000 float32 loss + gradient: 51 ms, against 152 ms
        # aliased and 47 ms for the NumPy call).
        out = _buffer_callback(functools.partial(_write, call, want), shapes,
                               vmap_method=method)(*arrays)
    else:
        out = jax.pure_callback(functools.partial(_fresh, call, want, shapes), shapes, *arrays,
                                vmap_method=method)
    return out if want else out[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _loss(call, *arrays):
    return _callback(call, (), arrays)


def _loss_fwd(call, *primals):
    spec, arrays = call.spec, [p.value for p in primals]
    perturbed = {n for n, p in zip(call.arrays, primals) if p.perturbed}
    neg = dict(spec.neg)
    for n in perturbed:
        if n not in spec.grads and n not in neg:
            raise TypeError(f"fastloss.jax.{call.name}: no gradient with respect to {n!r} "
                            "(fastloss does not compute it); wrap it in jax.lax.stop_gradient")
        if not call.reduced and call.cotangent_layout(n) is None:
            raise TypeError(f"fastloss.jax.{call.name}: the gradient with respect to {n!r} of "
                            'reduction="none" is not available; differentiate a reduced loss')
    want = tuple(sorted({neg.get(n, n) for n in perturbed}, key=spec.grads.index))
    if not want:
        return _callback(call, (), arrays), {}
    loss, *grads = _callback(call, want, arrays)
    grads = dict(zip(want, grads))
    return loss, {n: grads[neg.get(n, n)] for n in perturbed}


def _loss_bwd(call, saved, ct):
    out = []
    for name, dtype in zip(call.arrays, call.dtypes):
        if name not in saved:
            out.append(None)   # not differentiated (labels, constants): a zero cotangent
            continue
        g = saved[name]
        if call.reduced:
            c = ct
        elif call.cotangent_layout(name) == "axis":
            c = jnp.expand_dims(ct, call.kw("axis"))
        else:
            c = ct.reshape(ct.shape + (1,) * (g.ndim - ct.ndim))
        g = g * c.astype(g.dtype)
        out.append((-g if name in dict(call.spec.neg) else g).astype(dtype))
    return tuple(out)


_loss.defvjp(_loss_fwd, _loss_bwd, symbolic_zeros=True)


def _is_array(v):
    return isinstance(v, (jax.Array, np.ndarray))


def _from_the_end(axis, ndim):
    """axis (an int, a tuple of them, or None: all) counted from the end, so that a batch
    axis in front (vmap) leaves it alone."""
    axes = range(ndim) if axis is None else (axis,) if np.ndim(axis) == 0 else axis
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for {ndim} dimensions")
    neg = tuple(int(a) % ndim - ndim for a in axes)
    return neg[0] if axis is not None and np.ndim(axis) == 0 else neg


def _wrap(name):
    fn = getattr(_fl, name)
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.name not in ("return_grad", "grad_out")]
    sig = sig.replace(parameters=params)

    def f(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        arrays = {k: jnp.asarray(v) for k, v in bound.arguments.items() if _is_array(v)}
        # The rest is part of the (hashed) call: a list, e.g. of class weights, as a tuple.
        static = {k: tuple(v) if isinstance(v, list) else v
                  for k, v in bound.arguments.items() if k not in arrays}
        first = next(iter(arrays.values()), None)
        floats = [a.dtype for a in (arrays.values() if _SPECS[name].promote else [first])
                  if a is not None and jnp.issubdtype(a.dtype, jnp.floating)]
        if not floats:
            dtype = jnp.dtype(jnp.result_type(float))   # ints, bool: float64 (float32 without x64)
        else:
            dtype = jnp.dtype(jnp.promote_types(jnp.result_type(*floats), jnp.float32))
        if "axis" in static and _SPECS[name].out == "rows":
            static["axis"] = _from_the_end(static["axis"], first.ndim)
        call = _Call(name, tuple(arrays), tuple(a.shape for a in arrays.values()),
                     tuple(a.dtype for a in arrays.values()), tuple(static.items()), dtype)
        return _loss(call, *arrays.values())

    spec = _SPECS[name]
    diff = ", ".join(spec.grads + tuple(n for n, _ in spec.neg))
    f.__name__ = f.__qualname__ = name
    f.__signature__ = sig
    f.__doc__ = (f"JAX version of fastloss.{name} (same arguments, without return_grad and "
                 f"grad_out; see fastloss.jax).\nDifferentiable with respect to: {diff}.\n\n"
                 + (fn.__doc__ or ""))
    return f


for _n in _SPECS:
    globals()[_n] = _wrap(_n)
