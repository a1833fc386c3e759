"""A pyserial-compatible link over a child process's stdin and stdout (ssh, or any pipe).

:class:`PipeSerial` subclasses :class:`serial.SerialBase`, so code written for a serial port —
``read(n)`` honouring ``timeout``, ``read_until``, ``write``, ``in_waiting``,
``reset_input_buffer`` — works unchanged over ``ssh host prog -``.  Reads are
non-blocking on the pipe with :mod:`select`, so a timeout is a timeout, never a hang.  Closing
the link closes its own duplicates of the pipes only; the process belongs to its session.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from typing import IO

import serial
from serial.serialutil import PortNotOpenError, SerialBase, SerialException

_CHUNK = 65536


class PipeSerial(SerialBase):
    """Serial-port semantics over a readable and a writable pipe (file objects or fds)."""

    def __init__(self, reader: IO[bytes] | int, writer: IO[bytes] | int, *,
                 timeout: float | None = 1.0, name: str = "pipe") -> None:
        # Own duplicates: closing the link never closes (or double-closes) the caller's fds.
        self._rfd = os.dup(reader if isinstance(reader, int) else reader.fileno())
        self._wfd = os.dup(writer if isinstance(writer, int) else writer.fileno())
        self._buffer = bytearray()
        self._eof = False
        super().__init__(port=None, timeout=timeout)
        self.name = name
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self.is_open = True

    # SerialBase hooks --------------------------------------------------------------------
    def open(self) -> None:
        raise SerialException("a PipeSerial is open from construction and cannot be reopened")

    def _reconfigure_port(self, *args: object, **kwargs: object) -> None:
        """Baud rate, parity and the like mean nothing on a pipe."""

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            for fd in {self._rfd, self._wfd}:
                with contextlib.suppress(OSError):
                    os.close(fd)

    # Reading -----------------------------------------------------------------------------
    def _fill(self, wait: float | None) -> None:
        """Move whatever the pipe holds into the buffer, waiting up to ``wait`` s for data."""
        if self._eof:
            return
        ready, _, _ = select.select([self._rfd], [], [], wait)
        while ready:
            try:
                chunk = os.read(self._rfd, _CHUNK)
            except BlockingIOError:
                return
            if not chunk:
                self._eof = True
                return
            self._buffer += chunk
            ready, _, _ = select.select([self._rfd], [], [], 0)

    @property
    def in_waiting(self) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        self._fill(0)
        return len(self._buffer)

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes: returns early only on timeout or when the other end closed."""
        if not self.is_open:
            raise PortNotOpenError()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while len(self._buffer) < size and not self._eof:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            self._fill(remaining)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def reset_input_buffer(self) -> None:
        """Discard everything received so far (and whatever is already in the pipe)."""
        if not self.is_open:
            raise PortNotOpenError()
        self._fill(0)
        self._buffer.clear()

    # Writing -----------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        view = memoryview(bytes(data))
        deadline = None if self.write_timeout is None else time.monotonic() + self.write_timeout
        while view:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise serial.SerialTimeoutException("write timeout")
            _, ready, _ = select.select([], [self._wfd], [], remaining)
            if not ready:
                continue
            try:
                sent = os.write(self._wfd, view)
            except BlockingIOError:
                continue
            except BrokenPipeError as exc:
                raise SerialException(f"{self.name}: the other end closed the pipe") from exc
            view = view[sent:]
        return len(data)

    def flush(self) -> None:
        """Writes go straight to the pipe; nothing is buffered here."""

    def reset_output_buffer(self) -> None:
        """Nothing is buffered on this side."""

    @property
    def out_waiting(self) -> int:
        return 0

    # Modem lines do not exist on a pipe.
    def _update_break_state(self) -> None: ...
    def _update_rts_state(self) -> None: ...
    def _update_dtr_state(self) -> None: ...

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True
