/*
 * CONV_2D reference kernels: a direct translation of the contract in bf_kernels.h
 * (TFLite reference_integer_ops::ConvPerChannel and reference_ops::Conv).  No scratch.
 */
#include "bf_kernels.h"
#include "bf_fixedpoint.h"
#include "bf_ref_util.h"

size_t bf_conv2d_s8_scratch_bytes(const bf_conv2d_s8_params *params) {
    (void)params;
    return 0;
}

size_t bf_conv2d_f32_scratch_bytes(const bf_conv2d_f32_params *params) {
    (void)params;
    return 0;
}

void bf_conv2d_s8(const bf_conv2d_s8_params *p, const int8_t *input, const int8_t *filter,
                  const int32_t *bias, int8_t *output, void *scratch) {
    const int32_t in_h = p->input.h, in_w = p->input.w, in_c = p->input.c;
    const int32_t f_h = p->filter.h, f_w = p->filter.w, f_c = p->filter.c;
    const int32_t out_h = p->output.h, out_w = p->output.w, out_c = p->output.c;
    const int32_t groups = in_c / f_c;
    const int32_t per_group = out_c / groups;
    int32_t b, oy, ox, o;
    (void)scratch;
    for (b = 0; b < p->output.n; ++b) {
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                int8_t *out = output + (((int64_t)b * out_h + oy) * out_w + ox) * out_c;
                for (o = 0; o < out_c; ++o) {
                    const int32_t c0 = (o / per_group) * f_c;
                    const int8_t *w = filter + (int64_t)o * f_h * f_w * f_c;
                    int32_t acc = 0;
                    int32_t ky, kx, i;
                    for (ky = 0; ky < f_h; ++ky) {
                        const int32_t y = y0 + ky * p->dilation_h;
                        if (y < 0 || y >= in_h) {
                            continue;
                        }
                        for (kx = 0; kx < f_w; ++kx) {
                            const int32_t x = x0 + kx * p->dilation_w;
                            const int8_t *in;
                            const int8_t *wk;
                            if (x < 0 || x >= in_w) {
                                continue;
                            }
                            in = input + (((int64_t)b * in_h + y) * in_w + x) * in_c + c0;
                            wk = w + ((int64_t)ky * f_w + kx) * f_c;
                            for (i = 0; i < f_c; ++i) {
                                acc += (int32_t)wk[i] * ((int32_t)in[i] + p->input_offset);
                            }
                        }
                    }
                    if (bias != NULL) {
                        acc += bias[o];
                    }
                    acc = bf_mbqm(acc, p->multiplier[o], p->shift[o]);
                    acc += p->output_offset;
                    out[o] = (int8_t)bf_clamp_i32(acc, p->act_min, p->act_max);
                }
            }
        }
    }
}

void bf_conv2d_f32(const bf_conv2d_f32_params *p, const float *input, const float *filter,
                   const float *bias, float *output, void *scratch) {
    const int32_t in_h = p->input.h, in_w = p->input.w, in_c = p->input.c;
    const int32_t f_h = p->filter.h, f_w = p->filter.w, f_c = p->filter.c;
    const int32_t out_h = p->output.h, out_w = p->output.w, out_c = p->output.c;
    const int32_t groups = in_c / f_c;
    const int32_t per_group = out_c / groups;
    int32_t b, oy, ox, o;
    (void)scratch;
    for (b = 0; b < p->output.n; ++b) {
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_left;
                float *out = output + (((int64_t)b * out_h + oy) * out_w + ox) * out_c;
                for (o = 0; o < out_c; ++o) {
                    const int32_t c0 = (o / per_group) * f_c;
                    const float *w = filter + (int64_t)o * f_h * f_w * f_c;
                    float total = 0.0f;
                    int32_t ky, kx, i;
                    for (ky = 0; ky < f_h; ++ky) {
                        const int32_t y = y0 + ky * p->dilation_h;
                        if (y < 0 || y >= in_h) {
                            continue;
                        }
                        for (kx = 0; kx < f_w; ++kx) {
                            const int32_t x = x0 + kx * p->dilation_w;
                            const float *in;
                            const float *wk;
                            if (x < 0 || x >= in_w) {
                                continue;
                            }
                            in = input + (((int64_t)b * in_h + y) * in_w + x) * in_c + c0;
                            wk = w + ((int64_t)ky * f_w + kx) * f_c;
                            for (i = 0; i < f_c; ++i) {
                                total += in[i] * wk[i];
                            }
                        }
                    }
                    out[o] = bf_clamp_f32(total + (bias != NULL ? bias[o] : 0.0f), p->act_min,
                                          p->act_max);
                }
            }
        }
    }
}
