"""The .tflite reader: every schema field reaches the IR, folding, variables, clear errors.

Models are built here with the flatbuffer object API (``ai_edge_litert.schema_py_generated``)
so that each test controls exactly which fields are written; where it matters the real TFLite
interpreter confirms that a test model is valid and computes what the reader claims (folded
shapes, strided slices, variable state).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
import pytest

from toolkit.errors import ModelError, UnsupportedOp
from toolkit.model.flatbuf import FlatBuffer
from toolkit.model.ir import (
    SUPPORTED_OPS,
    Activation,
    ActivationOptions,
    ConcatenationOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DType,
    FullyConnectedOptions,
    Graph,
    LeakyReluOptions,
    NoOptions,
    Op,
    Padding,
    Pool2DOptions,
    QuantParams,
    ReducerOptions,
    ReshapeOptions,
    SoftmaxOptions,
    SplitOptions,
    SqueezeOptions,
    StridedSliceOptions,
    Tensor,
    Variable,
    VariableOptions,
)
from toolkit.model.tflite import BUILTIN_OPERATORS, load_model, read_tflite

s = pytest.importorskip("ai_edge_litert.schema_py_generated")

_TYPES = {
    "float32": s.TensorType.FLOAT32,
    "float16": s.TensorType.FLOAT16,
    "int32": s.TensorType.INT32,
    "uint8": s.TensorType.UINT8,
    "int64": s.TensorType.INT64,
    "bool": s.TensorType.BOOL,
    "int16": s.TensorType.INT16,
    "int8": s.TensorType.INT8,
    "resource": s.TensorType.RESOURCE,
    "string": s.TensorType.STRING,
}


# ---------------------------------------------------------------------------------------------
# A thin test-side model builder over the object API.


@dataclass
class Sub:
    tensors: list[Any] = field(default_factory=list)
    ops: list[Any] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)


class ModelBuilder:
    """Builds a .tflite file; subgraph 0 is built unless ``sub`` selects another."""

    def __init__(self) -> None:
        self.buffers: list[Any] = [s.BufferT()]
        self.opcodes: list[Any] = []
        self.subs: list[Sub] = [Sub()]

    def tensor(
        self,
        shape: Sequence[int],
        dtype: str,
        name: str | None = None,
        data: Any = None,
        scale: Sequence[float] | None = None,
        zero_point: Sequence[int] | None = None,
        qdim: int = 0,
        sub: int = 0,
    ) -> int:
        t = s.TensorT()
        tensors = self.subs[sub].tensors
        t.name = name if name is not None else f"t{len(tensors)}"
        t.shape = list(shape)
        t.type = _TYPES[dtype]
        if data is not None:
            b = s.BufferT()
            b.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.buffers.append(b)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = s.QuantizationParametersT()
            q.scale = list(scale)
            q.zeroPoint = list(zero_point if zero_point is not None else [0] * len(scale))
            q.quantizedDimension = qdim
            t.quantization = q
        tensors.append(t)
        return len(tensors) - 1

    def const(self, arr: Any, dtype: str, **kw: Any) -> int:
        a = np.asarray(arr, dtype=np.dtype(dtype))
        return self.tensor(a.shape, dtype, data=a, **kw)

    def opcode(self, name: str, custom: str | None = None, deprecated: int | None = None) -> int:
        oc = s.OperatorCodeT()
        code = getattr(s.BuiltinOperator, name)
        oc.builtinCode = code
        oc.deprecatedBuiltinCode = min(code, 127) if deprecated is None else deprecated
        oc.customCode = custom
        oc.version = 1
        self.opcodes.append(oc)
        return len(self.opcodes) - 1

    def op(
        self,
        name: str,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options: Any = None,
        opcode_index: int | None = None,
        sub: int = 0,
        custom: str | None = None,
    ) -> Any:
        o = s.OperatorT()
        o.opcodeIndex = self.opcode(name, custom) if opcode_index is None else opcode_index
        o.inputs, o.outputs = list(inputs), list(outputs)
        if options is not None:
            o.builtinOptionsType = getattr(s.BuiltinOptions, type(options).__name__[:-1])
            o.builtinOptions = options
        self.subs[sub].ops.append(o)
        return o

    def io(self, inputs: Sequence[int], outputs: Sequence[int], sub: int = 0) -> None:
        self.subs[sub].inputs, self.subs[sub].outputs = list(inputs), list(outputs)

    def model(self, version: int = 3) -> Any:
        m = s.ModelT()
        m.version = version
        m.operatorCodes = self.opcodes
        m.buffers = self.buffers
        m.subgraphs = []
        for k, sub in enumerate(self.subs):
            sg = s.SubGraphT()
            sg.name = f"sub{k}"
            sg.tensors, sg.operators = sub.tensors, sub.ops
            sg.inputs, sg.outputs = sub.inputs, sub.outputs
            m.subgraphs.append(sg)
        return m

    def build(self, version: int = 3) -> bytes:
        return pack(self.model(version))


def pack(model: Any, identifier: bytes = b"TFL3") -> bytes:
    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=identifier)
    return bytes(b.Output())


def opts(cls: str, **fields: Any) -> Any:
    o = getattr(s, cls + "T")()
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def const(g: Graph, index: int) -> np.ndarray:
    data = g.tensors[index].data
    assert data is not None, f"tensor {index} is not a constant"
    return data


def interpreter(data: bytes, preserve_all_tensors: bool = False) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        model_content=data,
        experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
        experimental_preserve_all_tensors=preserve_all_tensors,
    )
    it.allocate_tensors()
    return it


def run_interpreter(data: bytes, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    it = interpreter(data)
    for d, x in zip(it.get_input_details(), inputs, strict=True):
        it.set_tensor(d["index"], x)
    it.invoke()
    return [it.get_tensor(d["index"]) for d in it.get_output_details()]


# ---------------------------------------------------------------------------------------------
# Fields reach the IR.


def test_float_model_tensors_ops_and_options() -> None:
    rng = np.random.default_rng(1)
    wv = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    mb = ModelBuilder()
    x = mb.tensor([1, 9, 9, 3], "float32", name="image")
    w = mb.const(wv, "float32", name="conv/w")
    bias = mb.const(rng.standard_normal(4), "float32", name="conv/b")
    c = mb.tensor([1, 3, 4, 4], "float32", name="conv/out")
    mb.op(
        "CONV_2D",
        [x, w, bias],
        [c],
        opts(
            "Conv2DOptions",
            padding=s.Padding.VALID,
            strideH=2,
            strideW=1,
            dilationHFactor=2,
            dilationWFactor=3,
            fusedActivationFunction=s.ActivationFunctionType.RELU6,
        ),
    )
    dw = mb.const(rng.standard_normal((1, 3, 3, 8)), "float32")
    d = mb.tensor([1, 3, 4, 8], "float32", name="dw/out")
    mb.op(
        "DEPTHWISE_CONV_2D",
        [c, dw, -1],
        [d],
        opts(
            "DepthwiseConv2DOptions",
            padding=s.Padding.SAME,
            strideH=1,
            strideW=1,
            depthMultiplier=2,
            dilationHFactor=1,
            dilationWFactor=1,
            fusedActivationFunction=s.ActivationFunctionType.RELU,
        ),
    )
    p = mb.tensor([1, 2, 2, 8], "float32", name="pool/out")
    mb.op(
        "MAX_POOL_2D",
        [d],
        [p],
        opts(
            "Pool2DOptions",
            padding=s.Padding.SAME,
            strideH=2,
            strideW=3,
            filterHeight=2,
            filterWidth=3,
            fusedActivationFunction=s.ActivationFunctionType.TANH,
        ),
    )
    fw = mb.const(rng.standard_normal((5, 32)), "float32")
    y = mb.tensor([1, 5], "float32", name="logits")
    mb.op("FULLY_CONNECTED", [p, fw, -1], [y], opts("FullyConnectedOptions", keepNumDims=True))
    y2 = mb.tensor([1, 5], "float32", name="probs")
    mb.op("SOFTMAX", [y], [y2], opts("SoftmaxOptions", beta=0.5))
    x2 = mb.tensor([-1, 5], "float32", name="second_input")  # dynamic batch → 1
    z = mb.tensor([1, 5], "float32", name="sum")
    mb.op(
        "ADD",
        [y2, x2],
        [z],
        opts("AddOptions", fusedActivationFunction=s.ActivationFunctionType.RELU_N1_TO_1),
    )
    mb.io([x, x2], [y2, z])
    data = mb.build()

    g = read_tflite(data)
    assert g.name == "model" and g.source_sha256 == hashlib.sha256(data).hexdigest()
    assert g.inputs == (x, x2) and g.outputs == (y2, z)
    assert [t.name for t in g.tensors[:3]] == ["image", "conv/w", "conv/b"]
    assert g.tensors[x].shape == (1, 9, 9, 3) and g.tensors[x2].shape == (1, 5)
    assert all(t.dtype is DType.FLOAT32 and t.quant is None for t in g.tensors)
    np.testing.assert_array_equal(g.tensors[w].data, wv)
    assert g.tensors[c].data is None and not const(g, w).flags.writeable
    assert [op.opcode for op in g.ops] == [
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "MAX_POOL_2D",
        "FULLY_CONNECTED",
        "SOFTMAX",
        "ADD",
    ]
    assert [op.index for op in g.ops] == list(range(6))
    assert [op.name for op in g.ops] == ["conv/out", "dw/out", "pool/out", "logits", "probs", "sum"]
    assert g.ops[0].inputs == (x, w, bias) and g.ops[1].inputs == (c, dw, -1)
    assert g.ops[0].options == Conv2DOptions(
        Padding.VALID, stride_h=2, stride_w=1, dilation_h=2, dilation_w=3, activation=Activation.RELU6
    )
    assert g.ops[1].options == DepthwiseConv2DOptions(
        Padding.SAME, 1, 1, depth_multiplier=2, activation=Activation.RELU
    )
    assert g.ops[2].options == Pool2DOptions(
        Padding.SAME, stride_h=2, stride_w=3, filter_h=2, filter_w=3, activation=Activation.TANH
    )
    assert g.ops[3].options == FullyConnectedOptions(Activation.NONE, keep_num_dims=True)
    assert g.ops[4].options == SoftmaxOptions(beta=0.5)
    assert g.ops[5].options == ActivationOptions(Activation.RELU_N1_TO_1)


def test_int8_model_with_per_channel_quantization() -> None:
    rng = np.random.default_rng(2)
    mb = ModelBuilder()
    xu = mb.tensor([1, 4, 4, 2], "uint8", scale=[0.5], zero_point=[128])
    x = mb.tensor([1, 4, 4, 2], "int8", scale=[0.5], zero_point=[0])
    mb.op("QUANTIZE", [xu], [x])
    wscale = [0.01, 0.02, 0.03, 0.04]
    w = mb.const(rng.integers(-127, 128, (1, 3, 3, 4)), "int8", scale=wscale, zero_point=[0] * 4, qdim=3)
    bias = mb.const(rng.integers(-1000, 1000, 4), "int32", scale=[0.5 * v for v in wscale], qdim=0)
    y = mb.tensor([1, 4, 4, 4], "int8", scale=[0.25], zero_point=[-7])
    mb.op(
        "DEPTHWISE_CONV_2D",
        [x, w, bias],
        [y],
        opts("DepthwiseConv2DOptions", padding=s.Padding.SAME, strideH=1, strideW=1, depthMultiplier=2),
    )
    yu = mb.tensor([1, 4, 4, 4], "uint8", scale=[0.25], zero_point=[121])
    mb.op("QUANTIZE", [y], [yu])
    mb.io([xu], [yu])
    g = read_tflite(mb.build())

    assert g.tensors[xu].dtype is DType.UINT8 and g.tensors[xu].quant == QuantParams((0.5,), (128,))
    wq = g.tensors[w].quant
    assert wq is not None and wq.per_channel and wq.axis == 3
    assert wq.scale == tuple(float(np.float32(v)) for v in wscale) and wq.zero_point == (0, 0, 0, 0)
    assert const(g, w).dtype == np.int8 and const(g, bias).dtype == np.int32
    assert g.tensors[y].quant == QuantParams((0.25,), (-7,))
    assert [op.opcode for op in g.ops] == ["QUANTIZE", "DEPTHWISE_CONV_2D", "QUANTIZE"]
    assert g.input_tensors[0].dtype is DType.UINT8 and g.output_tensors[0].dtype is DType.UINT8


_ACT = s.ActivationFunctionType


@pytest.mark.parametrize(
    ("opcode", "schema_options", "n_in", "n_out", "expected"),
    [
        (
            "SUB",
            opts("SubOptions", fusedActivationFunction=_ACT.RELU),
            2,
            1,
            ActivationOptions(Activation.RELU),
        ),
        (
            "MUL",
            opts("MulOptions", fusedActivationFunction=_ACT.RELU6),
            2,
            1,
            ActivationOptions(Activation.RELU6),
        ),
        ("ADD", None, 2, 1, ActivationOptions(Activation.NONE)),
        (
            "CONCATENATION",
            opts("ConcatenationOptions", axis=-1, fusedActivationFunction=_ACT.RELU),
            3,
            1,
            ConcatenationOptions(-1, Activation.RELU),
        ),
        ("SQUEEZE", opts("SqueezeOptions", squeezeDims=[0, 2]), 1, 1, SqueezeOptions((0, 2))),
        (
            "STRIDED_SLICE",
            opts(
                "StridedSliceOptions",
                beginMask=1,
                endMask=2,
                ellipsisMask=0,
                newAxisMask=0,
                shrinkAxisMask=4,
                offset=True,
            ),
            1,
            1,
            StridedSliceOptions(1, 2, 0, 0, 4, True),
        ),
        ("SPLIT", opts("SplitOptions", numSplits=3), 1, 3, SplitOptions(3)),
        ("SPLIT_V", opts("SplitVOptions", numSplits=2), 1, 2, SplitOptions(2)),
        ("MEAN", opts("ReducerOptions", keepDims=True), 1, 1, ReducerOptions(keep_dims=True)),
        ("LEAKY_RELU", opts("LeakyReluOptions", alpha=0.125), 1, 1, LeakyReluOptions(0.125)),
        (
            "AVERAGE_POOL_2D",
            opts(
                "Pool2DOptions", padding=s.Padding.VALID, strideH=1, strideW=2, filterHeight=3, filterWidth=1
            ),
            1,
            1,
            Pool2DOptions(Padding.VALID, 1, 2, 3, 1),
        ),
        ("HARD_SWISH", None, 1, 1, NoOptions()),
        ("TRANSPOSE", None, 1, 1, NoOptions()),
        ("RSQRT", None, 1, 1, NoOptions()),
    ],
)
def test_options_per_op_family(
    opcode: str, schema_options: Any, n_in: int, n_out: int, expected: Any
) -> None:
    mb = ModelBuilder()
    ins = [mb.tensor([1, 2, 3, 4], "float32") for _ in range(n_in)]
    outs = [mb.tensor([1, 2, 3, 4], "float32") for _ in range(n_out)]
    mb.op(opcode, ins, outs, schema_options)
    mb.io(ins, outs)
    (op,) = read_tflite(mb.build()).ops
    assert op.opcode == opcode and op.options == expected
    assert op.inputs == tuple(ins) and op.outputs == tuple(outs)


def test_reshape_options_come_from_the_model_and_resolve_minus_one() -> None:
    mb = ModelBuilder()
    x = mb.tensor([2, 3, 4], "float32")
    y = mb.tensor([2, 12], "float32")
    mb.op("RESHAPE", [x], [y], opts("ReshapeOptions", newShape=[2, -1]))
    mb.io([x], [y])
    (op,) = read_tflite(mb.build()).ops
    assert op.options == ReshapeOptions((2, 12))


def test_builtin_code_is_the_max_of_both_fields() -> None:
    mb = ModelBuilder()
    x, y, z = (mb.tensor([4], "float32") for _ in range(3))
    new = s.OperatorCodeT()  # a new-style op code: the deprecated field holds a placeholder
    new.builtinCode, new.deprecatedBuiltinCode, new.version = s.BuiltinOperator.HARD_SWISH, 0, 1
    old = s.OperatorCodeT()  # an old file: only the deprecated field is set
    old.builtinCode, old.deprecatedBuiltinCode, old.version = 0, s.BuiltinOperator.RELU, 1
    mb.opcodes += [new, old]
    mb.op("HARD_SWISH", [x], [y], opcode_index=0)
    mb.op("RELU", [y], [z], opcode_index=1)
    mb.io([x], [z])
    g = read_tflite(mb.build())
    assert [op.opcode for op in g.ops] == ["HARD_SWISH", "RELU"]


def test_builtin_operator_names_match_the_schema() -> None:
    for code, name in enumerate(BUILTIN_OPERATORS):
        assert getattr(s.BuiltinOperator, name) == code


def test_float16_weights_behind_dequantize_stay_as_they_are() -> None:
    w16 = (np.arange(12, dtype=np.float32).reshape(3, 4) / 8).astype(np.float16)
    mb = ModelBuilder()
    x = mb.tensor([1, 4], "float32")
    wh = mb.const(w16, "float16", name="w/f16")
    wf = mb.tensor([3, 4], "float32", name="w/f32")
    mb.op("DEQUANTIZE", [wh], [wf])
    y = mb.tensor([1, 3], "float32")
    mb.op("FULLY_CONNECTED", [x, wf, -1], [y], opts("FullyConnectedOptions"))
    mb.io([x], [y])
    data = mb.build()
    g = read_tflite(data)
    assert [op.opcode for op in g.ops] == ["DEQUANTIZE", "FULLY_CONNECTED"]
    assert g.tensors[wh].dtype is DType.FLOAT16 and const(g, wh).dtype == np.float16
    np.testing.assert_array_equal(g.tensors[wh].data, w16)
    assert g.tensors[wf].data is None
    # The model is one TFLite runs (so the reader was given a realistic file).
    xin = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(run_interpreter(data, [xin])[0], xin @ w16.astype(np.float32).T, rtol=1e-6)


def test_constants_stored_after_the_flatbuffer() -> None:
    """Buffers with offset/size (the >2 GB layout): data appended after the flatbuffer."""
    values = np.arange(24, dtype=np.int16).reshape(2, 3, 4) - 7
    raw = values.tobytes()

    def build(offset: int) -> bytes:
        mb = ModelBuilder()
        x = mb.tensor([2, 3, 4], "int16")
        c = mb.tensor([2, 3, 4], "int16", name="external")
        b = s.BufferT()
        b.offset, b.size = offset, len(raw)
        mb.buffers.append(b)
        mb.subs[0].tensors[c].buffer = len(mb.buffers) - 1
        y = mb.tensor([2, 3, 4], "int16")
        mb.op("ADD", [x, c], [y])
        mb.io([x], [y])
        return mb.build()

    size = len(build(1 << 40))  # the offset's value does not change the layout
    offset = (size + 15) // 16 * 16
    fb = build(offset)
    assert len(fb) == size
    data = fb + bytes(offset - size) + raw
    g = read_tflite(data)
    np.testing.assert_array_equal(g.tensors[1].data, values)
    with pytest.raises(ModelError, match=r"buffers\[1\]\.offset.*past the end"):
        read_tflite(data[:-1])


def test_path_input_names_the_graph(tmp_path: Any) -> None:
    mb = ModelBuilder()
    x, y = mb.tensor([3], "float32"), mb.tensor([3], "float32")
    mb.op("RELU", [x], [y])
    mb.io([x], [y])
    data = mb.build()
    path = tmp_path / "tiny_relu.tflite"
    path.write_bytes(data)
    g = load_model(path)
    assert g.name == "tiny_relu" and g.source_sha256 == hashlib.sha256(data).hexdigest()
    assert read_tflite(str(path)).ops == g.ops
    with pytest.raises(ModelError, match="cannot read model file"):
        read_tflite(tmp_path / "missing.tflite")


# ---------------------------------------------------------------------------------------------
# Constant folding.


def keras_flatten_model() -> tuple[bytes, dict[str, int]]:
    """What Keras 3 emits for Flatten: SHAPE → STRIDED_SLICE → PACK → RESHAPE, then a dense."""
    mb = ModelBuilder()
    x = mb.tensor([1, 4, 4, 8], "float32", name="features")
    shape = mb.tensor([4], "int32", name="flatten/Shape")
    mb.op("SHAPE", [x], [shape], opts("ShapeOptions", outType=s.TensorType.INT32))
    begin, end, stride = (mb.const([v], "int32") for v in (0, 1, 1))
    batch = mb.tensor([], "int32", name="flatten/strided_slice")
    mb.op(
        "STRIDED_SLICE", [shape, begin, end, stride], [batch], opts("StridedSliceOptions", shrinkAxisMask=1)
    )
    minus1 = mb.const(-1, "int32")
    packed = mb.tensor([2], "int32", name="flatten/Reshape/shape")
    mb.op("PACK", [batch, minus1], [packed], opts("PackOptions", valuesCount=2, axis=0))
    flat = mb.tensor([1, 128], "float32", name="flatten/Reshape")
    mb.op("RESHAPE", [x, packed], [flat])
    w = mb.const(np.full((3, 128), 0.01), "float32")
    y = mb.tensor([1, 3], "float32", name="dense")
    mb.op("FULLY_CONNECTED", [flat, w, -1], [y], opts("FullyConnectedOptions"))
    mb.io([x], [y])
    return mb.build(), {"x": x, "shape": shape, "batch": batch, "packed": packed, "flat": flat, "y": y}


def test_keras3_flatten_pattern_is_folded() -> None:
    data, t = keras_flatten_model()
    g = read_tflite(data)
    assert [(op.index, op.opcode) for op in g.ops] == [(0, "RESHAPE"), (1, "FULLY_CONNECTED")]
    reshape = g.ops[0]
    assert reshape.inputs == (t["x"], t["packed"]) and reshape.options == ReshapeOptions((1, 128))
    np.testing.assert_array_equal(g.tensors[t["shape"]].data, [1, 4, 4, 8])
    assert const(g, t["batch"]).shape == () and int(const(g, t["batch"])) == 1
    np.testing.assert_array_equal(g.tensors[t["packed"]].data, [1, -1])
    assert g.tensors[t["packed"]].dtype is DType.INT32
    # TFLite itself computes the same target shape from these ops.
    x = np.arange(128, dtype=np.float32).reshape(1, 4, 4, 8)
    it = interpreter(data)
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    assert tuple(it.get_tensor(t["flat"]).shape) == reshape.options.new_shape


# (input values, begin, end, strides, options) — folded by the reader and run by TFLite.
_SLICES = [
    ([1, 4, 4, 8], [1], [3], [1], {}),
    ([1, 4, 4, 8], [-1], [0], [-1], {}),
    ([1, 4, 4, 8], [-3], [0], [1], {"endMask": 1}),
    ([1, 4, 4, 8], [3], [0], [-2], {"beginMask": 1, "endMask": 1}),
    ([1, 4, 4, 8], [-1], [0], [1], {"shrinkAxisMask": 1}),
    ([1, 4, 4, 8], [1], [2], [1], {"offset": True}),
    ([5, 6, 7, 8, 9, 10], [10], [-10], [-3], {}),
]


@pytest.mark.parametrize(("values", "begin", "end", "strides", "extra"), _SLICES)
def test_folded_strided_slice_matches_tflite(
    values: list[int], begin: list[int], end: list[int], strides: list[int], extra: dict[str, Any]
) -> None:
    mb = ModelBuilder()
    x = mb.tensor([1], "float32")  # an unused input: the model computes a constant
    src = mb.const(values, "int32")
    ins = [src] + [mb.const(v, "int32") for v in (begin, end, strides)]
    out = mb.tensor([], "int32", name="sliced")
    mb.op("STRIDED_SLICE", ins, [out], opts("StridedSliceOptions", **extra))
    mb.io([x], [out])
    data = mb.build()
    g = read_tflite(data)
    assert g.ops == ()
    (expected,) = run_interpreter(data, [np.zeros(1, np.float32)])
    np.testing.assert_array_equal(g.tensors[out].data, expected)
    assert g.tensors[out].shape == expected.shape


def test_shape_concatenation_reshape_is_folded_like_tflite() -> None:
    mb = ModelBuilder()
    x = mb.tensor([1, 6, 5, 2], "float32")
    shape = mb.tensor([4], "int32")
    mb.op("SHAPE", [x], [shape], opts("ShapeOptions", outType=s.TensorType.INT32))
    tail = mb.tensor([2], "int32")
    mb.op(
        "STRIDED_SLICE",
        [shape, *(mb.const(v, "int32") for v in ([1], [3], [1]))],
        [tail],
        opts("StridedSliceOptions"),
    )
    target = mb.tensor([3], "int32")
    mb.op("CONCATENATION", [mb.const([-1], "int32"), tail], [target], opts("ConcatenationOptions", axis=0))
    y = mb.tensor([2, 6, 5], "float32")  # a stale declared shape: TFLite resizes it to (2, 6, 5)
    mb.op("RESHAPE", [x, target], [y])
    mb.io([x], [y])
    data = mb.build()
    g = read_tflite(data)
    assert [op.opcode for op in g.ops] == ["RESHAPE"]
    (out,) = run_interpreter(data, [np.zeros((1, 6, 5, 2), np.float32)])
    assert g.ops[0].options == ReshapeOptions(out.shape) == ReshapeOptions((2, 6, 5))
    assert g.tensors[y].shape == out.shape


def test_dequantize_of_a_constant_is_kept_but_other_constant_ops_fold() -> None:
    mb = ModelBuilder()
    x = mb.tensor([2, 2], "float32")
    c = mb.const([[1, 2], [3, 4]], "float32")
    r = mb.tensor([4], "float32")
    mb.op("RESHAPE", [c, mb.const([4], "int32")], [r])
    r2 = mb.tensor([2, 2], "float32")
    mb.op("RESHAPE", [r], [r2], opts("ReshapeOptions", newShape=[2, 2]))
    y = mb.tensor([2, 2], "float32")
    mb.op("ADD", [x, r2], [y])
    mb.io([x], [y])
    g = read_tflite(mb.build())
    assert [op.opcode for op in g.ops] == ["ADD"]
    np.testing.assert_array_equal(g.tensors[r2].data, [[1, 2], [3, 4]])


# ---------------------------------------------------------------------------------------------
# Streaming models.


def streaming_model(init_other: bool) -> tuple[bytes, dict[str, int]]:
    """y = x + state, y2 = y + other; state := y, other := y2.  "other" is initialised only if
    ``init_other`` (TFLite refuses to read an unassigned variable; the IR starts it at zero)."""
    mb = ModelBuilder()
    mb.subs.append(Sub())
    # Subgraph 1 ("init"): VAR_HANDLE + ASSIGN_VARIABLE of a constant.
    h1 = mb.tensor([], "resource", sub=1)
    mb.op("VAR_HANDLE", [], [h1], opts("VarHandleOptions", container="", sharedName="state"), sub=1)
    init = mb.const([[1.5, 2.5, 3.5, 4.5]], "float32", sub=1)
    mb.op("ASSIGN_VARIABLE", [h1, init], [], sub=1)
    if init_other:
        h3 = mb.tensor([], "resource", sub=1)
        mb.op("VAR_HANDLE", [], [h3], opts("VarHandleOptions", container="c", sharedName="other"), sub=1)
        mb.op("ASSIGN_VARIABLE", [h3, mb.const([[10, 20, 30, 40]], "float32", sub=1)], [], sub=1)
    # Subgraph 0: CALL_ONCE(1), VAR_HANDLE → READ_VARIABLE / ASSIGN_VARIABLE.
    x = mb.tensor([1, 4], "float32", name="x")
    mb.op("CALL_ONCE", [], [], opts("CallOnceOptions", initSubgraphIndex=1))
    h = mb.tensor([], "resource", name="state/handle")
    mb.op("VAR_HANDLE", [], [h], opts("VarHandleOptions", container="", sharedName="state"))
    h2 = mb.tensor([], "resource", name="other/handle")
    mb.op("VAR_HANDLE", [], [h2], opts("VarHandleOptions", container="c", sharedName="other"))
    st = mb.tensor([1, 4], "float32", name="state/read")
    mb.op("READ_VARIABLE", [h], [st])
    o = mb.tensor([1, 4], "float32", name="other/read")
    mb.op("READ_VARIABLE", [h2], [o])
    y = mb.tensor([1, 4], "float32", name="y")
    mb.op("ADD", [x, st], [y])
    y2 = mb.tensor([1, 4], "float32", name="y2")
    mb.op("ADD", [y, o], [y2])
    mb.op("ASSIGN_VARIABLE", [h, y], [])
    mb.op("ASSIGN_VARIABLE", [h2, y2], [])
    mb.io([x], [y2])
    return mb.build(), {"x": x, "st": st, "o": o, "y": y, "y2": y2, "h": h}


@pytest.mark.parametrize("init_other", [False, True])
def test_streaming_model_variables_are_resolved(init_other: bool) -> None:
    data, t = streaming_model(init_other)
    g = read_tflite(data)
    assert g.is_stateful and len(g.variables) == 2
    state, other = g.variables
    assert (state.index, state.name, state.shape, state.dtype) == (0, "state", (1, 4), DType.FLOAT32)
    np.testing.assert_array_equal(state.initial, [[1.5, 2.5, 3.5, 4.5]])
    assert (other.index, other.name) == (1, "c/other")
    np.testing.assert_array_equal(other.initial, [[10, 20, 30, 40]] if init_other else np.zeros((1, 4)))
    assert [(op.index, op.opcode, op.inputs, op.outputs, op.options) for op in g.ops] == [
        (0, "READ_VARIABLE", (), (t["st"],), VariableOptions(0)),
        (1, "READ_VARIABLE", (), (t["o"],), VariableOptions(1)),
        (2, "ADD", (t["x"], t["st"]), (t["y"],), ActivationOptions()),
        (3, "ADD", (t["y"], t["o"]), (t["y2"],), ActivationOptions()),
        (4, "ASSIGN_VARIABLE", (t["y"],), (), VariableOptions(0)),
        (5, "ASSIGN_VARIABLE", (t["y2"],), (), VariableOptions(1)),
    ]
    assert g.tensors[t["h"]].dtype is DType.RESOURCE  # handle tensors stay (indices are kept)
    if not init_other:
        return
    # The interpreter agrees that this is the state the model carries: y2 = x + state + other.
    it = interpreter(data)
    x = np.array([[1, 1, 1, 1]], np.float32)
    state_v, other_v = state.initial.copy(), other.initial.copy()
    for _ in range(3):
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        y = x + state_v
        y2 = y + other_v
        np.testing.assert_allclose(it.get_tensor(it.get_output_details()[0]["index"]), y2)
        state_v, other_v = y, y2


def test_streaming_init_subgraph_must_assign_constants() -> None:
    mb = ModelBuilder()
    mb.subs.append(Sub())
    h1 = mb.tensor([], "resource", sub=1)
    mb.op("VAR_HANDLE", [], [h1], opts("VarHandleOptions", sharedName="v"), sub=1)
    a = mb.tensor([2], "float32", sub=1)
    mb.io([a], [], sub=1)
    mb.op("ASSIGN_VARIABLE", [h1, a], [], sub=1)
    mb.op("CALL_ONCE", [], [], opts("CallOnceOptions", initSubgraphIndex=1))
    h = mb.tensor([], "resource")
    mb.op("VAR_HANDLE", [], [h], opts("VarHandleOptions", sharedName="v"))
    r = mb.tensor([2], "float32")
    mb.op("READ_VARIABLE", [h], [r])
    mb.io([], [r])
    with pytest.raises(UnsupportedOp, match="non-constant"):
        read_tflite(mb.build())


def test_call_once_with_a_missing_subgraph_is_a_model_error() -> None:
    mb = ModelBuilder()
    mb.op("CALL_ONCE", [], [], opts("CallOnceOptions", initSubgraphIndex=5))
    h = mb.tensor([], "resource")
    mb.op("VAR_HANDLE", [], [h], opts("VarHandleOptions", sharedName="v"))
    r = mb.tensor([2], "float32")
    mb.op("READ_VARIABLE", [h], [r])
    mb.io([], [r])
    with pytest.raises(ModelError, match=r"operators\[0\]\.builtin_options\.init_subgraph_index"):
        read_tflite(mb.build())


# ---------------------------------------------------------------------------------------------
# Unsupported operators.


def test_unsupported_op_names_op_index_and_supported_list() -> None:
    mb = ModelBuilder()
    x, y, z = mb.tensor([4], "float32"), mb.tensor([4], "float32"), mb.tensor([2], "float32")
    mb.op("RELU", [x], [y])
    mb.op("GATHER", [y, mb.const([0, 2], "int32")], [z], opts("GatherOptions", axis=0))
    mb.io([x], [z])
    with pytest.raises(UnsupportedOp) as info:
        read_tflite(mb.build())
    assert (info.value.op_name, info.value.index, info.value.supported) == ("GATHER", 1, SUPPORTED_OPS)
    assert "GATHER at index 1" in str(info.value) and "CONV_2D" in str(info.value)


def test_custom_op_is_named_by_its_custom_code() -> None:
    mb = ModelBuilder()
    x, y = mb.tensor([4], "float32"), mb.tensor([4], "float32")
    mb.op("CUSTOM", [x], [y], custom="TFLite_Detection_PostProcess")
    mb.io([x], [y])
    with pytest.raises(UnsupportedOp) as info:
        read_tflite(mb.build())
    assert info.value.op_name == "TFLite_Detection_PostProcess" and info.value.index == 0


def test_custom_op_named_like_a_builtin_is_still_unsupported() -> None:
    mb = ModelBuilder()
    x, y = mb.tensor([4], "float32"), mb.tensor([4], "float32")
    mb.op("CUSTOM", [x], [y], custom="RELU")
    mb.io([x], [y])
    with pytest.raises(UnsupportedOp, match="custom operator"):
        read_tflite(mb.build())


# ---------------------------------------------------------------------------------------------
# Malformed files.


def small_model() -> bytes:
    mb = ModelBuilder()
    x = mb.tensor([1, 4], "int8", name="in", scale=[0.1], zero_point=[3])
    w = mb.const(np.arange(8).reshape(2, 4), "int8", scale=[0.5, 0.25], qdim=0)
    y = mb.tensor([1, 2], "int8", name="out", scale=[0.2], zero_point=[-1])
    mb.op(
        "FULLY_CONNECTED", [x, w, -1], [y], opts("FullyConnectedOptions", fusedActivationFunction=_ACT.RELU)
    )
    mb.io([x], [y])
    return mb.build()


def test_small_model_is_valid() -> None:
    g = read_tflite(small_model())
    assert [op.opcode for op in g.ops] == ["FULLY_CONNECTED"]
    interpreter(small_model())  # TFLite accepts it too


def test_every_truncation_is_a_model_error() -> None:
    data = small_model()
    for n in range(len(data)):
        with pytest.raises(ModelError):
            read_tflite(data[:n])


def test_wrong_identifier() -> None:
    data = bytearray(small_model())
    data[4:8] = b"TFL2"
    with pytest.raises(ModelError, match=r"identifier at byte 4 is b'TFL2', expected b'TFL3'"):
        read_tflite(bytes(data))


def test_wrong_schema_version() -> None:
    mb = ModelBuilder()
    with pytest.raises(ModelError, match="schema version 2, expected 3"):
        read_tflite(mb.build(version=2))


def test_empty_text_and_random_files() -> None:
    with pytest.raises(ModelError, match="empty file"):
        read_tflite(b"")
    with pytest.raises(ModelError, match="text file"):
        read_tflite(b"This is not a model, just some words in a text file.\n" * 3)
    with pytest.raises(ModelError, match="zip archive"):
        read_tflite(b"PK\x03\x04" + bytes(60))
    rng = np.random.default_rng(7)
    for size in (1, 7, 8, 64, 1000, 100_000):
        with pytest.raises(ModelError):
            read_tflite(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    for size in (8, 64, 1000):  # random bytes that carry the right identifier
        junk = bytearray(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        junk[4:8] = b"TFL3"
        with pytest.raises(ModelError):
            read_tflite(bytes(junk))


def _root_vector(data: bytes, vtable_offset: int) -> int:
    """Position of the first element of one of Model's vectors, found with the generated code."""
    m = s.Model.GetRootAs(data, 0)
    o = m._tab.Offset(vtable_offset)
    assert o != 0
    return int(m._tab.Vector(o))


