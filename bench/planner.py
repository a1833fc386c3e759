"""The planner against uniform policies, per model, board and flash budget; and its run time.

    python bench/planner.py [--models digits_mlp_int8,...] [--boards microbit,mps2-an386]
                            [--quick] [--no-timing] [--json]

For each example model and board, the planner (``boardfit plan``) runs at several flash
budgets — the board's own, fractions of the dense int8 model's footprint, and 32 KiB for the
LeNet-300-100-shaped digits MLP — with the board's RAM budget (the micro:bit: 12 KiB of its
16 KiB after the runtime's reserve).  Beside each plan: the best **uniform policy** at the same
budget, i.e. the most accurate of int8, 4-bit quantization, 4-bit k-means, prune 80 % + 4-bit
sharing and binary (BWN, order 1) applied to every layer that offers it (int8 elsewhere) whose
exact footprint on that board fits the same flash and RAM budgets.  Accuracy is the whole
compressed model simulated on the held-back validation samples (bit-exact with the device),
compressed exactly as ``boardfit compress`` does it from the plan's spec.

Data: the digits models plan on ``digits:calib`` (200 calibration samples) and are validated on
``digits:test`` (400).  The MLPerf Tiny-shaped models were trained on random data (their
accuracy is meaningless): they get random inputs from their training distribution, half for
calibration and half for validation, and are scored by top-1 **agreement** with the original
int8 model instead of accuracy — except the autoencoder, whose output is a reconstruction, not
class scores: it is scored by **fidelity**, 100 × (1 − the output's squared error relative to
its power), compared per sample with the Wilcoxon signed-rank test.

Timing: ``vww_mobilenet`` (28 weight layers, 852 options) is planned from scratch with the
sensitivity cache off, on 8 calibration samples for the sensitivity pass; wall time and the
process's CPU time are both shown (this machine's two cores are shared).

Targets (issue 7): the planner is never worse than the best uniform policy and better where no
uniform policy fits; a 20-layer model plans in under a minute; the digits MLP and CNN fit the
micro:bit; the LeNet-300-100-shaped MLP fits 32 KiB of flash within 1 point of float accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from toolkit.boards import load_board  # noqa: E402
from toolkit.errors import BoardfitError  # noqa: E402
from toolkit.planner.pipeline import PlanOutcome, PlanRequest, Prepared, plan_model, prepare  # noqa: E402
from toolkit.planner.solve import BudgetError  # noqa: E402

MODELS_DIR = ROOT / "examples" / "models"
DIGITS = ("digits_mlp_int8", "digits_mlp_float", "digits_cnn_int8")
SYNTHETIC = {  # model -> (input shape, distribution, samples)
    "kws_dscnn_int8": ((49, 10, 1), "normal", 32),
    "ic_resnet8_int8": ((32, 32, 3), "uniform", 32),
    "ad_autoencoder_int8": ((640,), "normal", 256),
}
MODELS = (*DIGITS, *SYNTHETIC)
BOARDS = ("microbit", "mps2-an386")
# Budgets between the smallest flash any mix reaches (0) and the dense int8 model's (1).
FRACTIONS = (0.6, 0.3, 0.1)
TIGHT = 32 * 1024
TIMING_MODEL = "vww_mobilenet_int8"
Z95 = 1.96  # two-sided 95 % for the paired (McNemar) comparison of plan and uniform policy


@dataclass
class Row:
    model: str
    board: str
    budget: str
    flash_budget: int
    ram_budget: int
    metric: str  # "accuracy" | "agreement" | "fidelity" (100 × (1 − relative output error))
    reference: float | None  # float (float models) or int8 accuracy; 100 for agreement
    plan_fits: bool
    plan_flash: int | None = None
    plan_ram: int | None = None
    plan_metric: float | None = None
    plan_mix: str = ""
    uniform_name: str | None = None
    uniform_flash: int | None = None
    uniform_metric: float | None = None
    seconds: float = 0.0
    note: str = ""
    plan_only: int = 0  # validation samples only the plan gets right (agrees on; lower error)
    uniform_only: int = 0  # ... only the best uniform policy gets right
    p_value: float | None = None  # fidelity: Wilcoxon signed-rank test of the per-sample errors
    uniform_all: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """better / equal / WORSE, paired over the validation samples: a difference counts only
        when McNemar's test finds it at 95 % (``|b − c| > 1.96 √(b + c)``), or for fidelity the
        Wilcoxon signed-rank test of the per-sample errors (p < 0.05)."""
        if not self.plan_fits:
            return "nothing fits" if self.uniform_name is None else "PLANNER FAILED"
        if self.uniform_name is None:
            return "only the planner fits"
        b, c = self.plan_only, self.uniform_only
        if self.p_value is not None:
            if self.p_value >= 0.05:
                return "equal" if b == c else ("equal (+)" if b > c else "equal (−)")
            return "better" if b > c else "WORSE"
        if abs(b - c) <= Z95 * (b + c) ** 0.5:
            return "equal" if b == c else ("equal (+)" if b > c else "equal (−)")
        return "better" if b > c else "WORSE"

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "verdict": self.verdict}


def _data(model: str, tmp: Path) -> tuple[str | None, str | None]:
    """(data, calib) arguments for a model."""
    if model in DIGITS:
        return "digits:test", "digits:calib"
    shape, dist, n = SYNTHETIC.get(model, ((96, 96, 3), "uniform", 16))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, *shape)) if dist == "normal" else rng.random((n, *shape))
    path = tmp / f"{model}.npz"
    np.savez(path, x=x.astype(np.float32))
    return str(path), None


def _pct(v: float | None) -> float | None:
    return None if v is None else round(100 * v, 2)


def _metric(m: Any) -> float | None:
    if m.accuracy is not None:
        return _pct(m.accuracy)
    return _pct(m.agreement if m.classifier else 1.0 - m.loss)


def _mix(outcome: PlanOutcome) -> str:
    counts: dict[str, int] = {}
    for layer in outcome.plan.layers:
        counts[layer.setting.label] = counts.get(layer.setting.label, 0) + 1
    return ", ".join(f"{n}× {label}" if n > 1 else label for label, n in sorted(counts.items()))


def _budgets(model: str, low: int, int8_flash: int, board_budget: int) -> list[tuple[str, int]]:
    out = [("board", board_budget)]
    for f in FRACTIONS:
        flash = int(low + f * (int8_flash - low))
        if flash < board_budget:
            out.append((f"min + {int(f * 100)} %", flash))
    if model.startswith("digits_mlp"):
        out.append(("32 KiB", TIGHT))
    return out


def _row(model: str, board_id: str, label: str, flash: int, prepared: Prepared, req: PlanRequest) -> Row:
    board = load_board(board_id)
    labelled = prepared.evaluator.sets["validation"][1] is not None
    from toolkit.planner.runner import is_probability_output

    classifier = labelled or is_probability_output(prepared.graph, prepared.graph.outputs[0])
    metric = "accuracy" if labelled else "agreement" if classifier else "fidelity"
    ref = _pct(prepared.reference) if labelled else 100.0
    row = Row(model, board_id, label, flash, board.ram_budget, metric, ref, False)
    t0 = time.perf_counter()
    try:
        outcome = plan_model(replace(req, board=board_id, flash=flash), prepared=prepared)
    except BudgetError as exc:
        row.seconds = time.perf_counter() - t0
        row.note = f"min flash {exc.min_flash}, min RAM {exc.min_ram}"
        return row
    row.seconds = time.perf_counter() - t0
    tot = outcome.plan.totals
    row.plan_fits = True
    row.plan_flash, row.plan_ram = tot.predicted_flash_bytes, tot.predicted_ram_bytes
    row.plan_metric = _metric(next(e.metrics for e in outcome.explored if e.kind == "chosen"))
    row.plan_mix = _mix(outcome)
    best = None
    for e in outcome.explored:
        if e.kind != "uniform":
            continue
        row.uniform_all[e.label] = {"flash": e.flash_bytes, "ram": e.ram_bytes, "fits": e.fits,
                                    metric: _metric(e.metrics)}
        score = _metric(e.metrics)
        if e.fits and score is not None and (row.uniform_metric is None or score > row.uniform_metric):
            row.uniform_name, row.uniform_flash, row.uniform_metric = e.label, e.flash_bytes, score
            best = e
    chosen = next(e for e in outcome.explored if e.kind == "chosen")
    if best is not None and metric == "fidelity":
        from scipy.stats import wilcoxon

        a, b = chosen.metrics.losses, best.metrics.losses
        assert a is not None and b is not None
        row.plan_only, row.uniform_only = int(np.sum(a < b)), int(np.sum(b < a))
        row.p_value = 1.0 if np.all(a == b) else float(wilcoxon(a, b).pvalue)
    elif best is not None and chosen.metrics.hits is not None and best.metrics.hits is not None:
        row.plan_only = int(np.sum(chosen.metrics.hits & ~best.metrics.hits))
        row.uniform_only = int(np.sum(best.metrics.hits & ~chosen.metrics.hits))
    return row


def _int8_flash(outcome: PlanOutcome) -> int:
    return next(e.flash_bytes for e in outcome.explored if e.kind == "uniform" and e.label == "int8")


def bench_model(model: str, boards: list[str], tmp: Path) -> list[Row]:
    data, calib = _data(model, tmp)
    req = PlanRequest(MODELS_DIR / f"{model}.tflite", boards[0], data=data, calib=calib, uniform=True,
                      cache=True)
    t0 = time.perf_counter()
    prepared = prepare(req)
    prep_seconds = time.perf_counter() - t0
    rows: list[Row] = []
    for board_id in boards:
        board = load_board(board_id)
        # The dense int8 model's footprint on this board (even when it does not fit the RAM).
        probe = plan_model(replace(req, board=board_id, flash=1 << 30, ram=1 << 30), prepared=prepared)
        try:
            plan_model(replace(req, board=board_id, flash=1, ram=1 << 30), prepared=prepared)
            low = 1
        except BudgetError as exc:
            low = exc.min_flash or 1
        for label, flash in _budgets(model, low, _int8_flash(probe), board.flash_budget):
            row = _row(model, board_id, label, flash, prepared, req)
            if not rows:
                row.seconds += prep_seconds
                row.note = (row.note + "; " if row.note else "") + f"incl. {prep_seconds:.0f} s sensitivity"
            rows.append(row)
    return rows


def timing(tmp: Path) -> dict[str, Any]:
    data, calib = _data(TIMING_MODEL, tmp)
    req = PlanRequest(MODELS_DIR / f"{TIMING_MODEL}.tflite", "mps2-an386", data=data, calib=calib,
                      cache=False, sensitivity_samples=8)
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = plan_model(req)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sens = outcome.plan.sensitivity
    return {"model": TIMING_MODEL, "layers": len(outcome.plan.layers), "options": sens["options"],
            "sensitivity_mode": sens["mode"], "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
            "stages": {k: round(v, 1) for k, v in outcome.seconds.items()},
            "under_a_minute": wall < 60 or cpu < 60}


def targets(rows: list[Row], timing_doc: dict[str, Any] | None) -> dict[str, Any]:
    def fits(model: str, board: str) -> bool | None:
        got = [r.plan_fits for r in rows if r.model == model and r.board == board and r.budget == "board"]
        return got[0] if got else None

    lenet = [r for r in rows if r.model == "digits_mlp_float" and r.budget == "32 KiB"]
    comparable = [r for r in rows if r.plan_fits and r.uniform_name is not None]
    return {
        "never_significantly_worse_than_best_uniform": all(r.verdict != "WORSE" for r in comparable),
        "better_where_no_uniform_fits": all(r.plan_fits for r in rows if r.verdict == "only the planner fits")
        and any(r.verdict == "only the planner fits" for r in rows),
        "digits_mlp_fits_microbit": fits("digits_mlp_int8", "microbit"),
        "digits_cnn_fits_microbit": fits("digits_cnn_int8", "microbit"),
        "lenet_300_100_32kib_within_1_point_of_float": {
            r.board: r.plan_fits and r.plan_metric is not None and r.reference is not None
            and r.reference - r.plan_metric <= 1.0 for r in lenet} or None,
        "plans_20_layer_model_under_a_minute": None if timing_doc is None else timing_doc["under_a_minute"],
    }


# ---------------------------------------------------------------------------------------------
# Latency data: per-kernel instruction counts on the emulated Cortex-M4.

LATENCY_MODELS = ("digits_mlp_int8", "digits_cnn_int8", "kws_dscnn_int8")
LATENCY_FILE = ROOT / "boards" / "latency" / "cortex-m4.toml"
LATENCY_BOARD = "mps2-an386"  # a Cortex-M4 with DSP: its optimized variant is calibrated too


def _latency_calls(rng: np.random.Generator) -> list[tuple[Any, int, int, int]]:
    """(M4Call, MACs, output elements, filter taps) for every kernel of every option of the layers of
    LATENCY_MODELS (compressed without calibration: storage and speed do not depend on it),
    and for the other ops' kernels."""
    from m4_harness import M4Call

    from firmware_gen.lower import STATE_OPS, lower_op
    from toolkit.compress.base import COMPRESSIBLE_OPS, LayerRef
    from toolkit.compress.registry import get_method
    from toolkit.model.tflite import read_tflite
    from toolkit.planner.cost import filter_taps
    from toolkit.planner.sensitivity import layer_settings

    out: list[tuple[Any, int, int, int]] = []
    seen: set[tuple[str, int]] = set()
    for model in LATENCY_MODELS:
        g = read_tflite(MODELS_DIR / f"{model}.tflite")
        for op in g.ops:
            tin, tout = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
            x = rng.integers(-128, 128, size=tin.shape, dtype=np.int8)
            if op.opcode not in COMPRESSIBLE_OPS:
                if op.opcode in STATE_OPS or len([t for t in op.inputs if t >= 0
                                                  and not g.tensors[t].is_constant]) != 1:
                    continue
                call = lower_op(g, op)
                if (call.symbol, tout.num_elements) not in seen:
                    seen.add((call.symbol, tout.num_elements))
                    case = M4Call(f"{model}:{op.index}:{call.symbol}", call, g, x)
                    out.append((case, 0, tout.num_elements, 1))
                continue
            for setting in layer_settings(g, op):
                layer = get_method(setting.method).apply(LayerRef(g, op), setting, None)
                key = (layer.option.kernel, layer.option.macs)
                if key in seen:
                    continue
                seen.add(key)
                case = M4Call(f"{model}:{op.index}:{setting.label}", layer.call, g, x)
                out.append((case, layer.option.macs, tout.num_elements, filter_taps(g, op.index)))
    return out


