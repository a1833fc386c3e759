"""A thin, typed wrapper over the TFLite interpreter (the ground truth the oracle is checked against).

Two backends expose the same ``Interpreter`` API: ``ai_edge_litert.interpreter`` (default, works
with numpy 2) and ``tflite_runtime.interpreter`` (2.14, needs numpy<2).  The environment variable
``BOARDFIT_INTERPRETER=ai-edge-litert|tflite-runtime`` forces one; otherwise the first that imports
wins, ai-edge-litert first.  The backend is imported lazily, on first use, so that ``import
toolkit`` stays light.

Kernel choice (``reference_kernels``):

* ``True`` → ``OpResolverType.BUILTIN_REF``: TFLite's reference kernels.  This is the contract of
  the oracle: int8 results are bit-exact with these (and with TFLite Micro's reference kernels).
* ``False`` → ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``: the optimized builtin kernels
  a deployed TFLite would run, but without the XNNPACK delegate that ``BUILTIN``/``AUTO`` apply.
  XNNPACK rewrites the graph into its own fused kernels, hides intermediate tensors and rounds
  float math differently, so it is never what we want to compare against; the optimized builtin
  kernels may differ from the reference ones by rounding in a few ops (that is the point of
  offering both).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.errors import InterpreterError

if TYPE_CHECKING:
    from toolkit.oracle.profile import Arithmetic

log = logging.getLogger(__name__)

ENV_VAR = "BOARDFIT_INTERPRETER"

# Backend name → importable module with ``Interpreter`` and ``OpResolverType``.
_BACKENDS: dict[str, str] = {
    "ai-edge-litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
}

_INSTALL_HINT = (
    "install the TFLite interpreter: `pip install ai-edge-litert` (default, numpy 2) or "
    "`pip install 'tflite-runtime==2.14.0' 'numpy<2'`"
)

_loaded: tuple[str, ModuleType] | None = None


def _load_backend() -> tuple[str, ModuleType]:
    """Import the interpreter module once; honour ``BOARDFIT_INTERPRETER``."""
    global _loaded
    if _loaded is not None:
        return _loaded
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced and forced not in _BACKENDS:
        raise InterpreterError(
            f"{ENV_VAR}={forced!r} is not a known interpreter; use one of {', '.join(_BACKENDS)}"
        )
    names = [forced] if forced else list(_BACKENDS)
    failures: list[str] = []
    for name in names:
        try:
            module = importlib.import_module(_BACKENDS[name])
        except ImportError as exc:
            failures.append(f"{name}: {exc}")
            continue
        log.debug("TFLite interpreter backend: %s", name)
        _loaded = (name, module)
        return _loaded
    raise InterpreterError(
        f"no TFLite interpreter could be imported ({'; '.join(failures)}); {_INSTALL_HINT}"
    )


def backend_name() -> str:
    """``"ai-edge-litert"`` or ``"tflite-runtime"``; raises :class:`InterpreterError` if neither imports."""
    return _load_backend()[0]


def arithmetic_profile() -> Arithmetic:
    """The oracle's :class:`~toolkit.oracle.profile.Arithmetic` that reproduces the reference
    kernels of the backend in use: LiteRT's for ai-edge-litert, 2.14's for tflite-runtime."""
    from toolkit.oracle.profile import Arithmetic

    profiles = {"ai-edge-litert": Arithmetic.LITERT, "tflite-runtime": Arithmetic.TFLITE_2_14}
    return profiles[backend_name()]


@dataclass(frozen=True)
class TensorDetail:
    """One input or output of the interpreter.  ``scale``/``zero_point`` are per-tensor values
    (``0.0``/``0`` when the tensor is not quantized, as TFLite reports them)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int


def _detail(d: dict[str, Any]) -> TensorDetail:
    scale, zero_point = d.get("quantization", (0.0, 0))
    return TensorDetail(
        index=int(d["index"]),
        name=str(d["name"]),
        shape=tuple(int(s) for s in d["shape"]),
        dtype=np.dtype(d["dtype"]),
        scale=float(scale),
        zero_point=int(zero_point),
    )


