"""The result of ``boardfit validate``: typed values, the rich rendering and the JSON document.

:func:`toolkit.validate.validate.validate` fills a :class:`ValidateReport`; the CLI renders it
with :func:`print_report` or turns it into the ``boardfit.validate/1`` document with
:func:`report_doc` (schema in docs/json.md).  Nothing here talks to a device.

Units.  Counts are what the board's timer measured, converted by the runner
(:meth:`targets.runners.Runner.to_count`) into ``counts_unit``:

* ``instructions``: QEMU system emulation with ``-icount`` counts executed instructions,
  exactly and repeatably.  They are **not cycles**: a Cortex-M4 takes 1–3 cycles for most
  instructions, more for loads and branches, and flash wait states add more.  Milliseconds
  "at the board's clock" assume one instruction per cycle: a lower bound of the real latency.
* ``cycles``: a real MCU's core clock (or its timer at core-clock resolution).
* ``nanoseconds``: wall-clock time of a Linux program (``clock_gettime``).  Under qemu-user or
  on the host this is time on *this* machine, neither a Pi's latency nor repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from rich.console import Console
from rich.markup import escape
from rich.table import Table

VALIDATE_SCHEMA: Final = "boardfit.validate/1"

UNIT_NOTES: Final[dict[str, str]] = {
    "instructions": "QEMU -icount instruction counts (deterministic); not cycles: ms assume 1 instruction "
                    "per cycle at the board's clock, a lower bound",
    "cycles": "core clock cycles measured on the board, at the clock the firmware runs at (out of reset; "
              "flash wait states differ at the nominal clock); ms at the board's nominal clock",
    "nanoseconds": "wall-clock time of the program on this machine (emulated or host), not the board's "
                   "latency; not repeatable",
}


@dataclass(frozen=True)
class SizeFigures:
    """The model's bytes as ``boardfit build`` reports them (weights + params + code = flash,
    arena + state + persistent scratch of compressed layers = RAM)."""

    weights_bytes: int
    params_bytes: int
    code_bytes: int
    arena_bytes: int
    state_bytes: int
    persistent_bytes: int = 0

    @property
    def flash_bytes(self) -> int:
        return self.weights_bytes + self.params_bytes + self.code_bytes

    @property
    def ram_bytes(self) -> int:
        return self.arena_bytes + self.state_bytes + self.persistent_bytes

    def to_json(self) -> dict[str, int]:
        return {
            "weights_bytes": self.weights_bytes, "params_bytes": self.params_bytes,
            "code_bytes": self.code_bytes, "flash_bytes": self.flash_bytes,
            "arena_bytes": self.arena_bytes, "state_bytes": self.state_bytes,
            "persistent_bytes": self.persistent_bytes, "ram_bytes": self.ram_bytes,
        }


@dataclass(frozen=True)
class Footprint:
    """Predicted and measured model bytes, the whole firmware image and the board's budget.

    ``image_flash_bytes``/``image_ram_bytes`` are the linked program (runtime, drivers, libc and
    the model; RAM includes the board's stack reservation), or None where the artifact is not
    a sized image.  ``measured_from`` says how ``measured`` was obtained (``image``: sections
    of the linked ELF; ``objects``: sections of the compiled objects)."""

    predicted: SizeFigures
    measured: SizeFigures | None
    measured_from: str
    image_flash_bytes: int | None
    image_ram_bytes: int | None
    flash_budget: int | None
    ram_budget: int | None

    @property
    def flash_bytes(self) -> int:
        return (self.measured or self.predicted).flash_bytes

    @property
    def ram_bytes(self) -> int:
        return (self.measured or self.predicted).ram_bytes


@dataclass(frozen=True)
class Agreement:
    """Device outputs against the host oracle (the TFLite Micro arithmetic the device runs).

    ``inferences`` compared; ``bit_exact`` of them had every output identical to the oracle's;
    ``max_abs_error`` is the largest element difference in the tensors' own units (quantized
    steps for integer outputs)."""

    inferences: int
    bit_exact: int
    elements: int
    mismatched_elements: int
    max_abs_error: float

    @property
    def fraction(self) -> float:
        return self.bit_exact / self.inferences if self.inferences else 0.0

    @property
    def all_exact(self) -> bool:
        return self.inferences > 0 and self.bit_exact == self.inferences


@dataclass(frozen=True)
class CountSummary:
    """Counts per inference in ``unit`` over every inference (mean, min, max)."""

    unit: str
    mean: float
    minimum: float
    maximum: float
    clock_hz: int | None  # the board's real core clock, for the ms conversion

    @property
    def repeatable(self) -> bool:
        return self.minimum == self.maximum

    @property
    def ms(self) -> float | None:
        """Milliseconds per inference: at the board's clock for instructions and cycles."""
        if self.unit == "nanoseconds":
            return self.mean / 1e6
        if self.clock_hz:
            return self.mean / self.clock_hz * 1e3
        return None


