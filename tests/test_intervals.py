"""Skewness, the doubtful-normal flag, Johnson's interval, and family-wise verdicts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats as scipy_stats

from simsvc import analysis, stats
from simsvc.analysis import Comparison
from simsvc.db import Moments

from .conftest import Client, start_run, wait_for_run


def test_skewness_equals_scipy_adjusted_fisher_pearson() -> None:
    values = np.random.default_rng(4).exponential(2.0, 40).tolist()
    expected = scipy_stats.skew(values, bias=False)
    assert stats.skewness(Moments.of(values)) == pytest.approx(expected, rel=1e-12)


def test_merged_third_moments_equal_the_whole() -> None:
    values = np.random.default_rng(5).gamma(0.5, 3.0, 1000).tolist()
    merged = Moments(0, 0.0, 0.0)
    for start in range(0, 1000, 37):
        merged = merged.merge(Moments.of(values[start : start + 37]))
    assert merged.m3 == pytest.approx(Moments.of(values).m3, rel=1e-9)


@pytest.mark.parametrize(
    ("values", "doubtful"),
    [
        # Symmetric and n = 40: no doubt.
        ([float(v) for v in range(40)], False),
        # Symmetric, but n = 20 is under the rule's 28 even without skewness.
        ([float(v) for v in range(20)], True),
        # One bad shift among 29 good ones: skewness about -5.5, so the rule wants n > 780.
        ([0.99] * 29 + [0.2], True),
        # No spread at all: a zero-width interval is no evidence of precision.
        ([1.0] * 12, True),
        # Fewer than 3 values: skewness cannot be estimated.
        ([1.0, 2.0], None),
    ],
)
def test_cochrans_rule_flags_doubtful_normal_intervals(
    values: list[float], doubtful: bool | None
) -> None:
    assert stats.normal_doubtful(Moments.of(values)) is doubtful


def test_johnson_interval_shifts_the_t_interval_by_the_skewness_correction() -> None:
    values = [0.99] * 9 + [0.5]
    m = Moments.of(values)
    n, mean = len(values), float(np.mean(values))
    s2 = float(np.var(values, ddof=1))
    mu3 = n / ((n - 1) * (n - 2)) * float(np.sum((np.array(values) - mean) ** 3))
    hw = scipy_stats.t.ppf(0.975, n - 1) * math.sqrt(s2 / n)
    johnson = stats.interval(m, "johnson")
    assert johnson is not None
    lo, hi = johnson
    shift = mu3 / (6 * s2 * n)
    assert shift < 0  # a long left tail moves the interval down
    assert lo == pytest.approx(mean + shift - hw, rel=1e-12)
    assert hi == pytest.approx(mean + shift + hw, rel=1e-12)
    assert stats.interval(m, "t") == pytest.approx([mean - hw, mean + hw], rel=1e-12)


async def test_results_report_skewness_flags_and_the_chosen_interval(client: Client) -> None:
    answer = await start_run(client, scenario_ids=[2], replications=30, seed=1)
    await wait_for_run(client, answer["run_id"])
    (plain,) = await (await client.get("/api/results")).json()
    (robust,) = await (await client.get("/api/results?interval=johnson")).json()
    on_time = plain["metrics"]["ontime_delivery_rate"]
    assert on_time["skewness"] < -1  # six pickers: almost every shift is on time
    assert on_time["normal_doubtful"] is True
    assert "ontime_delivery_rate" in plain["doubtful"]
    assert (plain["interval"], robust["interval"]) == ("t", "johnson")
    lo, hi = on_time["interval95"]
    assert hi - lo == pytest.approx(2 * plain["delivery_rate_ci95"])
    robust_lo, _ = robust["metrics"]["ontime_delivery_rate"]["interval95"]
    assert robust_lo < lo
    # The contract's fields keep their Student-t meaning whatever the interval asked for.
    assert robust["delivery_rate_ci95"] == plain["delivery_rate_ci95"]


async def test_an_unknown_interval_kind_is_422(client: Client) -> None:
    resp = await client.get("/api/results?interval=normal")
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "interval"


def _comparison(p: float, difference: float) -> Comparison:
    return Comparison(
        scenario_id=2,
        kpi="x",
        direction="max",
        n=30,
        baseline_mean=0.0,
        scenario_mean=difference,
        mean_difference=difference,
        paired_ci95=None,
        welch_ci95=None,
        paired_half_width=1.0,
        welch_half_width=1.0,
        paired_to_welch_width=1.0,
        correlation=None,
        verdict="no_significant_difference",
        p_value=p,
        familywise_p_value=None,
        familywise_ci95=None,
        familywise_verdict="no_significant_difference",
    )


@pytest.mark.parametrize(
    ("method", "verdicts", "adjusted"),
    [
        # Holm: 3 x 0.01, then 2 x 0.02, then 1 x 0.04: all three at most 0.05.
        ("holm", ["better", "worse", "better"], [0.03, 0.04, 0.04]),
        # Bonferroni: 3 x p; only 0.01 survives.
        (
            "bonferroni",
            ["better", "no_significant_difference", "no_significant_difference"],
            [0.03, 0.06, 0.12],
        ),
    ],
)
def test_familywise_verdicts_follow_holm_and_bonferroni(
    method: analysis.Familywise, verdicts: list[str], adjusted: list[float]
) -> None:
    family = [_comparison(0.01, 1.0), _comparison(0.02, -1.0), _comparison(0.04, 2.0)]
    assert analysis.adjust_familywise(family, method) == 3
    assert [c["familywise_verdict"] for c in family] == verdicts
    assert [c["familywise_p_value"] for c in family] == pytest.approx(adjusted)
    t_ratio = scipy_stats.t.ppf(1 - 0.05 / 6, 29) / scipy_stats.t.ppf(0.975, 29)
    assert family[0]["familywise_ci95"] == pytest.approx([1.0 - t_ratio, 1.0 + t_ratio])


async def test_compare_reports_a_familywise_verdict_holm_by_default(client: Client) -> None:
    answer = await start_run(client, replications=20, seed=8)
    await wait_for_run(client, answer["run_id"])
    path = f"/api/simulations/{answer['run_id']}/compare?baseline=1"
    default: dict[str, Any] = await (await client.get(path)).json()
    assert default["familywise"] == "holm"
    assert default["family_size"] == len(default["comparisons"]) == 8  # 2 scenarios x 4 KPIs
    for c in default["comparisons"]:
        assert 0 <= c["p_value"] <= c["familywise_p_value"] <= 1
        lo, hi = c["familywise_ci95"]
        assert lo <= c["paired_ci95"][0]
        assert c["paired_ci95"][1] <= hi
    none = await (await client.get(path + "&familywise=none")).json()
    assert all(c["familywise_verdict"] == c["verdict"] for c in none["comparisons"])
    bad = await client.get(path + "&familywise=sidak")
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["field"] == "familywise"


async def test_models_document_the_empty_shift_convention(client: Client) -> None:
    models = await (await client.get("/api/models")).json()
    (warehouse,) = [m for m in models if m["name"] == "warehouse"]
    by_output = {c["output"]: c for c in warehouse["conventions"]}
    assert by_output["ontime_delivery_rate"]["value"] == 1.0
    assert "no order" in by_output["ontime_delivery_rate"]["when"]
