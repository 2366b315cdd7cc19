"""The procedures that choose an experiment's next batch: sweep, select, search.

Each answers `next_batch()` with the batches to compute next (points x a replication
range) or `Finish` with the reason it stopped. They read what earlier batches stored
through `db`, so a resumed experiment replays the same decisions from its stored rows.

- `SweepProcedure`: replications 1..n of every point, once.
- `SelectionProcedure`: `selection.Sequential` over a finite set of points.
- `SearchProcedure`: Optuna's TPE sampler proposes points of a space too large or too
  continuous to enumerate, each evaluated with the first stage's replications; then the
  best candidates are compared by `SelectionProcedure` on fresh replications (the
  clean-up of Boesel, Nelson and Kim, 2003). Its guarantee covers those candidates.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import db, sim
from .experiment_store import ExperimentStore, as_result_row
from .runner import Batch, Finish, PlainProcedure
from .selection import Batch as Planned
from .selection import FloatArray, Problem, Sequential

if TYPE_CHECKING:
    import optuna

    from .experiment_request import Plan

SEARCH_BATCH = 4  # trials asked at once: fixed, so the answer does not depend on workers


class SweepProcedure(PlainProcedure):
    """Replications 1..n of every point, then finish."""

    def outcome(self) -> dict[str, Any]:
        return {}


async def batch_values(
    store: ExperimentStore, experiment_id: int, batch: Batch, kpis: Sequence[str]
) -> dict[str, FloatArray]:
    """The batch's stored values of `kpis`, as points x replications arrays."""
    rows = await store.experiment_batch(experiment_id, batch.units, batch.first, batch.last)
    shape = (len(batch.units), batch.last - batch.first + 1)
    arrays = {k: np.full(shape, math.nan) for k in kpis}
    where = {pid: i for i, pid in enumerate(batch.units)}
    for row in rows:
        values = db.kpi_values(as_result_row(row))
        for k in kpis:
            if k not in values:
                raise sim.ModelError(f"the model returned no {k!r}")
            arrays[k][where[row["point_id"]], row["replication"] - batch.first] = values[k]
    if any(np.isnan(a).any() for a in arrays.values()):
        raise RuntimeError(f"replications {batch.first}..{batch.last} are not all stored")
    return arrays


class SelectionProcedure:
    """`Sequential` over `point_ids`, replication i of the procedure being `offset + i`."""

    def __init__(
        self,
        store: ExperimentStore,
        experiment_id: int,
        problem: Problem,
        point_ids: Sequence[int],
        budget: int,
        offset: int = 0,
    ) -> None:
        self._store = store
        self._eid = experiment_id
        self._ids = tuple(point_ids)
        self._offset = offset
        self.sequential = Sequential(problem, len(point_ids), budget)
        self._pending: Planned | None = None

    async def next_batch(self) -> Sequence[Batch] | Finish:
        if self._pending is not None:
            batch = self._batch(self._pending)
            values = await batch_values(self._store, self._eid, batch, self.sequential.problem.kpis)
            self.sequential.observe(self._pending, values)
            await self._store.set_experiment_outcome(self._eid, self.outcome())
        self._pending = self.sequential.plan()
        if self._pending is None:
            return Finish(self.sequential.stopped_because)
        return [self._batch(self._pending)]

    def _batch(self, planned: Planned) -> Batch:
        units = tuple(self._ids[i] for i in planned.points)
        return Batch(units, planned.first + self._offset, planned.last + self._offset)

    def leader(self) -> int | None:
        index = self.sequential.leader()
        return None if index is None else self._ids[index]

    def outcome(self) -> dict[str, Any]:
        seq, consts = self.sequential, self.sequential.consts
        return {
            "feasible": dict(zip(map(str, self._ids), seq.feasibility(), strict=True)),
            "eliminated_by": {
                str(pid): None if e < 0 else self._ids[int(e)]
                for pid, e in zip(self._ids, seq.eliminated_by, strict=True)
            },
            "procedure": {
                "first_stage": seq.problem.first_stage,
                "alpha_feasibility": consts.alpha_feasibility,
                "alpha_selection": consts.alpha_selection,
                "h2_feasibility": consts.h2_feasibility,
                "h2_selection": consts.h2_selection,
                "replications_per_point_checked": seq.r,
                "first_replication": self._offset + 1,
            },
        }


def procedure_for(
    store: ExperimentStore, experiment_id: int, plan: Plan, units: sim.ScenarioPlan
) -> SweepProcedure | SelectionProcedure | SearchProcedure:
    """The procedure a plan asks for, over the experiment's stored points (`units`)."""
    if plan.problem is None:
        return SweepProcedure(sorted(units), plan.replications)
    if plan.search is not None:
        return SearchProcedure(store, experiment_id, plan, units)
    return SelectionProcedure(store, experiment_id, plan.problem, sorted(units), plan.budget)


# -- search ---------------------------------------------------------------------------