@dataclass(frozen=True)
class LayerCount:
    """One op's share of an inference: mean counts over the profiled inferences."""

    op_index: int
    opcode: str
    name: str
    macs: int
    count: float

    def per_mac(self) -> float | None:
        return self.count / self.macs if self.macs else None


@dataclass(frozen=True)
class Divergence:
    """The first op whose output on the device differs from the oracle's (``--layerwise``)."""

    op_index: int
    opcode: str
    tensor: int
    tensor_name: str
    sample: int  # inference number (0-based) where it was first seen
    mismatched: int
    elements: int
    max_abs_error: float


@dataclass(frozen=True)
class Layerwise:
    tensors_compared: int  # intermediate tensors read from the device per inference
    inferences: int
    first_divergence: Divergence | None


@dataclass(frozen=True)
class DeviceSummary:
    """What the device said about itself (INFO) and what the link had to repair."""

    model_hash: str
    plan_hash: str
    arena_bytes: int
    max_payload: int
    debug: bool
    profiled_layers: int
    retransmissions: int
    resyncs: int


@dataclass(frozen=True)
class ValidateReport:
    model: str
    board: str
    board_name: str
    runner: str
    emulated: bool
    data: str
    samples: int  # evaluation samples (sequences for streaming models)
    frames_per_sample: int  # inferences per sample (>1: streaming, reset before each sample)
    labelled: bool
    accuracy: float | None  # device outputs against the data set's labels
    reference_accuracy: float | None  # the TFLite interpreter (reference kernels) on the same data
    oracle_accuracy: float | None  # the host oracle, TFLM arithmetic (what the device must compute)
    interpreter: str  # backend of the reference accuracy
    agreement: Agreement
    counts: CountSummary | None
    per_layer: tuple[LayerCount, ...]
    footprint: Footprint
    device: DeviceSummary
    layerwise: Layerwise | None
    artifact: str
    toolchain: str

    @property
    def ok(self) -> bool:
        """Every inference bit-exact with the oracle and, with --layerwise, every tensor too."""
        div = self.layerwise.first_divergence if self.layerwise is not None else None
        return self.agreement.all_exact and div is None


@dataclass(frozen=True)
class DryRun:
    """What ``validate --dry-run`` would do: the steps in order (commands and boardfit's own work)."""

    model: str
    board: str
    steps: tuple[str, ...]
    commands: tuple[tuple[str, ...], ...]


# ---------------------------------------------------------------------------------------------
# JSON


def _sizes(s: SizeFigures | None) -> dict[str, int] | None:
    return None if s is None else s.to_json()


