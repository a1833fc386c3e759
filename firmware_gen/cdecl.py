"""The C declarations of the kernel library, as data: parameter structs and kernel prototypes.

``bf_kernels.h`` is the single source of truth for every kernel's parameter struct and argument
list.  This module reads its cdef section (between ``BF_CDEF_BEGIN`` and ``BF_CDEF_END``, the
same text the kernel test harness gives cffi) so that the generator can

* turn a lowering's parameter values into a typed initializer tree (:func:`typed_value`) that
  the templates print, with every missing or extra field an error rather than a silent zero;
* compute the exact size and alignment of any parameter type for a target's data model
  (:func:`layout`) — the bytes the generated ``bf_params`` object occupies in flash are known
  before anything is compiled;
* know each kernel's argument types (:func:`prototype`) so that pointers into the arena are cast
  to what the kernel takes.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cffi
import numpy as np

from toolkit.errors import BuildError

HEADER = "kernels/include/bf_kernels.h"


@dataclass(frozen=True)
class DataModel:
    """Sizes and alignments that differ between targets (everything else is fixed-width)."""

    pointer_bytes: int = 4
    double_align: int = 8  # AAPCS, RISC-V, x86-64 and AArch64 all align double to 8 in structs
    int64_align: int = 8


ILP32 = DataModel(pointer_bytes=4)
LP64 = DataModel(pointer_bytes=8)

_PRIMITIVES: dict[str, tuple[int, str]] = {
    # cname -> (size, numpy dtype)
    "int8_t": (1, "int8"),
    "uint8_t": (1, "uint8"),
    "int16_t": (2, "int16"),
    "uint16_t": (2, "uint16"),
    "int32_t": (4, "int32"),
    "uint32_t": (4, "uint32"),
    "int64_t": (8, "int64"),
    "uint64_t": (8, "uint64"),
    "float": (4, "float32"),
    "double": (8, "float64"),
    "int": (4, "int32"),
    "_Bool": (1, "bool"),
}


# ---------------------------------------------------------------------------------------------
# Typed initializer trees (what the templates render).


@dataclass(frozen=True)
class CNumber:
    """A scalar: ``dtype`` is a numpy dtype name (int8 … uint64, float32, float64)."""

    dtype: str
    value: int | float
    kind = "number"


@dataclass(frozen=True)
class CArray:
    """A fixed-size array member: ``values`` already has the member's element type."""

    values: np.ndarray
    kind = "array"


@dataclass(frozen=True)
class CRef:
    """An address constant: the path of a member of the generated params object
    (``("op3", "multiplier")`` → ``bf_params.op3_multiplier``) or ``None`` for NULL."""

    member: str | None
    kind = "ref"


@dataclass(frozen=True)
class CStruct:
    fields: tuple[tuple[str, CValue], ...]
    kind = "struct"

    @property
    def flat(self) -> bool:
        """Whether every field is a number (printed on one line)."""
        return all(isinstance(v, CNumber) for _, v in self.fields)


CValue = CNumber | CArray | CRef | CStruct


# ---------------------------------------------------------------------------------------------
# Reading the header.


@functools.lru_cache(maxsize=1)
def header_text() -> str:
    return importlib.resources.files("firmware_gen").joinpath(HEADER).read_text(encoding="utf-8")


def _headers() -> list[tuple[str, str]]:
    """(name, text) of every public kernel header: bf_kernels.h first (the others use its types),
    then the rest in name order."""
    include = importlib.resources.files("firmware_gen").joinpath("kernels/include")
    names = sorted(e.name for e in include.iterdir() if e.name.endswith(".h"))
    names.sort(key=lambda n: n != "bf_kernels.h")
    return [(n, include.joinpath(n).read_text(encoding="utf-8")) for n in names]


_CDEF_SECTION = re.compile(r"^/\* BF_CDEF_BEGIN\b.*?\*/\n(.*?)^/\* BF_CDEF_END \*/", re.S | re.M)


