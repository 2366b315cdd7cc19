"""The life of an experiment over a parameter space: create, start, cancel, resume, events.

An experiment is a run whose next batch is chosen by a procedure (see
`experiment_procedures`): it goes to the shared `runner.Runner` as a job of kind
"experiment", and `ExperimentEvents`, the job's sink, stores each chunk with
`experiment_store` and tells /ws/events. Replication r of every point draws from
`(seed, r)`, as in a plain run, so a point equals a plain run of a scenario with the
same params and seed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import chunks, db, sim
from .experiment_procedures import (
    SearchProcedure,
    SelectionProcedure,
    SweepProcedure,
    procedure_for,
)
from .experiment_request import Plan, parse_plan
from .experiment_store import Experiment, ExperimentRow, ExperimentStore
from .runner import Batch, Finish, Job, Runner
from .schema import FieldError, InvalidInput

log = logging.getLogger(__name__)

KIND = "experiment"  # the runner's kind of job: ids are unique within a kind
RESUMABLE = ("interrupted", "failed", "cancelled")
PROGRESS_INTERVAL_S = 0.1
Publish = Callable[[str, dict[str, Any]], None]
Procedure = SweepProcedure | SelectionProcedure | SearchProcedure


def summary(experiment: Experiment) -> dict[str, Any]:
    """An experiment without its points, as lists and events show it."""
    return {k: v for k, v in experiment.items() if k not in ("request", "outcome")}


@dataclass
class _Live:
    """What the sink knows of one running experiment."""

    procedure: Procedure
    units: sim.ScenarioPlan
    last_progress: float = 0.0
    used: int = 0
    best: dict[str, Any] | None = None


class ExperimentEvents:
    """The runner's sink for experiments: store each chunk, then tell /ws/events."""

    def __init__(self, store: ExperimentStore, publish: Publish) -> None:
        self._store = store
        self._publish = publish
        self.live: dict[int, _Live] = {}

    async def run_started(self, run_id: int) -> None:
        started = await self._store.set_experiment_status(run_id, "running")
        self._publish(
            "experiment.started", {"experiment_id": run_id, "experiment": summary(started)}
        )

    async def stored(
        self, run_id: int, units: Sequence[int], first: int, last: int
    ) -> set[tuple[int, int]]:
        return await self._store.experiment_stored(run_id, units, first, last)

    async def results_ready(self, run_id: int, rows: Sequence[chunks.Replication]) -> None:
        used = await self._store.store_experiment_results(run_id, [_row(r) for r in rows])
        live = self.live.get(run_id)
        if live is not None:
            live.used = used
            self.progress(run_id)

    def progress(self, run_id: int, force: bool = False) -> None:
        """`experiment.progress`, at most every PROGRESS_INTERVAL_S unless forced."""
        live, now = self.live.get(run_id), time.monotonic()
        if live is None or (not force and now - live.last_progress < PROGRESS_INTERVAL_S):
            return
        live.last_progress = now
        self._publish(
            "experiment.progress",
            {"experiment_id": run_id, "replications_used": live.used, "best": live.best},
        )

    def decided(self, run_id: int) -> None:
        """After each decision of the procedure: the leader so far, in a progress event."""
        live = self.live.get(run_id)
        if live is None or isinstance(live.procedure, SweepProcedure):
            return
        leader = live.procedure.leader()
        if leader is None:
            return
        feasible = live.procedure.outcome().get("feasible", {}).get(str(leader))
        live.best = {"point_id": leader, "params": live.units[leader][1], "feasible": feasible}
        self.progress(run_id, force=True)

    async def run_finished(
        self, run_id: int, status: str, error: str | None, stopped_because: str | None
    ) -> None:
        live = self.live.pop(run_id, None)
        outcome = live.procedure.outcome() if live is not None else None
        experiment = await self._store.set_experiment_status(
            run_id, status, error=error, stopped_because=stopped_because, outcome=outcome or None
        )
        self._publish(
            f"experiment.{status}", {"experiment_id": run_id, "experiment": summary(experiment)}
        )
        log.info(
            "experiment %d %s (%d replications)", run_id, status, experiment["replications_used"]
        )


class _Reporting:
    """A procedure that tells the sink after each decision, for progress events."""

    def __init__(self, procedure: Procedure, sink: ExperimentEvents, experiment_id: int) -> None:
        self._procedure = procedure
        self._sink = sink
        self._id = experiment_id

    async def next_batch(self) -> Sequence[Batch] | Finish:
        decision = await self._procedure.next_batch()
        self._sink.decided(self._id)
        return decision


