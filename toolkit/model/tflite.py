"""Read .tflite files into the IR (:mod:`toolkit.model.ir`).

This is the only module that knows the TFLite schema (``tensorflow/lite/schema/schema.fbs``).
It reads the flatbuffer through :mod:`toolkit.model.flatbuf`, which bounds-checks every access,
so that a malformed file raises :class:`~toolkit.errors.ModelError` naming the byte and the
schema path (``subgraphs[0].operators[3].inputs``) and never crashes, hangs or allocates more
than the file's size warrants.

What the reader does beyond decoding (contracts the rest of boardfit relies on):

* IR tensor ``i`` is tensor ``i`` of subgraph 0; every subgraph-0 tensor is kept, used or not.
  Shapes are static: ``shape_signature`` is ignored, a dynamic batch (``-1`` in dimension 0) is 1.
* Constant data are read-only numpy views of the file bytes (little-endian), also for buffers
  stored after the flatbuffer (``Buffer.offset``/``size``, the >2 GB layout).
* Op codes are ``max(builtin_code, deprecated_builtin_code)``, as TFLite resolves them.
* Streaming models: ``CALL_ONCE``'s init subgraph and the ``VAR_HANDLE`` ops are resolved into
  :class:`~toolkit.model.ir.Variable` objects (matched by ``(container, shared_name)``); the IR's
  ``READ_VARIABLE`` has no inputs and ``ASSIGN_VARIABLE`` one (the value), both carrying
  :class:`~toolkit.model.ir.VariableOptions`.
* Constant subgraphs are folded (:mod:`toolkit.model.fold`), then ops are renumbered ``0..n-1``.
  :class:`~toolkit.errors.UnsupportedOp` names the op by its index in the *file's* subgraph 0
  (what Netron or the converter's log show), before renumbering.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from toolkit.errors import ModelError, UnsupportedOp
from toolkit.model import fold
from toolkit.model.flatbuf import FlatBuffer, Table
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
    OpOptions,
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
    Variable,
    VariableOptions,
)

log = logging.getLogger(__name__)

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
# Limits that no real model reaches; beyond them a file is treated as corrupt.
MAX_RANK = 32  # numpy supports 64 dimensions
MAX_TENSOR_BYTES = 1 << 40


# ---------------------------------------------------------------------------------------------
# Schema facts: field ids (slots) of the tables read here, enum values and names.


class _ModelF:
    VERSION, OPERATOR_CODES, SUBGRAPHS, DESCRIPTION, BUFFERS = range(5)


class _SubGraphF:
    TENSORS, INPUTS, OUTPUTS, OPERATORS, NAME = range(5)


class _TensorF:
    SHAPE, TYPE, BUFFER, NAME, QUANTIZATION, IS_VARIABLE, SPARSITY, SHAPE_SIGNATURE = range(8)
    EXTERNAL_BUFFER = 10


class _QuantF:
    MIN, MAX, SCALE, ZERO_POINT, DETAILS_TYPE, DETAILS, QUANTIZED_DIMENSION = range(7)


class _OperatorF:
    OPCODE_INDEX, INPUTS, OUTPUTS, BUILTIN_OPTIONS_TYPE, BUILTIN_OPTIONS = range(5)


class _OperatorCodeF:
    DEPRECATED_BUILTIN_CODE, CUSTOM_CODE, VERSION, BUILTIN_CODE = range(4)


class _BufferF:
    DATA, OFFSET, SIZE = range(3)


# BuiltinOperator, in code order (code == position).
BUILTIN_OPERATORS: tuple[str, ...] = tuple("""
ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE
EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D
LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6
RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM
EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND
TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN
EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX
MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV
SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT
REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV
REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU
SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK ELU
REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE
NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL
PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS
HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE
READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM
MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX
UNSORTED_SEGMENT_SUM ATAN2 UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT
STABLEHLO_LOGISTIC STABLEHLO_ADD STABLEHLO_DIVIDE STABLEHLO_MULTIPLY STABLEHLO_MAXIMUM
STABLEHLO_RESHAPE STABLEHLO_CLAMP STABLEHLO_CONCATENATE STABLEHLO_BROADCAST_IN_DIM
STABLEHLO_CONVOLUTION STABLEHLO_SLICE STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE STABLEHLO_ABS
STABLEHLO_AND STABLEHLO_COSINE STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG STABLEHLO_MINIMUM
STABLEHLO_NEGATE STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER STABLEHLO_RSQRT STABLEHLO_SELECT
STABLEHLO_SUBTRACT STABLEHLO_TANH STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT
STABLEHLO_DYNAMIC_SLICE STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA
STABLEHLO_DOT_GENERAL STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT STABLEHLO_WHILE STABLEHLO_GATHER
STABLEHLO_TRANSPOSE DILATE STABLEHLO_RNG_BIT_GENERATOR REDUCE_WINDOW STABLEHLO_COMPOSITE
STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT STABLEHLO_CASE
""".split())  # noqa: SIM905  (a fact table, kept compact)
_CUSTOM_CODE = 32

# TensorType code → IR dtype (None: a type boardfit does not read), and the schema's names.
TENSOR_TYPES: dict[int, DType] = {
    0: DType.FLOAT32, 1: DType.FLOAT16, 2: DType.INT32, 3: DType.UINT8, 4: DType.INT64,
    6: DType.BOOL, 7: DType.INT16, 9: DType.INT8, 13: DType.RESOURCE,
}
_TENSOR_TYPE_NAMES = (
    "FLOAT32", "FLOAT16", "INT32", "UINT8", "INT64", "STRING", "BOOL", "INT16", "COMPLEX64", "INT8",
    "FLOAT64", "COMPLEX128", "UINT64", "RESOURCE", "VARIANT", "UINT32", "UINT16", "INT4", "BFLOAT16",
    "INT2", "UINT4", "FLOAT8_E4M3FN", "FLOAT8_E5M2",
)

_PADDINGS = {0: Padding.SAME, 1: Padding.VALID}
_ACTIVATIONS = {
    0: Activation.NONE, 1: Activation.RELU, 2: Activation.RELU_N1_TO_1, 3: Activation.RELU6,
    4: Activation.TANH, 5: Activation.SIGN_BIT,
}


# ---------------------------------------------------------------------------------------------
# Builtin options: per opcode, the BuiltinOptions union member it carries and its parser.


@dataclass(frozen=True)
class _VarHandle:
    """VAR_HANDLE's options (reader-internal: VAR_HANDLE never reaches the IR)."""

    container: str
    shared_name: str


