/*
 * x86 AVX2 DEPTHWISE_CONV_2D int8 (depth multiplier 1): eight channels per vector.
 *
 * For each output position and each group of eight channels, every valid tap adds
 * w * (x + input_offset) in int32 lanes (VPMOVSXBD of the eight weights and inputs, VPADDD of
 * the offset, VPMULLD): the reference's products, summed in the same tap order, so the int32
 * accumulators are bit-identical.  Taps in the padding are skipped as the reference skips them
 * (the valid tap range is computed once per position).  The C % 8 channels are scalar.  Then
 * the reference's per-channel requantization, eight channels at a time by bf_x86_requant8
 * (bf_x86_requant.h, bit-identical with bf_opt_requant), the C % 8 tail by bf_opt_requant.
 *
 * Depth multiplier != 1 runs the reference code; built without AVX2 this file is the reference
 * kernel.  No scratch.  bf_depthwise_conv2d_f32 is the reference kernel.
 */
#include "bf_x86_target.h" /* first: it may select the instruction sets (a target pragma) */

#include "bf_kernels.h"

#define bf_depthwise_conv2d_s8 bf_ref_depthwise_conv2d_s8
#include "../ref/depthwise_conv.c"
#undef bf_depthwise_conv2d_s8

#include "../opt/bf_opt_util.h"
#include "bf_x86_requant.h"

#if defined(__AVX2__)
#include <immintrin.h>

static inline __m256i bf_x86_dw_load8(const int8_t *p) {
    return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(const void *)p));
}

void bf_depthwise_conv2d_s8(const bf_depthwise_conv2d_s8_params *p, const int8_t *input,
                            const int8_t *filter, const int32_t *bias, int8_t *output,
                            void *scratch) {
    const int32_t in_h = p->input.h, in_w = p->input.w, c = p->input.c;
    const int32_t f_h = p->filter.h, f_w = p->filter.w;
    const int32_t out_h = p->output.h, out_w = p->output.w;
    const int32_t c8 = c & ~7;
    const __m256i io = _mm256_set1_epi32(p->input_offset);
    int32_t b, oy, ox, ch, ky, kx;
    if (p->depth_multiplier != 1) {
        bf_ref_depthwise_conv2d_s8(p, input, filter, bias, output, scratch);
        return;
    }
    for (b = 0; b < p->output.n; ++b) {
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            int32_t ky0, ky1;
            bf_opt_tap_range(y0, p->dilation_h, f_h, in_h, &ky0, &ky1);
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                int8_t *out = output + (((int64_t)b * out_h + oy) * out_w + ox) * c;
                int32_t kx0, kx1;
                bf_opt_tap_range(x0, p->dilation_w, f_w, in_w, &kx0, &kx1);
                for (ch = 0; ch < c8; ch += 8) {
                    __m256i acc = _mm256_setzero_si256();
                    for (ky = ky0; ky < ky1; ++ky) {
                        const int32_t y = y0 + ky * p->dilation_h;
                        const int8_t *row = input + ((int64_t)b * in_h + y) * in_w * c + ch;
                        const int8_t *wrow = filter + (int64_t)ky * f_w * c + ch;
                        for (kx = kx0; kx < kx1; ++kx) {
                            const int32_t x = x0 + kx * p->dilation_w;
                            const __m256i xv = _mm256_add_epi32(bf_x86_dw_load8(row + (int64_t)x * c), io);
                            const __m256i wv = bf_x86_dw_load8(wrow + (int64_t)kx * c);
                            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(wv, xv));
                        }
                    }
                    if (bias != NULL) {
                        acc = _mm256_add_epi32(acc, _mm256_loadu_si256((const __m256i *)(const void *)(bias + ch)));
                    }
                    bf_x86_requant8(acc, p->multiplier + ch, p->shift + ch, p->output_offset, p->act_min,
                                    p->act_max, out + ch);
                }
                for (ch = c8; ch < c; ++ch) {
                    int32_t acc = 0;
                    for (ky = ky0; ky < ky1; ++ky) {
                        const int32_t y = y0 + ky * p->dilation_h;
                        for (kx = kx0; kx < kx1; ++kx) {
                            const int32_t x = x0 + kx * p->dilation_w;
                            acc += filter[((int64_t)ky * f_w + kx) * c + ch] *
                                   (input[(((int64_t)b * in_h + y) * in_w + x) * c + ch] + p->input_offset);
                        }
                    }
                    if (bias != NULL) {
                        acc += bias[ch];
                    }
                    out[ch] = bf_opt_requant(acc, p->multiplier[ch], p->shift[ch], p->output_offset,
                                             p->act_min, p->act_max);
                }
            }
        }
    }
}

#else /* no AVX2: the reference kernel */

void bf_depthwise_conv2d_s8(const bf_depthwise_conv2d_s8_params *p, const int8_t *input,
                            const int8_t *filter, const int32_t *bias, int8_t *output,
                            void *scratch) {
    bf_ref_depthwise_conv2d_s8(p, input, filter, bias, output, scratch);
}

#endif
