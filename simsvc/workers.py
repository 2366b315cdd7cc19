"""Worker processes that can be stopped one at a time, and that end with the service.

`WorkerPool` keeps one process per lane and sends each call to an idle lane. Unlike a
`concurrent.futures.ProcessPoolExecutor`, it can stop the one process computing a call
nobody waits for any more (a cancelled run, a chunk past its time limit, a shutdown):
the process is killed and a fresh one takes its lane, so no worker goes on computing
abandoned work.

A worker also watches the service: `multiprocessing.parent_process()` is the process
that started it (the service, even when a forkserver forked it), and joining it
returns when the service is gone, however it died. The worker then exits at once, so
a `kill -9` of the service leaves no worker computing for nobody; the forkserver and
the resource tracker follow once their last worker has gone.

Everything a worker runs is a module-level function, so that it works with `spawn`
(Windows) as well as `forkserver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
WORKER_NICENESS = 10
ORPHAN_EXIT_CODE = 70  # a worker that outlived the service


class WorkerDied(BrokenProcessPool):
    """A worker process ended while computing a call nobody had abandoned."""


class _Abandoned(Exception):
    """The call's worker was stopped because nobody waits for its answer any more."""


class _Lane:
    """One worker process at a time, used by one thread at a time; replaced when stopped.

    The event loop's thread only calls `stop`; everything that waits (starting, calling,
    joining) happens on the lane's thread.
    """

    def __init__(self, context: Any, closing: threading.Event, preload: tuple[str, ...]) -> None:
        self._context = context
        self._closing = closing
        self._preload = preload
        self._lock = threading.Lock()
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._killed: BaseProcess | None = None
        self.abandoned = False  # set by the event loop for the call in progress

    def start(self) -> None:
        """Make sure a live process holds the lane (none once the pool is closing)."""
        with self._lock:
            if self._process is not None and self._process is self._killed:
                self._discard()  # killed after its last call had already answered
            if self._process is not None or self._closing.is_set():
                return
            ours, theirs = self._context.Pipe()
            process = self._context.Process(
                target=serve, args=(theirs, self._preload), name="simsvc-worker", daemon=True
            )
            process.start()
            theirs.close()
            self._process, self._conn = process, ours

    def call(
        self, fn: Callable[..., T], args: tuple[Any, ...], sent: Callable[[], None] = lambda: None
    ) -> T:
        """Run `fn(*args)` in this lane's process; blocks this thread until it answers.

        `sent` is called once the call is on its way to the process.
        """
        self.start()
        process, conn = self._process, self._conn
        # Checked after `start` has published the process: a `stop` racing with it
        # either sees the process and kills it, or is seen here.
        if self.abandoned or process is None or conn is None:
            raise _Abandoned
        answer: tuple[bool, Any] | None = None
        try:
            conn.send((fn, args))
            sent()
            if conn in wait([conn, process.sentinel]):
                answer = conn.recv()
        except (EOFError, OSError):
            pass  # the process ended mid-call: told apart below
        if answer is not None:
            ok, value = answer
            if ok:
                return value  # type: ignore[no-any-return]
            raise value  # the call's own error, an OSError as any other
        pid = process.pid
        with self._lock:
            code = self._discard()
        self.start_early()
        if self.abandoned or self._closing.is_set():
            raise _Abandoned
        raise WorkerDied(f"worker process {pid} died (exit code {code}) while computing")

    def stop(self) -> None:
        """Kill the process now, from any thread: its call's answer is not wanted."""
        self.abandoned = True
        process = self._process
        if process is not None:
            self._killed = process
            with contextlib.suppress(ValueError):  # already reaped by the lane's thread
                process.kill()

    def shut(self) -> None:
        """End the process for good: the pool is closing."""
        with self._lock:
            if self._process is not None:
                self._process.kill()
                self._discard()

    def start_early(self) -> None:
        """Start the next process now, so the next call does not wait for it."""
        try:
            self.start()
        except Exception:
            log.exception("could not start a worker process; trying again at the next call")

    def _discard(self) -> int | None:
        """Reap the current process (dead or killed), close its pipe; its exit code.

        The caller holds the lock.
        """
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if conn is not None:
            conn.close()
        if process is None:
            return None
        process.join()
        code = process.exitcode
        process.close()
        return code


class _Call:
    """A call waiting for a lane or computing on one; its answer goes to `future`."""

    __slots__ = ("abandoned", "args", "fn", "future", "lane", "loop")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Any] = self.loop.create_future()
        self.lane: _Lane | None = None  # the lane computing it, while one does
        self.abandoned = False