@dataclass(frozen=True)
class _CallOnce:
    init_subgraph: int


_RawOptions = OpOptions | _VarHandle | _CallOnce


class _OptionReader:
    """Reads one options table; every enum and range is validated, errors name the field."""

    def __init__(self, table: Table | None, path: str, label: str) -> None:
        self.t = table
        self.path = path
        self.label = label

    def fail(self, name: str, problem: str) -> ModelError:
        return ModelError(f"{self.label}: {self.path}.{name}: {problem}")

    def i32(self, slot: int, name: str, default: int = 0, minimum: int | None = None) -> int:
        v = default if self.t is None else self.t.get_int(slot, name, "i", default)
        if minimum is not None and v < minimum:
            raise self.fail(name, f"must be >= {minimum}, got {v}")
        return v

    def flag(self, slot: int, name: str) -> bool:
        return False if self.t is None else self.t.get_bool(slot, name)

    def f32(self, slot: int, name: str) -> float:
        return 0.0 if self.t is None else self.t.get_float(slot, name)

    def ints(self, slot: int, name: str) -> tuple[int, ...]:
        return (self.t.ints(slot, name) if self.t is not None else None) or ()

    def string(self, slot: int, name: str) -> str:
        return (self.t.string(slot, name) if self.t is not None else None) or ""

    def padding(self, slot: int) -> Padding:
        v = 0 if self.t is None else self.t.get_int(slot, "padding", "b")
        if v not in _PADDINGS:
            raise self.fail("padding", f"unknown Padding value {v} (expected 0=SAME or 1=VALID)")
        return _PADDINGS[v]

    def activation(self, slot: int) -> Activation:
        v = 0 if self.t is None else self.t.get_int(slot, "fused_activation_function", "b")
        if v not in _ACTIVATIONS:
            raise self.fail("fused_activation_function", f"unknown ActivationFunctionType {v} (not 0..5)")
        return _ACTIVATIONS[v]


