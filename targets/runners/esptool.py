"""esptool: write an ESP-IDF application (and its boot loader and partition table) over UART.

::

    python -m esptool --chip esp32s3 elf2image -o app.bin app.elf     # when given an ELF
    python -m esptool --chip esp32s3 -p PORT -b 460800 --before default_reset
        --after hard_reset write_flash [WRITE_FLASH_ARGS] [0x0 bootloader.bin
        0x8000 partition-table.bin] 0x10000 app.bin
    python -m esptool --chip esp32s3 -p PORT run

``chip``, ``app_offset`` and ``baud`` come from the board file, the port from local
configuration or ``--port`` (esptool needs it to flash at all).  When ESP-IDF's
``flasher_args.json`` sits beside the image (an ESP-IDF build directory), its ``flash_files``
(offset -> file, relative to that directory) and ``write_flash_args`` are used instead: they
are exactly what ``idf.py flash`` would write.  esptool runs under this Python
(``sys.executable -m esptool``), where ``pip install esptool`` put it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Final

from targets.elf import is_elf
from targets.runners.base import Capabilities, FlashRunner, mcu_counts
from toolkit.errors import RunnerError

FLASHER_ARGS: Final = "flasher_args.json"


class EsptoolRunner(FlashRunner):
    kind = "esptool"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(flash=True, reset=True, serial=True, emulated=False,
                            starts_process=False, counts=mcu_counts(self.board))

    def _esptool(self) -> list[str]:
        return [sys.executable, "-m", "esptool", "--chip", self.spec.str_option("chip")]

    def elf2image_command(self, image: str | os.PathLike[str]) -> list[str]:
        return [*self._esptool(), "elf2image", "-o", os.fspath(self.app_path(image)), os.fspath(image)]

    def app_path(self, image: str | os.PathLike[str]) -> Path:
        path = Path(os.fspath(image))
        return path if path.suffix == ".bin" else path.with_suffix(".bin")

    def flash_files(self, app: Path) -> tuple[list[str], list[tuple[int, Path]]]:
        """(extra write_flash arguments, [(offset, file)]) for the application binary ``app``."""
        args_file = app.parent / FLASHER_ARGS
        if not args_file.is_file():
            return [], [(self.spec.int_option("app_offset"), app)]
        try:
            data = json.loads(args_file.read_text(encoding="utf-8"))
            files = sorted((int(off, 0), app.parent / name) for off, name in data["flash_files"].items())
            extra = [str(a) for a in data.get("write_flash_args", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RunnerError(f"cannot read {args_file}: {exc}") from exc
        return extra, files

    def write_command(self, app: str | os.PathLike[str]) -> list[str]:
        port = self.require_port("esptool")
        extra, files = self.flash_files(Path(os.fspath(app)))
        pairs = [x for off, f in files for x in (f"{off:#x}", os.fspath(f))]
        return [*self._esptool(), "-p", port, "-b", str(self.spec.int_option("baud")),
                "--before", "default_reset", "--after", "hard_reset", "write_flash", *extra, *pairs]

    def reset_command(self) -> list[str]:
        return [*self._esptool(), "-p", self.require_port("esptool"), "run"]

    def _flash(self, image: Path) -> None:
        app = image
        if is_elf(image):
            self._run(self.elf2image_command(image))
            app = self.app_path(image)
        self._run(self.write_command(app))

    def reset(self) -> None:
        self._run(self.reset_command())
