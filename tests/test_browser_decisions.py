"""The dashboard's answers to the planner, checked in the browser against the server's own
statistics: the decision card, the guarded best marker, the constraint filter, the Pareto
front, distributions, the manifest, and accessibility at desktop and phone widths.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .browser_support import OpenPage, Server, axe_violations, screenshot, wait_until_ended

KPIS = ["total_labor_costs", "ontime_delivery_rate", "overtime_hours", "mean_wait_minutes"]


def start_run(server: Server, body: dict[str, Any]) -> int:
    answer = server.api("POST", "/api/simulations", body)
    assert answer.status_code == 202, answer.text
    run_id: int = answer.json()["run_id"]
    return run_id


def grouped(value: float, digits: int) -> str:
    """A number as the page writes it in English: thousands separators, a real minus."""
    return f"{value:,.{digits}f}".replace("-", "−")


def points(share: float) -> str:
    """A difference of shares in percentage points, with the page's decimals."""
    pp = share * 100
    return grouped(pp, 1 if abs(pp) >= 1 else 2)


def test_decision_card_states_each_scenario_against_the_baseline(
    open_page: OpenPage, server: Server
) -> None:
    page = open_page()
    run_id = start_run(server, {"scenario_ids": [1, 2], "replications": 30, "seed": 11})
    wait_until_ended(page, run_id)
    compare = server.api("GET", f"/api/simulations/{run_id}/compare?baseline=1").json()
    rows = {c["kpi"]: c for c in compare["comparisons"] if c["scenario_id"] == 2}
    card = page.locator('#decision-cards li.card[data-scenario-id="2"]')
    expect(card).to_contain_text("Pickers on the shift: 5 → 6")

    cost = rows["total_labor_costs"]
    lo, hi = cost["paired_ci95"]
    expected_cost = (
        f"Total labor costs: +{grouped(cost['mean_difference'], 0)} per shift "
        f"[{grouped(lo, 0)}, {grouped(hi, 0)}] costs more"
    )
    assert cost["verdict"] == "worse"
    expect(card.locator('li[data-kpi="total_labor_costs"]')).to_have_text(expected_cost)

    ontime = rows["ontime_delivery_rate"]
    lo, hi = ontime["paired_ci95"]
    assert ontime["verdict"] == "better"
    expected_ontime = (
        f"On-time delivery rate: +{points(ontime['mean_difference'])} percentage points "
        f"[{points(lo)}, {points(hi)}] more orders on time"
    )
    expect(card.locator('li[data-kpi="ontime_delivery_rate"]')).to_have_text(expected_ontime)

    page.get_by_label("Baseline scenario").select_option(label="人員1名追加")
    other = page.locator('#decision-cards li.card[data-scenario-id="1"]')
    cheaper = other.locator('li[data-kpi="total_labor_costs"]')
    expect(cheaper).to_contain_text("Total labor costs: −")
    expect(cheaper).to_contain_text("costs less")
    page.locator("#compare").scroll_into_view_if_needed()
    screenshot(page, "dashboard-decision")
    # The next run starts: the section says it waits, and keeps its height meanwhile.
    height = page.locator("#compare").evaluate("(el) => el.offsetHeight")
    paced = start_run(server, {"scenario_ids": [1, 2], "replications": 500, "pace_s": 0.05})
    expect(page.locator("#results")).to_have_attribute("data-run-id", str(paced))
    expect(page.locator("#compare-note")).to_have_text(
        "The decision appears here when the run has ended."
    )
    assert page.locator("#compare").evaluate("(el) => el.offsetHeight") >= height
    server.api("POST", f"/api/simulations/{paced}/cancel")
    wait_until_ended(page, paced, "cancelled")
    page.locator("#results-view").select_option(str(run_id))
    # Money in the currency the user chose.
    page.get_by_label("Currency").select_option("JPY")
    expect(cheaper).to_contain_text("Total labor costs: −¥")
    expect(page.locator('#results-table td[data-kpi="total_labor_costs"]').first).to_contain_text(
        "¥"
    )


