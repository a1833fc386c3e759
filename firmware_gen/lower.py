"""Lowering of one IR operator to a typed call of the C kernel library.

:func:`lower_op` turns an :class:`~toolkit.model.ir.Op` of a :class:`~toolkit.model.ir.Graph`
into a frozen :class:`KernelCall`: which ``bf_*`` symbol runs it, every field of its params
struct (``firmware_gen/kernels/include/bf_kernels.h``), which tensors it reads and writes, how
much scratch it needs and which inputs its output may share memory with.

Every arithmetic parameter (multipliers, shifts, offsets, clamps, padding, strides, lookup tables)
is computed here, on the host, with the same functions and the same float/double arithmetic as
the numpy oracle (``toolkit.oracle``), which is itself checked bit for bit against TFLite's
reference kernels.  The code generator renders a :class:`KernelCall` into C and the cffi kernel
tests call the compiled kernel with the very same values, so the numbers a device uses are the
numbers that were tested.

Operand tensors that only describe the operation (the axis of MEAN, paddings, perm, slice
bounds, reshape targets) must be constants; they are folded into the params and do not appear
in :attr:`KernelCall.args`.  READ_VARIABLE / ASSIGN_VARIABLE are not kernels: the generated code
copies state with ``memcpy`` (see :data:`STATE_OPS`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from toolkit.errors import OracleError, UnsupportedOp
from toolkit.model.ir import (
    Activation,
    ActivationOptions,
    ConcatenationOptions,
    Conv2DOptions,
    DepthwiseConv2DOptions,
    DType,
    FullyConnectedOptions,
    Graph,
    LeakyReluOptions,
    Op,
    Pool2DOptions,
    QuantParams,
    ReducerOptions,
    SoftmaxOptions,
    Tensor,
)
from toolkit.oracle import fixedpoint as fp
from toolkit.oracle import quant
from toolkit.oracle.activations import float_ratio
from toolkit.oracle.conv import Requantizer, filter_scales
from toolkit.oracle.elementwise import add_sub_params, mul_multiplier
from toolkit.oracle.padding import Window2D
from toolkit.oracle.reduce import mean_multiplier, resolve_axes
from toolkit.oracle.run import Oracle

log = logging.getLogger(__name__)

MAX_DIMS = 6  # BF_MAX_DIMS
FLT_MAX = float(np.finfo(np.float32).max)
STATE_OPS = ("READ_VARIABLE", "ASSIGN_VARIABLE")
F32 = np.float32

# ---------------------------------------------------------------------------------------------
# The description of a call.


@dataclass(frozen=True)
class ConstArray:
    """A params field that points at a constant array (emitted as ``static const`` data).

    ``ctype`` is the element type (``int32_t``, ``int8_t``, ``double``); values are Python ints,
    or floats that are exact in that type.
    """

    ctype: str
    values: tuple[int | float, ...]


@dataclass(frozen=True)
class Struct:
    """A nested struct value (``bf_dims4``, ``bf_bcast``) with its fields in declaration order."""

    ctype: str
    fields: tuple[tuple[str, FieldValue], ...]

    def get(self, name: str) -> FieldValue:
        for key, value in self.fields:
            if key == name:
                return value
        raise KeyError(name)


# A field of a params struct: ``int`` → int32_t, ``float`` → float (always exact in float32),
# ``tuple[int, ...]`` → an inline int32_t[BF_MAX_DIMS] array (padded to its full length),
# ConstArray → a pointer to constant data, Struct → a nested struct, None → a NULL pointer (an
# optional table the kernel does without, e.g. a sparse layer's codebook in raw-int8 mode).
FieldValue = int | float | tuple[int, ...] | ConstArray | Struct | None


@dataclass(frozen=True)
class TensorArg:
    """A kernel argument that is one tensor's data (``tensor == -1``: absent, passed as NULL)."""

    tensor: int
    ctype: str  # element type of the pointer: int8_t, uint8_t, uint16_t, int32_t, float, void
    output: bool = False


@dataclass(frozen=True)
class TensorListArg:
    """An array of data pointers (``const void *const *`` inputs or ``void *const *`` outputs)."""

    tensors: tuple[int, ...]
    output: bool = False


Arg = TensorArg | TensorListArg


@dataclass(frozen=True)
class KernelCall:
    """One kernel invocation: ``symbol(&params, <args…>[, scratch])``."""

    op_index: int
    opcode: str
    symbol: str
    params_type: str
    params: tuple[tuple[str, FieldValue], ...]
    args: tuple[Arg, ...]
    family: str  # the reference source file that implements it: kernels/ref/<family>.c
    takes_scratch: bool = False
    scratch_bytes: int = 0
    # Input tensors the output may occupy the same memory as (output == input, never a partial
    # overlap).  Only single-output kernels declare any.
    in_place: tuple[int, ...] = ()

    def param(self, name: str) -> FieldValue:
        for key, value in self.params:
            if key == name:
                return value
        raise KeyError(f"{self.symbol} has no parameter {name!r}")

    @property
    def input_tensors(self) -> tuple[int, ...]:
        return tuple(t for a in self.args if not a.output for t in _arg_tensors(a) if t >= 0)

    @property
    def output_tensors(self) -> tuple[int, ...]:
        return tuple(t for a in self.args if a.output for t in _arg_tensors(a))


def _arg_tensors(arg: Arg) -> tuple[int, ...]:
    return arg.tensors if isinstance(arg, TensorListArg) else (arg.tensor,)


# Scratch needs per variant: symbol → bytes as a function of the call.  The portable reference
# kernels need none; an optimized variant registers its rules here (they must agree with its C
# ``…_scratch_bytes()``, which the kernel tests check).
SCRATCH_RULES: dict[str, dict[str, Callable[[KernelCall], int]]] = {"ref": {}}


# Optimized variants (targets/isa.py chooses them; kernels/<variant>/*.c hold the C twins).
def _conv_k(call: KernelCall) -> tuple[int, bool]:
    """Taps × channels of one output of an int8 CONV_2D, and whether it is ungrouped (the
    optimized convolutions hand grouped ones to the reference code, which needs no scratch)."""
    f, x = call.param("filter"), call.param("input")
    assert isinstance(f, Struct) and isinstance(x, Struct)
    k = int(f.get("h")) * int(f.get("w")) * int(f.get("c"))  # type: ignore[arg-type]
    return k, f.get("c") == x.get("c")


