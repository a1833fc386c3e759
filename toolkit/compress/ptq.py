"""Post-training quantization of a float model to a full-integer int8 graph.

So that float models can be compressed and planned: :func:`quantize_graph` turns a float32
IR graph into an int8 one from calibration data, the way the TFLite converter's full-integer
post-training quantization does it:

* **Activations**: per-tensor asymmetric int8 from the calibration min/max of each tensor
  (range first extended to contain 0: ``scale = (max − min) / 255`` rounded to float32,
  ``zero_point = round(−128 − min / scale)`` clamped to [−128, 127]).
* **Fixed output parameters** where TFLite's int8 kernels require them: SOFTMAX and LOGISTIC
  ``1/256, −128``; TANH ``1/128, 0``.
* **Shared parameters**: the ops that move values without rescaling (MAX/AVERAGE_POOL_2D,
  RESHAPE, SQUEEZE, EXPAND_DIMS, STRIDED_SLICE, PAD, TRANSPOSE, SPLIT, SPLIT_V, CONCATENATION,
  MAXIMUM, MINIMUM) and a variable's reads and writes get one set of parameters from the union
  of their tensors' ranges, as int8 TFLite requires.
* **Weights** of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED: per output channel, symmetric
  int8 in [−127, 127], ``scale = max|w| / 127`` (float32; an all-zero channel gets scale 1).
  **Bias**: int32, ``round(b / (s_in · s_w[c]))``, scale ``s_in · s_w[c]`` (float32), zero point 0.
* **Other float constants** (e.g. the scalar of a MUL): per-tensor asymmetric int8 from their
  own values.

**Interface.**  The result is full-integer: int8 graph inputs and outputs carrying the
calibrated (or fixed) parameters, no QUANTIZE/DEQUANTIZE ops — like the committed ``*_int8``
example models.  Real-valued data is quantized on the way in by
:func:`toolkit.datasets.prepare_inputs` (TFLite's QUANTIZE arithmetic) and classification
outputs are compared by argmax, so no conversion ops are needed; an int8 graph can be written
by :func:`toolkit.model.tflite_writer.write_tflite` and run by the TFLite interpreter.

Tensor and op indices are unchanged, so the k-th weight layer of the float graph is the k-th of
the int8 one (what :func:`toolkit.compress.model.match_float_weights` relies on).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np

from toolkit.compress.model import run_all
from toolkit.errors import CompressionError
from toolkit.model.ir import DType, Graph, QuantParams, Tensor, Variable, VariableOptions

log = logging.getLogger(__name__)

SUPPORTED = frozenset({
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "SUB", "MUL", "AVERAGE_POOL_2D",
    "MAX_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "STRIDED_SLICE", "PAD", "TRANSPOSE",
    "SPLIT", "SPLIT_V", "CONCATENATION", "MAXIMUM", "MINIMUM", "SOFTMAX", "LOGISTIC", "TANH",
    "RELU", "RELU6", "LEAKY_RELU", "HARD_SWISH", "MEAN", "READ_VARIABLE", "ASSIGN_VARIABLE",
})
_SHARED = frozenset({"MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS",
                     "STRIDED_SLICE", "PAD", "TRANSPOSE", "SPLIT", "SPLIT_V", "CONCATENATION",
                     "MAXIMUM", "MINIMUM"})
_FIXED = {"SOFTMAX": QuantParams((1.0 / 256,), (-128,)), "LOGISTIC": QuantParams((1.0 / 256,), (-128,)),
          "TANH": QuantParams((1.0 / 128,), (0,))}
_WEIGHT_AXIS = {"CONV_2D": 0, "FULLY_CONNECTED": 0, "DEPTHWISE_CONV_2D": 3}


def quant_from_range(lo: float, hi: float) -> QuantParams:
    """Asymmetric int8 parameters of a real range (extended to contain 0), as TFLite's
    converter derives them."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0.0:
        hi = lo + 1.0
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(np.round(-128.0 - lo / scale), -128, 127))
    return QuantParams((scale,), (zp,))


def quantize_values(x: np.ndarray, q: QuantParams) -> np.ndarray:
    """Real → int8 per tensor, TFLite's QUANTIZE: float32 division, half away from zero."""
    v = np.asarray(x, dtype=np.float32) / np.float32(q.scale[0])
    r = np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))
    return np.clip(r + q.zero_point[0], -128, 127).astype(np.int8)


