/*
 * Cortex-M DSP FULLY_CONNECTED int8: each input row is expanded once into caller-owned scratch
 * as int16 (x + input_offset), quads reordered (x0, x2, x1, x3), and two units are accumulated
 * per pass with SMLAD on SXTB16-expanded weight words (as CMSIS-NN's arm_nn_vec_mat_mult_t_s8).
 *
 * A filter zero point (per-tensor asymmetric filters) is the exact identity
 *     sum (w + fo)(x + io) = sum w (x + io) + fo * sum (x + io),
 * the second sum taken once per row.  The requantization is the reference's, through
 * bf_opt_fc_requant (opt/bf_opt_util.h), so it follows ref/fully_connected.c.
 *
 * Scratch: round_up(depth, 4) int16 (lower.py's rule for "armv7em").  bf_fully_connected_f32 is
 * the reference kernel.
 */
#include "bf_kernels.h"

#define bf_fully_connected_s8 bf_ref_fully_connected_s8
#define bf_fully_connected_s8_scratch_bytes bf_ref_fully_connected_s8_scratch_bytes
#include "../ref/fully_connected.c"
#undef bf_fully_connected_s8
#undef bf_fully_connected_s8_scratch_bytes

#include "../opt/bf_opt_util.h"
#include "bf_dsp.h"

size_t bf_fully_connected_s8_scratch_bytes(const bf_fully_connected_s8_params *p) {
    return (size_t)2 * (size_t)bf_opt_round_up(p->depth, 4);
}

/* x + io as int16, quads reordered; returns the sum of x + io. */
static int32_t bf_dsp_fc_row(const int8_t *in, int32_t depth, int32_t io, int16_t *q) {
    const uint32_t offset2 = bf_dsp_pack16(io, io);
    uint32_t *dst = (uint32_t *)(void *)q;
    int32_t sum = 0, d;
    for (d = 0; d + 4 <= depth; d += 4) {
        const uint32_t v = bf_opt_load_u32(in + d);
        const uint32_t x02 = bf_dsp_sadd16(bf_dsp_sxtb16(v), offset2);
        const uint32_t x13 = bf_dsp_sadd16(bf_dsp_sxtb16_ror8(v), offset2);
        dst[d / 2] = x02;
        dst[d / 2 + 1] = x13;
        sum += bf_dsp_lo16(x02) + bf_dsp_hi16(x02) + bf_dsp_lo16(x13) + bf_dsp_hi16(x13);
    }
    for (; d < depth; ++d) {
        q[d] = (int16_t)(in[d] + io);
        sum += q[d];
    }
    return sum;
}

void bf_fully_connected_s8(const bf_fully_connected_s8_params *p, const int8_t *input,
                           const int8_t *weights, const int32_t *bias, int8_t *output,
                           void *scratch) {
    const int32_t depth = p->depth, d4 = depth & ~3;
    int16_t *q = (int16_t *)scratch;
    int32_t b, u, d;
    for (b = 0; b < p->batches; ++b) {
        const int32_t xsum = bf_dsp_fc_row(input + (int64_t)b * depth, depth, p->input_offset, q);
        const int32_t extra = p->filter_offset * xsum;
        int8_t *out = output + (int64_t)b * p->units;
        for (u = 0; u + 1 < p->units; u += 2) {
            const int8_t *w0 = weights + (int64_t)u * depth;
            const int8_t *w1 = w0 + depth;
            int32_t a0 = extra, a1 = extra;
            for (d = 0; d < d4; d += 4) {
                const uint32_t wa = bf_opt_load_u32(w0 + d), wb = bf_opt_load_u32(w1 + d);
                const uint32_t x02 = bf_opt_load_u32(q + d), x13 = bf_opt_load_u32(q + d + 2);
                a0 = bf_dsp_smlad(bf_dsp_sxtb16(wa), x02, a0);
                a0 = bf_dsp_smlad(bf_dsp_sxtb16_ror8(wa), x13, a0);
                a1 = bf_dsp_smlad(bf_dsp_sxtb16(wb), x02, a1);
                a1 = bf_dsp_smlad(bf_dsp_sxtb16_ror8(wb), x13, a1);
            }
            for (; d < depth; ++d) {
                a0 += w0[d] * q[d];
                a1 += w1[d] * q[d];
            }
            if (bias != NULL) {
                a0 += bias[u];
                a1 += bias[u + 1];
            }
            out[u] = bf_opt_fc_requant(p, u, a0);
            out[u + 1] = bf_opt_fc_requant(p, u + 1, a1);
        }
        if (u < p->units) {
            const int8_t *w = weights + (int64_t)u * depth;
            int32_t a = extra;
            for (d = 0; d < d4; d += 4) {
                const uint32_t wv = bf_opt_load_u32(w + d);
                a = bf_dsp_smlad(bf_dsp_sxtb16(wv), bf_opt_load_u32(q + d), a);
                a = bf_dsp_smlad(bf_dsp_sxtb16_ror8(wv), bf_opt_load_u32(q + d + 2), a);
            }
            for (; d < depth; ++d) {
                a += w[d] * q[d];
            }
            if (bias != NULL) {
                a += bias[u];
            }
            out[u] = bf_opt_fc_requant(p, u, a);
        }
    }
}
