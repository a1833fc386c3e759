"""FULLY_CONNECTED, bit-exact with TFLite's reference kernels.

The input is flattened to ``(batch, depth)`` with ``depth`` = the filter's second dimension
(``batch = input elements / depth``); the output is ``(batch, units)``, or the input's leading
dimensions followed by ``units`` with ``keep_num_dims``.  Paths:

* float32: ``reference_ops::FullyConnected`` (computed in float64, rounded once).
* int8 with a per-tensor filter: ``reference_integer_ops::FullyConnected``:
  ``Σ (w − w_zp)(x − x_zp) + bias``, requantized with one multiplier
  ``double(in_scale)·double(w_scale)/double(out_scale)``.
* int8 with a per-channel filter (axis 0): ``reference_integer_ops::FullyConnectedPerChannel``:
  ``Σ w (x − x_zp) + bias`` (no filter offset), one multiplier per output unit.
* uint8 (per-tensor): ``reference_ops::FullyConnected`` with filter offset, as int8 per-tensor.

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
from toolkit.oracle.quant import activation_float
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
    assert x_t is not None and w_t is not None
    opts = ctx.options
    assert isinstance(opts, FullyConnectedOptions)
    if bias is not None and bias.dtype != np.int32:
        raise ValueError(f"FULLY_CONNECTED: quantized bias must be int32, got {bias.dtype}")
    in_scale, in_zp = per_tensor_params(x_t, "input")
    scales, zps = filter_scales(w_t, units, 0)
    wf = w.astype(np.float64)
    assert w_t.quant is not None
    if not w_t.quant.per_channel:
        wf = wf - zps[0]  # the per-tensor kernels apply a filter offset; per-channel ones do not
    elif w_t.dtype is DType.UINT8:
        raise ValueError("FULLY_CONNECTED: uint8 filters must be quantized per tensor")
    acc = exact_int64((x2 - in_zp) @ wf.T)
    req = Requantizer.create(in_scale, scales, out_t, opts.activation)
    return req.apply(add_bias(acc, bias, units))
