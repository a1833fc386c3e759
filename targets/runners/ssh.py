"""A real Raspberry Pi (or any Linux board) over ssh: copy the program, run it, talk on its stdio.

::

    ssh -o BatchMode=yes pi@host mkdir -p /tmp/boardfit
    scp -o BatchMode=yes -q prog pi@host:/tmp/boardfit/prog
    ssh -o BatchMode=yes -T -e none pi@host /tmp/boardfit/prog -

The destination comes from local configuration (``host`` under ``[boards.<id>]``) or from
``--port ssh://user@host[:port]``, never from a board file; ``remote_dir`` comes from the board.
``BatchMode`` makes a missing key an error instead of a password prompt that would hang; ``-T``
(no remote pty) and ``-e none`` (no escape character) keep the link binary-clean.  The protocol
rides ssh's stdin/stdout through :class:`targets.runners.transport.PipeSerial`.  The remote
program must exit when its stdin closes (that is what it sees when the session ends).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import serial

from targets.runners.base import Capabilities, CommandLog, ProcessSession, Runner
from targets.runners.local import BoardLocal
from targets.runners.process import ManagedProcess
from targets.runners.ptylink import DEFAULT_PROGRAM_ARGS
from targets.runners.transport import PipeSerial
from toolkit.errors import RunnerError

if TYPE_CHECKING:
    from toolkit.boards import Board, RunnerSpec

SSH_OPTIONS: Final = ("-o", "BatchMode=yes")
_DEST = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@/\s]+)@)?(?P<host>[^@:/\s]+|\[[^\]\s]+\])(?::(?P<port>\d+))?/?$")


@dataclass(frozen=True)
class SshDestination:
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def parse_destination(text: str) -> SshDestination:
    """``[ssh://][user@]host[:port]`` -> SshDestination (raises RunnerError if malformed)."""
    m = _DEST.match(text.strip())
    if m is None:
        raise RunnerError(f"not an ssh destination: {text!r} (expected [ssh://][user@]host[:port])")
    port = m.group("port")
    return SshDestination(host=m.group("host"), user=m.group("user"),
                          port=None if port is None else int(port))


class SshSession(ProcessSession):
    """The remote program's stdin/stdout, through the local ssh process."""

    def __init__(self, process: ManagedProcess | None, what: str) -> None:
        super().__init__(process, "nanoseconds", what)
        self.serial_url = None

    def open_serial(self, *, timeout: float = 1.0) -> serial.SerialBase:
        process = self._require()
        self.check_alive()
        popen = process.popen
        assert popen.stdin is not None and popen.stdout is not None
        return PipeSerial(popen.stdout, popen.stdin, timeout=timeout, name=self.what)


class SshRunner(Runner):
    kind = "ssh"

    def __init__(self, board: Board, spec: RunnerSpec, *, log: CommandLog | None = None,
                 local: BoardLocal | None = None, port: str | None = None,
                 ssh: str = "ssh", scp: str = "scp") -> None:
        super().__init__(board, spec, log=log, local=local, port=port)
        self.remote_dir = spec.str_option("remote_dir")
        self.ssh = ssh
        self.scp = scp

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(flash=True, reset=False, serial=True, emulated=False,
                            starts_process=True, counts="nanoseconds")

    def destination(self) -> SshDestination:
        # --port names the destination; a configured serial ``port`` is not an ssh host.
        text = self.port_arg if self.port_arg is not None else self.local.host
        if text is None:
            raise RunnerError(
                f"no ssh host for {self.board.id}: pass --port ssh://user@host or set host under "
                f"[boards.{self.board.id}] in the local configuration"
            )
        return parse_destination(text)

    def remote_path(self, image: str | os.PathLike[str]) -> str:
        return f"{self.remote_dir.rstrip('/')}/{Path(os.fspath(image)).name}"

    def _ssh(self, dest: SshDestination, *extra: str) -> list[str]:
        port = ["-p", str(dest.port)] if dest.port is not None else []
        return [self.ssh, *SSH_OPTIONS, *port, *extra, dest.target]

    def install_commands(self, image: str | os.PathLike[str]) -> list[list[str]]:
        dest = self.destination()
        port = ["-P", str(dest.port)] if dest.port is not None else []
        return [
            [*self._ssh(dest), "mkdir", "-p", shlex.quote(self.remote_dir)],
            [self.scp, *SSH_OPTIONS, *port, "-q", os.fspath(image),
             f"{dest.target}:{self.remote_path(image)}"],
        ]

    def run_command(self, image: str | os.PathLike[str],
                    args: Sequence[str] = DEFAULT_PROGRAM_ARGS) -> list[str]:
        remote = " ".join(shlex.quote(a) for a in (self.remote_path(image), *args))
        return [*self._ssh(self.destination(), "-T", "-e", "none"), remote]

    def flash(self, image: str | os.PathLike[str]) -> None:
        """Copy the program to ``remote_dir`` on the board (scp keeps its mode bits)."""
        self.refuse_oversized(image)
        for argv in self.install_commands(image):
            self._run(argv)

    def start(self, image: str | os.PathLike[str],
              args: Sequence[str] = DEFAULT_PROGRAM_ARGS) -> SshSession:
        self.flash(image)
        argv = self.run_command(image, args)
        what = f"{self.destination().host}:{self.remote_path(image)}"
        process = self.log.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 missing_hint=self.install_hint())
        return SshSession(process, what)
