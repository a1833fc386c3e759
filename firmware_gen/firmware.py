"""The device program around a generated model: serial runtime + board port + linker script.

:func:`generate_firmware` writes, next to a generated project (``<project>/firmware/``)::

    runtime/          the serial protocol's device side (copied from firmware_gen/runtime)
    port/             the board port: common + family start-up + UART driver + counter
                      (copied from firmware_gen/ports, chosen by the board's family, UART kind and
                      timer kind; Linux boards and the host use runtime/platform_posix.c instead)
    bf_board.h        board facts for the port, rendered from the board file
    link.ld           linker script from the board's memory regions (bare-metal boards)
    Makefile          builds the same program by hand

Every decision is made here from board data; the C files never name a board.  Families:

* ``cortex-m``: vector table, .data/.bss start-up, FPU enable, SysTick (or nRF TIMER0) extended
  to a 32-bit up-counter, faults reported over the UART, semihosting exit under emulation.
* ``riscv``: the same for RV32 machine mode with the mcycle counter.
* ``linux`` (and the host): a static program of the runtime with ``platform_posix.c``: the
  protocol over a tty, a pty or stdin/stdout, timed with ``CLOCK_MONOTONIC``.

Clocks.  The firmware programs no PLL and no oscillator: it runs at the clock the chip has out of
reset, which is the board file's ``reset_clock_hz`` when given (all bus prescalers of the
supported parts are 1 at reset, so UARTs are clocked at it too) and ``clock_hz`` otherwise.
Counter rates on real boards follow from that; under emulation they are the emulator's
``timer_hz`` and the counter counts instructions (QEMU ``-icount``: ticks convert to
instructions exactly with :meth:`toolkit.boards.Emulator.instructions`).  Consequences for the
real-only boards: the STM32 boards run at 16 MHz (F4/F7 HSI) or 4 MHz (L4 MSI) and report
cycles at that clock; the RP2040 port neither starts the crystal and PLLs nor carries the boot2
stage the RP2040 boot ROM needs, so a ``pico`` image compiles and links but does not boot.

Debug builds (``debug=True``) compile model and runtime with ``BF_MODEL_DEBUG``: every
intermediate tensor is copied after its op into a debug area (see model.c), so the host can read
each one after an invocation.  Profile builds (``profile_layers=True``) define
``BF_PROFILE_LAYERS``: the runtime records counter ticks per layer.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from firmware_gen.project import GENERATOR_VERSION, GeneratedProject, runtime_file
from firmware_gen.render import render
from targets.toolchains import Toolchain
from toolkit.errors import BuildError

if TYPE_CHECKING:
    from toolkit.boards import Board
    from toolkit.build import FirmwareBuild

FIRMWARE_DIR: Final = "firmware"
# What a fault report line starts with, and the exit status of an emulator after a fault
# (ports/common/bf_port.h: BF_FAULT_EXIT_CODE).
FAULT_MARKER: Final = b"BOARDFIT-FAULT"
FAULT_EXIT_CODE: Final = 0xFA

RUNTIME_SOURCES: Final = ("bf_runtime_main.c", "bf_protocol.c")
RUNTIME_HEADERS: Final = ("bf_protocol.h", "bf_runtime.h", "bf_platform.h")
POSIX_PLATFORM: Final = "platform_posix.c"
BARE_METAL_FAMILIES: Final = ("cortex-m", "riscv")
HOSTED_FAMILIES: Final = ("linux", "host")
# UART kinds whose driver is another kind's (same registers; the driver tests the kind macro).
_UART_DRIVER_OF: Final[Mapping[str, str]] = {"stm32-lpuart": "stm32-usart-v2"}
# Timers that count the core clock (their rate follows the clock the firmware runs at).
_CORE_CLOCKED_TIMERS: Final = frozenset({"systick", "riscv-mcycle"})

# Pin names of the board files: PA9 (STM32, Stellaris: port letter), P0.24 (nRF: port.pin),
# GP0 / GPIO17 (RP2040, SiFive: one flat numbering).
_PIN_FORMS: Final = (
    (re.compile(r"^P([A-K])(\d{1,2})$"), lambda m: (ord(m.group(1)) - ord("A"), int(m.group(2)))),
    (re.compile(r"^P(\d)\.(\d{1,2})$"), lambda m: (int(m.group(1)), int(m.group(2)))),
    (re.compile(r"^GP(?:IO)?(\d{1,2})$"), lambda m: (0, int(m.group(1)))),
)


@dataclass(frozen=True)
class Pin:
    """A GPIO: port (STM32 A=0, B=1 …; nRF P0/P1; 0 where pins are numbered flat) and pin."""

    port: int
    pin: int


def parse_pin(name: str, where: str) -> Pin:
    for pattern, decode in _PIN_FORMS:
        m = pattern.match(name)
        if m:
            port, pin = decode(m)
            return Pin(port, pin)
    raise BuildError(f"{where}: cannot read pin {name!r} (expected PA9, P0.24 or GP0 / GPIO17)")


@dataclass(frozen=True)
class PortConfig:
    """The values bf_board.h carries (bare-metal boards)."""

    emulated: bool
    semihosting: bool
    core_clock_hz: int
    uart_clock_hz: int | None
    timer_hz: int
    counter_kind: str  # BF_COUNTER_<...>: INSTRUCTIONS under emulation, else CYCLES
    uart_driver: str   # ports/uart/<driver>.c
    timer_driver: str  # ports/timer/<driver>.c
    uart_macro: str
    instance_macro: str
    timer_macro: str
    tx: Pin | None
    rx: Pin | None


def _macro(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).upper()


def port_config(board: Board, emulated: bool) -> PortConfig:
    """bf_board.h's values for ``board``, run on its emulator (``emulated``) or for real."""
    if board.family not in BARE_METAL_FAMILIES:
        raise BuildError(f"board {board.id}: family {board.family!r} has no bare-metal port")
    emu = board.emulator
    if emulated and (emu is None or emu.mode != "system"):
        raise BuildError(f"board {board.id} has no system emulator to build for")
    clock = board.reset_clock_hz or board.clock_hz
    if clock is None or board.clock_hz is None:
        raise BuildError(f"board {board.id}: no clock_hz")
    uart = board.uart
    uart_clock = None if uart.clock_hz is None else (board.reset_clock_hz or uart.clock_hz)
    timer = board.timer
    if emulated and emu is not None and emu.timer_hz is not None:
        timer_hz, counter = emu.timer_hz, "INSTRUCTIONS"
    elif timer.kind in _CORE_CLOCKED_TIMERS:
        timer_hz, counter = timer.frequency_hz * clock // board.clock_hz, "CYCLES"
    else:
        timer_hz, counter = timer.frequency_hz, "CYCLES"
    pins = (uart.tx_pin, uart.rx_pin)
    if any(pins) and not all(pins):
        raise BuildError(f"board {board.id}: uart.tx_pin and uart.rx_pin go together")
    where = f"{board.source or board.id}: uart"
    return PortConfig(
        emulated=emulated,
        semihosting=emulated and emu is not None and emu.semihosting,
        core_clock_hz=clock,
        uart_clock_hz=uart_clock,
        timer_hz=timer_hz,
        counter_kind=counter,
        uart_driver=_UART_DRIVER_OF.get(uart.kind, uart.kind).replace("-", "_"),
        timer_driver=timer.kind.replace("-", "_"),
        uart_macro=_macro(uart.kind),
        instance_macro=_macro(uart.instance or "none"),
        timer_macro=_macro(timer.kind),
        tx=parse_pin(uart.tx_pin, f"{where}.tx_pin") if uart.tx_pin else None,
        rx=parse_pin(uart.rx_pin, f"{where}.rx_pin") if uart.rx_pin else None,
    )


