"""Experiment spaces: factors, grids and Latin hypercubes, without the service."""

from __future__ import annotations

import pytest

from simsvc import sim
from simsvc.schema import InvalidInput
from simsvc.space import MAX_SWEEP_POINTS, build_space, design_points

CHECKER = sim.ParamsChecker(sim.load_models())


def test_a_decimal_step_gives_clean_levels_including_max() -> None:
    space = build_space(
        CHECKER, sim.WAREHOUSE, {}, {"shift_hours": {"min": 7, "max": 8, "step": 0.1}}
    )
    levels = [p["shift_hours"] for p in design_points(space, "grid", None, 1, 100)]
    assert levels == [7.0, 7.1, 7.2, 7.3, 7.4, 7.5, 7.6, 7.7, 7.8, 7.9, 8.0]


def test_a_huge_grid_is_refused_by_arithmetic_not_by_listing_it() -> None:
    factors = {
        "workers": {"min": 1, "max": 1000, "step": 1},
        "orders_per_hour": {"min": 1, "max": 10000, "step": 1},
        "due_minutes": {"min": 1, "max": 10000, "step": 1},
    }
    space = build_space(CHECKER, sim.WAREHOUSE, {}, factors)
    assert space.size() == 1000 * 10000 * 10000
    with pytest.raises(InvalidInput) as caught:
        design_points(space, "grid", None, 1, MAX_SWEEP_POINTS)
    assert caught.value.errors[0]["field"] == "factors"


def test_integer_params_stay_integers_and_every_point_has_every_param() -> None:
    space = build_space(
        CHECKER, sim.WAREHOUSE, {"shift_hours": 6}, {"workers": {"values": [4.0, 5]}}
    )
    points = design_points(space, "grid", None, 1, 10)
    assert [p["workers"] for p in points] == [4, 5]
    assert all(type(p["workers"]) is int for p in points)
    assert all(p.keys() == sim.WAREHOUSE.defaults.keys() and p["shift_hours"] == 6 for p in points)


def test_latin_hypercube_of_an_integer_range_covers_it_evenly() -> None:
    space = build_space(CHECKER, sim.WAREHOUSE, {}, {"workers": {"min": 1, "max": 10}})
    points = design_points(space, "lhs", 10, 3, 100)
    assert sorted(p["workers"] for p in points) == list(range(1, 11))
    other = design_points(space, "lhs", 10, 4, 100)
    assert [p["workers"] for p in other] != [p["workers"] for p in points]  # the seed matters
