"""Execute a :class:`~toolkit.model.ir.Graph` with the numpy reference kernels.

The oracle is the ground truth of boardfit: for int8 graphs it is bit-exact with TFLite's
reference kernels, and every generated C kernel and compressed layer is checked against it.
Streaming models keep their variables across :meth:`Oracle.run` calls until :meth:`Oracle.reset`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from toolkit.errors import OracleError, UnsupportedOp
from toolkit.model.ir import Graph, Op, VariableOptions
from toolkit.oracle import kernels as _kernels  # noqa: F401  (fills the registry)
from toolkit.oracle.profile import Arithmetic
from toolkit.oracle.registry import KERNELS, OpContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OracleResult:
    """Outputs in graph order; ``tensors`` maps tensor index → value when intermediates were kept."""

    outputs: tuple[np.ndarray, ...]
    tensors: dict[int, np.ndarray] = field(default_factory=dict)


class Oracle:
    """Runs a graph op by op.  Not thread-safe: it owns the state of streaming models.

    ``profile`` selects whose integer arithmetic is reproduced where TFLite implementations
    differ (see :class:`~toolkit.oracle.profile.Arithmetic`); the default is TFLite Micro's, which
    is what the generated C computes.

    ``overrides`` maps op indices to replacement forwards for ops with one output: the function
    receives the value of the op's input 0 (in its tensor's shape) and returns the output value,
    whose dtype and shape are checked like a kernel's.  Compressed models run this way
    (:mod:`toolkit.compress.model`).
    """

    def __init__(self, graph: Graph, profile: Arithmetic = Arithmetic.TFLM,
                 overrides: Mapping[int, Callable[[np.ndarray], np.ndarray]] | None = None) -> None:
        self.graph = graph
        self.profile = Arithmetic(profile)
        for op in graph.ops:
            if op.opcode not in KERNELS and op.opcode not in ("READ_VARIABLE", "ASSIGN_VARIABLE"):
                raise UnsupportedOp(op.opcode, op.index, tuple(sorted(KERNELS)))
        self.overrides = dict(overrides or {})
        ops = {op.index: op for op in graph.ops}
        for i in self.overrides:
            if i not in ops or len(ops[i].outputs) != 1 or not ops[i].inputs or ops[i].inputs[0] < 0:
                raise OracleError(f"override for op {i}: {graph.name!r} has no op {i} with an input "
                                  "and exactly one output")
        self._state: list[np.ndarray] = []
        self.reset()

    def reset(self) -> None:
        """Restore every variable of a streaming model to its initial value."""
        self._state = [np.array(v.initial, copy=True) for v in self.graph.variables]

    def run(self, inputs: Sequence[np.ndarray], keep_intermediates: bool = False) -> OracleResult:
        values = self._bind_inputs(inputs)
        for op in self.graph.ops:
            self._execute(op, values)
        outputs = tuple(values[i] for i in self.graph.outputs)
        return OracleResult(outputs, dict(values) if keep_intermediates else {})

    def _bind_inputs(self, inputs: Sequence[np.ndarray]) -> dict[int, np.ndarray]:
        g = self.graph
        if len(inputs) != len(g.inputs):
            raise OracleError(f"model {g.name!r} takes {len(g.inputs)} inputs, got {len(inputs)}")
        values: dict[int, np.ndarray] = {}
        for t in g.tensors:
            if t.data is not None:
                values[t.index] = t.data
        for k, (idx, arr) in enumerate(zip(g.inputs, inputs, strict=False)):
            t = g.tensors[idx]
            a = np.asarray(arr)
            if a.dtype != t.dtype.numpy:
                raise OracleError(f"input {k} ({t.name}) must be {t.dtype.value}, got {a.dtype}")
            if a.size != t.num_elements:
                raise OracleError(f"input {k} ({t.name}) must have shape {t.shape}, got {a.shape}")
            values[idx] = a.reshape(t.shape)
        return values

    def _execute(self, op: Op, values: dict[int, np.ndarray]) -> None:
        if op.opcode in ("READ_VARIABLE", "ASSIGN_VARIABLE"):
            self._variable_op(op, values)
            return
        ctx = OpContext(
            self.graph, op, tuple(values.get(i) if i >= 0 else None for i in op.inputs), self.profile
        )
        override = self.overrides.get(op.index)
        try:
            results = [override(values[op.inputs[0]])] if override else KERNELS[op.opcode](ctx)
        except (ValueError, IndexError, KeyError) as exc:
            raise OracleError(f"{op.label}: {exc}") from exc
        for idx, res in zip(op.outputs, results, strict=False):
            t = self.graph.tensors[idx]
            if res.dtype != t.dtype.numpy or tuple(res.shape) != t.shape:
                raise OracleError(
                    f"{op.label}: kernel produced {res.dtype}{list(res.shape)}, "
                    f"tensor {t.name} is {t.dtype.value}{list(t.shape)}"
                )
            values[idx] = res

    def _variable_op(self, op: Op, values: dict[int, np.ndarray]) -> None:
        assert isinstance(op.options, VariableOptions)
        var = op.options.variable
        if op.opcode == "READ_VARIABLE":
            out = self.graph.tensors[op.outputs[0]]
            values[op.outputs[0]] = self._state[var].reshape(out.shape).copy()
        else:
            self._state[var] = np.array(values[op.inputs[0]], copy=True)
