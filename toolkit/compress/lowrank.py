"""Method "lowrank": a weight layer as two smaller int8 layers through an int8 intermediate.

Schemes (``scheme``):

* ``svd`` (FULLY_CONNECTED): truncated SVD ``W ~ U V`` — V (rank x depth) then U (units x rank).
* ``separable`` (CONV_2D with a KH x KW > 1 window): Jaderberg et al. 2014, scheme 2 — KH x 1
  vertical filters into ``rank`` channels, then 1 x KW horizontal filters to the outputs; the
  factors are the optimal ones from the SVD of the filter reshaped to (KH·C_in) x (C_out·KW)
  (Tai et al. 2016).
* ``basis`` (CONV_2D): a KH x KW convolution into ``rank`` basis channels, then a 1x1
  convolution to the outputs (the SVD of the filter as a C_out x (KH·KW·C_in) matrix).

``rank`` fixes the number of intermediate channels; ``energy`` (0 < e <= 1) instead takes the
smallest rank whose singular values keep that fraction of the squared Frobenius norm.

Arithmetic.  Both stages are int8 convolutions with symmetric per-channel int8 weights and
TFLite Micro's fixed-point requantization (bf_lowrank.h): the first writes the intermediate,
quantized per tensor (scale and zero point from its range on calibration data), the second adds
the bias and applies the layer's activation clamp.  Padded taps are skipped in both stages, so
padding is exactly the original layer's.

Recovery (with calibration data, Jaderberg's "data reconstruction"): for ``svd``/``basis`` the
basis U is the principal subspace of the layer's responses on the calibration inputs (Zhang et
al. 2015) rather than of the weights; then the second factor and the bias are refit by least
squares so that, reading the int8 intermediate the device actually computes, they reproduce the
original layer's real pre-activation outputs — absorbing the first factor's and the
intermediate's quantization; a final bias correction removes the mean error of rounding the
refit factor to int8.

Costs: flash = both int8 factors, the bias and a multiplier/shift per channel of each stage;
RAM = one image of the intermediate (scratch); MACs = both stages' multiply-accumulates.
"""

from __future__ import annotations

import logging
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
from toolkit.oracle.padding import Window2D

log = logging.getLogger(__name__)

NAME = "lowrank"
SCHEMES = ("svd", "separable", "basis")
_PARAMS: dict[str, tuple[type, ...]] = {"rank": (int,), "energy": (float, int), "scheme": (str,),
                                        "recover": (bool,)}
_GRID = (1 / 16, 1 / 8, 1 / 4, 1 / 2)  # ranks the planner explores, as fractions of the maximum
_INT32_MAX = 2**31 - 1
_STD_RANGE = 4.0  # no calibration: the intermediate's range is mean ± 4 std of a uniform input


@dataclass(frozen=True)
class LowRankSpec:
    scheme: str
    rank: int
    recover: bool = True


def schemes_for(geo: cm.LayerGeometry) -> tuple[str, ...]:
    """The schemes that apply to a layer; the first is the default."""
    if geo.opcode == "FULLY_CONNECTED":
        return ("svd",)
    if geo.taps == 1:
        return ("basis",)
    return ("separable", "basis")


def factor_matrix(w: np.ndarray, scheme: str) -> np.ndarray:
    """The matrix whose truncated SVD gives the factors of real filter ``w`` (O x KH x KW x C)."""
    if scheme == "separable":
        o, kh, kw, c = w.shape
        return w.transpose(1, 3, 0, 2).reshape(kh * c, o * kw)  # rows (ky, c), cols (o, kx)
    return w.reshape(w.shape[0], -1)


