"""Constant folding of a freshly read graph.

Converters leave small constant computations in models, above all Keras 3's Flatten, which
computes its target shape at run time: ``SHAPE(x) → STRIDED_SLICE → PACK → RESHAPE(x, ·)``.
Because IR shapes are static, ``SHAPE`` is always constant, and so is everything downstream of
it that only reads constants.  :func:`fold_constants` evaluates such ops once; their outputs
become constant tensors (same index) and the ops disappear.  It also records every remaining
``RESHAPE``'s target in :class:`~toolkit.model.ir.ReshapeOptions`, resolved against the input
size (``-1`` filled in), so that no later stage has to look at a shape operand.

Evaluation:

* The shape-domain ops (SHAPE, STRIDED_SLICE, PACK, CONCATENATION, RESHAPE, SQUEEZE, EXPAND_DIMS,
  CAST, REDUCE_PROD) are evaluated here with numpy, following TFLite's semantics, whenever no
  requantization is involved.
* Other supported ops on constants go through the oracle's kernels when the oracle is installed
  (``toolkit.oracle.registry.KERNELS``), restricted to ops whose output cannot be larger than
  their inputs; if a kernel cannot evaluate them, the op stays in the graph.
* Ops in ``keep`` are never folded: by default DEQUANTIZE, because float16 (or int8) weights
  behind a DEQUANTIZE are a storage format the code generator keeps.

Like TFLite's ``Prepare``, a folded output takes the computed shape when the file declares a
different one.  Inputs are untrusted: a constant computation that TFLite would reject raises
:class:`~toolkit.errors.ModelError` naming the op, and the work is bounded (an op is folded only
if its inputs hold at most ``MAX_FOLD_ELEMENTS`` elements; all folds together at most
``FOLD_BUDGET``), so a hostile file cannot make folding allocate unbounded memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from toolkit.errors import ModelError
from toolkit.model.ir import (
    SUPPORTED_OPS,
    Activation,
    ConcatenationOptions,
    DType,
    Graph,
    Op,
    PackOptions,
    ReducerOptions,
    ReshapeOptions,
    SqueezeOptions,
    StridedSliceOptions,
    Tensor,
)

log = logging.getLogger(__name__)

KEEP_DEFAULT: frozenset[str] = frozenset({"DEQUANTIZE"})
MAX_FOLD_ELEMENTS = 1 << 22
MAX_RANK = 32
FOLD_BUDGET = 1 << 24

# Supported ops the oracle may fold: their outputs are never larger than their inputs
# (binary ops: once the broadcast shape is checked against the declared output).
_ORACLE_UNARY = frozenset({
    "ABS", "RSQRT", "SQRT", "LOGISTIC", "TANH", "RELU", "RELU6", "LEAKY_RELU", "HARD_SWISH",
    "QUANTIZE", "DEQUANTIZE", "SOFTMAX", "TRANSPOSE", "MEAN", "CONCATENATION", "STRIDED_SLICE",
    "SPLIT", "SPLIT_V", "SQUEEZE", "EXPAND_DIMS", "RESHAPE",
})
_ORACLE_BINARY = frozenset({"ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "PRELU"})


class FoldError(ModelError):
    """A constant computation in the model is invalid (TFLite would reject it as well)."""


def fold_constants(graph: Graph, keep: frozenset[str] = KEEP_DEFAULT) -> Graph:
    """``graph`` with constant ops evaluated and removed, and RESHAPE targets resolved.

    Op indices are left as they are (the reader renumbers after its checks).
    """
    return _Folder(graph, keep).run()


def resolve_shape(target: Sequence[int], num_elements: int) -> tuple[int, ...]:
    """A RESHAPE target with its (at most one) ``-1`` filled in so that it holds ``num_elements``."""
    dims = [int(d) for d in target]
    if len(dims) > MAX_RANK:
        raise FoldError(f"target shape of rank {len(dims)} exceeds the maximum of {MAX_RANK}")
    unknown = [i for i, d in enumerate(dims) if d == -1]
    if len(unknown) > 1 or any(d < -1 for d in dims):
        raise FoldError(f"invalid target shape {dims} (at most one -1, no other negative sizes)")
    known = int(np.prod([d for d in dims if d != -1], dtype=object))
    if unknown:
        if known == 0 or num_elements % known:
            raise FoldError(f"cannot reshape {num_elements} elements into {dims}")
        dims[unknown[0]] = num_elements // known
    elif known != num_elements:
        raise FoldError(f"cannot reshape {num_elements} elements into {dims}")
    return tuple(dims)


class _Folder:
    def __init__(self, graph: Graph, keep: frozenset[str]) -> None:
        self.graph = graph
        self.keep = keep
        self.tensors: list[Tensor] = list(graph.tensors)
        self.values: dict[int, np.ndarray] = {t.index: t.data for t in graph.tensors if t.data is not None}
        self.budget = FOLD_BUDGET
        self.protected = set(graph.inputs)

    def run(self) -> Graph:
        ops: list[Op] = []
        for op in self.graph.ops:
            try:
                if self._fold(op):
                    continue
                if op.opcode == "RESHAPE":
                    op = self._resolve_reshape(op)
            except FoldError as exc:
                raise FoldError(f"{self.graph.name}: operator {op.index} ({op.opcode}): {exc}") from exc
            ops.append(op)
        return replace(self.graph, tensors=tuple(self.tensors), ops=tuple(ops))

    # -- folding --------------------------------------------------------------------------------

    def _foldable(self, op: Op) -> bool:
        present = [i for i in op.inputs if i >= 0]
        if op.opcode in self.keep or not present or not op.outputs:
            return False
        if any(o in self.values or o in self.protected for o in op.outputs):
            return False  # a malformed graph; the reader's data-flow check reports it
        if op.opcode == "SHAPE":
            return True  # shapes are static
        if not all(i in self.values for i in present):
            return False
        cost = sum(int(self.values[i].size) for i in present)
        if cost > MAX_FOLD_ELEMENTS or cost > self.budget:
            log.debug("not folding %s#%d: %d input elements exceed the limits", op.opcode, op.index, cost)
            return False
        self.budget -= cost
        return True

    def _fold(self, op: Op) -> bool:
        if not self._foldable(op):
            return False
        own = _EVALUATORS.get(op.opcode)
        try:
            results = own(self, op) if own is not None else None
        except (ValueError, IndexError, TypeError) as exc:  # numpy rejecting hostile operands
            raise FoldError(f"cannot evaluate on its constant inputs: {exc}") from exc
        if results is None:
            results = self._oracle(op)
            if results is None:
                return False
        elif len(results) != len(op.outputs):
            raise FoldError(f"has {len(op.outputs)} outputs, its evaluation gives {len(results)}")
        for idx, value in zip(op.outputs, results, strict=True):
            self._set_constant(idx, value, op)
        return True

    def _set_constant(self, idx: int, value: np.ndarray, op: Op) -> None:
        t = self.tensors[idx]
        if value.dtype != t.dtype.numpy:
            raise FoldError(f"output {t.name!r} is declared {t.dtype.value}, the op computes {value.dtype}")
        shape = tuple(int(d) for d in value.shape)
        if shape != t.shape:
            log.debug("%s#%d: %r declared %s, computed %s", op.opcode, op.index, t.name, t.shape, shape)
        value = np.array(value, copy=True)
        value.setflags(write=False)
        self.values[idx] = value
        self.tensors[idx] = Tensor(t.index, t.name, shape, t.dtype, t.quant, value)

    def _oracle(self, op: Op) -> list[np.ndarray] | None:
        """Evaluate a supported op with the oracle's kernel, or None if that is not possible."""
        if op.opcode not in SUPPORTED_OPS or not (op.opcode in _ORACLE_UNARY or op.opcode in _ORACLE_BINARY):
            return None
        outs = [self.tensors[o] for o in op.outputs]
        if sum(t.num_elements for t in outs) > MAX_FOLD_ELEMENTS:
            return None
        if op.opcode in _ORACLE_BINARY:
            shapes = [self.values[i].shape for i in op.inputs if i >= 0]
            try:
                if len(outs) != 1 or tuple(np.broadcast_shapes(*shapes)) != outs[0].shape:
                    return None
            except ValueError:
                return None
        kernel = _oracle_kernel(op.opcode)
        if kernel is None:
            return None
        from toolkit.oracle.registry import OpContext

        snapshot = replace(self.graph, tensors=tuple(self.tensors))
        values = tuple(self.values[i] if i >= 0 else None for i in op.inputs)
        try:
            with np.errstate(all="ignore"):
                results = kernel(OpContext(snapshot, op, values))
        # The kernels are written for valid graphs; on a hostile file they may fail in any way.
        # Folding is an optimisation, so the op is then simply kept for the oracle to run.
        except Exception as exc:
            log.debug("not folding %s#%d: oracle kernel failed: %s", op.opcode, op.index, exc)
            return None
        if len(results) != len(outs) or any(
            r.dtype != t.dtype.numpy or tuple(r.shape) != t.shape for r, t in zip(results, outs, strict=True)
        ):
            return None
        return list(results)

    # -- RESHAPE --------------------------------------------------------------------------------

    def _reshape_target(self, op: Op) -> tuple[int, ...]:
        """Where TFLite takes a RESHAPE's target from: the shape operand if it is a 1-D
        constant, else the options, else the declared output shape."""
        if len(op.inputs) > 1 and op.inputs[1] >= 0:
            shape = self.values.get(op.inputs[1])
            if shape is not None and shape.ndim == 1:
                if shape.dtype.kind not in "iu":
                    raise FoldError(f"the shape operand must be an integer vector, is {shape.dtype}")
                return tuple(int(d) for d in shape.tolist())
        if isinstance(op.options, ReshapeOptions) and op.options.new_shape:
            return op.options.new_shape
        return self.tensors[op.outputs[0]].shape

    def _resolve_reshape(self, op: Op) -> Op:
        if not op.inputs or op.inputs[0] < 0 or len(op.outputs) != 1:
            raise FoldError("RESHAPE needs a data input and one output")
        data = self.tensors[op.inputs[0]]
        shape = resolve_shape(self._reshape_target(op), data.num_elements)
        out = self.tensors[op.outputs[0]]
        if out.shape != shape and out.data is None:
            log.debug("RESHAPE#%d: output %r declared %s, resolved %s", op.index, out.name, out.shape, shape)
            self.tensors[out.index] = replace(out, shape=shape)
        return replace(op, options=ReshapeOptions(shape))

    # -- helpers for the evaluators -------------------------------------------------------------

    def value(self, op: Op, k: int) -> np.ndarray:
        if k >= len(op.inputs) or op.inputs[k] < 0:
            raise FoldError(f"input {k} is missing")
        return self.values[op.inputs[k]]

    def int_vector(self, op: Op, k: int) -> list[int]:
        v = self.value(op, k)
        if v.dtype.kind not in "iu" or v.ndim > 1:
            raise FoldError(f"input {k} must be an integer vector, got {v.dtype}{list(v.shape)}")
        return [int(x) for x in v.reshape(-1).tolist()]

    def same_quant(self, indices: Sequence[int]) -> bool:
        """Whether these tensors share one quantization (moving data needs no requantization)."""
        return len({repr(self.tensors[i].quant) for i in indices if i >= 0}) <= 1


