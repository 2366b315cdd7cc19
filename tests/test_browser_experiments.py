"""Experiments in the dashboard, against a live `python -m simsvc`: a sweep's chart over one
factor and its heat map over two, and an optimization's points, Pareto front and
recommendation, each checked against what the API itself answers.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from .browser_support import WAIT_MS, OpenPage, Server, axe_violations, screenshot


def start_experiment(server: Server, body: dict[str, Any]) -> int:
    answer = server.api("POST", "/api/experiments", body)
    assert answer.status_code == 202, answer.text
    experiment_id: int = answer.json()["experiment_id"]
    return experiment_id


def wait_until_shown(page: Page, server: Server, experiment_id: int) -> dict[str, Any]:
    """Wait until the panel shows the finished experiment, then return the API's answer."""
    section = page.locator(
        f'#experiments[data-experiment-id="{experiment_id}"][data-status="completed"]'
    )
    expect(section).to_have_count(1, timeout=WAIT_MS)
    detail: dict[str, Any] = server.api("GET", f"/api/experiments/{experiment_id}").json()
    rows = page.locator("#experiment-table tbody tr")
    expect(rows).to_have_count(len(detail["points"]))
    return detail


def test_sweep_over_one_factor_draws_means_with_bands(open_page: OpenPage, server: Server) -> None:
    page = open_page()
    body = {"kind": "sweep", "model": "warehouse", "seed": 7, "base_params": {}}
    body |= {"factors": {"workers": {"values": [4, 5, 6]}}, "replications": 10}
    experiment_id = start_experiment(server, body)
    detail = wait_until_shown(page, server, experiment_id)
    chart = page.locator("#experiment-chart svg")
    expect(chart.locator(".mean-dot")).to_have_count(3)
    expect(chart.locator(".band")).to_have_count(1)
    first = detail["points"][0]
    cost = first["means"]["total_labor_costs"]
    expect(chart.locator(".mean-dot title").first).to_contain_text(f"4: {cost:,.0f} ± ")
    expect(page.locator("#experiment-figcaption")).to_have_text(
        "Total labor costs against Pickers on the shift: means with 95% confidence bands"
    )


def test_sweep_over_two_factors_draws_a_heat_map(open_page: OpenPage, server: Server) -> None:
    page = open_page()
    factors = {"workers": {"values": [4, 6]}, "orders_per_hour": {"min": 40, "max": 52, "step": 12}}
    body = {"kind": "sweep", "model": "warehouse", "seed": 3, "base_params": {}}
    body |= {"factors": factors, "design": "grid", "replications": 8}
    experiment_id = start_experiment(server, body)
    detail = wait_until_shown(page, server, experiment_id)
    cells = page.locator("#experiment-chart svg .heat-cell")
    expect(cells).to_have_count(4)
    for point in detail["points"]:
        mean = point["means"]["total_labor_costs"]
        expect(page.locator("#experiment-chart svg .cell-text")).to_contain_text([f"{mean:,.0f}"])
    page.get_by_label("Indicator").last.select_option(label="On-time delivery rate")
    best = max(p["means"]["ontime_delivery_rate"] for p in detail["points"])
    expect(page.locator("#experiment-chart svg")).to_contain_text(f"{best * 100:.1f}%")
    page.locator("#experiments").scroll_into_view_if_needed()
    screenshot(page, "dashboard-sweep")


def test_optimization_shows_feasibility_pareto_front_and_the_recommendation(
    open_page: OpenPage, server: Server
) -> None:
    page = open_page()
    body = {
        "kind": "optimize",
        "model": "warehouse",
        "seed": 1,
        "base_params": {},
        "factors": {"workers": {"min": 4, "max": 7, "step": 1}},
        "objective": {"kpi": "total_labor_costs", "direction": "min"},
        "constraints": [{"kpi": "ontime_delivery_rate", "op": ">=", "value": 0.9}],
        "confidence": 0.95,
        "indifference": {"total_labor_costs": 200, "ontime_delivery_rate": 0.02},
        "max_replications": 20000,
    }
    experiment_id = start_experiment(server, body)
    detail = wait_until_shown(page, server, experiment_id)
    recommendation = detail["recommendation"]
    card = page.locator("#experiment-recommendation")
    expect(card.locator(".statement")).to_have_text(recommendation["statement"])
    expect(card.locator("h3")).to_contain_text(f"point #{recommendation['point_id']}")
    chart = page.locator("#experiment-chart svg")
    infeasible = [p for p in detail["points"] if p["feasible"] is False]
    expect(chart.locator(".cross")).to_have_count(len(infeasible))
    expect(chart.locator(".point.pareto")).to_have_count(
        len(detail["pareto"]["ontime_delivery_rate"])
    )
    expect(chart.locator(".rule")).to_have_count(1)
    expect(chart).to_contain_text(f"★ #{recommendation['point_id']}")
    page.locator("#experiments").scroll_into_view_if_needed()
    screenshot(page, "dashboard-optimization")
    for width in (1366, 390):
        page.set_viewport_size({"width": width, "height": 900})
        assert axe_violations(page) == [], width
