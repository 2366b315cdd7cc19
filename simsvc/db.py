"""Storage: the one aiosqlite connection, the schema, and the SQL of scenarios, runs, results.

The experiment tables' statements live in `experiment_store`, on this connection.

Results are committed in batches as replications finish. Alongside the rows, the
running count, mean and sum of squared deviations (Welford/Chan) of every KPI are
kept per (run, scenario), so aggregates cost O(scenarios), not O(rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import re
import sqlite3
from array import array
from collections.abc import AsyncIterator, Iterable, Mapping, MutableSequence, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

import aiosqlite

from . import moments
from .jsontext import MetricKinds, add_kinds
from .moments import Moments as Moments

SCHEMA_VERSION = 3
# PRAGMA application_id of simsvc's files ("SIMS"): other programs' databases stay untouched.
APPLICATION_ID = 0x53494D53
SIMSVC_TABLES = frozenset({"scenarios", "runs", "results", "kpi_stats"})
BUSY_TIMEOUT_MS = 5000
INGESTED = 0  # run key of rows stored by POST /api/results under the scenario's current params
KPIS = ("total_labor_costs", "ontime_delivery_rate")
ACTIVE = ("queued", "running")
STATS_BATCH_ROWS = 10_000  # rows read at a time when a run's moments are recomputed
# A finished run of at most this many rows gets the exact two-pass moments (about 0.1 s).
EXACT_FINISH_ROWS = 10_000
EXPORT_BATCH_ROWS = 5_000  # rows read at a time by an export, under the connection's lock
_LAST_KEY = 2**63 - 1  # past every scenario id and replication

# (scenario_name, model, params) stored when a database is created
InitialScenarios = Sequence[tuple[str, str, Mapping[str, Any]]]

_SCHEMA = """
CREATE TABLE scenarios (
    scenario_id   INTEGER PRIMARY KEY,
    scenario_name TEXT NOT NULL UNIQUE,
    model         TEXT NOT NULL,
    params        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE TABLE runs (
    run_id          INTEGER PRIMARY KEY,
    status          TEXT NOT NULL,
    scenario_ids    TEXT NOT NULL,
    replications    INTEGER NOT NULL,
    seed            INTEGER NOT NULL,
    pace_s          REAL NOT NULL,
    options         TEXT NOT NULL,
    snapshot        TEXT NOT NULL,
    done            INTEGER NOT NULL DEFAULT 0,
    total           INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT,
    error           TEXT,
    stopped_because TEXT
);
CREATE TABLE results (
    result_id            INTEGER PRIMARY KEY,
    run_id               INTEGER REFERENCES runs (run_id),
    scenario_id          INTEGER NOT NULL REFERENCES scenarios (scenario_id),
    replication          INTEGER NOT NULL,
    seed                 INTEGER,
    total_labor_costs    REAL NOT NULL,
    ontime_delivery_rate REAL NOT NULL,
    metrics              TEXT NOT NULL,
    created_at           TEXT NOT NULL,
    UNIQUE (run_id, scenario_id, replication)
);
CREATE TABLE kpi_stats (
    run_key     INTEGER NOT NULL,
    scenario_id INTEGER NOT NULL,
    kpi         TEXT NOT NULL,
    n           INTEGER NOT NULL,
    mean        REAL NOT NULL,
    m2          REAL NOT NULL,
    PRIMARY KEY (run_key, scenario_id, kpi)
) WITHOUT ROWID;
"""

# Version 2: an ingested row records the scenario's model and params it was sent under
# (`config`, see `config_key`), so that the pooled aggregates never mix two settings and
# a replication sent twice is found; moments gain the third central moment (skewness).
_SCHEMA_2 = """
ALTER TABLE results ADD COLUMN config TEXT;
ALTER TABLE kpi_stats ADD COLUMN m3 REAL DEFAULT 0;
CREATE INDEX results_ingested ON results (scenario_id, config, replication) WHERE run_id IS NULL;
"""

# Version 3: each run's metrics keys, with the JSON types their values take, recorded as
# its rows are stored, so that an export's header is read here instead of from every row.
# A run stored before (`metric_keys_known` 0) has its rows scanned by its first export.
_SCHEMA_3 = """
CREATE TABLE run_metric_keys (
    run_id INTEGER NOT NULL REFERENCES runs (run_id),
    key    TEXT NOT NULL,
    kind   TEXT NOT NULL,
    PRIMARY KEY (run_id, key, kind)
) WITHOUT ROWID;
ALTER TABLE runs ADD COLUMN metric_keys_known INTEGER NOT NULL DEFAULT 1;
UPDATE runs SET metric_keys_known = 0;
"""

# An index on results (scenario_id) cost a quarter of storing a row, and no query needs
# it: a scenario's runs are found through the unique index, its ingested rows through
# `results_ingested`, whether it has results at all through `kpi_stats`. Dropped on every
# open, so that a database made with it stores as fast; an older simsvc reads the file
# as before.
_DROPPED_INDEXES = "DROP INDEX IF EXISTS results_by_scenario"

# Experiments over a parameter space. Created on every open if missing, so that a
# database made before they existed gains them without a schema version of its own.
_EXPERIMENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    experiment_id     INTEGER PRIMARY KEY,
    kind              TEXT NOT NULL,
    status            TEXT NOT NULL,
    model             TEXT NOT NULL,
    model_version     TEXT NOT NULL,
    seed              INTEGER NOT NULL,
    request           TEXT NOT NULL,
    point_count       INTEGER NOT NULL,
    replications_used INTEGER NOT NULL DEFAULT 0,
    outcome           TEXT NOT NULL DEFAULT '{}',
    stopped_because   TEXT,
    error             TEXT,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT
);
CREATE TABLE IF NOT EXISTS experiment_points (
    experiment_id INTEGER NOT NULL REFERENCES experiments (experiment_id),
    point_id      INTEGER NOT NULL,
    params        TEXT NOT NULL,
    PRIMARY KEY (experiment_id, point_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS experiment_results (
    experiment_id        INTEGER NOT NULL REFERENCES experiments (experiment_id),
    point_id             INTEGER NOT NULL,
    replication          INTEGER NOT NULL,
    total_labor_costs    REAL NOT NULL,
    ontime_delivery_rate REAL NOT NULL,
    metrics              TEXT NOT NULL,
    PRIMARY KEY (experiment_id, replication, point_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS experiment_stats (
    experiment_id INTEGER NOT NULL,
    point_id      INTEGER NOT NULL,
    kpi           TEXT NOT NULL,
    n             INTEGER NOT NULL,
    mean          REAL NOT NULL,
    m2            REAL NOT NULL,
    PRIMARY KEY (experiment_id, point_id, kpi)
) WITHOUT ROWID;
"""


class DbError(Exception):
    """A request that the stored data refuses."""


class NotFound(DbError):
    """No row with that id."""


class Conflict(DbError):
    """The request conflicts with what is stored."""


class UnusableDatabase(DbError):
    """A file the service cannot or must not use: why, in one line for the operator."""


class InvalidRows(DbError):
    """Rows that refer to things that do not exist; nothing was stored."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors


class Scenario(TypedDict):
    scenario_id: int
    scenario_name: str
    model: str
    params: dict[str, Any]
    created_at: str
    updated_at: str


class Run(TypedDict):
    run_id: int
    status: str
    scenario_ids: list[int]
    replications: int
    seed: int
    pace_s: float
    options: dict[str, Any]
    snapshot: dict[str, Any]
    done: int
    total: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    stopped_because: str | None


class ResultRow(TypedDict):
    scenario_id: int
    replication: int
    seed: int | None
    total_labor_costs: float
    ontime_delivery_rate: float
    metrics: dict[str, Any]


# How an export reads one metrics value: "cell" as a CSV cell, "json" as JSON text (None
# when absent or null), "text" as SQLite's value (strings unquoted), "metrics" the whole
# stored metrics object as JSON text.
MetricForm = Literal["cell", "json", "text", "metrics"]

# scenario_id -> kpi -> moments
ScenarioStats = dict[int, dict[str, Moments]]


class Coverage(TypedDict):
    """What a pooled aggregate holds: the results computed with the scenario's current
    model and params, each draw counted once."""

    model: str
    params: dict[str, Any]
    run_ids: list[int]  # runs whose results it holds
    excluded_run_ids: list[int]  # runs of the scenario with other params or model version
    ingested_replications: int


_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def config_key(model: str, params: Mapping[str, Any]) -> str:
    """A model and its params as a short key, equal when the values are (8 and 8.0 alike)."""
    by_value = {
        k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in params.items()
    }
    text = _CANONICAL.encode({"model": model, "params": by_value})
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def kpi_values(row: ResultRow) -> dict[str, float]:
    """Every numeric KPI of a row: the two headline KPIs and its numeric metrics."""
    return moments.kpi_values(row["total_labor_costs"], row["ontime_delivery_rate"], row["metrics"])


# scenario_id -> kpi -> values
Samples = dict[int, dict[str, MutableSequence[float]]]


def _stats_of_rows(rows: Iterable[ResultRow]) -> ScenarioStats:
    return moments.unit_moments((row["scenario_id"], kpi_values(row)) for row in rows)


def _collect_samples(samples: Samples, rows: Iterable[sqlite3.Row]) -> None:
    for row in rows:
        per_kpi = samples.setdefault(int(row["scenario_id"]), {})
        for kpi, value in kpi_values(_result(row)).items():
            per_kpi.setdefault(kpi, array("d")).append(value)


def _moments_of_samples(samples: Samples) -> ScenarioStats:
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


class Database:
    """The service's single SQLite connection; every method is one short transaction."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.generation = 0  # bumped on every write that changes results
        # run_id -> scenario_id -> (config key, model version); snapshots never change
        self._run_configs: dict[int, dict[int, tuple[str, str]]] = {}
        self._configs_seen = 0

    @classmethod
    async def open(cls, path: str | Path, initial: InitialScenarios = ()) -> Database:
        """Open (or create) simsvc's database; UnusableDatabase says why it cannot be used.

        A file made by another program is refused before anything is written to it.
        """
        try:
            conn = await aiosqlite.connect(str(path), isolation_level=None)
        except sqlite3.Error as exc:
            raise UnusableDatabase(_unusable(path, exc)) from None
        conn.row_factory = sqlite3.Row
        db = cls(conn)
        try:
            await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            await db._check_identity(path)
            await db._configure(str(path) == ":memory:")
            await db._migrate(initial)
        except sqlite3.Error as exc:
            await conn.close()
            raise UnusableDatabase(_unusable(path, exc)) from None
        except BaseException:
            await conn.close()
            raise
        return db

    async def _check_identity(self, path: str | Path) -> None:
        """Refuse a database that is neither empty nor simsvc's, before any write."""
        app_id = await self._scalar("PRAGMA application_id")
        version = await self._scalar("PRAGMA user_version")
        async with self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        ) as cursor:
            tables = {str(r[0]) for r in await cursor.fetchall()}
        ours = app_id == APPLICATION_ID or (
            # made before simsvc stamped its files, or new and empty
            app_id == 0 and (tables >= SIMSVC_TABLES or not tables)
        )
        if not ours:
            listed = ", ".join(sorted(tables)[:5]) or "none"
            raise UnusableDatabase(
                f"{path} is not a simsvc database (application_id {app_id}, tables: {listed});"
                " it was left untouched: give --db a new file or a simsvc database"
            )
        if version > SCHEMA_VERSION:
            raise UnusableDatabase(
                f"{path} has schema version {version}, newer than this simsvc's "
                f"{SCHEMA_VERSION}: upgrade simsvc"
            )

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
                    [(n, m, _dumps(p), now, now) for n, m, p in initial],
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

    # -- plumbing ---------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    async def _scalar(self, sql: str, args: Sequence[Any] = ()) -> Any:
        async with self._conn.execute(sql, args) as cursor:
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock, self._conn.execute(sql, args) as cursor:
            return list(await cursor.fetchall())

    async def _one(self, sql: str, args: Sequence[Any], what: str) -> sqlite3.Row:
        rows = await self._all(sql, args)
        if not rows:
            raise NotFound(what)
        return rows[0]

    async def pragma(self, name: str) -> Any:
        """The value of a read-only PRAGMA, such as journal_mode or integrity_check."""
        if not name.isidentifier():
            raise ValueError(f"not a pragma name: {name!r}")
        rows = await self._all(f"PRAGMA {name}")
        return rows[0][0]

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
                    (name, model, _dumps(params), now, now),
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
                    (name, model, _dumps(params), utcnow(), scenario_id),
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
                    _dumps(list(scenario_ids)),
                    replications,
                    seed,
                    pace_s,
                    _dumps(options),
                    _dumps(snapshot),
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
                (replications, _dumps(options), replications, run_id),
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
                (replications, _dumps(options), replications, run_id),
            )
            reopened = cursor.rowcount == 1
        run = await self.get_run(run_id)
        if not reopened:
            raise Conflict(f"run {run_id} is {run['status']}; wait until it has finished")
        return run

    async def interrupt_active_runs(self) -> list[int]:
        """Mark runs left queued or running (by a crash or a shutdown) as interrupted."""
        async with self._transaction() as conn:
            async with conn.execute(
                "SELECT run_id FROM runs WHERE status IN ('queued', 'running')"
            ) as cursor:
                ids = [int(r[0]) for r in await cursor.fetchall()]
            await conn.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?,"
                " error = coalesce(error, 'the service stopped before the run finished')"
                " WHERE status IN ('queued', 'running')",
                (utcnow(),),
            )
        return ids

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
            await self._add_stats(run_id, _stats_of_rows(rows))
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
        ontime_delivery_rate, metrics JSON text), bound to the insert as they are,
        `stats` the chunk's moments and `keys` its metrics keys with their JSON types:
        nothing here touches a row in Python. One transaction: a chunk and its keys are
        stored whole or not at all. At most six calls to aiosqlite's thread whatever the
        chunk's size, each of which wakes the event loop once.
        """
        async with self._transaction() as conn:
            await conn.executemany(_chunk_insert(run_id, utcnow()), rows)
            await self._add_metric_keys(run_id, keys)
            await self._add_stats(run_id, stats)
            counts = await conn.execute_fetchall(
                "UPDATE runs SET done = done + ? WHERE run_id = ? RETURNING done, total",
                (len(rows), run_id),
            )
            self.generation += 1
        (done, total), *_ = counts
        return int(done), int(total)

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
            await self._add_stats(INGESTED, _stats_of_rows(rows))
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

    # -- exports: a run's rows in batches, never all at once -------------------------

    async def _add_metric_keys(self, run_id: int, keys: Mapping[str, Iterable[str]]) -> None:
        """Record metrics keys and their JSON types among a run's, in the caller's transaction."""
        if keys:
            await self._conn.executemany(
                "INSERT OR IGNORE INTO run_metric_keys (run_id, key, kind) VALUES (?, ?, ?)",
                [(run_id, key, kind) for key, kinds in keys.items() for kind in kinds],
            )

    async def export_metric_keys(self, run_id: int, bound: int | None = None) -> MetricKinds:
        """Every metrics key of a run's rows up to result id `bound` (default: all stored
        now), with the JSON types its values take.

        Recorded as the rows were stored, they are read from `run_metric_keys`; those of
        a run of a version 2 database are scanned from its rows once, then recorded too.
        A recorded run being written may list a key that only rows past `bound` hold: an
        empty column.
        """
        known = await self._scalar_locked(
            "SELECT metric_keys_known FROM runs WHERE run_id = ?", (run_id,)
        )
        if known is None:
            raise NotFound(f"run {run_id} does not exist")
        if not known:
            bound = await self.export_bound(run_id) if bound is None else bound
            scanned = await self._scan_metric_keys(run_id, bound)
            await self._keep_scanned_keys(run_id, scanned)
            return scanned
        keys: MetricKinds = {}
        for key, kind in await self._all(
            "SELECT key, kind FROM run_metric_keys WHERE run_id = ?", (run_id,)
        ):
            keys.setdefault(str(key), set()).add(str(kind))
        return keys

    async def _keep_scanned_keys(self, run_id: int, keys: MetricKinds) -> None:
        """Record what a scan found, so that the run's next export reads it instead.

        Every chunk stored since the upgrade recorded its own keys, and the scan covered
        every row stored before it: together they are all the run's keys.
        """
        async with self._transaction() as conn:
            await self._add_metric_keys(run_id, keys)
            await conn.execute("UPDATE runs SET metric_keys_known = 1 WHERE run_id = ?", (run_id,))

    async def _scan_metric_keys(self, run_id: int, bound: int) -> MetricKinds:
        """The metrics keys and JSON types of a run's rows up to `bound`, from the rows.

        Read in batches, so the connection is never held for long.
        """
        keys: MetricKinds = {}
        after = (0, 0)
        while True:
            # The batch's last key, from the index alone; then the batch's keys by range.
            last = await self._all(
                "SELECT scenario_id, replication FROM results WHERE run_id = ?1"
                " AND (scenario_id, replication) > (?2, ?3) AND result_id <= ?4"
                " ORDER BY scenario_id, replication LIMIT 1 OFFSET ?5",
                (run_id, *after, bound, EXPORT_BATCH_ROWS - 1),
            )
            upto = (int(last[0][0]), int(last[0][1])) if last else (_LAST_KEY, _LAST_KEY)
            rows = await self._all(
                # An integer past 64 bits is its own type: no integer column can hold it.
                "SELECT j.key, CASE WHEN j.type = 'integer' AND typeof(j.atom) != 'integer'"
                " THEN 'bigint' ELSE j.type END AS kind FROM results, json_each(results.metrics) j"
                " WHERE run_id = ?1 AND (scenario_id, replication) > (?2, ?3)"
                " AND (scenario_id, replication) <= (?4, ?5) AND result_id <= ?6"
                " AND metrics != '{}' GROUP BY j.key, kind",  # no keys: not parsed
                (run_id, *after, *upto, bound),
            )
            for key, kind in rows:
                keys.setdefault(str(key), set()).add(str(kind))
            if not last:
                return keys
            after = upto

    async def export_bound(self, run_id: int) -> int:
        """The largest result id stored now: an export covers the rows up to it."""
        await self.get_run(run_id)
        return int(await self._scalar_locked("SELECT coalesce(max(result_id), 0) FROM results"))

    async def export_batches(
        self,
        run_id: int,
        bound: int,
        names: Mapping[int, str],
        metrics: Sequence[tuple[str, MetricForm]],
        *,
        named: bool = True,
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """A run's rows up to result id `bound`, by scenario and replication, in batches.

        Each row is (scenario_id, its text in `names` (or `names[0]` if it has none),
        replication, seed, total_labor_costs, ontime_delivery_rate) and then one column
        per `metrics` entry: a key and the form
        its value takes (see `MetricForm`). The form `"metrics"` (any key) is the whole
        stored metrics JSON. Without `named`, the scenario's name is left out of each row.
        Each batch is one short query, so writers wait at most one batch, and memory
        holds one batch whatever the run's size.
        """
        columns = ", ".join(_metric_sql(form, i) for i, (_, form) in enumerate(metrics))
        paths = {f"p{i}": _json_path(key) for i, (key, _) in enumerate(metrics)}
        name = " ifnull(json_extract(:names, '$.\"' || scenario_id || '\"'), :no_name),"
        sql = (
            "SELECT scenario_id,"
            + (name if named else "")
            + " replication, seed, total_labor_costs, ontime_delivery_rate"
            + (f", {columns}" if columns else "")
            + " FROM results WHERE run_id = :run_id AND (scenario_id, replication) > (:sid, :rep)"
            " AND result_id <= :bound ORDER BY scenario_id, replication LIMIT :limit"
        )
        args: dict[str, Any] = {"run_id": run_id, "bound": bound, "limit": EXPORT_BATCH_ROWS}
        args["names"] = _dumps({str(k): v for k, v in names.items() if k})
        args["no_name"] = names.get(0, "")
        args.update(paths)
        after = (0, 0)
        while True:
            args["sid"], args["rep"] = after
            async with self._lock, self._conn.execute(sql, args) as cursor:
                cursor.row_factory = None  # plain tuples: no Row object per replication
                batch = cast(list[tuple[Any, ...]], await cursor.fetchall())
            if not batch:
                return
            yield batch
            after = (int(batch[-1][0]), int(batch[-1][2 if named else 1]))

    async def _scalar_locked(self, sql: str, args: Sequence[Any] = ()) -> Any:
        async with self._lock:
            return await self._scalar(sql, args)

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
                await asyncio.to_thread(_collect_samples, samples, batch)
        return await asyncio.to_thread(_moments_of_samples, samples)

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
            (run_id, _dumps(list(scenario_ids)), first, last),
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
        await self._conn.executemany(
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
            " / (n + excluded.n)",
            [
                (run_key, sid, kpi, m.n, m.mean, m.m2, m.m3)
                for sid, per_kpi in batch.items()
                for kpi, m in per_kpi.items()
            ],
        )

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


class _Transaction:
    """`async with db._transaction() as conn`: BEGIN IMMEDIATE ... COMMIT under the lock."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def __aenter__(self) -> aiosqlite.Connection:
        await self._db._lock.acquire()
        try:
            await self._db._conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            # A cancelled BEGIN still runs on aiosqlite's thread: undo it before letting go,
            # or the next transaction fails with "cannot start a transaction within a
            # transaction".
            try:
                await asyncio.shield(self._rollback_if_open())
            finally:
                self._db._lock.release()
            raise
        return self._db._conn

    async def _rollback_if_open(self) -> None:
        with contextlib.suppress(sqlite3.OperationalError):  # no transaction is active
            await self._db._conn.execute("ROLLBACK")

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            if exc_type is None:
                await self._db._conn.execute("COMMIT")
            else:
                await self._db._conn.execute("ROLLBACK")
        finally:
            self._db._lock.release()


