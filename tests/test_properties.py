"""Property-based tests: every public loss of fastloss against its float64 oracle in
fastloss.reference, over drawn shapes (0- and 1-length axes, 0-d where allowed, class axis
anywhere), dtypes (float64, float32, float16, bfloat16 with ml_dtypes, int64), memory layouts (C, Fortran, negative
strides, strided slices, read-only, np.memmap), special values (0, tiny, huge finite, -inf
where legal), options and SIMD paths, for the loss and the gradients (fresh and into
grad_out). Hypothesis draws the structure; the values come from a NumPy generator seeded by
a drawn integer (fast, and reproducible from the falsifying example). Example counts: the
hypothesis profile in conftest.py; the seed: --hypothesis-seed.

Tolerance: |kernel - oracle| <= rtol * (|oracle| + scale), where scale is the size of the
terms the result is made of (per sample, at least 1; summed for "sum", divided by the
denominator for "mean"); gradients relative to their largest entry or to the size of their
terms where those are larger (gunit). rtol: 1e-10 for float64, 2e-5 for float32 (float32
arithmetic, float64 accumulation), 2e-3 (1e-2) for what comes back in float16 (bfloat16):
HALF_NATIVE's outputs and gradients.

The issue-11 defects and the disagreements this suite found are tests of their own; those
still open are marked xfail(strict=True) with the reason and kept out of the general
strategies (narrowly, with a comment), so that each mark turns into a failure (XPASS) when
its fix lands: remove the mark and the exclusion then.
"""
import atexit
import itertools
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import example, given, strategies as st

import fastloss
from fastloss import reference

RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-5, np.dtype(np.float16): 2e-3}
# Read half precision natively: their outputs (softmax's) and gradients come back in it.
HALF_NATIVE = {"cross_entropy", "logsumexp", "softmax", "log_softmax", "entropy", "kl_divergence",
               "js_divergence", "distillation_loss"}
# not losses: the runtime and the package's facts
RUNTIME = {"__version__", "show_config", "get_num_threads", "set_num_threads", "threads",
           "get_simd", "set_simd", "available_levels", "release_memory", "set_pool_limit"}
FLOATS = [np.float64, np.float32, np.float16]
try:                                 # bfloat16 where ml_dtypes is installed
    from ml_dtypes import bfloat16
except ImportError:
    HALF = (np.dtype(np.float16),)
else:
    HALF = (np.dtype(np.float16), np.dtype(bfloat16))
    FLOATS.append(bfloat16)
    RTOL[HALF[1]] = 1e-2
INTS = [np.int64, np.int32, np.int8]
LAYOUTS = ["C", "F", "negative", "strided", "readonly", "memmap"]
_MEMMAP_DIR = tempfile.mkdtemp(prefix="fastloss-props-")
atexit.register(shutil.rmtree, _MEMMAP_DIR, True)
_memmaps = itertools.count()


# --- inputs ------------------------------------------------------------------------------

def compute_dtype(dtype):
    """The dtype a kernel computes in (README: float16 in float32, integers in float64)."""
    return np.dtype(np.float32) if np.dtype(dtype) in HALF + (np.float32,) else np.dtype(np.float64)


def lay_out(a, layout):
    """a (already of its dtype) with the same values in the given memory layout."""
    if a.ndim == 0 or layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "negative":                 # every axis reversed twice: negative strides
        return np.flip(np.flip(a).copy())
    if layout == "strided":                  # every second element of a larger array
        big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
        view = big[(slice(None, None, 2),) * a.ndim]
        view[...] = a
        return view
    if layout == "readonly" or a.size == 0:  # (an empty file cannot be mapped)
        r = a.copy()
        r.flags.writeable = False
        return r
    path = os.path.join(_MEMMAP_DIR, f"{next(_memmaps)}.bin")   # a read-only np.memmap
    w = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
    w[...] = a
    w.flush()
    del w
    r = np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)
    os.unlink(path)                          # the mapping stays valid
    return r


class F:
    """A float input of a case: float64 values, cast to the drawn dtype and laid out."""

    def __init__(self, values, layout=True):
        self.values = np.asarray(values, dtype=np.float64)
        self.layout = layout                 # False: always C-contiguous (e.g. var rows)


def shape(draw, min_dims=1, max_dims=3, zero=True, min_side=0, cap=240):
    """A small shape; 0-length axes when zero, at most cap elements."""
    sides = [1, 2, 3, 5, 17] + ([0] if zero and min_side == 0 else [])
    s = list(draw(st.lists(st.sampled_from(sides), min_size=min_dims, max_size=max_dims)))
    while int(np.prod(s)) > cap:
        s[int(np.argmax(s))] = 2
    return tuple(max(n, min_side) for n in s)


def values(draw, rng, shp, dtype, scale=(1.0, 5.0), specials=()):
    """Normal values of a drawn scale, with some entries replaced by drawn special values
    (those the dtype can hold)."""
    x = np.array(rng.normal(size=shp) * draw(st.sampled_from(scale)))
    big = np.finfo(compute_dtype(dtype) if np.dtype(dtype).kind == "f" else np.float64).max
    if np.dtype(dtype) == np.float16:
        big = 6e4
    specials = [v for v in specials if not np.isfinite(v) or abs(v) <= big]
    frac = draw(st.sampled_from([0.0, 0.0, 0.2, 0.6])) if specials else 0.0
    hit = rng.random(shp) < frac
    x[hit] = rng.choice(specials, size=int(hit.sum())) if specials else 0
    return x


LOGIT_SPECIALS = [0.0, 1e-300, -1e-300, 1e-40, 30.0, -30.0, 1e3, -1e3, 1e20, -1e20, 1e30]
ELEM_SPECIALS = [0.0, 1e-300, -1e-300, 1e-40, 1e30, -1e30, 1e300, -1e300, 1e20]


class Case:
    """One call: args/kwargs (F entries are the float inputs), the oracle's extra
    arguments, and a per-sample term scale (a function of the oracle's float64 inputs and
    its "none" losses; default: |loss| + 1)."""

    def __init__(self, args, kwargs, scale=None, grads=True, ints=True, out=False,
                 kernel_only=None, grad_only=None, gunit=None):
        self.args, self.kwargs = list(args), dict(kwargs)
        self.kernel_only = kernel_only or {}     # performance-only options the oracle lacks
        self.grad_only = grad_only or {}         # options of a return_grad=True call
        self.gunit = gunit   # f(oracle inputs, options): the size of a gradient's terms
        #                      (a number, or per entry), 1 by default
        self.scale, self.grads, self.ints, self.out = scale, grads, ints, out


def materialise(case, dtype, layouts):
    """(kernel args, kernel kwargs, oracle args, oracle kwargs)."""
    it = iter(layouts)

    def conv(v):
        if not isinstance(v, F):
            return v, v
        vals = v.values
        if np.dtype(dtype).kind in "iu":
            vals = np.rint(np.clip(np.nan_to_num(vals, posinf=0, neginf=0), -100, 100))
        a = vals.astype(dtype)
        k = lay_out(a, next(it) if v.layout else "C")
        return k, np.asarray(k, dtype=np.float64)

    ka, oa = zip(*[conv(v) for v in case.args]) if case.args else ((), ())
    kk, ok = {}, {}
    for name, v in case.kwargs.items():
        kk[name], ok[name] = conv(v)
    return list(ka), kk, list(oa), ok


def n_float_inputs(case):
    return sum(isinstance(v, F) for v in [*case.args, *case.kwargs.values()])


# --- comparison --------------------------------------------------------------------------

