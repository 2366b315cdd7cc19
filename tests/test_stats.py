"""Statistics: t-quantiles, moments merging, the aggregate list's fields."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats as scipy_stats

from simsvc.db import Moments
from simsvc.stats import aggregate_list, half_width, std, t_quantile


# Reference values: the root of the regularized incomplete beta function, solved with
# mpmath at 40 significant digits.
@pytest.mark.parametrize(
    ("df", "expected"),
    [
        # the smallest sample with a spread: far from the normal 1.96
        (1, 12.706204736174707),
        # the seed's three replications
        (2, 4.302652729749464),
        (9, 2.2621571627982055),
        (29, 2.045229642132703),
        # large samples approach the normal quantile
        (10_000, 1.9602012398906262),
    ],
)
def test_t_quantile_is_exact(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, rel=1e-9)


def test_merged_moments_equal_moments_of_the_whole() -> None:
    rng = random.Random(3)
    values = [rng.gauss(9500, 300) for _ in range(1000)]
    merged = Moments(0, 0.0, 0.0)
    for start in range(0, 1000, 37):
        merged = merged.merge(Moments.of(values[start : start + 37]))
    whole = Moments.of(values)
    assert merged.n == whole.n
    assert merged.mean == pytest.approx(whole.mean, rel=1e-12)
    assert merged.m2 == pytest.approx(whole.m2, rel=1e-9)


def test_half_width_follows_the_contract_formula() -> None:
    m = Moments.of([1.0, 2.0, 4.0])
    s = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert std(m) == pytest.approx(s)
    assert half_width(m) == pytest.approx(4.302652729749464 * s / math.sqrt(3))
    assert std(Moments.of([5.0])) is None
    assert half_width(Moments.of([5.0])) is None


def test_aggregate_list_is_ordered_and_named() -> None:
    stats = {
        2: {
            "total_labor_costs": Moments.of([1.0, 3.0]),
            "ontime_delivery_rate": Moments.of([0.5, 0.7]),
        },
        1: {"total_labor_costs": Moments.of([2.0]), "ontime_delivery_rate": Moments.of([0.9])},
    }
    out = aggregate_list(stats, {1: ("a", {}), 2: ("b", {})})
    assert [(a["scenario_id"], a["scenario_name"], a["replications"]) for a in out] == [
        (1, "a", 1),
        (2, "b", 2),
    ]
    assert out[1]["average_total_costs"] == 2.0
    assert out[1]["delivery_rate_std"] == pytest.approx(math.sqrt(0.02))
    assert out[0]["total_costs_ci95"] is None


@pytest.mark.parametrize("p", [0.5, 0.9, 0.975, 0.995, 1 - 0.05 / 12])
@pytest.mark.parametrize("df", [1, 2, 3, 7, 30, 119, 1_000, 123_456, 2.5, 10_000.25])
def test_t_quantile_equals_scipys_t_ppf_bit_for_bit(p: float, df: float) -> None:
    # Fractional df: Welch's interval asks for them.
    assert t_quantile(p, df) == float(scipy_stats.t.ppf(p, df))
