"""Train and convert boardfit's example models (float32 and full-integer int8 .tflite).

Needs the ``train`` extra (TensorFlow, scikit-learn, ai-edge-litert); the tests never run
this script, they only read what it wrote.  From the repository root::

    python -m venv /opt/tfvenv
    /opt/tfvenv/bin/pip install tensorflow-cpu scikit-learn ai-edge-litert   # the train extra
    taskset -c 0 /opt/tfvenv/bin/python examples/train.py            # all models, ~2 min on one core
    /opt/tfvenv/bin/python examples/train.py --only digits_cnn       # one model, other entries kept

Writes ``<out>/<name>_float.tflite`` and ``<out>/<name>_int8.tflite`` for every model, and
``<out>/models.json`` plus ``<out>/README.md`` describing them (shapes, parameters, MACs, operator
counts, file sizes and hashes, accuracies measured with the TFLite interpreter's reference
kernels, the training data and the TensorFlow version).

Reproducibility: every model is built and trained after ``keras.utils.set_random_seed(seed)``
with TensorFlow's deterministic ops and one thread, so the same TensorFlow version on the same
data gives the same weights and the same .tflite bytes (models.json records the versions).
The int8 models are full-integer: int8 input and output, weights and activations quantized
post-training with the calibration split (digits) or calibration samples (synthetic data).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # toolkit, when run from anywhere; this directory is already on the path

from model_defs import ARCHITECTURES, StreamSpec  # noqa: E402

from toolkit.datasets import load_dataset, quantize_like_tflite  # noqa: E402

SCHEMA_VERSION = 1
# Models whose float file is committed; the others' float files are written but git-ignored
# (the MLPerf Tiny float models would add ~1.4 MB for nothing the int8 ones do not show).
COMMIT_FLOAT = ("digits_mlp", "digits_cnn", "digits_stream")
# How the streaming model is scored: reset its state, feed the same image this many times and
# classify the last output (the EMA state is then (1 - 0.5**3) = 0.875 of the image).
STREAM_FRAMES = 3


@dataclass(frozen=True)
class Data:
    """Training, calibration and evaluation arrays; ``test_y`` is None when accuracy is meaningless."""

    train_x: np.ndarray
    train_y: np.ndarray
    calib_x: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray | None
    description: str
    calibration: str
    evaluation: str


def digits_data(flatten: bool) -> Data:
    train, calib, test = (load_dataset(f"digits:{s}") for s in ("train", "calib", "test"))
    shape = (-1, 64) if flatten else (-1, 8, 8, 1)
    assert train.y is not None and test.y is not None
    return Data(
        train_x=train.x.reshape(shape),
        train_y=train.y,
        calib_x=calib.x.reshape(shape),
        test_x=test.x.reshape(shape),
        test_y=test.y,
        description=f"scikit-learn digits, built-in split digits:train ({len(train)} samples), x = pixels/16",
        calibration=f"digits:calib ({len(calib)} samples)",
        evaluation=f"digits:test ({len(test)} samples)",
    )


def synthetic_data(input_shape: tuple[int, ...], classes: int | None, seed: int, kind: str) -> Data:
    """Random inputs in a plausible range for the real task and random labels: only the
    architecture, its size and its speed matter for these models, not what they learn."""
    rng = np.random.default_rng(seed)
    n_train, n_calib, n_test = 256, 64, 64

    def draw(n: int) -> np.ndarray:
        if kind == "image":  # images scaled to [0, 1] as in the reference pipelines
            return rng.random((n, *input_shape), dtype=np.float32)
        return rng.normal(0.0, 1.0, (n, *input_shape)).astype(np.float32)

    train_x = draw(n_train)
    # An autoencoder reconstructs its input; a classifier gets random labels.
    train_y = train_x.reshape(n_train, -1) if classes is None else rng.integers(0, classes, n_train)
    return Data(
        train_x=train_x,
        train_y=train_y,
        calib_x=draw(n_calib),
        test_x=draw(n_test),
        test_y=None,
        description=(
            f"SYNTHETIC: {n_train} random {'uniform [0,1)' if kind == 'image' else 'N(0,1)'} inputs"
            + ("" if classes is None else " with random labels")
            + "; accuracy is meaningless"
        ),
        calibration=f"{n_calib} synthetic samples from the same distribution",
        evaluation="none (synthetic data)",
    )


# ---------------------------------------------------------------------------------------------
# Conversion and evaluation


def convert(model: Any, calib_x: np.ndarray, int8: bool, stream: StreamSpec | None) -> bytes:
    import tensorflow as tf

    if stream is not None:
        fn = stream.module.__call__.get_concrete_function()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], stream.module)
        converter.experimental_enable_resource_variables = True
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:

        def representative() -> Iterator[list[np.ndarray]]:
            for i in range(len(calib_x)):
                yield [calib_x[i : i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        if stream is not None:
            converter._experimental_variable_quantization = True  # int8 state, not float
    return bytes(converter.convert())


def interpreter(content: bytes) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=content,
        num_threads=1,
        experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
    )
    interp.allocate_tensors()
    return interp


def op_counts(content: bytes) -> dict[str, int]:
    """Operators of subgraph 0 (and the init subgraph of streaming models) by count, in order of
    first appearance, as the interpreter lists them."""
    counts: dict[str, int] = {}
    for op in interpreter(content)._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts


def model_inputs(interp: Any, x: np.ndarray) -> np.ndarray:
    """``x`` (real values) as the model's input dtype, quantized exactly like TFLite does."""
    det = interp.get_input_details()[0]
    if det["dtype"] == np.float32:
        return x.astype(np.float32)
    scale, zero_point = det["quantization"]
    return quantize_like_tflite(x, scale, zero_point, np.dtype(det["dtype"]))


