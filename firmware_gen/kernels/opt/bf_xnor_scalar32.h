/*
 * bf_xnor_scalar32.h — XNOR-popcount hooks for 32-bit cores without a popcount instruction
 * (Cortex-M0/M0+/M3/M4/M7/M33), for opt/bf_xnor_tiled.h.  Private.
 *
 * SWAR over several words: each word is reduced to four byte counts (<= 8 each) in 7 simple
 * operations, and the byte counts of up to 31 words are summed before the bytes are added up
 * (31 * 8 = 248 < 256: no carry between bytes) — one USADA8 with the DSP extension, a few shifts
 * and masks without.  The reference's portable popcount instead multiplies out every word.
 * Weights are streamed once per pair of activation rows.
 */
#ifndef BF_XNOR_SCALAR32_H
#define BF_XNOR_SCALAR32_H

#include <stdint.h>

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

/* The SWAR masks, kept in registers: with an opaque copy (the empty asm) GCC uses Arm's shifted
 * register operands (AND rd, m1, x, LSR #1: one instruction) instead of a shift and an AND
 * with an immediate. */
typedef struct {
    uint32_t m1, m2, m4;
} bf_xs_masks;

static inline bf_xs_masks bf_xs_load_masks(void) {
    bf_xs_masks m = {0x55555555u, 0x33333333u, 0x0F0F0F0Fu};
#if defined(__GNUC__) && defined(__arm__)
    __asm__("" : "+r"(m.m1), "+r"(m.m2), "+r"(m.m4));
#endif
    return m;
}

/* Four byte-wise bit counts, each in 0 … 8. */
static inline uint32_t bf_xs_count(uint32_t x, bf_xs_masks m) {
    x = x - ((x >> 1) & m.m1);
    x = (x & m.m2) + ((x >> 2) & m.m2);
    return (x + (x >> 4)) & m.m4;
}

static inline uint32_t bf_xs_bytecount(uint32_t x) {
    const bf_xs_masks m = {0x55555555u, 0x33333333u, 0x0F0F0F0Fu};
    return bf_xs_count(x, m);
}

/* Sum of the four bytes of x. */
static inline int32_t bf_xs_bytesum(uint32_t x) {
#if defined(__ARM_FEATURE_DSP)
    return (int32_t)__usada8(x, 0u, 0u);
#else
    x = (x & 0x00FF00FFu) + ((x >> 8) & 0x00FF00FFu);
    return (int32_t)((x + (x >> 16)) & 0xFFFFu);
#endif
}

static inline int32_t bf_xt_pop32(uint32_t x) {
    return bf_xs_bytesum(bf_xs_bytecount(x));
}

static inline uint32_t bf_xt_ge_mask(const int8_t *x, int32_t n, int32_t t) {
    uint32_t bits = 0u;
    int32_t i;
    if (t <= -128) {
        return n == 32 ? 0xFFFFFFFFu : (((uint32_t)1u << n) - 1u);
    }
    for (i = 0; i < n; ++i) {
        bits |= (uint32_t)(x[i] >= t) << i;
    }
    return bits;
}

#define BF_XS_CHUNK 31

/* sums of count(w ^ p0) and count(w ^ p1) over L words (p0 == NULL: count(w) itself). */
static inline void bf_xs_pair(const uint32_t *w, const uint32_t *p0, const uint32_t *p1, int32_t L,
                              bf_xs_masks m, int32_t *s0, int32_t *s1) {
    int32_t i0, i;
    int32_t a0 = 0, a1 = 0;
    for (i0 = 0; i0 < L; i0 += BF_XS_CHUNK) {
        const int32_t i1 = L - i0 < BF_XS_CHUNK ? L : i0 + BF_XS_CHUNK;
        uint32_t b0 = 0u, b1 = 0u;
        if (p0 == NULL) {
            for (i = i0; i < i1; ++i) {
                const uint32_t wv = w[i];
                b0 += bf_xs_count(wv, m);
                b1 += bf_xs_count(wv ^ p1[i], m);
            }
        } else {
            for (i = i0; i < i1; ++i) {
                const uint32_t wv = w[i];
                b0 += bf_xs_count(wv ^ p0[i], m);
                b1 += bf_xs_count(wv ^ p1[i], m);
            }
        }
        a0 += bf_xs_bytesum(b0);
        a1 += bf_xs_bytesum(b1);
    }
    *s0 = a0;
    *s1 = a1;
}

/* Two counts per pass over w (3 masks, 2 byte accumulators and 3 pointers fit the registers of a
 * Cortex-M: 10 instructions per word and row on Armv7-M).  popcount(w) = count(w ^ 0) rides
 * along with the first row when the number of rows is odd. */
static void bf_xt_dot(const uint32_t *w, int32_t L, const uint32_t *rows, int32_t stride,
                      int32_t nrows, int32_t *xors, int32_t *ones) {
    const bf_xs_masks m = bf_xs_load_masks();
    int32_t r = 0, unused;
    if (nrows & 1) {
        bf_xs_pair(w, NULL, rows, L, m, ones, &xors[0]);
        r = 1;
    } else {
        bf_xs_pair(w, NULL, w, L, m, ones, &unused);
    }
    for (; r < nrows; r += 2) {
        const uint32_t *p0 = rows + (int64_t)r * stride;
        bf_xs_pair(w, p0, p0 + stride, L, m, &xors[r], &xors[r + 1]);
    }
}

#endif /* BF_XNOR_SCALAR32_H */
