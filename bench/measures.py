"""Each row of the benchmark table: set the systems up, measure, and compare in one go."""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from simsvc import chunks, sim
from tests.reference_warehouse import DEFAULTS, simulate_simpy

from . import fanout, http_load, servers
from .servers import Server

log = logging.getLogger(__name__)

RUN_TIMEOUT_S = 900.0


@dataclass
class Settings:
    """How hard to measure; `quick` shrinks every count for a smoke run."""

    workdir: Path
    repeats: int = 3
    load_s: float = 5.0
    fanout_rounds: int = 10
    fanout_processes: int = 4
    big_clients: int = 10_000
    lag_replications: int = 100_000
    quick: bool = False


@dataclass
class Row:
    """One line of the results table."""

    measure: str
    simsvc: str
    other: str
    ratio: str
    target: str
    met: bool | None
    note: str = ""


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


# -- driving a service ----------------------------------------------------------------


async def post_json(session: aiohttp.ClientSession, url: str, body: Any = None) -> Any:
    async with session.post(url, json=body) as resp:
        if resp.status >= 300:
            raise RuntimeError(f"POST {url}: {resp.status} {await resp.text()}")
        return await resp.json(content_type=None)


async def wait_run(session: aiohttp.ClientSession, base: str, run_id: int) -> dict[str, Any]:
    """Poll a run until it ends (the bench may poll; the tests wait on events)."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        async with session.get(f"{base}/api/simulations/{run_id}") as resp:
            run: dict[str, Any] = await resp.json()
        if run["status"] not in ("queued", "running"):
            if run["status"] != "completed":
                raise RuntimeError(f"run {run_id} ended {run['status']}: {run['error']}")
            return run
        await asyncio.sleep(0.05)
    raise TimeoutError(f"run {run_id} did not end within {RUN_TIMEOUT_S} s")


async def run_and_wait(
    session: aiohttp.ClientSession, base: str, **body: Any
) -> tuple[dict[str, Any], float]:
    began = time.perf_counter()
    started = await post_json(session, f"{base}/api/simulations", body)
    run = await wait_run(session, base, int(started["run_id"]))
    return run, time.perf_counter() - began


async def timed_run_until_event(
    session: aiohttp.ClientSession,
    server: Server,
    before: Callable[[], object] = lambda: None,
    **body: Any,
) -> float:
    """Seconds from POST /api/simulations to this run's run.completed on /ws/events.

    `before` is called once the socket has its hello snapshot, just before the POST:
    a measure of the run alone starts there.
    """
    async with session.ws_connect(server.ws_url + "/ws/events") as ws:
        await ws.receive(timeout=30)  # the hello snapshot
        before()
        began = time.perf_counter()
        started = await post_json(session, f"{server.url}/api/simulations", body)
        async with asyncio.timeout(RUN_TIMEOUT_S):
            async for msg in ws:
                event = json.loads(msg.data)
                if event.get("run_id") == started["run_id"] and event["type"].startswith("run."):
                    if event["type"] in ("run.failed", "run.cancelled"):
                        raise RuntimeError(f"run ended {event['type']}")
                    if event["type"] == "run.completed":
                        return time.perf_counter() - began
    raise RuntimeError("the events socket closed before the run completed")


async def create_scenarios(
    session: aiohttp.ClientSession, base: str, count: int, model: str, prefix: str
) -> list[int]:
    ids = []
    for i in range(count):
        body = {"scenario_name": f"{prefix} {i + 1}", "model": model}
        ids.append(int((await post_json(session, f"{base}/api/scenarios", body))["scenario_id"]))
    return ids


async def with_servers(
    started: list[Server], body: Callable[[], Awaitable[list[Row]]]
) -> list[Row]:
    try:
        for server in started:
            await server.start()
        return await body()
    finally:
        await asyncio.gather(*(s.stop() for s in started))


# -- GET /api/results -----------------------------------------------------------------


async def paired_load(
    ours: Server, theirs: Server, settings: Settings
) -> tuple[list[float], list[float]]:
    """Alternate load runs on both systems, so that both see the same machine state."""
    mine: list[float] = []
    peer: list[float] = []
    for _ in range(settings.repeats):
        mine.append(
            (await http_load.load(ours.url + "/api/results", 20, settings.load_s)).requests_per_s
        )
        peer.append(
            (await http_load.load(theirs.url + "/api/results", 20, settings.load_s)).requests_per_s
        )
    return mine, peer


async def results_small(settings: Settings) -> list[Row]:
    """GET /api/results with 3 scenarios x 3 replications stored, 20 connections."""
    ours = servers.simsvc(settings.workdir)
    theirs = servers.peer(settings.workdir, reps=3)

    async def body() -> list[Row]:
        async with aiohttp.ClientSession() as session:
            await run_and_wait(session, ours.url, replications=3, seed=1)
        servers.seed_peer_rows(theirs, 3, 3)
        mine, peer = await paired_load(ours, theirs, settings)
        ratio = median([m / p for m, p in zip(mine, peer, strict=True)])
        return [
            Row(
                "GET /api/results, 3 x 3 rows, 20 connections (req/s)",
                f"{median(mine):,.0f}",
                f"peer {median(peer):,.0f}",
                f"{ratio:,.1f}x",
                ">= 10x",
                ratio >= 10,
            )
        ]

    return await with_servers([ours, theirs], body)


async def fill(
    session: aiohttp.ClientSession, server: Server, scenarios: int, reps: int
) -> list[int]:
    """Give a fresh simsvc `scenarios` scenarios (3 warehouse, the rest uniform) x `reps` rows."""
    ids = [1, 2, 3] + await create_scenarios(
        session, server.url, scenarios - 3, "uniform", "uniform"
    )
    await store(session, server, ids, reps)
    return ids


async def store(session: aiohttp.ClientSession, server: Server, ids: list[int], reps: int) -> None:
    _, seconds = await run_and_wait(
        session, server.url, scenario_ids=ids, replications=reps, seed=reps
    )
    log.info(
        "%d x %d replications stored in %.1f s (%.0f/s)",
        len(ids),
        reps,
        seconds,
        len(ids) * reps / seconds,
    )


async def results_large(settings: Settings) -> list[Row]:
    """1,000 scenarios: 100k rows against the peer; then 10k rows against 1M rows."""
    scenarios = 1000
    few, middle, many = (10, 100, 1000) if not settings.quick else (2, 10, 40)
    big = servers.simsvc(settings.workdir)
    small = servers.simsvc(settings.workdir)
    theirs = servers.peer(settings.workdir)

    async def body() -> list[Row]:
        async with aiohttp.ClientSession() as session:
            rss_fresh = big.rss_bytes()
            await fill(session, small, scenarios, few)
            ids = await fill(session, big, scenarios, middle)
            servers.seed_peer_rows(theirs, scenarios, middle)
            mine, peer = await paired_load(big, theirs, settings)
            await theirs.stop()
            await store(session, big, ids, many - middle)
            rss = big.rss_bytes()
            at_few, at_many = await paired_load(small, big, settings)
        ratio = median([m / p for m, p in zip(mine, peer, strict=True)])
        spread = median([a / b for a, b in zip(at_few, at_many, strict=True)])
        return [
            Row(
                f"GET /api/results, {scenarios:,} x {middle} rows, 20 connections (req/s)",
                f"{median(mine):,.0f}",
                f"peer {median(peer):,.1f}",
                f"{ratio:,.0f}x",
                ">= 50x",
                ratio >= 50,
            ),
            Row(
                f"GET /api/results time per request, {scenarios * few:,}"
                f" vs {scenarios * many:,} rows",
                f"{1e3 / median(at_few):.2f} ms vs {1e3 / median(at_many):.2f} ms",
                "",
                f"{max(spread, 1 / spread):.2f}x",
                "within 1.5x",
                max(spread, 1 / spread) <= 1.5,
                "1 / throughput at 20 connections; the two databases are served side by side"
                " and loaded alternately",
            ),
            Row(
                f"RSS after {scenarios * many:,} stored results",
                mb(rss),
                "",
                "",
                "report",
                None,
                f"service process only, {mb(rss_fresh)} when fresh;"
                f" database file {mb(_db_size(big))}",
            ),
        ]

    return await with_servers([big, small, theirs], body)


def _db_size(server: Server) -> int:
    db = Path(server.argv[server.argv.index("--db") + 1])
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


# -- a whole run ----------------------------------------------------------------------


async def peer_whole_run(session: aiohttp.ClientSession, server: Server) -> float:
    """Seconds from the peer's POST /api/simulations to its /ws/results broadcast."""
    async with session.ws_connect(server.ws_url + "/ws/results") as ws:
        began = time.perf_counter()
        await post_json(session, f"{server.url}/api/simulations")
        await ws.receive(timeout=RUN_TIMEOUT_S)
        return time.perf_counter() - began


