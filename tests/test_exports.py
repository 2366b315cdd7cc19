"""Result exports: JSON, CSV and Parquet streamed in batches, cell for cell as before."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gc
import io
import json
import logging
import sqlite3
import threading
import tracemalloc
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import numpy as np
import pytest
from pytest_aiohttp import AiohttpClient

from simsvc import db, db_exports, exports, sim
from simsvc.resources import DB
from simsvc.web import Config, create_app

from .conftest import Client, MakeClient, start_run, wait_for_run


class OddMetricsModel(sim.Model):
    """Metrics of every JSON type a model may return, some only in some replications."""

    name = "odd"
    version = "1.0.0"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        x = float(rng.uniform())
        out: dict[str, Any] = {
            "total_labor_costs": 9000 + 3000 * x,
            "ontime_delivery_rate": x,
            "tiny": x * 1e-300,  # exponent notation
            "huge": x * 1e300,
            "count": int(x * 1000),
            "big_int": 2**70 + int(x * 10),  # past 64 bits
            "flag": x > 0.5,
            "label": 'コスト, "quoted"\nline' if x > 0.3 else "plain",
            "nothing": None,
            "shape": {"a": [1, 2.5, "ü"], "b": None} if x > 0.2 else [x, True],
            "mixed": 3 if x > 0.5 else 0.25,
        }
        if x > 0.6:
            out["sometimes"] = x
        return out


class PlainMetricsModel(sim.Model):
    """Only numbers, booleans and nulls: the CSV export's fast path, exponents and all."""

    name = "plain"
    version = "1.0.0"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        x = float(rng.uniform())
        out: dict[str, Any] = {
            "total_labor_costs": 9000 + 3000 * x,
            # repr writes an exponent here: those batches go the slow way
            "ontime_delivery_rate": x if x > 0.15 else x * 1e-6,
            "count": int(x * 1000),
            "big_int": 2**70 + int(x * 10),
            "flag": x > 0.5,
            "nothing": None,
            "mixed": 3 if x > 0.5 else 0.25,
            "share": x / 7,
        }
        if x < 0.15:
            out["tiny"] = x * 1e-6  # stored as the text repr wrote, exponent and all
        if x > 0.6:
            out["sometimes"] = x * 1e20
        return out


def reference_csv(rows: list[dict[str, Any]]) -> str:
    """The CSV export as it was first written, whole in memory: what the stream must equal."""
    metric_keys = sorted({k for r in rows for k in r["metrics"]})
    fixed = [
        "scenario_id",
        "scenario_name",
        "replication",
        "seed",
        "total_labor_costs",
        "ontime_delivery_rate",
    ]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fixed + metric_keys)
    for row in rows:
        metrics = row["metrics"]
        writer.writerow(
            [row[k] for k in fixed] + [exports.csv_cell(metrics.get(k)) for k in metric_keys]
        )
    return out.getvalue()


async def _odd_run(
    aiohttp_client: AiohttpClient, config: Config, replications: int
) -> tuple[Client, int]:
    models = {**sim.load_models(), "odd": OddMetricsModel()}
    client = await aiohttp_client(create_app(config, models=models))
    resp = await client.post("/api/scenarios", json={"scenario_name": "odd", "model": "odd"})
    scenario = await resp.json()
    resp = await client.post("/api/scenarios", json={"scenario_name": "u", "model": "uniform"})
    other = await resp.json()
    ids = [scenario["scenario_id"], other["scenario_id"]]
    run = await start_run(client, scenario_ids=ids, replications=replications, seed=3)
    ended = await wait_for_run(client, run["run_id"])
    assert ended["status"] == "completed", ended["error"]
    return client, run["run_id"]


