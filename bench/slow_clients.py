"""Healthy-client latency and memory with and without stalled WebSocket peers.

Run from the repository root: `python -m bench.slow_clients [--stalled 20] [--broadcasts 30]`.
It serves the app in this process on a free port, grows the aggregate list to 1,000
scenarios (about 0.5 MB per broadcast), then times `POST /api/notify-completion` until
every healthy client holds the message, first with no stalled peers, then with
`--stalled` raw sockets that never read. RSS is this process's, server and clients.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from dataclasses import dataclass

import aiohttp
import psutil
from aiohttp import web

from simsvc.resources import DB, EVENTS_HUB, RESULTS_HUB
from simsvc.web import Config, create_app
from tests.rawsocket import open_raw_websocket

log = logging.getLogger("bench.slow_clients")


@dataclass
class Phase:
    name: str
    latencies_ms: list[float]
    notify_ms: list[float]
    rss_before_mb: float
    rss_after_mb: float

    def report(self) -> None:
        lat = sorted(self.latencies_ms)
        log.info(
            "%s: healthy latency p50 %.1f ms, p95 %.1f ms, max %.1f ms; notify answered in "
            "p50 %.1f ms, max %.1f ms; RSS %.1f -> %.1f MB (%+.1f MB)",
            self.name,
            statistics.median(lat),
            lat[int(0.95 * (len(lat) - 1))],
            lat[-1],
            statistics.median(self.notify_ms),
            max(self.notify_ms),
            self.rss_before_mb,
            self.rss_after_mb,
            self.rss_after_mb - self.rss_before_mb,
        )


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 1e6


async def seed_scenarios(app: web.Application, session: aiohttp.ClientSession, n: int) -> None:
    database = app[DB]
    for i in range(len(await database.scenario_names()), n):
        await database.create_scenario(f"scenario {i + 1:04d}", "warehouse", {"workers": 5})
    rows = [
        {
            "scenario_id": sid,
            "replication": r,
            "total_labor_costs": 9000.0 + sid + r,
            "ontime_delivery_rate": 0.5 + r / 10,
        }
        for sid in range(1, n + 1)
        for r in (1, 2, 3)
    ]
    async with session.post("/api/results", json=rows) as resp:
        assert resp.status == 201, await resp.text()


async def measure(
    session: aiohttp.ClientSession,
    healthy: list[aiohttp.ClientWebSocketResponse],
    n: int,
    name: str,
) -> Phase:
    rss_before = rss_mb()
    latencies, notify = [], []
    for _ in range(n):
        started = time.perf_counter()
        async with session.post("/api/notify-completion") as resp:
            assert resp.status == 200
        notify.append((time.perf_counter() - started) * 1000)
        await asyncio.gather(*(ws.receive(timeout=30) for ws in healthy))
        latencies.append((time.perf_counter() - started) * 1000)
    return Phase(name, latencies, notify, rss_before, rss_mb())


async def main(stalled_count: int, broadcasts: int, healthy_count: int) -> None:
    app = create_app(Config(db_path=":memory:", executor="thread", workers=1))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(base, max_line_size=1 << 16) as session:
        await seed_scenarios(app, session, 1000)
        healthy = [await session.ws_connect("/ws/results") for _ in range(healthy_count)]
        baseline = await measure(session, healthy, broadcasts, "no stalled peers")
        stalled = [
            await open_raw_websocket("127.0.0.1", port, path, receive_buffer=1024)
            for path in ("/ws/results", "/ws/events") * (stalled_count // 2)
        ]
        loaded = await measure(session, healthy, broadcasts, f"{len(stalled)} stalled peers")
        closing = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(app[RESULTS_HUB].evictions_done(), app[EVENTS_HUB].evictions_done()),
            30,
        )
        log.info(
            "stalled peers: evictions finished %.2f s after the last broadcast; hubs now hold "
            "%d + %d clients; RSS %.1f MB",
            time.perf_counter() - closing,
            len(app[RESULTS_HUB]),
            len(app[EVENTS_HUB]),
            rss_mb(),
        )
        for phase in (baseline, loaded):
            phase.report()
        for sock in stalled:
            sock.close()
        for ws in healthy:
            await ws.close()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalled", type=int, default=20)
    parser.add_argument("--broadcasts", type=int, default=30)
    parser.add_argument("--healthy", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("simsvc.hub").setLevel(logging.ERROR)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    asyncio.run(main(args.stalled, args.broadcasts, args.healthy))
