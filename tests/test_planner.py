"""The planner: an exact solver, RAM as a peak, honest errors, plan files that round-trip and
compress to the bytes they predict, a sensitivity cache that returns what it stored, and the
``boardfit plan`` command on the digits MLP under a tight budget."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from firmware_gen.program import build_program
from firmware_gen.sizes import predict
from targets.toolchains import host_toolchain
from toolkit.cli import app
from toolkit.compress.base import LayerRef, Setting
from toolkit.compress.model import compress_graph
from toolkit.compress.registry import get_method
from toolkit.compress.spec import parse_spec
from toolkit.datasets import load_dataset
from toolkit.errors import PlanError
from toolkit.model.tflite import read_tflite
from toolkit.planner.cost import RamStep, build_cost_model, parse_latency
from toolkit.planner.pipeline import build_problem, split_indices
from toolkit.planner.plan import (
    PLAN_SCHEMA,
    Plan,
    PlanBudgets,
    PlannedLayer,
    PlanTotals,
    SampleSet,
    load_plan,
    plan_from_json,
    save_plan,
    spec_path,
)
from toolkit.planner.sensitivity import SensitivityCache, measure_sensitivity, split_fit_score
from toolkit.planner.solve import BudgetError, Budgets, Item, Problem, evaluate, fits, infeasible, solve

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "examples" / "models"
MLP = MODELS / "digits_mlp_int8.tflite"
CNN = MODELS / "digits_cnn_int8.tflite"
FAST_METHODS = ("quant", "kmeans")  # cheap to apply: keeps the sensitivity tests fast
runner = CliRunner()


# ---------------------------------------------------------------------------------------------
# The solver on synthetic problems.


def _random_problem(rng: np.random.Generator) -> Problem:
    layers = int(rng.integers(1, 5))
    ops = tuple(range(0, 2 * layers, 2))
    items = tuple(
        tuple(Item(int(rng.integers(10, 200)), int(rng.choice([0, 0, 8, 16, 64])),
                   int(rng.choice([0, 0, 32])), str(rng.choice(list("abcd"))), float(rng.random()),
                   float(rng.random()))
              for _ in range(int(rng.integers(1, 5))))
        for _ in range(layers))
    steps = tuple(RamStep(i, int(rng.integers(0, 100)), i if i in ops else None) for i in range(2 * layers))
    code = {k: int(rng.integers(0, 60)) for k in "abc"}  # "d" is already in the firmware
    return Problem(ops, items, code, int(rng.integers(0, 50)), steps, int(rng.integers(0, 10)), 0.25)


def _brute_force(problem: Problem, budgets: Budgets) -> float | None:
    best = None
    for choice in itertools.product(*(range(len(items)) for items in problem.items)):
        sol = evaluate(problem, choice)
        if fits(sol, budgets) and (best is None or sol.loss < best):
            best = sol.loss
    return best


def test_solver_is_exact_on_small_random_instances(rng: np.random.Generator) -> None:
    feasible = 0
    for _ in range(150):
        problem = _random_problem(rng)
        budgets = Budgets(int(rng.integers(40, 700)), int(rng.integers(40, 260)),
                          None if rng.random() < 0.5 else float(rng.uniform(0.5, 3)))
        expected = _brute_force(problem, budgets)
        got = solve(problem, budgets)
        assert (got is None) == (expected is None), (problem, budgets, got, expected)
        if got is not None and expected is not None:
            feasible += 1
            assert fits(got, budgets)
            assert got.loss == pytest.approx(expected, abs=1e-6)
    assert 30 < feasible < 150  # the instances exercise both outcomes


def test_smallest_footprints_match_brute_force(rng: np.random.Generator) -> None:
    for _ in range(40):
        problem = _random_problem(rng)
        sols = [evaluate(problem, c) for c in itertools.product(*(range(len(i)) for i in problem.items))]
        assert solve(problem, Budgets(), objective="flash").flash == min(s.flash for s in sols)
        assert solve(problem, Budgets(), objective="ram").ram == min(s.ram for s in sols)


def test_excluded_choices_give_the_next_best() -> None:
    items = ((Item(10, 0, 0, "a", 0.0), Item(5, 0, 0, "a", 0.3), Item(4, 0, 0, "a", 0.5)),)
    problem = Problem((0,), items, {}, 0, (RamStep(0, 0, 0),))
    first = solve(problem, Budgets())
    second = solve(problem, Budgets(), exclude=[first.choice])
    third = solve(problem, Budgets(), exclude=[first.choice, second.choice])
    assert [first.choice, second.choice, third.choice] == [(0,), (1,), (2,)]
    assert solve(problem, Budgets(), exclude=[(0,), (1,), (2,)]) is None


def test_kernel_code_is_paid_once() -> None:
    # Two layers; both cheap options use kernel "k" (1000 B of code), the others the free "d".
    items = tuple((Item(100, 0, 0, "d", 1.0), Item(10, 0, 0, "k", 0.0)) for _ in range(2))
    problem = Problem((0, 1), items, {"k": 1000}, 0, (RamStep(0, 0, 0), RamStep(1, 0, 1)))
    both = solve(problem, Budgets(flash=1020))
    assert both is not None and both.choice == (1, 1) and both.flash == 1020  # code counted once
    assert solve(problem, Budgets(flash=1019)).choice == (0, 0)  # k does not fit: 200 B without it


def test_ties_resolve_to_the_smaller_option_but_never_outweigh_loss() -> None:
    steps = (RamStep(0, 0, 0),)
    tie = Problem((0,), ((Item(100, 0, 0, "a", 0.0), Item(60, 0, 0, "a", 0.0)),), {}, 0, steps)
    assert solve(tie, Budgets()).choice == (1,)
    # A layer-output error breaks a tie of losses before bytes do.
    items = ((Item(100, 0, 0, "a", 0.0, tie=0.0), Item(60, 0, 0, "a", 0.0, tie=0.3)),)
    err = Problem((0,), items, {}, 0, steps)
    assert solve(err, Budgets()).choice == (0,)
    # Neither outweighs a real loss difference, however small the option.
    loss = Problem((0,), ((Item(100_000, 0, 0, "a", 0.0), Item(1, 0, 0, "a", 1e-5, tie=0.0)),), {}, 0, steps)
    assert solve(loss, Budgets()).choice == (0,)


# ---------------------------------------------------------------------------------------------
# RAM is a peak, not a sum.


def _ram_problem(live: tuple[int, int], scratch: tuple[int, int]) -> Problem:
    """Two layers at steps 0 and 1: option 0 needs no scratch and loses 1, option 1 needs
    ``scratch[k]`` bytes and loses nothing."""
    items = tuple((Item(1, 0, 0, "x", 1.0), Item(1, s, 0, "x", 0.0)) for s in scratch)
    steps = (RamStep(0, live[0], 0), RamStep(1, live[1], 1))
    return Problem((0, 1), items, {}, 0, steps)


def test_ram_peak_allows_what_a_sum_of_scratch_would_refuse() -> None:
    problem = _ram_problem(live=(50, 50), scratch=(80, 80))
    # Live 50 + both scratches (160) = 210 > 150, but no step needs more than 50 + 80 = 130.
    sol = solve(problem, Budgets(ram=150))
    assert sol is not None and sol.choice == (1, 1) and sol.ram == 130


def test_ram_peak_refuses_the_scratch_at_the_busiest_step() -> None:
    problem = _ram_problem(live=(100, 10), scratch=(60, 60))
    # Summed scratch (120) plus the smaller live set would fit 150, and so would either
    # scratch on its own against the *average* step; but step 0 would hold 100 + 60.
    sol = solve(problem, Budgets(ram=150))
    assert sol is not None and sol.choice == (0, 1) and sol.ram == 100
    assert evaluate(problem, (1, 1)).ram == 160


def test_persistent_tables_count_at_every_step() -> None:
    items = ((Item(1, 0, 0, "x", 1.0), Item(1, 0, 40, "x", 0.0)),)
    problem = Problem((1,), items, {}, 0, (RamStep(0, 100, None), RamStep(1, 10, 1)), fixed_ram=5)
    assert solve(problem, Budgets(ram=144)).choice == (0,)  # 100 + 40 + 5 at step 0
    assert solve(problem, Budgets(ram=145)).choice == (1,)


def test_infeasible_budget_names_the_smallest_footprint() -> None:
    problem = _ram_problem(live=(100, 10), scratch=(60, 60))
    problem = Problem(problem.layers, problem.items, {}, 1000, problem.steps, 8)
    err = infeasible(problem, Budgets(flash=500, ram=50), "a board")
    assert isinstance(err, BudgetError) and isinstance(err, PlanError)
    assert err.min_flash == 1002 and err.min_ram == 108
    assert "1,002 B" in str(err) and "108 B" in str(err) and "flash ≤ 500 B" in str(err)
    assert "RAM ≤ 50 B" in str(err)


# ---------------------------------------------------------------------------------------------
# The cost model against the code generator.


@pytest.fixture(scope="module")
def cnn_graph():  # type: ignore[no-untyped-def]
    return read_tflite(CNN)


def test_cost_model_matches_the_generator_for_the_dense_model(cnn_graph) -> None:  # type: ignore[no-untyped-def]
    from targets import isa

    mp = pytest.MonkeyPatch()
    mp.setenv(isa.OVERRIDE_ENV, "ref")  # host CPUs differ: the portable kernels, exactly
    try:
        cost = build_cost_model(cnn_graph, None)
    finally:
        mp.undo()
    int8 = get_method("int8")
    selection = {i: int8.option(LayerRef(cnn_graph, cnn_graph.ops[i]), Setting.of("int8"))
                 for i in cost.layer_ops}
    fp = cost.footprint(selection)
    program = build_program(cnn_graph)
    from toolkit.planner.cost import _kernel_tree

    sources, include = _kernel_tree(("ref",))
    sizes, _ = predict(program, host_toolchain(), sources, include)
    assert fp.ram_bytes == sizes.ram_bytes
    assert fp.code_bytes == sizes.code_bytes
    # Each layer's params struct is counted rounded up to 8 bytes: never less than the generator.
    assert sizes.flash_bytes <= fp.flash_bytes <= sizes.flash_bytes + 8 * len(cost.layer_ops)
    assert max(s.fixed_bytes for s in cost.steps) <= sizes.arena_bytes


# The plans' mixes on a board with an optimized variant (mps2-an386: armv7em DSP kernels): the
# cost model must predict what the generator builds for that board, not the portable kernels.
_BOARD_MIXES = {
    "digits_cnn_int8": lambda ops: {i: Setting.of("int8") if k % 2 == 0 else Setting.of("quant", bits=4)
                                    for k, i in enumerate(ops)},
    "digits_mlp_int8": lambda ops: {i: Setting.of("prune", sparsity=0.9, bits=4, huffman="boot") if k == 0
                                    else Setting.of("int8") for k, i in enumerate(ops)},
}


@pytest.mark.parametrize("model", sorted(_BOARD_MIXES))
def test_cost_model_predicts_the_board_build(model: str, tmp_path: Path) -> None:
    from firmware_gen.project import generate_project
    from targets import isa
    from toolkit.boards import load_board
    from toolkit.compress.model import compress_graph

    board = load_board("mps2-an386")
    if not isa.board_variants(board)[0].startswith("armv7em"):
        pytest.skip("$BOARDFIT_KERNEL_VARIANTS overrides the board's variants")
    graph = read_tflite(MODELS / f"{model}.tflite")
    cost = build_cost_model(graph, board)
    settings = _BOARD_MIXES[model](cost.layer_ops)
    calib = load_dataset("digits:calib", graph)
    cm = compress_graph(graph, settings, np.asarray(calib.x[:32]))
    project = generate_project(graph, tmp_path / "gen", board=board, compressed=cm)
    assert project.predicted is not None, "arm-none-eabi-gcc is needed"
    fp = cost.footprint({i: layer.option for i, layer in cm.layers.items()})
    gen = project.predicted
    # Each planned layer runs the variant the generator records, with that variant's scratch.
    assert {i: cost.variant_of(cm.layers[i].option) for i in cost.layer_ops} == \
        {i: project.program.layer_variants[i] for i in cost.layer_ops}
    assert "armv7em" in {cost.variant_of(cm.layers[i].option) for i in cost.layer_ops}
    assert fp.arena_bytes == gen.arena_bytes
    assert fp.persistent_bytes == gen.persistent_bytes
    assert fp.ram_bytes == gen.ram_bytes
    # Kernels are measured on the same sources; model.c's estimate counts the uncompressed
    # call's arguments, so code may differ by a few bytes per compressed layer.
    assert abs(fp.code_bytes - gen.code_bytes) <= 0.10 * gen.code_bytes


def test_latency_data_files_parse() -> None:
    text = 'core = "m"\n[default]\nper_mac = 2\n[kernels.bf_x]\nfixed = 10\nper_mac = 1.5\n'
    lat = parse_latency(text, "t")
    assert lat.timing("bf_x").instructions(100, 3) == 160
    assert lat.timing("bf_other").instructions(10, 0) == 20
    assert lat.milliseconds(25_000, 25_000_000) == pytest.approx(1.0)
    with pytest.raises(PlanError, match="unknown key"):
        parse_latency("[kernels.bf_x]\nper_flop = 1\n", "t")


# ---------------------------------------------------------------------------------------------
# Sensitivity.


@pytest.fixture(scope="module")
def calib():  # type: ignore[no-untyped-def]
    ds = load_dataset("digits:calib", read_tflite(CNN))
    return np.asarray(ds.x[:48]), np.asarray(ds.y[:48])


def test_sensitivity_cache_returns_what_was_measured(tmp_path: Path, cnn_graph, calib) -> None:  # type: ignore[no-untyped-def]
    x, y = calib
    cache = SensitivityCache(tmp_path)
    first = measure_sensitivity(cnn_graph, x, y, methods=FAST_METHODS, mode="exact", cache=cache)
    assert first.cached == 0 and len(list(tmp_path.glob("*.json"))) == 1
    again = measure_sensitivity(cnn_graph, x, y, methods=FAST_METHODS, mode="exact", cache=cache)
    total = sum(len(layer.candidates) for layer in first.layers)
    assert again.cached == total
    assert again.layers == first.layers  # options and measurements identical
    # Other calibration samples are another key: nothing is reused.
    other = measure_sensitivity(cnn_graph, x[:40], y[:40], methods=FAST_METHODS, mode="exact", cache=cache)
    assert other.cached == 0 and len(list(tmp_path.glob("*.json"))) == 2
    # A corrupt file is ignored, not trusted.
    for p in tmp_path.glob("*.json"):
        p.write_text("{not json", encoding="utf-8")
    assert measure_sensitivity(cnn_graph, x, y, methods=FAST_METHODS, mode="exact", cache=cache).cached == 0


def test_sensitivity_measures_the_model_output(cnn_graph, calib) -> None:  # type: ignore[no-untyped-def]
    x, y = calib
    sens = measure_sensitivity(cnn_graph, x, y, methods=("quant",), mode="exact")
    for layer in sens.layers:
        int8 = layer.candidate(Setting.of("int8")).measurement
        assert int8.loss == 0 and int8.output_error == 0 and int8.agreement == 1.0
        assert int8.accuracy == sens.base_accuracy
        two = layer.candidate(Setting.of("quant", bits=2, gptq=True)).measurement
        assert two.loss > layer.candidate(Setting.of("quant", bits=8)).measurement.loss
    # The loss of one option, recomputed by hand: the layer compressed with the even samples
    # replaces the op in full-model runs of the odd (held-out) samples.
    fit, held = split_fit_score(len(x))
    assert list(sens.score_indices) == list(held) and not set(fit) & set(held)
    layer = sens.layers[0]
    s = Setting.of("quant", bits=2, gptq=True)
    cm = compress_graph(cnn_graph, {layer.op_index: s}, x[fit], sequential=False)
    ref = compress_graph(cnn_graph, {}, None).predict(x[held])[0].astype(np.float64)
    out = cm.predict(x[held])[0].astype(np.float64)
    p = np.clip((ref.reshape(len(held), -1) + 128) / 256, 1 / 512, None)
    q = np.clip((out.reshape(len(held), -1) + 128) / 256, 1 / 512, None)
    p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
    kl = float(np.mean(np.sum(p * np.log(p / q), axis=1)))
    assert layer.candidate(s).measurement.loss == pytest.approx(kl, rel=1e-9)


def test_proxy_sensitivity_ranks_options_like_the_exact_one(cnn_graph, calib) -> None:  # type: ignore[no-untyped-def]
    x, y = calib
    exact = measure_sensitivity(cnn_graph, x, y, methods=FAST_METHODS, mode="exact")
    proxy = measure_sensitivity(cnn_graph, x, y, methods=FAST_METHODS, mode="proxy")
    assert proxy.mode == "proxy"
    assert any(not c.measurement.exact for la in proxy.layers for c in la.candidates)
    for a, b in zip(exact.layers, proxy.layers, strict=True):
        losses = [(c.measurement.loss, b.candidate(c.setting).measurement.loss) for c in a.candidates]
        rho = spearmanr([u for u, _ in losses], [v for _, v in losses]).correlation
        assert rho > 0.8, (a.name, losses)


# ---------------------------------------------------------------------------------------------
# Plan files.


def _plan() -> Plan:
    layer = PlannedLayer(3, "dense/MatMul", "FULLY_CONNECTED", Setting.of("prune", sparsity=0.9, bits=4,
                                                                       huffman="boot"),
                         "bf_fully_connected_sparse_huff_s8", "ref", 1234, 40, 0, 512, 999, 0.01, 0.97, False,
                         None)
    totals = PlanTotals(30000, 900, 0.975, 0.99, 0.01, 0.02, 0.98, 0.98, 0.5, None, {"code_bytes": 10}, True)
    return Plan("m.tflite", "ab" * 32, "cd" * 32, False, "microbit", "arm-none-eabi-gcc",
                PlanBudgets(32768, 12288, None, 1.0, "command line", "board"), (layer,), totals,
                SampleSet("digits:calib", 200), SampleSet("digits", 3, (1, 5, 7)),
                {"mode": "exact"}, {"status": "optimal", "repairs": []})


def test_plan_file_round_trip(tmp_path: Path) -> None:
    plan = _plan()
    spec_file = save_plan(plan, tmp_path / "plan.json")
    assert spec_file == spec_path(tmp_path / "plan.json") == tmp_path / "plan.spec.toml"
    assert load_plan(tmp_path / "plan.json") == plan
    doc = json.loads((tmp_path / "plan.json").read_text())
    assert doc["schema"] == PLAN_SCHEMA and doc["layers"][0]["variant"] == "ref"
    spec = parse_spec(spec_file.read_text())
    assert spec.layers == {"3": plan.layers[0].setting}


def test_plan_file_errors_name_the_key(tmp_path: Path) -> None:
    doc = _plan().to_json()
    with pytest.raises(PlanError, match="schema"):
        plan_from_json({**doc, "schema": "boardfit.plan/99"})
    bad = json.loads(json.dumps(doc))
    bad["layers"][0]["flash_bytes"] = "many"
    with pytest.raises(PlanError, match=r"layers\[0\]\.flash_bytes"):
        plan_from_json(bad)
    (tmp_path / "p.json").write_text("{", encoding="utf-8")
    with pytest.raises(PlanError, match="not JSON"):
        load_plan(tmp_path / "p.json")


def test_split_indices_are_the_split_of_the_data() -> None:
    c, v = split_indices(400)
    assert len(c) == 200 and len(v) == 200 and not set(c) & set(v)
    assert sorted({*c, *v}) == list(range(400))


# ---------------------------------------------------------------------------------------------
# The command, end to end.


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("plan")
    mp = pytest.MonkeyPatch()
    mp.setenv("BOARDFIT_CACHE_DIR", str(out / "cache"))
    try:
        res = runner.invoke(app, ["plan", str(MLP), "--board", "microbit", "--calib", "digits:calib",
                                  "--data", "digits:test", "--flash", "24K", "--max-drop", "2",
                                  "--methods", "quant,kmeans,prune", "--alternatives", "2",
                                  "--sensitivity-samples", "100",
                                  "-o", str(out / "plan.json"), "--json"])
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_cli_plans_the_mlp_under_a_tight_flash_budget(planned: tuple[Path, dict]) -> None:
    out, doc = planned
    assert doc["schema"] == PLAN_SCHEMA
    assert doc["budgets"]["flash_bytes"] == 24 * 1024 and doc["budgets"]["ram_bytes"] == 16384 - 4096
    assert doc["predicted_flash_bytes"] <= 24 * 1024 < 51840  # the int8 weights alone do not fit
    assert doc["predicted_ram_bytes"] <= 12288
    assert doc["totals"]["meets_max_drop"] and doc["predicted_accuracy"] >= 0.95
    assert doc["data"]["calibration"]["count"] == 200 and doc["data"]["validation"]["count"] == 400
    assert {layer["method"] for layer in doc["layers"]} <= {"int8", "quant", "kmeans", "prune"}
    assert any(layer["method"] != "int8" for layer in doc["layers"])
    assert load_plan(out / "plan.json").totals.predicted_flash_bytes == doc["predicted_flash_bytes"]


def test_plan_compresses_to_the_predicted_bytes(planned: tuple[Path, dict]) -> None:
    out, _ = planned
    plan = load_plan(out / "plan.json")
    graph = read_tflite(MLP)
    spec = parse_spec((out / "plan.spec.toml").read_text())
    calib = load_dataset("digits:calib", graph)
    cm = compress_graph(graph, spec, np.asarray(calib.x))
    for layer in plan.layers:
        assert cm.layers[layer.op_index].option.flash_bytes == layer.flash_bytes
        assert cm.layers[layer.op_index].option.kernel == layer.kernel
    from toolkit.boards import load_board

    cost = build_cost_model(graph, load_board("microbit"))
    fp = cost.footprint({i: layer.option for i, layer in cm.layers.items()})
    assert fp.flash_bytes == plan.totals.predicted_flash_bytes
    assert fp.ram_bytes == plan.totals.predicted_ram_bytes
    test = load_dataset("digits:test", graph)
    acc = float(np.mean(cm.predict(np.asarray(test.x))[0].reshape(len(test.x), -1).argmax(1) == test.y))
    assert acc == plan.totals.predicted_accuracy


def test_cli_infeasible_budget_names_the_minimum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOARDFIT_CACHE_DIR", str(tmp_path / "cache"))
    res = runner.invoke(app, ["plan", str(CNN), "--board", "microbit", "--data", "digits:test",
                              "--flash", "1K", "--methods", "quant", "--sensitivity-samples", "32",
                              "-o", str(tmp_path / "p.json")])
    assert res.exit_code == 2
    msg = " ".join(res.stderr.split())
    assert "flash ≤ 1,024 B" in msg and "the smallest flash reachable is" in msg
    smallest = int(msg.split("the smallest flash reachable is ")[1].split(" B")[0].replace(",", ""))
    assert smallest > 1024 and not (tmp_path / "p.json").exists()


def test_build_problem_uses_exact_layer_bytes(cnn_graph, calib) -> None:  # type: ignore[no-untyped-def]
    x, y = calib
    sens = measure_sensitivity(cnn_graph, x[:16], y[:16], methods=("quant",), mode="proxy")
    cost = build_cost_model(cnn_graph, None, measure_code=False)
    problem = build_problem(sens, cost)
    for layer, items in zip(sens.layers, problem.items, strict=True):
        for c, it in zip(layer.candidates, items, strict=True):
            assert it.flash == c.option.flash_bytes + cost.params_bytes(c.option.kernel)
            assert it.flash % 8 == 0 and it.loss == c.measurement.loss
    assert math.isclose(problem.fixed_latency_ms, 0.0)


def test_latency_budget_constrains_the_plan(cnn_graph, calib) -> None:  # type: ignore[no-untyped-def]
    from toolkit.boards import load_board
    from toolkit.planner.cost import load_latency

    lat = load_latency("cortex-m4")
    assert lat is not None and "bf_conv2d_s8" in lat.kernels
    x, y = calib
    sens = measure_sensitivity(cnn_graph, x[:16], y[:16], methods=("quant",), mode="proxy")
    cost = build_cost_model(cnn_graph, load_board("mps2-an386"), measure_code=False)
    problem = build_problem(sens, cost, need_latency=True)
    dense = [next(k for k, c in enumerate(layer.candidates) if c.setting.method == "int8")
             for layer in sens.layers]
    fastest = evaluate(problem, dense).latency_ms  # the dense int8 kernels are the fastest
    assert fastest > 0
    # The smallest flash needs the packed 4/2-bit kernels, which unpack every weight: slower.
    small = solve(problem, Budgets(), objective="flash")
    assert small is not None and small.latency_ms > fastest
    assert solve(problem, Budgets(flash=small.flash, latency_ms=fastest)) is None
    quick = solve(problem, Budgets(latency_ms=fastest))
    assert quick is not None and quick.latency_ms <= fastest + 1e-9
    assert solve(problem, Budgets(latency_ms=fastest * 0.99)) is None


# ---------------------------------------------------------------------------------------------
# Repair: a mix whose layers hurt together is upgraded until the drop is met.


class _StubCost:
    """A cost model with flash = Σ option bytes (no code, no params, no RAM)."""

    target = "stub"
    fixed_flash_bytes = 0
    state_bytes = 0
    base_latency_ms = 0.0

    def __init__(self, layers: tuple[int, ...]) -> None:
        self.steps = tuple(RamStep(i, 0, i) for i in layers)

    def option_flash(self, o):  # type: ignore[no-untyped-def]
        return o.flash_bytes

    def option_latency_ms(self, o):  # type: ignore[no-untyped-def]
        return 0.0

    def option_scratch(self, o):  # type: ignore[no-untyped-def]
        return o.ram_bytes

    def variant_of(self, o):  # type: ignore[no-untyped-def]
        return "ref"

    def kernel_code(self, k):  # type: ignore[no-untyped-def]
        return 0

    def footprint(self, selection):  # type: ignore[no-untyped-def]
        from toolkit.planner.cost import Footprint

        return Footprint(sum(o.flash_bytes for o in selection.values()), 0, 0, 0, 0, 0, 0, 0)


class _StubEvaluator:
    """Validation accuracy of a mix from a table: compressing both layers hurts together."""

    def __init__(self, table: dict[tuple[str, str], float]) -> None:
        self.table = table
        self.calls: list[tuple[str, str]] = []

    def _key(self, settings):  # type: ignore[no-untyped-def]
        return tuple(settings[i].method for i in sorted(settings))

    def __call__(self, settings, name="validation"):  # type: ignore[no-untyped-def]
        from toolkit.planner.pipeline import Metrics

        key = self._key(settings)
        self.calls.append(key)
        return Metrics(self.table[key], self.table[key], 1 - self.table[key])

    def quick(self, settings, name="selection"):  # type: ignore[no-untyped-def]
        return self(settings, name)


def test_repair_upgrades_the_layer_that_hurts_until_the_drop_is_met() -> None:
    from toolkit.compress.base import Option
    from toolkit.planner.pipeline import _Fitter, _repair
    from toolkit.planner.sensitivity import Candidate, LayerSensitivity, Measurement, Sensitivity

    def cand(op: int, method: str, flash: int, loss: float) -> Candidate:
        return Candidate(Option(op, Setting.of(method), flash, 0, 1, "bf_k"), Measurement(loss, loss))

    layers = (
        LayerSensitivity(0, "a", "FULLY_CONNECTED", (cand(0, "int8", 100, 0.0), cand(0, "kmeans", 50, 0.05))),
        LayerSensitivity(1, "b", "FULLY_CONNECTED", (cand(1, "int8", 100, 0.0), cand(1, "kmeans", 50, 0.05),
                                                      cand(1, "prune", 30, 0.3))),
    )
    sens = Sensitivity("h", 10, "exact", None, layers)
    cost = _StubCost((0, 1))
    fitter = _Fitter(sens, cost, build_problem(sens, cost), Budgets(flash=130), False)  # type: ignore[arg-type]
    found = fitter.fit()
    assert found is not None and fitter.settings(found[0].choice)[0].method == "kmeans"  # (kmeans, kmeans)
    table = {("kmeans", "kmeans"): 0.90, ("int8", "prune"): 0.975, ("kmeans", "prune"): 0.5,
             ("int8", "kmeans"): 0.97, ("kmeans", "int8"): 0.95, ("int8", "int8"): 0.98}
    ev = _StubEvaluator(table)
    state = _repair(fitter, ev, found, 0.98, 1.0, lambda *a: None)  # type: ignore[arg-type]
    assert state.meets and state.drop == pytest.approx(0.5)
    assert [m.method for m in fitter.settings(state.solution.choice).values()] == ["int8", "prune"]
    assert state.repairs == [{"layer": 0, "from": "kmeans", "to": "int8", "drop_before": pytest.approx(8.0),
                              "drop_after": pytest.approx(0.5)}]
    # Without room for an upgrade the plan says it misses the drop instead of looping.
    tight = _Fitter(sens, cost, build_problem(sens, cost), Budgets(flash=100), False)  # type: ignore[arg-type]
    stuck = _repair(tight, _StubEvaluator(table), tight.fit(), 0.98, 1.0, lambda *a: None)  # type: ignore[arg-type]
    assert stuck.meets is False and stuck.repairs == []
