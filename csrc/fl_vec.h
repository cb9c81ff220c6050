/* Template (no include guard): vectors of one dtype and the vectorised math on
 * them. fl_instantiate.h includes it once per (dtype, SIMD level) with
 *   FL_DOUBLE  0 (float32) or 1 (float64)
 *   FL_SFX     name suffix, e.g. f32_avx2
 *   FL_VBYTES  vector size: 16 (SSE2), 32 (AVX2) or 64 (AVX-512), the native width,
 *              since GCC lowers wider generic vectors, comparisons and selects
 *              included, to slow piecewise code
 * and defines T (the scalar), TI (same-width integer), V (vector of T), VI (of TI), W (lanes).
 *
 * GCC/Clang vector extensions compile to the enclosing `#pragma GCC target`.
 * No libm call appears in a loop body: a call stops vectorisation.
 *
 * Accuracy (measured over the whole range by tests/test_simd_math.py):
 *   vexp   float32 <= 2 ulp, float64 <= 2 ulp; results below the smallest normal
 *          number are flushed to +0 (x < log(FLT_MIN) ~ -87.34, log(DBL_MIN) ~ -708.4).
 *   vexp_le0 (x <= 0) float32 <= 2 ulp (the table forms, AVX2 and AVX-512: <= 1 ulp measured),
 *          float64 <= 2 ulp; flushed to +0 below the smallest normal number as vexp.
 *          It does not promise NaN in -> NaN out; vexp_le0_nan does.
 *   vlog   float32 <= 2 ulp, float64 <= 2 ulp, all positive inputs incl. subnormals.
 *   vlog1p float32 <= 3 ulp, float64 <= 3 ulp for x > -1 (log's error plus the correction's).
 *   vlog1p_unit (x in [0, 1] only) float32 <= 2 ulp, float64 <= 2 ulp.
 *   vsplit, vfrexp1: exact (x = m 2^e).
 * Special values follow C99: exp(-inf)=0, exp(inf)=inf, log(0)=-inf, log(x<0)=NaN,
 * NaN in -> NaN out. */

/* Shared by every instantiation (defined once). */
#ifndef FL_VEC_SHARED
#define FL_VEC_SHARED
/* Elements per block of a sum: each block is summed lane-wise in the row dtype and
 * then added into a float64 total. Fixed, so results do not depend on how rows or
 * blocks are split between threads (and changing it changes results). */
#define FL_SUM_BLOCK 256
/* Softmax rows of at most FL_MID_C classes take the blocked row paths (W rows at a time:
 * block_max below; cross-entropy with labels above its transposed small-row kernel,
 * probability targets, softmax, entropy, KL without labels): their sums are in T, and
 * FL_SUM_BLOCK bounds a sum in T elsewhere. Above it a block's rows no longer stay in L1
 * (cross-entropy at 1000 classes with float64 partials: the gradient 2x slower). */
#define FL_MID_C FL_SUM_BLOCK
/* Rows of at most this many classes take the transposed (many rows per vector) paths
 * (block_load_t below): FL_SMALL_C in float32 (half rows too: computed in float32),
 * FL_SMALL_C_F64 in float64, where cross-entropy's row path was as fast or faster past it
 * (one thread, 2M elements: at 40 and 48 classes float32 took 1.5-4x less time this way
 * at every level, float64 up to 1.6x more at AVX-512 and the baseline). Multiples of 16,
 * so a block's ceil(C / W) tiles fit in FL_SMALL_C vectors. */
#define FL_SMALL_C 48
#define FL_SMALL_C_F64 32
/* Vectors per group of the one-pass softmax rows (row_lse1, kl_row1): a group's max is
 * taken in registers before its exponentials, and its per-lane sums go into float64. */
#define FL_GROUP 8
/* The source kind of a row read as T itself (the others: fl_half.h's FL_FLOAT16, FL_BFLOAT16). */
#define FL_NATIVE (-1)
/* log(2), for scalar and per-lane terms outside the vector log. */
#define FL_LN2 0.69314718055994530942
/* 1/d!, d = 0..13: the Taylor coefficients of exp (and, from d = 2, of expm1). */
static const double fl_inv_fact[14] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120,
    1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800,
    1.0 / 479001600, 1.0 / 6227020800.0};
/* The bits of 2^(j/16), j = 0..15, rounded to float32, less j << 19: vexp_le0's table. */
static const int32_t fl_exp2_16[16] = {0x3f800000, 0x3f7daac3, 0x3f7b95c2, 0x3f79c3d3, 0x3f7837f0,
    0x3f76f532, 0x3f75fed7, 0x3f75583f, 0x3f7504f3, 0x3f7508a4, 0x3f75672a, 0x3f76248c, 0x3f7744fd,
    0x3f78ccdf, 0x3f7ac0c7, 0x3f7d257d};
/* Its even entries, the bits of 2^(j/8), j = 0..7, less j << 20: AVX2's table (one vpermps). */
static const int32_t fl_exp2_8[8] = {0x3f800000, 0x3f7b95c2, 0x3f7837f0, 0x3f75fed7, 0x3f7504f3,
    0x3f75672a, 0x3f7744fd, 0x3f7ac0c7};
/* vlog_core's table (AVX-512 float32): x = 2^k z, z in [OFF, 2 OFF), OFF = 0x3f330000 (0.6992),
 * cut into 16 intervals by the 4 bits of z below its exponent field. Interval i holds
 * invc[i], 1 / (its midpoint) rounded, and log(1 / invc[i]) = logc_hi[i] + logc_lo[i]; the
 * interval holding 1 has invc = 1 and log c = 0, so that x near 1 keeps its relative
 * accuracy (log x = z - 1 + ..., exact z - 1). */
static const float fl_log_invc[16] = {
    0x1.661ec6p+0f, 0x1.571ed4p+0f, 0x1.49539ep+0f, 0x1.3c995ap+0f, 0x1.30d19p+0f, 0x1.25e228p+0f,
    0x1.1bb4a4p+0f, 0x1.12358ep+0f, 0x1.0953f4p+0f, 0x1p+0f, 0x1.e573acp-1f, 0x1.ca4b3p-1f,
    0x1.b20364p-1f, 0x1.9c2d14p-1f, 0x1.886e6p-1f, 0x1.767dcep-1f};
static const float fl_log_logc_hi[16] = {
    -0x1.57bf74p-2f, -0x1.2bef08p-2f, -0x1.01eae4p-2f, -0x1.b31d84p-3f, -0x1.6574ecp-3f,
    -0x1.1aa2bep-3f, -0x1.a4e764p-4f, -0x1.1973b6p-4f, -0x1.252f4p-5f, 0x0p+0f, 0x1.b42de0p-5f,
    0x1.c5e54cp-4f, 0x1.526e5ep-3f, 0x1.bc286cp-3f, 0x1.1058bep-2f, 0x1.40430ap-2f};
static const float fl_log_logc_lo[16] = {
    0x1.36e5c2p-27f, -0x1.f724d4p-28f, -0x1.54d8d2p-27f, 0x1.690c72p-29f, 0x1.2e7d98p-28f,
    -0x1.447ee0p-28f, 0x1.a721e4p-31f, -0x1.a32aa8p-31f, -0x1.e34604p-31f, 0x0p+0f, 0x1.232e3ap-30f,
    -0x1.487170p-33f, 0x1.686d0ep-29f, -0x1.d27314p-31f, -0x1.ca36a4p-27f, -0x1.bf2b04p-27f};
#endif

#define N_(name) FL_PASTE(name, FL_SFX)