def calibrate_latency() -> dict[str, Any]:
    """Measure every kernel, fit :class:`~toolkit.planner.cost.KernelTiming` per kernel and
    write boards/latency/cortex-m4.toml."""
    sys.path.insert(0, str(ROOT / "tests"))
    from m4_harness import run_on_m4

    from targets import isa
    from toolkit.boards import load_board
    from toolkit.planner.cost import _kernel_tree

    cases = _latency_calls(np.random.default_rng(0))
    by_kernel: dict[str, list[tuple[int, int, int, float]]] = {}
    # The ref kernels, then the calls the board's optimized variant runs (its build: a family's
    # source from the variant, the variant's scratch), stored as "<symbol>@<variant>".
    variants = tuple(isa.board_variants(load_board(LATENCY_BOARD)))
    opt_cases = [(_for_variant(c[0], variants), *c[1:]) for c in cases]
    runs = [("ref", ("ref",), cases)]
    runs += [(v, variants, [c for c in opt_cases if isa.layer_variant(variants, c[0].call) == v])
             for v in variants if v != "ref"]
    for name, build, chosen in runs:
        sources, include = _kernel_tree(build)
        results = []
        for start in range(0, len(chosen), 40):  # a few programs: each stays small enough to link
            chunk = chosen[start:start + 40]
            results += run_on_m4([c[0] for c in chunk], sources, include)
        for (call, macs, outs, taps), res in zip(chosen, results, strict=True):
            key = call.call.symbol if name == "ref" else f"{call.call.symbol}@{name}"
            by_kernel.setdefault(key, []).append((macs, outs, taps, res.instructions))
    fits: dict[str, dict[str, float]] = {}
    worst = 0.0
    for sym, pts in sorted(by_kernel.items()):
        fits[sym] = _fit(pts)
        worst = max(worst, fits[sym]["per_mac"])
    _write_latency(fits, worst)
    return fits


