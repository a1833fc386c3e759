"""The board catalogue: typed, validated descriptions of the boards boardfit builds for.

A board is data, not code (DESIGN.md §3): one ``boards/<id>.toml`` per board, read into the
frozen dataclasses below.  Everything downstream — the planner's budgets, the code generator's
toolchain flags, the firmware templates (linker script, UART driver, timer), the emulator and
flash runners — reads these objects and never a board name.  ``boards/README.md`` documents
every key; this module is the schema and rejects anything it does not know, naming the file,
the key and what was expected.

Units: sizes and addresses in bytes, frequencies in Hz.  ``size`` of a memory region is what
boardfit links into (the linker script's LENGTH); ``reserved`` is the part of it the runtime
needs (flash: startup code, drivers, protocol; RAM: stack, heap and runtime buffers), so the
model's budget is ``size - reserved``.  Which serial port or drive a user's board appears as is
local configuration and never part of a board file.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final, NoReturn

from toolkit.errors import BoardError, DoesNotFit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_BOARD: Final = "mps2-an386"
BOARD_PACKAGE: Final = "boards"  # the package that holds the .toml files (importlib.resources)

KINDS: Final = ("mcu", "linux", "host")
# Firmware family -> the board kind it runs on.
FAMILIES: Final[Mapping[str, str]] = {
    "cortex-m": "mcu",
    "riscv": "mcu",
    "esp-idf": "mcu",
    "linux": "linux",
    "host": "host",
}
LIBCS: Final = ("newlib-nano", "newlib", "picolibc", "glibc-static", "glibc")

# ISA features a kernel variant may depend on.  Names are stable: targets/isa.py maps them to
# kernel variants and the host detector reports the same names.
FEATURES: Final[Mapping[str, str]] = {
    "dsp": "Arm DSP/SIMD32 instructions (SMLAD, SADD8, SSAT ...): __ARM_FEATURE_DSP",
    "fpu": "hardware single-precision floating point",
    "fpu-dp": "hardware double-precision floating point",
    "mve": "Arm M-profile vector extension (Helium), integer",
    "mve-fp": "Arm M-profile vector extension (Helium), floating point",
    "neon": "Arm Advanced SIMD (NEON)",
    "crc": "Arm CRC32 instructions",
    "fp16": "Arm half-precision vector arithmetic",
    "dotprod": "Arm SDOT/UDOT int8 dot product",
    "i8mm": "Arm int8 matrix multiply (SMMLA)",
    "sve": "Arm scalable vector extension",
    "popcnt": "x86 POPCNT",
    "sse4.2": "x86 SSE4.2",
    "avx2": "x86 AVX2",
    "avx512": "x86 AVX-512 F/BW/VL",
    "avx512-vnni": "x86 AVX-512 VNNI",
    "avx512-vpopcntdq": "x86 AVX-512 VPOPCNTDQ (vector popcount)",
    "rv-m": "RISC-V M (integer multiply/divide)",
    "rv-a": "RISC-V A (atomics)",
    "rv-f": "RISC-V F (single-precision float)",
    "rv-d": "RISC-V D (double-precision float)",
    "rv-c": "RISC-V C (compressed instructions)",
    "rv-v": "RISC-V V (vectors)",
    "xtensa-pie": "ESP32-S3 processor instruction extensions (128-bit SIMD)",
}
_ARM_M_FP = frozenset({"fpu", "fpu-dp"})
# Which features make sense on which architecture (a feature outside its arch is a typo or a
# copy-paste error, not a fact about a board).  RISC-V arches are checked against their letters.
ARCH_FEATURES: Final[Mapping[str, frozenset[str]]] = {
    "armv6-m": frozenset(),
    "armv7-m": frozenset(),
    "armv7e-m": frozenset({"dsp"}) | _ARM_M_FP,
    "armv8-m.base": frozenset(),
    "armv8-m.main": frozenset({"dsp"}) | _ARM_M_FP,
    "armv8.1-m.main": frozenset({"dsp", "mve", "mve-fp"}) | _ARM_M_FP,
    "armv7-a": frozenset({"dsp", "neon", "fp16", "crc"}) | _ARM_M_FP,
    "aarch64": frozenset({"neon", "crc", "fp16", "dotprod", "i8mm", "sve"}) | _ARM_M_FP,
    "xtensa-lx7": frozenset({"fpu", "xtensa-pie"}),
    "x86_64": frozenset({"popcnt", "sse4.2", "avx2", "avx512", "avx512-vnni", "avx512-vpopcntdq"})
    | _ARM_M_FP,
    # The build machine: its features are detected when building, never listed in a file.
    "native": frozenset(),
}
_RISCV_ARCH = re.compile(r"^rv(32|64)([a-z]+)$")
_RISCV_LETTER_FEATURES: Final[Mapping[str, str]] = {
    "m": "rv-m", "a": "rv-a", "f": "rv-f", "d": "rv-d", "c": "rv-c", "v": "rv-v",
}

# UART kinds (the device-side driver to use) -> (needs a base address, needs a clock for the
# baud divisor).  nRF UARTs take a baud code, not a divisor; "posix" is a tty or stdin/stdout.
UART_KINDS: Final[Mapping[str, tuple[bool, bool]]] = {
    "cmsdk": (True, True),           # Arm CMSDK APB UART (MPS2 FPGA images)
    "stm32-usart": (True, True),     # STM32F1/F2/F4 USART: SR/DR layout, BRR = f/baud
    "stm32-usart-v2": (True, True),  # STM32F7/L4/G4/H7 USART: ISR/RDR/TDR layout
    "stm32-lpuart": (True, True),    # STM32 LPUART: v2 layout, BRR = 256*f/baud
    "nrf51-uart": (True, False),     # nRF51 UART (TXD/RXD registers, BAUDRATE code)
    "nrf52-uarte": (True, False),    # nRF52 UARTE (EasyDMA, BAUDRATE code)
    "pl011": (True, True),           # Arm PL011 (Stellaris UARTs in QEMU)
    "rp2040": (True, True),          # RP2040 UART (a PL011 behind RESETS and GPIO function select)
    "sifive": (True, True),          # SiFive UART (txdata/rxdata, div = f/baud - 1)
    "esp32-uart": (True, True),      # ESP32-S3 UART
    "posix": (False, False),         # Linux/host: a tty device or stdin/stdout
}
# Timer kinds -> counter width in bits (what the firmware must extend in software).
TIMER_KINDS: Final[Mapping[str, int]] = {
    "systick": 24,         # Cortex-M SysTick down-counter on the processor clock
    "nrf-timer": 32,       # nRF TIMERn in 32-bit timer mode, PRESCALER 0 (needs base)
    "riscv-mcycle": 64,    # RISC-V mcycle CSR
    "xtensa-ccount": 32,   # Xtensa CCOUNT special register
    "clock_gettime": 64,   # CLOCK_MONOTONIC in nanoseconds (frequency_hz = 1e9)
}

OptionValue = str | int | bool | tuple[str, ...]
_OptionType = type[str] | type[int] | type[bool] | type[list[Any]]
# Runner kinds -> their options: name -> (type, required).  Every runner may also list Debian
# ``packages`` and PyPI ``pip`` requirements.  Hosts, ports, drives and serial numbers are local
# configuration, so no option names one.
RUNNER_KINDS: Final[Mapping[str, Mapping[str, tuple[_OptionType, bool]]]] = {
    "qemu-system": {},  # uses [emulator]
    "qemu-user": {},    # uses [emulator]
    "pyocd": {"target": (str, True), "pack": (bool, False), "frequency_hz": (int, False)},
    "openocd": {"configs": (list, True), "commands": (list, False)},
    "st-flash": {"address": (int, True), "connect_under_reset": (bool, False)},
    "uf2": {"family_id": (int, True), "base_address": (int, True), "volume_label": (str, True)},
    "esptool": {"chip": (str, True), "app_offset": (int, True), "baud": (int, True)},
    "ssh": {"remote_dir": (str, True)},
    "host": {},  # run the executable on this machine
}
_QEMU_RUNNERS: Final = {"qemu-system": "system", "qemu-user": "user"}
_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class BoardFileError(BoardError):
    """A board file is malformed: names the file, the key (dotted path) and the problem."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


