"""Shared machinery of the compression methods: layer geometry, exact integer forwards,
per-channel requantization, bit packing and the kernel-call skeleton of compressed layers.

Conventions every method follows (docs/compression.md, "Conventions"):

* **Batches.**  A compressed layer's ``forward`` takes ``x`` of shape ``(B, *input.shape[1:])``
  — the layer's input tensor with its leading (batch) dimension replaced by the number of
  samples — and returns ``(B, *output.shape[1:])``.  The example models have batch 1, so this
  is "one sample per row".  :class:`~toolkit.compress.base.Calibration` arrays use the same
  layout.
* **Weights by output channel.**  :func:`weight_rows` views any weight tensor as a
  ``(channels, k)`` matrix, one row per output channel (FC ``[units][depth]``, conv ``O × HWI``,
  depthwise ``C × HW``), in the order the C kernels walk them; :func:`rows_to_weights` undoes it.
* **Arithmetic.**  Accumulators are exact int32 sums ``Σ w·(x + input_offset) + bias``,
  requantized per output channel with TFLite Micro's fixed-point ``MultiplyByQuantizedMultiplier``
  (never a double), then ``+ output_offset`` and the fused activation's clamp.  Multipliers come
  from float32 scales exactly as TFLite derives them, so a layer exported to .tflite with those
  scales computes the same multipliers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from firmware_gen.lower import ConstArray, FieldValue, KernelCall, Struct, TensorArg
from toolkit.compress.base import LayerRef
from toolkit.errors import CompressionError
from toolkit.model.ir import (
    Activation,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    FullyConnectedOptions,
    QuantParams,
)
from toolkit.oracle.conv import Requantizer
from toolkit.oracle.padding import Window2D
from toolkit.oracle.quant import activation_range_quantized, quantize_multiplier

F32 = np.float32


# ---------------------------------------------------------------------------------------------
# Geometry.


@dataclass(frozen=True)
class Geometry:
    """Everything about one int8 weight layer that its kernels and forwards need."""

    kind: str  # "fc" | "conv" | "dw"
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    channels: int  # output channels (units)
    window: Window2D | None  # conv / dw
    groups: int  # conv: input channels / filter channels; 1 otherwise
    depth_multiplier: int  # dw; 1 otherwise
    in_scale: float
    in_zp: int
    out_scale: float
    out_zp: int
    act_min: int
    act_max: int

    @property
    def channel_axis(self) -> int:
        """Axis of the per-channel quantization of the weight tensor."""
        return 3 if self.kind == "dw" else 0

    @property
    def row_length(self) -> int:
        """Weights per output channel (the length of one row of :func:`weight_rows`)."""
        return int(np.prod(self.w_shape)) // self.channels

    @property
    def weight_count(self) -> int:
        return int(np.prod(self.w_shape))

    @property
    def depth(self) -> int:
        """FC accumulation depth."""
        return self.w_shape[1]

    @property
    def positions(self) -> int:
        """Output positions per sample (FC rows per sample, conv OH·OW)."""
        if self.kind == "fc":
            return int(np.prod(self.in_shape[1:])) // self.depth
        assert self.window is not None
        return self.window.out_h * self.window.out_w

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one graph invocation (batch = the tensor's batch)."""
        n = self.in_shape[0] if self.kind != "fc" else int(np.prod(self.in_shape)) // self.depth
        return n * (self.positions if self.kind != "fc" else 1) * self.weight_count

    def sample_in_shape(self) -> tuple[int, ...]:
        return self.in_shape[1:]

    def sample_out_shape(self) -> tuple[int, ...]:
        return self.out_shape[1:]


