"""What every runner shares: capabilities, the one logged subprocess funnel, sessions, fit check.

A *runner* gets a firmware image onto a board and gives back a serial link to it.  Runners that
flash a real board (pyOCD, OpenOCD, st-flash, UF2, esptool) flash and then hand over the serial
port from local configuration; runners that start something (QEMU system or user mode, a host
program, a program over ssh) own that process for the life of a :class:`Session`::

    runner = make_runner(board)                 # targets.runners
    with runner.start(Path("fw.elf")) as dev:   # refuses an oversized image first
        link = dev.open_serial(timeout=1.0)     # pyserial-compatible
        ...
        code = dev.wait(5.0)                    # e.g. QEMU's semihosting exit code

Every subprocess a runner launches — a flash tool run to completion (:meth:`CommandLog.run`) or
a long-running child (:meth:`CommandLog.spawn`) — goes through its :class:`CommandLog`, which
logs the command line at INFO, keeps it for ``--dry-run`` output, and with ``dry_run=True``
records it without running anything.  File work boardfit does itself (UF2 conversion, copying
to a drive) is recorded the same way as an *internal* step.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Final, Literal

import serial

from targets.elf import ImageSizes, image_sizes
from targets.runners.local import BoardLocal
from targets.runners.process import ManagedProcess, wait_until
from toolkit.errors import BuildError, DoesNotFit, RunnerError

if TYPE_CHECKING:
    from toolkit.boards import Board, RunnerSpec

log = logging.getLogger(__name__)

Counts = Literal["instructions", "cycles", "nanoseconds"]
DEFAULT_TIMEOUT_S: Final = 120.0  # flashing a 2 MiB image over SWD takes well under a minute
STDERR_TAIL_LINES: Final = 12
# A USB serial port re-enumerates after the board resets (UF2 copy, esptool hard reset).
PORT_APPEAR_TIMEOUT_S: Final = 10.0


# --------------------------------------------------------------------------------------------
# Capabilities
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What a runner can do on its board.

    ``counts`` says what the device's timer numbers mean once :meth:`Runner.to_count` converted
    them: ``instructions`` (QEMU system emulation with ``-icount``: deterministic, not cycles),
    ``cycles`` (a real MCU's core clock) or ``nanoseconds`` (wall-clock time: a Linux program's
    ``clock_gettime``; under emulation that is the emulator's time on this host, not a Pi's).
    """

    flash: bool      # writes the image to the board's non-volatile memory
    reset: bool      # can reset the board on its own
    serial: bool     # start() yields a session with a serial link
    emulated: bool   # the board is an emulator on this machine
    starts_process: bool  # the session owns a child process (emulator, program, ssh)
    counts: Counts


