"""What a choice of options costs on one board: flash, RAM (a peak over the schedule), latency.

The numbers follow the code generator (firmware_gen/program.py, sizes.py) piece by piece:

**Flash** = ``fixed`` + Σ per chosen option (``Option.flash_bytes`` — its packed weights,
tables, codebooks, bias and requantization, every array 8-byte aligned as model.c lays them
out — plus its params struct) + the machine code of every distinct kernel the plan calls.

* ``fixed``: what the planner does not choose — the constant tensors and params of every other
  op (SOFTMAX, pooling…), exactly as the generator lays them out, and the generator's estimate
  of model.c's own code (``firmware_gen.sizes.model_code_estimate``);
* a layer's params struct counts ``sizeof`` for the board's data model, rounded up to 8 bytes
  (an upper bound of its share of the one ``bf_params`` object by < 8 bytes);
* kernel code is measured by compiling the kernel library with the board's toolchain and
  following relocations from the called symbols (``firmware_gen.sizes.kernel_code``, cached):
  the kernels the rest of the model calls are fixed; each other kernel costs its *marginal*
  bytes on top of those (what it adds alone).  Two kernels that share a helper both count it
  in the solver, so the solver's code figure is an upper bound; :meth:`CostModel.footprint`
  measures the union exactly.

**RAM** = arena + state + persistent tables.  The arena holds the activations and, during one
op, that op's scratch.  Activations are the same for every option (compressed layers are
drop-in replacements with the same tensors), so for each step ``s`` of the schedule the bytes
of the live activation buffers (each rounded up to the arena's 8-byte alignment) are a
constant and the step needs ``live(s) + scratch(option at s)``: RAM is a peak, one constraint
per step.  Options whose tables are decoded once at boot hold ``persistent_ram_bytes`` for the
whole run.  The live sum is a lower bound of the arena the generator's placement finds;
:meth:`CostModel.footprint` runs that placement (``firmware_gen.arena.plan_arena``) and the
planner tightens the solver's bound when placement needs more (:mod:`toolkit.planner.pipeline`).

**Kernel variants**: the build for a board compiles each kernel family from the first variant
targets/isa.py chooses for it (armv7em DSP on M4/M7/M33, neon, x86; ``ref`` last).  The cost
model measures code on exactly those sources, takes each option's scratch from that variant's
rule (``firmware_gen.lower.SCRATCH_RULES``) and records per layer the variant that runs it
(:func:`targets.isa.layer_variant`, as the generator's ``layer_variants``).  Persistent tables
count in 8-byte slots, as ``bf_persist`` lays them out.

**Latency** (optional): per kernel, ``fixed + per_mac · MACs + per_tap · outputs · window +
per_output · outputs`` instructions (:class:`KernelTiming`) from the board core's data file
``boards/latency/<core>.toml`` (measured under QEMU with ``-icount``), divided by the clock.
An optimized variant's kernel needs its own ``"<symbol>@<variant>"`` entry (ref data would
overstate it 2–3×); without one, or without a data file, latency is *uncalibrated*: reported
as None and a latency budget is refused.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from firmware_gen import cdecl
from firmware_gen.arena import live_buffers, plan_arena
from firmware_gen.lower import SCRATCH_RULES, KernelCall, lower_op
from firmware_gen.program import ALIGN, ModelProgram, build_program, round_up
from firmware_gen.sizes import data_model, isa_family, kernel_code, model_code_estimate
from toolkit.compress.base import COMPRESSIBLE_OPS, Option
from toolkit.errors import BoardfitError, PlanError
from toolkit.model.ir import Graph

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

_MEMBER = re.compile(r"^op(\d+)(?:_|$)")
LATENCY_DIR = "latency"  # inside the boards package: boards/latency/<core>.toml


# ---------------------------------------------------------------------------------------------
# Latency data.


@dataclass(frozen=True)
class KernelTiming:
    """Instructions of one kernel call:
    ``fixed + per_mac · MACs + per_tap · outputs · taps + per_output · outputs``, where ``taps``
    is the filter window (kh · kw; 1 for dense layers) — the loop overhead a convolution pays per
    window position, which MACs alone do not capture (a 3×3 conv on one channel costs several
    times more per MAC than a 1×1 conv on 64)."""

    fixed: float = 0.0
    per_mac: float = 0.0
    per_output: float = 0.0
    per_tap: float = 0.0

    def instructions(self, macs: int, outputs: int, taps: int = 1) -> float:
        return self.fixed + self.per_mac * macs + self.per_tap * outputs * taps + self.per_output * outputs


@dataclass(frozen=True)
class LatencyModel:
    """A board core's per-kernel instruction counts (see the module docstring)."""

    core: str
    source: str
    kernels: Mapping[str, KernelTiming]
    default: KernelTiming | None = None  # for layer kernels without an entry
    cycles_per_instruction: float = 1.0

    def timing(self, symbol: str) -> KernelTiming | None:
        return self.kernels.get(symbol, self.default)

    def milliseconds(self, instructions: float, clock_hz: int) -> float:
        return instructions * self.cycles_per_instruction / clock_hz * 1e3