def _for_variant(case: Any, variants: tuple[str, ...]) -> Any:
    """``case`` with its call as a build with ``variants`` makes it: the scratch of the variant
    that compiles its family (firmware_gen.lower.SCRATCH_RULES, as the generator applies it)."""
    from dataclasses import replace

    from firmware_gen.lower import SCRATCH_RULES
    from targets import isa

    rule = SCRATCH_RULES.get(isa.family_variant(variants, case.call.family), {}).get(case.call.symbol)
    if rule is None:
        return case
    return replace(case, call=replace(case.call, scratch_bytes=int(rule(case.call))))


_TERMS = ("fixed", "per_mac", "per_tap", "per_output")


def _fit(pts: list[tuple[int, int, int, float]]) -> dict[str, float]:
    """Non-negative least squares of *relative* errors (small calls count as much as big ones),
    with the terms the calls can tell apart: per MAC, per output window tap, per output, fixed
    (a term is added only if it raises the rank and leaves more calls than terms)."""
    from scipy.optimize import nnls

    a = np.array([[1.0, m, o * t, o] for m, o, t, _ in pts])
    y = np.array([v for *_, v in pts])
    w = 1.0 / y
    scaled = a / np.maximum(np.abs(a).max(axis=0), 1.0)
    cols: list[int] = []
    order = (1, 2, 3, 0) if np.any(a[:, 1]) else (3, 0)  # without MACs a window tap is an output
    for c in order:
        if not np.any(a[:, c]):
            continue
        trial = [*cols, c]
        full_rank = np.linalg.matrix_rank(scaled[:, trial], tol=1e-6) == len(trial)
        if full_rank and (len(pts) > len(trial) or not cols):
            cols = trial
    scale = np.maximum(np.abs(a[:, cols]).max(axis=0), 1.0)
    coef, _ = nnls(a[:, cols] / scale * w[:, None], y * w)
    full = dict.fromkeys(_TERMS, 0.0)
    for c, v in zip(cols, coef / scale, strict=True):
        full[_TERMS[c]] = float(v)
    pred = a @ np.array([full[t] for t in _TERMS])
    full["max_error"] = float(np.max(np.abs(pred - y) / y))
    full["points"] = len(pts)
    return full


