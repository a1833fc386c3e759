"""Optimized kernel variants against the reference kernels, on the host and on emulated Arm.

    python bench/kernels.py [--quick] [--no-emulated] [--json]

**Host** (this machine, one thread, the same shapes side by side in one run): a binary
(XNOR-Net: 1 weight plane, 1 activation plane) fully-connected GEMM and a 3×3 convolution,
against the float32 reference C kernel, numpy's BLAS (float32, single-threaded by
``OPENBLAS_NUM_THREADS=1`` and friends; the convolution as im2col + one matmul) and the int8
reference C kernel — all compiled with ``gcc -O2`` as the kernel tests build them, the x86
variant with the ``-m`` flags ``targets/isa.py`` picks for this CPU (and, in the level table, at
every lower level).  Each kernel is timed as the best of ``repeats`` interleaved rounds of a loop
of calls; outputs of the x86 binary kernel are checked bit-identical with ``ref``'s first.

*Cycles* are time-stamp-counter ticks (``rdtsc`` around the loop, via a 3-line C helper): the
TSC runs at the CPU's nominal frequency whatever the core clock does, so under turbo the core
cycles are somewhat more; ``perf`` cycle counters are not available in this VM.
``popcount_peak_fraction`` = binary MACs (bits XOR-popcounted) per TSC cycle of the largest
binary GEMM ÷ the popcount throughput of the level used: AVX-512 VPOPCNTQ on a 512-bit vector per
cycle (one port on Ice Lake … Sapphire/Emerald Rapids) = 512 bits/cycle; AVX2 has no vector
popcount (the VPSHUFB nibble method's peak is taken as 256 bits per 2 cycles … we state 256);
scalar POPCNT: 64 bits/cycle.

**Emulated targets** (deterministic instruction counts, not cycles; ``tests/kernel_xrun.py``):
* ``mps2-an386`` (Cortex-M4 DSP) and ``microbit`` (Cortex-M0, 16 KiB RAM: smaller shapes):
  QEMU ``-icount shift=6`` with the board timer around each call (SysTick / nRF TIMER0),
  instructions = ticks · 1e9 / timer_hz / 64.  The same count is repeated with QEMU's
  translation log (below) on one M4 kernel to show both methods agree.
* Cortex-A72 / A76 / A7 under qemu-user (no instruction-count plugin here): the program runs one
  call between two marker functions with ``-d in_asm,exec,nochain``; instructions = Σ over
  executed translation blocks between the markers of their instruction counts, minus an empty
  call's.  Same binary, same count, every time.
Every emulated output is compared with the reference variant's output on the same target.

Targets (reported with a met/missed flag): binary ≥ 20× faster than our float32 C and ≥ 4×
faster than our int8 C on the host; int8 DSP ≥ 2× fewer instructions than ref on the M4.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import cffi  # noqa: E402
import kernel_harness as kh  # noqa: E402
import kernel_xrun as xr  # noqa: E402
from opgen import GraphBuilder, QuantParams, bias_quant, rand_bias, rand_per_channel  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from firmware_gen.lower import ConstArray, KernelCall, Struct, TensorArg, lower_op  # noqa: E402
from targets import isa  # noqa: E402
from toolkit.model.ir import (  # noqa: E402
    Activation,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    FullyConnectedOptions,
    Graph,
    Padding,
)
from toolkit.oracle import quant  # noqa: E402

WORK = Path(tempfile.gettempdir()) / "boardfit-kernels" / "bench"
PEAK_BITS = {"avx512-vpopcntdq": 512, "avx2": 256, "popcnt": 64, "portable": 64}

# ---------------------------------------------------------------------------------------------
# Layers: (graph, call) pairs with fixed random data.


@dataclass(frozen=True)
class Layer:
    name: str
    graph: Graph
    call: KernelCall  # lowered for ref (binary: the kernel's own call)
    macs: int

    def values(self, x: np.ndarray) -> dict[int, np.ndarray]:
        v = {t.index: t.data for t in self.graph.tensors if t.data is not None}
        v[self.graph.inputs[0]] = x
        return v

    def input(self, rng: np.random.Generator) -> np.ndarray:
        t = self.graph.tensors[self.graph.inputs[0]]
        if t.dtype.numpy == np.float32:
            return rng.uniform(-1, 1, size=t.shape).astype(np.float32)
        return rng.integers(-128, 128, size=t.shape).astype(np.int8)

    def xcall(self, rng: np.random.Generator, variant: str) -> xr.XCall:
        out = self.graph.tensors[self.graph.outputs[0]]
        call = self.call if "xnor" in self.call.symbol else lower_op(self.graph, self.graph.ops[0], variant)
        return xr.XCall(self.name, call, self.values(self.input(rng)), {out.index: out.dtype.numpy},
                        {out.index: out.num_elements})


def _q(scale: float, zp: int) -> QuantParams:
    return QuantParams((float(np.float32(scale)),), (zp,))


def conv_layer(rng: np.random.Generator, hw: int, c: int, oc: int, k: int = 3, dtype: str = "int8",
               xnor: bool = False) -> Layer:
    b = GraphBuilder("conv")
    s8 = dtype == "int8"
    xq = _q(0.02, -3) if s8 else None
    x = b.input((1, hw, hw, c), dtype, quant=xq)
    wq = rand_per_channel(rng, oc) if s8 else None
    w = (rng.integers(-127, 128, size=(oc, k, k, c)).astype(np.int8) if s8
         else rng.standard_normal((oc, k, k, c)).astype(np.float32))
    wt = b.const(w, quant=wq)
    if s8 and xq is not None and wq is not None:
        bt = b.const(rand_bias(rng, oc), quant=bias_quant(xq, wq))
    else:
        bt = b.const(rand_bias(rng, oc, dtype="float32"))
    y = b.output((1, hw, hw, oc), dtype, quant=_q(0.05, 2) if s8 else None)
    b.op("CONV_2D", [x, wt, bt], [y], Conv2DOptions(Padding.SAME, 1, 1, 1, 1, Activation.NONE))
    g = b.build()
    call = xnor_call(rng, g, "conv", c, oc, k) if xnor else lower_op(g, g.ops[0], "ref")
    name = f"conv {hw}x{hw}x{c}->{oc} {k}x{k}"
    return Layer(name, g, call, hw * hw * oc * k * k * c)


def dw_layer(rng: np.random.Generator, hw: int, c: int, k: int = 3) -> Layer:
    b = GraphBuilder("dw")
    xq = _q(0.02, -3)
    x = b.input((1, hw, hw, c), "int8", quant=xq)
    wq = rand_per_channel(rng, c, axis=3)
    wt = b.const(rng.integers(-127, 128, size=(1, k, k, c)).astype(np.int8), quant=wq)
    bt = b.const(rand_bias(rng, c), quant=bias_quant(xq, wq))
    y = b.output((1, hw, hw, c), "int8", quant=_q(0.05, 2))
    b.op("DEPTHWISE_CONV_2D", [x, wt, bt], [y],
         DepthwiseConv2DOptions(Padding.SAME, 1, 1, 1, 1, 1, Activation.NONE))
    g = b.build()
    return Layer(f"dw {hw}x{hw}x{c} {k}x{k}", g, lower_op(g, g.ops[0], "ref"), hw * hw * c * k * k)


def fc_layer(rng: np.random.Generator, m: int, depth: int, units: int, dtype: str = "int8",
             xnor: bool = False) -> Layer:
    b = GraphBuilder("fc")
    s8 = dtype == "int8"
    xq = _q(0.02, -3) if s8 else None
    x = b.input((m, depth), dtype, quant=xq)
    wq = rand_per_channel(rng, units) if s8 else None
    w = (rng.integers(-127, 128, size=(units, depth)).astype(np.int8) if s8
         else rng.standard_normal((units, depth)).astype(np.float32))
    wt = b.const(w, quant=wq)
    if s8 and xq is not None and wq is not None:
        bt = b.const(rand_bias(rng, units), quant=bias_quant(xq, wq))
    else:
        bt = b.const(rand_bias(rng, units, dtype="float32"))
    y = b.output((m, units), dtype, quant=_q(0.05, 2) if s8 else None)
    b.op("FULLY_CONNECTED", [x, wt, bt], [y], FullyConnectedOptions(Activation.NONE))
    g = b.build()
    call = xnor_call(rng, g, "fc", depth, units, 1) if xnor else lower_op(g, g.ops[0], "ref")
    return Layer(f"gemm {m}x{depth}x{units}", g, call, m * depth * units)


def xnor_call(rng: np.random.Generator, g: Graph, kind: str, c: int, oc: int, k: int) -> KernelCall:
    """An XNOR-Net layer (1 weight plane, 1 activation plane) with random signs and scales:
    what method ``binary`` emits, without the fitting (speed does not depend on the values)."""
    op = g.ops[0]
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    words = -(-c // 32)
    signs = rng.integers(0, 2**32, size=(oc, k * k, words), dtype=np.uint64).astype(np.uint32)
    if c % 32:
        signs[..., -1] &= np.uint32((1 << (c % 32)) - 1)
    m, s = quant.quantize_multiplier(0.002)
    fields: list[tuple[str, Any]] = []
    if kind == "conv":
        def dims(n: int, h: int, w: int, ch: int) -> Struct:
            return Struct("bf_dims4", (("n", n), ("h", h), ("w", w), ("c", ch)))

        fields += [("input", dims(1, x.shape[1], x.shape[2], c)), ("filter", dims(oc, k, k, c)),
                   ("output", dims(1, y.shape[1], y.shape[2], oc)),
                   ("stride_h", 1), ("stride_w", 1), ("dilation_h", 1), ("dilation_w", 1),
                   ("pad_top", k // 2), ("pad_left", k // 2)]
    else:
        fields += [("batches", x.shape[0]), ("depth", c), ("units", oc)]
    fields += [("words", words), ("planes", 1), ("act_planes", 1), ("output_offset", 2), ("act_min", -128),
               ("act_max", 127), ("act_threshold", ConstArray("int32_t", (-3,))),
               ("weights", ConstArray("uint32_t", tuple(int(v) for v in signs.reshape(-1)))),
               ("coef", ConstArray("int16_t", tuple(int(v) for v in rng.integers(-300, 300, size=2 * oc)))),
               ("bias", ConstArray("int32_t", tuple(int(v) for v in rng.integers(-5000, 5000, size=oc)))),
               ("multiplier", ConstArray("int32_t", (int(m),) * oc)),
               ("shift", ConstArray("int32_t", (int(s),) * oc))]
    symbol = "bf_conv2d_xnor_s8" if kind == "conv" else "bf_fully_connected_xnor_s8"
    scratch = x.shape[1] * x.shape[2] * words * 4 if kind == "conv" else words * 4
    return KernelCall(op.index, op.opcode, symbol, f"{symbol}_params", tuple(fields),
                      (TensorArg(x.index, "int8_t"), TensorArg(y.index, "int8_t", output=True)), "binary",
                      takes_scratch=True, scratch_bytes=scratch)


# ---------------------------------------------------------------------------------------------
# Host timing.

def host_library(variant: str, flags: Sequence[str]) -> kh.KernelLibrary:
    base = kh.build_library(variant, sanitize=False, extra_flags=tuple(flags))
    ffi = cffi.FFI()
    ffi.cdef(xr.library_cdef())
    return kh.KernelLibrary(variant, base.path, False, ffi, ffi.dlopen(str(base.path)), base.flags)


_TSC = None


def rdtsc() -> Callable[[], int]:
    global _TSC
    if _TSC is None:
        d = WORK / "tsc"
        d.mkdir(parents=True, exist_ok=True)
        so = d / "libtsc.so"
        if not so.exists():
            (d / "tsc.c").write_text("#include <x86intrin.h>\nunsigned long long bfb_rdtsc(void) "
                                     "{ return __rdtsc(); }\n")
            subprocess.run(["gcc", "-O2", "-shared", "-fPIC", str(d / "tsc.c"), "-o", str(so)], check=True)
        ffi = cffi.FFI()
        ffi.cdef("unsigned long long bfb_rdtsc(void);")
        _TSC = ffi.dlopen(str(so))
    return _TSC.bfb_rdtsc


def prepared(lib: kh.KernelLibrary, layer: Layer, x: np.ndarray) -> tuple[Callable[[], None], np.ndarray]:
    """A zero-argument function that runs the kernel once (arguments prepared once), and its
    output buffer."""
    call = layer.call
    p, keep = lib.params(call)
    values = layer.values(x)
    out_t = layer.graph.tensors[layer.graph.outputs[0]]
    out = np.zeros(out_t.shape, dtype=out_t.dtype.numpy)
    argv: list[Any] = [p]
    for arg in call.args:
        assert isinstance(arg, TensorArg)
        if arg.tensor < 0:
            argv.append(lib.ffi.NULL)
            continue
        arr = out if arg.output else np.ascontiguousarray(values[arg.tensor])
        keep.append(arr)
        argv.append(lib.ffi.from_buffer(f"{arg.ctype}[]", arr))
    if call.takes_scratch:
        n = max(8, lib.scratch_bytes(call))
        scratch = np.zeros(n + 64, np.uint8)
        keep.append(scratch)
        argv.append(lib.ffi.from_buffer(scratch[(-scratch.ctypes.data) % 64:]))
    fn = getattr(lib.lib, call.symbol)

    def run() -> None:
        fn(*argv)

    run.keep = keep  # type: ignore[attr-defined]  # the cdata must outlive the closure
    return run, out


def timed(fns: dict[str, Callable[[], None]], budget_s: float,
          repeats: int) -> dict[str, tuple[float, float]]:
    """name -> (seconds per call, TSC ticks per call): best of ``repeats`` interleaved rounds."""
    tsc = rdtsc()
    loops = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        dt = max(time.perf_counter() - t0, 1e-7)
        loops[name] = max(1, int(budget_s / dt))
    best: dict[str, tuple[float, float]] = {n: (float("inf"), float("inf")) for n in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            n = loops[name]
            c0, t0 = tsc(), time.perf_counter()
            for _ in range(n):
                fn()
            t1, c1 = time.perf_counter(), tsc()
            if (t1 - t0) / n < best[name][0]:
                best[name] = ((t1 - t0) / n, (c1 - c0) / n)
    return best


def numpy_gemm(x: np.ndarray, w: np.ndarray) -> Callable[[], None]:
    wt = w.T.copy()

    def run() -> None:
        x @ wt

    return run


def numpy_conv(x: np.ndarray, w: np.ndarray) -> Callable[[], None]:
    """float32 3x3 SAME conv as im2col + one BLAS matmul."""
    k = w.shape[1]
    pad = np.pad(x[0], ((k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    wm = w.reshape(w.shape[0], -1).T.copy()

    def run() -> None:
        cols = np.lib.stride_tricks.sliding_window_view(pad, (k, k), axis=(0, 1))  # H W C k k
        cols = cols.transpose(0, 1, 3, 4, 2).reshape(x.shape[1] * x.shape[2], -1)
        cols @ wm

    return run


def host_section(quick: bool, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    host = isa.host_target()
    level = isa.x86_level(host.features) if host.arch == "x86_64" else "portable"
    flags = isa.variant_cflags("x86", host)
    ref, x86 = host_library("ref", ()), host_library("x86", flags)
    gemms = [(8, 256, 64), (16, 1024, 256)] if quick else [(16, 512, 128), (32, 2048, 512), (64, 8192, 512)]
    convs = [(16, 64, 64)] if quick else [(16, 64, 64), (32, 128, 128), (16, 256, 256)]
    rows: list[dict[str, Any]] = []
    budget = 0.05 if quick else 0.2
    shapes = [("gemm", sh) for sh in gemms] + [("conv", sh) for sh in convs]
    for kind, shape in shapes:
        if kind == "gemm":
            m, k, n = shape
            lay = {"binary": fc_layer(rng, m, k, n, xnor=True), "int8": fc_layer(rng, m, k, n),
                   "f32": fc_layer(rng, m, k, n, "float32")}
        else:
            hw, c, oc = shape
            lay = {"binary": conv_layer(rng, hw, c, oc, xnor=True), "int8": conv_layer(rng, hw, c, oc),
                   "f32": conv_layer(rng, hw, c, oc, dtype="float32")}
        xs = {key: v.input(rng) for key, v in lay.items()}
        run_bin_ref, out_ref = prepared(ref, lay["binary"], xs["binary"])
        run_bin, out_bin = prepared(x86, lay["binary"], xs["binary"])
        run_bin_ref()
        run_bin()
        if not np.array_equal(out_ref, out_bin):
            raise SystemExit(f"x86 {lay['binary'].name}: output differs from ref")
        f32 = lay["f32"]
        w = next(t.data for t in f32.graph.tensors if t.data is not None and t.data.ndim >= 2)
        xf = xs["f32"]
        blas = numpy_gemm(xf, w) if kind == "gemm" else numpy_conv(xf, w)
        fns = {"binary x86": run_bin, "binary ref": run_bin_ref,
               "int8 ref": prepared(ref, lay["int8"], xs["int8"])[0],
               "f32 ref": prepared(ref, f32, xf)[0], "f32 numpy": blas}
        t = timed(fns, budget, repeats)
        macs = lay["binary"].macs
        row = {"kind": kind, "shape": lay["binary"].name, "macs": macs, "x86_level": level,
               **{f"{n} s": t[n][0] for n in fns}, **{f"{n} tsc": t[n][1] for n in fns}}
        row["binary_vs_float_c"] = t["f32 ref"][0] / t["binary x86"][0]
        row["binary_vs_int8_c"] = t["int8 ref"][0] / t["binary x86"][0]
        row["binary_vs_numpy"] = t["f32 numpy"][0] / t["binary x86"][0]
        row["bits_per_tsc_cycle"] = macs / t["binary x86"][1]
        rows.append(row)
    levels = level_table(rng, quick, repeats) if host.arch == "x86_64" else []
    largest = max((r for r in rows if r["kind"] == "gemm"), key=lambda r: r["macs"])
    return {"level": level, "flags": list(flags), "rows": rows, "levels": levels, "largest": largest,
            "peak_bits_per_cycle": PEAK_BITS[level]}


def level_table(rng: np.random.Generator, quick: bool, repeats: int) -> list[dict[str, Any]]:
    """The largest binary GEMM at every x86 level this CPU supports."""
    m, k, n = (16, 1024, 256) if quick else (64, 8192, 512)
    lay = fc_layer(rng, m, k, n, xnor=True)
    x = lay.input(rng)
    fns = {}
    for name, needs, flags in isa.X86_LEVELS:
        if needs <= isa.host_features():
            fns[name] = prepared(host_library("x86", flags), lay, x)[0]
    fns["ref"] = prepared(host_library("ref", ()), lay, x)[0]
    t = timed(fns, 0.05 if quick else 0.2, repeats)
    return [{"level": name, "s": t[name][0], "tsc": t[name][1], "bits_per_tsc_cycle": lay.macs / t[name][1],
             "peak_fraction": lay.macs / t[name][1] / PEAK_BITS.get(name, 64) if name != "ref" else None}
            for name in fns]


# ---------------------------------------------------------------------------------------------
# Emulated targets.


# Emulated layer shapes: (conv hw, c, oc) and (fc depth, units) pairs, a small and a deep one
# each (binary pays off with depth: every output has a fixed requantization cost).
@dataclass(frozen=True)
class BoardShapes:
    conv: tuple[tuple[int, int, int], ...]  # (hw, c, oc)
    fc: tuple[tuple[int, int], ...]  # (depth, units)
    dw: tuple[int, int]  # (hw, c)


BOARD_SHAPES = {"big": BoardShapes(((16, 32, 32), (8, 128, 64)), ((512, 128), (2048, 256)), (16, 32)),
                "small": BoardShapes(((8, 16, 16), (8, 64, 32)), ((256, 32), (1024, 64)), (8, 16))}


def _board_layers(rng: np.random.Generator, small: bool) -> list[Layer]:
    """Each int8 layer followed by its XNOR twin, then a depthwise layer (micro:bit: 16 KiB of RAM
    for outputs and scratch, so smaller shapes)."""
    shapes = BOARD_SHAPES["small" if small else "big"]
    out: list[Layer] = []
    for hw, c, oc in shapes.conv:
        out += [conv_layer(rng, hw, c, oc), conv_layer(rng, hw, c, oc, xnor=True)]
    for depth, units in shapes.fc:
        out += [fc_layer(rng, 1, depth, units), fc_layer(rng, 1, depth, units, xnor=True)]
    hw, c = shapes.dw
    return [*out, dw_layer(rng, hw, c)]


def system_counts(board: str, variant: str, small: bool) -> dict[str, Any]:
    rng = np.random.default_rng(11)
    layers = _board_layers(rng, small)
    calls_opt = [lay.xcall(np.random.default_rng(1), variant) for lay in layers]
    calls_ref = [lay.xcall(np.random.default_rng(1), "ref") for lay in layers]
    opt = xr.run(xr.XTarget(f"{variant}@{board}", variant, board), calls_opt, WORK)
    ref = xr.run(xr.XTarget(f"ref@{board}", "ref", board), calls_ref, WORK)
    out: dict[str, Any] = {}
    for lay, a, b in zip(layers, opt, ref, strict=True):
        same = all(np.array_equal(a.outputs[t], b.outputs[t]) for t in a.outputs)
        out[lay.name + (" xnor" if "xnor" in lay.call.symbol else "")] = {
            "macs": lay.macs, "ref": b.count, variant: a.count, "bit_identical": same}
    return out


def tb_crosscheck(board: str, variant: str) -> dict[str, Any]:
    """The M4 conv counted both ways: SysTick under -icount, and QEMU's translation log."""
    rng = np.random.default_rng(11)
    lay = _board_layers(rng, False)[0]
    target = xr.XTarget(f"{variant}@{board}", variant, board)
    call = [lay.xcall(np.random.default_rng(1), variant)]
    timer = xr.run(target, call, WORK)[0].count
    logged = xr.system_log_count(target, call, WORK)
    return {"layer": lay.name, "timer": timer, "translation_log": logged}


