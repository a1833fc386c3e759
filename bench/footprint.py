"""Flash and RAM of boardfit's generated C against TensorFlow Lite Micro's arena, per example model.

    python bench/footprint.py [--models digits_mlp_int8,kws_dscnn_int8] [--board mps2-an386]
                              [--no-bisect] [--json]

For every example model (``examples/models/*.tflite``: the digits models and the MLPerf
Tiny-shaped ones, int8 and float) this prints, side by side:

* **boardfit** — the model built for ``--board`` (default ``mps2-an386``, Cortex-M4F) exactly as
  ``boardfit build --board mps2-an386`` does: flash = weights + params + code, RAM = arena +
  state, both *predicted* (Python, before compiling) and *measured* (``arm-none-eabi-size -A``
  of the linked image's ``.bf_*`` sections).  Neither counts the C library, the start-up code or
  the stack.
* **TFLite Micro** — the ``tflite-micro`` PyPI package's interpreter (reference kernels, the
  x86-64 host build), run once on the model with an 8 MiB arena; its RecordingMicroAllocator
  report (``print_allocations()``, written to C-level stderr and captured from fd 2) gives the
  arena's ``total`` = ``head`` (the non-persistent section: planned activations and scratch) +
  ``tail`` (persistent: tensor structs, node structs, kernel op data, resource variables).
  ``smallest`` is the smallest arena with which the interpreter still allocates and invokes,
  found by bisection (every probe in a forked child; temporary set-up allocations make it
  larger than ``total``).
* the ``.tflite`` file size (what TFLM keeps in flash besides its runtime: ~20 KB of
  interpreter plus kernels on a Cortex-M4, see shared/ANCHORS.md).

Targets (issue 3): our RAM ≤ 0.5 × TFLM's total arena, and our arena ≤ TFLM's head, on every
model; the ratios are printed and each target is checked per model (with measured sizes).

**64-bit caveat.**  The package is an x86-64 build: its tail holds 8-byte pointers, so it is
larger than on a 32-bit MCU (the head, activations, is the same).  Every pointer-sized field
shrinks at most to half and allocations stay 16-byte aligned, so ``head + tail / 2`` is a lower
bound of the 32-bit arena; ``RAM / total32_lb`` checks the first target against that bound too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import re
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from toolkit.errors import BoardfitError  # noqa: E402

MODELS_DIR = ROOT / "examples" / "models"
PROBE_ARENA = 8 << 20  # enough for every example model
RAM_TARGET = 0.5  # our RAM <= 0.5 x TFLM total arena
SCHEMA = "boardfit.bench.footprint/1"

T = TypeVar("T")


def example_models() -> list[str]:
    """int8 models first, then float, each in name order."""
    names = sorted(p.stem for p in MODELS_DIR.glob("*.tflite"))
    return [n for n in names if n.endswith("_int8")] + [n for n in names if not n.endswith("_int8")]


# ---------------------------------------------------------------------------------------------
# TFLite Micro, always in a forked child: TFLM may abort() on a model or an arena it cannot use,
# and its report goes to the C-level stderr, which the child redirects.


class TflmFailed(RuntimeError):
    pass


def _in_child(fn: Callable[[], T], stderr_to: str, timeout_s: int = 120) -> T:
    """Run ``fn`` in a forked child with fd 2 redirected to ``stderr_to``; return its result."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            signal.alarm(timeout_s)
            os.close(read_fd)
            target = os.open(stderr_to, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, 2)
            try:
                payload: tuple[str, Any] = ("ok", fn())
            except Exception as exc:  # reported to the parent, which decides
                payload = ("error", f"{type(exc).__name__}: {exc}")
            sys.stderr.flush()
            with os.fdopen(write_fd, "wb") as f:
                pickle.dump(payload, f)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise TflmFailed(f"killed by {signal.Signals(os.WTERMSIG(status)).name}")
    if not data:
        raise TflmFailed(f"exited with status {os.WEXITSTATUS(status)} and no result")
    kind, value = pickle.loads(data)
    if kind != "ok":
        raise TflmFailed(value)
    return value


