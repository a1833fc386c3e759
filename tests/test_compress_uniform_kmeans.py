"""Methods int8, quant and kmeans: exact storage, C kernels bit for bit, accuracy recovery.

* Exact bytes: ``Option.flash_bytes`` equals ``call_flash_bytes(call)`` and the sum of
  ``array_flash_bytes`` over the call's constant arrays, and ``apply`` keeps the option.
* Every compressed layer's numpy ``forward`` equals its C kernel (``kernels/<variant>/packed.c``
  through cffi, the harness of tests/kernel_harness.py) bit for bit, on FC, conv and depthwise
  layers with odd shapes, strides, dilation, groups, every bit width.
* Recovery (clipping search, bias correction, GPTQ, codebook refit) lowers the output error on
  calibration data of real layers (the digits MLP and CNN).

``BOARDFIT_SANITIZE=1`` reruns the kernel cases in a child under ASan/UBSan, as
tests/test_kernels_ref.py does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import cffi
import kernel_harness as kh
import numpy as np
import pytest
from opgen import GraphBuilder, bias_quant, rand_bias, rand_input, rand_per_channel, rand_quant, rand_weights

from firmware_gen.lower import ConstArray, lower_op
from toolkit.compress.base import (
    Calibration,
    LayerRef,
    Setting,
    array_flash_bytes,
    call_flash_bytes,
    const_arrays,
)
from toolkit.compress.common import pack_bits, unpack_bits
from toolkit.compress.registry import get_method
from toolkit.datasets import load_dataset
from toolkit.model.ir import (
    Activation,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    FullyConnectedOptions,
    Graph,
    Padding,
)
from toolkit.model.tflite import read_tflite
from toolkit.oracle import Oracle
from toolkit.oracle.padding import out_size
from toolkit.oracle.profile import Arithmetic

_DELEGATED = kh.sanitize_requested() and not kh.asan_loaded()
in_process = pytest.mark.skipif(_DELEGATED, reason="runs in the sanitized child process")

MODELS = Path(__file__).parent.parent / "examples" / "models"
PACKED_HEADER = kh.INCLUDE_DIR / "bf_packed.h"
# The kernel families these tests call: the compressed formats and the dense int8 kernels.
_FAMILIES = ("packed", "fully_connected", "conv", "depthwise_conv")


# ---------------------------------------------------------------------------------------------
# The kernel library: the families above of one variant (ref as fallback), with the cdef of
# bf_kernels.h plus bf_packed.h.


def _cdef_region(path: Path) -> str:
    text = path.read_text()
    begin, end = text.index("/* BF_CDEF_BEGIN"), text.index("/* BF_CDEF_END */")
    region = text[text.index("\n", begin) + 1 : text.rindex("\n", 0, end)]
    return "\n".join(ln for ln in region.splitlines() if not ln.lstrip().startswith("#"))


_LIBS: dict[tuple[str, bool], kh.KernelLibrary] = {}


def packed_library(variant: str) -> kh.KernelLibrary:
    san = kh.sanitize_active()
    if (variant, san) in _LIBS:
        return _LIBS[(variant, san)]
    sources = []
    for fam in _FAMILIES:
        own = kh.KERNELS_DIR / variant / f"{fam}.c"
        sources.append(own if own.exists() else kh.REF_DIR / f"{fam}.c")
    flags = [*kh.CFLAGS, *(kh.SANITIZE_FLAGS if san else ())]
    includes = [f"-I{kh.INCLUDE_DIR}", f"-I{kh.KERNELS_DIR / variant}", f"-I{kh.REF_DIR}"]
    digest = hashlib.sha256(" ".join(flags).encode())
    for f in [*sorted(kh.INCLUDE_DIR.glob("*.h")), *sorted(kh.REF_DIR.glob("*.h")), *sources]:
        digest.update(f.name.encode() + f.read_bytes())
    out = Path(tempfile.gettempdir()) / "boardfit-kernels" / f"packed-{variant}-{digest.hexdigest()[:16]}"
    so = out / ("lib_san.so" if san else "lib.so")
    if not so.exists():
        out.mkdir(parents=True, exist_ok=True)
        tmp = so.with_suffix(f".{id(out)}.tmp")
        cmd = [kh.CC, *flags, *includes, *map(str, sources), "-o", str(tmp), "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
        tmp.replace(so)
    ffi = cffi.FFI()
    ffi.cdef(kh.cdef_source())
    body = _cdef_region(PACKED_HEADER)
    for name, value in re.findall(r"^#define\s+(\w+)\s+(\d+)\s*$", PACKED_HEADER.read_text(), flags=re.M):
        body = re.sub(rf"\b{name}\b", value, body)
    ffi.cdef(body)
    lib = kh.KernelLibrary(variant, so, san, ffi, ffi.dlopen(str(so)))
    _LIBS[(variant, san)] = lib
    return lib


@pytest.fixture(params=kh.variants())
def lib(request: pytest.FixtureRequest) -> kh.KernelLibrary:
    return packed_library(request.param)


# ---------------------------------------------------------------------------------------------
# Single-layer graphs.

Builder = Callable[[np.random.Generator], Graph]


def _fc(batch: int, depth: int, units: int, act: Activation = Activation.NONE) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        b = GraphBuilder("fc")
        x = b.input((batch, depth), "int8", quant=rand_quant(rng, -2, 2))
        wq = rand_per_channel(rng, units)
        w = b.const(rand_weights(rng, (units, depth)), quant=wq)
        bias = b.const(rand_bias(rng, units), quant=bias_quant(b.quant(x), wq))
        y = b.output((batch, units), "int8", quant=rand_quant(rng, -6, 6))
        b.op("FULLY_CONNECTED", [x, w, bias], [y], FullyConnectedOptions(act))
        return b.build()
    return build


def _conv(shape: tuple[int, int, int, int], oc: int, k: tuple[int, int], stride: tuple[int, int] = (1, 1),
          dil: tuple[int, int] = (1, 1), padding: Padding = Padding.SAME, groups: int = 1,
          act: Activation = Activation.NONE, bias: bool = True) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        n, h, w, c = shape
        oh, ow = out_size(padding, h, k[0], stride[0], dil[0]), out_size(padding, w, k[1], stride[1], dil[1])
        b = GraphBuilder("conv")
        x = b.input(shape, "int8", quant=rand_quant(rng, -2, 2))
        wq = rand_per_channel(rng, oc)
        wt = b.const(rand_weights(rng, (oc, *k, c // groups)), quant=wq)
        bt = b.const(rand_bias(rng, oc), quant=bias_quant(b.quant(x), wq)) if bias else -1
        y = b.output((n, oh, ow, oc), "int8", quant=rand_quant(rng, -6, 6))
        b.op("CONV_2D", [x, wt, bt], [y], Conv2DOptions(padding, *stride, *dil, act))
        return b.build()
    return build


def _dw(shape: tuple[int, int, int, int], mult: int, k: tuple[int, int], stride: tuple[int, int] = (1, 1),
        dil: tuple[int, int] = (1, 1), padding: Padding = Padding.SAME,
        act: Activation = Activation.NONE) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        n, h, w, c = shape
        oc = c * mult
        oh, ow = out_size(padding, h, k[0], stride[0], dil[0]), out_size(padding, w, k[1], stride[1], dil[1])
        b = GraphBuilder("dw")
        x = b.input(shape, "int8", quant=rand_quant(rng, -2, 2))
        wq = rand_per_channel(rng, oc, axis=3)
        wt = b.const(rand_weights(rng, (1, *k, oc)), quant=wq)
        bt = b.const(rand_bias(rng, oc), quant=bias_quant(b.quant(x), wq))
        y = b.output((n, oh, ow, oc), "int8", quant=rand_quant(rng, -6, 6))
        b.op("DEPTHWISE_CONV_2D", [x, wt, bt], [y], DepthwiseConv2DOptions(padding, *stride, mult, *dil, act))
        return b.build()
    return build


LAYERS: dict[str, Builder] = {
    "fc_1x1": _fc(1, 1, 1),
    "fc_odd": _fc(3, 37, 13, Activation.RELU),
    "fc_wide": _fc(1, 301, 7),
    "conv_3x3_same": _conv((2, 7, 5, 3), 5, (3, 3)),
    "conv_stride_dil": _conv((1, 9, 11, 4), 6, (3, 2), (2, 1), (1, 2), Padding.VALID, act=Activation.RELU6),
    "conv_groups": _conv((1, 5, 5, 6), 4, (3, 3), (2, 2), groups=2),
    "conv_1x1_nobias": _conv((1, 4, 3, 17), 3, (1, 1), bias=False),
    "dw_3x3": _dw((2, 6, 7, 5), 1, (3, 3)),
    "dw_mult_stride": _dw((1, 9, 8, 3), 2, (3, 3), (2, 2), act=Activation.RELU),
    "dw_5x1_valid": _dw((1, 7, 6, 4), 1, (5, 1), (1, 1), (1, 2), Padding.VALID),
}

SETTINGS: list[Setting] = [
    Setting.of("int8"),
    *[Setting.of("quant", bits=b) for b in (2, 3, 4, 5, 7, 8)],
    Setting.of("quant", bits=4, gptq=True),
    Setting.of("quant", bits=3, recover=False),
    *[Setting.of("kmeans", bits=b) for b in (2, 3, 5)],
    Setting.of("kmeans", bits=4, per_channel=True, init="density"),
    Setting.of("kmeans", bits=6, recover=False),
]


def _calibration(g: Graph, rng: np.random.Generator, n: int = 6) -> Calibration:
    x_t, y_t = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    xs = np.stack([rand_input(rng, x_t) for _ in range(n)])
    oracle = Oracle(g)
    ys = np.stack([oracle.run([x]).outputs[0] for x in xs])
    return Calibration(xs.reshape((-1, *x_t.shape[1:])), ys.reshape((-1, *y_t.shape[1:])))


def _compress(g: Graph, setting: Setting, rng: np.random.Generator):
    layer = LayerRef(g, g.ops[0])
    method = get_method(setting.method)
    return method, layer, method.apply(layer, setting, _calibration(g, rng))


# ---------------------------------------------------------------------------------------------
# Exact bytes.


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.label for s in SETTINGS])
@pytest.mark.parametrize("case", ["fc_odd", "conv_groups", "dw_mult_stride", "conv_1x1_nobias"])
def test_option_bytes_are_the_call_bytes(case: str, setting: Setting, rng: np.random.Generator) -> None:
    g = LAYERS[case](rng)
    method, layer, cl = _compress(g, setting, rng)
    option = method.option(layer, setting)
    assert cl.option == option
    arrays = [a for _, v in cl.call.params for a in const_arrays(v)]
    const_tensors = [g.tensors[t] for t in cl.call.input_tensors if g.tensors[t].is_constant]
    by_hand = sum(array_flash_bytes(a.ctype, len(a.values)) for a in arrays) + sum(
        array_flash_bytes({"int8": "int8_t", "int32": "int32_t"}[t.dtype.value], t.num_elements)
        for t in const_tensors)
    assert option.flash_bytes == call_flash_bytes(cl.call, g) == by_hand
    assert option.kernel == cl.call.symbol
    w = g.tensors[g.ops[0].inputs[1]]
    if setting.method in ("quant", "kmeans"):
        stream = dict(cl.call.params)["weights" if setting.method == "quant" else "indices"]
        assert isinstance(stream, ConstArray) and stream.ctype == "uint8_t"
        assert len(stream.values) == -(-w.num_elements * setting.get("bits") // 8)
        assert not const_tensors  # every constant travels in params
    else:
        assert option.flash_bytes == call_flash_bytes(lower_op(g, g.ops[0]), g)


def test_storage_shrinks_with_bits(rng: np.random.Generator) -> None:
    g = LAYERS["fc_wide"](rng)
    layer = LayerRef(g, g.ops[0])
    dense = get_method("int8").option(layer, Setting.of("int8")).flash_bytes
    sizes = [get_method("quant").option(layer, Setting.of("quant", bits=b)).flash_bytes for b in (8, 4, 2)]
    # 301·7 weights: 2107 B at 8 bits, 1054 at 4, 527 at 2, each padded to 8 bytes; + bias,
    # multiplier and shift (7 int32 each → 32 B).  The dense layer: weights, bias, multiplier
    # and shift (TFLM's fixed-point requantization: 7 int32 each).
    assert dense == 2112 + 32 * 3
    assert sizes == [2112 + 96, 1056 + 96, 528 + 96]


def test_pack_bits_layout() -> None:
    """LSB first, elements straddling bytes; the C decoder reads the same layout."""
    assert list(pack_bits(np.array([1, -1, 0, 2]), 2)) == [0b10001101]
    assert list(pack_bits(np.array([5, 3, 7]), 3)) == [0b11011101, 0b1]
    rng = np.random.default_rng(0)
    for bits in range(1, 9):
        v = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=53)
        assert np.array_equal(unpack_bits(pack_bits(v, bits), bits, v.size, signed=True), v)
        u = rng.integers(0, 1 << bits, size=29)
        assert np.array_equal(unpack_bits(pack_bits(u, bits), bits, u.size, signed=False), u)


# ---------------------------------------------------------------------------------------------
# numpy forward == C kernel.


@in_process
@pytest.mark.parametrize("setting", SETTINGS, ids=[s.label for s in SETTINGS])
@pytest.mark.parametrize("case", sorted(LAYERS))
def test_forward_equals_kernel(lib: kh.KernelLibrary, case: str, setting: Setting,
                               rng: np.random.Generator) -> None:
    g = LAYERS[case](rng)
    _, _, cl = _compress(g, setting, rng)
    assert lib.has(cl.call.symbol), cl.call.symbol
    x_t, y_t = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    for _ in range(2):
        x = rand_input(rng, x_t)
        values = {t.index: t.data for t in g.tensors if t.data is not None}
        got = lib.call(cl.call, g, {**values, x_t.index: x})[y_t.index]
        want = cl.forward(x.reshape((-1, *x_t.shape[1:]))).reshape(y_t.shape)
        np.testing.assert_array_equal(got, want)


@in_process
def test_int8_forward_is_the_oracle(rng: np.random.Generator) -> None:
    """The identity method computes what the dense kernel the code generator emits computes: the
    oracle's TFLM arithmetic."""
    for case in ("fc_odd", "fc_wide", "conv_stride_dil", "dw_mult_stride"):
        g = LAYERS[case](rng)
        _, _, cl = _compress(g, Setting.of("int8"), rng)
        assert not any(name == "scale" for name, _ in cl.call.params), "device FC must not use double"
        oracle = Oracle(g, profile=Arithmetic.TFLM)
        for _ in range(3):
            x = rand_input(rng, g.tensors[g.inputs[0]])
            want = oracle.run([x]).outputs[0]
            np.testing.assert_array_equal(cl.forward(x).reshape(want.shape), want)


