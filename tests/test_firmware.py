"""The device program on every emulated board, end to end, and its build-time guarantees.

For each emulated board (QEMU system emulation of six Cortex-M MCUs and a RISC-V MCU, QEMU user
mode for the Raspberry Pi profiles) the example ``digits_cnn_int8`` is built with
:func:`toolkit.build.build_firmware`, started through ``targets.runners`` and driven with the
host link (:class:`toolkit.validate.link.DeviceLink`):

* the device reports the graph's content hash, no plan, and the arena the generator planned;
* ten test digits come back bit-identical to the oracle (its default arithmetic profile,
  whatever it is) — and a debug build returns every intermediate tensor equal to the oracle's;
* under QEMU ``-icount`` the instruction counts of a sample, total and per layer, repeat
  exactly;
* the sizes measured in the linked image equal the predicted ones.

Build-time guarantees: a model too large for the micro:bit is refused before anything is
compiled, with the bytes needed and available; an overflow only the linker sees is a
:class:`DoesNotFit` too; the real-only boards compile and link with their UART drivers; a fault
on the device is reported over the link (and the emulator ends), never a hang.

Builds are content-addressed (objects under the boardfit cache), so a second run compiles almost
nothing; each board starts its emulator once per build.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from firmware_gen.firmware import FAULT_EXIT_CODE, FAULT_MARKER
from targets.elf import read_elf
from targets.runners import Session, make_runner
from targets.runners.local import LocalConfig
from toolkit.boards import Board, load_board
from toolkit.build import FirmwareBuild, build_firmware
from toolkit.datasets import load_dataset
from toolkit.errors import DoesNotFit, ProtocolError
from toolkit.model.ir import Graph
from toolkit.model.tflite import read_tflite
from toolkit.oracle import Oracle
from toolkit.validate import protocol as p
from toolkit.validate.link import DeviceLink

pytestmark = [pytest.mark.qemu, pytest.mark.cross]

ROOT = Path(__file__).resolve().parents[1]
MODEL = "digits_cnn_int8"
SAMPLES = 10
SYSTEM_EMULATED = ("mps2-an386", "mps2-an500", "mps2-an505", "netduinoplus2", "microbit",
                   "lm3s6965evb", "hifive1")
USER_EMULATED = ("rpi4", "rpi3-32bit", "rpi5")
EMULATED = (*SYSTEM_EMULATED, *USER_EMULATED)
REAL_ONLY = ("nucleo-l4r5zi", "nano33ble", "pico", "stm32f746-disco")
NO_LOCAL = LocalConfig()
ZERO_HASH = bytes(32)
# Inputs of the fault hook (tests/fixtures/firmware/fault_hook.c): the first two bytes select it.
FAULT_TRIGGER = (101, -101)
FIXTURES = Path(__file__).parent / "fixtures" / "firmware"


def _example(name: str) -> Graph:
    return dataclasses.replace(read_tflite(ROOT / "examples" / "models" / f"{name}.tflite"), name=name)


def _require(board: Board) -> None:
    tools = [board.toolchain.cc]
    if board.emulator is not None:
        tools.append(board.emulator.binary)
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (boards/README.md lists the packages)")


@dataclasses.dataclass
class Digits:
    graph: Graph
    x: np.ndarray          # SAMPLES int8 inputs, one per row
    outputs: list[np.ndarray]
    tensors: list[dict[int, np.ndarray]]


@pytest.fixture(scope="module")
def digits() -> Digits:
    graph = _example(MODEL)
    x = load_dataset("digits:test", graph).x[:SAMPLES]
    oracle = Oracle(graph)
    results = [oracle.run([x[i : i + 1]], keep_intermediates=True) for i in range(SAMPLES)]
    return Digits(graph, x, [r.outputs[0] for r in results], [r.tensors for r in results])


class Builds:
    """One build per (board, debug), shared by the tests of this module."""

    def __init__(self, root: Path, digits: Digits) -> None:
        self.root = root
        self.digits = digits
        self._done: dict[tuple[str, bool], FirmwareBuild] = {}

    def get(self, board: Board, debug: bool = False) -> FirmwareBuild:
        key = (board.id, debug)
        if key not in self._done:
            out = self.root / f"{board.id}-{'debug' if debug else 'release'}"
            self._done[key] = build_firmware(self.digits.graph, board, out, debug=debug)
        return self._done[key]


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory, digits: Digits) -> Builds:
    return Builds(tmp_path_factory.mktemp("firmware"), digits)


@contextmanager
def _device(board: Board, artifact: Path) -> Iterator[tuple[DeviceLink, Session]]:
    with make_runner(board, local=NO_LOCAL).start(artifact) as dev:
        link = DeviceLink(dev.open_serial(timeout=0.05), sync_timeout=10.0)
        try:
            link.sync()
            yield link, dev
        finally:
            link.close()


def _sample(digits: Digits, i: int) -> np.ndarray:
    return digits.x[i : i + 1]


# --------------------------------------------------------------------------------------------
# On the emulated boards
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("board_id", EMULATED)
def test_release_firmware_is_bit_exact_and_counts_repeat(board_id: str, builds: Builds,
                                                        digits: Digits) -> None:
    board = load_board(board_id)
    _require(board)
    build = builds.get(board)
    program = build.program
    assert build.report.measured is not None
    predicted, measured = build.report.predicted, build.report.measured
    for key in ("weights_bytes", "params_bytes", "arena_bytes", "state_bytes"):
        assert getattr(measured, key) == getattr(predicted, key), f"{key} measured != predicted"
    system = board.emulator is not None and board.emulator.mode == "system"
    with _device(board, build.artifact) as (link, _):
        info = link.info()
        assert info.model_hash.hex() == digits.graph.content_hash()
        assert info.plan_hash == ZERO_HASH
        link.expect_hashes(digits.graph.content_hash(), ZERO_HASH)
        assert info.arena_bytes == program.arena_bytes == predicted.arena_bytes
        assert (info.debug, info.profile) == (False, True)
        assert info.n_layers == len(digits.graph.ops)
        if system:
            assert board.emulator is not None
            assert info.counter_kind == p.CounterKind.INSTRUCTIONS
            assert info.timer_hz == board.emulator.timer_hz
        else:
            assert info.counter_kind == p.CounterKind.NANOSECONDS
        first: list[tuple[int, list[int]]] = []
        for i in range(SAMPLES):
            result = link.run([_sample(digits, i)])
            assert result.status == 0
            np.testing.assert_array_equal(result.outputs[0], digits.outputs[i], err_msg=f"sample {i}")
            layers = link.layer_counts()
            assert len(layers) == len(digits.graph.ops) and all(c > 0 for c in layers[:4])
            if system:
                # Per-layer counts cover the invocation up to its last hook.
                assert sum(layers) <= result.count <= sum(layers) + 2000
            if i < 2:
                first.append((result.count, layers))
        if system:
            for i in range(2):
                again = link.run([_sample(digits, i)])
                assert (again.count, link.layer_counts()) == first[i], f"sample {i}: counts differ"


@pytest.mark.parametrize("board_id", EMULATED)
def test_debug_firmware_returns_every_intermediate(board_id: str, builds: Builds, digits: Digits) -> None:
    board = load_board(board_id)
    _require(board)
    build = builds.get(board, debug=True)
    produced = {t for op in digits.graph.ops for t in op.outputs}
    with _device(board, build.artifact) as (link, _):
        info = link.info()
        assert info.debug
        assert info.n_tensors == len(build.program.debug.tensors) == len(produced)
        for i in (0, 3, 7):
            result = link.run([_sample(digits, i)])
            np.testing.assert_array_equal(result.outputs[0], digits.outputs[i])
            seen = set()
            for tid in range(info.n_tensors):
                spec = link.intermediate(tid)
                want = digits.tensors[i][spec.graph_index]
                got = link.get_tensor(tid)
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got.reshape(want.shape), want,
                                              err_msg=f"sample {i}, tensor {spec.graph_index} {spec.name}")
                seen.add(spec.graph_index)
            assert seen == produced


def test_streaming_model_keeps_state_and_resets_on_the_device(tmp_path: Path) -> None:
    """digits_stream_int8 keeps an EMA in a variable: three frames per image, the device's
    state follows the oracle's, and RESET(model) restores the initial state."""
    board = load_board("mps2-an386")
    _require(board)
    graph = _example("digits_stream_int8")
    build = build_firmware(graph, board, tmp_path)
    x = load_dataset("digits:test", graph).x
    oracle = Oracle(graph)
    with _device(board, build.artifact) as (link, _):
        link.stateful = True
        for i in (0, 1):
            link.reset_model()
            oracle.reset()
            for frame in range(3):
                got = link.run([x[i : i + 1]]).outputs[0]
                np.testing.assert_array_equal(got, oracle.run([x[i : i + 1]]).outputs[0],
                                              err_msg=f"image {i}, frame {frame}")


