"""Activation kernels: SOFTMAX, LOGISTIC, TANH, HARD_SWISH, RELU, RELU6, LEAKY_RELU, PRELU, ABS.

Each quantized path is the one TFLite's reference op resolver (``BUILTIN_REF``) runs, found in
``tensorflow/lite/kernels/activations.cc`` and ``kernels/internal/reference``:

* SOFTMAX int8/uint8 → int8/uint8/int16: ``reference_ops::Softmax``, gemmlowp fixed point
  (Q5.26 scaled differences, ``exp_on_negative_values``, a Q12.19 sum and ``GetReciprocal``).
* SOFTMAX int16 → int16: ``reference_ops::SoftmaxInt16``, interpolated int16 tables of exp and
  1/(1+x) built in double at prepare time.
* LOGISTIC and TANH int8/uint8: a 256-entry table built in float32 at prepare time
  (``LUTPopulate``); LOGISTIC needs the output scale 1/256.  Their int16 kernels interpolate a
  hard-coded sigmoid table that no formula reproduces; they are refused here.
* HARD_SWISH int8/uint8: ``reference_ops::HardSwish`` in 16-bit fixed point.
* RELU, RELU6 (also int16), LEAKY_RELU (also int16), PRELU: requantization with
  ``MultiplyByQuantizedMultiplier``.

TensorFlow Lite Micro (the ``TFLM`` arithmetic profile) differs here: RELU, PRELU and ABS take
their multipliers from double quotients; int8 LOGISTIC and TANH are computed in gemmlowp fixed
point (:mod:`toolkit.oracle.logistic_tanh_fixed`) instead of through a float table.  TFLM's RELU6
clamps the raw input to ``[in_zp, q(6)]`` and its int8 LOGISTIC/TANH assume the converter's
output quantization: none of them reads the output parameters.  When those are what TFLM
assumes, the profile is bit-exact with TFLM; otherwise TFLM's result means something else than
the model, and the profile computes what the model means (requantizing RELU6 like TFLM's RELU,
LiteRT's table for LOGISTIC/TANH) and logs a warning.

Prepare-time arithmetic is reproduced with its C++ types: several multipliers are computed as
``float`` quotients (``input->params.scale / output->params.scale`` is a float division) before
``QuantizeMultiplier`` widens them to double; the comments say which.  Float kernels compute in
float32 and match TFLite within float rounding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from toolkit.model.ir import DType, LeakyReluOptions, SoftmaxOptions, Tensor
from toolkit.oracle import fixedpoint as fp
from toolkit.oracle import logistic_tanh_fixed as tflm_fixed
from toolkit.oracle.profile import Arithmetic
from toolkit.oracle.quant import (
    dtype_range,
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_greater_than_one,
    quantize_multiplier,
    tflite_round,
)
from toolkit.oracle.registry import OpContext, register

log = logging.getLogger(__name__)

F32 = np.float32
# A float32 → float32 element-wise function (the C++ lambda a lookup table is built from).
Transform = Callable[[np.ndarray], np.ndarray]
_8BIT = (DType.INT8, DType.UINT8)


# --- shared helpers ---------------------------------------------------------------------------


def per_tensor_params(t: Tensor | None, role: str) -> tuple[float, int]:
    """(scale, zero point) of a per-tensor quantized tensor; ValueError otherwise."""
    if t is None or t.quant is None:
        raise ValueError(f"{role} tensor has no quantization parameters")
    if t.quant.per_channel:
        raise ValueError(f"{role} tensor is quantized per channel; this operator needs one scale")
    return t.quant.scale[0], t.quant.zero_point[0]


def float_ratio(numerator: float, denominator: float) -> float:
    """A C++ ``float / float`` quotient, widened to double as ``QuantizeMultiplier`` receives it."""
    return float(F32(numerator) / F32(denominator))


def round_half_away_f32(x: np.ndarray) -> np.ndarray:
    """``std::round`` of float32 values, exactly (``|x| + 0.5`` is exact in float64)."""
    x64 = np.asarray(x, dtype=np.float64)
    return np.copysign(np.floor(np.abs(x64) + 0.5), x64)


def _same_dtypes(ctx: OpContext) -> DType:
    inp, out = ctx.input_tensor(0), ctx.output_tensor()
    assert inp is not None
    if inp.dtype is not out.dtype:
        raise ValueError(f"input is {inp.dtype.value} but output is {out.dtype.value}; they must match")
    return inp.dtype


def _unsupported(ctx: OpContext, dtype: DType, supported: str) -> ValueError:
    return ValueError(f"{ctx.op.opcode} on {dtype.value} is not supported (supported: {supported})")


def _finish(ctx: OpContext, y: np.ndarray) -> list[np.ndarray]:
    out = ctx.output_tensor()
    return [np.asarray(y).astype(out.dtype.numpy).reshape(out.shape)]


def _require_zero_points(ctx: OpContext, *zero_points: int) -> None:
    if any(zp != 0 for zp in zero_points):
        raise ValueError(f"{ctx.op.opcode} on int16 needs zero points 0, got {zero_points}")


# --- RELU, RELU6 ------------------------------------------------------------------------------


def _relu_x(ctx: OpContext, act_min: float, act_max: float | None) -> list[np.ndarray]:
    """``QuantizedReluX``: requantize to the output scale, then clamp to [act_min, act_max]."""
    x = ctx.value(0)
    dtype = _same_dtypes(ctx)
    if dtype is DType.FLOAT32:
        y = np.maximum(x, F32(act_min))
        return _finish(ctx, y if act_max is None else np.minimum(y, F32(act_max)))
    if dtype not in (*_8BIT, DType.INT16):
        raise _unsupported(ctx, dtype, "float32, int8, uint8, int16")
    in_scale, in_zp = per_tensor_params(ctx.input_tensor(0), "input")
    out_scale, out_zp = per_tensor_params(ctx.output_tensor(), "output")
    if dtype is DType.INT16:
        _require_zero_points(ctx, in_zp, out_zp)
    lo, hi = dtype_range(dtype.numpy)
    tflm = ctx.profile is Arithmetic.TFLM
    if tflm and act_max is not None:
        if (F32(in_scale), in_zp) == (F32(out_scale), out_zp):
            return _finish(ctx, _relu6_tflm(x, in_scale, in_zp, act_max))
        log.warning("%s: TFLite Micro's RELU6 ignores the output quantization (it differs from the "
                    "input's); requantizing instead", ctx.op.label)
    # act / scale is a float division, rounded with roundf.
    q_min = max(lo, out_zp + tflite_round(float_ratio(act_min, out_scale)))
    q_max = hi if act_max is None else min(hi, out_zp + tflite_round(float_ratio(act_max, out_scale)))
    # TFLM's CalculateReluOpData divides the scales in double, TFLite's ReluPrepare in float.
    ratio = in_scale / out_scale if tflm else float_ratio(in_scale, out_scale)
    mult, shift = quantize_multiplier(ratio)
    y = multiply_by_quantized_multiplier(x.astype(np.int64) - in_zp, mult, shift) + out_zp
    return _finish(ctx, np.minimum(np.maximum(y, q_min), q_max))


def _relu6_tflm(x: np.ndarray, in_scale: float, in_zp: int, act_max: float) -> np.ndarray:
    """TFLM ``Relu6Quantized``: the raw input clamped to ``[in_zp, FloatToQuantizedType(6)]``
    (equal to the requantizing kernel when the output is quantized like the input)."""
    lo, hi = dtype_range(x.dtype)
    six = min(hi, max(lo, tflite_round(float_ratio(act_max, in_scale)) + in_zp))
    return np.clip(x.astype(np.int64), in_zp, six)


@register("RELU")
def relu(ctx: OpContext) -> list[np.ndarray]:
    return _relu_x(ctx, 0.0, None)


@register("RELU6")
def relu6(ctx: OpContext) -> list[np.ndarray]:
    return _relu_x(ctx, 0.0, 6.0)


# --- LEAKY_RELU, PRELU ------------------------------------------------------------------------


@register("LEAKY_RELU")
def leaky_relu(ctx: OpContext) -> list[np.ndarray]:
    opts = ctx.options
    if not isinstance(opts, LeakyReluOptions):
        raise ValueError("LEAKY_RELU needs LeakyReluOptions (alpha)")
    x = ctx.value(0)
    dtype = _same_dtypes(ctx)
    if dtype is DType.FLOAT32:
        return _finish(ctx, np.where(x > 0, x, x * F32(opts.alpha)))
    if dtype not in (*_8BIT, DType.INT16):
        raise _unsupported(ctx, dtype, "float32, int8, uint8, int16")
    in_scale, in_zp = per_tensor_params(ctx.input_tensor(0), "input")
    out_scale, out_zp = per_tensor_params(ctx.output_tensor(), "output")
    if dtype is DType.INT16:
        _require_zero_points(ctx, in_zp, out_zp)
    # Both multipliers are float expressions in LeakyReluPrepare.
    alpha_real = float(F32(in_scale) * F32(opts.alpha) / F32(out_scale))
    m_alpha, s_alpha = quantize_multiplier(alpha_real)
    m_id, s_id = quantize_multiplier(float_ratio(in_scale, out_scale))
    v = x.astype(np.int64) - in_zp
    scaled = np.where(
        v >= 0,
        multiply_by_quantized_multiplier(v, m_id, s_id),
        multiply_by_quantized_multiplier(v, m_alpha, s_alpha),
    )
    lo, hi = dtype_range(dtype.numpy)
    return _finish(ctx, np.clip(scaled + out_zp, lo, hi))


def _broadcast_alpha(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    try:
        shape = np.broadcast_shapes(x.shape, alpha.shape)
    except ValueError as exc:
        raise ValueError(f"PRELU alpha of shape {alpha.shape} does not broadcast to input {x.shape}") from exc
    if shape != x.shape:
        raise ValueError(f"PRELU alpha of shape {alpha.shape} would grow the input {x.shape} to {shape}")
    return np.broadcast_to(alpha, x.shape)


@register("PRELU")
def prelu(ctx: OpContext) -> list[np.ndarray]:
    x = ctx.value(0)
    dtype = _same_dtypes(ctx)
    alpha_t = ctx.input_tensor(1)
    if alpha_t is None or alpha_t.dtype is not dtype:
        raise ValueError("PRELU alpha must have the input's dtype")
    alpha = _broadcast_alpha(x, ctx.value(1))
    if dtype is DType.FLOAT32:
        return _finish(ctx, np.where(x >= 0, x, x * alpha))
    if dtype not in _8BIT:
        raise _unsupported(ctx, dtype, "float32, int8, uint8")
    in_scale, in_zp = per_tensor_params(ctx.input_tensor(0), "input")
    a_scale, a_zp = per_tensor_params(alpha_t, "alpha")
    out_scale, out_zp = per_tensor_params(ctx.output_tensor(), "output")
    if ctx.profile is Arithmetic.TFLM:  # CalculatePreluParams: double quotients
        m1, s1 = quantize_multiplier(in_scale / out_scale)
        m2, s2 = quantize_multiplier(in_scale * a_scale / out_scale)
    else:  # PreluPrepare: both real multipliers are float expressions.
        m1, s1 = quantize_multiplier(float_ratio(in_scale, out_scale))
        m2, s2 = quantize_multiplier(float(F32(in_scale) * F32(a_scale) / F32(out_scale)))
    v = x.astype(np.int64) - in_zp
    av = alpha.astype(np.int64) - a_zp
    scaled = np.where(
        v >= 0,
        multiply_by_quantized_multiplier(v, m1, s1),
        multiply_by_quantized_multiplier(v * av, m2, s2),
    )
    lo, hi = dtype_range(dtype.numpy)
    return _finish(ctx, np.clip(scaled + out_zp, lo, hi))


# --- LOGISTIC, TANH ---------------------------------------------------------------------------


def _expf(x: np.ndarray) -> np.ndarray:
    """float32 ``std::exp``: computed in double and rounded once (libm's expf is that exact)."""
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(x, dtype=np.float64)).astype(F32)


