"""This machine's configuration for real boards: ports, probes, drives and ssh hosts.

Board files say how a board is flashed; *where* a user's board is attached is local and lives in
``~/.config/boardfit/local.toml`` (``$XDG_CONFIG_HOME/boardfit/local.toml``; the environment
variable ``BOARDFIT_LOCAL_CONFIG`` names another file)::

    [boards.nucleo-l4r5zi]
    port = "/dev/ttyACM0"          # pyserial URL of the board's UART
    probe = "066DFF485550755187121723"  # debug probe serial: st-flash --serial, pyocd -u,
                                        # openocd "adapter serial"
    runner = "openocd"             # preferred runner kind (default: the board file's first)

    [boards.pico]
    port = "/dev/ttyACM0"
    drive = "/media/me/RPI-RP2"    # where the RP2040 boot drive is mounted (or its parent)

    [boards.rpi4]
    host = "pi@raspberrypi.local"  # ssh destination, optionally ssh://user@host:port

A missing file is an empty configuration.  Unknown keys are errors, so a typo is not silently
ignored.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from toolkit.errors import RunnerError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

ENV_VAR: Final = "BOARDFIT_LOCAL_CONFIG"
_KEYS: Final = ("port", "probe", "runner", "drive", "host")


class LocalConfigError(RunnerError):
    """The local configuration file is malformed (names the file and the key)."""


@dataclass(frozen=True)
class BoardLocal:
    """Where one board is attached on this machine; every field optional."""

    port: str | None = None   # pyserial URL
    probe: str | None = None  # debug probe serial number / unique id
    runner: str | None = None  # preferred runner kind
    drive: str | None = None  # mounted UF2 boot drive, or a directory that holds its mount
    host: str | None = None   # ssh destination


@dataclass(frozen=True)
class LocalConfig:
    boards: dict[str, BoardLocal] = field(default_factory=dict)
    source: str = ""

    def for_board(self, board_id: str) -> BoardLocal:
        return self.boards.get(board_id, BoardLocal())


def default_path() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(Path.home(), ".config")
    return Path(base) / "boardfit" / "local.toml"


def load_local_config(path: str | os.PathLike[str] | None = None) -> LocalConfig:
    """Read the local configuration (a missing file gives an empty one)."""
    p = Path(path) if path is not None else default_path()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return LocalConfig(source=str(p))
    except OSError as exc:
        raise LocalConfigError(f"cannot read {p}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LocalConfigError(f"{p}: not valid TOML: {exc}") from exc
    return parse_local_config(data, str(p))


def parse_local_config(data: dict[str, Any], source: str) -> LocalConfig:
    unknown = [k for k in data if k != "boards"]
    if unknown:
        raise LocalConfigError(f"{source}: {unknown[0]}: unknown key; expected [boards.<id>] tables")
    boards_data = data.get("boards", {})
    if not isinstance(boards_data, dict):
        raise LocalConfigError(f"{source}: boards: expected tables [boards.<id>]")
    boards = {}
    for board_id, table in boards_data.items():
        if not isinstance(table, dict):
            raise LocalConfigError(f"{source}: boards.{board_id}: expected a table")
        for key, value in table.items():
            if key not in _KEYS:
                raise LocalConfigError(
                    f"{source}: boards.{board_id}.{key}: unknown key; expected one of: {', '.join(_KEYS)}"
                )
            if not isinstance(value, str) or not value:
                raise LocalConfigError(f"{source}: boards.{board_id}.{key}: expected a non-empty string")
        boards[board_id] = BoardLocal(**table)
    return LocalConfig(boards=boards, source=source)
