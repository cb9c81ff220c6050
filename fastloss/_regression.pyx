# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kernels for the regression and bounding-box losses.

Each function takes already-checked, C-contiguous arrays (fastloss/_checks.py
does the checking) and runs its fixed-size blocks of elements (or box pairs) on
the thread pool (_runtime.run_blocks): a job struct holds the loop's arguments and
a block function does one block's work, a C function from csrc/fl_regression.h
picked for this CPU's SIMD level. Each block returns a float64 partial sum, and the
partial sums are added in block order, so results are identical for any number
of threads.
"""
from cython cimport floating
from libc.stdint cimport int64_t, uint8_t

from ._blocks cimport BOX_BLOCK as BBLK, ELEMENT_BLOCK as EBLK, n_blocks, ordered_sum
from ._runtime cimport block_fn, run_blocks, stream_output

import numpy as np

cdef extern from "fl_regression.h" nogil:
    int fl_reg_kind(const char *name)
    int FL_BOX_GIOU, FL_BOX_DIOU, FL_BOX_CIOU
    void fl_regression_set_level(int level)
    # One declaration per kernel for both dtypes (csrc/fl_common.h's FL_CALL): the
    # kernel's T pointers are void pointers here, its T scalars doubles.
    double fl_reg_block(int kind, const void *x, const void *t, const void *w, const uint8_t *m,
                        void *lout, void *g, int64_t n, double param, double gscale, int stream)
    double fl_box_block(int kind, const void *b1, const void *b2, void *lout, void *g1, void *g2,
                        int64_t n, double eps, double gscale)
    int64_t fl_box_first_bad(const void *boxes, int64_t n)

# Box loss kinds, as the C enum.
GIOU, DIOU, CIOU = FL_BOX_GIOU, FL_BOX_DIOU, FL_BOX_CIOU

# Box pairs per work item of the box losses (fastloss/_blocks.pxd).
BOX_BLOCK = BBLK


def set_level(int level):
    fl_regression_set_level(level)


cdef struct ElementJob:
    int kind
    int64_t n, w_period
    const void *x
    const void *t
    const void *w
    const uint8_t *m
    void *lout
    void *g
    double param, gscale
    double *part
    int stream                   # write g with streaming stores (stream_output)


cdef void _element_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef ElementJob *j = <ElementJob *>job
    cdef int64_t s = b * EBLK
    cdef const floating *w = <const floating *>j.w
    cdef floating *lp = <floating *>j.lout
    cdef floating *gp = <floating *>j.g
    j.part[b] = fl_reg_block(j.kind, <const floating *>j.x + s, <const floating *>j.t + s,
                             w + s % j.w_period if w else NULL, j.m + s if j.m else NULL,
                             lp + s if lp else NULL, gp + s if gp else NULL,
                             min(EBLK, j.n - s), j.param, j.gscale, j.stream)


def elementwise(str name, const floating[::1] x, const floating[::1] t, const floating[::1] w,
                int64_t w_period, const uint8_t[::1] m, floating[::1] lout, floating[::1] g,
                double param, double gscale, int n_threads):
    """Sum of w * loss(x - t) over x (flat) for the loss `name` (an FL_REG_KINDS entry of
    csrc/fl_regression_impl.h). w (or None) is a tiled weight: element i
    uses w[i % w_period], and each block's run of weights is contiguous in w (see
    fastloss._layout.periodic). m (or None): the where= mask, a byte per element; a 0
    byte's element counts for nothing (loss and gradient 0, whatever x holds there).
    lout (w * loss per element) and g (its derivative with respect to x, times gscale)
    are optional. param: beta / delta."""
    cdef int kind = fl_reg_kind(name.encode())
    cdef int64_t n = x.shape[0]
    cdef double[::1] part = np.empty(n_blocks(n, EBLK), dtype=np.float64)
    if kind < 0:
        raise ValueError(f"no elementwise regression loss named {name!r}")
    if n == 0:
        return 0.0
    cdef const floating *wp = &w[0] if w is not None else NULL
    cdef floating *lp = &lout[0] if lout is not None else NULL
    cdef floating *gp = &g[0] if g is not None else NULL
    cdef const uint8_t *mp = &m[0] if m is not None else NULL
    cdef ElementJob job = ElementJob(kind=kind, n=n, w_period=w_period, x=&x[0], t=&t[0], w=wp,
                                     m=mp, lout=lp, g=gp, param=param, gscale=gscale, part=&part[0],
                                     stream=gp != NULL and stream_output(n * sizeof(floating)))
    with nogil:
        run_blocks(<block_fn>_element_block[floating], &job, part.shape[0], n_threads)
    return ordered_sum(part)


cdef struct BoxJob:
    int kind
    int64_t n
    const void *b1
    const void *b2
    void *lout
    void *g1
    void *g2
    double eps, gscale
    double *part
    int64_t *bad


cdef void _first_bad_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef BoxJob *j = <BoxJob *>job
    cdef int64_t s = b * BBLK
    j.bad[b] = fl_box_first_bad(<const floating *>j.b1 + 4 * s, min(BBLK, j.n - s))


def box_first_bad(const floating[:, ::1] boxes, int n_threads):
    """Index of the first (x1, y1, x2, y2) row with x2 < x1 or y2 < y1, or -1."""
    cdef int64_t n = boxes.shape[0], b
    cdef int64_t[::1] bad = np.empty(n_blocks(n, BBLK), dtype=np.int64)
    if n == 0:
        return -1
    cdef BoxJob job = BoxJob(kind=0, n=n, b1=&boxes[0, 0], b2=NULL, lout=NULL, g1=NULL, g2=NULL,
                             eps=0, gscale=0, part=NULL, bad=&bad[0])
    with nogil:
        run_blocks(<block_fn>_first_bad_block[floating], &job, bad.shape[0], n_threads)
    for b in range(bad.shape[0]):
        if bad[b] >= 0:
            return b * BBLK + bad[b]
    return -1


cdef void _box_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef BoxJob *j = <BoxJob *>job
    cdef int64_t s = b * BBLK
    cdef floating *lp = <floating *>j.lout
    cdef floating *g1 = <floating *>j.g1
    cdef floating *g2 = <floating *>j.g2
    j.part[b] = fl_box_block(j.kind, <const floating *>j.b1 + 4 * s, <const floating *>j.b2 + 4 * s,
                             lp + s if lp else NULL, g1 + 4 * s if g1 else NULL,
                             g2 + 4 * s if g2 else NULL, min(BBLK, j.n - s), j.eps, j.gscale)


def box(int kind, const floating[:, ::1] b1, const floating[:, ::1] b2, floating[::1] lout,
        floating[:, ::1] g1, floating[:, ::1] g2, double eps, double gscale, int n_threads):
    """Sum of a box IoU loss over the (n, 4) pairs b1[i], b2[i]; lout (per pair) and the
    gradients g1, g2 (both or neither, times gscale) are optional."""
    cdef int64_t n = b1.shape[0]
    cdef double[::1] part = np.empty(n_blocks(n, BBLK), dtype=np.float64)
    if n == 0:
        return 0.0
    cdef floating *lp = &lout[0] if lout is not None else NULL
    cdef floating *g1p = &g1[0, 0] if g1 is not None else NULL
    cdef floating *g2p = &g2[0, 0] if g2 is not None else NULL
    cdef BoxJob job = BoxJob(kind=kind, n=n, b1=&b1[0, 0], b2=&b2[0, 0], lout=lp, g1=g1p, g2=g2p,
                             eps=eps, gscale=gscale, part=&part[0], bad=NULL)
    with nogil:
        run_blocks(<block_fn>_box_block[floating], &job, part.shape[0], n_threads)
    return ordered_sum(part)
