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

/* Kernel dispatch. A family header lists its kernels once, as an X-macro (X(name)
 * per kernel), and FL_DISPATCH(family, LIST) makes for each kernel the function
 * pointers fl_<name>_f32 / fl_<name>_f64, typed as the kernel, and
 * fl_<family>_set_level(level), which points all of them at one SIMD level (the
 * caller checks the CPU supports it; FL_LEVEL_FN: fl_instantiate.h). */
#define FL_DECLARE_KERNEL(name)                                \
    static __typeof__(&name##_f32_baseline) fl_##name##_f32;  \
    static __typeof__(&name##_f64_baseline) fl_##name##_f64;
#define FL_ASSIGN_KERNEL(name)                                 \
    fl_##name##_f32 = FL_LEVEL_FN(name, f32, level);          \
    fl_##name##_f64 = FL_LEVEL_FN(name, f64, level);
#define FL_DISPATCH(family, LIST) \
    LIST(FL_DECLARE_KERNEL)       \
    static void fl_##family##_set_level(int level) { LIST(FL_ASSIGN_KERNEL) }

/* One call for both dtypes: a family header defines fl_<name>(...) as FL_CALL, which
 * calls the pointer of the dtype of the kernel's first argument (FL_CALL2: of its
 * second), a float or double pointer. Cython declares each kernel once, its T
 * pointers as void pointers and its T scalars as double (the kernel's prototype
 * converts them), and passes typed pointers, which _Generic tells apart. */
#define FL_BY_DTYPE(name, x) _Generic((x), float *: name##_f32, const float *: name##_f32, \
                                           double *: name##_f64, const double *: name##_f64)
#define FL_CALL(name, x, ...) FL_BY_DTYPE(name, x)(x, __VA_ARGS__)
#define FL_CALL2(name, a, x, ...) FL_BY_DTYPE(name, x)(a, x, __VA_ARGS__)

enum { FL_BASELINE = 0, FL_AVX2 = 1, FL_AVX512 = 2 };

/* Prefetch element i of the array at p (rw 1: for writing). The kernels prefetch the next
 * row or block, which after the last one lies past the array: a prefetch of any address
 * is harmless, but forming such a pointer is not (undefined past one beyond the end), so
 * the address is summed as an integer. */
#define FL_PREFETCH(p, i, rw) \
    __builtin_prefetch((const void *)((uintptr_t)(p) + (uintptr_t)(i) * sizeof(*(p))), rw)

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define FL_X86_DISPATCH 1
#include <immintrin.h>         /* the few per-level intrinsics of fl_vec.h and the bodies */
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
