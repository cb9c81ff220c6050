# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""OpenMP kernels for the classification losses.

Each function takes already-checked, C-contiguous arrays (fastloss/_checks.py
does the checking) and runs a `prange` over blocks of rows or elements; the
per-block work is a C function from csrc/fl_classification.h picked for this
CPU's SIMD level. Per-row losses come back in float64; elementwise losses are
summed in float64 per fixed-size block, and the partial sums are added in block
order, so results are identical for any number of threads.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint16_t

from ._blocks cimport ELEMENT_BLOCK as EBLK, ROW_WORK, n_blocks, ordered_sum, rows_per_block, scratch_row
from ._half cimport fl_float_to_half, fl_half_set_level, fl_half_to_float

import numpy as np

cdef extern from "fl_classification.h" nogil:
    ctypedef struct fl_xent_params:
        int64_t C
        int64_t ignore_index
        const void *class_weight
        double weight_sum
        double smoothing
        double z_loss
        double softcap
        double gscale
    double fl_label_row_loss(const fl_xent_params *p, double wy, double m, double logs,
                             double xy, double sd, double *a)
    void fl_classification_set_level(int level)
    # One declaration per kernel for both dtypes (csrc/fl_common.h's FL_CALL): the
    # kernel's T pointers are void pointers here, its T scalars doubles.
    void fl_xent_label_rows(const void *x, void *g, int64_t n, const int64_t *y, const fl_xent_params *p,
                            double *loss, void *scratch)
    void fl_xent_label_cols(const void *x, void *g, int64_t C, int64_t D, int64_t d0, int64_t d1,
                            const int64_t *y, const fl_xent_params *p, double *loss)
    void fl_xent_prob_rows(const void *x, const void *t, void *g, int64_t n, const fl_xent_params *p,
                           double *loss, void *scratch)
    void fl_softmax_rows(const void *x, void *out, int64_t n, int64_t C, int log_out, double *lse)
    double fl_bce_block(const void *x, const void *t, const void *w, const void *pw, void *lout, void *g,
                        int64_t n, double gscale)
    double fl_focal_block(const void *x, const void *t, void *lout, void *g, int64_t n, double alpha,
                          double gamma, double gscale)
    void fl_exp_array(const void *x, void *y, int64_t n)
    void fl_log_array(const void *x, void *y, int64_t n)
    void fl_log1p_array(const void *x, void *y, int64_t n)
    void fl_log1p_unit_array(const void *x, void *y, int64_t n)


def set_level(int level):
    fl_classification_set_level(level)
    fl_half_set_level(level)


def _scratch(x, int n_threads, double softcap):
    """Per-thread rows for the soft-capped logits (None without softcap), allocated
    here so no kernel allocates."""
    return np.empty((n_threads, x.shape[1]), dtype=np.asarray(x).dtype) if softcap > 0 else None