def test_counts_longer_than_the_24_bit_systick_repeat(tmp_path: Path) -> None:
    """kws_dscnn_int8 takes more than 2^24 SysTick ticks on mps2-an386: the wrap interrupt
    extends the counter (per-layer counts add up to the total) and counts still repeat."""
    board = load_board("mps2-an386")
    _require(board)
    graph = _example("kws_dscnn_int8")
    build = build_firmware(graph, board, tmp_path)
    shape = graph.tensors[graph.inputs[0]].shape
    x = np.random.default_rng(5).integers(-128, 128, size=shape, dtype=np.int8)
    expected = Oracle(graph).run([x]).outputs[0]
    with _device(board, build.artifact) as (link, _):
        runs = []
        for _ in range(2):
            result = link.run([x])
            np.testing.assert_array_equal(result.outputs[0], expected)
            runs.append((result.count, link.layer_counts()))
    (count, layers), again = runs[0], runs[1]
    assert count > 1 << 24
    assert sum(layers) <= count <= sum(layers) + 2000
    assert again == runs[0]


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


def _fault_build(board: Board, out: Path, graph: Graph, emulated: bool | None = None) -> FirmwareBuild:
    """The example with a layer hook that calls through a bad function pointer (0xFFFFFFF0,
    even: an invalid state on Cortex-M, unmapped on RISC-V) when the input starts with
    FAULT_TRIGGER."""
    return build_firmware(
        graph, board, out, profile_layers=False, emulated=emulated,
        defines=("BF_LAYER_HOOK(i)=bf_test_fault_hook(i)",),
        extra_sources=(FIXTURES / "fault_hook.c",),
        extra_flags=("-include", str(FIXTURES / "fault_hook.h")),
    )


