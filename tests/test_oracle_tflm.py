"""The oracle's TFLM arithmetic profile against TensorFlow Lite Micro itself (``tflite-micro``).

Every op of ``toolkit.model.ir.SUPPORTED_OPS`` that TFLM runs is checked on single-op models
(int8/int16 bit-exact, float32 within 1e-5 relative, intermediates included), and so are the
example models.  Where TFLM's arithmetic differs from LiteRT's, a "sharp" test first finds
parameters on which ``Oracle(profile=TFLM)`` and ``Oracle(profile=LITERT)`` disagree and then
requires TFLM to agree with the former: those tests fail if a profile branch is removed.

TFLM does not run uint8 (except QUANTIZE), float16 DEQUANTIZE, per-channel QUANTIZE, int8/int16
SQRT or 5-D PRELU; those are not tested here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite_micro.python.tflite_micro.runtime")

from tests.opgen import GraphBuilder, assert_same, qrange, rand_input
from tests.test_oracle_conv import CONV_GEOS, DW_GEOS, POOL_GEOS, build_conv, build_fc, build_mean
from tests.test_oracle_conv import build_pool as build_pool_graph
from tests.tflm_check import TflmError, check_against_tflm, tflm_run
from toolkit.errors import OracleError
from toolkit.model.ir import (
    Activation,
    ActivationOptions,
    ConcatenationOptions,
    Graph,
    LeakyReluOptions,
    OpOptions,
    QuantParams,
    ReshapeOptions,
    SoftmaxOptions,
    SplitOptions,
    SqueezeOptions,
    StridedSliceOptions,
)
from toolkit.model.tflite import read_tflite
from toolkit.model.tflite_writer import write_tflite
from toolkit.oracle import Oracle
from toolkit.oracle.elementwise import inv_sqrt_quantized_multiplier_exp
from toolkit.oracle.profile import Arithmetic
from toolkit.oracle.quant import multiply_by_quantized_multiplier, quantize_multiplier

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"
Case = tuple[Graph, list[np.ndarray]]


def qp(scale: float, zp: int = 0) -> QuantParams:
    return QuantParams((float(np.float32(scale)),), (int(zp),))


def rand_qp(rng: np.random.Generator, dtype: str, lo_exp: float = -3.0, hi_exp: float = 1.0) -> QuantParams:
    """Scale 10**U(lo_exp, hi_exp); zero point anywhere in the range (int16: 0)."""
    scale = 10 ** rng.uniform(lo_exp, hi_exp)
    if dtype == "int16":
        return qp(scale)
    lo, hi = qrange(dtype)
    return qp(scale, int(rng.integers(lo, hi + 1)))


def all_int8(rows: int = 1) -> np.ndarray:
    return np.arange(-128, 128, dtype=np.int8).reshape(rows, -1)


def check(graph: Graph, inputs: Sequence[np.ndarray] | None = None,
          rng: np.random.Generator | None = None) -> None:
    check_against_tflm(graph, write_tflite(graph), inputs, rng)


def unary(op: str, shape: Sequence[int], dtype: str, qi: QuantParams | None, qo: QuantParams | None,
          options: OpOptions | None = None, out_dtype: str | None = None) -> Graph:
    b = GraphBuilder(f"{op}_{dtype}")
    x = b.input(shape, dtype, qi)
    y = b.output(shape, out_dtype or dtype, qo)
    b.op(op, [x], [y], options)
    return b.build()


def binary(op: str, dtype: str, s1: Sequence[int], s2: Sequence[int], qs: Sequence[QuantParams | None],
           act: Activation | None = Activation.NONE) -> Graph:
    b = GraphBuilder(f"{op}_{dtype}")
    x = b.input(s1, dtype, qs[0])
    y = b.input(s2, dtype, qs[1])
    out = b.output(np.broadcast_shapes(tuple(s1), tuple(s2)), dtype, qs[2])
    b.op(op, [x, y], [out], ActivationOptions(act) if act is not None else None)
    return b.build()


def profiles_differ(graph: Graph, inputs: Sequence[np.ndarray]) -> bool:
    try:
        a = Oracle(graph, Arithmetic.TFLM).run(inputs).outputs
        b = Oracle(graph, Arithmetic.LITERT).run(inputs).outputs
    except OracleError:
        return False
    return any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def sharp_case(make: Callable[[np.random.Generator], Case], rng: np.random.Generator,
               tries: int = 300) -> Case:
    """The first generated case on which the TFLM and LiteRT profiles disagree."""
    for _ in range(tries):
        graph, inputs = make(rng)
        if profiles_differ(graph, inputs):
            return graph, inputs
    raise AssertionError(f"no case in {tries} where the TFLM and LiteRT profiles differ")


def check_sharp(make: Callable[[np.random.Generator], Case], rng: np.random.Generator,
                cases: int = 2) -> None:
    """``cases`` differing cases, each bit-exact with TFLM under the TFLM profile."""
    for _ in range(cases):
        graph, inputs = sharp_case(make, rng)
        check(graph, inputs)


F32 = np.float32
Ratio = Callable[..., float]


def find_scales(rng: np.random.Generator, make_scales: Callable[[np.random.Generator], tuple[float, ...]],
                tflm_ratio: Ratio, litert_ratio: Ratio, values: np.ndarray, out_zp: int,
                n: int = 20000) -> tuple[float, ...]:
    """Scales whose TFLM (double) and TFLite (float32) requantization multipliers give a different
    int8 output for at least one of ``values`` (the integers the multiplier is applied to).

    Only a search heuristic: a float32 quotient has 24 significant bits against the multiplier's
    31, so the two disagree on about one value in 10^6 and random scales almost never show it.
    The tests then require the oracle's profiles to differ and TFLM to agree with the TFLM one.
    """
    cands = [make_scales(rng) for _ in range(n)]
    for start in range(0, n, 1000):
        chunk = cands[start:start + 1000]
        outs = []
        for ratio in (tflm_ratio, litert_ratio):
            ms = np.array([quantize_multiplier(ratio(*c)) for c in chunk], dtype=np.int64)
            raw = multiply_by_quantized_multiplier(values[None, :], ms[:, :1], ms[:, 1:])
            outs.append(np.clip(raw + out_zp, -128, 127))
        rows = np.flatnonzero((outs[0] != outs[1]).any(axis=1))
        if rows.size:
            return chunk[int(rows[0])]
    raise AssertionError("no scales found on which the double and float32 multipliers differ")


def f32(v: float) -> float:
    return float(F32(v))


def check_differs(graph: Graph, inputs: Sequence[np.ndarray]) -> None:
    assert profiles_differ(graph, inputs), "the TFLM and LiteRT profiles agree on this case"
    check(graph, inputs)


# ---------------------------------------------------------------------------------------------
# Convolutions, FULLY_CONNECTED, pooling, MEAN.

CONV_SAMPLE = ["1x1_valid", "3x3_same", "stride2_same", "dilation2_same", "mixed_valid", "wide_channels"]
DW_SAMPLE = ["3x3_same", "3x3_valid_m2", "stride3_valid_m2", "mixed_m2"]


@pytest.mark.parametrize("kind", ["float32", "int8", "int8_pt"])
@pytest.mark.parametrize("geo", CONV_SAMPLE)
def test_conv2d(geo: str, kind: str, rng: np.random.Generator) -> None:
    check(build_conv(rng, "CONV_2D", kind, CONV_GEOS[geo], activation=Activation.RELU6), rng=rng)


@pytest.mark.parametrize("kind", ["float32", "int8"])
@pytest.mark.parametrize("geo", DW_SAMPLE)
def test_depthwise_conv2d(geo: str, kind: str, rng: np.random.Generator) -> None:
    check(build_conv(rng, "DEPTHWISE_CONV_2D", kind, DW_GEOS[geo]), rng=rng)


@pytest.mark.parametrize("qcase", ["in_tiny", "out_huge", "zp_min", "w_extreme"])
def test_conv2d_extreme_quantization(qcase: str, rng: np.random.Generator) -> None:
    check(build_conv(rng, "CONV_2D", "int8", CONV_GEOS["3x3_valid"], qcase=qcase), rng=rng)


FC_SHAPES = [((3, 10), 7, False), ((2, 3, 2, 5), 6, False), ((2, 3, 10), 7, True), ((4, 67), 33, False)]


@pytest.mark.parametrize("kind", ["float32", "int8", "int8_pt"])
@pytest.mark.parametrize("case", FC_SHAPES, ids=["batch3", "flatten_4d", "keep_num_dims", "wide"])
def test_fully_connected(case: tuple[tuple[int, ...], int, bool], kind: str,
                         rng: np.random.Generator) -> None:
    x_shape, units, keep = case
    check(build_fc(rng, kind, x_shape, units, keep_num_dims=keep, activation=Activation.RELU), rng=rng)


@pytest.mark.parametrize("kind", ["int8", "int8_pt"])
def test_fully_connected_requantizes_in_fixed_point(kind: str, rng: np.random.Generator) -> None:
    """TFLM's FC uses MultiplyByQuantizedMultiplier (per-tensor multiplier from the float32
    product of the scales), where LiteRT rounds a double product."""

    def make(r: np.random.Generator) -> Case:
        g = build_fc(r, kind, (16, 40), 24)
        return g, [rand_input(r, g.input_tensors[0])]

    check_sharp(make, rng)


def test_fully_connected_fused_tanh_is_no_clamp(rng: np.random.Generator) -> None:
    """A fused TANH (or SIGN_BIT) activation of a quantized kernel is ignored, not applied."""
    for act in (Activation.TANH, Activation.SIGN_BIT):
        g = build_fc(rng, "int8", (4, 30), 9, activation=act)
        check(g, rng=rng)
        ys = Oracle(g).run([rand_input(rng, g.input_tensors[0])]).outputs[0]
        assert ys.min() < 0 < ys.max()


@pytest.mark.parametrize("dtype", ["float32", "int8"])
@pytest.mark.parametrize("op", ["AVERAGE_POOL_2D", "MAX_POOL_2D"])
@pytest.mark.parametrize("geo", ["3x3_s2_same_odd", "2x2_s2_valid", "global_valid", "window_gt_input"])
def test_pool(geo: str, op: str, dtype: str, rng: np.random.Generator) -> None:
    check(build_pool_graph(rng, op, dtype, POOL_GEOS[geo], activation=Activation.RELU6), rng=rng)


MEAN_SHAPES = [((2, 5, 7, 3), (1, 2), True), ((2, 5, 7, 3), (3,), False), ((3, 4, 5), (0, 1, 2), False),
               ((2, 3, 4, 5), (0, 1, 3), True)]


@pytest.mark.parametrize("dtype", ["float32", "int8", "int16"])
@pytest.mark.parametrize("case", MEAN_SHAPES, ids=["spatial", "channels", "3d_all", "three_axes"])
def test_mean(case: tuple[tuple[int, ...], tuple[int, ...], bool], dtype: str,
              rng: np.random.Generator) -> None:
    shape, axes, keep = case
    check(build_mean(rng, dtype, shape, axes, keep), rng=rng)


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_mean_with_equal_input_and_output_quantization(dtype: str, rng: np.random.Generator) -> None:
    """TFLM requantizes like LiteRT here too (no integer-division shortcut), on 6-D inputs too."""
    q = qp(0.05, 3 if dtype == "int8" else 0)
    for shape, axes in [((2, 5, 7, 3), (1, 2)), ((1, 2, 3, 4, 5, 2), (1, 2))]:
        check(build_mean(rng, dtype, shape, axes, False, q, q), rng=rng)


# ---------------------------------------------------------------------------------------------
# Element-wise.

SHAPE_PAIRS = [((1, 5, 5, 3), (1, 5, 5, 3)), ((2, 3, 17), (17,)), ((4, 1, 9), (1, 6, 1)),
               ((3, 1), (2, 1, 1, 13))]
ACTS = [Activation.NONE, Activation.RELU, Activation.RELU6, Activation.RELU_N1_TO_1, Activation.TANH]


@pytest.mark.parametrize("dtype", ["int8", "int16", "float32"])
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
def test_arithmetic(op: str, dtype: str, rng: np.random.Generator) -> None:
    for (s1, s2), act in zip(SHAPE_PAIRS, ACTS, strict=False):
        qs = [None] * 3 if dtype == "float32" else [rand_qp(rng, dtype, -3 if dtype == "int8" else -5, -1)
                                                    for _ in range(3)]
        check(binary(op, dtype, s1, s2, qs, act), rng=rng)


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
def test_int32_arithmetic(op: str, rng: np.random.Generator) -> None:
    """TFLM's int32 ADD ignores a fused activation; SUB and MUL clamp like TFLite."""
    for (s1, s2), act in zip(SHAPE_PAIRS, ACTS[:4], strict=True):
        g = binary(op, "int32", s1, s2, [None] * 3, act)
        check(g, rng=rng)
        if op == "ADD" and act is not Activation.NONE:
            xs = [np.full(s1, -7, np.int32), np.full(s2, -5, np.int32)]
            assert Oracle(g).run(xs).outputs[0].min() == -12
            assert Oracle(g, Arithmetic.LITERT).run(xs).outputs[0].min() >= -1


