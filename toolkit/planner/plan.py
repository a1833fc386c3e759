"""The plan file: ``plan.json``, schema ``boardfit.plan/1`` (documented in docs/json.md).

A :class:`Plan` records what the planner chose and why it believes it fits: the model (path,
file hash and graph hash), the board and budgets, one entry per compressible layer (method,
parameters, kernel symbol and variant, exact bytes, scratch, MACs, the loss the layer costs
alone), the predicted totals (flash and RAM as the generated firmware will have them, the
accuracy of the whole compressed model simulated on the validation samples) and which samples
were used for calibration and for validation.

:meth:`Plan.to_spec` turns it into the :class:`~toolkit.compress.spec.CompressionSpec` that
``boardfit compress`` and ``boardfit build`` apply (one ``[layers.<op index>]`` table per
layer); :func:`save_plan` writes that spec next to the plan as ``<stem>.spec.toml``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.compress.base import Setting
from toolkit.compress.spec import CompressionSpec
from toolkit.errors import PlanError

PLAN_SCHEMA = "boardfit.plan/1"


@dataclass(frozen=True)
class PlannedLayer:
    op_index: int
    name: str
    opcode: str
    setting: Setting
    kernel: str  # C symbol
    variant: str  # kernel variant directory ("ref": the portable kernels)
    flash_bytes: int  # Option.flash_bytes: packed weights, tables, codebooks, bias, requantization
    params_bytes: int  # the kernel's params struct
    scratch_bytes: int  # arena scratch while it runs
    persistent_ram_bytes: int  # RAM held for the whole run (tables decoded at boot)
    macs: int
    predicted_loss: float  # output loss with this layer alone compressed (calibration data)
    predicted_accuracy: float | None  # calibration accuracy with this layer alone compressed
    loss_measured: bool  # False: predicted by the layer-local proxy
    latency_ms: float | None = None

    @property
    def method(self) -> str:
        return self.setting.method


@dataclass(frozen=True)
class SampleSet:
    """Samples of a data set used for one purpose; ``indices`` into ``source`` (None: all)."""

    source: str
    count: int
    indices: tuple[int, ...] | None = None


@dataclass(frozen=True)
class PlanBudgets:
    flash_bytes: int | None  # None: no budget (host)
    ram_bytes: int | None
    latency_ms: float | None = None
    max_drop: float | None = None  # accuracy points
    flash_from: str = "board"  # "board" | "command line"
    ram_from: str = "board"


@dataclass(frozen=True)
class PlanTotals:
    predicted_flash_bytes: int
    predicted_ram_bytes: int
    predicted_accuracy: float | None  # whole compressed model on the validation samples
    predicted_agreement: float | None  # top-1 agreement with the original model (validation)
    predicted_loss: float  # Σ per-layer losses (the solver's objective)
    validation_loss: float | None  # output loss of the whole compressed model (validation)
    reference_accuracy: float | None  # float model (float input) or int8 model, validation
    int8_accuracy: float | None
    predicted_drop: float | None  # accuracy points below the reference (or disagreement %)
    predicted_latency_ms: float | None
    flash: Mapping[str, Any] = field(default_factory=dict)  # breakdown (Footprint.to_json)
    meets_max_drop: bool | None = None
    # What predicted_drop measures: "accuracy" (labels), "agreement" (top-1 vs the original
    # model, no labels) or "output error" (not a classifier: 100 × relative MSE of the output).
    drop_metric: str = "accuracy"


@dataclass(frozen=True)
class Plan:
    model: str
    model_sha256: str
    graph_hash: str
    float_model: bool
    board: str
    toolchain: str
    budgets: PlanBudgets
    layers: tuple[PlannedLayer, ...]
    totals: PlanTotals
    calibration: SampleSet
    validation: SampleSet | None
    sensitivity: Mapping[str, Any] = field(default_factory=dict)  # mode, samples, seconds, cached
    solver: Mapping[str, Any] = field(default_factory=dict)  # status, seconds, repairs

    def settings(self) -> dict[int, Setting]:
        return {layer.op_index: layer.setting for layer in self.layers}

    def to_spec(self) -> CompressionSpec:
        return CompressionSpec(None, {str(layer.op_index): layer.setting for layer in self.layers},
                               f"plan for {Path(self.model).name}")

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": PLAN_SCHEMA,
            "model": {"path": self.model, "sha256": self.model_sha256, "graph_hash": self.graph_hash,
                      "float_model": self.float_model},
            "board": self.board,
            "toolchain": self.toolchain,
            "budgets": _budgets_json(self.budgets),
            "layers": [_layer_json(layer) for layer in self.layers],
            "totals": _totals_json(self.totals),
            "data": {"calibration": _samples_json(self.calibration),
                     "validation": None if self.validation is None else _samples_json(self.validation)},
            "sensitivity": dict(self.sensitivity),
            "solver": dict(self.solver),
        }


# ---------------------------------------------------------------------------------------------
# JSON.


def _budgets_json(b: PlanBudgets) -> dict[str, Any]:
    return {"flash_bytes": b.flash_bytes, "ram_bytes": b.ram_bytes, "latency_ms": b.latency_ms,
            "max_drop": b.max_drop, "flash_from": b.flash_from, "ram_from": b.ram_from}


def _layer_json(layer: PlannedLayer) -> dict[str, Any]:
    return {
        "op_index": layer.op_index, "name": layer.name, "op": layer.opcode, "method": layer.setting.method,
        "params": dict(layer.setting.params), "label": layer.setting.label, "kernel": layer.kernel,
        "variant": layer.variant, "flash_bytes": layer.flash_bytes, "params_bytes": layer.params_bytes,
        "scratch_bytes": layer.scratch_bytes, "persistent_ram_bytes": layer.persistent_ram_bytes,
        "macs": layer.macs, "predicted_loss": layer.predicted_loss,
        "predicted_accuracy": layer.predicted_accuracy, "loss_measured": layer.loss_measured,
        "latency_ms": layer.latency_ms,
    }


def _totals_json(t: PlanTotals) -> dict[str, Any]:
    return {
        "predicted_flash_bytes": t.predicted_flash_bytes, "predicted_ram_bytes": t.predicted_ram_bytes,
        "predicted_accuracy": t.predicted_accuracy, "predicted_agreement": t.predicted_agreement,
        "predicted_loss": t.predicted_loss, "validation_loss": t.validation_loss,
        "reference_accuracy": t.reference_accuracy, "int8_accuracy": t.int8_accuracy,
        "predicted_drop": t.predicted_drop, "predicted_latency_ms": t.predicted_latency_ms,
        "meets_max_drop": t.meets_max_drop, "drop_metric": t.drop_metric, "flash": dict(t.flash),
    }


def _samples_json(s: SampleSet) -> dict[str, Any]:
    return {"source": s.source, "count": s.count, "indices": None if s.indices is None else list(s.indices)}


class _Reader:
    """Typed access to a plan document, with errors that name the key."""

    def __init__(self, doc: Any, where: str) -> None:
        if not isinstance(doc, dict):
            raise PlanError(f"{where} must be an object")
        self.doc = doc
        self.where = where

    def get(self, key: str, types: tuple[type, ...], optional: bool = False) -> Any:
        if key not in self.doc:
            if optional:
                return None
            raise PlanError(f"{self.where}: missing key {key!r}")
        v = self.doc[key]
        if v is None and optional:
            return None
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            names = " or ".join(t.__name__ for t in types)
            raise PlanError(f"{self.where}.{key} must be {names}, got {v!r}")
        return v

    def sub(self, key: str) -> _Reader:
        return _Reader(self.get(key, (dict,)), f"{self.where}.{key}")


_NUM = (int, float)


def _layer_from(r: _Reader) -> PlannedLayer:
    params = r.get("params", (dict,))
    for k, v in params.items():
        if not isinstance(v, (bool, int, float, str)):
            raise PlanError(f"{r.where}.params.{k} must be a number, a boolean or a string")
    setting = Setting.of(r.get("method", (str,)), **params)
    acc = r.get("predicted_accuracy", _NUM, optional=True)
    lat = r.get("latency_ms", _NUM, optional=True)
    return PlannedLayer(
        op_index=r.get("op_index", (int,)), name=r.get("name", (str,)), opcode=r.get("op", (str,)),
        setting=setting, kernel=r.get("kernel", (str,)), variant=r.get("variant", (str,)),
        flash_bytes=r.get("flash_bytes", (int,)), params_bytes=r.get("params_bytes", (int,)),
        scratch_bytes=r.get("scratch_bytes", (int,)),
        persistent_ram_bytes=r.get("persistent_ram_bytes", (int,)),
        macs=r.get("macs", (int,)), predicted_loss=float(r.get("predicted_loss", _NUM)),
        predicted_accuracy=None if acc is None else float(acc), loss_measured=r.get("loss_measured", (bool,)),
        latency_ms=None if lat is None else float(lat))


def _opt_float(r: _Reader, key: str) -> float | None:
    v = r.get(key, _NUM, optional=True)
    return None if v is None else float(v)


def _totals_from(r: _Reader) -> PlanTotals:
    meets = r.get("meets_max_drop", (bool,), optional=True)
    return PlanTotals(
        predicted_flash_bytes=r.get("predicted_flash_bytes", (int,)),
        predicted_ram_bytes=r.get("predicted_ram_bytes", (int,)),
        predicted_accuracy=_opt_float(r, "predicted_accuracy"),
        predicted_agreement=_opt_float(r, "predicted_agreement"),
        predicted_loss=float(r.get("predicted_loss", _NUM)),
        validation_loss=_opt_float(r, "validation_loss"),
        reference_accuracy=_opt_float(r, "reference_accuracy"),
        int8_accuracy=_opt_float(r, "int8_accuracy"),
        predicted_drop=_opt_float(r, "predicted_drop"),
        predicted_latency_ms=_opt_float(r, "predicted_latency_ms"),
        flash=dict(r.get("flash", (dict,), optional=True) or {}),
        meets_max_drop=meets, drop_metric=r.get("drop_metric", (str,), optional=True) or "accuracy")


def _samples_from(r: _Reader) -> SampleSet:
    idx = r.get("indices", (list,), optional=True)
    if idx is not None and not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
        raise PlanError(f"{r.where}.indices must be a list of integers")
    return SampleSet(r.get("source", (str,)), r.get("count", (int,)), None if idx is None else tuple(idx))


def plan_from_json(doc: Any, source: str = "<plan>") -> Plan:
    r = _Reader(doc, source)
    schema = r.get("schema", (str,))
    if schema != PLAN_SCHEMA:
        raise PlanError(f"{source}: schema {schema!r} is not {PLAN_SCHEMA!r}")
    m, b, d = r.sub("model"), r.sub("budgets"), r.sub("data")
    layers = r.get("layers", (list,))
    val = d.get("validation", (dict,), optional=True)
    return Plan(
        model=m.get("path", (str,)), model_sha256=m.get("sha256", (str,)),
        graph_hash=m.get("graph_hash", (str,)),
        float_model=m.get("float_model", (bool,)), board=r.get("board", (str,)),
        toolchain=r.get("toolchain", (str,)),
        budgets=PlanBudgets(b.get("flash_bytes", (int,), optional=True),
                            b.get("ram_bytes", (int,), optional=True),
                            _opt_float(b, "latency_ms"), _opt_float(b, "max_drop"),
                            b.get("flash_from", (str,)), b.get("ram_from", (str,))),
        layers=tuple(_layer_from(_Reader(x, f"{source}.layers[{k}]")) for k, x in enumerate(layers)),
        totals=_totals_from(r.sub("totals")),
        calibration=_samples_from(d.sub("calibration")),
        validation=None if val is None else _samples_from(_Reader(val, f"{source}.data.validation")),
        sensitivity=dict(r.get("sensitivity", (dict,), optional=True) or {}),
        solver=dict(r.get("solver", (dict,), optional=True) or {}),
    )


def spec_path(plan_path: str | Path) -> Path:
    """Where :func:`save_plan` writes the plan's spec: ``<stem>.spec.toml`` beside it."""
    p = Path(plan_path)
    return p.with_name(f"{p.stem}.spec.toml")


def save_plan(plan: Plan, path: str | Path) -> Path:
    """Write ``plan.json`` and its spec beside it; returns the spec's path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(plan.to_json(), indent=2) + "\n", encoding="utf-8")
    spec = spec_path(p)
    header = (f"# Written by boardfit plan from {p.name}: the compression spec of that plan\n"
              f"# (model {Path(plan.model).name}, board {plan.board}).\n")
    spec.write_text(header + plan.to_spec().to_toml(), encoding="utf-8")
    return spec


def load_plan(path: str | Path) -> Plan:
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"cannot read plan file {p}: {exc.strerror}") from exc
    except ValueError as exc:
        raise PlanError(f"plan file {p} is not JSON: {exc}") from exc
    return plan_from_json(doc, str(p))
