"""The ``--json`` documents of the CLI.  Their schemas are versioned and documented in docs/json.md.

Each builder turns typed report objects into plain JSON values; nothing else in boardfit
produces JSON for users, so a schema change is a change in this one file (and its version).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.boards import Board
    from toolkit.build import BoardBuild
    from toolkit.compress.pipeline import CompressReport
    from toolkit.model.summary import GraphSummary
    from toolkit.planner.fit import FitReport
    from toolkit.planner.pipeline import PlanOutcome
    from toolkit.planner.plan import SampleSet
    from toolkit.validate.report import DryRun, ValidateReport
    from toolkit.verify import TensorComparison, VerifyReport

INSPECT_SCHEMA = "boardfit.inspect/1"
VERIFY_SCHEMA = "boardfit.verify/1"
BOARDS_SCHEMA = "boardfit.boards/1"
COMPRESS_SCHEMA = "boardfit.compress/1"
BUILD_SCHEMA = "boardfit.build/1"
PLAN_SCHEMA = "boardfit.plan/1"
VALIDATE_SCHEMA = "boardfit.validate/1"
FIT_SCHEMA = "boardfit.fit/1"


def _spec(name: str, shape: Sequence[int], dtype: str) -> dict[str, Any]:
    return {"name": name, "shape": list(shape), "dtype": dtype}


def inspect_doc(s: GraphSummary, path: Path) -> dict[str, Any]:
    return {
        "schema": INSPECT_SCHEMA,
        "model": str(path),
        "inputs": [_spec(*x) for x in s.input_specs],
        "outputs": [_spec(*x) for x in s.output_specs],
        "layers": [
            {
                "index": layer.index,
                "op": layer.opcode,
                "name": layer.name,
                "input_shapes": [list(x) for x in layer.input_shapes],
                "output_shapes": [list(x) for x in layer.output_shapes],
                "dtype": layer.dtype,
                "parameters": layer.parameters,
                "macs": layer.macs,
                "weight_bytes": layer.weight_bytes,
                "activation_bytes": layer.activation_bytes,
                "supported": layer.supported,
            }
            for layer in s.layers
        ],
        "totals": {
            "layers": len(s.layers),
            "macs": s.total_macs,
            "parameters": s.total_parameters,
            "weight_bytes": s.total_weight_bytes,
            "largest_activation_bytes": s.largest_activation_bytes,
            "state_bytes": s.state_bytes,
        },
        "unsupported_ops": list(s.unsupported),
        "supported": not s.unsupported,
    }


def _comparison(c: TensorComparison) -> dict[str, Any]:
    return {
        "tensor": c.tensor,
        "name": c.name,
        "dtype": c.dtype,
        "elements": c.elements,
        "mismatched": c.mismatched,
        "max_abs_diff": c.max_abs_diff,
        "tolerance": c.tolerance,
        "bit_exact": c.bit_exact,
        "ok": c.ok,
    }


def verify_doc(r: VerifyReport, path: Path) -> dict[str, Any]:
    div = r.first_divergence
    return {
        "schema": VERIFY_SCHEMA,
        "model": str(path),
        "backend": r.backend,
        "samples": r.samples,
        "inputs": r.input_source,
        "outputs": [_comparison(c) for c in r.outputs],
        "layers_compared": r.layers_compared,
        "first_divergence": None
        if div is None
        else {"op_index": div.op_index, "op": div.opcode, **_comparison(div.comparison)},
        "ok": r.ok,
    }


def boards_doc(boards: Sequence[Board]) -> dict[str, Any]:
    return {"schema": BOARDS_SCHEMA, "boards": [b.to_json() for b in boards]}


def build_doc(
    b: BoardBuild, path: Path, out_dir: Path, files: Sequence[str], model_hash: str
) -> dict[str, Any]:
    return {
        "schema": BUILD_SCHEMA,
        "model": str(path),
        "model_hash": model_hash,
        "board": b.target,
        "out_dir": str(out_dir),
        "files": list(files),
        **b.to_json(),
    }


def compress_doc(r: CompressReport, out_dir: Path) -> dict[str, Any]:
    """The compressed-model record: also written to OUT/compressed.json."""
    return {
        "schema": COMPRESS_SCHEMA,
        "model": r.model,
        "float_model": r.float_model,
        "out_dir": str(out_dir),
        "calibration": r.calibration,
        "test": r.test,
        "test_samples": r.test_samples,
        "layers": [
            {
                "op_index": layer.op_index,
                "name": layer.name,
                "op": layer.opcode,
                "method": layer.setting.method,
                "setting": dict(layer.setting.params),
                "label": layer.setting.label,
                "kernel": layer.kernel,
                "bytes_before": layer.bytes_before,
                "bytes_after": layer.bytes_after,
                "exportable": layer.exportable,
            }
            for layer in r.layers
        ],
        "totals": {
            "layers": len(r.layers),
            "bytes_before": r.bytes_before,
            "bytes_after": r.bytes_after,
            "ratio": r.bytes_before / r.bytes_after if r.bytes_after else None,
        },
        "accuracy": {
            "float": r.accuracy_float,
            "int8": r.accuracy_int8,
            "compressed": r.accuracy_compressed,
            "exported": r.accuracy_exported,
        },
        "export": None if r.export_path is None else {
            "path": r.export_path,
            "exact": not r.not_exportable,
            "not_exportable": list(r.not_exportable),
            "identical_outputs": r.export_identical_outputs,
        },
    }


def validate_doc(r: ValidateReport) -> dict[str, Any]:
    """``boardfit validate --json``: built by toolkit/validate/report.py, next to the report type."""
    from toolkit.validate.report import report_doc

    doc = report_doc(r)
    assert doc["schema"] == VALIDATE_SCHEMA
    return doc


def validate_dry_run_doc(d: DryRun) -> dict[str, Any]:
    from toolkit.validate.report import dry_run_doc

    return dry_run_doc(d)


def plan_doc(o: PlanOutcome, plan_path: Path, spec_path: Path, plots: Sequence[Path]) -> dict[str, Any]:
    """``boardfit plan --json``: the plan file's document plus the headline figures, the files
    written and the plans explored (keys only added to the plan file's ``boardfit.plan/1``)."""
    doc = o.plan.to_json()
    t = doc["totals"]
    return {
        **doc,
        "predicted_flash_bytes": t["predicted_flash_bytes"],
        "predicted_ram_bytes": t["predicted_ram_bytes"],
        "predicted_accuracy": t["predicted_accuracy"],
        "predicted_latency_ms": t["predicted_latency_ms"],
        "plan_file": str(plan_path),
        "spec_file": str(spec_path),
        "plots": [str(p) for p in plots],
        "explored": [
            {"kind": e.kind, "label": e.label, "flash_bytes": e.flash_bytes, "ram_bytes": e.ram_bytes,
             "fits": e.fits, "accuracy": e.metrics.accuracy, "agreement": e.metrics.agreement,
             "loss": e.metrics.loss, "predicted_loss": e.predicted_loss,
             "layers": {str(i): s.label for i, s in sorted(e.settings.items())}}
            for e in o.explored
        ],
    }


def _sample_set(s: SampleSet | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"source": s.source, "count": s.count, "indices": None if s.indices is None else list(s.indices)}


def fit_doc(r: FitReport) -> dict[str, Any]:
    """``boardfit fit --json`` (also ``OUT/fit.json``): the plan's predictions beside the device's
    measurements, the checks, and which samples were used for what."""
    from toolkit.validate.report import UNIT_NOTES

    plan, tot, c = r.plan, r.plan.totals, r.counts
    pred_metric, meas_metric = r.metric_points()
    names = {layer.op_index: layer for layer in plan.layers}
    return {
        "schema": FIT_SCHEMA,
        "model": r.model,
        "board": r.board,
        "runner": r.runner,
        "emulated": r.emulated,
        "samples": r.samples,
        "data": {"calibration": _sample_set(plan.calibration), "validation": _sample_set(plan.validation),
                 "streamed": _sample_set(r.streamed)},
        "budgets": {"flash_bytes": r.flash_budget, "ram_bytes": r.ram_budget,
                    "latency_ms": plan.budgets.latency_ms, "max_drop": plan.budgets.max_drop},
        "predicted_flash_bytes": r.predicted_flash_bytes,
        "predicted_ram_bytes": r.predicted_ram_bytes,
        "predicted_accuracy": r.predicted_accuracy,
        "predicted_latency_ms": r.predicted_latency_ms,
        "measured_flash_bytes": r.measured_flash_bytes,
        "measured_ram_bytes": r.measured_ram_bytes,
        "measured_accuracy": r.measured_accuracy,
        "measured_latency_ms": r.measured_latency_ms,
        "metric": r.metric,
        "predicted_metric": pred_metric,
        "measured_metric": meas_metric,
        "predicted_agreement": tot.predicted_agreement,
        "measured_agreement": r.measured_agreement,
        "predicted_output_loss": tot.validation_loss,
        "measured_output_loss": r.measured_loss,
        "simulated_accuracy": r.simulated_accuracy,
        "reference_accuracy": tot.reference_accuracy,
        "float_model": plan.float_model,
        "latency": {
            "counts_unit": None if c is None else c.unit,
            "counts_note": "" if c is None else UNIT_NOTES.get(c.unit, ""),
            "counts_per_inference": None if c is None else c.mean,
            "counts_min": None if c is None else c.minimum,
            "counts_max": None if c is None else c.maximum,
            "clock_hz": None if c is None else c.clock_hz,
        },
        "agreement": {"inferences": r.agreement.inferences, "bit_exact": r.agreement.bit_exact,
                      "fraction": r.agreement.fraction,
                      "mismatched_elements": r.agreement.mismatched_elements,
                      "max_abs_error": r.agreement.max_abs_error},
        "sizes": {
            "predicted": r.predicted.to_json(),
            "measured": None if r.measured is None else {**r.measured.to_json(), "from": r.measured_from},
            "image": {"flash_bytes": r.image_flash_bytes, "ram_bytes": r.image_ram_bytes},
        },
        "layers": [
            {"op_index": x.op_index, "name": names[x.op_index].name, "label": names[x.op_index].setting.label,
             "kernel": names[x.op_index].kernel, "flash_bytes": names[x.op_index].flash_bytes,
             "predicted_latency_ms": x.predicted_ms, "measured_latency_ms": x.measured_ms}
            for x in r.layers
        ],
        "checks": r.checks(),
        "fits": r.fits,
        "ok": r.ok,
        "plan_file": str(r.plan_file),
        "spec_file": str(r.spec_file),
        "plots": [str(p) for p in r.plots],
        "firmware": str(r.firmware),
        "toolchain": r.toolchain,
        "device": None if r.device is None else {
            "model_hash": r.device.model_hash, "plan_hash": r.device.plan_hash,
            "arena_bytes": r.device.arena_bytes, "retransmissions": r.device.retransmissions,
            "resyncs": r.device.resyncs},
    }
