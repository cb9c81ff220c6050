"""fastloss on Dask arrays: the same losses, lazily, for data larger than memory or than
one machine (the optional extra ``fastloss[dask]``)::

    import dask.array as da, fastloss.dask as fld
    x = da.from_array(np.load("logits.npy", mmap_mode="r"), chunks=(4096, -1))
    loss = fld.cross_entropy(x, labels)        # a 0-d Dask array; loss.compute() is the value

Each function has the signature of the fastloss function of the same name; when no
argument is a Dask array the call goes straight to fastloss. With Dask arrays:

- the losses are computed block by block by the fastloss kernels, with the in-memory
  semantics: "mean" is sum(w * l) / sum(w) of float64 partial sums over the blocks
  (a tree reduction, never a mean of per-block means), the denominator taken by the
  in-memory rule (class weights, ignore_index, where= masks (NumPy or Dask, taken to the
  rows' or the elements' chunks), element weights; NaN when it is 0);
- the results are lazy: a 0-d Dask array for "mean"/"sum" (`.compute()` gives a 0-d
  NumPy array of the compute dtype), a Dask array for "none", and with return_grad the
  gradient(s) as Dask arrays chunked like the input, scaled by the global denominator;
- the class axis (axis=) must be one chunk: ValueError otherwise (rechunk it,
  x.rechunk({axis: -1}), if that fits in memory). Other arrays are rechunked to the
  chunks of the first (logits/input); grad_out is not taken (gradients are Dask arrays);
- losses that need the whole batch at once (pairwise, contrastive, Gaussian) take Dask
  arrays that are one chunk each, and raise ValueError otherwise;
- checks of values (labels in range, box coordinates) run with the blocks, so a bad label
  raises at compute time; shapes, dtypes and options are checked when the call is made.

Each block's partial sum stays in float64 (float32 inputs too) and the total is rounded
to the compute dtype once, as in the in-memory call: the loss matches it to the order of
the float64 additions (gradient entries to a few ulps of the largest: the 1/denominator
scale is applied after each block's kernel, not inside it). A "mean" over a zero
denominator is NaN with the in-memory gradient, as long as every block's share of it is 0
too (weights >= 0); negative weights that cancel across blocks give a different gradient
there.

Threads: a Dask worker thread runs one block at a time, so by default each block's
kernel runs on BLOCK_THREADS = 1 thread and Dask's threads fill the cores, without
oversubscribing them. Set fastloss.dask.BLOCK_THREADS = n (or None: fastloss's own setting,
fastloss.set_num_threads / OMP_NUM_THREADS) before building the graph, e.g. for a
cluster of one-thread workers on many-core machines; the value travels with the graph.

Example (two blocks of one row each; the mean over both rows, as in memory):

>>> import dask.array as da
>>> import fastloss.dask as fld
>>> x = da.from_array(np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]]), chunks=(1, 3))
>>> loss = fld.cross_entropy(x, np.array([0, 1]))
>>> print(round(float(loss.compute()), 4))
0.3964
>>> print(round(float(fastloss.cross_entropy(x.compute(), np.array([0, 1]))), 4))
0.3964
"""
import functools
import inspect
import math
import string
import uuid

import dask
import dask.array as da
from dask.highlevelgraph import HighLevelGraph
import numpy as np

import fastloss as _fl
from . import _config
from ._checks import check_axis, check_broadcast, check_class_weight, check_reduction
from ._reduce import float64_sums, reduce_total
from ._xent import prepare_labels

# Threads per block's kernel call (None: fastloss's own thread setting).
BLOCK_THREADS = 1

__all__ = ["BLOCK_THREADS"]


# --- threads -----------------------------------------------------------------------------

# --- one block ---------------------------------------------------------------------------

class _Spec:
    """What every block of one call runs: fn(**static, **blocks) with the reduction."""

    def __init__(self, fn, names, static, reduction, return_grad, threads):
        self.fn, self.names, self.static = fn, names, static
        self.reduction, self.return_grad, self.threads = reduction, return_grad, threads

    def call(self, blocks, reduction):
        kw = dict(self.static, **dict(zip(self.names, blocks)), return_grad=self.return_grad)
        if self.reduction is not None:
            kw["reduction"] = reduction
        return self.fn(**kw)


