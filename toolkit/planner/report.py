"""How a plan is shown: a rich table for the terminal and matplotlib figures (PNG and SVG).

* :func:`print_plan` — per layer the chosen method, kernel, bytes, scratch, MACs and the loss
  it costs alone; then the budgets against the predicted footprint, the accuracy of the whole
  compressed model on the validation samples, and which samples were used for what;
* :func:`plot_pareto` — validation accuracy (top-1 agreement with the original model when there
  are no labels) against flash for every plan explored: the budgets of the sweep (their
  non-dominated points joined as the Pareto front), the uniform policies, the chosen plan, and
  the flash budget;
* :func:`plot_layers` — per layer the planned bytes coloured by method beside the dense int8
  layer's bytes, and for each explored uniform policy and the plan the layer bytes stacked by
  method.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from toolkit.planner.plan import Plan, SampleSet

if TYPE_CHECKING:
    from toolkit.planner.pipeline import Explored, PlanOutcome

_NAME_CHARS = 24
METHOD_COLOURS = {
    "int8": "#9e9e9e", "quant": "#1f77b4", "kmeans": "#2ca02c", "prune": "#d62728",
    "prune_structured": "#ff7f0e", "binary": "#9467bd", "lowrank": "#8c564b",
}


def short_name(name: str) -> str:
    """The last part of a converter-made op name (``a/b/Relu;a/b/MatMul`` → ``b/Relu``), cut."""
    first = name.split(";")[0]
    parts = first.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else first
    return short if len(short) <= _NAME_CHARS else "…" + short[-(_NAME_CHARS - 1):]


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f} %"


def _bytes(v: int | None) -> str:
    return "—" if v is None else f"{v:,}"


_OPS = {"FULLY_CONNECTED": "FC", "CONV_2D": "CONV", "DEPTHWISE_CONV_2D": "DW"}


def _kernel(symbol: str) -> str:
    return symbol.removeprefix("bf_").removesuffix("_s8")


def plan_table(plan: Plan) -> Table:
    t = Table(title=escape(f"plan for {Path(plan.model).name} on {plan.board}"), title_justify="left")
    for col, right in (("#", True), ("layer", False), ("op", False), ("setting", False), ("kernel", False),
                       ("flash B", True), ("RAM B", True), ("MACs", True), ("loss alone", True),
                       ("acc. alone", True)):
        t.add_column(col, justify="right" if right else "left", overflow="fold")
    for layer in plan.layers:
        loss = f"{layer.predicted_loss:.4f}" + ("" if layer.loss_measured else "*")
        ram = layer.scratch_bytes + layer.persistent_ram_bytes
        variant = "" if layer.variant == "ref" else f" ({layer.variant})"
        t.add_row(str(layer.op_index), escape(short_name(layer.name)), _OPS.get(layer.opcode, layer.opcode),
                  escape(layer.setting.label), _kernel(layer.kernel) + variant,
                  f"{layer.flash_bytes + layer.params_bytes:,}", f"{ram:,}", f"{layer.macs:,}", loss,
                  _pct(layer.predicted_accuracy))
    return t


def _fit_table(plan: Plan) -> Table:
    b, tot = plan.budgets, plan.totals
    t = Table(title="footprint", title_justify="left")
    for col in ("", "budget", "predicted"):
        t.add_column(col, justify="left" if not col else "right")
    t.add_row("flash (weights + params + code)", f"{_bytes(b.flash_bytes)} ({b.flash_from})",
              f"{tot.predicted_flash_bytes:,}")
    t.add_row("RAM (arena + state + tables)", f"{_bytes(b.ram_bytes)} ({b.ram_from})",
              f"{tot.predicted_ram_bytes:,}")
    lat = "uncalibrated" if tot.predicted_latency_ms is None else f"{tot.predicted_latency_ms:.3f} ms"
    t.add_row("latency", "—" if b.latency_ms is None else f"{b.latency_ms:g} ms", lat)
    return t


def _samples(s: SampleSet | None, fallback: str) -> str:
    if s is None:
        return fallback
    which = "all samples" if s.indices is None else f"indices {_ranges(s.indices)}"
    return f"{s.count} samples of {s.source} ({which})"


def _ranges(indices: Sequence[int], limit: int = 6) -> str:
    """``0-3, 7, 9-12, …`` (first ``limit`` runs)."""
    runs: list[str] = []
    start = prev = None
    for i in indices:
        if start is None:
            start = prev = i
        elif prev is not None and i == prev + 1:
            prev = i
        else:
            runs.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = i
    if start is not None:
        runs.append(f"{start}" if start == prev else f"{start}-{prev}")
    more = ", …" if len(runs) > limit else ""
    return ", ".join(runs[:limit]) + more


def print_plan(console: Console, outcome: PlanOutcome, plan_path: Path | None = None,
               spec_path: Path | None = None, plots: Sequence[Path] = ()) -> None:
    plan = outcome.plan
    tot = plan.totals
    console.print(plan_table(plan))
    if any(not layer.loss_measured for layer in plan.layers):
        console.print("* predicted from the layer's output error (proxy sensitivity)")
    console.print(_fit_table(plan))
    ref = "float model" if plan.float_model else "int8 model"
    if tot.drop_metric == "accuracy":
        acc = (f"validation accuracy {_pct(tot.predicted_accuracy)} (simulated, whole compressed model); "
               f"{ref} {_pct(tot.reference_accuracy)}")
    elif tot.drop_metric == "agreement":
        acc = f"top-1 agreement with the original model {_pct(tot.predicted_agreement)} (no labels)"
    else:
        acc = f"output error {_pct(tot.validation_loss)} of the output's power (not a classifier, no labels)"
    console.print(escape(acc))
    if tot.predicted_drop is not None:
        limit = plan.budgets.max_drop
        verdict = ""
        if limit is not None:
            verdict = (" — meets --max-drop" if tot.meets_max_drop else
                       f" — [red]exceeds --max-drop {limit:g}[/]: the budget allows no better mix")
        unit = "points" if tot.drop_metric != "output error" else "% output error"
        console.print(f"drop: {tot.predicted_drop:.2f} {unit}{verdict}")
    for r in plan.solver.get("repairs", []):
        console.print(escape(f"repaired layer {r['layer']} ({r['from']}): drop {r['drop_before']:.2f} → "
                             f"{r['drop_after']:.2f} points"))
    console.print(escape(f"calibration: {_samples(plan.calibration, '—')}"))
    no_val = "the calibration samples (no held-back data)"
    console.print(escape("validation: " + _samples(plan.validation, no_val)))
    s = plan.sensitivity
    console.print(f"sensitivity: {s.get('options')} options on {s.get('samples')} samples, {s.get('mode')} "
                  f"({s.get('seconds')} s, {s.get('cached')} from cache)")
    if plan_path is not None:
        console.print(escape(f"wrote {plan_path}" + (f" and {spec_path}" if spec_path else "")))
    for p in plots:
        console.print(escape(f"plot: {p}"))


# ---------------------------------------------------------------------------------------------
# Plots.


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _metric(e: Explored) -> float:
    """Accuracy; without labels top-1 agreement, or for other outputs fidelity 1 − rel. error (%)."""
    m = e.metrics
    if m.accuracy is not None:
        return 100 * m.accuracy
    return 100 * (m.agreement if m.classifier else 1.0 - m.loss)


def pareto_front(points: Sequence[Explored]) -> list[Explored]:
    """The points no other point beats on both flash (smaller) and accuracy (higher)."""
    front: list[Explored] = []
    best = float("-inf")
    for e in sorted(points, key=lambda e: (e.flash_bytes, -_metric(e))):
        if _metric(e) > best:
            front.append(e)
            best = _metric(e)
    return front


def plot_pareto(outcome: PlanOutcome, out_dir: Path) -> list[Path]:
    plt = _pyplot()
    plan = outcome.plan
    labelled = plan.totals.predicted_accuracy is not None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    sweep = [e for e in outcome.explored if e.kind in ("sweep", "chosen")]
    if sweep:
        ax.scatter([e.flash_bytes / 1024 for e in sweep], [_metric(e) for e in sweep], s=18, color="#1f77b4",
                   alpha=0.6, label="explored plans")
        front = pareto_front(sweep)
        ax.plot([e.flash_bytes / 1024 for e in front], [_metric(e) for e in front], color="#1f77b4",
                lw=1.2, label="Pareto front")
    for e in outcome.explored:
        if e.kind == "uniform":
            ax.scatter([e.flash_bytes / 1024], [_metric(e)], marker="s", s=36, color="#ff7f0e",
                       edgecolor="black" if e.fits else "none")
            ax.annotate(e.label + ("" if e.fits else " (over budget)"), (e.flash_bytes / 1024, _metric(e)),
                        textcoords="offset points", xytext=(5, -10), fontsize=7)
    chosen = [e for e in outcome.explored if e.kind == "chosen"]
    if chosen:
        ax.scatter([chosen[0].flash_bytes / 1024], [_metric(chosen[0])], marker="*", s=200, color="#d62728",
                   zorder=5, label="chosen plan")
    if plan.budgets.flash_bytes is not None:
        ax.axvline(plan.budgets.flash_bytes / 1024, color="gray", ls="--", lw=1, label="flash budget")
    ax.scatter([], [], marker="s", color="#ff7f0e", label="uniform policies")
    ax.set_xlabel("flash (KiB): weights + params + kernel code")
    metric = plan.totals.drop_metric
    ax.set_ylabel("validation accuracy (%)" if labelled else "top-1 agreement with the original (%)"
                  if metric == "agreement" else "output fidelity: 100 − relative error (%)")
    ax.set_title(f"{Path(plan.model).name} on {plan.board}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out_dir, "pareto")


def plot_layers(outcome: PlanOutcome, out_dir: Path) -> list[Path]:
    plt = _pyplot()
    plan = outcome.plan
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [3, 2]})
    names = [f"{layer.op_index} {short_name(layer.name)}" for layer in plan.layers]
    chosen = [layer.flash_bytes for layer in plan.layers]
    int8 = _int8_bytes(outcome)
    y = range(len(names))
    ax1.barh([v + 0.2 for v in y], [int8.get(layer.op_index, 0) for layer in plan.layers], height=0.4,
             color="#dddddd", edgecolor="#999999", label="int8 (dense)")
    colours = [METHOD_COLOURS.get(layer.method, "#333333") for layer in plan.layers]
    ax1.barh([v - 0.2 for v in y], chosen, height=0.4, color=colours, label="plan (by method)")
    for v, layer in zip(y, plan.layers, strict=True):
        ax1.annotate(layer.setting.label, (layer.flash_bytes, v - 0.2), xytext=(3, -3),
                     textcoords="offset points", fontsize=6)
    ax1.set_yticks(list(y), names, fontsize=6)
    ax1.invert_yaxis()
    ax1.set_xlabel("flash bytes of the layer (weights, tables, bias, requantization)")
    ax1.legend(fontsize=7, loc="lower right")
    ax1.set_title("per layer")
    stacks = [e for e in outcome.explored if e.kind in ("uniform", "chosen")]
    methods = sorted({m for e in stacks for m in e.methods_bytes})
    bottoms = [0.0] * len(stacks)
    for m in methods:
        vals = [e.methods_bytes.get(m, 0) / 1024 for e in stacks]
        ax2.bar(range(len(stacks)), vals, bottom=bottoms, color=METHOD_COLOURS.get(m, "#333333"), label=m)
        bottoms = [b + v for b, v in zip(bottoms, vals, strict=True)]
    ax2.set_xticks(range(len(stacks)), [e.label for e in stacks], rotation=30, ha="right", fontsize=7)
    ax2.set_ylabel("layer bytes (KiB)")
    ax2.set_title("layer bytes by method")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out_dir, "layers")


def _int8_bytes(outcome: PlanOutcome) -> dict[int, int]:
    out: dict[int, int] = {}
    for layer in outcome.sensitivity.layers:
        for c in layer.candidates:
            if c.setting.method == "int8":
                out[layer.op_index] = c.option.flash_bytes
    return out


def _save(fig: object, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    for p in paths:
        # No date in the SVG, so the same plan draws the same file.
        meta = {"Date": None} if p.suffix == ".svg" else {}
        fig.savefig(p, dpi=130, bbox_inches="tight", metadata=meta)  # type: ignore[attr-defined]
    import matplotlib.pyplot as plt

    plt.close(fig)  # type: ignore[arg-type]
    return paths


def write_plots(outcome: PlanOutcome, out_dir: Path) -> list[Path]:
    """Both figures as PNG and SVG in ``out_dir``; returns the paths written."""
    return [*plot_pareto(outcome, out_dir), *plot_layers(outcome, out_dir)]
