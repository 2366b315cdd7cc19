"""Dask distributed as a place to compute replications, for when one machine is not enough.

`--executor dask://HOST:PORT` sends chunks of replications to an existing cluster;
`--executor dask-local` starts a `LocalCluster` on this machine. Needs the optional
extra, installed from the simsvc source tree: `pip install '.[dask]'`. Every worker must
have simsvc (and any plug-in models) installed, because chunks name their models by
import path.

The backend follows the cluster through its life: it reads the cluster's size every
`poll_s` (so in-flight work follows workers joining and leaving), replaces a client that
lost its scheduler (a `distributed.Client` gives up for good after its timeout), and fails
a chunk that has waited longer than `give_up_s` for a scheduler or a worker.

Results stay bit-identical to the other executors: a chunk is the same
`chunks.simulate_chunk` call, and each replication draws only from `sim.stream(seed, r)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import dask
from distributed import Client, Future, LocalCluster, WorkerPlugin
from distributed.client import FutureCancelledError

from . import StartupError
from .backends import ClusterTimeouts, ExecutorState, ExecutorStatus
from .workers import WORKER_NICENESS

log = logging.getLogger(__name__)

T = TypeVar("T")
SCHEME = "dask://"
LOCAL = "dask-local"


class NoWorkersError(Exception):
    """The cluster has had no worker for longer than the run may wait."""


class SchedulerUnavailableError(Exception):
    """The scheduler has been unreachable for longer than the run may wait."""


def is_dask(executor: str) -> bool:
    return executor == LOCAL or executor.startswith(SCHEME)


def scheduler_address(executor: str) -> str:
    """`dask://host:port` -> the scheduler's TCP address."""
    return "tcp://" + executor.removeprefix(SCHEME)