def _run_block(spec, *args):
    """(loss, gradients) of one block: its per-item losses for "none", else the float64
    sum of its (weighted) losses with the gradient scaled by the global denominator."""
    *blocks, denom = args
    with _config.thread_local_threads(spec.threads):
        if spec.reduction in (None, "none"):
            out = spec.call(blocks, "none")
            return out if spec.return_grad else (out, None)
        with float64_sums():
            out = spec.call(blocks, "sum")
        loss, grads = out if spec.return_grad else (out, None)
        if spec.return_grad and spec.reduction == "mean":
            if denom:
                scale = 1.0 / float(denom)
                grads = tuple(g * g.dtype.type(scale) for g in grads) if isinstance(grads, tuple) \
                    else grads * grads.dtype.type(scale)
            else:
                # every block's denominator is 0 too: the in-memory rule (scale 1/0 = inf)
                grads = spec.call(blocks, "mean")[1]
        return np.float64(loss), grads


def _pick_loss(res):
    """The losses of one block (a one-block list when the class axis was contracted)."""
    return (res[0] if isinstance(res, list) else res)[0]


def _pick_partial(res, ndim):
    return np.full((1,) * ndim, res[0])


def _pick_grad(res, i):
    return res[1] if i is None else res[1][i]


def _finish(total, denom, reduction, dtype):
    """The returned loss from the float64 total and denominator (the in-memory rule)."""
    return np.asarray(reduce_total(float(total), denom, reduction, np.dtype(dtype)))


# --- denominators ------------------------------------------------------------------------

class _Den:
    """A "mean" denominator that depends on values (labels, weights): fn(**blocks, **opts)
    is one block's share, the denominator their float64 sum."""

    def __init__(self, fn, names, **opts):
        self.fn, self.names, self.opts = fn, names, opts

    def block(self, blocks):
        return self.fn(**blocks, **self.opts)


def _label_denom(target, weight=None, where=None, *, n_classes, ignore_index, dtype):
    """A block's share of integer labels (prepare_labels' rule: counted rows or the sum of
    their class weights; rows where `where` is False do not count)."""
    cw = check_class_weight(weight, n_classes, dtype)
    return prepare_labels(target, target.shape, n_classes, ignore_index, cw, where=where)[1]


def _weight_denom(weight=None, where=None, *, dtype):
    """A block's sum of element weights, converted to the compute dtype first (of the
    elements `where` keeps; without weights, their number)."""
    if weight is None:
        return float(np.count_nonzero(where))
    w = weight.astype(dtype, copy=False)
    return float(np.sum(w if where is None else w[where], dtype=np.float64))


def _kept_rows(where=None, labels=None, *, ignore_index=None):
    """A block's rows that count for entropy, KL, JS: where, and labels != ignore_index."""
    keep = np.ones(np.shape(where if labels is None else labels), bool) if where is None else where
    return float(np.count_nonzero(keep if labels is None else keep & (labels != ignore_index)))


def _den_block(den, ndim, *blocks):
    return np.full((1,) * ndim, den.block(dict(zip(den.names, blocks))))


def _run_partial(spec, den, ndim, *blocks):
    """[sum of the block's (weighted) losses, its share of the denominator (0 without
    one)], loss without gradient: one task per block."""
    with _config.thread_local_threads(spec.threads), float64_sums():
        num = float(spec.call(blocks, "sum"))
    mine = {n: b for n, b in zip(spec.names, blocks) if den is not None and n in den.names}
    d = 0.0 if den is None else den.block(mine)
    return np.array([num, d]).reshape((1,) * ndim + (2,))


def _finish_pairs(pairs, denom, reduction, dtype):
    """The loss from every block's [sum, share of the denominator] (denom: a float, or
    None for the shares' sum)."""
    total = np.sum(np.concatenate([p.reshape(-1, 2) for p in pairs]), axis=0)
    return _finish(total[0], total[1] if denom is None else denom, reduction, dtype)


def _sum_blocks(blocks):
    return np.sum(np.concatenate([b.ravel() for b in blocks]), dtype=np.float64)


def _finish_parts(parts, denom, reduction, dtype):
    return _finish(_sum_blocks(parts), denom, reduction, dtype)


