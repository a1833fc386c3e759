"""A small, defensive, read-only FlatBuffers accessor.

The generated schema modules trust their input: a corrupt offset raises an arbitrary Python
exception deep inside them, a corrupt vector length makes them allocate gigabytes.  This module
knows nothing about any schema; it reads tables, scalars, strings and vectors by *slot* (field
id) and checks every access against the buffer before it happens.  Callers name the field they
read, so an error says where in the schema it happened and what was expected::

    ModelError: model.tflite: subgraphs[0].operators[3].inputs at byte 1234: vector of
    1000000 4-byte elements needs 4000000 bytes, but only 200 remain

Guarantees, for any input bytes:

* Every read is bounds-checked; the only exception raised on purpose is
  :class:`~toolkit.errors.ModelError`.
* Reading cannot loop: offsets between tables are unsigned and point forward (``uoffset``), and
  vtables are never followed further, so no chain of references can revisit a byte.
* Memory is bounded by the input: a vector's length must fit in the bytes that remain, and
  every element decoded into Python objects is charged to a budget proportional to the buffer
  size, so files whose tables share one vector many times cannot blow up quadratically.
* Numeric vectors come back as zero-copy, read-only numpy views (``np.frombuffer``).

Layout facts used (FlatBuffers binary format, little-endian): the buffer starts with a
``uoffset`` (u32) to the root table, optionally followed by a 4-byte file identifier.  A table
starts with an ``soffset`` (i32) such that ``vtable = table - soffset``; a vtable is
``[u16 vtable_bytes, u16 table_bytes, u16 field_offset...]`` where field ``slot`` has its offset
at ``4 + 2 * slot`` (0 or absent: the field has its default).  Reference fields hold a ``uoffset``
relative to their own position; vectors and strings start with a u32 element count.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NoReturn

import numpy as np

from toolkit.errors import ModelError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_VTABLE_HEADER = struct.Struct("<HH")

# Scalar field formats: struct code → size in bytes.
_SCALARS: dict[str, struct.Struct] = {c: struct.Struct("<" + c) for c in "bBhHiIqQfd"}

# Elements decoded into Python objects (and tables visited) per byte of input, plus a constant.
# An honest file decodes each vector once or twice, i.e. well under one element per byte.
_BUDGET_PER_BYTE = 4
_BUDGET_BASE = 1 << 16


class FlatBuffer:
    """An immutable byte buffer with checked FlatBuffers primitives.

    ``label`` (usually the file name) prefixes every error message.
    """

    __slots__ = ("_budget", "data", "label", "size")

    def __init__(self, data: bytes | bytearray | memoryview, label: str = "buffer") -> None:
        self.data = bytes(data)
        self.size = len(self.data)
        self.label = label
        self._budget = _BUDGET_PER_BYTE * self.size + _BUDGET_BASE

    # -- errors and accounting ----------------------------------------------------------------

    def fail(self, path: str, offset: int, problem: str) -> NoReturn:
        where = f"{path} at byte {offset}" if path else f"byte {offset}"
        raise ModelError(f"{self.label}: {where}: {problem}")

    def charge(self, units: int, path: str, offset: int) -> None:
        """Account for ``units`` decoded elements; fail once the buffer's budget is spent."""
        self._budget -= units
        if self._budget < 0:
            self.fail(
                path, offset,
                f"the file references more data than a {self.size}-byte model can hold "
                "(shared or overlapping vectors); refusing to decode further",
            )

    def check_range(self, pos: int, nbytes: int, path: str, what: str) -> None:
        if pos < 0 or nbytes < 0 or pos + nbytes > self.size:
            self.fail(path, pos, f"{what} needs bytes [{pos}, {pos + nbytes}) but the file has {self.size}")

    # -- primitives ----------------------------------------------------------------------------

    def u32(self, pos: int, path: str, what: str) -> int:
        self.check_range(pos, 4, path, what)
        return int(_U32.unpack_from(self.data, pos)[0])

    def deref(self, pos: int, path: str, what: str) -> int:
        """Follow the ``uoffset`` stored at ``pos``; the target has at least 4 bytes."""
        target = pos + self.u32(pos, path, f"offset to {what}")
        if target + 4 > self.size:
            self.fail(path, pos, f"offset to {what} points to byte {target}, past the end of the file")
        return target

    def root(self, identifier: bytes | None = None) -> Table:
        """The root table, after checking the size and (if given) the 4-byte file identifier."""
        if self.size == 0:
            raise ModelError(f"{self.label}: empty file (0 bytes), not a FlatBuffers model")
        if self.size < 8:
            raise ModelError(f"{self.label}: file of {self.size} bytes is too short for a FlatBuffers model")
        if identifier is not None and self.data[4:8] != identifier:
            raise ModelError(
                f"{self.label}: file identifier at byte 4 is {self.data[4:8]!r}, expected {identifier!r}"
                f"{_format_hint(self.data)}"
            )
        return self.table_at(self.deref(0, "", "the root table"), "")

    def table_at(self, pos: int, path: str) -> Table:
        """The table whose ``soffset`` is at ``pos`` (vtable and inline size checked)."""
        self.charge(1, path, pos)
        self.check_range(pos, 4, path, "table header")
        vt = pos - int(_I32.unpack_from(self.data, pos)[0])
        if vt < 0 or vt + 4 > self.size:
            self.fail(path, pos, f"table's vtable offset points to byte {vt}, outside the file")
        vt_len, tab_len = _VTABLE_HEADER.unpack_from(self.data, vt)
        if vt_len < 4 or vt + vt_len > self.size:
            self.fail(path, vt, f"vtable of {vt_len} bytes does not fit (needs >= 4 bytes inside the file)")
        if tab_len < 4 or pos + tab_len > self.size:
            self.fail(path, pos, f"table of {tab_len} bytes does not fit (needs >= 4 bytes inside the file)")
        return Table(self, pos, vt, vt_len, tab_len, path)

    def vector_at(self, pos: int, elem_size: int, path: str) -> tuple[int, int]:
        """(first element position, length) of the vector whose length word is at ``pos``."""
        n = self.u32(pos, path, "vector length")
        start = pos + 4
        if n * elem_size > self.size - start:
            self.fail(
                path, pos,
                f"vector of {n} {elem_size}-byte elements needs {n * elem_size} bytes, "
                f"but only {self.size - start} remain",
            )
        return start, n


