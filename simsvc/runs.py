"""The one owner of a run's life: create, plan, start, batch, finish, cancel, resume, extend.

`web` only translates HTTP to a `Runs` method and back; everything a run does between
goes through here, one way: `Runs` -> `runner.Runner` (which computes on a
`backends.Backend`) -> `RunEvents` (stores each chunk with `db`, then tells the hubs).

A run is a set of *units*, each an id with a (model, params) plan (`sim.ScenarioPlan`;
a unit is a stored scenario in a plain run, and may be any id, such as an experiment's
point), whose next batch is chosen by a *procedure*:

    class Procedure(Protocol):                       # runner.Procedure
        async def next_batch(self) -> Sequence[Batch] | Finish: ...

- `Batch(units, first, last)` asks for replications `first..last` of each unit;
  replication `r` of every unit draws from `sim.stream(seed, r)`. The runner generates
  the pairs lazily and skips those already stored when the job is `resumed`.
- `Finish(stopped_because)` ends the run `completed`, recording the reason.
- A procedure reads what is stored so far through `RunResults` (each unit's moments,
  or its rows) and may record its plan with `Database.update_run_plan`.

`PlainProcedure` asks for `1..n` once; `PrecisionProcedure` grows `n` until its
interval targets are met. Another kind of run (a sweep, an optimization) is another
procedure: a stored run starts with `Runs.launch`; anything else builds a
`runner.Job` with its own `kind` (ids are unique per kind) and `RunSink` (where its
rows go, what `stored` answers for a resume) and starts it with `Runs.launch_job`.
Bound its cost up front with `check_run_work` and `sim.check_replication_work`.
Cancel is `Runner.cancel(id, kind)` then `Runner.wait(id, kind)`: idempotent, and the
job records exactly one outcome (`completed`, `failed` or `cancelled`) through its sink.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import __version__, analysis, chunks, db, sim
from .hub import Hub
from .jsontext import MetricKinds
from .openapi import MAX_REPLICATIONS
from .runner import Batch, Finish, Job, Pair, PlainProcedure, Procedure, Runner
from .schema import FieldError, InvalidInput
from .stats import AggregateCache

log = logging.getLogger(__name__)

RESUMABLE = ("interrupted", "failed", "cancelled")
PROGRESS_INTERVAL_S = 0.1


@dataclass(frozen=True)
class RunRequest:
    """A new run as asked for: `None` takes the default (every scenario, 3, a random seed)."""

    scenario_ids: list[int] | None = None
    replications: int | None = None
    seed: int | None = None
    pace_s: float = 0.0
    precision: Mapping[str, Any] | None = None


def run_view(run: db.Run) -> dict[str, Any]:
    """A run as the API and the events show it."""
    view: dict[str, Any] = {k: v for k, v in run.items() if k not in ("snapshot", "options")}
    view["seed_scheme"] = sim.SEED_SCHEME
    view["scenarios"] = run["snapshot"]
    view.update(run["options"])
    return view


def run_options(precision: analysis.Precision | None) -> dict[str, Any]:
    """The options a new run is stored with: its precision request and its software."""
    environment = {
        "simsvc": __version__,
        "numpy": np.__version__,  # its generators define the random streams
        "python": platform.python_version(),
    }
    options: dict[str, Any] = {"environment": environment}
    if precision is not None:
        options["precision"] = precision.as_json()
    return options


def manifest(run: db.Run) -> dict[str, Any]:
    """Everything needed to recompute any replication of a run with its model alone."""
    models = {(s["model"], s["model_version"]) for s in run["snapshot"].values()}
    return {
        "seed": run["seed"],
        "seed_scheme": sim.SEED_SCHEME,
        "replications": run["replications"],
        "models": [{"name": n, "version": v} for n, v in sorted(models)],
        "scenarios": run["snapshot"],
        "environment": run["options"].get("environment"),
        "recompute": "models[model].simulate(params, "
        "numpy.random.default_rng([seed, replication]))",
    }


def check_run_work(plan: sim.ScenarioPlan, replications: int, where: str) -> None:
    """Refuse a run whose replications of every unit would cost more than `MAX_RUN_WORK`."""
    per_replication = sum(model.work(params) for model, params in plan.values())
    work = per_replication * replications
    if work <= sim.MAX_RUN_WORK:
        return
    message = (
        f"{len(plan)} scenarios x {replications} replications would cost {work:.3g} work "
        f"units, above the limit of {sim.MAX_RUN_WORK:.3g} per run; run fewer"
    )
    raise InvalidInput([FieldError(field=where, message=message)])


# -- what a procedure sees ----------------------------------------------------------


class RunResults:
    """What one run has stored so far, for its procedure."""

    def __init__(self, database: db.Database, run_id: int) -> None:
        self.db = database
        self.run_id = run_id

    async def moments(self) -> db.ScenarioStats:
        """Each unit's moments of each KPI: cheap, kept up to date as chunks are stored."""
        return await self.db.scenario_stats(self.run_id)

    async def rows(self) -> list[db.ResultRow]:
        return await self.db.run_results(self.run_id)


