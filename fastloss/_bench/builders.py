"""Implementation builders shared by the family modules.

Each returns build(inputs) -> a zero-argument callable that computes the case once
and returns its result ((loss, grad, ...) for a gradient variant), with everything
that is not part of the computation (conversions, JIT set-up, output buffers)
done in build, outside the timing. `args` names the inputs (keys of the case's
`make` dict) in call order; `wrt` the positions of the differentiable ones.
"""
import numpy as np

from .core import peer

FORWARD = ("loss", "fwd")


def fastloss_impl(fn, variant, args, wrt=(0,), kw_inputs=None, **kwargs):
    """fastloss: fn(*args) ("loss"), fn(..., return_grad=True) ("grad": a fresh gradient
    each call, dropped before the next one as in a training loop: time_calls keeps no
    result but the first), or fn(..., return_grad=True, grad_out=buffers) ("grad_out":
    buffers made and touched once). kw_inputs: keyword argument -> input name (e.g.
    target="y")."""
    def build(d):
        a = [d[n] for n in args]
        kw = dict(kwargs, **{k: d[n] for k, n in (kw_inputs or {}).items()})
        if variant in FORWARD:
            return lambda: fn(*a, **kw)
        if variant == "grad":
            return lambda: fn(*a, return_grad=True, **kw)
        bufs = []
        for i in wrt:
            b = np.empty_like(a[i])
            b.fill(0)                       # paged in: no page faults while timed
            bufs.append(b)
        out = bufs[0] if len(bufs) == 1 else tuple(bufs)
        return lambda: fn(*a, return_grad=True, grad_out=out, **kw)
    return build


def numpy_impl(fn, args):
    """A plain function of NumPy arrays."""
    def build(d):
        a = [d[n] for n in args]
        return lambda: fn(*a)
    return build


def torch_impl(fn, variant, args, wrt=(0,)):
    """fn(*tensors) -> scalar loss tensor; "grad": torch.autograd.grad of it with respect
    to the inputs at `wrt` (fresh leaf tensors each call, sharing the NumPy memory)."""
    def build(d):
        torch = peer("torch")
        ts = [d.torch(n) for n in args]
        if variant in FORWARD:
            def run():
                with torch.no_grad():
                    return fn(*ts)
            return run

        def run_grad():
            xs = list(ts)
            for i in wrt:
                xs[i] = ts[i].detach().requires_grad_(True)
            loss = fn(*xs)
            return (loss.detach(),) + tuple(torch.autograd.grad(loss, [xs[i] for i in wrt]))
        return run_grad
    return build


def jax_impl(fn, variant, args, wrt=(0,)):
    """jax.jit(fn) or jax.jit(jax.value_and_grad(fn, argnums=wrt)), on JAX arrays made
    before the timing; each call ends with block_until_ready."""
    def build(d):
        jax = peer("jax")
        arrs = [d.jax(n) for n in args]
        if variant in FORWARD:
            f = jax.jit(fn)
        else:
            f = jax.jit(jax.value_and_grad(fn, argnums=wrt[0] if len(wrt) == 1 else tuple(wrt)))
        return lambda: jax.block_until_ready(f(*arrs))
    return build


# --- one formula for PyTorch and JAX -----------------------------------------------------

class _TorchXP:
    """The few array functions the peer formulas use, on torch tensors."""
    name = "torch"

    def __init__(self):
        t = peer("torch")
        self.t = t
        for n in ("exp", "log", "log1p", "sqrt", "abs", "tanh", "sigmoid", "maximum", "minimum",
                  "where", "atan2", "matmul", "logaddexp"):
            setattr(self, n, getattr(t, n))
        self.softplus = t.nn.functional.softplus
        self.linalg = t.linalg
        self.einsum = t.einsum

    def sum(self, a, axis=None):
        return a.sum() if axis is None else a.sum(dim=axis)

    def mean(self, a):
        return a.mean()

    def max(self, a, axis):
        return a.max(dim=axis).values

    def logsumexp(self, a, axis=-1):
        return self.t.logsumexp(a, dim=axis)

    def log_softmax(self, a, axis=-1):
        return self.t.log_softmax(a, dim=axis)

    def softmax(self, a, axis=-1):
        return self.t.softmax(a, dim=axis)

    def clip_min(self, a, v):
        return self.t.clamp_min(a, v)

    def stop(self, a):
        return a.detach()

    def pick(self, a, idx):
        """a[i, idx[i]] for each row i."""
        return a.gather(1, idx[:, None])[:, 0]

    def concat(self, arrays):
        return self.t.cat(arrays)

    def arange(self, n):
        return self.t.arange(n)

    def argmax(self, a, axis):
        return a.argmax(dim=axis)

    def argmin(self, a, axis):
        return a.argmin(dim=axis)


