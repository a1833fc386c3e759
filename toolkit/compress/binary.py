"""Method "binary": binary weights (BWN), binary weights and activations (XNOR-Net / BNN), and
high-order residual quantization of both (HORQ, Li et al. ICCV 2017).

Weights.  Each output channel's filter is approximated by ``order`` = K binary planes,
``w ~ sum_k alpha_k B_k`` with ``B_k = sign(R_{k-1})``, ``alpha_k = mean |R_{k-1}|`` and
``R_k = R_{k-1} - alpha_k B_k`` (``R_0 = w``; K = 1 is BWN/XNOR-Net's binary weights).  Every
plane halves-or-better the remaining squared error, so the error falls monotonically with K.

Activations.  ``mode = "bwn"`` keeps int8 activations: the kernel adds the input values under
each weight plane (sum w.x = 2 sum_{w=+1} x - sum x, no multiplications).  ``mode = "xnor"``
also binarizes the int8 input on the device into ``act_order`` = A planes, ``x' ~ mu + sum_j
beta_j a_j`` (x' = q - input zero point), by a residual tree of integer thresholds fitted on
the host (see bf_binary.h for the exact rule); the dot products are then
``n - 2 popcount(a xor w)``.  The levels (mu, beta) are per tensor and static — XNOR-Net's
per-position activation scale would need a division on the device; the scale refit below
recovers what a static scale loses.

Integers.  The real scales are folded on the host into per-channel int16 coefficients, an
int32 bias and a Q31 multiplier/shift (TFLite Micro requantization), sized so that no int32
sum can overflow for any int8 input; the numpy forward and the C kernel compute the same exact
integers and round once.

Recovery (with calibration data).  The coefficients of each output channel (K for bwn,
K x (1 + A) for xnor) and its bias are refit by least squares to the layer's original real
pre-activation outputs on the calibration inputs, with the signs fixed; after rounding to
integers a bias correction removes the mean error that rounding left.

Storage (exact): sign bits, 1 = +1, ``[C_out][K][KH*KW][words]`` uint32 with input channels
padded to 32 bits; coefficients int16; bias, multiplier, shift int32 per channel; xnor adds
2^A - 1 int32 thresholds.  ``Option.macs`` counts binary operations: one per weight bit per
activation element per plane pair (bwn: K per MAC of the original layer, each an int8
addition; xnor: K x A one-bit XNOR-popcount steps).  :func:`op_counts` also gives the
equivalent-MAC figure (see docs/compression.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from firmware_gen.lower import ConstArray, FieldValue, KernelCall, Struct, TensorArg
from toolkit.compress import convmath as cm
from toolkit.compress.base import (
    Calibration,
    CompressedLayer,
    LayerRef,
    Option,
    Setting,
    array_flash_bytes,
    check_setting,
)
from toolkit.compress.registry import register
from toolkit.errors import CompressionError
from toolkit.model.ir import QuantParams

log = logging.getLogger(__name__)

NAME = "binary"
MODES = ("bwn", "xnor")
MAX_ORDER = 3
COEF_MAX = 32767  # coefficients are stored as int16
_COEF_BUDGET = 2**30  # bound of sum |coef * term| per channel; the bias gets 2^29
_BIAS_BUDGET = 2**29
_INT32_MAX = 2**31 - 1
_PARAMS: dict[str, tuple[type, ...]] = {"mode": (str,), "order": (int,), "act_order": (int,),
                                        "recover": (bool,)}
_ACT_LEVEL_SAMPLES = 1_000_000
_ACT_LEVEL_ITERATIONS = 4


@dataclass(frozen=True)
class BinarySpec:
    """A parsed setting: ``act_order`` is the number of activation planes (0 in bwn mode)."""

    mode: str
    order: int
    act_order: int
    recover: bool = True

    @property
    def terms(self) -> int:
        """Integer coefficients per weight plane: one (bwn) or 1 + A (xnor)."""
        return 1 if self.mode == "bwn" else 1 + self.act_order

    @staticmethod
    def parse(setting: Setting) -> BinarySpec:
        if setting.method != NAME:
            raise CompressionError(f"not a {NAME} setting: {setting.label}")
        try:
            check_setting(setting, _PARAMS)
        except ValueError as exc:
            raise CompressionError(str(exc)) from exc
        mode = setting.get("mode", "bwn")
        order = setting.get("order", 1)
        if mode not in MODES:
            raise CompressionError(f"{NAME}: mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 1 <= order <= MAX_ORDER:
            raise CompressionError(f"{NAME}: order must be 1 … {MAX_ORDER}, got {order}")
        act = setting.get("act_order")
        if mode == "bwn":
            if act is not None:
                raise CompressionError(f"{NAME}: act_order applies to mode \"xnor\" only")
            act = 0
        elif act is None:
            act = order
        elif not 1 <= act <= MAX_ORDER:
            raise CompressionError(f"{NAME}: act_order must be 1 … {MAX_ORDER}, got {act}")
        return BinarySpec(mode, order, act, bool(setting.get("recover", True)))


def binary_setting(mode: str, order: int, act_order: int | None = None) -> Setting:
    """The canonical setting (xnor settings always name act_order)."""
    if mode == "xnor":
        return Setting.of(NAME, mode=mode, order=order, act_order=order if act_order is None else act_order)
    return Setting.of(NAME, mode=mode, order=order)


# ---------------------------------------------------------------------------------------------
# Suitability: which layers binarization suits (the hint behind settings()).


@dataclass(frozen=True)
class Suitability:
    bwn: bool
    xnor: bool
    reasons: tuple[str, ...]


def suitability(layer: LayerRef) -> Suitability:
    """Whether binarizing this layer makes sense, and why not.

    * Packing pads input channels to 32 bits; when fewer than half of the bits are real
      channels (C_in < 16, or e.g. 40 of 64), a binary plane is hardly smaller than int8 weights.
    * As XNOR-Net and HORQ do, the first layer (it reads the raw input) and the classifier
      (its output is the model's output or goes straight to SOFTMAX) keep real-valued
      activations: no xnor there.
    """
    if not BinaryMethod().applicable(layer):
        return Suitability(False, False, ("not an int8 CONV_2D / FULLY_CONNECTED layer",))
    geo = cm.geometry(layer)
    reasons: list[str] = []
    words = -(-geo.c_in // 32)
    bwn = geo.c_in >= 16 * words
    if not bwn:
        reasons.append(f"{geo.c_in} input channels fill {geo.c_in} of {32 * words} bits per packed tap")
    xnor = bwn
    graph = layer.graph
    if layer.op.inputs[0] in graph.inputs:
        xnor = False
        reasons.append("first layer: binarizing the raw input loses too much")
    consumers = graph.consumers().get(layer.op.outputs[0], [])
    if layer.op.outputs[0] in graph.outputs or any(c.opcode == "SOFTMAX" for c in consumers):
        xnor = False
        reasons.append("classifier layer: its activations stay int8")
    return Suitability(bwn, xnor, tuple(reasons))


# ---------------------------------------------------------------------------------------------
# HORQ.


def horq(w: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Residual binarization of each output channel (axis 0) of ``w``.

    Returns ``signs`` (O, K, *w.shape[1:]) bool, True = +1, and ``alpha`` (O, K) with
    ``w ~ sum_k alpha[:, k] * (2 signs[:, k] - 1)``."""
    r = np.asarray(w, dtype=np.float64).reshape(w.shape[0], -1).copy()
    signs, alphas = [], []
    for _ in range(order):
        s = r >= 0
        a = np.mean(np.abs(r), axis=1)
        r -= a[:, None] * np.where(s, 1.0, -1.0)
        signs.append(s)
        alphas.append(a)
    return np.stack(signs, axis=1).reshape((w.shape[0], order, *w.shape[1:])), np.stack(alphas, axis=1)


def horq_weights(signs: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The weights the planes represent (inverse of :func:`horq`)."""
    pm = np.where(signs, 1.0, -1.0)
    return np.einsum("ok...,ok->o...", pm, alpha)


# ---------------------------------------------------------------------------------------------
# Activation planes (xnor).


@dataclass(frozen=True)
class ActLevels:
    """x' ~ mu + sum_j beta_j a_j; ``thresholds`` are the device's integer comparisons in int8
    input units, heap ordered (children of node n: 2n+1 for a = -1, 2n+2 for a = +1)."""

    mu: float
    beta: tuple[float, ...]
    thresholds: np.ndarray  # int64, 2^A - 1 values in [-128, 128]


def tree_thresholds(mu: float, beta: tuple[float, ...], zero_point: int) -> np.ndarray:
    """Node values mu + sum_{l<j} beta_l a_l rounded up to the integer grid (x' >= v iff
    x' >= ceil(v) for integer x'), in q units, clamped to [-128, 128]."""
    level = [mu]
    out: list[float] = []
    for j in range(len(beta)):
        out += level
        level = [v + s * beta[j] for v in level for s in (-1.0, 1.0)]
    q = [min(max(cm.ceil_int(v - 1e-9) + zero_point, -128), 128) for v in out]
    return np.array(q, dtype=np.int64)


def binarize(q: np.ndarray, thresholds: np.ndarray, planes: int) -> list[np.ndarray]:
    """The device's binarization rule (bf_binary.h) on int8 values: A arrays of +1/-1."""
    qi = np.asarray(q, dtype=np.int64)
    node = np.zeros(qi.shape, dtype=np.int64)
    out = []
    for _ in range(planes):
        a = qi >= thresholds[node]
        out.append(np.where(a, 1, -1).astype(np.int8))
        node = 2 * node + 1 + a
    return out


def fit_act_levels(q: np.ndarray, zero_point: int, planes: int) -> ActLevels:
    """HORQ levels of int8 activations ``q``, then a few least-squares refits of (mu, beta)
    with the signs the integer thresholds produce (Lloyd-style)."""
    xq = np.asarray(q, dtype=np.int64).reshape(-1)
    if xq.size > _ACT_LEVEL_SAMPLES:
        xq = np.random.default_rng(0).choice(xq, _ACT_LEVEL_SAMPLES, replace=False)
    xp = (xq - zero_point).astype(np.float64)
    mu = float(np.mean(xp))
    r = xp - mu
    beta = []
    for _ in range(planes):
        b = float(np.mean(np.abs(r)))
        r -= b * np.where(r >= 0, 1.0, -1.0)
        beta.append(max(b, 0.5))
    levels = ActLevels(mu, tuple(beta), tree_thresholds(mu, tuple(beta), zero_point))
    for _ in range(_ACT_LEVEL_ITERATIONS):
        a = np.stack([p.astype(np.float64) for p in binarize(xq, levels.thresholds, planes)], axis=1)
        design = np.concatenate([np.ones((xp.size, 1)), a], axis=1)
        sol, *_ = np.linalg.lstsq(design, xp, rcond=None)
        new_beta = tuple(float(b) for b in sol[1:])
        if not np.all(np.isfinite(sol)) or min(new_beta) <= 0.0:
            break
        levels = ActLevels(float(sol[0]), new_beta, tree_thresholds(float(sol[0]), new_beta, zero_point))
    return levels


# ---------------------------------------------------------------------------------------------
# What goes to flash.


@dataclass(frozen=True)
class BinaryTables:
    signs: np.ndarray  # (O, K, KH, KW, C) bool, True = +1
    coef: np.ndarray  # (O, K, T) int64 within int16
    bias: np.ndarray  # (O,) int64 within int32
    multiplier: np.ndarray  # (O,) Q31
    shift: np.ndarray  # (O,)
    thresholds: np.ndarray  # (2^A - 1,) int64; empty in bwn mode
    delta: np.ndarray  # (O,) real value of one accumulator unit / input scale (for export)


def pack_signs(signs: np.ndarray) -> np.ndarray:
    """(…, C) bool → (…, words) uint32, bit i of word j = channel 32 j + i, padding bits 0."""
    c = signs.shape[-1]
    words = -(-c // 32)
    bits = np.zeros((*signs.shape[:-1], words * 32), dtype=np.uint64)
    bits[..., :c] = signs
    weights = np.uint64(1) << np.arange(32, dtype=np.uint64)
    return (bits.reshape((*signs.shape[:-1], words, 32)) * weights).sum(axis=-1).astype(np.uint32)


def _terms(images: np.ndarray, signs: np.ndarray, spec: BinarySpec, thresholds: np.ndarray,
           geo: cm.LayerGeometry, in_zp: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(k, t, sums (N, OH, OW, O)) for every coefficient: what coef[:, k, t] multiplies."""
    pm = np.where(signs, 1.0, -1.0)
    if spec.mode == "bwn":
        xp = images.astype(np.float64) - in_zp
        for k in range(spec.order):
            yield k, 0, cm.window_sums(xp, pm[:, k], geo.win)
        return
    ones = np.ones(images.shape)
    planes = binarize(images, thresholds, spec.act_order)
    for k in range(spec.order):
        yield k, 0, cm.window_sums(ones, pm[:, k], geo.win)
        for j, a in enumerate(planes):
            yield k, 1 + j, cm.window_sums(a, pm[:, k], geo.win)


def _accumulate(images: np.ndarray, tables: BinaryTables, spec: BinarySpec,
                geo: cm.LayerGeometry, in_zp: int) -> np.ndarray:
    """The kernel's exact int32 accumulators (N, OH, OW, O) as int64."""
    acc = np.broadcast_to(tables.bias, images.shape[:1] + geo.out_hw + (geo.c_out,)).astype(np.int64)
    for k, t, sums in _terms(images, tables.signs, spec, tables.thresholds, geo, in_zp):
        acc = acc + np.rint(sums).astype(np.int64) * tables.coef[:, k, t]
    return acc


def _term_bound(spec: BinarySpec, geo: cm.LayerGeometry, iq: cm.IOQuant) -> int:
    """max |term| over any int8 input: n * max|x'| (bwn) or n (xnor)."""
    return geo.fan_in * (iq.max_abs_input if spec.mode == "bwn" else 1)


def _integerize(real: np.ndarray, intercept: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray,
                                                                               np.ndarray]:
    """Real coefficients (O, K, T) and intercepts (O,) in accumulator-real units → int16
    coefficients, int32 bias and the unit delta (O,) such that real ~ delta * integer, with
    sum |coef| * bound + |bias| < 2^31 (no int32 overflow for any input)."""
    flat = np.abs(real.reshape(real.shape[0], -1))
    delta = np.maximum.reduce([flat.max(axis=1) / COEF_MAX, flat.sum(axis=1) * bound / _COEF_BUDGET,
                               np.abs(intercept) / _BIAS_BUDGET])
    delta = np.where(delta > 0, delta, 1.0)
    coef = np.rint(real / delta[:, None, None]).astype(np.int64)
    bias = np.rint(intercept / delta).astype(np.int64)
    return coef, bias, delta


def _within_int32(coef: np.ndarray, bias: np.ndarray, bound: int) -> bool:
    worst = np.abs(coef).reshape(coef.shape[0], -1).sum(axis=1) * bound + np.abs(bias)
    return bool(np.all(worst <= _INT32_MAX)) and bool(np.all(np.abs(coef) <= COEF_MAX))


# ---------------------------------------------------------------------------------------------
# Fitting.


@dataclass(frozen=True)
class _Layer:
    ref: LayerRef
    geo: cm.LayerGeometry
    iq: cm.IOQuant
    w: np.ndarray  # real O x KH x KW x C
    b: np.ndarray  # real bias (O,)


def _prepare(layer: LayerRef) -> _Layer:
    geo = cm.geometry(layer)
    return _Layer(layer, geo, cm.io_quant(layer, geo.activation), cm.real_filter(layer),
                  cm.real_bias(layer, geo.c_out))


def _initial_coefficients(lay: _Layer, spec: BinarySpec, alpha: np.ndarray,
                          levels: ActLevels | None) -> tuple[np.ndarray, np.ndarray]:
    """HORQ's own scales in accumulator-real units (x' units): (O, K, T) and the intercept."""
    if spec.mode == "bwn":
        real = alpha[:, :, None]
    else:
        assert levels is not None
        real = alpha[:, :, None] * np.array([levels.mu, *levels.beta])[None, None, :]
    return real, lay.b / lay.iq.in_scale


def _target(lay: _Layer, images: np.ndarray) -> np.ndarray:
    """The original layer's real pre-activation outputs divided by the input scale."""
    xp = images.astype(np.float64) - lay.iq.in_zp
    return cm.window_sums(xp, lay.w, lay.geo.win) + lay.b / lay.iq.in_scale


def _fit_features(lay: _Layer, spec: BinarySpec, signs: np.ndarray, thresholds: np.ndarray,
                  images: np.ndarray) -> np.ndarray:
    """(R, O, K*T) rows of every term (the fit subsample)."""
    cols: list[np.ndarray] = []
    for _, _, sums in _terms(images, signs, spec, thresholds, lay.geo, lay.iq.in_zp):
        cols.append(sums.reshape(-1, lay.geo.c_out))
    return np.stack(cols, axis=2)


def _fit_images(lay: _Layer, spec: BinarySpec, calib: Calibration) -> np.ndarray:
    images, _ = cm.to_images(lay.ref, lay.geo, calib.inputs)
    n = cm.fit_images(lay.geo, lay.geo.c_out * (spec.order * spec.terms + 2), images.shape[0])
    return images[:n]


def build_tables(layer: LayerRef, spec: BinarySpec, calib: Calibration | None) -> BinaryTables:
    """Signs, integer coefficients and requantization of ``layer`` (refit when ``calib``)."""
    lay = _prepare(layer)
    signs, alpha = horq(lay.w, spec.order)
    levels: ActLevels | None = None
    thresholds = np.zeros(0, dtype=np.int64)
    if spec.mode == "xnor":
        source = calib.inputs if calib is not None else np.arange(-128, 128)
        levels = fit_act_levels(source, lay.iq.in_zp, spec.act_order)
        thresholds = levels.thresholds
    real, intercept = _initial_coefficients(lay, spec, alpha, levels)
    images = _fit_images(lay, spec, calib) if calib is not None else None
    if images is not None and spec.recover:
        feats = _fit_features(lay, spec, signs, thresholds, images)
        rows = cm.fit_rows(feats.shape[0])
        sol = cm.least_squares(feats[rows], _target(lay, images).reshape(-1, lay.geo.c_out)[rows])
        real = sol[:, :-1].reshape(real.shape)
        intercept = sol[:, -1]
    bound = _term_bound(spec, lay.geo, lay.iq)
    coef, bias, delta = _integerize(real, intercept, bound)
    tables = _finish(lay, signs, coef, bias, delta, thresholds)
    if images is not None and spec.recover:
        tables = _bias_correction(lay, spec, tables, images, bound)
    if not _within_int32(tables.coef, tables.bias, bound):
        raise CompressionError(f"{layer.op.label}: binary coefficients exceed the int32 budget")
    return tables


def _finish(lay: _Layer, signs: np.ndarray, coef: np.ndarray, bias: np.ndarray, delta: np.ndarray,
            thresholds: np.ndarray) -> BinaryTables:
    mult, shift = cm.multipliers(lay.iq.in_scale * delta / lay.iq.out_scale, lay.ref.op.label)
    return BinaryTables(signs, coef, bias, mult, shift, thresholds, delta)


def _bias_correction(lay: _Layer, spec: BinarySpec, tables: BinaryTables, images: np.ndarray,
                     bound: int) -> BinaryTables:
    """Shift each channel's bias by the mean error the integer coefficients leave."""
    acc = _accumulate(images, tables, spec, lay.geo, lay.iq.in_zp).reshape(-1, lay.geo.c_out)
    err = _target(lay, images).reshape(-1, lay.geo.c_out) - acc * tables.delta
    bias = tables.bias + np.rint(np.mean(err, axis=0) / tables.delta).astype(np.int64)
    if not _within_int32(tables.coef, bias, bound):
        return tables
    return BinaryTables(tables.signs, tables.coef, bias, tables.multiplier, tables.shift,
                        tables.thresholds, tables.delta)


# ---------------------------------------------------------------------------------------------
# Forward, costs, kernel call.


def forward(layer: LayerRef, spec: BinarySpec, tables: BinaryTables, x: np.ndarray) -> np.ndarray:
    """int8 outputs of the binarized layer, bit-identical to its C kernel."""
    geo = cm.geometry(layer)
    iq = cm.io_quant(layer, geo.activation)
    images, lead = cm.to_images(layer, geo, np.asarray(x, dtype=np.int8))
    acc = _accumulate(images, tables, spec, geo, iq.in_zp)
    req = cm.requantizer(tables.multiplier, tables.shift, iq.out_zp, iq.act_min, iq.act_max)
    return cm.from_images(req.apply(acc), lead)


@dataclass(frozen=True)
class BinaryOps:
    """Work per inference.  ``binary_ops``: one per weight bit and activation element per
    plane pair (Option.macs).  ``word_ops``: 32-bit word steps of the kernel's inner loop
    (xnor: XOR + popcount + add per word and activation plane, plus one popcount of the weight
    word; bwn: one per packed weight word, each followed by up to 32 conditional adds).
    ``equivalent_macs``: the int8 MACs of similar cost on a 32-bit MCU — bwn: binary_ops
    (each an add, no multiply); xnor: word_ops."""

    binary_ops: int
    word_ops: int
    equivalent_macs: int


def op_counts(layer: LayerRef, setting: Setting) -> BinaryOps:
    spec = BinarySpec.parse(setting)
    geo = cm.geometry(layer)
    words = -(-geo.c_in // 32)
    per_output = spec.order * geo.fan_in
    if spec.mode == "bwn":
        binary = geo.outputs * per_output
        word = geo.outputs * spec.order * geo.taps * words
        return BinaryOps(binary, word, binary)
    binary = geo.outputs * per_output * spec.act_order
    word = geo.outputs * spec.order * geo.taps * words * (1 + spec.act_order)
    return BinaryOps(binary, word, word)


def _symbols(layer: LayerRef, spec: BinarySpec) -> str:
    fmt = "binary" if spec.mode == "bwn" else "xnor"
    op = "conv2d" if layer.op.opcode == "CONV_2D" else "fully_connected"
    return f"bf_{op}_{fmt}_s8"


def _scratch_bytes(geo: cm.LayerGeometry, spec: BinarySpec) -> int:
    if spec.mode == "bwn":
        return 0
    words = -(-geo.c_in // 32)
    return geo.in_hw[0] * geo.in_hw[1] * spec.act_order * words * 4


def _flash_bytes(geo: cm.LayerGeometry, spec: BinarySpec) -> int:
    words = -(-geo.c_in // 32)
    total = array_flash_bytes("uint32_t", geo.c_out * spec.order * geo.taps * words)
    total += array_flash_bytes("int16_t", geo.c_out * spec.order * spec.terms)
    total += 3 * array_flash_bytes("int32_t", geo.c_out)  # bias, multiplier, shift
    if spec.mode == "xnor":
        total += array_flash_bytes("int32_t", 2**spec.act_order - 1)
    return total


def _dims(n: int, h: int, w: int, c: int) -> Struct:
    return Struct("bf_dims4", (("n", n), ("h", h), ("w", w), ("c", c)))


def _ints(ctype: str, values: np.ndarray) -> ConstArray:
    return ConstArray(ctype, tuple(int(v) for v in np.asarray(values).reshape(-1)))


def kernel_call(layer: LayerRef, spec: BinarySpec, tables: BinaryTables) -> KernelCall:
    geo = cm.geometry(layer)
    iq = cm.io_quant(layer, geo.activation)
    words = -(-geo.c_in // 32)
    symbol = _symbols(layer, spec)
    win = geo.win
    fields: list[tuple[str, FieldValue]]
    if layer.op.opcode == "CONV_2D":
        n, (h, w), (oh, ow) = geo.images, geo.in_hw, geo.out_hw
        fields = [("input", _dims(n, h, w, geo.c_in)),
                  ("filter", _dims(geo.c_out, win.filter_h, win.filter_w, geo.c_in)),
                  ("output", _dims(n, oh, ow, geo.c_out)),
                  ("stride_h", win.stride_h), ("stride_w", win.stride_w),
                  ("dilation_h", win.dilation_h), ("dilation_w", win.dilation_w),
                  ("pad_top", win.pad_top), ("pad_left", win.pad_left)]
    else:
        fields = [("batches", geo.images), ("depth", geo.c_in), ("units", geo.c_out)]
    fields += [("words", words), ("planes", spec.order)]
    if spec.mode == "bwn":
        fields += [("input_offset", -iq.in_zp)]
    else:
        fields += [("act_planes", spec.act_order)]
    fields += [("output_offset", iq.out_zp), ("act_min", iq.act_min), ("act_max", iq.act_max)]
    if spec.mode == "xnor":
        fields += [("act_threshold", _ints("int32_t", tables.thresholds))]
    fields += [("weights", _ints("uint32_t", pack_signs(tables.signs))),
               ("coef", _ints("int16_t", tables.coef)),
               ("bias", _ints("int32_t", tables.bias)),
               ("multiplier", _ints("int32_t", tables.multiplier)),
               ("shift", _ints("int32_t", tables.shift))]
    args = (TensorArg(layer.op.inputs[0], "int8_t"), TensorArg(layer.op.outputs[0], "int8_t", output=True))
    scratch = _scratch_bytes(geo, spec)
    return KernelCall(layer.op.index, layer.op.opcode, symbol, f"{symbol}_params", tuple(fields), args,
                      "binary", takes_scratch=spec.mode == "xnor", scratch_bytes=scratch)


def export(layer: LayerRef, spec: BinarySpec, tables: BinaryTables) -> tuple[
        np.ndarray | None, QuantParams | None, np.ndarray | None]:
    """bwn layers as an int8 layer for --export-tflite: the effective weights
    delta * sum_k coef_k B_k requantized per channel (approximate: the sums of K planes have
    more levels than int8).  xnor layers binarize activations and cannot be exported."""
    if spec.mode != "bwn":
        return None, None, None
    pm = np.where(tables.signs, 1, -1).astype(np.int64)
    w_int = np.einsum("ok...,ok->o...", pm, tables.coef[:, :, 0])
    peak = np.max(np.abs(w_int.reshape(w_int.shape[0], -1)), axis=1).astype(np.float64)
    peak = np.where(peak > 0, peak, 1.0)
    q = np.clip(np.rint(w_int * (127.0 / peak).reshape((-1,) + (1,) * (w_int.ndim - 1))), -127, 127)
    scale = tables.delta * peak / 127.0
    bias = np.rint(tables.bias * tables.delta / scale).astype(np.int32)
    shape = layer.weight.shape
    quant = QuantParams(tuple(float(np.float32(s)) for s in scale), (0,) * len(scale), 0)
    return q.astype(np.int8).reshape(shape), quant, bias


# ---------------------------------------------------------------------------------------------
# The method.


class BinaryMethod:
    name = NAME

    def applicable(self, layer: LayerRef) -> bool:
        if layer.op.opcode not in ("CONV_2D", "FULLY_CONNECTED") or not cm.is_int8_layer(layer):
            return False
        try:
            geo = cm.geometry(layer)
        except CompressionError:
            return False
        # 2 * (sum of up to fan_in values of at most 255) must stay an int32 in the bwn kernel.
        return 2 * 255 * geo.fan_in < 2**31

    def settings(self, layer: LayerRef) -> list[Setting]:
        """Orders 1–3 in bwn mode, and xnor with equal weight/activation orders, on the layers
        :func:`suitability` says binarization suits (others can still be binarized by name)."""
        if not self.applicable(layer):
            return []
        suit = suitability(layer)
        out = [binary_setting("bwn", k) for k in range(1, MAX_ORDER + 1)] if suit.bwn else []
        if suit.xnor:
            out += [binary_setting("xnor", k) for k in range(1, MAX_ORDER + 1)]
        return out

    def option(self, layer: LayerRef, setting: Setting) -> Option:
        spec = BinarySpec.parse(setting)
        if not self.applicable(layer):
            raise CompressionError(f"{layer.op.label}: {NAME} needs an int8 CONV_2D or FULLY_CONNECTED layer")
        geo = cm.geometry(layer)
        return Option(layer.op.index, setting, _flash_bytes(geo, spec), _scratch_bytes(geo, spec),
                      op_counts(layer, setting).binary_ops, _symbols(layer, spec))

    def apply(self, layer: LayerRef, setting: Setting, calib: Calibration | None) -> CompressedLayer:
        option = self.option(layer, setting)
        spec = BinarySpec.parse(setting)
        tables = build_tables(layer, spec, calib)
        call = kernel_call(layer, spec, tables)
        weights, quant, bias = export(layer, spec, tables)

        def run(x: np.ndarray) -> np.ndarray:
            return forward(layer, spec, tables, x)

        return CompressedLayer(option, call, run, weights, quant, bias)


register(BinaryMethod())
