"""boardfit's intermediate representation of a model.

A :class:`Graph` is a topologically ordered tuple of :class:`Op` over :class:`Tensor`.  All
values are frozen dataclasses; constant tensor data are read-only numpy arrays.  Nothing here
knows about flatbuffers: ``toolkit.model.tflite`` converts from .tflite and
``toolkit.model.tflite_writer`` back.

Conventions (the same as TFLite, so that the oracle and the kernels can follow its reference
code line by line):

* Shapes are tuples of ints, activations in NHWC.  Conv filters are OHWI, depthwise filters
  1HW(I·M), fully-connected weights (out, in).
* An absent optional operand (e.g. a conv without bias) is tensor index ``-1``.
* Quantized values: ``real = scale * (q - zero_point)``; per-channel parameters have one entry
  per slice along ``QuantParams.axis``.
* State of streaming models lives in :class:`Variable` objects.  The reader resolves TFLite's
  ``VAR_HANDLE``/``CALL_ONCE`` machinery, so in the IR a ``READ_VARIABLE`` op has no inputs and a
  ``ASSIGN_VARIABLE`` op one input, and both carry :class:`VariableOptions` naming the variable.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field

import numpy as np


class DType(str, enum.Enum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    INT32 = "int32"
    INT64 = "int64"
    BOOL = "bool"
    RESOURCE = "resource"

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype of this element type (resource handles are int32 ids)."""
        return np.dtype("int32" if self is DType.RESOURCE else self.value)

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_quantized_type(self) -> bool:
        return self in (DType.INT8, DType.UINT8, DType.INT16)


class Padding(str, enum.Enum):
    SAME = "SAME"
    VALID = "VALID"


class Activation(str, enum.Enum):
    """Fused activation functions, named as in the TFLite schema."""

    NONE = "NONE"
    RELU = "RELU"
    RELU_N1_TO_1 = "RELU_N1_TO_1"
    RELU6 = "RELU6"
    TANH = "TANH"
    SIGN_BIT = "SIGN_BIT"


@dataclass(frozen=True)
class QuantParams:
    """Affine quantization: ``real = scale[c] * (q - zero_point[c])``.

    ``scale`` and ``zero_point`` have one entry (per-tensor) or one per slice along ``axis``
    (per-channel).  Scales are the float32 values stored in the model, widened to Python floats.
    """

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    def __post_init__(self) -> None:
        if len(self.scale) != len(self.zero_point) or not self.scale:
            raise ValueError("QuantParams needs as many zero points as scales, and at least one")

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1

    @property
    def single_scale(self) -> float:
        if self.per_channel:
            raise ValueError("per-channel quantization has no single scale")
        return self.scale[0]

    @property
    def single_zero_point(self) -> int:
        if self.per_channel:
            raise ValueError("per-channel quantization has no single zero point")
        return self.zero_point[0]


@dataclass(frozen=True, eq=False)
class Tensor:
    """A tensor of the graph.  ``data`` is set (read-only) for constants, else ``None``."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: DType
    quant: QuantParams | None = None
    data: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.data is not None and self.data.flags.writeable:
            arr = np.array(self.data, copy=True)
            arr.setflags(write=False)
            object.__setattr__(self, "data", arr)

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def num_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.num_elements * self.dtype.itemsize


# ---------------------------------------------------------------------------------------------
# Operator options.  One frozen dataclass per family; ops without options use ``NoOptions``.


@dataclass(frozen=True)
class NoOptions:
    pass


@dataclass(frozen=True)
class Conv2DOptions:
    padding: Padding
    stride_h: int
    stride_w: int
    dilation_h: int = 1
    dilation_w: int = 1
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class DepthwiseConv2DOptions:
    padding: Padding
    stride_h: int
    stride_w: int
    depth_multiplier: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class FullyConnectedOptions:
    activation: Activation = Activation.NONE
    keep_num_dims: bool = False


@dataclass(frozen=True)
class Pool2DOptions:
    padding: Padding
    stride_h: int
    stride_w: int
    filter_h: int
    filter_w: int
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class ActivationOptions:
    """For element-wise binary ops (ADD, SUB, MUL) that carry only a fused activation."""

    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class ConcatenationOptions:
    axis: int
    activation: Activation = Activation.NONE


@dataclass(frozen=True)
class ReshapeOptions:
    new_shape: tuple[int, ...]


@dataclass(frozen=True)
class SqueezeOptions:
    squeeze_dims: tuple[int, ...] = ()


@dataclass(frozen=True)
class StridedSliceOptions:
    begin_mask: int = 0
    end_mask: int = 0
    ellipsis_mask: int = 0
    new_axis_mask: int = 0
    shrink_axis_mask: int = 0
    offset: bool = False


@dataclass(frozen=True)
class SplitOptions:
    num_splits: int


@dataclass(frozen=True)
class ReducerOptions:
    keep_dims: bool = False


@dataclass(frozen=True)
class SoftmaxOptions:
    beta: float = 1.0


@dataclass(frozen=True)
class LeakyReluOptions:
    alpha: float


@dataclass(frozen=True)
class PackOptions:
    """PACK (stack ``values_count`` tensors along a new ``axis``).  Not a supported op: the
    reader needs it to fold Keras' constant shape computations."""

    axis: int
    values_count: int


