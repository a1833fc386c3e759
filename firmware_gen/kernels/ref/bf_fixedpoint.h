/*
 * bf_fixedpoint.h — TFLite's integer requantization arithmetic and the gemmlowp fixed-point
 * functions its reference kernels use, as static inline C99.
 *
 * The Python twin is toolkit/oracle/quant.py (requantization) and toolkit/oracle/fixedpoint.py
 * (gemmlowp); both describe the same integer functions, and the kernel test suite checks the C
 * results against them bit for bit.
 *
 * C99 leaves signed overflow undefined while TFLite's C++ relies on two's-complement wrapping
 * in a few places (x * (1 << shift), non-saturating gemmlowp additions).  Those operations are
 * done here in uint32_t and converted back, which is the wrap TFLite gets in practice and keeps
 * the code clean under -fsanitize=undefined.  Right shifts of negative values are arithmetic
 * (implementation-defined in C99; every compiler we target does so).
 */
#ifndef BF_FIXEDPOINT_H
#define BF_FIXEDPOINT_H

#include <stdint.h>

#define BF_INT32_MIN ((int32_t)(-2147483647 - 1))
#define BF_INT32_MAX ((int32_t)2147483647)

static inline int32_t bf_wrap_add(int32_t a, int32_t b) {
    return (int32_t)((uint32_t)a + (uint32_t)b);
}

static inline int32_t bf_wrap_sub(int32_t a, int32_t b) {
    return (int32_t)((uint32_t)a - (uint32_t)b);
}

/* x * 2^shift with two's-complement wrap, 0 <= shift <= 31. */
static inline int32_t bf_wrap_shl(int32_t x, int shift) {
    return (int32_t)((uint32_t)x << shift);
}

static inline int32_t bf_clamp_i32(int32_t x, int32_t lo, int32_t hi) {
    return x < lo ? lo : (x > hi ? hi : x);
}

/* gemmlowp SaturatingRoundingDoublingHighMul: round(a * b / 2^31), saturating the one overflow
 * case INT32_MIN * INT32_MIN. */
static inline int32_t bf_srdhm(int32_t a, int32_t b) {
    if (a == BF_INT32_MIN && b == BF_INT32_MIN) {
        return BF_INT32_MAX;
    }
    {
        const int64_t ab = (int64_t)a * (int64_t)b;
        const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
        /* C99 division truncates toward zero, like the C++ original. */
        return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
    }
}

/* gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero, 0 <= exponent <= 31. */
static inline int32_t bf_rdbpot(int32_t x, int exponent) {
    const int32_t mask = (int32_t)(((int64_t)1 << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* The same on an int64 value, exponent 0 … 62 (equal to bf_rdbpot for exponent <= 31). */
static inline int64_t bf_rdbpot64(int64_t x, int exponent) {
    const int64_t mask = (int64_t)(((uint64_t)1 << exponent) - 1u);
    const int64_t remainder = x & mask;
    const int64_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* tflite::MultiplyByQuantizedMultiplier (double rounding): x * multiplier * 2^(shift - 31),
 * shift > 0 a left shift (applied first, wrapping), shift < 0 a rounding right shift.
 * Requires -31 <= shift <= 30. */
static inline int32_t bf_mbqm(int32_t x, int32_t multiplier, int32_t shift) {
    const int left = shift > 0 ? (int)shift : 0;
    const int right = shift > 0 ? 0 : (int)-shift;
    return bf_rdbpot(bf_srdhm(bf_wrap_shl(x, left), multiplier), right);
}

/* MultiplyByQuantizedMultiplierSmallerThanOneExp: shift <= 0. */
static inline int32_t bf_mbqm_smaller_than_one(int32_t x, int32_t multiplier, int32_t shift) {
    return bf_rdbpot(bf_srdhm(x, multiplier), (int)-shift);
}

/* MultiplyByQuantizedMultiplierGreaterThanOne: left_shift >= 0. */
static inline int32_t bf_mbqm_greater_than_one(int32_t x, int32_t multiplier, int32_t left_shift) {
    return bf_srdhm(bf_wrap_shl(x, (int)left_shift), multiplier);
}

/* ---------------------------------------------------------------------------------------- */
/* gemmlowp fixed point: a FixedPoint<int32, k> is a raw int32 meaning raw / 2^(31 - k).      */

/* SaturatingRoundingMultiplyByPOT<exponent>, -31 <= exponent <= 31. */
static inline int32_t bf_fp_mul_pot(int32_t x, int exponent) {
    if (exponent < 0) {
        return bf_rdbpot(x, -exponent);
    }
    if (exponent == 0) {
        return x;
    }
    {
        const int32_t threshold = (int32_t)((((int64_t)1) << (31 - exponent)) - 1);
        if (x > threshold) {
            return BF_INT32_MAX;
        }
        if (x < -threshold) {
            return BF_INT32_MIN;
        }
        return bf_wrap_shl(x, exponent);
    }
}

/* Rescale<dst_integer_bits>(FixedPoint<int32, src_integer_bits>). */
static inline int32_t bf_fp_rescale(int32_t x, int src_integer_bits, int dst_integer_bits) {
    return bf_fp_mul_pot(x, src_integer_bits - dst_integer_bits);
}

/* RoundingHalfSum: (a + b) / 2 rounded half away from zero. */
static inline int32_t bf_rounding_half_sum(int32_t a, int32_t b) {
    const int64_t sum = (int64_t)a + (int64_t)b;
    const int64_t sign = sum >= 0 ? 1 : -1;
    return (int32_t)((sum + sign) / 2);
}

/* exp(a) for a in [-1/4, 0), a and result in Q0.31 (Taylor series around -1/8). */
static inline int32_t bf_exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a) {
    const int32_t constant_term = 1895147668;      /* exp(-1/8) */
    const int32_t constant_1_over_3 = 715827883;
    const int32_t x = bf_wrap_add(a, (int32_t)1 << 28);
    const int32_t x2 = bf_srdhm(x, x);
    const int32_t x3 = bf_srdhm(x2, x);
    const int32_t x4 = bf_srdhm(x2, x2);
    const int32_t x4_over_4 = bf_rdbpot(x4, 2);
    const int32_t poly = bf_rdbpot(
        bf_wrap_add(bf_srdhm(bf_wrap_add(x4_over_4, x3), constant_1_over_3), x2), 1);
    return bf_wrap_add(constant_term, bf_srdhm(constant_term, bf_wrap_add(x, poly)));
}

/* gemmlowp exp_on_negative_values: exp(a) for a <= 0 given as FixedPoint<int32, integer_bits>
 * (1 <= integer_bits <= 26), result in Q0.31. */
static inline int32_t bf_exp_on_negative_values(int32_t a, int integer_bits) {
    static const int32_t barrel[7] = {1672461947, 1302514674, 790015084, 290630308,
                                      39332535,   720401,     242};
    const int frac_bits = 31 - integer_bits;
    const int32_t one_quarter = (int32_t)1 << (frac_bits - 2);
    const int32_t a_mod_quarter_minus_quarter = bf_wrap_sub(a & (one_quarter - 1), one_quarter);
    const int32_t remainder = bf_wrap_sub(a_mod_quarter_minus_quarter, a);
    int32_t result = bf_exp_on_interval_between_negative_one_quarter_and_0_excl(
        bf_fp_rescale(a_mod_quarter_minus_quarter, integer_bits, 0));
    int exponent;
    for (exponent = -2; exponent <= 4; ++exponent) {
        if (integer_bits > exponent) {
            const uint32_t bit = (uint32_t)1 << (frac_bits + exponent);
            if (((uint32_t)remainder & bit) != 0u) {
                result = bf_srdhm(result, barrel[exponent + 2]);
            }
        }
    }
    if (integer_bits > 5) {
        const int32_t clamp = -((int32_t)1 << (36 - integer_bits));
        if (a < clamp) {
            result = 0;
        }
    }
    return a == 0 ? BF_INT32_MAX : result;
}

/* gemmlowp one_over_one_plus_x_for_x_in_0_1: 1 / (1 + a) for a in [0, 1), Q0.31 in and out. */
static inline int32_t bf_one_over_one_plus_x_for_x_in_0_1(int32_t a) {
    const int32_t half_denominator = bf_rounding_half_sum(a, BF_INT32_MAX);
    const int32_t f2_one = (int32_t)1 << 29;
    int32_t x = bf_wrap_add(1515870810 /* 48/17 in Q2.29 */,
                            bf_srdhm(half_denominator, -1010580540 /* -32/17 in Q2.29 */));
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t one_minus_hdx = bf_wrap_sub(f2_one, bf_srdhm(half_denominator, x));
        x = bf_wrap_add(x, bf_fp_rescale(bf_srdhm(x, one_minus_hdx), 4, 2));
    }
    /* ExactMulByPot<-1> (Q2.29 -> Q1.30, same raw) then Rescale<0>. */
    return bf_fp_rescale(x, 1, 0);
}

static inline int bf_clz32(uint32_t x) {
    int n = 0;
    if (x == 0u) {
        return 32;
    }
    while ((x & 0x80000000u) == 0u) {
        x <<= 1;
        ++n;
    }
    return n;
}

/* tflite::GetReciprocal: for a positive FixedPoint<int32, x_integer_digits> x, returns a Q0.31
 * scale and *num_bits_over_unit such that 1/x = scale * 2^-num_bits_over_unit. */
static inline int32_t bf_get_reciprocal(int32_t x, int x_integer_digits, int *num_bits_over_unit) {
    const int headroom_plus_one = bf_clz32((uint32_t)x);
    const uint32_t shifted = (uint32_t)((uint64_t)(uint32_t)x << headroom_plus_one);
    *num_bits_over_unit = x_integer_digits - headroom_plus_one;
    return bf_one_over_one_plus_x_for_x_in_0_1((int32_t)(shifted - 0x80000000u));
}

#endif /* BF_FIXEDPOINT_H */
