"""A Dask cluster's life: the scheduler restarts, workers come and go, or none are left.

Each test starts a real scheduler and real workers on loopback (in this process, so that
they start in milliseconds) and points the service at the scheduler over TCP, as it
would point at a remote cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, ClassVar, cast

import dask
import numpy as np
import pytest
from distributed import Scheduler, Worker
from pytest_aiohttp import AiohttpClient

from simsvc import backends, sim
from simsvc.dask_backend import DaskBackend
from simsvc.resources import BACKEND
from simsvc.web import Config, create_app

from .conftest import Client, start_run, wait_for_run

# Short enough for a test, long enough that a busy machine does not trip them.
FAST = backends.ClusterTimeouts(
    connect_s=5.0,
    poll_s=0.05,
    waiting_after_s=0.0,
    give_up_s=60.0,
    reconnect_first_s=0.05,
    reconnect_max_s=0.2,
)


class SlowModel(sim.Model):
    """Takes `ms` milliseconds of wall time per replication, off the GIL, like real work."""

    name = "slow"
    version = "1.0.0"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"ms": {"type": "number", "minimum": 0, "default": 0.1}},
    }

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        time.sleep(float(params["ms"]) / 1000.0)
        return {"total_labor_costs": float(rng.uniform(0, 1)), "ontime_delivery_rate": 1.0}


@pytest.fixture(autouse=True)
def prompt_fetches() -> Iterator[None]:
    """Dask's connect timeout, short enough that a fetch from a worker that left ends soon.

    A worker that leaves as the scheduler fetches a chunk it has finished leaves that fetch
    retrying to connect until the timeout (30 s by default); only then does the client
    fetch the chunk the scheduler has meanwhile computed again on another worker.
    """
    with dask.config.set({"distributed.comm.timeouts.connect": "10s"}):
        yield


@contextlib.asynccontextmanager
async def scheduler(port: int = 0) -> AsyncIterator[Scheduler]:
    """A scheduler on `port`, or on a free port the system picks (no race for it)."""
    async with Scheduler(
        host="127.0.0.1", port=port, dashboard_address="127.0.0.1:0", dashboard=False
    ) as running:
        yield running


def worker(address: str) -> Worker:
    return Worker(address, nthreads=1, host="127.0.0.1", dashboard=False)


async def service(
    aiohttp_client: AiohttpClient, port: int, timeouts: backends.ClusterTimeouts = FAST
) -> tuple[Client, DaskBackend]:
    config = Config(
        db_path=":memory:", workers=1, executor=f"dask://127.0.0.1:{port}", cluster=timeouts
    )
    models = {**sim.load_models(), SlowModel.name: SlowModel()}
    client = await aiohttp_client(create_app(config, models=models))
    return client, cast(DaskBackend, client.app[BACKEND])


async def until(backend: DaskBackend, check: Callable[[], bool], limit_s: float = 30.0) -> None:
    """Wait for the backend to reach a state, woken by each of its changes."""
    async with asyncio.timeout(limit_s):
        while not check():
            await backend.changed()


async def slow_scenario(client: Client) -> int:
    resp = await client.post(
        "/api/scenarios", json={"scenario_name": "slow", "model": "slow", "params": {}}
    )
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["scenario_id"])


async def health(client: Client) -> dict[str, Any]:
    resp = await client.get("/api/health")
    assert resp.status == 200
    return dict(await resp.json())


async def test_service_reconnects_after_the_scheduler_restarts(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "simsvc")
    async with scheduler() as first, worker(first.address):
        port = first.port  # the restarted scheduler comes back on the same port
        client, backend = await service(aiohttp_client, port)
        await until(backend, lambda: backend.threads == 1)
        before = await wait_for_run(client, (await start_run(client, replications=6))["run_id"])
        assert before["status"] == "completed"
    await until(backend, lambda: backend.status()["state"] == "reconnecting")
    assert (await health(client))["executor"]["state"] == "reconnecting"
    assert (await health(client))["status"] == "degraded"
    # A run submitted while the scheduler is away waits for it.
    waiting = await start_run(client, replications=6, seed=5)
    async with scheduler(port) as second:
        await until(backend, lambda: backend.status()["state"] == "no workers")
        assert (await health(client))["executor"]["workers"] == 0
        async with worker(second.address):
            after = await wait_for_run(client, waiting["run_id"])
            assert (after["status"], after["done"]) == ("completed", 18), after["error"]
            # The run may end before the watcher's next look at the cluster sees the worker.
            await until(backend, lambda: backend.status()["state"] == "connected")
            answer = await health(client)
            assert answer["status"] == "ok"
            assert answer["executor"] | {"since": None} == {
                "executor": "dask",
                "state": "connected",
                "workers": 1,
                "threads": 1,
                "since": None,
                "scheduler": f"tcp://127.0.0.1:{port}",
            }
            await client.close()
    assert "reconnected to the Dask scheduler" in caplog.text
    assert "Failed to reconnect" not in caplog.text


async def _events_until(
    ws: Any, run_id: int, wanted: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async for msg in ws:
        event: dict[str, Any] = json.loads(msg.data)
        if event.get("run_id") == run_id and wanted(event):
            return event
    raise AssertionError("the socket closed")


async def test_a_run_without_workers_says_so_then_fails_after_the_limit(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with scheduler() as running:
        client, backend = await service(
            aiohttp_client,
            running.port,
            backends.ClusterTimeouts(**{**FAST.__dict__, "give_up_s": 2.0}),
        )
        async with client.ws_connect("/ws/events") as ws, asyncio.timeout(30):
            run_id = (await start_run(client, replications=6))["run_id"]
            event = await _events_until(ws, run_id, lambda e: e.get("waiting_for_workers") is True)
            assert event["type"] == "run.progress"
            assert event["waiting_since"].endswith("Z")
            view = await (await client.get(f"/api/simulations/{run_id}")).json()
            assert view["status"] == "running"
            assert (view["waiting_for_workers"], view["waiting_since"]) == (
                True,
                event["waiting_since"],
            )
            failed = await _events_until(ws, run_id, lambda e: e["type"] != "run.progress")
        await client.close()
    assert failed["type"] == "run.failed"
    assert failed["run"]["error"].startswith("NoWorkersError: the Dask cluster has had no worker")
    assert "--executor-wait" in failed["run"]["error"]
    assert "no Dask worker" in caplog.text  # the warning, before the failure
    assert backend.outstanding == 0


async def test_cancelling_a_run_queued_without_workers_leaves_no_stray_errors(
    aiohttp_client: AiohttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with scheduler() as running:
        # The only worker leaves as it is asked for a finished chunk: the service's client
        # is then inside its gather, waiting for a worker to compute the chunk again.
        leaving = await worker(running.address)

        async def leave(*args: Any, **kwargs: Any) -> None:
            asyncio.get_running_loop().create_task(leaving.close())
            await asyncio.Event().wait()

        leaving.handlers["get_data"] = leave
        client, backend = await service(aiohttp_client, running.port)
        run_id = (await start_run(client, replications=60))["run_id"]
        await until(backend, lambda: backend.status()["state"] == "no workers")
        await until(backend, lambda: backend.waiting_since() is not None)
        resp = await client.post(f"/api/simulations/{run_id}/cancel")
        assert (await resp.json())["status"] == "cancelled"
        await until(backend, lambda: backend.outstanding == 0)
        await client.close()
        gc.collect()
    assert "never retrieved" not in caplog.text
    assert "AllExit" not in caplog.text


async def test_in_flight_chunks_follow_workers_joining_and_leaving(
    aiohttp_client: AiohttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with scheduler() as running, worker(running.address):
        client, backend = await service(aiohttp_client, running.port)
        await until(backend, lambda: backend.threads == 1)
        submits: list[tuple[int, int]] = []  # (chunks already out, threads) at each submit
        submit = backend.submit

        async def counted(fn: Callable[..., Any], *args: Any) -> Any:
            submits.append((backend.outstanding, backend.threads))
            return await submit(fn, *args)

        monkeypatch.setattr(backend, "submit", counted)
        scenario = await slow_scenario(client)
        run = await start_run(client, replications=8_000, scenario_ids=[scenario], seed=3)
        await until(backend, lambda: backend.outstanding == 2)  # two per thread
        async with worker(running.address), worker(running.address):
            await until(backend, lambda: backend.threads == 3)
            await until(backend, lambda: backend.outstanding == 6)
        await until(backend, lambda: backend.threads == 1)
        shrunk = len(submits)
        ended = await wait_for_run(client, run["run_id"])
        await client.close()
    assert (ended["status"], ended["done"]) == ("completed", 8_000), ended["error"]
    assert len(submits) > shrunk, "the run ended before the cluster shrank"
    # Once one thread is left, a chunk goes out only when fewer than two are.
    assert [(out, threads) for out, threads in submits[shrunk:] if out >= 2 * threads] == []
