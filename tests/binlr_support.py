"""Support for the binary and low-rank compression tests: a whole-model simulation with
compressed layers in place, and single-op layers with their kernel checks (their C kernels come
from tests/kernel_harness.py's library, like every other kernel's).

Models.  :func:`run_model` runs many samples through an int8 graph with the numpy oracle's
kernels, op by op on the re-batched graph, with some ops replaced by compressed forwards;
:func:`compress_model` compresses layers in graph order on calibration data the way
``toolkit.compress.model`` does (each layer sees the activations of the already compressed
ones).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import kernel_harness as kh
import numpy as np
from opgen import GraphBuilder, QuantParams, bias_quant, quant_from_range, rand_per_channel

from firmware_gen.lower import KernelCall
from toolkit.compress.base import Calibration, CompressedLayer, LayerRef, Setting
from toolkit.compress.model import batched_graph, match_float_weights
from toolkit.compress.registry import get_method
from toolkit.model.ir import Activation, Conv2DOptions, FullyConnectedOptions, Graph, Padding
from toolkit.oracle import Oracle
from toolkit.oracle.padding import out_size
from toolkit.oracle.registry import KERNELS, OpContext

# ---------------------------------------------------------------------------------------------
# Whole models.

Forward = Callable[[np.ndarray], np.ndarray]


def run_model(graph: Graph, x: np.ndarray, overrides: Mapping[int, Forward],
              upto: int | None = None) -> dict[int, np.ndarray]:
    """Values (``(n, *tensor.shape[1:])``) of every tensor after running ops ``[0, upto)``
    (all by default) on the samples ``x`` (``(n, *input.shape[1:])``)."""
    n = x.shape[0]
    big = batched_graph(graph, n)
    assert big is not None, f"{graph.name} cannot run samples as a batch"
    values: dict[int, np.ndarray] = {t.index: t.data for t in big.tensors if t.data is not None}
    values[graph.inputs[0]] = np.asarray(x).reshape(big.tensors[graph.inputs[0]].shape)
    for op in big.ops[:upto]:
        if op.index in overrides:
            tin, tout = big.tensors[op.inputs[0]], big.tensors[op.outputs[0]]
            y = overrides[op.index](values[tin.index].reshape((n, *graph.tensors[tin.index].shape[1:])))
            values[tout.index] = np.asarray(y).reshape(tout.shape)
            continue
        ctx = OpContext(big, op, tuple(values.get(i) if i >= 0 else None for i in op.inputs))
        for t, v in zip(op.outputs, KERNELS[op.opcode](ctx), strict=True):
            values[t] = v
    return {t: v.reshape((n, *graph.tensors[t].shape[1:])) for t, v in values.items()
            if not graph.tensors[t].is_constant}


def compress_model(graph: Graph, settings: Mapping[int, Setting], calib_x: np.ndarray | None,
                   float_graph: Graph | None = None) -> dict[int, CompressedLayer]:
    floats = match_float_weights(graph, float_graph) if float_graph is not None else {}
    layers: dict[int, CompressedLayer] = {}
    for i in sorted(settings):
        op = graph.ops[i]
        layer = LayerRef(graph, op, floats.get(i))
        calib = None
        if calib_x is not None:
            seen = run_model(graph, calib_x, {k: v.forward for k, v in layers.items()}, upto=i)
            ref = run_model(graph, calib_x, {}, upto=i + 1)
            calib = Calibration(seen[op.inputs[0]], ref[op.outputs[0]])
        layers[i] = get_method(settings[i].method).apply(layer, settings[i], calib)
    return layers


def accuracy(graph: Graph, x: np.ndarray, y: np.ndarray, layers: Mapping[int, CompressedLayer]) -> float:
    """Top-1 accuracy in percent of the graph's first output."""
    out = run_model(graph, x, {k: v.forward for k, v in layers.items()})[graph.outputs[0]]
    return float(100.0 * np.mean(out.reshape(len(x), -1).argmax(axis=1) == y))


# ---------------------------------------------------------------------------------------------
# Single-op layers and their checks (shared by the binary and low-rank tests).

MODELS = Path(__file__).resolve().parent.parent / "examples" / "models"


def _quant_input(rng: np.random.Generator, relu: bool) -> tuple[float, int]:
    if relu:  # the output of a ReLU: zero point at the bottom of the range
        return float(np.float32(rng.uniform(0.005, 0.05))), -128
    q = quant_from_range(-rng.uniform(0.5, 2.0), rng.uniform(0.5, 2.0))
    return q.scale[0], q.zero_point[0]