def test_mul_multiplier_in_double(rng: np.random.Generator) -> None:
    """TFLM takes s1·s2/so in double, TFLite in float32: every int8 product through both."""

    def scales(r: np.random.Generator) -> tuple[float, ...]:
        a, b = f32(10 ** r.uniform(-2, 0)), f32(10 ** r.uniform(-2, 0))
        return a, b, f32(a * b / r.uniform(0.002, 0.0077))

    products = np.unique(np.arange(-128, 128)[:, None] * np.arange(-128, 128)[None, :])
    a, b, c = find_scales(rng, scales, lambda a, b, c: a * b / c,
                          lambda a, b, c: float(F32(F32(a) * F32(b)) / F32(c)), products, 0)
    g = binary("MUL", "int8", (256, 1), (1, 256), [qp(a), qp(b), qp(c)])
    check_differs(g, [all_int8().reshape(256, 1), all_int8()])


@pytest.mark.parametrize("dtype", ["int8", "int16", "float32"])
@pytest.mark.parametrize("op", ["MAXIMUM", "MINIMUM"])
def test_maximum_minimum(op: str, dtype: str, rng: np.random.Generator) -> None:
    q = None if dtype == "float32" else rand_qp(rng, dtype)
    check(binary(op, dtype, (2, 3, 17), (17,), [q, q, q], None), rng=rng)