class Explorer:
    """Every experiment's life, over the experiment store, the shared runner and the models."""

    def __init__(
        self,
        store: ExperimentStore,
        runner: Callable[[], Runner],
        models: Mapping[str, sim.Model],
        checker: sim.ParamsChecker,
        publish: Publish,
    ) -> None:
        self._store = store
        self._runner = runner  # the runner is opened after the explorer
        self._models = models
        self._checker = checker
        self.sink = ExperimentEvents(store, publish)

    def plan(self, body: Mapping[str, Any], seed: int) -> Plan:
        plan = parse_plan(body, self._models, self._checker, seed)
        check_work(plan)
        return plan

    async def create(self, body: Mapping[str, Any]) -> Experiment:
        """Check, store and start an experiment; the points are stored before it answers."""
        seed = int(body["seed"]) if "seed" in body else secrets.randbelow(2**31)
        plan = await asyncio.to_thread(self.plan, body, seed)
        experiment = await self._store.create_experiment(
            plan.kind,
            plan.model.name,
            plan.model.version,
            seed,
            {**body, "seed": seed},
            plan.points,
        )
        self._launch(experiment["experiment_id"], plan, plan.points, resumed=False)
        return experiment

    def _launch(
        self, experiment_id: int, plan: Plan, points: Sequence[dict[str, Any]], resumed: bool
    ) -> None:
        units: sim.ScenarioPlan = {i: (plan.model, p) for i, p in enumerate(points, start=1)}
        procedure = procedure_for(self._store, experiment_id, plan, units)
        self.sink.live[experiment_id] = _Live(procedure, units)
        reporting = _Reporting(procedure, self.sink, experiment_id)
        job = Job(experiment_id, plan.seed, units, reporting, self.sink, 0.0, resumed, kind=KIND)
        self._runner().start(job)

    async def cancel(self, experiment_id: int) -> Experiment:
        """Stop a queued or running experiment; every concurrent caller gets its final state."""
        await self._store.get_experiment(experiment_id)  # 404 first
        runner = self._runner()
        if runner.cancel(experiment_id, KIND):
            await runner.wait(experiment_id, KIND)
        experiment = await self._store.get_experiment(experiment_id)
        if experiment["status"] != "cancelled":
            raise db.Conflict(
                f"experiment {experiment_id} is {experiment['status']}; "
                "only queued or running experiments can be cancelled"
            )
        return experiment

    async def resume(self, experiment_id: int) -> Experiment:
        """Compute what a stopped experiment lacks; its procedure replays its decisions."""
        experiment = await self._store.get_experiment(experiment_id)
        model = self._models.get(experiment["model"])
        if model is None or model.version != experiment["model_version"]:
            raise db.Conflict(
                f"experiment {experiment_id} used model {experiment['model']} "
                f"{experiment['model_version']}, which is not installed at that version; "
                "its replications cannot be reproduced"
            )
        plan = await asyncio.to_thread(self.plan, experiment["request"], experiment["seed"])
        await self._runner().wait(experiment_id, KIND)  # one that just finished may wind down
        reopened = await self._store.reopen_experiment(experiment_id, RESUMABLE)
        points = await self._store.experiment_points(experiment_id)  # a search's, as found
        self._launch(experiment_id, plan, points, resumed=True)
        return reopened


def check_work(plan: Plan) -> None:
    """Refuse an experiment whose replications would cost more than a run may (422)."""
    points = plan.points or [_dearest_corner(plan)]  # a search's points are not known yet
    for params in points:
        sim.check_replication_work(plan.model, params, "factors")
    if plan.problem is None:
        work = math.fsum(plan.model.work(p) for p in points) * plan.replications
        what, where = f"{len(points)} points x {plan.replications} replications", "replications"
    else:
        work = max(plan.model.work(p) for p in points) * plan.budget
        what, where = f"max_replications {plan.budget}", "max_replications"
    if work > sim.MAX_RUN_WORK:
        message = (
            f"{what} would cost {work:.3g} work units, above the limit of "
            f"{sim.MAX_RUN_WORK:.3g} per experiment; ask for fewer"
        )
        raise InvalidInput([FieldError(field=where, message=message)])


def _dearest_corner(plan: Plan) -> dict[str, Any]:
    """Every factor at its largest setting: the dearest point when cost grows with params."""
    corner = dict(plan.space.base)
    for f in plan.space.factors:
        levels = f.levels() if f.finite else [f.low, f.high]
        numeric = [v for v in levels if isinstance(v, int | float) and not isinstance(v, bool)]
        corner[f.name] = max(numeric) if numeric else levels[-1]
    return corner


def _row(r: chunks.Replication) -> ExperimentRow:
    return ExperimentRow(
        point_id=r["scenario_id"],
        replication=r["replication"],
        total_labor_costs=r["total_labor_costs"],
        ontime_delivery_rate=r["ontime_delivery_rate"],
        metrics=r["metrics"],
    )
