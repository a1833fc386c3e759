"""The C kernel library against the numpy oracle, one parametrised suite for every variant.

Every case builds a single-op IR graph, lowers it with ``firmware_gen.lower`` and calls the
compiled kernel through cffi with exactly the parameters the code generator would emit; int8
outputs must be bit-identical to ``toolkit.oracle`` (itself checked against TFLite's reference
kernels), float32 within 1e-5 relative.  Shapes deliberately include sizes that are not
multiples of 4, 8 or 16.  Kernels that may run in place are run a second time with the output
sharing its input's buffer.  ``variant`` covers every directory of ``firmware_gen/kernels`` with
C sources (today: ``ref``).

``BOARDFIT_SANITIZE=1`` reruns this module in a child process under AddressSanitizer and
UndefinedBehaviorSanitizer (see ``tests/kernel_harness.py``).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

import kernel_harness as kh
import numpy as np
import pytest
from opgen import (
    GraphBuilder,
    assert_same,
    bias_quant,
    extreme_quant,
    rand_bias,
    rand_input,
    rand_per_channel,
    rand_quant,
    rand_weights,
)

from firmware_gen.lower import STATE_OPS, SUPPORTED_KERNEL_OPS, KernelCall, lower_op
from toolkit.errors import InterpreterError, UnsupportedOp
from toolkit.model.ir import (
    SUPPORTED_OPS,
    Activation,
    ActivationOptions,
    ConcatenationOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DType,
    FullyConnectedOptions,
    Graph,
    LeakyReluOptions,
    Padding,
    Pool2DOptions,
    QuantParams,
    ReducerOptions,
    SoftmaxOptions,
    SplitOptions,
    SqueezeOptions,
    StridedSliceOptions,
    Tensor,
)
from toolkit.oracle import Oracle
from toolkit.oracle.padding import out_size

# With BOARDFIT_SANITIZE=1 the parent process only starts the sanitized child run; the kernel
# tests themselves execute in that child (where the ASan runtime is preloaded).
_DELEGATED = kh.sanitize_requested() and not kh.asan_loaded()
in_process = pytest.mark.skipif(_DELEGATED, reason="runs in the sanitized child process")

F32, I8 = "float32", "int8"


@pytest.fixture(params=kh.variants())
def lib(request: pytest.FixtureRequest) -> kh.KernelLibrary:
    return kh.build_library(request.param)


# ---------------------------------------------------------------------------------------------
# Graph builders.  Each returns a single-op graph; ``q`` is a fresh activation quantization.


Builder = Callable[[np.random.Generator], Graph]


@dataclass(frozen=True)
class Case:
    id: str
    opcode: str
    build: Builder
    lo: float | None = None  # range of random float inputs (default ±3)
    hi: float | None = None


def _q(rng: np.random.Generator, dtype: str, lo: float = -2.0, hi: float = 2.0) -> QuantParams | None:
    return rand_quant(rng, lo, hi) if dtype == I8 else None


def _conv(x_shape: tuple[int, ...], oc: int, k: tuple[int, int], stride: tuple[int, int] = (1, 1),
          dil: tuple[int, int] = (1, 1), padding: Padding = Padding.SAME, dtype: str = I8,
          act: Activation = Activation.NONE, groups: int = 1, per_channel: bool = True,
          bias: bool = True, extreme: bool = False) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        n, h, w, c = x_shape
        oh = out_size(padding, h, k[0], stride[0], dil[0])
        ow = out_size(padding, w, k[1], stride[1], dil[1])
        b = GraphBuilder("conv")
        x = b.input(x_shape, dtype, quant=_q(rng, dtype))
        wq = (rand_per_channel(rng, oc, extreme=extreme) if per_channel else
              QuantParams((float(np.float32(0.02)),), (0,))) if dtype == I8 else None
        wt = b.const(rand_weights(rng, (oc, *k, c // groups), dtype=dtype), quant=wq)
        bt = -1
        if bias and dtype == I8:
            assert wq is not None
            bt = b.const(rand_bias(rng, oc), quant=bias_quant(b.quant(x), wq))
        elif bias:
            bt = b.const(rand_bias(rng, oc, dtype=F32))
        y = b.output((n, oh, ow, oc), dtype, quant=_q(rng, dtype, -6, 6))
        b.op("CONV_2D", [x, wt, bt], [y], Conv2DOptions(padding, *stride, *dil, act))
        return b.build()
    return build


def _depthwise(x_shape: tuple[int, ...], mult: int, k: tuple[int, int], stride: tuple[int, int] = (1, 1),
               dil: tuple[int, int] = (1, 1), padding: Padding = Padding.SAME, dtype: str = I8,
               act: Activation = Activation.NONE) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        n, h, w, c = x_shape
        oc = c * mult
        oh = out_size(padding, h, k[0], stride[0], dil[0])
        ow = out_size(padding, w, k[1], stride[1], dil[1])
        b = GraphBuilder("dw")
        x = b.input(x_shape, dtype, quant=_q(rng, dtype))
        wq = rand_per_channel(rng, oc, axis=3) if dtype == I8 else None
        wt = b.const(rand_weights(rng, (1, *k, oc), dtype=dtype), quant=wq)
        if dtype == I8:
            assert wq is not None
            bt = b.const(rand_bias(rng, oc), quant=bias_quant(b.quant(x), wq))
        else:
            bt = b.const(rand_bias(rng, oc, dtype=F32))
        y = b.output((n, oh, ow, oc), dtype, quant=_q(rng, dtype, -6, 6))
        b.op("DEPTHWISE_CONV_2D", [x, wt, bt], [y],
             DepthwiseConv2DOptions(padding, *stride, mult, *dil, act))
        return b.build()
    return build


def _fc(x_shape: tuple[int, ...], units: int, dtype: str = I8, per_channel: bool = True,
        keep_num_dims: bool = False, bias: bool = True, act: Activation = Activation.NONE,
        filter_zp: int = 0, out_kind: str | None = None) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        depth = x_shape[-1]
        b = GraphBuilder("fc")
        x = b.input(x_shape, dtype, quant=_q(rng, dtype))
        if dtype == I8:
            wq = rand_per_channel(rng, units) if per_channel else QuantParams((0.015,), (filter_zp,))
        else:
            wq = None
        w = rand_weights(rng, (units, depth), dtype=dtype)
        if filter_zp:
            w = np.clip(w.astype(np.int64) + filter_zp, -128, 127).astype(np.int8)
        wt = b.const(w, quant=wq)
        bt = -1
        if bias:
            bt = (b.const(rand_bias(rng, units), quant=bias_quant(b.quant(x), wq)) if wq is not None
                  else b.const(rand_bias(rng, units, dtype=F32)))
        batch = int(np.prod(x_shape)) // depth
        out_shape = (*x_shape[:-1], units) if keep_num_dims else (batch, units)
        qo = extreme_quant(rng, kind=out_kind) if out_kind else _q(rng, dtype, -8, 8)
        y = b.output(out_shape, dtype, quant=qo)
        b.op("FULLY_CONNECTED", [x, wt, bt], [y], FullyConnectedOptions(act, keep_num_dims))
        return b.build()
    return build


def _pool(opcode: str, x_shape: tuple[int, ...], k: tuple[int, int], stride: tuple[int, int],
          padding: Padding, dtype: str = I8, act: Activation = Activation.NONE) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        n, h, w, c = x_shape
        oh, ow = out_size(padding, h, k[0], stride[0]), out_size(padding, w, k[1], stride[1])
        b = GraphBuilder("pool")
        q = _q(rng, dtype)
        x = b.input(x_shape, dtype, quant=q)
        y = b.output((n, oh, ow, c), dtype, quant=q)
        b.op(opcode, [x], [y], Pool2DOptions(padding, *stride, *k, act))
        return b.build()
    return build


def _binary(opcode: str, s1: tuple[int, ...], s2: tuple[int, ...], dtype: str = I8,
            act: Activation = Activation.NONE, extreme: bool = False, same_quant: bool = False,
            const2: bool = False) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        out_shape = tuple(np.broadcast_shapes(s1, s2))
        b = GraphBuilder(opcode.lower())
        q1 = (extreme_quant(rng, kind="zp_max") if extreme else _q(rng, dtype)) if dtype == I8 else None
        q2 = q1 if same_quant else _q(rng, dtype, -1, 3)
        qo = q1 if same_quant else _q(rng, dtype, -4, 4)
        x1 = b.input(s1, dtype, quant=q1)
        if const2:
            x2 = b.const(rand_input(rng, Tensor(0, "c", s2, DType(dtype), q2)), quant=q2)
        else:
            x2 = b.input(s2, dtype, quant=q2)
        y = b.output(out_shape, dtype, quant=qo)
        opts = ActivationOptions(act) if opcode in ("ADD", "SUB", "MUL") else None
        b.op(opcode, [x1, x2], [y], opts)
        return b.build()
    return build


def _unary(opcode: str, shape: tuple[int, ...], dtype: str = I8, options: object = None,
           in_q: tuple[float, float] = (-3.0, 3.0), out_q: QuantParams | tuple[float, float] | None = None,
           out_dtype: str | None = None) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        b = GraphBuilder(opcode.lower())
        qi = rand_quant(rng, *in_q) if dtype in (I8, "uint8") else None
        od = out_dtype or dtype
        if isinstance(out_q, QuantParams):
            qo: QuantParams | None = out_q
        elif od in (I8, "uint8"):
            qo = rand_quant(rng, *(out_q or (-3.0, 3.0)), dtype=od)
        else:
            qo = None
        if dtype == "uint8" and qi is not None:
            qi = rand_quant(rng, *in_q, dtype="uint8")
        x = b.input(shape, dtype, quant=qi)
        y = b.output(shape, od, quant=qo)
        b.op(opcode, [x], [y], options)  # type: ignore[arg-type]
        return b.build()
    return build


def _prelu(shape: tuple[int, ...], alpha_shape: tuple[int, ...], dtype: str = I8) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        b = GraphBuilder("prelu")
        x = b.input(shape, dtype, quant=_q(rng, dtype))
        qa = rand_quant(rng, -0.5, 0.5) if dtype == I8 else None
        a_vals = (rng.integers(-128, 128, size=alpha_shape).astype(np.int8) if dtype == I8
                  else rng.uniform(-0.5, 0.5, size=alpha_shape).astype(np.float32))
        a = b.const(a_vals, quant=qa)
        y = b.output(shape, dtype, quant=_q(rng, dtype, -3, 3))
        b.op("PRELU", [x, a], [y])
        return b.build()
    return build


def _softmax(shape: tuple[int, ...], beta: float, dtype: str = I8) -> Builder:
    out_q = QuantParams((float(np.float32(1 / 256)),), (-128,)) if dtype == I8 else None
    return _unary("SOFTMAX", shape, dtype, SoftmaxOptions(beta), (-6.0, 4.0), out_q)


def _with_consts(opcode: str, x_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 consts: list[np.ndarray], options: object = None, dtype: str = I8,
                 data_first: bool = True, out_quant_same: bool = True) -> Builder:
    """An op whose operands after the data input are constants (perm, paddings, axis …)."""
    def build(rng: np.random.Generator) -> Graph:
        b = GraphBuilder(opcode.lower())
        q = _q(rng, dtype)
        x = b.input(x_shape, dtype, quant=q)
        cs = [b.const(c) for c in consts]
        y = b.output(out_shape, dtype, quant=q if out_quant_same else _q(rng, dtype, -1, 1))
        b.op(opcode, [x, *cs] if data_first else [*cs, x], [y], options)  # type: ignore[arg-type]
        return b.build()
    return build


def _split(opcode: str, x_shape: tuple[int, ...], axis: int, sizes: list[int], dtype: str = I8) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        b = GraphBuilder(opcode.lower())
        q = _q(rng, dtype)
        if opcode == "SPLIT":
            a = b.const(np.array([axis], dtype=np.int32))
            x = b.input(x_shape, dtype, quant=q)
            ins = [a, x]
        else:
            x = b.input(x_shape, dtype, quant=q)
            ins = [x, b.const(np.array(sizes, dtype=np.int32)), b.const(np.array([axis], dtype=np.int32))]
        outs = []
        for s in sizes:
            shape = list(x_shape)
            shape[axis] = s
            outs.append(b.output(tuple(shape), dtype, quant=q))
        b.op(opcode, ins, outs, SplitOptions(len(sizes)))
        return b.build()
    return build


def _concat(shapes: list[tuple[int, ...]], axis: int, dtype: str = I8) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        b = GraphBuilder("concat")
        q = _q(rng, dtype)
        xs = [b.input(s, dtype, quant=q) for s in shapes]
        out = list(shapes[0])
        out[axis] = sum(s[axis] for s in shapes)
        y = b.output(tuple(out), dtype, quant=q)
        b.op("CONCATENATION", xs, [y], ConcatenationOptions(axis))
        return b.build()
    return build


def _mean(x_shape: tuple[int, ...], axes: list[int], keep: bool, dtype: str = I8) -> Builder:
    norm = [a % len(x_shape) for a in axes]
    out = tuple(1 if i in norm else d for i, d in enumerate(x_shape)) if keep else tuple(
        d for i, d in enumerate(x_shape) if i not in norm)
    return _with_consts("MEAN", x_shape, out, [np.array(axes, dtype=np.int32)], ReducerOptions(keep),
                        dtype, out_quant_same=False)


def _slice(x_shape: tuple[int, ...], begin: list[int], end: list[int], strides: list[int],
           out_shape: tuple[int, ...], opts: StridedSliceOptions, dtype: str = I8) -> Builder:
    consts = [np.array(v, dtype=np.int32) for v in (begin, end, strides)]
    return _with_consts("STRIDED_SLICE", x_shape, out_shape, consts, opts, dtype)


def _quantize(src: str, dst: str, shape: tuple[int, ...] = (3, 37)) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        b = GraphBuilder("quantize")
        qi = rand_quant(rng, -3, 3, dtype=src) if src != F32 else None
        x = b.input(shape, src, quant=qi)
        y = b.output(shape, dst, quant=rand_quant(rng, -2.5, 2.5, dtype=dst))
        b.op("QUANTIZE", [x], [y])
        return b.build()
    return build


def _dequantize(src: str, shape: tuple[int, ...] = (2, 41)) -> Builder:
    def build(rng: np.random.Generator) -> Graph:
        b = GraphBuilder("dequantize")
        qi = rand_quant(rng, -3, 3, dtype=src) if src != "float16" else None
        x = b.input(shape, src, quant=qi)
        y = b.output(shape, F32)
        b.op("DEQUANTIZE", [x], [y])
        return b.build()
    return build


A = Activation
S, V = Padding.SAME, Padding.VALID
_POS = (0.05, 4.0)  # positive real inputs (RSQRT/SQRT)
_SS = StridedSliceOptions


def _cases() -> list[Case]:
    c: list[Case] = []
    # Convolutions.
    c += [Case("conv_s8_3x3_same", "CONV_2D", _conv((1, 7, 9, 3), 5, (3, 3))),
          Case("conv_s8_3x2_valid_s2x1_relu6", "CONV_2D", _conv((2, 10, 6, 5), 7, (3, 2), (2, 1),
                                                                padding=V, act=A.RELU6)),
          Case("conv_s8_dil2_relu", "CONV_2D", _conv((1, 9, 11, 4), 3, (3, 3), dil=(2, 2), act=A.RELU)),
          Case("conv_s8_1x1_c17_nobias", "CONV_2D", _conv((1, 5, 3, 17), 19, (1, 1), bias=False)),
          Case("conv_s8_5x5_s2_per_tensor", "CONV_2D", _conv((1, 13, 12, 2), 6, (5, 5), (2, 2),
                                                             per_channel=False)),
          Case("conv_s8_grouped", "CONV_2D", _conv((1, 6, 5, 6), 4, (3, 3), groups=2)),
          Case("conv_s8_extreme_channel_scales", "CONV_2D", _conv((1, 6, 7, 3), 9, (3, 3), extreme=True)),
          Case("conv_f32_3x3_same", "CONV_2D", _conv((1, 7, 9, 3), 5, (3, 3), dtype=F32)),
          Case("conv_f32_valid_s2_relu", "CONV_2D", _conv((2, 11, 7, 5), 6, (3, 3), (2, 2), padding=V,
                                                          dtype=F32, act=A.RELU))]
    c += [Case("dw_s8_m1", "DEPTHWISE_CONV_2D", _depthwise((1, 9, 7, 5), 1, (3, 3))),
          Case("dw_s8_m2_s2_valid_relu6", "DEPTHWISE_CONV_2D", _depthwise((2, 10, 9, 3), 2, (3, 3), (2, 2),
                                                                          padding=V, act=A.RELU6)),
          Case("dw_s8_dil2", "DEPTHWISE_CONV_2D", _depthwise((1, 11, 10, 17), 1, (3, 3), dil=(2, 2))),
          Case("dw_f32_m3", "DEPTHWISE_CONV_2D", _depthwise((1, 8, 7, 3), 3, (3, 3), dtype=F32)),
          Case("dw_f32_s2_relu", "DEPTHWISE_CONV_2D", _depthwise((1, 9, 9, 6), 1, (5, 5), (2, 2),
                                                                 dtype=F32, act=A.RELU))]
    c += [Case("fc_s8_per_channel", "FULLY_CONNECTED", _fc((3, 37), 13)),
          Case("fc_s8_per_tensor_zp", "FULLY_CONNECTED", _fc((2, 45), 11, per_channel=False, filter_zp=3)),
          Case("fc_s8_keep_dims_relu", "FULLY_CONNECTED", _fc((2, 3, 19), 9, keep_num_dims=True, act=A.RELU)),
          Case("fc_s8_flatten_nobias", "FULLY_CONNECTED", _fc((1, 4, 4, 5), 7, bias=False)),
          Case("fc_s8_tiny_output_scale", "FULLY_CONNECTED", _fc((2, 21), 6, out_kind="tiny")),
          Case("fc_s8_huge_output_scale", "FULLY_CONNECTED", _fc((2, 21), 6, out_kind="huge")),
          Case("fc_f32", "FULLY_CONNECTED", _fc((3, 29), 10, dtype=F32)),
          Case("fc_f32_relu6", "FULLY_CONNECTED", _fc((1, 33), 5, dtype=F32, act=A.RELU6))]
    # Pooling.
    for op in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        tag = "avg" if op.startswith("AVERAGE") else "max"
        c += [Case(f"{tag}pool_s8_same", op, _pool(op, (1, 9, 7, 5), (3, 3), (2, 2), S)),
              Case(f"{tag}pool_s8_valid_relu", op, _pool(op, (2, 8, 11, 3), (2, 3), (2, 1), V, act=A.RELU)),
              Case(f"{tag}pool_s8_global", op, _pool(op, (1, 13, 11, 7), (13, 11), (1, 1), V)),
              Case(f"{tag}pool_f32_same", op, _pool(op, (1, 10, 7, 6), (3, 2), (1, 2), S, dtype=F32)),
              Case(f"{tag}pool_f32_relu6", op, _pool(op, (1, 5, 5, 9), (5, 5), (1, 1), V, dtype=F32,
                                                     act=A.RELU6))]
    # Element-wise binary.
    for op in ("ADD", "SUB", "MUL"):
        t = op.lower()
        c += [Case(f"{t}_s8_same_shape", op, _binary(op, (2, 3, 37), (2, 3, 37))),
              Case(f"{t}_s8_broadcast_relu", op, _binary(op, (1, 5, 1, 7), (1, 1, 6, 7), act=A.RELU)),
              Case(f"{t}_s8_scalar_const", op, _binary(op, (3, 13), (1,), const2=True)),
              Case(f"{t}_s8_extreme", op, _binary(op, (4, 9), (9,), extreme=True)),
              Case(f"{t}_f32_broadcast", op, _binary(op, (2, 1, 5), (3, 1), dtype=F32)),
              Case(f"{t}_f32_relu6", op, _binary(op, (41,), (41,), dtype=F32, act=A.RELU6))]
    for op in ("MAXIMUM", "MINIMUM"):
        t = op.lower()
        c += [Case(f"{t}_s8", op, _binary(op, (3, 1, 11), (1, 4, 11), same_quant=True)),
              Case(f"{t}_f32", op, _binary(op, (5, 7), (5, 7), dtype=F32))]
    # Activations.
    for op in ("RELU", "RELU6"):
        t = op.lower()
        c += [Case(f"{t}_s8", op, _unary(op, (3, 5, 7), out_q=(-1.0, 6.5))),
              Case(f"{t}_f32", op, _unary(op, (43,), F32), lo=-8, hi=8)]
    c += [Case("leaky_relu_s8", "LEAKY_RELU", _unary("LEAKY_RELU", (2, 33), options=LeakyReluOptions(0.2))),
          Case("leaky_relu_f32", "LEAKY_RELU", _unary("LEAKY_RELU", (2, 33), F32, LeakyReluOptions(0.1))),
          Case("prelu_s8_channel_alpha", "PRELU", _prelu((1, 4, 5, 7), (1, 1, 7))),
          Case("prelu_f32", "PRELU", _prelu((2, 3, 9), (3, 9), dtype=F32)),
          Case("abs_s8_rescale", "ABS", _unary("ABS", (5, 11), out_q=(-1.0, 3.5))),
          Case("abs_f32", "ABS", _unary("ABS", (29,), F32))]
    lut_out_q: dict[str, QuantParams | tuple[float, float]] = {
        "LOGISTIC": QuantParams((float(np.float32(1 / 256)),), (-128,)),
        "TANH": QuantParams((float(np.float32(1 / 128)),), (0,)),
        "HARD_SWISH": (-0.5, 5.0)}
    for op, out_q in lut_out_q.items():
        t = op.lower()
        c += [Case(f"{t}_s8", op, _unary(op, (3, 43), in_q=(-6.0, 5.0), out_q=out_q)),
              Case(f"{t}_f32", op, _unary(op, (7, 13), F32), lo=-12, hi=20)]
    for op in ("RSQRT", "SQRT"):
        t = op.lower()
        c += [Case(f"{t}_s8", op, _unary(op, (4, 23), in_q=(0.0, 4.0), out_q=(0.0, 3.0))),
              Case(f"{t}_f32", op, _unary(op, (37,), F32), lo=_POS[0], hi=_POS[1])]
    c += [Case("softmax_s8_depth10", "SOFTMAX", _softmax((3, 10), 1.0)),
          Case("softmax_s8_depth33_beta", "SOFTMAX", _softmax((2, 2, 33), 0.7)),
          Case("softmax_f32", "SOFTMAX", _softmax((4, 17), 1.0, dtype=F32), lo=-5, hi=5)]
    # QUANTIZE / DEQUANTIZE.
    c += [Case(f"quantize_{s}_{d}", "QUANTIZE", _quantize(s, d), lo=-4, hi=4)
          for s, d in ((F32, I8), (F32, "uint8"), (I8, I8), (I8, "uint8"), ("uint8", I8), ("uint8", "uint8"))]
    c += [Case(f"dequantize_{s}", "DEQUANTIZE", _dequantize(s)) for s in (I8, "uint8", "float16")]
    # Data movement.
    for dt in (I8, F32):
        t = "s8" if dt == I8 else "f32"
        c += [Case(f"reshape_{t}", "RESHAPE", _with_consts("RESHAPE", (2, 3, 7), (6, 7),
                                                           [np.array([6, 7], np.int32)], dtype=dt)),
              Case(f"squeeze_{t}", "SQUEEZE", _with_consts("SQUEEZE", (1, 5, 1, 3), (5, 3), [],
                                                           SqueezeOptions((0, 2)), dt)),
              Case(f"expand_dims_{t}", "EXPAND_DIMS", _with_consts("EXPAND_DIMS", (5, 3), (5, 1, 3),
                                                                   [np.array([1], np.int32)], dtype=dt)),
              Case(f"transpose_4d_{t}", "TRANSPOSE",
                   _with_consts("TRANSPOSE", (2, 3, 5, 7), (7, 2, 5, 3), [np.array([3, 0, 2, 1], np.int32)],
                                dtype=dt)),
              Case(f"pad_{t}", "PAD", _with_consts("PAD", (1, 3, 5, 2), (1, 6, 6, 5),
                                                   [np.array([[0, 0], [1, 2], [0, 1], [2, 1]], np.int32)],
                                                   dtype=dt)),
              Case(f"concat_axis3_{t}", "CONCATENATION", _concat([(1, 2, 3, 5), (1, 2, 3, 1), (1, 2, 3, 9)],
                                                                 3, dt)),
              Case(f"concat_axis1_{t}", "CONCATENATION", _concat([(2, 3, 7), (2, 5, 7)], 1, dt)),
              Case(f"split_{t}", "SPLIT", _split("SPLIT", (2, 9, 5), 1, [3, 3, 3], dt)),
              Case(f"split_v_{t}", "SPLIT_V", _split("SPLIT_V", (3, 4, 11), 2, [2, 7, 2], dt)),
              Case(f"mean_hw_keep_{t}", "MEAN", _mean((2, 5, 7, 3), [1, 2], True, dt)),
              Case(f"mean_last_{t}", "MEAN", _mean((3, 4, 9), [-1], False, dt)),
              Case(f"mean_large_count_{t}", "MEAN", _mean((1, 19, 17, 3), [1, 2], True, dt)),
              Case(f"mean_outer_inner_{t}", "MEAN", _mean((3, 4, 5), [0, 2], False, dt))]
        c += [Case(f"transpose_3d_{t}", "TRANSPOSE", _with_consts("TRANSPOSE", (3, 5, 7), (3, 7, 5),
                                                                  [np.array([0, 2, 1], np.int32)], dtype=dt)),
              Case(f"slice_strided_{t}", "STRIDED_SLICE",
                   _slice((1, 9, 7, 4), [0, 1, 0, 1], [1, 8, 7, 4], [1, 2, 3, 2], (1, 4, 3, 2), _SS(), dt)),
              Case(f"slice_negative_shrink_{t}", "STRIDED_SLICE",
                   _slice((5, 6, 3), [0, -1, 2], [0, 0, 3], [1, -2, 1], (5, 3), _SS(begin_mask=1, end_mask=1,
                                                                                   shrink_axis_mask=4), dt))]
    return c


CASES = _cases()


# ---------------------------------------------------------------------------------------------
# The suite.


def _inputs(case: Case, graph: Graph, rng: np.random.Generator) -> list[np.ndarray]:
    xs = []
    for t in graph.input_tensors:
        if t.dtype is DType.FLOAT16:
            bits = rng.integers(0, 2**16, size=t.shape, dtype=np.uint16)
            finite = np.where((bits & 0x7C00) == 0x7C00, bits & 0x83FF, bits).astype(np.uint16)
            xs.append(finite.view(np.float16))  # every finite half, subnormals included
        elif t.dtype is DType.FLOAT32:
            xs.append(rand_input(rng, t, case.lo, case.hi))
        else:
            xs.append(rand_input(rng, t))
    return xs


def _check(lib: kh.KernelLibrary, call: KernelCall, graph: Graph, values: dict[int, np.ndarray],
           expected: dict[int, np.ndarray], alias: int | None = None) -> None:
    got = lib.call(call, graph, values, alias=alias)
    how = f" (in place on tensor {alias})" if alias is not None else ""
    for idx, want in expected.items():
        assert_same(got[idx], want, f"{lib.variant}:{call.symbol}{how} output {idx}",
                    atol_float=1e-6, rtol_float=1e-5)


@in_process
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kernel_matches_oracle(lib: kh.KernelLibrary, case: Case, rng: np.random.Generator) -> None:
    graph = case.build(rng)
    (op,) = graph.ops
    call = lower_op(graph, op, lib.variant)
    assert call.opcode == case.opcode
    assert lib.scratch_bytes(call) == call.scratch_bytes, "Python and C disagree on scratch bytes"
    xs = _inputs(case, graph, rng)
    values = {t.index: t.data for t in graph.tensors if t.data is not None}
    values.update(zip(graph.inputs, xs, strict=True))
    res = Oracle(graph).run(xs)
    expected = dict(zip(graph.outputs, res.outputs, strict=True))
    _check(lib, call, graph, values, expected)
    for t in call.in_place:
        _check(lib, call, graph, values, expected, alias=t)


@in_process
@pytest.mark.skipif(kh.sanitize_active(), reason="the TFLite interpreter is not run under ASan (C++ "
                    "exceptions of an uninstrumented library); the oracle comparison covers these calls")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kernel_matches_interpreter(lib: kh.KernelLibrary, case: Case, rng: np.random.Generator) -> None:
    """The same calls against the TFLite interpreter's reference kernels directly, so that a
    kernel and a lowering cannot agree with the oracle on a value TFLite computes otherwise."""
    from toolkit.interp import ReferenceInterpreter
    from toolkit.model.tflite_writer import write_tflite

    graph = case.build(rng)
    call = lower_op(graph, graph.ops[0], lib.variant)
    xs = _inputs(case, graph, rng)
    values = {t.index: t.data for t in graph.tensors if t.data is not None}
    values.update(zip(graph.inputs, xs, strict=True))
    try:
        interp = ReferenceInterpreter(write_tflite(graph))
    except InterpreterError as exc:
        pytest.skip(f"TFLite refuses this model: {exc}")
    theirs = interp.run(xs)
    _check(lib, call, graph, values, dict(zip(graph.outputs, theirs, strict=True)))


@in_process
def test_every_op_has_a_kernel_and_a_case() -> None:
    """Each op the reader supports (bar state ops) lowers to a kernel and is exercised above."""
    assert set(SUPPORTED_KERNEL_OPS) == set(SUPPORTED_OPS) - set(STATE_OPS)
    assert {c.opcode for c in CASES} == set(SUPPORTED_KERNEL_OPS)


@in_process
def test_every_declared_kernel_is_implemented(lib: kh.KernelLibrary) -> None:
    import re

    names = re.findall(r"\b(bf_\w+)\s*\(", kh.cdef_source())
    missing = [n for n in names if not lib.has(n)]
    assert not missing, f"variant {lib.variant} lacks {missing}"


@in_process
def test_lowered_symbols_exist(lib: kh.KernelLibrary, rng: np.random.Generator) -> None:
    """Every symbol the lowering can choose is exported (cases cover all kinds of calls)."""
    for case in CASES:
        graph = case.build(rng)
        call = lower_op(graph, graph.ops[0], lib.variant)
        assert lib.has(call.symbol), call.symbol


# ---------------------------------------------------------------------------------------------
# The fixed-point helpers against their Python twins (edge values the kernels rarely reach).


_EDGE32 = np.array([-(2**31), -(2**31) + 1, -(2**30), -12345678, -1, 0, 1, 2**30 - 1, 2**30, 2**31 - 1],
                   dtype=np.int64)


@in_process
def test_fixedpoint_requantization_matches_quant_py(lib: kh.KernelLibrary, rng: np.random.Generator) -> None:
    from toolkit.oracle import quant

    a = np.concatenate([_EDGE32, rng.integers(-(2**31), 2**31, size=300)])
    b = np.concatenate([_EDGE32[::-1], rng.integers(-(2**31), 2**31, size=300)])
    srdhm = [lib.lib.bft_srdhm(int(x), int(y)) for x, y in zip(a, b, strict=True)]
    np.testing.assert_array_equal(srdhm, quant.saturating_rounding_doubling_high_mul(a, b))
    exps = rng.integers(0, 32, size=a.size)
    rdbpot = [lib.lib.bft_rdbpot(int(x), int(e)) for x, e in zip(a, exps, strict=True)]
    np.testing.assert_array_equal(rdbpot, quant.rounding_divide_by_pot(a, exps))
    mults = rng.integers(2**30, 2**31, size=a.size)
    shifts = rng.integers(-31, 8, size=a.size)
    xs = rng.integers(-(2**20), 2**20, size=a.size)
    mbqm = [lib.lib.bft_mbqm(int(x), int(m), int(s)) for x, m, s in zip(xs, mults, shifts, strict=True)]
    np.testing.assert_array_equal(mbqm, quant.multiply_by_quantized_multiplier(xs, mults, shifts))


@in_process
def test_gemmlowp_functions_match_fixedpoint_py(lib: kh.KernelLibrary, rng: np.random.Generator) -> None:
    from toolkit.oracle import fixedpoint as fp

    a = np.concatenate([np.array([0, -1, -(2**31), -(2**26), -(2**31) + 1]),
                        -rng.integers(0, 2**31, size=300)])
    for bits in (5, 12):
        got = [lib.lib.bft_exp_on_negative_values(int(x), bits) for x in a]
        np.testing.assert_array_equal(got, fp.exp_on_negative_values(a, bits))
    u = np.concatenate([np.array([0, 1, 2**31 - 1]), rng.integers(0, 2**31, size=300)])
    got = [lib.lib.bft_one_over_one_plus_x(int(x)) for x in u]
    np.testing.assert_array_equal(got, fp.one_over_one_plus_x_for_x_in_0_1(u))
    pos = np.concatenate([np.array([1, 2**19, 2**31 - 1]), rng.integers(1, 2**31, size=300)])
    bits_out = lib.ffi.new("int *")
    recips, nbits = [], []
    for x in pos:
        recips.append(lib.lib.bft_get_reciprocal(int(x), 12, bits_out))
        nbits.append(bits_out[0])
    want_r, want_n = fp.get_reciprocal(pos, 12)
    np.testing.assert_array_equal(recips, want_r)
    np.testing.assert_array_equal(nbits, want_n)


@in_process
def test_dequantize_f16_every_half_value(lib: kh.KernelLibrary) -> None:
    """All 65536 half bit patterns (signed zeros, subnormals, infinities, NaN payloads) convert
    to exactly the float32 bits numpy produces."""
    rng = np.random.default_rng(0)
    graph = _dequantize("float16", (65536,))(rng)
    call = lower_op(graph, graph.ops[0], lib.variant)
    halves = np.arange(2**16, dtype=np.uint16).view(np.float16)
    got = lib.call(call, graph, {graph.inputs[0]: halves})[graph.outputs[0]]
    np.testing.assert_array_equal(got.view(np.uint32), halves.astype(np.float32).view(np.uint32))


# ---------------------------------------------------------------------------------------------
# Refusals.


@in_process
def test_unsupported_combinations_raise() -> None:
    rng = np.random.default_rng(1)
    conv_tanh = _conv((1, 5, 5, 2), 3, (3, 3), dtype=F32, act=A.TANH)(rng)
    with pytest.raises(UnsupportedOp, match="TANH"):
        lower_op(conv_tanh, conv_tanh.ops[0])
    b = GraphBuilder("int16")
    x = b.input((4, 4), "int16", quant=QuantParams((0.01,), (0,)))
    y = b.output((4, 4), "int16", quant=QuantParams((0.01,), (0,)))
    b.op("RELU", [x], [y])
    g = b.build()
    with pytest.raises(UnsupportedOp, match="RELU"):
        lower_op(g, g.ops[0])
    b = GraphBuilder("mean_dynamic_axis")
    x = b.input((2, 3), F32)
    ax = b.input((1,), "int32")
    y = b.output((2,), F32)
    b.op("MEAN", [x, ax], [y], ReducerOptions(False))
    g = b.build()
    with pytest.raises(UnsupportedOp, match="constant"):
        lower_op(g, g.ops[0])


# ---------------------------------------------------------------------------------------------
# Toolchains: the library compiles for Cortex-M; the sanitized rerun.


_ARM_FLAGS = {
    "cortex-m4": ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
    "cortex-m0plus": ["-mcpu=cortex-m0plus", "-mthumb"],
}


@in_process
@pytest.mark.cross
@pytest.mark.parametrize("cpu", sorted(_ARM_FLAGS))
def test_reference_kernels_cross_compile(cpu: str, tmp_path: object) -> None:
    cc = shutil.which("arm-none-eabi-gcc")
    if cc is None:
        pytest.skip("arm-none-eabi-gcc is not installed")
    for src in kh.variant_sources("ref"):
        cmd = [cc, *_ARM_FLAGS[cpu], "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2",
               f"-I{kh.INCLUDE_DIR}", f"-I{kh.REF_DIR}", "-c", str(src), "-o", "/dev/null"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"


@pytest.mark.skipif(not _DELEGATED, reason="set BOARDFIT_SANITIZE=1 to run the kernels under sanitizers")
def test_kernels_under_asan_and_ubsan() -> None:
    """The whole module again, in a child with the ASan runtime preloaded and the library built
    with -fsanitize=address,undefined -fno-sanitize-recover=all; any report fails the child."""
    if kh.asan_runtime() is None:
        pytest.skip(f"{kh.CC} has no AddressSanitizer runtime")
    proc, sanitizer_log = kh.run_sanitized_pytest(__file__)
    report = (proc.stdout + proc.stderr)[-4000:] + sanitizer_log[:6000]
    assert proc.returncode == 0, f"sanitized kernel tests failed (exit {proc.returncode}):\n{report}"
    assert " passed" in proc.stdout, report
