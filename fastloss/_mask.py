"""where= masks (DESIGN.md, "Masks"): every loss takes a boolean `where` broadcastable to
its per-item loss (the "none" shape); masked items count for nothing in the sum, the
mean's denominator or the gradient. Family-neutral; see ARCHITECTURE.md.

Two ways, by how a loss's items depend on its inputs:
- independent items (elementwise and row-wise losses, per-sample Gaussians, boxes,
  triplets): `independent` computes every item (reduction "none", the gradient already
  scaled for the masked mean by grad_scale), leaves the masked items out of the reduction
  and zeroes their gradient entries (NaN or inf there included). Cross-entropy with labels
  masks natively instead (masked rows become ignore_index: no extra pass), and so do the
  elementwise regression, BCE and focal kernels (a mask byte per element).
- losses that compare a batch's rows with each other (InfoNCE, NT-Xent, batch-hard
  triplet): `compact` removes the masked samples from the batch (neither anchors nor
  negatives) and scatters the gradients back, zero in the masked rows.
"""
import math

import numpy as np

from . import _config
from ._checks import (check_broadcast, check_grad_out, check_grad_outs, check_no_overlap,
                      check_reduction, grad_out_names)
from ._layout import unbroadcast
from ._reduce import grad_scale, reduce_total


class MaskedCall:
    """This Python thread's masked call (_config.local("masked")): grad_scale multiplies
    its factor by `gscale`; reduce_rows and reduce_elements give "none" items in float64
    where they have them and note the compute dtype here."""

    def __init__(self, gscale):
        self.gscale, self.dtype = gscale, None


def check_where(where, shape):
    """where as a C-contiguous boolean array of the per-item loss's rank that broadcasts to
    its shape (not broadcast: a mask per row of elements stays that small). C order: the
    masked sums (np.sum(..., where=)) add in the order of their operands' memory, so a
    Fortran-ordered or strided mask would change a loss's last bits."""
    w = np.asarray(where)
    if w.dtype != np.bool_:
        raise TypeError(f"where must be a boolean array, got dtype {w.dtype}")
    check_broadcast(w, shape, "where", against="the per-item loss")
    return np.ascontiguousarray(w.reshape((1,) * (len(shape) - w.ndim) + w.shape))


def element_mask(where, shape):
    """where= of an elementwise loss as its kernel takes it: a byte per element of `shape`
    (C order, flat; 1: the element counts)."""
    keep = np.ascontiguousarray(np.broadcast_to(check_where(where, shape), shape))
    return keep.view(np.uint8).reshape(-1)