def expect_best_marks(page: Page, server: Server, run_id: int) -> dict[str, list[int]]:
    """Each KPI's ★ is where the selection procedure kept a single scenario, else nowhere."""
    subsets: dict[str, list[int]] = {}
    for kpi in KPIS:
        answer = server.api("GET", f"/api/simulations/{run_id}/select?kpi={kpi}").json()
        subsets[kpi] = answer["subset"]
        line = page.locator(f'#best-list li[data-kpi="{kpi}"]')
        marks = page.locator(f'#results-table td[data-kpi="{kpi}"] .best-mark')
        if len(answer["subset"]) == 1:
            (best,) = answer["subset"]
            expect(line).to_have_attribute("data-best", str(best))
            expect(marks).to_have_count(1)
            row = page.locator(f'#results-table tr[data-scenario-id="{best}"]')
            expect(row.locator(f'td[data-kpi="{kpi}"] .best-mark')).to_have_count(1)
        else:
            expect(line).to_have_attribute("data-best", "none")
            expect(line).to_contain_text("cannot yet tell")
            expect(line.get_by_role("button", name="Extend by")).to_be_visible()
            expect(marks).to_have_count(0)
    return subsets


def test_best_marker_only_when_the_selection_names_one_and_extend_settles_it(
    open_page: OpenPage, server: Server
) -> None:
    page = open_page()
    run_id = start_run(server, {"scenario_ids": [1, 2, 3], "replications": 3, "seed": 1})
    wait_until_ended(page, run_id)
    subsets = expect_best_marks(page, server, run_id)
    # Three replications cannot separate the two cheaper scenarios (checked on the server).
    assert len(subsets["total_labor_costs"]) > 1
    screenshot(page, "dashboard-undecided")

    page.get_by_label(f"Extend run #{run_id} by").fill("200")
    page.get_by_role("button", name="Extend", exact=True).click()
    done = page.locator(f'#results[data-run-id="{run_id}"][data-done="609"]')
    expect(done).to_have_attribute("data-status", "completed")
    subsets = expect_best_marks(page, server, run_id)
    assert subsets["total_labor_costs"] == [3]


def test_constraint_filter_and_pareto_front_follow_the_server_statistics(
    open_page: OpenPage, server: Server
) -> None:
    page = open_page()
    run_id = start_run(server, {"scenario_ids": [1, 2, 3], "replications": 100, "seed": 3})
    wait_until_ended(page, run_id)
    results = server.api("GET", f"/api/results?run_id={run_id}").json()

    def cheapest_meeting(limit: float) -> str:
        meets = [
            r for r in results if r["average_delivery_rate"] - r["delivery_rate_ci95"] >= limit
        ]
        best = min(meets, key=lambda r: r["average_total_costs"], default=None)
        return "" if best is None else str(best["scenario_id"])

    answer = page.locator("#constraint-answer")
    expect(answer).to_have_attribute("data-pick", cheapest_meeting(0.95))
    assert cheapest_meeting(0.95) == "2"
    page.get_by_label("Target value").fill("80")
    expect(answer).to_have_attribute("data-pick", cheapest_meeting(0.80))
    # A target inside scenario 1's interval: its mean meets it, its interval does not.
    first = next(r for r in results if r["scenario_id"] == 1)
    inside = round((first["average_delivery_rate"] - first["delivery_rate_ci95"] / 2) * 100, 2)
    page.get_by_label("Target value").fill(str(inside))
    expect(answer).to_have_attribute("data-pick", cheapest_meeting(inside / 100))
    assert cheapest_meeting(inside / 100) != "1"
    expect(answer).to_contain_text(
        f"Not yet clear either way (the 95% interval crosses the target): {first['scenario_name']}"
    )
    page.get_by_label("Target value").fill("99.9")
    expect(answer).to_contain_text("No scenario meets On-time delivery rate ≥ 99.9%")

    efficient = {
        r["scenario_id"]
        for r in results
        if not any(
            o["average_total_costs"] <= r["average_total_costs"]
            and o["average_delivery_rate"] >= r["average_delivery_rate"]
            and o is not r
            for o in results
        )
    }
    ringed = page.locator("#scatter .point.pareto")
    expect(ringed).to_have_count(len(efficient))
    assert {int(x) for x in ringed.evaluate_all("(ps) => ps.map((p) => p.dataset.id)")} == (
        efficient
    )


def test_distribution_and_manifest_of_a_run(open_page: OpenPage, server: Server) -> None:
    page = open_page()
    run_id = start_run(server, {"scenario_ids": [1, 3], "replications": 40, "seed": 21})
    wait_until_ended(page, run_id)
    rows = server.api("GET", f"/api/simulations/{run_id}/results").json()
    page.get_by_text("Distribution of the replications").click()
    boxes = page.locator("#distribution-chart svg .box-group")
    expect(boxes).to_have_count(2)
    page.locator("#distribution").get_by_label("Indicator").select_option(
        label="Mean wait (minutes)"
    )
    waits = [r["metrics"]["mean_wait_minutes"] for r in rows if r["scenario_id"] == 3]
    median = statistics.median(waits)
    expect(boxes.nth(1).locator("title")).to_contain_text(f"n 40, median {median:,.2f}")

    page.get_by_text("Reproducibility manifest").click()
    manifest = page.locator("#manifest-body")
    expect(manifest).to_contain_text("Seed21")
    expect(manifest).to_contain_text("warehouse 1.0.0")
    download = manifest.get_by_role("link", name=f"Download the manifest of run #{run_id}")
    assert (download.get_attribute("href") or "").startswith("blob:")