def default_emulated(board: Board | None) -> bool:
    """Build for the emulator when the board's preferred runner is one (mps2, microbit …)."""
    return board is not None and board.emulator is not None and board.runner.kind.startswith("qemu-")


@dataclass(frozen=True)
class FirmwareSources:
    """What :func:`generate_firmware` wrote (absolute paths)."""

    root: Path
    family: str
    sources: tuple[Path, ...]       # runtime and port C files (the model library is separate)
    include_dirs: tuple[Path, ...]  # for every firmware and model source
    linker_script: Path | None      # bare-metal boards only
    defines: tuple[str, ...]        # for every source, model library included
    config: PortConfig | None       # bare-metal boards only
    debug: bool
    profile_layers: bool


def firmware_family(board: Board | None) -> str:
    if board is None:
        return "host"
    if board.family not in (*BARE_METAL_FAMILIES, *HOSTED_FAMILIES):
        raise BuildError(f"board {board.id}: boardfit has no firmware for family {board.family!r}")
    return board.family


def _ports_root() -> Any:
    return importlib.resources.files("firmware_gen").joinpath("ports")


def _port_files(config: PortConfig, family: str) -> dict[str, bytes]:
    """relative name -> bytes of the port: common, family, UART driver (+ headers), counter."""
    root = _ports_root()
    picks = [("common", None), (family, None), ("uart", f"{config.uart_driver}.c"),
             ("timer", f"{config.timer_driver}.c")]
    files: dict[str, bytes] = {}
    for directory, wanted in picks:
        folder = root.joinpath(directory)
        entries = sorted(folder.iterdir(), key=lambda e: e.name)
        chosen = [e for e in entries if e.name.endswith(".h") or wanted in (None, e.name)]
        if wanted is not None and not any(e.name == wanted for e in entries):
            kind = "UART" if directory == "uart" else "counter"
            raise BuildError(f"no {kind} driver ports/{directory}/{wanted} in boardfit")
        for e in chosen:
            if e.name.endswith((".c", ".h")):
                files[e.name] = e.read_bytes()
    return files


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)
    return path


