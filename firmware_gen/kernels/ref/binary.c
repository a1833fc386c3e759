/*
 * Binarized CONV_2D / FULLY_CONNECTED reference kernels (bf_binary.h): binary weight planes
 * with int8 activations ("binary", BWN/HORQ) and with binarized activations ("xnor",
 * XNOR-Net/HORQ, dot = n - 2 * popcount(a xor w)).
 *
 * A fully-connected layer runs through the same code as a 1x1 convolution over a
 * batches x 1 x 1 x depth input.  Every sum is an exact int32 (the host bounds the
 * coefficients so that nothing overflows); the only rounding is the final
 * MultiplyByQuantizedMultiplier, as in TFLite Micro.
 */
#include "bf_binary.h"
#include "bf_fixedpoint.h"
#include "bf_popcount.h"

#define BF_BIN_MAX_ACT_PLANES 3

/* The geometry both kernels share (one image at a time). */
typedef struct {
    int32_t batches;
    int32_t in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t f_h, f_w;
    int32_t stride_h, stride_w;
    int32_t dilation_h, dilation_w;
    int32_t pad_top, pad_left;
    int32_t words;
    int32_t planes;
} bf_bin_geom;

/* Per-output-channel tables and the output quantization. */
typedef struct {
    const uint32_t *weights;
    const int16_t *coef;
    const int32_t *bias;
    const int32_t *multiplier;
    const int32_t *shift;
    int32_t output_offset;
    int32_t act_min, act_max;
} bf_bin_tables;

static bf_bin_geom bf_bin_conv_geom(const bf_dims4 *in, const bf_dims4 *filter, const bf_dims4 *out,
                                    int32_t stride_h, int32_t stride_w, int32_t dilation_h,
                                    int32_t dilation_w, int32_t pad_top, int32_t pad_left,
                                    int32_t words, int32_t planes) {
    bf_bin_geom g;
    g.batches = in->n;
    g.in_h = in->h;
    g.in_w = in->w;
    g.in_c = in->c;
    g.out_h = out->h;
    g.out_w = out->w;
    g.out_c = out->c;
    g.f_h = filter->h;
    g.f_w = filter->w;
    g.stride_h = stride_h;
    g.stride_w = stride_w;
    g.dilation_h = dilation_h;
    g.dilation_w = dilation_w;
    g.pad_top = pad_top;
    g.pad_left = pad_left;
    g.words = words;
    g.planes = planes;
    return g;
}

static bf_bin_geom bf_bin_fc_geom(int32_t batches, int32_t depth, int32_t units, int32_t words,
                                  int32_t planes) {
    const bf_dims4 in = {1, 1, 1, 1};
    const bf_dims4 one = {1, 1, 1, 1};
    bf_bin_geom g = bf_bin_conv_geom(&in, &one, &in, 1, 1, 1, 1, 0, 0, words, planes);
    g.batches = batches;
    g.in_c = depth;
    g.out_c = units;
    return g;
}

static int8_t bf_bin_requantize(const bf_bin_tables *t, int32_t o, int32_t acc) {
    int32_t q = bf_mbqm(acc, t->multiplier[o], t->shift[o]);
    q += t->output_offset;
    return (int8_t)bf_clamp_i32(q, t->act_min, t->act_max);
}

/* Input row of tap (ky, kx) for output (oy, ox), or -1 when the tap lies in the padding. */
static int32_t bf_bin_tap_row(const bf_bin_geom *g, int32_t oy, int32_t ky) {
    const int32_t y = oy * g->stride_h - g->pad_top + ky * g->dilation_h;
    return (y < 0 || y >= g->in_h) ? -1 : y;
}

static int32_t bf_bin_tap_col(const bf_bin_geom *g, int32_t ox, int32_t kx) {
    const int32_t x = ox * g->stride_w - g->pad_left + kx * g->dilation_w;
    return (x < 0 || x >= g->in_w) ? -1 : x;
}

