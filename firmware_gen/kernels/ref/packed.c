/*
 * Dense compressed-weight kernels (bf_packed.h): packed low-bit weights and packed codebook
 * indices, decoded element by element while accumulating.  One generic loop per op serves both
 * formats through a small decoder; requantization is TFLite Micro's fixed-point one.
 */
#include "bf_packed.h"

#include "bf_fixedpoint.h"
#include "bf_ref_util.h"

/* How to turn element e of output channel o into its integer weight. */
typedef struct {
    const uint8_t *data;       /* packed stream */
    int32_t bits;              /* 1 … 8 */
    const int8_t *codebook;    /* NULL: two's-complement values; else codebook indices */
    int32_t stride;            /* codebook entries per output channel (0: shared) */
} bf_decoder;

/* The bits-bit field of element e, LSB-first; reads the next byte only when the field
 * straddles a byte boundary, so it never reads past ceil(count * bits / 8) bytes. */
static inline uint32_t bf_field(const uint8_t *p, int64_t e, int32_t bits) {
    const int64_t bit = e * bits;
    const int64_t byte = bit >> 3;
    const int32_t off = (int32_t)(bit & 7);
    uint32_t v = p[byte];
    if (off + bits > 8) {
        v |= (uint32_t)p[byte + 1] << 8;
    }
    return (v >> off) & ((1u << bits) - 1u);
}

static inline int32_t bf_decode(const bf_decoder *d, int32_t o, int64_t e) {
    const uint32_t u = bf_field(d->data, e, d->bits);
    if (d->codebook != NULL) {
        return (int32_t)d->codebook[(int64_t)o * d->stride + (int64_t)u];
    }
    return (u >> (d->bits - 1)) ? (int32_t)u - ((int32_t)1 << d->bits) : (int32_t)u;
}

static inline int8_t bf_requant(int32_t acc, int32_t o, const int32_t *multiplier,
                                const int32_t *shift, int32_t output_offset, int32_t act_min,
                                int32_t act_max) {
    int32_t q = bf_mbqm(acc, multiplier[o], shift[o]);
    q = bf_wrap_add(q, output_offset);
    return (int8_t)bf_clamp_i32(q, act_min, act_max);
}

/* ---------------------------------------------------------------------------------------- */

typedef struct {
    int32_t batches, depth, units;
    int32_t input_offset, output_offset, act_min, act_max;
    const int32_t *bias, *multiplier, *shift;
} bf_fc_geom;

static void bf_fc_generic(const bf_fc_geom *p, const bf_decoder *d, const int8_t *input,
                          int8_t *output) {
    int32_t b, u, k;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *in = input + (int64_t)b * p->depth;
        int8_t *out = output + (int64_t)b * p->units;
        for (u = 0; u < p->units; ++u) {
            const int64_t row = (int64_t)u * p->depth;
            int32_t acc = p->bias[u];
            for (k = 0; k < p->depth; ++k) {
                acc = bf_wrap_add(acc, bf_decode(d, u, row + k) * ((int32_t)in[k] + p->input_offset));
            }
            out[u] = bf_requant(acc, u, p->multiplier, p->shift, p->output_offset, p->act_min,
                                p->act_max);
        }
    }
}

typedef struct {
    bf_dims4 input, filter, output;
    int32_t depth_multiplier; /* depthwise only */
    int32_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
    int32_t input_offset, output_offset, act_min, act_max;
    const int32_t *bias, *multiplier, *shift;
} bf_conv_geom;

static void bf_conv_generic(const bf_conv_geom *p, const bf_decoder *d, const int8_t *input,
                            int8_t *output) {
    const int32_t in_h = p->input.h, in_w = p->input.w, in_c = p->input.c;
    const int32_t f_h = p->filter.h, f_w = p->filter.w, f_c = p->filter.c;
    const int32_t out_h = p->output.h, out_w = p->output.w, out_c = p->output.c;
    const int32_t per_group = out_c / (in_c / f_c);
    int32_t b, oy, ox, o, ky, kx, i;
    for (b = 0; b < p->output.n; ++b) {
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                int8_t *out = output + (((int64_t)b * out_h + oy) * out_w + ox) * out_c;
                for (o = 0; o < out_c; ++o) {
                    const int32_t c0 = (o / per_group) * f_c;
                    int32_t acc = p->bias[o];
                    for (ky = 0; ky < f_h; ++ky) {
                        const int32_t y = oy * p->stride_h - p->pad_top + ky * p->dilation_h;
                        if (y < 0 || y >= in_h) {
                            continue;
                        }
                        for (kx = 0; kx < f_w; ++kx) {
                            const int32_t x = ox * p->stride_w - p->pad_left + kx * p->dilation_w;
                            const int8_t *in;
                            int64_t e;
                            if (x < 0 || x >= in_w) {
                                continue;
                            }
                            in = input + (((int64_t)b * in_h + y) * in_w + x) * in_c + c0;
                            e = (((int64_t)o * f_h + ky) * f_w + kx) * f_c;
                            for (i = 0; i < f_c; ++i) {
                                acc = bf_wrap_add(acc, bf_decode(d, o, e + i) *
                                                           ((int32_t)in[i] + p->input_offset));
                            }
                        }
                    }
                    out[o] = bf_requant(acc, o, p->multiplier, p->shift, p->output_offset,
                                        p->act_min, p->act_max);
                }
            }
        }
    }
}