@dataclass(frozen=True)
class VariableOptions:
    """Names the :class:`Variable` a READ_VARIABLE / ASSIGN_VARIABLE op works on."""

    variable: int


OpOptions = (
    NoOptions
    | Conv2DOptions
    | DepthwiseConv2DOptions
    | FullyConnectedOptions
    | Pool2DOptions
    | ActivationOptions
    | ConcatenationOptions
    | ReshapeOptions
    | SqueezeOptions
    | StridedSliceOptions
    | SplitOptions
    | ReducerOptions
    | SoftmaxOptions
    | LeakyReluOptions
    | PackOptions
    | VariableOptions
)


# The operators boardfit reads, executes and generates code for (TFLite builtin names).
SUPPORTED_OPS: tuple[str, ...] = (
    "ABS",
    "ADD",
    "ASSIGN_VARIABLE",
    "AVERAGE_POOL_2D",
    "CONCATENATION",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "DEQUANTIZE",
    "EXPAND_DIMS",
    "FULLY_CONNECTED",
    "HARD_SWISH",
    "LEAKY_RELU",
    "LOGISTIC",
    "MAXIMUM",
    "MAX_POOL_2D",
    "MEAN",
    "MINIMUM",
    "MUL",
    "PAD",
    "PRELU",
    "QUANTIZE",
    "READ_VARIABLE",
    "RELU",
    "RELU6",
    "RESHAPE",
    "RSQRT",
    "SOFTMAX",
    "SPLIT",
    "SPLIT_V",
    "SQRT",
    "SQUEEZE",
    "STRIDED_SLICE",
    "SUB",
    "TANH",
    "TRANSPOSE",
)


@dataclass(frozen=True)
class Op:
    """One operator application.  ``index`` is its position in ``Graph.ops``."""

    index: int
    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: OpOptions = NoOptions()
    name: str = ""

    @property
    def label(self) -> str:
        """A short human name: ``CONV_2D#3`` or the output tensor's name if the reader set it."""
        return self.name or f"{self.opcode}#{self.index}"


@dataclass(frozen=True, eq=False)
class Variable:
    """Persistent state of a streaming model (a TFLite resource variable)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: DType
    quant: QuantParams | None
    initial: np.ndarray = field(repr=False)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass(frozen=True, eq=False)
class Graph:
    """A whole model: tensors, ops in execution order, graph inputs/outputs and variables."""

    name: str
    tensors: tuple[Tensor, ...]
    ops: tuple[Op, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    variables: tuple[Variable, ...] = ()
    source_sha256: str = ""

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    @property
    def input_tensors(self) -> tuple[Tensor, ...]:
        return tuple(self.tensors[i] for i in self.inputs)

    @property
    def output_tensors(self) -> tuple[Tensor, ...]:
        return tuple(self.tensors[i] for i in self.outputs)

    @property
    def is_stateful(self) -> bool:
        return bool(self.variables)

    def producers(self) -> dict[int, Op]:
        """Map tensor index → the op that writes it."""
        return {t: op for op in self.ops for t in op.outputs}

    def consumers(self) -> dict[int, list[Op]]:
        """Map tensor index → the ops that read it, in execution order."""
        out: dict[int, list[Op]] = {}
        for op in self.ops:
            for t in op.inputs:
                if t >= 0:
                    out.setdefault(t, []).append(op)
        return out

    def content_hash(self) -> str:
        """A stable hash of the graph's structure and constants (hex sha256).

        Used in generated banners and the device's info reply so that a device running another
        model is refused.  It does not depend on the file bytes (tensor order, metadata).
        """
        h = hashlib.sha256()
        for t in self.tensors:
            h.update(repr((t.index, t.shape, t.dtype.value, t.quant)).encode())
            if t.data is not None:
                h.update(np.ascontiguousarray(t.data).tobytes())
        for op in self.ops:
            h.update(repr((op.opcode, op.inputs, op.outputs, op.options)).encode())
        h.update(repr((self.inputs, self.outputs)).encode())
        for v in self.variables:
            h.update(repr((v.shape, v.dtype.value, v.quant)).encode())
            h.update(np.ascontiguousarray(v.initial).tobytes())
        return h.hexdigest()
