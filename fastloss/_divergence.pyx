# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""OpenMP kernels for the divergences between softmax rows (entropy, KL, JS).

Each function takes already-checked, C-contiguous arrays (fastloss/_checks.py
does the checking) and runs a `prange` over blocks of rows or elements; the
per-block work is a C function from csrc/fl_divergence.h picked for this CPU's
SIMD level. Per-row losses come back in float64; rows are independent, so results
are identical for any number of threads. The elementwise Gaussian losses are in
fastloss/_gaussian.pyx.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint16_t

from ._blocks cimport rows_per_block, scratch_row
from ._half cimport fl_float_to_half, fl_half_set_level, fl_half_to_float

import numpy as np

cdef extern from "fl_divergence.h" nogil:
    ctypedef struct fl_div_params:
        int64_t C
        double inv_t
        double beta
        double gscale_p
        double gscale_q
        int accumulate_q
        int64_t ignore_index
        int stream
    int FL_DIV_ROW_CACHE_BYTES
    void fl_divergence_set_level(int level)
    # One declaration per kernel for both dtypes (csrc/fl_common.h's FL_CALL): the
    # kernel's T pointers are void pointers here.
    void fl_entropy_rows(const void *x, void *g, int64_t n, int64_t C, double gscale, double *loss,
                         void *scratch, int stream)
    void fl_kl_rows(const void *a, const void *b, void *ga, void *gb, int64_t n, const int64_t *labels,
                    const fl_div_params *p, double *loss, void *scratch)
    void fl_js_rows(const void *a, const void *b, void *ga, void *gb, int64_t n, const fl_div_params *p,
                    double *loss, void *scratch)

# Gradients of at least this many bytes are written with streaming stores (they
# cannot stay in cache anyway, and a streaming store does not read the line first).
cdef int64_t _stream_bytes = 16 * 1024 * 1024


def set_stream_bytes(int64_t nbytes):
    """Threshold (bytes per gradient array) for streaming stores; returns the old one."""
    global _stream_bytes
    old = _stream_bytes
    _stream_bytes = nbytes
    return old


def set_level(int level):
    fl_divergence_set_level(level)
    fl_half_set_level(level)


cdef inline bint _cached(int64_t C, size_t itemsize) noexcept nogil:
    return C * <int64_t> itemsize <= FL_DIV_ROW_CACHE_BYTES


cdef _thread_rows(int n_threads, int64_t width, size_t itemsize):
    """Per-thread scratch (fastloss/_blocks.pxd): a row of at least `width` elements per thread."""
    return np.empty((n_threads, scratch_row(width * itemsize, itemsize)),
                    dtype=np.float32 if itemsize == 4 else np.float64)


# --- softmax rows ---------------------------------------------------------------------

def entropy(const floating[:, ::1] x, floating[:, ::1] g, double gscale, double[::1] loss,
            int n_threads):
    """Per-row entropy of softmax(x) into `loss`; gradient of gscale * sum into g (or None)."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = rows_per_block(C), r0
    cdef floating *gp = &g[0, 0] if g is not None and n > 0 else NULL
    cdef floating[:, ::1] scratch = None
    cdef int stream = gp != NULL and n * C * <int64_t> sizeof(floating) >= _stream_bytes
    if n == 0:
        return
    if _cached(C, sizeof(floating)) and gp != NULL:
        scratch = _thread_rows(n_threads, 2 * C, sizeof(floating))
    for r0 in prange(0, n, rpb, nogil=True, schedule="static", num_threads=n_threads):
        fl_entropy_rows(&x[r0, 0], gp + r0 * C if gp else NULL, min(rpb, n - r0), C, gscale, &loss[r0],
                        &scratch[threadid(), 0] if scratch is not None else NULL, stream)


def pair_rows(str kind, const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] ga,
              floating[:, ::1] gb, double inv_t, double beta, double gscale_p, double gscale_q,
              bint accumulate_q, const int64_t[::1] labels, int64_t ignore_index,
              double[::1] loss, int n_threads):
    """Per-row KL(softmax(a/T) || softmax(b/T)) (kind "kl") or generalised JS (kind "js")
    into `loss`; gradients into ga / gb (either may be None). labels (or None): rows equal
    to ignore_index are skipped (KL only). accumulate_q: gb is added to."""
    cdef int64_t n = a.shape[0], C = a.shape[1]
    cdef int64_t rpb = rows_per_block(C), r0, nr
    cdef floating *gap = &ga[0, 0] if ga is not None and n > 0 else NULL
    cdef floating *gbp = &gb[0, 0] if gb is not None and n > 0 else NULL
    cdef floating[:, ::1] scratch = None
    cdef floating *sp
    cdef const int64_t *lab = &labels[0] if labels is not None and n > 0 else NULL
    cdef bint js = kind == "js"
    cdef fl_div_params p = fl_div_params(
        C=C, inv_t=inv_t, beta=beta, gscale_p=gscale_p, gscale_q=gscale_q, accumulate_q=accumulate_q,
        ignore_index=ignore_index,
        stream=(gap != NULL or gbp != NULL) and n * C * <int64_t> sizeof(floating) >= _stream_bytes)
    if n == 0:
        return
    if _cached(C, sizeof(floating)) and (gap != NULL or gbp != NULL or js):
        scratch = _thread_rows(n_threads, (4 if js else 3) * C, sizeof(floating))
    for r0 in prange(0, n, rpb, nogil=True, schedule="static", num_threads=n_threads):
        nr = min(rpb, n - r0)
        sp = &scratch[threadid(), 0] if scratch is not None else NULL
        if js:
            fl_js_rows(&a[r0, 0], &b[r0, 0], gap + r0 * C if gap else NULL, gbp + r0 * C if gbp else NULL,
                       nr, &p, &loss[r0], sp)
        else:
            fl_kl_rows(&a[r0, 0], &b[r0, 0], gap + r0 * C if gap else NULL, gbp + r0 * C if gbp else NULL,
                       nr, lab + r0 if lab else NULL, &p, &loss[r0], sp)


# --- half-precision rows: a block at a time through float32 scratch --------------------
# Each block of rows is converted into per-thread float32 scratch (cache-resident), the
# float32 kernel runs there, writing its gradients in place, and the gradient blocks are
# converted back. An output may be an input: a block is written after it is read. Each
# thread's scratch ends with a block of padding: the kernels prefetch one row past the
# rows they read, which must not be another thread's scratch (its lines would bounce
# between the cores).

def entropy_half(int kind, const uint16_t[:, ::1] x, uint16_t[:, ::1] g, double gscale,
                 double[::1] loss, int n_threads):
    """entropy on half rows (kind: fastloss/_half.pxd)."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = rows_per_block(C), r0, nr
    cdef int64_t w = scratch_row(rpb * C * 4, 4)
    cdef uint16_t *gp = &g[0, 0] if g is not None and n > 0 else NULL
    cdef bint cache = _cached(C, 4) and gp != NULL
    cdef float[:, ::1] scratch
    cdef float *xs
    if n == 0:
        return
    scratch = _thread_rows(n_threads, 2 * w + (2 * C if cache else 0), 4)
    for r0 in prange(0, n, rpb, nogil=True, schedule="static", num_threads=n_threads):
        nr = min(rpb, n - r0)
        xs = &scratch[threadid(), 0]
        fl_half_to_float(kind, &x[r0, 0], xs, nr * C)
        fl_entropy_rows(xs, xs if gp else NULL, nr, C, gscale, &loss[r0], xs + w if cache else NULL, 0)
        if gp:
            fl_float_to_half(kind, xs, gp + r0 * C, nr * C)


