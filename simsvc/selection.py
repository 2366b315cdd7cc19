"""Selecting the best feasible point of a finite space, with a stated confidence.

A fully sequential procedure in the manner of Andradottir and Kim (2010): feasibility
checks on every constraint (procedure F_B of Batur and Kim, 2010) and comparisons on
the objective (the triangular continuation regions of Kim and Nelson's KN, 2001) run
at once over common random numbers. A point leaves when a constraint check declares it
infeasible, or when a point already declared feasible beats it; the procedure stops when
no feasibility decision is open and at most one feasible point is left. docs/analytics.md
states the procedure, its constants and why its guarantee holds.

The procedure is a pure state machine: `plan()` says which points need which
replications next, `observe()` takes their values. Its decisions depend on the
observed values alone, so replaying stored rows through it resumes it exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

Op = Literal[">=", "<="]
Direction = Literal["min", "max"]
FloatArray = npt.NDArray[np.float64]
BATCH_GROWTH = 0.1  # each batch adds about 10% to the replications of the points left
UNDECIDED, FEASIBLE, INFEASIBLE = 0, 1, -1


@dataclass(frozen=True)
class Constraint:
    """The mean of `kpi` must be `op` `value`; `tolerance` is its indifference amount."""

    kpi: str
    op: Op
    value: float
    tolerance: float

    def holds(self, mean: float) -> bool:
        return mean >= self.value if self.op == ">=" else mean <= self.value


@dataclass(frozen=True)
class Problem:
    objective: str
    direction: Direction
    indifference: float
    constraints: tuple[Constraint, ...]
    confidence: float
    first_stage: int = 10

    @property
    def kpis(self) -> list[str]:
        """The outputs the procedure reads: the objective, then each constraint's KPI."""
        return list(dict.fromkeys([self.objective, *(c.kpi for c in self.constraints)]))


@dataclass(frozen=True)
class Constants:
    """How the confidence is spent, and the continuation regions it gives."""

    alpha_feasibility: float
    alpha_selection: float
    h2_feasibility: float
    h2_selection: float


def eta_first_exit(beta: float, n0: int) -> float:
    """Solves (1/2)(1 + 2 eta)^(-(n0-1)/2) = beta: Fabian's bound for a triangular region."""
    return 0.5 * (math.pow(2.0 * beta, -2.0 / (n0 - 1)) - 1.0)


def eta_any_crossing(beta: float, n0: int) -> float:
    """Solves (1 + 2 eta)^(-(n0-1)/2) = beta: the bound for ever crossing one line."""
    return 0.5 * (math.pow(beta, -2.0 / (n0 - 1)) - 1.0)


def constants(problem: Problem, k: int) -> Constants:
    """Half of alpha to feasibility and half to selection; Bonferroni within each."""
    alpha = 1.0 - problem.confidence
    s = len(problem.constraints)
    alpha_f = 0.0 if s == 0 else (alpha if k == 1 else alpha / 2)
    alpha_s = alpha - alpha_f
    n0 = problem.first_stage
    h2_f = 2.0 * (n0 - 1) * eta_first_exit(alpha_f / (k * s), n0) if s else 0.0
    h2_s = 2.0 * (n0 - 1) * eta_any_crossing(alpha_s / (k - 1), n0) if k > 1 else 0.0
    return Constants(alpha_f, alpha_s, h2_f, h2_s)


@dataclass(frozen=True)
class Batch:
    """Replications first..last (inclusive) of each of `points` (indices into the space)."""

    points: tuple[int, ...]
    first: int
    last: int

    @property
    def size(self) -> int:
        return len(self.points) * (self.last - self.first + 1)