async def simsvc_whole_run(session: aiohttp.ClientSession, server: Server, ids: list[int]) -> float:
    """Seconds from POST /api/simulations to the /ws/results broadcast of the finished run."""
    async with session.ws_connect(server.ws_url + "/ws/results") as ws:
        began = time.perf_counter()
        body = {"scenario_ids": ids, "replications": 1000}
        await post_json(session, f"{server.url}/api/simulations", body)
        await ws.receive(timeout=RUN_TIMEOUT_S)
        return time.perf_counter() - began


async def whole_run(settings: Settings) -> list[Row]:
    """3 scenarios x 1,000 replications of `uniform`, POST to broadcast."""
    ours = servers.simsvc(settings.workdir)
    theirs = servers.peer(settings.workdir, reps=1000)

    async def body() -> list[Row]:
        async with aiohttp.ClientSession() as session:
            ids = await create_scenarios(session, ours.url, 3, "uniform", "uniform")
            mine: list[float] = []
            peer: list[float] = []
            for _ in range(settings.repeats):
                mine.append(await simsvc_whole_run(session, ours, ids))
                peer.append(await peer_whole_run(session, theirs))
        share = median([m / p for m, p in zip(mine, peer, strict=True)])
        return [
            Row(
                "whole run, 3 x 1,000 `uniform`, POST to broadcast",
                f"{median(mine) * 1e3:,.0f} ms",
                f"peer {median(peer) * 1e3:,.0f} ms",
                f"1/{1 / share:,.0f}",
                "<= 1/20",
                share <= 1 / 20,
                "process executor, 2 workers; peer PEER_SLEEP=0",
            )
        ]

    return await with_servers([ours, theirs], body)


