"""CONV_2D and DEPTHWISE_CONV_2D, bit-exact with TFLite's reference kernels.

Paths (what ``OpResolverType.BUILTIN_REF`` runs):

* float32 input and filter: ``reference_ops::Conv`` / ``reference_ops::DepthwiseConv``.  Computed
  here in float64 and rounded once, so results are within float32 rounding of TFLite's.
* int8 input, int8 filter (per-channel or per-tensor scales):
  ``reference_integer_ops::ConvPerChannel`` / ``DepthwiseConvPerChannel``.  The filter zero
  point must be 0 (TFLite refuses others; the kernel has no filter offset); the input offset is
  ``-input_zp``; each output channel has its own multiplier from ``double(in_scale) *
  double(filter_scale[c]) / double(out_scale)``.
* uint8 input and filter (per-tensor): ``reference_ops::Conv`` / ``DepthwiseConv`` with a filter
  offset ``-filter_zp``; the multiplier is ``double(float(in_scale * filter_scale)) /
  double(out_scale)`` (``GetQuantizedConvolutionMultipler``: the product is rounded to float32).

Integer sums are computed exactly: every product of offset 8-bit values and every partial sum is
an integer far below 2**53, so float64 BLAS matrix products are exact whatever their summation
order.  The C kernels accumulate in int32 with two's-complement wrap-around, which
:func:`Requantizer.apply` reproduces on the exact sum.

Grouped convolution (input channels = k × filter channels) follows the reference kernel: output
channel ``o`` reads input channel group ``o // (out_channels / k)``.  The depth multiplier of a
depthwise conv is taken from the shapes (filter channels / input channels), as TFLite does; the
option value is not consulted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from toolkit.model.ir import (
    Activation,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DType,
    Tensor,
)
from toolkit.oracle.padding import Window2D
from toolkit.oracle.quant import (
    activation_float,
    activation_range_quantized,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    wrap_int32,
)
from toolkit.oracle.registry import OpContext, register

# ---------------------------------------------------------------------------------------------
# Shared by the integer kernels of this module and of fully_connected.py.


def per_tensor_params(t: Tensor, role: str) -> tuple[float, int]:
    """(scale, zero point) of a per-tensor quantized tensor; ValueError otherwise."""
    q = t.quant
    if q is None:
        raise ValueError(f"{role} tensor {t.name!r} ({t.dtype.value}) has no quantization parameters")
    if q.per_channel:
        raise ValueError(f"{role} tensor {t.name!r} must be quantized per tensor, not per channel")
    return q.scale[0], q.zero_point[0]


def filter_scales(t: Tensor, channels: int, axis: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Per-output-channel (scales, zero points) of a filter: per-tensor values are repeated."""
    q = t.quant
    if q is None:
        raise ValueError(f"filter {t.name!r} ({t.dtype.value}) has no quantization parameters")
    if not q.per_channel:
        return (q.scale[0],) * channels, (q.zero_point[0],) * channels
    if len(q.scale) != channels or q.axis % len(t.shape) != axis:
        raise ValueError(
            f"filter {t.name!r} has {len(q.scale)} scales along axis {q.axis}; "
            f"expected {channels} along axis {axis}"
        )
    return q.scale, q.zero_point


def float_activation(activation: Activation, what: str) -> str:
    """The fused activation name for float kernels; TFLite clamps only the ReLU family."""
    if activation not in (Activation.NONE, Activation.RELU, Activation.RELU6, Activation.RELU_N1_TO_1):
        raise ValueError(f"fused activation {activation.value} on {what} is not supported")
    return activation.value


@dataclass(frozen=True)
class Requantizer:
    """int32 accumulator → 8-bit output: ``MultiplyByQuantizedMultiplier`` per output channel
    (last axis), plus the output zero point, clamped to the fused activation's range."""

    multiplier: np.ndarray  # int64, one per output channel (or a single one)
    shift: np.ndarray  # int64, TFLite convention: positive = left shift
    output_zero_point: int
    act_min: int
    act_max: int
    dtype: np.dtype

    @classmethod
    def create(
        cls,
        input_scale: float,
        weight_scales: Sequence[float],
        output: Tensor,
        activation: Activation,
        *,
        float32_product: bool,
    ) -> Requantizer:
        """Multipliers ``in_scale · w_scale / out_scale`` in double, as TFLite computes them.

        TFLite has two formulas: the per-channel parameters (``PopulateConvolutionQuantization
        Params``, FC per-channel) multiply the scales in double; the legacy per-tensor multiplier
        (``GetQuantizedConvolutionMultipler``: uint8 conv, per-tensor FC) first multiplies
        ``in_scale * w_scale`` in float32.  The last bit of the multiplier differs, and with it
        an output now and then; ``float32_product`` selects the latter.
        """
        out_scale, out_zp = per_tensor_params(output, "output")
        if float32_product:
            products = [float(np.float32(input_scale) * np.float32(s)) for s in weight_scales]
        else:
            products = [input_scale * float(s) for s in weight_scales]
        pairs = [quantize_multiplier(p / out_scale) for p in products]
        lo, hi = activation_range_quantized(activation.value, out_scale, out_zp, output.dtype.numpy)
        return cls(
            np.array([m for m, _ in pairs], dtype=np.int64),
            np.array([s for _, s in pairs], dtype=np.int64),
            out_zp,
            lo,
            hi,
            output.dtype.numpy,
        )

    def apply(self, acc: np.ndarray) -> np.ndarray:
        """``acc``: exact int64 sums (bias included); channels on the last axis."""
        scaled = multiply_by_quantized_multiplier(wrap_int32(acc), self.multiplier, self.shift)
        out = wrap_int32(scaled + self.output_zero_point)
        return np.clip(out, self.act_min, self.act_max).astype(self.dtype)


