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
from cython.parallel cimport prange, parallel
from libc.stdint cimport int64_t, int32_t
from libc.stdlib cimport malloc, free

cdef extern from "fl_metric.h" nogil:
    int FL_PNORM_1, FL_PNORM_2, FL_PNORM_INF, FL_PNORM_GEN
    int FL_DIST_SQ, FL_DIST_EUCLID, FL_DIST_COSINE
    int FL_CE_GROUP, FL_CE_COLS
    void fl_metric_set_level(int level)
    void fl_sq_norms_f32(const float*, int64_t, int64_t, double*)
    void fl_sq_norms_f64(const double*, int64_t, int64_t, double*)
    void fl_normalize_rows_f32(const float*, float*, int64_t, int64_t, double, double)
    void fl_normalize_rows_f64(const double*, double*, int64_t, int64_t, double, double)
    void fl_normalize_grad_rows_f32(const float*, const float*, float*, int64_t, int64_t, double, double)
    void fl_normalize_grad_rows_f64(const double*, const double*, double*, int64_t, int64_t, double, double)
    void fl_dist_rows_f32(float*, int64_t, int64_t, int64_t, const float*, const float*, int)
    void fl_dist_rows_f64(double*, int64_t, int64_t, int64_t, const double*, const double*, int)
    void fl_triplet_rows_f32(const float*, const float*, const float*, float*, float*, float*,
                             int64_t, int64_t, int, double, double, double, int, int, double, double*)
    void fl_triplet_rows_f64(const double*, const double*, const double*, double*, double*, double*,
                             int64_t, int64_t, int, double, double, double, int, int, double, double*)
    void fl_hard_rows_f32(const float*, int64_t, int64_t, int64_t, const float*, const int32_t*, float*,
                          int32_t*, float*, int32_t*, int32_t*)
    void fl_hard_rows_f64(const double*, int64_t, int64_t, int64_t, const double*, const int32_t*, double*,
                          int32_t*, double*, int32_t*, int32_t*)
    void fl_hard_cols_f32(const float*, int64_t, int64_t, int64_t, int64_t, int64_t, const float*,
                          const int32_t*, float*, int32_t*, float*, int32_t*, int32_t*)
    void fl_hard_cols_f64(const double*, int64_t, int64_t, int64_t, int64_t, int64_t, const double*,
                          const int32_t*, double*, int32_t*, double*, int32_t*, int32_t*)
    void fl_hard_finish_f32(const float*, int64_t, int64_t, int64_t, const int32_t*, const int32_t*,
                            const int32_t*, double, int, double*, double*, double*)
    void fl_hard_finish_f64(const double*, int64_t, int64_t, int64_t, const int32_t*, const int32_t*,
                            const int32_t*, double, int, double*, double*, double*)
    void fl_hard_scatter_f32(const float*, float*, int64_t, int64_t, int64_t, int64_t, const int32_t*,
                             const int32_t*, const double*, const double*, double)
    void fl_hard_scatter_f64(const double*, double*, int64_t, int64_t, int64_t, int64_t, const int32_t*,
                             const int32_t*, const double*, const double*, double)
    void fl_all_mine_rows_f32(float*, int64_t, int64_t, int64_t, const float*, const int32_t*, double,
                              int, double*, int64_t*, void*)
    void fl_all_mine_rows_f64(double*, int64_t, int64_t, int64_t, const double*, const int32_t*, double,
                              int, double*, int64_t*, void*)
    void fl_sym_add_tiles_f32(float*, int64_t, int64_t, float)
    void fl_sym_add_tiles_f64(double*, int64_t, int64_t, double)
    void fl_ce_group_stats_f32(const float*, int64_t, int64_t, double*, float*, float*)
    void fl_ce_group_stats_f64(const double*, int64_t, int64_t, double*, double*, double*)
    void fl_ce_col_combine_f32(const float*, const float*, int64_t, int64_t, int64_t, int64_t, float*)
    void fl_ce_col_combine_f64(const double*, const double*, int64_t, int64_t, int64_t, int64_t, double*)
    void fl_ce_grad_rows_f32(float*, int64_t, int64_t, int64_t, const double*, float, const float*, float,
                             int64_t, int64_t, float)
    void fl_ce_grad_rows_f64(double*, int64_t, int64_t, int64_t, const double*, double, const double*, double,
                             int64_t, int64_t, double)
    void fl_ce_group_stats_bounded_f32(const float*, int64_t, int64_t, double*, float*, double)
    void fl_ce_group_stats_bounded_f64(const double*, int64_t, int64_t, double*, double*, double)
    void fl_ce_grad_rows_bounded_f32(float*, int64_t, int64_t, int64_t, const double*, float, const float*,
                                     float, double, int64_t, int64_t, float)
    void fl_ce_grad_rows_bounded_f64(double*, int64_t, int64_t, int64_t, const double*, double, const double*,
                                     double, double, int64_t, int64_t, double)
    void fl_sqrt_array_f32(const float*, float*, int64_t)
    void fl_sqrt_array_f64(const double*, double*, int64_t)

