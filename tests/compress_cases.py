"""Single-op int8 layers for the compression method tests (tests/test_compress_prune.py,
tests/test_compress_uniform_kmeans.py): FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D graphs
with random per-channel weight quantization (odd shapes, strides, dilation, groups, fused
activations are the caller's choice), their calibration data from the numpy oracle, and one
layer compressed with a setting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from opgen import GraphBuilder, bias_quant, rand_bias, rand_input, rand_per_channel, rand_quant, rand_weights

from toolkit.compress.base import Calibration, CompressedLayer, LayerRef, Setting
from toolkit.compress.registry import get_method
from toolkit.model.ir import (
    Activation,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    FullyConnectedOptions,
    Graph,
    Padding,
)
from toolkit.oracle import Oracle
from toolkit.oracle.padding import out_size

Builder = Callable[[np.random.Generator], Graph]


def fc(batch: int, depth: int, units: int, act: Activation = Activation.NONE) -> Builder:
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


def conv(shape: tuple[int, int, int, int], oc: int, k: tuple[int, int], stride: tuple[int, int] = (1, 1),
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


def dw(shape: tuple[int, int, int, int], mult: int, k: tuple[int, int], stride: tuple[int, int] = (1, 1),
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


def calibration(g: Graph, rng: np.random.Generator, n: int = 6) -> Calibration:
    x_t, y_t = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    xs = np.stack([rand_input(rng, x_t) for _ in range(n)])
    oracle = Oracle(g)
    ys = np.stack([oracle.run([x]).outputs[0] for x in xs])
    return Calibration(xs.reshape((-1, *x_t.shape[1:])), ys.reshape((-1, *y_t.shape[1:])))


def compress(g: Graph, setting: Setting, rng: np.random.Generator,
             calibrate: bool = True) -> tuple[Any, LayerRef, CompressedLayer]:
    """(method, layer, compressed layer) of the graph's one op, with calibration unless told not."""
    layer = LayerRef(g, g.ops[0])
    method = get_method(setting.method)
    return method, layer, method.apply(layer, setting, calibration(g, rng) if calibrate else None)
