"""The storage path and the exports: this checkout against an earlier version, side by side.

The earlier version (`BENCH_BASELINE`, by default the last commit before workers sent
chunks ready to store) is extracted from git and served the same way, and the two are
measured alternately in one invocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from . import fanout, machine, servers
from .measures import (
    Row,
    Settings,
    _probe,
    create_scenarios,
    mb,
    median,
    run_and_wait,
    timed_run_until_event,
    with_servers,
)
from .servers import Server

BASELINE = os.environ.get("BENCH_BASELINE", "23a3abc")
# What each stored row may cost the service, and the rates the service must sustain.
LOOP_US_PER_ROW = 2.0
INGEST_ROWS_PER_S = 250_000
CSV_ROWS_PER_S = 500_000
EXPORT_RSS_BYTES = 50 * 2**20
# A repeat of scaling-warehouse whose 2 workers took more (or less) CPU per replication
# than 1 worker did, by more than this share, was slowed by the machine's other tenants
# (in its run with 2 workers, or with 1), not by the service.
CONTENDED = 0.02
# The exports before rows were encoded by orjson (schema 2, so it reads the same file).
EXPORT_BASELINE = os.environ.get("BENCH_EXPORT_BASELINE", "9265832")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f}"


@dataclass
class MeasuredRun:
    """One run end to end, and the CPU it took per row: the service's and its workers'."""

    seconds: float
    loop_us: float
    service_us: float
    workers_us: float


async def _measured_run(
    session: aiohttp.ClientSession, server: Server, rows: int, **body: Any
) -> MeasuredRun:
    """One run of `rows` rows: its time, and the CPU from its POST to its run.completed."""
    before: list[tuple[float, float, float]] = []

    def take() -> None:
        before.append((servers.main_thread_cpu_s(server.pid), *servers.tasks_cpu_s(server.pid)))

    seconds = await timed_run_until_event(session, server, take, **body)
    service_after, workers_after = servers.tasks_cpu_s(server.pid)
    loop_after = servers.main_thread_cpu_s(server.pid)
    (loop_before, service_before, workers_before), *_ = before
    per_row = 1e6 / rows
    return MeasuredRun(
        seconds,
        (loop_after - loop_before) * per_row,
        (service_after - service_before) * per_row,
        (workers_after - workers_before) * per_row,
    )


async def ingest(settings: Settings) -> list[Row]:
    """3 x 100,000 `uniform` replications, 2 process workers: rows/s and service CPU per row."""
    reps = 100_000 if not settings.quick else 10_000
    source = servers.baseline_source(settings.workdir, BASELINE)
    new = servers.simsvc(settings.workdir)
    old = servers.simsvc(settings.workdir, source=source)

    async def body() -> list[Row]:
        seen: dict[str, list[MeasuredRun]] = {"new": [], "old": []}
        async with aiohttp.ClientSession() as session:
            ids = {
                name: await create_scenarios(session, s.url, 3, "uniform", "uniform")
                for name, s in (("new", new), ("old", old))
            }
            for _ in range(settings.repeats):
                for name, server in (("new", new), ("old", old)):
                    body = {"scenario_ids": ids[name], "replications": reps, "seed": reps}
                    got = await _measured_run(session, server, len(ids[name]) * reps, **body)
                    seen[name].append(got)
        mine, before = seen["new"], seen["old"]
        rows = 3 * reps
        rate = median([rows / i.seconds for i in mine])
        old_rate = median([rows / i.seconds for i in before])
        loop_us = median([i.loop_us for i in mine])
        return [
            Row(
                f"ingest, 3 x {reps:,} `uniform`, 2 process workers (rows/s)",
                f"{rate:,.0f}",
                f"{BASELINE} {old_rate:,.0f}",
                f"{rate / old_rate:.1f}x",
                f">= {INGEST_ROWS_PER_S:,}",
                rate >= INGEST_ROWS_PER_S,
                f"POST to run.completed; {load()} after it",
            ),
            Row(
                "service CPU per stored row: event loop (main thread) / whole process",
                f"{loop_us:.2f} / {median([i.service_us for i in mine]):.2f} µs",
                f"{BASELINE} {median([i.loop_us for i in before]):.2f}"
                f" / {median([i.service_us for i in before]):.2f} µs",
                "",
                f"loop <= {LOOP_US_PER_ROW:g} µs",
                loop_us <= LOOP_US_PER_ROW,
                "CPU seconds of the service process (not its workers) over the run, per row;"
                " the whole process includes aiosqlite's thread and the pool's threads",
            ),
        ]

    return await with_servers([new, old], body)


async def scaling_warehouse(settings: Settings) -> list[Row]:
    """3 x 5,000 `warehouse`: 2 workers against 1, this checkout and the baseline.

    Each repeat measures every system once, in the opposite order to the repeat before,
    so that a drift of the machine's speed weighs on 1 and 2 workers alike. Besides the
    end-to-end ratio, the CPU per row says where time went: the service's (which the
    workers wait for only when the cores are full) and the workers' (which rises when
    two run at once on a shared machine).
    """
    reps = 5000 if not settings.quick else 500
    rows = 3 * reps
    source = servers.baseline_source(settings.workdir, BASELINE)
    systems = {
        (version, workers): servers.simsvc(settings.workdir, workers=workers, source=src)
        for version, src in (("new", None), ("old", source))
        for workers in (1, 2)
    }

    async def body() -> list[Row]:
        seen: dict[tuple[str, int], list[MeasuredRun]] = {key: [] for key in systems}
        bare: dict[int, list[float]] = {1: [], 2: []}
        async with (
            aiohttp.ClientSession() as session,
            machine.BarePool(1) as alone,
            machine.BarePool(2) as pair,
        ):
            for repeat in range(settings.repeats):
                order: list[tuple[tuple[str, int], Server] | machine.BarePool]
                order = [*systems.items(), alone, pair]
                for item in order if repeat % 2 == 0 else reversed(order):
                    if isinstance(item, machine.BarePool):
                        bare[item.workers].append(await item.seconds(reps))
                        continue
                    key, server = item
                    seen[key].append(await _measured_run(session, server, rows, replications=reps))

        def ratios(version: str) -> list[float]:
            pairs = zip(seen[version, 1], seen[version, 2], strict=True)
            return [one.seconds / two.seconds for one, two in pairs]

        def rate(key: tuple[str, int]) -> str:
            return f"{rows / median([s.seconds for s in seen[key]]):,.0f} rep/s"

        def cpu(key: tuple[str, int], field: str) -> float:
            return median([getattr(s, field) for s in seen[key]])

        new, old = median(ratios("new")), median(ratios("old"))
        one, two = cpu(("new", 1), "workers_us"), cpu(("new", 2), "workers_us")
        service = cpu(("new", 2), "service_us")
        bound = 2 * one / (one + service)
        uncontended = [
            ratio
            for ratio, a, b in zip(ratios("new"), seen["new", 1], seen["new", 2], strict=True)
            if abs(b.workers_us / a.workers_us - 1) <= CONTENDED
        ]
        machine_ratios = [one / two for one, two in zip(bare[1], bare[2], strict=True)]
        shares = [ours / its for ours, its in zip(ratios("new"), machine_ratios, strict=True)]
        return [
            Row(
                f"end to end, 3 x {reps:,} `warehouse`: 2 process workers vs 1",
                f"{new:.3f}x ({rate(('new', 2))})",
                f"{BASELINE} {old:.2f}x ({rate(('old', 2))})",
                "",
                ">= 1.9x",
                new >= 1.9,
                "POST to run.completed, median of the repeats' ratios ("
                + ", ".join(f"{r:.2f}" for r in ratios("new"))
                + f"); {load()} after it",
            ),
            Row(
                "service CPU per stored `warehouse` row, 2 workers: event loop / whole process",
                f"{cpu(('new', 2), 'loop_us'):.2f} / {service:.2f} µs",
                f"{BASELINE} {cpu(('old', 2), 'loop_us'):.2f}"
                f" / {cpu(('old', 2), 'service_us'):.2f} µs",
                "",
                "report",
                None,
                "scheduler statistics (ns); what docs/scale-out.md's ceiling is computed from",
            ),
            Row(
                "workers' CPU per `warehouse` row: 1 worker / 2 workers",
                f"{one:.1f} / {two:.1f} µs ({two / one - 1:+.1%})",
                "",
                "",
                "report",
                None,
                "the same replications: a rise is two workers slowing each other on this"
                " machine's cores, which no service can win back",
            ),
            Row(
                "end to end, the repeats whose 2 workers computed a row as fast as 1 did",
                f"{median(uncontended):.2f}x" if uncontended else "none",
                "",
                "",
                "report",
                None,
                f"{len(uncontended)} of {len(ratios('new'))} repeats: the workers' CPU per row"
                f" within {CONTENDED:.0%} of one worker's, either way, so that the ratio"
                " measures the service, not the machine's other tenants",
            ),
            Row(
                "the same replications in bare processes (no service): 2 vs 1",
                f"{median(machine_ratios):.2f}x",
                "",
                "",
                "report",
                None,
                "the machine's own ceiling in the same repeats ("
                + ", ".join(f"{r:.2f}" for r in machine_ratios)
                + "): `simulate_chunk` in a process pool of 1 and of 2, storing nothing",
            ),
            Row(
                "end to end 2 vs 1, as a share of the bare processes' in the same repeat",
                f"{median(shares):.1%}",
                "",
                "",
                "report",
                None,
                "median of the repeats' shares ("
                + ", ".join(f"{r:.1%}" for r in shares)
                + "); what the service costs two workers, with the machine's own loss"
                " taken out",
            ),
            Row(
                "2 vs 1 as the service's CPU alone bounds it: 2W / (W + S)",
                f"{bound:.2f}x",
                "",
                "",
                "report",
                None,
                f"W = {one:.1f} µs a row of one worker, S = {service:.2f} µs of the service"
                " (2 cores, both busy with 2 workers)",
            ),
        ]

    return await with_servers(list(systems.values()), body)


# -- exports --------------------------------------------------------------------------


@dataclass
class Exported:
    rows_per_s: float
    rss_growth: int
    health_p50_ms: float
    health_p99_ms: float
    size: int
    cpu_us: float  # the server's CPU time per row, all threads: less sensitive to load


async def _sample_rss(server: Server, until: asyncio.Future[object]) -> int:
    peak = server.rss_bytes()
    while not until.done():
        peak = max(peak, server.rss_bytes())
        await asyncio.sleep(0.02)
    return peak


async def _export_once(
    session: aiohttp.ClientSession, server: Server, run_id: int, fmt: str, rows: int
) -> Exported:
    before = server.rss_bytes()
    _, cpu_before = servers.thread_cpu_s(server.pid)
    done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    sampler = asyncio.ensure_future(_sample_rss(server, done))
    prober = asyncio.ensure_future(_probe(session, server.url + "/api/health", done))
    began = time.perf_counter()
    size = 0
    try:
        url = f"{server.url}/api/simulations/{run_id}/results?format={fmt}"
        async with session.get(url) as resp:
            resp.raise_for_status()
            async for piece in resp.content.iter_chunked(1 << 18):
                size += len(piece)
        seconds = time.perf_counter() - began
    finally:
        done.set_result(None)
    peak, health = await sampler, await prober
    _, cpu_after = servers.thread_cpu_s(server.pid)
    return Exported(
        rows / seconds,
        peak - before,
        median(health) * 1e3,
        fanout.percentile(health, 0.99) * 1e3,
        size,
        (cpu_after - cpu_before) / rows * 1e6,
    )


async def exports(settings: Settings) -> list[Row]:
    """1,000,000 stored rows exported as CSV, JSON and Parquet; CSV also by the baseline."""
    scenarios, reps = (10, 100_000) if not settings.quick else (10, 10_000)
    rows = scenarios * reps
    db_path = settings.workdir / "exports.db"
    new = servers.simsvc(settings.workdir, db_path=db_path)
    source = servers.baseline_source(settings.workdir, EXPORT_BASELINE)
    old = servers.simsvc(settings.workdir, source=source, db_path=db_path)
    out: list[Row] = []
    async with aiohttp.ClientSession() as session:
        await new.start()
        try:
            ids = await create_scenarios(session, new.url, scenarios, "uniform", "uniform")
            run, _ = await run_and_wait(session, new.url, scenario_ids=ids, replications=reps)
            # The first Parquet export of a process loads pyarrow (and pandas, which
            # pyarrow imports when it is installed): measured apart from a later one.
            for fmt, when in (("csv", ""), ("json", ""), ("parquet", "first"), ("parquet", "")):
                got = await _export_once(session, new, run["run_id"], fmt, rows)
                out.append(_export_row(fmt, rows, got, first=bool(when)))
        finally:
            await new.stop()
        _stamp_schema_2(db_path)
        await old.start()  # the same database file, served by the earlier version
        try:
            got = await _export_once(session, old, run["run_id"], "csv", rows)
            out.append(_export_row("csv", rows, got, EXPORT_BASELINE))
        finally:
            await old.stop()
    return out


def _stamp_schema_2(path: Path) -> None:
    """Let the earlier version open the file: it refuses a newer schema version, and
    version 3 only adds a table and a column with a default, which it never reads."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version=2")


