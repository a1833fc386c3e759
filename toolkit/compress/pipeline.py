"""``boardfit compress``: apply a spec to a model, measure it, write the result.

:func:`compress_model` reads a model (float models are first quantized with
:func:`~toolkit.compress.ptq.quantize_graph` on the calibration data), compresses it with
:func:`~toolkit.compress.model.compress_graph`, measures accuracy on the held-out data — float
(float models), original int8, compressed (host simulation) and, with ``export_tflite``, the
exported .tflite through the TFLite interpreter — and writes ``OUT/``:

* ``spec.toml`` — the resolved spec: one ``[layers.<op index>]`` table per compressible layer;
* ``compressed.json`` — the compressed-model record (the ``boardfit.compress/1`` document of
  docs/json.md: per layer method, setting, exact bytes before/after, kernel; totals; accuracies);
* ``model.tflite`` (``export_tflite``) — every layer's weights decoded back to int8 with
  per-channel scales, for the methods expressible that way.

Data: ``--data`` is split into calibration and test halves (seeded, see
:func:`toolkit.datasets.split_calibration`) unless ``--calib`` is given, in which case all of
``--data`` is test data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.compress.base import LayerRef, Setting
from toolkit.compress.model import CompressedModel, compress_graph, run_samples
from toolkit.compress.registry import get_method
from toolkit.compress.spec import CompressionSpec, load_spec
from toolkit.datasets import Dataset, load_dataset, prepare_inputs, split_calibration
from toolkit.errors import CompressionError, DataError
from toolkit.model.ir import DType, Graph

log = logging.getLogger(__name__)

CALIB_FRACTION = 0.5
SPLIT_SEED = 0


@dataclass(frozen=True)
class LayerReport:
    op_index: int
    name: str
    opcode: str
    setting: Setting
    kernel: str
    bytes_before: int  # the dense int8 layer (method int8) as the code generator emits it
    bytes_after: int
    exportable: bool


@dataclass(frozen=True)
class CompressReport:
    model: str
    float_model: bool
    layers: tuple[LayerReport, ...]
    calibration: str  # where calibration data came from ("" without)
    test: str  # where test data came from ("" without)
    test_samples: int
    accuracy_float: float | None
    accuracy_int8: float | None
    accuracy_compressed: float | None
    accuracy_exported: float | None
    export_path: str | None
    not_exportable: tuple[str, ...]
    export_identical_outputs: float | None  # fraction of test samples whose outputs are identical

    @property
    def bytes_before(self) -> int:
        return sum(layer.bytes_before for layer in self.layers)

    @property
    def bytes_after(self) -> int:
        return sum(layer.bytes_after for layer in self.layers)


# ---------------------------------------------------------------------------------------------
# Data.


@dataclass(frozen=True, eq=False)
class _Data:
    calib: Dataset | None
    test: Dataset | None


def _load(spec: str) -> Dataset:
    # Built-in sets: take the named split or, without a suffix, the test split (load_dataset's
    # default); .npz files whole.  Real-valued; fitted to each graph later.
    return load_dataset(spec)


def split_data(data: str | None, calib: str | None) -> _Data:
    if calib is not None:
        return _Data(_load(calib), _load(data) if data is not None else None)
    if data is None:
        return _Data(None, None)
    c, t = split_calibration(_load(data), CALIB_FRACTION, SPLIT_SEED)
    return _Data(c, t)


def _inputs(ds: Dataset, graph: Graph) -> np.ndarray:
    if len(graph.inputs) != 1:
        raise DataError(f"--data feeds one input; {graph.name} has {len(graph.inputs)}")
    return prepare_inputs(np.asarray(ds.x), graph, ds.name)


def accuracy(outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy of the first output's argmax (per sample), or None without labels."""
    if labels is None:
        return None
    scores = np.asarray(outputs).reshape(len(labels), -1)
    return float(np.mean(scores.argmax(axis=1) == np.asarray(labels)))


# ---------------------------------------------------------------------------------------------
# The command.


def is_float_graph(graph: Graph) -> bool:
    return any(graph.tensors[i].dtype is DType.FLOAT32 for i in graph.inputs)


def prepare_graph(graph: Graph, calib: Dataset | None) -> tuple[Graph, Graph | None]:
    """(int8 graph, float graph or None): float models are quantized on the calibration data."""
    if not is_float_graph(graph):
        return graph, None
    if calib is None:
        raise CompressionError(
            f"{graph.name} is a float model: post-training quantization needs calibration data "
            "(--data or --calib)")
    from toolkit.compress.ptq import quantize_graph

    return quantize_graph(graph, _inputs(calib, graph)), graph