class _JaxXP:
    """The same functions on JAX arrays (inside jit)."""
    name = "jax"

    def __init__(self):
        jax = peer("jax")
        jnp = jax.numpy
        self.jnp = jnp
        for n in ("exp", "log", "log1p", "sqrt", "abs", "tanh", "maximum", "minimum", "where",
                  "matmul", "arange", "logaddexp"):
            setattr(self, n, getattr(jnp, n))
        self.atan2 = jnp.arctan2
        self.sigmoid = jax.nn.sigmoid
        self.softplus = jax.nn.softplus
        self.logsumexp = lambda a, axis=-1: jax.nn.logsumexp(a, axis=axis)
        self.log_softmax = lambda a, axis=-1: jax.nn.log_softmax(a, axis=axis)
        self.softmax = lambda a, axis=-1: jax.nn.softmax(a, axis=axis)
        self.stop = jax.lax.stop_gradient
        self.linalg = jnp.linalg
        self.einsum = jnp.einsum

    def sum(self, a, axis=None):
        return self.jnp.sum(a, axis=axis)

    def mean(self, a):
        return self.jnp.mean(a)

    def max(self, a, axis):
        return self.jnp.max(a, axis=axis)

    def clip_min(self, a, v):
        return self.jnp.maximum(a, v)

    def pick(self, a, idx):
        return self.jnp.take_along_axis(a, idx[:, None], axis=1)[:, 0]

    def concat(self, arrays):
        return self.jnp.concatenate(arrays)

    def argmax(self, a, axis):
        return self.jnp.argmax(a, axis=axis)

    def argmin(self, a, axis):
        return self.jnp.argmin(a, axis=axis)


_xps = {}


def xp(name):
    """The array namespace of peer `name` ("torch" or "jax"), made once."""
    if name not in _xps:
        _xps[name] = _TorchXP() if name == "torch" else _JaxXP()
    return _xps[name]


def xp_impls(fn, variant, args, wrt=(0,), torch=True, jax=True):
    """{"torch": ..., "jax": ...} builders of one formula fn(xp, *arrays) -> scalar loss,
    written once with the xp namespace (see _TorchXP)."""
    out = {}
    if torch:
        out["torch"] = torch_impl(lambda *a: fn(xp("torch"), *a), variant, args, wrt)
    if jax:
        out["jax"] = jax_impl(lambda *a: fn(xp("jax"), *a), variant, args, wrt)
    return out


def oracle_impl(fn, variant, args, kw_inputs=None, **kwargs):
    """NumPy peer from fastloss.reference: the float64 oracle (its inputs are converted to
    float64 inside, and that conversion is timed too)."""
    grad = variant not in FORWARD

    def build(d):
        a = [d[n] for n in args]
        kw = dict(kwargs, **{k: d[n] for k, n in (kw_inputs or {}).items()})
        return lambda: fn(*a, return_grad=grad, **kw)
    return build


# --- the cases of one loss function -------------------------------------------------------