class ReferenceInterpreter:
    """Loads a model (bytes or a path), allocates it and runs it on numpy inputs.

    Not thread-safe (neither is the TFLite interpreter).  Streaming models keep their resource
    variables across :meth:`run` calls until :meth:`reset_variables`.
    """

    def __init__(
        self,
        model: bytes | os.PathLike[str] | str,
        *,
        reference_kernels: bool = True,
        preserve_all_tensors: bool = False,
        num_threads: int = 1,
    ) -> None:
        _, module = _load_backend()
        if isinstance(model, (bytes, bytearray, memoryview)):
            content: bytes = bytes(model)
            self.model_name = f"<{len(content)}-byte model>"
        else:
            path = Path(model)
            self.model_name = str(path)
            try:
                content = path.read_bytes()
            except OSError as exc:
                raise InterpreterError(f"cannot read model {path}: {exc}") from exc
        self.reference_kernels = reference_kernels
        self.preserve_all_tensors = preserve_all_tensors
        self._content = content
        self._num_threads = num_threads
        self._interp = self._create(module)
        self.input_details: tuple[TensorDetail, ...] = tuple(
            _detail(d) for d in self._interp.get_input_details()
        )
        self.output_details: tuple[TensorDetail, ...] = tuple(
            _detail(d) for d in self._interp.get_output_details()
        )
        self._has_run = False

    def _create(self, module: ModuleType) -> Any:
        resolver = module.OpResolverType
        kernels = (
            resolver.BUILTIN_REF if self.reference_kernels else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        try:
            interp = module.Interpreter(
                model_content=self._content,
                num_threads=self._num_threads,
                experimental_op_resolver_type=kernels,
                experimental_preserve_all_tensors=self.preserve_all_tensors,
            )
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise InterpreterError(f"the TFLite interpreter refused {self.model_name}: {exc}") from exc
        return interp

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Set every input (dtype must match; the shape may differ by element-preserving reshape),
        invoke, and return copies of the outputs in model order."""
        if len(inputs) != len(self.input_details):
            raise InterpreterError(
                f"{self.model_name} takes {len(self.input_details)} inputs, got {len(inputs)}"
            )
        for k, (det, arr) in enumerate(zip(self.input_details, inputs, strict=True)):
            a = np.asarray(arr)
            if a.dtype != det.dtype:
                raise InterpreterError(f"input {k} ({det.name}) must be {det.dtype}, got {a.dtype}")
            if a.size != int(np.prod(det.shape, dtype=np.int64)):
                raise InterpreterError(f"input {k} ({det.name}) must have shape {det.shape}, got {a.shape}")
            self._interp.set_tensor(det.index, np.ascontiguousarray(a.reshape(det.shape)))
        try:
            self._interp.invoke()
        except (ValueError, RuntimeError) as exc:
            raise InterpreterError(f"the TFLite interpreter failed to run {self.model_name}: {exc}") from exc
        self._has_run = True
        return [np.array(self._interp.get_tensor(det.index), copy=True) for det in self.output_details]

    def tensor(self, index: int) -> np.ndarray:
        """A copy of any tensor's value after :meth:`run` (needs ``preserve_all_tensors=True``,
        otherwise TFLite reuses intermediate buffers and the value would be garbage)."""
        if not self.preserve_all_tensors:
            raise InterpreterError("tensor() needs ReferenceInterpreter(..., preserve_all_tensors=True)")
        if not self._has_run:
            raise InterpreterError("tensor() is only meaningful after run()")
        try:
            return np.array(self._interp.get_tensor(index), copy=True)
        except (ValueError, RuntimeError) as exc:
            raise InterpreterError(f"{self.model_name}: cannot read tensor {index}: {exc}") from exc

    def tensor_details(self) -> list[dict[str, Any]]:
        """The backend's raw ``get_tensor_details()`` (includes ``quantization_parameters``)."""
        return list(self._interp.get_tensor_details())

    def reset_variables(self) -> None:
        """Restore every variable of a streaming model to its initial value.

        ``Interpreter.reset_all_variables()`` only zeroes legacy variable tensors: resource
        variables keep their values and CALL_ONCE does not run again (checked on ai-edge-litert
        2.3), so the interpreter is rebuilt from the model bytes instead.
        """
        self._interp = self._create(_load_backend()[1])
        self._has_run = False
