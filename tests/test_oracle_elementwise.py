"""The element-wise oracle kernels against the real TFLite interpreter (reference kernels).

Every case writes a single-op .tflite model and requires the oracle to be bit-exact with the
interpreter on integer types (float32 within 1e-5 relative).  Quantization parameters are drawn
per case: scales log-uniform over 1e-3 … 10, zero points anywhere in the type's range with the
extremes over-represented, and the two inputs of a binary op quantized independently.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from tests.opgen import GraphBuilder, check_against_interpreter, qrange, skip_on_tflite_runtime
from toolkit.errors import InterpreterError, OracleError
from toolkit.interp import ReferenceInterpreter
from toolkit.model.ir import Activation, ActivationOptions, Graph, QuantParams
from toolkit.model.tflite_writer import write_tflite
from toolkit.oracle import Oracle

# (input 1 shape, input 2 shape): equal shapes (TFLite's non-broadcast path), sizes that are not
# multiples of 4/8/16, one- and two-sided broadcasting, differing ranks, and 5-D.
SHAPE_PAIRS: list[tuple[tuple[int, ...], tuple[int, ...]]] = [
    ((7,), (7,)),
    ((1, 5, 5, 3), (1, 5, 5, 3)),
    ((2, 3, 17), (17,)),
    ((2, 3, 17), (1,)),
    ((1,), (3, 11)),
    ((4, 1, 9), (1, 6, 1)),
    ((3, 1), (2, 1, 1, 13)),
    ((2, 1, 3, 1, 5), (1, 4, 1, 6, 1)),
]
SHAPE_IDS = ["x".join(map(str, a)) + "_" + "x".join(map(str, b)) for a, b in SHAPE_PAIRS]
ACTIVATIONS = [Activation.NONE, Activation.RELU, Activation.RELU6, Activation.RELU_N1_TO_1]


def rand_qp(rng: np.random.Generator, dtype: str, lo_exp: float = -3.0, hi_exp: float = 1.0) -> QuantParams:
    """Per-tensor parameters: scale 10**U(lo_exp, hi_exp) (as float32), zero point anywhere in the
    range (one time in three at an end of it); int16 is symmetric (zero point 0)."""
    scale = float(np.float32(10 ** rng.uniform(lo_exp, hi_exp)))
    if dtype == "int16":
        return QuantParams((scale,), (0,))
    qmin, qmax = qrange(dtype)
    r = rng.random()
    zp = qmin if r < 1 / 6 else qmax if r < 1 / 3 else int(rng.integers(qmin, qmax + 1))
    return QuantParams((scale,), (zp,))


def binary_graph(op: str, dtype: str, s1: Sequence[int], s2: Sequence[int],
                 qs: Sequence[QuantParams | None], act: Activation | None) -> Graph:
    b = GraphBuilder(f"{op}_{dtype}")
    x = b.input(s1, dtype, qs[0])
    y = b.input(s2, dtype, qs[1])
    out = b.output(np.broadcast_shapes(tuple(s1), tuple(s2)), dtype, qs[2])
    b.op(op, [x, y], [out], ActivationOptions(act) if act is not None else None)
    return b.build()


def unary_graph(op: str, dtype: str, shape: Sequence[int], qi: QuantParams | None,
                qo: QuantParams | None) -> Graph:
    b = GraphBuilder(f"{op}_{dtype}")
    x = b.input(shape, dtype, qi)
    out = b.output(shape, dtype, qo)
    b.op(op, [x], [out])
    return b.build()


def interpreter_run(graph: Graph, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    return ReferenceInterpreter(write_tflite(graph)).run(inputs)


# ---------------------------------------------------------------------------------------------
# ADD / SUB / MUL, quantized.


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: a.value)
@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("op", ["ADD", "SUB"])
def test_add_sub_quantized(op: str, dtype: str, shapes: tuple, act: Activation,
                           rng: np.random.Generator) -> None:
    for _ in range(3):
        qs = [rand_qp(rng, dtype) for _ in range(3)]
        check_against_interpreter(binary_graph(op, dtype, *shapes, qs, act), rng=rng)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
def test_every_input_pair(op: str, dtype: str, rng: np.random.Generator) -> None:
    """All 256 × 256 pairs of input values at once (input 1 a column, input 2 a row), for several
    quantization draws: rounding ties of the fixed-point rescaling show up only here."""
    qmin, qmax = qrange(dtype)
    col = np.arange(qmin, qmax + 1).astype(dtype).reshape(256, 1)
    row = col.reshape(1, 256)
    for _ in range(8):
        qs = [rand_qp(rng, dtype) for _ in range(3)]
        graph = binary_graph(op, dtype, (256, 1), (1, 256), qs, Activation.NONE)
        check_against_interpreter(graph, inputs=[col, row])


@pytest.mark.parametrize("op", ["ADD", "SUB"])
@pytest.mark.parametrize("ratio", [1e-3, 0.5, 1.0, 2.0, 1e3])
def test_add_sub_differing_input_scales(op: str, ratio: float, rng: np.random.Generator) -> None:
    """Input 2's scale is ``ratio`` × input 1's: the larger one gets multiplier 0.5, the other a
    tiny one; zero points at both ends of the range."""
    for zps in [(-128, 127, 0), (127, -128, -128), (0, 0, 127)]:
        s1 = float(np.float32(10 ** rng.uniform(-2, 0)))
        qs = [QuantParams((s1,), (zps[0],)), QuantParams((float(np.float32(s1 * ratio)),), (zps[1],)),
              QuantParams((float(np.float32(s1 * max(ratio, 1.0) * rng.uniform(0.5, 3))),), (zps[2],))]
        check_against_interpreter(binary_graph(op, "int8", (3, 33), (33,), qs, Activation.NONE), rng=rng)


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: a.value)
@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_mul_quantized(dtype: str, shapes: tuple, act: Activation, rng: np.random.Generator) -> None:
    skip_on_tflite_runtime("aborts on 5-D broadcasting MUL", len(shapes[0]) == 5)
    for _ in range(3):
        qs = [rand_qp(rng, dtype) for _ in range(3)]
        check_against_interpreter(binary_graph("MUL", dtype, *shapes, qs, act), rng=rng)


def test_mul_multiplier_above_one(rng: np.random.Generator) -> None:
    """s1·s2/so ≫ 1 (a left shift in MultiplyByQuantizedMultiplier) and ≪ 1."""
    for s1, s2, so in [(0.5, 0.8, 1e-3), (2.0, 3.0, 0.01), (1e-3, 2e-3, 0.5), (0.1, 0.1, 0.0123)]:
        qs = [QuantParams((float(np.float32(s)),), (int(rng.integers(-128, 128)),)) for s in (s1, s2, so)]
        check_against_interpreter(binary_graph("MUL", "int8", (5, 13), (5, 13), qs, Activation.NONE), rng=rng)


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
def test_int16_symmetric(op: str, rng: np.random.Generator) -> None:
    """16x8 quantization: zero points 0, general (non power-of-two) scales."""
    for s1, s2 in SHAPE_PAIRS[:6]:
        qs = [rand_qp(rng, "int16", -5, -2) for _ in range(3)]
        check_against_interpreter(binary_graph(op, "int16", s1, s2, qs, Activation.RELU6), rng=rng)
        qs = [rand_qp(rng, "int16", -5, -2) for _ in range(3)]
        check_against_interpreter(binary_graph(op, "int16", s1, s2, qs, Activation.NONE), rng=rng)


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
def test_int32(op: str, rng: np.random.Generator) -> None:
    skip_on_tflite_runtime("aborts on 5-D broadcasting MUL", op == "MUL")
    for (s1, s2), act in zip(SHAPE_PAIRS, ACTIVATIONS * 2, strict=True):
        check_against_interpreter(binary_graph(op, "int32", s1, s2, [None] * 3, act), rng=rng)


# ---------------------------------------------------------------------------------------------
# Float binary ops.


@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=SHAPE_IDS)
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM"])
def test_binary_float(op: str, shapes: tuple, rng: np.random.Generator) -> None:
    skip_on_tflite_runtime("aborts on 5-D broadcasting MUL", op == "MUL" and len(shapes[0]) == 5)
    acts: list[Activation | None] = [None] if op in ("MAXIMUM", "MINIMUM") else list(ACTIVATIONS)
    for act in acts:
        graph = binary_graph(op, "float32", *shapes, [None] * 3, act)
        check_against_interpreter(graph, rng=rng, atol_float=0.0, rtol_float=1e-5)


@pytest.mark.parametrize("act", [Activation.TANH, Activation.SIGN_BIT])
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
def test_float_kernels_ignore_non_relu_fused_activation(op: str, act: Activation,
                                                        rng: np.random.Generator) -> None:
    """TFLite's float ADD/SUB/MUL only clamp for the RELU family; the oracle must do the same
    (the outputs leave [-1, 1], so an applied tanh would be caught)."""
    graph = binary_graph(op, "float32", (4, 9), (9,), [None] * 3, act)
    got = check_against_interpreter(graph, rng=rng)
    assert np.abs(got[0]).max() > 1.0


@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL"])
def test_quantized_kernels_ignore_non_relu_fused_activation(op: str, rng: np.random.Generator) -> None:
    """The quantized kernels too: ``CalculateActivationRangeQuantized`` gives the full range for
    TANH/SIGN_BIT.  Inputs span ±12.8 and the output only ±6.4, so results saturate at both
    ends of the int8 range (a tanh-like clamp to [-1, 1] would show)."""
    for act in (Activation.TANH, Activation.SIGN_BIT):
        qs = [QuantParams((0.1,), (0,)), QuantParams((0.1,), (0,)), QuantParams((0.05,), (3,))]
        got = check_against_interpreter(binary_graph(op, "int8", (8, 9), (9,), qs, act), rng=rng)
        assert got[0].min() == -128 and got[0].max() == 127


# ---------------------------------------------------------------------------------------------
# MAXIMUM / MINIMUM, quantized.


@pytest.mark.parametrize("shapes", SHAPE_PAIRS, ids=SHAPE_IDS)
@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16"])
@pytest.mark.parametrize("op", ["MAXIMUM", "MINIMUM"])
def test_maximum_minimum_quantized(op: str, dtype: str, shapes: tuple, rng: np.random.Generator) -> None:
    q = rand_qp(rng, dtype)
    check_against_interpreter(binary_graph(op, dtype, *shapes, [q, q, q], None), rng=rng)


@pytest.mark.parametrize("op", ["MAXIMUM", "MINIMUM"])
def test_maximum_minimum_compare_raw_values(op: str, rng: np.random.Generator) -> None:
    """With (unusual) differing quantization TFLite still compares the raw integers."""
    qs = [rand_qp(rng, "int8") for _ in range(3)]
    check_against_interpreter(binary_graph(op, "int8", (6, 7), (7,), qs, None), rng=rng)


# ---------------------------------------------------------------------------------------------
# RSQRT / SQRT.


def valid_q(zp: int, dtype: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` values ≥ zp (non-negative reals), covering every such value when ``size`` allows."""
    qmax = qrange(dtype)[1]
    every = np.arange(zp, qmax + 1)
    extra = rng.integers(zp, qmax + 1, size=max(0, size - every.size))
    return np.concatenate([every, extra])[:size].astype(dtype)


