"""Where chunks of replications are computed: the executors and what they report.

`Backend` is what the runner needs (submit a call, say how many run at once); an
`Executor` is a backend as the service runs it, able to say how it is (`ExecutorStatus`,
for `/api/health`). `PoolBackend` holds worker processes, threads or inline calls;
`open_backend` picks one by executor name, or a `dask_backend.DaskBackend`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict, TypeVar, cast, get_args

from . import StartupError
from .workers import WorkerPool

T = TypeVar("T")

ExecutorKind = Literal["process", "thread", "inline"]
POOL_EXECUTORS: tuple[str, ...] = get_args(ExecutorKind)
# What every chunk needs, imported by a new worker process before it takes work: the
# runner (`runner.timed` wraps each chunk) brings `chunks`, `sim` and NumPy with it.
WORKER_PRELOAD = ("simsvc.runner",)


class InlineExecutor(concurrent.futures.Executor):
    """Runs each call at once in the caller's thread: for debugging only, it blocks the loop."""

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


ExecutorState = Literal["ready", "connected", "reconnecting", "no workers", "closed"]


class ExecutorStatus(TypedDict, total=False):
    """What `/api/health` says about where replications are computed."""

    executor: str
    state: ExecutorState
    workers: int
    threads: int
    since: str  # when `state` began (Dask only)
    scheduler: str  # the Dask scheduler's address


@dataclass(frozen=True)
class ClusterTimeouts:
    """How a Dask executor follows its cluster (the pools ignore it)."""

    connect_s: float = 10.0  # to reach the scheduler, at start-up and on each reconnect
    poll_s: float = 1.0  # how often the cluster's size and health are read
    waiting_after_s: float = 10.0  # no worker this long: runs are reported as waiting
    give_up_s: float = 120.0  # no worker or scheduler this long: the waiting runs fail
    reconnect_first_s: float = 0.5  # backoff between reconnect attempts: first...
    reconnect_max_s: float = 30.0  # ...and longest


class Backend(Protocol):
    """Where chunks of replications are computed."""

    @property
    def workers(self) -> int:
        """How many chunks it computes at once now; read again at every top-up."""
        ...

    async def submit(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def close(self) -> None: ...


class Executor(Backend, Protocol):
    """A backend as the service runs it: it can say how it is."""

    def status(self) -> ExecutorStatus: ...

    def waiting_since(self) -> str | None:
        """Since when (ISO time) runs have been waiting for a worker, or None."""
        ...

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` when `waiting_since` changes."""
        ...


class PoolBackend:
    """Worker processes (stopped one by one when their chunk is abandoned), threads or inline."""

    def __init__(self, kind: ExecutorKind, workers: int) -> None:
        self.kind = kind
        self.workers = workers
        self._processes: WorkerPool | None = None
        self._pool: concurrent.futures.Executor | None = None
        if kind == "process":
            method = "spawn" if sys.platform == "win32" else "forkserver"
            self._processes = WorkerPool(workers, method, preload=WORKER_PRELOAD)
        elif kind == "thread":
            self._pool = concurrent.futures.ThreadPoolExecutor(workers, "simsvc-sim")
        else:
            self._pool = InlineExecutor()

    async def submit(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a worker; cancelling it kills the worker process computing it.

        A thread cannot be stopped: a cancelled call on the thread pool runs to its end.
        """
        if self._processes is not None:
            return await self._processes.submit(fn, *args)
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def warm_up(self) -> None:
        """Start the worker processes now, so that the first run does not pay for them."""
        if self._processes is not None:
            self._processes.warm_up()

    def status(self) -> ExecutorStatus:
        return ExecutorStatus(
            executor=self.kind, state="ready", workers=self.workers, threads=self.workers
        )

    def waiting_since(self) -> str | None:
        return None  # a local pool always has its workers

    def subscribe(self, listener: Callable[[], None]) -> None:
        pass

    async def close(self) -> None:
        """Stop at once: worker processes are killed, threads finish their current call."""
        if self._processes is not None:
            await self._processes.close()
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)


async def open_backend(
    executor: str, workers: int, timeouts: ClusterTimeouts | None = None
) -> Executor:
    """The backend an executor name selects: process, thread, inline, dask-local or dask://."""
    if executor in POOL_EXECUTORS:
        backend = PoolBackend(cast(ExecutorKind, executor), workers)
        backend.warm_up()
        return backend
    if executor != "dask-local" and not executor.startswith("dask://"):
        raise ValueError(f"unknown executor {executor!r}")
    try:
        from . import dask_backend  # an optional extra: imported only when asked for
    except ImportError as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise StartupError(
            f"--executor {executor} needs Dask ({reason}); install the extra from the"
            " simsvc source tree: pip install '.[dask]'"
        ) from None
    return await dask_backend.DaskBackend.open(executor, workers, timeouts or ClusterTimeouts())


def default_workers() -> int:
    return os.cpu_count() or 1
