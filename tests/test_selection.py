"""The constrained selection procedure against problems whose answers are known."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest

from simsvc.selection import (
    Batch,
    Constraint,
    FloatArray,
    Problem,
    Sequential,
    constants,
    eta_any_crossing,
    eta_first_exit,
    run_to_end,
)

SERVICE = Constraint("ontime", ">=", 0.95, 0.01)
PROBLEM = Problem("cost", "min", 50.0, (SERVICE,), 0.95, 10)


def normal_sampler(
    cost: FloatArray, ontime: FloatArray, seed: int, rho: float = 0.7
) -> Callable[[Batch], Mapping[str, FloatArray]]:
    """Normal outputs with known means; a shared term per replication stands for CRN."""
    rng = np.random.default_rng(seed)

    def sample(batch: Batch) -> Mapping[str, FloatArray]:
        n, points = batch.last - batch.first + 1, np.array(batch.points)
        common = rng.normal(size=(1, n))

        def noise() -> FloatArray:
            own = rng.normal(size=(len(points), n))
            return rho * common + np.sqrt(1 - rho**2) * own  # type: ignore[no-any-return]

        return {
            "cost": cost[points, None] + 150.0 * noise(),
            "ontime": ontime[points, None] + 0.05 * noise(),
        }

    return sample


def good_selection(chosen: int | None, cost: FloatArray, ontime: FloatArray) -> bool:
    """Meets the constraint up to its tolerance, and no surely feasible point is cheaper by δ."""
    desirable = ontime >= SERVICE.value + SERVICE.tolerance
    if chosen is None:
        return not desirable.any()
    acceptable = ontime[chosen] >= SERVICE.value - SERVICE.tolerance
    return bool(acceptable and cost[chosen] <= cost[desirable].min() + PROBLEM.indifference)


def floats(*parts: Any) -> FloatArray:
    return np.concatenate([np.atleast_1d(np.asarray(p, dtype=np.float64)) for p in parts])


CASES: dict[str, tuple[FloatArray, FloatArray]] = {
    # the cheapest points miss the service level; the answer is the first that meets it
    "staircase": (floats(np.arange(10) * 100.0 + 1000), floats(np.linspace(0.80, 0.99, 10))),
    # every cheaper point sits exactly at the unacceptable edge q - ε: the hardest feasibility
    "edge": (floats(1000 - np.arange(8) * 50.0), floats(np.full(7, 0.94), 0.96)),
    # the best feasible point leads the next feasible one by exactly δ (the slippage case)
    "slippage": (floats(900.0, 1000.0, np.full(6, 1050.0)), floats(0.5, np.full(7, 0.96))),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_recommends_a_good_point_at_least_as_often_as_promised(case: str) -> None:
    cost, ontime = CASES[case]
    trials, good = 150, 0
    for seed in range(trials):
        done = run_to_end(Sequential(PROBLEM, len(cost), 10**7), normal_sampler(cost, ontime, seed))
        assert done.stopped_because == "decided"
        good += good_selection(done.best([]), cost, ontime)
    # 95% promised; the procedure is conservative, so even 150 trials sit well above it
    assert good / trials >= 0.95


def test_no_feasible_point_is_a_decision_without_a_recommendation() -> None:
    cost, ontime = floats(np.arange(5) * 100.0), floats(np.full(5, 0.80))
    done = run_to_end(Sequential(PROBLEM, 5, 10**6), normal_sampler(cost, ontime, 1))
    assert done.stopped_because == "decided"
    assert done.best([]) is None
    assert done.feasibility() == [False] * 5


def test_budget_runs_out_with_a_best_estimate_and_no_decision() -> None:
    cost, ontime = (
        floats(np.full(4, 1000.0)),
        floats(np.full(4, 0.951)),
    )  # undecidable: inside the band
    procedure = Sequential(PROBLEM, 4, 200)
    run_to_end(procedure, normal_sampler(cost, ontime, 2))
    assert procedure.stopped_because == "max_replications"
    assert procedure.used <= 200
    means = [{"cost": 1000.0 + i, "ontime": 0.96 - 0.02 * i} for i in range(4)]
    assert procedure.best(means) == 0  # the cheapest whose means meet the constraint


def test_a_budget_short_of_the_first_stage_runs_nothing() -> None:
    procedure = Sequential(PROBLEM, 4, 39)
    assert procedure.plan() is None
    assert procedure.stopped_because == "max_replications"


def test_deterministic_outputs_are_decided_at_once() -> None:
    """Zero variance closes every region: the first stage decides."""

    def sample(batch: Batch) -> Mapping[str, FloatArray]:
        n, points = batch.last - batch.first + 1, np.array(batch.points)
        return {
            "cost": np.repeat(points[:, None] * 10.0, n, axis=1),
            "ontime": np.repeat(np.where(points >= 2, 0.99, 0.5)[:, None], n, axis=1),
        }

    done = run_to_end(Sequential(PROBLEM, 6, 10**6), sample)
    assert (done.stopped_because, done.best([]), done.used) == ("decided", 2, 60)


def test_identical_points_tie_to_the_first() -> None:
    def sample(batch: Batch) -> Mapping[str, FloatArray]:
        n = batch.last - batch.first + 1
        rng = np.random.default_rng(batch.first)
        row = rng.normal(1000, 100, size=(1, n))
        return {
            "cost": np.repeat(row, len(batch.points), axis=0),
            "ontime": np.ones((len(batch.points), n)),
        }

    done = run_to_end(Sequential(PROBLEM, 3, 10**6), sample)
    assert (done.stopped_because, done.best([])) == ("decided", 0)


def test_same_observations_give_the_same_decisions() -> None:
    cost, ontime = CASES["staircase"]
    runs = [
        run_to_end(Sequential(PROBLEM, 10, 10**7), normal_sampler(cost, ontime, 7)) for _ in "ab"
    ]
    assert runs[0].used == runs[1].used
    assert runs[0].feasibility() == runs[1].feasibility()
    assert runs[0].eliminated_by.tolist() == runs[1].eliminated_by.tolist()


def test_unconstrained_problem_is_kn() -> None:
    problem = Problem("cost", "max", 50.0, (), 0.95, 10)
    consts = constants(problem, 5)
    assert consts.alpha_feasibility == 0.0
    assert consts.alpha_selection == pytest.approx(0.05)
    cost = floats(1000.0, 1050.0, 1100.0, 1200.0, 1000.0)
    done = run_to_end(Sequential(problem, 5, 10**6), normal_sampler(cost, floats(np.ones(5)), 3))
    assert done.best([]) == 3


@pytest.mark.parametrize(
    ("beta", "n0"),
    [
        (0.05, 10),  # a common first stage
        (0.001, 5),  # a small first stage and a strict level
    ],
)
def test_eta_solves_its_bound(beta: float, n0: int) -> None:
    eta = eta_first_exit(beta, n0)
    assert 0.5 * (1 + 2 * eta) ** (-(n0 - 1) / 2) == pytest.approx(beta)
    eta = eta_any_crossing(beta, n0)
    assert (1 + 2 * eta) ** (-(n0 - 1) / 2) == pytest.approx(beta)