@pytest.mark.parametrize("trial", range(12))
def test_rsqrt_int8_every_value(trial: int, rng: np.random.Generator) -> None:
    """All int8 inputs at or above the zero point (including zp itself, which maps to 127, and
    zp + 1, the special case of the inverse square root) for random scales 1e-3 … 10."""
    zp_in = [-128, 127, 0][trial] if trial < 3 else int(rng.integers(-128, 128))
    qi, qo = rand_qp(rng, "int8"), rand_qp(rng, "int8")
    qi = QuantParams(qi.scale, (zp_in,))
    n = 128 - zp_in
    graph = unary_graph("RSQRT", "int8", (1, n), qi, qo)
    x = valid_q(zp_in, "int8", n, rng).reshape(1, n)
    check_against_interpreter(graph, inputs=[x])


@pytest.mark.parametrize("trial", range(6))
def test_rsqrt_int16_every_value(trial: int, rng: np.random.Generator) -> None:
    """All 32768 non-negative int16 inputs through TFLite's interpolated 513-entry table (built in
    float32), symmetric scales over 1e-5 … 1e-1."""
    skip_on_tflite_runtime("has no int16 RSQRT")
    qi, qo = rand_qp(rng, "int16", -5, -1), rand_qp(rng, "int16", -5, -1)
    x = np.arange(0, 32768, dtype=np.int16).reshape(128, 256)
    check_against_interpreter(unary_graph("RSQRT", "int16", (128, 256), qi, qo), inputs=[x])


