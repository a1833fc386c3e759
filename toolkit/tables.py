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
