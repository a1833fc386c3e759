"""Imports every compression method module so that its register() call runs.

One module per line, kept sorted (ruff's isort merges them into this one statement).
"""

from toolkit.compress import (  # noqa: F401
    binary,
    int8,
    kmeans,
    lowrank,
    prune,
    prune_structured,
    uniform,
)
