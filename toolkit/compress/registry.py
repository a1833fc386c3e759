"""The one place compression methods are registered: name → method object."""

from __future__ import annotations

from toolkit.compress.base import Method
from toolkit.errors import CompressionError

METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise RuntimeError(f"two compression methods named {method.name!r}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    _load()
    if name not in METHODS:
        raise CompressionError(f"unknown compression method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def all_methods() -> dict[str, Method]:
    _load()
    return dict(METHODS)


def _load() -> None:
    # Each method module calls register() at import.  Add new method modules here.
    from toolkit.compress import methods  # noqa: F401
