"""The shape/data-movement oracle kernels against the real TFLite interpreter (reference kernels).

Output shapes are the interpreter's: each graph is first written with a placeholder output
shape, the shape TFLite's Prepare computes is read back, and the graph is rebuilt with it.  So
the oracle's own shape logic (STRIDED_SLICE masks above all) is checked against TFLite's too: a
disagreement makes the oracle refuse the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from tests.opgen import GraphBuilder, check_against_interpreter, qrange
from toolkit.errors import InterpreterError, OracleError
from toolkit.interp import ReferenceInterpreter
from toolkit.model.ir import (
    Activation,
    ConcatenationOptions,
    Graph,
    QuantParams,
    ReshapeOptions,
    SplitOptions,
    SqueezeOptions,
    StridedSliceOptions,
)
from toolkit.model.tflite_writer import write_tflite
from toolkit.oracle import Oracle

Shape = tuple[int, ...]
MakeGraph = Callable[[Sequence[Shape]], Graph]


def rand_qp(rng: np.random.Generator, dtype: str) -> QuantParams:
    """Scale 10**U(-3, 1); zero point anywhere in range, one time in three at an end of it."""
    scale = float(np.float32(10 ** rng.uniform(-3, 1)))
    qmin, qmax = qrange(dtype)
    r = rng.random()
    zp = qmin if r < 1 / 6 else qmax if r < 1 / 3 else int(rng.integers(qmin, qmax + 1))
    return QuantParams((scale,), (zp,))


def tflite_output_shapes(make: MakeGraph, n_outputs: int = 1) -> list[Shape]:
    """The output shapes the interpreter computes for ``make``'s graph."""
    probe = make([(1,)] * n_outputs)
    return [d.shape for d in ReferenceInterpreter(write_tflite(probe)).output_details]


def check(make: MakeGraph, rng: np.random.Generator, n_outputs: int = 1,
          inputs: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    return check_against_interpreter(make(tflite_output_shapes(make, n_outputs)), inputs=inputs, rng=rng)


def quant_for(dtype: str, rng: np.random.Generator) -> QuantParams | None:
    return rand_qp(rng, dtype) if dtype in ("int8", "uint8") else None


DTYPES = ["float32", "int8", "uint8"]


# ---------------------------------------------------------------------------------------------
# RESHAPE, SQUEEZE, EXPAND_DIMS, TRANSPOSE.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("how", ["options", "shape_tensor"])
@pytest.mark.parametrize(
    "shape,new_shape",
    [((2, 3, 5), (6, 5)), ((1, 4, 4, 3), (1, -1)), ((7,), (7, 1, 1)), ((2, 9), (-1, 2, 3, 3)),
     ((1, 2, 3, 2, 5), (60,))],
)
def test_reshape(shape: Shape, new_shape: Shape, how: str, dtype: str, rng: np.random.Generator) -> None:
    q = quant_for(dtype, rng)

    def make(outs: Sequence[Shape]) -> Graph:
        b = GraphBuilder("reshape")
        x = b.input(shape, dtype, q)
        out = b.output(outs[0], dtype, q)
        if how == "options":
            b.op("RESHAPE", [x], [out], ReshapeOptions(tuple(new_shape)))
        else:
            b.op("RESHAPE", [x, b.const(np.array(new_shape, np.int32))], [out])
        return b.build()

    check(make, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,dims", [((1, 5, 1, 3), ()), ((1, 5, 1, 3), (0,)), ((1, 5, 1, 3), (-2,)), ((2, 1), (1,)),
                   ((1, 1, 1, 1, 7), (0, 1, 3))],
)
def test_squeeze(shape: Shape, dims: Shape, dtype: str, rng: np.random.Generator) -> None:
    q = quant_for(dtype, rng)

    def make(outs: Sequence[Shape]) -> Graph:
        b = GraphBuilder("squeeze")
        x = b.input(shape, dtype, q)
        out = b.output(outs[0], dtype, q)
        b.op("SQUEEZE", [x], [out], SqueezeOptions(dims))
        return b.build()

    check(make, rng)


