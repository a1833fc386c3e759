"""The minimal bare-metal image around a generated model (Cortex-M boards).

Three files under ``<project>/image/``: a start-up file with the core's vector table, a main()
that runs one inference, and a linker script made from the board's memory regions that gives the
model's sections output sections of their own (so ``size -A`` measures them).  The firmware with
the serial protocol replaces this image; until then it is what ``boardfit build --board <mcu>``
links, measures and can boot in QEMU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from firmware_gen.project import GENERATOR_VERSION, GeneratedProject
from firmware_gen.render import render
from toolkit.errors import BuildError

if TYPE_CHECKING:
    from toolkit.boards import Board

IMAGE_DIR = "image"
SUPPORTED_FAMILIES = ("cortex-m",)


@dataclass(frozen=True)
class ImageSources:
    startup: Path
    main: Path
    linker_script: Path


def supports_image(board: Board) -> bool:
    fixed = board.flash.origin is not None and board.ram.origin is not None
    return board.family in SUPPORTED_FAMILIES and fixed


def generate_image(project: GeneratedProject, board: Board) -> ImageSources:
    """Render the image files for ``board`` next to the project (deterministic, like the project)."""
    if not supports_image(board):
        raise BuildError(
            f"board {board.id}: minimal images exist for {', '.join(SUPPORTED_FAMILIES)} boards "
            f"with fixed memory addresses, not {board.family}"
        )
    ctx = {
        "board": board,
        "fpu": "fpu" in board.features and "-mfloat-abi=soft" not in board.toolchain.cflags,
        "model_name": project.program.name,
        "model_hash": project.program.model_hash,
        "generator_version": GENERATOR_VERSION,
    }
    out = project.path(IMAGE_DIR)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("startup.c", "main.c", "link.ld"):
        data = render(f"bare/{name}.j2", **ctx).encode("utf-8")
        path = out / name
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        paths.append(path)
    return ImageSources(*paths)
