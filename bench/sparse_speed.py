"""Sparse-table FC against the dense int8 FC: where does sparsity stop paying?

    python bench/sparse_speed.py [--sparsities 0.5,0.7,0.9] [--no-m4] [--json]

The layer is the digits MLP's middle FULLY_CONNECTED (300 → 100, the LeNet-300-100 shape) with
its real weights, pruned by magnitude to each sparsity (method ``prune``, 4-bit shared values,
index bits chosen per layer) and stored plain, Huffman-coded and decoded per block of 16 rows at
every call (``huffman = "layer"``), or Huffman-coded and decoded once (``"boot"``; timed after
the first call).  Every kernel is measured side by side in one run against the same input:

* **host**: the reference C kernels compiled with ``gcc -O2`` (the cffi harness of
  tests/kernel_harness.py), best of 9 interleaved repeats of a timed loop per kernel; ratio = sparse time /
  dense time;
* **Cortex-M4 (emulated)**: the same C files cross-compiled with ``arm-none-eabi-gcc -O2
  -mcpu=cortex-m4`` into a bare-metal program for ``mps2-an386`` run under ``qemu-system-arm
  -icount shift=6``; SysTick (25 MHz, overflows counted) brackets each call, so instructions =
  ticks · 40 ns / 64 ns — deterministic instruction counts, not cycles.  The program prints
  its counts and an output checksum over semihosting; each checksum must equal the numpy
  forward's, so the counted code computed the right answer.

``dense`` is ``bf_fully_connected_s8`` (the int8 kernel, TFLite's reference FC with its double
requantization); ``dense_fx`` is ``bf_fully_connected_packed_s8`` at 8 bits (the same MACs with
fixed-point requantization, as the sparse kernels requantize) — shown so the comparison does not
hinge on the software double-precision multiply of a Cortex-M4.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import cffi  # noqa: E402
import kernel_harness as kh  # noqa: E402

from firmware_gen.lower import ConstArray, KernelCall, Struct, TensorArg, lower_op  # noqa: E402
from toolkit.compress.base import LayerRef, Setting  # noqa: E402
from toolkit.compress.registry import get_method  # noqa: E402
from toolkit.model.ir import Graph  # noqa: E402
from toolkit.model.tflite import read_tflite  # noqa: E402

MODEL = ROOT / "examples" / "models" / "digits_mlp_int8.tflite"
OP_INDEX = 1  # FULLY_CONNECTED 300 → 100
SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
FAMILIES = ("fully_connected", "packed", "sparse", "huffman")
HEADERS = ("bf_kernels.h", "bf_packed.h", "bf_sparse.h")
M4_FLAGS = ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard")
TICK_NS, INSN_NS = 40.0, 64.0  # SysTick at 25 MHz; -icount shift=6


@dataclass(frozen=True)
class Case:
    name: str  # dense | dense_fx | sparse@90% | huff@90% | hboot@90%
    sparsity: float
    call: KernelCall
    expect: int  # sum of the output bytes (checksum the device must reproduce)
    flash: int


# ---------------------------------------------------------------------------------------------
# Cases.


def build_cases(graph: Graph, x: np.ndarray, sparsities: Sequence[float]) -> list[Case]:
    op = graph.ops[OP_INDEX]
    layer = LayerRef(graph, op)
    dense = lower_op(graph, op)
    want = get_method("int8").apply(layer, Setting.of("int8"), None).forward(x[None])
    cases = [Case("dense", 0.0, dense, int(want.sum()), 0)]
    fx = get_method("quant").apply(layer, Setting.of("quant", bits=8, recover=False), None)
    cases.append(Case("dense_fx", 0.0, fx.call, int(fx.forward(x[None]).sum()), fx.option.flash_bytes))
    for s in sparsities:
        for label, huff in (("sparse", False), ("huff", "layer"), ("hboot", "boot")):
            st = Setting.of("prune", sparsity=s, bits=4, huffman=huff)
            cl = get_method("prune").apply(layer, st, None)
            cases.append(Case(f"{label}@{round(s * 100)}%", s, cl.call, int(cl.forward(x[None]).sum()),
                              cl.option.flash_bytes))
    return cases


# ---------------------------------------------------------------------------------------------
# Host timing.


class _Library(kh.KernelLibrary):
    def _field(self, value: object, keep: list[Any]) -> Any:
        return self.ffi.NULL if value is None else super()._field(value, keep)


def _cdef(path: Path) -> str:
    text = path.read_text()
    begin, end = text.index("/* BF_CDEF_BEGIN"), text.index("/* BF_CDEF_END */")
    region = text[text.index("\n", begin) + 1 : text.rindex("\n", 0, end)]
    if path.name == "bf_kernels.h":
        return kh.cdef_source()
    return "\n".join(ln for ln in region.splitlines() if not ln.lstrip().startswith("#"))


def host_library() -> _Library:
    sources = [kh.REF_DIR / f"{f}.c" for f in FAMILIES]
    out = Path(tempfile.mkdtemp(prefix="bf-sparse-speed-"))
    so = out / "lib.so"
    cmd = [kh.CC, *kh.CFLAGS, f"-I{kh.INCLUDE_DIR}", f"-I{kh.REF_DIR}", *map(str, sources),
           "-o", str(so), "-lm"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    ffi = cffi.FFI()
    for h in HEADERS:
        ffi.cdef(_cdef(kh.INCLUDE_DIR / h))
    return _Library("ref", so, False, ffi, ffi.dlopen(str(so)))


def tensor_args(call: KernelCall, graph: Graph) -> list[tuple[str, Any]]:
    """Each tensor argument as ("input" | "output" | "null", None) or ("const", its data)."""
    out: list[tuple[str, Any]] = []
    for a in call.args:
        assert isinstance(a, TensorArg)
        if a.tensor < 0:
            out.append(("null", None))
        elif a.output:
            out.append(("output", None))
        elif graph.tensors[a.tensor].is_constant:
            out.append(("const", graph.tensors[a.tensor]))
        else:
            out.append(("input", None))
    return out


def host_times(cases: Sequence[Case], graph: Graph, x: np.ndarray, loops: int = 400) -> dict[str, float]:
    lib = host_library()
    ffi = lib.ffi
    xin = ffi.new("int8_t[]", x.tolist())
    out = ffi.new("int8_t[]", 128)
    prepared = []
    for c in cases:
        p, keep = lib.params(c.call)
        scratch = ffi.new("uint8_t[]", max(c.call.scratch_bytes, 1))
        fn = getattr(lib.lib, c.call.symbol)
        args: tuple[Any, ...] = (p,)
        for kind, t in tensor_args(c.call, graph):
            if kind == "const":
                arr = np.ascontiguousarray(t.data)
                keep.append(arr)
                ctype = {"int8": "int8_t", "int32": "int32_t"}[t.dtype.value]
                args += (ffi.from_buffer(f"{ctype}[]", arr),)
            else:
                args += ({"input": xin, "output": out, "null": ffi.NULL}[kind],)
        if c.call.takes_scratch:
            args = (*args, scratch)
        fn(*args)  # boot kernels decode here
        got = sum(int(v) for v in ffi.cast("int8_t *", out)[0:100])
        if got != c.expect:
            raise SystemExit(f"host {c.name}: checksum {got} != forward {c.expect}")
        prepared.append((c.name, fn, args, keep, scratch))
    best = {name: float("inf") for name, *_ in prepared}
    for _ in range(9):  # interleaved repeats: every kernel sees the same machine state
        for name, fn, args, _keep, _scr in prepared:
            t0 = time.perf_counter()
            for _ in range(loops):
                fn(*args)
            best[name] = min(best[name], (time.perf_counter() - t0) / loops)
    return best


# ---------------------------------------------------------------------------------------------
# Emulated Cortex-M4.

_STARTUP = r"""
#include <stdint.h>
extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);
volatile uint32_t bf_systick_wraps;
void bf_reset(void);
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
static void put(const char *s) { semihost(0x04, s); }
static void put_u(const char *label, uint32_t v, int32_t check) {
    char buf[96];
    int n = 0, i;
    uint32_t c = (uint32_t)check;
    char digits[12];
    int nd;
    for (i = 0; label[i]; ++i) { buf[n++] = label[i]; }
    buf[n++] = ' ';
    nd = 0; do { digits[nd++] = (char)('0' + v % 10u); v /= 10u; } while (v);
    while (nd) { buf[n++] = digits[--nd]; }
    buf[n++] = ' ';
    if (check < 0) { buf[n++] = '-'; c = 0u - c; }
    nd = 0; do { digits[nd++] = (char)('0' + c % 10u); c /= 10u; } while (c);
    while (nd) { buf[n++] = digits[--nd]; }
    buf[n++] = '\n'; buf[n] = 0;
    put(buf);
}
static void systick_zero(void) {
    SYST[0] = 0; SYST[1] = 0xFFFFFFu; SYST[2] = 0;
    SYST[0] = 7;  /* processor clock, interrupt, enable */
    while (SYST[2] == 0) { }
    while (SYST[2] != 0xFFFFFFu && SYST[2] > 0xFFFF00u) { }
    bf_systick_wraps = 0;
}
static uint32_t ticks_since(uint32_t start, uint32_t wraps0) {
    uint32_t now = SYST[2];
    uint32_t w = bf_systick_wraps - wraps0;
    return w * 0x1000000u + start - now;
}
int8_t bench_input[300] = {@INPUT@};
int8_t bench_output[128];
__attribute__((aligned(8))) uint8_t bench_scratch[SCRATCH];
static int32_t checksum(void) {
    int32_t s = 0;
    int i;
    for (i = 0; i < 100; ++i) { s += bench_output[i]; }
    return s;
}
"""


def _c_value(value: Any, name: str, arrays: list[str]) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, Struct):
        return "{" + ", ".join(f".{k} = {_c_value(v, f'{name}_{k}', arrays)}" for k, v in value.fields) + "}"
    if isinstance(value, ConstArray):
        if value.ctype == "double":
            items = ", ".join(float(v).hex() for v in value.values)
        else:
            items = ", ".join(str(int(v)) for v in value.values)
        arrays.append(f"static const {value.ctype} {name}[{max(len(value.values), 1)}] = {{{items}}};")
        return name
    if isinstance(value, tuple):
        return "{" + ", ".join(str(v) for v in value) + "}"
    return str(value)


def m4_source(cases: Sequence[Case], graph: Graph, x: np.ndarray) -> str:
    arrays: list[str] = []
    body: list[str] = []
    for i, c in enumerate(cases):
        fields = ", ".join(f".{k} = {_c_value(v, f'c{i}_{k}', arrays)}" for k, v in c.call.params)
        arrays.append(f"static const {c.call.params_type} c{i}_params = {{{fields}}};")
        argv = [f"&c{i}_params"]
        for j, (kind, t) in enumerate(tensor_args(c.call, graph)):
            if kind == "const":
                ctype = {"int8": "int8_t", "int32": "int32_t"}[t.dtype.value]
                argv.append(_c_value(ConstArray(ctype, tuple(int(v) for v in t.data.reshape(-1))),
                                     f"c{i}_t{j}", arrays))
            else:
                argv.append({"input": "bench_input", "output": "bench_output", "null": "NULL"}[kind])
        if c.call.takes_scratch:
            argv.append("bench_scratch")
        args = ", ".join(argv)
        body.append(
            f"    {c.call.symbol}({args});\n"  # warm-up (boot kernels decode here)
            f"    systick_zero(); t0 = SYST[2]; w0 = bf_systick_wraps;\n"
            f"    {c.call.symbol}({args});\n"
            f"    put_u(\"{c.name}\", ticks_since(t0, w0), checksum());")
    scratch = max([c.call.scratch_bytes for c in cases] + [8])
    head = _MAIN_HEAD.replace("@INPUT@", ", ".join(str(int(v)) for v in x)).replace("SCRATCH", str(scratch))
    main = ("int main(void) {\n    uint32_t t0, w0;\n" + "\n".join(body) +
            "\n    { static const int32_t code[2] = {0x20026, 0};\n"
            "      semihost(0x20, code); }\n    return 0;\n}\n")
    return head + "\n".join(arrays) + "\n" + main


def _die_with_parent() -> None:
    """In the QEMU child: SIGKILL when this process dies (no orphaned emulator)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def m4_counts(cases: Sequence[Case], graph: Graph, x: np.ndarray) -> dict[str, float]:
    cc, qemu = shutil.which("arm-none-eabi-gcc"), shutil.which("qemu-system-arm")
    if cc is None or qemu is None:
        raise SystemExit("arm-none-eabi-gcc and qemu-system-arm are needed (or pass --no-m4)")
    with tempfile.TemporaryDirectory(prefix="bf-sparse-m4-") as tmp:
        d = Path(tmp)
        (d / "startup.c").write_text(_STARTUP)
        (d / "link.ld").write_text(_LINKER)
        (d / "main.c").write_text(m4_source(cases, graph, x))
        sources = [d / "startup.c", d / "main.c", *(kh.REF_DIR / f"{f}.c" for f in FAMILIES)]
        elf = d / "bench.elf"
        cmd = [cc, *M4_FLAGS, "-O2", "-std=c99", "-Wall", "-Wextra", f"-I{kh.INCLUDE_DIR}", f"-I{kh.REF_DIR}",
               "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-T", str(d / "link.ld"),
               *map(str, sources), "-o", str(elf), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"cross build failed:\n{' '.join(cmd)}\n{proc.stderr}")
        run = [qemu, "-M", "mps2-an386", "-display", "none", "-monitor", "none", "-serial", "null",
               "-semihosting-config", "enable=on,target=native", "-icount", "shift=6", "-kernel", str(elf)]
        qemu_proc = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=_die_with_parent)
        try:
            stdout, stderr = qemu_proc.communicate(timeout=300)
        finally:
            if qemu_proc.poll() is None:
                qemu_proc.kill()
                qemu_proc.wait()
    counts = {}
    expect = {c.name: c.expect for c in cases}
    for line in (stdout + stderr).splitlines():
        name, ticks, check = line.split()
        if int(check) != expect[name]:
            raise SystemExit(f"M4 {name}: checksum {check} != forward {expect[name]}")
        counts[name] = int(ticks) * TICK_NS / INSN_NS
    if len(counts) != len(cases):
        raise SystemExit(f"QEMU printed {len(counts)} of {len(cases)} results:\n{stdout}\n{stderr}")
    return counts


