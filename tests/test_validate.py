"""``boardfit validate`` end to end: real device programs over the serial link.

Every accuracy the tests expect is computed here with the TFLite interpreter on the same
samples (never copied from the code under test), and agreement means every output byte equals
the host oracle's.  Boards: the host (a program on a pty), the Raspberry Pi profiles under
qemu-user, and the emulated Cortex-M4 (mps2-an386) under qemu-system-arm.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from toolkit.cli import app
from toolkit.datasets import load_dataset
from toolkit.errors import BoardfitError, DoesNotFit, ProtocolError
from toolkit.interp import ReferenceInterpreter
from toolkit.model.tflite import read_tflite
from toolkit.oracle import registry
from toolkit.validate import validate as v
from toolkit.validate.report import report_doc

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


def model(name: str) -> Path:
    return MODELS / f"{name}.tflite"


def interpreter_accuracy(name: str, samples: int, frames: int = 1) -> float:
    """Top-1 accuracy of the TFLite interpreter (reference kernels) on the first ``samples`` test
    digits; a streaming model starts from a fresh interpreter per sample and is fed it ``frames``
    times."""
    path = model(name)
    graph = read_tflite(path)
    ds = load_dataset("digits", graph)
    x, y = ds.x[:samples], ds.y
    assert y is not None
    hits = 0
    interp = ReferenceInterpreter(path, reference_kernels=True)
    for k in range(samples):
        if graph.is_stateful:  # a fresh state per sample
            interp = ReferenceInterpreter(path, reference_kernels=True)
        for _ in range(frames):
            out = interp.run([x[k].reshape(graph.input_tensors[0].shape)])
        hits += int(np.argmax(out[0]) == y[k])
    return hits / samples


def opts(name: str, board: str, tmp: Path, **kw: object) -> v.ValidateOptions:
    kw.setdefault("samples", 40)
    return v.ValidateOptions(model=model(name), board=board, data="digits", out_dir=tmp / board, **kw)  # type: ignore[arg-type]


def check_exact(report: v.rep.ValidateReport, name: str, samples: int, frames: int = 1) -> None:
    assert report.agreement.inferences == samples * frames
    assert report.agreement.bit_exact == samples * frames and report.agreement.max_abs_error == 0
    assert report.ok
    assert report.accuracy == pytest.approx(interpreter_accuracy(name, samples, frames))
    assert report.reference_accuracy == report.accuracy


needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


# ---------------------------------------------------------------------------------------------
# Host: a program on a pty


@needs_gcc
@pytest.mark.parametrize("name", ["digits_mlp_int8", "digits_cnn_int8"])
def test_host_end_to_end_is_bit_exact_with_the_interpreters_accuracy(name: str, tmp_path: Path) -> None:
    report = v.validate(opts(name, "host", tmp_path))
    check_exact(report, name, 40)
    assert report.counts is not None and report.counts.unit == "nanoseconds"
    graph = read_tflite(model(name))
    # Per-layer counts: one row per op, in op order, named as the graph names them.
    assert [la.op_index for la in report.per_layer] == [op.index for op in graph.ops]
    assert [la.opcode for la in report.per_layer] == [op.opcode for op in graph.ops]
    doc = report_doc(report)
    for key in ("board", "accuracy", "reference_accuracy", "agreement", "samples", "flash_bytes",
                "ram_bytes", "cycles_per_inference", "counts_unit", "per_layer"):
        assert key in doc
    assert doc["agreement"] == 1.0 and doc["samples"] == 40 and doc["board"] == "host"
    assert doc["flash_bytes"] > 0 and doc["ram_bytes"] > 0


@needs_gcc
def test_streaming_model_state_evolves_like_the_oracles(tmp_path: Path) -> None:
    """digits_stream: reset before each sample, the sample fed 3 times (its README), every
    inference compared; the last output of each sample is scored."""
    report = v.validate(opts("digits_stream_int8", "host", tmp_path, samples=25))
    assert report.frames_per_sample == 3
    check_exact(report, "digits_stream_int8", 25, frames=3)


@needs_gcc
def test_streaming_with_one_frame_per_sample(tmp_path: Path) -> None:
    """--frames overrides the example's 3: still a reset before every sample, one inference each."""
    report = v.validate(opts("digits_stream_int8", "host", tmp_path, samples=25, frames=1))
    assert report.frames_per_sample == 1 and report.agreement.inferences == 25
    assert report.agreement.all_exact
    assert report.accuracy == pytest.approx(interpreter_accuracy("digits_stream_int8", 25, frames=1))


