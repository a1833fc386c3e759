"""A layer stored as a packed sparse table: its kernel call, exact costs and numpy forward.

The integer weights of a layer (int8 codebook values under one layer scale, or raw int8 values
under per-channel scales) sit in a :class:`~toolkit.compress.sparse_format.SparseTable`, plain or
Huffman-coded (:mod:`toolkit.compress.huffman`).  :func:`sparse_layer` turns that into the
:class:`~toolkit.compress.base.CompressedLayer` the pipeline runs:

* the kernel ``bf_<op>_sparse_s8`` (plain), ``bf_<op>_sparse_huff_s8`` (Huffman, decoded
  per block of rows into scratch on every call) or ``bf_<op>_sparse_hboot_s8`` (Huffman,
  decoded once into a persistent buffer) — contracts in ``kernels/include/bf_sparse.h``;
* its params: the shared geometry and offset fields (:func:`~toolkit.compress.common.
  geometry_fields`, :func:`~toolkit.compress.common.quant_fields`), ``layout``
  (``bf_sparse_layout``: index/value/count bits and the int8 codebook, NULL in raw mode), the
  stream (or ``huffman``: code lengths, stream, block rows, largest block, whole table), and
  ``per_channel``, ``bias_shift`` with int16 ``bias`` [channels] (:func:`bias16`: the int32 bias
  in 16 bits and a shift, exact whenever it fits), int32 ``multiplier`` and ``shift``
  [channels, or 1 when the layer shares one scale];
* exact costs: flash = every ConstArray (8-byte aligned); RAM = the kernel's scratch (patch of
  a convolution, Huffman decoder tables and block); boot mode: ``persistent_ram_bytes`` = the
  boot kernel's whole buffer (tag + decoder tables + decoded table [+ patch]) and ram 0;
* a forward that decodes the *stored bytes* (as the kernel does) and runs the exact integer
  arithmetic of :func:`~toolkit.compress.common.integer_forward`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from firmware_gen.lower import ConstArray, FieldValue, KernelCall, Struct
from toolkit.compress.base import (
    CompressedLayer,
    LayerRef,
    Option,
    Setting,
    call_flash_bytes,
)
from toolkit.compress.common import (
    Geometry,
    Requant,
    compressed_call,
    export_quant,
    geometry_fields,
    integer_forward,
    quant_fields,
    rows_to_weights,
)
from toolkit.compress.huffman import HuffmanTable, decode_table, decoder_bytes, encode_table
from toolkit.compress.sparse_format import SparseTable, to_dense, unpack

FAMILY = "sparse"
MODES = ("plain", "layer", "boot")
BOOT_TAG_BYTES = 8  # BF_HBOOT_TAG_BYTES in ref/sparse.c
BIAS_SHIFT_MAX = 15


@dataclass(frozen=True, eq=False)
class SparseWeights:
    """The stored form of one layer's weights and requantization.

    ``codebook``: int8 values (``2**value_bits``) or None for raw int8 codes.  ``requant``:
    per-channel arrays; with ``per_channel`` False every channel shares entry 0 (one scale).
    """

    table: SparseTable
    codebook: np.ndarray | None = field(repr=False)
    requant: Requant = field(repr=False)
    per_channel: bool
    mode: str = "plain"
    block_rows: int = 16
    huffman: HuffmanTable | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"sparse mode must be one of {MODES}, got {self.mode!r}")
        if self.mode != "plain" and self.huffman is None:
            object.__setattr__(self, "huffman", encode_table(self.table))

    @property
    def kernel_format(self) -> str:
        return {"plain": "sparse", "layer": "sparse_huff", "boot": "sparse_hboot"}[self.mode]

    def stored_table(self) -> SparseTable:
        """The entries as the kernel reads them back from the stored bytes."""
        t = self.table
        if self.huffman is not None:
            return decode_table(self.huffman)
        return unpack(t.pack(), t.rows, t.row_length, t.index_bits, t.value_bits, t.count_bits)

    def integer_rows(self) -> np.ndarray:
        return to_dense(self.stored_table(), self.codebook)

    def largest_block_bytes(self) -> int:
        return max(self.table.block_stream_bytes(self.block_rows))


def _patch_bytes(g: Geometry) -> int:
    if g.kind == "fc":
        return 0
    return int(g.w_shape[1] * g.w_shape[2] * g.in_shape[3])


def scratch_bytes(g: Geometry, sw: SparseWeights) -> int:
    """What the kernel's ``…_scratch_bytes()`` returns."""
    t = sw.table
    patch = _patch_bytes(g)
    if sw.mode == "plain":
        return patch
    if sw.mode == "layer":
        return decoder_bytes(t.index_bits, t.value_bits, lookup=True) + sw.largest_block_bytes() + patch
    return BOOT_TAG_BYTES + decoder_bytes(t.index_bits, t.value_bits) + t.stream_bytes + patch