PNORM_1, PNORM_2, PNORM_INF, PNORM_GEN = FL_PNORM_1, FL_PNORM_2, FL_PNORM_INF, FL_PNORM_GEN
DIST_SQ, DIST_EUCLID, DIST_COSINE = FL_DIST_SQ, FL_DIST_EUCLID, FL_DIST_COSINE
# Rows per record of column statistics (ce_stats): fixed, so the column
# log-sum-exp is merged in the same order for any thread count.
CE_GROUP = FL_CE_GROUP
# Elements per work item of the row kernels (rows are independent: this only
# bounds scheduling overhead).
cdef int64_t _ROW_WORK = 32768
# Columns per work item of the batch-hard gradient scatter.
cdef int64_t _SCATTER_COLS = 256
# Anchors per work item of the batch-hard column part.
cdef int64_t _HARD_COLS = 256
# Columns per work item of the column log-sum-exp merge.
cdef int64_t _COMBINE_COLS = 1024


def set_level(int level):
    fl_metric_set_level(level)


cdef inline int64_t _rows_per_block(int64_t width) noexcept nogil:
    return _ROW_WORK // width if 0 < width < _ROW_WORK else 1


def sq_norms(const floating[:, ::1] x, double[::1] out, int n_threads):
    """out[r] = ||x_r||^2 in float64."""
    cdef int64_t n = x.shape[0], D = x.shape[1]
    cdef int64_t rpb = _rows_per_block(D), nb = (n + rpb - 1) // rpb, b, r0, nr
    if n == 0:
        return
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        r0 = b * rpb
        nr = rpb if r0 + rpb <= n else n - r0
        if floating is float:
            fl_sq_norms_f32(&x[0, 0] + r0 * D, nr, D, &out[r0])
        else:
            fl_sq_norms_f64(&x[0, 0] + r0 * D, nr, D, &out[r0])


def normalize(const floating[:, ::1] x, floating[:, ::1] out, double scale, double eps, int n_threads):
    """out = scale * x / max(||x||, eps), row by row."""
    cdef int64_t n = x.shape[0], D = x.shape[1]
    cdef int64_t rpb = _rows_per_block(D), nb = (n + rpb - 1) // rpb, b, r0, nr
    if n == 0 or D == 0:
        return
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        r0 = b * rpb
        nr = rpb if r0 + rpb <= n else n - r0
        if floating is float:
            fl_normalize_rows_f32(&x[r0, 0], &out[r0, 0], nr, D, scale, eps)
        else:
            fl_normalize_rows_f64(&x[r0, 0], &out[r0, 0], nr, D, scale, eps)


def normalize_grad(const floating[:, ::1] x, floating[:, ::1] gh, floating[:, ::1] g, double eps,
                   double gscale, int n_threads):
    """g = gscale * (d normalize(x) / dx)^T gh, row by row; g may be gh."""
    cdef int64_t n = x.shape[0], D = x.shape[1]
    cdef int64_t rpb = _rows_per_block(D), nb = (n + rpb - 1) // rpb, b, r0, nr
    if n == 0 or D == 0:
        return
    for b in prange(nb, nogil=True, schedule="dynamic", num_threads=n_threads):
        r0 = b * rpb
        nr = rpb if r0 + rpb <= n else n - r0
        if floating is float:
            fl_normalize_grad_rows_f32(&x[r0, 0], &gh[r0, 0], &g[r0, 0], nr, D, eps, gscale)
        else:
            fl_normalize_grad_rows_f64(&x[r0, 0], &gh[r0, 0], &g[r0, 0], nr, D, eps, gscale)