def exact_int64(acc: np.ndarray) -> np.ndarray:
    """Integral float64 sums (exact by construction) → int64."""
    return np.rint(acc).astype(np.int64)


def add_bias(acc: np.ndarray, bias: np.ndarray | None, channels: int) -> np.ndarray:
    if bias is None:
        return acc
    if bias.size != channels:
        raise ValueError(f"bias has {bias.size} elements, expected {channels}")
    return acc + bias.reshape(-1).astype(acc.dtype)


# ---------------------------------------------------------------------------------------------
# Operand checks shared by both convolutions.


@dataclass(frozen=True)
class _Operands:
    x: np.ndarray
    w: np.ndarray
    bias: np.ndarray | None
    x_t: Tensor
    w_t: Tensor
    out_t: Tensor
    kind: str  # "float" | "int8" | "uint8"


def _operands(ctx: OpContext, what: str) -> _Operands:
    x, w, bias = ctx.value(0), ctx.value(1), ctx.optional_value(2)
    x_t, w_t, out_t = ctx.input_tensor(0), ctx.input_tensor(1), ctx.output_tensor()
    assert x_t is not None and w_t is not None
    if x.ndim != 4 or w.ndim != 4 or len(out_t.shape) != 4:
        raise ValueError(
            f"{what} needs 4-D input, filter and output; got {x.shape}, {w.shape}, {out_t.shape}"
        )
    types = (x_t.dtype, w_t.dtype, out_t.dtype)
    if types == (DType.FLOAT32,) * 3:
        kind = "float"
    elif types == (DType.INT8,) * 3:
        kind = "int8"
    elif types == (DType.UINT8,) * 3:
        kind = "uint8"
    else:
        raise ValueError(
            f"{what} with {x_t.dtype.value} input, {w_t.dtype.value} filter and "
            f"{out_t.dtype.value} output is not supported (float32, int8 or uint8 throughout)"
        )
    if kind != "float" and bias is not None and bias.dtype != np.int32:
        raise ValueError(f"{what}: quantized bias must be int32, got {bias.dtype}")
    return _Operands(x, w, bias, x_t, w_t, out_t, kind)


def _input_offset_padded(ops: _Operands, win: Window2D) -> np.ndarray:
    """Input as float64 with the input offset applied; padding contributes exactly 0."""
    if ops.kind == "float":
        x = ops.x.astype(np.float64)
    else:
        _, zp = per_tensor_params(ops.x_t, "input")
        x = ops.x.astype(np.float64) - zp
    return win.pad(x, 0.0)


def _finish(ops: _Operands, acc: np.ndarray, activation: Activation, what: str,
            weight_scales: Sequence[float] | None) -> np.ndarray:
    channels = acc.shape[-1]
    if ops.kind == "float":
        total = add_bias(acc, ops.bias, channels).astype(np.float32)
        return activation_float(total, float_activation(activation, what))
    assert weight_scales is not None
    in_scale, _ = per_tensor_params(ops.x_t, "input")
    # int8 runs the per-channel kernels (double products); uint8 the legacy per-tensor ones.
    req = Requantizer.create(in_scale, weight_scales, ops.out_t, activation,
                             float32_product=ops.kind == "uint8")
    return req.apply(add_bias(exact_int64(acc), ops.bias, channels))


def _weights_offset(ops: _Operands, channels: int, axis: int) -> tuple[np.ndarray, tuple[float, ...]]:
    """Filter as float64 with TFLite's filter offset applied, and the per-channel scales."""
    if ops.kind == "float":
        return ops.w.astype(np.float64), ()
    scales, zps = filter_scales(ops.w_t, channels, axis)
    w = ops.w.astype(np.float64)
    if ops.kind == "uint8":
        if len(set(zps)) != 1:
            raise ValueError("uint8 filters must be quantized per tensor")
        w = w - zps[0]
    elif any(zps):
        # TFLite refuses these at Prepare; ConvPerChannel has no filter offset at all.
        raise ValueError(f"int8 filter {ops.w_t.name!r} must have zero point 0, got {sorted(set(zps))}")
    return w, scales


