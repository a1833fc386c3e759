/*
 * x86 variant of the binarized kernels (bf_binary.h): XNOR-popcount convolution and fully
 * connected layers with the popcount of the best instruction set the build enables.
 *
 * Compile-time dispatch on the -m flags targets/isa.py chooses from the CPU's features (or the
 * equivalent target pragma a generated project carries in bf_x86_target.h):
 *   -mavx512f -mavx512bw -mavx512vl -mavx512vpopcntdq : VPOPCNTQ on 512-bit vectors, masked tails
 *   -mavx2                                            : nibble-table popcount (VPSHUFB) + VPSADBW
 *   -mpopcnt                                          : scalar 64-bit POPCNT
 *   (none)                                            : portable 64-bit SWAR count
 * Activation binarization uses AVX2 byte compares + VPMOVMSKB when available.  The portable path
 * is always compiled, so the file builds for any x86 (and any other) target.
 *
 * bf_conv2d_binary_s8 / bf_fully_connected_binary_s8 (binary weights, int8 activations) are the
 * reference kernels.
 */
#include "bf_x86_target.h" /* first: it may select the instruction sets (a target pragma) */

#include "bf_binary.h"

#define bf_conv2d_xnor_s8 bf_ref_conv2d_xnor_s8
#define bf_fully_connected_xnor_s8 bf_ref_fully_connected_xnor_s8
#include "../ref/binary.c"
#undef bf_conv2d_xnor_s8
#undef bf_fully_connected_xnor_s8

#include <string.h>

#include "../opt/bf_opt_util.h"

#if defined(__AVX2__) || defined(__POPCNT__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VPOPCNTDQ__)
#define BF_X86_LEVEL 3
#define BF_XT_ROW_ALIGN 16
#elif defined(__AVX2__)
#define BF_X86_LEVEL 2
#define BF_XT_ROW_ALIGN 8
#elif defined(__POPCNT__)
#define BF_X86_LEVEL 1
#define BF_XT_ROW_ALIGN 2
#else
#define BF_X86_LEVEL 0
#define BF_XT_ROW_ALIGN 2
#endif

/* 16 KiB of stack for the im2col tile (host and Linux targets only). */
#define BF_XT_TILE_WORDS 4096

/* Level the library was built at (0 portable, 1 POPCNT, 2 AVX2, 3 AVX-512 VPOPCNTDQ); the test
 * suite checks it against the flags it asked for. */
int bf_x86_binary_level(void);
int bf_x86_binary_level(void) { return BF_X86_LEVEL; }

static inline int32_t bf_xt_pop32(uint32_t x) {
#if BF_X86_LEVEL >= 1
    return (int32_t)_mm_popcnt_u32(x);
#else
    return bf_popcount32_portable(x);
#endif
}

static inline int32_t bf_x86_pop64(uint64_t x) {
#if BF_X86_LEVEL >= 1
    return (int32_t)_mm_popcnt_u64(x);
#else
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return (int32_t)((x * 0x0101010101010101ull) >> 56);
#endif
}

/* ---------------------------------------------------------------------------------------- */
/* Binarization: bit i of the result is x[i] >= t (i < n <= 32).                              */

static inline uint32_t bf_xt_ge_mask(const int8_t *x, int32_t n, int32_t t) {
    const uint32_t valid = n == 32 ? 0xFFFFFFFFu : (((uint32_t)1u << n) - 1u);
    if (t <= -128) {
        return valid;
    }
    if (t > 127) {
        return 0u;
    }
#if BF_X86_LEVEL >= 2
    {
        int8_t buf[32];
        const int8_t *src = x;
        __m256i v;
        if (n < 32) {
            memset(buf, 0, sizeof buf);
            memcpy(buf, x, (size_t)n);
            src = buf;
        }
        v = _mm256_loadu_si256((const __m256i *)(const void *)src);
        /* x >= t  <=>  x > t - 1, t - 1 in [-128, 126] */
        return (uint32_t)_mm256_movemask_epi8(_mm256_cmpgt_epi8(v, _mm256_set1_epi8((char)(t - 1)))) &
               valid;
    }
#else
    {
        uint32_t bits = 0u;
        int32_t i;
        for (i = 0; i < n; ++i) {
            bits |= (uint32_t)(x[i] >= t) << i;
        }
        return bits;
    }
#endif
}

/* ---------------------------------------------------------------------------------------- */
/* popcount(w) and popcount(w ^ row_r) over L words.                                         */

#if BF_X86_LEVEL == 3

/* s[r] = sum of the 8 lanes of a[r], r < 8, in one vector: a pairwise-add tree (21 instructions
 * instead of 8 separate horizontal reductions). */
