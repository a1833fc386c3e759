"""int8 LOGISTIC and TANH in gemmlowp fixed point, as TensorFlow Lite Micro computes them.

TFLite and LiteRT build a 256-entry table in float32 at prepare time; TFLM instead evaluates
``reference_integer_ops::Logistic`` / ``Tanh`` per element (``logistic_common.cc``,
``tanh.cc``):

* prepare: ``q, left_shift = frexp(double(in_scale) · 2^27)``, ``multiplier = round(q · 2^31)``
  and ``radius = CalculateInputRadius(4, left_shift, 31)``;
* eval: ``v = x − in_zp``; ``v ≤ −radius`` gives the type's minimum, ``v ≥ radius`` its
  maximum; otherwise ``MultiplyByQuantizedMultiplier(v, multiplier, left_shift)`` is a
  ``FixedPoint<int32, 4>`` fed to gemmlowp's ``logistic`` / ``tanh``, whose Q0.31 result is
  rounded to Q0.8 (logistic, then −128) or Q0.7 (tanh) and clamped.

The kernels never read the output's quantization: they assume the converter's int8 output
parameters, scale 1/256 and zero point −128 (LOGISTIC) or scale 1/128 and zero point 0 (TANH).
"""

from __future__ import annotations

import math

import numpy as np

from toolkit.oracle import fixedpoint as fp
from toolkit.oracle.quant import multiply_by_quantized_multiplier, rounding_divide_by_pot, tflite_round

_INPUT_INTEGER_BITS = 4
# gemmlowp's Newton-Raphson constants, FixedPoint<int32, 2> raws of 48/17 and -32/17.
_F2_48_OVER_17 = 1515870810
_F2_NEG_32_OVER_17 = -1010580540
INT8_MIN, INT8_MAX = -128, 127
# (scale, zero point) each TFLM kernel assumes for its int8 output.
LOGISTIC_OUTPUT = (1.0 / 256, -128)
TANH_OUTPUT = (1.0 / 128, 0)


def _one_minus_x_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """gemmlowp: (1 − a) / (1 + a) for a in [0, 1), Q0.31 in and out (Newton-Raphson)."""
    half_denominator = fp.rounding_half_sum(a, fp.INT32_MAX)
    x = fp.wrap32(_F2_48_OVER_17 + fp.mul(half_denominator, _F2_NEG_32_OVER_17))
    for _ in range(3):
        one_minus_hdx = fp.wrap32(fp.one(2) - fp.mul(half_denominator, x))
        x = fp.wrap32(x + fp.rescale(fp.mul(x, one_minus_hdx), 4, 2))
    return fp.rescale(fp.wrap32(x - fp.one(2)), 2, 0)


def gemmlowp_logistic(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp ``logistic(FixedPoint<int32, integer_bits>)`` → Q0.31 raw values."""
    a = np.asarray(a, dtype=np.int64)
    positive = a > 0
    abs_input = np.where(positive, a, fp.wrap32(-a))
    if_positive = fp.one_over_one_plus_x_for_x_in_0_1(
        fp.exp_on_negative_values(fp.wrap32(-abs_input), integer_bits)
    )
    if_negative = fp.wrap32(fp.INT32_MAX - if_positive)
    return np.where(a == 0, 1 << 30, np.where(positive, if_positive, if_negative)).astype(np.int64)


def gemmlowp_tanh(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp ``tanh(FixedPoint<int32, integer_bits>)`` → Q0.31 raw values."""
    a = np.asarray(a, dtype=np.int64)
    negative = a < 0
    n = np.where(negative, a, fp.wrap32(-a))
    # ExactMulByPot<1> doubles the value by giving the same raw one more integer bit.
    t = _one_minus_x_over_one_plus_x_for_x_in_0_1(fp.exp_on_negative_values(n, integer_bits + 1))
    return np.where(a == 0, 0, np.where(negative, fp.wrap32(-t), t)).astype(np.int64)


def input_params(in_scale: float) -> tuple[int, int, int]:
    """(multiplier, left_shift, input_radius) of the TFLM int8 Logistic/Tanh prepare."""
    frac, left_shift = math.frexp(float(in_scale) * float(1 << (31 - _INPUT_INTEGER_BITS)))
    multiplier = tflite_round(frac * (1 << 31))
    if multiplier >= 1 << 31 or left_shift < 0:
        # static_cast<int32_t>(2^31) and a negative shift in CalculateInputRadius are undefined.
        raise ValueError(f"input scale {in_scale} is outside what TFLite Micro's int8 LOGISTIC/TANH handle")
    radius = fp.calculate_input_radius(_INPUT_INTEGER_BITS, left_shift, 31)
    return multiplier, left_shift, radius


def _fixed_point_kernel(x: np.ndarray, in_scale: float, in_zp: int, tanh: bool) -> np.ndarray:
    multiplier, left_shift, radius = input_params(in_scale)
    v = np.asarray(x, dtype=np.int64) - in_zp
    inside = (v > -radius) & (v < radius)
    q4 = multiply_by_quantized_multiplier(np.where(inside, v, 0), multiplier, left_shift)
    if tanh:
        out = rounding_divide_by_pot(gemmlowp_tanh(q4, _INPUT_INTEGER_BITS), 31 - 7)
    else:
        out = rounding_divide_by_pot(gemmlowp_logistic(q4, _INPUT_INTEGER_BITS), 31 - 8) - 128
    out = np.clip(out, INT8_MIN, INT8_MAX)
    return np.where(v <= -radius, INT8_MIN, np.where(v >= radius, INT8_MAX, out)).astype(np.int64)


def logistic_int8(x: np.ndarray, in_scale: float, in_zp: int) -> np.ndarray:
    """TFLM ``reference_integer_ops::Logistic`` on int8 values (output scale 1/256, zp −128)."""
    return _fixed_point_kernel(x, in_scale, in_zp, tanh=False)


def tanh_int8(x: np.ndarray, in_scale: float, in_zp: int) -> np.ndarray:
    """TFLM ``reference_integer_ops::Tanh`` on int8 values (output scale 1/128, zp 0)."""
    return _fixed_point_kernel(x, in_scale, in_zp, tanh=True)
