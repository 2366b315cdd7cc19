"""Worker processes stop computing work nobody waits for, and chunks are sized by time."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from simsvc import chunks, sim
from simsvc.runner import (
    CHUNK_BYTES,
    MIN_CHUNK_SECONDS,
    PROBE_REPLICATIONS,
    ROW_BYTES,
    Job,
    PlainProcedure,
    Runner,
    chunk_size,
)
from simsvc.web import Config, create_app
from simsvc.workers import WorkerPool

from .conftest import Client, start_run, wait_for_run
from .holding_model import HOLDING, Held, Holder, hold_once
from .test_process import read_db
from .test_runner import HeldBackend, RecordingSink

# How long a stopped worker may take to be gone: it is killed at once, but on a busy
# machine a low-priority process can wait a while for the scheduler to tear it down.
STOP_LIMIT_S = 3.0


@pytest.fixture
async def holder() -> AsyncIterator[Holder]:
    async with Holder() as holder:
        yield holder


async def _process_client(aiohttp_client: AiohttpClient, **overrides: Any) -> Client:
    config = Config(**{"db_path": ":memory:", "workers": 2, "executor": "process", **overrides})
    return await aiohttp_client(create_app(config, {**sim.load_models(), "holding": HOLDING}))


async def _hold_workers(client: Client, holder: Holder, count: int = 2) -> tuple[int, list[Held]]:
    """Start a `holding` run and wait until it holds `count` worker processes."""
    resp = await client.post(
        "/api/scenarios",
        json={"scenario_name": "holds", "model": "holding", "params": {"port": holder.port}},
    )
    assert resp.status == 201, await resp.text()
    scenario_id = (await resp.json())["scenario_id"]
    run = await start_run(client, scenario_ids=[scenario_id], replications=10, seed=1)
    held = [await holder.next() for _ in range(count)]
    assert len({h.pid for h in held}) == count
    return run["run_id"], held


async def _all_end(held: list[Held]) -> float:
    """Seconds until every held worker process has died."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(STOP_LIMIT_S):
        await asyncio.gather(*(h.ended() for h in held))
    return loop.time() - began


async def test_cancel_kills_the_workers_computing_the_run_and_new_ones_take_over(
    aiohttp_client: AiohttpClient, holder: Holder
) -> None:
    client = await _process_client(aiohttp_client)
    run_id, held = await _hold_workers(client, holder)
    resp = await client.post(f"/api/simulations/{run_id}/cancel")
    assert resp.status == 200
    assert (await resp.json())["status"] == "cancelled"
    await _all_end(held)
    # The freed places take new work at once: nothing cancelled is queued before it.
    small = await start_run(client, scenario_ids=[1], replications=2, seed=2)
    finished = await wait_for_run(client, small["run_id"], limit_s=10)
    assert finished["status"] == "completed"
    assert holder.arrivals.empty()  # no replication of the cancelled run started again


async def test_a_chunk_past_the_time_limit_does_not_keep_its_worker(
    aiohttp_client: AiohttpClient, holder: Holder
) -> None:
    client = await _process_client(aiohttp_client, chunk_timeout_s=2.0)
    # Workers that have computed once start the next chunk at once, well within the limit.
    warm_up = await start_run(client, scenario_ids=[1], replications=20, seed=3)
    await wait_for_run(client, warm_up["run_id"])
    run_id, held = await _hold_workers(client, holder, count=1)
    ended = await wait_for_run(client, run_id)
    assert ended["status"] == "failed"
    assert "limit of 2 s per chunk" in ended["error"]
    await _all_end(held)


async def test_shutdown_kills_busy_workers_and_marks_the_run_interrupted(
    aiohttp_client: AiohttpClient, holder: Holder, tmp_path: Path
) -> None:
    path = tmp_path / "simsvc.db"
    client = await _process_client(aiohttp_client, db_path=str(path))
    run_id, held = await _hold_workers(client, holder)
    async with asyncio.timeout(STOP_LIMIT_S):
        await client.close()
    await _all_end(held)
    assert read_db(path, "SELECT status FROM runs WHERE run_id = ?", (run_id,)) == [
        ("interrupted",)
    ]


async def test_a_worker_takes_its_next_call_without_waiting_for_the_event_loop() -> None:
    # Between two chunks the event loop may be busy storing the last one: the worker
    # must not sit idle until the loop has handed it the next.
    pool = WorkerPool(1, "forkserver")
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(30)
        port = server.getsockname()[1]
        calls = [asyncio.ensure_future(pool.submit(hold_once, port)) for _ in range(2)]
        await asyncio.sleep(0)  # both calls are submitted
        # From here on the event loop is blocked: the second call arrives without it.
        for _ in calls:
            held, _ = server.accept()
            assert held.recv(1) == b"!"
            held.close()
    pids = await asyncio.gather(*calls)
    assert pids[0] == pids[1]  # one worker computed both, one after the other
    await pool.close()


async def test_an_oserror_raised_by_a_call_is_its_answer_and_the_worker_lives_on() -> None:
    pool = WorkerPool(1, "forkserver")
    pid = await pool.submit(os.getpid)
    with pytest.raises(FileNotFoundError):
        await pool.submit(os.stat, "/nonexistent/simsvc")
    assert await pool.submit(os.getpid) == pid
    await pool.close()


