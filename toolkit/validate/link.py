"""Talking to a device over a serial link: synchronisation, retries, chunked tensor transfer.

:class:`DeviceLink` is stop-and-wait: one request in flight, answered by exactly one reply that
echoes its sequence number.  What can go wrong on the way, and what the link does about it:

* a reply does not arrive in time, arrives corrupted, or the device reports that the request
  arrived corrupted (an error with seq 0xFFFF) → the *same* frame is sent again; the device
  answers a retransmission from its reply cache, so nothing runs twice;
* a reply with another seq (the late answer to an earlier retransmission) → ignored;
* the device was reset (it refuses with SESSION, or replies under another session) →
  :class:`DeviceResetError`; :meth:`DeviceLink.run` then re-synchronises and redoes the sample;
* after ``retries`` retransmissions → :class:`LinkTimeout` naming the command, the attempts and
  what arrived.

Results are checked end to end: INVOKE carries the CRC of every input as the host sent it (the
device refuses to run on other bytes) and returns the CRC of every output, which the host
compares with the bytes it assembled.  So a result is either right or an error, never silently
wrong.  Every failure is a :class:`~toolkit.errors.ProtocolError`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import serial

from toolkit.errors import ProtocolError
from toolkit.validate import protocol as p

log = logging.getLogger(__name__)


class LinkTimeout(ProtocolError):
    """No valid reply after every retransmission."""


class DeviceError(ProtocolError):
    """The device refused a request with an error reply."""

    def __init__(self, message: str, reply: p.ErrorReply) -> None:
        self.reply = reply
        super().__init__(message)


class DeviceResetError(ProtocolError):
    """The device lost its state (rebooted) during an exchange."""


# Command-level refusals that mean "the device's state is not what the host built": retrying
# the whole sample after a re-sync is the cure.
_REDO_ERRORS = frozenset({p.ErrorCode.SESSION, p.ErrorCode.INPUT_CRC, p.ErrorCode.NO_OUTPUT})


_POLL = 0.01  # seconds a read may block
_MIN_CHUNK = 64  # smallest frame payload the link shrinks tensor chunks to
_CLEAN_RUN = 8  # requests without retransmission before the chunk size doubles again


@dataclass
class LinkStats:
    """Counters of what the link had to repair (for reports and tests)."""

    requests: int = 0
    retransmissions: int = 0
    corrupted_replies: int = 0
    device_reported_corruption: int = 0
    stale_replies: int = 0
    resyncs: int = 0
    redone_samples: int = 0


@dataclass(frozen=True)
class RunResult:
    """One inference on the device: its status, counter ticks and outputs."""

    status: int
    count: int
    counter_kind: p.CounterKind
    outputs: tuple[np.ndarray, ...]


def _as_hash(value: bytes | str, what: str) -> bytes:
    raw = bytes.fromhex(value) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ProtocolError(f"{what} must be 32 bytes (64 hex digits), got {len(raw)} bytes")
    return raw


def open_port(url: str, timeout: float = _POLL) -> serial.SerialBase:
    """A pyserial port for ``/dev/ttyACM0``, a pty path, ``socket://HOST:PORT``, ``rfc2217://``…"""
    try:
        return serial.serial_for_url(url, baudrate=115200, timeout=timeout, write_timeout=5.0)
    except (serial.SerialException, ValueError, OSError) as e:
        raise ProtocolError(f"cannot open serial link {url!r}: {e}") from e


