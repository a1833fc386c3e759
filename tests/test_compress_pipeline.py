"""The compression pipeline: specs, CompressedModel, post-training quantization, `boardfit compress`.

* Spec resolution: defaults, layers by index and by name, unnamed layers stay int8, errors.
* ``CompressedModel.simulate`` equals running the graph op by op by hand with the compressed
  layers' forwards; batched ``predict`` equals one-by-one simulation; calibration is sequential.
* PTQ of the float digits models: accuracy within a point of float, the oracle bit-exact with the
  TFLite interpreter on the quantized graph, TFLite's parameter rules.
* ``boardfit compress`` on the digits MLP and CNN: JSON, OUT/ files, and the exported .tflite
  run by the interpreter against the host simulation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.compress import model as cmodel
from toolkit.compress.base import Calibration, LayerRef, Setting
from toolkit.compress.model import (
    CompressedModel,
    compress_graph,
    match_float_weights,
    resolve_settings,
    run_samples,
)
from toolkit.compress.ptq import quant_from_range, quantize_graph
from toolkit.compress.spec import load_spec, parse_spec
from toolkit.datasets import load_dataset, prepare_inputs
from toolkit.errors import CompressionError
from toolkit.interp import ReferenceInterpreter
from toolkit.model.ir import DType, Graph
from toolkit.model.tflite import read_tflite
from toolkit.model.tflite_writer import write_tflite
from toolkit.oracle import Oracle
from toolkit.oracle.profile import Arithmetic
from toolkit.oracle.registry import KERNELS, OpContext

MODELS = Path(__file__).parent.parent / "examples" / "models"
runner = CliRunner()


def _model(name: str) -> Graph:
    return read_tflite(MODELS / f"{name}.tflite")


def _acc(outputs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(outputs.reshape(len(y), -1).argmax(axis=1) == y))


# ---------------------------------------------------------------------------------------------
# Specs.


def test_spec_resolution_by_default_index_and_name() -> None:
    g = _model("digits_cnn_int8")
    names = {op.index: op.name for op in g.ops}
    spec = parse_spec(f'''
[default]
method = "quant"
bits = 4
[layers.1]
method = "kmeans"
bits = 3
[layers."{names[5]}"]
method = "int8"
''')
    settings = resolve_settings(g, spec)
    assert sorted(settings) == [0, 1, 2, 5]  # CONV, DEPTHWISE, CONV, FULLY_CONNECTED
    assert settings[0] == settings[2] == Setting.of("quant", bits=4)
    assert settings[1] == Setting.of("kmeans", bits=3)
    assert settings[5] == Setting.of("int8")
    # Without a default, unnamed layers keep the dense int8 kernel.
    assert resolve_settings(g, parse_spec('[layers.2]\nmethod = "quant"\n')) == {
        0: Setting.of("int8"), 1: Setting.of("int8"), 2: Setting.of("quant"), 5: Setting.of("int8")}


def test_spec_errors_name_the_problem() -> None:
    g = _model("digits_cnn_int8")
    with pytest.raises(CompressionError, match="names no compressible layer"):
        resolve_settings(g, parse_spec('[layers.3]\nmethod = "quant"\n'))  # MAX_POOL_2D
    with pytest.raises(CompressionError, match="unknown compression method 'zip'"):
        compress_graph(g, parse_spec('[default]\nmethod = "zip"\n'), None)
    with pytest.raises(CompressionError, match="bits"):
        compress_graph(g, parse_spec('[default]\nmethod = "quant"\nbits = 11\n'), None)
    with pytest.raises(CompressionError, match="not an int8 layer"):
        compress_graph(_model("digits_cnn_float"), {0: Setting.of("quant")}, None)


# ---------------------------------------------------------------------------------------------
# CompressedModel.


MIXED = {0: Setting.of("quant", bits=3), 1: Setting.of("kmeans", bits=3, per_channel=True),
         2: Setting.of("quant", bits=2, gptq=True), 5: Setting.of("kmeans", bits=4)}


@pytest.fixture(scope="module")
def cnn_compressed() -> CompressedModel:
    g = _model("digits_cnn_int8")
    return compress_graph(g, MIXED, load_dataset("digits:calib", g).x[:64])


def _by_hand(cm: CompressedModel, x: np.ndarray) -> dict[int, np.ndarray]:
    """Execute the graph op by op: the compressed forward where there is one, else the oracle's
    kernel for that op."""
    g = cm.graph
    values = {t.index: t.data for t in g.tensors if t.data is not None}
    values[g.inputs[0]] = x
    for op in g.ops:
        if op.index in cm.layers:
            tin = g.tensors[op.inputs[0]]
            y = cm.layers[op.index].forward(values[op.inputs[0]].reshape((1, *tin.shape[1:])))
            values[op.outputs[0]] = y.reshape(g.tensors[op.outputs[0]].shape)
        else:
            ctx = OpContext(g, op, tuple(values.get(i) if i >= 0 else None for i in op.inputs))
            for t, v in zip(op.outputs, KERNELS[op.opcode](ctx), strict=True):
                values[t] = v
    return values


def test_simulate_equals_applying_forwards_by_hand(cnn_compressed: CompressedModel) -> None:
    cm = cnn_compressed
    g = cm.graph
    test = load_dataset("digits:test", g)
    for x in test.x[:5]:
        x = x.reshape(g.input_tensors[0].shape)
        want = _by_hand(cm, x)
        got = cm.simulate([x], keep_intermediates=True)
        for t, v in want.items():
            np.testing.assert_array_equal(got.tensors[t], v, err_msg=g.tensors[t].name)
    # Compressing really changed the model, so the comparison above was not trivial.
    plain = Oracle(g).run([test.x[0].reshape(g.input_tensors[0].shape)], keep_intermediates=True)
    assert any(not np.array_equal(plain.tensors[g.ops[i].outputs[0]], got.tensors[g.ops[i].outputs[0]])
               for i in cm.layers)


def test_batched_predict_equals_one_by_one(cnn_compressed: CompressedModel) -> None:
    cm = cnn_compressed
    g = cm.graph
    x = load_dataset("digits:test", g).x[:40]
    batched = cm.predict(x)[0]
    single = np.stack([cm.simulate([s.reshape(g.input_tensors[0].shape)]).outputs[0] for s in x])
    np.testing.assert_array_equal(batched, single)
    assert cmodel.batched_graph(g, 40) is not None  # the batched path was the one taken


def test_calibration_is_sequential(monkeypatch: pytest.MonkeyPatch) -> None:
    """Layer k is calibrated on the activations of the already compressed layers before it; its
    reference is the original layer's output on the original activations."""
    g = _model("digits_mlp_int8")
    x = load_dataset("digits:calib", g).x[:32]
    seen: dict[int, Calibration] = {}
    real_get = cmodel.get_method

    class Recording:
        def __init__(self, name: str) -> None:
            self.inner = real_get(name)
            self.name = name

        def applicable(self, layer: LayerRef) -> bool:
            return self.inner.applicable(layer)

        def option(self, layer: LayerRef, setting: Setting):  # type: ignore[no-untyped-def]
            return self.inner.option(layer, setting)

        def apply(self, layer: LayerRef, setting: Setting, calib: Calibration | None):  # type: ignore[no-untyped-def]
            assert calib is not None
            seen[layer.op.index] = calib
            return self.inner.apply(layer, setting, calib)

    monkeypatch.setattr(cmodel, "get_method", Recording)
    settings = dict.fromkeys((0, 1, 2), Setting.of("quant", bits=2))
    original = cmodel.run_all(g, x)
    for sequential in (True, False):
        cm = compress_graph(g, settings, x, sequential=sequential)
        ops = g.ops
        for i in (1, 2):
            upstream = cmodel.run_all(g, x, {k: cm.layers[k].forward for k in range(i)})
            want_in = upstream if sequential else original
            np.testing.assert_array_equal(seen[i].inputs, want_in[ops[i].inputs[0]].reshape(32, -1))
            np.testing.assert_array_equal(seen[i].reference, original[ops[i].outputs[0]].reshape(32, -1))
        np.testing.assert_array_equal(seen[0].inputs, x.reshape(32, -1))
    assert not np.array_equal(upstream[ops[1].inputs[0]], original[ops[1].inputs[0]])


