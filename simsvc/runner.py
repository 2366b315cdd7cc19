"""The runner: executes a run as chunks of replications on a backend, generated lazily.

A run's batches come from its `Procedure`: each call to `next_batch` answers with the
`Batch`es to compute next (units x a replication range), or `Finish` with the reason
the run stops. The runner turns each batch into chunks of (unit, replication) pairs as
the backend has room for them, never the whole run at once: memory is O(chunks in
flight) whatever the run's size. It knows nothing of storage or sockets: it reports to
the job's `RunSink`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from .backends import Backend
from .chunks import Chunk, simulate_chunk
from .sim import ScenarioPlan

log = logging.getLogger(__name__)

# A chunk computes for about this long, so that progress stays live and a chunk that
# cannot be stopped (on a thread or a Dask worker) ends soon after its run is cancelled.
CHUNK_SECONDS = 0.25
# Near a batch's end chunks shrink (guided self-scheduling): each holds at most one
# worker's share of the pairs left. Taken by whichever worker is free, in the order they
# were made, chunks of halving size let the workers finish together. Halving rather than
# shrinking more gently: each chunk costs the service a fixed share of CPU besides its
# rows (shipping it, its own transaction, the loop's bookkeeping), which two workers on
# two cores pay out of their own time. Never less than this much computing.
MIN_CHUNK_SECONDS = 0.02
# A chunk's rows, as the service holds them until they are stored, take at most about
# this much memory: 2 x workers chunks are in flight. Pickled, they are 5-10x smaller.
CHUNK_BYTES = 4 * 2**20
# A stored row in memory besides its metrics text: the tuple, its numbers, the text
# object (measured: 160 bytes a `uniform` row with `{}`, 330 with 120 characters).
ROW_BYTES = 210
# Seconds per work unit (see `sim.Model.work`) assumed until a chunk has been timed.
ASSUMED_SECONDS_PER_WORK = 1e-6
# Until then, a chunk holds at most this many replications: a model may understate
# its work.
PROBE_REPLICATIONS = 16
# How much a newly timed chunk moves the estimate of the model's speed.
SPEED_WEIGHT = 0.5
# A resumed run looks up what is stored this many pairs at a time.
LOOKUP_PAIRS = 10_000
DEFAULT_CHUNK_TIMEOUT_S = 300.0
# How long a stopping run waits for its cancelled chunks to let go of their workers.
ABANDON_WAIT_S = 1.0

Pair = tuple[int, int]  # (unit id, replication)
# A chunk's pairs: an (n, 2) int64 array of (unit id, replication) rows.
Pairs = np.ndarray[Any, np.dtype[np.int64]]
T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    """Replications `first..last` (inclusive, from 1) of each of `units`."""

    units: tuple[int, ...]
    first: int
    last: int

    def __len__(self) -> int:
        return len(self.units) * max(0, self.last - self.first + 1)


@dataclass(frozen=True)
class Finish:
    """A procedure's decision that the run is over, and why (`None` for a plain run)."""

    stopped_because: str | None = None


class Procedure(Protocol):
    """Chooses a run's next batches; a plain run, a precision run or an experiment."""

    async def next_batch(self) -> Sequence[Batch] | Finish: ...


class PlainProcedure:
    """Replications 1..n of every unit, then finish."""

    def __init__(self, units: Sequence[int], replications: int) -> None:
        self._batch = Batch(tuple(units), 1, replications)
        self._asked = False

    async def next_batch(self) -> Sequence[Batch] | Finish:
        if self._asked:
            return Finish()
        self._asked = True
        return [self._batch]


class RunSink(Protocol):
    """What the runner reports to: storage and broadcasting live behind it."""

    async def run_started(self, run_id: int) -> None: ...

    async def results_ready(self, run_id: int, rows: Chunk) -> None:
        """A computed chunk: a `Sequence[Replication]`, already encoded for storage."""
        ...

    async def stored(self, run_id: int, units: Sequence[int], first: int, last: int) -> set[Pair]:
        """The pairs of these units and replications `first..last` already stored."""
        ...

    async def run_finished(
        self, run_id: int, status: str, error: str | None, stopped_because: str | None
    ) -> None: ...


