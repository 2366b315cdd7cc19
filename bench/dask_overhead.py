"""What Dask costs against the process pool on one machine, measured side by side.

Three figures: the round trip of one empty task (the per-task overhead), the throughput
of `warehouse` chunks of several sizes (the chunk size that keeps the overhead small),
and a whole run through the service, POST to `run.completed`, with the CPU time of every
process involved (service, workers, scheduler).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import aiohttp
import psutil

from simsvc import backends, sim
from simsvc.chunks import simulate_chunk
from simsvc.dask_backend import DaskBackend

from . import servers
from .measures import Row, Settings, timed_run_until_event

log = logging.getLogger("bench.dask")

WORKERS = 2
CHUNK_SIZES = (1, 10, 100, 500)
SMALL_OVERHEAD = 0.05  # what "small" means for the chunk size figure


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and all their children, so far."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
    return total


async def round_trip_ms(backend: backends.Backend, count: int) -> float:
    """Median time of one empty task, submitted alone and awaited."""
    times = []
    for _ in range(count):
        began = time.perf_counter()
        await backend.submit(os.getpid)
        times.append(time.perf_counter() - began)
    return 1000 * median(times)


async def chunked(backend: backends.Backend, replications: int, size: int) -> float:
    """Seconds to compute `replications` in chunks of `size`, two per worker in flight."""
    plan: sim.ScenarioPlan = {1: (sim.WAREHOUSE, sim.WAREHOUSE.defaults)}
    pairs = [(1, r) for r in range(1, replications + 1)]
    chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
    limit = asyncio.Semaphore(2 * backend.workers)

    async def one(chunk: list[tuple[int, int]]) -> None:
        async with limit:
            await backend.submit(simulate_chunk, plan, 7, chunk)

    began = time.perf_counter()
    await asyncio.gather(*(one(c) for c in chunks))
    return time.perf_counter() - began


@contextlib.asynccontextmanager
async def both_backends() -> AsyncIterator[dict[str, backends.Backend]]:
    pool = await backends.open_backend("process", WORKERS)
    dask = await DaskBackend.open("dask-local", WORKERS, backends.ClusterTimeouts())
    try:
        await asyncio.gather(*(pool.submit(os.getpid) for _ in range(4 * WORKERS)))
        yield {"process": pool, "dask-local": dask}
    finally:
        await pool.close()
        await dask.close()


async def in_process(settings: Settings) -> list[Row]:
    """Per-task round trip and chunk-size sweep, the two backends alternating."""
    reps = 2_000 if settings.quick else 12_000
    trips: dict[str, list[float]] = {"process": [], "dask-local": []}
    sweep: dict[tuple[str, int], list[float]] = {}
    async with both_backends() as backends:
        for _ in range(settings.repeats):
            for name, backend in backends.items():
                trips[name].append(await round_trip_ms(backend, 50 if settings.quick else 200))
                for size in CHUNK_SIZES:
                    count = reps if size > 1 else reps // 40
                    seconds = await chunked(backend, count, size)
                    sweep.setdefault((name, size), []).append(seconds / count)
    return [_trip_row(trips), *_sweep_rows(sweep, reps)]


def _trip_row(trips: dict[str, list[float]]) -> Row:
    dask, pool = median(trips["dask-local"]), median(trips["process"])
    return Row(
        "one empty task, submit to result (ms)",
        f"dask-local {dask:.2f} ms",
        f"process {pool:.2f} ms",
        f"{dask / pool:.1f}x",
        "report",
        None,
        f"median of {len(trips['process'])} x 200 sequential round trips, {WORKERS} workers",
    )


def _sweep_rows(sweep: dict[tuple[str, int], list[float]], reps: int) -> list[Row]:
    rows = []
    smallest: int | None = None
    for size in CHUNK_SIZES:
        dask, pool = median(sweep[("dask-local", size)]), median(sweep[("process", size)])
        overhead = dask / pool - 1
        if smallest is None and overhead <= SMALL_OVERHEAD:
            smallest = size
        rows.append(
            Row(
                f"`warehouse` in chunks of {size}, {WORKERS} workers (rep/s)",
                f"dask-local {1 / dask:,.0f}",
                f"process {1 / pool:,.0f}",
                f"{overhead:+.0%} time",
                "report",
                None,
                f"{reps if size > 1 else reps // 40:,} replications, 2 chunks per worker in flight",
            )
        )
    rows.append(
        Row(
            f"smallest chunk with Dask overhead <= {SMALL_OVERHEAD:.0%}",
            f"{smallest} replications" if smallest else f"none up to {CHUNK_SIZES[-1]}",
            "",
            "",
            "report",
            None,
            "the service's chunks: min(500, pairs / (4 x threads))",
        )
    )
    return rows


# -- a whole run through the service --------------------------------------------------


@dataclass
class Cluster:
    """`dask scheduler` and `dask worker` processes on loopback, as an operator starts them."""

    port: int
    processes: list[subprocess.Popen[bytes]]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]


def start_cluster(workdir: Path) -> Cluster:
    port = servers.free_port()
    dask = str(Path(sys.executable).parent / "dask")  # the CLI installed with distributed
    address = f"tcp://{servers.HOST}:{port}"
    logs = (workdir / f"dask-{port}.log").open("wb")
    scheduler = [dask, "scheduler", "--host", servers.HOST, "--port", str(port)]
    # As docs/scale-out.md advises for workers on the service's machine.
    worker = ["nice", "-n", "10", dask, "worker", address, "--nworkers", str(WORKERS)]
    quiet = {**os.environ, "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}
    return Cluster(
        port,
        [
            subprocess.Popen([*scheduler, "--dashboard-address", ":0"], stdout=logs, stderr=logs),
            subprocess.Popen(
                [*worker, "--nthreads", "1", "--host", servers.HOST],
                stdout=logs,
                stderr=logs,
                env=quiet,
            ),
        ],
    )


async def stop_cluster(cluster: Cluster) -> None:
    for process in reversed(cluster.processes):
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(process.wait, 20)
        if process.poll() is None:
            process.kill()


async def end_to_end(settings: Settings) -> list[Row]:
    """The same run on the process pool, dask-local and a dask:// cluster, alternating."""
    reps = 1_000 if settings.quick else 10_000
    cluster = start_cluster(settings.workdir)
    services = {
        "process": servers.simsvc(settings.workdir, WORKERS, "process"),
        "dask-local": servers.simsvc(settings.workdir, WORKERS, "dask-local"),
        "dask://": servers.simsvc(
            settings.workdir, WORKERS, f"dask://{servers.HOST}:{cluster.port}"
        ),
    }
    extra = {"dask://": cluster.pids}
    seconds: dict[str, list[float]] = {name: [] for name in services}
    cpu: dict[str, list[float]] = {name: [] for name in services}
    try:
        for server in services.values():
            await server.start()
        await _wait_threads(services["dask://"], WORKERS)
        async with aiohttp.ClientSession() as session:
            for _ in range(settings.repeats):
                for name, server in services.items():
                    pids = [server.pid, *extra.get(name, [])]
                    before = cpu_seconds(pids)
                    seconds[name].append(
                        await timed_run_until_event(session, server, replications=reps)
                    )
                    cpu[name].append(cpu_seconds(pids) - before)
    finally:
        await asyncio.gather(*(s.stop() for s in services.values()))
        await stop_cluster(cluster)
    return _end_to_end_rows(seconds, cpu, reps)


