"""The packed sparse table of Deep Compression (Han et al. 2016), byte for byte.

A weight matrix is seen as ``rows`` rows of ``row_length`` positions: a FULLY_CONNECTED layer's
rows of ``W[units][depth]``, a CONV_2D layer's output channels with their ``KH·KW·C_in/groups``
weights flattened in OHWI order (``ky``, ``kx``, ``ci``), a DEPTHWISE_CONV_2D layer's channels
with their ``KH·KW`` taps (``ky``, ``kx``).  Each row is stored as a stream of *entries*; an entry
is a pair (gap, code):

* ``gap`` (``k = index_bits`` bits, 2…8): the number of zero positions skipped since the
  previous entry of the row (the first entry counts from the row start), so the entry sits at
  ``position = previous_position + 1 + gap`` with ``previous_position = -1`` at the row start;
* ``code`` (``b = value_bits`` bits, 2…8): an index into the layer's codebook of ``2**b`` shared
  int16 values, or, in *raw* mode (``b = 8`` and no codebook), the int8 weight itself in two's
  complement.

A run of ``z`` zeros longer than ``2**k - 1`` cannot be skipped by one gap: a *filler* entry
(``gap = 2**k - 1``, ``code = zero_code``, a code whose value is exactly 0) is inserted at every
``2**k``-th position of the run, so a run of ``z`` zeros costs ``z >> k`` fillers.  Zeros after a
row's last non-zero cost nothing.

Bit layout (what the C kernels in ``firmware_gen/kernels/ref/sparse.c`` read).  The table is one
byte stream, bits numbered LSB-first (bit ``i`` is bit ``i % 8`` of byte ``i // 8``); fields are
written LSB-first at increasing bit positions.  Rows follow each other with no alignment; a row is

    count   (count_bits bits)  the number of entries of the row, fillers included
    entry × count               (k + b) bits each: the gap in the low k bits, the code above it

so the gap and the code of an entry are *interleaved* in one (k+b)-bit field (≤ 16 bits): the
kernel keeps one bit buffer and fetches one field per entry — one refill test, one shift and two
masks — instead of driving two readers over two streams.  The per-row count lets a row be
skipped without decoding its entries (its size is ``count_bits + count·(k+b)`` bits) and ends
the row without a sentinel.  The last byte is zero-padded.  ``count_bits`` is the bit length of
the largest count of the layer (at least 1).  The stream's length in bytes is
``ceil((rows·count_bits + entries·(k+b)) / 8)`` — :func:`plain_stream_bytes`.

Everything here is pure numpy and exact; the Huffman-coded variant of the same entries is in
:mod:`toolkit.compress.huffman`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

INDEX_BITS = range(2, 9)  # k
VALUE_BITS = range(2, 9)  # b
MAX_COUNT_BITS = 24  # the C bit reader refills bytewise into 32 bits: fields of at most 24 bits


# ---------------------------------------------------------------------------------------------
# Bit fields.


def pack_fields(values: np.ndarray, widths: np.ndarray, msb_first: np.ndarray | None = None) -> bytes:
    """Concatenate bit fields into an LSB-first byte stream (last byte zero-padded).

    ``values[i]`` is written in ``widths[i]`` bits; LSB-first unless ``msb_first[i]`` (Huffman
    codes are written from their most significant bit, as DEFLATE does).
    """
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    w = np.asarray(widths, dtype=np.int64).reshape(-1)
    total = int(w.sum())
    if total == 0:
        return b""
    field_of_bit = np.repeat(np.arange(v.size), w)
    starts = np.cumsum(w) - w
    j = np.arange(total, dtype=np.int64) - np.repeat(starts, w)
    shift = j
    if msb_first is not None:
        m = np.repeat(np.asarray(msb_first, dtype=bool).reshape(-1), w)
        shift = np.where(m, np.repeat(w, w) - 1 - j, j)
    bits = ((v[field_of_bit] >> shift) & 1).astype(np.uint8)
    return np.packbits(bits, bitorder="little").tobytes()


def unpack_bits(data: bytes | np.ndarray) -> np.ndarray:
    """The stream as one uint8 array of bits, stream order."""
    return np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8), bitorder="little")


def read_field(bits: np.ndarray, start: int, width: int) -> int:
    """The LSB-first field of ``width`` bits at bit ``start``."""
    chunk = bits[start : start + width].astype(np.int64)
    if chunk.size != width:
        raise ValueError(f"stream ends inside a {width}-bit field at bit {start}")
    return int((chunk << np.arange(width, dtype=np.int64)).sum())


def read_fields(bits: np.ndarray, start: int, width: int, count: int) -> np.ndarray:
    """``count`` consecutive LSB-first fields of ``width`` bits from bit ``start``."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    chunk = bits[start : start + width * count]
    if chunk.size != width * count:
        raise ValueError(f"stream ends inside field run at bit {start}")
    return (chunk.reshape(count, width).astype(np.int64) << np.arange(width, dtype=np.int64)).sum(axis=1)


# ---------------------------------------------------------------------------------------------
# The table.