def _write_latency(fits: dict[str, dict[str, float]], worst_per_mac: float) -> None:
    lines = [
        "# Instruction counts of boardfit's kernels on a Cortex-M4, per call: the portable (ref) ones as",
        "# [kernels.<symbol>], the optimized variant's (armv7em, DSP) as [kernels.\"<symbol>@<variant>\"]:",
        "#   instructions = fixed + per_mac * MACs + per_tap * outputs * (kh * kw) + per_output * outputs",
        "# (MACs as each compression option counts them: Option.macs).  Measured by",
        "# `python bench/planner.py --calibrate-latency` on QEMU 7.2 mps2-an386 with -icount shift=6",
        "# (tests/m4_harness.py: arm-none-eabi-gcc 12 -O2, SysTick), fitted by non-negative least",
        "# squares over the layers of the digits MLP/CNN and the DS-CNN at every setting.",
        "# These are instructions, not cycles: latency = instructions * cycles_per_instruction / clock",
        "# is a lower bound on a real part (loads take 2 cycles, flash wait states more).",
        'core = "cortex-m4"',
        "cycles_per_instruction = 1.0",
        "",
        "# Layer kernels not measured here: the most expensive per-MAC rate measured.  Other ops'",
        "# kernels without an entry leave the model's latency uncalibrated.",
        "[default]",
        f"per_mac = {worst_per_mac:.4f}",
        "",
    ]
    for sym, f in fits.items():
        key = sym if "@" not in sym else f'"{sym}"'
        lines += [f"[kernels.{key}]  # {int(f['points'])} calls, max error {100 * f['max_error']:.1f} %",
                  f"fixed = {f['fixed']:.1f}", f"per_mac = {f['per_mac']:.4f}",
                  f"per_tap = {f['per_tap']:.4f}", f"per_output = {f['per_output']:.4f}", ""]
    LATENCY_FILE.parent.mkdir(parents=True, exist_ok=True)
    LATENCY_FILE.write_text("\n".join(lines), encoding="utf-8")


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "—"
    return f"{v:.2f}" if pct else f"{v:,}"


