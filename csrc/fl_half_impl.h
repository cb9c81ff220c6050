/* Template (no include guard): the block conversions of fl_half.h at one SIMD level,
 * FL_HLEVEL 0 (baseline: portable), 1 (AVX2 + F16C) or 2 (AVX-512F), named
 * fl_half_to_float_<FL_HSFX> and fl_float_to_half_<FL_HSFX>. The bfloat16 and tail
 * loops are plain C that GCC vectorises for the enclosing target. */

static void FL_PASTE(fl_half_to_float, FL_HSFX)(int kind, const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    if (kind == FL_BFLOAT16) {
        fl_bits32 *d = (fl_bits32 *)dst;
        for (; i < n; i++) d[i] = (uint32_t)src[i] << 16;
        return;
    }
#if FL_HLEVEL == 2
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
#elif FL_HLEVEL == 1
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < n; i++) dst[i] = fl_h2f_one(src[i]);
}

static void FL_PASTE(fl_float_to_half, FL_HSFX)(int kind, const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    if (kind == FL_BFLOAT16) {
        for (; i < n; i++) dst[i] = fl_f2bf_one(src[i]);
        return;
    }
#if FL_HLEVEL == 2
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), FL_RNE));
#elif FL_HLEVEL == 1
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), FL_RNE));
#endif
    for (; i < n; i++) dst[i] = fl_f2h_one(src[i]);
}

#undef FL_HSFX
#undef FL_HLEVEL
