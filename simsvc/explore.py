"""The life of an experiment over a parameter space: start, batches, cancel, resume.

An experiment is a run whose next batch is chosen by a procedure: a sweep asks for
every point's replications once; an optimization asks `selection.Sequential`. Each
batch is computed in chunks on the shared backend, committed as chunks return, and
reported on /ws/events. Replication r of every point draws from `(seed, r)`, as in a
plain run, so a point equals a plain run of a scenario with the same params and seed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from . import db, sim
from .experiment_request import Plan, parse_plan
from .selection import Batch, FloatArray, Sequential

log = logging.getLogger(__name__)

RESUMABLE = ("interrupted", "failed", "cancelled")
PROGRESS_INTERVAL_S = 0.1
Publish = Callable[[str, dict[str, Any]], None]


class Procedure(Protocol):
    """What picks an experiment's next batch."""

    stopped_because: str | None

    def plan(self) -> Batch | None: ...

    def observe(self, batch: Batch, values: Mapping[str, FloatArray]) -> None: ...


@dataclass
class SweepProcedure:
    """Every point, replications 1..n, in one batch."""

    points: int
    replications: int
    stopped_because: str | None = None
    _planned: bool = False

    def plan(self) -> Batch | None:
        if self._planned:
            return None
        self._planned = True
        return Batch(tuple(range(self.points)), 1, self.replications)

    def observe(self, batch: Batch, values: Mapping[str, FloatArray]) -> None:
        """A sweep decides nothing from the values."""


def procedure_for(plan: Plan) -> Procedure:
    if plan.problem is None:
        return SweepProcedure(len(plan.points), plan.replications)
    return Sequential(plan.problem, len(plan.points), plan.budget)


def outcome(procedure: Procedure) -> dict[str, Any]:
    """What the procedure has decided so far, as stored with the experiment."""
    if not isinstance(procedure, Sequential):
        return {}
    consts = procedure.consts
    return {
        "feasible": procedure.feasibility(),
        "eliminated_by": [None if e < 0 else int(e) + 1 for e in procedure.eliminated_by],
        "in_contention": [bool(a) for a in procedure.alive],
        "procedure": {
            "first_stage": procedure.problem.first_stage,
            "alpha_feasibility": consts.alpha_feasibility,
            "alpha_selection": consts.alpha_selection,
            "h2_feasibility": consts.h2_feasibility,
            "h2_selection": consts.h2_selection,
            "replications_per_point_checked": procedure.r,
        },
    }


@dataclass
class _Active:
    task: asyncio.Task[None]
    cancel_requested: bool = False
    last_progress: float = 0.0
    best: dict[str, Any] | None = None  # the leader so far, for progress events


