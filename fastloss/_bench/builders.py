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


def fastloss_impl(fn, variant, args, wrt=(0,), **kwargs):
    """fastloss: fn(*args) ("loss"), fn(..., return_grad=True) ("grad": a fresh gradient
    each call), or fn(..., return_grad=True, grad_out=buffers) ("grad_out": buffers made
    and touched once)."""
    def build(d):
        a = [d[n] for n in args]
        if variant in FORWARD:
            return lambda: fn(*a, **kwargs)
        if variant == "grad":
            return lambda: fn(*a, return_grad=True, **kwargs)
        bufs = []
        for i in wrt:
            b = np.empty_like(a[i])
            b.fill(0)                       # paged in: no page faults while timed
            bufs.append(b)
        out = bufs[0] if len(bufs) == 1 else tuple(bufs)
        return lambda: fn(*a, return_grad=True, grad_out=out, **kwargs)
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
