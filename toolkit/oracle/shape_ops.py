"""Shape and data-movement kernels: RESHAPE, SQUEEZE, EXPAND_DIMS, STRIDED_SLICE, CONCATENATION,
SPLIT, SPLIT_V, PAD, TRANSPOSE.

These ops move values without arithmetic, so quantized tensors pass through unchanged (TFLite
copies the raw bytes even when the output's quantization parameters differ).  The exceptions,
matched here, are:

* CONCATENATION on uint8 requantizes inputs whose (scale, zero point) differ from the output's
  (``ConcatenationWithScaling``: float32 ``q·(s_i/s_o) − z_i·(s_i/s_o)``, rounded half away from
  zero); on int8 TFLite rejects differing parameters, and so does the oracle.
* PAD fills quantized tensors with the output zero point (the quantized 0.0).

Index operands (shapes, axes, begin/end/strides, paddings, perm) are read from the input values,
so they work whether the model stores them as constants or computes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from toolkit.model.ir import (
    Activation,
    ConcatenationOptions,
    DType,
    SqueezeOptions,
    StridedSliceOptions,
    Tensor,
)
from toolkit.oracle import quant
from toolkit.oracle.registry import OpContext, register

# ---------------------------------------------------------------------------------------------
# Helpers.


def _finish(result: np.ndarray, out: Tensor) -> np.ndarray:
    """``result`` with exactly the output tensor's dtype and shape (same element count required)."""
    if result.size != out.num_elements:
        raise ValueError(
            f"computed {list(result.shape)} ({result.size} elements) but output {out.name} "
            f"is {list(out.shape)}"
        )
    # np.array, not np.ascontiguousarray: the latter turns a 0-d result into shape (1,).
    return np.array(result.reshape(out.shape), dtype=out.dtype.numpy, order="C")


def _int_list(ctx: OpContext, i: int, what: str) -> list[int]:
    v = ctx.value(i)
    if not np.issubdtype(v.dtype, np.integer):
        raise ValueError(f"{ctx.op.opcode}: {what} (input {i}) must be integer, got {v.dtype}")
    return [int(a) for a in np.asarray(v).reshape(-1)]


def _scalar_axis(ctx: OpContext, i: int, rank: int, extra: int = 0) -> int:
    """An axis operand (a scalar or one-element tensor), normalised into ``[0, rank + extra)``."""
    vals = _int_list(ctx, i, "axis")
    if len(vals) != 1:
        raise ValueError(f"{ctx.op.opcode}: axis must have one element, got {len(vals)}")
    axis = vals[0] + (rank + extra if vals[0] < 0 else 0)
    if not 0 <= axis < rank + extra:
        raise ValueError(f"{ctx.op.opcode}: axis {vals[0]} out of range for rank {rank}")
    return axis


def _same_type(ctx: OpContext, t: Tensor, out: Tensor) -> None:
    if t.dtype != out.dtype:
        raise ValueError(f"{ctx.op.opcode}: input is {t.dtype.value} but output is {out.dtype.value}")


def _input(ctx: OpContext, i: int) -> tuple[np.ndarray, Tensor]:
    t = ctx.input_tensor(i)
    if t is None:
        raise ValueError(f"{ctx.op.opcode}: input {i} is absent")
    return ctx.value(i), t


# ---------------------------------------------------------------------------------------------
# RESHAPE, SQUEEZE, EXPAND_DIMS, TRANSPOSE.


@register("RESHAPE")
def reshape(ctx: OpContext) -> list[np.ndarray]:
    """The output tensor's shape is authoritative (it is what TFLite resolved from the shape
    operand or ``ReshapeOptions.new_shape``); only the element count must agree."""
    x, t = _input(ctx, 0)
    out = ctx.output_tensor()
    _same_type(ctx, t, out)
    return [_finish(x, out)]


@register("SQUEEZE")
def squeeze(ctx: OpContext) -> list[np.ndarray]:
    x, t = _input(ctx, 0)
    out = ctx.output_tensor()
    _same_type(ctx, t, out)
    dims = ctx.options.squeeze_dims if isinstance(ctx.options, SqueezeOptions) else ()
    rank = x.ndim
    if dims:
        axes = {d + rank if d < 0 else d for d in dims}
        for a in axes:
            if not 0 <= a < rank or x.shape[a] != 1:
                raise ValueError(f"SQUEEZE: cannot squeeze axis {a} of shape {list(x.shape)}")
    else:
        axes = {a for a in range(rank) if x.shape[a] == 1}
    shape = tuple(s for a, s in enumerate(x.shape) if a not in axes)
    if shape != out.shape:
        raise ValueError(f"SQUEEZE gives {list(shape)} but output {out.name} is {list(out.shape)}")
    return [_finish(x, out)]