@pytest.mark.parametrize("axis_dtype", ["int32", "int64"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_expand_dims(dtype: str, axis_dtype: str, rng: np.random.Generator) -> None:
    for shape in [(5,), (3, 7), (2, 3, 4, 5)]:
        for axis in range(-len(shape) - 1, len(shape) + 1):
            q = quant_for(dtype, rng)

            def make(outs: Sequence[Shape], shape: Shape = shape, axis: int = axis,
                     q: QuantParams | None = q) -> Graph:
                b = GraphBuilder("expand_dims")
                x = b.input(shape, dtype, q)
                out = b.output(outs[0], dtype, q)
                b.op("EXPAND_DIMS", [x, b.const(np.array([axis], axis_dtype))], [out])
                return b.build()

            check(make, rng)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rank", [1, 2, 3, 4, 5, 6])
def test_transpose(rank: int, dtype: str, rng: np.random.Generator) -> None:
    for _ in range(4):
        shape = tuple(int(s) for s in rng.integers(1, 6, size=rank))
        perm = rng.permutation(rank).astype(np.int32)
        q = quant_for(dtype, rng)

        def make(outs: Sequence[Shape], shape: Shape = shape, perm: np.ndarray = perm,
                 q: QuantParams | None = q) -> Graph:
            b = GraphBuilder("transpose")
            x = b.input(shape, dtype, q)
            out = b.output(outs[0], dtype, q)
            b.op("TRANSPOSE", [x, b.const(perm)], [out])
            return b.build()

        check(make, rng)


# ---------------------------------------------------------------------------------------------
# STRIDED_SLICE.


def slice_graph(shape: Shape, dtype: str, q: QuantParams | None, begin: Sequence[int], end: Sequence[int],
                strides: Sequence[int], opts: StridedSliceOptions) -> MakeGraph:
    def make(outs: Sequence[Shape]) -> Graph:
        b = GraphBuilder("strided_slice")
        x = b.input(shape, dtype, q)
        consts = [b.const(np.array(v, np.int32)) for v in (begin, end, strides)]
        out = b.output(outs[0], dtype, q)
        b.op("STRIDED_SLICE", [x, *consts], [out], opts)
        return b.build()

    return make


NAMED_SLICES = {
    # name: (input shape, begin, end, strides, options)
    "plain": ((4, 6), [1, 2], [3, 5], [1, 1], StridedSliceOptions()),
    "reverse_all": ((5, 7), [0, 0], [0, 0], [-1, -1], StridedSliceOptions(begin_mask=3, end_mask=3)),
    "negative_stride_2": ((9,), [-1], [-10], [-2], StridedSliceOptions()),
    "negative_indices": ((3, 8), [-2, -7], [-1, -1], [1, 3], StridedSliceOptions()),
    "out_of_range_clamped": ((3, 5), [-9, 1], [9, 100], [1, 2], StridedSliceOptions()),
    "shrink_negative": ((4, 5, 6), [-1, 0, 2], [0, 0, 0], [1, 1, 1],
                        StridedSliceOptions(end_mask=2, shrink_axis_mask=5)),
    "shrink_all": ((2, 3), [1, 2], [2, 3], [1, 1], StridedSliceOptions(shrink_axis_mask=3)),
    "keras_flatten_batch": ((1, 4, 4, 3), [0], [1], [1], StridedSliceOptions(shrink_axis_mask=1)),
    "ellipsis_first": ((2, 3, 4, 5), [0, 1], [0, 4], [1, 2], StridedSliceOptions(ellipsis_mask=1)),
    "ellipsis_middle": ((2, 3, 4, 5), [1, 0, 0], [2, 0, 3], [1, 1, 1], StridedSliceOptions(ellipsis_mask=2)),
    "new_axis": ((3, 4), [0, 0, 1], [0, 0, 3], [1, 1, 1], StridedSliceOptions(new_axis_mask=1, end_mask=2)),
    "new_axis_and_shrink": ((3, 4), [1, 0, 0], [2, 1, 4], [1, 1, 1],
                            StridedSliceOptions(new_axis_mask=2, shrink_axis_mask=1)),
    "fewer_specs_than_dims": ((3, 4, 5), [1], [3], [1], StridedSliceOptions()),
    "offset": ((6, 7), [1, 2], [3, 4], [1, 2], StridedSliceOptions(offset=True)),
    "offset_negative_begin": ((6, 7), [-4, 0], [2, 7], [1, 1], StridedSliceOptions(offset=True)),
    "five_d": ((2, 3, 2, 3, 4), [0, 1, 0, 2, 3], [2, 3, 1, 0, 0], [1, 1, 1, -1, -2],
               StridedSliceOptions(end_mask=16)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(NAMED_SLICES))
def test_strided_slice_named(name: str, dtype: str, rng: np.random.Generator) -> None:
    shape, begin, end, strides, opts = NAMED_SLICES[name]
    check(slice_graph(shape, dtype, quant_for(dtype, rng), begin, end, strides, opts), rng)


def random_slice_spec(rng: np.random.Generator, shape: Shape) -> tuple[list[int], list[int], list[int],
                                                                        StridedSliceOptions]:
    """A random but well-formed slice of ``shape``: spec length ≤ rank, masks of every kind,
    strides ±1…3, begin/end possibly negative or out of range (shrunk axes get a valid index)."""
    rank = len(shape)
    offset = rng.random() < 0.15
    # With offset=True TFLite sizes the output from the end operand at every input axis, so the
    # spec must cover all of them (it reads out of bounds otherwise; the oracle refuses that).
    n = rank if offset else int(rng.integers(1, rank + 1))
    bits = lambda p: sum(1 << i for i in range(n) if rng.random() < p)  # noqa: E731
    shrink = bits(0.2)
    ellipsis = 0 if offset or rng.random() < 0.75 else 1 << int(rng.integers(n))
    new_axis = 0 if offset else bits(0.12) & ~ellipsis & ~shrink
    begin_mask, end_mask = bits(0.25), 0 if offset else bits(0.25)
    begin, end, strides = [], [], []
    for i in range(n):
        size = shape[min(i, rank - 1)]
        if offset:
            b0 = int(rng.integers(0, size))
            begin.append(0 if (begin_mask >> i) & 1 else b0)
            start = begin[-1]
            end.append(int(rng.integers(1, size - start + 1)))
            strides.append(int(rng.integers(1, 4)))
        elif (shrink >> i) & 1:
            # Valid for every axis: with ellipsis/new axes spec i need not address input axis i,
            # and TFLite leaves the output uninitialised for an out-of-range shrunk index.
            smallest = min(shape)
            begin.append(int(rng.integers(-smallest, smallest)))
            end.append(int(rng.integers(-size - 2, size + 3)))
            strides.append(1)
        else:
            begin.append(int(rng.integers(-size - 2, size + 3)))
            end.append(int(rng.integers(-size - 2, size + 3)))
            strides.append(int(rng.choice([-3, -2, -1, 1, 2, 3])))
    opts = StridedSliceOptions(begin_mask, end_mask, ellipsis, new_axis, shrink, offset)
    return begin, end, strides, opts


@pytest.mark.parametrize("seed", range(8))
def test_strided_slice_random(seed: int, rng: np.random.Generator) -> None:
    """40 random slices per seed (inputs up to 5-D, plus new axes).  When the interpreter refuses
    a spec, the oracle must refuse it too."""
    compared = 0
    for _ in range(40):
        rank = int(rng.integers(1, 6))
        shape = tuple(int(s) for s in rng.integers(1, 7, size=rank))
        dtype = DTYPES[int(rng.integers(3))]
        begin, end, strides, opts = random_slice_spec(rng, shape)
        make = slice_graph(shape, dtype, quant_for(dtype, rng), begin, end, strides, opts)
        try:
            shapes = tflite_output_shapes(make)
        except InterpreterError:
            graph = make([(1,)])
            with pytest.raises(OracleError):
                Oracle(graph).run([np.zeros(shape, graph.tensors[0].dtype.numpy)])
            continue
        check_against_interpreter(make(shapes), rng=rng)
        compared += 1
    assert compared >= 30, f"only {compared} of 40 random slices were compared"


# ---------------------------------------------------------------------------------------------
# CONCATENATION, SPLIT, SPLIT_V.


def concat_graph(shapes: Sequence[Shape], axis: int, dtype: str, qs: Sequence[QuantParams | None],
                 q_out: QuantParams | None, act: Activation = Activation.NONE) -> MakeGraph:
    def make(outs: Sequence[Shape]) -> Graph:
        b = GraphBuilder("concatenation")
        xs = [b.input(s, dtype, q) for s, q in zip(shapes, qs, strict=True)]
        out = b.output(outs[0], dtype, q_out)
        b.op("CONCATENATION", xs, [out], ConcatenationOptions(axis, act))
        return b.build()

    return make


CONCAT_CASES = [
    ([(3,), (5,)], 0),
    ([(2, 3), (2, 1), (2, 7)], 1),
    ([(2, 3, 4), (1, 3, 4)], -3),
    ([(1, 4, 4, 3), (1, 4, 4, 5), (1, 4, 4, 1), (1, 4, 4, 2)], -1),
    ([(1, 4, 2, 3), (1, 4, 5, 3)], 2),
    ([(2, 1, 3, 2, 5), (2, 2, 3, 2, 5)], 1),
    ([(3, 3)], 0),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(CONCAT_CASES)))
def test_concatenation_same_quantization(case: int, dtype: str, rng: np.random.Generator) -> None:
    shapes, axis = CONCAT_CASES[case]
    q = quant_for(dtype, rng)
    check(concat_graph(shapes, axis, dtype, [q] * len(shapes), q), rng)


@pytest.mark.parametrize("case", range(len(CONCAT_CASES)))
def test_concatenation_uint8_requantizes(case: int, rng: np.random.Generator) -> None:
    """uint8 inputs with their own (scale, zero point) are requantized to the output's; one input
    keeps the output's parameters and is copied."""
    shapes, axis = CONCAT_CASES[case]
    for _ in range(4):
        q_out = rand_qp(rng, "uint8")
        qs = [rand_qp(rng, "uint8") for _ in shapes]
        qs[0] = q_out
        check(concat_graph(shapes, axis, "uint8", qs, q_out), rng)


def test_concatenation_uint8_requantizes_every_value(rng: np.random.Generator) -> None:
    """Every uint8 value through the float32 rescale, with scale ratios that produce exact .5
    ties (rounded away from zero by TFLite) and random ones."""
    values = np.arange(256, dtype=np.uint8).reshape(1, 256)
    ratios = [0.5, 1.5, 2.5, 0.25] + [float(10 ** rng.uniform(-2, 2)) for _ in range(12)]
    for ratio in ratios:
        s_out = float(np.float32(10 ** rng.uniform(-3, 0)))
        q_in = QuantParams((float(np.float32(s_out * ratio)),), (int(rng.integers(0, 256)),))
        q_out = QuantParams((s_out,), (int(rng.integers(0, 256)),))
        make = concat_graph([(1, 256), (1, 256)], 0, "uint8", [q_in, q_out], q_out)
        check_against_interpreter(make([(2, 256)]), inputs=[values, values])


def test_concatenation_refusals_match_the_interpreter(rng: np.random.Generator) -> None:
    """int8 with differing parameters and any fused activation: TFLite refuses, so does the oracle."""
    q1, q2 = rand_qp(rng, "int8"), QuantParams((0.5,), (3,))
    cases = [concat_graph([(2, 3), (2, 3)], 0, "int8", [q1, q2], q1),
             concat_graph([(2, 3), (2, 3)], 0, "float32", [None, None], None, Activation.RELU)]
    for make in cases:
        graph = make([(4, 3)])
        xs = [np.zeros((2, 3), graph.tensors[0].dtype.numpy)] * 2
        with pytest.raises(InterpreterError):
            ReferenceInterpreter(write_tflite(graph))
        with pytest.raises(OracleError):
            Oracle(graph).run(xs)


def split_graph(op: str, shape: Shape, dtype: str, q: QuantParams | None, axis: int, axis_dtype: str,
                n: int, size_splits: Sequence[int] | None = None, sizes_dtype: str = "int32") -> MakeGraph:
    def make(outs: Sequence[Shape]) -> Graph:
        b = GraphBuilder(op.lower())
        axis_t = b.const(np.array([axis] if op == "SPLIT" else axis, axis_dtype))
        x = b.input(shape, dtype, q)
        ys = [b.output(s, dtype, q) for s in outs]
        if op == "SPLIT":
            b.op("SPLIT", [axis_t, x], ys, SplitOptions(n))
        else:
            sizes = b.const(np.array(size_splits, sizes_dtype))
            b.op("SPLIT_V", [x, sizes, axis_t], ys, SplitOptions(n))
        return b.build()

    return make


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,axis,n", [((6,), 0, 3), ((2, 9), 1, 3), ((4, 5, 2), -3, 2), ((1, 4, 4, 6), -1, 6),
                     ((2, 3, 4, 5, 4), 4, 2), ((3, 7), 1, 1)],
)
def test_split(shape: Shape, axis: int, n: int, dtype: str, rng: np.random.Generator) -> None:
    check(split_graph("SPLIT", shape, dtype, quant_for(dtype, rng), axis, "int32", n), rng, n_outputs=n)


