/* Shared, non-templated pieces: SIMD levels, CPU detection, token pasting.
 *
 * Every kernel header is a template instantiated once per (dtype, SIMD level)
 * by fl_instantiate.h; the functions of one level are compiled with
 * `#pragma GCC target`, so one build carries baseline, AVX2+FMA and AVX-512
 * code and picks one at run time (see fl_cpu_best_level). */
#ifndef FL_COMMON_H
#define FL_COMMON_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <math.h>

#define FL_PASTE_(a, b) a##_##b
#define FL_PASTE(a, b) FL_PASTE_(a, b)

enum { FL_BASELINE = 0, FL_AVX2 = 1, FL_AVX512 = 2 };

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define FL_X86_DISPATCH 1
#else
#define FL_X86_DISPATCH 0
#endif

/* Best level this CPU (and OS, which __builtin_cpu_supports checks through
 * XGETBV) can run. Portable builds on other architectures only have baseline. */
static inline int fl_cpu_best_level(void) {
#if FL_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return FL_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FL_AVX2;
#endif
    return FL_BASELINE;
}

#endif