class WorkerPool:
    """`size` worker processes, each computing one call at a time.

    Calls wait in one queue, and each lane's thread takes the next as soon as its
    process has answered the last: a worker goes from one chunk to the next without
    waiting for the event loop. A new worker imports the `preload` modules before it
    takes work, so that a worker started to replace a stopped one is ready when the
    next chunk comes.
    """

    def __init__(self, size: int, method: str, preload: tuple[str, ...] = ()) -> None:
        self.size = size
        self._closing = threading.Event()
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            # Forked from a server that has imported them: a new worker is ready at once.
            context.set_forkserver_preload(list(preload))
        self._lanes = [_Lane(context, self._closing, preload) for _ in range(size)]
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        # Held while a lane takes or lets go of a call, and while a call is abandoned, so
        # that abandoning stops the lane computing that call and never the next one.
        self._switch = threading.Lock()
        # One thread per lane waits on its process, so the event loop never blocks.
        self._threads: list[threading.Thread] = []

    def warm_up(self) -> None:
        """Start every worker process now, so that the first run does not wait for them."""
        self._start_threads(warm=True)

    def _start_threads(self, *, warm: bool) -> None:
        if self._threads:
            return
        # Daemons: a pool never closed must not keep the interpreter from exiting.
        self._threads = [
            threading.Thread(
                target=self._serve_lane,
                args=(lane, warm),
                name=f"simsvc-worker-lane_{i}",
                daemon=True,
            )
            for i, lane in enumerate(self._lanes)
        ]
        for thread in self._threads:
            thread.start()

    async def submit(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker; cancelling this kills the worker computing it."""
        if self._closing.is_set():
            raise RuntimeError("the worker pool is closed")
        self._start_threads(warm=False)
        call = _Call(fn, args)
        self._calls.put(call)
        try:
            return await call.future  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            self._abandon(call)
            raise

    def _abandon(self, call: _Call) -> None:
        """Nobody waits for this call: drop it if queued, stop its worker if computing."""
        with self._switch:
            call.abandoned = True
            if call.lane is not None:
                call.lane.stop()

    def _serve_lane(self, lane: _Lane, warm: bool) -> None:
        """A lane's thread: compute the queued calls one after the other until closed.

        An answer is handed to the event loop once the next call is on its way to the
        worker (or none is queued): the loop then stores it while the worker computes,
        and the worker never waits for the loop's thread to let this one run.
        """
        if warm:
            lane.start_early()
        owed: list[tuple[_Call, tuple[bool, Any]]] = []  # answers not handed over yet

        def hand_over() -> None:
            for call, answer in owed:
                call.loop.call_soon_threadsafe(_answer, call.future, answer)
            owed.clear()

        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                hand_over()  # before waiting for the next call
                call = self._calls.get()
            if call is None:
                break
            with self._switch:
                if call.abandoned:
                    continue
                call.lane, lane.abandoned = lane, False
            try:
                if self._closing.is_set():
                    raise RuntimeError("the worker pool is closed")
                answer: tuple[bool, Any] = (True, lane.call(call.fn, call.args, hand_over))
            except BaseException as exc:
                answer = (False, exc)
            hand_over()  # the call failed before it was sent
            with self._switch:
                call.lane = None
            owed.append((call, answer))
        hand_over()

    async def close(self) -> None:
        """Kill every worker, computing or not, and wait until each has ended."""
        self._closing.set()
        for lane in self._lanes:
            lane.stop()
        for _ in self._threads:
            self._calls.put(None)  # after every queued call, each of which now fails
        await asyncio.to_thread(self._shut)

    def _shut(self) -> None:
        for thread in self._threads:
            thread.join()
        for lane in self._lanes:
            lane.shut()


def _answer(future: asyncio.Future[Any], answer: tuple[bool, Any]) -> None:
    """Hand a lane's answer to the waiting caller, if it still waits."""
    if future.done():
        return
    ok, value = answer
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


# -- inside a worker process -----------------------------------------------------------


def serve(conn: Connection, preload: tuple[str, ...] = ()) -> None:
    """A worker's life: compute each call it is sent until the service closes its end."""
    _settle()
    for module in preload:
        importlib.import_module(module)
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            answer: tuple[bool, Any] = (True, fn(*args))
        except Exception as exc:
            exc.add_note("in worker process " + "".join(traceback.format_exc()))
            answer = (False, exc)
        try:
            conn.send(answer)
        except (EOFError, OSError):
            return
        except Exception as exc:  # an answer that does not pickle
            conn.send((False, RuntimeError(f"{type(exc).__name__}: {exc}")))


def _settle() -> None:
    """Lower the priority, leave Ctrl+C to the service, and end with the service."""
    # Replications are batch work; the service's event loop answers requests and feeds
    # the sockets, so when both want a core it should not wait for a time slice.
    if hasattr(os, "nice"):  # POSIX only; elsewhere the workers keep normal priority
        os.nice(WORKER_NICENESS)
    # Ctrl+C reaches the whole process group; the service stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=exit_with_service, name="simsvc-service-watch", daemon=True).start()


def exit_with_service() -> None:
    """Block until the process that started this one has ended, then exit at once."""
    service = multiprocessing.parent_process()
    if service is None:  # not a worker: nothing to watch
        return
    service.join()
    sys.stderr.flush()
    os._exit(ORPHAN_EXIT_CODE)