def parse(layer: LayerRef, setting: Setting) -> LowRankSpec:
    """Validate a setting for a layer and resolve ``energy`` to a rank."""
    if setting.method != NAME:
        raise CompressionError(f"not a {NAME} setting: {setting.label}")
    try:
        check_setting(setting, _PARAMS)
    except ValueError as exc:
        raise CompressionError(str(exc)) from exc
    geo = cm.geometry(layer)
    allowed = schemes_for(geo)
    scheme = setting.get("scheme", allowed[0])
    if scheme not in allowed:
        raise CompressionError(f"{layer.op.label}: {NAME} scheme {scheme!r} does not apply to this "
                               f"layer; use {' or '.join(allowed)}")
    m = factor_matrix(cm.real_filter(layer), scheme)
    limit = min(m.shape)
    rank, energy = setting.get("rank"), setting.get("energy")
    if (rank is None) == (energy is None):
        raise CompressionError(f"{NAME}: give exactly one of rank or energy")
    if rank is None:
        if not 0.0 < float(energy) <= 1.0:
            raise CompressionError(f"{NAME}: energy must be in (0, 1], got {energy}")
        sv = np.linalg.svd(m, compute_uv=False)
        kept = np.cumsum(sv**2) / max(float(np.sum(sv**2)), np.finfo(float).tiny)
        rank = int(min(np.searchsorted(kept, float(energy) - 1e-12) + 1, limit))
    if not 1 <= rank <= limit:
        raise CompressionError(f"{layer.op.label}: rank must be 1 … {limit} for scheme {scheme!r}, "
                               f"got {rank}")
    return LowRankSpec(scheme, int(rank), bool(setting.get("recover", True)))


# ---------------------------------------------------------------------------------------------
# Geometry of the two stages.


@dataclass(frozen=True)
class StagePlan:
    kernel1: tuple[int, int]
    win1: Window2D  # input -> intermediate
    kernel2: tuple[int, int]
    win2: Window2D  # intermediate -> output

    @property
    def mid_hw(self) -> tuple[int, int]:
        return self.win1.out_h, self.win1.out_w


def stage_plan(geo: cm.LayerGeometry, scheme: str) -> StagePlan:
    w = geo.win
    if scheme == "separable":
        win1 = Window2D(w.in_h, w.in_w, w.out_h, w.in_w, w.filter_h, 1, w.stride_h, 1, w.dilation_h,
                        1, w.pad_top, 0)
        win2 = Window2D(w.out_h, w.in_w, w.out_h, w.out_w, 1, w.filter_w, 1, w.stride_w, 1,
                        w.dilation_w, 0, w.pad_left)
        return StagePlan((w.filter_h, 1), win1, (1, w.filter_w), win2)
    return StagePlan((w.filter_h, w.filter_w), w, (1, 1), cm.unit_window(w.out_h, w.out_w))


def _flash_bytes(geo: cm.LayerGeometry, spec: LowRankSpec) -> int:
    plan = stage_plan(geo, spec.scheme)
    w1 = spec.rank * plan.kernel1[0] * plan.kernel1[1] * geo.c_in
    w2 = geo.c_out * plan.kernel2[0] * plan.kernel2[1] * spec.rank
    return (array_flash_bytes("int8_t", w1) + array_flash_bytes("int8_t", w2)
            + 2 * array_flash_bytes("int32_t", spec.rank) + 3 * array_flash_bytes("int32_t", geo.c_out))


def _scratch_bytes(geo: cm.LayerGeometry, spec: LowRankSpec) -> int:
    mh, mw = stage_plan(geo, spec.scheme).mid_hw
    return mh * mw * spec.rank


def _macs(geo: cm.LayerGeometry, spec: LowRankSpec) -> int:
    plan = stage_plan(geo, spec.scheme)
    mh, mw = plan.mid_hw
    oh, ow = geo.out_hw
    first = mh * mw * spec.rank * plan.kernel1[0] * plan.kernel1[1] * geo.c_in
    second = oh * ow * geo.c_out * plan.kernel2[0] * plan.kernel2[1] * spec.rank
    return geo.images * (first + second)


def _int8_bytes(geo: cm.LayerGeometry) -> int:
    """The dense int8 layer's weights, bias, multiplier and shift (what a rank must beat)."""
    return array_flash_bytes("int8_t", geo.c_out * geo.fan_in) + 3 * array_flash_bytes("int32_t", geo.c_out)


