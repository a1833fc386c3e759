"""The board catalogue: every board file validates, facts are right, emulators agree.

Three kinds of checks:

* schema: every file in boards/ loads; ids are unique and match file names; each kind of
  mistake in a board file is refused with a BoardFileError naming the file and the key;
* facts: memory, clock and ISA facts stated here independently of the files (datasheet values);
  ISA features agree with what the board's compiler flags enable (predefined macros);
* emulation: each emulated board's QEMU machine or CPU exists in the installed QEMU, and a tiny
  probe firmware linked at the board's flash and RAM addresses boots, prints over the board's
  UART and measures the board's timer under ``-icount`` at the rate the file states.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from toolkit.boards import (
    DEFAULT_BOARD,
    FEATURES,
    RUNNER_KINDS,
    TIMER_KINDS,
    UART_KINDS,
    Board,
    BoardFileError,
    board_ids,
    list_boards,
    load_board,
)
from toolkit.errors import BoardError, DoesNotFit

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
BOARD_DIR = REPO / "boards"
BOARD_FILES = sorted(BOARD_DIR.glob("*.toml"))
KIB = 1024
MIB = 1024 * 1024

REQUIRED_BOARDS = {
    "mps2-an386", "mps2-an500", "mps2-an505", "netduinoplus2", "microbit", "lm3s6965evb",
    "rpi4", "rpi5", "rpi3-32bit", "hifive1",
    "nucleo-l4r5zi", "nano33ble", "pico", "esp32-s3", "stm32f746-disco",
}


def _by_id() -> dict[str, Board]:
    return {b.id: b for b in list_boards()}


def _physical(size: int, provided: int | None) -> int:
    return provided if provided is not None else size


# --------------------------------------------------------------------------------------------
# Schema: the shipped files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BOARD_FILES, ids=[p.stem for p in BOARD_FILES])
def test_every_board_file_validates(path: Path) -> None:
    board = load_board(path)
    assert board.id == path.stem
    assert board.flash_budget > 0 and board.ram_budget > 0
    assert board.runners, "every board needs a way to run it"


def test_ids_unique_and_match_file_names() -> None:
    ids = [b.id for b in list_boards()]
    assert len(ids) == len(set(ids))
    assert ids == sorted(p.stem for p in BOARD_FILES)
    assert board_ids() == ids  # the packaged view (importlib.resources) sees the same files


def test_catalogue_has_the_required_boards_and_default() -> None:
    assert set(board_ids()) >= REQUIRED_BOARDS
    default = load_board(DEFAULT_BOARD)
    assert default.id == "mps2-an386" and default.emulated
    assert default.core == "cortex-m4" and default.has("fpu") and default.has("dsp")


def test_board_files_are_packaged_for_non_editable_installs() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "*.toml" in pyproject["tool"]["setuptools"]["package-data"]["boards"]
    assert (BOARD_DIR / "__init__.py").exists()  # a package, so importlib.resources finds it


def test_load_by_id_equals_load_by_path_and_unknown_ids_are_refused() -> None:
    assert load_board("microbit") == load_board(BOARD_DIR / "microbit.toml")
    with pytest.raises(BoardError, match=r"unknown board 'mps2-an368'.*mps2-an386"):
        load_board("mps2-an368")
    with pytest.raises(BoardError, match="cannot read board file"):
        load_board(BOARD_DIR / "no-such-board.toml")


@pytest.mark.parametrize("path", BOARD_FILES, ids=[p.stem for p in BOARD_FILES])
def test_budgets_are_size_minus_reserved(path: Path) -> None:
    raw = tomllib.loads(path.read_text())
    board = load_board(path)
    flash, ram = raw["memory"]["flash"], raw["memory"]["ram"]
    assert board.flash_budget == flash["size"] - flash["reserved"]
    assert board.ram_budget == ram["size"] - ram["reserved"]
    assert board.ram.stack + board.ram.heap <= board.ram.reserved


def test_to_json_has_every_file_key_and_the_budgets() -> None:
    for path in BOARD_FILES:
        raw = tomllib.loads(path.read_text())
        doc = json.loads(json.dumps(load_board(path).to_json()))
        assert set(raw) <= set(doc), path.name
        assert set(raw["memory"]["ram"]) <= set(doc["memory"]["ram"])
        assert doc["flash_budget"] > 0 and doc["ram_budget"] > 0
        assert len(doc["runner"]) == len(raw["runner"])


def test_check_fit_reports_needed_and_available() -> None:
    board = load_board("microbit")
    board.check_fit(board.flash_budget, board.ram_budget)  # exactly full fits
    with pytest.raises(DoesNotFit) as err:
        board.check_fit(1000, board.ram_budget + 1)
    assert err.value.needed == board.ram_budget + 1 and err.value.available == board.ram_budget
    assert "microbit" in str(err.value) and "1 bytes over" in str(err.value)


def test_board_readme_documents_every_kind_and_feature() -> None:
    readme = (BOARD_DIR / "README.md").read_text()
    for name in [*FEATURES, *UART_KINDS, *TIMER_KINDS, *RUNNER_KINDS]:
        assert f"`{name}`" in readme, f"boards/README.md does not document {name!r}"


# --------------------------------------------------------------------------------------------
# Facts, stated independently of the files (datasheets, board manuals, QEMU's memory map)
# --------------------------------------------------------------------------------------------

# id -> (core, clock_hz, physical flash bytes, physical RAM bytes)
FACTS: dict[str, tuple[str, int, int, int]] = {
    "microbit": ("cortex-m0", 16_000_000, 256 * KIB, 16 * KIB),
    "nucleo-l4r5zi": ("cortex-m4", 120_000_000, 2 * MIB, 640 * KIB),
    "nano33ble": ("cortex-m4", 64_000_000, 1 * MIB, 256 * KIB),
    "pico": ("cortex-m0plus", 133_000_000, 2 * MIB, 264 * KIB),
    "esp32-s3": ("xtensa-lx7", 240_000_000, 8 * MIB, 512 * KIB),
    "stm32f746-disco": ("cortex-m7", 216_000_000, 1 * MIB, 320 * KIB),
    "netduinoplus2": ("cortex-m4", 168_000_000, 1 * MIB, 192 * KIB),  # RAM: QEMU's 192 KiB
    "lm3s6965evb": ("cortex-m3", 50_000_000, 256 * KIB, 64 * KIB),
    "hifive1": ("sifive-e31", 16_000_000, 4 * MIB - 64 * KIB, 16 * KIB),
    "mps2-an386": ("cortex-m4", 25_000_000, 4 * MIB, 4 * MIB),
    "mps2-an500": ("cortex-m7", 25_000_000, 4 * MIB, 4 * MIB),
    "mps2-an505": ("cortex-m33", 20_000_000, 4 * MIB, 4 * MIB),
}


@pytest.mark.parametrize("board_id", sorted(FACTS))
def test_memory_and_clock_facts(board_id: str) -> None:
    core, clock, flash, ram = FACTS[board_id]
    b = load_board(board_id)
    assert (b.core, b.clock_hz) == (core, clock)
    assert _physical(b.flash.size, b.flash.provided) == flash
    assert _physical(b.ram.size, b.ram.provided) == ram


def test_specific_facts() -> None:
    boards = _by_id()
    assert boards["microbit"].ram.size == 16 * KIB and boards["microbit"].ram.origin == 0x2000_0000
    assert boards["nucleo-l4r5zi"].clock_hz == 120_000_000
    assert boards["nucleo-l4r5zi"].flash.origin == 0x0800_0000
    assert boards["nucleo-l4r5zi"].uart.instance == "LPUART1"  # the ST-LINK VCP on Nucleo-144 L4R5
    assert boards["netduinoplus2"].ram.size == 128 * KIB  # the real chip's contiguous SRAM
    assert boards["pico"].flash.external and boards["pico"].flash.origin == 0x1000_0000
    assert boards["nano33ble"].flash.origin == 0x1_0000  # after the Arduino boot loader
    assert boards["hifive1"].flash.origin == 0x2001_0000
    assert boards["mps2-an505"].flash.origin == 0x1000_0000  # Secure alias (boots Secure)
    assert boards["esp32-s3"].toolchain.packages == ()  # not in Debian: builds unavailable here
    assert boards["esp32-s3"].toolchain.install_note


ISA = {
    "rpi4": {"neon", "fpu", "fpu-dp", "crc"},
    "rpi5": {"neon", "fpu", "fpu-dp", "crc", "dotprod", "fp16"},
    "rpi3-32bit": {"neon", "fpu", "fpu-dp", "dsp"},
    "mps2-an386": {"dsp", "fpu"},
    "mps2-an500": {"dsp", "fpu", "fpu-dp"},
    "mps2-an505": {"dsp", "fpu"},
    "stm32f746-disco": {"dsp", "fpu"},  # FPv5-SP: no double precision, unlike the AN500's M7
    "microbit": set(),
    "pico": set(),
    "lm3s6965evb": set(),
    "hifive1": {"rv-m", "rv-a", "rv-c"},
}


@pytest.mark.parametrize("board_id", sorted(ISA))
def test_isa_features(board_id: str) -> None:
    assert set(load_board(board_id).features) == ISA[board_id]


# Feature -> predicate on the compiler's predefined macros.
FEATURE_MACROS: dict[str, Callable[[dict[str, str]], bool]] = {
    "dsp": lambda m: "__ARM_FEATURE_DSP" in m,
    "fpu": lambda m: "__ARM_FP" in m or "__riscv_flen" in m,
    "fpu-dp": lambda m: bool(int(m.get("__ARM_FP", "0"), 0) & 8) or m.get("__riscv_flen") == "64",
    "neon": lambda m: "__ARM_NEON" in m,
    "crc": lambda m: "__ARM_FEATURE_CRC32" in m,
    "dotprod": lambda m: "__ARM_FEATURE_DOTPROD" in m,
    "fp16": lambda m: "__ARM_FEATURE_FP16_VECTOR_ARITHMETIC" in m,
    "mve": lambda m: "__ARM_FEATURE_MVE" in m,
    "rv-m": lambda m: "__riscv_mul" in m,
    "rv-a": lambda m: "__riscv_atomic" in m,
    "rv-c": lambda m: "__riscv_compressed" in m,
}
ARCH_MACROS = {
    "armv6-m": "__ARM_ARCH_6M__", "armv7-m": "__ARM_ARCH_7M__", "armv7e-m": "__ARM_ARCH_7EM__",
    "armv8-m.main": "__ARM_ARCH_8M_MAIN__", "armv7-a": "__ARM_ARCH_7A__", "aarch64": "__aarch64__",
    "rv32imac": "__riscv",
}
BUILDABLE = [p.stem for p in BOARD_FILES if tomllib.loads(p.read_text())["toolchain"]["packages"]]


def _require_tool(name: str, packages: tuple[str, ...]) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not on PATH; install the Debian packages: {' '.join(packages)}"
    return path


def _macros(board: Board) -> dict[str, str]:
    cc = _require_tool(board.toolchain.cc, board.toolchain.packages)
    out = subprocess.run([cc, *board.toolchain.cflags, "-dM", "-E", "-x", "c", "-"], input="",
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return dict(re.findall(r"^#define (\S+) ?(.*)$", out, flags=re.M))


@pytest.mark.cross
@pytest.mark.parametrize("board_id", BUILDABLE)
def test_features_match_what_the_compiler_flags_enable(board_id: str) -> None:
    board = load_board(board_id)
    macros = _macros(board)
    assert ARCH_MACROS[board.arch] in macros, f"{board.toolchain.cflags} do not target {board.arch}"
    for feature, present in FEATURE_MACROS.items():
        assert present(macros) == (feature in board.features), (
            f"{board_id}: feature {feature!r} listed={feature in board.features} but the flags "
            f"{' '.join(board.toolchain.cflags)} say {present(macros)}"
        )
    if board.family == "cortex-m":
        assert macros.get("__ARM_ARCH_PROFILE") == "77"  # 'M'


# --------------------------------------------------------------------------------------------
# Emulation
# --------------------------------------------------------------------------------------------

EMULATED = [b.id for b in list_boards() if b.emulator is not None]
SYSTEM_EMULATED = [i for i in EMULATED if load_board(i).emulator.mode == "system"]  # type: ignore[union-attr]
USER_EMULATED = [i for i in EMULATED if i not in SYSTEM_EMULATED]


@functools.cache
def _qemu_help(binary: str, what: str) -> frozenset[str]:
    # qemu-arm exits with status 1 after printing its CPU list, so the status is not checked.
    out = subprocess.run([binary, what, "help"], capture_output=True, text=True, timeout=60).stdout
    return frozenset(line.split()[0] for line in out.splitlines() if line.strip()
                     and not line.startswith(("Available", "Supported")))


@pytest.mark.qemu
@pytest.mark.parametrize("board_id", EMULATED)
def test_emulated_board_exists_in_installed_qemu_and_compiler_is_installed(board_id: str) -> None:
    board = load_board(board_id)
    emu = board.emulator
    assert emu is not None
    _require_tool(emu.binary, emu.packages)
    if emu.mode == "system":
        assert emu.machine in _qemu_help(emu.binary, "-M"), f"{emu.binary} has no machine {emu.machine}"
    else:
        assert emu.cpu in _qemu_help(emu.binary, "-cpu"), f"{emu.binary} has no CPU {emu.cpu}"
    _require_tool(board.toolchain.cc, board.toolchain.packages)


# A probe firmware for the system-emulated boards: linked at the board's flash origin with its
# stack at the top of the board's RAM, it prints the board timer's ticks over 2,000,000
# instructions on the board's UART, then exits through semihosting.  C is kept minimal: a
# vector table (Arm) or entry stub (RISC-V), a TX-only UART per kind, one timer read per kind.
PROBE_C = r"""
#include <stdint.h>
#define REG(a) (*(volatile uint32_t *)(a))
#define SPIN_ITERATIONS 1000000u  /* two instructions each */