static void bf_depthwise_generic(const bf_conv_geom *p, const bf_decoder *d, const int8_t *input,
                                 int8_t *output) {
    const int32_t in_h = p->input.h, in_w = p->input.w, in_c = p->input.c;
    const int32_t f_h = p->filter.h, f_w = p->filter.w;
    const int32_t out_h = p->output.h, out_w = p->output.w, out_c = p->output.c;
    int32_t b, oy, ox, o, ky, kx;
    for (b = 0; b < p->output.n; ++b) {
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                int8_t *out = output + (((int64_t)b * out_h + oy) * out_w + ox) * out_c;
                for (o = 0; o < out_c; ++o) {
                    const int32_t c = o / p->depth_multiplier;
                    int32_t acc = p->bias[o];
                    for (ky = 0; ky < f_h; ++ky) {
                        const int32_t y = oy * p->stride_h - p->pad_top + ky * p->dilation_h;
                        if (y < 0 || y >= in_h) {
                            continue;
                        }
                        for (kx = 0; kx < f_w; ++kx) {
                            const int32_t x = ox * p->stride_w - p->pad_left + kx * p->dilation_w;
                            int32_t v;
                            if (x < 0 || x >= in_w) {
                                continue;
                            }
                            v = (int32_t)input[(((int64_t)b * in_h + y) * in_w + x) * in_c + c];
                            acc = bf_wrap_add(acc, bf_decode(d, o, ((int64_t)ky * f_w + kx) * out_c + o) *
                                                       (v + p->input_offset));
                        }
                    }
                    out[o] = bf_requant(acc, o, p->multiplier, p->shift, p->output_offset,
                                        p->act_min, p->act_max);
                }
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Public kernels: copy the format-specific params into the generic geometry and decoder.    */

#define BF_FC_GEOM(p)                                                                         \
    { (p)->batches, (p)->depth, (p)->units, (p)->input_offset, (p)->output_offset,           \
      (p)->act_min, (p)->act_max, (p)->bias, (p)->multiplier, (p)->shift }

#define BF_CONV_GEOM(p, mult)                                                                 \
    { (p)->input, (p)->filter, (p)->output, (mult), (p)->stride_h, (p)->stride_w,             \
      (p)->dilation_h, (p)->dilation_w, (p)->pad_top, (p)->pad_left, (p)->input_offset,       \
      (p)->output_offset, (p)->act_min, (p)->act_max, (p)->bias, (p)->multiplier, (p)->shift }

void bf_fully_connected_packed_s8(const bf_fully_connected_packed_s8_params *p,
                                  const int8_t *input, int8_t *output) {
    const bf_fc_geom g = BF_FC_GEOM(p);
    const bf_decoder d = {p->weights, p->bits, NULL, 0};
    bf_fc_generic(&g, &d, input, output);
}

void bf_conv2d_packed_s8(const bf_conv2d_packed_s8_params *p, const int8_t *input,
                         int8_t *output) {
    const bf_conv_geom g = BF_CONV_GEOM(p, 1);
    const bf_decoder d = {p->weights, p->bits, NULL, 0};
    bf_conv_generic(&g, &d, input, output);
}

void bf_depthwise_conv2d_packed_s8(const bf_depthwise_conv2d_packed_s8_params *p,
                                   const int8_t *input, int8_t *output) {
    const bf_conv_geom g = BF_CONV_GEOM(p, p->depth_multiplier);
    const bf_decoder d = {p->weights, p->bits, NULL, 0};
    bf_depthwise_generic(&g, &d, input, output);
}

void bf_fully_connected_codebook_s8(const bf_fully_connected_codebook_s8_params *p,
                                    const int8_t *input, int8_t *output) {
    const bf_fc_geom g = BF_FC_GEOM(p);
    const bf_decoder d = {p->indices, p->bits, p->codebook, p->codebook_stride};
    bf_fc_generic(&g, &d, input, output);
}

void bf_conv2d_codebook_s8(const bf_conv2d_codebook_s8_params *p, const int8_t *input,
                           int8_t *output) {
    const bf_conv_geom g = BF_CONV_GEOM(p, 1);
    const bf_decoder d = {p->indices, p->bits, p->codebook, p->codebook_stride};
    bf_conv_generic(&g, &d, input, output);
}

void bf_depthwise_conv2d_codebook_s8(const bf_depthwise_conv2d_codebook_s8_params *p,
                                     const int8_t *input, int8_t *output) {
    const bf_conv_geom g = BF_CONV_GEOM(p, p->depth_multiplier);
    const bf_decoder d = {p->indices, p->bits, p->codebook, p->codebook_stride};
    bf_depthwise_generic(&g, &d, input, output);
}
