"""A program that speaks the serial protocol on its stdin/stdout, reached through a pty.

Only the slave end of a pty has a path, and pyserial needs a path, so the *host* opens the slave
(``Session.serial_url`` is e.g. ``/dev/pts/7``, opened exactly like a real ``/dev/ttyACM0``)
and the program gets the master end as its stdin and stdout: a raw byte stream (a pty master
has no line discipline of its own), the same thing it reads and writes over ssh.
The slave is put in raw mode before the program starts, and the session keeps a slave fd open
so the program never sees a hang-up between pyserial's open and close.
"""

from __future__ import annotations

import os
import tty
import weakref
from collections.abc import Sequence
from typing import Final

import serial

from targets.runners.base import CommandLog, Counts, ProcessSession
from targets.runners.process import ManagedProcess
from toolkit.errors import RunnerError

# The device program's arguments: ``-`` = speak the protocol on stdin/stdout (the contract of
# firmware_gen/runtime/platform_posix.c: its one argument is a serial device path or ``-``;
# an explicit ``-`` also overrides a BF_SERIAL in the environment).
DEFAULT_PROGRAM_ARGS: Final = ("-",)


class PtySession(ProcessSession):
    """A program whose stdin/stdout is the master of a pty; ``serial_url`` is the slave path."""

    def __init__(self, process: ManagedProcess | None, slave_path: str | None, slave_fd: int | None,
                 counts: Counts, what: str) -> None:
        super().__init__(process, counts, what)
        self.serial_url = slave_path
        # The slave fd is closed with the session, or when a forgotten session is collected.
        self._release_slave = None if slave_fd is None else weakref.finalize(self, os.close, slave_fd)

    def open_serial(self, *, timeout: float = 1.0) -> serial.SerialBase:
        self._require()
        self.check_alive()
        assert self.serial_url is not None
        try:
            return serial.serial_for_url(self.serial_url, timeout=timeout)
        except serial.SerialException as exc:
            raise RunnerError(f"cannot open pty {self.serial_url}: {exc}") from exc

    def close(self) -> None:
        if self._closed:
            return
        try:
            super().close()
        finally:
            if self._release_slave is not None:
                self._release_slave()


def start_on_pty(log: CommandLog, argv: Sequence[str], counts: Counts, what: str,
                 missing_hint: str = "") -> PtySession:
    """Spawn ``argv`` with a fresh pty master as stdin/stdout (see the module docstring)."""
    if log.dry_run:
        log.spawn(argv)
        return PtySession(None, None, None, counts, what)
    master, slave = os.openpty()
    try:
        tty.setraw(slave)
        process = log.spawn(argv, stdin=master, stdout=master, missing_hint=missing_hint)
    except BaseException:
        os.close(slave)
        raise
    finally:
        os.close(master)  # the child holds its own copies
    assert process is not None
    return PtySession(process, os.ttyname(slave), slave, counts, what)