def _conv(r: _OptionReader) -> Conv2DOptions:
    return Conv2DOptions(
        padding=r.padding(0),
        stride_w=r.i32(1, "stride_w", minimum=1),
        stride_h=r.i32(2, "stride_h", minimum=1),
        activation=r.activation(3), dilation_w=r.i32(4, "dilation_w_factor", 1, minimum=1),
        dilation_h=r.i32(5, "dilation_h_factor", 1, minimum=1),
    )


def _depthwise(r: _OptionReader) -> DepthwiseConv2DOptions:
    return DepthwiseConv2DOptions(
        padding=r.padding(0),
        stride_w=r.i32(1, "stride_w", minimum=1),
        stride_h=r.i32(2, "stride_h", minimum=1),
        depth_multiplier=r.i32(3, "depth_multiplier", minimum=0), activation=r.activation(4),
        dilation_w=r.i32(5, "dilation_w_factor", 1, minimum=1),
        dilation_h=r.i32(6, "dilation_h_factor", 1, minimum=1),
    )


def _fully_connected(r: _OptionReader) -> FullyConnectedOptions:
    fmt = 0 if r.t is None else r.t.get_int(1, "weights_format", "b")
    if fmt != 0:
        raise r.fail("weights_format", f"weights format {fmt} (shuffled) is not supported, only DEFAULT (0)")
    return FullyConnectedOptions(activation=r.activation(0), keep_num_dims=r.flag(2, "keep_num_dims"))


def _pool(r: _OptionReader) -> Pool2DOptions:
    return Pool2DOptions(
        padding=r.padding(0),
        stride_w=r.i32(1, "stride_w", minimum=1),
        stride_h=r.i32(2, "stride_h", minimum=1),
        filter_w=r.i32(3, "filter_width", minimum=1), filter_h=r.i32(4, "filter_height", minimum=1),
        activation=r.activation(5),
    )


def _strided_slice(r: _OptionReader) -> StridedSliceOptions:
    return StridedSliceOptions(
        begin_mask=r.i32(0, "begin_mask"), end_mask=r.i32(1, "end_mask"),
        ellipsis_mask=r.i32(2, "ellipsis_mask"), new_axis_mask=r.i32(3, "new_axis_mask"),
        shrink_axis_mask=r.i32(4, "shrink_axis_mask"), offset=r.flag(5, "offset"),
    )


_OptionParser = Callable[[_OptionReader], _RawOptions]

# opcode → (BuiltinOptions union type, parser).  Other opcodes carry NoOptions.
_OPTIONS: dict[str, tuple[int, _OptionParser]] = {
    "CONV_2D": (1, _conv),
    "DEPTHWISE_CONV_2D": (2, _depthwise),
    "AVERAGE_POOL_2D": (5, _pool),
    "MAX_POOL_2D": (5, _pool),
    "FULLY_CONNECTED": (8, _fully_connected),
    "SOFTMAX": (9, lambda r: SoftmaxOptions(beta=r.f32(0, "beta"))),
    "CONCATENATION": (10, lambda r: ConcatenationOptions(axis=r.i32(0, "axis"), activation=r.activation(1))),
    "ADD": (11, lambda r: ActivationOptions(r.activation(0))),
    "RESHAPE": (17, lambda r: ReshapeOptions(r.ints(0, "new_shape"))),
    "MUL": (21, lambda r: ActivationOptions(r.activation(0))),
    "MEAN": (27, lambda r: ReducerOptions(keep_dims=r.flag(0, "keep_dims"))),
    "REDUCE_PROD": (27, lambda r: ReducerOptions(keep_dims=r.flag(0, "keep_dims"))),
    "SUB": (28, lambda r: ActivationOptions(r.activation(0))),
    "SQUEEZE": (30, lambda r: SqueezeOptions(r.ints(0, "squeeze_dims"))),
    "STRIDED_SLICE": (32, _strided_slice),
    "SPLIT": (35, lambda r: SplitOptions(r.i32(0, "num_splits", minimum=1))),
    "PACK": (59, lambda r: PackOptions(axis=r.i32(1, "axis"), values_count=r.i32(0, "values_count"))),
    "LEAKY_RELU": (75, lambda r: LeakyReluOptions(alpha=r.f32(0, "alpha"))),
    "SPLIT_V": (79, lambda r: SplitOptions(r.i32(0, "num_splits", minimum=1))),
    "CALL_ONCE": (103, lambda r: _CallOnce(r.i32(0, "init_subgraph_index"))),
    "VAR_HANDLE": (111, lambda r: _VarHandle(r.string(0, "container"), r.string(1, "shared_name"))),
}