def test_no_accessibility_violations_at_desktop_and_phone_widths_in_both_languages(
    open_page: OpenPage, server: Server
) -> None:
    page = open_page()
    run_id = start_run(server, {"scenario_ids": [1, 2, 3], "replications": 5, "seed": 2})
    wait_until_ended(page, run_id)
    expect(page.locator("#decision-cards li.card")).to_have_count(2)
    for details in ("#compare-details", "#distribution", "#manifest", "#run-advanced"):
        page.locator(f"{details} > summary").click()
    expect(page.locator("#distribution-chart svg")).to_have_count(1)
    for language in ("en", "ja"):
        page.locator("#language").select_option(language)
        expect(page.locator("html")).to_have_attribute("lang", language)
        for width in (1366, 390):
            page.set_viewport_size({"width": width, "height": 900})
            assert axe_violations(page) == [], (language, width)
            assert duplicate_names(page) == [], (language, width)
            screenshot(page, f"dashboard-{width}-{language}")


def duplicate_names(page: Page) -> list[str]:
    """Accessible names that more than one visible button or link carries."""
    names: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('button, a[href]')]
            .filter((el) => el.offsetParent !== null)
            .map((el) => el.getAttribute('aria-label') || el.textContent.trim())"""
    )
    return sorted({n for n in names if names.count(n) > 1})


def contrast(rgb_a: str, rgb_b: str) -> float:
    """WCAG contrast ratio of two CSS rgb() colours."""

    def luminance(rgb: str) -> float:
        channels = [int(c) / 255 for c in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3]]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(rgb_a), luminance(rgb_b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_keyboard_reaches_everything_with_a_visible_focus(
    open_page: OpenPage, server: Server
) -> None:
    page = open_page(width=390)
    run_id = start_run(server, {"scenario_ids": [1, 2, 3], "replications": 5, "seed": 4})
    wait_until_ended(page, run_id)
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to results")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.locator("#results-title")).to_be_focused()
    # The wide table scrolls from the keyboard on a phone.
    wrap = page.locator("#results-table").locator("xpath=..")
    wrap.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("(el) => el.scrollLeft > 0", arg=wrap.element_handle())
    # The focus ring stands out from the panel (at least 3:1).
    button = page.get_by_role("button", name="Start run")
    button.focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    ring = button.evaluate("(el) => getComputedStyle(el).outlineColor")
    panel = page.locator("#start-run").evaluate("(el) => getComputedStyle(el).backgroundColor")
    assert button.evaluate("(el) => getComputedStyle(el).outlineStyle") == "solid"
    assert contrast(ring, panel) >= 3, (ring, panel)
    size = page.locator('#run-scenarios input[type="checkbox"]').first.bounding_box()
    assert size is not None
    assert math.floor(size["width"]) >= 18


def test_all_stored_results_say_what_they_pool_and_flag_doubtful_intervals(
    open_page: OpenPage, server: Server
) -> None:
    page = open_page()
    for seed in (101, 102):
        run_id = start_run(server, {"scenario_ids": [2], "replications": 4, "seed": seed})
        wait_until_ended(page, run_id)
    results = server.api("GET", "/api/results").json()
    if "run_ids" not in results[0]:
        pytest.skip("this server's pooled results do not say what they pool")
    page.locator("#results-view").select_option("all")
    for entry in results:
        row = page.locator(f'#results-table tr[data-scenario-id="{entry["scenario_id"]}"]')
        expect(row.locator("td.pools")).to_contain_text(
            ", ".join(f"#{i}" for i in entry["run_ids"])
        )
        for kpi in ("total_labor_costs", "ontime_delivery_rate"):
            cell = row.locator(f'td[data-kpi="{kpi}"]')
            if entry["metrics"][kpi].get("normal_doubtful"):
                expect(cell.locator(".doubt")).to_have_count(1)
            else:
                expect(cell.locator(".doubt")).to_have_count(0)
    assert any(e["metrics"]["ontime_delivery_rate"].get("normal_doubtful") for e in results)
    expect(page.locator("#results-doubt")).to_contain_text("may be too narrow")
    # Pooled results of several runs are not one experiment: no ★ for them.
    expect(page.locator("#results-table .best-mark")).to_have_count(0)