/* ---------------------------------------------------------------------------------------- */
/* Binary weights, int8 activations.                                                         */

/* sum of (x + input_offset) over the channels whose bit is set in the packed row `w`. */
static int32_t bf_bin_positive_sum(const uint32_t *w, const int8_t *x, int32_t channels,
                                   int32_t words, int32_t input_offset) {
    int32_t sum = 0;
    int32_t j, i;
    for (j = 0; j < words; ++j) {
        const uint32_t bits = w[j];
        const int32_t c0 = 32 * j;
        const int32_t n = channels - c0 < 32 ? channels - c0 : 32;
        for (i = 0; i < n; ++i) {
            if (((bits >> i) & 1u) != 0u) {
                sum += (int32_t)x[c0 + i] + input_offset;
            }
        }
    }
    return sum;
}

/* Sum of every input value (offset applied) in the valid taps of window (oy, ox). */
static int32_t bf_bin_window_sum(const bf_bin_geom *g, const int8_t *image, int32_t oy, int32_t ox,
                                 int32_t input_offset) {
    int32_t total = 0;
    int32_t ky, kx, c;
    for (ky = 0; ky < g->f_h; ++ky) {
        const int32_t y = bf_bin_tap_row(g, oy, ky);
        if (y < 0) {
            continue;
        }
        for (kx = 0; kx < g->f_w; ++kx) {
            const int32_t x = bf_bin_tap_col(g, ox, kx);
            const int8_t *px;
            if (x < 0) {
                continue;
            }
            px = image + ((int64_t)y * g->in_w + x) * g->in_c;
            for (c = 0; c < g->in_c; ++c) {
                total += (int32_t)px[c] + input_offset;
            }
        }
    }
    return total;
}

/* S = sum over valid taps of B * x for one packed filter plane (taps * words words). */
static int32_t bf_bin_plane_dot(const bf_bin_geom *g, const uint32_t *plane, const int8_t *image,
                                int32_t oy, int32_t ox, int32_t input_offset, int32_t window_sum) {
    int32_t positive = 0;
    int32_t ky, kx;
    for (ky = 0; ky < g->f_h; ++ky) {
        const int32_t y = bf_bin_tap_row(g, oy, ky);
        if (y < 0) {
            continue;
        }
        for (kx = 0; kx < g->f_w; ++kx) {
            const int32_t x = bf_bin_tap_col(g, ox, kx);
            if (x < 0) {
                continue;
            }
            positive += bf_bin_positive_sum(plane + ((int64_t)ky * g->f_w + kx) * g->words,
                                            image + ((int64_t)y * g->in_w + x) * g->in_c,
                                            g->in_c, g->words, input_offset);
        }
    }
    /* sum B*x = sum_{B=+1} x - sum_{B=-1} x = 2 * sum_{B=+1} x - sum x */
    return 2 * positive - window_sum;
}

static void bf_bin_run(const bf_bin_geom *g, const bf_bin_tables *t, int32_t input_offset,
                       const int8_t *input, int8_t *output) {
    const int64_t taps_words = (int64_t)g->f_h * g->f_w * g->words;
    int32_t b, oy, ox, o, k;
    for (b = 0; b < g->batches; ++b) {
        const int8_t *image = input + (int64_t)b * g->in_h * g->in_w * g->in_c;
        for (oy = 0; oy < g->out_h; ++oy) {
            for (ox = 0; ox < g->out_w; ++ox) {
                const int32_t window_sum = bf_bin_window_sum(g, image, oy, ox, input_offset);
                int8_t *out = output + (((int64_t)b * g->out_h + oy) * g->out_w + ox) * g->out_c;
                for (o = 0; o < g->out_c; ++o) {
                    int32_t acc = t->bias[o];
                    for (k = 0; k < g->planes; ++k) {
                        const uint32_t *plane = t->weights + ((int64_t)o * g->planes + k) * taps_words;
                        const int32_t s = bf_bin_plane_dot(g, plane, image, oy, ox, input_offset,
                                                           window_sum);
                        acc += (int32_t)t->coef[o * g->planes + k] * s;
                    }
                    out[o] = bf_bin_requantize(t, o, acc);
                }
            }
        }
    }
}