def _logistic_f32(x: np.ndarray) -> np.ndarray:
    """``reference_ops::Logistic`` (float), with its cut-offs at -9 and 16.619…"""
    x = np.asarray(x, dtype=F32)
    mid = F32(1) / (F32(1) + _expf(-x))
    y = np.where(x < F32(-9.0), _expf(x), mid)
    return np.where(x > F32(16.619047164916992188), F32(1), y).astype(F32)


def _tanh_f32(x: np.ndarray) -> np.ndarray:
    return np.tanh(np.asarray(x, dtype=np.float64)).astype(F32)


def lut_populate(
    dtype: DType, in_scale: float, in_zp: int, out_scale: float, out_zp: int, transform_f32: Transform
) -> np.ndarray:
    """TFLite's ``LUTPopulate`` for 8-bit types: the table of all 256 inputs, in float32.

    Entry ``i`` holds the output for input value ``dtype_min + i``.
    """
    lo, hi = dtype_range(dtype.numpy)
    q = np.arange(lo, hi + 1, dtype=np.int64)
    dequantized = F32(in_scale) * (q - in_zp).astype(F32)
    transformed = transform_f32(dequantized)
    rescaled = round_half_away_f32(np.asarray(transformed, dtype=F32) * (F32(1) / F32(out_scale)))
    return np.clip(rescaled + out_zp, lo, hi).astype(np.int64)