class SearchProcedure:
    """Optuna proposes points for `trials` trials; then a clean-up selects among the best."""

    def __init__(
        self, store: ExperimentStore, experiment_id: int, plan: Plan, units: sim.ScenarioPlan
    ) -> None:
        assert plan.problem is not None
        assert plan.search is not None
        self._store = store
        self._eid = experiment_id
        self._plan = plan
        self._units = units  # every point so far, as the executor needs them; grows
        self._problem: Problem = plan.problem
        self._n0 = plan.problem.first_stage
        self._study = _study(plan)
        # A resumed search asks the same trials again: they find their stored points.
        self._known = {_key(params): pid for pid, (_, params) in units.items()}
        self._means: dict[int, dict[str, float]] = {}
        self._asked: list[tuple[optuna.Trial, int]] = []
        self._told = 0
        self.cleanup: SelectionProcedure | None = None

    async def next_batch(self) -> Sequence[Batch] | Finish:
        if self.cleanup is not None:
            return await self.cleanup.next_batch()
        await self._tell()
        if self._told >= self._plan.search.trials:  # type: ignore[union-attr]
            return await self._start_cleanup()
        fresh = await self._ask()
        if not fresh:
            return await self.next_batch()
        return [Batch(tuple(fresh), 1, self._n0)]

    async def _ask(self) -> list[int]:
        """Ask the next trials; the ids of their points whose first stage is not stored."""
        count = min(SEARCH_BATCH, self._plan.search.trials - self._told)  # type: ignore[union-attr]
        asked = await asyncio.to_thread(self._ask_trials, count)
        new = list({_key(p): p for _, p in asked if _key(p) not in self._known}.values())
        ids = await self._store.add_experiment_points(self._eid, new)
        for params, pid in zip(new, ids, strict=True):
            self._known[_key(params)] = pid
            self._units[pid] = (self._plan.model, params)
        self._asked = [(trial, self._known[_key(p)]) for trial, p in asked]
        # A resumed search meets its earlier points again, perhaps with a partial first stage.
        unmet = sorted({pid for _, pid in self._asked if pid not in self._means})
        stored = await self._store.experiment_stored(self._eid, unmet, 1, self._n0)
        have = {pid: sum(1 for p, _ in stored if p == pid) for pid in unmet}
        return [pid for pid in unmet if have[pid] < self._n0]

    def _ask_trials(self, count: int) -> list[tuple[optuna.Trial, dict[str, Any]]]:
        out = []
        for _ in range(count):
            trial = self._study.ask()
            out.append((trial, {**self._plan.space.base, **_suggest(trial, self._plan)}))
        return out

    async def _tell(self) -> None:
        """Evaluate each asked trial on its point's first-stage means, and tell Optuna."""
        if not self._asked:
            return
        for _, pid in self._asked:
            if pid not in self._means:
                batch = Batch((pid,), 1, self._n0)
                values = await batch_values(self._store, self._eid, batch, self._problem.kpis)
                self._means[pid] = {k: float(v.mean()) for k, v in values.items()}
        await asyncio.to_thread(self._tell_trials, self._asked)
        self._told += len(self._asked)
        self._asked = []

    def _tell_trials(self, asked: Sequence[tuple[optuna.Trial, int]]) -> None:
        for trial, pid in asked:
            means = self._means[pid]
            for j, c in enumerate(self._problem.constraints):
                gap = c.value - means[c.kpi] if c.op == ">=" else means[c.kpi] - c.value
                trial.set_constraint(f"constraint_{j}", gap)
            self._study.tell(trial, means[self._problem.objective])

    async def _start_cleanup(self) -> Sequence[Batch] | Finish:
        candidates = self.candidates()
        used = len(self._means) * self._n0
        self.cleanup = SelectionProcedure(
            self._store, self._eid, self._problem, candidates, self._plan.budget - used, self._n0
        )
        return await self.cleanup.next_batch()

    def candidates(self) -> list[int]:
        """The best points the search evaluated: meeting the constraints first, by objective."""
        sign = 1.0 if self._problem.direction == "min" else -1.0

        def rank(pid: int) -> tuple[float, float, int]:
            m = self._means[pid]
            misses = sum(
                max(0.0, (c.value - m[c.kpi]) if c.op == ">=" else (m[c.kpi] - c.value))
                / c.tolerance
                for c in self._problem.constraints
            )
            return misses, sign * m[self._problem.objective], pid

        ranked = sorted(self._means, key=rank)
        return sorted(ranked[: self._plan.search.candidates])  # type: ignore[union-attr]

    def leader(self) -> int | None:
        return self.cleanup.leader() if self.cleanup is not None else None

    def outcome(self) -> dict[str, Any]:
        state = self.cleanup.outcome() if self.cleanup is not None else {}
        state["search"] = {
            "trials": self._told,
            "points_evaluated": len(self._means),
            "candidates": self.candidates() if self.cleanup is not None else [],
        }
        return state


def _study(plan: Plan) -> optuna.Study:
    import optuna  # an optional extra: only a search needs it

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = (
        optuna.study.StudyDirection.MINIMIZE
        if plan.problem is not None and plan.problem.direction == "min"
        else optuna.study.StudyDirection.MAXIMIZE
    )
    sampler = optuna.samplers.TPESampler(seed=plan.seed % 2**32)
    return optuna.create_study(direction=direction, sampler=sampler)


def _suggest(trial: optuna.Trial, plan: Plan) -> dict[str, Any]:
    """One setting of every factor: finite ones by level index, ranges as numbers."""
    out: dict[str, Any] = {}
    for f in plan.space.factors:
        if f.values is not None:
            out[f.name] = f.values[trial.suggest_categorical(f.name, list(range(len(f.values))))]
        elif f.finite:
            out[f.name] = f.levels()[trial.suggest_int(f.name, 0, f.count() - 1)]
        elif f.integer:
            assert f.low is not None
            assert f.high is not None
            out[f.name] = trial.suggest_int(f.name, int(f.low), int(f.high))
        else:
            assert f.low is not None
            assert f.high is not None
            out[f.name] = trial.suggest_float(f.name, f.low, f.high)
    return out


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)