def _one_task(name, fn, parts, *args, dtype):
    """A 0-d Dask array computed by one task, fn(list of parts' blocks in block order,
    *args), where a 0-d Dask array among args is passed as its value. One task, not dask's
    tree reduction: the partials are scalars, and the tree took longer to build (3.5 ms a
    call) than the sums take to run."""
    deps = [parts] + [a for a in args if isinstance(a, da.Array)]
    args = [(a.name,) if isinstance(a, da.Array) else a for a in args]
    task = (fn, list(dask.core.flatten(parts.__dask_keys__())), *args)
    graph = HighLevelGraph.from_collections(name, {(name,): task}, dependencies=deps)
    return da.Array(graph, name, chunks=(), dtype=dtype, meta=np.empty((), dtype=dtype))


# --- the graph ---------------------------------------------------------------------------

class _Call:
    """One call on Dask arrays: the bound arguments, the array arguments laid out on the
    chunks of the first, and the blockwise graph of the losses."""

    def __init__(self, fn, a, arrays, ax):
        # arrays: (name, kind) with kind "full" (the lead's shape), "rows" (the lead's shape
        # without the class axis), "class" ((C,) along the class axis), "bcast" (broadcast
        # to the lead's shape); the first is the lead, whose chunks the others take.
        self.fn, self.a, self.ax = fn, a, ax
        lead = da.asarray(a[arrays[0][0]])
        if any(math.isnan(c) for cs in lead.chunks for c in cs):
            raise ValueError(f"{arrays[0][0]} has unknown chunk sizes: call "
                             f"compute_chunk_sizes() first")
        if lead.ndim > len(string.ascii_lowercase):
            raise ValueError(f"{arrays[0][0]} has more than 26 dimensions")
        if ax is not None and len(lead.chunks[ax]) > 1:
            raise ValueError(f"{arrays[0][0]} is split into {len(lead.chunks[ax])} chunks along "
                             f"its class axis {ax}; fastloss.dask needs each row of classes in "
                             f"one chunk: rechunk it, e.g. x.rechunk({{{ax}: -1}})")
        self.lead, self.nd = lead, lead.ndim
        self.full = tuple(string.ascii_lowercase[:lead.ndim])
        self.rows = self.full if ax is None else self.full[:ax] + self.full[ax + 1:]
        shape, chunks = lead.shape, lead.chunks
        rshape = shape if ax is None else shape[:ax] + shape[ax + 1:]
        rchunks = chunks if ax is None else chunks[:ax] + chunks[ax + 1:]
        self.names, self.args, self.ind = [], {}, {}
        for name, kind in arrays:
            v = da.asarray(a[name])
            if kind == "full":
                ind, want = self.full, (shape, chunks)
            elif kind == "rows":
                ind, want = self.rows, (rshape, rchunks)
            elif kind == "class":
                ind, want = (self.full[ax],), ((shape[ax],), ((shape[ax],),))
            else:
                check_broadcast(v, shape, name, against=arrays[0][0])
                v, ind, want = da.broadcast_to(v, shape), self.full, (shape, chunks)
            if v.shape != want[0]:
                raise ValueError(f"{name} has shape {v.shape}, expected {want[0]}")
            self.names.append(name)
            self.args[name] = v.rechunk(want[1])
            self.ind[name] = ind

    def meta(self, kinds):
        """Checks the options with the in-memory function on small stand-ins (one row of
        classes, one element along the other axes); returns its result."""
        kw = dict(self.a, grad_out=None)
        for name, kind in kinds:
            v = self.args[name]
            cls = None if self.ax is None else self.full[self.ax]
            shp = (v.shape if kind == "class"
                   else tuple(s if self.ind[name][i] == cls else min(s, 1)
                              for i, s in enumerate(v.shape)))
            kw[name] = np.zeros(shp, dtype=v.dtype) if kind != "class" else np.ones(shp, v.dtype)
        with _config.thread_local_threads(1):      # a one-row call: no pool threads to wake
            return self.fn(**kw)

    def run(self, reduction, return_grad, denom, dtype, grads):
        """The lazy (loss[, grads]). reduction None: a function without one (logsumexp).
        denom: the "mean" denominator (a float, or a _Den summed over the blocks).
        grads: None, or the number of gradients (0: one bare array)."""
        if reduction != "mean":
            denom = None
        spec = _Spec(self.fn, tuple(self.names),
                     {k: v for k, v in self.a.items() if k not in self.args},
                     reduction, return_grad, BLOCK_THREADS)
        bargs = [x for n in self.names for x in (self.args[n], self.ind[n])]
        tag = f"fastloss-{self.fn.__name__}-{uuid.uuid4().hex}"
        if reduction in ("mean", "sum") and not return_grad:
            # one task per block gives both partial sums; one task adds them up
            den = denom if isinstance(denom, _Den) else None
            parts = da.blockwise(functools.partial(_run_partial, spec, den, self.nd),
                                 self.full + ("pair",), *bargs, new_axes={"pair": 2},
                                 adjust_chunks={c: 1 for c in self.full}, dtype=np.float64,
                                 meta=np.empty((0,) * (self.nd + 1)), name=tag + "-parts")
            return _one_task(tag, _finish_pairs, parts, None if den else denom, reduction,
                             np.dtype(dtype).str, dtype=dtype)
        if isinstance(denom, _Den):        # the gradients need it first: a pass of its own
            ind = self.rows if all(self.ind[n] != self.full for n in denom.names) else self.full
            dargs = [x for n in denom.names for x in (self.args[n], self.ind[n])]
            shares = da.blockwise(functools.partial(_den_block, denom, len(ind)), ind, *dargs,
                                  adjust_chunks={c: 1 for c in ind}, concatenate=True,
                                  dtype=np.float64, meta=np.empty((0,) * len(ind)),
                                  name=tag + "-shares")
            denom = _one_task(tag + "-denom", _sum_blocks, shares, dtype=np.float64)
        bargs += [denom, () if isinstance(denom, da.Array) else None]
        res = da.blockwise(functools.partial(_run_block, spec), self.full, *bargs, dtype=object,
                           meta=np.empty((0,) * self.nd, dtype=object), name=tag + "-blocks")
        if reduction in (None, "none"):
            # the class axis is one chunk: each block of rows comes from one block of res
            loss = da.blockwise(_pick_loss, self.rows, res, self.full, dtype=dtype,
                                meta=np.empty((0,) * len(self.rows), dtype=dtype))
        else:
            parts = res.map_blocks(_pick_partial, self.nd, dtype=np.float64,
                                   chunks=tuple((1,) * len(c) for c in res.chunks),
                                   meta=np.empty((0,) * self.nd))
            loss = _one_task(tag, _finish_parts, parts, denom, reduction, np.dtype(dtype).str,
                             dtype=dtype)
        if not return_grad:
            return loss
        pick = [None] if grads == 0 else list(range(grads))
        g = tuple(res.map_blocks(_pick_grad, i, dtype=dtype, meta=np.empty((0,) * self.nd, dtype))
                  for i in pick)
        return loss, (g[0] if grads == 0 else g)


