"""Method ``prune``: unstructured magnitude pruning stored as Deep Compression sparse tables.

The layer's real weights (``LayerRef.real_weights()``) lose the ``sparsity`` fraction of
smallest magnitudes, ranked over the whole layer (Han et al. 2015).  The kept weights are stored
as a packed sparse table (:mod:`toolkit.compress.sparse_format`: per output channel a stream of
(gap, value code) entries, gaps in ``index_bits`` bits with filler entries for longer runs),
optionally Huffman-coded (:mod:`toolkit.compress.huffman`), and run by the kernels of
``kernels/include/bf_sparse.h`` (:mod:`toolkit.compress.sparse_layer`).

Values (``bits``):

* ``bits`` 2…7: weight sharing — the kept weights of the layer are clustered by 1-D k-means
  (linear initialisation, :func:`toolkit.compress.kmeans.cluster_1d`) into ``2**bits`` values;
  when some run of zeros needs fillers one of them is pinned to exactly 0 (the filler code).
  The codebook is stored as int8 values under one scale for the layer (``max|centroid|/127``),
  so there is one multiplier/shift for the layer and int8 × int8 products as in every int8
  kernel; an exported .tflite holds exactly these weights.
* ``bits`` 8: the int8 weights themselves (per-channel scales, the model's own when no
  calibration moves them), stored raw in the value field (no codebook).

Parameters (docs/compression.md, section ``prune``):

* ``sparsity`` (float in [0, 1), default 0.9);
* ``bits`` (int 2…8, default 4);
* ``index_bits`` (int 2…8; default: the value giving the fewest flash bytes for this layer's
  pattern — plain: the exact stream size over k = 2…8; Huffman: the exact coded size);
* ``huffman`` (``false``, ``"boot"`` or ``"layer"``, default false): Huffman-code both streams;
  decode once into RAM at the first inference (``boot``: persistent RAM = the plain table) or
  ``block_rows`` rows at a time during every inference (``layer``: scratch);
* ``block_rows`` (int ≥ 1, default 16): rows per decoded block in ``layer`` mode;
* ``recover`` (bool, default true): with calibration data, accuracy recovery without
  retraining (below).

Recovery (never changes the pattern, so the bytes stay those of :meth:`PruneMethod.option`):

1. least-squares refit of each output channel's kept weights to the original channel's outputs
   on the calibration inputs (OBS / SparseGPT-style layer-wise reconstruction):
   ``w_S = argmin ‖X_S w_S − X w‖² + λ‖w_S − w⁰_S‖²`` on mean-centred inputs (the bias absorbs
   the mean), solved with the kept columns' Gram matrix ``C_SS + λI``, ``λ = 0.01 · mean
   diag(C_SS)``; the ridge pulls towards the original kept weights ``w⁰_S``, so directions the
   calibration data does not excite keep their values;
2. re-quantization: raw mode rounds to new per-channel scales; codebook mode re-clusters the
   refitted weights (Huffman modes instead keep every code's count — the coded size depends only
   on those counts — by assigning codes to the sorted weights in the original proportions), then
   refits the codebook values by least squares with the assignment fixed;
3. empirical bias correction of the final integer weights (mean output shift removed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.compress.base import (
    COMPRESSIBLE_OPS,
    Calibration,
    CompressedLayer,
    LayerRef,
    Option,
    Setting,
    check_setting,
)
from toolkit.compress.common import (
    Geometry,
    bias_correction,
    channel_group,
    geometry,
    input_columns,
    layer_bias_real,
    requant_for,
    weight_rows,
)
from toolkit.compress.huffman import encode_table, lengths_table_bytes
from toolkit.compress.kmeans import assign, cluster_1d
from toolkit.compress.registry import register
from toolkit.compress.sparse_format import (
    INDEX_BITS,
    best_index_bits,
    encode,
    filler_counts,
)
from toolkit.compress.sparse_layer import SparseWeights, sparse_layer
from toolkit.model.ir import DType

_PARAMS: dict[str, tuple[type, ...]] = {
    "sparsity": (float, int), "bits": (int,), "index_bits": (int,), "huffman": (bool, str),
    "block_rows": (int,), "recover": (bool,)}
HUFFMAN_MODES = ("boot", "layer")
_DAMP = 0.01


@dataclass(frozen=True)
class PruneSetting:
    sparsity: float
    bits: int
    index_bits: int | None
    huffman: str | None
    block_rows: int
    recover: bool

    @staticmethod
    def parse(setting: Setting) -> PruneSetting:
        check_setting(setting, _PARAMS)
        sparsity = float(setting.get("sparsity", 0.9))
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"method {setting.method!r}: sparsity must be in [0, 1), got {sparsity}")
        bits = int(setting.get("bits", 4))
        if not 2 <= bits <= 8:
            raise ValueError(f"method {setting.method!r}: bits must be 2…8, got {bits}")
        k = setting.get("index_bits")
        if k is not None and int(k) not in INDEX_BITS:
            raise ValueError(f"method {setting.method!r}: index_bits must be 2…8, got {k}")
        huff = setting.get("huffman", False)
        if huff is True or (huff is not False and huff not in HUFFMAN_MODES):
            raise ValueError(f"method {setting.method!r}: huffman must be false, \"boot\" or "
                             f"\"layer\", got {huff!r}")
        block = int(setting.get("block_rows", 16))
        if block < 1:
            raise ValueError(f"method {setting.method!r}: block_rows must be >= 1, got {block}")
        return PruneSetting(sparsity, bits, None if k is None else int(k),
                            None if huff is False else str(huff), block,
                            bool(setting.get("recover", True)))

    @property
    def mode(self) -> str:
        return self.huffman or "plain"


# ---------------------------------------------------------------------------------------------
# Pattern and values.


def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep the ``round((1 − sparsity)·n)`` largest |w| of the whole layer (ties: lower index)."""
    flat = np.abs(np.asarray(w, dtype=np.float64)).reshape(-1)
    keep = round((1.0 - sparsity) * flat.size)
    mask = np.zeros(flat.size, dtype=bool)
    if keep:
        order = np.argsort(-flat, kind="stable")
        mask[order[:keep]] = True
    return mask.reshape(np.shape(w))