def test_out_of_range_root_offset() -> None:
    data = bytearray(small_model())
    data[0:4] = (len(data) + 100).to_bytes(4, "little")
    with pytest.raises(ModelError, match=r"root table.*past the end"):
        read_tflite(bytes(data))


def test_out_of_range_vtable() -> None:
    data = bytearray(small_model())
    root = int.from_bytes(data[0:4], "little")
    data[root : root + 4] = (-(1 << 30)).to_bytes(4, "little", signed=True)
    with pytest.raises(ModelError, match="vtable offset points to byte"):
        read_tflite(bytes(data))


def test_huge_vector_length_is_refused_without_allocating() -> None:
    data = bytearray(small_model())
    start = _root_vector(bytes(data), 8)  # Model.subgraphs
    data[start - 4 : start] = (0xFFFFFFF0).to_bytes(4, "little")
    with pytest.raises(ModelError, match=r"subgraphs at byte \d+: vector of 4294967280 4-byte elements"):
        read_tflite(bytes(data))


def test_table_offset_past_the_end() -> None:
    data = bytearray(small_model())
    start = _root_vector(bytes(data), 12)  # Model.buffers
    data[start + 4 : start + 8] = (len(data)).to_bytes(4, "little")  # buffers[1]
    with pytest.raises(ModelError, match=r"buffers\[1\] at byte \d+: offset to a table points to byte"):
        read_tflite(bytes(data))