@register("EXPAND_DIMS")
def expand_dims(ctx: OpContext) -> list[np.ndarray]:
    x, t = _input(ctx, 0)
    out = ctx.output_tensor()
    _same_type(ctx, t, out)
    axis = _scalar_axis(ctx, 1, x.ndim, extra=1)
    res = np.expand_dims(x, axis)
    if res.shape != out.shape:
        raise ValueError(f"EXPAND_DIMS gives {list(res.shape)} but output {out.name} is {list(out.shape)}")
    return [_finish(res, out)]


@register("TRANSPOSE")
def transpose(ctx: OpContext) -> list[np.ndarray]:
    x, t = _input(ctx, 0)
    out = ctx.output_tensor()
    _same_type(ctx, t, out)
    perm = [p + x.ndim if p < 0 else p for p in _int_list(ctx, 1, "perm")]
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"TRANSPOSE: perm {perm} is not a permutation of {x.ndim} axes")
    res = np.transpose(x, perm)
    if res.shape != out.shape:
        raise ValueError(f"TRANSPOSE gives {list(res.shape)} but output {out.name} is {list(out.shape)}")
    return [_finish(res, out)]


# ---------------------------------------------------------------------------------------------
# STRIDED_SLICE.


@dataclass(frozen=True)
class _SliceAxis:
    """One axis of the "effective" input (new axes inserted, ellipsis expanded), as TFLite's
    ``BuildStridedSliceParams`` sets it up."""

    size: int
    begin: int
    end: int
    stride: int
    begin_masked: bool
    end_masked: bool
    shrink: bool


def _effective_axes(
    shape: tuple[int, ...], begin: list[int], end: list[int], strides: list[int], o: StridedSliceOptions
) -> list[_SliceAxis]:
    """Expand ellipsis and new-axis bits into one spec per effective input axis."""
    n = len(begin)
    if not (len(end) == n == len(strides)):
        raise ValueError("STRIDED_SLICE: begin, end and strides must have the same length")
    rank = len(shape)
    num_add_axis = sum(1 for i in range(n) if not (o.ellipsis_mask >> i) & 1 and (o.new_axis_mask >> i) & 1)
    eff_dims = rank + num_add_axis
    # Which effective axes belong to the ellipsis, and which are new axes.
    ellipsis_axes: set[int] = set()
    new_axes: set[int] = set()
    ellipsis_start, expanded = eff_dims, 0
    i = 0
    while i < eff_dims:
        if (o.ellipsis_mask >> i) & 1:
            ellipsis_start = i
            stop = max(i + 1, min(i + 1 + num_add_axis + rank - n, eff_dims))
            expanded = stop - i - 1
            ellipsis_axes.update(range(i, stop))
            i = stop
            continue
        if (o.new_axis_mask >> (i - expanded)) & 1:
            new_axes.add(i)
        i += 1
    axes: list[_SliceAxis] = []
    added_axes = added_ellipsis = 0
    for i in range(eff_dims):
        if i in ellipsis_axes:
            added_ellipsis = max(0, i - ellipsis_start)
            axes.append(_SliceAxis(shape[i - added_axes], 0, 0, 1, True, True, False))
        elif i in new_axes:
            axes.append(_SliceAxis(1, 0, 1, 1, False, False, False))
            added_axes += 1
        elif i >= n + expanded:
            axes.append(_SliceAxis(shape[i - added_axes], 0, 0, 1, True, True, False))
        else:
            k = i - added_ellipsis
            axes.append(
                _SliceAxis(
                    shape[i - added_axes], begin[k], end[k], strides[k],
                    bool((o.begin_mask >> k) & 1), bool((o.end_mask >> k) & 1),
                    bool((o.shrink_axis_mask >> k) & 1),
                )
            )
    return axes


def _clamp(v: int, lo: int, hi: int) -> int:
    return hi if v > hi else lo if v < lo else v


def _slice_start(a: _SliceAxis) -> int:
    """``StridedSliceStartForAxis``."""
    start = a.begin + (a.size if a.begin < 0 else 0)
    start = _clamp(start, 0, a.size) if a.stride > 0 else _clamp(start, -1, a.size - 1)
    if a.begin_masked:
        start = 0 if a.stride > 0 else a.size - 1
    return start


def _slice_end(a: _SliceAxis, start: int, offset: bool) -> int:
    """``StridedSliceEndForAxis`` (with ``offset``, ``end`` is a size relative to ``start``)."""
    if a.shrink:
        return start if start >= a.size else start + 1
    end = a.end + (start if offset else 0)
    end += a.size if end < 0 else 0
    end = _clamp(end, 0, a.size) if a.stride > 0 else _clamp(end, -1, a.size - 1)
    if a.end_masked:
        end = a.size if a.stride > 0 else -1
    return end


