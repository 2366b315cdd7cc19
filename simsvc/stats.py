"""Statistics of replications: means, sample deviations and Student-t intervals."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, TypedDict

from scipy import stats as scipy_stats

from . import jsontext
from .db import Database, Moments, ScenarioStats


class Summary(TypedDict):
    n: int
    mean: float | None
    std: float | None
    ci95: float | None


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df degrees of freedom."""
    return float(scipy_stats.t.ppf(p, df))


def std(m: Moments) -> float | None:
    """Sample standard deviation, None below two observations."""
    if m.n < 2:
        return None
    return math.sqrt(max(m.m2, 0.0) / (m.n - 1))


def half_width(m: Moments, confidence: float = 0.95) -> float | None:
    """Half-width of the two-sided Student-t confidence interval of the mean."""
    s = std(m)
    if s is None:
        return None
    return t_quantile(0.5 + confidence / 2, m.n - 1) * s / math.sqrt(m.n)


def summarize(m: Moments) -> Summary:
    return Summary(n=m.n, mean=m.mean if m.n else None, std=std(m), ci95=half_width(m))


def aggregate_list(stats: ScenarioStats, names: Mapping[int, str]) -> list[dict[str, Any]]:
    """The aggregate list: one entry per scenario with results, ordered by scenario_id."""
    out = []
    for sid in sorted(stats):
        per_kpi = stats[sid]
        cost = per_kpi.get("total_labor_costs")
        rate = per_kpi.get("ontime_delivery_rate")
        if cost is None or rate is None or cost.n == 0:
            continue
        out.append(
            {
                "scenario_id": sid,
                "scenario_name": names.get(sid, ""),
                "replications": cost.n,
                "average_total_costs": cost.mean,
                "average_delivery_rate": rate.mean,
                "total_costs_std": std(cost),
                "delivery_rate_std": std(rate),
                "total_costs_ci95": half_width(cost),
                "delivery_rate_ci95": half_width(rate),
                "metrics": {kpi: summarize(m) for kpi, m in sorted(per_kpi.items())},
            }
        )
    return out


class AggregateCache:
    """The aggregate list, cached as encoded JSON (text and UTF-8 bytes) until the next write."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._cache: dict[int | None, tuple[int, str, bytes]] = {}

    async def encoded(self, run_id: int | None = None) -> str:
        return (await self._entry(run_id))[1]

    async def body(self, run_id: int | None = None) -> bytes:
        """The same JSON as UTF-8: an HTTP response then copies no text at all."""
        return (await self._entry(run_id))[2]

    async def _entry(self, run_id: int | None) -> tuple[int, str, bytes]:
        generation = self._db.generation
        cached = self._cache.get(run_id)
        if cached is not None and cached[0] == generation:
            return cached
        text = jsontext.dumps(await self.compute(run_id))
        entry = (generation, text, text.encode("utf-8"))
        self._cache[run_id] = entry
        return entry

    async def compute(self, run_id: int | None = None) -> list[dict[str, Any]]:
        scenario_stats = await self._db.scenario_stats(run_id)
        return aggregate_list(scenario_stats, await self._db.scenario_names())