# One encoder for every write: json.dumps with options builds a new one per call, and
# a run encodes one metrics object per replication.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _result_tuples(
    run_id: int | None, rows: Iterable[ResultRow], keys: Mapping[int, str] | None = None
) -> list[tuple[Any, ...]]:
    """Rows as INSERT parameters; with `keys`, each ends with its scenario's config key."""
    now = utcnow()
    return [
        (
            run_id,
            r["scenario_id"],
            r["replication"],
            r["seed"],
            r["total_labor_costs"],
            r["ontime_delivery_rate"],
            _dumps(r["metrics"]),
            now,
            *(() if keys is None else (keys[r["scenario_id"]],)),
        )
        for r in rows
    ]


def _json_path(key: str) -> str:
    """The SQLite JSON path of one metrics key (`export_safe_key` must hold)."""
    return f'$."{key}"'


def export_safe_key(key: str) -> bool:
    """Whether SQLite's JSON path syntax can name this key (it has no escape for quotes)."""
    return '"' not in key


def _metric_sql(form: MetricForm, i: int) -> str:
    value, kind = f"metrics -> :p{i}", f"json_type(metrics, :p{i})"
    if form == "metrics":
        return "metrics"
    if form == "json":
        return f"CASE {kind} WHEN 'null' THEN NULL ELSE {value} END"
    if form == "text":
        return f"metrics ->> :p{i}"
    # "cell": the text Python's csv module writes for the value json.loads gives: numbers
    # as written (the stored JSON holds Python's repr), True/False, '' for null or absent.
    return (
        f"ifnull(CASE {kind} WHEN 'true' THEN 'True' WHEN 'false' THEN 'False'"
        f" WHEN 'null' THEN '' WHEN 'text' THEN metrics ->> :p{i} ELSE {value} END, '')"
    )


