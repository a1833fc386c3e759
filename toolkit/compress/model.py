"""A compressed model: an int8 graph whose weight layers run as compressed layers.

:func:`compress_graph` applies a spec (or explicit settings) layer by layer and returns a
frozen :class:`CompressedModel`; :meth:`CompressedModel.simulate` runs the numpy oracle with
every compressed layer's ``forward`` in place of its op — the host simulation of what the
device computes.

**Calibration.**  Layers are compressed in graph order.  With ``sequential=True`` (default)
each layer's :class:`~toolkit.compress.base.Calibration` ``inputs`` are the activations
produced by the *already compressed* earlier layers (so recovery also absorbs their error,
as in GPTQ / sequential bias correction); with ``sequential=False`` they are the original int8
model's activations.  ``reference`` is always the original int8 layer's output on the original
model's activations.  Arrays are ``(samples, *tensor.shape[1:])`` (see
:mod:`toolkit.compress.common`).

**Float weights.**  When the float model is given, each compressible op of the int8 graph is
matched to one of the float graph by position: the k-th CONV_2D / DEPTHWISE_CONV_2D /
FULLY_CONNECTED of one graph is the k-th of the other, and they must have the same opcode and
weight shape (this holds for a float model and its converter-made int8 twin, and for
:func:`~toolkit.compress.ptq.quantize_graph` output by construction); any mismatch is a
:class:`~toolkit.errors.CompressionError`.  The float weights are then the recovery target
(``LayerRef.real_weights``) instead of the dequantized int8 ones.

**Batching.**  Models have batch 1.  To run many samples at once the graph is re-batched
(every activation's leading 1 becomes the sample count) when all its ops are known to be
independent along that axis; otherwise samples run one by one.  Both give identical results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from toolkit.compress.base import (
    COMPRESSIBLE_OPS,
    Calibration,
    CompressedLayer,
    LayerRef,
    Method,
    Setting,
)
from toolkit.compress.registry import get_method
from toolkit.compress.spec import CompressionSpec
from toolkit.errors import CompressionError
from toolkit.model.ir import (
    ConcatenationOptions,
    DType,
    Graph,
    Op,
    QuantParams,
    SqueezeOptions,
    Tensor,
)
from toolkit.oracle import Oracle, OracleResult

log = logging.getLogger(__name__)

Forward = Callable[[np.ndarray], np.ndarray]

# Ops that treat the leading dimension as independent samples, given the checks of
# _batch_safe_op (axes, paddings).
_BATCH_SAFE = frozenset({
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D",
    "ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "RELU", "RELU6", "LEAKY_RELU", "PRELU",
    "LOGISTIC", "TANH", "HARD_SWISH", "SOFTMAX", "ABS", "RSQRT", "SQRT", "QUANTIZE",
    "DEQUANTIZE", "RESHAPE", "SQUEEZE", "MEAN", "PAD", "CONCATENATION",
})


# ---------------------------------------------------------------------------------------------
# Running many samples.


def _batch_safe_op(graph: Graph, op: Op) -> bool:
    if op.opcode not in _BATCH_SAFE:
        return False
    if op.opcode == "SQUEEZE":
        dims = op.options.squeeze_dims if isinstance(op.options, SqueezeOptions) else ()
        rank = len(graph.tensors[op.inputs[0]].shape)
        return bool(dims) and all(d % rank != 0 for d in dims)
    if op.opcode == "CONCATENATION":
        rank = len(graph.tensors[op.outputs[0]].shape)
        return isinstance(op.options, ConcatenationOptions) and op.options.axis % rank != 0
    if op.opcode == "MEAN":
        axes = graph.tensors[op.inputs[1]].data
        rank = len(graph.tensors[op.inputs[0]].shape)
        return axes is not None and all(int(a) % rank != 0 for a in np.ravel(axes))
    if op.opcode == "PAD":
        pads = graph.tensors[op.inputs[1]].data
        return pads is not None and not np.any(np.asarray(pads)[0])
    return True


def batched_graph(graph: Graph, n: int) -> Graph | None:
    """``graph`` with every activation's leading dimension 1 replaced by ``n``, or None when
    that would not run ``n`` independent samples (stateful model, an activation without a
    leading 1, an op that mixes the batch axis)."""
    if graph.variables:
        return None
    tensors = list(graph.tensors)
    for t in graph.tensors:
        if t.is_constant or t.dtype is DType.RESOURCE:
            continue
        if not t.shape or t.shape[0] != 1:
            return None
        tensors[t.index] = replace(t, shape=(n, *t.shape[1:]))
    if not all(_batch_safe_op(graph, op) for op in graph.ops):
        return None
    return replace(graph, tensors=tuple(tensors))


class _Executor:
    """Runs op ranges of a graph on ``n`` samples; values are ``(n, *tensor.shape)`` arrays."""

    def __init__(self, graph: Graph, n: int) -> None:
        self.graph = graph
        self.n = n
        self.batched = batched_graph(graph, n) if n > 1 else None

    def run(self, ops: Sequence[Op], values: dict[int, np.ndarray],
            overrides: Mapping[int, Forward]) -> None:
        """Execute ``ops`` (a contiguous range in graph order), adding their outputs to ``values``."""
        if not ops:
            return
        produced = sorted({t for op in ops for t in op.outputs})
        needed = sorted({t for op in ops for t in op.inputs if t >= 0 and t not in produced
                         and not self.graph.tensors[t].is_constant})
        missing = [t for t in needed if t not in values]
        if missing:
            raise CompressionError(f"tensors {missing} are read before they are written")
        base = self.batched or self.graph
        sub = replace(base, ops=tuple(ops), inputs=tuple(needed), outputs=tuple(produced))
        wrapped = {i: _shape_adapter(base, i, f) for i, f in overrides.items()
                   if any(op.index == i for op in ops)}
        oracle = Oracle(sub, overrides=wrapped)
        if self.batched is not None:
            shapes = {t: self.graph.tensors[t].shape for t in produced}
            res = oracle.run([values[t].reshape(base.tensors[t].shape) for t in needed])
            for t, v in zip(produced, res.outputs, strict=True):
                values[t] = v.reshape((self.n, *shapes[t]))
            return
        outs: list[list[np.ndarray]] = [[] for _ in produced]
        for i in range(self.n):
            oracle.reset()
            res = oracle.run([values[t][i] for t in needed])
            for k, v in enumerate(res.outputs):
                outs[k].append(v)
        for t, vs in zip(produced, outs, strict=True):
            values[t] = np.stack(vs)


def _shape_adapter(graph: Graph, op_index: int, forward: Forward) -> Forward:
    """Adapt a compressed forward ``(B, *in[1:]) → (B, *out[1:])`` to the oracle's tensor shapes."""
    op = graph.ops[op_index]
    tin, tout = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]

    def run(x: np.ndarray) -> np.ndarray:
        y = forward(np.asarray(x).reshape((-1, *tin.shape[1:])))
        return np.asarray(y).reshape(tout.shape)

    return run


