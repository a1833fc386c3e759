"""Method prune: exact storage, the sparse-table kernels bit for bit, accuracy recovery.

* Exact bytes: ``Option.flash_bytes`` equals ``call_flash_bytes(call)`` and the sum of the
  call's constant arrays; ``apply`` with calibration keeps the option (recovery never changes
  the pattern, and in Huffman modes keeps every code's count); the stream arrays hold exactly
  the bytes of the format modules.
* The numpy ``forward`` equals the C kernels (``kernels/<variant>/sparse.c`` + ``huffman.c``
  through cffi, tests/kernel_harness.py) bit for bit on FC, conv and depthwise layers with odd
  shapes, strides, dilation, groups, for sampled (bits, index_bits) pairs and all three
  storage modes; the C scratch sizes equal the Python ones; the C Huffman decoder reproduces
  the plain stream byte for byte.
* Recovery lowers the output error on calibration data of the digits MLP and CNN layers, and
  the digits MLP target: pruning + sharing + relative-index tables + Huffman at ≥ 20× smaller
  than the float .tflite within 1 point of float accuracy, without retraining.

``BOARDFIT_SANITIZE=1`` reruns the kernel cases in a child under ASan/UBSan.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kernel_harness as kh
import numpy as np
import pytest
from compress_cases import Builder, compress, conv, dw, fc
from opgen import rand_input

from firmware_gen.lower import ConstArray, Struct
from toolkit.compress import huffman as hf
from toolkit.compress import sparse_format as sf
from toolkit.compress.base import (
    Calibration,
    CompressedLayer,
    LayerRef,
    Setting,
    array_flash_bytes,
    call_flash_bytes,
    const_arrays,
)
from toolkit.compress.registry import get_method
from toolkit.datasets import load_dataset
from toolkit.model.ir import (
    Activation,
    Graph,
    Padding,
)
from toolkit.model.tflite import read_tflite
from toolkit.oracle import Oracle

in_process = kh.in_process

MODELS = Path(__file__).parent.parent / "examples" / "models"
SPARSE_HEADER = kh.INCLUDE_DIR / "bf_sparse.h"
_FAMILIES = ("sparse", "huffman")


# ---------------------------------------------------------------------------------------------
# The kernel library of one variant (tests/kernel_harness.py): its own sparse.c / huffman.c, or ref's.


def _own_variants() -> tuple[str, ...]:
    """ref plus every variant with its own sparse.c or huffman.c (the others would rerun ref)."""
    return tuple(v for v in kh.variants()
                 if v == "ref" or any((kh.KERNELS_DIR / v / f"{f}.c").exists() for f in _FAMILIES))


@pytest.fixture(params=_own_variants())
def lib(request: pytest.FixtureRequest) -> kh.KernelLibrary:
    return kh.build_library(request.param)


# ---------------------------------------------------------------------------------------------
# Single-layer graphs.

LAYERS: dict[str, Builder] = {
    "fc_1x1": fc(1, 1, 1),
    "fc_odd": fc(3, 37, 13, Activation.RELU),
    "fc_long_rows": fc(2, 613, 5),
    "conv_3x3_same": conv((2, 7, 5, 3), 5, (3, 3)),
    "conv_stride_dil": conv((1, 9, 11, 4), 6, (3, 2), (2, 1), (1, 2), Padding.VALID, act=Activation.RELU6),
    "conv_groups": conv((1, 5, 5, 6), 4, (3, 3), (2, 2), groups=2),
    "conv_1x1_nobias": conv((1, 4, 3, 17), 3, (1, 1), bias=False),
    "dw_3x3": dw((2, 6, 7, 5), 1, (3, 3)),
    "dw_mult_stride": dw((1, 9, 8, 3), 2, (3, 3), (2, 2), act=Activation.RELU),
}

# (bits, index_bits) pairs sampled so that every b and every k occurs, plus the automatic k.
_PAIRS = [(2, 2), (3, 8), (4, 3), (5, 6), (6, 4), (7, 2), (8, 5), (4, 7), (3, None), (8, None)]
SETTINGS: list[Setting] = [
    *[Setting.of("prune", sparsity=s, bits=b, **({} if k is None else {"index_bits": k}))
      for (b, k), s in zip(_PAIRS, (0.9, 0.5, 0.75, 0.95, 0.3, 0.9, 0.8, 0.6, 0.99, 0.0), strict=True)],
    Setting.of("prune", sparsity=0.85, bits=4, huffman="layer", block_rows=2),
    Setting.of("prune", sparsity=0.7, bits=8, huffman="layer", index_bits=2),
    Setting.of("prune", sparsity=0.9, bits=5, huffman="boot"),
    Setting.of("prune", sparsity=0.6, bits=3, huffman="boot", index_bits=2),
    Setting.of("prune", sparsity=0.8, bits=4, recover=False),
    Setting.of("prune_structured", pattern="2:4"),
    Setting.of("prune_structured", pattern="1:8", recover=False),
    Setting.of("prune_structured", pattern="3:16"),
]


def _params(call_params: Any) -> dict[str, Any]:
    return dict(call_params)


# ---------------------------------------------------------------------------------------------
# Exact bytes.


@pytest.mark.parametrize("setting", SETTINGS, ids=[s.label for s in SETTINGS])
@pytest.mark.parametrize("case", ["fc_odd", "conv_groups", "dw_mult_stride", "fc_long_rows"])
def test_option_bytes_are_the_call_bytes(case: str, setting: Setting, rng: np.random.Generator) -> None:
    g = LAYERS[case](rng)
    method, layer, cl = compress(g, setting, rng)
    option = method.option(layer, setting)
    assert cl.option == option
    arrays = [a for _, v in cl.call.params for a in const_arrays(v)]
    assert not [t for t in cl.call.input_tensors if g.tensors[t].is_constant]
    by_hand = sum(array_flash_bytes(a.ctype, len(a.values)) for a in arrays)
    assert option.flash_bytes == call_flash_bytes(cl.call, g) == by_hand
    assert option.kernel == cl.call.symbol
    assert option.ram_bytes + option.persistent_ram_bytes == cl.call.scratch_bytes


def _stored_stream(cl: CompressedLayer) -> tuple[bytes, Struct]:
    p = _params(cl.call.params)
    layout = p["layout"]
    assert isinstance(layout, Struct)
    store = p["stream"] if "stream" in p else p["huffman"].get("stream")
    assert isinstance(store, ConstArray) and store.ctype == "uint8_t"
    return bytes(int(v) for v in store.values), layout


def test_stream_is_the_format_bytes(rng: np.random.Generator) -> None:
    """The stored stream is exactly sparse_format's packing of the magnitude pattern: as many
    bytes as plain_stream_bytes says, decoding to the int8 weights the forward uses."""
    g = LAYERS["fc_long_rows"](rng)
    setting = Setting.of("prune", sparsity=0.9, bits=8, index_bits=3)
    _, layer, cl = compress(g, setting, rng, calibrate=False)
    data, layout = _stored_stream(cl)
    w = layer.weight.data
    assert w is not None
    kept = round(0.1 * w.size)
    table = sf.unpack(data, 5, 613, 3, 8, int(layout.get("count_bits")))  # type: ignore[arg-type]
    dense = sf.to_dense(table, None)
    # bits=8 without calibration keeps the model's own int8 values on the kept positions.
    assert np.count_nonzero(dense) == kept
    assert np.array_equal(dense[dense != 0], w[dense != 0])
    assert len(data) == sf.plain_stream_bytes(table.counts, 3, 8, table.count_bits)
    real = np.abs(layer.real_weights())  # ranked over the layer in real units
    assert real[dense == 0].max() <= np.sort(real.reshape(-1))[::-1][kept - 1]


def test_huffman_storage_is_smaller_and_decodes_to_the_plain_table(rng: np.random.Generator) -> None:
    g = LAYERS["fc_long_rows"](rng)
    plain = get_method("prune").apply(LayerRef(g, g.ops[0]), Setting.of("prune", sparsity=0.9, bits=4), None)
    boot = get_method("prune").apply(LayerRef(g, g.ops[0]),
                                     Setting.of("prune", sparsity=0.9, bits=4, huffman="boot"), None)
    assert boot.option.flash_bytes < plain.option.flash_bytes
    assert boot.option.persistent_ram_bytes > 0 and boot.option.ram_bytes == 0
    np.testing.assert_array_equal(boot.export_weights, plain.export_weights)


def test_settings_are_checked() -> None:
    g = LAYERS["fc_odd"](np.random.default_rng(0))
    layer = LayerRef(g, g.ops[0])
    m = get_method("prune")
    for bad in (dict(sparsity=1.0), dict(bits=1), dict(bits=9), dict(index_bits=9),
                dict(huffman=True), dict(huffman="sometimes"), dict(block_rows=0), dict(density=0.5)):
        with pytest.raises(ValueError):
            m.option(layer, Setting.of("prune", **bad))


# ---------------------------------------------------------------------------------------------
# numpy forward == C kernel.


def _run_kernel(lib: kh.KernelLibrary, cl: CompressedLayer, g: Graph, x: np.ndarray) -> np.ndarray:
    x_t, y_t = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    return lib.call(cl.call, g, {x_t.index: x})[y_t.index]


@in_process
@pytest.mark.parametrize("setting", SETTINGS, ids=[s.label for s in SETTINGS])
@pytest.mark.parametrize("case", sorted(LAYERS))
def test_forward_equals_kernel(lib: kh.KernelLibrary, case: str, setting: Setting,
                               rng: np.random.Generator) -> None:
    g = LAYERS[case](rng)
    _, _, cl = compress(g, setting, rng)
    assert lib.has(cl.call.symbol), cl.call.symbol
    assert lib.scratch_bytes(cl.call) == cl.call.scratch_bytes
    x_t, y_t = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    for _ in range(2):
        x = rand_input(rng, x_t)
        got = _run_kernel(lib, cl, g, x)
        want = cl.forward(x.reshape((-1, *x_t.shape[1:]))).reshape(y_t.shape)
        np.testing.assert_array_equal(got, want)


@in_process
def test_c_huffman_decoder_reproduces_the_plain_stream(lib: kh.KernelLibrary,
                                                       rng: np.random.Generator) -> None:
    for density, k, b in ((0.05, 2, 3), (0.3, 4, 4), (0.9, 8, 8), (0.0, 3, 2), (0.01, 5, 7)):
        mask = rng.random((11, 257)) < density
        codes = rng.integers(0, 1 << b, size=mask.shape)
        table = sf.encode(mask, codes, k, b, zero_code=0)
        coded = hf.encode_table(table)
        plain = table.pack()
        ffi = lib.ffi
        layout = ffi.new("bf_sparse_layout *", {"index_bits": k, "value_bits": b,
                                                "count_bits": table.count_bits, "codebook": ffi.NULL})
        lengths = ffi.new("uint8_t[]", coded.lengths_bytes)
        stream = ffi.new("uint8_t[]", coded.stream)
        huff = ffi.new("bf_sparse_huffman *", {"code_lengths": lengths, "stream": stream,
                                              "stream_bytes": len(coded.stream), "block_rows": 1,
                                              "block_bytes": 0, "table_bytes": len(plain)})
        scratch = ffi.new("uint8_t[]", int(lib.lib.bf_sparse_huffman_decode_scratch_bytes(layout)))
        assert len(scratch) == hf.decoder_bytes(k, b)
        out = ffi.new("uint8_t[]", len(plain))
        lib.lib.bf_sparse_huffman_decode(layout, huff, 11, out, scratch)
        assert bytes(ffi.buffer(out)) == plain


@in_process
def test_boot_kernel_decodes_once(lib: kh.KernelLibrary, rng: np.random.Generator) -> None:
    """The boot kernel's persistent buffer: decoded on the first call, reused afterwards (a
    corrupted Huffman stream no longer matters once the table is in RAM)."""
    g = LAYERS["fc_odd"](rng)
    _, _, cl = compress(g, Setting.of("prune", sparsity=0.7, bits=4, huffman="boot"), rng)
    p, keep = lib.params(cl.call)
    ffi = lib.ffi
    buf = ffi.new("uint8_t[]", cl.call.scratch_bytes)
    x = rand_input(rng, g.tensors[g.inputs[0]])
    xin = ffi.new("int8_t[]", x.reshape(-1).tolist())
    y1 = ffi.new("int8_t[]", 39)
    y2 = ffi.new("int8_t[]", 39)
    lib.lib.bf_fully_connected_sparse_hboot_s8(p, xin, y1, buf)
    ffi.memmove(p.huffman.stream, b"\xff" * 4, 4)  # the flash copy is not read again
    lib.lib.bf_fully_connected_sparse_hboot_s8(p, xin, y2, buf)
    want = cl.forward(x.reshape(3, 37)).reshape(-1)
    assert list(y1) == list(y2) == want.tolist()
    del keep


# ---------------------------------------------------------------------------------------------
# Recovery.


def _model(name: str) -> Graph:
    return read_tflite((MODELS / f"{name}.tflite").read_bytes())


def _layer_error(graph: Graph, op_index: int, setting: Setting, float_graph: Graph | None) -> float:
    """Mean squared int8 output error against the original layer on digits:test, with the
    original model's activations as input; calibration on digits:calib."""
    calib = load_dataset("digits:calib", graph)
    test = load_dataset("digits:test", graph)
    op = graph.ops[op_index]
    fw = None
    if float_graph is not None:
        fop = [o for o in float_graph.ops if o.opcode == op.opcode][
            [o.index for o in graph.ops if o.opcode == op.opcode].index(op_index)]
        fw = float_graph.tensors[fop.inputs[1]].data
    oracle = Oracle(graph)

    def acts(ds: Any) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for x in ds.x[:120]:
            r = oracle.run([x.reshape(graph.tensors[graph.inputs[0]].shape)], keep_intermediates=True)
            xs.append(r.tensors[op.inputs[0]])
            ys.append(r.tensors[op.outputs[0]])
        xi = np.stack(xs)
        return xi.reshape((-1, *xi.shape[2:])), np.stack(ys).reshape((len(ys), -1))

    cx, cy = acts(calib)
    tx, ty = acts(test)
    layer = LayerRef(graph, op, fw)
    out_shape = graph.tensors[op.outputs[0]].shape[1:]
    cl = get_method("prune").apply(layer, setting, Calibration(cx, cy.reshape((-1, *out_shape))))
    got = cl.forward(tx).reshape(ty.shape).astype(np.float64)
    return float(np.mean((got - ty) ** 2))


