"""Divergences between softmax distributions: entropy, KL and Jensen-Shannon
divergences, and knowledge distillation. For these losses over distributions "mean"
averages over distributions (PyTorch's "batchmean", accepted as an alias).

Thin wrappers over the shared layer (ARCHITECTURE.md): validate every argument
(_checks.py), lay the data out as C-contiguous rows (_layout.py), call one fused row
kernel of _divergence.pyx, reduce (_reduce.py). The Gaussian family lives in
gaussian.py; its names are importable from here too, where the README first put them.
"""
from typing import NamedTuple

import numpy as np

from . import _config
from . import _divergence as _k
from ._checks import (as_float_array, as_labels, check_class_axis, check_grad_outs, check_grad_request,
                      check_ignore_index, check_no_overlap, check_real, check_reduction,
                      check_same_shape, check_temperature, compute_dtype, grad_out_apart, half_bits,
                      half_kind)
from ._layout import as_rows, grad_rows
from ._mask import check_where, document, independent
from ._reduce import grad_scale, reduce_rows
from ._xent import label_rows, prepare_labels
# The Gaussian family first lived here: its names stay importable from this module.
from .gaussian import gaussian_kl, gaussian_nll_loss, mvn_kl, vae_loss  # noqa: F401

__all__ = ["entropy", "kl_divergence", "js_divergence", "distillation_loss"]

_config.register_kernels(_k)


class DivergenceStats(NamedTuple):
    """Per-row statistics of :func:`kl_divergence` (``return_stats=True``), each of the
    per-row loss's shape: the index of the largest logit of each input (as ``np.argmax``)
    and whether they are the same class in a row that counts."""
    argmax_p: np.ndarray
    argmax_q: np.ndarray
    agree: np.ndarray


class DistillationStats(NamedTuple):
    """Per-row statistics of :func:`distillation_loss` (``return_stats=True``), as
    :class:`DivergenceStats`: the student's and the teacher's argmax and their agreement."""
    argmax_student: np.ndarray
    argmax_teacher: np.ndarray
    agree: np.ndarray


def _stats(cls, am, row_shape, counted=None):
    """cls of the kernel's (2, n) argmaxes, in its fields' order; agree is False where
    counted (or None: every row counts) is."""
    agree = am[0] == am[1]
    if counted is not None:
        agree &= counted.reshape(-1)
    return cls(am[0].reshape(row_shape), am[1].reshape(row_shape), agree.reshape(row_shape))


def _pair_setup(p_logits, q_logits, axis, names):
    """Two logit arrays of one shape and compute dtype, and the class axis. Two half arrays
    of one dtype stay half (the kernels read them natively); mixed with another dtype, a
    half array becomes float32."""
    a = as_float_array(p_logits, names[0], half=True)
    b = as_float_array(q_logits, names[1], half=True)
    dt = a.dtype if a.dtype == b.dtype else np.result_type(compute_dtype(a), compute_dtype(b))
    a, b = a.astype(dt, copy=False), b.astype(dt, copy=False)
    ax = check_class_axis(a, axis, names[0])
    check_same_shape(a, names[0], b, names[1])
    return a, b, ax


def _pair_call(kind, a, b, ax, inv_t, beta, reduction, return_grad, grad_out, names,
               return_stats=False):
    a2, b2 = as_rows(a, ax), as_rows(b, ax)
    n = a2.shape[0]
    gs = grad_scale(reduction, n) * inv_t
    ga = gb = None
    if return_grad:
        outs = check_grad_outs(grad_out, names)
        ga, fa = grad_rows(a, ax, outs[0], "grad_out[0]")
        gb, fb = grad_rows(b, ax, outs[1], "grad_out[1]")
        # a row's two gradients are written after both rows are read: each may be either input
        check_no_overlap([("grad_out[0]", outs[0]), ("grad_out[1]", outs[1])],
                         [(names[0], a), (names[1], b)], in_place=names)
    rows = np.empty(n, dtype=np.float64)
    am = np.empty((2, n), np.int64) if return_stats else None
    _pair_rows(kind, a2, b2, ga, gb, inv_t, beta, gs, gs, None, 0, rows, am,
               _config.threads_for(2 * a2.size))
    row_shape = a.shape[:ax] + a.shape[ax + 1:]
    loss = reduce_rows(rows, row_shape, n, reduction, compute_dtype(a))
    out = (loss, (fa(ga), fb(gb))) if return_grad else (loss,)
    if return_stats:
        out += (_stats(DivergenceStats, am, row_shape),)
    return out if len(out) > 1 else loss


