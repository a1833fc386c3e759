"""The --data loader (toolkit.datasets) and the committed example models (examples/models).

Quantization of real inputs is checked against TFLite's own QUANTIZE kernel (a one-op model run
in the reference interpreter), and the example models' recorded accuracies are re-measured with
the interpreter on the built-in digits test split.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from toolkit.datasets import Dataset, load_dataset, quantize_like_tflite, split_calibration
from toolkit.errors import DataError
from toolkit.interp import ReferenceInterpreter
from toolkit.model.ir import SUPPORTED_OPS, DType, Graph, QuantParams, Tensor

REPO = Path(__file__).resolve().parent.parent
DIGITS_NPZ = REPO / "toolkit" / "data" / "digits.npz"
MODELS_DIR = REPO / "examples" / "models"

# sha256 of the committed split index arrays: the example models' accuracies (and anything a
# user measured with --data digits:test) are only comparable while the split stays the same.
SPLIT_SHA256 = {
    "train_idx": "b69dc655dcfb4122b4f4a665a13bf9e0863d9e7220dfc1f31f9d2f2576a839fa",
    "calib_idx": "f6dcec745d08082e0d7045969f25fdeb646dc4bfd159a531be536fe4a27bfa36",
    "test_idx": "5c5d38e25741a6f11fba11e83caff17aae03d00581202cae18fa8683eff5c616",
}


def graph_with_input(
    shape: tuple[int, ...], dtype: str, quant: QuantParams | None = None, n_inputs: int = 1
) -> Graph:
    """A graph that is only its input tensor(s): all the loader looks at."""
    tensors = tuple(Tensor(i, f"input_{i}", shape, DType(dtype), quant) for i in range(n_inputs))
    return Graph(name="probe", tensors=tensors, ops=(), inputs=tuple(range(n_inputs)), outputs=(0,))


def write_npz(path: Path, **arrays: Any) -> Path:
    np.savez(path, **arrays)
    return path


# ---------------------------------------------------------------------------------------------
# Built-in digits


def test_digits_default_is_the_test_split() -> None:
    ds = load_dataset("digits")
    assert ds.name == "digits:test"
    assert ds.x.shape == (400, 8, 8, 1) and ds.x.dtype == np.float32
    assert ds.y is not None and ds.y.shape == (400,) and ds.y.dtype == np.int64
    # pixels/16: values in [0, 1] on a 1/16 grid, and every class present
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    np.testing.assert_array_equal(ds.x * 16, np.round(ds.x * 16))
    assert set(ds.y.tolist()) == set(range(10))


@pytest.mark.parametrize(
    ("spec", "split", "n"),
    [
        ("digits", "train", 1197),
        ("digits", "calib", 200),
        ("digits:calib", "train", 200),  # the suffix overrides the argument
        ("digits:all", "test", 1797),
    ],
)
def test_digits_split_sizes(spec: str, split: str, n: int) -> None:
    ds = load_dataset(spec, split=split)
    assert len(ds) == n and ds.y is not None and len(ds.y) == n


def test_digits_splits_are_disjoint_cover_everything_and_match_the_file() -> None:
    with np.load(DIGITS_NPZ) as raw:
        x_all, y_all = raw["x"], raw["y"]
        idx = {k: raw[f"{k}_idx"] for k in ("train", "calib", "test")}
    assert x_all.shape == (1797, 8, 8, 1)
    merged = np.concatenate(list(idx.values()))
    assert len(np.unique(merged)) == len(merged) == 1797  # disjoint and complete
    for split, ix in idx.items():
        ds = load_dataset(f"digits:{split}")
        np.testing.assert_array_equal(ds.x, x_all[ix])
        np.testing.assert_array_equal(ds.y, y_all[ix])


def test_digits_split_is_fixed() -> None:
    """The committed split must not change silently (examples/models records accuracies on it)."""
    with np.load(DIGITS_NPZ) as raw:
        digest = {k: hashlib.sha256(raw[k].astype("<i8").tobytes()).hexdigest() for k in SPLIT_SHA256}
    assert digest == SPLIT_SHA256


def test_unknown_split_is_a_data_error() -> None:
    with pytest.raises(DataError, match=r"unknown split 'valid'.*train, calib, test, all"):
        load_dataset("digits:valid")


def test_dataset_arrays_are_read_only() -> None:
    ds = load_dataset("digits")
    with pytest.raises(ValueError):
        ds.x[0, 0, 0, 0] = 1.0


# ---------------------------------------------------------------------------------------------
# User .npz files


def test_npz_with_and_without_labels(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    with_y = load_dataset(str(write_npz(tmp_path / "a.npz", x=x, y=np.array([2, 0, 1], dtype=np.int32))))
    assert with_y.name == str(tmp_path / "a.npz")
    np.testing.assert_array_equal(with_y.x, x)
    assert with_y.y is not None and with_y.y.dtype == np.int64 and with_y.y.tolist() == [2, 0, 1]
    without_y = load_dataset(str(write_npz(tmp_path / "b.npz", x=x)))
    assert without_y.y is None and without_y.x.shape == (3, 4)


def test_x_is_reshaped_to_the_model_input(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32)
    ds = load_dataset(str(write_npz(tmp_path / "d.npz", x=x)), graph_with_input((1, 8, 8, 1), "float32"))
    assert ds.x.shape == (5, 8, 8, 1) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x.reshape(5, 64), x)
    # and the other way round: the built-in 8×8 digits for a 64-input MLP
    flat = load_dataset("digits:calib", graph_with_input((1, 64), "float32"))
    assert flat.x.shape == (200, 64)


def test_float64_x_is_converted_for_a_float_model(tmp_path: Path) -> None:
    x = np.linspace(-1, 1, 16).reshape(2, 8)
    ds = load_dataset(str(write_npz(tmp_path / "f.npz", x=x)), graph_with_input((1, 8), "float32"))
    assert ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x, x.astype(np.float32))


def test_real_x_is_quantized_for_an_int8_model_half_away_from_zero(tmp_path: Path) -> None:
    # scale 0.5: x/scale = 0.5, -0.5, 1.5, -1.5, 2.5 are ties; TFLite rounds them away from zero
    # (numpy's round would give 0, 0, 2, -2, 2); 100 and -100 saturate.
    x = np.array([[0.25, -0.25, 0.75, -0.75, 1.25, 100.0, -100.0, 0.0]], dtype=np.float32)
    graph = graph_with_input((1, 8), "int8", QuantParams((0.5,), (0,)))
    ds = load_dataset(str(write_npz(tmp_path / "q.npz", x=x)), graph)
    assert ds.x.dtype == np.int8
    assert ds.x.tolist() == [[1, -1, 2, -2, 3, 127, -128, 0]]


def test_real_x_is_quantized_for_a_uint8_model_with_zero_point(tmp_path: Path) -> None:
    x = np.array([[0.0, 0.25, -0.25, -10.0, 10.0]], dtype=np.float32)
    graph = graph_with_input((1, 5), "uint8", QuantParams((0.5,), (128,)))
    ds = load_dataset(str(write_npz(tmp_path / "u.npz", x=x)), graph)
    assert ds.x.dtype == np.uint8
    assert ds.x.tolist() == [[128, 129, 127, 108, 148]]


def _quantize_op_model(n: int, scale: float, zero_point: int, out_type: str) -> bytes:
    """A one-op model: float32[n] → QUANTIZE → out_type[n] (written with the schema object API)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.QUANTIZE
    code.version = 1
    quant = s.QuantizationParametersT()
    quant.scale, quant.zeroPoint = [scale], [zero_point]
    t_in, t_out = s.TensorT(), s.TensorT()
    t_in.shape, t_in.type, t_in.buffer, t_in.name = [n], s.TensorType.FLOAT32, 0, b"x"
    t_out.shape, t_out.buffer, t_out.name, t_out.quantization = [n], 0, b"q", quant
    t_out.type = s.TensorType.INT8 if out_type == "int8" else s.TensorType.UINT8
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    sub = s.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators = [t_in, t_out], [0], [1], [op]
    model = s.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [sub], [s.BufferT()]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


