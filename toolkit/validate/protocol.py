"""The boardfit serial protocol, version 1: framing, CRC and message layouts (no I/O).

The device side is ``firmware_gen/runtime/bf_protocol.c`` / ``bf_runtime_main.c``; the byte
layouts are specified in ``firmware_gen/runtime/PROTOCOL.md``.  In short, on the wire every
frame is ``0x00 COBS(frame) 0x00`` and a frame is (little-endian)::

    u8 version | u8 code | u16 seq | u32 session | u16 length | payload[length] | u32 crc

with ``crc`` the CRC-32/IEEE (``zlib.crc32``) of everything before it.

COBS rather than SLIP: its overhead is bounded (one byte per 254) whatever the data, so the
largest encoded frame is a compile-time constant on the device and tensor bytes, which are
full of 0xC0/0xDB-like values, never double in size on a ~35 KB/s link; and a 0x00 always ends
a frame, so a receiver re-synchronises on the next delimiter after any corruption.

:class:`FrameDecoder` applies exactly the device's acceptance rules (the fuzz tests compare
the two byte for byte), so the host can predict the device's verdict on any input.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from toolkit.errors import ProtocolError

PROTOCOL_VERSION = 1
HEADER = struct.Struct("<BBHIH")
HEADER_BYTES = HEADER.size  # 10
CRC_BYTES = 4
OVERHEAD = HEADER_BYTES + CRC_BYTES
MAX_PAYLOAD_LIMIT = 0xFFFF  # the length field is 16 bits
MIN_DEVICE_PAYLOAD = 128  # a device accepts at least this much (bf_protocol.h)
SEQ_UNKNOWN = 0xFFFF  # seq of a device error about a frame it could not authenticate
RSP_FLAG = 0x80
RSP_ERROR = 0xFF
MAX_RANK = 6


class Command(enum.IntEnum):
    PING = 0x01
    INFO = 0x02
    OPEN = 0x03
    TENSOR_INFO = 0x04
    SET_INPUT = 0x10
    INVOKE = 0x11
    GET_OUTPUT = 0x12
    GET_TENSOR = 0x13
    GET_LAYER_CYCLES = 0x14
    RESET = 0x20


class ErrorCode(enum.IntEnum):
    CRC = 1
    FRAMING = 2
    OVERSIZE = 3
    VERSION = 4
    LENGTH = 5
    UNKNOWN_COMMAND = 6
    BAD_PAYLOAD = 7
    RANGE = 8
    UNSUPPORTED = 9
    SESSION = 10
    INPUT_CRC = 11
    NO_OUTPUT = 12


# Errors about frames the device could not authenticate: the reply carries SEQ_UNKNOWN.
FRAME_LEVEL_ERRORS = frozenset({ErrorCode.CRC, ErrorCode.FRAMING, ErrorCode.OVERSIZE})

ERROR_TEXT: dict[int, str] = {
    ErrorCode.CRC: "CRC mismatch",
    ErrorCode.FRAMING: "broken COBS framing or a frame shorter than its header",
    ErrorCode.OVERSIZE: "frame longer than the device's maximum",
    ErrorCode.VERSION: "unsupported protocol version",
    ErrorCode.LENGTH: "length field does not match the frame",
    ErrorCode.UNKNOWN_COMMAND: "unknown command",
    ErrorCode.BAD_PAYLOAD: "payload of the wrong size for this command",
    ErrorCode.RANGE: "index, offset or length out of range",
    ErrorCode.UNSUPPORTED: "not compiled into this firmware",
    ErrorCode.SESSION: "no session or another session (the device was reset)",
    ErrorCode.INPUT_CRC: "input bytes on the device differ from the ones sent",
    ErrorCode.NO_OUTPUT: "no valid output (no successful invoke since the inputs changed)",
}


class CounterKind(enum.IntEnum):
    NONE = 0
    CYCLES = 1
    INSTRUCTIONS = 2
    NANOSECONDS = 3


class TensorKind(enum.IntEnum):
    INPUT = 0
    OUTPUT = 1
    INTERMEDIATE = 2


class ResetMode(enum.IntEnum):
    MODEL = 0
    REBOOT = 1


_TENSOR_KINDS = frozenset(int(k) for k in TensorKind)
_COUNTER_KINDS = frozenset(int(k) for k in CounterKind)

INFO_FLAG_DEBUG = 0x01
INFO_FLAG_PROFILE = 0x02

# Element type codes (bf_model_api.h, firmware_gen/program.py DTYPE_CODES) → numpy dtype of the
# device's little-endian memory.
DTYPE_CODES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("i1"),
    3: np.dtype("u1"),
    4: np.dtype("<i2"),
    5: np.dtype("<i4"),
    6: np.dtype("<i8"),
    7: np.dtype("<f2"),
    8: np.dtype("?"),
}


def crc32(data: bytes, crc: int = 0) -> int:
    """CRC-32/IEEE with zlib's chaining (``crc32(b, crc32(a)) == crc32(a + b)``)."""
    return zlib.crc32(data, crc) & 0xFFFFFFFF