def _timing(table: Mapping[str, Any], where: str) -> KernelTiming:
    unknown = set(table) - {"fixed", "per_mac", "per_output", "per_tap"}
    if unknown:
        raise PlanError(f"{where}: unknown key(s) {sorted(unknown)}; expected fixed, per_mac, per_tap, "
                        "per_output")
    try:
        return KernelTiming(float(table.get("fixed", 0.0)), float(table.get("per_mac", 0.0)),
                            float(table.get("per_output", 0.0)), float(table.get("per_tap", 0.0)))
    except (TypeError, ValueError) as exc:
        raise PlanError(f"{where}: coefficients must be numbers") from exc


def parse_latency(text: str, source: str) -> LatencyModel:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{source}: not valid TOML: {exc}") from exc
    kernels = {str(k): _timing(v, f"{source}: [kernels.{k}]") for k, v in doc.get("kernels", {}).items()}
    default = _timing(doc["default"], f"{source}: [default]") if "default" in doc else None
    return LatencyModel(str(doc.get("core", "")), source, kernels, default,
                        float(doc.get("cycles_per_instruction", 1.0)))


def load_latency(core: str) -> LatencyModel | None:
    """The packaged latency data of a core (``boards/latency/<core>.toml``), or None."""
    entry = resources.files("boards").joinpath(LATENCY_DIR).joinpath(f"{core}.toml")
    if not entry.is_file():
        return None
    return parse_latency(entry.read_text(encoding="utf-8"), f"boards/{LATENCY_DIR}/{core}.toml")


# ---------------------------------------------------------------------------------------------
# The cost model.


@dataclass(frozen=True)
class RamStep:
    """One step of the schedule: the bytes that do not depend on the plan, and which layer runs."""

    op_index: int
    fixed_bytes: int  # live activation buffers (8-aligned) + the scratch of a non-layer op
    layer: int | None  # op index of the compressible layer running at this step


@dataclass(frozen=True)
class Footprint:
    """Flash and RAM of a plan as the generated firmware will have them."""

    layer_bytes: int  # Σ Option.flash_bytes of the planned layers
    layer_params_bytes: int  # their params structs
    other_weights_bytes: int  # constants of the other ops
    other_params_bytes: int  # params of the other ops
    code_bytes: int  # kernels (exact union) + model.c estimate
    arena_bytes: int
    state_bytes: int
    persistent_bytes: int
    kernels: Mapping[str, int] = field(default_factory=dict)  # code bytes per kernel symbol
    latency_ms: float | None = None

    @property
    def flash_bytes(self) -> int:
        return (self.layer_bytes + self.layer_params_bytes + self.other_weights_bytes
                + self.other_params_bytes + self.code_bytes)

    @property
    def ram_bytes(self) -> int:
        return self.arena_bytes + self.state_bytes + self.persistent_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "flash_bytes": self.flash_bytes, "ram_bytes": self.ram_bytes,
            "layer_bytes": self.layer_bytes, "layer_params_bytes": self.layer_params_bytes,
            "other_weights_bytes": self.other_weights_bytes, "other_params_bytes": self.other_params_bytes,
            "code_bytes": self.code_bytes, "kernels": dict(sorted(self.kernels.items())),
            "arena_bytes": self.arena_bytes, "state_bytes": self.state_bytes,
            "persistent_bytes": self.persistent_bytes,
        }


