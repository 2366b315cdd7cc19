"""Experiment storage: an experiment, its points, replications and per-point moments.

Every statement runs on the service's one connection, under `db.Database`'s lock and
transactions; the experiment tables are created when `db.Database` opens a file.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TypedDict

from .db import (
    ACTIVE,
    STATS_BATCH_ROWS,
    Conflict,
    Database,
    Moments,
    ResultRow,
    Samples,
    ScenarioStats,
    collect_samples,
    dumps_json,
    moments_of_samples,
    stats_of_rows,
    utcnow,
)


class Experiment(TypedDict):
    experiment_id: int
    kind: str
    status: str
    model: str
    model_version: str
    seed: int
    request: dict[str, Any]
    point_count: int
    replications_used: int
    outcome: dict[str, Any]
    stopped_because: str | None
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None


class ExperimentRow(TypedDict):
    point_id: int
    replication: int
    total_labor_costs: float
    ontime_delivery_rate: float
    metrics: dict[str, Any]


class ExperimentStore:
    """The experiment tables, over the database's connection, lock and transactions."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def create_experiment(
        self,
        kind: str,
        model: str,
        model_version: str,
        seed: int,
        request: Mapping[str, Any],
        points: Sequence[Mapping[str, Any]],
    ) -> Experiment:
        """Store an experiment and its points (ids 1..n, in order), queued."""
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO experiments (kind, status, model, model_version, seed, request,"
                " point_count, created_at) VALUES (?, 'queued', ?, ?, ?, ?, ?, ?)",
                (kind, model, model_version, seed, dumps_json(request), len(points), utcnow()),
            )
            experiment_id = cursor.lastrowid
            assert experiment_id is not None
            await conn.executemany(
                "INSERT INTO experiment_points (experiment_id, point_id, params) VALUES (?, ?, ?)",
                [(experiment_id, i, dumps_json(p)) for i, p in enumerate(points, start=1)],
            )
        return await self.get_experiment(experiment_id)

    async def get_experiment(self, experiment_id: int) -> Experiment:
        row = await self._db.fetch_one(
            "SELECT * FROM experiments WHERE experiment_id = ?",
            (experiment_id,),
            f"experiment {experiment_id} does not exist",
        )
        return _experiment(row)

    async def list_experiments(self, limit: int = 1000) -> list[Experiment]:
        rows = await self._db.fetch_all(
            "SELECT * FROM experiments ORDER BY experiment_id DESC LIMIT ?", (limit,)
        )
        return [_experiment(r) for r in rows]

    async def experiment_points(self, experiment_id: int) -> list[dict[str, Any]]:
        """Every point's params, in point_id order (point i at index i - 1)."""
        rows = await self._db.fetch_all(
            "SELECT params FROM experiment_points WHERE experiment_id = ? ORDER BY point_id",
            (experiment_id,),
        )
        return [json.loads(r[0]) for r in rows]

    async def experiment_point(self, experiment_id: int, point_id: int) -> dict[str, Any]:
        row = await self._db.fetch_one(
            "SELECT params FROM experiment_points WHERE experiment_id = ? AND point_id = ?",
            (experiment_id, point_id),
            f"experiment {experiment_id} has no point {point_id}",
        )
        return dict(json.loads(row[0]))

    async def set_experiment_status(
        self,
        experiment_id: int,
        status: str,
        *,
        error: str | None = None,
        stopped_because: str | None = None,
        outcome: Mapping[str, Any] | None = None,
    ) -> Experiment:
        """Move an experiment to `status`, stamping when it started or finished."""
        now = utcnow()
        finished = now if status not in ACTIVE else None
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE experiments SET status = ?, error = ?, stopped_because = ?,"
                " outcome = coalesce(?, outcome), finished_at = ?,"
                " started_at = CASE WHEN ? = 'running' THEN coalesce(started_at, ?)"
                " ELSE started_at END WHERE experiment_id = ?",
                (
                    status,
                    error,
                    stopped_because,
                    None if outcome is None else dumps_json(outcome),
                    finished,
                    status,
                    now,
                    experiment_id,
                ),
            )
            if finished is not None:
                await self._rewrite_experiment_stats(experiment_id)
        return await self.get_experiment(experiment_id)

    async def set_experiment_outcome(self, experiment_id: int, outcome: Mapping[str, Any]) -> None:
        """The procedure's state so far (feasibility, eliminations), for readers mid-run."""
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE experiments SET outcome = ? WHERE experiment_id = ?",
                (dumps_json(outcome), experiment_id),
            )

    async def reopen_experiment(self, experiment_id: int, resumable: Sequence[str]) -> Experiment:
        """Queue a stopped experiment again; Conflict unless its status is `resumable`."""
        marks = ", ".join("?" for _ in resumable)
        async with self._db.transaction() as conn:
            cursor = await conn.execute(
                "UPDATE experiments SET status = 'queued', finished_at = NULL, error = NULL,"
                f" stopped_because = NULL WHERE experiment_id = ? AND status IN ({marks})",
                (experiment_id, *resumable),
            )
            reopened = cursor.rowcount == 1
        experiment = await self.get_experiment(experiment_id)
        if not reopened:
            raise Conflict(
                f"experiment {experiment_id} is {experiment['status']}; only "
                f"{', '.join(resumable)} experiments can be resumed"
            )
        return experiment

    async def interrupt_active_experiments(self) -> list[int]:
        """Mark experiments left queued or running (by a crash or a shutdown) as interrupted."""
        return await self._db.interrupt_active("experiments", "experiment_id", "experiment")

    async def store_experiment_results(
        self, experiment_id: int, rows: Sequence[ExperimentRow]
    ) -> int:
        """Commit one batch of an experiment's replications; returns its replications used."""
        async with self._db.transaction() as conn:
            await conn.executemany(
                "INSERT INTO experiment_results (experiment_id, point_id, replication,"
                " total_labor_costs, ontime_delivery_rate, metrics) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        experiment_id,
                        r["point_id"],
                        r["replication"],
                        r["total_labor_costs"],
                        r["ontime_delivery_rate"],
                        dumps_json(r["metrics"]),
                    )
                    for r in rows
                ],
            )
            await self._add_point_stats(experiment_id, stats_of_rows(map(as_result_row, rows)))
            await conn.execute(
                "UPDATE experiments SET replications_used = replications_used + ?"
                " WHERE experiment_id = ?",
                (len(rows), experiment_id),
            )
            used = await self._db.scalar_in_transaction(
                "SELECT replications_used FROM experiments WHERE experiment_id = ?",
                (experiment_id,),
            )
        return int(used)

    async def experiment_stored(
        self, experiment_id: int, point_ids: Sequence[int], first: int, last: int
    ) -> set[tuple[int, int]]:
        """The (point_id, replication) pairs of replications first..last already stored."""
        rows = await self._db.fetch_all(
            "SELECT point_id, replication FROM experiment_results WHERE experiment_id = ?"
            " AND replication BETWEEN ? AND ? AND point_id IN (SELECT value FROM json_each(?))",
            (experiment_id, first, last, dumps_json(list(point_ids))),
        )
        return {(int(r[0]), int(r[1])) for r in rows}

    async def experiment_rows(
        self, experiment_id: int, batch_rows: int = STATS_BATCH_ROWS
    ) -> AsyncIterator[list[ExperimentRow]]:
        """Every stored replication, by replication then point, a batch of rows at a time."""
        offset = (0, 0)
        while True:
            rows = await self._db.fetch_all(
                "SELECT point_id, replication, total_labor_costs, ontime_delivery_rate, metrics"
                " FROM experiment_results WHERE experiment_id = ?"
                " AND (replication, point_id) > (?, ?) ORDER BY replication, point_id LIMIT ?",
                (experiment_id, offset[0], offset[1], batch_rows),
            )
            if not rows:
                return
            yield [_experiment_row(r) for r in rows]
            offset = (int(rows[-1]["replication"]), int(rows[-1]["point_id"]))

    async def experiment_batch(
        self, experiment_id: int, point_ids: Sequence[int], first: int, last: int
    ) -> list[ExperimentRow]:
        """The stored replications first..last of these points."""
        rows = await self._db.fetch_all(
            "SELECT point_id, replication, total_labor_costs, ontime_delivery_rate, metrics"
            " FROM experiment_results WHERE experiment_id = ? AND replication BETWEEN ? AND ?"
            " AND point_id IN (SELECT value FROM json_each(?))",
            (experiment_id, first, last, dumps_json(list(point_ids))),
        )
        return [_experiment_row(r) for r in rows]

    async def add_experiment_points(
        self, experiment_id: int, points: Sequence[Mapping[str, Any]]
    ) -> list[int]:
        """Append points found during an experiment (a search); their new ids."""
        async with self._db.transaction() as conn:
            first = int(
                await self._db.scalar_in_transaction(
                    "SELECT coalesce(max(point_id), 0) + 1 FROM experiment_points"
                    " WHERE experiment_id = ?",
                    (experiment_id,),
                )
            )
            ids = list(range(first, first + len(points)))
            await conn.executemany(
                "INSERT INTO experiment_points (experiment_id, point_id, params) VALUES (?, ?, ?)",
                [(experiment_id, i, dumps_json(p)) for i, p in zip(ids, points, strict=True)],
            )
            await conn.execute(
                "UPDATE experiments SET point_count = point_count + ? WHERE experiment_id = ?",
                (len(points), experiment_id),
            )
        return ids

    async def experiment_stats(self, experiment_id: int) -> ScenarioStats:
        """Per-point moments of every KPI (point_id -> kpi -> moments)."""
        rows = await self._db.fetch_all(
            "SELECT point_id, kpi, n, mean, m2 FROM experiment_stats WHERE experiment_id = ?",
            (experiment_id,),
        )
        stats: ScenarioStats = {}
        for pid, kpi, n, mean, m2 in rows:
            stats.setdefault(int(pid), {})[kpi] = Moments(n, mean, m2)
        return stats

    async def _add_point_stats(self, experiment_id: int, batch: ScenarioStats) -> None:
        """`Database._add_stats`' merge, on the per-point table."""
        await self._db.connection.executemany(
            "INSERT INTO experiment_stats (experiment_id, point_id, kpi, n, mean, m2)"
            " VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (experiment_id, point_id, kpi) DO UPDATE SET"
            " n = n + excluded.n,"
            " mean = mean + (excluded.mean - mean) * excluded.n / (n + excluded.n),"
            " m2 = m2 + excluded.m2"
            " + (excluded.mean - mean) * (excluded.mean - mean) * n * excluded.n"
            " / (n + excluded.n)",
            [
                (experiment_id, pid, kpi, m.n, m.mean, m.m2)
                for pid, per_kpi in batch.items()
                for kpi, m in per_kpi.items()
            ],
        )

    async def _rewrite_experiment_stats(self, experiment_id: int) -> None:
        """Exact two-pass moments from the rows in replication order, whatever the batches."""
        samples: Samples = {}
        async with self._db.connection.execute(
            "SELECT point_id AS scenario_id, replication, NULL AS seed, total_labor_costs,"
            " ontime_delivery_rate, metrics FROM experiment_results WHERE experiment_id = ?"
            " ORDER BY replication, point_id",
            (experiment_id,),
        ) as cursor:
            while batch := await cursor.fetchmany(STATS_BATCH_ROWS):
                await asyncio.to_thread(collect_samples, samples, batch)
        stats = await asyncio.to_thread(moments_of_samples, samples)
        await self._db.connection.execute(
            "DELETE FROM experiment_stats WHERE experiment_id = ?", (experiment_id,)
        )
        await self._db.connection.executemany(
            "INSERT INTO experiment_stats (experiment_id, point_id, kpi, n, mean, m2)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (experiment_id, pid, kpi, m.n, m.mean, m.m2)
                for pid, per_kpi in stats.items()
                for kpi, m in per_kpi.items()
            ],
        )


def _experiment(row: sqlite3.Row) -> Experiment:
    return Experiment(
        experiment_id=row["experiment_id"],
        kind=row["kind"],
        status=row["status"],
        model=row["model"],
        model_version=row["model_version"],
        seed=row["seed"],
        request=json.loads(row["request"]),
        point_count=row["point_count"],
        replications_used=row["replications_used"],
        outcome=json.loads(row["outcome"]),
        stopped_because=row["stopped_because"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _experiment_row(row: sqlite3.Row) -> ExperimentRow:
    return ExperimentRow(
        point_id=row["point_id"],
        replication=row["replication"],
        total_labor_costs=row["total_labor_costs"],
        ontime_delivery_rate=row["ontime_delivery_rate"],
        metrics=json.loads(row["metrics"]),
    )


def as_result_row(row: ExperimentRow) -> ResultRow:
    """An experiment row in the shape the shared statistics code reads (point as scenario)."""
    return ResultRow(
        scenario_id=row["point_id"],
        replication=row["replication"],
        seed=None,
        total_labor_costs=row["total_labor_costs"],
        ontime_delivery_rate=row["ontime_delivery_rate"],
        metrics=row["metrics"],
    )
