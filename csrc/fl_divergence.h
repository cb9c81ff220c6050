/* Softmax-divergence kernels (entropy, KL, JS) for fastloss/_divergence.pyx: every (dtype, SIMD level)
 * variant, and the function pointers the module calls through. */
#ifndef FL_DIVERGENCE_H
#define FL_DIVERGENCE_H
#include "fl_common.h"

/* Rows up to this many bytes (per input) keep their exponentials in per-thread
 * scratch between passes; the rows, their exponentials and the log-mixture
 * (JS) then stay in L2. Longer rows recompute exp in the gradient pass. The
 * limit keeps a float32 GPT-2 vocabulary (50257) on the cached path. */
#define FL_DIV_ROW_CACHE_BYTES (208 * 1024)

typedef struct {
    int64_t C;                 /* classes per row */
    double inv_t;              /* 1 / temperature (logits are divided by the temperature) */
    double beta;               /* JS: weight of p in the mixture m = beta p + (1 - beta) q */
    double gscale_p;           /* gradient of p's logits is scaled by this */
    double gscale_q;           /* gradient of q's logits is scaled by this */
    int64_t ignore_index;      /* rows whose label (kl_rows' labels argument) equals this are skipped */
    int stream;                /* write gradients with streaming stores (far larger than the caches) */
    double ce_scale;           /* kl_rows with ce_loss: the gradient scale of b's cross-entropy */
    const void *next_a, *next_b;   /* NULL, or for a call on one row pair above FL_MID_C, where the
                                      next pair really is (half rows converted one at a time: its
                                      half values), prefetched while this one is computed */
} fl_div_params;

#include "fl_half.h"           /* before the bodies: their half-row reads (fl_vec.h) */
#define FL_BODY "fl_divergence_impl.h"
#include "fl_instantiate.h"
#undef FL_BODY

#define FL_DIVERGENCE_KERNELS(X) X(entropy_rows) X(kl_rows) X(js_rows)
FL_DISPATCH(divergence, FL_DIVERGENCE_KERNELS)

/* The float32-only kernel of half rows, at the level fl_divergence_set_half_level picks
 * (with every other kernel's, and the half conversions'). */
static __typeof__(&kl_rows_half_f32_baseline) fl_kl_rows_half = kl_rows_half_f32_baseline;
static void fl_divergence_set_half_level(int level) {
    fl_divergence_set_level(level);
    fl_half_set_level(level);
    fl_kl_rows_half = FL_LEVEL_FN(kl_rows_half, f32, level);
}

/* One name per kernel for both dtypes (fl_common.h's FL_CALL). */
#define fl_entropy_rows(...) FL_CALL(fl_entropy_rows, __VA_ARGS__)
#define fl_kl_rows(...) FL_CALL(fl_kl_rows, __VA_ARGS__)
#define fl_js_rows(...) FL_CALL(fl_js_rows, __VA_ARGS__)

#endif
