"""Every compression method at several settings on one model: bytes, ratios and test accuracy.

    python bench/compression.py --model examples/models/digits_mlp_int8.tflite --data digits
    python bench/compression.py --model M --data D [--calib C] [--float F] [--methods quant,kmeans] [--json]

Methods come from the registry (``toolkit.compress.registry.all_methods``), so every method
module registered there appears without changes here.  For each method, each of the settings it
offers for the model's first applicable layer is applied *uniformly* — to every layer the method
can compress (the others stay int8) — post-training, with sequential calibration.  Methods with
a ``recover`` parameter are run twice, with and without accuracy recovery.

Definitions (printed with the table):

* ``bytes``: exact flash bytes of the compressed layers' constants — packed weights, index
  streams, codebooks, bias and requantization tables — as the code generator lays them out
  (``Option.flash_bytes``), summed over all conv / depthwise / dense layers (those the setting
  does not suit stay int8 and count as such; ``layers`` says how many were compressed).
* ``ratio_vs_float`` = float32 weight bytes / ``bytes``; float32 weight bytes are the bytes
  those layers' weights and biases occupy in a float32 .tflite (4 bytes per element).
* ``ratio_vs_int8`` = int8 weight bytes / ``bytes``; int8 weight bytes are the bytes those
  layers' weights (1 byte) and int32 biases (4 bytes) occupy in the int8 .tflite.
* ``accuracy``: top-1 on the test part of ``--data`` (host simulation, bit-exact with the
  device kernels), with recovery where the method has it; ``accuracy_without_recovery`` the same
  with ``recover = false`` (null when the method has no such parameter); ``float_accuracy``: the
  float model's (``--float``, the float model itself, or ``<name>_float.tflite`` next to an
  ``<name>_int8.tflite``), else null.

``--data`` is split into calibration and test halves (seed 0) unless ``--calib`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.compress.base import COMPRESSIBLE_OPS, LayerRef, Setting
from toolkit.compress.model import compress_graph, compressible_ops, run_samples
from toolkit.compress.pipeline import accuracy, prepare_graph, split_data
from toolkit.compress.registry import all_methods
from toolkit.datasets import Dataset, prepare_inputs
from toolkit.errors import BoardfitError
from toolkit.model.ir import Graph
from toolkit.model.tflite import read_tflite

DEFINITIONS = (
    "bytes: exact flash bytes of the conv/depthwise/dense layers' constants (weights, tables, bias, "
    "requantization); ratio_vs_float: their float32 .tflite weight+bias bytes / bytes; ratio_vs_int8: "
    "their int8 .tflite weight + int32 bias bytes / bytes; accuracy: top-1 on the test split "
    "(host simulation), with recovery; accuracy_without_recovery: recover=false"
)


@dataclass(frozen=True)
class Row:
    method: str
    setting: str
    layers: int
    bytes: int
    ratio_vs_float: float
    ratio_vs_int8: float
    accuracy: float | None
    accuracy_without_recovery: float | None
    float_accuracy: float | None
    seconds: float
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def weight_bytes(graph: Graph) -> tuple[int, int]:
    """(float32 bytes, int8 bytes) of the compressible layers' weights and biases."""
    fb = ib = 0
    for op in compressible_ops(graph):
        w = graph.tensors[op.inputs[1]].num_elements
        b = graph.tensors[op.inputs[2]].num_elements if len(op.inputs) > 2 and op.inputs[2] >= 0 else 0
        fb += 4 * (w + b)
        ib += w + 4 * b
    return fb, ib


def _float_graph(model: Path, given: str | None, graph: Graph) -> Graph | None:
    if given:
        return read_tflite(given)
    if any(graph.tensors[i].dtype.value == "float32" for i in graph.inputs):
        return graph
    sibling = model.with_name(model.name.replace("_int8", "_float"))
    return read_tflite(sibling) if sibling != model and sibling.exists() else None


def _supports_recover(method: Any, layer: LayerRef, setting: Setting) -> bool:
    try:
        method.option(layer, Setting.of(setting.method, **{**dict(setting.params), "recover": False}))
    except (ValueError, BoardfitError):
        return False
    return True


def _valid(method: Any, layer: LayerRef, setting: Setting) -> bool:
    try:
        method.option(layer, setting)
    except (ValueError, BoardfitError):
        return False
    return True


def _run(graph: Graph, settings: dict[int, Setting], calib_x: np.ndarray, test_x: np.ndarray,
         labels: np.ndarray | None, float_graph: Graph | None) -> tuple[int, float | None]:
    cm = compress_graph(graph, settings, calib_x, float_graph=float_graph)
    return cm.flash_bytes, accuracy(cm.predict(test_x)[0], labels)