# -- chunks sized by time --------------------------------------------------------------


def _job(sink: RecordingSink, model: sim.Model, params: dict[str, Any], reps: int) -> Job:
    plan: sim.ScenarioPlan = {1: (model, params)}
    return Job(9, 1, plan, PlainProcedure([1], reps), sink)


@pytest.mark.parametrize(
    ("model", "params", "first", "seconds_per_pair", "then"),
    [
        # a heavy warehouse shift (about 100,000 orders): its declared work sizes the
        # first chunks (0.25 s at a microsecond a unit); timed at 10 ms a replication,
        # chunks grow to 0.25 s of it
        (sim.WAREHOUSE, {"orders_per_hour": 5000, "shift_hours": 20}, 2, 0.01, 25),
        # a cheap model is probed with small chunks, then gets chunks as large as the
        # memory a chunk's rows may take (0.25 s of it would be 25,000)
        (sim.UNIFORM, {}, PROBE_REPLICATIONS, 0.00001, CHUNK_BYTES // ROW_BYTES),
        # a model far slower than it says (the default `work`): one replication a chunk
        (sim.UNIFORM, {}, PROBE_REPLICATIONS, 0.5, 1),
    ],
)
async def test_chunks_are_sized_by_time_learnt_from_the_chunks_that_came_back(
    model: sim.Model, params: dict[str, Any], first: int, seconds_per_pair: float, then: int
) -> None:
    params = {**model.defaults, **params}
    backend = HeldBackend(workers=1)
    runner = Runner(backend)
    task = runner.start(_job(RecordingSink(), model, params, 100_000))
    await backend.until(2)
    assert [len(c) for c in backend.chunks] == [first, first]
    backend.finish(0, seconds=seconds_per_pair * first)
    await backend.until(3)
    assert len(backend.chunks[2]) == then
    runner.cancel(9)
    await task
    await runner.close()


@pytest.mark.parametrize(
    ("left", "seconds_per_pair", "workers", "row_bytes", "size"),
    [
        # early in a long run of a slow model: 0.25 s of computing
        (100_000, 0.001, 2, ROW_BYTES, 250),
        # a cheap model: bounded by the memory its rows take, not by time (25,000)
        (1_000_000, 0.00001, 2, ROW_BYTES, CHUNK_BYTES // ROW_BYTES),
        # rows with long metrics text take more memory: fewer of them
        (1_000_000, 0.00001, 2, 4 * ROW_BYTES, CHUNK_BYTES // (4 * ROW_BYTES)),
        # near the end: one worker's share of what is left
        (400, 0.001, 2, ROW_BYTES, 200),
        # at the very end, not less than MIN_CHUNK_SECONDS of computing
        (40, 0.001, 2, ROW_BYTES, round(MIN_CHUNK_SECONDS / 0.001)),
        # more workers, smaller shares
        (1600, 0.001, 8, ROW_BYTES, 200),
        # not yet timed: a short run is still shared among the workers, whatever the
        # assumed speed says of a chunk's least worthwhile size
        (10, None, 2, ROW_BYTES, 5),
    ],
)
def test_chunks_shrink_as_a_batch_nears_its_end(
    left: int, seconds_per_pair: float | None, workers: int, row_bytes: int, size: int
) -> None:
    work = 100.0
    speed = None if seconds_per_pair is None else seconds_per_pair / work
    assert chunk_size(left, work, speed, workers, row_bytes) == size


async def test_the_last_chunks_of_a_run_are_small_so_the_workers_finish_together() -> None:
    per_pair = 0.0001  # 0.25 s is 2,500 pairs; MIN_CHUNK_SECONDS is 200
    backend = HeldBackend(workers=2)
    runner = Runner(backend)
    task = runner.start(_job(RecordingSink(), sim.UNIFORM, {}, 2000))
    await backend.until(4)  # the window: two chunks a worker, probes until one is timed
    finished = 0
    while sum(len(c) for c in backend.chunks) < 2000:
        backend.finish(finished, seconds=per_pair * len(backend.chunks[finished]))
        finished += 1
        await backend.until(finished + 4)
    while finished < len(backend.chunks):
        backend.finish(finished, seconds=per_pair * len(backend.chunks[finished]))
        finished += 1
    await task
    await runner.close()
    # After the probes, one worker's share of what is left (half, with two workers),
    # down to 200, and what remains.
    assert [len(c) for c in backend.chunks] == [16] * 4 + [968, 484, 242, 200, 42]


async def test_rows_with_long_metrics_make_smaller_chunks() -> None:
    backend = HeldBackend(workers=1)
    runner = Runner(backend)
    task = runner.start(_job(RecordingSink(), sim.UNIFORM, {}, 1_000_000))
    await backend.until(2)
    text = '{"k":"' + "x" * (3 * ROW_BYTES - 8) + '"}'  # a model's long metrics JSON
    assert len(text) == 3 * ROW_BYTES
    rows = [(1, r, 1, 1.0, 1.0, text) for r in range(1, PROBE_REPLICATIONS + 1)]
    backend.results[0].set_result((1e-6 * PROBE_REPLICATIONS, chunks.Chunk(rows, {})))
    await backend.until(3)
    assert len(backend.chunks[2]) == CHUNK_BYTES // (4 * ROW_BYTES)
    runner.cancel(9)
    await task
    await runner.close()
