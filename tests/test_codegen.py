"""The generated C, end to end: every example model and every op through the C project.

* On the host (shared library loaded with cffi): int8 outputs bit-identical to the oracle and to
  the TFLite interpreter, float within 1e-5 relative (+1e-6 absolute, as the oracle tests);
  streaming models over several steps, with reset.
* Under AddressSanitizer and UndefinedBehaviorSanitizer (a standalone test driver in a
  subprocess) for a representative subset.
* Every project compiles with -std=c99 -Wall -Wextra -Werror on host gcc and on
  arm-none-eabi-gcc for a Cortex-M4F; for each example model the predicted weight, parameter,
  arena and state bytes equal what `arm-none-eabi-size -A` measures in the linked image, and
  predicted code is within 10%.
* Generation is deterministic, and two small models match checked-in golden files byte for byte.
  Regenerate them after an intended change with
  ``BOARDFIT_UPDATE_GOLDEN=1 python -m pytest tests/test_codegen.py -k golden``.

Kernel objects are cached by content (targets.toolchains.compile_object), so each model costs
one compile of its model.c per toolchain.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import test_kernels_ref as kernel_cases
from opgen import GraphBuilder, assert_same, bias_quant, rand_bias, rand_input, rand_per_channel, rand_quant

from firmware_gen.lower import SUPPORTED_KERNEL_OPS
from firmware_gen.project import GeneratedProject, generate_project
from firmware_gen.render import c_array, c_double, c_int, render
from targets.toolchains import compile_object, host_toolchain, run_tool, toolchain_for
from toolkit.boards import Board, load_board
from toolkit.build import (
    BoardBuild,
    HostModel,
    build_for_board,
    build_host_executable,
    build_host_library,
    run_host_executable,
)
from toolkit.errors import BuildError
from toolkit.model.ir import (
    ActivationOptions,
    ConcatenationOptions,
    Conv2DOptions,
    DType,
    Graph,
    Padding,
    ReshapeOptions,
    VariableOptions,
)
from toolkit.model.tflite import read_tflite
from toolkit.oracle import Oracle

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "models").glob("*.tflite"))
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
GOLDEN_MODELS = ("digits_stream_int8", "digits_cnn_int8")
GOLDEN_FILES = ("model.h", "model.c", "Makefile", "CMakeLists.txt", "bf_host_main.c")
BOARD = "mps2-an386"

_HAVE_ARM = shutil.which("arm-none-eabi-gcc") is not None
needs_arm = pytest.mark.skipif(not _HAVE_ARM, reason="no arm-none-eabi-gcc")


# ---------------------------------------------------------------------------------------------
# Graphs: the examples, the kernel suite's single-op cases, and a few multi-op graphs of our own.


def _example(name: str) -> Graph:
    path = ROOT / "examples" / "models" / f"{name}.tflite"
    return dataclasses.replace(read_tflite(path), name=name)


def _input_dtype(case: kernel_cases.Case) -> str:
    graph = case.build(np.random.default_rng(0))
    return graph.input_tensors[0].dtype.value


def _op_cases() -> list[kernel_cases.Case]:
    """The first case of the kernel suite for every (op, input type): every op, int8 and float."""
    chosen: dict[tuple[str, str], kernel_cases.Case] = {}
    for case in kernel_cases.CASES:
        chosen.setdefault((case.opcode, _input_dtype(case)), case)
    return list(chosen.values())


OP_CASES = _op_cases()
# Under ASan/UBSan: every kernel family in int8, a few in float32 too.
_SANITIZED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "ADD", "SOFTMAX",
                  "CONCATENATION", "SPLIT_V", "PAD", "STRIDED_SLICE", "MEAN", "LOGISTIC", "DEQUANTIZE")
SANITIZED_CASES = [
    c.id for c in OP_CASES
    if c.opcode in _SANITIZED_OPS
    and (_input_dtype(c) != "float32" or c.opcode in ("CONV_2D", "SOFTMAX", "MEAN"))
]


def _streaming_graph(rng: np.random.Generator) -> Graph:
    """An int8 state update s' = s + x (non-zero initial state) with the state as a second output,
    and a float32 dense head: READ/ASSIGN_VARIABLE, in place on the second input, a constant
    operand of a pointer list (CONCATENATION) and odd sizes."""
    b = GraphBuilder("stream_mixed")
    q = rand_quant(rng, -2.0, 2.0)
    x = b.input((1, 13), "int8", quant=q)
    var = b.variable((1, 13), "int8", quant=q, initial=rng.integers(-20, 20, size=(1, 13)))
    s = b.tensor((1, 13), "int8", quant=q)
    b.op("READ_VARIABLE", [], [s], VariableOptions(var))
    s2 = b.output((1, 13), "int8", quant=q)
    b.op("ADD", [x, s], [s2], ActivationOptions())
    b.op("ASSIGN_VARIABLE", [s2], [], VariableOptions(var))
    c = b.const(rng.integers(-100, 100, size=(1, 3)).astype(np.int8), quant=q)
    cat = b.output((1, 16), "int8", quant=q)
    b.op("CONCATENATION", [s2, c], [cat], ConcatenationOptions(axis=1))
    return b.build()


def _conv_chain(rng: np.random.Generator) -> Graph:
    """Two convolutions whose activation sizes differ, so the planner reuses the input's bytes."""
    b = GraphBuilder("conv_chain")
    x = b.input((1, 11, 9, 3), "int8", quant=rand_quant(rng, -1.0, 1.0))
    tensors = [x]
    for k, (oc, stride) in enumerate(((5, 1), (7, 2))):
        src = tensors[-1]
        _, h, w, c = b.shape(src)
        wq = rand_per_channel(rng, oc)
        wt = b.const(rng.integers(-127, 128, size=(oc, 3, 3, c)).astype(np.int8), quant=wq)
        bt = b.const(rand_bias(rng, oc), quant=bias_quant(b.quant(src), wq))
        shape = (1, -(-h // stride), -(-w // stride), oc)
        q = rand_quant(rng, -4.0, 4.0)
        y = b.output(shape, "int8", quant=q) if k == 1 else b.tensor(shape, "int8", quant=q)
        b.op("CONV_2D", [src, wt, bt], [y], Conv2DOptions(Padding.SAME, stride, stride))
        tensors.append(y)
    return b.build()


def _float16_weights(rng: np.random.Generator) -> Graph:
    """float16 constants behind DEQUANTIZE (as TFLite's float16 quantization writes them) feeding
    an ADD, plus a RESHAPE of a constant (a real copy, not a view)."""
    b = GraphBuilder("f16_weights")
    x = b.input((3, 11), "float32")
    w16 = b.const(rng.standard_normal((3, 11)).astype(np.float16))
    w = b.tensor((3, 11), "float32")
    b.op("DEQUANTIZE", [w16], [w])
    y = b.output((3, 11), "float32")
    b.op("ADD", [x, w], [y], ActivationOptions())
    c = b.const(rng.standard_normal((33,)).astype(np.float32))
    shape = b.const(np.array([3, 11], np.int32))
    r = b.tensor((3, 11), "float32")
    b.op("RESHAPE", [c, shape], [r], ReshapeOptions((3, 11)))
    z = b.output((3, 11), "float32")
    b.op("MUL", [y, r], [z], ActivationOptions())
    return b.build()


OWN_GRAPHS: dict[str, Callable[[np.random.Generator], Graph]] = {
    "stream_mixed": _streaming_graph,
    "conv_chain": _conv_chain,
    "f16_weights": _float16_weights,
}


# ---------------------------------------------------------------------------------------------
# Building (once per graph and test module).


def _graph_makers() -> dict[str, Callable[[], Graph]]:
    """Every graph the tests generate, by key (example stem, kernel case id or own graph name)."""
    makers: dict[str, Callable[[], Graph]] = {p.stem: (lambda s=p.stem: _example(s)) for p in EXAMPLES}
    makers.update({c.id: (lambda c=c: c.build(np.random.default_rng(1))) for c in OP_CASES})
    makers.update({n: (lambda f=f: f(np.random.default_rng(2))) for n, f in OWN_GRAPHS.items()})
    return makers


MAKERS = _graph_makers()


def _m4_objects(project: GeneratedProject) -> list[Path]:
    """Compile every source of the project for the Cortex-M4F (-Wall -Wextra -Werror -std=c99)."""
    tc = toolchain_for(load_board(BOARD))
    include = [project.path(d) for d in project.include_dirs]
    return [compile_object(tc, project.path(s), include_dirs=include) for s in project.sources]


# What each test needs built, by test function: (kind, parameter that names the graph).
_NEEDS = {
    "test_example_model_on_host": ("host", "path"),
    "test_single_op_on_host": ("host", "case"),
    "test_multi_op_graphs_on_host": ("host", "name"),
    "test_examples_under_sanitizers": ("asan", "name"),
    "test_single_ops_under_sanitizers": ("asan", "case"),
    "test_single_op_compiles_for_cortex_m4": ("m4", "case"),
    "test_predicted_sizes_equal_cortex_m4_image": ("image", "path"),
}


class Projects:
    """Generated projects and their builds, shared by the tests of this module.

    Compiling is most of this file's time, and it is subprocess work: builds the selected tests
    will need are started up front on a pool of two workers (the machine has two cores), so they
    overlap with each other and with the Python checks.  A test waits only for its own build.
    """

    BUILDERS: ClassVar[dict[str, Callable[[GeneratedProject], object]]] = {
        "host": build_host_library,
        "asan": lambda p: build_host_executable(p, sanitize=True),
        "m4": _m4_objects,
        "image": lambda p: build_for_board(p, _emulated_memory(load_board(BOARD))),
    }

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, tuple[Graph, GeneratedProject]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        self._jobs: dict[tuple[str, str], concurrent.futures.Future[object]] = {}

    def get(self, key: str, make: Callable[[], Graph] | None = None) -> tuple[Graph, GeneratedProject]:
        if key not in self._cache:
            graph = (make or MAKERS[key])()
            # The portable kernels: these projects are compiled for the host, the Cortex-M4 and
            # qemu-user alike, and the golden files must not depend on this machine's CPU (ISA
            # variants have their own suite, tests/test_kernels_simd.py).
            self._cache[key] = (graph, generate_project(graph, self.root / key, predict_sizes=False,
                                                        variants=("ref",)))
        return self._cache[key]

    def prefetch(self, wanted: list[tuple[str, str]]) -> None:
        for kind, key in wanted:
            if (kind, key) in self._jobs or ((kind == "m4" or kind == "image") and not _HAVE_ARM):
                continue
            _, project = self.get(key)
            self._jobs[(kind, key)] = self._pool.submit(self.BUILDERS[kind], project)

    def build(self, kind: str, key: str) -> object:
        job = self._jobs.get((kind, key))
        if job is None:
            job = self._pool.submit(self.BUILDERS[kind], self.get(key)[1])
            self._jobs[(kind, key)] = job
        return job.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _param_key(value: object) -> str:
    if isinstance(value, Path):
        return value.stem
    if isinstance(value, kernel_cases.Case):
        return value.id
    return str(value)


@pytest.fixture(scope="module")
def projects(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Projects]:
    p = Projects(tmp_path_factory.mktemp("codegen"))
    wanted = []
    for item in request.session.items:
        need = _NEEDS.get(getattr(item, "originalname", ""))
        callspec = getattr(item, "callspec", None)
        if need is not None and callspec is not None and item.module is sys.modules[__name__]:
            wanted.append((need[0], _param_key(callspec.params[need[1]])))
    p.prefetch(wanted)
    yield p
    p.close()


def _inputs(
    graph: Graph, rng: np.random.Generator, lo: float | None = None, hi: float | None = None
) -> list[np.ndarray]:
    return [rand_input(rng, t, lo, hi) for t in graph.input_tensors]


def _compare(got: list[np.ndarray], want: list[np.ndarray] | tuple[np.ndarray, ...], what: str) -> None:
    assert len(got) == len(want)
    for k, (a, e) in enumerate(zip(got, want, strict=True)):
        assert_same(a, e, f"{what}: output {k}", atol_float=1e-6, rtol_float=1e-5)


def _run_against_oracle(graph: Graph, model: HostModel, steps: list[list[np.ndarray]], what: str) -> None:
    oracle = Oracle(graph)
    for k, xs in enumerate(steps):
        _compare(model.run(xs), list(oracle.run(xs).outputs), f"{what} step {k}")


# ---------------------------------------------------------------------------------------------
# Host: cffi.


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_model_on_host(projects: Projects, path: Path, rng: np.random.Generator) -> None:
    """The generated C computes what TensorFlow Lite Micro computes (the interpreter that runs on
    microcontrollers; the desktop LiteRT rounds FULLY_CONNECTED in double and differs by one now
    and then), and what the oracle's default profile computes."""
    pytest.importorskip("tflite_micro")
    from tests.tflm_check import tflm_run

    graph, project = projects.get(path.stem)
    model = HostModel(projects.build("host", path.stem), project.program)  # type: ignore[arg-type]
    steps = [_inputs(graph, rng) for _ in range(3)]
    _run_against_oracle(graph, model, steps, path.stem)
    model.reset()
    tflm = tflm_run(path.read_bytes(), steps)
    for k, xs in enumerate(steps):
        _compare(model.run(xs), tflm.outputs[k], f"{path.stem} vs TFLite Micro step {k}")


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.id)
def test_single_op_on_host(projects: Projects, case: kernel_cases.Case, rng: np.random.Generator) -> None:
    graph, project = projects.get(case.id)
    model = HostModel(projects.build("host", case.id), project.program)  # type: ignore[arg-type]
    _run_against_oracle(graph, model, [_inputs(graph, rng, case.lo, case.hi) for _ in range(2)], case.id)


def test_every_op_is_generated() -> None:
    assert {c.opcode for c in OP_CASES} == set(SUPPORTED_KERNEL_OPS)
    assert {_input_dtype(c) for c in OP_CASES if c.opcode == "CONV_2D"} == {"int8", "float32"}


@pytest.mark.parametrize("name", sorted(OWN_GRAPHS))
def test_multi_op_graphs_on_host(projects: Projects, name: str, rng: np.random.Generator) -> None:
    graph, project = projects.get(name)
    model = HostModel(projects.build("host", name), project.program)  # type: ignore[arg-type]
    steps = [_inputs(graph, rng) for _ in range(4)]
    _run_against_oracle(graph, model, steps, name)
    model.reset()  # state starts over: the same outputs again
    _run_against_oracle(graph, model, steps, f"{name} after reset")


def test_streaming_state_persists_and_resets(projects: Projects, rng: np.random.Generator) -> None:
    graph, project = projects.get("digits_stream_int8")
    assert graph.is_stateful and project.program.state_bytes > 0
    model = HostModel.build(project)
    x = _inputs(graph, rng)
    first, second = model.run(x), model.run(x)
    assert any(not np.array_equal(a, b) for a, b in zip(first, second, strict=True)), "state had no effect"
    model.reset()
    _compare(model.run(x), first, "first step after reset")


def test_in_place_and_arena_reuse_happen(projects: Projects) -> None:
    """The plans the tests above execute really share memory (or they would prove little)."""
    _, cnn = projects.get("digits_cnn_int8")
    graph = cnn.program.graph
    linear_size = sum(graph.tensors[t].nbytes for b in cnn.plan.buffers for t in b.tensors[:1])
    assert cnn.program.arena_bytes < linear_size
    _, stream = projects.get("stream_mixed")
    add = next(s for s in stream.program.steps if s.opcode == "ADD")
    assert add.args[1].offset == add.args[2].offset, "ADD should run in place on its second input"


_HOOK_C = """
#include <stdint.h>
#include <string.h>
const void *bf_model_layer_output(uint32_t index, uint32_t *bytes);
unsigned char bf_test_dump[1 << 16];
uint32_t bf_test_offset[64], bf_test_bytes[64], bf_test_used;
void bf_test_layer_hook(uint32_t index) {
    uint32_t n;
    const void *p = bf_model_layer_output(index, &n);
    bf_test_offset[index] = bf_test_used;
    bf_test_bytes[index] = n;
    memcpy(bf_test_dump + bf_test_used, p, n);
    bf_test_used += n;
}
"""


def test_layer_hook_sees_every_intermediate_tensor(projects: Projects, tmp_path: Path) -> None:
    """BF_LAYER_HOOK(i) runs after layer i and bf_model_layer_output(i) (BF_MODEL_LAYER_INFO)
    points at that layer's output, equal to the oracle's intermediate tensor."""
    import cffi

    graph, project = projects.get("digits_cnn_int8")
    (tmp_path / "hook.h").write_text("#include <stdint.h>\nvoid bf_test_layer_hook(uint32_t index);\n")
    (tmp_path / "hook.c").write_text(_HOOK_C)
    tc = host_toolchain()
    include = [project.path(d) for d in project.include_dirs]
    flags = ("-DBF_MODEL_LAYER_INFO", "-DBF_LAYER_HOOK(i)=bf_test_layer_hook(i)", "-include",
             str(tmp_path / "hook.h"))
    objects = [compile_object(tc, project.path(s), include_dirs=include, extra=flags)
               for s in project.sources]
    objects.append(compile_object(tc, tmp_path / "hook.c"))
    lib_path = tmp_path / "libhooked.so"
    run_tool([*tc.compile_argv(objects, lib_path, extra=("-shared",)), "-lm"])
    ffi = cffi.FFI()
    ffi.cdef("int bf_model_invoke(void); void *bf_model_input(uint32_t);"
             "extern unsigned char bf_test_dump[65536];"
             "extern uint32_t bf_test_offset[64], bf_test_bytes[64];")
    lib = ffi.dlopen(str(lib_path))
    x = _inputs(graph, np.random.default_rng(3))[0]
    ffi.memmove(lib.bf_model_input(0), x.tobytes(), x.nbytes)
    assert lib.bf_model_invoke() == 0
    values = Oracle(graph).run([x], keep_intermediates=True).tensors
    for op in graph.ops:
        t = graph.tensors[op.outputs[0]]
        off, n = lib.bf_test_offset[op.index], lib.bf_test_bytes[op.index]
        got = np.frombuffer(bytes(ffi.buffer(lib.bf_test_dump + off, n)), t.dtype.numpy).reshape(t.shape)
        assert_same(got, values[t.index], f"layer {op.index} ({op.opcode}) output via the hook")


# ---------------------------------------------------------------------------------------------
# Sanitizers: the test driver in a subprocess.


def _sanitized(projects: Projects, key: str, steps: int, rng: np.random.Generator,
               lo: float | None = None, hi: float | None = None) -> None:
    graph, project = projects.get(key)
    exe = projects.build("asan", key)
    inputs = [_inputs(graph, rng, lo, hi) for _ in range(steps)]
    got = run_host_executable(exe, project.program, inputs)  # type: ignore[arg-type]
    oracle = Oracle(graph)
    for k, xs in enumerate(inputs):
        _compare(got[k], list(oracle.run(xs).outputs), f"{key} (ASan/UBSan) step {k}")


@pytest.mark.parametrize("name", ["digits_cnn_int8", "digits_stream_int8", "kws_dscnn_int8"])
def test_examples_under_sanitizers(projects: Projects, name: str, rng: np.random.Generator) -> None:
    _sanitized(projects, name, 3, rng)


@pytest.mark.parametrize("case", [c for c in OP_CASES if c.id in SANITIZED_CASES], ids=lambda c: c.id)
def test_single_ops_under_sanitizers(
    projects: Projects, case: kernel_cases.Case, rng: np.random.Generator
) -> None:
    _sanitized(projects, case.id, 2, rng, case.lo, case.hi)


def test_stream_mixed_under_sanitizers(projects: Projects, rng: np.random.Generator) -> None:
    _sanitized(projects, "stream_mixed", 3, rng)


def test_sanitizer_build_catches_an_overrun(tmp_path: Path) -> None:
    """The sanitized driver is really instrumented: a one-element overrun of an exactly sized
    weight array (BF_EXACT_LENGTHS) is reported, not silently read."""
    graph = kernel_cases.CASES[0].build(np.random.default_rng(0))
    project = generate_project(graph, tmp_path / "p")
    model_c = project.path("model.c")
    text = model_c.read_text()
    weight = project.program.weights[0]
    bad = text.replace(f"{weight.symbol}, ", f"{weight.symbol} + 1, ", 1)
    assert bad != text
    model_c.write_text(bad)
    exe = build_host_executable(project, sanitize=True)
    with pytest.raises(BuildError, match=r"AddressSanitizer|runtime error"):
        run_host_executable(exe, project.program, [_inputs(graph, np.random.default_rng(0))])


# ---------------------------------------------------------------------------------------------
# Cross compilation and exact sizes.


@needs_arm
@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.id)
def test_single_op_compiles_for_cortex_m4(projects: Projects, case: kernel_cases.Case) -> None:
    tc = toolchain_for(load_board(BOARD))
    assert "-mcpu=cortex-m4" in tc.cflags and "-mfloat-abi=hard" in tc.cflags
    objects = projects.build("m4", case.id)  # -Wall -Wextra -Werror -std=c99 are always on
    assert isinstance(objects, list) and all(o.exists() for o in objects)


