"""Storage: `Database`, the one aiosqlite connection, and the SQL of scenarios, runs, results.

`Database` is the entry point every caller uses; it is built from parts named for what
they hold: `db_connection` (the connection's plumbing, errors and row types),
`db_schema` (the schema texts and the file identity check), `db_stats` (stored KPI
moments) and `db_exports` (a run's rows read in batches). Opening a file and its
migrations, scenarios, runs and the storing of results are here. The experiment
tables' statements live in `experiment_store`, on the same connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Self, cast

from . import moments
from .db_connection import (
    ACTIVE,
    BUSY_TIMEOUT_MS,
    INGESTED,
    KPIS,
    Conflict,
    Coverage,
    DbError,
    InitialScenarios,
    InvalidRows,
    MetricForm,
    NotFound,
    ResultRow,
    Run,
    Scenario,
    ScenarioStats,
    UnusableDatabase,
    _replications_once,
    _result,
    _result_tuples,
    _run,
    _scenario,
    chunk_inserts,
    config_key,
    connect,
    dumps_json,
    kpi_values,
    utcnow,
)
from .db_exports import (
    ADD_METRIC_KEYS,
    EXPORT_BATCH_ROWS,
    ExportReads,
    export_safe_key,
    metric_key_rows,
)
from .db_schema import (
    _DROPPED_INDEXES,
    _EXPERIMENT_SCHEMA,
    _SCHEMA,
    _SCHEMA_2,
    _SCHEMA_3,
    APPLICATION_ID,
    SCHEMA_VERSION,
    _unusable,
    check_identity,
)
from .db_stats import (
    MERGE_STATS,
    STATS_BATCH_ROWS,
    Samples,
    collect_samples,
    moments_of_samples,
    stats_of_rows,
    stats_rows,
)
from .jsontext import MetricKinds, add_kinds
from .moments import Moments as Moments

# What callers import from here; the storage layer's other modules are its parts.
__all__ = [
    "ACTIVE",
    "APPLICATION_ID",
    "BUSY_TIMEOUT_MS",
    "EXACT_FINISH_ROWS",
    "EXPORT_BATCH_ROWS",
    "INGESTED",
    "KPIS",
    "SCHEMA_VERSION",
    "STATS_BATCH_ROWS",
    "_SCHEMA",
    "_SCHEMA_2",
    "Conflict",
    "Coverage",
    "Database",
    "DbError",
    "InitialScenarios",
    "InvalidRows",
    "MetricForm",
    "Moments",
    "NotFound",
    "ResultRow",
    "Run",
    "Samples",
    "Scenario",
    "ScenarioStats",
    "UnusableDatabase",
    "collect_samples",
    "config_key",
    "dumps_json",
    "export_safe_key",
    "kpi_values",
    "moments_of_samples",
    "stats_of_rows",
    "utcnow",
]

# A finished run of at most this many rows gets the exact two-pass moments (about 0.1 s).
EXACT_FINISH_ROWS = 10_000


class Database(ExportReads):
    """The service's single SQLite connection; every method is one short transaction."""

    @classmethod
    async def open(cls, path: str | Path, initial: InitialScenarios = ()) -> Self:
        """Open (or create) simsvc's database; UnusableDatabase says why it cannot be used.

        A file made by another program is refused before anything is written to it.
        """
        conn = connect(str(path), isolation_level=None)
        try:
            await conn  # its thread opens the file
        except sqlite3.Error as exc:
            raise UnusableDatabase(_unusable(path, exc)) from None
        conn.row_factory = sqlite3.Row
        in_memory = str(path) in (":memory:", "")
        db = cls(conn, None if in_memory else str(path))
        try:
            await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await check_identity(conn, path)
            await db._configure(in_memory)
            await db._migrate(initial)
        except sqlite3.Error as exc:
            await conn.close()
            raise UnusableDatabase(_unusable(path, exc)) from None
        except BaseException:
            await conn.close()
            raise
        return db

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()

    async def _configure(self, in_memory: bool) -> None:
        if not in_memory:
            await self._conn.execute("PRAGMA journal_mode=WAL")
        await self._conn.execute("PRAGMA synchronous=NORMAL")
        await self._conn.execute("PRAGMA foreign_keys=ON")

    async def _migrate(self, initial: InitialScenarios) -> None:
        async with self._transaction() as conn:
            version = await self._scalar("PRAGMA user_version")
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"database schema {version} is newer than {SCHEMA_VERSION}")
            if version < 1:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        await conn.execute(statement)
                now = utcnow()
                await conn.executemany(
                    "INSERT INTO scenarios (scenario_name, model, params, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(n, m, dumps_json(p), now, now) for n, m, p in initial],
                )
            if version < 2:
                for statement in _SCHEMA_2.split(";"):
                    if statement.strip():
                        await conn.execute(statement)
                await self._backfill_2()
            if version < 3:
                for statement in _SCHEMA_3.split(";"):
                    if statement.strip():
                        await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            await conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            for statement in _EXPERIMENT_SCHEMA.split(";"):
                if statement.strip():
                    await conn.execute(statement)
            await conn.execute(_DROPPED_INDEXES)

    async def _backfill_2(self) -> None:
        """Version 2 on a database with results: keys of ingested rows, every third moment.

        Ingested rows are taken to match their scenario's current params; a replication
        ingested more than once counts once, as its latest row.
        """
        if not await self._scalar("SELECT 1 FROM results LIMIT 1"):
            return
        async with self._conn.execute("SELECT DISTINCT run_id FROM results") as cursor:
            run_ids = [int(r[0]) for r in await cursor.fetchall() if r[0] is not None]
        for run_id in run_ids:
            await self._conn.execute("DELETE FROM kpi_stats WHERE run_key = ?", (run_id,))
            await self._write_stats(run_id, await self._run_stats_unlocked(run_id))
        await self._conn.execute("DELETE FROM kpi_stats WHERE run_key = ?", (INGESTED,))
        for sid, key in (await self._scenario_keys_unlocked()).items():
            await self._conn.execute(
                "UPDATE results SET config = ? WHERE run_id IS NULL AND scenario_id = ?", (key, sid)
            )
            await self._recompute_ingested(sid, key)

    # -- scenarios --------------------------------------------------------------------

    async def list_scenarios(self) -> list[Scenario]:
        rows = await self._all("SELECT * FROM scenarios ORDER BY scenario_id")
        return [_scenario(r) for r in rows]

    async def get_scenario(self, scenario_id: int) -> Scenario:
        row = await self._one(
            "SELECT * FROM scenarios WHERE scenario_id = ?",
            (scenario_id,),
            f"scenario {scenario_id} does not exist",
        )
        return _scenario(row)

    async def create_scenario(
        self, name: str, model: str, params: Mapping[str, Any], limit: int | None = None
    ) -> Scenario:
        now = utcnow()
        async with self._transaction() as conn:
            if limit is not None and await self._scalar("SELECT count(*) FROM scenarios") >= limit:
                raise Conflict(f"the limit of {limit} scenarios is reached; delete one first")
            try:
                cursor = await conn.execute(
                    "INSERT INTO scenarios (scenario_name, model, params, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (name, model, dumps_json(params), now, now),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"a scenario named {name!r} already exists") from exc
            scenario_id = cursor.lastrowid
        assert scenario_id is not None
        return await self.get_scenario(scenario_id)

    async def update_scenario(
        self, scenario_id: int, name: str, model: str, params: Mapping[str, Any]
    ) -> Scenario:
        """Rename or change a scenario; its pooled ingested moments follow the new params."""
        async with self._transaction() as conn:
            old = (await self._scenario_rows_unlocked()).get(scenario_id)
            key = config_key(model, params)
            if old is not None and old[2] != key:
                await self._recompute_ingested(scenario_id, key)
            try:
                cursor = await conn.execute(
                    "UPDATE scenarios SET scenario_name = ?, model = ?, params = ?, updated_at = ?"
                    " WHERE scenario_id = ?",
                    (name, model, dumps_json(params), utcnow(), scenario_id),
                )
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"a scenario named {name!r} already exists") from exc
            if cursor.rowcount == 0:
                raise NotFound(f"scenario {scenario_id} does not exist")
            self.generation += 1
        return await self.get_scenario(scenario_id)

    async def delete_scenario(self, scenario_id: int) -> None:
        async with self._transaction() as conn:
            # A (run, scenario) has moments exactly when it has rows: both are written
            # (and an ingested scenario's recomputed) in one transaction.
            if await self._scalar(
                "SELECT 1 FROM kpi_stats WHERE scenario_id = ? LIMIT 1", (scenario_id,)
            ):
                raise Conflict(
                    f"scenario {scenario_id} has stored results; deleting it would orphan them"
                )
            for run in await self._active_runs_unlocked():
                if scenario_id in run["scenario_ids"]:
                    raise Conflict(f"scenario {scenario_id} is used by run {run['run_id']}")
            cursor = await conn.execute(
                "DELETE FROM scenarios WHERE scenario_id = ?", (scenario_id,)
            )
            if cursor.rowcount == 0:
                raise NotFound(f"scenario {scenario_id} does not exist")

    # -- runs -------------------------------------------------------------------------

    async def create_run(
        self,
        scenario_ids: Sequence[int],
        replications: int,
        seed: int,
        pace_s: float,
        options: Mapping[str, Any],
        snapshot: Mapping[str, Any],
    ) -> Run:
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO runs (status, scenario_ids, replications, seed, pace_s, options,"
                " snapshot, total, created_at) VALUES ('queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    dumps_json(list(scenario_ids)),
                    replications,
                    seed,
                    pace_s,
                    dumps_json(options),
                    dumps_json(snapshot),
                    len(scenario_ids) * replications,
                    utcnow(),
                ),
            )
            run_id = cursor.lastrowid
        assert run_id is not None
        return await self.get_run(run_id)

    async def get_run(self, run_id: int) -> Run:
        row = await self._one(
            "SELECT * FROM runs WHERE run_id = ?", (run_id,), f"run {run_id} does not exist"
        )
        return _run(row)

    async def list_runs(self, limit: int = 1000) -> list[Run]:
        rows = await self._all("SELECT * FROM runs ORDER BY run_id DESC LIMIT ?", (limit,))
        return [_run(r) for r in rows]

    async def _active_runs_unlocked(self) -> list[Run]:
        async with self._conn.execute(
            "SELECT * FROM runs WHERE status IN ('queued', 'running')"
        ) as cursor:
            return [_run(r) for r in await cursor.fetchall()]

    async def mark_started(self, run_id: int) -> Run:
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE runs SET status = 'running', started_at = coalesce(started_at, ?),"
                " finished_at = NULL, error = NULL WHERE run_id = ?",
                (utcnow(), run_id),
            )
        return await self.get_run(run_id)

    async def finish_run(
        self, run_id: int, status: str, error: str | None = None, stopped_because: str | None = None
    ) -> Run:
        """Record a run's end; its moments then cover every row it stored.

        Each chunk's moments were merged into `kpi_stats` in the transaction that stored
        its rows, so they cover exactly the stored rows, whatever stopped the run; merged
        pairwise (Chan et al.), they agree with a two-pass over the rows to about 1e-12
        relative, but their last bits follow where the chunks were cut. A run of at most
        `EXACT_FINISH_ROWS` rows is recomputed with the exact two-pass, so that the same
        seed gives bit-identical aggregates; a larger one would cost the service more to
        read again than to store.
        """
        async with self._transaction() as conn:
            returned = await conn.execute_fetchall(
                "UPDATE runs SET status = ?, finished_at = ?, error = ?, stopped_because = ?"
                " WHERE run_id = ? RETURNING done",
                (status, utcnow(), error, stopped_because, run_id),
            )
            if any(int(row[0]) <= EXACT_FINISH_ROWS for row in returned):
                stats = await self._run_stats_unlocked(run_id)
                await conn.execute("DELETE FROM kpi_stats WHERE run_key = ?", (run_id,))
                await self._write_stats(run_id, stats)
            self.generation += 1
        return await self.get_run(run_id)

    async def update_run_plan(
        self, run_id: int, replications: int, options: Mapping[str, Any]
    ) -> Run:
        """Set a run's target replication count (extend, precision) and its options."""
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE runs SET replications = ?, options = ?,"
                " total = ? * json_array_length(scenario_ids) WHERE run_id = ?",
                (replications, dumps_json(options), replications, run_id),
            )
        return await self.get_run(run_id)

    async def reopen_run(self, run_id: int, replications: int, options: Mapping[str, Any]) -> Run:
        """Queue a finished run again with a new target count (extend, resume).

        The status check and the change are one transaction, so two requests cannot both
        reopen the same run.
        """
        async with self._transaction() as conn:
            cursor = await conn.execute(
                "UPDATE runs SET status = 'queued', replications = ?, options = ?,"
                " total = ? * json_array_length(scenario_ids), finished_at = NULL, error = NULL,"
                " stopped_because = NULL WHERE run_id = ? AND status NOT IN ('queued', 'running')",
                (replications, dumps_json(options), replications, run_id),
            )
            reopened = cursor.rowcount == 1
        run = await self.get_run(run_id)
        if not reopened:
            raise Conflict(f"run {run_id} is {run['status']}; wait until it has finished")
        return run

    async def interrupt_active_runs(self) -> list[int]:
        """Mark runs left queued or running (by a crash or a shutdown) as interrupted."""
        return await self.interrupt_active("runs", "run_id", "run")

    # -- results ----------------------------------------------------------------------

    async def store_results(self, run_id: int, rows: Sequence[ResultRow]) -> int:
        """Commit one batch of a run's replications; returns the run's new done count."""
        async with self._transaction() as conn:
            await conn.executemany(
                "INSERT INTO results (run_id, scenario_id, replication, seed, total_labor_costs,"
                " ontime_delivery_rate, metrics, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                _result_tuples(run_id, rows),
            )
            keys: MetricKinds = {}
            for row in rows:
                add_kinds(keys, row["metrics"])
            await self._add_metric_keys(run_id, keys)
            await self._add_stats(run_id, stats_of_rows(rows))
            await conn.execute(
                "UPDATE runs SET done = done + ? WHERE run_id = ?", (len(rows), run_id)
            )
            done = int(await self._scalar("SELECT done FROM runs WHERE run_id = ?", (run_id,)))
            self.generation += 1
        return done

    async def store_chunk(
        self,
        run_id: int,
        rows: Sequence[Sequence[Any]],
        stats: moments.UnitMoments,
        keys: Mapping[str, Iterable[str]],
    ) -> tuple[int, int]:
        """Commit a chunk computed elsewhere; returns the run's new done count and its total.

        `rows` are (scenario_id, replication, seed, total_labor_costs,
        ontime_delivery_rate, metrics JSON text), bound to the inserts as they are, a
        block of rows to a statement (`chunk_inserts`), `stats` the chunk's moments and
        `keys` its metrics keys with their JSON types: no bytecode runs per row. One
        transaction, run whole on aiosqlite's thread (`_write_chunk`): a chunk and its
        keys are stored whole or not at all, and the event loop wakes once for it. A
        caller cancelled meanwhile leaves it to finish there, committed or rolled back,
        before the next statement.
        """
        write = partial(
            _write_chunk,
            run_id,
            utcnow(),
            rows,
            stats_rows(run_id, stats),
            metric_key_rows(run_id, keys),
        )
        async with self._lock:
            try:
                return await self._conn.run(write)
            finally:
                self.generation += 1  # stored, or perhaps stored if cancelled

    async def ingest_results(self, rows: Sequence[ResultRow]) -> int:
        """Store rows from an outside simulator, all or nothing."""
        async with self._transaction() as conn:
            async with conn.execute("SELECT scenario_id FROM scenarios") as cursor:
                known = {int(r[0]) for r in await cursor.fetchall()}
            errors = [
                {
                    "field": f"[{i}].scenario_id",
                    "message": f"scenario {r['scenario_id']} does not exist",
                }
                for i, r in enumerate(rows)
                if r["scenario_id"] not in known
            ]
            if errors:
                raise InvalidRows(errors)
            keys = await self._scenario_keys_unlocked()
            await self._refuse_ingested_twice(rows, keys)
            await conn.executemany(
                "INSERT INTO results (run_id, scenario_id, replication, seed, total_labor_costs,"
                " ontime_delivery_rate, metrics, created_at, config)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _result_tuples(None, rows, keys),
            )
            await self._add_stats(INGESTED, stats_of_rows(rows))
            self.generation += 1
        return len(rows)

    async def _scenario_keys_unlocked(self) -> dict[int, str]:
        return {sid: key for sid, (_, _, key) in (await self._scenario_rows_unlocked()).items()}

    async def _refuse_ingested_twice(
        self, rows: Sequence[ResultRow], keys: Mapping[int, str]
    ) -> None:
        """422 for a replication named twice in one request, 409 for one already stored
        under the scenario's current params: a replication is one draw, counted once."""
        by_scenario = _replications_once(rows)
        for sid, reps in sorted(by_scenario.items()):
            async with self._conn.execute(
                "SELECT replication FROM results WHERE run_id IS NULL AND scenario_id = ?"
                " AND config = ? AND replication BETWEEN ? AND ?",
                (sid, keys[sid], min(reps), max(reps)),
            ) as cursor:
                stored = {int(r[0]) for r in await cursor.fetchall()} & set(reps)
            if stored:
                raise Conflict(
                    f"scenario {sid} already has ingested replication {min(stored)} under its "
                    f"current params ({len(stored)} of this request's rows are stored already); "
                    "nothing was stored"
                )

    async def _recompute_ingested(self, scenario_id: int, key: str) -> None:
        """The pooled moments of a scenario's ingested rows sent under `key`, from the rows."""
        stats = await self._stats_of_query_unlocked(
            "result_id IN (SELECT max(result_id) FROM results WHERE run_id IS NULL"
            " AND scenario_id = ? AND config = ? GROUP BY replication) ORDER BY replication",
            (scenario_id, key),
        )
        await self._conn.execute(
            "DELETE FROM kpi_stats WHERE run_key = ? AND scenario_id = ?", (INGESTED, scenario_id)
        )
        await self._write_stats(INGESTED, stats)

    async def ingested_results(self, scenario_id: int) -> list[ResultRow]:
        """The rows POST /api/results stored for a scenario, by replication."""
        await self.get_scenario(scenario_id)
        rows = await self._all(
            "SELECT scenario_id, replication, seed, total_labor_costs, ontime_delivery_rate,"
            " metrics FROM results WHERE run_id IS NULL AND scenario_id = ?"
            " ORDER BY replication, result_id",
            (scenario_id,),
        )
        return [_result(r) for r in rows]

    async def delete_ingested(self, scenario_id: int, replication: int | None = None) -> int:
        """Remove a scenario's ingested rows (or one replication); the number removed.

        The scenario's ingested moments are recomputed exactly from the rows left.
        """
        where, args = "run_id IS NULL AND scenario_id = ?", [scenario_id]
        if replication is not None:
            where, args = f"{where} AND replication = ?", [scenario_id, replication]
        async with self._transaction() as conn:
            if not await self._scalar(
                "SELECT 1 FROM scenarios WHERE scenario_id = ?", (scenario_id,)
            ):
                raise NotFound(f"scenario {scenario_id} does not exist")
            deleted = (await conn.execute(f"DELETE FROM results WHERE {where}", args)).rowcount
            if deleted:
                key = (await self._scenario_keys_unlocked())[scenario_id]
                await self._recompute_ingested(scenario_id, key)
                self.generation += 1
        return deleted

    async def run_results(self, run_id: int) -> list[ResultRow]:
        await self.get_run(run_id)
        async with self._lock:
            return await self._run_rows_unlocked(run_id)

    async def _run_rows_unlocked(self, run_id: int) -> list[ResultRow]:
        async with self._conn.execute(
            "SELECT scenario_id, replication, seed, total_labor_costs, ontime_delivery_rate,"
            " metrics FROM results WHERE run_id = ? ORDER BY scenario_id, replication",
            (run_id,),
        ) as cursor:
            return [_result(r) for r in await cursor.fetchall()]

    async def run_kpi_values(self, run_id: int, kpi: str) -> list[tuple[int, int, float]]:
        """One numeric KPI of every stored replication of a run: (scenario_id, replication,
        value). Reads that one value, as plain tuples, so a selection over 10^5 rows stays
        cheap."""
        args: tuple[Any, ...] = (run_id,)
        if kpi in KPIS:
            sql = f"SELECT scenario_id, replication, {kpi} FROM results WHERE run_id = ?"
        elif kpi.isidentifier():
            sql = (
                "SELECT scenario_id, replication, json_extract(metrics, ?2) FROM results"
                " WHERE run_id = ?1 AND json_type(metrics, ?2) IN ('integer', 'real')"
            )
            args = (run_id, f'$."{kpi}"')
        else:
            return [
                (r["scenario_id"], r["replication"], kpi_values(r)[kpi])
                for r in await self.run_results(run_id)
                if kpi in kpi_values(r)
            ]
        async with self._lock, self._conn.execute(sql, args) as cursor:
            cursor.row_factory = None  # tuples: no Row object per replication
            rows = await cursor.fetchall()
        return cast(list[tuple[int, int, float]], rows)

    async def run_result(self, run_id: int, scenario_id: int, replication: int) -> ResultRow | None:
        """One stored replication of a run, or None when it is not stored."""
        rows = await self._all(
            "SELECT scenario_id, replication, seed, total_labor_costs, ontime_delivery_rate,"
            " metrics FROM results WHERE run_id = ? AND scenario_id = ? AND replication = ?",
            (run_id, scenario_id, replication),
        )
        return _result(rows[0]) if rows else None


def _write_chunk(
    run_id: int,
    now: str,
    rows: Sequence[Sequence[Any]],
    stats: Sequence[tuple[Any, ...]],
    keys: Sequence[tuple[int, str, str]],
    conn: sqlite3.Connection,
) -> tuple[int, int]:
    """`Database.store_chunk`'s transaction, on aiosqlite's thread; the run's done and total."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for insert, parameters in chunk_inserts(run_id, now, rows):
            conn.executemany(insert, parameters)
        if keys:
            conn.executemany(ADD_METRIC_KEYS, keys)
        conn.executemany(MERGE_STATS, stats)
        (done, total), *_ = conn.execute(
            "UPDATE runs SET done = done + ? WHERE run_id = ? RETURNING done, total",
            (len(rows), run_id),
        ).fetchall()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return int(done), int(total)
