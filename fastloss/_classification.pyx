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
from libc.stdint cimport int64_t

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
    void fl_classification_set_level(int level)
    void fl_xent_label_rows_f32(const float*, float*, int64_t, const int64_t*, const fl_xent_params*, double*, float*)
    void fl_xent_label_rows_f64(const double*, double*, int64_t, const int64_t*, const fl_xent_params*, double*, double*)
    void fl_xent_label_cols_f32(const float*, float*, int64_t, int64_t, int64_t, int64_t, const int64_t*, const fl_xent_params*, double*)
    void fl_xent_label_cols_f64(const double*, double*, int64_t, int64_t, int64_t, int64_t, const int64_t*, const fl_xent_params*, double*)
    void fl_xent_prob_rows_f32(const float*, const float*, float*, int64_t, const fl_xent_params*, double*, float*)
    void fl_xent_prob_rows_f64(const double*, const double*, double*, int64_t, const fl_xent_params*, double*, double*)
    void fl_softmax_rows_f32(const float*, float*, int64_t, int64_t, int, double*)
    void fl_softmax_rows_f64(const double*, double*, int64_t, int64_t, int, double*)
    double fl_bce_block_f32(const float*, const float*, const float*, const float*, float*, float*, int64_t, float)
    double fl_bce_block_f64(const double*, const double*, const double*, const double*, double*, double*, int64_t, double)
    double fl_focal_block_f32(const float*, const float*, float*, float*, int64_t, float, float, float)
    double fl_focal_block_f64(const double*, const double*, double*, double*, int64_t, double, double, double)
    void fl_exp_array_f32(const float*, float*, int64_t)
    void fl_exp_array_f64(const double*, double*, int64_t)
    void fl_log_array_f32(const float*, float*, int64_t)
    void fl_log_array_f64(const double*, double*, int64_t)
    void fl_log1p_array_f32(const float*, float*, int64_t)
    void fl_log1p_array_f64(const double*, double*, int64_t)
    void fl_log1p_unit_array_f32(const float*, float*, int64_t)
    void fl_log1p_unit_array_f64(const double*, double*, int64_t)

# Elements per parallel work item of the elementwise losses. Fixed (not derived
# from the thread count) so the float64 partial sums are always the same.
ELEMENT_BLOCK = 16384
cdef int64_t _EBLK = ELEMENT_BLOCK
# Elements per work item of the row losses (rows are independent, so any
# blocking gives the same result; this only bounds scheduling overhead).
cdef int64_t _ROW_WORK = 32768


def set_level(int level):
    fl_classification_set_level(level)


def _scratch(x, int n_threads, double softcap):
    """Per-thread rows for the soft-capped logits (None without softcap), allocated
    here so no kernel allocates."""
    return np.empty((n_threads, x.shape[1]), dtype=np.asarray(x).dtype) if softcap > 0 else None


cdef inline int64_t _rows_per_block(int64_t C) noexcept nogil:
    return _ROW_WORK // C if C < _ROW_WORK else 1


def xent_label(const floating[:, ::1] x, const int64_t[::1] y, floating[:, ::1] g,
               const floating[::1] class_weight, double weight_sum, int64_t ignore_index,
               double smoothing, double z_loss, double softcap, double gscale,
               double[::1] loss, int n_threads):
    """Per-row softmax cross-entropy with integer labels into `loss`; gradient into g (or None)."""
    cdef fl_xent_params p
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = _rows_per_block(C), nb = (n + rpb - 1) // rpb, b, r0, nr
    cdef floating *gp = &g[0, 0] if g is not None and n > 0 else NULL
    cdef floating[:, ::1] scratch = _scratch(x, n_threads, softcap)
    cdef floating *sp = NULL
    p.C = C
    p.ignore_index = ignore_index
    p.class_weight = &class_weight[0] if class_weight is not None else NULL
    p.weight_sum = weight_sum
    p.smoothing = smoothing
    p.z_loss = z_loss
    p.softcap = softcap
    p.gscale = gscale
    if n == 0:
        return
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        r0 = b * rpb
        nr = rpb if r0 + rpb <= n else n - r0
        sp = &scratch[threadid(), 0] if scratch is not None else NULL
        if floating is float:
            fl_xent_label_rows_f32(&x[r0, 0], gp + r0 * C if gp else NULL, nr, &y[r0], &p, &loss[r0], sp)
        else:
            fl_xent_label_rows_f64(&x[r0, 0], gp + r0 * C if gp else NULL, nr, &y[r0], &p, &loss[r0], sp)