def _lut_kernel(ctx: OpContext, transform_f32: Transform) -> list[np.ndarray]:
    dtype = ctx.output_tensor().dtype
    in_scale, in_zp = per_tensor_params(ctx.input_tensor(0), "input")
    out_scale, out_zp = per_tensor_params(ctx.output_tensor(), "output")
    table = lut_populate(dtype, in_scale, in_zp, out_scale, out_zp, transform_f32)
    lo, _ = dtype_range(dtype.numpy)
    return _finish(ctx, table[ctx.value(0).astype(np.int64) - lo])


@register("LOGISTIC")
def logistic(ctx: OpContext) -> list[np.ndarray]:
    dtype = _same_dtypes(ctx)
    if dtype is DType.FLOAT32:
        return _finish(ctx, _logistic_f32(ctx.value(0)))
    if dtype not in _8BIT:
        raise _unsupported(ctx, dtype, "float32, int8, uint8")
    out_scale, _ = per_tensor_params(ctx.output_tensor(), "output")
    if F32(out_scale) != F32(1.0 / 256):
        raise ValueError(f"LOGISTIC on {dtype.value} needs the output scale 1/256, got {out_scale}")
    if ctx.profile is Arithmetic.TFLM and dtype is DType.INT8:
        result = _tflm_fixed_point(ctx, tflm_fixed.LOGISTIC_OUTPUT, tflm_fixed.logistic_int8)
        if result is not None:
            return result
    # The C++ lambda: 1.0f / (1.0f + std::exp(-value)), all float.
    return _lut_kernel(ctx, lambda v: F32(1) / (F32(1) + _expf(-v)))


