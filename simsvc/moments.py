"""Count, mean, M2 and M3 of KPI samples, and the pairwise merge of two (Chan et al.).

A leaf module of plain arithmetic: the workers compute each chunk's moments with it, and
storage merges them (in SQL, term for term as `Moments.merge`), so both sides agree bit
for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

_NUMBERS = (int, float)

# unit id -> kpi -> moments
UnitMoments = dict[int, dict[str, "Moments"]]


@dataclass(frozen=True, slots=True)
class Moments:
    """Count, mean, and sums of squared and cubed deviations of one KPI."""

    n: int
    mean: float
    m2: float
    m3: float = 0.0

    def merge(self, other: Moments) -> Moments:
        """Pairwise combination of two samples' moments (Chan et al. 1979; Pebay 2008)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        m3 = (
            self.m3
            + other.m3
            + delta * delta * delta * self.n * other.n * (self.n - other.n) / (n * n)
            + 3.0 * delta * (self.n * other.m2 - other.n * self.m2) / n
        )
        return Moments(n, mean, m2, m3)

    @classmethod
    def of(cls, values: Sequence[float]) -> Moments:
        """Two-pass moments of a sample, in the order given."""
        n = len(values)
        if n == 0:
            return cls(0, 0.0, 0.0, 0.0)
        try:
            mean = math.fsum(values) / n
            m2 = math.fsum((v - mean) ** 2 for v in values)
        except OverflowError:
            # Values near the largest double: the spread overflows; JSON shows it as null.
            return cls(n, math.fsum(v / n for v in values), math.inf, math.nan)
        return cls(n, mean, m2, _cubes(values, mean))

    @classmethod
    def of_array(cls, values: np.ndarray[Any, np.dtype[np.float64]]) -> Moments:
        """`of` a float array: the same bits, with the deviations computed as arrays."""
        listed = values.tolist()
        try:
            mean = math.fsum(listed) / len(listed)
        except (OverflowError, ZeroDivisionError):
            return cls.of(listed)
        with np.errstate(over="ignore", invalid="ignore"):
            deviations = values - mean
            cubes = deviations * deviations * deviations
        if not np.isfinite(cubes).all():
            return cls.of(listed)  # near the largest double: `of` says what overflowed
        # `** 2` is the C library's pow, which can differ from d * d in the last bit.
        m2 = math.fsum(map(pow, deviations.tolist(), repeat(2)))
        return cls(len(listed), mean, m2, _sum_or_nan(cubes.tolist()))


def _cubes(values: Sequence[float], mean: float) -> float:
    """The sum of cubed deviations; NaN (stored as NULL: unknown) when it overflows."""
    return _sum_or_nan((v - mean) * (v - mean) * (v - mean) for v in values)


def _sum_or_nan(terms: Iterable[float]) -> float:
    try:
        return math.fsum(terms)
    except (OverflowError, ValueError):
        return math.nan


def kpi_values(cost: float, rate: float, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Every numeric KPI of a row: the two headline KPIs and its numeric metrics."""
    values = {"total_labor_costs": float(cost), "ontime_delivery_rate": float(rate)}
    for key, value in metrics.items():
        numeric = isinstance(value, _NUMBERS) and not isinstance(value, bool)
        if numeric and math.isfinite(value) and key not in values:
            values[key] = float(value)
    return values


def kpi_moments(rows: Iterable[Mapping[str, float]]) -> dict[str, Moments]:
    """The moments of each KPI over rows of KPI values, KPIs in order of first appearance."""
    samples: dict[str, list[float]] = {}
    for values in rows:
        for kpi, value in values.items():
            samples.setdefault(kpi, []).append(value)
    return {kpi: Moments.of(values) for kpi, values in samples.items()}


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
