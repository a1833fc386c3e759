"""Fixtures shared by every test module."""

from __future__ import annotations

import zlib

import numpy as np
import pytest


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A random generator seeded from the test's node id (CRC32): deterministic per test, and
    different tests or parametrisations do not share one stream of numbers."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
