/*
 * x86 AVX2 CONV_2D int8: im2col into caller-owned scratch + an int16 GEMM (VPMADDWD).
 *
 * A column holds one output position's window in weight order as int16 x + input_offset, with
 * 0 for taps in the padding (exactly what the reference's skipped taps contribute) and zeros up
 * to K16 = round_up(K, 16).  Both factors of every product fit int16 (x + io in [-255, 255],
 * int8 weights widened by VPMOVSXBW), and VPMADDWD adds two products of magnitude <= 32640
 * into an int32 lane, so the int32 accumulation is exact and equal to the reference's (integer
 * addition in another order).  Two output channels × four positions are accumulated per pass
 * over K (8 accumulators; each widened weight vector and each column vector is used four or
 * two times); the K % 16 tail uses zero-padded copies of the weight rows, the columns being
 * zero-padded in scratch.  Then the reference's per-channel requantization: eight channels of a
 * position at a time by bf_x86_requant8 (bf_x86_requant.h, bit-identical with bf_opt_requant),
 * the C_out % 8 channels by bf_opt_requant.
 *
 * Scratch (lower.py's SCRATCH_RULES["x86"] is the twin): 4 columns of K16 int16.  Grouped
 * convolutions run the reference code (no scratch).  Built without AVX2 this file is the
 * reference kernel (scratch still reserved: the size cannot depend on the build's flags).
 * bf_conv2d_f32 is the reference kernel.
 */
#include "bf_x86_target.h" /* first: it may select the instruction sets (a target pragma) */

#include "bf_kernels.h"

#define bf_conv2d_s8 bf_ref_conv2d_s8
#define bf_conv2d_s8_scratch_bytes bf_ref_conv2d_s8_scratch_bytes
#include "../ref/conv.c"
#undef bf_conv2d_s8
#undef bf_conv2d_s8_scratch_bytes

#include "../opt/bf_opt_util.h"
#include "bf_x86_requant.h"

#define BF_X86_COLS 4

static int bf_x86_conv_plain(const bf_conv2d_s8_params *p) {
    return p->filter.c == p->input.c;
}

size_t bf_conv2d_s8_scratch_bytes(const bf_conv2d_s8_params *p) {
    const int32_t k = p->filter.h * p->filter.w * p->filter.c;
    if (!bf_x86_conv_plain(p)) {
        return 0;
    }
    return (size_t)BF_X86_COLS * (size_t)bf_opt_round_up(k, 16) * sizeof(int16_t);
}

#if defined(__AVX2__)
#include <immintrin.h>

/* Column of position (b, oy, ox): x + io in weight order, 0 in the padding and up to k16. */
static void bf_x86_im2col(const bf_conv2d_s8_params *p, const int8_t *input, int32_t b, int32_t oy,
                          int32_t ox, int16_t *col, int32_t k16) {
    const int32_t in_h = p->input.h, in_w = p->input.w, c = p->input.c;
    const int32_t y0 = oy * p->stride_h - p->pad_top, x0 = ox * p->stride_w - p->pad_left;
    const int16_t io = (int16_t)p->input_offset;
    const __m256i iov = _mm256_set1_epi16(io);
    int32_t ky, kx, i, n = 0;
    for (ky = 0; ky < p->filter.h; ++ky) {
        const int32_t y = y0 + ky * p->dilation_h;
        for (kx = 0; kx < p->filter.w; ++kx, n += c) {
            const int32_t x = x0 + kx * p->dilation_w;
            if (y < 0 || y >= in_h || x < 0 || x >= in_w) {
                memset(col + n, 0, (size_t)c * sizeof(int16_t));
            } else {
                const int8_t *src = input + (((int64_t)b * in_h + y) * in_w + x) * c;
                for (i = 0; i + 16 <= c; i += 16) {
                    const __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(src + i)));
                    _mm256_storeu_si256((__m256i *)(void *)(col + n + i), _mm256_add_epi16(v, iov));
                }
                for (; i < c; ++i) {
                    col[n + i] = (int16_t)(src[i] + io);
                }
            }
        }
    }
    memset(col + n, 0, (size_t)(k16 - n) * sizeof(int16_t));
}

/* out[r][j] = w_r · col_j over k (2 weight rows, 4 columns of k16 int16). */
static void bf_x86_block(const int8_t *w0, const int8_t *w1, const int16_t *const *col, int32_t k,
                         int32_t out[2][BF_X86_COLS]) {
    __m256i a[2][BF_X86_COLS];
    int8_t tail[2][16];
    const int32_t k16 = k & ~15;
    int32_t i, j, r;
    for (r = 0; r < 2; ++r) {
        for (j = 0; j < BF_X86_COLS; ++j) {
            a[r][j] = _mm256_setzero_si256();
        }
    }
    /* One pass of the main loop and, if K % 16, one over the zero-padded weight tails. */
    for (i = 0; i <= k16; i += 16) {
        __m256i wa, wb;
        if (i == k16) {
            if (i == k) {
                break;
            }
            memset(tail, 0, sizeof tail);
            memcpy(tail[0], w0 + i, (size_t)(k - i));
            memcpy(tail[1], w1 + i, (size_t)(k - i));
            wa = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)tail[0]));
            wb = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)tail[1]));
        } else {
            wa = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(w0 + i)));
            wb = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(w1 + i)));
        }
