"""The `warehouse` model as the README describes it, and against an independent SimPy reference."""

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from simsvc.sim import load_models

from .reference_warehouse import DEFAULTS, simulate_simpy

Simulate = Callable[[dict[str, float], np.random.Generator], Mapping[str, Any]]
Samples = dict[str, NDArray[np.float64]]

WAREHOUSE = load_models()["warehouse"]
OUTPUTS = (
    "total_labor_costs",
    "ontime_delivery_rate",
    "orders",
    "overtime_hours",
    "mean_wait_minutes",
    "utilization",
)
# Different seeds, so the service and the reference draw from independent streams.
SERVICE_SEED = 20251128
REFERENCE_SEED = 4242


def _replicate(simulate: Simulate, params: dict[str, float], seed: int, n: int) -> Samples:
    """Replications 0..n-1 of a run with `seed`, one array per output."""
    rows = [simulate(params, np.random.default_rng([seed, r])) for r in range(n)]
    return {key: np.array([float(row[key]) for row in rows]) for key in OUTPUTS}


def _service(overrides: Mapping[str, float], n: int) -> Samples:
    return _replicate(WAREHOUSE.simulate, {**WAREHOUSE.defaults, **overrides}, SERVICE_SEED, n)


def _standard_error(sample: NDArray[np.float64]) -> float:
    return float(np.std(sample, ddof=1) / math.sqrt(len(sample)))


# The long-run means the README gives for the defaults. Each tolerance is max(3 SE, rounding),
# rounding being half the last printed digit: "8,900" and "11,200" -> 50 (three significant
# figures), "9,530" -> 5, "0.30", "0.85", "0.97" -> 0.005. Measured with two independent
# implementations (a heap recurrence over 200,000 replications; the SimPy reference over
# 20,000 agrees within its SE), the long-run means are
#   4 workers: cost 8,896.0 +- 1.6, on-time 0.3041 +- 0.0004
#   5 workers: cost 9,530.4 +- 0.8, on-time 0.8484 +- 0.0004
#   6 workers: cost 11,202 +- 0.5,  on-time 0.9720 +- 0.0001
@pytest.mark.parametrize(
    ("workers", "cost", "cost_rounding", "rate"),
    [
        # One picker short: overloaded, overtime every day, most orders late.
        pytest.param(4, 8900.0, 50.0, 0.30, id="4-workers"),
        # The default scenario (現状シナリオ).
        pytest.param(5, 9530.0, 5.0, 0.85, id="5-workers"),
        # One picker more: short queues, on-time near 1, cost driven by base pay.
        pytest.param(6, 11200.0, 50.0, 0.97, id="6-workers"),
    ],
)
def test_long_run_means_match_the_documented_figures(
    workers: int, cost: float, cost_rounding: float, rate: float
) -> None:
    runs = _service({"workers": workers}, 2000)
    costs, rates = runs["total_labor_costs"], runs["ontime_delivery_rate"]
    cost_tolerance = max(3 * _standard_error(costs), cost_rounding)
    rate_tolerance = max(3 * _standard_error(rates), 0.005)
    assert abs(costs.mean() - cost) <= cost_tolerance, (costs.mean(), cost_tolerance)
    assert abs(rates.mean() - rate) <= rate_tolerance, (rates.mean(), rate_tolerance)