def _iso(wall: float) -> str:
    return (
        datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class LowerPriority(WorkerPlugin):
    """Runs each `dask-local` worker at the process pool's lower priority."""

    def setup(self, worker: Any) -> None:
        # Replications are batch work; the service's event loop should not wait for a core.
        if hasattr(os, "nice"):  # POSIX only
            os.nice(WORKER_NICENESS)


class DaskBackend:
    """A `backends.Backend` on a Dask cluster; `workers` is the cluster's current thread count."""

    def __init__(
        self,
        client: Client,
        timeouts: ClusterTimeouts,
        address: str,
        cluster: LocalCluster | None = None,
    ) -> None:
        self._client = client
        self._cluster = cluster
        self._timeouts = timeouts
        self.address = address
        self.threads = 0
        self.worker_count = 0
        self.outstanding = 0  # chunks submitted and not yet returned
        self._state: ExecutorState = "no workers"
        self._since = time.time()
        self._outage: tuple[float, float] | None = (time.monotonic(), self._since)
        self._reported = False  # the current outage has been logged and announced
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._listeners: list[Callable[[], None]] = []
        self._watcher: asyncio.Task[None] | None = None

    # -- opening and closing ----------------------------------------------------------

    @classmethod
    async def open(cls, executor: str, workers: int, timeouts: ClusterTimeouts) -> DaskBackend:
        """Connect to the cluster `executor` names, or start a local one."""
        if executor == LOCAL:
            backend = await cls._local(workers, timeouts)
        else:
            address = scheduler_address(executor)
            try:
                client = await Client(address, asynchronous=True, timeout=timeouts.connect_s)
            except OSError as exc:
                reason = (str(exc).splitlines() or [type(exc).__name__])[0]
                raise StartupError(
                    f"cannot reach the Dask scheduler at {address} within "
                    f"{timeouts.connect_s:g} s ({reason}); start `dask scheduler` there first"
                ) from None
            backend = cls(client, timeouts, address)
        await backend._refresh()
        backend._watcher = asyncio.create_task(backend._watch(), name="simsvc-dask-watch")
        log.info(
            "%s the Dask scheduler at %s: %d workers, %d threads (in-flight work follows "
            "the cluster's size)",
            "started" if backend._cluster is not None else "connected to",
            backend.address,
            backend.worker_count,
            backend.threads,
        )
        return backend

    @classmethod
    async def _local(cls, workers: int, timeouts: ClusterTimeouts) -> DaskBackend:
        # One thread per worker process: the models hold the GIL. The scheduler's HTTP
        # server (which LocalCluster starts even without the dashboard) gets a free
        # loopback port instead of 8787, and serves no dashboard.
        # On the service's own machine the workers yield the CPU to its event loop, as the
        # process pool's do, and skip the statistical profiler nobody reads here.
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            cluster = await LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                scheduler_kwargs={"dashboard": False},
                asynchronous=True,
            )
        client = await Client(cluster, asynchronous=True)
        await client.register_plugin(LowerPriority(), name="simsvc-lower-priority")
        return cls(client, timeouts, cluster.scheduler_address, cluster)

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        self._set_state("closed")
        await self._close_client(self._client)
        cluster, self._cluster = self._cluster, None
        closing = cluster.close() if cluster is not None else None
        if closing is not None:  # an asynchronous cluster answers with an awaitable
            with contextlib.suppress(TimeoutError):
                await closing

    # -- what the rest of the service sees --------------------------------------------

    @property
    def workers(self) -> int:
        """How many chunks the cluster can compute at once now (at least 1)."""
        return max(1, self.threads)

    def status(self) -> ExecutorStatus:
        return ExecutorStatus(
            executor="dask",
            state=self._state,
            workers=self.worker_count,
            threads=self.threads,
            since=_iso(self._since),
            scheduler=self.address,
        )

    def waiting_since(self) -> str | None:
        """Since when runs have been waiting for a worker or the scheduler, once reported."""
        if self._outage is None or not self._reported:
            return None
        return _iso(self._outage[1])

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` when runs start or stop waiting for workers."""
        self._listeners.append(listener)

    async def changed(self) -> None:
        """Wait for the next change of state, size or outstanding chunks."""
        await self._changed.wait()

    # -- computing --------------------------------------------------------------------

    async def submit(self, fn: Callable[..., T], *args: Any) -> T:
        began = time.monotonic()
        self._count(+1)
        try:
            while True:
                client = await self._usable_client(began)
                future: Future[Any] | None = None
                try:
                    # pure=False: two chunks with equal arguments are still two computations.
                    future = client.submit(fn, *args, pure=False)
                    result: T = await self._result(client, future, began)
                    return result
                except Exception as exc:
                    if not self._lost(client, exc):
                        raise
                    log.info("a chunk was lost with the scheduler connection; resubmitting it")
                    self._wake.set()  # the watcher replaces the client
                    await self._until_change(self._timeouts.poll_s)
        finally:
            self._count(-1)

    async def _result(self, client: Client, future: Future[Any], began: float) -> Any:
        """The chunk's rows, unless the run has waited too long for the cluster."""
        computing = asyncio.ensure_future(_outcome(future))
        # Read on every path: a chunk abandoned by a cancel must not log its error.
        computing.add_done_callback(_retrieve)
        giving_up = asyncio.ensure_future(self._give_up(began))
        try:
            done, _ = await asyncio.wait(
                {computing, giving_up}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            giving_up.cancel()
            if not computing.done():
                await self._forget(client, future, computing)
        if computing in done:
            return computing.result()
        raise giving_up.result()

    async def _forget(
        self, client: Client, future: Future[Any], computing: asyncio.Task[Any]
    ) -> None:
        """Take a chunk off the cluster, whatever state the client is in.

        The chunk is cancelled first and its waiter then ends by itself: cutting the waiter
        short inside the client's gather would orphan the gather's helper tasks, which then
        log "Task exception was never retrieved".
        """
        with contextlib.suppress(Exception):
            await asyncio.shield(client.cancel([future]))
        await asyncio.wait({computing}, timeout=self._timeouts.connect_s)
        computing.cancel()

    def _lost(self, client: Client, exc: Exception) -> bool:
        if isinstance(exc, FutureCancelledError) and exc.reason == "scheduler-connection-lost":
            return True
        return client is not self._client or client.status != "running"

    async def _usable_client(self, began: float) -> Client:
        while self._state == "reconnecting":
            error = self._overdue(began)
            if error is not None:
                raise error
            await self._until_change(self._remaining(began))
        if self._state == "closed":
            raise SchedulerUnavailableError("the Dask executor is closed")
        return self._client

    async def _give_up(self, began: float) -> Exception:
        """Returns (never raises) the error once the chunk has waited too long."""
        while True:
            error = self._overdue(began)
            if error is not None:
                return error
            await self._until_change(self._remaining(began))

    def _overdue(self, began: float) -> Exception | None:
        if self._outage is None:
            return None
        waited = time.monotonic() - max(self._outage[0], began)
        limit = self._timeouts.give_up_s
        if waited < limit:
            return None
        hint = "the finished replications are kept; resume the run once the cluster is back"
        if self._state == "reconnecting":
            return SchedulerUnavailableError(
                f"the Dask scheduler at {self.address} has been unreachable for {waited:.0f} s "
                f"(limit {limit:g} s, --executor-wait); {hint}"
            )
        return NoWorkersError(
            f"the Dask cluster has had no worker for {waited:.0f} s "
            f"(limit {limit:g} s, --executor-wait); {hint}"
        )

    def _remaining(self, began: float) -> float | None:
        if self._outage is None:
            return None
        return max(0.0, max(self._outage[0], began) + self._timeouts.give_up_s - time.monotonic())

    async def _until_change(self, limit_s: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await _within(self._changed.wait(), limit_s)

    # -- following the cluster --------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            try:
                if self._client.status != "running":
                    await self._reconnect()
                await self._refresh()
            except Exception as exc:  # the next turn sees the client's state
                log.debug("reading the Dask cluster's size failed: %r", exc)
            self._report_outage()
            with contextlib.suppress(TimeoutError):
                await _within(self._wake.wait(), self._timeouts.poll_s)
            self._wake.clear()

    async def _refresh(self) -> None:
        threads: dict[str, int] = await _within(self._client.nthreads(), self._timeouts.connect_s)
        count, total = len(threads), sum(threads.values())
        if (count, total) != (self.worker_count, self.threads):
            log.info(
                "Dask cluster: %d workers, %d threads; up to %d chunks in flight",
                count,
                total,
                2 * max(1, total),
            )
            self.worker_count, self.threads = count, total
            self._notify()
        self._set_state("connected" if total else "no workers")

    async def _reconnect(self) -> None:
        """Replace a client that lost its scheduler, retrying with backoff until one answers."""
        self._set_state("reconnecting")
        log.warning("lost the Dask scheduler at %s; reconnecting", self.address)
        await self._close_client(self._client)  # it would give up by itself after its timeout
        delay, attempt, began = self._timeouts.reconnect_first_s, 1, time.monotonic()
        while True:
            try:
                self._client = await Client(
                    self.address, asynchronous=True, timeout=self._timeouts.connect_s
                )
            except OSError as exc:
                log.warning(
                    "Dask scheduler at %s still unreachable (attempt %d: %s); retry in %.1f s",
                    self.address,
                    attempt,
                    exc,
                    delay,
                )
                self._report_outage()
                await asyncio.sleep(delay)
                delay, attempt = min(2 * delay, self._timeouts.reconnect_max_s), attempt + 1
                continue
            log.info(
                "reconnected to the Dask scheduler at %s after %.1f s",
                self.address,
                time.monotonic() - began,
            )
            return

    async def _close_client(self, client: Client) -> None:
        # A client that lost its scheduler otherwise waits 2 s for its report loop to end.
        lost = client.status not in ("running", "closed")
        closing = client._close(fast=True) if lost else client.close()
        with contextlib.suppress(Exception):
            await _within(closing, self._timeouts.connect_s)

    def _set_state(self, state: ExecutorState) -> None:
        if state == self._state:
            return
        self._state, self._since = state, time.time()
        if state in ("reconnecting", "no workers"):
            if self._outage is None:
                self._outage = (time.monotonic(), self._since)
        elif self._outage is not None:
            reported = self._reported
            self._outage, self._reported = None, False
            if reported and state == "connected":
                log.warning("the Dask cluster can compute again (%d threads)", self.threads)
                self._announce()
        self._notify()

    def _report_outage(self) -> None:
        """Log and announce an outage that has lasted `waiting_after_s` while work waits."""
        if self._outage is None or self._reported or not self.outstanding:
            return
        lasted = time.monotonic() - self._outage[0]
        if lasted < self._timeouts.waiting_after_s:
            return
        self._reported = True
        log.warning(
            "%d chunks are waiting: %s for %.0f s; their runs fail after %g s (--executor-wait)",
            self.outstanding,
            "no Dask scheduler" if self._state == "reconnecting" else "no Dask worker",
            lasted,
            self._timeouts.give_up_s,
        )
        self._announce()

    def _count(self, step: int) -> None:
        self.outstanding += step
        self._notify()
        if step > 0:
            self._report_outage()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _announce(self) -> None:
        for listener in self._listeners:
            listener()


async def _within(awaitable: Awaitable[T], limit_s: float | None) -> T:
    """`awaitable`'s result, or TimeoutError after `limit_s` seconds (None: no limit).

    Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives as the
    awaited call finishes (CPython gh-86296), and a watcher cancelled then would poll on
    for ever, hanging `close()`.
    """
    async with asyncio.timeout(limit_s):
        return await awaitable


async def _outcome(future: Future[Any]) -> Any:
    return await future


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # read, so that an abandoned waiter's error is not logged
