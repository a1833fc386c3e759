"""The contract every compression method follows (DESIGN.md §3).

A method turns one weight layer (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED) of an int8 graph
into a drop-in replacement: the same input and output tensors with the same quantization, so
layers can be mixed freely and the rest of the graph is untouched.  For each setting it knows
the **exact** cost before anything is built, and applied it yields a :class:`CompressedLayer`:

* ``call`` — the :class:`~firmware_gen.lower.KernelCall` the device runs, whose packed storage
  (sparse streams, codebooks, bit planes, scales) sits in :class:`~firmware_gen.lower.ConstArray`
  params, so the code generator and the cffi kernel tests handle it like any other kernel;
* ``forward`` — numpy that performs the same integer arithmetic as that kernel, bit for bit,
  so the host simulation of a compressed model is what the device computes.

Flash bytes are the ConstArrays as model.c lays them out (each 8-byte aligned and padded, see
:func:`array_flash_bytes`).  The planner sees only :class:`Option` values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from firmware_gen.lower import ConstArray, KernelCall, Struct
from toolkit.model.ir import Graph, Op, QuantParams, Tensor

COMPRESSIBLE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
FLASH_ALIGN = 8  # model.c aligns and pads every constant array to 8 bytes (firmware_gen/sizes.py)

_CTYPE_BYTES = {
    "int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "uint32_t": 4,
    "float": 4, "double": 8, "int64_t": 8, "uint64_t": 8,
}


def array_flash_bytes(ctype: str, count: int) -> int:
    """Bytes one constant array occupies in flash, alignment padding included."""
    raw = _CTYPE_BYTES[ctype] * count
    return (raw + FLASH_ALIGN - 1) // FLASH_ALIGN * FLASH_ALIGN


def const_arrays(value: Any) -> Iterable[ConstArray]:
    """Every ConstArray inside a params field (nested structs included)."""
    if isinstance(value, ConstArray):
        yield value
    elif isinstance(value, Struct):
        for _, v in value.fields:
            yield from const_arrays(v)


def call_flash_bytes(call: KernelCall, graph: Graph) -> int:
    """Exact flash bytes of a call's constant data: its ConstArrays and constant tensor operands."""
    total = sum(array_flash_bytes(a.ctype, len(a.values)) for _, v in call.params for a in const_arrays(v))
    for t in call.input_tensors:
        tensor = graph.tensors[t]
        if tensor.is_constant:
            total += array_flash_bytes(_ctype_of(tensor), tensor.num_elements)
    return total


def _ctype_of(t: Tensor) -> str:
    return {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t",
            "float32": "float", "int64": "int64_t", "float16": "uint16_t"}[t.dtype.value]


@dataclass(frozen=True)
class Setting:
    """A method and its parameters: hashable, ordered, and what spec files and plan.json store."""

    method: str
    params: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(method: str, **params: Any) -> Setting:
        return Setting(method, tuple(sorted(params.items())))

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    def to_table(self) -> dict[str, Any]:
        return {"method": self.method, **dict(self.params)}

    @property
    def label(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params)
        return f"{self.method}({args})" if args else self.method


@dataclass(frozen=True)
class LayerRef:
    """One compressible op of an int8 graph, with the real-valued weights when they are known."""

    graph: Graph
    op: Op
    float_weights: np.ndarray | None = field(default=None, repr=False)

    @property
    def weight(self) -> Tensor:
        return self.graph.tensors[self.op.inputs[1]]

    @property
    def bias(self) -> Tensor | None:
        i = self.op.inputs[2] if len(self.op.inputs) > 2 else -1
        return self.graph.tensors[i] if i >= 0 else None

    @property
    def input(self) -> Tensor:
        return self.graph.tensors[self.op.inputs[0]]

    @property
    def output(self) -> Tensor:
        return self.graph.tensors[self.op.outputs[0]]

    def real_weights(self) -> np.ndarray:
        """Float weights: from the float model if known, else dequantized from the int8 ones."""
        if self.float_weights is not None:
            return np.asarray(self.float_weights, dtype=np.float32)
        w = self.weight
        assert w.data is not None and w.quant is not None
        scale = np.asarray(w.quant.scale, dtype=np.float64)
        zp = np.asarray(w.quant.zero_point, dtype=np.float64)
        shape = [1] * w.data.ndim
        if w.quant.per_channel:
            shape[w.quant.axis] = -1
        return ((w.data.astype(np.float64) - zp.reshape(shape)) * scale.reshape(shape)).astype(np.float32)


@dataclass(frozen=True)
class Calibration:
    """What a layer saw on calibration data.

    ``inputs``: the int8 activations arriving at the layer (batch first, the input tensor's shape
    per sample), produced by the already-compressed layers before it when compressing in
    sequence.  ``reference``: the uncompressed layer's int8 outputs on the original model's
    activations — the target that accuracy recovery fits.
    """

    inputs: np.ndarray
    reference: np.ndarray


@dataclass(frozen=True)
class Option:
    """One way to store and run one layer, with its exact costs."""

    op_index: int
    setting: Setting
    flash_bytes: int  # exact: every constant array of the layer, aligned as model.c lays it out
    ram_bytes: int  # scratch the kernel needs while it runs (decode buffers, intermediates)
    macs: int  # multiply-accumulates actually executed (binary ops count as 1/32 per bit... see method)
    kernel: str  # the C kernel symbol
    persistent_ram_bytes: int = 0  # RAM held for the whole run (e.g. tables decoded once at boot)


@dataclass(frozen=True, eq=False)
class CompressedLayer:
    option: Option
    call: KernelCall
    forward: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    # Weights decoded back into the op's original layout, for --export-tflite: int8 with
    # ``export_quant`` (per channel), or None when the format cannot be expressed in TFLite.
    export_weights: np.ndarray | None = field(default=None, repr=False)
    export_quant: QuantParams | None = None
    export_bias: np.ndarray | None = field(default=None, repr=False)

    @property
    def op_index(self) -> int:
        return self.option.op_index


class Method(Protocol):
    """A compression method.  Implementations live one per module under toolkit/compress/."""

    name: str

    def applicable(self, layer: LayerRef) -> bool:
        """Whether this method can compress this layer at all."""
        ...

    def settings(self, layer: LayerRef) -> list[Setting]:
        """The settings the planner explores for this layer (a small, useful grid)."""
        ...

    def option(self, layer: LayerRef, setting: Setting) -> Option:
        """Exact costs of one setting (may pack the weights to count bytes; no calibration)."""
        ...

    def apply(self, layer: LayerRef, setting: Setting, calib: Calibration | None) -> CompressedLayer:
        """Compress; with calibration data, recover accuracy (bias correction, refits).

        The returned layer's ``option`` must equal ``self.option(layer, setting)``: recovery
        changes values, never the storage layout.
        """
        ...


def options(method: Method, layer: LayerRef) -> list[Option]:
    """Every option of one method for one layer (empty if not applicable)."""
    if not method.applicable(layer):
        return []
    return [method.option(layer, s) for s in method.settings(layer)]


def check_setting(setting: Setting, allowed: Mapping[str, tuple[type, ...]]) -> None:
    """Raise ValueError naming an unknown or mistyped parameter of a setting."""
    for key, value in setting.params:
        if key not in allowed:
            raise ValueError(
                f"method {setting.method!r} has no parameter {key!r}; it takes: {', '.join(sorted(allowed))}"
            )
        if not isinstance(value, allowed[key]) or (isinstance(value, bool) and bool not in allowed[key]):
            names = " or ".join(t.__name__ for t in allowed[key])
            raise ValueError(f"method {setting.method!r}: {key} must be {names}, got {value!r}")
