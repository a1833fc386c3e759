"""Build a generated project and run it from Python.

* :func:`build_host_library` compiles the model library for this machine as a shared object and
  :class:`HostModel` runs it through cffi's ABI mode (``ffi.dlopen``): inputs in, outputs out,
  state kept across calls for streaming models, :meth:`HostModel.reset` to start over.
* :func:`build_host_executable` links the generated test driver (``bf_host_main.c``);
  :func:`run_host_executable` feeds it input files in a subprocess.  This is how sanitizer builds
  run: an ASan/UBSan program needs no ``LD_PRELOAD`` trick, and a report aborts only the child.
* :func:`compress_for_build` makes the compressed model ``boardfit build/validate --spec``
  build, the way ``boardfit compress`` makes it (same data split, same calibration).

Outputs are content-addressed (``build/<kind>-<hash>``): a file name names exactly one build, so
a library that is loaded once is never silently reused after the sources changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_gen.firmware import FirmwareSources, firmware_name, generate_firmware, link_flags
from firmware_gen.image import generate_image, supports_image
from firmware_gen.program import IOSpec, ModelProgram
from firmware_gen.project import GeneratedProject, generate_project
from firmware_gen.sizes import SizeReport, measure_image, measure_objects, predict
from targets.elf import ImageSizes, image_sizes
from targets.runners.base import refuse_oversized
from targets.toolchains import (
    HOST,
    LINUX,
    SANITIZE_FLAGS,
    Toolchain,
    compile_objects,
    host_toolchain,
    run_tool,
    toolchain_for,
)
from toolkit.errors import BuildError, DoesNotFit

if TYPE_CHECKING:
    from toolkit.boards import Board
    from toolkit.compress.model import CompressedModel
    from toolkit.compress.spec import CompressionSpec
    from toolkit.datasets import Dataset
    from toolkit.model.ir import Graph

log = logging.getLogger(__name__)

BUILD_DIR = "build"
_CDEF = """
int bf_model_invoke(void);
void bf_model_reset(void);
void *bf_model_input(uint32_t index);
const void *bf_model_output(uint32_t index);
"""


def _digest(objects: Sequence[Path], tc: Toolchain, flags: Sequence[str]) -> str:
    """Name of a linked output: the cached objects' names are hashes of their inputs."""
    h = hashlib.sha256(repr((tc.describe(), tuple(flags))).encode())
    for o in objects:
        h.update(o.name.encode())
    return h.hexdigest()[:16]


def _host_flags(sanitize: bool) -> tuple[str, ...]:
    return (*SANITIZE_FLAGS, "-g", "-DBF_SANITIZE") if sanitize else ()


def _objects(
    project: GeneratedProject, tc: Toolchain, sources: Sequence[str], extra: Sequence[str]
) -> list[Path]:
    include = [project.path(d) for d in project.include_dirs]
    return compile_objects(tc, [project.path(s) for s in sources], include_dirs=include, extra=extra)


def _link(tc: Toolchain, objects: Sequence[Path], out: Path, extra: Sequence[str]) -> Path:
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        run_tool([*tc.compile_argv(objects, tmp, extra=extra), "-lm"])
        tmp.replace(out)
    return out


def build_host_library(
    project: GeneratedProject, *, toolchain: Toolchain | None = None, sanitize: bool = False
) -> Path:
    """Compile model.c and the kernels into one shared object; returns its path.

    Kernel objects come from the content-addressed object cache (targets.toolchains), so only
    model.c is compiled for a new model.  A sanitized library can only be loaded into a process
    that preloads the sanitizer runtime; use :func:`build_host_executable` for sanitizer runs.
    """
    tc = toolchain or host_toolchain()
    tc.require()
    flags = _host_flags(sanitize)
    objects = _objects(project, tc, project.sources, flags)
    out = project.path(BUILD_DIR) / f"libbf_model-{_digest(objects, tc, flags)}.so"
    return _link(tc, objects, out, ("-shared", *flags))


