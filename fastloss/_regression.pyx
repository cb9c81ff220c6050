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

from ._blocks cimport BOX_BLOCK as BBLK, ELEMENT_BLOCK as EBLK, n_blocks, ordered_sum

import numpy as np

cdef extern from "fl_regression.h" nogil:
    int fl_reg_kind(const char *name)
    int FL_BOX_GIOU, FL_BOX_DIOU, FL_BOX_CIOU
    void fl_regression_set_level(int level)
    # One declaration per kernel for both dtypes (csrc/fl_common.h's FL_CALL): the
    # kernel's T pointers are void pointers here, its T scalars doubles.
    double fl_reg_block(int kind, const void *x, const void *t, const void *w, void *lout, void *g,
                        int64_t n, double param, double gscale)
    double fl_box_block(int kind, const void *b1, const void *b2, void *lout, void *g1, void *g2,
                        int64_t n, double eps, double gscale)
    int64_t fl_box_first_bad(const void *boxes, int64_t n)

# Box loss kinds, as the C enum.
GIOU, DIOU, CIOU = FL_BOX_GIOU, FL_BOX_DIOU, FL_BOX_CIOU

# Box pairs per work item of the box losses (fastloss/_blocks.pxd).
BOX_BLOCK = BBLK


def set_level(int level):
    fl_regression_set_level(level)


def elementwise(str name, const floating[::1] x, const floating[::1] t, const floating[::1] w,
                int64_t w_period, floating[::1] lout, floating[::1] g, double param,
                double gscale, int n_threads):
    """Sum of w * loss(x - t) over x (flat) for the loss `name` (an FL_REG_KINDS entry of
    csrc/fl_regression_impl.h). w (or None) is a tiled weight: element i
    uses w[i % w_period], and each block's run of weights is contiguous in w (see
    fastloss._layout.periodic). lout (w * loss per element) and g (its
    derivative with respect to x, times gscale) are optional. param: beta / delta."""
    cdef int kind = fl_reg_kind(name.encode())
    cdef int64_t n = x.shape[0], s
    cdef double[::1] part = np.empty(n_blocks(n, EBLK), dtype=np.float64)
    cdef const floating *wp = &w[0] if w is not None else NULL
    if kind < 0:
        raise ValueError(f"no elementwise regression loss named {name!r}")
    cdef floating *lp = &lout[0] if lout is not None and n > 0 else NULL
    cdef floating *gp = &g[0] if g is not None and n > 0 else NULL
    for s in prange(0, n, EBLK, nogil=True, schedule="static", num_threads=n_threads):
        part[s // EBLK] = fl_reg_block(kind, &x[s], &t[s], wp + s % w_period if wp else NULL,
                               lp + s if lp else NULL, gp + s if gp else NULL, min(EBLK, n - s),
                               param, gscale)
    return ordered_sum(part)


def box_first_bad(const floating[:, ::1] boxes, int n_threads):
    """Index of the first (x1, y1, x2, y2) row with x2 < x1 or y2 < y1, or -1."""
    cdef int64_t n = boxes.shape[0], b, s
    cdef int64_t[::1] bad = np.empty(n_blocks(n, BBLK), dtype=np.int64)
    for s in prange(0, n, BBLK, nogil=True, schedule="static", num_threads=n_threads):
        bad[s // BBLK] = fl_box_first_bad(&boxes[s, 0], min(BBLK, n - s))
    for b in range(bad.shape[0]):
        if bad[b] >= 0:
            return b * BBLK + bad[b]
    return -1


def box(int kind, const floating[:, ::1] b1, const floating[:, ::1] b2, floating[::1] lout,
        floating[:, ::1] g1, floating[:, ::1] g2, double eps, double gscale, int n_threads):
    """Sum of a box IoU loss over the (n, 4) pairs b1[i], b2[i]; lout (per pair) and the
    gradients g1, g2 (both or neither, times gscale) are optional."""
    cdef int64_t n = b1.shape[0], s
    cdef double[::1] part = np.empty(n_blocks(n, BBLK), dtype=np.float64)
    cdef floating *lp = &lout[0] if lout is not None and n > 0 else NULL
    cdef floating *g1p = &g1[0, 0] if g1 is not None and n > 0 else NULL
    cdef floating *g2p = &g2[0, 0] if g2 is not None and n > 0 else NULL
    for s in prange(0, n, BBLK, nogil=True, schedule="static", num_threads=n_threads):
        part[s // BBLK] = fl_box_block(kind, &b1[s, 0], &b2[s, 0], lp + s if lp else NULL,
                               g1p + 4 * s if g1p else NULL, g2p + 4 * s if g2p else NULL,
                               min(BBLK, n - s), eps, gscale)
    return ordered_sum(part)
