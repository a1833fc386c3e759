"""``boardfit plan``: from a model, a board and data to a verified :class:`~toolkit.planner.plan.Plan`.

1. **Data.**  ``--data`` is split into a calibration half and a held-back validation half
   (:func:`toolkit.datasets.split_calibration`, seed 0 — the same split ``boardfit compress``
   makes) unless ``--calib`` is given; the plan records the indices of both parts.
2. **Model.**  A float model is first quantized to int8 on the calibration samples
   (:func:`toolkit.compress.ptq.quantize_graph`); its float weights are the recovery target.
3. **Sensitivity** of every option of every layer (:mod:`toolkit.planner.sensitivity`).
4. **Costs** on the board (:mod:`toolkit.planner.cost`) and the **solver**
   (:mod:`toolkit.planner.solve`).  The solver's RAM bound is the live-activation sum; the
   chosen mix's arena is then placed exactly as the generator places it, and when placement
   needs more than the budget the solver's RAM budget is tightened by the difference and it
   solves again.
5. **Verification.**  The chosen mix is compressed exactly as ``boardfit compress`` will
   (:func:`~toolkit.compress.model.compress_graph`, sequential calibration) and the whole
   compressed model is simulated on the validation samples: that accuracy is the plan's
   ``predicted_accuracy`` (the host simulation is bit-exact with the device).  With
   ``max_drop`` the accuracy drop (points below the float model for float inputs, else below
   the int8 model; without labels, the percentage of samples whose top-1 differs from the
   original model, or for outputs that are not class scores the output error in percent of
   the output's power) must not exceed it: otherwise the layers that hurt most are upgraded —
   their current option and every option predicted as lossy are forbidden and the solver runs
   again — until the drop is met or the budgets make it impossible (the plan then says so).
   Which layer hurts most is measured by leave-one-out simulation (the drop recovered by
   reverting the layer to int8) when that is affordable, else taken from the predicted losses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.compress.base import Option, Setting
from toolkit.datasets import Dataset, load_dataset, prepare_inputs, split_calibration
from toolkit.errors import DataError, PlanError
from toolkit.model.ir import Graph
from toolkit.planner.cost import CostModel, Footprint, build_cost_model
from toolkit.planner.plan import Plan, PlanBudgets, PlannedLayer, PlanTotals, SampleSet
from toolkit.planner.runner import GraphRunner, is_probability_output, output_loss, top1
from toolkit.planner.sensitivity import (
    Progress,
    Sensitivity,
    SensitivityCache,
    _no_progress,
    measure_sensitivity,
)
from toolkit.planner.solve import Budgets, Item, Problem, Solution, evaluate, infeasible, solve

log = logging.getLogger(__name__)

CALIB_FRACTION = 0.5
SPLIT_SEED = 0
DEFAULT_BOARD = "mps2-an386"
LOO_SECONDS = 20.0
SELECT_SECONDS = 20.0  # leave-one-out repair analysis only when it costs less than this
MAX_REPAIRS = 64

# The uniform policies the planner is compared with: one setting for every layer it applies
# to (the dense int8 layer elsewhere).
UNIFORM_POLICIES: tuple[tuple[str, Setting], ...] = (
    ("int8", Setting.of("int8")),
    ("quant 4-bit", Setting.of("quant", bits=4)),
    ("k-means 4-bit", Setting.of("kmeans", bits=4)),
    ("prune 80% + share", Setting.of("prune", bits=4, sparsity=0.8)),
    ("binary", Setting.of("binary", mode="bwn", order=1)),
)


@dataclass(frozen=True)
class PlanRequest:
    model: Path
    board: str = DEFAULT_BOARD  # a board id or file, or "host"
    data: str | None = None
    calib: str | None = None
    flash: int | None = None  # bytes; default the board's flash budget
    ram: int | None = None
    latency_ms: float | None = None
    max_drop: float | None = None  # accuracy points
    methods: tuple[str, ...] | None = None  # restrict the methods explored (int8 always)
    sensitivity: str = "auto"
    sensitivity_samples: int | None = None  # at most this many calibration samples for sensitivity
    explore: int = 0  # budgets swept for the Pareto front (0: none)
    uniform: bool = False  # evaluate the uniform policies on the validation data too (reports)
    alternatives: int = 3  # solver solutions compared as whole models on the calibration data
    select_seconds: float = SELECT_SECONDS  # time for that comparison (at least one candidate)
    cache: bool = True
    measure_code: bool = True


@dataclass(frozen=True)
class Metrics:
    accuracy: float | None
    agreement: float
    loss: float
    # Per sample: correct (with labels) or agreeing with the original model (without); loss.
    hits: np.ndarray | None = field(default=None, compare=False, repr=False)
    losses: np.ndarray | None = field(default=None, compare=False, repr=False)
    classifier: bool = True  # False: the output is not a class score (agreement means nothing)


@dataclass(frozen=True)
class Explored:
    """A plan the planner looked at: a budget of the sweep, a uniform policy, or the chosen one."""

    kind: str  # "sweep" | "uniform" | "chosen"
    label: str
    flash_bytes: int
    ram_bytes: int
    predicted_loss: float
    metrics: Metrics
    fits: bool
    settings: Mapping[int, Setting] = field(default_factory=dict)
    methods_bytes: Mapping[str, int] = field(default_factory=dict)  # layer flash bytes per method


@dataclass(frozen=True)
class PlanOutcome:
    plan: Plan
    explored: tuple[Explored, ...]
    sensitivity: Sensitivity
    footprint: Footprint
    seconds: Mapping[str, float]


# ---------------------------------------------------------------------------------------------
# Data.


@dataclass(frozen=True, eq=False)
class _Data:
    calib: Dataset
    validation: Dataset | None
    calib_set: SampleSet
    validation_set: SampleSet | None


def split_indices(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The (calibration, validation) indices :func:`split_calibration` picks for ``n`` samples."""
    ids = Dataset(x=np.arange(n).reshape(n, 1), y=None, name="indices")
    c, v = split_calibration(ids, CALIB_FRACTION, SPLIT_SEED)
    return c.x[:, 0].copy(), v.x[:, 0].copy()


