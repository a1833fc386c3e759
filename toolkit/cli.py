"""The ``boardfit`` command line.

Commands print rich tables for people and, with ``--json``, a stable JSON document for scripts
(schemas in docs/json.md).  Every :class:`~toolkit.errors.BoardfitError` becomes a one-line
message on stderr and exit code 2; a failed check (verify mismatch) is exit code 1.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from toolkit import jsonout, tables
from toolkit.errors import BoardfitError

app = typer.Typer(
    name="boardfit",
    help="Fit a TensorFlow Lite model onto a microcontroller or a Raspberry Pi.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Tables are wide: outside a terminal (pipes, CI logs) use 120 columns, not rich's 80.
_WIDTH = shutil.get_terminal_size((120, 40)).columns
out = Console(emoji=False, width=_WIDTH)
err = Console(stderr=True, emoji=False, highlight=False, width=_WIDTH)

T = TypeVar("T")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print a JSON document instead of tables.")]
ModelArg = Annotated[Path, typer.Argument(help="A .tflite model file.", show_default=False)]
# Budgets shared by `plan` and `fit` (sizes parsed by _parse_bytes).
FlashBudget = Annotated[str | None, typer.Option(help="Flash budget (bytes, 32K, 1M); default: the board's.")]
RamBudget = Annotated[str | None, typer.Option(help="RAM budget (bytes, 16K); default: the board's.")]
LatencyBudget = Annotated[
    float | None, typer.Option("--latency-ms", help="Latency budget (needs the core's latency data).")
]


def _guarded(fn: Callable[[], T]) -> T:
    """Run a command body, turning boardfit's errors into a message and exit code 2."""
    try:
        return fn()
    except BoardfitError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except OSError as exc:
        what = escape(str(exc.strerror or exc))
        err.print(f"[bold red]error:[/] {what}: {escape(str(exc.filename or ''))}")
        raise typer.Exit(2) from None


def _emit_json(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=False) + "\n")


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s"
    )


@app.command()
def boards(as_json: JsonFlag = False) -> None:
    """List the boards boardfit knows, with their memory, clock and how they are run."""
    from toolkit.boards import list_boards

    found = _guarded(list_boards)
    if as_json:
        _emit_json(jsonout.boards_doc(found))
    else:
        out.print(tables.boards_table(found))


@app.command()
def inspect(model: ModelArg, as_json: JsonFlag = False) -> None:
    """Per-layer ops, shapes, parameters, MACs and bytes, and whether boardfit supports each op."""
    from toolkit.model.summary import summarize
    from toolkit.model.tflite import read_tflite

    summary = _guarded(lambda: summarize(read_tflite(model)))
    if as_json:
        _emit_json(jsonout.inspect_doc(summary, model))
    else:
        tables.print_inspect(out, summary, model)