static inline __m512i bf_x86_hsum8(const __m512i a[8]) {
    const __m512i b01 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[0], a[1]), _mm512_unpackhi_epi64(a[0], a[1]));
    const __m512i b23 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[2], a[3]), _mm512_unpackhi_epi64(a[2], a[3]));
    const __m512i b45 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[4], a[5]), _mm512_unpackhi_epi64(a[4], a[5]));
    const __m512i b67 = _mm512_add_epi64(_mm512_unpacklo_epi64(a[6], a[7]), _mm512_unpackhi_epi64(a[6], a[7]));
    /* 128-bit lanes (0, 2) + (1, 3) of two vectors */
    const __m512i c = _mm512_add_epi64(_mm512_shuffle_i64x2(b01, b23, 0x88), _mm512_shuffle_i64x2(b01, b23, 0xDD));
    const __m512i d = _mm512_add_epi64(_mm512_shuffle_i64x2(b45, b67, 0x88), _mm512_shuffle_i64x2(b45, b67, 0xDD));
    return _mm512_add_epi64(_mm512_shuffle_i64x2(c, d, 0x88), _mm512_shuffle_i64x2(c, d, 0xDD));
}

/* 8 rows at a time (the last group repeats the last row; its extra sums are dropped):
 * 8 accumulators + w + popcount(w) stay in zmm registers. */
static void bf_xt_dot(const uint32_t *w, int32_t L, const uint32_t *rows, int32_t stride,
                      int32_t nrows, int32_t *xors, int32_t *ones) {
    int32_t r0, r, i;
    __m512i accw = _mm512_setzero_si512();
    for (r0 = 0; r0 < nrows; r0 += 8) {
        const int32_t nr = nrows - r0 < 8 ? nrows - r0 : 8;
        const uint32_t *row[8];
        __m512i acc[8];
        int32_t sums[8];
        for (r = 0; r < 8; ++r) {
            acc[r] = _mm512_setzero_si512();
            row[r] = rows + (int64_t)(r0 + (r < nr ? r : nr - 1)) * stride;
        }
        for (i = 0; i < L; i += 16) {
            const __mmask16 m = L - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (L - i)) - 1u);
            const __m512i wv = _mm512_maskz_loadu_epi32(m, w + i);
            if (r0 == 0) {
                accw = _mm512_add_epi64(accw, _mm512_popcnt_epi64(wv));
            }
#pragma GCC unroll 8
            for (r = 0; r < 8; ++r) {
                acc[r] = _mm512_add_epi64(acc[r], _mm512_popcnt_epi64(_mm512_xor_si512(
                    wv, _mm512_loadu_si512((const void *)(row[r] + i)))));
            }
        }
        _mm256_storeu_si256((__m256i *)(void *)sums, _mm512_cvtepi64_epi32(bf_x86_hsum8(acc)));
        for (r = 0; r < nr; ++r) {
            xors[r0 + r] = sums[r];
        }
    }
    *ones = (int32_t)_mm512_reduce_add_epi64(accw);
}

#elif BF_X86_LEVEL == 2

/* Mula's nibble-table popcount: per byte lut[lo] + lut[hi], then VPSADBW into 64-bit lanes. */
static inline __m256i bf_x86_popcnt256(__m256i v) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                         0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0F);
    const __m256i lo = _mm256_and_si256(v, low);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
    const __m256i cnt = _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
    return _mm256_sad_epu8(cnt, _mm256_setzero_si256());
}

static inline int32_t bf_x86_hsum256(__m256i v) {
    const __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return (int32_t)(_mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1));
}

static void bf_xt_dot(const uint32_t *w, int32_t L, const uint32_t *rows, int32_t stride,
                      int32_t nrows, int32_t *xors, int32_t *ones) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int32_t r0, r, i;
    __m256i accw = _mm256_setzero_si256();
    for (r0 = 0; r0 < nrows; r0 += 4) {
        const int32_t nr = nrows - r0 < 4 ? nrows - r0 : 4;
        __m256i acc[4];
        for (r = 0; r < 4; ++r) {
            acc[r] = _mm256_setzero_si256();
        }
        for (i = 0; i < L; i += 8) {
            const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(L - i), lane);
            const __m256i wv = _mm256_maskload_epi32((const int *)(const void *)(w + i), m);
            const uint32_t *row = rows + (int64_t)r0 * stride + i;
            if (r0 == 0) {
                accw = _mm256_add_epi64(accw, bf_x86_popcnt256(wv));
            }
            for (r = 0; r < nr; ++r) {
                acc[r] = _mm256_add_epi64(acc[r], bf_x86_popcnt256(_mm256_xor_si256(
                    wv, _mm256_loadu_si256((const __m256i *)(const void *)(row + (int64_t)r * stride)))));
            }
        }
        for (r = 0; r < nr; ++r) {
            xors[r0 + r] = bf_x86_hsum256(acc[r]);
        }
    }
    *ones = bf_x86_hsum256(accw);
}

#else /* POPCNT or portable: 64 bits at a time */