def layer_graph(rng: np.random.Generator, opcode: str, x_shape: tuple[int, ...], units: int,
                 kernel: tuple[int, int] = (1, 1), stride: tuple[int, int] = (1, 1),
                 dilation: tuple[int, int] = (1, 1), padding: Padding = Padding.SAME,
                 act: Activation = Activation.NONE, relu_input: bool = False) -> Graph:
    """An int8 conv or dense layer whose output quantization fits its real outputs."""
    s_in, zp_in = _quant_input(rng, relu_input)
    c = x_shape[-1]
    w_shape = (units, *kernel, c) if opcode == "CONV_2D" else (units, c)
    wq = rand_per_channel(rng, units, scale_range=(2e-3, 2e-2))
    w = np.clip(np.rint(rng.normal(0, 45, size=w_shape)), -127, 127).astype(np.int8)
    in_q = QuantParams((s_in,), (zp_in,))
    bias = rng.integers(-3000, 3000, size=units).astype(np.int32)
    # Output range from the real outputs of random inputs (the scale a converter would pick).
    scale_w = np.asarray(wq.scale).reshape((-1,) + (1,) * (len(w_shape) - 1))
    fan = np.sqrt(np.prod(w_shape[1:])) * 70 * s_in
    spread = float(np.max(np.abs(w * scale_w).sum(axis=tuple(range(1, len(w_shape))))) / 4 + fan * 0.01)
    lo = 0.0 if act is Activation.RELU else -spread
    out_q = quant_from_range(lo, spread)
    b = GraphBuilder(opcode.lower())
    x = b.input(x_shape, "int8", quant=in_q)
    wt = b.const(w, quant=wq)
    bt = b.const(bias, quant=bias_quant(in_q, wq))
    if opcode == "CONV_2D":
        oh = out_size(padding, x_shape[1], kernel[0], stride[0], dilation[0])
        ow = out_size(padding, x_shape[2], kernel[1], stride[1], dilation[1])
        y = b.output((x_shape[0], oh, ow, units), "int8", quant=out_q)
        b.op("CONV_2D", [x, wt, bt], [y], Conv2DOptions(padding, *stride, *dilation, act))
    else:
        y = b.output((x_shape[0], units), "int8", quant=out_q)
        b.op("FULLY_CONNECTED", [x, wt, bt], [y], FullyConnectedOptions(act))
    return b.build()


def conv_case(x_shape: tuple[int, ...], units: int, **kw: object) -> Callable[[np.random.Generator], Graph]:
    return lambda rng: layer_graph(rng, "CONV_2D", x_shape, units, **kw)  # type: ignore[arg-type]


def fc_case(x_shape: tuple[int, ...], units: int, **kw: object) -> Callable[[np.random.Generator], Graph]:
    return lambda rng: layer_graph(rng, "FULLY_CONNECTED", x_shape, units, **kw)  # type: ignore[arg-type]


def float_accuracy(model: str) -> float:
    """The float model's test accuracy in percent as examples/models/models.json records it
    (measured with the TFLite interpreter)."""
    doc = json.loads((MODELS / "models.json").read_text())
    (entry,) = [m for m in doc["models"] if m["name"] == model]
    return 100.0 * float(entry["files"]["float"]["test_accuracy"])


def calibration(graph: Graph, rng: np.random.Generator, n: int = 12) -> Calibration:
    x = graph.tensors[graph.inputs[0]]
    xs = rng.integers(-128, 128, size=(n, *x.shape[1:])).astype(np.int8)
    ref = np.concatenate([Oracle(graph).run([xs[i:i + x.shape[0]].reshape(x.shape)]).outputs[0]
                          for i in range(0, n - x.shape[0] + 1, x.shape[0])])
    return Calibration(xs, ref)


def check_kernel(lib: kh.KernelLibrary, graph: Graph, layer_fwd: Callable[[np.ndarray], np.ndarray],
                  call: KernelCall, x: np.ndarray) -> None:
    tin, tout = graph.inputs[0], graph.outputs[0]
    expected = layer_fwd(x)
    got = lib.call(call, graph, {tin: x})[tout]
    assert got.shape == graph.tensors[tout].shape
    np.testing.assert_array_equal(got, expected.reshape(got.shape))