# --------------------------------------------------------------------------------------------
# The data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryRegion:
    """A contiguous memory the firmware links into.

    ``size`` is what boardfit uses (the linker script's LENGTH); ``provided`` is what the chip
    or emulator really has when that is more (e.g. QEMU's 4 MiB SSRAM on an MPS2 board that we
    budget like a 1 MiB MCU).  ``reserved`` bytes of ``size`` belong to the runtime: in flash
    its code, in RAM its ``stack`` + ``heap`` + buffers.  ``origin`` is None where addresses are
    virtual (Linux, host).
    """

    name: str
    origin: int | None
    size: int
    reserved: int = 0
    provided: int | None = None
    stack: int = 0
    heap: int = 0
    external: bool = False  # off-chip (QSPI flash, SDRAM, PSRAM): needs set-up before use
    description: str = ""

    @property
    def budget(self) -> int:
        """Bytes left for the model (weights and kernels in flash; arena and state in RAM)."""
        return self.size - self.reserved

    @property
    def end(self) -> int | None:
        """One past the last byte boardfit uses, or None without a fixed address."""
        return None if self.origin is None else self.origin + self.size


@dataclass(frozen=True)
class Toolchain:
    """How to compile for the board: the link line is ``cc + cflags + ldflags``."""

    prefix: str  # binutils prefix: prefix + "size", prefix + "objcopy"
    cc: str
    cflags: tuple[str, ...]
    ldflags: tuple[str, ...]
    libc: str
    packages: tuple[str, ...]  # Debian packages providing it; empty when Debian has none
    install_note: str = ""     # how to get it when it is not a Debian package

    def tool(self, name: str) -> str:
        """The binutils program ``name`` of this toolchain, e.g. ``tool("size")``."""
        return f"{self.prefix}{name}"

    def installed(self) -> bool:
        """Whether the compiler is on PATH on this machine."""
        return shutil.which(self.cc) is not None