def dist_epilogue(floating[:, ::1] G, const floating[::1] a, const floating[::1] b, int64_t diag0,
                  int mode, int n_threads):
    """In place over G = x y^T: squared / Euclidean / cosine distances (see fl_dist_rows);
    diag0 >= 0: G's row r is x's row diag0 + r of a self-distance matrix."""
    cdef int64_t n = G.shape[0], M = G.shape[1]
    cdef int64_t rpb = _rows_per_block(M), nb = (n + rpb - 1) // rpb, blk, r0, nr
    if n == 0 or M == 0:
        return
    for blk in prange(nb, nogil=True, schedule="dynamic", num_threads=n_threads):
        r0 = blk * rpb
        nr = rpb if r0 + rpb <= n else n - r0
        if floating is float:
            fl_dist_rows_f32(&G[r0, 0], nr, M, diag0 + r0 if diag0 >= 0 else -1, &a[r0], &b[0], mode)
        else:
            fl_dist_rows_f64(&G[r0, 0], nr, M, diag0 + r0 if diag0 >= 0 else -1, &a[r0], &b[0], mode)


def triplet(const floating[:, ::1] a, const floating[:, ::1] p, const floating[:, ::1] n,
            floating[:, ::1] ga, floating[:, ::1] gp, floating[:, ::1] gn, int kind, double pexp,
            double eps, double margin, bint swap, bint squared, double gscale, double[::1] loss,
            int n_threads):
    """Per-row triplet margin loss into `loss`; gradients (or None) of gscale * sum(loss)."""
    cdef int64_t N = a.shape[0], D = a.shape[1]
    cdef int64_t rpb = _rows_per_block(3 * D), nb = (N + rpb - 1) // rpb, b, r0, nr
    cdef bint grad = ga is not None
    cdef floating *gap = &ga[0, 0] if grad and N > 0 and D > 0 else NULL
    cdef floating *gpp = &gp[0, 0] if grad and N > 0 and D > 0 else NULL
    cdef floating *gnp = &gn[0, 0] if grad and N > 0 and D > 0 else NULL
    cdef const floating *ap
    cdef const floating *pp
    cdef const floating *np_
    if N == 0:
        return
    if D == 0:
        # every distance is ||eps * 1_0|| = 0
        for b in range(N):
            loss[b] = margin
        return
    ap = &a[0, 0]
    pp = &p[0, 0]
    np_ = &n[0, 0]
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        r0 = b * rpb
        nr = rpb if r0 + rpb <= N else N - r0
        if floating is float:
            fl_triplet_rows_f32(ap + r0 * D, pp + r0 * D, np_ + r0 * D,
                                gap + r0 * D if grad else NULL, gpp + r0 * D if grad else NULL,
                                gnp + r0 * D if grad else NULL, nr, D, kind, pexp, eps, margin,
                                swap, squared, gscale, &loss[r0])
        else:
            fl_triplet_rows_f64(ap + r0 * D, pp + r0 * D, np_ + r0 * D,
                                gap + r0 * D if grad else NULL, gpp + r0 * D if grad else NULL,
                                gnp + r0 * D if grad else NULL, nr, D, kind, pexp, eps, margin,
                                swap, squared, gscale, &loss[r0])


