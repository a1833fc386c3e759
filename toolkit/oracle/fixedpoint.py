"""gemmlowp fixed-point math (``fixedpoint/fixedpoint.h``) as TFLite's reference kernels use it.

A gemmlowp ``FixedPoint<int32, k>`` is an int32 ``raw`` value meaning ``raw / 2^(31 - k)``.  Here
every function takes and returns int64 numpy arrays that hold such raw int32 values (or int16
values for the ``*16`` functions), so that intermediate products cannot overflow in numpy and
the results are exactly what the C++ computes.  Plain gemmlowp additions are not saturating
(overflow is undefined behaviour in C++ and wraps in practice); :func:`wrap32` models that.

Also here: the scale preprocessing of ``quantization_util.cc`` that the softmax kernels use
(``PreprocessSoftmaxScaling``, ``CalculateInputRadius``) and ``GetReciprocal`` of
``kernels/internal/common.h``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from toolkit.oracle.quant import (
    INT32_MAX,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)

INT16_MIN = -(2**15)
INT16_MAX = 2**15 - 1

# Raw values of the gemmlowp constants (FixedPoint<int32, 0> unless noted).
_EXP_MINUS_ONE_EIGHTH = 1895147668  # exp(-1/8)
_ONE_THIRD = 715827883
_F2_48_OVER_17 = 1515870810  # FixedPoint<int32, 2>
_F2_NEG_32_OVER_17 = -1010580540  # FixedPoint<int32, 2>
# exp(-2^e) for the barrel shifter of exp_on_negative_values, e = -2 … 4.
_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308),
               (2, 39332535), (3, 720401), (4, 242))


def _i64(x: np.ndarray | int) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def wrap32(x: np.ndarray | int) -> np.ndarray:
    """Two's-complement wrap to int32 (non-saturating gemmlowp ``Add``/``Sub``)."""
    return wrap_int32(_i64(x))


def c_div_pow2(x: np.ndarray, shift: int) -> np.ndarray:
    """C++ ``x / (1 << shift)`` on signed integers: truncation toward zero."""
    x = _i64(x)
    return np.where(x >= 0, x >> shift, -((-x) >> shift))


