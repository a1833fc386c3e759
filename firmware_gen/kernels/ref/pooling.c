/*
 * AVERAGE_POOL_2D and MAX_POOL_2D reference kernels (TFLite reference_integer_ops::AveragePool /
 * MaxPool and their float twins).  The window is clipped to the input; padding never counts.
 */
#include "bf_kernels.h"
#include "bf_fixedpoint.h"
#include "bf_ref_util.h"

/* The clipped window [*start, *end) of filter taps along one axis for output position `o`. */
static void window_1d(int32_t o, int32_t stride, int32_t pad, int32_t filter, int32_t size,
                      int32_t *origin, int32_t *start, int32_t *end) {
    *origin = o * stride - pad;
    *start = bf_max_i32(0, -*origin);
    *end = bf_min_i32(filter, size - *origin);
}

void bf_avgpool_s8(const bf_avgpool_s8_params *p, const int8_t *input, int8_t *output) {
    const int32_t in_h = p->input.h, in_w = p->input.w, ch = p->input.c;
    int32_t b, oy, ox, c;
    for (b = 0; b < p->output.n; ++b) {
        for (oy = 0; oy < p->output.h; ++oy) {
            int32_t y0, ys, ye;
            window_1d(oy, p->stride_h, p->pad_top, p->filter_h, in_h, &y0, &ys, &ye);
            for (ox = 0; ox < p->output.w; ++ox) {
                int32_t x0, xs, xe;
                int8_t *out = output + (((int64_t)b * p->output.h + oy) * p->output.w + ox) * ch;
                window_1d(ox, p->stride_w, p->pad_left, p->filter_w, in_w, &x0, &xs, &xe);
                for (c = 0; c < ch; ++c) {
                    int32_t acc = 0;
                    int32_t count = 0;
                    int32_t ky, kx;
                    for (ky = ys; ky < ye; ++ky) {
                        for (kx = xs; kx < xe; ++kx) {
                            acc += input[(((int64_t)b * in_h + y0 + ky) * in_w + x0 + kx) * ch + c];
                            ++count;
                        }
                    }
                    if (count == 0) {
                        /* An empty window only arises from inconsistent params; TFLite fails. */
                        out[c] = (int8_t)bf_clamp_i32(0, p->act_min, p->act_max);
                        continue;
                    }
                    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                    out[c] = (int8_t)bf_clamp_i32(acc, p->act_min, p->act_max);
                }
            }
        }
    }
}

void bf_maxpool_s8(const bf_maxpool_s8_params *p, const int8_t *input, int8_t *output) {
    const int32_t in_h = p->input.h, in_w = p->input.w, ch = p->input.c;
    int32_t b, oy, ox, c;
    for (b = 0; b < p->output.n; ++b) {
        for (oy = 0; oy < p->output.h; ++oy) {
            int32_t y0, ys, ye;
            window_1d(oy, p->stride_h, p->pad_top, p->filter_h, in_h, &y0, &ys, &ye);
            for (ox = 0; ox < p->output.w; ++ox) {
                int32_t x0, xs, xe;
                int8_t *out = output + (((int64_t)b * p->output.h + oy) * p->output.w + ox) * ch;
                window_1d(ox, p->stride_w, p->pad_left, p->filter_w, in_w, &x0, &xs, &xe);
                for (c = 0; c < ch; ++c) {
                    int32_t best = -128;
                    int32_t ky, kx;
                    for (ky = ys; ky < ye; ++ky) {
                        for (kx = xs; kx < xe; ++kx) {
                            const int32_t v =
                                input[(((int64_t)b * in_h + y0 + ky) * in_w + x0 + kx) * ch + c];
                            best = v > best ? v : best;
                        }
                    }
                    out[c] = (int8_t)bf_clamp_i32(best, p->act_min, p->act_max);
                }
            }
        }
    }
}

void bf_avgpool_f32(const bf_avgpool_f32_params *p, const float *input, float *output) {
    const int32_t in_h = p->input.h, in_w = p->input.w, ch = p->input.c;
    int32_t b, oy, ox, c;
    for (b = 0; b < p->output.n; ++b) {
        for (oy = 0; oy < p->output.h; ++oy) {
            int32_t y0, ys, ye;
            window_1d(oy, p->stride_h, p->pad_top, p->filter_h, in_h, &y0, &ys, &ye);
            for (ox = 0; ox < p->output.w; ++ox) {
                int32_t x0, xs, xe;
                float *out = output + (((int64_t)b * p->output.h + oy) * p->output.w + ox) * ch;
                window_1d(ox, p->stride_w, p->pad_left, p->filter_w, in_w, &x0, &xs, &xe);
                for (c = 0; c < ch; ++c) {
                    float total = 0.0f;
                    float count = 0.0f;
                    int32_t ky, kx;
                    for (ky = ys; ky < ye; ++ky) {
                        for (kx = xs; kx < xe; ++kx) {
                            total += input[(((int64_t)b * in_h + y0 + ky) * in_w + x0 + kx) * ch + c];
                            count += 1.0f;
                        }
                    }
                    out[c] = bf_clamp_f32(total / count, p->act_min, p->act_max);
                }
            }
        }
    }
}

void bf_maxpool_f32(const bf_maxpool_f32_params *p, const float *input, float *output) {
    const int32_t in_h = p->input.h, in_w = p->input.w, ch = p->input.c;
    int32_t b, oy, ox, c;
    for (b = 0; b < p->output.n; ++b) {
        for (oy = 0; oy < p->output.h; ++oy) {
            int32_t y0, ys, ye;
            window_1d(oy, p->stride_h, p->pad_top, p->filter_h, in_h, &y0, &ys, &ye);
            for (ox = 0; ox < p->output.w; ++ox) {
                int32_t x0, xs, xe;
                float *out = output + (((int64_t)b * p->output.h + oy) * p->output.w + ox) * ch;
                window_1d(ox, p->stride_w, p->pad_left, p->filter_w, in_w, &x0, &xs, &xe);
                for (c = 0; c < ch; ++c) {
                    float best = -3.40282347e+38f; /* std::numeric_limits<float>::lowest() */
                    int32_t ky, kx;
                    for (ky = ys; ky < ye; ++ky) {
                        for (kx = xs; kx < xe; ++kx) {
                            const float v =
                                input[(((int64_t)b * in_h + y0 + ky) * in_w + x0 + kx) * ch + c];
                            best = v > best ? v : best;
                        }
                    }
                    out[c] = bf_clamp_f32(best, p->act_min, p->act_max);
                }
            }
        }
    }
}
