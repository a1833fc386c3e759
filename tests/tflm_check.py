"""Run models in TensorFlow Lite Micro (the ``tflite-micro`` PyPI package) and compare the oracle.

TFLM is what runs on the microcontrollers boardfit targets, and its reference kernels are what
the generated C must reproduce, so :class:`~toolkit.oracle.profile.Arithmetic.TFLM` is checked
against this interpreter, not against LiteRT.  The package runs TFLM's C++ reference kernels on
the host (``tflite_micro.python.tflite_micro.runtime``).

TFLM calls ``abort()`` on some models it cannot run (a 5-D PRELU, for one) instead of returning
an error, which would take the whole test session down.  :func:`tflm_run` therefore runs the
interpreter in a forked child process and reports such a death as :class:`TflmError`.
"""

from __future__ import annotations

import os
import pickle
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tests.opgen import assert_same, rand_input
from toolkit.model.ir import Graph
from toolkit.oracle import Oracle
from toolkit.oracle.profile import Arithmetic

# Enough arena for every single-op test model and every example model; TFLM's default (10 × the
# model size) is too small for models with few weights and large activations.
ARENA_BYTES = 8 << 20


class TflmError(RuntimeError):
    """TFLM refused the model, failed to invoke it, or aborted the process running it."""


@dataclass(frozen=True)
class TflmResult:
    """Per step: the outputs in model order and the requested tensors by index."""

    outputs: list[list[np.ndarray]]
    tensors: list[dict[int, np.ndarray]]


def _runtime() -> Any:
    from tflite_micro.python.tflite_micro import runtime

    return runtime


def _run_here(model: bytes, steps: Sequence[Sequence[np.ndarray]], tensors: Sequence[int]) -> TflmResult:
    """Run in this process (TFLM may abort it: call through :func:`tflm_run`)."""
    rt = _runtime()
    mt = rt.convert_bytearray_to_object(model)
    n_in, n_out = len(mt.subgraphs[0].inputs), len(mt.subgraphs[0].outputs)
    interp = rt.Interpreter.from_bytes(
        model, arena_size=ARENA_BYTES, intrepreter_config=rt.InterpreterConfig.kPreserveAllTensors
    )
    in_details = [interp.get_input_details(k) for k in range(n_in)]
    outputs: list[list[np.ndarray]] = []
    kept: list[dict[int, np.ndarray]] = []
    for xs in steps:
        if len(xs) != n_in:
            raise TflmError(f"the model takes {n_in} inputs, got {len(xs)}")
        for k, (det, x) in enumerate(zip(in_details, xs, strict=True)):
            shape = tuple(int(s) for s in det["shape"])
            interp.set_input(np.ascontiguousarray(np.asarray(x, dtype=det["dtype"]).reshape(shape)), k)
        interp.invoke()
        outputs.append([np.array(interp.get_output(k), copy=True) for k in range(n_out)])
        kept.append({i: np.array(interp.GetTensor(i, 0)["tensor_data"], copy=True) for i in tensors})
    return TflmResult(outputs, kept)


def tflm_run(model: bytes, steps: Sequence[Sequence[np.ndarray]], tensors: Sequence[int] = (),
             *, timeout_s: int = 60) -> TflmResult:
    """Run ``model`` once per entry of ``steps`` (state carries over between steps, as in one
    interpreter) in a forked child; return its outputs and the subgraph-0 ``tensors`` after each
    step.  Raises :class:`TflmError` if TFLM refuses, fails, aborts or runs longer than
    ``timeout_s`` (some invalid models make it loop)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the test runner
        code = 0
        try:
            signal.alarm(timeout_s)  # SIGALRM's default action ends the child
            os.close(read_fd)
            try:
                payload: tuple[str, Any] = ("ok", _run_here(bytes(model), steps, tensors))
            except Exception as exc:
                payload = ("error", f"{type(exc).__name__}: {exc}")
            with os.fdopen(write_fd, "wb") as f:
                pickle.dump(payload, f)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise TflmError(f"TFLM killed its process with {signal.Signals(os.WTERMSIG(status)).name}")
    if not data:
        raise TflmError(f"TFLM's process exited with status {os.WEXITSTATUS(status)} and no result")
    kind, value = pickle.loads(data)
    if kind != "ok":
        raise TflmError(value)
    assert isinstance(value, TflmResult)
    return value


def check_against_tflm(
    graph: Graph,
    model: bytes,
    inputs: Sequence[np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
    *,
    steps: int = 1,
    intermediates: bool = True,
    rtol_float: float = 1e-5,
    atol_float: float = 1e-6,
) -> list[np.ndarray]:
    """Run ``model`` (the .tflite of ``graph``) in TFLM and ``graph`` in the oracle with the TFLM
    profile; integers must be bit-identical, floats within ``rtol_float`` (+ ``atol_float``).
    With ``intermediates`` every tensor the oracle computes is compared too.  Inputs are random
    (:func:`tests.opgen.rand_input`) unless given; with ``steps > 1`` (streaming models) the
    graph runs that many times.  Returns TFLM's outputs of the last step."""
    rng = rng if rng is not None else np.random.default_rng(0)
    all_inputs = [
        list(inputs) if inputs is not None else [rand_input(rng, t) for t in graph.input_tensors]
        for _ in range(steps)
    ]
    skip = set(graph.inputs) | set(graph.outputs)
    inner = [i for op in graph.ops for i in op.outputs if i not in skip] if intermediates else []
    theirs = tflm_run(model, all_inputs, inner)
    oracle = Oracle(graph, profile=Arithmetic.TFLM)
    for step, xs in enumerate(all_inputs):
        tag = f"{graph.name} step {step}" if steps > 1 else graph.name
        res = oracle.run(xs, keep_intermediates=intermediates)
        for k, (o_out, t_out) in enumerate(zip(res.outputs, theirs.outputs[step], strict=True)):
            assert_same(o_out, t_out.reshape(o_out.shape), f"{tag}: output {k} oracle vs TFLM",
                        atol_float=atol_float, rtol_float=rtol_float)
        for idx in inner:
            value = res.tensors[idx]
            assert_same(value, theirs.tensors[step][idx].reshape(value.shape),
                        f"{tag}: tensor {idx} ({graph.tensors[idx].name}) oracle vs TFLM",
                        atol_float=atol_float, rtol_float=rtol_float)
    return theirs.outputs[-1]
