"""Instructions per inference on the emulated Cortex-M0, M4 and M7, beside published latencies.

    python bench/mcu_latency.py [--models a,b] [--boards microbit,mps2-an386,mps2-an500]
                                [--repeat 3] [--json]

Each example model (the digits models and the four MLPerf Tiny-shaped models) is built into
boardfit's firmware for each emulated board it fits (``microbit``: Cortex-M0 with 16 KiB RAM,
``mps2-an386``: Cortex-M4F, ``mps2-an500``: Cortex-M7), run in QEMU 7.2 with ``-icount`` and
driven over the serial link exactly as ``boardfit validate`` does: the count of one inference
is the SysTick (TIMER0 on the micro:bit) difference around ``bf_model_invoke()``, converted to
instructions.  Every inference is repeated ``--repeat`` times (counts must be identical) and
its output must be bit-identical with the host oracle's, so the counted code computed the
right answer.

**Instruction counts are not cycles.**  QEMU executes one instruction per tick of virtual time;
a real Cortex-M4 spends 1 cycle on most ALU instructions, 2 on loads, 1–3 on branches and more
on flash wait states (5 on the STM32L4R5 at 120 MHz, partly hidden by its ART cache).  The
``ms`` columns divide instructions by each real board's clock, i.e. assume one instruction per
cycle: a lower bound of the latency on that board, not a measurement of it.  Real boards:
``microbit`` (nRF51822, 16 MHz) for the M0; ``nucleo-l4r5zi`` (STM32L4R5, 120 MHz, the MLPerf
Tiny reference board) for the M4; ``stm32f746-disco`` (216 MHz) for the M7.

Beside ours (sources in the tables, figures in shared/ANCHORS.md):

* MLPerf Tiny on the STM32L4R5 at 120 MHz: the v0.5 reference (TFLite Micro 2.3.1 +
  CMSIS-NN) and the best v1.1 submissions (X-CUBE-AI 8.1, Plumerai), in ms;
* TFLite Micro measured on ``mps2-an386`` with the same QEMU method (reference kernels and
  CMSIS-NN) on an MLP 784-300-100-10 and LeNet-5.  Our digits models are smaller than those
  (8×8 inputs), so the comparison is in instructions per MAC, which depends far less on size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from toolkit.boards import load_board  # noqa: E402
from toolkit.errors import BoardfitError, DoesNotFit  # noqa: E402

MODELS_DIR = ROOT / "examples" / "models"
MODELS = ("digits_mlp_int8", "digits_cnn_int8", "digits_stream_int8", "kws_dscnn_int8",
          "vww_mobilenet_int8", "ic_resnet8_int8", "ad_autoencoder_int8")
# emulated board -> the real board whose clock converts its counts to ms
EMULATED = {"microbit": "microbit", "mps2-an386": "nucleo-l4r5zi", "mps2-an500": "stm32f746-disco"}

SOURCE_MLPERF = ("MLPerf Tiny on STM32L4R5 (NUCLEO-L4R5ZI, Cortex-M4F at 120 MHz), int8: reference = "
                 "v0.5 reference submission (TFLite Micro 2.3.1 + CMSIS-NN); X-CUBE-AI 8.1 and Plumerai "
                 "= v1.1 closed-division results (shared/ANCHORS.md)")
# model -> (task, reference ms, X-CUBE-AI ms, Plumerai ms)
MLPERF_MS: dict[str, tuple[str, float, float, float]] = {
    "kws_dscnn_int8": ("keyword spotting, DS-CNN", 181.9, 62.9, 47.8),
    "vww_mobilenet_int8": ("visual wake words, MobileNetV1-0.25", 600.6, 118.7, 98.8),
    "ic_resnet8_int8": ("image classification, ResNet-8", 704.2, 214.0, 167.8),
    "ad_autoencoder_int8": ("anomaly detection, FC autoencoder", 10.05, 6.86, 4.05),
}
SOURCE_TFLM = ("TFLite Micro (2026 HEAD) on mps2-an386 in QEMU 7.2, -icount shift=6, arm-none-eabi-gcc "
               "12.2, kernels -O2, runtime -Os, SysTick re-zeroed per Invoke() (shared/ANCHORS.md, "
               "measured on this kind of machine)")


@dataclass(frozen=True)
class TflmAnchor:
    model: str
    macs: int
    reference_instr: int
    cmsis_nn_instr: int
    compare_with: str  # our model of the same kind


TFLM_ANCHORS = (
    TflmAnchor("MLP 784-300-100-10", 266_200, 1_623_163, 524_361, "digits_mlp_int8"),
    TflmAnchor("LeNet-5 (conv 20@5x5, conv 50@5x5, FC 800-500-10)", 2_293_000, 30_534_068, 5_528_660,
               "digits_cnn_int8"),
)


@dataclass(frozen=True)
class Measurement:
    model: str
    board: str
    macs: int
    fits: bool
    reason: str = ""  # why not measured (does not fit: bytes needed and available)
    instructions: float | None = None
    repeatable: bool | None = None
    bit_exact: bool | None = None
    real_board: str = ""
    real_clock_hz: int | None = None
    flash_bytes: int | None = None
    ram_bytes: int | None = None

    @property
    def per_mac(self) -> float | None:
        return None if self.instructions is None or not self.macs else self.instructions / self.macs

    @property
    def ms_at_real_clock(self) -> float | None:
        if self.instructions is None or not self.real_clock_hz:
            return None
        return self.instructions / self.real_clock_hz * 1e3


def _input(graph: Any, model: str, rng: np.random.Generator) -> np.ndarray:
    """A digits test image for the digits models, else random codes over the input's range."""
    t = graph.input_tensors[0]
    if model.startswith("digits"):
        from toolkit.datasets import load_dataset

        return np.asarray(load_dataset("digits:test", graph).x[0]).reshape(t.shape)
    info = np.iinfo(t.dtype.numpy)
    return rng.integers(info.min, info.max, size=t.shape, endpoint=True).astype(t.dtype.numpy)


