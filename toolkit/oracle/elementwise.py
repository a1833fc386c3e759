"""Element-wise arithmetic kernels: ADD, SUB, MUL, MAXIMUM, MINIMUM, RSQRT, SQRT.

Contracts (bit-exact with TFLite's reference kernels for integer types, IEEE float32 otherwise):

* Binary ops broadcast like numpy (right-aligned, size-1 dims stretch), which is what TFLite's
  ``NdArrayDesc`` broadcasting computes element for element; only the supported rank differs.
* ADD/SUB on int8/uint8/int16 follow the "general rescaling" scheme of ``add.cc``/``sub.cc``:
  both inputs are shifted left by ``left_shift`` (20 for 8-bit, 15 for int16), rescaled to a
  common scale ``2·max(s1, s2)`` with Q31 multipliers (``MultiplyByQuantizedMultiplierSmallerThan
  OneExp``), added or subtracted in int32, and rescaled to the output.  int16 assumes
  ``pot_scale_int16 = false`` (what the converter writes for 16x8 models and what our writer
  writes); the IR does not carry that flag.
* MUL requantizes ``(q1 - z1)(q2 - z2)`` with one multiplier ``s1·s2/so`` computed in float32, as
  ``mul.cc`` does (``MultiplyByQuantizedMultiplier``); TFLite Micro (``TFLM`` profile) computes
  it in double.
* MAXIMUM/MINIMUM compare raw values: TFLite neither checks nor rescales quantization here (the
  converter gives inputs and output one scale), so neither does the oracle.
* RSQRT int8 reproduces ``elementwise.cc``'s fixed-point Newton-Raphson inverse square root
  (``GetInvSqrtQuantizedMultiplierExp``) value by value; RSQRT int16 uses TFLite's interpolated
  513-entry table built in float32.  SQRT int8/int16 dequantizes, takes a float32 square root
  and truncates, as that kernel does.  With the ``TFLM`` profile the RSQRT output multiplier is
  ``1 / (sqrt(double(s_in)) · double(s_out))`` and int16 RSQRT runs the same Newton-Raphson
  path as int8 (TFLM has no table), with the int16 range and 32767 for a zero input; and TFLM's
  int32 ADD (unlike its SUB and MUL) ignores a fused activation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from toolkit.model.ir import ActivationOptions, DType, Tensor
from toolkit.oracle import fixedpoint as fp
from toolkit.oracle import quant
from toolkit.oracle.profile import Arithmetic
from toolkit.oracle.registry import OpContext, register

log = logging.getLogger(__name__)

_QUANTIZED = (DType.INT8, DType.UINT8, DType.INT16)
_INT32_MIN, _INT32_MAX = quant.INT32_MIN, quant.INT32_MAX


# ---------------------------------------------------------------------------------------------
# Shared helpers.


def _activation(ctx: OpContext) -> str:
    opts = ctx.options
    return opts.activation.value if isinstance(opts, ActivationOptions) else "NONE"


def _per_tensor(t: Tensor, what: str) -> tuple[float, int]:
    """(scale as float32-exact Python float, zero point) of a per-tensor quantized tensor."""
    if t.quant is None:
        raise ValueError(f"{what} ({t.name}) is {t.dtype.value} but has no quantization parameters")
    if t.quant.per_channel:
        raise ValueError(f"{what} ({t.name}) has per-channel quantization; only per-tensor is supported")
    return t.quant.single_scale, t.quant.single_zero_point


def _float_range(activation: str) -> tuple[float, float]:
    """``CalculateActivationRange`` for float kernels.

    Like TFLite, a fused TANH or SIGN_BIT is *ignored* here (no clamp; checked against the
    interpreter): ``CalculateActivationRange`` only knows the RELU family.
    """
    ranges = {"RELU": (0.0, np.inf), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}
    return ranges.get(activation, (-np.inf, np.inf))


def _quantized_range(activation: str, scale: float, zero_point: int, dtype: np.dtype) -> tuple[int, int]:
    """``CalculateActivationRangeQuantized``: TFLite clamps only for the RELU family and gives the
    full type range for any other fused activation (TANH, SIGN_BIT), checked against the
    interpreter; ``quant.activation_range_quantized`` refuses those, so map them to NONE here."""
    relu_family = ("RELU", "RELU6", "RELU_N1_TO_1")
    return quant.activation_range_quantized(
        activation if activation in relu_family else "NONE", scale, zero_point, dtype
    )


def _int_range(activation: str, dtype: np.dtype) -> tuple[int, int]:
    """``CalculateActivationRange`` for non-quantized integer kernels (int32/int64); like the
    float version it ignores activations other than the RELU family."""
    lo, hi = quant.dtype_range(dtype)
    ranges = {"RELU": (0, hi), "RELU6": (0, 6), "RELU_N1_TO_1": (-1, 1)}
    return ranges.get(activation, (lo, hi))


def _finish(result: np.ndarray, out: Tensor) -> np.ndarray:
    """Cast/reshape a computed result to exactly the output tensor's dtype and shape."""
    if result.size != out.num_elements:
        raise ValueError(
            f"computed {list(result.shape)} ({result.size} elements) but output {out.name} "
            f"is {list(out.shape)}"
        )
    # np.array, not np.ascontiguousarray: the latter turns a 0-d result into shape (1,).
    return np.array(result.reshape(out.shape), dtype=out.dtype.numpy, order="C")


