"""Statistics of replications: means, deviations, skewness and 95% intervals of the mean."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal, TypedDict, get_args

from scipy import special

from . import jsontext
from .db import Coverage, Database, Moments, ScenarioStats

IntervalKind = Literal["t", "johnson"]
INTERVAL_KINDS: tuple[str, ...] = get_args(IntervalKind)
# Cochran's rule (Cochran 1977, "Sampling Techniques", 3rd ed., section 2.15) asks for
# n > 25 G1^2 before a normal interval of a mean is trusted; Sugden, Smith & Jones (2000,
# JRSS B 62:787-793) derive it from the Edgeworth expansion and, for the Studentized mean
# that a t-interval uses, extend it to n > 28 + 25 G1^2.
COCHRAN_FACTOR = 25
STUDENTIZED_TERM = 28
SNAPSHOTS_CACHED = 64


class Summary(TypedDict):
    n: int
    mean: float | None
    std: float | None
    ci95: float | None
    skewness: float | None
    normal_doubtful: bool | None
    interval95: list[float] | None


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df degrees of freedom.

    `special.stdtrit` is what `scipy.stats.t.ppf` computes with, without the argument
    handling that makes the latter cost about 50 µs a call: a run's live aggregates ask
    for a new df with every progress event.
    """
    return float(special.stdtrit(df, p))


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


def skewness(m: Moments) -> float | None:
    """The adjusted Fisher-Pearson sample skewness G1; None below 3 values or without spread."""
    if m.n < 3 or not m.m2 > 0:
        return None
    g = math.sqrt(m.n * (m.n - 1)) / (m.n - 2) * (m.m3 / m.n) / (m.m2 / m.n) ** 1.5
    return g if math.isfinite(g) else None


def normal_doubtful(m: Moments) -> bool | None:
    """Whether a t-interval of this sample's mean is doubtful: no spread at all, or
    n <= 28 + 25 G1^2 (Cochran's rule for the Studentized mean); None below 3 values."""
    if m.n < 3:
        return None
    g = skewness(m)
    return g is None or m.n <= STUDENTIZED_TERM + COCHRAN_FACTOR * g * g


def johnson_shift(m: Moments) -> float:
    """Johnson's (1978) skewness correction of the mean, mu3 / (6 s^2 n); 0 below 3 values."""
    if m.n < 3 or not m.m2 > 0:
        return 0.0
    mu3 = m.n * m.m3 / ((m.n - 1) * (m.n - 2))  # unbiased third central moment
    shift = mu3 / (6.0 * (m.m2 / (m.n - 1)) * m.n)
    return shift if math.isfinite(shift) else 0.0


def interval(m: Moments, kind: IntervalKind = "t", confidence: float = 0.95) -> list[float] | None:
    """The two-sided interval of the mean: Student-t, or Johnson's modified t, which
    shifts the t-interval by the skewness correction (Johnson 1978)."""
    hw = half_width(m, confidence)
    if hw is None:
        return None
    centre = m.mean + (johnson_shift(m) if kind == "johnson" else 0.0)
    return [centre - hw, centre + hw]


def summarize(m: Moments, kind: IntervalKind = "t") -> Summary:
    return Summary(
        n=m.n,
        mean=m.mean if m.n else None,
        std=std(m),
        ci95=half_width(m),
        skewness=skewness(m),
        normal_doubtful=normal_doubtful(m),
        interval95=interval(m, kind),
    )


# scenario_id -> (scenario_name, what the entry covers)
Labels = Mapping[int, tuple[str, Mapping[str, Any]]]


def aggregate_list(
    stats: ScenarioStats, labels: Labels, kind: IntervalKind = "t"
) -> list[dict[str, Any]]:
    """The aggregate list: one entry per scenario with results, ordered by scenario_id."""
    out = []
    for sid in sorted(stats):
        per_kpi = stats[sid]
        cost = per_kpi.get("total_labor_costs")
        rate = per_kpi.get("ontime_delivery_rate")
        if cost is None or rate is None or cost.n == 0:
            continue
        name, covers = labels.get(sid, ("", {}))
        metrics = {kpi: summarize(m, kind) for kpi, m in sorted(per_kpi.items())}
        out.append(
            {
                "scenario_id": sid,
                "scenario_name": name,
                "replications": cost.n,
                "average_total_costs": cost.mean,
                "average_delivery_rate": rate.mean,
                "total_costs_std": std(cost),
                "delivery_rate_std": std(rate),
                "total_costs_ci95": half_width(cost),
                "delivery_rate_ci95": half_width(rate),
                **covers,
                "interval": kind,
                "doubtful": [k for k, s in metrics.items() if s["normal_doubtful"]],
                "metrics": metrics,
            }
        )
    return out


class AggregateCache:
    """The aggregate list, cached as encoded JSON (text and UTF-8 bytes) until the next write."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._cache: dict[tuple[int | None, str], tuple[int, str, bytes]] = {}
        # run_id -> labels from its snapshot, which never changes
        self._snapshots: OrderedDict[int, dict[int, tuple[str, dict[str, Any]]]] = OrderedDict()

    async def encoded(self, run_id: int | None = None, kind: IntervalKind = "t") -> str:
        return (await self._entry(run_id, kind))[1]

    async def body(self, run_id: int | None = None, kind: IntervalKind = "t") -> bytes:
        """The same JSON as UTF-8: an HTTP response then copies no text at all."""
        return (await self._entry(run_id, kind))[2]

    async def _entry(self, run_id: int | None, kind: IntervalKind) -> tuple[int, str, bytes]:
        generation = self._db.generation
        cached = self._cache.get((run_id, kind))
        if cached is not None and cached[0] == generation:
            return cached
        text = jsontext.dumps(await self.compute(run_id, kind))
        entry = (generation, text, text.encode("utf-8"))
        self._cache[(run_id, kind)] = entry
        return entry

    async def compute(
        self, run_id: int | None = None, kind: IntervalKind = "t"
    ) -> list[dict[str, Any]]:
        """A run's aggregates under the names and params it ran with, or the pooled ones."""
        if run_id is not None:
            labels = await self._run_labels(run_id)
            return aggregate_list(await self._db.scenario_stats(run_id), labels, kind)
        stats, coverage = await self._db.pooled_stats()
        names = await self._db.scenario_names()
        return aggregate_list(stats, _pooled_labels(names, coverage), kind)

    async def _run_labels(self, run_id: int) -> dict[int, tuple[str, dict[str, Any]]]:
        labels = self._snapshots.get(run_id)
        if labels is None:
            run = await self._db.get_run(run_id)
            labels = {
                int(sid): (
                    str(e["scenario_name"]),
                    {
                        "model": e["model"],
                        "params": e["params"],
                        "run_ids": [run_id],
                        "excluded_run_ids": [],
                        "ingested_replications": 0,
                    },
                )
                for sid, e in run["snapshot"].items()
            }
            self._snapshots[run_id] = labels
            if len(self._snapshots) > SNAPSHOTS_CACHED:
                self._snapshots.popitem(last=False)
        return labels


def _pooled_labels(names: Mapping[int, str], coverage: Mapping[int, Coverage]) -> Labels:
    return {sid: (names.get(sid, ""), dict(cover)) for sid, cover in coverage.items()}