@dataclass(frozen=True, eq=False)
class Values:
    """Quantized kept weights: codes (rows × n, meaningful on the mask), real value per code
    (codebook mode) or per-row scales (raw mode), and the filler code."""

    codes: np.ndarray
    centroids: np.ndarray | None  # real values, sorted ascending (codebook mode)
    scales: np.ndarray  # real scale per row of the integer values
    zero_code: int | None
    book: np.ndarray | None  # int8 codebook

    def real_rows(self, mask: np.ndarray) -> np.ndarray:
        if self.book is None:
            ints = ((self.codes ^ 0x80) - 0x80).astype(np.float64)
        else:
            ints = self.book[self.codes].astype(np.float64)
        return np.where(mask, ints * self.scales[:, None], 0.0)


def _int8_book(centroids: np.ndarray, zero_code: int | None) -> tuple[np.ndarray, float]:
    amax = float(np.abs(centroids).max()) if centroids.size else 0.0
    scale = float(np.float32(amax / 127.0)) if amax > 0 else 1.0
    book = np.clip(np.rint(centroids / scale), -127, 127).astype(np.int64)
    if zero_code is not None:
        book[zero_code] = 0
    return book, scale


def _with_zero(centroids: np.ndarray) -> tuple[np.ndarray, int]:
    """Insert an exact 0 into sorted centroids; return them and its index."""
    z = int(np.searchsorted(centroids, 0.0))
    return np.insert(centroids, z, 0.0), z


def codebook_values(kept: np.ndarray, mask: np.ndarray, bits: int, pin_zero: bool) -> Values:
    """k-means sharing of the kept weights ``kept`` (rows × n, zero off the mask)."""
    k = 1 << bits
    v = kept[mask]
    if v.size == 0:
        cents = np.zeros(k)
    else:
        cents, _ = cluster_1d(v, k - 1 if pin_zero else k)
    zero_code = None
    if pin_zero:
        cents, zero_code = _with_zero(np.sort(cents))
    codes = np.zeros(kept.shape, dtype=np.int64)
    codes[mask] = assign(v, cents)
    return _finish_book(codes, cents, zero_code, kept.shape[0])


def _finish_book(codes: np.ndarray, cents: np.ndarray, zero_code: int | None, rows: int) -> Values:
    book, scale = _int8_book(cents, zero_code)
    return Values(codes, cents, np.full(rows, scale), zero_code, book)


def raw_values(kept: np.ndarray, scales: np.ndarray | None) -> Values:
    """int8 values under per-row scales (``max|w|/127`` of each row unless given)."""
    if scales is None:
        amax = np.abs(kept).max(axis=1)
        scales = np.where(amax > 0, amax / 127.0, 1.0)
    s = np.asarray(scales, dtype=np.float32).astype(np.float64)
    q = np.clip(np.rint(kept / s[:, None]), -127, 127).astype(np.int64)
    return Values(q & 0xFF, None, s, 0, None)