def _chunk_insert(run_id: int, now: str) -> str:
    """The insert of a chunk's rows, bound to it exactly as the worker sent them.

    The run and the time are the same for every row: written into the statement, they
    cost nothing per row, where binding them made two tuples a row. Both are the
    service's own values, an integer and `utcnow()`'s digits, never a user's text.
    """
    if not _TIMESTAMP.fullmatch(now):
        raise ValueError(f"not a timestamp made by utcnow: {now!r}")
    return (
        "INSERT INTO results (run_id, scenario_id, replication, seed, total_labor_costs,"
        f" ontime_delivery_rate, metrics, created_at) VALUES ({int(run_id)}, ?, ?, ?, ?, ?, ?,"
        f" '{now}')"
    )


_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z")


def _replications_once(rows: Sequence[ResultRow]) -> dict[int, list[int]]:
    """Each scenario's replications in a request; InvalidRows if one is named twice."""
    first: dict[tuple[int, int], int] = {}
    errors = []
    for i, r in enumerate(rows):
        seen = first.setdefault((r["scenario_id"], r["replication"]), i)
        if seen != i:
            message = (
                f"replication {r['replication']} of scenario {r['scenario_id']} is also [{seen}]"
            )
            errors.append({"field": f"[{i}].replication", "message": message})
    if errors:
        raise InvalidRows(errors)
    by_scenario: dict[int, list[int]] = {}
    for sid, replication in first:
        by_scenario.setdefault(sid, []).append(replication)
    return by_scenario


