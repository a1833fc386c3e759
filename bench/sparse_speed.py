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
  -icount shift=6`` (tests/m4_harness.py); SysTick (25 MHz, overflows counted) brackets each
  call, so instructions = ticks · 40 ns / 64 ns — deterministic instruction counts, not cycles.

Every kernel's output, on the host and on the M4, must equal the numpy forward's byte for byte
(the counted code computed the right answer).

``dense`` is ``bf_fully_connected_s8``, the kernel of the int8 layer (TFLite's reference FC).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import cffi  # noqa: E402
import kernel_harness as kh  # noqa: E402
import m4_harness  # noqa: E402

from firmware_gen.lower import KernelCall, TensorArg, lower_op  # noqa: E402
from toolkit.compress.base import LayerRef, Setting  # noqa: E402
from toolkit.compress.registry import get_method  # noqa: E402
from toolkit.model.ir import Graph  # noqa: E402
from toolkit.model.tflite import read_tflite  # noqa: E402

MODEL = ROOT / "examples" / "models" / "digits_mlp_int8.tflite"
OP_INDEX = 1  # FULLY_CONNECTED 300 → 100
SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
FAMILIES = ("fully_connected", "sparse", "huffman")
HEADERS = ("bf_kernels.h", "bf_sparse.h")


@dataclass(frozen=True)
class Case:
    name: str  # dense | sparse@90% | huff@90% | hboot@90%
    sparsity: float
    call: KernelCall
    want: np.ndarray = field(repr=False)  # the numpy forward's output (the device must match it)
    flash: int = 0


# ---------------------------------------------------------------------------------------------
# Cases.


def build_cases(graph: Graph, x: np.ndarray, sparsities: Sequence[float]) -> list[Case]:
    op = graph.ops[OP_INDEX]
    layer = LayerRef(graph, op)
    dense = lower_op(graph, op)
    int8 = get_method("int8").apply(layer, Setting.of("int8"), None)
    cases = [Case("dense", 0.0, dense, int8.forward(x[None]).reshape(-1), int8.option.flash_bytes)]
    for s in sparsities:
        for label, huff in (("sparse", False), ("huff", "layer"), ("hboot", "boot")):
            st = Setting.of("prune", sparsity=s, bits=4, huffman=huff)
            cl = get_method("prune").apply(layer, st, None)
            cases.append(Case(f"{label}@{round(s * 100)}%", s, cl.call, cl.forward(x[None]).reshape(-1),
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
        got = np.frombuffer(ffi.buffer(out, 100), dtype=np.int8)
        if not np.array_equal(got, c.want):
            raise SystemExit(f"host {c.name}: output differs from the numpy forward")
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


def m4_counts(cases: Sequence[Case], graph: Graph, x: np.ndarray) -> dict[str, float]:
    if not m4_harness.available():
        raise SystemExit("arm-none-eabi-gcc and qemu-system-arm are needed (or pass --no-m4)")
    calls = [m4_harness.M4Call(c.name, c.call, graph, x) for c in cases]
    results = m4_harness.run_on_m4(calls, [kh.REF_DIR / f"{f}.c" for f in FAMILIES],
                                   [kh.INCLUDE_DIR, kh.REF_DIR])
    counts = {}
    for c, r in zip(cases, results, strict=True):
        if not np.array_equal(r.output, c.want):
            raise SystemExit(f"M4 {c.name}: output differs from the numpy forward")
        counts[c.name] = r.instructions
    return counts


# ---------------------------------------------------------------------------------------------
# Report.


def rows(cases: Sequence[Case], host: dict[str, float], m4: dict[str, float] | None) -> list[dict[str, Any]]:
    out = []
    for c in cases:
        row: dict[str, Any] = {"kernel": c.name, "symbol": c.call.symbol, "sparsity": c.sparsity,
                               "flash_bytes": c.flash, "host_us": round(host[c.name] * 1e6, 3),
                               "host_ratio": round(host[c.name] / host["dense"], 3)}
        if m4 is not None:
            row["m4_instructions"] = round(m4[c.name])
            row["m4_ratio"] = round(m4[c.name] / m4["dense"], 3)
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
        ["m4_instructions", "m4_ratio"] if m4 else [])
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
