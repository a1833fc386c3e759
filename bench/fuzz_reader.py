"""Fuzz the .tflite reader with mutated models and print a table of outcomes.

    python bench/fuzz_reader.py --cases 10000 [--seed 0] [--budget 2.0] [--save DIR]

Each case takes one of several small valid models (int8 conv net with per-channel weights, a
float net, Keras 3's folded Flatten, a streaming model with variables, float16 weights behind
DEQUANTIZE) and applies 1-4 mutations: byte-level (bit flips, byte and aligned-word overwrites
with boundary values, truncation, splicing with another model, insertion, deletion, chunk
copies) or structure-aware (a random field of the object-API model set to a random value, then
re-packed, which reaches the semantic checks behind a well-formed flatbuffer).

Every mutated input must either read into a consistent :class:`~toolkit.model.ir.Graph` or
raise ``ModelError`` / ``UnsupportedOp``.  Anything else — another exception, an inconsistent
graph, or a case exceeding its time budget — counts as "other"; the exit status is 1 if there
is any.  Case ``i`` of seed ``s`` is reproducible on its own (``--only i``).

The same engine runs ~1,000 cases in the default test suite (tests/test_reader_fuzz.py).
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.errors import ModelError, UnsupportedOp
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
    NoOptions,
    Op,
    PackOptions,
    Padding,
    Pool2DOptions,
    QuantParams,
    ReducerOptions,
    ReshapeOptions,
    SoftmaxOptions,
    StridedSliceOptions,
    Tensor,
    Variable,
    VariableOptions,
)
from toolkit.model.tflite import read_tflite

OUTCOMES = ("ok", "ModelError", "UnsupportedOp", "other")


# ---------------------------------------------------------------------------------------------
# Seed models (IR graphs written with the project's writer).


def _t(
    i: int, shape: tuple[int, ...], dtype: DType, quant: QuantParams | None = None, data: Any = None
) -> Tensor:
    arr = None if data is None else np.asarray(data, dtype=dtype.numpy).reshape(shape)
    return Tensor(i, f"t{i}", shape, dtype, quant, arr)


def _int8_convnet(rng: np.random.Generator) -> Graph:
    q = QuantParams((0.05,), (-3,))
    wq = QuantParams((0.01, 0.02), (0, 0), axis=0)
    dq = QuantParams((0.03, 0.01, 0.02, 0.04), (0, 0, 0, 0), axis=3)
    t = (
        _t(0, (1, 5, 5, 1), DType.INT8, q),
        _t(1, (2, 3, 3, 1), DType.INT8, wq, rng.integers(-127, 128, 18)),
        _t(2, (2,), DType.INT32, QuantParams((5e-4, 1e-3), (0, 0)), [10, -20]),
        _t(3, (1, 3, 3, 2), DType.INT8, q),
        _t(4, (1, 2, 2, 4), DType.INT8, dq, rng.integers(-127, 128, 16)),
        _t(5, (1, 3, 3, 4), DType.INT8, q),
        _t(6, (1, 36), DType.INT8, q),
        _t(7, (2,), DType.INT32, None, [1, -1]),
        _t(8, (3, 36), DType.INT8, QuantParams((0.02,), (0,)), rng.integers(-127, 128, 108)),
        _t(9, (1, 3), DType.INT8, QuantParams((0.1,), (4,))),
        _t(10, (1, 3), DType.INT8, QuantParams((1 / 256,), (-128,))),
    )
    ops = (
        Op(0, "CONV_2D", (0, 1, 2), (3,), Conv2DOptions(Padding.VALID, 1, 1, 1, 1, Activation.RELU)),
        Op(1, "DEPTHWISE_CONV_2D", (3, 4, -1), (5,), DepthwiseConv2DOptions(Padding.SAME, 1, 1, 2)),
        Op(2, "RESHAPE", (5, 7), (6,), ReshapeOptions((1, 36))),
        Op(3, "FULLY_CONNECTED", (6, 8, -1), (9,), FullyConnectedOptions(Activation.RELU6)),
        Op(4, "SOFTMAX", (9,), (10,), SoftmaxOptions(1.0)),
    )
    return Graph("int8_convnet", t, ops, (0,), (10,))


def _float_net(rng: np.random.Generator) -> Graph:
    f = DType.FLOAT32
    t = (
        _t(0, (1, 4, 4, 2), f),
        _t(1, (1, 4, 4, 2), f),
        _t(2, (1, 4, 4, 4), f),
        _t(3, (1, 2, 2, 4), f),
        _t(4, (2,), DType.INT32, None, [1, 2]),
        _t(5, (1, 4), f),
        _t(6, (1, 4), f, None, rng.standard_normal(4)),
        _t(7, (1, 4), f),
        _t(8, (1, 2, 2, 4), f),
    )
    ops = (
        Op(0, "CONCATENATION", (0, 1), (2,), ConcatenationOptions(3)),
        Op(1, "MAX_POOL_2D", (2,), (3,), Pool2DOptions(Padding.SAME, 2, 2, 2, 2)),
        Op(2, "MEAN", (3, 4), (5,), ReducerOptions(False)),
        Op(3, "ADD", (5, 6), (7,), ActivationOptions(Activation.RELU)),
        Op(4, "AVERAGE_POOL_2D", (2,), (8,), Pool2DOptions(Padding.VALID, 2, 2, 2, 2, Activation.RELU6)),
    )
    return Graph("float_net", t, ops, (0, 1), (7, 8))


def _keras_flatten(rng: np.random.Generator) -> Graph:
    f, i32 = DType.FLOAT32, DType.INT32
    t = (
        _t(0, (1, 2, 2, 3), f),
        _t(1, (4,), i32),
        _t(2, (1,), i32, None, [0]),
        _t(3, (1,), i32, None, [1]),
        _t(4, (1,), i32, None, [1]),
        _t(5, (), i32),
        _t(6, (), i32, None, -1),
        _t(7, (2,), i32),
        _t(8, (1, 12), f),
        _t(9, (2, 12), f, None, rng.standard_normal(24)),
        _t(10, (1, 2), f),
    )
    ops = (
        Op(0, "SHAPE", (0,), (1,)),
        Op(1, "STRIDED_SLICE", (1, 2, 3, 4), (5,), StridedSliceOptions(shrink_axis_mask=1)),
        Op(2, "PACK", (5, 6), (7,), PackOptions(axis=0, values_count=2)),
        Op(3, "RESHAPE", (0, 7), (8,), ReshapeOptions((1, 12))),
        Op(4, "FULLY_CONNECTED", (8, 9, -1), (10,), FullyConnectedOptions()),
    )
    return Graph("keras_flatten", t, ops, (0,), (10,))


def _streaming(rng: np.random.Generator) -> Graph:
    f = DType.FLOAT32
    t = (
        _t(0, (1, 3), f),
        _t(1, (1, 3), f),
        _t(2, (1, 3), f),
        _t(3, (1, 3), f, None, rng.standard_normal(3)),
        _t(4, (1, 3), f),
    )
    ops = (
        Op(0, "READ_VARIABLE", (), (1,), VariableOptions(0)),
        Op(1, "ADD", (0, 1), (2,), ActivationOptions()),
        Op(2, "MUL", (2, 3), (4,), ActivationOptions()),
        Op(3, "ASSIGN_VARIABLE", (4,), (), VariableOptions(0)),
    )
    var = Variable(0, "state", (1, 3), f, None, np.array([[0.5, -1.0, 2.0]], np.float32))
    return Graph("streaming", t, ops, (0,), (4,), (var,))


def _float16_weights(rng: np.random.Generator) -> Graph:
    t = (
        _t(0, (1, 6), DType.FLOAT32),
        _t(1, (4, 6), DType.FLOAT16, None, rng.standard_normal(24)),
        _t(2, (4, 6), DType.FLOAT32),
        _t(3, (1, 4), DType.FLOAT32),
        _t(4, (1, 4), DType.FLOAT32),
    )
    ops = (
        Op(0, "DEQUANTIZE", (1,), (2,)),
        Op(1, "FULLY_CONNECTED", (0, 2, -1), (3,), FullyConnectedOptions()),
        Op(2, "LOGISTIC", (3,), (4,), NoOptions()),
    )
    return Graph("float16_weights", t, ops, (0,), (4,))


def _constant_math(rng: np.random.Generator) -> Graph:
    """Constant subexpressions the reader folds with the oracle's kernels."""
    f = DType.FLOAT32
    t = (
        _t(0, (2, 3), f),
        _t(1, (2, 3), f, None, rng.standard_normal(6)),
        _t(2, (3,), f, None, rng.standard_normal(3)),
        _t(3, (2, 3), f),
        _t(4, (3, 2), f, None, rng.uniform(0.5, 2.0, 6)),
        _t(5, (2,), DType.INT32, None, [1, 0]),
        _t(6, (2, 3), f),
        _t(7, (2, 3), f),
        _t(8, (2, 3), f),
        _t(9, (2, 3), f),
    )
    ops = (
        Op(0, "ADD", (1, 2), (3,), ActivationOptions()),
        Op(1, "TRANSPOSE", (4, 5), (6,)),
        Op(2, "RSQRT", (6,), (7,)),
        Op(3, "MUL", (3, 7), (8,), ActivationOptions(Activation.RELU)),
        Op(4, "SUB", (0, 8), (9,), ActivationOptions()),
    )
    return Graph("constant_math", t, ops, (0,), (9,))


