"""Generate a self-contained C99 project for one model.

``generate_project(graph, out_dir)`` writes::

    model.h  model.c            the model (weights, arena, parameters, call sequence)
    bf_model_api.h              what the serial runtime needs from a model (model.c implements it)
    kernels/include/bf_kernels.h
    kernels/<variant>/…         only the kernel sources the model calls, plus their headers
    bf_host_main.c              a host test driver (files in, files out)
    Makefile  CMakeLists.txt

Output is deterministic: the same graph and options give byte-identical files (no timestamps,
every iteration sorted or in graph order); every file starts with a banner holding the model
hash and :data:`GENERATOR_VERSION`.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_gen import cdecl
from firmware_gen.arena import ArenaPlan
from firmware_gen.program import DTYPE_CODES, ModelProgram, Pointer, build_program
from firmware_gen.render import render
from firmware_gen.sizes import CodeEstimate, Sizes, predict
from targets import isa
from targets.toolchains import toolchain_for
from toolkit.errors import BuildError
from toolkit.model.ir import Graph

if TYPE_CHECKING:
    from toolkit.boards import Board
    from toolkit.compress.model import CompressedModel

log = logging.getLogger(__name__)

# Version of the generated code.  Bump it whenever a template or a layout rule changes what is
# generated, so that a banner names the generator that wrote the file.
GENERATOR_VERSION = "0.1.0"
DEFAULT_VARIANTS: tuple[str, ...] = ("ref",)
KERNELS = "kernels"
RUNTIME = "runtime"
MODEL_API_HEADER = "bf_model_api.h"
# Kernel families whose source calls library functions of other families (kernels/<variant>/
# <family>.c -> the families it needs compiled with it).  tests/test_compressed_build.py checks
# that every family links with exactly these.
FAMILY_DEPENDENCIES: Mapping[str, tuple[str, ...]] = {"sparse": ("huffman",)}


@dataclass(frozen=True)
class GeneratedProject:
    """What :func:`generate_project` wrote: paths relative to ``out_dir``, sorted."""

    out_dir: Path
    files: tuple[str, ...]
    sources: tuple[str, ...]  # C files of the model library: model.c, then the kernels
    include_dirs: tuple[str, ...]
    program: ModelProgram
    variants: tuple[str, ...]
    # Sizes predicted for the board (host when None) before the model is compiled; None when
    # that board's toolchain is not installed (code bytes are measured per kernel with it).
    predicted: Sizes | None = None
    code: CodeEstimate | None = None

    @property
    def plan(self) -> ArenaPlan:
        return self.program.arena

    @property
    def model_hash(self) -> str:
        return self.program.model_hash

    def path(self, name: str) -> Path:
        return self.out_dir / name


def _kernel_root() -> Any:
    return importlib.resources.files("firmware_gen").joinpath(KERNELS)


_RELATIVE_INCLUDE = re.compile(rb'^\s*#\s*include\s+"(\.\./[^"]+)"', re.M)


def _with_included(files: dict[str, bytes], root: Any) -> None:
    """Add every file a kernel file includes by a relative path (``#include "../ref/conv.c"``,
    ``"../opt/…"``): optimized variants include ref's source of the family they replace.  An
    included file's directory also brings its headers (``ref/conv.c`` includes ``bf_ref_util.h``
    from its own directory)."""
    todo = [p for p in files if p.startswith(KERNELS)]
    while todo:
        path = todo.pop()
        for m in _RELATIVE_INCLUDE.finditer(files[path]):
            rel = os.path.normpath(os.path.join(os.path.dirname(path), m.group(1).decode()))
            if rel in files:
                continue
            files[rel] = root.joinpath(os.path.relpath(rel, KERNELS)).read_bytes()
            todo.append(rel)
            folder = os.path.dirname(rel)
            for entry in root.joinpath(os.path.relpath(folder, KERNELS)).iterdir():
                header = f"{folder}/{entry.name}"
                if entry.name.endswith(".h") and header not in files:
                    files[header] = entry.read_bytes()
                    todo.append(header)


def _included_only(files: dict[str, bytes]) -> set[str]:
    """Kernel .c files that another kernel file includes: compiled inside it, never alone."""
    out = set()
    for path, data in files.items():
        if path.startswith(KERNELS):
            for m in _RELATIVE_INCLUDE.finditer(data):
                out.add(os.path.normpath(os.path.join(os.path.dirname(path), m.group(1).decode())))
    return {p for p in out if p.endswith(".c")}


def _kernel_files(families: Sequence[str], variants: Sequence[str],
                  target: isa.IsaTarget | None = None) -> dict[str, bytes]:
    """relative path -> bytes of every kernel file the project needs.

    Every public header (``kernels/include``) is copied; each family's source comes from the
    first variant that has it (``ref`` is always the last resort); a variant directory
    contributes its headers when one of its sources is used, and the files its sources include
    by relative path.  The x86 variant's ``bf_x86_target.h`` names the instruction sets
    targets/isa.py chose for ``target`` (default: this machine).
    """
    root = _kernel_root()
    order = [*variants, *(() if "ref" in variants else ("ref",))]
    include = root.joinpath("include")
    files: dict[str, bytes] = {
        f"{KERNELS}/include/{e.name}": e.read_bytes()
        for e in sorted(include.iterdir(), key=lambda e: e.name)
        if e.name.endswith(".h")
    }
    used_variants: set[str] = set()
    for family in families:
        for variant in order:
            src = root.joinpath(variant).joinpath(f"{family}.c")
            if src.is_file():
                files[f"{KERNELS}/{variant}/{family}.c"] = src.read_bytes()
                used_variants.add(variant)
                break
        else:
            raise BuildError(f"no kernel source {family}.c in variants {', '.join(order)}")
    for variant in sorted(used_variants):
        for entry in sorted(root.joinpath(variant).iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".h"):
                files[f"{KERNELS}/{variant}/{entry.name}"] = entry.read_bytes()
    _with_included(files, root)
    x86_header = f"{KERNELS}/x86/bf_x86_target.h"
    if x86_header in files:
        files[x86_header] = isa.x86_target_header(target or isa.host_target()).encode()
    return dict(sorted(files.items()))


def with_dependencies(families: Iterable[str]) -> tuple[str, ...]:
    """``families`` and every family they need (:data:`FAMILY_DEPENDENCIES`), sorted."""
    out: set[str] = set()
    todo = list(families)
    while todo:
        family = todo.pop()
        if family not in out:
            out.add(family)
            todo.extend(FAMILY_DEPENDENCIES.get(family, ()))
    return tuple(sorted(out))


def _library_sources(files: Mapping[str, bytes]) -> tuple[str, ...]:
    """model.c first, then the kernel sources in path order (not those only included)."""
    skip = _included_only(dict(files))
    return ("model.c", *sorted(p for p in files if p.startswith(KERNELS) and p.endswith(".c")
                               and p not in skip))


def _include_dirs(files: Iterable[str]) -> tuple[str, ...]:
    """The project dir, kernels/include, then each variant directory (the order -I flags take)."""
    dirs = {os.path.dirname(p) for p in files if p.startswith(KERNELS)}
    return (".", *sorted(dirs, key=lambda d: (not d.endswith("include"), d)))


def _per_line(ctype: str) -> int:
    """Elements per line of an initializer (lines stay under ~110 columns)."""
    return {"int8_t": 16, "uint8_t": 16, "int16_t": 12, "uint16_t": 12, "int32_t": 8,
            "uint32_t": 8, "int64_t": 4, "float": 6, "double": 4}.get(ctype, 8)


def _layer_outputs(program: ModelProgram) -> list[tuple[int, int, Pointer]]:
    out = []
    graph = program.graph
    for step in program.steps:
        op = graph.ops[step.op_index]
        if op.opcode == "ASSIGN_VARIABLE":
            out.append((step.op_index, step.copy_bytes, step.args[0]))
        elif op.outputs:
            t = graph.tensors[op.outputs[0]]
            off = program.arena.tensor_offset(t.index)
            out.append((step.op_index, t.nbytes, Pointer("arena", "void", True, offset=off)))
    return out


def runtime_file(name: str) -> bytes:
    """A file of the device runtime (``firmware_gen/runtime``), from the installed package."""
    return importlib.resources.files("firmware_gen").joinpath(RUNTIME).joinpath(name).read_bytes()


def render_project(program: ModelProgram, variants: Sequence[str] | None = None,
                   target: isa.IsaTarget | None = None) -> dict[str, bytes]:
    """Every file of the project as relative path -> bytes (nothing is written).  ``variants``
    default to the ones the program was lowered for."""
    files = _kernel_files(with_dependencies(program.kernel_families),
                          program.variants if variants is None else variants,
                          target)
    files[MODEL_API_HEADER] = runtime_file(MODEL_API_HEADER)
    sources = _library_sources(files)
    include_dirs = _include_dirs(files)
    ctx: dict[str, Any] = {
        "program": program,
        "model_name": program.name,
        "model_hash": program.model_hash,
        "generator_version": GENERATOR_VERSION,
        "kernels_abi_version": _abi_version(),
        "dtype_codes": sorted(((d.name, c) for d, c in DTYPE_CODES.items()), key=lambda x: x[1]),
        "per_line": _per_line,
        "layer_outputs": _layer_outputs(program),
        "model_hash_bytes": np.frombuffer(bytes.fromhex(program.model_hash), dtype=np.uint8),
        "plan_hash_bytes": np.frombuffer(bytes.fromhex(program.plan_hash), dtype=np.uint8),
        "debug_arena_offsets": np.array([d.spec.offset for d in program.debug.tensors], dtype=np.uint32),
        "debug_offsets": np.array([d.debug_offset for d in program.debug.tensors], dtype=np.uint32),
        "sources": sources,
        "include_dirs": include_dirs,
    }
    for name, template in (
        ("model.h", "model.h.j2"),
        ("model.c", "model.c.j2"),
        ("bf_host_main.c", "bf_host_main.c.j2"),
        ("Makefile", "Makefile.j2"),
        ("CMakeLists.txt", "CMakeLists.txt.j2"),
    ):
        files[name] = render(template, **ctx).encode("utf-8")
    return dict(sorted(files.items()))


def _abi_version() -> int:
    import re

    m = re.search(r"#define BF_KERNELS_ABI_VERSION (\d+)", cdecl.header_text())
    if m is None:
        raise BuildError("bf_kernels.h defines no BF_KERNELS_ABI_VERSION")
    return int(m.group(1))


def generate_project(
    graph: Graph,
    out_dir: str | os.PathLike[str],
    *,
    board: Board | None = None,
    plan: ArenaPlan | None = None,
    variants: Sequence[str] | None = None,
    strategy: str = "greedy",
    predict_sizes: bool = True,
    plan_hash: str | None = None,
    compressed: CompressedModel | None = None,
) -> GeneratedProject:
    """Lower, plan, render and write the C project for ``graph`` into ``out_dir``.

    ``plan`` is a ready arena plan (default: :func:`~firmware_gen.arena.plan_arena` with
    ``strategy`` over the kernels' scratch and in-place needs).  ``variants`` lists kernel
    variant directories in order of preference (``ref`` is the fallback; default: what
    targets/isa.py chooses from the board's ISA features, or this CPU's).  ``board`` (default:
    this machine) is the target of the predicted sizes: its toolchain compiles each kernel once
    (cached) to measure kernel code; weights, parameters, arena and state are exact without it.
    Files are written only when their bytes change, so an unchanged model keeps its build.
    ``plan_hash`` (hex sha256 of the compression plan) is what the device reports as its plan.
    ``compressed`` (a compression of ``graph``, :mod:`toolkit.compress.model`): its layers run in
    place of their ops, with their tables in flash, persistent scratch in ``bf_persist`` and, by
    default, :func:`~firmware_gen.program.compressed_plan_hash` as the plan hash.
    """
    if variants is None:
        variants = isa.board_variants(board)
    program = build_program(graph, arena=plan, strategy=strategy, plan_hash=plan_hash, variants=variants,
                            compressed=compressed)
    files = render_project(program, variants, isa.target_of(board))
    out = Path(out_dir)
    for rel, data in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
    sources = _library_sources(files)
    include_dirs = _include_dirs(files)
    log.info("generated %d files for %s in %s", len(files), graph.name, out)
    log.info("kernel variants %s; per layer: %s", "/".join(variants), ", ".join(
        f"{graph.ops[i].opcode}#{i}={v}" for i, v in sorted(program.layer_variants.items())))
    project = GeneratedProject(out, tuple(files), sources, include_dirs, program, tuple(variants))
    tc = toolchain_for(board)
    if not predict_sizes or not tc.available():
        return project
    kernels = [out / s for s in sources if s != "model.c"]
    try:
        predicted, code = predict(program, tc, kernels, [out / d for d in include_dirs])
    except BuildError as exc:  # a broken toolchain fails the build, not the generation
        log.warning("no size prediction for %s: %s", tc.name, str(exc).splitlines()[0])
        return project
    return dataclasses.replace(project, predicted=predicted, code=code)
