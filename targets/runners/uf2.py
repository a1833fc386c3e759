"""UF2: convert an image to USB Flashing Format and copy it to a board's boot drive (RP2040).

UF2 (Microsoft's format, used by the RP2040 boot ROM) is a sequence of independent 512-byte
blocks, all little-endian::

    offset  field
       0    magic start 0   0x0A324655 ("UF2\\n")
       4    magic start 1   0x9E5D5157
       8    flags           0x00002000: the familyID field is present
      12    target address  where the payload goes in flash
      16    payload size    256 here (the RP2040 boot ROM accepts only 256)
      20    block number    0 .. count-1
      24    block count     total blocks in the file
      28    family id       0xE48BFF56 for RP2040 (from the board file)
      32    data[476]       payload, then zeros
     508    magic end       0x0AB16F30

Payloads cover whole 256-byte pages (the image is padded with zeros inside a page), pages in
increasing address order.  The drive is where the user says it is mounted (local configuration
``drive``: the mount itself or a directory holding it, such as ``/media/$USER``), never a
hard-coded path; it is recognised by its ``INFO_UF2.TXT`` with ``Board-ID: <volume_label>``.
Copying the file makes the boot ROM flash it and reboot, so the drive disappears right after.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from targets.elf import is_elf, read_elf
from targets.runners.base import Capabilities, FlashRunner, mcu_counts
from toolkit.errors import BuildError, RunnerError

log = logging.getLogger(__name__)

MAGIC_START0: Final = 0x0A324655
MAGIC_START1: Final = 0x9E5D5157
MAGIC_END: Final = 0x0AB16F30
FLAG_FAMILY_ID_PRESENT: Final = 0x00002000
BLOCK_SIZE: Final = 512
DATA_SIZE: Final = 476
PAYLOAD_SIZE: Final = 256
INFO_FILE: Final = "INFO_UF2.TXT"
OUTPUT_NAME: Final = "boardfit.uf2"
_HEADER: Final = struct.Struct("<8I")


def uf2_blocks(chunks: Iterable[tuple[int, bytes]], family_id: int,
               payload_size: int = PAYLOAD_SIZE) -> bytes:
    """Encode (address, bytes) chunks as UF2 blocks of ``payload_size``-byte aligned pages."""
    if not 0 < payload_size <= DATA_SIZE:
        raise ValueError(f"payload size must be 1..{DATA_SIZE}, got {payload_size}")
    pages: dict[int, bytearray] = {}
    for address, data in chunks:
        pos = 0
        while pos < len(data):
            addr = address + pos
            start = addr % payload_size
            n = min(payload_size - start, len(data) - pos)
            page = pages.setdefault(addr - start, bytearray(payload_size))
            page[start:start + n] = data[pos:pos + n]
            pos += n
    order = sorted(pages)
    out = bytearray()
    for number, address in enumerate(order):
        header = _HEADER.pack(MAGIC_START0, MAGIC_START1, FLAG_FAMILY_ID_PRESENT, address,
                              payload_size, number, len(order), family_id)
        data = bytes(pages[address]).ljust(DATA_SIZE, b"\0")
        out += header + data + struct.pack("<I", MAGIC_END)
    return bytes(out)


def image_chunks(image: Path, base: int, size: int) -> list[tuple[int, bytes]]:
    """What an image stores in flash: ELF load segments (by load address), or a raw binary at
    ``base``.  Raises RunnerError for contents outside [base, base + size)."""
    if not is_elf(image):
        chunks = [(base, image.read_bytes())]
    else:
        try:
            chunks = read_elf(image).load_chunks()
        except BuildError as exc:
            raise RunnerError(f"cannot convert {image} to UF2: {exc}") from exc
    for address, data in chunks:
        if address < base or address + len(data) > base + size:
            raise RunnerError(
                f"{image}: {len(data)} bytes at {address:#x} lie outside flash "
                f"[{base:#x}, {base + size:#x}); a UF2 for the boot ROM can only hold flash contents"
            )
    return chunks


def find_drive(path: str | os.PathLike[str], label: str) -> Path:
    """The mounted boot drive at ``path`` or directly under it, checked by INFO_UF2.TXT."""
    root = Path(os.fspath(path))
    candidates = [root] + (sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else [])
    seen = []
    for cand in candidates:
        info = cand / INFO_FILE
        if not info.is_file():
            continue
        board_id = _board_id(info)
        if board_id == label:
            return cand
        seen.append(f"{cand} (Board-ID: {board_id or 'none'})")
    found = f"; found UF2 drives: {', '.join(seen)}" if seen else ""
    raise RunnerError(
        f"no {label} boot drive at {root}: no {INFO_FILE} with Board-ID: {label}{found}. "
        f"Hold BOOTSEL while plugging the board in, and set drive under [boards.<id>] in the "
        f"local configuration to where it is mounted"
    )


def _board_id(info: Path) -> str | None:
    for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "board-id":
            return value.strip()
    return None


class Uf2Runner(FlashRunner):
    kind = "uf2"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(flash=True, reset=False, serial=True, emulated=False,
                            starts_process=False, counts=mcu_counts(self.board))

    def uf2_path(self, image: str | os.PathLike[str]) -> Path:
        return Path(os.fspath(image)).with_suffix(".uf2")

    def drive(self) -> Path:
        if self.local.drive is None:
            raise RunnerError(
                f"no UF2 drive for {self.board.id}: set drive under [boards.{self.board.id}] in "
                f"the local configuration to where the {self.spec.str_option('volume_label')} "
                f"drive is mounted"
            )
        if self.dry_run:
            return Path(self.local.drive)
        return find_drive(self.local.drive, self.spec.str_option("volume_label"))

    def convert(self, image: Path) -> Path:
        """Write the UF2 file beside the image; returns its path."""
        out = self.uf2_path(image)
        if self.log.note("uf2", os.fspath(image), os.fspath(out),
                         f"family={self.spec.int_option('family_id'):#010x}"):
            chunks = image_chunks(image, self.spec.int_option("base_address"), self.board.flash.size)
            out.write_bytes(uf2_blocks(chunks, self.spec.int_option("family_id")))
        return out

    def _flash(self, image: Path) -> None:
        uf2 = self.convert(image)
        dest = self.drive() / OUTPUT_NAME
        if self.log.note("cp", os.fspath(uf2), os.fspath(dest)):
            _copy_to_drive(uf2, dest)


def _copy_to_drive(src: Path, dest: Path) -> None:
    data = src.read_bytes()
    try:
        with open(dest, "wb") as f:
            f.write(data)
            f.flush()
            try:
                os.fsync(f.fileno())
            except OSError as exc:
                # The boot ROM reboots as soon as the last block arrives; the drive may vanish
                # under fsync.  The bytes were written.
                log.info("fsync of %s after the copy: %s (the board rebooted)", dest, exc)
    except OSError as exc:
        raise RunnerError(f"cannot copy {src} to {dest}: {exc.strerror or exc}") from exc
