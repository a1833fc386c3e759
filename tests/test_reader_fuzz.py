"""Fuzzing the .tflite reader: mutated models read cleanly or fail with ModelError/UnsupportedOp.

The engine (seed models, mutators, per-case time budget, graph consistency check) lives in
bench/fuzz_reader.py, which runs 10,000+ cases; here ~1,000 seeded cases plus a hypothesis
search run in the default suite.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.model.ir import Graph, Op

pytest.importorskip("ai_edge_litert.schema_py_generated")

DEFAULT_CASES = 1000


def _load_engine() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "fuzz_reader.py"
    spec = importlib.util.spec_from_file_location("fuzz_reader", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_reader"] = module
    spec.loader.exec_module(module)
    return module


fz = _load_engine()


@pytest.fixture(scope="module")
def seeds() -> list[bytes]:
    return list(fz.seed_models().values())


def test_seeded_mutations(seeds: list[bytes]) -> None:
    t0 = time.perf_counter()
    stats = fz.fuzz(DEFAULT_CASES, seed=20240601, budget=2.0)
    elapsed = time.perf_counter() - t0
    report = fz.format_table(stats)
    failures = "\n".join(
        f"case {i} ({model}, {'+'.join(muts)}): {detail}" for i, model, muts, detail in stats.failures[:5]
    )
    assert stats.counts["other"] == 0, f"{report}\n{failures}"
    assert stats.cases == DEFAULT_CASES
    # A fuzzer that only produced one kind of outcome would test little: the mix must reach
    # successful reads (mutated constants, names) as well as both kinds of errors.
    assert stats.counts["ok"] >= DEFAULT_CASES // 20, report
    assert stats.counts["ModelError"] >= DEFAULT_CASES // 5, report
    assert stats.counts["UnsupportedOp"] >= 1, report
    assert elapsed < 60, f"{DEFAULT_CASES} cases took {elapsed:.1f} s"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, 5),
    edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.integers(0, 1 << 16)),
)
def test_hypothesis_byte_edits(which: int, edits: list[tuple[int, int]], cut: int | None) -> None:
    base = bytearray(fz.seed_models_cached()[which % len(fz.seed_models_cached())])
    for pos, value in edits:
        base[pos % len(base)] = value
    data = bytes(base if cut is None else base[: cut % (len(base) + 1)])
    res = fz.run_case(data, budget=2.0)
    assert res.outcome != "other", res.detail


def test_time_budget_turns_a_hang_into_a_failure(monkeypatch: Any) -> None:
    def slow(data: bytes) -> Graph:
        time.sleep(5)
        raise AssertionError("not reached")

    monkeypatch.setattr(fz, "read_tflite", slow)
    t0 = time.perf_counter()
    res = fz.run_case(b"whatever", budget=0.2)
    assert res.outcome == "other" and "_Timeout" in res.detail
    assert time.perf_counter() - t0 < 2


def test_consistency_check_catches_bad_graphs(seeds: list[bytes]) -> None:
    from dataclasses import replace

    from toolkit.model.tflite import read_tflite

    g = read_tflite(seeds[0])
    assert fz.check_graph(g) == []
    bad_op = Op(0, g.ops[0].opcode, (len(g.tensors) + 3,), g.ops[0].outputs, g.ops[0].options)
    assert fz.check_graph(replace(g, ops=(bad_op, *g.ops[1:])))
    t = g.tensors[0]
    assert fz.check_graph(replace(g, tensors=(replace(t, shape=(1, -2)), *g.tensors[1:])))
    const = next(t for t in g.tensors if t.data is not None)
    wrong = replace(const, data=np.zeros(3, const.dtype.numpy))
    assert fz.check_graph(replace(g, tensors=tuple(wrong if x is const else x for x in g.tensors)))