def _is_dask(v):
    return isinstance(v, da.Array)


def _dask_version(fn, plan):
    """fn's Dask counterpart: plan(bound arguments) builds the graph when an argument is
    a Dask array; otherwise fn itself runs."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = dict(bound.arguments)
        if not any(_is_dask(v) for v in a.values()):
            return fn(*args, **kwargs)
        if a.get("grad_out") is not None:
            raise ValueError("grad_out is not taken with Dask arrays: the gradients are "
                             "returned as Dask arrays (store them with da.store)")
        if a.get("return_stats"):
            raise ValueError(f"return_stats is not taken with Dask arrays yet: call "
                             f"fastloss.{fn.__name__} on each block (map_blocks) for per-row stats")
        if a.get("target_kind") is not None:
            raise ValueError("target_kind is not taken with Dask arrays: give the target the "
                             "dtype that says what it holds (target.astype(np.int64) for labels)")
        return plan(fn, a)

    wrapper.__doc__ = (f"fastloss.{fn.__name__} on Dask arrays (lazy results; see the "
                       f"fastloss.dask module docstring).\n\n    " + (fn.__doc__ or ""))
    wrapper.__module__ = __name__
    return wrapper


def _reduction(a, batchmean=False):
    return check_reduction(a["reduction"], batchmean=batchmean)


def _ngrads(out):
    """0 for one bare gradient array, else the number of gradients (from a meta call)."""
    return len(out[1]) if isinstance(out[1], tuple) else 0


# --- row losses (the classes along `axis`) -------------------------------------------------

def _class_axis(a, name):
    x = da.asarray(a[name])
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the classes)")
    return check_axis(a["axis"], x.ndim)


def _cross_entropy(fn, a):
    ax = _class_axis(a, "logits")
    labels = np.dtype(da.asarray(a["target"]).dtype).kind in "iu"
    kinds = [("logits", "full"), ("target", "rows" if labels else "full")]
    if _is_dask(a["weight"]):
        kinds.append(("weight", "class"))
    a, masked = _rows_where(a, "logits", ax)
    kinds += [("where", "rows")] * masked
    c = _Call(fn, a, kinds, ax)
    out = c.meta(kinds)
    dtype = (out[0] if a["return_grad"] else out).dtype
    red = _reduction(a)
    C = c.lead.shape[ax]
    if labels:
        dask_w = _is_dask(a["weight"])
        denom = _Den(_label_denom, ["target"] + ["weight"] * dask_w + ["where"] * masked,
                     n_classes=C, ignore_index=int(a["ignore_index"]), dtype=dtype.str,
                     **({} if dask_w else {"weight": a["weight"]}))
    elif masked:
        denom = _Den(_weight_denom, ["where"], dtype=dtype.str)
    else:
        denom = float(math.prod(c.lead.shape) // C)
    return c.run(red, a["return_grad"], denom, dtype, 0)


def _rows_where(a, first, ax):
    """(a, masked): a with `where` broadcast to the rows' shape (the shape of `first`
    without the class axis ax) as a Dask array, when it is given."""
    if a.get("where") is None:
        return a, False
    x = da.asarray(a[first])
    rows = x.shape[:ax] + x.shape[ax + 1:]
    w = da.asarray(a["where"])
    check_broadcast(w, rows, "where", against="the per-row loss")
    return dict(a, where=da.broadcast_to(w, rows)), True


def _rows_mean(fn, a, names, batchmean=True):
    """A loss of rows of classes whose "mean" is over rows (entropy, KL, JS; distillation
    without labels)."""
    first = names[0]
    ax = _class_axis(a, first)
    kinds = [(n, "full") for n in names]
    a, masked = _rows_where(a, first, ax)
    kinds += [("where", "rows")] * masked
    kept = ["where"] * masked
    if a.get("labels") is not None:
        kinds.append(("labels", "rows"))
        kept.append("labels")
    c = _Call(fn, a, kinds, ax)
    out = c.meta(kinds)
    loss = out[0] if a["return_grad"] else out
    C = c.lead.shape[ax]
    denom = (_Den(_kept_rows, kept, ignore_index=int(a.get("ignore_index", 0))) if kept
             else float(math.prod(c.lead.shape) // C))
    return c.run(_reduction(a, batchmean), a["return_grad"], denom,
                 np.asarray(loss).dtype, _ngrads(out) if a["return_grad"] else None)


def _distillation(fn, a):
    if a["target"] is None:
        return _rows_mean(fn, a, ["student_logits", "teacher_logits"])
    ax = _class_axis(a, "student_logits")
    kinds = [("student_logits", "full"), ("teacher_logits", "full"), ("target", "rows")]
    a, masked = _rows_where(a, "student_logits", ax)
    kinds += [("where", "rows")] * masked
    c = _Call(fn, a, kinds, ax)
    out = c.meta(kinds)
    dtype = np.asarray(out[0] if a["return_grad"] else out).dtype
    denom = _Den(_label_denom, ["target"] + ["where"] * masked, n_classes=c.lead.shape[ax],
                 ignore_index=int(a["ignore_index"]), dtype=dtype.str)
    return c.run(_reduction(a, True), a["return_grad"], denom, dtype, 0)


def _logsumexp(fn, a):
    if not isinstance(a["axis"], int) or isinstance(a["axis"], bool):
        raise ValueError("fastloss.dask.logsumexp takes an int axis with Dask arrays "
                         f"(got {a['axis']!r}); merge the axes first (reshape)")
    ax = _class_axis(a, "x")
    kinds = [("x", "full")]
    c = _Call(fn, a, kinds, ax)
    out = c.meta(kinds)
    dtype = np.asarray(out[0] if a["return_grad"] else out).dtype
    return c.run(None, a["return_grad"], None, dtype, 0)


# --- elementwise losses --------------------------------------------------------------------

def _elementwise(fn, a, first, weights=(), weighted_mean=False, batch="full"):
    """A loss of aligned elements (batch="full") or of rows along the last axis (batch="rows",
    e.g. boxes (..., 4)). weights: names of arrays broadcast against the first.
    weighted_mean: "mean" divides by the sum of "weight" (regression) instead of the count."""
    x = da.asarray(a[first])
    ax = (x.ndim - 1) if batch == "rows" and x.ndim else None
    kinds = [(first, "full")] + [(n, "full") for n in _second(fn, first)]
    kinds += [(n, "bcast") for n in weights if a[n] is not None]
    masked = a.get("where") is not None
    if masked and batch == "rows":
        # the mean of no kept pairs is 0 (the box losses' rule): a denominator that
        # depends on the values cannot switch the reduction when the graph is built
        raise ValueError(f"where= is not taken with Dask arrays by fastloss.dask.{fn.__name__}: "
                         f"call it on each block (map_blocks) with reduction='none'")
    kinds += [("where", "bcast")] * masked
    c = _Call(fn, a, kinds, ax)
    out = c.meta(kinds)
    loss = out[0] if a["return_grad"] else out
    red = _reduction(a)
    n = math.prod(c.lead.shape) // (c.lead.shape[ax] if ax is not None else 1)
    denom = float(n)
    weighted = weighted_mean and a["weight"] is not None
    if weighted or masked:
        denom = _Den(_weight_denom, ["weight"] * weighted + ["where"] * masked,
                     dtype=np.asarray(loss).dtype.str)
    if batch == "rows" and red == "mean" and n == 0:
        red = "sum"          # the box losses' rule: the mean of no pairs is 0
    return c.run(red, a["return_grad"], denom, np.asarray(loss).dtype,
                 _ngrads(out) if a["return_grad"] else None)


def _second(fn, first):
    """The name of fn's second array parameter (target, boxes2)."""
    params = list(inspect.signature(fn).parameters)
    return [params[1]]


