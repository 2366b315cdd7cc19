"""The app's resources: one typed `AppKey` each, and the cleanup contexts that open them,
yield, and close them again; the shutdown hooks that stop runs and close sockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from . import (
    StartupError,
    backends,
    db,
    experiment_store,
    experiment_view,
    explore,
    lockfile,
    runs,
    sim,
    stats,
)
from .config import Config
from .hub import Hub
from .runner import Runner
from .schema import Checker

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
BACKEND = web.AppKey("backend", backends.Executor)
DB = web.AppKey("db", db.Database)
EXPERIMENTS = web.AppKey("experiments", experiment_store.ExperimentStore)
RUNS = web.AppKey("runs", runs.Runs)
MODELS = web.AppKey("models", dict[str, sim.Model])
RESULTS_HUB = web.AppKey("results_hub", Hub)
EVENTS_HUB = web.AppKey("events_hub", Hub)
AGGREGATES = web.AppKey("aggregates", stats.AggregateCache)
CHECKERS = web.AppKey("checkers", dict[str, Checker])
SPEC = web.AppKey("spec", dict[str, Any])
PARAMS = web.AppKey("params", sim.ParamsChecker)
REPLAY_SLOT = web.AppKey("replay_slot", asyncio.Lock)
EXPORT_SLOTS = web.AppKey("export_slots", asyncio.Semaphore)
EXPLORER = web.AppKey("explorer", explore.Explorer)
EXPERIMENT_VIEWS = web.AppKey("experiment_views", experiment_view.ViewCache)

# the scenarios of a new database: the warehouse model's defaults but for `workers`
SEED_SCENARIOS = (("現状シナリオ", 5), ("人員1名追加", 6), ("人員1名削減", 4))


def waiting(backend: backends.Executor) -> dict[str, Any]:
    """Whether active runs wait for workers of a Dask cluster, and since when."""
    since = backend.waiting_since()
    return {"waiting_for_workers": since is not None, "waiting_since": since}


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    initial = [
        (name, "warehouse", app[PARAMS].complete("warehouse", {"workers": workers}))
        for name, workers in SEED_SCENARIOS
    ]
    path = app[CONFIG].db_path
    lock = _lock_database(path)
    try:
        database = await db.Database.open(path, initial)
    except db.UnusableDatabase as exc:
        if lock is not None:
            lock.release()
        raise StartupError(str(exc)) from None
    interrupted = await database.interrupt_active_runs()
    if interrupted:
        log.warning(
            "runs %s were left unfinished by a previous process: now interrupted", interrupted
        )
    app[DB] = database
    app[EXPERIMENTS] = experiment_store.ExperimentStore(database)
    app[AGGREGATES] = stats.AggregateCache(database)
    try:
        yield
    finally:
        await database.close()
        if lock is not None:
            lock.release()


def _lock_database(path: str) -> lockfile.LockFile | None:
    """Hold `<db>.lock` while serving, so that a second service on one file refuses to start."""
    if path == ":memory:":
        return None
    lock_path = Path(f"{path}.lock")
    if not lock_path.parent.is_dir():
        raise StartupError(
            f"cannot open database {path}: directory {lock_path.parent} does not exist"
        )
    try:
        return lockfile.LockFile.acquire(lock_path)
    except lockfile.Held as exc:
        raise StartupError(
            f"database {path} is in use by another simsvc ({exc}); stop it first, "
            "or give this one its own --db"
        ) from None
    except OSError as exc:
        raise StartupError(f"cannot create the lock file {lock_path}: {exc.strerror}") from None


async def executor_ctx(app: web.Application) -> AsyncIterator[None]:
    # Before the database: a service that cannot compute fails before it creates a file.
    config = app[CONFIG]
    backend = await backends.open_backend(config.executor, config.workers, config.cluster)
    app[BACKEND] = backend
    try:
        yield
    finally:
        await backend.close()  # a second close (after the runner's) does nothing


async def runner_ctx(app: web.Application) -> AsyncIterator[None]:
    config, backend = app[CONFIG], app[BACKEND]
    runner = Runner(backend, config.chunk_timeout_s)
    sink = runs.RunEvents(
        app[DB], app[AGGREGATES], app[EVENTS_HUB], app[RESULTS_HUB], lambda: waiting(backend)
    )
    app[RUNS] = runs.Runs(app[DB], runner, app[MODELS], app[PARAMS], sink)
    pending: set[asyncio.Task[None]] = set()

    def waiting_changed() -> None:
        task = asyncio.create_task(sink.waiting_changed(runner.is_active))
        pending.add(task)
        task.add_done_callback(pending.discard)

    backend.subscribe(waiting_changed)
    try:
        yield
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await runner.close()
        interrupted = await app[DB].interrupt_active_runs()
        if interrupted:
            log.warning("runs %s interrupted by shutdown", interrupted)


async def explorer_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[EXPERIMENTS]
    interrupted = await store.interrupt_active_experiments()
    if interrupted:
        log.warning("experiments %s were left unfinished: now interrupted", interrupted)
    hub = app[EVENTS_HUB]
    models: dict[str, sim.Model] = app[MODELS]

    def runner() -> Runner:
        return app[RUNS].runner

    app[EXPLORER] = explore.Explorer(store, runner, models, app[PARAMS], hub.broadcast_event)
    try:
        yield
    finally:
        # The runner has closed by now (it opened later), stopping every experiment.
        interrupted = await store.interrupt_active_experiments()
        if interrupted:
            log.warning("experiments %s interrupted by shutdown", interrupted)


async def close_sockets(app: web.Application) -> None:
    await asyncio.gather(app[RESULTS_HUB].close_all(), app[EVENTS_HUB].close_all())


async def interrupt_runs(app: web.Application) -> None:
    # At once, not after the grace period for requests: no worker computes past a signal.
    if RUNS in app:
        await app[RUNS].runner.interrupt()