class ChunkTimeout(Exception):
    """A chunk ran past the per-chunk time limit."""


@dataclass
class Job:
    """Everything the runner needs to execute one run."""

    run_id: int
    seed: int
    plan: ScenarioPlan  # unit id -> (model, params)
    procedure: Procedure
    sink: RunSink
    pace_s: float = 0.0
    resumed: bool = False  # some pairs may be stored already: skip them
    kind: str = "run"  # ids are unique within a kind ("run", "experiment")
    started: bool = field(default=False, init=False)
    # Measured from timed chunks; None until the first one comes back.
    seconds_per_work: float | None = field(default=None, init=False)
    row_bytes: float = field(default=ROW_BYTES, init=False)
    cancel_requested: bool = field(default=False, init=False)
    finishing: bool = field(default=False, init=False)  # its outcome is being recorded


class Runner:
    """Runs each job as an asyncio task that feeds chunks of replications to a backend."""

    def __init__(self, backend: Backend, chunk_timeout_s: float = DEFAULT_CHUNK_TIMEOUT_S) -> None:
        self.backend = backend
        self.chunk_timeout_s = chunk_timeout_s
        self._jobs: dict[tuple[str, int], tuple[Job, asyncio.Task[None]]] = {}

    def start(self, job: Job) -> asyncio.Task[None]:
        task = asyncio.create_task(self._run(job), name=f"simsvc-{job.kind}-{job.run_id}")
        self._jobs[job.kind, job.run_id] = (job, task)
        task.add_done_callback(lambda _: self._forget(job))
        return task

    def _forget(self, job: Job) -> None:
        # A run restarted (extend, resume) must not be dropped by its predecessor's callback.
        entry = self._jobs.get((job.kind, job.run_id))
        if entry is not None and entry[0] is job:
            del self._jobs[job.kind, job.run_id]

    def is_active(self, run_id: int, kind: str = "run") -> bool:
        return (kind, run_id) in self._jobs

    def cancel(self, run_id: int, kind: str = "run") -> bool:
        """Ask a run to stop, once however often asked; False if it is not running here."""
        entry = self._jobs.get((kind, run_id))
        if entry is None:
            return False
        job, task = entry
        # A second cancel of the task would land inside the handler recording the first.
        if job.cancel_requested or job.finishing:
            return True
        job.cancel_requested = True
        # A task cancelled before its first step never runs its handlers; an unstarted
        # job sees the flag as it starts instead.
        if job.started:
            task.cancel()
        return True

    async def wait(self, run_id: int, kind: str = "run") -> None:
        """Until the job (if any) has ended and recorded its outcome."""
        entry = self._jobs.get((kind, run_id))
        if entry is not None:
            await asyncio.gather(entry[1], return_exceptions=True)

    async def interrupt(self) -> None:
        """Stop every run without recording an outcome: the caller marks them interrupted."""
        tasks = [task for _, task in self._jobs.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Interrupt every run, then stop the backend's workers."""
        await self.interrupt()
        await self.backend.close()

    async def _run(self, job: Job) -> None:
        job.started = True
        status, error, why = "completed", None, None
        try:
            if job.cancel_requested:
                raise asyncio.CancelledError
            await job.sink.run_started(job.run_id)
            why = await self._batches(job)
        except asyncio.CancelledError:
            if not job.cancel_requested:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            status = "cancelled"
        except Exception as exc:
            log.exception("run %d failed", job.run_id)
            status, error = "failed", _describe(exc)
        job.finishing = True
        log.info("run %d %s", job.run_id, status)
        await job.sink.run_finished(job.run_id, status, error, why)

    async def _batches(self, job: Job) -> str | None:
        """Compute what the procedure asks for until it finishes; why it finished."""
        while True:
            decision = await job.procedure.next_batch()
            if isinstance(decision, Finish):
                return decision.stopped_because
            for batch in decision:
                await self._execute(job, batch)

    async def _execute(self, job: Job, batch: Batch) -> None:
        """Compute a batch in chunks, as many in flight as the backend has room for now."""
        # Insertion-ordered, so chunks done together are stored in the order they were sent.
        in_flight: dict[asyncio.Task[Chunk], None] = {}
        chunks = self._chunks(job, batch)
        try:
            await self._top_up(job, in_flight, chunks)
            while in_flight:
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                if job.pace_s == 0:
                    # The workers get their next chunks before these are stored, so that
                    # none waits for storage; a paced run computes nothing ahead of its pace.
                    await self._top_up(job, in_flight, chunks)
                await self._store(job, in_flight, done)
                await self._top_up(job, in_flight, chunks)
        finally:
            # Chunks nobody will store: a process backend kills the workers computing them
            # as it sees the cancel. Waited for, so that a cancelled run has let go of its
            # workers when its outcome is recorded, but never for long (a remote backend).
            for task in in_flight:
                task.cancel()
            if in_flight:
                done, _ = await asyncio.wait(in_flight, timeout=ABANDON_WAIT_S)
                for task in done:
                    if not task.cancelled():
                        task.exception()  # not stored: the run has already ended
            await chunks.aclose()

    def _window(self, job: Job) -> int:
        return 1 if job.pace_s > 0 else 2 * max(1, self.backend.workers)

    async def _chunks(self, job: Job, batch: Batch) -> AsyncGenerator[Pairs, None]:
        """The batch's pairs not yet stored, replication-major, a chunk at a time.

        Pairs are made and cut a block at a time as arrays: no bytecode runs per pair
        on the event loop.
        """
        step = max(1, LOOKUP_PAIRS // max(1, len(batch.units)))
        work = max((pair_work(job, u) for u in batch.units), default=1.0)
        left = len(batch)  # pairs of the blocks not yet made
        pending = block_pairs((), 1, 0)
        for first in range(batch.first, batch.last + 1, step):
            last = min(batch.last, first + step - 1)
            block = block_pairs(batch.units, first, last)
            left -= len(block)
            if job.resumed:
                stored = await job.sink.stored(job.run_id, batch.units, first, last)
                block = without_pairs(block, stored)
            pending = np.concatenate((pending, block)) if len(pending) else block
            while len(pending):
                # Sized when the chunk is wanted, by what is known and left now.
                size = self._chunk_size(job, left + len(pending), work)
                if len(pending) < size and last < batch.last:
                    break  # the next block fills it
                chunk, pending = pending[:size], pending[size:]
                yield chunk

    def _chunk_size(self, job: Job, left: int, work: float) -> int:
        if job.pace_s > 0:
            return 1
        workers = self.backend.workers
        return chunk_size(left, work, job.seconds_per_work, workers, job.row_bytes)

    async def _top_up(
        self,
        job: Job,
        in_flight: dict[asyncio.Task[Chunk], None],
        chunks: AsyncGenerator[Pairs, None],
    ) -> None:
        """Send chunks until the backend has its window of chunks to compute, or none is left.

        Chunks computed but not yet stored do not count: they no longer hold a worker.
        """
        # Read at every top-up: a cluster's capacity may change during a run.
        while sum(not task.done() for task in in_flight) < self._window(job):
            # Made only now, so it is sized by every chunk timed so far.
            chunk = await anext(chunks, None)
            if chunk is None:
                return
            in_flight[asyncio.ensure_future(self._compute(job, chunk))] = None

    async def _store(
        self, job: Job, in_flight: dict[asyncio.Task[Chunk], None], done: set[asyncio.Task[Chunk]]
    ) -> None:
        """Store the computed chunks `done`, in the order they were sent."""
        for task in [t for t in in_flight if t in done]:
            del in_flight[task]
            await job.sink.results_ready(job.run_id, task.result())
            if job.pace_s > 0:
                await asyncio.sleep(job.pace_s)

    async def _compute(self, job: Job, chunk: Pairs) -> Chunk:
        units = chunk_units(chunk)
        try:
            async with asyncio.timeout(self.chunk_timeout_s):
                answer: tuple[float, Chunk] = await self.backend.submit(
                    timed, simulate_chunk, chunk_plan(job.plan, units), job.seed, chunk
                )
        except TimeoutError:
            raise ChunkTimeout(
                f"a chunk of {len(chunk)} replications ran longer than the limit of "
                f"{self.chunk_timeout_s:g} s per chunk; the run was stopped"
            ) from None
        seconds, rows = answer
        learn_speed(job, units, seconds)
        learn_row_bytes(job, rows)
        return rows


def block_pairs(units: Sequence[int], first: int, last: int) -> Pairs:
    """(unit, r) for r in first..last and each of `units`, replication-major."""
    reps = np.arange(first, last + 1, dtype=np.int64)
    column = np.asarray(units, dtype=np.int64)
    pairs: Pairs = np.column_stack((np.tile(column, len(reps)), np.repeat(reps, len(column))))
    return pairs


def without_pairs(block: Pairs, stored: set[Pair]) -> Pairs:
    """The pairs of `block` that are not in `stored`, in their order."""
    if not stored:
        return block
    keep = [pair not in stored for pair in zip(*block.T.tolist(), strict=True)]
    kept: Pairs = block[np.array(keep, dtype=bool)]
    return kept


def chunk_units(chunk: Pairs) -> dict[int, int]:
    """Each unit of a chunk with the number of its pairs there, in order of appearance.

    One pass in C: about half of what `np.unique` costs the event loop on a chunk of
    a few hundred pairs whose memory other threads have just evicted from the caches.
    """
    return Counter(chunk[:, 0].tolist())


def chunk_plan(plan: ScenarioPlan, units: Iterable[int]) -> ScenarioPlan:
    """The part of a plan that a chunk's units use: a sweep of 10,000 points ships a few."""
    return {unit: plan[unit] for unit in units}


def timed(fn: Callable[..., T], *args: Any) -> tuple[float, T]:
    """`fn(*args)` and the seconds it took where it ran; module-level so any backend ships it."""
    began = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - began, result


def pair_work(job: Job, unit: int) -> float:
    model, params = job.plan[unit]
    return max(model.work(params), 1.0)


def learn_speed(job: Job, units: Mapping[int, int], seconds: float) -> None:
    """Fold a timed chunk (`units`: each unit and its pair count) into the job's estimate
    of seconds per work unit."""
    work = sum(pair_work(job, unit) * n for unit, n in units.items())
    measured = max(seconds, 1e-9) / work
    known = job.seconds_per_work
    job.seconds_per_work = (
        measured if known is None else SPEED_WEIGHT * measured + (1 - SPEED_WEIGHT) * known
    )


def learn_row_bytes(job: Job, chunk: Chunk) -> None:
    """The memory a row of this job takes, from a few rows' metrics text (no loop per row)."""
    rows = chunk.rows
    if not rows:
        return
    sample = (rows[0], rows[len(rows) // 2], rows[-1])
    text = max(len(row[5]) for row in sample)
    job.row_bytes = max(job.row_bytes, ROW_BYTES + text)


def chunk_size(
    left: int, work: float, speed: float | None, workers: int, row_bytes: float = ROW_BYTES
) -> int:
    """How many of the `left` replications (each at most `work` units) the next chunk holds.

    About `CHUNK_SECONDS` of computing at `speed` seconds per unit (assumed from the
    model's own `work` until measured, when chunks are also at most `PROBE_REPLICATIONS`),
    at most one worker's share of what is left, but, once the speed is measured, not
    under `MIN_CHUNK_SECONDS` of computing; within `CHUNK_BYTES` of rows of `row_bytes`
    each.
    """
    seconds = work * (speed or ASSUMED_SECONDS_PER_WORK)
    by_time = int(CHUNK_SECONDS / seconds)
    by_share = math.ceil(left / max(workers, 1))
    if speed is None:
        return max(1, min(PROBE_REPLICATIONS, by_share, by_time))
    by_share = max(by_share, int(MIN_CHUNK_SECONDS / seconds))
    return max(1, min(int(CHUNK_BYTES / row_bytes), by_share, by_time))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BrokenProcessPool):
        return "a worker process died while computing replications (BrokenProcessPool)"
    if isinstance(exc, ChunkTimeout):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