def _round_up(n: int, a: int) -> int:
    return -(-n // a) * a


def _neon_conv_scratch(call: KernelCall) -> int:
    """neon/conv.c: 4 im2col rows of K int8 padded to 16, then C_out int32 filter sums."""
    k, plain = _conv_k(call)
    out = call.param("output")
    assert isinstance(out, Struct)
    return 4 * _round_up(k, 16) + 4 * int(out.get("c")) if plain else 0  # type: ignore[arg-type]


def _dsp_conv_scratch(call: KernelCall) -> int:
    """armv7em/conv.c: 2 im2col columns of K int8 padded to 4."""
    k, plain = _conv_k(call)
    return 2 * _round_up(k, 4) if plain else 0


def _x86_conv_scratch(call: KernelCall) -> int:
    """x86/conv.c: 4 im2col columns of K int16 padded to 16 (the AVX2 path; the portable build
    reserves the same, since the size must not depend on compiler flags)."""
    k, plain = _conv_k(call)
    return 4 * _round_up(k, 16) * 2 if plain else 0


SCRATCH_RULES.update({
    "x86": {"bf_conv2d_s8": _x86_conv_scratch},
    "neon": {"bf_conv2d_s8": _neon_conv_scratch},
    "armv7em": {"bf_conv2d_s8": _dsp_conv_scratch},
    "armv6m": {},
})

# ---------------------------------------------------------------------------------------------
# Entry point.


def lower_op(graph: Graph, op: Op, variant: str = "ref") -> KernelCall:
    """The kernel call that executes ``op``; :class:`UnsupportedOp` if no kernel can."""
    lowering = _LOWERINGS.get(op.opcode)
    if lowering is None:
        detail = "state ops are copied by the generated code" if op.opcode in STATE_OPS else ""
        raise UnsupportedOp(op.opcode, op.index, SUPPORTED_KERNEL_OPS, detail)
    ctx = _Ctx(graph, op)
    try:
        call = lowering(ctx)
    except (ValueError, IndexError, OracleError) as exc:
        # IndexError: an operand of the wrong rank (e.g. a 3-D conv input).
        raise ctx.unsupported(str(exc) or type(exc).__name__) from exc
    rules = SCRATCH_RULES.get(variant)
    if rules is None:
        raise ValueError(f"unknown kernel variant {variant!r}; known: {', '.join(SCRATCH_RULES)}")
    rule = rules.get(call.symbol)
    if rule is not None:
        call = replace(call, scratch_bytes=int(rule(call)))
    return call


# ---------------------------------------------------------------------------------------------
# Helpers shared by the lowerings.


@dataclass(frozen=True)
class _Ctx:
    graph: Graph
    op: Op

    def tensor(self, i: int) -> Tensor:
        if i >= len(self.op.inputs) or self.op.inputs[i] < 0:
            raise ValueError(f"input {i} is absent")
        return self.graph.tensors[self.op.inputs[i]]

    def optional(self, i: int) -> Tensor | None:
        if i >= len(self.op.inputs) or self.op.inputs[i] < 0:
            return None
        return self.graph.tensors[self.op.inputs[i]]

    def out(self, i: int = 0) -> Tensor:
        return self.graph.tensors[self.op.outputs[i]]

    def const(self, i: int) -> np.ndarray:
        t = self.tensor(i)
        if t.data is None:
            raise ValueError(f"operand {i} ({t.name}) must be a constant to generate code")
        return np.asarray(t.data)

    def unsupported(self, detail: str) -> UnsupportedOp:
        return UnsupportedOp(self.op.opcode, self.op.index, SUPPORTED_KERNEL_OPS, detail)

    def call(self, symbol: str, family: str, params: Sequence[tuple[str, FieldValue]],
             args: Sequence[Arg], *, scratch: bool = False, in_place: Sequence[int] = ()) -> KernelCall:
        return KernelCall(self.op.index, self.op.opcode, symbol, f"{symbol}_params", tuple(params),
                          tuple(args), family, scratch, 0, tuple(in_place))


_SUFFIX = {DType.INT8: "s8", DType.UINT8: "u8", DType.FLOAT32: "f32"}
_CTYPE = {DType.INT8: "int8_t", DType.UINT8: "uint8_t", DType.FLOAT32: "float", DType.INT32: "int32_t",
          DType.FLOAT16: "uint16_t", DType.INT16: "int16_t", DType.INT64: "int64_t", DType.BOOL: "uint8_t"}


def _kind(ctx: _Ctx, *tensors: Tensor, allowed: tuple[DType, ...] = (DType.INT8, DType.FLOAT32)) -> str:
    """The common dtype suffix of ``tensors`` (``s8``/``f32``…); all must share one allowed dtype."""
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) != 1 or next(iter(dtypes)) not in allowed:
        names = ", ".join(t.dtype.value for t in tensors)
        supported = ", ".join(d.value for d in allowed)
        raise ctx.unsupported(f"tensor types ({names}); kernels exist for {supported} throughout")
    return _SUFFIX[next(iter(dtypes))]


def _per_tensor(t: Tensor, role: str) -> tuple[float, int]:
    if t.quant is None:
        raise ValueError(f"{role} tensor {t.name!r} has no quantization parameters")
    if t.quant.per_channel:
        raise ValueError(f"{role} tensor {t.name!r} is quantized per channel; one scale is needed")
    return t.quant.scale[0], t.quant.zero_point[0]


def _dims4(shape: tuple[int, ...]) -> Struct:
    if len(shape) != 4:
        raise ValueError(f"a 4-D shape is needed, got {list(shape)}")
    n, h, w, c = (int(s) for s in shape)
    return Struct("bf_dims4", (("n", n), ("h", h), ("w", w), ("c", c)))


def _vec(values: Sequence[int], fill: int = 0) -> tuple[int, ...]:
    """An int32_t[BF_MAX_DIMS] field, padded with ``fill``."""
    if len(values) > MAX_DIMS:
        raise ValueError(f"{len(values)} dimensions; the kernels handle at most {MAX_DIMS}")
    return tuple(int(v) for v in values) + (fill,) * (MAX_DIMS - len(values))


def _pair(a: str, b: str, values: tuple[float, float] | tuple[int, int]) -> list[tuple[str, FieldValue]]:
    return [(a, values[0]), (b, values[1])]


def _float_range(activation: Activation, what: str) -> tuple[float, float]:
    """``CalculateActivationRange`` (float): the clamp of a fused activation."""
    ranges = {
        Activation.NONE: (-FLT_MAX, FLT_MAX),
        Activation.RELU: (0.0, FLT_MAX),
        Activation.RELU6: (0.0, 6.0),
        Activation.RELU_N1_TO_1: (-1.0, 1.0),
    }
    if activation not in ranges:
        raise ValueError(f"fused {activation.value} on {what} is not supported")
    return ranges[activation]


