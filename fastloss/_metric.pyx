# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""OpenMP kernels for the metric-learning and contrastive losses.

The matrix products are NumPy's (BLAS), called from fastloss/metric.py between
these kernels, never inside a `prange`: BLAS and OpenMP threads take turns on
the cores. Each function takes already-checked, C-contiguous arrays and runs a
`prange` over fixed blocks (rows, row groups, column chunks or tiles) calling a
C function from csrc/fl_metric.h picked for this CPU's SIMD level. Reductions
are float64 per fixed block and combined in block order, so results are the
same for any number of threads.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, int32_t

from ._blocks cimport COMBINE_COLS, HARD_COLS, SCATTER_COLS, n_blocks, rows_per_block, scratch_row

import numpy as np

cdef extern from "fl_metric.h" nogil:
    int FL_PNORM_1, FL_PNORM_2, FL_PNORM_INF, FL_PNORM_GEN
    int FL_DIST_SQ, FL_DIST_EUCLID, FL_DIST_COSINE
    int FL_CE_GROUP, FL_CE_COLS
    void fl_metric_set_level(int level)
    int64_t fl_all_mine_scratch_bytes(int64_t N)
    # One declaration per kernel for both dtypes (csrc/fl_common.h's FL_CALL): the
    # kernel's T pointers are void pointers here, its T scalars doubles.
    void fl_sq_norms(const void *x, int64_t n, int64_t D, double *out)
    void fl_normalize_rows(const void *x, void *out, int64_t n, int64_t D, double scale, double eps)
    void fl_normalize_grad_rows(const void *x, const void *gh, void *g, int64_t n, int64_t D, double eps,
                                double gscale)
    void fl_dist_rows(void *G, int64_t nr, int64_t M, int64_t diag0, const void *a, const void *b, int mode)
    void fl_triplet_rows(const void *a, const void *p, const void *n, void *ga, void *gp, void *gn,
                         int64_t nrows, int64_t D, int kind, double pexp, double eps, double margin,
                         int swap, int squared, double gscale, double *loss)
    void fl_hard_rows(const void *G, int64_t nr, int64_t nc, int64_t r0, const void *sqn, const int32_t *lab,
                      void *bp, int32_t *bpi, void *bn, int32_t *bni, int32_t *nanf)
    void fl_hard_cols(const void *G, int64_t nr, int64_t nc, int64_t r0, int64_t c0, int64_t c1,
                      const void *sqn, const int32_t *lab, void *bp, int32_t *bpi, void *bn, int32_t *bni,
                      int32_t *nanf)
    void fl_hard_finish(const void *E, int64_t D, int64_t i0, int64_t n, const int32_t *pos,
                        const int32_t *neg, const int32_t *nanf, double margin, int squared, double *loss,
                        double *cp, double *cn)
    void fl_hard_scatter(const void *E, void *g, int64_t N, int64_t D, int64_t c0, int64_t c1,
                         const int32_t *pos, const int32_t *neg, const double *cp, const double *cn,
                         double gscale)
    void fl_all_mine_rows(void *G, int64_t nr, int64_t N, int64_t r0, const void *sqn, const int32_t *lab,
                          double margin, int squared, double *loss, int64_t *count, void *scratch)
    void fl_sym_add_tiles(void *Wm, int64_t N, int64_t ti, double scale)
    void fl_ce_group_stats(const void *S, int64_t nr, int64_t nc, double *rlse, void *cmax, void *csum)
    void fl_ce_col_combine(const void *cmax, const void *csum, int64_t ng, int64_t nc, int64_t c0,
                           int64_t c1, void *clse)
    void fl_ce_grad_rows(void *S, int64_t nr, int64_t nc, int64_t r0, const double *rlse, double ra,
                         const void *clse, double cb, int64_t pos_off, int64_t period, double dcoef)
    void fl_ce_group_stats_bounded(const void *S, int64_t nr, int64_t nc, double *rlse, void *csum,
                                   double U)
    void fl_ce_grad_rows_bounded(void *S, int64_t nr, int64_t nc, int64_t r0, const double *rlse, double ra,
                                 const void *b, double cb, double U, int64_t pos_off, int64_t period,
                                 double dcoef)
    void fl_sqrt_array(const void *x, void *y, int64_t n)

PNORM_1, PNORM_2, PNORM_INF, PNORM_GEN = FL_PNORM_1, FL_PNORM_2, FL_PNORM_INF, FL_PNORM_GEN
DIST_SQ, DIST_EUCLID, DIST_COSINE = FL_DIST_SQ, FL_DIST_EUCLID, FL_DIST_COSINE
# Rows per record of column statistics (ce_stats): fixed, so the column
# log-sum-exp is merged in the same order for any thread count.
CE_GROUP = FL_CE_GROUP


