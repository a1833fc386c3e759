/*
 * Low-rank CONV_2D / FULLY_CONNECTED reference kernels (bf_lowrank.h): two int8 convolution
 * stages through an int8 intermediate held in scratch.
 *
 * Each stage is the arithmetic of bf_conv2d_s8 (TFLite Micro's ConvPerChannel: int32 sums,
 * MultiplyByQuantizedMultiplier per channel).  It is written out here rather than calling
 * bf_conv2d_s8 so that a model using only low-rank layers links only this file.
 */
#include "bf_lowrank.h"
#include "bf_fixedpoint.h"

/* One image (N = 1) of a stage: `in` is in_h x in_w x filter.c, `out` out_h x out_w x filter.n. */
static void bf_lowrank_stage_run(const bf_lowrank_stage *s, int32_t in_h, int32_t in_w,
                                 int32_t out_h, int32_t out_w, const int8_t *in,
                                 const int32_t *bias, int8_t *out) {
    const int32_t f_h = s->filter.h, f_w = s->filter.w, f_c = s->filter.c, out_c = s->filter.n;
    int32_t oy, ox, o, ky, kx, i;
    for (oy = 0; oy < out_h; ++oy) {
        const int32_t y0 = oy * s->stride_h - s->pad_top;
        for (ox = 0; ox < out_w; ++ox) {
            const int32_t x0 = ox * s->stride_w - s->pad_left;
            int8_t *dst = out + ((int64_t)oy * out_w + ox) * out_c;
            for (o = 0; o < out_c; ++o) {
                const int8_t *w = s->weights + (int64_t)o * f_h * f_w * f_c;
                int32_t acc = 0;
                for (ky = 0; ky < f_h; ++ky) {
                    const int32_t y = y0 + ky * s->dilation_h;
                    if (y < 0 || y >= in_h) {
                        continue;
                    }
                    for (kx = 0; kx < f_w; ++kx) {
                        const int32_t x = x0 + kx * s->dilation_w;
                        const int8_t *src;
                        const int8_t *wk;
                        if (x < 0 || x >= in_w) {
                            continue;
                        }
                        src = in + ((int64_t)y * in_w + x) * f_c;
                        wk = w + ((int64_t)ky * f_w + kx) * f_c;
                        for (i = 0; i < f_c; ++i) {
                            acc += (int32_t)wk[i] * ((int32_t)src[i] + s->input_offset);
                        }
                    }
                }
                if (bias != NULL) {
                    acc += bias[o];
                }
                acc = bf_mbqm(acc, s->multiplier[o], s->shift[o]);
                acc += s->output_offset;
                dst[o] = (int8_t)bf_clamp_i32(acc, s->act_min, s->act_max);
            }
        }
    }
}

size_t bf_conv2d_lowrank_s8_scratch_bytes(const bf_conv2d_lowrank_s8_params *p) {
    return (size_t)p->mid.h * (size_t)p->mid.w * (size_t)p->mid.c;
}

void bf_conv2d_lowrank_s8(const bf_conv2d_lowrank_s8_params *p, const int8_t *input,
                          int8_t *output, void *scratch) {
    const int64_t in_image = (int64_t)p->input.h * p->input.w * p->input.c;
    const int64_t out_image = (int64_t)p->output.h * p->output.w * p->output.c;
    int8_t *mid = (int8_t *)scratch;
    int32_t b;
    for (b = 0; b < p->input.n; ++b) {
        bf_lowrank_stage_run(&p->first, p->input.h, p->input.w, p->mid.h, p->mid.w,
                             input + b * in_image, NULL, mid);
        bf_lowrank_stage_run(&p->second, p->mid.h, p->mid.w, p->output.h, p->output.w, mid,
                             p->bias, output + b * out_image);
    }
}

size_t bf_fully_connected_lowrank_s8_scratch_bytes(
    const bf_fully_connected_lowrank_s8_params *p) {
    return (size_t)p->rank;
}

void bf_fully_connected_lowrank_s8(const bf_fully_connected_lowrank_s8_params *p,
                                   const int8_t *input, int8_t *output, void *scratch) {
    int8_t *mid = (int8_t *)scratch;
    int32_t b;
    for (b = 0; b < p->batches; ++b) {
        bf_lowrank_stage_run(&p->first, 1, 1, 1, 1, input + (int64_t)b * p->depth, NULL, mid);
        bf_lowrank_stage_run(&p->second, 1, 1, 1, 1, mid, p->bias, output + (int64_t)b * p->units);
    }
}
