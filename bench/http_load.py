"""HTTP load: wrk when it is installed, else a bounded aiohttp load generator."""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
import time
from dataclasses import dataclass

import aiohttp

WRK = shutil.which("wrk")


@dataclass(frozen=True)
class Load:
    """What one load run measured."""

    requests_per_s: float
    mean_latency_ms: float
    requests: int
    errors: int
    tool: str


async def load(url: str, connections: int, duration_s: float, threads: int = 2) -> Load:
    """Hit `url` with `connections` keep-alive connections for `duration_s` seconds."""
    if WRK is not None:
        return await _wrk(url, connections, duration_s, threads)
    return await _aiohttp_load(url, connections, duration_s)


async def _wrk(url: str, connections: int, duration_s: float, threads: int) -> Load:
    assert WRK is not None
    argv = [WRK, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{duration_s:g}s"]
    argv += ["--timeout", "60s", url]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), duration_s + 120)
    text = out.decode()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    count = re.search(r"(\d+) requests in", text)
    latency = re.search(r"Latency\s+([\d.]+)(us|ms|s)\b", text)
    if rps is None or count is None or latency is None:
        raise RuntimeError(f"could not read wrk's output:\n{text}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[latency.group(2)]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Load(
        float(rps.group(1)), float(latency.group(1)) * scale, int(count.group(1)), errors, "wrk"
    )


async def _aiohttp_load(url: str, connections: int, duration_s: float) -> Load:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration_s

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            started = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
                errors += resp.status >= 400
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed = time.monotonic() - began
    return Load(
        len(latencies) / elapsed,
        statistics.fmean(latencies) * 1e3 if latencies else float("nan"),
        len(latencies),
        errors,
        "aiohttp",
    )
