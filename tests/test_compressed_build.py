"""Compressed models through the code generator, on the host and on the emulated Cortex-M4.

For every compression method (int8, quant 4/2, kmeans, prune plain / Huffman per layer /
Huffman decoded once at boot, N:M, binary BWN / XNOR, low rank SVD / separable / 1x1 basis, and
whole-channel pruning as a graph rewrite) on the digits example models, compressed the way
``boardfit compress`` does it (``--data digits``: the calibration half drives recovery):

* **host** — the generated project (this machine's kernel variants) built as a shared library
  and run through cffi gives outputs bit-identical to ``CompressedModel.simulate`` (the host
  simulation: every layer's numpy forward) on held-out samples; one mixed model also runs under
  AddressSanitizer and UndefinedBehaviorSanitizer;
* **sizes** — the firmware for ``mps2-an386`` (Cortex-M4, its kernel variants): every layer's
  weight bytes are its ``Option.flash_bytes``, its persistent scratch its
  ``Option.persistent_ram_bytes``, and the predicted weights, params, arena, state and
  persistent bytes equal the sections ``arm-none-eabi-size -A`` measures in the linked ELF;
* **device** — ``boardfit validate --board mps2-an386 --spec`` (the Python API) in QEMU: every
  output of every sample bit-exact with the host simulation, and the device reports the
  compression's plan hash.

Each model is compressed once per spec and built once per target (module caches); validate
reuses the firmware the size test linked (builds are content-addressed).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from firmware_gen.program import NO_PLAN_HASH, compressed_plan_hash
from firmware_gen.project import FAMILY_DEPENDENCIES, GeneratedProject, generate_project, with_dependencies
from targets.toolchains import compile_objects, host_toolchain
from toolkit.boards import load_board
from toolkit.build import (
    FirmwareBuild,
    HostModel,
    build_firmware,
    build_host_executable,
    compress_for_build,
    run_host_executable,
)
from toolkit.cli import app
from toolkit.compress.base import Setting
from toolkit.compress.model import CompressedModel
from toolkit.compress.prune_structured import prune_channels
from toolkit.compress.spec import CompressionSpec, load_spec
from toolkit.datasets import Dataset, load_dataset, prepare_inputs, split_calibration
from toolkit.errors import BuildError, ProtocolError
from toolkit.model.ir import Graph
from toolkit.model.tflite import read_tflite
from toolkit.validate import validate as v

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
KERNELS = Path(__file__).resolve().parents[1] / "firmware_gen" / "kernels"
DATA = "digits"  # split into calibration and test halves, as boardfit compress does
SAMPLES = 20
BOARD = "mps2-an386"

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
needs_arm = pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="needs arm-none-eabi-gcc")
needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-arm") is None, reason="needs qemu-system-arm")


S = Setting.of
PRUNE = {"sparsity": 0.8, "bits": 4}


def every(setting: Setting) -> CompressionSpec:
    """Every compressible layer with ``setting`` (a ``[default]`` table)."""
    return CompressionSpec(setting)


def on(ops: tuple[int, ...], setting: Setting) -> CompressionSpec:
    """``[layers.<i>]`` tables with ``setting`` for the ``ops``."""
    return CompressionSpec(None, {str(i): setting for i in ops})


def layers(**by_index: Setting) -> CompressionSpec:
    """``[layers.<i>]`` tables: ``layers(l0=..., l5=...)``."""
    return CompressionSpec(None, {key.removeprefix("l"): value for key, value in by_index.items()})


# (model, case) -> spec.  Layers of the digits CNN: 0 CONV_2D 1->8 (3x3), 1 DEPTHWISE 8 (3x3),
# 2 CONV_2D 8->16 (1x1), 5 FULLY_CONNECTED 256->10; of the MLP: FULLY_CONNECTED 0, 1, 2.
SPECS: dict[tuple[str, str], CompressionSpec] = {
    ("mlp", "int8"): every(S("int8")),
    ("mlp", "quant4"): every(S("quant", bits=4)),
    ("mlp", "quant2"): every(S("quant", bits=2)),
    ("mlp", "kmeans4"): every(S("kmeans", bits=4)),
    ("mlp", "prune"): every(S("prune", **PRUNE)),
    ("mlp", "prune_huff_layer"): every(S("prune", **PRUNE, huffman="layer")),
    ("mlp", "prune_huff_boot"): every(S("prune", **PRUNE, huffman="boot")),
    ("mlp", "nm_2_4"): every(S("prune_structured", pattern="2:4", recover=False)),
    ("mlp", "bwn"): every(S("binary", mode="bwn")),
    ("mlp", "xnor"): every(S("binary", mode="xnor")),
    ("mlp", "svd"): every(S("lowrank", scheme="svd", rank=8)),
    ("mlp", "mixed_a"): layers(l0=S("prune", **PRUNE), l1=S("lowrank", scheme="svd", rank=16),
                               l2=S("binary", mode="xnor")),
    ("mlp", "mixed_b"): layers(l0=S("quant", bits=4), l1=S("prune", **PRUNE, huffman="boot"), l2=S("int8")),
    ("cnn", "int8"): every(S("int8")),
    ("cnn", "quant4"): every(S("quant", bits=4)),
    ("cnn", "quant2"): every(S("quant", bits=2)),
    ("cnn", "kmeans4"): every(S("kmeans", bits=4)),
    ("cnn", "prune"): every(S("prune", **PRUNE)),
    ("cnn", "prune_huff_layer"): every(S("prune", **PRUNE, huffman="layer")),
    ("cnn", "prune_huff_boot"): every(S("prune", **PRUNE, huffman="boot")),
    ("cnn", "nm_2_4"): every(S("prune_structured", pattern="2:4")),
    ("cnn", "bwn"): on((0, 2, 5), S("binary", mode="bwn")),  # the depthwise layer cannot be binarized
    ("cnn", "xnor"): on((0, 2, 5), S("binary", mode="xnor")),
    ("cnn", "separable"): on((0,), S("lowrank", scheme="separable", rank=2)),  # the only KxK conv
    ("cnn", "basis"): on((0, 2), S("lowrank", scheme="basis", rank=3)),
    ("cnn", "svd"): layers(l5=S("lowrank", scheme="svd", rank=4)),
    ("cnn", "mixed_a"): layers(l0=S("lowrank", scheme="basis", rank=3),
                               l1=S("prune", **PRUNE, huffman="boot"),
                               l2=S("kmeans", bits=4), l5=S("binary", mode="bwn")),
    ("cnn", "mixed_b"): layers(l0=S("lowrank", scheme="separable", rank=2),
                               l1=S("prune_structured", pattern="2:4"), l2=S("quant", bits=2),
                               l5=S("prune", **PRUNE, huffman="layer")),
    # Whole output channels: 4 of conv 2's 16 channels removed by a graph rewrite (through the
    # pooling and the flattening reshape into the dense layer), then 4-bit weights.
    ("cnn_channels", "quant4"): every(S("quant", bits=4)),
}
CASES = sorted(SPECS)
# Run on the emulated board: every kernel format at least once on a conv, depthwise or dense layer.
DEVICE_CASES = [("mlp", "mixed_a"), ("mlp", "mixed_b"), ("cnn", "mixed_a"), ("cnn", "mixed_b"),
                ("cnn", "xnor"), ("cnn", "prune")]
_FILES = {"mlp": "digits_mlp_int8", "cnn": "digits_cnn_int8", "cnn_channels": "digits_cnn_int8"}


def _id(case: tuple[str, str]) -> str:
    return f"{case[0]}-{case[1]}"


@dataclass(frozen=True, eq=False)
class Compressed:
    model: str
    name: str
    spec_path: Path
    cm: CompressedModel
    test_x: np.ndarray  # held-out samples in the graph's input shape

    @property
    def graph(self) -> Graph:
        return self.cm.graph


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("compressed_build")


_COMPRESSED: dict[tuple[str, str], Compressed] = {}
_HOST: dict[tuple[str, str], GeneratedProject] = {}
_FIRMWARE: dict[tuple[str, str], FirmwareBuild] = {}


def _base_graph(model: str) -> Graph:
    graph = dataclasses.replace(read_tflite(MODELS / f"{_FILES[model]}.tflite"), name=_FILES[model])
    if model == "cnn_channels":
        calib, _ = split_calibration(load_dataset(DATA), 0.5, 0)
        x = prepare_inputs(np.asarray(calib.x), graph, calib.name)
        graph = dataclasses.replace(prune_channels(graph, 2, 4, x).graph, name="digits_cnn_channels")
    return graph


def compressed(case: tuple[str, str], workdir: Path) -> Compressed:
    if case not in _COMPRESSED:
        model, name = case
        spec_path = workdir / f"{model}-{name}.toml"
        spec_path.write_text(SPECS[case].to_toml())
        cm, test = compress_for_build(_base_graph(model), load_spec(spec_path), DATA)
        assert test is not None
        x = prepare_inputs(np.asarray(test.x[:SAMPLES]), cm.graph, test.name)
        _COMPRESSED[case] = Compressed(model, name, spec_path, cm, x)
    return _COMPRESSED[case]


def host_project(case: tuple[str, str], workdir: Path) -> GeneratedProject:
    if case not in _HOST:
        c = compressed(case, workdir)
        _HOST[case] = generate_project(c.graph, workdir / "host" / _id(case), compressed=c.cm,
                                       predict_sizes=False)
    return _HOST[case]


def firmware(case: tuple[str, str], workdir: Path) -> FirmwareBuild:
    """The mps2-an386 firmware exactly as validate builds it (same directory and options)."""
    if case not in _FIRMWARE:
        c = compressed(case, workdir)
        _FIRMWARE[case] = build_firmware(c.graph, load_board(BOARD), workdir / "m4" / _id(case), debug=False,
                                         profile_layers=True, emulated=True, compressed=c.cm)
    return _FIRMWARE[case]


def simulate(c: Compressed) -> list[np.ndarray]:
    shape = c.graph.input_tensors[0].shape
    return [c.cm.simulate([x.reshape(shape)]).outputs[0] for x in c.test_x]


# ---------------------------------------------------------------------------------------------
# The program: calls, exact bytes, persistent scratch, plan hash (no compiler needed).


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_program_runs_every_layer_with_its_exact_storage(case: tuple[str, str], workdir: Path) -> None:
    c = compressed(case, workdir)
    program = host_project(case, workdir).program
    assert program.compressed_ops == tuple(sorted(c.cm.layers))
    assert program.plan_hash == compressed_plan_hash(c.cm) != NO_PLAN_HASH
    persistent = {b.op_index: b for b in program.persistent}
    for i, layer in c.cm.layers.items():
        assert program.calls[i].symbol == layer.option.kernel == layer.call.symbol
        # the layer's arrays in flash are exactly what the method promised
        assert program.layer_weights_bytes(i) == layer.option.flash_bytes, program.calls[i].symbol
        if layer.option.persistent_ram_bytes:
            assert persistent[i].nbytes == layer.option.persistent_ram_bytes
            assert persistent[i].offset % 8 == 0
            with pytest.raises(KeyError):
                program.arena.scratch_offset(i)  # never in the shared arena
        else:
            assert i not in persistent
    layer_tensors = {t for i in c.cm.layers for t in program.calls[i].input_tensors}
    others = sum(w.nbytes for w in program.weights if w.op_index < 0 and w.tensor not in layer_tensors)
    assert program.weights_bytes == c.cm.flash_bytes + others
    assert (program.persistent_bytes > 0) == any(b.nbytes for b in program.persistent)


def test_plan_hash_names_the_spec_and_the_calibrated_storage(workdir: Path) -> None:
    a = compressed(("cnn", "mixed_a"), workdir).cm
    again, _ = compress_for_build(a.graph, SPECS[("cnn", "mixed_a")], DATA)
    assert compressed_plan_hash(again) == compressed_plan_hash(a)
    other_spec = compressed(("cnn", "mixed_b"), workdir).cm
    assert compressed_plan_hash(other_spec) != compressed_plan_hash(a)
    other_data, _ = compress_for_build(a.graph, SPECS[("cnn", "mixed_a")], None, "digits:calib")
    assert compressed_plan_hash(other_data) != compressed_plan_hash(a)


def test_a_compression_of_another_graph_is_refused(workdir: Path) -> None:
    from firmware_gen.program import build_program

    mlp = compressed(("mlp", "quant4"), workdir).cm
    cnn = compressed(("cnn", "quant4"), workdir).graph
    with pytest.raises(BuildError, match="another graph"):
        build_program(cnn, compressed=mlp)


@needs_gcc
def test_family_dependencies_link_every_kernel_source() -> None:
    """Each ref family compiled with the families project.FAMILY_DEPENDENCIES names for it
    defines every bf_ function it calls (and needs no family the table leaves out)."""
    ref = KERNELS / "ref"
    sources = sorted(ref.glob("*.c"))
    objects = compile_objects(host_toolchain(), sources, include_dirs=[KERNELS / "include", ref])
    defined, undefined = {}, {}
    for src, obj in zip(sources, objects, strict=True):
        nm = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout.split("\n")
        defined[src.stem] = {ln.split()[-1] for ln in nm if " T bf_" in ln}
        undefined[src.stem] = {ln.split()[-1] for ln in nm if " U bf_" in ln}
    for family in defined:
        deps = set(with_dependencies([family])) - {family}
        provided = set().union(*(defined[d] for d in deps)) if deps else set()
        assert undefined[family] <= provided, family
        assert all(undefined[family] & defined[d] for d in FAMILY_DEPENDENCIES.get(family, ())), family


# ---------------------------------------------------------------------------------------------
# Host: the generated C through cffi, bit for bit.


@needs_gcc
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_host_build_is_bit_exact_with_the_simulation(case: tuple[str, str], workdir: Path) -> None:
    c = compressed(case, workdir)
    model = HostModel.build(host_project(case, workdir))
    shape = c.graph.input_tensors[0].shape
    expected = simulate(c)
    for k, x in enumerate(c.test_x):
        got = model.run([x.reshape(shape)])[0]
        np.testing.assert_array_equal(got, expected[k], err_msg=f"sample {k}")
    # a second pass: persistent tables decoded once stay right, nothing carries over
    np.testing.assert_array_equal(model.run([c.test_x[0].reshape(shape)])[0], expected[0])


@needs_gcc
@pytest.mark.parametrize("case", [("cnn", "mixed_a"), ("mlp", "mixed_a")], ids=_id)
def test_host_build_is_clean_under_sanitizers(case: tuple[str, str], workdir: Path) -> None:
    c = compressed(case, workdir)
    exe = build_host_executable(host_project(case, workdir), sanitize=True)
    shape = c.graph.input_tensors[0].shape
    outs = run_host_executable(exe, host_project(case, workdir).program,
                               [[x.reshape(shape)] for x in c.test_x[:5]])
    for got, want in zip(outs, simulate(c)[:5], strict=False):
        np.testing.assert_array_equal(got[0], want)


@needs_gcc
def test_float_model_is_quantized_then_compressed(workdir: Path) -> None:
    """A float model with a spec: post-training quantization on the calibration half, then the
    spec; the device program is the int8 graph's."""
    graph = dataclasses.replace(read_tflite(MODELS / "digits_cnn_float.tflite"), name="digits_cnn_float")
    cm, test = compress_for_build(graph, SPECS[("cnn", "mixed_b")], DATA)
    assert test is not None and cm.float_graph is graph
    project = generate_project(cm.graph, workdir / "host" / "cnn-float", compressed=cm, predict_sizes=False)
    model = HostModel.build(project)
    x = prepare_inputs(np.asarray(test.x[:8]), cm.graph, test.name)
    for sample in x:
        sample = sample.reshape(cm.graph.input_tensors[0].shape)
        np.testing.assert_array_equal(model.run([sample])[0], cm.simulate([sample]).outputs[0])


