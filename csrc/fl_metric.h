/* Metric-learning and contrastive-loss kernels for fastloss/_metric.pyx: every
 * (dtype, SIMD level) variant, and the function pointers the module calls
 * through. Matrix products are NumPy's (BLAS); these are the epilogues around
 * them: norms, distances, mining, row/column log-sum-exp and gradients. */
#ifndef FL_METRIC_H
#define FL_METRIC_H
#include "fl_common.h"
#include <stdlib.h>   /* qsort */
#if FL_X86_DISPATCH
#include <immintrin.h>   /* hardware sqrt per SIMD level: libm sqrt does not vectorise without -fno-math-errno */
#endif

/* Kinds of p-norm in the triplet loss. */
enum { FL_PNORM_1 = 0, FL_PNORM_2 = 1, FL_PNORM_INF = 2, FL_PNORM_GEN = 3 };
/* Epilogues of pairwise_distances. */
enum { FL_DIST_SQ = 0, FL_DIST_EUCLID = 1, FL_DIST_COSINE = 2 };
#define FL_DIST_SYM_COLS 16   /* columns per block of dist_sym_cols: a multiple of every W */

/* Rows per group of the log-sum-exp statistics kernel: a group's column
 * statistics are one record, merged across groups in group order, so the
 * result is independent of the thread count. FL_CE_COLS columns of a group
 * (a 128 KiB float32 tile, rows of 4 KiB: one page each) stay in L2 between the
 * kernel's two sweeps. */
#define FL_CE_GROUP 32
#define FL_CE_COLS 1024

/* Per-thread scratch of all_mine_rows for rows of N candidates: N (distance,
 * index) pairs of at most FL_MINE_PAIR_BYTES each, then N + 1 float64 partial sums
 * and N + 1 int64 counts. The Cython caller allocates this many bytes per thread,
 * 8-byte aligned. */
#define FL_MINE_PAIR_BYTES 16
static inline int64_t fl_all_mine_scratch_bytes(int64_t N) {
    return FL_MINE_PAIR_BYTES * N + (int64_t)(sizeof(double) + sizeof(int64_t)) * (N + 1);
}

/* Two bodies: the metric kernels and the contrastive cross-entropy kernels. */
#define FL_BODY "fl_metric_impl.h"
#define FL_BODY2 "fl_contrastive_impl.h"
#include "fl_instantiate.h"
#undef FL_BODY
#undef FL_BODY2

#define FL_METRIC_KERNELS(X)                                                          \
    X(sq_norms) X(normalize_rows) X(normalize_grad_rows) X(dist_rows) X(dist_sym_cols) \
    X(triplet_rows)                                                                   \
    X(hard_rows) X(hard_cols) X(hard_finish) X(hard_scatter) X(all_mine_rows)         \
    X(sym_add_tiles) X(sqrt_array)                                                    \
    X(ce_group_stats) X(ce_group_stats_bounded) X(ce_col_combine) X(ce_grad_rows)     \
    X(ce_grad_rows_bounded) X(ce_tri_stats_bounded)
FL_DISPATCH(metric, FL_METRIC_KERNELS)

/* One name per kernel for both dtypes (fl_common.h's FL_CALL). */
#define fl_sq_norms(...) FL_CALL(fl_sq_norms, __VA_ARGS__)
#define fl_normalize_rows(...) FL_CALL(fl_normalize_rows, __VA_ARGS__)
#define fl_normalize_grad_rows(...) FL_CALL(fl_normalize_grad_rows, __VA_ARGS__)
#define fl_dist_rows(...) FL_CALL(fl_dist_rows, __VA_ARGS__)
#define fl_dist_sym_cols(...) FL_CALL(fl_dist_sym_cols, __VA_ARGS__)
#define fl_triplet_rows(...) FL_CALL(fl_triplet_rows, __VA_ARGS__)
#define fl_sqrt_array(...) FL_CALL(fl_sqrt_array, __VA_ARGS__)
/* mining */
#define fl_hard_rows(...) FL_CALL(fl_hard_rows, __VA_ARGS__)
#define fl_hard_cols(...) FL_CALL(fl_hard_cols, __VA_ARGS__)
#define fl_hard_finish(...) FL_CALL(fl_hard_finish, __VA_ARGS__)
#define fl_hard_scatter(...) FL_CALL(fl_hard_scatter, __VA_ARGS__)
#define fl_all_mine_rows(...) FL_CALL(fl_all_mine_rows, __VA_ARGS__)
#define fl_sym_add_tiles(...) FL_CALL(fl_sym_add_tiles, __VA_ARGS__)
/* contrastive cross-entropy (fl_contrastive_impl.h) */
#define fl_ce_group_stats(...) FL_CALL(fl_ce_group_stats, __VA_ARGS__)
#define fl_ce_group_stats_bounded(...) FL_CALL(fl_ce_group_stats_bounded, __VA_ARGS__)
#define fl_ce_col_combine(...) FL_CALL(fl_ce_col_combine, __VA_ARGS__)
#define fl_ce_grad_rows(...) FL_CALL(fl_ce_grad_rows, __VA_ARGS__)
#define fl_ce_grad_rows_bounded(...) FL_CALL(fl_ce_grad_rows_bounded, __VA_ARGS__)
#define fl_ce_tri_stats_bounded(...) FL_CALL(fl_ce_tri_stats_bounded, __VA_ARGS__)

#endif