def load_data(data: str | None, calib: str | None) -> _Data:
    if calib is not None:
        c = load_dataset(calib)
        v = load_dataset(data) if data is not None else None
        return _Data(c, v, SampleSet(calib, len(c)), None if v is None else SampleSet(str(data), len(v)))
    if data is None:
        raise DataError("planning needs data: --data (split into calibration and validation) or --calib")
    ds = load_dataset(data)
    ci, vi = split_indices(len(ds))
    return _Data(ds.take(ci, f"{ds.name}[calib]"), ds.take(vi, f"{ds.name}[validation]"),
                 SampleSet(data, len(ci), tuple(int(i) for i in ci)),
                 SampleSet(data, len(vi), tuple(int(i) for i in vi)))


# ---------------------------------------------------------------------------------------------
# Evaluating mixes on the validation samples.


class Evaluator:
    """Compresses a mix as ``boardfit compress`` does (sequential calibration on ``calib_x``)
    and scores the whole compressed model on named sample sets against the original model."""

    def __init__(self, graph: Graph, float_graph: Graph | None, calib_x: np.ndarray,
                 sets: Mapping[str, tuple[np.ndarray, np.ndarray | None]]) -> None:
        self.graph = graph
        self.float_graph = float_graph
        self.calib_x = calib_x
        self.sets = dict(sets)
        self.reference = {name: _outputs(graph, x) for name, (x, _) in self.sets.items()}
        self.ref_top1 = {name: top1(ref) for name, ref in self.reference.items()}
        self._models: dict[tuple[tuple[int, Setting], ...], Any] = {}
        self._memo: dict[tuple[str, tuple[tuple[int, Setting], ...]], Metrics] = {}
        # Layers compressed one by one (the sensitivity pass): mixes of them simulate without
        # compressing again (:meth:`quick`).
        self.layers: Mapping[tuple[int, Setting], Any] = {}

    def add_set(self, name: str, x: np.ndarray, y: np.ndarray | None) -> None:
        self.sets[name] = (x, y)
        self.reference[name] = _outputs(self.graph, x)
        self.ref_top1[name] = top1(self.reference[name])

    def accuracy(self, name: str) -> float | None:
        """The original int8 model's accuracy on a set (None without labels)."""
        y = self.sets[name][1]
        return None if y is None else float(np.mean(self.ref_top1[name] == y))

    @staticmethod
    def _key(settings: Mapping[int, Setting]) -> tuple[tuple[int, Setting], ...]:
        return tuple(sorted(settings.items(), key=lambda kv: kv[0]))

    def options(self, settings: Mapping[int, Setting]) -> dict[int, Option]:
        return {i: layer.option for i, layer in self._model(settings).layers.items()}

    def _model(self, settings: Mapping[int, Setting]) -> Any:
        from toolkit.compress.model import compress_graph

        key = self._key(settings)
        if key not in self._models:
            self._models[key] = compress_graph(self.graph, dict(settings), self.calib_x,
                                               float_graph=self.float_graph)
        return self._models[key]

    def __call__(self, settings: Mapping[int, Setting], name: str = "validation") -> Metrics:
        """The mix compressed as ``boardfit compress`` does it, scored on set ``name``."""
        key = (name, self._key(settings))
        if key not in self._memo:
            self._memo[key] = self._score(name, self._model(settings).predict(self.sets[name][0]))
        return self._memo[key]

    def quick(self, settings: Mapping[int, Setting], name: str = "selection") -> Metrics:
        """The mix of the layers as the sensitivity pass compressed them (each calibrated on the
        original model's activations), scored on set ``name``; falls back to :meth:`__call__`
        when a layer was not compressed in this run (its sensitivity came from the cache)."""
        from toolkit.compress.model import run_samples

        if not all((i, s) in self.layers for i, s in settings.items()):
            return self(settings, name)
        key = ("quick:" + name, self._key(settings))
        if key not in self._memo:
            overrides = {i: self.layers[(i, s)].forward for i, s in settings.items()}
            self._memo[key] = self._score(name, run_samples(self.graph, self.sets[name][0], overrides))
        return self._memo[key]

    def _score(self, name: str, outs: Sequence[np.ndarray]) -> Metrics:
        y = self.sets[name][1]
        pred = top1(outs)
        agree = pred == self.ref_top1[name]
        hits = agree if y is None else pred == y
        losses = output_loss(self.graph, self.reference[name], outs)
        classifier = y is not None or is_probability_output(self.graph, self.graph.outputs[0])
        acc = None if y is None else float(np.mean(hits))
        return Metrics(acc, float(np.mean(agree)), float(np.mean(losses)), hits, losses, classifier)