@in_process
@pytest.mark.parametrize("model,op_index,bits,huffman", [
    ("digits_mlp_int8", 0, 4, False), ("digits_mlp_int8", 1, 8, False), ("digits_mlp_int8", 1, 4, "boot"),
    ("digits_cnn_int8", 0, 4, False), ("digits_cnn_int8", 2, 5, "layer"),
])
def test_recovery_lowers_layer_error(model: str, op_index: int, bits: int, huffman: Any) -> None:
    graph = _model(model)
    fg = _model(model.replace("int8", "float"))
    on = Setting.of("prune", sparsity=0.8, bits=bits, huffman=huffman)
    off = Setting.of("prune", sparsity=0.8, bits=bits, huffman=huffman, recover=False)
    err_on, err_off = _layer_error(graph, op_index, on, fg), _layer_error(graph, op_index, off, fg)
    assert err_on < 0.8 * err_off, (err_on, err_off)


def _compress_mlp(settings: list[Setting]) -> tuple[float, int]:
    """Sequential compression of the digits MLP's three FC layers (calibration inputs from the
    compressed layers before, reference from the original ones); test accuracy and flash bytes."""
    g, fg = _model("digits_mlp_int8"), _model("digits_mlp_float")
    calib, test = load_dataset("digits:calib", g), load_dataset("digits:test", g)
    ops = [op for op in g.ops if op.opcode == "FULLY_CONNECTED"]
    fops = [op for op in fg.ops if op.opcode == "FULLY_CONNECTED"]
    assert len(ops) == len(settings) == 3 and g.ops[-1].opcode == "SOFTMAX"
    xc = xr = calib.x.reshape(len(calib.x), -1)
    layers = []
    for op, fop, s in zip(ops, fops, settings, strict=True):
        lr = LayerRef(g, op, fg.tensors[fop.inputs[1]].data)
        ref = get_method("int8").apply(lr, Setting.of("int8"), None).forward(xr)
        layers.append(get_method("prune").apply(lr, s, Calibration(xc, ref)))
        xc, xr = layers[-1].forward(xc), ref
    x = test.x.reshape(len(test.x), -1)
    for layer in layers:
        x = layer.forward(x)
    assert test.y is not None
    return float(np.mean(x.argmax(axis=1) == test.y) * 100), sum(la.option.flash_bytes for la in layers)