def test_rsqrt_int8(rng: np.random.Generator) -> None:
    for _ in range(4):
        qi, qo = qp(10 ** rng.uniform(-3, 0), -128), rand_qp(rng, "int8")
        check(unary("RSQRT", (1, 256), "int8", qi, qo), [all_int8()])


def test_rsqrt_int8_multiplier_in_double(rng: np.random.Generator) -> None:
    """TFLM: 1 / (sqrt(double(s_in)) · double(s_out)); TFLite: the same from float32 factors."""
    k_shift = 20
    data = []
    for v in range(1, 256):  # the integer 1/sqrt(v) · 2^20 both profiles rescale
        inv, inv_shift = inv_sqrt_quantized_multiplier_exp(v, -1)
        data.append(int(multiply_by_quantized_multiplier(np.array([1]), inv, inv_shift + k_shift)[0]))

    def scales(r: np.random.Generator) -> tuple[float, ...]:
        a = f32(10 ** r.uniform(-3, 0))
        return a, f32(1 / (np.sqrt(a) * r.uniform(100, 250)))

    # QuantizeMultiplier(r · 2^-20) is (m, shift - 20) for QuantizeMultiplier(r) = (m, shift).
    a, b = find_scales(rng, scales, lambda a, b: 1 / (float(np.sqrt(a)) * b) * 2.0**-k_shift,
                       lambda a, b: 1 / float(F32(np.sqrt(F32(a))) * F32(b)) * 2.0**-k_shift,
                       np.array(data), -128)
    check_differs(unary("RSQRT", (1, 256), "int8", qp(a, -128), qp(b, -128)), [all_int8()])


