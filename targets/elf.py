"""Just enough of ELF to size and load a linked image: section headers and program headers.

Runners refuse an image that is larger than the board before flashing it, and the UF2 and
binary converters need the bytes each loadable segment puts where.  Both come straight from the
ELF headers (parsed with :mod:`struct`, 32 or 64 bit, either byte order), so no binutils and no
third-party ELF library is needed.

Sizes follow the Berkeley convention of GNU ``size``: among the allocated sections (``SHF_ALLOC``)
``text`` is read-only contents (code, rodata, exception tables), ``data`` writable contents
(initialised data, whose load image also sits in flash on an MCU) and ``bss`` everything without
contents (``SHT_NOBITS``: zero-initialised data, TLS bss, stack/heap reservations).  So an MCU
image needs ``text + data`` bytes of flash and ``data + bss`` bytes of RAM.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from toolkit.errors import BuildError

ELF_MAGIC: Final = b"\x7fELF"
SHT_NOBITS: Final = 8
SHF_WRITE: Final = 0x1
SHF_ALLOC: Final = 0x2
PT_LOAD: Final = 1
SHN_XINDEX: Final = 0xFFFF

# Sections a linker script uses to reserve the stack or heap (CMSIS, STM32Cube, boardfit's own
# templates).  They count as bss, and :attr:`ImageSizes.stack_heap` reports them separately so
# a fit check does not count the board's stack reservation twice.
STACK_HEAP_SECTIONS: Final = frozenset(
    {".stack", ".heap", "._user_heap_stack", ".stack_dummy", ".heap_dummy"}
)

# (class, byte order) -> struct formats of the file header, a section header, a program header.
_FORMATS: Final = {
    1: ("HHIIIIIHHHHHH", "IIIIIIIIII", "IIIIIIII"),
    2: ("HHIQQQIHHHHHH", "IIQQQQIIQQ", "IIQQQQQQ"),
}


@dataclass(frozen=True)
class Section:
    """One section header; ``addr`` is the run address (VMA), ``size`` in bytes."""

    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int

    @property
    def allocated(self) -> bool:
        return bool(self.flags & SHF_ALLOC)

    @property
    def kind(self) -> str:
        """``text``, ``data`` or ``bss`` (Berkeley classification), for allocated sections."""
        if self.type == SHT_NOBITS:
            return "bss"
        return "data" if self.flags & SHF_WRITE else "text"


@dataclass(frozen=True)
class Segment:
    """One program header. ``paddr`` is the load address (LMA): where the bytes are flashed."""

    type: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    flags: int


@dataclass(frozen=True)
class ImageSizes:
    """Bytes an image occupies, by Berkeley class; ``stack_heap`` is the part of ``bss`` that
    linker-script stack/heap sections reserve."""

    text: int
    data: int
    bss: int
    stack_heap: int = 0

    @property
    def flash(self) -> int:
        """Bytes that must be stored: code, constants and the load image of initialised data."""
        return self.text + self.data

    @property
    def ram(self) -> int:
        """Bytes of RAM the image occupies statically (initialised + zeroed data)."""
        return self.data + self.bss


@dataclass(frozen=True)
class ElfFile:
    path: Path
    bits: int          # 32 or 64
    little_endian: bool
    machine: int       # e_machine: 40 ARM, 183 AArch64, 243 RISC-V, 62 x86-64, 94 Xtensa
    elf_type: int      # e_type: 2 executable, 3 shared/PIE, 1 relocatable
    entry: int
    sections: tuple[Section, ...]
    segments: tuple[Segment, ...]

    def sizes(self) -> ImageSizes:
        text = data = bss = stack_heap = 0
        for s in self.sections:
            if not s.allocated:
                continue
            if s.kind == "text":
                text += s.size
            elif s.kind == "data":
                data += s.size
            else:
                bss += s.size
                if s.name in STACK_HEAP_SECTIONS:
                    stack_heap += s.size
        return ImageSizes(text=text, data=data, bss=bss, stack_heap=stack_heap)

    def load_chunks(self) -> list[tuple[int, bytes]]:
        """(load address, bytes) of every PT_LOAD segment with file contents, sorted by address.

        Only the file-backed part (``filesz``) is stored; the rest of ``memsz`` is bss that the
        startup code zeroes, so it never goes to flash.
        """
        raw = self.path.read_bytes()
        chunks = []
        for seg in self.segments:
            if seg.type != PT_LOAD or seg.filesz == 0:
                continue
            if seg.offset + seg.filesz > len(raw):
                raise BuildError(f"{self.path}: segment at {seg.paddr:#x} runs past the end of the file")
            chunks.append((seg.paddr, raw[seg.offset:seg.offset + seg.filesz]))
        return sorted(chunks)


def is_elf(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == ELF_MAGIC


def read_elf(path: str | os.PathLike[str]) -> ElfFile:
    """Parse the headers of the ELF file at ``path`` (raises BuildError if it is not one)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read image {p}: {exc.strerror or exc}") from exc
    return _parse(p, raw)