def hard_rows(const floating[:, ::1] G, int64_t row0, const floating[::1] sqn, const int32_t[::1] lab,
              floating[::1] bp, int32_t[::1] bpi, floating[::1] bn, int32_t[::1] bni, int32_t[::1] nanf,
              int n_threads):
    """Batch-hard mining, row part: anchors row0 .. row0 + len(G) over the candidates
    0 .. G.shape[1] - 1 (G: their dot products); sets their best pairs."""
    cdef int64_t nrow = G.shape[0], nc = G.shape[1]
    cdef int64_t rpb = _rows_per_block(nc), nb = (nrow + rpb - 1) // rpb, b, r0, nr
    if nrow == 0:
        return
    for b in prange(nb, nogil=True, schedule="dynamic", num_threads=n_threads):
        r0 = b * rpb
        nr = rpb if r0 + rpb <= nrow else nrow - r0
        if floating is float:
            fl_hard_rows_f32(&G[r0, 0], nr, nc, row0 + r0, &sqn[0], &lab[0], &bp[0], &bpi[0], &bn[0],
                             &bni[0], &nanf[0])
        else:
            fl_hard_rows_f64(&G[r0, 0], nr, nc, row0 + r0, &sqn[0], &lab[0], &bp[0], &bpi[0], &bn[0],
                             &bni[0], &nanf[0])


def hard_cols(const floating[:, ::1] G, int64_t row0, const floating[::1] sqn, const int32_t[::1] lab,
              floating[::1] bp, int32_t[::1] bpi, floating[::1] bn, int32_t[::1] bni, int32_t[::1] nanf,
              int n_threads):
    """Batch-hard mining, column part: the anchors 0 .. row0 - 1 against the candidates
    row0 .. row0 + len(G) - 1 (G's rows), updating their best pairs."""
    cdef int64_t nrow = G.shape[0], nc = G.shape[1]
    cdef int64_t nb = (row0 + _HARD_COLS - 1) // _HARD_COLS, b, c0, c1
    if nrow == 0 or row0 == 0:
        return
    for b in prange(nb, nogil=True, schedule="dynamic", num_threads=n_threads):
        c0 = b * _HARD_COLS
        c1 = c0 + _HARD_COLS if c0 + _HARD_COLS <= row0 else row0
        if floating is float:
            fl_hard_cols_f32(&G[0, 0], nrow, nc, row0, c0, c1, &sqn[0], &lab[0], &bp[0], &bpi[0], &bn[0],
                             &bni[0], &nanf[0])
        else:
            fl_hard_cols_f64(&G[0, 0], nrow, nc, row0, c0, c1, &sqn[0], &lab[0], &bp[0], &bpi[0], &bn[0],
                             &bni[0], &nanf[0])


def hard_finish(const floating[:, ::1] E, const int32_t[::1] pos, const int32_t[::1] neg,
                const int32_t[::1] nanf, double margin, bint squared, double[::1] loss, double[::1] cp,
                double[::1] cn, int n_threads):
    """Exact distances of the mined pairs, per-anchor loss and gradient coefficients."""
    cdef int64_t N = E.shape[0], D = E.shape[1]
    cdef int64_t rpb = _rows_per_block(3 * D), nb = (N + rpb - 1) // rpb, b, r0, nr
    if N == 0:
        return
    for b in prange(nb, nogil=True, schedule="dynamic", num_threads=n_threads):
        r0 = b * rpb
        nr = rpb if r0 + rpb <= N else N - r0
        if floating is float:
            fl_hard_finish_f32(&E[0, 0] if D > 0 else NULL, D, r0, nr, &pos[0], &neg[0], &nanf[0], margin,
                               squared, &loss[0], &cp[0], &cn[0])
        else:
            fl_hard_finish_f64(&E[0, 0] if D > 0 else NULL, D, r0, nr, &pos[0], &neg[0], &nanf[0], margin,
                               squared, &loss[0], &cp[0], &cn[0])


def hard_scatter(const floating[:, ::1] E, floating[:, ::1] g, const int32_t[::1] pos,
                 const int32_t[::1] neg, const double[::1] cp, const double[::1] cn, double gscale,
                 int n_threads):
    """Batch-hard gradient into g (zeroed by the caller), parallel over column chunks."""
    cdef int64_t N = E.shape[0], D = E.shape[1]
    cdef int64_t nc = (D + _SCATTER_COLS - 1) // _SCATTER_COLS, c, c0, c1
    if N == 0 or D == 0:
        return
    for c in prange(nc, nogil=True, schedule="static", num_threads=n_threads):
        c0 = c * _SCATTER_COLS
        c1 = c0 + _SCATTER_COLS if c0 + _SCATTER_COLS <= D else D
        if floating is float:
            fl_hard_scatter_f32(&E[0, 0], &g[0, 0], N, D, c0, c1, &pos[0], &neg[0], &cp[0], &cn[0], gscale)
        else:
            fl_hard_scatter_f64(&E[0, 0], &g[0, 0], N, D, c0, c1, &pos[0], &neg[0], &cp[0], &cn[0], gscale)