def _patched_small_model(patch: Any) -> bytes:
    """small_model() after ``patch(model_t)`` on its object-API form."""
    m = s.ModelT.InitFromPackedBuf(small_model(), 0)
    patch(m)
    return pack(m)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            lambda m: setattr(m.subgraphs[0].operators[0], "inputs", [0, 9, -1]),
            r"subgraphs\[0\]\.operators\[0\]\.inputs\[1\]: tensor index 9 out of range",
        ),
        (
            lambda m: setattr(m.subgraphs[0].operators[0], "outputs", [-1]),
            r"subgraphs\[0\]\.operators\[0\]\.outputs\[0\]: tensor index -1 out of range",
        ),
        (lambda m: setattr(m.subgraphs[0], "inputs", [5]), r"subgraphs\[0\]\.inputs\[0\]"),
        (
            lambda m: setattr(m.subgraphs[0].operators[0], "opcodeIndex", 3),
            r"operators\[0\]\.opcode_index: op-code index 3 out of range",
        ),
        (
            lambda m: setattr(m.subgraphs[0].tensors[1], "buffer", 99),
            r"tensors\[1\]\.buffer: buffer index 99",
        ),
        (lambda m: setattr(m.subgraphs[0].tensors[1], "shape", [2, 5]), r"buffer holds 8 bytes.*needs 10"),
        (lambda m: setattr(m.subgraphs[0].tensors[0], "shape", [1, -4]), r"tensors\[0\]\.shape: dimension 1"),
        (lambda m: setattr(m.subgraphs[0].tensors[0], "type", s.TensorType.STRING), "tensor type STRING"),
        (
            lambda m: setattr(m.subgraphs[0].tensors[1].quantization, "quantizedDimension", 1),
            r"quantization\.scale: 2 per-channel scales, but dimension 1",
        ),
        (
            lambda m: setattr(m.subgraphs[0].tensors[1].quantization, "zeroPoint", [0]),
            r"1 zero points for 2 scales",
        ),
        (
            lambda m: setattr(
                m.subgraphs[0].operators[0], "builtinOptionsType", s.BuiltinOptions.Conv2DOptions
            ),
            r"operators\[0\]\.builtin_options_type: FULLY_CONNECTED carries options of union type 1",
        ),
        (
            lambda m: setattr(m.subgraphs[0].operators[0].builtinOptions, "fusedActivationFunction", 9),
            r"builtin_options\.fused_activation_function: unknown ActivationFunctionType 9",
        ),
        (lambda m: setattr(m, "subgraphs", []), "no subgraphs"),
        (
            lambda m: setattr(m.subgraphs[0].operators[0], "inputs", [2, 1, -1]),
            r"operator 0 \(FULLY_CONNECTED\) reads tensor 2 \('out'\) before any operator writes it",
        ),
        (
            lambda m: setattr(m.subgraphs[0].operators[0], "outputs", [1]),
            r"writes tensor 1 .*which is a constant",
        ),
    ],
)
def test_malformed_fields_are_named(patch: Any, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        read_tflite(_patched_small_model(patch))


def test_invalid_conv_options_are_model_errors() -> None:
    for fields, message in [
        ({"strideH": 0, "strideW": 1}, r"builtin_options\.stride_h: must be >= 1, got 0"),
        ({"strideH": 1, "strideW": 1, "padding": 5}, r"builtin_options\.padding: unknown Padding value 5"),
        ({"strideH": 1, "strideW": 1, "dilationWFactor": -2}, r"dilation_w_factor: must be >= 1"),
    ]:
        mb = ModelBuilder()
        x = mb.tensor([1, 3, 3, 1], "float32")
        w = mb.const(np.ones((1, 1, 1, 1)), "float32")
        y = mb.tensor([1, 3, 3, 1], "float32")
        mb.op("CONV_2D", [x, w, -1], [y], opts("Conv2DOptions", **fields))
        mb.io([x], [y])
        with pytest.raises(ModelError, match=message):
            read_tflite(mb.build())


def test_shared_vectors_cannot_blow_up_decoding() -> None:
    """10,000 tables that all reference one 10,000-element vector: decoding every one of them
    would produce 10^8 ints from a ~100 kB file; the budget stops it with a ModelError."""
    b = flatbuffers.Builder(0)
    vec = b.CreateNumpyVector(np.arange(10_000, dtype=np.int32))
    tables = []
    for _ in range(10_000):
        b.StartObject(1)
        b.PrependUOffsetTRelativeSlot(0, vec, 0)
        tables.append(b.EndObject())
    b.StartVector(4, len(tables), 4)
    for t in reversed(tables):
        b.PrependUOffsetTRelative(t)
    items = b.EndVector()
    b.StartObject(1)
    b.PrependUOffsetTRelativeSlot(0, items, 0)
    b.Finish(b.EndObject())
    fb = FlatBuffer(bytes(b.Output()), "shared.bin")
    root = fb.root()
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="more data than"):
        for t in root.tables(0, "items"):
            t.ints(0, "values")
    assert time.perf_counter() - t0 < 5.0