def _outputs(graph: Graph, x: np.ndarray) -> list[np.ndarray]:
    values = GraphRunner(graph).run_all([x])
    return [values[t] for t in graph.outputs]


def drop_metric(m: Metrics) -> str:
    """What :func:`drop_points` measures for these metrics."""
    if m.accuracy is not None:
        return "accuracy"
    return "agreement" if m.classifier else "output error"


def drop_points(m: Metrics, reference_accuracy: float | None) -> float:
    """Accuracy points lost against the reference.  Without labels: the percentage of samples
    whose top-1 class changed (classifiers) or, for other outputs (an autoencoder's
    reconstruction), the output error in percent of the output's power (100 × relative MSE)."""
    if m.accuracy is not None and reference_accuracy is not None:
        return 100.0 * (reference_accuracy - m.accuracy)
    if not m.classifier:
        return 100.0 * m.loss
    return 100.0 * (1.0 - m.agreement)


# ---------------------------------------------------------------------------------------------
# Problem and exact fitting.


def build_problem(sens: Sensitivity, cost: CostModel, need_latency: bool = False) -> Problem:
    from firmware_gen.program import round_up

    items: list[tuple[Item, ...]] = []
    kernels: set[str] = set()
    for layer in sens.layers:
        row = []
        for c in layer.candidates:
            o = c.option
            ms = cost.option_latency_ms(o)
            if need_latency and ms is None:
                log.warning("%s: no latency data for %s; option %s left out", layer.name, o.kernel,
                            o.setting.label)
                continue
            # Scratch of the board's variant; persistent tables in 8-byte slots as bf_persist has them.
            scratch = 0 if o.persistent_ram_bytes else round_up(cost.option_scratch(o), 8)
            row.append(Item(cost.option_flash(o), scratch, round_up(o.persistent_ram_bytes, 8), o.kernel,
                            c.measurement.loss, ms or 0.0, c.measurement.output_error))
            kernels.add(o.kernel)
        if not row:
            raise PlanError(f"{layer.name}: no option has latency data for {cost.target}")
        items.append(tuple(row))
    return Problem(
        layers=tuple(layer.op_index for layer in sens.layers), items=tuple(items),
        kernel_code={k: cost.kernel_code(k) for k in sorted(kernels)}, fixed_flash=cost.fixed_flash_bytes,
        steps=cost.steps, fixed_ram=cost.state_bytes, fixed_latency_ms=cost.base_latency_ms or 0.0)


