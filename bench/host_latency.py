"""Latency per inference on this machine: boardfit's generated C against the TFLite and TFLite
Micro interpreters, measured side by side in one run with interleaved repetitions.

    python bench/host_latency.py [--models digits_mlp_int8,kws_dscnn_int8] [--repeat 21]
                                 [--batch-ms 25] [--json]

Engines, all single-threaded, all fed the same input (a digits test image for the digits models,
random codes / uniform [-1, 1) values otherwise):

* ``boardfit`` — the generated C (model.c + the kernel library, ``ref`` variant: portable C99),
  compiled with the host toolchain at ``-O2`` into a shared library together with
  ``bench/host_timer.c``; cffi calls ``bf_bench_run(n)``, which copies the input into the arena
  and calls ``bf_model_invoke()`` n times **inside C**, timed with CLOCK_MONOTONIC.  No Python
  overhead per inference.
* ``boardfit-opt`` — the same with the kernel variants ``targets/isa.py`` picks for this CPU,
  shown only when one of them runs at least one layer of the model (else it equals ``boardfit``).
* ``boardfit via cffi`` — the ``boardfit`` library driven from a Python loop (``memmove`` of the
  input + ``bf_model_invoke()`` through cffi per inference): the same per-call Python overhead
  class as the two interpreters, for a like-for-like reading on the tiniest models.
* ``TFLite`` — ai-edge-litert's interpreter with its default optimized builtin kernels,
  ``num_threads=1``, ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`` (no XNNPACK), i.e.
  ``toolkit.interp.ReferenceInterpreter(reference_kernels=False)``; Python loop of
  ``set_tensor`` + ``invoke``.
* ``TFLM`` — the ``tflite-micro`` package's interpreter (TFLite Micro's reference kernels, x86-64
  build); Python loop of ``set_input`` + ``invoke``.

Method: each engine's batch size is calibrated to take about ``--batch-ms``; then ``--repeat``
rounds each run one batch of every engine, in an order rotated every round, so load changes on
this shared machine hit every engine alike.  Reported: the median over rounds of the time per
inference, and speed-up ratios = the median over rounds of (their time / boardfit's time) within
the same round (> 1: boardfit is faster).  Before timing, one inference per engine checks the
outputs (boardfit against TFLM: same arithmetic, so int8 must be bit-exact).

Targets (issue 3): at least as fast as the TFLite interpreter on the MCU-sized models (digits,
kws, ad) — ratio ≥ 1 — and ≥ 5× faster than TFLite Micro's reference kernels on every model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from toolkit.errors import BoardfitError  # noqa: E402

MODELS_DIR = ROOT / "examples" / "models"
TIMER_SOURCE = Path(__file__).resolve().parent / "host_timer.c"
TFLM_ARENA = 8 << 20
MCU_SIZED = ("digits_", "kws_", "ad_")  # model name prefixes the TFLite target applies to
TFLITE_TARGET = 1.0
TFLM_TARGET = 5.0
SCHEMA = "boardfit.bench.host_latency/1"

_CDEF = """
int bf_model_invoke(void);
void bf_model_reset(void);
void *bf_model_input(uint32_t index);
const void *bf_model_output(uint32_t index);
int64_t bf_bench_run(const void *const *inputs, const uint32_t *bytes, uint32_t iterations);
"""


def example_models() -> list[str]:
    names = sorted(p.stem for p in MODELS_DIR.glob("*.tflite"))
    return [n for n in names if n.endswith("_int8")] + [n for n in names if not n.endswith("_int8")]


def model_input(graph: Any, model: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for t in graph.input_tensors:
        if model.startswith("digits"):
            from toolkit.datasets import load_dataset

            out.append(np.asarray(load_dataset("digits:test", graph).x[0]).reshape(t.shape))
        elif np.issubdtype(t.dtype.numpy, np.integer):
            info = np.iinfo(t.dtype.numpy)
            out.append(rng.integers(info.min, info.max, size=t.shape, endpoint=True).astype(t.dtype.numpy))
        else:
            out.append(rng.uniform(-1.0, 1.0, size=t.shape).astype(t.dtype.numpy))
    return out


# ---------------------------------------------------------------------------------------------
# Engines: batch(n) runs n inferences and returns the seconds they took; check() runs one
# inference from a fresh state and returns the outputs.


class Engine:
    name: str

    def batch(self, n: int) -> float:
        raise NotImplementedError

    def check(self) -> list[np.ndarray]:
        raise NotImplementedError


def _optimized_variants() -> tuple[str, ...]:
    """The kernel variants targets/isa.py picks for this CPU (``("ref",)`` before it exists)."""
    try:
        from targets import isa
    except ImportError:
        return ("ref",)
    return tuple(isa.board_variants(None))


def _variant_flags(variants: Sequence[str]) -> tuple[str, ...]:
    try:
        from targets import isa
    except ImportError:
        return ()
    return tuple(isa.build_cflags(variants, isa.host_target()))


class GeneratedC(Engine):
    """The generated project linked with bench/host_timer.c into one shared library."""

    def __init__(self, name: str, graph: Any, variants: Sequence[str], work: Path,
                 inputs: Sequence[np.ndarray], opt: str = "-O2") -> None:
        import cffi

        from firmware_gen.project import generate_project
        from targets.toolchains import compile_objects, host_toolchain, run_tool

        self.name = name
        project = generate_project(graph, work, variants=variants, predict_sizes=False)
        self.program = project.program
        self.layer_variants: dict[int, str] = dict(getattr(project.program, "layer_variants", {}))
        tc = host_toolchain(opt=(opt,))  # -fPIC
        tc.require()
        self.compiler = f"{tc.version} {' '.join(tc.opt)}"
        objects = compile_objects(tc, [*(project.path(s) for s in project.sources), TIMER_SOURCE],
                                  include_dirs=[project.path(d) for d in project.include_dirs],
                                  extra=_variant_flags(variants))
        library = work / "libbf_bench.so"
        run_tool([*tc.compile_argv(objects, library, extra=("-shared",)), "-lm"])
        self.ffi = cffi.FFI()
        self.ffi.cdef(_CDEF)
        self.lib = self.ffi.dlopen(str(library))
        self._arrays = [np.ascontiguousarray(x) for x in inputs]
        self._buffers = [self.ffi.from_buffer(a) for a in self._arrays]
        self._ptrs = self.ffi.new("const void *[]", [self.ffi.cast("const void *", b) for b in self._buffers])
        self._sizes = self.ffi.new("uint32_t[]", [a.nbytes for a in self._arrays])

    def batch(self, n: int) -> float:
        ns = self.lib.bf_bench_run(self._ptrs, self._sizes, n)
        if ns < 0:
            raise BoardfitError(f"{self.name}: bf_model_invoke failed")
        return float(ns) * 1e-9

    def check(self) -> list[np.ndarray]:
        self.lib.bf_model_reset()
        self.batch(1)
        outs = []
        for s in self.program.outputs:
            raw = bytes(self.ffi.buffer(self.lib.bf_model_output(s.position), s.nbytes))
            outs.append(np.frombuffer(raw, dtype=s.dtype.numpy).reshape(s.shape).copy())
        return outs


class GeneratedCViaCffi(Engine):
    """The same library, one cffi call per inference from a Python loop."""

    def __init__(self, c: GeneratedC) -> None:
        self.name = "boardfit via cffi"
        self._c = c

    def batch(self, n: int) -> float:
        lib, ffi = self._c.lib, self._c.ffi
        pairs = [(k, b, len(b)) for k, b in enumerate(self._c._buffers)]
        t0 = time.perf_counter()
        for _ in range(n):
            for k, buf, size in pairs:
                ffi.memmove(lib.bf_model_input(k), buf, size)
            lib.bf_model_invoke()
        return time.perf_counter() - t0

    def check(self) -> list[np.ndarray]:
        return self._c.check()


class Tflite(Engine):
    """ai-edge-litert, optimized builtin kernels, one thread, no XNNPACK."""

    def __init__(self, raw: bytes, inputs: Sequence[np.ndarray]) -> None:
        self.name = "TFLite"
        self._raw = raw
        self._inputs = inputs
        self._interp = self._make()

    def _make(self) -> Any:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        interp = Interpreter(model_content=self._raw, num_threads=1,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interp.allocate_tensors()
        dets = interp.get_input_details()
        self._feed = [(d["index"], np.ascontiguousarray(x.reshape(d["shape"]).astype(d["dtype"])))
                      for d, x in zip(dets, self._inputs, strict=True)]
        self._out = [d["index"] for d in interp.get_output_details()]
        return interp

    def batch(self, n: int) -> float:
        interp, feed = self._interp, self._feed
        t0 = time.perf_counter()
        for _ in range(n):
            for idx, x in feed:
                interp.set_tensor(idx, x)
            interp.invoke()
        return time.perf_counter() - t0

    def check(self) -> list[np.ndarray]:
        self._interp = self._make()  # fresh variables for streaming models
        self.batch(1)
        return [np.array(self._interp.get_tensor(i), copy=True) for i in self._out]


class Tflm(Engine):
    """The tflite-micro package's interpreter (reference kernels)."""

    def __init__(self, raw: bytes, inputs: Sequence[np.ndarray]) -> None:
        self.name = "TFLM"
        self._raw = raw
        self._inputs = inputs
        self._interp = self._make()

    def _make(self) -> Any:
        from tflite_micro.python.tflite_micro import runtime

        interp = runtime.Interpreter.from_bytes(self._raw, arena_size=TFLM_ARENA)
        feed = []
        for k, x in enumerate(self._inputs):
            d = interp.get_input_details(k)
            feed.append((k, np.ascontiguousarray(x.reshape([int(s) for s in d["shape"]]).astype(d["dtype"]))))
        self._feed = feed
        self._n_out = len(runtime.convert_bytearray_to_object(self._raw).subgraphs[0].outputs)
        return interp

    def batch(self, n: int) -> float:
        interp, feed = self._interp, self._feed
        t0 = time.perf_counter()
        for _ in range(n):
            for k, x in feed:
                interp.set_input(x, k)
            interp.invoke()
        return time.perf_counter() - t0

    def check(self) -> list[np.ndarray]:
        self._interp = self._make()
        self.batch(1)
        return [np.array(self._interp.get_output(k), copy=True) for k in range(self._n_out)]