def _slice_out_shape(axes: list[_SliceAxis], end: list[int], offset: bool) -> tuple[int, ...]:
    """The output shape TFLite's ``ResizeOutputTensor`` computes (float32 ceil division)."""
    dims: list[int] = []
    for idx, a in enumerate(axes):
        if a.shrink:
            continue
        if offset:
            # TFLite reads the raw end operand at the *effective* axis index here, past the end of
            # the operand when the spec is shorter than the input (an out-of-bounds read).
            if idx >= len(end):
                raise ValueError(
                    "STRIDED_SLICE with offset=True needs begin/end/strides for every input axis "
                    "(TFLite reads past the end operand otherwise)"
                )
            span = end[idx]
        else:
            start = _slice_start(a)
            span = _slice_end(a, start, False) - start
        dims.append(max(0, math.ceil(float(np.float32(span) / np.float32(a.stride)))))
    return tuple(dims)


@register("STRIDED_SLICE")
def strided_slice(ctx: OpContext) -> list[np.ndarray]:
    x, t = _input(ctx, 0)
    out = ctx.output_tensor()
    _same_type(ctx, t, out)
    o = ctx.options if isinstance(ctx.options, StridedSliceOptions) else StridedSliceOptions()
    begin, end = _int_list(ctx, 1, "begin"), _int_list(ctx, 2, "end")
    strides = _int_list(ctx, 3, "strides")
    if any(s == 0 for s in strides):
        raise ValueError("STRIDED_SLICE: stride values have to be non-zero")
    axes = _effective_axes(tuple(x.shape), begin, end, strides, o)
    shape = _slice_out_shape(axes, end, o.offset)
    if shape != out.shape:
        raise ValueError(f"STRIDED_SLICE gives {list(shape)} but output {out.name} is {list(out.shape)}")
    ranges = []
    for a in axes:
        start = _slice_start(a)
        ranges.append(np.arange(start, _slice_end(a, start, o.offset), a.stride, dtype=np.int64))
    eff = x.reshape(tuple(a.size for a in axes))
    res = eff[np.ix_(*ranges)] if ranges else eff
    if res.size != out.num_elements:
        raise ValueError(
            f"STRIDED_SLICE selects {res.size} elements but its output shape has "
            f"{out.num_elements} (a shrunk index or an offset slice out of range): TFLite leaves the "
            "rest uninitialised"
        )
    return [_finish(res, out)]


# ---------------------------------------------------------------------------------------------
# CONCATENATION, SPLIT, SPLIT_V.


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """``std::round`` on float32: half away from zero, exact (``v - trunc(v)`` is exact)."""
    whole = np.trunc(v)
    return whole + np.sign(v) * (np.abs(v - whole) >= np.float32(0.5))


def _requantize_uint8(x: np.ndarray, s_in: float, z_in: int, s_out: float, z_out: int) -> np.ndarray:
    """``ConcatenationWithScaling`` on one input, in float32 as the reference kernel computes it."""
    scale = np.float32(s_in) * (np.float32(1.0) / np.float32(s_out))
    bias = np.float32(-z_in) * scale
    v = x.astype(np.float32) * scale + bias
    return np.clip(_round_half_away(v).astype(np.int64) + z_out, 0, 255)


@register("CONCATENATION")
def concatenation(ctx: OpContext) -> list[np.ndarray]:
    o = ctx.options
    if not isinstance(o, ConcatenationOptions):
        raise ValueError("CONCATENATION needs ConcatenationOptions")
    if o.activation is not Activation.NONE:
        raise ValueError(f"CONCATENATION with fused {o.activation.value} is not supported (nor by TFLite)")
    out = ctx.output_tensor()
    tensors = [ctx.input_tensor(i) for i in range(len(ctx.op.inputs))]
    if not tensors or any(t is None for t in tensors):
        raise ValueError("CONCATENATION needs at least one input and no absent inputs")
    rank = len(out.shape)
    axis = o.axis + rank if o.axis < 0 else o.axis
    if not 0 <= axis < rank:
        raise ValueError(f"CONCATENATION: axis {o.axis} out of range for rank {rank}")
    parts = []
    for i, t in enumerate(tensors):
        assert t is not None
        _same_type(ctx, t, out)
        parts.append(_concat_part(ctx.value(i), t, out))
    return [_finish(np.concatenate(parts, axis=axis), out)]


