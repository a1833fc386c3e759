"""Choosing one option per layer: an exact integer program (scipy's HiGHS interface).

Variables: a binary ``x[l, o]`` per option ``o`` of layer ``l`` and a binary ``y[k]`` per kernel
``k`` whose code is not already in the firmware.  Constraints:

* one option per layer: ``Σ_o x[l, o] = 1``;
* a kernel's code is paid once if any option uses it: ``x[l, o] ≤ y[k]`` for every option
  calling ``k``;
* flash: ``Σ flash[l, o] · x + Σ code[k] · y ≤ F − fixed flash``;
* RAM is a peak, so one row per step ``s`` of the schedule: the step's fixed bytes (live
  activations), plus the scratch of the option of the layer that runs at ``s``, plus the
  persistent tables of every option, plus state ``≤ R`` (steps that run no layer share one row);
* optional latency: ``Σ latency[l, o] · x ≤ T − fixed latency``.

The objective minimises the predicted loss ``Σ loss[l, o] · x`` (plus a negligible tie-break:
among options of equal loss — a model whose output does not react to a layer — the one that
changes the layer's output least), and then, in a second program constrained to that optimum,
the flash bytes (so that ties resolve to the smaller mix); or, to find
the smallest reachable footprint, the flash or the RAM peak.  HiGHS solves it to optimality
(relative gap 0); the chosen integers are re-checked against the budgets with exact integer
arithmetic (:func:`evaluate`), and a budget violated by floating-point tolerance is tightened
by one unit and re-solved.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array

from toolkit.errors import PlanError
from toolkit.planner.cost import RamStep

log = logging.getLogger(__name__)

OBJECTIVES = ("loss", "flash", "ram")
# Objective units.  HiGHS stops within an absolute gap of 1e-6, so the loss is scaled up until
# that gap is far below any loss difference that matters (1e-12 of KL); the tie-break (relative
# output error ≤ ~1, capped at 10) weighs less than a loss difference of 1e-6 per layer.
LOSS_SCALE = 1e6
TIE_BREAK = 0.1
TIE_SLACK = 1e-6  # stage 2 may not worsen stage 1's objective by more than HiGHS's gap


@dataclass(frozen=True)
class Item:
    """One option of one layer as the solver sees it."""

    flash: int  # bytes without kernel code
    scratch: int  # arena bytes while the layer runs (8-aligned)
    persistent: int  # RAM held for the whole run
    kernel: str
    loss: float
    latency_ms: float = 0.0
    tie: float = 0.0  # secondary objective among equal losses (the layer's relative output error)


@dataclass(frozen=True)
class Problem:
    layers: tuple[int, ...]  # op index of each layer
    items: tuple[tuple[Item, ...], ...]  # per layer
    kernel_code: Mapping[str, int]  # code bytes a kernel adds when used (absent or 0: free)
    fixed_flash: int
    steps: tuple[RamStep, ...]
    fixed_ram: int = 0  # state and anything else held for the whole run
    fixed_latency_ms: float = 0.0

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.items):
            raise PlanError("one item list per layer is needed")
        if any(not items for items in self.items):
            raise PlanError("every layer needs at least one option")


@dataclass(frozen=True)
class Budgets:
    flash: int | None = None
    ram: int | None = None
    latency_ms: float | None = None


@dataclass(frozen=True)
class Solution:
    choice: tuple[int, ...]  # item index per layer
    loss: float
    flash: int  # solver's flash: items + marginal kernel code + fixed
    ram: int  # solver's RAM peak (live-sum bound of the arena) + persistent + fixed
    latency_ms: float
    status: str = "optimal"


class BudgetError(PlanError):
    """No choice meets the budgets; carries the smallest reachable footprints (bytes, or None
    when even that is impossible)."""

    def __init__(self, message: str, flash_budget: int | None = None, ram_budget: int | None = None,
                 min_flash: int | None = None, min_ram: int | None = None) -> None:
        super().__init__(message)
        self.flash_budget = flash_budget
        self.ram_budget = ram_budget
        self.min_flash = min_flash
        self.min_ram = min_ram


def evaluate(problem: Problem, choice: Sequence[int]) -> Solution:
    """Flash, RAM peak, latency and loss of a choice, in exact integer arithmetic."""
    chosen = [problem.items[k][c] for k, c in enumerate(choice)]
    kernels = {it.kernel for it in chosen}
    flash = problem.fixed_flash + sum(it.flash for it in chosen) + sum(problem.kernel_code.get(k, 0)
                                                                       for k in kernels)
    persistent = sum(it.persistent for it in chosen)
    scratch = {problem.layers[k]: it.scratch for k, it in enumerate(chosen)}
    peak = max((s.fixed_bytes + (scratch.get(s.layer, 0) if s.layer is not None else 0)
                for s in problem.steps), default=0)
    latency = problem.fixed_latency_ms + sum(it.latency_ms for it in chosen)
    return Solution(tuple(choice), float(sum(it.loss for it in chosen)), flash,
                    peak + persistent + problem.fixed_ram, latency)


def fits(sol: Solution, budgets: Budgets) -> bool:
    return ((budgets.flash is None or sol.flash <= budgets.flash)
            and (budgets.ram is None or sol.ram <= budgets.ram)
            and (budgets.latency_ms is None or sol.latency_ms <= budgets.latency_ms + 1e-9))


class _Builder:
    """The sparse constraint matrix, row by row."""

    def __init__(self, nvars: int) -> None:
        self.nvars = nvars
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.lb: list[float] = []
        self.ub: list[float] = []

    def add(self, coeffs: Mapping[int, float], lb: float, ub: float) -> None:
        r = len(self.lb)
        for c, v in coeffs.items():
            if v != 0:
                self.rows.append(r)
                self.cols.append(c)
                self.vals.append(float(v))
        self.lb.append(lb)
        self.ub.append(ub)

    def constraint(self) -> LinearConstraint:
        a = coo_array((self.vals, (self.rows, self.cols)), shape=(len(self.lb), self.nvars)).tocsr()
        return LinearConstraint(a, np.array(self.lb), np.array(self.ub))


def solve(problem: Problem, budgets: Budgets, *, objective: str = "loss",
          forbid: Mapping[int, frozenset[int]] | None = None, exclude: Sequence[Sequence[int]] = (),
          time_limit: float = 60.0) -> Solution | None:
    """The optimal choice under ``budgets`` (None: infeasible).  ``forbid``: layer position →
    item indices that may not be chosen; ``exclude``: whole choices that may not be returned
    (one "no-good" row each: not all of its options at once), for the next-best solutions."""
    if objective not in OBJECTIVES:
        raise PlanError(f"unknown objective {objective!r}")
    flash, ram, latency = budgets.flash, budgets.ram, budgets.latency_ms
    for _ in range(8):
        sol = _solve_once(problem, Budgets(flash, ram, latency), objective, forbid or {}, exclude, time_limit)
        if sol is None or fits(sol, budgets):
            return sol
        # A floating-point tolerance let a budget slip by a fraction of a unit: tighten, retry.
        if flash is not None and budgets.flash is not None and sol.flash > budgets.flash:
            flash -= sol.flash - budgets.flash
        if ram is not None and budgets.ram is not None and sol.ram > budgets.ram:
            ram -= sol.ram - budgets.ram
        if latency is not None and budgets.latency_ms is not None and sol.latency_ms > budgets.latency_ms:
            latency -= sol.latency_ms - budgets.latency_ms + 1e-9
    raise PlanError("the solver's answers keep exceeding the budget by rounding; giving up")


class _Milp:
    """Variable numbering and the matrices of one integer program."""

    def __init__(self, problem: Problem, objective: str) -> None:
        self.problem = problem
        self.objective = objective
        self.index = [(k, o) for k, items in enumerate(problem.items) for o in range(len(items))]
        self.var = {ko: i for i, ko in enumerate(self.index)}
        self.items = [problem.items[k][o] for k, o in self.index]
        paid = sorted({it.kernel for it in self.items if problem.kernel_code.get(it.kernel, 0) > 0})
        self.kvar = {k: len(self.index) + j for j, k in enumerate(paid)}
        self.r_var = len(self.index) + len(paid)  # the RAM peak (objective "ram" only)
        self.nvars = self.r_var + (1 if objective == "ram" else 0)

    def costs(self) -> np.ndarray:
        c = np.zeros(self.nvars)
        n = len(self.index)
        code = self.problem.kernel_code
        if self.objective == "loss":
            c[:n] = self.loss_costs()
        elif self.objective == "flash":
            c[:n] = [it.flash for it in self.items]
            for k, j in self.kvar.items():
                c[j] = code[k]
        else:
            c[self.r_var] = 1.0
        return c

    def loss_costs(self) -> list[float]:
        return [LOSS_SCALE * it.loss + TIE_BREAK * min(it.tie, 10.0) for it in self.items]

    def constraints(self, budgets: Budgets, exclude: Sequence[Sequence[int]] = (),
                    loss_cap: float | None = None) -> LinearConstraint:
        problem, b = self.problem, _Builder(self.nvars)
        if loss_cap is not None:
            b.add(dict(enumerate(self.loss_costs())), -np.inf, loss_cap)
        for choice in exclude:
            b.add({self.var[(k, o)]: 1.0 for k, o in enumerate(choice)}, -np.inf, len(choice) - 1.0)
        for k, layer_items in enumerate(problem.items):
            b.add({self.var[(k, o)]: 1.0 for o in range(len(layer_items))}, 1.0, 1.0)
        for i, it in enumerate(self.items):
            if it.kernel in self.kvar:
                b.add({i: 1.0, self.kvar[it.kernel]: -1.0}, -np.inf, 0.0)
        if budgets.flash is not None:
            coeffs = {i: float(it.flash) for i, it in enumerate(self.items)}
            coeffs.update({j: float(problem.kernel_code[k]) for k, j in self.kvar.items()})
            b.add(coeffs, -np.inf, budgets.flash - problem.fixed_flash)
        self._ram_rows(b, budgets)
        if budgets.latency_ms is not None:
            b.add({i: it.latency_ms for i, it in enumerate(self.items)}, -np.inf,
                  budgets.latency_ms - problem.fixed_latency_ms)
        return b.constraint()

    def _ram_rows(self, b: _Builder, budgets: Budgets) -> None:
        """One row per step that runs a layer, one shared row for the other steps."""
        problem = self.problem
        peak = self.r_var if self.objective == "ram" else None
        if budgets.ram is None and peak is None:
            return
        persistent = {i: float(it.persistent) for i, it in enumerate(self.items) if it.persistent}
        position = {op: k for k, op in enumerate(problem.layers)}
        rows: list[tuple[int, dict[int, float]]] = []
        for s in problem.steps:
            if s.layer is not None:
                coeffs = dict(persistent)
                for i, (k, _) in enumerate(self.index):
                    if k == position[s.layer] and self.items[i].scratch:
                        coeffs[i] = coeffs.get(i, 0.0) + self.items[i].scratch
                rows.append((s.fixed_bytes, coeffs))
        other = [s.fixed_bytes for s in problem.steps if s.layer is None]
        if other:
            rows.append((max(other), dict(persistent)))
        for fixed, coeffs in rows:
            if budgets.ram is not None:
                b.add(coeffs, -np.inf, float(budgets.ram - problem.fixed_ram - fixed))
            if peak is not None:
                b.add({**coeffs, peak: -1.0}, -np.inf, -float(fixed + problem.fixed_ram))

    def bounds(self, forbid: Mapping[int, frozenset[int]]) -> tuple[Bounds, np.ndarray]:
        ub = np.ones(self.nvars)
        for k, banned in forbid.items():
            for o in banned:
                ub[self.var[(k, o)]] = 0.0
        integrality = np.ones(self.nvars)
        if self.objective == "ram":
            ub[self.r_var] = np.inf
            integrality[self.r_var] = 0
        return Bounds(np.zeros(self.nvars), ub), integrality

    def choice(self, x: np.ndarray) -> list[int]:
        out = [0] * len(self.problem.items)
        for i, (k, o) in enumerate(self.index):
            if x[i] > 0.5:
                out[k] = o
        return out


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """HiGHS writes some diagnostics straight to file descriptor 1 (``disp=False``
    notwithstanding); they must not corrupt ``--json`` output on stdout."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (tests' captured streams)
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _run(m: _Milp, costs: np.ndarray, constraints: LinearConstraint, forbid: Mapping[int, frozenset[int]],
         time_limit: float) -> Any:
    bounds, integrality = m.bounds(forbid)
    with _quiet_stdout():
        return milp(costs, constraints=[constraints], integrality=integrality, bounds=bounds,
                    options={"time_limit": time_limit, "mip_rel_gap": 0.0, "presolve": True})