def test_rsqrt_int16_newton_raphson(rng: np.random.Generator) -> None:
    """TFLM runs the int8 Newton-Raphson path on int16 (no interpolated table)."""

    def make(r: np.random.Generator) -> Case:
        qi, qo = rand_qp(r, "int16", -5, -1), rand_qp(r, "int16", -5, -1)
        x = np.arange(32768, dtype=np.int16).reshape(128, 256)
        return unary("RSQRT", (128, 256), "int16", qi, qo), [x]

    check_sharp(make, rng, cases=3)


def test_rsqrt_and_sqrt_float(rng: np.random.Generator) -> None:
    x = rng.uniform(0.01, 30, size=(3, 50)).astype(np.float32)
    for op in ("RSQRT", "SQRT"):
        check(unary(op, x.shape, "float32", None, None), [x])


@pytest.mark.parametrize("dtype", ["int8", "int16", "float32"])
def test_abs(dtype: str, rng: np.random.Generator) -> None:
    for _ in range(3):
        q = (None, None) if dtype == "float32" else (rand_qp(rng, dtype), rand_qp(rng, dtype))
        check(unary("ABS", (7, 40), dtype, *q), rng=rng)


def test_abs_multiplier_in_double(rng: np.random.Generator) -> None:
    def scales(r: np.random.Generator) -> tuple[float, ...]:
        a = f32(10 ** r.uniform(-3, 1))
        return a, f32(a / r.uniform(0.3, 1.9))

    a, b = find_scales(rng, scales, lambda a, b: a / b, lambda a, b: float(F32(a) / F32(b)),
                       np.arange(0, 129), -128)
    check_differs(unary("ABS", (1, 256), "int8", qp(a, 0), qp(b, -128)), [all_int8()])