def test_float_weights_are_matched_by_position() -> None:
    f, q = _model("digits_mlp_float"), _model("digits_mlp_int8")
    matched = match_float_weights(q, f)
    assert sorted(matched) == [0, 1, 2]
    for i, w in matched.items():
        wq = q.tensors[q.ops[i].inputs[1]]
        assert wq.quant is not None and w.dtype == np.float32
        # The int8 weights are the converter's rounding of these float weights.
        np.testing.assert_allclose(wq.data * np.asarray(wq.quant.scale)[:, None], w,
                                   atol=float(max(wq.quant.scale)) * 0.51)
    with pytest.raises(CompressionError, match=r"cannot be matched|does not match"):
        match_float_weights(q, _model("digits_cnn_float"))


# ---------------------------------------------------------------------------------------------
# Post-training quantization.


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_ptq_accuracy_and_interpreter_bit_exactness(name: str) -> None:
    fg = _model(f"{name}_float")
    calib, test = load_dataset("digits:calib"), load_dataset("digits:test")
    qg = quantize_graph(fg, prepare_inputs(calib.x, fg, "calib"))
    assert all(qg.tensors[i].dtype is DType.INT8 for i in (*qg.inputs, *qg.outputs))
    assert not any(op.opcode in ("QUANTIZE", "DEQUANTIZE") for op in qg.ops)
    xf, xq = prepare_inputs(test.x, fg, "t"), prepare_inputs(test.x, qg, "t")
    float_acc = _acc(run_samples(fg, xf)[0], test.y)
    ptq_acc = _acc(run_samples(qg, xq)[0], test.y)
    assert abs(ptq_acc - float_acc) <= 0.01, (float_acc, ptq_acc)
    # The interpreter (LiteRT reference kernels) runs the written graph exactly as the oracle.
    interp = ReferenceInterpreter(write_tflite(qg))
    oracle = Oracle(qg, profile=Arithmetic.LITERT)
    shape = qg.input_tensors[0].shape
    for x in xq[:40]:
        x = x.reshape(shape)
        np.testing.assert_array_equal(interp.run([x])[0], oracle.run([x]).outputs[0])


