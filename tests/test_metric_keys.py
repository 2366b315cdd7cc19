"""A run's metrics keys recorded as its rows are stored: what a scan of the rows finds."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from simsvc import chunks, db, exports, jsontext, runs, sim
from simsvc.db import Database
from simsvc.hub import Hub
from simsvc.stats import AggregateCache
from simsvc.streams import Streams

from .test_exports import OddMetricsModel


class MixedBatchModel(sim.Model):
    """A batch form whose metrics take every kind: int, float, NaN, bool, str, containers."""

    name = "mixed"
    version = "1.0.0"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    def simulate_batch(
        self, params: Mapping[str, Any], streams: Streams
    ) -> Mapping[str, Sequence[Any] | np.ndarray[Any, Any]]:
        x = streams.doubles(1)[:, 0]
        n = len(x)
        shape = _objects([{"a": [1, 2.5]} if v > 0.4 else [v, True] for v in x.tolist()])
        return {
            "total_labor_costs": 100 + 10 * x,
            "ontime_delivery_rate": x,
            "count": (x * 1000).astype(np.int64),
            "odd": np.where(x > 0.5, np.nan, x),  # NaN is stored as null
            "flag": x > 0.5,
            "label": ["high" if v > 0.3 else "low" for v in x.tolist()],
            "shape": shape,
            "big": [2**70 if i % 2 else 7 for i in range(n)],  # past 64 bits, or not
            "edge": _objects([-(2**63) if i % 3 else 2**63 for i in range(n)]),
        }


def _objects(values: list[Any]) -> np.ndarray[Any, Any]:
    """Python objects as a column, as they are: NumPy would make floats or refuse."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


PAIRS = [(1, r) for r in range(1, 31)]


async def _stored_run(database: Database, model: sim.Model, params: Mapping[str, Any]) -> int:
    run = await database.create_run([1], 30, 5, 0.0, {}, {})
    for part in (PAIRS[:13], PAIRS[13:]):
        chunk = chunks.simulate_chunk({1: (model, dict(params))}, 5, part)
        await database.store_chunk(run["run_id"], chunk.rows, chunk.moments, chunk.keys)
    return run["run_id"]


@pytest.mark.parametrize(
    ("model", "params"),
    [
        (sim.UNIFORM, {}),
        (sim.WAREHOUSE, sim.WAREHOUSE.defaults),
        (OddMetricsModel(), {}),
        (MixedBatchModel(), {}),
    ],
    ids=["uniform", "warehouse", "odd-per-row", "mixed-batch"],
)
async def test_recorded_keys_equal_what_a_scan_of_the_rows_finds(
    model: sim.Model, params: Mapping[str, Any]
) -> None:
    database = await Database.open(":memory:", [("a", model.name, params)])
    try:
        run_id = await _stored_run(database, model, params)
        recorded = await database.export_metric_keys(run_id)
        scanned = await database._scan_metric_keys(run_id, await database.export_bound(run_id))
        assert recorded == scanned
        if model is sim.UNIFORM:
            assert recorded == {}
        if isinstance(model, MixedBatchModel):
            assert recorded == {
                "count": {"integer"},
                "odd": {"real", "null"},
                "flag": {"true", "false"},
                "label": {"text"},
                "shape": {"object", "array"},
                "big": {"bigint", "integer"},
                "edge": {"bigint", "integer"},
            }
    finally:
        await database.close()


async def test_an_export_of_a_recorded_run_never_scans_its_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database = await Database.open(":memory:", [("a", "odd", {})])
    try:
        run_id = await _stored_run(database, OddMetricsModel(), {})
        scanned = await database._scan_metric_keys(run_id, await database.export_bound(run_id))

        async def no_scan(*_: Any) -> Any:
            raise AssertionError("the rows were scanned for their metrics keys")

        monkeypatch.setattr(Database, "_scan_metric_keys", no_scan)
        header = (await _csv(database, run_id))[0]
        assert header == [*exports.CSV_FIXED, *sorted(scanned)]
        assert "sometimes" in scanned  # a key only some rows hold
    finally:
        await database.close()


async def test_rows_stored_one_by_one_record_their_keys_too() -> None:
    database = await Database.open(":memory:", [("a", "odd", {})])
    try:
        chunk = chunks.simulate_chunk({1: (OddMetricsModel(), {})}, 5, PAIRS)
        run = await database.create_run([1], 30, 5, 0.0, {}, {})
        await database.store_results(run["run_id"], list(chunk))
        recorded = await database.export_metric_keys(run["run_id"])
        assert recorded == chunk.keys
        bound = await database.export_bound(run["run_id"])
        assert recorded == await database._scan_metric_keys(run["run_id"], bound)
    finally:
        await database.close()