def _row_mask(labels, ignore_index, where, row_shape):
    """The rows that count, as a where mask of row_shape: where, and labels !=
    ignore_index when labels are given (None when neither is)."""
    if labels is None:
        return where
    keep = as_labels(labels, "labels")
    if keep.shape != row_shape:
        raise ValueError(f"labels have shape {keep.shape}, expected the rows' shape {row_shape}")
    keep = keep != int(ignore_index)
    return keep if where is None else check_where(where, row_shape) & keep


def _pair_rows(kind, a2, b2, ga, gb, *args):
    """_divergence.pair_rows, or its half version for half rows (float16, bfloat16)."""
    hk = half_kind(a2.dtype)
    if hk is None:
        return _k.pair_rows(kind, a2, b2, ga, gb, *args)
    return _k.pair_rows_half(hk, kind, *[half_bits(v) for v in (a2, b2, ga, gb)], *args)


# --- discrete distributions -----------------------------------------------------------

@grad_out_apart("logits")
def entropy(logits, *, axis=-1, labels=None, ignore_index=-100, where=None, reduction="mean",
            return_grad=False, grad_out=None):
    r"""Shannon entropy H(softmax(logits)) of each distribution along `axis` (nats).

    Parameters
    ----------
    logits : array_like
        The classes along `axis`. Probabilities p can be passed as ``np.log(p)``: zeros
        become -inf and count 0 (0 log 0 = 0).
    axis : int, default -1
        The class axis.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" is over distributions (PyTorch's "batchmean", also accepted as an alias);
        "none" gives one loss per distribution.
    return_grad : bool, default False
        Also return the gradient with respect to logits.
    grad_out : ndarray, optional
        A C-contiguous buffer for the gradient, which may be `logits` itself.

    Returns
    -------
    loss : scalar or ndarray
        Compute dtype; ``"none"``: logits' shape without `axis`.
    grad : ndarray
        With ``return_grad=True``: logits' shape.

    Notes
    -----
    With :math:`p = \mathrm{softmax}(x)`:

    .. math::

        H = -\sum_k p_k \log p_k, \qquad
        \frac{\partial H}{\partial x_k} = -p_k (\log p_k + H)

    Equivalent: ``torch.distributions.Categorical(logits=x).entropy()``,
    ``scipy.stats.entropy`` (of probabilities).

    Examples
    --------
    >>> logits = np.array([[0.0, 0.0, -np.inf], [0.0, -np.inf, -np.inf]])
    >>> print(np.round(fastloss.entropy(logits, reduction="none"), 4))
    [0.6931 0.    ]
    """
    reduction = check_reduction(reduction, batchmean=True)
    check_grad_request(return_grad, grad_out)
    x = as_float_array(logits, "logits", half=True)
    ax = check_class_axis(x, axis, "logits")
    row_shape = x.shape[:ax] + x.shape[ax + 1:]
    m = _row_mask(labels, ignore_index, where, row_shape)
    if m is not None:
        return independent(lambda: entropy(x, axis=axis, reduction="none", return_grad=return_grad,
                                           grad_out=grad_out), m, row_shape, reduction,
                           return_grad, axes=[(ax,)])
    x2 = as_rows(x, ax)
    n = x2.shape[0]
    g2 = None
    if return_grad:
        out = check_grad_outs(grad_out, ["logits"])[0]
        g2, finish = grad_rows(x, ax, out)
        check_no_overlap([("grad_out", out)], [("logits", x)], in_place=("logits",))
    rows = np.empty(n, dtype=np.float64)
    args = (grad_scale(reduction, n), rows, _config.threads_for(x2.size))
    if half_kind(x.dtype) is None:
        _k.entropy(x2, g2, *args)
    else:
        _k.entropy_half(half_kind(x.dtype), half_bits(x2), half_bits(g2), *args)
    loss = reduce_rows(rows, row_shape, n, reduction, compute_dtype(x))
    return (loss, finish(g2)) if return_grad else loss


