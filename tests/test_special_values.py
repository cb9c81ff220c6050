"""What the classification and divergence losses return for +inf, -inf and NaN in each
input: one row of SPECIAL per decision (the README's table), checked on the kernel at
every SIMD level and dtype, and the oracle (fastloss.reference) agreeing with it.

A softmax row whose max is not finite (a NaN or +inf logit, or only -inf logits) is no
distribution: its loss and its gradient row are NaN (PyTorch's softmax gives NaN there
too), except that logsumexp returns the max itself (+inf, -inf; SciPy and PyTorch). A
-inf logit is a class of probability 0: legal, contributing 0 where no target mass sits
on it, and +inf loss where some does. NaN anywhere propagates to its row (or element).
"""
import numpy as np
import pytest

import fastloss as fl
import fastloss.reference as ref

INF, NAN = np.inf, np.nan
BASE = np.array([[0.5, -1.0, 2.0, 0.3], [1.0, 0.2, -0.3, 0.7]])
PROBS = np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
PROBS0 = np.array([[0.1, 0.0, 0.5, 0.4], [0.25, 0.25, 0.25, 0.25]])   # no mass on class 1
LABELS = np.array([2, 0])


def _put(a, index, v):
    a = np.array(a, dtype=np.float64)
    a[index] = v
    return a


def _wide(a, width, fill):
    """a (2, 4) widened to `width` classes by columns of `fill` (None: fixed finite logits)."""
    extra = (np.zeros((2, width - 4)) if fill is not None
             else np.sin(np.arange(2 * (width - 4)).reshape(2, -1)) * 2)
    return np.concatenate([a, extra], axis=1)


def _rows(name, value, width=4):
    """(fast call, oracle call, inputs) for one row of SPECIAL: the special value goes into
    row 0 of the named input (class 1, or the label's class 2 for "logit[label]"). width:
    the class count (extra classes: finite logits, no target mass)."""
    BASE, PROBS, PROBS0 = (_wide(globals()[k], width, f) for k, f in
                           [("BASE", None), ("PROBS", 0.0), ("PROBS0", 0.0)])
    x1 = _put(BASE, (0, 1), value)
    xl = _put(BASE, (0, 2), value)
    e = lambda v: np.array([v, 1.0])   # noqa: E731  (elementwise losses: element 0)
    return {
        "ce labels logit[label]": ("cross_entropy", (xl, LABELS)),
        "ce labels logit[other]": ("cross_entropy", (x1, LABELS)),
        "ce probs logit": ("cross_entropy", (x1, PROBS)),
        "ce probs logit, target 0": ("cross_entropy", (x1, PROBS0)),
        "ce probs target": ("cross_entropy", (BASE, _put(PROBS, (0, 1), value))),
        "ce smoothing logit": ("cross_entropy", (x1, LABELS, 0.1)),
        "bce logit, t=0": ("binary_cross_entropy_with_logits", (e(value), np.array([0.0, 1.0]))),
        "bce logit, t=1": ("binary_cross_entropy_with_logits", (e(value), np.array([1.0, 1.0]))),
        "bce logit, t=0.5": ("binary_cross_entropy_with_logits", (e(value), np.array([0.5, 1.0]))),
        "bce target": ("binary_cross_entropy_with_logits", (np.ones(2), e(value))),
        "focal logit, t=0": ("sigmoid_focal_loss", (e(value), np.array([0.0, 1.0]))),
        "focal logit, t=1": ("sigmoid_focal_loss", (e(value), np.array([1.0, 1.0]))),
        "focal target": ("sigmoid_focal_loss", (np.ones(2), e(value))),
        "logsumexp x": ("logsumexp", (x1,)),
        "softmax x": ("softmax", (x1,)),
        "log_softmax x": ("log_softmax", (x1,)),
        "entropy logits": ("entropy", (x1,)),
        "kl p_logits": ("kl_divergence", (x1, BASE)),
        "kl q_logits": ("kl_divergence", (BASE, x1)),
        "js p_logits": ("js_divergence", (x1, BASE)),
        "js q_logits": ("js_divergence", (BASE, x1)),
        "distillation student": ("distillation_loss", (x1, BASE)),
        "distillation teacher": ("distillation_loss", (BASE, x1)),
        # with a target (row 0's label: class 2): the cross-entropy in the KL kernel's pass
        "distillation+ce student": ("distillation_loss", (x1, BASE, {"target": LABELS})),
        "distillation+ce student[label]": ("distillation_loss", (xl, BASE, {"target": LABELS})),
        "distillation+ce teacher": ("distillation_loss", (BASE, x1, {"target": LABELS})),
    }[name]