@pytest.fixture
def broken_kernel(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Break the oracle's kernel of one opcode in-process: the first output element is off by one."""

    def install(opcode: str) -> None:
        original = registry.KERNELS[opcode]

        def wrong(ctx: registry.OpContext) -> list[np.ndarray]:
            outs = original(ctx)
            first = outs[0].copy()
            first.flat[0] = first.flat[0] + 1 if first.flat[0] < np.iinfo(first.dtype).max else 0
            return [first, *outs[1:]]

        monkeypatch.setitem(registry.KERNELS, opcode, wrong)

    return install


@needs_gcc
def test_layerwise_names_the_first_diverging_layer(tmp_path: Path,
                                                   broken_kernel: Callable[[str], None]) -> None:
    graph = read_tflite(model("digits_cnn_int8"))
    target = next(op for op in graph.ops if op.opcode == "DEPTHWISE_CONV_2D")
    broken_kernel("DEPTHWISE_CONV_2D")
    report = v.validate(opts("digits_cnn_int8", "host", tmp_path, samples=3, layerwise=True))
    assert report.layerwise is not None and report.device.debug
    div = report.layerwise.first_divergence
    assert div is not None
    assert (div.op_index, div.opcode, div.tensor) == (target.index, "DEPTHWISE_CONV_2D", target.outputs[0])
    assert div.sample == 0 and div.mismatched >= 1
    assert not report.ok


@needs_gcc
def test_layerwise_on_a_healthy_model_finds_nothing(tmp_path: Path) -> None:
    report = v.validate(opts("digits_cnn_int8", "host", tmp_path, samples=3, layerwise=True))
    assert report.layerwise is not None and report.layerwise.first_divergence is None
    assert report.layerwise.tensors_compared >= len(read_tflite(model("digits_cnn_int8")).ops) - 1
    assert report.ok


@pytest.fixture
def running_mlp(tmp_path: Path) -> Iterator[str]:
    """A device program built from digits_mlp, running on a pty: its path."""
    from targets.runners.host import HostRunner
    from toolkit.boards import RunnerSpec

    graph, _ = v.read_model(model("digits_mlp_int8"))
    board = v.host_board()
    program = v.build_device_program(graph, board, tmp_path / "mlp", debug=False, profile_layers=True)
    with HostRunner(board, RunnerSpec("host")).start(program.artifact) as session:
        assert session.serial_url is not None
        yield session.serial_url


@needs_gcc
def test_a_device_built_from_another_model_is_refused(tmp_path: Path, running_mlp: str) -> None:
    with pytest.raises(ProtocolError, match="refusing to validate it") as err:
        v.validate(opts("digits_cnn_int8", "host", tmp_path, port=running_mlp))
    cnn_hash = read_tflite(model("digits_cnn_int8")).content_hash()
    assert cnn_hash in str(err.value)
    # The same device, expected as what it is, validates.
    report = v.validate(opts("digits_mlp_int8", "host", tmp_path, port=running_mlp, samples=5))
    assert report.agreement.all_exact


# ---------------------------------------------------------------------------------------------
# Refusals that happen before anything is built or started


def test_a_model_too_large_is_refused_before_building(tmp_path: Path) -> None:
    npz = tmp_path / "vww.npz"
    np.savez(npz, x=np.zeros((2, 96, 96, 3), np.float32))
    o = v.ValidateOptions(model=model("vww_mobilenet_int8"), board="microbit", data=str(npz),
                          out_dir=tmp_path / "fw")
    with pytest.raises(DoesNotFit) as err:
        v.validate(o)
    e = err.value
    assert e.board == "microbit" and e.needed > e.available
    assert f"needs {e.needed:,} bytes, {e.available:,} bytes available" in str(e)
    assert not (tmp_path / "fw").exists()  # nothing generated, built or flashed
    result = CliRunner().invoke(app, ["validate", str(model("vww_mobilenet_int8")), "--board", "microbit",
                                      "--data", str(npz), "--out", str(tmp_path / "fw")])
    assert result.exit_code == 2
    assert re.search(r"does not fit microbit: needs [\d,]+ bytes, [\d,]+ bytes available", result.output)


def test_dry_run_lists_the_exact_commands_and_runs_nothing(tmp_path: Path) -> None:
    out = tmp_path / "fw"
    plan = v.dry_run(v.ValidateOptions(model=model("digits_cnn_int8"), board="mps2-an386", data="digits",
                                       out_dir=out, dry_run=True))
    assert len(plan.commands) == 1
    argv = list(plan.commands[0])
    assert argv[:-1] == ["qemu-system-arm", "-M", "mps2-an386", "-display", "none", "-monitor", "none",
                         "-icount", "shift=6", "-semihosting-config", "enable=on,target=native",
                         "-kernel", str(out / "build" / "firmware-mps2-an386-<hash>" / "firmware.elf"),
                         "-serial"]
    assert re.fullmatch(r"tcp:127\.0\.0\.1:\d+,server=on,wait=off,nodelay=on", argv[-1])
    assert any(s.startswith("# build firmware") and "arm-none-eabi-gcc" in s for s in plan.steps)
    assert not out.exists()
    # The Pi profile under qemu-user, and the CLI's JSON.
    result = CliRunner().invoke(app, ["validate", str(model("digits_stream_int8")), "--board", "rpi3-32bit",
                                      "--data", "digits", "--out", str(out), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["dry_run"] is True and doc["schema"] == "boardfit.validate/1"
    program = str(out / "build" / "firmware-rpi3-32bit-<hash>" / "firmware")
    assert doc["commands"] == [["qemu-arm", "-cpu", "cortex-a7", program, "-"]]
    assert any("x 3 frames" in s for s in doc["steps"])
    assert not out.exists()


def test_dry_run_on_a_real_board_flashes_then_uses_the_port(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOARDFIT_LOCAL_CONFIG", str(tmp_path / "no-local.toml"))
    out = tmp_path / "fw"
    o = v.ValidateOptions(model=model("digits_cnn_int8"), board="nucleo-l4r5zi", data="digits", out_dir=out,
                          port="/dev/ttyACM0", runner="openocd", dry_run=True)
    plan = v.dry_run(o)
    elf = out / "build" / "firmware-nucleo-l4r5zi-<hash>" / "firmware.elf"
    assert plan.commands == (("openocd", "-f", "board/st_nucleo_l4.cfg", "-c",
                              f"program {{{elf}}} verify reset exit"),)
    assert "# open the serial port /dev/ttyACM0" in plan.steps
    # st-flash converts the image with objcopy first: without an image its commands are not
    # known, and the dry run says so instead of failing.
    plan = v.dry_run(dataclasses.replace(o, runner=None))
    assert plan.commands == ()
    assert any(s.startswith("# flash with st-flash") for s in plan.steps)
    assert not out.exists()


def test_calibration_data_without_a_spec_is_refused(tmp_path: Path) -> None:
    # (validating with --spec is tested in tests/test_compressed_build.py)
    with pytest.raises(BoardfitError, match="--calib is calibration data for a --spec"):
        v.validate(opts("digits_mlp_int8", "host", tmp_path, calib="digits:calib"))


# ---------------------------------------------------------------------------------------------
# Emulated boards


@pytest.mark.qemu
@pytest.mark.cross
@pytest.mark.parametrize("board", ["rpi4", "rpi3-32bit"])
def test_raspberry_pi_profiles_under_qemu_user(board: str, tmp_path: Path) -> None:
    if shutil.which("qemu-aarch64" if board == "rpi4" else "qemu-arm") is None:
        pytest.skip("needs qemu-user")
    report = v.validate(opts("digits_cnn_int8", board, tmp_path, samples=20))
    check_exact(report, "digits_cnn_int8", 20)
    assert report.runner == "qemu-user" and report.counts is not None
    assert report.counts.unit == "nanoseconds"


@pytest.mark.qemu
@pytest.mark.cross
def test_cortex_m4_in_qemu_counts_instructions_deterministically(tmp_path: Path) -> None:
    if shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("needs qemu-system-arm and arm-none-eabi-gcc")
    report = v.validate(opts("digits_cnn_int8", "mps2-an386", tmp_path, samples=20))
    check_exact(report, "digits_cnn_int8", 20)
    c = report.counts
    assert c is not None and c.unit == "instructions" and c.clock_hz == 25_000_000
    assert c.minimum > 1000
    assert report.per_layer and sum(la.count for la in report.per_layer) <= c.mean
    fp = report.footprint
    assert fp.measured is not None and fp.image_flash_bytes is not None
    assert fp.image_flash_bytes > fp.measured.flash_bytes


@needs_gcc
def test_cli_json_and_exit_codes(tmp_path: Path, broken_kernel: Callable[[str], None]) -> None:
    args = ["validate", str(model("digits_mlp_int8")), "--board", "host", "--data", "digits",
            "--samples", "8", "--out", str(tmp_path / "fw"), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["schema"] == "boardfit.validate/1" and doc["ok"] is True
    assert doc["bit_exact"] == doc["inferences"] == 8 and doc["agreement"] == 1.0
    assert doc["counts_unit"] == "nanoseconds" and doc["cycles_per_inference"] > 0
    assert doc["accuracy"] == pytest.approx(interpreter_accuracy("digits_mlp_int8", 8))
    # An oracle that computes something else for one op: a mismatch is exit code 1, not an error.
    broken_kernel("SOFTMAX")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    doc = json.loads(result.output)
    assert doc["ok"] is False and doc["bit_exact"] < doc["inferences"] and doc["max_abs_error"] >= 1
