"""Failures inside the process: dead workers, cancelled transactions, many runs at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sqlite3
import threading
from typing import Any

import psutil
import pytest

from simsvc import chunks, db, sim

from .conftest import Client, MakeClient, start_run, wait_for_run


async def test_a_cancelled_transaction_start_leaves_no_transaction_open() -> None:
    database = await db.Database.open(":memory:")
    try:
        pending = asyncio.create_task(database.create_scenario("cut short", "warehouse", {}))
        await asyncio.sleep(0)  # let it take the lock and send BEGIN to aiosqlite's thread
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        created = await database.create_scenario("next", "warehouse", {})
        assert created["scenario_name"] == "next"
    finally:
        await database.close()


async def test_a_chunk_store_cancelled_mid_write_is_stored_whole_and_counted() -> None:
    # A chunk's transaction runs whole on aiosqlite's thread: the caller's cancel cannot
    # cut it between its rows and the run's count, and the next transaction starts clean.
    database = await db.Database.open(":memory:", [("a", "uniform", {})])
    try:
        run = await database.create_run([1], 40, 5, 0.0, {}, {})
        chunk = chunks.simulate_chunk({1: (sim.UNIFORM, {})}, 5, [(1, r) for r in range(1, 41)])
        hold, held = threading.Event(), threading.Event()

        def block(_: sqlite3.Connection) -> None:
            held.set()
            hold.wait(30)

        blocker = asyncio.ensure_future(database._conn.run(block))
        await asyncio.to_thread(held.wait, 30)  # aiosqlite's thread is busy: the store queues
        generation = database.generation
        store = asyncio.create_task(
            database.store_chunk(run["run_id"], chunk.rows, chunk.moments, chunk.keys)
        )
        await asyncio.sleep(0)  # it takes the lock and queues its transaction
        store.cancel()
        with pytest.raises(asyncio.CancelledError):
            await store
        hold.set()
        await blocker
        assert database.generation > generation  # the caches see a write that may have landed
        created = await database.create_scenario("next", "uniform", {})
        assert created["scenario_name"] == "next"
        assert len(await database.run_results(run["run_id"])) == 40
        assert (await database.get_run(run["run_id"]))["done"] == 40
    finally:
        await database.close()


async def test_the_connection_runs_a_function_on_its_thread_after_what_was_queued() -> None:
    database = await db.Database.open(":memory:")
    try:
        await database.create_scenario("first", "uniform", {})
        renamed = asyncio.ensure_future(
            database._conn.execute("UPDATE scenarios SET scenario_name = 'renamed'")
        )
        await asyncio.sleep(0)  # the update is queued for aiosqlite's thread
        on_its_thread, names = await database._conn.run(
            lambda conn: (
                threading.current_thread() is not threading.main_thread(),
                conn.execute("SELECT scenario_name FROM scenarios").fetchall(),
            )
        )
        await renamed
        assert on_its_thread
        assert [tuple(row) for row in names] == [("renamed",)]
    finally:
        await database.close()


def _pool_workers() -> list[psutil.Process]:
    """The process pool's workers: children of this process's forkserver."""
    servers = [p for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline())]
    return [worker for server in servers for worker in server.children()]


async def _first_progress(client: Client, run_id: int) -> None:
    async with client.ws_connect("/ws/events") as ws, asyncio.timeout(30):
        async for msg in ws:
            event = json.loads(msg.data)
            if event["type"] == "run.progress" and event["run_id"] == run_id:
                return
            assert event.get("run_id") != run_id or event["type"] == "run.started", event


async def test_worker_process_killed_mid_run_fails_that_run_and_the_next_succeeds(
    make_client: MakeClient,
) -> None:
    client = await make_client(executor="process", workers=2)
    run = await start_run(client, scenario_ids=[1], replications=20_000, seed=1)
    await _first_progress(client, run["run_id"])
    workers = _pool_workers()
    assert workers, "no pool workers found"
    # All of them: a worker of an earlier test's pool may still be on its way out.
    for worker in workers:
        with contextlib.suppress(psutil.NoSuchProcess):
            worker.send_signal(signal.SIGKILL)
    ended = await wait_for_run(client, run["run_id"])
    assert ended["status"] == "failed"
    assert "worker process died" in ended["error"]
    again = await start_run(client, scenario_ids=[1, 2], replications=50, seed=2)
    finished = await wait_for_run(client, again["run_id"])
    assert finished["status"] == "completed"
    assert finished["done"] == finished["total"] == 100


async def _ingest(client: Client, scenario_id: int, first: int) -> int:
    rows = [
        {
            "scenario_id": scenario_id,
            "replication": first + i,
            "total_labor_costs": 9000.0 + i,
            "ontime_delivery_rate": 0.9,
        }
        for i in range(10)
    ]
    resp = await client.post("/api/results", json=rows)
    assert resp.status == 201, await resp.text()
    inserted: int = (await resp.json())["inserted"]
    return inserted


async def _read(client: Client, path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_twenty_runs_at_once_with_reads_and_ingestion_all_complete_exactly(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    starts = [start_run(client, replications=20 + i, seed=i) for i in range(20)]
    ingests = [_ingest(client, 1 + i % 3, 1 + 10 * i) for i in range(6)]
    reads = [_read(client, p) for p in ("/api/results", "/api/simulations", "/api/scenarios") * 5]
    results = await asyncio.gather(*starts, *ingests, *reads)
    runs = results[:20]
    assert sum(results[20:26]) == 60
    ended = await asyncio.gather(*(wait_for_run(client, r["run_id"]) for r in runs))
    assert [r["status"] for r in ended] == ["completed"] * 20
    for i, run in enumerate(ended):
        assert run["done"] == run["total"] == 3 * (20 + i)
        rows = await _read(client, f"/api/simulations/{run['run_id']}/results")
        assert len(rows) == run["total"]
    aggregates = await _read(client, "/api/results")
    runs_per_scenario = sum(20 + i for i in range(20))
    assert [a["replications"] for a in aggregates] == [runs_per_scenario + 20] * 3
    assert not [r for r in caplog.records if "locked" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