@register("TANH")
def tanh(ctx: OpContext) -> list[np.ndarray]:
    dtype = _same_dtypes(ctx)
    if dtype is DType.FLOAT32:
        return _finish(ctx, _tanh_f32(ctx.value(0)))
    if dtype not in _8BIT:
        raise _unsupported(ctx, dtype, "float32, int8, uint8")
    if ctx.profile is Arithmetic.TFLM and dtype is DType.INT8:
        result = _tflm_fixed_point(ctx, tflm_fixed.TANH_OUTPUT, tflm_fixed.tanh_int8)
        if result is not None:
            return result
    return _lut_kernel(ctx, _tanh_f32)


def _tflm_fixed_point(ctx: OpContext, assumed_output: tuple[float, int],
                      kernel: Callable[[np.ndarray, float, int], np.ndarray]) -> list[np.ndarray] | None:
    """TFLM's int8 LOGISTIC/TANH, which assume the converter's output quantization; ``None``
    when the output has other parameters (TFLM's result would mean something else)."""
    in_scale, in_zp = per_tensor_params(ctx.input_tensor(0), "input")
    out_scale, out_zp = per_tensor_params(ctx.output_tensor(), "output")
    if (F32(out_scale), out_zp) != (F32(assumed_output[0]), assumed_output[1]):
        log.warning("%s: TFLite Micro assumes the output scale %s and zero point %s (got %s, %s); "
                    "using TFLite's table instead", ctx.op.label, assumed_output[0], assumed_output[1],
                    out_scale, out_zp)
        return None
    return _finish(ctx, kernel(ctx.value(0), in_scale, in_zp))


