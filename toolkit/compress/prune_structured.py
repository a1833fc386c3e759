"""Structured pruning: N:M semi-structured sparsity (method ``prune_structured``) and whole
output channels removed by a graph rewrite (:func:`prune_channels`).

**N:M** (e.g. 2:4, as sparse tensor cores use it).  Each output channel's weights (in the
kernels' walk order, :func:`toolkit.compress.common.weight_rows`) are cut into groups of ``m``
consecutive positions (the last group may be shorter); each group keeps its ``n`` largest
magnitudes.  Storage: the kept int8 weights (per-channel scales: the model's own unless
recovery moves them), ``rows · groups · n`` bytes, and each one's position inside its group in
``ceil(log2 m)`` bits (2:4 → 2 bits per kept weight) packed LSB-first in the same order; a group
shorter than ``n`` is padded with value-0 entries at index 0.  Plus int16 bias with a shift and
int32 multiplier/shift per channel (as the sparse tables).  Kernels
``bf_{fully_connected,conv2d,depthwise_conv2d}_nm_s8`` (``ref/sparse.c``).

Parameters: ``pattern`` ("N:M" with 1 ≤ N < M and M a power of two ≤ 16, default "2:4");
``recover`` (bool, default true): with calibration data, least-squares refit of the kept weights
(:func:`toolkit.compress.prune.refit_rows`), new per-channel scales, bias correction.

**Whole channels.**  Removing output channels of a layer changes two ops — the layer and the
op(s) reading its output — so it cannot be a drop-in replacement of one op like every
:class:`~toolkit.compress.base.Method`.  :func:`prune_channels` rewrites the int8 graph instead:
the layer's weights, bias and per-channel scales lose the channels with the smallest L1 norm,
its output tensor shrinks, channel-wise ops after it (RELU, RELU6, MAX/AVERAGE_POOL_2D,
DEPTHWISE_CONV_2D with multiplier 1, a flattening RESHAPE) shrink with it, and the consumer
(CONV_2D or FULLY_CONNECTED) loses the matching input channels / columns.  The result is a new,
smaller int8 :class:`~toolkit.model.ir.Graph` that computes exactly what the original graph
computes with those channels zeroed (weights and bias of the layer and of the depthwise ops in
between), which is what "removing a channel" means: its activation becomes the real value 0.
With calibration inputs, the consumer's bias absorbs the mean contribution the removed channels
had (empirical bias correction).  The compression pipeline then works on that graph
(``compress_graph(rewritten.graph, …)``): every other method applies to its smaller layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from firmware_gen.lower import ConstArray, FieldValue
from toolkit.compress.base import (
    COMPRESSIBLE_OPS,
    Calibration,
    CompressedLayer,
    LayerRef,
    Option,
    Setting,
    call_flash_bytes,
    check_setting,
)
from toolkit.compress.common import (
    Geometry,
    Requant,
    bias_correction,
    compressed_call,
    export_quant,
    geometry,
    geometry_fields,
    integer_forward,
    layer_bias_real,
    pack_bits,
    quant_fields,
    requant_for,
    rows_to_weights,
    unpack_bits,
    weight_rows,
)
from toolkit.compress.prune import CalibStats, raw_values, refit_rows
from toolkit.compress.registry import register
from toolkit.compress.sparse_layer import FAMILY, requant_fields, stored_requant
from toolkit.errors import CompressionError
from toolkit.model.ir import (
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DType,
    Graph,
    Op,
    QuantParams,
    ReshapeOptions,
    Tensor,
)
from toolkit.oracle import Oracle

_PARAMS: dict[str, tuple[type, ...]] = {"pattern": (str,), "recover": (bool,)}


# ---------------------------------------------------------------------------------------------
# N:M.


@dataclass(frozen=True)
class NMSetting:
    n: int
    m: int
    recover: bool

    @staticmethod
    def parse(setting: Setting) -> NMSetting:
        check_setting(setting, _PARAMS)
        pattern = str(setting.get("pattern", "2:4"))
        try:
            n, m = (int(v) for v in pattern.split(":"))
        except ValueError:
            raise ValueError(f"method {setting.method!r}: pattern must be \"N:M\", got {pattern!r}") from None
        if not (1 <= n < m <= 16 and m & (m - 1) == 0):
            raise ValueError(f"method {setting.method!r}: pattern {pattern!r} needs 1 <= N < M <= 16, "
                             "M a power of two")
        return NMSetting(n, m, bool(setting.get("recover", True)))

    @property
    def index_bits(self) -> int:
        return max(1, (self.m - 1).bit_length())


def nm_mask(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """The ``n`` largest |w| of every group of ``m`` consecutive positions of each row (ties:
    the lower position); a last group with fewer than ``n`` positions keeps them all."""
    rows, length = w.shape
    groups = -(-length // m)
    mag = np.full((rows, groups * m), -1.0)
    mag[:, :length] = np.abs(w)
    mag = mag.reshape(rows, groups, m)
    order = np.argsort(-mag, axis=2, kind="stable")[:, :, :n]
    mask = np.zeros((rows, groups, m), dtype=bool)
    np.put_along_axis(mask, order, True, axis=2)
    return mask.reshape(rows, groups * m)[:, :length]


def nm_entries(mask: np.ndarray, values: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, indices) of every group's ``n`` entries, in storage order; short groups are
    padded with (value 0, index 0)."""
    rows, length = mask.shape
    groups = -(-length // m)
    pad = groups * m - length
    mk = np.pad(mask, ((0, 0), (0, pad))).reshape(rows, groups, m)
    vs = np.pad(values, ((0, 0), (0, pad))).reshape(rows, groups, m)
    # Kept positions first (ascending), then the rest: the first n of this order are the entries.
    key = np.where(mk, 0, 1) * m + np.arange(m)
    order = np.argsort(key, axis=2, kind="stable")[:, :, :n]
    idx = np.where(np.take_along_axis(mk, order, axis=2), order, 0)
    val = np.where(np.take_along_axis(mk, order, axis=2), np.take_along_axis(vs, order, axis=2), 0)
    return val.reshape(-1), idx.reshape(-1)


def nm_dense(values: np.ndarray, indices: np.ndarray, rows: int, length: int, n: int, m: int) -> np.ndarray:
    """The integer rows the kernel multiplies with (inverse of :func:`nm_entries`)."""
    groups = -(-length // m)
    dense = np.zeros((rows, groups * m), dtype=np.int64)
    r = np.repeat(np.arange(rows), groups * n)
    g = np.tile(np.repeat(np.arange(groups), n), rows)
    np.add.at(dense, (r, g * m + indices), values)
    return dense[:, :length]


class PruneStructuredMethod:
    name = "prune_structured"

    def applicable(self, layer: LayerRef) -> bool:
        return (layer.op.opcode in COMPRESSIBLE_OPS and layer.weight.dtype is DType.INT8
                and layer.input.dtype is DType.INT8 and layer.weight.data is not None)

    def settings(self, layer: LayerRef) -> list[Setting]:
        return [Setting.of("prune_structured", pattern=p) for p in ("2:4", "1:4", "2:8")]

    def option(self, layer: LayerRef, setting: Setting) -> Option:
        return self.apply(layer, setting, None).option

    def apply(self, layer: LayerRef, setting: Setting, calib: Calibration | None) -> CompressedLayer:
        ns = NMSetting.parse(setting)
        g = geometry(layer)
        target = weight_rows(layer.real_weights(), g).astype(np.float64)
        mask = nm_mask(target, ns.n, ns.m)
        kept = np.where(mask, target, 0.0)
        bias = layer_bias_real(layer, g)
        if calib is not None and ns.recover:
            stats = CalibStats.of(g, calib)
            vals = raw_values(refit_rows(g, stats, target, mask), None)
            bias = bias + bias_correction(g, stats.cols, target, vals.real_rows(mask))
        else:
            assert layer.weight.quant is not None
            own = np.asarray(layer.weight.quant.scale, dtype=np.float64)
            vals = raw_values(kept, np.broadcast_to(own, (g.channels,)) if layer.float_weights is None
                              else None)
        ints = np.where(mask, (vals.codes ^ 0x80) - 0x80, 0)
        return self._layer(layer, g, setting, ns, mask, ints, requant_for(g, vals.scales, bias))

    def _layer(self, layer: LayerRef, g: Geometry, setting: Setting, ns: NMSetting, mask: np.ndarray,
               ints: np.ndarray, req: Requant) -> CompressedLayer:
        values, indices = nm_entries(mask, ints, ns.n, ns.m)
        packed = pack_bits(indices, ns.index_bits)
        params: list[tuple[str, FieldValue]] = [
            *geometry_fields(g), *quant_fields(g), ("n", ns.n), ("m", ns.m), ("index_bits", ns.index_bits),
            ("values", ConstArray("int8_t", tuple(int(v) for v in values))),
            ("indices", ConstArray("uint8_t", tuple(int(v) for v in packed))),
            *requant_fields(req, True)]
        call = compressed_call(layer, g, "nm", FAMILY, params)
        patch = 0 if g.kind == "fc" else int(g.w_shape[1] * g.w_shape[2] * g.in_shape[3])
        if g.kind != "fc":
            call = replace(call, takes_scratch=True, scratch_bytes=patch)
        positions = (int(np.prod(g.in_shape)) // g.depth if g.kind == "fc"
                     else g.in_shape[0] * g.positions)
        option = Option(layer.op.index, setting, call_flash_bytes(call, layer.graph), patch,
                        positions * values.size, call.symbol)
        stored = unpack_bits(packed, ns.index_bits, values.size, signed=False)
        weights = rows_to_weights(nm_dense(values, stored, g.channels, g.row_length, ns.n, ns.m), g)
        sreq = stored_requant(req, True, g.channels)

        def forward(x: np.ndarray) -> np.ndarray:
            return integer_forward(g, weights, sreq, x)

        return CompressedLayer(option, call, forward, export_weights=weights.astype(np.int8),
                               export_quant=export_quant(g, sreq), export_bias=sreq.bias.astype(np.int32))


METHOD = register(PruneStructuredMethod())


# ---------------------------------------------------------------------------------------------
# Whole channels: a graph rewrite.

_PASS_THROUGH = ("RELU", "RELU6", "MAX_POOL_2D", "AVERAGE_POOL_2D")


@dataclass(frozen=True, eq=False)
class ChannelPrune:
    """A rewritten graph and what changed: ``kept`` output channels of the pruned op (old
    numbering, ascending), ``removed`` the others, ``changed_ops`` every op whose operands
    changed (the pruned op, pass-through ops, the consumer)."""

    graph: Graph
    op_index: int
    kept: tuple[int, ...]
    removed: tuple[int, ...]
    changed_ops: tuple[int, ...]


def l1_order(graph: Graph, op_index: int) -> np.ndarray:
    """Output channels of a CONV_2D / FULLY_CONNECTED by ascending L1 norm of their real weights."""
    layer = LayerRef(graph, graph.ops[op_index])
    g = geometry(layer)
    norms = np.abs(weight_rows(layer.real_weights(), g)).sum(axis=1)
    return np.argsort(norms, kind="stable")


def prune_channels(graph: Graph, op_index: int, remove: int | Sequence[int],
                   calib_x: np.ndarray | None = None) -> ChannelPrune:
    """Remove ``remove`` output channels (a count: the smallest L1 norms; or explicit indices)
    of op ``op_index`` (module docstring).  ``calib_x``: optional calibration samples of the
    graph input (sample-major) for the consumer's bias correction."""
    op = graph.ops[op_index]
    if op.opcode not in ("CONV_2D", "FULLY_CONNECTED"):
        raise CompressionError(f"{op.label}: whole-channel pruning needs a CONV_2D or FULLY_CONNECTED")
    if op.opcode == "CONV_2D" and _groups(graph, op) != 1:
        raise CompressionError(f"{op.label}: grouped convolutions are not channel-pruned")
    channels = graph.tensors[op.inputs[1]].shape[0]
    removed = (tuple(sorted(int(c) for c in l1_order(graph, op_index)[:remove]))
               if isinstance(remove, int) else tuple(sorted({int(c) for c in remove})))
    if not removed or len(removed) >= channels or min(removed) < 0 or max(removed) >= channels:
        raise CompressionError(f"{op.label}: cannot remove channels {list(removed)} of {channels}")
    kept = tuple(c for c in range(channels) if c not in removed)
    rw = _Rewriter(graph)
    rw.slice_output_channels(op, kept)
    tensor, changed, chain = op.outputs[0], [op.index], kept
    while True:
        nxt = rw.single_consumer(tensor, op.label)
        changed.append(nxt.index)
        if nxt.opcode in _PASS_THROUGH:
            rw.shrink_last(nxt.outputs[0], len(chain))
            tensor = nxt.outputs[0]
        elif nxt.opcode == "DEPTHWISE_CONV_2D":
            rw.slice_depthwise(nxt, chain)
            tensor = nxt.outputs[0]
        elif nxt.opcode == "RESHAPE":
            chain = rw.flatten(nxt, chain)
            tensor = nxt.outputs[0]
        elif nxt.opcode in ("CONV_2D", "FULLY_CONNECTED"):
            rw.slice_inputs(nxt, chain, calib_x, graph, removed_inputs(graph, nxt, chain))
            break
        else:
            raise CompressionError(f"{op.label}: its channels feed {nxt.label}, which channel pruning "
                                   f"cannot shrink (supported: {', '.join(_PASS_THROUGH)}, "
                                   "DEPTHWISE_CONV_2D, RESHAPE, CONV_2D, FULLY_CONNECTED)")
    return ChannelPrune(rw.build(), op_index, kept, removed, tuple(changed))


def removed_inputs(graph: Graph, consumer: Op, kept: Sequence[int]) -> list[int]:
    """The consumer's input channels (CONV_2D) or columns (FULLY_CONNECTED) not in ``kept``."""
    w = graph.tensors[consumer.inputs[1]]
    width = w.shape[3] if consumer.opcode == "CONV_2D" else w.shape[1]
    keep = set(kept)
    return [i for i in range(width) if i not in keep]


def _groups(graph: Graph, op: Op) -> int:
    return graph.tensors[op.inputs[0]].shape[3] // graph.tensors[op.inputs[1]].shape[3]


def _slice_quant(q: QuantParams | None, keep: Sequence[int], axis: int) -> QuantParams | None:
    if q is None or not q.per_channel:
        return q
    return QuantParams(tuple(q.scale[i] for i in keep), tuple(q.zero_point[i] for i in keep), axis)


class _Rewriter:
    """Collects tensor and op replacements of one channel-pruning rewrite."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.tensors: list[Tensor] = list(graph.tensors)
        self.ops: list[Op] = list(graph.ops)

    def single_consumer(self, tensor: int, label: str) -> Op:
        users = [op for op in self.graph.ops if tensor in op.inputs]
        if tensor in self.graph.outputs or len(users) != 1:
            raise CompressionError(f"{label}: its output must feed exactly one op and not be a graph "
                                   f"output to be channel-pruned ({len(users)} readers)")
        return users[0]

    def set_tensor(self, index: int, **changes: object) -> None:
        self.tensors[index] = replace(self.tensors[index], **changes)  # type: ignore[arg-type]

    def shrink_last(self, index: int, size: int) -> None:
        t = self.tensors[index]
        self.set_tensor(index, shape=(*t.shape[:-1], size))

    def slice_output_channels(self, op: Op, kept: Sequence[int]) -> None:
        w = self.tensors[op.inputs[1]]
        assert w.data is not None
        self.set_tensor(w.index, data=np.take(w.data, kept, axis=0), shape=(len(kept), *w.shape[1:]),
                        quant=_slice_quant(w.quant, kept, 0))
        self._slice_bias(op, kept)
        self.shrink_last(op.outputs[0], len(kept))

    def _slice_bias(self, op: Op, kept: Sequence[int]) -> None:
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b = self.tensors[op.inputs[2]]
            assert b.data is not None
            self.set_tensor(b.index, data=np.take(b.data, kept, axis=0), shape=(len(kept),),
                            quant=_slice_quant(b.quant, kept, 0))

    def slice_depthwise(self, op: Op, kept: Sequence[int]) -> None:
        if not isinstance(op.options, DepthwiseConv2DOptions) or op.options.depth_multiplier != 1:
            raise CompressionError(f"{op.label}: only depth multiplier 1 passes channel pruning on")
        w = self.tensors[op.inputs[1]]
        assert w.data is not None
        self.set_tensor(w.index, data=np.take(w.data, kept, axis=3), shape=(*w.shape[:3], len(kept)),
                        quant=_slice_quant(w.quant, kept, 3))
        self._slice_bias(op, kept)
        self.shrink_last(op.outputs[0], len(kept))

    def flatten(self, op: Op, kept: Sequence[int]) -> tuple[int, ...]:
        """A RESHAPE of (1, H, W, C) to (1, H·W·C): the kept flat positions, new shape set."""
        src = self.graph.tensors[op.inputs[0]]
        out = self.graph.tensors[op.outputs[0]]
        if len(src.shape) != 4 or out.shape != (src.shape[0], int(np.prod(src.shape[1:]))):
            raise CompressionError(f"{op.label}: only a flattening RESHAPE (N,H,W,C)→(N,H·W·C) passes "
                                   "channel pruning on")
        n, h, w, c = src.shape
        spatial = np.arange(h * w)[:, None] * c
        flat = tuple(int(v) for v in (spatial + np.asarray(kept)[None, :]).reshape(-1))
        new_shape = (n, h * w * len(kept))
        self.shrink_last(src.index, len(kept))
        self.set_tensor(out.index, shape=new_shape)
        if len(op.inputs) > 1 and op.inputs[1] >= 0 and self.tensors[op.inputs[1]].data is not None:
            st = self.tensors[op.inputs[1]]
            self.set_tensor(st.index, data=np.asarray(new_shape, dtype=st.dtype.numpy))
        self.ops[op.index] = replace(op, options=ReshapeOptions(new_shape))
        return flat

    def slice_inputs(self, op: Op, kept: Sequence[int], calib_x: np.ndarray | None, original: Graph,
                     removed: Sequence[int]) -> None:
        grouped = op.opcode == "CONV_2D" and (not isinstance(op.options, Conv2DOptions)
                                              or _groups(original, op) != 1)
        if grouped:
            raise CompressionError(f"{op.label}: grouped convolutions cannot lose input channels")
        w = self.tensors[op.inputs[1]]
        assert w.data is not None
        axis = 3 if op.opcode == "CONV_2D" else 1
        if calib_x is not None:
            self._correct_bias(op, removed, axis, calib_x, original)
        self.set_tensor(w.index, data=np.take(w.data, kept, axis=axis),
                        shape=tuple(len(kept) if i == axis else s for i, s in enumerate(w.shape)))
        if op.opcode == "CONV_2D":
            self.shrink_last(op.inputs[0], len(kept))

    def _correct_bias(self, op: Op, removed: Sequence[int], axis: int, calib_x: np.ndarray,
                      original: Graph) -> None:
        """bias += Σ over removed inputs of w · mean(x − zp): the mean they contributed."""
        x_t = original.tensors[op.inputs[0]]
        assert x_t.quant is not None
        oracle = Oracle(original)
        shape = original.tensors[original.inputs[0]].shape
        acts = np.stack([oracle.run([np.asarray(s).reshape(shape)], keep_intermediates=True)
                         .tensors[x_t.index] for s in calib_x])
        mean = (acts.astype(np.float64) - x_t.quant.zero_point[0]).reshape(-1, x_t.shape[-1]).mean(axis=0)
        w = original.tensors[op.inputs[1]].data
        assert w is not None
        wr = w.reshape(w.shape[0], -1, w.shape[axis]).astype(np.float64)  # O, taps, inputs
        delta = (wr[:, :, list(removed)].sum(axis=1) @ mean[list(removed)])
        if len(op.inputs) > 2 and op.inputs[2] >= 0:
            b = self.tensors[op.inputs[2]]
            assert b.data is not None
            new = np.clip(np.rint(b.data.astype(np.float64) + delta), -(2**31), 2**31 - 1).astype(np.int32)
            self.set_tensor(b.index, data=new)

    def build(self) -> Graph:
        return replace(self.graph, tensors=tuple(self.tensors), ops=tuple(self.ops))