@dataclass(frozen=True, eq=False)
class SparseTable:
    """Entries of every row (fillers included) and the layout parameters.

    ``counts[r]`` entries belong to row ``r``; ``gaps``/``codes`` hold all entries, row after row.
    """

    rows: int
    row_length: int
    index_bits: int
    value_bits: int
    count_bits: int
    counts: np.ndarray = field(repr=False)
    gaps: np.ndarray = field(repr=False)
    codes: np.ndarray = field(repr=False)

    @property
    def entries(self) -> int:
        return int(self.gaps.size)

    @property
    def entry_bits(self) -> int:
        return self.index_bits + self.value_bits

    @property
    def stream_bytes(self) -> int:
        return plain_stream_bytes(self.counts, self.index_bits, self.value_bits, self.count_bits)

    def positions(self) -> np.ndarray:
        """Position within its row of every entry."""
        if self.entries == 0:
            return np.zeros(0, dtype=np.int64)
        row_start = np.repeat(np.cumsum(self.counts) - self.counts, self.counts)
        steps = self.gaps.astype(np.int64) + 1
        csum = np.cumsum(steps)
        # Positions restart at -1 for every row: subtract the running sum up to the row start.
        base = np.concatenate([[0], csum])[row_start]
        return csum - base - 1

    def row_of_entry(self) -> np.ndarray:
        return np.repeat(np.arange(self.rows), self.counts)

    def pack(self) -> bytes:
        """The plain stream (module docstring)."""
        widths, values = self._fields()
        return pack_fields(values, widths)

    def _fields(self) -> tuple[np.ndarray, np.ndarray]:
        # One field per row header and per entry, in stream order.
        n = self.rows + self.entries
        widths = np.empty(n, dtype=np.int64)
        values = np.empty(n, dtype=np.int64)
        header_at = np.cumsum(self.counts + 1) - (self.counts + 1)
        is_header = np.zeros(n, dtype=bool)
        is_header[header_at] = True
        widths[is_header] = self.count_bits
        values[is_header] = self.counts
        widths[~is_header] = self.entry_bits
        values[~is_header] = self.gaps.astype(np.int64) | (self.codes.astype(np.int64) << self.index_bits)
        return widths, values

    def block_stream_bytes(self, block_rows: int) -> list[int]:
        """Plain bytes of each block of ``block_rows`` consecutive rows, each packed from bit 0."""
        out = []
        for r0 in range(0, self.rows, block_rows):
            c = self.counts[r0 : r0 + block_rows]
            out.append(plain_stream_bytes(c, self.index_bits, self.value_bits, self.count_bits))
        return out


def plain_stream_bytes(counts: np.ndarray, index_bits: int, value_bits: int, count_bits: int) -> int:
    """Exact bytes of the plain stream of rows with these entry counts."""
    bits = len(counts) * count_bits + int(np.sum(counts)) * (index_bits + value_bits)
    return (bits + 7) // 8


def count_bits_for(counts: np.ndarray) -> int:
    """Bits of the row header: the bit length of the largest count, at least 1."""
    top = int(np.max(counts)) if len(counts) else 0
    bits = max(1, top.bit_length())
    if bits > MAX_COUNT_BITS:
        raise ValueError(f"a row of {top} entries needs more than {MAX_COUNT_BITS} count bits")
    return bits


def filler_counts(mask: np.ndarray, index_bits: int) -> np.ndarray:
    """Fillers each row needs: the sum over its zero runs before a non-zero of ``run >> k``."""
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros(mask.shape[0], dtype=np.int64)
    r, p = np.nonzero(mask)
    if r.size == 0:
        return out
    prev = np.empty_like(p)
    prev[1:] = p[:-1]
    first = np.ones(r.size, dtype=bool)
    first[1:] = r[1:] != r[:-1]
    prev[first] = -1
    runs = p - prev - 1
    np.add.at(out, r, runs >> index_bits)
    return out


def entry_counts(mask: np.ndarray, index_bits: int) -> np.ndarray:
    """Entries per row (non-zeros plus fillers) for this gap width."""
    return np.asarray(mask, dtype=bool).sum(axis=1).astype(np.int64) + filler_counts(mask, index_bits)


def stream_bytes_for(mask: np.ndarray, index_bits: int, value_bits: int) -> int:
    """Exact plain-stream bytes of a sparsity pattern, without building the table."""
    counts = entry_counts(mask, index_bits)
    return plain_stream_bytes(counts, index_bits, value_bits, count_bits_for(counts))


