"""st-flash (stlink-tools): write a raw binary to an STM32's internal flash.

::

    arm-none-eabi-objcopy -O binary fw.elf fw.bin
    st-flash [--connect-under-reset] [--serial PROBE] --reset write fw.bin 0x8000000
    st-flash [--serial PROBE] reset

st-flash takes a binary and an address (``address`` in the board file, hex as st-flash wants
it).  The binary is made with the board toolchain's objcopy beside the ELF and checked against
the flash size again: a section placed outside flash would make objcopy fill the gap, and that
must not be written.
"""

from __future__ import annotations

import os
from pathlib import Path

from targets.elf import ImageSizes, is_elf
from targets.runners.base import Capabilities, FlashRunner, mcu_counts


class StFlashRunner(FlashRunner):
    kind = "st-flash"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(flash=True, reset=True, serial=True, emulated=False,
                            starts_process=False, counts=mcu_counts(self.board))

    def _probe_args(self) -> list[str]:
        return ["--serial", self.local.probe] if self.local.probe else []

    def binary_path(self, image: str | os.PathLike[str]) -> Path:
        path = Path(os.fspath(image))
        return path.with_suffix(".bin") if path.suffix != ".bin" else path

    def objcopy_command(self, image: str | os.PathLike[str]) -> list[str]:
        return [self.board.toolchain.tool("objcopy"), "-O", "binary", os.fspath(image),
                os.fspath(self.binary_path(image))]

    def write_command(self, binary: str | os.PathLike[str]) -> list[str]:
        cur = ["--connect-under-reset"] if self.spec.bool_option("connect_under_reset") else []
        return ["st-flash", *cur, *self._probe_args(), "--reset", "write", os.fspath(binary),
                f"{self.spec.int_option('address'):#x}"]

    def reset_command(self) -> list[str]:
        return ["st-flash", *self._probe_args(), "reset"]

    def _flash(self, image: Path) -> None:
        binary = image
        if is_elf(image):
            self._run(self.objcopy_command(image))
            binary = self.binary_path(image)
            if not self.dry_run:
                self.refuse_oversized(ImageSizes(text=binary.stat().st_size, data=0, bss=0))
        self._run(self.write_command(binary))

    def reset(self) -> None:
        self._run(self.reset_command())