#if FL_DOUBLE
#define T double
#define TI int64_t
#define TU uint64_t
#define MANT_BITS 52
#define EXP_BIAS 1023
#define W (FL_VBYTES / 8)
#define EXP_DEG 13                       /* Taylor degree: r^14/14! < 2^-53 on |r| <= ln2/2 */
#define LOG_TERMS 11                     /* atanh series terms: s^23/23 < 2^-53 for s <= 0.1716 */
#define X_EXP_MIN (-708.39641853226408)  /* log(DBL_MIN) */
#define X_EXP_MAX 709.78271289338397     /* log(DBL_MAX) */
#define SUBNORMAL_MIN 2.2250738585072014e-308
#define SUBNORMAL_SCALE 4503599627370496.0 /* 2^52 */
#define SUBNORMAL_LOG2 52
#else
#define T float
#define TI int32_t
#define TU uint32_t
#define MANT_BITS 23
#define EXP_BIAS 127
#define W (FL_VBYTES / 4)
#define EXP_DEG 7
#define LOG_TERMS 5
#define X_EXP_MIN (-87.336544750553102f)
#define X_EXP_MAX 88.722839052068352f
#define SUBNORMAL_MIN 1.17549435e-38f
#define SUBNORMAL_SCALE 16777216.0f        /* 2^24 */
#define SUBNORMAL_LOG2 24
#endif

typedef T N_(V) __attribute__((vector_size(FL_VBYTES)));
typedef TI N_(VI) __attribute__((vector_size(FL_VBYTES)));
/* Unsigned lanes: bit arithmetic that may wrap (defined for unsigned, not for signed). */
typedef TU N_(VUI) __attribute__((vector_size(FL_VBYTES)));
/* Unaligned, aliasing-safe view of memory as V. */
typedef T N_(VU) __attribute__((vector_size(FL_VBYTES), aligned(sizeof(T)), may_alias));
#define V N_(V)
#define VI N_(VI)
#define VU N_(VU)

#define FL_INL static inline __attribute__((always_inline))

FL_INL V N_(vload)(const T *p) { return *(const VU *)p; }
FL_INL void N_(vstore)(T *p, V v) { *(VU *)p = v; }
FL_INL V N_(vset1)(T a) { V v = {0}; return v + a; }
/* mask ? a : b, with mask lanes all-ones or zero (what vector comparisons give). */
FL_INL V N_(vsel)(VI mask, V a, V b) { return (V)((mask & (VI)a) | (~mask & (VI)b)); }
/* Loads up to W elements; the missing lanes read as `pad`. AVX-512 and AVX2: one masked
 * load (masked-off lanes do not fault); the baseline through a buffer (W scalar stores and
 * a reload: a row's tail paid that twice a row in the one-pass softmax). */
FL_INL V N_(vload_part)(const T *p, int64_t n, T pad) {
#if FL_X86_DISPATCH && FL_VBYTES == 64
    const unsigned bits = n <= 0 ? 0u : n >= W ? (1u << W) - 1 : (1u << n) - 1;
#if FL_DOUBLE
    return (V)_mm512_mask_loadu_pd(_mm512_set1_pd(pad), (__mmask8)bits, p);
#else
    return (V)_mm512_mask_loadu_ps(_mm512_set1_ps(pad), (__mmask16)bits, p);
#endif
#elif FL_X86_DISPATCH && FL_VBYTES == 32
    /* AVX2: one masked load (masked-off lanes read 0 and do not fault) and a blend */
#if FL_DOUBLE
    const VI lane = {0, 1, 2, 3}, on = lane < (TI)(n <= 0 ? 0 : n >= W ? W : n);
    const V v = (V)_mm256_maskload_pd(p, (__m256i)on);
#else
    const VI lane = {0, 1, 2, 3, 4, 5, 6, 7}, on = lane < (TI)(n <= 0 ? 0 : n >= W ? W : n);
    const V v = (V)_mm256_maskload_ps(p, (__m256i)on);
#endif
    return N_(vsel)(on, v, N_(vset1)(pad));
#else
    T buf[W];
    for (int j = 0; j < W; j++) buf[j] = j < n ? p[j] : pad;
    return N_(vload)(buf);
#endif
}
FL_INL void N_(vstore_part)(T *p, V v, int64_t n) {
    for (int j = 0; j < n; j++) p[j] = v[j];
}
/* Full-vector load/store when n >= W (the common, branch-predicted case). */
FL_INL V N_(vload_n)(const T *p, int64_t n, T pad) { return n >= W ? N_(vload)(p) : N_(vload_part)(p, n, pad); }
FL_INL void N_(vstore_n)(T *p, V v, int64_t n) { if (n >= W) N_(vstore)(p, v); else N_(vstore_part)(p, v, n); }
/* Lanes j < n all-ones, the rest zero. */
FL_INL VI N_(vfirst)(int64_t n) {
    TI buf[W];
    for (int j = 0; j < W; j++) buf[j] = j < n ? (TI)-1 : 0;
    VI m;
    memcpy(&m, buf, sizeof m);
    return m;
}
/* v with the lanes j >= n zeroed (n < W: the partial vector at an array's end), so that
 * padding lanes add nothing to a sum. */
FL_INL V N_(vkeep_first)(V v, int64_t n) { return n < W ? N_(vsel)(N_(vfirst)(n), v, N_(vset1)(0)) : v; }
/* Lanes of the where= mask bytes m[k..k+nk) that are nonzero, all-ones (the rest zero).
 * One zero-extending load per level: GCC 12 widens a byte vector (__builtin_convertvector)
 * a byte at a time, which made a masked BCE 1.5x slower. */
FL_INL VI N_(vkeep_bytes)(const uint8_t *m, int64_t k, int64_t nk) {
    uint8_t buf[W] = {0};
    const uint8_t *p = m + k;
    if (nk < W) {
        for (int j = 0; j < nk; j++) buf[j] = p[j];
        p = buf;
    }
#if FL_X86_DISPATCH && FL_VBYTES == 64 && FL_DOUBLE
    return (VI)_mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i *)p)) != 0;
#elif FL_X86_DISPATCH && FL_VBYTES == 64
    return (VI)_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)) != 0;
#elif FL_X86_DISPATCH && FL_VBYTES == 32 && FL_DOUBLE
    int32_t b4;
    memcpy(&b4, p, 4);
    return (VI)_mm256_cvtepu8_epi64(_mm_cvtsi32_si128(b4)) != 0;
#elif FL_X86_DISPATCH && FL_VBYTES == 32
    return (VI)_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)) != 0;
#else
    TI b[W];
    for (int j = 0; j < W; j++) b[j] = p[j];
    VI v;
    memcpy(&v, b, sizeof v);
    return v != 0;
#endif
}
/* The first n <= W elements of p into the first lanes (the rest read 0), and the store
 * of a vector's first n lanes: one masked instruction at AVX-512 (and AVX2's load); else
 * vload_part, vstore_part (AVX2's masked store is slow on AMD). */
FL_INL V N_(vload_first)(const T *p, int64_t n) {
#if FL_X86_DISPATCH && FL_VBYTES == 64 && FL_DOUBLE
    return (V)_mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1), p);
#elif FL_X86_DISPATCH && FL_VBYTES == 64
    return (V)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
#elif FL_X86_DISPATCH && FL_VBYTES == 32 && FL_DOUBLE
    return (V)_mm256_maskload_pd(p, (__m256i)N_(vfirst)(n));
#elif FL_X86_DISPATCH && FL_VBYTES == 32
    return (V)_mm256_maskload_ps(p, (__m256i)N_(vfirst)(n));
#else
    return N_(vload_part)(p, n, 0);
#endif
}
FL_INL void N_(vstore_first)(T *p, V v, int64_t n) {
#if FL_X86_DISPATCH && FL_VBYTES == 64 && FL_DOUBLE
    _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1), (__m512d)v);
#elif FL_X86_DISPATCH && FL_VBYTES == 64
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
#else
    N_(vstore_part)(p, v, n);
#endif
}
/* Two-source lane shuffle with constant indices (a comma list): GCC >= 12 and Clang have
 * __builtin_shufflevector; older GCC takes an index vector. */