# ---------------------------------------------------------------------------------------------
# Measurement


def calibrate(engine: Engine, batch_s: float) -> int:
    """Inferences per batch so that a batch takes about ``batch_s`` seconds."""
    engine.batch(1)  # warm caches and lazy initialisation
    n = 1
    while True:
        t = min(engine.batch(n) for _ in range(3))
        if t >= batch_s / 8 or n >= 1 << 20:
            return max(1, min(1 << 22, round(n * batch_s / max(t, 1e-9))))
        n *= 4


def _max_diff(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        d = np.abs(x.astype(np.float64).ravel() - y.astype(np.float64).ravel())
        worst = max(worst, float(d.max()) if d.size else 0.0)
    return worst


@dataclass
class Result:
    model: str
    macs: int
    engines: list[str]
    batch: dict[str, int]
    median_us: dict[str, float]
    spread_us: dict[str, tuple[float, float]]  # 25th and 75th percentile
    speedup_vs: dict[str, dict[str, float]]  # boardfit engine -> other engine -> median paired ratio
    max_diff_vs_tflm: float
    max_diff_vs_tflite: float
    int_outputs: bool
    optimized_layers: dict[str, int] = field(default_factory=dict)

    @property
    def mcu_sized(self) -> bool:
        return self.model.startswith(MCU_SIZED)

    def ratio(self, other: str, ours: str = "boardfit") -> float:
        return self.speedup_vs[ours][other]

    def to_json(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        doc["mcu_sized"] = self.mcu_sized
        doc["targets"] = {
            "faster_or_equal_tflite": (self.ratio("TFLite") >= TFLITE_TARGET) if self.mcu_sized else None,
            "at_least_5x_tflm": self.ratio("TFLM") >= TFLM_TARGET,
        }
        return doc


def measure(model: str, repeat: int, batch_s: float, work: Path, opt: str = "-O2") -> Result:
    from toolkit.model.summary import summarize
    from toolkit.model.tflite import read_tflite

    raw = (MODELS_DIR / f"{model}.tflite").read_bytes()
    graph = read_tflite(raw)
    inputs = model_input(graph, model)
    ours = GeneratedC("boardfit", graph, ("ref",), work / f"{model}-ref", inputs, opt)
    engines: list[Engine] = [ours]
    opt_layers: dict[str, int] = {}
    variants = _optimized_variants()
    if variants != ("ref",):
        optimized = GeneratedC("boardfit-opt", graph, variants, work / f"{model}-opt", inputs, opt)
        for v in optimized.layer_variants.values():
            if v != "ref":
                opt_layers[v] = opt_layers.get(v, 0) + 1
        if opt_layers:
            engines.append(optimized)
    engines += [GeneratedCViaCffi(ours), Tflite(raw, inputs), Tflm(raw, inputs)]
    by_name = {e.name: e for e in engines}
    expected = by_name["TFLM"].check()
    diffs = {e.name: _max_diff(e.check(), expected) for e in engines if e.name != "TFLM"}
    tflite_out = by_name["TFLite"].check()
    diff_tflite = _max_diff(ours.check(), tflite_out)
    sizes = {e.name: calibrate(e, batch_s) for e in engines}
    times: dict[str, list[float]] = {e.name: [] for e in engines}
    for r in range(repeat):
        for k in range(len(engines)):
            e = engines[(k + r) % len(engines)]
            times[e.name].append(e.batch(sizes[e.name]) / sizes[e.name])
    ours_names = [e.name for e in engines if e.name.startswith("boardfit") and "cffi" not in e.name]
    speedups = {
        mine: {e.name: statistics.median(t / m for t, m in zip(times[e.name], times[mine], strict=True))
               for e in engines if e.name != mine}
        for mine in ours_names
    }
    quart = {n: statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3 for n, ts in times.items()}
    return Result(
        model=model, macs=summarize(graph).total_macs, engines=[e.name for e in engines], batch=sizes,
        median_us={n: statistics.median(ts) * 1e6 for n, ts in times.items()},
        spread_us={n: (q[0] * 1e6, q[2] * 1e6) for n, q in quart.items()},
        speedup_vs=speedups, max_diff_vs_tflm=diffs["boardfit"], max_diff_vs_tflite=diff_tflite,
        int_outputs=all(np.issubdtype(x.dtype, np.integer) for x in expected),
        optimized_layers=opt_layers,
    )


# ---------------------------------------------------------------------------------------------
# Machine description and output


def _first_line(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return "not installed"
    return out.splitlines()[0].strip() if out.strip() else "unknown"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(),
            "gcc": _first_line(["gcc", "--version"]), "python": platform.python_version(),
            "loadavg_start": list(os.getloadavg())}


def _us(v: float) -> str:
    return f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"


def _ratio(v: float, goal: float | None) -> str:
    s = f"{v:.2f}×"
    if goal is None:
        return s
    return f"[green]{s}[/]" if v >= goal else f"[red]{s}[/]"


def table(rows: Sequence[Result]) -> Table:
    has_opt = any("boardfit-opt" in r.engines for r in rows)
    t = Table(title="Host latency per inference, median µs (one thread; boardfit's C timed inside C)",
              title_justify="left")
    cols = ["model", "MACs", "boardfit (ref C)"]
    cols += ["boardfit-opt"] if has_opt else []
    cols += ["boardfit via cffi", "TFLite (opt kernels)", "TFLM (ref kernels)", "TFLite / boardfit",
             "TFLM / boardfit", "TFLM / cffi", "max abs Δ vs TFLM"]
    cols += ["TFLite / opt", "TFLM / opt"] if has_opt else []
    for c in cols:
        t.add_column(c, justify="left" if c == "model" else "right", no_wrap=True)
    for r in rows:
        cells = [r.model, f"{r.macs:,}", _us(r.median_us["boardfit"])]
        if has_opt:
            cells.append(_us(r.median_us["boardfit-opt"]) if "boardfit-opt" in r.median_us else "= ref")
        cells += [_us(r.median_us["boardfit via cffi"]), _us(r.median_us["TFLite"]), _us(r.median_us["TFLM"]),
                  _ratio(r.ratio("TFLite"), TFLITE_TARGET if r.mcu_sized else None),
                  _ratio(r.ratio("TFLM"), TFLM_TARGET),
                  f"{r.median_us['TFLM'] / r.median_us['boardfit via cffi']:.2f}×",
                  f"{r.max_diff_vs_tflm:g}"]
        if has_opt:
            if "boardfit-opt" in r.speedup_vs:
                cells += [_ratio(r.ratio("TFLite", "boardfit-opt"), TFLITE_TARGET if r.mcu_sized else None),
                          _ratio(r.ratio("TFLM", "boardfit-opt"), TFLM_TARGET)]
            else:
                cells += ["", ""]
        t.add_row(*cells)
    return t


def verdicts(rows: Sequence[Result], ours: str = "boardfit") -> list[str]:
    out = []
    mcu = [r for r in rows if r.mcu_sized and ours in r.speedup_vs]
    slow = [r for r in mcu if r.ratio("TFLite", ours) < TFLITE_TARGET]
    label = f"{ours} ({'ref C kernels' if ours == 'boardfit' else 'optimized variants'})"
    if not mcu:
        pass
    elif not slow:
        out.append(f"target {label} at least as fast as TFLite on the MCU-sized models: met on all "
                   f"{len(mcu)}")
    else:
        out.append(f"target {label} at least as fast as TFLite on the MCU-sized models: MISSED on "
                   f"{len(slow)} of {len(mcu)} — " + "; ".join(
                       f"{r.model} {r.ratio('TFLite', ours):.2f}× (TFLite {_us(r.median_us['TFLite'])} µs "
                       f"vs {_us(r.median_us[ours])} µs)" for r in slow))
    have = [r for r in rows if ours in r.speedup_vs]
    slow5 = [r for r in have if r.ratio("TFLM", ours) < TFLM_TARGET]
    if have and not slow5:
        out.append(f"target {label} >= 5x faster than TFLM reference kernels: met on all {len(have)} models")
    elif have:
        out.append(f"target {label} >= 5x faster than TFLM reference kernels: MISSED on {len(slow5)} of "
                   f"{len(have)} — " + "; ".join(f"{r.model} {r.ratio('TFLM', ours):.2f}×" for r in slow5))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(example_models()),
                    help="comma-separated example model names (default: all, int8 then float)")
    ap.add_argument("--repeat", type=int, default=21, help="interleaved rounds (medians over these)")
    ap.add_argument("--batch-ms", type=float, default=25.0, help="target duration of one batch")
    ap.add_argument("--opt", default="-O2", help="optimization flag for the generated C (default -O2)")
    ap.add_argument("--json", action="store_true", help="print a JSON document instead of tables")
    ap.add_argument("--markdown", action="store_true", help="tables as Markdown (for the README)")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if not (MODELS_DIR / f"{m}.tflite").is_file()]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(example_models())}")
    info = machine()
    rows: list[Result] = []
    failed: dict[str, str] = {}  # model -> error: reported in the output, never skipped silently
    with tempfile.TemporaryDirectory(prefix="bf-host-latency-") as tmp:
        for model in models:
            try:
                rows.append(measure(model, max(1, args.repeat), args.batch_ms / 1e3, Path(tmp), args.opt))
            except (BoardfitError, RuntimeError, ValueError) as exc:
                failed[model] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}"
    info["loadavg_end"] = list(os.getloadavg())
    compiler = f"{info['gcc']} {args.opt}"
    lines = verdicts(rows)
    if any("boardfit-opt" in r.speedup_vs for r in rows):
        lines += verdicts(rows, "boardfit-opt")
    else:
        lines.append("optimized kernels: no x86 kernel variant runs any layer of these models "
                     f"(variants for this CPU: {', '.join(_optimized_variants())}); boardfit-opt = boardfit")
    if failed:
        lines.append(f"NOT MEASURED ({len(failed)} of {len(models)} models; targets unverified there): "
                     + "; ".join(f"{m}: {e}" for m, e in failed.items()))
    if args.json:
        doc = {"schema": SCHEMA, "unit": "microseconds per inference", "machine": info,
               "repeat": args.repeat, "batch_ms": args.batch_ms, "compiler": compiler,
               "results": [r.to_json() for r in rows], "failed": failed, "verdicts": lines}
        print(json.dumps(doc, indent=2))
        return 1 if failed else 0
    console = Console(width=400 if args.markdown else 220)
    t = table(rows)
    if args.markdown:
        t.box = box.MARKDOWN
    console.print(t)
    console.print(f"{info['cpu']}, {info['cores']} cores, {info['machine']}; {compiler}; load average "
                  f"{info['loadavg_start'][0]:.2f} -> {info['loadavg_end'][0]:.2f}; {args.repeat} "
                  "interleaved rounds; ratios = median of per-round ratios (> 1: boardfit faster)",
                  highlight=False)
    for line in lines:
        console.print(line, highlight=False, markup=False)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