@grad_out_apart("p_logits", "q_logits")
def kl_divergence(p_logits, q_logits, *, axis=-1, temperature=1.0, labels=None, ignore_index=-100,
                  where=None, reduction="mean", return_grad=False, grad_out=None, return_stats=False):
    r"""KL(softmax(p_logits / T) || softmax(q_logits / T)) of each distribution along `axis`.

    No T**2 factor (see :func:`distillation_loss`). +inf where q has no mass on p's support;
    classes where p is 0 (logit -inf) count 0. The reverse KL is the same call with the
    arguments swapped.

    Parameters
    ----------
    p_logits, q_logits : array_like
        Logits of one shape, classes along `axis`. Probabilities go in as ``np.log(p)``.
    axis : int, default -1
        The class axis.
    temperature : float > 0, default 1
        T, finite.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" is over distributions (PyTorch's "batchmean", also accepted as an alias);
        "none" gives one loss per distribution.
    return_grad : bool, default False
        Gradients with respect to both inputs, (grad_p, grad_q).
    grad_out : tuple of two ndarray, optional
        C-contiguous buffers (either may be its input array; see the overlap rule).
    return_stats : bool, default False
        Also return per-row statistics from the same pass over the logits (how often a
        student's top class is its teacher's without a second pass).

    Returns
    -------
    loss : scalar or ndarray
        Compute dtype; ``"none"``: the shape without `axis`.
    grads : tuple of two ndarray
        With ``return_grad=True``: (grad_p, grad_q), the inputs' shape.
    stats : DivergenceStats
        With ``return_stats=True``, last: ``(argmax_p, argmax_q, agree)``, each of the
        per-row loss's shape (every row, masked ones too). `argmax_p`, `argmax_q` (int64):
        the index of the row's largest logit as given (the temperature changes none), the
        first one on ties, the first NaN in a row with NaN, 0 in an all -inf row
        (``np.argmax``'s rule). `agree` (bool): ``argmax_p == argmax_q`` in a row that
        counts (False where `where` is False or the label is `ignore_index`).

    Notes
    -----
    With :math:`p = \mathrm{softmax}(a / T)`, :math:`q = \mathrm{softmax}(b / T)`:

    .. math::

        \mathrm{KL} = \sum_k p_k (\log p_k - \log q_k), \qquad
        \frac{\partial\, \mathrm{KL}}{\partial a_k} = \frac{p_k}{T}
        (\log p_k - \log q_k - \mathrm{KL}), \qquad
        \frac{\partial\, \mathrm{KL}}{\partial b_k} = \frac{q_k - p_k}{T}

    Equivalent: ``torch.nn.functional.kl_div(log_softmax(b / T), log_softmax(a / T),
    log_target=True, reduction="batchmean")`` (note PyTorch's argument order: input is the
    log of q), ``optax.kl_divergence_with_log_targets``.

    Examples
    --------
    >>> p = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    >>> q = np.log(np.array([[0.25, 0.75], [0.5, 0.5]]))
    >>> loss, (g_p, g_q) = fastloss.kl_divergence(p, q, reduction="none", return_grad=True)
    >>> print(np.round(loss, 4))
    [0.1438 0.3681]
    >>> print(np.round(g_q, 4))
    [[-0.25  0.25]
     [-0.4   0.4 ]]
    >>> loss, stats = fastloss.kl_divergence(p, q, return_stats=True)
    >>> print(stats.argmax_p, stats.argmax_q, stats.agree)
    [0 0] [1 0] [False  True]
    """
    reduction = check_reduction(reduction, batchmean=True)
    check_grad_request(return_grad, grad_out)
    t = check_temperature(temperature)
    a, b, ax = _pair_setup(p_logits, q_logits, axis, ("p_logits", "q_logits"))
    row_shape = a.shape[:ax] + a.shape[ax + 1:]
    m = _row_mask(labels, ignore_index, where, row_shape)
    if m is not None:
        return independent(lambda: kl_divergence(a, b, axis=axis, temperature=t, reduction="none",
                                                 return_grad=return_grad, grad_out=grad_out,
                                                 return_stats=return_stats),
                           m, row_shape, reduction, return_grad, axes=[(ax,), (ax,)],
                           stats=return_stats)
    return _pair_call("kl", a, b, ax, 1.0 / t, 0.5, reduction, return_grad, grad_out,
                      ["p_logits", "q_logits"], return_stats)