def all_mine(floating[:, ::1] G, const floating[::1] sqn, const int32_t[::1] lab, double margin,
             bint squared, double[::1] loss, int64_t[::1] count, int n_threads):
    """Batch-all mining over the full (N, N) matrix of dot products G, which becomes the
    matrix of dL/d(d^2) weights (see fl_all_mine_rows)."""
    cdef int64_t N = G.shape[0], b
    cdef void *scratch = NULL
    if N == 0:
        return
    with nogil, parallel(num_threads=n_threads):
        scratch = malloc(48 * (N + 1))
        for b in prange(N, schedule="dynamic", chunksize=8):
            if floating is float:
                fl_all_mine_rows_f32(&G[b, 0], 1, N, b, &sqn[0], &lab[0], margin, squared, &loss[b],
                                     &count[b], scratch)
            else:
                fl_all_mine_rows_f64(&G[b, 0], 1, N, b, &sqn[0], &lab[0], margin, squared, &loss[b],
                                     &count[b], scratch)
        free(scratch)


def sym_add(floating[:, ::1] Wm, double scale, int n_threads):
    """Wm <- scale * (Wm + Wm^T), in place, by 64 x 64 tiles."""
    cdef int64_t N = Wm.shape[0], nt = (N + 63) // 64, t
    if N == 0:
        return
    for t in prange(nt, nogil=True, schedule="dynamic", num_threads=n_threads):
        if floating is float:
            fl_sym_add_tiles_f32(&Wm[0, 0], N, nt - 1 - t, <float> scale)
        else:
            fl_sym_add_tiles_f64(&Wm[0, 0], N, nt - 1 - t, scale)


def ce_stats(const floating[:, ::1] S, int64_t row0, double[::1] rlse, floating[:, ::1] cmax,
             floating[:, ::1] csum, int n_threads):
    """Row log-sum-exp of S's rows (rlse[row0 + r]) and, with cmax/csum (or None), the
    column statistics of every group of CE_GROUP rows (record row0 // CE_GROUP + g).
    row0 must be a multiple of CE_GROUP."""
    cdef int64_t n = S.shape[0], nc = S.shape[1]
    cdef int64_t ng = (n + FL_CE_GROUP - 1) // FL_CE_GROUP, g, r0, nr, g0 = row0 // FL_CE_GROUP
    cdef bint cols = cmax is not None
    if n == 0:
        return
    for g in prange(ng, nogil=True, schedule="dynamic", num_threads=n_threads):
        r0 = g * FL_CE_GROUP
        nr = FL_CE_GROUP if r0 + FL_CE_GROUP <= n else n - r0
        if floating is float:
            fl_ce_group_stats_f32(&S[r0, 0], nr, nc, &rlse[row0 + r0],
                                  &cmax[g0 + g, 0] if cols else NULL, &csum[g0 + g, 0] if cols else NULL)
        else:
            fl_ce_group_stats_f64(&S[r0, 0], nr, nc, &rlse[row0 + r0],
                                  &cmax[g0 + g, 0] if cols else NULL, &csum[g0 + g, 0] if cols else NULL)


def ce_col_lse(const floating[:, ::1] cmax, const floating[:, ::1] csum, floating[::1] clse, int n_threads):
    """clse[j] = log-sum-exp of column j from the group records, merged in group order."""
    cdef int64_t ng = cmax.shape[0], nc = cmax.shape[1]
    cdef int64_t nb = (nc + _COMBINE_COLS - 1) // _COMBINE_COLS, b, c0, c1
    if nc == 0:
        return
    for b in prange(nb, nogil=True, schedule="static", num_threads=n_threads):
        c0 = b * _COMBINE_COLS
        c1 = c0 + _COMBINE_COLS if c0 + _COMBINE_COLS <= nc else nc
        if floating is float:
            fl_ce_col_combine_f32(&cmax[0, 0], &csum[0, 0], ng, nc, c0, c1, &clse[0])
        else:
            fl_ce_col_combine_f64(&cmax[0, 0], &csum[0, 0], ng, nc, c0, c1, &clse[0])


