"""Method ``kmeans``: weight sharing (Deep Compression, Han et al. 2016, stage two).

The real weights of a layer (or of each output channel) are clustered into ``2^bits``
centroids by 1-D k-means; each weight is stored as a ``bits``-bit index into the codebook.

Storage (exact flash bytes): indices packed LSB-first in the op's weight layout; the codebook
as **int8 values** with a per-channel scale folded into the requantization (per-layer codebook:
one scale, ``max|centroid| / 127``; per-channel codebooks: one scale per channel), so the kernel
multiplies int8 codebook values by int8 activations and accumulates exactly in int32 like every
other int8 kernel; plus int32 bias, multiplier and shift per output channel.  The codebook always
has ``2^bits`` entries (per channel: ``channels × 2^bits``), so the size does not depend on the
data.  Kernels: ``bf_{fully_connected,conv2d,depthwise_conv2d}_codebook_s8``.

Parameters (docs/compression.md):

* ``bits`` (int, 2…8, default 4): index width, codebook of ``2^bits`` entries;
* ``per_channel`` (bool, default false): one codebook per output channel instead of per layer;
* ``init`` (``"linear"`` or ``"density"``, default ``"linear"``): centroids start evenly spaced
  between the smallest and largest weight, or at evenly spaced quantiles of the weights
  (Deep Compression's density-based initialisation); then Lloyd iterations (deterministic);
* ``recover`` (bool, default true): with calibration data, refit the codebook values by least
  squares so that the layer's pre-activation outputs on the calibration inputs match those of
  the original weights (assignments fixed, ridge towards the k-means centroids), then empirical
  bias correction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_gen.lower import ConstArray, FieldValue
from toolkit.compress.base import (
    COMPRESSIBLE_OPS,
    Calibration,
    CompressedLayer,
    LayerRef,
    Option,
    Setting,
    array_flash_bytes,
    check_setting,
)
from toolkit.compress.common import (
    Geometry,
    Requant,
    bias_correction,
    channel_group,
    compressed_call,
    export_quant,
    geometry,
    geometry_fields,
    hessians,
    input_columns,
    integer_forward,
    kernel_symbol,
    layer_bias_real,
    pack_bits,
    packed_bytes,
    quant_fields,
    requant_arrays,
    requant_for,
    rows_to_weights,
    unpack_bits,
    weight_rows,
)
from toolkit.compress.registry import register
from toolkit.model.ir import DType

FORMAT = "codebook"
FAMILY = "packed"
INITS = ("linear", "density")
_PARAMS: dict[str, tuple[type, ...]] = {"bits": (int,), "per_channel": (bool,), "init": (str,),
                                        "recover": (bool,)}
_LLOYD_ITERATIONS = 50


@dataclass(frozen=True)
class KMeansSetting:
    bits: int
    per_channel: bool
    init: str
    recover: bool

    @staticmethod
    def parse(setting: Setting) -> KMeansSetting:
        check_setting(setting, _PARAMS)
        bits = int(setting.get("bits", 4))
        if not 2 <= bits <= 8:
            raise ValueError(f"method 'kmeans': bits must be 2…8, got {bits}")
        init = str(setting.get("init", "linear"))
        if init not in INITS:
            raise ValueError(f"method 'kmeans': init must be one of {', '.join(INITS)}, got {init!r}")
        return KMeansSetting(bits, bool(setting.get("per_channel", False)), init,
                             bool(setting.get("recover", True)))


# ---------------------------------------------------------------------------------------------
# 1-D k-means.


def cluster_1d(values: np.ndarray, k: int, init: str = "linear",
               iterations: int = _LLOYD_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic 1-D k-means: (sorted centroids [k], label of each value).

    With at most ``k`` distinct values the centroids are those values (padded by repeating the
    largest).  Empty clusters keep their previous centroid.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    distinct = np.unique(v)
    if distinct.size <= k:
        cents = np.concatenate([distinct, np.full(k - distinct.size, distinct[-1])])
        return cents, np.searchsorted(distinct, v)
    if init == "density":
        cents = np.quantile(v, (np.arange(k) + 0.5) / k)
    else:
        cents = np.linspace(v.min(), v.max(), k)
    labels = assign(v, cents)
    for _ in range(iterations):
        sums = np.bincount(labels, weights=v, minlength=k)
        counts = np.bincount(labels, minlength=k)
        cents = np.where(counts > 0, sums / np.maximum(counts, 1), cents)
        cents = np.sort(cents)
        new = assign(v, cents)
        if np.array_equal(new, labels):
            break
        labels = new
    return cents, labels


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (``centroids`` sorted ascending; ties to the lower one)."""
    mids = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(mids, values, side="right") if mids.size else np.zeros(values.shape, np.int64)


# ---------------------------------------------------------------------------------------------
# Codebook least-squares refit.


