"""Run kernel calls on the emulated Cortex-M4 (``mps2-an386`` under ``qemu-system-arm``).

:func:`run_on_m4` writes one bare-metal program — start-up code, a linker script for QEMU's
memory map, and a ``main`` that runs each :class:`~firmware_gen.lower.KernelCall` with the very
params the code generator would emit (designated initializers of ``static const`` structs and
arrays) — cross-compiles it with ``arm-none-eabi-gcc -O2 -mcpu=cortex-m4`` together with the
given kernel sources, and runs it under ``-icount shift=6``.  Each call runs twice; the second
run is bracketed by SysTick reads (25 MHz, overflows counted by its interrupt), so with
``-icount shift=6`` (64 ns per instruction, 40 ns per tick) ``instructions = ticks · 40 / 64``
— deterministic instruction counts, not cycles.  The program prints the counts and every output
byte over semihosting and exits with ``SYS_EXIT_EXTENDED``; QEMU is started with a parent-death
signal and killed in ``finally``, so no emulator outlives the caller.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from firmware_gen.lower import ConstArray, KernelCall, Struct, TensorArg
from toolkit.model.ir import Graph

M4_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard")
TICK_NS, INSN_NS = 40.0, 64.0  # SysTick at 25 MHz; -icount shift=6
_CTYPES = {"int8": "int8_t", "int32": "int32_t", "uint8": "uint8_t", "int16": "int16_t"}


def available() -> bool:
    return shutil.which("arm-none-eabi-gcc") is not None and shutil.which("qemu-system-arm") is not None


@dataclass(frozen=True)
class M4Call:
    """One kernel invocation: ``call`` on ``graph`` with ``x`` as its (single) non-constant input."""

    name: str
    call: KernelCall
    graph: Graph
    x: np.ndarray


@dataclass(frozen=True)
class M4Result:
    instructions: float
    output: np.ndarray  # int8, the output tensor's bytes


_STARTUP = r"""
#include <stdint.h>
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);
volatile uint32_t bf_systick_wraps;
void bf_reset(void);
void bf_hang(void);
void bf_systick(void);
void bf_hang(void) { for (;;) { } }
void bf_systick(void) { bf_systick_wraps++; }
__attribute__((noreturn)) void bf_reset(void) {
    uint32_t *s, *d;
    for (s = &_sidata, d = &_sdata; d < &_edata;) { *d++ = *s++; }
    for (d = &_sbss; d < &_ebss;) { *d++ = 0; }
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    (void)main();
    for (;;) { }
}
typedef void (*vec)(void);
__attribute__((section(".isr_vector"), used)) static const vec vectors[16] = {
    (vec)&_estack, bf_reset, bf_hang, bf_hang, bf_hang, bf_hang, bf_hang, 0, 0, 0, 0,
    bf_hang, bf_hang, 0, bf_hang, bf_systick };
"""

_LINKER = """
MEMORY { FLASH (rx) : ORIGIN = 0x00000000, LENGTH = 4M
         RAM (rwx) : ORIGIN = 0x20000000, LENGTH = 4M }
