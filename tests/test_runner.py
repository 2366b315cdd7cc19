"""The runner on its own, with a recording sink instead of storage and sockets."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from simsvc import backends, chunks, sim
from simsvc import runner as runner_module
from simsvc.runner import Batch, Finish, Job, Pair, PlainProcedure, Runner

T = TypeVar("T")


class RecordingSink:
    """Keeps what the runner reports; `stored_pairs` plays the part of the database."""

    def __init__(self, stored_pairs: set[Pair] | None = None) -> None:
        self.rows: list[chunks.Replication] = []
        self.events: list[tuple[str, int, str | None]] = []
        self.stored_pairs = stored_pairs or set()
        self.lookups: list[tuple[int, int]] = []

    async def run_started(self, run_id: int) -> None:
        self.events.append(("started", run_id, None))

    async def stored(self, run_id: int, units: Sequence[int], first: int, last: int) -> set[Pair]:
        self.lookups.append((first, last))
        return {(u, r) for u, r in self.stored_pairs if u in units and first <= r <= last}

    async def results_ready(self, run_id: int, rows: Sequence[chunks.Replication]) -> None:
        self.rows.extend(rows)

    async def run_finished(
        self, run_id: int, status: str, error: str | None, stopped_because: str | None
    ) -> None:
        self.events.append((status, run_id, error))


class HeldBackend:
    """A backend whose chunks finish only when the test says so."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.chunks: list[list[Pair]] = []
        self.plans: list[sim.ScenarioPlan] = []
        self.results: list[asyncio.Future[Any]] = []
        self.submitted = asyncio.Condition()

    async def submit(self, fn: Callable[..., T], *args: Any) -> T:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.chunks.append(args[-1])  # runner.timed(simulate_chunk, plan, seed, chunk)
        self.plans.append(args[-3])
        self.results.append(future)
        async with self.submitted:
            self.submitted.notify_all()
        result: T = await future
        return result

    async def until(self, count: int) -> None:
        async with asyncio.timeout(10), self.submitted:
            await self.submitted.wait_for(lambda: len(self.chunks) >= count)

    def finish(self, index: int, seconds: float = 0.001) -> None:
        """Chunk `index` answers no rows, as if it had computed for `seconds`."""
        self.results[index].set_result((seconds, chunks.Chunk([], {})))

    async def close(self) -> None:
        return None


def job(run_id: int, sink: RecordingSink, units: int, replications: int, **kw: Any) -> Job:
    plan: sim.ScenarioPlan = {u: (sim.UNIFORM, {}) for u in range(1, units + 1)}
    procedure = PlainProcedure(list(plan), replications)
    return Job(run_id, 1, plan, procedure, sink, **kw)


async def test_cancel_before_the_first_step_still_reports_cancelled() -> None:
    sink = RecordingSink()
    runner = Runner(backends.PoolBackend("inline", 1))
    task = runner.start(job(7, sink, 1, 100))
    assert runner.cancel(7)
    await task
    assert sink.events == [("cancelled", 7, None)]
    assert sink.rows == []
    await runner.close()


async def test_a_run_reports_every_pair_once_then_completes() -> None:
    sink = RecordingSink()
    runner = Runner(backends.PoolBackend("thread", 2))
    await runner.start(job(3, sink, 1, 57))
    assert sorted(r["replication"] for r in sink.rows) == list(range(1, 58))
    assert sink.events == [("started", 3, None), ("completed", 3, None)]
    await runner.close()


async def test_a_resumed_run_computes_only_the_pairs_not_stored() -> None:
    sink = RecordingSink(stored_pairs={(1, 1), (2, 2)})
    runner = Runner(backends.PoolBackend("inline", 1))
    await runner.start(job(4, sink, 2, 2, resumed=True))
    assert [(r["scenario_id"], r["replication"]) for r in sink.rows] == [(2, 1), (1, 2)]
    await runner.close()