def measure(model: str, board_id: str, repeat: int, work_dir: Path) -> Measurement:
    from toolkit.model.summary import summarize
    from toolkit.oracle import Oracle
    from toolkit.validate.validate import (
        ValidateOptions,
        build_device_program,
        connect,
        device_port,
        make_board_runner,
        precheck,
        read_model,
    )

    graph, _ = read_model(MODELS_DIR / f"{model}.tflite")
    board = load_board(board_id)
    real = load_board(EMULATED[board_id])
    macs = summarize(graph).total_macs
    base = Measurement(model, board_id, macs, fits=True, real_board=real.id, real_clock_hz=real.clock_hz)
    try:
        precheck(graph, board)
        program = build_device_program(graph, board, work_dir / f"{model}-{board_id}", debug=False,
                                       profile_layers=False)
    except DoesNotFit as exc:
        return replace(base, fits=False, reason=str(exc))
    x = _input(graph, model, np.random.default_rng(0))
    runner = make_board_runner(board, ValidateOptions(Path(model), board_id, "-"))
    oracle = Oracle(graph)
    expected = oracle.run([x]).outputs
    counts: list[float] = []
    exact = True
    with device_port(runner, program.artifact, None) as port:
        link = connect(port, program, graph.is_stateful, invoke_timeout=600.0)
        for _ in range(repeat):
            if graph.is_stateful:
                link.reset_model()
            result = link.run([x])
            counts.append(runner.to_count(result.count))
            exact = exact and all(np.array_equal(a, b) for a, b in zip(result.outputs, expected, strict=True))
    fp = program.footprint
    return replace(base, instructions=counts[0], repeatable=len(set(counts)) == 1, bit_exact=exact,
                   flash_bytes=fp.flash_bytes, ram_bytes=fp.ram_bytes)


# ---------------------------------------------------------------------------------------------
# Tables


def _f(v: float | None, fmt: str = "{:,.0f}") -> str:
    return "—" if v is None else fmt.format(v)


def counts_table(rows: Sequence[Measurement], boards: Sequence[str]) -> Table:
    t = Table(title="boardfit firmware: instructions per inference (QEMU -icount; NOT cycles)",
              title_justify="left")
    t.add_column("model", no_wrap=True)
    t.add_column("MACs", justify="right")
    for b in boards:
        real = load_board(EMULATED[b])
        t.add_column(f"{b}\ninstructions", justify="right")
        t.add_column("instr/MAC", justify="right")
        t.add_column(f"ms @ {(real.clock_hz or 0) / 1e6:g} MHz\n({real.id})", justify="right")
    by = {(m.model, m.board): m for m in rows}
    for model in dict.fromkeys(m.model for m in rows):
        first = next(m for m in rows if m.model == model)
        cells = [model, f"{first.macs:,}"]
        for b in boards:
            m = by.get((model, b))
            if m is None:
                cells += ["", "", ""]
            elif not m.fits:
                cells += ["does not fit", "", ""]
            else:
                flag = "" if m.repeatable and m.bit_exact else " (!)"
                cells += [_f(m.instructions) + flag, _f(m.per_mac, "{:.2f}"),
                          _f(m.ms_at_real_clock, "{:,.2f}")]
        t.add_row(*cells)
    return t