def assert_close(actual, expected, tol, what):
    """Non-finite entries equal (NaN where NaN, inf of the same sign); finite ones within
    tol (broadcastable)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, oracle {e.shape}"
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), e.shape)
    fin = np.isfinite(e)
    bad_nonfinite = ~fin & ~((a == e) | (np.isnan(a) & np.isnan(e)))
    err = np.where(fin, np.abs(a - e), 0.0)
    bad = bad_nonfinite | (fin & ~(err <= tol))
    if bad.any():
        i = np.unravel_index(np.argmax(bad), e.shape) if e.ndim else ()
        raise AssertionError(f"{what}: {int(bad.sum())} of {e.size} entries differ; at {i}: "
                             f"kernel {a[i]!r}, oracle {e[i]!r}, tol {tol[i]!r}")


def reduction_factor(per, reduction, loss):
    """d loss / d sum(per): 1, or 1 / the denominator of "mean"."""
    if reduction in (None, "none", "sum"):
        return 1.0
    s = np.sum(per)
    return abs(loss / s) if np.isfinite(s) and s != 0 and np.isfinite(loss) else 1.0 / max(per.size, 1)


def as_tuple(g):
    return g if isinstance(g, tuple) else (g,)


def oracle_call(name, case, oa, ok, **kw):
    """The oracle on the float64 inputs."""
    return getattr(reference, name)(*oa, **ok, **kw)


def describe(v):
    if isinstance(v, np.ndarray):
        return f"{type(v).__name__}{v.shape}:{v.dtype}:{'C' if v.flags.c_contiguous else 'nc'}"
    return repr(v)


def check_case(name, case, dtype, layouts, grad_out):
    """check_case_ with the call spelled out in a failure's message."""
    try:
        check_case_(name, case, dtype, layouts, grad_out)
    except (AssertionError, ValueError, TypeError, IndexError) as e:
        args = ", ".join(describe(getattr(a, "values", a)) for a in case.args)
        kw = ", ".join(f"{k}={describe(getattr(v, 'values', v))}" for k, v in
                       {**case.kwargs, **case.kernel_only, **case.grad_only}.items())
        raise AssertionError(f"{type(e).__name__}: {e}\n  {name}({args}, {kw}) as {np.dtype(dtype)}, layouts "
                             f"{layouts}, grad_out={grad_out}") from None


def check_case_(name, case, dtype, layouts, grad_out):
    fn = getattr(fastloss, name)
    ka, kk, oa, ok = materialise(case, dtype, layouts)
    cdt = compute_dtype(dtype)
    half = np.dtype(dtype) in HALF
    odt = np.dtype(dtype) if half and name in HALF_NATIVE else cdt   # outputs' and gradients' dtype
    reduction = ok.get("reduction")

    out = None
    if case.out and grad_out and not half:
        out = np.full(ka[0].shape, np.nan, cdt)
        kk = {**kk, "out": out}
    loss = fn(*ka, **kk, **case.kernel_only)
    if out is not None:
        assert loss is out, "the result is not out"
    exp = oracle_call(name, case, oa, ok)
    per = np.asarray(exp, dtype=np.float64)     # no reduction: an elementwise output
    if reduction is not None:
        per = np.asarray(oracle_call(name, case, oa, {**ok, "reduction": "none"}), dtype=np.float64)
    factor = reduction_factor(per, reduction, exp)
    scale = np.abs(per) + 1.0 if case.scale is None else case.scale(oa, ok, per)
    if reduction not in (None, "none"):
        scale = np.sum(scale) * factor
    ldt = odt if case.out else cdt                # f16: a loss in f32, an output in odt
    exp_c = np.asarray(exp, dtype=np.float64).astype(ldt)   # what the dtype can hold
    assert np.asarray(loss).dtype == ldt, f"loss dtype {np.asarray(loss).dtype}"
    assert_close(loss, exp_c, RTOL[ldt] * (np.abs(exp_c) + scale), f"{name} loss")
    if not case.grads:
        return
    ref_grads = as_tuple(oracle_call(name, case, oa, ok, return_grad=True, **case.grad_only)[1])
    bufs = None
    if grad_out and not half:
        bufs = tuple(np.full(g.shape, np.nan, cdt) for g in ref_grads)
        kk = {**kk, "grad_out": bufs if len(bufs) > 1 else bufs[0]}
    loss2, grads = fn(*ka, **kk, **case.kernel_only, **case.grad_only, return_grad=True)
    grads = as_tuple(grads)
    assert_close(loss2, exp_c, RTOL[ldt] * (np.abs(exp_c) + scale), f"{name} loss with return_grad")
    assert len(grads) == len(ref_grads)
    for i, (g, rg) in enumerate(zip(grads, ref_grads)):
        assert g.dtype == odt, f"grad {i} dtype {g.dtype}"    # the compute dtype (README), f16 native
        if bufs is not None:
            assert g is bufs[i], f"grad {i} is not grad_out[{i}]"
        rg = np.asarray(rg, dtype=np.float64).astype(odt).astype(np.float64)
        # relative to the largest entry, at least the gradient of one unit term
        unit = factor * (1.0 if case.gunit is None else case.gunit(oa, ok))   # may be per entry
        gscale = np.maximum(np.max(np.abs(rg[np.isfinite(rg)]), initial=0.0), unit)
        assert_close(g, rg, RTOL[odt] * (np.abs(rg) + gscale), f"{name} grad[{i}]")


# --- one case builder per public function ---------------------------------------------
# Each draws a Case from (draw, rng, dtype); None: this dtype is not accepted.

BUILDERS = {}


def builds(*names):
    def deco(f):
        for n in names:
            BUILDERS[n] = f
        return f
    return deco


def red(draw, extra=()):
    return draw(st.sampled_from(["mean", "sum", "none", *extra]))


def class_axis(draw, shp):
    return draw(st.integers(-len(shp), len(shp) - 1))


def row_shape(shp, ax):
    return shp[:ax % len(shp)] + shp[ax % len(shp) + 1:]


def labels_for(draw, rng, rows, C, ignore_index):
    y = np.array(rng.integers(0, C, size=rows))
    y[rng.random(rows) < draw(st.sampled_from([0.0, 0.3, 1.0]))] = ignore_index
    return y.astype(draw(st.sampled_from(INTS)))


def neg_inf_off(draw, rng, x, keep=False):
    """-inf in some entries of x where keep is False (keep: entries that must stay finite);
    rows of only -inf included (README "Special values": NaN rows)."""
    if draw(st.booleans()):
        x[(rng.random(x.shape) < draw(st.sampled_from([0.3, 1.0]))) & ~np.asarray(keep)] = -np.inf
    return x


@builds("cross_entropy")
def _cross_entropy(draw, rng, dtype, name=None):
    shp = shape(draw, 1, 3, min_side=0)
    ax = class_axis(draw, shp)
    shp = tuple(max(n, 1) if i == ax % len(shp) else n for i, n in enumerate(shp))
    C, rows = shp[ax], row_shape(shp, ax)
    x = values(draw, rng, shp, dtype, (1.0, 5.0), LOGIT_SPECIALS)
    kw = dict(axis=ax, reduction=red(draw))
    eps = draw(st.sampled_from([0.0, 0.0, 0.1, 1.0]))
    kw.update(label_smoothing=eps, z_loss=draw(st.sampled_from([0.0, 0.0, 1e-3, 0.5])),
              softcap=draw(st.sampled_from([None, None, 3.0, 30.0])))
    if draw(st.booleans()):
        kw["weight"] = F(rng.uniform(0.6, 2.0, C), layout=False)   # integer dtypes: >= 1
    xm = np.moveaxis(x, ax, -1)             # a view: edits reach x
    if draw(st.booleans()):                  # integer labels
        ii = draw(st.sampled_from([-100, 0, C - 1]))
        kw["ignore_index"] = ii
        y = labels_for(draw, rng, rows, C, ii)
        keep = np.ones(xm.shape, bool) if eps > 0 else (np.arange(C) == y[..., None])
        neg_inf_off(draw, rng, xm, keep)
        target = y
    else:                                    # probabilities
        t = rng.random(xm.shape) * (rng.random(xm.shape) < 0.7)
        t[..., 0] += 1e-3
        t /= t.sum(-1, keepdims=True)
        keep = np.ones(xm.shape, bool) if eps > 0 else t > 0
        neg_inf_off(draw, rng, xm, keep)
        target = F(np.moveaxis(t, -1, ax))
    # integer probabilities would be labels
    return Case([F(x), target], kw, ints=not isinstance(target, F))