# ---------------------------------------------------------------------------------------------
# Activations.


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_relu(dtype: str, rng: np.random.Generator) -> None:
    for _ in range(4):
        shape = (1, 256) if dtype == "int8" else (4, 300)
        g = unary("RELU", shape, dtype, rand_qp(rng, dtype), rand_qp(rng, dtype))
        check(g, [all_int8()] if dtype == "int8" else None, rng=rng)


def test_relu_multiplier_in_double(rng: np.random.Generator) -> None:
    def scales(r: np.random.Generator) -> tuple[float, ...]:
        a = f32(10 ** r.uniform(-3, 1))
        return a, f32(a / r.uniform(0.2, 0.49))

    a, b = find_scales(rng, scales, lambda a, b: a / b, lambda a, b: float(F32(a) / F32(b)),
                       np.arange(0, 256), -128)
    check_differs(unary("RELU", (1, 256), "int8", qp(a, -128), qp(b, -128)), [all_int8()])


def tflm_output(graph: Graph, inputs: Sequence[np.ndarray]) -> np.ndarray:
    return tflm_run(write_tflite(graph), [list(inputs)]).outputs[0][0].reshape(graph.output_tensors[0].shape)


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_relu6_clamps_without_requantizing(dtype: str, rng: np.random.Generator) -> None:
    """TFLM's RELU6 clamps the raw input to [zp, q(6)] and never reads the output quantization:
    bit-exact when both are equal.  Otherwise TFLM's raw clamp means something else than the
    model, and the TFLM profile requantizes (as LiteRT does) instead of reproducing it."""
    for _ in range(3):
        q = rand_qp(rng, dtype, -2, 0)
        check(unary("RELU6", (4, 300), dtype, q, q), rng=rng)
    qi = qp(0.05, -20 if dtype == "int8" else 0)
    g = unary("RELU6", (1, 256), dtype, qi, qp(0.03, -128 if dtype == "int8" else 0))
    x = np.arange(-128, 128, dtype=dtype).reshape(1, 256)
    six = min(round(6 / 0.05) + qi.zero_point[0], np.iinfo(dtype).max)
    assert_same(tflm_output(g, [x]), np.clip(x, qi.zero_point[0], six), "TFLM's raw clamp")
    ours, litert = Oracle(g).run([x]).outputs[0], Oracle(g, Arithmetic.LITERT).run([x]).outputs[0]
    assert_same(ours, litert, "TFLM profile vs LiteRT profile on differing quantization")
    assert not np.array_equal(ours, tflm_output(g, [x]))


@pytest.mark.parametrize("dtype", ["int8", "int16", "float32"])
def test_leaky_relu(dtype: str, rng: np.random.Generator) -> None:
    for alpha in (0.1, -0.3, 1.5):
        q = (None, None) if dtype == "float32" else (rand_qp(rng, dtype), rand_qp(rng, dtype))
        check(unary("LEAKY_RELU", (6, 50), dtype, *q, LeakyReluOptions(alpha)), rng=rng)


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_prelu(dtype: str, rng: np.random.Generator) -> None:
    for x_shape, a_shape in [((1, 4, 4, 3), (3,)), ((2, 5, 3), (5, 1)), ((6,), (1,))]:
        b = GraphBuilder(f"PRELU_{dtype}")
        if dtype == "float32":
            x, y = b.input(x_shape, dtype), b.output(x_shape, dtype)
            alpha = b.const(rng.standard_normal(a_shape).astype(np.float32))
        else:
            x, y = b.input(x_shape, dtype, rand_qp(rng, dtype)), b.output(x_shape, dtype, rand_qp(rng, dtype))
            alpha = b.const(rng.integers(-128, 128, size=a_shape).astype(np.int8), rand_qp(rng, dtype))
        b.op("PRELU", [x, alpha], [y])
        check(b.build(), rng=rng)