# -- the warehouse model --------------------------------------------------------------


def _simsvc_rate(replications: int) -> float:
    plan: sim.ScenarioPlan = {1: (sim.WAREHOUSE, sim.WAREHOUSE.defaults)}
    began = time.perf_counter()
    chunks.simulate_chunk(plan, 1, [(1, r) for r in range(replications)])
    return replications / (time.perf_counter() - began)


def _simpy_rate(replications: int) -> float:
    began = time.perf_counter()
    for r in range(replications):
        simulate_simpy(dict(DEFAULTS), sim.stream(1, r))
    return replications / (time.perf_counter() - began)


async def model_speed(settings: Settings) -> list[Row]:
    """Warehouse replications per second on one core, simsvc against SimPy."""
    n_fast, n_simpy = (5000, 250) if not settings.quick else (500, 30)
    ours: list[float] = []
    simpy: list[float] = []
    for _ in range(max(3, settings.repeats)):
        ours.append(await asyncio.to_thread(_simsvc_rate, n_fast))
        simpy.append(await asyncio.to_thread(_simpy_rate, n_simpy))
    ratio = median([o / s for o, s in zip(ours, simpy, strict=True)])
    return [
        Row(
            "`warehouse` replications/s, one core",
            f"{median(ours):,.0f}",
            f"SimPy {median(simpy):,.0f}",
            f"{ratio:,.1f}x",
            ">= 30x",
            ratio >= 30,
            "chunks.simulate_chunk (rows included) vs tests/reference_warehouse.py",
        )
    ]


async def scaling(settings: Settings) -> list[Row]:
    """A warehouse run end to end on the process executor, 2 workers against 1."""
    reps = 5000 if not settings.quick else 500
    one = servers.simsvc(settings.workdir, workers=1)
    two = servers.simsvc(settings.workdir, workers=2)

    async def body() -> list[Row]:
        times: dict[int, list[float]] = {1: [], 2: []}
        async with aiohttp.ClientSession() as session:
            for _ in range(settings.repeats):
                for workers, server in ((1, one), (2, two)):
                    seconds = await timed_run_until_event(session, server, replications=reps)
                    times[workers].append(seconds)
        speedup = median([a / b for a, b in zip(times[1], times[2], strict=True)])
        return [
            Row(
                f"end to end, 3 x {reps:,} `warehouse`, process executor: 2 workers vs 1",
                f"{3 * reps / median(times[2]):,.0f} rep/s",
                f"1 worker {3 * reps / median(times[1]):,.0f} rep/s",
                f"{speedup:.2f}x",
                ">= 1.7x",
                speedup >= 1.7,
                "POST to run.completed",
            )
        ]

    return await with_servers([one, two], body)


# -- WebSocket fan-out ----------------------------------------------------------------