@dataclass(frozen=True)
class _Toolchain:
    """What measuring kernel code needs: a compiler for the target and the kernel sources."""

    toolchain: Any  # targets.toolchains.Toolchain
    sources: tuple[Path, ...]
    include_dirs: tuple[Path, ...]
    extra: tuple[str, ...] = ()  # the variants' compiler flags (targets.isa.build_cflags)


def _kernel_root() -> Path:
    return Path(str(resources.files("firmware_gen").joinpath("kernels")))


def _kernel_tree(variants: Sequence[str]) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """The kernel sources a build with ``variants`` compiles: each family (``ref/<family>.c``)
    from the first variant that has it (:func:`targets.isa.family_variant`, the generator's
    rule), and the include directories (public headers, then every variant directory)."""
    from targets import isa

    root = _kernel_root()
    sources = []
    for ref_src in sorted((root / isa.REF).glob("*.c")):
        chosen = isa.family_variant(variants, ref_src.stem, root)
        sources.append(root / chosen / ref_src.name)
    dirs = [root / "include", *(d for d in sorted(root.iterdir()) if d.is_dir() and d.name != "include")]
    return tuple(sources), tuple(dirs)


@cache
def _family_of(symbol: str) -> str | None:
    """The kernel family (``ref/<family>.c``) that defines ``symbol``, found in the source text."""
    pattern = re.compile(rf"^\w[\w\s\*]*\b{re.escape(symbol)}\s*\(", re.M)
    for src in sorted((_kernel_root() / "ref").glob("*.c")):
        if pattern.search(src.read_text(encoding="utf-8")):
            return src.stem
    return None


