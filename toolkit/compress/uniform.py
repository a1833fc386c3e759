"""Method ``quant``: uniform symmetric per-channel weight quantization to 2…8 bits, packed.

Storage (exact flash bytes): the weights as ``bits``-bit two's-complement integers in
``[-(2^(bits-1) - 1), 2^(bits-1) - 1]``, packed LSB-first in the kernel's walk order (FC
``[units][depth]``, conv OHWI, depthwise 1HW(C·M) — the op's own layout), plus int32 bias,
multiplier and shift per output channel.  Activations stay int8 with the layer's quantization.
The kernels ``bf_{fully_connected,conv2d,depthwise_conv2d}_packed_s8`` unpack on the fly.

Parameters (docs/compression.md):

* ``bits`` (int, 2…8, default 4);
* ``recover`` (bool, default true): MSE-optimal clipping — per channel, the scale whose
  quantization error ``‖w − Q(w)‖²`` is least among 40 clipping ratios of ``max|w|`` in
  [0.3, 1] — and, with calibration data, empirical bias correction;
* ``gptq`` (bool, default false): with calibration data and ``recover``, quantize the columns
  of each channel in order and spread each column's error over the remaining columns with the
  inverse Hessian ``(XᵀX + λI)⁻¹`` of the calibration inputs (Frantar et al. 2023, GPTQ),
  before bias correction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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

FORMAT = "packed"
FAMILY = "packed"
_PARAMS: dict[str, tuple[type, ...]] = {"bits": (int,), "recover": (bool,), "gptq": (bool,)}
_CLIP_RATIOS = np.linspace(0.3, 1.0, 40)


@dataclass(frozen=True)
class QuantSetting:
    bits: int
    recover: bool
    gptq: bool

    @staticmethod
    def parse(setting: Setting) -> QuantSetting:
        check_setting(setting, _PARAMS)
        bits = int(setting.get("bits", 4))
        if not 2 <= bits <= 8:
            raise ValueError(f"method 'quant': bits must be 2…8, got {bits}")
        return QuantSetting(bits, bool(setting.get("recover", True)), bool(setting.get("gptq", False)))


def qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def quantize_rows(rows: np.ndarray, scale: np.ndarray, bits: int) -> np.ndarray:
    """Symmetric quantization of each row with its scale (int64)."""
    m = qmax(bits)
    return np.clip(np.rint(rows / scale[:, None]), -m, m).astype(np.int64)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def choose_scales(rows: np.ndarray, bits: int, search: bool) -> np.ndarray:
    """Per-row scale (float32 values): ``max|w| / qmax``, or the MSE-optimal clipped one."""
    amax = np.abs(rows).max(axis=1)
    amax = np.where(amax > 0, amax, 1.0)
    if not search:
        return _f32(amax / qmax(bits))
    best = np.full(rows.shape[0], np.inf)
    scale = _f32(amax / qmax(bits))
    for r in _CLIP_RATIOS:
        s = _f32(amax * r / qmax(bits))
        err = ((quantize_rows(rows, s, bits) * s[:, None] - rows) ** 2).sum(axis=1)
        better = err < best
        best = np.where(better, err, best)
        scale = np.where(better, s, scale)
    return scale


def gptq(rows: np.ndarray, hess: Sequence[np.ndarray], group_of: Callable[[int], int],
         quant: Callable[[np.ndarray, np.ndarray], np.ndarray], damp: float = 0.01) -> np.ndarray:
    """GPTQ: quantize columns left to right, compensating each column's error on the columns
    not yet quantized with the upper Cholesky factor of the inverse (damped) Hessian.

    ``rows``: real weights (channels, k); ``hess[g]``: XᵀX of input group g; ``group_of(c)``:
    the group of channel c; ``quant(values, channels)`` returns the dequantized values of one
    column for those channels.  Returns the dequantized weights.
    """
    out = np.empty_like(rows, dtype=np.float64)
    chans_of: dict[int, list[int]] = {}
    for c in range(rows.shape[0]):
        chans_of.setdefault(group_of(c), []).append(c)
    for grp, chans in chans_of.items():
        h = np.array(hess[grp], dtype=np.float64)
        w = rows[chans].astype(np.float64)
        dead = np.diag(h) == 0
        h[dead, dead] = 1.0
        w[:, dead] = 0.0
        h += damp * np.mean(np.diag(h)) * np.eye(h.shape[0])
        u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: H⁻¹ = Uᵀ U
        idx = np.array(chans)
        for j in range(w.shape[1]):
            q = quant(w[:, j], idx)
            err = (w[:, j] - q) / u[j, j]
            w[:, j + 1:] -= np.outer(err, u[j, j + 1:])
            w[:, j] = q
        out[chans] = w
    return out


class UniformQuantMethod:
    name = "quant"

    def applicable(self, layer: LayerRef) -> bool:
        return (layer.op.opcode in COMPRESSIBLE_OPS and layer.weight.dtype is DType.INT8
                and layer.input.dtype is DType.INT8 and layer.weight.data is not None)

    def settings(self, layer: LayerRef) -> list[Setting]:
        return [Setting.of("quant", bits=8), Setting.of("quant", bits=4),
                Setting.of("quant", bits=4, gptq=True), Setting.of("quant", bits=2, gptq=True)]

    def option(self, layer: LayerRef, setting: Setting) -> Option:
        qs = QuantSetting.parse(setting)
        g = geometry(layer)
        flash = (array_flash_bytes("uint8_t", packed_bytes(g.weight_count, qs.bits))
                 + 3 * array_flash_bytes("int32_t", g.channels))
        return Option(layer.op.index, setting, flash, 0, g.macs, kernel_symbol(g, FORMAT))

    def apply(self, layer: LayerRef, setting: Setting, calib: Calibration | None) -> CompressedLayer:
        qs = QuantSetting.parse(setting)
        g = geometry(layer)
        target = weight_rows(layer.real_weights(), g).astype(np.float64)
        scale = choose_scales(target, qs.bits, qs.recover)
        bias = layer_bias_real(layer, g)
        cols = input_columns(g, calib.inputs) if calib is not None and qs.recover else None
        if cols is not None and qs.gptq:
            m = qmax(qs.bits)
            deq = gptq(target, hessians(cols), lambda c: channel_group(g, c),
                       lambda v, ch: np.clip(np.rint(v / scale[ch]), -m, m) * scale[ch])
            q = np.rint(deq / scale[:, None]).astype(np.int64)
        else:
            q = quantize_rows(target, scale, qs.bits)
        if cols is not None:
            bias = bias + bias_correction(g, cols, target, q * scale[:, None])
        req = requant_for(g, scale, bias)
        return build_layer(layer, g, setting, self.option(layer, setting), q, req, qs.bits)


def build_layer(layer: LayerRef, g: Geometry, setting: Setting, option: Option, q_rows: np.ndarray,
                req: Requant, bits: int) -> CompressedLayer:
    """The packed layer: call with the packed weights, forward decoding the same bytes."""
    w = rows_to_weights(q_rows, g)
    packed = pack_bits(w, bits)
    params: list[tuple[str, FieldValue]] = [*geometry_fields(g), ("bits", bits), *quant_fields(g),
                                            ("weights", ConstArray("uint8_t", tuple(int(v) for v in packed))),
                                            *requant_arrays(req)]
    call = compressed_call(layer, g, FORMAT, FAMILY, params)
    decoded = unpack_bits(packed, bits, g.weight_count, signed=True).reshape(g.w_shape)

    def forward(x: np.ndarray) -> np.ndarray:
        return integer_forward(g, decoded, req, x)

    return CompressedLayer(option, call, forward, export_weights=decoded.astype(np.int8),
                           export_quant=export_quant(g, req), export_bias=req.bias.astype(np.int32))


METHOD = register(UniformQuantMethod())