class PrecisionProcedure:
    """Grow every unit's count until each targeted interval is narrow enough."""

    def __init__(
        self, results: RunResults, units: Sequence[int], n: int, precision: analysis.Precision
    ) -> None:
        self._results = results
        self._units = tuple(units)
        self._n = n
        self._precision = precision
        self._first = True

    async def next_batch(self) -> Sequence[Batch] | Finish:
        if self._first:
            self._first = False
            return [Batch(self._units, 1, self._n)]
        rows = await self._results.rows()
        report = await asyncio.to_thread(_report, rows, list(self._units), self._precision)
        count, why = analysis.next_count(self._precision, report, self._n)
        run_id = self._results.run_id
        run = await self._results.db.get_run(run_id)
        options = {**run["options"], "precision_report": report}
        await self._results.db.update_run_plan(run_id, count, options)
        log.info("run %d: %d replications per scenario, next %d", run_id, self._n, count)
        if why is not None:
            return Finish(why)
        batch = Batch(self._units, self._n + 1, count)
        self._n = count
        return [batch]


def _report(
    rows: list[db.ResultRow], scenario_ids: list[int], precision: analysis.Precision
) -> list[analysis.TargetCheck]:
    # Off the event loop: a long run has many rows to look through.
    return analysis.precision_report(analysis.samples_of(rows), scenario_ids, precision)


# -- the sink: results -> db -> hubs -------------------------------------------------