#ifndef FL_SHUF
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define FL_SHUF(a, b, idx) __builtin_shufflevector(a, b, idx)
#else
#define FL_SHUF(a, b, idx) __builtin_shuffle(a, b, (VI){idx})
#endif
#endif
/* Transposes W vectors in place (a W x W tile: v[r][c] becomes v[c][r]): log2(W) stages,
 * stage h swapping the off-diagonal h x h blocks of each pair of rows r, r + h by
 * constant two-vector shuffles (the compiler picks each level's instructions for them). */
#if W == 16
#define FL_LANES(F, h) F(h, 0), F(h, 1), F(h, 2), F(h, 3), F(h, 4), F(h, 5), F(h, 6), F(h, 7), \
    F(h, 8), F(h, 9), F(h, 10), F(h, 11), F(h, 12), F(h, 13), F(h, 14), F(h, 15)
#elif W == 8
#define FL_LANES(F, h) F(h, 0), F(h, 1), F(h, 2), F(h, 3), F(h, 4), F(h, 5), F(h, 6), F(h, 7)
#elif W == 4
#define FL_LANES(F, h) F(h, 0), F(h, 1), F(h, 2), F(h, 3)
#else
#define FL_LANES(F, h) F(h, 0), F(h, 1)
#endif
#define FL_BF_LO(h, c) ((c) & (h) ? W + (c) - (h) : (c))   /* row r: b's block left of a's */
#define FL_BF_HI(h, c) ((c) & (h) ? W + (c) : (c) + (h))   /* row r + h: a's block right of b's */
#define FL_BF_STAGE(h)                                                              \
    for (int r = 0; r < W; r++)                                                     \
        if (!(r & (h))) {                                                           \
            const V a = v[r], b = v[r + (h)];                                       \
            v[r] = FL_SHUF(a, b, FL_LANES(FL_BF_LO, h));                            \
            v[r + (h)] = FL_SHUF(a, b, FL_LANES(FL_BF_HI, h));                      \
        }
FL_INL void N_(vtranspose)(V *v) {
#if W >= 16
    FL_BF_STAGE(8)
#endif
#if W >= 8
    FL_BF_STAGE(4)
#endif
#if W >= 4
    FL_BF_STAGE(2)
#endif
    FL_BF_STAGE(1)
}
#undef FL_BF_STAGE
#undef FL_BF_HI
#undef FL_BF_LO
#undef FL_LANES
FL_INL double N_(vhsum)(V v) {
    double s = 0.0;
    for (int j = 0; j < W; j++) s += (double)v[j];
    return s;
}
/* max that lets NaN win, so a NaN anywhere in a row makes the row max NaN. */
FL_INL V N_(vmax_nan)(V a, V b) { return N_(vsel)((b > a) | (b != b), b, a); }
FL_INL T N_(vhmax_nan)(V v) {
    T m = v[0];
    for (int j = 1; j < W; j++) m = (v[j] > m || v[j] != v[j]) ? v[j] : m;
    return m;
}

/* |x| (|-0| = +0, NaN stays NaN) and x with the sign of s (s's sign bit xor-ed into x,
 * which is >= 0 in every use): bit operations, one instruction each. */
FL_INL VI N_(vsignbit)(void) { return (VI)(-N_(vset1)((T)0)); }   /* -(+0) = -0 (vset1(-0) is +0) */
FL_INL V N_(vabs)(V x) { return (V)((VI)x & ~N_(vsignbit)()); }
FL_INL V N_(vxorsign)(V x, V s) { return (V)((VI)x ^ ((VI)s & N_(vsignbit)())); }

/* Any lane of a comparison mask set: one instruction per level (a loop over lanes
 * becomes a chain of extracts). */
FL_INL int N_(vany)(VI m) {
#if FL_X86_DISPATCH && FL_VBYTES == 64 && FL_DOUBLE
    return _mm512_test_epi64_mask((__m512i)m, (__m512i)m) != 0;
#elif FL_X86_DISPATCH && FL_VBYTES == 64
    return _mm512_test_epi32_mask((__m512i)m, (__m512i)m) != 0;
#elif FL_X86_DISPATCH && FL_VBYTES == 32 && FL_DOUBLE
    return _mm256_movemask_pd((__m256d)m) != 0;
#elif FL_X86_DISPATCH && FL_VBYTES == 32
    return _mm256_movemask_ps((__m256)m) != 0;
#elif FL_X86_DISPATCH && FL_DOUBLE
    return _mm_movemask_pd((__m128d)m) != 0;
#elif FL_X86_DISPATCH
    return _mm_movemask_ps((__m128)m) != 0;
#else
    TI any = 0;
    for (int j = 0; j < W; j++) any |= m[j];
    return any != 0;
#endif
}

/* ln2 = ln2_hi + ln2_lo, ln2_hi with trailing zero bits so n * ln2_hi is exact for
 * every n that occurs (Cody-Waite); the shifter: adding it rounds to an integer; up to
 * exp_plain, n <= EXP_BIAS (2^n is a normal number). */
#if FL_DOUBLE
static const T N_(ln2_hi) = 6.93147180369123816490e-01, N_(ln2_lo) = 1.90821492927058770002e-10;
static const T N_(exp_shifter) = 6755399441055744.0;   /* 1.5 * 2^52 */
static const T N_(exp_plain) = 709.0;                  /* below EXP_BIAS ln2 */
#else
static const T N_(ln2_hi) = 0.693359375f, N_(ln2_lo) = -2.12194440e-4f;
static const T N_(exp_shifter) = 12582912.0f;          /* 1.5 * 2^23 */
static const T N_(exp_plain) = 88.0f;
#endif

/* Range reduction of exp and expm1: xs = n ln2 + r, n = round(xs / ln2), |r| <= ln2/2,
 * for xs already clamped to [X_EXP_MIN, X_EXP_MAX]. Returns r, and n in *ni (an integer,
 * from the low mantissa bits of xs / ln2 + shifter). */
FL_INL V N_(vexp_reduce)(V xs, VI *ni) {
    V k = xs * (T)1.44269504088896340736 + N_(exp_shifter);
    V n = k - N_(exp_shifter);
    *ni = (VI)k - (VI)N_(vset1)(N_(exp_shifter));
    return xs - n * N_(ln2_hi) - n * N_(ln2_lo);
}

/* The core of exp for xs already clamped to [X_EXP_MIN, X_EXP_MAX]: exp(r) by Horner
 * after vexp_reduce, n in *ni: float64 Taylor to degree EXP_DEG; float32 a degree-6
 * minimax polynomial of the relative error on |r| <= ln2/2 (1.9e-9, 0.03 ulp: one FMA
 * fewer than Taylor's degree 7, as accurate once rounded), fitted by Lawson's algorithm,
 * exp(0) = 1 kept exact. */
#if !FL_DOUBLE
static const float N_(exp_poly)[7] = {1.0f, 1.0f, 0.49999991059303284f, 0.16666419804096222f,
                                      0.04166814684867859f, 0.00837488379329443f,
                                      0.0013841355685144663f};
#endif
FL_INL V N_(vexp_core)(V xs, VI *ni) {
    V r = N_(vexp_reduce)(xs, ni);
#if FL_DOUBLE
    V p = N_(vset1)((T)fl_inv_fact[EXP_DEG]);
    for (int d = EXP_DEG - 1; d >= 0; d--) p = p * r + (T)fl_inv_fact[d];
#else
    V p = N_(vset1)(N_(exp_poly)[6]);
    for (int d = 5; d >= 0; d--) p = p * r + N_(exp_poly)[d];
#endif
    return p;
}

/* exp(x) = 2^n exp(r), for every x. A vector whose lanes all lie in [X_EXP_MIN, exp_plain]
 * (the usual case) needs none of the clamps and special cases below, and skips them: the
 * same bits for less work (BCE with logits, when it used vexp: 1.24 -> 0.99 ns an
 * element, one AVX-512 core). */
