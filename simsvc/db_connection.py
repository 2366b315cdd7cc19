"""The one aiosqlite connection's plumbing, the storage errors and the plain row types.

`Connection` holds the connection and its lock, and runs transactions on it; the
classes of `db_stats`, `db_exports` and `db` add their SQL on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any, Literal, TypedDict, TypeVar

import aiosqlite

from . import moments
from .moments import Moments as Moments

BUSY_TIMEOUT_MS = 5000  # how long a statement waits for another connection's lock
INGESTED = 0  # run key of rows stored by POST /api/results under the scenario's current params
KPIS = ("total_labor_costs", "ontime_delivery_rate")
ACTIVE = ("queued", "running")

# (scenario_name, model, params) stored when a database is created
InitialScenarios = Sequence[tuple[str, str, Mapping[str, Any]]]
T = TypeVar("T")


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


class SQLiteThread(aiosqlite.Connection):
    """aiosqlite's connection, which can also run a function of the sqlite3 connection
    on its thread: work of many statements in one call, which wakes the event loop once
    instead of once a statement."""

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` on the connection's thread, after every call queued before."""
        # aiosqlite's own way to queue work for its thread, as its public calls do;
        # unannotated there.
        result: T = await self._execute(lambda: fn(self._conn))  # type: ignore[no-untyped-call]
        return result


def connect(path: str, **kwargs: Any) -> SQLiteThread:
    """`aiosqlite.connect`, with `SQLiteThread.run`: `sqlite3.connect(path, **kwargs)` on
    the connection's own thread."""
    return SQLiteThread(lambda: sqlite3.connect(path, **kwargs), iter_chunk_size=64)


class Connection:
    """The one aiosqlite connection and its lock; `Database` builds on it."""

    def __init__(self, conn: SQLiteThread, file: str | None = None) -> None:
        self._conn = conn
        self.file = file  # the database file; None for one in memory, seen by `conn` alone
        self._lock = asyncio.Lock()
        self.generation = 0  # bumped on every write that changes results
        # run_id -> scenario_id -> (config key, model version); snapshots never change
        self._run_configs: dict[int, dict[int, tuple[str, str]]] = {}
        self._configs_seen = 0

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

    async def _scalar_locked(self, sql: str, args: Sequence[Any] = ()) -> Any:
        async with self._lock:
            return await self._scalar(sql, args)

    async def interrupt_active(self, table: str, key: str, noun: str) -> list[int]:
        """Mark `table`'s rows left queued or running (by a crash or a shutdown) as
        interrupted; their ids (`key`). `table` and `key` are simsvc's own names."""
        async with self._transaction() as conn:
            async with conn.execute(
                f"SELECT {key} FROM {table} WHERE status IN ('queued', 'running')"
            ) as cursor:
                ids = [int(r[0]) for r in await cursor.fetchall()]
            await conn.execute(
                f"UPDATE {table} SET status = 'interrupted', finished_at = ?,"
                f" error = coalesce(error, 'the service stopped before the {noun} finished')"
                " WHERE status IN ('queued', 'running')",
                (utcnow(),),
            )
        return ids

    # The surface of the other stores that share this connection (`experiment_store`):
    # a transaction, locked reads, and inside a transaction, the connection itself.
    transaction = _transaction
    fetch_all = _all
    fetch_one = _one
    scalar_in_transaction = _scalar

    @property
    def connection(self) -> aiosqlite.Connection:
        """The aiosqlite connection, for statements inside `transaction()`."""
        return self._conn


class _Transaction:
    """`async with db._transaction() as conn`: BEGIN IMMEDIATE ... COMMIT under the lock."""

    def __init__(self, db: Connection) -> None:
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


def dumps_json(value: Any) -> str:
    """A value as storage writes JSON text: compact, non-ASCII kept as it is."""
    return _ENCODER.encode(value)


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
            dumps_json(r["metrics"]),
            now,
            *(() if keys is None else (keys[r["scenario_id"]],)),
        )
        for r in rows
    ]


# A chunk's rows go to SQLite this many to a statement: per row, one statement of 32 rows
# costs SQLite about a fifth less than 32 statements of one (one step, one reset and one
# release of the GIL a statement, not a row; measured 2.1 against 2.7 µs a row).
INSERT_BLOCK_ROWS = 32


def _rows_insert(count: int) -> str:
    """An insert of `count` rows of one run, stored at one time: `?1` is the run, `?2`
    the time, then each row's six values as a chunk holds them."""
    rows = ", ".join(
        "(?1, " + ", ".join(f"?{3 + 6 * i + k}" for k in range(6)) + ", ?2)" for i in range(count)
    )
    return (
        "INSERT INTO results (run_id, scenario_id, replication, seed, total_labor_costs,"
        f" ontime_delivery_rate, metrics, created_at) VALUES {rows}"
    )


_BLOCK_INSERT = _rows_insert(INSERT_BLOCK_ROWS)
_ROW_INSERT = _rows_insert(1)


def chunk_inserts(
    run_id: int, now: str, rows: Sequence[Sequence[Any]]
) -> list[tuple[str, Iterator[tuple[Any, ...]]]]:
    """The statements that insert a chunk's rows, in the rows' order, each with its
    parameters: blocks of `INSERT_BLOCK_ROWS` rows, then the rest a row at a time.

    The statements' text never changes, so SQLite prepares each once; the parameters
    are made as SQLite takes them, on the database's thread.
    """
    whole = len(rows) - len(rows) % INSERT_BLOCK_ROWS
    blocks = (
        (run_id, now, *chain.from_iterable(rows[i : i + INSERT_BLOCK_ROWS]))
        for i in range(0, whole, INSERT_BLOCK_ROWS)
    )
    singles = ((run_id, now, *row) for row in rows[whole:])
    inserts = [(_BLOCK_INSERT, blocks, whole), (_ROW_INSERT, singles, len(rows) - whole)]
    return [(sql, parameters) for sql, parameters, count in inserts if count]


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