def accuracy(content: bytes, x: np.ndarray, y: np.ndarray, frames: int) -> float:
    """Top-1 accuracy with the reference kernels, one sample per invoke.  A streaming model
    (``frames`` > 1) is reset before each sample and sees it ``frames`` times."""
    interp = interpreter(content)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    xs = model_inputs(interp, x)
    correct = 0
    for i in range(len(xs)):
        if frames > 1:
            # reset_all_variables() leaves resource variables alone (ai-edge-litert 2.3): a
            # fresh interpreter is the only way back to the initial state.
            interp = interpreter(content)
        for _ in range(frames):
            interp.set_tensor(inp["index"], xs[i : i + 1].reshape(inp["shape"]))
            interp.invoke()
        correct += int(np.argmax(interp.get_tensor(out["index"])[0]) == y[i])
    return correct / len(xs)


# ---------------------------------------------------------------------------------------------
# Bookkeeping


def count_macs(model: Any) -> int:
    """Multiply-accumulates of the conv, depthwise and dense layers (pooling, adds, BN ignored)."""
    macs = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense"):
            continue
        kernel = tuple(int(d) for d in layer.kernel.shape)
        out_positions = int(np.prod([int(d) for d in layer.output.shape[1:-1]] or [1]))
        macs += out_positions * int(np.prod(kernel))
    return macs


def file_entry(path: Path, content: bytes, committed: bool, acc: float | None) -> dict[str, Any]:
    return {
        "file": path.name,
        "bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "committed": committed,
        "ops": op_counts(content),
        "test_accuracy": acc,
    }


def versions() -> dict[str, str]:
    import ai_edge_litert
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown"),
        "python": sys.version.split()[0],
    }


def train_one(name: str, out: Path, seed: int) -> dict[str, Any]:
    import keras

    arch = ARCHITECTURES[name]
    # A fresh session resets Keras' layer-name counters: the names end up in the .tflite, and
    # `--only NAME` must write the same bytes as a full run.
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    if arch.synthetic is None:
        data = digits_data(flatten=arch.flat_input)
    else:
        data = synthetic_data(arch.input_shape, arch.classes, seed, arch.synthetic)
    trained = arch.train(data.train_x, data.train_y)
    model, stream = trained.model, trained.stream
    frames = STREAM_FRAMES if stream is not None else 1
    entry: dict[str, Any] = {
        "name": name,
        "description": arch.description,
        "reference": arch.reference,
        "input_shape": [1, *arch.input_shape],
        "output_shape": [1, int(model.output.shape[-1])],
        "params": int(model.count_params()),
        "macs": count_macs(model),
        "training": f"{data.description}; {trained.recipe}",
        "calibration": data.calibration,
        "evaluation": data.evaluation
        + (
            f"; streaming: reset, feed each image {frames}× and classify the last output"
            if frames > 1
            else ""
        ),
        "accuracy_meaningful": data.test_y is not None,
        "frames_per_sample": frames,
        "files": {},
    }
    for kind, int8 in (("float", False), ("int8", True)):
        content = convert(model, data.calib_x, int8, stream)
        path = out / f"{name}_{kind}.tflite"
        path.write_bytes(content)
        acc = None if data.test_y is None else accuracy(content, data.test_x, data.test_y, frames)
        committed = int8 or name in COMMIT_FLOAT
        entry["files"][kind] = file_entry(path, content, committed, acc)
        print(f"  {path.name}: {len(content)} bytes, test accuracy {acc}", flush=True)
    return entry


# ---------------------------------------------------------------------------------------------
# Reports


def fmt_acc(f: dict[str, Any]) -> str:
    return "—" if f["test_accuracy"] is None else f"{100 * f['test_accuracy']:.2f} %"


