"""Run kernel calls on emulated Arm targets: one program per target, many calls per program.

The kernel test suite (``tests/test_kernels_simd.py``) and the kernel benchmark
(``bench/kernels.py``) describe each call as an :class:`XCall` — a lowered
:class:`~firmware_gen.lower.KernelCall` plus the concrete input arrays — and this module turns
a list of them into one C program for a target (:class:`XTarget`): every params struct, weight
and input as ``static const`` data (the compiler lays structs out, so nothing here depends on a
data model), one output arena with guard bytes, one scratch buffer.  The program runs the calls
in order and prints, per call, the output bytes in hex, the C ``…_scratch_bytes()`` value (the
twin of ``firmware_gen/lower.py``'s rule) and whether the guard bytes survived.

Targets.
* ``qemu-user``: a static Linux executable built with the board's toolchain and flags
  (``aarch64-linux-gnu-gcc -mcpu=cortex-a72`` …), run as ``qemu-aarch64 -cpu <board cpu>``.
* ``qemu-system``: a bare-metal image for the board's memory map (vector table, ``.data``/``.bss``
  set-up, semihosting output and exit), run as ``qemu-system-arm -M <machine> -icount shift=N``.

Instruction counts (deterministic; instructions, not cycles).
* ``qemu-system``: the board's timer brackets each call (SysTick on MPS2, TIMER0 on the
  micro:bit) under ``-icount shift=N``, so instructions = ticks · 1e9 / timer_hz / 2^N
  (``Emulator.instructions``), exactly repeatable.
* ``qemu-user`` has no instruction-count plugin here (Debian ships none), so the program runs
  *one* call between two marker functions with QEMU's translation log on
  (``-d in_asm,exec,nochain``): ``in_asm`` prints every translated block with its instructions,
  ``exec`` with ``nochain`` prints every execution of a block.  Instructions = sum over the
  executed blocks between the markers of their instruction counts, minus the same count for an
  empty call (the marker overhead).  Deterministic: the same binary gives the same count.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_gen.lower import ConstArray, KernelCall, Struct, TensorArg
from toolkit.boards import Board, load_board

KERNELS = Path(__file__).resolve().parent.parent / "firmware_gen" / "kernels"
INCLUDE, REF = KERNELS / "include", KERNELS / "ref"
GUARD = 16  # guard bytes on each side of every output
_CTYPES = {"int8_t": "int8", "uint8_t": "uint8", "int16_t": "int16", "uint16_t": "uint16",
           "int32_t": "int32", "uint32_t": "uint32", "float": "float32", "double": "float64"}


@dataclass(frozen=True)
class XTarget:
    """A variant on one emulated board."""

    id: str
    variant: str
    board_id: str

    @property
    def board(self) -> Board:
        return load_board(self.board_id)

    @property
    def kind(self) -> str:
        emu = self.board.emulator
        assert emu is not None, self.board_id
        return "qemu-user" if emu.mode == "user" else "qemu-system"

    def missing_tools(self) -> list[str]:
        b = self.board
        assert b.emulator is not None
        tools = [b.toolchain.cc, b.emulator.binary]
        return [t for t in tools if shutil.which(t) is None]


@dataclass(frozen=True)
class XCall:
    """One kernel call with its data: ``values`` holds every input tensor the call reads."""

    name: str
    call: KernelCall
    values: Mapping[int, np.ndarray] = field(repr=False)
    out_dtypes: Mapping[int, np.dtype] = field(repr=False)  # output tensor -> element type
    out_sizes: Mapping[int, int] = field(repr=False)  # output tensor -> elements

    @property
    def out_bytes(self) -> int:
        return sum(self.out_sizes[t] * np.dtype(self.out_dtypes[t]).itemsize
                   for t in self.call.output_tensors)


@dataclass
class XResult:
    outputs: dict[int, np.ndarray]
    scratch_bytes: int | None  # what the C scratch function said (None: kernel takes none)
    guards_ok: bool
    count: float | None = None  # instructions (when counted)


# ---------------------------------------------------------------------------------------------
# Declarations.

FORMAT_HEADERS = ("bf_binary.h", "bf_packed.h", "bf_sparse.h", "bf_lowrank.h")


def _cdef_region(header: Path) -> str:
    text = header.read_text()
    begin, end = text.index("/* BF_CDEF_BEGIN"), text.index("/* BF_CDEF_END */")
    region = text[text.index("\n", begin) + 1 : text.rindex("\n", 0, end)]
    return "\n".join(ln for ln in region.splitlines() if not ln.lstrip().startswith("#"))


def library_cdef() -> str:
    """cffi declarations of every kernel of the library: the test harness's cdef plus the
    format headers' sections it does not already hold."""
    import kernel_harness as kh

    text = kh.cdef_source()
    parts = [text]
    for h in FORMAT_HEADERS:
        region = _cdef_region(INCLUDE / h)
        first = re.search(r"}\s*(\w+)\s*;", region)
        if first is not None and not re.search(rf"\b{first.group(1)}\b", text):
            parts.append(region)
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------
# C source.