# ---------------------------------------------------------------------------------------------
# Shape-domain evaluators.  Each returns the outputs, or None to leave the op to the oracle.


def _axis(axis: int, rank: int, what: str) -> int:
    """``axis`` normalised into [0, rank); TFLite accepts [-rank, rank)."""
    if not -rank <= axis < rank:
        raise FoldError(f"{what} {axis} is outside [{-rank}, {rank})")
    return axis % rank


def _shape(f: _Folder, op: Op) -> list[np.ndarray]:
    out = f.tensors[op.outputs[0]].dtype
    if out not in (DType.INT32, DType.INT64):
        raise FoldError(f"SHAPE output must be int32 or int64, is {out.value}")
    return [np.array(f.tensors[op.inputs[0]].shape, dtype=out.numpy)]


def _slice_bounds(size: int, begin: int, end: int, stride: int, bit: int, o: StridedSliceOptions) -> range:
    """Indices one axis of TFLite's STRIDED_SLICE visits (strided_slice_logic.h semantics)."""
    start = begin + size if begin < 0 else begin
    start = min(max(start, 0), size) if stride > 0 else min(max(start, -1), size - 1)
    if o.begin_mask & bit:
        start = 0 if stride > 0 else size - 1
    if o.shrink_axis_mask & bit:
        if not 0 <= start < size:
            raise FoldError(f"shrinking index {begin} is out of range for an axis of size {size}")
        return range(start, start + 1)
    stop = end + start if o.offset else end
    stop = stop + size if stop < 0 else stop
    stop = min(max(stop, 0), size) if stride > 0 else min(max(stop, -1), size - 1)
    if o.end_mask & bit:
        stop = size if stride > 0 else -1
    return range(start, stop, stride)