@grad_out_apart("p_logits", "q_logits")
def js_divergence(p_logits, q_logits, *, beta=0.5, axis=-1, temperature=1.0, labels=None,
                  ignore_index=-100, where=None, reduction="mean", return_grad=False,
                  grad_out=None):
    r"""Generalised Jensen-Shannon divergence of p = softmax(p_logits / T) and
    q = softmax(q_logits / T) along `axis`.

    Parameters
    ----------
    p_logits, q_logits : array_like
        Logits of one shape, classes along `axis`.
    beta : float in [0, 1], default 0.5
        The mixture weight; 0.5 is the symmetric JSD (at most log 2); beta = 0 or 1 gives
        exactly 0.
    axis, temperature
        As :func:`kl_divergence`.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" is over distributions (PyTorch's "batchmean", also accepted as an alias);
        "none" gives one loss per distribution.
    return_grad, grad_out
        As :func:`kl_divergence`: gradients (grad_p, grad_q).

    Returns
    -------
    loss : scalar or ndarray
        Compute dtype; ``"none"``: the shape without `axis`.
    grads : tuple of two ndarray
        With ``return_grad=True``: (grad_p, grad_q).

    Notes
    -----
    .. math::

        \mathrm{JS}_\beta = \beta\, \mathrm{KL}(p \| m) + (1 - \beta)\,
        \mathrm{KL}(q \| m), \qquad m = \beta p + (1 - \beta) q

    .. math::

        \frac{\partial\, \mathrm{JS}_\beta}{\partial a_k} = \frac{\beta\, p_k}{T}
        \left(\log \frac{p_k}{m_k} - \mathrm{KL}(p \| m)\right)

    and symmetrically for q with :math:`1 - \beta`. No PyTorch or optax function;
    ``scipy.spatial.distance.jensenshannon`` is the square root of the symmetric one.

    Examples
    --------
    >>> p = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    >>> q = np.log(np.array([[0.25, 0.75], [0.5, 0.5]]))
    >>> print(np.round(fastloss.js_divergence(p, q, reduction="none"), 4))
    [0.0338 0.1017]
    """
    reduction = check_reduction(reduction, batchmean=True)
    check_grad_request(return_grad, grad_out)
    t = check_temperature(temperature)
    bt = check_real(beta, "beta", 0.0, 1.0)
    a, b, ax = _pair_setup(p_logits, q_logits, axis, ("p_logits", "q_logits"))
    row_shape = a.shape[:ax] + a.shape[ax + 1:]
    m = _row_mask(labels, ignore_index, where, row_shape)
    if m is not None:
        return independent(lambda: js_divergence(a, b, beta=bt, axis=axis, temperature=t,
                                                 reduction="none", return_grad=return_grad,
                                                 grad_out=grad_out),
                           m, row_shape, reduction, return_grad, axes=[(ax,), (ax,)])
    return _pair_call("js", a, b, ax, 1.0 / t, bt, reduction, return_grad, grad_out,
                      ["p_logits", "q_logits"])