def _cluster_sums(h: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """``H · M`` where M is the one-hot (len(labels) × k) assignment matrix: column sums of H
    grouped by label."""
    out = np.zeros((h.shape[0], k))
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    present, starts = np.unique(sorted_labels, return_index=True)
    out[:, present] = np.add.reduceat(h[:, order], starts, axis=1)
    return out


def refit_codebooks(g: Geometry, hess: list[np.ndarray], target: np.ndarray, labels: np.ndarray,
                    books: np.ndarray, per_channel: bool) -> np.ndarray:
    """Least-squares codebook values (real) with labels fixed.

    Minimises ``Σ_c ‖X_c (w_c − M_c b)‖²`` (b: the channel's or the shared codebook), i.e. the
    normal equations ``(Σ M_cᵀ H M_c) b = Σ M_cᵀ H w_c`` with ``H = XᵀX`` of the channel's input
    group, plus a ridge ``λ‖b − b₀‖²`` (λ = 1e-4 · mean diagonal) that keeps clusters the data
    does not determine at their k-means value.
    """
    k = books.shape[1]
    a_tot, r_tot = np.zeros((k, k)), np.zeros(k)
    out = books.copy()
    for c in range(g.channels):
        h = hess[channel_group(g, c)]
        hm = _cluster_sums(h, labels[c], k)
        a = _cluster_sums(hm.T, labels[c], k)  # Mᵀ H M (symmetric)
        r = np.bincount(labels[c], weights=h @ target[c], minlength=k)
        if per_channel:
            out[c] = _ridge(a, r, books[c])
        else:
            a_tot += a
            r_tot += r
    if not per_channel:
        out[:] = _ridge(a_tot, r_tot, books[0])
    return out


def _ridge(a: np.ndarray, r: np.ndarray, b0: np.ndarray) -> np.ndarray:
    lam = 1e-4 * max(float(np.trace(a)) / a.shape[0], 1e-12)
    return np.linalg.solve(a + lam * np.eye(a.shape[0]), r + lam * b0)


# ---------------------------------------------------------------------------------------------
# The method.


def _int8_books(books: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real codebooks (rows) → int8 codebooks and their scales (float32 values), one per row."""
    amax = np.abs(books).max(axis=1)
    scale = np.asarray(np.where(amax > 0, amax / 127.0, 1.0), dtype=np.float32).astype(np.float64)
    return np.clip(np.rint(books / scale[:, None]), -127, 127).astype(np.int64), scale


class KMeansMethod:
    name = "kmeans"

    def applicable(self, layer: LayerRef) -> bool:
        return (layer.op.opcode in COMPRESSIBLE_OPS and layer.weight.dtype is DType.INT8
                and layer.input.dtype is DType.INT8 and layer.weight.data is not None)

    def settings(self, layer: LayerRef) -> list[Setting]:
        return [Setting.of("kmeans", bits=b) for b in (2, 3, 4, 5, 6)] + [
            Setting.of("kmeans", bits=4, per_channel=True)]

    def option(self, layer: LayerRef, setting: Setting) -> Option:
        ks = KMeansSetting.parse(setting)
        g = geometry(layer)
        books = (g.channels if ks.per_channel else 1) << ks.bits
        flash = (array_flash_bytes("uint8_t", packed_bytes(g.weight_count, ks.bits))
                 + array_flash_bytes("int8_t", books) + 3 * array_flash_bytes("int32_t", g.channels))
        return Option(layer.op.index, setting, flash, 0, g.macs, kernel_symbol(g, FORMAT))

    def apply(self, layer: LayerRef, setting: Setting, calib: Calibration | None) -> CompressedLayer:
        ks = KMeansSetting.parse(setting)
        g = geometry(layer)
        k = 1 << ks.bits
        target = weight_rows(layer.real_weights(), g).astype(np.float64)
        books, labels = self._cluster(target, k, ks)
        cols = input_columns(g, calib.inputs) if calib is not None and ks.recover else None
        if cols is not None:
            books = refit_codebooks(g, hessians(cols), target, labels, books, ks.per_channel)
        cb_int, cb_scale = _int8_books(books[: 1 if not ks.per_channel else None])
        scale = cb_scale if ks.per_channel else np.repeat(cb_scale, g.channels)
        rows = np.take_along_axis(cb_int if ks.per_channel else np.repeat(cb_int, g.channels, axis=0),
                                  labels, axis=1)
        bias = layer_bias_real(layer, g)
        if cols is not None:
            bias = bias + bias_correction(g, cols, target, rows * scale[:, None])
        req = requant_for(g, scale, bias)
        return self._layer(layer, g, setting, ks, labels, cb_int, req)

    def _cluster(self, target: np.ndarray, k: int, ks: KMeansSetting) -> tuple[np.ndarray, np.ndarray]:
        """Real codebooks (one row per channel; all rows equal when shared) and labels (rows)."""
        if ks.per_channel:
            pairs = [cluster_1d(row, k, ks.init) for row in target]
            return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        cents, labels = cluster_1d(target, k, ks.init)
        return np.repeat(cents[None], target.shape[0], axis=0), labels.reshape(target.shape)

    def _layer(self, layer: LayerRef, g: Geometry, setting: Setting, ks: KMeansSetting,
               labels: np.ndarray, cb_int: np.ndarray, req: Requant) -> CompressedLayer:
        option = self.option(layer, setting)
        packed = pack_bits(rows_to_weights(labels, g), ks.bits)
        codebook = cb_int.reshape(-1)
        stride = (1 << ks.bits) if ks.per_channel else 0
        params: list[tuple[str, FieldValue]] = [
            *geometry_fields(g), ("bits", ks.bits), *quant_fields(g),
            ("indices", ConstArray("uint8_t", tuple(int(v) for v in packed))),
            ("codebook", ConstArray("int8_t", tuple(int(v) for v in codebook))),
            ("codebook_stride", stride), *requant_arrays(req)]
        call = compressed_call(layer, g, FORMAT, FAMILY, params)
        # Decode from the stored bytes, as the kernel does.
        idx = weight_rows(unpack_bits(packed, ks.bits, g.weight_count, signed=False).reshape(g.w_shape), g)
        base = (np.arange(g.channels) * stride)[:, None]
        decoded = rows_to_weights(codebook[base + idx], g)

        def forward(x: np.ndarray) -> np.ndarray:
            return integer_forward(g, decoded, req, x)

        return CompressedLayer(option, call, forward, export_weights=decoded.astype(np.int8),
                               export_quant=export_quant(g, req), export_bias=req.bias.astype(np.int32))


METHOD = register(KMeansMethod())