def _scenario(row: sqlite3.Row) -> Scenario:
    return Scenario(
        scenario_id=row["scenario_id"],
        scenario_name=row["scenario_name"],
        model=row["model"],
        params=json.loads(row["params"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _run(row: sqlite3.Row) -> Run:
    return Run(
        run_id=row["run_id"],
        status=row["status"],
        scenario_ids=json.loads(row["scenario_ids"]),
        replications=row["replications"],
        seed=row["seed"],
        pace_s=row["pace_s"],
        options=json.loads(row["options"]),
        snapshot=json.loads(row["snapshot"]),
        done=row["done"],
        total=row["total"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        stopped_because=row["stopped_because"],
    )


def _result(row: sqlite3.Row) -> ResultRow:
    return ResultRow(
        scenario_id=row["scenario_id"],
        replication=row["replication"],
        seed=row["seed"],
        total_labor_costs=row["total_labor_costs"],
        ontime_delivery_rate=row["ontime_delivery_rate"],
        metrics=json.loads(row["metrics"]),
    )


def _unusable(path: str | Path, exc: sqlite3.Error) -> str:
    """One line on why SQLite cannot use `path`, from the error it gave."""
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"{path} is not a SQLite database, or it is damaged ({text})"
    if "readonly" in text or "read-only" in text:
        return f"{path} is read-only ({text}); simsvc must be able to write it and its folder"
    if "locked" in text or "busy" in text:
        return f"{path} is locked by another program ({text})"
    if "unable to open" in text:
        return f"cannot open {path} ({text}): check the path and its permissions"
    return f"cannot use {path} as a database: {text}"
