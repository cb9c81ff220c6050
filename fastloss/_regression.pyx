# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""OpenMP kernels for the regression and bounding-box losses.

Each function takes already-checked, C-contiguous arrays (fastloss/_checks.py
does the checking) and runs a `prange` over fixed-size blocks of elements (or
box pairs); the per-block work is a C function from csrc/fl_regression.h picked
for this CPU's SIMD level. Each block returns a float64 partial sum, and the
partial sums are added in block order, so results are identical for any number
of threads.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t

import numpy as np

cdef extern from "fl_regression.h" nogil:
    int FL_REG_MSE, FL_REG_L1, FL_REG_SMOOTH_L1, FL_REG_HUBER, FL_REG_LOGCOSH
    int FL_BOX_GIOU, FL_BOX_DIOU, FL_BOX_CIOU
    void fl_regression_set_level(int level)
    double fl_reg_block_f32(int, const float*, const float*, const float*, float*, float*, int64_t, float, float)
    double fl_reg_block_f64(int, const double*, const double*, const double*, double*, double*, int64_t, double, double)
    double fl_box_block_f32(int, const float*, const float*, float*, float*, float*, int64_t, float, float)
    double fl_box_block_f64(int, const double*, const double*, double*, double*, double*, int64_t, double, double)
    int64_t fl_box_first_bad_f32(const float*, int64_t)
    int64_t fl_box_first_bad_f64(const double*, int64_t)

# Loss kinds, as the C enums.
MSE, L1, SMOOTH_L1, HUBER, LOGCOSH = FL_REG_MSE, FL_REG_L1, FL_REG_SMOOTH_L1, FL_REG_HUBER, FL_REG_LOGCOSH
GIOU, DIOU, CIOU = FL_BOX_GIOU, FL_BOX_DIOU, FL_BOX_CIOU

# Elements per parallel work item of the elementwise losses. Fixed (not derived
# from the thread count) so the float64 partial sums are always the same. Equal to
# fastloss._classification.ELEMENT_BLOCK, whose weight tiling (_periodic) we share.
ELEMENT_BLOCK = 16384
cdef int64_t _EBLK = ELEMENT_BLOCK
# Box pairs per parallel work item.
BOX_BLOCK = 4096
cdef int64_t _BBLK = BOX_BLOCK


def set_level(int level):
    fl_regression_set_level(level)


cdef double _ordered_sum(double[::1] part) noexcept:
    cdef double s = 0.0
    cdef Py_ssize_t i
    for i in range(part.shape[0]):
        s += part[i]
    return s


def elementwise(int kind, const floating[::1] x, const floating[::1] t, const floating[::1] w,
                int64_t w_period, floating[::1] lout, floating[::1] g, double param,
                double gscale, int n_threads):
    """Sum of w * loss(x - t) over x (flat). w (or None) is a tiled weight: element i
    uses w[i % w_period], and each block's run of weights is contiguous in w (see
    fastloss.classification._periodic). lout (w * loss per element) and g (its
    derivative with respect to x, times gscale) are optional. param: beta / delta."""
    cdef int64_t n = x.shape[0], nb = (n + _EBLK - 1) // _EBLK, b, s, m
    cdef double[::1] part
    cdef const floating *wp = &w[0] if w is not None else NULL
    cdef floating *lp = &lout[0] if lout is not None and n > 0 else NULL
    cdef floating *gp = &g[0] if g is not None and n > 0 else NULL
    if n == 0:
        return 0.0
    part = np.empty(nb, dtype=np.float64)
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        s = b * _EBLK
        m = _EBLK if s + _EBLK <= n else n - s
        if floating is float:
            part[b] = fl_reg_block_f32(kind, &x[s], &t[s], wp + s % w_period if wp else NULL,
                                       lp + s if lp else NULL, gp + s if gp else NULL, m,
                                       <float> param, <float> gscale)
        else:
            part[b] = fl_reg_block_f64(kind, &x[s], &t[s], wp + s % w_period if wp else NULL,
                                       lp + s if lp else NULL, gp + s if gp else NULL, m,
                                       param, gscale)
    return _ordered_sum(part)


def box_first_bad(const floating[:, ::1] boxes, int n_threads):
    """Index of the first (x1, y1, x2, y2) row with x2 < x1 or y2 < y1, or -1."""
    cdef int64_t n = boxes.shape[0], nb = (n + _BBLK - 1) // _BBLK, b, s, m
    cdef int64_t[::1] bad
    if n == 0:
        return -1
    bad = np.empty(nb, dtype=np.int64)
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        s = b * _BBLK
        m = _BBLK if s + _BBLK <= n else n - s
        if floating is float:
            bad[b] = fl_box_first_bad_f32(&boxes[s, 0], m)
        else:
            bad[b] = fl_box_first_bad_f64(&boxes[s, 0], m)
    for b in range(nb):
        if bad[b] >= 0:
            return b * _BBLK + bad[b]
    return -1


def box(int kind, const floating[:, ::1] b1, const floating[:, ::1] b2, floating[::1] lout,
        floating[:, ::1] g1, floating[:, ::1] g2, double eps, double gscale, int n_threads):
    """Sum of a box IoU loss over the (n, 4) pairs b1[i], b2[i]; lout (per pair) and the
    gradients g1, g2 (both or neither, times gscale) are optional."""
    cdef int64_t n = b1.shape[0], nb = (n + _BBLK - 1) // _BBLK, b, s, m
    cdef double[::1] part
    cdef floating *lp = &lout[0] if lout is not None and n > 0 else NULL
    cdef floating *g1p = &g1[0, 0] if g1 is not None and n > 0 else NULL
    cdef floating *g2p = &g2[0, 0] if g2 is not None and n > 0 else NULL
    if n == 0:
        return 0.0
    part = np.empty(nb, dtype=np.float64)
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        s = b * _BBLK
        m = _BBLK if s + _BBLK <= n else n - s
        if floating is float:
            part[b] = fl_box_block_f32(kind, &b1[s, 0], &b2[s, 0], lp + s if lp else NULL,
                                       g1p + 4 * s if g1p else NULL, g2p + 4 * s if g2p else NULL,
                                       m, <float> eps, <float> gscale)
        else:
            part[b] = fl_box_block_f64(kind, &b1[s, 0], &b2[s, 0], lp + s if lp else NULL,
                                       g1p + 4 * s if g1p else NULL, g2p + 4 * s if g2p else NULL,
                                       m, eps, gscale)
    return _ordered_sum(part)
