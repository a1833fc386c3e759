"""Build small IR graphs in tests and check the oracle on them against the real TFLite interpreter.

Typical use::

    b = GraphBuilder()
    x = b.input((1, 8, 8, 3), "int8", quant=rand_quant(rng, -1.0, 1.0))
    wq = rand_per_channel(rng, 4)
    w = b.const(rand_weights(rng, (4, 3, 3, 3), wq), quant=wq)
    bias = b.const(rand_bias(rng, 4), quant=bias_quant(b.quant(x), wq))
    y = b.output((1, 8, 8, 4), "int8", quant=rand_quant(rng, -4.0, 4.0))
    b.op("CONV_2D", [x, w, bias], [y], Conv2DOptions(Padding.SAME, 1, 1))
    check_against_interpreter(b.build(), rng=rng)

Tensor indices are given in creation order (whatever the kind), so they are also the TFLite
tensor indices of the written model.  Graph outputs are the ``output()`` tensors in creation
order unless ``build(outputs=...)`` says otherwise.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from toolkit.model.ir import (
    DType,
    Graph,
    NoOptions,
    Op,
    OpOptions,
    QuantParams,
    Tensor,
    Variable,
)

DTypeLike = DType | str

_INT_DTYPES = (DType.INT8, DType.UINT8, DType.INT16, DType.INT32, DType.INT64)


def as_dtype(d: DTypeLike) -> DType:
    return d if isinstance(d, DType) else DType(str(d))


def qrange(dtype: DTypeLike) -> tuple[int, int]:
    """The (min, max) integer range of an integer dtype."""
    info = np.iinfo(as_dtype(dtype).numpy)
    return int(info.min), int(info.max)


# ---------------------------------------------------------------------------------------------
# Graph builder.


class GraphBuilder:
    """Collects tensors and ops and builds a frozen :class:`Graph`.

    Every tensor-creating method returns the new tensor's index.  ``-1`` may be passed in op
    inputs for an absent optional operand.
    """

    def __init__(self, name: str = "opgen") -> None:
        self.name = name
        self._tensors: list[Tensor] = []
        self._ops: list[Op] = []
        self._inputs: list[int] = []
        self._outputs: list[int] = []
        self._variables: list[Variable] = []

    def _add(
        self,
        shape: Sequence[int],
        dtype: DTypeLike,
        quant: QuantParams | None,
        name: str | None,
        data: np.ndarray | None = None,
        prefix: str = "t",
    ) -> int:
        idx = len(self._tensors)
        dt = as_dtype(dtype)
        if data is not None:
            data = np.asarray(data, dtype=dt.numpy).reshape(tuple(int(s) for s in shape))
        self._tensors.append(
            Tensor(idx, name or f"{prefix}{idx}", tuple(int(s) for s in shape), dt, quant, data)
        )
        return idx

    def input(
        self,
        shape: Sequence[int],
        dtype: DTypeLike,
        quant: QuantParams | None = None,
        name: str | None = None,
    ) -> int:
        idx = self._add(shape, dtype, quant, name, prefix="input")
        self._inputs.append(idx)
        return idx

    def output(
        self,
        shape: Sequence[int],
        dtype: DTypeLike,
        quant: QuantParams | None = None,
        name: str | None = None,
    ) -> int:
        idx = self._add(shape, dtype, quant, name, prefix="output")
        self._outputs.append(idx)
        return idx

    def tensor(
        self,
        shape: Sequence[int],
        dtype: DTypeLike,
        quant: QuantParams | None = None,
        name: str | None = None,
    ) -> int:
        """An intermediate (non-output) activation tensor."""
        return self._add(shape, dtype, quant, name)

    def const(
        self,
        array: Any,
        quant: QuantParams | None = None,
        dtype: DTypeLike | None = None,
        name: str | None = None,
    ) -> int:
        """A constant; ``dtype`` defaults to the array's dtype."""
        arr = np.asarray(array)
        dt = as_dtype(dtype) if dtype is not None else DType(arr.dtype.name)
        cast = arr.astype(dt.numpy)
        if arr.dtype.kind in "iub" and not np.array_equal(cast, arr):
            raise ValueError(f"constant values do not fit {dt.value}")
        return self._add(arr.shape, dt, quant, name, data=cast, prefix="const")

    def variable(
        self,
        shape: Sequence[int],
        dtype: DTypeLike,
        quant: QuantParams | None = None,
        initial: Any = None,
        name: str | None = None,
    ) -> int:
        """A streaming-model variable (initial value zeros by default); returns its variable index
        for ``VariableOptions(variable=...)``."""
        dt = as_dtype(dtype)
        shp = tuple(int(s) for s in shape)
        init = np.zeros(shp, dt.numpy) if initial is None else np.asarray(initial, dt.numpy).reshape(shp)
        init.setflags(write=False)
        idx = len(self._variables)
        self._variables.append(Variable(idx, name or f"var{idx}", shp, dt, quant, init))
        return idx

    def op(
        self,
        opcode: str,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options: OpOptions | None = None,
        name: str = "",
    ) -> int:
        idx = len(self._ops)
        self._ops.append(
            Op(
                idx,
                opcode,
                tuple(int(i) for i in inputs),
                tuple(int(o) for o in outputs),
                options if options is not None else NoOptions(),
                name,
            )
        )
        return idx

    def quant(self, index: int) -> QuantParams:
        q = self._tensors[index].quant
        if q is None:
            raise ValueError(f"tensor {index} is not quantized")
        return q

    def shape(self, index: int) -> tuple[int, ...]:
        return self._tensors[index].shape

    def build(self, outputs: Sequence[int] | None = None) -> Graph:
        outs = tuple(outputs) if outputs is not None else tuple(self._outputs)
        return Graph(
            name=self.name,
            tensors=tuple(self._tensors),
            ops=tuple(self._ops),
            inputs=tuple(self._inputs),
            outputs=outs,
            variables=tuple(self._variables),
        )