# ---------------------------------------------------------------------------------------------
# Reading one subgraph.


@dataclass(frozen=True)
class _RawOp:
    """An operator as stored, before variables are resolved and constants folded."""

    index: int  # position in its subgraph
    opcode: str  # builtin name, or "CUSTOM"
    custom_code: str  # custom ops only
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: _RawOptions


@dataclass
class _Subgraph:
    index: int
    tensors: list[Tensor]
    ops: list[_RawOp]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    path: str = field(default="")


class _Reader:
    """Reads the model-wide tables once and subgraphs on demand."""

    def __init__(self, fb: FlatBuffer) -> None:
        self.fb = fb
        self.label = fb.label
        self.model = fb.root(FILE_IDENTIFIER)
        version = self.model.get_int(_ModelF.VERSION, "version", "I")
        if version != SCHEMA_VERSION:
            raise ModelError(f"{self.label}: schema version {version}, expected {SCHEMA_VERSION}")
        self.subgraphs = self.model.tables(_ModelF.SUBGRAPHS, "subgraphs")
        if len(self.subgraphs) == 0:
            raise ModelError(f"{self.label}: the model has no subgraphs")
        self.buffers = self.model.tables(_ModelF.BUFFERS, "buffers")
        self.opcodes = [self._opcode(t) for t in self.model.tables(_ModelF.OPERATOR_CODES, "operator_codes")]

    def fail(self, path: str, problem: str) -> ModelError:
        return ModelError(f"{self.label}: {path}: {problem}")

    def _opcode(self, t: Table) -> tuple[str, str]:
        """(builtin name or "CUSTOM", custom code) of one OperatorCode."""
        deprecated = t.get_int(_OperatorCodeF.DEPRECATED_BUILTIN_CODE, "deprecated_builtin_code", "b")
        builtin = t.get_int(_OperatorCodeF.BUILTIN_CODE, "builtin_code", "i")
        code = max(deprecated, builtin)
        if code == _CUSTOM_CODE:
            return "CUSTOM", t.string(_OperatorCodeF.CUSTOM_CODE, "custom_code") or "CUSTOM"
        if not 0 <= code < len(BUILTIN_OPERATORS):
            # A newer builtin than this schema knows: it cannot be supported either.
            return f"BUILTIN_OPERATOR_{code}", ""
        return BUILTIN_OPERATORS[code], ""

    # -- subgraph -------------------------------------------------------------------------------

    def subgraph(self, k: int) -> _Subgraph:
        sg = self.subgraphs[k]
        tensors = [self._tensor(t, i) for i, t in enumerate(sg.tables(_SubGraphF.TENSORS, "tensors"))]
        n = len(tensors)
        inputs = self._indices(sg, _SubGraphF.INPUTS, "inputs", n, allow_absent=False)
        outputs = self._indices(sg, _SubGraphF.OUTPUTS, "outputs", n, allow_absent=False)
        ops = [self._operator(t, j, n) for j, t in enumerate(sg.tables(_SubGraphF.OPERATORS, "operators"))]
        return _Subgraph(k, tensors, ops, inputs, outputs, sg.path)

    def _indices(self, t: Table, slot: int, name: str, n: int, allow_absent: bool) -> tuple[int, ...]:
        """A tensor-index vector, each entry in [0, n) (or -1 for an absent optional operand)."""
        idx = t.ints(slot, name) or ()
        low = -1 if allow_absent else 0
        for k, i in enumerate(idx):
            if not low <= i < n:
                raise self.fail(
                    f"{t.child(name)}[{k}]",
                    f"tensor index {i} out of range: the subgraph has {n} tensors"
                    + (" (-1 marks an absent operand)" if allow_absent else ""),
                )
        return idx

    # -- tensors --------------------------------------------------------------------------------

    def _tensor(self, t: Table, index: int) -> Tensor:
        shape = self._shape(t)
        code = t.get_int(_TensorF.TYPE, "type", "b")
        dtype = TENSOR_TYPES.get(code)
        if dtype is None:
            name = _TENSOR_TYPE_NAMES[code] if 0 <= code < len(_TENSOR_TYPE_NAMES) else "unknown"
            supported = ", ".join(d.name for d in TENSOR_TYPES.values())
            raise self.fail(
                t.child("type"), f"tensor type {name} ({code}) is not supported; supported: {supported}"
            )
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize if shape else dtype.itemsize
        if nbytes > MAX_TENSOR_BYTES:
            raise self.fail(t.child("shape"), f"tensor of {nbytes} bytes is implausibly large")
        if t.has(_TensorF.SPARSITY):
            raise self.fail(t.child("sparsity"), "sparse tensor storage is not supported (densify the model)")
        if t.get_int(_TensorF.EXTERNAL_BUFFER, "external_buffer", "I") != 0:
            raise self.fail(t.child("external_buffer"), "tensor data in external files are not supported")
        return Tensor(
            index=index,
            name=t.string(_TensorF.NAME, "name") or "",
            shape=shape,
            dtype=dtype,
            quant=self._quant(t.table(_TensorF.QUANTIZATION, "quantization"), shape),
            data=self._constant(t, dtype, shape),
        )

    def _shape(self, t: Table) -> tuple[int, ...]:
        shape = list(t.ints(_TensorF.SHAPE, "shape") or ())
        if len(shape) > MAX_RANK:
            raise self.fail(t.child("shape"), f"rank {len(shape)} exceeds the maximum of {MAX_RANK}")
        if shape and shape[0] == -1:
            shape[0] = 1  # dynamic batch: boardfit runs batch 1
        for axis, d in enumerate(shape):
            if d < 0:
                raise self.fail(
                    t.child("shape"),
                    f"dimension {axis} is {d}; only a dynamic batch (-1 in dimension 0) is supported",
                )
        return tuple(shape)

    def _quant(self, q: Table | None, shape: tuple[int, ...]) -> QuantParams | None:
        if q is None:
            return None
        details = q.get_int(_QuantF.DETAILS_TYPE, "details_type", "B")
        if details != 0:
            raise self.fail(q.child("details_type"), f"quantization details type {details} is not supported")
        scale = q.floats(_QuantF.SCALE, "scale")
        zero_point = q.ints(_QuantF.ZERO_POINT, "zero_point", "<i8")
        if not scale or zero_point is None:
            return None  # TFLite treats a tensor without scale or zero point as not quantized
        if len(scale) != len(zero_point):
            raise self.fail(
                q.child("zero_point"), f"{len(zero_point)} zero points for {len(scale)} scales (need equal)"
            )
        axis = q.get_int(_QuantF.QUANTIZED_DIMENSION, "quantized_dimension", "i")
        if axis < 0 or (shape and axis >= len(shape)):
            raise self.fail(
                q.child("quantized_dimension"), f"dimension {axis} is outside the tensor's shape {shape}"
            )
        if len(scale) > 1 and (not shape or shape[axis] != len(scale)):
            raise self.fail(
                q.child("scale"),
                f"{len(scale)} per-channel scales, but dimension {axis} of shape {shape} has "
                f"{shape[axis] if shape else 'no'} entries",
            )
        return QuantParams(scale=scale, zero_point=zero_point, axis=axis if shape else 0)

    def _buffer_bytes(self, index: int, path: str) -> tuple[int, int] | None:
        """(file offset, length) of buffer ``index``'s bytes, or None if it is empty."""
        if index == 0:
            return None  # buffer 0 is the empty sentinel
        if index >= len(self.buffers):
            raise self.fail(
                path, f"buffer index {index} out of range: the model has {len(self.buffers)} buffers"
            )
        b = self.buffers[index]
        data = b.vector(_BufferF.DATA, "data", 1)
        if data is not None and data[1] > 0:
            return data
        offset = b.get_int(_BufferF.OFFSET, "offset", "Q")
        size = b.get_int(_BufferF.SIZE, "size", "Q")
        if offset <= 1:  # 0: no external data; 1: TFLite's placeholder for "not yet written"
            return None
        if offset + size > self.fb.size:
            raise self.fail(
                b.child("offset"),
                f"data at file offset {offset} with size {size} runs past the end of the file "
                f"({self.fb.size} bytes)",
            )
        return (offset, size) if size > 0 else None

    def _constant(self, t: Table, dtype: DType, shape: tuple[int, ...]) -> np.ndarray | None:
        path = t.child("buffer")
        where = self._buffer_bytes(t.get_int(_TensorF.BUFFER, "buffer", "I"), path)
        if where is None:
            return None
        start, nbytes = where
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if nbytes != count * dtype.itemsize:
            raise self.fail(
                path, f"buffer holds {nbytes} bytes, but a {dtype.value} tensor of shape {shape} needs "
                f"{count * dtype.itemsize}",
            )
        if dtype is DType.BOOL:
            arr = np.frombuffer(self.fb.data, np.uint8, count, start) != 0
        else:
            le = dtype.numpy.newbyteorder("<")
            arr = np.frombuffer(self.fb.data, le, count, start).astype(dtype.numpy, copy=False)
        if not arr.flags.aligned:
            arr = arr.copy()
        arr = arr.reshape(shape)
        arr.setflags(write=False)
        return arr

    # -- operators ------------------------------------------------------------------------------

    def _operator(self, t: Table, j: int, n_tensors: int) -> _RawOp:
        k = t.get_int(_OperatorF.OPCODE_INDEX, "opcode_index", "I")
        if k >= len(self.opcodes):
            raise self.fail(
                t.child("opcode_index"), f"op-code index {k} out of range: the model has {len(self.opcodes)}"
            )
        opcode, custom = self.opcodes[k]
        inputs = self._indices(t, _OperatorF.INPUTS, "inputs", n_tensors, allow_absent=True)
        outputs = self._indices(t, _OperatorF.OUTPUTS, "outputs", n_tensors, allow_absent=False)
        return _RawOp(j, opcode, custom, inputs, outputs, self._options(t, opcode))

    def _options(self, t: Table, opcode: str) -> _RawOptions:
        entry = _OPTIONS.get(opcode)
        if entry is None:
            return NoOptions()
        union, parser = entry
        kind = t.get_int(_OperatorF.BUILTIN_OPTIONS_TYPE, "builtin_options_type", "B")
        table = None
        if kind != 0:
            if kind != union:
                raise self.fail(
                    t.child("builtin_options_type"),
                    f"{opcode} carries options of union type {kind}, expected {union}",
                )
            table = t.table(_OperatorF.BUILTIN_OPTIONS, "builtin_options")
        return parser(_OptionReader(table, t.child("builtin_options"), self.label))


