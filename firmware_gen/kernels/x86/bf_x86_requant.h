/*
 * bf_x86_requant.h — AVX2 per-channel requantization of eight int32 accumulators (private to
 * the x86 variant), bit-identical with bf_opt_requant / ref's
 *     clamp(bf_mbqm(acc, multiplier[o], shift[o]) + output_offset, act_min, act_max).
 *
 * bf_mbqm = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc << left, m), right):
 *   - acc << left wraps (VPSLLVD), as bf_wrap_shl does;
 *   - SRDHM: the reference's truncating (ab + nudge) / 2^31 with nudge = 2^30 (ab >= 0) or
 *     1 - 2^30 (ab < 0) equals floor((ab + 2^30) / 2^31) in both cases (for ab < 0 the quotient
 *     is negative, and trunc(t / 2^31) = floor((t + 2^31 - 1) / 2^31)).  ab is formed exactly
 *     by VPMULDQ (even and odd lanes separately); the low 32 bits of the floor are bits 31..62
 *     of ab + 2^30, so a logical 64-bit shift suffices.  The one saturating case,
 *     INT32_MIN * INT32_MIN, is selected explicitly;
 *   - RDBPOT with per-lane exponents: mask, remainder, threshold as the reference (VPSRAVD);
 *   - + output_offset with int32 wrap, then the clamp.
 */
#ifndef BF_X86_REQUANT_H
#define BF_X86_REQUANT_H

#include <stdint.h>

#if defined(__AVX2__)
#include <immintrin.h>

static inline __m256i bf_x86_srdhm(__m256i a, __m256i b) {
    const __m256i half = _mm256_set1_epi64x((int64_t)1 << 30);
    const __m256i even = _mm256_srli_epi64(_mm256_add_epi64(_mm256_mul_epi32(a, b), half), 31);
    const __m256i odd = _mm256_srli_epi64(
        _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(a, 32), _mm256_srli_epi64(b, 32)), half), 31);
    const __m256i r = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
    const __m256i min = _mm256_set1_epi32(INT32_MIN);
    const __m256i sat = _mm256_and_si256(_mm256_cmpeq_epi32(a, min), _mm256_cmpeq_epi32(b, min));
    return _mm256_blendv_epi8(r, _mm256_set1_epi32(INT32_MAX), sat);
}

static inline __m256i bf_x86_rdbpot(__m256i x, __m256i e) {
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, e), one);
    const __m256i rem = _mm256_and_si256(x, mask);
    /* threshold = (mask >> 1) + (x < 0): the compare gives -1 where x < 0 */
    const __m256i thr = _mm256_sub_epi32(_mm256_srai_epi32(mask, 1),
                                         _mm256_cmpgt_epi32(_mm256_setzero_si256(), x));
    return _mm256_sub_epi32(_mm256_srav_epi32(x, e), _mm256_cmpgt_epi32(rem, thr));
}

/* Requantize acc (channels o … o+7) and store the eight int8 results at out. */
static inline void bf_x86_requant8(__m256i acc, const int32_t *multiplier, const int32_t *shift,
                                   int32_t output_offset, int32_t act_min, int32_t act_max,
                                   int8_t *out) {
    const __m256i s = _mm256_loadu_si256((const __m256i *)(const void *)shift);
    const __m256i m = _mm256_loadu_si256((const __m256i *)(const void *)multiplier);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i left = _mm256_max_epi32(s, zero);
    const __m256i right = _mm256_max_epi32(_mm256_sub_epi32(zero, s), zero);
    __m256i q = bf_x86_rdbpot(bf_x86_srdhm(_mm256_sllv_epi32(acc, left), m), right);
    __m128i b;
    q = _mm256_add_epi32(q, _mm256_set1_epi32(output_offset));
    q = _mm256_min_epi32(_mm256_max_epi32(q, _mm256_set1_epi32(act_min)), _mm256_set1_epi32(act_max));
    /* eight values in [-128, 127]: saturating packs are exact */
    q = _mm256_packs_epi32(q, q);
    q = _mm256_packs_epi16(q, q);
    b = _mm_unpacklo_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storel_epi64((__m128i *)(void *)out, b);
}

#endif /* __AVX2__ */
#endif /* BF_X86_REQUANT_H */