def geometry(layer: LayerRef) -> Geometry:
    """Geometry of an int8 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED layer."""
    op = layer.op
    x, w, out = layer.input, layer.weight, layer.output
    if w.data is None or w.quant is None:
        raise CompressionError(f"{op.label}: weights must be a quantized constant")
    if x.quant is None or out.quant is None or x.quant.per_channel or out.quant.per_channel:
        raise CompressionError(f"{op.label}: input and output must be quantized per tensor")
    if any(z != 0 for z in w.quant.zero_point):
        raise CompressionError(f"{op.label}: int8 weights must be symmetric (zero point 0)")
    opts = op.options
    act = opts.activation if hasattr(opts, "activation") else Activation.NONE
    lo, hi = activation_range_quantized(act.value, out.quant.scale[0], out.quant.zero_point[0],
                                        np.int8)
    common = dict(in_shape=x.shape, out_shape=out.shape, w_shape=w.shape,
                  in_scale=x.quant.scale[0], in_zp=x.quant.zero_point[0],
                  out_scale=out.quant.scale[0], out_zp=out.quant.zero_point[0], act_min=lo, act_max=hi)
    if op.opcode == "FULLY_CONNECTED":
        assert isinstance(opts, FullyConnectedOptions)
        if len(w.shape) != 2 or x.num_elements % w.shape[1]:
            raise CompressionError(f"{op.label}: weights {list(w.shape)} do not fit input {list(x.shape)}")
        return Geometry("fc", channels=w.shape[0], window=None, groups=1, depth_multiplier=1,
                        **common)  # type: ignore[arg-type]
    if len(x.shape) != 4 or len(w.shape) != 4 or len(out.shape) != 4:
        raise CompressionError(f"{op.label}: 4-D input, filter and output are needed")
    assert isinstance(opts, (Conv2DOptions, DepthwiseConv2DOptions))
    win = Window2D.create(opts.padding, (x.shape[1], x.shape[2]), (w.shape[1], w.shape[2]),
                          (opts.stride_h, opts.stride_w), (opts.dilation_h, opts.dilation_w),
                          (out.shape[1], out.shape[2]))
    if op.opcode == "CONV_2D":
        groups = x.shape[3] // w.shape[3]
        return Geometry("conv", channels=w.shape[0], window=win, groups=groups, depth_multiplier=1,
                        **common)  # type: ignore[arg-type]
    return Geometry("dw", channels=w.shape[3], window=win, groups=1,
                    depth_multiplier=w.shape[3] // x.shape[3], **common)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Weights by output channel.


def weight_rows(w: np.ndarray, g: Geometry) -> np.ndarray:
    """``(channels, row_length)`` view of a weight tensor in its original layout."""
    if g.kind == "dw":
        return np.asarray(w).reshape(-1, g.channels).T
    return np.asarray(w).reshape(g.channels, -1)


def rows_to_weights(rows: np.ndarray, g: Geometry) -> np.ndarray:
    """Inverse of :func:`weight_rows`: back to the op's weight layout."""
    if g.kind == "dw":
        return np.ascontiguousarray(rows.T).reshape(g.w_shape)
    return np.ascontiguousarray(rows).reshape(g.w_shape)


def layer_bias_real(layer: LayerRef, g: Geometry) -> np.ndarray:
    """The layer's bias in real units (float64, one per channel; zeros when absent)."""
    b = layer.bias
    if b is None or b.data is None:
        return np.zeros(g.channels, dtype=np.float64)
    data = b.data.astype(np.float64).reshape(-1)
    if b.quant is not None:
        scale = np.asarray(b.quant.scale, dtype=np.float64)
    else:  # TFLite's convention: bias scale = input scale · weight scale
        assert layer.weight.quant is not None
        scale = g.in_scale * np.asarray(layer.weight.quant.scale, dtype=np.float64)
    return data * (scale if scale.size == data.size else scale[0])


# ---------------------------------------------------------------------------------------------
# Requantization.


@dataclass(frozen=True)
class Requant:
    """Per-channel integer requantization of a compressed layer (all values as the C kernel
    receives them).  ``weight_scale`` are float32 values: real weight = q · weight_scale[c]."""

    weight_scale: np.ndarray  # float64 holding float32 values, [channels]
    multiplier: np.ndarray  # int64 Q31, [channels]
    shift: np.ndarray  # int64, positive = left
    bias: np.ndarray  # int64 holding int32 values, [channels]

    def requantizer(self, g: Geometry) -> Requantizer:
        return Requantizer(self.multiplier, self.shift, g.out_zp, g.act_min, g.act_max, np.dtype(np.int8))


def requant_for(g: Geometry, weight_scale: np.ndarray, bias_real: np.ndarray) -> Requant:
    """Requantization for integer weights of scale ``weight_scale`` and a real-valued bias.

    Scales are first rounded to float32 (what a .tflite stores); multipliers are
    ``quantize_multiplier(in_scale · w_scale / out_scale)`` in double as TFLite's per-channel
    ``PopulateConvolutionQuantizationParams``; the bias is ``round(b / (in_scale · w_scale))``
    saturated to int32.  A zero scale (an all-zero channel) gets scale 1 and a zero multiplier.
    """
    s = np.asarray(weight_scale, dtype=np.float64).reshape(-1)
    s = np.where(s > 0, s, 1.0).astype(F32).astype(np.float64)
    pairs = [quantize_multiplier(g.in_scale * float(v) / g.out_scale) for v in s]
    bias = np.rint(np.asarray(bias_real, dtype=np.float64) / (g.in_scale * s))
    bias = np.clip(bias, -(2**31), 2**31 - 1).astype(np.int64)
    return Requant(s, np.array([m for m, _ in pairs], dtype=np.int64),
                   np.array([sh for _, sh in pairs], dtype=np.int64), bias)


def export_quant(g: Geometry, req: Requant) -> QuantParams:
    """Per-channel weight quantization parameters for --export-tflite."""
    return QuantParams(tuple(float(v) for v in req.weight_scale), (0,) * g.channels, g.channel_axis)


# ---------------------------------------------------------------------------------------------
# Exact integer forward (the arithmetic of every dense-format kernel).


def as_batch(x: np.ndarray, g: Geometry) -> np.ndarray:
    """``x`` as ``(B, *input.shape[1:])`` int8 (accepts any array of whole samples)."""
    per = int(np.prod(g.sample_in_shape()))
    a = np.asarray(x)
    if a.size % per:
        raise CompressionError(f"input of {a.size} elements is not a whole number of "
                               f"{list(g.sample_in_shape())} samples")
    return a.reshape((-1, *g.sample_in_shape()))


def accumulate(g: Geometry, w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Exact ``Σ w·(x − input_zp)`` per output position and channel, as int64.

    ``w``: integer weights in the op's layout; ``x``: int8 ``(B, *input.shape[1:])``.
    Returns ``(B, *output.shape[1:])``-shaped sums (channels last).  float64 products and sums of
    such values are exact (far below 2^53), whatever the summation order.
    """
    xb = as_batch(x, g)
    n = xb.shape[0]
    xo = xb.astype(np.float64) - g.in_zp
    wf = np.asarray(w, dtype=np.float64)
    if g.kind == "fc":
        acc = xo.reshape(-1, g.depth) @ wf.T
        return np.rint(acc).astype(np.int64).reshape((n, *g.sample_out_shape()))
    win = g.window
    assert win is not None
    xp = win.pad(xo, 0.0)
    acc = np.zeros((n, win.out_h, win.out_w, g.channels), dtype=np.float64)
    taps = win.taps(xp)
    if g.kind == "dw":
        if g.depth_multiplier > 1:
            taps = [np.repeat(t, g.depth_multiplier, axis=3) for t in taps]
        for k, view in enumerate(taps):
            acc += view * wf[0, k // win.filter_w, k % win.filter_w]
    else:
        fc_ = g.w_shape[3]
        per_group = g.channels // g.groups
        for k, view in enumerate(taps):
            wk = wf[:, k // win.filter_w, k % win.filter_w, :]  # O, C_f
            for grp in range(g.groups):
                chans = slice(grp * per_group, (grp + 1) * per_group)
                acc[..., chans] += view[..., grp * fc_:(grp + 1) * fc_] @ wk[chans].T
    return np.rint(acc).astype(np.int64).reshape((n, *g.sample_out_shape()))


def integer_forward(g: Geometry, w: np.ndarray, req: Requant, x: np.ndarray) -> np.ndarray:
    """int8 output of integer weights ``w`` with requantization ``req`` on int8 input ``x``."""
    acc = accumulate(g, w, x) + req.bias
    return req.requantizer(g).apply(acc)


# ---------------------------------------------------------------------------------------------
# Calibration statistics (for recovery).


def input_columns(g: Geometry, x: np.ndarray, max_rows: int = 20000) -> list[np.ndarray]:
    """Per "input group", the matrix X (rows, row_length) with ``acc[:, c] = X_g @ w_row[c]``.

    Groups: FC → 1 group; conv → one per convolution group; depthwise → one per input channel
    (output channels ``i·M … i·M + M − 1`` read input channel ``i``).  Values are ``x − zp``
    (input-offset units, float64).  Rows beyond ``max_rows`` are subsampled with a fixed stride
    so that recovery costs stay bounded on big layers; the choice is deterministic.
    """
    xb = as_batch(x, g)
    xo = xb.astype(np.float64) - g.in_zp
    if g.kind == "fc":
        return [_subsample(xo.reshape(-1, g.depth), max_rows)]
    win = g.window
    assert win is not None
    taps = win.taps(win.pad(xo, 0.0))
    cols = np.stack(taps, axis=3)  # N, OH, OW, taps, C_in
    cols = cols.reshape(-1, len(taps), xb.shape[3])
    cols = _subsample(cols, max_rows)
    if g.kind == "dw":
        return [cols[:, :, i] for i in range(xb.shape[3])]
    fc_ = g.w_shape[3]
    return [cols[:, :, grp * fc_:(grp + 1) * fc_].reshape(cols.shape[0], -1) for grp in range(g.groups)]


def channel_group(g: Geometry, c: int) -> int:
    """Which :func:`input_columns` group output channel ``c`` reads."""
    if g.kind == "dw":
        return c // g.depth_multiplier
    if g.kind == "conv":
        return c // (g.channels // g.groups)
    return 0


def _subsample(a: np.ndarray, max_rows: int) -> np.ndarray:
    if a.shape[0] <= max_rows:
        return a
    step = -(-a.shape[0] // max_rows)
    return a[::step]


def bias_correction(g: Geometry, cols: Sequence[np.ndarray], w_target: np.ndarray,
                    w_new: np.ndarray) -> np.ndarray:
    """Real-valued bias change per channel that removes the mean output shift of replacing
    real weight rows ``w_target`` by ``w_new`` on the calibration inputs (Nagel et al. 2019,
    empirical bias correction): ``s_in · mean(X_g) · (w_target − w_new)``."""
    means = [c.mean(axis=0) for c in cols]
    delta = np.array([means[channel_group(g, c)] @ (w_target[c] - w_new[c]) for c in range(g.channels)])
    return g.in_scale * delta


def hessians(cols: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``XᵀX`` per input group (the layer-wise reconstruction Hessian up to a factor 2)."""
    return [c.T @ c for c in cols]


# ---------------------------------------------------------------------------------------------
# Bit packing: element i occupies bits [i·b, (i+1)·b) of the byte stream, least significant
# bit first (little-endian within and across bytes).  The C side is bf_unpack_bits in
# kernels/include/bf_packed.h.


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack the low ``bits`` bits of each value (two's complement for negatives) into bytes."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1…8, got {bits}")
    v = np.asarray(values, dtype=np.int64).reshape(-1) & ((1 << bits) - 1)
    bitplane = ((v[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bitplane, bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, count: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`pack_bits` (int64 values, sign-extended when ``signed``)."""
    plane = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")[: count * bits]
    v = (plane.reshape(count, bits).astype(np.int64) << np.arange(bits)).sum(axis=1)
    if signed:
        v = np.where(v >= 1 << (bits - 1), v - (1 << bits), v)
    return v


def packed_bytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


# ---------------------------------------------------------------------------------------------
# Kernel calls of compressed layers.

_SYMBOL_OP = {"fc": "fully_connected", "conv": "conv2d", "dw": "depthwise_conv2d"}


def _dims4(shape: Sequence[int]) -> Struct:
    n, h, w, c = (int(s) for s in shape)
    return Struct("bf_dims4", (("n", n), ("h", h), ("w", w), ("c", c)))


def geometry_fields(g: Geometry) -> list[tuple[str, FieldValue]]:
    """The shape and window fields every compressed kernel's params struct starts with.

    FC: ``batches, depth, units``.  Conv / depthwise: ``input, filter, output`` (bf_dims4),
    [``depth_multiplier``,] ``stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left``.
    """
    if g.kind == "fc":
        return [("batches", int(np.prod(g.in_shape)) // g.depth), ("depth", g.depth), ("units", g.channels)]
    win = g.window
    assert win is not None
    fields: list[tuple[str, FieldValue]] = [("input", _dims4(g.in_shape)), ("filter", _dims4(g.w_shape)),
                                            ("output", _dims4(g.out_shape))]
    if g.kind == "dw":
        fields.append(("depth_multiplier", g.depth_multiplier))
    fields += [("stride_h", win.stride_h), ("stride_w", win.stride_w), ("dilation_h", win.dilation_h),
               ("dilation_w", win.dilation_w), ("pad_top", win.pad_top), ("pad_left", win.pad_left)]
    return fields


def quant_fields(g: Geometry) -> list[tuple[str, FieldValue]]:
    return [("input_offset", -g.in_zp), ("output_offset", g.out_zp),
            ("act_min", g.act_min), ("act_max", g.act_max)]


def requant_arrays(req: Requant) -> list[tuple[str, FieldValue]]:
    return [("bias", ConstArray("int32_t", tuple(int(v) for v in req.bias))),
            ("multiplier", ConstArray("int32_t", tuple(int(v) for v in req.multiplier))),
            ("shift", ConstArray("int32_t", tuple(int(v) for v in req.shift)))]


def kernel_symbol(g: Geometry, fmt: str) -> str:
    return f"bf_{_SYMBOL_OP[g.kind]}_{fmt}_s8"


def compressed_call(layer: LayerRef, g: Geometry, fmt: str, family: str,
                    params: Sequence[tuple[str, FieldValue]]) -> KernelCall:
    """``bf_<op>_<fmt>_s8(&params, input, output)``: every constant sits in ``params``."""
    symbol = kernel_symbol(g, fmt)
    args = (TensorArg(layer.input.index, "int8_t"), TensorArg(layer.output.index, "int8_t", output=True))
    return KernelCall(layer.op.index, layer.op.opcode, symbol, f"{symbol}_params", tuple(params), args,
                      family)
