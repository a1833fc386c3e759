"""The packed sparse table and its Huffman coding: exact layout, exact sizes, lossless round trips.

Properties (hypothesis) over random sparse matrices of any shape — empty rows, rows far longer
than 2^k so that fillers are needed, every index width k = 2…8 and value width b = 2…8:
decode(encode(W)) == W, the packed length equals the exact byte count, fillers are counted
exactly, and the Huffman-coded stream decodes to the same entries with as many bits as the
code lengths say.  Layout facts are checked on hand-made examples whose bytes are written out.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.compress import huffman as hf
from toolkit.compress import sparse_format as sf

# ---------------------------------------------------------------------------------------------
# Random sparse matrices.


@st.composite
def sparse_matrices(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(mask, codes, k, b): up to 9 rows of up to 700 positions, densities 0 … 1."""
    rows = draw(st.integers(1, 9))
    n = draw(st.integers(1, 700))
    k = draw(st.integers(2, 8))
    b = draw(st.integers(2, 8))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    density = rng.choice([0.0, 0.002, 0.02, 0.1, 0.5, 1.0], size=rows)
    mask = rng.random((rows, n)) < density[:, None]
    codes = rng.integers(1, 1 << b, size=(rows, n))  # code 0 is the filler's zero
    return mask, codes, k, b


def _fillers_by_hand(mask: np.ndarray, k: int) -> int:
    total = 0
    for row in mask:
        prev = -1
        for p in np.flatnonzero(row):
            total += (p - prev - 1) // (1 << k)
            prev = p
    return total


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sparse_matrices())
def test_plain_round_trip_and_exact_size(case: tuple[np.ndarray, np.ndarray, int, int]) -> None:
    mask, codes, k, b = case
    table = sf.encode(mask, codes, k, b, zero_code=0)
    data = table.pack()
    assert len(data) == table.stream_bytes == sf.stream_bytes_for(mask, k, b)
    assert table.entries - int(mask.sum()) == _fillers_by_hand(mask, k) == sf.filler_counts(mask, k).sum()
    back = sf.unpack(data, mask.shape[0], mask.shape[1], k, b, table.count_bits)
    book = np.arange(1 << b) * 3 - 7
    book[0] = 0
    want = np.where(mask, book[codes], 0)
    assert np.array_equal(sf.to_dense(back, book), want)
    got_mask, got_codes = sf.decode_codes(back)
    assert np.array_equal(got_mask & mask, mask)  # kept positions survive; extras are fillers
    assert np.all(got_codes[got_mask & ~mask] == 0)
    assert np.array_equal(got_codes[mask], codes[mask])
    assert (back.gaps < (1 << k)).all() and (back.codes < (1 << b)).all()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sparse_matrices())
def test_huffman_round_trip_and_exact_size(case: tuple[np.ndarray, np.ndarray, int, int]) -> None:
    mask, codes, k, b = case
    table = sf.encode(mask, codes, k, b, zero_code=0)
    coded = hf.encode_table(table)
    gl, vl = hf.lengths_for(table)
    assert len(coded.stream) == hf.stream_bytes(table) == (hf.stream_bits(table, gl, vl) + 7) // 8
    assert len(coded.lengths_bytes) == hf.lengths_table_bytes(k, b)
    back = hf.decode_table(coded)
    assert np.array_equal(back.counts, table.counts)
    assert np.array_equal(back.gaps, table.gaps) and np.array_equal(back.codes, table.codes)
    lengths = hf.unpack_lengths(coded.lengths_bytes, (1 << k) + (1 << b))
    assert np.array_equal(lengths, np.concatenate([gl, vl]))


def test_all_empty_rows() -> None:
    mask = np.zeros((4, 10), dtype=bool)
    table = sf.encode(mask, np.zeros((4, 10), dtype=np.int64), 3, 4, zero_code=None)
    assert table.count_bits == 1 and table.entries == 0
    assert table.pack() == b"\x00" and table.stream_bytes == 1
    coded = hf.encode_table(table)
    assert coded.stream == b"\x00" and not coded.gap_lengths.any()
    assert hf.decode_table(coded).entries == 0


# ---------------------------------------------------------------------------------------------
# Layout, byte for byte.


def test_layout_by_hand() -> None:
    """Row 0: non-zeros at 1 and 2 (codes 5, 6); row 1: non-zero at 12 (code 3), k=2, b=3.

    Row 1's run of 12 zeros needs 12 >> 2 = 3 fillers (gap 3, code 0), then gap 0.  Counts: 2
    and 4, count_bits 3.  Entry field = gap | code << 2 (5 bits).  Bits, LSB first:
    count 2 (010) | gap 1 code 5 → 10101 | gap 0 code 6 → 11000 | count 4 | 3× (gap 3, code 0)
    | gap 0 code 3."""
    mask = np.zeros((2, 16), dtype=bool)
    codes = np.zeros((2, 16), dtype=np.int64)
    mask[0, [1, 2]] = True
    codes[0, [1, 2]] = [5, 6]
    mask[1, 12] = True
    codes[1, 12] = 3
    t = sf.encode(mask, codes, 2, 3, zero_code=0)
    assert list(t.counts) == [2, 4] and t.count_bits == 3
    assert list(t.gaps) == [1, 0, 3, 3, 3, 0] and list(t.codes) == [5, 6, 0, 0, 0, 3]
    fields = [(2, 3), (1 | 5 << 2, 5), (0 | 6 << 2, 5), (4, 3), (3, 5), (3, 5), (3, 5), (3 << 2, 5)]
    bits = "".join(format(v, f"0{w}b")[::-1] for v, w in fields)  # LSB first
    bits += "0" * (-len(bits) % 8)
    want = bytes(int(bits[i : i + 8][::-1], 2) for i in range(0, len(bits), 8))
    assert t.pack() == want
    assert t.stream_bytes == (2 * 3 + 6 * 5 + 7) // 8 == 5


