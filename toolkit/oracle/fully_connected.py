"""FULLY_CONNECTED, bit-exact with TFLite's reference kernels.

The input is flattened to ``(batch, depth)`` with ``depth`` = the filter's second dimension
(``batch = input elements / depth``); the output is ``(batch, units)``, or the input's leading
dimensions followed by ``units`` with ``keep_num_dims``.  Paths:

* float32: ``reference_ops::FullyConnected`` (computed in float64, rounded once).
* int8 / uint8 with a per-tensor filter: ``reference_integer_ops::FullyConnected`` /
  ``reference_ops::FullyConnected``, the overloads that take the scales:
  ``acc = Σ (w − w_zp)(x − x_zp) + bias`` in int32.
* int8 with a per-channel filter (axis 0): ``reference_integer_ops::FullyConnectedPerChannel``
  (scales overload): ``acc = Σ w (x − x_zp) + bias`` (no filter offset).

Requantization depends on the arithmetic profile (:mod:`toolkit.oracle.profile`):

* ``LITERT``: LiteRT's reference FC does not requantize with a fixed-point multiplier: it
  computes ``(int32) round(double(acc) · double(in_scale) · double(w_scale[u]) /
  double(out_scale))`` (``std::round``: half away from zero), adds the output zero point and
  clamps to the fused activation's range.
* ``TFLM`` and ``TFLITE_2_14``: ``MultiplyByQuantizedMultiplier`` like the convolutions, with
  the multiplier of ``CalculateOpDataFullyConnected``: per channel ``double(in_scale) ·
  double(w_scale[u]) / double(out_scale)``; per tensor ``GetQuantizedConvolutionMultipler``,
  whose product ``in_scale · w_scale`` is taken in float32.  (The two schemes differ in about
  one output in a thousand.)

Exactness of the integer sums via float64 matrix products: see ``toolkit.oracle.conv``.
"""

from __future__ import annotations

import numpy as np

from toolkit.model.ir import DType, FullyConnectedOptions
from toolkit.oracle.conv import (
    Requantizer,
    add_bias,
    exact_int64,
    filter_scales,
    float_activation,
    per_tensor_params,
)
from toolkit.oracle.profile import Arithmetic
from toolkit.oracle.quant import (
    INT32_MAX,
    INT32_MIN,
    activation_float,
    activation_range_quantized,
    wrap_int32,
)
from toolkit.oracle.registry import OpContext, register


def _output_shape(x_shape: tuple[int, ...], batch: int, units: int, keep_num_dims: bool) -> tuple[int, ...]:
    if keep_num_dims:
        return (*x_shape[:-1], units)
    return (batch, units)


@register("FULLY_CONNECTED")
def fully_connected(ctx: OpContext) -> list[np.ndarray]:
    opts = ctx.options
    if not isinstance(opts, FullyConnectedOptions):
        raise ValueError(f"FULLY_CONNECTED needs FullyConnectedOptions, got {type(opts).__name__}")
    x, w, bias = ctx.value(0), ctx.value(1), ctx.optional_value(2)
    x_t, w_t, out_t = ctx.input_tensor(0), ctx.input_tensor(1), ctx.output_tensor()
    assert x_t is not None and w_t is not None
    if w.ndim != 2:
        raise ValueError(f"FULLY_CONNECTED filter must be 2-D (units, depth), got {w.shape}")
    units, depth = w.shape
    if depth <= 0 or x.size % depth:
        raise ValueError(f"FULLY_CONNECTED: {x.size} input elements are not a multiple of depth {depth}")
    if opts.keep_num_dims and x.shape[-1] != depth:
        raise ValueError(f"FULLY_CONNECTED keep_num_dims: input's last dimension {x.shape[-1]} != {depth}")
    batch = x.size // depth
    expected = _output_shape(x.shape, batch, units, opts.keep_num_dims)
    if int(np.prod(out_t.shape)) != int(np.prod(expected)):
        raise ValueError(f"FULLY_CONNECTED: output shape {out_t.shape}, expected {expected}")
    x2 = x.reshape(batch, depth).astype(np.float64)
    types = (x_t.dtype, w_t.dtype, out_t.dtype)
    if types == (DType.FLOAT32,) * 3:
        total = add_bias(x2 @ w.astype(np.float64).T, bias, units).astype(np.float32)
        y = activation_float(total, float_activation(opts.activation, "FULLY_CONNECTED"))
    elif types in ((DType.INT8,) * 3, (DType.UINT8,) * 3):
        y = _quantized(ctx, x2, w, bias, units)
    else:
        raise ValueError(
            f"FULLY_CONNECTED with {x_t.dtype.value} input, {w_t.dtype.value} filter and "
            f"{out_t.dtype.value} output is not supported (float32, int8 or uint8 throughout)"
        )
    return [y.reshape(out_t.shape)]


def _quantized(ctx: OpContext, x2: np.ndarray, w: np.ndarray, bias: np.ndarray | None,
               units: int) -> np.ndarray:
    x_t, w_t, out_t = ctx.input_tensor(0), ctx.input_tensor(1), ctx.output_tensor()
    assert x_t is not None and w_t is not None and w_t.quant is not None
    opts = ctx.options
    assert isinstance(opts, FullyConnectedOptions)
    if bias is not None and bias.dtype != np.int32:
        raise ValueError(f"FULLY_CONNECTED: quantized bias must be int32, got {bias.dtype}")
    in_scale, in_zp = per_tensor_params(x_t, "input")
    out_scale, out_zp = per_tensor_params(out_t, "output")
    scales, zps = filter_scales(w_t, units, 0)
    wf = w.astype(np.float64)
    if not w_t.quant.per_channel:
        wf = wf - zps[0]  # the per-tensor kernels apply a filter offset; per-channel ones do not
    elif w_t.dtype is DType.UINT8:
        raise ValueError("FULLY_CONNECTED: uint8 filters must be quantized per tensor")
    acc = wrap_int32(add_bias(exact_int64((x2 - in_zp) @ wf.T), bias, units))
    if ctx.profile is not Arithmetic.LITERT:
        requantizer = Requantizer.create(in_scale, scales, out_t, opts.activation,
                                         float32_product=not w_t.quant.per_channel)
        return requantizer.apply(acc)
    effective = np.array([in_scale * float(s) / out_scale for s in scales], dtype=np.float64)
    out = wrap_int32(round_to_int32(acc * effective) + out_zp)
    lo, hi = activation_range_quantized(opts.activation.value, out_scale, out_zp, out_t.dtype.numpy)
    return np.clip(out, lo, hi).astype(out_t.dtype.numpy)


def round_to_int32(v: np.ndarray) -> np.ndarray:
    """``static_cast<int32_t>(std::round(v))`` on x86-64: half away from zero; values outside
    the int32 range (and NaN) become INT32_MIN, the "integer indefinite" of ``cvttsd2si``."""
    t = np.trunc(v)
    r = t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0.0)
    ok = np.isfinite(r) & (r >= INT32_MIN) & (r <= INT32_MAX)
    return np.where(ok, np.where(ok, r, 0.0).astype(np.int64), np.int64(INT32_MIN))
