"""Stored KPI moments: how they are written, recomputed from rows, read and pooled.

Results are committed in batches as replications finish. Alongside the rows, the
running count, mean and sum of squared deviations (Welford/Chan) of every KPI are
kept per (run, scenario), so aggregates cost O(scenarios), not O(rows).
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
from array import array
from collections.abc import Iterable, Mapping, MutableSequence, Sequence
from dataclasses import dataclass
from typing import Any

from . import moments
from .db_connection import (
    INGESTED,
    Connection,
    Coverage,
    ResultRow,
    ScenarioStats,
    _result,
    config_key,
    dumps_json,
    kpi_values,
)
from .moments import Moments as Moments

STATS_BATCH_ROWS = 10_000  # rows read at a time when a run's moments are recomputed

# scenario_id -> kpi -> values
Samples = dict[int, dict[str, MutableSequence[float]]]


def stats_of_rows(rows: Iterable[ResultRow]) -> ScenarioStats:
    return moments.unit_moments((row["scenario_id"], kpi_values(row)) for row in rows)


def collect_samples(samples: Samples, rows: Iterable[sqlite3.Row]) -> None:
    for row in rows:
        per_kpi = samples.setdefault(int(row["scenario_id"]), {})
        for kpi, value in kpi_values(_result(row)).items():
            per_kpi.setdefault(kpi, array("d")).append(value)


def moments_of_samples(samples: Samples) -> ScenarioStats:
    return {
        sid: {kpi: Moments.of(vals) for kpi, vals in per_kpi.items()}
        for sid, per_kpi in samples.items()
    }


def _stored_moments(rows: Iterable[sqlite3.Row]) -> dict[tuple[int, int], dict[str, Moments]]:
    """kpi_stats rows (run_key, scenario_id, kpi, n, mean, m2, m3) by (run_key, scenario)."""
    out: dict[tuple[int, int], dict[str, Moments]] = {}
    for run_key, sid, kpi, n, mean, m2, m3 in rows:
        third = math.nan if m3 is None else m3  # NULL: overflowed, unknown
        out.setdefault((int(run_key), int(sid)), {})[kpi] = Moments(n, mean, m2, third)
    return out


@dataclass(frozen=True, slots=True)
class _PoolRun:
    run_id: int
    seed: int
    replications: int
    complete: bool  # every planned pair stored: each scenario holds exactly 1..replications
    configs: dict[int, tuple[str, str]]


def _holding_every_draw(group: Sequence[_PoolRun]) -> _PoolRun | None:
    """The run of a same-seed group whose replications include every other's, if any.

    A run only stores replications 1..its planned count, so a complete run holds every
    replication of the runs planned no longer than it.
    """
    if len(group) == 1:
        return group[0]
    longest = max(group, key=lambda r: (r.complete, r.replications))
    if longest.complete and all(r.replications <= longest.replications for r in group):
        return longest
    return None


# `Moments.merge` (Chan et al.) written in SQL, term for term: a batch's moments merged
# into the stored ones; the right-hand sides see the row's old values.
MERGE_STATS = (
    "INSERT INTO kpi_stats (run_key, scenario_id, kpi, n, mean, m2, m3)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (run_key, scenario_id, kpi) DO UPDATE SET"
    " n = n + excluded.n,"
    # The weight first: a product of a huge difference and a count would overflow.
    " mean = mean + (excluded.mean - mean) * (excluded.n * 1.0 / (n + excluded.n)),"
    " m2 = m2 + excluded.m2"
    " + (excluded.mean - mean) * (excluded.mean - mean) * n * excluded.n"
    " / (n + excluded.n),"
    " m3 = m3 + excluded.m3"
    " + (excluded.mean - mean) * (excluded.mean - mean) * (excluded.mean - mean)"
    " * n * excluded.n * (n - excluded.n) / ((n + excluded.n) * (n + excluded.n))"
    " + 3.0 * (excluded.mean - mean) * (n * excluded.m2 - excluded.n * m2)"
    " / (n + excluded.n)"
)


def stats_rows(run_key: int, batch: ScenarioStats) -> list[tuple[Any, ...]]:
    """`MERGE_STATS`' parameters: a statement per (scenario, KPI) the batch touches."""
    return [
        (run_key, sid, kpi, m.n, m.mean, m.m2, m.m3)
        for sid, per_kpi in batch.items()
        for kpi, m in per_kpi.items()
    ]