def _layout(sw: SparseWeights) -> Struct:
    t = sw.table
    cb: FieldValue = None if sw.codebook is None else ConstArray(
        "int8_t", tuple(int(v) for v in sw.codebook))
    return Struct("bf_sparse_layout", (("index_bits", t.index_bits), ("value_bits", t.value_bits),
                                       ("count_bits", t.count_bits), ("codebook", cb)))


def _storage(sw: SparseWeights) -> list[tuple[str, FieldValue]]:
    if sw.mode == "plain":
        return [("stream", ConstArray("uint8_t", tuple(sw.table.pack())))]
    h = sw.huffman
    assert h is not None
    fields: tuple[tuple[str, FieldValue], ...] = (
        ("code_lengths", ConstArray("uint8_t", tuple(h.lengths_bytes))),
        ("stream", ConstArray("uint8_t", tuple(h.stream))),
        ("stream_bytes", len(h.stream)),
        ("block_rows", sw.block_rows),
        ("block_bytes", sw.largest_block_bytes()),
        ("table_bytes", sw.table.stream_bytes))
    return [("huffman", Struct("bf_sparse_huffman", fields))]


def bias16(bias: np.ndarray) -> tuple[np.ndarray, int]:
    """int32 biases as int16 values and one left shift (0…15): the smallest shift whose rounded
    (half away from zero) values fit int16; the stored bias is ``value · 2^shift``."""
    b = np.asarray(bias, dtype=np.int64)
    for shift in range(BIAS_SHIFT_MAX + 1):
        q = np.sign(b) * ((np.abs(b) + ((1 << shift) >> 1)) >> shift)
        if q.size == 0 or np.abs(q).max() <= 32767:
            return q, shift
    return np.clip(q, -32767, 32767), BIAS_SHIFT_MAX


def requant_fields(req: Requant, per_channel: bool) -> list[tuple[str, FieldValue]]:
    """``per_channel``, ``bias_shift``, int16 ``bias`` and int32 ``multiplier``/``shift`` (one
    entry per channel, or the first only when the channels share one scale)."""
    n = None if per_channel else 1
    b16, shift = bias16(req.bias)
    return [("per_channel", int(per_channel)), ("bias_shift", shift),
            ("bias", ConstArray("int16_t", tuple(int(v) for v in b16))),
            ("multiplier", ConstArray("int32_t", tuple(int(v) for v in req.multiplier[:n]))),
            ("shift", ConstArray("int32_t", tuple(int(v) for v in req.shift[:n])))]


def stored_requant(req: Requant, per_channel: bool, channels: int) -> Requant:
    """What the kernel applies, per channel: the int16-stored bias, the shared scale repeated."""
    b16, shift = bias16(req.bias)
    out = replace(req, bias=b16 << shift)
    if not per_channel:
        out = replace(out, multiplier=np.repeat(req.multiplier[:1], channels),
                      shift=np.repeat(req.shift[:1], channels))
    return out


def sparse_call(layer: LayerRef, g: Geometry, sw: SparseWeights) -> KernelCall:
    params = [*geometry_fields(g), *quant_fields(g), ("layout", _layout(sw)), *_storage(sw),
              *requant_fields(sw.requant, sw.per_channel)]
    call = compressed_call(layer, g, sw.kernel_format, FAMILY, params)
    if g.kind == "fc" and sw.mode == "plain":
        return call
    return replace(call, takes_scratch=True, scratch_bytes=scratch_bytes(g, sw))


def executed_macs(g: Geometry, sw: SparseWeights) -> int:
    """Multiply-accumulates the kernel executes: every entry (fillers too) per output position."""
    per_row_pass = sw.table.entries
    if g.kind == "fc":
        return int(np.prod(g.in_shape)) // g.depth * per_row_pass
    return g.in_shape[0] * g.positions * per_row_pass


def sparse_layer(layer: LayerRef, g: Geometry, setting: Setting, sw: SparseWeights) -> CompressedLayer:
    call = sparse_call(layer, g, sw)
    scratch = call.scratch_bytes
    boot = sw.mode == "boot"
    option = Option(layer.op.index, setting, call_flash_bytes(call, layer.graph),
                    0 if boot else scratch, executed_macs(g, sw), call.symbol,
                    persistent_ram_bytes=scratch if boot else 0)
    weights = rows_to_weights(sw.integer_rows(), g)
    req = stored_requant(sw.requant, sw.per_channel, g.channels)

    def forward(x: np.ndarray) -> np.ndarray:
        return integer_forward(g, weights, req, x)

    return CompressedLayer(option, call, forward, export_weights=weights.astype(np.int8),
                           export_quant=export_quant(g, req), export_bias=req.bias.astype(np.int32))
