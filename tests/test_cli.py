"""The command line as a user meets it: exit codes, JSON schemas, clear one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.oracle import registry

ROOT = Path(__file__).parent.parent
MLP = ROOT / "examples" / "models" / "digits_mlp_int8.tflite"
CNN = ROOT / "examples" / "models" / "digits_cnn_int8.tflite"
runner = CliRunner()


def _json(args: list[str]) -> tuple[int, dict]:
    res = runner.invoke(app, [*args, "--json"])
    return res.exit_code, json.loads(res.stdout)


def test_inspect_json_counts_match_the_model() -> None:
    code, doc = _json(["inspect", str(MLP)])
    assert code == 0
    assert doc["schema"] == "boardfit.inspect/1"
    fcs = [lay for lay in doc["layers"] if lay["op"] == "FULLY_CONNECTED"]
    # LeNet-300-100 on 8×8 digits: 64·300 + 300·100 + 100·10 multiply-accumulates.
    assert [lay["macs"] for lay in fcs] == [64 * 300, 300 * 100, 100 * 10]
    assert doc["totals"]["macs"] == 64 * 300 + 300 * 100 + 100 * 10
    # int8 weights + int32 biases.
    assert doc["totals"]["weight_bytes"] == 64 * 300 + 300 * 100 + 100 * 10 + 4 * (300 + 100 + 10)
    assert doc["supported"] and doc["unsupported_ops"] == []


def test_verify_digits_is_bit_exact_and_exits_zero() -> None:
    code, doc = _json(["verify", str(CNN), "--data", "digits", "--samples", "25", "--layerwise"])
    assert code == 0, doc
    assert doc["schema"] == "boardfit.verify/1"
    assert doc["samples"] == 25 and doc["ok"]
    assert doc["layers_compared"] == 7
    assert all(o["bit_exact"] for o in doc["outputs"])


def test_verify_names_the_first_diverging_layer_and_exits_one(monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry.KERNELS["MAX_POOL_2D"]

    def off_by_one(ctx: registry.OpContext) -> list[np.ndarray]:
        (y,) = real(ctx)
        return [np.where(y < 127, y + 1, y).astype(y.dtype)]

    monkeypatch.setitem(registry.KERNELS, "MAX_POOL_2D", off_by_one)
    code, doc = _json(["verify", str(CNN), "--samples", "3", "--layerwise"])
    assert code == 1
    assert not doc["ok"]
    assert doc["first_divergence"]["op"] == "MAX_POOL_2D"
    assert doc["first_divergence"]["op_index"] == 3


def test_boards_json_lists_the_default_board() -> None:
    code, doc = _json(["boards"])
    assert code == 0
    ids = {b["id"] for b in doc["boards"]}
    assert {"mps2-an386", "microbit", "rpi4"} <= ids


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty"),
        (b"hello world, not a model\n" * 4, "TFL3"),
        (MLP.read_bytes()[:100], "byte"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_bad_model_is_one_clear_line_and_exit_two(tmp_path: Path, content: bytes, needle: str) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(content)
    # A real process: no traceback may reach the user.
    res = subprocess.run(
        [sys.executable, "-m", "toolkit.cli", "inspect", str(bad)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("error:") and needle.lower() in res.stderr.lower()
    assert "bad.tflite" in res.stderr or "byte" in res.stderr


def test_missing_data_file_is_a_clear_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["verify", str(MLP), "--data", str(tmp_path / "nope.npz")])
    assert res.exit_code == 2
    assert "nope.npz" in res.stderr