# ---------------------------------------------------------------------------------------------
# Report.


def rows(cases: Sequence[Case], host: dict[str, float], m4: dict[str, float] | None) -> list[dict[str, Any]]:
    out = []
    for c in cases:
        row: dict[str, Any] = {"kernel": c.name, "symbol": c.call.symbol, "sparsity": c.sparsity,
                               "flash_bytes": c.flash or None, "host_us": round(host[c.name] * 1e6, 3),
                               "host_ratio": round(host[c.name] / host["dense"], 3)}
        if m4 is not None:
            row["m4_instructions"] = round(m4[c.name])
            row["m4_ratio"] = round(m4[c.name] / m4["dense"], 3)
            row["m4_ratio_vs_dense_fx"] = round(m4[c.name] / m4["dense_fx"], 3)
        out.append(row)
    return out


def breakeven(table: list[dict[str, Any]], prefix: str, key: str) -> float | None:
    """Lowest measured sparsity from which every higher one is faster than dense (ratio < 1)."""
    pts = sorted((r["sparsity"], r[key]) for r in table if r["kernel"].startswith(prefix + "@"))
    lowest = None
    for s, ratio in reversed(pts):
        if ratio >= 1.0:
            break
        lowest = s
    return lowest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sparsities", default=",".join(str(s) for s in SPARSITIES))
    ap.add_argument("--no-m4", action="store_true", help="skip the emulated Cortex-M4")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    graph = read_tflite(MODEL.read_bytes())
    seed = int(hashlib.sha256(b"sparse_speed").hexdigest()[:8], 16)
    x = np.random.default_rng(seed).integers(-128, 128, size=300).astype(np.int8)
    cases = build_cases(graph, x, [float(s) for s in args.sparsities.split(",")])
    host = host_times(cases, graph, x)
    m4 = None if args.no_m4 else m4_counts(cases, graph, x)
    table = rows(cases, host, m4)
    if args.json:
        for r in table:
            print(json.dumps(r))
        return 0
    cols = ["kernel", "flash_bytes", "host_us", "host_ratio"] + (
        ["m4_instructions", "m4_ratio", "m4_ratio_vs_dense_fx"] if m4 else [])
    print("FC 300→100 (digits MLP layer 1), batch 1; ratio = time or instructions / dense int8 FC")
    print(" | ".join(cols))
    for r in table:
        print(" | ".join(str(r.get(c, "")) for c in cols))
    for prefix in ("sparse", "huff", "hboot"):
        keys = ["host_ratio"] + (["m4_ratio"] if m4 else [])
        found = ", ".join(f"{k}: from {breakeven(table, prefix, k)}" for k in keys)
        print(f"{prefix}: faster than dense at every measured sparsity {found}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