#if defined(__riscv)
__asm__(".section .text.entry\n.globl _start\n_start:\n la sp, __stack_top\n call main\n"
        "1: j 1b\n");
__asm__(".text\n.globl spin\nspin:\n1: addi a0, a0, -1\n bnez a0, 1b\n ret\n");
static void semihost_exit(void) {
  register uint32_t a0 __asm__("a0") = 0x18u, a1 __asm__("a1") = 0x20026u;
  __asm__ volatile(".option push\n.option norvc\n slli x0, x0, 0x1f\n ebreak\n srai x0, x0, 7\n"
                   ".option pop\n" : "+r"(a0) : "r"(a1) : "memory");
}
#else
extern uint32_t __stack_top;
int main(void);
static void reset_handler(void) { main(); for (;;) {} }
__attribute__((section(".vectors"), used))
static const void *const vectors[16] = {&__stack_top, (const void *)reset_handler};
__asm__(".syntax unified\n.text\n.thumb_func\n.globl spin\nspin:\n1: subs r0, #1\n bne 1b\n"
        " bx lr\n");
static void semihost_exit(void) {
  register uint32_t r0 __asm__("r0") = 0x18u, r1 __asm__("r1") = 0x20026u;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
}
#endif
void spin(uint32_t n);

static void uart_init(void) {
#if defined(UART_CMSDK)
  REG(UART_BASE + 0x08) = 1u;                          /* CTRL.TXEN */
#elif defined(UART_STM32_USART)
  REG(UART_BASE + 0x0C) = (1u << 13) | (1u << 3);      /* CR1: UE | TE */
#elif defined(UART_NRF51_UART)
  REG(UART_BASE + 0x500) = 4u;                         /* ENABLE */
  REG(UART_BASE + 0x008) = 1u;                         /* TASKS_STARTTX */
#elif defined(UART_PL011)
  REG(UART_BASE + 0x30) = 0x101u;                      /* UARTCR: UARTEN | TXE */
#elif defined(UART_SIFIVE)
  REG(UART_BASE + 0x08) = 1u;                          /* txctrl.txen */
#else
#error "no probe UART for this kind"
#endif
}