@functools.lru_cache(maxsize=1)
def _cdef() -> tuple[cffi.FFI, str]:
    """One cffi FFI over the cdef sections of every public header."""
    bodies = []
    for name, text in _headers():
        m = _CDEF_SECTION.search(text)
        if m is None:
            if name == "bf_kernels.h":
                raise BuildError(f"{HEADER}: the /* BF_CDEF_BEGIN */ … /* BF_CDEF_END */ section is missing")
            continue
        bodies.append(m.group(1))
    body = "\n".join(bodies)
    ffi = cffi.FFI()
    try:
        ffi.cdef(body)
    except cffi.CDefError as exc:
        raise BuildError(f"kernel headers: cffi cannot parse a BF_CDEF section: {exc}") from exc
    return ffi, body


def ffi() -> cffi.FFI:
    return _cdef()[0]


@dataclass(frozen=True)
class Prototype:
    """A kernel's signature: argument C types (cffi) in order."""

    symbol: str
    args: tuple[Any, ...]


@functools.lru_cache(maxsize=1)
def _prototypes() -> dict[str, Prototype]:
    f, body = _cdef()
    flat = re.sub(r"/\*.*?\*/", " ", body, flags=re.S)
    out: dict[str, Prototype] = {}
    for m in re.finditer(r"\b(?:void|size_t)\s+(bf_\w+)\s*\(([^)]*)\)\s*;", flat):
        args = []
        for raw in m.group(2).split(","):
            decl = " ".join(raw.split())
            if decl == "void":
                continue
            # Every parameter in bf_kernels.h is named: drop the name, keep the type.
            args.append(f.typeof(re.sub(r"\s*\b[A-Za-z_]\w*$", "", decl)))
        out[m.group(1)] = Prototype(m.group(1), tuple(args))
    return out


def prototype(symbol: str) -> Prototype:
    try:
        return _prototypes()[symbol]
    except KeyError:
        raise BuildError(f"kernel {symbol} is not declared in {HEADER}") from None


def kernel_symbols() -> tuple[str, ...]:
    return tuple(sorted(_prototypes()))


def ctype(name: str) -> Any:
    try:
        return ffi().typeof(name)
    except (cffi.CDefError, cffi.FFIError) as exc:
        raise BuildError(f"type {name!r} is not declared in {HEADER}") from exc


# ---------------------------------------------------------------------------------------------
# Layout for a target data model.


def layout(t: Any, model: DataModel) -> tuple[int, int]:
    """(size, alignment) of cffi type ``t`` under ``model`` (the C rules: members at multiples of
    their alignment, the struct size a multiple of the largest member alignment)."""
    kind = t.kind
    if kind == "primitive":
        size = _PRIMITIVES[t.cname][0]
        if t.cname == "double":
            return size, model.double_align
        if t.cname in ("int64_t", "uint64_t"):
            return size, model.int64_align
        return size, size
    if kind == "pointer":
        return model.pointer_bytes, model.pointer_bytes
    if kind == "array":
        size, align = layout(t.item, model)
        return size * t.length, align
    if kind == "struct":
        return struct_layout([f.type for _, f in t.fields], model)
    raise BuildError(f"no layout for C type {t.cname} ({kind})")


def struct_layout(members: Sequence[Any], model: DataModel, min_align: int = 1) -> tuple[int, int]:
    """(size, alignment) of a struct with member types ``members`` and at least ``min_align``."""
    offset, align = 0, min_align
    for m in members:
        size, a = layout(m, model)
        offset = _round_up(offset, a) + size
        align = max(align, a)
    return _round_up(offset, align), align


def _round_up(n: int, a: int) -> int:
    return (n + a - 1) // a * a


# ---------------------------------------------------------------------------------------------
# Values -> typed trees.

TableSink = Callable[[str, np.ndarray], str]
"""Called for a pointer field with an array value: (field path, array in the pointee's dtype)
-> the member name that holds it."""