def test_prelu_multipliers_in_double(rng: np.random.Generator) -> None:
    """The negative side's multiplier s_in·s_alpha/s_out: double in TFLM, float32 in TFLite."""

    def scales(r: np.random.Generator) -> tuple[float, ...]:
        a, b = f32(10 ** r.uniform(-2, 0)), f32(10 ** r.uniform(-2, 0))
        return a, b, f32(a * b / r.uniform(0.002, 0.0077))

    products = np.unique(np.arange(-128, 0)[:, None] * np.arange(-128, 128)[None, :])
    a, s_alpha, c = find_scales(rng, scales, lambda a, b, c: a * b / c,
                                lambda a, b, c: float(F32(F32(a) * F32(b)) / F32(c)), products, 0)
    b = GraphBuilder("PRELU_int8")
    x, y = b.input((256, 256), "int8", qp(a)), b.output((256, 256), "int8", qp(c))
    alpha = b.const(np.arange(-128, 128).astype(np.int8), qp(s_alpha))
    b.op("PRELU", [x, alpha], [y])
    check_differs(b.build(), [np.repeat(all_int8().reshape(256, 1), 256, axis=1)])


def test_logistic_int8_fixed_point(rng: np.random.Generator) -> None:
    """TFLM evaluates gemmlowp's fixed-point logistic; TFLite looks up a float32 table."""
    for scale in (0.001, 0.0123, 0.1, 0.7):
        check(unary("LOGISTIC", (1, 256), "int8", qp(scale, int(rng.integers(-128, 128))), qp(1 / 256, -128)),
              [all_int8()])

    def make(r: np.random.Generator) -> Case:
        qi = qp(10 ** r.uniform(-2, 1.3), int(r.integers(-128, 128)))
        return unary("LOGISTIC", (1, 256), "int8", qi, qp(1 / 256, -128)), [all_int8()]

    check_sharp(make, rng)


def test_tanh_int8_fixed_point(rng: np.random.Generator) -> None:
    for scale in (0.001, 0.0123, 0.1, 0.7, 10.0):
        check(unary("TANH", (1, 256), "int8", qp(scale, int(rng.integers(-128, 128))), qp(1 / 128, 0)),
              [all_int8()])

    def make(r: np.random.Generator) -> Case:
        qi = qp(10 ** r.uniform(-3, 1), int(r.integers(-128, 128)))
        return unary("TANH", (1, 256), "int8", qi, qp(1 / 128, 0)), [all_int8()]

    check_sharp(make, rng)


def test_tanh_int8_other_output_quantization() -> None:
    """TFLM never reads TANH's output quantization (it assumes 1/128, 0); for any other the TFLM
    profile computes what the model means, LiteRT's table."""
    g = unary("TANH", (1, 256), "int8", qp(0.05, 3), qp(0.01, 7))
    ours = Oracle(g).run([all_int8()]).outputs[0]
    assert_same(ours, Oracle(g, Arithmetic.LITERT).run([all_int8()]).outputs[0], "TFLM vs LiteRT profile")
    assert not np.array_equal(ours, tflm_output(g, [all_int8()]))


def test_logistic_int8_output_quantization() -> None:
    """TFLM refuses an output zero point other than -128 but ignores the output scale; the
    oracle (like LiteRT) refuses a scale other than 1/256 in every profile."""
    with pytest.raises(TflmError, match="allocate"):
        tflm_output(unary("LOGISTIC", (1, 256), "int8", qp(0.05, 3), qp(1 / 256, 0)), [all_int8()])
    g = unary("LOGISTIC", (1, 256), "int8", qp(0.05, 3), qp(1 / 128, -128))
    tflm_output(g, [all_int8()])
    for profile in Arithmetic:
        with pytest.raises(OracleError, match="1/256"):
            Oracle(g, profile).run([all_int8()])