@pytest.mark.parametrize(
    ("scale", "zero_point", "dtype"),
    [
        (1 / 255, -128, "int8"),  # the digits models' input quantization
        (0.5, 0, "int8"),
        (0.1, 3, "int8"),  # 0.1 is inexact in float32: ties land wherever float32 puts them
        (0.0078125, 127, "int8"),
        (0.02, 128, "uint8"),
        (3.0517578e-05, -7, "int8"),
    ],
)
def test_quantization_matches_tflite_quantize_kernel(scale: float, zero_point: int, dtype: str) -> None:
    rng = np.random.default_rng(7)
    s32 = float(np.float32(scale))
    ties = (np.arange(-300, 301, dtype=np.float32) + np.float32(0.5)) * np.float32(s32)
    near = np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf))
    wide = rng.normal(0, 200 * s32, 2000).astype(np.float32)
    # Far out of range but with |x / scale| < 2**31: beyond that TFLite's float → int32 cast is
    # undefined behaviour (x86 yields INT32_MIN), see test_huge_values_saturate.
    big = np.float32([2.0**30, -(2.0**30), 1e6, -1e6]) * np.float32(s32)
    x = np.concatenate([ties, *near, wide, big, np.float32([0.0, -0.0])]).astype(np.float32)
    interp = ReferenceInterpreter(_quantize_op_model(len(x), s32, zero_point, dtype))
    (expected,) = interp.run([x])
    got = quantize_like_tflite(x, s32, zero_point, np.dtype(dtype))
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_huge_values_saturate() -> None:
    # TFLite x86 would give 127 for -1e30 with zero point -128 (INT32_MIN + zp wraps); an ARM
    # build saturates.  We saturate: the sign of the input is kept.
    x = np.float32([1e30, -1e30, np.finfo(np.float32).max, -np.finfo(np.float32).max])
    assert quantize_like_tflite(x, 1 / 255, -128, np.dtype("int8")).tolist() == [127, -128, 127, -128]
    assert quantize_like_tflite(x, 0.5, 0, np.dtype("uint8")).tolist() == [255, 0, 255, 0]