@builds("linear_cross_entropy")
def _linear_cross_entropy(draw, rng, dtype, name=None):
    lead = shape(draw, 0, 2, cap=40)
    D = draw(st.sampled_from([1, 3, 8]))
    V = draw(st.sampled_from([1, 2, 7, 33]))
    h = values(draw, rng, lead + (D,), dtype, (0.5, 2.0), [0.0])
    W = values(draw, rng, (V, D), dtype, (0.5, 2.0), [0.0])
    kw = dict(reduction=red(draw), label_smoothing=draw(st.sampled_from([0.0, 0.1])),
              z_loss=draw(st.sampled_from([0.0, 1e-2])), softcap=draw(st.sampled_from([None, 5.0])))
    blocks = {"block_bytes": draw(st.sampled_from([None, V * 8, V * 8 * 3]))}
    ii = draw(st.sampled_from([-100, 0]))
    kw["ignore_index"] = ii
    bias = draw(st.booleans())
    if bias:
        kw["linear_bias"] = F(rng.normal(size=V), layout=False)
    if draw(st.booleans()):
        kw["weight"] = F(rng.uniform(0.6, 2.0, V), layout=False)   # integer dtypes: >= 1
    names = ("input", "linear_weight") + (("linear_bias",) if bias else ())
    wrt = {"grad_wrt": draw(st.sampled_from([None, names[:1], names[1:], names]))}
    y = labels_for(draw, rng, lead, V, ii)

    def scale(oa, ok, per):                  # logits come from a float32 product of D terms
        return np.abs(per) + 1.0 + D * np.max(np.abs(oa[0]), initial=0) * np.max(np.abs(oa[1]), initial=0)
    return Case([F(h), F(W), y], kw, scale, kernel_only=blocks, grad_only=wrt)


@builds("binary_cross_entropy_with_logits")
def _bce(draw, rng, dtype, name=None):
    shp = shape(draw, 0, 3)
    x = values(draw, rng, shp, dtype, (1.0, 5.0), ELEM_SPECIALS)
    t = rng.random(shp) * draw(st.sampled_from([1.0, 0.0])) + (rng.random(shp) < 0.3)
    t = np.minimum(t, 1.0)
    kw = dict(reduction=red(draw))
    wshape = draw(st.sampled_from([None, shp, shp[-1:], (1,) * len(shp)]))
    if wshape is not None:
        kw["weight"] = F(rng.uniform(0.0, 2.0, wshape))
    if shp and draw(st.booleans()):
        kw["pos_weight"] = F(rng.uniform(0.5, 3.0, shp[-1:]))

    def scale(oa, ok, per):                  # the terms (1 - t) x and lw softplus(-x)
        x, t = oa
        w = ok.get("weight", 1.0)
        pw = ok.get("pos_weight", 1.0)
        return np.abs(per) + np.abs(w) * (np.abs((1 - t) * x) + (1 + (pw - 1) * t) * np.logaddexp(0, -x)) + 1.0
    return Case([F(x), F(t)], kw, scale)


@builds("sigmoid_focal_loss")
def _focal(draw, rng, dtype, name=None):
    shp = shape(draw, 0, 3)
    x = values(draw, rng, shp, dtype, (1.0, 3.0, 30.0), LOGIT_SPECIALS)
    t = draw(st.sampled_from(["binary", "soft"]))
    t = (rng.random(shp) < 0.5).astype(float) if t == "binary" else rng.random(shp)
    kw = dict(alpha=draw(st.sampled_from([0.25, -1.0, 0.5, 1.0])),
              gamma=draw(st.sampled_from([0.0, 1.0, 2.0, 3.0])), reduction=red(draw))
    return Case([F(x), F(t)], kw)


@builds("logsumexp", "softmax", "log_softmax")
def _softmax_family(draw, rng, dtype, name="logsumexp"):
    shp = shape(draw, 1, 3)
    ax = class_axis(draw, shp)
    shp = tuple(max(n, 1) if i == ax % len(shp) else n for i, n in enumerate(shp))
    x = values(draw, rng, shp, dtype, (1.0, 5.0, 30.0), LOGIT_SPECIALS)
    neg_inf_off(draw, rng, x)
    return Case([F(x)], dict(axis=ax), grads=name == "logsumexp", out=name != "logsumexp")


@builds("entropy")
def _entropy(draw, rng, dtype, name=None):
    shp = shape(draw, 1, 3)
    ax = class_axis(draw, shp)
    shp = tuple(max(n, 1) if i == ax % len(shp) else n for i, n in enumerate(shp))
    x = values(draw, rng, shp, dtype, (1.0, 5.0, 30.0), LOGIT_SPECIALS)
    neg_inf_off(draw, rng, x)
    return Case([F(x)], dict(axis=ax, reduction=red(draw, ["batchmean"])), gunit=_log_unit)


def _pair_logits(draw, rng, dtype, scale=(1.0, 5.0, 30.0)):
    shp = shape(draw, 1, 3)
    ax = class_axis(draw, shp)
    shp = tuple(max(n, 1) if i == ax % len(shp) else n for i, n in enumerate(shp))
    p = values(draw, rng, shp, dtype, scale, LOGIT_SPECIALS)
    q = values(draw, rng, shp, dtype, scale, LOGIT_SPECIALS)
    return shp, ax, p, q


def _log_unit(oa, ok):
    """Gradients p (log p - log q) / T: the logs carry the error of the largest x / T."""
    big = max(np.max(np.abs(a[np.isfinite(a)]), initial=0) for a in oa[:2] if a is not None)
    T = ok.get("temperature", 1.0)
    return (1 + big / T) / T


@builds("kl_divergence")
def _kl(draw, rng, dtype, name=None):
    shp, ax, p, q = _pair_logits(draw, rng, dtype)
    neg_inf_off(draw, rng, p)
    # q = -inf where p > 0 makes KL inf and its p-gradient p * inf: in float32 a probability
    # that underflows to 0 there gives 0 or NaN where float64 gives inf (the special values
    # of that case are pinned in tests/test_special_values.py for both dtypes)
    neg_inf_off(draw, rng, q, keep=np.isfinite(p) if compute_dtype(dtype) == np.float32 else False)
    T = draw(st.sampled_from([1.0, 0.5, 2.0, 10.0]))
    return Case([F(p), F(q)], dict(axis=ax, temperature=T, reduction=red(draw, ["batchmean"])),
                gunit=_log_unit)


@builds("js_divergence")
def _js(draw, rng, dtype, name=None):
    shp, ax, p, q = _pair_logits(draw, rng, dtype)
    neg_inf_off(draw, rng, p)
    neg_inf_off(draw, rng, q)
    kw = dict(axis=ax, temperature=draw(st.sampled_from([1.0, 0.5, 2.0, 10.0])),
              beta=draw(st.sampled_from([0.5, 0.1, 0.9, 0.0, 1.0])), reduction=red(draw))
    return Case([F(p), F(q)], kw, gunit=_log_unit)


@builds("distillation_loss")
def _distill(draw, rng, dtype, name=None):
    shp, ax, s, t = _pair_logits(draw, rng, dtype)
    # the teacher may put no mass on a class, or be a row of only -inf (NaN; with alpha = 0
    # it is not read: test_distillation_term_of_weight_zero_is_left_out)
    neg_inf_off(draw, rng, t)
    # the student too (inf where the teacher has mass); in float32 only where the teacher is
    # -inf too: a teacher probability that underflows to 0 there (e.g. exp(-120) at T = 0.5)
    # gives a finite float32 loss where float64 gives inf (as kl_divergence's q)
    neg_inf_off(draw, rng, s, keep=np.isfinite(t) if compute_dtype(dtype) == np.float32 else False)
    kw = dict(axis=ax, temperature=draw(st.sampled_from([1.0, 0.5, 2.0, 10.0])),
              reduction=red(draw))
    if draw(st.booleans()):
        ii = draw(st.sampled_from([-100, 0]))
        y = labels_for(draw, rng, row_shape(shp, ax), shp[ax], ii)
        kw.update(target=y, ignore_index=ii, alpha=draw(st.sampled_from([0.5, 0.0, 1.0, 0.9])))
    return Case([F(s), F(t)], kw)