# --- HARD_SWISH -------------------------------------------------------------------------------


def _downscale_multiplier_to_int16(m: int) -> int:
    """``DownScaleInt32ToInt16Multiplier``: round a Q31 multiplier to Q15."""
    if m >= fp.INT32_MAX - (1 << 15):
        return fp.INT16_MAX
    return (m + (1 << 15)) >> 16


def _hard_swish_params(in_scale: float, out_scale: float) -> tuple[int, int, int, int]:
    """HardSwishPrepare (float32 arithmetic): (out_mult16, out_exp, reluish_mult16, reluish_exp)."""
    hires_input_scale = F32(1.0 / 128.0) * F32(in_scale)
    reluish_scale = F32(3.0) / F32(32768.0)
    out_mult, out_exp = quantize_multiplier(float(hires_input_scale / F32(out_scale)))
    if out_exp > 0:
        raise ValueError(
            f"HARD_SWISH needs input scale / output scale < 128, got {in_scale} / {out_scale}"
        )
    rel_mult, rel_exp = quantize_multiplier(float(hires_input_scale / reluish_scale))
    down = _downscale_multiplier_to_int16
    return down(out_mult), out_exp, down(rel_mult), rel_exp


def hard_swish_quantized(
    x: np.ndarray, in_scale: float, in_zp: int, out_scale: float, out_zp: int, dtype: DType
) -> np.ndarray:
    """``reference_ops::HardSwish`` on 8-bit values (int16 fixed point internally)."""
    out_mult, out_exp, rel_mult, rel_exp = _hard_swish_params(in_scale, out_scale)
    hires = fp.wrap16((fp.wrap16(x.astype(np.int64) - in_zp)) * (1 << 7))
    preshift_out = fp.saturating_rounding_doubling_high_mul16(hires, out_mult)
    reluish = hires
    if rel_exp > 0:
        reluish = fp.saturating_left_shift16(reluish, rel_exp - 1)
    reluish = fp.saturating_rounding_doubling_high_mul16(reluish, rel_mult)
    if rel_exp > 0:
        reluish = fp.saturating_left_shift16(reluish, 1)
    if rel_exp < 0:
        reluish = fp.rounding_divide_by_pot16(reluish, -rel_exp)
    reluish = (reluish + (1 << 15)) >> 1
    out = fp.saturating_doubling_high_mul16(reluish, preshift_out)
    out = fp.wrap16(fp.rounding_divide_by_pot16(out, -out_exp) + out_zp)
    lo, hi = dtype_range(dtype.numpy)
    return np.clip(out, lo, hi)


@register("HARD_SWISH")
def hard_swish(ctx: OpContext) -> list[np.ndarray]:
    x = ctx.value(0)
    dtype = _same_dtypes(ctx)
    if dtype is DType.FLOAT32:
        x = np.asarray(x, dtype=F32)
        return _finish(ctx, x * np.clip(x + F32(3), F32(0), F32(6)) / F32(6))
    if dtype not in _8BIT:
        raise _unsupported(ctx, dtype, "float32, int8, uint8")
    in_scale, in_zp = per_tensor_params(ctx.input_tensor(0), "input")
    out_scale, out_zp = per_tensor_params(ctx.output_tensor(), "output")
    return _finish(ctx, hard_swish_quantized(x, in_scale, in_zp, out_scale, out_zp, dtype))


# --- SOFTMAX ----------------------------------------------------------------------------------

_SCALED_DIFF_INTEGER_BITS = 5
_ACCUMULATION_INTEGER_BITS = 12


def _softmax_f32(x: np.ndarray, beta: float) -> np.ndarray:
    """``reference_ops::Softmax`` (float) over the last axis."""
    x = np.asarray(x, dtype=F32)
    e = np.exp(((x - x.max(axis=-1, keepdims=True)) * F32(beta)).astype(np.float64)).astype(F32)
    return (e / e.sum(axis=-1, keepdims=True, dtype=F32)).astype(F32)


