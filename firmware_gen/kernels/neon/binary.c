/*
 * NEON variant of the XNOR-popcount kernels of bf_binary.h (AArch64 and Armv7-A).
 *
 * The shared tiled driver (opt/bf_xnor_tiled.h) with NEON hooks:
 *   - popcount: VEOR + VCNT (bytes) + VPADAL.U8 into 16-bit lanes, 128 bits per step, up to 4
 *     activation rows per pass over a weight plane; one across-vector add per row at the end;
 *   - binarization of activations: VCGE on 16 int8 lanes, AND with the bit weights
 *     1, 2, 4 … 128 and three VPADDs turn 32 comparisons into one packed word.
 * The im2col tile lives on the stack (4096 words = 16 KiB; Linux targets).  BWN kernels
 * (binary weights, int8 activations) are the reference kernels.  Without __ARM_NEON the file
 * compiles the portable hooks of opt/bf_xnor_scalar32.h.
 */
#include "bf_binary.h"

#define bf_conv2d_xnor_s8 bf_ref_conv2d_xnor_s8
#define bf_fully_connected_xnor_s8 bf_ref_fully_connected_xnor_s8
#include "../ref/binary.c"
#undef bf_conv2d_xnor_s8
#undef bf_fully_connected_xnor_s8

#include <string.h>

#include "../opt/bf_opt_util.h"
#include "bf_neon.h"

#define BF_XT_TILE_WORDS 4096

#if defined(__ARM_NEON)

#define BF_XT_ROW_ALIGN 4

static inline int32_t bf_xt_pop32(uint32_t x) {
    const uint8x8_t c = vcnt_u8(vcreate_u8((uint64_t)x));
    return (int32_t)vget_lane_u64(vpaddl_u32(vpaddl_u16(vpaddl_u8(c))), 0);
}