@dataclass(frozen=True)
class Uart:
    """The serial line the device speaks the protocol on."""

    kind: str
    baud: int
    instance: str = ""           # the peripheral's name in the reference manual, e.g. "LPUART1"
    base: int | None = None      # register block address
    clock_hz: int | None = None  # UART kernel clock for the baud divisor when the core runs at clock_hz
    tx_pin: str = ""
    rx_pin: str = ""
    pin_function: int | None = None  # STM32 alternate function / RP2040 GPIO FUNCSEL number
    connection: str = ""         # how the host reaches it (prose; never a port name)


@dataclass(frozen=True)
class Timer:
    """The counter the firmware times inferences with (on the real board)."""

    kind: str
    frequency_hz: int
    base: int | None = None  # peripheral address for memory-mapped timers (nrf-timer)

    @property
    def bits(self) -> int:
        """Width of the hardware counter; the firmware extends it on wrap."""
        return TIMER_KINDS[self.kind]


@dataclass(frozen=True)
class Emulator:
    """How QEMU runs the board.

    For system emulation with ``icount_shift`` N each instruction advances virtual time by 2^N
    ns, so a timer ticking at ``timer_hz`` (as QEMU models it) counts instructions exactly:
    instructions = ticks * 1e9 / timer_hz / 2^N (TOOLCHAIN.md).
    """

    binary: str
    machine: str | None = None
    cpu: str | None = None
    machine_options: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    semihosting: bool = False
    icount_shift: int | None = None
    timer_hz: int | None = None
    packages: tuple[str, ...] = ()

    @property
    def mode(self) -> str:
        """"system" (a whole board) or "user" (one Linux process)."""
        return "system" if self.binary.startswith("qemu-system-") else "user"

    @property
    def machine_arg(self) -> str | None:
        """The value of ``-M``: the machine with its options, e.g. ``sifive_e,revb=true``."""
        if self.machine is None:
            return None
        return ",".join((self.machine, *self.machine_options))

    def instructions(self, ticks: int) -> float:
        """Instructions executed while the emulated timer advanced by ``ticks``."""
        if self.icount_shift is None or self.timer_hz is None:
            raise BoardError(f"{self.binary}: no -icount shift and timer rate; cannot count instructions")
        return ticks * 1e9 / self.timer_hz / (1 << self.icount_shift)


