"""Sensitivity: what each option of each layer does to the model's output, that layer alone.

For every compressible layer and every setting the compression methods offer for it
(``Method.settings``), the layer is compressed with calibration data (:class:`Calibration`
from the *original* model's activations — the layer alone is compressed) and measured.

The calibration samples are split (:func:`split_fit_score`): layers are compressed with the
even-numbered ones and measured on the odd-numbered ones.  Accuracy recovery fits the samples
it sees (GPTQ, least-squares refits: with few samples and wide layers, almost perfectly), so a
loss measured on those samples would favour the options that overfit most; measured on held-out
samples it estimates what the option does to data the model has not been fitted to.  Measured:

* ``loss`` — the mean :func:`~toolkit.planner.runner.output_loss` of the model's outputs
  against the original int8 model's (KL divergence of the probabilities for classifiers,
  relative squared error otherwise), on the calibration samples;
* ``accuracy`` — top-1 accuracy on the calibration labels, when there are labels;
  ``agreement`` — top-1 agreement with the original model;
* ``output_error`` — the layer-local error: the squared error of the layer's output relative to
  the output's power, ``mean (y − y_ref)² / mean y_ref²`` (0 when the output is unchanged).

How the model output is obtained (``mode``):

* ``exact`` — the original model runs once with every activation kept; per option only the
  layer's compressed ``forward`` runs on its cached input and then the rest of the network from
  that layer on (all options of a layer stacked into one batch);
* ``proxy`` — the rest of the network runs only for a few *probe* options per layer (the ones
  whose output error is at the 50th and 100th percentile of that layer); every other option's
  loss is predicted from its layer-local error, ``loss ≈ α_l · output_error``, with ``α_l``
  fitted to the layer's probes by least squares (the gradient-free, second-order view of a
  layer's sensitivity: a small output perturbation costs loss proportional to its energy).
  Probe options keep their measured loss; the others get ``exact = False`` and no accuracy.
* ``auto`` — ``exact`` when its estimated run time (from the time of one full run and each
  layer's share of the MACs after it) is under ``exact_seconds``, else ``proxy``.

The interaction between layers is not modelled here: the planner checks a chosen mix by
simulating the whole compressed model (:mod:`toolkit.planner.pipeline`).

Results can be cached on disk (:class:`SensitivityCache`), keyed by everything that decides
them: the graph, the float graph, the calibration samples and labels, the mode, and the source
of the compression methods (a change to any method module invalidates the cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.compress.base import COMPRESSIBLE_OPS, Calibration, CompressedLayer, LayerRef, Option, Setting
from toolkit.compress.registry import all_methods
from toolkit.errors import CompressionError, PlanError
from toolkit.model.ir import Graph, Op
from toolkit.planner.runner import GraphRunner, layer_forward, output_loss, top1

log = logging.getLogger(__name__)

SENSITIVITY_VERSION = 3  # bump when what is measured changes
MODES = ("auto", "exact", "proxy")
EXACT_SECONDS = 20.0  # auto: the exact mode's estimated run time must stay under this
MIN_SPLIT = 8  # fewer calibration samples: layers are compressed and scored on the same ones
PROBE_QUANTILES = (0.5, 1.0)  # proxy mode: probe options at these quantiles of the output error
_STACK_ELEMENTS = 4_000_000  # activation elements of one stacked suffix batch (memory bound)

# (stage, done, total): called as work progresses, for progress bars.
Progress = Callable[[str, int, int], None]


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class Measurement:
    """One option of one layer, that layer alone compressed (see the module docstring)."""

    loss: float
    output_error: float
    accuracy: float | None = None
    agreement: float | None = None
    exact: bool = True  # loss measured through the rest of the network (else the proxy)


@dataclass(frozen=True)
class Candidate:
    """An option the planner may choose, with what it costs the model's output."""

    option: Option
    measurement: Measurement

    @property
    def setting(self) -> Setting:
        return self.option.setting


@dataclass(frozen=True)
class LayerSensitivity:
    op_index: int
    name: str
    opcode: str
    candidates: tuple[Candidate, ...]
    alpha: float | None = None  # proxy mode: loss per unit of output MSE

    def candidate(self, setting: Setting) -> Candidate:
        for c in self.candidates:
            if c.setting == setting:
                return c
        raise KeyError(f"layer {self.op_index} has no option {setting.label}")


