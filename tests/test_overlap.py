"""Output buffers (grad_out entries, softmax/log_softmax's out=) that share memory with an
input or with another output: a ValueError naming both, before any kernel runs, in every
public function; the exact in-place cases (an output that is exactly one of the inputs a
function lists) give the out-of-place result. Issue 11, item 1."""
import inspect
import re

import numpy as np
import pytest

import fastloss as fl
from fastloss import _checks


def _spd(rng, batch, d):
    a = rng.normal(size=batch + (d, d))
    return a @ np.swapaxes(a, -1, -2) + d * np.eye(d)


def _boxes(rng, n):
    lo = rng.uniform(0, 5, (n, 2))
    return np.concatenate([lo, lo + rng.uniform(0.5, 3, (n, 2))], axis=1)


class Case:
    """A call of one public function with every output buffer given. inputs: name ->
    array (float64 or int64 labels, so any two can share 8-byte elements); call(a, outs)
    runs the function on those arrays with grad_out (or out=) from outs and returns
    (loss, list of gradients); in_place: the inputs an output may be exactly."""

    def __init__(self, fn, inputs, call, n_out, in_place=(), out_name="grad_out", label=""):
        self.fn, self.inputs, self.call, self.n_out = fn, inputs, call, n_out
        self.in_place, self.out_name, self.label = set(in_place), out_name, label

    def out_names(self):
        if self.n_out == 1:
            return [self.out_name]
        return [f"grad_out[{i}]" for i in range(self.n_out)]

    def run(self, inputs, outs):
        return self.call(inputs, outs[0] if self.n_out == 1 else tuple(outs))


def _grad(res):
    loss, g = res
    return loss, list(g) if isinstance(g, tuple) else [g]


