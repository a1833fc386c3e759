"""Runners: get a firmware image onto a board (real or emulated) and a serial link to it.

:func:`make_runner` picks the runner from board data (``[[runner]]`` entries, in the board
file's order of preference) and local configuration; see :mod:`targets.runners.base` for the
``Runner``/``Session`` API and the logged subprocess funnel that honours ``--dry-run``.

Choice: ``prefer`` (a runner kind) wins; else the ``runner`` named for the board in the local
configuration; else, when a port was given (``--port``), the first runner that is not an
emulator (a port means a real board); else the board file's first runner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from targets.runners.base import (
    Capabilities,
    CommandLog,
    CommandResult,
    Counts,
    FlashRunner,
    PortSession,
    ProcessSession,
    Runner,
    Session,
    Step,
    refuse_oversized,
)
from targets.runners.esptool import EsptoolRunner
from targets.runners.host import HostRunner
from targets.runners.local import BoardLocal, LocalConfig, load_local_config
from targets.runners.openocd import OpenOcdRunner
from targets.runners.ptylink import PtySession
from targets.runners.pyocd import PyOcdRunner
from targets.runners.qemu_system import QemuSystemRunner, QemuSystemSession
from targets.runners.qemu_user import QemuUserRunner
from targets.runners.ssh import SshRunner, SshSession
from targets.runners.stflash import StFlashRunner
from targets.runners.transport import PipeSerial
from targets.runners.uf2 import Uf2Runner
from toolkit.errors import RunnerError

if TYPE_CHECKING:
    from toolkit.boards import Board, RunnerSpec

RUNNERS: Final[Mapping[str, type[Runner]]] = {
    cls.kind: cls
    for cls in (QemuSystemRunner, QemuUserRunner, HostRunner, PyOcdRunner, OpenOcdRunner,
                StFlashRunner, Uf2Runner, EsptoolRunner, SshRunner)
}
EMULATOR_KINDS: Final = frozenset({"qemu-system", "qemu-user"})

__all__ = [
    "RUNNERS", "BoardLocal", "Capabilities", "CommandLog", "CommandResult", "Counts",
    "FlashRunner", "LocalConfig", "PipeSerial", "PortSession", "ProcessSession", "PtySession",
    "QemuSystemSession", "Runner", "Session", "SshSession", "Step", "choose_spec",
    "load_local_config", "make_runner", "refuse_oversized",
]


def choose_spec(board: Board, *, prefer: str | None = None, port: str | None = None,
                local: BoardLocal | None = None) -> RunnerSpec:
    """The board's runner entry to use (see the module docstring for the order)."""
    kinds = [r.kind for r in board.runners]
    wanted = prefer or (local.runner if local is not None else None)
    if wanted is not None:
        spec = board.runner_of(wanted)
        if spec is None:
            raise RunnerError(f"{board.id} has no {wanted!r} runner; its runners: {', '.join(kinds)}")
        return spec
    if port is not None:
        real = [r for r in board.runners if r.kind not in EMULATOR_KINDS]
        if not real:
            raise RunnerError(f"{board.id} is only emulated ({', '.join(kinds)}); a port does not apply")
        return real[0]
    return board.runner


def make_runner(board: Board, *, dry_run: bool = False, port: str | None = None,
                prefer: str | None = None, local: LocalConfig | BoardLocal | None = None,
                log: CommandLog | None = None) -> Runner:
    """A runner for ``board``.

    ``port`` is ``--port`` (a pyserial URL; for ssh runners ``ssh://user@host[:port]``);
    ``local`` defaults to ``~/.config/boardfit/local.toml``; ``log`` collects the commands (a
    new one with ``dry_run`` otherwise).
    """
    if local is None:
        local = load_local_config()
    board_local = local.for_board(board.id) if isinstance(local, LocalConfig) else local
    spec = choose_spec(board, prefer=prefer, port=port, local=board_local)
    cls = RUNNERS.get(spec.kind)
    if cls is None:  # pragma: no cover - every kind the board schema knows has a class
        raise RunnerError(f"no runner implements {spec.kind!r}")
    if log is None:
        log = CommandLog(dry_run=dry_run)
    elif log.dry_run != dry_run and dry_run:
        raise RunnerError("make_runner: dry_run=True with a log that runs commands")
    return cls(board, spec, log=log, local=board_local, port=port)
