# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""OpenMP kernels for the divergences and probabilistic losses.

Each function takes already-checked, C-contiguous arrays (fastloss/divergence.py
does the checking) and runs a `prange` over blocks of rows or elements; the
per-block work is a C function from csrc/fl_divergence.h picked for this CPU's
SIMD level. Per-row losses come back in float64; elementwise sums are float64
per fixed-size block, added in block order, so results are identical for any
number of threads.
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
    double fl_gauss_kl_block_f32(const float*, const float*, const float*, const float*, float*, float*,
                                 float*, float*, float*, int64_t, float)
    double fl_gauss_kl_block_f64(const double*, const double*, const double*, const double*, double*, double*,
                                 double*, double*, double*, int64_t, double)
    double fl_recon_block_f32(const float*, const float*, int, float*, float*, int64_t, float)
    double fl_recon_block_f64(const double*, const double*, int, double*, double*, int64_t, double)
    double fl_nll_block_f32(const float*, const float*, const float*, float, float*, float*, float*,
                            int64_t, float, float, float, double*)
    double fl_nll_block_f64(const double*, const double*, const double*, double, double*, double*, double*,
                            int64_t, double, double, double, double*)

# Elements per parallel work item of the elementwise losses. Fixed (not derived
# from the thread count) so the float64 partial sums are always the same.
ELEMENT_BLOCK = 16384
cdef int64_t _EBLK = ELEMENT_BLOCK
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


cdef double _ordered_sum(double[::1] part) noexcept:
    cdef double s = 0.0
    cdef Py_ssize_t i
    for i in range(part.shape[0]):
        s += part[i]
    return s


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


# --- elementwise Gaussian losses ------------------------------------------------------

def gauss_kl(const floating[::1] mp, const floating[::1] lvp, const floating[::1] mq,
             const floating[::1] lvq, floating[::1] gmp, floating[::1] glvp, floating[::1] gmq,
             floating[::1] glvq, int64_t D, double[::1] row_loss, floating[::1] elem_loss,
             double gscale, int n_threads):
    """Sum of the diagonal Gaussian KL over flat arrays (mq / lvq None: standard normal).
    row_loss (or None): per-row sums over rows of D elements; elem_loss (or None): per
    element. Gradients optional (None)."""
    cdef int64_t n = mp.shape[0], nrow, rpb, nb, bk, s, m, r, r1
    cdef double[::1] part
    cdef const floating *mqp = &mq[0] if mq is not None and n > 0 else NULL
    cdef const floating *lvqp = &lvq[0] if lvq is not None and n > 0 else NULL
    cdef floating *g0 = &gmp[0] if gmp is not None and n > 0 else NULL
    cdef floating *g1 = &glvp[0] if glvp is not None and n > 0 else NULL
    cdef floating *g2 = &gmq[0] if gmq is not None and n > 0 else NULL
    cdef floating *g3 = &glvq[0] if glvq is not None and n > 0 else NULL
    cdef floating *le = &elem_loss[0] if elem_loss is not None and n > 0 else NULL
    cdef double acc
    if n == 0:
        return 0.0
    if row_loss is not None:
        nrow = n // D
        rpb = _rows_per_block(D)
        nb = (nrow + rpb - 1) // rpb
        part = np.empty(nb, dtype=np.float64)
        for bk in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
            acc = 0.0
            r1 = (bk + 1) * rpb if (bk + 1) * rpb <= nrow else nrow
            for r in range(bk * rpb, r1):
                s = r * D
                if floating is float:
                    row_loss[r] = fl_gauss_kl_block_f32(&mp[s], &lvp[s], mqp + s if mqp else NULL,
                        lvqp + s if lvqp else NULL, g0 + s if g0 else NULL, g1 + s if g1 else NULL,
                        g2 + s if g2 else NULL, g3 + s if g3 else NULL, NULL, D, <float> gscale)
                else:
                    row_loss[r] = fl_gauss_kl_block_f64(&mp[s], &lvp[s], mqp + s if mqp else NULL,
                        lvqp + s if lvqp else NULL, g0 + s if g0 else NULL, g1 + s if g1 else NULL,
                        g2 + s if g2 else NULL, g3 + s if g3 else NULL, NULL, D, gscale)
                acc = acc + row_loss[r]
            part[bk] = acc
        return _ordered_sum(part)
    nb = (n + _EBLK - 1) // _EBLK
    part = np.empty(nb, dtype=np.float64)
    for bk in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        s = bk * _EBLK
        m = _EBLK if s + _EBLK <= n else n - s
        if floating is float:
            part[bk] = fl_gauss_kl_block_f32(&mp[s], &lvp[s], mqp + s if mqp else NULL,
                lvqp + s if lvqp else NULL, g0 + s if g0 else NULL, g1 + s if g1 else NULL,
                g2 + s if g2 else NULL, g3 + s if g3 else NULL, le + s if le else NULL, m, <float> gscale)
        else:
            part[bk] = fl_gauss_kl_block_f64(&mp[s], &lvp[s], mqp + s if mqp else NULL,
                lvqp + s if lvqp else NULL, g0 + s if g0 else NULL, g1 + s if g1 else NULL,
                g2 + s if g2 else NULL, g3 + s if g3 else NULL, le + s if le else NULL, m, gscale)
    return _ordered_sum(part)