def _tflm_invoke(model: bytes, arena: int, report: bool) -> None:
    """Allocate with ``arena`` bytes, invoke once on zero inputs, optionally print the report."""
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(model, arena_size=arena)
    n_inputs = len(runtime.convert_bytearray_to_object(model).subgraphs[0].inputs)
    for k in range(n_inputs):
        det = interp.get_input_details(k)
        interp.set_input(np.zeros([int(s) for s in det["shape"]], dtype=det["dtype"]), k)
    interp.invoke()
    if report:
        interp.print_allocations()


_ARENA_LINE = re.compile(r"Arena allocation (total|head|tail)\s+(\d+)\s+bytes", re.I)
_USED_LINE = re.compile(r"'([^']+)'\s+used\s+(\d+)\s+bytes", re.I)


def parse_allocations(text: str) -> dict[str, Any]:
    """``{"total", "head", "tail", "parts": {name: bytes}}`` from print_allocations() output.

    Only the figures are matched (the line prefix and the text in parentheses may change between
    TFLM versions); a report without total and head is an error, not a zero.
    """
    arena = {m.group(1).lower(): int(m.group(2)) for m in _ARENA_LINE.finditer(text)}
    if "total" not in arena or "head" not in arena:
        raise TflmFailed(f"no 'Arena allocation total/head' lines in TFLM's report:\n{text[-2000:]}")
    arena.setdefault("tail", arena["total"] - arena["head"])
    parts = {m.group(1): int(m.group(2)) for m in _USED_LINE.finditer(text)}
    return {**arena, "parts": parts}


def tflm_report(model: bytes, tmp: Path) -> dict[str, Any]:
    log_path = tmp / "tflm-report.txt"
    _in_child(lambda: _tflm_invoke(model, PROBE_ARENA, report=True), str(log_path))
    return parse_allocations(log_path.read_text(errors="replace"))


def tflm_smallest_arena(model: bytes, start: int, tmp: Path) -> int:
    """Smallest arena size (bytes) with which TFLM allocates and invokes ``model``."""
    log_path = str(tmp / "tflm-probe.txt")

    def works(arena: int) -> bool:
        try:
            _in_child(lambda: _tflm_invoke(model, arena, report=False), log_path)
        except TflmFailed:
            return False
        return True

    lo, hi = 0, start  # invariant: works(hi), not works(lo)
    while not works(hi):
        lo, hi = hi, hi * 2
        if hi > PROBE_ARENA:
            raise TflmFailed(f"does not run with {PROBE_ARENA} bytes")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if works(mid) else (mid, hi)
    return hi


# ---------------------------------------------------------------------------------------------
# boardfit


@dataclass(frozen=True)
class Ours:
    predicted: dict[str, int]
    measured: dict[str, int]
    optimized_layers: dict[str, int]  # kernel variant -> layers it runs (ref layers not counted)
    arena_ref_kernels: int  # the arena if every layer ran the portable ref kernels (no scratch)


