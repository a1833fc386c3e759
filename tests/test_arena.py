"""The static arena planner: no two simultaneously live buffers share a byte.

The proof does not trust the planner's own notion of buffers and live ranges.  It *executes*
the plan: every tensor gets a distinct random value, every op checks that the bytes of its
inputs in one simulated arena still hold their values, fills its scratch with garbage and writes
its outputs (views copy nothing, in-place kernels read all inputs before writing).  At the end the
graph outputs must hold their values.  Any overlap of live data shows up as a clobbered input.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass

import numpy as np
import pytest

from firmware_gen.arena import VIEW_OPS, ArenaPlan, plan_arena
from toolkit.model.ir import DType, Graph, Op, Tensor
from toolkit.model.tflite import read_tflite

EXAMPLES = sorted(glob.glob("examples/models/*.tflite"))


@dataclass
class _Sim:
    graph: Graph
    plan: ArenaPlan
    scratch: dict[int, int]
    rng: np.random.Generator

    def run(self) -> None:
        g, plan = self.graph, self.plan
        arena = self.rng.integers(0, 256, size=plan.size + 8, dtype=np.uint8)
        sentinel = arena[plan.size :].copy()
        values: dict[int, np.ndarray] = {}
        for i in g.inputs:
            values[i] = self._fresh(i)
            self._write(arena, i, values[i])
        for op in g.ops:
            for t in op.inputs:
                if t >= 0 and not g.tensors[t].is_constant:
                    self._check(arena, t, values[t], f"input of {op.label}")
            if op.opcode in VIEW_OPS:
                values[op.outputs[0]] = values[op.inputs[0]]
                self._write(arena, op.outputs[0], values[op.inputs[0]])  # a copy unless aliased
                continue
            if self.scratch.get(op.index, 0) > 0:
                off = plan.scratch_offset(op.index)
                n = self.scratch[op.index]
                arena[off : off + n] = self.rng.integers(0, 256, size=n, dtype=np.uint8)
            for t in op.outputs:
                values[t] = self._fresh(t)
                self._write(arena, t, values[t])
        for t in g.outputs:
            self._check(arena, t, values[t], "graph output after the last op")
        assert np.array_equal(arena[plan.size :], sentinel), "a write ran past the arena"

    def _fresh(self, t: int) -> np.ndarray:
        return self.rng.integers(0, 256, size=self.graph.tensors[t].nbytes, dtype=np.uint8)

    def _write(self, arena: np.ndarray, t: int, value: np.ndarray) -> None:
        off = self.plan.tensor_offset(t)
        assert off + value.size <= self.plan.size, f"tensor {t} runs past the arena"
        arena[off : off + value.size] = value

    def _check(self, arena: np.ndarray, t: int, value: np.ndarray, what: str) -> None:
        off = self.plan.tensor_offset(t)
        got = arena[off : off + value.size]
        assert np.array_equal(got, value), f"tensor {t} ({what}) was overwritten while live"


def simulate(graph: Graph, plan: ArenaPlan, scratch: dict[int, int], seed: int = 0) -> None:
    _Sim(graph, plan, scratch, np.random.default_rng(seed)).run()


# ---------------------------------------------------------------------------------------------
# Random graphs: only structure matters to the planner (sizes, producers, consumers, opcodes).


def random_graph(rng: np.random.Generator) -> tuple[Graph, dict[int, int], dict[int, list[int]]]:
    tensors: list[Tensor] = []
    ops: list[Op] = []

    def new(nbytes: int, const: bool = False) -> int:
        idx = len(tensors)
        data = np.zeros(nbytes, np.int8) if const else None
        tensors.append(Tensor(idx, f"t{idx}", (nbytes,), DType.INT8, None, data))
        return idx

    inputs = [new(int(rng.integers(1, 300))) for _ in range(int(rng.integers(1, 3)))]
    live = list(inputs)
    in_place: dict[int, list[int]] = {}
    scratch: dict[int, int] = {}
    for k in range(int(rng.integers(1, 25))):
        kind = rng.choice(["unary", "binary", "view", "concat", "split", "weights"])
        a = live[int(rng.integers(len(live)))]
        size_a = tensors[a].nbytes
        if kind == "unary":
            ins, outs = [a], [new(size_a if rng.random() < 0.8 else int(rng.integers(1, 300)))]
            opcode = "RELU"
        elif kind == "binary":
            b = live[int(rng.integers(len(live)))]
            ins, outs, opcode = [a, b], [new(max(size_a, tensors[b].nbytes))], "ADD"
        elif kind == "view":
            ins, outs, opcode = [a], [new(size_a)], rng.choice(sorted(VIEW_OPS))
        elif kind == "concat":
            others = [live[int(i)] for i in rng.integers(len(live), size=int(rng.integers(1, 3)))]
            ins = [a, *others]
            outs, opcode = [new(sum(tensors[t].nbytes for t in ins))], "CONCATENATION"
        elif kind == "split":
            ins, outs, opcode = [a], [new(int(rng.integers(1, 200))) for _ in range(2)], "SPLIT"
        else:
            w = new(int(rng.integers(1, 50)), const=True)
            ins, outs, opcode = [a, w, -1], [new(int(rng.integers(1, 300)))], "CONV_2D"
        ops.append(Op(k, str(opcode), tuple(ins), tuple(outs)))
        if opcode in ("RELU", "ADD") and rng.random() < 0.7:
            in_place[k] = [int(t) for t in rng.permutation(ins)]  # any input, in random preference
        if rng.random() < 0.3:
            scratch[k] = int(rng.integers(1, 100))
        live.extend(outs)
    produced = [t for op in ops for t in op.outputs]
    n_out = int(rng.integers(1, 4))
    outputs = sorted({produced[-1], *(produced[int(i)] for i in rng.integers(len(produced), size=n_out))})
    if rng.random() < 0.1:
        outputs.append(inputs[0])  # an input that is also an output (identity)
    graph = Graph("random", tuple(tensors), tuple(ops), tuple(inputs), tuple(outputs))
    return graph, scratch, in_place


@pytest.mark.parametrize("strategy", ["greedy", "linear"])
def test_random_graphs_never_clobber_live_tensors(strategy: str) -> None:
    for seed in range(300):
        rng = np.random.default_rng(seed)
        graph, scratch, in_place = random_graph(rng)
        plan = plan_arena(graph, scratch=scratch, in_place=in_place, strategy=strategy)
        simulate(graph, plan, scratch, seed)


def test_greedy_never_larger_than_linear_and_reuses_memory() -> None:
    smaller = 0
    for seed in range(300):
        graph, scratch, in_place = random_graph(np.random.default_rng(seed))
        greedy = plan_arena(graph, scratch=scratch, in_place=in_place, strategy="greedy")
        linear = plan_arena(graph, scratch=scratch, in_place=in_place, strategy="linear")
        assert greedy.size <= linear.size, f"seed {seed}: greedy {greedy.size} > linear {linear.size}"
        smaller += greedy.size < linear.size
    assert smaller > 100  # reuse is the point of the greedy planner


def test_alias_of_graph_output_is_not_overwritten_in_place() -> None:
    """x → RELU → a; a → RESHAPE → b (graph output); a → RELU (in place) → c (graph output).

    The in-place RELU is a's last reader, but a's bytes are also the graph output b.
    """
    t = [Tensor(i, f"t{i}", (16,), DType.INT8) for i in range(4)]
    ops = (
        Op(0, "RELU", (0,), (1,)),
        Op(1, "RESHAPE", (1,), (2,)),
        Op(2, "RELU", (1,), (3,)),
    )
    graph = Graph("alias", tuple(t), ops, (0,), (2, 3))
    plan = plan_arena(graph, in_place=[0, 2])
    simulate(graph, plan, {})
    assert plan.tensor_offset(3) != plan.tensor_offset(2)


def test_in_place_over_the_second_input() -> None:
    """ADD(a, b) may write over b when b dies there and a lives on."""
    t = [Tensor(i, f"t{i}", (32,), DType.INT8) for i in range(4)]
    ops = (Op(0, "RELU", (0,), (1,)), Op(1, "ADD", (0, 1), (2,)), Op(2, "ADD", (2, 0), (3,)))
    graph = Graph("second", tuple(t), ops, (0,), (3,))
    plan = plan_arena(graph, in_place={1: [0, 1], 2: [2, 0]})
    assert plan.tensor_offset(2) == plan.tensor_offset(1)  # not over the graph input 0
    assert plan.tensor_offset(3) == plan.tensor_offset(2)
    simulate(graph, plan, {})


def test_in_place_and_views_share_bytes() -> None:
    t = [Tensor(i, f"t{i}", (64,), DType.INT8) for i in range(4)]
    ops = (Op(0, "RELU", (0,), (1,)), Op(1, "RELU", (1,), (2,)), Op(2, "RESHAPE", (2,), (3,)))
    graph = Graph("chain", tuple(t), ops, (0,), (3,))
    plan = plan_arena(graph, in_place=[1])
    assert plan.tensor_offset(1) == plan.tensor_offset(2) == plan.tensor_offset(3)
    assert plan.size == 128  # input + one shared buffer
    simulate(graph, plan, {})


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.rsplit("/", 1)[-1])
@pytest.mark.parametrize("strategy", ["greedy", "linear"])
def test_example_models(path: str, strategy: str) -> None:
    graph = read_tflite(path)
    elementwise = {"ADD", "MUL", "SUB", "RELU", "SOFTMAX", "LOGISTIC"}
    in_place = [op.index for op in graph.ops if op.opcode in elementwise]
    scratch = {op.index: 40 * (op.index + 1) for op in graph.ops if op.opcode == "CONV_2D"}
    plan = plan_arena(graph, scratch=scratch, in_place=in_place, strategy=strategy)
    for seed in range(3):
        simulate(graph, plan, scratch, seed)
    if strategy == "greedy":
        linear = plan_arena(graph, scratch=scratch, in_place=in_place, strategy="linear")
        assert plan.size <= linear.size
        # Everything live at one step must fit side by side: a lower bound no plan can beat.
        steps = range(-1, len(graph.ops) + 1)
        need = max(sum(b.size for b in plan.buffers if b.first <= s <= b.last) for s in steps)
        assert need <= plan.size <= linear.size