def test_integer_x_matching_the_input_dtype_is_taken_as_is(tmp_path: Path) -> None:
    x = np.array([[-128, -1, 0, 5, 127, 3]], dtype=np.int8)
    graph = graph_with_input((1, 2, 3), "int8", QuantParams((0.5,), (10,)))
    ds = load_dataset(str(write_npz(tmp_path / "i.npz", x=x)), graph)
    assert ds.x.dtype == np.int8 and ds.x.shape == (1, 2, 3)
    np.testing.assert_array_equal(ds.x.reshape(1, 6), x)


# ---------------------------------------------------------------------------------------------
# Errors


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(DataError, match=f"{missing}: no such file.*digits"):
        load_dataset(str(missing))


def test_not_an_npz(tmp_path: Path) -> None:
    bad = tmp_path / "junk.npz"
    bad.write_bytes(b"PK\x03\x04 definitely not a zip archive" * 3)
    with pytest.raises(DataError, match=f"{bad}: not a readable .npz"):
        load_dataset(str(bad))


def test_pickled_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match=str(path)):
        load_dataset(str(path))


def test_missing_x(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "nox.npz", inputs=np.zeros((2, 3)), y=np.zeros(2, dtype=np.int64))
    with pytest.raises(DataError, match=f"{path}: no array named 'x' \\(found: inputs, y\\)"):
        load_dataset(str(path))


def test_wrong_element_count(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "n.npz", x=np.zeros((4, 7, 9), dtype=np.float32))
    with pytest.raises(DataError) as err:
        load_dataset(str(path), graph_with_input((1, 8, 8, 1), "float32"))
    msg = str(err.value)
    assert str(path) in msg and "'x'" in msg and "(7, 9)" in msg and "63 elements" in msg
    assert "(8, 8, 1)" in msg and "64 elements" in msg


@pytest.mark.parametrize(
    ("x_dtype", "model_dtype", "quant"),
    [
        ("int16", "int8", QuantParams((0.5,), (0,))),  # another integer type: ambiguous, refused
        ("int8", "uint8", QuantParams((0.5,), (128,))),
        ("uint8", "int8", QuantParams((0.5,), (0,))),
        ("float32", "int32", None),  # integer input without quantization: give integers
    ],
)
def test_wrong_dtype(tmp_path: Path, x_dtype: str, model_dtype: str, quant: QuantParams | None) -> None:
    path = write_npz(tmp_path / "t.npz", x=np.zeros((2, 4), dtype=x_dtype))
    with pytest.raises(DataError) as err:
        load_dataset(str(path), graph_with_input((1, 4), model_dtype, quant))
    msg = str(err.value)
    assert str(path) in msg and "'x'" in msg and x_dtype in msg and model_dtype in msg


def test_non_finite_values_cannot_be_quantized(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "nan.npz", x=np.array([[0.0, np.nan]], dtype=np.float32))
    with pytest.raises(DataError, match="NaN"):
        load_dataset(str(path), graph_with_input((1, 2), "int8", QuantParams((0.1,), (0,))))


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.array([0.0, 1.0]), "integer labels, found dtype float64"),
        (np.array([0, 1, 2]), r"shape \(2,\) to match x, found shape \(3,\)"),
    ],
)
def test_bad_labels(tmp_path: Path, y: np.ndarray, match: str) -> None:
    path = write_npz(tmp_path / "y.npz", x=np.zeros((2, 3), dtype=np.float32), y=y)
    with pytest.raises(DataError, match=f"{path}: key 'y' must .*{match}"):
        load_dataset(str(path))


def test_multi_input_models_are_refused() -> None:
    with pytest.raises(DataError, match=r"one input.*has 2"):
        load_dataset("digits", graph_with_input((1, 64), "float32", n_inputs=2))


# ---------------------------------------------------------------------------------------------
# Calibration / validation split


