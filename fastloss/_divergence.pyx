# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""OpenMP kernels for the divergences between softmax rows (entropy, KL, JS).

Each function takes already-checked, C-contiguous arrays (fastloss/divergence.py
does the checking) and runs a `prange` over blocks of rows or elements; the
per-block work is a C function from csrc/fl_divergence.h picked for this CPU's
SIMD level. Per-row losses come back in float64; rows are independent, so results
are identical for any number of threads. The elementwise Gaussian losses are in
fastloss/_gaussian.pyx.
"""
from cython cimport floating
from cython.parallel cimport prange, parallel
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free

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
    void fl_entropy_rows_f32(const float*, float*, int64_t, int64_t, double, double*, float*, int)
    void fl_entropy_rows_f64(const double*, double*, int64_t, int64_t, double, double*, double*, int)
    void fl_kl_rows_f32(const float*, const float*, float*, float*, int64_t, const int64_t*, const fl_div_params*, double*, float*)
    void fl_kl_rows_f64(const double*, const double*, double*, double*, int64_t, const int64_t*, const fl_div_params*, double*, double*)
    void fl_js_rows_f32(const float*, const float*, float*, float*, int64_t, const fl_div_params*, double*, float*)
    void fl_js_rows_f64(const double*, const double*, double*, double*, int64_t, const fl_div_params*, double*, double*)

# Elements per parallel work item of the elementwise losses (now in _gaussian;
# kept here as a module attribute).
ELEMENT_BLOCK = 16384
# Elements per work item of the row losses (rows are independent, so any
# blocking gives the same result; this only bounds scheduling overhead).
cdef int64_t _ROW_WORK = 32768
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


cdef inline int64_t _rows_per_block(int64_t C) noexcept nogil:
    return _ROW_WORK // C if C < _ROW_WORK else 1


cdef inline bint _cached(int64_t C, size_t itemsize) noexcept nogil:
    return C * <int64_t> itemsize <= FL_DIV_ROW_CACHE_BYTES


# --- softmax rows ---------------------------------------------------------------------

def entropy(const floating[:, ::1] x, floating[:, ::1] g, double gscale, double[::1] loss,
            int n_threads):
    """Per-row entropy of softmax(x) into `loss`; gradient of gscale * sum into g (or None)."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = _rows_per_block(C), nb = (n + rpb - 1) // rpb, b, r0, nr
    cdef floating *gp = &g[0, 0] if g is not None and n > 0 else NULL
    cdef floating *scratch = NULL
    cdef bint cached = _cached(C, sizeof(floating)) and gp != NULL
    cdef int stream = gp != NULL and n * C * <int64_t> sizeof(floating) >= _stream_bytes
    if n == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        scratch = <floating *> malloc(2 * C * sizeof(floating)) if cached else NULL
        for b in prange(nb, schedule="static"):
            r0 = b * rpb
            nr = rpb if r0 + rpb <= n else n - r0
            if floating is float:
                fl_entropy_rows_f32(&x[r0, 0], gp + r0 * C if gp else NULL, nr, C, gscale, &loss[r0], scratch, stream)
            else:
                fl_entropy_rows_f64(&x[r0, 0], gp + r0 * C if gp else NULL, nr, C, gscale, &loss[r0], scratch, stream)
        free(scratch)


def pair_rows(str kind, const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] ga,
              floating[:, ::1] gb, double inv_t, double beta, double gscale_p, double gscale_q,
              bint accumulate_q, const int64_t[::1] labels, int64_t ignore_index,
              double[::1] loss, int n_threads):
    """Per-row KL(softmax(a/T) || softmax(b/T)) (kind "kl") or generalised JS (kind "js")
    into `loss`; gradients into ga / gb (either may be None). labels (or None): rows equal
    to ignore_index are skipped (KL only). accumulate_q: gb is added to."""
    cdef fl_div_params p
    cdef int64_t n = a.shape[0], C = a.shape[1]
    cdef int64_t rpb = _rows_per_block(C), nb = (n + rpb - 1) // rpb, bk, r0, nr
    cdef floating *gap = &ga[0, 0] if ga is not None and n > 0 else NULL
    cdef floating *gbp = &gb[0, 0] if gb is not None and n > 0 else NULL
    cdef floating *scratch = NULL
    cdef const int64_t *lab = &labels[0] if labels is not None and n > 0 else NULL
    cdef bint js = kind == "js"
    cdef int n_scratch = 4 if js else 3
    cdef bint cached = _cached(C, sizeof(floating)) and (gap != NULL or gbp != NULL or js)
    p.C = C
    p.inv_t = inv_t
    p.beta = beta
    p.gscale_p = gscale_p
    p.gscale_q = gscale_q
    p.accumulate_q = accumulate_q
    p.ignore_index = ignore_index
    p.stream = (gap != NULL or gbp != NULL) and n * C * <int64_t> sizeof(floating) >= _stream_bytes
    if n == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        scratch = <floating *> malloc(n_scratch * C * sizeof(floating)) if cached else NULL
        for bk in prange(nb, schedule="static"):
            r0 = bk * rpb
            nr = rpb if r0 + rpb <= n else n - r0
            if floating is float:
                if js:
                    fl_js_rows_f32(&a[r0, 0], &b[r0, 0], gap + r0 * C if gap else NULL,
                                   gbp + r0 * C if gbp else NULL, nr, &p, &loss[r0], scratch)
                else:
                    fl_kl_rows_f32(&a[r0, 0], &b[r0, 0], gap + r0 * C if gap else NULL,
                                   gbp + r0 * C if gbp else NULL, nr, lab + r0 if lab else NULL, &p,
                                   &loss[r0], scratch)
            else:
                if js:
                    fl_js_rows_f64(&a[r0, 0], &b[r0, 0], gap + r0 * C if gap else NULL,
                                   gbp + r0 * C if gbp else NULL, nr, &p, &loss[r0], scratch)
                else:
                    fl_kl_rows_f64(&a[r0, 0], &b[r0, 0], gap + r0 * C if gap else NULL,
                                   gbp + r0 * C if gbp else NULL, nr, lab + r0 if lab else NULL, &p,
                                   &loss[r0], scratch)
        free(scratch)