# (input, value) -> (loss of the first row or element, gradient of that row / element; of
# the first input where there are two):
# "nan" all NaN, "finite" all finite, "has_nan" some NaN, or a number. Each line is one
# decision; the module docstring gives the rule behind them.
SPECIAL = {
    # softmax cross-entropy
    ("ce labels logit[label]", INF): ("nan", "nan"),
    ("ce labels logit[label]", -INF): (INF, "finite"),       # the label has probability 0
    ("ce labels logit[label]", NAN): ("nan", "nan"),
    ("ce labels logit[other]", INF): ("nan", "nan"),
    ("ce labels logit[other]", -INF): ("finite", "finite"),  # a class of probability 0
    ("ce labels logit[other]", NAN): ("nan", "nan"),
    ("ce probs logit", INF): ("nan", "nan"),
    ("ce probs logit", -INF): (INF, "finite"),               # target mass on it
    ("ce probs logit", NAN): ("nan", "nan"),
    ("ce probs logit, target 0", -INF): ("finite", "finite"),
    ("ce probs target", INF): (INF, "has_nan"),
    ("ce probs target", -INF): (-INF, "has_nan"),
    ("ce probs target", NAN): ("nan", "nan"),
    ("ce smoothing logit", -INF): (INF, "finite"),          # smoothing puts mass on every class
    ("ce smoothing logit", NAN): ("nan", "nan"),
    # binary cross-entropy with logits: the limit, inf where the target has mass on the
    # far side; 0 * inf = NaN where it is all on the logit's side (PyTorch: NaN at +inf, t=1)
    ("bce logit, t=0", INF): (INF, 1.0),
    ("bce logit, t=0", -INF): ("nan", 0.0),
    ("bce logit, t=0", NAN): ("nan", "nan"),
    ("bce logit, t=1", INF): ("nan", 0.0),
    ("bce logit, t=1", -INF): (INF, -1.0),
    ("bce logit, t=0.5", INF): (INF, 0.5),
    ("bce logit, t=0.5", -INF): (INF, -0.5),
    ("bce target", INF): ("nan", "nan"),
    ("bce target", -INF): ("nan", "nan"),
    ("bce target", NAN): ("nan", "nan"),
    # sigmoid focal loss: BCE's loss times alpha_t (1 - p_t)^gamma; the gradient of an
    # infinite logit is NaN (inf * 0 in the chain rule)
    ("focal logit, t=0", INF): (INF, "nan"),
    ("focal logit, t=0", -INF): ("nan", "nan"),
    ("focal logit, t=1", INF): ("nan", "nan"),
    ("focal logit, t=1", -INF): (INF, "nan"),
    ("focal logit, t=1", NAN): ("nan", "nan"),
    ("focal target", INF): ("nan", "nan"),
    ("focal target", NAN): ("nan", "nan"),
    # softmax family (the "loss" of softmax / log_softmax is not checked, "gradient" is the output)
    ("logsumexp x", INF): (INF, "nan"),
    ("logsumexp x", -INF): ("finite", "finite"),
    ("logsumexp x", NAN): ("nan", "nan"),
    ("softmax x", INF): (None, "nan"),
    ("softmax x", -INF): (None, "finite"),
    ("softmax x", NAN): (None, "nan"),
    ("log_softmax x", INF): (None, "nan"),
    ("log_softmax x", -INF): (None, "has_inf"),
    ("log_softmax x", NAN): (None, "nan"),
    # divergences: +inf or NaN in either input -> NaN row; -inf is probability 0
    ("entropy logits", INF): ("nan", "nan"),
    ("entropy logits", -INF): ("finite", "finite"),
    ("entropy logits", NAN): ("nan", "nan"),
    ("kl p_logits", INF): ("nan", "nan"),
    ("kl p_logits", -INF): ("finite", "finite"),
    ("kl p_logits", NAN): ("nan", "nan"),
    ("kl q_logits", INF): ("nan", "nan"),
    ("kl q_logits", -INF): (INF, "has_nan"),                # p has mass where q has none
    ("kl q_logits", NAN): ("nan", "nan"),
    ("js p_logits", INF): ("nan", "nan"),
    ("js p_logits", -INF): ("finite", "finite"),
    ("js q_logits", -INF): ("finite", "finite"),
    ("js q_logits", NAN): ("nan", "nan"),
    ("distillation student", INF): ("nan", "nan"),
    ("distillation student", -INF): (INF, "finite"),        # the teacher has mass there
    ("distillation student", NAN): ("nan", "nan"),
    ("distillation teacher", INF): ("nan", "nan"),
    ("distillation teacher", -INF): ("finite", "finite"),
    ("distillation teacher", NAN): ("nan", "nan"),
    ("distillation+ce student", INF): ("nan", "nan"),
    ("distillation+ce student", -INF): (INF, "finite"),     # the teacher has mass there
    ("distillation+ce student", NAN): ("nan", "nan"),
    ("distillation+ce student[label]", -INF): (INF, "finite"),   # the label has probability 0
    ("distillation+ce teacher", INF): ("nan", "nan"),
    ("distillation+ce teacher", -INF): ("finite", "finite"),
    ("distillation+ce teacher", NAN): ("nan", "nan"),
}


