"""What a worker spends per row: `sim.simulate_chunk` here against an earlier version.

Each version runs in its own Python process (the earlier one extracted with `git archive`,
first on `PYTHONPATH`), alternately, and reports the CPU time of one chunk per row, so
that other load on the machine moves the figures less than wall time would.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from . import servers
from .ingest import load
from .measures import Row, Settings, median

# The last version that built every replication's generator with `default_rng([s, r])`.
BASELINE = os.environ.get("BENCH_WORKER_BASELINE", "9265832")
# The CPU a worker may spend per `uniform` row for 2 workers to feed 250,000 rows/s on
# 2 cores, with about half of each core left to the service.
WORKER_US_PER_ROW = 4.0

# One chunk per (model, pairs), replication-major over 3 units as a run sends them; the
# best of `rounds` CPU times, in µs per row. Runs in a fresh interpreter.
PROBE = """
import json, sys, time
from simsvc import sim
cases, rounds = json.loads(sys.argv[1]), int(sys.argv[2])
models = {"uniform": (sim.UNIFORM, {}), "warehouse": (sim.WAREHOUSE, sim.WAREHOUSE.defaults)}
out = {}
for name, pairs in cases:
    plan = {u: models[name] for u in (1, 2, 3)}
    chunk = [(u, r) for r in range(1, pairs // 3 + 1) for u in (1, 2, 3)]
    sim.simulate_chunk(plan, 12345, chunk)
    best = float("inf")
    for _ in range(rounds):
        began = time.process_time()
        sim.simulate_chunk(plan, 12345, chunk)
        best = min(best, time.process_time() - began)
    out[f"{name} {pairs}"] = best / len(chunk) * 1e6
print(json.dumps(out))
"""
CASES = [("uniform", 501), ("uniform", 5001), ("uniform", 50001), ("warehouse", 300)]


def _probe(source: Path, rounds: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(CASES), str(rounds)],
        env=env,
        cwd=source,  # `-c` puts the working directory first on the path
        check=True,
        capture_output=True,
        text=True,
    )
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


async def worker_rows(settings: Settings) -> list[Row]:
    """Worker CPU per row of `simulate_chunk`, this checkout and the baseline alternately."""
    rounds = 3 if settings.quick else 15
    old_source = servers.baseline_source(settings.workdir, BASELINE)
    seen: dict[str, list[dict[str, float]]] = {"new": [], "old": []}
    for _ in range(settings.repeats):
        seen["new"].append(await asyncio.to_thread(_probe, servers.REPO, rounds))
        seen["old"].append(await asyncio.to_thread(_probe, old_source, rounds))

    def figure(who: str, case: str) -> float:
        return median([f[case] for f in seen[who]])

    rows = []
    for name, pairs in CASES:
        case = f"{name} {pairs}"
        new, old = figure("new", case), figure("old", case)
        uniform = name == "uniform"
        rows.append(
            Row(
                f"worker CPU per `{name}` row, `simulate_chunk` of {pairs:,} pairs (µs)",
                f"{new:.2f}",
                f"{BASELINE} {old:.2f}",
                f"{old / new:.1f}x faster",
                f"<= {WORKER_US_PER_ROW:g} µs" if uniform else "report",
                new <= WORKER_US_PER_ROW if uniform else None,
                f"3 units, replication-major; best of {rounds} chunks; {load()} after it",
            )
        )
    return rows


WORKER_MEASURES = {"worker-rows": worker_rows}