void bf_conv2d_binary_s8(const bf_conv2d_binary_s8_params *p, const int8_t *input,
                         int8_t *output) {
    const bf_bin_geom g = bf_bin_conv_geom(&p->input, &p->filter, &p->output, p->stride_h,
                                           p->stride_w, p->dilation_h, p->dilation_w, p->pad_top,
                                           p->pad_left, p->words, p->planes);
    const bf_bin_tables t = {p->weights, p->coef, p->bias, p->multiplier, p->shift,
                             p->output_offset, p->act_min, p->act_max};
    bf_bin_run(&g, &t, p->input_offset, input, output);
}

void bf_fully_connected_binary_s8(const bf_fully_connected_binary_s8_params *p,
                                  const int8_t *input, int8_t *output) {
    const bf_bin_geom g = bf_bin_fc_geom(p->batches, p->depth, p->units, p->words, p->planes);
    const bf_bin_tables t = {p->weights, p->coef, p->bias, p->multiplier, p->shift,
                             p->output_offset, p->act_min, p->act_max};
    bf_bin_run(&g, &t, p->input_offset, input, output);
}

/* ---------------------------------------------------------------------------------------- */
/* Binary weights and activations.                                                           */

/* Binarize one image (in_h * in_w pixels) into `packed` [pixel][act_planes][words]. */
static void bf_xnor_pack(const bf_bin_geom *g, int32_t act_planes, const int32_t *threshold,
                         const int8_t *image, uint32_t *packed) {
    const int64_t pixels = (int64_t)g->in_h * g->in_w;
    const int32_t stride = act_planes * g->words;
    int64_t p;
    int32_t c, j;
    for (p = 0; p < pixels; ++p) {
        uint32_t *dst = packed + p * stride;
        const int8_t *src = image + p * g->in_c;
        for (j = 0; j < stride; ++j) {
            dst[j] = 0u;
        }
        for (c = 0; c < g->in_c; ++c) {
            const int32_t q = src[c];
            int32_t node = 0;
            for (j = 0; j < act_planes; ++j) {
                if (q >= threshold[node]) {
                    dst[j * g->words + (c >> 5)] |= (uint32_t)1u << (c & 31);
                    node = 2 * node + 2;
                } else {
                    node = 2 * node + 1;
                }
            }
        }
    }
}

/* For one weight plane over window (oy, ox): *ones = popcount(w), xors[j] = popcount(w ^ a_j),
 * summed over the valid taps; returns the number of valid taps. */
static int32_t bf_xnor_counts(const bf_bin_geom *g, int32_t act_planes, const uint32_t *plane,
                              const uint32_t *packed, int32_t oy, int32_t ox, int32_t *ones,
                              int32_t *xors) {
    int32_t valid = 0;
    int32_t ky, kx, i, j;
    *ones = 0;
    for (j = 0; j < act_planes; ++j) {
        xors[j] = 0;
    }
    for (ky = 0; ky < g->f_h; ++ky) {
        const int32_t y = bf_bin_tap_row(g, oy, ky);
        if (y < 0) {
            continue;
        }
        for (kx = 0; kx < g->f_w; ++kx) {
            const int32_t x = bf_bin_tap_col(g, ox, kx);
            const uint32_t *w;
            const uint32_t *a;
            if (x < 0) {
                continue;
            }
            ++valid;
            w = plane + ((int64_t)ky * g->f_w + kx) * g->words;
            a = packed + ((int64_t)y * g->in_w + x) * act_planes * g->words;
            for (i = 0; i < g->words; ++i) {
                *ones += bf_popcount32(w[i]);
                for (j = 0; j < act_planes; ++j) {
                    xors[j] += bf_popcount32(w[i] ^ a[j * g->words + i]);
                }
            }
        }
    }
    return valid;
}

