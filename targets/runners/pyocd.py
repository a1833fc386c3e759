"""pyOCD: flash an ELF over a CMSIS-DAP/ST-Link probe and reset.

::

    pyocd pack install stm32l4r5zitx          # only for targets not built into pyOCD (pack = true)
    pyocd flash -t nrf52840 [-u PROBE] [-f HZ] --format elf fw.elf
    pyocd reset -t nrf52840 [-u PROBE]

``target`` and ``frequency_hz`` come from the board file; the probe's unique id (``-u``) from
local configuration (``probe``), so several boards can be attached at once.  ``pyocd flash``
resets and runs the target after programming.
"""

from __future__ import annotations

import os
from pathlib import Path

from targets.runners.base import Capabilities, FlashRunner, mcu_counts


class PyOcdRunner(FlashRunner):
    kind = "pyocd"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(flash=True, reset=True, serial=True, emulated=False,
                            starts_process=False, counts=mcu_counts(self.board))

    def _target_args(self) -> list[str]:
        args = ["-t", self.spec.str_option("target")]
        if self.local.probe:
            args += ["-u", self.local.probe]
        return args

    def flash_commands(self, image: str | os.PathLike[str]) -> list[list[str]]:
        commands = []
        if self.spec.bool_option("pack"):
            commands.append(["pyocd", "pack", "install", self.spec.str_option("target")])
        freq = self.spec.option("frequency_hz")
        freq_args = ["-f", str(freq)] if isinstance(freq, int) else []
        commands.append(["pyocd", "flash", *self._target_args(), *freq_args, "--format", "elf",
                         os.fspath(image)])
        return commands

    def reset_command(self) -> list[str]:
        return ["pyocd", "reset", *self._target_args()]

    def _flash(self, image: Path) -> None:
        for argv in self.flash_commands(image):
            self._run(argv)

    def reset(self) -> None:
        self._run(self.reset_command())
