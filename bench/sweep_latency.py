"""How a 10,000-point sweep is handled: accepted, run off the loop, read back.

    python -m bench.sweep_latency [--replications 5]

Starts the service in-process on a process pool, posts a 100 x 100 grid sweep, and
measures: the time to the 202; while it runs, the latency of `GET /api/health` (the
event loop stays free) and of `GET /api/experiments/{id}` with its 10,000 points; and
the time to cancel it. Prints one line per figure and the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from simsvc.web import Config, create_app

SWEEP: dict[str, Any] = {
    "kind": "sweep",
    "seed": 3,
    "factors": {
        "workers": {"min": 1, "max": 100, "step": 1},
        "orders_per_hour": {"min": 10, "max": 109, "step": 1},
    },
}


async def _timed(client: TestClient[Any, Any], method: str, path: str, **kw: Any) -> float:
    began = time.perf_counter()
    resp = await client.request(method, path, **kw)
    await resp.read()
    assert resp.status < 300, resp.status
    return time.perf_counter() - began


async def measure(replications: int, db_path: Path) -> list[str]:
    app = create_app(Config(db_path=str(db_path), executor="process"))
    async with TestClient(TestServer(app)) as client:
        await client.get("/api/health")
        began = time.perf_counter()
        resp = await client.post("/api/experiments", json={**SWEEP, "replications": replications})
        accepted = time.perf_counter() - began
        eid = (await resp.json())["experiment_id"]
        health, reads = [], []
        for _ in range(5):
            await asyncio.sleep(1.0)  # spread the reads over the run
            health.append(await _timed(client, "GET", "/api/health"))
            reads.append(await _timed(client, "GET", f"/api/experiments/{eid}"))
        cancel = await _timed(client, "POST", f"/api/experiments/{eid}/cancel")
    return [
        f"POST of a 10,000-point sweep answered 202 in {accepted * 1000:.0f} ms",
        f"GET /api/health during the sweep: median {statistics.median(health) * 1000:.1f} ms, "
        f"max {max(health) * 1000:.1f} ms",
        f"GET of the sweep (10,000 points): median {statistics.median(reads):.2f} s, "
        f"max {max(reads):.2f} s",
        f"cancel answered in {cancel * 1000:.0f} ms",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sweep_latency", description=__doc__)
    parser.add_argument("--replications", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        lines = asyncio.run(measure(args.replications, Path(tmp) / "sweep.db"))
    lines.append(f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