def softmax_quantized(x: np.ndarray, in_scale: float, beta: float, out_dtype: DType) -> np.ndarray:
    """``reference_ops::Softmax`` for 8-bit input along the last axis (output in out_dtype's
    integer domain: scale 2^-bits, zero point = the type's minimum)."""
    mult, left_shift = fp.preprocess_softmax_scaling(
        float(F32(beta)), float(F32(in_scale)), _SCALED_DIFF_INTEGER_BITS
    )
    diff_min = -fp.calculate_input_radius(_SCALED_DIFF_INTEGER_BITS, left_shift)
    xi = x.astype(np.int64)
    diff = xi - xi.max(axis=-1, keepdims=True)
    used = diff >= diff_min
    rescaled = multiply_by_quantized_multiplier_greater_than_one(np.where(used, diff, 0), mult, left_shift)
    exps = fp.exp_on_negative_values(rescaled, _SCALED_DIFF_INTEGER_BITS)
    terms = fp.rescale(exps, 0, _ACCUMULATION_INTEGER_BITS)
    sum_of_exps = fp.wrap32(np.where(used, terms, 0).sum(axis=-1, keepdims=True))
    shifted_scale, num_bits_over_unit = fp.get_reciprocal(sum_of_exps, _ACCUMULATION_INTEGER_BITS)
    out_bits = out_dtype.itemsize * 8
    exponent = num_bits_over_unit + 31 - out_bits
    if np.any((exponent < 0) | (exponent > 31)):
        raise ValueError("softmax reciprocal exponent out of range")
    lo, hi = dtype_range(out_dtype.numpy)
    unsat = fp.rounding_divide_by_pot(fp.mul(shifted_scale, exps), exponent)
    return np.where(used, np.clip(unsat + lo, lo, hi), lo)


def _softmax_int16_tables() -> tuple[np.ndarray, np.ndarray]:
    """SoftmaxPrepare's int16 tables: exp on [-10, 0] and 1 / (1 + x) on [0, 1], both with the
    symmetric output range [-1, 1] (built in double)."""
    span = INT16_RANGE
    exp_lut = fp.lut_populate_int16(10.0 / span, fp.INT16_MAX, 2.0 / span, 0, np.exp)
    recip_lut = fp.lut_populate_int16(1.0 / span, fp.INT16_MIN, 2.0 / span, 0, lambda v: 1.0 / (1.0 + v))
    return exp_lut, recip_lut


INT16_RANGE = fp.INT16_MAX - fp.INT16_MIN


def softmax_int16(x: np.ndarray, in_scale: float, beta: float) -> np.ndarray:
    """``reference_ops::SoftmaxInt16`` along the last axis (output scale 2^-15, zero point 0)."""
    exp_lut, recip_lut = _softmax_int16_tables()
    # float(input scale) * float(beta) is a float product, divided in double.
    mult, shift = quantize_multiplier(float(F32(in_scale) * F32(beta)) / (10.0 / 65535.0))
    xi = x.astype(np.int64)
    diff = xi - xi.max(axis=-1, keepdims=True)
    scaled = multiply_by_quantized_multiplier(diff, mult, shift) + 32767
    exps = fp.lut_lookup_int16(np.clip(scaled, fp.INT16_MIN, fp.INT16_MAX), exp_lut)
    sum_of_exps = fp.wrap32(exps.sum(axis=-1, keepdims=True))
    headroom_plus_one = fp.count_leading_zeros_u32(sum_of_exps)
    shifted_sum = ((sum_of_exps << (headroom_plus_one - 1)) + (1 << 13)) >> 14
    sym_shifted_sum = np.clip(shifted_sum - ((1 << 15) + (1 << 16)), fp.INT16_MIN, fp.INT16_MAX)
    reciprocal = fp.lut_lookup_int16(sym_shifted_sum, recip_lut)
    right_shift = 31 - headroom_plus_one
    result = (exps * reciprocal + (np.int64(1) << (right_shift - 1))) >> right_shift
    return np.clip(result, 0, fp.INT16_MAX)