def _binary_operands(ctx: OpContext) -> tuple[np.ndarray, np.ndarray, Tensor, Tensor, Tensor]:
    t1, t2 = ctx.input_tensor(0), ctx.input_tensor(1)
    if t1 is None or t2 is None:
        raise ValueError(f"{ctx.op.opcode} needs two inputs")
    out = ctx.output_tensor()
    if t1.dtype != t2.dtype or t1.dtype != out.dtype:
        raise ValueError(
            f"{ctx.op.opcode} needs equal input and output types, got "
            f"{t1.dtype.value}, {t2.dtype.value} -> {out.dtype.value}"
        )
    return ctx.value(0), ctx.value(1), t1, t2, out


# ---------------------------------------------------------------------------------------------
# ADD / SUB.


@dataclass(frozen=True)
class AddSubParams:
    """The integer parameters ``add.cc``/``sub.cc`` Prepare derives (``ArithmeticParams``).

    Shifts are TFLite's: ``input*_shift`` and ``output_shift`` are ≤ 0 (right shifts), inputs are
    first multiplied by ``2**left_shift``.  Offsets are ``-zero_point`` for inputs and
    ``+zero_point`` for the output.
    """

    left_shift: int
    input1_offset: int
    input2_offset: int
    output_offset: int
    input1_multiplier: int
    input1_shift: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int
    act_min: int
    act_max: int


def add_sub_params(t1: Tensor, t2: Tensor, out: Tensor, activation: str) -> AddSubParams:
    s1, z1 = _per_tensor(t1, "input 1")
    s2, z2 = _per_tensor(t2, "input 2")
    so, zo = _per_tensor(out, "output")
    dtype = out.dtype
    if dtype is DType.INT16 and (z1, z2, zo) != (0, 0, 0):
        raise ValueError("int16 ADD/SUB needs zero points 0 (symmetric 16x8 quantization)")
    left_shift = 15 if dtype is DType.INT16 else 20
    # All of these are exact in double: the scales are float32 values and the factors powers of 2.
    twice_max = 2.0 * max(s1, s2)
    real_out = twice_max / ((1 << left_shift) * so)
    if not 0.0 < real_out < 1.0:
        raise ValueError(
            f"output scale {so:g} is too small for input scales {s1:g}, {s2:g} "
            f"(rescale factor {real_out:g} ≥ 1): TFLite's result is undefined there"
        )
    m1, sh1 = quant.quantize_multiplier_smaller_than_one(s1 / twice_max)
    m2, sh2 = quant.quantize_multiplier_smaller_than_one(s2 / twice_max)
    mo, sho = quant.quantize_multiplier_smaller_than_one(real_out)
    lo, hi = _quantized_range(activation, so, zo, dtype.numpy)
    return AddSubParams(left_shift, -z1, -z2, zo, m1, sh1, m2, sh2, mo, sho, lo, hi)


