"""OpenOCD: program, verify and reset in one invocation.

::

    openocd -f interface/cmsis-dap.cfg -f target/nrf52.cfg [-c "adapter serial PROBE"]
        [-c CMD ...] -c "program fw.elf verify reset exit"
    openocd -f ... -c init -c "reset run" -c shutdown

``configs`` and ``commands`` (e.g. ``adapter speed 5000``) come from the board file, the
probe's serial number from local configuration.  The ``-c`` arguments are Tcl: a path with
spaces or Tcl metacharacters is braced.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from targets.runners.base import Capabilities, FlashRunner, mcu_counts
from toolkit.errors import RunnerError

_TCL_PLAIN = re.compile(r"^[A-Za-z0-9_./:+=@%,-]+$")


def tcl_word(text: str) -> str:
    """``text`` as one Tcl word: as is when plain, else in braces."""
    if _TCL_PLAIN.match(text):
        return text
    if any(c in text for c in "{}\\"):
        raise RunnerError(f"cannot pass {text!r} to OpenOCD: braces and backslashes in a path")
    return "{" + text + "}"


class OpenOcdRunner(FlashRunner):
    kind = "openocd"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(flash=True, reset=True, serial=True, emulated=False,
                            starts_process=False, counts=mcu_counts(self.board))

    def _setup_args(self) -> list[str]:
        args = []
        for cfg in self.spec.list_option("configs"):
            args += ["-f", cfg]
        if self.local.probe:
            args += ["-c", f"adapter serial {tcl_word(self.local.probe)}"]
        for cmd in self.spec.list_option("commands"):
            args += ["-c", cmd]
        return args

    def flash_command(self, image: str | os.PathLike[str]) -> list[str]:
        return ["openocd", *self._setup_args(),
                "-c", f"program {tcl_word(os.fspath(image))} verify reset exit"]

    def reset_command(self) -> list[str]:
        return ["openocd", *self._setup_args(), "-c", "init", "-c", "reset run", "-c", "shutdown"]

    def _flash(self, image: Path) -> None:
        self._run(self.flash_command(image))

    def reset(self) -> None:
        self._run(self.reset_command())
