"""Every optimized kernel variant against the same vectors, on its own (emulated) target.

One parametrised suite: ``target × case``.  A *target* is a kernel variant on a machine that runs
it (``targets/isa.py`` picks variants from ISA features):

* host, through cffi: ``ref``; ``x86`` at every code path this CPU supports (portable, POPCNT,
  AVX2, AVX-512 VPOPCNTDQ — built with the ``-m`` flags ``targets.isa`` maps to each; paths the
  CPU lacks are skipped with the reason); ``armv7em``/``armv6m`` compiled for the host, which
  runs their exact portable C twins of the DSP instructions (a fast check of the algorithms);
* qemu-user (static Linux programs, explicit ``-cpu``): ``neon`` on the Pi 4 profile
  (Cortex-A72), the Pi 5 profile (Cortex-A76, SDOT) and 32-bit Pi OS (Cortex-A7, Armv7 NEON);
* qemu-system: ``armv7em`` on ``mps2-an386`` (Cortex-M4 DSP) and ``mps2-an505`` (Cortex-M33),
  ``armv6m`` on the micro:bit (Cortex-M0, 16 KiB RAM: the small cases only).

A *case* is one kernel call with fixed data (seeded from the case name, so every target gets the
same vectors): the int8 convolutions, depthwise convolutions and fully-connected layers (odd
channel counts, odd spatial sizes, strides, dilation, padding, batches, per-tensor filters with
a zero point, weights of -128 with inputs of -128), and XNOR-popcount / BWN layers compressed by
method ``binary`` (HORQ orders, activation planes 1-3, depths 1…1000).  Expected values: the
numpy oracle for int8 ops (itself checked against TFLite), the compressed layer's numpy forward
for binary layers.  Every target must be bit-identical, ask for exactly the scratch bytes
``firmware_gen/lower.py`` predicts, and leave the guard bytes around its output untouched.
Cross targets build one program with all their cases and run it once (``tests/kernel_xrun.py``).
``BOARDFIT_SANITIZE=1`` reruns the host targets in a child under ASan + UBSan.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import cffi
import kernel_harness as kh
import kernel_xrun as xr
import numpy as np
import pytest
from binlr_support import conv_case, fc_case
from opgen import (
    GraphBuilder,
    bias_quant,
    extreme_quant,
    rand_bias,
    rand_per_channel,
    rand_quant,
    rand_weights,
)

from firmware_gen.lower import ConstArray, KernelCall, Struct, TensorArg, lower_op
from targets import isa
from toolkit.compress import binary
from toolkit.compress.base import Calibration, LayerRef
from toolkit.compress.registry import get_method
from toolkit.model.ir import (
    Activation,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    FullyConnectedOptions,
    Graph,
    Padding,
    QuantParams,
)
from toolkit.oracle import Oracle
from toolkit.oracle.padding import out_size

# With BOARDFIT_SANITIZE=1 this process only starts a child that runs the host targets with
# ASan + UBSan (tests/kernel_harness.py); the child builds the host libraries sanitized.
_DELEGATED = kh.sanitize_requested() and not kh.asan_loaded()
in_process = pytest.mark.skipif(_DELEGATED, reason="runs in the sanitized child process")

A, S, V = Activation, Padding.SAME, Padding.VALID
WORK = Path(tempfile.gettempdir()) / "boardfit-kernels" / "xrun"


# ---------------------------------------------------------------------------------------------
# Cases.


Make = Callable[[np.random.Generator], Graph]
CaseData = tuple[Graph, "KernelCall | None", "Callable[..., Any] | None"]


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[np.random.Generator], CaseData]
    small: bool = False  # fits the micro:bit (16 KiB RAM) with everything else

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(zlib.crc32(self.id.encode()))


def _out_q(rng: np.random.Generator, kind: str | None, lo: float, hi: float) -> QuantParams:
    """Output quantization; ``kind`` "tiny"/"huge" gives multipliers with left / long right shifts."""
    return extreme_quant(rng, kind=kind) if kind else rand_quant(rng, lo, hi)


def _conv(x: tuple[int, int, int, int], oc: int, k: tuple[int, int], stride: tuple[int, int] = (1, 1),
          dil: tuple[int, int] = (1, 1), padding: Padding = S, act: Activation = A.NONE, groups: int = 1,
          extreme: bool = False, out_kind: str | None = None) -> Callable[[np.random.Generator], Graph]:
    def build(rng: np.random.Generator) -> Graph:
        n, h, w, c = x
        oh = out_size(padding, h, k[0], stride[0], dil[0])
        ow = out_size(padding, w, k[1], stride[1], dil[1])
        b = GraphBuilder("conv")
        xq = QuantParams((0.02,), (127,)) if extreme else rand_quant(rng, -2.0, 2.0)
        xt = b.input(x, "int8", quant=xq)
        wq = rand_per_channel(rng, oc)
        wv = rand_weights(rng, (oc, *k, c // groups))
        if extreme:  # -128 * -128 products: pairs of them overflow int16
            wv = np.where(rng.random(wv.shape) < 0.7, -128, 127).astype(np.int8)
        wt = b.const(wv, quant=wq)
        bt = b.const(rand_bias(rng, oc), quant=bias_quant(b.quant(xt), wq))
        y = b.output((n, oh, ow, oc), "int8", quant=_out_q(rng, out_kind, -6.0, 6.0))
        b.op("CONV_2D", [xt, wt, bt], [y], Conv2DOptions(padding, *stride, *dil, act))
        return b.build()
    return build


def _dw(x: tuple[int, int, int, int], mult: int, k: tuple[int, int], stride: tuple[int, int] = (1, 1),
        dil: tuple[int, int] = (1, 1), padding: Padding = S, act: Activation = A.NONE,
        bias: bool = True, out_kind: str | None = None) -> Callable[[np.random.Generator], Graph]:
    def build(rng: np.random.Generator) -> Graph:
        n, h, w, c = x
        oc = c * mult
        oh = out_size(padding, h, k[0], stride[0], dil[0])
        ow = out_size(padding, w, k[1], stride[1], dil[1])
        b = GraphBuilder("dw")
        xt = b.input(x, "int8", quant=rand_quant(rng, -2.0, 2.0))
        wq = rand_per_channel(rng, oc, axis=3)
        wt = b.const(rand_weights(rng, (1, *k, oc)), quant=wq)
        bt = b.const(rand_bias(rng, oc), quant=bias_quant(b.quant(xt), wq)) if bias else -1
        y = b.output((n, oh, ow, oc), "int8", quant=_out_q(rng, out_kind, -6.0, 6.0))
        opts = DepthwiseConv2DOptions(padding, *stride, mult, *dil, act)
        b.op("DEPTHWISE_CONV_2D", [xt, wt, bt], [y], opts)
        return b.build()
    return build


def _fc(x: tuple[int, ...], units: int, per_channel: bool = True, filter_zp: int = 0,
        act: Activation = A.NONE, bias: bool = True,
        out_kind: str | None = None) -> Callable[[np.random.Generator], Graph]:
    def build(rng: np.random.Generator) -> Graph:
        depth = x[-1]
        b = GraphBuilder("fc")
        xt = b.input(x, "int8", quant=rand_quant(rng, -2.0, 2.0))
        wq = rand_per_channel(rng, units) if per_channel else QuantParams((0.015,), (filter_zp,))
        wv = rand_weights(rng, (units, depth))
        if filter_zp:
            wv = np.clip(wv.astype(np.int64) + filter_zp, -128, 127).astype(np.int8)
        wt = b.const(wv, quant=wq)
        bt = b.const(rand_bias(rng, units), quant=bias_quant(b.quant(xt), wq)) if bias else -1
        y = b.output((int(np.prod(x)) // depth, units), "int8", quant=_out_q(rng, out_kind, -8.0, 8.0))
        b.op("FULLY_CONNECTED", [xt, wt, bt], [y], FullyConnectedOptions(act))
        return b.build()
    return build


def _int8(make: Make) -> Callable[[np.random.Generator], CaseData]:
    return lambda rng: (make(rng), None, None)


def _compressed(make: Make, mode: str, order: int,
                act_order: int | None = None) -> Callable[[np.random.Generator], CaseData]:
    def build(rng: np.random.Generator) -> CaseData:
        graph = make(rng)
        x = graph.tensors[graph.inputs[0]]
        xs = rng.integers(-128, 128, size=(8, *x.shape[1:])).astype(np.int8)
        ref = np.concatenate([Oracle(graph).run([xs[i:i + x.shape[0]].reshape(x.shape)]).outputs[0]
                              for i in range(0, 8 - x.shape[0] + 1, x.shape[0])])
        comp = get_method("binary").apply(LayerRef(graph, graph.ops[0]),
                                         binary.binary_setting(mode, order, act_order), Calibration(xs, ref))
        return graph, comp.call, comp.forward
    return build


def _synthetic_xnor(kind: str, mult: int, shift: int) -> Callable[[np.random.Generator], CaseData]:
    """An XNOR layer (2 weight planes, 2 activation planes) with random signs, coefficients and
    bias and the given multiplier/shift for every channel."""
    def build(rng: np.random.Generator) -> CaseData:
        graph = (conv_case((2, 6, 7, 45), 10, kernel=(3, 3)) if kind == "conv" else fc_case((9, 70), 7))(rng)
        op = graph.ops[0]
        x, y = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        c, oc = x.shape[-1], y.shape[-1]
        words, taps = -(-c // 32), 9 if kind == "conv" else 1
        signs = rng.integers(0, 2**32, size=(oc, 2, taps, words), dtype=np.uint64).astype(np.uint32)
        signs[..., -1] &= np.uint32((1 << (c % 32)) - 1) if c % 32 else np.uint32(0xFFFFFFFF)
        fields: list[tuple[str, Any]] = []
        if kind == "conv":
            def dims(n: int, h: int, w: int, ch: int) -> Struct:
                return Struct("bf_dims4", (("n", n), ("h", h), ("w", w), ("c", ch)))

            fields += [("input", dims(*x.shape)), ("filter", dims(oc, 3, 3, c)), ("output", dims(*y.shape)),
                       ("stride_h", 1), ("stride_w", 1), ("dilation_h", 1), ("dilation_w", 1),
                       ("pad_top", 1), ("pad_left", 1)]
        else:
            fields += [("batches", x.shape[0]), ("depth", c), ("units", oc)]

        def ints(ctype: str, v: Any) -> ConstArray:
            return ConstArray(ctype, tuple(int(a) for a in np.asarray(v).reshape(-1)))

        fields += [("words", words), ("planes", 2), ("act_planes", 2), ("output_offset", -5),
                   ("act_min", -128), ("act_max", 127), ("act_threshold", ints("int32_t", [-10, -60, 40])),
                   ("weights", ints("uint32_t", signs)),
                   ("coef", ints("int16_t", rng.integers(-400, 400, 6 * oc))),
                   ("bias", ints("int32_t", rng.integers(-20000, 20000, oc))),
                   ("multiplier", ints("int32_t", [mult] * oc)), ("shift", ints("int32_t", [shift] * oc))]
        symbol = f"bf_{'conv2d' if kind == 'conv' else 'fully_connected'}_xnor_s8"
        scratch = (x.shape[1] * x.shape[2] if kind == "conv" else 1) * 2 * words * 4
        call = KernelCall(op.index, op.opcode, symbol, f"{symbol}_params", tuple(fields),
                          (TensorArg(x.index, "int8_t"), TensorArg(y.index, "int8_t", output=True)), "binary",
                          takes_scratch=True, scratch_bytes=scratch)
        return graph, call, None
    return build


def _cases() -> list[Case]:
    c = [
        Case("conv_3x3_same_c3", _int8(_conv((1, 7, 9, 3), 5, (3, 3))), small=True),
        Case("conv_3x2_valid_s21_relu6_b2", _int8(_conv((2, 10, 6, 5), 7, (3, 2), (2, 1), padding=V,
                                                        act=A.RELU6))),
        Case("conv_dil2_relu_c4", _int8(_conv((1, 9, 11, 4), 3, (3, 3), dil=(2, 2), act=A.RELU))),
        Case("conv_1x1_c17", _int8(_conv((1, 5, 3, 17), 19, (1, 1)))),
        Case("conv_5x5_s2_c2", _int8(_conv((1, 13, 12, 2), 6, (5, 5), (2, 2)))),
        Case("conv_grouped", _int8(_conv((1, 6, 5, 6), 4, (3, 3), groups=2))),
        Case("conv_3x3_c16_oc8", _int8(_conv((1, 6, 5, 16), 8, (3, 3))), small=True),
        Case("conv_3x3_s2_c33_oc5", _int8(_conv((1, 7, 6, 33), 5, (3, 3), (2, 2)))),
        Case("conv_1x1_c64_oc9", _int8(_conv((1, 3, 5, 64), 9, (1, 1)))),
        Case("conv_extreme_minus128", _int8(_conv((1, 5, 5, 24), 6, (3, 3), extreme=True))),
        Case("dw_3x3_c5", _int8(_dw((1, 9, 7, 5), 1, (3, 3))), small=True),
        Case("dw_m2_s2_valid_relu6_b2", _int8(_dw((2, 10, 9, 3), 2, (3, 3), (2, 2), padding=V, act=A.RELU6))),
        Case("dw_dil2_c17", _int8(_dw((1, 11, 10, 17), 1, (3, 3), dil=(2, 2)))),
        Case("dw_3x3_s2_c32_nobias", _int8(_dw((1, 8, 9, 32), 1, (3, 3), (2, 2), bias=False))),
        Case("dw_5x5_valid_c8", _int8(_dw((1, 7, 6, 8), 1, (5, 5), padding=V))),
        Case("dw_3x3_c19_relu", _int8(_dw((1, 5, 6, 19), 1, (3, 3), act=A.RELU))),
        Case("fc_37x13_b3", _int8(_fc((3, 37), 13)), small=True),
        Case("fc_per_tensor_zp_45x11", _int8(_fc((2, 45), 11, per_channel=False, filter_zp=3))),
        Case("fc_nobias_flatten", _int8(_fc((1, 4, 4, 5), 7, bias=False))),
        Case("fc_64x17", _int8(_fc((1, 64), 17))),
        Case("fc_100x9_b3_relu", _int8(_fc((3, 100), 9, act=A.RELU))),
        Case("fc_1x5", _int8(_fc((2, 1), 5)), small=True),
        Case("conv_tiny_out_scale", _int8(_conv((1, 5, 6, 8), 6, (3, 3), out_kind="tiny"))),
        Case("dw_tiny_out_scale_c16", _int8(_dw((1, 5, 6, 16), 1, (3, 3), out_kind="tiny"))),
        Case("dw_huge_out_scale_c12", _int8(_dw((1, 6, 5, 12), 1, (3, 3), out_kind="huge"))),
        Case("fc_tiny_out_scale", _int8(_fc((2, 40), 9, out_kind="tiny"))),
        Case("fc_huge_out_scale", _int8(_fc((2, 40), 9, out_kind="huge"))),
    ]
    # XNOR layers with requantization edge cases (left shifts, the longest right shift, the
    # largest multipliers, INT32_MIN): expected values from the reference C kernel.
    for name, mult, shift in (("left5", 1 << 30, 5), ("right31", (1 << 31) - 1, -31),
                              ("right1", (1 << 30) + 12345, -1), ("int32min", -(1 << 31), 2)):
        c.append(Case(f"xnor_requant_{name}_conv", _synthetic_xnor("conv", mult, shift), small=True))
        c.append(Case(f"xnor_requant_{name}_fc", _synthetic_xnor("fc", mult, shift), small=True))
    bins = [
        ("conv3_same_5x7x33", conv_case((1, 5, 7, 33), 6, kernel=(3, 3)), True),
        ("conv3_s2_b2_7x5x40_relu", conv_case((2, 7, 5, 40), 5, kernel=(3, 3), stride=(2, 2),
                                              act=A.RELU, relu_input=True), False),
        ("conv2x3_valid_6x9x5", conv_case((1, 6, 9, 5), 4, kernel=(2, 3), stride=(2, 1), padding=V), True),
        ("conv1_valid_7x7x70", conv_case((1, 7, 7, 70), 9, padding=V), False),
        ("conv3_dil2_9x8x3", conv_case((1, 9, 8, 3), 4, kernel=(3, 3), dilation=(2, 2)), True),
        ("conv3_6x6x64", conv_case((1, 6, 6, 64), 16, kernel=(3, 3)), False),
        ("conv3_4x4x300", conv_case((1, 4, 4, 300), 3, kernel=(3, 3)), False),
        ("fc_37x11", fc_case((1, 37), 11), True),
        ("fc_rows3_70x5_relu", fc_case((3, 70), 5, act=A.RELU, relu_input=True), True),
        ("fc_rows5_300x10", fc_case((5, 300), 10), False),
        ("fc_1000x3", fc_case((1, 1000), 3), False),
    ]
    settings = [("xnor", 1, 1), ("xnor", 2, 2), ("xnor", 3, 3), ("xnor", 1, 3), ("xnor", 2, 1),
                ("bwn", 2, None)]
    for name, make, small in bins:
        for mode, k, a in settings:
            tag = f"{mode}{k}" + (f"a{a}" if a else "")
            c.append(Case(f"{tag}_{name}", _compressed(make, mode, k, a), small=small and (a or 1) <= 2))
    return c


CASES = _cases()


@dataclass(frozen=True)
class Built:
    graph: Graph
    call: KernelCall  # lowered for ref (compressed layers: the method's call)
    x: np.ndarray
    expected: np.ndarray


@cache
def built(case_id: str) -> Built:
    case = next(c for c in CASES if c.id == case_id)
    rng = case.rng()
    graph, call, forward = case.build(rng)
    x_t = graph.tensors[graph.inputs[0]]
    x = rng.integers(-128, 128, size=x_t.shape).astype(np.int8)
    if "extreme" in case_id:
        x = np.full(x_t.shape, -128, np.int8)
    if call is None:
        call = lower_op(graph, graph.ops[0], "ref")
        expected = Oracle(graph).run([x]).outputs[0]
    elif forward is None:  # synthetic: the reference C kernel is the expectation
        values = {t.index: t.data for t in graph.tensors if t.data is not None}
        values[graph.inputs[0]] = x
        expected = host_library("ref", ()).call(call, graph, values)[graph.outputs[0]]
    else:
        expected = np.asarray(forward(x)).reshape(graph.tensors[graph.outputs[0]].shape)
    return Built(graph, call, x, expected)


def call_for(b: Built, variant: str) -> KernelCall:
    """The call a build with ``variant`` makes (lowered ops get the variant's scratch rule)."""
    if b.call.symbol.startswith(("bf_conv2d_xnor", "bf_fully_connected_xnor", "bf_conv2d_binary",
                                 "bf_fully_connected_binary")):
        return b.call
    return lower_op(b.graph, b.graph.ops[0], variant)


# ---------------------------------------------------------------------------------------------
# Targets.


@dataclass(frozen=True)
class Target:
    id: str
    variant: str
    host_flags: tuple[str, ...] | None = None  # host build
    board: str | None = None  # emulated board
    small_only: bool = False

    @property
    def xtarget(self) -> xr.XTarget:
        assert self.board is not None
        return xr.XTarget(self.id, self.variant, self.board)


def _targets() -> list[Target]:
    out = [Target("ref@host", "ref", ())]
    out += [Target(f"x86-{name}@host", "x86", flags) for name, _, flags in isa.X86_LEVELS]
    out += [Target("armv7em-c@host", "armv7em", ()), Target("armv6m-c@host", "armv6m", ())]
    out += [Target("neon@cortex-a72", "neon", board="rpi4"), Target("neon@cortex-a76", "neon", board="rpi5"),
            Target("neon@cortex-a7", "neon", board="rpi3-32bit"),
            Target("armv7em@mps2-an386", "armv7em", board="mps2-an386"),
            Target("armv7em@mps2-an505", "armv7em", board="mps2-an505"),
            Target("armv6m@microbit", "armv6m", board="microbit", small_only=True)]
    return out


TARGETS = _targets()


def _x86_skip(t: Target) -> str | None:
    if t.variant != "x86":
        return None
    level = t.id.split("@")[0].removeprefix("x86-")
    if isa.host_arch() != "x86_64":
        return "not an x86-64 host"
    needs = dict((n, f) for n, f, _ in isa.X86_LEVELS)[level]
    missing = needs - isa.host_features()
    return f"this CPU lacks {', '.join(sorted(missing))}" if missing else None


# Host libraries: every family, cdef of every kernel header.


@cache
def host_library(variant: str, flags: tuple[str, ...]) -> kh.KernelLibrary:
    sources = kh.variant_sources(variant)
    cflags = [*kh.CFLAGS, *flags, *(kh.SANITIZE_FLAGS if kh.sanitize_active() else ())]
    includes = [f"-I{kh.INCLUDE_DIR}", f"-I{kh.KERNELS_DIR / variant}", f"-I{kh.REF_DIR}"]
    digest = hashlib.sha256(" ".join([*cflags, variant]).encode())
    for f in [*kh.kernel_files(), *sources]:
        digest.update(f.name.encode() + f.read_bytes())
    out = WORK.parent / f"simd-{variant}-{digest.hexdigest()[:16]}"
    so = out / "lib.so"
    if not so.exists():
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f"lib.{abs(hash(flags))}.tmp"
        cmd = [kh.CC, *cflags, *includes, *map(str, sources), "-o", str(tmp), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
        tmp.replace(so)
    ffi = cffi.FFI()
    ffi.cdef(xr.library_cdef())
    if variant == "x86":
        ffi.cdef("int bf_x86_binary_level(void);")
    return kh.KernelLibrary(variant, so, False, ffi, ffi.dlopen(str(so)), flags)


def _xcall(case: Case, variant: str) -> xr.XCall:
    b = built(case.id)
    call = call_for(b, variant)
    values = {t.index: t.data for t in b.graph.tensors if t.data is not None}
    values[b.graph.inputs[0]] = b.x
    out = b.graph.tensors[b.graph.outputs[0]]
    return xr.XCall(case.id, call, values, {out.index: out.dtype.numpy}, {out.index: out.num_elements})


@cache
def cross_results(target_id: str) -> dict[str, xr.XResult]:
    t = next(t for t in TARGETS if t.id == target_id)
    cases = [c for c in CASES if c.small or not t.small_only]
    calls = [_xcall(c, t.variant) for c in cases]
    results = xr.run(t.xtarget, calls, WORK)
    return {c.id: r for c, r in zip(cases, results, strict=True)}


# ---------------------------------------------------------------------------------------------
# The suite.


@in_process
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("target", TARGETS, ids=[t.id for t in TARGETS])
def test_variant_bit_identical(target: Target, case: Case) -> None:
    b = built(case.id)
    call = call_for(b, target.variant)
    out = b.graph.outputs[0]
    if target.host_flags is not None:
        reason = _x86_skip(target)
        if reason:
            pytest.skip(reason)
        lib = host_library(target.variant, target.host_flags)
        assert lib.scratch_bytes(call) == call.scratch_bytes, "C and lower.py disagree on scratch"
        values = {t.index: t.data for t in b.graph.tensors if t.data is not None}
        values[b.graph.inputs[0]] = b.x
        got = lib.call(call, b.graph, values)[out]
    else:
        if target.small_only and not case.small:
            pytest.skip(f"{target.board}: only the small cases fit its 16 KiB of RAM")
        missing = target.xtarget.missing_tools()
        if missing:
            pytest.skip(f"not installed: {', '.join(missing)}")
        res = cross_results(target.id)[case.id]
        assert res.guards_ok, f"{target.id}: the kernel wrote outside its output"
        if call.takes_scratch:
            assert res.scratch_bytes == call.scratch_bytes, "C and lower.py disagree on scratch"
        got = res.outputs[out].reshape(b.expected.shape)
    np.testing.assert_array_equal(got, b.expected, err_msg=f"{target.id} {call.symbol}")


@in_process
def test_x86_paths_are_the_ones_asked_for() -> None:
    """Each host x86 build really compiled the code path of its -m flags."""
    for k, (name, _, flags) in enumerate(isa.X86_LEVELS):
        t = Target(f"x86-{name}@host", "x86", flags)
        if _x86_skip(t):
            continue
        assert host_library("x86", flags).lib.bf_x86_binary_level() == k, name


# ---------------------------------------------------------------------------------------------
# Variant choice (targets/isa.py): a pure function of board data.


@in_process
def test_board_variants() -> None:
    from toolkit.boards import load_board

    want = {"mps2-an386": ("armv7em", "ref"), "mps2-an500": ("armv7em", "ref"),
            "mps2-an505": ("armv7em", "ref"), "microbit": ("armv6m", "ref"), "pico": ("armv6m", "ref"),
            "lm3s6965evb": ("ref",), "rpi4": ("neon", "ref"), "rpi5": ("neon", "ref"),
            "rpi3-32bit": ("neon", "ref"), "hifive1": ("ref",), "esp32-s3": ("ref",)}
    for board, variants in want.items():
        assert isa.board_variants(load_board(board)) == variants, board
    assert isa.variant_cflags("neon", isa.target_of(load_board("rpi5"))) == ()


@in_process
def test_x86_flags_follow_cpu_features() -> None:
    t = isa.IsaTarget("x86_64", frozenset({"popcnt", "avx2"}))
    assert isa.kernel_variants(t) == ("x86", "ref")
    assert isa.variant_cflags("x86", t) == ("-mpopcnt", "-mavx2")
    full = isa.IsaTarget("x86_64", frozenset({"popcnt", "avx2", "avx512", "avx512-vpopcntdq"}))
    assert "-mavx512vpopcntdq" in isa.variant_cflags("x86", full)
    assert isa.variant_cflags("x86", isa.IsaTarget("x86_64", frozenset())) == ()
    no_vpop = isa.IsaTarget("x86_64", frozenset({"popcnt", "avx2", "avx512"}))
    assert isa.x86_level(no_vpop.features) == "avx2"


@in_process
def test_cpuinfo_parsing() -> None:
    x86 = "processor: 0\nflags\t\t: fpu sse4_2 popcnt avx2 avx512f avx512bw avx512vl avx512_vpopcntdq\n"
    assert isa.features_from_cpuinfo(x86, "x86_64") == {"sse4.2", "popcnt", "avx2", "avx512",
                                                        "avx512-vpopcntdq"}
    arm = "Features\t: fp asimd evtstrm crc32 asimddp\n"
    assert isa.features_from_cpuinfo(arm, "aarch64") == {"fpu", "neon", "crc", "dotprod"}
    assert isa.features_from_cpuinfo("nothing", "x86_64") == frozenset()


@in_process
def test_layer_variant_records_fallbacks() -> None:
    """A layer runs the optimized code only where the variant has it for that geometry."""
    grouped = built("conv_grouped").call
    plain = built("conv_3x3_c16_oc8").call
    dw_m2 = built("dw_m2_s2_valid_relu6_b2").call
    assert isa.layer_variant(("armv7em", "ref"), plain) == "armv7em"
    assert isa.layer_variant(("armv7em", "ref"), grouped) == "ref"
    assert isa.layer_variant(("neon", "ref"), dw_m2) == "ref"
    assert isa.layer_variant(("armv6m", "ref"), plain) == "ref"  # no int8 conv for the M0
    xnor_big = built("xnor3a3_conv3_4x4x300").call
    assert isa.layer_variant(("x86", "ref"), xnor_big) == "x86"
    assert isa.layer_variant(("armv7em", "ref"), xnor_big) == "ref"  # 3 x 90 words > 256


@in_process
def test_variant_tables_match_sources() -> None:
    """targets/isa.py claims a kernel only where the variant directory has its family."""
    for v in isa.VARIANTS:
        for symbol in v.kernels:
            family = {"bf_conv2d_s8": "conv", "bf_depthwise_conv2d_s8": "depthwise_conv",
                      "bf_fully_connected_s8": "fully_connected"}.get(symbol, "binary")
            assert (kh.KERNELS_DIR / v.name / f"{family}.c").is_file(), (v.name, symbol)
            src = (kh.KERNELS_DIR / v.name / f"{family}.c").read_text()
            assert re.search(rf"^void {symbol}\(", src, re.M), (v.name, symbol)


_M_CPUS = {"cortex-m4": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
           "cortex-m7": ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"],
           "cortex-m33": ["-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"],
           "cortex-m0plus": ["-mcpu=cortex-m0plus", "-mthumb"]}


@in_process
@pytest.mark.cross
@pytest.mark.parametrize("cpu", sorted(_M_CPUS))
def test_m_profile_variants_compile(cpu: str) -> None:
    """The Cortex-M variants build warning-free for every core they may be chosen for."""
    cc = shutil.which("arm-none-eabi-gcc")
    if cc is None:
        pytest.skip("arm-none-eabi-gcc is not installed")
    variant = "armv6m" if cpu == "cortex-m0plus" else "armv7em"
    for src in sorted((kh.KERNELS_DIR / variant).glob("*.c")):
        cmd = [cc, *_M_CPUS[cpu], "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", f"-I{kh.INCLUDE_DIR}",
               f"-I{kh.KERNELS_DIR / variant}", f"-I{kh.REF_DIR}", "-c", str(src), "-o", "/dev/null"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"


@in_process
def test_variant_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """$BOARDFIT_KERNEL_VARIANTS replaces the ISA choice (e.g. ``ref`` for comparisons)."""
    from toolkit.boards import load_board

    rpi4 = load_board("rpi4")
    monkeypatch.setenv(isa.OVERRIDE_ENV, "ref")
    assert isa.board_variants(rpi4) == ("ref",)
    monkeypatch.setenv(isa.OVERRIDE_ENV, "neon, ref")
    assert isa.board_variants(rpi4) == ("neon", "ref")
    monkeypatch.setenv(isa.OVERRIDE_ENV, "sse9")
    with pytest.raises(ValueError, match="unknown kernel variant"):
        isa.board_variants(rpi4)


@pytest.mark.skipif(not _DELEGATED, reason="set BOARDFIT_SANITIZE=1 to run the host variants sanitized")
def test_host_variants_under_asan_and_ubsan() -> None:
    """The host targets again (every variant and x86 path, all cases) in a child with the ASan
    runtime preloaded and the libraries built with -fsanitize=address,undefined."""
    if kh.asan_runtime() is None:
        pytest.skip(f"{kh.CC} has no AddressSanitizer runtime")
    proc, sanitizer_log = kh.run_sanitized_pytest(__file__, ["-k", "host"])
    report = (proc.stdout + proc.stderr)[-4000:] + sanitizer_log[:6000]
    assert proc.returncode == 0, f"sanitized variant tests failed (exit {proc.returncode}):\n{report}"
    assert " passed" in proc.stdout, report