def build_defines(debug: bool, profile_layers: bool, extra: Sequence[str] = ()) -> tuple[str, ...]:
    defines = [*(("BF_MODEL_DEBUG",) if debug else ()), *(("BF_PROFILE_LAYERS",) if profile_layers else ())]
    return (*defines, *extra)


def generate_firmware(
    project: GeneratedProject,
    board: Board | None,
    toolchain: Toolchain,
    *,
    debug: bool = False,
    profile_layers: bool = True,
    emulated: bool | None = None,
    defines: Sequence[str] = (),
) -> FirmwareSources:
    """Write the device program's sources for ``board`` (None: this machine) into
    ``<project>/firmware`` (deterministic; files are rewritten only when they change).

    ``emulated`` (default: whether the board's preferred runner is an emulator) selects the
    emulator build: no clock or pin set-up, instruction counts, semihosting exit on a fault.
    ``defines`` are added to every compilation (e.g. a ``BF_LAYER_HOOK`` of a test).
    """
    family = firmware_family(board)
    root = project.path(FIRMWARE_DIR)
    runtime_names: tuple[str, ...] = (*RUNTIME_SOURCES, *RUNTIME_HEADERS)
    if family in HOSTED_FAMILIES:
        runtime_names = (*runtime_names, POSIX_PLATFORM)
    for name in runtime_names:
        _write(root / "runtime" / name, runtime_file(name))
    sources = [root / "runtime" / n for n in runtime_names if n.endswith(".c")]
    include_dirs = [root / "runtime", project.out_dir, *(project.path(d) for d in project.include_dirs[1:])]
    config = None
    linker_script = None
    all_defines = build_defines(debug, profile_layers, defines)
    ctx = _context(project, board, toolchain, family)
    if family in BARE_METAL_FAMILIES:
        assert board is not None
        config = port_config(board, default_emulated(board) if emulated is None else emulated)
        ctx["cfg"] = config
        for name, data in _port_files(config, family).items():
            path = _write(root / "port" / name, data)
            if name.endswith(".c"):
                sources.append(path)
        _write(root / "bf_board.h", render("firmware/bf_board.h.j2", **ctx).encode())
        linker_script = _write(root / "link.ld", render(f"firmware/{family}/link.ld.j2", **ctx).encode())
        include_dirs[1:1] = [root / "port", root]
    makefile = _makefile_context(project, root, toolchain, sources, include_dirs, all_defines,
                                 linker_script, family)
    _write(root / "Makefile", render("firmware/Makefile.j2", **ctx, **makefile).encode())
    return FirmwareSources(root, family, tuple(sources), tuple(include_dirs), linker_script,
                           all_defines, config, debug, profile_layers)


def _context(project: GeneratedProject, board: Board | None, tc: Toolchain, family: str) -> dict[str, Any]:
    return {
        "board": board,
        "model_name": project.program.name,
        "model_hash": project.program.model_hash,
        "generator_version": GENERATOR_VERSION,
        "target": board.id if board is not None else "this machine",
        "family": family,
        "toolchain": tc,
    }


def firmware_name(family: str) -> str:
    """File name of the linked device program."""
    return "firmware.elf" if family in BARE_METAL_FAMILIES else "firmware"


def link_flags(tc: Toolchain, linker_script: Path | None, map_file: Path | None = None) -> tuple[str, ...]:
    """Flags of the firmware link besides objects and ``cc + cflags`` (``ldflags`` included)."""
    flags: list[str] = []
    if linker_script is not None:
        flags += ["-nostartfiles", f"-T{linker_script}"]
        if map_file is not None:
            flags.append(f"-Wl,-Map={map_file}")
    return (*flags, *tc.ldflags)


def _makefile_context(
    project: GeneratedProject, root: Path, tc: Toolchain, sources: Sequence[Path],
    include_dirs: Sequence[Path], defines: Sequence[str], linker_script: Path | None, family: str,
) -> dict[str, Any]:
    def rel(p: Path) -> str:
        return _relative(p, root)

    specs = [f for f in tc.ldflags if f.startswith("--specs=")]
    return {
        "cc": tc.cc,
        "ar": tc.tool("ar"),
        "opt": tc.opt,
        "target_flags": tc.cflags,
        "specs": specs,
        "defines": defines,
        "include_dirs": [rel(d) for d in include_dirs],
        "link_flags": link_flags(tc, None if linker_script is None else Path("link.ld")),
        "model_sources": [rel(project.path(s)) for s in project.sources],
        "sources": [rel(s) for s in sources],
        "linker_script": linker_script is not None,
        "output": firmware_name(family),
    }


def _relative(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def build_firmware(*args: Any, **kwargs: Any) -> FirmwareBuild:
    """:func:`toolkit.build.build_firmware` (generation lives here, compiling in toolkit.build;
    imported lazily because toolkit.build imports this module)."""
    from toolkit.build import build_firmware as build

    return build(*args, **kwargs)