FL_INL V N_(vexp)(V x) {
    if (__builtin_expect(!N_(vany)(~((x >= (T)X_EXP_MIN) & (x <= N_(exp_plain)))), 1)) {
        VI ni;
        const V p = N_(vexp_core)(x, &ni);
        return (V)((VI)p + (ni << MANT_BITS));
    }
    V xs = N_(vsel)(x < (T)X_EXP_MIN, N_(vset1)((T)X_EXP_MIN), x);
    xs = N_(vsel)(xs > (T)X_EXP_MAX, N_(vset1)((T)X_EXP_MAX), xs);
    VI ni;
    V p = N_(vexp_core)(xs, &ni);
    /* n = EXP_BIAS + 1 (x near the overflow threshold): 2^n is not representable, so
     * scale by 2^(n-1) and double afterwards. (big lanes are -1, so ni + big = n - 1) */
    VI big = ni > (TI)EXP_BIAS;
    V res = (V)((VI)p + ((ni + big) << MANT_BITS));
    res = N_(vsel)(big, res * (T)2.0, res);
    res = N_(vsel)(x < (T)X_EXP_MIN, N_(vset1)((T)0.0), res);
    res = N_(vsel)(x > (T)X_EXP_MAX, N_(vset1)((T)INFINITY), res);
    return N_(vsel)(x != x, x, res);
}

/* exp(x) for x <= 0 and not NaN (-inf allowed), the softmax case x - max(row):
 * vexp without the overflow and NaN lanes. Lanes below X_EXP_MIN are zeroed at the end,
 * so they skip vexp's clamp (their reduction may be NaN or wrap: discarded).
 * float32 at AVX-512 (16 lanes: one vpermps reads a 16-entry table): x = (16 n + j) ln2/16
 * + r, |r| <= ln2/32, exp(x) = 2^n 2^(j/16) (1 + q(r)), q(r) = r + c2 r^2 + c3 r^3 (relative
 * error 1.6e-9, 0.01 ulp; fitted by Lawson's algorithm), the table entry rounded (<= 0.45 ulp),
 * one rounding at the end: 7 multiply-adds where the degree-6 form takes 9, and the softmax
 * rows' loss-only passes are bound by exp (issue #14). fl_exp2_16 holds the bits of 2^(j/16)
 * less j << 19, so that adding the low bits of the shifted k = 16 n + j, shifted left by 19,
 * gives the bits of 2^n 2^(j/16) (n >= -126 above X_EXP_MIN: a normal number). */
FL_INL V N_(vexp_le0)(V x) {
    const VI under = x < (T)X_EXP_MIN;
#if FL_X86_DISPATCH && FL_VBYTES == 64 && !FL_DOUBLE
    const V kf = x * 23.083120654223414f + N_(exp_shifter);    /* 16 / ln2 */
    const V k = kf - N_(exp_shifter);
    const V r = (x - k * (N_(ln2_hi) / 16)) - k * (N_(ln2_lo) / 16);
    const V q = r + r * r * (0.50001615285873413f + r * 0.16666720807552338f);
    /* unsigned lanes: the shift drops kf's high bits, and discarded lanes may wrap */
    const V t = (V)((N_(VUI))_mm512_permutexvar_ps((__m512i)kf, _mm512_loadu_ps((const float *)fl_exp2_16)) +
                    ((N_(VUI))kf << 19));
    const V res = t + t * q;
#elif FL_X86_DISPATCH && FL_VBYTES == 32 && !FL_DOUBLE
    /* AVX2: x = (k/8) ln2 + r, |r| <= ln2/16, exp(x) = 2^(k>>3) 2^((k&7)/8) (1 + q), q the
     * Taylor polynomial of expm1 to degree 4 (truncation below 2^-29); the table replaces
     * two of Horner's six dependent FMAs (vector_math: 0.34 -> 0.29 ns an element). */
    const V kf = x * 11.541560327111707f + N_(exp_shifter);     /* 8 / ln2 */
    const V k = kf - N_(exp_shifter);
    const V r = (x - k * (N_(ln2_hi) / 8)) - k * (N_(ln2_lo) / 8);
    const V q = r + r * r * ((0.5f + r * (1.0f / 6)) + (r * r) * (1.0f / 24));
    /* unsigned lanes: the shift drops kf's high bits, and discarded lanes may wrap */
    const V t = (V)((N_(VUI))_mm256_permutevar8x32_ps(_mm256_loadu_ps((const float *)fl_exp2_8), (__m256i)kf) +
                    ((N_(VUI))kf << 20));
    const V res = t + t * q;
#else
    VI ni;
    V p = N_(vexp_core)(x, &ni);
    /* unsigned: the discarded lanes' exponent may wrap */
    V res = (V)((N_(VUI))p + ((N_(VUI))ni << MANT_BITS));
#endif
    return (V)(~under & (VI)res);
}

/* exp(x) for x <= 0 or NaN, NaN in, NaN out: vexp_le0, whose AVX-512 float32 form carries
 * a NaN through (its reduced argument is NaN); the other forms add the reduced exponent
 * to the result's bits, which may turn a NaN into a number, and take a select. */
FL_INL V N_(vexp_le0_nan)(V x) {
#if FL_X86_DISPATCH && FL_VBYTES == 64 && !FL_DOUBLE
    return N_(vexp_le0)(x);
#else
    return N_(vsel)(x != x, x, N_(vexp_le0)(x));
#endif
}

/* expm1(z) for z <= 1 (NaN in, NaN out): z = n ln2 + r with |r| <= ln2/2 and
 * expm1(z) = 2^n expm1(r) + (2^n - 1). For |z| < ln2/2, n = 0 and the result is
 * the polynomial for expm1(r) itself, so tiny z keeps its relative accuracy;
 * below log(smallest normal) the result is -1 (correctly rounded). */
FL_INL V N_(vexpm1_le1)(V z) {
    V zs = N_(vsel)(z < (T)X_EXP_MIN, N_(vset1)((T)X_EXP_MIN), z);
    VI ni;                                          /* n in [-1022, 1] (f64), [-126, 1] (f32) */
    V r = N_(vexp_reduce)(zs, &ni);
    /* expm1(r) = r + r^2 p(r), p = sum_{d=2..EXP_DEG} r^(d-2) / d!: the truncation
     * error r^EXP_DEG / (EXP_DEG+1)! relative to r is below half an ulp. */
    V p = N_(vset1)((T)fl_inv_fact[EXP_DEG]);
    for (int d = EXP_DEG - 1; d >= 2; d--) p = p * r + (T)fl_inv_fact[d];
    V em = r + r * r * p;
    V two_n = (V)((VI)N_(vset1)((T)1.0) + (ni << MANT_BITS));
    /* below X_EXP_MIN this is -1 + 2^-126 (f32) or -1 + 2^-1022 (f64), which rounds to
     * -1; a NaN z goes through every step as NaN */
    return two_n * em + (two_n - (T)1.0);
}

/* x = m 2^ef exactly, m in [OFF, 2 OFF), OFF = 0.6992, for every finite x > 0: integer
 * operations alone (x's bits less OFF's have e in their exponent field; m is x less e in
 * its exponent), subnormals scaled up first unless `normal` (a constant: the caller knows
 * every lane positive, normal and finite). Other lanes get values the callers replace.
 * vlog_core's AVX-512 float32 table form takes its index from m. */
FL_INL V N_(vsplit)(V x, V *ef, int normal) {
#if FL_DOUBLE
    const TU off = 0x3fe6600000000000ULL;
#else
    const TU off = 0x3f330000u;
#endif
    const VI sub = normal ? (VI){0} : x < (T)SUBNORMAL_MIN;
    const N_(VUI) is = (N_(VUI))(normal ? x : N_(vsel)(sub, x * (T)SUBNORMAL_SCALE, x)), tmp = is - off;
    *ef = __builtin_convertvector(((VI)tmp >> MANT_BITS) - (sub & (TI)SUBNORMAL_LOG2), V);
    return (V)(is - (tmp & ((N_(VUI)){0} - ((TU)1 << MANT_BITS))));
}