async def test_a_huge_run_generates_only_the_chunks_in_flight() -> None:
    # 1,000 units x 100,000 replications: as a list, 10^8 pairs and gigabytes.
    backend = HeldBackend(workers=1)
    sink = RecordingSink()
    runner = Runner(backend)
    tracemalloc.start()
    try:
        task = runner.start(job(5, sink, 1000, 100_000))
        await backend.until(2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(backend.chunks) == 2  # 2 x workers in flight, nothing generated beyond
    assert peak < 5_000_000
    # The window follows the backend's capacity as it is now, read at every top-up.
    backend.workers = 3
    backend.finish(0)
    await backend.until(7)
    assert runner.cancel(5)
    await task
    assert len(backend.chunks) == 7
    assert [e[0] for e in sink.events] == ["started", "cancelled"]
    await runner.close()


class SlowStorage(RecordingSink):
    """A sink whose storing of a chunk lasts until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.storing = asyncio.Event()
        self.stored_may_end = asyncio.Event()

    async def results_ready(self, run_id: int, rows: Sequence[chunks.Replication]) -> None:
        self.storing.set()
        await self.stored_may_end.wait()
        await super().results_ready(run_id, rows)


async def test_a_worker_gets_its_next_chunk_before_the_last_one_is_stored() -> None:
    # Storing a chunk takes the service a while; a worker must not wait for it.
    backend = HeldBackend(workers=1)
    sink = SlowStorage()
    runner = Runner(backend)
    task = runner.start(job(8, sink, 1, 10_000))
    await backend.until(2)  # the window: one computing, one queued
    backend.finish(0)
    async with asyncio.timeout(10):
        await sink.storing.wait()
    await backend.until(3)  # sent while the first is still being stored
    assert not sink.stored_may_end.is_set()
    sink.stored_may_end.set()
    assert runner.cancel(8)
    await task
    await runner.close()


async def test_a_paced_run_computes_nothing_ahead_of_its_pace() -> None:
    backend = HeldBackend(workers=2)
    sink = SlowStorage()
    runner = Runner(backend)
    task = runner.start(job(9, sink, 1, 10, pace_s=0.001))
    await backend.until(1)
    backend.finish(0)
    async with asyncio.timeout(10):
        await sink.storing.wait()
    assert len(backend.chunks) == 1  # the next replication waits for this one's pace
    sink.stored_may_end.set()
    await backend.until(2)
    assert runner.cancel(9)
    await task
    await runner.close()


async def test_a_chunk_past_the_time_limit_fails_the_run_with_the_limit() -> None:
    backend = HeldBackend(workers=1)
    sink = RecordingSink()
    runner = Runner(backend, chunk_timeout_s=0.01)
    async with asyncio.timeout(10):
        await runner.start(job(6, sink, 1, 10))
    status, _, error = sink.events[-1]
    assert status == "failed"
    assert error is not None
    assert "limit of 0.01 s per chunk" in error
    await runner.close()


async def test_a_procedure_is_asked_until_it_finishes_and_its_reason_is_recorded() -> None:
    class TwoBatches:
        def __init__(self) -> None:
            self.asked = 0

        async def next_batch(self) -> Sequence[Batch] | Finish:
            self.asked += 1
            if self.asked > 2:
                return Finish("enough")
            return [Batch((1,), self.asked, self.asked), Batch((9,), 5, 6)]

    recorded: list[str | None] = []

    class Sink(RecordingSink):
        async def run_finished(
            self, run_id: int, status: str, error: str | None, why: str | None
        ) -> None:
            recorded.append(why)

    sink = Sink()
    plan: sim.ScenarioPlan = {1: (sim.UNIFORM, {}), 9: (sim.UNIFORM, {})}
    runner = Runner(backends.PoolBackend("inline", 1))
    await runner.start(Job(8, 3, plan, TwoBatches(), sink))
    pairs = sorted((r["scenario_id"], r["replication"]) for r in sink.rows)
    assert pairs == [(1, 1), (1, 2), (9, 5), (9, 5), (9, 6), (9, 6)]
    assert recorded == ["enough"]
    await runner.close()


async def test_a_chunk_ships_only_the_units_it_computes() -> None:
    # A 10,000-point sweep must not pickle every point's params into every chunk.
    backend = HeldBackend(workers=1)
    runner = Runner(backend)
    task = runner.start(job(8, RecordingSink(), 10_000, 1))
    await backend.until(2)
    for chunk, plan in zip(backend.chunks, backend.plans, strict=True):
        assert set(plan) == {unit for unit, _ in chunk}
    assert runner.cancel(8)
    await task
    await runner.close()


def test_a_chunks_units_are_counted_in_the_order_its_pairs_hold_them() -> None:
    # What a chunk ships (its plan) and how its time is read (work per unit) rest on
    # these counts; a resumed run's chunks miss some pairs.
    block = runner_module.block_pairs([3, 1, 7], 1, 4)
    kept = runner_module.without_pairs(block, {(1, 2), (7, 4), (3, 1)})
    units = runner_module.chunk_units(kept)
    assert units == {1: 3, 7: 3, 3: 3}
    assert list(units) == [1, 7, 3]
    assert runner_module.chunk_units(block[:4]) == {3: 2, 1: 1, 7: 1}