static inline uint32_t bf_xt_ge_mask(const int8_t *x, int32_t n, int32_t t) {
    static const uint8_t weights[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
    const uint32_t valid = n == 32 ? 0xFFFFFFFFu : (((uint32_t)1u << n) - 1u);
    int8_t buf[32];
    const int8_t *src = x;
    uint8x16_t b0, b1;
    uint8x8_t s;
    if (t <= -128) {
        return valid;
    }
    if (t > 127) {
        return 0u;
    }
    if (n < 32) {
        memset(buf, 0, sizeof buf);
        memcpy(buf, x, (size_t)n);
        src = buf;
    }
    {
        const uint8x16_t bw = vld1q_u8(weights);
        const int8x16_t tv = vdupq_n_s8((int8_t)t);
        b0 = vandq_u8(vcgeq_s8(vld1q_s8(src), tv), bw);
        b1 = vandq_u8(vcgeq_s8(vld1q_s8(src + 16), tv), bw);
    }
    /* pairs, quads, then octets: bytes b0.lo, b0.hi, b1.lo, b1.hi = bits 0-7 … 24-31 */
    s = vpadd_u8(vpadd_u8(vget_low_u8(b0), vget_high_u8(b0)), vpadd_u8(vget_low_u8(b1), vget_high_u8(b1)));
    s = vpadd_u8(s, s);
    return vget_lane_u32(vreinterpret_u32_u8(s), 0) & valid;
}

static inline uint16x8_t bf_neon_xorcount(uint16x8_t acc, uint32x4_t w, const uint32_t *a) {
    return vpadalq_u8(acc, vcntq_u8(vreinterpretq_u8_u32(veorq_u32(w, vld1q_u32(a)))));
}

static void bf_xt_dot(const uint32_t *w, int32_t L, const uint32_t *rows, int32_t stride,
                      int32_t nrows, int32_t *xors, int32_t *ones) {
    const int32_t L4 = L & ~3;
    uint32_t tail[4] = {0u, 0u, 0u, 0u};
    uint32x4_t wt;
    uint16x8_t accw = vdupq_n_u16(0);
    int32_t r0, r, i;
    memcpy(tail, w + L4, (size_t)(L - L4) * sizeof(uint32_t));
    wt = vld1q_u32(tail);
    for (i = 0; i < L4; i += 4) {
        accw = vpadalq_u8(accw, vcntq_u8(vreinterpretq_u8_u32(vld1q_u32(w + i))));
    }
    accw = vpadalq_u8(accw, vcntq_u8(vreinterpretq_u8_u32(wt)));
    *ones = bf_neon_hsum_u16(accw);
    for (r0 = 0; r0 < nrows; r0 += 4) {
        const int32_t nr = nrows - r0 < 4 ? nrows - r0 : 4;
        const uint32_t *row = rows + (int64_t)r0 * stride;
        uint16x8_t a0 = vdupq_n_u16(0), a1 = a0, a2 = a0, a3 = a0;
        if (nr == 4) {
            const uint32_t *p1 = row + stride, *p2 = row + 2 * stride, *p3 = row + 3 * stride;
            for (i = 0; i < L4; i += 4) {
                const uint32x4_t wv = vld1q_u32(w + i);
                a0 = bf_neon_xorcount(a0, wv, row + i);
                a1 = bf_neon_xorcount(a1, wv, p1 + i);
                a2 = bf_neon_xorcount(a2, wv, p2 + i);
                a3 = bf_neon_xorcount(a3, wv, p3 + i);
            }
            if (L4 < L) { /* rows are zero-padded to a multiple of 4 words */
                a0 = bf_neon_xorcount(a0, wt, row + L4);
                a1 = bf_neon_xorcount(a1, wt, p1 + L4);
                a2 = bf_neon_xorcount(a2, wt, p2 + L4);
                a3 = bf_neon_xorcount(a3, wt, p3 + L4);
            }
            xors[r0] = bf_neon_hsum_u16(a0);
            xors[r0 + 1] = bf_neon_hsum_u16(a1);
            xors[r0 + 2] = bf_neon_hsum_u16(a2);
            xors[r0 + 3] = bf_neon_hsum_u16(a3);
        } else {
            for (r = 0; r < nr; ++r) {
                const uint32_t *pr = row + (int64_t)r * stride;
                a0 = vdupq_n_u16(0);
                for (i = 0; i < L4; i += 4) {
                    a0 = bf_neon_xorcount(a0, vld1q_u32(w + i), pr + i);
                }
                if (L4 < L) {
                    a0 = bf_neon_xorcount(a0, wt, pr + L4);
                }
                xors[r0 + r] = bf_neon_hsum_u16(a0);
            }
        }
    }
}

#else /* no NEON: the portable SWAR hooks */

#define BF_XT_ROW_ALIGN 1
#include "../opt/bf_xnor_scalar32.h"

#endif

#include "../opt/bf_xnor_tiled.h"

void bf_conv2d_xnor_s8(const bf_conv2d_xnor_s8_params *p, const int8_t *input, int8_t *output,
                       void *scratch) {
    const bf_bin_geom g = bf_bin_conv_geom(&p->input, &p->filter, &p->output, p->stride_h,
                                           p->stride_w, p->dilation_h, p->dilation_w, p->pad_top,
                                           p->pad_left, p->words, p->planes);
    const bf_bin_tables t = {p->weights, p->coef, p->bias, p->multiplier, p->shift,
                             p->output_offset, p->act_min, p->act_max};
    bf_xt_shape s;
    if (!bf_xt_shape_for(&g, p->act_planes, &s)) {
        bf_ref_conv2d_xnor_s8(p, input, output, scratch);
        return;
    }
    bf_xt_conv(&g, &t, &s, p->act_threshold, input, output, (uint32_t *)scratch);
}

void bf_fully_connected_xnor_s8(const bf_fully_connected_xnor_s8_params *p, const int8_t *input,
                                int8_t *output, void *scratch) {
    const bf_bin_geom g = bf_bin_fc_geom(p->batches, p->depth, p->units, p->words, p->planes);
    const bf_bin_tables t = {p->weights, p->coef, p->bias, p->multiplier, p->shift,
                             p->output_offset, p->act_min, p->act_max};
    bf_xt_shape s;
    if (!bf_xt_shape_for(&g, p->act_planes, &s)) {
        bf_ref_fully_connected_xnor_s8(p, input, output, scratch);
        return;
    }
    bf_xt_fc(&g, &t, &s, p->act_threshold, input, output);
}