# ---------------------------------------------------------------------------------------------
# Round trip through the IR writer and speed.


def _writer() -> Any:
    return pytest.importorskip("toolkit.model.tflite_writer").write_tflite


def _tensor(
    index: int,
    shape: tuple[int, ...],
    dtype: DType,
    quant: QuantParams | None = None,
    data: np.ndarray | None = None,
    name: str = "",
) -> Tensor:
    return Tensor(index, name or f"t{index}", shape, dtype, quant, data)


def _roundtrip_graphs() -> list[Graph]:
    rng = np.random.default_rng(11)
    q = QuantParams((0.05,), (-2,))
    wq = QuantParams((0.01, 0.02, 0.03), (0, 0, 0), axis=0)
    conv = Graph(
        "conv",
        (
            _tensor(0, (1, 6, 6, 2), DType.INT8, q),
            _tensor(1, (3, 3, 3, 2), DType.INT8, wq, rng.integers(-127, 128, (3, 3, 3, 2)).astype(np.int8)),
            _tensor(
                2,
                (3,),
                DType.INT32,
                QuantParams((5e-4, 1e-3, 1.5e-3), (0, 0, 0)),
                rng.integers(-99, 99, 3).astype(np.int32),
            ),
            _tensor(3, (1, 3, 3, 3), DType.INT8, q),
            _tensor(4, (1, 27), DType.INT8, q),
            _tensor(5, (2,), DType.INT32, None, np.array([1, 27], np.int32)),
            _tensor(6, (1, 27), DType.INT8, QuantParams((1 / 256,), (-128,))),
        ),
        (
            Op(0, "CONV_2D", (0, 1, 2), (3,), Conv2DOptions(Padding.SAME, 2, 2, 1, 1, Activation.RELU)),
            Op(1, "RESHAPE", (3, 5), (4,), ReshapeOptions((1, 27))),
            Op(2, "SOFTMAX", (4,), (6,), SoftmaxOptions(1.0)),
        ),
        (0,),
        (6,),
    )
    stream = Graph(
        "stream",
        (
            _tensor(0, (1, 3), DType.FLOAT32),
            _tensor(1, (1, 3), DType.FLOAT32),
            _tensor(2, (1, 3), DType.FLOAT32),
        ),
        (
            Op(0, "READ_VARIABLE", (), (1,), VariableOptions(0)),
            Op(1, "ADD", (0, 1), (2,), ActivationOptions(Activation.NONE)),
            Op(2, "ASSIGN_VARIABLE", (2,), (), VariableOptions(0)),
        ),
        (0,),
        (2,),
        (Variable(0, "acc", (1, 3), DType.FLOAT32, None, np.array([[1.0, 2.0, 3.0]], np.float32)),),
    )
    return [conv, stream]