FLOAT_MLP_BYTES = 204_620  # examples/models/README.md
INT8_MLP_BYTES = 64_176
FLOAT_MLP_ACCURACY = 98.00


@in_process
def test_digits_mlp_deep_compression_target() -> None:
    """Pruning (75/90/50 %) + 4-bit sharing + relative-index tables + Huffman, no retraining:
    ≥ 20× smaller than the float .tflite, ≥ 5× smaller than the int8 one, within 1 point."""
    settings = [Setting.of("prune", sparsity=s, bits=4, huffman="boot") for s in (0.75, 0.9, 0.5)]
    accuracy, flash = _compress_mlp(settings)
    assert FLOAT_MLP_BYTES / flash >= 20 and INT8_MLP_BYTES / flash >= 5, flash
    assert accuracy >= FLOAT_MLP_ACCURACY - 1.0, accuracy


@in_process
def test_digits_mlp_uniform_90_percent() -> None:
    """The uniform 90 % + 4-bit + Huffman policy, measured: recovery brings it within 5 points
    (without recovery it loses more than 20; see the report in docs/compression.md)."""
    accuracy, flash = _compress_mlp([Setting.of("prune", sparsity=0.9, bits=4, huffman="boot")] * 3)
    assert accuracy >= FLOAT_MLP_ACCURACY - 5.0, accuracy
    assert FLOAT_MLP_BYTES / flash >= 30


