"""Rich tables for the CLI's human-readable output."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from toolkit.boards import Board
    from toolkit.build import BoardBuild
    from toolkit.compress.pipeline import CompressReport
    from toolkit.model.summary import GraphSummary
    from toolkit.planner.fit import FitReport
    from toolkit.planner.plan import SampleSet
    from toolkit.validate.report import ValidateReport
    from toolkit.verify import TensorComparison, VerifyReport


def _shape(shape: Sequence[int]) -> str:
    return "×".join(str(d) for d in shape) if shape else "scalar"


def kib(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):,.1f} MiB"
    return f"{n / 1024:,.1f} KiB" if n >= 1024 else f"{n} B"


def boards_table(boards: Sequence[Board]) -> Table:
    t = Table(title="Boards", title_justify="left")
    for col in ("id", "core", "clock", "flash budget", "RAM budget", "features", "run with"):
        t.add_column(col, justify="right" if col in ("clock", "flash budget", "RAM budget") else "left")
    for b in boards:
        t.add_row(
            b.id,
            b.core,
            f"{b.clock_hz / 1e6:g} MHz" if b.clock_hz else "host",
            kib(b.flash_budget),
            kib(b.ram_budget),
            " ".join(b.features),
            b.runner_summary,
        )
    return t


def print_inspect(console: Console, s: GraphSummary, path: Path) -> None:
    t = Table(title=f"{path.name}: {len(s.layers)} layers", title_justify="left")
    for col in ("#", "op", "in → out", "dtype", "params", "MACs", "weights", "activations", "ok"):
        t.add_column(col, justify="right" if col in ("#", "params", "MACs", "weights", "activations")
                     else "left")
    for layer in s.layers:
        shapes = ", ".join(_shape(x) for x in layer.input_shapes[:1]) + " → " + ", ".join(
            _shape(x) for x in layer.output_shapes
        )
        t.add_row(
            str(layer.index),
            layer.opcode,
            shapes,
            layer.dtype,
            f"{layer.parameters:,}",
            f"{layer.macs:,}",
            kib(layer.weight_bytes),
            kib(layer.activation_bytes),
            "[green]yes[/]" if layer.supported else "[red]no[/]",
        )
    console.print(t)
    ins = ", ".join(f"{n} {_shape(sh)} {dt}" for n, sh, dt in s.input_specs)
    outs = ", ".join(f"{n} {_shape(sh)} {dt}" for n, sh, dt in s.output_specs)
    console.print(f"inputs: {ins}\noutputs: {outs}")
    console.print(
        f"total: {s.total_macs:,} MACs, {s.total_parameters:,} parameters, "
        f"{kib(s.total_weight_bytes)} of weights, largest activation {kib(s.largest_activation_bytes)}"
        + (f", {kib(s.state_bytes)} of state" if s.state_bytes else "")
    )
    if s.unsupported:
        console.print(f"[red]unsupported ops:[/] {', '.join(s.unsupported)}")
    else:
        console.print("[green]every op is supported[/]")


def _cmp_row(t: Table, label: str, c: TensorComparison) -> None:
    exact = c.dtype not in ("float32", "float16")
    verdict = ("bit-exact" if c.bit_exact else "[red]differs[/]") if exact else (
        "within tolerance" if c.ok else "[red]out of tolerance[/]")
    t.add_row(
        label, c.name, c.dtype, f"{c.elements:,}", f"{c.mismatched:,}", f"{c.max_abs_diff:.3g}", verdict
    )


def print_verify(console: Console, r: VerifyReport, path: Path) -> None:
    t = Table(title=f"{path.name}: oracle vs {r.backend} reference kernels", title_justify="left")
    for col in ("output", "tensor", "dtype", "elements", "differing", "max |diff|", "verdict"):
        t.add_column(col)
    for k, c in enumerate(r.outputs):
        _cmp_row(t, str(k), c)
    console.print(t)
    console.print(f"inputs: {r.input_source}")
    if r.layers_compared:
        if r.first_divergence is None:
            console.print(f"all {r.layers_compared} layers' outputs agree")
        else:
            d = r.first_divergence
            console.print(f"[red]first diverging layer:[/] #{d.op_index} {d.opcode} "
                          f"(tensor {d.comparison.name}, {d.comparison.mismatched} elements differ)")
    console.print("[green]OK[/]" if r.ok else "[red]MISMATCH[/]")


def print_build(console: Console, b: BoardBuild, path: Path, out_dir: Path) -> None:
    r = b.report
    t = Table(title=f"{path.name} for {b.target}: {out_dir}", title_justify="left")
    t.add_column("")
    t.add_column("predicted", justify="right")
    t.add_column(f"measured ({r.measured_from})" if r.measured else "measured", justify="right")
    measured = r.measured.to_json() if r.measured else {}
    for key, value in r.predicted.to_json().items():
        got = measured.get(key)
        t.add_row(key.removesuffix("_bytes"), f"{value:,}", "" if got is None else f"{got:,}")
    console.print(t)
    console.print(f"built {b.artifact}")


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f} %"


def print_compress(console: Console, r: CompressReport, out_dir: Path) -> None:
    from rich.markup import escape

    t = Table(title=escape(f"{Path(r.model).name} compressed: {out_dir}"), title_justify="left")
    for col in ("#", "layer", "op", "method", "setting", "kernel", "bytes before", "bytes after", "ratio"):
        t.add_column(col, justify="right" if col in ("#", "bytes before", "bytes after", "ratio") else "left")
    for layer in r.layers:
        params = ", ".join(f"{k}={v}" for k, v in layer.setting.params) or "—"
        ratio = layer.bytes_before / layer.bytes_after if layer.bytes_after else 0.0
        t.add_row(str(layer.op_index), escape(layer.name), layer.opcode, layer.setting.method, escape(params),
                  layer.kernel,
                  f"{layer.bytes_before:,}", f"{layer.bytes_after:,}", f"{ratio:.2f}×")
    ratio = r.bytes_before / r.bytes_after if r.bytes_after else 0.0
    t.add_row("", "total", "", "", "", "", f"{r.bytes_before:,}", f"{r.bytes_after:,}", f"{ratio:.2f}×")
    console.print(t)
    if r.test_samples:
        a = Table(title=escape(f"accuracy on {r.test_samples} held-out samples ({r.test})"),
                  title_justify="left")
        for col in ("float", "int8 original", "compressed (host simulation)",
                    "exported .tflite (interpreter)"):
            a.add_column(col, justify="right")
        a.add_row(_pct(r.accuracy_float), _pct(r.accuracy_int8), _pct(r.accuracy_compressed),
                  _pct(r.accuracy_exported))
        console.print(a)
    console.print(escape(f"calibration: {r.calibration or 'none (no accuracy recovery)'}"))
    if r.export_path is not None:
        kept = escape(", ".join(r.not_exportable))
        exact = "exact" if not r.not_exportable else f"NOT exact: {kept} kept as in the original"
        share = r.export_identical_outputs
        same = "" if share is None else f"; outputs identical to the simulation on {100 * share:.1f} %"
        console.print(f"exported {escape(r.export_path)} ({exact}{same})")


def print_validate(console: Console, r: ValidateReport) -> None:
    """``boardfit validate``: summary, flash/RAM, per-layer counts (toolkit/validate/report.py)."""
    from toolkit.validate.report import print_report

    print_report(console, r)


# ---------------------------------------------------------------------------------------------
# boardfit fit


def _b(v: int | None) -> str:
    return "—" if v is None else f"{v:,}"


def _check(ok: bool | None, yes: str, no: str) -> str:
    if ok is None:
        return "—"
    return f"[green]{yes}[/]" if ok else f"[red]{no}[/]"


def _runs(indices: Sequence[int], limit: int = 6) -> str:
    """``0-3, 7, 9-12, …`` (the first ``limit`` runs of consecutive indices)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit]]
    return ", ".join(text) + (", …" if len(runs) > limit else "")