# ---------------------------------------------------------------------------------------------
# Kernels.


@register("CONV_2D")
def conv_2d(ctx: OpContext) -> list[np.ndarray]:
    opts = ctx.options
    if not isinstance(opts, Conv2DOptions):
        raise ValueError(f"CONV_2D needs Conv2DOptions, got {type(opts).__name__}")
    ops = _operands(ctx, "CONV_2D")
    n, h, w, c = ops.x.shape
    o, fh, fw, fc = ops.w.shape
    if fc <= 0 or c % fc:
        raise ValueError(f"CONV_2D: input depth {c} is not a multiple of filter depth {fc}")
    groups = c // fc
    if o % groups:
        raise ValueError(f"CONV_2D: {o} output channels cannot be split into {groups} groups")
    win = Window2D.create(opts.padding, (h, w), (fh, fw), (opts.stride_h, opts.stride_w),
                          (opts.dilation_h, opts.dilation_w), ops.out_t.shape[1:3])
    if ops.out_t.shape != (n, win.out_h, win.out_w, o):
        raise ValueError(f"CONV_2D: output shape {ops.out_t.shape}, expected {(n, win.out_h, win.out_w, o)}")
    wmat, scales = _weights_offset(ops, o, 0)
    acc = _conv_sums(_input_offset_padded(ops, win), win, wmat, groups)
    return [_finish(ops, acc, opts.activation, "CONV_2D", scales)]


# Upper bound on the im2col buffer of one chunk (float64 elements): keeps a conv over a whole
# calibration batch from allocating gigabytes; chunks are whole images.
_IM2COL_CHUNK_ELEMENTS = 1 << 23


def _conv_sums(xp: np.ndarray, win: Window2D, w: np.ndarray, groups: int) -> np.ndarray:
    """im2col + one matrix product per group; returns (N, OH, OW, O) float64 sums."""
    n = xp.shape[0]
    o, fh, fw, fc = w.shape
    k = fh * fw * fc
    wg = w.reshape(groups, o // groups, k).transpose(0, 2, 1)  # G, K, O/G
    per_image = win.out_h * win.out_w * k * groups
    step = max(1, _IM2COL_CHUNK_ELEMENTS // max(per_image, 1))
    out = np.empty((n, win.out_h, win.out_w, o), dtype=np.float64)
    for start in range(0, n, step):
        chunk = xp[start : start + step]
        rows = chunk.shape[0] * win.out_h * win.out_w
        cols = np.stack(win.taps(chunk), axis=3)  # n, OH, OW, taps, C
        cols = cols.reshape(rows, fh * fw, groups, fc).transpose(2, 0, 1, 3).reshape(groups, rows, k)
        acc = np.matmul(cols, wg)  # G, rows, O/G
        out[start : start + chunk.shape[0]] = acc.transpose(1, 0, 2).reshape(-1, win.out_h, win.out_w, o)
    return out


@register("DEPTHWISE_CONV_2D")
def depthwise_conv_2d(ctx: OpContext) -> list[np.ndarray]:
    opts = ctx.options
    if not isinstance(opts, DepthwiseConv2DOptions):
        raise ValueError(f"DEPTHWISE_CONV_2D needs DepthwiseConv2DOptions, got {type(opts).__name__}")
    ops = _operands(ctx, "DEPTHWISE_CONV_2D")
    n, h, w, c = ops.x.shape
    one, fh, fw, oc = ops.w.shape
    if one != 1 or c <= 0 or oc % c:
        raise ValueError(
            f"DEPTHWISE_CONV_2D: filter {ops.w.shape} must be 1×H×W×(C·M) for input depth {c}"
        )
    mult = oc // c
    win = Window2D.create(opts.padding, (h, w), (fh, fw), (opts.stride_h, opts.stride_w),
                          (opts.dilation_h, opts.dilation_w), ops.out_t.shape[1:3])
    if ops.out_t.shape != (n, win.out_h, win.out_w, oc):
        raise ValueError(
            f"DEPTHWISE_CONV_2D: output shape {ops.out_t.shape}, expected {(n, win.out_h, win.out_w, oc)}"
        )
    wmat, scales = _weights_offset(ops, oc, 3)
    xp = _input_offset_padded(ops, win)
    if mult > 1:
        xp = np.repeat(xp, mult, axis=3)  # output channel c·M + m reads input channel c
    acc = np.zeros((n, win.out_h, win.out_w, oc), dtype=np.float64)
    for k, view in enumerate(win.taps(xp)):
        acc += view * wmat[0, k // fw, k % fw]
    return [_finish(ops, acc, opts.activation, "DEPTHWISE_CONV_2D", scales)]