async def test_a_failing_chunk_store_records_none_of_its_keys() -> None:
    database = await Database.open(":memory:", [("a", "odd", {})])
    try:
        run = await database.create_run([1], 30, 5, 0.0, {}, {})
        first = chunks.simulate_chunk({1: (sim.UNIFORM, {})}, 5, PAIRS[:2])
        await database.store_chunk(run["run_id"], first.rows, first.moments, first.keys)
        again = chunks.simulate_chunk({1: (OddMetricsModel(), {})}, 5, PAIRS[1:4])
        assert again.keys  # a chunk with keys, whose second row is stored already
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            await database.store_chunk(run["run_id"], again.rows, again.moments, again.keys)
        assert await database.export_metric_keys(run["run_id"]) == {}
        assert await database._all("SELECT * FROM run_metric_keys") == []
    finally:
        await database.close()


def _version_2_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(db._SCHEMA + db._SCHEMA_2 + "PRAGMA user_version=2;")
    conn.execute("INSERT INTO scenarios VALUES (1, 'a', 'odd', '{}', '2026-01-01', '2026-01-01')")
    conn.execute(
        "INSERT INTO runs (run_id, status, scenario_ids, replications, seed, pace_s, options,"
        " snapshot, done, total, created_at) VALUES (1, 'completed', '[1]', 3, 5, 0.0, '{}',"
        " '{}', 3, 3, '2026-01-01')"
    )
    metrics = ['{"a":1,"b":"x"}', '{"a":2.5,"c":[1]}', '{"d":null,"e":true}']
    conn.executemany(
        "INSERT INTO results (run_id, scenario_id, replication, seed, total_labor_costs,"
        " ontime_delivery_rate, metrics, created_at) VALUES (1, 1, ?, 5, 1.0, 0.5, ?, '')",
        list(enumerate(metrics, start=1)),
    )
    conn.commit()
    conn.close()


async def test_a_version_2_database_still_exports_its_old_runs_with_every_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.db"
    _version_2_database(path)
    database = await Database.open(path, [])
    try:
        assert await database.pragma("user_version") == db.SCHEMA_VERSION
        assert await database.export_metric_keys(1) == {
            "a": {"integer", "real"},
            "b": {"text"},
            "c": {"array"},
            "d": {"null"},
            "e": {"true"},
        }
        rows = await _csv(database, 1)
        assert rows[0][-5:] == ["a", "b", "c", "d", "e"]
        assert [row[-5:] for row in rows[1:]] == [
            ["1", "x", "", "", ""],
            ["2.5", "", "[1]", "", ""],
            ["", "", "", "", "True"],
        ]
        # A run made after the upgrade records its keys as its rows are stored.
        run_id = await _stored_run(database, OddMetricsModel(), {})
        known = await database._all("SELECT run_id, metric_keys_known FROM runs ORDER BY run_id")
        assert [tuple(r) for r in known] == [(1, 1), (run_id, 1)]  # run 1: kept from its scan
    finally:
        await database.close()


async def test_an_old_run_is_scanned_once_then_exported_from_the_recorded_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "v2.db"
    _version_2_database(path)
    database = await Database.open(path, [])
    try:
        known = await database._all("SELECT metric_keys_known FROM runs WHERE run_id = 1")
        assert known[0][0] == 0  # marked by the upgrade
        first = await _csv(database, 1)

        async def no_scan(*_: Any) -> Any:
            raise AssertionError("the rows were scanned again")

        monkeypatch.setattr(Database, "_scan_metric_keys", no_scan)
        assert await _csv(database, 1) == first
    finally:
        await database.close()


async def _csv(database: Database, run_id: int) -> list[list[str]]:
    export = await exports.csv_export(database, run_id)
    body = b"".join([piece async for piece in export.body])
    return list(csv.reader(io.StringIO(body.decode("utf-8"))))


def test_each_value_is_classified_as_sqlite_types_its_json() -> None:
    finite: list[Any] = [
        1,
        -(2**63),
        2**63,
        -(2**63) - 1,
        2.5,
        1e300,
        True,
        False,
        None,
        "s",
        {"a": 1},
        [1],
    ]
    conn = sqlite3.connect(":memory:")
    for value in finite:
        (kind,) = conn.execute(
            "SELECT CASE WHEN type = 'integer' AND typeof(atom) != 'integer' THEN 'bigint'"
            " ELSE type END FROM json_each(?)",
            (json.dumps({"v": value}),),
        ).fetchone()
        assert jsontext.json_kind(value) == kind, value
    conn.close()
    # Non-finite floats are encoded as null; a tuple as an array.
    cases: list[tuple[Any, str]] = [
        *((v, jsontext.json_kind(v)) for v in finite),
        (float("nan"), "null"),
        (float("-inf"), "null"),
        ((2,), "array"),
    ]
    for value, kind in cases:
        kinds: jsontext.MetricKinds = {}
        jsontext.add_kinds(kinds, {"v": value})
        assert kinds == {"v": {kind}}, value
        assert jsontext.json_kind(value) == kind, value