class Explorer:
    """Owns every experiment's task; storage through `db`, computation on the backend."""

    def __init__(
        self,
        database: db.Database,
        backend: sim.Backend,
        models: Mapping[str, sim.Model],
        checker: sim.ParamsChecker,
        publish: Publish,
    ) -> None:
        self._db = database
        self._backend = backend
        self._models = models
        self._checker = checker
        self._publish = publish
        self._active: dict[int, _Active] = {}

    def plan(self, body: Mapping[str, Any], seed: int) -> Plan:
        return parse_plan(body, self._models, self._checker, seed)

    async def create(self, body: Mapping[str, Any], seed: int) -> db.Experiment:
        """Check, store and start an experiment; the points are stored before it answers."""
        plan = await asyncio.to_thread(self.plan, body, seed)
        request = {**body, "seed": seed}
        experiment = await self._db.create_experiment(
            plan.kind, plan.model.name, plan.model.version, seed, request, plan.points
        )
        self._start(experiment["experiment_id"], plan)
        return experiment

    def _start(self, experiment_id: int, plan: Plan) -> None:
        task = asyncio.create_task(
            self._run(experiment_id, plan), name=f"simsvc-experiment-{experiment_id}"
        )
        self._active[experiment_id] = _Active(task)
        task.add_done_callback(lambda _: self._active.pop(experiment_id, None))

    async def cancel(self, experiment_id: int) -> db.Experiment:
        """Stop a queued or running experiment; every caller gets the final state."""
        experiment = await self._db.get_experiment(experiment_id)
        active = self._active.get(experiment_id)
        if active is None:
            if experiment["status"] in db.ACTIVE:  # left by a task that is gone
                return await self._db.set_experiment_status(experiment_id, "cancelled")
            raise db.Conflict(
                f"experiment {experiment_id} is {experiment['status']}; "
                "only queued or running experiments can be cancelled"
            )
        active.cancel_requested = True
        active.task.cancel()
        await asyncio.gather(asyncio.shield(active.task), return_exceptions=True)
        return await self._db.get_experiment(experiment_id)

    async def resume(self, experiment_id: int) -> db.Experiment:
        """Compute what a stopped experiment lacks; an optimization replays its decisions."""
        experiment = await self._db.get_experiment(experiment_id)
        model = self._models.get(experiment["model"])
        if model is None or model.version != experiment["model_version"]:
            raise db.Conflict(
                f"experiment {experiment_id} used model {experiment['model']} "
                f"{experiment['model_version']}, which is not installed at that version"
            )
        plan = await asyncio.to_thread(self.plan, experiment["request"], experiment["seed"])
        reopened = await self._db.reopen_experiment(experiment_id, RESUMABLE)
        self._start(experiment_id, plan)
        return reopened

    async def wait(self, experiment_id: int) -> None:
        active = self._active.get(experiment_id)
        if active is not None:
            await asyncio.gather(active.task, return_exceptions=True)

    async def close(self) -> None:
        """Stop every experiment without an outcome: the caller marks them interrupted."""
        tasks = [a.task for a in self._active.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- one experiment ---------------------------------------------------------------

    async def _run(self, experiment_id: int, plan: Plan) -> None:
        procedure = procedure_for(plan)
        try:
            started = await self._db.set_experiment_status(experiment_id, "running")
            self._publish(
                "experiment.started",
                {"experiment_id": experiment_id, "experiment": summary(started)},
            )
            await self._batches(experiment_id, plan, procedure)
        except asyncio.CancelledError:
            active = self._active.get(experiment_id)
            if active is None or not active.cancel_requested:
                raise
            await self._finish(experiment_id, "cancelled", procedure, None)
            return
        except Exception as exc:
            log.exception("experiment %d failed", experiment_id)
            await self._finish(experiment_id, "failed", procedure, f"{type(exc).__name__}: {exc}")
            return
        await self._finish(experiment_id, "completed", procedure, None)

    async def _batches(self, experiment_id: int, plan: Plan, procedure: Procedure) -> None:
        stored = await self._db.experiment_replications(experiment_id)
        wants_values = isinstance(procedure, Sequential)
        cache = await self._stored_values(experiment_id, plan) if wants_values and stored else {}
        while (batch := procedure.plan()) is not None:
            values = _BatchValues(batch, plan, cache) if wants_values else None
            await self._compute(experiment_id, plan, batch, stored, values)
            if values is not None:
                procedure.observe(batch, values.arrays)
                await self._db.set_experiment_outcome(experiment_id, outcome(procedure))
                self._report_leader(experiment_id, plan, procedure)

    async def _stored_values(
        self, experiment_id: int, plan: Plan
    ) -> dict[tuple[int, int], dict[str, float]]:
        """The KPI values already stored, so that a resumed procedure replays its decisions."""
        assert plan.problem is not None
        kpis = plan.problem.kpis
        cache: dict[tuple[int, int], dict[str, float]] = {}
        async for rows in self._db.experiment_rows(experiment_id):
            for row in rows:
                values = db.kpi_values(_as_result(row))
                cache[(row["point_id"], row["replication"])] = {k: values[k] for k in kpis}
        return cache

    async def _compute(
        self,
        experiment_id: int,
        plan: Plan,
        batch: Batch,
        stored: set[tuple[int, int]],
        values: _BatchValues | None,
    ) -> None:
        """Compute the batch's missing pairs in chunks, a few in flight, storing each."""
        pairs = _missing_pairs(batch, stored)
        total = sum(1 for _ in _missing_pairs(batch, stored))
        size = sim.chunk_size(total, self._backend.workers)
        in_flight: set[asyncio.Task[list[sim.Replication]]] = set()
        try:
            while chunk := list(itertools.islice(pairs, size)):
                if len(in_flight) >= 2 * self._backend.workers:
                    await self._store_first(experiment_id, in_flight, values)
                in_flight.add(asyncio.ensure_future(self._chunk(plan, chunk)))
            while in_flight:
                await self._store_first(experiment_id, in_flight, values)
        finally:
            for task in in_flight:
                task.cancel()

    async def _chunk(self, plan: Plan, chunk: list[tuple[int, int]]) -> list[sim.Replication]:
        scenarios: sim.ScenarioPlan = {p: (plan.model, plan.points[p - 1]) for p, _ in chunk}
        return await self._backend.submit(sim.simulate_chunk, scenarios, plan.seed, chunk)

    async def _store_first(
        self,
        experiment_id: int,
        in_flight: set[asyncio.Task[list[sim.Replication]]],
        values: _BatchValues | None,
    ) -> None:
        done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            in_flight.discard(task)
            rows = [_experiment_row(r) for r in task.result()]
            used = await self._db.store_experiment_results(experiment_id, rows)
            if values is not None:
                values.add(rows)
            self._progress(experiment_id, used)

    def _report_leader(self, experiment_id: int, plan: Plan, procedure: Procedure) -> None:
        active = self._active.get(experiment_id)
        leader = procedure.leader() if isinstance(procedure, Sequential) else None
        if active is None or leader is None:
            return
        assert isinstance(procedure, Sequential)
        active.best = {
            "point_id": leader + 1,
            "params": plan.points[leader],
            "feasible": procedure.feasibility()[leader],
        }
        self._progress(experiment_id, procedure.used, force=True)

    def _progress(self, experiment_id: int, used: int, force: bool = False) -> None:
        active = self._active.get(experiment_id)
        now = time.monotonic()
        if active is None or (not force and now - active.last_progress < PROGRESS_INTERVAL_S):
            return
        active.last_progress = now
        self._publish(
            "experiment.progress",
            {"experiment_id": experiment_id, "replications_used": used, "best": active.best},
        )

    async def _finish(
        self, experiment_id: int, status: str, procedure: Procedure, error: str | None
    ) -> None:
        state = outcome(procedure)
        experiment = await asyncio.shield(
            self._db.set_experiment_status(
                experiment_id,
                status,
                error=error,
                stopped_because=procedure.stopped_because if status == "completed" else None,
                outcome=state or None,
            )
        )
        self._publish(
            f"experiment.{status}",
            {"experiment_id": experiment_id, "experiment": summary(experiment)},
        )
        log.info(
            "experiment %d %s (%d replications)",
            experiment_id,
            status,
            experiment["replications_used"],
        )


class _BatchValues:
    """The batch's values of the KPIs the procedure reads, as points x replications."""

    def __init__(
        self, batch: Batch, plan: Plan, cache: Mapping[tuple[int, int], Mapping[str, float]]
    ) -> None:
        assert plan.problem is not None
        self._kpis = plan.problem.kpis
        self._first = batch.first
        self._row = {point + 1: i for i, point in enumerate(batch.points)}
        shape = (len(batch.points), batch.last - batch.first + 1)
        self.arrays: dict[str, FloatArray] = {k: np.full(shape, math.nan) for k in self._kpis}
        for (pid, r), values in cache.items():
            if pid in self._row and batch.first <= r <= batch.last:
                for k in self._kpis:
                    self.arrays[k][self._row[pid], r - batch.first] = values[k]

    def add(self, rows: list[db.ExperimentRow]) -> None:
        for row in rows:
            values = db.kpi_values(_as_result(row))
            missing = [k for k in self._kpis if k not in values]
            if missing:
                raise sim.ModelError(f"the model returned no {missing[0]!r}")
            i, j = self._row[row["point_id"]], row["replication"] - self._first
            for k in self._kpis:
                self.arrays[k][i, j] = values[k]


def _missing_pairs(batch: Batch, stored: set[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """(point_id, replication) pairs of the batch not yet stored, replication-major."""
    for r in range(batch.first, batch.last + 1):
        for point in batch.points:
            if (point + 1, r) not in stored:
                yield point + 1, r


def _experiment_row(r: sim.Replication) -> db.ExperimentRow:
    return db.ExperimentRow(
        point_id=r["scenario_id"],
        replication=r["replication"],
        total_labor_costs=r["total_labor_costs"],
        ontime_delivery_rate=r["ontime_delivery_rate"],
        metrics=r["metrics"],
    )


def _as_result(row: db.ExperimentRow) -> db.ResultRow:
    return db.ResultRow(
        scenario_id=row["point_id"],
        replication=row["replication"],
        seed=None,
        total_labor_costs=row["total_labor_costs"],
        ontime_delivery_rate=row["ontime_delivery_rate"],
        metrics=row["metrics"],
    )


def summary(experiment: db.Experiment) -> dict[str, Any]:
    """An experiment without its points, as lists and events show it."""
    keep = (
        "experiment_id",
        "kind",
        "status",
        "model",
        "model_version",
        "seed",
        "point_count",
        "replications_used",
        "stopped_because",
        "error",
        "created_at",
        "started_at",
        "finished_at",
    )
    return {k: experiment[k] for k in keep}  # type: ignore[literal-required]