def set_level(int level):
    fl_metric_set_level(level)


def sq_norms(const floating[:, ::1] x, double[::1] out, int n_threads):
    """out[r] = ||x_r||^2 in float64."""
    cdef int64_t n = x.shape[0], D = x.shape[1]
    cdef int64_t rpb = rows_per_block(D), r0
    for r0 in prange(0, n, rpb, nogil=True, schedule="static", num_threads=n_threads):
        fl_sq_norms(&x[0, 0] + r0 * D, min(rpb, n - r0), D, &out[r0])


def normalize(const floating[:, ::1] x, floating[:, ::1] out, double scale, double eps, int n_threads):
    """out = scale * x / max(||x||, eps), row by row."""
    cdef int64_t n = x.shape[0], D = x.shape[1]
    cdef int64_t rpb = rows_per_block(D), r0
    if D == 0:
        return
    for r0 in prange(0, n, rpb, nogil=True, schedule="static", num_threads=n_threads):
        fl_normalize_rows(&x[r0, 0], &out[r0, 0], min(rpb, n - r0), D, scale, eps)


def normalize_grad(const floating[:, ::1] x, floating[:, ::1] gh, floating[:, ::1] g, double eps,
                   double gscale, int n_threads):
    """g = gscale * (d normalize(x) / dx)^T gh, row by row; g may be gh."""
    cdef int64_t n = x.shape[0], D = x.shape[1]
    cdef int64_t rpb = rows_per_block(D), r0
    if D == 0:
        return
    for r0 in prange(0, n, rpb, nogil=True, schedule="dynamic", num_threads=n_threads):
        fl_normalize_grad_rows(&x[r0, 0], &gh[r0, 0], &g[r0, 0], min(rpb, n - r0), D, eps, gscale)


def dist_epilogue(floating[:, ::1] G, const floating[::1] a, const floating[::1] b, int64_t diag0,
                  int mode, int n_threads):
    """In place over G = x y^T: squared / Euclidean / cosine distances (see fl_dist_rows);
    diag0 >= 0: G's row r is x's row diag0 + r of a self-distance matrix."""
    cdef int64_t n = G.shape[0], M = G.shape[1]
    cdef int64_t rpb = rows_per_block(M), r0
    if M == 0:
        return
    for r0 in prange(0, n, rpb, nogil=True, schedule="dynamic", num_threads=n_threads):
        fl_dist_rows(&G[r0, 0], min(rpb, n - r0), M, diag0 + r0 if diag0 >= 0 else -1, &a[r0], &b[0], mode)


def triplet(const floating[:, ::1] a, const floating[:, ::1] p, const floating[:, ::1] n,
            floating[:, ::1] ga, floating[:, ::1] gp, floating[:, ::1] gn, int kind, double pexp,
            double eps, double margin, bint swap, bint squared, double gscale, double[::1] loss,
            int n_threads):
    """Per-row triplet margin loss into `loss`; gradients (or None) of gscale * sum(loss)."""
    cdef int64_t N = a.shape[0], D = a.shape[1]
    cdef int64_t rpb = rows_per_block(3 * D), b, r0
    cdef bint grad = ga is not None
    cdef floating *gap = &ga[0, 0] if grad and N > 0 and D > 0 else NULL
    cdef floating *gpp = &gp[0, 0] if grad and N > 0 and D > 0 else NULL
    cdef floating *gnp = &gn[0, 0] if grad and N > 0 and D > 0 else NULL
    if N == 0:
        return
    if D == 0:
        # every distance is ||eps * 1_0|| = 0
        for b in range(N):
            loss[b] = margin
        return
    for r0 in prange(0, N, rpb, nogil=True, schedule="static", num_threads=n_threads):
        fl_triplet_rows(&a[r0, 0], &p[r0, 0], &n[r0, 0], gap + r0 * D if grad else NULL,
                        gpp + r0 * D if grad else NULL, gnp + r0 * D if grad else NULL, min(rpb, N - r0), D,
                        kind, pexp, eps, margin, swap, squared, gscale, &loss[r0])


