/* Elementwise Gaussian-loss kernels for fastloss/_gaussian.pyx: every (dtype, SIMD
 * level) variant, and the function pointers the module calls through. */
#ifndef FL_GAUSSIAN_H
#define FL_GAUSSIAN_H
#include "fl_common.h"

/* Elements per partial sum kept in the row dtype before it is added into a
 * float64 total: fixed, so sums do not depend on how work is split. */
#define FL_GAUSS_SUM_BLOCK 256

#define FL_BODY "fl_gaussian_impl.h"
#include "fl_instantiate.h"
#undef FL_BODY

#define FL_GAUSS_DECLARE(dt, T)                                                               \
    static double (*fl_gauss_kl_block_##dt)(const T *, const T *, const T *, const T *, T *,   \
                                            T *, T *, T *, T *, int64_t, T);                   \
    static double (*fl_recon_block_##dt)(const T *, const T *, int, T *, T *, int64_t, T);     \
    static double (*fl_nll_block_##dt)(const T *, const T *, const T *, T, T *, T *, T *,      \
                                       int64_t, T, T, T, double *);
FL_GAUSS_DECLARE(f32, float)
FL_GAUSS_DECLARE(f64, double)

#define FL_GAUSS_ASSIGN(dt, level)                                            \
    fl_gauss_kl_block_##dt = FL_LEVEL_FN(gauss_kl_block, dt, level);          \
    fl_recon_block_##dt = FL_LEVEL_FN(recon_block, dt, level);                \
    fl_nll_block_##dt = FL_LEVEL_FN(nll_block, dt, level);

/* Points every kernel at the variants of one SIMD level (the caller checks the
 * CPU supports it). */
static void fl_gaussian_set_level(int level) {
    FL_GAUSS_ASSIGN(f32, level)
    FL_GAUSS_ASSIGN(f64, level)
}

#endif
