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

/* Loss of one counted row with label y (weight wy, logit xy), from m = max of the row,
 * logs = log sum_k exp(x_k - m) and, used only with smoothing, sd = sum_k w_k (m - x_k);
 * in *a, the coefficient of softmax in its gradient:
 * dl/dx_k = a p_k - (1 - eps) wy [k == y] - eps / C w_k. PyTorch's label smoothing; the
 * z-loss term is weighted like the row. Every term is taken relative to m, and m - xy,
 * logs and sd are >= 0: lse - xy would cancel when the logits are large (1e20 + log 2
 * rounds to 1e20). */
/* Optional per-row statistics (cross_entropy's return_stats), indexed like the losses:
 * a kernel given NULL does no extra work. */
typedef struct {
    double *lse;               /* log-sum-exp of the row (after softcap) */
    int64_t *argmax;           /* first index of the row's largest logit (NaN: the first NaN) */
    unsigned char *correct;    /* argmax == the label (or the target's argmax), row counted */
} fl_xent_stats;

/* log-sum-exp from the row max m and logs = log sum_k exp(x_k - m): a row whose max is not
 * finite has its max (+inf, -inf or NaN) as its log-sum-exp, as logsumexp returns. */
static inline double fl_row_lse(double m, double logs) {
    return m > -INFINITY && m < INFINITY ? m + logs : m;
}
static inline void fl_put_stats(const fl_xent_stats *st, int64_t r, double m, double logs,
                                int64_t am, int correct) {
    st->lse[r] = fl_row_lse(m, logs);
    st->argmax[r] = am;
    st->correct[r] = (unsigned char)correct;
}

/* Written once for D = double (fl_label_row_loss) and for D a vector of doubles (the
 * small-row kernel's W rows at once, the same operations lane by lane). */
#define FL_LABEL_ROW_LOSS(NAME, D)                                                         \
    static inline D NAME(const fl_xent_params *p, D wy, D m, D logs, D xy, D sd, D *a) {   \
        const double eps = p->smoothing, zl = p->z_loss, C = (double)p->C;                 \
        const D lse = m + logs;                                                            \
        D l = (1.0 - eps) * wy * ((m - xy) + logs);                                        \
        *a = (1.0 - eps) * wy + eps * p->weight_sum / C;                                   \
        if (eps > 0) l += eps / C * (sd + p->weight_sum * logs);                           \
        if (zl > 0) { l += zl * wy * lse * lse; *a += 2.0 * zl * wy * lse; }               \
        return l;                                                                          \
    }
FL_LABEL_ROW_LOSS(fl_label_row_loss, double)
/* The same for probability targets: the loss sd + st logs (+ the z-loss), sd = sum_k w_k
 * t'_k (m - x_k) and st = sum_k w_k t'_k (see xent_prob_row), and in *a the coefficient of
 * softmax in its gradient. */
#define FL_PROB_ROW_LOSS(NAME, D)                                                          \
    static inline D NAME(const fl_xent_params *p, D m, D logs, D sd, D st, D *a) {         \
        const double zl = p->z_loss;                                                       \
        const D lse = m + logs;                                                            \
        D l = sd + st * logs;                                                              \
        *a = st;                                                                           \
        if (zl > 0) { l += zl * lse * lse; *a += 2.0 * zl * lse; }                         \
        return l;                                                                          \
    }
FL_PROB_ROW_LOSS(fl_prob_row_loss, double)

#include "fl_half.h"           /* before the bodies: their half-row reads (fl_vec.h) */
#define FL_BODY "fl_classification_impl.h"
#include "fl_instantiate.h"
#undef FL_BODY

#define FL_CLASSIFICATION_KERNELS(X)                                               \
    X(xent_label_rows) X(xent_label_cols) X(xent_prob_rows) X(softmax_rows)     \
    X(bce_block) X(focal_block) X(exp_array) X(exp_le0_array) X(log_array) X(log1p_array) X(log1p_unit_array)
FL_DISPATCH(classification, FL_CLASSIFICATION_KERNELS)

/* The float32-only kernels (half rows; the label check, which has no T), at the level
 * fl_classification_set_half_level picks (with every other kernel's, and the half
 * conversions'). */
static __typeof__(&xent_label_half_f32_baseline) fl_xent_label_half = xent_label_half_f32_baseline;
static __typeof__(&softmax_half_f32_baseline) fl_softmax_half = softmax_half_f32_baseline;
static __typeof__(&label_scan_f32_baseline) fl_label_scan = label_scan_f32_baseline;
static void fl_classification_set_half_level(int level) {
    fl_classification_set_level(level);
    fl_half_set_level(level);
    fl_xent_label_half = FL_LEVEL_FN(xent_label_half, f32, level);
    fl_softmax_half = FL_LEVEL_FN(softmax_half, f32, level);
    fl_label_scan = FL_LEVEL_FN(label_scan, f32, level);
}

/* One name per kernel for both dtypes (fl_common.h's FL_CALL). */
#define fl_xent_label_rows(...) FL_CALL(fl_xent_label_rows, __VA_ARGS__)
#define fl_xent_label_cols(...) FL_CALL(fl_xent_label_cols, __VA_ARGS__)
#define fl_xent_prob_rows(...) FL_CALL(fl_xent_prob_rows, __VA_ARGS__)
#define fl_softmax_rows(...) FL_CALL(fl_softmax_rows, __VA_ARGS__)
/* elementwise */
#define fl_bce_block(...) FL_CALL(fl_bce_block, __VA_ARGS__)
#define fl_focal_block(...) FL_CALL(fl_focal_block, __VA_ARGS__)
/* the vector math alone, for the accuracy tests */
#define fl_exp_array(...) FL_CALL(fl_exp_array, __VA_ARGS__)
#define fl_exp_le0_array(...) FL_CALL(fl_exp_le0_array, __VA_ARGS__)
#define fl_log_array(...) FL_CALL(fl_log_array, __VA_ARGS__)
#define fl_log1p_array(...) FL_CALL(fl_log1p_array, __VA_ARGS__)
#define fl_log1p_unit_array(...) FL_CALL(fl_log1p_unit_array, __VA_ARGS__)

#endif