def test_filler_needs_a_zero_code() -> None:
    mask = np.zeros((1, 10), dtype=bool)
    mask[0, 9] = True
    with pytest.raises(ValueError, match="zero code"):
        sf.encode(mask, np.ones((1, 10), dtype=np.int64), 2, 4, zero_code=None)
    # With k = 4 the gap of 9 fits: no filler, no zero code needed.
    assert sf.encode(mask, np.ones((1, 10), dtype=np.int64), 4, 4, zero_code=None).entries == 1


def test_best_index_bits_is_the_smallest_stream() -> None:
    rng = np.random.default_rng(3)
    for density in (0.02, 0.1, 0.3, 0.9):
        mask = rng.random((20, 300)) < density
        for b in (2, 4, 8):
            k = sf.best_index_bits(mask, b)
            sizes = {kk: len(sf.encode(mask, np.ones(mask.shape, np.int64), kk, b, 0).pack())
                     for kk in range(2, 9)}
            assert sizes[k] == min(sizes.values())


def test_raw_codes_are_twos_complement() -> None:
    vals = np.array([[-128, -1, 0, 1, 127]])
    t = sf.encode(np.ones((1, 5), bool), sf.raw_codes(vals), 2, 8, zero_code=0)
    assert list(t.codes) == [128, 255, 0, 1, 127]
    assert np.array_equal(sf.to_dense(t, None), vals)


# ---------------------------------------------------------------------------------------------
# Huffman codes.


def test_code_lengths_are_optimal_and_limited() -> None:
    # Unlimited optimum of these frequencies is 1, 2, 3, 4, 4 (sum 8·1+4·2+2·3+1·4+1·4 = 30 bits).
    assert list(hf.code_lengths([8, 4, 2, 1, 1])) == [1, 2, 3, 4, 4]
    # Fibonacci frequencies force a 17-deep tree; limited to 15 bits, Kraft sum stays exactly 1.
    fib = [1, 1]
    while len(fib) < 20:
        fib.append(fib[-1] + fib[-2])
    ln = hf.code_lengths(fib, 15)
    assert ln.max() == 15 and sum(2.0 ** -int(v) for v in ln) == 1.0
    # Optimal among limited codes: no single swap of two lengths improves the cost.
    cost = hf.coded_bits(np.array(fib), ln)
    for i in range(len(fib)):
        for j in range(len(fib)):
            swapped = ln.copy()
            swapped[i], swapped[j] = ln[j], ln[i]
            assert hf.coded_bits(np.array(fib), swapped) >= cost
    assert list(hf.code_lengths([0, 5, 0])) == [0, 1, 0]
    assert not hf.code_lengths([0, 0]).any()


def test_package_merge_equals_huffman_when_unconstrained() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        f = rng.integers(0, 50, size=rng.integers(2, 40))
        f[rng.integers(0, f.size)] = 1
        ln = hf.code_lengths(f, 15)
        assert hf.coded_bits(f, ln) == _huffman_cost(f)


def _huffman_cost(f: np.ndarray) -> int:
    """Classic Huffman's total cost (sum of internal node weights)."""
    import heapq

    heap = [int(v) for v in f if v > 0]
    if len(heap) == 1:
        return heap[0]
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


def test_canonical_codes_follow_deflate() -> None:
    # RFC 1951 §3.2.2's example: lengths (3, 3, 3, 3, 3, 2, 4, 4) → codes 010 … 111, 00, 1110, 1111.
    codes = hf.canonical_codes([3, 3, 3, 3, 3, 2, 4, 4])
    assert list(codes) == [2, 3, 4, 5, 6, 0, 14, 15]


def test_lengths_pack_into_nibbles() -> None:
    assert hf.pack_lengths(np.array([1, 2, 15])) == bytes([0x21, 0x0F])
    assert list(hf.unpack_lengths(bytes([0x21, 0x0F]), 3)) == [1, 2, 15]


def test_huffman_stream_layout_by_hand() -> None:
    """One row, entries (gap 0, code 1) twice and (gap 1, code 2) once, k = b = 2.

    Gap frequencies [2, 1, 0, 0] → lengths [1, 1, 0, 0], codes 0, 1; value frequencies
    [0, 2, 1, 0] → lengths [0, 1, 1, 0], codes 0, 1.  Count 3 in count_bits 2 (LSB first: 11),
    then per entry the gap code and the value code: 0 0 | 0 0 | 1 1 → bits 11 000011 = 0xC3."""
    mask = np.array([[True, True, False, True]])
    codes = np.array([[1, 1, 0, 2]])
    t = sf.encode(mask, codes, 2, 2, zero_code=0)
    c = hf.encode_table(t)
    assert list(c.gap_lengths) == [1, 1, 0, 0] and list(c.value_lengths) == [0, 1, 1, 0]
    assert c.stream == bytes([0b11000011])