cdef _xent_rows(const floating[:, ::1] x, const int64_t *y, const floating *t, floating[:, ::1] g,
                const floating[::1] class_weight, fl_xent_params p, double[::1] loss, int n_threads):
    """The row loop of xent_label (labels y) and xent_prob (target rows t, y NULL); p's
    class_weight is set here."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = rows_per_block(C), r0, nr
    cdef floating *gp = &g[0, 0] if g is not None and n > 0 else NULL
    cdef floating[:, ::1] scratch = _scratch(x, n_threads, p.softcap)
    cdef floating *sp
    p.class_weight = &class_weight[0] if class_weight is not None else NULL
    for r0 in prange(0, n, rpb, nogil=True, schedule="static", num_threads=n_threads):
        nr = min(rpb, n - r0)
        sp = &scratch[threadid(), 0] if scratch is not None else NULL
        if y:
            fl_xent_label_rows(&x[r0, 0], gp + r0 * C if gp else NULL, nr, y + r0, &p, &loss[r0], sp)
        else:
            fl_xent_prob_rows(&x[r0, 0], t + r0 * C, gp + r0 * C if gp else NULL, nr, &p, &loss[r0], sp)


def xent_label(const floating[:, ::1] x, const int64_t[::1] y, floating[:, ::1] g,
               const floating[::1] class_weight, double weight_sum, int64_t ignore_index,
               double smoothing, double z_loss, double softcap, double gscale,
               double[::1] loss, int n_threads):
    """Per-row softmax cross-entropy with integer labels into `loss`; gradient into g (or None)."""
    if x.shape[0] > 0:
        _xent_rows(x, &y[0], NULL, g, class_weight,
                   fl_xent_params(C=x.shape[1], ignore_index=ignore_index, class_weight=NULL,
                                  weight_sum=weight_sum, smoothing=smoothing, z_loss=z_loss, softcap=softcap,
                                  gscale=gscale), loss, n_threads)


def xent_prob(const floating[:, ::1] x, const floating[:, ::1] t, floating[:, ::1] g,
              const floating[::1] class_weight, double smoothing, double z_loss,
              double softcap, double gscale, double[::1] loss, int n_threads):
    """Per-row softmax cross-entropy with probability targets into `loss`; gradient into g (or None)."""
    if x.shape[0] > 0:
        _xent_rows(x, NULL, &t[0, 0], g, class_weight,
                   fl_xent_params(C=x.shape[1], ignore_index=0, class_weight=NULL, weight_sum=0,
                                  smoothing=smoothing, z_loss=z_loss, softcap=softcap, gscale=gscale),
                   loss, n_threads)


def xent_half(int kind, const uint16_t[:, ::1] x, const int64_t[::1] y, const uint16_t[:, ::1] t,
              uint16_t[:, ::1] g, const float[::1] class_weight, double weight_sum, int64_t ignore_index,
              double smoothing, double z_loss, double softcap, double gscale, double[::1] loss,
              int n_threads):
    """xent_label (labels y, t None) or xent_prob (targets t, y None) on half rows (kind:
    fastloss/_half.pxd): each block of rows is converted into per-thread float32 scratch,
    the float32 kernel runs there (its gradient in place), and the gradient block is
    converted back into g (or None). g may be x: a block is written after it is read."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = rows_per_block(C), r0, nr
    cdef int64_t w = scratch_row(rpb * C * 4, 4), slots = 1 if t is None else 2
    cdef uint16_t *gp = &g[0, 0] if g is not None and n > 0 else NULL
    cdef float[:, ::1] scratch
    cdef float *xs
    cdef float *cap
    cdef const float *cw = &class_weight[0] if class_weight is not None else NULL
    cdef fl_xent_params p = fl_xent_params(
        C=C, ignore_index=ignore_index, class_weight=cw, weight_sum=weight_sum, smoothing=smoothing,
        z_loss=z_loss, softcap=softcap, gscale=gscale)
    if n == 0:
        return
    # per thread: the block, the target block (t), the soft-capped row (softcap)
    scratch = np.empty((n_threads, slots * w + (scratch_row(C * 4, 4) if softcap > 0 else 0)), np.float32)
    for r0 in prange(0, n, rpb, nogil=True, schedule="static", num_threads=n_threads):
        nr = min(rpb, n - r0)
        xs = &scratch[threadid(), 0]
        cap = xs + slots * w if softcap > 0 else NULL
        fl_half_to_float(kind, &x[r0, 0], xs, nr * C)
        if t is None:
            fl_xent_label_rows(xs, xs if gp else NULL, nr, &y[r0], &p, &loss[r0], cap)
        else:
            fl_half_to_float(kind, &t[r0, 0], xs + w, nr * C)
            fl_xent_prob_rows(xs, xs + w, xs if gp else NULL, nr, &p, &loss[r0], cap)
        if gp:
            fl_float_to_half(kind, xs, gp + r0 * C, nr * C)