def _which(s: SampleSet) -> str:
    what = "all of it" if s.indices is None else f"indices {_runs(s.indices)}"
    return f"{s.count} samples of {s.source} ({what})"


_METRIC_LABEL = {"accuracy": "accuracy", "agreement": "top-1 agreement with the original model",
                 "output error": "output error (% of the output's power)"}


def _fit_rows(t: Table, r: FitReport) -> None:
    checks = r.checks()
    p, m = r.predicted, r.measured
    t.add_row("flash (weights + params + code)", _b(r.flash_budget), _b(r.predicted_flash_bytes),
              _b(r.measured_flash_bytes), _check(checks["fits_flash"], "fits", "OVER BUDGET"))
    t.add_row("  weights", "", _b(p.weights_bytes), _b(None if m is None else m.weights_bytes),
              _check(checks["weights_exact"], "exact", "differs"))
    t.add_row("  params", "", _b(p.params_bytes), _b(None if m is None else m.params_bytes),
              _check(checks["params_within_bound"], "≤ predicted", "over the bound"))
    code_note = "—"
    if m is not None and p.code_bytes:
        dev = 100.0 * (m.code_bytes - p.code_bytes) / p.code_bytes
        code_note = _check(checks["code_within_10_percent"], f"{dev:+.1f} %", f"{dev:+.1f} %")
    t.add_row("  code (kernels + model.c)", "", _b(p.code_bytes), _b(None if m is None else m.code_bytes),
              code_note)
    ram_note = "—"
    if checks["fits_ram"] is False:
        ram_note = "[red]OVER BUDGET[/]"
    elif m is not None:
        extra = m.ram_bytes - p.ram_bytes
        ram_note = "[green]fits, exact[/]" if checks["ram_exact"] else f"[yellow]fits; {extra:+,} B[/]"
    t.add_row("RAM (arena + state + tables)", _b(r.ram_budget), _b(r.predicted_ram_bytes),
              _b(r.measured_ram_bytes), ram_note)
    pred, meas = r.metric_points()
    delta = "—"
    if pred is not None and meas is not None:
        diff = f"{meas - pred:+.2f} points"
        delta = _check(checks["accuracy_within_0_5_points"], diff, diff)
    val = r.plan.validation
    on = f"{r.samples} held-back samples" if r.all_held_back or val is None else \
        f"device: {r.samples}, plan: all {val.count} held-back samples"
    t.add_row(f"{_METRIC_LABEL.get(r.metric, r.metric)} ({on})", "",
              "—" if pred is None else f"{pred:.2f} %", "—" if meas is None else f"{meas:.2f} %", delta)
    b = r.plan.budgets.latency_ms
    c = r.counts
    lat = "—" if c is None or c.ms is None else f"{c.ms:.3f} ms ({c.mean:,.0f} {c.unit})"
    pl = r.predicted_latency_ms
    t.add_row("latency per inference", "—" if b is None else f"{b:g} ms",
              "uncalibrated" if pl is None else f"{pl:.3f} ms", lat,
              "—" if pl is None or c is None or c.ms is None else f"{100 * (c.ms - pl) / pl:+.1f} %")