def test_split_calibration() -> None:
    n = 1197
    # x row i holds i and y[i] = i % 10, so the parts can be traced back to their samples
    ds = Dataset(x=np.arange(n, dtype=np.float32)[:, None], y=np.arange(n) % 10, name="ds")
    calib, val = split_calibration(ds, 0.25, seed=3)
    assert (len(calib), len(val)) == (299, 898)  # round(1197 · 0.25) = 299
    assert calib.name == "ds[calib]" and val.name == "ds[validation]"
    ids_c, ids_v = calib.x[:, 0].astype(int), val.x[:, 0].astype(int)
    assert sorted([*ids_c, *ids_v]) == list(range(n))  # disjoint and complete
    assert calib.y is not None and val.y is not None
    assert (calib.y == ids_c % 10).all() and (val.y == ids_v % 10).all()  # labels follow
    assert (np.diff(ids_c) > 0).all() and (np.diff(ids_v) > 0).all()  # original order kept
    again, _ = split_calibration(ds, 0.25, seed=3)
    np.testing.assert_array_equal(again.x, calib.x)
    other, _ = split_calibration(ds, 0.25, seed=4)
    assert not np.array_equal(other.x, calib.x)


def test_split_calibration_keeps_both_parts_non_empty() -> None:
    tiny = Dataset(x=np.zeros((2, 3), dtype=np.float32), y=None, name="tiny")
    calib, val = split_calibration(tiny, 0.99, seed=0)
    assert (len(calib), len(val)) == (1, 1) and calib.y is None
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(DataError, match="strictly between 0 and 1"):
            split_calibration(tiny, bad, seed=0)
    with pytest.raises(DataError, match="cannot be split"):
        split_calibration(Dataset(x=np.zeros((1, 3)), y=None, name="one"), 0.5, seed=0)


# ---------------------------------------------------------------------------------------------
# Committed example models

META = json.loads((MODELS_DIR / "models.json").read_text())
COMMITTED = [(m, kind, f) for m in META["models"] for kind, f in m["files"].items() if f["committed"]]
# Ops a committed example may contain: the supported ones, the Flatten pattern the reader folds
# (SHAPE → STRIDED_SLICE → PACK → RESHAPE) and the resource-variable machinery it resolves.
ALLOWED_OPS = set(SUPPORTED_OPS) | {"SHAPE", "PACK", "VAR_HANDLE", "CALL_ONCE"}


def _raw_ops(content: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    return [op["op_name"] for op in interp._get_ops_details()]


def _input_graph(interp: ReferenceInterpreter) -> Graph:
    """The model's input as an IR graph (from the interpreter, independent of boardfit's reader)."""
    det = interp.input_details[0]
    dtype = DType(det.dtype.name)
    quant = QuantParams((det.scale,), (det.zero_point,)) if det.scale else None
    return graph_with_input(det.shape, dtype.value, quant)


@pytest.mark.parametrize(("model", "kind", "entry"), COMMITTED, ids=[f["file"] for _, _, f in COMMITTED])
def test_example_model_file(model: dict[str, Any], kind: str, entry: dict[str, Any]) -> None:
    content = (MODELS_DIR / entry["file"]).read_bytes()
    assert hashlib.sha256(content).hexdigest() == entry["sha256"], "models.json is stale: re-run train.py"
    interp = ReferenceInterpreter(content)
    (inp,) = interp.input_details
    assert list(inp.shape) == model["input_shape"]
    assert list(interp.output_details[0].shape) == model["output_shape"]
    assert inp.dtype == (np.int8 if kind == "int8" else np.float32)
    ops = _raw_ops(content)
    assert set(ops) <= ALLOWED_OPS, f"unsupported ops: {set(ops) - ALLOWED_OPS}"
    assert {op: ops.count(op) for op in dict.fromkeys(ops)} == entry["ops"]
    interp.run([np.zeros(inp.shape, inp.dtype)])  # the reference kernels execute it


DIGITS_FILES = [(m, f) for m, _, f in COMMITTED if m["accuracy_meaningful"]]


@pytest.mark.parametrize(("model", "entry"), DIGITS_FILES, ids=[f["file"] for _, f in DIGITS_FILES])
def test_example_model_reaches_recorded_accuracy(model: dict[str, Any], entry: dict[str, Any]) -> None:
    interp = ReferenceInterpreter(MODELS_DIR / entry["file"])
    ds = load_dataset("digits:test", _input_graph(interp))
    assert ds.y is not None
    frames = model["frames_per_sample"]
    correct = 0
    for sample, label in zip(ds.x, ds.y, strict=True):
        if frames > 1:
            interp.reset_variables()
        for _ in range(frames):
            (out,) = interp.run([sample[np.newaxis]])
        correct += int(np.argmax(out[0]) == label)
    accuracy = correct / len(ds)
    assert accuracy == entry["test_accuracy"]
    assert accuracy > 0.9  # and the models are actually good at digits
