"""Geometry, exact integer convolution sums and least-squares fits for the methods that rebuild a
layer's arithmetic (binary.py, lowrank.py).

Every CONV_2D and FULLY_CONNECTED layer is seen as a convolution over NHWC images: a dense layer
is a 1x1 convolution over ``rows x 1 x 1 x depth`` (rows = input elements / depth).  Integer
sums are computed in float64 on integer values: every partial sum stays far below 2^53, so the
result is exact whatever order BLAS adds in, and equals the C kernels' int32 sums (which the
methods keep from overflowing by construction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from toolkit.compress.base import LayerRef
from toolkit.errors import CompressionError
from toolkit.model.ir import Activation, Conv2DOptions, DType, FullyConnectedOptions
from toolkit.oracle.conv import Requantizer, per_tensor_params
from toolkit.oracle.padding import Window2D
from toolkit.oracle.quant import activation_range_quantized, quantize_multiplier

# Rows (output positions) used by least-squares fits; more add time, not accuracy.
MAX_FIT_ROWS = 16384
# Elements (images x output positions x channels) a fit materialises at once.
MAX_FIT_ELEMENTS = 2_000_000
_FIT_SEED = 0x5EED


@dataclass(frozen=True)
class LayerGeometry:
    """A compressible layer as a convolution: ``images`` NHWC inputs of ``in_hw x c_in`` per
    sample, filter ``c_out x KH x KW x c_in``, outputs ``out_hw x c_out``."""

    opcode: str
    images: int  # images per sample: N of a conv input, rows of a dense input
    in_hw: tuple[int, int]
    c_in: int
    c_out: int
    win: Window2D
    activation: Activation

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.win.out_h, self.win.out_w

    @property
    def kernel_hw(self) -> tuple[int, int]:
        return self.win.filter_h, self.win.filter_w

    @property
    def taps(self) -> int:
        return self.win.filter_h * self.win.filter_w

    @property
    def fan_in(self) -> int:
        return self.taps * self.c_in

    @property
    def outputs(self) -> int:
        """Output elements per sample."""
        return self.images * self.win.out_h * self.win.out_w * self.c_out

    @property
    def positions(self) -> int:
        """Output positions (images x out_h x out_w) per sample."""
        return self.images * self.win.out_h * self.win.out_w


def unit_window(h: int = 1, w: int = 1) -> Window2D:
    """A 1x1 window with stride 1 and no padding over an h x w input."""
    return Window2D(h, w, h, w, 1, 1, 1, 1, 1, 1, 0, 0)


_CLAMPS = (Activation.NONE, Activation.RELU, Activation.RELU6, Activation.RELU_N1_TO_1)


def geometry(layer: LayerRef) -> LayerGeometry:
    """The convolution view of a CONV_2D (ungrouped) or FULLY_CONNECTED layer whose fused
    activation is a clamp (what the int8 kernels support)."""
    geo = _geometry(layer)
    if geo.activation not in _CLAMPS:
        raise CompressionError(f"{layer.op.label}: fused {geo.activation.value} is not supported")
    return geo


def _geometry(layer: LayerRef) -> LayerGeometry:
    op, x, w, out = layer.op, layer.input, layer.weight, layer.output
    if op.opcode == "FULLY_CONNECTED":
        if len(w.shape) != 2 or x.num_elements % w.shape[1]:
            raise CompressionError(f"{op.label}: weights {list(w.shape)} do not match the input")
        opts = op.options
        act = opts.activation if isinstance(opts, FullyConnectedOptions) else Activation.NONE
        rows = x.num_elements // w.shape[1]
        return LayerGeometry(op.opcode, rows, (1, 1), w.shape[1], w.shape[0], unit_window(), act)
    if op.opcode != "CONV_2D":
        raise CompressionError(f"{op.label}: {op.opcode} is not a convolution or dense layer")
    opts = op.options
    assert isinstance(opts, Conv2DOptions)
    if len(x.shape) != 4 or len(w.shape) != 4 or x.shape[3] != w.shape[3]:
        raise CompressionError(f"{op.label}: only ungrouped 4-D convolutions are supported")
    win = Window2D.create(opts.padding, (x.shape[1], x.shape[2]), (w.shape[1], w.shape[2]),
                          (opts.stride_h, opts.stride_w), (opts.dilation_h, opts.dilation_w),
                          (out.shape[1], out.shape[2]))
    return LayerGeometry(op.opcode, x.shape[0], (x.shape[1], x.shape[2]), x.shape[3], w.shape[0],
                         win, opts.activation)


def is_int8_layer(layer: LayerRef) -> bool:
    """int8 input, weights and output with per-tensor activation quantization and constant
    weights: what the compressed kernels replace."""
    x, w, out = layer.input, layer.weight, layer.output
    if (x.dtype, w.dtype, out.dtype) != (DType.INT8,) * 3 or w.data is None:
        return False
    if x.quant is None or out.quant is None or w.quant is None:
        return False
    return not x.quant.per_channel and not out.quant.per_channel


@dataclass(frozen=True)
class IOQuant:
    """Input/output quantization and the fused activation clamp of a layer."""

    in_scale: float
    in_zp: int
    out_scale: float
    out_zp: int
    act_min: int
    act_max: int

    @property
    def max_abs_input(self) -> int:
        """max |q - zp| over int8 q: the largest |x'| an input can bring."""
        return max(127 - self.in_zp, self.in_zp + 128)