@builds("gaussian_kl")
def _gaussian_kl(draw, rng, dtype, name=None):
    shp = shape(draw, 1, 3)
    mu_sp = [0.0, 1e-300, 1e30, -1e30]
    args = [F(values(draw, rng, shp, dtype, (1.0, 3.0), mu_sp)),
            F(values(draw, rng, shp, dtype, (1.0, 3.0), [0.0, 1e-300, 20.0, -20.0]))]
    mode = draw(st.sampled_from(["none", "both", "mu", "logvar"]))
    qshape = draw(st.sampled_from([shp, shp[-1:]]))
    mq = F(values(draw, rng, qshape, dtype, (1.0,), mu_sp)) if mode in ("both", "mu") else None
    lq = F(values(draw, rng, qshape, dtype, (1.0,), [0.0, 5.0])) if mode in ("both", "logvar") else None
    args += [mq, lq]

    def scale(oa, ok, per):
        mp, lp = oa[0], oa[1]
        mq = 0.0 if oa[2] is None else oa[2]
        lq = 0.0 if oa[3] is None else oa[3]
        with np.errstate(over="ignore", invalid="ignore"):
            t = np.abs(lq) + np.abs(lp) + np.exp(lp - lq) + (mp - mq) ** 2 / np.exp(lq) + 1
        return np.abs(per) + np.sum(np.broadcast_to(t, np.broadcast_shapes(np.shape(t), mp.shape)), axis=-1)
    return Case(args, dict(reduction=red(draw, ["batchmean"])), scale)


@builds("mvn_kl")
def _mvn_kl(draw, rng, dtype, name=None):
    if np.dtype(dtype).kind != "f":
        return None
    batch = shape(draw, 0, 2, cap=12)
    d = draw(st.sampled_from([1, 2, 3, 5]))

    def spd(b):
        A = rng.normal(size=b + (d, d))
        return A @ np.swapaxes(A, -1, -2) + d * np.eye(d)
    cov_p = spd(draw(st.sampled_from([batch, ()])))
    cov_q = spd(draw(st.sampled_from([batch, ()])))
    args = [F(rng.normal(size=batch + (d,))), F(cov_p), F(rng.normal(size=batch + (d,))), F(cov_q)]

    def scale(oa, ok, per):                  # terms: traces and log-determinants of d x d
        return np.abs(per) + 10.0 * d * d
    return Case(args, dict(reduction=red(draw, ["batchmean"])), scale)


@builds("vae_loss")
def _vae(draw, rng, dtype, name=None):
    B = draw(st.sampled_from([1, 2, 5]))
    data = shape(draw, 0, 2, cap=40)
    L = draw(st.sampled_from([1, 3, 8]))
    kind = draw(st.sampled_from(["mse", "bce"]))
    recon = values(draw, rng, (B,) + data, dtype, (1.0, 3.0), [0.0, 1e-300, 30.0, -30.0])
    x = rng.random(draw(st.sampled_from([(B,) + data, data]))) if kind == "bce" else rng.normal(size=(B,) + data)
    args = [F(recon), F(x), F(values(draw, rng, (B, L), dtype, (1.0,), [0.0, 1e-300])),
            F(values(draw, rng, (B, L), dtype, (1.0,), [0.0, 5.0, -5.0]))]
    kw = dict(recon_loss=kind, beta=draw(st.sampled_from([1.0, 0.5, 0.0])), reduction=red(draw))

    def scale(oa, ok, per):
        r, x, m, lv = oa
        rec = np.abs(r) * (np.abs(r) + np.abs(x) + 1) + np.abs(x) ** 2
        return (np.abs(per) + 1 + np.sum(rec.reshape(B, -1), axis=1)
                + np.sum(1 + np.abs(lv) + m ** 2 + np.exp(lv), axis=1))
    return Case(args, kw, scale)


@builds("gaussian_nll_loss")
def _gaussian_nll(draw, rng, dtype, name=None):
    shp = shape(draw, 1, 3)
    # 1e20 only in float64: float32 terms (x - t)^2 / var overflow (found, own test)
    x = values(draw, rng, shp, dtype, (1.0, 3.0), [0.0, 1e-300] + [1e20] * (dtype == np.float64))
    t = rng.normal(size=shp)
    vshape = draw(st.sampled_from([shp, shp[:-1]]))
    v = rng.uniform(0.05, 3.0, vshape)
    v[rng.random(vshape) < 0.2] = draw(st.sampled_from([0.0, 1e-9, 1e-300]))   # clamped at eps
    kw = dict(full=draw(st.booleans()), eps=draw(st.sampled_from([1e-6, 1e-3])), reduction=red(draw))

    def scale(oa, ok, per):
        x, v = oa[0], oa[2]
        if v.shape != x.shape and v.ndim and v.shape == x.shape[:-1]:   # one var per row
            v = v[..., None]
        vv = np.maximum(v, ok["eps"])
        return np.abs(per) + 1 + np.abs(np.log(vv)) + (oa[0] - oa[1]) ** 2 / vv
    return Case([F(x), F(t), F(v)], kw, scale)