/* q = sum_{k<n} y^k / (2k + 3), the tail of 2 atanh(s) = 2s + 2s s^2 q(s^2) (vlog_core's
 * atanh form, vlog1p_unit), by Horner's scheme (Estrin's, half as deep, measured no faster
 * in BCE and focal at AVX2). */
FL_INL V N_(vatanh_tail)(V y, const int n) {
    V q = N_(vset1)((T)(1.0 / (2 * n + 1)));
    for (int k = n - 1; k >= 1; k--) q = q * y + (T)(1.0 / (2 * k + 1));
    return q;
}

/* Whether every lane of x is positive, normal and finite (the usual case: vsplit's
 * `normal`): its bits less the smallest normal's below the span of normal numbers. */
FL_INL int N_(vall_normal)(V x) {
#if FL_DOUBLE
    const TU min_normal = 0x0010000000000000ULL, span = 0x7fe0000000000000ULL;
#else
    const TU min_normal = 0x00800000u, span = 0x7f000000u;
#endif
    return !N_(vany)((VI)~((N_(VUI))x - min_normal < span));
}

/* x = m 2^ef (vsplit), for x >= 0 or NaN, where x = 0, +inf and NaN give m = x and ef = 0:
 * a product of the m's and a sum of the ef's then give log of a product of x's as
 * log(prod m) + ln2 sum ef, one log for many elements (gaussian_nll_loss's sum of log
 * var); x near 1 keeps m near 1 and so log(prod m) small and accurate. */
FL_INL V N_(vfrexp1)(V x, V *ef) {
    if (__builtin_expect(N_(vall_normal)(x), 1)) return N_(vsplit)(x, ef, 1);
    const VI normal = (x > (T)0) & (x < (T)INFINITY);
    const V m = N_(vsplit)(x, ef, 0);
    *ef = (V)(normal & (VI)*ef);
    return N_(vsel)(normal, m, x);
}

#if FL_X86_DISPATCH && FL_VBYTES == 64 && !FL_DOUBLE
/* log(m 2^ef) for vsplit's m (positive normal finite x; other lanes: garbage) at AVX-512
 * float32, by the table fl_log_invc: the 4 bits of m - OFF below its exponent field pick
 * the interval, log = ef ln2 + log c + log1p(r), r = m invc - 1 (one FMA, exact for the
 * interval holding 1; |r| < 0.03), log1p(r) to degree 5 (truncation below 2^-27 of r). No
 * division: half the time of the atanh form, <= 1.6 ulp (tested). */
FL_INL V N_(vlog_core)(V m, V ef) {
    const __m512i idx = (__m512i)(((N_(VUI))m - 0x3f330000u) >> 19);   /* vpermps: low 4 bits */
    const V invc = (V)_mm512_permutexvar_ps(idx, _mm512_loadu_ps(fl_log_invc));
    const V lch = (V)_mm512_permutexvar_ps(idx, _mm512_loadu_ps(fl_log_logc_hi));
    const V lcl = (V)_mm512_permutexvar_ps(idx, _mm512_loadu_ps(fl_log_logc_lo));
    const V r = (V)_mm512_fmsub_ps((__m512)m, (__m512)invc, _mm512_set1_ps(1.0f));
    const V p = ((r * 0.2f - 0.25f) * r + (T)(1.0 / 3.0)) * r - 0.5f;
    return (ef * N_(ln2_hi) + lch) + (r + (r * r * p + (ef * N_(ln2_lo) + lcl)));
}
#else
/* log(m 2^ef) = ef*ln2 + 2*atanh(s), s = (m-1)/(m+1), for vsplit's m (|s| <= 0.178). */
FL_INL V N_(vlog_core)(V m, V ef) {
    V s = (m - (T)1.0) / (m + (T)1.0);
    V s2 = s * s;
    V q = N_(vatanh_tail)(s2, LOG_TERMS - 1);
    V two_s = s + s;
    return ef * N_(ln2_hi) + (two_s + (two_s * s2 * q + ef * N_(ln2_lo)));
}
#endif

/* log(x) for every x: vlog_core of vsplit's m and e; 0 gives -inf, +inf +inf, x < 0 NaN,
 * NaN itself. A vector of positive normal finite lanes (the usual case) skips the
 * subnormal scaling and the selects: the same bits in about half the time (AVX2 float32,
 * with the split's compares and blends gone too). */
FL_INL V N_(vlog)(V x) {
    V ef;
    if (__builtin_expect(N_(vall_normal)(x), 1)) {
        const V m = N_(vsplit)(x, &ef, 1);
        return N_(vlog_core)(m, ef);
    }
    const V m = N_(vsplit)(x, &ef, 0);
    V res = N_(vlog_core)(m, ef);
    res = N_(vsel)(x == (T)0.0, N_(vset1)(-(T)INFINITY), res);
    res = N_(vsel)(x == (T)INFINITY, x, res);
    res = N_(vsel)(x < (T)0.0, N_(vset1)((T)NAN), res);
    return N_(vsel)(x != x, x, res);
}

/* log1p(x) = log(u) + (x - (u - 1)) / u with u = 1 + x rounded: the second term
 * restores what rounding 1 + x lost (Goldberg's trick). */
FL_INL V N_(vlog1p)(V x) {
    V u = x + (T)1.0;
    V corr = (x - (u - (T)1.0)) / u;
    V res = N_(vlog)(u) + corr;
    res = N_(vsel)(u == (T)1.0, x, res);              /* |x| below half an ulp of 1: log1p(x) = x */
    res = N_(vsel)(u == (T)0.0, N_(vset1)(-(T)INFINITY), res);   /* x = -1 */
    res = N_(vsel)(x == (T)INFINITY, x, res);         /* corr would be NaN */
    return res;
}

/* log1p(x) for x in [0, 1] (softplus and log-cosh feed it exp(-|z|)): 2 atanh(s) with
 * s = x / (2 + x) <= 1/3, one division and no exponent handling; <= 2 ulp (tested).
 * NaN propagates. */
#if FL_DOUBLE
#define LOG1P_UNIT_TERMS 15   /* (1/9)^16 / 33 < 2^-53 */
#else
#define LOG1P_UNIT_TERMS 7    /* (1/9)^8 / 17 < 2^-24 */
#endif
FL_INL V N_(vlog1p_unit)(V x) {
    V s = x / (x + (T)2.0);
    V s2 = s * s;
    V q = N_(vatanh_tail)(s2, LOG1P_UNIT_TERMS);
    V two_s = s + s;
    return two_s + two_s * s2 * q;
}
#undef LOG1P_UNIT_TERMS

/* max(a, b) for lanes without NaN (a NaN lane gives b): one maxps, where vsel's bit
 * select takes three instructions. */
FL_INL V N_(vmax_plain)(V a, V b) {
#if FL_X86_DISPATCH && FL_VBYTES == 64 && FL_DOUBLE
    return (V)_mm512_max_pd((__m512d)a, (__m512d)b);
#elif FL_X86_DISPATCH && FL_VBYTES == 64
    return (V)_mm512_max_ps((__m512)a, (__m512)b);
#elif FL_X86_DISPATCH && FL_VBYTES == 32 && FL_DOUBLE
    return (V)_mm256_max_pd((__m256d)a, (__m256d)b);
#elif FL_X86_DISPATCH && FL_VBYTES == 32
    return (V)_mm256_max_ps((__m256)a, (__m256)b);
#elif FL_X86_DISPATCH && FL_DOUBLE
    return (V)_mm_max_pd((__m128d)a, (__m128d)b);
#elif FL_X86_DISPATCH
    return (V)_mm_max_ps((__m128)a, (__m128)b);
#else
    return N_(vsel)(a > b, a, b);
#endif
}

