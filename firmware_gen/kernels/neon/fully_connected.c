/*
 * NEON FULLY_CONNECTED int8: four units per pass over the input row.
 *
 * With io = input_offset and fo = filter_offset the reference sum is, exactly,
 *     sum (w + fo)(x + io) = sum w x + io * sum w + fo * sum x + depth * fo * io,
 * so the inner loop multiplies raw int8 vectors: SDOT where the core has the dot-product
 * extension (and a second SDOT against ones for sum w), else SMULL/SMULL2 + SADALP (exact for
 * any int8 weights) and SADALP for sum w.  The depth % 16 tail is scalar.  The requantization is
 * the reference's, through bf_opt_fc_requant (opt/bf_opt_util.h), so it follows
 * ref/fully_connected.c.  No scratch.  bf_fully_connected_f32 is the reference kernel.
 */
#include "bf_kernels.h"

#define bf_fully_connected_s8 bf_ref_fully_connected_s8
#include "../ref/fully_connected.c"
#undef bf_fully_connected_s8

#include "../opt/bf_opt_util.h"
#include "bf_neon.h"

#if defined(__ARM_NEON)

/* dot[r] = sum w_r x, wsum[r] = sum w_r over depth, for `rows` (1 or 4) consecutive units. */
static void bf_neon_fc_rows(const int8_t *w, int32_t depth, const int8_t *x, int32_t rows,
                            int32_t *dot, int32_t *wsum) {
    const int32_t d16 = depth & ~15;
    int32x4_t acc[4], sw[4];
    int32_t r, d;
#if defined(__ARM_FEATURE_DOTPROD)
    const int8x16_t ones = vdupq_n_s8(1);
#endif
    for (r = 0; r < 4; ++r) {
        acc[r] = vdupq_n_s32(0);
        sw[r] = vdupq_n_s32(0);
    }
    if (rows == 4) {
        for (d = 0; d < d16; d += 16) {
            const int8x16_t xv = vld1q_s8(x + d);
#pragma GCC unroll 4
            for (r = 0; r < 4; ++r) {
                const int8x16_t wv = vld1q_s8(w + (int64_t)r * depth + d);
#if defined(__ARM_FEATURE_DOTPROD)
                acc[r] = vdotq_s32(acc[r], wv, xv);
                sw[r] = vdotq_s32(sw[r], wv, ones);
#else
                acc[r] = bf_neon_dot16_safe(acc[r], wv, xv);
                sw[r] = vpadalq_s16(sw[r], vpaddlq_s8(wv));
#endif
            }
        }
    } else {
        for (d = 0; d < d16; d += 16) {
            const int8x16_t xv = vld1q_s8(x + d), wv = vld1q_s8(w + d);
#if defined(__ARM_FEATURE_DOTPROD)
            acc[0] = vdotq_s32(acc[0], wv, xv);
            sw[0] = vdotq_s32(sw[0], wv, ones);
#else
            acc[0] = bf_neon_dot16_safe(acc[0], wv, xv);
            sw[0] = vpadalq_s16(sw[0], vpaddlq_s8(wv));
#endif
        }
    }
    for (r = 0; r < rows; ++r) {
        const int8_t *wr = w + (int64_t)r * depth;
        int32_t s = bf_neon_hsum_s32(acc[r]), t = bf_neon_hsum_s32(sw[r]);
        for (d = d16; d < depth; ++d) {
            s += wr[d] * x[d];
            t += wr[d];
        }
        dot[r] = s;
        wsum[r] = t;
    }
}

void bf_fully_connected_s8(const bf_fully_connected_s8_params *p, const int8_t *input,
                           const int8_t *weights, const int32_t *bias, int8_t *output,
                           void *scratch) {
    const int32_t depth = p->depth, io = p->input_offset, fo = p->filter_offset;
    int32_t b, u, r, d;
    (void)scratch;
    for (b = 0; b < p->batches; ++b) {
        const int8_t *x = input + (int64_t)b * depth;
        int8_t *out = output + (int64_t)b * p->units;
        int32_t xsum = 0, constant;
        for (d = 0; d < depth; ++d) {
            xsum += x[d];
        }
        constant = fo * xsum + depth * fo * io;
        for (u = 0; u < p->units;) {
            /* four units at a time, the last units % 4 one by one */
            const int32_t rows = p->units - u >= 4 ? 4 : 1;
            int32_t dot[4], wsum[4];
            bf_neon_fc_rows(weights + (int64_t)u * depth, depth, x, rows, dot, wsum);
            for (r = 0; r < rows; ++r) {
                int32_t acc = dot[r] + io * wsum[r] + constant;
                if (bias != NULL) {
                    acc += bias[u + r];
                }
                out[u + r] = bf_opt_fc_requant(p, u + r, acc);
            }
            u += rows;
        }
    }
}

#else /* no NEON: the reference kernel */

void bf_fully_connected_s8(const bf_fully_connected_s8_params *p, const int8_t *input,
                           const int8_t *weights, const int32_t *bias, int8_t *output,
                           void *scratch) {
    bf_ref_fully_connected_s8(p, input, weights, bias, output, scratch);
}

#endif