def _check_softmax_output(ctx: OpContext, in_dtype: DType, out_dtype: DType) -> None:
    """SoftmaxPrepare's checks: int8 → int8 needs scale 1/256 (±0.1 %) and zero point -128."""
    if in_dtype is DType.INT8 and out_dtype is DType.INT8:
        scale, zp = per_tensor_params(ctx.output_tensor(), "output")
        if zp != -128 or abs(scale - 1.0 / 256) > 0.001 / 256:
            raise ValueError(f"int8 SOFTMAX needs output scale 1/256 and zero point -128, got {scale}, {zp}")
    if in_dtype is DType.INT16:
        scale, zp = per_tensor_params(ctx.output_tensor(), "output")
        _, in_zp = per_tensor_params(ctx.input_tensor(0), "input")
        if (in_zp, zp) != (0, 0) or abs(scale - 1.0 / 32768) > 0.001 / 32768:
            raise ValueError(
                f"int16 SOFTMAX needs zero points 0 and output scale 1/32768, got {in_zp}, {zp}, {scale}"
            )
    allowed = {DType.INT8: (DType.INT8, DType.INT16), DType.UINT8: (DType.UINT8, DType.INT16),
               DType.INT16: (DType.INT16,)}
    if out_dtype not in allowed[in_dtype]:
        raise ValueError(f"SOFTMAX from {in_dtype.value} to {out_dtype.value} is not supported")


@register("SOFTMAX")
def softmax(ctx: OpContext) -> list[np.ndarray]:
    opts = ctx.options
    beta = opts.beta if isinstance(opts, SoftmaxOptions) else 1.0
    x = ctx.value(0)
    inp, out = ctx.input_tensor(0), ctx.output_tensor()
    assert inp is not None
    if x.ndim < 1:
        raise ValueError("SOFTMAX needs an input of at least one dimension")
    if inp.dtype is DType.FLOAT32 and out.dtype is DType.FLOAT32:
        return _finish(ctx, _softmax_f32(x, beta))
    if inp.dtype not in (*_8BIT, DType.INT16):
        raise _unsupported(ctx, inp.dtype, "float32, int8, uint8, int16 inputs")
    _check_softmax_output(ctx, inp.dtype, out.dtype)
    in_scale, _ = per_tensor_params(inp, "input")
    if inp.dtype is DType.INT16:
        if x.ndim > 4:
            raise ValueError("int16 SOFTMAX supports 1-D to 4-D tensors only")
        return _finish(ctx, softmax_int16(x, in_scale, beta))
    return _finish(ctx, softmax_quantized(x, in_scale, beta, out.dtype))


# --- ABS --------------------------------------------------------------------------------------


@register("ABS")
def abs_(ctx: OpContext) -> list[np.ndarray]:
    """``elementwise.cc`` Abs: float32; int8 and quantized int16 rescale ``|q - zp_in|`` when
    the scales differ (float quotient); int16 without quantization is a plain ``abs``."""
    x = ctx.value(0)
    dtype = _same_dtypes(ctx)
    inp = ctx.input_tensor(0)
    assert inp is not None
    if dtype is DType.FLOAT32:
        return _finish(ctx, np.abs(x))
    if dtype is DType.INT16 and inp.quant is None:
        return _finish(ctx, fp.wrap16(np.abs(x.astype(np.int64))))
    if dtype not in (DType.INT8, DType.INT16):
        raise _unsupported(ctx, dtype, "float32, int8, int16")
    if inp.quant is None or ctx.output_tensor().quant is None:
        raise ValueError("quantized ABS needs quantization parameters on input and output")
    # GenericPrepare reads the first (per-tensor) scale and zero point of each side.
    in_scale, in_zp = inp.quant.scale[0], inp.quant.zero_point[0]
    out_q = ctx.output_tensor().quant
    assert out_q is not None
    out_scale, out_zp = out_q.scale[0], out_q.zero_point[0]
    if dtype is DType.INT16:
        _require_zero_points(ctx, in_zp, out_zp)
    value = np.abs(x.astype(np.int64) - in_zp)
    if F32(in_scale) != F32(out_scale):
        # TFLM's SetAbsOutputMultiplier divides in double, TFLite's in float.
        tflm = ctx.profile is Arithmetic.TFLM
        mult, shift = quantize_multiplier(in_scale / out_scale if tflm else float_ratio(in_scale, out_scale))
        value = multiply_by_quantized_multiplier(value, mult, shift)
    lo, hi = dtype_range(dtype.numpy)
    return _finish(ctx, np.clip(value + out_zp, lo, hi))