def _quant_range(activation: Activation, out: Tensor) -> tuple[int, int]:
    scale, zp = _per_tensor(out, "output")
    return quant.activation_range_quantized(activation.value, scale, zp, out.dtype.numpy)


def _elementwise_activation(op: Op) -> Activation:
    """Element-wise ops clamp only for the RELU family; TFLite ignores a fused TANH/SIGN_BIT."""
    act = op.options.activation if isinstance(op.options, ActivationOptions) else Activation.NONE
    relu_family = (Activation.RELU, Activation.RELU6, Activation.RELU_N1_TO_1)
    return act if act in relu_family else Activation.NONE


def _dense_strides(shape: Sequence[int]) -> list[int]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= int(s)
    return strides[::-1]


def _merge_dims(shape: Sequence[int], *strides: Sequence[int]) -> tuple[list[int], list[list[int]]]:
    """Drop size-1 dimensions and merge neighbours that every stride list walks contiguously.

    Returns the merged shape and strides (at least one dimension).  Iteration order over the
    (row-major) output is unchanged, so the kernels compute the same elements in the same order.
    """
    dims = [(int(s), [int(st[k]) for st in strides]) for k, s in enumerate(shape) if s != 1]
    merged: list[tuple[int, list[int]]] = []
    for size, st in dims:
        if merged:
            prev_size, prev_st = merged[-1]
            if all(p == c * size for p, c in zip(prev_st, st, strict=True)):
                merged[-1] = (prev_size * size, st)
                continue
        merged.append((size, st))
    if not merged:
        merged = [(1, [0] * len(strides))]
    return [m[0] for m in merged], [[m[1][k] for m in merged] for k in range(len(strides))]


