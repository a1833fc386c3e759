/*
 * NEON CONV_2D int8 (AArch64 and Armv7-A): im2col into caller-owned scratch + an int8 GEMM.
 *
 * The input offset is taken out of the inner loop by the exact identity
 *     sum_k w_k (x_k + io) = sum_k w_k x_k + io * sum_k w_k,
 * with padded taps filled with the input zero point (x = -io, contributing exactly 0, as the
 * reference's skipped taps do).  So columns stay int8 and a multiply step is
 *   - with the dot-product extension (__ARM_FEATURE_DOTPROD, e.g. Cortex-A76): one SDOT per
 *     16 MACs;
 *   - without it: SMULL + SMLAL (two products summed in int16) + SADALP per 16 MACs, or SMULL +
 *     SMULL2 + 2 SADALP when the filter holds a -128 (then two products could overflow int16;
 *     the filter is scanned once per call, together with its row sums).
 * Two output channels × four positions are accumulated per pass over K (weight rows and
 * columns each loaded once per 8 dot products); the K % 16 tail uses zero-padded copies of the
 * weight rows (columns are padded in scratch).  Then the reference's per-channel requantization.
 *
 * Scratch (lower.py's "neon" rule is the twin): 4 columns of round_up(K, 16) int8, then C_out
 * int32 filter row sums.  Grouped convolutions run the reference code.  bf_conv2d_f32 is the
 * reference kernel.
 */
#include "bf_kernels.h"

#define bf_conv2d_s8 bf_ref_conv2d_s8
#define bf_conv2d_s8_scratch_bytes bf_ref_conv2d_s8_scratch_bytes
#include "../ref/conv.c"
#undef bf_conv2d_s8
#undef bf_conv2d_s8_scratch_bytes

#include "../opt/bf_opt_util.h"
#include "bf_neon.h"

#define BF_NEON_COLS 4

static int bf_neon_conv_plain(const bf_conv2d_s8_params *p) {
    return p->filter.c == p->input.c;
}

size_t bf_conv2d_s8_scratch_bytes(const bf_conv2d_s8_params *p) {
    const int32_t k = p->filter.h * p->filter.w * p->filter.c;
    if (!bf_neon_conv_plain(p)) {
        return 0;
    }
    return (size_t)BF_NEON_COLS * (size_t)bf_opt_round_up(k, 16) + 4 * (size_t)p->output.c;
}

#if defined(__ARM_NEON)

/* Row sums of the filter; returns whether any weight is -128. */
static int bf_neon_filter_sums(const int8_t *filter, int32_t rows, int32_t k, int32_t *sums) {
    int32_t o, i;
    uint8x16_t any = vdupq_n_u8(0);
    int tail_min = 0;
    for (o = 0; o < rows; ++o) {
        const int8_t *w = filter + (int64_t)o * k;
        int32x4_t acc = vdupq_n_s32(0);
        int32_t s;
        for (i = 0; i + 16 <= k; i += 16) {
            const int8x16_t v = vld1q_s8(w + i);
            acc = vpadalq_s16(acc, vpaddlq_s8(v));
            any = vorrq_u8(any, vceqq_s8(v, vdupq_n_s8(-128)));
        }
        s = bf_neon_hsum_s32(acc);
        for (; i < k; ++i) {
            s += w[i];
            tail_min |= w[i] == -128;
        }
        sums[o] = s;
    }
#if defined(__aarch64__)
    return tail_min || vmaxvq_u8(any) != 0;
#else
    {
        const uint8x8_t m = vorr_u8(vget_low_u8(any), vget_high_u8(any));
        return tail_min || vget_lane_u64(vreinterpret_u64_u8(m), 0) != 0;
    }
#endif
}

/* Column of position (b, oy, ox): the window in weight order, zero point in the padding,
 * zeros up to k16. */
static void bf_neon_im2col(const bf_conv2d_s8_params *p, const int8_t *input, int32_t b, int32_t oy,
                           int32_t ox, int8_t *col, int32_t k16) {
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
    memset(col + n, 0, (size_t)(k16 - n));
}