def _as_samples(graph: Graph, x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """Graph inputs as ``(n, *tensor.shape)`` arrays from sample-major arrays."""
    arrays = [x] if isinstance(x, np.ndarray) else list(x)
    if len(arrays) != len(graph.inputs):
        raise CompressionError(f"model {graph.name!r} takes {len(graph.inputs)} inputs, got {len(arrays)}")
    out = []
    for idx, a in zip(graph.inputs, arrays, strict=True):
        t = graph.tensors[idx]
        a = np.asarray(a)
        if a.dtype != t.dtype.numpy:
            raise CompressionError(f"input {t.name} must be {t.dtype.value}, got {a.dtype}")
        if a.size % t.num_elements:
            raise CompressionError(
                f"input of {a.size} elements is not a whole number of {list(t.shape)} samples")
        out.append(a.reshape((-1, *t.shape)))
    if len({a.shape[0] for a in out}) != 1:
        raise CompressionError("every input needs the same number of samples")
    return out


def run_samples(graph: Graph, x: np.ndarray | Sequence[np.ndarray],
                overrides: Mapping[int, Forward] | None = None) -> list[np.ndarray]:
    """Run many samples (sample-major arrays, one per graph input) through the oracle with
    ``overrides`` (op index → forward in the ``(B, *in[1:])`` convention); returns each graph
    output as ``(n, *tensor.shape)``."""
    xs = _as_samples(graph, x)
    ex = _Executor(graph, xs[0].shape[0])
    values = dict(zip(graph.inputs, xs, strict=True))
    ex.run(graph.ops, values, overrides or {})
    return [values[t] for t in graph.outputs]


def run_all(graph: Graph, x: np.ndarray | Sequence[np.ndarray],
            overrides: Mapping[int, Forward] | None = None) -> dict[int, np.ndarray]:
    """Like :func:`run_samples`, but every non-constant tensor's values ``(n, *tensor.shape)``."""
    xs = _as_samples(graph, x)
    values = dict(zip(graph.inputs, xs, strict=True))
    _Executor(graph, xs[0].shape[0]).run(graph.ops, values, overrides or {})
    return values


# ---------------------------------------------------------------------------------------------
# The compressed model.


@dataclass(frozen=True, eq=False)
class CompressedModel:
    """An int8 graph plus one compressed layer per compressible op.

    ``settings`` holds the resolved setting of every compressible op (``int8`` where the spec
    said nothing); ``layers`` the compressed layer of each of them.
    """

    graph: Graph
    layers: Mapping[int, CompressedLayer]
    settings: Mapping[int, Setting]
    spec: CompressionSpec | None = None
    float_graph: Graph | None = field(default=None, repr=False)

    @property
    def overrides(self) -> dict[int, Forward]:
        return {i: layer.forward for i, layer in self.layers.items()}

    def oracle(self) -> Oracle:
        """An oracle of the graph running the compressed forwards (keeps streaming state)."""
        return Oracle(self.graph, overrides={i: _shape_adapter(self.graph, i, f)
                                             for i, f in self.overrides.items()})

    def simulate(self, inputs: Sequence[np.ndarray], keep_intermediates: bool = False) -> OracleResult:
        """One invocation (inputs in the graph's shapes), from a fresh state."""
        return self.oracle().run(inputs, keep_intermediates=keep_intermediates)

    def predict(self, x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Many samples at once (sample-major); each graph output as ``(n, *shape)``."""
        return run_samples(self.graph, x, self.overrides)

    @property
    def flash_bytes(self) -> int:
        """Exact flash bytes of every compressed layer's constants."""
        return sum(layer.option.flash_bytes for layer in self.layers.values())

    def export_graph(self) -> tuple[Graph, list[str]]:
        """The graph with each layer's weights decoded back to int8 (``export_weights``), for
        --export-tflite; and the labels of layers that cannot be expressed (kept as they were
        in the original graph — the export is then not the compressed model)."""
        tensors = list(self.graph.tensors)
        ops = list(self.graph.ops)
        problems: list[str] = []
        for i, layer in sorted(self.layers.items()):
            op = ops[i]
            if layer.export_weights is None or layer.export_quant is None:
                problems.append(f"{op.label} ({layer.option.setting.label})")
                continue
            w = tensors[op.inputs[1]]
            data = np.asarray(layer.export_weights, dtype=np.int8).reshape(w.shape)
            tensors[w.index] = replace(w, data=data, quant=layer.export_quant)
            if layer.export_bias is None:
                continue
            in_scale = self.graph.tensors[op.inputs[0]].quant
            assert in_scale is not None
            bq = QuantParams(tuple(in_scale.scale[0] * s for s in layer.export_quant.scale),
                             (0,) * len(layer.export_quant.scale), 0)
            bias = np.asarray(layer.export_bias, dtype=np.int32).reshape(-1)
            if len(op.inputs) > 2 and op.inputs[2] >= 0:
                b = tensors[op.inputs[2]]
                tensors[b.index] = replace(b, data=bias, quant=bq)
            else:
                t = Tensor(len(tensors), f"{op.label}/bias", (bias.size,), DType.INT32, bq, bias)
                tensors.append(t)
                ops[i] = replace(op, inputs=(op.inputs[0], op.inputs[1], t.index))
        return replace(self.graph, tensors=tuple(tensors), ops=tuple(ops)), problems


# ---------------------------------------------------------------------------------------------
# Compression.


def compressible_ops(graph: Graph) -> list[Op]:
    return [op for op in graph.ops if op.opcode in COMPRESSIBLE_OPS]


def match_float_weights(graph: Graph, float_graph: Graph) -> dict[int, np.ndarray]:
    """int8 op index → float32 weights of the matching float op (see the module docstring)."""
    mine, theirs = compressible_ops(graph), compressible_ops(float_graph)
    if len(mine) != len(theirs):
        raise CompressionError(
            f"the float model has {len(theirs)} weight layers and the int8 model {len(mine)}; "
            "they cannot be matched")
    out: dict[int, np.ndarray] = {}
    for a, b in zip(mine, theirs, strict=True):
        wa, wb = graph.tensors[a.inputs[1]], float_graph.tensors[b.inputs[1]]
        if a.opcode != b.opcode or wa.shape != wb.shape:
            raise CompressionError(
                f"int8 layer {a.label} ({a.opcode} {list(wa.shape)}) does not match float layer "
                f"{b.label} ({b.opcode} {list(wb.shape)})")
        if wb.data is not None and wb.dtype is DType.FLOAT32:
            out[a.index] = np.asarray(wb.data, dtype=np.float32)
    return out


def resolve_settings(graph: Graph,
                     spec_or_settings: CompressionSpec | Mapping[int, Setting]) -> dict[int, Setting]:
    """A setting for every compressible op: the spec's, else ``int8`` (the layer unchanged)."""
    chosen = (spec_or_settings.resolve(graph) if isinstance(spec_or_settings, CompressionSpec)
              else dict(spec_or_settings))
    ops = {op.index for op in compressible_ops(graph)}
    bad = sorted(set(chosen) - ops)
    if bad:
        raise CompressionError(f"op(s) {bad} are not compressible layers of {graph.name!r}")
    return {i: chosen.get(i, Setting.of("int8")) for i in sorted(ops)}


def compress_graph(graph: Graph, spec_or_settings: CompressionSpec | Mapping[int, Setting],
                   calib_x: np.ndarray | Sequence[np.ndarray] | None, *,
                   float_graph: Graph | None = None, sequential: bool = True) -> CompressedModel:
    """Compress every compressible op of an int8 ``graph`` (see the module docstring).

    ``calib_x``: calibration samples for the graph's input(s), sample-major, already in the
    input's dtype (int8); None compresses without calibration (no accuracy recovery).
    """
    settings = resolve_settings(graph, spec_or_settings)
    for i in settings:
        if graph.tensors[graph.ops[i].inputs[0]].dtype is not DType.INT8:
            raise CompressionError(
                f"{graph.ops[i].label} is not an int8 layer: quantize a float model first "
                "(toolkit.compress.ptq.quantize_graph, or boardfit compress with --data/--calib)")
    floats = match_float_weights(graph, float_graph) if float_graph is not None else {}
    methods = {i: get_method(s.method) for i, s in settings.items()}
    for i, m in methods.items():
        layer = LayerRef(graph, graph.ops[i], floats.get(i))
        if not m.applicable(layer):
            raise CompressionError(
                f"method {m.name!r} cannot compress op {i} ({graph.ops[i].opcode} "
                f"{graph.ops[i].name!r}); name it in a [layers.*] table with another method, "
                "or let [default] choose only the layers the method applies to")
    layers = _compress_layers(graph, settings, methods, floats, calib_x, sequential)
    spec = spec_or_settings if isinstance(spec_or_settings, CompressionSpec) else None
    return CompressedModel(graph, layers, settings, spec, float_graph)


def _compress_layers(graph: Graph, settings: Mapping[int, Setting], methods: Mapping[int, Method],
                     floats: Mapping[int, np.ndarray], calib_x: np.ndarray | Sequence[np.ndarray] | None,
                     sequential: bool) -> dict[int, CompressedLayer]:
    layers: dict[int, CompressedLayer] = {}
    if calib_x is None:
        for i, s in settings.items():
            layers[i] = _apply(graph, i, s, methods[i], floats.get(i), None)
        return layers
    xs = _as_samples(graph, calib_x)
    ex = _Executor(graph, xs[0].shape[0])
    ref = dict(zip(graph.inputs, xs, strict=True))
    comp = dict(ref) if sequential else ref
    done = 0  # ops executed so far in both runs
    for i in sorted(settings):
        ex.run(graph.ops[done:i + 1], ref, {})
        if sequential:
            ex.run(graph.ops[done:i], comp, {k: v.forward for k, v in layers.items()})
        op = graph.ops[i]
        tin, tout = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
        calib = Calibration(inputs=comp[tin.index].reshape((-1, *tin.shape[1:])),
                            reference=ref[tout.index].reshape((-1, *tout.shape[1:])))
        layers[i] = _apply(graph, i, settings[i], methods[i], floats.get(i), calib)
        if sequential:
            ex.run(graph.ops[i:i + 1], comp, {i: layers[i].forward})
        done = i + 1
    return layers


def _apply(graph: Graph, i: int, setting: Setting, m: Method, float_w: np.ndarray | None,
           calib: Calibration | None) -> CompressedLayer:
    layer = LayerRef(graph, graph.ops[i], float_w)
    try:
        result = m.apply(layer, setting, calib)
    except ValueError as exc:  # check_setting: unknown or mistyped parameter
        raise CompressionError(f"{graph.ops[i].label}: {exc}") from exc
    expected = m.option(layer, setting)
    if result.option != expected:
        raise CompressionError(
            f"{graph.ops[i].label}: method {m.name!r} built {result.option} but its option() "
            f"promised {expected}; recovery must not change the storage")
    log.info("%s: %s, %d bytes", graph.ops[i].label, setting.label, result.option.flash_bytes)
    return result