def bench(model: Path, data: str, calib: str | None, float_path: str | None,
          only: list[str] | None) -> tuple[list[Row], dict[str, Any]]:
    raw = read_tflite(model)
    ds = split_data(data, calib)
    assert ds.calib is not None and ds.test is not None
    graph, ptq_float = prepare_graph(raw, ds.calib)
    float_graph = ptq_float or _float_graph(model, float_path, raw)
    if float_graph is not None and len(compressible_ops(float_graph)) != len(compressible_ops(graph)):
        float_graph = None
    calib_x, test_x = _x(ds.calib, graph), _x(ds.test, graph)
    labels = ds.test.y
    float_acc = (accuracy(run_samples(float_graph, _x(ds.test, float_graph))[0], labels)
                 if float_graph is not None else None)
    fbytes, ibytes = weight_bytes(graph)
    rows: list[Row] = []
    for name, method in sorted(all_methods().items()):
        if only and name not in only:
            continue
        layers = [LayerRef(graph, op) for op in graph.ops if op.opcode in COMPRESSIBLE_OPS]
        usable = [lay for lay in layers if method.applicable(lay)]
        if not usable:
            continue
        # Each setting goes to the layers whose own grid offers it: the layers the method suits
        # (binarization skips a 1-channel first conv; ranks differ per layer).
        offered = {lay.op.index: method.settings(lay) for lay in usable}
        for setting in dict.fromkeys(s for grid in offered.values() for s in grid):
            suited = [lay for lay in usable if setting in offered[lay.op.index]]
            rows.append(_row(graph, method, setting, suited, calib_x, test_x, labels, float_graph,
                             float_acc, fbytes, ibytes))
    meta = {"model": str(model), "data": data, "calibration": ds.calib.name, "test": ds.test.name,
            "test_samples": len(ds.test), "float32_weight_bytes": fbytes, "int8_weight_bytes": ibytes,
            "float_accuracy": float_acc, "definitions": DEFINITIONS}
    return rows, meta


def _x(ds: Dataset, graph: Graph) -> np.ndarray:
    return prepare_inputs(np.asarray(ds.x), graph, ds.name)


def _row(graph: Graph, method: Any, setting: Setting, usable: list[LayerRef], calib_x: np.ndarray,
         test_x: np.ndarray, labels: np.ndarray | None, float_graph: Graph | None, float_acc: float | None,
         fbytes: int, ibytes: int) -> Row:
    t0 = time.perf_counter()
    # A setting one layer offers may not suit another (e.g. a rank above its size): those stay int8.
    usable = [lay for lay in usable if _valid(method, lay, setting)]
    settings = {lay.op.index: setting for lay in usable}
    try:
        nbytes, acc = _run(graph, settings, calib_x, test_x, labels, float_graph)
        acc_plain = None
        if _supports_recover(method, usable[0], setting) and setting.get("recover", True):
            off = Setting.of(setting.method, **{**dict(setting.params), "recover": False})
            _, acc_plain = _run(graph, dict.fromkeys(settings, off), calib_x, test_x, labels, float_graph)
    except (BoardfitError, ValueError) as exc:
        return Row(method.name, setting.label, len(usable), 0, 0.0, 0.0, None, None, float_acc,
                   time.perf_counter() - t0, error=str(exc))
    return Row(method.name, setting.label, len(usable), nbytes, fbytes / nbytes, ibytes / nbytes, acc,
               acc_plain, float_acc, time.perf_counter() - t0)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:6.2f}"


def print_table(rows: list[Row], meta: dict[str, Any]) -> None:
    print(f"{meta['model']}: test {meta['test']} ({meta['test_samples']} samples), calibration "
          f"{meta['calibration']}")
    print(f"float32 weight bytes {meta['float32_weight_bytes']:,}, int8 weight bytes "
          f"{meta['int8_weight_bytes']:,}, float accuracy {_pct(meta['float_accuracy'])}")
    print(DEFINITIONS)
    head = f"{'method':8} {'setting':44} {'bytes':>8} {'vs f32':>7} {'vs int8':>7} {'acc %':>7} " \
           f"{'no rec.':>7} {'s':>5}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if r.error:
            print(f"{r.method:8} {r.setting:44} error: {r.error}")
            continue
        print(f"{r.method:8} {r.setting:44} {r.bytes:8,} {r.ratio_vs_float:6.1f}× {r.ratio_vs_int8:6.2f}× "
              f"{_pct(r.accuracy):>7} {_pct(r.accuracy_without_recovery):>7} {r.seconds:5.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--data", required=True, help="digits[:split] or an .npz with x (and y)")
    ap.add_argument("--calib", help="calibration data (then all of --data is test data)")
    ap.add_argument("--float", dest="float_model", help="the float model, for float_accuracy")
    ap.add_argument("--methods", help="comma-separated method names (default: every registered method)")
    ap.add_argument("--json", action="store_true", help="print one JSON object per row")
    args = ap.parse_args(argv)
    only = args.methods.split(",") if args.methods else None
    rows, meta = bench(args.model, args.data, args.calib, args.float_model, only)
    if args.json:
        print(json.dumps({"meta": meta, "rows": [r.to_json() for r in rows]}, indent=2))
    else:
        print_table(rows, meta)
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
