/*
 * bf_xnor_scalar32.h — XNOR-popcount hooks for 32-bit cores without a popcount instruction
 * (Cortex-M0/M0+/M3/M4/M7/M33), for opt/bf_xnor_tiled.h.  Private.
 *
 * SWAR over several words: each word is reduced to four byte counts (<= 8 each) in 7 simple
 * operations, and the byte counts of up to 31 words are summed before the bytes are added up
 * (31 * 8 = 248 < 256: no carry between bytes) — one USADA8 with the DSP extension, a few shifts
 * and masks without.  The reference's portable popcount instead multiplies out every word.
 * Weights are streamed once per tile position group, up to 4 activation rows at a time.
 */
#ifndef BF_XNOR_SCALAR32_H
#define BF_XNOR_SCALAR32_H

#include <stdint.h>

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

/* Four byte-wise bit counts, each in 0 … 8. */
static inline uint32_t bf_xs_bytecount(uint32_t x) {
    x = x - ((x >> 1) & 0x55555555u);
    x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
    return (x + (x >> 4)) & 0x0F0F0F0Fu;
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

static void bf_xt_dot(const uint32_t *w, int32_t L, const uint32_t *rows, int32_t stride,
                      int32_t nrows, int32_t *xors, int32_t *ones) {
    int32_t i0, i, r0, r;
    int32_t total = 0;
    for (i0 = 0; i0 < L; i0 += BF_XS_CHUNK) {
        const int32_t i1 = L - i0 < BF_XS_CHUNK ? L : i0 + BF_XS_CHUNK;
        uint32_t bw = 0u;
        for (i = i0; i < i1; ++i) {
            bw += bf_xs_bytecount(w[i]);
        }
        total += bf_xs_bytesum(bw);
    }
    *ones = total;
    for (r0 = 0; r0 < nrows; r0 += 4) {
        const int32_t nr = nrows - r0 < 4 ? nrows - r0 : 4;
        const uint32_t *row = rows + (int64_t)r0 * stride;
        int32_t acc[4] = {0, 0, 0, 0};
        for (i0 = 0; i0 < L; i0 += BF_XS_CHUNK) {
            const int32_t i1 = L - i0 < BF_XS_CHUNK ? L : i0 + BF_XS_CHUNK;
            uint32_t b0 = 0u, b1 = 0u, b2 = 0u, b3 = 0u;
            if (nr == 4) {
                const uint32_t *p1 = row + stride, *p2 = row + 2 * stride, *p3 = row + 3 * stride;
                for (i = i0; i < i1; ++i) {
                    const uint32_t wv = w[i];
                    b0 += bf_xs_bytecount(wv ^ row[i]);
                    b1 += bf_xs_bytecount(wv ^ p1[i]);
                    b2 += bf_xs_bytecount(wv ^ p2[i]);
                    b3 += bf_xs_bytecount(wv ^ p3[i]);
                }
                acc[1] += bf_xs_bytesum(b1);
                acc[2] += bf_xs_bytesum(b2);
                acc[3] += bf_xs_bytesum(b3);
            } else {
                for (r = 0; r < nr; ++r) {
                    const uint32_t *pr = row + (int64_t)r * stride;
                    uint32_t br = 0u;
                    for (i = i0; i < i1; ++i) {
                        br += bf_xs_bytecount(w[i] ^ pr[i]);
                    }
                    acc[r] += bf_xs_bytesum(br);
                }
            }
            acc[0] += bf_xs_bytesum(b0);
        }
        for (r = 0; r < nr; ++r) {
            xors[r0 + r] = acc[r];
        }
    }
}

#endif /* BF_XNOR_SCALAR32_H */