def loss_cases(func, family, fl_fn, args, make, sizes, *, wrt=(0,), numpy=None, oracle=None,
               torch=None, jax=None, xp_fn=None, nbytes=None, formula=None, kwargs=None,
               kw_inputs=None, variants=("loss", "grad", "grad_out"), notes=None, skip=None,
               dtype=None, products=None):
    """Cases of one loss function: each variant at each size.

    fl_fn: the fastloss function, called fl_fn(*inputs[args], **kwargs).
    sizes: (tag, shape, quick_shape, large, scaling) tuples; with scaling, the gradient
      variants are in the scaling sweep (rows scaled).
    numpy: np_fn(*arrays, grad) -> loss or (loss, grads...), in the input dtype; or
      oracle: a fastloss.reference function used as the NumPy peer instead (float64).
    torch, jax: fn(*arrays) -> scalar loss (the gradient by autograd / value_and_grad);
      xp_fn: fn(xp, *arrays) written once for both (see _TorchXP).
    nbytes(shape, itemsize, grad) and formula(grad): the bytes the case must move (None:
      not memory-bound).
    kwargs: constant keyword arguments of fl_fn and the oracle; kw_inputs: keyword
      argument -> input name, for inputs fl_fn takes by keyword (the peers get them
      positionally after args).
    notes: implementation -> a note printed under the table (e.g. what the peer runs).
    skip: implementation -> why it is not run (printed under the table).
    dtype: the one dtype the cases run at (Case.dtype; half_cases).
    products(shape, grad) -> ([(m, k, n), ...], words): the matrix products the math
      needs, for cases dominated by them (Case.products)."""
    from .core import Case, scale_rows
    kwargs = kwargs or {}
    cases = []
    for tag, shape, quick, large, scaling in sizes:
        for variant in variants:
            grad = variant not in FORWARD
            pv = "grad" if variant == "grad_out" else variant
            impls = {"fastloss": fastloss_impl(fl_fn, variant, args, wrt, kw_inputs, **kwargs)}
            pargs = tuple(args) + tuple((kw_inputs or {}).values())
            if numpy is not None:
                impls["numpy"] = numpy_impl(lambda *a, g=grad: numpy(*a, g), pargs)
            elif oracle is not None:
                impls["numpy"] = oracle_impl(oracle, pv, args, kw_inputs, **kwargs)
            if xp_fn is not None:
                impls.update(xp_impls(xp_fn, pv, pargs, wrt))
            if torch is not None:
                impls["torch"] = torch_impl(torch, pv, pargs, wrt)
            if jax is not None:
                impls["jax"] = jax_impl(jax, pv, pargs, wrt)
            for impl in (skip or {}):
                impls.pop(impl, None)
            nb = None if nbytes is None else (lambda shp, s, g=grad: nbytes(shp, s, g))
            pn = dict(notes or {}, **(skip or {}))
            if oracle is not None and numpy is None:
                pn.setdefault("numpy", "the float64 oracle from fastloss.reference")
            cases.append(Case(func=func, family=family, variant=variant, tag=tag, shape=shape,
                              quick_shape=quick, make=make, impls=impls, nbytes=nb,
                              bytes_formula=formula(grad) if formula else "", large=large,
                              scale=scale_rows if scaling and grad else None, peer_notes=pn,
                              dtype=dtype,
                              products=products and (lambda shp, g=grad: products(shp, g)[0]),
                              products_formula=products(shape, grad)[1] if products else ""))
    return cases


def half_dtypes():
    """The half formats the benchmark runs: float16, and bfloat16 where ml_dtypes is
    installed."""
    out = ["float16"]
    try:
        import ml_dtypes  # noqa: F401  (registers np.dtype("bfloat16"))
        out.append("bfloat16")
    except ImportError:
        pass
    return out


def half_cases(func, make, names, sizes, nbytes, **kw):
    """loss_cases at each half dtype: the inputs `names` made in float32 and rounded to it,
    the floor from the bytes read at 2 bytes an element (nbytes(shape, itemsize, grad)),
    each size's tag suffixed with the format ("v32k-f16")."""
    cases = []
    for hd in half_dtypes():
        def make_half(shape, _dtype, rng, hd=hd):
            d = make(shape, np.float32, rng)
            return {k: v.astype(hd) if k in names else v for k, v in d.items()}
        short = {"float16": "f16", "bfloat16": "bf16"}[hd]
        sz = [(f"{t}-{short}" if t else short, *rest) for t, *rest in sizes]
        cases += loss_cases(func, make=make_half, sizes=sz, dtype=hd,
                            nbytes=lambda shp, s, g: nbytes(shp, 2, g), **kw)
    return cases


def size(shape, quick, tag="", large=False, scaling=False):
    """One entry of loss_cases' sizes."""
    return (tag, tuple(shape), tuple(quick), large, scaling)


# --- bytes a case moves ------------------------------------------------------------------

def rows_bytes(k_in, k_grad):
    """k_in arrays of the case's shape read, k_grad written with the gradient."""
    return lambda shape, s, grad: int(np.prod(shape)) * s * (k_in + (k_grad if grad else 0))


def bytes_formula(text_in, text_grad):
    """formula(grad) for loss_cases: the bytes read, plus those written with the gradient."""
    return lambda grad: text_in + (" + " + text_grad if grad else "")
