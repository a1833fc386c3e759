"""Linux programs under QEMU user mode (the Raspberry Pi profiles).

``qemu-aarch64 -cpu cortex-a72 prog -`` (Pi 4), ``qemu-arm -cpu cortex-a7 prog -``
(32-bit Pi OS): ``-cpu`` always comes from the board, because QEMU's default CPU enables every
extension (``sdot`` would then run on a "Pi 4" that lacks it).  The program talks over a pty
(:mod:`targets.runners.ptylink`): ``Session.serial_url`` is the pty's path.

Timing: the program times inferences with ``clock_gettime(CLOCK_MONOTONIC)``, so counts are
**nanoseconds of emulation on this host**, not a Pi's latency and not deterministic.  QEMU 7.2
can count guest instructions with a TCG plugin (``-plugin .../libinsn.so``), but Debian's
qemu-user ships no plugins (``dpkg -L qemu-user`` lists none), so that is not used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from targets.runners.base import Capabilities, CommandLog, Runner
from targets.runners.local import BoardLocal
from targets.runners.ptylink import DEFAULT_PROGRAM_ARGS, PtySession, start_on_pty
from toolkit.errors import RunnerError

if TYPE_CHECKING:
    from toolkit.boards import Board, RunnerSpec


class QemuUserRunner(Runner):
    kind = "qemu-user"

    def __init__(self, board: Board, spec: RunnerSpec, *, log: CommandLog | None = None,
                 local: BoardLocal | None = None, port: str | None = None) -> None:
        super().__init__(board, spec, log=log, local=local, port=port)
        emu = self.board.emulator
        if emu is None or emu.mode != "user" or emu.cpu is None:
            raise RunnerError(f"{self.board.id} has no QEMU user-mode emulator with a -cpu")
        self.emulator = emu

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(flash=False, reset=False, serial=True, emulated=True,
                            starts_process=True, counts="nanoseconds")

    def command(self, program: str | os.PathLike[str],
                args: Sequence[str] = DEFAULT_PROGRAM_ARGS) -> list[str]:
        emu = self.emulator
        assert emu.cpu is not None
        return [emu.binary, "-cpu", emu.cpu, *emu.args, os.fspath(program), *args]

    def start(self, image: str | os.PathLike[str],
              args: Sequence[str] = DEFAULT_PROGRAM_ARGS) -> PtySession:
        path = Path(os.fspath(image))
        self.refuse_oversized(path)
        return start_on_pty(self.log, self.command(path, args), "nanoseconds",
                            f"{self.emulator.binary} {path.name}", self.install_hint())