# ---------------------------------------------------------------------------------------------
# Structured pruning.


def test_nm_storage_is_two_bits_per_kept_weight_for_2_4(rng: np.random.Generator) -> None:
    """2:4 on a 13 × 37 FC: 10 groups per row (the last of 1 position, padded to 2 entries),
    260 int8 values and 260 two-bit indices = 65 bytes; every group keeps its 2 largest |w|."""
    g = LAYERS["fc_odd"](rng)
    layer = LayerRef(g, g.ops[0])
    cl = get_method("prune_structured").apply(layer, Setting.of("prune_structured", pattern="2:4"), None)
    p = _params(cl.call.params)
    assert len(p["values"].values) == 13 * 10 * 2 and len(p["indices"].values) == 65
    assert p["index_bits"] == 2
    w = np.asarray(layer.weight.data, dtype=np.int64)
    got = np.asarray(cl.export_weights, dtype=np.int64)
    real = np.abs(layer.real_weights())
    for r in range(13):
        for g0 in range(0, 37, 4):
            grp = slice(g0, min(g0 + 4, 37))
            keep = np.flatnonzero(got[r, grp])
            assert keep.size <= 2 and np.array_equal(got[r, grp][keep], w[r, grp][keep])
            if grp.stop - grp.start > 2:
                assert np.sort(real[r, grp])[::-1][1] <= real[r, grp][keep].min() + 1e-12 or keep.size < 2