async def _fanout(server: Server, clients: int, settings: Settings) -> fanout.Fanout:
    async with aiohttp.ClientSession() as session:

        async def notify() -> None:
            await post_json(session, f"{server.url}/api/notify-completion")

        return await fanout.measure(
            server.ws_url + "/ws/results",
            notify,
            clients,
            settings.fanout_processes,
            settings.fanout_rounds,
            server.rss_bytes,
        )


async def fanout_rows(settings: Settings) -> list[Row]:
    """Broadcast latency to 1,000 clients (against the peer) and to 10,000."""
    ours = servers.simsvc(settings.workdir)
    theirs = servers.peer(settings.workdir, reps=3)
    few = 1000 if not settings.quick else 200

    async def body() -> list[Row]:
        async with aiohttp.ClientSession() as session:
            await run_and_wait(session, ours.url, replications=3, seed=1)
        servers.seed_peer_rows(theirs, 3, 3)
        mine = await _fanout(ours, few, settings)
        peer = await _fanout(theirs, few, settings)
        many = await _fanout(ours, settings.big_clients, settings)
        rows = [
            Row(
                f"fan-out to {few:,} WebSocket clients, notify to delivery p50 / p99",
                f"{mine.p50_ms:.1f} / {mine.p99_ms:.1f} ms",
                f"peer {peer.p50_ms:.1f} / {peer.p99_ms:.1f} ms",
                f"{peer.p99_ms / mine.p99_ms:.1f}x faster (p99)",
                "not slower than the peer",
                mine.p50_ms <= peer.p50_ms and mine.p99_ms <= peer.p99_ms,
                f"{settings.fanout_rounds} rounds, {settings.fanout_processes} client processes",
            ),
            Row(
                f"fan-out to {many.clients:,} WebSocket clients, p50 / p99",
                f"{many.p50_ms:.1f} / {many.p99_ms:.1f} ms",
                "",
                "",
                "p99 <= 250 ms",
                many.p99_ms <= 250,
                f"max {many.max_ms:.0f} ms; {many.delivered:,} deliveries",
            ),
        ]
        assert many.rss_per_client_bytes is not None
        assert peer.rss_per_client_bytes is not None
        rows.append(
            Row(
                "RSS per idle WebSocket client",
                f"{many.rss_per_client_bytes / 1024:.1f} KiB",
                f"peer {peer.rss_per_client_bytes / 1024:.1f} KiB",
                "",
                "report",
                None,
                f"simsvc over {many.clients:,} clients, peer over {few:,}",
            )
        )
        return rows

    return await with_servers([ours, theirs], body)


# -- event-loop lag -------------------------------------------------------------------


async def _probe(
    session: aiohttp.ClientSession, url: str, until: asyncio.Future[Any]
) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not until.done() and time.monotonic() < deadline:
        began = time.perf_counter()
        async with session.get(url) as resp:
            await resp.read()
        latencies.append(time.perf_counter() - began)
        await asyncio.sleep(0.01)
    return latencies


async def loop_lag(settings: Settings) -> list[Row]:
    """/api/health latency while a 100,000-replication run keeps both cores busy."""
    ours = servers.simsvc(settings.workdir)

    async def body() -> list[Row]:
        async with aiohttp.ClientSession() as session:
            idle_done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(2.0, idle_done.set_result, None)
            idle = await _probe(session, ours.url + "/api/health", idle_done)
            run = asyncio.ensure_future(
                run_and_wait(
                    session,
                    ours.url,
                    scenario_ids=[1],
                    replications=settings.lag_replications,
                    seed=5,
                )
            )
            busy = await _probe(session, ours.url + "/api/health", run)
            _, seconds = await run
        p99 = fanout.percentile(busy, 0.99) * 1e3
        return [
            Row(
                f"event-loop lag during a {settings.lag_replications:,}-replication run"
                " (/api/health p50 / p99)",
                f"{median(busy) * 1e3:.1f} / {p99:.1f} ms",
                f"idle {median(idle) * 1e3:.1f} / {fanout.percentile(idle, 0.99) * 1e3:.1f} ms",
                "",
                "p99 < 50 ms",
                p99 < 50,
                f"{len(busy):,} probes over {seconds:.1f} s, max {max(busy) * 1e3:.0f} ms;"
                " process executor, 2 workers",
            )
        ]

    return await with_servers([ours], body)


MEASURES: dict[str, Callable[[Settings], Awaitable[list[Row]]]] = {
    "model": model_speed,
    "results-small": results_small,
    "whole-run": whole_run,
    "scaling": scaling,
    "lag": loop_lag,
    "results-large": results_large,
    "fanout": fanout_rows,
}
