"""QUANTIZE and DEQUANTIZE kernels (``tensorflow/lite/kernels/quantize.cc``, ``dequantize.cc``).

* QUANTIZE float32 → int8/uint8/int16: ``reference_ops::AffineQuantize``: ``round(x / scale)``
  with the division in float32 and ``std::round`` (half away from zero), plus the zero point,
  clamped.  Per-channel output quantization uses the same formula per slice
  (``PerChannelQuantize``).
* QUANTIZE between integer types (requantization, int8/uint8 → int8/uint8, int16 → int8/int16):
  ``reference_ops::Requantize``, ``MultiplyByQuantizedMultiplier`` with the double quotient of
  the two scales.
* DEQUANTIZE int8/uint8/int16 → float32: ``float(double(scale) · (q − zero_point))``, which is the
  correctly rounded float32 of the exact product (per-tensor and per-channel alike); float16 →
  float32 is exact.  TensorFlow Lite Micro dequantizes with the first scale and zero point only,
  which gives other channels a wrong value; the ``TFLM`` profile computes the per-channel result
  anyway and logs a warning.
"""

from __future__ import annotations

import logging

import numpy as np

from toolkit.model.ir import DType, QuantParams
from toolkit.oracle.profile import Arithmetic
from toolkit.oracle.quant import (
    dtype_range,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    wrap_int32,
)
from toolkit.oracle.registry import OpContext, register

log = logging.getLogger(__name__)

F32 = np.float32
_QUANTIZED_OUT = (DType.INT8, DType.UINT8, DType.INT16)
# Requantization pairs QuantizePrepare accepts (input dtype → output dtypes).
_REQUANTIZE: dict[DType, tuple[DType, ...]] = {
    DType.INT8: (DType.INT8, DType.UINT8, DType.INT16),
    DType.UINT8: (DType.INT8, DType.UINT8, DType.INT16),
    DType.INT16: (DType.INT8, DType.INT16),
}


def _quant(q: QuantParams | None, role: str) -> QuantParams:
    if q is None:
        raise ValueError(f"{role} tensor has no quantization parameters")
    return q


def _channel_shape(q: QuantParams, ndim: int) -> tuple[int, ...]:
    """Shape that broadcasts per-channel parameters along ``q.axis`` of an ``ndim`` array."""
    if not 0 <= q.axis < ndim:
        raise ValueError(f"quantized dimension {q.axis} is outside a {ndim}-d tensor")
    shape = [1] * ndim
    shape[q.axis] = len(q.scale)
    return tuple(shape)


def _params(q: QuantParams, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scales (float32) and zero points (int64) broadcastable against ``x``."""
    scale = np.asarray(q.scale, dtype=F32)
    zp = np.asarray(q.zero_point, dtype=np.int64)
    if not q.per_channel:
        return scale.reshape(()), zp.reshape(())
    shape = _channel_shape(q, x.ndim)
    if x.shape[q.axis] != len(q.scale):
        raise ValueError(f"{len(q.scale)} channel scales for a dimension of size {x.shape[q.axis]}")
    return scale.reshape(shape), zp.reshape(shape)


def float_to_int32_x86(r: np.ndarray) -> np.ndarray:
    """``static_cast<int32_t>`` of integral float values as x86 (``cvttss2si``) executes it:
    values outside the int32 range, infinities and NaN become INT32_MIN."""
    r = np.asarray(r, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        inside = (r >= -(2.0**31)) & (r < 2.0**31)
    return np.where(inside, np.where(inside, r, 0).astype(np.int64), -(2**31))


def affine_quantize(x: np.ndarray, q: QuantParams, dtype: DType) -> np.ndarray:
    """``AffineQuantize`` / ``PerChannelQuantize``: float32 values → ``dtype`` integers.

    ``round(x / scale)`` (float32 division, half away from zero) is converted to int32 and the
    zero point added in int32 before clamping, as the installed TFLite does: an out-of-range
    quotient (|x / scale| ≥ 2^31, ±inf, NaN) therefore becomes INT32_MIN + zero point, which
    clamps to the type's minimum (or, wrapping, to its maximum when the zero point is negative).
    """
    scale, zp = _params(q, x)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        quotient = (np.asarray(x, dtype=F32) / scale).astype(np.float64)
        rounded = np.copysign(np.floor(np.abs(quotient) + 0.5), quotient)
    unclamped = wrap_int32(float_to_int32_x86(rounded) + zp)
    lo, hi = dtype_range(dtype.numpy)
    return np.clip(unclamped, lo, hi).astype(dtype.numpy)


def requantize(x: np.ndarray, q_in: QuantParams, q_out: QuantParams, dtype: DType) -> np.ndarray:
    """``reference_ops::Requantize`` between per-tensor quantized integer types."""
    if q_in.per_channel or q_out.per_channel:
        raise ValueError("requantization needs per-tensor quantization on both sides")
    mult, shift = quantize_multiplier(float(q_in.scale[0]) / float(q_out.scale[0]))
    lo, hi = dtype_range(dtype.numpy)
    y = multiply_by_quantized_multiplier(x.astype(np.int64) - q_in.zero_point[0], mult, shift)
    return np.clip(y + q_out.zero_point[0], lo, hi).astype(dtype.numpy)


@register("QUANTIZE")
def quantize(ctx: OpContext) -> list[np.ndarray]:
    inp, out = ctx.input_tensor(0), ctx.output_tensor()
    assert inp is not None
    x = ctx.value(0)
    q_out = _quant(out.quant, "output")
    if inp.dtype is DType.FLOAT32 and out.dtype in _QUANTIZED_OUT:
        y = affine_quantize(x, q_out, out.dtype)
    elif out.dtype in _REQUANTIZE.get(inp.dtype, ()):
        q_in = _quant(inp.quant, "input")
        both_int16 = inp.dtype is DType.INT16 and out.dtype is DType.INT16
        if both_int16 and (q_in.zero_point[0], q_out.zero_point[0]) != (0, 0):
            raise ValueError("QUANTIZE int16 → int16 needs zero points 0")
        y = requantize(x, q_in, q_out, out.dtype)
    else:
        raise ValueError(f"QUANTIZE from {inp.dtype.value} to {out.dtype.value} is not supported")
    return [y.reshape(out.shape)]


@register("DEQUANTIZE")
def dequantize(ctx: OpContext) -> list[np.ndarray]:
    inp, out = ctx.input_tensor(0), ctx.output_tensor()
    assert inp is not None
    x = ctx.value(0)
    if out.dtype is not DType.FLOAT32:
        raise ValueError(f"DEQUANTIZE produces float32, the output is {out.dtype.value}")
    if inp.dtype is DType.FLOAT16:
        return [np.asarray(x, dtype=np.float16).astype(F32).reshape(out.shape)]
    if inp.dtype not in _QUANTIZED_OUT:
        raise ValueError(f"DEQUANTIZE from {inp.dtype.value} is not supported")
    q = _quant(inp.quant, "input")
    if q.per_channel and ctx.profile is Arithmetic.TFLM:
        log.warning("%s: TFLite Micro would dequantize every channel with the first channel's "
                    "parameters; computing the per-channel result", ctx.op.label)
    if inp.dtype is DType.INT16 and any(z != 0 for z in q.zero_point):
        raise ValueError("DEQUANTIZE from int16 needs zero point 0")
    scale, zp = _params(q, x)
    # double(scale) × int is exact, so one rounding to float32 remains, as in the C++.
    y = (scale.astype(np.float64) * (x.astype(np.int64) - zp)).astype(F32)
    return [y.reshape(out.shape)]