class RunEvents:
    """The runner's sink for runs: store each chunk, then tell the sockets."""

    def __init__(
        self,
        database: db.Database,
        aggregates: AggregateCache,
        events: Hub,
        results: Hub,
        waiting: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self._db = database
        self._aggregates = aggregates
        self._events = events
        self._results = results
        self._waiting = waiting  # fields saying whether runs wait for workers, for progress
        self._last_progress: dict[int, float] = {}
        self._unsent: set[int] = set()
        self._progress_cost: dict[int, float] = {}  # seconds the last progress event took
        # The metrics keys and kinds each running run has recorded since it (re)started:
        # a chunk sends only those it adds, and a model's usual keys cost one write a run.
        self._recorded_keys: dict[int, MetricKinds] = {}

    async def run_started(self, run_id: int) -> None:
        # Owed until a progress event goes out, even if no replication is left to run.
        self._unsent.add(run_id)
        self._recorded_keys[run_id] = {}
        run = await self._db.mark_started(run_id)
        self._events.broadcast_event("run.started", {"run_id": run_id, "run": run_view(run)})

    async def stored(self, run_id: int, units: Sequence[int], first: int, last: int) -> set[Pair]:
        return await self._db.stored_replications(run_id, units, first, last)

    async def results_ready(self, run_id: int, rows: chunks.Chunk) -> None:
        recorded = self._recorded_keys.setdefault(run_id, {})
        new = unrecorded_kinds(rows.keys, recorded)
        done, run_total = await self._db.store_chunk(run_id, rows.rows, rows.moments, new)
        for key, kinds in new.items():
            recorded.setdefault(key, set()).update(kinds)
        now = time.monotonic()
        # A run over many scenarios makes each progress event dear: space them out so
        # that they take at most a tenth of the event loop.
        interval = max(PROGRESS_INTERVAL_S, 10 * self._progress_cost.get(run_id, 0.0))
        if done < run_total and now - self._last_progress.get(run_id, 0.0) < interval:
            self._unsent.add(run_id)
            return
        self._last_progress[run_id] = now
        await self._send_progress(run_id, done, run_total)

    async def _send_progress(self, run_id: int, done: int, total: int) -> None:
        self._unsent.discard(run_id)
        if not len(self._events):
            return  # nobody listens: skip computing the aggregates
        began = time.monotonic()
        results = await self._aggregates.compute(run_id)
        self._events.broadcast_event(
            "run.progress",
            {"run_id": run_id, "done": done, "total": total, "results": results} | self._waiting(),
        )
        self._progress_cost[run_id] = time.monotonic() - began

    async def waiting_changed(self, active: Callable[[int], bool]) -> None:
        """Tell the sockets that running runs started or stopped waiting for workers."""
        for run in await self._db.list_runs(limit=100):
            if run["status"] == "running" and active(run["run_id"]):
                await self._send_progress(run["run_id"], run["done"], run["total"])

    async def run_finished(
        self, run_id: int, status: str, error: str | None, stopped_because: str | None
    ) -> None:
        if run_id in self._unsent:
            run = await self._db.get_run(run_id)
            await self._send_progress(run_id, run["done"], run["total"])
        self._last_progress.pop(run_id, None)
        self._progress_cost.pop(run_id, None)
        self._recorded_keys.pop(run_id, None)
        run = await self._db.finish_run(run_id, status, error, stopped_because)
        results = await self._aggregates.compute(run_id)
        self._events.broadcast_event(
            f"run.{status}", {"run_id": run_id, "run": run_view(run), "results": results}
        )
        if status == "completed":
            self._results.broadcast(await self._aggregates.encoded())


def unrecorded_kinds(keys: MetricKinds, recorded: MetricKinds) -> MetricKinds:
    """The keys and kinds of `keys` that `recorded` lacks."""
    new = {key: kinds - recorded.get(key, set()) for key, kinds in keys.items()}
    return {key: kinds for key, kinds in new.items() if kinds}


# -- the owner ----------------------------------------------------------------------


class Runs:
    """Every run's life, over one database, runner, set of models and pair of hubs."""

    def __init__(
        self,
        database: db.Database,
        runner: Runner,
        models: dict[str, sim.Model],
        params: sim.ParamsChecker,
        sink: RunEvents,
    ) -> None:
        self.db = database
        self.runner = runner
        self._models = models
        self._params = params
        self.sink = sink

    def launch(
        self,
        run: db.Run,
        plan: sim.ScenarioPlan,
        procedure: Procedure,
        *,
        resumed: bool = False,
    ) -> None:
        """Start computing a stored run whose batches `procedure` chooses."""
        job = Job(run["run_id"], run["seed"], plan, procedure, self.sink, run["pace_s"], resumed)
        self.runner.start(job)

    def launch_job(self, job: Job) -> None:
        """Start any job on the shared runner: another kind, with its own sink."""
        self.runner.start(job)

    async def start(self, request: RunRequest) -> db.Run:
        """Store a new run and start it; answers before any replication is computed."""
        scenario_ids = await self._scenarios(request.scenario_ids)
        plan, snapshot = await self._plan(scenario_ids)
        precision = self._precision(request, plan)
        n = precision.min_replications if precision else (request.replications or 3)
        check_run_work(
            plan,
            precision.max_replications if precision else n,
            "precision.max_replications" if precision else "replications",
        )
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        run = await self.db.create_run(
            scenario_ids, n, seed, request.pace_s, run_options(precision), snapshot
        )
        self.launch(run, plan, self._procedure(run, precision))
        log.info("run %d started: %d scenarios x %d replications", run["run_id"], len(plan), n)
        return run

    def _procedure(self, run: db.Run, precision: analysis.Precision | None) -> Procedure:
        units, n = run["scenario_ids"], run["replications"]
        if precision is None:
            return PlainProcedure(units, n)
        return PrecisionProcedure(RunResults(self.db, run["run_id"]), units, n, precision)

    async def cancel(self, run_id: int) -> db.Run:
        """Stop a queued or running run; every concurrent caller gets its final state."""
        await self.db.get_run(run_id)  # 404 first
        if self.runner.cancel(run_id):
            await self.runner.wait(run_id)
        # Read after the run has ended: a concurrent cancel may have ended it meanwhile.
        run = await self.db.get_run(run_id)
        if run["status"] != "cancelled":
            raise db.Conflict(
                f"run {run_id} is {run['status']}; only queued or running runs can be cancelled"
            )
        return run

    async def extend(self, run_id: int, added: int) -> db.Run:
        """Add replications n+1..n+added to every scenario of a finished run."""
        run = await self.db.get_run(run_id)
        if run["status"] in db.ACTIVE:
            raise db.Conflict(f"run {run_id} is {run['status']}; extend it once it has finished")
        if run["replications"] + added > MAX_REPLICATIONS:
            message = f"{run['replications']} + {added} exceeds the limit of {MAX_REPLICATIONS}"
            raise InvalidInput([FieldError(field="replications", message=message)])
        plan = self.snapshot_plan(run)
        check_run_work(plan, run["replications"] + added, "replications")
        extensions = [*run["options"].get("extensions", []), added]
        options = {**run["options"], "extensions": extensions}
        count = run["replications"] + added
        return await self._restart(run, plan, count, options, None)

    async def resume(self, run_id: int) -> db.Run:
        """Run exactly the pairs a stopped run lacks; a precision run goes on deciding."""
        run = await self.db.get_run(run_id)
        if run["status"] not in RESUMABLE:
            raise db.Conflict(
                f"run {run_id} is {run['status']}; only interrupted, failed or "
                "cancelled runs can be resumed (a completed run can be extended)"
            )
        precision = run["options"].get("precision")
        # Once extended, a run's count is the user's, no longer the precision loop's.
        if precision is None or "extensions" in run["options"]:
            precision = None
        chosen = analysis.Precision.from_json(precision) if precision is not None else None
        plan = self.snapshot_plan(run)
        return await self._restart(run, plan, run["replications"], run["options"], chosen)

    async def _restart(
        self,
        run: db.Run,
        plan: sim.ScenarioPlan,
        replications: int,
        options: Mapping[str, Any],
        precision: analysis.Precision | None,
    ) -> db.Run:
        """Queue a finished run again and compute every pair up to `replications` it lacks."""
        run_id = run["run_id"]
        await self.runner.wait(run_id)  # a run that has just finished may be winding down
        reopened = await self.db.reopen_run(run_id, replications, options)
        self.launch(reopened, plan, self._procedure(reopened, precision), resumed=True)
        log.info("run %d restarted with %d replications per scenario", run_id, replications)
        return reopened

    async def replay(self, run_id: int, scenario_id: int, replication: int) -> dict[str, Any]:
        """Recompute one replication now and compare it with the stored row."""
        run = await self.db.get_run(run_id)
        if scenario_id not in run["scenario_ids"]:
            raise db.NotFound(f"scenario {scenario_id} is not part of run {run_id}")
        if not 1 <= replication <= run["replications"]:
            raise db.NotFound(f"run {run_id} has replications 1..{run['replications']}")
        plan = self.snapshot_plan(run, [scenario_id])
        stored = await self.db.run_result(run_id, scenario_id, replication)
        rows = await self.runner.backend.submit(
            chunks.simulate_chunk, plan, run["seed"], [(scenario_id, replication)]
        )
        recomputed = json.loads(json.dumps(rows[0]))  # the form a stored row comes back in
        entry = run["snapshot"][str(scenario_id)]
        return {
            "run_id": run_id,
            "scenario_id": scenario_id,
            "replication": replication,
            "seed": run["seed"],
            "model": entry["model"],
            "model_version": entry["model_version"],
            "params": entry["params"],
            "stored": stored,
            "recomputed": recomputed,
            "matches": None if stored is None else stored == recomputed,
            "differences": [] if stored is None else differences(dict(stored), recomputed),
        }

    def snapshot_plan(self, run: db.Run, scenario_ids: list[int] | None = None) -> sim.ScenarioPlan:
        """The models and params a run was started with; Conflict if a model has changed."""
        plan: sim.ScenarioPlan = {}
        for sid in scenario_ids or run["scenario_ids"]:
            entry = run["snapshot"][str(sid)]
            model = self._models.get(entry["model"])
            if model is None or model.version != entry["model_version"]:
                now = "not installed" if model is None else f"installed at version {model.version}"
                raise db.Conflict(
                    f"run {run['run_id']} used model {entry['model']} {entry['model_version']}, "
                    f"which is {now}; its replications cannot be reproduced"
                )
            plan[sid] = (model, entry["params"])
        return plan

    def directions(self, run: db.Run) -> dict[int, dict[str, analysis.Direction]]:
        """Each scenario's KPIs and whether lower or higher is better, from its model."""
        out = {}
        for sid in run["scenario_ids"]:
            name = run["snapshot"][str(sid)]["model"]
            model = self._models.get(name)
            if model is None:
                raise db.Conflict(
                    f"scenario {sid} of run {run['run_id']} used model {name!r}, "
                    "which is not installed"
                )
            out[sid] = {k["name"]: k["direction"] for k in model.kpis}
        return out

    async def _scenarios(self, requested: list[int] | None) -> list[int]:
        known = await self.db.scenario_names()
        if requested is None:
            if not known:
                raise db.Conflict("there are no scenarios to run; create one first")
            return sorted(known)
        errors = [
            FieldError(field=f"scenario_ids[{i}]", message=f"scenario {sid} does not exist")
            for i, sid in enumerate(requested)
            if sid not in known
        ]
        if errors:
            raise InvalidInput(errors)
        return requested

    async def _plan(self, scenario_ids: list[int]) -> tuple[sim.ScenarioPlan, dict[str, Any]]:
        """Each scenario's model and complete params, read in one query."""
        scenarios = {s["scenario_id"]: s for s in await self.db.list_scenarios()}
        plan: sim.ScenarioPlan = {}
        snapshot: dict[str, Any] = {}
        for i, sid in enumerate(scenario_ids):
            scenario = scenarios.get(sid)
            if scenario is None:  # deleted since it was checked
                raise db.NotFound(f"scenario {sid} does not exist")
            model = self._models.get(scenario["model"])
            if model is None:
                raise db.Conflict(
                    f"scenario {sid} uses model {scenario['model']!r}, which is not installed"
                )
            params = self._params.complete(model.name, scenario["params"], f"scenario_ids[{i}]")
            plan[sid] = (model, params)
            snapshot[str(sid)] = {
                "scenario_name": scenario["scenario_name"],
                "model": model.name,
                "model_version": model.version,
                "params": params,
            }
        return plan, snapshot

    def _precision(self, request: RunRequest, plan: sim.ScenarioPlan) -> analysis.Precision | None:
        if request.precision is None:
            return None
        asked = dict(request.precision)
        if request.replications is not None:
            # Read as the first batch; an interval needs at least two replications.
            asked.setdefault("min_replications", max(2, request.replications))
        outputs = {sid: model.outputs for sid, (model, _) in plan.items()}
        return analysis.parse_precision(asked, outputs)


def differences(stored: Mapping[str, Any], recomputed: Mapping[str, Any]) -> list[str]:
    """The fields of two rows whose values differ, metrics named `metrics.<key>`."""
    flat = [
        {**{k: v for k, v in row.items() if k != "metrics"}, **_prefixed(row.get("metrics", {}))}
        for row in (stored, recomputed)
    ]
    return sorted(k for k in flat[0].keys() | flat[1].keys() if flat[0].get(k) != flat[1].get(k))


def _prefixed(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {f"metrics.{k}": v for k, v in metrics.items()}