SEED_GRAPHS: tuple[Callable[[np.random.Generator], Graph], ...] = (
    _int8_convnet,
    _float_net,
    _keras_flatten,
    _streaming,
    _float16_weights,
    _constant_math,
)


def seed_models() -> dict[str, bytes]:
    """The valid models every case starts from (each is checked to read back cleanly)."""
    from toolkit.model.tflite_writer import write_tflite

    rng = np.random.default_rng(1234)
    models: dict[str, bytes] = {}
    for make in SEED_GRAPHS:
        g = make(rng)
        data = write_tflite(g)
        problems = check_graph(read_tflite(data))
        if problems:
            raise RuntimeError(f"seed model {g.name} does not read back consistently: {problems}")
        models[g.name] = data
    return models


@functools.cache
def seed_models_cached() -> tuple[bytes, ...]:
    return tuple(seed_models().values())


# ---------------------------------------------------------------------------------------------
# Mutations.

_WORDS = (0, 1, 2, 4, 8, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE)
_HALVES = (0, 1, 2, 4, 6, 8, 0x7FFF, 0x8000, 0xFFFF)


def _bit_flip(d: bytearray, rng: np.random.Generator, _: list[bytes]) -> bytearray:
    for _k in range(int(rng.integers(1, 4))):
        p = int(rng.integers(len(d)))
        d[p] ^= 1 << int(rng.integers(8))
    return d


