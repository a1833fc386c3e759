"""The oracle's heavy kernels against the TFLite reference interpreter (BUILTIN_REF).

CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D, MAX_POOL_2D and MEAN, each on
generated single-op models over a grid of shapes (odd sizes, 1×1, kernels larger than the input,
strides 2/3, dilation, depth multipliers, batches > 1), paddings, fused activations and
quantization parameters (per-channel and per-tensor weights, scales from 1e-6 to 50, zero points
at the ends of the range).  Integer outputs must be bit-identical, float outputs within 1e-5
relative (``tests.opgen.check_against_interpreter``).

Quantized models get an output scale matched to the spread of their accumulators, so that
outputs cover the whole integer range instead of saturating; the extreme cases then push one
parameter at a time to its limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from tests.opgen import (
    GraphBuilder,
    assert_same,
    check_against_interpreter,
    qrange,
    rand_bias,
    rand_input,
    rand_per_channel,
    rand_quant,
    rand_weights,
    skip_on_tflite_runtime,
)
from toolkit.errors import InterpreterError, OracleError
from toolkit.interp import ReferenceInterpreter
from toolkit.model.ir import (
    Activation,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DType,
    FullyConnectedOptions,
    Graph,
    Op,
    Padding,
    Pool2DOptions,
    QuantParams,
    ReducerOptions,
    Tensor,
)
from toolkit.model.tflite_writer import write_tflite
from toolkit.oracle import Oracle
from toolkit.oracle.quant import multiply_by_quantized_multiplier, quantize_multiplier

SAME, VALID = Padding.SAME, Padding.VALID
ACTIVATIONS = (Activation.NONE, Activation.RELU, Activation.RELU6, Activation.RELU_N1_TO_1)
# "int8": per-channel weights; "int8_pt": per-tensor int8 weights; "uint8": per-tensor, with a
# filter zero point.
KINDS = ("float32", "int8", "int8_pt", "uint8")


def _f32(x: float) -> float:
    return float(np.float32(x))


def expected_out_size(padding: Padding, size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """The TensorFlow output size: SAME → ceil(in / s), VALID → ceil((in − eff + 1) / s)."""
    eff = (kernel - 1) * dilation + 1
    return math.ceil(size / stride) if padding is SAME else math.ceil((size - eff + 1) / stride)


# ---------------------------------------------------------------------------------------------
# Quantization parameters of conv-like ops.


def _rms_offset(dtype: DType, zero_point: int) -> float:
    """RMS of ``q − zp`` for q uniform over the dtype's range (what ``rand_input`` draws)."""
    lo, hi = qrange(dtype)
    return math.hypot((hi - lo + 1) / math.sqrt(12), (lo + hi) / 2 - zero_point)


@dataclass(frozen=True)
class Quant:
    x: QuantParams
    w: QuantParams
    y: QuantParams
    bias_scales: tuple[float, ...]
    bias_magnitude: int