def pair_rows_half(int kind, str loss_kind, const uint16_t[:, ::1] a, const uint16_t[:, ::1] b,
                   uint16_t[:, ::1] ga, uint16_t[:, ::1] gb, double inv_t, double beta, double gscale_p,
                   double gscale_q, bint accumulate_q, const int64_t[::1] labels, int64_t ignore_index,
                   double[::1] loss, int n_threads):
    """pair_rows on half rows (kind: fastloss/_half.pxd). With accumulate_q, gb's block is
    converted in, added to in float32 and converted back (rounded to half twice)."""
    cdef int64_t n = a.shape[0], C = a.shape[1]
    cdef int64_t rpb = rows_per_block(C), r0, nr, m
    cdef int64_t w = scratch_row(rpb * C * 4, 4)
    cdef uint16_t *gap = &ga[0, 0] if ga is not None and n > 0 else NULL
    cdef uint16_t *gbp = &gb[0, 0] if gb is not None and n > 0 else NULL
    cdef const int64_t *lab = &labels[0] if labels is not None and n > 0 else NULL
    cdef bint js = loss_kind == "js"
    cdef bint cache = _cached(C, 4) and (gap != NULL or gbp != NULL or js)
    # the b block's slot holds gb's block when both are needed apart (accumulate_q)
    cdef int64_t slots = 3 if accumulate_q else 2
    cdef float[:, ::1] scratch
    cdef float *s
    cdef float *sgb
    cdef fl_div_params p = fl_div_params(
        C=C, inv_t=inv_t, beta=beta, gscale_p=gscale_p, gscale_q=gscale_q, accumulate_q=accumulate_q,
        ignore_index=ignore_index, stream=0)
    if n == 0:
        return
    scratch = _thread_rows(n_threads, (slots + 1) * w + ((4 if js else 3) * C if cache else 0), 4)
    for r0 in prange(0, n, rpb, nogil=True, schedule="static", num_threads=n_threads):
        nr = min(rpb, n - r0)
        m = nr * C
        s = &scratch[threadid(), 0]
        sgb = s + 2 * w if accumulate_q else s + w
        fl_half_to_float(kind, &a[r0, 0], s, m)
        fl_half_to_float(kind, &b[r0, 0], s + w, m)
        if accumulate_q and gbp:
            fl_half_to_float(kind, gbp + r0 * C, sgb, m)
        if js:
            fl_js_rows(s, s + w, s if gap else NULL, sgb if gbp else NULL, nr, &p, &loss[r0],
                       s + slots * w if cache else NULL)
        else:
            fl_kl_rows(s, s + w, s if gap else NULL, sgb if gbp else NULL, nr, lab + r0 if lab else NULL,
                       &p, &loss[r0], s + slots * w if cache else NULL)
        if gap:
            fl_float_to_half(kind, s, gap + r0 * C, m)
        if gbp:
            fl_float_to_half(kind, sgb, gbp + r0 * C, m)