def hard_rows(const floating[:, ::1] G, int64_t row0, const floating[::1] sqn, const int32_t[::1] lab,
              floating[::1] bp, int32_t[::1] bpi, floating[::1] bn, int32_t[::1] bni, int32_t[::1] nanf,
              int n_threads):
    """Batch-hard mining, row part: anchors row0 .. row0 + len(G) over the candidates
    0 .. G.shape[1] - 1 (G: their dot products); sets their best pairs."""
    cdef int64_t nrow = G.shape[0], nc = G.shape[1]
    cdef int64_t rpb = rows_per_block(nc), r0
    for r0 in prange(0, nrow, rpb, nogil=True, schedule="dynamic", num_threads=n_threads):
        fl_hard_rows(&G[r0, 0], min(rpb, nrow - r0), nc, row0 + r0, &sqn[0], &lab[0], &bp[0], &bpi[0],
                     &bn[0], &bni[0], &nanf[0])


def hard_cols(const floating[:, ::1] G, int64_t row0, const floating[::1] sqn, const int32_t[::1] lab,
              floating[::1] bp, int32_t[::1] bpi, floating[::1] bn, int32_t[::1] bni, int32_t[::1] nanf,
              int n_threads):
    """Batch-hard mining, column part: the anchors 0 .. row0 - 1 against the candidates
    row0 .. row0 + len(G) - 1 (G's rows), updating their best pairs."""
    cdef int64_t nrow = G.shape[0], nc = G.shape[1]
    cdef int64_t c0
    if nrow == 0:
        return
    for c0 in prange(0, row0, HARD_COLS, nogil=True, schedule="dynamic", num_threads=n_threads):
        fl_hard_cols(&G[0, 0], nrow, nc, row0, c0, min(c0 + HARD_COLS, row0), &sqn[0], &lab[0], &bp[0],
                     &bpi[0], &bn[0], &bni[0], &nanf[0])


def hard_finish(const floating[:, ::1] E, const int32_t[::1] pos, const int32_t[::1] neg,
                const int32_t[::1] nanf, double margin, bint squared, double[::1] loss, double[::1] cp,
                double[::1] cn, int n_threads):
    """Exact distances of the mined pairs, per-anchor loss and gradient coefficients."""
    cdef int64_t N = E.shape[0], D = E.shape[1]
    cdef int64_t rpb = rows_per_block(3 * D), r0
    for r0 in prange(0, N, rpb, nogil=True, schedule="dynamic", num_threads=n_threads):
        fl_hard_finish(&E[0, 0] if D > 0 else NULL, D, r0, min(rpb, N - r0), &pos[0], &neg[0], &nanf[0],
                       margin, squared, &loss[0], &cp[0], &cn[0])


def hard_scatter(const floating[:, ::1] E, floating[:, ::1] g, const int32_t[::1] pos,
                 const int32_t[::1] neg, const double[::1] cp, const double[::1] cn, double gscale,
                 int n_threads):
    """Batch-hard gradient into g (zeroed by the caller), parallel over column chunks."""
    cdef int64_t N = E.shape[0], D = E.shape[1]
    cdef int64_t c0
    if N == 0:
        return
    for c0 in prange(0, D, SCATTER_COLS, nogil=True, schedule="static", num_threads=n_threads):
        fl_hard_scatter(&E[0, 0], &g[0, 0], N, D, c0, min(c0 + SCATTER_COLS, D), &pos[0], &neg[0], &cp[0],
                        &cn[0], gscale)


def all_mine(floating[:, ::1] G, const floating[::1] sqn, const int32_t[::1] lab, double margin,
             bint squared, double[::1] loss, int64_t[::1] count, int n_threads):
    """Batch-all mining over the full (N, N) matrix of dot products G, which becomes the
    matrix of dL/d(d^2) weights (see fl_all_mine_rows)."""
    cdef int64_t N = G.shape[0], b
    cdef int64_t[:, ::1] scratch
    if N == 0:
        return
    # per-thread scratch (fastloss/_blocks.pxd), rows of fl_all_mine_scratch_bytes(N), 8-byte aligned
    scratch = np.empty((n_threads, scratch_row(fl_all_mine_scratch_bytes(N), 8)), dtype=np.int64)
    for b in prange(N, nogil=True, schedule="dynamic", chunksize=8, num_threads=n_threads):
        fl_all_mine_rows(&G[b, 0], 1, N, b, &sqn[0], &lab[0], margin, squared, &loss[b], &count[b],
                         &scratch[threadid(), 0])


def sym_add(floating[:, ::1] Wm, double scale, int n_threads):
    """Wm <- scale * (Wm + Wm^T), in place, by 64 x 64 tiles."""
    cdef int64_t N = Wm.shape[0], nt = n_blocks(N, 64), t
    if N == 0:
        return
    for t in prange(nt, nogil=True, schedule="dynamic", num_threads=n_threads):
        fl_sym_add_tiles(&Wm[0, 0], N, nt - 1 - t, scale)