# --------------------------------------------------------------------------------------------
# The subprocess funnel
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One recorded action: a subprocess argv, or (``internal``) work boardfit does itself."""

    argv: tuple[str, ...]
    cwd: str | None = None
    internal: bool = False

    def __str__(self) -> str:
        text = shlex.join(self.argv)
        if self.cwd:
            text = f"(cd {shlex.quote(self.cwd)} && {text})"
        return f"# boardfit: {text}" if self.internal else text


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes
    dry_run: bool = False


class CommandLog:
    """The one place runners launch subprocesses from (see the module docstring)."""

    def __init__(self, *, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self.steps: list[Step] = []

    @property
    def commands(self) -> list[tuple[str, ...]]:
        """The argv of every subprocess step, in order (what --dry-run prints)."""
        return [s.argv for s in self.steps if not s.internal]

    def describe(self) -> str:
        return "\n".join(str(s) for s in self.steps)

    def _record(self, step: Step) -> None:
        self.steps.append(step)
        log.info("%s%s", "[dry run] " if self.dry_run else "", step)

    def note(self, *argv: str) -> bool:
        """Record an internal step; returns whether to perform it (False in a dry run)."""
        self._record(Step(tuple(argv), internal=True))
        return not self.dry_run

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = DEFAULT_TIMEOUT_S,
            cwd: str | os.PathLike[str] | None = None, input: bytes | None = None,
            missing_hint: str = "") -> CommandResult:
        """Run ``argv`` to completion (no shell), capturing its output.

        With ``check`` a non-zero exit raises RunnerError quoting the command, the exit code
        and the last lines of stderr; a missing program or a timeout always raises.
        """
        args = tuple(str(a) for a in argv)
        self._record(Step(args, None if cwd is None else os.fspath(cwd)))
        if self.dry_run:
            return CommandResult(args, 0, b"", b"", dry_run=True)
        try:
            proc = subprocess.run(  # argv from board data and local config; no shell
                args, cwd=cwd, input=input, capture_output=True, timeout=timeout, check=False,
                stdin=None if input is not None else subprocess.DEVNULL,
            )
        except FileNotFoundError as exc:
            raise RunnerError(_not_installed(args[0], missing_hint)) from exc
        except subprocess.TimeoutExpired as exc:
            raise RunnerError(
                f"`{shlex.join(args)}` did not finish in {timeout:g} s"
                + _tail_block(exc.stderr if isinstance(exc.stderr, bytes) else b"")
            ) from exc
        if check and proc.returncode != 0:
            raise RunnerError(
                f"`{shlex.join(args)}` failed with exit code {proc.returncode}"
                + _tail_block(proc.stderr or proc.stdout)
            )
        return CommandResult(args, proc.returncode, proc.stdout, proc.stderr)

    def spawn(self, argv: Sequence[str], *, stdin: int | None = None, stdout: int | None = None,
              pass_fds: Sequence[int] = (), cwd: str | os.PathLike[str] | None = None,
              missing_hint: str = "") -> ManagedProcess | None:
        """Start a long-running child (see targets.runners.process); None in a dry run."""
        args = tuple(str(a) for a in argv)
        self._record(Step(args, None if cwd is None else os.fspath(cwd)))
        if self.dry_run:
            return None
        try:
            return ManagedProcess(args, stdin=stdin, stdout=stdout, pass_fds=pass_fds, cwd=cwd)
        except FileNotFoundError as exc:
            raise RunnerError(_not_installed(args[0], missing_hint)) from exc


def _not_installed(program: str, hint: str) -> str:
    return f"{program} is not installed or not on PATH" + (f" ({hint})" if hint else "")


def tail(data: bytes | str, lines: int = STDERR_TAIL_LINES) -> str:
    """The last ``lines`` lines of a tool's output, preceded by its first lines that say
    "fatal" or "error" when those scrolled away (QEMU prints "qemu: fatal: Lockup ..." and
    then a register dump)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    all_lines = text.rstrip().splitlines()
    last = all_lines[-lines:]
    head = [ln for ln in all_lines[:-lines] if re.search(r"fatal|error", ln, re.IGNORECASE)][:3]
    return "\n".join([*head, "...", *last] if head else last)