def _trigger(digits: Digits) -> np.ndarray:
    x = np.zeros_like(_sample(digits, 0))
    x.flat[0], x.flat[1] = FAULT_TRIGGER
    return x


@pytest.mark.parametrize("board_id", ["mps2-an386", "microbit", "hifive1"])
def test_a_fault_ends_the_emulator_with_a_report(board_id: str, tmp_path: Path, digits: Digits) -> None:
    board = load_board(board_id)
    _require(board)
    build = _fault_build(board, tmp_path, digits.graph)
    with _device(board, build.artifact) as (link, dev):
        # The hook stays quiet on other inputs.
        np.testing.assert_array_equal(link.run([_sample(digits, 0)]).outputs[0], digits.outputs[0])
        link.set_input(0, _trigger(digits))
        start = time.monotonic()
        with pytest.raises(ProtocolError):
            link.invoke()
        assert time.monotonic() - start < 10.0
        assert dev.wait(5.0) == FAULT_EXIT_CODE
        report = str(getattr(dev, "stderr_text", str)())
    line = next(ln for ln in report.splitlines() if ln.startswith(FAULT_MARKER.decode()))
    pc = "mepc=0xfffffff0" if board.family == "riscv" else "pc=0xfffffff0"
    assert pc in line, line
    assert ("InstructionAccessFault" if board.family == "riscv" else "HardFault") in line