# ---------------------------------------------------------------------------------------------
# Quantization parameters.


def quant_from_range(lo: float, hi: float, dtype: DTypeLike = "int8") -> QuantParams:
    """Per-tensor parameters as the TFLite converter derives them from a real range.

    The range is first extended to contain 0 (so that 0.0 is exactly representable).  int8/uint8
    are asymmetric; int16 is symmetric with zero point 0, as TFLite's 16x8 scheme requires.
    """
    dt = as_dtype(dtype)
    qmin, qmax = qrange(dt)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0.0:
        hi = lo + 1.0
    if dt is DType.INT16:
        scale = max(abs(lo), abs(hi)) / qmax
        return QuantParams((float(np.float32(scale)),), (0,))
    scale = float(np.float32((hi - lo) / (qmax - qmin)))
    zp = int(np.clip(np.round(qmin - lo / scale), qmin, qmax))
    return QuantParams((scale,), (zp,))


def rand_quant(
    rng: np.random.Generator, lo: float, hi: float, dtype: DTypeLike = "int8", *, jitter: float = 0.25
) -> QuantParams:
    """Realistic per-tensor parameters for activations observed in ``[lo, hi]``.

    Each end of the range is shrunk by a random factor in ``[1 - jitter, 1]`` (calibrated ranges
    never line up neatly, so zero points and scales come out "odd"), then
    :func:`quant_from_range` applies.  ``jitter=0`` is deterministic.
    """
    f_lo, f_hi = 1.0 - jitter * rng.random(), 1.0 - jitter * rng.random()
    return quant_from_range(lo * f_lo, hi * f_hi, dtype)


def extreme_quant(
    rng: np.random.Generator, dtype: DTypeLike = "int8", *, kind: str = "random"
) -> QuantParams:
    """Per-tensor parameters at the edges TFLite still accepts.

    ``kind``: ``"tiny"`` (scale ~1e-6), ``"huge"`` (scale ~1e3), ``"zp_min"``/``"zp_max"`` (zero
    point at the end of the range, i.e. an all-positive or all-negative range) or ``"random"``
    (one of those).  int16 keeps zero point 0.
    """
    dt = as_dtype(dtype)
    qmin, qmax = qrange(dt)
    kinds = ("tiny", "huge", "zp_min", "zp_max")
    if kind == "random":
        kind = kinds[int(rng.integers(len(kinds)))]
    if kind == "tiny":
        scale, zp = 10 ** rng.uniform(-7, -5), int(rng.integers(qmin, qmax + 1))
    elif kind == "huge":
        scale, zp = 10 ** rng.uniform(2, 3), int(rng.integers(qmin, qmax + 1))
    elif kind == "zp_min":
        scale, zp = 10 ** rng.uniform(-3, -1), qmin
    elif kind == "zp_max":
        scale, zp = 10 ** rng.uniform(-3, -1), qmax
    else:
        raise ValueError(f"unknown kind {kind!r}; use one of {(*kinds, 'random')}")
    if dt is DType.INT16:
        zp = 0
    return QuantParams((float(np.float32(scale)),), (zp,))


def rand_per_channel(
    rng: np.random.Generator,
    channels: int,
    *,
    axis: int = 0,
    dtype: DTypeLike = "int8",
    scale_range: tuple[float, float] = (1e-3, 1e-1),
    extreme: bool = False,
) -> QuantParams:
    """Symmetric per-channel weight parameters (zero point 0), scales log-uniform in
    ``scale_range``.  ``extreme=True`` spreads them over 1e-8 … 10 and puts one channel at each
    end, as weights of dead or exploding channels do in real models."""
    lo, hi = (1e-8, 10.0) if extreme else scale_range
    scales = 10 ** rng.uniform(np.log10(lo), np.log10(hi), size=channels)
    if extreme and channels >= 2:
        scales[0], scales[-1] = lo, hi
    del dtype  # weights of every integer type are symmetric: zero point 0
    return QuantParams(tuple(float(np.float32(s)) for s in scales), (0,) * channels, axis)


