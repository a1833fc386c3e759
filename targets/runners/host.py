"""A program built for this machine, run on a pty: the whole flow, testable in milliseconds."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from targets.runners.base import Capabilities, Runner
from targets.runners.ptylink import DEFAULT_PROGRAM_ARGS, PtySession, start_on_pty


class HostRunner(Runner):
    """Runs a program built for this machine on a pty (the whole flow in milliseconds)."""

    kind = "host"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(flash=False, reset=False, serial=True, emulated=False,
                            starts_process=True, counts="nanoseconds")

    def command(self, program: str | os.PathLike[str],
                args: Sequence[str] = DEFAULT_PROGRAM_ARGS) -> list[str]:
        return [os.fspath(Path(os.fspath(program)).absolute()), *args]

    def start(self, image: str | os.PathLike[str],
              args: Sequence[str] = DEFAULT_PROGRAM_ARGS) -> PtySession:
        path = Path(os.fspath(image))
        self.refuse_oversized(path)
        return start_on_pty(self.log, self.command(path, args), "nanoseconds", path.name)