@app.command()
def verify(
    model: ModelArg,
    data: Annotated[
        str | None,
        typer.Option(help="A built-in data set (digits[:split]) or an .npz with x (and y)."),
    ] = None,
    samples: Annotated[int, typer.Option(help="How many samples to run (0 = all of --data).")] = 32,
    layerwise: Annotated[bool, typer.Option(help="Compare every intermediate tensor too.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs used without --data.")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Run the numpy oracle and the TFLite reference interpreter side by side and compare."""
    report = _guarded(lambda: _run_verify(model, data, samples, layerwise, seed))
    if as_json:
        _emit_json(jsonout.verify_doc(report, model))
    else:
        tables.print_verify(out, report, model)
    if not report.ok:
        raise typer.Exit(1)


def _run_verify(model: Path, data: str | None, samples: int, layerwise: bool, seed: int) -> Any:
    from toolkit.errors import DataError
    from toolkit.model.tflite import read_tflite
    from toolkit.verify import random_inputs, verify

    raw = Path(model).read_bytes()
    graph = dataclasses.replace(read_tflite(raw), name=Path(model).stem)
    if data is None:
        inputs = random_inputs(graph, max(samples, 1), seed)
        source = f"{len(inputs)} random samples (seed {seed})"
    else:
        from toolkit.datasets import load_dataset

        if len(graph.inputs) != 1:
            raise DataError(f"--data feeds one input, {model} has {len(graph.inputs)}")
        ds = load_dataset(data, graph)
        x = ds.x if samples <= 0 else ds.x[:samples]
        shape = graph.input_tensors[0].shape
        inputs = [[sample.reshape(shape)] for sample in x]
        source = f"{len(inputs)} samples of {ds.name}"
    return verify(graph, raw, inputs, input_source=source, layerwise=layerwise)


@app.command()
def build(
    model: ModelArg,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for the generated project.")],
    board: Annotated[
        str, typer.Option(help="A board id or board file, or 'host' for this machine.")
    ] = "host",
    strategy: Annotated[str, typer.Option(help="Arena planner: greedy or linear.")] = "greedy",
    spec: Annotated[
        Path | None, typer.Option(help="Compression spec (TOML, docs/compression.md) to build with.")
    ] = None,
    plan_file: Annotated[
        Path | None, typer.Option("--plan", help="A plan.json of `boardfit plan`: build its compression "
                                  "(calibrated on the plan's data unless --data/--calib say otherwise).")
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help="With --spec/--plan: data split into calibration and test halves (as boardfit "
                     "compress does) unless --calib is given; the calibration half drives recovery."),
    ] = None,
    calib: Annotated[
        str | None, typer.Option(help="With --spec/--plan: calibration data (all of it).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Generate the model's C project, compile it for a board and report flash and RAM."""
    result, graph_hash, files = _guarded(
        lambda: _run_build(model, out_dir, board, strategy, spec, plan_file, data, calib))
    if as_json:
        _emit_json(jsonout.build_doc(result, model, out_dir, files, graph_hash))
    else:
        tables.print_build(out, result, model, out_dir)


def _run_build(
    model: Path, out_dir: Path, board_name: str, strategy: str, spec_path: Path | None = None,
    plan_path: Path | None = None, data: str | None = None, calib: str | None = None,
) -> tuple[Any, str, tuple[str, ...]]:
    from firmware_gen.project import generate_project
    from toolkit.boards import board_ids, load_board
    from toolkit.build import build_for_board, compress_for_build
    from toolkit.model.tflite import read_tflite

    board = None if board_name == "host" and "host" not in board_ids() else load_board(board_name)
    graph = dataclasses.replace(read_tflite(model), name=Path(model).stem)
    spec, data, calib = _build_spec(model, spec_path, plan_path, data, calib)
    compressed = None
    if spec is not None:
        compressed, _ = compress_for_build(graph, spec, data, calib)
        graph = compressed.graph
    project = generate_project(graph, out_dir, board=board, strategy=strategy, compressed=compressed)
    return build_for_board(project, board), project.model_hash, project.files


def _build_spec(model: Path, spec_path: Path | None, plan_path: Path | None, data: str | None,
                calib: str | None) -> tuple[Any, str | None, str | None]:
    """(spec or None, data, calib) of ``boardfit build``: a plan brings its spec and, unless
    --data/--calib are given, its own calibration data (the same split the planner used)."""
    import hashlib

    from toolkit.compress.spec import load_spec
    from toolkit.errors import CompressionError

    if spec_path is not None and plan_path is not None:
        raise CompressionError("give --spec or --plan, not both")
    if (data is not None or calib is not None) and spec_path is None and plan_path is None:
        raise CompressionError("--data/--calib calibrate a compression: give --spec or --plan too")
    if spec_path is not None:
        return load_spec(spec_path), data, calib
    if plan_path is None:
        return None, None, None
    from toolkit.planner.plan import load_plan

    plan = load_plan(plan_path)
    if plan.model_sha256 and plan.model_sha256 != hashlib.sha256(Path(model).read_bytes()).hexdigest():
        raise CompressionError(f"{plan_path} was planned for {plan.model}, not {model}")
    if data is None and calib is None:
        source = plan.calibration.source
        data, calib = (source, None) if plan.calibration.indices is not None else (None, source)
    return plan.to_spec(), data, calib


@app.command()
def compress(
    model: ModelArg,
    spec: Annotated[
        Path, typer.Option("--spec", help="Per-layer compression spec (TOML, docs/compression.md).")
    ],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")],
    data: Annotated[
        str | None,
        typer.Option(help="Data (digits[:split] or .npz with x, y): split into calibration and test halves "
                     "unless --calib is given."),
    ] = None,
    calib: Annotated[
        str | None, typer.Option(help="Calibration data; then all of --data is test data.")
    ] = None,
    export_tflite: Annotated[
        bool, typer.Option("--export-tflite", help="Also write OUT/model.tflite (weights decoded to int8).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Compress a model's layers as a spec says; report bytes and accuracy; write OUT/."""
    from toolkit.compress.pipeline import compress_model

    report = _guarded(lambda: compress_model(model, spec, out_dir, data, calib, export_tflite))
    if as_json:
        _emit_json(jsonout.compress_doc(report, out_dir))
    else:
        tables.print_compress(out, report, out_dir)


@app.command()
def validate(
    model: ModelArg,
    data: Annotated[
        str, typer.Option(help="A built-in data set (digits[:split]) or an .npz with x (and y labels).")
    ],
    board: Annotated[
        str, typer.Option(help="A board id or board file, or 'host' for a program on this machine.")
    ] = "mps2-an386",
    samples: Annotated[int, typer.Option(help="How many samples to stream (0 = all of --data).")] = 100,
    port: Annotated[
        str | None,
        typer.Option(help="Serial link of a real board (pyserial URL: /dev/ttyACM0, socket://…); with "
                     "--board host, a device program already running there."),
    ] = None,
    layerwise: Annotated[
        bool, typer.Option(help="Debug firmware: compare every intermediate tensor, name the first "
                           "diverging layer.")
    ] = False,
    spec: Annotated[
        Path | None, typer.Option(help="Compression spec (TOML) to apply before building: the device must "
                                  "match the compressed model's host simulation bit for bit.")
    ] = None,
    calib: Annotated[
        str | None, typer.Option(help="With --spec: calibration data (then all of --data is test data; "
                                 "default: --data is split into calibration and test halves).")
    ] = None,
    frames: Annotated[
        int | None,
        typer.Option(help="Streaming models: inferences per sample after a reset (default: the "
                     "example's, else 1)."),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Firmware build directory (default: a cache).")
    ] = None,
    runner: Annotated[
        str | None, typer.Option(help="Runner kind to use instead of the board's first.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print every step and command; build, flash and run nothing.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Build, flash or emulate, stream a data set over the serial link and compare with the oracle."""
    from toolkit.validate import report as vreport
    from toolkit.validate.validate import ValidateOptions
    from toolkit.validate.validate import dry_run as plan_validation
    from toolkit.validate.validate import validate as run_validation

    opts = ValidateOptions(model=model, board=board, data=data, samples=samples, port=port,
                           layerwise=layerwise, spec=spec, calib=calib, dry_run=dry_run, frames=frames,
                           out_dir=out_dir, runner=runner)
    if dry_run:
        plan = _guarded(lambda: plan_validation(opts))
        if as_json:
            _emit_json(jsonout.validate_dry_run_doc(plan))
        else:
            vreport.print_dry_run(out, plan)
        return
    result = _guarded(lambda: run_validation(opts))
    if as_json:
        _emit_json(jsonout.validate_doc(result))
    else:
        tables.print_validate(out, result)
    if not result.ok:
        raise typer.Exit(1)


_SIZE = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}


def _parse_bytes(text: str | None, what: str) -> int | None:
    """``32768``, ``32K``, ``32KiB`` or ``1M`` → bytes (K = 1024)."""
    import re

    from toolkit.errors import PlanError

    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if m is None or m.group(2).lower() not in _SIZE:
        raise PlanError(f"--{what} must be bytes such as 32768, 32K or 1M, got {text!r}")
    return int(float(m.group(1)) * _SIZE[m.group(2).lower()])


@app.command()
def plan(
    model: ModelArg,
    out_path: Annotated[Path, typer.Option("--out", "-o", help="The plan file to write (plan.json); its "
                                           "compression spec is written beside it as <stem>.spec.toml.")],
    board: Annotated[
        str, typer.Option(help="A board id or board file (budgets and toolchain), or 'host'.")
    ] = "mps2-an386",
    data: Annotated[
        str | None,
        typer.Option(help="Data (digits[:split] or .npz with x, y): split into calibration and validation "
                     "halves unless --calib is given."),
    ] = None,
    calib: Annotated[
        str | None, typer.Option(help="Calibration data; then all of --data is validation data.")
    ] = None,
    flash: FlashBudget = None,
    ram: RamBudget = None,
    latency_ms: LatencyBudget = None,
    max_drop: Annotated[
        float | None,
        typer.Option("--max-drop", help="Largest accuracy drop accepted, in points (verified on the "
                     "validation data; layers are upgraded until it holds)."),
    ] = None,
    methods: Annotated[
        str | None, typer.Option(help="Comma-separated methods to explore (default: all; int8 always).")
    ] = None,
    sensitivity: Annotated[
        str, typer.Option(help="auto, exact (run the rest of the network per option) or proxy.")
    ] = "auto",
    sensitivity_samples: Annotated[
        int | None, typer.Option(help="At most this many calibration samples for the sensitivity pass.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write pareto.png/.svg and layers.png/.svg into this directory.")
    ] = None,
    explore: Annotated[
        int | None, typer.Option(help="Budgets swept for the Pareto front (default: 8 with --plot, else 0).")
    ] = None,
    alternatives: Annotated[
        int, typer.Option(help="Best solver solutions compared as whole models on the calibration data.")
    ] = 3,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not reuse cached sensitivities.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Choose a compression method per layer so the model fits the board with the least accuracy lost."""
    from toolkit.planner.plan import save_plan
    from toolkit.planner.report import print_plan, write_plots

    def run() -> tuple[Any, Path, list[Path]]:
        from toolkit.planner.pipeline import PlanRequest, plan_model

        req = PlanRequest(
            model=model, board=board, data=data, calib=calib, flash=_parse_bytes(flash, "flash"),
            ram=_parse_bytes(ram, "ram"), latency_ms=latency_ms, max_drop=max_drop,
            methods=None if methods is None else tuple(m.strip() for m in methods.split(",") if m.strip()),
            sensitivity=sensitivity, sensitivity_samples=sensitivity_samples,
            explore=(8 if plot is not None else 0) if explore is None else explore,
            uniform=plot is not None, alternatives=alternatives, cache=not no_cache)
        with _progress() as progress:
            outcome = plan_model(req, progress)
        spec = save_plan(outcome.plan, out_path)
        plots = write_plots(outcome, plot) if plot is not None else []
        return outcome, spec, plots

    outcome, spec, plots = _guarded(run)
    if as_json:
        _emit_json(jsonout.plan_doc(outcome, out_path, spec, plots))
    else:
        print_plan(out, outcome, out_path, spec, plots)


@app.command()
def fit(
    model: ModelArg,
    data: Annotated[
        str,
        typer.Option(help="Data (digits[:split] or .npz with x, y): split into calibration and held-back "
                     "validation halves unless --calib is given; the held-back samples run on the device."),
    ],
    board: Annotated[
        str, typer.Option(help="A board id or board file (budgets, toolchain, runner), or 'host'.")
    ] = "mps2-an386",
    calib: Annotated[
        str | None, typer.Option(help="Calibration data; then all of --data is held back for validation.")
    ] = None,
    flash: FlashBudget = None,
    ram: RamBudget = None,
    latency_ms: LatencyBudget = None,
    max_drop: Annotated[
        float | None, typer.Option("--max-drop", help="Largest accuracy drop accepted, in points.")
    ] = None,
    samples: Annotated[
        int, typer.Option(help="Held-back samples streamed to the device (0 = all of them).")
    ] = 0,
    port: Annotated[
        str | None, typer.Option(help="Serial link of a real board (pyserial URL: /dev/ttyACM0, socket://…).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output directory: plan.json, plan.spec.toml, plots, "
                                  "firmware/, fit.json (default: build/fit/<model>-<board>).")
    ] = None,
    plots: Annotated[
        bool, typer.Option("--plots/--no-plots", help="Write the plan's plots (needs matplotlib).")
    ] = True,
    as_json: JsonFlag = False,
) -> None:
    """Plan, build, flash or emulate, validate on the device; print predicted against measured."""
    from toolkit.planner.fit import FitRequest, fit_model

    target = out_dir if out_dir is not None else Path("build") / "fit" / f"{model.stem}-{Path(board).stem}"

    def run() -> Any:
        from toolkit.planner.pipeline import PlanRequest

        req = PlanRequest(model=model, board=board, data=data, calib=calib,
                          flash=_parse_bytes(flash, "flash"), ram=_parse_bytes(ram, "ram"),
                          latency_ms=latency_ms, max_drop=max_drop)
        with _progress() as progress:
            return fit_model(FitRequest(req, target, samples=samples, port=port, plots=plots), progress)

    report = _guarded(run)
    doc = jsonout.fit_doc(report)
    (target / "fit.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if as_json:
        _emit_json(doc)
    else:
        tables.print_fit(out, report)
    if not report.ok:
        raise typer.Exit(1)


class _progress:
    """Rich progress bars on stderr, one per stage, fed by the planner's progress callback."""

    def __enter__(self) -> Callable[[str, int, int], None]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=err, transient=True)
        self._bars.__enter__()
        self._tasks: dict[str, Any] = {}
        return self.update

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._bars.add_task(stage, total=total)
        self._bars.update(self._tasks[stage], completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        self._bars.__exit__(None, None, None)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