def boardfit_sizes(graph: Any, board_id: str, work: Path) -> Ours:
    """Sizes of ``graph`` built for ``board_id`` like ``boardfit build`` (predicted and measured),
    which optimized kernel variants it uses, and the arena it would have with ref kernels only."""
    from firmware_gen.program import build_program
    from firmware_gen.project import generate_project
    from toolkit.boards import load_board
    from toolkit.build import build_for_board

    board = load_board(board_id)
    project = generate_project(graph, work, board=board)
    built = build_for_board(project, board)
    if built.report.measured is None:
        raise BoardfitError(f"no measured sizes for {board_id}")
    used: dict[str, int] = {}
    for v in project.program.layer_variants.values():
        if v != "ref":
            used[v] = used.get(v, 0) + 1
    ref_arena = build_program(graph, variants=("ref",)).arena_bytes
    return Ours(built.report.predicted.to_json(), built.report.measured.to_json(), used, ref_arena)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    model: str
    tflite_bytes: int
    predicted: dict[str, int]
    measured: dict[str, int]
    tflm_total: int
    tflm_head: int
    tflm_tail: int
    tflm_smallest: int | None
    tflm_parts: dict[str, int]
    optimized_layers: dict[str, int]
    arena_ref_kernels: int

    @property
    def ram(self) -> int:
        return self.measured["ram_bytes"]

    @property
    def arena(self) -> int:
        return self.measured["arena_bytes"]

    @property
    def tflm_total32_lb(self) -> int:
        return self.tflm_head + -(-self.tflm_tail // 2)

    @property
    def ram_vs_total(self) -> float:
        return self.ram / self.tflm_total

    @property
    def ram_vs_total32_lb(self) -> float:
        return self.ram / self.tflm_total32_lb

    @property
    def arena_vs_head(self) -> float:
        return self.arena / self.tflm_head if self.tflm_head else float("inf")

    @property
    def ram_target_met(self) -> bool:
        return self.ram <= RAM_TARGET * self.tflm_total

    @property
    def ram_target_met_32(self) -> bool:
        return self.ram <= RAM_TARGET * self.tflm_total32_lb

    @property
    def arena_target_met(self) -> bool:
        return self.arena <= self.tflm_head

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "tflm_total32_lower_bound": self.tflm_total32_lb,
                "ram_vs_tflm_total": self.ram_vs_total, "ram_vs_tflm_total32_lower_bound":
                self.ram_vs_total32_lb, "arena_vs_tflm_head": self.arena_vs_head,
                "targets": {"ram_le_half_tflm_total": self.ram_target_met,
                            "ram_le_half_tflm_total32_lower_bound": self.ram_target_met_32,
                            "arena_le_tflm_head": self.arena_target_met}}


def measure(model: str, board_id: str, bisect: bool, tmp: Path) -> Row:
    from toolkit.model.tflite import read_tflite

    raw = (MODELS_DIR / f"{model}.tflite").read_bytes()
    graph = read_tflite(raw)
    ours = boardfit_sizes(graph, board_id, tmp / model)
    rep = tflm_report(raw, tmp)
    smallest = tflm_smallest_arena(raw, rep["total"], tmp) if bisect else None
    return Row(model, len(raw), ours.predicted, ours.measured, rep["total"], rep["head"], rep["tail"],
               smallest, rep["parts"], ours.optimized_layers, ours.arena_ref_kernels)


# ---------------------------------------------------------------------------------------------
# Output