def build_host_executable(
    project: GeneratedProject, *, toolchain: Toolchain | None = None, sanitize: bool = False
) -> Path:
    """Link the test driver (bf_host_main.c) with the model library for this machine, or for a
    Linux board with its toolchain (static when its link flags say so); returns the path."""
    tc = toolchain or host_toolchain()
    tc.require()
    flags = _host_flags(sanitize)
    objects = _objects(project, tc, (*project.sources, "bf_host_main.c"), flags)
    out = project.path(BUILD_DIR) / f"bf_model_test-{_digest(objects, tc, flags)}"
    return _link(tc, objects, out, flags)


def _as_input(spec: IOSpec, value: np.ndarray) -> bytes:
    arr = np.asarray(value)
    if arr.dtype != spec.dtype.numpy:
        raise BuildError(f"input {spec.position} ({spec.name}) must be {spec.dtype.value}, got {arr.dtype}")
    if arr.size * arr.dtype.itemsize != spec.nbytes:
        raise BuildError(f"input {spec.position} ({spec.name}) must have shape {spec.shape}, got {arr.shape}")
    return np.ascontiguousarray(arr).tobytes()


def _as_output(spec: IOSpec, data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=spec.dtype.numpy).reshape(spec.shape).copy()


class HostModel:
    """A generated model compiled for this machine and loaded with cffi (ABI mode).

    The library keeps one arena and one state: two HostModel objects on the same file share
    them (the dynamic loader maps a path once).  Not thread-safe.
    """

    def __init__(self, library: str | os.PathLike[str], program: ModelProgram) -> None:
        import cffi

        self.program = program
        self._ffi = cffi.FFI()
        self._ffi.cdef(_CDEF)
        try:
            self._lib = self._ffi.dlopen(os.fspath(library))
        except OSError as exc:
            raise BuildError(f"cannot load {library}: {exc}") from exc
        self.reset()

    @classmethod
    def build(cls, project: GeneratedProject, toolchain: Toolchain | None = None) -> HostModel:
        return cls(build_host_library(project, toolchain=toolchain), project.program)

    def reset(self) -> None:
        """Restore the initial state of a streaming model."""
        self._lib.bf_model_reset()

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One inference: the outputs in graph order (copies, shaped and typed as the graph says)."""
        specs = self.program.inputs
        if len(inputs) != len(specs):
            raise BuildError(f"model {self.program.name!r} takes {len(specs)} inputs, got {len(inputs)}")
        for spec, value in zip(specs, inputs, strict=True):
            data = _as_input(spec, value)
            self._ffi.memmove(self._lib.bf_model_input(spec.position), data, len(data))
        status = self._lib.bf_model_invoke()
        if status != 0:
            raise BuildError(f"bf_model_invoke returned {status}")
        return [
            _as_output(s, bytes(self._ffi.buffer(self._lib.bf_model_output(s.position), s.nbytes)))
            for s in self.program.outputs
        ]


def run_host_executable(
    executable: str | os.PathLike[str],
    program: ModelProgram,
    steps: Sequence[Sequence[np.ndarray]],
    *,
    timeout: float = 120,
    emulator: Sequence[str] = (),
) -> list[list[np.ndarray]]:
    """Run the test driver on ``steps`` (one list of inputs per invocation, state carried over
    from step to step); returns the outputs of every step.  ``emulator`` prefixes the command
    (``["qemu-aarch64", "-cpu", "cortex-a72"]`` for a Linux board's executable).  A crash or a
    sanitizer report raises :class:`BuildError` with the program's stderr."""
    with tempfile.TemporaryDirectory(prefix="bf-run-") as tmp:
        in_path, out_path = Path(tmp, "inputs.bin"), Path(tmp, "outputs.bin")
        in_path.write_bytes(
            b"".join(_as_input(s, x) for step in steps for s, x in zip(program.inputs, step, strict=True))
        )
        env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
               "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}
        argv = [*emulator, os.fspath(executable), str(in_path), str(out_path), str(len(steps))]
        log.info("$ %s", " ".join(argv))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if proc.returncode != 0 or proc.stderr.strip():
            raise BuildError(
                f"{executable} failed (exit {proc.returncode}):\n{proc.stderr.strip()[-4000:]}"
            )
        data = out_path.read_bytes()
    per_step = sum(s.nbytes for s in program.outputs)
    if len(data) != per_step * len(steps):
        raise BuildError(f"{executable} wrote {len(data)} bytes, expected {per_step * len(steps)}")
    results = []
    for k in range(len(steps)):
        chunk, outs = data[k * per_step : (k + 1) * per_step], []
        pos = 0
        for s in program.outputs:
            outs.append(_as_output(s, chunk[pos : pos + s.nbytes]))
            pos += s.nbytes
        results.append(outs)
    return results


# ---------------------------------------------------------------------------------------------
# Builds for a board (or the host) with a size report.


@dataclass(frozen=True)
class BoardBuild:
    """The result of :func:`build_for_board`: what was built and how big the model is."""

    target: str
    toolchain: Toolchain
    report: SizeReport
    artifact: Path  # shared library (host), ELF image (Cortex-M) or executable / archive
    program: ModelProgram | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"artifact": str(self.artifact), "toolchain": self.toolchain.describe()}
        if self.program is not None:
            doc["plan_hash"] = self.program.plan_hash
            doc["compressed_layers"] = compressed_layers_json(self.program)
        return {**doc, **self.report.to_json()}