def test_ptq_parameters_follow_tflite_rules() -> None:
    fg = _model("digits_cnn_float")
    x = prepare_inputs(load_dataset("digits:calib").x, fg, "calib")
    qg = quantize_graph(fg, x)
    for op in qg.ops:
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            xin, w, b = (qg.tensors[i] for i in op.inputs[:3])
            assert w.quant is not None and b.quant is not None and xin.quant is not None
            axis = 3 if op.opcode == "DEPTHWISE_CONV_2D" else 0
            assert w.quant.axis == axis and set(w.quant.zero_point) == {0}
            per_channel = np.abs(np.moveaxis(w.data, axis, 0).reshape(w.shape[axis], -1)).max(axis=1)
            assert (per_channel == 127).all()  # symmetric, full range per channel
            want = np.float32(xin.quant.scale[0] * np.array(w.quant.scale))
            np.testing.assert_allclose(b.quant.scale, want, rtol=1e-7)
        if op.opcode in ("MAX_POOL_2D", "RESHAPE"):
            assert qg.tensors[op.inputs[0]].quant == qg.tensors[op.outputs[0]].quant
        if op.opcode == "SOFTMAX":
            assert qg.tensors[op.outputs[0]].quant.scale == (1 / 256,)
            assert qg.tensors[op.outputs[0]].quant.zero_point == (-128,)
    # The input's parameters come from the calibration range [0, 1] of the digits pixels.
    assert qg.input_tensors[0].quant == quant_from_range(float(x.min()), float(x.max()))
    assert quant_from_range(0.0, 1.0).zero_point == (-128,)


# ---------------------------------------------------------------------------------------------
# boardfit compress.


def _compress_cli(tmp_path: Path, model: str, spec: str, *extra: str) -> tuple[int, dict, Path]:
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(spec)
    out = tmp_path / "out"
    res = runner.invoke(app, ["compress", str(MODELS / f"{model}.tflite"), "--spec", str(spec_path),
                              "-o", str(out), *extra, "--json"])
    assert res.exit_code == 0, res.output
    return res.exit_code, json.loads(res.stdout), out