@pytest.fixture(params=["memory", "file"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    """Each export test on both kinds of database: one in memory is read through the
    service's connection, a file through a read-only connection of the export's own."""
    path = ":memory:" if request.param == "memory" else str(tmp_path / "exports.db")
    return Config(db_path=path, workers=2, executor="thread", heartbeat_s=30.0)


@pytest.fixture(autouse=True)
def frozen(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    # The first Parquet export freezes what is alive then: not the whole test process.
    calls: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append(True))
    monkeypatch.setattr(exports, "_pyarrow_loaded", False)
    return calls


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Several batches even for a small run, so joining batches is exercised.
    monkeypatch.setattr(db_exports, "EXPORT_BATCH_ROWS", 7)


@pytest.mark.usefixtures("small_batches")
async def test_csv_and_json_exports_equal_the_whole_answer_cell_for_cell(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    client, run_id = await _odd_run(aiohttp_client, config, 20)
    names = {1: "", 4: "odd", 5: "u"}
    stored = [
        {"scenario_id": r["scenario_id"], "scenario_name": names[r["scenario_id"]], **r}
        for r in await client.app[DB].run_results(run_id)
    ]
    assert len(stored) == 40
    resp = await client.get(f"/api/simulations/{run_id}/results?format=csv")
    assert resp.status == 200
    assert resp.content_type == "text/csv"
    assert await resp.text() == reference_csv(stored)
    resp = await client.get(f"/api/simulations/{run_id}/results")
    assert resp.content_type == "application/json"
    assert json.loads(await resp.text()) == json.loads(json.dumps(stored))


async def test_an_empty_run_exports_an_empty_list_and_a_header(client: Client) -> None:
    run = await start_run(client, replications=1, pace_s=30)
    await client.post(f"/api/simulations/{run['run_id']}/cancel")
    base = f"/api/simulations/{run['run_id']}/results"
    assert await (await client.get(base)).json() == []
    text = await (await client.get(base + "?format=csv")).text()
    assert text == (
        "scenario_id,scenario_name,replication,seed,total_labor_costs,ontime_delivery_rate\n"
    )


@pytest.mark.usefixtures("small_batches")
async def test_parquet_export_holds_the_same_values_typed(
    aiohttp_client: AiohttpClient, config: Config, frozen: list[bool]
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    client, run_id = await _odd_run(aiohttp_client, config, 20)
    stored = await client.app[DB].run_results(run_id)
    resp = await client.get(
        f"/api/simulations/{run_id}/results", headers={"Accept": exports.PARQUET_MEDIA_TYPE}
    )
    assert resp.status == 200
    assert resp.content_type == exports.PARQUET_MEDIA_TYPE
    table = pq.read_table(io.BytesIO(await resp.read()))
    assert frozen == [True]  # pyarrow's objects are kept out of every later collection
    assert table.schema.field("count").type == "int64"
    assert table.schema.field("tiny").type == "double"
    assert table.schema.field("flag").type == "bool"
    assert table.schema.field("label").type == "string"
    got = table.to_pylist()
    assert len(got) == len(stored)
    for row, want in zip(got, stored, strict=True):
        for key in ("scenario_id", "replication", "seed", "total_labor_costs"):
            assert row[key] == want[key]
        metrics = want["metrics"]
        for key in ("tiny", "huge", "count", "flag", "label", "sometimes", "nothing"):
            assert row[key] == metrics.get(key), key
        # Mixed types and containers are JSON text: the same value once parsed.
        shape = row["shape"]
        assert (json.loads(shape) if shape is not None else None) == metrics.get("shape")


async def test_parquet_without_pyarrow_is_406_naming_the_extra(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "parquet_available", lambda: False)
    run = await start_run(client, replications=1)
    await wait_for_run(client, run["run_id"])
    resp = await client.get(f"/api/simulations/{run['run_id']}/results?format=parquet")
    assert resp.status == 406
    assert resp.content_type == "application/problem+json"
    assert "simsvc[parquet]" in (await resp.json())["detail"]


def test_loading_pyarrow_freezes_its_objects_without_a_full_collection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full collection of the whole process holds the event loop for tens of ms: none
    is run, and none can start on its own while pyarrow (and pandas) make their objects."""
    pa = pytest.importorskip("pyarrow")
    collected: list[int] = []
    frozen: list[bool] = []
    collector_on_while_made: list[bool] = []
    array = pa.array

    def collect(generation: int = 2) -> int:
        collected.append(generation)
        return 0

    def first_array(values: Any) -> Any:
        collector_on_while_made.append(gc.isenabled())
        return array(values)

    monkeypatch.setattr(gc, "collect", collect)
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(pa, "array", first_array)
    monkeypatch.setattr(exports, "_pyarrow_loaded", False)
    assert gc.isenabled()
    exports._load_pyarrow()
    exports._load_pyarrow()  # once per process
    assert frozen == [True]
    assert collected == []
    assert collector_on_while_made == [False]
    assert gc.isenabled()  # on again after


async def test_export_of_a_missing_run_is_404_and_a_bad_format_400(client: Client) -> None:
    assert (await client.get("/api/simulations/999/results?format=csv")).status == 404
    resp = await client.get("/api/simulations/1/results?format=xlsx")
    assert resp.status == 400
    assert "parquet" in (await resp.json())["detail"]


async def test_an_export_holds_one_batch_in_memory_whatever_the_run_size(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_exports, "EXPORT_BATCH_ROWS", 1000)
    database = client.app[DB]
    rows = 40_000
    run = await database.create_run([1], rows, 1, 0.0, {}, {})
    metrics = {"orders": 351, "overtime_hours": 0.25, "mean_wait_minutes": 3.5, "utilization": 0.9}
    for first in range(1, rows + 1, 5000):
        batch = [
            db.ResultRow(
                scenario_id=1,
                replication=r,
                seed=1,
                total_labor_costs=9000.0 + r,
                ontime_delivery_rate=0.5,
                metrics=metrics,
            )
            for r in range(first, first + 5000)
        ]
        await database.store_results(run["run_id"], batch)
    await database.finish_run(run["run_id"], "completed")
    for fmt in ("csv", "json"):
        tracemalloc.start()
        try:
            resp = await client.get(f"/api/simulations/{run['run_id']}/results?format={fmt}")
            size = 0
            async for piece in resp.content.iter_chunked(1 << 16):
                size += len(piece)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # Held whole, the 40,000 rows would take well over 20 MB as Python objects; a
        # batch of 1,000 and the buffers of both ends of the socket take about 1 MB.
        assert size > 1_500_000
        assert peak < 3_000_000, (fmt, peak, size)


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize("safe_keys", [True, False], ids=["sql-cells", "whole-metrics"])
async def test_a_null_or_absent_metric_is_an_empty_csv_cell_never_none(
    aiohttp_client: AiohttpClient,
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
    safe_keys: bool,
) -> None:
    # Checked against the stored rows directly, not through `exports.csv_cell`, so a
    # change to how the export writes a null cannot change what the test expects.
    if not safe_keys:
        monkeypatch.setattr(db, "export_safe_key", lambda key: False)
    client, run_id = await _odd_run(aiohttp_client, config, 20)
    stored = {
        (r["scenario_id"], r["replication"]): r["metrics"]
        for r in await client.app[DB].run_results(run_id)
    }
    text = await (await client.get(f"/api/simulations/{run_id}/results?format=csv")).text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(stored) == 40
    assert "None" not in text
    absent = 0
    for row in rows:
        metrics = stored[int(row["scenario_id"]), int(row["replication"])]
        for key in ("nothing", "sometimes", "shape"):
            if metrics.get(key) is None:
                absent += 1
                assert row[key] == "", (key, row)
        if isinstance(metrics.get("shape"), dict):
            assert json.loads(row["shape"]) == metrics["shape"]  # a nested null stays null
            assert '"b": null' in row["shape"]
    assert absent > 40  # "nothing" is null in every odd row; the uniform rows lack them all


@pytest.mark.usefixtures("small_batches")
async def test_a_csv_of_plain_numbers_equals_the_whole_answer_and_keeps_snapshot_names(
    aiohttp_client: AiohttpClient, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = 0
    plain = exports._csv_plain

    def counted(batch: exports.Batch, prefixes: Any) -> bytes:
        nonlocal fast
        fast += 1
        return plain(batch, prefixes)

    monkeypatch.setattr(exports, "_csv_plain", counted)
    models = {**sim.load_models(), "plain": PlainMetricsModel()}
    client = await aiohttp_client(create_app(config, models=models))
    first = 'plain, "quoted"\nname'  # a name that needs CSV quoting
    resp = await client.post("/api/scenarios", json={"scenario_name": first, "model": "plain"})
    sid = (await resp.json())["scenario_id"]
    run = await start_run(client, scenario_ids=[1, sid], replications=40, seed=5)
    ended = await wait_for_run(client, run["run_id"])
    assert ended["status"] == "completed", ended["error"]
    # A rename after the run changes nothing in its export: the run recorded its names.
    await client.patch(f"/api/scenarios/{sid}", json={"scenario_name": "renamed"})
    names = {1: "現状シナリオ", sid: first}
    rows = await client.app[DB].run_results(run["run_id"])
    assert sum(r["ontime_delivery_rate"] < 1e-4 for r in rows) >= 3
    stored = [{"scenario_name": names[r["scenario_id"]], **r} for r in rows]
    text = await (await client.get(f"/api/simulations/{run['run_id']}/results?format=csv")).text()
    assert text == reference_csv(stored)
    assert fast >= 80 / 7  # every batch went through the fast encoder


PLAIN_NAMES = {0: "", 1: "現状シナリオ", 2: 'a, "b"\nc'}


@pytest.mark.parametrize(
    "batch",
    [
        # one scenario, floats that need 17 digits, integral floats, booleans, empty cells
        [(1, 1, 7, 9904.688661291335, 0.1, "384", "True", ""), (1, 2, 7, 9000.0, 1.0, "", "", "")],
        # a batch across two scenarios, the second's name quoted
        [(1, 40, 7, 10583.73243706343, 0.5, "1", "False", ""), (2, 1, 7, 1.5, 0.25, "", "", "")],
        # a scenario the run's names lack: no name, as before
        [(3, 1, 7, 2.5, 0.75, "2", "True", "")],
        # repr writes exponents, orjson would not: 1e-05, 1e+16, 5e-324
        [(1, 1, 7, 1e16, 1e-5, "", "", ""), (1, 2, 7, 5e-324, 0.0001, "", "", "")],
        # a null seed
        [(1, 1, None, 9500.25, 0.5, "1", "", "")],
        # a metrics cell stored with an exponent is copied as stored
        [(1, 1, 7, 9500.25, 0.5, "1e-300", "", "")],
        # numbers under 1e-4, which repr writes with an exponent and orjson without
        [(1, 1, 7, 9.5e-5, 0.5, "", "", ""), (1, 2, 7, 1230.00004, 0.25, "", "", "")],
        [(1, 1, 7, 9500.5, -1e-5, "", "", ""), (1, 2, 7, 9500.25, 0.00001234, "", "", "")],
        [(1, 1, 7, 9500.5, 0.5, "", "", ""), (1, 2, 7, 9500.25, -0.00001234, "", "", "")],
    ],
)
def test_the_fast_csv_encoder_writes_what_the_csv_module_writes(batch: exports.Batch) -> None:
    want = io.StringIO()
    rows = [(r[0], PLAIN_NAMES.get(r[0], ""), *r[1:]) for r in batch]
    csv.writer(want, lineterminator="\n").writerows(rows)
    got = exports._csv_plain(batch, exports._NamePrefixes(PLAIN_NAMES))
    assert got.decode("utf-8") == want.getvalue()


def test_digits_0000_inside_a_number_keep_a_batch_on_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 1230.00004 and 0.870000012 hold "0.0000", as numbers under 1e-4 do; only those are
    # written otherwise by orjson, so these rows need no csv module.
    batch = [(1, 1, 7, 1230.00004, 0.870000012, "10.00003", "", "")]
    want = "1,現状シナリオ,1,7,1230.00004,0.870000012,10.00003,,\n"

    prefixes = exports._NamePrefixes(PLAIN_NAMES)
    assert prefixes[1] == "1,現状シナリオ,".encode()  # written by the csv module, now

    def slow(rows: Any) -> bytes:
        raise AssertionError("went the slow way")

    monkeypatch.setattr(exports, "_csv_text", slow)
    got = exports._csv_plain(batch, prefixes)
    assert got.decode("utf-8") == want


@pytest.mark.usefixtures("small_batches")
async def test_an_export_of_a_database_file_never_waits_for_the_services_connection(
    tmp_path: Path, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(create_app(_file_config(tmp_path)))
    database = client.app[DB]
    run_id = await _run_of_60_rows(database)
    for fmt in ("csv", "json"):
        resp = await client.get(f"/api/simulations/{run_id}/results?format={fmt}")
        head = await resp.content.read(10)  # the export has begun
        # The service's connection is taken for the rest of the export, as by a long
        # write: batches of 7, a few read ahead, most still to read through the file.
        async with database._lock, asyncio.timeout(10):
            body = head + await resp.content.read()
        assert _replications(fmt, body) == list(range(1, 61))


@pytest.mark.usefixtures("small_batches")
async def test_a_client_gone_mid_export_closes_its_reader_after_the_batch_in_flight(
    tmp_path: Path,
    aiohttp_client: AiohttpClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await aiohttp_client(create_app(_file_config(tmp_path)))
    run_id = await _run_of_60_rows(client.app[DB])
    encode, reading, release = exports._csv_plain, threading.Event(), threading.Event()
    seen: list[tuple[str, str]] = []
    closed = threading.Event()

    def held(batch: exports.Batch, prefixes: Any) -> bytes:
        if len(seen) == 3:  # the reader is ahead of the client: hold it on a batch
            reading.set()
            release.wait(10)
        seen.append(("read", threading.current_thread().name))
        return encode(batch, prefixes)

    def close(self: Any) -> None:
        seen.append(("close", threading.current_thread().name))
        close_connection(self)
        closed.set()

    close_connection = db_exports._Reader._close
    monkeypatch.setattr(exports, "_csv_plain", held)
    monkeypatch.setattr(db_exports._Reader, "_close", close)
    resp = await client.get(f"/api/simulations/{run_id}/results?format=csv")
    await resp.content.read(10)
    assert await asyncio.to_thread(reading.wait, 10)
    resp.close()  # the client goes away while a batch is being read
    release.set()
    assert await asyncio.to_thread(closed.wait, 10)
    # Closed after the batch in flight, on the thread that read it: never during it.
    assert [what for what, _ in seen][-2:] == ["read", "close"]
    assert {thread for _, thread in seen} == {seen[0][1]}
    assert seen[0][1].startswith("simsvc-export")
    # A client that leaves is not an error of the service's.
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.usefixtures("small_batches")
async def test_exports_past_the_bound_are_429_until_one_ends(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "EXPORTS_AT_ONCE", 1)
    client = await make_client()
    url = f"/api/simulations/{await _run_of_60_rows(client.app[DB])}/results?format=csv"
    first = await client.get(url)
    head = await first.content.read(10)  # streaming, and held open by its client
    refused = await client.get(url)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.content_type == "application/problem+json"
    assert "1 exports are streaming" in (await refused.json())["detail"]
    assert _replications("csv", head + await first.read()) == list(range(1, 61))
    again = await client.get(url)  # the first one ended: its slot is free
    assert _replications("csv", await again.read()) == list(range(1, 61))


def test_an_exports_own_connection_is_read_only(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (x)")
    reader = db_exports._open_read_only(str(path))
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.execute("INSERT INTO t VALUES (1)")
    finally:
        reader.close()


async def _store_uniform_rows(database: db.Database, run_id: int, first: int, count: int) -> None:
    rows = [
        db.ResultRow(
            scenario_id=1,
            replication=r,
            seed=1,
            total_labor_costs=9000.0 + r / 7,
            ontime_delivery_rate=0.5,
            metrics={},
        )
        for r in range(first, first + count)
    ]
    await database.store_results(run_id, rows)


@pytest.mark.usefixtures("small_batches")
@pytest.mark.parametrize("fmt", ["csv", "json"])
async def test_an_export_of_a_run_being_written_holds_the_rows_stored_when_it_began(
    client: Client, fmt: str
) -> None:
    database = client.app[DB]
    run = await database.create_run([1], 100, 1, 0.0, {}, {})
    await _store_uniform_rows(database, run["run_id"], 1, 30)
    resp = await client.get(f"/api/simulations/{run['run_id']}/results?format={fmt}")
    head = await resp.content.read(10)  # the export has begun, and read ahead
    await _store_uniform_rows(database, run["run_id"], 31, 30)  # stored while it streams
    assert _replications(fmt, head + await resp.content.read()) == list(range(1, 31))
    resp = await client.get(f"/api/simulations/{run['run_id']}/results?format={fmt}")
    assert _replications(fmt, await resp.read()) == list(range(1, 61))  # a later one: all


def _file_config(tmp_path: Path) -> Config:
    return Config(db_path=str(tmp_path / "exports.db"), executor="thread")


async def _run_of_60_rows(database: db.Database) -> int:
    run = await database.create_run([1], 100, 1, 0.0, {}, {})
    await _store_uniform_rows(database, run["run_id"], 1, 60)
    return run["run_id"]


def _replications(fmt: str, body: bytes) -> list[int]:
    text = body.decode("utf-8")
    if fmt == "csv":
        return [int(row["replication"]) for row in csv.DictReader(io.StringIO(text))]
    return [int(row["replication"]) for row in json.loads(text)]


@pytest.mark.usefixtures("small_batches")
async def test_an_export_that_fails_midway_ends_the_answer_short(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = client.app[DB]
    run = await database.create_run([1], 100, 1, 0.0, {}, {})
    await _store_uniform_rows(database, run["run_id"], 1, 30)
    encode = exports._csv_plain
    calls = 0

    def failing(batch: exports.Batch, prefixes: Any) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("disk went away")
        return encode(batch, prefixes)

    monkeypatch.setattr(exports, "_csv_plain", failing)
    resp = await client.get(f"/api/simulations/{run['run_id']}/results?format=csv")
    assert resp.status == 200  # sent before the failure
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()  # never a clean end that would pass for the whole run


@pytest.mark.usefixtures("small_batches")
async def test_metrics_keys_on_a_batch_boundary_are_found(client: Client) -> None:
    # Batches of 7: replications 7 and 14 end one batch each, 15 starts one.
    database = client.app[DB]
    run = await database.create_run([1], 100, 1, 0.0, {}, {})
    special: dict[int, dict[str, Any]] = {7: {"a": 1}, 14: {"b": 0.5}, 15: {"c": True}}
    rows = [
        db.ResultRow(
            scenario_id=1,
            replication=r,
            seed=1,
            total_labor_costs=9000.0,
            ontime_delivery_rate=0.5,
            metrics=special.get(r, {}),
        )
        for r in range(1, 21)
    ]
    await database.store_results(run["run_id"], rows)
    keys = await database.export_metric_keys(run["run_id"])
    assert keys == {"a": {"integer"}, "b": {"real"}, "c": {"true"}}


async def test_an_export_reads_ahead_a_bounded_number_of_pieces() -> None:
    made = 0

    async def pieces() -> AsyncIterator[bytes]:
        nonlocal made
        for _ in range(100):
            made += 1
            yield b"x"

    stream = exports.ahead(pieces(), depth=2)
    assert isinstance(stream, AsyncGenerator)
    assert await anext(stream) == b"x"
    for _ in range(50):  # let the reader run as far as it may: it only yields, never waits
        await asyncio.sleep(0)
    # One handed over, two queued, one waiting for room: read ahead, but no further.
    assert 2 < made <= 4
    await stream.aclose()