class _Groups:
    """Union-find over tensor indices (the tensors that must share quantization parameters)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, t: int) -> int:
        self.parent.setdefault(t, t)
        while self.parent[t] != t:
            self.parent[t] = self.parent[self.parent[t]]
            t = self.parent[t]
        return t

    def tie(self, tensors: Iterable[int]) -> None:
        ts = [t for t in tensors if t >= 0]
        for t in ts[1:]:
            self.parent[self.find(t)] = self.find(ts[0])


def _check(graph: Graph) -> None:
    bad = sorted({op.opcode for op in graph.ops if op.opcode not in SUPPORTED})
    if bad:
        raise CompressionError(
            f"post-training quantization does not handle {', '.join(bad)}; it handles "
            f"{', '.join(sorted(SUPPORTED))}")
    for op in graph.ops:
        for t in op.inputs:
            if t >= 0 and graph.tensors[t].dtype not in (DType.FLOAT32, DType.INT32, DType.INT64):
                raise CompressionError(
                    f"{op.label}: tensor {graph.tensors[t].name} is {graph.tensors[t].dtype.value}; "
                    "post-training quantization needs a float32 model")


def _ranges(graph: Graph, calib_x: np.ndarray | Sequence[np.ndarray]) -> dict[int, tuple[float, float]]:
    values = run_all(graph, calib_x)
    return {t: (float(np.min(v)), float(np.max(v))) for t, v in values.items()
            if graph.tensors[t].dtype is DType.FLOAT32 and not graph.tensors[t].is_constant and v.size}


def _tie_groups(graph: Graph) -> _Groups:
    groups = _Groups()
    for op in graph.ops:
        if op.opcode in _SHARED:
            if op.opcode in ("CONCATENATION", "MAXIMUM", "MINIMUM"):
                data = list(op.inputs)
            else:  # the data operand; SPLIT takes (axis, data)
                data = [op.inputs[1] if op.opcode == "SPLIT" else op.inputs[0]]
            groups.tie([*data, *op.outputs])
    by_var: dict[int, list[int]] = {}
    for op in graph.ops:
        if isinstance(op.options, VariableOptions):
            by_var.setdefault(op.options.variable, []).extend(op.outputs if op.opcode == "READ_VARIABLE"
                                                              else op.inputs)
    for ts in by_var.values():
        groups.tie(ts)
    return groups


def _activation_params(graph: Graph, ranges: dict[int, tuple[float, float]]) -> dict[int, QuantParams]:
    groups = _tie_groups(graph)
    fixed: dict[int, QuantParams] = {}
    for op in graph.ops:
        if op.opcode in _FIXED:
            fixed[groups.find(op.outputs[0])] = _FIXED[op.opcode]
    span: dict[int, tuple[float, float]] = {}
    for t, (lo, hi) in ranges.items():
        r = groups.find(t)
        a, b = span.get(r, (lo, hi))
        span[r] = (min(a, lo), max(b, hi))
    params: dict[int, QuantParams] = {}
    for t in ranges:
        r = groups.find(t)
        params[t] = fixed.get(r) or quant_from_range(*span[r])
    return params


def _weight_quant(w: np.ndarray, axis: int) -> tuple[np.ndarray, QuantParams]:
    moved = np.moveaxis(np.asarray(w, dtype=np.float64), axis, 0)
    amax = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32).astype(np.float64)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, QuantParams(tuple(float(s) for s in scale), (0,) * scale.size, axis)


def _quantize_layers(graph: Graph, act: dict[int, QuantParams], tensors: list[Tensor]) -> set[int]:
    """Weights and biases of the weight layers; returns the tensors it replaced."""
    done: set[int] = set()
    for op in graph.ops:
        if op.opcode not in _WEIGHT_AXIS:
            continue
        w = graph.tensors[op.inputs[1]]
        if w.data is None or w.index in done:
            raise CompressionError(f"{op.label}: weights must be a constant used by one layer")
        q, wq = _weight_quant(w.data, _WEIGHT_AXIS[op.opcode])
        tensors[w.index] = replace(w, dtype=DType.INT8, quant=wq, data=q)
        done.add(w.index)
        b = graph.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
        if b is None:
            continue
        if b.data is None:
            raise CompressionError(f"{op.label}: the bias must be a constant")
        s_in = act[op.inputs[0]].scale[0]
        bscale = np.array([float(np.float32(s_in * s)) for s in wq.scale])
        bq = np.clip(np.rint(b.data.astype(np.float64) / bscale), -(2**31), 2**31 - 1).astype(np.int32)
        tensors[b.index] = replace(b, dtype=DType.INT32, data=bq,
                                   quant=QuantParams(tuple(bscale), (0,) * bscale.size, 0))
        done.add(b.index)
    return done


def quantize_graph(graph: Graph, calib_x: np.ndarray | Sequence[np.ndarray]) -> Graph:
    """The full-integer int8 twin of float ``graph`` (see the module docstring).

    ``calib_x``: calibration samples (float32, sample-major) for each graph input.
    """
    _check(graph)
    act = _activation_params(graph, _ranges(graph, calib_x))
    tensors = list(graph.tensors)
    done = _quantize_layers(graph, act, tensors)
    for t in graph.tensors:
        if t.index in done or t.dtype is not DType.FLOAT32:
            continue
        if t.is_constant:
            assert t.data is not None
            q = act.get(t.index) or quant_from_range(float(np.min(t.data)), float(np.max(t.data)))
            tensors[t.index] = replace(t, dtype=DType.INT8, quant=q, data=quantize_values(t.data, q))
        elif t.index in act:
            tensors[t.index] = replace(t, dtype=DType.INT8, quant=act[t.index])
        else:
            raise CompressionError(f"tensor {t.name} got no calibration values")
    variables = tuple(_quantize_variable(graph, v, act) for v in graph.variables)
    out = replace(graph, name=f"{graph.name}_ptq", tensors=tuple(tensors), variables=variables,
                  source_sha256="")
    log.info("quantized %s: %d activation tensors, %d weight/bias tensors", graph.name, len(act), len(done))
    return out


def _quantize_variable(graph: Graph, var: Variable, act: dict[int, QuantParams]) -> Variable:
    users = [t for op in graph.ops if isinstance(op.options, VariableOptions)
             and op.options.variable == var.index for t in (*op.outputs, *op.inputs)]
    q = next((act[t] for t in users if t in act), None)
    if q is None:
        raise CompressionError(f"variable {var.name} is never read or written")
    return replace(var, dtype=DType.INT8, quant=q, initial=quantize_values(var.initial, q))