def command_name(code: int) -> str:
    base = code & ~RSP_FLAG if code != RSP_ERROR else code
    try:
        return Command(base).name
    except ValueError:
        return f"0x{code:02x}"


# ---- COBS ------------------------------------------------------------------------------


def cobs_encode(data: bytes) -> bytes:
    """COBS-encode ``data`` (the result contains no zero byte)."""
    out = bytearray()
    i, n = 0, len(data)
    while True:
        j = data.find(0, i, min(n, i + 254))
        end = j if j >= 0 else min(n, i + 254)
        out.append(end - i + 1)
        out += data[i:end]
        if end >= n:
            break
        i = end if end - i == 254 else end + 1
    return bytes(out)


def _cobs_decode_lenient(encoded: bytes) -> tuple[bytes, bool]:
    """Decodes like the device: returns (bytes, complete); an incomplete last block keeps what
    arrived.  ``encoded`` must not contain zeros."""
    out = bytearray()
    i, n = 0, len(encoded)
    complete = True
    while i < n:
        code = encoded[i]
        block = encoded[i + 1 : i + code]
        out += block
        if len(block) < code - 1:
            complete = False
        i += code
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out), complete


def cobs_decode(encoded: bytes) -> bytes:
    """Strict COBS decoding; raises :class:`FrameError` on a zero byte or a truncated block."""
    if 0 in encoded:
        raise FrameError(ErrorCode.FRAMING, "zero byte inside a COBS frame")
    data, complete = _cobs_decode_lenient(encoded)
    if not complete:
        raise FrameError(ErrorCode.FRAMING, "truncated COBS block")
    return data


# ---- frames ----------------------------------------------------------------------------


class FrameError(ProtocolError):
    """A received frame failed a check; ``code`` says which (as the device would report it)."""

    def __init__(self, code: ErrorCode, detail: str, frame: Frame | None = None) -> None:
        self.code = code
        self.frame = frame  # the authentic header, for VERSION and LENGTH
        super().__init__(f"{ERROR_TEXT[code]}: {detail}")


@dataclass(frozen=True)
class Frame:
    """One decoded frame.  ``crc`` is filled in by :func:`parse_frame` (0 for frames built here)."""

    code: int
    seq: int
    session: int
    payload: bytes = b""
    version: int = PROTOCOL_VERSION
    crc: int = 0

    def body(self) -> bytes:
        """Header and payload, without CRC; the ``length`` field is the payload's length."""
        return HEADER.pack(self.version, self.code, self.seq, self.session, len(self.payload)) + self.payload

    def encode(self) -> bytes:
        """The decoded frame bytes: header, payload, CRC."""
        body = self.body()
        return body + struct.pack("<I", crc32(body))

    def to_wire(self) -> bytes:
        """``0x00 COBS(frame) 0x00``: the leading delimiter ends any partial frame in the peer."""
        return b"\x00" + cobs_encode(self.encode()) + b"\x00"

    @property
    def is_error(self) -> bool:
        return self.code == RSP_ERROR