# ---------------------------------------------------------------------------------------------
# Streaming models: CALL_ONCE / VAR_HANDLE / READ_VARIABLE / ASSIGN_VARIABLE → ir.Variable.
#
# Variables are numbered in the order of the main subgraph's VAR_HANDLE ops (deduplicated by
# (container, shared_name)).  Shape, dtype and quantization come from the first tensor the main
# subgraph reads the variable into or assigns from, else from the init subgraph's constant; a
# handle that is neither used nor initialised yields no variable.


def _var_name(key: _VarHandle) -> str:
    return f"{key.container}/{key.shared_name}" if key.container else key.shared_name


def _handles(sub: _Subgraph) -> dict[int, _VarHandle]:
    """Resource tensor → the variable its VAR_HANDLE names, in op order."""
    out: dict[int, _VarHandle] = {}
    for op in sub.ops:
        if op.opcode == "VAR_HANDLE" and isinstance(op.options, _VarHandle) and op.outputs:
            out[op.outputs[0]] = op.options
    return out


def _initial_values(reader: _Reader, main: _Subgraph) -> dict[_VarHandle, Tensor]:
    """The constant tensor each CALL_ONCE init subgraph assigns to each variable."""
    values: dict[_VarHandle, Tensor] = {}
    for op in main.ops:
        if op.opcode != "CALL_ONCE" or not isinstance(op.options, _CallOnce):
            continue
        k = op.options.init_subgraph
        if not 0 < k < len(reader.subgraphs):
            raise reader.fail(
                f"{main.path}.operators[{op.index}].builtin_options.init_subgraph_index",
                f"subgraph {k} does not exist or is the main subgraph "
                f"(the model has {len(reader.subgraphs)})",
            )
        init = reader.subgraph(k)
        handles = _handles(init)
        graph = fold.fold_constants(_as_graph(init, reader.label), keep=frozenset())
        for iop in graph.ops:
            if iop.opcode == "VAR_HANDLE":
                continue
            if iop.opcode != "ASSIGN_VARIABLE" or len(iop.inputs) != 2 or iop.inputs[0] not in handles:
                raise UnsupportedOp(
                    iop.opcode, iop.index, SUPPORTED_OPS,
                    f"in CALL_ONCE init subgraph {k}, which may only assign constants to variables",
                )
            value = graph.tensors[iop.inputs[1]]
            if value.data is None:
                raise UnsupportedOp(
                    "CALL_ONCE", op.index, SUPPORTED_OPS,
                    f"init subgraph {k} assigns a computed (non-constant) value to a variable",
                )
            values[handles[iop.inputs[0]]] = value
    return values


