"""The one Jinja2 environment of the code generator, and the filters that turn values into C text.

Templates own the shape of every generated file; Python decides what goes in them and formats
single values through the filters here.  Every filter produces exact text: integers as decimal
literals that mean the same value on every C99 compiler (``INT32_MIN`` is spelled
``(-2147483647 - 1)`` because ``-2147483648`` is the negation of a too-large literal), float32 as
hexadecimal floating constants with an ``f`` suffix (``0x1.99999ap-4f``), float64 as hexadecimal
constants without a suffix, so that every constant round-trips bit for bit.

Templates are read from the installed package with :mod:`importlib.resources`, so a non-editable
install (or a zipped one) renders the same files as a source checkout.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

import jinja2
import numpy as np

from toolkit.errors import BuildError

TEMPLATE_PACKAGE = "firmware_gen"
TEMPLATE_DIR = "templates"

# C99 keywords and names a generated identifier must not take (the standard library's common
# macros included, since a tensor called "NULL" or "assert" would otherwise break the build).
_C_RESERVED = frozenset(
    """auto break case char const continue default do double else enum extern float for goto if
    inline int long register restrict return short signed sizeof static struct switch typedef union
    unsigned void volatile while _Bool _Complex _Imaginary NULL assert errno bool true false
    int8_t int16_t int32_t int64_t uint8_t uint16_t uint32_t uint64_t size_t main""".split()  # noqa: SIM905
)

_INT_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-(2**7), 2**7 - 1),
    "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
    "bool": (0, 1),
}


def c_ident(name: object, prefix: str = "") -> str:
    """A valid C identifier derived from ``name``: every run of characters outside
    ``[A-Za-z0-9_]`` becomes one ``_``, a leading digit or a reserved word gets a ``_`` prefix.

    Distinct names may map to the same identifier ("a/b" and "a.b"); callers that need
    uniqueness add an index (the generator names arrays ``bf_t<index>_<name>``).  Leading and
    trailing underscores are dropped, so the result never takes a name reserved to the
    implementation (``__x``, ``_X``).
    """
    text = re.sub(r"[^A-Za-z0-9_]+", "_", str(name)).strip("_")
    ident = f"{prefix}{text}" if prefix else text or "x"
    if ident[0].isdigit() or ident in _C_RESERVED:
        ident = "v_" + ident
    return ident


def c_int(value: object, ctype: str = "int32") -> str:
    """An integer literal of C type ``ctype`` (``int8`` … ``uint64``, ``bool``), range-checked.

    The most negative value of a signed type is written as ``(-MAX - 1)``; 64-bit values carry
    an ``LL``/``ULL`` suffix and 32-bit unsigned a ``u`` suffix so no literal changes type.
    """
    if isinstance(value, (bool, np.bool_)):
        ivalue = int(bool(value))
    elif isinstance(value, (int, np.integer)):
        ivalue = int(value)
    else:
        raise BuildError(f"c_int: {value!r} is not an integer")
    lo, hi = _INT_RANGES[ctype]
    if not lo <= ivalue <= hi:
        raise BuildError(f"c_int: {ivalue} does not fit {ctype} [{lo}, {hi}]")
    suffix = {"int64": "LL", "uint64": "ULL", "uint32": "u"}.get(ctype, "")
    if ivalue == lo and lo < 0 and ctype in ("int32", "int64"):
        return f"(-{-lo - 1}{suffix} - 1)"
    return f"{ivalue}{suffix}"


def _hex_float(value: float, suffix: str) -> str:
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INFINITY" if value > 0 else "-INFINITY"
    if value == 0.0:
        return f"-0.0{suffix}" if math.copysign(1.0, value) < 0 else f"0.0{suffix}"
    mantissa, _, exponent = float(value).hex().partition("p")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}p{exponent}{suffix}"


def c_float(value: object) -> str:
    """An exact float32 constant: ``value`` rounded to float32, written as a hex float with ``f``.

    Non-finite values become ``NAN``/``INFINITY`` (the including file needs ``<math.h>``).
    """
    if not isinstance(value, (float, int, np.floating, np.integer)):
        raise BuildError(f"c_float: {value!r} is not a number")
    return _hex_float(float(np.float32(value)), "f")


def c_double(value: object) -> str:
    """An exact float64 constant (hex float, no suffix)."""
    if not isinstance(value, (float, int, np.floating, np.integer)):
        raise BuildError(f"c_double: {value!r} is not a number")
    return _hex_float(float(value), "")


def _element_formatter(dtype: np.dtype) -> Callable[[Any], str]:
    if dtype == np.float32:
        return c_float
    if dtype == np.float64:
        return c_double
    if dtype == np.float16:
        raise BuildError("c_array: float16 arrays are emitted as their raw uint16 bits")
    name = "bool" if dtype == np.bool_ else dtype.name
    if name not in _INT_RANGES:
        raise BuildError(f"c_array: unsupported element type {dtype}")
    return functools.partial(c_int, ctype=name)


def c_array(values: Iterable[Any] | np.ndarray, per_line: int = 16, indent: int = 4) -> str:
    """The body of a C initializer (without braces) for the flattened ``values``.

    ``per_line`` elements per line, each line indented by ``indent`` spaces and every element
    followed by a comma (valid C, and adding an element changes one line in a diff).  The element
    type is the numpy dtype of ``values`` (a plain sequence must be numpy-convertible; Python ints
    become int64, so pass an array with the intended dtype).  float16 is emitted as its uint16 bit
    patterns.  An empty array renders as ``0`` (C forbids empty initializers; callers give such
    arrays a length of at least 1).
    """
    arr = np.asarray(values)
    if arr.dtype == np.float16:
        arr = arr.view(np.uint16)
    flat = arr.reshape(-1)
    if flat.size == 0:
        return " " * indent + "0"
    fmt = _element_formatter(flat.dtype)
    items = [fmt(v) for v in flat.tolist()]
    pad = " " * indent
    lines = [
        pad + " ".join(f"{item}," for item in items[i : i + per_line])
        for i in range(0, len(items), per_line)
    ]
    return "\n".join(lines)


def c_comment(text: object) -> str:
    """``text`` made safe inside a ``/* … */`` comment (no comment terminators, one line)."""
    return re.sub(r"\s+", " ", str(text).replace("*/", "* /").replace("/*", "/ *")).strip()


def c_string(text: object) -> str:
    """A C string literal with everything outside printable ASCII escaped."""
    out = []
    for ch in str(text).encode("utf-8"):
        c = chr(ch)
        if c in "\\\"":
            out.append("\\" + c)
        elif 0x20 <= ch < 0x7F and c != "?":  # "?" escaped: no trigraphs in any compiler mode
            out.append(c)
        else:
            out.append(f"\\{ch:03o}")
    return '"' + "".join(out) + '"'


def _load_template(name: str) -> tuple[str, str, Callable[[], bool]] | None:
    """Jinja2 loader callback reading templates from the installed package."""
    resource = importlib.resources.files(TEMPLATE_PACKAGE).joinpath(TEMPLATE_DIR)
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return None
        resource = resource.joinpath(part)
    if not resource.is_file():
        return None
    source = resource.read_text(encoding="utf-8")
    return source, f"{TEMPLATE_PACKAGE}/{TEMPLATE_DIR}/{name}", lambda: True


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The generator's single Jinja2 environment (cached; templates are immutable package data)."""
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load_template),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(
        c_ident=c_ident,
        c_int=c_int,
        c_float=c_float,
        c_double=c_double,
        c_array=c_array,
        c_comment=c_comment,
        c_string=c_string,
    )
    return env


def render(template: str, **context: Any) -> str:
    """Render one template of ``firmware_gen/templates`` with ``context``.

    A missing variable is an error (StrictUndefined), never an empty string in the output.
    """
    try:
        return environment().get_template(template).render(**context)
    except jinja2.TemplateNotFound as exc:
        raise BuildError(f"template {template!r} not found in {TEMPLATE_PACKAGE}/{TEMPLATE_DIR}") from exc
    except jinja2.UndefinedError as exc:
        raise BuildError(f"template {template}: {exc.message}") from exc