async def _wait_threads(server: servers.Server, threads: int) -> None:
    """The dask:// service counts the cluster's threads; wait until every worker is in."""
    async with aiohttp.ClientSession() as session, asyncio.timeout(60):
        while True:
            async with session.get(server.url + "/api/health") as resp:
                if (await resp.json())["executor"]["threads"] >= threads:
                    return
            await asyncio.sleep(0.2)


def _end_to_end_rows(
    seconds: dict[str, list[float]], cpu: dict[str, list[float]], reps: int
) -> list[Row]:
    base_s, base_cpu = median(seconds["process"]), median(cpu["process"])
    rows = []
    for name in ("dask-local", "dask://"):
        took, used = median(seconds[name]), median(cpu[name])
        rows.append(
            Row(
                f"end to end, 3 x {reps:,} `warehouse`, {WORKERS} workers, {name} vs process",
                f"{took:.2f} s, CPU {used:.1f} s",
                f"{base_s:.2f} s, CPU {base_cpu:.1f} s",
                f"{took / base_s:.2f}x time, {used / base_cpu:.2f}x CPU",
                "report",
                None,
                "POST to run.completed; CPU of the service, its workers and (dask://) the"
                " scheduler and worker processes",
            )
        )
    return rows


MEASURES: dict[str, Callable[[Settings], Awaitable[list[Row]]]] = {
    "dask-tasks": in_process,
    "dask-run": end_to_end,
}