def _zeroed(graph: Graph, op_index: int, removed: tuple[int, ...]) -> Graph:
    """The original graph with the removed channels' weights and bias zeroed, through any
    depthwise op that follows (the reference a channel-pruned graph must equal)."""
    import dataclasses

    tensors = list(graph.tensors)
    todo = [(op_index, 0)]
    op = graph.ops[op_index]
    nxt = [o for o in graph.ops if op.outputs[0] in o.inputs]
    while nxt and nxt[0].opcode in ("RELU", "RELU6", "MAX_POOL_2D", "AVERAGE_POOL_2D"):
        nxt = [o for o in graph.ops if nxt[0].outputs[0] in o.inputs]
    if nxt and nxt[0].opcode == "DEPTHWISE_CONV_2D":
        todo.append((nxt[0].index, 3))
    for i, axis in todo:
        o = graph.ops[i]
        w = np.array(graph.tensors[o.inputs[1]].data)
        idx = [slice(None)] * w.ndim
        idx[axis] = list(removed)
        w[tuple(idx)] = 0
        tensors[o.inputs[1]] = dataclasses.replace(graph.tensors[o.inputs[1]], data=w)
        b = np.array(graph.tensors[o.inputs[2]].data)
        b[list(removed)] = 0
        tensors[o.inputs[2]] = dataclasses.replace(graph.tensors[o.inputs[2]], data=b)
    return dataclasses.replace(graph, tensors=tuple(tensors))


