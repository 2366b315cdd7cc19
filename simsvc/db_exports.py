"""Exports: a run's metrics keys and its rows in batches, never all at once."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from .db_connection import BUSY_TIMEOUT_MS, MetricForm, NotFound, dumps_json
from .db_stats import StatsStore
from .jsontext import MetricKinds
from .moments import Moments as Moments

EXPORT_BATCH_ROWS = 5_000  # rows an export reads at a time
_LAST_KEY = 2**63 - 1  # past every scenario id and replication

Batch = list[tuple[Any, ...]]
T = TypeVar("T")
U = TypeVar("U")


ADD_METRIC_KEYS = "INSERT OR IGNORE INTO run_metric_keys (run_id, key, kind) VALUES (?, ?, ?)"


def metric_key_rows(run_id: int, keys: Mapping[str, Iterable[str]]) -> list[tuple[int, str, str]]:
    """`ADD_METRIC_KEYS`' parameters for a run's metrics keys and their JSON types."""
    return [(run_id, key, kind) for key, kinds in keys.items() for kind in kinds]


class ExportReads(StatsStore):
    """A run's rows and metrics keys read for an export, batch by batch."""

    async def _add_metric_keys(self, run_id: int, keys: Mapping[str, Iterable[str]]) -> None:
        """Record metrics keys and their JSON types among a run's, in the caller's transaction."""
        if keys:
            await self._conn.executemany(ADD_METRIC_KEYS, metric_key_rows(run_id, keys))

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
        (exists, bound), *_ = await self._all(
            "SELECT EXISTS (SELECT 1 FROM runs WHERE run_id = ?),"
            " coalesce((SELECT max(result_id) FROM results), 0)",
            (run_id,),
        )
        if not exists:
            raise NotFound(f"run {run_id} does not exist")
        return int(bound)

    async def export_pieces(
        self,
        run_id: int,
        bound: int,
        names: Mapping[int, str],
        metrics: Sequence[tuple[str, MetricForm]],
        encode: Callable[[Batch], T],
        *,
        named: bool = True,
    ) -> AsyncIterator[T]:
        """A run's rows up to result id `bound`, by scenario and replication, a batch at a
        time, each batch as `encode` makes it in a worker thread.

        Each row is (scenario_id, its text in `names` (or `names[0]` if it has none),
        replication, seed, total_labor_costs, ontime_delivery_rate) and then one column
        per `metrics` entry: a key and the form its value takes (see `MetricForm`). The
        form `"metrics"` (any key) is the whole stored metrics JSON. Without `named`, the
        scenario's name is left out of each row. Memory holds one batch whatever the
        run's size.

        A database file is read through a read-only connection of the export's own, and
        a batch is read and encoded in one worker-thread call: the export neither waits
        for the service's connection nor holds it, and, as WAL lets a reader be, never
        stalls a run storing its rows. An in-memory database, which only the service's
        connection sees, is read through it, one short query a batch.
        """
        query = _export_query(run_id, bound, names, metrics, named)
        if self.file is None:
            async for batch in self._shared_batches(query):
                yield await asyncio.to_thread(encode, batch)
            return
        reader = _Reader(self.file)
        try:
            while (piece := await reader.call(query.next_encoded, encode)) is not None:
                yield piece
        finally:
            reader.close()

    async def _shared_batches(self, query: _ExportQuery) -> AsyncIterator[Batch]:
        """The batches through the service's connection, each under its lock."""
        while True:
            async with self._lock, self._conn.execute(query.sql, query.args()) as cursor:
                cursor.row_factory = None  # plain tuples: no Row object per replication
                batch = cast(Batch, await cursor.fetchall())
            if not query.passed(batch):
                return
            yield batch


class _ExportQuery:
    """An export's SELECT, and where its next batch begins (keyset pagination)."""

    def __init__(self, sql: str, args: dict[str, Any], named: bool) -> None:
        self.sql = sql
        self._args = args
        self._replication = 2 if named else 1  # the column that holds it
        self._after = (0, 0)

    def args(self) -> dict[str, Any]:
        self._args["sid"], self._args["rep"] = self._after
        return self._args

    def passed(self, batch: Batch) -> bool:
        """Move past `batch`; False if it is empty, the end."""
        if not batch:
            return False
        last = batch[-1]
        self._after = (int(last[0]), int(last[self._replication]))
        return True

    def next_encoded(self, reader: sqlite3.Connection, encode: Callable[[Batch], T]) -> T | None:
        """The next batch, read through `reader` and encoded; None past the last."""
        batch = reader.execute(self.sql, self.args()).fetchall()
        return encode(batch) if self.passed(batch) else None


def _export_query(
    run_id: int,
    bound: int,
    names: Mapping[int, str],
    metrics: Sequence[tuple[str, MetricForm]],
    named: bool,
) -> _ExportQuery:
    columns = ", ".join(_metric_sql(form, i) for i, (_, form) in enumerate(metrics))
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
    args["names"] = dumps_json({str(k): v for k, v in names.items() if k})
    args["no_name"] = names.get(0, "")
    args.update({f"p{i}": _json_path(key) for i, (key, _) in enumerate(metrics)})
    return _ExportQuery(sql, args, named)


class _Reader:
    """One export's read-only connection to the database file, in a thread of its own.

    Opened, used and closed on that one thread, in the order asked: a close asked while
    a batch is being read (the client went away) comes after it, never during it.
    """

    def __init__(self, file: str) -> None:
        self._file = file
        self._conn: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="simsvc-export")

    async def call(self, fn: Callable[[sqlite3.Connection, U], T], arg: U) -> T:
        """`fn(connection, arg)` on the reader's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._call, fn, arg)

    def _call(self, fn: Callable[[sqlite3.Connection, U], T], arg: U) -> T:
        if self._conn is None:
            self._conn = _open_read_only(self._file)
        return fn(self._conn, arg)

    def close(self) -> None:
        """Close the connection once any batch in flight is read; never waits for it."""
        self._thread.submit(self._close)
        self._thread.shutdown(wait=False)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _open_read_only(file: str) -> sqlite3.Connection:
    uri = Path(file).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return conn


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