@dataclass(frozen=True, eq=False)
class CostModel:
    graph: Graph
    target: str
    pointer_bytes: int
    layer_ops: tuple[int, ...]
    other_weights_bytes: int
    other_params_bytes: int
    model_code_bytes: int
    base_kernels: tuple[str, ...]
    base_code_bytes: int
    steps: tuple[RamStep, ...]
    state_bytes: int
    other_scratch: Mapping[int, int]
    in_place: Mapping[int, tuple[int, ...]]
    output_elements: Mapping[int, int]
    taps: Mapping[int, int]  # filter window (kh · kw) of each conv / depthwise layer
    clock_hz: int | None = None
    latency: LatencyModel | None = None
    base_latency_ms: float | None = None
    # Kernel variants of the board's build (targets/isa.py, preference order, "ref" last) and
    # the reference lowering of each planned layer (its geometry decides variant and scratch).
    variants: tuple[str, ...] = ("ref",)
    layer_calls: Mapping[int, KernelCall] = field(default_factory=dict)
    _tc: _Toolchain | None = field(default=None, repr=False)
    _marginal: dict[str, int] = field(default_factory=dict, repr=False)

    # -- per option ----------------------------------------------------------------------------

    @property
    def fixed_flash_bytes(self) -> int:
        return (self.other_weights_bytes + self.other_params_bytes + self.model_code_bytes
                + self.base_code_bytes)

    def params_bytes(self, kernel: str) -> int:
        """Bytes of the kernel's params struct in ``bf_params`` (rounded up to 8)."""
        return _struct_bytes(kernel, self.pointer_bytes)

    def option_flash(self, option: Option) -> int:
        """Flash of one option without kernel code (that is counted once per kernel)."""
        return option.flash_bytes + self.params_bytes(option.kernel)

    def kernel_code(self, symbol: str) -> int:
        """Code bytes ``symbol`` adds to the kernels the rest of the model already calls."""
        if symbol in self.base_kernels:
            return 0
        if symbol not in self._marginal:
            self._marginal[symbol] = self._code([*self.base_kernels, symbol])[0] - self.base_code_bytes
        return self._marginal[symbol]

    def _call(self, option: Option) -> tuple[KernelCall, str]:
        """The call that runs ``option`` as the generator lowers it, and the variant whose
        source of its family the build compiles (:func:`targets.isa.family_variant`)."""
        from targets import isa

        ref = self.layer_calls.get(option.op_index)
        if ref is None:
            raise PlanError(f"op {option.op_index} is not a planned layer")
        if option.kernel == ref.symbol:
            fam = isa.family_variant(self.variants, ref.family)
            op = self.graph.ops[option.op_index]
            return (ref if fam == isa.REF else lower_op(self.graph, op, fam)), fam
        # A compressed kernel: same activations and geometry, its own symbol and family.
        family = _family_of(option.kernel) or ref.family
        call = replace(ref, symbol=option.kernel, family=family)
        return call, isa.family_variant(self.variants, family)

    def variant_of(self, option: Option) -> str:
        """The variant whose code runs ``option`` (:func:`targets.isa.layer_variant`, the rule the
        generator records as ``layer_variants``): an optimized one, or ``"ref"``."""
        from targets import isa

        if not self.layer_calls:
            return isa.REF
        call, fam = self._call(option)
        try:
            return isa.layer_variant(self.variants, call)
        except (KeyError, AssertionError, AttributeError, TypeError, ValueError):
            # The variant's predicate reads parameters only the compressed call has: its family
            # source is compiled; whether the optimized path applies is decided at build time.
            return fam

    def option_scratch(self, option: Option) -> int:
        """Scratch of ``option`` in the board's build: the variant's rule
        (``firmware_gen.lower.SCRATCH_RULES``) when it has one for the kernel, else the option's."""
        if not self.layer_calls:
            return option.ram_bytes
        call, fam = self._call(option)
        if option.kernel == self.layer_calls[option.op_index].symbol:
            return call.scratch_bytes
        rule = SCRATCH_RULES.get(fam, {}).get(option.kernel)
        return option.ram_bytes if rule is None else int(rule(call))

    def timing_of(self, symbol: str, variant: str) -> KernelTiming | None:
        """Latency data of ``symbol`` as ``variant`` runs it: ref kernels use ``[kernels.<symbol>]``
        (or ``[default]``); an optimized variant needs its own ``[kernels."<symbol>@<variant>"]``
        — ref data would overstate it 2–3× — else it is uncalibrated (None)."""
        if self.latency is None:
            return None
        if variant == "ref":
            return self.latency.timing(symbol)
        return self.latency.kernels.get(f"{symbol}@{variant}")

    def option_latency_ms(self, option: Option) -> float | None:
        if self.latency is None or self.clock_hz is None:
            return None
        timing = self.timing_of(option.kernel, self.variant_of(option))
        if timing is None:
            return None
        instr = timing.instructions(option.macs, self.output_elements.get(option.op_index, 0),
                                    self.taps.get(option.op_index, 1))
        return self.latency.milliseconds(instr, self.clock_hz)

    # -- whole plans ---------------------------------------------------------------------------

    def _code(self, symbols: Sequence[str]) -> tuple[int, dict[str, int]]:
        if self._tc is None:
            return 0, {}
        try:
            total, per, _ = kernel_code(self._tc.toolchain, self._tc.sources, self._tc.include_dirs, symbols,
                                        self._tc.extra)
        except BoardfitError as exc:
            raise PlanError(f"cannot measure kernel code for {self.target}: {exc}") from exc
        return total, per

    def arena_bytes(self, scratch: Mapping[int, int]) -> int:
        """The arena the generator's placement makes with these layer scratch sizes."""
        all_scratch = {**self.other_scratch, **{i: b for i, b in scratch.items() if b > 0}}
        return plan_arena(self.graph, scratch=all_scratch, in_place=self.in_place, alignment=ALIGN).size

    def footprint(self, selection: Mapping[int, Option]) -> Footprint:
        """Exact flash and RAM of one option per layer (see the module docstring)."""
        missing = sorted(set(self.layer_ops) - set(selection))
        if missing:
            raise PlanError(f"no option chosen for layer(s) {missing}")
        symbols = sorted({*self.base_kernels, *(o.kernel for o in selection.values())})
        code, per = self._code(symbols)
        latency = self.base_latency_ms
        for o in selection.values():
            ms = self.option_latency_ms(o)
            latency = None if latency is None or ms is None else latency + ms
        return Footprint(
            layer_bytes=sum(o.flash_bytes for o in selection.values()),
            layer_params_bytes=sum(self.params_bytes(o.kernel) for o in selection.values()),
            other_weights_bytes=self.other_weights_bytes,
            other_params_bytes=self.other_params_bytes,
            code_bytes=code + self.model_code_bytes,
            arena_bytes=self.arena_bytes({i: self.option_scratch(o) for i, o in selection.items()
                                          if not o.persistent_ram_bytes}),
            state_bytes=self.state_bytes,
            persistent_bytes=sum(round_up(o.persistent_ram_bytes, ALIGN) for o in selection.values()),
            kernels=per,
            latency_ms=latency,
        )