def mlperf_table(rows: Sequence[Measurement]) -> Table:
    t = Table(title="MLPerf Tiny-shaped models on a Cortex-M4 at 120 MHz (ms per inference)",
              title_justify="left")
    for col in ("task (our model)", "boardfit: M4 instructions", "boardfit: ms @120 MHz if 1 instr/cycle",
                "TFLM 2.3.1 + CMSIS-NN (reference)", "X-CUBE-AI 8.1", "Plumerai"):
        t.add_column(col, justify="left" if col.startswith("task") else "right")
    m4 = {m.model: m for m in rows if m.board == "mps2-an386" and m.fits}
    for model, (task, ref, xcube, plumerai) in MLPERF_MS.items():
        m = m4.get(model)
        t.add_row(f"{task} ({model})", _f(None if m is None else m.instructions),
                  _f(None if m is None else m.ms_at_real_clock, "{:,.1f}"), f"{ref:g}", f"{xcube:g}",
                  f"{plumerai:g}")
    return t


def tflm_table(rows: Sequence[Measurement]) -> Table:
    t = Table(title="instructions per MAC on the emulated Cortex-M4 (mps2-an386), same QEMU method",
              title_justify="left")
    for col in ("TFLM model", "MACs", "TFLM reference kernels", "TFLM + CMSIS-NN", "boardfit model",
                "MACs ", "boardfit"):
        t.add_column(col, justify="left" if col.endswith("model") else "right")
    m4 = {m.model: m for m in rows if m.board == "mps2-an386" and m.fits}
    for a in TFLM_ANCHORS:
        m = m4.get(a.compare_with)
        t.add_row(a.model, f"{a.macs:,}", f"{a.reference_instr / a.macs:.2f}",
                  f"{a.cmsis_nn_instr / a.macs:.2f}", a.compare_with, "—" if m is None else f"{m.macs:,}",
                  "—" if m is None or m.per_mac is None else f"{m.per_mac:.2f}")
    return t


def document(rows: Sequence[Measurement]) -> dict[str, Any]:
    return {
        "schema": "boardfit.bench.mcu_latency/1",
        "unit": "instructions",
        "note": "QEMU -icount instruction counts, not cycles; ms = instructions / real board clock "
                "(1 instruction per cycle: a lower bound)",
        "measurements": [
            {**asdict(m), "instructions_per_mac": m.per_mac, "ms_at_real_clock": m.ms_at_real_clock}
            for m in rows
        ],
        "published": {
            "mlperf_tiny_stm32l4r5_120mhz_ms": {
                k: {"task": v[0], "tflm_cmsis_nn_reference": v[1], "x_cube_ai_8_1": v[2], "plumerai": v[3]}
                for k, v in MLPERF_MS.items()
            },
            "mlperf_source": SOURCE_MLPERF,
            "tflm_mps2_an386_instructions": [asdict(a) for a in TFLM_ANCHORS],
            "tflm_source": SOURCE_TFLM,
        },
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated example model names")
    ap.add_argument("--boards", default=",".join(EMULATED), help="comma-separated emulated boards")
    ap.add_argument("--repeat", type=int, default=3, help="inferences per model (counts must repeat)")
    ap.add_argument("--json", action="store_true", help="print a JSON document instead of tables")
    args = ap.parse_args(argv)
    boards = [b for b in args.boards.split(",") if b]
    unknown = [b for b in boards if b not in EMULATED]
    if unknown:
        ap.error(f"unknown board(s) {', '.join(unknown)}; choose from {', '.join(EMULATED)}")
    rows: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="bf-mcu-latency-") as tmp:
        for model in [m for m in args.models.split(",") if m]:
            for board in boards:
                try:
                    rows.append(measure(model, board, max(1, args.repeat), Path(tmp)))
                except BoardfitError as exc:
                    print(f"error: {model} on {board}: {exc}", file=sys.stderr)
                    return 2
    if args.json:
        print(json.dumps(document(rows), indent=2))
        return 0
    console = Console(width=190)
    console.print(counts_table(rows, boards))
    for m in rows:
        if not m.fits:
            console.print(f"{m.model} on {m.board}: {m.reason}")
        elif not (m.repeatable and m.bit_exact):
            console.print(f"[red](!) {m.model} on {m.board}: repeatable={m.repeatable} "
                          f"bit_exact={m.bit_exact}[/]")
    console.print("Instruction counts are not cycles; ms assume one instruction per cycle at the real "
                  "board's clock (a lower bound).")
    if "mps2-an386" in boards:
        console.print(mlperf_table(rows))
        console.print(f"source: {SOURCE_MLPERF}")
        console.print(tflm_table(rows))
        console.print(f"source: {SOURCE_TFLM}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