def encode(mask: np.ndarray, codes: np.ndarray, index_bits: int, value_bits: int,
           zero_code: int | None) -> SparseTable:
    """Entries of the kept positions ``mask`` (rows × row_length) with their ``codes``.

    ``zero_code`` is the code of the value 0 used by fillers; it may be ``None`` only if no row
    needs a filler (ValueError otherwise).
    """
    mask = np.asarray(mask, dtype=bool)
    codes = np.asarray(codes, dtype=np.int64)
    if mask.ndim != 2 or codes.shape != mask.shape:
        raise ValueError(f"mask {mask.shape} and codes {codes.shape} must be the same 2-D shape")
    _check_bits(index_bits, value_bits)
    rows, n = mask.shape
    r, p = np.nonzero(mask)
    kept = codes[r, p]
    if kept.size and (kept.min() < 0 or kept.max() >= 1 << value_bits):
        raise ValueError(f"codes outside [0, {1 << value_bits})")
    prev = np.empty_like(p)
    if p.size:
        prev[1:] = p[:-1]
        first = np.ones(r.size, dtype=bool)
        first[1:] = r[1:] != r[:-1]
        prev[first] = -1
    runs = p - prev - 1
    fill = runs >> index_bits
    if fill.any() and zero_code is None:
        raise ValueError(f"gaps longer than {(1 << index_bits) - 1} need a zero code for fillers")
    # Each kept entry is preceded by its fillers: build the entry list with np.repeat.
    per = fill + 1
    total = int(per.sum())
    owner = np.repeat(np.arange(p.size), per)
    last = np.cumsum(per) - 1
    is_real = np.zeros(total, dtype=bool)
    is_real[last] = True
    gaps = np.full(total, (1 << index_bits) - 1, dtype=np.int64)
    gaps[last] = runs & ((1 << index_bits) - 1)
    out_codes = np.full(total, -1 if zero_code is None else zero_code, dtype=np.int64)
    out_codes[last] = kept
    counts = np.zeros(rows, dtype=np.int64)
    np.add.at(counts, r[owner], 1)
    return SparseTable(rows, n, index_bits, value_bits, count_bits_for(counts), counts,
                       gaps.astype(np.int64), out_codes.astype(np.int64))


def unpack(data: bytes, rows: int, row_length: int, index_bits: int, value_bits: int,
           count_bits: int) -> SparseTable:
    """Parse a plain stream back into its entries (inverse of :meth:`SparseTable.pack`)."""
    _check_bits(index_bits, value_bits)
    bits = unpack_bits(data)
    w = index_bits + value_bits
    pos = 0
    counts = np.zeros(rows, dtype=np.int64)
    fields: list[np.ndarray] = []
    for r in range(rows):
        counts[r] = read_field(bits, pos, count_bits)
        pos += count_bits
        fields.append(read_fields(bits, pos, w, int(counts[r])))
        pos += w * int(counts[r])
    if (len(bits) - pos) >= 8 or bits[pos:].any():
        raise ValueError(f"{len(data)} bytes hold {pos} bits of table and a non-zero or whole-byte tail")
    f = np.concatenate(fields) if fields else np.zeros(0, dtype=np.int64)
    table = SparseTable(rows, row_length, index_bits, value_bits, count_bits, counts,
                        f & ((1 << index_bits) - 1), f >> index_bits)
    if table.entries and (table.positions().max() >= row_length):
        raise ValueError("an entry lies past the end of its row")
    return table


def decode_codes(table: SparseTable, zero_code: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mask, codes) of the kept positions; filler entries (gap 2**k-1 with ``zero_code`` whose
    value is 0) are indistinguishable from a kept zero and appear in the mask."""
    mask = np.zeros((table.rows, table.row_length), dtype=bool)
    codes = np.zeros((table.rows, table.row_length), dtype=np.int64)
    r, p = table.row_of_entry(), table.positions()
    mask[r, p] = True
    codes[r, p] = table.codes
    return mask, codes


def entry_values(table: SparseTable, codebook: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """The integer weight of every entry: ``codebook[code]``, or the code as int8 (raw mode)."""
    if codebook is None:
        if table.value_bits != 8:
            raise ValueError("raw int8 values need value_bits = 8")
        return ((table.codes.astype(np.int64) ^ 0x80) - 0x80)
    cb = np.asarray(codebook, dtype=np.int64)
    if cb.size != 1 << table.value_bits:
        raise ValueError(f"a {table.value_bits}-bit codebook has {1 << table.value_bits} values, "
                         f"got {cb.size}")
    return cb[table.codes]


def to_dense(table: SparseTable, codebook: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """The integer weight matrix (rows × row_length) the table describes."""
    dense = np.zeros((table.rows, table.row_length), dtype=np.int64)
    dense[table.row_of_entry(), table.positions()] = entry_values(table, codebook)
    return dense


def raw_codes(values: np.ndarray) -> np.ndarray:
    """int8 weights as raw-mode codes (two's complement in 8 bits)."""
    return np.asarray(values, dtype=np.int64) & 0xFF


def best_index_bits(mask: np.ndarray, value_bits: int) -> int:
    """The gap width k (2…8) giving the fewest plain-stream bytes for this pattern (ties: smaller k)."""
    sizes = {k: stream_bytes_for(mask, k, value_bits) for k in INDEX_BITS}
    return min(sizes, key=lambda k: (sizes[k], k))


def _check_bits(index_bits: int, value_bits: int) -> None:
    if index_bits not in INDEX_BITS:
        raise ValueError(f"index_bits must be 2…8, got {index_bits}")
    if value_bits not in VALUE_BITS:
        raise ValueError(f"value_bits must be 2…8, got {value_bits}")
