/*
 * Cortex-M DSP (armv7e-m, armv8-m.main) CONV_2D int8: im2col into caller-owned scratch + a
 * SMLAD matrix product, in the manner of CMSIS-NN's arm_convolve_s8.
 *
 * Per output position the window is copied into one int8 column in weight order (taps in the
 * padding hold the input zero point, so that x + input_offset = 0 there: the same sum as the
 * reference's skipped taps).  The product loop expands words on the fly: SXTAB16 / SXTAB16
 * ROR 8 give a column word's (x0 + io, x2 + io) and (x1 + io, x3 + io), SXTB16 / SXTB16 ROR 8 a
 * weight word's (w0, w2) and (w1, w3), and two SMLADs accumulate the four products.  Two output
 * channels × two positions are accumulated per pass (each weight and column word is loaded and
 * expanded once per 8 MACs).  Then the reference's per-channel requantization.
 *
 * Scratch: 2 columns of round_up(K, 4) int8, K = KH * KW * C_in (firmware_gen/lower.py's rule
 * for "armv7em" is the Python twin).  Grouped convolutions run the reference code (no scratch).
 * bf_conv2d_f32 is the reference kernel.
 */
#include "bf_kernels.h"

#define bf_conv2d_s8 bf_ref_conv2d_s8
#define bf_conv2d_s8_scratch_bytes bf_ref_conv2d_s8_scratch_bytes
#include "../ref/conv.c"
#undef bf_conv2d_s8
#undef bf_conv2d_s8_scratch_bytes

#include "../opt/bf_opt_util.h"
#include "bf_dsp.h"

static int bf_dsp_conv_plain(const bf_conv2d_s8_params *p) {
    return p->filter.c == p->input.c;
}

size_t bf_conv2d_s8_scratch_bytes(const bf_conv2d_s8_params *p) {
    const int32_t k = p->filter.h * p->filter.w * p->filter.c;
    return bf_dsp_conv_plain(p) ? (size_t)2 * (size_t)bf_opt_round_up(k, 4) : 0;
}

/* The window of output position (b, oy, ox) as one int8 column (zero point in the padding). */
static void bf_dsp_im2col(const bf_conv2d_s8_params *p, const int8_t *input, int32_t b, int32_t oy,
                          int32_t ox, int8_t *col) {
    const int32_t in_h = p->input.h, in_w = p->input.w, c = p->input.c;
    const int32_t y0 = oy * p->stride_h - p->pad_top, x0 = ox * p->stride_w - p->pad_left;
    const int8_t zp = (int8_t)(-p->input_offset);
    int32_t ky, kx, n = 0;
    for (ky = 0; ky < p->filter.h; ++ky) {
        const int32_t y = y0 + ky * p->dilation_h;
        for (kx = 0; kx < p->filter.w; ++kx, n += c) {
            const int32_t x = x0 + kx * p->dilation_w;
            if (y < 0 || y >= in_h || x < 0 || x >= in_w) {
                memset(col + n, zp, (size_t)c);
            } else {
                memcpy(col + n, input + (((int64_t)b * in_h + y) * in_w + x) * c, (size_t)c);
            }
        }
    }
}