@in_process
def test_quant8_of_full_range_int8_weights_is_lossless(rng: np.random.Generator) -> None:
    """8-bit quantization without clipping of int8 weights whose channels reach ±127 keeps them."""
    g = LAYERS["conv_3x3_same"](rng)
    wt = g.tensors[g.ops[0].inputs[1]]
    w = np.array(wt.data)
    w[:, 0, 0, 0] = np.where(np.arange(w.shape[0]) % 2, 127, -127)
    tensors = list(g.tensors)
    tensors[wt.index] = dataclasses.replace(wt, data=w)
    g = dataclasses.replace(g, tensors=tuple(tensors))
    _, _, cl = _compress(g, Setting.of("quant", bits=8, recover=False), rng)
    assert np.array_equal(cl.export_weights, w)


# ---------------------------------------------------------------------------------------------
# Recovery on real layers and data.


def _layer_error(graph: Graph, op_index: int, setting: Setting) -> float:
    """Mean squared error (real units) of one compressed layer against the original layer on the
    digits calibration activations arriving at it."""
    from toolkit.compress.model import run_samples

    op = graph.ops[op_index]
    x = load_dataset("digits:calib", graph).x
    tin, tout = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    sub = Graph("prefix", graph.tensors, graph.ops[: op_index + 1], graph.inputs, (tin.index, tout.index))
    xin, ref = run_samples(sub, x)
    calib = Calibration(xin.reshape((-1, *tin.shape[1:])), ref.reshape((-1, *tout.shape[1:])))
    cl = get_method(setting.method).apply(LayerRef(graph, op), setting, calib)
    y = cl.forward(calib.inputs).astype(np.float64)
    assert tout.quant is not None
    return float(np.mean((y - calib.reference) ** 2)) * tout.quant.scale[0] ** 2


