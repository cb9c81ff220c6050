/* Gaussian-loss kernels (the elementwise ones and mvn_kl's per-matrix one) for
 * fastloss/_gaussian.pyx: every (dtype, SIMD level) variant, and the function
 * pointers the module calls through. */
#ifndef FL_GAUSSIAN_H
#define FL_GAUSSIAN_H
#include "fl_common.h"

#define FL_BODY "fl_gaussian_impl.h"
#include "fl_instantiate.h"
#undef FL_BODY

#define FL_GAUSSIAN_KERNELS(X) X(gauss_kl_block) X(recon_block) X(nll_block) X(mvn_kl_one)
FL_DISPATCH(gaussian, FL_GAUSSIAN_KERNELS)

/* One name per kernel for both dtypes (fl_common.h's FL_CALL). */
#define fl_gauss_kl_block(...) FL_CALL(fl_gauss_kl_block, __VA_ARGS__)
#define fl_recon_block(...) FL_CALL(fl_recon_block, __VA_ARGS__)
#define fl_nll_block(...) FL_CALL(fl_nll_block, __VA_ARGS__)
#define fl_mvn_kl_one(...) FL_CALL(fl_mvn_kl_one, __VA_ARGS__)

#endif