def _variable_use(
    reader: _Reader, main: _Subgraph, op: _RawOp, handles: dict[int, _VarHandle]
) -> tuple[_VarHandle, int]:
    """(variable, value tensor) of a READ_VARIABLE or ASSIGN_VARIABLE op, checked."""
    path = f"{main.path}.operators[{op.index}]"
    reading = op.opcode == "READ_VARIABLE"
    want_in, want_out = (1, 1) if reading else (2, 0)
    if len(op.inputs) != want_in or len(op.outputs) != want_out:
        raise reader.fail(
            path,
            f"{op.opcode} needs {want_in} inputs and {want_out} outputs, "
            f"has {len(op.inputs)} and {len(op.outputs)}",
        )
    key = handles.get(op.inputs[0])
    if key is None:
        raise reader.fail(f"{path}.inputs[0]", "the resource handle is not produced by a VAR_HANDLE operator")
    value = op.outputs[0] if reading else op.inputs[1]
    if value < 0:
        raise reader.fail(f"{path}.inputs[1]", "ASSIGN_VARIABLE needs a value")
    return key, value


def _resolve_variables(reader: _Reader, main: _Subgraph) -> tuple[list[_RawOp], tuple[Variable, ...]]:
    """Main-subgraph ops without CALL_ONCE/VAR_HANDLE, variable ops rewritten; the variables."""
    handles = _handles(main)
    var_ops = [op for op in main.ops if op.opcode in ("READ_VARIABLE", "ASSIGN_VARIABLE")]
    if not handles and not var_ops:
        return [op for op in main.ops if op.opcode != "CALL_ONCE"], ()
    uses = {op.index: _variable_use(reader, main, op, handles) for op in var_ops}
    spec: dict[_VarHandle, Tensor] = {}
    for key, value in uses.values():
        spec.setdefault(key, main.tensors[value])
    initial = _initial_values(reader, main)
    variables: list[Variable] = []
    number: dict[_VarHandle, int] = {}
    for key in dict.fromkeys(handles.values()):
        t = spec.get(key) or initial.get(key)
        if t is not None:
            number[key] = len(variables)
            variables.append(_variable(reader, len(variables), key, t, initial.get(key)))
    ops: list[_RawOp] = []
    for op in main.ops:
        if op.opcode in ("CALL_ONCE", "VAR_HANDLE"):
            continue
        if op.index in uses:
            key, value = uses[op.index]
            inputs = () if op.opcode == "READ_VARIABLE" else (value,)
            op = replace(op, inputs=inputs, options=VariableOptions(number[key]))
        ops.append(op)
    return ops, tuple(variables)


