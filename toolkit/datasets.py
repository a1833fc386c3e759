"""Data sets for ``--data``: the built-in digits set or a user's .npz, shaped for a model.

Contract (what every command taking ``--data`` accepts):

* A built-in name: ``digits`` (scikit-learn's 8×8 digits, shipped as ``toolkit/data/digits.npz``),
  optionally with a split suffix ``:train``, ``:calib``, ``:test`` or ``:all`` that overrides the
  ``split`` argument.  The split is fixed and documented in ``examples/make_digits_npz.py``
  (1197 train / 200 calibration / 400 test samples).
* Otherwise a path to an ``.npz`` with ``x`` (inputs in the model's *real-valued* input domain,
  samples along the first axis) and optionally ``y`` (integer labels, one per sample).

When a :class:`~toolkit.model.ir.Graph` is given the inputs are made ready for its (single) input:

* ``x`` is reshaped to ``(n,) + input_shape[1:]`` when each sample has as many elements as the
  model input without its batch dimension;
* a model with a quantized integer input (int8/uint8/int16 with a scale) gets real ``x``
  quantized exactly as TFLite's QUANTIZE reference kernel does it: ``q = round(x / scale) + zp``
  with the division in float32, rounding half away from zero, clamped to the dtype's range;
* integer ``x`` whose dtype already equals the input dtype is taken as is (already quantized);
* a float model gets ``x`` as float32.

Anything else raises :class:`~toolkit.errors.DataError` naming the file, the key and what was
expected versus found.  This module needs only numpy (no TensorFlow, no scikit-learn).
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from toolkit.errors import DataError
from toolkit.model.ir import DType, Graph, Tensor

log = logging.getLogger(__name__)

BUILTIN_DATASETS: tuple[str, ...] = ("digits",)
SPLITS: tuple[str, ...] = ("train", "calib", "test", "all")

# Per built-in set: its file inside the package and the npz key holding each split's indices.
_BUILTIN_FILES: dict[str, str] = {"digits": "digits.npz"}
_SPLIT_KEYS: dict[str, str] = {"train": "train_idx", "calib": "calib_idx", "test": "test_idx"}


@dataclass(frozen=True, eq=False)
class Dataset:
    """Samples along axis 0 of ``x``; ``y`` holds one integer label per sample, or is ``None``.

    Both arrays are read-only.  ``name`` says where the data came from (``digits:test`` or the
    file path), for reports and error messages.
    """

    x: np.ndarray = field(repr=False)
    y: np.ndarray | None = field(repr=False)
    name: str

    def __post_init__(self) -> None:
        for attr in ("x", "y"):
            arr = getattr(self, attr)
            if arr is not None and arr.flags.writeable:
                arr = np.array(arr, copy=True)
                arr.setflags(write=False)
                object.__setattr__(self, attr, arr)
        if self.y is not None and len(self.y) != len(self.x):
            raise DataError(f"{self.name}: {len(self.x)} samples in x but {len(self.y)} labels in y")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, indices: np.ndarray, name: str) -> Dataset:
        """The samples at ``indices`` (in that order) as a new data set called ``name``."""
        return Dataset(x=self.x[indices], y=None if self.y is None else self.y[indices], name=name)


def load_dataset(spec: str, graph: Graph | None = None, split: str = "test") -> Dataset:
    """Load a built-in data set or an .npz (see the module docstring) and fit it to ``graph``."""
    builtin, chosen_split = _parse_builtin(spec, split)
    if builtin is not None:
        ds = _load_builtin(builtin, chosen_split)
        source = f"built-in data set {builtin!r}"
    else:
        ds = _load_npz(Path(spec))
        source = spec
    if graph is not None:
        ds = Dataset(x=prepare_inputs(ds.x, graph, source), y=ds.y, name=ds.name)
    return ds


def split_calibration(ds: Dataset, calib_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split ``ds`` into (calibration, validation) by a seeded permutation.

    The calibration part has ``round(len(ds) * calib_fraction)`` samples, at least one, and the
    validation part keeps at least one; both keep the original sample order.  The same data,
    fraction and seed always give the same split (numpy's PCG64 generator).
    """
    if not 0.0 < calib_fraction < 1.0:
        raise DataError(f"calibration fraction must be strictly between 0 and 1, got {calib_fraction}")
    n = len(ds)
    if n < 2:
        raise DataError(f"{ds.name}: {n} sample(s) cannot be split into calibration and validation")
    n_calib = min(max(1, round(n * calib_fraction)), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    calib_idx, val_idx = np.sort(perm[:n_calib]), np.sort(perm[n_calib:])
    return ds.take(calib_idx, f"{ds.name}[calib]"), ds.take(val_idx, f"{ds.name}[validation]")


# ---------------------------------------------------------------------------------------------
# Reading


def _parse_builtin(spec: str, split: str) -> tuple[str | None, str]:
    """``("digits", "test")`` for a built-in spec, ``(None, split)`` for a path."""
    name, sep, suffix = spec.partition(":")
    if name not in BUILTIN_DATASETS:
        return None, split
    chosen = suffix if sep else split
    if chosen not in SPLITS:
        raise DataError(
            f"unknown split {chosen!r} of built-in data set {name!r}; use one of {', '.join(SPLITS)}"
        )
    return name, chosen


def _load_builtin(name: str, split: str) -> Dataset:
    resource = resources.files("toolkit").joinpath("data", _BUILTIN_FILES[name])
    with resources.as_file(resource) as path:
        arrays = _read_npz(path, label=f"built-in data set {name!r} ({path})")
    x, y = arrays["x"], arrays["y"]
    if split == "all":
        return Dataset(x=x, y=y, name=f"{name}:all")
    idx = arrays[_SPLIT_KEYS[split]]
    return Dataset(x=x[idx], y=y[idx], name=f"{name}:{split}")


def _load_npz(path: Path) -> Dataset:
    arrays = _read_npz(path, label=str(path))
    if "x" not in arrays:
        raise DataError(f"{path}: no array named 'x' (found: {', '.join(sorted(arrays)) or 'none'})")
    x = arrays["x"]
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataError(f"{path}: key 'x' must hold at least one sample along axis 0, found shape {x.shape}")
    if x.dtype.kind not in "fiub":
        raise DataError(f"{path}: key 'x' must be numeric, found dtype {x.dtype}")
    y = arrays.get("y")
    if y is not None:
        y = _check_labels(y, len(x), path)
    return Dataset(x=x, y=y, name=str(path))


def _read_npz(path: Path, label: str) -> dict[str, np.ndarray]:
    """All arrays of an .npz, eagerly, without pickles; every failure becomes a DataError."""
    if not path.is_file():
        raise DataError(f"{label}: no such file (give an .npz path or one of: {', '.join(BUILTIN_DATASETS)})")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: np.asarray(npz[key]) for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{label}: not a readable .npz archive of plain arrays ({exc})") from exc


def _check_labels(y: np.ndarray, n: int, path: Path) -> np.ndarray:
    if y.dtype.kind not in "iu":
        raise DataError(f"{path}: key 'y' must hold integer labels, found dtype {y.dtype}")
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{path}: key 'y' must have shape ({n},) to match x, found shape {y.shape}")
    return y.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Fitting to a model


def prepare_inputs(x: np.ndarray, graph: Graph, source: str) -> np.ndarray:
    """``x`` reshaped to the model input's sample shape and converted to its dtype.

    ``source`` names the data in error messages (a path or a built-in name).
    """
    if len(graph.inputs) != 1:
        raise DataError(
            f"{source}: key 'x' can feed a model with one input, but {graph.name or 'the model'} "
            f"has {len(graph.inputs)}"
        )
    tensor = graph.input_tensors[0]
    return _convert_dtype(_reshape(x, tensor, source), tensor, source)


def _reshape(x: np.ndarray, tensor: Tensor, source: str) -> np.ndarray:
    sample_shape = tensor.shape[1:]
    per_sample = int(np.prod(sample_shape, dtype=np.int64))
    found = int(np.prod(x.shape[1:], dtype=np.int64))
    if found != per_sample:
        raise DataError(
            f"{source}: key 'x' has samples of shape {x.shape[1:]} ({found} elements), but model "
            f"input {tensor.name!r} expects {sample_shape} ({per_sample} elements) per sample "
            f"(input shape {tensor.shape})"
        )
    return x.reshape((x.shape[0], *sample_shape))


def _convert_dtype(x: np.ndarray, tensor: Tensor, source: str) -> np.ndarray:
    want = tensor.dtype.numpy
    if x.dtype == want:
        return x  # already in the model's representation (float32, or pre-quantized integers)
    if tensor.dtype in (DType.FLOAT32, DType.FLOAT16):
        if x.dtype.kind not in "fiu":
            raise DataError(
                f"{source}: key 'x' has dtype {x.dtype}; model input {tensor.name!r} takes {want}"
            )
        return x.astype(want)
    quant = tensor.quant
    if not tensor.dtype.is_quantized_type or quant is None:
        raise DataError(
            f"{source}: key 'x' has dtype {x.dtype}, but model input {tensor.name!r} is {want} "
            "without quantization parameters: give x already as that dtype"
        )
    if x.dtype.kind != "f":
        raise DataError(
            f"{source}: key 'x' has integer dtype {x.dtype}, but model input {tensor.name!r} is {want}: "
            f"give real values as float (quantized with scale {quant.scale[0]:g}, zero point "
            f"{quant.zero_point[0]}) or already-quantized {want} values"
        )
    if quant.per_channel:
        raise DataError(f"model input {tensor.name!r} has per-channel quantization; cannot quantize {source}")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{source}: key 'x' holds NaN or infinite values; they cannot be quantized")
    return quantize_like_tflite(x, quant.single_scale, quant.single_zero_point, want)


def quantize_like_tflite(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """TFLite's reference ``AffineQuantize``: ``clamp(round(x / scale) + zero_point)``.

    The division is float32 (``val / static_cast<float>(scale)``) and ``round`` is C's
    ``std::round`` (half away from zero, unlike numpy's half-to-even), so ties and values just
    below .5 come out exactly as in the interpreter.  Where ``|x / scale| >= 2**31`` TFLite's
    cast to int32 is undefined behaviour (x86 builds return INT32_MIN, which can wrap to the
    wrong end of the range after adding the zero point); here such values saturate toward
    their sign, as ARM builds do.  ``x`` must be finite (the loader checks).
    """
    with np.errstate(over="ignore"):  # ±inf is fine: it saturates like any huge value
        v = x.astype(np.float32) / np.float32(scale)
    v = np.clip(v, np.float32(-(2.0**31)), np.float32(2.0**31))
    whole = np.trunc(v)
    frac = v - whole  # exact in float32
    rounded = whole + np.where(np.abs(frac) >= np.float32(0.5), np.sign(v), np.float32(0.0))
    info = np.iinfo(dtype)
    q = np.clip(rounded.astype(np.float64) + zero_point, info.min, info.max)
    return q.astype(dtype)