def bias_quant(input_quant: QuantParams, weight_quant: QuantParams) -> QuantParams:
    """int32/int64 bias parameters: ``scale = input_scale * weight_scale[c]``, zero point 0."""
    s_in = input_quant.single_scale
    scales = tuple(float(np.float32(s_in * np.float32(w))) for w in weight_quant.scale)
    return QuantParams(scales, (0,) * len(scales), 0)


# ---------------------------------------------------------------------------------------------
# Random data.


def rand_weights(
    rng: np.random.Generator,
    shape: Sequence[int],
    quant: QuantParams | None = None,
    dtype: DTypeLike = "int8",
) -> np.ndarray:
    """Random constant weights: symmetric integers (-127…127 for int8) when ``dtype`` is an
    integer type, else normal floats with std 0.5."""
    dt = as_dtype(dtype)
    if dt in _INT_DTYPES:
        qmin, qmax = qrange(dt)
        return rng.integers(max(qmin, -qmax), qmax + 1, size=tuple(shape)).astype(dt.numpy)
    del quant
    return (rng.standard_normal(tuple(shape)) * 0.5).astype(dt.numpy)


def rand_bias(
    rng: np.random.Generator, n: int, dtype: DTypeLike = "int32", magnitude: int = 2000
) -> np.ndarray:
    """Random bias values in ``[-magnitude, magnitude]`` (floats: normal with std 0.1)."""
    dt = as_dtype(dtype)
    if dt in _INT_DTYPES:
        return rng.integers(-magnitude, magnitude + 1, size=n).astype(dt.numpy)
    return (rng.standard_normal(n) * 0.1).astype(dt.numpy)


def rand_input(
    rng: np.random.Generator, tensor: Tensor, lo: float | None = None, hi: float | None = None
) -> np.ndarray:
    """Random values for an input tensor: the full integer range for int8/uint8/int16, ±1000 for
    int32/int64, uniform ``[lo, hi]`` (default ±3) for floats, coin flips for bool."""
    shape, dt = tensor.shape, tensor.dtype
    if dt in (DType.INT8, DType.UINT8, DType.INT16):
        qmin, qmax = qrange(dt)
        a, b = qmin if lo is None else int(lo), qmax if hi is None else int(hi)
        return rng.integers(a, b + 1, size=shape).astype(dt.numpy)
    if dt in (DType.INT32, DType.INT64):
        a, b = -1000 if lo is None else int(lo), 1000 if hi is None else int(hi)
        return rng.integers(a, b + 1, size=shape).astype(dt.numpy)
    if dt is DType.BOOL:
        return rng.random(size=shape) < 0.5
    a_f, b_f = -3.0 if lo is None else lo, 3.0 if hi is None else hi
    return rng.uniform(a_f, b_f, size=shape).astype(dt.numpy)


# ---------------------------------------------------------------------------------------------
# Comparison against the interpreter.


def assert_same(
    actual: np.ndarray, expected: np.ndarray, what: str, *, atol_float: float = 1e-6, rtol_float: float = 1e-5
) -> None:
    """Integers/bools: bit-identical.  Floats: ``|a - e| <= atol + rtol * |e|`` (NaN == NaN).

    The message names the count of differing elements, the largest difference and the first
    differing index with both values.
    """
    a, e = np.asarray(actual), np.asarray(expected)
    if a.dtype != e.dtype or a.shape != e.shape:
        raise AssertionError(f"{what}: got {a.dtype}{list(a.shape)}, expected {e.dtype}{list(e.shape)}")
    if np.issubdtype(e.dtype, np.floating):
        a64, e64 = a.astype(np.float64), e.astype(np.float64)
        both_nan = np.isnan(a64) & np.isnan(e64)
        with np.errstate(invalid="ignore"):
            diff = np.abs(a64 - e64)
            bad = ~both_nan & ~(diff <= atol_float + rtol_float * np.abs(e64))
    else:
        wide = np.int64 if e.dtype != np.uint64 else np.float64
        diff = np.abs(a.astype(wide) - e.astype(wide))
        bad = a != e
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        max_diff = np.nanmax(np.where(bad, diff, 0))
        raise AssertionError(
            f"{what}: {n_bad} of {e.size} elements differ (max abs diff {max_diff}); "
            f"first at {first}: got {a[first]!r}, expected {e[first]!r}"
        )


