"""Flash and RAM of a generated model: predicted in Python, measured on what the compiler made.

Predicted (before the model is compiled):

* ``weights_bytes`` — the weight arrays (and initial values of non-zero state) exactly as
  model.c lays them out: every array 8-byte aligned and padded to a multiple of 8 bytes, so the
  section size does not depend on link order;
* ``params_bytes`` — the one ``bf_params`` object, from the C layout rules and the target's data
  model (pointer size), exact;
* ``code_bytes`` — kernel machine code and constant tables, measured per kernel by compiling each
  kernel source for the target (cached) and following relocations from the called symbols as
  ``--gc-sections`` does, plus an estimate of model.c's own code per ISA;
* ``arena_bytes`` / ``state_bytes`` — the arena plan and the state arrays, exact;
* ``persistent_bytes`` — the persistent scratch of compressed layers (``bf_persist``), exact;
* ``flash_bytes = weights + params + code``, ``ram_bytes = arena + state + persistent``.

Measured: from a linked Cortex-M image (``size -A``: the linker script gathers the model's
sections into ``.bf_weights``, ``.bf_params``, ``.bf_code``, ``.bf_arena``, ``.bf_state``,
``.bf_persist``), or
otherwise from the compiled objects themselves (section sizes of model.o and the reachable
kernel sections).  Neither counts C library or compiler runtime code (memcpy, expf, soft-float
helpers); :attr:`CodeEstimate.external` names what the kernels need from there.
"""

from __future__ import annotations

import logging
import platform
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_gen import cdecl
from firmware_gen.elf import ObjectFile
from firmware_gen.program import ModelProgram
from targets.toolchains import HOST, Toolchain, compile_objects, run_tool
from toolkit.errors import BuildError

log = logging.getLogger(__name__)

# Output sections of the minimal image's linker script (templates/bare/link.ld.j2).
IMAGE_SECTIONS = {
    "weights_bytes": (".bf_weights",),
    "params_bytes": (".bf_params",),
    "code_bytes": (".bf_code",),
    "arena_bytes": (".bf_arena",),
    "state_bytes": (".bf_state", ".bf_state_bss"),
    "persistent_bytes": (".bf_persist",),
}

# model.c's own machine code per ISA family: bytes = fixed + per_arg × kernel arguments (params
# pointer included) + per_copy × state copies (steps and reset) + per_io × inputs/outputs past the
# first two.  Least-squares fits to the 14 example models compiled with -O2 by GCC 12 (residuals
# within ±5% except where x86 inlines a state memcpy).  riscv is unmeasured (arm's values).
_MODEL_CODE: dict[str, tuple[float, float, float]] = {
    "thumb": (51.0, 4.6, 27.3),
    "arm": (57.4, 5.3, 28.3),
    "aarch64": (81.9, 6.8, 44.0),
    "x86_64": (61.1, 6.2, 110.6),
    "riscv": (57.4, 5.3, 28.3),
}
_PER_IO = 12.0


@dataclass(frozen=True)
class Sizes:
    weights_bytes: int
    params_bytes: int
    code_bytes: int
    arena_bytes: int
    state_bytes: int
    persistent_bytes: int = 0

    @property
    def flash_bytes(self) -> int:
        return self.weights_bytes + self.params_bytes + self.code_bytes

    @property
    def ram_bytes(self) -> int:
        return self.arena_bytes + self.state_bytes + self.persistent_bytes

    def to_json(self) -> dict[str, int]:
        return {
            "weights_bytes": self.weights_bytes,
            "params_bytes": self.params_bytes,
            "code_bytes": self.code_bytes,
            "flash_bytes": self.flash_bytes,
            "arena_bytes": self.arena_bytes,
            "state_bytes": self.state_bytes,
            "persistent_bytes": self.persistent_bytes,
            "ram_bytes": self.ram_bytes,
        }


@dataclass(frozen=True)
class CodeEstimate:
    """Kernel code reachable from the called symbols, per symbol (a shared helper is counted
    once, under the first symbol in sorted order that reaches it) and in total."""

    kernel_bytes: int
    per_symbol: Mapping[str, int]
    model_bytes: int
    external: tuple[str, ...]

    @property
    def total(self) -> int:
        return self.kernel_bytes + self.model_bytes