@grad_out_apart("student_logits")
def distillation_loss(student_logits, teacher_logits, *, temperature=1.0, target=None, alpha=0.5,
                      axis=-1, ignore_index=-100, where=None, reduction="mean", return_grad=False,
                      grad_out=None, return_stats=False):
    r"""Hinton's knowledge-distillation loss, per distribution along `axis`.

    ``T**2 * KL(softmax(teacher / T) || softmax(student / T))``, and with hard labels
    `target`: ``alpha * that + (1 - alpha) * cross_entropy(student, target)``.

    Parameters
    ----------
    student_logits, teacher_logits : array_like
        Logits of one shape, classes along `axis`.
    temperature : float > 0, default 1
        T, finite.
    target : array_like of int, optional
        Hard labels (logits' shape without `axis`).
    alpha : float in [0, 1], default 0.5
        Weight of the KD term when `target` is given; a term of weight 0 is left out
        (contributes 0 even where it would be inf or NaN; ``alpha=0`` does not read the
        teacher).
    axis : int, default -1
        The class axis.
    ignore_index : int, default -100
        Rows whose target is ignore_index count for nothing in either term (padding).
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" divides by the rows that count (all rows without target); "batchmean" is an
        alias.
    return_grad : bool, default False
        The gradient with respect to the student logits only.
    grad_out : ndarray, optional
        A C-contiguous buffer for it; may be `student_logits` itself.
    return_stats : bool, default False
        Also return per-row statistics from the KD term's pass over the logits (it reads
        the teacher also with ``alpha=0``).

    Returns
    -------
    loss : scalar or ndarray
        Compute dtype; ``"none"``: the shape without `axis`.
    grad : ndarray
        With ``return_grad=True``: the student logits' shape.
    stats : DistillationStats
        With ``return_stats=True``, last: ``(argmax_student, argmax_teacher, agree)``, each
        of the per-row loss's shape, as :func:`kl_divergence`'s (the logits as given);
        `agree` is False where `where` is False or the target is `ignore_index`.

    Notes
    -----
    With :math:`s = \mathrm{softmax}(x / T)` of the student, :math:`t` of the teacher:

    .. math::

        l = \alpha\, T^2 \sum_k t_k (\log t_k - \log s_k)
            + (1 - \alpha)\, \mathrm{CE}(x, y), \qquad
        \frac{\partial l}{\partial x_k} = \alpha\, T (s_k - t_k)
            + (1 - \alpha) (\mathrm{softmax}(x)_k - [k = y])

    (:math:`\alpha = 1` without `target`). The PyTorch idiom is
    ``T**2 * F.kl_div(log_softmax(student / T), log_softmax(teacher / T), log_target=True,
    reduction="batchmean")`` plus ``F.cross_entropy``.

    Examples
    --------
    >>> s = np.array([[1.0, 0.0, -1.0], [0.0, 0.0, 2.0]])
    >>> t = np.array([[2.0, 0.0, -2.0], [0.0, 1.0, 1.0]])
    >>> print(round(float(fastloss.distillation_loss(s, t, temperature=2.0)), 4))
    0.3074
    >>> y = np.array([0, -100])                  # the second row counts for nothing
    >>> print(round(float(fastloss.distillation_loss(s, t, temperature=2.0, target=y)), 4))
    0.3243
    """
    reduction = check_reduction(reduction, batchmean=True)
    check_grad_request(return_grad, grad_out)
    T = check_temperature(temperature)
    al = check_real(alpha, "alpha", 0.0, 1.0)
    s, t, ax = _pair_setup(student_logits, teacher_logits, axis, ("student_logits", "teacher_logits"))
    row_shape = s.shape[:ax] + s.shape[ax + 1:]
    if where is not None:
        counted = None if target is None else np.asarray(target) != int(ignore_index)
        return independent(lambda: distillation_loss(
            s, t, temperature=T, target=target, alpha=al, axis=axis, ignore_index=ignore_index,
            reduction="none", return_grad=return_grad, grad_out=grad_out,
            return_stats=return_stats),
            where, row_shape, reduction, return_grad, axes=[(ax,)], item_weight=counted,
            stats=return_stats)
    s2, t2 = as_rows(s, ax), as_rows(t, ax)
    n = s2.shape[0]
    labels = None
    ignore_index = check_ignore_index(ignore_index)
    if target is not None:
        labels, denom = prepare_labels(target, row_shape, s.shape[ax], ignore_index,
                                       against=f"student_logits {s.shape} without axis {axis}")
        w_kl, w_ce = al, 1.0 - al
    else:
        denom = float(n)
        w_kl, w_ce = 1.0, 0.0
    gs = grad_scale(reduction, denom)
    # both terms: the KL kernel adds the student's cross-entropy in its own pass (each row
    # read and the gradient written once); alpha = 0: the cross-entropy kernel alone
    fused = w_ce > 0 and w_kl > 0
    g2 = None
    if return_grad:
        out = check_grad_outs(grad_out, ["student_logits"])[0]
        g2, finish = grad_rows(s, ax, out)
        check_no_overlap([("grad_out", out)], [("student_logits", s)], in_place=("student_logits",))
        if w_ce > 0 and not fused and return_stats and np.shares_memory(g2, s2):
            s2 = s2.copy()   # the cross-entropy pass writes g2 before the stats pass reads s2
    nt = _config.threads_for(2 * s2.size)
    # the rows' weighted sums in place: in a fresh process a temporary per term was a
    # newly faulted array per call once glibc trimmed its heap (574 faults a call at
    # 65536 rows, 224 now)
    if w_ce > 0 and not fused:
        rows = label_rows(s2, labels, ignore_index=ignore_index, gscale=gs * w_ce, grad=g2,
                          n_threads=nt)
        rows *= w_ce
    am = np.empty((2, n), np.int64) if return_stats else None
    if w_kl > 0 or return_stats:          # alpha = 0: the pass for the argmaxes alone
        kl = np.empty(n, dtype=np.float64)
        ce = np.empty(n, dtype=np.float64) if fused else None
        _pair_rows("kl", t2, s2, None, g2 if w_kl > 0 else None, 1.0 / T, 0.5, 0.0,
                   gs * w_kl * T, labels, ignore_index, kl, am, nt, ce, gs * w_ce)
        if w_kl > 0:
            rows = kl
            rows *= w_kl * T * T
        if fused:
            ce *= w_ce
            rows += ce
    loss = reduce_rows(rows, row_shape, denom, reduction, compute_dtype(s))
    out = (loss, finish(g2)) if return_grad else (loss,)
    if return_stats:          # the kernel's a is the teacher
        out += (_stats(DistillationStats, am[::-1], row_shape,
                       None if labels is None else labels != ignore_index),)
    return out if len(out) > 1 else loss


_IGNORE_NOTE = """    labels : array_like of int, optional
        The rows' labels (logits' shape without `axis`), e.g. a language model's targets
        with padding: only compared with `ignore_index`.
    ignore_index : int, default -100
        With `labels`, rows whose label is ignore_index count for nothing (as `where`).
"""
for _fn in (entropy, kl_divergence, js_divergence):
    document(_fn, "row", _IGNORE_NOTE)
document(distillation_loss, "row")
