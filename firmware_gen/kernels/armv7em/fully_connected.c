/*
 * Cortex-M DSP FULLY_CONNECTED int8, no scratch: two units per pass over the input row, as
 * CMSIS-NN's arm_nn_vec_mat_mult_t_s8 does.
 *
 * Every input word is expanded once per two units with the input offset added on the way
 * (SXTAB16 / SXTAB16 ROR 8: (x0 + io, x2 + io) and (x1 + io, x3 + io)); each weight word is
 * split by SXTB16 / SXTB16 ROR 8 into (w0, w2) and (w1, w3), and two SMLADs accumulate its four
 * products: 15 instructions per 8 MACs.  An odd last unit goes alone; depth % 4 is scalar.
 *
 * A filter zero point (per-tensor asymmetric filters) is the exact identity
 *     sum (w + fo)(x + io) = sum w (x + io) + fo * sum (x + io),
 * the second sum taken once per row.  The requantization is the reference's, through
 * bf_opt_fc_requant (opt/bf_opt_util.h), so it follows ref/fully_connected.c.
 * bf_fully_connected_f32 is the reference kernel.
 */
#include "bf_kernels.h"

#define bf_fully_connected_s8 bf_ref_fully_connected_s8
#include "../ref/fully_connected.c"
#undef bf_fully_connected_s8

#include "../opt/bf_opt_util.h"
#include "bf_dsp.h"

/* Dot products of `rows` (2 or 1) consecutive weight rows with x + io over depth & ~3.  Two
 * rows keep every pointer, accumulator and the offset pair in registers (no spills on
 * Armv7-M): 15 instructions per 8 MACs. */
static void bf_dsp_fc_rows(const int8_t *w, int32_t depth, const int8_t *x, uint32_t offset2,
                           int32_t rows, int32_t *acc) {
    const int8_t *px = x, *end = x + (depth & ~3);
    const int8_t *p0 = w, *p1 = rows == 2 ? w + depth : w;
    int32_t a0 = 0, a1 = 0;
    while (px < end) {
        const uint32_t xv = bf_opt_load_u32(px);
        const uint32_t x02 = bf_dsp_sxtab16(offset2, xv), x13 = bf_dsp_sxtab16_ror8(offset2, xv);
        const uint32_t w0 = bf_opt_load_u32(p0), w1 = bf_opt_load_u32(p1);
        a0 = bf_dsp_smlad(bf_dsp_sxtb16_ror8(w0), x13, bf_dsp_smlad(bf_dsp_sxtb16(w0), x02, a0));
        a1 = bf_dsp_smlad(bf_dsp_sxtb16_ror8(w1), x13, bf_dsp_smlad(bf_dsp_sxtb16(w1), x02, a1));
        px += 4;
        p0 += 4;
        p1 += 4;
    }
    acc[0] = a0;
    acc[1] = a1;
}

void bf_fully_connected_s8(const bf_fully_connected_s8_params *p, const int8_t *input,
                           const int8_t *weights, const int32_t *bias, int8_t *output,
                           void *scratch) {
    const int32_t depth = p->depth, d4 = depth & ~3, io = p->input_offset;
    const uint32_t offset2 = bf_dsp_pack16(io, io);
    int32_t b, u, r, d;
    (void)scratch;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = input + (int64_t)b * depth;
        int8_t *out = output + (int64_t)b * p->units;
        int32_t xsum = 0, extra;
        if (p->filter_offset != 0) {
            for (d = 0; d < depth; ++d) {
                xsum += x[d] + io;
            }
        }
        extra = p->filter_offset * xsum;
        for (u = 0; u < p->units;) {
            const int32_t rows = p->units - u >= 2 ? 2 : 1;
            const int8_t *w = weights + (int64_t)u * depth;
            int32_t acc[2];
            bf_dsp_fc_rows(w, depth, x, offset2, rows, acc);
            for (r = 0; r < rows; ++r) {
                int32_t a = acc[r] + extra;
                for (d = d4; d < depth; ++d) {
                    a += w[(int64_t)r * depth + d] * (x[d] + io);
                }
                if (bias != NULL) {
                    a += bias[u + r];
                }
                out[u + r] = bf_opt_fc_requant(p, u + r, a);
            }
            u += rows;
        }
    }
}