def _concat_part(x: np.ndarray, t: Tensor, out: Tensor) -> np.ndarray:
    if out.dtype not in (DType.INT8, DType.UINT8):
        return x
    if t.quant is None or out.quant is None:
        raise ValueError(f"CONCATENATION: {t.dtype.value} tensors need quantization parameters")
    same = (np.float32(t.quant.single_scale) == np.float32(out.quant.single_scale)
            and t.quant.single_zero_point == out.quant.single_zero_point)
    if same:
        return x
    if out.dtype is DType.INT8:
        raise ValueError(
            f"CONCATENATION on int8 needs every input quantized like the output; {t.name} differs "
            "(TFLite rejects this)"
        )
    return _requantize_uint8(x, t.quant.single_scale, t.quant.single_zero_point,
                             out.quant.single_scale, out.quant.single_zero_point)


def _split_outputs(ctx: OpContext, x: np.ndarray, axis: int, sizes: list[int]) -> list[np.ndarray]:
    bounds = np.cumsum(sizes)[:-1]
    pieces = np.split(x, bounds, axis=axis)
    return [_finish(p, ctx.output_tensor(i)) for i, p in enumerate(pieces)]


@register("SPLIT")
def split(ctx: OpContext) -> list[np.ndarray]:
    x, t = _input(ctx, 1)
    n = len(ctx.op.outputs)
    axis = _scalar_axis(ctx, 0, x.ndim)
    if x.shape[axis] % n:
        raise ValueError(f"SPLIT: axis {axis} of size {x.shape[axis]} does not divide into {n} parts")
    for i in range(n):
        _same_type(ctx, t, ctx.output_tensor(i))
    return _split_outputs(ctx, x, axis, [x.shape[axis] // n] * n)


@register("SPLIT_V")
def split_v(ctx: OpContext) -> list[np.ndarray]:
    x, t = _input(ctx, 0)
    n = len(ctx.op.outputs)
    sizes = _int_list(ctx, 1, "size_splits")
    axis = _scalar_axis(ctx, 2, x.ndim)
    if len(sizes) != n:
        raise ValueError(f"SPLIT_V: {len(sizes)} size_splits for {n} outputs")
    if sizes.count(-1) > 1:
        raise ValueError("SPLIT_V: size_splits contains more than one -1")
    known = sum(s for s in sizes if s != -1)
    if -1 in sizes:
        if known > x.shape[axis]:
            raise ValueError("SPLIT_V: size_splits sum to more than the axis size")
        sizes[sizes.index(-1)] = x.shape[axis] - known
    if sum(sizes) != x.shape[axis] or any(s < 0 for s in sizes):
        raise ValueError(f"SPLIT_V: size_splits {sizes} do not sum to axis size {x.shape[axis]}")
    for i in range(n):
        _same_type(ctx, t, ctx.output_tensor(i))
    return _split_outputs(ctx, x, axis, sizes)


# ---------------------------------------------------------------------------------------------
# PAD.


def _pad_value(ctx: OpContext, t: Tensor, out: Tensor) -> int | float:
    """What ``pad.cc`` fills with: the constant operand if given (PADV2 form), the output zero
    point for quantized integer tensors, else zero."""
    const = ctx.optional_value(2) if len(ctx.op.inputs) > 2 and ctx.op.inputs[2] >= 0 else None
    if const is not None:
        if const.size != 1:
            raise ValueError("PAD: constant_values must have one element")
        value: int | float = const.reshape(-1)[0].item()
        return value
    if out.dtype in (DType.INT8, DType.UINT8, DType.INT16) and out.quant is not None:
        zp = out.quant.single_zero_point
        lo, hi = quant.dtype_range(out.dtype.numpy)
        if not lo <= zp <= hi:
            raise ValueError(f"PAD: output zero point {zp} is outside the {out.dtype.value} range")
        return zp
    del t
    return 0


@register("PAD")
def pad(ctx: OpContext) -> list[np.ndarray]:
    x, t = _input(ctx, 0)
    out = ctx.output_tensor()
    _same_type(ctx, t, out)
    flat = _int_list(ctx, 1, "paddings")
    if len(flat) != 2 * x.ndim:
        raise ValueError(f"PAD: paddings must be [{x.ndim}, 2], got {len(flat)} values")
    widths = [(flat[2 * i], flat[2 * i + 1]) for i in range(x.ndim)]
    if any(a < 0 or b < 0 for a, b in widths):
        raise ValueError(f"PAD: paddings must be non-negative, got {widths}")
    res = np.pad(x, widths, mode="constant", constant_values=_pad_value(ctx, t, out))
    if res.shape != out.shape:
        raise ValueError(f"PAD gives {list(res.shape)} but output {out.name} is {list(out.shape)}")
    return [_finish(res, out)]