def test_a_fault_on_a_real_board_build_answers_every_frame_with_the_report(
        tmp_path: Path, digits: Digits) -> None:
    """Without semihosting (a real board) the device stays up and repeats the report line
    whenever the host sends a frame, so a retrying host sees it."""
    board = load_board("mps2-an386")
    _require(board)
    build = _fault_build(board, tmp_path, digits.graph, emulated=False)
    assert build.firmware.config is not None and not build.firmware.config.semihosting
    with _device(board, build.artifact) as (link, dev):
        assert link.info().counter_kind == p.CounterKind.CYCLES
        link.set_input(0, _trigger(digits))
        port = link.port
        for _ in range(2):
            port.write(p.Frame(int(p.Command.INVOKE), 7, link.session, b"").to_wire())
            data = b""
            deadline = time.monotonic() + 5.0
            while FAULT_MARKER not in data or not data.endswith(b"\n\x00"):
                assert time.monotonic() < deadline, f"no fault report, got {data!r}"
                data += port.read(256)
            assert b"HardFault" in data and b"pc=0xfffffff0" in data
        assert dev.poll() is None  # still running, not locked up


# --------------------------------------------------------------------------------------------
# Fit and build-only boards
# --------------------------------------------------------------------------------------------


def test_too_big_model_fails_before_anything_is_built(tmp_path: Path) -> None:
    board = load_board("microbit")
    graph = _example("kws_dscnn_int8")
    with pytest.raises(DoesNotFit) as info:
        build_firmware(graph, board, tmp_path)
    err = info.value
    assert err.board == "microbit" and err.needed > err.available
    assert err.available in (board.ram_budget, board.flash_budget)
    assert f"{err.needed:,} bytes" in str(err) and f"{err.available:,} bytes available" in str(err)
    assert not (tmp_path / "build").exists()
    assert not (tmp_path / "firmware").exists()


def test_an_overflow_only_the_linker_sees_is_does_not_fit(tmp_path: Path, digits: Digits) -> None:
    """The pre-check cannot know a test hook's 12 KiB buffer; the linker script's .stack
    reservation turns the overflow into DoesNotFit with the bytes."""
    board = load_board("microbit")
    _require(board)
    with pytest.raises(DoesNotFit) as info:
        build_firmware(digits.graph, board, tmp_path, profile_layers=False,
                       defines=("BF_LAYER_HOOK(i)=bf_test_big_hook(i)",),
                       extra_sources=(FIXTURES / "big_hook.c",),
                       extra_flags=("-include", str(FIXTURES / "big_hook.h")))
    err = info.value
    assert err.available == board.ram.size and err.needed > board.ram.size
    assert "RAM" in str(err)


@pytest.mark.parametrize("board_id", REAL_ONLY)
def test_real_only_boards_compile_and_link(board_id: str, builds: Builds) -> None:
    board = load_board(board_id)
    _require(board)
    build = builds.get(board)
    config = build.firmware.config
    assert config is not None and not config.emulated and not config.semihosting
    assert f"{config.uart_driver}.c" in {s.name for s in build.firmware.sources}
    elf = read_elf(build.artifact)
    assert board.flash.origin is not None and board.ram.origin is not None
    address, data = elf.load_chunks()[0]
    assert address == board.flash.origin
    sp, reset = int.from_bytes(data[0:4], "little"), int.from_bytes(data[4:8], "little")
    assert sp == board.ram.origin + board.ram.size
    assert reset & 1 and board.flash.origin <= reset < board.flash.origin + board.flash.size
    assert elf.entry == reset  # the ELF entry carries the Thumb bit too
    assert build.image.flash <= board.flash.size
    assert build.image.ram <= board.ram.size


def test_generated_makefile_builds_the_same_image(builds: Builds) -> None:
    board = load_board("mps2-an386")
    _require(board)
    if shutil.which("make") is None:
        pytest.skip("no make")
    build = builds.get(board)
    root = build.firmware.root
    subprocess.run(["make", "-s", "-j2"], cwd=root, check=True, capture_output=True, timeout=300)
    try:
        ours = read_elf(root / "firmware.elf").load_chunks()
        assert ours == read_elf(build.artifact).load_chunks()
    finally:
        subprocess.run(["make", "-s", "clean"], cwd=root, check=False, capture_output=True)
