"""Output size, padding and window taps of 2-D windowed ops (conv, depthwise conv, pooling).

TFLite computes the output size with ``ComputeOutSize`` and the padding with
``ComputePaddingHeightWidth`` (``tensorflow/lite/kernels/padding.h``).  The reference kernels
use only the leading padding (``padding_values.height/width`` = total padding // 2); the odd
extra row/column (``*_offset``) of SAME padding falls at the bottom/right, and positions outside
the input are skipped (conv) or not counted (pooling).  The numpy kernels here express that by
padding the input with a neutral value and slicing one strided view per filter tap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from toolkit.model.ir import Padding


def _c_div(a: int, b: int) -> int:
    """C++ integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def out_size(padding: Padding, in_size: int, filter_size: int, stride: int, dilation: int = 1) -> int:
    """``ComputeOutSize``: SAME → ceil(in / stride), VALID → (in − effective filter) / stride + 1."""
    if stride <= 0 or dilation <= 0:
        raise ValueError(f"stride {stride} and dilation {dilation} must be positive")
    effective = (filter_size - 1) * dilation + 1
    if padding is Padding.SAME:
        return _c_div(in_size + stride - 1, stride)
    return _c_div(in_size + stride - effective, stride)


def pad_before(stride: int, dilation: int, in_size: int, filter_size: int, out: int) -> int:
    """``ComputePaddingWithOffset``: the padding before the first input element (≥ 0)."""
    effective = (filter_size - 1) * dilation + 1
    total = max((out - 1) * stride + effective - in_size, 0)
    return total // 2


@dataclass(frozen=True)
class Window2D:
    """Geometry of a 2-D window op over NHWC data, as the TFLite reference kernels see it.

    Output position ``(oy, ox)`` with filter tap ``(ky, kx)`` reads input row
    ``oy·stride_h − pad_top + ky·dilation_h`` (likewise for columns); reads outside the input are
    skipped.
    """

    in_h: int
    in_w: int
    out_h: int
    out_w: int
    filter_h: int
    filter_w: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    pad_top: int
    pad_left: int

    @classmethod
    def create(
        cls,
        padding: Padding,
        in_hw: tuple[int, int],
        filter_hw: tuple[int, int],
        stride_hw: tuple[int, int],
        dilation_hw: tuple[int, int] = (1, 1),
        expected_out_hw: Sequence[int] | None = None,
    ) -> Window2D:
        """Compute the geometry; ``expected_out_hw`` (the output tensor's H, W) must agree."""
        (ih, iw), (fh, fw), (sh, sw), (dh, dw) = in_hw, filter_hw, stride_hw, dilation_hw
        if min(fh, fw) <= 0:
            raise ValueError(f"filter size {fh}x{fw} must be positive")
        oh = out_size(padding, ih, fh, sh, dh)
        ow = out_size(padding, iw, fw, sw, dw)
        if oh <= 0 or ow <= 0:
            raise ValueError(
                f"{padding.value} window {fh}x{fw} (stride {sh}x{sw}, dilation {dh}x{dw}) over a "
                f"{ih}x{iw} input gives an empty {oh}x{ow} output"
            )
        if expected_out_hw is not None and (oh, ow) != tuple(expected_out_hw):
            raise ValueError(
                f"output spatial size is {tuple(expected_out_hw)}, but TFLite computes {(oh, ow)} "
                f"for {padding.value} padding of {ih}x{iw} with a {fh}x{fw} window, "
                f"stride {sh}x{sw}, dilation {dh}x{dw}"
            )
        return cls(ih, iw, oh, ow, fh, fw, sh, sw, dh, dw,
                   pad_before(sh, dh, ih, fh, oh), pad_before(sw, dw, iw, fw, ow))

    def _extent(self, out: int, stride: int, filt: int, dil: int) -> int:
        return (out - 1) * stride + (filt - 1) * dil + 1

    def pad(self, x: np.ndarray, fill: float | int) -> np.ndarray:
        """Embed NHWC ``x`` in a ``fill``-valued frame large enough for every tap's view."""
        need_h = self._extent(self.out_h, self.stride_h, self.filter_h, self.dilation_h)
        need_w = self._extent(self.out_w, self.stride_w, self.filter_w, self.dilation_w)
        bottom = max(need_h - self.pad_top - self.in_h, 0)
        right = max(need_w - self.pad_left - self.in_w, 0)
        widths = ((0, 0), (self.pad_top, bottom), (self.pad_left, right), (0, 0))
        return np.pad(x, widths, mode="constant", constant_values=fill)

    def tap(self, padded: np.ndarray, ky: int, kx: int) -> np.ndarray:
        """The (N, out_h, out_w, C) view of ``pad(x)`` that filter tap (ky, kx) reads."""
        y0, x0 = ky * self.dilation_h, kx * self.dilation_w
        return padded[
            :,
            y0 : y0 + (self.out_h - 1) * self.stride_h + 1 : self.stride_h,
            x0 : x0 + (self.out_w - 1) * self.stride_w + 1 : self.stride_w,
            :,
        ]

    def taps(self, padded: np.ndarray) -> list[np.ndarray]:
        """Every tap view in filter order (ky major, kx minor)."""
        return [self.tap(padded, ky, kx) for ky in range(self.filter_h) for kx in range(self.filter_w)]

    def valid_counts(self) -> np.ndarray:
        """(out_h, out_w) int64: how many taps of each window fall inside the input."""
        rows = _valid_1d(self.out_h, self.stride_h, self.pad_top, self.filter_h, self.dilation_h, self.in_h)
        cols = _valid_1d(self.out_w, self.stride_w, self.pad_left, self.filter_w, self.dilation_w, self.in_w)
        return np.outer(rows, cols).astype(np.int64)


def _valid_1d(out: int, stride: int, pad: int, filt: int, dil: int, size: int) -> np.ndarray:
    """Per output position along one axis: the number of filter taps inside ``[0, size)``."""
    pos = np.arange(out)[:, None] * stride - pad + np.arange(filt)[None, :] * dil
    return np.count_nonzero((pos >= 0) & (pos < size), axis=1)
