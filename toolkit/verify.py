"""Side-by-side execution of the numpy oracle and the TFLite reference interpreter.

``boardfit verify`` uses this to show that the oracle (and so everything checked against it)
computes what TFLite computes: int8 outputs must be bit-identical, float outputs equal within a
relative tolerance.  With ``layerwise`` every intermediate tensor is compared too, and the first
op whose output differs is named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from toolkit.interp import ReferenceInterpreter, arithmetic_profile, backend_name
from toolkit.model.ir import DType, Graph, Tensor
from toolkit.oracle import Oracle

FLOAT_RTOL = 1e-5


@dataclass(frozen=True)
class TensorComparison:
    """Oracle against interpreter for one tensor, accumulated over all samples."""

    tensor: int
    name: str
    dtype: str
    elements: int
    mismatched: int
    max_abs_diff: float
    tolerance: float
    ok: bool

    @property
    def bit_exact(self) -> bool:
        return self.mismatched == 0


@dataclass(frozen=True)
class Divergence:
    op_index: int
    opcode: str
    comparison: TensorComparison


@dataclass(frozen=True)
class VerifyReport:
    model: str
    backend: str
    samples: int
    input_source: str
    outputs: tuple[TensorComparison, ...]
    first_divergence: Divergence | None
    layers_compared: int

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outputs) and self.first_divergence is None


def random_inputs(graph: Graph, samples: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Inputs spread over each input's whole domain: every int8 code, floats in [-1, 1]."""
    rng = np.random.default_rng(seed)
    batches: list[list[np.ndarray]] = []
    for _ in range(samples):
        batches.append([_random_tensor(rng, t) for t in graph.input_tensors])
    return batches


def _random_tensor(rng: np.random.Generator, t: Tensor) -> np.ndarray:
    if t.dtype in (DType.FLOAT32, DType.FLOAT16):
        return rng.uniform(-1.0, 1.0, size=t.shape).astype(t.dtype.numpy)
    if t.dtype == DType.BOOL:
        return rng.integers(0, 2, size=t.shape).astype(bool)
    info = np.iinfo(t.dtype.numpy)
    lo, hi = max(int(info.min), -(2**15)), min(int(info.max), 2**15 - 1)
    return rng.integers(lo, hi, size=t.shape, endpoint=True).astype(t.dtype.numpy)


class _Accumulator:
    """Running comparison of one tensor across samples."""

    def __init__(self, t: Tensor) -> None:
        self.t = t
        self.elements = 0
        self.mismatched = 0
        self.max_abs = 0.0
        self.max_ref = 0.0
        self.exact_required = t.dtype not in (DType.FLOAT32, DType.FLOAT16)

    def add(self, ours: np.ndarray, ref: np.ndarray) -> None:
        a = np.asarray(ours, dtype=np.float64).reshape(-1)
        b = np.asarray(ref, dtype=np.float64).reshape(-1)
        diff = np.abs(a - b)
        self.elements += a.size
        self.mismatched += int(np.count_nonzero(diff))
        self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        self.max_ref = max(self.max_ref, float(np.abs(b).max(initial=0.0)))

    def result(self) -> TensorComparison:
        tol = 0.0 if self.exact_required else FLOAT_RTOL * max(self.max_ref, 1e-30)
        return TensorComparison(
            tensor=self.t.index,
            name=self.t.name,
            dtype=self.t.dtype.value,
            elements=self.elements,
            mismatched=self.mismatched,
            max_abs_diff=self.max_abs,
            tolerance=tol,
            ok=self.max_abs <= tol,
        )


def verify(
    graph: Graph,
    model: bytes,
    inputs: Sequence[Sequence[np.ndarray]],
    *,
    input_source: str,
    layerwise: bool = False,
) -> VerifyReport:
    """Run every sample (in order, so streaming state evolves alike) through both and compare.

    The oracle runs with the arithmetic profile of the interpreter backend in use (LiteRT's or
    tflite-runtime 2.14's reference kernels), not with its TFLite Micro default."""
    interp = ReferenceInterpreter(model, reference_kernels=True, preserve_all_tensors=layerwise)
    oracle = Oracle(graph, profile=arithmetic_profile())
    outs = [_Accumulator(t) for t in graph.output_tensors]
    inner_ids = [i for op in graph.ops for i in op.outputs if i not in graph.outputs] if layerwise else []
    inner = {i: _Accumulator(graph.tensors[i]) for i in inner_ids}
    for sample in inputs:
        ref = interp.run(sample)
        res = oracle.run(sample, keep_intermediates=layerwise)
        for acc, ours, theirs in zip(outs, res.outputs, ref, strict=False):
            acc.add(ours, theirs)
        for i, acc in inner.items():
            acc.add(res.tensors[i], interp.tensor(i))
    return VerifyReport(
        model=graph.name,
        backend=backend_name(),
        samples=len(inputs),
        input_source=input_source,
        outputs=tuple(a.result() for a in outs),
        first_divergence=_first_divergence(graph, inner),
        layers_compared=len(graph.ops) if layerwise else 0,
    )


def _first_divergence(graph: Graph, inner: dict[int, _Accumulator]) -> Divergence | None:
    for op in graph.ops:
        for i in op.outputs:
            if i in inner:
                cmp = inner[i].result()
                if not cmp.ok:
                    return Divergence(op.index, op.opcode, cmp)
    return None