class _Fitter:
    """Solves, then checks the chosen mix with the generator's exact arena placement."""

    def __init__(self, sens: Sensitivity, cost: CostModel, problem: Problem, budgets: Budgets,
                 need_latency: bool) -> None:
        self.sens = sens
        self.cost = cost
        self.problem = problem
        self.budgets = budgets
        # Item index → candidate, per layer (options without latency data were left out).
        self.options: list[list[Option]] = []
        for layer in sens.layers:
            kept = [c.option for c in layer.candidates
                    if not need_latency or cost.option_latency_ms(c.option) is not None]
            self.options.append(kept)
        self.ram_slack = 0  # bytes the placement needs beyond the live-sum bound (learned)

    def selection(self, choice: Sequence[int]) -> dict[int, Option]:
        return {self.problem.layers[k]: self.options[k][c] for k, c in enumerate(choice)}

    def settings(self, choice: Sequence[int]) -> dict[int, Setting]:
        return {i: o.setting for i, o in self.selection(choice).items()}

    def fit(self, budgets: Budgets | None = None, forbid: Mapping[int, frozenset[int]] | None = None,
            exclude: Sequence[Sequence[int]] = ()) -> tuple[Solution, Footprint] | None:
        b = budgets or self.budgets
        for _ in range(16):
            ram = None if b.ram is None else b.ram - self.ram_slack
            sol = solve(self.problem, Budgets(b.flash, ram, b.latency_ms), forbid=forbid, exclude=exclude)
            if sol is None:
                return None
            fp = self.cost.footprint(self.selection(sol.choice))
            if b.ram is None or fp.ram_bytes <= b.ram:
                if b.flash is not None and fp.flash_bytes > b.flash:
                    raise PlanError(f"exact flash {fp.flash_bytes} exceeds the solver's bound {sol.flash}")
                return sol, fp
            self.ram_slack += max(8, fp.ram_bytes - b.ram)
            log.info("arena placement needs %d B more than the live sum; tightening", fp.ram_bytes - b.ram)
        return None

    def index_of(self, k: int, setting: Setting) -> int | None:
        for j, o in enumerate(self.options[k]):
            if o.setting == setting:
                return j
        return None


# ---------------------------------------------------------------------------------------------
# The command.


def _board(name: str) -> Any:
    from toolkit.boards import board_ids, load_board

    if name == "host" and "host" not in board_ids():
        return None
    return load_board(name)


def _budgets(req: PlanRequest, board: Any) -> tuple[Budgets, PlanBudgets]:
    flash = req.flash if req.flash is not None else (board.flash_budget if board is not None else None)
    ram = req.ram if req.ram is not None else (board.ram_budget if board is not None else None)
    for what, v in (("flash", flash), ("RAM", ram)):
        if v is not None and v <= 0:
            raise PlanError(f"the {what} budget must be positive, got {v}")
    pb = PlanBudgets(flash, ram, req.latency_ms, req.max_drop,
                     "command line" if req.flash is not None else ("board" if board is not None else "none"),
                     "command line" if req.ram is not None else ("board" if board is not None else "none"))
    return Budgets(flash, ram, req.latency_ms), pb


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)
    _t: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._t
        self._t = now


@dataclass(frozen=True, eq=False)
class Prepared:
    """What does not depend on the board or the budgets: the int8 model, the data, the
    sensitivity and the evaluator (with its memo of compressed mixes).  Reuse it to plan one
    model for several boards and budgets (:func:`plan_model`'s ``prepared``)."""

    key: tuple[Any, ...]
    raw: bytes
    graph: Graph
    float_graph: Graph | None
    data: _Data
    sensitivity: Sensitivity
    evaluator: Evaluator
    reference: float | None  # float model (float input) or int8 model accuracy on validation