def _variable(reader: _Reader, k: int, key: _VarHandle, spec: Tensor, init: Tensor | None) -> Variable:
    where = f"variable {_var_name(key)!r}"
    if spec.dtype is DType.RESOURCE:
        raise reader.fail(where, "a variable cannot hold a resource handle")
    if init is None or init.data is None:
        initial = np.zeros(spec.shape, spec.dtype.numpy)
    elif init.dtype is not spec.dtype or init.num_elements != spec.num_elements:
        raise reader.fail(
            where,
            f"initial value is {init.dtype.value}{list(init.shape)}, but the model uses it as "
            f"{spec.dtype.value}{list(spec.shape)}",
        )
    else:
        initial = np.array(init.data, copy=True).reshape(spec.shape)
    initial.setflags(write=False)
    return Variable(k, _var_name(key), spec.shape, spec.dtype, spec.quant, initial)


# ---------------------------------------------------------------------------------------------
# Assembly and checks.


def _as_graph(sub: _Subgraph, name: str) -> Graph:
    """The subgraph as an IR graph with ops still at their file indices (for folding)."""
    ops = tuple(
        Op(op.index, op.opcode, op.inputs, op.outputs,
           op.options if not isinstance(op.options, (_VarHandle, _CallOnce)) else NoOptions())
        for op in sub.ops
    )
    return Graph(name, tuple(sub.tensors), ops, sub.inputs, sub.outputs)