@in_process
@pytest.mark.parametrize("model,op_index,count", [("digits_mlp_int8", 0, 120), ("digits_mlp_int8", 1, 30),
                                                   ("digits_cnn_int8", 0, 3), ("digits_cnn_int8", 2, 5)])
def test_channel_pruning_equals_zeroed_channels(model: str, op_index: int, count: int) -> None:
    """The smaller graph computes exactly what the original computes with those channels
    zeroed (oracle, bit for bit), and is smaller by the removed weights."""
    from toolkit.compress.prune_structured import prune_channels

    graph = _model(model)
    cp = prune_channels(graph, op_index, count)
    channels = graph.tensors[graph.ops[op_index].inputs[1]].shape[0]
    assert len(cp.removed) == count and len(cp.kept) + count == channels
    ref = Oracle(_zeroed(graph, op_index, cp.removed))
    new = Oracle(cp.graph)
    data = load_dataset("digits:test", graph)
    for x in data.x[:25]:
        xs = x.reshape(graph.tensors[graph.inputs[0]].shape)
        np.testing.assert_array_equal(new.run([xs]).outputs[0], ref.run([xs]).outputs[0])
    old_w = sum(t.nbytes for t in graph.tensors if t.is_constant)
    new_w = sum(t.nbytes for t in cp.graph.tensors if t.is_constant)
    assert new_w < old_w


@in_process
def test_channel_pruning_bias_correction_lowers_consumer_error() -> None:
    """With calibration inputs the consumer's bias absorbs the removed channels' mean: its
    output (original model's test activations) moves less than without the correction."""
    from toolkit.compress.prune_structured import prune_channels

    graph = _model("digits_mlp_int8")
    calib, test = load_dataset("digits:calib", graph), load_dataset("digits:test", graph)
    consumer = graph.ops[1].outputs[0]

    def outputs(g: Graph) -> np.ndarray:
        o = Oracle(g)
        return np.stack([o.run([x.reshape(1, -1)], keep_intermediates=True).tensors[consumer]
                         for x in test.x[:150]]).astype(np.float64)

    ref = outputs(graph)
    plain = outputs(prune_channels(graph, 0, 150).graph)
    corrected = outputs(prune_channels(graph, 0, 150, calib_x=calib.x).graph)
    assert np.mean((corrected - ref) ** 2) < 0.5 * np.mean((plain - ref) ** 2)
    assert abs(np.mean(corrected - ref)) < 0.5 * abs(np.mean(plain - ref))


