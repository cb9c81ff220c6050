/* Instantiates the template header named by FL_BODY (and FL_BODY2, if defined)
 * for float32 and float64 at every SIMD level: baseline x86-64 (SSE2), AVX2+FMA
 * and AVX-512, each in its own `#pragma GCC target` region (fl_body.h is one
 * instantiation). Functions are named <name>_<f32|f64>_<level>.
 * Elsewhere (non-x86, or a compiler without target pragmas) only the portable
 * baseline exists and FL_LEVEL_FN falls back to it. */
#include "fl_common.h"

#define FL_DOUBLE 0
#define FL_SFX f32_baseline
#define FL_VBYTES 16
#include "fl_body.h"
#define FL_DOUBLE 1
#define FL_SFX f64_baseline
#define FL_VBYTES 16
#include "fl_body.h"

#if FL_X86_DISPATCH
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FL_DOUBLE 0
#define FL_SFX f32_avx2
#define FL_VBYTES 32
#include "fl_body.h"
#define FL_DOUBLE 1
#define FL_SFX f64_avx2
#define FL_VBYTES 32
#include "fl_body.h"
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#define FL_DOUBLE 0
#define FL_SFX f32_avx512
#define FL_VBYTES 64
#include "fl_body.h"
#define FL_DOUBLE 1
#define FL_SFX f64_avx512
#define FL_VBYTES 64
#include "fl_body.h"
#pragma GCC pop_options

#define FL_LEVEL_FN(name, dt, level) \
    ((level) == FL_AVX512 ? name##_##dt##_avx512 : (level) == FL_AVX2 ? name##_##dt##_avx2 : name##_##dt##_baseline)
#else
#define FL_LEVEL_FN(name, dt, level) name##_##dt##_baseline
#endif