def _export_row(
    fmt: str, rows: int, got: Exported, version: str = "", *, first: bool = False
) -> Row:
    target = ""
    met: bool | None = None
    if first:
        # Loading pyarrow (and pandas) grows the process once, by about 64 MiB: its RSS
        # is reported, the event loop's lag held to the target.
        version = "first in the process, loading pyarrow"
        target = "health p99 < 50 ms"
        met = got.health_p99_ms < 50
    elif not version:
        csv_ok = fmt != "csv" or got.rows_per_s >= CSV_ROWS_PER_S
        target = f"RSS < {mb(EXPORT_RSS_BYTES)}, health p99 < 50 ms"
        target += f", >= {CSV_ROWS_PER_S:,} rows/s" if fmt == "csv" else ""
        met = csv_ok and got.rss_growth < EXPORT_RSS_BYTES and got.health_p99_ms < 50
    who = f" ({version})" if version else ""
    return Row(
        f"export of {rows:,} rows as {fmt}{who}: rows/s; RSS growth; /api/health p50 / p99",
        f"{got.rows_per_s:,.0f}; {mb(got.rss_growth)};"
        f" {got.health_p50_ms:.1f} / {got.health_p99_ms:.1f} ms",
        "",
        "",
        target or "report",
        met,
        f"{mb(got.size)} sent; server CPU {got.cpu_us:.2f} µs/row (all threads, health"
        f" probes included); `uniform` rows; {load()} after it",
    )


STORAGE_MEASURES = {"ingest": ingest, "scaling-warehouse": scaling_warehouse, "exports": exports}
