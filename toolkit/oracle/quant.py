"""TFLite's fixed-point requantization arithmetic, vectorised over numpy int64 arrays.

These are the functions of ``tensorflow/lite/kernels/internal/common.h`` and gemmlowp's
``fixedpoint.h`` as the reference kernels use them (double rounding, i.e. built without
``TFLITE_SINGLE_ROUNDING``).  Every function takes and returns int64 arrays holding int32
values, so that products never overflow in numpy; results are exactly what the C code computes
in int32/int64.
"""

from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def tflite_round(x: float) -> int:
    """``std::round``: half away from zero (unlike Python's banker's ``round``)."""
    return math.floor(abs(x) + 0.5) * (1 if x >= 0 else -1)


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """Split a positive real multiplier into a Q31 int32 ``multiplier`` and a power-of-two ``shift``.

    ``real ≈ multiplier · 2^(shift − 31)``; a positive shift is a left shift.  Mirrors
    ``tflite::QuantizeMultiplier`` including its edge cases.
    """
    if real_multiplier == 0.0:
        return 0, 0
    frac, shift = math.frexp(real_multiplier)
    q_fixed = tflite_round(frac * (1 << 31))
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        shift, q_fixed = 0, 0
    return int(q_fixed), int(shift)


def quantize_multiplier_smaller_than_one(real_multiplier: float) -> tuple[int, int]:
    """``QuantizeMultiplierSmallerThanOneExp``: returns (multiplier, left_shift ≤ 0)."""
    if not 0.0 < real_multiplier < 1.0:
        raise ValueError(f"multiplier {real_multiplier} not in (0, 1)")
    mult, shift = quantize_multiplier(real_multiplier)
    return mult, shift


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """gemmlowp ``SaturatingRoundingDoublingHighMul`` on int32 values held in int64."""
    a = np.asarray(a, dtype=np.int64)
    b_arr = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b_arr == INT32_MIN)
    ab = a * b_arr
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    num = ab + nudge
    # C++ integer division truncates toward zero.
    q = np.where(num >= 0, num >> 31, -((-num) >> 31))
    return np.where(overflow, np.int64(INT32_MAX), q).astype(np.int64)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp ``RoundingDivideByPOT``: divide by 2^exponent, rounding half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> e) + (remainder > threshold).astype(np.int64)


def wrap_int32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap to int32 (what a C ``int32_t`` multiply does in practice)."""
    return np.asarray(x, dtype=np.int64).astype(np.int32).astype(np.int64)


def multiply_by_quantized_multiplier(
    x: np.ndarray, multiplier: np.ndarray | int, shift: np.ndarray | int
) -> np.ndarray:
    """``tflite::MultiplyByQuantizedMultiplier`` (double rounding), broadcasting per channel."""
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    scaled = wrap_int32(x * (np.int64(1) << left))
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, multiplier), right)


def multiply_by_quantized_multiplier_smaller_than_one_exp(
    x: np.ndarray, multiplier: np.ndarray | int, left_shift: np.ndarray | int
) -> np.ndarray:
    """``MultiplyByQuantizedMultiplierSmallerThanOneExp``: shift ≤ 0."""
    return rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x, multiplier), -np.asarray(left_shift, dtype=np.int64)
    )


def multiply_by_quantized_multiplier_greater_than_one(
    x: np.ndarray, multiplier: np.ndarray | int, left_shift: np.ndarray | int
) -> np.ndarray:
    """``MultiplyByQuantizedMultiplierGreaterThanOne``: shift ≥ 0."""
    x = np.asarray(x, dtype=np.int64)
    scaled = wrap_int32(x * (np.int64(1) << np.asarray(left_shift, dtype=np.int64)))
    return saturating_rounding_doubling_high_mul(scaled, multiplier)


def dtype_range(dtype: np.dtype | type) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def activation_range_quantized(
    activation: str, scale: float, zero_point: int, dtype: np.dtype | type
) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized``: the clamp of a fused activation in the q domain.

    Only the RELU family clamps.  Any other fused activation (TANH, SIGN_BIT) gets the full
    range of the type, i.e. it is ignored, as in TFLite, LiteRT and TFLite Micro alike (checked
    against each interpreter in the oracle tests)."""
    qmin, qmax = dtype_range(dtype)

    def q(v: float) -> int:
        # TFLite divides in float32 before rounding.
        return zero_point + tflite_round(float(np.float32(v) / np.float32(scale)))

    if activation == "RELU":
        return max(qmin, q(0.0)), qmax
    if activation == "RELU6":
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(qmin, q(-1.0)), min(qmax, q(1.0))
    if activation in ("NONE", "TANH", "SIGN_BIT"):
        return qmin, qmax
    raise ValueError(f"unknown fused activation {activation}")


def activation_float(x: np.ndarray, activation: str) -> np.ndarray:
    """Apply a fused activation to float32 values as the float kernels do."""
    x = np.asarray(x, dtype=np.float32)
    if activation == "NONE":
        return x
    if activation == "RELU":
        return np.maximum(x, np.float32(0))
    if activation == "RELU6":
        return np.clip(x, np.float32(0), np.float32(6))
    if activation == "RELU_N1_TO_1":
        return np.clip(x, np.float32(-1), np.float32(1))
    if activation == "TANH":
        return np.tanh(x).astype(np.float32)
    if activation == "SIGN_BIT":
        return np.signbit(x).astype(np.float32)
    raise ValueError(f"unknown fused activation {activation}")