class DeviceLink:
    """A synchronised connection to one device running the boardfit runtime.

    ``timeout`` is the wait for an ordinary reply (plus transfer time at ``bytes_per_second``),
    ``invoke_timeout`` the wait for an INVOKE reply, ``retries`` the retransmissions per request,
    ``sync_timeout`` how long :meth:`sync` keeps pinging a device that does not answer yet.
    """

    def __init__(
        self,
        port: serial.SerialBase,
        *,
        timeout: float = 0.5,
        invoke_timeout: float = 30.0,
        retries: int = 6,
        sync_timeout: float = 5.0,
        ping_interval: float = 0.2,
        bytes_per_second: float = 10_000.0,
        stateful: bool = False,
        seed: int | None = None,
    ) -> None:
        self.port = port
        if port.timeout is None or port.timeout > _POLL:
            port.timeout = _POLL  # reads wait at most this long, so deadlines are kept
        self.timeout = timeout
        self.invoke_timeout = invoke_timeout
        self.retries = retries
        self.sync_timeout = sync_timeout
        self.ping_interval = ping_interval
        self.bytes_per_second = bytes_per_second
        self.stateful = stateful
        self.stats = LinkStats()
        self._rng = random.Random(seed)
        self._decoder = p.FrameDecoder()
        self._seq = self._rng.randrange(0x10000)
        self.session = 0
        self._info: p.DeviceInfo | None = None
        self._inputs: tuple[p.TensorSpec, ...] = ()
        self._outputs: tuple[p.TensorSpec, ...] = ()
        self._intermediates: dict[int, p.TensorSpec] = {}
        self._input_crcs: dict[int, int] = {}
        self._last_invoke: p.InvokeReply | None = None
        self._expected: tuple[bytes, bytes] | None = None
        self._chunk_cap = p.MAX_PAYLOAD_LIMIT
        self._clean = 0

    @classmethod
    def open(cls, url: str, **kwargs: Any) -> DeviceLink:
        """Opens ``url`` and synchronises (ping, session, INFO and tensor specs)."""
        link = cls(open_port(url), **kwargs)
        try:
            link.sync()
        except BaseException:
            link.close()
            raise
        return link

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> DeviceLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- low level -------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFF
        if self._seq == p.SEQ_UNKNOWN:
            self._seq = 0
        return self._seq

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as e:
            raise ProtocolError(f"writing to the serial link failed: {e}") from e

    def _read_some(self) -> bytes:
        """What has arrived, or waits up to the port's read timeout (set in __init__) for a byte."""
        try:
            waiting = self.port.in_waiting
            return bytes(self.port.read(waiting if waiting > 0 else 1))
        except (serial.SerialException, OSError) as e:
            raise ProtocolError(f"reading from the serial link failed: {e}") from e

    def _await(self, seq: int, timeout: float, seen: list[str]) -> p.Frame | None:
        """The reply with ``seq``, or None when the request should be sent again: on timeout,
        on a corrupted reply, or when the device reports a corrupted request.  Retransmitting
        at once (not after a quiet period) is what keeps a noisy link fast: the device answers
        a duplicate from its reply cache, and a late duplicate reply is dropped by its seq.
        ``seen`` collects a description of every unusable frame, for the error message."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self._decoder.feed(self._read_some()):
                if isinstance(item, p.FrameError):
                    self.stats.corrupted_replies += 1
                    seen.append(f"corrupted reply ({item})")
                    return None
                if item.seq == seq:
                    return item
                if item.seq == p.SEQ_UNKNOWN and item.is_error:
                    err = p.ErrorReply.unpack(item.payload)
                    if err.frame_level:
                        self.stats.device_reported_corruption += 1
                        seen.append(f"device received a corrupted frame ({err.describe()})")
                        return None
                self.stats.stale_replies += 1
        seen.append(f"timeout after {timeout:.2f} s")
        return None

    def request(
        self,
        command: p.Command | int,
        payload: bytes = b"",
        *,
        timeout: float | None = None,
        session: bool = True,
    ) -> p.Frame:
        """Sends one request until a reply with its seq arrives and returns the reply.

        Checks the reply code and, for the commands that need one (``session``), that the device
        still has this link's session.  Raises :class:`DeviceError` for an error reply,
        :class:`DeviceResetError` when the device lost the session, :class:`LinkTimeout` after
        ``retries`` retransmissions.  The typed methods below are built on it; it is public for
        diagnostics and tests."""
        name = p.command_name(int(command))
        request = p.Frame(int(command), self._next_seq(), self.session, payload)
        wire = request.to_wire()
        wait = (self.timeout if timeout is None else timeout) + (len(wire) + 64) / self.bytes_per_second
        seen: list[str] = []
        self.stats.requests += 1
        self._adapt_chunks(clean=True)
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retransmissions += 1
                self._adapt_chunks(clean=False)
                log.debug("%s seq %d: retransmission %d (%s)", name, request.seq, attempt, seen[-1])
            self._write(wire)
            reply = self._await(request.seq, wait, seen)
            if reply is not None:
                return self._check_reply(command, request, reply, session)
        raise LinkTimeout(
            f"{name} (seq {request.seq}): no valid reply after {self.retries + 1} attempts "
            f"({self.retries} retransmissions); received: {'; '.join(seen[-4:])}"
        )

    def _check_reply(
        self, command: p.Command | int, request: p.Frame, reply: p.Frame, session: bool
    ) -> p.Frame:
        name = p.command_name(int(command))
        if reply.is_error:
            err = p.ErrorReply.unpack(reply.payload)
            text = f"device refused {name} (seq {request.seq}): {err.describe()}"
            if err.error == p.ErrorCode.SESSION:
                raise DeviceResetError(f"{text}; device session 0x{reply.session:08x}")
            raise DeviceError(text, err)
        if reply.code != int(command) | p.RSP_FLAG:
            raise ProtocolError(
                f"{name} (seq {request.seq}): reply code {p.command_name(reply.code)} "
                f"(0x{reply.code:02x}), expected 0x{int(command) | p.RSP_FLAG:02x}"
            )
        if session and reply.session != self.session:
            raise DeviceResetError(
                f"{name}: device session 0x{reply.session:08x} != 0x{self.session:08x} (the device was reset)"
            )
        return reply

    def _adapt_chunks(self, clean: bool) -> None:
        """Halves the tensor chunk size on every retransmission and doubles it back after
        ``_CLEAN_RUN`` clean requests: on a noisy line short frames get through where frames of
        the device's maximum size would fail every attempt."""
        if not clean:
            self._chunk_cap = max(_MIN_CHUNK, self._chunk_cap // 2)
            self._clean = 0
            return
        self._clean += 1
        if self._clean >= _CLEAN_RUN:
            self._chunk_cap = min(p.MAX_PAYLOAD_LIMIT, self._chunk_cap * 2)
            self._clean = 0

    def _chunk(self, header: int) -> int:
        """Data bytes per tensor chunk: the device's maximum, or less on a noisy link."""
        return min(self.info().max_payload, self._chunk_cap) - header

    # ---- synchronisation and description ----------------------------------------------

    def ping(self, payload: bytes = b"") -> bytes:
        return self.request(p.Command.PING, payload, session=False).payload

    def sync(self) -> p.DeviceInfo:
        """Waits for the device (retried PING with a fresh nonce), opens a new session, reads
        INFO and the tensor specs; re-checks hashes given to :meth:`expect_hashes`."""
        deadline = time.monotonic() + self.sync_timeout
        pings = 0
        seen: list[str] = []
        try:
            self.port.reset_input_buffer()
        except (serial.SerialException, OSError) as e:
            raise ProtocolError(f"serial link unusable: {e}") from e
        self._decoder.reset()
        while True:
            nonce = self._rng.randbytes(8)
            request = p.Frame(int(p.Command.PING), self._next_seq(), 0, nonce)
            self._write(b"\x00" + request.to_wire())
            pings += 1
            reply = self._await(request.seq, self.ping_interval, seen)
            if (
                reply is not None
                and reply.code == int(p.Command.PING) | p.RSP_FLAG
                and reply.payload == nonce
            ):
                break
            if time.monotonic() > deadline:
                raise LinkTimeout(
                    f"no reply to PING within {self.sync_timeout:.1f} s ({pings} pings); "
                    f"last: {'; '.join(seen[-3:]) or 'nothing'}"
                )
        self.stats.resyncs += 1
        self.session = self._rng.randrange(1, 1 << 32)
        opened = self.request(p.Command.OPEN, p.open_payload(self.session), session=False)
        if opened.payload != p.open_payload(self.session) or opened.session != self.session:
            raise ProtocolError(f"OPEN: device did not take session 0x{self.session:08x}")
        return self._describe()

    def _describe(self) -> p.DeviceInfo:
        info = p.DeviceInfo.unpack(self.request(p.Command.INFO, session=False).payload)
        if info.version != p.PROTOCOL_VERSION:
            raise ProtocolError(f"device speaks protocol {info.version}, this host {p.PROTOCOL_VERSION}")
        inputs = tuple(self._spec(p.TensorKind.INPUT, i) for i in range(info.n_inputs))
        outputs = tuple(self._spec(p.TensorKind.OUTPUT, i) for i in range(info.n_outputs))
        if self._info is not None and (inputs, outputs) != (self._inputs, self._outputs):
            raise ProtocolError("the device's tensors changed across a reset (another firmware?)")
        self._info, self._inputs, self._outputs = info, inputs, outputs
        self._intermediates = {}
        self._input_crcs = {}
        self._last_invoke = None
        if self._expected is not None:
            self._check_hashes(*self._expected)
        return info

    def _spec(self, kind: p.TensorKind, index: int) -> p.TensorSpec:
        reply = self.request(p.Command.TENSOR_INFO, p.tensor_info_payload(kind, index), session=False)
        spec = p.TensorSpec.unpack(reply.payload)
        if (spec.kind, spec.index) != (kind, index):
            raise ProtocolError(f"TENSOR_INFO for {kind.name} {index} answered {spec.kind.name} {spec.index}")
        spec.check()
        return spec

    def info(self) -> p.DeviceInfo:
        if self._info is None:
            raise ProtocolError("not synchronised with the device: call sync() first")
        return self._info

    @property
    def inputs(self) -> tuple[p.TensorSpec, ...]:
        self.info()
        return self._inputs

    @property
    def outputs(self) -> tuple[p.TensorSpec, ...]:
        self.info()
        return self._outputs

    def intermediate(self, tensor_id: int) -> p.TensorSpec:
        """Spec of intermediate tensor ``tensor_id`` (debug firmware only)."""
        info = self.info()
        if not info.debug:
            raise ProtocolError("the device firmware has no debug tensors (build it with BF_MODEL_DEBUG)")
        if not 0 <= tensor_id < info.n_tensors:
            raise ProtocolError(f"intermediate tensor {tensor_id} out of range 0..{info.n_tensors - 1}")
        if tensor_id not in self._intermediates:
            self._intermediates[tensor_id] = self._spec(p.TensorKind.INTERMEDIATE, tensor_id)
        return self._intermediates[tensor_id]

    def expect_hashes(self, model_hash: bytes | str, plan_hash: bytes | str) -> None:
        """Refuses (ProtocolError) a device whose model or plan hash differs; remembered and
        checked again after every re-synchronisation."""
        expected = (_as_hash(model_hash, "model hash"), _as_hash(plan_hash, "plan hash"))
        self._check_hashes(*expected)
        self._expected = expected

    def _check_hashes(self, model_hash: bytes, plan_hash: bytes) -> None:
        info = self.info()
        for what, have, want in (("model", info.model_hash, model_hash), ("plan", info.plan_hash, plan_hash)):
            if have != want:
                raise ProtocolError(
                    f"the device runs {what} hash {have.hex()}, expected {want.hex()}: "
                    "it was built from another model or plan; refusing to validate it"
                )

    # ---- tensors and inference ------------------------------------------------------------

    def set_input(self, index: int, data: np.ndarray | bytes) -> None:
        """Writes input ``index`` in chunks sized to the device's maximum frame."""
        specs = self.inputs
        if not 0 <= index < len(specs):
            raise ProtocolError(f"input {index} out of range: the device's model has {len(specs)} inputs")
        spec = specs[index]
        raw = self._to_bytes(data, spec)
        self._input_crcs.pop(index, None)
        offset = 0
        while offset < len(raw):
            piece = raw[offset : offset + self._chunk(p.SET_INPUT_HEADER_BYTES)]
            reply = self.request(p.Command.SET_INPUT, p.set_input_payload(index, offset, piece))
            if p.unpack_set_input_ack(reply.payload) != (index, offset, len(piece)):
                raise ProtocolError(
                    f"SET_INPUT {index} at {offset}: acknowledged {p.unpack_set_input_ack(reply.payload)}"
                )
            offset += len(piece)
        self._input_crcs[index] = p.crc32(raw)

    @staticmethod
    def _to_bytes(data: np.ndarray | bytes, spec: p.TensorSpec) -> bytes:
        if isinstance(data, bytes | bytearray | memoryview):
            raw = bytes(data)
        else:
            arr = np.asarray(data)
            if arr.dtype != spec.dtype or arr.size * arr.itemsize != spec.nbytes:
                raise ProtocolError(
                    f"input {spec.name!r} expects {spec.dtype} of shape {spec.shape}, "
                    f"got {arr.dtype} {arr.shape}"
                )
            raw = np.ascontiguousarray(arr).astype(spec.dtype.newbyteorder("<"), copy=False).tobytes()
        if len(raw) != spec.nbytes:
            raise ProtocolError(f"input {spec.name!r} is {spec.nbytes} bytes, got {len(raw)}")
        return raw

    def invoke(self) -> tuple[int, int]:
        """Runs the model once on the inputs set since the last invocation: (status, count)."""
        missing = [i for i in range(len(self.inputs)) if i not in self._input_crcs]
        if missing:
            raise ProtocolError(f"INVOKE: inputs {missing} were not set since the last invocation")
        crcs = [self._input_crcs[i] for i in range(len(self.inputs))]
        self._last_invoke = None
        self._input_crcs = {}  # the model may overwrite its inputs
        reply = self.request(p.Command.INVOKE, p.invoke_payload(crcs), timeout=self.invoke_timeout)
        result = p.InvokeReply.unpack(reply.payload)
        self._last_invoke = result
        return result.status, result.count

    @property
    def last_invoke(self) -> p.InvokeReply | None:
        return self._last_invoke

    def _read(self, command: p.Command, index: int, spec: p.TensorSpec) -> bytes:
        last = self._last_invoke
        if last is None or last.status != 0:
            raise ProtocolError(f"{command.name}: no successful invocation to read from")
        out = bytearray()
        while len(out) < spec.nbytes:
            n = min(self._chunk(p.READ_HEADER_BYTES), spec.nbytes - len(out))
            reply = p.ReadReply.unpack(self.request(command, p.read_payload(index, len(out), n)).payload)
            if (reply.invoke_id, reply.index, reply.offset, len(reply.data)) != (
                last.invoke_id, index, len(out), n,
            ):  # fmt: skip
                raise ProtocolError(
                    f"{command.name} {index} at {len(out)}: got invocation {reply.invoke_id}, index "
                    f"{reply.index}, offset {reply.offset}, {len(reply.data)} bytes; expected "
                    f"invocation {last.invoke_id}, {n} bytes"
                )
            out += reply.data
        return bytes(out)

    def get_output(self, index: int) -> np.ndarray:
        """Output ``index`` of the last invocation, checked against the CRC the device sent."""
        specs = self.outputs
        if not 0 <= index < len(specs):
            raise ProtocolError(f"output {index} out of range: the device's model has {len(specs)} outputs")
        raw = self._read(p.Command.GET_OUTPUT, index, specs[index])
        last = self._last_invoke
        assert last is not None  # _read checked it
        if index < len(last.output_crcs) and p.crc32(raw) != last.output_crcs[index]:
            raise ProtocolError(
                f"output {index}: CRC of the received bytes 0x{p.crc32(raw):08x} differs from the "
                f"device's 0x{last.output_crcs[index]:08x} (output changed or corrupted)"
            )
        return self._to_array(raw, specs[index])

    def get_tensor(self, tensor_id: int) -> np.ndarray:
        """Intermediate tensor ``tensor_id`` of the last invocation (debug firmware)."""
        spec = self.intermediate(tensor_id)
        return self._to_array(self._read(p.Command.GET_TENSOR, tensor_id, spec), spec)

    @staticmethod
    def _to_array(raw: bytes, spec: p.TensorSpec) -> np.ndarray:
        return np.frombuffer(raw, dtype=spec.dtype).reshape(spec.shape).copy()

    def layer_counts(self) -> list[int]:
        """Counter ticks per layer of the last invocation (firmware built with BF_PROFILE_LAYERS)."""
        info = self.info()
        last = self._last_invoke
        if not info.profile:
            raise ProtocolError(
                "the device firmware does not profile layers (build it with BF_PROFILE_LAYERS)"
            )
        if last is None:
            raise ProtocolError("GET_LAYER_CYCLES: no invocation yet")
        per = (info.max_payload - p.LAYERS_HEADER_BYTES) // 4
        counts: list[int] = []
        while len(counts) < info.n_layers:
            n = min(per, info.n_layers - len(counts))
            payload = p.layer_cycles_payload(len(counts), n)
            reply = p.LayerCyclesReply.unpack(self.request(p.Command.GET_LAYER_CYCLES, payload).payload)
            if (reply.invoke_id, reply.first, len(reply.counts)) != (last.invoke_id, len(counts), n):
                raise ProtocolError(
                    f"GET_LAYER_CYCLES: got invocation {reply.invoke_id}, layers {reply.first}+"
                    f"{len(reply.counts)}; expected invocation {last.invoke_id}, {len(counts)}+{n}"
                )
            counts.extend(reply.counts)
        return counts

    def reset_model(self) -> None:
        """Restores the model's initial state (streaming models) on the device."""
        self.request(p.Command.RESET, p.reset_payload(p.ResetMode.MODEL))
        self._last_invoke = None

    def reboot(self) -> p.DeviceInfo:
        """Soft-reboots the device and re-synchronises."""
        self.request(p.Command.RESET, p.reset_payload(p.ResetMode.REBOOT), session=False)
        return self.sync()

    def run(self, inputs: Sequence[np.ndarray | bytes], *, attempts: int = 3) -> RunResult:
        """Sets every input, invokes and reads every output.  When the device turns out to have
        been reset, or stops answering, it re-synchronises and redoes the sample (stateless
        models only), at most ``attempts`` times."""
        if len(inputs) != len(self.inputs):
            raise ProtocolError(f"the device's model has {len(self.inputs)} inputs, got {len(inputs)}")
        for attempt in range(attempts):
            try:
                return self._run_once(inputs)
            except (DeviceResetError, LinkTimeout, DeviceError) as e:
                if isinstance(e, DeviceError) and e.reply.error not in _REDO_ERRORS:
                    raise
                if self.stateful:
                    raise ProtocolError(f"device state lost during a stateful run: {e}") from e
                if attempt + 1 == attempts:
                    raise ProtocolError(f"sample failed {attempts} times; last error: {e}") from e
                log.info("redoing a sample after: %s", e)
                self.stats.redone_samples += 1
                self.sync()
        raise AssertionError("unreachable")

    def _run_once(self, inputs: Sequence[np.ndarray | bytes]) -> RunResult:
        for i, data in enumerate(inputs):
            self.set_input(i, data)
        status, count = self.invoke()
        last = self._last_invoke
        assert last is not None
        outputs = tuple(self.get_output(i) for i in range(len(self.outputs))) if status == 0 else ()
        return RunResult(status, count, last.counter_kind, outputs)