# ---------------------------------------------------------------------------------------------
# The two int8 stages.


@dataclass(frozen=True)
class Stage:
    """One int8 convolution: ``weights`` O x KH x KW x C (int8 values), window ``win``."""

    weights: np.ndarray
    win: Window2D
    input_zp: int
    output_zp: int
    act_min: int
    act_max: int
    multiplier: np.ndarray
    shift: np.ndarray

    def accumulate(self, x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        acc = np.rint(cm.window_sums(x.astype(np.float64) - self.input_zp, self.weights, self.win))
        acc = acc.astype(np.int64)
        return acc if bias is None else acc + bias

    def run(self, x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        req = cm.requantizer(self.multiplier, self.shift, self.output_zp, self.act_min, self.act_max)
        return req.apply(self.accumulate(x, bias))

    def struct(self) -> Struct:
        o, kh, kw, c = self.weights.shape
        fields: tuple[tuple[str, FieldValue], ...] = (
            ("filter", Struct("bf_dims4", (("n", o), ("h", kh), ("w", kw), ("c", c)))),
            ("stride_h", self.win.stride_h), ("stride_w", self.win.stride_w),
            ("dilation_h", self.win.dilation_h), ("dilation_w", self.win.dilation_w),
            ("pad_top", self.win.pad_top), ("pad_left", self.win.pad_left),
            ("input_offset", -self.input_zp), ("output_offset", self.output_zp),
            ("act_min", self.act_min), ("act_max", self.act_max),
            ("weights", _ints("int8_t", self.weights)),
            ("multiplier", _ints("int32_t", self.multiplier)),
            ("shift", _ints("int32_t", self.shift)))
        return Struct("bf_lowrank_stage", fields)


@dataclass(frozen=True)
class Factored:
    first: Stage
    second: Stage
    bias: np.ndarray  # int64 within int32
    # Real scales, for export: h_real = s_in * first_scale[r] * acc1; y = mid_scale * second_scale[o] * acc2
    first_scale: np.ndarray
    mid_scale: float
    second_scale: np.ndarray

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.second.run(self.first.run(images), self.bias)


def _ints(ctype: str, values: np.ndarray) -> ConstArray:
    return ConstArray(ctype, tuple(int(v) for v in np.asarray(values).reshape(-1)))


# ---------------------------------------------------------------------------------------------
# Fitting.


@dataclass(frozen=True)
class _Layer:
    ref: LayerRef
    geo: cm.LayerGeometry
    iq: cm.IOQuant
    w: np.ndarray  # real O x KH x KW x C
    b: np.ndarray  # real bias


def _prepare(layer: LayerRef) -> _Layer:
    geo = cm.geometry(layer)
    return _Layer(layer, geo, cm.io_quant(layer, geo.activation), cm.real_filter(layer),
                  cm.real_bias(layer, geo.c_out))


def _real_factors(lay: _Layer, spec: LowRankSpec, images: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Real first-stage filter (R, kh1, kw1, C) and second-stage filter (O, kh2, kw2, R), with
    y_real = second * (first * x_real)."""
    w, r = lay.w, spec.rank
    o, kh, kw, c = w.shape
    m = factor_matrix(w, spec.scheme)
    if spec.scheme == "separable":
        p, sv, qt = np.linalg.svd(m, full_matrices=False)
        first = (p[:, :r] * sv[:r]).T.reshape(r, kh, c)[:, :, None, :]
        second = qt[:r].reshape(r, o, kw).transpose(1, 2, 0)[:, None, :, :]
        return first, second
    if images is not None and spec.recover:
        basis = _response_basis(lay, m, images, r)
    else:
        basis = np.linalg.svd(m, full_matrices=False)[0][:, :r]
    first = (basis.T @ m).reshape(r, kh, kw, c)
    return first, basis.reshape(o, 1, 1, r)


def _response_basis(lay: _Layer, m: np.ndarray, images: np.ndarray, r: int) -> np.ndarray:
    """Top-r principal directions (O x r) of the layer's responses W x on calibration data."""
    cols = cm.patches(images.astype(np.float64) - lay.iq.in_zp, lay.geo.win).reshape(-1, m.shape[1])
    y = cols[cm.fit_rows(cols.shape[0])] @ m.T
    y -= y.mean(axis=0)
    _, vecs = np.linalg.eigh(y.T @ y)
    return np.asarray(vecs[:, ::-1][:, :r])


def _mid_range(lay: _Layer, first_q: np.ndarray, first_scale: np.ndarray, win1: Window2D,
               images: np.ndarray | None) -> tuple[float, float]:
    """Real range of the intermediate: observed on calibration images, else mean ± 4 std of
    inputs spread uniformly over the int8 range (clipped to the worst case)."""
    unit = lay.iq.in_scale * first_scale  # real value of one accumulator unit, per channel
    if images is not None:
        acc = cm.window_sums(images.astype(np.float64) - lay.iq.in_zp, first_q, win1)
        h = acc * unit
        return float(h.min()), float(h.max())
    xs = np.arange(-128, 128, dtype=np.float64) - lay.iq.in_zp
    flat = first_q.reshape(first_q.shape[0], -1).astype(np.float64)
    mean = xs.mean() * flat.sum(axis=1) * unit
    std = xs.std() * np.sqrt((flat**2).sum(axis=1)) * unit
    worst = np.abs(xs).max() * np.abs(flat).sum(axis=1) * unit
    lo = np.maximum(mean - _STD_RANGE * std, -worst)
    hi = np.minimum(mean + _STD_RANGE * std, worst)
    return float(lo.min()), float(hi.max())


def _first_stage(lay: _Layer, first: np.ndarray, win1: Window2D,
                 images: np.ndarray | None) -> tuple[Stage, np.ndarray, float]:
    q, scale = cm.symmetric_int8(first)
    lo, hi = _mid_range(lay, q, scale, win1, images)
    mid_scale, mid_zp = cm.affine_int8(lo, hi)
    mult, shift = cm.multipliers(lay.iq.in_scale * scale / mid_scale, lay.ref.op.label)
    stage = Stage(q, win1, lay.iq.in_zp, mid_zp, -128, 127, mult, shift)
    return stage, scale, mid_scale


def _target(lay: _Layer, images: np.ndarray) -> np.ndarray:
    """The original layer's real pre-activation outputs (N, OH, OW, O)."""
    xp = images.astype(np.float64) - lay.iq.in_zp
    return cm.window_sums(xp, lay.w, lay.geo.win) * lay.iq.in_scale + lay.b


def _refit_second(lay: _Layer, mid: np.ndarray, stage1: Stage, mid_scale: float, win2: Window2D,
                  kernel2: tuple[int, int], target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Second-stage real filter (O, kh2, kw2, R) and bias fit to ``target`` on the int8
    intermediate ``mid``: y ~ mid_scale * sum(second * (mid - zp)) + bias."""
    feats = cm.patches(mid.astype(np.float64) - stage1.output_zp, win2) * mid_scale
    feats = feats.reshape(-1, feats.shape[-1])
    rows = cm.fit_rows(feats.shape[0])
    sol = cm.least_squares_shared(feats[rows], target.reshape(-1, lay.geo.c_out)[rows])
    r = stage1.weights.shape[0]
    return sol[:, :-1].reshape(lay.geo.c_out, kernel2[0], kernel2[1], r), sol[:, -1]


def build_factors(layer: LayerRef, spec: LowRankSpec, calib: Calibration | None) -> Factored:
    lay = _prepare(layer)
    plan = stage_plan(lay.geo, spec.scheme)
    images = None
    if calib is not None:
        all_images, _ = cm.to_images(layer, lay.geo, calib.inputs)
        per_pos = max(lay.geo.c_out, spec.rank * plan.kernel2[0] * plan.kernel2[1], lay.geo.fan_in)
        images = all_images[:cm.fit_images(lay.geo, per_pos, all_images.shape[0])]
    first, second = _real_factors(lay, spec, images)
    stage1, first_scale, mid_scale = _first_stage(lay, first, plan.win1, images)
    bias_real = lay.b
    # second is in units y_real = sum(second * h_real); h_real = mid_scale * (mid_q - zp).
    second_real = second
    mid = target = None
    if images is not None and spec.recover:
        mid = stage1.run(images)
        target = _target(lay, images)
        second_real, bias_real = _refit_second(lay, mid, stage1, mid_scale, plan.win2, plan.kernel2,
                                               target)
    q2, s2 = cm.symmetric_int8(second_real)
    unit2 = mid_scale * s2  # real value of one second-stage accumulator unit
    bias = np.rint(bias_real / unit2).astype(np.int64)
    mult2, shift2 = cm.multipliers(unit2 / lay.iq.out_scale, layer.op.label)
    stage2 = Stage(q2, plan.win2, stage1.output_zp, lay.iq.out_zp, lay.iq.act_min, lay.iq.act_max,
                   mult2, shift2)
    if mid is not None and target is not None:
        acc = stage2.accumulate(mid, bias).reshape(-1, lay.geo.c_out)
        err = target.reshape(-1, lay.geo.c_out) - acc * unit2
        bias = bias + np.rint(np.mean(err, axis=0) / unit2).astype(np.int64)
    _check_int32(layer, stage1, stage2, bias)
    return Factored(stage1, stage2, bias, first_scale, mid_scale, s2)


def _check_int32(layer: LayerRef, s1: Stage, s2: Stage, bias: np.ndarray) -> None:
    """Every accumulator of both stages stays an int32 for any int8 input."""
    def worst(stage: Stage) -> np.ndarray:
        reach = max(127 - stage.input_zp, stage.input_zp + 128)
        return np.abs(stage.weights.reshape(stage.weights.shape[0], -1).astype(np.int64)).sum(axis=1) * reach

    if worst(s1).max() > _INT32_MAX or (worst(s2) + np.abs(bias)).max() > _INT32_MAX:
        raise CompressionError(f"{layer.op.label}: low-rank accumulators would overflow int32")


# ---------------------------------------------------------------------------------------------
# Forward, kernel call, export.


def forward(layer: LayerRef, factored: Factored, x: np.ndarray) -> np.ndarray:
    geo = cm.geometry(layer)
    images, lead = cm.to_images(layer, geo, np.asarray(x, dtype=np.int8))
    return cm.from_images(factored.run(images), lead)


def _dims(n: int, h: int, w: int, c: int) -> Struct:
    return Struct("bf_dims4", (("n", n), ("h", h), ("w", w), ("c", c)))


def _symbol(layer: LayerRef) -> str:
    return "bf_conv2d_lowrank_s8" if layer.op.opcode == "CONV_2D" else "bf_fully_connected_lowrank_s8"


def kernel_call(layer: LayerRef, spec: LowRankSpec, f: Factored) -> KernelCall:
    geo = cm.geometry(layer)
    symbol = _symbol(layer)
    fields: list[tuple[str, FieldValue]]
    if layer.op.opcode == "CONV_2D":
        (h, w), (mh, mw), (oh, ow) = geo.in_hw, stage_plan(geo, spec.scheme).mid_hw, geo.out_hw
        fields = [("input", _dims(geo.images, h, w, geo.c_in)),
                  ("mid", _dims(geo.images, mh, mw, spec.rank)),
                  ("output", _dims(geo.images, oh, ow, geo.c_out))]
    else:
        fields = [("batches", geo.images), ("depth", geo.c_in), ("rank", spec.rank), ("units", geo.c_out)]
    fields += [("first", f.first.struct()), ("second", f.second.struct()), ("bias", _ints("int32_t", f.bias))]
    args = (TensorArg(layer.op.inputs[0], "int8_t"), TensorArg(layer.op.outputs[0], "int8_t", output=True))
    return KernelCall(layer.op.index, layer.op.opcode, symbol, f"{symbol}_params", tuple(fields), args,
                      "lowrank", takes_scratch=True, scratch_bytes=_scratch_bytes(geo, spec))


def effective_weights(f: Factored, scheme: str) -> np.ndarray:
    """The real filter (O x KH x KW x C) the two quantized factors compose to (real input to
    real intermediate, then real intermediate to real output)."""
    first = f.first.weights.astype(np.float64) * f.first_scale[:, None, None, None]
    second = f.second.weights.astype(np.float64) * f.second_scale[:, None, None, None]
    if scheme == "separable":
        return np.einsum("oxr,ryc->oyxc", second[:, 0], first[:, :, 0])
    return np.einsum("or,rhwc->ohwc", second[:, 0, 0], first)


def export(layer: LayerRef, spec: LowRankSpec, f: Factored) -> tuple[np.ndarray, QuantParams, np.ndarray]:
    """The composed filter as one int8 layer for --export-tflite (approximate: the device also
    rounds the intermediate to int8)."""
    iq = cm.io_quant(layer, cm.geometry(layer).activation)
    w = effective_weights(f, spec.scheme)
    q, scale = cm.symmetric_int8(w)
    scale32 = np.array([float(np.float32(s)) for s in scale])
    bias_real = f.bias * f.mid_scale * f.second_scale
    bias = np.rint(bias_real / (iq.in_scale * scale32)).astype(np.int32)
    quant = QuantParams(tuple(float(s) for s in scale32), (0,) * len(scale32), 0)
    return q.reshape(layer.weight.shape), quant, bias


# ---------------------------------------------------------------------------------------------
# The method.


class LowRankMethod:
    name = NAME

    def applicable(self, layer: LayerRef) -> bool:
        if layer.op.opcode not in ("CONV_2D", "FULLY_CONNECTED") or not cm.is_int8_layer(layer):
            return False
        try:
            geo = cm.geometry(layer)
        except CompressionError:
            return False
        return min(geo.c_out, geo.fan_in) >= 2 and 255 * 127 * geo.fan_in < 2**31

    def settings(self, layer: LayerRef) -> list[Setting]:
        """Per scheme, ranks at 1/16 … 1/2 of the maximum that store fewer bytes than int8."""
        if not self.applicable(layer):
            return []
        geo = cm.geometry(layer)
        w = cm.real_filter(layer)
        out: list[Setting] = []
        for scheme in schemes_for(geo):
            limit = min(factor_matrix(w, scheme).shape)
            for rank in sorted({max(1, round(limit * f)) for f in _GRID}):
                spec = LowRankSpec(scheme, rank)
                if _flash_bytes(geo, spec) < _int8_bytes(geo):
                    out.append(Setting.of(NAME, scheme=scheme, rank=rank))
        return out

    def option(self, layer: LayerRef, setting: Setting) -> Option:
        if not self.applicable(layer):
            raise CompressionError(f"{layer.op.label}: {NAME} needs an int8 CONV_2D or FULLY_CONNECTED layer")
        spec = parse(layer, setting)
        geo = cm.geometry(layer)
        return Option(layer.op.index, setting, _flash_bytes(geo, spec), _scratch_bytes(geo, spec),
                      _macs(geo, spec), _symbol(layer))

    def apply(self, layer: LayerRef, setting: Setting, calib: Calibration | None) -> CompressedLayer:
        option = self.option(layer, setting)
        spec = parse(layer, setting)
        factored = build_factors(layer, spec, calib)
        weights, quant, bias = export(layer, spec, factored)

        def run(x: np.ndarray) -> np.ndarray:
            return forward(layer, factored, x)

        return CompressedLayer(option, kernel_call(layer, spec, factored), run, weights, quant, bias)


register(LowRankMethod())