static void bf_xnor_run(const bf_bin_geom *g, const bf_bin_tables *t, int32_t act_planes,
                        const int32_t *threshold, const int8_t *input, int8_t *output,
                        uint32_t *packed) {
    const int64_t taps_words = (int64_t)g->f_h * g->f_w * g->words;
    const int32_t terms = 1 + act_planes;
    int32_t b, oy, ox, o, k, j;
    for (b = 0; b < g->batches; ++b) {
        bf_xnor_pack(g, act_planes, threshold, input + (int64_t)b * g->in_h * g->in_w * g->in_c,
                     packed);
        for (oy = 0; oy < g->out_h; ++oy) {
            for (ox = 0; ox < g->out_w; ++ox) {
                int8_t *out = output + (((int64_t)b * g->out_h + oy) * g->out_w + ox) * g->out_c;
                for (o = 0; o < g->out_c; ++o) {
                    int32_t acc = t->bias[o];
                    for (k = 0; k < g->planes; ++k) {
                        const uint32_t *plane = t->weights + ((int64_t)o * g->planes + k) * taps_words;
                        const int16_t *coef = t->coef + ((int64_t)o * g->planes + k) * terms;
                        int32_t ones;
                        int32_t xors[BF_BIN_MAX_ACT_PLANES];
                        const int32_t n = g->in_c * bf_xnor_counts(g, act_planes, plane, packed, oy,
                                                                   ox, &ones, xors);
                        acc += (int32_t)coef[0] * (2 * ones - n);
                        for (j = 0; j < act_planes; ++j) {
                            /* dot of two ±1 vectors: n - 2 * popcount(a xor w) */
                            acc += (int32_t)coef[1 + j] * (n - 2 * xors[j]);
                        }
                    }
                    out[o] = bf_bin_requantize(t, o, acc);
                }
            }
        }
    }
}

size_t bf_conv2d_xnor_s8_scratch_bytes(const bf_conv2d_xnor_s8_params *p) {
    return (size_t)p->input.h * (size_t)p->input.w * (size_t)p->act_planes * (size_t)p->words *
           sizeof(uint32_t);
}

void bf_conv2d_xnor_s8(const bf_conv2d_xnor_s8_params *p, const int8_t *input, int8_t *output,
                       void *scratch) {
    const bf_bin_geom g = bf_bin_conv_geom(&p->input, &p->filter, &p->output, p->stride_h,
                                           p->stride_w, p->dilation_h, p->dilation_w, p->pad_top,
                                           p->pad_left, p->words, p->planes);
    const bf_bin_tables t = {p->weights, p->coef, p->bias, p->multiplier, p->shift,
                             p->output_offset, p->act_min, p->act_max};
    bf_xnor_run(&g, &t, p->act_planes, p->act_threshold, input, output, (uint32_t *)scratch);
}

size_t bf_fully_connected_xnor_s8_scratch_bytes(const bf_fully_connected_xnor_s8_params *p) {
    return (size_t)p->act_planes * (size_t)p->words * sizeof(uint32_t);
}

void bf_fully_connected_xnor_s8(const bf_fully_connected_xnor_s8_params *p,
                                const int8_t *input, int8_t *output, void *scratch) {
    const bf_bin_geom g = bf_bin_fc_geom(p->batches, p->depth, p->units, p->words, p->planes);
    const bf_bin_tables t = {p->weights, p->coef, p->bias, p->multiplier, p->shift,
                             p->output_offset, p->act_min, p->act_max};
    bf_xnor_run(&g, &t, p->act_planes, p->act_threshold, input, output, (uint32_t *)scratch);
}
