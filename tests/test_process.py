"""The real `python -m simsvc` process: graceful shutdown on signals, and crash recovery."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from .conftest import free_port
from .holding_model import Holder, install_entry_point

ROOT = Path(__file__).resolve().parents[1]
START_LIMIT_S = 20.0
EXIT_LIMIT_S = 5.0


class Service:
    """One `python -m simsvc` child process on a free port, with its log in a file."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.log = log

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    async def wait_healthy(self, session: aiohttp.ClientSession) -> None:
        async with asyncio.timeout(START_LIMIT_S):
            while True:
                if self.proc.returncode is not None:
                    raise AssertionError(f"simsvc exited at start-up:\n{self.output()}")
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.get(f"{self.url}/api/health") as resp:
                        if resp.status == 200:
                            return
                # A child process has no event to wait on until it listens.
                await asyncio.sleep(0.05)

    async def stop(self, sig: int = signal.SIGTERM) -> float:
        """Send `sig` and return how long the process took to exit."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(EXIT_LIMIT_S):
                await self.proc.wait()
        except TimeoutError:
            raise AssertionError(f"simsvc still running after {sig!r}:\n{self.output()}") from None
        return loop.time() - started


@contextlib.asynccontextmanager
async def running_service(
    tmp_path: Path,
    session: aiohttp.ClientSession,
    *args: str,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Service]:
    """Start simsvc on `tmp_path/simsvc.db` and a free port; it is always killed in the end."""
    port = free_port()
    log = tmp_path / f"simsvc-{port}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simsvc",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "simsvc.db"),
            *args,
            cwd=ROOT,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            env={**(env or os.environ), "PYTHONUNBUFFERED": "1"},
        )
    service = Service(proc, port, log)
    try:
        await service.wait_healthy(session)
        yield service
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def read_db(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return list(conn.execute(sql, args).fetchall())


@pytest.fixture
def many_files() -> None:
    """Room for a thousand sockets on each side, where the hard limit allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def _hold_socket(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Read until the server closes; the close code it sent."""
    async for _ in ws:
        pass
    return ws.close_code


async def _open_sockets(
    session: aiohttp.ClientSession, url: str, count: int
) -> list[aiohttp.ClientWebSocketResponse]:
    gate = asyncio.Semaphore(100)  # the listen backlog is finite; do not flood it

    async def one(i: int) -> aiohttp.ClientWebSocketResponse:
        path = "/ws/events" if i % 100 == 0 else "/ws/results"
        async with gate:
            return await session.ws_connect(f"{url}{path}", autoping=True)

    return await asyncio.gather(*(one(i) for i in range(count)))


@pytest.mark.parametrize(
    ("sig", "clients"),
    [
        (signal.SIGTERM, 1000),  # what service managers send, with a crowd of dashboards
        (signal.SIGINT, 10),  # Ctrl+C in a terminal
    ],
)
async def test_signal_closes_sockets_1001_interrupts_runs_and_exits_cleanly(
    tmp_path: Path, many_files: None, sig: int, clients: int
) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        running_service(tmp_path, session, "--executor", "process", "--workers", "2") as svc,
    ):
        body = {"scenario_ids": [1], "replications": 100_000, "pace_s": 0.05}
        async with session.post(f"{svc.url}/api/simulations", json=body) as resp:
            assert resp.status == 202
            run_id = (await resp.json())["run_id"]
        sockets = await _open_sockets(session, svc.url, clients)
        holders = [asyncio.create_task(_hold_socket(ws)) for ws in sockets]
        elapsed = await svc.stop(sig)
        async with asyncio.timeout(EXIT_LIMIT_S):
            codes = await asyncio.gather(*holders)
        assert svc.proc.returncode == 0, svc.output()
    assert elapsed < EXIT_LIMIT_S
    assert codes == [1001] * clients
    # A clean close checkpoints the WAL and removes it; a hung or killed process leaves it.
    assert not (tmp_path / "simsvc.db-wal").exists(), svc.output()
    db = tmp_path / "simsvc.db"
    assert read_db(db, "SELECT status FROM runs WHERE run_id = ?", (run_id,)) == [("interrupted",)]
    assert read_db(db, "PRAGMA integrity_check") == [("ok",)]
    assert "Traceback" not in svc.output()


async def _progress_then_kill(session: aiohttp.ClientSession, svc: Service, run_id: int) -> int:
    """Follow the run's progress and SIGKILL the service mid-run; the last done reported."""
    reported = 0
    async with session.ws_connect(f"{svc.url}/ws/events") as ws:
        async with asyncio.timeout(30):
            async for msg in ws:
                event = json.loads(msg.data)
                if event["type"] == "run.progress" and event["run_id"] == run_id:
                    reported = max(reported, event["done"])
                    if reported >= 1000:
                        svc.proc.kill()
                        break
                assert event["type"] != "run.completed", "the run ended before the kill"
    await svc.proc.wait()
    return reported


async def test_kill_9_mid_run_keeps_every_reported_replication_and_a_sound_database(
    tmp_path: Path,
) -> None:
    args = ("--executor", "process", "--workers", "2")
    async with aiohttp.ClientSession() as session:
        async with running_service(tmp_path, session, *args) as svc:
            body = {"scenario_ids": [1], "replications": 20_000, "seed": 5}
            async with session.post(f"{svc.url}/api/simulations", json=body) as resp:
                run_id = (await resp.json())["run_id"]
            reported = await _progress_then_kill(session, svc, run_id)
        async with running_service(tmp_path, session, *args) as again:
            async with session.get(f"{again.url}/api/simulations/{run_id}") as resp:
                run = await resp.json()
            async with session.get(f"{again.url}/api/simulations/{run_id}/results") as resp:
                rows = await resp.json()
            await again.stop()
    assert run["status"] == "interrupted"
    assert 1000 <= reported <= run["done"] == len(rows) < 20_000
    assert len({(r["scenario_id"], r["replication"]) for r in rows}) == len(rows)
    assert read_db(tmp_path / "simsvc.db", "PRAGMA integrity_check") == [("ok",)]


# -- worker processes --------------------------------------------------------------------

# A shift of 960,000 orders: about a second or more per replication, within the bounds
# (1,000,000 work units per replication, 4,000,000,000 per run).
HEAVY = {"orders_per_hour": 40_000, "shift_hours": 24, "workers": 1000}
# Worker processes, the forkserver and the resource tracker must be gone this soon
# after the service (the docs say within a second or two).
ORPHAN_LIMIT_S = 5.0


def descendants(pid: int) -> list[psutil.Process]:
    """Every process the service started: forkserver, resource tracker, workers."""
    return psutil.Process(pid).children(recursive=True)


async def left_alive(processes: list[psutil.Process], limit_s: float) -> list[psutil.Process]:
    """Those of `processes` still alive after waiting up to `limit_s` for each to exit."""
    _, alive = await asyncio.to_thread(psutil.wait_procs, processes, timeout=limit_s)
    for process in alive:  # do not leave them to the next test
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    return list(alive)


async def _first_progress(session: aiohttp.ClientSession, svc: Service, run_id: int) -> None:
    async with session.ws_connect(f"{svc.url}/ws/events") as ws, asyncio.timeout(60):
        async for msg in ws:
            event = json.loads(msg.data)
            if event["type"] == "run.progress" and event["run_id"] == run_id:
                return
            assert event["type"] not in ("run.completed", "run.failed"), event


async def _start(session: aiohttp.ClientSession, svc: Service, params: Any, reps: int) -> int:
    scenario = {
        "scenario_name": "heavy",
        "model": params.pop("model", "warehouse"),
        "params": params,
    }
    async with session.post(f"{svc.url}/api/scenarios", json=scenario) as resp:
        assert resp.status == 201, await resp.text()
        scenario_id = (await resp.json())["scenario_id"]
    body = {"scenario_ids": [scenario_id], "replications": reps, "seed": 1}
    async with session.post(f"{svc.url}/api/simulations", json=body) as resp:
        assert resp.status == 202, await resp.text()
        run_id: int = (await resp.json())["run_id"]
    return run_id


async def test_sigterm_with_heavy_chunks_in_flight_exits_within_5_s_and_leaves_no_worker(
    tmp_path: Path,
) -> None:
    args = ("--executor", "process", "--workers", "2")
    async with (
        aiohttp.ClientSession() as session,
        running_service(tmp_path, session, *args) as svc,
    ):
        run_id = await _start(session, svc, dict(HEAVY), 1000)
        await _first_progress(session, svc, run_id)  # heavy chunks are computing now
        children = descendants(svc.proc.pid)
        elapsed = await svc.stop(signal.SIGTERM)
        assert svc.proc.returncode == 0, svc.output()
    assert elapsed < EXIT_LIMIT_S
    assert await left_alive(children, ORPHAN_LIMIT_S) == []
    db = tmp_path / "simsvc.db"
    assert read_db(db, "SELECT status FROM runs WHERE run_id = ?", (run_id,)) == [("interrupted",)]
    assert "Traceback" not in svc.output()


async def test_kill_9_of_the_service_ends_its_workers_forkserver_and_tracker(
    tmp_path: Path,
) -> None:
    env = install_entry_point(tmp_path / "site")
    args = ("--executor", "process", "--workers", "2")
    async with (
        aiohttp.ClientSession() as session,
        Holder() as holder,
        running_service(tmp_path, session, *args, env=env) as svc,
    ):
        await _start(session, svc, {"model": "holding", "port": holder.port}, 10)
        held = [await holder.next(), await holder.next()]  # both workers are busy
        children = descendants(svc.proc.pid)
        assert {h.pid for h in held} <= {c.pid for c in children}
        svc.proc.kill()
        await svc.proc.wait()
        alive = await left_alive(children, ORPHAN_LIMIT_S)
    assert alive == [], [p.pid for p in alive]