def _prepare_key(req: PlanRequest) -> tuple[Any, ...]:
    return (str(req.model), req.data, req.calib, req.methods, req.sensitivity, req.sensitivity_samples,
            req.cache)


def prepare(req: PlanRequest, progress: Progress | None = None) -> Prepared:
    """Steps 1-3 of the module docstring, plus the original model's outputs on the data."""
    from toolkit.compress.pipeline import prepare_graph
    from toolkit.model.tflite import read_tflite

    progress = progress or _no_progress
    raw = Path(req.model).read_bytes()
    raw_graph = dataclasses.replace(read_tflite(raw), name=Path(req.model).stem)
    data = load_data(req.data, req.calib)
    progress("preparing the model", 0, 1)
    graph, float_graph = prepare_graph(raw_graph, data.calib)
    calib_x = prepare_inputs(np.asarray(data.calib.x), graph, data.calib.name)
    calib_y = None if data.calib.y is None else np.asarray(data.calib.y)
    val = data.validation or data.calib
    val_x = prepare_inputs(np.asarray(val.x), graph, val.name)
    val_y = None if val.y is None else np.asarray(val.y)
    evaluator = Evaluator(graph, float_graph, calib_x, {"validation": (val_x, val_y)})
    reference = evaluator.accuracy("validation")
    if float_graph is not None and val_y is not None:
        fx = prepare_inputs(np.asarray(val.x), float_graph, val.name)
        reference = float(np.mean(top1(_outputs(float_graph, fx)) == val_y))
    progress("preparing the model", 1, 1)
    n = len(calib_x) if req.sensitivity_samples is None else min(len(calib_x), req.sensitivity_samples)
    sens = measure_sensitivity(graph, calib_x[:n], None if calib_y is None else calib_y[:n],
                               float_graph=float_graph, methods=req.methods, mode=req.sensitivity,
                               cache=SensitivityCache.default() if req.cache else None, progress=progress)
    evaluator.layers = sens.compressed
    # Mixes of the sensitivity pass's layers are compared on the samples they were scored on
    # (not fitted to): see toolkit.planner.sensitivity.split_fit_score.
    held = np.asarray(sens.score_indices, dtype=np.int64)
    evaluator.add_set("selection", calib_x[:n][held], None if calib_y is None else calib_y[:n][held])
    return Prepared(_prepare_key(req), raw, graph, float_graph, data, sens, evaluator, reference)


def plan_model(req: PlanRequest, progress: Progress | None = None,
               prepared: Prepared | None = None) -> PlanOutcome:
    """Plan ``req.model`` for ``req.board`` (see the module docstring).  ``prepared``: the
    result of :func:`prepare` for the same model, data and sensitivity options, to reuse."""
    progress = progress or _no_progress
    timer = _Timer()
    board = _board(req.board)
    if prepared is None or prepared.key != _prepare_key(req):
        prepared = prepare(req, progress)
    timer.lap("prepare")
    graph, sens = prepared.graph, prepared.sensitivity

    progress("measuring kernel code", 0, 1)
    cost = build_cost_model(graph, board, measure_code=req.measure_code)
    budgets, plan_budgets = _budgets(req, board)
    need_latency = req.latency_ms is not None
    if need_latency and cost.latency is None:
        core = getattr(board, "core", "this machine")
        raise PlanError(f"no latency data for {core} (boards/latency/{core}.toml): a latency budget cannot "
                        "be checked; plan without --latency-ms")
    problem = build_problem(sens, cost, need_latency)
    progress("measuring kernel code", 1, 1)
    timer.lap("cost")

    progress("solving", 0, 1)
    fitter = _Fitter(sens, cost, problem, budgets, need_latency)
    found = fitter.fit()
    if found is None:
        raise infeasible(problem, budgets, cost.target)
    progress("solving", 1, 1)
    timer.lap("solve")

    evaluator = prepared.evaluator
    found = _select(req, fitter, evaluator, found, progress)
    timer.lap("select")
    state = _repair(fitter, evaluator, found, prepared.reference, req.max_drop, progress)
    timer.lap("verify")

    explored = _explore(req, fitter, evaluator, state, progress)
    timer.lap("explore")
    plan = _assemble(req, prepared, board, cost, fitter, state, plan_budgets, timer.seconds)
    return PlanOutcome(plan, tuple(explored), sens, state.footprint, dict(timer.seconds))


