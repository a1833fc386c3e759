"""``boardfit fit``: plan, build, run on the board, and set what was predicted beside what was measured.

:func:`fit_model` takes these steps, each reporting progress:

1. **Plan** exactly as ``boardfit plan`` does (:func:`toolkit.planner.pipeline.plan_model`):
   ``--data`` is split into calibration and held-back validation samples (seeded, recorded in
   the plan) unless ``--calib`` is given (then all of ``--data`` is held back).  Writes
   ``OUT/plan.json``, its spec ``OUT/plan.spec.toml`` and, when matplotlib is importable, the
   Pareto and per-layer plots (the planner then also sweeps budgets and scores the uniform
   policies, as ``boardfit plan --plot`` does).
2. **Compress** the model from the written spec the way ``boardfit build --plan`` and
   ``boardfit validate --spec`` do (:func:`toolkit.validate.validate.prepare`, i.e.
   :func:`toolkit.build.compress_for_build` on the same split), and check that this is the
   plan: the same int8 graph, every layer's kernel and exact bytes, and the held-back samples
   are the plan's validation samples, in the plan's order.
3. **Build** the firmware for the board (:func:`toolkit.validate.validate.build_device_program`:
   refused before compiling when it cannot fit the board) and **start** it with the board's
   runner (QEMU for an emulated board, a flasher plus ``--port`` for a real one).
4. **Validate**: stream the held-back samples (the first ``samples`` of them, or all) over the
   serial link; every output must equal the compressed model's host simulation bit for bit.
5. **Compare** the plan's predictions with the measurements: the model's flash and RAM (sections
   of the linked ELF), the plan's quality metric (accuracy with labels, else top-1 agreement with
   the original model, else the output error) and the latency.

"Fits" means the *measured* model flash (weights + params + code) and RAM (arena + state +
persistent tables) are within the plan's budgets — the board's memory minus the runtime's
reserve, or ``--flash`` / ``--ram``.  The whole linked image (runtime, drivers, libc) is
reported beside it.  Counts are what the board's timer gives once the runner converted them
(``instructions`` under QEMU ``-icount``: not cycles, the ms at the board's clock then assume one
instruction per cycle, which is also what the planner's latency data assume).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.errors import BuildError, PlanError
from toolkit.planner.pipeline import PlanOutcome, PlanRequest, Prepared, plan_model
from toolkit.planner.plan import Plan, SampleSet, save_plan
from toolkit.validate import report as rep

if TYPE_CHECKING:
    from toolkit.compress.model import CompressedModel
    from toolkit.model.ir import Graph
    from toolkit.oracle import Oracle
    from toolkit.validate.link import DeviceLink
    from toolkit.validate.validate import Workload

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

ACCURACY_TOLERANCE_POINTS = 0.5  # on-device metric against the plan's prediction
CODE_TOLERANCE = 0.10  # measured kernel + model code against the planner's figure
PLAN_FILE = "plan.json"
FIRMWARE_DIR = "firmware"


def _no_progress(stage: str, done: int, total: int) -> None:
    del stage, done, total


@dataclass(frozen=True)
class FitRequest:
    plan: PlanRequest  # model, board, data / calib, budgets, --max-drop
    out_dir: Path
    samples: int = 0  # held-back samples streamed to the device (0: all of them)
    port: str | None = None  # serial link of a real board (pyserial URL)
    runner: str | None = None  # runner kind instead of the board's first
    plots: bool = True  # write the plan's plots (when matplotlib is importable)


@dataclass(frozen=True)
class LayerLatency:
    op_index: int
    predicted_ms: float | None  # the plan's per-layer estimate (None: uncalibrated)
    measured_ms: float | None  # mean over the streamed inferences at the board's clock


@dataclass(frozen=True)
class FitReport:
    """A plan, the firmware built from it, and what the device did with the held-back samples."""

    model: str
    board: str
    board_name: str
    runner: str
    emulated: bool
    plan: Plan
    outcome: PlanOutcome | None = field(default=None, compare=False, repr=False)  # None: plan loaded
    plan_file: Path = field(default=Path(PLAN_FILE))
    spec_file: Path = field(default=Path("plan.spec.toml"))
    plots: tuple[Path, ...] = ()
    firmware: Path = field(default=Path())
    toolchain: str = ""
    streamed: SampleSet = field(default_factory=lambda: SampleSet("", 0))
    predicted: rep.SizeFigures = field(default_factory=lambda: rep.SizeFigures(0, 0, 0, 0, 0))
    measured: rep.SizeFigures | None = None
    measured_from: str = ""
    image_flash_bytes: int | None = None
    image_ram_bytes: int | None = None
    measured_accuracy: float | None = None  # device top-1 against the labels
    measured_agreement: float | None = None  # device top-1 against the original model's
    measured_loss: float | None = None  # output loss against the original model (planner's proxy)
    simulated_accuracy: float | None = None  # host simulation on the streamed samples
    agreement: rep.Agreement = field(default_factory=lambda: rep.Agreement(0, 0, 0, 0, 0.0))
    counts: rep.CountSummary | None = None
    layers: tuple[LayerLatency, ...] = ()
    device: rep.DeviceSummary | None = None

    # -- the headline figures ------------------------------------------------------------------

    @property
    def samples(self) -> int:
        return self.streamed.count

    @property
    def metric(self) -> str:
        """What the accuracy comparison is about (the plan's ``drop_metric``)."""
        return self.plan.totals.drop_metric

    @property
    def predicted_flash_bytes(self) -> int:
        return self.plan.totals.predicted_flash_bytes

    @property
    def predicted_ram_bytes(self) -> int:
        return self.plan.totals.predicted_ram_bytes

    @property
    def predicted_accuracy(self) -> float | None:
        return self.plan.totals.predicted_accuracy

    @property
    def predicted_latency_ms(self) -> float | None:
        return self.plan.totals.predicted_latency_ms

    @property
    def measured_flash_bytes(self) -> int | None:
        return None if self.measured is None else self.measured.flash_bytes

    @property
    def measured_ram_bytes(self) -> int | None:
        return None if self.measured is None else self.measured.ram_bytes

    @property
    def measured_latency_ms(self) -> float | None:
        return None if self.counts is None else self.counts.ms

    @property
    def flash_budget(self) -> int | None:
        return self.plan.budgets.flash_bytes

    @property
    def ram_budget(self) -> int | None:
        return self.plan.budgets.ram_bytes

    # -- predicted against measured -----------------------------------------------------------

    @property
    def all_held_back(self) -> bool:
        """Every held-back sample the plan's prediction is about was streamed (same samples)."""
        val = self.plan.validation
        return val is None or val.count == self.streamed.count

    def metric_points(self) -> tuple[float | None, float | None]:
        """(predicted, measured) of the plan's metric in points (percent)."""
        tot = self.plan.totals
        if self.metric == "accuracy":
            pair = (tot.predicted_accuracy, self.measured_accuracy)
        elif self.metric == "agreement":
            pair = (tot.predicted_agreement, self.measured_agreement)
        else:
            pair = (tot.validation_loss, self.measured_loss)
        return tuple(None if v is None else 100.0 * v for v in pair)  # type: ignore[return-value]

    def checks(self) -> dict[str, bool | None]:
        """Each claim of the plan, checked on what was built and run (None: not measurable)."""
        p, m = self.predicted, self.measured
        pred, meas = self.metric_points()
        return {
            "fits_flash": _within(self.measured_flash_bytes, self.flash_budget),
            "fits_ram": _within(self.measured_ram_bytes, self.ram_budget),
            "bit_exact": self.agreement.all_exact,
            "weights_exact": None if m is None else m.weights_bytes == p.weights_bytes,
            # The plan rounds each params struct up to 8 bytes: an upper bound.
            "params_within_bound": None if m is None else m.params_bytes <= p.params_bytes,
            "code_within_10_percent": None if m is None or not p.code_bytes
            else abs(m.code_bytes - p.code_bytes) <= CODE_TOLERANCE * p.code_bytes,
            "ram_exact": None if m is None else (m.arena_bytes, m.state_bytes, m.persistent_bytes)
            == (p.arena_bytes, p.state_bytes, p.persistent_bytes),
            # Only comparable on the samples the prediction was made on (all held-back ones).
            "accuracy_within_0_5_points": None if pred is None or meas is None or not self.all_held_back
            else abs(meas - pred) <= ACCURACY_TOLERANCE_POINTS,
        }

    @property
    def fits(self) -> bool:
        c = self.checks()
        return c["fits_flash"] is not False and c["fits_ram"] is not False

    @property
    def ok(self) -> bool:
        """It fits and every output was bit-identical with the host simulation (exit code 0)."""
        return self.fits and self.agreement.all_exact


def _within(value: int | None, budget: int | None) -> bool | None:
    if value is None:
        return None
    return budget is None or value <= budget


# ---------------------------------------------------------------------------------------------
# Step 1: the plan.


def plots_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _plan(req: FitRequest, progress: Progress,
          prepared: Prepared | None) -> tuple[PlanOutcome, Path, Path, list[Path]]:
    plots = req.plots and plots_available()
    if req.plots and not plots:
        log.warning("matplotlib is not installed: no plots (pip install boardfit[plots])")
    preq = req.plan
    if plots:  # what `boardfit plan --plot` explores: budgets swept and the uniform policies
        preq = dataclasses.replace(preq, explore=preq.explore or 8, uniform=True)
    outcome = plan_model(preq, progress, prepared=prepared)
    plan_path = req.out_dir / PLAN_FILE
    spec = save_plan(outcome.plan, plan_path)
    written: list[Path] = []
    if plots:
        from toolkit.planner.report import write_plots

        progress("plotting", 0, 1)
        written = write_plots(outcome, req.out_dir)
        progress("plotting", 1, 1)
    return outcome, plan_path, spec, written


# ---------------------------------------------------------------------------------------------
# Step 2: the compressed model, checked against the plan.


def check_compression(plan: Plan, cm: CompressedModel) -> None:
    """Refuse a compression that is not the plan's (another graph, kernel or byte count)."""
    if cm.graph.content_hash() != plan.graph_hash:
        raise PlanError(f"the model compressed from the plan has graph {cm.graph.content_hash()[:12]}, the "
                        f"plan was made for {plan.graph_hash[:12]}")
    for layer in plan.layers:
        got = cm.layers.get(layer.op_index)
        if got is None:
            raise PlanError(f"{layer.name}: the plan compresses op {layer.op_index}, the build does not")
        o = got.option
        if (o.kernel, o.flash_bytes, o.ram_bytes) != (layer.kernel, layer.flash_bytes, layer.scratch_bytes):
            raise PlanError(f"{layer.name}: built {o.setting.label} as {o.kernel} with {o.flash_bytes} B "
                            f"(scratch {o.ram_bytes} B); the plan says {layer.kernel} with "
                            f"{layer.flash_bytes} B (scratch {layer.scratch_bytes} B)")


def streamed_samples(plan: Plan, data: str, calib: str | None, n: int) -> SampleSet:
    """Which samples of ``data`` the device gets: the first ``n`` held-back ones, in plan order."""
    val = plan.validation
    if calib is None:
        if val is None or val.indices is None:
            raise PlanError("the plan records no held-back validation samples of --data")
        return SampleSet(val.source, n, tuple(val.indices[:n]))
    return SampleSet(data, n, None if val is None or n == val.count else tuple(range(n)))


def check_samples(graph: Graph, work: Workload, data: str, streamed: SampleSet) -> None:
    """The samples about to be streamed are ``streamed`` (the plan's validation samples)."""
    from toolkit.datasets import load_dataset, prepare_inputs

    ds = load_dataset(data)
    idx = np.arange(streamed.count) if streamed.indices is None else np.asarray(streamed.indices)
    want = prepare_inputs(np.asarray(ds.x)[idx], graph, ds.name).reshape(work.inputs.shape)
    if not np.array_equal(want, work.inputs):
        raise PlanError("the held-back samples the build streams are not the plan's validation samples "
                        "(a different calibration split)")
    labels = None if ds.y is None else np.asarray(ds.y)[idx]
    if work.labels is not None and labels is not None and not np.array_equal(labels, work.labels):
        raise PlanError("the held-back labels are not the plan's validation labels")


# ---------------------------------------------------------------------------------------------
# Step 4: streaming with progress.


@dataclass
class _Run:
    """What streaming gave: per sample the device's outputs and the host simulation's (of the
    sample's last frame), per inference the timer ticks (and per-layer ticks when profiled), and
    the bit-exact comparison of every output of every inference."""

    device: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    simulated: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    ticks: list[int] = field(default_factory=list)
    layer_ticks: list[list[int]] = field(default_factory=list)
    inferences: int = 0
    bit_exact: int = 0
    elements: int = 0
    mismatched: int = 0
    max_abs: float = 0.0

    def compare(self, device: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> None:
        exact = len(device) == len(expected)
        for d, e in zip(device, expected, strict=False):
            diff = np.abs(np.asarray(d, np.float64).reshape(-1) - np.asarray(e, np.float64).reshape(-1))
            bad = int(np.count_nonzero(diff))
            exact = exact and bad == 0
            self.elements += diff.size
            self.mismatched += bad
            self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        self.inferences += 1
        self.bit_exact += int(exact)

    def agreement(self) -> rep.Agreement:
        return rep.Agreement(self.inferences, self.bit_exact, self.elements, self.mismatched, self.max_abs)

    def outputs(self, which: str) -> list[np.ndarray]:
        """Sample-major arrays, one per model output, of the ``device`` or ``simulated`` outputs."""
        rows = self.device if which == "device" else self.simulated
        return [np.stack([np.asarray(r[k]) for r in rows]) for k in range(len(rows[0]))]


def stream_samples(link: DeviceLink, work: Workload, oracle: Oracle, progress: Progress) -> _Run:
    """Every sample on the device and on the compressed model's host simulation, with the same
    resets (stateful models), compared output by output."""
    run = _Run()
    profile = link.info().profile
    for k, frames in work.sequences():
        progress("streaming samples", k, work.samples)
        if work.stateful:
            link.reset_model()
            oracle.reset()
        for x in frames:
            result = link.run([x])
            if result.status != 0:
                raise BuildError(f"the device's model failed on sample {k} (status {result.status})")
            expected = oracle.run([x]).outputs
            run.compare(result.outputs, expected)
            run.ticks.append(result.count)
            if profile:
                run.layer_ticks.append(link.layer_counts())
        run.device.append(tuple(result.outputs))
        run.simulated.append(tuple(np.asarray(e) for e in expected))
    progress("streaming samples", work.samples, work.samples)
    return run


def reference_outputs(graph: Graph, work: Workload) -> list[np.ndarray]:
    """The original (int8) model's outputs per sample (sample-major, one array per output),
    sequenced like the device: what the plan's agreement and loss are measured against."""
    from toolkit.oracle import Oracle
    from toolkit.planner.runner import GraphRunner

    if not work.stateful:
        values = GraphRunner(graph).run_all([work.inputs])
        return [np.asarray(values[t]) for t in graph.outputs]
    oracle, rows = Oracle(graph), []
    for _, frames in work.sequences():
        oracle.reset()
        for x in frames:
            last = oracle.run([x]).outputs
        rows.append(last)
    return [np.stack([np.asarray(r[k]) for r in rows]) for k in range(len(graph.outputs))]


@dataclass(frozen=True)
class _Scores:
    accuracy: float | None  # device top-1 against the labels
    agreement: float  # device top-1 against the original model's
    loss: float  # the planner's output loss of the device outputs against the original model's
    simulated_accuracy: float | None  # the host simulation's top-1 against the labels


def score(graph: Graph, work: Workload, run: _Run) -> _Scores:
    """The plan's metrics, computed as the planner computes them, on the device's outputs."""
    from toolkit.planner.runner import output_loss, top1

    ref = reference_outputs(graph, work)
    dev = [d.reshape(r.shape) for d, r in zip(run.outputs("device"), ref, strict=True)]
    sim = [s.reshape(r.shape) for s, r in zip(run.outputs("simulated"), ref, strict=True)]
    pred = top1(dev)
    agree = float(np.mean(pred == top1(ref)))
    loss = float(np.mean(output_loss(graph, ref, dev)))
    if work.labels is None:
        return _Scores(None, agree, loss, None)
    labels = np.asarray(work.labels)
    return _Scores(float(np.mean(pred == labels)), agree, loss, float(np.mean(top1(sim) == labels)))


# ---------------------------------------------------------------------------------------------
# The whole flow.


def _predicted_sizes(plan: Plan) -> rep.SizeFigures:
    f: Mapping[str, Any] = plan.totals.flash
    try:
        return rep.SizeFigures(
            weights_bytes=int(f["layer_bytes"]) + int(f["other_weights_bytes"]),
            params_bytes=int(f["layer_params_bytes"]) + int(f["other_params_bytes"]),
            code_bytes=int(f["code_bytes"]), arena_bytes=int(f["arena_bytes"]),
            state_bytes=int(f["state_bytes"]), persistent_bytes=int(f["persistent_bytes"]))
    except KeyError as exc:
        raise PlanError(f"the plan's totals.flash breakdown lacks {exc}") from exc


def _layer_latency(plan: Plan, per_layer: Sequence[rep.LayerCount], unit: str,
                   clock_hz: int | None) -> tuple[LayerLatency, ...]:
    measured = {row.op_index: _ms(row.count, unit, clock_hz) for row in per_layer}
    return tuple(LayerLatency(layer.op_index, layer.latency_ms, measured.get(layer.op_index))
                 for layer in plan.layers)


def _ms(count: float, unit: str, clock_hz: int | None) -> float | None:
    if unit == "nanoseconds":
        return count / 1e6
    return None if not clock_hz else count / clock_hz * 1e3


def fit_model(req: FitRequest, progress: Progress | None = None,
              prepared: Prepared | None = None) -> FitReport:
    """Plan, compress, build, run and compare (see the module docstring).  ``prepared``: the
    planner's :func:`~toolkit.planner.pipeline.prepare` of the same model and data, to reuse
    (one model fitted to several boards or budgets)."""
    from toolkit.validate import validate as v

    progress = progress or _no_progress
    data = req.plan.data
    if data is None:
        raise PlanError("boardfit fit needs --data: the held-back samples are validated on the device")
    req.out_dir.mkdir(parents=True, exist_ok=True)
    outcome, plan_path, spec, plots = _plan(req, progress, prepared)
    plan = outcome.plan

    progress("compressing as planned", 0, 1)
    opts = v.ValidateOptions(model=Path(req.plan.model), board=req.plan.board, data=data, samples=req.samples,
                             port=req.port, spec=spec, calib=req.plan.calib,
                             out_dir=req.out_dir / FIRMWARE_DIR, runner=req.runner)
    prep = v.prepare(opts)
    assert prep.compressed is not None
    check_compression(plan, prep.compressed)
    streamed = streamed_samples(plan, data, req.plan.calib, prep.work.samples)
    check_samples(prep.graph, prep.work, data, streamed)
    progress("compressing as planned", 1, 1)

    board = prep.board
    runner = v.make_board_runner(board, opts)
    progress("building firmware", 0, 1)
    program = v.build_device_program(prep.graph, board, req.out_dir / FIRMWARE_DIR, debug=False,
                                     profile_layers=True, emulated=runner.kind == "qemu-system",
                                     compressed=prep.compressed)
    if program.plan_hash != prep.plan_hash:
        raise BuildError(f"the firmware reports plan hash {program.plan_hash}, the compression is "
                         f"{prep.plan_hash}")
    progress("building firmware", 1, 1)

    progress(f"starting {board.id} ({runner.kind})", 0, 1)
    with v.device_port(runner, program.artifact, req.port) as port:
        link = v.connect(port, program, prep.work.stateful, opts.invoke_timeout)
        progress(f"starting {board.id} ({runner.kind})", 1, 1)
        run = stream_samples(link, prep.work, prep.oracle(), progress)
        device = _device_summary(link)

    progress("scoring", 0, 1)
    scores = score(prep.graph, prep.work, run)
    counts = v.count_summary(runner, run.ticks, board.clock_hz)
    per_layer = v.per_layer(prep.graph, runner, run.layer_ticks)
    progress("scoring", 1, 1)
    fp = program.footprint
    return FitReport(
        model=str(req.plan.model), board=board.id, board_name=board.name, runner=runner.kind,
        emulated=board.emulated, plan=plan, outcome=outcome, plan_file=plan_path, spec_file=spec,
        plots=tuple(plots), firmware=program.artifact, toolchain=program.toolchain, streamed=streamed,
        predicted=_predicted_sizes(plan), measured=fp.measured, measured_from=fp.measured_from,
        image_flash_bytes=fp.image_flash_bytes, image_ram_bytes=fp.image_ram_bytes,
        measured_accuracy=scores.accuracy, measured_agreement=scores.agreement, measured_loss=scores.loss,
        simulated_accuracy=scores.simulated_accuracy, agreement=run.agreement(), counts=counts,
        layers=_layer_latency(plan, per_layer, counts.unit if counts else "", board.clock_hz),
        device=device)


def _device_summary(link: DeviceLink) -> rep.DeviceSummary:
    info = link.info()
    return rep.DeviceSummary(info.model_hash.hex(), info.plan_hash.hex(), info.arena_bytes, info.max_payload,
                             info.debug, info.n_layers if info.profile else 0, link.stats.retransmissions,
                             link.stats.resyncs)