# ---------------------------------------------------------------------------------------------
# Recovery.


@dataclass(frozen=True)
class CalibStats:
    """Centred second moments of each input group (input-offset units) and the groups' columns."""

    cols: list[np.ndarray]
    cov: list[np.ndarray]

    @staticmethod
    def of(g: Geometry, calib: Calibration) -> CalibStats:
        cols = input_columns(g, calib.inputs)
        cov = []
        for c in cols:
            m = c.mean(axis=0)
            cov.append(c.T @ c / max(c.shape[0], 1) - np.outer(m, m))
        return CalibStats(cols, cov)


def refit_rows(g: Geometry, stats: CalibStats, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Least-squares kept weights per row (module docstring, step 1)."""
    out = np.zeros_like(target)
    for r in range(target.shape[0]):
        s = np.flatnonzero(mask[r])
        if s.size == 0:
            continue
        c = stats.cov[channel_group(g, r)]
        css = c[np.ix_(s, s)]
        lam = _DAMP * max(float(np.mean(np.diag(css))), 1e-12)
        # Ridge towards the original kept weights: directions the calibration data does not
        # excite (e.g. inputs that are constant there) keep their values instead of shrinking.
        rhs = c[s] @ target[r] + lam * target[r, s]
        out[r, s] = np.linalg.solve(css + lam * np.eye(s.size), rhs)
    return out


def refit_centroids(g: Geometry, stats: CalibStats, target: np.ndarray, mask: np.ndarray,
                    vals: Values) -> Values:
    """Least-squares codebook values with the assignment fixed (the zero code stays 0)."""
    assert vals.centroids is not None
    k = vals.centroids.size
    a = np.zeros((k, k))
    rhs = np.zeros(k)
    for r in range(target.shape[0]):
        s = np.flatnonzero(mask[r])
        if s.size == 0:
            continue
        c = stats.cov[channel_group(g, r)]
        onehot = np.zeros((s.size, k))
        onehot[np.arange(s.size), vals.codes[r, s]] = 1.0
        a += onehot.T @ c[np.ix_(s, s)] @ onehot
        rhs += onehot.T @ (c[s] @ target[r])
    free = np.ones(k, dtype=bool)
    if vals.zero_code is not None:
        free[vals.zero_code] = False
    free &= np.diag(a) > 0
    cents = vals.centroids.copy()
    if free.any():
        af = a[np.ix_(free, free)]
        lam = 1e-4 * max(float(np.trace(af)) / af.shape[0], 1e-12)
        cents[free] = np.linalg.solve(af + lam * np.eye(af.shape[0]), rhs[free] + lam * cents[free])
    order = np.argsort(cents, kind="stable")
    if np.any(order != np.arange(k)):  # keep codes sorted by value: relabel
        inverse = np.empty(k, dtype=np.int64)
        inverse[order] = np.arange(k)
        codes = np.where(mask, inverse[vals.codes], 0)
        zero = None if vals.zero_code is None else int(inverse[vals.zero_code])
        return _finish_book(codes, cents[order], zero, target.shape[0])
    return _finish_book(vals.codes, cents, vals.zero_code, target.shape[0])


def reassign_keeping_counts(fit: np.ndarray, mask: np.ndarray, base: Values) -> Values:
    """Codes for the refitted weights with exactly ``base``'s count of every code: the kept
    weights, sorted (in units of each row's scale), take the codes in ascending order of value.
    Optimal in ``Σ (w − value)²`` among assignments with those counts (1-D, monotone)."""
    size = 256 if base.centroids is None else base.centroids.size
    value_of = (np.arange(size) ^ 0x80) - 0x80 if base.centroids is None else base.centroids
    counts = np.bincount(base.codes[mask], minlength=size)
    by_value = np.argsort(value_of, kind="stable")
    order = np.argsort((fit / base.scales[:, None])[mask], kind="stable")
    new = np.empty(order.size, dtype=np.int64)
    new[order] = np.repeat(by_value, counts[by_value])
    codes = np.zeros_like(base.codes)
    codes[mask] = new
    if base.centroids is None:
        return Values(codes, None, base.scales, base.zero_code, None)
    return _finish_book(codes, base.centroids, base.zero_code, fit.shape[0])


# ---------------------------------------------------------------------------------------------
# The method.


@dataclass(frozen=True, eq=False)
class _Prepared:
    g: Geometry
    target: np.ndarray
    mask: np.ndarray
    index_bits: int
    base: Values


class PruneMethod:
    name = "prune"

    def applicable(self, layer: LayerRef) -> bool:
        return (layer.op.opcode in COMPRESSIBLE_OPS and layer.weight.dtype is DType.INT8
                and layer.input.dtype is DType.INT8 and layer.weight.data is not None)

    def settings(self, layer: LayerRef) -> list[Setting]:
        """Plain 4-bit tables from 50 to 95 %, int8 values at 50 and 80 %, Huffman-coded tables
        decoded at boot from 80 to 95 %, and one per-block Huffman option (least RAM)."""
        grid = [Setting.of("prune", sparsity=s, bits=4) for s in (0.5, 0.7, 0.8, 0.9, 0.95)]
        grid += [Setting.of("prune", sparsity=s, bits=8) for s in (0.5, 0.8)]
        grid += [Setting.of("prune", sparsity=s, bits=4, huffman="boot") for s in (0.8, 0.85, 0.9, 0.95)]
        grid.append(Setting.of("prune", sparsity=0.9, bits=4, huffman="layer"))
        return grid

    def option(self, layer: LayerRef, setting: Setting) -> Option:
        return self.apply(layer, setting, None).option

    def apply(self, layer: LayerRef, setting: Setting, calib: Calibration | None) -> CompressedLayer:
        ps = PruneSetting.parse(setting)
        prep = self._prepare(layer, ps)
        vals = prep.base
        bias = layer_bias_real(layer, prep.g)
        stats = CalibStats.of(prep.g, calib) if calib is not None and ps.recover else None
        if stats is not None:
            vals = self._recover(prep, ps, stats)
        sw = self._weights(layer, prep, ps, vals, bias, stats)
        return sparse_layer(layer, prep.g, setting, sw)

    # -- steps --------------------------------------------------------------------------------

    def _prepare(self, layer: LayerRef, ps: PruneSetting) -> _Prepared:
        g = geometry(layer)
        target = weight_rows(layer.real_weights(), g).astype(np.float64)
        mask = magnitude_mask(target, ps.sparsity)
        kept = np.where(mask, target, 0.0)
        if ps.bits == 8:
            assert layer.weight.quant is not None
            own = np.asarray(layer.weight.quant.scale, dtype=np.float64)
            base = raw_values(kept, np.broadcast_to(own, (g.channels,)) if layer.float_weights is None
                              else None)
            k = ps.index_bits or self._best_k(mask, ps, lambda _k: base)
            return _Prepared(g, target, mask, k, base)
        variants: dict[bool, Values] = {}

        def values_for(k: int) -> Values:
            pin = bool(filler_counts(mask, k).any())
            if pin not in variants:
                variants[pin] = codebook_values(kept, mask, ps.bits, pin)
            return variants[pin]

        k = ps.index_bits or self._best_k(mask, ps, values_for)
        return _Prepared(g, target, mask, k, values_for(k))

    def _best_k(self, mask: np.ndarray, ps: PruneSetting, values_for: object) -> int:
        if ps.huffman is None:
            return best_index_bits(mask, ps.bits)
        assert callable(values_for)
        sizes = {}
        for k in INDEX_BITS:
            vals = values_for(k)
            table = encode(mask, vals.codes, k, ps.bits, vals.zero_code)
            sizes[k] = len(encode_table(table).stream) + lengths_table_bytes(k, ps.bits)
        return min(sizes, key=lambda k: (sizes[k], k))

    def _recover(self, prep: _Prepared, ps: PruneSetting, stats: CalibStats) -> Values:
        fit = refit_rows(prep.g, stats, prep.target, prep.mask)
        base = prep.base
        if ps.huffman is not None:
            # The coded size depends on every code's count: keep the counts.
            vals = reassign_keeping_counts(fit, prep.mask, base)
        elif ps.bits == 8:
            return raw_values(fit, None)
        else:
            vals = codebook_values(fit, prep.mask, ps.bits, base.zero_code is not None)
        if vals.centroids is None:
            return vals
        return refit_centroids(prep.g, stats, prep.target, prep.mask, vals)

    def _weights(self, layer: LayerRef, prep: _Prepared, ps: PruneSetting, vals: Values,
                 bias: np.ndarray, stats: CalibStats | None) -> SparseWeights:
        if stats is not None:
            bias = bias + bias_correction(prep.g, stats.cols, prep.target, vals.real_rows(prep.mask))
        req = requant_for(prep.g, vals.scales, bias)
        table = encode(prep.mask, vals.codes, prep.index_bits, ps.bits, vals.zero_code)
        return SparseWeights(table, vals.book, req, per_channel=ps.bits == 8, mode=ps.mode,
                             block_rows=ps.block_rows)


METHOD = register(PruneMethod())