static void uart_putc(char c) {
#if defined(UART_CMSDK)
  while (REG(UART_BASE + 0x04) & 1u) {}                /* STATE.TXFULL */
  REG(UART_BASE) = (uint8_t)c;
#elif defined(UART_STM32_USART)
  while (!(REG(UART_BASE) & (1u << 7))) {}             /* SR.TXE */
  REG(UART_BASE + 0x04) = (uint8_t)c;
#elif defined(UART_NRF51_UART)
  REG(UART_BASE + 0x51C) = (uint8_t)c;                 /* TXD */
  while (!REG(UART_BASE + 0x11C)) {}                   /* EVENTS_TXDRDY */
  REG(UART_BASE + 0x11C) = 0u;
#elif defined(UART_PL011)
  while (REG(UART_BASE + 0x18) & (1u << 5)) {}         /* FR.TXFF */
  REG(UART_BASE) = (uint8_t)c;
#elif defined(UART_SIFIVE)
  while (REG(UART_BASE) & 0x80000000u) {}              /* txdata.full */
  REG(UART_BASE) = (uint8_t)c;
#endif
}

#if defined(TIMER_SYSTICK)
static void timer_start(void) {
  REG(0xE000E010) = 0u; REG(0xE000E014) = 0xFFFFFFu; REG(0xE000E018) = 0u; REG(0xE000E010) = 5u;
  spin(100u);  /* let the counter reload from 0 */
}
static uint32_t timer_read(void) { return REG(0xE000E018); }
static uint32_t elapsed(uint32_t a, uint32_t b) { return (a - b) & 0xFFFFFFu; }  /* counts down */
#elif defined(TIMER_NRF_TIMER)
static void timer_start(void) {
  REG(TIMER_BASE + 0x504) = 0u; REG(TIMER_BASE + 0x508) = 3u; REG(TIMER_BASE + 0x510) = 0u;
  REG(TIMER_BASE + 0x000) = 1u;                        /* 32-bit timer, prescaler 0, START */
}
static uint32_t timer_read(void) { REG(TIMER_BASE + 0x040) = 1u; return REG(TIMER_BASE + 0x540); }
static uint32_t elapsed(uint32_t a, uint32_t b) { return b - a; }
#elif defined(TIMER_RISCV_MCYCLE)
static void timer_start(void) {}
static uint32_t timer_read(void) { uint32_t v; __asm__ volatile("csrr %0, mcycle" : "=r"(v)); return v; }
static uint32_t elapsed(uint32_t a, uint32_t b) { return b - a; }
#else
#error "no probe timer for this kind"
#endif