@pytest.mark.parametrize("op", ["LOGISTIC", "TANH", "HARD_SWISH"])
def test_float_activations(op: str, rng: np.random.Generator) -> None:
    x = rng.uniform(-12, 12, size=(5, 60)).astype(np.float32)
    check(unary(op, x.shape, "float32", None, None), [x])


def test_hard_swish_int8(rng: np.random.Generator) -> None:
    for s_in, s_out in [(0.05, 0.03), (0.001, 0.01), (0.02, 0.5), (3.0, 0.047)]:
        check(unary("HARD_SWISH", (1, 256), "int8", qp(s_in, int(rng.integers(-128, 128))),
                    qp(s_out, int(rng.integers(-128, 128)))), [all_int8()])


@pytest.mark.parametrize("out_dtype", ["int8", "int16"])
def test_softmax_int8(out_dtype: str, rng: np.random.Generator) -> None:
    qo = qp(1 / 256, -128) if out_dtype == "int8" else qp(1 / 65536, -32768)
    for scale, beta in [(0.001, 1.0), (0.0123, 0.5), (0.1, 2.0), (0.7, 1.0)]:
        x = all_int8(16)
        check(unary("SOFTMAX", x.shape, "int8", qp(scale, int(rng.integers(-128, 128))), qo,
                    SoftmaxOptions(beta), out_dtype=out_dtype), [x])


def test_softmax_int16_and_float(rng: np.random.Generator) -> None:
    for beta in (0.5, 1.0):
        check(unary("SOFTMAX", (3, 40), "int16", rand_qp(rng, "int16", -4, -2), qp(1 / 32768),
                    SoftmaxOptions(beta)), rng=rng)
        check(unary("SOFTMAX", (2, 3, 17), "float32", None, None, SoftmaxOptions(beta)), rng=rng)


# ---------------------------------------------------------------------------------------------
# QUANTIZE, DEQUANTIZE.


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_quantize_float(dtype: str, rng: np.random.Generator) -> None:
    """Including quotients beyond the int32 range, which TFLM converts like TFLite on this host."""
    for scale in (1e-3, 0.1, 10.0):
        x = rng.uniform(-300, 300, size=(4, 64)).astype(np.float32)
        x[0, :4] = [0.5 * scale, -0.5 * scale, 3e9 * scale, -3e9 * scale]
        check(unary("QUANTIZE", x.shape, "float32", None, rand_qp(rng, dtype), out_dtype=dtype), [x])


@pytest.mark.parametrize(("src", "dst"), [("int8", "int8"), ("int8", "int16"), ("int16", "int8"),
                                          ("int16", "int16")])
def test_requantize(src: str, dst: str, rng: np.random.Generator) -> None:
    for _ in range(3):
        check(unary("QUANTIZE", (3, 100), src, rand_qp(rng, src), rand_qp(rng, dst), out_dtype=dst), rng=rng)


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_dequantize(dtype: str, rng: np.random.Generator) -> None:
    check(unary("DEQUANTIZE", (5, 64), dtype, rand_qp(rng, dtype), None, out_dtype="float32"), rng=rng)


def test_dequantize_per_channel() -> None:
    """TFLM applies channel 0's scale to every channel; the TFLM profile computes per channel."""
    w = np.arange(-6, 6, dtype=np.int8).reshape(3, 4) * 10
    scales = (0.5, 0.01, 2.0)
    b = GraphBuilder("DEQUANTIZE_per_channel")  # TFLM needs a graph input: add the constant to it
    x = b.input((3, 4), "float32")
    c = b.const(w, QuantParams(scales, (0, 0, 0), 0))
    d = b.tensor((3, 4), "float32")
    y = b.output((3, 4), "float32")
    b.op("DEQUANTIZE", [c], [d])
    b.op("ADD", [x, d], [y], ActivationOptions(Activation.NONE))
    g, zeros = b.build(), [np.zeros((3, 4), np.float32)]
    assert_same(tflm_output(g, zeros), (w * np.float32(scales[0])).astype(np.float32), "TFLM: first scale")
    per_channel = (w * np.array(scales, np.float32)[:, None]).astype(np.float32)
    assert_same(Oracle(g).run(zeros).outputs[0], per_channel, "TFLM profile: per channel")