def _cases():
    rng = np.random.default_rng(11)
    N, C = 16, 80
    x, t = rng.normal(size=(N, C)), rng.normal(size=(N, C))
    y = rng.integers(0, C, N)
    p = rng.dirichlet(np.ones(C), N)
    cases = []

    def add(fn, inputs, call, n_out, in_place=(), **kw):
        cases.append(Case(fn, inputs, call, n_out, in_place, **kw))

    # classification
    add("cross_entropy", dict(logits=x, target=y, weight=rng.uniform(0.5, 2, C)),
        lambda a, o: _grad(fl.cross_entropy(a["logits"], a["target"], weight=a["weight"],
                                            label_smoothing=0.1, return_grad=True, grad_out=o)),
        1, ["logits"], label="labels")
    add("cross_entropy", dict(logits=x, target=p),
        lambda a, o: _grad(fl.cross_entropy(a["logits"], a["target"], return_grad=True, grad_out=o)),
        1, ["logits"], label="probabilities")
    x3, y3 = rng.normal(size=(3, 5, 20)), rng.integers(0, 5, (3, 20))
    add("cross_entropy", dict(logits=x3, target=y3),        # class axis read in place (strided)
        lambda a, o: _grad(fl.cross_entropy(a["logits"], a["target"], axis=1, z_loss=0.01,
                                            return_grad=True, grad_out=o)),
        1, ["logits"], label="axis=1")
    add("cross_entropy", dict(logits=x, target=rng.integers(0, N, C)),   # class axis moved, softcap
        lambda a, o: _grad(fl.cross_entropy(a["logits"], a["target"], axis=0, softcap=3.0,
                                            return_grad=True, grad_out=o)),
        1, ["logits"], label="axis=0")
    Vd = 6
    add("linear_cross_entropy", dict(input=rng.normal(size=(N, Vd)), linear_weight=rng.normal(size=(C, Vd)),
                                     target=y, linear_bias=rng.normal(size=C), weight=rng.uniform(0.5, 2, C)),
        lambda a, o: _grad(fl.linear_cross_entropy(a["input"], a["linear_weight"], a["target"],
                                                   linear_bias=a["linear_bias"], weight=a["weight"],
                                                   return_grad=True, grad_out=o)), 3)
    add("binary_cross_entropy_with_logits",
        dict(logits=x, target=rng.uniform(size=(N, C)), weight=rng.uniform(size=(N, C)),
             pos_weight=rng.uniform(1, 2, C)),
        lambda a, o: _grad(fl.binary_cross_entropy_with_logits(
            a["logits"], a["target"], weight=a["weight"], pos_weight=a["pos_weight"],
            return_grad=True, grad_out=o)), 1, ["logits"])
    add("sigmoid_focal_loss", dict(logits=x, target=rng.uniform(size=(N, C))),
        lambda a, o: _grad(fl.sigmoid_focal_loss(a["logits"], a["target"], return_grad=True,
                                                 grad_out=o)), 1, ["logits"])
    add("logsumexp", dict(x=x),
        lambda a, o: _grad(fl.logsumexp(a["x"], return_grad=True, grad_out=o)), 1, ["x"])
    add("logsumexp", dict(x=x),
        lambda a, o: _grad(fl.logsumexp(a["x"], axis=0, return_grad=True, grad_out=o)), 1, ["x"],
        label="axis=0")
    for name in ("softmax", "log_softmax"):
        add(name, dict(x=x), lambda a, o, f=getattr(fl, name): (None, [f(a["x"], out=o)]), 1, ["x"],
            out_name="out")
    # divergences
    add("entropy", dict(logits=x),
        lambda a, o: _grad(fl.entropy(a["logits"], return_grad=True, grad_out=o)), 1, ["logits"])
    for name in ("kl_divergence", "js_divergence"):
        add(name, dict(p_logits=x, q_logits=t),
            lambda a, o, f=getattr(fl, name): _grad(f(a["p_logits"], a["q_logits"], temperature=2.0,
                                                      return_grad=True, grad_out=o)),
            2, ["p_logits", "q_logits"])
    add("distillation_loss", dict(student_logits=x, teacher_logits=t, target=y),
        lambda a, o: _grad(fl.distillation_loss(a["student_logits"], a["teacher_logits"], target=a["target"],
                                                temperature=2.0, return_grad=True, grad_out=o)),
        1, ["student_logits"])
    add("distillation_loss", dict(student_logits=x, teacher_logits=t),
        lambda a, o: _grad(fl.distillation_loss(a["student_logits"], a["teacher_logits"],
                                                return_grad=True, grad_out=o)),
        1, ["student_logits"], label="no target")
    # Gaussian family: nothing in place
    mu, lv = rng.normal(size=(N, 8)), rng.normal(size=(N, 8))
    add("gaussian_kl", dict(mu_p=mu, logvar_p=lv, mu_q=rng.normal(size=(N, 8)), logvar_q=rng.normal(size=(N, 8))),
        lambda a, o: _grad(fl.gaussian_kl(a["mu_p"], a["logvar_p"], a["mu_q"], a["logvar_q"],
                                          return_grad=True, grad_out=o)), 4)
    add("mvn_kl", dict(mu_p=rng.normal(size=(4, 3)), cov_p=_spd(rng, (4,), 3),
                       mu_q=rng.normal(size=(4, 3)), cov_q=_spd(rng, (4,), 3)),
        lambda a, o: _grad(fl.mvn_kl(a["mu_p"], a["cov_p"], a["mu_q"], a["cov_q"], return_grad=True,
                                     grad_out=o)), 4)
    add("vae_loss", dict(recon=x, x=rng.uniform(size=(N, C)), mu=mu, logvar=lv),
        lambda a, o: _grad(fl.vae_loss(a["recon"], a["x"], a["mu"], a["logvar"], recon_loss="bce",
                                       return_grad=True, grad_out=o)), 3)
    add("gaussian_nll_loss", dict(input=x, target=t, var=rng.uniform(0.5, 2, (N, C))),
        lambda a, o: _grad(fl.gaussian_nll_loss(a["input"], a["target"], a["var"], return_grad=True,
                                                grad_out=o)), 2)
    # regression
    for name in ("mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "log_cosh_loss"):
        add(name, dict(input=x, target=t, weight=rng.uniform(size=(N, C))),
            lambda a, o, f=getattr(fl, name): _grad(f(a["input"], a["target"], weight=a["weight"],
                                                      return_grad=True, grad_out=o)), 1, ["input"])
    for name in ("generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss"):
        add(name, dict(boxes1=_boxes(rng, N), boxes2=_boxes(rng, N)),
            lambda a, o, f=getattr(fl, name): _grad(f(a["boxes1"], a["boxes2"], return_grad=True,
                                                      grad_out=o)), 2)
    # metric: nothing in place
    e = rng.normal(size=(N, 8))
    add("triplet_margin_loss", dict(anchor=e, positive=rng.normal(size=(N, 8)), negative=rng.normal(size=(N, 8))),
        lambda a, o: _grad(fl.triplet_margin_loss(a["anchor"], a["positive"], a["negative"],
                                                  return_grad=True, grad_out=o)), 3)
    for mining in ("hard", "all"):
        add("batch_hard_triplet_loss", dict(embeddings=e, labels=rng.integers(0, 3, N)),
            lambda a, o, m=mining: _grad(fl.batch_hard_triplet_loss(a["embeddings"], a["labels"], mining=m,
                                                                    return_grad=True, grad_out=o)),
            1, label=mining)
    for sym in (False, True):
        add("info_nce_loss", dict(query=e, key=rng.normal(size=(N, 8))),
            lambda a, o, s=sym: _grad(fl.info_nce_loss(a["query"], a["key"], symmetric=s,
                                                       return_grad=True, grad_out=o)),
            2, label=f"symmetric={sym}")
    add("nt_xent_loss", dict(z1=e, z2=rng.normal(size=(N, 8))),
        lambda a, o: _grad(fl.nt_xent_loss(a["z1"], a["z2"], return_grad=True, grad_out=o)), 2)
    return cases


CASES = _cases()


def _id(c):
    return f"{c.fn}[{c.label}]" if c.label else c.fn


def _out_shapes(case):
    _, grads = case.run(case.inputs, [None] * case.n_out)
    return [(g.shape, g.dtype) for g in grads]


def _fresh(case, fill=7.0):
    return [np.full(shp, fill, dtype=dt) for shp, dt in _out_shapes(case)]


def _shifts(n_in, n_out, C):
    """Element shifts of an output against an input that make the two overlap."""
    ks = {0, 1, -1, C, -C, 4097, -4097}
    return sorted(k for k in ks if -n_out < k < n_in)


def _place(inp, out_shape, out_dtype, k):
    """(copy of inp, output buffer) in one raw buffer, the output starting k elements
    (8 bytes each) after the input's start."""
    n_in, n_out = inp.size, int(np.prod(out_shape))
    raw = np.zeros(8 * (n_in + n_out + abs(k) + 1), np.uint8)
    a0 = 8 * max(0, -k)
    a = raw[a0:a0 + 8 * n_in].view(inp.dtype).reshape(inp.shape)
    a[...] = inp
    o0 = a0 + 8 * k
    return a, raw[o0:o0 + 8 * n_out].view(out_dtype).reshape(out_shape)


OVERLAPS = [(c, slot, name, k) for c in CASES for slot, (shp, dt) in enumerate(_out_shapes(c))
            for name, arr in c.inputs.items()
            for k in _shifts(arr.size, int(np.prod(shp)), shp[-1])
            if not (k == 0 and name in c.in_place and arr.shape == shp)]


@pytest.mark.parametrize("case,slot,name,k", OVERLAPS,
                         ids=[f"{_id(c)}-{s}-{n}-{k}" for c, s, n, k in OVERLAPS])
def test_output_overlapping_an_input_raises(case, slot, name, k):
    outs = _fresh(case)
    inputs = dict(case.inputs)
    inputs[name], outs[slot] = _place(case.inputs[name], outs[slot].shape, outs[slot].dtype, k)
    before = {n: a.copy() for n, a in inputs.items()}
    msg = f"{case.out_names()[slot]} must not overlap {name}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        case.run(inputs, outs)
    for n, a in inputs.items():           # checked before any kernel: nothing written
        np.testing.assert_array_equal(a, before[n])
    for i, o in enumerate(outs):
        if i != slot:
            np.testing.assert_array_equal(o, 7.0)


PAIRS = [(c, i, j) for c in CASES for i in range(c.n_out) for j in range(i + 1, c.n_out)]


@pytest.mark.parametrize("shift", [0, 1])
@pytest.mark.parametrize("case,i,j", PAIRS, ids=[f"{_id(c)}-{i}-{j}" for c, i, j in PAIRS])
def test_two_outputs_sharing_memory_raise(case, i, j, shift):
    outs = _fresh(case)
    a, b = outs[i], outs[j]
    raw = np.zeros(a.size + b.size + shift)
    outs[i] = raw[:a.size].reshape(a.shape)
    outs[j] = raw[shift:shift + b.size].reshape(b.shape)
    with pytest.raises(ValueError, match=re.escape(f"grad_out[{i}] must not overlap grad_out[{j}]")):
        case.run(dict(case.inputs), outs)
    np.testing.assert_array_equal(raw, 0.0)


IN_PLACE = [(c, slot, name) for c in CASES for slot, (shp, _) in enumerate(_out_shapes(c))
            for name in sorted(c.in_place) if c.inputs[name].shape == shp]


@pytest.mark.parametrize("case,slot,name", IN_PLACE,
                         ids=[f"{_id(c)}-{s}-{n}" for c, s, n in IN_PLACE])
def test_exact_in_place_equals_out_of_place(simd, case, slot, name):
    """The output is exactly the input's memory (another view object of it): same loss and
    gradients as into fresh buffers, bit for bit."""
    want_loss, want = case.run(case.inputs, [None] * case.n_out)
    outs = _fresh(case)
    inputs = dict(case.inputs)
    inputs[name], outs[slot] = _place(case.inputs[name], outs[slot].shape, outs[slot].dtype, 0)
    loss, got = case.run(inputs, outs)
    np.testing.assert_array_equal(loss, want_loss)
    for g, o, w in zip(got, outs, want):
        assert g is o
        np.testing.assert_array_equal(g, w)


def test_in_place_cases_are_the_documented_ones():
    """The allowed exact in-place uses, per function (the README's overlap rule)."""
    allowed = {}
    for c in CASES:
        allowed.setdefault(c.fn, c.in_place)
        assert allowed[c.fn] == c.in_place, c.fn
    assert {f: sorted(s) for f, s in allowed.items() if s} == {
        "cross_entropy": ["logits"], "binary_cross_entropy_with_logits": ["logits"],
        "sigmoid_focal_loss": ["logits"], "logsumexp": ["x"], "softmax": ["x"],
        "log_softmax": ["x"], "entropy": ["logits"], "kl_divergence": ["p_logits", "q_logits"],
        "js_divergence": ["p_logits", "q_logits"], "distillation_loss": ["student_logits"],
        "mse_loss": ["input"], "l1_loss": ["input"], "huber_loss": ["input"],
        "smooth_l1_loss": ["input"], "log_cosh_loss": ["input"]}


def test_every_function_with_an_output_buffer_is_covered():
    with_outputs = {n for n in fl.__all__ if callable(getattr(fl, n))
                    and {"grad_out", "out"} & set(inspect.signature(getattr(fl, n)).parameters)}
    assert len(with_outputs) >= 27
    assert with_outputs == {c.fn for c in CASES}


# --- the issue's reproducers --------------------------------------------------------------

def test_issue_mse_example():
    rng = np.random.default_rng(0)
    buf = rng.normal(size=300 * 200 + 200)
    x, t = buf[:60000].reshape(300, 200), rng.normal(size=(300, 200))
    before = buf.copy()
    with pytest.raises(ValueError, match="grad_out must not overlap input"):
        fl.mse_loss(x, t, return_grad=True, grad_out=buf[200:].reshape(300, 200))
    np.testing.assert_array_equal(buf, before)


def _shifted(k, shape=(300, 200), seed=0):
    """(x, out): x of `shape` and a C-contiguous output of its shape k elements later."""
    n = int(np.prod(shape))
    buf = np.random.default_rng(seed).normal(size=n + abs(k))
    x = buf[max(0, -k):max(0, -k) + n].reshape(shape)
    return x, buf[max(0, k):max(0, k) + n].reshape(shape)


SHIFTED = {
    "binary_cross_entropy_with_logits": lambda x, o, t: fl.binary_cross_entropy_with_logits(
        x, t, return_grad=True, grad_out=o),
    "mse_loss": lambda x, o, t: fl.mse_loss(x, t, return_grad=True, grad_out=o),
    "l1_loss": lambda x, o, t: fl.l1_loss(x, t, return_grad=True, grad_out=o),
    "log_cosh_loss": lambda x, o, t: fl.log_cosh_loss(x, t, return_grad=True, grad_out=o),
    "entropy": lambda x, o, t: fl.entropy(x, return_grad=True, grad_out=o),
    "logsumexp": lambda x, o, t: fl.logsumexp(x, return_grad=True, grad_out=o),
    "cross_entropy": lambda x, o, t: fl.cross_entropy(x, np.arange(x.shape[0]) % x.shape[1],
                                                      return_grad=True, grad_out=o),
    "softmax": lambda x, o, t: fl.softmax(x, out=o),
    "log_softmax": lambda x, o, t: fl.log_softmax(x, out=o),
}


@pytest.mark.parametrize("k", [1, -1, 200, -200, 4097])
@pytest.mark.parametrize("fn", sorted(SHIFTED))
def test_issue_output_shifted_by_k(fn, k):
    x, o = _shifted(k)
    t = np.random.default_rng(1).uniform(size=x.shape)
    first = {"logsumexp": "x", "softmax": "x", "log_softmax": "x", "mse_loss": "input",
             "l1_loss": "input", "log_cosh_loss": "input"}.get(fn, "logits")
    out = "out" if fn in ("softmax", "log_softmax") else "grad_out"
    before = x.copy()
    with pytest.raises(ValueError, match=f"{out} must not overlap {first}"):
        SHIFTED[fn](x, o, t)
    np.testing.assert_array_equal(x, before)


def test_issue_named_reproducers():
    rng = np.random.default_rng(3)
    x, t = rng.normal(size=(8, 10)), rng.normal(size=(8, 10))
    probs = rng.dirichlet(np.ones(10), 8)
    y = rng.integers(0, 10, 8)
    e = rng.normal(size=(8, 4))
    q, k = rng.normal(size=(8, 4)), rng.normal(size=(8, 4))

    def raises(msg, f):
        with pytest.raises(ValueError, match=re.escape(msg)):
            f()

    raises("grad_out must not overlap target",
           lambda: fl.cross_entropy(x, probs, return_grad=True, grad_out=probs))
    for f in (fl.kl_divergence, fl.js_divergence):
        raises("grad_out[0] must not overlap grad_out[1]",
               lambda f=f: f(x, t, return_grad=True, grad_out=(x, x)))
        raises("grad_out[0] must not overlap grad_out[1]",
               lambda f=f: f(x, t, return_grad=True, grad_out=(t, t)))
    raises("grad_out[0] must not overlap grad_out[1]",
           lambda: fl.triplet_margin_loss(e, q, k, return_grad=True, grad_out=(e, e, e)))
    raises("grad_out must not overlap teacher_logits",
           lambda: fl.distillation_loss(x, t, target=y, return_grad=True, grad_out=t))
    raises("grad_out[0] must not overlap key",
           lambda: fl.info_nce_loss(q, k, return_grad=True, grad_out=(k, q)))
    raises("grad_out[0] must not overlap z2",
           lambda: fl.nt_xent_loss(q, k, return_grad=True, grad_out=(k, q)))
    raises("grad_out must not overlap embeddings",
           lambda: fl.batch_hard_triplet_loss(e, np.arange(8) % 3, return_grad=True, grad_out=e))


# --- the check itself -----------------------------------------------------------------------

def test_check_no_overlap_bounds_then_exact(monkeypatch):
    buf = np.zeros(100)
    # interleaved: the bounds overlap, the elements do not
    _checks.check_no_overlap([("out", buf[::2])], [("a", buf[1::2])])
    with pytest.raises(ValueError, match="out must not overlap a"):
        _checks.check_no_overlap([("out", buf[::2])], [("a", buf[10:20])])
    # exact: only the same start, shape, strides and dtype, and only for inputs in in_place
    _checks.check_no_overlap([("out", buf[:50])], [("a", buf[:50])], in_place=("a",))
    for other in (buf[:50].reshape(5, 10), buf[1:51], buf[:50].view(np.int64), buf[:100:2]):
        with pytest.raises(ValueError, match=re.escape("out must not overlap a (it may be exactly a)")):
            _checks.check_no_overlap([("out", buf[:50])], [("a", other)], in_place=("a",))
    with pytest.raises(ValueError, match="out must not overlap b"):
        _checks.check_no_overlap([("out", buf[:50])], [("a", buf[:50]), ("b", buf[:50])],
                                 in_place=("a",))
    # strides of length-1 axes do not matter
    _checks.check_no_overlap([("out", buf[:10].reshape(1, 10))],
                             [("a", np.lib.stride_tricks.as_strided(buf[:10], (1, 10), (8, 8)))],
                             in_place=("a",))

    def too_hard(*args, **kwargs):
        assert kwargs["max_work"] == _checks.OVERLAP_MAX_WORK
        raise np.exceptions.TooHardError("Exceeded max_work")

    monkeypatch.setattr(np, "shares_memory", too_hard)
    with pytest.raises(ValueError, match="out must not overlap a"):
        _checks.check_no_overlap([("out", buf[::2])], [("a", buf[1::2])])
    _checks.check_no_overlap([("out", buf[:50])], [("a", buf[50:])])   # bounds decide alone


@pytest.mark.parametrize("axis", [(0, 1), None])
def test_merged_axes_softmax_overlap(axis):
    # a tuple/None axis goes through a merged copy: out= is still checked against x
    buf = np.random.default_rng(0).standard_normal(3 * 4 * 5 + 1)
    x = buf[:60].reshape(3, 4, 5)
    with pytest.raises(ValueError, match="out must not overlap x"):
        fl.softmax(x, axis=axis, out=buf[1:].reshape(3, 4, 5))
    y = x.copy()
    assert np.array_equal(fl.softmax(y, axis=axis, out=y), fl.softmax(x, axis=axis))


def test_every_loss_checks_its_other_arguments():
    """Every public function with a grad_out is under _checks.grad_out_apart, the one check of
    its targets, weights, labels and masks."""
    for name in fl.__all__:
        fn = getattr(fl, name)
        if callable(fn) and "grad_out" in inspect.signature(fn).parameters:
            assert fn.__code__ is _checks.grad_out_apart()(lambda: 0).__code__, name


def _sharing(arr, shape):
    """(a copy of arr, a float64 buffer of `shape`) in one raw buffer, the buffer starting 8
    bytes before the copy: every output element writes over it."""
    raw = np.zeros(8 * (int(np.prod(shape)) + arr.size) + 64, np.uint8)
    a = raw[8:8 + arr.nbytes].view(arr.dtype).reshape(arr.shape)
    a[...] = arr
    return a, raw[:8 * int(np.prod(shape))].view(np.float64).reshape(shape)


def _aux_cases():
    """(label, name of the shared argument, call(shared, out)): grad_out over a where= mask,
    labels or a target, which the masked and labelled paths copy before a kernel's own
    check sees them (found by fuzzing: the caller's array was overwritten, or the mask read
    back half written)."""
    rng = np.random.default_rng(3)
    N, C = 33, 40
    x, t = rng.normal(size=(N, C)), rng.normal(size=(N, C))
    y, keep, m = rng.integers(0, C, N), rng.uniform(size=N) < 0.8, rng.uniform(size=(N, C)) < 0.5
    return [
        ("mse where", "where", m, lambda s, o: fl.mse_loss(x, t, where=s, return_grad=True, grad_out=o)),
        ("cross_entropy where", "target", y,
         lambda s, o: fl.cross_entropy(x, s, where=keep, return_grad=True, grad_out=o)),
        ("entropy labels", "labels", y, lambda s, o: fl.entropy(x, labels=s, return_grad=True, grad_out=o)),
        ("kl labels", "labels", y, lambda s, o: fl.kl_divergence(x, t, labels=s, return_grad=True,
                                                                 grad_out=(o, np.empty((N, C))))),
        ("batch_hard where", "labels", y % 3,
         lambda s, o: fl.batch_hard_triplet_loss(x, s, where=keep, return_grad=True, grad_out=o)),
        ("gaussian_nll where", "target", t,
         lambda s, o: fl.gaussian_nll_loss(x, s, np.ones((N, C)), where=np.ones((N, C), bool),
                                           return_grad=True, grad_out=(o, np.empty((N, C))))),
    ]


@pytest.mark.parametrize("label,name,arr,call", _aux_cases(), ids=[c[0] for c in _aux_cases()])
def test_grad_out_over_a_mask_labels_or_target_raises(label, name, arr, call):
    shared, out = _sharing(arr, (33, 40))
    before = shared.copy()
    with pytest.raises(ValueError, match=f"must not overlap {name}"):
        call(shared, out)
    np.testing.assert_array_equal(shared, before)
