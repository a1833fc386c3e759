"""The activation and (de)quantization oracle kernels against the real TFLite interpreter.

Every interpreter case writes a single-op .tflite model, runs it with the reference op resolver
(``BUILTIN_REF``) and requires the oracle to be bit-exact on integer types (float32 within 1e-5
relative).  Where the input is 8-bit, one tensor holds all 256 input values, so a case covers
the whole input domain of a quantization setting; the grids sweep input scales from 1e-3 to 10
and zero points at both ends of the range.  Cases the interpreter refuses must make the oracle
raise too.  A few unit tests pin the gemmlowp fixed-point helpers to the real functions they
approximate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from tests.opgen import GraphBuilder, check_against_interpreter, qrange, skip_on_tflite_runtime
from toolkit.errors import InterpreterError, OracleError
from toolkit.interp import ReferenceInterpreter
from toolkit.model.ir import Graph, LeakyReluOptions, OpOptions, QuantParams, SoftmaxOptions
from toolkit.model.tflite_writer import write_tflite
from toolkit.oracle import Oracle
from toolkit.oracle import fixedpoint as fp

SCALES = [1e-3, 0.0123, 0.1, 0.7, 10.0]


def qp(scale: float, zp: int = 0) -> QuantParams:
    return QuantParams((float(np.float32(scale)),), (int(zp),))


def zero_points(dtype: str) -> list[int]:
    """Both ends of the range and a point inside it."""
    lo, hi = qrange(dtype)
    return [lo, (lo + hi) // 3, hi]


def all_values(dtype: str, rows: int = 1) -> np.ndarray:
    """Every value of an 8-bit type, shuffled into ``rows`` rows (rows must divide 256)."""
    lo, hi = qrange(dtype)
    v = np.arange(lo, hi + 1)
    np.random.default_rng(len(v)).shuffle(v)
    return v.astype(np.dtype(dtype)).reshape(rows, -1)


def unary_graph(op: str, shape: Sequence[int], dtype: str, qi: QuantParams | None,
                qo: QuantParams | None, options: OpOptions | None = None,
                out_dtype: str | None = None) -> Graph:
    b = GraphBuilder(f"{op}_{dtype}")
    x = b.input(shape, dtype, qi)
    y = b.output(shape, out_dtype or dtype, qo)
    b.op(op, [x], [y], options)
    return b.build()


def rand_qp(rng: np.random.Generator, dtype: str) -> QuantParams:
    """Scale log-uniform over 1e-3 … 10; zero point anywhere (int16: 0)."""
    scale = 10 ** rng.uniform(-3, 1)
    if dtype == "int16":
        return qp(scale)
    lo, hi = qrange(dtype)
    return qp(scale, int(rng.integers(lo, hi + 1)))


def assert_both_refuse(graph: Graph, inputs: Sequence[np.ndarray]) -> None:
    """The interpreter refuses the model and the oracle raises a clear OracleError."""
    with pytest.raises(InterpreterError):
        ReferenceInterpreter(write_tflite(graph)).run(inputs)
    with pytest.raises(OracleError):
        Oracle(graph).run(inputs)


# ---------------------------------------------------------------------------------------------
# LOGISTIC and TANH: lookup tables built in float32 at prepare time.


@pytest.mark.parametrize("zp_pos", [0, 1, 2])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("op", ["LOGISTIC", "TANH"])
def test_lut_ops_exhaustive(op: str, dtype: str, scale: float, zp_pos: int,
                            rng: np.random.Generator) -> None:
    lo, _ = qrange(dtype)
    qo = qp(1 / 256, lo) if op == "LOGISTIC" else rand_qp(rng, dtype)
    g = unary_graph(op, (1, 256), dtype, qp(scale, zero_points(dtype)[zp_pos]), qo)
    check_against_interpreter(g, [all_values(dtype)])


@pytest.mark.parametrize("op", ["LOGISTIC", "TANH"])
def test_lut_ops_float(op: str, rng: np.random.Generator) -> None:
    x = (rng.standard_normal((2, 3, 41)) * 8).astype(np.float32)
    x[0, 0, :6] = [0.0, -9.5, 17.0, -30.0, 90.0, -90.0]  # LOGISTIC's cut-offs and saturation
    check_against_interpreter(unary_graph(op, x.shape, "float32", None, None), [x])


@pytest.mark.parametrize("op", ["LOGISTIC", "TANH"])
def test_lut_ops_int16_are_refused_clearly(op: str) -> None:
    """TFLite's int16 LOGISTIC/TANH interpolate a hard-coded sigmoid table that is not derived
    from a formula; the oracle does not model them and says so."""
    g = unary_graph(op, (4,), "int16", qp(2.0**-12), qp(2.0**-15))
    with pytest.raises(OracleError, match="int16"):
        Oracle(g).run([np.zeros(4, np.int16)])


def test_logistic_needs_output_scale_1_over_256() -> None:
    g = unary_graph("LOGISTIC", (4,), "int8", qp(0.1), qp(1 / 128, -128))
    assert_both_refuse(g, [np.zeros(4, np.int8)])


# ---------------------------------------------------------------------------------------------
# SOFTMAX: gemmlowp fixed point for 8-bit inputs.

SOFTMAX_OUT = {("int8", "int8"): qp(1 / 256, -128), ("uint8", "uint8"): qp(1 / 256, 0),
               ("int8", "int16"): qp(1 / 65536, -32768), ("uint8", "int16"): qp(1 / 65536, -32768)}


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("types", list(SOFTMAX_OUT), ids=lambda t: f"{t[0]}-{t[1]}")
def test_softmax_quantized_all_values(types: tuple[str, str], scale: float, beta: float,
                                      rng: np.random.Generator) -> None:
    """All 256 inputs split over rows of 4, 16 and 256: large scales push most differences below
    diff_min (output exactly the minimum), small ones keep every term."""
    dtype, out_dtype = types
    zp = zero_points(dtype)[int(rng.integers(3))]
    for rows in (64, 16, 1):
        g = unary_graph("SOFTMAX", (rows, 256 // rows), dtype, qp(scale, zp), SOFTMAX_OUT[types],
                        SoftmaxOptions(beta), out_dtype)
        check_against_interpreter(g, [all_values(dtype, rows)])


@pytest.mark.parametrize("shape", [(7,), (3, 1), (2, 3, 10), (1, 2, 2, 33)])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_softmax_quantized_shapes(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> None:
    beta = float(np.float32(rng.uniform(0.2, 3.0)))
    qo = SOFTMAX_OUT[(dtype, dtype)]
    for _ in range(3):
        g = unary_graph("SOFTMAX", shape, dtype, rand_qp(rng, dtype), qo, SoftmaxOptions(beta))
        check_against_interpreter(g, rng=rng)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 0.1])
@pytest.mark.parametrize("shape", [(5,), (3, 17), (1, 2, 3, 9)])
def test_softmax_float(shape: tuple[int, ...], beta: float, rng: np.random.Generator) -> None:
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    check_against_interpreter(unary_graph("SOFTMAX", shape, "float32", None, None, SoftmaxOptions(beta)), [x])


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("shape", [(9,), (3, 40), (2, 2, 3, 17)])
def test_softmax_int16(shape: tuple[int, ...], beta: float, rng: np.random.Generator) -> None:
    """int16 → int16: interpolated exp and 1/(1+x) tables built at prepare time."""
    for k, log_scale in enumerate((-5.0, -3.5, -2.0, -0.5)):
        x = rng.integers(-32768, 32768, size=shape).astype(np.int16)
        if k % 2:
            x //= 64  # differences within the table's [-10, 0] range
        g = unary_graph("SOFTMAX", shape, "int16", qp(10**log_scale), qp(1 / 32768), SoftmaxOptions(beta))
        check_against_interpreter(g, [x])


def test_softmax_int16_needs_zero_points_0() -> None:
    g = unary_graph("SOFTMAX", (2, 5), "int16", qp(0.001, 3), qp(1 / 32768), SoftmaxOptions(1.0))
    assert_both_refuse(g, [np.zeros((2, 5), np.int16)])


def test_softmax_int8_needs_its_output_quantization() -> None:
    g = unary_graph("SOFTMAX", (2, 5), "int8", qp(0.1), qp(1 / 256, 0), SoftmaxOptions(1.0))
    assert_both_refuse(g, [np.zeros((2, 5), np.int8)])


# ---------------------------------------------------------------------------------------------
# HARD_SWISH: 16-bit fixed point.

# (input scale, output scale): ratios from 1e-4 (output shift beyond 16 bits) up to 125 (output
# shift 0, where adding the zero point wraps int16), and small input scales (reluish multiplier
# shifted right).
HARD_SWISH_SCALES = [(0.05, 0.03), (1e-3, 10.0), (10.0, 0.2), (0.02, 0.5), (1e-3, 1e-3),
                     (3.0, 0.047), (0.004, 0.05), (0.5, 0.5), (1.0, 0.008)]


@pytest.mark.parametrize("scales", HARD_SWISH_SCALES, ids=lambda s: f"{s[0]}-{s[1]}")
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_hard_swish_exhaustive(dtype: str, scales: tuple[float, float], rng: np.random.Generator) -> None:
    for zp_in in zero_points(dtype):
        zp_out = zero_points(dtype)[int(rng.integers(3))]
        g = unary_graph("HARD_SWISH", (4, 64), dtype, qp(scales[0], zp_in), qp(scales[1], zp_out))
        check_against_interpreter(g, [all_values(dtype, 4)])


def test_hard_swish_float(rng: np.random.Generator) -> None:
    x = rng.uniform(-8, 8, size=(3, 4, 11)).astype(np.float32)
    x[0, 0, :4] = [-3.0, 3.0, 0.0, -0.0]
    check_against_interpreter(unary_graph("HARD_SWISH", x.shape, "float32", None, None), [x])


def test_hard_swish_refuses_an_output_scale_below_input_over_128() -> None:
    g = unary_graph("HARD_SWISH", (4,), "int8", qp(2.0), qp(0.01))
    assert_both_refuse(g, [np.zeros(4, np.int8)])


# ---------------------------------------------------------------------------------------------
# RELU, RELU6, LEAKY_RELU: requantization with MultiplyByQuantizedMultiplier.


@pytest.mark.parametrize("scale_out", [1e-3, 0.05, 0.1, 3.0])
@pytest.mark.parametrize("scale_in", SCALES)
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("op", ["RELU", "RELU6"])
def test_relu_exhaustive(op: str, dtype: str, scale_in: float, scale_out: float,
                         rng: np.random.Generator) -> None:
    zps = zero_points(dtype)
    qi, qo = qp(scale_in, zps[int(rng.integers(3))]), qp(scale_out, zps[int(rng.integers(3))])
    check_against_interpreter(unary_graph(op, (1, 256), dtype, qi, qo), [all_values(dtype)])
    # Same scale on both sides (the identity multiplier 2^30 · 2^1).
    check_against_interpreter(unary_graph(op, (256,), dtype, qi, qi), [all_values(dtype).ravel()])


@pytest.mark.parametrize("alpha", [0.1, 0.2, -0.3, 1.5, 0.0])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_leaky_relu_exhaustive(dtype: str, alpha: float, rng: np.random.Generator) -> None:
    for scale_in in SCALES:
        qi = qp(scale_in, zero_points(dtype)[int(rng.integers(3))])
        for qo in (rand_qp(rng, dtype), qi):
            g = unary_graph("LEAKY_RELU", (2, 128), dtype, qi, qo, LeakyReluOptions(alpha))
            check_against_interpreter(g, [all_values(dtype, 2)])


@pytest.mark.parametrize("op", ["RELU", "RELU6", "LEAKY_RELU"])
def test_relu_family_int16(op: str, rng: np.random.Generator) -> None:
    options = LeakyReluOptions(0.25) if op == "LEAKY_RELU" else None
    for _ in range(6):
        g = unary_graph(op, (3, 333), "int16", rand_qp(rng, "int16"), rand_qp(rng, "int16"), options)
        check_against_interpreter(g, rng=rng)


@pytest.mark.parametrize("op", ["RELU", "RELU6", "LEAKY_RELU"])
def test_relu_family_float(op: str, rng: np.random.Generator) -> None:
    x = rng.uniform(-9, 9, size=(2, 5, 7)).astype(np.float32)
    x[0, 0, :3] = [0.0, 6.0, -0.0]
    options = LeakyReluOptions(-0.7) if op == "LEAKY_RELU" else None
    check_against_interpreter(unary_graph(op, x.shape, "float32", None, None, options), [x])


# ---------------------------------------------------------------------------------------------
# PRELU: alpha broadcast against the input.

PRELU_SHAPES = [((1, 4, 4, 3), (3,)), ((1, 4, 4, 3), (1, 1, 3)), ((2, 5, 3), (5, 1)),
                ((1, 3, 3, 2), (1, 3, 3, 2)), ((6,), (1,)), ((2, 3, 4, 5, 2), (2,))]
PRELU_IDS = ["x".join(map(str, a)) + "_" + "x".join(map(str, b)) for a, b in PRELU_SHAPES]


@pytest.mark.parametrize("shapes", PRELU_SHAPES, ids=PRELU_IDS)
@pytest.mark.parametrize("dtype", ["int8", "uint8", "float32"])
def test_prelu(dtype: str, shapes: tuple[tuple[int, ...], tuple[int, ...]], rng: np.random.Generator) -> None:
    x_shape, a_shape = shapes
    skip_on_tflite_runtime("aborts on a 5-D PRELU", len(x_shape) == 5)
    for _ in range(4):
        b = GraphBuilder(f"PRELU_{dtype}")
        if dtype == "float32":
            x = b.input(x_shape, dtype)
            alpha = b.const(rng.standard_normal(a_shape).astype(np.float32))
            y = b.output(x_shape, dtype)
        else:
            lo, hi = qrange(dtype)
            x = b.input(x_shape, dtype, rand_qp(rng, dtype))
            qa = rand_qp(rng, dtype)
            alpha = b.const(rng.integers(lo, hi + 1, size=a_shape).astype(np.dtype(dtype)), qa)
            y = b.output(x_shape, dtype, rand_qp(rng, dtype))
        b.op("PRELU", [x, alpha], [y])
        check_against_interpreter(b.build(), rng=rng)


def test_prelu_refuses_per_channel_quantized_alpha() -> None:
    """TFLite reads only the legacy per-tensor scale of alpha, which is 0 for a per-channel
    tensor (every negative input then maps to the output zero point); the oracle refuses."""
    b = GraphBuilder("PRELU_per_channel_alpha")
    x = b.input((1, 2, 2, 3), "int8", qp(0.05))
    alpha = b.const(np.array([-100, 50, 127], np.int8), QuantParams((0.01, 0.02, 0.03), (0, 0, 0), 0))
    y = b.output((1, 2, 2, 3), "int8", qp(0.05))
    b.op("PRELU", [x, alpha], [y])
    with pytest.raises(OracleError, match="per channel"):
        Oracle(b.build()).run([np.zeros((1, 2, 2, 3), np.int8)])


def test_prelu_int16_is_refused_clearly() -> None:
    """The installed TFLite's int16 PRELU does not follow the int8 formula; the oracle does not
    guess."""
    b = GraphBuilder("PRELU_int16")
    x = b.input((4,), "int16", qp(0.01))
    alpha = b.const(np.full((1,), -5000, np.int16), qp(0.001))
    y = b.output((4,), "int16", qp(0.01))
    b.op("PRELU", [x, alpha], [y])
    with pytest.raises(OracleError, match="int16"):
        Oracle(b.build()).run([np.zeros(4, np.int16)])


# ---------------------------------------------------------------------------------------------
# ABS.


@pytest.mark.parametrize("dtype", ["int8", "int16", "float32"])
def test_abs(dtype: str, rng: np.random.Generator) -> None:
    for k in range(6):
        if dtype == "float32":
            qi = qo = None
        else:
            qi = rand_qp(rng, dtype)
            qo = qi if k % 3 == 0 else rand_qp(rng, dtype)
        x = all_values(dtype) if dtype == "int8" else None
        shape = (1, 256) if dtype == "int8" else (4, 50)
        g = unary_graph("ABS", shape, dtype, qi, qo)
        check_against_interpreter(g, None if x is None else [x], rng=rng)


def test_abs_int16_without_quantization() -> None:
    x = np.array([-32768, -32767, -5, 0, 7, 32767], np.int16)
    check_against_interpreter(unary_graph("ABS", x.shape, "int16", None, None), [x])


def test_abs_refuses_uint8() -> None:
    assert_both_refuse(unary_graph("ABS", (3,), "uint8", qp(0.1, 3), qp(0.1, 3)), [np.zeros(3, np.uint8)])


# ---------------------------------------------------------------------------------------------
# QUANTIZE and DEQUANTIZE.


@pytest.mark.parametrize("zp_pos", [0, 1, 2])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
def test_quantize_float(dtype: str, scale: float, zp_pos: int, rng: np.random.Generator) -> None:
    q = qp(scale, 0 if dtype == "int16" else zero_points(dtype)[zp_pos])
    s = np.float32(q.scale[0])
    x = (rng.standard_normal((4, 60)) * s * 300).astype(np.float32)
    # Exact halves (round half away from zero), values far outside the range, zeros.
    x[0, :40] = ((np.arange(40) - 20 + 0.5) * s).astype(np.float32)
    # Beyond int32 after the division: the x86 conversion gives INT32_MIN, + zero point wraps.
    x[1, :7] = [1e30, -1e30, 0.0, -0.0, np.inf, -np.inf, np.nan]
    x[2, :2] = [np.float32(2.0**31) * s, np.float32(-(2.0**31)) * s]
    check_against_interpreter(unary_graph("QUANTIZE", x.shape, "float32", None, q, out_dtype=dtype), [x])


@pytest.mark.parametrize("axis", [0, 1, 3])
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
def test_quantize_float_per_channel(dtype: str, axis: int, rng: np.random.Generator) -> None:
    shape = (3, 4, 2, 5)
    n = shape[axis]
    lo, hi = qrange(dtype)
    zps = (0,) * n if dtype == "int16" else tuple(int(z) for z in rng.integers(lo, hi + 1, size=n))
    q = QuantParams(tuple(float(np.float32(s)) for s in 10 ** rng.uniform(-3, 0, size=n)), zps, axis)
    x = rng.uniform(-2, 2, size=shape).astype(np.float32)
    x[0, 0, 0, :4] = [1e30, -1e30, np.nan, 0.0]
    check_against_interpreter(unary_graph("QUANTIZE", shape, "float32", None, q, out_dtype=dtype), [x])


REQUANTIZE_PAIRS = [("int8", "int8"), ("int8", "uint8"), ("uint8", "int8"), ("uint8", "uint8"),
                    ("int8", "int16"), ("uint8", "int16"), ("int16", "int8"), ("int16", "int16")]


@pytest.mark.parametrize("types", REQUANTIZE_PAIRS, ids=lambda t: f"{t[0]}-{t[1]}")
def test_requantize(types: tuple[str, str], rng: np.random.Generator) -> None:
    src, dst = types
    skip_on_tflite_runtime("cannot requantize 8-bit to int16", src != "int16" and dst == "int16")
    for k in range(8):
        qi = rand_qp(rng, src)
        qo = rand_qp(rng, dst)
        if k == 0:  # same scale: the int8 <-> uint8 zero-point shift
            qo = qp(qi.scale[0], qo.zero_point[0])
        x = all_values(src) if src != "int16" else None
        shape = (1, 256) if src != "int16" else (3, 100)
        g = unary_graph("QUANTIZE", shape, src, qi, qo, out_dtype=dst)
        check_against_interpreter(g, None if x is None else [x], rng=rng)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
def test_dequantize(dtype: str, rng: np.random.Generator) -> None:
    for scale in SCALES:
        zp = 0 if dtype == "int16" else zero_points(dtype)[int(rng.integers(3))]
        x = all_values(dtype) if dtype != "int16" else None
        shape = (1, 256) if dtype != "int16" else (2, 300)
        g = unary_graph("DEQUANTIZE", shape, dtype, qp(scale, zp), None, out_dtype="float32")
        check_against_interpreter(g, None if x is None else [x], rng=rng, atol_float=0.0, rtol_float=0.0)


@pytest.mark.parametrize("axis", [0, 2])
def test_dequantize_per_channel_constant(axis: int, rng: np.random.Generator) -> None:
    shape = (4, 3, 5)
    q = QuantParams(tuple(float(np.float32(s)) for s in 10 ** rng.uniform(-4, 0, size=shape[axis])),
                    (0,) * shape[axis], axis)
    b = GraphBuilder("DEQUANTIZE_per_channel")
    w = b.const(rng.integers(-127, 128, size=shape).astype(np.int8), q)
    y = b.output(shape, "float32")
    b.op("DEQUANTIZE", [w], [y])
    check_against_interpreter(b.build(), [], atol_float=0.0, rtol_float=0.0)


@pytest.mark.parametrize("constant", [True, False])
def test_dequantize_float16(constant: bool, rng: np.random.Generator) -> None:
    h = (rng.standard_normal((5, 7)) * 100).astype(np.float16)
    h[0, :3] = [np.float16(6.0e-8), np.float16(65504.0), np.float16(-0.0)]  # subnormal, max, -0
    b = GraphBuilder("DEQUANTIZE_f16")
    src = b.const(h) if constant else b.input(h.shape, "float16")
    y = b.output(h.shape, "float32")
    b.op("DEQUANTIZE", [src], [y])
    check_against_interpreter(b.build(), [] if constant else [h], atol_float=0.0, rtol_float=0.0)


def test_quantize_and_dequantize_refusals() -> None:
    g = unary_graph("QUANTIZE", (3,), "int16", qp(0.1), qp(0.1, 5), out_dtype="uint8")
    assert_both_refuse(g, [np.zeros(3, np.int16)])
    g = unary_graph("DEQUANTIZE", (3,), "int16", qp(0.1, 7), None, out_dtype="float32")
    assert_both_refuse(g, [np.zeros(3, np.int16)])


# ---------------------------------------------------------------------------------------------
# gemmlowp fixed-point helpers against the functions they approximate.


def test_exp_on_negative_values_approximates_exp() -> None:
    x = np.linspace(-31.9, 0.0, 2001)
    raw = np.round(x * 2**26).astype(np.int64)  # Q5.26
    got = fp.exp_on_negative_values(raw, 5) / 2**31
    np.testing.assert_allclose(got, np.exp(raw / 2**26), atol=3e-7)  # gemmlowp's accuracy
    assert fp.exp_on_negative_values(np.array([0]), 5)[0] == 2**31 - 1


def test_one_over_one_plus_x_and_reciprocal() -> None:
    x = np.linspace(0.0, 0.999, 999)
    got = fp.one_over_one_plus_x_for_x_in_0_1(np.round(x * 2**31).astype(np.int64)) / 2**31
    np.testing.assert_allclose(got, 1 / (1 + x), atol=4e-9)
    sums = np.array([1 << 19, 3 << 19, 12345678, (1 << 31) - 1], np.int64)  # Q12.19 values
    scale, bits = fp.get_reciprocal(sums, 12)
    np.testing.assert_allclose(scale / 2**31 / 2.0**bits, 2**19 / sums, rtol=1e-8)


def test_count_leading_zeros_and_rounding_divide16() -> None:
    x = np.array([0, 1, 2, 3, 255, 1 << 16, (1 << 31) - 1, -1], np.int64)
    assert fp.count_leading_zeros_u32(x).tolist() == [32, 31, 30, 30, 24, 15, 1, 0]
    v = np.array([-5, -4, -3, 3, 4, 5, 0], np.int64)
    assert fp.rounding_divide_by_pot16(v, 1).tolist() == [-3, -2, -2, 2, 2, 3, 0]
    # int16 mask wraps for exponents >= 16: what the C++ template computes.
    assert fp.rounding_divide_by_pot16(np.array([0, 100, -100]), 17).tolist() == [1, 1, -1]
