/* Classification kernels for fastloss/_classification.pyx: every (dtype, SIMD
 * level) variant, and the function pointers the module calls through. */
#ifndef FL_CLASSIFICATION_H
#define FL_CLASSIFICATION_H
#include "fl_common.h"

/* Softmax rows are processed in chunks of FL_CHUNK elements (16 KiB of float32: a
 * chunk stays in L1 between its max and exp passes). Rows of up to FL_MAX_CHUNKS
 * chunks keep their exponentials in the gradient buffer; longer rows take the online
 * softmax and recompute exp in the gradient pass. */
#define FL_CHUNK 4096
#define FL_MAX_CHUNKS 256
/* Rows of at most this many classes take the transposed (many rows per vector) path. */
#define FL_SMALL_C 32

typedef struct {
    int64_t C;                 /* classes per row */
    int64_t ignore_index;      /* label rows to skip (integer labels only) */
    const void *class_weight;  /* C weights of the row dtype, or NULL */
    double weight_sum;         /* sum of class weights (C when none) */
    double smoothing;          /* label smoothing eps in [0, 1] */
    double z_loss;             /* coefficient of lse^2 */
    double softcap;            /* > 0: logits -> softcap * tanh(x / softcap) */
    double gscale;             /* the gradient is scaled by this (1 / denominator for mean) */
} fl_xent_params;

/* Loss of one counted row with label y (weight wy, logit xy, log-sum-exp lse, sx =
 * sum_k w_k x_k, used only with smoothing) and, in *a, the coefficient of softmax in its
 * gradient: dl/dx_k = a p_k - (1 - eps) wy [k == y] - eps / C w_k. PyTorch's label
 * smoothing; the z-loss term is weighted like the row. */
static inline double fl_label_row_loss(const fl_xent_params *p, double wy, double lse, double xy,
                                       double sx, double *a) {
    const double eps = p->smoothing, zl = p->z_loss, C = (double)p->C;
    double l = (1.0 - eps) * wy * (lse - xy);
    *a = (1.0 - eps) * wy + eps * p->weight_sum / C;
    if (eps > 0) l += eps / C * (p->weight_sum * lse - sx);
    if (zl > 0) { l += zl * wy * lse * lse; *a += 2.0 * zl * wy * lse; }
    return l;
}

#define FL_BODY "fl_classification_impl.h"
#include "fl_instantiate.h"
#undef FL_BODY

#define FL_DECLARE(dt, T)                                                                  \
    static void (*fl_xent_label_rows_##dt)(const T *, T *, int64_t, const int64_t *,         \
                                           const fl_xent_params *, double *, T *);           \
    static void (*fl_xent_label_cols_##dt)(const T *, T *, int64_t, int64_t, int64_t, int64_t, \
                                           const int64_t *, const fl_xent_params *, double *);   \
    static void (*fl_xent_prob_rows_##dt)(const T *, const T *, T *, int64_t,                \
                                          const fl_xent_params *, double *, T *);            \
    static void (*fl_softmax_rows_##dt)(const T *, T *, int64_t, int64_t, int, double *);    \
    static double (*fl_bce_block_##dt)(const T *, const T *, const T *, const T *, T *, T *, \
                                       int64_t, T);                                          \
    static double (*fl_focal_block_##dt)(const T *, const T *, T *, T *, int64_t, T, T, T);  \
    static void (*fl_exp_array_##dt)(const T *, T *, int64_t);                               \
    static void (*fl_log_array_##dt)(const T *, T *, int64_t);                               \
    static void (*fl_log1p_array_##dt)(const T *, T *, int64_t);                             \
    static void (*fl_log1p_unit_array_##dt)(const T *, T *, int64_t);
FL_DECLARE(f32, float)
FL_DECLARE(f64, double)

#define FL_ASSIGN(dt, level)                                                  \
    fl_xent_label_rows_##dt = FL_LEVEL_FN(xent_label_rows, dt, level);        \
    fl_xent_label_cols_##dt = FL_LEVEL_FN(xent_label_cols, dt, level);        \
    fl_xent_prob_rows_##dt = FL_LEVEL_FN(xent_prob_rows, dt, level);          \
    fl_softmax_rows_##dt = FL_LEVEL_FN(softmax_rows, dt, level);              \
    fl_bce_block_##dt = FL_LEVEL_FN(bce_block, dt, level);                    \
    fl_focal_block_##dt = FL_LEVEL_FN(focal_block, dt, level);                \
    fl_exp_array_##dt = FL_LEVEL_FN(exp_array, dt, level);                    \
    fl_log_array_##dt = FL_LEVEL_FN(log_array, dt, level);                    \
    fl_log1p_array_##dt = FL_LEVEL_FN(log1p_array, dt, level);                \
    fl_log1p_unit_array_##dt = FL_LEVEL_FN(log1p_unit_array, dt, level);

/* Points every kernel at the variants of one SIMD level (the caller checks the
 * CPU supports it). */
static void fl_classification_set_level(int level) {
    FL_ASSIGN(f32, level)
    FL_ASSIGN(f64, level)
}

#endif
