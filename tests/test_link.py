"""DeviceLink against the real device runtime: host builds (gcc, and ASan/UBSan) of
firmware_gen/runtime + tests/fixtures/fake_model.c + platform_posix.c over ptys.

The fake model's function is known independently of the runtime (fake_model.c: out =
concat(a + 1, b + 1) wrapping, intermediates a+1, b+1, sums, invocation count), so every
output is compared with numpy's computation of it.  The fault-injection tests put a relay
between host and device that drops, corrupts, duplicates, inserts and delays bytes and kills
and restarts the device: every sample must end with the exact result or a ProtocolError.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import serial
from fixtures.pty_device import Faults, FaultyRelay, PtyDevice, sanitizer_findings
from fixtures.runtime_build import build, compiler, sanitizer_env

from toolkit.errors import ProtocolError
from toolkit.validate import protocol as p
from toolkit.validate.link import DeviceError, DeviceLink, DeviceResetError, LinkTimeout

pytestmark = pytest.mark.skipif(compiler() is None, reason="needs gcc")

MODEL_HASH = bytes(range(32))
PLAN_HASH = bytes(range(0xA0, 0xC0))
FAST = {"timeout": 0.15, "sync_timeout": 3.0, "ping_interval": 0.05}


def sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a = rng.integers(-128, 128, size=(1, 1200), dtype=np.int8)
    b = rng.integers(-128, 128, size=(2, 3, 7), dtype=np.int8)
    if (b.ravel()[:3] == 127).all():
        b[0, 0, 0] = 0
    return a, b


def expected(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    plus = [(x.astype(np.int16) + 1).astype(np.uint8).view(np.int8).ravel() for x in (a, b)]
    return np.concatenate(plus).reshape(1, 1242)


@pytest.fixture(scope="module", params=["device", "device-asan"])
def exe_env(request: pytest.FixtureRequest) -> tuple[str, dict[str, str] | None]:
    asan = request.param.endswith("asan")
    return str(build(request.param)), sanitizer_env() if asan else None


@pytest.fixture
def device(exe_env: tuple[str, dict[str, str] | None]) -> Iterator[PtyDevice]:
    dev = PtyDevice(exe_env[0], exe_env[1])
    yield dev
    run = dev.stop()
    assert not sanitizer_findings([run]), run.stderr


@pytest.fixture
def link(device: PtyDevice) -> Iterator[DeviceLink]:
    # No faults here: a generous timeout keeps a loaded machine from causing retransmissions.
    with DeviceLink.open(device.path, seed=1, **{**FAST, "timeout": 1.0}) as lk:
        yield lk


def test_info_and_tensor_specs(link: DeviceLink) -> None:
    info = link.info()
    assert (info.version, info.max_payload, info.arena_bytes) == (1, 512, 3744)
    assert (info.model_hash, info.plan_hash) == (MODEL_HASH, PLAN_HASH)
    assert (info.n_inputs, info.n_outputs, info.n_tensors, info.n_layers) == (2, 1, 4, 4)
    assert info.debug and info.profile
    assert (info.counter_kind, info.timer_hz) == (p.CounterKind.NANOSECONDS, 10**9)
    a, b = link.inputs
    (out,) = link.outputs
    assert (a.name, a.shape, a.dtype, a.scale, a.zero_point, a.graph_index) == (
        "a",
        (1, 1200),
        np.int8,
        0.5,
        -3,
        0,
    )
    assert (b.name, b.shape, b.nbytes, b.scale, b.zero_point) == ("b", (2, 3, 7), 42, 0.25, 5)
    assert (out.name, out.shape, out.nbytes, out.zero_point, out.graph_index) == (
        "out",
        (1, 1242),
        1242,
        -2,
        6,
    )
    sums = link.intermediate(2)
    assert (sums.name, sums.shape, sums.dtype, sums.kind) == (
        "sums",
        (2,),
        np.int32,
        p.TensorKind.INTERMEDIATE,
    )


def test_run_with_inputs_larger_than_a_frame(link: DeviceLink, rng: np.random.Generator) -> None:
    for _ in range(3):
        a, b = sample(rng)
        before = link.stats.requests
        result = link.run([a, b])
        assert result.status == 0 and result.count > 0
        assert result.counter_kind == p.CounterKind.NANOSECONDS
        np.testing.assert_array_equal(result.outputs[0], expected(a, b))
        # 1200 bytes need 3 SET_INPUT frames of at most 506 data bytes, 1242 need 3 GET_OUTPUT
        assert link.stats.requests - before == 3 + 1 + 1 + 3
    assert link.stats.retransmissions == 0


def test_intermediates_layer_counts_and_model_reset(link: DeviceLink, rng: np.random.Generator) -> None:
    for n in (1, 2):
        a, b = sample(rng)
        result = link.run([a, b])
        np.testing.assert_array_equal(
            link.get_tensor(0), (a.astype(np.int16) + 1).astype(np.uint8).view(np.int8)
        )
        np.testing.assert_array_equal(
            link.get_tensor(1), (b.astype(np.int16) + 1).astype(np.uint8).view(np.int8)
        )
        np.testing.assert_array_equal(
            link.get_tensor(2), [a.astype(np.int32).sum(), b.astype(np.int32).sum()]
        )
        assert link.get_tensor(3).tolist() == [n]
        counts = link.layer_counts()
        assert len(counts) == 4 and all(c > 0 for c in counts)
        assert sum(counts) <= result.count  # the layers are parts of the invocation
    link.reset_model()
    with pytest.raises(DeviceError, match="no valid output"):
        link.request(p.Command.GET_OUTPUT, p.read_payload(0, 0, 16))
    link.run(list(sample(rng)))
    assert link.get_tensor(3).tolist() == [1]


def test_model_failure_status_is_reported(link: DeviceLink, rng: np.random.Generator) -> None:
    a, b = sample(rng)
    b.ravel()[:3] = 127  # fake_model.c fails with 3 on this input
    result = link.run([a, b])
    assert (result.status, result.outputs) == (3, ())
    with pytest.raises(ProtocolError, match="no successful invocation"):
        link.get_output(0)
    with pytest.raises(DeviceError, match="no valid output"):
        link.request(p.Command.GET_OUTPUT, p.read_payload(0, 0, 16))


def test_expect_hashes(link: DeviceLink) -> None:
    link.expect_hashes(MODEL_HASH.hex(), PLAN_HASH)
    with pytest.raises(ProtocolError, match=r"model hash 000102.*expected ff.*refusing"):
        link.expect_hashes(b"\xff" * 32, PLAN_HASH)
    with pytest.raises(ProtocolError, match="plan hash a0a1"):
        link.expect_hashes(MODEL_HASH, bytes(32))
    with pytest.raises(ProtocolError, match="32 bytes"):
        link.expect_hashes("abcd", PLAN_HASH)


def test_device_refuses_inputs_it_does_not_have(link: DeviceLink, rng: np.random.Generator) -> None:
    a, b = sample(rng)
    link.run([a, b])
    with pytest.raises(ProtocolError, match=r"inputs \[0, 1\] were not set"):
        link.invoke()
    # The model overwrote its inputs: the CRCs of the old ones no longer match on the device.
    crcs = [p.crc32(a.tobytes()), p.crc32(b.tobytes())]
    with pytest.raises(DeviceError, match="input bytes on the device differ") as err:
        link.request(p.Command.INVOKE, p.invoke_payload(crcs))
    assert err.value.reply.detail == 0
    link.set_input(0, a)
    link.set_input(1, b)
    with pytest.raises(DeviceError, match="no valid output"):
        link.request(p.Command.GET_OUTPUT, p.read_payload(0, 0, 16))


@pytest.mark.parametrize(
    ("command", "payload", "error"),
    [
        (p.Command.TENSOR_INFO, p.tensor_info_payload(p.TensorKind.INPUT, 2), p.ErrorCode.RANGE),
        (p.Command.TENSOR_INFO, p.tensor_info_payload(p.TensorKind.INTERMEDIATE, 4), p.ErrorCode.RANGE),
        (p.Command.SET_INPUT, p.set_input_payload(1, 40, b"abc"), p.ErrorCode.RANGE),
        (p.Command.SET_INPUT, p.set_input_payload(1, 0xFFFFFFFF, b"a"), p.ErrorCode.RANGE),
        (p.Command.SET_INPUT, p.set_input_payload(2, 0, b"a"), p.ErrorCode.RANGE),
        (p.Command.SET_INPUT, b"\x00", p.ErrorCode.BAD_PAYLOAD),
        (p.Command.INVOKE, b"\x00" * 4, p.ErrorCode.BAD_PAYLOAD),
        (p.Command.GET_LAYER_CYCLES, p.layer_cycles_payload(3, 2), p.ErrorCode.RANGE),
        (p.Command.OPEN, p.open_payload(0), p.ErrorCode.RANGE),
        (p.Command.RESET, b"\x02", p.ErrorCode.BAD_PAYLOAD),
    ],
)
def test_out_of_range_requests_are_refused(
    link: DeviceLink, command: p.Command, payload: bytes, error: p.ErrorCode
) -> None:
    with pytest.raises(DeviceError) as err:
        link.request(command, payload)
    assert err.value.reply.error == error and err.value.reply.command == command
    assert link.ping(b"still alive") == b"still alive"


def test_unknown_command_and_wrong_session(link: DeviceLink) -> None:
    with pytest.raises(DeviceError, match="unknown command"):
        link.request(0x55, b"")
    link.session ^= 1
    with pytest.raises(DeviceResetError, match="another session"):
        link.set_input(1, bytes(42))


def _raw_exchange(port: serial.SerialBase, wire: bytes, n_replies: int, timeout: float = 2.0) -> list:
    port.write(wire)
    decoder, got, deadline = p.FrameDecoder(), [], time.monotonic() + timeout
    while len(got) < n_replies and time.monotonic() < deadline:
        got += decoder.feed(port.read(max(1, port.in_waiting)))
    return got


def test_retransmitted_invoke_runs_once(link: DeviceLink, rng: np.random.Generator) -> None:
    a, b = sample(rng)
    link.reset_model()
    link.set_input(0, a)
    link.set_input(1, b)
    invoke = p.Frame(
        p.Command.INVOKE, 4242, link.session, p.invoke_payload([p.crc32(a.tobytes()), p.crc32(b.tobytes())])
    )
    first, second = _raw_exchange(link.port, invoke.to_wire() * 2, 2)
    assert first == second and not first.is_error  # the cached reply, byte for byte
    link._last_invoke = p.InvokeReply.unpack(first.payload)
    assert link.get_tensor(3).tolist() == [1]  # invoked once
    np.testing.assert_array_equal(link.get_output(0), expected(a, b))


def test_device_never_speaks_first_and_ignores_empty_frames(device: PtyDevice) -> None:
    port = serial.serial_for_url(device.path, timeout=0.3)
    try:
        assert port.read(100) == b""  # nothing unprompted
        port.write(b"\x00" * 50)  # empty frames: silence
        assert port.read(100) == b""
        port.write(b"\x05garbage")  # noise without a delimiter: silence until one arrives
        assert port.read(100) == b""
        [reply] = _raw_exchange(port, b"\x00", 1)
        assert isinstance(reply, p.Frame) and reply.seq == p.SEQ_UNKNOWN
        assert p.ErrorReply.unpack(reply.payload).error in p.FRAME_LEVEL_ERRORS
    finally:
        port.close()


def test_oversized_and_corrupted_frames_get_error_frames(device: PtyDevice) -> None:
    port = serial.serial_for_url(device.path, timeout=0.3)
    try:
        big = p.Frame(p.Command.PING, 9, 0, bytes(513)).to_wire()
        [reply] = _raw_exchange(port, big, 1)
        assert p.ErrorReply.unpack(reply.payload).error == p.ErrorCode.OVERSIZE
        good = bytearray(p.Frame(p.Command.PING, 10, 0, b"x" * 40).encode())
        good[20] ^= 0x10
        [reply] = _raw_exchange(port, b"\x00" + p.cobs_encode(bytes(good)) + b"\x00", 1)
        assert (reply.seq, p.ErrorReply.unpack(reply.payload).error) == (p.SEQ_UNKNOWN, p.ErrorCode.CRC)
        [reply] = _raw_exchange(port, p.Frame(p.Command.PING, 11, 0, b"ok", version=2).to_wire(), 1)
        assert (reply.seq, p.ErrorReply.unpack(reply.payload).error) == (11, p.ErrorCode.VERSION)
        [reply] = _raw_exchange(port, p.Frame(p.Command.PING, 12, 0, bytes(512)).to_wire(), 1)
        assert (reply.code, reply.payload) == (
            p.Command.PING | p.RSP_FLAG,
            bytes(512),
        )  # the limit itself is fine
    finally:
        port.close()


def test_reboot_is_detected_and_the_sample_redone(
    link: DeviceLink, device: PtyDevice, rng: np.random.Generator
) -> None:
    a, b = sample(rng)
    link.run([a, b])
    link.request(p.Command.RESET, p.reset_payload(p.ResetMode.REBOOT), session=False)
    with pytest.raises(DeviceResetError):  # a fresh device has no session
        link.set_input(0, a)
    result = link.run([a, b])  # re-syncs and redoes the sample
    np.testing.assert_array_equal(result.outputs[0], expected(a, b))
    assert link.stats.redone_samples == 1
    assert link.get_tensor(3).tolist() == [1]  # RAM was fresh after the reboot
    info = link.reboot()
    assert info.model_hash == MODEL_HASH
    np.testing.assert_array_equal(link.run([a, b]).outputs[0], expected(a, b))


def test_hashes_are_checked_again_after_a_resync(link: DeviceLink) -> None:
    link.expect_hashes(MODEL_HASH, PLAN_HASH)
    link._expected = (MODEL_HASH, bytes(32))  # as if another firmware came up after the reset
    with pytest.raises(ProtocolError, match="plan hash"):
        link.reboot()


def test_timeout_names_command_and_attempts(link: DeviceLink, device: PtyDevice) -> None:
    os.kill(device.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(LinkTimeout, match=r"INFO \(seq \d+\): no valid reply after 3 attempts.*timeout"):
            link.retries, link.timeout = 2, 0.15
            link.request(p.Command.INFO, session=False)
        assert time.monotonic() - t0 < 2.0
    finally:
        os.kill(device.pid, signal.SIGCONT)
    link.retries = 6
    link.sync()  # recovers; the late replies are ignored by seq
    assert link.ping(b"x") == b"x"


def test_device_exits_cleanly_when_the_link_closes(exe_env: tuple[str, dict[str, str] | None]) -> None:
    dev = PtyDevice(exe_env[0], exe_env[1])
    with DeviceLink.open(dev.path, **FAST) as lk:
        lk.ping()
    run = dev.hang_up()
    assert run.returncode == 0 and not sanitizer_findings([run]), run.stderr  # leak check included


def _tcp_bridge(path: str) -> tuple[int, threading.Event]:
    """A TCP port bridged to the tty at ``path``, as QEMU's ``-serial tcp:…,server=on`` offers."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        try:
            while not stop.is_set():
                for r in select.select([conn, fd], [], [], 0.02)[0]:
                    if r is conn:
                        data = conn.recv(4096)
                        if not data:
                            return
                        os.write(fd, data)
                    else:
                        conn.sendall(os.read(fd, 4096))
        finally:
            os.close(fd)
            conn.close()
            server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], stop