@dataclass(frozen=True)
class RunnerSpec:
    """One way to flash and run the board, with its options (validated per kind)."""

    kind: str
    options: tuple[tuple[str, OptionValue], ...] = ()
    packages: tuple[str, ...] = ()  # Debian packages
    pip: tuple[str, ...] = ()       # PyPI requirements

    def option(self, name: str, default: OptionValue | None = None) -> OptionValue | None:
        return dict(self.options).get(name, default)

    def str_option(self, name: str) -> str:
        value = self.option(name)
        if not isinstance(value, str):
            raise BoardError(f"runner {self.kind}: option {name!r} is not set (or not a string)")
        return value

    def int_option(self, name: str) -> int:
        value = self.option(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise BoardError(f"runner {self.kind}: option {name!r} is not set (or not an integer)")
        return value

    def list_option(self, name: str) -> tuple[str, ...]:
        value = self.option(name, ())
        if not isinstance(value, tuple):
            raise BoardError(f"runner {self.kind}: option {name!r} is not a list")
        return value

    def bool_option(self, name: str, default: bool = False) -> bool:
        value = self.option(name, default)
        return value if isinstance(value, bool) else default


@dataclass(frozen=True)
class Board:
    """One board of the catalogue (see the module docstring and boards/README.md)."""

    id: str
    name: str
    description: str
    kind: str
    family: str
    core: str
    arch: str
    features: tuple[str, ...]
    clock_hz: int | None  # nominal core clock; None only for kind "host"
    flash: MemoryRegion
    ram: MemoryRegion
    toolchain: Toolchain
    uart: Uart
    timer: Timer
    runners: tuple[RunnerSpec, ...]
    emulator: Emulator | None = None
    extra_memory: tuple[MemoryRegion, ...] = ()
    reset_clock_hz: int | None = None  # core clock out of reset, before any clock set-up
    source: str = field(default="", compare=False)  # where it was loaded from

    @property
    def flash_budget(self) -> int:
        return self.flash.budget

    @property
    def ram_budget(self) -> int:
        return self.ram.budget

    @property
    def emulated(self) -> bool:
        return self.emulator is not None

    @property
    def runner(self) -> RunnerSpec:
        """The preferred runner (the first listed)."""
        return self.runners[0]

    @property
    def runner_summary(self) -> str:
        """Short human description of how the board is run, for tables."""
        parts = []
        for r in self.runners:
            if r.kind in _QEMU_RUNNERS and self.emulator is not None:
                target = self.emulator.machine_arg or f"-cpu {self.emulator.cpu}"
                parts.append(f"{self.emulator.binary} {target}")
            else:
                parts.append(r.kind)
        return ", ".join(parts)

    def has(self, feature: str) -> bool:
        if feature not in FEATURES:
            raise BoardError(f"unknown ISA feature {feature!r}; known: {', '.join(FEATURES)}")
        return feature in self.features

    def runner_of(self, kind: str) -> RunnerSpec | None:
        return next((r for r in self.runners if r.kind == kind), None)

    def packages(self) -> tuple[str, ...]:
        """Debian packages needed to build for, emulate and flash this board (sorted, unique)."""
        names = set(self.toolchain.packages)
        if self.emulator is not None:
            names.update(self.emulator.packages)
        for r in self.runners:
            names.update(r.packages)
        return tuple(sorted(names))

    def check_fit(self, flash_bytes: int, ram_bytes: int) -> None:
        """Raise DoesNotFit when a model needs more flash or RAM than the board's budgets."""
        if flash_bytes > self.flash_budget:
            raise DoesNotFit("flash (weights + code)", flash_bytes, self.flash_budget, self.id)
        if ram_bytes > self.ram_budget:
            raise DoesNotFit("RAM (arena + state)", ram_bytes, self.ram_budget, self.id)

    def to_json(self) -> dict[str, Any]:
        """The board as plain JSON values: the board file's keys plus the two budgets."""
        return {
            "id": self.id, "name": self.name, "description": self.description,
            "kind": self.kind, "family": self.family, "core": self.core, "arch": self.arch,
            "features": list(self.features), "clock_hz": self.clock_hz,
            "reset_clock_hz": self.reset_clock_hz,
            "memory": {
                "flash": _region_json(self.flash), "ram": _region_json(self.ram),
                "extra": [_region_json(r) for r in self.extra_memory],
            },
            "toolchain": _plain(self.toolchain.__dict__),
            "uart": _plain(self.uart.__dict__),
            "timer": _plain(self.timer.__dict__),
            "emulator": None if self.emulator is None else _plain(self.emulator.__dict__),
            "runner": [_runner_json(r) for r in self.runners],
            "flash_budget": self.flash_budget,
            "ram_budget": self.ram_budget,
        }


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _region_json(region: MemoryRegion) -> dict[str, Any]:
    return {**_plain(region.__dict__), "budget": region.budget}


def _runner_json(r: RunnerSpec) -> dict[str, Any]:
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in r.options}
    return {"kind": r.kind, **options, "packages": list(r.packages), "pip": list(r.pip)}