@needs_gcc
def test_cli_build_with_a_spec_reports_exact_layer_bytes(workdir: Path) -> None:
    c = compressed(("cnn", "mixed_a"), workdir)
    out = workdir / "cli-build"
    res = CliRunner().invoke(app, ["build", str(MODELS / "digits_cnn_int8.tflite"), "--spec",
                                   str(c.spec_path), "--data", DATA, "--board", "host", "-o", str(out),
                                   "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["plan_hash"] == compressed_plan_hash(c.cm)
    layers = {row["op_index"]: row for row in doc["compressed_layers"]}
    assert sorted(layers) == sorted(c.cm.layers)
    for i, layer in c.cm.layers.items():
        assert layers[i]["kernel"] == layer.option.kernel
        assert layers[i]["weights_bytes"] == layer.option.flash_bytes
        assert layers[i]["persistent_bytes"] == layer.option.persistent_ram_bytes
    assert doc["persistent_bytes"] == doc["measured"]["persistent_bytes"] > 0
    assert doc["weights_bytes"] == doc["measured"]["weights_bytes"]
    assert doc["ram_bytes"] == doc["arena_bytes"] + doc["state_bytes"] + doc["persistent_bytes"]
    bad = CliRunner().invoke(app, ["build", str(MODELS / "digits_cnn_int8.tflite"), "--data", DATA,
                                   "-o", str(out)])
    assert bad.exit_code == 2 and "give --spec or --plan" in bad.output


# ---------------------------------------------------------------------------------------------
# Cortex-M4: predicted bytes are the ELF's.


@needs_arm
@pytest.mark.cross
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_m4_sizes_are_the_elf_sections(case: tuple[str, str], workdir: Path) -> None:
    c = compressed(case, workdir)
    fw = firmware(case, workdir)
    predicted, measured = fw.report.predicted, fw.report.measured
    assert measured is not None and fw.report.measured_from == "image"
    assert predicted.weights_bytes == measured.weights_bytes
    assert predicted.params_bytes == measured.params_bytes
    assert predicted.arena_bytes == measured.arena_bytes
    assert predicted.state_bytes == measured.state_bytes
    assert predicted.persistent_bytes == measured.persistent_bytes
    assert predicted.persistent_bytes == sum(-(-layer.option.persistent_ram_bytes // 8) * 8
                                             for layer in c.cm.layers.values())
    program = fw.program
    for i, layer in c.cm.layers.items():
        assert program.layer_weights_bytes(i) == layer.option.flash_bytes
    assert abs(measured.code_bytes - predicted.code_bytes) <= 0.1 * measured.code_bytes


# ---------------------------------------------------------------------------------------------
# Cortex-M4 in QEMU: boardfit validate --spec.


def _validate(case: tuple[str, str], workdir: Path) -> v.rep.ValidateReport:
    c = compressed(case, workdir)
    firmware(case, workdir)  # the same build: validate reuses it
    opts = v.ValidateOptions(model=MODELS / f"{_FILES[case[0]]}.tflite", board=BOARD, data=DATA,
                             samples=SAMPLES, spec=c.spec_path, out_dir=workdir / "m4" / _id(case))
    return v.validate(opts)


@needs_arm
@needs_qemu
@pytest.mark.qemu
@pytest.mark.cross
@pytest.mark.parametrize("case", DEVICE_CASES, ids=_id)
def test_m4_validate_is_bit_exact_with_the_simulation(case: tuple[str, str], workdir: Path) -> None:
    c = compressed(case, workdir)
    report = _validate(case, workdir)
    assert report.agreement.inferences == SAMPLES
    assert report.agreement.bit_exact == SAMPLES and report.agreement.max_abs_error == 0 and report.ok
    assert report.device.plan_hash == compressed_plan_hash(c.cm)
    # the oracle's accuracy is the simulation's on the same held-out samples
    test = _test_half()
    sim = np.array([int(np.argmax(y)) for y in simulate(c)])
    assert test.y is not None
    assert report.oracle_accuracy == pytest.approx(float(np.mean(sim == test.y[:SAMPLES])))
    assert report.accuracy == report.oracle_accuracy
    fp = report.footprint
    assert fp.measured is not None and fp.predicted.persistent_bytes == fp.measured.persistent_bytes
    assert fp.predicted.weights_bytes == fp.measured.weights_bytes


def _test_half() -> Dataset:
    _, test = split_calibration(load_dataset(DATA), 0.5, 0)
    return test


@needs_arm
@needs_qemu
@pytest.mark.qemu
@pytest.mark.cross
def test_m4_device_with_another_compression_is_refused(workdir: Path) -> None:
    """A device flashed with spec A is not validated against spec B (plan hash)."""
    a, b = ("cnn", "mixed_a"), ("cnn", "mixed_b")
    fw_a = firmware(a, workdir)
    sizes = v.rep.SizeFigures(0, 0, 0, 0, 0)
    footprint = v.rep.Footprint(sizes, None, "", None, None, None, None)
    plan_b = compressed_plan_hash(compressed(b, workdir).cm)

    def build_a(*args: object, **kw: object) -> v.DeviceProgram:
        # spec A's firmware, announced as spec B's: only the device's own report can tell
        return v.DeviceProgram(fw_a.artifact, footprint, "", fw_a.model_hash, plan_b, False)

    opts = v.ValidateOptions(model=MODELS / "digits_cnn_int8.tflite", board=BOARD, data=DATA, samples=2,
                             spec=compressed(b, workdir).spec_path, out_dir=workdir / "m4" / "refused")
    with pytest.raises(ProtocolError, match="plan"):
        v.validate(opts, build=build_a)



@needs_gcc
def test_cli_build_with_a_plan_uses_its_spec_and_calibration(workdir: Path) -> None:
    """``--plan plan.json`` builds the plan's compression, calibrated on the plan's own split."""
    import hashlib

    from toolkit.planner.plan import Plan, PlanBudgets, PlannedLayer, PlanTotals, SampleSet, save_plan

    c = compressed(("mlp", "mixed_b"), workdir)
    path = MODELS / "digits_mlp_int8.tflite"
    rows = tuple(PlannedLayer(i, "", c.graph.ops[i].opcode, layer.option.setting, layer.option.kernel, "ref",
                              layer.option.flash_bytes, 0, layer.option.ram_bytes,
                              layer.option.persistent_ram_bytes, layer.option.macs, 0.0, None, False)
                 for i, layer in sorted(c.cm.layers.items()))
    totals = PlanTotals(0, 0, None, None, 0.0, None, None, None, None, None)
    plan = Plan(str(path), hashlib.sha256(path.read_bytes()).hexdigest(), c.graph.content_hash(), False,
                "host", "gcc", PlanBudgets(None, None), rows, totals, SampleSet(DATA, 1, (0,)), None)
    save_plan(plan, workdir / "plan.json")
    res = CliRunner().invoke(app, ["build", str(path), "--plan", str(workdir / "plan.json"),
                                   "--board", "host", "-o", str(workdir / "cli-plan"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["plan_hash"] == compressed_plan_hash(c.cm)
    other = CliRunner().invoke(app, ["build", str(MODELS / "digits_cnn_int8.tflite"), "--plan",
                                     str(workdir / "plan.json"), "-o", str(workdir / "cli-plan-cnn")])
    assert other.exit_code == 2 and "was planned for" in other.output