def parse_frame(decoded: bytes) -> Frame:
    """Checks a decoded frame (length, CRC, version, length field) and returns it."""
    if len(decoded) < OVERHEAD:
        raise FrameError(ErrorCode.FRAMING, f"{len(decoded)} bytes, a frame has at least {OVERHEAD}")
    body, (crc,) = decoded[:-CRC_BYTES], struct.unpack("<I", decoded[-CRC_BYTES:])
    actual = crc32(body)
    if actual != crc:
        raise FrameError(ErrorCode.CRC, f"frame of {len(decoded)} bytes: crc 0x{crc:08x} != 0x{actual:08x}")
    version, code, seq, session, length = HEADER.unpack_from(body)
    frame = Frame(code, seq, session, bytes(body[HEADER_BYTES:]), version, crc)
    if version != PROTOCOL_VERSION:
        raise FrameError(ErrorCode.VERSION, f"version {version}, expected {PROTOCOL_VERSION}", frame)
    if length != len(body) - HEADER_BYTES:
        raise FrameError(
            ErrorCode.LENGTH, f"length field {length}, payload is {len(body) - HEADER_BYTES} bytes", frame
        )
    return frame


def decode_chunk(encoded: bytes, max_frame: int) -> Frame | FrameError | None:
    """The verdict on the bytes between two delimiters, with the device's rules and order:
    None for an empty frame, else the frame or the :class:`FrameError` the device reports."""
    if not encoded:
        return None
    decoded, complete = _cobs_decode_lenient(encoded)
    if len(decoded) > max_frame:
        return FrameError(ErrorCode.OVERSIZE, f"{len(decoded)} bytes decoded, maximum {max_frame}")
    if not complete:
        return FrameError(ErrorCode.FRAMING, "truncated COBS block")
    try:
        return parse_frame(decoded)
    except FrameError as e:
        return e


