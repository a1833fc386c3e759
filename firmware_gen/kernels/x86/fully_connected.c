/*
 * x86 AVX2 FULLY_CONNECTED int8: four units per pass over the input row.
 *
 * Every product is the reference's own, (w + filter_offset) * (x + input_offset), formed in
 * int16 lanes: both factors lie in [-255, 255] (offsets are negated int8 zero points), so
 * VPMOVSXBW + VPADDW is exact, and VPMADDWD sums two products of magnitude <= 65025 into an
 * int32 lane without overflow.  The int32 accumulation is therefore the reference's sum in
 * another order (integer addition: bit-identical).  The input row with its offset is widened
 * once per 16 elements and shared by four weight rows; the depth % 16 tail is scalar.  The
 * requantization is the reference's, through bf_opt_fc_requant (opt/bf_opt_util.h).
 *
 * Built without AVX2 (no -mavx2 and no target pragma in bf_x86_target.h) this file is the
 * reference kernel.  No scratch.  bf_fully_connected_f32 is the reference kernel.
 */
#include "bf_x86_target.h" /* first: it may select the instruction sets (a target pragma) */

#include "bf_kernels.h"

#define bf_fully_connected_s8 bf_ref_fully_connected_s8
#include "../ref/fully_connected.c"
#undef bf_fully_connected_s8

#include "../opt/bf_opt_util.h"

#if defined(__AVX2__)
#include <immintrin.h>

static inline int32_t bf_x86_fc_hsum(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* 16 int8 weights widened to int16 with the filter offset added. */
static inline __m256i bf_x86_fc_w16(const int8_t *w, __m256i fo) {
    return _mm256_add_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)w)), fo);
}

/* dot[r] = sum_d (w_r[d] + fo) (x[d] + io) for `rows` (1 or 4) consecutive units. */
static void bf_x86_fc_rows(const bf_fully_connected_s8_params *p, const int8_t *w, const int8_t *x,
                           int32_t rows, int32_t *dot) {
    const int32_t depth = p->depth, d16 = depth & ~15;
    const __m256i io = _mm256_set1_epi16((int16_t)p->input_offset);
    const __m256i fo = _mm256_set1_epi16((int16_t)p->filter_offset);
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int32_t d, r;
    if (rows == 4) {
        const int8_t *w1 = w + depth, *w2 = w1 + depth, *w3 = w2 + depth;
        for (d = 0; d < d16; d += 16) {
            const __m256i xv = _mm256_add_epi16(
                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(x + d))), io);
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(bf_x86_fc_w16(w + d, fo), xv));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(bf_x86_fc_w16(w1 + d, fo), xv));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(bf_x86_fc_w16(w2 + d, fo), xv));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(bf_x86_fc_w16(w3 + d, fo), xv));
        }
    } else {
        for (d = 0; d < d16; d += 16) {
            const __m256i xv = _mm256_add_epi16(
                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(x + d))), io);
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(bf_x86_fc_w16(w + d, fo), xv));
        }
    }
    dot[0] = bf_x86_fc_hsum(a0);
    dot[1] = bf_x86_fc_hsum(a1);
    dot[2] = bf_x86_fc_hsum(a2);
    dot[3] = bf_x86_fc_hsum(a3);
    for (r = 0; r < rows; ++r) {
        const int8_t *wr = w + (int64_t)r * depth;
        int32_t s = dot[r];
        for (d = d16; d < depth; ++d) {
            s += ((int32_t)wr[d] + p->filter_offset) * ((int32_t)x[d] + p->input_offset);
        }
        dot[r] = s;
    }
}

void bf_fully_connected_s8(const bf_fully_connected_s8_params *p, const int8_t *input,
                           const int8_t *weights, const int32_t *bias, int8_t *output,
                           void *scratch) {
    const int32_t depth = p->depth;
    int32_t b, u, r;
    (void)scratch;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = input + (int64_t)b * depth;
        int8_t *out = output + (int64_t)b * p->units;
        for (u = 0; u < p->units;) {
            /* four units at a time, the last units % 4 one by one */
            const int32_t rows = p->units - u >= 4 ? 4 : 1;
            int32_t dot[4];
            bf_x86_fc_rows(p, weights + (int64_t)u * depth, x, rows, dot);
            for (r = 0; r < rows; ++r) {
                int32_t acc = dot[r];
                if (bias != NULL) {
                    acc += bias[u + r];
                }
                out[u + r] = bf_opt_fc_requant(p, u + r, acc);
            }
            u += rows;
        }
    }
}

#else /* no AVX2: the reference kernel */

void bf_fully_connected_s8(const bf_fully_connected_s8_params *p, const int8_t *input,
                           const int8_t *weights, const int32_t *bias, int8_t *output,
                           void *scratch) {
    bf_ref_fully_connected_s8(p, input, weights, bias, output, scratch);
}

#endif