/* Rows read from their source: T itself (kind FL_NATIVE), or, in float32 where fl_half.h
 * is included, float16 / bfloat16 bits (kind FL_FLOAT16 / FL_BFLOAT16) converted exactly
 * in registers, as fl_half_to_float does (no scratch round trip). kind is a constant at
 * every call site, so each caller compiles to one of the three loads. */
#if defined(FL_HALF_H) && !FL_DOUBLE
typedef uint16_t N_(VH) __attribute__((vector_size(FL_VBYTES / 2), aligned(2), may_alias));
FL_INL V N_(vload_half)(int kind, const uint16_t *p) {
    const VI u = __builtin_convertvector(*(const N_(VH) *)p, VI);
    if (kind == FL_BFLOAT16) return (V)(u << 16);
#if FL_X86_DISPATCH && FL_VBYTES == 64
    (void)u;
    return (V)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
#else
    /* fl_h2f_one on W lanes (no F16C at these levels: it is not implied by them) */
    const VI a = u & 0x7fff, e = a >> 10, sign = (u & 0x8000) << 16;
    VI bits = (a << 13) + (112 << 23);                   /* rebias 15 -> 127 */
    bits += (e == 31) & (112 << 23);                     /* inf, NaN: exponent all ones */
    const V sub = __builtin_convertvector(a, V) * 0x1p-24f;   /* zero, subnormal: exact */
    return (V)((VI)N_(vsel)(e == 0, sub, (V)bits) | sign);
#endif
}
#endif
FL_INL T N_(src_one)(const void *x, int kind, int64_t k) {
#if defined(FL_HALF_H) && !FL_DOUBLE
    if (kind == FL_BFLOAT16) return fl_u2f((uint32_t)((const uint16_t *)x)[k] << 16);
    if (kind == FL_FLOAT16) return fl_h2f_one(((const uint16_t *)x)[k]);
#endif
    (void)kind;
    return ((const T *)x)[k];
}
/* W elements from element k of the source; with n < W, the first n and then `pad`. */
FL_INL V N_(vload_src)(const void *x, int kind, int64_t k, int64_t n, T pad) {
    if (n < W && kind == FL_NATIVE) return N_(vload_part)((const T *)x + k, n, pad);
    if (n < W) {
        T buf[W];
        for (int j = 0; j < W; j++) buf[j] = j < n ? N_(src_one)(x, kind, k + j) : pad;
        return N_(vload)(buf);
    }
#if defined(FL_HALF_H) && !FL_DOUBLE
    if (kind != FL_NATIVE) return N_(vload_half)(kind, (const uint16_t *)x + k);
#endif
    return N_(vload)((const T *)x + k);
}

/* The lane-wise max of a group: FL_GROUP vectors from element k, n elements left in the
 * row (lanes past them read as -inf; NaN lanes: undefined; a row's last, partial group
 * reads only the vectors that hold its elements: a short row paid for FL_GROUP). The
 * group's exponentials then read it again from L1 (cheaper than holding it in too few
 * registers): a row of T from the row itself, a half row from `keep` (FL_GROUP W
 * elements, padded with -inf), where its converted values are stored here, so each is
 * converted once. */
FL_INL V N_(group_max)(const void *x, int kind, int64_t k, int64_t n, T *keep) {
    V m = N_(vset1)(-(T)INFINITY);
    for (int i = 0; i < FL_GROUP && i * W < n; i++) {
        const V v = N_(vload_src)(x, kind, k + i * W, n - i * W, -(T)INFINITY);
        if (kind != FL_NATIVE) N_(vstore)(keep + i * W, v);
        m = N_(vmax_plain)(v, m);
    }
    return m;
}
/* Vector i of a group read by group_max. */
FL_INL V N_(group_vec)(const void *x, int kind, int64_t k, int64_t n, const T *keep, int i) {
    return kind == FL_NATIVE ? N_(vload_src)(x, kind, k + i * W, n - i * W, -(T)INFINITY)
                             : N_(vload)(keep + i * W);
}
/* The largest lane of a group max (NaN lanes ignored). */
FL_INL T N_(vhmax)(V v) {
    T m = -(T)INFINITY;
    for (int j = 0; j < W; j++) m = v[j] > m ? v[j] : m;
    return m;
}
/* np.argmax of a row whose maximum v is known: the first k < n with x[k] == v (v NaN:
 * the first NaN; 0 when none, e.g. an empty row). Four vectors are compared per step, so
 * the horizontal test runs once per 4 W elements. */
__attribute__((unused)) static int64_t N_(row_find)(const T *x, int64_t n, T v) {
    const int nan = v != v;
    int64_t k = 0;
    for (; k + 4 * W <= n; k += 4 * W) {
        VI hit = {0};
        for (int i = 0; i < 4; i++) {
            const V xk = N_(vload)(x + k + i * W);
            hit |= nan ? xk != xk : xk == v;
        }
        if (N_(vany)(hit)) break;
    }
    for (; k < n; k++)
        if (nan ? x[k] != x[k] : x[k] == v) return k;
    return 0;
}
/* The offset in the group (as group_max's) of its first element equal to v (v in it). */
FL_INL int64_t N_(group_find)(const void *x, int kind, int64_t k, int64_t n, T v) {
    const int64_t m = n < FL_GROUP * W ? n : FL_GROUP * W;
    if (kind == FL_NATIVE) return N_(row_find)((const T *)x + k, m, v);
    for (int64_t j = 0; j < m; j++)
        if (N_(src_one)(x, kind, k + j) == v) return j;
    return 0;
}
/* A NaN in the group. */
FL_INL int N_(group_nan)(const void *x, int kind, int64_t k, int64_t n) {
    VI nan = {0};
    for (int i = 0; i < FL_GROUP && i * W < n; i++) {
        const V v = N_(vload_src)(x, kind, k + i * W, n - i * W, 0);
        nan |= v != v;
    }
    return N_(vany)(nan);
}

/* Store of a full vector to a FL_VBYTES-aligned address that bypasses the caches
 * (x86 streaming store): an output far larger than the caches is written without first
 * being read in. Elsewhere a plain store. The caller fences (vstream_fence). */
FL_INL void N_(vstream)(T *p, V v) {
#if FL_X86_DISPATCH && FL_VBYTES == 64 && FL_DOUBLE
    _mm512_stream_pd(p, (__m512d)v);
#elif FL_X86_DISPATCH && FL_VBYTES == 64
    _mm512_stream_ps(p, (__m512)v);
#elif FL_X86_DISPATCH && FL_VBYTES == 32 && FL_DOUBLE
    _mm256_stream_pd(p, (__m256d)v);
#elif FL_X86_DISPATCH && FL_VBYTES == 32
    _mm256_stream_ps(p, (__m256)v);
#elif FL_X86_DISPATCH && FL_VBYTES == 16 && FL_DOUBLE
    _mm_stream_pd(p, (__m128d)v);
#elif FL_X86_DISPATCH && FL_VBYTES == 16
    _mm_stream_ps(p, (__m128)v);
#else
    N_(vstore)(p, v);
#endif
}

/* Orders this thread's streaming stores before whatever follows (another thread's reads). */
FL_INL void N_(vstream_fence)(int stream) {
#if FL_X86_DISPATCH
    if (stream) _mm_sfence();
#else
    (void)stream;
#endif
}

/* The streaming writer of an elementwise kernel's gradient g (one block of it): whole
 * vectors go out with streaming stores to FL_VBYTES-aligned addresses, whatever g's own
 * alignment, so the kernel's vector grid (and its sums) stays where it is. With g `a`
 * elements short of an aligned address (0 < a < W), the aligned vector ending at element
 * k + a is the last vector's lanes [a, W) and the new one's [0, a) (one two-source
 * shuffle: GCC's __builtin_shuffle with a run-time index); the block's first a and last
 * W - a elements are stored plainly. At SSE2, built by Clang, or where g is not aligned
 * to its element, a misaligned g keeps plain stores (sw_begin returns NULL). */
