"""Canonical Huffman coding of a sparse table's two symbol streams (Deep Compression stage 3).

The entries of a :class:`~toolkit.compress.sparse_format.SparseTable` carry two symbols: the
gap (alphabet ``2**k``) and the value code (alphabet ``2**b``).  Each alphabet gets its own
canonical Huffman code, limited to :data:`MAX_CODE_BITS` bits by the package-merge algorithm
(Larmore & Hirschberg 1990: optimal among length-limited codes; ties broken by symbol number, so
the same frequencies always give the same lengths).  Symbols that never occur get length 0; an
alphabet with a single used symbol gets a one-bit code.  Codes are assigned canonically as
DEFLATE does (RFC 1951 §3.2.2: by length, then by symbol), so the table is its code lengths only.

Stored bytes (what the kernels in ``firmware_gen/kernels/ref/huffman.c`` read):

``code_lengths``  ``ceil((2**k + 2**b) / 2)`` bytes: the ``2**k`` gap lengths then the ``2**b``
                  value lengths, 4 bits each, two per byte, the low nibble first.
``stream``        LSB-first bit stream (as the plain table): per row its entry count in
                  ``count_bits`` bits (LSB-first), then per entry the gap's code followed by the
                  value's code, each code written from its most significant bit (DEFLATE order,
                  so a decoder extends the code one bit at a time).  The last byte is zero-padded.

Decoding on the device (both costed exactly by the prune method):

* ``boot``  — once, into a RAM copy of the plain table (``persistent_ram_bytes``);
* ``layer`` — during every inference, ``block_rows`` rows at a time into a scratch buffer of
  :func:`decoder_bytes` (with the lookup tables) + the largest block's plain bytes
  (``ram_bytes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from toolkit.compress.sparse_format import SparseTable, pack_fields, read_field, unpack_bits

MAX_CODE_BITS = 15
DECODER_COUNT_BYTES = 2 * 16  # uint16_t count[16] per alphabet (count[0] unused)
LOOKUP_BITS = 7  # BF_HUFF_LUT_BITS of include/bf_sparse.h


# ---------------------------------------------------------------------------------------------
# Code construction.


def code_lengths(freqs: Sequence[int] | np.ndarray, max_bits: int = MAX_CODE_BITS) -> np.ndarray:
    """Optimal code lengths of at most ``max_bits`` bits for symbol frequencies (package-merge)."""
    f = np.asarray(freqs, dtype=np.int64)
    lengths = np.zeros(f.size, dtype=np.int64)
    used = np.flatnonzero(f > 0)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used[0]] = 1
        return lengths
    if used.size > 1 << max_bits:
        raise ValueError(f"{used.size} symbols cannot be coded in {max_bits} bits")
    leaves = sorted((int(f[s]), int(s)) for s in used)
    leaf_items: list[tuple[int, tuple[int, ...]]] = [(w, (s,)) for w, s in leaves]
    current = list(leaf_items)
    for _ in range(max_bits - 1):
        packages = [(current[i][0] + current[i + 1][0], current[i][1] + current[i + 1][1])
                    for i in range(0, len(current) - 1, 2)]
        keyed = [((w, 0, i), (w, s)) for i, (w, s) in enumerate(leaf_items)]
        keyed += [((w, 1, i), (w, s)) for i, (w, s) in enumerate(packages)]
        keyed.sort(key=lambda item: item[0])
        current = [item for _, item in keyed]
    for _, symbols in current[: 2 * used.size - 2]:
        for s in symbols:
            lengths[s] += 1
    return lengths


def canonical_codes(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """DEFLATE's canonical code of every symbol (0 for unused symbols)."""
    ln = np.asarray(lengths, dtype=np.int64)
    top = int(ln.max()) if ln.size else 0
    bl_count = np.bincount(ln, minlength=top + 1)
    bl_count[0] = 0
    next_code = np.zeros(top + 2, dtype=np.int64)
    code = 0
    for bits in range(1, top + 1):
        code = (code + int(bl_count[bits - 1])) << 1
        next_code[bits] = code
    codes = np.zeros(ln.size, dtype=np.int64)
    for s in range(ln.size):
        if ln[s]:
            codes[s] = next_code[ln[s]]
            next_code[ln[s]] += 1
    return codes


