/* Regression and bounding-box kernels for fastloss/_regression.pyx: every
 * (dtype, SIMD level) variant, and the function pointers the module calls through. */
#ifndef FL_REGRESSION_H
#define FL_REGRESSION_H
#include "fl_common.h"

/* Elementwise losses of r = input - target (fl_reg_block's `kind`). */
enum { FL_REG_MSE = 0, FL_REG_L1 = 1, FL_REG_SMOOTH_L1 = 2, FL_REG_HUBER = 3, FL_REG_LOGCOSH = 4 };
/* Box losses (fl_box_block's `kind`), torchvision's formulas. */
enum { FL_BOX_GIOU = 0, FL_BOX_DIOU = 1, FL_BOX_CIOU = 2 };

/* Elements (boxes) per float32 partial sum, added into a float64 total: fixed, so
 * the result does not depend on how blocks are split between threads. */
#define FL_REG_SUM_BLOCK 256
#define FL_BOX_SUM_BLOCK 256

#define FL_BODY "fl_regression_impl.h"
#include "fl_instantiate.h"
#undef FL_BODY

#define FL_REG_DECLARE(dt, T)                                                                   \
    static double (*fl_reg_block_##dt)(int, const T *, const T *, const T *, T *, T *, int64_t, \
                                       T, T);                                                   \
    static double (*fl_box_block_##dt)(int, const T *, const T *, T *, T *, T *, int64_t, T, T); \
    static int64_t (*fl_box_first_bad_##dt)(const T *, int64_t);
FL_REG_DECLARE(f32, float)
FL_REG_DECLARE(f64, double)
#undef FL_REG_DECLARE

#define FL_REG_ASSIGN(dt, level)                                     \
    fl_reg_block_##dt = FL_LEVEL_FN(reg_block, dt, level);           \
    fl_box_block_##dt = FL_LEVEL_FN(box_block, dt, level);           \
    fl_box_first_bad_##dt = FL_LEVEL_FN(box_first_bad, dt, level);

/* Points every kernel at the variants of one SIMD level (the caller checks the
 * CPU supports it). */
static void fl_regression_set_level(int level) {
    FL_REG_ASSIGN(f32, level)
    FL_REG_ASSIGN(f64, level)
}
#undef FL_REG_ASSIGN

#endif
