"""Count, mean and M2 of KPI samples, and Chan, Golub and LeVeque's merge of two.

A leaf module of plain arithmetic: the workers compute each chunk's moments with it, and
storage merges them (in SQL, term for term as `Moments.merge`), so both sides agree bit
for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_NUMBERS = (int, float)

# unit id -> kpi -> moments
UnitMoments = dict[int, dict[str, "Moments"]]


@dataclass(frozen=True, slots=True)
class Moments:
    """Count, mean and sum of squared deviations of one KPI."""

    n: int
    mean: float
    m2: float

    def merge(self, other: Moments) -> Moments:
        """Chan et al.'s pairwise combination of two samples' moments."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        return Moments(n, mean, m2)

    @classmethod
    def of(cls, values: Sequence[float]) -> Moments:
        """Two-pass moments of a sample, in the order given."""
        n = len(values)
        if n == 0:
            return cls(0, 0.0, 0.0)
        try:
            mean = math.fsum(values) / n
            m2 = math.fsum((v - mean) ** 2 for v in values)
        except OverflowError:
            # Values near the largest double: the spread overflows; JSON shows it as null.
            return cls(n, math.fsum(v / n for v in values), math.inf)
        return cls(n, mean, m2)


def kpi_values(cost: float, rate: float, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Every numeric KPI of a row: the two headline KPIs and its numeric metrics."""
    values = {"total_labor_costs": float(cost), "ontime_delivery_rate": float(rate)}
    for key, value in metrics.items():
        numeric = isinstance(value, _NUMBERS) and not isinstance(value, bool)
        if numeric and math.isfinite(value) and key not in values:
            values[key] = float(value)
    return values


def unit_moments(rows: Iterable[tuple[int, Mapping[str, float]]]) -> UnitMoments:
    """Each unit's moments of each KPI, from (unit, KPI values) in the order given."""
    samples: dict[int, dict[str, list[float]]] = {}
    for unit, values in rows:
        per_kpi = samples.setdefault(unit, {})
        for kpi, value in values.items():
            per_kpi.setdefault(kpi, []).append(value)
    return {
        unit: {kpi: Moments.of(values) for kpi, values in per_kpi.items()}
        for unit, per_kpi in samples.items()
    }