def print_tables(rows: list[Row], timing_doc: dict[str, Any] | None, goals: dict[str, Any]) -> None:
    con = Console(width=200)
    t = Table(title="planner vs the best uniform policy at the same budget (validation data)",
              title_justify="left")
    for col in ("model", "board", "flash budget", "RAM budget", "metric", "ref.", "plan flash", "plan RAM",
                "plan", "best uniform", "its flash", "uniform", "verdict", "s", "plan mix"):
        t.add_column(col, justify="left" if col in ("model", "board", "metric", "best uniform", "verdict",
                                                    "plan mix") else "right")
    for r in rows:
        t.add_row(r.model, r.board, f"{r.flash_budget:,} ({r.budget})", f"{r.ram_budget:,}", r.metric,
                  _fmt(r.reference, True), _fmt(r.plan_flash), _fmt(r.plan_ram), _fmt(r.plan_metric, True),
                  r.uniform_name or "none fits", _fmt(r.uniform_flash), _fmt(r.uniform_metric, True),
                  r.verdict, f"{r.seconds:.0f}", r.plan_mix or r.note)
    con.print(t)
    if timing_doc is not None:
        d = timing_doc
        con.print(f"timing: {d['model']} ({d['layers']} layers, {d['options']} options, "
                  f"{d['sensitivity_mode']} sensitivity): {d['wall_seconds']} s wall, "
                  f"{d['cpu_seconds']} s CPU; stages {d['stages']}")
    for k, v in goals.items():
        con.print(f"target {k}: {v}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help=f"comma-separated (default: {','.join(MODELS)})")
    ap.add_argument("--boards", default=",".join(BOARDS))
    ap.add_argument("--quick", action="store_true", help="the digits models only")
    ap.add_argument("--no-timing", action="store_true", help=f"skip planning {TIMING_MODEL} for time")
    ap.add_argument("--calibrate-latency", action="store_true",
                    help="measure the kernels on the emulated Cortex-M4, write boards/latency/cortex-m4.toml")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.calibrate_latency:
        fits = calibrate_latency()
        print(json.dumps(fits, indent=2) if args.json else f"wrote {LATENCY_FILE} ({len(fits)} kernels)")
        return 0
    models = args.models.split(",") if args.models else list(DIGITS if args.quick else MODELS)
    boards = args.boards.split(",")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bf-bench-planner-") as tmp:
        for model in models:
            try:
                rows.extend(bench_model(model, boards, Path(tmp)))
            except BoardfitError as exc:
                print(f"{model}: {exc}", file=sys.stderr)
        timing_doc = None if args.no_timing else timing(Path(tmp))
    goals = targets(rows, timing_doc)
    if args.json:
        doc = {"rows": [r.to_json() for r in rows], "timing": timing_doc, "targets": goals}
        print(json.dumps(doc, indent=2))
    else:
        print_tables(rows, timing_doc, goals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