async def test_a_row_stored_while_an_export_begins_is_in_it_only_with_its_columns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database = await Database.open(":memory:", [("a", "uniform", {})])
    try:
        run_id = await _stored_run(database, sim.UNIFORM, {})
        read_keys = Database.export_metric_keys

        async def then_a_row_with_a_new_key(self: Database, *args: Any) -> Any:
            keys = await read_keys(self, *args)
            late = db.ResultRow(
                scenario_id=1,
                replication=31,
                seed=5,
                total_labor_costs=1.0,
                ontime_delivery_rate=0.5,
                metrics={"late": 1},
            )
            await self.store_results(run_id, [late])
            return keys

        monkeypatch.setattr(Database, "export_metric_keys", then_a_row_with_a_new_key)
        header, *rows = await _csv(database, run_id)
        # The export's snapshot was taken before its keys were read: the late row is not
        # in it, rather than in it without its column.
        assert [int(row[2]) for row in rows] == list(range(1, 31))
        assert header == list(exports.CSV_FIXED)
    finally:
        await database.close()


class _KeysSpy(Database):
    """Records the keys each `store_chunk` is given; fails the store when told to."""

    sent: list[jsontext.MetricKinds]
    fail_next = False

    async def store_chunk(self, run_id: int, rows: Any, stats: Any, keys: Any) -> tuple[int, int]:
        self.sent.append({key: set(kinds) for key, kinds in keys.items()})
        if self.fail_next:
            self.fail_next = False
            raise sqlite3.OperationalError("disk I/O error")
        return await super().store_chunk(run_id, rows, stats, keys)


def _odd_chunk(pairs: Sequence[tuple[int, int]]) -> chunks.Chunk:
    return chunks.simulate_chunk({1: (OddMetricsModel(), {})}, 5, pairs)


@contextlib.asynccontextmanager
async def _sink_and_run(pairs: int) -> AsyncIterator[tuple[_KeysSpy, runs.RunEvents, int]]:
    """A spied database, the runs' sink on it, and a started run of `pairs` pairs."""
    database = await _KeysSpy.open(":memory:", [("a", "odd", {})])
    database.sent = []
    try:
        sink = runs.RunEvents(database, AggregateCache(database), Hub("events"), Hub("results"))
        run = await database.create_run([1], pairs, 5, 0.0, {}, {})
        await sink.run_started(run["run_id"])
        yield database, sink, run["run_id"]
    finally:
        await database.close()


async def test_a_running_run_sends_each_metrics_key_and_kind_to_storage_once() -> None:
    pairs = [(1, r) for r in range(1, 61)]
    async with _sink_and_run(len(pairs)) as (database, sink, run_id):
        parts = [pairs[i : i + 6] for i in range(0, len(pairs), 6)]
        computed = [_odd_chunk(p) for p in parts]
        for chunk in computed:
            await sink.results_ready(run_id, chunk)
        # Every key and kind went to storage exactly once, with the first chunk that had it.
        sent = [
            (key, kind) for keys in database.sent for key, kinds in keys.items() for kind in kinds
        ]
        assert len(sent) == len(set(sent))
        union: jsontext.MetricKinds = {}
        for chunk in computed:
            for key, kinds in chunk.keys.items():
                union.setdefault(key, set()).update(kinds)
        assert set(sent) == {(key, kind) for key, kinds in union.items() for kind in kinds}
        assert database.sent[0] == computed[0].keys
        assert {} in database.sent[1:]  # a chunk with nothing new sends nothing
        # What storage recorded is what the rows hold.
        bound = await database.export_bound(run_id)
        assert await database.export_metric_keys(run_id) == union
        assert union == await database._scan_metric_keys(run_id, bound)


async def test_keys_of_a_chunk_whose_store_failed_are_sent_again_with_the_next() -> None:
    pairs = [(1, r) for r in range(1, 13)]
    async with _sink_and_run(len(pairs)) as (database, sink, run_id):
        first = _odd_chunk(pairs[:6])
        database.fail_next = True
        with pytest.raises(sqlite3.OperationalError):
            await sink.results_ready(run_id, first)
        second = _odd_chunk(pairs[6:])
        await sink.results_ready(run_id, second)
        assert database.sent[1] == second.keys  # nothing of the failed chunk counted as stored
        assert await database.export_metric_keys(run_id) == second.keys


async def test_a_restarted_run_records_its_keys_again() -> None:
    pairs = [(1, r) for r in range(1, 13)]
    async with _sink_and_run(len(pairs)) as (database, sink, run_id):
        first = _odd_chunk(pairs[:6])
        await sink.results_ready(run_id, first)
        await sink.run_started(run_id)  # resumed or extended: its keys are sent afresh
        again = _odd_chunk(pairs[6:])
        await sink.results_ready(run_id, again)
        assert database.sent[1] == again.keys