def print_fit(console: Console, r: FitReport) -> None:
    """``boardfit fit``: the plan, then predicted against measured on the board, and the verdict."""
    from rich.markup import escape

    from toolkit.planner.report import print_plan
    from toolkit.validate.report import UNIT_NOTES

    if r.outcome is not None:
        print_plan(console, r.outcome, r.plan_file, r.spec_file, r.plots)
    where = "emulated" if r.emulated else ("this machine" if r.board == "host" else "device")
    t = Table(title=escape(f"predicted vs measured: {Path(r.model).name} on {r.board} ({where}, {r.runner})"),
              title_justify="left")
    for col in ("", "budget", "predicted (plan)", "measured (device)", "check"):
        t.add_column(col, justify="left" if col in ("", "check") else "right")
    _fit_rows(t, r)
    console.print(t)
    if r.image_flash_bytes is not None:
        console.print(f"whole image (runtime, drivers, libc and model): flash {r.image_flash_bytes:,} B "
                      f"({kib(r.image_flash_bytes)}), RAM {r.image_ram_bytes or 0:,} B with the stack")
    a = r.agreement
    differ = ""
    if not a.all_exact:
        differ = f" ({a.mismatched_elements:,} elements differ, max |Δ| {a.max_abs_error:g})"
    console.print(f"agreement: {a.bit_exact} / {a.inferences} inferences bit-exact with the compressed "
                  f"model's host simulation{differ}")
    if r.counts is not None:
        console.print(escape(f"counts: {UNIT_NOTES.get(r.counts.unit, r.counts.unit)}"))
    if r.plan.totals.reference_accuracy is not None and r.measured_accuracy is not None:
        ref = "float" if r.plan.float_model else "int8"
        console.print(f"{ref} model on the validation samples: "
                      f"{100 * r.plan.totals.reference_accuracy:.2f} %; on the device: "
                      f"{100 * r.measured_accuracy:.2f} %")
    console.print(escape(f"calibration and planning: {_which(r.plan.calibration)}"))
    console.print(escape(f"validated on the device: {_which(r.streamed)}"))
    console.print(escape(f"firmware: {r.firmware} ({r.toolchain})"))
    if r.ok:
        console.print(f"[green]OK[/]: fits {r.board} and the device computes exactly what the plan simulated")
    elif not r.fits:
        console.print(f"[red]DOES NOT FIT[/]: the measured footprint exceeds the plan's budget on {r.board}")
    else:
        console.print("[red]MISMATCH[/]: the device's outputs differ from the host simulation")