def add_sub_quantized(x1: np.ndarray, x2: np.ndarray, p: AddSubParams, subtract: bool) -> np.ndarray:
    """``AddFunc``/``SubFunc`` of the reference kernels, broadcast, result in int64."""

    def scaled(x: np.ndarray, offset: int, mult: int, shift: int) -> np.ndarray:
        shifted = (x.astype(np.int64) + offset) * (1 << p.left_shift)
        return quant.multiply_by_quantized_multiplier_smaller_than_one_exp(shifted, mult, shift)

    a = scaled(x1, p.input1_offset, p.input1_multiplier, p.input1_shift)
    b = scaled(x2, p.input2_offset, p.input2_multiplier, p.input2_shift)
    raw = quant.wrap_int32(a - b if subtract else a + b)
    res = quant.multiply_by_quantized_multiplier_smaller_than_one_exp(
        raw, p.output_multiplier, p.output_shift
    )
    return np.clip(res + p.output_offset, p.act_min, p.act_max)


def _add_sub(ctx: OpContext, subtract: bool) -> list[np.ndarray]:
    x1, x2, t1, t2, out = _binary_operands(ctx)
    act = _activation(ctx)
    if out.dtype is DType.FLOAT32:
        lo, hi = _float_range(act)
        r = np.subtract(x1, x2, dtype=np.float32) if subtract else np.add(x1, x2, dtype=np.float32)
        return [_finish(np.clip(r, np.float32(lo), np.float32(hi)), out)]
    if out.dtype in (DType.INT32, DType.INT64):
        ilo, ihi = _int_range(act, out.dtype.numpy)
        r = np.subtract(x1, x2) if subtract else np.add(x1, x2)
        if ctx.profile is Arithmetic.TFLM and not subtract and out.dtype is DType.INT32:
            return [_finish(r, out)]  # TFLM's int32 ADD ignores the fused activation (measured)
        return [_finish(np.clip(r, ilo, ihi), out)]
    if out.dtype in _QUANTIZED:
        p = add_sub_params(t1, t2, out, act)
        return [_finish(add_sub_quantized(x1, x2, p, subtract), out)]
    raise ValueError(f"{ctx.op.opcode} does not support {out.dtype.value}")


@register("ADD")
def add(ctx: OpContext) -> list[np.ndarray]:
    return _add_sub(ctx, subtract=False)


@register("SUB")
def sub(ctx: OpContext) -> list[np.ndarray]:
    return _add_sub(ctx, subtract=True)


# ---------------------------------------------------------------------------------------------
# MUL.


def mul_multiplier(t1: Tensor, t2: Tensor, out: Tensor,
                   profile: Arithmetic = Arithmetic.TFLM) -> tuple[int, int]:
    """``QuantizeMultiplier(s1 * s2 / so)``: the product and quotient are taken in float32 by
    TFLite/LiteRT (``mul.cc``) and in double by TFLite Micro (``mul_common.cc``)."""
    s1, _ = _per_tensor(t1, "input 1")
    s2, _ = _per_tensor(t2, "input 2")
    so, _ = _per_tensor(out, "output")
    if profile is Arithmetic.TFLM:
        return quant.quantize_multiplier(s1 * s2 / so)
    real = float((np.float32(s1) * np.float32(s2)) / np.float32(so))
    return quant.quantize_multiplier(real)


@register("MUL")
def mul(ctx: OpContext) -> list[np.ndarray]:
    x1, x2, t1, t2, out = _binary_operands(ctx)
    act = _activation(ctx)
    if out.dtype is DType.FLOAT32:
        lo, hi = _float_range(act)
        r = np.multiply(x1, x2, dtype=np.float32)
        return [_finish(np.clip(r, np.float32(lo), np.float32(hi)), out)]
    if out.dtype in (DType.INT32, DType.INT64):
        ilo, ihi = _int_range(act, out.dtype.numpy)
        return [_finish(np.clip(np.multiply(x1, x2), ilo, ihi), out)]
    if out.dtype not in _QUANTIZED:
        raise ValueError(f"MUL does not support {out.dtype.value}")
    _, z1 = _per_tensor(t1, "input 1")
    _, z2 = _per_tensor(t2, "input 2")
    so, zo = _per_tensor(out, "output")
    if out.dtype is DType.INT16 and (z1, z2, zo) != (0, 0, 0):
        raise ValueError("int16 MUL needs zero points 0 (symmetric 16x8 quantization)")
    mult, shift = mul_multiplier(t1, t2, out, ctx.profile)
    prod = quant.wrap_int32((x1.astype(np.int64) - z1) * (x2.astype(np.int64) - z2))
    res = quant.multiply_by_quantized_multiplier(prod, mult, shift) + zo
    lo, hi = _quantized_range(act, so, zo, out.dtype.numpy)
    return [_finish(np.clip(res, lo, hi), out)]