def _literal(ctype: str, v: float | int) -> str:
    if ctype == "double":
        return float(v).hex()
    if ctype == "float":
        return float(np.float32(v)).hex() + "f"
    iv = int(v)
    if ctype in ("int32_t",) and iv == -(2**31):
        return "(-2147483647 - 1)"
    return f"{iv}u" if ctype.startswith("uint") else str(iv)


def _array(name: str, ctype: str, values: Sequence[float | int] | np.ndarray) -> str:
    items = np.asarray(values).reshape(-1).tolist() if isinstance(values, np.ndarray) else values
    flat = [_literal(ctype, v) for v in items]
    body = ",".join(flat) if flat else "0"
    return f"static const {ctype} {name}[{max(len(flat), 1)}] BFX_ALIGN = {{{body}}};"


def _value(v: Any, name: str, out: list[str]) -> str:
    if isinstance(v, Struct):
        return "{" + ", ".join(f".{k} = {_value(x, f'{name}_{k}', out)}" for k, x in v.fields) + "}"
    if isinstance(v, ConstArray):
        out.append(_array(name, v.ctype, v.values))
        return name
    if isinstance(v, tuple):
        return "{" + ", ".join(str(int(x)) for x in v) + "}"
    if isinstance(v, float):
        return float(np.float32(v)).hex() + "f"
    return str(int(v))


def _call_source(i: int, x: XCall, decls: list[str]) -> tuple[str, str]:
    """(case function, scratch-check expression) of call i."""
    c = x.call
    fields = ", ".join(f".{k} = {_value(v, f'x{i}_{k}', decls)}" for k, v in c.params)
    decls.append(f"static const {c.params_type} x{i}_p = {{{fields}}};")
    argv = [f"&x{i}_p"]
    offset = GUARD
    for j, arg in enumerate(c.args):
        if not isinstance(arg, TensorArg):
            raise ValueError(f"{x.name}: pointer-list arguments are not supported here")
        if arg.tensor < 0:
            argv.append("NULL")
        elif arg.output:
            argv.append(f"({arg.ctype} *)(void *)(bfx_out + {offset})")
            offset += x.out_sizes[arg.tensor] * np.dtype(x.out_dtypes[arg.tensor]).itemsize + 2 * GUARD
        else:
            data = np.ascontiguousarray(x.values[arg.tensor])
            decls.append(_array(f"x{i}_a{j}", arg.ctype, data.reshape(-1)))
            argv.append(f"x{i}_a{j}")
    if c.takes_scratch:
        argv.append("bfx_scratch")
    fn = f"static void x{i}(void) {{ {c.symbol}({', '.join(argv)}); }}"
    check = f"(long){c.symbol}_scratch_bytes(&x{i}_p)" if c.takes_scratch else "-1L"
    return fn, check