def test_socket_url(device: PtyDevice, rng: np.random.Generator) -> None:
    port, stop = _tcp_bridge(device.path)
    try:
        with DeviceLink.open(f"socket://127.0.0.1:{port}", **{**FAST, "timeout": 1.0}) as lk:
            a, b = sample(rng)
            np.testing.assert_array_equal(lk.run([a, b]).outputs[0], expected(a, b))
            assert lk.info().model_hash == MODEL_HASH
    finally:
        stop.set()


def test_sync_gives_up_with_a_clear_error() -> None:
    master, slave = os.openpty()
    try:
        with pytest.raises(LinkTimeout, match=r"no reply to PING within 0.3 s \(\d+ pings\)"):
            DeviceLink.open(os.ttyname(slave), sync_timeout=0.3, ping_interval=0.05)
    finally:
        os.close(master)
        os.close(slave)
    with pytest.raises(ProtocolError, match="cannot open serial link"):
        DeviceLink.open("/nonexistent/tty")


@pytest.mark.qemu
@pytest.mark.cross
@pytest.mark.skipif(
    not (shutil.which("qemu-aarch64") and compiler("aarch64-linux-gnu-gcc")),
    reason="needs qemu-aarch64 and gcc",
)
def test_same_runtime_on_an_emulated_raspberry_pi(rng: np.random.Generator) -> None:
    """The Pi profiles' build (static aarch64, Cortex-A72 = Pi 4) speaks the same protocol."""
    exe = build("device", "aarch64-linux-gnu-gcc", ("-static",))
    dev = PtyDevice(exe, prefix=("qemu-aarch64", "-cpu", "cortex-a72"))
    try:
        with DeviceLink.open(dev.path, **{**FAST, "timeout": 2.0}) as lk:
            lk.expect_hashes(MODEL_HASH, PLAN_HASH)
            a, b = sample(rng)
            np.testing.assert_array_equal(lk.run([a, b]).outputs[0], expected(a, b))
            assert lk.get_tensor(2).tolist() == [int(a.astype(np.int32).sum()), int(b.astype(np.int32).sum())]
    finally:
        dev.stop()