def ce_grad(floating[:, ::1] S, int64_t row0, const double[::1] rlse, double ra, const floating[::1] clse,
            double cb, int64_t pos_off, int64_t period, double dcoef, int n_threads):
    """In place over S's rows (global rows row0 + r): ra softmax_row + cb softmax_col, minus
    dcoef at each row's positive column (row0 + r + pos_off) % period."""
    cdef int64_t n = S.shape[0], nc = S.shape[1]
    cdef int64_t rpb = _rows_per_block(nc), nb = (n + rpb - 1) // rpb, b, r0, nr
    if n == 0:
        return
    for b in prange(nb, nogil=True, schedule="dynamic", num_threads=n_threads):
        r0 = b * rpb
        nr = rpb if r0 + rpb <= n else n - r0
        if floating is float:
            fl_ce_grad_rows_f32(&S[r0, 0], nr, nc, row0 + r0, &rlse[row0 + r0], <float> ra, &clse[0],
                                <float> cb, pos_off, period, <float> dcoef)
        else:
            fl_ce_grad_rows_f64(&S[r0, 0], nr, nc, row0 + r0, &rlse[row0 + r0], ra, &clse[0],
                                cb, pos_off, period, dcoef)


def ce_stats_bounded(const floating[:, ::1] S, int64_t row0, double[::1] rlse, floating[:, ::1] csum,
                     double U, int n_threads):
    """ce_stats for logits known to lie in [-U, U] (2U + log(ncols) <= 80): row log-sum-exp and
    per-group column sums of exp(S - U), one exponential per element."""
    cdef int64_t n = S.shape[0], nc = S.shape[1]
    cdef int64_t ng = (n + FL_CE_GROUP - 1) // FL_CE_GROUP, g, r0, nr, g0 = row0 // FL_CE_GROUP
    if n == 0:
        return
    for g in prange(ng, nogil=True, schedule="dynamic", num_threads=n_threads):
        r0 = g * FL_CE_GROUP
        nr = FL_CE_GROUP if r0 + FL_CE_GROUP <= n else n - r0
        if floating is float:
            fl_ce_group_stats_bounded_f32(&S[r0, 0], nr, nc, &rlse[row0 + r0], &csum[g0 + g, 0], U)
        else:
            fl_ce_group_stats_bounded_f64(&S[r0, 0], nr, nc, &rlse[row0 + r0], &csum[g0 + g, 0], U)


def ce_grad_bounded(floating[:, ::1] S, int64_t row0, const double[::1] rlse, double ra,
                    const floating[::1] b, double cb, double U, int64_t pos_off, int64_t period,
                    double dcoef, int n_threads):
    """ce_grad for bounded logits, b[j] = exp(U - clse[j]): one exponential per element."""
    cdef int64_t n = S.shape[0], nc = S.shape[1]
    cdef int64_t rpb = _rows_per_block(nc), nb = (n + rpb - 1) // rpb, blk, r0, nr
    if n == 0:
        return
    for blk in prange(nb, nogil=True, schedule="dynamic", num_threads=n_threads):
        r0 = blk * rpb
        nr = rpb if r0 + rpb <= n else n - r0
        if floating is float:
            fl_ce_grad_rows_bounded_f32(&S[r0, 0], nr, nc, row0 + r0, &rlse[row0 + r0], <float> ra, &b[0],
                                        <float> cb, U, pos_off, period, <float> dcoef)
        else:
            fl_ce_grad_rows_bounded_f64(&S[r0, 0], nr, nc, row0 + r0, &rlse[row0 + r0], ra, &b[0],
                                        cb, U, pos_off, period, dcoef)


def vector_sqrt(const floating[::1] x, floating[::1] y):
    """y = sqrt(x) with the kernels' own vectorised sqrt (for accuracy tests)."""
    cdef int64_t n = x.shape[0]
    if n == 0:
        return
    if floating is float:
        fl_sqrt_array_f32(&x[0], &y[0], n)
    else:
        fl_sqrt_array_f64(&x[0], &y[0], n)