int main(void) {
#if defined(__ARM_FP) && defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'
  REG(0xE000ED88) |= 0xFu << 20;                       /* CPACR: enable CP10/CP11 */
#endif
  char text[24];
  int n = 0;
  uart_init();
  timer_start();
  uint32_t a = timer_read();
  spin(SPIN_ITERATIONS);
  uint32_t ticks = elapsed(a, timer_read());
  do { text[n++] = (char)('0' + ticks % 10u); ticks /= 10u; } while (ticks);
  for (const char *p = "ticks="; *p; ++p) uart_putc(*p);
  while (n) uart_putc(text[--n]);
  uart_putc('\n');
  semihost_exit();
  return 0;
}
"""

PROBE_LD = """\
MEMORY {{
  FLASH (rx) : ORIGIN = {flash_origin:#x}, LENGTH = {flash_size:#x}
  RAM (rwx) : ORIGIN = {ram_origin:#x}, LENGTH = {ram_size:#x}
}}
SECTIONS {{
  .text : {{ KEEP(*(.vectors)) KEEP(*(.text.entry)) *(.text*) *(.rodata*) *(.srodata*) }} > FLASH
  .bss (NOLOAD) : {{ *(.bss*) *(.sbss*) *(COMMON) }} > RAM
  __stack_top = ORIGIN(RAM) + LENGTH(RAM);
}}
"""
PROBE_INSTRUCTIONS = 2_000_000


def _build_probe(board: Board, tmp: Path) -> Path:
    assert board.flash.origin is not None and board.ram.origin is not None
    ld = tmp / "probe.ld"
    ld.write_text(PROBE_LD.format(flash_origin=board.flash.origin, flash_size=board.flash.size,
                                  ram_origin=board.ram.origin, ram_size=board.ram.size))
    src = tmp / "probe.c"
    src.write_text(PROBE_C)
    defines = [f"-DUART_{board.uart.kind.upper().replace('-', '_')}", f"-DUART_BASE={board.uart.base:#x}u",
               f"-DTIMER_{board.timer.kind.upper().replace('-', '_')}"]
    if board.timer.base is not None:
        defines.append(f"-DTIMER_BASE={board.timer.base:#x}u")
    elf = tmp / "probe.elf"
    tc = board.toolchain
    cmd = [_require_tool(tc.cc, tc.packages), *tc.cflags, "-O1", "-ffreestanding", *defines,
           *tc.ldflags, "-nostartfiles", "-T", str(ld), str(src), "-o", str(elf)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    return elf


@pytest.mark.qemu
@pytest.mark.cross
@pytest.mark.parametrize("board_id", SYSTEM_EMULATED)
def test_probe_boots_prints_on_uart_and_timer_rate_matches(board_id: str, tmp_path: Path) -> None:
    board = load_board(board_id)
    emu = board.emulator
    assert emu is not None and emu.icount_shift is not None and emu.timer_hz is not None
    elf = _build_probe(board, tmp_path)
    cmd = [_require_tool(emu.binary, emu.packages), "-M", emu.machine_arg or "", *emu.args,
           "-display", "none", "-monitor", "none", "-serial", "stdio",
           "-icount", f"shift={emu.icount_shift}", "-kernel", str(elf)]
    if emu.semihosting:
        cmd += ["-semihosting-config", "enable=on,target=native"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"
    match = re.search(r"ticks=(\d+)", done.stdout)
    assert match, f"nothing on {board.uart.instance} at {board.uart.base:#x}: {done.stdout!r}"
    instructions = emu.instructions(int(match.group(1)))
    assert instructions == pytest.approx(PROBE_INSTRUCTIONS, rel=0.005), (
        f"{board.timer.kind} ticks imply {instructions:,.0f} instructions, expected "
        f"{PROBE_INSTRUCTIONS:,}: timer_hz or icount_shift is wrong"
    )


HELLO_C = r"""
#include <stdio.h>
#include <time.h>
int main(void) {
  struct timespec t;
  if (clock_gettime(CLOCK_MONOTONIC, &t) != 0) return 2;
  puts("hello from the board");
  return 0;
}
"""
SDOT_C = r"""
int main(void) {
  __attribute__((aligned(16))) int acc[4] = {0};
  __asm__ volatile("movi v1.16b, #2\n movi v2.16b, #3\n ld1 {v0.4s}, [%0]\n"
                   "sdot v0.4s, v1.16b, v2.16b\n st1 {v0.4s}, [%0]\n"
                   :: "r"(acc) : "v0", "v1", "v2", "memory");
  return acc[0] == 24 ? 0 : 1;
}
"""


def _user_run(board: Board, tmp: Path, source: str, extra_flags: list[str], name: str,
              use_board_cflags: bool = True) -> subprocess.CompletedProcess[str]:
    emu, tc = board.emulator, board.toolchain
    assert emu is not None and emu.cpu is not None
    src = tmp / f"{name}.c"
    src.write_text(source)
    exe = tmp / name
    cflags = list(tc.cflags) if use_board_cflags else []
    subprocess.run([_require_tool(tc.cc, tc.packages), *cflags, *extra_flags, "-O2", str(src),
                    *tc.ldflags, "-o", str(exe)], check=True, capture_output=True, timeout=120)
    return subprocess.run([_require_tool(emu.binary, emu.packages), "-cpu", emu.cpu, str(exe)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.qemu
@pytest.mark.cross
@pytest.mark.parametrize("board_id", USER_EMULATED)
def test_linux_profile_program_runs_under_its_emulated_cpu(board_id: str, tmp_path: Path) -> None:
    board = load_board(board_id)
    done = _user_run(board, tmp_path, HELLO_C, [], "hello")
    assert done.returncode == 0 and "hello from the board" in done.stdout, done.stderr


@pytest.mark.qemu
@pytest.mark.cross
@pytest.mark.parametrize("board_id", [i for i in USER_EMULATED if load_board(i).arch == "aarch64"])
def test_dotprod_feature_matches_the_emulated_cpu(board_id: str, tmp_path: Path) -> None:
    """SDOT must run on a board listing dotprod and trap (SIGILL) on one that does not."""
    board = load_board(board_id)
    done = _user_run(board, tmp_path, SDOT_C, ["-march=armv8.2-a+dotprod"], "sdot",
                     use_board_cflags=False)
    assert (done.returncode == 0) == board.has("dotprod"), (done.returncode, done.stderr)


# --------------------------------------------------------------------------------------------
# Schema: every kind of mistake is refused, naming the file and the key
# --------------------------------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, str)):
        return json.dumps(v)  # a JSON string of printable text is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def dump_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for the test's board files (tables, arrays of tables, scalars)."""
    def is_tables(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items()
             if not isinstance(v, dict) and not is_tables(v)]
    for k, v in data.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            lines += ["", f"[{name}]", dump_toml(v, name)]
        elif is_tables(v):
            for item in v:
                lines += ["", f"[[{name}]]", dump_toml(item, name)]
    return "\n".join(lines)


def _baseline(board_id: str = "mps2-an386") -> dict[str, Any]:
    return tomllib.loads((BOARD_DIR / f"{board_id}.toml").read_text())


def _write(tmp: Path, data: dict[str, Any], stem: str | None = None) -> Path:
    path = tmp / f"{stem or data.get('id', 'board')}.toml"
    path.write_text(dump_toml(data))
    return path


@pytest.mark.parametrize("board_id", ["mps2-an386", "hifive1", "stm32f746-disco", "rpi5"])
def test_dumped_baseline_loads_identically(board_id: str, tmp_path: Path) -> None:
    """The mutation tests below start from these; a writer bug must not make them pass."""
    assert load_board(_write(tmp_path, _baseline(board_id))) == load_board(board_id)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        d[last] = value
    return apply


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def apply(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            d = d[p]
        del d[last]
    return apply


def _runners(*runners: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return _set("runner", [dict(r) for r in runners])


QEMU = {"kind": "qemu-system"}
# (name, mutation, key the error must name, text the error must contain)
MISTAKES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("unknown top-level key", _set("colour", "red"), "colour", "unknown key"),
    ("unknown nested key", _set("memory.ram.sise", 4), "memory.ram.sise", "unknown key"),
    ("missing key", _delete("clock_hz"), "clock_hz", "missing required key"),
    ("missing nested key", _delete("toolchain.cflags"), "toolchain.cflags", "missing required key"),
    ("missing table", _delete("uart"), "uart", "missing required key"),
    ("string for int", _set("clock_hz", "25 MHz"), "clock_hz", "expected an integer"),
    ("bool for int", _set("memory.flash.size", True), "memory.flash.size", "expected an integer"),
    ("int for string", _set("core", 4), "core", "expected a string"),
    ("string for list", _set("features", "dsp"), "features", "expected a list of strings"),
    ("table for array", _set("memory.extra", {"name": "x"}), "memory.extra", "array of tables"),
    ("zero size", _set("memory.flash.size", 0), "memory.flash.size", ">= 1"),
    ("negative reserved", _set("memory.flash.reserved", -1), "memory.flash.reserved", ">= 0"),
    ("reserved = size", _set("memory.ram.reserved", 262_144), "memory.ram.reserved",
     "must be less than size"),
    ("stack > reserved", _set("memory.ram.stack", 20_000), "memory.ram.stack", "exceed reserved"),
    ("provided < size", _set("memory.flash.provided", 1024), "memory.flash.provided", "less than size"),
    ("beyond 32 bits", _set("memory.ram.origin", 0xFFFF_0000), "memory.ram.size", "32-bit"),
    ("unknown feature", _set("features", ["dsp", "fpu", "simd"]), "features", "unknown feature 'simd'"),
    ("misspelt feature", _set("features", ["dsp", "fpus"]), "features", "did you mean 'fpu'"),
    ("feature of another arch", _set("features", ["dsp", "fpu", "neon"]), "features",
     "not possible on armv7e-m"),
    ("duplicate feature", _set("features", ["dsp", "dsp"]), "features", "twice"),
    ("fpu-dp without fpu", _set("features", ["dsp", "fpu-dp"]), "features", "fpu-dp without fpu"),
    ("unknown arch", _set("arch", "armv9-m"), "arch", "unknown architecture"),
    ("unknown kind", _set("kind", "microcontroller"), "kind", "expected one of: mcu, linux, host"),
    ("family of another kind", _set("family", "linux"), "family", "runs on kind 'linux'"),
    ("bad id", _set("id", "MPS2 AN386"), "id", "lowercase"),
    ("unknown libc", _set("toolchain.libc", "musl"), "toolchain.libc", "unknown value 'musl'"),
    ("toolchain from nowhere", _set("toolchain.packages", []), "toolchain.install_note", "how to install"),
    ("unknown uart", _set("uart.kind", "usb-cdc"), "uart.kind", "unknown value 'usb-cdc'"),
    ("uart without base", _delete("uart.base"), "uart.base", "missing required key"),
    ("unknown timer", _set("timer.kind", "dwt"), "timer.kind", "unknown value 'dwt'"),
    ("unknown runner", _runners(QEMU, {"kind": "jlink"}), "runner[1].kind", "unknown value 'jlink'"),
    ("runner option missing", _runners(QEMU, {"kind": "pyocd"}), "runner[1].target",
     "missing required key"),
    ("runner option wrong type", _runners(QEMU, {"kind": "st-flash", "address": "0x08000000"}),
     "runner[1].address", "expected an integer"),
    ("a port in a board file", _runners(QEMU, {"kind": "pyocd", "target": "x", "port": "/dev/ttyACM0"}),
     "runner[1].port", "unknown key"),
    ("no runner", _runners(), "runner", "at least one"),
    ("emulator but no qemu runner", _runners({"kind": "st-flash", "address": 0x0800_0000}), "runner",
     "needs a qemu-system or qemu-user runner"),
    ("qemu runner without emulator", _delete("emulator"), "runner[0].kind", "needs an [emulator]"),
    ("runner mode mismatch", _runners({"kind": "qemu-user"}), "runner[0].kind", "does not match"),
    ("icount without timer rate", _delete("emulator.timer_hz"), "emulator.timer_hz", "go together"),
    ("not qemu", _set("emulator.binary", "renode"), "emulator.binary", "expected a QEMU program"),
    ("system emulator without machine", _delete("emulator.machine"), "emulator.machine",
     "missing required key"),
]


@pytest.mark.parametrize("mutate,key,text", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_mistakes_are_refused_naming_file_and_key(mutate: Callable[[dict[str, Any]], None], key: str,
                                                  text: str, tmp_path: Path) -> None:
    data = _baseline()
    mutate(data)
    path = _write(tmp_path, data, stem="mps2-an386")
    with pytest.raises(BoardFileError) as err:
        load_board(path)
    assert err.value.key == key
    assert str(path) in str(err.value) and key in str(err.value) and text in str(err.value)
    assert isinstance(err.value, BoardError)


def test_id_must_match_the_file_name(tmp_path: Path) -> None:
    path = _write(tmp_path, _baseline(), stem="my-board")
    with pytest.raises(BoardFileError, match=r"id 'mps2-an386' does not match the file name 'my-board'"):
        load_board(path)


def test_riscv_features_must_match_the_arch_letters(tmp_path: Path) -> None:
    data = _baseline("hifive1")
    data["features"] = ["rv-m", "rv-c"]
    with pytest.raises(BoardFileError, match=r"rv32imac implies exactly \['rv-a', 'rv-c', 'rv-m'\]"):
        load_board(_write(tmp_path, data))


def test_user_mode_emulator_must_pin_the_cpu(tmp_path: Path) -> None:
    data = _baseline("rpi5")
    del data["emulator"]["cpu"]
    with pytest.raises(BoardFileError, match=r"emulator\.cpu: missing required key"):
        load_board(_write(tmp_path, data))


def test_host_boards_need_no_clock_but_others_do(tmp_path: Path) -> None:
    data = _baseline("rpi4")
    data.update(id="host", kind="host", family="host", arch="native", features=[])
    del data["clock_hz"], data["emulator"]
    data["runner"] = [{"kind": "host"}]
    board = load_board(_write(tmp_path, data))
    assert board.clock_hz is None and not board.emulated and board.runner.kind == "host"
    data.update(id="linux-board", kind="linux", family="linux", arch="aarch64")
    with pytest.raises(BoardFileError, match="clock_hz: missing required key"):
        load_board(_write(tmp_path, data))


@pytest.mark.parametrize("text,problem", [
    ("id = ", "not valid TOML"),
    ("id = \"x\"\nid = \"y\"\n", "not valid TOML"),
    ("\x00\x01binary", "not valid TOML"),
])
def test_broken_toml_is_refused_with_the_file_name(text: str, problem: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(BoardFileError, match=problem) as err:
        load_board(path)
    assert str(path) in str(err.value)
