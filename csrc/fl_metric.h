/* Metric-learning and contrastive-loss kernels for fastloss/_metric.pyx: every
 * (dtype, SIMD level) variant, and the function pointers the module calls
 * through. Matrix products are NumPy's (BLAS); these are the epilogues around
 * them: norms, distances, mining, row/column log-sum-exp and gradients. */
#ifndef FL_METRIC_H
#define FL_METRIC_H
#include "fl_common.h"
#include <stdlib.h>
#if FL_X86_DISPATCH
#include <immintrin.h>   /* hardware sqrt per SIMD level: libm sqrt does not vectorise without -fno-math-errno */
#endif

/* Kinds of p-norm in the triplet loss. */
enum { FL_PNORM_1 = 0, FL_PNORM_2 = 1, FL_PNORM_INF = 2, FL_PNORM_GEN = 3 };
/* Epilogues of pairwise_distances. */
enum { FL_DIST_SQ = 0, FL_DIST_EUCLID = 1, FL_DIST_COSINE = 2 };

/* Rows per group of the log-sum-exp statistics kernel: a group's column
 * statistics are one record, merged across groups in group order, so the
 * result is independent of the thread count. FL_CE_COLS columns of a group
 * (a 128 KiB float32 tile, rows of 4 KiB: one page each) stay in L2 between the
 * kernel's two sweeps. */
#define FL_CE_GROUP 32
#define FL_CE_COLS 1024

/* Elements per block of a float64 partial sum (fixed: thread-count independent). */
#define FL_MSUM 256

/* Two bodies: the metric kernels and the contrastive cross-entropy kernels. */
#define FL_BODY "fl_metric_impl.h"
#define FL_BODY2 "fl_contrastive_impl.h"
#include "fl_instantiate.h"
#undef FL_BODY
#undef FL_BODY2

#define FL_METRIC_DECLARE(dt, T)                                                              \
    static void (*fl_sq_norms_##dt)(const T *, int64_t, int64_t, double *);                  \
    static void (*fl_normalize_rows_##dt)(const T *, T *, int64_t, int64_t, double, double);  \
    static void (*fl_normalize_grad_rows_##dt)(const T *, const T *, T *, int64_t, int64_t,   \
                                               double, double);                               \
    static void (*fl_dist_rows_##dt)(T *, int64_t, int64_t, int64_t, const T *, const T *,    \
                                     int);                                                    \
    static void (*fl_triplet_rows_##dt)(const T *, const T *, const T *, T *, T *, T *,       \
                                        int64_t, int64_t, int, double, double, double, int,   \
                                        int, double, double *);                               \
    static void (*fl_hard_rows_##dt)(const T *, int64_t, int64_t, int64_t, const T *,         \
                                     const int32_t *, T *, int32_t *, T *, int32_t *,          \
                                     int32_t *);                                               \
    static void (*fl_hard_cols_##dt)(const T *, int64_t, int64_t, int64_t, int64_t, int64_t,   \
                                     const T *, const int32_t *, T *, int32_t *, T *,          \
                                     int32_t *, int32_t *);                                    \
    static void (*fl_hard_finish_##dt)(const T *, int64_t, int64_t, int64_t, const int32_t *,  \
                                       const int32_t *, const int32_t *, double, int,          \
                                       double *, double *, double *);                          \
    static void (*fl_hard_scatter_##dt)(const T *, T *, int64_t, int64_t, int64_t, int64_t,   \
                                        const int32_t *, const int32_t *, const double *,     \
                                        const double *, double);                              \
    static void (*fl_all_mine_rows_##dt)(T *, int64_t, int64_t, int64_t, const T *,           \
                                         const int32_t *, double, int, double *, int64_t *,   \
                                         void *);                                             \
    static void (*fl_sym_add_tiles_##dt)(T *, int64_t, int64_t, T);                           \
    static void (*fl_ce_group_stats_##dt)(const T *, int64_t, int64_t, double *, T *, T *);   \
    static void (*fl_ce_group_stats_bounded_##dt)(const T *, int64_t, int64_t, double *, T *,    \
                                                  double);                                    \
    static void (*fl_ce_grad_rows_bounded_##dt)(T *, int64_t, int64_t, int64_t, const double *, \
                                                T, const T *, T, double, int64_t, int64_t, T); \
    static void (*fl_ce_col_combine_##dt)(const T *, const T *, int64_t, int64_t, int64_t,    \
                                          int64_t, T *);                                      \
    static void (*fl_ce_grad_rows_##dt)(T *, int64_t, int64_t, int64_t, const double *, T,    \
                                        const T *, T, int64_t, int64_t, T);                   \
    static void (*fl_sqrt_array_##dt)(const T *, T *, int64_t);
FL_METRIC_DECLARE(f32, float)
FL_METRIC_DECLARE(f64, double)

#define FL_METRIC_ASSIGN(dt, level)                                         \
    fl_sq_norms_##dt = FL_LEVEL_FN(sq_norms, dt, level);                    \
    fl_normalize_rows_##dt = FL_LEVEL_FN(normalize_rows, dt, level);        \
    fl_normalize_grad_rows_##dt = FL_LEVEL_FN(normalize_grad_rows, dt, level); \
    fl_dist_rows_##dt = FL_LEVEL_FN(dist_rows, dt, level);                  \
    fl_triplet_rows_##dt = FL_LEVEL_FN(triplet_rows, dt, level);            \
    fl_hard_rows_##dt = FL_LEVEL_FN(hard_rows, dt, level);                  \
    fl_hard_cols_##dt = FL_LEVEL_FN(hard_cols, dt, level);                  \
    fl_hard_finish_##dt = FL_LEVEL_FN(hard_finish, dt, level);              \
    fl_hard_scatter_##dt = FL_LEVEL_FN(hard_scatter, dt, level);            \
    fl_all_mine_rows_##dt = FL_LEVEL_FN(all_mine_rows, dt, level);          \
    fl_sym_add_tiles_##dt = FL_LEVEL_FN(sym_add_tiles, dt, level);          \
    fl_ce_group_stats_##dt = FL_LEVEL_FN(ce_group_stats, dt, level);        \
    fl_ce_col_combine_##dt = FL_LEVEL_FN(ce_col_combine, dt, level);        \
    fl_ce_group_stats_bounded_##dt = FL_LEVEL_FN(ce_group_stats_bounded, dt, level); \
    fl_ce_grad_rows_bounded_##dt = FL_LEVEL_FN(ce_grad_rows_bounded, dt, level); \
    fl_ce_grad_rows_##dt = FL_LEVEL_FN(ce_grad_rows, dt, level);            \
    fl_sqrt_array_##dt = FL_LEVEL_FN(sqrt_array, dt, level);

/* Points every kernel at the variants of one SIMD level (the caller checks the
 * CPU supports it). */
static void fl_metric_set_level(int level) {
    FL_METRIC_ASSIGN(f32, level)
    FL_METRIC_ASSIGN(f64, level)
}

#endif