#ifndef FL_SW_SHIFT
#if defined(__GNUC__) && !defined(__clang__)
#define FL_SW_SHIFT(a, b, idx) __builtin_shuffle(a, b, idx)
#else
#define FL_SW_SHIFT(a, b, idx) (a)      /* never taken: sw_begin refuses a misaligned g */
#endif
#endif
typedef struct { V prev; VI idx; int64_t a; } N_(swriter);
FL_INL N_(swriter) *N_(sw_begin)(N_(swriter) *sw, int stream, const T *g) {
    if (!stream || !g || (uintptr_t)g % sizeof(T)) return NULL;
    const int64_t a = (int64_t)(((FL_VBYTES - (uintptr_t)g % FL_VBYTES) % FL_VBYTES) / sizeof(T));
#if defined(__GNUC__) && !defined(__clang__)
    if (a && FL_VBYTES < 32) return NULL;
#else
    if (a) return NULL;
#endif
    sw->a = a;
    for (int j = 0; j < W; j++) sw->idx[j] = (TI)(a + j);
    return sw;
}
/* The full vector d of elements [k, k + W) (k a multiple of W, in order). */
FL_INL void N_(sw_put)(N_(swriter) *sw, T *g, int64_t k, V d) {
    if (!sw->a) {
        N_(vstream)(g + k, d);
    } else if (k == 0) {
        N_(vstore_part)(g, d, sw->a);
    } else {
        N_(vstream)(g + k - W + sw->a, FL_SW_SHIFT(sw->prev, d, sw->idx));
    }
    sw->prev = d;
}
/* After the block's last vector: its elements not yet stored (the previous vector's lanes
 * [a, W), then the partial vector d of nk < W elements at k, if nk). */
FL_INL void N_(sw_end)(N_(swriter) *sw, T *g, int64_t k, V d, int64_t nk) {
    if (sw->a && k > 0) {
        T tmp[W];
        N_(vstore)(tmp, sw->prev);
        memcpy(g + k - W + sw->a, tmp + sw->a, (size_t)(W - sw->a) * sizeof(T));
    }
    if (nk) N_(vstore_part)(g + k, d, nk);
}
/* The vector d at offset k of g (k a multiple of W, in order), of min(nk, W) elements:
 * through sw, or plainly where sw is NULL. A partial vector (nk < W) ends g. */
FL_INL void N_(sw_store)(N_(swriter) *sw, T *g, int64_t k, V d, int64_t nk) {
    if (!sw) N_(vstore_n)(g + k, d, nk);
    else if (nk >= W) N_(sw_put)(sw, g, k, d);
    else N_(sw_end)(sw, g, k, d, nk);
}
/* After g's last element (n of them): sw's last elements, unless a partial vector ended g. */
FL_INL void N_(sw_finish)(N_(swriter) *sw, T *g, int64_t n) {
    if (sw && n % W == 0) N_(sw_end)(sw, g, n, N_(vset1)(0), 0);
}
/* Writers sw[i] for a kernel's gradients g[i], i < ng (NULL entries: not written): sw when
 * every one of them streams (each at its own alignment), else NULL: all stored plainly. */
FL_INL N_(swriter) *N_(sw_begin_all)(N_(swriter) *sw, int stream, T *const *g, int ng) {
    for (int i = 0; i < ng; i++)
        if (g[i] && !N_(sw_begin)(&sw[i], stream, g[i])) return NULL;
    return stream ? sw : NULL;
}
/* sw_finish for each gradient of sw_begin_all's (sw NULL: nothing to do). */
FL_INL void N_(sw_finish_all)(N_(swriter) *sw, T *const *g, int ng, int64_t n) {
    for (int i = 0; sw && i < ng; i++)
        if (g[i]) N_(sw_finish)(&sw[i], g[i], n);
}

/* The end of one vector of nk <= W elements of an elementwise loss at offset k, loss l and
 * gradient d (already times gscale): m (or NULL) is the where= mask, one byte per element;
 * where it is 0, l and d are selected to 0 (after the scale: an inf scale, nothing kept,
 * gives 0 there too, and so does a NaN or inf input). Stores l (lout) and d (g) where
 * asked, d's whole vectors through the streaming writer sw if there is one (a partial
 * vector ends the block: sw_end); returns l with the lanes past nk zeroed, for the sum. */
FL_INL V N_(masked_store)(V l, V d, const uint8_t *m, T *lout, T *g, int64_t k, int64_t nk,
                          N_(swriter) *sw) {
    if (m) {
        const VI keep = N_(vkeep_bytes)(m, k, nk);
        l = N_(vsel)(keep, l, N_(vset1)(0));
        d = N_(vsel)(keep, d, N_(vset1)(0));
    }
    if (lout) N_(vstore_n)(lout + k, l, nk);
    if (g) N_(sw_store)(sw, g, k, d, nk);
    return N_(vkeep_first)(l, nk);
}

/* Row helpers shared by the families. */

/* The blocked row paths' helpers (fl_classification_impl.h, above xent_label_mid; entropy_mid):
 * rows of a block of nr <= W rows, lane j for row j. */
/* Lane j: the max of v[j]'s lanes (vtranspose: v is overwritten); NaN lanes as vmax_plain. */
FL_INL V N_(vrows_max)(V *v) {
    N_(vtranspose)(v);
    V m = v[0];
    for (int c = 1; c < W; c++) m = N_(vmax_plain)(m, v[c]);
    return m;
}
/* Lane j: the sum of v[j]'s lanes, in one order for every lane (v is overwritten). */
FL_INL V N_(vrows_sum)(V *v) {
    N_(vtranspose)(v);
    V s = v[0];
    for (int c = 1; c < W; c++) s += v[c];
    return s;
}

/* The transposed small-row paths (rows of at most FL_SMALL_C classes, float64
 * FL_SMALL_C_F64: cross-entropy with labels, KL, JS): xt[k] gets class k of a block of
 * nr <= W rows of C classes at xb (lane j: row j; lanes past nr: 0). The block is read as
 * whole vectors and transposed in registers tile by tile (W classes of W rows); a vector
 * that runs past a row's end holds the next row's head, in lanes of classes >= C (unused). */
FL_INL void N_(block_load_t)(const T *xb, int64_t nr, int64_t C, V *xt) {
    const int64_t ne = nr * C;
    for (int64_t t = 0; t * W < C; t++) {
        V v[W];
        for (int j = 0; j < W; j++) {
            const int64_t o = j * C + t * W;
            v[j] = o + W <= ne ? N_(vload)(xb + o)
                               : o < ne ? N_(vload_first)(xb + o, ne - o) : N_(vset1)(0);
        }
        N_(vtranspose)(v);
        for (int c = 0; c < W; c++) xt[t * W + c] = v[c];
    }
}
/* Rows of C classes take the transposed small-row path at this dtype. */
FL_INL int N_(small_rows)(int64_t C) { return C <= (FL_DOUBLE ? FL_SMALL_C_F64 : FL_SMALL_C); }
/* gt[k], k < C, back into the nr rows at gb, as block_load_t read them: a store that runs
 * past a row's end writes 0 over the next row's head, which that row's own store puts
 * right later (tiles last to first, rows in order), and the block's last row stores only
 * its own part. Only the block is written: gb may be the block that was read. */
FL_INL void N_(block_store_t)(T *gb, int64_t nr, int64_t C, const V *gt) {
    const int64_t ne = nr * C;
    for (int64_t t = (C + W - 1) / W - 1; t >= 0; t--) {
        V v[W];
        for (int c = 0; c < W; c++) v[c] = t * W + c < C ? gt[t * W + c] : N_(vset1)(0);
        N_(vtranspose)(v);
        for (int j = 0; j < nr; j++) {
            const int64_t o = j * C + t * W;
            if (o + W <= ne) N_(vstore)(gb + o, v[j]);
            else N_(vstore_first)(gb + o, v[j], C - t * W);
        }
    }
}
/* np.argmax's rule (the first maximum, or the first NaN) across W rows at once (a lane per
 * row): lanes where v, class c, beats the running max m take index c. Class indices fit
 * TI (C < 2^31 for float32). */