def _call(mod, fname, args, dtype):
    f = getattr(mod, fname)
    extra = args[-1] if isinstance(args[-1], dict) else {}
    args = args[:-1] if extra else args
    args = tuple(a.astype(dtype) if getattr(a, "dtype", None) is not None and a.dtype.kind == "f"
                 else a for a in args)    # the oracle gets the same values
    if fname in ("softmax", "log_softmax"):
        return None, f(*args)
    kw = dict(extra) if fname == "logsumexp" else dict(extra, reduction="none")
    if len(args) == 3:                     # cross_entropy with label smoothing
        args, kw = args[:2], dict(kw, label_smoothing=args[2])
    return f(*args, return_grad=True, **kw)


def _check(actual, want):
    a = np.asarray(actual, dtype=np.float64)
    if want == "nan":
        assert np.isnan(a).all(), a
    elif want == "finite":
        assert np.isfinite(a).all(), a
    elif want == "has_nan":
        assert np.isnan(a).any(), a
    elif want == "has_inf":
        assert np.isinf(a).any() and not np.isnan(a).any(), a
    elif want is not None:
        assert a == want, (a, want)


@pytest.mark.parametrize("case", list(SPECIAL), ids=[f"{k[0]}={k[1]}" for k in SPECIAL])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [4, 100])
def test_special_values(case, dtype, simd, width):
    """width 100: the softmax rows' blocked path (the special row among a block's rows)."""
    name, value = case
    want_loss, want_grad = SPECIAL[case]
    fname, args = _rows(name, value, width)
    loss, grad = _call(fl, fname, args, dtype)
    with np.errstate(all="ignore"):
        rloss, rgrad = _call(ref, fname, args, dtype)
    first = lambda a: np.asarray(a)[0]   # noqa: E731  (row or element 0)
    if want_loss is not None:
        _check(first(loss), want_loss)
    grads = grad if isinstance(grad, tuple) else (grad,)
    rgrads = rgrad if isinstance(rgrad, tuple) else (rgrad,)
    _check(first(grads[0]), want_grad)
    # the oracle agrees with the kernel, special values included; the other row is untouched
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    if loss is not None:
        np.testing.assert_allclose(np.asarray(loss, np.float64), rloss, equal_nan=True, **tol)
    for g, rg in zip(grads, rgrads):
        np.testing.assert_allclose(np.asarray(g, np.float64), rg, equal_nan=True, **tol)