def test_build_without_debug_or_profiling() -> None:
    dev = PtyDevice(build("device-plain"))
    try:
        with DeviceLink.open(dev.path, **FAST) as lk:
            assert not lk.info().debug and not lk.info().profile
            assert lk.info().n_tensors == 0
            with pytest.raises(ProtocolError, match="BF_MODEL_DEBUG"):
                lk.get_tensor(0)
            with pytest.raises(ProtocolError, match="BF_PROFILE_LAYERS"):
                lk.layer_counts()
            with pytest.raises(DeviceError, match="not compiled into this firmware"):
                lk.request(p.Command.GET_TENSOR, p.read_payload(0, 0, 4))
            with pytest.raises(DeviceError, match="not compiled into this firmware"):
                lk.request(p.Command.TENSOR_INFO, p.tensor_info_payload(p.TensorKind.INTERMEDIATE, 0))
            a, b = sample(np.random.default_rng(3))
            np.testing.assert_array_equal(lk.run([a, b]).outputs[0], expected(a, b))
    finally:
        dev.stop()


# ---- fault injection ------------------------------------------------------------------------


def _drive(relay: FaultyRelay, samples: int, seed: int, **kwargs: float) -> tuple[int, list[str], DeviceLink]:
    """Runs samples through the relay: each ends exact or with a ProtocolError (counted)."""
    rng = np.random.default_rng(seed)
    errors: list[str] = []
    ok = 0
    link = DeviceLink.open(relay.path, seed=seed, **{**FAST, **kwargs})
    try:
        link.expect_hashes(MODEL_HASH, PLAN_HASH)
        for _ in range(samples):
            a, b = sample(rng)
            try:
                result = link.run([a, b])
            except ProtocolError as e:
                errors.append(str(e))
                try:
                    link.sync()
                except ProtocolError as e2:
                    errors.append(str(e2))
                continue
            assert result.status == 0
            np.testing.assert_array_equal(result.outputs[0], expected(a, b))  # never silently wrong
            ok += 1
    finally:
        link.close()
    return ok, errors, link