def check_lengths(lengths: np.ndarray, max_bits: int = MAX_CODE_BITS) -> None:
    """A decodable canonical code: lengths 0…max_bits and a Kraft sum ≤ 1."""
    ln = np.asarray(lengths, dtype=np.int64)
    if ln.size and (ln.min() < 0 or ln.max() > max_bits):
        raise ValueError(f"code lengths must be 0…{max_bits}")
    kraft = sum(2.0 ** -int(v) for v in ln if v)
    if kraft > 1.0:
        raise ValueError(f"code lengths over-subscribe the code space (Kraft sum {kraft})")


def pack_lengths(lengths: np.ndarray) -> bytes:
    """Nibbles, two per byte, low nibble first (odd counts end with a zero nibble)."""
    ln = np.asarray(lengths, dtype=np.int64)
    if ln.size % 2:
        ln = np.concatenate([ln, [0]])
    return bytes((ln[0::2] | (ln[1::2] << 4)).astype(np.uint8).tolist())


def unpack_lengths(data: bytes, count: int) -> np.ndarray:
    raw = np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int64)
    both = np.stack([raw & 15, raw >> 4], axis=1).reshape(-1)
    return both[:count]


def coded_bits(freqs: np.ndarray, lengths: np.ndarray) -> int:
    return int(np.dot(np.asarray(freqs, dtype=np.int64), np.asarray(lengths, dtype=np.int64)))


class Decoder:
    """Table-driven decoding of one canonical code from a bit array (host side)."""

    def __init__(self, lengths: np.ndarray, max_bits: int = MAX_CODE_BITS) -> None:
        check_lengths(lengths, max_bits)
        self.max_bits = max_bits
        self.symbol = np.full(1 << max_bits, -1, dtype=np.int64)
        self.length = np.zeros(1 << max_bits, dtype=np.int64)
        codes = canonical_codes(lengths)
        for s, (c, n) in enumerate(zip(codes, lengths, strict=True)):
            if n:
                lo = int(c) << (max_bits - int(n))
                hi = (int(c) + 1) << (max_bits - int(n))
                self.symbol[lo:hi] = s
                self.length[lo:hi] = n


def msb_windows(bits: np.ndarray, width: int) -> np.ndarray:
    """For every bit position p, the ``width`` bits from p read MSB-first (zero past the end)."""
    padded = np.concatenate([bits.astype(np.int64), np.zeros(width, dtype=np.int64)])
    view = np.lib.stride_tricks.sliding_window_view(padded, width)[: bits.size + 1]
    return view @ (1 << np.arange(width - 1, -1, -1, dtype=np.int64))


# ---------------------------------------------------------------------------------------------
# The coded sparse table.


@dataclass(frozen=True, eq=False)
class HuffmanTable:
    """A sparse table's entries Huffman-coded (module docstring), with the lengths it used."""

    rows: int
    row_length: int
    index_bits: int
    value_bits: int
    count_bits: int
    gap_lengths: np.ndarray = field(repr=False)
    value_lengths: np.ndarray = field(repr=False)
    stream: bytes = field(repr=False)

    @property
    def lengths_bytes(self) -> bytes:
        return pack_lengths(np.concatenate([self.gap_lengths, self.value_lengths]))


def lengths_for(table: SparseTable, max_bits: int = MAX_CODE_BITS) -> tuple[np.ndarray, np.ndarray]:
    """The gap and value code lengths of a table's symbol frequencies."""
    gf = np.bincount(table.gaps, minlength=1 << table.index_bits)
    vf = np.bincount(table.codes, minlength=1 << table.value_bits)
    return code_lengths(gf, max_bits), code_lengths(vf, max_bits)


