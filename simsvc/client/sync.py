"""`Client`: the same calls as `AsyncClient`, blocking, on an event loop of its own.

The loop runs in a private daemon thread, so a `Client` works the same in a plain script
and where the calling thread already runs an event loop (a Jupyter notebook).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar

from .aio import AsyncClient, AsyncExperiment, AsyncRun
from .records import ExperimentInfo, RunInfo
from .transport import DEFAULT_TIMEOUT_S

if TYPE_CHECKING:
    import pandas

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class LoopThread:
    """An event loop on a daemon thread, and a way to run coroutines on it and wait."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="simsvc-client", daemon=True
        )
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a blocking simsvc Client cannot be called from its own loop")
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("this simsvc Client is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C while waiting: stop the call on the loop too.
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


def _shut(portal: LoopThread, inner: AsyncClient) -> None:
    """Close the session on its own loop, then stop the loop (also at interpreter exit)."""
    if portal.loop.is_closed():
        return
    if portal.loop.is_running():
        portal.call(inner.close())
    portal.stop()


class _Blocking(Protocol):
    @property
    def _portal(self) -> LoopThread: ...

    @property
    def _inner(self) -> Any: ...


def _blocking(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[_Blocking, P], R]:
    """The blocking form of an async method of the wrapped object."""

    def call(self: _Blocking, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._portal.call(method(self._inner, *args, **kwargs))

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


Inner = TypeVar("Inner", AsyncRun, AsyncExperiment)


class _Handle(Generic[Inner]):
    """What a blocking Run and Experiment share: the async handle they wrap, and its loop."""

    def __init__(self, portal: LoopThread, inner: Inner) -> None:
        self._portal = portal
        self._inner: Inner = inner

    @property
    def status(self) -> str:
        return self._inner.status

    def __repr__(self) -> str:
        return repr(self._inner)

    def results_frame(self) -> pandas.DataFrame:
        """The rows as a DataFrame, metrics and varied params as columns (needs pandas)."""
        return self._portal.call(self._inner.results_frame())


class Run(_Handle[AsyncRun]):
    """A run on the service (blocking calls; see AsyncRun)."""

    @property
    def run_id(self) -> int:
        return self._inner.run_id

    @property
    def info(self) -> RunInfo:
        return self._inner.info

    refresh = _blocking(AsyncRun.refresh)
    wait = _blocking(AsyncRun.wait)
    cancel = _blocking(AsyncRun.cancel)
    extend = _blocking(AsyncRun.extend)
    resume = _blocking(AsyncRun.resume)
    results = _blocking(AsyncRun.results)
    results_csv = _blocking(AsyncRun.results_csv)
    aggregates = _blocking(AsyncRun.aggregates)
    compare = _blocking(AsyncRun.compare)
    select = _blocking(AsyncRun.select)


class Experiment(_Handle[AsyncExperiment]):
    """An experiment on the service (blocking calls; see AsyncExperiment)."""

    @property
    def experiment_id(self) -> int:
        return self._inner.experiment_id

    @property
    def info(self) -> ExperimentInfo:
        return self._inner.info

    refresh = _blocking(AsyncExperiment.refresh)
    wait = _blocking(AsyncExperiment.wait)
    cancel = _blocking(AsyncExperiment.cancel)
    resume = _blocking(AsyncExperiment.resume)
    results = _blocking(AsyncExperiment.results)
    results_csv = _blocking(AsyncExperiment.results_csv)


Handle = TypeVar("Handle", Run, Experiment)


def _starting(
    method: Callable[Concatenate[Any, P], Coroutine[Any, Any, Any]], handle: type[Handle]
) -> Callable[Concatenate[_Blocking, P], Handle]:
    """The blocking form of an async method that answers a handle, wrapped as `handle`."""

    def call(self: _Blocking, /, *args: P.args, **kwargs: P.kwargs) -> Handle:
        return handle(self._portal, self._portal.call(method(self._inner, *args, **kwargs)))

    call.__name__ = method.__name__
    call.__doc__ = method.__doc__
    return call


class Client:
    """A blocking client of one simsvc service (see AsyncClient for every call).

    `client = Client("http://127.0.0.1:8000", token=...)`, then for example
    `run = client.run(scenario_ids=[1, 2], replications=200, seed=1)`, `run.wait()`,
    `run.results_frame()`. Use it in a `with` block or call `close()`.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._inner = AsyncClient(base_url, token, timeout=timeout)
        self._portal = LoopThread()
        self._closer = weakref.finalize(self, _shut, self._portal, self._inner)

    @property
    def base_url(self) -> str:
        return self._inner.base_url

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    def close(self) -> None:
        self._closer()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    run = _starting(AsyncClient.run, Run)
    get_run = _starting(AsyncClient.get_run, Run)
    experiment = _starting(AsyncClient.experiment, Experiment)
    sweep = _starting(AsyncClient.sweep, Experiment)
    optimize = _starting(AsyncClient.optimize, Experiment)
    get_experiment = _starting(AsyncClient.get_experiment, Experiment)
    health = _blocking(AsyncClient.health)
    models = _blocking(AsyncClient.models)
    scenarios = _blocking(AsyncClient.scenarios)
    scenario = _blocking(AsyncClient.scenario)
    create_scenario = _blocking(AsyncClient.create_scenario)
    update_scenario = _blocking(AsyncClient.update_scenario)
    delete_scenario = _blocking(AsyncClient.delete_scenario)
    runs = _blocking(AsyncClient.runs)
    run_info = _blocking(AsyncClient.run_info)
    wait = _blocking(AsyncClient.wait)
    cancel = _blocking(AsyncClient.cancel)
    extend = _blocking(AsyncClient.extend)
    resume = _blocking(AsyncClient.resume)
    results = _blocking(AsyncClient.results)
    results_csv = _blocking(AsyncClient.results_csv)
    aggregates = _blocking(AsyncClient.aggregates)
    compare = _blocking(AsyncClient.compare)
    select = _blocking(AsyncClient.select)
    ingest = _blocking(AsyncClient.ingest)
    notify_completion = _blocking(AsyncClient.notify_completion)
    experiments = _blocking(AsyncClient.experiments)
    experiment_info = _blocking(AsyncClient.experiment_info)
    wait_experiment = _blocking(AsyncClient.wait_experiment)
    cancel_experiment = _blocking(AsyncClient.cancel_experiment)
    resume_experiment = _blocking(AsyncClient.resume_experiment)
    experiment_results = _blocking(AsyncClient.experiment_results)
    experiment_results_csv = _blocking(AsyncClient.experiment_results_csv)
