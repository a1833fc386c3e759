"""The pure protocol module: CRC, COBS, frames, stream decoding, message layouts.

Known answers come from outside this code: the CRC-32 check value of the standard catalogue,
COBS examples of the original paper / reference encoder, zlib for CRCs, the C header for
dtype codes.  The device side is held to the same rules by tests/test_frame_fuzz.py.
"""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import ProtocolError
from toolkit.validate import protocol as p

RUNTIME = Path(__file__).resolve().parents[1] / "firmware_gen" / "runtime"

frames = st.builds(
    p.Frame,
    code=st.integers(0, 255),
    seq=st.integers(0, 0xFFFF),
    session=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=700),
)


def test_crc32_is_the_ieee_crc_with_zlib_chaining() -> None:
    assert p.crc32(b"123456789") == 0xCBF43926  # the catalogue's check value of CRC-32/ISO-HDLC
    assert p.crc32(b"6789", p.crc32(b"12345")) == 0xCBF43926
    assert p.crc32(b"") == 0


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"\x00", b"\x01\x01"),
        (b"\x00\x00", b"\x01\x01\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
        (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
        (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
        (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
        (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    ],
)
def test_cobs_known_encodings(raw: bytes, encoded: bytes) -> None:
    assert p.cobs_encode(raw) == encoded
    assert p.cobs_decode(encoded) == raw


@given(st.binary(max_size=3000))
def test_cobs_round_trip_has_no_zero_and_bounded_overhead(data: bytes) -> None:
    enc = p.cobs_encode(data)
    assert 0 not in enc
    assert len(enc) <= len(data) + len(data) // 254 + 1
    assert p.cobs_decode(enc) == data


def test_cobs_decode_rejects_truncation_and_zeros() -> None:
    with pytest.raises(p.FrameError, match="truncated"):
        p.cobs_decode(b"\x05\x11\x22")
    with pytest.raises(p.FrameError, match="zero byte"):
        p.cobs_decode(b"\x02\x00")


@given(frames)
def test_frame_round_trip_through_the_stream_decoder(frame: p.Frame) -> None:
    wire = frame.to_wire()
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    [decoded] = p.FrameDecoder().feed(wire)
    assert isinstance(decoded, p.Frame)
    assert (decoded.code, decoded.seq, decoded.session, decoded.payload) == (
        frame.code,
        frame.seq,
        frame.session,
        frame.payload,
    )
    assert decoded.crc == zlib.crc32(frame.body())


@given(st.lists(frames, min_size=1, max_size=5), st.data())
def test_stream_split_anywhere_yields_the_same_frames(batch: list[p.Frame], data: st.DataObject) -> None:
    wire = b"".join(f.to_wire() for f in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    decoder = p.FrameDecoder()
    got: list[p.Frame | p.FrameError] = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        got += decoder.feed(wire[a:b])
    assert [(f.seq, f.payload) for f in got if isinstance(f, p.Frame)] == [(f.seq, f.payload) for f in batch]
    assert len(got) == len(batch)


@settings(max_examples=40)
@given(
    st.builds(
        p.Frame,
        code=st.integers(0, 255),
        seq=st.integers(0, 0xFFFF),
        session=st.integers(0, 0xFFFFFFFF),
        payload=st.binary(max_size=40),
    )
)
def test_every_single_bit_corruption_is_rejected(frame: p.Frame) -> None:
    wire = frame.to_wire()
    for bit in range(len(wire) * 8):
        bad = bytearray(wire)
        bad[bit // 8] ^= 1 << (bit % 8)
        results = p.FrameDecoder().feed(bytes(bad) + b"\x00")
        assert not any(isinstance(r, p.Frame) for r in results), f"bit {bit} of {wire.hex()}"


def test_noise_between_frames_is_reported_and_does_not_hide_the_next_frame() -> None:
    good = p.Frame(p.Command.PING, 7, 0, b"hello").to_wire()
    results = p.FrameDecoder().feed(b"\x13\x37garbage" + good + b"\x00\x00" + good)
    kinds = [type(r).__name__ for r in results]
    assert kinds == ["FrameError", "Frame", "Frame"]


def _body(version: int, code: int, length: int, payload: bytes) -> bytes:
    return p.HEADER.pack(version, code, 1, 2, length) + payload


@pytest.mark.parametrize(
    ("encoded", "code"),
    [
        (p.cobs_encode(bytes(p.OVERHEAD + 101)), p.ErrorCode.OVERSIZE),  # before the COBS check
        (p.cobs_encode(b"\x01" * 300)[:-1], p.ErrorCode.OVERSIZE),  # truncated and too long
        (b"\x09\x01\x02", p.ErrorCode.FRAMING),
        (p.cobs_encode(b"\x01" * 13), p.ErrorCode.FRAMING),
        (p.cobs_encode(_body(1, 1, 0, b"") + b"\x00\x00\x00\x00"), p.ErrorCode.CRC),
    ],
)
def test_verdict_order_matches_the_device(encoded: bytes, code: p.ErrorCode) -> None:
    verdict = p.decode_chunk(encoded, p.OVERHEAD + 100)
    assert isinstance(verdict, p.FrameError) and verdict.code == code


def test_version_and_length_errors_keep_the_authentic_header() -> None:
    body = _body(2, 0x11, 0, b"")
    verdict = p.decode_chunk(p.cobs_encode(body + struct.pack("<I", zlib.crc32(body))), 1000)
    assert isinstance(verdict, p.FrameError) and verdict.code == p.ErrorCode.VERSION
    assert verdict.frame is not None and verdict.frame.seq == 1
    body = _body(1, 0x11, 3, b"ab")
    verdict = p.decode_chunk(p.cobs_encode(body + struct.pack("<I", zlib.crc32(body))), 1000)
    assert isinstance(verdict, p.FrameError) and verdict.code == p.ErrorCode.LENGTH
    assert p.decode_chunk(b"", 1000) is None


def test_decoder_memory_is_bounded_under_endless_noise() -> None:
    decoder = p.FrameDecoder(max_frame=100)
    for _ in range(100):
        assert decoder.feed(b"\x07" * 10_000) == []
    assert len(decoder._buf) <= 2 * 100 + 8
    [verdict] = decoder.feed(b"\x00")
    assert isinstance(verdict, p.FrameError) and verdict.code == p.ErrorCode.OVERSIZE


hashes = st.binary(min_size=32, max_size=32)
u16, u32, i32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(-(2**31), 2**31 - 1)


@given(
    st.builds(
        p.DeviceInfo,
        version=st.integers(0, 255),
        flags=st.integers(0, 255),
        max_payload=st.integers(p.MIN_DEVICE_PAYLOAD, 0xFFFF),
        model_hash=hashes,
        plan_hash=hashes,
        arena_bytes=u32,
        n_inputs=u16,
        n_outputs=u16,
        n_tensors=u16,
        n_layers=u16,
        timer_hz=u32,
        counter_kind=st.sampled_from(p.CounterKind),
    )
)
def test_info_round_trip(info: p.DeviceInfo) -> None:
    assert len(info.pack()) == 88
    assert p.DeviceInfo.unpack(info.pack()) == info


@given(
    st.builds(
        p.TensorSpec,
        kind=st.sampled_from(p.TensorKind),
        index=u16,
        dtype_code=st.integers(0, 255),
        graph_index=i32,
        nbytes=u32,
        shape=st.lists(i32, max_size=6).map(tuple),
        scale=st.floats(width=32, allow_nan=False),
        zero_point=i32,
        name=st.text(max_size=60),
    )
)
def test_tensor_spec_round_trip(spec: p.TensorSpec) -> None:
    if len(spec.name.encode()) > 255:
        return
    assert p.TensorSpec.unpack(spec.pack()) == spec


@given(i32, u32, u32, st.sampled_from(p.CounterKind), st.lists(u32, max_size=20))
def test_invoke_reply_round_trip(
    status: int, count: int, iid: int, kind: p.CounterKind, crcs: list[int]
) -> None:
    reply = p.InvokeReply(status, count, iid, kind, tuple(crcs))
    assert p.InvokeReply.unpack(reply.pack()) == reply


@given(u32, u16, u32, st.binary(max_size=300), st.lists(u32, max_size=40))
def test_read_layer_and_error_replies_round_trip(
    iid: int, index: int, offset: int, data: bytes, counts: list[int]
) -> None:
    assert p.ReadReply.unpack(p.ReadReply(iid, index, offset, data).pack()) == p.ReadReply(
        iid, index, offset, data
    )
    layers = p.LayerCyclesReply(iid, index, tuple(counts))
    assert p.LayerCyclesReply.unpack(layers.pack()) == layers
    err = p.ErrorReply(index & 0xFF, offset & 0xFF, iid)
    assert p.ErrorReply.unpack(err.pack()) == err


def test_malformed_replies_raise_protocol_errors() -> None:
    info = p.DeviceInfo(1, 0, 512, bytes(32), bytes(32), 0, 1, 1, 0, 0, 0, p.CounterKind.NONE)
    with pytest.raises(ProtocolError, match="INFO reply of 87 bytes"):
        p.DeviceInfo.unpack(info.pack()[:-1])
    with pytest.raises(ProtocolError, match="below 128"):
        p.DeviceInfo.unpack(
            p.DeviceInfo(1, 0, 64, bytes(32), bytes(32), 0, 1, 1, 0, 0, 0, p.CounterKind.NONE).pack()
        )
    with pytest.raises(ProtocolError, match="unknown counter kind"):
        p.DeviceInfo.unpack(info.pack()[:84] + b"\x09" + info.pack()[85:])
    spec = p.TensorSpec(p.TensorKind.INPUT, 0, 2, 0, 4, (4,), 0.5, 1, "x").pack()
    with pytest.raises(ProtocolError, match="TENSOR_INFO reply malformed"):
        p.TensorSpec.unpack(spec + b"extra")
    with pytest.raises(ProtocolError, match="INVOKE reply malformed"):
        p.InvokeReply.unpack(p.InvokeReply(0, 1, 1, p.CounterKind.CYCLES, (1, 2)).pack()[:-4])
    with pytest.raises(ProtocolError, match="unknown dtype code"):
        _ = p.TensorSpec(p.TensorKind.INPUT, 0, 99, 0, 4, (4,), 0.5, 1, "x").dtype


def test_tensor_spec_check_catches_inconsistent_sizes() -> None:
    p.TensorSpec(p.TensorKind.INPUT, 0, 5, 0, 24, (2, 3), 0.0, 0, "ok").check()
    with pytest.raises(ProtocolError, match="25 bytes for shape"):
        p.TensorSpec(p.TensorKind.INPUT, 0, 5, 0, 25, (2, 3), 0.0, 0, "bad").check()


def _c_defines(header: str, prefix: str) -> dict[str, int]:
    text = (RUNTIME / header).read_text()
    return {m[1]: int(m[2], 0) for m in re.finditer(rf"#define {prefix}(\w+) (0x[0-9A-Fa-f]+|\d+)u?\b", text)}


def test_codes_agree_with_the_c_headers() -> None:
    assert _c_defines("bf_protocol.h", "BF_CMD_") == {c.name: int(c) for c in p.Command}
    assert _c_defines("bf_protocol.h", "BF_ERR_") == {
        **{e.name: int(e) for e in p.ErrorCode},
        "PAYLOAD_BYTES": 8,
    }
    dtypes = _c_defines("bf_model_api.h", "BF_DTYPE_")
    assert {name: p.DTYPE_CODES[code].name.upper() for name, code in dtypes.items()} == {n: n for n in dtypes}
    assert sorted(dtypes.values()) == sorted(p.DTYPE_CODES)
    assert _c_defines("bf_platform.h", "BF_COUNTER_") == {k.name: int(k) for k in p.CounterKind}
    assert _c_defines("bf_protocol.h", "BF_PROTO_")["VERSION"] == p.PROTOCOL_VERSION


def test_dtype_codes_agree_with_the_code_generator() -> None:
    program = pytest.importorskip("firmware_gen.program")
    assert {code: dt.numpy for dt, code in program.DTYPE_CODES.items()} == p.DTYPE_CODES