def _welch_z(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    """Two-sample z of the difference of means with unequal variances."""
    se = math.sqrt(float(np.var(a, ddof=1)) / len(a) + float(np.var(b, ddof=1)) / len(b))
    difference = float(a.mean() - b.mean())
    if se == 0.0:
        return 0.0 if difference == 0.0 else math.inf
    return difference / se


@pytest.mark.parametrize(
    ("overrides", "simpy_replications"),
    [
        # Overloaded (rho 1.15): the queue and overtime grow all shift.
        pytest.param({"workers": 4}, 500, id="4-workers"),
        # The default scenario, rho 0.92.
        pytest.param({"workers": 5}, 500, id="5-workers"),
        # Lightly loaded: the on-time rate is driven by pick times, not by queueing.
        pytest.param({"workers": 6}, 500, id="6-workers"),
        # A single picker (M/M/1, rho 0.67): FIFO with one server, few orders per shift.
        pytest.param(
            {"workers": 1, "orders_per_hour": 4, "mean_pick_minutes": 10},
            1000,
            id="one-worker-low-load",
        ),
        # Long picks at a premium of 2: overtime is almost certain and dominates the cost, so a
        # premium applied to the wrong hours shows up.
        pytest.param(
            {"overtime_premium": 2, "mean_pick_minutes": 30, "orders_per_hour": 10},
            1000,
            id="premium-2-long-picks",
        ),
        # A 1.2-minute shift: no order at all in ~40% of replications (rate 1.0, no overtime),
        # and any order that does arrive ends in overtime.
        pytest.param({"shift_hours": 0.02}, 1000, id="tiny-shift-often-no-orders"),
    ],
)
def test_service_model_agrees_with_simpy_reference(
    overrides: dict[str, float], simpy_replications: int
) -> None:
    service = _service(overrides, 2000)
    reference = _replicate(
        simulate_simpy, {**DEFAULTS, **overrides}, REFERENCE_SEED, simpy_replications
    )
    # 6 cases x 6 outputs: |z| < 4 keeps a false alarm below 1 in 400 runs of the whole table,
    # and the seeds are fixed, so the outcome is deterministic anyway.
    z = {key: _welch_z(service[key], reference[key]) for key in OUTPUTS}
    assert all(abs(value) < 4 for value in z.values()), z


@pytest.mark.parametrize(
    "simulate",
    [
        # The service model: what the README describes.
        pytest.param(WAREHOUSE.simulate, id="service"),
        # The reference too, so the comparison above rests on a model that gets this right.
        pytest.param(simulate_simpy, id="simpy-reference"),
    ],
)
@pytest.mark.parametrize("workers", [1, 5])
def test_no_orders_means_full_rate_no_overtime_and_base_pay(
    simulate: Simulate, workers: int
) -> None:
    # 8e-6 expected orders per shift: none arrive in any of these replications.
    params = {**DEFAULTS, "workers": workers, "orders_per_hour": 1e-6}
    for replication in range(20):
        out = simulate(params, np.random.default_rng([SERVICE_SEED, replication]))
        assert out["orders"] == 0
        assert out["ontime_delivery_rate"] == 1.0
        assert out["overtime_hours"] == 0.0
        assert out["total_labor_costs"] == 225 * workers * 8
        assert out["mean_wait_minutes"] == 0.0
        assert out["utilization"] == 0.0


def test_more_pickers_than_orders_means_nobody_waits() -> None:
    runs = _service({"workers": 1000}, 2000)
    assert np.all(runs["mean_wait_minutes"] == 0.0)
    # With no queue an order is on time iff its own pick takes <= 25 min.
    assert abs(runs["ontime_delivery_rate"].mean() - (1 - math.exp(-25 / 6))) < 4 * (
        _standard_error(runs["ontime_delivery_rate"])
    )
    assert abs(runs["orders"].mean() - 46 * 8) < 4 * _standard_error(runs["orders"])


@pytest.mark.parametrize(
    "overrides",
    [
        # The default scenario.
        pytest.param({}, id="defaults"),
        # No order arrives: the 1.0 and 0.0 special cases must be numbers of the same kind.
        pytest.param({"orders_per_hour": 1e-6}, id="no-orders"),
    ],
)
def test_same_stream_gives_identical_plain_outputs(overrides: dict[str, float]) -> None:
    params = {**WAREHOUSE.defaults, **overrides}
    before = dict(params)
    first = WAREHOUSE.simulate(params, np.random.default_rng([SERVICE_SEED, 7]))
    second = WAREHOUSE.simulate(params, np.random.default_rng([SERVICE_SEED, 7]))
    assert first == second
    assert params == before
    assert set(OUTPUTS) <= set(first)
    # np.float64 subclasses float, so compare exact types: JSON and SQLite want plain ones.
    # `orders` is a count and may be an int; everything else must be a float.
    for key, value in first.items():
        assert type(value) in ((int, float) if key == "orders" else (float,)), (key, type(value))
    assert json.loads(json.dumps(first, allow_nan=False)) == first