# ---------------------------------------------------------------------------------------------
# MAXIMUM / MINIMUM.


def _max_min(ctx: OpContext, take_max: bool) -> list[np.ndarray]:
    x1, x2, _, _, out = _binary_operands(ctx)
    if out.dtype not in (DType.FLOAT32, DType.INT8, DType.UINT8, DType.INT16, DType.INT32, DType.INT64):
        raise ValueError(f"{ctx.op.opcode} does not support {out.dtype.value}")
    # TFLite: ``el1 > el2 ? el1 : el2`` (and ``<`` for minimum) on the raw values.
    pick_first = np.greater(x1, x2) if take_max else np.less(x1, x2)
    return [_finish(np.where(pick_first, x1, x2), out)]


@register("MAXIMUM")
def maximum(ctx: OpContext) -> list[np.ndarray]:
    return _max_min(ctx, take_max=True)


@register("MINIMUM")
def minimum(ctx: OpContext) -> list[np.ndarray]:
    return _max_min(ctx, take_max=False)


# ---------------------------------------------------------------------------------------------
# RSQRT / SQRT.


def _unary_operand(ctx: OpContext) -> tuple[np.ndarray, Tensor, Tensor]:
    t = ctx.input_tensor(0)
    if t is None:
        raise ValueError(f"{ctx.op.opcode} needs an input")
    out = ctx.output_tensor()
    if t.dtype != out.dtype:
        raise ValueError(f"{ctx.op.opcode} needs equal input and output types")
    return ctx.value(0), t, out


# Scalar gemmlowp fixed-point primitives on Python ints holding int32 values.


def _wrap32(x: int) -> int:
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _srdhm(a: int, b: int) -> int:
    """``SaturatingRoundingDoublingHighMul`` (C division truncates toward zero)."""
    if a == b == _INT32_MIN:
        return _INT32_MAX
    num = a * b + ((1 << 30) if a * b >= 0 else 1 - (1 << 30))
    return num >> 31 if num >= 0 else -((-num) >> 31)


def _rdpot(x: int, exponent: int) -> int:
    """``RoundingDivideByPOT``: round half away from zero."""
    mask = (1 << exponent) - 1
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if (x & mask) > threshold else 0)


def _sat_shift_left(x: int, exponent: int) -> int:
    """gemmlowp ``SaturatingRoundingMultiplyByPOT<exponent>`` for ``exponent > 0``."""
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return _INT32_MAX
    if x < -threshold:
        return _INT32_MIN
    return x << exponent


def inv_sqrt_quantized_multiplier_exp(value: int, reverse_shift: int) -> tuple[int, int]:
    """TFLite ``GetInvSqrtQuantizedMultiplierExp``: 1/sqrt(value) as (Q31 multiplier, shift).

    Newton-Raphson in gemmlowp fixed point with 3 integer bits, 5 iterations from x = 1, exactly as
    ``common.h`` does it (values ≤ 1 map to ``(INT32_MAX, 0)``).
    """
    if value <= 1:
        return _INT32_MAX, 0
    shift = 11
    while value >= (1 << 29):
        value //= 4
        shift += 1
    max_left_shift_bits = (32 - value.bit_length()) - 1
    left_shift_bit_pairs = max_left_shift_bits // 2 - 1
    shift -= left_shift_bit_pairs
    value <<= 2 * left_shift_bit_pairs
    half_input = _rdpot(value >> 1, 1)  # F3 raw
    half_three = (1 << 28) + (1 << 27)  # 1.5 in F3
    x = 1 << 28  # 1.0 in F3
    for _ in range(5):
        x3 = _sat_shift_left(_srdhm(_srdhm(x, x), x), 6)  # F9 -> F3
        x = _sat_shift_left(_wrap32(_srdhm(half_three, x) - _srdhm(half_input, x3)), 3)  # F6 -> F3
    inv = _srdhm(x, 1518500250)  # times sqrt(2)/2 in F0
    if shift < 0:
        inv = _wrap32(inv << -shift)
        shift = 0
    return inv, shift * reverse_shift