def test_faulty_link_gives_exact_results(exe_env: tuple[str, dict[str, str] | None]) -> None:
    faults = Faults(drop=5e-4, corrupt=5e-4, duplicate=5e-4, insert=5e-4, delay=0.05, max_delay=0.01)
    relay = FaultyRelay(exe_env[0], faults, seed=11, env=exe_env[1])
    try:
        ok, errors, link = _drive(relay, 25, seed=11)
    finally:
        runs = relay.close()
    assert not sanitizer_findings(runs)
    st = relay.stats
    assert min(st.dropped, st.corrupted, st.duplicated, st.inserted) > 0  # faults did happen
    assert link.stats.retransmissions > 0 and link.stats.corrupted_replies > 0
    assert ok >= 23, errors  # and were repaired


def test_device_killed_and_restarted_mid_run(exe_env: tuple[str, dict[str, str] | None]) -> None:
    faults = Faults(drop=2e-4, corrupt=2e-4, duplicate=2e-4, insert=2e-4)
    relay = FaultyRelay(
        exe_env[0],
        faults,
        seed=5,
        env=exe_env[1],
        restart_after=(5_000, 11_000, 17_000),
    )
    try:
        ok, errors, link = _drive(relay, 15, seed=5)
    finally:
        runs = relay.close()
    assert relay.stats.restarts == 3
    assert not sanitizer_findings(runs)
    assert link.stats.redone_samples >= 2  # resets were noticed and the samples redone
    assert ok >= 14, errors