def test_rsqrt_below_zero_point_fails_in_both() -> None:
    qi, qo = QuantParams((0.05,), (-10,)), QuantParams((0.02,), (-128,))
    graph = unary_graph("RSQRT", "int8", (4,), qi, qo)
    xs = [np.array([-10, 0, -11, 100], np.int8)]
    with pytest.raises(InterpreterError):
        interpreter_run(graph, xs)
    with pytest.raises(OracleError, match="zero point"):
        Oracle(graph).run(xs)


@pytest.mark.parametrize("op", ["RSQRT", "SQRT"])
@pytest.mark.parametrize("shape", [(7,), (3, 17), (2, 3, 5, 9)])
def test_rsqrt_sqrt_float(op: str, shape: tuple, rng: np.random.Generator) -> None:
    for lo, hi in [(1e-4, 1e-2), (0.01, 10.0), (1.0, 1e6)]:
        x = (10 ** rng.uniform(np.log10(lo), np.log10(hi), size=shape)).astype(np.float32)
        check_against_interpreter(unary_graph(op, "float32", shape, None, None), inputs=[x],
                                  atol_float=0.0, rtol_float=1e-5)


@pytest.mark.parametrize("dtype", ["int8", "int16"])
@pytest.mark.parametrize("trial", range(6))
def test_sqrt_quantized(dtype: str, trial: int, rng: np.random.Generator) -> None:
    skip_on_tflite_runtime("has no int8/int16 SQRT")
    lo_exp, hi_exp = (-3.0, 1.0) if dtype == "int8" else (-5.0, -1.0)
    qi, qo = rand_qp(rng, dtype, lo_exp, hi_exp), rand_qp(rng, dtype, lo_exp, hi_exp)
    n = 300
    x = valid_q(qi.zero_point[0], dtype, n, rng).reshape(3, 100)
    check_against_interpreter(unary_graph("SQRT", dtype, (3, 100), qi, qo), inputs=[x])


# ---------------------------------------------------------------------------------------------
# Unsupported combinations give clear errors.


def test_per_channel_operand_is_rejected() -> None:
    q = QuantParams((0.1,), (0,))
    pc = QuantParams((0.1, 0.2, 0.3), (0, 0, 0), axis=1)
    graph = binary_graph("ADD", "int8", (2, 3), (2, 3), [pc, q, q], None)
    with pytest.raises(OracleError, match="per-channel"):
        Oracle(graph).run([np.zeros((2, 3), np.int8)] * 2)


def test_output_scale_too_small_for_add_is_rejected() -> None:
    """2·max(s1, s2) / (2^20 · so) ≥ 1: the reference kernel's rescale is undefined there."""
    qs = [QuantParams((1.0,), (0,)), QuantParams((1.0,), (0,)), QuantParams((1e-7,), (0,))]
    graph = binary_graph("ADD", "int8", (4,), (4,), qs, None)
    with pytest.raises(OracleError, match="too small"):
        Oracle(graph).run([np.zeros(4, np.int8)] * 2)