# ---------------------------------------------------------------------------------------------
# Selection: interactions between layers, measured on the calibration samples.


def _select(req: PlanRequest, fitter: _Fitter, evaluator: Evaluator, found: tuple[Solution, Footprint],
            progress: Progress) -> tuple[Solution, Footprint]:
    """The candidate mix whose *whole* compressed model loses least on the calibration samples.

    Candidates: the solver's optimum, the next-best ``req.alternatives - 1`` solutions (each
    excluded in turn), and the uniform policies that fit, compared in that order for at most
    ``req.select_seconds``.  The solver adds up per-layer losses; this step sees how the layers'
    errors combine (simulating the layers as the sensitivity pass compressed them), without
    looking at the validation samples.
    """
    candidates = [found]
    seen = [found[0].choice]
    for _ in range(max(0, req.alternatives - 1)):
        nxt = fitter.fit(exclude=seen)
        if nxt is None:
            break
        candidates.append(nxt)
        seen.append(nxt[0].choice)
    for _, setting in UNIFORM_POLICIES:
        choice = uniform_choice(fitter, setting)
        if choice is None or tuple(choice) in seen:
            continue
        sol = evaluate(fitter.problem, choice)
        fp = fitter.cost.footprint(fitter.selection(choice))
        b = fitter.budgets
        if ((b.flash is None or fp.flash_bytes <= b.flash) and (b.ram is None or fp.ram_bytes <= b.ram)
                and (b.latency_ms is None or sol.latency_ms <= b.latency_ms)):
            candidates.append((sol, fp))
            seen.append(tuple(choice))
    if len(candidates) == 1:
        return found
    scored = []
    t0 = time.perf_counter()
    for k, cand in enumerate(candidates):
        if k > 0 and time.perf_counter() - t0 > req.select_seconds:
            log.info("compared %d of %d candidate mixes in %.0f s", k, len(candidates), req.select_seconds)
            break
        progress("comparing candidate mixes", k, len(candidates))
        scored.append((evaluator.quick(fitter.settings(cand[0].choice)).loss, k))
    progress("comparing candidate mixes", len(candidates), len(candidates))
    best = min(scored)[1]
    log.info("candidate mixes (calibration loss): %s; chose %d", [round(v, 5) for v, _ in scored], best)
    return candidates[best]


# ---------------------------------------------------------------------------------------------
# Verification and repair.


@dataclass
class _State:
    solution: Solution
    footprint: Footprint
    metrics: Metrics
    drop: float
    meets: bool | None
    repairs: list[dict[str, Any]] = field(default_factory=list)


def _repair(fitter: _Fitter, evaluator: Evaluator, found: tuple[Solution, Footprint], reference: float | None,
            max_drop: float | None, progress: Progress) -> _State:
    progress("verifying on validation data", 0, 1)
    sol, fp = found
    metrics = evaluator(fitter.settings(sol.choice))
    drop = drop_points(metrics, reference)
    state = _State(sol, fp, metrics, drop, None if max_drop is None else drop <= max_drop)
    progress("verifying on validation data", 1, 1)
    if max_drop is None or state.meets:
        return state
    forbid: dict[int, frozenset[int]] = {}
    for step in range(MAX_REPAIRS):
        progress("repairing", step, MAX_REPAIRS)
        nxt = _upgrade(fitter, evaluator, state, forbid)
        if nxt is None:
            log.warning("accuracy drop %.2f points exceeds --max-drop %.2f and the budget allows no upgrade",
                        state.drop, max_drop)
            break
        (sol, fp), layer = nxt
        metrics = evaluator(fitter.settings(sol.choice))
        drop = drop_points(metrics, reference)
        k = fitter.problem.layers.index(layer)
        before = fitter.options[k][state.solution.choice[k]].setting.label
        after = fitter.options[k][sol.choice[k]].setting.label
        state.repairs.append({"layer": layer, "from": before, "to": after, "drop_before": state.drop,
                              "drop_after": drop})
        state.solution, state.footprint, state.metrics, state.drop = sol, fp, metrics, drop
        if drop <= max_drop:
            state.meets = True
            break
    progress("repairing", MAX_REPAIRS, MAX_REPAIRS)
    return state


