# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""OpenMP kernels for the elementwise Gaussian losses (diagonal Gaussian KL, VAE
reconstruction, Gaussian NLL).

Each function takes already-checked, C-contiguous flat arrays (fastloss/divergence.py
does the checking) and runs a `prange` over blocks of rows or elements; the
per-block work is a C function from csrc/fl_gaussian.h picked for this CPU's SIMD
level. Sums are float64 per fixed-size block, added in block order, so results are
identical for any number of threads.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t

import numpy as np

cdef extern from "fl_gaussian.h" nogil:
    void fl_gaussian_set_level(int level)
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


def set_level(int level):
    fl_gaussian_set_level(level)


cdef inline int64_t _rows_per_block(int64_t C) noexcept nogil:
    return _ROW_WORK // C if C < _ROW_WORK else 1


cdef double _ordered_sum(double[::1] part) noexcept:
    cdef double s = 0.0
    cdef Py_ssize_t i
    for i in range(part.shape[0]):
        s += part[i]
    return s


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
