/*
 * bf_neon.h — small Advanced SIMD helpers shared by the neon kernels, written once for AArch64
 * and Armv7-A NEON (which lacks the across-vector adds and the *_high forms).  Private.
 *
 * The neon variant is only chosen for boards with the "neon" feature (targets/isa.py), built
 * with the board's -mcpu/-mfpu; without __ARM_NEON its files compile to the reference kernels
 * (see each file), so the directory builds anywhere.
 */
#ifndef BF_NEON_H
#define BF_NEON_H

#include <stdint.h>

#if defined(__ARM_NEON)
#include <arm_neon.h>

static inline int32_t bf_neon_hsum_s32(int32x4_t v) {
#if defined(__aarch64__)
    return vaddvq_s32(v);
#else
    const int32x2_t s = vadd_s32(vget_low_s32(v), vget_high_s32(v));
    return vget_lane_s32(vpadd_s32(s, s), 0);
#endif
}

static inline int32_t bf_neon_hsum_u16(uint16x8_t v) {
#if defined(__aarch64__)
    return (int32_t)vaddlvq_u16(v);
#else
    const uint32x4_t w = vpaddlq_u16(v);
    const uint32x2_t s = vadd_u32(vget_low_u32(w), vget_high_u32(w));
    return (int32_t)vget_lane_u32(vpadd_u32(s, s), 0);
#endif
}

/* acc += pairwise sums of the 16 products w * x (int8 x int8 -> int16 -> int32): exact for any
 * int8 values (every product fits int16). */
static inline int32x4_t bf_neon_dot16_safe(int32x4_t acc, int8x16_t w, int8x16_t x) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w), vget_low_s8(x)));
#if defined(__aarch64__)
    return vpadalq_s16(acc, vmull_high_s8(w, x));
#else
    return vpadalq_s16(acc, vmull_s8(vget_high_s8(w), vget_high_s8(x)));
#endif
}

/* The same with two products summed in int16 first: exact only when no w is -128
 * (|w * x| <= 127 * 128, so two of them stay inside int16). */
static inline int32x4_t bf_neon_dot16_fast(int32x4_t acc, int8x16_t w, int8x16_t x) {
#if defined(__aarch64__)
    const int16x8_t p = vmlal_high_s8(vmull_s8(vget_low_s8(w), vget_low_s8(x)), w, x);
#else
    const int16x8_t p = vmlal_s8(vmull_s8(vget_low_s8(w), vget_low_s8(x)), vget_high_s8(w), vget_high_s8(x));
#endif
    return vpadalq_s16(acc, p);
}

/* TFLite's MultiplyByQuantizedMultiplier on 4 lanes, bit-exact with bf_mbqm: a wrapping left
 * shift, SQRDMULH (= gemmlowp SaturatingRoundingDoublingHighMul, as TFLite's NEON kernels use
 * it), then gemmlowp's NEON RoundingDivideByPOT (a sign fix-up, then a rounding shift). */
static inline int32x4_t bf_neon_mbqm(int32x4_t x, int32x4_t multiplier, int32x4_t shift) {
    const int32x4_t zero = vdupq_n_s32(0);
    const int32x4_t left = vmaxq_s32(shift, zero);
    const int32x4_t neg_right = vminq_s32(shift, zero); /* -exponent of the right shift */
    const int32x4_t y = vqrdmulhq_s32(vshlq_s32(x, left), multiplier);
    const int32x4_t fixup = vshrq_n_s32(vandq_s32(y, neg_right), 31);
    return vrshlq_s32(vqaddq_s32(y, fixup), neg_right);
}

#endif /* __ARM_NEON */

#endif /* BF_NEON_H */