def report_doc(r: ValidateReport) -> dict[str, Any]:
    """The ``boardfit.validate/1`` document (docs/json.md)."""
    fp = r.footprint
    c = r.counts
    div = r.layerwise.first_divergence if r.layerwise is not None else None
    return {
        "schema": VALIDATE_SCHEMA,
        "model": r.model,
        "board": r.board,
        "runner": r.runner,
        "emulated": r.emulated,
        "data": r.data,
        "samples": r.samples,
        "frames_per_sample": r.frames_per_sample,
        "inferences": r.agreement.inferences,
        "accuracy": r.accuracy,
        "reference_accuracy": r.reference_accuracy,
        "oracle_accuracy": r.oracle_accuracy,
        "interpreter": r.interpreter,
        "agreement": r.agreement.fraction,
        "bit_exact": r.agreement.bit_exact,
        "mismatched_elements": r.agreement.mismatched_elements,
        "max_abs_error": r.agreement.max_abs_error,
        "flash_bytes": fp.flash_bytes,
        "ram_bytes": fp.ram_bytes,
        "predicted": _sizes(fp.predicted),
        "measured": None if fp.measured is None else {**fp.measured.to_json(), "from": fp.measured_from},
        "image": {"flash_bytes": fp.image_flash_bytes, "ram_bytes": fp.image_ram_bytes},
        "budget": {"flash_bytes": fp.flash_budget, "ram_bytes": fp.ram_budget},
        "cycles_per_inference": None if c is None else c.mean,
        "counts_unit": None if c is None else c.unit,
        "counts_min": None if c is None else c.minimum,
        "counts_max": None if c is None else c.maximum,
        "clock_hz": None if c is None else c.clock_hz,
        "ms_per_inference": None if c is None else c.ms,
        "counts_note": None if c is None else UNIT_NOTES.get(c.unit, ""),
        "per_layer": [
            {"op_index": la.op_index, "op": la.opcode, "name": la.name, "macs": la.macs,
             "count": la.count, "per_mac": la.per_mac()}
            for la in r.per_layer
        ],
        "layerwise": None if r.layerwise is None else {
            "tensors_compared": r.layerwise.tensors_compared,
            "inferences": r.layerwise.inferences,
            "first_divergence": None if div is None else {
                "op_index": div.op_index, "op": div.opcode, "tensor": div.tensor,
                "name": div.tensor_name, "sample": div.sample, "mismatched": div.mismatched,
                "elements": div.elements, "max_abs_error": div.max_abs_error,
            },
        },
        "device": {
            "model_hash": r.device.model_hash, "plan_hash": r.device.plan_hash,
            "arena_bytes": r.device.arena_bytes, "max_payload": r.device.max_payload,
            "debug": r.device.debug, "profiled_layers": r.device.profiled_layers,
            "retransmissions": r.device.retransmissions, "resyncs": r.device.resyncs,
        },
        "artifact": r.artifact,
        "toolchain": r.toolchain,
        "ok": r.ok,
    }


def dry_run_doc(d: DryRun) -> dict[str, Any]:
    return {
        "schema": VALIDATE_SCHEMA,
        "dry_run": True,
        "model": d.model,
        "board": d.board,
        "steps": list(d.steps),
        "commands": [list(c) for c in d.commands],
    }


# ---------------------------------------------------------------------------------------------
# Rendering


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f} %"