def _format_hint(data: bytes) -> str:
    """A hint for files that are recognisably something else than a .tflite model."""
    if data[:2] == b"PK":
        return " (this is a zip archive, e.g. a Keras .keras file or a SavedModel archive)"
    if data[:4] == b"\x89HDF":
        return " (this is an HDF5 file, e.g. a Keras .h5 model)"
    if data[:8].isascii() and all(32 <= c < 127 or c in (9, 10, 13) for c in data[:64]):
        return " (this looks like a text file)"
    return ""


class Table:
    """One table of a :class:`FlatBuffer`; fields are read by slot and named by the caller."""

    __slots__ = ("fb", "path", "pos", "tab_len", "vt", "vt_len")

    def __init__(self, fb: FlatBuffer, pos: int, vt: int, vt_len: int, tab_len: int, path: str) -> None:
        self.fb = fb
        self.pos = pos
        self.vt = vt
        self.vt_len = vt_len
        self.tab_len = tab_len
        self.path = path

    def child(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def field_pos(self, slot: int, size: int, name: str) -> int:
        """Absolute position of field ``slot`` (``size`` inline bytes), or -1 if it is absent."""
        vo = 4 + 2 * slot
        if vo + 2 > self.vt_len:
            return -1
        off = int(_U16.unpack_from(self.fb.data, self.vt + vo)[0])
        if off == 0:
            return -1
        if off < 4 or off + size > self.tab_len:
            self.fb.fail(
                self.child(name), self.vt + vo,
                f"field offset {off} is outside its table's {self.tab_len} inline bytes",
            )
        return self.pos + off

    def has(self, slot: int) -> bool:
        return self.field_pos(slot, 0, f"field#{slot}") >= 0

    # -- scalars --------------------------------------------------------------------------------

    def scalar(self, slot: int, name: str, fmt: str, default: int | float) -> int | float:
        st = _SCALARS[fmt]
        p = self.field_pos(slot, st.size, name)
        if p < 0:
            return default
        value: int | float = st.unpack_from(self.fb.data, p)[0]
        return value

    def get_int(self, slot: int, name: str, fmt: str = "i", default: int = 0) -> int:
        return int(self.scalar(slot, name, fmt, default))

    def get_float(self, slot: int, name: str, default: float = 0.0) -> float:
        return float(self.scalar(slot, name, "f", default))

    def get_bool(self, slot: int, name: str, default: bool = False) -> bool:
        return bool(self.scalar(slot, name, "B", int(default)))

    # -- references -----------------------------------------------------------------------------

    def _target(self, slot: int, name: str, what: str) -> int:
        p = self.field_pos(slot, 4, name)
        return -1 if p < 0 else self.fb.deref(p, self.child(name), what)

    def table(self, slot: int, name: str) -> Table | None:
        p = self._target(slot, name, "a table")
        return None if p < 0 else self.fb.table_at(p, self.child(name))

    def string(self, slot: int, name: str) -> str | None:
        """A string field, decoded as UTF-8 (invalid bytes replaced, names are informational)."""
        p = self._target(slot, name, "a string")
        if p < 0:
            return None
        start, n = self.fb.vector_at(p, 1, self.child(name))
        self.fb.charge(n, self.child(name), p)
        return self.fb.data[start : start + n].decode("utf-8", "replace")

    def vector(self, slot: int, name: str, elem_size: int) -> tuple[int, int] | None:
        """(first element position, length) of a vector field, or ``None`` if absent."""
        p = self._target(slot, name, "a vector")
        return None if p < 0 else self.fb.vector_at(p, elem_size, self.child(name))

    def numpy(self, slot: int, name: str, dtype: str) -> np.ndarray | None:
        """A numeric vector as a zero-copy, read-only numpy view (``dtype`` little-endian, e.g.
        ``"<i4"``), or ``None`` if absent."""
        dt = np.dtype(dtype)
        vec = self.vector(slot, name, dt.itemsize)
        if vec is None:
            return None
        start, n = vec
        self.fb.charge(1, self.child(name), start)
        return np.frombuffer(self.fb.data, dtype=dt, count=n, offset=start)

    def ints(self, slot: int, name: str, dtype: str = "<i4") -> tuple[int, ...] | None:
        """An integer vector as a tuple of Python ints, or ``None`` if absent."""
        arr = self.numpy(slot, name, dtype)
        if arr is None:
            return None
        self.fb.charge(arr.size, self.child(name), 0)
        return tuple(arr.tolist())

    def floats(self, slot: int, name: str, dtype: str = "<f4") -> tuple[float, ...] | None:
        arr = self.numpy(slot, name, dtype)
        if arr is None:
            return None
        self.fb.charge(arr.size, self.child(name), 0)
        return tuple(float(v) for v in arr.tolist())

    def tables(self, slot: int, name: str) -> TableVector:
        """A vector of tables (empty if absent); elements are checked when accessed."""
        vec = self.vector(slot, name, 4)
        start, n = vec if vec is not None else (0, 0)
        return TableVector(self.fb, start, n, self.child(name))


class TableVector:
    """A lazily read vector of tables; ``vec[j]`` is checked and named ``path[j]``."""

    __slots__ = ("fb", "n", "path", "start")

    def __init__(self, fb: FlatBuffer, start: int, n: int, path: str) -> None:
        self.fb = fb
        self.start = start
        self.n = n
        self.path = path

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Table]:
        return (self[j] for j in range(self.n))

    def __getitem__(self, j: int) -> Table:
        if not 0 <= j < self.n:
            raise IndexError(j)
        path = f"{self.path}[{j}]"
        pos = self.start + 4 * j
        return self.fb.table_at(self.fb.deref(pos, path, "a table"), path)