def _emulated_memory(board: Board) -> Board:
    """The board with all the memory its emulator provides (the MLPerf-sized float models exceed
    the 1 MiB / 256 KiB budget the board file sets, and the point here is measuring them)."""
    flash = dataclasses.replace(board.flash, size=board.flash.provided or board.flash.size)
    ram = dataclasses.replace(board.ram, size=board.ram.provided or board.ram.size)
    return dataclasses.replace(board, flash=flash, ram=ram)


@needs_arm
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_predicted_sizes_equal_cortex_m4_image(projects: Projects, path: Path) -> None:
    _, project = projects.get(path.stem)
    result = projects.build("image", path.stem)
    assert isinstance(result, BoardBuild)
    predicted, measured = result.report.predicted, result.report.measured
    assert measured is not None and result.report.measured_from == "image"
    assert predicted.weights_bytes == measured.weights_bytes > 0
    assert predicted.params_bytes == measured.params_bytes > 0
    assert predicted.arena_bytes == measured.arena_bytes == project.program.arena_bytes
    assert predicted.state_bytes == measured.state_bytes
    assert abs(predicted.code_bytes - measured.code_bytes) <= 0.10 * measured.code_bytes, (
        f"code: predicted {predicted.code_bytes}, measured {measured.code_bytes}"
    )
    sections = dict(
        line.split()[:2] for line in run_tool(["arm-none-eabi-size", "-A", str(result.artifact)]).splitlines()
        if line.startswith(".bf_")
    )
    assert int(sections[".bf_weights"]) == predicted.weights_bytes
    assert int(sections[".bf_arena"]) == predicted.arena_bytes


@pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="no qemu-system-arm")
@needs_arm
def test_minimal_image_boots_in_qemu(projects: Projects) -> None:
    _, project = projects.get("digits_stream_int8")
    elf = build_for_board(project, load_board(BOARD)).artifact
    proc = subprocess.run(
        ["qemu-system-arm", "-M", BOARD, "-display", "none", "-monitor", "none", "-serial", "none",
         "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)],
        capture_output=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None,
                    reason="no aarch64 cross compiler or qemu-aarch64")
@pytest.mark.parametrize("name", ["digits_cnn_int8", "digits_stream_float"])
def test_linux_board_build_matches_oracle_under_qemu_user(
    projects: Projects, name: str, rng: np.random.Generator
) -> None:
    """The model built with a Raspberry Pi 4's toolchain, run as that CPU under qemu-user."""
    board = load_board("rpi4")
    assert board.emulator is not None and board.emulator.cpu
    graph, project = projects.get(name)
    result = build_for_board(project, board)
    assert result.report.measured is not None
    assert result.report.measured.weights_bytes == result.report.predicted.weights_bytes
    steps = [_inputs(graph, rng) for _ in range(3)]
    emulator = [board.emulator.binary, "-cpu", board.emulator.cpu]
    got = run_host_executable(result.artifact, project.program, steps, emulator=emulator)
    oracle = Oracle(graph)
    for k, xs in enumerate(steps):
        _compare(got[k], list(oracle.run(xs).outputs), f"{name} on {board.id} step {k}")


# ---------------------------------------------------------------------------------------------
# Determinism and golden files.


def _files(project: GeneratedProject) -> dict[str, bytes]:
    return {f: project.path(f).read_bytes() for f in project.files}


def test_generation_is_deterministic(tmp_path: Path) -> None:
    graph = _example("digits_stream_int8")
    a = _files(generate_project(graph, tmp_path / "a"))
    b = _files(generate_project(_example("digits_stream_int8"), tmp_path / "b"))
    assert a == b
    # Another process with another hash seed (set iteration order) writes the same bytes.
    script = (
        "import sys; from toolkit.model.tflite import read_tflite; import dataclasses;"
        "from firmware_gen.project import generate_project;"
        "g = dataclasses.replace(read_tflite(sys.argv[1]), name='digits_stream_int8');"
        "generate_project(g, sys.argv[2])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    model = ROOT / "examples" / "models" / "digits_stream_int8.tflite"
    subprocess.run([sys.executable, "-c", script, str(model), str(tmp_path / "c")], env=env, check=True,
                   cwd=ROOT)
    c = {f: (tmp_path / "c" / f).read_bytes() for f in a}
    assert c == a
    assert b"generated by boardfit firmware_gen" in a["model.c"]
    assert graph.content_hash().encode() in a["model.h"]


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_output(projects: Projects, name: str) -> None:
    _, project = projects.get(name)
    golden = GOLDEN_DIR / name
    if os.environ.get("BOARDFIT_UPDATE_GOLDEN") == "1":
        golden.mkdir(parents=True, exist_ok=True)
        for f in GOLDEN_FILES:
            (golden / f).write_bytes(project.path(f).read_bytes())
    for f in GOLDEN_FILES:
        assert (golden / f).exists(), f"missing {golden / f}: generate it with BOARDFIT_UPDATE_GOLDEN=1"
        want = (golden / f).read_bytes()
        assert project.path(f).read_bytes() == want, (
            f"{name}/{f} differs from tests/golden; if the change is intended, regenerate with "
            "BOARDFIT_UPDATE_GOLDEN=1"
        )


# ---------------------------------------------------------------------------------------------
# The project's own build files, the CLI, and the C filters.


def test_makefile_and_cmake_build_the_project(
    projects: Projects, rng: np.random.Generator, tmp_path: Path
) -> None:
    graph, project = projects.get("digits_stream_int8")
    src = tmp_path / "copy"
    shutil.copytree(project.out_dir, src, ignore=shutil.ignore_patterns("build"))
    run_tool(["make", "-s", "-j2", "test"], cwd=src)
    steps = [_inputs(graph, rng) for _ in range(3)]
    got = run_host_executable(src / "bf_model_test", project.program, steps)
    oracle = Oracle(graph)
    for k, xs in enumerate(steps):
        _compare(got[k], list(oracle.run(xs).outputs), f"make-built driver step {k}")
    if shutil.which("cmake") is None:
        pytest.skip("no cmake")
    run_tool(["cmake", "-S", str(src), "-B", str(tmp_path / "cm"), "-DCMAKE_BUILD_TYPE=Release"])
    run_tool(["cmake", "--build", str(tmp_path / "cm"), "-j2"])
    assert (tmp_path / "cm" / "bf_model_test").exists()


def test_cli_build_reports_sizes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from toolkit.cli import app

    model = ROOT / "examples" / "models" / "digits_mlp_int8.tflite"
    runner = CliRunner()
    res = runner.invoke(app, ["build", str(model), "--board", "host", "-o", str(tmp_path / "h"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["schema"] == "boardfit.build/1" and doc["board"] == "host"
    for key in ("weights_bytes", "code_bytes", "flash_bytes", "arena_bytes", "state_bytes", "ram_bytes"):
        assert isinstance(doc[key], int) and doc["measured"][key] >= 0
    assert doc["flash_bytes"] == doc["weights_bytes"] + doc["params_bytes"] + doc["code_bytes"]
    assert Path(doc["artifact"]).exists()
    if shutil.which("arm-none-eabi-gcc"):
        res = runner.invoke(app, ["build", str(model), "--board", BOARD, "-o", str(tmp_path / "m"), "--json"])
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        assert doc["measured"]["from"] == "image"
        assert doc["measured"]["weights_bytes"] == doc["weights_bytes"]
    kws = ROOT / "examples" / "models" / "kws_dscnn_int8.tflite"  # 16,000-byte arena, 12 KiB budget
    res = runner.invoke(app, ["build", str(kws), "--board", "microbit", "-o", str(tmp_path / "u")])
    assert res.exit_code == 2 and "does not fit microbit" in res.output


def test_c_constants_round_trip_exactly(tmp_path: Path) -> None:
    """Every float32 / float64 / integer constant the generator prints is read back by the C
    compiler as the very same value (subnormals, extremes, INT32_MIN included)."""
    rng = np.random.default_rng(7)
    f32 = np.concatenate([
        rng.standard_normal(200).astype(np.float32) * np.float32(10.0) ** rng.integers(-30, 30, 200),
        np.array([0.0, -0.0, 1e-45, -1e-45, 1.1754942e-38, 3.4028235e38, -3.4028235e38, 0.1, 1 / 3],
                 np.float32),
    ]).astype(np.float32)
    f64 = np.array([0.1, 1 / 3, 5e-324, 1.7976931348623157e308, -2.5e-10], np.float64)
    i32 = np.array([-(2**31), 2**31 - 1, 0, -1, 12345], np.int32)
    src = tmp_path / "t.c"
    src.write_text(
        "#include <stdio.h>\n#include <string.h>\n#include <stdint.h>\n"
        f"static const float f[{f32.size}] = {{\n{c_array(f32)}\n}};\n"
        f"static const double d[{f64.size}] = {{\n{c_array(f64)}\n}};\n"
        f"static const int32_t i[{i32.size}] = {{\n{c_array(i32)}\n}};\n"
        "int main(void) { size_t k; uint32_t u; uint64_t v;\n"
        " for (k = 0; k < sizeof f / sizeof f[0]; ++k) { memcpy(&u, &f[k], 4); printf(\"%08x\\n\", u); }\n"
        " for (k = 0; k < sizeof d / sizeof d[0]; ++k) { memcpy(&v, &d[k], 8);"
        " printf(\"%016llx\\n\", (unsigned long long)v); }\n"
        " for (k = 0; k < sizeof i / sizeof i[0]; ++k) printf(\"%ld\\n\", (long)i[k]);\n return 0; }\n"
    )
    exe = tmp_path / "t"
    run_tool(host_toolchain().compile_argv([src], exe))
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split()
    want = [f"{b:08x}" for b in f32.view(np.uint32)] + [f"{b:016x}" for b in f64.view(np.uint64)]
    want += [str(int(v)) for v in i32]
    assert out == want
    assert c_int(-(2**31)) == "(-2147483647 - 1)" and c_double(0.5) == "0x1p-1"


def test_templates_refuse_missing_values() -> None:
    with pytest.raises(BuildError, match="undefined"):
        render("model.h.j2", model_name="x")


def test_host_model_checks_inputs(projects: Projects) -> None:
    graph, project = projects.get("digits_mlp_int8")
    model = HostModel(build_host_library(project), project.program)
    good = _inputs(graph, np.random.default_rng(0))
    with pytest.raises(BuildError, match="must be int8"):
        model.run([good[0].astype(np.float32)])
    with pytest.raises(BuildError, match="takes 1 inputs"):
        model.run([])
    assert graph.input_tensors[0].dtype is DType.INT8


def test_c_filters() -> None:
    from firmware_gen.render import c_comment, c_float, c_ident, c_string

    assert c_ident("conv2d/Relu;1") == "conv2d_Relu_1"
    assert c_ident("3x") == "v_3x" and c_ident("int") == "v_int" and c_ident("__x__") == "x"
    assert c_ident("") == "x"
    assert c_int(127, "int8") == "127" and c_int(2**32 - 1, "uint32") == "4294967295u"
    with pytest.raises(BuildError, match="does not fit int8"):
        c_int(128, "int8")
    with pytest.raises(BuildError, match="not an integer"):
        c_int(1.5)
    assert c_float(0.1) == "0x1.99999ap-4f" and c_float(-0.0) == "-0.0f"
    assert c_float(float("inf")) == "INFINITY"
    assert c_comment("a */ b\nc") == "a * / b c"
    assert c_string('a"b\\n') == '"a\\"b\\\\n"'
    text = c_array(np.arange(20, dtype=np.int8), per_line=8, indent=2)
    lines = text.splitlines()
    assert len(lines) == 3 and lines[0] == "  0, 1, 2, 3, 4, 5, 6, 7," and lines[2].endswith("19,")


def test_params_layout_matches_the_compilers() -> None:
    """cdecl's layout rules give cffi's (this machine's compiler's) size and alignment for every
    kernel parameter struct; the ILP32 rules are checked against arm-none-eabi-gcc by the image
    test above (bf_params equals the .bf_params section)."""
    from firmware_gen import cdecl

    ffi = cdecl.ffi()
    structs = [n for n in ffi.list_types()[0] if cdecl.ctype(n).kind == "struct"]
    assert len(structs) > 30
    for name in structs:
        assert cdecl.layout(cdecl.ctype(name), cdecl.LP64) == (ffi.sizeof(name), ffi.alignof(name)), name
    conv = cdecl.ctype("bf_conv2d_s8_params")
    assert cdecl.layout(conv, cdecl.ILP32) == (96, 4)


def test_typed_values_refuse_wrong_params() -> None:
    from firmware_gen import cdecl

    t = cdecl.ctype("bf_softmax_s8_params")
    ok = {"rows": 1, "depth": 10, "input_multiplier": 5, "input_left_shift": 3, "diff_min": -9}
    assert isinstance(cdecl.typed_value(t, ok, "p", lambda path, v: "x"), cdecl.CStruct)
    with pytest.raises(BuildError, match="missing"):
        cdecl.typed_value(t, {k: v for k, v in ok.items() if k != "rows"}, "p", lambda path, v: "x")
    with pytest.raises(BuildError, match="does not fit"):
        cdecl.typed_value(t, {**ok, "rows": 2**31}, "p", lambda path, v: "x")


def test_elf_reachability_follows_calls_and_tables(tmp_path: Path) -> None:
    """Code accounting follows relocations as --gc-sections does: a used function brings its
    static helper and table, an unused one costs nothing."""
    from firmware_gen.elf import ObjectFile

    src = tmp_path / "k.c"
    src.write_text(
        "static const int table[64] = {1, 2, 3};\n"
        "__attribute__((noinline)) static int helper(int x) { return table[x & 63] * x; }\n"
        "int used(int x);\nint unused(int x);\n"
        "int used(int x) { return helper(x) + 1; }\n"
        "int unused(int x) { return x * 3; }\n"
    )
    obj = compile_object(host_toolchain(), src)
    elf = ObjectFile(obj)
    syms = elf.defined_globals()
    reached, external = elf.reachable([syms["used"]])
    names = {elf.sections[i].name for i in reached}
    assert ".text.used" in names and any("helper" in n for n in names) and any("table" in n for n in names)
    assert ".text.unused" not in names and not external
    assert elf.allocated_size(reached) >= 64 * 4


def test_linear_arena_plan_gives_the_same_outputs(tmp_path: Path, rng: np.random.Generator) -> None:
    """The generated code depends on the plan only through offsets: a plan without any reuse
    computes the same values as the greedy one."""
    graph = _example("digits_cnn_int8")
    greedy = generate_project(graph, tmp_path / "g", predict_sizes=False)
    linear = generate_project(graph, tmp_path / "l", strategy="linear", predict_sizes=False)
    assert linear.program.arena_bytes > greedy.program.arena_bytes
    xs = _inputs(graph, rng)
    a = HostModel(build_host_library(greedy), greedy.program).run(xs)
    b = HostModel(build_host_library(linear), linear.program).run(xs)
    _compare(a, b, "linear vs greedy plan")