def _hurt_order(fitter: _Fitter, evaluator: Evaluator, state: _State) -> list[int]:
    """Layer positions whose option is lossy, the most harmful first: by the calibration loss
    recovered when the layer alone goes back to int8 (if affordable), else by predicted loss."""
    problem = fitter.problem
    lossy = [k for k, c in enumerate(state.solution.choice) if problem.items[k][c].loss > 0]
    base = fitter.settings(state.solution.choice)
    t0 = time.perf_counter()
    now = evaluator.quick(base).loss
    if (time.perf_counter() - t0) * len(lossy) > LOO_SECONDS:
        return sorted(lossy, key=lambda k: -problem.items[k][state.solution.choice[k]].loss)
    gain: dict[int, float] = {}
    for k in lossy:
        reverted = dict(base)
        reverted[problem.layers[k]] = Setting.of("int8")
        gain[k] = now - evaluator.quick(reverted).loss
    return sorted(lossy, key=lambda k: -gain[k])


def _upgrade(fitter: _Fitter, evaluator: Evaluator, state: _State,
             forbid: dict[int, frozenset[int]]) -> tuple[tuple[Solution, Footprint], int] | None:
    """Forbid the current option (and every option at least as lossy) of the most harmful layer
    that can still be upgraded within the budgets, and solve again."""
    problem = fitter.problem
    for k in _hurt_order(fitter, evaluator, state):
        current = problem.items[k][state.solution.choice[k]].loss
        banned = frozenset(o for o, it in enumerate(problem.items[k]) if it.loss >= current)
        trial = {**forbid, k: forbid.get(k, frozenset()) | banned}
        found = fitter.fit(forbid=trial)
        if found is not None:
            forbid.clear()
            forbid.update(trial)
            return found, problem.layers[k]
    return None


# ---------------------------------------------------------------------------------------------
# Exploration (the Pareto front and the uniform policies).