def render_readme(meta: dict[str, Any]) -> str:
    v = meta["versions"]
    rows = []
    for m in meta["models"]:
        fl, q = m["files"]["float"], m["files"]["int8"]
        shape_in = "×".join(str(d) for d in m["input_shape"][1:])
        ops = ", ".join(f"{op}×{n}" if n > 1 else op for op, n in q["ops"].items())
        rows.append(
            f"| `{m['name']}` | {shape_in} → {m['output_shape'][-1]} | {m['params']:,} | {m['macs']:,} "
            f"| {q['bytes']:,} | {fl['bytes']:,}{'' if fl['committed'] else ' (not committed)'} "
            f"| {fmt_acc(fl)} | {fmt_acc(q)} | {ops} |"
        )
    details = "\n".join(
        f"- **`{m['name']}`** — {m['description']} Reference: {m['reference']}. "
        f"Training: {m['training']}. Calibration: {m['calibration']}. Evaluation: {m['evaluation']}."
        for m in meta["models"]
    )
    return README_TEMPLATE.format(
        table="\n".join(rows),
        details=details,
        tf=v["tensorflow"],
        keras=v["keras"],
        litert=v["ai_edge_litert"],
        seed=meta["seed"],
    )


README_TEMPLATE = """\
# Example models

Written by `examples/train.py` (do not edit by hand: re-run the script, it rewrites this file and
`models.json`).  TensorFlow {tf}, Keras {keras}, seed {seed}; accuracies measured with the TFLite
interpreter (ai-edge-litert {litert}, reference kernels `OpResolverType.BUILTIN_REF`), one sample
per invoke, int8 inputs quantized from the real values exactly as TFLite's QUANTIZE does.

| model | input → outputs | params | MACs | int8 bytes | float bytes | float acc. | int8 acc. | int8 ops |
|---|---|---:|---:|---:|---:|---:|---:|---|
{table}

Every int8 model is full-integer: int8 input and output tensors, int8 weights and activations,
int32 biases.  Weights are quantized per output channel, dense layers included (this TensorFlow
version does that by default; older converters wrote per-tensor dense weights).  MACs count the
conv, depthwise and dense layers.

{details}

## Read this before using the numbers

- **The MLPerf Tiny models (`kws_dscnn`, `vww_mobilenet`, `ic_resnet8`, `ad_autoencoder`) are
  trained for one epoch on random synthetic data. Their accuracy is meaningless**; they exist for
  footprint, latency and bit-exactness benchmarks at the published shapes. Their layer structure
  follows the MLPerf Tiny reference training code (mlcommons/tiny, benchmark/training), with
  BatchNormalization folded into the convolutions / dense layers by the converter and Dropout
  removed at inference. Only their int8 files are committed; the float files are written next
  to them but git-ignored.
- **Flatten.** Keras 3 lowers `Flatten` to `SHAPE → STRIDED_SLICE → PACK → RESHAPE` (it computes
  the batch size at run time). boardfit's reader folds that constant subgraph into one RESHAPE;
  the operator lists above show the raw file.
- **`digits_stream`** keeps an exponential moving average of its input frames in a resource
  variable (`state ← 0.5·state + 0.5·frame`) and classifies the state (dense 32 relu → dense 10
  → softmax); the file holds `CALL_ONCE`/`VAR_HANDLE` (initialisation, in a second subgraph)
  and `READ_VARIABLE`/`ASSIGN_VARIABLE`. The int8 file keeps the state as int8. It is scored from a
  fresh state for every test image (a new interpreter: `reset_all_variables()` does not reset
  resource variables), feeding the image {frames} times and classifying the last output.
- The digits data (`toolkit/data/digits.npz`, made by `examples/make_digits_npz.py`) is
  scikit-learn's 8×8 digits scaled to [0, 1], with a fixed 1197 / 200 / 400 train /
  calibration / test split; `boardfit … --data digits:test` uses the same split.
""".replace("{frames}", str(STREAM_FRAMES))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train and convert the example models.")
    parser.add_argument("--out", type=Path, default=REPO / "examples" / "models")
    parser.add_argument("--only", choices=sorted(ARCHITECTURES), help="(re)build one model, keep the others")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="TensorFlow threads (default 1: deterministic)"
    )
    args = parser.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    args.out.mkdir(parents=True, exist_ok=True)
    meta_path = args.out / "models.json"

    old: dict[str, dict[str, Any]] = {}
    if args.only and meta_path.is_file():
        old = {m["name"]: m for m in json.loads(meta_path.read_text())["models"]}
    entries: list[dict[str, Any]] = []
    for name in ARCHITECTURES:
        if args.only and name != args.only:
            if name in old:
                entries.append(old[name])
            continue
        print(f"{name}:", flush=True)
        entries.append(train_one(name, args.out, args.seed))
    meta = {"schema": SCHEMA_VERSION, "seed": args.seed, "versions": versions(), "models": entries}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    (args.out / "README.md").write_text(render_readme(meta))
    print(f"wrote {meta_path} and {args.out / 'README.md'}")


if __name__ == "__main__":
    main()
