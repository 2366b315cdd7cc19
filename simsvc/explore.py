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
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import db, sim
from .experiment_procedures import (
    Batch,
    Finish,
    SearchProcedure,
    SelectionProcedure,
    SweepProcedure,
    procedure_for,
)
from .experiment_request import Plan, parse_plan

Procedure = SweepProcedure | SelectionProcedure | SearchProcedure

log = logging.getLogger(__name__)

RESUMABLE = ("interrupted", "failed", "cancelled")
PROGRESS_INTERVAL_S = 0.1
Publish = Callable[[str, dict[str, Any]], None]


@dataclass
class _Active:
    task: asyncio.Task[None]
    cancel_requested: bool = False
    finishing: bool = False  # its outcome is being recorded: too late to cancel
    last_progress: float = 0.0
    best: dict[str, Any] | None = None  # the leader so far, for progress events
    used: int = 0


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
        # Once: a second cancel would land inside the handler recording the first.
        if not (active.cancel_requested or active.finishing):
            active.cancel_requested = True
            active.task.cancel()
        await asyncio.gather(asyncio.shield(active.task), return_exceptions=True)
        experiment = await self._db.get_experiment(experiment_id)
        if experiment["status"] in db.ACTIVE:  # cancelled before its task ever ran
            experiment = await self._db.set_experiment_status(experiment_id, "cancelled")
            self._publish(
                "experiment.cancelled",
                {"experiment_id": experiment_id, "experiment": summary(experiment)},
            )
        if experiment["status"] != "cancelled":
            raise db.Conflict(
                f"experiment {experiment_id} is {experiment['status']}; "
                "only queued or running experiments can be cancelled"
            )
        return experiment

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
        points = await self._db.experiment_points(experiment_id)
        units: sim.ScenarioPlan = {i: (plan.model, p) for i, p in enumerate(points, start=1)}
        procedure = procedure_for(self._db, experiment_id, plan, units)
        why = None
        try:
            started = await self._db.set_experiment_status(experiment_id, "running")
            event = {"experiment_id": experiment_id, "experiment": summary(started)}
            self._publish("experiment.started", event)
            why = await self._batches(experiment_id, plan, units, procedure)
        except asyncio.CancelledError:
            active = self._active.get(experiment_id)
            if active is None or not active.cancel_requested:
                raise
            await self._finish(experiment_id, "cancelled", procedure, None, None)
            return
        except Exception as exc:
            log.exception("experiment %d failed", experiment_id)
            error = f"{type(exc).__name__}: {exc}"
            await self._finish(experiment_id, "failed", procedure, None, error)
            return
        await self._finish(experiment_id, "completed", procedure, why, None)

    async def _batches(
        self, experiment_id: int, plan: Plan, units: sim.ScenarioPlan, procedure: Procedure
    ) -> str | None:
        """Compute what the procedure asks for until it finishes; why it finished."""
        stored = await self._db.experiment_replications(experiment_id)
        while True:
            decision = await procedure.next_batch()
            self._report_leader(experiment_id, units, procedure)
            if isinstance(decision, Finish):
                return decision.stopped_because
            for batch in decision:
                await self._compute(experiment_id, plan, units, batch, stored)

    async def _compute(
        self,
        experiment_id: int,
        plan: Plan,
        units: sim.ScenarioPlan,
        batch: Batch,
        stored: set[tuple[int, int]],
    ) -> None:
        """Compute the batch's missing pairs in chunks, a few in flight, storing each."""
        pairs = _missing_pairs(batch, stored)
        size = sim.chunk_size(
            len(batch.units) * (batch.last - batch.first + 1), self._backend.workers
        )
        in_flight: set[asyncio.Task[list[sim.Replication]]] = set()
        try:
            while chunk := list(itertools.islice(pairs, size)):
                if len(in_flight) >= 2 * self._backend.workers:
                    await self._store_first(experiment_id, in_flight)
                in_flight.add(asyncio.ensure_future(self._chunk(plan, units, chunk)))
            while in_flight:
                await self._store_first(experiment_id, in_flight)
        finally:
            for task in in_flight:
                task.cancel()

    async def _chunk(
        self, plan: Plan, units: sim.ScenarioPlan, chunk: list[tuple[int, int]]
    ) -> list[sim.Replication]:
        # Only the chunk's points travel to the worker, not the whole space.
        scenarios: sim.ScenarioPlan = {p: units[p] for p, _ in chunk}
        return await self._backend.submit(sim.simulate_chunk, scenarios, plan.seed, chunk)

    async def _store_first(
        self, experiment_id: int, in_flight: set[asyncio.Task[list[sim.Replication]]]
    ) -> None:
        done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            in_flight.discard(task)
            rows = [_experiment_row(r) for r in task.result()]
            used = await self._db.store_experiment_results(experiment_id, rows)
            self._progress(experiment_id, used)

    def _report_leader(
        self, experiment_id: int, units: sim.ScenarioPlan, procedure: Procedure
    ) -> None:
        active = self._active.get(experiment_id)
        leader = procedure.leader() if not isinstance(procedure, SweepProcedure) else None
        if active is None or leader is None:
            return
        feasible = procedure.outcome().get("feasible", {}).get(str(leader))
        active.best = {"point_id": leader, "params": units[leader][1], "feasible": feasible}
        self._progress(experiment_id, None, force=True)

    def _progress(self, experiment_id: int, used: int | None, force: bool = False) -> None:
        active = self._active.get(experiment_id)
        now = time.monotonic()
        if active is None or (not force and now - active.last_progress < PROGRESS_INTERVAL_S):
            return
        active.last_progress = now
        if used is None:
            used = active.used
        active.used = used
        self._publish(
            "experiment.progress",
            {"experiment_id": experiment_id, "replications_used": used, "best": active.best},
        )

    async def _finish(
        self,
        experiment_id: int,
        status: str,
        procedure: Procedure,
        why: str | None,
        error: str | None,
    ) -> None:
        active = self._active.get(experiment_id)
        if active is not None:
            active.finishing = True
        state = procedure.outcome()
        experiment = await asyncio.shield(
            self._db.set_experiment_status(
                experiment_id, status, error=error, stopped_because=why, outcome=state or None
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


def _missing_pairs(batch: Batch, stored: set[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """(point_id, replication) pairs of the batch not yet stored, replication-major."""
    for r in range(batch.first, batch.last + 1):
        for point in batch.units:
            if (point, r) not in stored:
                yield point, r


def _experiment_row(r: sim.Replication) -> db.ExperimentRow:
    return db.ExperimentRow(
        point_id=r["scenario_id"],
        replication=r["replication"],
        total_labor_costs=r["total_labor_costs"],
        ontime_delivery_rate=r["ontime_delivery_rate"],
        metrics=r["metrics"],
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
