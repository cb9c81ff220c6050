/* float16 and bfloat16 <-> float32 conversion of blocks, for the half-precision
 * paths of fastloss/_classification.pyx and _divergence.pyx: a block of half rows is
 * converted into per-thread float32 scratch, the float32 row kernel runs on it, and
 * its gradient is converted back. Non-templated (half is a storage format here, the
 * arithmetic stays float32); fl_half_impl.h is compiled once per SIMD level.
 *
 * Rounding is to nearest, ties to even, at every level; float16 -> float32 and
 * bfloat16 -> float32 are exact. inf stays inf, NaN stays NaN (quiet: the payload's
 * top bits are kept, a signalling NaN comes back quiet), float16 subnormals are kept.
 * float16 uses F16C (AVX2 level) and AVX-512F's vcvtph2ps / vcvtps2ph (AVX-512 level)
 * where the CPU has F16C, exact portable code otherwise; bfloat16 is bit shifts. */
#ifndef FL_HALF_H
#define FL_HALF_H
#include "fl_common.h"
#if FL_X86_DISPATCH
#include <immintrin.h>
#include <cpuid.h>
#endif

enum { FL_FLOAT16 = 0, FL_BFLOAT16 = 1 };

/* float viewed as its bits, without a memcpy per element (which stops vectorisation) */
typedef uint32_t fl_bits32 __attribute__((may_alias));

static inline __attribute__((always_inline)) uint32_t fl_f2u(float f) { return *(fl_bits32 *)&f; }
static inline __attribute__((always_inline)) float fl_u2f(uint32_t u) {
    float f;
    *(fl_bits32 *)&f = u;
    return f;
}

static inline __attribute__((always_inline)) float fl_h2f_one(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f)                         /* inf, NaN (payload kept) */
        return fl_u2f(sign | 0x7f800000u | (m << 13));
    if (e == 0) {                          /* zero, subnormal: m * 2^-24 is exact */
        float v = (float)m * 0x1p-24f;
        return sign ? -v : v;
    }
    return fl_u2f(sign | ((e + 112) << 23) | (m << 13));   /* rebias 15 -> 127 */
}

static inline __attribute__((always_inline)) uint16_t fl_f2h_one(float x) {
    uint32_t f = fl_f2u(x), sign = (f >> 16) & 0x8000, o;
    f &= 0x7fffffffu;
    if (f > 0x7f800000u)                   /* NaN stays NaN, quiet */
        o = 0x7e00 | ((f >> 13) & 0x3ff);
    else if (f >= 0x47800000u)             /* >= 2^16 (and inf): inf */
        o = 0x7c00;
    else if (f < 0x38800000u)              /* below 2^-14: the add rounds to a multiple of 2^-24 */
        o = fl_f2u(fl_u2f(f) + 0.5f) - fl_f2u(0.5f);
    else                                   /* rebias 127 -> 15, round half to even; may carry to inf */
        o = (f - 0x38000000u + 0xfffu + ((f >> 13) & 1)) >> 13;
    return (uint16_t)(sign | o);
}

static inline __attribute__((always_inline)) uint16_t fl_f2bf_one(float x) {
    uint32_t f = fl_f2u(x);
    if ((f & 0x7fffffffu) > 0x7f800000u)   /* NaN stays NaN, quiet */
        return (uint16_t)((f >> 16) | 0x40);
    return (uint16_t)((f + 0x7fffu + ((f >> 16) & 1)) >> 16);
}

/* vcvtps2ph's rounding: to nearest, ties to even, no exceptions */
#define FL_RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

#define FL_HSFX baseline
#define FL_HLEVEL 0
#include "fl_half_impl.h"
#if FL_X86_DISPATCH
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define FL_HSFX avx2
#define FL_HLEVEL 1
#include "fl_half_impl.h"
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c")
#define FL_HSFX avx512
#define FL_HLEVEL 2
#include "fl_half_impl.h"
#pragma GCC pop_options
#endif

/* The level's conversions; the kernel module's set_level calls fl_half_set_level. */
static void (*fl_half_to_float)(int kind, const uint16_t *src, float *dst, int64_t n) =
    fl_half_to_float_baseline;
static void (*fl_float_to_half)(int kind, const float *src, uint16_t *dst, int64_t n) =
    fl_float_to_half_baseline;

static void fl_half_set_level(int level) {
#if FL_X86_DISPATCH
    /* The AVX2 and AVX-512 levels' float16 code needs F16C, which no level's check implies. */
    unsigned a, b, c, d;
    if (!(__get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C)))
        level = FL_BASELINE;
    fl_half_to_float = level == FL_AVX512 ? fl_half_to_float_avx512
                     : level == FL_AVX2 ? fl_half_to_float_avx2 : fl_half_to_float_baseline;
    fl_float_to_half = level == FL_AVX512 ? fl_float_to_half_avx512
                     : level == FL_AVX2 ? fl_float_to_half_avx2 : fl_float_to_half_baseline;
#else
    (void)level;
#endif
}

#endif