# --- losses over the whole batch ------------------------------------------------------------

def _whole(fn, a):
    """A loss that needs the whole batch (pairwise, contrastive, Gaussian): every Dask
    argument one chunk; returns a dask.delayed.Delayed of the in-memory call (its
    compute() gives exactly what fastloss returns, tuples included)."""
    split = [k for k, v in a.items() if _is_dask(v) and v.npartitions > 1]
    if split:
        raise ValueError(f"fastloss.dask.{fn.__name__} needs the whole batch at once: every Dask "
                         f"argument must be one chunk (rechunk(-1)); got "
                         + ", ".join(f"{k} in {a[k].npartitions} chunks" for k in split))
    names = [k for k, v in a.items() if _is_dask(v)]
    static = {k: v for k, v in a.items() if k not in names}
    return dask.delayed(_call_whole, pure=True)(fn, static, names, BLOCK_THREADS_WHOLE,
                                                *[a[k] for k in names])


# A whole-batch loss is one task: it runs on fastloss's own thread setting by default.
BLOCK_THREADS_WHOLE = None


def _call_whole(fn, static, names, threads, *arrays):
    with _config.thread_local_threads(threads):
        return fn(**static, **dict(zip(names, arrays)))


# --- the public names ----------------------------------------------------------------------

_PLANS = {
    "cross_entropy": _cross_entropy,
    "entropy": functools.partial(_rows_mean, names=["logits"]),
    "kl_divergence": functools.partial(_rows_mean, names=["p_logits", "q_logits"]),
    "js_divergence": functools.partial(_rows_mean, names=["p_logits", "q_logits"]),
    "distillation_loss": _distillation,
    "logsumexp": _logsumexp,
    "binary_cross_entropy_with_logits": functools.partial(_elementwise, first="logits",
                                                          weights=("weight", "pos_weight")),
    "sigmoid_focal_loss": functools.partial(_elementwise, first="logits"),
    **{n: functools.partial(_elementwise, first="input", weights=("weight",), weighted_mean=True)
       for n in ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "log_cosh_loss")},
    **{n: functools.partial(_elementwise, first="boxes1", batch="rows")
       for n in ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss")},
}
_WHOLE = ("pairwise_distances", "triplet_margin_loss", "batch_hard_triplet_loss", "info_nce_loss",
          "nt_xent_loss", "gaussian_kl", "mvn_kl", "vae_loss", "gaussian_nll_loss",
          "linear_cross_entropy", "softmax", "log_softmax")

for _name in list(_PLANS) + [n for n in _WHOLE if hasattr(_fl, n)]:
    globals()[_name] = _dask_version(getattr(_fl, _name), _PLANS.get(_name, _whole))
    __all__.append(_name)
del _name