def mul(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """``FixedPoint * FixedPoint`` on int32 raws: SaturatingRoundingDoublingHighMul."""
    return saturating_rounding_doubling_high_mul(_i64(a), _i64(b))


def saturating_rounding_multiply_by_pot(x: np.ndarray, exponent: int, bits: int = 32) -> np.ndarray:
    """``SaturatingRoundingMultiplyByPOT<exponent>`` on ``bits``-wide raws (32 or 16).

    A positive exponent is a saturating left shift, a negative one a rounding right shift.
    """
    x = _i64(x)
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    threshold = (1 << (bits - 1 - exponent)) - 1
    shifted = x * (1 << exponent)
    return np.where(x > threshold, hi, np.where(x < -threshold, lo, shifted)).astype(np.int64)


def rescale(x: np.ndarray, src_integer_bits: int, dst_integer_bits: int) -> np.ndarray:
    """gemmlowp ``Rescale<dst>(FixedPoint<int32, src>)``."""
    return saturating_rounding_multiply_by_pot(x, src_integer_bits - dst_integer_bits)


def rounding_half_sum(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """``RoundingHalfSum`` (int32): ``(a + b ± 1) / 2`` with C truncation."""
    s = _i64(a) + _i64(b)
    num = s + np.where(s >= 0, 1, -1)
    return np.where(num >= 0, num // 2, -((-num) // 2)).astype(np.int64)


def one(integer_bits: int) -> int:
    """``FixedPoint<int32, k>::One()``: INT32_MAX for k = 0, else ``1 << (31 - k)``."""
    return INT32_MAX if integer_bits == 0 else 1 << (31 - integer_bits)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a: np.ndarray) -> np.ndarray:
    """exp(a) for a in [-1/4, 0), a and the result in Q0.31 (Taylor series around -1/8)."""
    x = wrap32(_i64(a) + (1 << 28))
    x2 = mul(x, x)
    x3 = mul(x2, x)
    x4 = mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(wrap32(mul(wrap32(x4_over_4 + x3), _ONE_THIRD) + x2), 1)
    return wrap32(_EXP_MINUS_ONE_EIGHTH + mul(_EXP_MINUS_ONE_EIGHTH, wrap32(x + poly)))


def exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """exp(a) for a ≤ 0 given as ``FixedPoint<int32, integer_bits>``; result in Q0.31."""
    a = _i64(a)
    frac_bits = 31 - integer_bits
    quarter = 1 << (frac_bits - 2)
    a_mod_quarter_minus_quarter = (a & (quarter - 1)) - quarter
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_quarter, integer_bits, 0)
    )
    remainder = wrap32(a_mod_quarter_minus_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = (remainder & (1 << (frac_bits + exponent))) != 0
            result = np.where(bit, mul(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, INT32_MAX, result).astype(np.int64)


def one_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """1 / (1 + a) for a in [0, 1) in Q0.31 (Newton-Raphson, three iterations)."""
    half_denominator = rounding_half_sum(a, INT32_MAX)
    f2_one = one(2)
    x = wrap32(_F2_48_OVER_17 + mul(half_denominator, _F2_NEG_32_OVER_17))
    for _ in range(3):
        one_minus_hdx = wrap32(f2_one - mul(half_denominator, x))
        x = wrap32(x + rescale(mul(x, one_minus_hdx), 4, 2))
    # ExactMulByPot<-1> turns Q2.29 into Q1.30 without touching the raw value.
    return rescale(x, 1, 0)


def count_leading_zeros_u32(x: np.ndarray) -> np.ndarray:
    """``CountLeadingZeros(uint32)``; 32 for zero."""
    u = _i64(x) & 0xFFFFFFFF
    bit_length = np.zeros(u.shape, dtype=np.int64)
    for shift in (16, 8, 4, 2, 1):
        big = u >= (1 << shift)
        u = np.where(big, u >> shift, u)
        bit_length += np.where(big, shift, 0)
    bit_length += (u > 0).astype(np.int64)
    return 32 - bit_length


def get_reciprocal(x: np.ndarray, x_integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """TFLite ``GetReciprocal``: (Q0.31 scale ≈ 2^num_bits_over_unit / x, num_bits_over_unit).

    ``x`` is a positive ``FixedPoint<int32, x_integer_digits>``.
    """
    x = _i64(x)
    headroom_plus_one = count_leading_zeros_u32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted = ((x & 0xFFFFFFFF) << headroom_plus_one) & 0xFFFFFFFF
    shifted_sum_minus_one = wrap32(shifted - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


# --- 16-bit raw arithmetic (hard-swish) -------------------------------------------------------


def wrap16(x: np.ndarray | int) -> np.ndarray:
    """Two's-complement wrap to int16 (a C ``static_cast<int16_t>``)."""
    return _i64(x).astype(np.int16).astype(np.int64)


def saturating_rounding_doubling_high_mul16(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int16 (like ARM ``SQRDMULH``)."""
    a, b = _i64(a), _i64(b)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    result = wrap16(c_div_pow2(ab + nudge, 15))
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, result).astype(np.int64)


def saturating_doubling_high_mul16(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """TFLite's ``SaturatingDoublingHighMul`` (int16, rounding toward zero, like ``SQDMULH``)."""
    a, b = _i64(a), _i64(b)
    result = wrap16(c_div_pow2(a * b, 15))
    return np.where((a == INT16_MIN) & (b == INT16_MIN), INT16_MAX, result).astype(np.int64)


def rounding_divide_by_pot16(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT<int16_t>``, including its behaviour for exponents ≥ 16,
    where the int16 ``mask = (1 << exponent) - 1`` wraps to -1 (the result is then 1 for x ≥ 0)."""
    x = _i64(x)
    mask = int(wrap16((1 << exponent) - 1))
    remainder = wrap16(x & mask)
    threshold = wrap16((mask >> 1) + (x < 0).astype(np.int64))
    return wrap16((x >> exponent) + (remainder > threshold).astype(np.int64))


def saturating_left_shift16(x: np.ndarray, amount: int) -> np.ndarray:
    """TFLite's ``SaturatingLeftShift(int16_t, amount)``."""
    return np.clip(_i64(x) * (1 << amount), INT16_MIN, INT16_MAX)


# --- scale preprocessing (quantization_util.cc) -----------------------------------------------


def calculate_input_radius(
    input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31
) -> int:
    """``CalculateInputRadius``: the largest |input| whose rescaled value cannot overflow."""
    max_input_rescaled = (
        1.0 * ((1 << input_integer_bits) - 1) * (1 << (total_signed_bits - input_integer_bits))
        / (1 << input_left_shift)
    )
    return math.floor(max_input_rescaled)


def preprocess_softmax_scaling(beta: float, input_scale: float, input_integer_bits: int) -> tuple[int, int]:
    """``PreprocessSoftmaxScaling`` (double rounding build): (multiplier, left_shift ≥ 0).

    ``beta`` and ``input_scale`` must already be the float32 values TFLite holds.
    """
    real = min(beta * input_scale * (1 << (31 - input_integer_bits)), (1 << 31) - 1.0)
    if not real > 1.0:
        raise ValueError(
            f"softmax input scale {input_scale} × beta {beta} is too small for TFLite's fixed-point "
            "softmax (its multiplier must exceed 1)"
        )
    return quantize_multiplier(real)


# --- int16 interpolated lookup tables (int16 softmax) -----------------------------------------

INT16_LUT_SIZE = 513


def lut_populate_int16(
    input_scale: float, input_zero_point: int, output_scale: float, output_zero_point: int,
    transform: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """TFLite's ``LUTPopulate<int16_t>`` in double precision: 512 samples plus an end point over
    the input domain of int16, each sample biased by half the interpolation error at its
    midpoint so that :func:`lut_lookup_int16` interpolates with less error."""
    qmin, qmax = INT16_MIN, INT16_MAX
    input_min = input_scale * (qmin - input_zero_point)
    input_max = input_scale * (qmax - input_zero_point)
    output_min = output_scale * (qmin - output_zero_point)
    output_max = output_scale * (qmax - output_zero_point)
    steps = INT16_LUT_SIZE - 1
    step = (input_max - input_min) / steps
    half_step = step / 2
    scaling_inv = float(qmax - qmin + 1) / (output_max - output_min)
    i = np.arange(steps, dtype=np.float64)
    val = transform(input_min + i * step)
    val_mid = transform(input_min + i * step + half_step)
    val_next = transform(input_min + (i + 1) * step)
    sample = _round_away(val * scaling_inv)
    mid_interp = _round_away((val_next * scaling_inv + sample) / 2)
    bias = _round_away((mid_interp - _round_away(val_mid * scaling_inv)) / 2)
    last = _round_away(transform(np.array([input_max])) * scaling_inv)
    table = np.concatenate([sample - bias, last])
    return np.clip(table, qmin, qmax).astype(np.int64)


def _round_away(x: np.ndarray) -> np.ndarray:
    """``std::round`` on doubles (half away from zero)."""
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


def lut_lookup_int16(value: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """TFLite's ``LUTLookup`` for int16: linear interpolation between 512 entries (Q0.7 step)."""
    value = _i64(value)
    index = 256 + (value >> 7)
    offset = value & 0x7F
    base = lut[index]
    slope = wrap16(lut[index + 1] - base)
    return wrap16(base + ((slope * offset + 64) >> 7))