def test_hostile_link_ends_in_clear_errors_never_wrong_results() -> None:
    """~0.4 % of bytes damaged each way and a restart: some samples fail, none is wrong."""
    faults = Faults(drop=1e-3, corrupt=1e-3, duplicate=1e-3, insert=1e-3)
    relay = FaultyRelay(build("device-asan"), faults, seed=3, env=sanitizer_env(), restart_after=(9_000,))
    try:
        ok, errors, _ = _drive(relay, 4, seed=3, retries=3, sync_timeout=1.0)
    except ProtocolError as e:  # even the first sync may fail on such a line
        ok, errors = 0, [str(e)]
    finally:
        runs = relay.close()
    assert not sanitizer_findings(runs)
    assert relay.stats.corrupted > 0 and ok + len(errors) >= 1
    for text in errors:
        assert re.search(r"no valid reply after 4 attempts|no reply to PING|sample failed 3 times", text), (
            text
        )


def test_dead_device_gives_a_clear_error(exe_env: tuple[str, dict[str, str] | None]) -> None:
    dev = PtyDevice(exe_env[0], exe_env[1])
    link = DeviceLink.open(dev.path, **{**FAST, "sync_timeout": 0.5})
    try:
        os.kill(dev.pid, signal.SIGKILL)
        with pytest.raises(ProtocolError, match=r"PING|attempts"):
            link.run(list(sample(np.random.default_rng(0))))
    finally:
        link.close()
        dev.stop()