def element_dtype(t: Any) -> np.dtype:
    """numpy dtype of a primitive cffi type (``int32_t`` → int32)."""
    if t.kind != "primitive" or t.cname not in _PRIMITIVES:
        raise BuildError(f"{t.cname} is not a numeric C type")
    return np.dtype(_PRIMITIVES[t.cname][1])


def _field(values: Any, name: str) -> Any:
    if isinstance(values, Mapping):
        return values[name]
    return getattr(values, name)


def _field_names(values: Any) -> set[str] | None:
    if isinstance(values, Mapping):
        return set(values)
    fields = getattr(values, "__dataclass_fields__", None)
    return set(fields) if fields is not None else None


def typed_value(t: Any, value: Any, path: str, tables: TableSink) -> CValue:
    """Check ``value`` against cffi type ``t`` and build its initializer tree.

    Structs take a mapping or a dataclass with exactly the struct's field names; fixed arrays a
    sequence no longer than the array (the rest is zero, as the header's "entries past rank are
    ignored" allows); pointers an array (stored through ``tables``) or ``None`` (NULL).
    Integers must fit their type; nothing is silently truncated.
    """
    if t.kind == "struct":
        names = [n for n, _ in t.fields]
        given = _field_names(value)
        if given is not None and given != set(names):
            missing, extra = sorted(set(names) - given), sorted(given - set(names))
            raise BuildError(f"{path}: fields of {t.cname} missing {missing}, unexpected {extra}")
        try:
            items = tuple(
                (n, typed_value(f.type, _field(value, n), f"{path}.{n}", tables)) for n, f in t.fields
            )
        except (KeyError, AttributeError) as exc:
            raise BuildError(f"{path}: {t.cname} needs field {exc}") from exc
        return CStruct(items)
    if t.kind == "array":
        return CArray(_checked_array(t.item, value, path, t.length))
    if t.kind == "pointer":
        if value is None:
            return CRef(None)
        if t.item.kind == "primitive":
            return CRef(tables(path, _checked_array(t.item, value, path, None)))
        raise BuildError(f"{path}: pointer to {t.item.cname} cannot be a parameter table")
    if t.kind == "primitive":
        return _scalar(t, value, path)
    raise BuildError(f"{path}: unsupported C type {t.cname}")


def _scalar(t: Any, value: Any, path: str) -> CNumber:
    dtype = element_dtype(t)
    if dtype.kind == "f":
        if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
            raise BuildError(f"{path}: expected a number for {t.cname}, got {value!r}")
        return CNumber(dtype.name, float(value))
    if not isinstance(value, (int, np.integer, bool, np.bool_)):
        raise BuildError(f"{path}: expected an integer for {t.cname}, got {value!r}")
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    ivalue = int(value)
    if info is not None and not info.min <= ivalue <= info.max:
        raise BuildError(f"{path}: {ivalue} does not fit {t.cname}")
    return CNumber(dtype.name, ivalue)


def _checked_array(item: Any, value: Any, path: str, length: int | None) -> np.ndarray:
    dtype = element_dtype(item)
    arr = np.asarray(value)
    if arr.dtype.kind == "f" and dtype.kind in "iu":
        raise BuildError(f"{path}: float values for an integer array of {item.cname}")
    flat = arr.reshape(-1)
    if dtype.kind in "iu" and flat.size:
        info = np.iinfo(dtype)
        if int(flat.min()) < info.min or int(flat.max()) > info.max:
            raise BuildError(f"{path}: values outside the range of {item.cname}")
    if length is not None:
        if flat.size > length:
            raise BuildError(f"{path}: {flat.size} values for an array of {length}")
        flat = np.concatenate([flat, np.zeros(length - flat.size, flat.dtype)])
    if dtype.kind == "f" and arr.dtype != dtype:
        converted = flat.astype(dtype)
        if np.any(converted.astype(np.float64) != flat.astype(np.float64)):
            # float32 tables must be given as float32: silently rounding a float64 is a bug.
            raise BuildError(f"{path}: values are not exactly representable as {item.cname}")
        return converted
    return flat.astype(dtype)