# --------------------------------------------------------------------------------------------
# Reading and validation
# --------------------------------------------------------------------------------------------

_MISSING: Final = object()


class _Table:
    """A TOML table being read: typed getters that record which keys the schema knows, so that
    :meth:`finish` can reject the rest.  Every error names the file and the dotted key."""

    def __init__(self, data: Mapping[str, Any], source: str, path: str = "") -> None:
        self.data = data
        self.source = source
        self.path = path
        self.known: list[str] = []

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str) -> NoReturn:
        raise BoardFileError(self.source, self.key(name), problem)

    def _get(self, name: str, required: bool) -> Any:
        self.known.append(name)
        if name in self.data:
            return self.data[name]
        if required:
            self.fail(name, "missing required key")
        return _MISSING

    def get_str(self, name: str, required: bool = True, default: str = "") -> str:
        value = self._get(name, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            self.fail(name, f"expected a string, got {_describe(value)}")
        return value

    def get_int(self, name: str, required: bool = True, minimum: int | None = 1) -> int | None:
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"expected an integer, got {_describe(value)}")
        if minimum is not None and value < minimum:
            self.fail(name, f"expected an integer >= {minimum}, got {value}")
        return value

    def req_int(self, name: str, minimum: int | None = 1) -> int:
        value = self.get_int(name, True, minimum)
        assert value is not None  # required keys are never absent past _get
        return value

    def get_bool(self, name: str, default: bool = False) -> bool:
        value = self._get(name, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            self.fail(name, f"expected true or false, got {_describe(value)}")
        return value

    def get_str_list(self, name: str, required: bool = False) -> tuple[str, ...]:
        value = self._get(name, required)
        if value is _MISSING:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(name, f"expected a list of strings, got {_describe(value)}")
        return tuple(value)

    def get_choice(self, name: str, choices: Iterable[str]) -> str:
        allowed = tuple(choices)
        value = self.get_str(name)
        if value not in allowed:
            self.fail(name, f"unknown value {value!r}; expected one of: {', '.join(allowed)}")
        return value

    def table(self, name: str) -> _Table:
        value = self._get(name, True)
        if not isinstance(value, dict):
            self.fail(name, f"expected a table, got {_describe(value)}")
        return _Table(value, self.source, self.key(name))

    def opt_table(self, name: str) -> _Table | None:
        if name in self.data:
            return self.table(name)
        self.known.append(name)
        return None

    def opt_bool(self, name: str) -> bool | None:
        """A boolean that may be absent (None), unlike get_bool's default."""
        if name in self.data:
            return self.get_bool(name)
        self.known.append(name)
        return None

    def table_list(self, name: str, required: bool) -> list[_Table]:
        value = self._get(name, required)
        if value is _MISSING:
            return []
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(name, f"expected an array of tables ([[{self.key(name)}]]), got {_describe(value)}")
        if required and not value:
            self.fail(name, "expected at least one entry")
        return [_Table(v, self.source, f"{self.key(name)}[{i}]") for i, v in enumerate(value)]

    def finish(self) -> None:
        unknown = [k for k in self.data if k not in self.known]
        if unknown:
            self.fail(unknown[0], f"unknown key; expected one of: {', '.join(sorted(set(self.known)))}")


def _describe(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string",
             list: "a list", dict: "a table"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"[:120]


def _read_region(t: _Table, name: str, *, ram: bool, mcu: bool) -> MemoryRegion:
    origin = t.get_int("origin", required=mcu, minimum=0)
    size = t.req_int("size")
    reserved = t.req_int("reserved", minimum=0)
    provided = t.get_int("provided", required=False)
    stack = t.get_int("stack", required=ram, minimum=0) if ram else None
    heap = t.get_int("heap", required=False, minimum=0) if ram else None
    region = MemoryRegion(
        name=name, origin=origin, size=size, reserved=reserved, provided=provided,
        stack=stack or 0, heap=heap or 0, external=t.get_bool("external"),
        description=t.get_str("description", required=False),
    )
    t.finish()
    _check_region(t, region, mcu)
    return region


def _check_region(t: _Table, r: MemoryRegion, mcu: bool) -> None:
    if r.reserved >= r.size:
        t.fail("reserved", f"reserved ({r.reserved:,}) must be less than size ({r.size:,})")
    if r.stack + r.heap > r.reserved:
        t.fail("stack", f"stack + heap ({r.stack + r.heap:,}) exceed reserved ({r.reserved:,})")
    if r.provided is not None and r.provided < r.size:
        t.fail("provided", f"provided ({r.provided:,}) is less than size ({r.size:,})")
    if mcu and r.end is not None and r.end > 1 << 32:
        t.fail("size", f"region ends at {r.end:#x}, beyond the 32-bit address space")


def _read_memory(t: _Table, mcu: bool) -> tuple[MemoryRegion, MemoryRegion, tuple[MemoryRegion, ...]]:
    flash = _read_region(t.table("flash"), "flash", ram=False, mcu=mcu)
    ram = _read_region(t.table("ram"), "ram", ram=True, mcu=mcu)
    extra = []
    for e in t.table_list("extra", required=False):
        name = e.get_str("name")
        extra.append(_read_region(e, name, ram=False, mcu=mcu))
    t.finish()
    return flash, ram, tuple(extra)


def _read_toolchain(t: _Table) -> Toolchain:
    prefix = t.get_str("prefix", required=True)
    tc = Toolchain(
        prefix=prefix,
        cc=t.get_str("cc", required=False, default=f"{prefix}gcc"),
        cflags=t.get_str_list("cflags", required=True),
        ldflags=t.get_str_list("ldflags", required=True),
        libc=t.get_choice("libc", LIBCS),
        packages=t.get_str_list("packages", required=True),
        install_note=t.get_str("install_note", required=False),
    )
    if not tc.packages and not tc.install_note:
        t.fail("install_note", "a toolchain without Debian packages must say how to install it")
    t.finish()
    return tc


def _read_uart(t: _Table) -> Uart:
    kind = t.get_choice("kind", UART_KINDS)
    needs_base, needs_clock = UART_KINDS[kind]
    uart = Uart(
        kind=kind, baud=t.req_int("baud"), instance=t.get_str("instance", required=needs_base),
        base=t.get_int("base", required=needs_base, minimum=0),
        clock_hz=t.get_int("clock_hz", required=needs_clock),
        tx_pin=t.get_str("tx_pin", required=False), rx_pin=t.get_str("rx_pin", required=False),
        pin_function=t.get_int("pin_function", required=False, minimum=0),
        connection=t.get_str("connection", required=True),
    )
    if not needs_base and uart.base is not None:
        t.fail("base", f"a {kind} UART has no register address")
    t.finish()
    return uart


def _read_timer(t: _Table) -> Timer:
    kind = t.get_choice("kind", TIMER_KINDS)
    timer = Timer(kind=kind, frequency_hz=t.req_int("frequency_hz"),
                  base=t.get_int("base", required=kind == "nrf-timer", minimum=0))
    t.finish()
    return timer


def _read_emulator(t: _Table) -> Emulator:
    emu = Emulator(
        binary=t.get_str("binary"), machine=t.get_str("machine", required=False) or None,
        cpu=t.get_str("cpu", required=False) or None,
        machine_options=t.get_str_list("machine_options"), args=t.get_str_list("args"),
        semihosting=t.get_bool("semihosting"),
        icount_shift=t.get_int("icount_shift", required=False, minimum=0),
        timer_hz=t.get_int("timer_hz", required=False),
        packages=t.get_str_list("packages", required=True),
    )
    t.finish()
    if not emu.binary.startswith("qemu-"):
        t.fail("binary", f"expected a QEMU program (qemu-system-* or qemu-<arch>), got {emu.binary!r}")
    if emu.mode == "system" and emu.machine is None:
        t.fail("machine", "missing required key (system emulation needs a machine)")
    if emu.mode == "user" and emu.cpu is None:
        t.fail("cpu", "missing required key (user-mode emulation must pin -cpu, or every extension is on)")
    if emu.icount_shift is not None and emu.icount_shift > 10:
        t.fail("icount_shift", f"expected 0..10, got {emu.icount_shift}")
    if (emu.icount_shift is None) != (emu.timer_hz is None):
        t.fail("timer_hz", "icount_shift and timer_hz go together (both or neither)")
    return emu


def _read_runner(t: _Table) -> RunnerSpec:
    kind = t.get_choice("kind", RUNNER_KINDS)
    options: list[tuple[str, OptionValue]] = []
    for name, (typ, required) in RUNNER_KINDS[kind].items():
        value = _read_option(t, name, typ, required)
        if value is not None:
            options.append((name, value))
    spec = RunnerSpec(kind=kind, options=tuple(options), packages=t.get_str_list("packages"),
                      pip=t.get_str_list("pip"))
    t.finish()
    return spec


def _read_option(t: _Table, name: str, typ: _OptionType, required: bool) -> OptionValue | None:
    if typ is str:
        return t.get_str(name, required=required) or None
    if typ is int:
        return t.get_int(name, required=required, minimum=0)
    if typ is bool:
        return t.opt_bool(name)
    values = t.get_str_list(name, required=required)
    if required and not values:
        t.fail(name, "expected a non-empty list of strings")
    return values or None


def _check_features(t: _Table, arch: str, features: tuple[str, ...]) -> None:
    for f in features:
        if f not in FEATURES:
            close = difflib.get_close_matches(f, FEATURES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            t.fail("features", f"unknown feature {f!r}{hint}; known: {', '.join(FEATURES)}")
    if len(set(features)) != len(features):
        t.fail("features", "a feature is listed twice")
    m = _RISCV_ARCH.match(arch)
    if m:
        implied = {feat for letter, feat in _RISCV_LETTER_FEATURES.items() if letter in m.group(2)}
        if set(features) != implied:
            t.fail("features", f"{arch} implies exactly {sorted(implied)}, got {sorted(features)}")
        return
    bad = [f for f in features if f not in ARCH_FEATURES[arch]]
    if bad:
        allowed = ", ".join(sorted(ARCH_FEATURES[arch])) or "none"
        t.fail("features", f"{', '.join(bad)} not possible on {arch} (allowed: {allowed})")
    if "fpu-dp" in features and "fpu" not in features:
        t.fail("features", "fpu-dp without fpu")


def _read_arch(t: _Table) -> str:
    arch = t.get_str("arch")
    if arch not in ARCH_FEATURES and not _RISCV_ARCH.match(arch):
        t.fail("arch", f"unknown architecture {arch!r}; expected one of: "
               f"{', '.join(ARCH_FEATURES)} or a RISC-V string such as rv32imac")
    return arch


def _check_runners(t: _Table, runners: tuple[RunnerSpec, ...], emulator: Emulator | None) -> None:
    for i, r in enumerate(runners):
        mode = _QEMU_RUNNERS.get(r.kind)
        if mode is None:
            continue
        if emulator is None:
            t.fail(f"runner[{i}].kind", f"a {r.kind} runner needs an [emulator] table")
        elif emulator.mode != mode:
            t.fail(f"runner[{i}].kind", f"{r.kind} does not match emulator {emulator.binary}")
    if emulator is not None and not any(r.kind in _QEMU_RUNNERS for r in runners):
        t.fail("runner", "an emulated board needs a qemu-system or qemu-user runner")


def _parse(data: Mapping[str, Any], source: str, stem: str | None) -> Board:
    t = _Table(data, source)
    board_id = t.get_str("id")
    if not _ID.match(board_id):
        t.fail("id", f"expected lowercase letters, digits and '-', got {board_id!r}")
    if stem is not None and board_id != stem:
        t.fail("id", f"id {board_id!r} does not match the file name {stem!r}.toml")
    kind = t.get_choice("kind", KINDS)
    family = t.get_choice("family", FAMILIES)
    if FAMILIES[family] != kind:
        t.fail("family", f"firmware family {family!r} runs on kind {FAMILIES[family]!r}, not {kind!r}")
    arch = _read_arch(t)
    features = t.get_str_list("features", required=True)
    _check_features(t, arch, features)
    mcu = kind == "mcu"
    clock = t.get_int("clock_hz", required=kind != "host")
    flash, ram, extra = _read_memory(t.table("memory"), mcu)
    emulator_table = t.opt_table("emulator")
    emulator = None if emulator_table is None else _read_emulator(emulator_table)
    runners = tuple(_read_runner(r) for r in t.table_list("runner", required=True))
    _check_runners(t, runners, emulator)
    board = Board(
        id=board_id, name=t.get_str("name"), description=t.get_str("description"), kind=kind,
        family=family, core=t.get_str("core"), arch=arch, features=features, clock_hz=clock,
        reset_clock_hz=t.get_int("reset_clock_hz", required=False), flash=flash, ram=ram,
        extra_memory=extra, toolchain=_read_toolchain(t.table("toolchain")),
        uart=_read_uart(t.table("uart")), timer=_read_timer(t.table("timer")),
        emulator=emulator, runners=runners, source=source,
    )
    t.finish()
    return board


def parse_board(text: str, source: str, stem: str | None = None) -> Board:
    """Parse and validate the TOML ``text`` of a board file; ``source`` names it in errors and
    ``stem`` (the file name without .toml), when given, must equal the board's id."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BoardFileError(source, "", f"not valid TOML: {exc}") from exc
    return _parse(data, source, stem)


# --------------------------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------------------------


def _packaged() -> dict[str, Any]:
    """id -> Traversable of every board file shipped in the ``boards`` package."""
    root = resources.files(BOARD_PACKAGE)
    return {e.name[: -len(".toml")]: e for e in root.iterdir() if e.name.endswith(".toml")}


@functools.cache
def _load_packaged(board_id: str) -> Board:
    entry = _packaged()[board_id]
    return parse_board(entry.read_text(encoding="utf-8"), f"{BOARD_PACKAGE}/{entry.name}", board_id)


def board_ids() -> list[str]:
    """Ids of the packaged boards, sorted."""
    return sorted(_packaged())


def list_boards() -> list[Board]:
    """Every packaged board, sorted by id (raises BoardError if any file is invalid)."""
    return [_load_packaged(i) for i in board_ids()]


def load_board(id_or_path: str | os.PathLike[str]) -> Board:
    """A packaged board by id (``"mps2-an386"``), or a board file by path (``./my.toml``)."""
    text = os.fspath(id_or_path)
    if isinstance(id_or_path, os.PathLike) or text.endswith(".toml") or os.sep in text or "/" in text:
        return _load_path(Path(text))
    known = board_ids()
    if text not in known:
        close = difflib.get_close_matches(text, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise BoardError(f"unknown board {text!r}{hint}; known boards: {', '.join(known)}")
    return _load_packaged(text)


def _load_path(path: Path) -> Board:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BoardError(f"cannot read board file {path}: {exc.strerror or exc}") from exc
    return parse_board(text, str(path), path.stem)


def default_board() -> Board:
    return load_board(DEFAULT_BOARD)