def _byte_overwrite(d: bytearray, rng: np.random.Generator, _: list[bytes]) -> bytearray:
    for _k in range(int(rng.integers(1, 5))):
        d[int(rng.integers(len(d)))] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF, int(rng.integers(256))]))
    return d


def _word_overwrite(d: bytearray, rng: np.random.Generator, _: list[bytes]) -> bytearray:
    """A boundary value, a nearby value or a file-relative size at an aligned u32/u16."""
    if rng.random() < 0.6 and len(d) >= 4:
        p = int(rng.integers(len(d) // 4)) * 4
        old = int.from_bytes(d[p : p + 4], "little")
        choices = [*_WORDS, len(d), len(d) - p, (old + int(rng.integers(-16, 17))) % (1 << 32)]
        d[p : p + 4] = int(choices[int(rng.integers(len(choices)))]).to_bytes(4, "little")
    elif len(d) >= 2:
        p = int(rng.integers(len(d) // 2)) * 2
        old = int.from_bytes(d[p : p + 2], "little")
        choices = [*_HALVES, (old + int(rng.integers(-8, 9))) % (1 << 16)]
        d[p : p + 2] = int(choices[int(rng.integers(len(choices)))]).to_bytes(2, "little")
    return d


def _truncate(d: bytearray, rng: np.random.Generator, _: list[bytes]) -> bytearray:
    return d[: int(rng.integers(len(d)))]


def _splice(d: bytearray, rng: np.random.Generator, seeds: list[bytes]) -> bytearray:
    other = seeds[int(rng.integers(len(seeds)))]
    return d[: int(rng.integers(len(d) + 1))] + other[int(rng.integers(len(other) + 1)) :]


def _insert(d: bytearray, rng: np.random.Generator, _: list[bytes]) -> bytearray:
    p = int(rng.integers(len(d) + 1))
    return d[:p] + bytearray(rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()) + d[p:]


def _delete(d: bytearray, rng: np.random.Generator, _: list[bytes]) -> bytearray:
    p = int(rng.integers(len(d)))
    return d[:p] + d[p + int(rng.integers(1, 17)) :]


def _copy_chunk(d: bytearray, rng: np.random.Generator, _: list[bytes]) -> bytearray:
    n = int(rng.integers(1, 33))
    src, dst = int(rng.integers(len(d))), int(rng.integers(len(d)))
    chunk = d[src : src + n]
    d[dst : dst + len(chunk)] = chunk
    return d[: max(len(d), 0)]


def _field(d: bytearray, rng: np.random.Generator, _: list[bytes]) -> bytearray:
    """Set one random field of the object-API model to a random value and re-pack."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    try:
        model = s.ModelT.InitFromPackedBuf(bytes(d), 0)
    except Exception:  # the generated code cannot parse it: fall back to a byte mutation
        return _word_overwrite(d, rng, [])
    objects = list(_walk(model))
    obj, attr = objects[int(rng.integers(len(objects)))]
    setattr(obj, attr, _random_like(getattr(obj, attr), rng))
    b = flatbuffers.Builder(1024)
    try:
        b.Finish(model.Pack(b), file_identifier=b"TFL3")
    except Exception:  # a value the builder cannot encode (e.g. out of its field's range)
        return d
    return bytearray(b.Output())


def _walk(obj: Any, depth: int = 0) -> Iterator[tuple[Any, str]]:
    """(object, attribute) pairs of every scalar or scalar-list field reachable from ``obj``."""
    if depth > 6:
        return
    for attr, value in vars(obj).items():
        if isinstance(value, (bool, int, float, str, np.ndarray)) or (
            isinstance(value, list) and value and isinstance(value[0], (int, float))
        ):
            yield obj, attr
        elif isinstance(value, list):
            for v in value:
                if hasattr(v, "__dict__"):
                    yield from _walk(v, depth + 1)
        elif hasattr(value, "__dict__"):
            yield from _walk(value, depth + 1)


def _random_like(value: Any, rng: np.random.Generator) -> Any:
    small = int(rng.choice([-2, -1, 0, 1, 2, 3, 5, 7, 127, 128, 255, 1 << 16, (1 << 31) - 1]))
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        r = rng.random()
        if r < 0.3:  # e.g. another builtin op code, tensor or buffer index
            return int(rng.integers(0, 210))
        return small if r < 0.7 else (value + int(rng.integers(-3, 4)))
    if isinstance(value, float):
        return float(rng.choice([0.0, -1.0, 1e-30, 1e30, float("inf"), float("nan")]))
    if isinstance(value, str):
        return "".join(chr(int(c)) for c in rng.integers(32, 0x3000, int(rng.integers(0, 8))))
    arr = list(np.asarray(value).reshape(-1).tolist())
    if arr and rng.random() < 0.7:
        arr[int(rng.integers(len(arr)))] = small
    elif rng.random() < 0.5:
        arr.append(small)
    else:
        arr = arr[: int(rng.integers(len(arr) + 1))]
    return arr


_Mutator = Callable[[bytearray, np.random.Generator, list[bytes]], bytearray]

# name → (mutator, weight).  Shifting mutations (insert, delete, splice, truncate) nearly always
# break an offset near the root; in-place and field mutations reach deeper, so they weigh more.
MUTATORS: dict[str, tuple[_Mutator, float]] = {
    "field": (_field, 0.30),
    "word_overwrite": (_word_overwrite, 0.15),
    "bit_flip": (_bit_flip, 0.15),
    "byte_overwrite": (_byte_overwrite, 0.10),
    "copy_chunk": (_copy_chunk, 0.05),
    "truncate": (_truncate, 0.05),
    "splice": (_splice, 0.05),
    "insert": (_insert, 0.075),
    "delete": (_delete, 0.075),
}
_MUTATION_COUNTS = (1, 2, 3, 4)
_MUTATION_COUNT_P = (0.6, 0.25, 0.1, 0.05)


def mutate(data: bytes, rng: np.random.Generator, seeds: list[bytes]) -> tuple[bytes, list[str]]:
    """``data`` after 1-4 random mutations, and their names."""
    d = bytearray(data)
    applied: list[str] = []
    names = list(MUTATORS)
    weights = np.array([MUTATORS[n][1] for n in names])
    for _ in range(int(rng.choice(_MUTATION_COUNTS, p=_MUTATION_COUNT_P))):
        if not d:
            break
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        d = MUTATORS[name][0](d, rng, seeds)
        applied.append(name)
    return bytes(d), applied


# ---------------------------------------------------------------------------------------------
# Checking one case.


def check_graph(g: Graph) -> list[str]:
    """Consistency problems of a graph the reader returned (empty if none)."""
    problems: list[str] = []
    n = len(g.tensors)
    for k, t in enumerate(g.tensors):
        problems += _check_tensor(k, t)
    for k, op in enumerate(g.ops):
        problems += _check_op(k, op, g)
    for idx in (*g.inputs, *g.outputs):
        if not 0 <= idx < n:
            problems.append(f"graph input/output {idx} out of range")
    for k, v in enumerate(g.variables):
        if v.index != k or tuple(v.initial.shape) != v.shape or v.initial.dtype != v.dtype.numpy:
            problems.append(f"variable {k} inconsistent")
    return problems


def _check_tensor(k: int, t: Tensor) -> list[str]:
    out: list[str] = []
    if t.index != k or not all(isinstance(d, int) and d >= 0 for d in t.shape):
        out.append(f"tensor {k}: index {t.index} / shape {t.shape}")
    if t.data is not None and (tuple(t.data.shape) != t.shape or t.data.dtype != t.dtype.numpy):
        out.append(f"tensor {k}: data {t.data.dtype}{t.data.shape} vs {t.dtype.value}{t.shape}")
    q = t.quant
    if (
        q is not None
        and q.per_channel
        and not (0 <= q.axis < len(t.shape) and t.shape[q.axis] == len(q.scale))
    ):
        out.append(f"tensor {k}: per-channel quantization does not match the shape")
    return out


def _check_op(k: int, op: Op, g: Graph) -> list[str]:
    n = len(g.tensors)
    out: list[str] = []
    if op.index != k or op.opcode not in SUPPORTED_OPS:
        out.append(f"op {k}: index {op.index}, opcode {op.opcode}")
    if any(not -1 <= i < n for i in op.inputs) or any(not 0 <= o < n for o in op.outputs):
        out.append(f"op {k}: tensor index out of range in {op.inputs} / {op.outputs}")
    if isinstance(op.options, VariableOptions) and not 0 <= op.options.variable < len(g.variables):
        out.append(f"op {k}: variable {op.options.variable} does not exist")
    if op.opcode == "RESHAPE" and op.inputs and 0 <= op.inputs[0] < n:
        new_shape = op.options.new_shape if isinstance(op.options, ReshapeOptions) else None
        if new_shape is None or int(np.prod(new_shape, dtype=object)) != g.tensors[op.inputs[0]].num_elements:
            out.append(f"op {k}: RESHAPE target {new_shape} does not hold its input")
    return out


class _Timeout(Exception):
    pass


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise _Timeout in the main thread after ``seconds`` (SIGALRM; a no-op elsewhere)."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise _Timeout(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass(frozen=True)
class CaseResult:
    outcome: str
    seconds: float
    detail: str = ""


def run_case(data: bytes, budget: float) -> CaseResult:
    t0 = time.perf_counter()
    try:
        with _time_limit(budget):
            g = read_tflite(data)
            problems = check_graph(g)
    except ModelError:
        return CaseResult("ModelError", time.perf_counter() - t0)
    except UnsupportedOp:
        return CaseResult("UnsupportedOp", time.perf_counter() - t0)
    except Exception:
        return CaseResult("other", time.perf_counter() - t0, traceback.format_exc(limit=6))
    dt = time.perf_counter() - t0
    if problems:
        return CaseResult("other", dt, "inconsistent graph: " + "; ".join(problems[:5]))
    return CaseResult("ok", dt)


@dataclass
class FuzzStats:
    counts: Counter[str] = field(default_factory=Counter)
    max_seconds: float = 0.0
    failures: list[tuple[int, str, list[str], str]] = field(
        default_factory=list
    )  # case, seed model, muts, detail

    @property
    def cases(self) -> int:
        return sum(self.counts.values())


def fuzz(
    cases: int, seed: int = 0, budget: float = 2.0, only: int | None = None, save: Path | None = None
) -> FuzzStats:
    models = seed_models()
    names, blobs = list(models), list(models.values())
    stats = FuzzStats()
    for i in range(cases) if only is None else [only]:
        rng = np.random.default_rng([seed, i])
        k = int(rng.integers(len(blobs)))
        data, muts = mutate(blobs[k], rng, blobs)
        res = run_case(data, budget)
        stats.counts[res.outcome] += 1
        stats.max_seconds = max(stats.max_seconds, res.seconds)
        if res.outcome == "other":
            stats.failures.append((i, names[k], muts, res.detail))
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                (save / f"case{i}_{names[k]}.tflite").write_bytes(data)
    return stats


def format_table(stats: FuzzStats) -> str:
    head = ["cases", *OUTCOMES, "max s/case"]
    row = [str(stats.cases), *(str(stats.counts[o]) for o in OUTCOMES), f"{stats.max_seconds:.4f}"]
    widths = [max(len(h), len(r)) for h, r in zip(head, row, strict=True)]
    line = "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))
    return line + "\n" + "  ".join(r.rjust(w) for r, w in zip(row, widths, strict=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=2.0, help="seconds allowed per case")
    ap.add_argument("--only", type=int, default=None, help="run only this case number")
    ap.add_argument("--save", type=Path, default=None, help="write failing inputs here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    stats = fuzz(args.cases, args.seed, args.budget, args.only, args.save)
    print(format_table(stats))
    print(f"wall time {time.perf_counter() - t0:.1f} s, seed {args.seed}")
    for i, model, muts, detail in stats.failures[:10]:
        print(f"\ncase {i} ({model}, {'+'.join(muts)}):\n{detail}")
    return 1 if stats.counts["other"] else 0


if __name__ == "__main__":
    sys.exit(main())