def independent(call, where, shape, reduction, return_grad, *, axes=None, item_weight=None,
                stats=False):
    """The masked result of a loss whose items are independent. call() runs the loss with
    reduction "none" and the caller's return_grad / grad_out (no where); shape is its item
    shape. axes: per gradient, the axes a gradient has beyond the items (default: the
    trailing ones). item_weight (broadcastable to shape): each item's share of the mean's
    denominator, as the loss counts it (regression weights, counted rows). stats: the
    result ends with a statistics tuple (CrossEntropyStats, DivergenceStats, ...) whose
    last field, a boolean per row (`correct`, `agree`), becomes False where masked."""
    m = check_where(where, shape)
    reduction = check_reduction(reduction, batchmean=True)
    if item_weight is None:          # each entry of m stands for the same number of items
        denom = float(np.count_nonzero(m) * (math.prod(shape) // m.size)) if m.size else 0.0
    else:
        denom = float(np.sum(np.broadcast_to(item_weight, shape), where=m, dtype=np.float64))
    rec = MaskedCall(grad_scale(reduction, denom))
    with _config.local_setting("masked", rec):
        out = call()
    out = list(out) if isinstance(out, tuple) else [out]
    items = np.asarray(out[0])
    dtype = rec.dtype or items.dtype
    if reduction == "none":
        loss = items.astype(dtype)        # a copy: items may be float64 or a kernel's own array
        np.copyto(loss, 0, where=~m)      # PyTorch's rule for rows that count for nothing
    else:
        loss = reduce_total(float(np.sum(items, where=m, dtype=np.float64)), denom, reduction,
                            dtype)
    out[0] = loss
    if return_grad:
        grads = out[1] if isinstance(out[1], tuple) else (out[1],)
        for g, ax in zip(grads, axes if axes is not None else [None] * len(grads)):
            zero_masked(g, m, ax)
    if stats:
        np.copyto(out[-1][-1], False, where=~m)
    return tuple(out) if len(out) > 1 else loss


def broadcast_inputs(call, where, shape, reduction, return_grad, grad_out, inputs, names,
                     full_shapes, dtype, in_shapes=None):
    """independent() for a loss whose differentiable inputs broadcast against each other:
    call(*full) runs it (reduction "none", grad_out None) on the inputs broadcast to
    full_shapes; the gradients are masked at full size, then summed to each input's shape
    (into grad_out when given), so a masked item adds nothing to a broadcast input's.
    in_shapes: the shapes the gradients come back in (default: the inputs')."""
    in_shapes = [np.shape(a) for a in inputs] if in_shapes is None else in_shapes
    outs = _grad_outs(grad_out, return_grad, names, in_shapes, dtype, inputs)
    full = [np.broadcast_to(a, fs) for a, fs in zip(inputs, full_shapes)]
    out = independent(lambda: call(*full), where, shape, reduction, return_grad)
    if not return_grad:
        return out
    grads = []
    for g, a, s, o in zip(out[1], inputs, in_shapes, outs):
        r = unbroadcast(g, np.shape(a)).reshape(s)
        if o is not None:
            o[...] = r
            r = o
        grads.append(r)
    return out[0], tuple(grads)


def zero_masked(g, m, axes=None):
    """g[...] = 0 at the items m (check_where's mask) leaves out; axes: g's axes beyond the
    items (None: the trailing ones)."""
    if m.all():
        return
    if axes is None:
        axes = tuple(range(m.ndim, g.ndim))
    lead = m.ndim
    while lead and m.shape[lead - 1] == 1:      # the items' axes along which m is constant
        lead -= 1
    if axes == tuple(range(m.ndim, g.ndim)) and g.flags.c_contiguous and g.size:
        # rows of g along which m is constant: write the masked rows only
        rows = np.broadcast_to(m.reshape(m.shape[:lead]), g.shape[:lead]).reshape(-1)
        g.reshape(rows.size, -1)[~rows] = 0
    else:
        np.copyto(g, 0, where=~np.expand_dims(m, axes))


def compact(call, where, n, reduction, return_grad, grad_out, inputs, names, others=(),
            none_repeat=1, min_rows=2):
    """The masked result of a loss over a batch of n samples whose rows meet each other:
    call(*kept) runs it (reduction and return_grad as given, grad_out None) on the samples
    where is True; inputs are the per-sample arrays (first axis n, the compute dtype) it
    takes, one gradient each, named by names, then the per-sample arrays `others` without
    a gradient (labels). The gradients come back at full size, zero in the masked rows
    (into grad_out when given). none_repeat: "none" holds that many blocks of n items
    (NT-Xent's two views). min_rows: the fewest samples the loss takes."""
    m = np.broadcast_to(check_where(where, (n,)), (n,))
    reduction = check_reduction(reduction)
    if np.count_nonzero(m) < min_rows:
        raise ValueError(f"where keeps {np.count_nonzero(m)} of {n} samples; the loss needs at "
                         f"least {min_rows}")
    outs = _grad_outs(grad_out, return_grad, names, [a.shape for a in inputs], inputs[0].dtype,
                      inputs)
    keep = np.flatnonzero(m)
    out = call(*(a[keep] for a in (*inputs, *others)))
    out = list(out) if isinstance(out, tuple) else [out]
    if reduction == "none":
        items = np.zeros((none_repeat, n), dtype=out[0].dtype)
        items[:, keep] = out[0].reshape(none_repeat, keep.size)
        out[0] = items.reshape(-1) if none_repeat > 1 else items[0]
    if return_grad:
        subs = out[1] if isinstance(out[1], tuple) else (out[1],)
        full = []
        for sub, a, o in zip(subs, inputs, outs):
            g = np.zeros(a.shape, a.dtype) if o is None else o
            if o is not None:
                g[...] = 0
            g[keep] = sub
            full.append(g)
        out[1] = tuple(full) if isinstance(out[1], tuple) else full[0]
    return tuple(out) if len(out) > 1 else out[0]


def _grad_outs(grad_out, return_grad, names, shapes, dtype, inputs):
    """grad_out's buffers (None where not given), checked as the unmasked call checks
    them: shape, dtype, and no overlap with an input or with each other."""
    if not return_grad:
        return [None] * len(names)
    outs = check_grad_outs(grad_out, names)
    labelled = grad_out_names(outs)
    for (label, o), shape in zip(labelled, shapes):
        if o is not None:
            check_grad_out(o, shape, dtype, label)
    check_no_overlap(labelled, list(zip(names, inputs)))
    return outs


def document(fn, items, note=""):
    """Add the `where` parameter to fn's numpydoc docstring, before `reduction`; items
    names what the per-item loss is per ("row", "element", ...)."""
    doc = fn.__doc__
    i = doc.index("    reduction :")
    fn.__doc__ = doc[:i] + (
        "    where : array_like of bool, optional\n"
        f"        Broadcastable to the per-{items} loss (the ``\"none\"`` shape): False marks the\n"
        f"        {items}s that count for nothing: left out of the sum, the mean's denominator and\n"
        "        the gradient (0 there, also where the input is inf or NaN); ``\"none\"`` holds 0.\n"
        + note) + doc[i:]
