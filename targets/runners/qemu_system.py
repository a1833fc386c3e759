"""QEMU system emulation of a whole board (the emulated Cortex-M and RISC-V MCUs).

The command line comes from the board's ``[emulator]`` table only::

    qemu-system-arm -M mps2-an386 -display none -monitor none [-cpu CPU] [-icount shift=N]
        [-semihosting-config enable=on,target=native] [ARGS...] -kernel fw.elf
        -serial tcp:127.0.0.1:PORT,server=on,wait=off,nodelay=on

* ``-icount shift=N`` (when the board has ``icount_shift`` and deterministic counting is asked)
  makes each instruction advance virtual time by 2^N ns, so the board timer counts instructions
  exactly; :meth:`Runner.to_count` converts ticks.
* ``-semihosting-config`` is on for emulated builds that use semihosting (the board says
  whether its emulated firmware does): the firmware's ``SYS_EXIT_EXTENDED`` then becomes QEMU's
  exit status (:meth:`Session.wait`).  Without it a semihosting call locks QEMU up.
* A firmware fault QEMU cannot handle ends it with "qemu: fatal: Lockup ..." on stderr and
  SIGABRT; :meth:`Session.check_alive` and :meth:`Session.wait` report it, quoting stderr.
* The first UART is a TCP server with ``nodelay=on`` (without it each request costs ~40 ms of
  Nagle delay) and ``wait=off``: the firmware runs at once and must never speak first.

The port is chosen free just before starting; if QEMU still loses the race ("Address already in
use") the start is retried with a new port.  The session is ready when QEMU itself listens.

Measured (QEMU 7.2, mps2-an386): QEMU listens before the firmware has enabled its UART
receiver.  A byte that arrives in that window is not lost but waits in QEMU until its main loop
next polls the socket — about 0.7 s in 2 of 8 starts; once the receiver is on, a request and its
answer take ~1 ms.  The host link's first request must allow for that (a timeout of ≥ 1 s or a
retried ping), as it must for netduinoplus2's late USART anyway.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

import serial

from targets.runners.base import Capabilities, CommandLog, Counts, ProcessSession, Runner, tail
from targets.runners.local import BoardLocal
from targets.runners.process import ManagedProcess, listens_on, pick_free_port, wait_until
from toolkit.errors import RunnerError

if TYPE_CHECKING:
    from toolkit.boards import Board, RunnerSpec

LOOPBACK: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 10.0
PORT_RETRIES: Final = 5
_PORT_TAKEN: Final = ("Address already in use", "Failed to bind socket")


class QemuSystemSession(ProcessSession):
    """A running QEMU; ``serial_url`` is its first UART as ``socket://127.0.0.1:PORT``."""

    def __init__(self, process: ManagedProcess | None, port: int, counts: Counts) -> None:
        super().__init__(process, counts, "QEMU")
        self.port = port
        self.serial_url = f"socket://{LOOPBACK}:{port}"

    def open_serial(self, *, timeout: float = 1.0) -> serial.SerialBase:
        self._require()
        self.check_alive()
        try:
            return serial.serial_for_url(self.serial_url, timeout=timeout)
        except serial.SerialException as exc:
            raise RunnerError(f"cannot connect to QEMU's serial port {self.serial_url}: {exc}") from exc


class QemuSystemRunner(Runner):
    kind = "qemu-system"

    def __init__(self, board: Board, spec: RunnerSpec, *, log: CommandLog | None = None,
                 local: BoardLocal | None = None, port: str | None = None,
                 deterministic: bool = True, semihosting: bool | None = None,
                 tcp_port: int | None = None) -> None:
        """``deterministic``: add ``-icount`` when the board has a shift; ``semihosting``:
        override the board's emulator setting; ``tcp_port``: use this port instead of a free
        one (for reproducible dry runs)."""
        super().__init__(board, spec, log=log, local=local, port=port)
        emu = self.board.emulator
        if emu is None or emu.mode != "system":
            raise RunnerError(f"{self.board.id} has no QEMU system emulator")
        self.emulator = emu
        self.deterministic = deterministic and emu.icount_shift is not None
        self.semihosting = emu.semihosting if semihosting is None else semihosting
        self.tcp_port = tcp_port

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(flash=False, reset=False, serial=True, emulated=True,
                            starts_process=True,
                            counts="instructions" if self.deterministic else "nanoseconds")

    def command(self, image: str | os.PathLike[str], port: int) -> list[str]:
        """The full QEMU command line for ``image`` with its UART on TCP ``port``."""
        emu = self.emulator
        machine = emu.machine_arg
        assert machine is not None  # checked when the board file was read
        argv = [emu.binary, "-M", machine, "-display", "none", "-monitor", "none"]
        if emu.cpu:
            argv += ["-cpu", emu.cpu]
        if self.deterministic:
            argv += ["-icount", f"shift={emu.icount_shift}"]
        if self.semihosting:
            argv += ["-semihosting-config", "enable=on,target=native"]
        argv += list(emu.args)
        argv += ["-kernel", os.fspath(image),
                 "-serial", f"tcp:{LOOPBACK}:{port},server=on,wait=off,nodelay=on"]
        return argv

    def start(self, image: str | os.PathLike[str]) -> QemuSystemSession:
        path = Path(os.fspath(image))
        self.refuse_oversized(path)
        if self.dry_run:
            port = self.tcp_port if self.tcp_port is not None else pick_free_port()
            self.log.spawn(self.command(path, port))
            return QemuSystemSession(None, port, self.capabilities.counts)
        last_error = ""
        for _ in range(1 if self.tcp_port is not None else PORT_RETRIES):
            port = self.tcp_port if self.tcp_port is not None else pick_free_port()
            process = self.log.spawn(self.command(path, port), missing_hint=self.install_hint())
            assert process is not None
            try:
                if self._wait_listening(process, port):
                    return QemuSystemSession(process, port, self.capabilities.counts)
            except BaseException:
                process.close()
                raise
            last_error = process.stderr_text()
            process.close()
            if not any(s in last_error for s in _PORT_TAKEN):
                break
        raise RunnerError(f"QEMU did not start {path.name} on {self.board.id}"
                          + (f":\n{tail(last_error)}" if last_error else ""))

    @staticmethod
    def _wait_listening(process: ManagedProcess, port: int) -> bool:
        """True once QEMU listens on ``port``; False if it exited; raises on timeout."""
        ready = wait_until(lambda: process.poll() is not None or listens_on(process.pid, port),
                           START_TIMEOUT_S)
        if process.poll() is not None:
            return False
        if not ready:
            raise RunnerError(f"QEMU did not listen on port {port} within {START_TIMEOUT_S:g} s"
                              + (f":\n{tail(process.stderr_text())}" if process.stderr_text() else ""))
        return True