def user_counts(board: str, layers_small: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(11)
    layers = _board_layers(rng, layers_small)
    calls_opt = [lay.xcall(np.random.default_rng(1), "neon") for lay in layers]
    calls_ref = [lay.xcall(np.random.default_rng(1), "ref") for lay in layers]
    t_opt, t_ref = xr.XTarget(f"neon@{board}", "neon", board), xr.XTarget(f"ref@{board}", "ref", board)
    res_opt, res_ref = xr.run(t_opt, calls_opt, WORK), xr.run(t_ref, calls_ref, WORK)
    out: dict[str, Any] = {}
    for i, lay in enumerate(layers):
        same = all(np.array_equal(res_opt[i].outputs[t], res_ref[i].outputs[t]) for t in res_opt[i].outputs)
        out[lay.name + (" xnor" if "xnor" in lay.call.symbol else "")] = {
            "macs": lay.macs, "ref": xr.user_count(t_ref, calls_ref, i, WORK),
            "neon": xr.user_count(t_opt, calls_opt, i, WORK), "bit_identical": same}
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def _pairs(d: dict[str, Any], opt: str, int8_variant: str) -> dict[str, float | None]:
    """binary (optimized) vs int8 (``int8_variant``) instruction ratio per layer shape."""
    out = {}
    for name, r in d.items():
        if name.endswith(" xnor"):
            int8 = d[name.removesuffix(" xnor")]
            out[name.removesuffix(" xnor")] = _ratio(int8[int8_variant], r[opt])
    return out


def emulated_section() -> dict[str, Any]:
    m4 = system_counts("mps2-an386", "armv7em", small=False)
    m0 = system_counts("microbit", "armv6m", small=True)
    users = {board: user_counts(board) for board in ("rpi4", "rpi5", "rpi3-32bit")}
    summary: dict[str, Any] = {
        "m4_int8_dsp_vs_ref": {k: _ratio(v["ref"], v["armv7em"]) for k, v in m4.items()
                               if not k.endswith(" xnor")},
        "m4_binary_vs_int8": _pairs(m4, "armv7em", "armv7em"),
        "m4_binary_vs_ref_binary": {k: _ratio(v["ref"], v["armv7em"]) for k, v in m4.items()
                                    if k.endswith(" xnor")},
        # the M0 has no optimized int8 kernels: its int8 is the reference
        "m0_binary_vs_int8": _pairs(m0, "armv6m", "ref"),
        "m0_binary_vs_ref_binary": {k: _ratio(v["ref"], v["armv6m"]) for k, v in m0.items()
                                    if k.endswith(" xnor")},
    }
    for board, name in (("rpi4", "a72"), ("rpi5", "a76"), ("rpi3-32bit", "a7")):
        summary[f"{name}_neon_vs_ref"] = {k: _ratio(v["ref"], v["neon"]) for k, v in users[board].items()}
        summary[f"{name}_binary_vs_int8"] = _pairs(users[board], "neon", "neon")
    return {"mps2-an386": m4, "microbit": m0, **users, "summary": summary,
            "crosscheck_m4": tb_crosscheck("mps2-an386", "armv7em")}


# ---------------------------------------------------------------------------------------------
# Report.


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "—" if v is None else format(v, spec)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError, StopIteration):
        model = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name"))
    return {"cpu": model, "arch": isa.host_arch(), "features": sorted(isa.host_features()),
            "python": platform.python_version(), "numpy": np.__version__,
            "date": datetime.date.today().isoformat(),
            "gcc": subprocess.run(["gcc", "--version"], capture_output=True,
                                  text=True).stdout.splitlines()[0]}