def _ok(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[red]NO[/]"


def _variants(r: Row) -> str:
    return ", ".join(f"{v}×{n}" for v, n in sorted(r.optimized_layers.items())) or "ref"


def table(rows: Sequence[Row], board_id: str) -> Table:
    t = Table(title=f"Footprint: boardfit on {board_id} (predicted / measured) vs TFLite Micro's arena "
              "(x86-64 package) — bytes", title_justify="left")
    cols = ("model", ".tflite", "flash pred", "flash meas", "kernels", "arena meas", "state meas",
            "RAM pred", "RAM meas", "TFLM total", "TFLM head", "TFLM tail", "TFLM smallest",
            "RAM/total", "≤0.5?", "RAM/total32lb", "≤0.5?", "arena/head", "≤1?", "arena ref-only")
    for c in cols:
        t.add_column(c, justify="left" if c in ("model", "kernels") else "right", no_wrap=True)
    for r in rows:
        t.add_row(r.model, f"{r.tflite_bytes:,}", f"{r.predicted['flash_bytes']:,}",
                  f"{r.measured['flash_bytes']:,}", _variants(r), f"{r.arena:,}",
                  f"{r.measured['state_bytes']:,}", f"{r.predicted['ram_bytes']:,}", f"{r.ram:,}",
                  f"{r.tflm_total:,}", f"{r.tflm_head:,}", f"{r.tflm_tail:,}",
                  "—" if r.tflm_smallest is None else f"{r.tflm_smallest:,}",
                  f"{r.ram_vs_total:.3f}", _ok(r.ram_target_met), f"{r.ram_vs_total32_lb:.3f}",
                  _ok(r.ram_target_met_32), f"{r.arena_vs_head:.3f}", _ok(r.arena_target_met),
                  f"{r.arena_ref_kernels:,}")
    return t


def _arena_miss(r: Row) -> str:
    why = (f"{r.model}: {r.arena:,} B vs head {r.tflm_head:,} B (+{r.arena - r.tflm_head:,} B, "
           f"{r.arena_vs_head:.3f} x)")
    if r.optimized_layers and r.arena_ref_kernels < r.arena:
        why += (f" [{_variants(r)} scratch; ref kernels only: {r.arena_ref_kernels:,} B, "
                f"{'within' if r.arena_ref_kernels <= r.tflm_head else 'still over'} the head]")
    return why


def verdicts(rows: Sequence[Row]) -> list[str]:
    """One line per target: met on every model, or the models that miss it and by how much."""
    out = []
    checks: list[tuple[str, Callable[[Row], bool], Callable[[Row], str]]] = [
        ("RAM (arena + state) <= 0.5 x TFLM total arena (x86-64 report)", lambda r: r.ram_target_met,
         lambda r: f"{r.model}: {r.ram:,} B = {r.ram_vs_total:.3f} x {r.tflm_total:,} B"),
        ("RAM <= 0.5 x TFLM 32-bit lower bound (head + tail/2)", lambda r: r.ram_target_met_32,
         lambda r: f"{r.model}: {r.ram:,} B = {r.ram_vs_total32_lb:.3f} x {r.tflm_total32_lb:,} B"),
        ("arena <= TFLM head (planned activations)", lambda r: r.arena_target_met, _arena_miss),
    ]
    for name, ok, why in checks:
        missed = [r for r in rows if not ok(r)]
        if not missed:
            out.append(f"target {name}: met on all {len(rows)} models")
        else:
            out.append(f"target {name}: MISSED on {len(missed)} of {len(rows)} models — "
                       + "; ".join(why(r) for r in missed))
    exact = [r.model for r in rows if r.predicted["ram_bytes"] != r.ram]
    out.append("predicted RAM == measured RAM on every model" if not exact
               else f"predicted RAM differs from measured on: {', '.join(exact)}")
    return out


def _error_summary(exc: Exception) -> str:
    """The command's diagnosis rather than its long argv: the first line that says 'error'."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines[1:]:
        if "error" in ln.lower():
            return f"{type(exc).__name__}: {ln}"
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(example_models()),
                    help="comma-separated example model names (default: all)")
    ap.add_argument("--board", default="mps2-an386", help="board whose build is measured")
    ap.add_argument("--no-bisect", action="store_true", help="skip TFLM's smallest-arena bisection")
    ap.add_argument("--json", action="store_true", help="print a JSON document instead of tables")
    ap.add_argument("--markdown", action="store_true", help="tables as Markdown (for the README)")
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if not (MODELS_DIR / f"{m}.tflite").is_file()]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(example_models())}")
    rows: list[Row] = []
    failed: dict[str, str] = {}  # model -> first line of the error: reported, never skipped silently
    with tempfile.TemporaryDirectory(prefix="bf-footprint-") as tmp:
        for model in models:
            try:
                rows.append(measure(model, args.board, not args.no_bisect, Path(tmp)))
            except (BoardfitError, TflmFailed) as exc:
                failed[model] = _error_summary(exc)
    lines = verdicts(rows)
    if failed:
        lines.append(f"NOT MEASURED ({len(failed)} of {len(models)} models; the targets are unverified "
                     "there): " + "; ".join(f"{m}: {e}" for m, e in failed.items()))
    if args.json:
        doc = {"schema": SCHEMA, "board": args.board, "unit": "bytes",
               "note": "TFLM figures from the x86-64 tflite-micro package (64-bit pointers in the "
                       "tail); tflm_total32_lower_bound = head + ceil(tail / 2)",
               "rows": [r.to_json() for r in rows], "failed": failed, "verdicts": lines}
        print(json.dumps(doc, indent=2))
        return 1 if failed else 0
    console = Console(width=400 if args.markdown else 230)
    t = table(rows, args.board)
    if args.markdown:
        t.box = box.MARKDOWN
    console.print(t)
    for line in lines:
        console.print(line, highlight=False, markup=False)
    with contextlib.suppress(StopIteration):
        parts = next(r for r in rows if r.tflm_parts).tflm_parts
        console.print("TFLM tail parts (first model): " + ", ".join(f"{k} {v:,}" for k, v in parts.items()),
                      highlight=False)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