@builds("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "log_cosh_loss")
def _elementwise(draw, rng, dtype, name=None):
    shp = shape(draw, 0, 3)
    x = values(draw, rng, shp, dtype, (1.0, 3.0), ELEM_SPECIALS)
    t = values(draw, rng, shp, dtype, (1.0, 3.0), ELEM_SPECIALS)
    same = rng.random(shp) < 0.2             # residual exactly 0 (sign(0) = 0)
    t[same] = x[same]
    kw = dict(reduction=red(draw))
    wshape = draw(st.sampled_from([None, shp, shp[-1:], (1,) * len(shp)]))
    if wshape is not None:
        kw["weight"] = F(rng.uniform(0.1, 2.0, wshape))
    option = {"huber_loss": "delta", "smooth_l1_loss": "beta"}.get(name)
    if option:
        kw[option] = draw(st.sampled_from([1.0, 0.5, 2.0] + [0.0] * (option == "beta")))

    def scale(oa, ok, per):
        w = np.abs(ok.get("weight", 1.0))
        r = np.abs(oa[0] - oa[1])
        with np.errstate(over="ignore"):     # the terms of r = x - t
            return np.abs(per) + w * (1 + (np.abs(oa[0]) + np.abs(oa[1])) * (1 + r) * 1e-6)
    return Case([F(x), F(t)], kw, scale)


def _boxes(draw, rng, shp, dtype):
    xy = rng.normal(size=shp + (2,)) * draw(st.sampled_from([1.0, 10.0]))
    wh = rng.uniform(0, 3, size=shp + (2,)) * (rng.random(shp + (2,)) > 0.1)   # some zero-size
    return np.concatenate([xy, xy + wh], axis=-1)


@builds("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss")
def _box(draw, rng, dtype, name=None):
    shp = shape(draw, 0, 2, zero=True, cap=60)
    b1 = _boxes(draw, rng, shp, dtype)
    b2 = _boxes(draw, rng, shp, dtype)
    same = rng.random(shp) < 0.2
    b2[same] = b1[same]
    kw = dict(eps=draw(st.sampled_from([1e-7, 1e-3])), reduction=red(draw))

    def scale(oa, ok, per):                  # coordinates of size |b| lose their low bits
        m = np.max(np.abs(np.concatenate([oa[0], oa[1]], axis=-1)), axis=-1, initial=0)
        return np.abs(per) + 1 + m

    def gunit(oa, ok):                       # terms of size length / (union + eps): thin boxes
        b1, b2 = oa
        w = np.concatenate([b1[..., 2:] - b1[..., :2], b2[..., 2:] - b2[..., :2]], axis=-1)
        union = np.prod(w[..., :2], axis=-1) + np.prod(w[..., 2:], axis=-1)
        return 1 + np.max(w, axis=-1, keepdims=True, initial=0) / (union[..., None] / 2 + ok["eps"])
    return Case([F(b1), F(b2)], kw, scale, gunit=gunit)


@builds("pairwise_distances")
def _pairwise(draw, rng, dtype, name=None):
    N, M = draw(st.sampled_from([0, 1, 3, 9])), draw(st.sampled_from([0, 1, 4, 17]))
    D = draw(st.sampled_from([0, 1, 3, 8])) if N and M else draw(st.sampled_from([1, 3]))
    x = values(draw, rng, (N, D), dtype, (1.0, 10.0), [0.0])
    y = None if draw(st.booleans()) else F(values(draw, rng, (M, D), dtype, (1.0, 10.0), [0.0]))
    metric = draw(st.sampled_from(["sqeuclidean", "euclidean", "cosine"]))

    def scale(oa, ok, per):                  # the GEMM identity: |x|^2 + |y|^2 - 2 x.y
        nx = np.sum(oa[0] ** 2, axis=1)
        ny = nx if oa[1] is None else np.sum(oa[1] ** 2, axis=1)
        s = nx[:, None] + ny[None, :]
        if metric == "euclidean":            # sqrt of a value off by rtol * s
            return np.abs(per) + 1 + s / np.maximum(per, np.sqrt(s) * 1e-4 + 1e-300)
        return np.abs(per) + 1 + (s if metric == "sqeuclidean" else 0)
    return Case([F(x), y], dict(metric=metric), scale, grads=False)


@builds("triplet_margin_loss")
def _triplet(draw, rng, dtype, name=None):
    shp = shape(draw, 1, 2)
    shp = shp[:-1] + (max(shp[-1], 1),)     # D = 0: the oracle cannot reshape
    a = values(draw, rng, shp, dtype, (1.0, 3.0), [0.0])
    pos = a + rng.normal(size=shp) * 0.5
    neg = a + rng.normal(size=shp)
    same = rng.random(shp[:-1]) < 0.2        # positive equal to the anchor: distance 0
    pos[same] = a[same]
    squared = draw(st.booleans())
    kw = dict(margin=draw(st.sampled_from([1.0, 0.0, 0.3])),
              p=2.0 if squared else draw(st.sampled_from([2.0, 1.0, 3.0, np.inf])),
              eps=draw(st.sampled_from([1e-6, 0.0])), swap=draw(st.booleans()),
              squared=squared, reduction=red(draw))

    def scale(oa, ok, per):
        a, p, n = (np.abs(v) for v in oa)
        s = np.sum(a + p + n, axis=-1)
        return np.abs(per) + 1 + ok["margin"] + (s * s if squared else s)
    return Case([F(a), F(pos), F(neg)], kw, scale)


@builds("batch_hard_triplet_loss")
def _batch_hard(draw, rng, dtype, name=None):
    N = draw(st.sampled_from([2, 3, 5, 12]))      # at least 2 rows (a ValueError)
    D = draw(st.sampled_from([1, 3, 8]))
    e = values(draw, rng, (N, D), dtype, (1.0,), [0.0])
    lab = rng.integers(0, draw(st.sampled_from([1, 2, 4])), N).astype(draw(st.sampled_from(INTS)))
    squared = draw(st.booleans())
    kw = dict(margin=draw(st.sampled_from([1.0, 0.2, 0.0])), squared=squared,
              mining=draw(st.sampled_from(["hard", "all"])), reduction=red(draw))

    def scale(oa, ok, per):
        s = 4 * np.max(np.sum(oa[0] ** 2, axis=1), initial=0)
        d = (s if squared else np.sqrt(s)) * (N * N if ok["mining"] == "all" else 1)
        return np.abs(per) + 1 + ok["margin"] + d

    def gunit(oa, ok):
        # (e_i - e_j) / d_ij with d_ij from the GEMM identity, off by eps |e|^2 / d^2
        E = oa[0]
        d2 = np.sum((E[:, None] - E[None]) ** 2, axis=-1)
        d2min = np.min(d2[d2 > 0], initial=np.inf)
        return 1.0 if squared else max(1.0, np.max(np.sum(E * E, axis=1)) / d2min)
    return Case([F(e), lab], kw, scale, gunit=gunit)


@builds("info_nce_loss")
def _info_nce(draw, rng, dtype, name=None):
    N, D = draw(st.sampled_from([2, 5, 17])), draw(st.sampled_from([1, 3, 8]))
    normalize = draw(st.booleans())
    q = values(draw, rng, (N, D), dtype, (1.0,), [0.0] if not normalize else [])
    k = q + rng.normal(size=(N, D))
    T = draw(st.sampled_from([0.07, 0.5, 1.0]))
    kw = dict(temperature=T, symmetric=draw(st.booleans()), normalize=normalize, reduction=red(draw))

    def scale(oa, ok, per):
        nq, nk = (np.linalg.norm(v, axis=1) for v in oa)
        s = (1.0 if normalize else np.max(nq, initial=0) * np.max(nk, initial=0)) / T
        return np.abs(per) + 1 + s
    return Case([F(q), F(k)], kw, scale, gunit=_normalized_unit)


@builds("nt_xent_loss")
def _nt_xent(draw, rng, dtype, name=None):
    N, D = draw(st.sampled_from([2, 5, 17])), draw(st.sampled_from([1, 3, 8]))
    z1 = rng.normal(size=(N, D))
    z2 = z1 + rng.normal(size=(N, D)) * 0.5
    T = draw(st.sampled_from([0.07, 0.5, 1.0]))
    return Case([F(z1), F(z2)], dict(temperature=T, reduction=red(draw)),
                lambda oa, ok, per: np.abs(per) + 1 + 1 / T, gunit=_normalized_unit)


def _normalized_unit(oa, ok):
    """Through a normalisation x / |x| a similarity's gradient is 1 / (T |x|)."""
    norms = np.concatenate([np.linalg.norm(v, axis=1) for v in oa])
    small = np.min(norms, initial=np.inf) if ok.get("normalize", True) else 1.0
    return 1.0 / (ok["temperature"] * max(small, 1e-12))    # a zero row: 1 / eps


# --- the properties ---------------------------------------------------------------------

def test_every_public_function_is_covered():
    """A new public function fails here until it has a builder (and an oracle)."""
    public = set(fastloss.__all__) - RUNTIME
    assert public == set(BUILDERS), (public ^ set(BUILDERS))
    assert all(callable(getattr(reference, n, None)) for n in public)


def draw_case(draw, name, dtypes):
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    case = BUILDERS[name](draw, rng, dtype, name)
    if case is None or (dtype.kind in "iu" and not case.ints):
        dtype = np.dtype(np.float64)
        case = BUILDERS[name](draw, rng, dtype, name)
    layouts = [draw(st.sampled_from(LAYOUTS)) for _ in range(n_float_inputs(case))]
    return case, dtype, layouts


@pytest.mark.parametrize("name", sorted(BUILDERS))
@given(data=st.data())
def test_matches_oracle(name, data):
    """Loss and gradients (fresh and into grad_out) of every public function against its
    oracle, on every SIMD path the CPU has."""
    case, dtype, layouts = draw_case(data.draw, name, FLOATS + INTS[:1])
    level = data.draw(st.sampled_from(fastloss.available_levels()))
    old = fastloss.get_simd()
    fastloss.set_simd(level)
    try:
        check_case(name, case, dtype, layouts, grad_out=data.draw(st.booleans()))
    finally:
        fastloss.set_simd(old)


# --- outputs that overlap inputs (issue 11 item 1) -----------------------------------------
# (function, input arrays as a function of (rng, rows, cols), which input a gradient
# buffer overlaps, which gradient, kwargs). 100 x 60 stays under the threading threshold,
# so a clobbered input gives the same wrong answer every run.

def _labels(rng, n, c):
    return rng.integers(0, c, n)


def _probs(rng, n, c):
    t = rng.random((n, c))
    return t / t.sum(1, keepdims=True)


def _spd(rng, n, d):
    A = rng.normal(size=(n, d, d))
    return A @ np.swapaxes(A, -1, -2) + d * np.eye(d)


def _nc(rng, n, c):
    return rng.normal(size=(n, c))


OVERLAP = {
    # name: (inputs, kwargs, [(input index, gradient index), ...]); the gradient of
    # input i has input i's shape
    "cross_entropy": (lambda r, n, c: [_nc(r, n, c), _labels(r, n, c)], {}, [(0, 0)]),
    "cross_entropy/probs": (lambda r, n, c: [_nc(r, n, c), _probs(r, n, c)], {}, [(0, 0), (1, 0)]),
    "linear_cross_entropy": (lambda r, n, c: [_nc(r, n, c), _nc(r, 7, c), _labels(r, n, 7)], {},
                             [(0, 0)]),
    "binary_cross_entropy_with_logits": (lambda r, n, c: [_nc(r, n, c), r.random((n, c))], {},
                                         [(0, 0), (1, 0)]),
    "sigmoid_focal_loss": (lambda r, n, c: [_nc(r, n, c), r.random((n, c))], {}, [(0, 0), (1, 0)]),
    "logsumexp": (lambda r, n, c: [_nc(r, n, c)], {}, [(0, 0)]),
    "entropy": (lambda r, n, c: [_nc(r, n, c)], {}, [(0, 0)]),
    "kl_divergence": (lambda r, n, c: [_nc(r, n, c), _nc(r, n, c)], {}, [(0, 0), (1, 1), (1, 0), (0, 1)]),
    "js_divergence": (lambda r, n, c: [_nc(r, n, c), _nc(r, n, c)], {}, [(0, 0), (1, 1), (1, 0), (0, 1)]),
    "distillation_loss": (lambda r, n, c: [_nc(r, n, c), _nc(r, n, c)], {"target": "labels"},
                          [(0, 0), (1, 0)]),
    "gaussian_kl": (lambda r, n, c: [_nc(r, n, c), _nc(r, n, c), _nc(r, n, c), _nc(r, n, c)], {},
                    [(0, 0), (1, 1), (2, 0), (0, 3)]),
    "mvn_kl": (lambda r, n, c: [_nc(r, n, 3), _spd(r, n, 3), _nc(r, n, 3), _spd(r, n, 3)], {},
               [(0, 0), (2, 0), (0, 2)]),
    "vae_loss": (lambda r, n, c: [_nc(r, n, c), r.random((n, c)), _nc(r, n, c), _nc(r, n, c)], {},
                 [(0, 0), (1, 0), (2, 1), (3, 2), (3, 1)]),
    "gaussian_nll_loss": (lambda r, n, c: [_nc(r, n, c), _nc(r, n, c), r.uniform(0.5, 2, (n, c))], {},
                          [(0, 0), (1, 0), (2, 1), (2, 0)]),
    **{k: (lambda r, n, c: [_nc(r, n, c), _nc(r, n, c)], {}, [(0, 0), (1, 0)])
       for k in ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "log_cosh_loss")},
    **{k: (lambda r, n, c: [_box_pairs(r, n * c // 4), _box_pairs(r, n * c // 4)], {},
           [(0, 0), (1, 1), (1, 0)])
       for k in ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss")},
    "triplet_margin_loss": (lambda r, n, c: [_nc(r, n, c), _nc(r, n, c), _nc(r, n, c)], {},
                            [(0, 0), (1, 1), (2, 2), (0, 1)]),
    "batch_hard_triplet_loss": (lambda r, n, c: [_nc(r, n, c), r.integers(0, 4, n)], {}, [(0, 0)]),
    "info_nce_loss": (lambda r, n, c: [_nc(r, n, c), _nc(r, n, c)], {}, [(0, 0), (1, 1), (1, 0), (0, 1)]),
    "nt_xent_loss": (lambda r, n, c: [_nc(r, n, c), _nc(r, n, c)], {}, [(0, 0), (1, 0), (0, 1)]),
    "softmax": (lambda r, n, c: [_nc(r, n, c)], {}, [(0, 0)]),
    "log_softmax": (lambda r, n, c: [_nc(r, n, c)], {}, [(0, 0)]),
}
# The documented exact in-place uses (README "Conventions", the overlap bullet): the
# output is exactly input i's memory; every other overlap is a ValueError.
IN_PLACE_OK = {("cross_entropy", 0, 0), ("binary_cross_entropy_with_logits", 0, 0),
               ("sigmoid_focal_loss", 0, 0), ("entropy", 0, 0), ("distillation_loss", 0, 0),
               *((k, i, j) for k in ("kl_divergence", "js_divergence") for i in (0, 1) for j in (0, 1)),
               ("softmax", 0, 0), ("log_softmax", 0, 0), ("logsumexp", 0, 0),
               *((k, 0, 0) for k in ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss",
                                     "log_cosh_loss"))}


def _box_pairs(rng, n):
    xy = rng.normal(size=(n, 2))
    return np.concatenate([xy, xy + rng.uniform(0.1, 2, (n, 2))], axis=1)


def _overlap_inputs(key, seed):
    name = key.split("/")[0]
    make, kw, _ = OVERLAP[key]
    rng = np.random.default_rng(seed)
    rows, cols = (40, 16) if name == "batch_hard_triplet_loss" else (100, 60)
    args = make(rng, rows, cols)
    kw = dict(kw)
    if kw.get("target") == "labels":
        kw["target"] = _labels(rng, rows, cols)
    return name, args, kw


def _call(fn, args, kw, out, bufs=None):
    """(loss, gradients) of fn, the gradients (softmax: out) into bufs (None: fresh)."""
    if bufs is not None:
        kw = {**kw, ("out" if out else "grad_out"): tuple(bufs) if len(bufs) > 1 else bufs[0]}
    if out:
        return 0.0, (fn(*args, **kw),)
    loss, got = fn(*args, **kw, return_grad=True)
    return loss, as_tuple(got)


def _call_overlapping(name, args, kw, i, j, shift):
    """fn(*args) with gradient j (softmax: out) written into a buffer that overlaps args[i]
    shifted by `shift` elements (0: the same memory): (whether the two share memory, the
    ValueError raised or (loss, gradients)), and the out-of-place call's (loss, gradients)."""
    fn = getattr(fastloss, name)
    out = name in ("softmax", "log_softmax")
    separate = _call(fn, [np.copy(a) for a in args], kw, out)
    shapes = [g.shape for g in separate[1]]
    n, m = args[i].size, int(np.prod(shapes[j]))
    buf = np.empty(max(n, m) + abs(shift))
    a0, g0 = (0, shift) if shift >= 0 else (-shift, 0)
    x = buf[a0:a0 + n].reshape(args[i].shape)
    x[...] = args[i]
    args = list(args)
    args[i] = x
    bufs = [np.empty(s) for s in shapes]
    bufs[j] = buf[g0:g0 + m].reshape(shapes[j])
    shares = np.shares_memory(x, bufs[j])
    try:
        return shares, _call(fn, args, kw, out, bufs), separate
    except ValueError as e:
        return shares, e, separate


def _overlap_params():
    for key, (_, _, pairs) in sorted(OVERLAP.items()):
        for i, j in pairs:
            yield pytest.param(key, i, j, id=f"{key}-in{i}-grad{j}")


@pytest.mark.parametrize("key,i,j", list(_overlap_params()))
@given(seed=st.integers(0, 2 ** 32 - 1),
       shift=st.sampled_from([0, 1, -1, 60, -60, 4097, -4097, 7, -7]))
@example(seed=0, shift=60)                  # the reproducer: a gradient one row ahead
@example(seed=0, shift=4097)
@example(seed=0, shift=0)
def test_overlapping_output(key, i, j, seed, shift):
    """An output that shares memory with an input is a ValueError naming the output, except
    the documented exact in-place uses (shift 0), which equal the out-of-place call, as does
    an output next to the input that shares no memory."""
    name, args, kw = _overlap_inputs(key, seed)
    shares, res, separate = _call_overlapping(name, args, kw, i, j, shift)
    if shares and not (shift == 0 and (name, i, j) in IN_PLACE_OK):
        assert isinstance(res, ValueError), f"{name}: an overlapping output was accepted"
        assert "out" in str(res), res
        return
    assert not isinstance(res, ValueError), f"{name}: refused: {res}"
    assert_close(res[0], separate[0], 0.0, f"{name} loss")
    for k, (a, e) in enumerate(zip(res[1], separate[1])):
        assert_close(a, e, 0.0, f"{name} grad[{k}]")


@pytest.mark.parametrize("name", ["cross_entropy", "softmax", "log_softmax"])
@given(seed=st.integers(0, 2 ** 32 - 1), rows=st.sampled_from([0, 1, 3, 100]),
       C=st.sampled_from([1, 2, 9, 60]), dtype=st.sampled_from([np.float32, np.float64]))
def test_documented_in_place(name, seed, rows, C, dtype):
    """grad_out=logits (cross_entropy) and out=x (softmax, log_softmax) stay exact."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, C)).astype(dtype)
    y = rng.integers(0, C, rows)
    fn, ref = getattr(fastloss, name), getattr(reference, name)
    if name == "cross_entropy":
        exp, eg = ref(x, y, return_grad=True)
        loss, g = fn(x, y, return_grad=True, grad_out=x)
        assert g is x
        assert_close(loss, exp, RTOL[np.dtype(dtype)] * (1 + abs(exp)), "loss")
    else:
        eg = ref(x)
        g = fn(x, out=x)
        assert g is x
    assert_close(g, eg, RTOL[np.dtype(dtype)] * (1 + np.abs(eg)), "in place")


def _shared_params():
    for key, (make, kw, _) in sorted(OVERLAP.items()):
        name, args, kw = _overlap_inputs(key, 0)
        if name in ("softmax", "log_softmax"):
            continue
        grads = as_tuple(getattr(reference, name)(*args, **kw, return_grad=True)[1])
        if len(grads) > 1 and len({g.shape for g in grads}) == 1:
            yield key


@pytest.mark.parametrize("key", list(_shared_params()))
def test_gradient_outputs_share_a_buffer(key):
    """grad_out=(b, b, ...): two outputs in one buffer is a ValueError."""
    name, args, kw = _overlap_inputs(key, 0)
    grads = as_tuple(getattr(reference, name)(*args, **kw, return_grad=True)[1])
    b = np.empty(grads[0].shape)
    with pytest.raises(ValueError):
        getattr(fastloss, name)(*args, **kw, return_grad=True, grad_out=(b,) * len(grads))


# --- numerics (issue 11 items 3-7, fixed), each against an independent exact formula ------

def _log_softmax_exact(x, axis=-1):
    """(x - max) - log(sum exp(x - max)): no cancellation of the maximum at large logits."""
    m = np.max(x, axis=axis, keepdims=True)
    return (x - m) - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def _xent_exact(x, y):
    """Per-row cross-entropy of labels y and d(sum)/dx, class axis last."""
    lp = _log_softmax_exact(x)
    return -np.take_along_axis(lp, y[:, None], 1)[:, 0], np.exp(lp) - (np.arange(x.shape[1]) == y[:, None])


@st.composite
def large_logits(draw):
    """Rows of logits of a large scale with ties at the maximum (the cancellation case)."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    n, c = draw(st.integers(1, 6)), draw(st.integers(2, 40))
    scale = draw(st.sampled_from([1e6, 1e10, 1e20, 1e30]))
    x = rng.normal(size=(n, c)) * scale
    ties = rng.integers(1, c + 1, n)
    for r in range(n):
        x[r, rng.permutation(c)[:ties[r]]] = np.max(x[r])
    return x, rng.integers(0, c, n)


@pytest.mark.parametrize("impl", [pytest.param(fastloss, id="kernel"),
                                  pytest.param(reference, id="oracle")])
@given(case=large_logits())
@example(case=(np.array([[1e20, 1e20, 0.0]]), np.array([0])))
@example(case=(np.array([[1e6, 1e6, 0.0]]), np.array([0])))
def test_cross_entropy_large_logits(impl, case):
    """A few ulps for any finite logits: against (x - max) - log(sum exp(x - max))."""
    x, y = case
    per, grad = _xent_exact(x, y)
    loss, g = impl.cross_entropy(x, y, reduction="sum", return_grad=True)
    assert_close(impl.cross_entropy(x, y, reduction="none"), per, 1e-14 * (per + 1e-300), "loss")
    assert_close(loss, per.sum(), 1e-14 * per.sum(), "summed loss")
    assert_close(g, grad, 1e-14, "grad")


@pytest.mark.parametrize("name", ["log_softmax", "softmax", "logsumexp", "entropy"])
@given(case=large_logits())
@example(case=(np.array([[1e20, 1e20, 0.0]]), np.array([0])))
def test_row_functions_large_logits(name, case):
    """The other softmax-row functions at large logits with ties, against exact formulas."""
    x = case[0]
    lp = _log_softmax_exact(x)
    m = np.max(x, axis=-1)
    exact = {"log_softmax": lp, "softmax": np.exp(lp),
             "logsumexp": m + np.log(np.sum(np.exp(x - m[:, None]), axis=-1)),
             "entropy": -np.sum(np.exp(lp) * np.where(np.exp(lp) > 0, lp, 0), axis=-1)}[name]
    kw = {"reduction": "none"} if name == "entropy" else {}
    got = getattr(fastloss, name)(x, **kw)
    assert_close(got, exact, 1e-14 * (np.abs(exact) + (name == "softmax")), name)


@pytest.mark.parametrize("name", ["kl_divergence", "js_divergence", "distillation_loss"])
@given(seed=st.integers(0, 2 ** 32 - 1), big=st.sampled_from([1e30, 1e100, 1e300]),
       T=st.sampled_from([10.0, 4.0, 0.5, 2.0, 100.0]))
@example(seed=None, big=1e30, T=10.0)
def test_temperature_at_huge_logits(name, seed, big, T):
    """kl / js / distillation at huge finite logits and any temperature: the oracle's
    value (finite: the logits are divided by T first)."""
    if seed is None:                                  # the reproducer
        P, Q = np.array([0.7, 1e30, -0.7, -0.8]), np.array([0.0, 0.0, 2.0, 0.0])
    else:
        rng = np.random.default_rng(seed)
        P, Q = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
        P[rng.random(P.shape) < 0.3] = big
    if name == "distillation_loss":
        P, Q = Q, P                                   # the teacher holds the huge logit
    loss, g = getattr(fastloss, name)(P, Q, temperature=T, return_grad=True)
    rloss, rg = getattr(reference, name)(P, Q, temperature=T, return_grad=True)
    assert np.isfinite(rloss)
    assert_close(loss, rloss, 1e-10 * (1 + abs(rloss)), "loss")
    for a, e in zip(as_tuple(g), as_tuple(rg)):
        assert_close(a, e, 1e-10 * (1 + np.abs(e)), "grad")


def _focal_exact(x, t, gamma):
    """alpha = -1 focal loss for t in {0, 1} and its gradient, without cancellation:
    with s = x for t = 0, -x for t = 1: loss = softplus(s) sigmoid(s)^gamma."""
    s = np.where(t == 1, -x, x)
    sp = np.logaddexp(0, s)
    q = np.exp(-np.logaddexp(0, -s))                  # sigmoid(s) = 1 - p_t
    loss = sp * q ** gamma
    dl_ds = q ** (gamma + 1) + gamma * sp * q ** gamma * (1 - q)
    return loss, np.where(t == 1, -dl_ds, dl_ds)


@pytest.mark.parametrize("impl", [pytest.param(fastloss, id="kernel"),
                                  pytest.param(reference, id="oracle")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(x=st.floats(2.0, 60.0), target=st.sampled_from([0.0, 1.0]), gamma=st.sampled_from([0.0, 1.0, 2.0]))
@example(x=10.0, target=1.0, gamma=0.0)
@example(x=15.0, target=1.0, gamma=0.0)
@example(x=37.0, target=1.0, gamma=0.0)
@example(x=5.0, target=1.0, gamma=2.0)
def test_focal_relative_accuracy(impl, dtype, x, target, gamma):
    """As p_t -> 1 the loss and gradient keep their relative accuracy."""
    xs = np.array([x if target == 1 else -x], dtype)
    t = np.array([target], dtype)
    loss, grad = _focal_exact(xs.astype(np.float64), t.astype(np.float64), gamma)
    got, g = impl.sigmoid_focal_loss(xs, t, alpha=-1, gamma=gamma, reduction="none", return_grad=True)
    # the result's dtype (the oracle's is float64): what it can hold, down to its subnormals
    rdt = np.asarray(got).dtype
    rtol, tiny = (1e-12, 0.0) if rdt == np.float64 else (1e-5, float(np.finfo(rdt).smallest_subnormal))
    assert_close(got, loss.astype(rdt), rtol * np.abs(loss) + tiny, "loss")
    assert_close(g, grad.astype(rdt), rtol * np.abs(grad) + tiny, "grad")


@pytest.mark.parametrize("impl", [pytest.param(fastloss, id="kernel"),
                                  pytest.param(reference, id="oracle")])
@pytest.mark.parametrize("name", ["generalized_box_iou_loss", "distance_box_iou_loss",
                                  "complete_box_iou_loss"])
@given(lead=st.sampled_from([(0,), (0, 3), (2, 0)]), dtype=st.sampled_from([np.float32, np.float64]))
@example(lead=(0,), dtype=np.float64)
def test_empty_boxes_mean(impl, name, lead, dtype):
    """No boxes: "mean" is 0.0 (torchvision), the gradients empty."""
    b = np.zeros(lead + (4,), dtype)
    loss, (g1, g2) = getattr(impl, name)(b, b, reduction="mean", return_grad=True)
    assert float(loss) == 0.0
    assert g1.shape == g2.shape == b.shape


def _xent_probs_exact(x, t, axis):
    """-sum t log_softmax(x) along axis, and its gradient sum(t) softmax - t."""
    lp = _log_softmax_exact(x, axis)
    return -np.sum(t * lp, axis=axis), np.sum(t, axis=axis, keepdims=True) * np.exp(lp) - t


@given(seed=st.integers(0, 2 ** 32 - 1), shp=st.sampled_from([(4, 1, 4), (3, 5), (2, 3, 4), (5, 2, 1, 3)]),
       data=st.data())
@example(seed=0, shp=(4, 1, 4), data=None)
def test_oracle_cross_entropy_probability_axis(seed, shp, data):
    """The oracle itself, probability targets with the class axis not last, against
    -sum t log_softmax(x) along the axis."""
    ax = -3 if data is None else data.draw(st.integers(-len(shp), len(shp) - 2))
    rng = np.random.default_rng(seed)
    x, t = rng.normal(size=shp), rng.random(shp)
    t /= t.sum(axis=ax, keepdims=True)
    per, grad = _xent_probs_exact(x, t, ax)
    loss, g = reference.cross_entropy(x, t, axis=ax, reduction="none", return_grad=True)
    assert_close(loss, per, 1e-12 * (1 + np.abs(per)), "loss")
    assert_close(g, grad, 1e-12, "grad")


# --- other disagreements the property suite found (fixed) ----------------------------------

@given(lead=st.sampled_from([(2,), (1,), (3, 2)]), reduction=st.sampled_from(["mean", "sum", "none"]),
       var=st.sampled_from(["row", "last axis 1", "scalar"]))
@example(lead=(2,), reduction="mean", var="row")
def test_gaussian_nll_empty_rows_var_per_row(lead, reduction, var):
    """Rows of 0 elements with one var per row (was NumPy's broadcast ValueError): the
    oracle's loss (NaN for "mean") and gradients (empty, and 0 for each row's var)."""
    x = np.zeros(lead + (0,))
    v = {"row": np.ones(lead), "last axis 1": np.ones(lead + (1,)), "scalar": 2.0}[var]
    exp, (gx, gv) = reference.gaussian_nll_loss(x, x, v, reduction=reduction, return_grad=True)
    loss, (kx, kv) = fastloss.gaussian_nll_loss(x, x, v, reduction=reduction, return_grad=True)
    assert_close(loss, exp, 0.0, "loss")
    assert_close(kx, gx, 0.0, "grad input")
    assert_close(kv, gv, 0.0, "grad var")


def _big_term_args(name, n, big):
    x = np.zeros(n, np.float32)
    x[0] = big
    return (x, np.zeros(n, np.float32)) + ((np.ones(n, np.float32),) if name == "gaussian_nll_loss" else ())


@pytest.mark.parametrize("name", ["mse_loss", "gaussian_nll_loss"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(n=st.integers(40, 200), big=st.sampled_from([1e20, 3e19]))
@example(n=100, big=1e20)
def test_float32_terms_overflow_before_the_mean(name, reduction, n, big):
    """The per-element terms are computed in the input dtype: a float32 term beyond
    float32's range is inf, and so is its sum and mean, although the float64 mean of the
    same values would fit float32 (PyTorch: inf too, test below)."""
    args = _big_term_args(name, n, big)
    exp = getattr(reference, name)(*args)
    assert np.isfinite(np.float32(exp))              # the float64 mean fits float32
    loss = getattr(fastloss, name)(*args, reduction=reduction)
    assert np.asarray(loss).dtype == np.float32
    if reduction == "none":
        assert loss[0] == np.inf
        per = getattr(reference, name)(*args, reduction="none")
        assert_close(loss[1:], per[1:].astype(np.float32), 2e-5 * (1 + np.abs(per[1:])), "other terms")
    else:
        assert loss == np.inf


@pytest.mark.parametrize("name", ["mse_loss", "gaussian_nll_loss"])
def test_float32_terms_overflow_as_torch(name):
    torch = pytest.importorskip("torch")
    args = _big_term_args(name, 100, 3e19)
    ref = getattr(torch.nn.functional, name)(*(torch.from_numpy(a) for a in args))
    assert float(ref) == float(getattr(fastloss, name)(*args)) == np.inf


@given(rows=st.integers(1, 4), C=st.integers(1, 5), reduction=st.sampled_from(["mean", "batchmean"]))
@example(rows=1, C=3, reduction="mean")
def test_oracle_distillation_all_rows_ignored(rows, C, reduction):
    """Every row ignored, "mean": NaN, and gradient 0 (nothing counts; was NaN in the
    oracle), in the kernel and the oracle."""
    s = np.zeros((rows, C))
    y = np.full(rows, -100)
    for impl in (fastloss, reference):
        loss, g = impl.distillation_loss(s, s, target=y, reduction=reduction, return_grad=True)
        assert np.isnan(loss), impl.__name__
        assert g.shape == s.shape and np.all(g == 0), (impl.__name__, g)


@given(C=st.integers(2, 6), eps=st.sampled_from([0.1, 0.5, 1.0]), z=st.sampled_from([0.0, 1e-3]))
@example(C=3, eps=0.1, z=0.0)
def test_cross_entropy_zero_weight_sum(C, eps, z):
    """A counted row, "mean" over a zero weight sum with label smoothing: loss NaN (0 / 0,
    as PyTorch, not the smoothed total / 0 = inf) and gradient NaN (README: 1 / 0 enters;
    the oracle gave +-inf), in the kernel and the oracle; an ignored row's gradient is 0."""
    x = np.stack([np.arange(C, dtype=float), np.zeros(C)])
    w = np.ones(C)
    w[0] = 0.0                                        # the label's weight: the mean's denominator
    y = np.array([0, -100])
    for impl in (fastloss, reference):
        loss, g = impl.cross_entropy(x, y, weight=w, label_smoothing=eps, z_loss=z, return_grad=True)
        assert np.isnan(loss), (impl.__name__, loss)
        assert np.all(np.isnan(g[0])) and np.all(g[1] == 0), (impl.__name__, g)


def test_cross_entropy_zero_weight_sum_as_torch():
    torch = pytest.importorskip("torch")
    x = torch.arange(3.0, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    loss = torch.nn.functional.cross_entropy(x[None], torch.tensor([0]), weight=w, label_smoothing=0.1)
    loss.backward()
    got, g = fastloss.cross_entropy(x.detach().numpy()[None], np.array([0]), weight=w.numpy(),
                                    label_smoothing=0.1, return_grad=True)
    assert np.isnan(float(loss)) and np.isnan(got)
    assert np.all(np.isnan(x.grad.numpy())) and np.all(np.isnan(g))


# --- decisions found by the relaxed -inf strategy ---------------------------------------------

@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_js_divergence_neg_inf_row_degenerate_beta(beta):
    # beta 0 or 1 makes JS exactly 0, but a row of only -inf is no distribution: NaN
    p, q = np.full(3, -np.inf), np.array([0.0, 1.0, 2.0])
    for impl in (fastloss, reference):
        loss, (gp, gq) = impl.js_divergence(p, q, beta=beta, return_grad=True)
        assert np.isnan(loss) and np.all(np.isnan(gp)) and np.all(np.isnan(gq)), impl.__name__


@pytest.mark.parametrize("alpha, t", [(0.0, np.full(2, -np.inf)), (0.0, np.array([np.nan, 1.0])),
                                      (1.0, np.array([-np.inf, 0.0]))])
def test_distillation_term_of_weight_zero_is_left_out(alpha, t):
    # alpha = 0: the teacher is not used (the KL term is 0 even for a teacher row that is no
    # distribution); alpha = 1: the cross-entropy term is 0 even where it is inf
    s, y = np.array([-np.inf, 1.0]), np.array(0)
    s = np.array([0.0, 1.0]) if alpha == 0 else s
    k = fastloss.distillation_loss(s, t, target=y, alpha=alpha, return_grad=True)
    r = reference.distillation_loss(s, t, target=y, alpha=alpha, return_grad=True)
    assert np.isfinite(k[0]) and np.all(np.isfinite(k[1]))
    assert_close(k[0], r[0], 1e-12, "loss")
    assert_close(k[1], r[1], 1e-12, "grad")