def _check_supported(ops: Sequence[Op], custom: dict[int, str]) -> None:
    for op in ops:
        if op.opcode == "CUSTOM":
            raise UnsupportedOp(custom.get(op.index, "CUSTOM"), op.index, SUPPORTED_OPS, "custom operator")
        if op.opcode not in SUPPORTED_OPS:
            raise UnsupportedOp(op.opcode, op.index, SUPPORTED_OPS)


def _check_dataflow(graph: Graph, label: str) -> None:
    """Every op reads tensors that exist when it runs and writes each tensor once."""
    ready = set(graph.inputs) | {t.index for t in graph.tensors if t.data is not None}
    for op in graph.ops:
        for i in op.inputs:
            if i >= 0 and i not in ready:
                raise ModelError(
                    f"{label}: operator {op.index} ({op.opcode}) reads tensor {i} "
                    f"({graph.tensors[i].name!r}) before any operator writes it"
                )
        for o in op.outputs:
            if o in ready:
                raise ModelError(
                    f"{label}: operator {op.index} ({op.opcode}) writes tensor {o} "
                    f"({graph.tensors[o].name!r}), which is a constant, a graph input or already written"
                )
            ready.add(o)
    for o in graph.outputs:
        if o not in ready:
            raise ModelError(f"{label}: graph output tensor {o} ({graph.tensors[o].name!r}) is never written")


def _renumber(graph: Graph) -> Graph:
    ops = tuple(
        replace(op, index=k, name=graph.tensors[op.outputs[0]].name if op.outputs else "")
        for k, op in enumerate(graph.ops)
    )
    return replace(graph, ops=ops)


def _graph(fb: FlatBuffer, name: str, sha: str) -> Graph:
    reader = _Reader(fb)
    main = reader.subgraph(0)
    raw_ops, variables = _resolve_variables(reader, main)
    custom = {op.index: op.custom_code for op in raw_ops if op.opcode == "CUSTOM"}
    main = replace(main, ops=raw_ops)
    graph = replace(_as_graph(main, fb.label), name=name, variables=variables, source_sha256=sha)
    graph = fold.fold_constants(graph)
    _check_supported(graph.ops, custom)
    _check_dataflow(graph, fb.label)
    return _renumber(graph)


def read_tflite(
    source: bytes | bytearray | memoryview | str | os.PathLike[str], name: str | None = None
) -> Graph:
    """Read a .tflite model from its bytes or a file path.

    Raises :class:`ModelError` for anything malformed (including unreadable files) and
    :class:`UnsupportedOp` for operators outside :data:`toolkit.model.ir.SUPPORTED_OPS` (after
    constant folding).  ``name`` defaults to the file's stem, or ``"model"`` for bytes.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "model"
    else:
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from exc
        label = path.name
        name = name or path.stem
    fb = FlatBuffer(data, label)
    return _graph(fb, name or "model", hashlib.sha256(data).hexdigest())


def load_model(path: str | os.PathLike[str]) -> Graph:
    """Read the .tflite file at ``path`` (see :func:`read_tflite`)."""
    return read_tflite(path)