@cache
def _struct_bytes(kernel: str, pointer_bytes: int) -> int:
    model = cdecl.DataModel(pointer_bytes=pointer_bytes) if pointer_bytes not in (4, 8) else \
        (cdecl.ILP32 if pointer_bytes == 4 else cdecl.LP64)
    proto = cdecl.prototype(kernel)
    size, _ = cdecl.layout(proto.args[0].item, model)
    return round_up(size, ALIGN)


def _layout(members: Sequence[Any], model: cdecl.DataModel) -> int:
    """Bytes of params members laid out one after another (the generator's rule), each op's
    group from an 8-aligned offset: an upper bound of the group's share of ``bf_params`` in any
    neighbourhood (a member's offset only grows with its group's start), exact in isolation."""
    groups: dict[int, list[Any]] = {}
    for m in members:
        match = _MEMBER.match(m.name)
        groups.setdefault(int(match.group(1)) if match else -1, []).append(m)
    total = 0
    for group in groups.values():
        offset = 0
        for m in group:
            size, a = m.layout(model)
            offset = round_up(offset, a) + size
        total += round_up(offset, ALIGN)
    return total


def _steps(graph: Graph, program: ModelProgram, layers: Sequence[int],
           other_scratch: Mapping[int, int], in_place: Mapping[int, tuple[int, ...]]) -> tuple[RamStep, ...]:
    buffers = live_buffers(graph, None, in_place)
    steps = []
    layer_set = set(layers)
    for op in graph.ops:
        s = op.index
        live = sum(round_up(b.size, ALIGN) for b in buffers if b.first <= s <= b.last)
        steps.append(RamStep(s, live + round_up(other_scratch.get(s, 0), ALIGN),
                             s if s in layer_set else None))
    return tuple(steps)


