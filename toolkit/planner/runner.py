"""Running parts of an int8 graph on many samples, and comparing model outputs.

The planner measures every option of every layer against the original model.  To do that
cheaply it runs the original graph once on the calibration samples keeping every activation
(:meth:`GraphRunner.run_all`), and afterwards runs only the *rest* of the network from a layer
on (:meth:`GraphRunner.run_suffix`), with that layer's output replaced and every other tensor
the suffix reads (skip connections) taken from the cached original activations.

Values are sample-major: tensor ``t`` is an array ``(n, *graph.tensors[t].shape)``.  Batch-1
graphs whose ops treat the leading axis as independent samples run all samples in one oracle
call (:func:`toolkit.compress.model.batched_graph`); others (streaming models) run sample by
sample, each from a fresh state.  Both give identical results.

:func:`output_loss` is the loss proxy of the planner: per sample, the KL divergence of the
model's probabilities from the original model's (outputs made by SOFTMAX / LOGISTIC), or the
squared error of the real-valued outputs relative to the original outputs' mean square (other
outputs), summed over the graph's outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from toolkit.compress.model import batched_graph
from toolkit.errors import PlanError
from toolkit.model.ir import Graph, Op
from toolkit.oracle import Oracle

Values = dict[int, np.ndarray]

_PROBABILITY_OPS = frozenset({"SOFTMAX", "LOGISTIC"})
_EPS = 1.0 / 512  # probabilities below this are clipped (int8 softmax resolves 1/256)


class GraphRunner:
    """Runs op ranges of one graph on sample-major values (see the module docstring)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._batched: dict[int, Graph | None] = {}

    def _base(self, n: int) -> Graph | None:
        if n not in self._batched:
            self._batched[n] = batched_graph(self.graph, n) if n > 1 else None
        return self._batched[n]

    def run_ops(self, ops: Sequence[Op], values: Values) -> None:
        """Execute ``ops`` (graph order), adding every tensor they produce to ``values``."""
        if not ops:
            return
        g = self.graph
        produced = sorted({t for op in ops for t in op.outputs})
        needed = sorted({t for op in ops for t in op.inputs
                         if t >= 0 and t not in produced and not g.tensors[t].is_constant})
        missing = [t for t in needed if t not in values]
        if missing:
            raise PlanError(f"tensors {missing} are read before they are written")
        n = int(values[needed[0]].shape[0]) if needed else 1
        base = self._base(n)
        if base is not None:
            sub = replace(base, ops=tuple(ops), inputs=tuple(needed), outputs=tuple(produced))
            res = Oracle(sub).run([values[t].reshape(base.tensors[t].shape) for t in needed])
            for t, v in zip(produced, res.outputs, strict=True):
                values[t] = v.reshape((n, *g.tensors[t].shape))
            return
        sub = replace(g, ops=tuple(ops), inputs=tuple(needed), outputs=tuple(produced))
        oracle = Oracle(sub)
        outs: list[list[np.ndarray]] = [[] for _ in produced]
        for i in range(n):
            oracle.reset()
            res = oracle.run([values[t][i] for t in needed])
            for k, v in enumerate(res.outputs):
                outs[k].append(v)
        for t, vs in zip(produced, outs, strict=True):
            values[t] = np.stack(vs)

    def run_all(self, x: Sequence[np.ndarray]) -> Values:
        """Every activation of the original graph on inputs ``x`` (one array per graph input)."""
        values: Values = {}
        for idx, a in zip(self.graph.inputs, x, strict=True):
            t = self.graph.tensors[idx]
            values[idx] = np.asarray(a).reshape((-1, *t.shape))
        self.run_ops(self.graph.ops, values)
        return values

    def run_suffix(self, op_index: int, layer_output: np.ndarray, cached: Mapping[int, np.ndarray],
                   repeats: int = 1) -> list[np.ndarray]:
        """The graph outputs when op ``op_index``'s output is ``layer_output`` (``repeats``
        stacked variants of the cached samples, ``(repeats · n, *shape)``); every other tensor
        the later ops read comes from ``cached`` (tiled ``repeats`` times)."""
        g = self.graph
        op = g.ops[op_index]
        out_t = op.outputs[0]
        later = g.ops[op_index + 1:]
        values: Values = {out_t: layer_output.reshape((-1, *g.tensors[out_t].shape))}
        produced = {t for o in later for t in o.outputs}
        for o in later:
            for t in o.inputs:
                if t >= 0 and t != out_t and t not in produced and not g.tensors[t].is_constant:
                    values[t] = _tile(cached[t], repeats)
        self.run_ops(later, values)
        return [values[t] if t in values else _tile(cached[t], repeats) for t in g.outputs]


def _tile(a: np.ndarray, repeats: int) -> np.ndarray:
    return a if repeats == 1 else np.concatenate([a] * repeats, axis=0)


def layer_forward(graph: Graph, op_index: int, forward: object, x: np.ndarray) -> np.ndarray:
    """A compressed layer's ``forward`` (``(B, *in[1:]) → (B, *out[1:])``) on sample-major
    input values, returning sample-major output values."""
    op = graph.ops[op_index]
    tin, tout = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    n = x.shape[0]
    y = forward(np.asarray(x).reshape((-1, *tin.shape[1:])))  # type: ignore[operator]
    return np.asarray(y).reshape((n, *tout.shape))


# ---------------------------------------------------------------------------------------------
# Comparing outputs.


def _real(graph: Graph, t: int, v: np.ndarray) -> np.ndarray:
    q = graph.tensors[t].quant
    a = np.asarray(v, dtype=np.float64)
    if q is None or not np.issubdtype(np.asarray(v).dtype, np.integer):
        return a
    return (a - q.zero_point[0]) * q.scale[0]


def is_probability_output(graph: Graph, t: int) -> bool:
    return any(op.opcode in _PROBABILITY_OPS and t in op.outputs for op in graph.ops)


def output_loss(graph: Graph, reference: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> np.ndarray:
    """Per-sample loss of ``outputs`` against the original model's ``reference`` (both
    sample-major, one array per graph output); 0 where they are equal."""
    total: np.ndarray | None = None
    for t, ref, out in zip(graph.outputs, reference, outputs, strict=True):
        n = ref.shape[0]
        r = _real(graph, t, ref).reshape(n, -1)
        o = _real(graph, t, out).reshape(n, -1)
        if is_probability_output(graph, t):
            p = _normalise(r)
            q = _normalise(o)
            loss = np.sum(p * (np.log(p) - np.log(q)), axis=1)
        else:
            denom = max(float(np.mean(r * r)), 1e-12)
            loss = np.mean((o - r) ** 2, axis=1) / denom
        total = loss if total is None else total + loss
    assert total is not None
    return np.maximum(total, 0.0)


def _normalise(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, None)
    return p / p.sum(axis=1, keepdims=True)


def top1(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """Per-sample argmax of the first graph output."""
    first = np.asarray(outputs[0])
    return first.reshape(first.shape[0], -1).argmax(axis=1)