def io_quant(layer: LayerRef, activation: Activation) -> IOQuant:
    s_in, zp_in = per_tensor_params(layer.input, "input")
    s_out, zp_out = per_tensor_params(layer.output, "output")
    lo, hi = activation_range_quantized(activation.value, s_out, zp_out, np.int8)
    return IOQuant(float(s_in), int(zp_in), float(s_out), int(zp_out), lo, hi)


def real_filter(layer: LayerRef) -> np.ndarray:
    """Real weights as float64 O x KH x KW x C."""
    w = layer.real_weights().astype(np.float64)
    return w.reshape(w.shape[0], 1, 1, w.shape[1]) if w.ndim == 2 else w


def real_bias(layer: LayerRef, channels: int) -> np.ndarray:
    """The bias in real units (zeros if the layer has none)."""
    b = layer.bias
    if b is None or b.data is None:
        return np.zeros(channels)
    data = np.asarray(b.data, dtype=np.float64).reshape(-1)
    if b.dtype is DType.FLOAT32 or b.quant is None:
        return data
    scale = np.asarray(b.quant.scale, dtype=np.float64)
    return data * (scale if scale.size == channels else scale[0])


# ---------------------------------------------------------------------------------------------
# Batches in and out of the NHWC view.


def to_images(layer: LayerRef, geo: LayerGeometry, x: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    """Split ``x`` (``(n,) + input.shape`` or ``(n,) + input.shape[1:]``) into NHWC images.

    Returns the images and the leading shape the outputs take (``(n,)``, followed by the output
    tensor's shape or by its shape without the batch dimension, as the input came)."""
    shape = layer.input.shape
    x = np.asarray(x)
    if x.shape[1:] == shape:
        lead: tuple[int, ...] = (x.shape[0], *layer.output.shape)
    elif x.shape[1:] == shape[1:]:
        lead = (x.shape[0], *layer.output.shape[1:])
    else:
        raise CompressionError(
            f"{layer.op.label}: a batch of inputs must have shape (n, {', '.join(map(str, shape))}), "
            f"got {list(x.shape)}"
        )
    n = x.size // (geo.in_hw[0] * geo.in_hw[1] * geo.c_in)
    return x.reshape(n, geo.in_hw[0], geo.in_hw[1], geo.c_in), lead


def from_images(y: np.ndarray, lead: tuple[int, ...]) -> np.ndarray:
    return y.reshape(lead)


# ---------------------------------------------------------------------------------------------
# Sums.


def window_sums(x: np.ndarray, w: np.ndarray, win: Window2D) -> np.ndarray:
    """sum over valid taps and channels of ``w[o] * x`` for every output position: (N, OH, OW, O).

    ``x`` is NHWC (any real or integer values, taps outside the input count as 0), ``w`` is
    O x KH x KW x C.  float64; exact for integer operands whose sums stay below 2^53."""
    xp = win.pad(np.asarray(x, dtype=np.float64), 0.0)
    wf = np.asarray(w, dtype=np.float64)
    acc = np.zeros((x.shape[0], win.out_h, win.out_w, wf.shape[0]))
    for ky in range(win.filter_h):
        for kx in range(win.filter_w):
            acc += win.tap(xp, ky, kx) @ wf[:, ky, kx, :].T
    return acc


def patches(x: np.ndarray, win: Window2D) -> np.ndarray:
    """im2col: (N, OH, OW, KH*KW*C) in filter order (ky, kx, c); padded taps are 0."""
    xp = win.pad(np.asarray(x, dtype=np.float64), 0.0)
    return np.concatenate(win.taps(xp), axis=-1)


def fit_images(geo: LayerGeometry, per_position_channels: int, images: int) -> int:
    """How many calibration images a fit can use within :data:`MAX_FIT_ELEMENTS`."""
    per_image = geo.win.out_h * geo.win.out_w * max(per_position_channels, 1)
    return max(1, min(images, MAX_FIT_ELEMENTS // max(per_image, 1)))


def fit_rows(rows: int) -> np.ndarray:
    """A fixed subset of at most :data:`MAX_FIT_ROWS` row indices (sorted)."""
    if rows <= MAX_FIT_ROWS:
        return np.arange(rows)
    return np.sort(np.random.default_rng(_FIT_SEED).choice(rows, MAX_FIT_ROWS, replace=False))


# ---------------------------------------------------------------------------------------------
# Least squares.


def least_squares(features: np.ndarray, target: np.ndarray, ridge: float = 1e-7) -> np.ndarray:
    """Per-channel linear least squares with an intercept.

    ``features``: (R, O, P) — each of O channels has its own P features on R rows;
    ``target``: (R, O).  Returns (O, P + 1): P coefficients then the intercept.  Columns are
    scaled to unit RMS and a tiny ridge keeps collinear columns (e.g. a feature that is constant
    like the intercept) well defined."""
    r, o, p = features.shape
    f = np.concatenate([features, np.ones((r, o, 1))], axis=2)
    scale = np.sqrt(np.mean(f * f, axis=0))  # (O, P+1)
    scale[scale == 0] = 1.0
    fs = f / scale
    gram = np.einsum("rop,roq->opq", fs, fs)
    rhs = np.einsum("rop,ro->op", fs, target)
    gram += ridge * r * np.eye(p + 1)[None]
    sol = np.linalg.solve(gram, rhs[..., None])[..., 0]
    return np.asarray(sol / scale)


def least_squares_shared(features: np.ndarray, target: np.ndarray, ridge: float = 1e-7) -> np.ndarray:
    """Least squares with an intercept when every channel has the same features.

    ``features``: (R, P); ``target``: (R, O).  Returns (O, P + 1) like :func:`least_squares`."""
    r, p = features.shape
    f = np.concatenate([features, np.ones((r, 1))], axis=1)
    scale = np.sqrt(np.mean(f * f, axis=0))
    scale[scale == 0] = 1.0
    fs = f / scale
    gram = fs.T @ fs + ridge * r * np.eye(p + 1)
    sol = np.linalg.solve(gram, fs.T @ target)  # (P+1, O)
    return np.asarray((sol / scale[:, None]).T)


# ---------------------------------------------------------------------------------------------
# Quantization helpers.


def symmetric_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 (axis 0): (values, scales); all-zero channels get scale 1."""
    flat = w.reshape(w.shape[0], -1)
    peak = np.max(np.abs(flat), axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0)
    q = np.clip(np.rint(flat / scale[:, None]), -127, 127).astype(np.int8)
    return q.reshape(w.shape), scale


def affine_int8(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) for real values in [lo, hi] (widened to hold 0), as TFLite's
    converter derives activation parameters; scale rounded to float32 like a model file's."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0.0:
        hi = lo + 1.0
    scale = float(np.float32((hi - lo) / 255.0))
    zp = int(np.clip(np.rint(-128 - lo / scale), -128, 127))
    return scale, zp


def multipliers(real: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Q31 multiplier and shift per channel (``QuantizeMultiplier``); shifts must suit
    ``MultiplyByQuantizedMultiplier`` (at most 30)."""
    pairs = [quantize_multiplier(float(m)) for m in np.asarray(real, dtype=np.float64).reshape(-1)]
    mult = np.array([m for m, _ in pairs], dtype=np.int64)
    shift = np.array([s for _, s in pairs], dtype=np.int64)
    if (shift > 30).any():
        raise CompressionError(f"{what}: a requantization multiplier of {float(np.max(real)):.3g} "
                               "is too large for fixed-point requantization")
    return mult, shift


def requantizer(mult: np.ndarray, shift: np.ndarray, out_zp: int, lo: int, hi: int) -> Requantizer:
    return Requantizer(np.asarray(mult, np.int64), np.asarray(shift, np.int64), int(out_zp), int(lo),
                       int(hi), np.dtype(np.int8))


def ceil_int(v: float) -> int:
    return math.ceil(v)
