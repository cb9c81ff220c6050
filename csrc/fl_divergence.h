/* Softmax-divergence kernels (entropy, KL, JS) for fastloss/_divergence.pyx: every (dtype, SIMD level)
 * variant, and the function pointers the module calls through. */
#ifndef FL_DIVERGENCE_H
#define FL_DIVERGENCE_H
#include "fl_common.h"
#if FL_X86_DISPATCH
#include <immintrin.h>         /* streaming stores */
#endif

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
    int accumulate_q;          /* add q's gradient to gq instead of overwriting it */
    int64_t ignore_index;      /* rows whose label (kl_rows' labels argument) equals this are skipped */
    int stream;                /* write gradients with streaming stores (far larger than the caches) */
} fl_div_params;

#define FL_BODY "fl_divergence_impl.h"
#include "fl_instantiate.h"
#undef FL_BODY

#define FL_DIV_DECLARE(dt, T)                                                                 \
    static void (*fl_entropy_rows_##dt)(const T *, T *, int64_t, int64_t, double, double *, T *, int); \
    static void (*fl_kl_rows_##dt)(const T *, const T *, T *, T *, int64_t, const int64_t *,   \
                                   const fl_div_params *, double *, T *);                      \
    static void (*fl_js_rows_##dt)(const T *, const T *, T *, T *, int64_t,                    \
                                   const fl_div_params *, double *, T *);
FL_DIV_DECLARE(f32, float)
FL_DIV_DECLARE(f64, double)

#define FL_DIV_ASSIGN(dt, level)                                              \
    fl_entropy_rows_##dt = FL_LEVEL_FN(entropy_rows, dt, level);              \
    fl_kl_rows_##dt = FL_LEVEL_FN(kl_rows, dt, level);                        \
    fl_js_rows_##dt = FL_LEVEL_FN(js_rows, dt, level);

/* Points every kernel at the variants of one SIMD level (the caller checks the
 * CPU supports it). */
static void fl_divergence_set_level(int level) {
    FL_DIV_ASSIGN(f32, level)
    FL_DIV_ASSIGN(f64, level)
}

#endif
