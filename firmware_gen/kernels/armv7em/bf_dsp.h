/*
 * bf_dsp.h — the Arm DSP (SIMD32) operations the armv7em kernels use, with exact C twins.
 *
 * With __ARM_FEATURE_DSP (Cortex-M4/M7/M33 built with their -mcpu) each helper is one
 * instruction through arm_acle.h (GCC 12's arm_acle.h has no __ror, so SXTB16 with its rotate is
 * inline assembly).  Without it (a core without the DSP extension, or a host build of this
 * directory for debugging) the same values are computed in portable C, so the variant always
 * compiles and always gives the same results; targets/isa.py only selects it for boards with
 * the "dsp" feature.  Values are bit patterns of two int16 halves (low = bits 0-15) or four int8
 * bytes in a uint32_t.
 */
#ifndef BF_DSP_H
#define BF_DSP_H

#include <stdint.h>

#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#endif

static inline int32_t bf_dsp_lo16(uint32_t x) { return (int32_t)(int16_t)(uint16_t)(x & 0xFFFFu); }
static inline int32_t bf_dsp_hi16(uint32_t x) { return (int32_t)(int16_t)(uint16_t)(x >> 16); }

static inline uint32_t bf_dsp_pack16(int32_t lo, int32_t hi) {
    return ((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16);
}

/* SXTB16: bytes 0 and 2 sign-extended into the two halves. */
static inline uint32_t bf_dsp_sxtb16(uint32_t x) {
#if defined(__ARM_FEATURE_DSP)
    return (uint32_t)__sxtb16((int32_t)x);
#else
    return bf_dsp_pack16((int8_t)(uint8_t)(x & 0xFFu), (int8_t)(uint8_t)((x >> 16) & 0xFFu));
#endif
}

/* SXTB16 with ROR #8: bytes 1 and 3 sign-extended into the two halves. */
static inline uint32_t bf_dsp_sxtb16_ror8(uint32_t x) {
#if defined(__ARM_FEATURE_DSP)
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
#else
    return bf_dsp_pack16((int8_t)(uint8_t)((x >> 8) & 0xFFu), (int8_t)(uint8_t)(x >> 24));
#endif
}

/* SXTAB16: a + SXTB16(x) halfword-wise (bytes 0 and 2 of x sign-extended and added). */
static inline uint32_t bf_dsp_sxtab16(uint32_t a, uint32_t x) {
#if defined(__ARM_FEATURE_DSP)
    return (uint32_t)__sxtab16((int32_t)a, (int32_t)x);
#else
    return bf_dsp_pack16(bf_dsp_lo16(a) + (int8_t)(uint8_t)(x & 0xFFu),
                         bf_dsp_hi16(a) + (int8_t)(uint8_t)((x >> 16) & 0xFFu));
#endif
}

/* The same on bytes 1 and 3 (SXTAB16 with ROR #8). */
static inline uint32_t bf_dsp_sxtab16_ror8(uint32_t a, uint32_t x) {
#if defined(__ARM_FEATURE_DSP)
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
#else
    return bf_dsp_pack16(bf_dsp_lo16(a) + (int8_t)(uint8_t)((x >> 8) & 0xFFu),
                         bf_dsp_hi16(a) + (int8_t)(uint8_t)(x >> 24));
#endif
}

/* SADD16: halfword-wise addition (wrapping). */
static inline uint32_t bf_dsp_sadd16(uint32_t a, uint32_t b) {
#if defined(__ARM_FEATURE_DSP)
    return (uint32_t)__sadd16((int32_t)a, (int32_t)b);
#else
    return bf_dsp_pack16(bf_dsp_lo16(a) + bf_dsp_lo16(b), bf_dsp_hi16(a) + bf_dsp_hi16(b));
#endif
}

/* SMLAD: acc + lo(a)*lo(b) + hi(a)*hi(b) (the kernels' sums stay in the int32 range). */
static inline int32_t bf_dsp_smlad(uint32_t a, uint32_t b, int32_t acc) {
#if defined(__ARM_FEATURE_DSP)
    return __smlad((int32_t)a, (int32_t)b, acc);
#else
    return acc + bf_dsp_lo16(a) * bf_dsp_lo16(b) + bf_dsp_hi16(a) * bf_dsp_hi16(b);
#endif
}

/* SMLABB / SMLATT: acc + lo*lo, acc + hi*hi. */
static inline int32_t bf_dsp_smlabb(uint32_t a, uint32_t b, int32_t acc) {
#if defined(__ARM_FEATURE_DSP)
    return __smlabb((int32_t)a, (int32_t)b, acc);
#else
    return acc + bf_dsp_lo16(a) * bf_dsp_lo16(b);
#endif
}

static inline int32_t bf_dsp_smlatt(uint32_t a, uint32_t b, int32_t acc) {
#if defined(__ARM_FEATURE_DSP)
    return __smlatt((int32_t)a, (int32_t)b, acc);
#else
    return acc + bf_dsp_hi16(a) * bf_dsp_hi16(b);
#endif
}

#endif /* BF_DSP_H */