def isa_family(tc: Toolchain) -> str:
    """The instruction-set family that decides code-size constants and the data model."""
    if tc.kind == HOST:
        machine = platform.machine().lower()
        if machine in ("x86_64", "amd64"):
            return "x86_64"
        return "aarch64" if machine in ("aarch64", "arm64") else "arm"
    m_profile = re.search(r"-m(\.|$)", tc.isa) is not None
    if tc.isa.startswith("armv") and (m_profile or "-mthumb" in tc.cflags):
        return "thumb"
    if tc.isa == "aarch64":
        return "aarch64"
    if tc.isa.startswith("rv"):
        return "riscv"
    return "arm" if tc.isa.startswith("armv") else "x86_64"


def data_model(tc: Toolchain) -> cdecl.DataModel:
    if tc.kind == HOST:
        return cdecl.LP64 if sys.maxsize > 2**32 else cdecl.ILP32
    if tc.isa in ("aarch64", "x86_64") or tc.isa.startswith("rv64"):
        return cdecl.LP64
    return cdecl.ILP32


# ---------------------------------------------------------------------------------------------
# Prediction.


def kernel_code(
    tc: Toolchain,
    sources: Sequence[Path],
    include_dirs: Sequence[Path],
    symbols: Iterable[str],
    extra: Sequence[str] = (),
) -> tuple[int, dict[str, int], tuple[str, ...]]:
    """(bytes, per-symbol bytes, external symbols) of the kernel code ``symbols`` pull in.

    Each source is compiled for ``tc`` (content-addressed cache) and the closure of sections
    reachable through relocations is summed, across objects when one kernel calls another.
    """
    objects = [ObjectFile(p) for p in compile_objects(tc, sources, include_dirs=include_dirs, extra=extra)]
    where: dict[str, tuple[int, int]] = {}
    for k, obj in enumerate(objects):
        for name, sec in obj.defined_globals().items():
            where.setdefault(name, (k, sec))
    seen: set[tuple[int, int]] = set()
    external: set[str] = set()
    per_symbol: dict[str, int] = {}
    for sym in sorted(set(symbols)):
        if sym not in where:
            raise BuildError(f"kernel {sym} is not defined by any kernel source")
        per_symbol[sym] = _closure(objects, where, where[sym], seen, external)
    return sum(per_symbol.values()), per_symbol, tuple(sorted(external))


def _closure(
    objects: Sequence[ObjectFile],
    where: Mapping[str, tuple[int, int]],
    root: tuple[int, int],
    seen: set[tuple[int, int]],
    external: set[str],
) -> int:
    """Bytes of the sections reachable from ``root`` that are not in ``seen`` yet (updated)."""
    total = 0
    todo = [root]
    while todo:
        k, sec = todo.pop()
        if (k, sec) in seen:
            continue
        seen.add((k, sec))
        total += objects[k].allocated_size([sec])
        for dep in objects[k].edges.get(sec, ()):
            if isinstance(dep, int):
                todo.append((k, dep))
            elif dep in where:
                todo.append(where[dep])
            else:
                external.add(dep)
    return total


def model_code_estimate(program: ModelProgram, isa: str) -> int:
    """Estimated bytes of model.c's functions (invoke, reset, input/output accessors)."""
    fixed, per_arg, per_copy = _MODEL_CODE[isa]
    args = sum(1 + len(s.args) for s in program.steps if s.kind == "kernel")
    copies = sum(1 for s in program.steps if s.kind == "copy") + len(program.states)
    extra_io = max(0, len(program.inputs) + len(program.outputs) - 2)
    return round(fixed + per_arg * args + per_copy * copies + _PER_IO * extra_io)