def _methods_bytes(options: Mapping[int, Option]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in options.values():
        out[o.setting.method] = out.get(o.setting.method, 0) + o.flash_bytes
    return out


def _explored(kind: str, label: str, fitter: _Fitter, evaluator: Evaluator, choice: Sequence[int],
              budgets: Budgets) -> Explored:
    settings = fitter.settings(choice)
    fp = fitter.cost.footprint(fitter.selection(choice))
    metrics = evaluator(settings)
    sol = evaluate(fitter.problem, choice)
    ok = ((budgets.flash is None or fp.flash_bytes <= budgets.flash)
          and (budgets.ram is None or fp.ram_bytes <= budgets.ram))
    return Explored(kind, label, fp.flash_bytes, fp.ram_bytes, sol.loss, metrics, ok, settings,
                    _methods_bytes(fitter.selection(choice)))


def uniform_choice(fitter: _Fitter, setting: Setting) -> list[int] | None:
    """The setting on every layer that offers it, int8 elsewhere (None if no layer offers it)."""
    choice, used = [], False
    for k in range(len(fitter.problem.layers)):
        j = fitter.index_of(k, setting)
        used = used or j is not None
        if j is None:
            j = fitter.index_of(k, Setting.of("int8"))
        if j is None:
            return None
        choice.append(j)
    return choice if used else None


def _explore(req: PlanRequest, fitter: _Fitter, evaluator: Evaluator, state: _State,
             progress: Progress) -> list[Explored]:
    out: list[Explored] = []
    budgets = fitter.budgets
    out.append(_explored("chosen", "plan", fitter, evaluator, state.solution.choice, budgets))
    if req.uniform:
        for k, (label, setting) in enumerate(UNIFORM_POLICIES):
            progress("uniform policies", k, len(UNIFORM_POLICIES))
            choice = uniform_choice(fitter, setting)
            if choice is not None:
                out.append(_explored("uniform", label, fitter, evaluator, choice, budgets))
        progress("uniform policies", len(UNIFORM_POLICIES), len(UNIFORM_POLICIES))
    if req.explore > 0:
        out.extend(_sweep(req.explore, fitter, evaluator, progress))
    return out


def sweep_budgets(fitter: _Fitter, points: int) -> list[int]:
    """``points`` flash budgets from the smallest reachable flash to the lossless mix's flash."""
    b = fitter.budgets
    low = solve(fitter.problem, Budgets(None, b.ram, b.latency_ms), objective="flash")
    high = solve(fitter.problem, Budgets(None, b.ram, b.latency_ms))
    if low is None or high is None:
        return []
    lo, hi = low.flash, max(low.flash, high.flash)
    if points == 1 or lo == hi:
        return [hi]
    return sorted({round(float(v)) for v in np.geomspace(lo, hi, points)})


def _sweep(points: int, fitter: _Fitter, evaluator: Evaluator, progress: Progress) -> list[Explored]:
    out: list[Explored] = []
    seen: set[tuple[int, ...]] = set()
    flashes = sweep_budgets(fitter, points)
    for k, flash in enumerate(flashes):
        progress("exploring budgets", k, len(flashes))
        b = Budgets(flash, fitter.budgets.ram, fitter.budgets.latency_ms)
        found = fitter.fit(b)
        if found is None or found[0].choice in seen:
            continue
        seen.add(found[0].choice)
        out.append(_explored("sweep", f"flash ≤ {flash:,} B", fitter, evaluator, found[0].choice, b))
    progress("exploring budgets", len(flashes), len(flashes))
    return out


# ---------------------------------------------------------------------------------------------
# The plan.


def _assemble(req: PlanRequest, prepared: Prepared, board: Any, cost: CostModel, fitter: _Fitter,
              state: _State, budgets: PlanBudgets, seconds: Mapping[str, float]) -> Plan:
    graph, sens, evaluator, data = prepared.graph, prepared.sensitivity, prepared.evaluator, prepared.data
    layers = []
    for k, op_index in enumerate(fitter.problem.layers):
        option = fitter.options[k][state.solution.choice[k]]
        built = evaluator.options(fitter.settings(state.solution.choice)).get(op_index)
        if built != option:
            raise PlanError(f"{graph.ops[op_index].label}: compressing {option.setting.label} gave "
                            f"{built}, the sensitivity pass {option}")
        c = sens.layer(op_index).candidate(option.setting)
        layers.append(PlannedLayer(
            op_index=op_index, name=graph.ops[op_index].label, opcode=graph.ops[op_index].opcode,
            setting=option.setting, kernel=option.kernel, variant=cost.variant_of(option),
            flash_bytes=option.flash_bytes,
            params_bytes=cost.params_bytes(option.kernel), scratch_bytes=cost.option_scratch(option),
            persistent_ram_bytes=option.persistent_ram_bytes, macs=option.macs,
            predicted_loss=c.measurement.loss, predicted_accuracy=c.measurement.accuracy,
            loss_measured=c.measurement.exact, latency_ms=cost.option_latency_ms(option)))
    fp, m = state.footprint, state.metrics
    totals = PlanTotals(
        predicted_flash_bytes=fp.flash_bytes, predicted_ram_bytes=fp.ram_bytes,
        predicted_accuracy=m.accuracy, predicted_agreement=m.agreement,
        predicted_loss=state.solution.loss, validation_loss=m.loss, reference_accuracy=prepared.reference,
        int8_accuracy=evaluator.accuracy("validation"), predicted_drop=state.drop,
        predicted_latency_ms=fp.latency_ms,
        flash=fp.to_json(), meets_max_drop=state.meets, drop_metric=drop_metric(m))
    tc = "host" if board is None else board.toolchain.prefix + "gcc"
    return Plan(
        model=str(req.model), model_sha256=hashlib.sha256(prepared.raw).hexdigest(),
        graph_hash=graph.content_hash(), float_model=prepared.float_graph is not None, board=cost.target,
        toolchain=tc, budgets=budgets,
        layers=tuple(layers), totals=totals, calibration=data.calib_set,
        validation=data.validation_set,
        sensitivity={"mode": sens.mode, "samples": sens.samples, "scored_samples": len(sens.score_indices),
                     "seconds": round(sens.seconds, 3),
                     "cached": sens.cached,
                     "options": sum(len(layer.candidates) for layer in sens.layers)},
        solver={"status": state.solution.status, "repairs": list(state.repairs),
                "arena_slack_bytes": fitter.ram_slack,
                "seconds": {k: round(v, 3) for k, v in seconds.items()}},
    )