def xent_label_strided(const floating[:, :, ::1] x, const int64_t[:, ::1] y, floating[:, :, ::1] g,
                       const floating[::1] class_weight, double weight_sum, int64_t ignore_index,
                       double smoothing, double z_loss, double gscale, double[:, ::1] loss,
                       int n_threads):
    """As xent_label for x of shape (A, C, D): the classes on the middle axis (PyTorch's
    layout), labels and losses (A, D), gradient (or None) of x's shape."""
    cdef fl_xent_params p
    cdef int64_t A = x.shape[0], C = x.shape[1], D = x.shape[2]
    # columns per work item: about _ROW_WORK elements, whole cache lines
    cdef int64_t db = max(64, (_ROW_WORK // C) // 64 * 64)
    cdef int64_t nblk = (D + db - 1) // db, i, a, d0
    cdef floating *gp = &g[0, 0, 0] if g is not None and A * D > 0 else NULL
    p.C = C
    p.ignore_index = ignore_index
    p.class_weight = &class_weight[0] if class_weight is not None else NULL
    p.weight_sum = weight_sum
    p.smoothing = smoothing
    p.z_loss = z_loss
    p.softcap = 0
    p.gscale = gscale
    if A * D == 0:
        return
    for i in prange(A * nblk, nogil=True, schedule="static", num_threads=n_threads):
        a = i // nblk
        d0 = (i % nblk) * db
        if floating is float:
            fl_xent_label_cols_f32(&x[a, 0, 0], gp + a * C * D if gp else NULL, C, D, d0,
                                   min(D, d0 + db), &y[a, 0], &p, &loss[a, 0])
        else:
            fl_xent_label_cols_f64(&x[a, 0, 0], gp + a * C * D if gp else NULL, C, D, d0,
                                   min(D, d0 + db), &y[a, 0], &p, &loss[a, 0])


def xent_prob(const floating[:, ::1] x, const floating[:, ::1] t, floating[:, ::1] g,
              const floating[::1] class_weight, double smoothing, double z_loss,
              double softcap, double gscale, double[::1] loss, int n_threads):
    """Per-row softmax cross-entropy with probability targets into `loss`; gradient into g (or None)."""
    cdef fl_xent_params p
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = _rows_per_block(C), nb = (n + rpb - 1) // rpb, b, r0, nr
    cdef floating *gp = &g[0, 0] if g is not None and n > 0 else NULL
    cdef floating[:, ::1] scratch = _scratch(x, n_threads, softcap)
    cdef floating *sp = NULL
    p.C = C
    p.ignore_index = 0
    p.class_weight = &class_weight[0] if class_weight is not None else NULL
    p.weight_sum = 0
    p.smoothing = smoothing
    p.z_loss = z_loss
    p.softcap = softcap
    p.gscale = gscale
    if n == 0:
        return
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        r0 = b * rpb
        nr = rpb if r0 + rpb <= n else n - r0
        sp = &scratch[threadid(), 0] if scratch is not None else NULL
        if floating is float:
            fl_xent_prob_rows_f32(&x[r0, 0], &t[r0, 0], gp + r0 * C if gp else NULL, nr, &p, &loss[r0], sp)
        else:
            fl_xent_prob_rows_f64(&x[r0, 0], &t[r0, 0], gp + r0 * C if gp else NULL, nr, &p, &loss[r0], sp)


def softmax_rows(const floating[:, ::1] x, floating[:, ::1] out, bint log_out,
                 double[::1] lse, int n_threads):
    """lse[r] = logsumexp(x[r]); with out (or None), softmax or log-softmax of each row."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = _rows_per_block(C), nb = (n + rpb - 1) // rpb, b, r0, nr
    cdef floating *op = &out[0, 0] if out is not None and n > 0 else NULL
    if n == 0:
        return
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        r0 = b * rpb
        nr = rpb if r0 + rpb <= n else n - r0
        if floating is float:
            fl_softmax_rows_f32(&x[r0, 0], op + r0 * C if op else NULL, nr, C, log_out, &lse[r0])
        else:
            fl_softmax_rows_f64(&x[r0, 0], op + r0 * C if op else NULL, nr, C, log_out, &lse[r0])


def bce(const floating[::1] x, const floating[::1] t, const floating[::1] w, int64_t w_period,
        const floating[::1] pw, int64_t pw_period, floating[::1] lout, floating[::1] g,
        double gscale, int n_threads):
    """Sum of binary cross-entropy with logits over x (flat). w / pw are tiled weights:
    element i uses w[i % w_period]; each holds at least ELEMENT_BLOCK + period
    entries (or the whole array), so a block's weights are contiguous."""
    cdef int64_t n = x.shape[0], nb = (n + _EBLK - 1) // _EBLK, b, s, m
    cdef double[::1] part
    cdef const floating *wp = &w[0] if w is not None else NULL
    cdef const floating *pwp = &pw[0] if pw is not None else NULL
    cdef floating *lp = &lout[0] if lout is not None and n > 0 else NULL
    cdef floating *gp = &g[0] if g is not None and n > 0 else NULL
    if n == 0:
        return 0.0
    part = np.empty(nb, dtype=np.float64)
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        s = b * _EBLK
        m = _EBLK if s + _EBLK <= n else n - s
        if floating is float:
            part[b] = fl_bce_block_f32(&x[s], &t[s], wp + s % w_period if wp else NULL,
                                       pwp + s % pw_period if pwp else NULL,
                                       lp + s if lp else NULL, gp + s if gp else NULL, m, <float> gscale)
        else:
            part[b] = fl_bce_block_f64(&x[s], &t[s], wp + s % w_period if wp else NULL,
                                       pwp + s % pw_period if pwp else NULL,
                                       lp + s if lp else NULL, gp + s if gp else NULL, m, gscale)
    return _ordered_sum(part)


def focal(const floating[::1] x, const floating[::1] t, double alpha, double gamma,
          floating[::1] lout, floating[::1] g, double gscale, int n_threads):
    """Sum of the sigmoid focal loss over x (flat); per-element loss and gradient optional."""
    cdef int64_t n = x.shape[0], nb = (n + _EBLK - 1) // _EBLK, b, s, m
    cdef double[::1] part
    cdef floating *lp = &lout[0] if lout is not None and n > 0 else NULL
    cdef floating *gp = &g[0] if g is not None and n > 0 else NULL
    if n == 0:
        return 0.0
    part = np.empty(nb, dtype=np.float64)
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        s = b * _EBLK
        m = _EBLK if s + _EBLK <= n else n - s
        if floating is float:
            part[b] = fl_focal_block_f32(&x[s], &t[s], lp + s if lp else NULL, gp + s if gp else NULL,
                                         m, <float> alpha, <float> gamma, <float> gscale)
        else:
            part[b] = fl_focal_block_f64(&x[s], &t[s], lp + s if lp else NULL, gp + s if gp else NULL,
                                         m, alpha, gamma, gscale)
    return _ordered_sum(part)


cdef double _ordered_sum(double[::1] part) noexcept:
    cdef double s = 0.0
    cdef Py_ssize_t i
    for i in range(part.shape[0]):
        s += part[i]
    return s


def vector_math(str fn, const floating[::1] x, floating[::1] y):
    """y = exp/log/log1p/log1p_unit(x) with the kernels' own vectorised functions (accuracy tests)."""
    cdef int64_t n = x.shape[0]
    if n == 0:
        return
    if fn == "exp":
        if floating is float:
            fl_exp_array_f32(&x[0], &y[0], n)
        else:
            fl_exp_array_f64(&x[0], &y[0], n)
    elif fn == "log":
        if floating is float:
            fl_log_array_f32(&x[0], &y[0], n)
        else:
            fl_log_array_f64(&x[0], &y[0], n)
    elif fn == "log1p":
        if floating is float:
            fl_log1p_array_f32(&x[0], &y[0], n)
        else:
            fl_log1p_array_f64(&x[0], &y[0], n)
    elif fn == "log1p_unit":
        if floating is float:
            fl_log1p_unit_array_f32(&x[0], &y[0], n)
        else:
            fl_log1p_unit_array_f64(&x[0], &y[0], n)
    else:
        raise ValueError(f"unknown function {fn!r}")