def xent_label_strided(const floating[:, :, ::1] x, const int64_t[:, ::1] y, floating[:, :, ::1] g,
                       const floating[::1] class_weight, double weight_sum, int64_t ignore_index,
                       double smoothing, double z_loss, double gscale, double[:, ::1] loss,
                       int n_threads):
    """As xent_label for x of shape (A, C, D): the classes on the middle axis (PyTorch's
    layout), labels and losses (A, D), gradient (or None) of x's shape."""
    cdef int64_t A = x.shape[0], C = x.shape[1], D = x.shape[2]
    # columns per work item: about ROW_WORK elements, whole cache lines
    cdef int64_t db = max(64, (ROW_WORK // C) // 64 * 64)
    cdef int64_t nblk = n_blocks(D, db), i, a, d0
    cdef floating *gp = &g[0, 0, 0] if g is not None and A * D > 0 else NULL
    cdef const floating *cw = &class_weight[0] if class_weight is not None else NULL
    cdef fl_xent_params p = fl_xent_params(
        C=C, ignore_index=ignore_index, class_weight=cw,
        weight_sum=weight_sum, smoothing=smoothing, z_loss=z_loss, softcap=0, gscale=gscale)
    if A * D == 0:
        return
    for i in prange(A * nblk, nogil=True, schedule="static", num_threads=n_threads):
        a = i // nblk
        d0 = (i % nblk) * db
        fl_xent_label_cols(&x[a, 0, 0], gp + a * C * D if gp else NULL, C, D, d0, min(D, d0 + db),
                           &y[a, 0], &p, &loss[a, 0])


def softmax_rows(const floating[:, ::1] x, floating[:, ::1] out, bint log_out,
                 double[::1] lse, int n_threads):
    """lse[r] = logsumexp(x[r]); with out (or None), softmax or log-softmax of each row."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = rows_per_block(C), r0
    cdef floating *op = &out[0, 0] if out is not None and n > 0 else NULL
    for r0 in prange(0, n, rpb, nogil=True, schedule="static", num_threads=n_threads):
        fl_softmax_rows(&x[r0, 0], op + r0 * C if op else NULL, min(rpb, n - r0), C, log_out, &lse[r0])


def softmax_rows_half(int kind, const uint16_t[:, ::1] x, uint16_t[:, ::1] out, bint log_out,
                      double[::1] lse, int n_threads):
    """softmax_rows on half rows, a block at a time through float32 scratch (as xent_half)."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = rows_per_block(C), r0, nr
    cdef uint16_t *op = &out[0, 0] if out is not None and n > 0 else NULL
    cdef float[:, ::1] scratch = np.empty((n_threads, scratch_row(rpb * C * 4, 4)), np.float32)
    cdef float *xs
    for r0 in prange(0, n, rpb, nogil=True, schedule="static", num_threads=n_threads):
        nr = min(rpb, n - r0)
        xs = &scratch[threadid(), 0]
        fl_half_to_float(kind, &x[r0, 0], xs, nr * C)
        fl_softmax_rows(xs, xs if op else NULL, nr, C, log_out, &lse[r0])
        if op:
            fl_float_to_half(kind, xs, op + r0 * C, nr * C)


def half_convert(int kind, uint16_t[::1] h, float[::1] f, bint to_half):
    """f = float32(h) (to_half False) or h = half(f) (True) with the kernels' own conversions
    (tests); h holds the half values' bits."""
    cdef int64_t n = h.shape[0]
    if n == 0:
        return
    if to_half:
        fl_float_to_half(kind, &f[0], &h[0], n)
    else:
        fl_half_to_float(kind, &h[0], &f[0], n)


def bce(const floating[::1] x, const floating[::1] t, const floating[::1] w, int64_t w_period,
        const floating[::1] pw, int64_t pw_period, floating[::1] lout, floating[::1] g,
        double gscale, int n_threads):
    """Sum of binary cross-entropy with logits over x (flat). w / pw are tiled weights:
    element i uses w[i % w_period]; each holds at least ELEMENT_BLOCK + period
    entries (or the whole array), so a block's weights are contiguous."""
    cdef int64_t n = x.shape[0], s
    cdef double[::1] part = np.empty(n_blocks(n, EBLK), dtype=np.float64)
    cdef const floating *wp = &w[0] if w is not None else NULL
    cdef const floating *pwp = &pw[0] if pw is not None else NULL
    cdef floating *lp = &lout[0] if lout is not None and n > 0 else NULL
    cdef floating *gp = &g[0] if g is not None and n > 0 else NULL
    for s in prange(0, n, EBLK, nogil=True, schedule="static", num_threads=n_threads):
        part[s // EBLK] = fl_bce_block(&x[s], &t[s], wp + s % w_period if wp else NULL,
                               pwp + s % pw_period if pwp else NULL, lp + s if lp else NULL,
                               gp + s if gp else NULL, min(EBLK, n - s), gscale)
    return ordered_sum(part)


def focal(const floating[::1] x, const floating[::1] t, double alpha, double gamma,
          floating[::1] lout, floating[::1] g, double gscale, int n_threads):
    """Sum of the sigmoid focal loss over x (flat); per-element loss and gradient optional."""
    cdef int64_t n = x.shape[0], s
    cdef double[::1] part = np.empty(n_blocks(n, EBLK), dtype=np.float64)
    cdef floating *lp = &lout[0] if lout is not None and n > 0 else NULL
    cdef floating *gp = &g[0] if g is not None and n > 0 else NULL
    for s in prange(0, n, EBLK, nogil=True, schedule="static", num_threads=n_threads):
        part[s // EBLK] = fl_focal_block(&x[s], &t[s], lp + s if lp else NULL, gp + s if gp else NULL,
                                 min(EBLK, n - s), alpha, gamma, gscale)
    return ordered_sum(part)


def label_losses(const double[::1] m, const double[::1] logs, const double[::1] xy,
                 const double[::1] sd, const double[::1] wy, const unsigned char[::1] counted,
                 int64_t C, double weight_sum, double smoothing, double z_loss, double[::1] loss):
    """Per-row cross-entropy from its statistics (a reference m, log sum exp(x - m), label
    logit, sum_k w_k (m - x_k), label weight) by the row kernels' own formula; rows not
    counted get 0. For rows whose statistics were gathered piecewise (linear_cross_entropy)."""
    cdef fl_xent_params p = fl_xent_params(C=C, ignore_index=0, class_weight=NULL,
                                           weight_sum=weight_sum, smoothing=smoothing,
                                           z_loss=z_loss, softcap=0, gscale=1)
    cdef double a
    cdef Py_ssize_t i
    for i in range(m.shape[0]):
        loss[i] = fl_label_row_loss(&p, wy[i], m[i], logs[i], xy[i], sd[i], &a) if counted[i] else 0.0


def vector_math(str fn, const floating[::1] x, floating[::1] y):
    """y = exp/log/log1p/log1p_unit(x) with the kernels' own vectorised functions (accuracy tests)."""
    cdef int64_t n = x.shape[0]
    if n == 0:
        return
    if fn == "exp":
        fl_exp_array(&x[0], &y[0], n)
    elif fn == "log":
        fl_log_array(&x[0], &y[0], n)
    elif fn == "log1p":
        fl_log1p_array(&x[0], &y[0], n)
    elif fn == "log1p_unit":
        fl_log1p_unit_array(&x[0], &y[0], n)
    else:
        raise ValueError(f"unknown function {fn!r}")
