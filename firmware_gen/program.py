"""Every decision about a model's C code, made in Python before anything is rendered.

:func:`build_program` lowers each op to a :class:`~firmware_gen.lower.KernelCall`, plans the
arena, names the weight arrays and lays out the one parameter object, and records for every
kernel argument where its bytes live (arena offset, weight array, state array, NULL).  The
templates only print a :class:`ModelProgram`; size accounting (:mod:`firmware_gen.sizes`) reads
the same object, so the bytes it predicts are the bytes the templates emit.

Memory layout rules that make sizes exact on any link order:

* every weight / state array is 8-byte aligned *and* padded to a multiple of 8 bytes, so arrays
  in one section pack without gaps in any order;
* all kernel parameters (structs, per-channel tables, pointer lists) are members of one object
  ``bf_params`` whose type is 8-byte aligned: its size follows from the C layout rules alone.

Compressed models (``build_program(graph, compressed=cm)``, a
:class:`~toolkit.compress.model.CompressedModel` of ``graph``): each compressed op runs its
layer's own :class:`~firmware_gen.lower.KernelCall` instead of the lowering's, and

* every :class:`~firmware_gen.lower.ConstArray` of such a call (packed weights, codebooks,
  sparse streams, bit planes, per-channel tables) becomes a weight array of its own in flash,
  8-byte aligned and padded like the others, which its params struct points at — so a layer's
  weight bytes are exactly its ``Option.flash_bytes`` (``toolkit.compress.base.array_flash_bytes``);
* a layer whose ``Option.persistent_ram_bytes`` is non-zero declares that **its scratch is
  persistent**: a buffer of ``call.scratch_bytes`` bytes owned by that one call for the
  program's lifetime (Huffman tables decoded once, ``bf_*_sparse_hboot_s8``).  It is not placed
  in the arena (whose bytes other ops reuse) but in the persistent area ``bf_persist`` (section
  ``.bss.bf_persist``, counted in RAM as ``persistent_bytes``), never cleared by the generated
  code: the kernel initialises it itself on its first call and checks it on every call (the tag
  contract of ``bf_sparse.h``), so the decode runs once, at the first invocation;
* the plan hash is :func:`compressed_plan_hash` (the resolved spec and the packed storage), so
  a device refuses to be validated against another compression.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_gen import cdecl
from firmware_gen.arena import ArenaPlan, plan_arena
from firmware_gen.lower import (
    SCRATCH_RULES,
    STATE_OPS,
    ConstArray,
    KernelCall,
    Struct,
    TensorArg,
    TensorListArg,
    lower_op,
)
from firmware_gen.render import c_ident
from targets import isa
from toolkit.errors import BuildError
from toolkit.model.ir import DType, Graph, Op, Tensor, VariableOptions

if TYPE_CHECKING:
    from toolkit.compress.model import CompressedModel

ALIGN = 8  # alignment of the arena, every weight/state array and the params object
MAX_RANK = 6  # BF_MAX_RANK of firmware_gen/runtime/bf_model_api.h
NO_PLAN_HASH = "0" * 64  # bf_plan_hash when no compression plan was applied
API_NAME_BYTES = 63  # tensor names in the model API are cut to this many UTF-8 bytes

CTYPES: dict[DType, str] = {
    DType.INT8: "int8_t",
    DType.UINT8: "uint8_t",
    DType.INT16: "int16_t",
    DType.INT32: "int32_t",
    DType.INT64: "int64_t",
    DType.FLOAT32: "float",
    DType.FLOAT16: "uint16_t",  # raw IEEE half bits
    DType.BOOL: "uint8_t",
}
# dtype codes in model.h (BF_DTYPE_*), stable: the serial protocol reports them.
DTYPE_CODES: dict[DType, int] = {
    DType.FLOAT32: 1,
    DType.INT8: 2,
    DType.UINT8: 3,
    DType.INT16: 4,
    DType.INT32: 5,
    DType.INT64: 6,
    DType.FLOAT16: 7,
    DType.BOOL: 8,
}
_NAME_CHARS = 40  # identifier characters kept from a tensor name (the index keeps names unique)


def round_up(n: int, a: int = ALIGN) -> int:
    return (n + a - 1) // a * a


@dataclass(frozen=True)
class IOSpec:
    """A graph input or output: where it lives in the arena and how to interpret its bytes."""

    position: int
    tensor: int
    name: str
    shape: tuple[int, ...]
    dtype: DType
    scale: float | None
    zero_point: int | None
    nbytes: int
    offset: int

    @property
    def ctype(self) -> str:
        return CTYPES[self.dtype]

    @property
    def dtype_code(self) -> int:
        return DTYPE_CODES[self.dtype]

    @property
    def dims(self) -> tuple[int, ...]:
        """``shape`` padded with zeros to MAX_RANK entries (bf_tensor_spec.dims)."""
        return (*self.shape, *(0,) * (MAX_RANK - len(self.shape)))

    @property
    def api_name(self) -> bytes:
        """The name as the model API carries it: UTF-8, at most API_NAME_BYTES bytes, cut at a
        character boundary (the graph index identifies the tensor; the name is for people)."""
        raw = self.name.encode("utf-8")[:API_NAME_BYTES]
        return raw.decode("utf-8", "ignore").encode("utf-8")


@dataclass(frozen=True)
class DebugTensor:
    """An intermediate tensor a debug build keeps: right after op ``op_index`` ran, its bytes are
    copied from the arena (``spec.offset``) to ``debug_offset`` in the debug area, where
    bf_model_tensor() finds them after the invocation (the arena may reuse them meanwhile)."""

    id: int
    op_index: int
    spec: IOSpec
    debug_offset: int


@dataclass(frozen=True)
class DebugPlan:
    """Every op output in op order, each in its own 8-byte aligned slot of the debug area."""

    tensors: tuple[DebugTensor, ...]
    size: int

    def range_of(self, op_index: int) -> tuple[int, int]:
        """(first id, count) of the tensors op ``op_index`` writes (count 0: none)."""
        ids = [t.id for t in self.tensors if t.op_index == op_index]
        return (ids[0], len(ids)) if ids else (0, 0)


@dataclass(frozen=True)
class DataArray:
    """A weight (``static const``) or state array: ``values`` flat in the C element type,
    ``length`` elements declared (padded so that the array is a multiple of 8 bytes)."""

    symbol: str
    name: str
    ctype: str
    values: np.ndarray = field(repr=False)
    length: int
    source: str  # what it holds, for the comment: "tensor 3 int8[8, 3, 3, 1]"
    tensor: int = -1  # the constant tensor it holds (weights), -1 for state and layer tables
    op_index: int = -1  # the compressed op whose table it is (-1: a tensor or state)

    @property
    def nbytes(self) -> int:
        return self.length * self.values.dtype.itemsize

    @property
    def all_zero(self) -> bool:
        return not np.any(self.values)


@dataclass(frozen=True)
class Pointer:
    """Where a kernel argument (or an entry of a pointer list) points.

    ``kind``: ``arena`` (``&bf_arena[offset]``), ``persist`` (``&bf_persist[offset]``: the
    persistent scratch of one op), ``weight``/``state`` (the array ``symbol``), ``params``
    (member ``symbol`` of ``bf_params``) or ``null``.  ``ctype`` is the pointee type
    the kernel takes (``void`` for byte movers), ``const`` whether it only reads.
    """

    kind: str
    ctype: str = "void"
    const: bool = True
    offset: int = 0
    symbol: str = ""
    array_ctype: str = ""  # element type of a weight/state array (a cast is needed if it differs)


@dataclass(frozen=True)
class PersistentBuffer:
    """The persistent scratch of op ``op_index`` (see the module docstring): ``nbytes`` (its
    call's ``scratch_bytes``) at ``offset`` of ``bf_persist``; slots are 8-byte aligned."""

    op_index: int
    offset: int
    nbytes: int


@dataclass(frozen=True)
class CArrayRef:
    """An address constant in a params initializer: the weight array ``symbol`` (a compressed
    layer's table), printed as the symbol itself (cdecl's CRef names ``bf_params`` members)."""

    symbol: str
    kind = "symbol"


@dataclass(frozen=True)
class ParamsMember:
    """One member of the ``bf_params`` object.

    ``kind``: ``struct`` (a kernel's params; ``ctype`` its typedef, ``value`` a CStruct),
    ``table`` (a constant array a params field points at; ``ctype`` its element type) or
    ``pointers`` (a list of data pointers; ``value`` a tuple of Pointer).
    """

    name: str
    kind: str
    ctype: str
    value: Any = field(repr=False)
    length: int = 0

    def layout(self, model: cdecl.DataModel) -> tuple[int, int]:
        if self.kind == "struct":
            return cdecl.layout(cdecl.ctype(self.ctype), model)
        if self.kind == "pointers":
            return self.length * model.pointer_bytes, model.pointer_bytes
        size, align = cdecl.layout(cdecl.ctype(self.ctype), model)
        return size * self.length, align


@dataclass(frozen=True)
class Step:
    """One op of the invoke function: a kernel call or a state copy (``memcpy``)."""

    op_index: int
    opcode: str
    label: str
    kind: str  # "kernel" | "copy"
    symbol: str = ""
    params: str = ""  # bf_params member of the kernel's params struct
    args: tuple[Pointer, ...] = ()
    copy_bytes: int = 0


@dataclass(frozen=True)
class ModelProgram:
    graph: Graph
    name: str
    model_hash: str
    calls: Mapping[int, KernelCall]
    arena: ArenaPlan
    weights: tuple[DataArray, ...]
    states: tuple[DataArray, ...]
    state_inits: tuple[DataArray, ...]  # const copies of non-zero initial state (for reset)
    members: tuple[ParamsMember, ...]
    steps: tuple[Step, ...]
    inputs: tuple[IOSpec, ...]
    outputs: tuple[IOSpec, ...]
    kernel_families: tuple[str, ...]  # sorted families (kernels/<variant>/<family>.c)
    symbols: tuple[str, ...]  # sorted kernel symbols called
    debug: DebugPlan = field(default_factory=lambda: DebugPlan((), 0))
    plan_hash: str = NO_PLAN_HASH  # hex sha256 of the compression plan (zeros: none)
    variants: tuple[str, ...] = ("ref",)  # kernel variants of the build, preference order
    # op index -> the variant whose code runs it ("ref" where no optimized kernel applies)
    layer_variants: Mapping[int, str] = field(default_factory=dict)
    persistent: tuple[PersistentBuffer, ...] = ()  # persistent scratch, in op order
    compressed_ops: tuple[int, ...] = ()  # ops that run a compressed layer's call

    @property
    def num_layers(self) -> int:
        """bf_model_num_layers: one per step (BF_LAYER_HOOK(i) runs after step i = op i)."""
        return len(self.steps)

    @property
    def weights_bytes(self) -> int:
        return sum(w.nbytes for w in self.weights) + sum(s.nbytes for s in self.state_inits)

    @property
    def state_bytes(self) -> int:
        return sum(s.nbytes for s in self.states)

    @property
    def persistent_bytes(self) -> int:
        """Bytes of ``bf_persist`` (0: the model has no persistent scratch)."""
        return sum(round_up(b.nbytes) for b in self.persistent)

    def layer_weights_bytes(self, op_index: int) -> int:
        """Flash bytes of one op's constants: its tables and the constant tensors it reads (a
        compressed layer's ``Option.flash_bytes``)."""
        tensors = set(self.calls[op_index].input_tensors) if op_index in self.calls else set()
        return sum(w.nbytes for w in self.weights if w.op_index == op_index or w.tensor in tensors)

    @property
    def arena_bytes(self) -> int:
        return self.arena.size

    def params_bytes(self, model: cdecl.DataModel) -> int:
        """Bytes of the ``bf_params`` object on a target with data model ``model``."""
        return _params_layout(self.members, model)[0]

    @property
    def has_nonfinite(self) -> bool:
        """Whether any float constant is NaN/inf (model.c then needs <math.h>)."""
        arrays = [w.values for w in self.weights if w.values.dtype.kind == "f"]
        arrays += [m.value for m in self.members if m.kind == "table" and m.value.dtype.kind == "f"]
        return any(not np.all(np.isfinite(a)) for a in arrays) or _struct_nonfinite(self.members)


def _struct_nonfinite(members: Sequence[ParamsMember]) -> bool:
    def walk(v: Any) -> bool:
        if isinstance(v, cdecl.CStruct):
            return any(walk(x) for _, x in v.fields)
        if isinstance(v, cdecl.CNumber):
            return isinstance(v.value, float) and not np.isfinite(v.value)
        if isinstance(v, cdecl.CArray):
            return v.values.dtype.kind == "f" and not bool(np.all(np.isfinite(v.values)))
        return False

    return any(walk(m.value) for m in members if m.kind == "struct")


def _params_layout(members: Sequence[ParamsMember], model: cdecl.DataModel) -> tuple[int, int]:
    offset, align = 0, ALIGN
    for m in members:
        size, a = m.layout(model)
        offset = round_up(offset, a) + size
        align = max(align, a)
    return round_up(offset, align), align


# ---------------------------------------------------------------------------------------------
# Building the program.


def lower_graph(graph: Graph, variants: Sequence[str] = ("ref",),
                compressed: CompressedModel | None = None) -> dict[int, KernelCall]:
    """KernelCall of every op except the state copies.  ``variants`` (preference order, see
    targets/isa.py): each call is lowered for the variant whose source of its family the project
    compiles, so its scratch is that variant's.  The ops of ``compressed`` run their compressed
    layers' calls (:func:`compressed_calls`)."""
    layers = compressed_calls(graph, compressed) if compressed is not None else {}
    calls = {}
    for op in graph.ops:
        if op.opcode in STATE_OPS:
            continue
        if op.index in layers:
            calls[op.index] = _for_variant(layers[op.index], variants)
            continue
        call = lower_op(graph, op)
        variant = isa.family_variant(variants, call.family)
        calls[op.index] = call if variant == "ref" else lower_op(graph, op, variant)
    return calls


def _for_variant(call: KernelCall, variants: Sequence[str]) -> KernelCall:
    """A compressed layer's call with the scratch of the variant that compiles its family (the
    layer computed it for ``ref``; e.g. the dense int8 kernels of ``armv7em`` need more)."""
    rule = SCRATCH_RULES.get(isa.family_variant(variants, call.family), {}).get(call.symbol)
    return call if rule is None else replace(call, scratch_bytes=int(rule(call)))


def compressed_calls(graph: Graph, compressed: CompressedModel) -> dict[int, KernelCall]:
    """op index -> the call of its compressed layer, checked against ``graph``: the model must be
    a compression of this very graph, each call must read and write its op's activations, and a
    persistent scratch must be the call's whole scratch."""
    if compressed.graph is not graph and compressed.graph.content_hash() != graph.content_hash():
        raise BuildError(f"the compressed model was made from another graph than {graph.name!r}")
    out: dict[int, KernelCall] = {}
    for i, layer in sorted(compressed.layers.items()):
        if not 0 <= i < len(graph.ops):
            raise BuildError(f"compressed layer for op {i}: {graph.name!r} has {len(graph.ops)} ops")
        op, call = graph.ops[i], layer.call
        reads = [t for t in call.input_tensors if not graph.tensors[t].is_constant]
        if call.op_index != i or reads != [op.inputs[0]] or list(call.output_tensors) != list(op.outputs):
            raise BuildError(f"{op.label}: its compressed call {call.symbol} does not read and write "
                             "the op's activations")
        persistent = layer.option.persistent_ram_bytes
        if persistent and (persistent != call.scratch_bytes or not call.takes_scratch):
            raise BuildError(f"{op.label}: {persistent} persistent bytes but {call.symbol} has "
                             f"{call.scratch_bytes} bytes of scratch; a persistent scratch is all of it")
        out[i] = call
    return out


def persistent_ops(compressed: CompressedModel | None) -> frozenset[int]:
    """Ops whose scratch is persistent (``Option.persistent_ram_bytes`` > 0)."""
    if compressed is None:
        return frozenset()
    return frozenset(i for i, layer in compressed.layers.items() if layer.option.persistent_ram_bytes > 0)


def compressed_plan_hash(compressed: CompressedModel) -> str:
    """bf_plan_hash of a compressed model (hex sha256): of the resolved spec — every compressible
    op's method and parameters, as canonical JSON in op order — and of each layer's kernel and
    parameters, packed storage included.  Another spec, or the same spec calibrated on other
    data, gives another hash; the same compression always the same one."""
    h = hashlib.sha256(b"boardfit compression plan 1\n")
    for i, setting in sorted(compressed.settings.items()):
        doc = {"op": i, "method": setting.method, "params": dict(setting.params)}
        h.update(json.dumps(doc, sort_keys=True).encode() + b"\n")
        layer = compressed.layers.get(i)
        if layer is not None:
            h.update(hashlib.sha256(repr((layer.call.symbol, layer.call.params)).encode()).digest())
    return h.hexdigest()


def default_arena(graph: Graph, calls: Mapping[int, KernelCall], strategy: str = "greedy",
                  persistent: frozenset[int] = frozenset()) -> ArenaPlan:
    """The arena over the calls' scratch (except the ``persistent`` ops': theirs lives in
    ``bf_persist``) and in-place needs."""
    scratch = {i: c.scratch_bytes for i, c in calls.items() if c.scratch_bytes > 0 and i not in persistent}
    in_place = {i: c.in_place for i, c in calls.items() if c.in_place}
    return plan_arena(graph, scratch=scratch, in_place=in_place, strategy=strategy, alignment=ALIGN)


def build_program(
    graph: Graph, *, arena: ArenaPlan | None = None, strategy: str = "greedy", plan_hash: str | None = None,
    variants: Sequence[str] = ("ref",), compressed: CompressedModel | None = None,
) -> ModelProgram:
    """Lower, plan and lay out ``graph``; raises UnsupportedOp / BuildError with the op named.

    ``compressed``: a compression of ``graph`` whose layers replace their ops (see the module
    docstring).  ``plan_hash`` (64 hex digits) identifies the compression plan the graph was
    made with; the device reports it next to the model hash (default:
    :func:`compressed_plan_hash` of ``compressed``, else 32 zero bytes)."""
    if not graph.ops:
        raise BuildError(f"model {graph.name!r} has no operators")
    calls = lower_graph(graph, variants, compressed)
    if not calls:
        raise BuildError(f"model {graph.name!r} only copies state; there is nothing to compute")
    persistent_set = persistent_ops(compressed)
    plan = arena if arena is not None else default_arena(graph, calls, strategy, persistent_set)
    _check_arena_covers(graph, plan)
    persistent = _persistent_buffers(calls, persistent_set)
    weights = _weight_arrays(graph, calls)
    states, inits = _state_arrays(graph)
    layer_ops = frozenset(compressed.layers) if compressed is not None else frozenset()
    builder = _ProgramBuilder(graph, plan, {w.tensor: w for w in weights}, states,
                              {b.op_index: b for b in persistent}, layer_ops)
    steps = tuple(builder.step(op, calls.get(op.index)) for op in graph.ops)
    if plan_hash is None and compressed is not None:
        plan_hash = compressed_plan_hash(compressed)
    if any(s.op_index != k for k, s in enumerate(steps)):
        raise BuildError(f"model {graph.name!r}: op indices are not their positions; layer hooks need them")
    return ModelProgram(
        graph=graph,
        name=graph.name,
        model_hash=graph.content_hash(),
        calls=calls,
        arena=plan,
        states=states,
        state_inits=inits,
        members=tuple(builder.members),
        steps=steps,
        inputs=tuple(_io_spec(graph, plan, k, t) for k, t in enumerate(graph.inputs)),
        outputs=tuple(_io_spec(graph, plan, k, t) for k, t in enumerate(graph.outputs)),
        weights=(*weights, *builder.tables),
        kernel_families=tuple(sorted({c.family for c in calls.values()})),
        symbols=tuple(sorted({c.symbol for c in calls.values()})),
        debug=_debug_plan(graph, plan),
        plan_hash=_check_hash(plan_hash if plan_hash is not None else NO_PLAN_HASH, "plan hash"),
        variants=tuple(variants),
        layer_variants={i: isa.layer_variant(variants, c) for i, c in calls.items()},
        persistent=persistent,
        compressed_ops=tuple(sorted(layer_ops)),
    )


def _persistent_buffers(calls: Mapping[int, KernelCall], ops: frozenset[int]) -> tuple[PersistentBuffer, ...]:
    out, cursor = [], 0
    for i in sorted(ops):
        out.append(PersistentBuffer(i, cursor, calls[i].scratch_bytes))
        cursor += round_up(calls[i].scratch_bytes)
    return tuple(out)


def _check_hash(value: str, what: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise BuildError(f"{what} must be 64 lowercase hex digits (a sha256), got {value!r}")
    return value


def _debug_plan(graph: Graph, plan: ArenaPlan) -> DebugPlan:
    """The debug area: every op output (activations only), in op order."""
    tensors: list[DebugTensor] = []
    cursor = 0
    for op in graph.ops:
        for index in op.outputs:
            if index < 0 or graph.tensors[index].is_constant or graph.tensors[index].dtype is DType.RESOURCE:
                continue
            spec = _io_spec(graph, plan, len(tensors), index)
            tensors.append(DebugTensor(len(tensors), op.index, spec, cursor))
            cursor += round_up(max(1, spec.nbytes))
    return DebugPlan(tuple(tensors), cursor)


def _check_arena_covers(graph: Graph, plan: ArenaPlan) -> None:
    for t in graph.tensors:
        if t.is_constant or t.dtype is DType.RESOURCE:
            continue
        used = t.index in graph.inputs or any(t.index in op.outputs for op in graph.ops)
        if used:
            try:
                plan.tensor_offset(t.index)
            except KeyError:
                raise BuildError(f"arena plan has no place for tensor {t.index} ({t.name})") from None


def _io_spec(graph: Graph, plan: ArenaPlan, position: int, index: int) -> IOSpec:
    t = graph.tensors[index]
    if t.is_constant:
        raise BuildError(f"graph input/output {t.name!r} is a constant; boardfit needs activations")
    if len(t.shape) > MAX_RANK:
        raise BuildError(f"tensor {t.name!r} has rank {len(t.shape)}; the device API allows {MAX_RANK}")
    q = t.quant
    scale = q.scale[0] if q is not None and not q.per_channel else None
    zp = q.zero_point[0] if q is not None and not q.per_channel else None
    return IOSpec(position, index, t.name, t.shape, t.dtype, scale, zp, t.nbytes, plan.tensor_offset(index))


def _data_array(
    symbol: str, name: str, dtype: DType, values: np.ndarray, source: str, tensor: int = -1
) -> DataArray:
    if dtype not in CTYPES:
        raise BuildError(f"{name}: no C type for {dtype.value} data")
    flat = np.ascontiguousarray(values).reshape(-1)
    if dtype is DType.FLOAT16:
        flat = flat.astype(np.float16).view(np.uint16)
    elif dtype is DType.BOOL:
        flat = flat.astype(np.uint8)
    itemsize = flat.dtype.itemsize
    length = max(1, round_up(flat.size * itemsize) // itemsize)
    return DataArray(symbol, name, CTYPES[dtype], flat, length, source, tensor)


def _describe(t: Tensor) -> str:
    return f"tensor {t.index} {t.dtype.value}{list(t.shape)}"


def _weight_arrays(graph: Graph, calls: Mapping[int, KernelCall]) -> tuple[DataArray, ...]:
    """One array per constant tensor some kernel reads, in tensor order."""
    used: set[int] = set()
    for call in calls.values():
        for arg in call.args:
            tensors = arg.tensors if isinstance(arg, TensorListArg) else (arg.tensor,)
            used.update(t for t in tensors if t >= 0 and graph.tensors[t].is_constant)
    out = []
    for idx in sorted(used):
        t = graph.tensors[idx]
        assert t.data is not None
        symbol = f"bf_w{idx}_{c_ident(t.name)[:_NAME_CHARS]}".rstrip("_")
        out.append(_data_array(symbol, t.name, t.dtype, t.data, _describe(t), idx))
    return tuple(out)


def _state_arrays(graph: Graph) -> tuple[tuple[DataArray, ...], tuple[DataArray, ...]]:
    states, inits = [], []
    for v in graph.variables:
        base = f"bf_v{v.index}_{c_ident(v.name)[:_NAME_CHARS]}".rstrip("_")
        source = f"variable {v.index} {v.dtype.value}{list(v.shape)}"
        arr = _data_array(base, v.name, v.dtype, np.asarray(v.initial), source)
        states.append(arr)
        if not arr.all_zero:
            inits.append(_data_array(f"{base}_init", v.name, v.dtype, np.asarray(v.initial), source))
    return tuple(states), tuple(inits)


class _ProgramBuilder:
    """Turns KernelCalls into steps and collects the params members (in op order)."""

    def __init__(
        self, graph: Graph, plan: ArenaPlan, weights: Mapping[int, DataArray], states: Sequence[DataArray],
        persistent: Mapping[int, PersistentBuffer] | None = None, layer_ops: frozenset[int] = frozenset(),
    ) -> None:
        self.graph = graph
        self.plan = plan
        self.weight_by_tensor = weights
        self.states = states
        self.persistent = persistent or {}
        self.layer_ops = layer_ops  # compressed ops: their constant tables go to flash arrays
        self.members: list[ParamsMember] = []
        self.tables: list[DataArray] = []  # compressed layers' tables, in op order

    def step(self, op: Op, call: KernelCall | None) -> Step:
        label = op.name or (self.graph.tensors[op.outputs[0]].name if op.outputs else "")
        if call is None:
            return self._copy_step(op, label)
        proto = cdecl.prototype(call.symbol)
        expected = 1 + len(call.args) + int(call.takes_scratch)
        if len(proto.args) != expected:
            raise BuildError(
                f"{op.label}: {call.symbol} takes {len(proto.args)} arguments, the lowering gives {expected}"
            )
        params_name = f"op{op.index}"
        if op.index in self.layer_ops:
            self._layer_params(op, call, params_name, proto)
        else:
            self._params(call, params_name, proto)
        args = [self._arg(op, call, a, k) for k, a in enumerate(call.args)]
        if call.takes_scratch:
            args.append(self._scratch(op, call))
        return Step(op.index, op.opcode, label, "kernel", call.symbol, params_name, tuple(args))

    def _params(self, call: KernelCall, name: str, proto: cdecl.Prototype) -> None:
        struct_type = proto.args[0].item
        if struct_type.cname != cdecl.ctype(call.params_type).cname:
            raise BuildError(f"{call.symbol}: params type {call.params_type} does not match its prototype")
        tables: list[ParamsMember] = []

        def sink(path: str, values: np.ndarray) -> str:
            member = f"{name}_{path.split('.', 1)[1].replace('.', '_')}"
            ctype = _numpy_ctype(values.dtype)
            tables.append(ParamsMember(member, "table", ctype, values, max(1, values.size)))
            return member

        value = cdecl.typed_value(struct_type, _plain(call.params), name, sink)
        self.members.extend(tables)
        self.members.append(ParamsMember(name, "struct", call.params_type, value))

    def _layer_params(self, op: Op, call: KernelCall, name: str, proto: cdecl.Prototype) -> None:
        """A compressed layer's params: every constant table is a weight array of its own
        (``bf_c<op>_<field path>``, 8-byte aligned and padded, as array_flash_bytes counts it);
        an empty table is a NULL pointer (0 bytes)."""
        struct_type = proto.args[0].item
        if struct_type.cname != cdecl.ctype(call.params_type).cname:
            raise BuildError(f"{call.symbol}: params type {call.params_type} does not match its prototype")
        arrays: dict[str, DataArray] = {}

        def sink(path: str, values: np.ndarray) -> str:
            field_path = path.split(".", 1)[1]
            symbol = f"bf_c{op.index}_{c_ident(field_path.replace('.', '_'))}"
            flat = np.ascontiguousarray(values).reshape(-1)
            length = max(1, round_up(flat.nbytes) // max(1, flat.dtype.itemsize))
            source = f"op {op.index} {call.symbol} {field_path} {_numpy_ctype(flat.dtype)}[{flat.size}]"
            arrays[symbol] = DataArray(symbol, f"{op.label} {field_path}", _numpy_ctype(flat.dtype), flat,
                                       length, source, -1, op.index)
            return symbol

        value = cdecl.typed_value(struct_type, _plain(call.params), name, sink)
        value = _weight_refs(value, arrays)
        self.tables.extend(a for a in arrays.values() if a.values.size)
        self.members.append(ParamsMember(name, "struct", call.params_type, value))

    def _tensor_pointer(self, op: Op, tensor: int, ctype: str, output: bool) -> Pointer:
        if tensor < 0:
            return Pointer("null", ctype, not output)
        t = self.graph.tensors[tensor]
        if t.is_constant:
            if output:
                raise BuildError(f"{op.label}: writes constant tensor {t.name!r}")
            w = self.weight_by_tensor[tensor]
            return Pointer("weight", ctype, True, symbol=w.symbol, array_ctype=w.ctype)
        return Pointer("arena", ctype, not output, offset=self.plan.tensor_offset(tensor))

    def _arg(self, op: Op, call: KernelCall, arg: TensorArg | TensorListArg, k: int) -> Pointer:
        if isinstance(arg, TensorArg):
            return self._tensor_pointer(op, arg.tensor, arg.ctype, arg.output)
        name = f"op{op.index}_{'outputs' if arg.output else 'inputs'}"
        entries = tuple(self._tensor_pointer(op, t, "void", arg.output) for t in arg.tensors)
        self.members.append(ParamsMember(name, "pointers", "void", entries, len(entries)))
        return Pointer("params", "void", not arg.output, symbol=name)

    def _scratch(self, op: Op, call: KernelCall) -> Pointer:
        if call.scratch_bytes <= 0:
            return Pointer("null", "void", False)
        if op.index in self.persistent:
            return Pointer("persist", "void", False, offset=self.persistent[op.index].offset)
        return Pointer("arena", "void", False, offset=self.plan.scratch_offset(op.index))

    def _copy_step(self, op: Op, label: str) -> Step:
        if not isinstance(op.options, VariableOptions):
            raise BuildError(f"{op.label}: a state op without a variable")
        state = self.states[op.options.variable]
        var_ptr = Pointer("state", "void", op.opcode == "READ_VARIABLE", symbol=state.symbol,
                          array_ctype=state.ctype)
        if op.opcode == "READ_VARIABLE":
            t = self.graph.tensors[op.outputs[0]]
            args = (Pointer("arena", "void", False, offset=self.plan.tensor_offset(t.index)), var_ptr)
        else:
            t = self.graph.tensors[op.inputs[0]]
            args = (var_ptr, self._tensor_pointer(op, t.index, "void", False))
        var = self.graph.variables[op.options.variable]
        if t.nbytes != var.nbytes:
            raise BuildError(f"{op.label}: tensor {t.name!r} has {t.nbytes} bytes, variable {var.nbytes}")
        return Step(op.index, op.opcode, label, "copy", args=args, copy_bytes=t.nbytes)


def _weight_refs(value: Any, arrays: Mapping[str, DataArray]) -> Any:
    """``value`` with each CRef to one of ``arrays`` made a CArrayRef (NULL when it is empty)."""
    if isinstance(value, cdecl.CRef) and value.member is not None and value.member in arrays:
        return CArrayRef(value.member) if arrays[value.member].values.size else cdecl.CRef(None)
    if isinstance(value, cdecl.CStruct):
        return cdecl.CStruct(tuple((k, _weight_refs(v, arrays)) for k, v in value.fields))
    return value


def _numpy_ctype(dtype: np.dtype) -> str:
    names = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "uint16": "uint16_t",
             "int32": "int32_t", "uint32": "uint32_t", "int64": "int64_t", "float32": "float",
             "float64": "double"}
    return names[dtype.name]


def _plain(value: Any) -> Any:
    """KernelCall params (pairs, Struct, ConstArray) → plain dicts and numpy arrays."""
    if isinstance(value, tuple) and value and all(isinstance(p, tuple) and len(p) == 2
                                                  and isinstance(p[0], str) for p in value):
        return {k: _plain(v) for k, v in value}
    if isinstance(value, Struct):
        return {k: _plain(v) for k, v in value.fields}
    if isinstance(value, ConstArray):
        dtype = np.dtype(_CONST_DTYPES[value.ctype])
        exact = np.array(value.values, dtype=object if dtype.kind in "iu" else np.float64)
        arr = exact.astype(dtype)
        if not np.array_equal(arr.astype(exact.dtype), exact):
            raise BuildError(f"constant table of {value.ctype} has values not exact in that type")
        return arr
    return value


_CONST_DTYPES = {"int8_t": "int8", "uint8_t": "uint8", "int16_t": "int16", "int32_t": "int32",
                 "uint32_t": "uint32", "float": "float32", "double": "float64"}
