"""Fuzzing the device's frame parser and command handlers (ASan + UBSan host build).

The driver (tests/fixtures/frame_fuzz_main.c) runs the real runtime and fake model; every
answer is held to the host's independent verdict on the same bytes (tests/fixtures/
frame_fuzz.py): no crash, no sanitizer report, no bad CRC ever accepted, exactly one
well-formed reply per frame.  ``bench/fuzz_frames.py --frames 100000`` runs the same at scale.
"""

from __future__ import annotations

import pytest
from fixtures import frame_fuzz as ff
from fixtures.runtime_build import FUZZ_MAX_PAYLOAD, build, compiler, sanitizer_env

from toolkit.validate import protocol as p

pytestmark = pytest.mark.skipif(compiler() is None, reason="needs gcc")


@pytest.fixture(scope="module")
def driver() -> str:
    assert FUZZ_MAX_PAYLOAD == ff.MAX_PAYLOAD
    return str(build("fuzz-asan"))


def test_random_and_mutated_frames(driver: str) -> None:
    batch = ff.cases(4000, seed=2024)
    outcomes = ff.check(batch, ff.run_driver(driver, batch, sanitizer_env()))
    kinds = {k.split(" ", 1)[1].split(":")[0] for k in outcomes}
    assert kinds == {"silent", "rejected", "refused", "accepted"}
    rejected = {k.rsplit(":", 1)[1] for k in outcomes if " rejected:" in k}
    assert rejected == {"CRC", "FRAMING", "OVERSIZE", "VERSION", "LENGTH"}
    accepted = {k.rsplit(":", 1)[1] for k in outcomes if " accepted:" in k}
    assert accepted == {c.name for c in p.Command}  # every handler ran on valid requests
    refused = {k.rsplit(":", 1)[1] for k in outcomes if " refused:" in k}
    assert {"RANGE", "BAD_PAYLOAD", "SESSION", "UNKNOWN_COMMAND", "NO_OUTPUT", "INPUT_CRC"} <= refused
    assert not any(k.startswith(("bitflip accepted", "bitflip refused")) for k in outcomes)


def test_every_single_bit_corruption_is_rejected_by_the_device(driver: str) -> None:
    frames = [
        p.Frame(p.Command.OPEN, 1, 0, p.open_payload(ff.SESSION)),
        p.Frame(p.Command.SET_INPUT, 2, ff.SESSION, p.set_input_payload(1, 2, b"\x00\x7f\x80\xff")),
        p.Frame(p.Command.INVOKE, 3, ff.SESSION),
        p.Frame(p.Command.GET_OUTPUT, 4, ff.SESSION, p.read_payload(0, 10, 20)),
        p.Frame(p.Command.RESET, 5, ff.SESSION, p.reset_payload(p.ResetMode.REBOOT)),
    ]
    batch = [case for f in frames for case in ff.single_bit_flips(f)]
    outcomes = ff.check(batch, ff.run_driver(driver, batch, sanitizer_env()))
    assert sum(outcomes.values()) >= len(batch)
    assert not [k for k in outcomes if "accepted" in k or "refused" in k], outcomes


def test_the_checker_catches_a_device_that_misbehaves(driver: str) -> None:
    good = p.Frame(p.Command.PING, 77, 0, b"ping").to_wire()
    bad = good[:-3] + bytes([good[-3] ^ 0x01]) + good[-2:]  # a CRC byte, never made zero
    batch = [ff.Case("t", good), ff.Case("t", bad)]
    replies = ff.run_driver(driver, batch, sanitizer_env())
    ff.check(batch, replies)
    accept = p.Frame(p.Command.PING | p.RSP_FLAG, 77, 0, b"ping").to_wire()
    [rejection] = [i for i, r in enumerate(replies) if r and i > replies.index(accept)]
    forged = [*replies[:rejection], accept, *replies[rejection + 1 :]]  # the corrupted ping answered
    with pytest.raises(ff.Mismatch, match="CRC frame"):
        ff.check(batch, forged)
    with pytest.raises(ff.Mismatch, match="empty frame"):
        ff.check(batch, [accept, *replies[1:]])
    with pytest.raises(ff.Mismatch, match="pieces sent"):
        ff.check(batch, replies[:-1])