def _strided_slice(f: _Folder, op: Op) -> list[np.ndarray] | None:
    o = op.options
    if not isinstance(o, StridedSliceOptions) or o.ellipsis_mask or o.new_axis_mask:
        return None
    if not f.same_quant((op.inputs[0], *op.outputs)):
        return None
    data = f.value(op, 0)
    begin, end, strides = f.int_vector(op, 1), f.int_vector(op, 2), f.int_vector(op, 3)
    if not len(begin) == len(end) == len(strides) <= data.ndim:
        lengths = f"{len(begin)}/{len(end)}/{len(strides)}"
        raise FoldError(f"begin/end/strides have lengths {lengths} for an input of rank {data.ndim}")
    if any(s == 0 for s in strides):
        raise FoldError("a stride is 0")
    out = data
    kept: list[int] = []
    for axis in range(data.ndim):
        if axis >= len(begin):  # unspecified trailing axes are taken whole
            kept.append(data.shape[axis])
            continue
        bit = 1 << axis
        idx = _slice_bounds(data.shape[axis], begin[axis], end[axis], strides[axis], bit, o)
        out = np.take(out, np.asarray(idx, dtype=np.int64), axis=axis)
        if not o.shrink_axis_mask & bit:
            kept.append(len(idx))
    return [out.reshape(kept)]