def document(host: dict[str, Any], emu: dict[str, Any] | None) -> dict[str, Any]:
    big = host["largest"]
    doc: dict[str, Any] = {
        "machine": machine(),
        "binary_vs_float_c": big["binary_vs_float_c"],
        "binary_vs_int8_c": big["binary_vs_int8_c"],
        "binary_vs_numpy_blas": big["binary_vs_numpy"],
        "popcount_peak_fraction": big["bits_per_tsc_cycle"] / host["peak_bits_per_cycle"],
        "popcount_peak_bits_per_cycle": host["peak_bits_per_cycle"],
        "x86_level": host["level"], "x86_flags": host["flags"],
        "host": host["rows"], "x86_levels": host["levels"],
    }
    conv = [r for r in host["rows"] if r["kind"] == "conv"]
    if conv:
        biggest = max(conv, key=lambda r: r["macs"])
        doc["conv_binary_vs_float_c"] = biggest["binary_vs_float_c"]
        doc["conv_binary_vs_int8_c"] = biggest["binary_vs_int8_c"]
    doc["targets_met"] = {"binary_vs_float_c>=20": doc["binary_vs_float_c"] >= 20,
                          "binary_vs_int8_c>=4": doc["binary_vs_int8_c"] >= 4}
    if emu is not None:
        doc["emulated"] = emu
        doc.update(emu["summary"])
        doc["targets_met"]["m4_int8_dsp_vs_ref>=2"] = {
            k: (v is not None and v >= 2) for k, v in emu["summary"]["m4_int8_dsp_vs_ref"].items()}
        doc["counting_method"] = {
            "qemu-system": "QEMU -icount shift=N; board timer (SysTick / nRF TIMER0) around each call; "
                           "instructions = ticks * 1e9 / timer_hz / 2^N, minus an empty call",
            "qemu-user": "QEMU -d in_asm,exec,nochain: sum of the instruction counts of the translation "
                         "blocks executed between two marker functions, minus an empty call"}
    return doc