def test_channel_pruning_refuses_what_it_cannot_shrink() -> None:
    from toolkit.compress.prune_structured import prune_channels
    from toolkit.errors import CompressionError

    graph = _model("digits_mlp_int8")
    with pytest.raises(CompressionError, match=r"SOFTMAX|graph output|feed"):
        prune_channels(graph, 2, 3)  # the last layer feeds SOFTMAX, the model's output
    cnn = _model("digits_cnn_int8")
    with pytest.raises(CompressionError, match="CONV_2D or FULLY_CONNECTED"):
        prune_channels(cnn, 1, 2)


# ---------------------------------------------------------------------------------------------
# Toolchains and sanitizers.


@in_process
@pytest.mark.cross
@pytest.mark.parametrize("cpu", sorted(kh.CORTEX_M_FLAGS))
def test_sparse_kernels_cross_compile(cpu: str) -> None:
    kh.check_cross_compile([kh.REF_DIR / f"{fam}.c" for fam in _FAMILIES], kh.CORTEX_M_FLAGS[cpu])


def test_header_declares_every_kernel_symbol() -> None:
    text = re.sub(r"/\*.*?\*/", " ", kh.cdef_region(SPARSE_HEADER), flags=re.S)
    declared = set(re.findall(r"\bvoid\s+(bf_\w+)\s*\(", text))
    for op in ("fully_connected", "conv2d", "depthwise_conv2d"):
        for fmt in ("sparse", "sparse_huff", "sparse_hboot", "nm"):
            assert f"bf_{op}_{fmt}_s8" in declared


@kh.delegating
def test_sparse_kernels_under_asan_and_ubsan() -> None:
    kh.check_sanitized(__file__, "kernel or forward or decoder")


# ---------------------------------------------------------------------------------------------
# The same kernels on the emulated Cortex-M4 (Thumb-2, arm-none-eabi-gcc -O2).


@in_process
@pytest.mark.qemu
@pytest.mark.cross
def test_kernels_match_forward_on_cortex_m4(rng: np.random.Generator) -> None:
    """Every sparse-table and N:M kernel variant, cross-compiled for the M4 and run under
    qemu-system-arm (mps2-an386), computes the numpy forward's output byte for byte."""
    import m4_harness

    if not m4_harness.available():
        pytest.skip("arm-none-eabi-gcc and qemu-system-arm are needed")
    settings = [Setting.of("prune", sparsity=0.8, bits=4),
                Setting.of("prune", sparsity=0.6, bits=8, index_bits=2),
                Setting.of("prune", sparsity=0.9, bits=3, huffman="layer", block_rows=3),
                Setting.of("prune", sparsity=0.7, bits=5, huffman="boot"),
                Setting.of("prune_structured", pattern="2:4")]
    calls, wants = [], []
    for case in ("fc_odd", "conv_stride_dil", "conv_groups", "dw_mult_stride"):
        g = LAYERS[case](rng)
        x_t = g.tensors[g.inputs[0]]
        for s in settings:
            _, _, cl = compress(g, s, rng)
            x = rand_input(rng, x_t)
            calls.append(m4_harness.M4Call(f"{case}/{s.label}", cl.call, g, x))
            wants.append(cl.forward(x.reshape((-1, *x_t.shape[1:]))).reshape(-1))
    results = m4_harness.run_on_m4(calls, [kh.REF_DIR / f"{f}.c" for f in _FAMILIES],
                                   [kh.INCLUDE_DIR, kh.REF_DIR])
    for c, want, got in zip(calls, wants, results, strict=True):
        np.testing.assert_array_equal(got.output, want, err_msg=c.name)
        assert got.instructions > 0
