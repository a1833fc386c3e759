"""``boardfit fit`` end to end: plan, build, run in QEMU, and the predictions checked on the ELF.

* **digits MLP (LeNet-300-100-shaped) on mps2-an386 under 32 KiB of flash** — the CLI with
  ``--json``: the model's sections in the linked ELF (read here with ``arm-none-eabi-size -A``,
  not through boardfit) sum to at most the budget, the weight and arena sections are exactly
  the plan's bytes, code within 10 %; every held-back sample bit-exact with the host
  simulation; the on-device accuracy within 0.5 points of the plan's predicted accuracy and
  equal to the accuracy of the compressed model rebuilt here from the plan's spec (the way
  ``boardfit compress`` makes it); calibration and validation samples disjoint and the streamed
  samples exactly the plan's validation samples;
* **digits CNN on the micro:bit (16 KiB RAM)** — fits, bit-exact, the whole image within the
  board's RAM, ``--samples`` streams the first held-back samples;
* an **infeasible budget** exits 2 naming the smallest reachable flash;
* the checks behind the exit code (1: does not fit or differs from the simulation), and the
  refusal of a compression that is not the plan's.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.boards import load_board
from toolkit.build import compress_for_build
from toolkit.cli import app
from toolkit.compress.spec import load_spec
from toolkit.datasets import load_dataset, prepare_inputs
from toolkit.errors import PlanError
from toolkit.model.tflite import read_tflite
from toolkit.planner import fit as fitmod
from toolkit.planner.plan import load_plan
from toolkit.validate import report as rep
from toolkit.validate.validate import Workload

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
DIGITS_TEST = 400  # samples of the built-in digits test split (--data digits)
KEYS = ("predicted_flash_bytes", "predicted_ram_bytes", "predicted_accuracy", "predicted_latency_ms",
        "measured_flash_bytes", "measured_ram_bytes", "measured_accuracy", "measured_latency_ms",
        "agreement", "board", "samples")

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.cross,
    pytest.mark.skipif(shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None,
                       reason="needs qemu-system-arm and arm-none-eabi-gcc"),
]


def _fit(args: list[str]) -> Any:
    return CliRunner().invoke(app, ["fit", *args])


def elf_sections(elf: str) -> dict[str, int]:
    """Section sizes of an ELF as binutils reports them."""
    out = subprocess.run(["arm-none-eabi-size", "-A", elf], capture_output=True, text=True, check=True).stdout
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        m = re.match(r"^(\.\S+)\s+(\d+)\s+\d+", line)
        if m:
            sizes[m.group(1)] = int(m.group(2))
    return sizes


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("fit-mlp")
    res = _fit([str(MODELS / "digits_mlp_int8.tflite"), "--board", "mps2-an386", "--data", "digits",
                "--flash", "32KiB", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout)


def test_fit_json_has_predicted_and_measured(mlp: tuple[Path, dict[str, Any]]) -> None:
    out, doc = mlp
    assert doc["schema"] == "boardfit.fit/1"
    for key in KEYS:
        assert key in doc, key
    assert doc["board"] == "mps2-an386" and doc["ok"] is True
    assert doc["predicted_latency_ms"] is not None  # the Cortex-M4 has latency data
    assert doc["latency"]["counts_unit"] == "instructions" and doc["latency"]["clock_hz"] == 25_000_000
    assert doc["measured_latency_ms"] == pytest.approx(doc["latency"]["counts_per_inference"] / 25e3)
    assert json.loads((out / "fit.json").read_text()) == doc
    assert (out / "plan.json").is_file() and (out / "plan.spec.toml").is_file()
    if fitmod.plots_available():
        assert {Path(p).name for p in doc["plots"]} >= {"pareto.png", "layers.png"}
        assert all(Path(p).is_file() for p in doc["plots"])


def test_measured_elf_fits_the_budget_and_equals_the_prediction(mlp: tuple[Path, dict[str, Any]]) -> None:
    out, doc = mlp
    s = elf_sections(doc["firmware"])
    flash = s[".bf_weights"] + s[".bf_params"] + s[".bf_code"]
    assert flash <= 32 * 1024 == doc["budgets"]["flash_bytes"]
    assert doc["measured_flash_bytes"] == flash
    plan = json.loads((out / "plan.json").read_text())
    f = plan["totals"]["flash"]
    assert s[".bf_weights"] == f["layer_bytes"] + f["other_weights_bytes"]  # exact
    assert s[".bf_arena"] == f["arena_bytes"] == doc["predicted_ram_bytes"] == doc["measured_ram_bytes"]
    assert abs(s[".bf_code"] - f["code_bytes"]) <= 0.10 * f["code_bytes"]
    # The plan's params are an upper bound (each struct rounded up to 8 bytes).
    assert s[".bf_params"] <= f["layer_params_bytes"] + f["other_params_bytes"] < s[".bf_params"] + 8 * 4
    assert doc["predicted_flash_bytes"] == plan["totals"]["predicted_flash_bytes"]


def test_device_accuracy_is_the_planned_accuracy(mlp: tuple[Path, dict[str, Any]]) -> None:
    out, doc = mlp
    a = doc["agreement"]
    assert a["inferences"] == a["bit_exact"] == doc["samples"] == DIGITS_TEST // 2
    assert abs(100 * (doc["measured_accuracy"] - doc["predicted_accuracy"])) <= 0.5
    # The compressed model rebuilt from the written spec, scored here on the held-back half.
    graph = dataclasses.replace(read_tflite(MODELS / "digits_mlp_int8.tflite"), name="digits_mlp_int8")
    cm, test = compress_for_build(graph, load_spec(out / "plan.spec.toml"), "digits")
    assert test is not None
    scores = cm.predict(prepare_inputs(np.asarray(test.x), cm.graph, test.name))[0]
    host = float(np.mean(scores.reshape(len(test), -1).argmax(axis=1) == test.y))
    assert doc["measured_accuracy"] == pytest.approx(host)


def test_report_says_which_samples_were_used_for_what(mlp: tuple[Path, dict[str, Any]]) -> None:
    _, doc = mlp
    calib, val, streamed = (doc["data"][k] for k in ("calibration", "validation", "streamed"))
    ci, vi = set(calib["indices"]), set(val["indices"])
    assert not ci & vi and ci | vi == set(range(DIGITS_TEST))
    assert streamed["indices"] == val["indices"] and streamed["source"] == "digits"


def test_cnn_fits_the_microbit(tmp_path: Path) -> None:
    res = _fit([str(MODELS / "digits_cnn_int8.tflite"), "--board", "microbit", "--data", "digits",
                "--samples", "60", "--no-plots", "-o", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    board = load_board("microbit")
    assert board.ram.size == 16 * 1024
    assert doc["measured_ram_bytes"] <= doc["budgets"]["ram_bytes"] == board.ram_budget
    assert doc["sizes"]["image"]["ram_bytes"] <= board.ram.size
    assert doc["sizes"]["image"]["flash_bytes"] <= board.flash.size
    assert doc["agreement"]["bit_exact"] == doc["samples"] == 60
    plan = load_plan(tmp_path / "plan.json")
    assert plan.validation is not None and plan.validation.indices is not None
    assert doc["data"]["streamed"]["indices"] == list(plan.validation.indices[:60])
    # Bit-exact outputs: the device's accuracy is the host simulation's on the same samples; the
    # plan's prediction is about all 200 held-back samples, so it is not compared with 60.
    assert doc["measured_accuracy"] == doc["simulated_accuracy"]
    assert doc["checks"]["accuracy_within_0_5_points"] is None
    assert doc["predicted_latency_ms"] is None  # no latency data for the Cortex-M0: uncalibrated
    assert doc["measured_latency_ms"] > 0


def test_infeasible_budget_exits_2_with_the_minimum(tmp_path: Path) -> None:
    res = _fit([str(MODELS / "digits_mlp_int8.tflite"), "--data", "digits", "--flash", "4K", "--no-plots",
                "-o", str(tmp_path)])
    assert res.exit_code == 2
    text = " ".join(res.output.split())  # rich wraps the message
    m = re.search(r"smallest flash reachable is ([\d,]+) B", text)
    assert m is not None, text
    assert int(m.group(1).replace(",", "")) > 4096 and "flash ≤ 4,096 B" in text
    assert not (tmp_path / "fit.json").exists()


# ---------------------------------------------------------------------------------------------
# The checks behind the exit code, and refusing a compression that is not the plan's.


def _report(mlp_out: Path, **changes: Any) -> fitmod.FitReport:
    plan = load_plan(mlp_out / "plan.json")
    assert plan.validation is not None
    base = fitmod.FitReport(
        model="m", board="mps2-an386", board_name="", runner="qemu-system", emulated=True, plan=plan,
        predicted=fitmod._predicted_sizes(plan),
        measured=fitmod._predicted_sizes(plan), measured_accuracy=plan.totals.predicted_accuracy,
        agreement=rep.Agreement(10, 10, 100, 0, 0.0), streamed=plan.validation)
    return dataclasses.replace(base, **changes)


def test_exit_code_checks(mlp: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
                          tmp_path: Path) -> None:
    out, _ = mlp
    good = _report(out)
    assert good.ok and all(good.checks().values())
    differs = _report(out, agreement=rep.Agreement(10, 9, 100, 1, 1.0))
    assert differs.fits and not differs.ok
    assert good.measured is not None and good.flash_budget is not None
    big = dataclasses.replace(good.measured, code_bytes=good.measured.code_bytes + good.flash_budget)
    over = _report(out, measured=big)
    assert not over.fits and not over.ok
    assert over.checks()["code_within_10_percent"] is False
    worse = _report(out, measured_accuracy=(good.measured_accuracy or 0) - 0.01)
    assert worse.ok and worse.checks()["accuracy_within_0_5_points"] is False
    assert good.plan.validation is not None
    subset = _report(out, streamed=dataclasses.replace(good.plan.validation, count=5))
    assert subset.checks()["accuracy_within_0_5_points"] is None  # not the predicted samples
    # The CLI exits 1 on a report that differs (the flow itself is replaced here).
    monkeypatch.setattr(fitmod, "fit_model", lambda req, progress=None: differs)
    monkeypatch.setattr("toolkit.tables.print_fit", lambda console, r: console.print("MISMATCH"))
    res = _fit([str(MODELS / "digits_mlp_int8.tflite"), "--data", "digits", "-o", str(tmp_path)])
    assert res.exit_code == 1 and "MISMATCH" in res.output


def test_a_compression_that_is_not_the_plans_is_refused(mlp: tuple[Path, dict[str, Any]]) -> None:
    out, _ = mlp
    plan = load_plan(out / "plan.json")
    graph = dataclasses.replace(read_tflite(MODELS / "digits_mlp_int8.tflite"), name="digits_mlp_int8")
    cm, _ = compress_for_build(graph, plan.to_spec(), "digits")
    fitmod.check_compression(plan, cm)  # the plan's own compression passes
    first = dataclasses.replace(plan.layers[0], flash_bytes=plan.layers[0].flash_bytes + 8)
    with pytest.raises(PlanError, match="the plan says"):
        fitmod.check_compression(dataclasses.replace(plan, layers=(first, *plan.layers[1:])), cm)
    # Held-back samples of another split are refused.
    assert plan.validation is not None and plan.validation.indices is not None
    ds = load_dataset("digits")
    other = fitmod.streamed_samples(dataclasses.replace(
        plan, validation=dataclasses.replace(plan.validation, indices=tuple(range(len(ds) // 2)))),
        "digits", None, 5)
    idx = np.asarray(plan.validation.indices[:5])
    shape = cm.graph.input_tensors[0].shape
    x = prepare_inputs(np.asarray(ds.x)[idx], cm.graph, "digits").reshape((5, *shape))
    work = Workload(x, np.asarray(ds.y)[idx], 1, False, "digits")
    fitmod.check_samples(cm.graph, work, "digits", fitmod.streamed_samples(plan, "digits", None, 5))
    with pytest.raises(PlanError, match="not the plan's validation samples"):
        fitmod.check_samples(cm.graph, work, "digits", other)