def skip_on_tflite_runtime(reason: str, when: bool = True) -> None:
    """Skip the calling test under tflite-runtime 2.14 (``BOARDFIT_INTERPRETER=tflite-runtime``)
    when it exercises what only LiteRT supports; ``reason`` says what 2.14 lacks or gets wrong
    (refused at prepare, ``abort()``, a known bug)."""
    from toolkit.interp import backend_name

    if when and backend_name() == "tflite-runtime":
        import pytest

        pytest.skip(f"tflite-runtime 2.14 {reason}")


def _oracle_factory() -> Callable[[Graph], Any]:
    """Graph → oracle, with the arithmetic profile of the interpreter backend in use (LiteRT's or
    tflite-runtime 2.14's reference kernels); a seam so that tests of this module can substitute
    a stand-in."""
    from toolkit.interp import arithmetic_profile
    from toolkit.oracle import Oracle

    profile = arithmetic_profile()
    return lambda graph: Oracle(graph, profile=profile)


def _reader() -> Callable[[bytes], Graph] | None:
    """``toolkit.model.tflite.read_tflite`` if that module exists yet, else ``None``."""
    try:
        tflite = importlib.import_module("toolkit.model.tflite")
    except ModuleNotFoundError as exc:
        if exc.name == "toolkit.model.tflite":
            return None
        raise
    fn: Callable[[bytes], Graph] = tflite.read_tflite
    return fn


def check_against_interpreter(
    graph: Graph,
    inputs: Sequence[np.ndarray] | None = None,
    rng: np.random.Generator | None = None,
    *,
    steps: int = 1,
    atol_float: float = 1e-6,
    rtol_float: float = 1e-5,
    intermediates: bool = True,
    reference_kernels: bool = True,
    reread: bool = True,
) -> list[np.ndarray]:
    """Write ``graph`` to .tflite, run it in the TFLite interpreter and in the oracle, compare.

    * ``inputs``: one array per graph input; random (see :func:`rand_input`) when ``None``,
      drawn from ``rng`` (default: seed 0).  With ``steps > 1`` (streaming models) the graph is
      invoked ``steps`` times, on the given inputs every time or on fresh random inputs per step.
    * Integer and bool outputs must be bit-identical, floats within ``rtol_float`` (+``atol_float``).
    * ``intermediates``: also compare every tensor the oracle computed (not only outputs) with
      the interpreter's value (``preserve_all_tensors``).
    * ``reread``: if ``toolkit.model.tflite.read_tflite`` exists, read the written bytes back and
      require the oracle on the re-read graph to give identical outputs.

    Returns the interpreter's outputs of the last step.
    """
    from toolkit.interp import ReferenceInterpreter
    from toolkit.model.tflite_writer import write_tflite

    rng = rng if rng is not None else np.random.default_rng(0)
    model = write_tflite(graph)
    interp = ReferenceInterpreter(
        model, reference_kernels=reference_kernels, preserve_all_tensors=intermediates
    )
    oracle_cls = _oracle_factory()
    oracle = oracle_cls(graph)
    read = _reader() if reread else None
    reread_oracle = oracle_cls(read(model)) if read is not None else None

    got: list[np.ndarray] = []
    for step in range(steps):
        xs = list(inputs) if inputs is not None else [rand_input(rng, t) for t in graph.input_tensors]
        tag = f"{graph.name} step {step}" if steps > 1 else graph.name
        got = interp.run(xs)
        res = oracle.run(xs, keep_intermediates=intermediates)
        for k, (idx, g_out, o_out) in enumerate(zip(graph.outputs, got, res.outputs, strict=True)):
            name = graph.tensors[idx].name
            assert_same(
                o_out,
                g_out,
                f"{tag}: output {k} ({name}) oracle vs interpreter",
                atol_float=atol_float,
                rtol_float=rtol_float,
            )
        if intermediates:
            _compare_intermediates(graph, interp, res.tensors, tag, atol_float, rtol_float)
        if reread_oracle is not None:
            res2 = reread_oracle.run(xs)
            for k, (a, b) in enumerate(zip(res2.outputs, res.outputs, strict=True)):
                assert_same(
                    a,
                    b,
                    f"{tag}: output {k} oracle on re-read graph vs on built graph",
                    atol_float=0.0,
                    rtol_float=0.0,
                )
    return got


def _compare_intermediates(
    graph: Graph, interp: Any, values: dict[int, np.ndarray], tag: str, atol_float: float, rtol_float: float
) -> None:
    skip = set(graph.inputs) | set(graph.outputs)
    for idx, value in sorted(values.items()):
        t = graph.tensors[idx]
        if idx in skip or t.is_constant:
            continue
        theirs = interp.tensor(idx)
        if theirs.size == value.size:
            theirs = theirs.reshape(value.shape)
        assert_same(
            value,
            theirs,
            f"{tag}: tensor {idx} ({t.name}) oracle vs interpreter",
            atol_float=atol_float,
            rtol_float=rtol_float,
        )
