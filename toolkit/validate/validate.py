"""``boardfit validate``: build, flash (or emulate), stream a data set, compare, report.

The flow, each step a function below:

1. read the model and the data set (labels from the data set), choose the evaluation
   sequences: a stateful (streaming) model is reset before every sample and fed it
   ``frames`` times, as its example README prescribes; a stateless one gets one inference
   per sample;
2. size pre-check on the exact program (weights, parameters, arena and state are exact before
   anything is compiled): a model that cannot fit raises :class:`~toolkit.errors.DoesNotFit`
   with the bytes needed and available, before any build or flash;
3. build the device program for the board (:func:`toolkit.build.build_firmware`: Cortex-M firmware,
   a static Linux program, or a host program); the runner refuses an oversized image again;
4. start it (runner: QEMU system or user mode, a host program on a pty, or flash a real board
   and use ``--port``), synchronise over the serial link and refuse a device whose model or
   plan hash is not the one built;
5. stream the samples (chunked SET_INPUT, INVOKE, GET_OUTPUT), compare every output with the
   host oracle in TFLite Micro arithmetic (bit-exact expected), read the per-inference count
   and the per-layer counts when the firmware profiles layers; with ``layerwise`` (a debug
   build) read every intermediate tensor and name the first op whose output diverges;
6. run the TFLite interpreter (reference kernels) on the same samples for
   ``reference_accuracy``.

With ``spec`` (a compression spec, docs/compression.md) the device runs the compressed model:
step 1 compresses the model as ``boardfit compress`` does — ``data`` is split into calibration
and test halves (:func:`toolkit.compress.pipeline.split_data`) unless ``calib`` is given, a float
model is first quantized on the calibration half — and streams the test half; the oracle of
step 5 is the host simulation of the compressed model
(:meth:`~toolkit.compress.model.CompressedModel.simulate`: every compressed layer's numpy
forward, bit-identical to its kernel), and the device must report the compression's plan hash
(:func:`firmware_gen.program.compressed_plan_hash`).  ``reference_accuracy`` stays the TFLite
interpreter on the original model, so the report shows what the compression cost.

``dry_run`` does steps 1–2 (pure Python) and records, without running anything, the build and
every runner command.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from toolkit.errors import BoardfitError, BuildError, DataError, ProtocolError, RunnerError
from toolkit.validate import report as rep

if TYPE_CHECKING:
    import serial

    from firmware_gen.program import ModelProgram
    from targets.runners import CommandLog, Runner, Session
    from toolkit.boards import Board
    from toolkit.compress.model import CompressedModel
    from toolkit.datasets import Dataset
    from toolkit.model.ir import Graph
    from toolkit.oracle import Oracle
    from toolkit.validate.link import DeviceLink

log = logging.getLogger(__name__)

HOST_BOARD: Final = "host"
ZERO_HASH: Final = "00" * 32
EXAMPLES_INDEX: Final = Path(__file__).resolve().parents[2] / "examples" / "models" / "models.json"

# The host "board": this machine, running the device program on a pty (HostRunner).  Budgets
# are nominal (a process is limited by the OS, not by these numbers).
_HOST_BOARD_TOML: Final = """
id = "host"
name = "this machine (host program on a pty)"
description = "The device program compiled for this machine; it speaks the serial protocol on a pty."
kind = "host"
family = "host"
core = "host"
arch = "native"
features = []
[memory.flash]
size = 1_073_741_824
reserved = 1_048_576
[memory.ram]
size = 1_073_741_824
reserved = 16_777_216
stack = 8_388_608
heap = 0
[toolchain]
prefix = ""
cc = "gcc"
cflags = []
ldflags = []
libc = "glibc"
packages = ["gcc", "libc6-dev"]
[uart]
kind = "posix"
baud = 115_200
connection = "a pty opened by boardfit"
[timer]
kind = "clock_gettime"
frequency_hz = 1_000_000_000
[[runner]]
kind = "host"
"""


@dataclass(frozen=True)
class ValidateOptions:
    """What ``boardfit validate`` was asked (see the CLI for the meaning of each)."""

    model: Path
    board: str
    data: str
    samples: int = 100  # 0 = every sample of data
    port: str | None = None
    layerwise: bool = False
    spec: Path | None = None  # compression spec (TOML): validate the compressed model
    calib: str | None = None  # calibration data for --spec (then all of data is test data)
    dry_run: bool = False
    frames: int | None = None  # inferences per sample for stateful models (None: the example's)
    out_dir: Path | None = None  # firmware build directory (None: a cache directory)
    runner: str | None = None  # preferred runner kind
    profile_layers: bool = True
    invoke_timeout: float = 120.0


# ---------------------------------------------------------------------------------------------
# Step 1: model, board, data


def host_board() -> Board:
    from toolkit.boards import parse_board

    return parse_board(_HOST_BOARD_TOML, "<host board>")


def resolve_board(name: str) -> Board:
    from toolkit.boards import board_ids, load_board

    if name == HOST_BOARD and HOST_BOARD not in board_ids():
        return host_board()
    return load_board(name)


@dataclass(frozen=True)
class Workload:
    """The evaluation: ``inputs[k]`` is sample k (shaped and typed for the model's input),
    fed ``frames`` times after a reset when ``stateful``; ``labels`` or None."""

    inputs: np.ndarray
    labels: np.ndarray | None
    frames: int
    stateful: bool
    source: str

    @property
    def samples(self) -> int:
        return int(self.inputs.shape[0])

    def sequences(self) -> Iterator[tuple[int, list[np.ndarray]]]:
        """(sample index, the inference inputs of that sample in order)."""
        for k in range(self.samples):
            yield k, [self.inputs[k]] * self.frames


def example_frames(raw: bytes) -> int | None:
    """``frames_per_sample`` of a committed example model (matched by file hash), else None."""
    try:
        index = json.loads(EXAMPLES_INDEX.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    digest = hashlib.sha256(raw).hexdigest()
    for model in index.get("models", []):
        for f in model.get("files", {}).values():
            if f.get("sha256") == digest:
                frames = model.get("frames_per_sample")
                return int(frames) if isinstance(frames, int) and frames > 0 else None
    return None


def load_workload(graph: Graph, raw: bytes, data: str, samples: int, frames: int | None) -> Workload:
    from toolkit.datasets import load_dataset

    if len(graph.inputs) != 1:
        raise DataError(f"--data feeds one input; {graph.name} has {len(graph.inputs)}")
    return workload_of(graph, raw, load_dataset(data, graph), samples, frames)


def workload_of(graph: Graph, raw: bytes, ds: Dataset, samples: int, frames: int | None) -> Workload:
    """The evaluation of ``ds`` (already fitted to ``graph``'s input) on ``graph``."""
    if samples < 0:
        raise DataError(f"--samples must be 0 (all) or more, got {samples}")
    if frames is not None and frames < 1:
        raise DataError(f"--frames must be at least 1, got {frames}")
    n = len(ds) if samples == 0 else min(samples, len(ds))
    if n == 0:
        raise DataError(f"{ds.name} has no samples")
    shape = graph.input_tensors[0].shape
    x = np.asarray(ds.x[:n]).reshape((n, *shape))
    stateful = graph.is_stateful
    chosen = frames if frames is not None else (example_frames(raw) or 1) if stateful else 1
    if not stateful and chosen != 1:
        raise DataError(f"--frames {chosen}: {graph.name} keeps no state, each sample is one inference")
    labels = None if ds.y is None else np.asarray(ds.y[:n])
    return Workload(x, labels, chosen, stateful, f"{ds.name}")


def predictions(outputs: Sequence[np.ndarray]) -> int:
    """Top-1 class of a classifier's first output."""
    return int(np.argmax(np.asarray(outputs[0]).reshape(-1)))


def accuracy(preds: Sequence[int], labels: np.ndarray | None) -> float | None:
    if labels is None or not len(preds):
        return None
    return float(np.mean(np.asarray(preds) == labels[: len(preds)]))


# ---------------------------------------------------------------------------------------------
# Step 2: size pre-check on the exact program


def precheck(graph: Graph, board: Board, compressed: CompressedModel | None = None) -> ModelProgram:
    """Lower the graph (with its ``compressed`` layers) and refuse a model whose exact data bytes
    exceed the board's budgets.

    Weights, the parameter block (at 4-byte pointers, the smallest data model: a lower bound),
    the arena, the state and the persistent scratch are exact before anything is compiled; code
    is only known after a build, so this check can pass a model that then fails at link time
    (and is refused there)."""
    from firmware_gen import cdecl
    from firmware_gen.program import build_program

    program = build_program(graph, compressed=compressed)
    if board.kind == "host":
        return program
    params = program.params_bytes(cdecl.ILP32)
    board.check_fit(program.weights_bytes + params,
                    program.arena_bytes + program.state_bytes + program.persistent_bytes)
    return program


# ---------------------------------------------------------------------------------------------
# Step 3: build


@dataclass(frozen=True)
class DeviceProgram:
    """A built device program: what to start, its sizes and the hashes it will report."""

    artifact: Path
    footprint: rep.Footprint
    toolchain: str
    model_hash: str  # hex
    plan_hash: str  # hex
    debug: bool


def default_out_dir(graph: Graph, board: Board, debug: bool, plan_hash: str = ZERO_HASH) -> Path:
    from targets.toolchains import cache_dir

    plan = "" if plan_hash == ZERO_HASH else f"-plan{plan_hash[:12]}"
    tag = f"{graph.name}-{board.id}-{graph.content_hash()[:12]}{plan}{'-debug' if debug else ''}"
    return cache_dir() / "validate" / tag


def _figures(sizes: Any) -> rep.SizeFigures | None:
    if sizes is None:
        return None
    return rep.SizeFigures(sizes.weights_bytes, sizes.params_bytes, sizes.code_bytes,
                           sizes.arena_bytes, sizes.state_bytes, sizes.persistent_bytes)


def build_device_program(graph: Graph, board: Board, out_dir: Path, *, debug: bool,
                         profile_layers: bool, emulated: bool | None = None,
                         compressed: CompressedModel | None = None) -> DeviceProgram:
    """Generate, compile and link the device program of ``graph`` (with its ``compressed``
    layers) for ``board`` (:func:`toolkit.build.build_firmware`: it refuses a model over the
    board's budgets before compiling and an oversized image after linking).  ``emulated`` selects
    the emulator build of a bare-metal board (semihosting exit, instruction counter) or the real
    one (None: what the board's preferred runner needs)."""
    from toolkit.build import build_firmware

    host = board.kind == "host"
    fw = build_firmware(graph, None if host else board, out_dir, debug=debug, profile_layers=profile_layers,
                        emulated=emulated if board.kind == "mcu" else None, compressed=compressed)
    report = fw.report
    footprint = rep.Footprint(
        predicted=_figures(report.predicted) or rep.SizeFigures(0, 0, 0, 0, 0),
        measured=_figures(report.measured),
        measured_from=report.measured_from,
        image_flash_bytes=fw.image.flash,
        image_ram_bytes=fw.image.ram,
        flash_budget=None if host else board.flash_budget,
        ram_budget=None if host else board.ram_budget,
    )
    tc = fw.toolchain
    return DeviceProgram(Path(fw.artifact), footprint, f"{tc.name}: {tc.cc}", fw.model_hash,
                         fw.plan_hash, debug)


# ---------------------------------------------------------------------------------------------
# Step 4: start and connect


def make_board_runner(board: Board, opts: ValidateOptions, log_: CommandLog | None = None) -> Runner:
    from targets.runners import CommandLog, make_runner

    return make_runner(board, dry_run=opts.dry_run, port=opts.port, prefer=opts.runner,
                       log=log_ if log_ is not None else CommandLog(dry_run=opts.dry_run))


@contextmanager
def device_port(runner: Runner, artifact: Path, port: str | None) -> Iterator[serial.SerialBase]:
    """A serial link to the device running ``artifact``.

    The host board has no flasher: with ``port`` it attaches to a device program already
    running there (e.g. one started by hand on a pty) instead of starting one."""
    from toolkit.validate.link import open_port

    if runner.board.kind == "host" and port is not None:
        link = open_port(port)
        try:
            yield link
        finally:
            link.close()
        return
    with runner.start(artifact) as session:
        link = session.open_serial(timeout=0.01)
        try:
            yield link
        except ProtocolError as exc:
            _raise_if_dead(session, exc)
            raise
        finally:
            link.close()


def _raise_if_dead(session: Session, exc: ProtocolError) -> None:
    """A link failure because the device program or emulator died is reported as that death,
    quoting its stderr (e.g. "Invalid ELF image", "qemu: fatal: Lockup")."""
    if session.poll() is None:
        try:  # a program that closed its side of the link is about to exit
            session.wait(0.5)
        except RunnerError:
            return  # still running: a link problem, not a death
    try:
        session.check_alive()
    except RunnerError as dead:
        raise RunnerError(f"{dead}\n(the serial link reported: {exc})") from exc


def connect(port: serial.SerialBase, program: DeviceProgram, stateful: bool,
            invoke_timeout: float) -> DeviceLink:
    """Synchronise and refuse a device built from another model or plan."""
    from toolkit.validate.link import DeviceLink

    link = DeviceLink(port, timeout=1.0, invoke_timeout=invoke_timeout, stateful=stateful,
                      sync_timeout=15.0)
    link.sync()
    link.expect_hashes(program.model_hash, program.plan_hash)
    return link


# ---------------------------------------------------------------------------------------------
# Step 5: stream and compare


@dataclass
class _Agreement:
    inferences: int = 0
    bit_exact: int = 0
    elements: int = 0
    mismatched: int = 0
    max_abs: float = 0.0

    def add(self, device: Sequence[np.ndarray], oracle: Sequence[np.ndarray]) -> None:
        exact = True
        for d, o in zip(device, oracle, strict=True):
            diff = np.abs(np.asarray(d, np.float64).reshape(-1) - np.asarray(o, np.float64).reshape(-1))
            bad = int(np.count_nonzero(diff))
            exact = exact and bad == 0
            self.elements += diff.size
            self.mismatched += bad
            self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        self.inferences += 1
        self.bit_exact += int(exact)

    def result(self) -> rep.Agreement:
        return rep.Agreement(self.inferences, self.bit_exact, self.elements, self.mismatched, self.max_abs)


@dataclass
class _TensorDiff:
    elements: int = 0
    mismatched: int = 0
    max_abs: float = 0.0
    first_sample: int | None = None


@dataclass
class _Layerwise:
    """Per intermediate tensor (graph index) of a debug firmware, accumulated over inferences."""

    graph: Graph
    diffs: dict[int, _TensorDiff] = field(default_factory=dict)
    inferences: int = 0

    def add(self, inference: int, tensor: int, device: np.ndarray, oracle: np.ndarray) -> None:
        d = np.abs(np.asarray(device, np.float64).reshape(-1) - np.asarray(oracle, np.float64).reshape(-1))
        acc = self.diffs.setdefault(tensor, _TensorDiff())
        bad = int(np.count_nonzero(d))
        acc.elements += d.size
        acc.mismatched += bad
        acc.max_abs = max(acc.max_abs, float(d.max(initial=0.0)))
        if bad and acc.first_sample is None:
            acc.first_sample = inference

    def result(self) -> rep.Layerwise:
        return rep.Layerwise(len(self.diffs), self.inferences, self.first_divergence())

    def first_divergence(self) -> rep.Divergence | None:
        """The first op in execution order with a differing output tensor."""
        for op in self.graph.ops:
            for t in op.outputs:
                acc = self.diffs.get(t)
                if acc is not None and acc.mismatched:
                    name = self.graph.tensors[t].name
                    return rep.Divergence(op.index, op.opcode, t, name, acc.first_sample or 0,
                                          acc.mismatched, acc.elements, acc.max_abs)
        return None


@dataclass
class DeviceResults:
    """What streaming the workload through the device gave."""

    predictions: list[int]
    oracle_predictions: list[int]
    agreement: rep.Agreement
    counts: list[int]  # timer ticks per inference
    layer_ticks: list[list[int]]  # per profiled inference: ticks per layer (op index)
    layerwise: rep.Layerwise | None


def stream(link: DeviceLink, graph: Graph, work: Workload, layerwise: bool,
           oracle: Oracle | None = None) -> DeviceResults:
    """Run every sample on the device and on the oracle (TFLM arithmetic; default: the graph's,
    a compressed model passes its host simulation), in the same order and with the same resets,
    and compare."""
    from toolkit.oracle import Oracle

    if oracle is None:
        oracle = Oracle(graph)
    info = link.info()
    agree = _Agreement()
    lw = _Layerwise(graph) if layerwise else None
    if lw is not None and not info.debug:
        raise BuildError("--layerwise needs a debug firmware, the device reports none")
    preds: list[int] = []
    opreds: list[int] = []
    counts: list[int] = []
    layer_ticks: list[list[int]] = []
    inference = 0
    for _, frames in work.sequences():
        if work.stateful:
            link.reset_model()
            oracle.reset()
        for x in frames:
            result = link.run([x])
            if result.status != 0:
                raise BuildError(f"the device's model failed on inference {inference} "
                                 f"(status {result.status})")
            expected = oracle.run([x], keep_intermediates=lw is not None)
            agree.add(result.outputs, expected.outputs)
            counts.append(result.count)
            if info.profile:
                layer_ticks.append(link.layer_counts())
            if lw is not None:
                _compare_intermediates(link, lw, inference, expected.tensors, info.n_tensors)
            inference += 1
        preds.append(predictions(result.outputs))
        opreds.append(predictions(expected.outputs))
    return DeviceResults(preds, opreds, agree.result(), counts, layer_ticks,
                         None if lw is None else lw.result())


def _compare_intermediates(link: DeviceLink, lw: _Layerwise, inference: int,
                           oracle_tensors: dict[int, np.ndarray], n_tensors: int) -> None:
    for tid in range(n_tensors):
        spec = link.intermediate(tid)
        g = spec.graph_index
        if g < 0 or g not in oracle_tensors:
            continue
        lw.add(inference, g, link.get_tensor(tid), oracle_tensors[g])
    lw.inferences += 1


# ---------------------------------------------------------------------------------------------
# Step 6: the TFLite interpreter on the same data


def reference_predictions(raw: bytes, work: Workload) -> tuple[list[int], str]:
    """Top-1 of the TFLite interpreter (reference kernels) per sample, sequenced like the device;
    and the backend's name."""
    from toolkit.interp import ReferenceInterpreter, backend_name

    interp = ReferenceInterpreter(raw, reference_kernels=True)
    preds: list[int] = []
    for k, frames in work.sequences():
        if work.stateful and k:
            interp.reset_variables()
        for x in frames:
            outs = interp.run([x])
        preds.append(predictions(outs))
    return preds, backend_name()


# ---------------------------------------------------------------------------------------------
# Counts


def count_summary(runner: Runner, ticks: Sequence[int], clock_hz: int | None) -> rep.CountSummary | None:
    if not ticks:
        return None
    values = [runner.to_count(t) for t in ticks]
    return rep.CountSummary(runner.capabilities.counts, float(np.mean(values)), float(min(values)),
                            float(max(values)), clock_hz)


def per_layer(graph: Graph, runner: Runner,
              layer_ticks: Sequence[Sequence[int]]) -> tuple[rep.LayerCount, ...]:
    """Mean counts per op (layer index = op index, as the generated code numbers its hooks)."""
    if not layer_ticks:
        return ()
    from toolkit.model.summary import summarize

    macs = {la.index: la.macs for la in summarize(graph).layers}
    n = min(len(t) for t in layer_ticks)
    means = [float(np.mean([runner.to_count(t[i]) for t in layer_ticks])) for i in range(n)]
    rows = []
    for op in graph.ops:
        if op.index < n:
            name = graph.tensors[op.outputs[0]].name if op.outputs else ""
            rows.append(rep.LayerCount(op.index, op.opcode, name, macs.get(op.index, 0), means[op.index]))
    return tuple(rows)


# ---------------------------------------------------------------------------------------------
# The whole flow


def read_model(path: Path) -> tuple[Graph, bytes]:
    from toolkit.model.tflite import read_tflite

    raw = Path(path).read_bytes()
    graph = dataclasses.replace(read_tflite(raw), name=Path(path).stem)
    return graph, raw


@dataclass(frozen=True, eq=False)
class Prepared:
    """Step 1 done: what the device runs and on which samples.

    ``graph`` is the graph the device runs (with ``spec`` on a float model: its int8
    quantization); ``compressed`` its compressed layers (None without ``spec``); ``reference``
    the same samples prepared for the TFLite interpreter on the original model."""

    graph: Graph
    raw: bytes
    board: Board
    work: Workload
    reference: Workload
    compressed: CompressedModel | None
    plan_hash: str  # hex, what the device must report

    def oracle(self) -> Oracle:
        """What the device must compute: the oracle, or the compressed model's simulation."""
        from toolkit.oracle import Oracle

        return self.compressed.oracle() if self.compressed is not None else Oracle(self.graph)


def prepare(opts: ValidateOptions) -> Prepared:
    """Step 1 and 2: model, board, data, compression (with ``opts.spec``) and the size pre-check."""
    graph, raw = read_model(opts.model)
    board = resolve_board(opts.board)
    if opts.spec is None:
        if opts.calib is not None:
            raise DataError("--calib is calibration data for a --spec; without one nothing is compressed")
        precheck(graph, board)
        work = load_workload(graph, raw, opts.data, opts.samples, opts.frames)
        return Prepared(graph, raw, board, work, work, None, ZERO_HASH)
    from toolkit.build import compress_for_build
    from toolkit.compress.spec import load_spec

    cm, test = compress_for_build(graph, load_spec(opts.spec), opts.data, opts.calib)
    precheck(cm.graph, board, cm)
    if test is None or len(cm.graph.inputs) != 1:
        raise DataError(f"--data feeds one input; {graph.name} has {len(graph.inputs)}")
    from firmware_gen.program import compressed_plan_hash
    from toolkit.datasets import Dataset, prepare_inputs

    work = workload_of(cm.graph, raw, Dataset(prepare_inputs(np.asarray(test.x), cm.graph, test.name),
                                              test.y, test.name), opts.samples, opts.frames)
    ref_x = prepare_inputs(np.asarray(test.x)[: work.samples], graph, test.name)
    reference = dataclasses.replace(work, inputs=ref_x.reshape((work.samples, *graph.input_tensors[0].shape)))
    return Prepared(cm.graph, raw, board, work, reference, cm, compressed_plan_hash(cm))


def validate(opts: ValidateOptions, *, build: Callable[..., DeviceProgram] = build_device_program,
             ) -> rep.ValidateReport:
    """Build, start, stream, compare and report (see the module docstring)."""
    if opts.dry_run:
        raise BoardfitError("validate(): use dry_run() for a dry run")
    prep = prepare(opts)
    graph, board, work = prep.graph, prep.board, prep.work
    out_dir = opts.out_dir or default_out_dir(graph, board, opts.layerwise, prep.plan_hash)
    runner = make_board_runner(board, opts)
    # A real board reached through a flasher and --port gets the real build, never the
    # emulator's (whose semihosting calls would stop a real core).
    extra: dict[str, Any] = {} if prep.compressed is None else {"compressed": prep.compressed}
    program = build(graph, board, out_dir, debug=opts.layerwise, profile_layers=opts.profile_layers,
                    emulated=runner.kind == "qemu-system", **extra)
    if program.plan_hash != prep.plan_hash:
        raise BuildError(f"the device program reports plan hash {program.plan_hash}, the compression "
                         f"is {prep.plan_hash}")
    with device_port(runner, program.artifact, opts.port) as port:
        link = connect(port, program, work.stateful, opts.invoke_timeout)
        results = stream(link, graph, work, opts.layerwise, prep.oracle())
        device = _device_summary(link)
    ref_preds, backend = reference_predictions(prep.raw, prep.reference)
    labelled = work.labels is not None
    return rep.ValidateReport(
        model=str(opts.model), board=board.id, board_name=board.name, runner=runner.kind,
        emulated=board.emulated, data=work.source, samples=work.samples,
        frames_per_sample=work.frames, labelled=labelled,
        accuracy=accuracy(results.predictions, work.labels),
        reference_accuracy=accuracy(ref_preds, work.labels),
        oracle_accuracy=accuracy(results.oracle_predictions, work.labels),
        interpreter=backend, agreement=results.agreement,
        counts=count_summary(runner, results.counts, board.clock_hz),
        per_layer=per_layer(graph, runner, results.layer_ticks),
        footprint=program.footprint, device=device, layerwise=results.layerwise,
        artifact=str(program.artifact), toolchain=program.toolchain,
    )


def _device_summary(link: DeviceLink) -> rep.DeviceSummary:
    info = link.info()
    return rep.DeviceSummary(info.model_hash.hex(), info.plan_hash.hex(), info.arena_bytes,
                             info.max_payload, info.debug, info.n_layers if info.profile else 0,
                             link.stats.retransmissions, link.stats.resyncs)


def dry_run(opts: ValidateOptions) -> rep.DryRun:
    """Every step validate would take, with the runner's exact commands; runs nothing.

    The size pre-check runs (it is pure Python), so a model that cannot fit fails here too."""
    from targets.elf import ImageSizes
    from targets.runners import CommandLog

    prep = prepare(opts)
    graph, board, work = prep.graph, prep.board, prep.work
    out_dir = opts.out_dir or default_out_dir(graph, board, opts.layerwise, prep.plan_hash)
    # The program's directory is named by a hash of its compiled objects: unknown before a build.
    name = "firmware.elf" if board.kind == "mcu" else "firmware"
    target = "host" if board.kind == "host" else board.id
    artifact = out_dir / "build" / f"firmware-{target}-<hash>" / name
    kind = "debug firmware" if opts.layerwise else "firmware"
    compiler = "the host compiler" if board.kind == "host" else board.toolchain.cc
    what = f"{opts.model} compressed by {opts.spec}" if opts.spec is not None else f"{opts.model}"
    steps = [f"# build {kind} of {what} for {board.id} with {compiler} into {out_dir}"]
    record = CommandLog(dry_run=True)
    runner = make_board_runner(board, dataclasses.replace(opts, dry_run=True), record)
    # The image does not exist in a dry run; the pre-check above stood in for the fit check.
    runner.refuse_oversized = lambda image: ImageSizes(0, 0, 0)  # type: ignore[method-assign]
    if board.kind == "host" and opts.port is not None:
        steps.append(f"# attach to the device program on {opts.port}")
    else:
        try:
            with runner.start(artifact):
                pass
        except (OSError, BoardfitError) as exc:
            # st-flash, esptool and UF2 read the image to choose their commands.
            log.info("dry run: %s needs the built image: %s", runner.kind, exc)
            steps.append(f"# flash with {runner.kind}: its commands depend on the built image "
                         "(they are logged with -v when validate runs)")
    steps += [str(s) for s in record.steps]
    if runner.capabilities.flash:
        steps.append(f"# open the serial port {runner.port or '(from --port or the local configuration)'}")
    per = f" x {work.frames} frames, reset before each" if work.frames > 1 else ""
    steps += [
        f"# connect: sync, refuse unless model hash {graph.content_hash()} and plan hash {prep.plan_hash}",
        f"# stream {work.samples} samples{per} of {work.source}; compare every output with "
        + ("the compressed model's host simulation" if opts.spec is not None else "the oracle")
        + (" and every intermediate tensor" if opts.layerwise else ""),
        "# run the TFLite interpreter (reference kernels) on the same samples",
    ]
    return rep.DryRun(str(opts.model), board.id, tuple(steps), tuple(record.commands))