@pytest.mark.parametrize("sizes_dtype", ["int32", "int64"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape,axis,sizes", [((7,), 0, [2, 5]), ((3, 10), 1, [1, -1, 4]), ((3, 10), -1, [3, 3, 3, 1]),
                         ((5, 2, 3), 0, [-1, 2]), ((1, 4, 4, 9), 3, [4, 0, 5]), ((2, 2, 13), -1, [13])],
)
def test_split_v(shape: Shape, axis: int, sizes: list[int], dtype: str, sizes_dtype: str,
                 rng: np.random.Generator) -> None:
    n = len(sizes)
    make = split_graph("SPLIT_V", shape, dtype, quant_for(dtype, rng), axis, "int32", n, sizes, sizes_dtype)
    check(make, rng, n_outputs=n)


# ---------------------------------------------------------------------------------------------
# PAD.


PAD_CASES = [
    ((5,), [[2, 3]]),
    ((3, 4), [[0, 1], [2, 0]]),
    ((2, 3, 4), [[1, 1], [0, 0], [3, 2]]),
    ((1, 5, 5, 3), [[0, 0], [1, 1], [2, 1], [0, 0]]),  # TFLite's image-style path
    ((1, 5, 5, 3), [[0, 0], [1, 1], [2, 1], [1, 2]]),  # generic path on 4-D
    ((2, 3, 2, 3, 2), [[1, 0], [0, 2], [1, 1], [0, 0], [2, 1]]),
    ((2, 3), [[0, 0], [0, 0]]),
]


@pytest.mark.parametrize("paddings_dtype", ["int32", "int64"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(PAD_CASES)))
def test_pad(case: int, dtype: str, paddings_dtype: str, rng: np.random.Generator) -> None:
    """Quantized tensors are padded with the *output* zero point, which here differs from the
    input's (the values themselves pass through unchanged)."""
    shape, paddings = PAD_CASES[case]
    q_in, q_out = quant_for(dtype, rng), quant_for(dtype, rng)

    def make(outs: Sequence[Shape]) -> Graph:
        b = GraphBuilder("pad")
        x = b.input(shape, dtype, q_in)
        out = b.output(outs[0], dtype, q_out)
        b.op("PAD", [x, b.const(np.array(paddings, paddings_dtype))], [out])
        return b.build()

    got = check(make, rng)
    if q_out is not None and any(p for pair in paddings for p in pair):
        assert (got[0] == q_out.zero_point[0]).any()
