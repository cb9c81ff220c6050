# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kernels for the metric-learning and contrastive losses.

The matrix products are NumPy's (BLAS), called from fastloss/metric.py between
these kernels, never inside one: BLAS's threads and fastloss's take turns on
the cores. Each function takes already-checked, C-contiguous arrays and runs its
fixed blocks (rows, row groups, column chunks or tiles) on the thread pool
(_runtime.run_blocks): a job struct holds the loop's arguments and a block
function does one block's work, a C function from csrc/fl_metric.h picked for
this CPU's SIMD level. Reductions are float64 per fixed block and combined in
block order, so results are the same for any number of threads.
"""
from cython cimport floating
from libc.stdint cimport int64_t, int32_t

from ._blocks cimport COMBINE_COLS, HARD_COLS, SCATTER_COLS, n_blocks, rows_per_block, scratch_row
from ._runtime cimport block_fn, run_blocks, stream_output

import numpy as np

cdef extern from "fl_metric.h" nogil:
    int FL_PNORM_1, FL_PNORM_2, FL_PNORM_INF, FL_PNORM_GEN
    int FL_DIST_SQ, FL_DIST_EUCLID, FL_DIST_COSINE, FL_DIST_SYM_COLS
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
    void fl_dist_sym_cols(void *G, int64_t N, int64_t j0, int64_t nc, const void *a, int mode)
    void fl_triplet_rows(const void *a, const void *p, const void *n, void *ga, void *gp, void *gn,
                         int64_t nrows, int64_t D, int kind, double pexp, double eps, double margin,
                         int swap, int squared, double gscale, double *loss, int stream)
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
                                 double dcoef, int tri)
    void fl_ce_tri_stats_bounded(const void *S, int64_t nr, int64_t nc, int64_t i0, double *rsum, void *csum,
                                 double U)
    void fl_sqrt_array(const void *x, void *y, int64_t n)

PNORM_1, PNORM_2, PNORM_INF, PNORM_GEN = FL_PNORM_1, FL_PNORM_2, FL_PNORM_INF, FL_PNORM_GEN
DIST_SQ, DIST_EUCLID, DIST_COSINE = FL_DIST_SQ, FL_DIST_EUCLID, FL_DIST_COSINE
# Rows per record of column statistics (ce_stats): fixed, so the column
# log-sum-exp is merged in the same order for any thread count.
CE_GROUP = FL_CE_GROUP

cdef enum:
    # Anchors per block of batch-all mining: a row's cost depends on its labels
    # (a sort of its positives or negatives), so blocks stay small.
    MINE_ROWS = 8


def set_level(int level):
    fl_metric_set_level(level)


cdef struct NormJob:
    int64_t n, D, rpb
    const void *x
    const void *gh
    void *out
    double *sq
    double scale, eps, gscale


cdef void _sq_norms_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef NormJob *j = <NormJob *>job
    cdef int64_t r0 = b * j.rpb
    fl_sq_norms(<const floating *>j.x + r0 * j.D, min(j.rpb, j.n - r0), j.D, j.sq + r0)


def sq_norms(const floating[:, ::1] x, double[::1] out, int n_threads):
    """out[r] = ||x_r||^2 in float64."""
    cdef int64_t n = x.shape[0], D = x.shape[1]
    cdef int64_t rpb = rows_per_block(D)
    if n == 0:
        return
    cdef NormJob job = NormJob(n=n, D=D, rpb=rpb, x=&x[0, 0], gh=NULL, out=NULL, sq=&out[0], scale=0,
                               eps=0, gscale=0)
    with nogil:
        run_blocks(<block_fn>_sq_norms_block[floating], &job, n_blocks(n, rpb), n_threads)


cdef void _normalize_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef NormJob *j = <NormJob *>job
    cdef int64_t r0 = b * j.rpb
    fl_normalize_rows(<const floating *>j.x + r0 * j.D, <floating *>j.out + r0 * j.D,
                      min(j.rpb, j.n - r0), j.D, j.scale, j.eps)


def normalize(const floating[:, ::1] x, floating[:, ::1] out, double scale, double eps, int n_threads):
    """out = scale * x / max(||x||, eps), row by row."""
    cdef int64_t n = x.shape[0], D = x.shape[1]
    cdef int64_t rpb = rows_per_block(D)
    if n == 0 or D == 0:
        return
    cdef NormJob job = NormJob(n=n, D=D, rpb=rpb, x=&x[0, 0], gh=NULL, out=&out[0, 0], sq=NULL,
                               scale=scale, eps=eps, gscale=0)
    with nogil:
        run_blocks(<block_fn>_normalize_block[floating], &job, n_blocks(n, rpb), n_threads)


cdef void _normalize_grad_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef NormJob *j = <NormJob *>job
    cdef int64_t r0 = b * j.rpb
    fl_normalize_grad_rows(<const floating *>j.x + r0 * j.D, <const floating *>j.gh + r0 * j.D,
                           <floating *>j.out + r0 * j.D, min(j.rpb, j.n - r0), j.D, j.eps, j.gscale)


def normalize_grad(const floating[:, ::1] x, floating[:, ::1] gh, floating[:, ::1] g, double eps,
                   double gscale, int n_threads):
    """g = gscale * (d normalize(x) / dx)^T gh, row by row; g may be gh."""
    cdef int64_t n = x.shape[0], D = x.shape[1]
    cdef int64_t rpb = rows_per_block(D)
    if n == 0 or D == 0:
        return
    cdef NormJob job = NormJob(n=n, D=D, rpb=rpb, x=&x[0, 0], gh=&gh[0, 0], out=&g[0, 0], sq=NULL,
                               scale=0, eps=eps, gscale=gscale)
    with nogil:
        run_blocks(<block_fn>_normalize_grad_block[floating], &job, n_blocks(n, rpb), n_threads)


cdef struct DistJob:
    int64_t n, M, rpb, diag0
    void *G
    const void *a
    const void *b
    int mode


cdef void _dist_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef DistJob *j = <DistJob *>job
    cdef int64_t r0 = b * j.rpb
    fl_dist_rows(<floating *>j.G + r0 * j.M, min(j.rpb, j.n - r0), j.M, j.diag0 + r0 if j.diag0 >= 0 else -1,
                 <const floating *>j.a + r0, j.b, j.mode)


def dist_epilogue(floating[:, ::1] G, const floating[::1] a, const floating[::1] b, int64_t diag0,
                  int mode, int n_threads):
    """In place over G = x y^T: squared / Euclidean / cosine distances (see fl_dist_rows);
    diag0 >= 0: G's row r is x's row diag0 + r of a self-distance matrix."""
    cdef int64_t n = G.shape[0], M = G.shape[1]
    cdef int64_t rpb = rows_per_block(M)
    if n == 0 or M == 0:
        return
    cdef DistJob job = DistJob(n=n, M=M, rpb=rpb, diag0=diag0, G=&G[0, 0], a=&a[0], b=&b[0], mode=mode)
    with nogil:
        run_blocks(<block_fn>_dist_block[floating], &job, n_blocks(n, rpb), n_threads)


cdef void _dist_sym_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef DistJob *j = <DistJob *>job
    cdef int64_t j0 = b * FL_DIST_SYM_COLS     # the longest strips first
    fl_dist_sym_cols(<floating *>j.G, j.n, j0, min(FL_DIST_SYM_COLS, j.n - j0), <const floating *>j.a, j.mode)


def dist_sym(floating[:, ::1] G, const floating[::1] a, int mode, int n_threads):
    """In place over G (N x N) holding x x^T in its lower triangle (syrk's): the whole
    self-distance matrix, both triangles (see fl_dist_sym_cols)."""
    cdef int64_t n = G.shape[0]
    if n == 0:
        return
    cdef int64_t nb = n_blocks(n, FL_DIST_SYM_COLS)
    cdef DistJob job = DistJob(n=n, M=n, rpb=0, diag0=0, G=&G[0, 0], a=&a[0], b=&a[0], mode=mode)
    with nogil:
        run_blocks(<block_fn>_dist_sym_block[floating], &job, nb, n_threads)


cdef struct TripletJob:
    int64_t N, D, rpb
    const void *a
    const void *p
    const void *n
    void *ga
    void *gp
    void *gn
    int kind, swap, squared
    double pexp, eps, margin, gscale
    double *loss
    int stream                   # write the gradients with streaming stores (stream_output)


cdef void _triplet_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef TripletJob *j = <TripletJob *>job
    cdef int64_t r0 = b * j.rpb, o = r0 * j.D
    cdef floating *ga = <floating *>j.ga
    cdef floating *gp = <floating *>j.gp
    cdef floating *gn = <floating *>j.gn
    fl_triplet_rows(<const floating *>j.a + o, <const floating *>j.p + o, <const floating *>j.n + o,
                    ga + o if ga else NULL, gp + o if gp else NULL, gn + o if gn else NULL,
                    min(j.rpb, j.N - r0), j.D, j.kind, j.pexp, j.eps, j.margin, j.swap, j.squared,
                    j.gscale, j.loss + r0, j.stream)


def triplet(const floating[:, ::1] a, const floating[:, ::1] p, const floating[:, ::1] n,
            floating[:, ::1] ga, floating[:, ::1] gp, floating[:, ::1] gn, int kind, double pexp,
            double eps, double margin, bint swap, bint squared, double gscale, double[::1] loss,
            int n_threads):
    """Per-row triplet margin loss into `loss`; gradients (or None) of gscale * sum(loss)."""
    cdef int64_t N = a.shape[0], D = a.shape[1]
    cdef int64_t rpb = rows_per_block(3 * D), b
    if N == 0:
        return
    if D == 0:
        # every distance is ||eps * 1_0|| = 0
        for b in range(N):
            loss[b] = margin
        return
    cdef floating *gap = &ga[0, 0] if ga is not None else NULL
    cdef floating *gpp = &gp[0, 0] if ga is not None else NULL
    cdef floating *gnp = &gn[0, 0] if ga is not None else NULL
    cdef TripletJob job = TripletJob(N=N, D=D, rpb=rpb, a=&a[0, 0], p=&p[0, 0], n=&n[0, 0], ga=gap, gp=gpp,
                                     gn=gnp, kind=kind, swap=swap, squared=squared, pexp=pexp, eps=eps,
                                     margin=margin, gscale=gscale, loss=&loss[0],
                                     stream=gap != NULL and stream_output(N * D * sizeof(floating)))
    with nogil:
        run_blocks(<block_fn>_triplet_block[floating], &job, n_blocks(N, rpb), n_threads)


cdef struct HardJob:
    int64_t nrow, nc, rpb, row0
    const void *G
    const void *sqn
    const int32_t *lab
    void *bp
    int32_t *bpi
    void *bn
    int32_t *bni
    int32_t *nanf


cdef void _hard_rows_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef HardJob *j = <HardJob *>job
    cdef int64_t r0 = b * j.rpb
    fl_hard_rows(<const floating *>j.G + r0 * j.nc, min(j.rpb, j.nrow - r0), j.nc, j.row0 + r0, j.sqn, j.lab,
                 j.bp, j.bpi, j.bn, j.bni, j.nanf)


def hard_rows(const floating[:, ::1] G, int64_t row0, const floating[::1] sqn, const int32_t[::1] lab,
              floating[::1] bp, int32_t[::1] bpi, floating[::1] bn, int32_t[::1] bni, int32_t[::1] nanf,
              int n_threads):
    """Batch-hard mining, row part: each anchor i = row0 .. row0 + len(G) - 1 over the
    candidates j < i (G: their dot products, read in its lower triangle); sets their best
    pairs."""
    cdef int64_t nrow = G.shape[0], nc = G.shape[1]
    cdef int64_t rpb = rows_per_block(nc)
    if nrow == 0:
        return
    cdef HardJob job = HardJob(nrow=nrow, nc=nc, rpb=rpb, row0=row0, G=&G[0, 0], sqn=&sqn[0], lab=&lab[0],
                               bp=&bp[0], bpi=&bpi[0], bn=&bn[0], bni=&bni[0], nanf=&nanf[0])
    with nogil:
        run_blocks(<block_fn>_hard_rows_block[floating], &job, n_blocks(nrow, rpb), n_threads)


cdef void _hard_cols_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef HardJob *j = <HardJob *>job
    cdef int64_t c0 = b * HARD_COLS
    fl_hard_cols(<const floating *>j.G, j.nrow, j.nc, j.row0, c0, min(c0 + HARD_COLS, j.row0 + j.nrow - 1),
                 j.sqn, j.lab, j.bp, j.bpi, j.bn, j.bni, j.nanf)


def hard_cols(const floating[:, ::1] G, int64_t row0, const floating[::1] sqn, const int32_t[::1] lab,
              floating[::1] bp, int32_t[::1] bpi, floating[::1] bn, int32_t[::1] bni, int32_t[::1] nanf,
              int n_threads):
    """Batch-hard mining, column part: each candidate i = row0 .. row0 + len(G) - 1 (G's
    rows, read in its lower triangle) for the anchors j < i, updating their best pairs."""
    cdef int64_t nrow = G.shape[0], nc = G.shape[1]
    if nrow == 0 or row0 + nrow <= 1:     # no anchor before a row
        return
    cdef HardJob job = HardJob(nrow=nrow, nc=nc, rpb=0, row0=row0, G=&G[0, 0], sqn=&sqn[0], lab=&lab[0],
                               bp=&bp[0], bpi=&bpi[0], bn=&bn[0], bni=&bni[0], nanf=&nanf[0])
    with nogil:
        run_blocks(<block_fn>_hard_cols_block[floating], &job, n_blocks(row0 + nrow - 1, HARD_COLS), n_threads)


cdef struct MinedJob:
    int64_t N, D, rpb
    const void *E
    void *g
    const int32_t *pos
    const int32_t *neg
    const int32_t *nanf
    double margin, gscale
    int squared
    double *loss
    double *cp
    double *cn


cdef void _hard_finish_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef MinedJob *j = <MinedJob *>job
    cdef int64_t r0 = b * j.rpb
    fl_hard_finish(<const floating *>j.E, j.D, r0, min(j.rpb, j.N - r0), j.pos, j.neg, j.nanf, j.margin,
                   j.squared, j.loss, j.cp, j.cn)


def hard_finish(const floating[:, ::1] E, const int32_t[::1] pos, const int32_t[::1] neg,
                const int32_t[::1] nanf, double margin, bint squared, double[::1] loss, double[::1] cp,
                double[::1] cn, int n_threads):
    """Exact distances of the mined pairs, per-anchor loss and gradient coefficients."""
    cdef int64_t N = E.shape[0], D = E.shape[1]
    cdef int64_t rpb = rows_per_block(3 * D)
    if N == 0:
        return
    cdef const floating *ep = &E[0, 0] if D > 0 else NULL
    cdef MinedJob job = MinedJob(N=N, D=D, rpb=rpb, E=ep, g=NULL, pos=&pos[0], neg=&neg[0], nanf=&nanf[0],
                                 margin=margin, gscale=0, squared=squared, loss=&loss[0], cp=&cp[0],
                                 cn=&cn[0])
    with nogil:
        run_blocks(<block_fn>_hard_finish_block[floating], &job, n_blocks(N, rpb), n_threads)


cdef void _hard_scatter_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef MinedJob *j = <MinedJob *>job
    cdef int64_t c0 = b * j.rpb
    fl_hard_scatter(<const floating *>j.E, j.g, j.N, j.D, c0, min(c0 + j.rpb, j.D), j.pos, j.neg, j.cp,
                    j.cn, j.gscale)


def hard_scatter(const floating[:, ::1] E, floating[:, ::1] g, const int32_t[::1] pos,
                 const int32_t[::1] neg, const double[::1] cp, const double[::1] cn, double gscale,
                 int n_threads):
    """Batch-hard gradient into g (zeroed by the caller), parallel over column chunks."""
    cdef int64_t N = E.shape[0], D = E.shape[1]
    if N == 0 or D == 0:
        return
    # Column chunks of SCATTER_COLS, narrower (down to 64) when that leaves a thread
    # without one: every element sees the same updates in the same order for any split.
    cdef int64_t cols = min(SCATTER_COLS, max(64, (D + n_threads - 1) // n_threads))
    # cp, cn: MinedJob's outputs of hard_finish, only read here; rpb: columns per block
    cdef MinedJob job = MinedJob(N=N, D=D, rpb=cols, E=&E[0, 0], g=&g[0, 0], pos=&pos[0], neg=&neg[0], nanf=NULL,
                                 margin=0, gscale=gscale, squared=0, loss=NULL, cp=<double *>&cp[0],
                                 cn=<double *>&cn[0])
    with nogil:
        run_blocks(<block_fn>_hard_scatter_block[floating], &job, n_blocks(D, cols), n_threads)


cdef struct AllMineJob:
    int64_t N, scratch_items
    void *G
    const void *sqn
    const int32_t *lab
    double margin
    int squared
    double *loss
    int64_t *count
    int64_t *scratch


cdef void _all_mine_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef AllMineJob *j = <AllMineJob *>job
    cdef int64_t r0 = b * MINE_ROWS
    fl_all_mine_rows(<floating *>j.G + r0 * j.N, min(MINE_ROWS, j.N - r0), j.N, r0, j.sqn, j.lab, j.margin,
                     j.squared, j.loss + r0, j.count + r0, j.scratch + tid * j.scratch_items)


def all_mine(floating[:, ::1] G, const floating[::1] sqn, const int32_t[::1] lab, double margin,
             bint squared, double[::1] loss, int64_t[::1] count, int n_threads):
    """Batch-all mining over the full (N, N) matrix of dot products G, which becomes the
    matrix of dL/d(d^2) weights (see fl_all_mine_rows)."""
    cdef int64_t N = G.shape[0]
    cdef int64_t[:, ::1] scratch
    if N == 0:
        return
    # per-thread scratch (fastloss/_blocks.pxd), rows of fl_all_mine_scratch_bytes(N), 8-byte aligned
    scratch = np.empty((n_threads, scratch_row(fl_all_mine_scratch_bytes(N), 8)), dtype=np.int64)
    cdef AllMineJob job = AllMineJob(N=N, scratch_items=scratch.shape[1], G=&G[0, 0], sqn=&sqn[0], lab=&lab[0],
                                     margin=margin, squared=squared, loss=&loss[0], count=&count[0],
                                     scratch=&scratch[0, 0])
    with nogil:
        run_blocks(<block_fn>_all_mine_block[floating], &job, n_blocks(N, MINE_ROWS), n_threads)


cdef struct SymAddJob:
    int64_t N, nt
    void *Wm
    double scale


cdef void _sym_add_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef SymAddJob *j = <SymAddJob *>job
    fl_sym_add_tiles(<floating *>j.Wm, j.N, j.nt - 1 - b, j.scale)


def sym_add(floating[:, ::1] Wm, double scale, int n_threads):
    """Wm <- scale * (Wm + Wm^T), in place, by 64 x 64 tiles."""
    cdef int64_t N = Wm.shape[0], nt = n_blocks(N, 64)
    if N == 0:
        return
    cdef SymAddJob job = SymAddJob(N=N, nt=nt, Wm=&Wm[0, 0], scale=scale)
    with nogil:
        run_blocks(<block_fn>_sym_add_block[floating], &job, nt, n_threads)


# --- contrastive cross-entropy (csrc/fl_contrastive_impl.h) ---------------------------

cdef struct CeStatsJob:
    int64_t n, nc, row0
    const void *S
    double *rlse
    void *cmax
    void *csum
    double U


cdef void _ce_stats_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef CeStatsJob *j = <CeStatsJob *>job
    cdef int64_t r0 = b * FL_CE_GROUP
    cdef int64_t g = j.row0 // FL_CE_GROUP + b
    cdef floating *cmax = <floating *>j.cmax
    cdef floating *csum = <floating *>j.csum
    fl_ce_group_stats(<const floating *>j.S + r0 * j.nc, min(FL_CE_GROUP, j.n - r0), j.nc, j.rlse + j.row0 + r0,
                      cmax + g * j.nc if cmax else NULL, csum + g * j.nc if cmax else NULL)


def ce_stats(const floating[:, ::1] S, int64_t row0, double[::1] rlse, floating[:, ::1] cmax,
             floating[:, ::1] csum, int n_threads):
    """Row log-sum-exp of S's rows (rlse[row0 + r]) and, with cmax/csum (or None), the
    column statistics of every group of CE_GROUP rows (record row0 // CE_GROUP + g).
    row0 must be a multiple of CE_GROUP."""
    cdef int64_t n = S.shape[0], nc = S.shape[1]
    if n == 0:
        return
    cdef floating *cmp = &cmax[0, 0] if cmax is not None else NULL
    cdef floating *csp = &csum[0, 0] if cmax is not None else NULL
    cdef CeStatsJob job = CeStatsJob(n=n, nc=nc, row0=row0, S=&S[0, 0], rlse=&rlse[0], cmax=cmp, csum=csp, U=0)
    with nogil:
        run_blocks(<block_fn>_ce_stats_block[floating], &job, n_blocks(n, FL_CE_GROUP), n_threads)


cdef void _ce_stats_bounded_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef CeStatsJob *j = <CeStatsJob *>job
    cdef int64_t r0 = b * FL_CE_GROUP
    fl_ce_group_stats_bounded(<const floating *>j.S + r0 * j.nc, min(FL_CE_GROUP, j.n - r0), j.nc,
                              j.rlse + j.row0 + r0, <floating *>j.csum + (j.row0 // FL_CE_GROUP + b) * j.nc,
                              j.U)


def ce_stats_bounded(const floating[:, ::1] S, int64_t row0, double[::1] rlse, floating[:, ::1] csum,
                     double U, int n_threads):
    """ce_stats for logits known to lie in [-U, U] (2U + log(ncols) <= 80): row log-sum-exp and
    per-group column sums of exp(S - U), one exponential per element."""
    cdef int64_t n = S.shape[0], nc = S.shape[1]
    if n == 0:
        return
    cdef CeStatsJob job = CeStatsJob(n=n, nc=nc, row0=row0, S=&S[0, 0], rlse=&rlse[0], cmax=NULL,
                                     csum=&csum[0, 0], U=U)
    with nogil:
        run_blocks(<block_fn>_ce_stats_bounded_block[floating], &job, n_blocks(n, FL_CE_GROUP), n_threads)


cdef void _ce_tri_stats_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef CeStatsJob *j = <CeStatsJob *>job
    cdef int64_t r0 = b * FL_CE_GROUP
    fl_ce_tri_stats_bounded(<const floating *>j.S + r0 * j.nc, min(FL_CE_GROUP, j.n - r0), j.nc, r0, j.rlse + r0,
                            <floating *>j.csum + b * j.nc, j.U)


def ce_tri_stats_bounded(const floating[:, ::1] S, double[::1] rsum, floating[:, ::1] csum, double U,
                         int n_threads):
    """Sums of exp(S - U) over a symmetric S's lower triangle alone (diagonal excluded):
    rsum[i] over j < i, and per group of CE_GROUP rows (record g) the column sums over
    the group's rows; logits in [-U, U] as for ce_stats_bounded."""
    cdef int64_t n = S.shape[0], nc = S.shape[1]
    if n == 0:
        return
    cdef CeStatsJob job = CeStatsJob(n=n, nc=nc, row0=0, S=&S[0, 0], rlse=&rsum[0], cmax=NULL,
                                     csum=&csum[0, 0], U=U)
    with nogil:
        run_blocks(<block_fn>_ce_tri_stats_block[floating], &job, n_blocks(n, FL_CE_GROUP), n_threads)


cdef struct CeColJob:
    int64_t ng, nc
    const void *cmax
    const void *csum
    void *clse


cdef void _ce_col_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef CeColJob *j = <CeColJob *>job
    cdef int64_t c0 = b * COMBINE_COLS
    fl_ce_col_combine(<const floating *>j.cmax, j.csum, j.ng, j.nc, c0, min(c0 + COMBINE_COLS, j.nc), j.clse)


def ce_col_lse(const floating[:, ::1] cmax, const floating[:, ::1] csum, floating[::1] clse, int n_threads):
    """clse[j] = log-sum-exp of column j from the group records, merged in group order."""
    cdef int64_t ng = cmax.shape[0], nc = cmax.shape[1]
    if nc == 0:
        return
    cdef CeColJob job = CeColJob(ng=ng, nc=nc, cmax=&cmax[0, 0], csum=&csum[0, 0], clse=&clse[0])
    with nogil:
        run_blocks(<block_fn>_ce_col_block[floating], &job, n_blocks(nc, COMBINE_COLS), n_threads)


cdef struct CeGradJob:
    int64_t n, nc, rpb, row0, pos_off, period
    void *S
    const double *rlse
    const void *clse
    const void *b
    double ra, cb, U, dcoef
    int tri


cdef void _ce_grad_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef CeGradJob *j = <CeGradJob *>job
    cdef int64_t r0 = b * j.rpb
    fl_ce_grad_rows(<floating *>j.S + r0 * j.nc, min(j.rpb, j.n - r0), j.nc, j.row0 + r0, j.rlse + j.row0 + r0,
                    j.ra, j.clse, j.cb, j.pos_off, j.period, j.dcoef)


def ce_grad(floating[:, ::1] S, int64_t row0, const double[::1] rlse, double ra, const floating[::1] clse,
            double cb, int64_t pos_off, int64_t period, double dcoef, int n_threads):
    """In place over S's rows (global rows row0 + r): ra softmax_row + cb softmax_col, minus
    dcoef at each row's positive column (row0 + r + pos_off) % period."""
    cdef int64_t n = S.shape[0], nc = S.shape[1]
    cdef int64_t rpb = rows_per_block(nc)
    if n == 0:
        return
    cdef CeGradJob job = CeGradJob(n=n, nc=nc, rpb=rpb, row0=row0, pos_off=pos_off, period=period, S=&S[0, 0],
                                   rlse=&rlse[0], clse=&clse[0], b=NULL, ra=ra, cb=cb, U=0, dcoef=dcoef, tri=0)
    with nogil:
        run_blocks(<block_fn>_ce_grad_block[floating], &job, n_blocks(n, rpb), n_threads)


cdef void _ce_grad_bounded_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef CeGradJob *j = <CeGradJob *>job
    cdef int64_t r0 = b * j.rpb
    fl_ce_grad_rows_bounded(<floating *>j.S + r0 * j.nc, min(j.rpb, j.n - r0), j.nc, j.row0 + r0,
                            j.rlse + j.row0 + r0, j.ra, j.b, j.cb, j.U, j.pos_off, j.period, j.dcoef, j.tri)


def ce_grad_bounded(floating[:, ::1] S, int64_t row0, const double[::1] rlse, double ra,
                    const floating[::1] b, double cb, double U, int64_t pos_off, int64_t period,
                    double dcoef, int n_threads, bint tri=False):
    """ce_grad for bounded logits, b[j] = exp(U - clse[j]): one exponential per element.
    tri: S is symmetric and only its lower triangle is read and written (see
    fl_ce_grad_rows_bounded)."""
    cdef int64_t n = S.shape[0], nc = S.shape[1]
    cdef int64_t rpb = rows_per_block(nc)
    if n == 0:
        return
    cdef CeGradJob job = CeGradJob(n=n, nc=nc, rpb=rpb, row0=row0, pos_off=pos_off, period=period, S=&S[0, 0],
                                   rlse=&rlse[0], clse=NULL, b=&b[0], ra=ra, cb=cb, U=U, dcoef=dcoef, tri=tri)
    with nogil:
        run_blocks(<block_fn>_ce_grad_bounded_block[floating], &job, n_blocks(n, rpb), n_threads)


def vector_sqrt(const floating[::1] x, floating[::1] y):
    """y = sqrt(x) with the kernels' own vectorised sqrt (for accuracy tests)."""
    cdef int64_t n = x.shape[0]
    if n == 0:
        return
    fl_sqrt_array(&x[0], &y[0], n)
