"""``boardfit fit`` over the example models and boards of bench/planner.py: predicted against measured.

    python bench/fit.py [--models digits_mlp_int8,...] [--boards microbit,mps2-an386]
                        [--budgets tight|all|board] [--quick] [--json]

For each example model and board of ``bench/planner.py`` (same data: the digits models plan on
``digits:calib`` and are validated on the 400 samples of ``digits:test``; the MLPerf Tiny-shaped
models on random inputs from their training distribution, half held back) and flash budgets
chosen as bench/planner.py chooses them — ``tight`` (default): the board's own budget, the
tightest of bench/planner.py's fractions (``min + 10 %`` of the way from the smallest reachable
flash to the dense int8 model's) and 32 KiB for the LeNet-300-100-shaped digits MLPs; ``all``:
every budget of bench/planner.py; ``board``: the board's budget only — ``boardfit fit`` (its
Python API, :func:`toolkit.planner.fit.fit_model`) plans, compresses from the plan's spec,
builds the firmware, runs it in QEMU and streams **every** held-back sample over the serial
link.  Each row sets the plan's predictions beside the measurements:

* flash: the model's bytes (weights + params + code) measured in the linked ELF's sections,
  against the budget and the plan (weights exact, code within 10 %); the whole image beside;
* RAM: arena + state + persistent tables measured in the ELF, against the plan (exact);
* the plan's metric — accuracy (digits), top-1 agreement with the original int8 model (no
  labels), or the output error (the autoencoder) — on the device against the plan's prediction
  (within 0.5 points); every output bit-exact with the compressed model's host simulation;
* latency per inference: the plan's estimate (Cortex-M4 latency data; the M0 has none:
  uncalibrated) against QEMU ``-icount`` instructions at the board's clock (not cycles).

Targets (issue 7, "Done when"): for every model and board the firmware fits (measured ≤ budget),
measured flash and RAM equal the prediction (code within 10 %), the on-device accuracy is within
0.5 points of the predicted; the digits MLP and CNN fit the micro:bit (16 KiB RAM); the
LeNet-300-100-shaped MLP fits 32 KiB of flash within 1 point of the float model's accuracy,
validated on the emulated board.  Budgets no mix can meet are listed as "nothing fits" with the
smallest reachable flash (not a failure); a fit that errors is NOT MEASURED (exit 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import planner as bench_planner  # noqa: E402  (bench/planner.py: models, boards, data, budgets)
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from toolkit.boards import load_board  # noqa: E402
from toolkit.errors import BoardfitError  # noqa: E402
from toolkit.planner.fit import FitReport, FitRequest, fit_model  # noqa: E402
from toolkit.planner.pipeline import PlanRequest, Prepared, plan_model, prepare  # noqa: E402
from toolkit.planner.solve import BudgetError  # noqa: E402

MODELS_DIR = bench_planner.MODELS_DIR
TIGHTEST = f"min + {int(min(bench_planner.FRACTIONS) * 100)} %"
LENET = "digits_mlp_float"
TIGHT_32K = "32 KiB"


@dataclass
class Row:
    model: str
    board: str
    budget: str
    flash_budget: int
    ram_budget: int
    status: str = ""  # "measured" | "nothing fits" | "NOT MEASURED"
    note: str = ""
    seconds: float = 0.0
    mix: str = ""
    doc: dict[str, Any] = field(default_factory=dict)  # boardfit.fit/1 of the run

    @property
    def measured(self) -> bool:
        return self.status == "measured"

    def check(self, key: str) -> bool | None:
        return self.doc.get("checks", {}).get(key) if self.measured else None

    @property
    def sizes_match(self) -> bool | None:
        if not self.measured:
            return None
        keys = ("weights_exact", "params_within_bound", "code_within_10_percent", "ram_exact")
        return all(self.check(k) for k in keys)

    @property
    def verdict(self) -> str:
        if not self.measured:
            return self.status
        failed = [k for k, v in self.doc["checks"].items() if v is False]
        return "ok" if not failed else "FAILED: " + ", ".join(failed)

    def to_json(self) -> dict[str, Any]:
        keep = ("predicted_flash_bytes", "measured_flash_bytes", "predicted_ram_bytes", "measured_ram_bytes",
                "predicted_accuracy", "measured_accuracy", "predicted_latency_ms", "measured_latency_ms",
                "metric", "predicted_metric", "measured_metric", "reference_accuracy", "float_model",
                "samples", "agreement", "sizes", "latency", "checks", "fits", "ok")
        return {"model": self.model, "board": self.board, "budget": self.budget,
                "flash_budget": self.flash_budget, "ram_budget": self.ram_budget, "status": self.status,
                "note": self.note, "seconds": round(self.seconds, 1), "mix": self.mix,
                "verdict": self.verdict, **{k: self.doc[k] for k in keep if k in self.doc}}


def row_from_json(d: dict[str, Any]) -> Row:
    """A row of a saved ``--json`` run (its ``boardfit.fit/1`` figures kept flat in the row)."""
    doc = {k: v for k, v in d.items() if k not in ("model", "board", "budget", "flash_budget", "ram_budget",
                                                    "status", "note", "seconds", "mix", "verdict")}
    return Row(d["model"], d["board"], d["budget"], d["flash_budget"], d["ram_budget"], d["status"],
               d["note"], d["seconds"], d["mix"], doc)


def methods(mix: str) -> str:
    """``2× prune(bits=4, sparsity=0.9), int8`` → ``2 prune, int8`` (the table's short form)."""
    counts: dict[str, int] = {}
    for n, name in re.findall(r"(?:(\d+)× )?([a-z_0-9]+)(?:\([^)]*\))?(?:, |$)", mix):
        counts[name] = counts.get(name, 0) + int(n or 1)
    return ", ".join(f"{n} {name}" if n > 1 else name for name, n in counts.items())


def _mix(report: FitReport) -> str:
    counts: dict[str, int] = {}
    for layer in report.plan.layers:
        counts[layer.setting.label] = counts.get(layer.setting.label, 0) + 1
    return ", ".join(f"{n}× {label}" if n > 1 else label for label, n in sorted(counts.items()))


def budgets(model: str, board_id: str, req: PlanRequest, prepared: Prepared,
            which: str) -> list[tuple[str, int]]:
    """bench/planner.py's flash budgets for this model and board (see the module docstring)."""
    board = load_board(board_id)
    if which == "board":
        return [("board", board.flash_budget)]
    probe = plan_model(replace(req, board=board_id, flash=1 << 30, ram=1 << 30, uniform=True),
                       prepared=prepared)
    try:
        plan_model(replace(req, board=board_id, flash=1, ram=1 << 30), prepared=prepared)
        low = 1
    except BudgetError as exc:
        low = exc.min_flash or 1
    chosen = bench_planner._budgets(model, low, bench_planner._int8_flash(probe), board.flash_budget)
    if which == "all":
        return chosen
    return [(label, flash) for label, flash in chosen if label in ("board", TIGHTEST, TIGHT_32K)]


def fit_row(model: str, board_id: str, label: str, flash: int, req: PlanRequest, prepared: Prepared,
            out: Path) -> Row:
    board = load_board(board_id)
    row = Row(model, board_id, label, flash, board.ram_budget)
    t0 = time.perf_counter()
    tag = label.replace(" ", "").replace("%", "pct").replace("+", "p")
    fit_req = FitRequest(replace(req, board=board_id, flash=flash), out / f"{model}-{board_id}-{tag}",
                         samples=0, plots=False)
    try:
        report = fit_model(fit_req, prepared=prepared)
    except BudgetError as exc:
        row.status, row.note = "nothing fits", f"smallest flash {exc.min_flash}, smallest RAM {exc.min_ram}"
    except BoardfitError as exc:
        row.status, row.note = "NOT MEASURED", str(exc)
    else:
        from toolkit.jsonout import fit_doc

        row.status, row.doc, row.mix = "measured", fit_doc(report), _mix(report)
    row.seconds = time.perf_counter() - t0
    return row


def bench_model(model: str, boards: list[str], which: str, tmp: Path) -> list[Row]:
    data, calib = bench_planner._data(model, tmp)
    req = PlanRequest(MODELS_DIR / f"{model}.tflite", boards[0], data=data, calib=calib, cache=True)
    prepared = prepare(req)
    rows = []
    for board_id in boards:
        for label, flash in budgets(model, board_id, req, prepared, which):
            row = fit_row(model, board_id, label, flash, req, prepared, tmp)
            print(f"{model} on {board_id} ({label}): {row.verdict} in {row.seconds:.0f} s", file=sys.stderr)
            rows.append(row)
    return rows


def targets(rows: list[Row]) -> dict[str, Any]:
    measured = [r for r in rows if r.measured]

    def fits_board(model: str, board: str) -> bool | None:
        got = [r for r in rows if r.model == model and r.board == board and r.budget == "board"]
        return None if not got else all(r.measured and r.doc["ok"] for r in got)

    lenet = {}
    for r in rows:
        if r.model == LENET and r.budget == TIGHT_32K:
            d = r.doc
            ok = (r.measured and d["ok"] and d["reference_accuracy"] is not None
                  and d["measured_accuracy"] is not None
                  and 100 * (d["reference_accuracy"] - d["measured_accuracy"]) <= 1.0)
            lenet[r.board] = ok
    return {
        "every_firmware_fits": all(bool(r.check("fits_flash") and r.check("fits_ram")) for r in measured),
        "every_output_bit_exact": all(bool(r.check("bit_exact")) for r in measured),
        "measured_sizes_equal_prediction_code_within_10_percent": all(bool(r.sizes_match) for r in measured),
        "device_accuracy_within_0_5_points_of_predicted": all(
            r.check("accuracy_within_0_5_points") is not False for r in measured),
        "digits_mlp_fits_microbit": fits_board("digits_mlp_int8", "microbit"),
        "digits_cnn_fits_microbit": fits_board("digits_cnn_int8", "microbit"),
        "lenet_300_100_32kib_within_1_point_of_float": lenet or None,
        "not_measured": [f"{r.model}/{r.board}/{r.budget}: {r.note}" for r in rows
                         if r.status == "NOT MEASURED"],
    }


# ---------------------------------------------------------------------------------------------
# Output.


def _n(v: Any) -> str:
    return "—" if v is None else f"{v:,}"


def _ms(v: Any) -> str:
    return "—" if v is None else f"{v:.2f}"


def _pct(v: Any) -> str:
    return "—" if v is None else f"{v:.2f}"


def print_tables(rows: list[Row], goals: dict[str, Any]) -> None:
    con = Console(width=250)
    t = Table(title="boardfit fit: predicted (plan) vs measured (QEMU, linked ELF), every held-back sample",
              title_justify="left")
    cols = ("model", "board", "flash budget", "methods", "flash pred", "flash meas", "code Δ", "image flash",
            "RAM pred", "RAM meas", "metric", "pred %", "device %", "bit-exact", "lat. pred ms",
            "lat. meas ms", "s", "verdict")
    left = ("model", "board", "methods", "metric", "verdict")
    for col in cols:
        t.add_column(col, justify="left" if col in left else "right", overflow="fold")
    for r in rows:
        d = r.doc
        if not r.measured:
            t.add_row(r.model, r.board, f"{r.flash_budget:,} ({r.budget})", r.note, *[""] * 13, r.verdict)
            continue
        p, m = d["sizes"]["predicted"], d["sizes"]["measured"] or {}
        code = "—" if not m else f"{100 * (m['code_bytes'] - p['code_bytes']) / p['code_bytes']:+.1f} %"
        a = d["agreement"]
        t.add_row(r.model, r.board, f"{r.flash_budget:,} ({r.budget})", methods(r.mix),
                  _n(d["predicted_flash_bytes"]),
                  _n(d["measured_flash_bytes"]), code, _n(d["sizes"]["image"]["flash_bytes"]),
                  _n(d["predicted_ram_bytes"]), _n(d["measured_ram_bytes"]), d["metric"],
                  _pct(d["predicted_metric"]), _pct(d["measured_metric"]),
                  f"{a['bit_exact']}/{a['inferences']}", _ms(d["predicted_latency_ms"]),
                  _ms(d["measured_latency_ms"]), f"{r.seconds:.0f}", r.verdict)
    con.print(t)
    con.print("flash = the model's weights + params + code (the budget's meaning; the whole image adds the "
              "runtime, drivers and libc); latency: QEMU -icount instructions at the board's clock, not "
              "cycles")
    for k, v in goals.items():
        met = "met" if v is True or (isinstance(v, dict) and v and all(v.values())) else \
            ("—" if v is None or v == [] else "MISSED")
        con.print(f"target {k}: {v} ({met})" if not isinstance(v, list) else
                  f"{k}: {len(v)}" + ("" if not v else " — " + "; ".join(v)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", help=f"comma-separated (default: {','.join(bench_planner.MODELS)})")
    ap.add_argument("--boards", default=",".join(bench_planner.BOARDS))
    ap.add_argument("--budgets", choices=("tight", "all", "board"), default="tight")
    ap.add_argument("--quick", action="store_true", help="the digits models only")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--table-from", type=Path, help="print the tables of a saved --json run (runs nothing)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.table_from is not None:
        saved = [row_from_json(d) for d in json.loads(args.table_from.read_text())["rows"]]
        print_tables(saved, targets(saved))
        return 0
    models = args.models.split(",") if args.models else list(
        bench_planner.DIGITS if args.quick else bench_planner.MODELS)
    boards = args.boards.split(",")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bf-bench-fit-") as tmp:
        for model in models:
            try:
                rows.extend(bench_model(model, boards, args.budgets, Path(tmp)))
            except BoardfitError as exc:
                rows.append(Row(model, "—", "—", 0, 0, "NOT MEASURED", f"planning failed: {exc}"))
    goals = targets(rows)
    if args.json:
        print(json.dumps({"schema": "boardfit.bench.fit/1", "rows": [r.to_json() for r in rows],
                          "targets": goals}, indent=2))
    else:
        print_tables(rows, goals)
    failed = [k for k, v in goals.items() if v is False or (isinstance(v, dict) and not all(v.values()))]
    return 1 if failed or goals["not_measured"] else 0


if __name__ == "__main__":
    sys.exit(main())