def stream_bits(table: SparseTable, gap_lengths: np.ndarray, value_lengths: np.ndarray) -> int:
    """Exact bits of the coded stream (row counts included, padding excluded)."""
    return (table.rows * table.count_bits + int(np.asarray(gap_lengths)[table.gaps].sum())
            + int(np.asarray(value_lengths)[table.codes].sum()))


def stream_bytes(table: SparseTable, max_bits: int = MAX_CODE_BITS) -> int:
    return (stream_bits(table, *lengths_for(table, max_bits)) + 7) // 8


def lengths_table_bytes(index_bits: int, value_bits: int) -> int:
    return ((1 << index_bits) + (1 << value_bits) + 1) // 2


def decoder_bytes(index_bits: int, value_bits: int, lookup: bool = False) -> int:
    """RAM of the C decoder's tables: count[16] (uint16) and sorted symbols (uint8) per alphabet,
    plus (``lookup``, the per-block decoder) a uint16 table of 2**LOOKUP_BITS entries per
    alphabet for the codes of at most LOOKUP_BITS bits."""
    lut = 2 * 2 * (1 << LOOKUP_BITS) if lookup else 0
    return 2 * DECODER_COUNT_BYTES + lut + (1 << index_bits) + (1 << value_bits)


def encode_table(table: SparseTable, max_bits: int = MAX_CODE_BITS) -> HuffmanTable:
    gap_lengths, value_lengths = lengths_for(table, max_bits)
    gap_codes, value_codes = canonical_codes(gap_lengths), canonical_codes(value_lengths)
    n = table.rows + 2 * table.entries
    widths = np.empty(n, dtype=np.int64)
    values = np.empty(n, dtype=np.int64)
    msb = np.ones(n, dtype=bool)
    header_at = np.cumsum(1 + 2 * table.counts) - (1 + 2 * table.counts)
    is_header = np.zeros(n, dtype=bool)
    is_header[header_at] = True
    widths[is_header] = table.count_bits
    values[is_header] = table.counts
    msb[is_header] = False
    body = np.flatnonzero(~is_header)
    gap_at, val_at = body[0::2], body[1::2]
    widths[gap_at], values[gap_at] = gap_lengths[table.gaps], gap_codes[table.gaps]
    widths[val_at], values[val_at] = value_lengths[table.codes], value_codes[table.codes]
    stream = pack_fields(values, widths, msb)
    return HuffmanTable(table.rows, table.row_length, table.index_bits, table.value_bits,
                        table.count_bits, gap_lengths, value_lengths, stream)


def decode_table(coded: HuffmanTable) -> SparseTable:
    """The entries back from the coded stream (host twin of the C decoder)."""
    bits = unpack_bits(coded.stream)
    gd, vd = Decoder(coded.gap_lengths), Decoder(coded.value_lengths)
    windows = msb_windows(bits, MAX_CODE_BITS)
    counts = np.zeros(coded.rows, dtype=np.int64)
    gaps: list[int] = []
    codes: list[int] = []
    pos = 0
    for r in range(coded.rows):
        counts[r] = read_field(bits, pos, coded.count_bits)
        pos += coded.count_bits
        for _ in range(int(counts[r])):
            for dec, out in ((gd, gaps), (vd, codes)):
                w = int(windows[pos])
                n = int(dec.length[w])
                if n == 0:
                    raise ValueError(f"invalid Huffman code at bit {pos}")
                out.append(int(dec.symbol[w]))
                pos += n
    if pos > bits.size:
        raise ValueError("the coded stream ends inside a code")
    return SparseTable(coded.rows, coded.row_length, coded.index_bits, coded.value_bits,
                       coded.count_bits, counts, np.asarray(gaps, dtype=np.int64),
                       np.asarray(codes, dtype=np.int64))
