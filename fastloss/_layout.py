"""How arrays are laid out for the kernels, and how gradients come back.

Family-neutral: every family module lays its (already checked) inputs out with these
helpers, so a kernel only ever sees C-contiguous rows (the reduced axis last) or flat
arrays, and every gradient buffer is made, checked and returned in one way:

- rows: as_rows / grad_rows for losses over an axis (softmax rows);
- flat: flat_full / periodic for elementwise losses (periodic keeps a broadcast weight
  small when it repeats);
- broadcasting: BroadcastGrad sums a full-shape gradient back to its input's shape;
- grad_buffers: one fresh or user-given (grad_out) buffer per gradient; fresh gradient
  buffers come from _pool.empty (large ones reused once nothing sees them).

See ARCHITECTURE.md for where this sits.
"""
import math

import numpy as np

from . import _pool
from ._checks import check_grad_out, check_grad_outs
from ._runtime import ELEMENT_BLOCK


def as_rows(x, axis):
    """x with `axis` moved last, as C-contiguous (N, C) rows (a view when x already is)."""
    xm = x if axis in (-1, x.ndim - 1) else np.moveaxis(x, axis, -1)
    return np.ascontiguousarray(xm).reshape(-1, xm.shape[-1])


def grad_rows(x, axis, grad_out, name="grad_out"):
    """(g2, finish): the (N, C) rows buffer a row kernel writes the gradient of x into,
    and a function turning it into the gradient of x's shape (grad_out when given;
    with the axis last that is grad_out itself, so the kernel writes it directly)."""
    C = x.shape[axis]
    n = x.size // C
    if grad_out is not None:
        check_grad_out(grad_out, x.shape, x.dtype, name)
        if axis == x.ndim - 1:
            return grad_out.reshape(n, C), lambda g2: grad_out
    g2 = _pool.empty((n, C), x.dtype)
    if axis == x.ndim - 1:                  # no moveaxis: it costs more than a small call
        return g2, lambda g2: g2.reshape(x.shape)
    moved = np.moveaxis(x, axis, -1).shape

    def finish(g2):
        g = np.moveaxis(g2.reshape(moved), -1, axis)
        if grad_out is None:
            return g
        grad_out[...] = g
        return grad_out
    return g2, finish


def grad_buffers(grad_out, names, shapes, dtype):
    """One gradient buffer per name, of the matching shape: grad_out's (parsed and checked)
    or fresh ones. shapes: one shape for all, or a list."""
    outs = check_grad_outs(grad_out, names)
    if not isinstance(shapes, list):
        shapes = [shapes] * len(names)
    return [_pool.empty(shp, dtype) if g is None else
            check_grad_out(g, shp, dtype, "grad_out" if len(names) == 1 else f"grad_out[{i}]")
            for i, (g, shp) in enumerate(zip(outs, shapes))]


def flat_full(a, shape):
    """a broadcast to `shape`, C-contiguous and flat (a view when it already is)."""
    if a.shape != tuple(shape):
        a = np.broadcast_to(a, shape)
    return np.ascontiguousarray(a).reshape(-1)


def periodic(w, shape):
    """A (checked) weight array broadcast against `shape`, as (tiled, period): element i of
    the flat broadcast result is tiled[i % period], and every run of ELEMENT_BLOCK entries
    starting at i % period lies inside `tiled` (so a kernel block reads it contiguously).
    A weight that broadcasts only over leading axes (e.g. per-class pos_weight of shape
    (C,)) stays small; anything else is materialised."""
    n = math.prod(shape)
    ws = (1,) * (len(shape) - w.ndim) + w.shape
    lead = 0
    while lead < len(shape) and ws[lead] == 1:
        lead += 1
    if ws[lead:] == tuple(shape[lead:]):
        base = np.ascontiguousarray(w).reshape(-1)
    else:
        base = np.ascontiguousarray(np.broadcast_to(w, shape)).reshape(-1)
    period = base.size
    if period >= n or period == 0:
        return base, max(period, 1)
    reps = -(-(ELEMENT_BLOCK + period) // period)
    return np.tile(base, reps), period


def unbroadcast(g, shape):
    """Sum a full-shape gradient over the axes an input of `shape` was broadcast along."""
    if g.shape == tuple(shape):
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape)
                                      if s == 1 and g.shape[lead + i] != 1)
    return np.sum(g, axis=axes, dtype=np.float64).reshape(shape).astype(g.dtype)


class BroadcastGrad:
    """Gradient of one input computed at the broadcast shape: `buf` is the flat buffer
    the kernel writes; result() gives the gradient of the input's shape (into grad_out)."""

    def __init__(self, in_shape, full_shape, dtype, grad_out, name):
        self.in_shape, self.out = tuple(in_shape), grad_out
        if grad_out is not None:
            check_grad_out(grad_out, in_shape, dtype, name)
        if self.in_shape == tuple(full_shape) and grad_out is not None:
            self.full = grad_out
        else:
            self.full = _pool.empty(full_shape, dtype)
        self.buf = self.full.reshape(-1)

    def result(self):
        if self.full is self.out:
            return self.out
        g = unbroadcast(self.full, self.in_shape)
        if self.out is None:
            return g
        self.out[...] = g
        return self.out


def row_sums(elem, nrows, D):
    """Per-row float64 sums of a flat (nrows * D) per-element array."""
    return np.sum(elem.reshape(nrows, D), axis=1, dtype=np.float64) if D else np.zeros(nrows)
