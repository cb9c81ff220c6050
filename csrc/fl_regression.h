/* Regression and bounding-box kernels for fastloss/_regression.pyx: every
 * (dtype, SIMD level) variant, and the function pointers the module calls through. */
#ifndef FL_REGRESSION_H
#define FL_REGRESSION_H
#include "fl_common.h"

/* Box losses (fl_box_block's `kind`), torchvision's formulas. */
enum { FL_BOX_GIOU = 0, FL_BOX_DIOU = 1, FL_BOX_CIOU = 2 };

/* Boxes per float32 partial sum, added into a float64 total: fixed, so the result
 * does not depend on how blocks are split between threads. */
#define FL_BOX_SUM_BLOCK 256

#define FL_BODY "fl_regression_impl.h"
#include "fl_instantiate.h"
#undef FL_BODY

#define FL_REGRESSION_KERNELS(X) X(reg_block) X(box_block) X(box_first_bad)
FL_DISPATCH(regression, FL_REGRESSION_KERNELS)

/* The elementwise loss named `name` (its FL_REG_KINDS entry), or -1. */
static int fl_reg_kind(const char *name) {
#define FL_REG_IF_NAMED(kind, str) if (strcmp(name, str) == 0) return FL_REG_##kind;
    FL_REG_KINDS(FL_REG_IF_NAMED)
#undef FL_REG_IF_NAMED
    return -1;
}

/* One name per kernel for both dtypes (fl_common.h's FL_CALL). */
#define fl_reg_block(...) FL_CALL2(fl_reg_block, __VA_ARGS__)
#define fl_box_block(...) FL_CALL2(fl_box_block, __VA_ARGS__)
#define fl_box_first_bad(...) FL_CALL(fl_box_first_bad, __VA_ARGS__)

#endif