_COMMON = r"""
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "bf_kernels.h"
#define BFX_ALIGN __attribute__((aligned(8)))
typedef struct { void (*fn)(void); long out_bytes; long scratch_bytes; } bfx_case;
static uint8_t bfx_out[BFX_OUT_BYTES] BFX_ALIGN;
static uint8_t bfx_scratch[BFX_SCRATCH_BYTES] BFX_ALIGN;
static void bfx_emit(const char *s);
static const char bfx_hex[] = "0123456789abcdef";
static void bfx_emit_num(char tag, long idx, long value) {
    char buf[64]; int n = 0, k; char digits[24]; int nd = 0;
    unsigned long v;
    buf[n++] = tag; buf[n++] = ' ';
    v = (unsigned long)idx; do { digits[nd++] = (char)('0' + v % 10u); v /= 10u; } while (v);
    while (nd) { buf[n++] = digits[--nd]; }
    buf[n++] = ' ';
    if (value < 0) { buf[n++] = '-'; v = (unsigned long)(-value); } else { v = (unsigned long)value; }
    do { digits[nd++] = (char)('0' + v % 10u); v /= 10u; } while (v);
    while (nd) { buf[n++] = digits[--nd]; }
    buf[n++] = '\n'; buf[n] = 0;
    (void)k;
    bfx_emit(buf);
}
static void bfx_emit_bytes(long idx, const uint8_t *p, long n) {
    char line[200]; long i = 0;
    while (i < n) {
        int k = 0; long j;
        line[k++] = 'R'; line[k++] = ' ';
        for (j = 0; j < 90 && i < n; ++j, ++i) {
            line[k++] = bfx_hex[p[i] >> 4]; line[k++] = bfx_hex[p[i] & 15];
        }
        line[k++] = '\n'; line[k] = 0;
        bfx_emit(line);
    }
    (void)idx;
}
static int bfx_guards(long n) {
    long i;
    for (i = 0; i < GUARD_BYTES; ++i) {
        if (bfx_out[i] != 0xA5 || bfx_out[GUARD_BYTES + n + i] != 0xA5) { return 0; }
    }
    return 1;
}
__attribute__((noinline)) void bfx_mark_begin(void) { __asm__ volatile("" ::: "memory"); }
__attribute__((noinline)) void bfx_mark_end(void) { __asm__ volatile("" ::: "memory"); }
static void bfx_nothing(void) { }
"""

# One output region (GUARD | out | GUARD per output tensor) — the guard check covers the first
# output's zone; kernels here have one output.
_RUN = r"""
static long bfx_run(long i, long *ticks) {
    long n = bfx_cases[i].out_bytes;
    uint32_t t0, t1;
    memset(bfx_out, 0xA5, (size_t)(n + 2 * GUARD_BYTES));
    memset(bfx_scratch, 0x5A, sizeof bfx_scratch);
    t0 = bfx_timer();
    bfx_mark_begin();
    bfx_cases[i].fn();
    bfx_mark_end();
    t1 = bfx_timer();
    *ticks = (long)(t1 - t0);
    return n;
}
static void bfx_report(long i, long ticks) {
    long n = bfx_cases[i].out_bytes;
    bfx_emit_num('C', i, bfx_cases[i].scratch_bytes);
    bfx_emit_num('G', i, bfx_guards(n));
    bfx_emit_num('T', i, ticks);
    bfx_emit_bytes(i, bfx_out + GUARD_BYTES, n);
    bfx_emit_num('E', i, n);
}
"""