def print_tables(doc: dict[str, Any]) -> None:
    con = Console()
    m = doc["machine"]
    con.print(f"{m['cpu']} ({m['arch']}; x86 level {doc['x86_level']}), {m['gcc']}, numpy {m['numpy']}, "
              f"{m['date']}; one thread")
    t = Table(title="Host: time per call (µs) and speed-up of the binary kernel")
    for col in ("layer", "MACs", "binary x86", "binary ref", "int8 ref", "f32 ref", "f32 numpy",
                "×f32 C", "×int8 C", "×numpy", "bits/cycle"):
        t.add_column(col, justify="right")
    for r in doc["host"]:
        t.add_row(r["shape"], f"{r['macs']:,}", *(f"{r[k + ' s'] * 1e6:,.1f}" for k in (
            "binary x86", "binary ref", "int8 ref", "f32 ref", "f32 numpy")),
            _fmt(r["binary_vs_float_c"]), _fmt(r["binary_vs_int8_c"]), _fmt(r["binary_vs_numpy"]),
            _fmt(r["bits_per_tsc_cycle"], ".0f"))
    con.print(t)
    if doc["x86_levels"]:
        t = Table(title="Binary GEMM (largest) per x86 code path")
        for col in ("path", "µs", "bits/TSC cycle", "of that path's popcount peak"):
            t.add_column(col, justify="right")
        for r in doc["x86_levels"]:
            t.add_row(r["level"], f"{r['s'] * 1e6:,.1f}", _fmt(r["bits_per_tsc_cycle"], ".0f"),
                      _fmt(None if r["peak_fraction"] is None else 100 * r["peak_fraction"], ".0f") + "%")
        con.print(t)
    if "emulated" in doc:
        emu = doc["emulated"]
        for board, variant in (("mps2-an386", "armv7em"), ("microbit", "armv6m"), ("rpi4", "neon"),
                               ("rpi5", "neon"), ("rpi3-32bit", "neon")):
            t = Table(title=f"{board}: instructions per call ({variant} vs ref)")
            for col in ("layer", "MACs", "ref", variant, "ref/opt", "instr/MAC opt", "bit-identical"):
                t.add_column(col, justify="right")
            for name, r in emu[board].items():
                t.add_row(name, f"{r['macs']:,}", f"{r['ref']:,.0f}", f"{r[variant]:,.0f}",
                          _fmt(_ratio(r["ref"], r[variant])), _fmt(r[variant] / r["macs"], ".2f"),
                          str(r["bit_identical"]))
            con.print(t)
        cc = emu["crosscheck_m4"]
        con.print(f"M4 {cc['layer']}: SysTick/-icount {cc['timer']:,.0f} instructions, translation log "
                  f"{cc['translation_log']:,} instructions")
    for line in target_lines(doc):
        con.print(line)


