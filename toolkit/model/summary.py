"""Per-layer facts of a graph: shapes, parameters, MACs and bytes, for ``boardfit inspect``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.model.ir import SUPPORTED_OPS, Graph, Op


@dataclass(frozen=True)
class LayerSummary:
    index: int
    opcode: str
    name: str
    input_shapes: tuple[tuple[int, ...], ...]
    output_shapes: tuple[tuple[int, ...], ...]
    dtype: str
    parameters: int
    macs: int
    weight_bytes: int
    activation_bytes: int
    supported: bool


@dataclass(frozen=True)
class GraphSummary:
    name: str
    layers: tuple[LayerSummary, ...]
    input_specs: tuple[tuple[str, tuple[int, ...], str], ...]
    output_specs: tuple[tuple[str, tuple[int, ...], str], ...]
    total_macs: int
    total_parameters: int
    total_weight_bytes: int
    largest_activation_bytes: int
    state_bytes: int
    unsupported: tuple[str, ...]


def op_macs(graph: Graph, op: Op) -> int:
    """Multiply-accumulates of one op (0 for ops that do no multiply-accumulate)."""
    t = graph.tensors
    if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        out = t[op.outputs[0]].shape
        filt = t[op.inputs[1]].shape
        per_output = filt[1] * filt[2]
        if op.opcode == "CONV_2D":
            per_output *= filt[3]
        return int(np.prod(out, dtype=np.int64)) * per_output
    if op.opcode == "FULLY_CONNECTED":
        w = t[op.inputs[1]].shape
        batch = t[op.outputs[0]].num_elements // w[0]
        return batch * w[0] * w[1]
    return 0


def _constant_inputs(graph: Graph, op: Op) -> list[int]:
    return [i for i in op.inputs if i >= 0 and graph.tensors[i].is_constant]


def summarize(graph: Graph) -> GraphSummary:
    layers: list[LayerSummary] = []
    seen_consts: set[int] = set()
    for op in graph.ops:
        consts = [i for i in _constant_inputs(graph, op) if i not in seen_consts]
        seen_consts.update(consts)
        main_dtype = graph.tensors[op.outputs[0]].dtype.value if op.outputs else ""
        if op.inputs and op.inputs[0] >= 0:
            main_dtype = graph.tensors[op.inputs[0]].dtype.value
        layers.append(
            LayerSummary(
                index=op.index,
                opcode=op.opcode,
                name=op.name,
                input_shapes=tuple(graph.tensors[i].shape for i in op.inputs if i >= 0),
                output_shapes=tuple(graph.tensors[i].shape for i in op.outputs),
                dtype=main_dtype,
                parameters=sum(graph.tensors[i].num_elements for i in consts),
                macs=op_macs(graph, op),
                weight_bytes=sum(graph.tensors[i].nbytes for i in consts),
                activation_bytes=sum(graph.tensors[i].nbytes for i in op.outputs),
                supported=op.opcode in SUPPORTED_OPS,
            )
        )
    acts = [graph.tensors[i].nbytes for op in graph.ops for i in op.outputs]
    acts += [t.nbytes for t in graph.input_tensors]
    return GraphSummary(
        name=graph.name,
        layers=tuple(layers),
        input_specs=tuple((t.name, t.shape, t.dtype.value) for t in graph.input_tensors),
        output_specs=tuple((t.name, t.shape, t.dtype.value) for t in graph.output_tensors),
        total_macs=sum(layer.macs for layer in layers),
        total_parameters=sum(layer.parameters for layer in layers),
        total_weight_bytes=sum(layer.weight_bytes for layer in layers),
        largest_activation_bytes=max(acts, default=0),
        state_bytes=sum(v.nbytes for v in graph.variables),
        unsupported=tuple(sorted({layer.opcode for layer in layers if not layer.supported})),
    )