def recon(const floating[::1] r, const floating[::1] x, int mode, floating[::1] g, int64_t D,
          double[::1] row_loss, floating[::1] elem_loss, double gscale, int n_threads):
    """Sum of the reconstruction loss (mode 0: squared error, 1: BCE with logits) over flat
    arrays; row_loss / elem_loss as in gauss_kl; gradient into g (or None)."""
    cdef int64_t n = r.shape[0], nrow, rpb, nb, bk, s, m, i, i1
    cdef double[::1] part
    cdef floating *gp = &g[0] if g is not None and n > 0 else NULL
    cdef floating *le = &elem_loss[0] if elem_loss is not None and n > 0 else NULL
    cdef double acc
    if n == 0:
        return 0.0
    if row_loss is not None:
        nrow = n // D
        rpb = _rows_per_block(D)
        nb = (nrow + rpb - 1) // rpb
        part = np.empty(nb, dtype=np.float64)
        for bk in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
            acc = 0.0
            i1 = (bk + 1) * rpb if (bk + 1) * rpb <= nrow else nrow
            for i in range(bk * rpb, i1):
                s = i * D
                if floating is float:
                    row_loss[i] = fl_recon_block_f32(&r[s], &x[s], mode, gp + s if gp else NULL, NULL, D,
                                                     <float> gscale)
                else:
                    row_loss[i] = fl_recon_block_f64(&r[s], &x[s], mode, gp + s if gp else NULL, NULL, D,
                                                     gscale)
                acc = acc + row_loss[i]
            part[bk] = acc
        return _ordered_sum(part)
    nb = (n + _EBLK - 1) // _EBLK
    part = np.empty(nb, dtype=np.float64)
    for bk in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        s = bk * _EBLK
        m = _EBLK if s + _EBLK <= n else n - s
        if floating is float:
            part[bk] = fl_recon_block_f32(&r[s], &x[s], mode, gp + s if gp else NULL,
                                          le + s if le else NULL, m, <float> gscale)
        else:
            part[bk] = fl_recon_block_f64(&r[s], &x[s], mode, gp + s if gp else NULL,
                                          le + s if le else NULL, m, gscale)
    return _ordered_sum(part)


def nll(const floating[::1] x, const floating[::1] t, const floating[::1] var, bint var_per_row,
        floating[::1] gx, floating[::1] gv, int64_t D, floating[::1] elem_loss, double eps,
        double cst, double gscale, int n_threads):
    """Sum of PyTorch's Gaussian NLL over flat x / t. var: one per element, or
    (var_per_row) one per row of D elements, whose gradient gv is then the row's sum."""
    cdef int64_t n = x.shape[0], nrow, rpb, nb, bk, s, m, i, i1
    cdef double[::1] part
    cdef floating *gxp = &gx[0] if gx is not None and n > 0 else NULL
    cdef floating *gvp = &gv[0] if gv is not None and n > 0 else NULL
    cdef floating *le = &elem_loss[0] if elem_loss is not None and n > 0 else NULL
    cdef double acc, gsum
    if n == 0:
        return 0.0
    if var_per_row:
        nrow = n // D
        rpb = _rows_per_block(D)
        nb = (nrow + rpb - 1) // rpb
        part = np.empty(nb, dtype=np.float64)
        for bk in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
            acc = 0.0
            i1 = (bk + 1) * rpb if (bk + 1) * rpb <= nrow else nrow
            for i in range(bk * rpb, i1):
                s = i * D
                gsum = 0.0
                if floating is float:
                    acc = acc + fl_nll_block_f32(&x[s], &t[s], NULL, var[i], gxp + s if gxp else NULL, NULL,
                                                 le + s if le else NULL, D, <float> eps, <float> cst,
                                                 <float> gscale, &gsum)
                else:
                    acc = acc + fl_nll_block_f64(&x[s], &t[s], NULL, var[i], gxp + s if gxp else NULL, NULL,
                                                 le + s if le else NULL, D, eps, cst, gscale, &gsum)
                if gvp:
                    gvp[i] = <floating> gsum
            part[bk] = acc
        return _ordered_sum(part)
    nb = (n + _EBLK - 1) // _EBLK
    part = np.empty(nb, dtype=np.float64)
    for bk in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        s = bk * _EBLK
        m = _EBLK if s + _EBLK <= n else n - s
        if floating is float:
            part[bk] = fl_nll_block_f32(&x[s], &t[s], &var[s], 0, gxp + s if gxp else NULL,
                                        gvp + s if gvp else NULL, le + s if le else NULL, m,
                                        <float> eps, <float> cst, <float> gscale, NULL)
        else:
            part[bk] = fl_nll_block_f64(&x[s], &t[s], &var[s], 0, gxp + s if gxp else NULL,
                                        gvp + s if gvp else NULL, le + s if le else NULL, m,
                                        eps, cst, gscale, NULL)
    return _ordered_sum(part)