@pytest.mark.parametrize(("model", "op_index"), [("digits_mlp_int8", 1), ("digits_mlp_int8", 2),
                                                 ("digits_cnn_int8", 1), ("digits_cnn_int8", 2)])
def test_recovery_lowers_layer_error(model: str, op_index: int) -> None:
    """Clipping search + bias correction beat plain rounding; GPTQ beats both (at 4 bits; at 2
    bits its column-wise error feedback is not always better than the clipping search alone);
    the codebook refit beats plain k-means."""
    g = read_tflite(MODELS / f"{model}.tflite")
    err = {
        s.label: _layer_error(g, op_index, s) for s in (
            Setting.of("quant", bits=2, recover=False), Setting.of("quant", bits=2),
            Setting.of("quant", bits=4), Setting.of("quant", bits=4, gptq=True),
            Setting.of("kmeans", bits=2, recover=False), Setting.of("kmeans", bits=2),
            Setting.of("kmeans", bits=4, recover=False), Setting.of("kmeans", bits=4))
    }
    assert err["quant(bits=2)"] < err["quant(bits=2, recover=False)"], err
    assert err["quant(bits=4, gptq=True)"] < err["quant(bits=4)"], err
    assert err["kmeans(bits=2)"] < err["kmeans(bits=2, recover=False)"], err
    assert err["kmeans(bits=4)"] < err["kmeans(bits=4, recover=False)"], err