def _mbqm(x: int, multiplier: int, shift: int) -> int:
    """``MultiplyByQuantizedMultiplier`` (double rounding) on one value."""
    scaled = _wrap32(x * (1 << max(shift, 0)))
    return _rdpot(_srdhm(scaled, multiplier), max(-shift, 0))


def rsqrt_output_multiplier(in_scale: float, out_scale: float, profile: Arithmetic) -> tuple[int, int]:
    """``SetRsqrtOutputMultiplier``: ``1 / (sqrt(s_in) · s_out)``; TFLite multiplies in float32
    (``sqrtf``), TFLite Micro in double."""
    if profile is Arithmetic.TFLM:
        return quant.quantize_multiplier(1.0 / (float(np.sqrt(in_scale)) * out_scale))
    denom = np.float32(np.sqrt(np.float32(in_scale))) * np.float32(out_scale)
    return quant.quantize_multiplier(1.0 / float(denom))


def rsqrt_newton(value: int, mult: int, shift: int) -> int:
    """``RsqrtEvalQuantized`` before the output offset: 1/sqrt(value) for ``value > 0`` through
    ``GetInvSqrtQuantizedMultiplierExp`` and two ``MultiplyByQuantizedMultiplier``."""
    k_shift = 20  # keeps the intermediate 1/sqrt an integer
    inv, inv_shift = inv_sqrt_quantized_multiplier_exp(value, -1)
    data = _mbqm(1, inv, inv_shift + k_shift)
    return _mbqm(data, mult, shift - k_shift)


def rsqrt_int8_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int,
                     profile: Arithmetic = Arithmetic.TFLM) -> np.ndarray:
    """Output for every int8 input value (index ``q + 128``); -1000 marks values below the zero
    point, on which TFLite's kernel fails."""
    mult, shift = rsqrt_output_multiplier(in_scale, out_scale, profile)
    table = np.empty(256, dtype=np.int64)
    for q in range(-128, 128):
        value = q - in_zp
        if value < 0:
            table[q + 128] = -1000
            continue
        if value == 0:
            table[q + 128] = 127
            continue
        table[q + 128] = min(max(rsqrt_newton(value, mult, shift) + out_zp, -128), 127)
    return table


def _rsqrt_int16_tflm(x: np.ndarray, t: Tensor, out: Tensor) -> np.ndarray:
    """TFLM's int16 RSQRT: the int8 Newton-Raphson path per distinct value, int16 range."""
    s_in, z_in = _per_tensor(t, "input")
    s_out, z_out = _per_tensor(out, "output")
    if (z_in, z_out) != (0, 0):
        raise ValueError("int16 RSQRT needs zero points 0 (symmetric 16x8 quantization)")
    if np.any(x < z_in):
        raise ValueError("RSQRT input below its zero point (a negative real value): TFLite fails")
    mult, shift = rsqrt_output_multiplier(s_in, s_out, Arithmetic.TFLM)
    values, inverse = np.unique(x.astype(np.int64), return_inverse=True)
    mapped = np.array([fp.INT16_MAX if v == 0 else rsqrt_newton(int(v), mult, shift)
                       for v in values.tolist()], dtype=np.int64)
    return np.clip(mapped[inverse].reshape(x.shape), fp.INT16_MIN, fp.INT16_MAX)


def _round_away_f32(v: np.ndarray) -> np.ndarray:
    """``roundf``: half away from zero, exact on float32 (``v - trunc(v)`` is exact)."""
    whole = np.trunc(v)
    return (whole + np.sign(v) * (np.abs(v - whole) >= np.float32(0.5))).astype(np.float32)