/* acc[r][j] = w_r · col_j over k (2 rows, 4 columns). */
static void bf_neon_block(const int8_t *w0, const int8_t *w1, const int8_t *const *col, int32_t k,
                          int fast, int32_t out[2][BF_NEON_COLS]) {
    int32x4_t a[2][BF_NEON_COLS];
    int8_t tail[2][16];
    const int32_t k16 = k & ~15;
    int32_t i, j, r;
    (void)fast;
    for (r = 0; r < 2; ++r) {
        for (j = 0; j < BF_NEON_COLS; ++j) {
            a[r][j] = vdupq_n_s32(0);
        }
    }
    /* One pass of the main loop and, if K % 16, one over the zero-padded tails. */
    for (i = 0; i <= k16; i += 16) {
        int8x16_t wa, wb;
        if (i == k16) {
            if (i == k) {
                break;
            }
            memset(tail, 0, sizeof tail);
            memcpy(tail[0], w0 + i, (size_t)(k - i));
            memcpy(tail[1], w1 + i, (size_t)(k - i));
            wa = vld1q_s8(tail[0]);
            wb = vld1q_s8(tail[1]);
        } else {
            wa = vld1q_s8(w0 + i);
            wb = vld1q_s8(w1 + i);
        }
#if defined(__ARM_FEATURE_DOTPROD)
#pragma GCC unroll 4
        for (j = 0; j < BF_NEON_COLS; ++j) {
            const int8x16_t x = vld1q_s8(col[j] + i);
            a[0][j] = vdotq_s32(a[0][j], wa, x);
            a[1][j] = vdotq_s32(a[1][j], wb, x);
        }
#else
        if (fast) {
#pragma GCC unroll 4
            for (j = 0; j < BF_NEON_COLS; ++j) {
                const int8x16_t x = vld1q_s8(col[j] + i);
                a[0][j] = bf_neon_dot16_fast(a[0][j], wa, x);
                a[1][j] = bf_neon_dot16_fast(a[1][j], wb, x);
            }
        } else {
#pragma GCC unroll 4
            for (j = 0; j < BF_NEON_COLS; ++j) {
                const int8x16_t x = vld1q_s8(col[j] + i);
                a[0][j] = bf_neon_dot16_safe(a[0][j], wa, x);
                a[1][j] = bf_neon_dot16_safe(a[1][j], wb, x);
            }
        }
#endif
    }
    for (r = 0; r < 2; ++r) {
        for (j = 0; j < BF_NEON_COLS; ++j) {
            out[r][j] = bf_neon_hsum_s32(a[r][j]);
        }
    }
}

void bf_conv2d_s8(const bf_conv2d_s8_params *p, const int8_t *input, const int8_t *filter,
                  const int32_t *bias, int8_t *output, void *scratch) {
    const int32_t k = p->filter.h * p->filter.w * p->filter.c;
    const int32_t k16 = bf_opt_round_up(k, 16);
    const int32_t out_c = p->output.c, per_image = p->output.h * p->output.w;
    const int64_t total = (int64_t)p->output.n * per_image;
    int8_t *cols = (int8_t *)scratch;
    int32_t *sums = (int32_t *)(void *)(cols + (int64_t)BF_NEON_COLS * k16);
    const int8_t *col[BF_NEON_COLS];
    int64_t pos;
    int fast;
    if (!bf_neon_conv_plain(p)) {
        bf_ref_conv2d_s8(p, input, filter, bias, output, scratch);
        return;
    }
    fast = !bf_neon_filter_sums(filter, out_c, k, sums);
    for (pos = 0; pos < total; pos += BF_NEON_COLS) {
        const int32_t np = total - pos < BF_NEON_COLS ? (int32_t)(total - pos) : BF_NEON_COLS;
        int32_t j, o, r;
        for (j = 0; j < BF_NEON_COLS; ++j) {
            /* Missing columns of the last tile repeat column 0 (their results are dropped). */
            const int32_t b = (int32_t)((pos + j) / per_image), rem = (int32_t)((pos + j) % per_image);
            col[j] = j < np ? cols + (int64_t)j * k16 : cols;
            if (j < np) {
                bf_neon_im2col(p, input, b, rem / p->output.w, rem % p->output.w, cols + (int64_t)j * k16,
                               k16);
            }
        }
        for (o = 0; o < out_c; o += 2) {
            const int32_t rows = out_c - o < 2 ? 1 : 2;
            const int8_t *w0 = filter + (int64_t)o * k;
            int32_t acc[2][BF_NEON_COLS];
            bf_neon_block(w0, rows == 2 ? w0 + k : w0, col, k, fast, acc);
            for (r = 0; r < rows; ++r) {
                const int32_t base = p->input_offset * sums[o + r] + (bias != NULL ? bias[o + r] : 0);
                for (j = 0; j < np; ++j) {
                    output[(pos + j) * out_c + o + r] =
                        bf_opt_requant(acc[r][j] + base, p->multiplier[o + r], p->shift[o + r],
                                       p->output_offset, p->act_min, p->act_max);
                }
            }
        }
    }
}

#else /* no NEON: the reference kernel */

void bf_conv2d_s8(const bf_conv2d_s8_params *p, const int8_t *input, const int8_t *filter,
                  const int32_t *bias, int8_t *output, void *scratch) {
    bf_ref_conv2d_s8(p, input, filter, bias, output, scratch);
}

#endif