def test_settings_are_checked() -> None:
    rng = np.random.default_rng(1)
    g = LAYERS["fc_odd"](rng)
    layer = LayerRef(g, g.ops[0])
    for bad, msg in [(Setting.of("quant", bits=9), "bits"), (Setting.of("quant", width=4), "width"),
                     (Setting.of("kmeans", init="random"), "init"), (Setting.of("kmeans", bits=True), "bits"),
                     (Setting.of("int8", bits=8), "bits")]:
        with pytest.raises(ValueError, match=msg):
            get_method(bad.method).option(layer, bad)


# ---------------------------------------------------------------------------------------------
# Sanitizers.


@pytest.mark.skipif(not _DELEGATED, reason="set BOARDFIT_SANITIZE=1 to run the kernels under sanitizers")
def test_packed_kernels_under_asan_and_ubsan() -> None:
    if kh.asan_runtime() is None:
        pytest.skip(f"{kh.CC} has no AddressSanitizer runtime")
    proc, sanitizer_log = kh.run_sanitized_pytest(__file__, ["-k", "kernel or forward"])
    report = (proc.stdout + proc.stderr)[-4000:] + sanitizer_log[:6000]
    assert proc.returncode == 0, f"sanitized kernel tests failed (exit {proc.returncode}):\n{report}"
    assert " passed" in proc.stdout, report