def lut_populate_int16_f32(
    in_scale: float, in_zp: int, out_scale: float, out_zp: int,
    transform: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """TFLite's ``LUTPopulateInt16<float>`` (the instantiation ``LUTPopulate<int16_t>`` uses for
    kernels whose transform is ``float(float, const void*)``, e.g. RSQRT): 512 biased samples plus
    an end point, every operation in float32 in the reference code's order.  The double-precision
    twin used by SOFTMAX is ``fixedpoint.lut_populate_int16``."""
    f = np.float32
    qmin, qmax = fp.INT16_MIN, fp.INT16_MAX
    input_min = f(in_scale) * f(qmin - in_zp)
    input_max = f(in_scale) * f(qmax - in_zp)
    output_min = f(out_scale) * f(qmin - out_zp)
    output_max = f(out_scale) * f(qmax - out_zp)
    steps = 512
    step = (input_max - input_min) / f(steps)
    half_step = step / f(2)
    scaling_inv = f(qmax - qmin + 1) / (output_max - output_min)
    i = np.arange(steps, dtype=np.float32)
    val = transform(input_min + i * step)
    val_mid = transform(input_min + i * step + half_step)
    val_next = transform(input_min + (i + f(1)) * step)
    sample = _round_away_f32(val * scaling_inv)
    mid_interp = _round_away_f32((val_next * scaling_inv + sample) / f(2))
    bias = _round_away_f32((mid_interp - _round_away_f32(val_mid * scaling_inv)) / f(2))
    last = _round_away_f32(transform(np.array([input_max], np.float32)) * scaling_inv)
    table = np.concatenate([sample - bias, last])
    return np.clip(table, qmin, qmax).astype(np.int64)


def _rsqrt_int16(x: np.ndarray, t: Tensor, out: Tensor) -> np.ndarray:
    s_in, z_in = _per_tensor(t, "input")
    s_out, z_out = _per_tensor(out, "output")
    if (z_in, z_out) != (0, 0):
        raise ValueError("int16 RSQRT needs zero points 0 (symmetric 16x8 quantization)")
    if np.any(x < z_in):
        raise ValueError("RSQRT input below its zero point (a negative real value): TFLite fails")
    saturated = np.float32(fp.INT16_MAX) * np.float32(s_out)  # the kernel's value for x ≤ 0

    def transform(v: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.float32(1.0) / np.sqrt(v, dtype=np.float32)
        return np.where(v <= 0, saturated, r).astype(np.float32)

    table = lut_populate_int16_f32(s_in, z_in, s_out, z_out, transform)
    return fp.lut_lookup_int16(x, table)


@register("RSQRT")
def rsqrt(ctx: OpContext) -> list[np.ndarray]:
    x, t, out = _unary_operand(ctx)
    if out.dtype is DType.FLOAT32:
        with np.errstate(divide="ignore", invalid="ignore"):
            return [_finish(np.float32(1.0) / np.sqrt(x.astype(np.float32)), out)]
    if out.dtype is DType.INT16:
        tflm = ctx.profile is Arithmetic.TFLM
        return [_finish(_rsqrt_int16_tflm(x, t, out) if tflm else _rsqrt_int16(x, t, out), out)]
    if out.dtype is not DType.INT8:
        raise ValueError(f"RSQRT supports float32, int8 and int16, not {out.dtype.value}")
    s_in, z_in = _per_tensor(t, "input")
    s_out, z_out = _per_tensor(out, "output")
    table = rsqrt_int8_table(s_in, z_in, s_out, z_out, ctx.profile)
    res = table[x.astype(np.int64) + 128]
    if np.any(res == -1000):
        raise ValueError(f"RSQRT input below its zero point {z_in} (a negative real value): TFLite fails")
    return [_finish(res, out)]


@register("SQRT")
def sqrt(ctx: OpContext) -> list[np.ndarray]:
    x, t, out = _unary_operand(ctx)
    if out.dtype is DType.FLOAT32:
        with np.errstate(invalid="ignore"):
            return [_finish(np.sqrt(x.astype(np.float32)), out)]
    if out.dtype not in (DType.INT8, DType.INT16):
        raise ValueError(f"SQRT supports float32, int8 and int16, not {out.dtype.value}")
    s_in, z_in = _per_tensor(t, "input")
    s_out, z_out = _per_tensor(out, "output")
    real = np.float32(s_in) * (x.astype(np.int64) - z_in).astype(np.float32)
    if np.any(real < 0):
        raise ValueError(f"SQRT input below its zero point {z_in} (a negative real value): TFLite fails")
    root = np.sqrt(real, dtype=np.float32) / np.float32(s_out)
    # static_cast<int>: truncation toward zero (the root is non-negative), then the zero point.
    q = np.trunc(np.minimum(root, np.float32(2**31 - 1))).astype(np.int64) + z_out
    lo, hi = quant.dtype_range(out.dtype.numpy)
    return [_finish(np.clip(q, lo, hi), out)]
