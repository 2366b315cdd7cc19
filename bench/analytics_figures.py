"""Figures of the experiment analytics on the three seeded scenarios, through the API.

    python -m bench.analytics_figures [--seeds 5] [--replications 100]

Prints, per seed: how much narrower the paired (common random numbers) 95% interval is
than the Welch interval for every comparison with scenario 1, and how many replications
per scenario the precision target `ontime_delivery_rate` half-width 0.01 plus
`total_labor_costs` relative half-width 0.01 took, next to the smallest count at which
both targets already held.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient, TestServer
from scipy import stats as scipy_stats

from simsvc import analysis, db
from simsvc.web import Config, create_app

log = logging.getLogger("bench.analytics_figures")
say = log.info

TARGETS = {
    "ontime_delivery_rate": {"half_width": 0.01},
    "total_labor_costs": {"relative_half_width": 0.01},
}


async def _finished(client: TestClient[Any, Any], body: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/simulations", json=body)
    run_id = (await resp.json())["run_id"]
    async with client.ws_connect("/ws/events") as ws:
        async for msg in ws:
            event = msg.json()
            if event.get("run_id") == run_id and event["type"] == "run.completed":
                return dict(event["run"])
    raise RuntimeError(f"run {run_id} did not complete")


async def _rows(client: TestClient[Any, Any], run_id: int) -> list[db.ResultRow]:
    return list(await (await client.get(f"/api/simulations/{run_id}/results")).json())


def smallest_precise_count(rows: list[db.ResultRow], ids: list[int]) -> int | None:
    """The first n at which every target holds for every scenario (prefix statistics)."""
    samples = analysis.samples_of(rows)
    met: np.ndarray | None = None
    for kpi, target in TARGETS.items():
        for sid in ids:
            values = np.array([v for _, v in sorted(samples[kpi][sid].items())])
            n = np.arange(1, len(values) + 1)
            mean = np.cumsum(values) / n
            var = (np.cumsum(values**2) - n * mean**2) / np.maximum(n - 1, 1)
            hw = scipy_stats.t.ppf(0.975, np.maximum(n - 1, 1)) * np.sqrt(np.maximum(var, 0) / n)
            required = np.minimum(
                target.get("half_width", np.inf),
                target.get("relative_half_width", np.inf) * np.abs(mean),
            )
            ok = (hw <= required) & (n >= 2)
            met = ok if met is None else met & ok[: len(met)]
    hits = np.flatnonzero(met) if met is not None else np.array([], dtype=int)
    return int(hits[0]) + 1 if len(hits) else None


async def measure(
    seed: int, replications: int, workers: int
) -> tuple[dict[tuple[int, str], float], int]:
    """Print one seed's figures; return its width ratios and its precision count."""
    config = Config(db_path=":memory:", workers=workers, executor="process")
    async with TestClient(TestServer(create_app(config))) as client:
        run = await _finished(client, {"seed": seed, "replications": replications})
        compare = await (
            await client.get(f"/api/simulations/{run['run_id']}/compare?baseline=1")
        ).json()
        ratios = {}
        for c in compare["comparisons"]:
            ratios[(c["scenario_id"], c["kpi"])] = c["paired_to_welch_width"]
            say(
                f"seed {seed} n={c['n']} scenario {c['scenario_id']} vs 1 {c['kpi']:<22}"
                f" paired/welch width {c['paired_to_welch_width']:.3f}"
                f" (narrower by {100 * (1 - c['paired_to_welch_width']):.1f}%)"
                f" r={c['correlation']:.3f} {c['verdict']}"
            )
        precise = await _finished(client, {"seed": seed, "precision": {"targets": TARGETS}})
        rows = await _rows(client, precise["run_id"])
        smallest = smallest_precise_count(rows, precise["scenario_ids"])
        worst = max(
            precise["precision_report"],
            key=lambda c: c["half_width"] / c["required_half_width"],
        )
        say(
            f"seed {seed} precision: stopped_because={precise['stopped_because']}"
            f" replications={precise['replications']} (targets first all met at n={smallest});"
            f" tightest: scenario {worst['scenario_id']} {worst['kpi']}"
        )
        return ratios, int(precise["replications"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--replications", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    ratios: dict[tuple[int, str], list[float]] = {}
    counts = []
    for seed in range(1, args.seeds + 1):
        by_pair, count = asyncio.run(measure(seed, args.replications, args.workers))
        counts.append(count)
        for key, ratio in by_pair.items():
            ratios.setdefault(key, []).append(ratio)
    say(f"over {args.seeds} seeds, paired CI width / Welch CI width:")
    for (sid, kpi), values in sorted(ratios.items()):
        say(
            f"  scenario {sid} vs 1 {kpi:<22} mean {statistics.mean(values):.3f}"
            f" range {min(values):.3f}..{max(values):.3f}"
        )
    say(f"precision runs: replications per scenario {counts}")


if __name__ == "__main__":
    main()
