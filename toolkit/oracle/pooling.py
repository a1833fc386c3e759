"""AVERAGE_POOL_2D and MAX_POOL_2D, bit-exact with TFLite's reference kernels.

Windows only cover in-bounds input positions (padding is never counted).  Quantized pooling
works on the raw integer values: TFLite requires the output to share the input's scale and zero
point, and uses the output parameters only for the fused activation's clamp.

* Average, int8/uint8 (``reference_integer_ops::AveragePool`` / ``reference_ops::AveragePool``):
  ``acc`` = sum of the in-bounds values, ``count`` = their number, then round half away from
  zero with C's truncating division: ``acc > 0 ? (acc + count/2)/count : (acc − count/2)/count``.
* Average, float32: ``sum / count``.
* Max: the largest in-bounds value, then the activation clamp.
"""

from __future__ import annotations

import numpy as np

from toolkit.model.ir import DType, Pool2DOptions, Tensor
from toolkit.oracle.conv import float_activation, per_tensor_params
from toolkit.oracle.padding import Window2D
from toolkit.oracle.quant import activation_float, activation_range_quantized
from toolkit.oracle.registry import OpContext, register


def _setup(ctx: OpContext, what: str) -> tuple[np.ndarray, Pool2DOptions, Window2D, Tensor]:
    opts = ctx.options
    if not isinstance(opts, Pool2DOptions):
        raise ValueError(f"{what} needs Pool2DOptions, got {type(opts).__name__}")
    x = ctx.value(0)
    x_t, out_t = ctx.input_tensor(0), ctx.output_tensor()
    assert x_t is not None
    if x.ndim != 4 or len(out_t.shape) != 4:
        raise ValueError(f"{what} needs 4-D input and output, got {x.shape} and {out_t.shape}")
    if x_t.dtype != out_t.dtype or x_t.dtype not in (DType.FLOAT32, DType.INT8, DType.UINT8):
        raise ValueError(
            f"{what} with {x_t.dtype.value} input and {out_t.dtype.value} output is not supported "
            "(float32, int8 or uint8 for both)"
        )
    n, h, w, c = x.shape
    win = Window2D.create(opts.padding, (h, w), (opts.filter_h, opts.filter_w),
                          (opts.stride_h, opts.stride_w), (1, 1), out_t.shape[1:3])
    if out_t.shape != (n, win.out_h, win.out_w, c):
        raise ValueError(f"{what}: output shape {out_t.shape}, expected {(n, win.out_h, win.out_w, c)}")
    return x, opts, win, out_t


def _clamp_quantized(values: np.ndarray, out_t: Tensor, opts: Pool2DOptions) -> np.ndarray:
    scale, zp = per_tensor_params(out_t, "output")
    lo, hi = activation_range_quantized(opts.activation.value, scale, zp, out_t.dtype.numpy)
    return np.clip(values, lo, hi).astype(out_t.dtype.numpy)


@register("AVERAGE_POOL_2D")
def average_pool_2d(ctx: OpContext) -> list[np.ndarray]:
    x, opts, win, out_t = _setup(ctx, "AVERAGE_POOL_2D")
    count = win.valid_counts()[None, :, :, None]
    if out_t.dtype is DType.FLOAT32:
        total = np.zeros((x.shape[0], win.out_h, win.out_w, x.shape[3]), dtype=np.float64)
        for view in win.taps(win.pad(x.astype(np.float64), 0.0)):
            total += view
        avg = (total / count).astype(np.float32)
        return [activation_float(avg, float_activation(opts.activation, "AVERAGE_POOL_2D"))]
    acc = np.zeros((x.shape[0], win.out_h, win.out_w, x.shape[3]), dtype=np.int64)
    for view in win.taps(win.pad(x.astype(np.int64), 0)):
        acc += view
    num = np.where(acc > 0, acc + count // 2, acc - count // 2)
    avg = np.sign(num) * (np.abs(num) // count)  # C division truncates toward zero
    return [_clamp_quantized(avg, out_t, opts)]


@register("MAX_POOL_2D")
def max_pool_2d(ctx: OpContext) -> list[np.ndarray]:
    x, opts, win, out_t = _setup(ctx, "MAX_POOL_2D")
    lowest = -np.inf if out_t.dtype is DType.FLOAT32 else np.iinfo(x.dtype).min
    views = win.taps(win.pad(x, lowest))
    best = views[0].copy()
    for view in views[1:]:
        np.maximum(best, view, out=best)
    if out_t.dtype is DType.FLOAT32:
        return [activation_float(best, float_activation(opts.activation, "MAX_POOL_2D"))]
    return [_clamp_quantized(best, out_t, opts)]
