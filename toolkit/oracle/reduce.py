"""MEAN, bit-exact with TFLite's reference kernels (LiteRT's ``reduce.cc``, ``kReference``).

The axis operand is a constant int32 tensor; negative axes count from the end and duplicates
are ignored (``ResolveAxis``).  The output drops the reduced dimensions, or keeps them as 1 with
``keep_dims``.

* float32: sum over the axes divided by the element count (computed in float64, rounded once).
* int8 / uint8 / int16: every case, whatever the axes and scales, goes through
  ``reference_ops::QuantizedMeanOrSum`` (the reference resolver has no special case for
  spatial means):

  1. ``multiplier, shift = QuantizeMultiplier(double(in_scale) / double(out_scale))``;
  2. ``n`` = number of reduced elements, ``s = min(floor(log2 n), 32, 31 + shift)``; the
     division by ``n`` is folded into the multiplier: ``multiplier = (multiplier << s) / n``
     (integer division), ``shift -= s``;
  3. per output: ``MultiplyByQuantizedMultiplier(Σq − in_zp·n, multiplier, shift) + out_zp``,
     clamped to the output type (int32 sums, wrapping like C).
"""

from __future__ import annotations

import numpy as np

from toolkit.model.ir import DType, ReducerOptions
from toolkit.oracle.conv import per_tensor_params
from toolkit.oracle.quant import multiply_by_quantized_multiplier, quantize_multiplier, wrap_int32
from toolkit.oracle.registry import OpContext, register

_QUANTIZED = (DType.INT8, DType.UINT8, DType.INT16)


def resolve_axes(axis: np.ndarray, ndim: int) -> tuple[int, ...]:
    """``ResolveAxis``: normalise negative axes, drop duplicates, keep first-seen order."""
    out: list[int] = []
    for a in np.asarray(axis).reshape(-1).tolist():
        if not -ndim <= a < ndim:
            raise ValueError(f"reduction axis {a} out of range for a {ndim}-D input")
        a = a + ndim if a < 0 else a
        if a not in out:
            out.append(a)
    return tuple(out)


def reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...], keep_dims: bool) -> tuple[int, ...]:
    if keep_dims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def mean_multiplier(in_scale: float, out_scale: float, count: int) -> tuple[int, int]:
    """The (multiplier, shift) that maps a zero-point-corrected sum of ``count`` values to the
    output scale, with the division by ``count`` folded in as QuantizedMeanOrSum does."""
    multiplier, shift = quantize_multiplier(in_scale / out_scale)
    s = min(count.bit_length() - 1, 32, 31 + shift)
    return (multiplier << s) // count, shift - s


@register("MEAN")
def mean(ctx: OpContext) -> list[np.ndarray]:
    opts = ctx.options
    if not isinstance(opts, ReducerOptions):
        raise ValueError(f"MEAN needs ReducerOptions, got {type(opts).__name__}")
    x, axis = ctx.value(0), ctx.value(1)
    x_t, out_t = ctx.input_tensor(0), ctx.output_tensor()
    assert x_t is not None
    if not np.issubdtype(axis.dtype, np.integer):
        raise ValueError(f"MEAN axis must be an integer tensor, got {axis.dtype}")
    axes = resolve_axes(axis, x.ndim)
    expected = reduced_shape(x.shape, axes, opts.keep_dims)
    if out_t.shape != expected:
        raise ValueError(f"MEAN: output shape {out_t.shape}, expected {expected}")
    if x.size == 0:
        raise ValueError("MEAN of an empty tensor is not supported")
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if x_t.dtype is DType.FLOAT32 and out_t.dtype is DType.FLOAT32:
        total = x.astype(np.float64).sum(axis=axes)
        return [(total / count).astype(np.float32).reshape(expected)]
    if x_t.dtype in _QUANTIZED and out_t.dtype is x_t.dtype:
        in_scale, in_zp = per_tensor_params(x_t, "input")
        out_scale, out_zp = per_tensor_params(out_t, "output")
        multiplier, shift = mean_multiplier(in_scale, out_scale, count)
        sums = wrap_int32(x.astype(np.int64).sum(axis=axes))
        shifted = wrap_int32(sums - in_zp * count)
        y = multiply_by_quantized_multiplier(shifted, multiplier, shift) + out_zp
        info = np.iinfo(out_t.dtype.numpy)
        return [np.clip(y, info.min, info.max).astype(out_t.dtype.numpy).reshape(expected)]
    raise ValueError(
        f"MEAN with {x_t.dtype.value} input and {out_t.dtype.value} output is not supported "
        "(float32, int8, uint8 or int16 for both)"
    )
