/*
 * NEON DEPTHWISE_CONV_2D int8 (depth multiplier 1): eight channels per vector.
 *
 * Per output position the valid window is computed once; for each block of 8 channels every
 * valid tap widens 8 inputs (+ input offset) and 8 weights to int16 and accumulates their
 * products into two int32x4 (SMLAL).  The requantization is vectorized too — SQRDMULH and
 * gemmlowp's rounding shift, bit-exact with the reference's MultiplyByQuantizedMultiplier
 * (bf_neon_mbqm) — because with 9 MACs per output it is most of the work.  Channels beyond the
 * last multiple of 8 are done one by one with the reference arithmetic.  No scratch.
 * Depth multipliers other than 1 run the reference code; bf_depthwise_conv2d_f32 is the
 * reference kernel.
 */
#include "bf_kernels.h"

#define bf_depthwise_conv2d_s8 bf_ref_depthwise_conv2d_s8
#include "../ref/depthwise_conv.c"
#undef bf_depthwise_conv2d_s8

#include "../opt/bf_opt_util.h"
#include "bf_neon.h"

#if defined(__ARM_NEON)

static void bf_neon_dw_block8(const bf_depthwise_conv2d_s8_params *p, const int8_t *image,
                              const int8_t *filter, const int32_t *bias, int32_t c, int32_t y0,
                              int32_t x0, const int32_t win[4], int8_t *out) {
    const int32_t in_w = p->input.w, ch = p->input.c, f_w = p->filter.w;
    const int16x8_t io = vdupq_n_s16((int16_t)p->input_offset);
    int32x4_t lo = bias != NULL ? vld1q_s32(bias + c) : vdupq_n_s32(0);
    int32x4_t hi = bias != NULL ? vld1q_s32(bias + c + 4) : vdupq_n_s32(0);
    int32_t ky, kx;
    int16x8_t q;
    for (ky = win[0]; ky < win[1]; ++ky) {
        const int64_t row = (int64_t)(y0 + ky * p->dilation_h) * in_w;
        const int8_t *wrow = filter + (int64_t)ky * f_w * ch + c;
        for (kx = win[2]; kx < win[3]; ++kx) {
            const int16x8_t x = vaddq_s16(vmovl_s8(vld1_s8(image + (row + x0 + kx * p->dilation_w) * ch + c)), io);
            const int16x8_t w = vmovl_s8(vld1_s8(wrow + (int64_t)kx * ch));
            lo = vmlal_s16(lo, vget_low_s16(x), vget_low_s16(w));
            hi = vmlal_s16(hi, vget_high_s16(x), vget_high_s16(w));
        }
    }
    {
        const int32x4_t off = vdupq_n_s32(p->output_offset);
        const int32x4_t mn = vdupq_n_s32(p->act_min), mx = vdupq_n_s32(p->act_max);
        lo = bf_neon_mbqm(lo, vld1q_s32(p->multiplier + c), vld1q_s32(p->shift + c));
        hi = bf_neon_mbqm(hi, vld1q_s32(p->multiplier + c + 4), vld1q_s32(p->shift + c + 4));
        lo = vminq_s32(vmaxq_s32(vaddq_s32(lo, off), mn), mx);
        hi = vminq_s32(vmaxq_s32(vaddq_s32(hi, off), mn), mx);
        q = vcombine_s16(vmovn_s32(lo), vmovn_s32(hi));
        vst1_s8(out + c, vmovn_s16(q));
    }
}

static int32_t bf_neon_dw_single(const bf_depthwise_conv2d_s8_params *p, const int8_t *image,
                                 const int8_t *filter, int32_t c, int32_t y0, int32_t x0,
                                 const int32_t win[4]) {
    const int32_t in_w = p->input.w, ch = p->input.c, f_w = p->filter.w;
    int32_t acc = 0, ky, kx;
    for (ky = win[0]; ky < win[1]; ++ky) {
        const int64_t row = (int64_t)(y0 + ky * p->dilation_h) * in_w;
        for (kx = win[2]; kx < win[3]; ++kx) {
            acc += filter[((int64_t)ky * f_w + kx) * ch + c] *
                   (image[(row + x0 + kx * p->dilation_w) * ch + c] + p->input_offset);
        }
    }
    return acc;
}

void bf_depthwise_conv2d_s8(const bf_depthwise_conv2d_s8_params *p, const int8_t *input,
                            const int8_t *filter, const int32_t *bias, int8_t *output,
                            void *scratch) {
    const int32_t in_h = p->input.h, in_w = p->input.w, ch = p->input.c;
    const int32_t out_h = p->output.h, out_w = p->output.w;
    int32_t b, oy, ox, c;
    if (p->depth_multiplier != 1) {
        bf_ref_depthwise_conv2d_s8(p, input, filter, bias, output, scratch);
        return;
    }
    for (b = 0; b < p->output.n; ++b) {
        const int8_t *image = input + (int64_t)b * in_h * in_w * ch;
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            int32_t win[4];
            bf_opt_tap_range(y0, p->dilation_h, p->filter.h, in_h, &win[0], &win[1]);
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                int8_t *out = output + (((int64_t)b * out_h + oy) * out_w + ox) * ch;
                bf_opt_tap_range(x0, p->dilation_w, p->filter.w, in_w, &win[2], &win[3]);
                for (c = 0; c + 8 <= ch; c += 8) {
                    bf_neon_dw_block8(p, image, filter, bias, c, y0, x0, win, out);
                }
                for (; c < ch; ++c) {
                    const int32_t a = bf_neon_dw_single(p, image, filter, c, y0, x0, win) +
                                      (bias != NULL ? bias[c] : 0);
                    out[c] = bf_opt_requant(a, p->multiplier[c], p->shift[c], p->output_offset,
                                            p->act_min, p->act_max);
                }
            }
        }
    }
}

#else /* no NEON: the reference kernel */

void bf_depthwise_conv2d_s8(const bf_depthwise_conv2d_s8_params *p, const int8_t *input,
                            const int8_t *filter, const int32_t *bias, int8_t *output,
                            void *scratch) {
    bf_ref_depthwise_conv2d_s8(p, input, filter, bias, output, scratch);
}

#endif