def test_all_minus_inf_rows(simd):
    """A row of only -inf: logsumexp -inf (SciPy, PyTorch), softmax and every loss NaN."""
    x = _put(BASE, (0, slice(None)), -INF)
    lse, g = fl.logsumexp(x, return_grad=True)
    assert lse[0] == -INF and np.isnan(g[0]).all() and np.isfinite(g[1]).all()
    assert fl.logsumexp(x)[0] == -INF                   # with and without the gradient
    assert np.isnan(fl.softmax(x)[0]).all() and np.isnan(fl.log_softmax(x)[0]).all()
    for f, args in [(fl.cross_entropy, (x, LABELS)), (fl.entropy, (x,)), (fl.kl_divergence, (x, BASE))]:
        loss = f(*args, reduction="none")
        assert np.isnan(loss[0]) and np.isfinite(loss[1])
    np.testing.assert_array_equal(ref.logsumexp(x), fl.logsumexp(x))


def test_logsumexp_matches_scipy_and_torch_at_special_values():
    special = pytest.importorskip("scipy.special")
    torch = pytest.importorskip("torch")
    for row in ([1.0, INF, 0.0], [-INF, -INF], [1.0, -INF], [NAN, 1.0], [INF, -INF], [INF, INF]):
        x = np.array(row)
        want = special.logsumexp(x)
        np.testing.assert_array_equal(fl.logsumexp(x), want)
        np.testing.assert_array_equal(ref.logsumexp(x), want)
        np.testing.assert_array_equal(torch.logsumexp(torch.tensor(x), 0).numpy(), want)


def test_focal_target_outside_unit_interval(simd):
    """A target of 1e30 makes 1 - p_t negative: (1 - p_t)^gamma is NaN for gamma > 0 (a
    real power of a negative number), kernel and oracle alike; gamma = 0 leaves alpha_t * bce."""
    x, t = np.array([1.0, -2.0]), np.array([1e30, 1e30])
    for gamma in (2.0, 0.5):
        loss, g = fl.sigmoid_focal_loss(x, t, gamma=gamma, reduction="none", return_grad=True)
        assert np.isnan(loss[0]) and np.isnan(g[0])
        rl, rg = ref.sigmoid_focal_loss(x, t, gamma=gamma, reduction="none", return_grad=True)
        np.testing.assert_allclose(loss, rl, equal_nan=True, rtol=1e-12)
    loss = fl.sigmoid_focal_loss(x, t, alpha=-1, gamma=0.0, reduction="none")
    np.testing.assert_allclose(loss, fl.binary_cross_entropy_with_logits(x, t, reduction="none"),
                               rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [300, 1003, 4096 + 37])
def test_long_rows_special_values(simd, dtype, C):
    """Rows above the blocked path's 256 classes take row_max (four plain max chains, their
    sums NaN-checked, else the NaN-sticky loop): a special value where the unrolled loop
    reads it (0, 17, the middle) or the tail does (C - 1), +inf and -inf in one row, and
    finite logits whose sums overflow to inf - inf; every row as the oracle's."""
    rng = np.random.default_rng(C)
    rows, where = [], [0, 17, C // 2, C - 1]
    for v in (NAN, INF, -INF):
        for k in where:
            rows.append(_put(rng.standard_normal(C), k, v))
    rows.append(_put(_put(rng.standard_normal(C), 3, INF), C - 2, -INF))
    big = np.finfo(dtype).max
    rows.append(_put(_put(rng.standard_normal(C), slice(0, 8), big), slice(40, 48), -big))
    rows.append(_put(rng.standard_normal(C), C - 1, 50.0))            # the max in the tail
    rows.append(_put(_put(rng.standard_normal(C) - 3, 5, 0.0), 9, -0.0))
    x = np.array(rows).astype(dtype)
    y = np.arange(len(rows)) % C
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    with np.errstate(all="ignore"):
        for f in (lambda m, x: m.cross_entropy(x, y, reduction="none", return_grad=True),
                  lambda m, x: m.logsumexp(x, return_grad=True),
                  lambda m, x: (m.softmax(x),), lambda m, x: (m.log_softmax(x),)):
            for a, e in zip(f(fl, x), f(ref, x.astype(np.float64))):
                # in the output's dtype: float32 log_softmax of -max - max is -inf
                np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(e, dtype),
                                           equal_nan=True, **tol)
        for grad in (False, True):       # the argmax is the first NaN where there is one
            stats = fl.cross_entropy(x, y, reduction="none", return_grad=grad, return_stats=True)[-1]
            np.testing.assert_array_equal(stats.argmax, np.argmax(x, axis=-1))