def build_cost_model(graph: Graph, board: Any | None = None, *, measure_code: bool = True,
                     latency: LatencyModel | None = None) -> CostModel:
    """The cost model of ``graph`` on ``board`` (a :class:`toolkit.boards.Board`; None: this
    machine).  ``measure_code=False`` leaves kernel code out (0 bytes), for tests and for
    targets without a toolchain.  ``latency``: default the board core's data file."""
    from targets import isa
    from targets.toolchains import toolchain_for

    variants = tuple(isa.board_variants(board))
    try:
        program = build_program(graph, variants=variants)
    except BoardfitError as exc:
        raise PlanError(f"the code generator cannot build {graph.name}: {exc}") from exc
    layers = tuple(op.index for op in graph.ops if op.opcode in COMPRESSIBLE_OPS)
    tc = toolchain_for(board)
    model = data_model(tc)
    layer_set = set(layers)
    other_calls: dict[int, KernelCall] = {i: c for i, c in program.calls.items() if i not in layer_set}
    # Constants read by another op than the planned layers stay as the generator lays them out.
    other_tensors = {t for c in other_calls.values() for t in c.input_tensors if graph.tensors[t].is_constant}
    other_weights = sum(w.nbytes for w in program.weights if w.tensor in other_tensors)
    other_weights += sum(s.nbytes for s in program.state_inits)
    members = [m for m in program.members if not _is_layer_member(m.name, layer_set)]
    other_scratch = {i: c.scratch_bytes for i, c in other_calls.items() if c.scratch_bytes > 0}
    in_place = {i: c.in_place for i, c in other_calls.items() if c.in_place}
    tcinfo: _Toolchain | None = None
    if measure_code:
        if not tc.available():
            raise PlanError(f"the toolchain of {getattr(board, 'id', 'host')} ({tc.cc}) is not installed: "
                            "kernel code cannot be measured")
        sources, include = _kernel_tree(variants)
        tcinfo = _Toolchain(tc, sources, include, isa.build_cflags(variants, isa.target_of(board)))
    base_kernels = tuple(sorted({c.symbol for c in other_calls.values()}))
    clock = getattr(board, "clock_hz", None)
    if latency is None and board is not None:
        latency = load_latency(board.core)
    cm = CostModel(
        graph=graph, target=getattr(board, "id", "host"), pointer_bytes=model.pointer_bytes,
        layer_ops=layers, other_weights_bytes=other_weights, other_params_bytes=_layout(members, model),
        model_code_bytes=model_code_estimate(program, isa_family(tc)) if measure_code else 0,
        base_kernels=base_kernels, base_code_bytes=0,
        steps=_steps(graph, program, layers, other_scratch, in_place), state_bytes=program.state_bytes,
        other_scratch=other_scratch, in_place=in_place,
        output_elements={op.index: int(np.prod(graph.tensors[op.outputs[0]].shape)) for op in graph.ops
                         if op.outputs},
        taps={i: filter_taps(graph, i) for i in layers}, clock_hz=clock, latency=latency, _tc=tcinfo,
        variants=variants, layer_calls={i: lower_op(graph, graph.ops[i]) for i in layers})
    base_code = cm._code(base_kernels)[0] if base_kernels else 0
    base_latency = _base_latency(cm, {i: (c, program.layer_variants.get(i, "ref"))
                                      for i, c in other_calls.items()})

    return replace(cm, base_code_bytes=base_code, base_latency_ms=base_latency)


def filter_taps(graph: Graph, op_index: int) -> int:
    """kh · kw of a CONV_2D / DEPTHWISE_CONV_2D filter; 1 for FULLY_CONNECTED."""
    op = graph.ops[op_index]
    if op.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return 1
    shape = graph.tensors[op.inputs[1]].shape
    return int(shape[1] * shape[2])


def _is_layer_member(name: str, layers: set[int]) -> bool:
    m = _MEMBER.match(name)
    return m is not None and int(m.group(1)) in layers


def _base_latency(cm: CostModel, calls: Mapping[int, tuple[KernelCall, str]]) -> float | None:
    if cm.latency is None or cm.clock_hz is None:
        return None
    total = 0.0
    for i, (c, variant) in calls.items():
        # No default: these kernels have no MACs; an optimized variant needs its own entry.
        timing = cm.latency.kernels.get(c.symbol if variant == "ref" else f"{c.symbol}@{variant}")
        if timing is None:
            log.info("no latency data for %s on %s: latency uncalibrated", c.symbol, cm.latency.core)
            return None
        total += timing.instructions(0, cm.output_elements.get(i, 0))
    return cm.latency.milliseconds(total, cm.clock_hz)