def _solve_once(problem: Problem, budgets: Budgets, objective: str, forbid: Mapping[int, frozenset[int]],
                exclude: Sequence[Sequence[int]], time_limit: float) -> Solution | None:
    """One integer program; for the loss objective, lexicographically: the least loss (and
    layer error), then among those choices the fewest flash bytes."""
    m = _Milp(problem, objective)
    res = _run(m, m.costs(), m.constraints(budgets, exclude), forbid, time_limit)
    if res.x is None or res.status not in (0, 1):
        log.info("milp: %s", res.message)
        return None
    if res.status == 1:
        log.warning("milp stopped at its time limit; the plan may not be optimal")
    x = res.x
    if objective == "loss" and res.status == 0:
        cap = float(res.fun) + TIE_SLACK + 1e-9 * abs(float(res.fun))
        flash = _Milp(problem, "flash")
        second = _run(flash, flash.costs(), flash.constraints(budgets, exclude, cap), forbid, time_limit)
        if second.x is not None and second.status == 0:
            x = second.x
    sol = evaluate(problem, m.choice(x))
    status = "optimal" if res.status == 0 else "time limit"
    return Solution(sol.choice, sol.loss, sol.flash, sol.ram, sol.latency_ms, status)


def smallest(problem: Problem, budgets: Budgets) -> tuple[Solution | None, Solution | None]:
    """(smallest flash reachable under the RAM and latency budgets — or, if none, with no RAM
    budget —, smallest RAM reachable with no flash budget)."""
    by_flash = solve(problem, Budgets(None, budgets.ram, budgets.latency_ms), objective="flash")
    if by_flash is None:
        by_flash = solve(problem, Budgets(None, None, budgets.latency_ms), objective="flash")
    by_ram = solve(problem, Budgets(None, None, budgets.latency_ms), objective="ram")
    return by_flash, by_ram


def infeasible(problem: Problem, budgets: Budgets, target: str) -> BudgetError:
    """The error for budgets no choice meets, naming the smallest reachable footprints."""
    by_flash, by_ram = smallest(problem, budgets)
    asked = [f"flash ≤ {budgets.flash:,} B" if budgets.flash is not None else "",
             f"RAM ≤ {budgets.ram:,} B" if budgets.ram is not None else "",
             f"latency ≤ {budgets.latency_ms:g} ms" if budgets.latency_ms is not None else ""]
    parts = [f"no mix of compression options fits {target} within {', '.join(a for a in asked if a)}"]
    if by_flash is not None:
        parts.append(f"the smallest flash reachable is {by_flash.flash:,} B (RAM {by_flash.ram:,} B)")
    if by_ram is not None:
        parts.append(f"the smallest RAM reachable is {by_ram.ram:,} B (flash {by_ram.flash:,} B)")
    if by_flash is None and by_ram is None:
        parts.append(f"even without flash and RAM budgets nothing meets latency ≤ {budgets.latency_ms} ms")
    return BudgetError("; ".join(parts), budgets.flash, budgets.ram,
                       None if by_flash is None else by_flash.flash, None if by_ram is None else by_ram.ram)
