"""Just enough of ELF to measure relocatable objects: sections, symbols and relocations.

Size accounting needs to know which bytes a kernel symbol pulls into a linked image.  Kernels
are compiled with ``-ffunction-sections -fdata-sections`` and linked with ``--gc-sections``, so
the linker keeps exactly the sections reachable through relocations from the referenced
symbols; :meth:`ObjectFile.reachable` computes the same closure.  Reading the file directly
(rather than parsing ``readelf`` text) works for every toolchain's objects, 32 or 64 bit, either
byte order.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import BuildError

SHT_SYMTAB = 2
SHT_RELA = 4
SHT_REL = 9
SHF_ALLOC = 0x2
SHN_LORESERVE = 0xFF00


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    size: int
    link: int
    info: int
    offset: int
    entsize: int

    @property
    def allocated(self) -> bool:
        return bool(self.flags & SHF_ALLOC)


@dataclass(frozen=True)
class Symbol:
    name: str
    section: int  # section index, 0 when undefined
    info: int

    @property
    def defined(self) -> bool:
        return 0 < self.section < SHN_LORESERVE

    @property
    def is_global(self) -> bool:
        return (self.info >> 4) in (1, 2)  # STB_GLOBAL, STB_WEAK


class ObjectFile:
    """A parsed ELF relocatable object (``.o``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._data = self.path.read_bytes()
        if self._data[:4] != b"\x7fELF":
            raise BuildError(f"{self.path} is not an ELF file")
        self._wide = self._data[4] == 2
        self._end = "<" if self._data[5] == 1 else ">"
        self.sections = self._read_sections()
        self.symbols = self._read_symbols()
        self.edges = self._read_edges()

    def _unpack(self, fmt: str, offset: int) -> tuple[int, ...]:
        return struct.unpack_from(self._end + fmt, self._data, offset)

    def _read_sections(self) -> list[Section]:
        if self._wide:
            shoff, = self._unpack("Q", 0x28)
            shentsize, shnum, shstrndx = self._unpack("HHH", 0x3A)
            fmt = "IIQQQQIIQQ"
        else:
            shoff, = self._unpack("I", 0x20)
            shentsize, shnum, shstrndx = self._unpack("HHH", 0x2E)
            fmt = "IIIIIIIIII"
        raw = [self._unpack(fmt, shoff + i * shentsize) for i in range(shnum)]
        strtab_off = raw[shstrndx][4]
        out = []
        for i, (name, typ, flags, _addr, off, size, link, info, _align, entsize) in enumerate(raw):
            out.append(
                Section(i, self._cstr(strtab_off + name), typ, flags, size, link, info, off, entsize)
            )
        return out

    def _cstr(self, offset: int) -> str:
        end = self._data.index(b"\0", offset)
        return self._data[offset:end].decode("utf-8", "replace")

    def _read_symbols(self) -> list[Symbol]:
        symtab = next((s for s in self.sections if s.type == SHT_SYMTAB), None)
        if symtab is None:
            return []
        strtab = self.sections[symtab.link].offset
        out = []
        for k in range(symtab.size // symtab.entsize):
            off = symtab.offset + k * symtab.entsize
            if self._wide:
                name, info, _other, shndx = self._unpack("IBBH", off)
            else:
                name, _value, _size, info, _other, shndx = self._unpack("IIIBBH", off)
            label = self._cstr(strtab + name) if name else ""
            if not label and 0 < shndx < len(self.sections):
                label = self.sections[shndx].name  # a section symbol
            out.append(Symbol(label, shndx, info))
        return out

    def _read_edges(self) -> dict[int, set[int | str]]:
        """section index -> the sections (int) and undefined symbols (str) it refers to."""
        edges: dict[int, set[int | str]] = {}
        for sec in self.sections:
            if sec.type not in (SHT_REL, SHT_RELA):
                continue
            target = edges.setdefault(sec.info, set())
            for k in range(sec.size // sec.entsize):
                off = sec.offset + k * sec.entsize
                info = self._unpack("Q" if self._wide else "I", off + (8 if self._wide else 4))[0]
                sym = self.symbols[info >> 32 if self._wide else info >> 8]
                if sym.defined:
                    target.add(sym.section)
                elif sym.name:
                    target.add(sym.name)
        return edges

    def defined_globals(self) -> dict[str, int]:
        """Global symbol name -> its section index."""
        return {s.name: s.section for s in self.symbols if s.defined and s.is_global and s.name}

    def reachable(self, roots: Iterable[int]) -> tuple[set[int], set[str]]:
        """Sections reachable from ``roots`` through relocations, and the undefined symbols they
        need from elsewhere (other objects, libgcc, libc)."""
        seen: set[int] = set()
        external: set[str] = set()
        todo = list(roots)
        while todo:
            idx = todo.pop()
            if idx in seen:
                continue
            seen.add(idx)
            for dep in self.edges.get(idx, ()):
                if isinstance(dep, str):
                    external.add(dep)
                else:
                    todo.append(dep)
        return seen, external

    def allocated_size(self, sections: Iterable[int]) -> int:
        """Bytes the given sections occupy in an image (non-allocated ones count 0)."""
        return sum(self.sections[i].size for i in sections if self.sections[i].allocated)