@pytest.mark.parametrize("graph", _roundtrip_graphs(), ids=lambda g: g.name)
def test_read_of_written_graph_preserves_structure(graph: Graph) -> None:
    back = read_tflite(_writer()(graph))
    assert back.inputs == graph.inputs and back.outputs == graph.outputs
    for a, b in zip(graph.tensors, back.tensors[: len(graph.tensors)], strict=True):
        assert (a.index, a.name, a.shape, a.dtype) == (b.index, b.name, b.shape, b.dtype)
        assert (a.quant is None) == (b.quant is None)
        if a.quant is not None and b.quant is not None:
            np.testing.assert_array_equal(np.float32(a.quant.scale), np.float32(b.quant.scale))  # type: ignore[arg-type]
            assert (a.quant.zero_point, a.quant.axis) == (b.quant.zero_point, b.quant.axis)
        assert (a.data is None) == (b.data is None)
        if a.data is not None:
            np.testing.assert_array_equal(a.data, b.data)
    assert [(op.opcode, op.inputs, op.outputs, op.options) for op in back.ops] == [
        (op.opcode, op.inputs, op.outputs, op.options) for op in graph.ops
    ]
    # (Variable names become the file's shared names, which the writer makes unique.)
    assert [(v.index, v.shape, v.dtype) for v in back.variables] == [
        (v.index, v.shape, v.dtype) for v in graph.variables
    ]
    for va, vb in zip(graph.variables, back.variables, strict=True):
        np.testing.assert_array_equal(va.initial, vb.initial)