/* Dot products of two weight rows with two columns (+ input offset), k values. */
static void bf_dsp_dot_2x2(const int8_t *w0, const int8_t *w1, const int8_t *c0, const int8_t *c1,
                           int32_t k, uint32_t offset2, int32_t io, int32_t acc[4]) {
    const int32_t k4 = k & ~3;
    int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0, i;
    for (i = 0; i < k4; i += 4) {
        const uint32_t wa = bf_opt_load_u32(w0 + i), wb = bf_opt_load_u32(w1 + i);
        const uint32_t xa = bf_opt_load_u32(c0 + i), xb = bf_opt_load_u32(c1 + i);
        const uint32_t wa02 = bf_dsp_sxtb16(wa), wa13 = bf_dsp_sxtb16_ror8(wa);
        const uint32_t wb02 = bf_dsp_sxtb16(wb), wb13 = bf_dsp_sxtb16_ror8(wb);
        const uint32_t x02 = bf_dsp_sxtab16(offset2, xa), x13 = bf_dsp_sxtab16_ror8(offset2, xa);
        const uint32_t y02 = bf_dsp_sxtab16(offset2, xb), y13 = bf_dsp_sxtab16_ror8(offset2, xb);
        a00 = bf_dsp_smlad(wa13, x13, bf_dsp_smlad(wa02, x02, a00));
        a01 = bf_dsp_smlad(wa13, y13, bf_dsp_smlad(wa02, y02, a01));
        a10 = bf_dsp_smlad(wb13, x13, bf_dsp_smlad(wb02, x02, a10));
        a11 = bf_dsp_smlad(wb13, y13, bf_dsp_smlad(wb02, y02, a11));
    }
    for (; i < k; ++i) {
        a00 += w0[i] * (c0[i] + io);
        a01 += w0[i] * (c1[i] + io);
        a10 += w1[i] * (c0[i] + io);
        a11 += w1[i] * (c1[i] + io);
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

static int32_t bf_dsp_dot_1x1(const int8_t *w, const int8_t *c, int32_t k, uint32_t offset2,
                              int32_t io) {
    const int32_t k4 = k & ~3;
    int32_t a = 0, i;
    for (i = 0; i < k4; i += 4) {
        const uint32_t wv = bf_opt_load_u32(w + i), xv = bf_opt_load_u32(c + i);
        a = bf_dsp_smlad(bf_dsp_sxtb16(wv), bf_dsp_sxtab16(offset2, xv), a);
        a = bf_dsp_smlad(bf_dsp_sxtb16_ror8(wv), bf_dsp_sxtab16_ror8(offset2, xv), a);
    }
    for (; i < k; ++i) {
        a += w[i] * (c[i] + io);
    }
    return a;
}

static int8_t bf_dsp_conv_out(const bf_conv2d_s8_params *p, const int32_t *bias, int32_t o,
                              int32_t acc) {
    if (bias != NULL) {
        acc += bias[o];
    }
    return bf_opt_requant(acc, p->multiplier[o], p->shift[o], p->output_offset, p->act_min,
                          p->act_max);
}

/* Outputs of 1 or 2 positions whose columns are ready. */
static void bf_dsp_conv_columns(const bf_conv2d_s8_params *p, const int8_t *filter,
                                const int32_t *bias, const int8_t *c0, const int8_t *c1,
                                int8_t *out0, int8_t *out1) {
    const int32_t k = p->filter.h * p->filter.w * p->filter.c;
    const int32_t out_c = p->output.c, io = p->input_offset;
    const uint32_t offset2 = bf_dsp_pack16(io, io);
    int32_t o, acc[4];
    for (o = 0; o + 1 < out_c; o += 2) {
        const int8_t *w0 = filter + (int64_t)o * k;
        if (c1 != NULL) {
            bf_dsp_dot_2x2(w0, w0 + k, c0, c1, k, offset2, io, acc);
            out1[o] = bf_dsp_conv_out(p, bias, o, acc[1]);
            out1[o + 1] = bf_dsp_conv_out(p, bias, o + 1, acc[3]);
        } else {
            acc[0] = bf_dsp_dot_1x1(w0, c0, k, offset2, io);
            acc[2] = bf_dsp_dot_1x1(w0 + k, c0, k, offset2, io);
        }
        out0[o] = bf_dsp_conv_out(p, bias, o, acc[0]);
        out0[o + 1] = bf_dsp_conv_out(p, bias, o + 1, acc[2]);
    }
    if (o < out_c) {
        const int8_t *w = filter + (int64_t)o * k;
        out0[o] = bf_dsp_conv_out(p, bias, o, bf_dsp_dot_1x1(w, c0, k, offset2, io));
        if (c1 != NULL) {
            out1[o] = bf_dsp_conv_out(p, bias, o, bf_dsp_dot_1x1(w, c1, k, offset2, io));
        }
    }
}

void bf_conv2d_s8(const bf_conv2d_s8_params *p, const int8_t *input, const int8_t *filter,
                  const int32_t *bias, int8_t *output, void *scratch) {
    const int32_t k = p->filter.h * p->filter.w * p->filter.c;
    const int32_t per_image = p->output.h * p->output.w;
    const int64_t total = (int64_t)p->output.n * per_image;
    int8_t *col0 = (int8_t *)scratch;
    int8_t *col1 = col0 + bf_opt_round_up(k, 4);
    int64_t pos;
    if (!bf_dsp_conv_plain(p)) {
        bf_ref_conv2d_s8(p, input, filter, bias, output, scratch);
        return;
    }
    for (pos = 0; pos < total; pos += 2) {
        const int32_t b0 = (int32_t)(pos / per_image), r0 = (int32_t)(pos % per_image);
        int8_t *out0 = output + pos * p->output.c;
        bf_dsp_im2col(p, input, b0, r0 / p->output.w, r0 % p->output.w, col0);
        if (pos + 1 < total) {
            const int32_t b1 = (int32_t)((pos + 1) / per_image), r1 = (int32_t)((pos + 1) % per_image);
            bf_dsp_im2col(p, input, b1, r1 / p->output.w, r1 % p->output.w, col1);
            bf_dsp_conv_columns(p, filter, bias, col0, col1, out0, out0 + p->output.c);
        } else {
            bf_dsp_conv_columns(p, filter, bias, col0, NULL, out0, NULL);
        }
    }
}