FL_INL VI N_(vamax_step)(VI am, V m, V v, int64_t c) {
    const VI up = (v > m) | ((v != v) & (m == m));
    return (up & ((VI){0} + (TI)c)) | (~up & am);
}

/* Each row's max (lanes past nr: -inf), and in *fin the lanes whose row holds no NaN and
 * has a finite max (the sum of its elements is NaN iff it holds a NaN, or +inf and -inf). */
FL_INL V N_(block_max)(const T *xb, int64_t nr, int64_t C, VI *fin) {
    V mv[W], zv[W];
    for (int j = 0; j < W; j++) {
        V mx = N_(vset1)(-(T)INFINITY), z = N_(vset1)(0);
        for (int64_t k = 0; j < nr && k < C; k += W) {
            const V v = N_(vload_n)(xb + j * C + k, C - k, -(T)INFINITY);
            mx = N_(vmax_plain)(mx, v);
            z += v;
        }
        mv[j] = mx;
        zv[j] = z;
    }
    const V m = N_(vrows_max)(mv), z = N_(vrows_sum)(zv);
    *fin = (m > -(T)INFINITY) & (m < (T)INFINITY) & (z == z);
    return m;
}

/* Max of n elements; NaN anywhere makes it NaN. Four plain max chains and two sums
 * (NaN iff the elements hold a NaN, or +inf and -inf, as block_max's):
 * vmax_nan's one dependent chain of compare, compare, or and blend a vector took 16% of
 * cross-entropy 2048x32000's gradient samples (perf, AVX2), two thirds of its exponential
 * pass. A NaN sum takes the NaN-sticky loop alone, so such rows keep its result. */
__attribute__((unused)) static T N_(row_max)(const T *x, int64_t n) {
    V m0 = N_(vset1)(-(T)INFINITY), m1 = m0, m2 = m0, m3 = m0;
    V z0 = N_(vset1)(0), z1 = z0;
    int64_t k = 0;
    for (; k + 4 * W <= n; k += 4 * W) {
        const V a = N_(vload)(x + k), b = N_(vload)(x + k + W), c = N_(vload)(x + k + 2 * W),
                d = N_(vload)(x + k + 3 * W);
        m0 = N_(vmax_plain)(m0, a);
        m1 = N_(vmax_plain)(m1, b);
        m2 = N_(vmax_plain)(m2, c);
        m3 = N_(vmax_plain)(m3, d);
        z0 += a + b;
        z1 += c + d;
    }
    V vm = N_(vmax_plain)(N_(vmax_plain)(m0, m1), N_(vmax_plain)(m2, m3));
    if (__builtin_expect(N_(vany)((z0 + z1) != (z0 + z1)), 0)) {
        vm = N_(vset1)(-(T)INFINITY);
        k = 0;
    }
    for (; k + W <= n; k += W) vm = N_(vmax_nan)(vm, N_(vload)(x + k));
    if (k < n) vm = N_(vmax_nan)(vm, N_(vload_part)(x + k, n - k, -(T)INFINITY));
    return N_(vhmax_nan)(vm);
}

/* Dot product sum_k x_k y_k of n elements, y NULL meaning all ones (the plain sum, or a
 * weighted sum with weights that may be absent); row_dot(x, x, n) is the squared norm.
 * FL_SUM_BLOCK blocks into a float64 total. */
__attribute__((unused)) static double N_(row_dot)(const T *x, const T *y, int64_t n) {
    double s = 0.0;
    for (int64_t b = 0; b < n; b += FL_SUM_BLOCK) {
        int64_t end = b + FL_SUM_BLOCK < n ? b + FL_SUM_BLOCK : n;
        V acc = N_(vset1)(0);
        int64_t k = b;
        for (; k + W <= end; k += W)
            acc += y ? N_(vload)(x + k) * N_(vload)(y + k) : N_(vload)(x + k);
        if (k < end)
            acc += y ? N_(vload_part)(x + k, end - k, 0) * N_(vload_part)(y + k, end - k, 0)
                     : N_(vload_part)(x + k, end - k, 0);
        s += N_(vhsum)(acc);
    }
    return s;
}

/* Elementwise entry points, used by the accuracy tests (unused in most modules); pad: the
 * missing lanes of the last partial vector (a value inside f's domain). */
#define FL_ARRAY_FN(name, f, pad)                                                          \
    __attribute__((unused)) static void N_(name)(const T *x, T *y, int64_t n) {            \
        int64_t i = 0;                                                                     \
        for (; i + W <= n; i += W) N_(vstore)(y + i, N_(f)(N_(vload)(x + i)));              \
        if (i < n) N_(vstore_part)(y + i, N_(f)(N_(vload_part)(x + i, n - i, pad)), n - i); \
    }
FL_ARRAY_FN(exp_array, vexp, 0)
FL_ARRAY_FN(exp_le0_array, vexp_le0, 0)
FL_ARRAY_FN(log_array, vlog, 1)
FL_ARRAY_FN(log1p_unit_array, vlog1p_unit, 0)
FL_ARRAY_FN(log1p_array, vlog1p, 0)
#undef FL_ARRAY_FN

/* Float64 partial sums kept as vectors (the divergence and Gaussian bodies): a
 * block of FL_SUM_BLOCK elements is summed per lane in the row dtype, then widened
 * and added lane-wise into a float64 vector (a few instructions, not a serial chain
 * of W scalar adds); dv_dsum adds the lanes in a fixed order at the end. */
typedef double N_(VD) __attribute__((vector_size(W * 8)));
#define VD N_(VD)
FL_INL VD N_(dv_widen_add)(VD acc, V v) { return acc + __builtin_convertvector(v, VD); }
FL_INL double N_(dv_dsum)(VD v) {
    double s = 0.0;
    for (int j = 0; j < (int)(sizeof v / sizeof(double)); j++) s += v[j];
    return s;
}
FL_INL VD N_(dv_dzero)(void) { VD z = {0}; return z; }

/* A float64 sum or product carried from one loop iteration to the next, as two halves of
 * W / 2 lanes (float32; float64 keeps one VD in lo): a VD of float32's W lanes is twice
 * the widest register, and GCC kept such a loop-carried VD in memory (AVX2: stores, scalar
 * reloads and inserts an iteration; gaussian_nll_loss took 3 ns an element in cache). */
#if FL_DOUBLE
typedef VD N_(VDH);
#else
typedef double N_(VDH) __attribute__((vector_size(W * 4)));
typedef float N_(VFH) __attribute__((vector_size(W * 2)));
#endif
/* v's lanes widened to float64 as two halves, *lo the first W / 2 (float64: *lo = v, *hi 0). */
FL_INL void N_(dv_widen_halves)(V v, N_(VDH) *lo, N_(VDH) *hi) {
#if FL_DOUBLE
    *lo = v;
    *hi = v * 0;
#else
    N_(VFH) l, h;
    memcpy(&l, &v, sizeof l);
    memcpy(&h, (const char *)&v + sizeof l, sizeof h);
    *lo = __builtin_convertvector(l, N_(VDH));
    *hi = __builtin_convertvector(h, N_(VDH));
#endif
}
/* The VD of lanes lo then hi. */
FL_INL VD N_(dv_join)(N_(VDH) lo, N_(VDH) hi) {
#if FL_DOUBLE
    (void)hi;
    return lo;
#else
    VD r;
    memcpy(&r, &lo, sizeof lo);
    memcpy((char *)&r + sizeof lo, &hi, sizeof hi);
    return r;
#endif
}