def test_large_model_reads_fast() -> None:
    """~4 MB of weights and 600 ops: the reader must not touch constants byte by byte."""
    rng = np.random.default_rng(5)
    mb = ModelBuilder()
    fc, relu = mb.opcode("FULLY_CONNECTED"), mb.opcode("RELU")
    x = mb.tensor([1, 1024], "int8", scale=[0.1], zero_point=[0])
    cur = x
    for _ in range(4):
        w = mb.const(rng.integers(-127, 128, (1024, 1024)), "int8", scale=[0.01] * 1024, qdim=0)
        y = mb.tensor([1, 1024], "int8", scale=[0.1], zero_point=[0])
        mb.op("FULLY_CONNECTED", [cur, w, -1], [y], opts("FullyConnectedOptions"), opcode_index=fc)
        cur = y
    for _ in range(600):
        y = mb.tensor([1, 1024], "int8", scale=[0.1], zero_point=[0])
        mb.op("RELU", [cur], [y], opcode_index=relu)
        cur = y
    mb.io([x], [cur])
    data = mb.build()
    assert len(data) > 4_000_000
    read_tflite(data)  # warm-up (imports)
    t0 = time.perf_counter()
    g = read_tflite(data)
    elapsed = time.perf_counter() - t0
    assert len(g.ops) == 604
    assert elapsed < 1.0, f"reading a {len(data)}-byte model took {elapsed:.2f} s"


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "uint8", "int16", "int32", "int64", "bool"])
def test_constant_of_every_dtype(dtype: str) -> None:
    values = (np.arange(-3, 9).reshape(3, 4) % 5).astype(dtype)
    mb = ModelBuilder()
    x = mb.tensor([3, 4], dtype)
    c = mb.const(values, dtype)
    y = mb.tensor([3, 4], dtype)
    mb.op("MAXIMUM", [x, c], [y])
    mb.io([x], [y])
    t = read_tflite(mb.build()).tensors[c]
    assert t.data is not None and t.data.dtype == np.dtype(dtype)
    assert t.dtype is DType(dtype) and t.shape == (3, 4)
    np.testing.assert_array_equal(t.data, values)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_supported_ops_on_constants_are_folded_like_tflite(dtype: str) -> None:
    """ADD of two constants is evaluated at import (by the oracle's kernel) to TFLite's values."""
    pytest.importorskip("toolkit.oracle.kernels")
    rng = np.random.default_rng(3)
    q: dict[str, dict[str, Any]] = {
        "a": {"scale": [0.05], "zero_point": [3]},
        "b": {"scale": [0.02], "zero_point": [-5]},
        "y": {"scale": [0.07], "zero_point": [1]},
    }
    if dtype == "float32":
        q = {k: {} for k in q}
        a_val, b_val = rng.standard_normal((2, 3)), rng.standard_normal(3)
    else:
        a_val, b_val = rng.integers(-128, 128, (2, 3)), rng.integers(-128, 128, 3)
    mb = ModelBuilder()
    x = mb.tensor([1], dtype, **q["a"])  # an unused input: the model computes a constant
    a = mb.const(a_val, dtype, **q["a"])
    b = mb.const(b_val, dtype, **q["b"])
    y = mb.tensor([2, 3], dtype, name="sum", **q["y"])
    mb.op("ADD", [a, b], [y], opts("AddOptions"))
    mb.io([x], [y])
    data = mb.build()
    g = read_tflite(data)
    assert g.ops == ()
    (expected,) = run_interpreter(data, [np.zeros(1, np.dtype(dtype))])
    np.testing.assert_array_equal(const(g, y), expected)


