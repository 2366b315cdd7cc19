"""Runs beyond their first start: the precision loop, extend, resume and replay.

This is the glue the web layer asks for when a run's plan changes after it was created.
It reads and writes through `db`, hands work to the `sim` runner, and judges precision
with `analysis`; it knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np

from . import __version__, analysis, db, sim

log = logging.getLogger(__name__)

NextPairs = Callable[[sim.RunJob], Awaitable[list[tuple[int, int]]]]
RESUMABLE = ("interrupted", "failed", "cancelled")


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


def _report(
    rows: list[db.ResultRow], scenario_ids: list[int], precision: analysis.Precision
) -> list[analysis.TargetCheck]:
    # Off the event loop: a long run has many rows to look through.
    return analysis.precision_report(analysis.samples_of(rows), scenario_ids, precision)


def differences(stored: Mapping[str, Any], recomputed: Mapping[str, Any]) -> list[str]:
    """The fields of two rows whose values differ, metrics named `metrics.<key>`."""
    flat = [
        {**{k: v for k, v in row.items() if k != "metrics"}, **_prefixed(row.get("metrics", {}))}
        for row in (stored, recomputed)
    ]
    return sorted(k for k in flat[0].keys() | flat[1].keys() if flat[0].get(k) != flat[1].get(k))


def _prefixed(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {f"metrics.{k}": v for k, v in metrics.items()}


class Experiments:
    """Changes to a run's plan, over one database, runner and set of installed models."""

    def __init__(
        self, database: db.Database, runner: sim.Runner, models: Mapping[str, sim.Model]
    ) -> None:
        self._db = database
        self._runner = runner
        self._models = models

    def precision_planner(self, precision: analysis.Precision) -> NextPairs:
        """The runner's `next_pairs` for a precision run: check the targets, plan a batch."""

        async def next_pairs(job: sim.RunJob) -> list[tuple[int, int]]:
            run = await self._db.get_run(job.run_id)
            n, scenario_ids = run["replications"], run["scenario_ids"]
            rows = await self._db.run_results(job.run_id)
            report = await asyncio.to_thread(_report, rows, scenario_ids, precision)
            count, job.stopped_because = analysis.next_count(precision, report, n)
            options = {**run["options"], "precision_report": report}
            await self._db.update_run_plan(job.run_id, count, options)
            log.info("run %d: %d replications per scenario, next %d", job.run_id, n, count)
            return sim.pending_pairs(scenario_ids, range(n + 1, count + 1), set())

        return next_pairs

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

    async def extend(self, run: db.Run, added: int) -> db.Run:
        """Add replications n+1..n+added to every scenario of a finished run."""
        if run["status"] in db.ACTIVE:
            raise db.Conflict(
                f"run {run['run_id']} is {run['status']}; extend it once it has finished"
            )
        extensions = [*run["options"].get("extensions", []), added]
        options = {**run["options"], "extensions": extensions}
        return await self._restart(run, run["replications"] + added, options, None)

    async def resume(self, run: db.Run) -> db.Run:
        """Run exactly the pairs a stopped run lacks; a precision run goes on deciding."""
        if run["status"] not in RESUMABLE:
            raise db.Conflict(
                f"run {run['run_id']} is {run['status']}; only interrupted, failed or "
                "cancelled runs can be resumed (a completed run can be extended)"
            )
        precision = run["options"].get("precision")
        planner = None
        # Once extended, a run's count is the user's, no longer the precision loop's.
        if precision is not None and "extensions" not in run["options"]:
            planner = self.precision_planner(analysis.Precision.from_json(precision))
        return await self._restart(run, run["replications"], run["options"], planner)

    async def _restart(
        self,
        run: db.Run,
        replications: int,
        options: Mapping[str, Any],
        next_pairs: NextPairs | None,
    ) -> db.Run:
        """Queue a finished run again and compute every pair up to `replications` it lacks."""
        run_id = run["run_id"]
        plan = self.snapshot_plan(run)  # refuses before anything is changed
        reopened = await self._db.reopen_run(run_id, replications, options)
        await self._runner.wait(run_id)  # a run that has just finished may be winding down
        stored = await self._db.stored_replications(run_id)
        pairs = sim.pending_pairs(run["scenario_ids"], range(1, replications + 1), stored)
        job = sim.RunJob(run_id, run["seed"], plan, pairs, run["pace_s"], next_pairs=next_pairs)
        self._runner.start(job)
        log.info("run %d restarted: %d replications to compute", run_id, len(pairs))
        return reopened

    async def replay(self, run: db.Run, scenario_id: int, replication: int) -> dict[str, Any]:
        """Recompute one replication now and compare it with the stored row."""
        if scenario_id not in run["scenario_ids"]:
            raise db.NotFound(f"scenario {scenario_id} is not part of run {run['run_id']}")
        if not 1 <= replication <= run["replications"]:
            raise db.NotFound(f"run {run['run_id']} has replications 1..{run['replications']}")
        plan = self.snapshot_plan(run, [scenario_id])
        stored = await self._db.run_result(run["run_id"], scenario_id, replication)
        rows = await self._runner.backend.submit(
            sim.simulate_chunk, plan, run["seed"], [(scenario_id, replication)]
        )
        recomputed = json.loads(json.dumps(rows[0]))  # the form a stored row comes back in
        entry = run["snapshot"][str(scenario_id)]
        return {
            "run_id": run["run_id"],
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