def _broadcast_strides(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[int]:
    rank = len(out_shape)
    if len(in_shape) > rank:
        raise ValueError(f"input shape {list(in_shape)} has more dimensions than output {list(out_shape)}")
    padded = (1,) * (rank - len(in_shape)) + tuple(in_shape)
    dense = _dense_strides(padded)
    strides = []
    for d_in, d_out, st in zip(padded, out_shape, dense, strict=True):
        if d_in not in (1, d_out):
            raise ValueError(f"shape {list(in_shape)} does not broadcast to {list(out_shape)}")
        strides.append(0 if d_in == 1 and d_out != 1 else st)
    return strides


def _bcast(t1: Tensor, t2: Tensor, out: Tensor) -> Struct:
    shape, (s1, s2) = _merge_dims(
        out.shape, _broadcast_strides(t1.shape, out.shape), _broadcast_strides(t2.shape, out.shape)
    )
    return Struct("bf_bcast", (("rank", len(shape)), ("shape", _vec(shape, 1)),
                               ("in1_stride", _vec(s1)), ("in2_stride", _vec(s2))))


def _same_layout(t: Tensor, out: Tensor) -> bool:
    """Whether ``t`` can share memory with ``out`` element for element (same size, dense)."""
    return t.num_elements == out.num_elements and t.dtype.itemsize == out.dtype.itemsize


# ---------------------------------------------------------------------------------------------
# CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED.


def _window(opts: Conv2DOptions | DepthwiseConv2DOptions, x: Tensor, w: Tensor, out: Tensor) -> Window2D:
    return Window2D.create(opts.padding, (x.shape[1], x.shape[2]), (w.shape[1], w.shape[2]),
                           (opts.stride_h, opts.stride_w), (opts.dilation_h, opts.dilation_w),
                           (out.shape[1], out.shape[2]))


def _window_fields(win: Window2D) -> list[tuple[str, FieldValue]]:
    return [("stride_h", win.stride_h), ("stride_w", win.stride_w),
            ("dilation_h", win.dilation_h), ("dilation_w", win.dilation_w),
            ("pad_top", win.pad_top), ("pad_left", win.pad_left)]


def _conv_requant(ctx: _Ctx, x: Tensor, w: Tensor, out: Tensor, channels: int, axis: int,
                  activation: Activation) -> list[tuple[str, FieldValue]]:
    """Per-channel requantization fields of the int8 convolutions (PopulateConvolution…Params)."""
    in_scale, in_zp = _per_tensor(x, "input")
    scales, zps = filter_scales(w, channels, axis)
    if any(z != 0 for z in zps):
        raise ValueError("int8 filters must be symmetric (zero point 0)")
    _, out_zp = _per_tensor(out, "output")
    req = Requantizer.create(in_scale, scales, out, activation, float32_product=False)
    return [("input_offset", -in_zp), ("output_offset", out_zp),
            ("act_min", req.act_min), ("act_max", req.act_max),
            ("multiplier", ConstArray("int32_t", tuple(int(m) for m in req.multiplier))),
            ("shift", ConstArray("int32_t", tuple(int(s) for s in req.shift)))]


def _bias_arg(ctx: _Ctx, kind: str, channels: int) -> TensorArg:
    bias = ctx.optional(2)
    if bias is None:
        return TensorArg(-1, "int32_t" if kind == "s8" else "float")
    want = DType.INT32 if kind == "s8" else DType.FLOAT32
    if bias.dtype is not want or bias.num_elements != channels:
        raise ctx.unsupported(
            f"bias must be {channels} {want.value} values, got {bias.dtype.value}{list(bias.shape)}"
        )
    return TensorArg(bias.index, _CTYPE[want])


def _lower_conv(ctx: _Ctx) -> KernelCall:
    opts = ctx.op.options
    assert isinstance(opts, Conv2DOptions)
    x, w, out = ctx.tensor(0), ctx.tensor(1), ctx.out()
    kind = _kind(ctx, x, w, out)
    if x.shape[3] % w.shape[3] or out.shape[3] % (x.shape[3] // w.shape[3]):
        raise ValueError(f"input depth {x.shape[3]} and filter {list(w.shape)} do not form groups")
    win = _window(opts, x, w, out)
    params: list[tuple[str, FieldValue]] = [("input", _dims4(x.shape)), ("filter", _dims4(w.shape)),
                                            ("output", _dims4(out.shape)), *_window_fields(win)]
    if kind == "s8":
        params += _conv_requant(ctx, x, w, out, out.shape[3], 0, opts.activation)
    else:
        params += _pair("act_min", "act_max", _float_range(opts.activation, "CONV_2D"))
    ct = _CTYPE[x.dtype]
    args = (TensorArg(x.index, ct), TensorArg(w.index, ct), _bias_arg(ctx, kind, out.shape[3]),
            TensorArg(out.index, ct, output=True))
    return ctx.call(f"bf_conv2d_{kind}", "conv", params, args, scratch=True)


def _lower_depthwise(ctx: _Ctx) -> KernelCall:
    opts = ctx.op.options
    assert isinstance(opts, DepthwiseConv2DOptions)
    x, w, out = ctx.tensor(0), ctx.tensor(1), ctx.out()
    kind = _kind(ctx, x, w, out)
    if w.shape[0] != 1 or w.shape[3] % x.shape[3] or out.shape[3] != w.shape[3]:
        raise ValueError(f"filter {list(w.shape)} must be 1×H×W×(C·M) for input depth {x.shape[3]}")
    win = _window(opts, x, w, out)
    params: list[tuple[str, FieldValue]] = [
        ("input", _dims4(x.shape)), ("filter", _dims4(w.shape)), ("output", _dims4(out.shape)),
        ("depth_multiplier", w.shape[3] // x.shape[3]), *_window_fields(win)]
    if kind == "s8":
        params += _conv_requant(ctx, x, w, out, out.shape[3], 3, opts.activation)
    else:
        params += _pair("act_min", "act_max", _float_range(opts.activation, "DEPTHWISE_CONV_2D"))
    ct = _CTYPE[x.dtype]
    args = (TensorArg(x.index, ct), TensorArg(w.index, ct), _bias_arg(ctx, kind, out.shape[3]),
            TensorArg(out.index, ct, output=True))
    return ctx.call(f"bf_depthwise_conv2d_{kind}", "depthwise_conv", params, args, scratch=True)


def _lower_fully_connected(ctx: _Ctx) -> KernelCall:
    opts = ctx.op.options
    assert isinstance(opts, FullyConnectedOptions)
    x, w, out = ctx.tensor(0), ctx.tensor(1), ctx.out()
    kind = _kind(ctx, x, w, out)
    if len(w.shape) != 2 or x.num_elements % w.shape[1]:
        raise ValueError(f"weights {list(w.shape)} do not match {x.num_elements} input elements")
    units, depth = w.shape
    batches = x.num_elements // depth
    if out.num_elements != batches * units:
        raise ValueError(f"output {list(out.shape)} is not {batches}×{units}")
    params: list[tuple[str, FieldValue]] = [("batches", batches), ("depth", depth), ("units", units)]
    if kind == "s8":
        params += _fc_requant(x, w, out, units, opts.activation)
    else:
        params += _pair("act_min", "act_max", _float_range(opts.activation, "FULLY_CONNECTED"))
    ct = _CTYPE[x.dtype]
    args = (TensorArg(x.index, ct), TensorArg(w.index, ct), _bias_arg(ctx, kind, units),
            TensorArg(out.index, ct, output=True))
    return ctx.call(f"bf_fully_connected_{kind}", "fully_connected", params, args, scratch=True)


def _fc_requant(x: Tensor, w: Tensor, out: Tensor, units: int,
                activation: Activation) -> list[tuple[str, FieldValue]]:
    """TFLite Micro's FC requantization: a fixed-point multiplier and shift per unit.

    Per-channel filters multiply the scales in double, per-tensor ones in float32
    (``GetQuantizedConvolutionMultipler``), exactly as the oracle's TFLM profile does.
    """
    in_scale, in_zp = _per_tensor(x, "input")
    _, out_zp = _per_tensor(out, "output")
    scales, zps = filter_scales(w, units, 0)
    assert w.quant is not None
    per_channel = w.quant.per_channel
    req = Requantizer.create(in_scale, scales, out, activation, float32_product=not per_channel)
    return [("input_offset", -in_zp), ("filter_offset", 0 if per_channel else -zps[0]),
            ("output_offset", out_zp), ("act_min", req.act_min), ("act_max", req.act_max),
            ("multiplier", ConstArray("int32_t", tuple(int(m) for m in req.multiplier))),
            ("shift", ConstArray("int32_t", tuple(int(s) for s in req.shift)))]


# ---------------------------------------------------------------------------------------------
# Pooling.


def _lower_pool(ctx: _Ctx) -> KernelCall:
    opts = ctx.op.options
    assert isinstance(opts, Pool2DOptions)
    x, out = ctx.tensor(0), ctx.out()
    kind = _kind(ctx, x, out)
    win = Window2D.create(opts.padding, (x.shape[1], x.shape[2]), (opts.filter_h, opts.filter_w),
                          (opts.stride_h, opts.stride_w), (1, 1), (out.shape[1], out.shape[2]))
    if out.shape != (x.shape[0], win.out_h, win.out_w, x.shape[3]):
        raise ValueError(f"output {list(out.shape)} does not match the pooling window")
    params: list[tuple[str, FieldValue]] = [
        ("input", _dims4(x.shape)), ("output", _dims4(out.shape)),
        ("filter_h", opts.filter_h), ("filter_w", opts.filter_w),
        ("stride_h", opts.stride_h), ("stride_w", opts.stride_w),
        ("pad_top", win.pad_top), ("pad_left", win.pad_left)]
    if kind == "s8":
        params += _pair("act_min", "act_max", _quant_range(opts.activation, out))
    else:
        params += _pair("act_min", "act_max", _float_range(opts.activation, ctx.op.opcode))
    name = "avgpool" if ctx.op.opcode == "AVERAGE_POOL_2D" else "maxpool"
    ct = _CTYPE[x.dtype]
    return ctx.call(f"bf_{name}_{kind}", "pooling", params,
                    (TensorArg(x.index, ct), TensorArg(out.index, ct, output=True)))


# ---------------------------------------------------------------------------------------------
# Element-wise binary ops.


def _binary(ctx: _Ctx) -> tuple[Tensor, Tensor, Tensor, str]:
    t1, t2, out = ctx.tensor(0), ctx.tensor(1), ctx.out()
    return t1, t2, out, _kind(ctx, t1, t2, out)


def _binary_call(ctx: _Ctx, name: str, kind: str, params: list[tuple[str, FieldValue]],
                 t1: Tensor, t2: Tensor, out: Tensor) -> KernelCall:
    ct = _CTYPE[out.dtype]
    in_place = [t.index for t in (t1, t2) if t.shape == out.shape and not t.is_constant]
    args = (TensorArg(t1.index, ct), TensorArg(t2.index, ct), TensorArg(out.index, ct, output=True))
    return ctx.call(f"bf_{name}_{kind}", "elementwise", [("bcast", _bcast(t1, t2, out)), *params],
                    args, in_place=in_place)


def _lower_add_sub(ctx: _Ctx) -> KernelCall:
    t1, t2, out, kind = _binary(ctx)
    act = _elementwise_activation(ctx.op)
    name = ctx.op.opcode.lower()
    if kind == "f32":
        return _binary_call(ctx, name, kind, _pair("act_min", "act_max", _float_range(act, name)),
                            t1, t2, out)
    p = add_sub_params(t1, t2, out, act.value)
    params: list[tuple[str, FieldValue]] = [
        ("left_shift", p.left_shift),
        ("input1_offset", p.input1_offset), ("input1_multiplier", p.input1_multiplier),
        ("input1_shift", p.input1_shift),
        ("input2_offset", p.input2_offset), ("input2_multiplier", p.input2_multiplier),
        ("input2_shift", p.input2_shift),
        ("output_offset", p.output_offset), ("output_multiplier", p.output_multiplier),
        ("output_shift", p.output_shift), ("act_min", p.act_min), ("act_max", p.act_max)]
    return _binary_call(ctx, name, kind, params, t1, t2, out)


def _lower_mul(ctx: _Ctx) -> KernelCall:
    t1, t2, out, kind = _binary(ctx)
    act = _elementwise_activation(ctx.op)
    if kind == "f32":
        return _binary_call(ctx, "mul", kind, _pair("act_min", "act_max", _float_range(act, "MUL")),
                            t1, t2, out)
    _, z1 = _per_tensor(t1, "input 1")
    _, z2 = _per_tensor(t2, "input 2")
    _, zo = _per_tensor(out, "output")
    mult, shift = mul_multiplier(t1, t2, out)
    lo, hi = _quant_range(act, out)
    params: list[tuple[str, FieldValue]] = [
        ("input1_offset", -z1), ("input2_offset", -z2), ("output_offset", zo),
        ("output_multiplier", mult), ("output_shift", shift), ("act_min", lo), ("act_max", hi)]
    return _binary_call(ctx, "mul", kind, params, t1, t2, out)


def _lower_min_max(ctx: _Ctx) -> KernelCall:
    t1, t2, out, kind = _binary(ctx)
    return _binary_call(ctx, ctx.op.opcode.lower(), kind, [], t1, t2, out)


# ---------------------------------------------------------------------------------------------
# Activations.


def _unary(ctx: _Ctx, symbol: str, family: str, params: list[tuple[str, FieldValue]],
           *, in_place: bool = True) -> KernelCall:
    x, out = ctx.tensor(0), ctx.out()
    args = (TensorArg(x.index, _CTYPE[x.dtype]), TensorArg(out.index, _CTYPE[out.dtype], output=True))
    ok = in_place and _same_layout(x, out) and not x.is_constant
    return ctx.call(symbol, family, params, args, in_place=[x.index] if ok else [])


def _lower_relu(ctx: _Ctx) -> KernelCall:
    x, out = ctx.tensor(0), ctx.out()
    kind = _kind(ctx, x, out)
    top = 6.0 if ctx.op.opcode == "RELU6" else None
    if kind == "f32":
        return _unary(ctx, "bf_relu_f32", "activations",
                      [("count", x.num_elements), ("lo", 0.0), ("hi", FLT_MAX if top is None else top)])
    in_scale, in_zp = _per_tensor(x, "input")
    out_scale, out_zp = _per_tensor(out, "output")
    # QuantizedReluX: act / scale is a float division rounded with roundf.
    lo = max(-128, out_zp + quant.tflite_round(float_ratio(0.0, out_scale)))
    hi = 127 if top is None else min(127, out_zp + quant.tflite_round(float_ratio(top, out_scale)))
    # TFLM's CalculateReluOpData divides the scales in double (TFLite's ReluPrepare in float).
    mult, shift = quant.quantize_multiplier(in_scale / out_scale)
    return _unary(ctx, "bf_relu_s8", "activations", [
        ("count", x.num_elements), ("input_offset", -in_zp), ("output_offset", out_zp),
        ("multiplier", mult), ("shift", shift), ("act_min", lo), ("act_max", hi)])


def _lower_leaky_relu(ctx: _Ctx) -> KernelCall:
    opts = ctx.op.options
    assert isinstance(opts, LeakyReluOptions)
    x, out = ctx.tensor(0), ctx.out()
    kind = _kind(ctx, x, out)
    if kind == "f32":
        return _unary(ctx, "bf_leaky_relu_f32", "activations",
                      [("count", x.num_elements), ("alpha", float(F32(opts.alpha)))])
    in_scale, in_zp = _per_tensor(x, "input")
    out_scale, out_zp = _per_tensor(out, "output")
    # LeakyReluPrepare: both real multipliers are float32 expressions.
    m_alpha, s_alpha = quant.quantize_multiplier(float(F32(in_scale) * F32(opts.alpha) / F32(out_scale)))
    m_id, s_id = quant.quantize_multiplier(float_ratio(in_scale, out_scale))
    return _unary(ctx, "bf_leaky_relu_s8", "activations", [
        ("count", x.num_elements), ("input_offset", -in_zp), ("output_offset", out_zp),
        ("identity_multiplier", m_id), ("identity_shift", s_id),
        ("alpha_multiplier", m_alpha), ("alpha_shift", s_alpha)])


def _lower_prelu(ctx: _Ctx) -> KernelCall:
    x, alpha, out = ctx.tensor(0), ctx.tensor(1), ctx.out()
    kind = _kind(ctx, x, alpha, out)
    if x.shape != out.shape:
        raise ValueError(f"alpha {list(alpha.shape)} must not grow the input {list(x.shape)}")
    params: list[tuple[str, FieldValue]] = [("bcast", _bcast(x, alpha, out))]
    if kind == "s8":
        in_scale, in_zp = _per_tensor(x, "input")
        a_scale, a_zp = _per_tensor(alpha, "alpha")
        out_scale, out_zp = _per_tensor(out, "output")
        # TFLM's CalculatePreluParams: double quotients.
        m1, s1 = quant.quantize_multiplier(in_scale / out_scale)
        m2, s2 = quant.quantize_multiplier(in_scale * a_scale / out_scale)
        params += [("input_offset", -in_zp), ("alpha_offset", -a_zp), ("output_offset", out_zp),
                   ("multiplier_pos", m1), ("shift_pos", s1), ("multiplier_neg", m2), ("shift_neg", s2)]
    ct = _CTYPE[x.dtype]
    args = (TensorArg(x.index, ct), TensorArg(alpha.index, ct), TensorArg(out.index, ct, output=True))
    return ctx.call(f"bf_prelu_{kind}", "activations", params, args,
                    in_place=[] if x.is_constant else [x.index])


def _lower_abs(ctx: _Ctx) -> KernelCall:
    x, out = ctx.tensor(0), ctx.out()
    kind = _kind(ctx, x, out)
    if kind == "f32":
        return _unary(ctx, "bf_abs_f32", "activations", [("count", x.num_elements)])
    in_scale, in_zp = _per_tensor(x, "input")
    out_scale, out_zp = _per_tensor(out, "output")
    rescale = F32(in_scale) != F32(out_scale)
    # TFLM divides the scales in double.
    mult, shift = quant.quantize_multiplier(in_scale / out_scale) if rescale else (0, 0)
    return _unary(ctx, "bf_abs_s8", "activations", [
        ("count", x.num_elements), ("input_offset", -in_zp), ("output_offset", out_zp),
        ("rescale", int(rescale)), ("multiplier", mult), ("shift", shift)])


def _lower_lut_or_float(ctx: _Ctx) -> KernelCall:
    """LOGISTIC, TANH, HARD_SWISH, RSQRT, SQRT: float kernels, or an int8 lookup table."""
    x, out = ctx.tensor(0), ctx.out()
    kind = _kind(ctx, x, out)
    if kind == "f32":
        return _unary(ctx, f"bf_{ctx.op.opcode.lower()}_f32", "activations", [("count", x.num_elements)])
    table = ConstArray("int8_t", tuple(int(v) for v in int8_table(ctx.graph, ctx.op)))
    return _unary(ctx, "bf_lut_s8", "activations", [("count", x.num_elements), ("table", table)])


def int8_table(graph: Graph, op: Op) -> np.ndarray:
    """The oracle's output for every int8 input value of a one-input element-wise op (index
    ``q + 128``).  Inputs on which TFLite fails (e.g. RSQRT of a negative value) map to the
    output zero point: TFLite gives no result there to agree with."""
    x, out = graph.tensors[op.inputs[0]], graph.tensors[op.outputs[0]]
    probe = _probe_graph(graph, op, x, out, (256,))
    values = np.arange(-128, 128, dtype=np.int8)
    try:
        return Oracle(probe).run([values]).outputs[0].astype(np.int64)
    except OracleError:
        pass
    _, out_zp = _per_tensor(out, "output")
    table = np.full(256, out_zp, dtype=np.int64)
    oracle = Oracle(_probe_graph(graph, op, x, out, (1,)))
    for i, v in enumerate(values):
        try:
            table[i] = int(oracle.run([np.array([v], dtype=np.int8)]).outputs[0][0])
        except OracleError:
            log.debug("%s: no TFLite result for input %d; the table holds the zero point", op.label, v)
    return table


def _probe_graph(graph: Graph, op: Op, x: Tensor, out: Tensor, shape: tuple[int, ...]) -> Graph:
    """A one-op graph that applies ``op`` (same options and quantization) to a ``shape`` input."""
    tx = Tensor(0, x.name, shape, x.dtype, x.quant)
    to = Tensor(1, out.name, shape, out.dtype, out.quant)
    return Graph(f"{graph.name}:{op.label}:probe", (tx, to),
                 (Op(0, op.opcode, (0,), (1,), op.options, op.name),), (0,), (1,))


def _lower_softmax(ctx: _Ctx) -> KernelCall:
    opts = ctx.op.options
    beta = opts.beta if isinstance(opts, SoftmaxOptions) else 1.0
    x, out = ctx.tensor(0), ctx.out()
    kind = _kind(ctx, x, out)
    depth = x.shape[-1] if x.shape else 1
    rows = x.num_elements // depth
    if kind == "f32":
        return _unary(ctx, "bf_softmax_f32", "activations",
                      [("rows", rows), ("depth", depth), ("beta", float(F32(beta)))])
    in_scale, _ = _per_tensor(x, "input")
    out_scale, out_zp = _per_tensor(out, "output")
    if out_zp != -128 or abs(out_scale - 1.0 / 256) > 0.001 / 256:
        raise ValueError(
            f"int8 SOFTMAX needs output scale 1/256 and zero point -128, got {out_scale}, {out_zp}"
        )
    mult, left_shift = fp.preprocess_softmax_scaling(float(F32(beta)), float(F32(in_scale)), 5)
    diff_min = -fp.calculate_input_radius(5, left_shift)
    return _unary(ctx, "bf_softmax_s8", "activations", [
        ("rows", rows), ("depth", depth), ("input_multiplier", mult),
        ("input_left_shift", left_shift), ("diff_min", diff_min)])


# ---------------------------------------------------------------------------------------------
# QUANTIZE, DEQUANTIZE.


def _lower_quantize(ctx: _Ctx) -> KernelCall:
    x, out = ctx.tensor(0), ctx.out()
    if out.dtype not in (DType.INT8, DType.UINT8):
        raise ctx.unsupported(f"QUANTIZE to {out.dtype.value}; kernels exist for int8 and uint8")
    out_scale, out_zp = _per_tensor(out, "output")
    if x.dtype is DType.FLOAT32:
        return _unary(ctx, f"bf_quantize_f32_{_SUFFIX[out.dtype]}", "quantize",
                      [("count", x.num_elements), ("scale", float(F32(out_scale))), ("zero_point", out_zp)],
                      in_place=False)
    if x.dtype not in (DType.INT8, DType.UINT8):
        raise ctx.unsupported(f"QUANTIZE from {x.dtype.value}")
    in_scale, in_zp = _per_tensor(x, "input")
    mult, shift = quant.quantize_multiplier(in_scale / out_scale)  # double quotient (Prepare)
    return _unary(ctx, f"bf_requantize_{_SUFFIX[x.dtype]}_{_SUFFIX[out.dtype]}", "quantize", [
        ("count", x.num_elements), ("input_offset", -in_zp), ("output_offset", out_zp),
        ("multiplier", mult), ("shift", shift)])


def _lower_dequantize(ctx: _Ctx) -> KernelCall:
    x, out = ctx.tensor(0), ctx.out()
    if out.dtype is not DType.FLOAT32:
        raise ctx.unsupported(f"DEQUANTIZE to {out.dtype.value}")
    if x.dtype is DType.FLOAT16:
        return _unary(ctx, "bf_dequantize_f16_f32", "quantize", [("count", x.num_elements)], in_place=False)
    if x.dtype not in (DType.INT8, DType.UINT8):
        raise ctx.unsupported(f"DEQUANTIZE from {x.dtype.value}; kernels exist for int8, uint8, float16")
    scale, zp = _per_tensor(x, "input")
    return _unary(ctx, f"bf_dequantize_{_SUFFIX[x.dtype]}_f32", "quantize",
                  [("count", x.num_elements), ("scale", float(F32(scale))), ("zero_point", zp)],
                  in_place=False)


# ---------------------------------------------------------------------------------------------
# Data movement.


def _lower_reshape(ctx: _Ctx) -> KernelCall:
    x, out = ctx.tensor(0), ctx.out()
    if x.nbytes != out.nbytes:
        raise ValueError(f"{x.nbytes} input bytes but {out.nbytes} output bytes")
    args = (TensorArg(x.index, "void"), TensorArg(out.index, "void", output=True))
    return ctx.call("bf_reshape_any", "shape", [("bytes", x.nbytes)], args,
                    in_place=[] if x.is_constant else [x.index])


def _gather_call(ctx: _Ctx, symbol: str, out_shape: Sequence[int], offset: int,
                 strides: Sequence[int]) -> KernelCall:
    x, out = ctx.tensor(0), ctx.out()
    shape, (merged,) = _merge_dims(out_shape, strides)
    params: list[tuple[str, FieldValue]] = [
        ("rank", len(shape)), ("elem_size", x.dtype.itemsize), ("shape", _vec(shape, 1)),
        ("in_offset", int(offset)), ("in_stride", _vec(merged))]
    args = (TensorArg(x.index, "void"), TensorArg(out.index, "void", output=True))
    return ctx.call(symbol, "shape", params, args)


def _lower_transpose(ctx: _Ctx) -> KernelCall:
    x, out = ctx.tensor(0), ctx.out()
    perm = [int(p) + len(x.shape) if p < 0 else int(p) for p in ctx.const(1).reshape(-1)]
    if sorted(perm) != list(range(len(x.shape))):
        raise ValueError(f"perm {perm} is not a permutation of {len(x.shape)} axes")
    dense = _dense_strides(x.shape)
    if tuple(x.shape[p] for p in perm) != out.shape:
        raise ValueError(f"perm {perm} of {list(x.shape)} is not {list(out.shape)}")
    return _gather_call(ctx, "bf_transpose_any", out.shape, 0, [dense[p] for p in perm])


def _lower_strided_slice(ctx: _Ctx) -> KernelCall:
    """The slice's element mapping is traced through the oracle (on an index tensor) and fitted
    with one offset and one stride per output dimension, so every mask rule TFLite applies is
    inherited from the oracle rather than re-implemented."""
    out = ctx.out()
    if out.num_elements == 0:
        raise ValueError("an empty slice")
    idx = _trace_indices(ctx)
    offset = int(idx.reshape(-1)[0])
    strides = []
    for k, size in enumerate(out.shape):
        if size == 1:
            strides.append(0)
            continue
        step = [0] * len(out.shape)
        step[k] = 1
        strides.append(int(idx[tuple(step)]) - offset)
    grid = np.indices(out.shape).reshape(len(out.shape), -1)
    fitted = offset + np.asarray(strides, dtype=np.int64) @ grid if out.shape else np.array([offset])
    if not np.array_equal(fitted, idx.reshape(-1)):
        raise ValueError("the slice is not an affine gather")
    return _gather_call(ctx, "bf_strided_slice_any", out.shape or (1,), offset, strides or [0])


def _trace_indices(ctx: _Ctx) -> np.ndarray:
    """Run the op in the oracle on int32 element indices of its first input."""
    x, out = ctx.tensor(0), ctx.out()
    tensors = [Tensor(0, x.name, x.shape, DType.INT32)]
    inputs = [0]
    for i in range(1, len(ctx.op.inputs)):
        t = ctx.optional(i)
        if t is None:
            inputs.append(-1)
            continue
        ctx.const(i)
        tensors.append(Tensor(len(tensors), t.name, t.shape, t.dtype, t.quant, t.data))
        inputs.append(len(tensors) - 1)
    tensors.append(Tensor(len(tensors), out.name, out.shape, DType.INT32))
    o = len(tensors) - 1
    probe = Graph(f"{ctx.graph.name}:{ctx.op.label}:trace", tuple(tensors),
                  (Op(0, ctx.op.opcode, tuple(inputs), (o,), ctx.op.options),), (0,), (o,))
    values = np.arange(x.num_elements, dtype=np.int32).reshape(x.shape)
    return np.asarray(Oracle(probe).run([values]).outputs[0], dtype=np.int64)


def _fill_byte(ctx: _Ctx, out: Tensor) -> int:
    """PAD's fill value as one repeated byte: the explicit constant, else the zero point of a
    quantized output, else 0."""
    value: np.ndarray
    if ctx.optional(2) is not None:
        value = ctx.const(2).astype(out.dtype.numpy).reshape(-1)[:1]
    elif out.dtype in (DType.INT8, DType.UINT8, DType.INT16) and out.quant is not None:
        value = np.array([out.quant.single_zero_point], dtype=out.dtype.numpy)
    else:
        value = np.zeros(1, dtype=out.dtype.numpy)
    raw = value.tobytes()
    if len(set(raw)) != 1:
        raise ValueError(f"pad value {value[0]!r} is not one repeated byte")
    return raw[0]


def _lower_pad(ctx: _Ctx) -> KernelCall:
    x, out = ctx.tensor(0), ctx.out()
    widths = ctx.const(1).astype(np.int64).reshape(-1, 2)
    if widths.shape[0] != len(x.shape) or (widths < 0).any():
        raise ValueError(f"paddings {widths.tolist()} do not fit a {len(x.shape)}-D input")
    if tuple(int(s + a + b) for s, (a, b) in zip(x.shape, widths, strict=True)) != out.shape:
        raise ValueError(f"padding {list(x.shape)} by {widths.tolist()} is not {list(out.shape)}")
    in_shape, out_shape, before = _merge_pad(x.shape, out.shape, [int(a) for a, _ in widths])
    params: list[tuple[str, FieldValue]] = [
        ("rank", len(in_shape)), ("elem_size", x.dtype.itemsize), ("in_shape", _vec(in_shape, 1)),
        ("out_shape", _vec(out_shape, 1)), ("pad_before", _vec(before)),
        ("fill_byte", _fill_byte(ctx, out))]
    args = (TensorArg(x.index, "void"), TensorArg(out.index, "void", output=True))
    return ctx.call("bf_pad_any", "shape", params, args)


def _merge_pad(in_shape: Sequence[int], out_shape: Sequence[int],
               before: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """Fold every unpadded dimension into its outer neighbour (fewer, longer rows); drop
    unpadded dimensions of size 1."""
    dims: list[list[int]] = []
    for i, o, b in zip(in_shape, out_shape, before, strict=True):
        if i == o == 1:
            continue
        if dims and i == o:
            pi, po, pb = dims[-1]
            dims[-1] = [pi * int(i), po * int(o), pb * int(i)]
        else:
            dims.append([int(i), int(o), int(b)])
    if not dims:
        dims = [[1, 1, 0]]
    return [d[0] for d in dims], [d[1] for d in dims], [d[2] for d in dims]


def _axis_layout(shape: Sequence[int], axis: int, elem_size: int) -> tuple[int, int]:
    """(outer rows, bytes per unit of the axis) for concatenating/splitting along ``axis``."""
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return outer, inner * elem_size


def _lower_concat(ctx: _Ctx) -> KernelCall:
    opts = ctx.op.options
    assert isinstance(opts, ConcatenationOptions)
    if opts.activation is not Activation.NONE:
        raise ValueError(f"fused {opts.activation.value} on CONCATENATION")
    out = ctx.out()
    ins = [ctx.tensor(i) for i in range(len(ctx.op.inputs))]
    rank = len(out.shape)
    axis = opts.axis + rank if opts.axis < 0 else opts.axis
    for t in ins:
        if t.dtype is not out.dtype:
            raise ValueError(f"input {t.name} is {t.dtype.value}, output {out.dtype.value}")
        if t.dtype in (DType.INT8, DType.UINT8) and not _same_quant(t.quant, out.quant):
            raise ValueError(f"input {t.name} is quantized unlike the output (rescaling is not supported)")
    outer, unit = _axis_layout(out.shape, axis, out.dtype.itemsize)
    rows = ConstArray("int32_t", tuple(t.shape[axis] * unit for t in ins))
    args = (TensorListArg(tuple(t.index for t in ins)), TensorArg(out.index, "void", output=True))
    return ctx.call("bf_concat_any", "shape", [("count", len(ins)), ("outer", outer), ("row_bytes", rows)],
                    args)


def _same_quant(a: QuantParams | None, b: QuantParams | None) -> bool:
    if a is None or b is None:
        return a is b
    return (F32(a.scale[0]) == F32(b.scale[0]) and a.zero_point[0] == b.zero_point[0]
            and not a.per_channel and not b.per_channel)


def _lower_split(ctx: _Ctx) -> KernelCall:
    data_pos, axis_pos = (1, 0) if ctx.op.opcode == "SPLIT" else (0, 2)
    x = ctx.tensor(data_pos)
    axis_vals = ctx.const(axis_pos).reshape(-1)
    if axis_vals.size != 1:
        raise ValueError("the axis operand must hold one value")
    axis = int(axis_vals[0]) + (len(x.shape) if int(axis_vals[0]) < 0 else 0)
    outs = [ctx.out(i) for i in range(len(ctx.op.outputs))]
    if sum(o.shape[axis] for o in outs) != x.shape[axis]:
        raise ValueError("the outputs do not add up to the split axis")
    outer, unit = _axis_layout(x.shape, axis, x.dtype.itemsize)
    rows = ConstArray("int32_t", tuple(o.shape[axis] * unit for o in outs))
    args = (TensorArg(x.index, "void"), TensorListArg(tuple(o.index for o in outs), output=True))
    return ctx.call("bf_split_any", "shape", [("count", len(outs)), ("outer", outer), ("row_bytes", rows)],
                    args)


# ---------------------------------------------------------------------------------------------
# MEAN.


def _lower_mean(ctx: _Ctx) -> KernelCall:
    opts = ctx.op.options
    if not isinstance(opts, ReducerOptions):
        raise ValueError("MEAN needs ReducerOptions")
    x, out = ctx.tensor(0), ctx.out()
    kind = _kind(ctx, x, out)
    axes = resolve_axes(ctx.const(1), len(x.shape))
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if x.num_elements == 0 or count == 0:
        raise ValueError("MEAN of an empty tensor")
    shape, reduce = _merge_reduce(x.shape, axes)
    params: list[tuple[str, FieldValue]] = [
        ("rank", len(shape)), ("shape", _vec(shape, 1)), ("reduce", _vec(reduce))]
    if kind == "f32":
        params.append(("count", count))
    else:
        in_scale, in_zp = _per_tensor(x, "input")
        out_scale, out_zp = _per_tensor(out, "output")
        mult, shift = mean_multiplier(in_scale, out_scale, count)
        sum_offset = int(quant.wrap_int32(np.array(-in_zp * count, dtype=np.int64)))
        params += [("sum_offset", sum_offset), ("multiplier", int(mult)), ("shift", int(shift)),
                   ("output_offset", out_zp)]
    ct = _CTYPE[x.dtype]
    args = (TensorArg(x.index, ct), TensorArg(out.index, ct, output=True))
    return ctx.call(f"bf_mean_{kind}", "reduce", params, args)


def _merge_reduce(shape: Sequence[int], axes: Sequence[int]) -> tuple[list[int], list[int]]:
    """Drop size-1 dimensions and merge neighbours that are both kept or both reduced."""
    dims: list[list[int]] = []
    for k, s in enumerate(shape):
        if s == 1:
            continue
        flag = int(k in axes)
        if dims and dims[-1][1] == flag:
            dims[-1][0] *= int(s)
        else:
            dims.append([int(s), flag])
    if not dims:
        dims = [[1, 0]]
    return [d[0] for d in dims], [d[1] for d in dims]


# ---------------------------------------------------------------------------------------------

_LOWERINGS: dict[str, Callable[[_Ctx], KernelCall]] = {
    "ABS": _lower_abs,
    "ADD": _lower_add_sub,
    "AVERAGE_POOL_2D": _lower_pool,
    "CONCATENATION": _lower_concat,
    "CONV_2D": _lower_conv,
    "DEPTHWISE_CONV_2D": _lower_depthwise,
    "DEQUANTIZE": _lower_dequantize,
    "EXPAND_DIMS": _lower_reshape,
    "FULLY_CONNECTED": _lower_fully_connected,
    "HARD_SWISH": _lower_lut_or_float,
    "LEAKY_RELU": _lower_leaky_relu,
    "LOGISTIC": _lower_lut_or_float,
    "MAXIMUM": _lower_min_max,
    "MAX_POOL_2D": _lower_pool,
    "MEAN": _lower_mean,
    "MINIMUM": _lower_min_max,
    "MUL": _lower_mul,
    "PAD": _lower_pad,
    "PRELU": _lower_prelu,
    "QUANTIZE": _lower_quantize,
    "RELU": _lower_relu,
    "RELU6": _lower_relu,
    "RESHAPE": _lower_reshape,
    "RSQRT": _lower_lut_or_float,
    "SOFTMAX": _lower_softmax,
    "SPLIT": _lower_split,
    "SPLIT_V": _lower_split,
    "SQRT": _lower_lut_or_float,
    "SQUEEZE": _lower_reshape,
    "STRIDED_SLICE": _lower_strided_slice,
    "SUB": _lower_add_sub,
    "TANH": _lower_lut_or_float,
    "TRANSPOSE": _lower_transpose,
}

SUPPORTED_KERNEL_OPS: tuple[str, ...] = tuple(sorted(_LOWERINGS))