# ---------------------------------------------------------------------------------------------
# Tensor for tensor against the interpreter, on the example models (real converter output).

_EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples" / "models").glob("*.tflite"))


def _built_models() -> list[tuple[str, bytes]]:
    return [
        ("small_int8", small_model()),
        ("keras_flatten", keras_flatten_model()[0]),
        ("streaming", streaming_model(init_other=True)[0]),
    ]


@pytest.mark.parametrize(
    ("name", "data"),
    [*_built_models(), *((p.name, p.read_bytes()) for p in _EXAMPLES)],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_tensors_agree_with_the_interpreter(name: str, data: bytes) -> None:
    """Every subgraph-0 tensor: same index, name, dtype, shape, quantization and constant data
    (also of tensors the reader folded) as the TFLite interpreter reports; graph inputs/outputs
    are the interpreter's."""
    g = read_tflite(data, name=name)
    it = interpreter(data, preserve_all_tensors=True)
    for d in it.get_input_details():  # run once so that the tensors the reader folded are computed
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    it.invoke()
    assert [d["index"] for d in it.get_input_details()] == list(g.inputs)
    assert [d["index"] for d in it.get_output_details()] == list(g.outputs)
    details = it.get_tensor_details()
    assert len(details) == len(g.tensors)
    for d in details:
        t = g.tensors[d["index"]]
        assert t.name == d["name"]
        if t.dtype is not DType.RESOURCE:
            assert t.dtype.numpy == np.dtype(d["dtype"]), t.name
            assert t.shape == tuple(int(v) for v in d["shape"]), t.name
        qp = d["quantization_parameters"]
        if t.quant is None:
            assert qp["scales"].size == 0, t.name
        else:
            np.testing.assert_array_equal(np.float32(t.quant.scale), qp["scales"], err_msg=t.name)
            assert list(t.quant.zero_point) == qp["zero_points"].tolist(), t.name
            assert t.quant.axis == qp["quantized_dimension"], t.name
        if t.data is not None and t.dtype is not DType.RESOURCE:
            np.testing.assert_array_equal(t.data, it.get_tensor(d["index"]), err_msg=t.name)
    assert all(op.opcode in SUPPORTED_OPS for op in g.ops)
