"""Method ``int8``: the layer as it is — the dense int8 kernel of the kernel library.

The identity option every other method is compared with.  Its call is exactly what
``firmware_gen.lower.lower_op`` emits for the op, so its flash bytes are those of the existing
dense weights, bias and requantization parameters, and its forward repeats that call's
arithmetic (read from the call's own parameters, so the two cannot drift apart: conv and
depthwise requantize with per-channel fixed-point multipliers; FC follows whichever
requantization the lowering chose — fixed-point ``multiplier``/``shift`` or a ``double`` scale).

Parameters: none.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from firmware_gen.lower import ConstArray, KernelCall, lower_op
from toolkit.compress.base import (
    COMPRESSIBLE_OPS,
    Calibration,
    CompressedLayer,
    LayerRef,
    Option,
    Setting,
    call_flash_bytes,
    check_setting,
)
from toolkit.compress.common import Geometry, Requant, accumulate, geometry
from toolkit.compress.registry import register
from toolkit.errors import CompressionError, UnsupportedOp
from toolkit.model.ir import DType


def _values(call: KernelCall, name: str) -> np.ndarray:
    v = call.param(name)
    assert isinstance(v, ConstArray)
    return np.asarray(v.values)


def _forward(layer: LayerRef, g: Geometry, call: KernelCall) -> Callable[[np.ndarray], np.ndarray]:
    w = np.asarray(layer.weight.data, dtype=np.int64)
    if g.kind == "fc":
        assert layer.weight.quant is not None
        if not layer.weight.quant.per_channel:
            w = w - layer.weight.quant.zero_point[0]  # per-tensor FC has a filter offset
    b = layer.bias
    bias = (np.zeros(g.channels, np.int64) if b is None or b.data is None
            else b.data.astype(np.int64).reshape(-1))
    req = Requant(np.ones(g.channels), _values(call, "multiplier").astype(np.int64),
                  _values(call, "shift").astype(np.int64), bias)

    def fwd(x: np.ndarray) -> np.ndarray:
        return req.requantizer(g).apply(accumulate(g, w, x) + req.bias)

    return fwd


class Int8Method:
    name = "int8"

    def applicable(self, layer: LayerRef) -> bool:
        return (layer.op.opcode in COMPRESSIBLE_OPS and layer.weight.dtype is DType.INT8
                and layer.input.dtype is DType.INT8)

    def settings(self, layer: LayerRef) -> list[Setting]:
        return [Setting.of("int8")]

    def _call(self, layer: LayerRef) -> KernelCall:
        try:
            return lower_op(layer.graph, layer.op)
        except UnsupportedOp as exc:
            raise CompressionError(f"{layer.op.label}: the dense int8 kernel cannot run it: {exc}") from exc

    def option(self, layer: LayerRef, setting: Setting) -> Option:
        check_setting(setting, {})
        call = self._call(layer)
        g = geometry(layer)
        return Option(layer.op.index, setting, call_flash_bytes(call, layer.graph), call.scratch_bytes,
                      g.macs, call.symbol)

    def apply(self, layer: LayerRef, setting: Setting, calib: Calibration | None) -> CompressedLayer:
        option = self.option(layer, setting)
        call = self._call(layer)
        g = geometry(layer)
        w, b = layer.weight, layer.bias
        return CompressedLayer(option, call, _forward(layer, g, call), export_weights=w.data,
                               export_quant=w.quant, export_bias=None if b is None else b.data)


METHOD = register(Int8Method())