@dataclass(frozen=True)
class Sensitivity:
    """Every layer's candidates, measured on ``samples`` calibration samples."""

    model_hash: str
    samples: int
    mode: str  # the mode that ran: "exact" or "proxy"
    base_accuracy: float | None  # the original int8 model on the calibration labels
    layers: tuple[LayerSensitivity, ...]
    seconds: float = 0.0
    cached: int = 0  # candidates read from the cache
    score_indices: tuple[int, ...] = ()  # the samples losses were measured on (see split_fit_score)
    # The compressed layers measured in this run (not those read from the cache), kept in
    # memory so that whole mixes can be simulated without compressing again.
    compressed: Mapping[tuple[int, Setting], CompressedLayer] = field(default_factory=dict, compare=False,
                                                                        repr=False)

    def layer(self, op_index: int) -> LayerSensitivity:
        for layer in self.layers:
            if layer.op_index == op_index:
                return layer
        raise KeyError(op_index)


# ---------------------------------------------------------------------------------------------
# The cache.


def _methods_source_hash() -> str:
    """Hash of the compression package's source: a method change invalidates cached results."""
    import toolkit.compress as pkg

    h = hashlib.sha256()
    for path in sorted(Path(pkg.__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_key(graph: Graph, calib_x: np.ndarray, labels: np.ndarray | None, mode: str,
              float_graph: Graph | None = None) -> str:
    """Everything that decides a sensitivity result, hashed."""
    h = hashlib.sha256()
    floats = float_graph.content_hash() if float_graph is not None else "-"
    for part in (f"v{SENSITIVITY_VERSION}", graph.content_hash(), floats, mode, _methods_source_hash()):
        h.update(part.encode() + b"\0")
    x = np.ascontiguousarray(calib_x)
    h.update(repr((x.dtype.str, x.shape)).encode())
    h.update(x.tobytes())
    if labels is not None:
        h.update(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes())
    return h.hexdigest()[:32]


def _entry_key(op_index: int, setting: Setting) -> str:
    return f"{op_index}|{json.dumps(setting.to_table(), sort_keys=True)}"


class SensitivityCache:
    """A directory of JSON files, one per :func:`cache_key`: ``entry → option + measurement``.

    Writes are atomic (write a temporary file, rename), so concurrent planners at worst
    recompute an entry.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @classmethod
    def default(cls) -> SensitivityCache:
        from targets.toolchains import cache_dir

        return cls(cache_dir() / "sensitivity")

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def load(self, key: str) -> dict[str, Candidate]:
        path = self._path(key)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        out: dict[str, Candidate] = {}
        for k, v in doc.items():
            try:
                out[k] = _candidate_from_json(v)
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring a malformed sensitivity cache entry in %s", path)
        return out

    def save(self, key: str, entries: Mapping[str, Candidate]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        doc = {k: _candidate_to_json(c) for k, c in sorted(entries.items())}
        tmp.write_text(json.dumps(doc, sort_keys=True), encoding="utf-8")
        tmp.replace(path)


def _candidate_to_json(c: Candidate) -> dict[str, Any]:
    o, m = c.option, c.measurement
    return {
        "op_index": o.op_index, "setting": o.setting.to_table(), "flash_bytes": o.flash_bytes,
        "ram_bytes": o.ram_bytes, "macs": o.macs, "kernel": o.kernel,
        "persistent_ram_bytes": o.persistent_ram_bytes, "loss": m.loss, "output_error": m.output_error,
        "accuracy": m.accuracy, "agreement": m.agreement, "exact": m.exact,
    }


def _candidate_from_json(d: Mapping[str, Any]) -> Candidate:
    table = dict(d["setting"])
    setting = Setting.of(table.pop("method"), **table)
    option = Option(int(d["op_index"]), setting, int(d["flash_bytes"]), int(d["ram_bytes"]), int(d["macs"]),
                    str(d["kernel"]), int(d["persistent_ram_bytes"]))
    acc, agr = d["accuracy"], d["agreement"]
    m = Measurement(float(d["loss"]), float(d["output_error"]), None if acc is None else float(acc),
                    None if agr is None else float(agr), bool(d["exact"]))
    return Candidate(option, m)


# ---------------------------------------------------------------------------------------------
# Measuring.


def compressible_layers(graph: Graph) -> list[Op]:
    return [op for op in graph.ops if op.opcode in COMPRESSIBLE_OPS]


def layer_settings(graph: Graph, op: Op, float_weights: np.ndarray | None = None,
                   methods: Iterable[str] | None = None) -> list[Setting]:
    """Every setting the (chosen) methods offer for one layer, ``int8`` first."""
    layer = LayerRef(graph, op, float_weights)
    wanted = set(methods) if methods is not None else None
    out: list[Setting] = []
    registry = all_methods()
    for name in ["int8", *sorted(n for n in registry if n != "int8")]:
        if wanted is not None and name not in wanted and name != "int8":
            continue
        m = registry[name]
        try:
            if m.applicable(layer):
                out.extend(m.settings(layer))
        except CompressionError as exc:
            log.info("%s: method %s offers nothing: %s", op.label, name, exc)
    return out


@dataclass
class _Layer:
    """Work state of one layer while it is measured."""

    op: Op
    layer_ref: LayerRef
    calib: Calibration
    settings: list[Setting]
    held_inputs: np.ndarray  # the layer's input and original output on the scoring samples
    held_reference: np.ndarray
    found: dict[Setting, Candidate] = field(default_factory=dict)
    outputs: dict[Setting, np.ndarray] = field(default_factory=dict)  # compressed outputs, not yet scored
    options: dict[Setting, Option] = field(default_factory=dict)
    error: dict[Setting, float] = field(default_factory=dict)
    compressed: dict[Setting, CompressedLayer] = field(default_factory=dict)


class _Scorer:
    """Scores stacked compressed layer outputs through the rest of the network."""

    def __init__(self, graph: Graph, runner: GraphRunner, cached: Mapping[int, np.ndarray],
                 labels: np.ndarray | None) -> None:
        self.graph = graph
        self.runner = runner
        self.cached = cached
        self.labels = labels
        self.reference = [cached[t] for t in graph.outputs]
        self.ref_top1 = top1(self.reference)
        self.base_accuracy = None if labels is None else float(np.mean(self.ref_top1 == labels))

    def score(self, op_index: int, outputs: Sequence[np.ndarray]) -> list[tuple[float, float | None, float]]:
        """(loss, accuracy, agreement) of each compressed layer output."""
        results: list[tuple[float, float | None, float]] = []
        n = self.reference[0].shape[0]
        per = max(1, int(np.prod(outputs[0].shape[1:])) if outputs else 1)
        chunk = max(1, _STACK_ELEMENTS // max(1, per * n))
        for start in range(0, len(outputs), chunk):
            part = outputs[start:start + chunk]
            outs = self.runner.run_suffix(op_index, np.concatenate(part, axis=0), self.cached, len(part))
            for k in range(len(part)):
                mine = [o[k * n:(k + 1) * n] for o in outs]
                loss = float(np.mean(output_loss(self.graph, self.reference, mine)))
                pred = top1(mine)
                acc = None if self.labels is None else float(np.mean(pred == self.labels))
                results.append((loss, acc, float(np.mean(pred == self.ref_top1))))
        return results


def _output_error(graph: Graph, op: Op, y: np.ndarray, ref: np.ndarray) -> float:
    q = graph.tensors[op.outputs[0]].quant
    zp = q.zero_point[0] if q is not None else 0
    r = ref.reshape(len(ref), -1).astype(np.float64) - zp
    d = y.reshape(len(y), -1).astype(np.float64) - zp - r
    return float(np.mean(d * d) / max(float(np.mean(r * r)), 1e-12))


def _apply(layer: _Layer, setting: Setting, graph: Graph) -> tuple[CompressedLayer, np.ndarray] | None:
    from toolkit.compress.registry import get_method

    try:
        cl: CompressedLayer = get_method(setting.method).apply(layer.layer_ref, setting, layer.calib)
    except (CompressionError, ValueError) as exc:
        log.warning("%s: %s cannot be applied: %s", layer.op.label, setting.label, exc)
        return None
    y = layer_forward(graph, layer.op.index, cl.forward, layer.held_inputs)
    return cl, y


def measure_sensitivity(
    graph: Graph,
    calib_x: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    float_graph: Graph | None = None,
    methods: Iterable[str] | None = None,
    mode: str = "auto",
    exact_seconds: float = EXACT_SECONDS,
    cache: SensitivityCache | None = None,
    progress: Progress | None = None,
) -> Sensitivity:
    """Measure every option of every compressible layer of the int8 ``graph`` (see the module
    docstring).  ``calib_x``: calibration inputs, sample-major, int8 (one graph input)."""
    if mode not in MODES:
        raise PlanError(f"unknown sensitivity mode {mode!r}; known: {', '.join(MODES)}")
    progress = progress or _no_progress
    t_start = time.perf_counter()
    from toolkit.compress.model import match_float_weights

    floats = match_float_weights(graph, float_graph) if float_graph is not None else {}
    runner = GraphRunner(graph)
    t0 = time.perf_counter()
    values = runner.run_all([calib_x])
    full_seconds = time.perf_counter() - t0
    n = int(calib_x.shape[0])
    labels = None if labels is None else np.asarray(labels).reshape(-1)
    if labels is not None and len(labels) != n:
        raise PlanError(f"{len(labels)} labels for {n} calibration samples")
    fit_idx, score_idx = split_fit_score(n)
    fit = {t: v[fit_idx] for t, v in values.items()}
    held = {t: v[score_idx] for t, v in values.items()}
    scorer = _Scorer(graph, runner, held, None if labels is None else labels[score_idx])
    ops = compressible_layers(graph)
    if not ops:
        raise PlanError(f"{graph.name} has no compressible layers ({', '.join(COMPRESSIBLE_OPS)})")
    work = [_layer_work(graph, op, floats.get(op.index), fit, held, methods) for op in ops]
    chosen = mode if mode != "auto" else _auto_mode(graph, work, full_seconds, exact_seconds)
    key = cache_key(graph, calib_x, labels, chosen, float_graph) if cache is not None else ""
    stored = cache.load(key) if cache is not None else {}
    hits = _use_cache(work, stored)
    total = sum(len(w.settings) for w in work)
    done = hits
    progress("compressing options", done, total)
    for w in work:
        for s in w.settings:
            if s in w.found:
                continue
            applied = _apply(w, s, graph)
            done += 1
            progress("compressing options", done, total)
            if applied is None:
                continue
            w.compressed[s], w.outputs[s] = applied
            w.options[s] = applied[0].option
            w.error[s] = _output_error(graph, w.op, applied[1], w.held_reference)
    alphas = _score(work, scorer, chosen, progress)
    if cache is not None and len(stored) != sum(len(w.found) for w in work):
        fresh = {_entry_key(w.op.index, s): c for w in work for s, c in w.found.items()}
        cache.save(key, {**stored, **fresh})
    base_acc = scorer.base_accuracy
    layers = tuple(
        LayerSensitivity(w.op.index, w.op.label, w.op.opcode,
                         tuple(w.found[s] for s in w.settings if s in w.found), alphas.get(w.op.index))
        for w in work)
    for layer in layers:
        if not any(c.setting.method == "int8" for c in layer.candidates):
            raise PlanError(f"{layer.name}: the dense int8 kernel cannot run this layer")
    compressed = {(w.op.index, s): cl for w in work for s, cl in w.compressed.items()}
    return Sensitivity(graph.content_hash(), n, chosen, base_acc, layers, time.perf_counter() - t_start, hits,
                       tuple(int(i) for i in score_idx), compressed)


def split_fit_score(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(samples the layers are compressed with, samples they are scored on): the even and the
    odd positions, or all of them for both when there are fewer than ``MIN_SPLIT``."""
    if n < MIN_SPLIT:
        return np.arange(n), np.arange(n)
    return np.arange(0, n, 2), np.arange(1, n, 2)


def _layer_work(graph: Graph, op: Op, float_w: np.ndarray | None, fit: Mapping[int, np.ndarray],
                held: Mapping[int, np.ndarray], methods: Iterable[str] | None) -> _Layer:
    tin, tout = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    calib = Calibration(inputs=fit[tin.index].reshape((-1, *tin.shape[1:])),
                        reference=fit[tout.index].reshape((-1, *tout.shape[1:])))
    ref = LayerRef(graph, op, float_w)
    return _Layer(op, ref, calib, layer_settings(graph, op, float_w, methods),
                  held_inputs=held[tin.index], held_reference=held[tout.index])


def _use_cache(work: Sequence[_Layer], stored: Mapping[str, Candidate]) -> int:
    hits = 0
    for w in work:
        for s in w.settings:
            c = stored.get(_entry_key(w.op.index, s))
            if c is not None:
                w.found[s] = c
                hits += 1
    return hits


def _auto_mode(graph: Graph, work: Sequence[_Layer], full_seconds: float, limit: float) -> str:
    """``exact`` if scoring every option through the rest of the network is affordable."""
    macs = [_op_macs(graph, op) for op in graph.ops]
    total = float(sum(macs)) or 1.0
    estimate = 0.0
    for w in work:
        after = sum(macs[w.op.index + 1:]) / total
        share = max(after, (len(graph.ops) - w.op.index - 1) / max(1, len(graph.ops)))
        estimate += len(w.settings) * full_seconds * share
    log.info("exact sensitivity would take about %.1f s (limit %.1f s)", estimate, limit)
    return "exact" if estimate <= limit else "proxy"


def _op_macs(graph: Graph, op: Op) -> int:
    if op.opcode not in COMPRESSIBLE_OPS:
        return 0
    w = graph.tensors[op.inputs[1]]
    out = graph.tensors[op.outputs[0]]
    per_out = int(np.prod(w.shape)) // max(1, out.shape[-1]) if op.opcode != "DEPTHWISE_CONV_2D" \
        else int(np.prod(w.shape[1:3]))
    return int(np.prod(out.shape)) * per_out


def _score(work: Sequence[_Layer], scorer: _Scorer, mode: str, progress: Progress) -> dict[int, float]:
    """Fill every layer's ``found`` from its pending outputs; returns the proxy factors."""
    alphas: dict[int, float] = {}
    pending = sum(1 for w in work if w.outputs)
    for k, w in enumerate(work):
        progress("scoring layers", k, len(work))
        if not w.outputs:
            continue
        if mode == "exact":
            _score_exact(w, scorer, list(w.outputs))
        else:
            alphas[w.op.index] = _score_proxy(w, scorer)
        w.outputs.clear()
    progress("scoring layers", len(work), len(work))
    log.info("scored %d layers (%s)", pending, mode)
    return alphas


def _score_exact(w: _Layer, scorer: _Scorer, settings: Sequence[Setting]) -> None:
    results = scorer.score(w.op.index, [w.outputs[s] for s in settings])
    for s, (loss, acc, agr) in zip(settings, results, strict=True):
        w.found[s] = Candidate(w.options[s], Measurement(loss, w.error[s], acc, agr, True))


def _score_proxy(w: _Layer, scorer: _Scorer) -> float:
    """Probe a few options through the network, fit ``loss ≈ α · error``, predict the rest."""
    pending = sorted(w.outputs, key=lambda s: (w.error[s], s.label))
    lossy = [s for s in pending if w.error[s] > 0]
    probes: list[Setting] = []
    for q in PROBE_QUANTILES:
        if lossy:
            s = lossy[min(len(lossy) - 1, round(q * (len(lossy) - 1)))]
            if s not in probes:
                probes.append(s)
    _score_exact(w, scorer, probes)
    num = sum(w.found[s].measurement.loss * w.error[s] for s in probes)
    den = sum(w.error[s] ** 2 for s in probes)
    alpha = num / den if den > 0 else 0.0
    for s in pending:
        if s in probes:
            continue
        loss = 0.0 if w.error[s] == 0 else alpha * w.error[s]
        exact = w.error[s] == 0  # an identical output costs nothing, exactly
        agr = 1.0 if exact else None
        acc = scorer.base_accuracy if exact else None
        w.found[s] = Candidate(w.options[s], Measurement(loss, w.error[s], acc, agr, exact))
    return alpha