_LINUX = r"""
#include <stdio.h>
#include <stdlib.h>
static void bfx_emit(const char *s) { fputs(s, stdout); }
static uint32_t bfx_timer(void) { return 0u; }
""", r"""
int main(int argc, char **argv) {
    long i, ticks;
    bfx_checks();
    if (argc > 1) {  /* count mode: one call (-1: the empty call) between the markers */
        long k = atol(argv[1]);
        if (k < 0) { bfx_mark_begin(); bfx_nothing(); bfx_mark_end(); return 0; }
        bfx_run(k, &ticks);
        bfx_report(k, 0);
        return 0;
    }
    for (i = 0; i < BFX_NCASES; ++i) { bfx_run(i, &ticks); bfx_report(i, 0); }
    fflush(stdout);
    return 0;
}
"""

_BARE = r"""
static int bfx_semihost(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}
static void bfx_emit(const char *s) { bfx_semihost(0x04, s); }
#if BFX_TIMER_SYSTICK
#define SYST ((volatile uint32_t *)0xE000E010u)
volatile uint32_t bfx_wraps;
void bfx_systick(void) { bfx_wraps++; }
static uint32_t bfx_timer(void) {
    uint32_t w, v;
    do { w = bfx_wraps; v = SYST[2]; } while (w != bfx_wraps);
    return w * 0x1000000u + (0xFFFFFFu - v);
}
static void bfx_timer_init(void) { SYST[0] = 0; SYST[1] = 0xFFFFFFu; SYST[2] = 0; SYST[0] = 7; }
#else
/* nRF51/52 TIMER0, 32-bit, prescaler 0; CAPTURE[0] then read CC[0]. */
#define NRF_TIMER ((volatile uint32_t *)BFX_TIMER_BASE)
void bfx_systick(void) { }
static uint32_t bfx_timer(void) { NRF_TIMER[0x40 / 4] = 1u; return NRF_TIMER[0x540 / 4]; }
static void bfx_timer_init(void) {
    NRF_TIMER[0x504 / 4] = 0u; NRF_TIMER[0x508 / 4] = 3u; NRF_TIMER[0x510 / 4] = 0u;
    NRF_TIMER[0x00C / 4] = 1u; NRF_TIMER[0x000 / 4] = 1u;
}
#endif
""", r"""
int main(void) {
    long i, ticks, empty;
    static const int32_t done[2] = {0x20026, 0};
    bfx_timer_init();
    bfx_checks();
    {   /* timer cost of an empty call, subtracted from every count */
        uint32_t t0 = bfx_timer(); bfx_mark_begin(); bfx_nothing(); bfx_mark_end();
        empty = (long)(bfx_timer() - t0);
    }
    bfx_emit_num('Z', 0, empty);
    for (i = 0; i < BFX_NCASES; ++i) { bfx_run(i, &ticks); bfx_report(i, ticks); }
    bfx_semihost(0x20, done);
    for (;;) { }
}
"""

_STARTUP = r"""
#include <stdint.h>
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);
void bfx_systick(void);
void bfx_hang(void) { for (;;) { } }
__attribute__((noreturn)) void bfx_reset(void) {
    uint32_t *s, *d;
    for (s = &_sidata, d = &_sdata; d < &_edata;) { *d++ = *s++; }
    for (d = &_sbss; d < &_ebss;) { *d++ = 0; }
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;  /* CPACR: enable the FPU */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    (void)main();
    for (;;) { }
}
typedef void (*bfx_vec)(void);
__attribute__((section(".isr_vector"), used)) static const bfx_vec bfx_vectors[16] = {
    (bfx_vec)&_estack, bfx_reset, bfx_hang, bfx_hang, bfx_hang, bfx_hang, bfx_hang, 0, 0, 0, 0,
    bfx_hang, bfx_hang, 0, bfx_hang, bfx_systick};
"""