def describe_status(code: int) -> str:
    """"exited with status 3" or "was killed by SIGABRT" for a Popen return code."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def _tail_block(data: bytes) -> str:
    text = tail(data)
    return f":\n{text}" if text else " (no output)"


# --------------------------------------------------------------------------------------------
# Fit check
# --------------------------------------------------------------------------------------------


def refuse_oversized(image: str | os.PathLike[str] | ImageSizes, board: Board) -> ImageSizes:
    """Raise DoesNotFit unless the linked image fits the board; returns its sizes.

    Flash: ``text + data`` against the whole flash region (the image includes the runtime the
    region's ``reserved`` bytes are for).  RAM: ``data + bss`` plus the board's stack and heap
    (less what stack/heap sections of the image already reserve) against the RAM region; on a
    Linux or host board the operating system's share (``reserved - stack - heap``) is not
    available to the program.
    """
    sizes = image if isinstance(image, ImageSizes) else _sizes_of(Path(os.fspath(image)))
    if sizes.flash > board.flash.size:
        raise DoesNotFit("firmware image (flash: code + constants + initialised data)",
                         sizes.flash, board.flash.size, board.id)
    ram = board.ram
    stack_heap = max(ram.stack + ram.heap, sizes.stack_heap)
    needed = sizes.ram - sizes.stack_heap + stack_heap
    available = ram.size if board.kind == "mcu" else ram.size - (ram.reserved - ram.stack - ram.heap)
    if needed > available:
        raise DoesNotFit("firmware image (RAM: data + bss + stack + heap)", needed, available, board.id)
    return sizes


def _sizes_of(path: Path) -> ImageSizes:
    try:
        return image_sizes(path)
    except BuildError as exc:
        raise RunnerError(f"cannot size image {path}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------------------------


class Session(ABC):
    """A started device: a serial link to it and, for emulators and programs, its process.

    Use as a context manager (or call :meth:`close`): whatever it started is killed by PID on
    exit, also after an exception.
    """

    #: pyserial URL of the link (``socket://127.0.0.1:PORT``, a pty path, ``/dev/ttyACM0``), or
    #: None where the link is not a port (ssh pipes): use :meth:`open_serial` in every case.
    serial_url: str | None = None

    def __init__(self, counts: Counts) -> None:
        self.counts: Counts = counts
        self._closed = False

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @abstractmethod
    def open_serial(self, *, timeout: float = 1.0) -> serial.SerialBase:
        """A pyserial-compatible link to the device with read timeout ``timeout`` seconds."""

    def poll(self) -> int | None:
        """The exit status of the session's process if it has ended, else None."""
        return None

    def wait(self, timeout: float) -> int:
        """Wait for the process to end (e.g. a semihosting exit); its exit status."""
        raise RunnerError(f"{type(self).__name__} has no process to wait for")

    def check_alive(self) -> None:  # noqa: B027 - deliberately a no-op without a process
        """Raise RunnerError (quoting the process's stderr) if the process has ended."""

    def close(self) -> None:
        self._closed = True


class ProcessSession(Session):
    """A session that owns a child process (emulator, program under qemu-user, ssh)."""

    def __init__(self, process: ManagedProcess | None, counts: Counts, what: str) -> None:
        super().__init__(counts)
        self.process = process
        self.what = what

    def _require(self) -> ManagedProcess:
        if self.process is None:
            raise RunnerError(f"dry run: {self.what} was not started")
        return self.process

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def wait(self, timeout: float) -> int:
        code = self._require().wait(timeout)
        if code is None:
            raise RunnerError(f"{self.what} still running after {timeout:g} s")
        return code

    def stderr_text(self) -> str:
        return "" if self.process is None else self.process.stderr_text()

    def check_alive(self) -> None:
        code = self.poll()
        if code is not None:
            raise RunnerError(f"{self.what} {describe_status(code)}"
                              + _tail_block(self.stderr_text().encode()))

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        if self.process is not None:
            self.process.close()


class PortSession(Session):
    """A flashed real board reached on a serial port from local configuration (or --port)."""

    def __init__(self, url: str | None, baud: int, counts: Counts, board_id: str) -> None:
        super().__init__(counts)
        self.serial_url = url
        self.baud = baud
        self.board_id = board_id

    def open_serial(self, *, timeout: float = 1.0) -> serial.SerialBase:
        if self.serial_url is None:
            raise RunnerError(
                f"no serial port for {self.board_id}: pass --port or set port under "
                f"[boards.{self.board_id}] in the local configuration"
            )
        if self.serial_url.startswith("/") and not wait_until(
                lambda: os.path.exists(str(self.serial_url)), PORT_APPEAR_TIMEOUT_S, 0.1):
            raise RunnerError(f"{self.serial_url} did not appear within {PORT_APPEAR_TIMEOUT_S:g} s "
                              f"after flashing {self.board_id}; is the board connected?")
        try:
            return serial.serial_for_url(self.serial_url, baudrate=self.baud, timeout=timeout)
        except serial.SerialException as exc:
            raise RunnerError(f"cannot open {self.serial_url} for {self.board_id}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


class Runner(ABC):
    """One way to flash and run a board (one ``[[runner]]`` of its board file).

    Subclasses set ``kind`` (the board file's runner kind), implement :attr:`capabilities` and
    :meth:`start`, and for flashing runners :meth:`flash`.  ``local`` is this machine's
    configuration for the board (port, probe, host, drive); ``port`` (from --port) overrides
    ``local.port``.
    """

    kind: ClassVar[str]

    def __init__(self, board: Board, spec: RunnerSpec, *, log: CommandLog | None = None,
                 local: BoardLocal | None = None, port: str | None = None) -> None:
        if spec.kind != self.kind:
            raise RunnerError(f"{type(self).__name__} runs {self.kind!r} runners, not {spec.kind!r}")
        self.board = board
        self.spec = spec
        self.log = log if log is not None else CommandLog()
        self.local = local if local is not None else BoardLocal()
        self.port_arg = port  # exactly what --port said (None when not given)
        self.port = port if port is not None else self.local.port

    @property
    def dry_run(self) -> bool:
        return self.log.dry_run

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def start(self, image: str | os.PathLike[str]) -> Session:
        """Refuse an oversized image, get it running on the board, return the session."""

    def flash(self, image: str | os.PathLike[str]) -> None:
        raise RunnerError(f"the {self.kind} runner of {self.board.id} does not flash")

    def reset(self) -> None:
        raise RunnerError(f"the {self.kind} runner of {self.board.id} cannot reset the board")

    def refuse_oversized(self, image: str | os.PathLike[str] | ImageSizes) -> ImageSizes:
        return refuse_oversized(image, self.board)

    def to_count(self, ticks: int) -> float:
        """Convert the device timer's ticks into the unit of ``capabilities.counts``."""
        counts = self.capabilities.counts
        timer_hz = self.board.timer.frequency_hz
        if counts == "instructions":
            assert self.board.emulator is not None
            return self.board.emulator.instructions(ticks)
        if counts == "cycles":
            # A timer slower than the core (nRF TIMER at 16 MHz) gives cycles at its resolution.
            clock = self.board.clock_hz or timer_hz
            return ticks * clock / timer_hz
        emu = self.board.emulator
        hz = emu.timer_hz if emu is not None and emu.timer_hz is not None else timer_hz
        return ticks * 1e9 / hz

    def _run(self, argv: Sequence[str], *, check: bool = True,
             timeout: float = DEFAULT_TIMEOUT_S) -> CommandResult:
        return self.log.run(argv, check=check, timeout=timeout, missing_hint=self.install_hint())

    def install_hint(self) -> str:
        parts = []
        if self.spec.packages:
            parts.append("apt-get install --no-install-recommends " + " ".join(self.spec.packages))
        if self.spec.pip:
            parts.append("pip install " + " ".join(self.spec.pip))
        return "; ".join(parts)

    def require_port(self, what: str) -> str:
        if self.port is None:
            raise RunnerError(
                f"{what} for {self.board.id} needs a serial port: pass --port or set port under "
                f"[boards.{self.board.id}] in the local configuration"
            )
        return self.port


class FlashRunner(Runner):
    """A real board programmed by a flash tool; the link is the configured serial port."""

    def start(self, image: str | os.PathLike[str]) -> Session:
        self.flash(image)
        if self.port is None and not self.dry_run:
            self.require_port("talking to the board")
        return PortSession(self.port, self.board.uart.baud, self.capabilities.counts, self.board.id)

    def flash(self, image: str | os.PathLike[str]) -> None:
        path = Path(os.fspath(image))
        self.refuse_oversized(path)
        self._flash(path)

    @abstractmethod
    def _flash(self, image: Path) -> None:
        """Program a checked image (ELF, or a raw binary where the tool takes one)."""


def mcu_counts(board: Board) -> Counts:
    """What a real board's timer counts once converted: cycles, or ns for clock_gettime."""
    return "nanoseconds" if board.timer.kind == "clock_gettime" else "cycles"
