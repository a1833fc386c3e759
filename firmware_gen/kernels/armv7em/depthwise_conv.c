/*
 * Cortex-M DSP DEPTHWISE_CONV_2D int8 (depth multiplier 1): four channels per 32-bit word.
 *
 * For each output position the valid window is computed once (no per-tap bounds checks), and
 * for each group of 4 channels every valid tap loads one input word and one filter word:
 * SXTB16 / SXTB16 ROR 8 split them into (c0, c2) and (c1, c3) halves, SADD16 adds the input
 * offset, and SMLABB / SMLATT accumulate the four channels' products (1 MAC per instruction
 * against ~10 instructions per MAC of the reference loop).  Channels beyond the last multiple of
 * 4 are done one by one.  Then the reference's per-channel requantization.  No scratch.
 * Depth multipliers other than 1 run the reference code; bf_depthwise_conv2d_f32 is the
 * reference kernel.
 */
#include "bf_kernels.h"

#define bf_depthwise_conv2d_s8 bf_ref_depthwise_conv2d_s8
#include "../ref/depthwise_conv.c"
#undef bf_depthwise_conv2d_s8

#include "../opt/bf_opt_util.h"
#include "bf_dsp.h"

/* Accumulators of channels [c, c + 4) over the valid window. */
static void bf_dsp_dw_quad(const bf_depthwise_conv2d_s8_params *p, const int8_t *image,
                           const int8_t *filter, int32_t c, int32_t y0, int32_t x0, int32_t ky0,
                           int32_t ky1, int32_t kx0, int32_t kx1, int32_t acc[4]) {
    const int32_t in_w = p->input.w, ch = p->input.c, f_w = p->filter.w;
    const uint32_t offset2 = bf_dsp_pack16(p->input_offset, p->input_offset);
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3], ky, kx;
    for (ky = ky0; ky < ky1; ++ky) {
        const int64_t row = (int64_t)(y0 + ky * p->dilation_h) * in_w;
        const int8_t *wrow = filter + (int64_t)ky * f_w * ch + c;
        for (kx = kx0; kx < kx1; ++kx) {
            const uint32_t xv = bf_opt_load_u32(image + (row + x0 + kx * p->dilation_w) * ch + c);
            const uint32_t wv = bf_opt_load_u32(wrow + (int64_t)kx * ch);
            const uint32_t x02 = bf_dsp_sadd16(bf_dsp_sxtb16(xv), offset2);
            const uint32_t x13 = bf_dsp_sadd16(bf_dsp_sxtb16_ror8(xv), offset2);
            const uint32_t w02 = bf_dsp_sxtb16(wv), w13 = bf_dsp_sxtb16_ror8(wv);
            a0 = bf_dsp_smlabb(x02, w02, a0);
            a2 = bf_dsp_smlatt(x02, w02, a2);
            a1 = bf_dsp_smlabb(x13, w13, a1);
            a3 = bf_dsp_smlatt(x13, w13, a3);
        }
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

static int32_t bf_dsp_dw_single(const bf_depthwise_conv2d_s8_params *p, const int8_t *image,
                                const int8_t *filter, int32_t c, int32_t y0, int32_t x0,
                                int32_t ky0, int32_t ky1, int32_t kx0, int32_t kx1) {
    const int32_t in_w = p->input.w, ch = p->input.c, f_w = p->filter.w;
    int32_t acc = 0, ky, kx;
    for (ky = ky0; ky < ky1; ++ky) {
        const int64_t row = (int64_t)(y0 + ky * p->dilation_h) * in_w;
        for (kx = kx0; kx < kx1; ++kx) {
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
    int32_t b, oy, ox, c, i;
    if (p->depth_multiplier != 1) {
        bf_ref_depthwise_conv2d_s8(p, input, filter, bias, output, scratch);
        return;
    }
    for (b = 0; b < p->output.n; ++b) {
        const int8_t *image = input + (int64_t)b * in_h * in_w * ch;
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            int32_t ky0, ky1;
            bf_opt_tap_range(y0, p->dilation_h, p->filter.h, in_h, &ky0, &ky1);
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                int8_t *out = output + (((int64_t)b * out_h + oy) * out_w + ox) * ch;
                int32_t kx0, kx1;
                bf_opt_tap_range(x0, p->dilation_w, p->filter.w, in_w, &kx0, &kx1);
                for (c = 0; c + 4 <= ch; c += 4) {
                    int32_t acc[4] = {0, 0, 0, 0};
                    bf_dsp_dw_quad(p, image, filter, c, y0, x0, ky0, ky1, kx0, kx1, acc);
                    for (i = 0; i < 4; ++i) {
                        const int32_t a = acc[i] + (bias != NULL ? bias[c + i] : 0);
                        out[c + i] = bf_opt_requant(a, p->multiplier[c + i], p->shift[c + i],
                                                    p->output_offset, p->act_min, p->act_max);
                    }
                }
                for (; c < ch; ++c) {
                    const int32_t a = bf_dsp_dw_single(p, image, filter, c, y0, x0, ky0, ky1, kx0, kx1) +
                                      (bias != NULL ? bias[c] : 0);
                    out[c] = bf_opt_requant(a, p->multiplier[c], p->shift[c], p->output_offset,
                                            p->act_min, p->act_max);
                }
            }
        }
    }
}
