"""The registry of numpy reference kernels, one per TFLite builtin operator.

A kernel is a function ``(ctx: OpContext) -> list[np.ndarray]`` returning one array per op
output, with exactly the output tensor's dtype and shape.  Modules register kernels with
``@register("OPCODE", ...)``; ``toolkit.oracle.kernels`` imports every kernel module so that the
registry is complete once ``toolkit.oracle`` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from toolkit.model.ir import Graph, Op, OpOptions, Tensor
from toolkit.oracle.profile import Arithmetic


@dataclass(frozen=True)
class OpContext:
    """What a kernel sees: the op, its tensors, the input values (``None`` for absent) and the
    arithmetic profile to reproduce (kernels consult it only where TFLite implementations differ)."""

    graph: Graph
    op: Op
    values: tuple[np.ndarray | None, ...]
    profile: Arithmetic = Arithmetic.TFLM

    @property
    def options(self) -> OpOptions:
        return self.op.options

    def input_tensor(self, i: int) -> Tensor | None:
        if i >= len(self.op.inputs) or self.op.inputs[i] < 0:
            return None
        return self.graph.tensors[self.op.inputs[i]]

    def output_tensor(self, i: int = 0) -> Tensor:
        return self.graph.tensors[self.op.outputs[i]]

    def value(self, i: int) -> np.ndarray:
        v = self.values[i] if i < len(self.values) else None
        if v is None:
            raise ValueError(f"{self.op.label}: input {i} is absent")
        return v

    def optional_value(self, i: int) -> np.ndarray | None:
        return self.values[i] if i < len(self.values) else None


Kernel = Callable[[OpContext], list[np.ndarray]]

KERNELS: dict[str, Kernel] = {}


def register(*opcodes: str) -> Callable[[Kernel], Kernel]:
    def deco(fn: Kernel) -> Kernel:
        for name in opcodes:
            if name in KERNELS:
                raise RuntimeError(f"two oracle kernels registered for {name}")
            KERNELS[name] = fn
        return fn

    return deco