def target_lines(doc: dict[str, Any]) -> list[str]:
    """One line per target: met / MISSED with the figure."""
    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    vf, vi = doc["binary_vs_float_c"], doc["binary_vs_int8_c"]
    lines = [f"binary >= 20x faster than our float32 C (largest GEMM): {verdict(vf >= 20)} "
             f"({vf:.1f}x; conv {doc.get('conv_binary_vs_float_c', 0):.1f}x)",
             f"binary >= 4x faster than our int8 C (largest GEMM): {verdict(vi >= 4)} "
             f"({vi:.1f}x; conv {doc.get('conv_binary_vs_int8_c', 0):.1f}x)",
             f"popcount peak fraction (largest GEMM, {doc['x86_level']}): "
             f"{doc['popcount_peak_fraction']:.2f} of {doc['popcount_peak_bits_per_cycle']} bits/cycle"]
    if "m4_int8_dsp_vs_ref" in doc:
        for layer, r in doc["m4_int8_dsp_vs_ref"].items():
            lines.append(f"M4 int8 DSP >= 2x fewer instructions than ref, {layer}: "
                         f"{verdict(r is not None and r >= 2)} ({_fmt(r, '.2f')}x)")
    return lines


def all_bit_identical(doc: dict[str, Any]) -> bool:
    emu = doc.get("emulated", {})
    return all(r["bit_identical"] for board in ("mps2-an386", "microbit", "rpi4", "rpi5", "rpi3-32bit")
               for r in emu.get(board, {}).values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print a JSON document instead of tables")
    ap.add_argument("--quick", action="store_true", help="smaller host shapes, shorter timing")
    ap.add_argument("--no-emulated", action="store_true", help="host only")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    host = host_section(args.quick, args.repeats)
    emu = None if args.no_emulated else emulated_section()
    doc = document(host, emu)
    if args.json:
        print(json.dumps(doc, indent=2, default=float))
    else:
        print_tables(doc)
    if not all_bit_identical(doc):
        print("error: an optimized kernel's output differs from ref's on an emulated target", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