_LINKER = """
MEMORY {{ FLASH (rx) : ORIGIN = {flash_origin:#x}, LENGTH = {flash_size}
         RAM (rwx) : ORIGIN = {ram_origin:#x}, LENGTH = {ram_size} }}
ENTRY(bfx_reset)
_estack = ORIGIN(RAM) + LENGTH(RAM);
SECTIONS {{
  .isr_vector : {{ KEEP(*(.isr_vector)) }} > FLASH
  .text : {{ *(.text .text.*) *(.rodata .rodata.*) . = ALIGN(8); }} > FLASH
  .ARM.exidx : {{ *(.ARM.exidx*) }} > FLASH
  .data : {{ _sdata = .; *(.data .data.*) . = ALIGN(4); _edata = .; }} > RAM AT> FLASH
  _sidata = LOADADDR(.data);
  .bss (NOLOAD) : {{ _sbss = .; *(.bss .bss.* COMMON) . = ALIGN(4); _ebss = .; }} > RAM
  ASSERT(_ebss + {stack} <= _estack, "test data does not fit the board's RAM")
}}
"""


def program_source(calls: Sequence[XCall], target: XTarget) -> str:
    decls: list[str] = []
    fns, rows = [], []
    for i, x in enumerate(calls):
        fn, _ = _call_source(i, x, decls)
        fns.append(fn)
        rows.append(f"    {{x{i}, {x.out_bytes}L, 0L}},")
    out_max = max(x.out_bytes + 2 * GUARD * max(1, len(x.call.output_tensors)) for x in calls)
    scratch_max = max([x.call.scratch_bytes for x in calls] + [8])
    checks = "\n".join(
        f"    bfx_cases[{i}].scratch_bytes = {_call_source(i, x, [])[1]};" for i, x in enumerate(calls))
    board = target.board
    head = [f"#define BFX_OUT_BYTES {out_max}", f"#define BFX_SCRATCH_BYTES {scratch_max}",
            f"#define GUARD_BYTES {GUARD}", f"#define BFX_NCASES {len(calls)}"]
    if target.kind == "qemu-system":
        systick = board.timer.kind == "systick"
        head.append(f"#define BFX_TIMER_SYSTICK {int(systick)}")
        if not systick:
            head.append(f"#define BFX_TIMER_BASE {board.timer.base:#x}u")
    table = "static bfx_case bfx_cases[BFX_NCASES] = {\n" + "\n".join(rows) + "\n};\n"
    # The C scratch functions are asked once, before any call (main runs bfx_checks first).
    init = "static void bfx_checks(void) {\n" + checks + "\n}\n"
    platform, main = _LINUX if target.kind == "qemu-user" else _BARE
    return "\n".join([*head, _COMMON, *decls, *fns, table, init, platform, _RUN, main])


# ---------------------------------------------------------------------------------------------
# Build.


def variant_sources(variant: str, families: Sequence[str]) -> list[Path]:
    """The family sources a build of ``variant`` compiles (``ref`` for families it lacks)."""
    out = []
    for fam in sorted(set(families)):
        own = KERNELS / variant / f"{fam}.c"
        out.append(own if own.is_file() else REF / f"{fam}.c")
    return out


def _linker_script(board: Board) -> str:
    flash, ram = board.flash, board.ram
    assert flash.origin is not None and ram.origin is not None
    return _LINKER.format(flash_origin=flash.origin, flash_size=flash.provided or flash.size,
                          ram_origin=ram.origin, ram_size=ram.provided or ram.size,
                          stack=max(ram.stack, 1024))