class FrameDecoder:
    """Stream decoder: :meth:`feed` bytes, get every completed frame or :class:`FrameError`.

    Encoded bytes are buffered up to a bound that guarantees an oversize verdict beyond it
    (COBS decodes to at least 254/255 of its length), so noise cannot grow memory."""

    def __init__(self, max_frame: int = OVERHEAD + MAX_PAYLOAD_LIMIT) -> None:
        self.max_frame = max_frame
        self._cap = 2 * max_frame + 8
        self._buf = bytearray()
        self._overflow = False

    @property
    def pending(self) -> bool:
        return bool(self._buf) or self._overflow

    def reset(self) -> None:
        self._buf.clear()
        self._overflow = False

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        results: list[Frame | FrameError] = []
        start = 0
        while True:
            end = data.find(0, start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._overflow:
                self._buf += piece
                if len(self._buf) > self._cap:
                    self._overflow = True
                    self._buf.clear()
            if end < 0:
                return results
            verdict: Frame | FrameError | None
            if self._overflow:
                verdict = FrameError(ErrorCode.OVERSIZE, f"more than {self._cap} encoded bytes")
            else:
                verdict = decode_chunk(bytes(self._buf), self.max_frame)
            if verdict is not None:
                results.append(verdict)
            self.reset()
            start = end + 1


# ---- payloads --------------------------------------------------------------------------

_INFO = struct.Struct("<BBH32s32sIHHHHIBBH")  # 88 bytes
_SPEC = struct.Struct("<BHBBiI6ifiB")  # 46 bytes, then the name
_INVOKE = struct.Struct("<iIIBBH")  # 16 bytes, then u32 output CRCs
_READ = struct.Struct("<IHI")  # 10 bytes, then data
_LAYERS = struct.Struct("<IHH")  # 8 bytes, then u32 counts
_ERROR = struct.Struct("<BBHI")
_SET_ACK = struct.Struct("<HIH")

READ_HEADER_BYTES = _READ.size
SET_INPUT_HEADER_BYTES = 6
LAYERS_HEADER_BYTES = _LAYERS.size


def _unpack(layout: struct.Struct, payload: bytes, what: str, exact: bool = True) -> tuple:
    if len(payload) < layout.size or (exact and len(payload) != layout.size):
        raise ProtocolError(f"{what} reply of {len(payload)} bytes, expected {layout.size}")
    return layout.unpack_from(payload)


@dataclass(frozen=True)
class DeviceInfo:
    """The INFO reply."""

    version: int
    flags: int
    max_payload: int
    model_hash: bytes
    plan_hash: bytes
    arena_bytes: int
    n_inputs: int
    n_outputs: int
    n_tensors: int
    n_layers: int
    timer_hz: int
    counter_kind: CounterKind

    @property
    def debug(self) -> bool:
        return bool(self.flags & INFO_FLAG_DEBUG)

    @property
    def profile(self) -> bool:
        return bool(self.flags & INFO_FLAG_PROFILE)

    def pack(self) -> bytes:
        return _INFO.pack(
            self.version, self.flags, self.max_payload, self.model_hash, self.plan_hash, self.arena_bytes,
            self.n_inputs, self.n_outputs, self.n_tensors, self.n_layers, self.timer_hz,
            int(self.counter_kind), 0, 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, payload: bytes) -> DeviceInfo:
        v, fl, mp, mh, ph, arena, ni, no, nt, nl, hz, kind, _, _ = _unpack(_INFO, payload, "INFO")
        if mp < MIN_DEVICE_PAYLOAD:
            raise ProtocolError(f"INFO: device maximum payload {mp} is below {MIN_DEVICE_PAYLOAD}")
        try:
            counter = CounterKind(kind)
        except ValueError:
            raise ProtocolError(f"INFO: unknown counter kind {kind}") from None
        return cls(v, fl, mp, mh, ph, arena, ni, no, nt, nl, hz, counter)


@dataclass(frozen=True)
class TensorSpec:
    """The TENSOR_INFO reply: one input, output or intermediate tensor of the device's model."""

    kind: TensorKind
    index: int
    dtype_code: int
    graph_index: int
    nbytes: int
    shape: tuple[int, ...]
    scale: float
    zero_point: int
    name: str

    @property
    def dtype(self) -> np.dtype:
        try:
            return DTYPE_CODES[self.dtype_code]
        except KeyError:
            raise ProtocolError(f"tensor {self.name!r}: unknown dtype code {self.dtype_code}") from None

    def pack(self) -> bytes:
        dims = [*self.shape, *([0] * (MAX_RANK - len(self.shape)))]
        name = self.name.encode()
        return _SPEC.pack(
            int(self.kind), self.index, self.dtype_code, len(self.shape), self.graph_index, self.nbytes,
            *dims, self.scale, self.zero_point, len(name),
        ) + name  # fmt: skip

    @classmethod
    def unpack(cls, payload: bytes) -> TensorSpec:
        kind, index, dtype, rank, gi, nbytes, *rest = _unpack(_SPEC, payload, "TENSOR_INFO", exact=False)
        dims, (scale, zp, name_len) = rest[:MAX_RANK], rest[MAX_RANK:]
        if rank > MAX_RANK or len(payload) != _SPEC.size + name_len or kind not in _TENSOR_KINDS:
            raise ProtocolError(
                f"TENSOR_INFO reply malformed: rank {rank}, kind {kind}, {len(payload)} bytes"
            )
        name = payload[_SPEC.size :].decode("utf-8", errors="replace")
        return cls(TensorKind(kind), index, dtype, gi, nbytes, tuple(dims[:rank]), scale, zp, name)

    def check(self) -> None:
        """The byte size agrees with shape and dtype (a device bug otherwise)."""
        expected = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        if expected != self.nbytes:
            raise ProtocolError(
                f"tensor {self.name!r}: {self.nbytes} bytes for shape {self.shape} of {self.dtype} "
                f"({expected} expected)"
            )


@dataclass(frozen=True)
class InvokeReply:
    status: int
    count: int
    invoke_id: int
    counter_kind: CounterKind
    output_crcs: tuple[int, ...]

    def pack(self) -> bytes:
        head = _INVOKE.pack(
            self.status, self.count, self.invoke_id, int(self.counter_kind), len(self.output_crcs), 0
        )
        return head + struct.pack(f"<{len(self.output_crcs)}I", *self.output_crcs)

    @classmethod
    def unpack(cls, payload: bytes) -> InvokeReply:
        status, count, iid, kind, n_crc, _ = _unpack(_INVOKE, payload, "INVOKE", exact=False)
        if len(payload) != _INVOKE.size + 4 * n_crc or kind not in _COUNTER_KINDS:
            raise ProtocolError(f"INVOKE reply malformed: {len(payload)} bytes for {n_crc} CRCs, kind {kind}")
        crcs = struct.unpack_from(f"<{n_crc}I", payload, _INVOKE.size)
        return cls(status, count, iid, CounterKind(kind), crcs)


@dataclass(frozen=True)
class ReadReply:
    """A chunk of an output or intermediate tensor."""

    invoke_id: int
    index: int
    offset: int
    data: bytes

    def pack(self) -> bytes:
        return _READ.pack(self.invoke_id, self.index, self.offset) + self.data

    @classmethod
    def unpack(cls, payload: bytes) -> ReadReply:
        iid, index, offset = _unpack(_READ, payload, "GET_OUTPUT/GET_TENSOR", exact=False)
        return cls(iid, index, offset, bytes(payload[_READ.size :]))


@dataclass(frozen=True)
class LayerCyclesReply:
    invoke_id: int
    first: int
    counts: tuple[int, ...]

    def pack(self) -> bytes:
        head = _LAYERS.pack(self.invoke_id, self.first, len(self.counts))
        return head + struct.pack(f"<{len(self.counts)}I", *self.counts)

    @classmethod
    def unpack(cls, payload: bytes) -> LayerCyclesReply:
        iid, first, count = _unpack(_LAYERS, payload, "GET_LAYER_CYCLES", exact=False)
        if len(payload) != _LAYERS.size + 4 * count:
            raise ProtocolError(f"GET_LAYER_CYCLES reply of {len(payload)} bytes for {count} layers")
        return cls(iid, first, struct.unpack_from(f"<{count}I", payload, _LAYERS.size))


@dataclass(frozen=True)
class ErrorReply:
    error: int
    command: int
    detail: int

    def pack(self) -> bytes:
        return _ERROR.pack(self.error, self.command, 0, self.detail)

    @classmethod
    def unpack(cls, payload: bytes) -> ErrorReply:
        error, command, _, detail = _unpack(_ERROR, payload, "error")
        return cls(error, command, detail)

    @property
    def frame_level(self) -> bool:
        return self.error in FRAME_LEVEL_ERRORS

    def describe(self) -> str:
        text = ERROR_TEXT.get(self.error, "unknown error")
        return f"{text} (error {self.error}, command {command_name(self.command)}, detail {self.detail})"


def unpack_set_input_ack(payload: bytes) -> tuple[int, int, int]:
    """(index, offset, bytes written) of a SET_INPUT reply."""
    index, offset, n = _unpack(_SET_ACK, payload, "SET_INPUT")
    return index, offset, n


# ---- request payloads ------------------------------------------------------------------


def open_payload(session: int) -> bytes:
    return struct.pack("<I", session)


def tensor_info_payload(kind: TensorKind, index: int) -> bytes:
    return struct.pack("<BH", int(kind), index)


def set_input_payload(index: int, offset: int, data: bytes) -> bytes:
    return struct.pack("<HI", index, offset) + data


def invoke_payload(input_crcs: list[int] | tuple[int, ...]) -> bytes:
    return struct.pack(f"<{len(input_crcs)}I", *input_crcs)


def read_payload(index: int, offset: int, length: int) -> bytes:
    return struct.pack("<HIH", index, offset, length)


def layer_cycles_payload(first: int, count: int) -> bytes:
    return struct.pack("<HH", first, count)


def reset_payload(mode: ResetMode) -> bytes:
    return bytes([int(mode)])