ENTRY(bf_reset)
_estack = ORIGIN(RAM) + LENGTH(RAM);
SECTIONS {
  .isr_vector : { KEEP(*(.isr_vector)) } > FLASH
  .text : { *(.text .text.*) *(.rodata .rodata.*) . = ALIGN(4); } > FLASH
  .ARM.exidx : { *(.ARM.exidx*) } > FLASH
  .data : { _sdata = .; *(.data .data.*) . = ALIGN(4); _edata = .; } > RAM AT> FLASH
  _sidata = LOADADDR(.data);
  .bss (NOLOAD) : { _sbss = .; *(.bss .bss.* COMMON) . = ALIGN(4); _ebss = .; } > RAM
}
"""

_MAIN_HEAD = r"""
#include <stddef.h>
#include <stdint.h>
#include "bf_kernels.h"
extern volatile uint32_t bf_systick_wraps;
#define SYST ((volatile uint32_t *)0xE000E010u)
static int semihost(int op, const void *arg) {
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}
static void put_line(char tag, int id, uint32_t value, const int8_t *bytes, int32_t n) {
    static const char hex[] = "0123456789abcdef";
    char buf[160];
    int k = 0, i;
    char digits[12];
    int nd = 0;
    buf[k++] = tag;
    buf[k++] = ' ';
    do { digits[nd++] = (char)('0' + id % 10); id /= 10; } while (id);
    while (nd) { buf[k++] = digits[--nd]; }
    buf[k++] = ' ';
    do { digits[nd++] = (char)('0' + value % 10u); value /= 10u; } while (value);
    while (nd) { buf[k++] = digits[--nd]; }
    buf[k++] = ' ';
    for (i = 0; i < n; ++i) {
        buf[k++] = hex[((uint8_t)bytes[i]) >> 4];
        buf[k++] = hex[((uint8_t)bytes[i]) & 15];
    }
    buf[k++] = '\n';
    buf[k] = 0;
    semihost(0x04, buf);
}
static void systick_zero(void) {
    SYST[0] = 0; SYST[1] = 0xFFFFFFu; SYST[2] = 0;
    SYST[0] = 7;  /* processor clock, interrupt, enable */
    while (SYST[2] == 0) { }
    bf_systick_wraps = 0;
}
static uint32_t ticks_since(uint32_t start, uint32_t wraps0) {
    uint32_t now = SYST[2];
    return (bf_systick_wraps - wraps0) * 0x1000000u + start - now;
}
static void dump(int id, uint32_t ticks, const int8_t *out, int32_t n) {
    int32_t i;
    put_line('T', id, ticks, out, 0);
    for (i = 0; i < n; i += 64) {
        put_line('O', id, (uint32_t)i, out + i, n - i < 64 ? n - i : 64);
    }
}
"""


def c_value(value: Any, name: str, arrays: list[str]) -> str:
    """A params field as a C initializer; constant arrays are appended to ``arrays``."""
    if value is None:
        return "NULL"
    if isinstance(value, Struct):
        return "{" + ", ".join(f".{k} = {c_value(v, f'{name}_{k}', arrays)}" for k, v in value.fields) + "}"
    if isinstance(value, ConstArray):
        items = ", ".join(float(v).hex() if value.ctype in ("double", "float") else str(int(v))
                          for v in value.values)
        arrays.append(f"static const {value.ctype} {name}[{max(len(value.values), 1)}] = {{{items}}};")
        return name
    if isinstance(value, tuple):
        return "{" + ", ".join(str(v) for v in value) + "}"
    return str(value)


def _array(ctype: str, values: np.ndarray, name: str, arrays: list[str], const: bool = True) -> str:
    items = ", ".join(str(int(v)) for v in np.asarray(values).reshape(-1))
    qual = "static const" if const else "static"
    arrays.append(f"__attribute__((aligned(8))) {qual} {ctype} {name}[{max(values.size, 1)}] = {{{items}}};")
    return name


def source(calls: Sequence[M4Call]) -> str:
    arrays: list[str] = []
    body: list[str] = []
    out_bytes = max(c.graph.tensors[_output(c.call)].nbytes for c in calls)
    scratch = max([c.call.scratch_bytes for c in calls] + [8])
    for i, c in enumerate(calls):
        fields = ", ".join(f".{k} = {c_value(v, f'c{i}_{k}', arrays)}" for k, v in c.call.params)
        arrays.append(f"static const {c.call.params_type} c{i}_params = {{{fields}}};")
        argv = [f"&c{i}_params"]
        for j, a in enumerate(c.call.args):
            assert isinstance(a, TensorArg)
            if a.tensor < 0:
                argv.append("NULL")
            elif a.output:
                argv.append("m4_output")
            else:
                t = c.graph.tensors[a.tensor]
                data = t.data if t.is_constant else c.x
                argv.append(_array(_CTYPES[t.dtype.value], np.asarray(data), f"c{i}_a{j}", arrays))
        if c.call.takes_scratch:
            argv.append("m4_scratch")
        args = ", ".join(argv)
        n = c.graph.tensors[_output(c.call)].nbytes
        body.append(f"    {c.call.symbol}({args});\n"
                    f"    systick_zero(); t0 = SYST[2]; w0 = bf_systick_wraps;\n"
                    f"    {c.call.symbol}({args});\n"
                    f"    ticks = ticks_since(t0, w0);\n"
                    f"    dump({i}, ticks, m4_output, {n});")
    head = (_MAIN_HEAD + f"static int8_t m4_output[{out_bytes}];\n"
            f"__attribute__((aligned(8))) static uint8_t m4_scratch[{scratch}];\n")
    main = ("int main(void) {\n    uint32_t t0, w0, ticks;\n" + "\n".join(body) +
            "\n    { static const int32_t code[2] = {0x20026, 0};\n      semihost(0x20, code); }\n"
            "    return 0;\n}\n")
    return head + "\n".join(arrays) + "\n" + main


def _output(call: KernelCall) -> int:
    outs = call.output_tensors
    assert len(outs) == 1
    return outs[0]


def _die_with_parent() -> None:
    """In the QEMU child: SIGKILL when the parent dies (no orphaned emulator)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_on_m4(calls: Sequence[M4Call], kernel_sources: Sequence[Path], include_dirs: Sequence[Path],
              timeout: float = 300.0) -> list[M4Result]:
    """Build, run, parse (module docstring); raises RuntimeError with the tool output on failure."""
    cc, qemu = shutil.which("arm-none-eabi-gcc"), shutil.which("qemu-system-arm")
    if cc is None or qemu is None:
        raise RuntimeError("arm-none-eabi-gcc and qemu-system-arm are needed")
    with tempfile.TemporaryDirectory(prefix="bf-m4-") as tmp:
        d = Path(tmp)
        (d / "startup.c").write_text(_STARTUP)
        (d / "link.ld").write_text(_LINKER)
        (d / "main.c").write_text(source(calls))
        elf = d / "prog.elf"
        cmd = [cc, *M4_FLAGS, "-O2", "-std=c99", "-Wall", "-Wextra", *(f"-I{p}" for p in include_dirs),
               "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-T", str(d / "link.ld"),
               str(d / "startup.c"), str(d / "main.c"), *map(str, kernel_sources), "-o", str(elf), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"cross build failed:\n{' '.join(cmd)}\n{proc.stderr}")
        run = [qemu, "-M", "mps2-an386", "-display", "none", "-monitor", "none", "-serial", "null",
               "-semihosting-config", "enable=on,target=native", "-icount", "shift=6", "-kernel", str(elf)]
        child = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=_die_with_parent)
        try:
            stdout, stderr = child.communicate(timeout=timeout)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    return _parse(stdout + stderr, calls, child.returncode)


def _parse(text: str, calls: Sequence[M4Call], code: int | None) -> list[M4Result]:
    ticks: dict[int, int] = {}
    chunks: dict[int, list[tuple[int, bytes]]] = {i: [] for i in range(len(calls))}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] in ("T", "O"):
            i, v = int(parts[1]), int(parts[2])
            if parts[0] == "T":
                ticks[i] = v
            else:
                chunks[i].append((v, bytes.fromhex(parts[3] if len(parts) > 3 else "")))
    if len(ticks) != len(calls) or code != 0:
        raise RuntimeError(f"QEMU exit {code}, {len(ticks)} of {len(calls)} results:\n{text[-3000:]}")
    out = []
    for i in range(len(calls)):
        data = b"".join(b for _, b in sorted(chunks[i]))
        out.append(M4Result(ticks[i] * TICK_NS / INSN_NS, np.frombuffer(data, dtype=np.int8).copy()))
    return out