def predict(
    program: ModelProgram,
    tc: Toolchain,
    kernel_sources: Sequence[Path],
    include_dirs: Sequence[Path],
) -> tuple[Sizes, CodeEstimate]:
    """Sizes of ``program`` built with ``tc``; only the kernel sources are compiled."""
    kbytes, per_symbol, external = kernel_code(tc, kernel_sources, include_dirs, program.symbols)
    code = CodeEstimate(kbytes, per_symbol, model_code_estimate(program, isa_family(tc)), external)
    sizes = Sizes(
        weights_bytes=program.weights_bytes,
        params_bytes=program.params_bytes(data_model(tc)),
        code_bytes=code.total,
        arena_bytes=program.arena_bytes,
        state_bytes=program.state_bytes,
        persistent_bytes=program.persistent_bytes,
    )
    return sizes, code


# ---------------------------------------------------------------------------------------------
# Measurement.


def section_sizes(tc: Toolchain, elf: Path) -> dict[str, int]:
    """``size -A`` of a linked file: section name -> bytes."""
    out = run_tool([tc.tool("size"), "-A", str(elf)])
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        m = re.match(r"^(\.\S+)\s+(\d+)\s+\d+\s*$", line)
        if m:
            sizes[m.group(1)] = int(m.group(2))
    return sizes


def measure_image(tc: Toolchain, elf: Path) -> Sizes:
    """Sizes of the model in a linked image whose linker script collects the model's sections."""
    sections = section_sizes(tc, elf)
    values = {key: sum(sections.get(n, 0) for n in names) for key, names in IMAGE_SECTIONS.items()}
    if values["code_bytes"] == 0:
        raise BuildError(f"{elf}: no .bf_code section; was it linked with boardfit's linker script?")
    return Sizes(**values)


def measure_objects(model_object: Path, kernel_objects: Sequence[Path], symbols: Iterable[str]) -> Sizes:
    """Sizes of the model from its compiled objects (any toolchain, no link needed).

    Weights, params, arena, state and persistent scratch are the sizes of the sections that hold
    them in model.o;
    code is model.o's code plus the kernel sections reachable from ``symbols``.
    """
    model = ObjectFile(model_object)
    by_name = {s.name: s.section for s in model.symbols if s.defined and s.name}
    secs = {s.index: s for s in model.sections}

    def sec_of(symbol: str) -> int:
        idx = by_name.get(symbol)
        return secs[idx].size if idx is not None else 0

    named = {s.name: s.size for s in model.sections}
    state = named.get(".bss.bf_state", 0) + named.get(".data.bf_state", 0)
    data_sections = {".rodata.bf_weights", ".bss.bf_state", ".data.bf_state", ".bss.bf_persist"}
    data_sections |= {secs[by_name[n]].name for n in ("bf_params", "bf_arena") if n in by_name}
    model_code = sum(s.size for s in model.sections if s.allocated and s.name not in data_sections
                     and not s.name.startswith((".eh_frame", ".note", ".comment")))
    objects = [ObjectFile(p) for p in kernel_objects]
    where: dict[str, tuple[int, int]] = {}
    for k, obj in enumerate(objects):
        for name, sec in obj.defined_globals().items():
            where.setdefault(name, (k, sec))
    seen: set[tuple[int, int]] = set()
    kernels = sum(_closure(objects, where, where[s], seen, set()) for s in sorted(set(symbols)))
    return Sizes(
        weights_bytes=named.get(".rodata.bf_weights", 0),
        params_bytes=sec_of("bf_params"),
        code_bytes=model_code + kernels,
        arena_bytes=sec_of("bf_arena"),
        state_bytes=state,
        persistent_bytes=named.get(".bss.bf_persist", 0),
    )


@dataclass(frozen=True)
class SizeReport:
    """What ``boardfit build --json`` reports: predicted sizes, and measured ones when a build
    for the target ran (``measured_from``: ``image`` or ``objects``)."""

    target: str
    predicted: Sizes
    code: CodeEstimate
    measured: Sizes | None = None
    measured_from: str = ""

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"target": self.target, **self.predicted.to_json()}
        doc["code"] = {
            "kernels": dict(self.code.per_symbol),
            "model_estimate": self.code.model_bytes,
            "external_symbols": list(self.code.external),
        }
        doc["measured"] = None if self.measured is None else {
            **self.measured.to_json(), "from": self.measured_from
        }
        return doc
