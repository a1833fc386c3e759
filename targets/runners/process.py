"""Child processes that cannot outlive boardfit, and the TCP ports emulators listen on.

An orphaned QEMU busy-polls a core forever (TOOLCHAIN.md), so every long-running child
(emulator, user-mode program, ssh) is started

* in its own process group, so that killing the group by PID also ends anything it forked;
* with ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux, so the kernel kills it when the thread
  that started it dies — also when Python is SIGKILLed and no ``finally`` runs.  The signal is
  tied to the *thread*: start sessions from a thread that outlives them (normally the main one);
* with stderr going to a temporary file (never a pipe nobody reads, which would block the child
  once the pipe buffer is full), so errors such as QEMU's "Lockup" can be quoted.

:meth:`ManagedProcess.close` sends SIGTERM to the group, then SIGKILL if it has not exited; the
same happens if a session is garbage collected or Python exits without closing it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Final

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG: Final = 1
TERM_GRACE_S: Final = 1.0  # how long a child gets to exit on SIGTERM before SIGKILL


def _parent_death_hook() -> Callable[[], None] | None:
    """A preexec function that arms PR_SET_PDEATHSIG in the child, or None off Linux.

    libc is looked up here, in the parent: the child (between fork and exec) only makes two
    system calls, which is what makes a preexec function safe enough.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


class ManagedProcess:
    """A child process owned by a session: its own process group, killed by PID on close."""

    def __init__(self, argv: Sequence[str], *, stdin: int | IO[bytes] | None = None,
                 stdout: int | IO[bytes] | None = None, pass_fds: Sequence[int] = (),
                 cwd: str | os.PathLike[str] | None = None) -> None:
        self.argv = tuple(argv)
        self._final_stderr = ""
        self._stderr = tempfile.TemporaryFile(prefix="boardfit-stderr-")  # noqa: SIM115 - lives as long as the process
        try:
            self.popen = subprocess.Popen(  # argv from board data; no shell
                self.argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else subprocess.DEVNULL,
                stderr=self._stderr, pass_fds=tuple(pass_fds), cwd=cwd,
                start_new_session=True, preexec_fn=_parent_death_hook(),
            )
        except BaseException:
            self._stderr.close()
            raise
        self.pid = self.popen.pid
        # Runs on close(), when the object is garbage collected, or at interpreter exit —
        # whichever comes first (PR_SET_PDEATHSIG covers a Python that is killed).
        self._finalizer = weakref.finalize(self, _finish, self.popen, self._stderr)
        log.debug("started pid %d: %s", self.pid, self.argv[0])

    def poll(self) -> int | None:
        """The exit status (negative: killed by that signal), or None while it runs."""
        return self.popen.poll()

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds; the exit status, or None if it still runs."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stderr_text(self) -> str:
        """Everything the child wrote to stderr so far (kept after close)."""
        if self._stderr.closed:
            return self._final_stderr
        self._stderr.flush()
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")
        self._stderr.seek(0, os.SEEK_END)
        return text

    def kill(self) -> None:
        """SIGTERM the process group, then SIGKILL it if it does not exit in time; reaps it."""
        _terminate(self.popen)

    def close(self) -> None:
        """Kill the process (if it runs) and release its stderr file; idempotent."""
        if self._finalizer.alive:
            self.kill()
            self._final_stderr = self.stderr_text()
            self._finalizer()


def _terminate(popen: subprocess.Popen[bytes]) -> None:
    if popen.poll() is not None:
        # Reaped: the PID (and group id) may now belong to someone else; never signal it.
        return
    # Until it is reaped (only this module reaps it) the PID cannot be reused, so the group
    # id is still this child's.
    _signal_group(popen.pid, signal.SIGTERM)
    try:
        popen.wait(TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        _signal_group(popen.pid, signal.SIGKILL)
        popen.wait()


def _finish(popen: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
    try:
        _terminate(popen)
    finally:
        stderr.close()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (bind to port 0 and close).

    Another process may take it before the emulator binds it; callers detect "Address already
    in use" from the emulator and retry with a new port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _listening_inodes(port: int) -> set[int] | None:
    """Socket inodes in LISTEN state on ``port`` (from /proc/net/tcp{,6}), None without /proc."""
    found: set[int] = set()
    seen_any = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        seen_any = True
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(int(fields[9]))
    return found if seen_any else None


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return inodes
    for entry in entries:
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listens_on(pid: int, port: int, host: str = "127.0.0.1") -> bool:
    """Whether process ``pid`` has a listening socket on ``port``.

    On Linux this matches the LISTEN socket's inode against the process's open sockets, so it
    neither confuses another program's listener with the emulator's nor makes a probe
    connection.  Elsewhere it falls back to a connect probe (QEMU accepts and then re-listens).
    """
    inodes = _listening_inodes(port)
    if inodes is not None:
        return bool(inodes & _socket_inodes(pid))
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.01) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)