@dataclass
class Sequential:
    """The procedure over `k` points, spending at most `budget` replications."""

    problem: Problem
    k: int
    budget: int
    r: int = 0
    used: int = 0
    stopped_because: str | None = None
    alive: npt.NDArray[np.bool_] = field(init=False)
    status: npt.NDArray[np.int8] = field(init=False)
    counts: npt.NDArray[np.int64] = field(init=False)
    eliminated_by: npt.NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        k, s = self.k, len(self.problem.constraints)
        self.consts = constants(self.problem, k)
        self.alive = np.ones(k, dtype=bool)
        self.status = np.full(k, FEASIBLE if s == 0 else UNDECIDED, dtype=np.int8)
        self.open = np.ones((k, s), dtype=bool)
        self.counts = np.zeros(k, dtype=np.int64)
        self.eliminated_by = np.full(k, -1, dtype=np.int64)
        # Larger is better for the objective; constraints as "mean <= bound".
        self._sign = 1.0 if self.problem.direction == "max" else -1.0
        self._csign = np.array([-1.0 if c.op == ">=" else 1.0 for c in self.problem.constraints])
        self._bound = self._csign * np.array([c.value for c in self.problem.constraints])
        self._tol = np.array([c.tolerance for c in self.problem.constraints])
        self._obj_sum = np.zeros(k)
        self._con_sum = np.zeros((k, s))
        self._s2_con = np.zeros((k, s))
        self._s2_pair = np.zeros((k, k))

    # -- what to run next -------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.stopped_because is not None

    def plan(self) -> Batch | None:
        """The next batch, or None once the procedure has stopped."""
        if self.done:
            return None
        points = tuple(int(i) for i in np.flatnonzero(self.alive))
        room = (self.budget - self.used) // max(len(points), 1)
        if self.r == 0:  # the whole first stage, or nothing
            target = self.problem.first_stage if room >= self.problem.first_stage else 0
        else:
            target = min(self._next_count(), self.r + room)
        if target <= self.r:
            self.stopped_because = "max_replications"
            return None
        return Batch(points, self.r + 1, target)

    def _next_count(self) -> int:
        step = max(1, math.ceil(BATCH_GROWTH * self.r))
        return min(self.r + step, max(self.r + 1, self._closing_count()))

    def _closing_count(self) -> int:
        """The count at which every open continuation region has closed: no need to pass it."""
        alive = self.alive
        counts = [0.0]
        if self.consts.h2_selection and alive.sum() > 1:
            pair = self._s2_pair[np.ix_(alive, alive)]
            counts.append(
                self.consts.h2_selection * float(pair.max()) / self.problem.indifference**2
            )
        undecided = alive & (self.status == UNDECIDED)
        if undecided.any():
            ratio = (self._s2_con[undecided] / self._tol**2)[self.open[undecided]]
            counts.append(self.consts.h2_feasibility * float(ratio.max(initial=0.0)))
        return math.ceil(max(counts))

    # -- what was observed ------------------------------------------------------------

    def observe(self, batch: Batch, values: Mapping[str, FloatArray]) -> None:
        """Take the batch's values (kpi -> array of points x replications), then decide."""
        idx = np.asarray(batch.points, dtype=np.int64)
        obj = self._sign * values[self.problem.objective]
        self._obj_sum[idx] += obj.sum(axis=1)
        for j, c in enumerate(self.problem.constraints):
            self._con_sum[idx, j] += self._csign[j] * values[c.kpi].sum(axis=1)
        self.counts[idx] = batch.last
        self.used += batch.size
        self.r = batch.last
        if batch.first == 1:
            self._first_stage_variances(values)
        self._check_feasibility()
        self._screen()
        undecided = self.alive & (self.status == UNDECIDED)
        if not undecided.any() and (self.alive & (self.status == FEASIBLE)).sum() <= 1:
            self.stopped_because = "decided"

    def _first_stage_variances(self, values: Mapping[str, FloatArray]) -> None:
        """Variances of the first stage (every point, replications 1..n0), fixed from then on."""
        n0 = self.problem.first_stage
        obj = self._sign * values[self.problem.objective]
        centred = obj - obj.mean(axis=1, keepdims=True)
        # Var(X_i - X_l) = var_i + var_l - 2 cov_il, from the first stage's paired samples.
        cov = centred @ centred.T / (n0 - 1)
        var = np.diag(cov)
        self._s2_pair = np.maximum(var[:, None] + var[None, :] - 2.0 * cov, 0.0)
        for j, c in enumerate(self.problem.constraints):
            self._s2_con[:, j] = values[c.kpi].var(axis=1, ddof=1)

    def _check_feasibility(self) -> None:
        """Procedure F_B: a sum below -R satisfies a constraint, one above +R breaks it."""
        undecided = self.alive & (self.status == UNDECIDED)
        if not undecided.any():
            return
        r, h2 = self.r, self.consts.h2_feasibility
        drift = self._con_sum - r * self._bound
        region = np.maximum(0.0, h2 * self._s2_con / (2.0 * self._tol) - self._tol * r / 2.0)
        meets = self.open & (drift <= -region) & undecided[:, None]
        breaks = self.open & ~meets & (drift >= region) & undecided[:, None]
        self.open &= ~meets
        infeasible = breaks.any(axis=1)
        self.status[infeasible] = INFEASIBLE
        self.alive[infeasible] = False
        feasible = undecided & ~infeasible & ~self.open.any(axis=1)
        self.status[feasible] = FEASIBLE

    def _screen(self) -> None:
        """KN's screening, where only a point declared feasible may eliminate another."""
        alive = np.flatnonzero(self.alive)
        judges = alive[self.status[alive] == FEASIBLE]
        if len(alive) < 2 or len(judges) == 0:
            return
        r, delta, h2 = self.r, self.problem.indifference, self.consts.h2_selection
        means = self._obj_sum / r
        s2 = self._s2_pair[np.ix_(alive, judges)]
        w = np.maximum(0.0, delta / (2.0 * r) * (h2 * s2 / delta**2 - r))
        gap = means[judges][None, :] - means[alive][:, None]  # judge minus candidate
        beaten = gap > w
        # Once a region has closed, an exact tie goes to the earlier point.
        tie = (w == 0.0) & (gap == 0.0) & (judges[None, :] < alive[:, None])
        beaten |= tie
        beaten[alive[:, None] == judges[None, :]] = False
        lost = beaten.any(axis=1)
        first_judge = judges[np.argmax(beaten, axis=1)]
        self.eliminated_by[alive[lost]] = first_judge[lost]
        self.alive[alive[lost]] = False

    # -- the answer -------------------------------------------------------------------

    def leader(self) -> int | None:
        """The point in contention with the best objective mean so far, feasible ones first."""
        if self.r == 0 or not self.alive.any():
            return None
        means = self._sign * self._obj_sum / self.r  # larger is better for every direction
        rank = np.where(self.alive, means + np.where(self.status == FEASIBLE, np.inf, 0.0), -np.inf)
        return int(np.argmax(rank))

    def feasibility(self) -> list[bool | None]:
        return [None if s == UNDECIDED else bool(s == FEASIBLE) for s in self.status]

    def best(self, means: Sequence[Mapping[str, float | None]]) -> int | None:
        """The recommended point: the feasible survivor, or the best estimate so far."""
        if self.stopped_because == "decided":
            winners = np.flatnonzero(self.alive & (self.status == FEASIBLE))
            return int(winners[0]) if len(winners) else None
        return best_estimate(self.problem, means, self.alive & (self.status != INFEASIBLE))


def best_estimate(
    problem: Problem, means: Sequence[Mapping[str, float | None]], candidates: npt.NDArray[np.bool_]
) -> int | None:
    """The point whose means meet every constraint with the best objective mean; no guarantee."""
    best: tuple[float, int] | None = None
    for i in np.flatnonzero(candidates):
        m = means[int(i)]
        values = [m.get(problem.objective), *(m.get(c.kpi) for c in problem.constraints)]
        if any(v is None for v in values):
            continue
        if not all(c.holds(float(m[c.kpi] or 0.0)) for c in problem.constraints):
            continue
        score = float(m[problem.objective] or 0.0) * (1.0 if problem.direction == "max" else -1.0)
        if best is None or score > best[0]:
            best = (score, int(i))
    return None if best is None else best[1]


def run_to_end(
    procedure: Sequential, sample: Callable[[Batch], Mapping[str, FloatArray]]
) -> Sequential:
    """Drive the procedure in-process with `sample(batch)`, for tests and benchmarks."""
    while (batch := procedure.plan()) is not None:
        procedure.observe(batch, sample(batch))
    return procedure
