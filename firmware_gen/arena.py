"""Static activation memory: every non-constant tensor gets an offset in one arena.

The plan is made from live ranges in execution order.  A tensor is live from the step that
writes it (graph inputs: step -1) to the last step that reads it (graph outputs: the end).
Tensors that share bytes form one *buffer*:

* views (RESHAPE, SQUEEZE, EXPAND_DIMS) always alias their input: neither is written again;
* an op whose kernel may run in place (element-wise, activations) writes over an input it
  names when that input dies at this op, has the same byte size and neither it nor a view of it
  is a graph input or output.

Per-op scratch (im2col, decode buffers) is a buffer live for that one step.  Two buffers whose
live ranges intersect never overlap in memory; ``check_plan`` proves it for any plan.  Variables
of streaming models live in a separate persistent area and are not part of the arena.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from toolkit.errors import BuildError
from toolkit.model.ir import Graph, Op

VIEW_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS"})

# Which ops may write their output over an input: op indices (over the first input) or op index →
# candidate input tensors in order of preference.
InPlace = Iterable[int] | Mapping[int, Sequence[int]]


@dataclass(frozen=True)
class Buffer:
    """Bytes that must stay intact from step ``first`` to step ``last`` (inclusive)."""

    key: str
    size: int
    first: int
    last: int
    tensors: tuple[int, ...] = ()

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class ArenaPlan:
    strategy: str
    alignment: int
    size: int
    buffers: tuple[Buffer, ...]
    offsets: Mapping[str, int]

    def tensor_offset(self, tensor: int) -> int:
        for b in self.buffers:
            if tensor in b.tensors:
                return self.offsets[b.key]
        raise KeyError(f"tensor {tensor} is not in the arena")

    def scratch_offset(self, op_index: int) -> int:
        return self.offsets[scratch_key(op_index)]


class PlacementStrategy(Protocol):
    """Chooses an offset for every buffer; buffers alive at the same time must not overlap."""

    name: str

    def place(self, buffers: Sequence[Buffer], alignment: int) -> dict[str, int]: ...


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


class GreedyBySize:
    """Largest buffers first, each at the lowest offset that fits between placed neighbours in time.

    This is the strategy of TFLite Micro's GreedyMemoryPlanner; it is near optimal for the
    chain-like graphs of small models.
    """

    name = "greedy"

    def place(self, buffers: Sequence[Buffer], alignment: int) -> dict[str, int]:
        order = sorted(buffers, key=lambda b: (-b.size, b.first, b.key))
        placed: list[tuple[Buffer, int]] = []
        offsets: dict[str, int] = {}
        for buf in order:
            busy = sorted((off, off + b.size) for b, off in placed if b.overlaps_in_time(buf))
            offset = 0
            for start, end in busy:
                if offset + buf.size <= start:
                    break
                offset = max(offset, _align(end, alignment))
            offsets[buf.key] = offset
            placed.append((buf, offset))
        return offsets


class Linear:
    """Every buffer at its own offset, in execution order: no reuse.  The baseline to beat."""

    name = "linear"

    def place(self, buffers: Sequence[Buffer], alignment: int) -> dict[str, int]:
        offsets: dict[str, int] = {}
        cursor = 0
        for buf in sorted(buffers, key=lambda b: (b.first, b.key)):
            offsets[buf.key] = cursor
            cursor = _align(cursor + buf.size, alignment)
        return offsets


STRATEGIES: dict[str, PlacementStrategy] = {s.name: s for s in (GreedyBySize(), Linear())}


def scratch_key(op_index: int) -> str:
    return f"scratch{op_index}"


def live_buffers(
    graph: Graph,
    scratch: Mapping[int, int] | None = None,
    in_place: InPlace = (),
) -> list[Buffer]:
    """Group tensors into buffers and compute their live ranges.

    ``scratch`` maps op index → scratch bytes.  ``in_place`` says which ops' kernels accept
    output == input: a sequence of op indices (the first input) or a mapping op index → the
    input tensors the output may share (``KernelCall.in_place``), tried in order.
    """
    root, first, last = _alias_roots(graph, _in_place_candidates(graph, in_place))
    groups: dict[int, list[int]] = {}
    for t in first:
        groups.setdefault(root.get(t, t), []).append(t)
    buffers = []
    for r, members in groups.items():
        size = max(graph.tensors[m].nbytes for m in members)
        lo = min(first[m] for m in members)
        hi = max([last.get(r, lo)] + [first[m] for m in members])
        buffers.append(Buffer(f"t{r}", size, lo, hi, tuple(sorted(members))))
    for op_index, nbytes in (scratch or {}).items():
        if nbytes > 0:
            buffers.append(Buffer(scratch_key(op_index), nbytes, op_index, op_index))
    return buffers


def _alias_roots(
    graph: Graph, candidates: Mapping[int, tuple[int, ...]]
) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
    """(tensor → the tensor whose bytes it shares, first step of each tensor, last step of each
    buffer root) in one pass over the ops."""
    end = len(graph.ops)
    root: dict[int, int] = {}
    first: dict[int, int] = {i: -1 for i in graph.inputs}
    last: dict[int, int] = {}
    for op in graph.ops:
        for t in op.inputs:
            if t >= 0 and not graph.tensors[t].is_constant:
                last[root.get(t, t)] = op.index
        src = op.inputs[0] if op.inputs else -1
        for t in op.outputs:
            first[t] = op.index
        if op.opcode in VIEW_OPS and src >= 0 and not graph.tensors[src].is_constant:
            root[op.outputs[0]] = root.get(src, src)
            continue
        for cand in candidates.get(op.index, ()):
            if _can_overwrite(graph, op, cand, root, first, last):
                root[op.outputs[0]] = root.get(cand, cand)
                break
    for t in graph.outputs:
        last[root.get(t, t)] = end
    return root, first, last


def _in_place_candidates(graph: Graph, in_place: InPlace) -> dict[int, tuple[int, ...]]:
    if isinstance(in_place, Mapping):
        return {int(k): tuple(int(t) for t in v) for k, v in in_place.items()}
    return {i: graph.ops[i].inputs[:1] for i in in_place if graph.ops[i].inputs}


def _can_overwrite(
    graph: Graph,
    op: Op,
    src: int,
    root: Mapping[int, int],
    first: Mapping[int, int],
    last: Mapping[int, int],
) -> bool:
    """May ``op`` write its (single) output over input ``src``'s buffer?

    Only if ``src`` is an input of the op and its buffer is an activation (not a constant, not a
    graph input), dies at this op (no later op reads it or a view of it), holds no graph output
    (a view of the input may be one) and has exactly the output's byte size.
    """
    if src < 0 or src not in first or src not in op.inputs or len(op.outputs) != 1:
        return False
    r = root.get(src, src)
    group = [t for t in first if root.get(t, t) == r]
    return (
        last.get(r) == op.index
        and not _used_later(graph, src, op.index, root)
        and not any(t in graph.outputs or t in graph.inputs for t in group)
        and graph.tensors[src].nbytes == graph.tensors[op.outputs[0]].nbytes
    )


def _used_later(graph: Graph, tensor: int, step: int, root: Mapping[int, int]) -> bool:
    """True if ``tensor`` or a view of it is read after ``step``."""
    r = root.get(tensor, tensor)
    return any(
        t >= 0 and root.get(t, t) == r for op in graph.ops[step + 1 :] for t in op.inputs
    )


def plan_arena(
    graph: Graph,
    *,
    scratch: Mapping[int, int] | None = None,
    in_place: InPlace = (),
    strategy: str = "greedy",
    alignment: int = 8,
) -> ArenaPlan:
    if strategy not in STRATEGIES:
        raise BuildError(f"unknown arena strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    buffers = live_buffers(graph, scratch, in_place)
    offsets = STRATEGIES[strategy].place(buffers, alignment)
    size = _align(max((offsets[b.key] + b.size for b in buffers), default=0), alignment)
    plan = ArenaPlan(strategy, alignment, size, tuple(buffers), offsets)
    check_plan(plan)
    return plan


def check_plan(plan: ArenaPlan) -> None:
    """Raise BuildError if two buffers alive at the same step share a byte (or break alignment)."""
    bufs = sorted(plan.buffers, key=lambda b: plan.offsets[b.key])
    for i, a in enumerate(bufs):
        oa = plan.offsets[a.key]
        if oa % plan.alignment or oa + a.size > plan.size:
            raise BuildError(f"arena plan: {a.key} at {oa} is misaligned or past the end")
        for b in bufs[i + 1 :]:
            ob = plan.offsets[b.key]
            if ob >= oa + a.size:
                break
            if a.overlaps_in_time(b):
                raise BuildError(
                    f"arena plan: {a.key} [{oa}, {oa + a.size}) and {b.key} [{ob}, {ob + b.size}) "
                    f"overlap while both are live (steps {a.first}-{a.last} and {b.first}-{b.last})"
                )