#pragma GCC unroll 4
        for (j = 0; j < BF_X86_COLS; ++j) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(const void *)(col[j] + i));
            a[0][j] = _mm256_add_epi32(a[0][j], _mm256_madd_epi16(wa, x));
            a[1][j] = _mm256_add_epi32(a[1][j], _mm256_madd_epi16(wb, x));
        }
    }
    /* The 8 horizontal sums at once: out[r][j] is lane 4r + j of the reduction tree. */
    {
        const __m256i t0 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[0][0], a[0][1]),
                                             _mm256_hadd_epi32(a[0][2], a[0][3]));
        const __m256i t1 = _mm256_hadd_epi32(_mm256_hadd_epi32(a[1][0], a[1][1]),
                                             _mm256_hadd_epi32(a[1][2], a[1][3]));
        const __m256i sums = _mm256_add_epi32(_mm256_permute2x128_si256(t0, t1, 0x20),
                                              _mm256_permute2x128_si256(t0, t1, 0x31));
        _mm256_storeu_si256((__m256i *)(void *)&out[0][0], sums);
    }
}

void bf_conv2d_s8(const bf_conv2d_s8_params *p, const int8_t *input, const int8_t *filter,
                  const int32_t *bias, int8_t *output, void *scratch) {
    const int32_t k = p->filter.h * p->filter.w * p->filter.c;
    const int32_t k16 = bf_opt_round_up(k, 16);
    const int32_t out_c = p->output.c, per_image = p->output.h * p->output.w;
    const int64_t total = (int64_t)p->output.n * per_image;
    int16_t *cols = (int16_t *)scratch;
    const int16_t *col[BF_X86_COLS];
    int64_t pos;
    if (!bf_x86_conv_plain(p)) {
        bf_ref_conv2d_s8(p, input, filter, bias, output, scratch);
        return;
    }
    for (pos = 0; pos < total; pos += BF_X86_COLS) {
        const int32_t np = total - pos < BF_X86_COLS ? (int32_t)(total - pos) : BF_X86_COLS;
        int32_t j, o, r;
        for (j = 0; j < BF_X86_COLS; ++j) {
            /* Missing columns of the last tile repeat column 0 (their results are dropped). */
            const int32_t b = (int32_t)((pos + j) / per_image), rem = (int32_t)((pos + j) % per_image);
            col[j] = j < np ? cols + (int64_t)j * k16 : cols;
            if (j < np) {
                bf_x86_im2col(p, input, b, rem / p->output.w, rem % p->output.w, cols + (int64_t)j * k16,
                              k16);
            }
        }
        /* Groups of 8 channels: 4 blocks of 2, then one vector requantization per position. */
        for (o = 0; o + 8 <= out_c; o += 8) {
            int32_t t[BF_X86_COLS][8];
            for (r = 0; r < 8; r += 2) {
                const int8_t *w0 = filter + (int64_t)(o + r) * k;
                int32_t acc[2][BF_X86_COLS];
                bf_x86_block(w0, w0 + k, col, k, acc);
                for (j = 0; j < BF_X86_COLS; ++j) {
                    t[j][r] = acc[0][j];
                    t[j][r + 1] = acc[1][j];
                }
            }
            for (j = 0; j < np; ++j) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)t[j]);
                if (bias != NULL) {
                    v = _mm256_add_epi32(v, _mm256_loadu_si256((const __m256i *)(const void *)(bias + o)));
                }
                bf_x86_requant8(v, p->multiplier + o, p->shift + o, p->output_offset, p->act_min,
                                p->act_max, output + (pos + j) * out_c + o);
            }
        }
        /* The C_out % 8 channels: blocks of 2 (or 1), scalar requantization. */
        for (; o < out_c; o += 2) {
            const int32_t rows = out_c - o < 2 ? 1 : 2;
            const int8_t *w0 = filter + (int64_t)o * k;
            int32_t acc[2][BF_X86_COLS];
            bf_x86_block(w0, rows == 2 ? w0 + k : w0, col, k, acc);
            for (r = 0; r < rows; ++r) {
                const int32_t b0 = bias != NULL ? bias[o + r] : 0;
                for (j = 0; j < np; ++j) {
                    output[(pos + j) * out_c + o + r] =
                        bf_opt_requant(acc[r][j] + b0, p->multiplier[o + r], p->shift[o + r],
                                       p->output_offset, p->act_min, p->act_max);
                }
            }
        }
    }
}

#else /* no AVX2: the reference kernel */

void bf_conv2d_s8(const bf_conv2d_s8_params *p, const int8_t *input, const int8_t *filter,
                  const int32_t *bias, int8_t *output, void *scratch) {
    bf_ref_conv2d_s8(p, input, filter, bias, output, scratch);
}

#endif