def image_sizes(path: str | os.PathLike[str]) -> ImageSizes:
    """Sizes of an ELF image; a file that is not ELF is a raw binary: all of it is flash."""
    p = Path(path)
    if not p.is_file():
        raise BuildError(f"image {p} does not exist")
    if is_elf(p):
        return read_elf(p).sizes()
    return ImageSizes(text=p.stat().st_size, data=0, bss=0)


def _parse(path: Path, raw: bytes) -> ElfFile:
    if len(raw) < 16 or raw[:4] != ELF_MAGIC:
        raise BuildError(f"{path} is not an ELF file")
    cls, data = raw[4], raw[5]
    if cls not in _FORMATS or data not in (1, 2):
        raise BuildError(f"{path}: unsupported ELF class {cls} / byte order {data}")
    order = "<" if data == 1 else ">"
    fmt_hdr, fmt_sh, fmt_ph = (order + f for f in _FORMATS[cls])
    hdr = _unpack(path, fmt_hdr, raw, 16, "file header")
    (e_type, e_machine, _ver, e_entry, e_phoff, e_shoff, _flags, _ehsize,
     e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx) = hdr
    sh_raw = _section_headers(path, raw, fmt_sh, e_shoff, e_shentsize, e_shnum)
    if e_shstrndx == SHN_XINDEX and sh_raw:
        e_shstrndx = sh_raw[0][6]  # sh_link of section 0 holds the real index
    names = _string_table(path, raw, sh_raw, e_shstrndx)
    sections = tuple(
        Section(name=_name(names, h[0]), type=h[1], flags=h[2], addr=h[3], offset=h[4], size=h[5])
        for h in sh_raw
    )
    segments = tuple(_segment(cls, ph) for ph in _table(path, raw, fmt_ph, e_phoff, e_phentsize,
                                                        e_phnum, "program header"))
    return ElfFile(path=path, bits=32 * cls, little_endian=data == 1, machine=e_machine,
                   elf_type=e_type, entry=e_entry, sections=sections, segments=segments)


def _section_headers(path: Path, raw: bytes, fmt: str, off: int, entsize: int,
                     count: int) -> list[tuple[int, ...]]:
    if off == 0:
        return []
    if count == 0:  # extended numbering: the real count is section 0's sh_size
        count = _unpack(path, fmt, raw, off, "section header 0")[5]
    return _table(path, raw, fmt, off, entsize, count, "section header")


def _table(path: Path, raw: bytes, fmt: str, off: int, entsize: int, count: int,
           what: str) -> list[tuple[int, ...]]:
    if count and entsize < struct.calcsize(fmt):
        raise BuildError(f"{path}: {what} entries of {entsize} bytes are too small")
    return [_unpack(path, fmt, raw, off + i * entsize, f"{what} {i}") for i in range(count)]


def _unpack(path: Path, fmt: str, raw: bytes, off: int, what: str) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    if off < 0 or off + size > len(raw):
        raise BuildError(f"{path}: truncated ELF file ({what} at offset {off:#x})")
    return struct.unpack_from(fmt, raw, off)


def _string_table(path: Path, raw: bytes, headers: list[tuple[int, ...]], index: int) -> bytes:
    if not headers:
        return b""
    if index >= len(headers):
        raise BuildError(f"{path}: section name table index {index} out of range")
    off, size = headers[index][4], headers[index][5]
    if off + size > len(raw):
        raise BuildError(f"{path}: section name table runs past the end of the file")
    return raw[off:off + size]


def _name(table: bytes, off: int) -> str:
    end = table.find(b"\0", off)
    return table[off:end if end >= 0 else len(table)].decode("utf-8", "replace")


def _segment(cls: int, ph: tuple[int, ...]) -> Segment:
    if cls == 1:  # p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align
        return Segment(type=ph[0], offset=ph[1], vaddr=ph[2], paddr=ph[3], filesz=ph[4],
                       memsz=ph[5], flags=ph[6])
    # 64-bit: p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
    return Segment(type=ph[0], offset=ph[2], vaddr=ph[3], paddr=ph[4], filesz=ph[5], memsz=ph[6],
                   flags=ph[1])