@pytest.mark.parametrize(("model", "spec"), [
    ("digits_mlp_int8", '[default]\nmethod = "kmeans"\nbits = 4\n[layers.2]\nmethod = "quant"\nbits = 8\n'),
    ("digits_cnn_int8", '[default]\nmethod = "quant"\nbits = 4\n[layers.1]\nmethod = "int8"\n'),
])
def test_cli_compress_json_files_and_export(tmp_path: Path, model: str, spec: str) -> None:
    _, doc, out = _compress_cli(tmp_path, model, spec, "--data", "digits", "--export-tflite")
    assert doc["schema"] == "boardfit.compress/1"
    assert json.loads((out / "compressed.json").read_text()) == doc
    layers = doc["layers"]
    g = _model(model)
    assert [lay["op_index"] for lay in layers] == [op.index for op in g.ops if op.opcode in
                                                  ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert doc["totals"]["bytes_after"] == sum(lay["bytes_after"] for lay in layers)
    assert doc["totals"]["bytes_after"] < doc["totals"]["bytes_before"]
    for lay in layers:
        if lay["method"] == "int8":
            assert lay["bytes_after"] == lay["bytes_before"]
    # The resolved spec names every layer and reproduces the same settings.
    resolved = resolve_settings(g, load_spec(out / "spec.toml"))
    assert {i: s.label for i, s in resolved.items()} == {lay["op_index"]: lay["label"] for lay in layers}
    acc = doc["accuracy"]
    assert doc["test_samples"] == 200 and acc["float"] is None
    assert acc["int8"] >= 0.95 and acc["compressed"] >= 0.93
    export = doc["export"]
    assert export["exact"] and export["not_exportable"] == []
    # The interpreter confirms the simulated accuracy: identical outputs on (nearly) every
    # sample; LiteRT's FC requantizes in double, the device in fixed point.
    assert export["identical_outputs"] >= 0.98
    assert abs(acc["exported"] - acc["compressed"]) <= 1 - export["identical_outputs"] + 1e-9
    if export["identical_outputs"] == 1.0:
        assert acc["exported"] == acc["compressed"]
    exported = read_tflite(out / "model.tflite")
    assert [op.opcode for op in exported.ops] == [op.opcode for op in g.ops]


def test_cli_compress_float_model_quantizes_first(tmp_path: Path) -> None:
    _, doc, _ = _compress_cli(tmp_path, "digits_mlp_float", '[default]\nmethod = "quant"\nbits = 4\n',
                              "--data", "digits:test", "--calib", "digits:calib")
    assert doc["float_model"] and doc["calibration"] == "digits:calib" and doc["test_samples"] == 400
    acc = doc["accuracy"]
    assert abs(acc["int8"] - acc["float"]) <= 0.01
    assert abs(acc["compressed"] - acc["float"]) <= 0.02
    assert doc["export"] is None and acc["exported"] is None


def test_cli_compress_errors(tmp_path: Path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text('[default]\nmethod = "quant"\n')
    res = runner.invoke(app, ["compress", str(MODELS / "digits_mlp_float.tflite"), "--spec", str(spec),
                              "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "calibration data" in res.output
    spec.write_text('[layers.9]\nmethod = "quant"\n')
    res = runner.invoke(app, ["compress", str(MODELS / "digits_mlp_int8.tflite"), "--spec", str(spec),
                              "-o", str(tmp_path / "o")])
    assert res.exit_code == 2 and "[layers.9] names no compressible layer" in res.output


def test_default_method_covers_only_the_layers_it_can_compress() -> None:
    """[default] binary on the digits CNN binarizes the convs and the dense layer and leaves the
    depthwise conv (which binarization does not support) as it is; naming that layer explicitly
    is an error that says which op and why."""
    graph = read_tflite(Path(__file__).parent.parent / "examples" / "models" / "digits_cnn_int8.tflite")
    spec = parse_spec('[default]\nmethod = "binary"\nmode = "bwn"\n')
    chosen = spec.resolve(graph)
    opcodes = {graph.ops[i].opcode for i in chosen}
    assert "DEPTHWISE_CONV_2D" not in opcodes
    assert {"CONV_2D", "FULLY_CONNECTED"} <= opcodes
    dw = next(op for op in graph.ops if op.opcode == "DEPTHWISE_CONV_2D")
    explicit = parse_spec(f'[layers.{dw.index}]\nmethod = "binary"\n')
    with pytest.raises(CompressionError, match=rf"op {dw.index} \(DEPTHWISE_CONV_2D"):
        compress_graph(graph, explicit, None)