def _pack(f: _Folder, op: Op) -> list[np.ndarray] | None:
    o = op.options
    if not isinstance(o, PackOptions) or not f.same_quant((*op.inputs, *op.outputs)):
        return None
    parts = [f.value(op, k) for k in range(len(op.inputs))]
    if len({(p.shape, p.dtype) for p in parts}) != 1:
        raise FoldError("PACK inputs differ in shape or type")
    return [np.stack(parts, axis=_axis(o.axis, parts[0].ndim + 1, "pack axis"))]


def _concatenation(f: _Folder, op: Op) -> list[np.ndarray] | None:
    o = op.options
    if not isinstance(o, ConcatenationOptions) or o.activation is not Activation.NONE:
        return None
    if not f.same_quant((*op.inputs, *op.outputs)):
        return None
    parts = [f.value(op, k) for k in range(len(op.inputs))]
    rank = parts[0].ndim
    axis = _axis(o.axis, rank, "concatenation axis")
    outer = [p.shape[:axis] + p.shape[axis + 1 :] for p in parts]
    if any(p.ndim != rank or p.dtype != parts[0].dtype for p in parts) or len(set(outer)) != 1:
        raise FoldError("CONCATENATION inputs differ in rank, type or non-axis dimensions")
    return [np.concatenate(parts, axis=axis)]


def _reshape(f: _Folder, op: Op) -> list[np.ndarray] | None:
    data = f.value(op, 0)  # TFLite's RESHAPE copies bytes whatever the quantization
    return [data.reshape(resolve_shape(f._reshape_target(op), data.size))]


def _squeeze(f: _Folder, op: Op) -> list[np.ndarray] | None:
    data = f.value(op, 0)
    dims = op.options.squeeze_dims if isinstance(op.options, SqueezeOptions) else ()
    axes = {_axis(d, data.ndim, "squeeze dimension") for d in dims} if dims else {
        a for a, n in enumerate(data.shape) if n == 1
    }
    if any(data.shape[a] != 1 for a in axes):
        raise FoldError(f"cannot squeeze dimensions {sorted(axes)} of shape {list(data.shape)}")
    return [data.reshape([n for a, n in enumerate(data.shape) if a not in axes])]


def _expand_dims(f: _Folder, op: Op) -> list[np.ndarray] | None:
    data = f.value(op, 0)
    axis = f.int_vector(op, 1)
    if len(axis) != 1:
        raise FoldError("EXPAND_DIMS needs one axis")
    return [np.expand_dims(data, _axis(axis[0], data.ndim + 1, "expand_dims axis"))]


def _cast(f: _Folder, op: Op) -> list[np.ndarray] | None:
    data = f.value(op, 0)
    target = f.tensors[op.outputs[0]].dtype.numpy
    if data.dtype.kind == "f" and target.kind in "iu" and data.size:
        info = np.iinfo(target)
        if not np.isfinite(data).all() or data.min() < info.min or data.max() > info.max:
            return None  # C's float → int conversion is undefined there: do not guess
    return [data.astype(target)]


def _reduce_prod(f: _Folder, op: Op) -> list[np.ndarray] | None:
    data = f.value(op, 0)
    if data.dtype.kind not in "iu" or f.tensors[op.inputs[0]].quant is not None:
        return None
    axes = {_axis(a, max(data.ndim, 1), "reduction axis") for a in f.int_vector(op, 1)}
    keep = isinstance(op.options, ReducerOptions) and op.options.keep_dims
    return [np.prod(data, axis=tuple(axes), keepdims=keep, dtype=data.dtype)]


_Evaluator = Callable[[_Folder, Op], "list[np.ndarray] | None"]

_EVALUATORS: dict[str, _Evaluator] = {
    "SHAPE": _shape,
    "STRIDED_SLICE": _strided_slice,
    "PACK": _pack,
    "CONCATENATION": _concatenation,
    "RESHAPE": _reshape,
    "SQUEEZE": _squeeze,
    "EXPAND_DIMS": _expand_dims,
    "CAST": _cast,
    "REDUCE_PROD": _reduce_prod,
}


def _oracle_kernel(opcode: str) -> Callable[..., list[np.ndarray]] | None:
    """The oracle's kernel for ``opcode``, or None if the oracle (or the kernel) is missing."""
    try:
        from toolkit.oracle import kernels as _kernels  # noqa: F401  (fills the registry)
        from toolkit.oracle.registry import KERNELS
    except ImportError as exc:  # the oracle is optional for reading
        log.debug("oracle kernels unavailable for folding: %s", exc)
        return None
    return KERNELS.get(opcode)