def compress_model(model: Path, spec_path: Path, out_dir: Path, data: str | None = None,
                   calib: str | None = None, export_tflite: bool = False) -> CompressReport:
    from toolkit.model.tflite import read_tflite

    spec = load_spec(spec_path)
    raw_graph = dataclasses.replace(read_tflite(model), name=Path(model).stem)
    ds = split_data(data, calib)
    graph, float_graph = prepare_graph(raw_graph, ds.calib)
    calib_x = _inputs(ds.calib, graph) if ds.calib is not None else None
    cm = compress_graph(graph, spec, calib_x, float_graph=float_graph)
    out_dir.mkdir(parents=True, exist_ok=True)
    export = _export(cm, out_dir) if export_tflite else None
    report = _report(model, cm, ds, export)
    write_outputs(out_dir, cm, report)
    return report


def _export(cm: CompressedModel, out_dir: Path) -> tuple[Path, list[str]]:
    from toolkit.model.tflite_writer import write_tflite

    graph, problems = cm.export_graph()
    path = out_dir / "model.tflite"
    path.write_bytes(write_tflite(graph))
    return path, problems


def _interpret(path: Path, graph: Graph, x: np.ndarray) -> np.ndarray:
    from toolkit.interp import ReferenceInterpreter

    interp = ReferenceInterpreter(path)
    outs = []
    for sample in x:
        if graph.variables:
            interp.reset_variables()
        outs.append(interp.run([sample.reshape(graph.input_tensors[0].shape)])[0])
    return np.stack(outs)


def _layer_reports(cm: CompressedModel) -> tuple[LayerReport, ...]:
    int8 = get_method("int8")
    rows = []
    for i, layer in sorted(cm.layers.items()):
        op = cm.graph.ops[i]
        before = int8.option(LayerRef(cm.graph, op), Setting.of("int8")).flash_bytes
        rows.append(LayerReport(i, op.label, op.opcode, layer.option.setting, layer.option.kernel, before,
                                layer.option.flash_bytes, layer.export_weights is not None))
    return tuple(rows)


def _report(model: Path, cm: CompressedModel, ds: _Data,
            export: tuple[Path, list[str]] | None) -> CompressReport:
    acc: dict[str, float | None] = {"float": None, "int8": None, "compressed": None, "exported": None}
    identical: float | None = None
    test = ds.test
    if test is not None:
        x = _inputs(test, cm.graph)
        simulated = cm.predict(x)[0]
        acc["compressed"] = accuracy(simulated, test.y)
        acc["int8"] = accuracy(run_samples(cm.graph, x)[0], test.y)
        if cm.float_graph is not None:
            acc["float"] = accuracy(run_samples(cm.float_graph, _inputs(test, cm.float_graph))[0], test.y)
        if export is not None:
            exported = _interpret(export[0], cm.graph, x)
            acc["exported"] = accuracy(exported, test.y)
            same = np.all(exported.reshape(len(x), -1) == simulated.reshape(len(x), -1), axis=1)
            identical = float(np.mean(same))
    return CompressReport(
        model=str(model), float_model=cm.float_graph is not None, layers=_layer_reports(cm),
        calibration=ds.calib.name if ds.calib is not None else "",
        test=test.name if test is not None else "", test_samples=len(test) if test is not None else 0,
        accuracy_float=acc["float"], accuracy_int8=acc["int8"], accuracy_compressed=acc["compressed"],
        accuracy_exported=acc["exported"], export_path=str(export[0]) if export else None,
        not_exportable=tuple(export[1]) if export else (), export_identical_outputs=identical)


def resolved_spec(cm: CompressedModel) -> CompressionSpec:
    """Every compressible layer named by op index with its setting."""
    return CompressionSpec(None, {str(i): s for i, s in sorted(cm.settings.items())}, "resolved")


def write_outputs(out_dir: Path, cm: CompressedModel, report: CompressReport) -> None:
    from toolkit.jsonout import compress_doc

    (out_dir / "spec.toml").write_text(resolved_spec(cm).to_toml(), encoding="utf-8")
    doc = compress_doc(report, out_dir)
    (out_dir / "compressed.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def setting_json(s: Setting) -> dict[str, Any]:
    return {"method": s.method, "params": dict(s.params)}