def _num(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 or v == int(v) else f"{v:,.2f}"


def _kib(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n:,} B" if n < 1024 else f"{n:,} B ({n / 1024:,.1f} KiB)"


def summary_table(r: ValidateReport) -> Table:
    t = Table(title=escape(f"{r.model} on {r.board} ({r.board_name}) via {r.runner}"), title_justify="left")
    t.add_column("")
    t.add_column("value")
    seq = f" × {r.frames_per_sample} frames (reset before each)" if r.frames_per_sample > 1 else ""
    t.add_row("data", escape(f"{r.samples} samples{seq} of {r.data}"))
    t.add_row("accuracy on the device", pct(r.accuracy) if r.labelled else "— (no labels)")
    t.add_row(escape(f"accuracy of the TFLite interpreter ({r.interpreter}, reference kernels)"),
              pct(r.reference_accuracy) if r.labelled else "—")
    t.add_row("accuracy of the host oracle (TFLM arithmetic)", pct(r.oracle_accuracy) if r.labelled else "—")
    a = r.agreement
    verdict = "[green]all bit-exact[/]" if a.all_exact else "[red]differs[/]"
    t.add_row("agreement with the oracle",
              f"{a.bit_exact:,} / {a.inferences:,} inferences bit-exact ({pct(a.fraction)}): {verdict}")
    t.add_row("max |device − oracle|", f"{a.max_abs_error:g} ({a.mismatched_elements:,} of {a.elements:,} "
              "elements differ)")
    c = r.counts
    if c is not None:
        spread = ("identical for every inference" if c.repeatable
                  else f"min {_num(c.minimum)}, max {_num(c.maximum)}: the work depends on the data")
        t.add_row(f"{c.unit} per inference", f"{_num(c.mean)} ({spread})")
        if c.ms is not None:
            where = "" if c.unit == "nanoseconds" else f" at {c.clock_hz / 1e6:g} MHz" if c.clock_hz else ""
            t.add_row("ms per inference", f"{c.ms:,.3f}{where}")
        t.add_row("counts are", escape(UNIT_NOTES.get(c.unit, c.unit)))
    d = r.device
    t.add_row("device", f"model {d.model_hash[:16]}…, arena {d.arena_bytes:,} B, "
              f"{d.retransmissions} retransmissions, {d.resyncs} syncs")
    return t


def footprint_table(r: ValidateReport) -> Table:
    fp = r.footprint
    t = Table(title="flash and RAM (model bytes as boardfit build counts them)", title_justify="left")
    t.add_column("")
    t.add_column("predicted", justify="right")
    t.add_column(f"measured ({fp.measured_from})" if fp.measured else "measured", justify="right")
    measured = fp.measured.to_json() if fp.measured else {}
    for key, value in fp.predicted.to_json().items():
        got = measured.get(key)
        t.add_row(key.removesuffix("_bytes"), f"{value:,}", "" if got is None else f"{got:,}")
    t.add_row("whole image: flash", "", _kib(fp.image_flash_bytes))
    t.add_row("whole image: RAM (with stack)", "", _kib(fp.image_ram_bytes))
    t.add_row("board budget: flash / RAM", "", f"{_kib(fp.flash_budget)} / {_kib(fp.ram_budget)}")
    return t


def layer_table(r: ValidateReport) -> Table | None:
    if not r.per_layer or r.counts is None:
        return None
    unit = r.counts.unit
    total = sum(la.count for la in r.per_layer) or 1.0
    t = Table(title=f"per layer ({unit} per inference, mean)", title_justify="left")
    for col in ("#", "op", "tensor", "MACs", unit, "share", f"{unit} per MAC"):
        t.add_column(col, justify="left" if col in ("op", "tensor") else "right",
                     max_width=36 if col == "tensor" else None, no_wrap=col == "tensor")
    for la in r.per_layer:
        per = la.per_mac()
        t.add_row(str(la.op_index), la.opcode, escape(la.name), f"{la.macs:,}", _num(la.count),
                  f"{100 * la.count / total:.1f} %", "—" if per is None else f"{per:.2f}")
    return t


def print_report(console: Console, r: ValidateReport) -> None:
    console.print(summary_table(r))
    console.print(footprint_table(r))
    layers = layer_table(r)
    if layers is not None:
        console.print(layers)
    if r.layerwise is not None:
        div = r.layerwise.first_divergence
        if div is None:
            console.print(f"--layerwise: all {r.layerwise.tensors_compared} intermediate tensors agree with "
                          f"the oracle on {r.layerwise.inferences} inferences")
        else:
            console.print(escape(
                f"--layerwise: first diverging layer: #{div.op_index} {div.opcode} (tensor {div.tensor} "
                f"{div.tensor_name}): {div.mismatched} of {div.elements} elements differ, max "
                f"|diff| {div.max_abs_error:g}, first at inference {div.sample}"), style="red")
    console.print(escape(f"firmware: {r.artifact} ({r.toolchain})"))
    console.print("[green]OK[/]: the device computes exactly what the oracle computes" if r.ok
                  else "[red]MISMATCH[/]: the device's results differ from the oracle's")


def print_dry_run(console: Console, d: DryRun) -> None:
    console.print(escape(f"# dry run: validate {d.model} on {d.board}; nothing was built, started or run"))
    for step in d.steps:
        console.print(escape(step), soft_wrap=True, highlight=False)


def layer_counts(ops: Sequence[tuple[int, str, str, int]], counts: Sequence[float]) -> tuple[LayerCount, ...]:
    """Pair ``(op_index, opcode, name, macs)`` rows with mean counts indexed by op index."""
    return tuple(LayerCount(i, op, name, macs, counts[i]) for i, op, name, macs in ops if i < len(counts))