def conv_quant(rng: np.random.Generator, kind: str, qcase: str, taps: int, channels: int,
               axis: int) -> Quant:
    """Input/filter/output parameters for a conv-like op summing ``taps`` products per output.

    ``qcase`` pushes one parameter to an edge: ``in_tiny``/``in_huge`` (input scale 1e-6 / 50),
    ``out_huge``/``out_tiny`` (output scale 50 / 1e-6: multipliers ≪ 2^-31 and ≫ 1),
    ``zp_min``/``zp_max`` (input and output zero points at the ends of the range) and
    ``w_extreme`` (per-channel scales spread over 1e-8 … 10).
    """
    dt = DType.UINT8 if kind == "uint8" else DType.INT8
    lo, hi = qrange(dt)
    x = rand_quant(rng, -1.0, 1.0, dt)
    if qcase in ("in_tiny", "in_huge"):
        x = QuantParams((1e-6 if qcase == "in_tiny" else 50.0,), (int(rng.integers(lo, hi + 1)),))
    elif qcase in ("zp_min", "zp_max"):
        x = QuantParams((_f32(0.02 * rng.uniform(0.5, 1.5)),), (lo if qcase == "zp_min" else hi,))
    if kind == "int8":
        w = rand_per_channel(rng, channels, axis=axis, extreme=qcase == "w_extreme")
    elif kind == "int8_pt":
        w = QuantParams((_f32(10 ** rng.uniform(-3, -1)),), (0,))
    else:
        w = QuantParams((_f32(10 ** rng.uniform(-3, -1)),), (int(rng.integers(100, 157)),))
    w_rms = _rms_offset(dt, w.zero_point[0]) if kind == "uint8" else 73.0
    acc_rms = math.sqrt(taps) * _rms_offset(dt, x.zero_point[0]) * w_rms
    real_rms = acc_rms * x.scale[0] * float(np.median(w.scale))
    y_zp = {"zp_min": lo, "zp_max": hi}.get(qcase, int(rng.integers(-30, 31)) + (lo + hi + 1) // 2)
    y_scale = {"out_huge": 50.0, "out_tiny": 1e-6}.get(qcase, 3.0 * real_rms / 128)
    y = QuantParams((_f32(y_scale),), (y_zp,))
    bias_scales = tuple(_f32(x.scale[0] * s) for s in w.scale)
    return Quant(x, w, y, bias_scales, max(1, min(int(acc_rms), 2**24)))


def _bias(b: GraphBuilder, rng: np.random.Generator, kind: str, q: Quant | None, n: int) -> int:
    if kind == "float32":
        return b.const(rand_bias(rng, n, "float32"))
    assert q is not None
    zps = (0,) * len(q.bias_scales)  # per-tensor weights → per-tensor bias
    return b.const(rand_bias(rng, n, "int32", q.bias_magnitude), quant=QuantParams(q.bias_scales, zps, 0))


# ---------------------------------------------------------------------------------------------
# CONV_2D and DEPTHWISE_CONV_2D.


@dataclass(frozen=True)
class Geo:
    """A conv geometry: NHWC input, kernel, stride, dilation, padding, output channels (conv) or
    depth multiplier (depthwise), and for conv the filter depth (< C: grouped)."""

    shape: tuple[int, int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: Padding = SAME
    out: int = 4
    filter_depth: int | None = None

    def out_hw(self) -> tuple[int, int]:
        return (
            expected_out_size(self.padding, self.shape[1], self.kernel[0], self.stride[0], self.dilation[0]),
            expected_out_size(self.padding, self.shape[2], self.kernel[1], self.stride[1], self.dilation[1]),
        )


CONV_GEOS = {
    "1x1_single": Geo((1, 1, 1, 1), (1, 1), out=1),
    "1x1_valid": Geo((2, 5, 7, 3), (1, 1), padding=VALID, out=5),
    "3x3_same": Geo((2, 9, 7, 5), (3, 3), out=6),
    "3x3_valid": Geo((1, 9, 7, 5), (3, 3), padding=VALID, out=7),
    "kernel_gt_input": Geo((1, 3, 2, 3), (5, 5), out=3),
    "stride2_same": Geo((1, 11, 10, 6), (3, 3), (2, 2), out=9),
    "stride3_valid": Geo((2, 11, 10, 6), (3, 3), (3, 3), padding=VALID),
    "even_kernel_same_s2": Geo((1, 8, 7, 4), (4, 2), (2, 2), out=5),
    "dilation2_same": Geo((1, 12, 9, 4), (3, 3), dilation=(2, 2), out=3),
    "mixed_valid": Geo((1, 13, 13, 2), (4, 2), (2, 3), (2, 1), VALID, out=3),
    "wide_channels": Geo((3, 6, 5, 17), (2, 2), (2, 1), out=19),
    "row_1x3": Geo((1, 1, 9, 7), (1, 3), (1, 2), out=2),
}

DW_GEOS = {
    "1x1_single": Geo((1, 1, 1, 1), (1, 1), out=1),
    "3x3_same": Geo((2, 9, 7, 5), (3, 3), out=1),
    "3x3_valid_m2": Geo((1, 9, 7, 5), (3, 3), padding=VALID, out=2),
    "kernel_gt_input_m3": Geo((1, 3, 2, 3), (4, 5), out=3),
    "stride2_same": Geo((2, 11, 10, 6), (3, 3), (2, 2), out=1),
    "stride3_valid_m2": Geo((1, 11, 10, 4), (5, 3), (3, 3), padding=VALID, out=2),
    "dilation2_same": Geo((1, 12, 9, 7), (3, 3), dilation=(2, 2), out=1),
    "mixed_m2": Geo((1, 13, 13, 3), (4, 2), (2, 3), (2, 1), VALID, out=2),
}


def build_conv(rng: np.random.Generator, op: str, kind: str, geo: Geo, *,
               activation: Activation = Activation.NONE, qcase: str = "typical",
               with_bias: bool = True) -> Graph:
    n, c = geo.shape[0], geo.shape[3]
    kh, kw = geo.kernel
    oh, ow = geo.out_hw()
    dtype = "uint8" if kind == "uint8" else ("float32" if kind == "float32" else "int8")
    if op == "CONV_2D":
        fd = geo.filter_depth or c
        out_c, w_shape, axis, taps = geo.out, (geo.out, kh, kw, fd), 0, kh * kw * fd
    else:
        out_c = c * geo.out
        w_shape, axis, taps = (1, kh, kw, out_c), 3, kh * kw
    q = None if kind == "float32" else conv_quant(rng, kind, qcase, taps, out_c, axis)
    b = GraphBuilder(f"{op.lower()}_{kind}")
    x = b.input(geo.shape, dtype, quant=q.x if q else None)
    wt = b.const(rand_weights(rng, w_shape, dtype=dtype), quant=q.w if q else None, dtype=dtype)
    # TFLite's conv kernels take "no bias" as a missing third input, not as index -1.
    operands = [x, wt, _bias(b, rng, kind, q, out_c)] if with_bias else [x, wt]
    y = b.output((n, oh, ow, out_c), dtype, quant=q.y if q else None)
    options: Conv2DOptions | DepthwiseConv2DOptions
    if op == "CONV_2D":
        options = Conv2DOptions(geo.padding, *geo.stride, *geo.dilation, activation)
    else:
        options = DepthwiseConv2DOptions(geo.padding, *geo.stride, geo.out, *geo.dilation, activation)
    b.op(op, operands, [y], options)
    return b.build()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("geo", list(CONV_GEOS.values()), ids=list(CONV_GEOS))
def test_conv2d_geometry(rng: np.random.Generator, geo: Geo, kind: str) -> None:
    check_against_interpreter(build_conv(rng, "CONV_2D", kind, geo), rng=rng)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("geo", list(DW_GEOS.values()), ids=list(DW_GEOS))
def test_depthwise_geometry(rng: np.random.Generator, geo: Geo, kind: str) -> None:
    check_against_interpreter(build_conv(rng, "DEPTHWISE_CONV_2D", kind, geo), rng=rng)


@pytest.mark.parametrize("kind", ("float32", "int8", "int8_pt"))
@pytest.mark.parametrize("groups", (2, 3))
def test_conv2d_grouped(rng: np.random.Generator, groups: int, kind: str) -> None:
    geo = Geo((2, 6, 5, 4 * groups), (3, 3), out=2 * groups, filter_depth=4)
    check_against_interpreter(build_conv(rng, "CONV_2D", kind, geo), rng=rng)


@pytest.mark.parametrize("op", ("CONV_2D", "DEPTHWISE_CONV_2D"))
@pytest.mark.parametrize("kind", ("float32", "int8", "uint8"))
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=[a.value for a in ACTIVATIONS])
def test_conv_fused_activation(rng: np.random.Generator, activation: Activation, kind: str, op: str) -> None:
    geo = Geo((2, 7, 6, 3), (3, 3), (2, 1), out=4 if op == "CONV_2D" else 2)
    check_against_interpreter(build_conv(rng, op, kind, geo, activation=activation), rng=rng)


QCASES = ("in_tiny", "in_huge", "out_huge", "out_tiny", "zp_min", "zp_max")
# (qcase, weight kind): every case for every kind, plus spread per-channel scales.
QUANT_GRID = [(q, k) for q in QCASES for k in ("int8", "int8_pt", "uint8")] + [("w_extreme", "int8")]


@pytest.mark.parametrize("op", ("CONV_2D", "DEPTHWISE_CONV_2D"))
@pytest.mark.parametrize(("qcase", "kind"), QUANT_GRID)
def test_conv_extreme_quantization(rng: np.random.Generator, qcase: str, kind: str, op: str) -> None:
    geo = Geo((2, 6, 5, 3), (3, 3), out=5 if op == "CONV_2D" else 2)
    act = Activation.RELU if qcase == "zp_max" else Activation.NONE
    check_against_interpreter(build_conv(rng, op, kind, geo, qcase=qcase, activation=act), rng=rng)


@pytest.mark.parametrize("kind", ("float32", "int8", "uint8"))
def test_depthwise_without_bias(rng: np.random.Generator, kind: str) -> None:
    geo = Geo((1, 5, 6, 3), (3, 2), (1, 2), out=2)
    check_against_interpreter(build_conv(rng, "DEPTHWISE_CONV_2D", kind, geo, with_bias=False), rng=rng)


@pytest.mark.parametrize("kind", ("float32", "int8", "uint8"))
def test_conv2d_without_bias_equals_zero_bias(rng: np.random.Generator, kind: str) -> None:
    """LiteRT's CONV_2D refuses a missing bias (TFLite Micro accepts it): check the oracle's
    bias-less conv against the interpreter running the same conv with an all-zero bias."""
    geo = Geo((2, 5, 6, 3), (3, 2), (1, 2), out=3)
    with_zero = build_conv(rng, "CONV_2D", kind, geo)
    bias_idx = with_zero.ops[0].inputs[2]
    t = with_zero.tensors[bias_idx]
    assert t.data is not None
    tensors = list(with_zero.tensors)
    tensors[bias_idx] = Tensor(t.index, t.name, t.shape, t.dtype, t.quant, np.zeros_like(t.data))
    with_zero = Graph(with_zero.name, tuple(tensors), with_zero.ops, with_zero.inputs, with_zero.outputs)
    op = with_zero.ops[0]
    bias_less = Op(0, op.opcode, op.inputs[:2], op.outputs, op.options)
    no_bias = Graph(with_zero.name, with_zero.tensors, (bias_less,), with_zero.inputs, with_zero.outputs)
    with pytest.raises(InterpreterError):
        ReferenceInterpreter(write_tflite(no_bias))
    x = rand_input(rng, with_zero.input_tensors[0])
    expected = ReferenceInterpreter(write_tflite(with_zero)).run([x])[0]
    assert_same(Oracle(no_bias).run([x]).outputs[0], expected, "bias-less CONV_2D vs zero bias")


def test_conv_batch_split_into_im2col_chunks(rng: np.random.Generator,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Large batches are convolved a few images at a time; the split must not show."""
    monkeypatch.setattr("toolkit.oracle.conv._IM2COL_CHUNK_ELEMENTS", 1)
    geo = Geo((5, 7, 6, 4), (3, 3), (2, 1), out=6, filter_depth=2)
    check_against_interpreter(build_conv(rng, "CONV_2D", "int8", geo), rng=rng)


def test_conv_wraps_the_int32_accumulator_like_tflite(rng: np.random.Generator) -> None:
    """A bias near INT32_MAX makes the C accumulator wrap; the oracle must wrap the same way."""
    geo = Geo((1, 4, 4, 8), (3, 3), out=2)
    g = build_conv(rng, "CONV_2D", "int8", geo)
    bias_idx = g.ops[0].inputs[2]
    t = g.tensors[bias_idx]
    wrapped = np.array([2**31 - 1, -(2**31)], dtype=np.int32)
    tensors = list(g.tensors)
    tensors[bias_idx] = Tensor(t.index, t.name, t.shape, t.dtype, t.quant, wrapped)
    g2 = Graph(g.name, tuple(tensors), g.ops, g.inputs, g.outputs)
    check_against_interpreter(g2, rng=rng)


# ---------------------------------------------------------------------------------------------
# Requantization formulas.  Random data rarely tells them apart (about one output in a thousand
# differs), so these tests pick a bias that puts a distinguishing accumulator value among the
# outputs of a 1-channel op fed with every input value, and assert that it is distinguishing.


def _std_round(v: np.ndarray) -> np.ndarray:
    t = np.trunc(v)
    return (t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0.0)).astype(np.int64)


def _fixed_point(acc: np.ndarray, real_multiplier: float) -> np.ndarray:
    m, shift = quantize_multiplier(real_multiplier)
    return multiply_by_quantized_multiplier(acc, m, shift)


def _first_difference(a: np.ndarray, b: np.ndarray, accs: np.ndarray) -> int:
    diff = np.flatnonzero(a != b)
    assert diff.size, "no distinguishing accumulator in the searched range"
    return int(accs[diff[0]])


def _one_channel_graph(op: str, dtype: str, q_in: QuantParams, w_q: QuantParams, w_value: int,
                       bias: int, q_out: QuantParams) -> Graph:
    b = GraphBuilder(f"{op.lower()}_rounding")
    n = qrange(dtype)[1] - qrange(dtype)[0] + 1
    bias_q = QuantParams((_f32(q_in.scale[0] * w_q.scale[0]),), (0,))
    if op == "FULLY_CONNECTED":
        x = b.input((n, 1), dtype, quant=q_in)
        w = b.const(np.full((1, 1), w_value), quant=w_q, dtype=dtype)
        y = b.output((n, 1), dtype, quant=q_out)
        b.op(op, [x, w, b.const(np.array([bias], np.int32), quant=bias_q)], [y], FullyConnectedOptions())
    else:
        x = b.input((1, n // 16, 16, 1), dtype, quant=q_in)
        w = b.const(np.full((1, 1, 1, 1), w_value), quant=w_q, dtype=dtype)
        y = b.output((1, n // 16, 16, 1), dtype, quant=q_out)
        b.op(op, [x, w, b.const(np.array([bias], np.int32), quant=bias_q)], [y], Conv2DOptions(VALID, 1, 1))
    return b.build()


def _all_values(g: Graph) -> np.ndarray:
    t = g.input_tensors[0]
    lo, hi = qrange(t.dtype)
    return np.arange(lo, hi + 1).astype(t.dtype.numpy).reshape(t.shape)


def test_fully_connected_requantizes_in_double(rng: np.random.Generator) -> None:
    """LiteRT's reference FC computes round(acc · s_in·s_w/s_out) in double, not the fixed-point
    MultiplyByQuantizedMultiplier the convolutions use."""
    s_in, s_w, s_out = 0.02, 0.0123, _f32(0.02 * 0.0123 / 0.0137)
    eff = s_in * _f32(s_w) / s_out
    accs = np.arange(-8000, 8000, dtype=np.int64)
    acc0 = _first_difference(_std_round(accs * eff), _fixed_point(accs, eff), accs)
    g = _one_channel_graph("FULLY_CONNECTED", "int8", QuantParams((s_in,), (0,)),
                           QuantParams((_f32(s_w),), (0,)), 1, acc0, QuantParams((s_out,), (0,)))
    check_against_interpreter(g, [_all_values(g)], rng=rng)


def test_fully_connected_rounds_ties_away_from_zero(rng: np.random.Generator) -> None:
    """Scales with s_in·s_w/s_out = 0.5 exactly: every odd accumulator is a tie (std::round)."""
    skip_on_tflite_runtime("requantizes FC in fixed point, where negative ties round up")
    g = _one_channel_graph("FULLY_CONNECTED", "int8", QuantParams((0.5,), (0,)),
                           QuantParams((0.25,), (0,)), 1, 0, QuantParams((0.25,), (0,)))
    got = check_against_interpreter(g, [_all_values(g)], rng=rng)[0].reshape(-1)
    assert got[:4].tolist() == [-64, -64, -63, -63]  # accumulators -128, -127, -126, -125


def test_conv_requantizes_with_fixed_point_multiplier(rng: np.random.Generator) -> None:
    s_in, s_w, s_out = 0.02, 0.0123, _f32(0.02 * 0.0123 / 0.0137)
    eff = s_in * _f32(s_w) / s_out
    accs = np.arange(-8000, 8000, dtype=np.int64)
    acc0 = _first_difference(_std_round(accs * eff), _fixed_point(accs, eff), accs)
    g = _one_channel_graph("CONV_2D", "int8", QuantParams((s_in,), (0,)),
                           QuantParams((_f32(s_w),), (0,)), 1, acc0, QuantParams((s_out,), (0,)))
    check_against_interpreter(g, [_all_values(g)], rng=rng)


def test_uint8_conv_multiplier_from_float32_scale_product(rng: np.random.Generator) -> None:
    """uint8 conv takes its multiplier from ``float(s_in · s_w)`` (GetQuantizedConvolutionMultipler),
    int8 conv from the double product: the multipliers differ in their low bits."""
    # Scales found by a search; differing outputs are rare (a few in millions of accumulators).
    s_in, s_w, s_out = _f32(0.028539247810840607), _f32(0.0025391015224158764), _f32(2.0852065086364746)
    from_double = s_in * s_w / s_out
    from_float = float(np.float32(s_in) * np.float32(s_w)) / s_out
    assert quantize_multiplier(from_double) != quantize_multiplier(from_float)
    accs = np.arange(-3_300_000, -1_800_000, dtype=np.int64)
    acc0 = _first_difference(_fixed_point(accs, from_float), _fixed_point(accs, from_double), accs)
    g = _one_channel_graph("CONV_2D", "uint8", QuantParams((s_in,), (0,)),
                           QuantParams((s_w,), (100,)), 101, acc0, QuantParams((s_out,), (128,)))
    check_against_interpreter(g, [_all_values(g)], rng=rng)


# ---------------------------------------------------------------------------------------------
# FULLY_CONNECTED.


def build_fc(rng: np.random.Generator, kind: str, x_shape: tuple[int, ...], units: int, *,
             keep_num_dims: bool = False, activation: Activation = Activation.NONE,
             qcase: str = "typical", with_bias: bool = True) -> Graph:
    depth = x_shape[-1]
    dtype = "uint8" if kind == "uint8" else ("float32" if kind == "float32" else "int8")
    q = None if kind == "float32" else conv_quant(rng, kind, qcase, depth, units, 0)
    if q is not None and kind == "int8_pt" and qcase == "w_zp":
        # int8 per-tensor FC applies a filter offset (unlike conv, TFLite accepts a zero point).
        q = Quant(q.x, QuantParams(q.w.scale, (int(rng.integers(-20, 21)),)), q.y, q.bias_scales,
                  q.bias_magnitude)
    b = GraphBuilder(f"fc_{kind}")
    x = b.input(x_shape, dtype, quant=q.x if q else None)
    w = b.const(rand_weights(rng, (units, depth), dtype=dtype), quant=q.w if q else None, dtype=dtype)
    bias = _bias(b, rng, kind, q, units) if with_bias else -1
    batch = int(np.prod(x_shape)) // depth
    out_shape = (*x_shape[:-1], units) if keep_num_dims else (batch, units)
    y = b.output(out_shape, dtype, quant=q.y if q else None)
    b.op("FULLY_CONNECTED", [x, w, bias], [y], FullyConnectedOptions(activation, keep_num_dims))
    return b.build()


FC_CASES = {
    "1x1": ((1, 1), 1, False),
    "batch3": ((3, 10), 7, False),
    "flatten_4d": ((2, 3, 2, 5), 6, False),
    "keep_num_dims": ((2, 3, 10), 7, True),
    "wide": ((4, 67), 33, False),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(FC_CASES.values()), ids=list(FC_CASES))
def test_fully_connected_shapes(rng: np.random.Generator, case: tuple[tuple[int, ...], int, bool],
                                kind: str) -> None:
    x_shape, units, keep = case
    skip_on_tflite_runtime("mis-indexes a per-channel FC's 3-D keep_num_dims output", keep and kind == "int8")
    check_against_interpreter(build_fc(rng, kind, x_shape, units, keep_num_dims=keep), rng=rng)


@pytest.mark.parametrize("kind", ("float32", "int8", "uint8"))
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=[a.value for a in ACTIVATIONS])
def test_fully_connected_activation_and_no_bias(rng: np.random.Generator, activation: Activation,
                                                kind: str) -> None:
    g = build_fc(rng, kind, (2, 9), 5, activation=activation, with_bias=activation is Activation.RELU)
    check_against_interpreter(g, rng=rng)


@pytest.mark.parametrize(("qcase", "kind"), [*QUANT_GRID, ("w_zp", "int8_pt")])
def test_fully_connected_extreme_quantization(rng: np.random.Generator, qcase: str, kind: str) -> None:
    check_against_interpreter(build_fc(rng, kind, (3, 12), 6, qcase=qcase), rng=rng)


# ---------------------------------------------------------------------------------------------
# AVERAGE_POOL_2D and MAX_POOL_2D.


def pool_quant(rng: np.random.Generator, dtype: str, qcase: str) -> QuantParams:
    lo, hi = qrange(dtype)
    if qcase == "typical":
        return rand_quant(rng, -2.0, 1.5, dtype)
    scale = {"tiny": 1e-6, "huge": 50.0}.get(qcase, 0.05)
    zp = {"zp_min": lo, "zp_max": hi}.get(qcase, int(rng.integers(lo, hi + 1)))
    return QuantParams((scale,), (zp,))


def build_pool(rng: np.random.Generator, op: str, dtype: str, geo: Geo, *,
               activation: Activation = Activation.NONE, qcase: str = "typical") -> Graph:
    oh, ow = geo.out_hw()
    q = None if dtype == "float32" else pool_quant(rng, dtype, qcase)
    b = GraphBuilder(f"{op.lower()}_{dtype}")
    x = b.input(geo.shape, dtype, quant=q)
    y = b.output((geo.shape[0], oh, ow, geo.shape[3]), dtype, quant=q)
    b.op(op, [x], [y], Pool2DOptions(geo.padding, *geo.stride, *geo.kernel, activation))
    return b.build()


POOL_GEOS = {
    "1x1": Geo((1, 1, 1, 1), (1, 1)),
    "2x2_s2_valid": Geo((2, 8, 6, 3), (2, 2), (2, 2), padding=VALID),
    "3x3_s2_same_odd": Geo((2, 7, 9, 3), (3, 3), (2, 2)),
    "3x2_s3x1_valid": Geo((1, 10, 5, 4), (3, 2), (3, 1), padding=VALID),
    "window_gt_input": Geo((1, 3, 2, 5), (5, 4)),
    "global_valid": Geo((3, 5, 6, 2), (5, 6), (1, 1), padding=VALID),
    "4x4_s3_same": Geo((1, 11, 10, 2), (4, 4), (3, 3)),
}


@pytest.mark.parametrize("dtype", ("float32", "int8", "uint8"))
@pytest.mark.parametrize("geo", list(POOL_GEOS.values()), ids=list(POOL_GEOS))
@pytest.mark.parametrize("op", ("AVERAGE_POOL_2D", "MAX_POOL_2D"))
def test_pool_geometry(rng: np.random.Generator, op: str, geo: Geo, dtype: str) -> None:
    check_against_interpreter(build_pool(rng, op, dtype, geo), rng=rng)


@pytest.mark.parametrize("dtype", ("float32", "int8", "uint8"))
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=[a.value for a in ACTIVATIONS])
@pytest.mark.parametrize("op", ("AVERAGE_POOL_2D", "MAX_POOL_2D"))
def test_pool_fused_activation(rng: np.random.Generator, op: str, activation: Activation, dtype: str) -> None:
    geo = Geo((2, 6, 7, 3), (3, 3), (2, 2))
    check_against_interpreter(build_pool(rng, op, dtype, geo, activation=activation), rng=rng)


@pytest.mark.parametrize("qcase", ("tiny", "huge", "zp_min", "zp_max"))
@pytest.mark.parametrize("dtype", ("int8", "uint8"))
@pytest.mark.parametrize("op", ("AVERAGE_POOL_2D", "MAX_POOL_2D"))
def test_pool_extreme_quantization(rng: np.random.Generator, op: str, dtype: str, qcase: str) -> None:
    geo = Geo((1, 7, 7, 4), (3, 3), (2, 2))
    check_against_interpreter(build_pool(rng, op, dtype, geo, activation=Activation.RELU6, qcase=qcase),
                              rng=rng)


def test_average_pool_rounds_half_away_from_zero(rng: np.random.Generator) -> None:
    """Windows of 2 values whose sums are odd and of both signs: the rounding direction shows."""
    b = GraphBuilder("avgpool_halves")
    q = QuantParams((0.1,), (0,))
    x = b.input((1, 2, 8, 1), "int8", quant=q)
    y = b.output((1, 1, 8, 1), "int8", quant=q)
    b.op("AVERAGE_POOL_2D", [x], [y], Pool2DOptions(VALID, 1, 1, 2, 1))
    data = np.array([[-3, -1, 3, 1, -128, 127, -2, 5], [0, 0, 0, 0, -127, 126, 1, -4]], np.int8)
    got = check_against_interpreter(b.build(), [data.reshape(1, 2, 8, 1)], rng=rng)[0]
    assert got.reshape(-1).tolist() == [-2, -1, 2, 1, -128, 127, -1, 1]


# ---------------------------------------------------------------------------------------------
# MEAN.


def build_mean(rng: np.random.Generator, dtype: str, shape: tuple[int, ...], axes: tuple[int, ...],
               keep_dims: bool, q_in: QuantParams | None = None, q_out: QuantParams | None = None) -> Graph:
    if dtype != "float32":
        q_in = q_in or rand_quant(rng, -1.0, 1.0, dtype)
        q_out = q_out or rand_quant(rng, -0.6, 0.5, dtype)
    resolved = {a % len(shape) for a in axes}
    if keep_dims:
        out_shape = tuple(1 if i in resolved else d for i, d in enumerate(shape))
    else:
        out_shape = tuple(d for i, d in enumerate(shape) if i not in resolved)
    b = GraphBuilder(f"mean_{dtype}")
    x = b.input(shape, dtype, quant=q_in)
    axis = b.const(np.array(axes, np.int32))
    y = b.output(out_shape, dtype, quant=q_out)
    b.op("MEAN", [x, axis], [y], ReducerOptions(keep_dims))
    return b.build()


MEAN_CASES = {
    "spatial_keep": ((2, 5, 7, 3), (1, 2), True),
    "spatial_reversed_keep": ((2, 5, 7, 3), (2, 1), True),
    "spatial_drop": ((2, 5, 7, 3), (1, 2), False),
    "spatial_negative_keep": ((2, 5, 7, 3), (-3, -2), True),
    "channels": ((2, 5, 7, 3), (3,), False),
    "batch_and_channels_dup": ((2, 5, 7, 3), (0, 3, -1), True),
    "2d_last": ((4, 6), (1,), False),
    "3d_all": ((3, 4, 5), (0, 1, 2), False),
    "3d_middle_keep": ((3, 9, 2), (1,), True),
}


@pytest.mark.parametrize("dtype", ("float32", "int8", "uint8", "int16"))
@pytest.mark.parametrize("case", list(MEAN_CASES.values()), ids=list(MEAN_CASES))
def test_mean_axes(rng: np.random.Generator, case: tuple[tuple[int, ...], tuple[int, ...], bool],
                   dtype: str) -> None:
    shape, axes, keep = case
    check_against_interpreter(build_mean(rng, dtype, shape, axes, keep), rng=rng)


MEAN_SCALES = {
    # (input scale, input zp, output scale, output zp)
    "same_params": (0.02, 5, 0.02, 5),
    "finer_output": (0.02, -3, 0.005, 10),
    "coarser_output": (0.01, 7, 0.03, -9),
    "in_huge": (50.0, -128, 0.001, 127),
    "in_tiny": (1e-6, 127, 0.5, -128),
    "ratio_below_2^-23": (1e-6, 0, 50.0, 0),  # shift clamp: 31 + shift < log2(count)
    "zp_ends": (0.05, -128, 0.05, 127),
}


@pytest.mark.parametrize("keep_dims", (True, False))
@pytest.mark.parametrize("scales", list(MEAN_SCALES.values()), ids=list(MEAN_SCALES))
def test_mean_int8_scales(rng: np.random.Generator, scales: tuple[float, int, float, int],
                          keep_dims: bool) -> None:
    s_in, zp_in, s_out, zp_out = scales
    q_in, q_out = QuantParams((s_in,), (zp_in,)), QuantParams((s_out,), (zp_out,))
    for shape, axes in (((2, 30, 30, 3), (1, 2)), ((2, 5, 7, 3), (3,))):
        check_against_interpreter(build_mean(rng, "int8", shape, axes, keep_dims, q_in, q_out), rng=rng)


def test_mean_int8_large_counts_and_small_deviations(rng: np.random.Generator) -> None:
    """Inputs near the zero point: sums are small, so the folded 1/count rounding decides."""
    g = build_mean(rng, "int8", (1, 33, 31, 4), (1, 2), True,
                   QuantParams((0.03,), (-2,)), QuantParams((0.001,), (1,)))
    x = rng.integers(-6, 3, size=(1, 33, 31, 4)).astype(np.int8)
    check_against_interpreter(g, [x], rng=rng)


# ---------------------------------------------------------------------------------------------
# Refusals: the oracle names what it does not support instead of computing something else.


def _run_oracle(g: Graph) -> None:
    Oracle(g).run([rand_input(np.random.default_rng(0), t) for t in g.input_tensors])


def test_int8_filter_zero_point_refused_like_tflite(rng: np.random.Generator) -> None:
    g = build_conv(rng, "CONV_2D", "int8_pt", Geo((1, 4, 4, 2), (3, 3), out=2))
    w_idx = g.ops[0].inputs[1]
    t = g.tensors[w_idx]
    assert t.quant is not None and t.data is not None
    tensors = list(g.tensors)
    tensors[w_idx] = Tensor(t.index, t.name, t.shape, t.dtype, QuantParams(t.quant.scale, (5,)), t.data)
    bad = Graph(g.name, tuple(tensors), g.ops, g.inputs, g.outputs)
    with pytest.raises(OracleError, match="zero point 0"):
        _run_oracle(bad)
    with pytest.raises(InterpreterError):
        check_against_interpreter(bad, rng=rng)


def test_wrong_output_shape_refused(rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.input((1, 8, 8, 2), "float32")
    w = b.const(rand_weights(rng, (3, 3, 3, 2), dtype="float32"))
    y = b.output((1, 8, 8, 3), "float32")  # VALID gives 6x6
    b.op("CONV_2D", [x, w], [y], Conv2DOptions(VALID, 1, 1))
    with pytest.raises(OracleError, match=r"\(6, 6\)"):
        _run_oracle(b.build())


def test_unsupported_fused_activation_refused(rng: np.random.Generator) -> None:
    g = build_conv(rng, "CONV_2D", "float32", Geo((1, 4, 4, 2), (3, 3), out=2), activation=Activation.TANH)
    with pytest.raises(OracleError, match="TANH"):
        _run_oracle(g)


def test_mixed_types_refused(rng: np.random.Generator) -> None:
    b = GraphBuilder()
    x = b.input((2, 6), "float32")
    w = b.const(rand_weights(rng, (3, 6)), quant=QuantParams((0.1,), (0,)))  # hybrid: int8 weights
    y = b.output((2, 3), "float32")
    b.op("FULLY_CONNECTED", [x, w, -1], [y], FullyConnectedOptions())
    with pytest.raises(OracleError, match="not supported"):
        _run_oracle(b.build())