def build(target: XTarget, calls: Sequence[XCall], workdir: Path, opt: str = "-O2") -> Path:
    """Compile the program for ``target``; returns the executable/ELF (cached by content)."""
    board = target.board
    src = program_source(calls, target)
    sources = variant_sources(target.variant, [x.call.family for x in calls])
    flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", opt, *board.toolchain.cflags,
             f"-I{INCLUDE}", f"-I{KERNELS / target.variant}", f"-I{REF}"]
    digest = hashlib.sha256(src.encode())
    for f in sorted(p for p in KERNELS.glob("*/*") if p.suffix in (".c", ".h")):
        digest.update(f.name.encode() + f.read_bytes())
    digest.update(" ".join([*flags, target.id]).encode())
    out_dir = workdir / f"{target.id.replace('@', '-')}-{digest.hexdigest()[:16]}"
    exe = out_dir / "prog.elf"
    if exe.exists():
        return exe
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "main.c").write_text(src)
    extra: list[str] = []
    if target.kind == "qemu-user":
        link = ["-static"]
    else:
        (out_dir / "startup.c").write_text(_STARTUP)
        (out_dir / "link.ld").write_text(_linker_script(board))
        extra = [str(out_dir / "startup.c")]
        link = ["-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections",
                "-ffunction-sections", "-fdata-sections", "-T", str(out_dir / "link.ld")]
    tmp = out_dir / "prog.tmp"
    cmd = [board.toolchain.cc, *flags, str(out_dir / "main.c"), *extra, *map(str, sources), *link,
           "-o", str(tmp), "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"cross build for {target.id} failed:\n{' '.join(cmd)}\n{proc.stderr[-6000:]}")
    tmp.replace(exe)
    return exe


# ---------------------------------------------------------------------------------------------
# Run.


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _qemu_argv(target: XTarget, exe: Path) -> list[str]:
    emu = target.board.emulator
    assert emu is not None
    if emu.mode == "user":
        assert emu.cpu is not None
        return [emu.binary, "-cpu", emu.cpu, str(exe)]
    assert emu.machine_arg is not None and emu.icount_shift is not None
    return [emu.binary, "-M", emu.machine_arg, "-display", "none", "-monitor", "none",
            "-serial", "null", "-semihosting-config", "enable=on,target=native",
            "-icount", f"shift={emu.icount_shift}", "-kernel", str(exe)]


def _run(argv: Sequence[str], timeout: float) -> str:
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_die_with_parent)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{err[-3000:]}")
    # QEMU writes semihosting console output to stderr, a Linux program to stdout.
    return out + err


def _parse(text: str, calls: Sequence[XCall], target: XTarget) -> list[XResult]:
    results: list[XResult] = []
    hexbuf: list[str] = []
    scratch = guards = ticks = 0
    empty = 0
    for line in text.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "R":
            hexbuf.append(rest.strip())
        elif tag in ("C", "G", "T", "E", "Z"):
            _, value = rest.split()
            v = int(value)
            if tag == "Z":
                empty = v
            elif tag == "C":
                scratch, hexbuf = v, []
            elif tag == "G":
                guards = v
            elif tag == "T":
                ticks = v
            else:
                x = calls[len(results)]
                raw = bytes.fromhex("".join(hexbuf))
                if len(raw) != v:
                    raise RuntimeError(f"{target.id} {x.name}: {len(raw)} output bytes, expected {v}")
                results.append(XResult(_split_outputs(x, raw), None if scratch < 0 else scratch,
                                       bool(guards), _instructions(target, ticks - empty)))
    if len(results) != len(calls):
        raise RuntimeError(f"{target.id}: {len(results)} of {len(calls)} calls reported:\n{text[-2000:]}")
    return results


def _instructions(target: XTarget, ticks: int) -> float | None:
    emu = target.board.emulator
    if emu is None or emu.mode == "user" or emu.icount_shift is None or emu.timer_hz is None:
        return None
    return emu.instructions(ticks)


def _split_outputs(x: XCall, raw: bytes) -> dict[int, np.ndarray]:
    out, off = {}, 0
    for t in x.call.output_tensors:
        dt = np.dtype(x.out_dtypes[t])
        n = x.out_sizes[t] * dt.itemsize
        out[t] = np.frombuffer(raw[off : off + n], dtype=dt).copy()
        off += n + 2 * GUARD
    return out