# ---------------------------------------------------------------------------------------------
# Shape and data movement.


def _shape_case(op: str, dtype: str, in_shape: tuple[int, ...], out_shapes: Sequence[tuple[int, ...]],
                consts: Sequence[np.ndarray], options: OpOptions | None, q: QuantParams | None,
                const_first: bool = False) -> Graph:
    b = GraphBuilder(f"{op}_{dtype}")
    c_idx = [b.const(c) for c in consts]
    x = b.input(in_shape, dtype, q)
    ys = [b.output(s, dtype, q) for s in out_shapes]
    b.op(op, [*c_idx, x] if const_first else [x, *c_idx], ys, options)
    return b.build()


SHAPE_CASES: dict[str, tuple] = {
    "reshape": ("RESHAPE", (2, 3, 4), [(6, 4)], [np.array([6, 4], np.int32)], ReshapeOptions((6, 4))),
    "squeeze": ("SQUEEZE", (1, 3, 1, 4), [(3, 4)], [], SqueezeOptions((0, 2))),
    "expand_dims": ("EXPAND_DIMS", (3, 4), [(3, 1, 4)], [np.array([1], np.int32)], None),
    "transpose": ("TRANSPOSE", (2, 3, 4, 5), [(5, 2, 4, 3)], [np.array([3, 0, 2, 1], np.int32)], None),
    "strided_slice": ("STRIDED_SLICE", (4, 9, 6), [(2, 3, 6)],
                      [np.array([1, 1, 0], np.int32), np.array([4, 9, 6], np.int32),
                       np.array([2, 3, 1], np.int32)],
                      StridedSliceOptions()),
    "strided_slice_shrink": ("STRIDED_SLICE", (4, 9, 6), [(9,)],
                             [np.array([2, 0, -1], np.int32), np.array([3, 9, 6], np.int32),
                              np.array([1, 1, 1], np.int32)], StridedSliceOptions(shrink_axis_mask=5)),
    "pad": ("PAD", (2, 3, 4), [(3, 6, 5)], [np.array([[1, 0], [2, 1], [0, 1]], np.int32)], None),
    "split_v": ("SPLIT_V", (2, 9, 3), [(2, 2, 3), (2, 7, 3)],
                [np.array([2, 7], np.int32), np.array(1, np.int32)],
                SplitOptions(2)),
}


@pytest.mark.parametrize("dtype", ["int8", "float32", "int16"])
@pytest.mark.parametrize("name", list(SHAPE_CASES))
def test_shape_ops(name: str, dtype: str, rng: np.random.Generator) -> None:
    op, shape, outs, consts, options = SHAPE_CASES[name]
    q = None if dtype == "float32" else rand_qp(rng, dtype)
    check(_shape_case(op, dtype, shape, outs, consts, options, q), rng=rng)


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_split(dtype: str, rng: np.random.Generator) -> None:
    q = None if dtype == "float32" else rand_qp(rng, dtype)
    check(_shape_case("SPLIT", dtype, (2, 6, 5), [(2, 2, 5)] * 3, [np.array(1, np.int32)], SplitOptions(3), q,
                      const_first=True), rng=rng)


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_concatenation(dtype: str, rng: np.random.Generator) -> None:
    q = None if dtype == "float32" else rand_qp(rng, dtype)
    b = GraphBuilder("concatenation")
    xs = [b.input(s, dtype, q) for s in [(2, 3, 4), (2, 1, 4), (2, 5, 4)]]
    y = b.output((2, 9, 4), dtype, q)
    b.op("CONCATENATION", xs, [y], ConcatenationOptions(1))
    check(b.build(), rng=rng)


# ---------------------------------------------------------------------------------------------
# The example models.

EXAMPLES = sorted(p.name for p in MODELS.glob("*.tflite")) if MODELS.is_dir() else []


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_model(name: str, rng: np.random.Generator) -> None:
    model = (MODELS / name).read_bytes()
    graph = read_tflite(model)
    steps = 3 if graph.variables else 1
    inputs = [rand_input(rng, t, -1.0, 1.0) if t.dtype.value == "float32" else rand_input(rng, t)
              for t in graph.input_tensors]
    check_against_tflm(graph, model, inputs, steps=steps, rtol_float=1e-4, atol_float=1e-5)