def compressed_layers_json(program: ModelProgram) -> list[dict[str, Any]]:
    """Per compressed op: its kernel, exact weight bytes and persistent scratch bytes."""
    persistent = {b.op_index: b.nbytes for b in program.persistent}
    return [{"op_index": i, "kernel": program.calls[i].symbol,
             "weights_bytes": program.layer_weights_bytes(i), "persistent_bytes": persistent.get(i, 0)}
            for i in program.compressed_ops]


def _kernel_paths(project: GeneratedProject) -> tuple[list[Path], list[Path]]:
    kernels = [project.path(s) for s in project.sources if s != "model.c"]
    return kernels, [project.path(d) for d in project.include_dirs]


def _archive(tc: Toolchain, objects: Sequence[Path], out_dir: Path) -> Path:
    """``libbf_model.a`` (the name the image's linker script selects the model's code by)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / "libbf_model.a"
    if archive.exists():
        archive.unlink()
    run_tool([tc.tool("ar"), "rcs", str(archive), *map(str, objects)])
    return archive


def build_image(project: GeneratedProject, board: Board, *, toolchain: Toolchain | None = None) -> Path:
    """Cross-compile the model library and link the minimal image for a Cortex-M ``board``.

    The image exits the emulator through semihosting when the board's emulator enables it
    (``BF_SEMIHOSTING``); on a real board it stops in a loop after one inference.
    """
    tc = toolchain or toolchain_for(board)
    tc.require()
    image = generate_image(project, board)
    lib_objects = _objects(project, tc, project.sources, ())
    defines = ("-DBF_SEMIHOSTING",) if board.emulator is not None and board.emulator.semihosting else ()
    include = [project.path(d) for d in project.include_dirs]
    boot = compile_objects(tc, [image.startup, image.main], include_dirs=include, extra=defines)
    tag = _digest([*lib_objects, *boot], tc, (board.id, image.linker_script.read_text()))
    out_dir = project.path(BUILD_DIR) / f"{board.id}-{tag}"
    archive = _archive(tc, lib_objects, out_dir)
    elf = out_dir / "image.elf"
    if not elf.exists():
        tmp = elf.with_name("image.elf.tmp")
        extra = ("-nostartfiles", f"-T{image.linker_script}", f"-Wl,-Map={out_dir / 'image.map'}")
        run_tool([*tc.compile_argv([*boot, archive], tmp, extra=extra), "-lm"])
        tmp.replace(elf)
    return elf


def build_for_board(project: GeneratedProject, board: Board | None = None) -> BoardBuild:
    """Compile ``project`` for ``board`` (``None``: this machine) and report its sizes.

    Host: a shared library loadable by :class:`HostModel`; Cortex-M: the minimal image, measured
    with ``size -A``; Linux boards: the test driver as an executable (static when the board's
    link flags say so: run it with qemu-user); other boards (RISC-V …): the library archive.
    Except for images, sizes are measured section by section on the compiled objects.
    Predicted sizes are computed first and never depend on the model's own build; a model over
    the board's flash or RAM budget raises DoesNotFit before anything is linked.
    """
    tc = toolchain_for(board)
    tc.require()
    kernels, include = _kernel_paths(project)
    predicted, code = predict(project.program, tc, kernels, include)
    target = "host" if board is None else board.id
    if board is not None:
        board.check_fit(predicted.flash_bytes, predicted.ram_bytes)
    if board is not None and supports_image(board):
        elf = build_image(project, board, toolchain=tc)
        report = SizeReport(target, predicted, code, measure_image(tc, elf), "image")
        return BoardBuild(target, tc, report, elf, project.program)
    objects = _objects(project, tc, project.sources, ())
    measured = measure_objects(objects[0], objects[1:], project.program.symbols)
    if tc.kind == HOST:
        artifact = build_host_library(project, toolchain=tc)
    elif tc.kind == LINUX:
        artifact = build_host_executable(project, toolchain=tc)
    else:
        artifact = _archive(tc, objects, project.path(BUILD_DIR) / f"{target}-{_digest(objects, tc, ())}")
    return BoardBuild(target, tc, SizeReport(target, predicted, code, measured, "objects"), artifact,
                      project.program)


# ---------------------------------------------------------------------------------------------
# The device program: generated model + serial runtime + board port.

_OVERFLOW = re.compile(r"region `(\w+)' overflowed by (\d+) bytes")


@dataclass(frozen=True)
class FirmwareBuild:
    """The result of :func:`build_firmware`.

    ``artifact`` is the ELF image (bare-metal boards) or the executable (Linux boards, host).
    ``report`` has the model's sizes, predicted and measured (from the image's sections on
    bare-metal boards, from the objects otherwise); ``image`` the whole program's bytes (code,
    constants, data, bss including the minimum stack reservation).
    """

    target: str
    toolchain: Toolchain
    artifact: Path
    project: GeneratedProject
    firmware: FirmwareSources
    report: SizeReport
    image: ImageSizes

    @property
    def program(self) -> ModelProgram:
        return self.project.program

    @property
    def debug(self) -> bool:
        return self.firmware.debug

    @property
    def model_hash(self) -> str:
        return self.program.model_hash

    @property
    def plan_hash(self) -> str:
        """Hex sha256 of the compression plan the device reports (zeros: none)."""
        return self.program.plan_hash

    @property
    def emulated(self) -> bool:
        return self.firmware.config is not None and self.firmware.config.emulated

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"artifact": str(self.artifact), "toolchain": self.toolchain.describe()}
        doc["firmware"] = {
            "family": self.firmware.family, "debug": self.firmware.debug,
            "profile_layers": self.firmware.profile_layers, "emulated": self.emulated,
            "flash_bytes": self.image.flash, "ram_bytes": self.image.ram,
            "debug_bytes": self.program.debug.size if self.debug else 0,
        }
        return {**doc, **self.report.to_json()}


def build_firmware(
    graph: Graph,
    board: Board | None,
    out_dir: str | os.PathLike[str],
    debug: bool = False,
    profile_layers: bool = True,
    *,
    emulated: bool | None = None,
    defines: Sequence[str] = (),
    extra_sources: Sequence[str | os.PathLike[str]] = (),
    extra_flags: Sequence[str] = (),
    plan_hash: str | None = None,
    strategy: str = "greedy",
    compressed: CompressedModel | None = None,
) -> FirmwareBuild:
    """Generate, compile and link the device program of ``graph`` for ``board`` (None: this
    machine) in ``out_dir``; returns the ELF / executable and the size report.

    The model must fit before anything is compiled: its predicted flash and RAM (plus the debug
    copies of a ``debug`` build) are checked against the board's budgets, and a model that does
    not fit raises :class:`~toolkit.errors.DoesNotFit` with the bytes needed and available.  The
    linked image is checked again (the linker script's region overflow and ASSERTs, then
    :func:`targets.runners.refuse_oversized`), so nothing oversized ever reaches a runner.

    ``emulated`` (default: the board's preferred runner is an emulator) selects the emulator
    build; ``defines`` (``NAME`` or ``NAME=VALUE``) and ``extra_flags`` go to every compile,
    ``extra_sources`` are linked in (test hooks).  Objects are cached by content, and the linked
    program is content-addressed under ``out_dir/build``.  ``compressed`` (a compression of
    ``graph``) runs its layers in place of their ops (firmware_gen.program).
    """
    tc = toolchain_for(board)
    tc.require()
    project = generate_project(graph, out_dir, board=board, plan_hash=plan_hash, strategy=strategy,
                               predict_sizes=False, compressed=compressed)
    kernels, include = _kernel_paths(project)
    predicted, code = predict(project.program, tc, kernels, include)
    if board is not None:
        debug_bytes = project.program.debug.size if debug else 0
        board.check_fit(predicted.flash_bytes, predicted.ram_bytes + debug_bytes)
    fw = generate_firmware(project, board, tc, debug=debug, profile_layers=profile_layers,
                           emulated=emulated, defines=defines)
    flags = (*(f"-D{d}" for d in fw.defines), *extra_flags)
    model_obj = compile_objects(tc, [project.path("model.c")], include_dirs=fw.include_dirs, extra=flags)
    kernel_objs = compile_objects(tc, kernels, include_dirs=include)
    fw_objs = compile_objects(tc, [*fw.sources, *map(Path, extra_sources)], include_dirs=fw.include_dirs,
                              extra=flags)
    script = fw.linker_script.read_text() if fw.linker_script is not None else ""
    target = "host" if board is None else board.id
    tag = _digest([*model_obj, *kernel_objs, *fw_objs], tc, (target, script, *flags))
    out = project.path(BUILD_DIR) / f"firmware-{target}-{tag}"
    archive = _archive(tc, [*model_obj, *kernel_objs], out)
    artifact = out / firmware_name(fw.family)
    if not artifact.exists():
        _link_firmware(tc, fw, [*fw_objs, archive], artifact, board)
    image = refuse_oversized(artifact, board) if board is not None else image_sizes(artifact)
    if fw.linker_script is not None:
        measured, source = measure_image(tc, artifact), "image"
    else:
        measured = measure_objects(model_obj[0], kernel_objs, project.program.symbols)
        source = "objects"
    report = SizeReport(target, predicted, code, measured, source)
    log.info("firmware for %s: %s (%d bytes flash, %d bytes RAM)", target, artifact, image.flash, image.ram)
    return FirmwareBuild(target, tc, artifact, project, fw, report, image)


def _link_firmware(tc: Toolchain, fw: FirmwareSources, inputs: Sequence[Path], out: Path,
                   board: Board | None) -> None:
    tmp = out.with_name(out.name + ".tmp")
    map_file = out.with_suffix(".map") if fw.linker_script is not None else None
    argv = [tc.cc, *tc.opt, *tc.cflags, *map(str, inputs), "-o", str(tmp),
            *link_flags(tc, fw.linker_script, map_file), "-lm"]
    try:
        run_tool(argv)
    except BuildError as exc:
        overflow = _OVERFLOW.search(str(exc))
        if overflow is None or board is None:
            raise
        region, over = overflow.group(1), int(overflow.group(2))
        memory = board.ram if region == "RAM" else board.flash
        what = "firmware RAM (data, bss, arena, minimum stack)" if region == "RAM" else "firmware flash"
        raise DoesNotFit(what, memory.size + over, memory.size, board.id) from exc
    tmp.replace(out)


# ---------------------------------------------------------------------------------------------
# Compressed models.


def compress_for_build(graph: Graph, spec: CompressionSpec, data: str | None = None,
                       calib: str | None = None) -> tuple[CompressedModel, Dataset | None]:
    """The compressed model of ``graph`` exactly as ``boardfit compress`` makes it, and the held-out
    test data.  ``data`` is split into calibration and test halves
    (:func:`toolkit.compress.pipeline.split_data`, seeded) unless ``calib`` is given (then all of
    ``data`` is test data); without either, layers are compressed without calibration (no
    accuracy recovery; a float model cannot be quantized and is refused).  A float model is
    quantized to int8 on the calibration data first: the compressed model's ``graph`` is then
    that int8 graph, which is what the device runs."""
    from toolkit.compress.model import compress_graph
    from toolkit.compress.pipeline import prepare_graph, split_data
    from toolkit.datasets import prepare_inputs

    ds = split_data(data, calib)
    int8_graph, float_graph = prepare_graph(graph, ds.calib)
    calib_x = None if ds.calib is None else prepare_inputs(np.asarray(ds.calib.x), int8_graph, ds.calib.name)
    return compress_graph(int8_graph, spec, calib_x, float_graph=float_graph), ds.test