def run(target: XTarget, calls: Sequence[XCall], workdir: Path, timeout: float = 600) -> list[XResult]:
    """Build and run every call on ``target``; one result per call, in order (with instruction
    counts on qemu-system targets)."""
    exe = build(target, calls, workdir)
    return _parse(_run(_qemu_argv(target, exe), timeout), calls, target)


# ---------------------------------------------------------------------------------------------
# User-mode instruction counts from QEMU's translation log.


_TRACE = re.compile(r"Trace \d+: 0x[0-9a-f]+ \[[0-9a-f]+/([0-9a-f]+)/[0-9a-f]+/[0-9a-f]+\] ?(\S*)")
_INSN = re.compile(r"^0x([0-9a-f]+):")


class _LogCounter:
    """Streaming parser of a ``-d in_asm,exec,nochain`` log.

    Blocks are keyed by the address of their first instruction: an ``IN:`` section lists every
    instruction of a block when it is translated, and every ``Trace`` line is one execution of a
    block.  Between ``bfx_mark_begin`` and ``bfx_mark_end`` the sizes of executed blocks add up."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.block: list[int] | None = None
        self.counting = False
        self.total = 0
        self.pairs: list[int] = []

    def feed(self, line: str) -> None:
        if self.block is not None:
            m = _INSN.match(line)
            if m is not None:
                self.block.append(int(m.group(1), 16))
                return
            if self.block:
                self.sizes[self.block[0]] = len(self.block)
            self.block = None
        if line.startswith("IN:"):
            self.block = []
        elif line.startswith("Trace "):
            m = _TRACE.match(line)
            if m is not None:
                self._executed(int(m.group(1), 16), m.group(2))

    def _executed(self, pc: int, name: str) -> None:
        if name == "bfx_mark_begin":
            self.counting, self.total = True, 0
        elif name == "bfx_mark_end" and self.counting:
            self.pairs.append(self.total)
            self.counting = False
        elif self.counting:
            if pc not in self.sizes:
                raise RuntimeError(f"block at {pc:#x} executed before it was translated")
            self.total += self.sizes[pc]


def _tb_log_counts(lines: Iterator[str], pairs: int) -> list[int]:
    """Instructions between each of the first ``pairs`` marker pairs of a translation log."""
    counter = _LogCounter()
    for line in lines:
        counter.feed(line)
        if len(counter.pairs) == pairs:
            return counter.pairs
    raise RuntimeError(f"only {len(counter.pairs)} of {pairs} marker pairs ran")


def _log_run(cmd: Sequence[str], pairs: int, timeout: float) -> list[int]:
    """Run QEMU with its translation log in a FIFO and count while it runs."""
    with tempfile.TemporaryDirectory(prefix="bfx-log-") as d:
        fifo = Path(d) / "log"
        os.mkfifo(fifo)
        argv = [cmd[0], "-d", "in_asm,exec,nochain", "-D", str(fifo), *cmd[1:]]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
        try:
            with open(fifo, encoding="utf-8", errors="replace") as log:
                counts = _tb_log_counts(iter(log), pairs)
                for _ in log:  # drain, so that QEMU can finish
                    pass
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return counts


def user_count(target: XTarget, calls: Sequence[XCall], index: int, workdir: Path,
               timeout: float = 900) -> int:
    """Instructions of call ``index`` on a qemu-user target (the translation-log method), minus
    the empty call's (the markers' own instructions)."""
    exe = build(target, calls, workdir)
    argv = _qemu_argv(target, exe)
    return _log_run([*argv, str(index)], 1, timeout)[0] - _log_run([*argv, "-1"], 1, timeout)[0]


def system_log_count(target: XTarget, calls: Sequence[XCall], workdir: Path, timeout: float = 900) -> int:
    """The first call on a qemu-system target counted from the translation log (the bare-metal
    program brackets the empty call first, then every call): a cross-check of the timer."""
    exe = build(target, calls, workdir)
    empty, first = _log_run(_qemu_argv(target, exe), 2, timeout)
    return first - empty
