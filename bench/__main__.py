"""`python -m bench`: measure simsvc against the seed's peer and SimPy; write bench/RESULTS.md.

Every service runs as a subprocess on 127.0.0.1 with a fresh database in a temporary
directory. Each figure is a median over repeated runs; each ratio is taken within one
invocation, with the two systems measured alternately.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from . import crn_gain, dask_overhead, http_load, ingest, measures, worker_rows
from .measures import Row, Settings

log = logging.getLogger("bench")

MEASURES = {
    **measures.MEASURES,
    **dask_overhead.MEASURES,
    **crn_gain.MEASURES,
    **ingest.STORAGE_MEASURES,
    **worker_rows.WORKER_MEASURES,
}

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# What the figures mean and what was tried where a target is missed; kept by hand and
# copied under each new table.
DISCUSSION = Path(__file__).resolve().parent / "discussion.md"
HEADER = ("measure", "simsvc", "compared with", "ratio", "target", "met")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only", action="append", choices=sorted(MEASURES), help="run only these measures"
    )
    parser.add_argument("--repeats", type=int, default=3, help="repetitions per figure")
    parser.add_argument("--load-seconds", type=float, default=5.0, help="length of a load run")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the report")
    return parser.parse_args()


def raise_file_limit() -> int:
    """Allow as many open files as the hard limit permits: 10,000 sockets need it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()},"
        f" Python {platform.python_version()}"
    )


def table(rows: list[Row]) -> str:
    def met(row: Row) -> str:
        return "-" if row.met is None else ("yes" if row.met else "**no**")

    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        cells = (row.measure, row.simsvc, row.other, row.ratio, row.target, met(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(rows: list[Row]) -> str:
    return "\n".join(f"- {row.measure}: {row.note}" for row in rows if row.note)


def report(
    rows: list[Row], conditions: list[str], settings: Settings, elapsed_s: float, files: int
) -> str:
    load_tool = "wrk" if http_load.WRK else "aiohttp load generator"
    return (
        "# simsvc benchmarks\n\n"
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- machine: {machine()}\n"
        f"- command: `python -m bench{' --quick' if settings.quick else ''}`"
        f" ({settings.repeats} repeats, {settings.load_s:g} s load runs with {load_tool},"
        f" open-file limit {files}); took {elapsed_s / 60:.1f} min\n\n"
        f"{table(rows)}\n\n## Notes\n\n{notes(rows)}\n\n"
        "## Conditions\n\nEach measure, how long it took, and what else was using the machine"
        " just before it started:\n\n" + "\n".join(conditions) + "\n" + discussion()
    )


def discussion() -> str:
    if not DISCUSSION.exists():
        return ""
    return "\n" + DISCUSSION.read_text(encoding="utf-8")


def competing_load(sample_s: float = 1.0) -> str:
    """Load average and the busiest processes outside this bench: the machine may be shared."""
    mine = {os.getpid(), *(c.pid for c in psutil.Process().children(recursive=True))}
    others = [p for p in psutil.process_iter(["pid", "name"]) if p.pid not in mine]
    for proc in others:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(sample_s)
    busy = []
    for proc in others:
        with contextlib.suppress(psutil.Error):
            share = proc.cpu_percent(None)
            if share >= 20:
                busy.append(f"{proc.info['name']} {share:.0f}%")
    return f"load average {os.getloadavg()[0]:.1f}" + (
        f"; other processes busy: {', '.join(busy)}" if busy else ""
    )


async def run(names: list[str], settings: Settings) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    conditions = []
    for name in names:
        load = await asyncio.to_thread(competing_load)
        log.info("measuring %s (%s)", name, load)
        began = time.monotonic()
        try:
            rows += await MEASURES[name](settings)
        except Exception as exc:  # one broken measure should not lose the others
            log.exception("%s failed", name)
            rows.append(Row(name, "failed", "", "", "", False, f"{type(exc).__name__}: {exc}"))
        elapsed = time.monotonic() - began
        conditions.append(f"- {name}: {elapsed:.0f} s; before it: {load}")
        log.info("%s took %.0f s", name, elapsed)
    return rows, conditions


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    files = raise_file_limit()
    names = args.only or list(MEASURES)
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="simsvc-bench-") as workdir:
        settings = Settings(
            workdir=Path(workdir),
            repeats=args.repeats,
            load_s=args.load_seconds,
            quick=args.quick,
        )
        if args.quick:
            settings.fanout_rounds, settings.big_clients = 3, 2000
            settings.lag_replications = 10_000
        rows, conditions = asyncio.run(run(names, settings))
    text = report(rows, conditions, settings, time.monotonic() - began, files)
    sys.stdout.write(table(rows) + "\n")
    args.out.write_text(text, encoding="utf-8")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
