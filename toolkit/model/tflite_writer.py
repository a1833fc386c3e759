"""Serialize an IR :class:`~toolkit.model.ir.Graph` to .tflite bytes.

Used to export models and, above all, by the tests: single-op graphs built in Python are written
here and run in the real TFLite interpreter to check the oracle.  The flatbuffer object API of
``ai_edge_litert.schema_py_generated`` does the encoding (imported lazily: it is a large module).

Contracts:

* Subgraph 0 holds the IR tensors in index order, so IR tensor ``i`` is TFLite tensor ``i`` (the
  reader relies on the same identity).  Extra tensors the file format needs (resource handles of
  streaming models) are appended after them.
* Buffer 0 is the empty sentinel; every constant gets its own buffer, little-endian.
* Per-channel quantization is written with ``quantized_dimension = QuantParams.axis``.
* Streaming models are written as the TFLite converter writes them: subgraph 1 ("init") runs
  ``VAR_HANDLE`` + ``ASSIGN_VARIABLE`` of each variable's initial value; subgraph 0 starts with
  ``CALL_ONCE(init)`` and one ``VAR_HANDLE`` per variable whose resource tensor feeds the
  ``READ_VARIABLE``/``ASSIGN_VARIABLE`` ops.  TFLite operator indices therefore differ from IR
  op indices in streaming models (tensor indices do not).
* Op-code versions follow the converter's rules for the input type (int8 → 2 or 3, int16
  higher).  The version only has to lie in the range the op resolver registers: on
  ai-edge-litert 2.3 every test graph gives identical results with version 1 and with these
  versions, under both the reference and the optimized resolver (checked once by hand; the
  tests check that every op loads with the versions written here).
* ADD/SUB on int16 are written with ``pot_scale_int16 = false``: the general-scale int16 path the
  converter emits for 16x8 quantization.  The schema default ``true`` makes TFLite take a
  power-of-two path when all scales are powers of two, which has other constraints and which the
  IR does not model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from toolkit.errors import ModelError, UnsupportedOp
from toolkit.model.ir import (
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
    PackOptions,
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
    VariableOptions,
)

TFLITE_SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"
# Builtin codes ≥ this value are stored in ``builtin_code`` only; the deprecated int8 field holds
# PLACEHOLDER_FOR_GREATER_OP_CODES (127).
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127


class TFLiteWriteError(ModelError):
    """The graph cannot be expressed as a valid .tflite file (dangling variable, bad operand…)."""


def _schema() -> ModuleType:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


_TENSOR_TYPES = {
    DType.FLOAT32: "FLOAT32",
    DType.FLOAT16: "FLOAT16",
    DType.INT8: "INT8",
    DType.UINT8: "UINT8",
    DType.INT16: "INT16",
    DType.INT32: "INT32",
    DType.INT64: "INT64",
    DType.BOOL: "BOOL",
    DType.RESOURCE: "RESOURCE",
}


# ---------------------------------------------------------------------------------------------
# Op-code versions.  Keyed by the op's first (non-absent) input dtype.

_QUANT_VERSIONS: dict[str, tuple[int, int]] = {
    # opcode: (int8/uint8 version, int16 version)
    "CONV_2D": (3, 4),
    "DEPTHWISE_CONV_2D": (3, 5),
    "FULLY_CONNECTED": (4, 7),
    "AVERAGE_POOL_2D": (2, 3),
    "MAX_POOL_2D": (2, 3),
    "ADD": (2, 3),
    "SUB": (2, 3),
    "MUL": (2, 4),
    "CONCATENATION": (2, 3),
    "SOFTMAX": (2, 3),
    "STRIDED_SLICE": (2, 4),
    "SPLIT": (2, 4),
    "SPLIT_V": (2, 2),
    "MEAN": (2, 3),
    "TANH": (2, 3),
    "LOGISTIC": (2, 3),
    "RELU": (2, 3),
    "RELU6": (2, 3),
    "LEAKY_RELU": (2, 2),
    "MAXIMUM": (2, 4),
    "MINIMUM": (2, 4),
    "PAD": (2, 4),
    "TRANSPOSE": (2, 5),
    "ABS": (2, 3),
    "RSQRT": (2, 2),
    "DEQUANTIZE": (2, 4),
}


def op_version(opcode: str, input_dtype: DType | None) -> int:
    """The op-code version the converter would write for ``opcode`` on ``input_dtype``."""
    if opcode == "QUANTIZE":
        # Float → int is version 1; requantization (int → int) needs version 2.
        return 2 if input_dtype is not None and input_dtype.is_quantized_type else 1
    if opcode == "DEQUANTIZE" and input_dtype is DType.FLOAT16:
        return 3
    versions = _QUANT_VERSIONS.get(opcode)
    if versions is None or input_dtype is None:
        return 1
    if input_dtype in (DType.INT8, DType.UINT8):
        return versions[0]
    if input_dtype is DType.INT16:
        return versions[1]
    return 1


# ---------------------------------------------------------------------------------------------
# Options.


_ACTIVATIONS = {
    Activation.NONE: "NONE",
    Activation.RELU: "RELU",
    Activation.RELU_N1_TO_1: "RELU_N1_TO_1",
    Activation.RELU6: "RELU6",
    Activation.TANH: "TANH",
    Activation.SIGN_BIT: "SIGN_BIT",
}


def _act(s: ModuleType, a: Activation) -> int:
    return int(getattr(s.ActivationFunctionType, _ACTIVATIONS[a]))


def _pad(s: ModuleType, p: Padding) -> int:
    return int(getattr(s.Padding, p.value))


def _conv(s: ModuleType, o: Conv2DOptions) -> Any:
    t = s.Conv2DOptionsT()
    t.padding, t.strideH, t.strideW = _pad(s, o.padding), o.stride_h, o.stride_w
    t.dilationHFactor, t.dilationWFactor = o.dilation_h, o.dilation_w
    t.fusedActivationFunction = _act(s, o.activation)
    return t


def _dwconv(s: ModuleType, o: DepthwiseConv2DOptions) -> Any:
    t = s.DepthwiseConv2DOptionsT()
    t.padding, t.strideH, t.strideW = _pad(s, o.padding), o.stride_h, o.stride_w
    t.dilationHFactor, t.dilationWFactor = o.dilation_h, o.dilation_w
    t.depthMultiplier = o.depth_multiplier
    t.fusedActivationFunction = _act(s, o.activation)
    return t


def _fc(s: ModuleType, o: FullyConnectedOptions) -> Any:
    t = s.FullyConnectedOptionsT()
    t.fusedActivationFunction = _act(s, o.activation)
    t.keepNumDims = o.keep_num_dims
    return t


def _pool(s: ModuleType, o: Pool2DOptions) -> Any:
    t = s.Pool2DOptionsT()
    t.padding, t.strideH, t.strideW = _pad(s, o.padding), o.stride_h, o.stride_w
    t.filterHeight, t.filterWidth = o.filter_h, o.filter_w
    t.fusedActivationFunction = _act(s, o.activation)
    return t


def _concat(s: ModuleType, o: ConcatenationOptions) -> Any:
    t = s.ConcatenationOptionsT()
    t.axis, t.fusedActivationFunction = o.axis, _act(s, o.activation)
    return t


def _reshape(s: ModuleType, o: ReshapeOptions) -> Any:
    t = s.ReshapeOptionsT()
    t.newShape = [int(d) for d in o.new_shape]
    return t


def _squeeze(s: ModuleType, o: SqueezeOptions) -> Any:
    t = s.SqueezeOptionsT()
    t.squeezeDims = [int(d) for d in o.squeeze_dims]
    return t


def _strided_slice(s: ModuleType, o: StridedSliceOptions) -> Any:
    t = s.StridedSliceOptionsT()
    t.beginMask, t.endMask, t.ellipsisMask = o.begin_mask, o.end_mask, o.ellipsis_mask
    t.newAxisMask, t.shrinkAxisMask, t.offset = o.new_axis_mask, o.shrink_axis_mask, o.offset
    return t


def _reducer(s: ModuleType, o: ReducerOptions) -> Any:
    t = s.ReducerOptionsT()
    t.keepDims = o.keep_dims
    return t


def _softmax(s: ModuleType, o: SoftmaxOptions) -> Any:
    t = s.SoftmaxOptionsT()
    t.beta = o.beta
    return t


def _leaky(s: ModuleType, o: LeakyReluOptions) -> Any:
    t = s.LeakyReluOptionsT()
    t.alpha = o.alpha
    return t


def _pack(s: ModuleType, o: PackOptions) -> Any:
    t = s.PackOptionsT()
    t.valuesCount, t.axis = o.values_count, o.axis
    return t


# Option dataclass → (builder, {opcode: BuiltinOptions union member}).  An option dataclass
# used with an opcode not listed here is an error (it would be silently dropped otherwise).
_OPTION_WRITERS: dict[type, tuple[Callable[[ModuleType, Any], Any], dict[str, str]]] = {
    Conv2DOptions: (_conv, {"CONV_2D": "Conv2DOptions"}),
    DepthwiseConv2DOptions: (_dwconv, {"DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions"}),
    FullyConnectedOptions: (_fc, {"FULLY_CONNECTED": "FullyConnectedOptions"}),
    Pool2DOptions: (_pool, {"AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions"}),
    ConcatenationOptions: (_concat, {"CONCATENATION": "ConcatenationOptions"}),
    ReshapeOptions: (_reshape, {"RESHAPE": "ReshapeOptions"}),
    SqueezeOptions: (_squeeze, {"SQUEEZE": "SqueezeOptions"}),
    StridedSliceOptions: (_strided_slice, {"STRIDED_SLICE": "StridedSliceOptions"}),
    ReducerOptions: (_reducer, {"MEAN": "ReducerOptions", "SUM": "ReducerOptions"}),
    SoftmaxOptions: (_softmax, {"SOFTMAX": "SoftmaxOptions"}),
    LeakyReluOptions: (_leaky, {"LEAKY_RELU": "LeakyReluOptions"}),
    PackOptions: (_pack, {"PACK": "PackOptions"}),
}

# Ops whose TFLite options hold only a fused activation (IR: ActivationOptions or NoOptions).
_ACTIVATION_ONLY = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions"}
# Ops that cannot be run without their options: NoOptions is an error for them.
_NEEDS_OPTIONS = frozenset(
    {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION", "SPLIT",
     "SPLIT_V", "LEAKY_RELU", "SOFTMAX", "PACK"}
)
# Ops that exist in the IR only as the reader's resolution of TFLite's resource machinery.
_RESOURCE_OPS = frozenset({"VAR_HANDLE", "CALL_ONCE"})


def _supported() -> tuple[str, ...]:
    from toolkit.model.ir import SUPPORTED_OPS

    return SUPPORTED_OPS


def _options(s: ModuleType, op: Op, in_dtype: DType | None, out_dtype: DType | None) -> tuple[int, Any]:
    """(BuiltinOptions union type, options object or None) for an op."""
    o = op.options
    if op.opcode == "SHAPE" and isinstance(o, NoOptions) and out_dtype is not None:
        # SHAPE's only option is its output type, which the IR keeps on the output tensor.
        t = s.ShapeOptionsT()
        t.outType = int(getattr(s.TensorType, _TENSOR_TYPES[out_dtype]))
        return int(s.BuiltinOptions.ShapeOptions), t
    if op.opcode in _ACTIVATION_ONLY and isinstance(o, (ActivationOptions, NoOptions)):
        union = _ACTIVATION_ONLY[op.opcode]
        t = getattr(s, union + "T")()
        act = o.activation if isinstance(o, ActivationOptions) else Activation.NONE
        t.fusedActivationFunction = _act(s, act)
        if hasattr(t, "potScaleInt16"):
            t.potScaleInt16 = in_dtype is not DType.INT16
        return int(getattr(s.BuiltinOptions, union)), t
    if isinstance(o, SplitOptions) and op.opcode in ("SPLIT", "SPLIT_V"):
        union = "SplitOptions" if op.opcode == "SPLIT" else "SplitVOptions"
        t = getattr(s, union + "T")()
        t.numSplits = o.num_splits
        return int(getattr(s.BuiltinOptions, union)), t
    if isinstance(o, NoOptions):
        if op.opcode in _NEEDS_OPTIONS:
            raise UnsupportedOp(op.opcode, op.index, _supported(), "it needs its options, got NoOptions")
        return 0, None
    entry = _OPTION_WRITERS.get(type(o))
    if entry is None or op.opcode not in entry[1]:
        raise UnsupportedOp(
            op.opcode, op.index, _supported(), f"options {type(o).__name__} do not belong to this operator"
        )
    builder, unions = entry
    return int(getattr(s.BuiltinOptions, unions[op.opcode])), builder(s, o)


# ---------------------------------------------------------------------------------------------
# Tensors, buffers, op codes.




@dataclass
class _Builder:
    """Accumulates the model-wide tables (buffers, op codes) while subgraphs are written."""

    s: ModuleType
    buffers: list[Any] = field(default_factory=list)
    opcodes: list[Any] = field(default_factory=list)
    opcode_index: dict[tuple[str, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.buffers.append(self.s.BufferT())  # buffer 0: the empty sentinel

    def buffer(self, data: np.ndarray) -> int:
        b = self.s.BufferT()
        le = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<"))
        b.data = np.frombuffer(le.tobytes(), dtype=np.uint8)
        self.buffers.append(b)
        return len(self.buffers) - 1

    def opcode(self, name: str, version: int, op: Op | None = None) -> int:
        key = (name, version)
        if key not in self.opcode_index:
            code = getattr(self.s.BuiltinOperator, name, None)
            if code is None:
                where = op.index if op else -1
                raise UnsupportedOp(name, where, _supported(), "not a TFLite builtin operator")
            oc = self.s.OperatorCodeT()
            oc.builtinCode = int(code)
            oc.deprecatedBuiltinCode = min(int(code), _PLACEHOLDER_FOR_GREATER_OP_CODES)
            oc.version = version
            self.opcode_index[key] = len(self.opcodes)
            self.opcodes.append(oc)
        return self.opcode_index[key]

    def tensor(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: DType,
        quant: QuantParams | None = None,
        data: np.ndarray | None = None,
    ) -> Any:
        s = self.s
        t = s.TensorT()
        t.name = name
        t.shape = np.asarray(shape, dtype=np.int32)
        t.type = int(getattr(s.TensorType, _TENSOR_TYPES[dtype]))
        t.buffer = 0 if data is None else self.buffer(np.asarray(data, dtype=dtype.numpy).reshape(shape))
        if quant is not None:
            q = s.QuantizationParametersT()
            q.scale = np.asarray(quant.scale, dtype=np.float32)
            q.zeroPoint = np.asarray(quant.zero_point, dtype=np.int64)
            q.quantizedDimension = quant.axis if quant.per_channel else 0
            t.quantization = q
        return t

    def operator(self, opcode_index: int, inputs: list[int], outputs: list[int]) -> Any:
        o = self.s.OperatorT()
        o.opcodeIndex = opcode_index
        o.inputs = np.asarray(inputs, dtype=np.int32)
        o.outputs = np.asarray(outputs, dtype=np.int32)
        return o


def _subgraph(
    b: _Builder, name: str, tensors: list[Any], ops: list[Any], inputs: list[int], outputs: list[int]
) -> Any:
    sg = b.s.SubGraphT()
    sg.name = name
    sg.tensors = tensors
    sg.operators = ops
    sg.inputs = np.asarray(inputs, dtype=np.int32)
    sg.outputs = np.asarray(outputs, dtype=np.int32)
    return sg


def _var_handle(b: _Builder, shared_name: str, resource_index: int) -> Any:
    s = b.s
    o = b.operator(b.opcode("VAR_HANDLE", 1), [], [resource_index])
    opts = s.VarHandleOptionsT()
    opts.container, opts.sharedName = "", shared_name
    o.builtinOptionsType, o.builtinOptions = int(s.BuiltinOptions.VarHandleOptions), opts
    return o


def _shared_name(graph: Graph, var_pos: int) -> str:
    v = graph.variables[var_pos]
    # Shared names identify the variable between subgraphs: make them unique even if the IR
    # names are empty or repeated.
    return f"{v.name or 'var'}#{var_pos}"


def _init_subgraph(b: _Builder, graph: Graph) -> Any:
    """Subgraph "init": assign every variable its initial value (run once by CALL_ONCE)."""
    tensors: list[Any] = []
    ops: list[Any] = []
    for pos, v in enumerate(graph.variables):
        res = len(tensors)
        tensors.append(b.tensor(f"{v.name}/handle", (), DType.RESOURCE))
        init = np.asarray(v.initial, dtype=v.dtype.numpy).reshape(v.shape)
        val = len(tensors)
        tensors.append(b.tensor(f"{v.name}/initial", v.shape, v.dtype, v.quant, init))
        ops.append(_var_handle(b, _shared_name(graph, pos), res))
        ops.append(b.operator(b.opcode("ASSIGN_VARIABLE", 1), [res, val], []))
    return _subgraph(b, "init", tensors, ops, [], [])


class _MainWriter:
    """Writes subgraph 0: IR tensors in index order, then resource handles; IR ops in order."""

    def __init__(self, b: _Builder, graph: Graph) -> None:
        self.b, self.g = b, graph
        self.tensors = [self._ir_tensor(t) for t in graph.tensors]
        self.ops: list[Any] = []
        self.var_pos = {v.index: pos for pos, v in enumerate(graph.variables)}
        self.handles: dict[int, int] = {}  # variable position → resource tensor index

    def _ir_tensor(self, t: Tensor) -> Any:
        if t.dtype not in _TENSOR_TYPES:
            raise TFLiteWriteError(f"tensor {t.index} ({t.name}) has unsupported dtype {t.dtype}")
        if t.data is not None and (t.data.dtype != t.dtype.numpy or t.data.size != t.num_elements):
            raise TFLiteWriteError(
                f"constant tensor {t.index} ({t.name}) is {t.dtype.value}{list(t.shape)} but holds "
                f"{t.data.dtype}{list(t.data.shape)} data"
            )
        return self.b.tensor(t.name or f"t{t.index}", t.shape, t.dtype, t.quant, t.data)

    def write(self) -> Any:
        g = self.g
        if g.variables:
            self._variable_prologue()
        for op in g.ops:
            self.ops.append(self._op(op))
        return _subgraph(self.b, g.name or "main", self.tensors, self.ops, list(g.inputs), list(g.outputs))

    def _variable_prologue(self) -> None:
        s, b = self.b.s, self.b
        call = b.operator(b.opcode("CALL_ONCE", 1), [], [])
        opts = s.CallOnceOptionsT()
        opts.initSubgraphIndex = 1
        call.builtinOptionsType, call.builtinOptions = int(s.BuiltinOptions.CallOnceOptions), opts
        self.ops.append(call)
        for pos, v in enumerate(self.g.variables):
            idx = len(self.tensors)
            self.tensors.append(b.tensor(f"{v.name}/handle", (), DType.RESOURCE))
            self.handles[pos] = idx
            self.ops.append(_var_handle(b, _shared_name(self.g, pos), idx))

    def _handle(self, op: Op) -> int:
        o = op.options
        if not isinstance(o, VariableOptions) or o.variable not in self.var_pos:
            raise TFLiteWriteError(f"{op.label}: needs VariableOptions naming one of the graph's variables")
        return self.handles[self.var_pos[o.variable]]

    def _op(self, op: Op) -> Any:
        b = self.b
        if op.opcode in _RESOURCE_OPS:
            raise UnsupportedOp(
                op.opcode, op.index, _supported(), "the IR expresses state with Graph.variables"
            )
        if op.opcode == "READ_VARIABLE":
            return b.operator(b.opcode("READ_VARIABLE", 1), [self._handle(op)], list(op.outputs))
        if op.opcode == "ASSIGN_VARIABLE":
            return b.operator(b.opcode("ASSIGN_VARIABLE", 1), [self._handle(op), *op.inputs], [])
        in_dtype = next((self.g.tensors[i].dtype for i in op.inputs if i >= 0), None)
        version = op_version(op.opcode, in_dtype)
        o = b.operator(b.opcode(op.opcode, version, op), list(op.inputs), list(op.outputs))
        out_dtype = self.g.tensors[op.outputs[0]].dtype if op.outputs else None
        o.builtinOptionsType, o.builtinOptions = _options(b.s, op, in_dtype, out_dtype)
        return o


def write_tflite(graph: Graph) -> bytes:
    """Serialize ``graph`` to the bytes of a .tflite file (schema version 3, identifier TFL3).

    Raises :class:`~toolkit.errors.UnsupportedOp` for an op or option TFLite cannot express and
    :class:`TFLiteWriteError` for an inconsistent graph.
    """
    import flatbuffers

    s = _schema()
    b = _Builder(s)
    subgraphs = [_MainWriter(b, graph).write()]
    if graph.variables:
        subgraphs.append(_init_subgraph(b, graph))
    model = s.ModelT()
    model.version = TFLITE_SCHEMA_VERSION
    model.description = "boardfit"
    model.operatorCodes = b.opcodes
    model.subgraphs = subgraphs
    model.buffers = b.buffers
    fb = flatbuffers.Builder(1024)
    fb.Finish(model.Pack(fb), file_identifier=FILE_IDENTIFIER)
    return bytes(fb.Output())