static void bf_xt_dot(const uint32_t *w, int32_t L, const uint32_t *rows, int32_t stride,
                      int32_t nrows, int32_t *xors, int32_t *ones) {
    const int32_t L2 = L & ~1;
    int32_t r0, r, i;
    int32_t accw = 0;
    for (r = 0; r < L2; r += 2) {
        accw += bf_x86_pop64(bf_opt_load_u64(w + r));
    }
    if (L2 < L) {
        accw += bf_xt_pop32(w[L2]);
    }
    for (r0 = 0; r0 < nrows; r0 += 4) {
        const int32_t nr = nrows - r0 < 4 ? nrows - r0 : 4;
        int32_t acc[4] = {0, 0, 0, 0};
        const uint32_t *row = rows + (int64_t)r0 * stride;
        for (i = 0; i < L2; i += 2) {
            const uint64_t wv = bf_opt_load_u64(w + i);
            for (r = 0; r < nr; ++r) {
                acc[r] += bf_x86_pop64(wv ^ bf_opt_load_u64(row + (int64_t)r * stride + i));
            }
        }
        if (L2 < L) {
            for (r = 0; r < nr; ++r) {
                acc[r] += bf_xt_pop32(w[L2] ^ row[(int64_t)r * stride + L2]);
            }
        }
        for (r = 0; r < nr; ++r) {
            xors[r0 + r] = acc[r];
        }
    }
    *ones = accw;
}

#endif

#if BF_X86_LEVEL >= 2
/* TFLite's MultiplyByQuantizedMultiplier of 8 lanes by one multiplier/shift, bit-exact with
 * bf_mbqm: SaturatingRoundingDoublingHighMul(a, b) equals floor((a * b + 2^30) / 2^31) (the
 * rounding SQRDMULH does; gemmlowp's half-away nudge gives the same integers) except for
 * a = b = INT32_MIN, which only a multiplier of INT32_MIN can reach (handled by the caller). */
static inline __m256i bf_x86_mbqm8(__m256i x, int32_t multiplier, int32_t shift) {
    const int left = shift > 0 ? (int)shift : 0, right = shift > 0 ? 0 : (int)-shift;
    const __m256i m = _mm256_set1_epi32(multiplier);
    const __m256i half = _mm256_set1_epi64x((int64_t)1 << 30);
    __m256i even, odd, y, rem, thr;
    x = _mm256_sll_epi32(x, _mm_cvtsi32_si128(left)); /* wraps, like bf_wrap_shl */
    even = _mm256_slli_epi64(_mm256_add_epi64(_mm256_mul_epi32(x, m), half), 1);
    odd = _mm256_slli_epi64(_mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), m), half), 1);
    /* high 32 bits of 2 * (a * b + 2^30) = floor((a * b + 2^30) / 2^31) */
    y = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    if (right == 0) {
        return y;
    }
    {   /* RoundingDivideByPOT: (y >> right) + (remainder > threshold) */
        const __m256i mask = _mm256_set1_epi32((int32_t)(((int64_t)1 << right) - 1));
        rem = _mm256_and_si256(y, mask);
        thr = _mm256_sub_epi32(_mm256_srli_epi32(mask, 1), _mm256_srai_epi32(y, 31));
        return _mm256_sub_epi32(_mm256_sra_epi32(y, _mm_cvtsi32_si128(right)), _mm256_cmpgt_epi32(rem, thr));
    }
}

#define BF_XT_HAVE_REQUANT_LANES 1
static void bf_xt_requant_lanes(const bf_bin_tables *t, int32_t o, const int32_t *acc, int32_t np,
                                int8_t *const *out);
#endif

#include "../opt/bf_xnor_tiled.h"

#if BF_X86_LEVEL >= 2
static void bf_xt_requant_lanes(const bf_bin_tables *t, int32_t o, const int32_t *acc, int32_t np,
                                int8_t *const *out) {
    const int32_t mult = t->multiplier[o], shift = t->shift[o];
    const __m256i lo = _mm256_set1_epi32(t->act_min), hi = _mm256_set1_epi32(t->act_max);
    const __m256i off = _mm256_set1_epi32(t->output_offset);
    int32_t q0, q, r[8];
    if (mult == BF_INT32_MIN) {
        for (q = 0; q < np; ++q) {
            out[q][o] = bf_bin_requantize(t, o, acc[q]);
        }
        return;
    }
    for (q0 = 0; q0 < np; q0 += 8) {
        const int32_t n = np - q0 < 8 ? np - q0 : 8;
        int32_t in[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        __m256i v;
        memcpy(in, acc + q0, (size_t)n * sizeof(int32_t));
        v = bf_x86_mbqm8(_mm256_loadu_si256((const __m256i *)(const void *)in), mult, shift);
        v = _mm256_min_epi32(_mm256_max_epi32(_mm256_add_epi32(v, off), lo), hi);
        _mm256_storeu_si256((__m256i *)(void *)r, v);
        for (q = 0; q < n; ++q) {
            out[q0 + q][o] = (int8_t)r[q];
        }
    }
}
#endif

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