class StatsStore(Connection):
    """The SQL of `kpi_stats`, and moments computed from stored rows."""

    async def _run_stats_unlocked(self, run_id: int) -> ScenarioStats:
        """A run's moments from its rows, off the event loop and without holding every row.

        A run can be 10^5 rows or more: they are read in batches, and only their KPI
        values are kept, as packed doubles, for the exact two-pass moments.
        """
        return await self._stats_of_query_unlocked("run_id = ?", (run_id,))

    async def _stats_of_query_unlocked(self, where: str, args: Sequence[Any]) -> ScenarioStats:
        samples: Samples = {}
        async with self._conn.execute(
            "SELECT scenario_id, replication, seed, total_labor_costs, ontime_delivery_rate,"
            f" metrics FROM results WHERE {where}",
            args,
        ) as cursor:
            while batch := await cursor.fetchmany(STATS_BATCH_ROWS):
                await asyncio.to_thread(collect_samples, samples, batch)
        return await asyncio.to_thread(moments_of_samples, samples)

    async def stored_replications(
        self, run_id: int, scenario_ids: Sequence[int], first: int, last: int
    ) -> set[tuple[int, int]]:
        """The (scenario_id, replication) pairs of replications first..last a run has stored.

        One index seek per scenario: a resumed run asks block by block, never for all.
        """
        rows = await self._all(
            "SELECT scenario_id, replication FROM results WHERE run_id = ?"
            " AND scenario_id IN (SELECT value FROM json_each(?))"
            " AND replication BETWEEN ? AND ?",
            (run_id, dumps_json(list(scenario_ids)), first, last),
        )
        return {(int(r[0]), int(r[1])) for r in rows}

    async def scenario_stats(self, run_id: int) -> ScenarioStats:
        """Per-scenario moments of every KPI over one run."""
        rows = await self._all(
            "SELECT run_key, scenario_id, kpi, n, mean, m2, m3 FROM kpi_stats WHERE run_key = ?",
            (run_id,),
        )
        return {sid: per_kpi for (_, sid), per_kpi in _stored_moments(rows).items()}

    async def pooled_stats(self) -> tuple[ScenarioStats, dict[int, Coverage]]:
        """Per-scenario moments over every stored result with the scenario's current params.

        A run counts for a scenario when its snapshot holds the scenario's current model
        and params, at the model version of the newest such run. Runs with the same seed
        share draws `(seed, r)`: of such a group the one run that holds all the group's
        replications stands for it (O(1) from stored moments); only a group without such
        a run (one cancelled with holes, one still running) is deduplicated from its rows.
        Ingested rows count when sent under the current params, each replication once.
        """
        async with self._lock:
            scenarios = await self._scenario_rows_unlocked()
            runs = await self._runs_for_pool_unlocked()
            async with self._conn.execute(
                "SELECT run_key, scenario_id, kpi, n, mean, m2, m3 FROM kpi_stats"
            ) as cursor:
                stored = _stored_moments(await cursor.fetchall())
            stats: ScenarioStats = {}
            coverage: dict[int, Coverage] = {}
            for sid, (model, params, key) in scenarios.items():
                having = [r for r in runs if (r.run_id, sid) in stored and sid in r.configs]
                pooled, cover = await self._pool_unlocked(sid, key, having, stored)
                cover["model"], cover["params"] = model, params
                if pooled:
                    stats[sid], coverage[sid] = pooled, cover
            return stats, coverage

    async def _pool_unlocked(
        self,
        sid: int,
        key: str,
        runs: Sequence[_PoolRun],
        stored: Mapping[tuple[int, int], dict[str, Moments]],
    ) -> tuple[dict[str, Moments], Coverage]:
        matching = [r for r in runs if r.configs[sid][0] == key]
        version = matching[-1].configs[sid][1] if matching else None
        matching = [r for r in matching if r.configs[sid][1] == version]
        by_seed: dict[int, list[_PoolRun]] = {}
        for run in matching:
            by_seed.setdefault(run.seed, []).append(run)
        parts: list[dict[str, Moments]] = []
        for group in by_seed.values():
            holder = _holding_every_draw(group)
            if holder is not None:
                parts.append(stored[(holder.run_id, sid)])
            else:
                parts.append(await self._distinct_draws_unlocked(sid, [r.run_id for r in group]))
        ingested = stored.get((INGESTED, sid), {})
        pooled: dict[str, Moments] = {}
        for part in [*parts, ingested]:
            for kpi, m in part.items():
                pooled[kpi] = pooled.get(kpi, Moments(0, 0.0, 0.0)).merge(m)
        taken = {r.run_id for r in matching}
        cover = Coverage(
            model="",
            params={},
            run_ids=sorted(taken),
            excluded_run_ids=sorted(r.run_id for r in runs if r.run_id not in taken),
            ingested_replications=ingested["total_labor_costs"].n if ingested else 0,
        )
        return pooled, cover

    async def _distinct_draws_unlocked(
        self, sid: int, run_ids: Sequence[int]
    ) -> dict[str, Moments]:
        """Moments over the distinct replications of runs that share a seed, from their rows."""
        marks = ", ".join("?" * len(run_ids))
        stats = await self._stats_of_query_unlocked(
            f"result_id IN (SELECT min(result_id) FROM results WHERE scenario_id = ?"
            f" AND run_id IN ({marks}) GROUP BY replication) ORDER BY replication",
            (sid, *run_ids),
        )
        return stats.get(sid, {})

    async def _scenario_rows_unlocked(self) -> dict[int, tuple[str, dict[str, Any], str]]:
        async with self._conn.execute("SELECT scenario_id, model, params FROM scenarios") as cur:
            rows = await cur.fetchall()
        out = {}
        for sid, model, text in rows:
            params = json.loads(text)
            out[int(sid)] = (str(model), params, config_key(model, params))
        return out

    async def _runs_for_pool_unlocked(self) -> list[_PoolRun]:
        """Every run with its per-scenario config keys; a snapshot is parsed once per run."""
        async with self._conn.execute(
            "SELECT run_id, seed, replications, done = total,"
            " CASE WHEN run_id > ? THEN snapshot END FROM runs ORDER BY run_id",
            (self._configs_seen,),
        ) as cursor:
            rows = await cursor.fetchall()
        out = []
        for run_id, seed, replications, complete, snapshot in rows:
            if snapshot is not None:
                self._run_configs[run_id] = {
                    int(sid): (config_key(e["model"], e["params"]), str(e.get("model_version")))
                    for sid, e in json.loads(snapshot).items()
                }
                self._configs_seen = max(self._configs_seen, run_id)
            configs = self._run_configs.get(run_id, {})
            out.append(_PoolRun(run_id, seed, replications, bool(complete), configs))
        return out

    async def scenario_names(self) -> dict[int, str]:
        rows = await self._all("SELECT scenario_id, scenario_name FROM scenarios")
        return {int(r[0]): str(r[1]) for r in rows}

    async def _add_stats(self, run_key: int, batch: ScenarioStats) -> None:
        """Merge a batch's moments into the stored ones, inside SQLite.

        The update is `Moments.merge` (Chan et al.) written in SQL, term for term, so a
        batch costs one statement per (scenario, KPI) it touches, however many
        scenarios the run has; the right-hand sides see the row's old values.
        """
        await self._conn.executemany(MERGE_STATS, stats_rows(run_key, batch))

    async def _write_stats(self, run_key: int, stats: ScenarioStats) -> None:
        await self._conn.executemany(
            "INSERT OR REPLACE INTO kpi_stats (run_key, scenario_id, kpi, n, mean, m2, m3)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (run_key, sid, kpi, m.n, m.mean, m.m2, m.m3)
                for sid, per_kpi in stats.items()
                for kpi, m in per_kpi.items()
            ],
        )