# --- contrastive cross-entropy (csrc/fl_contrastive_impl.h) ---------------------------

def ce_stats(const floating[:, ::1] S, int64_t row0, double[::1] rlse, floating[:, ::1] cmax,
             floating[:, ::1] csum, int n_threads):
    """Row log-sum-exp of S's rows (rlse[row0 + r]) and, with cmax/csum (or None), the
    column statistics of every group of CE_GROUP rows (record row0 // CE_GROUP + g).
    row0 must be a multiple of CE_GROUP."""
    cdef int64_t n = S.shape[0], nc = S.shape[1]
    cdef int64_t r0, g
    cdef bint cols = cmax is not None
    for r0 in prange(0, n, FL_CE_GROUP, nogil=True, schedule="dynamic", num_threads=n_threads):
        g = row0 // FL_CE_GROUP + r0 // FL_CE_GROUP
        fl_ce_group_stats(&S[r0, 0], min(FL_CE_GROUP, n - r0), nc, &rlse[row0 + r0],
                          &cmax[g, 0] if cols else NULL, &csum[g, 0] if cols else NULL)


def ce_col_lse(const floating[:, ::1] cmax, const floating[:, ::1] csum, floating[::1] clse, int n_threads):
    """clse[j] = log-sum-exp of column j from the group records, merged in group order."""
    cdef int64_t ng = cmax.shape[0], nc = cmax.shape[1]
    cdef int64_t c0
    for c0 in prange(0, nc, COMBINE_COLS, nogil=True, schedule="static", num_threads=n_threads):
        fl_ce_col_combine(&cmax[0, 0], &csum[0, 0], ng, nc, c0, min(c0 + COMBINE_COLS, nc), &clse[0])


def ce_grad(floating[:, ::1] S, int64_t row0, const double[::1] rlse, double ra, const floating[::1] clse,
            double cb, int64_t pos_off, int64_t period, double dcoef, int n_threads):
    """In place over S's rows (global rows row0 + r): ra softmax_row + cb softmax_col, minus
    dcoef at each row's positive column (row0 + r + pos_off) % period."""
    cdef int64_t n = S.shape[0], nc = S.shape[1]
    cdef int64_t rpb = rows_per_block(nc), r0
    for r0 in prange(0, n, rpb, nogil=True, schedule="dynamic", num_threads=n_threads):
        fl_ce_grad_rows(&S[r0, 0], min(rpb, n - r0), nc, row0 + r0, &rlse[row0 + r0], ra, &clse[0], cb,
                        pos_off, period, dcoef)


def ce_stats_bounded(const floating[:, ::1] S, int64_t row0, double[::1] rlse, floating[:, ::1] csum,
                     double U, int n_threads):
    """ce_stats for logits known to lie in [-U, U] (2U + log(ncols) <= 80): row log-sum-exp and
    per-group column sums of exp(S - U), one exponential per element."""
    cdef int64_t n = S.shape[0], nc = S.shape[1]
    cdef int64_t r0
    for r0 in prange(0, n, FL_CE_GROUP, nogil=True, schedule="dynamic", num_threads=n_threads):
        fl_ce_group_stats_bounded(&S[r0, 0], min(FL_CE_GROUP, n - r0), nc, &rlse[row0 + r0],
                                  &csum[row0 // FL_CE_GROUP + r0 // FL_CE_GROUP, 0], U)


def ce_grad_bounded(floating[:, ::1] S, int64_t row0, const double[::1] rlse, double ra,
                    const floating[::1] b, double cb, double U, int64_t pos_off, int64_t period,
                    double dcoef, int n_threads):
    """ce_grad for bounded logits, b[j] = exp(U - clse[j]): one exponential per element."""
    cdef int64_t n = S.shape[0], nc = S.shape[1]
    cdef int64_t rpb = rows_per_block(nc), r0
    for r0 in prange(0, n, rpb, nogil=True, schedule="dynamic", num_threads=n_threads):
        fl_ce_grad_rows_bounded(&S[r0, 0], min(rpb, n - r0), nc, row0 + r0, &rlse[row0 + r0], ra, &b[0],
                                cb, U, pos_off, period, dcoef)


def vector_sqrt(const floating[::1] x, floating[::1] y):
    """y = sqrt(x) with the kernels' own vectorised sqrt (for accuracy tests)."""
    cdef int64_t n = x.shape[0]
    if n == 0:
        return
    fl_sqrt_array(&x[0], &y[0], n)
