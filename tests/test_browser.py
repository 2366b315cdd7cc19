"""The dashboard in a real browser, against a live `python -m simsvc`: the story of a
planner's session, the run bar, forms, languages, the offline state and the sign-in.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, expect

from .browser_support import (
    ARTIFACTS,
    WAIT_MS,
    Console,
    OpenPage,
    Server,
    axe_violations,
    screenshot,
    start_run_from_form,
    wait_until_ended,
)
from .conftest import free_port

# -- the story ------------------------------------------------------------------------


def test_story_create_scenario_run_and_watch_results_arrive_live(
    open_page: OpenPage, server: Server
) -> None:
    page = open_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    other = open_page()
    page.evaluate("window.notReloaded = true")

    page.get_by_label("Scenario name").fill("夜勤 7名")
    page.get_by_label("Pickers on the shift").fill("7")
    page.get_by_role("button", name="Create scenario").click()
    expect(page.locator("#scenario-form-ok")).to_contain_text("夜勤 7名")
    # The other tab learns of the scenario from its socket.
    expect(other.locator("#scenario-table tbody")).to_contain_text("夜勤 7名")
    expect(page.get_by_label("夜勤 7名", exact=True)).to_be_checked()
    before = page.locator("#results").inner_text()

    run_id = start_run_from_form(page, 200)
    item = page.locator(f'#live-list li[data-run-id="{run_id}"]')
    expect(item.locator(".pct")).to_have_text("100%", timeout=WAIT_MS)
    expect(item.locator("progress")).to_have_attribute("value", "800")
    results = page.locator("#results")
    expect(results).to_have_attribute("data-status", "completed", timeout=WAIT_MS)
    expect(page.locator("#results-table tbody tr")).to_have_count(4)
    expect(page.locator("#results-table")).to_contain_text("夜勤 7名")
    assert page.locator("#results").inner_text() != before
    expect(page.locator('#charts figure[data-kpi="total_labor_costs"] svg .bar')).to_have_count(4)
    expect(page.locator("#scatter svg .point")).to_have_count(4)
    assert page.evaluate("window.notReloaded") is True

    # Both tabs have the selection procedure's answers before their tables are compared.
    for tab in (page, other):
        expect(tab.locator("#best-list li[data-best]")).to_have_count(4)
    final_table = page.locator("#results-table").inner_text()
    assert re.search(r"夜勤 7名\s+200\s", final_table)
    final_rows = page.locator("#results-table tbody").text_content() or ""
    expect(other.locator("#results-table tbody")).to_have_text(final_rows)
    expect(other.locator(f'#live-list li[data-run-id="{run_id}"] .pct')).to_have_text("100%")
    assert all(url.startswith(server.url) or url.startswith("data:") for url in requested)
    assert unlabelled_controls(page) == []
    record_latency(page, server, run_id)
    screenshot(page, "dashboard-after-run")
    screenshot(other, "dashboard-second-tab")


def unlabelled_controls(page: Page) -> list[str]:
    """Form controls a screen reader would announce without a name."""
    found: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button, progress, textarea')]
            .filter((el) => !el.labels?.length && !el.getAttribute('aria-label')
                && !(el.tagName === 'BUTTON' && el.textContent.trim()))
            .map((el) => el.outerHTML.slice(0, 120))"""
    )
    return found


def record_latency(page: Page, server: Server, run_id: int) -> None:
    """Time from the run's end (stamped after its last replication is stored) to the chart."""
    run = server.api("GET", f"/api/simulations/{run_id}").json()
    rendered = page.evaluate(
        """(runId) => performance.getEntriesByName('simsvc:results-rendered')
            .filter((m) => m.detail.runId === runId && m.detail.status === 'completed')
            .map((m) => performance.timeOrigin + m.startTime)""",
        run_id,
    )
    finished = _epoch_ms(run["finished_at"])
    latency_ms = min(rendered) - finished
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "latency.json").write_text(
        json.dumps({"run_id": run_id, "finished_to_chart_ms": round(latency_ms, 1)}) + "\n"
    )
    assert 0 <= latency_ms + 5 < 2000, latency_ms  # ms clocks; the same machine's clock


def _epoch_ms(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


def test_keyboard_user_cancels_a_run_while_progress_updates(
    open_page: OpenPage, server: Server
) -> None:
    page = open_page()
    # A completed run before this one, which "latest" must not fall back to.
    earlier = server.api("POST", "/api/simulations", {"scenario_ids": [1], "replications": 2})
    wait_until_ended(page, earlier.json()["run_id"])
    run_id = start_run_from_form(
        page, 1000, **{"Pause after each replication (seconds, for demos)": "0.05"}
    )
    item = page.locator(f'#live-list li[data-run-id="{run_id}"]')
    expect(item).to_have_attribute("data-status", "running")
    cancel = item.get_by_role("button", name=f"Cancel run #{run_id}")
    cancel.focus()
    # The bar is pinned while a run goes on, with throughput and time left.
    expect(page.locator("#live")).to_have_css("position", "sticky")
    expect(item.locator(".rate")).to_contain_text("replications/s")
    expect(item.locator(".eta")).to_contain_text("left")
    # Several progress updates later the button still has the focus...
    for _ in range(3):
        seen = item.locator(".count").inner_text()
        expect(item.locator(".count")).not_to_have_text(seen, timeout=WAIT_MS)
    expect(cancel).to_be_focused()
    # ...so the keyboard alone can cancel the run.
    page.keyboard.press("Enter")
    expect(item).to_have_attribute("data-status", "cancelled")
    expect(item.get_by_role("button", name=f"Cancel run #{run_id}")).to_be_hidden()
    expect(item.locator(".live-head")).to_be_focused()
    history = page.locator(f'#history-table tr[data-run-id="{run_id}"]')
    expect(history).to_contain_text("cancelled")
    # The results stay on the run the user cancelled, not an older completed one.
    wait_until_ended(page, run_id, "cancelled")
    run = server.api("GET", f"/api/simulations/{run_id}").json()
    assert run["status"] == "cancelled"
    assert run["done"] < run["total"]
    screenshot(page, "dashboard-cancelled")


def test_edit_and_delete_a_scenario_from_its_row(open_page: OpenPage, server: Server) -> None:
    created = server.api("POST", "/api/scenarios", {"scenario_name": "編集用"}).json()
    page = open_page()
    row = page.locator(f'#scenario-table tr[data-scenario-id="{created["scenario_id"]}"]')
    row.get_by_role("button", name="Edit: 編集用").click()
    expect(page.get_by_label("Pickers on the shift")).to_have_value("5")
    page.get_by_label("Pickers on the shift").fill("8")
    page.get_by_role("button", name="Save changes").click()
    expect(row).to_contain_text("Pickers on the shift: 8")
    assert (
        server.api("GET", f"/api/scenarios/{created['scenario_id']}").json()["params"]["workers"]
        == 8
    )
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete: 編集用").click()
    expect(row).to_have_count(0)
    expect(page.get_by_label("編集用", exact=True)).to_have_count(0)


def test_a_refused_delete_is_explained_beside_its_button(
    open_page: OpenPage, server: Server, console: Console
) -> None:
    console.expect(r"status of 409")
    created = server.api("POST", "/api/scenarios", {"scenario_name": "結果あり"}).json()
    sid = created["scenario_id"]
    page = open_page()
    run = server.api("POST", "/api/simulations", {"scenario_ids": [sid], "replications": 2})
    wait_until_ended(page, run.json()["run_id"])
    row = page.locator(f'#scenario-table tr[data-scenario-id="{sid}"]')
    page.once("dialog", lambda dialog: dialog.accept())
    delete = row.get_by_role("button", name="Delete: 結果あり")
    delete.click()
    expect(row.locator(".row-error")).to_have_text(
        "Cannot delete: runs have stored results for this scenario."
    )
    expect(delete).to_be_focused()
    assert server.api("GET", f"/api/scenarios/{sid}").status_code == 200


def test_every_bad_field_is_explained_at_once_in_plain_words(
    open_page: OpenPage, server: Server, console: Console
) -> None:
    console.expect(r"status of 422")
    page = open_page()
    body = {"scenario_name": "不正", "params": {"workers": 0, "shift_hours": 30}}
    refused = server.api("POST", "/api/scenarios", body)
    assert refused.status_code == 422
    assert {e["field"] for e in refused.json()["errors"]} == {
        "params.workers",
        "params.shift_hours",
    }

    page.get_by_label("Scenario name").fill("不正")
    page.get_by_label("Pickers on the shift").fill("0")
    page.get_by_label("Shift length (hours)").fill("30")
    page.get_by_role("button", name="Create scenario").click()
    expect(page.locator('[id="err-scenario-params.workers"]')).to_have_text("Must be at least 1.")
    expect(page.locator('[id="err-scenario-params.shift_hours"]')).to_have_text(
        "Must be at most 24."
    )
    expect(page.get_by_label("Pickers on the shift")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#scenario-form-error")).to_be_empty()

    page.get_by_label("Replications per scenario").fill("0")
    page.get_by_label("Seed (blank: random)").fill("-1")
    page.get_by_role("button", name="Start run").click()
    expect(page.locator("#err-run-replications")).to_have_text("Must be at least 1.")
    expect(page.locator("#err-run-seed")).to_have_text("Must be at least 0.")
    screenshot(page, "dashboard-bad-input")

    page.get_by_label("Language").select_option("ja")
    page.get_by_role("button", name="実行開始").click()
    expect(page.locator("#err-run-replications")).to_have_text("1 以上にしてください。")
    names = [s["scenario_name"] for s in server.api("GET", "/api/scenarios").json()]
    assert "不正" not in names


def test_precision_targets_are_sent_only_when_filled_and_errors_land_beside_them(
    open_page: OpenPage, console: Console
) -> None:
    console.expect(r"status of 422")
    page = open_page()
    sent: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: (
            sent.append(json.loads(r.post_data or "{}"))
            if r.url.endswith("/api/simulations") and r.method == "POST"
            else None
        ),
    )
    page.get_by_label("Replications per scenario").fill("0")
    with page.expect_response("**/api/simulations"):
        page.get_by_role("button", name="Start run").click()
    page.get_by_text("Advanced: pacing and precision targets").click()
    target = page.get_by_label("Target for Total labor costs", exact=True)
    target.fill("-0.01")
    page.get_by_label("Maximum replications").fill("500")
    with page.expect_response("**/api/simulations") as answer:
        page.get_by_role("button", name="Start run").click()
    assert answer.value.status == 422
    slot = page.locator('[id="err-run-precision.targets.total_labor_costs"]')
    expect(slot).to_have_text("Must be more than 0.")
    expect(target).to_have_attribute("aria-invalid", "true")
    assert "precision" not in sent[0]
    assert sent[1]["precision"] == {
        "targets": {"total_labor_costs": {"relative_half_width": -0.01}},
        "max_replications": 500,
    }


def test_comparison_with_a_baseline_shows_the_server_answer(
    open_page: OpenPage, server: Server
) -> None:
    page = open_page()
    body = {"scenario_ids": [1, 2], "replications": 20, "seed": 8}
    run_id = server.api("POST", "/api/simulations", body).json()["run_id"]
    done = page.locator(f'#results[data-run-id="{run_id}"][data-status="completed"]')
    expect(done).to_have_count(1, timeout=WAIT_MS)
    section = page.locator("#compare")
    expect(section).to_be_visible()
    for baseline, other in ((1, "人員1名追加"), (2, "現状シナリオ")):
        if baseline == 2:
            page.get_by_label("Baseline scenario").select_option(label="人員1名追加")
        answer = server.api("GET", f"/api/simulations/{run_id}/compare?baseline={baseline}")
        assert answer.status_code == 200, answer.text
        comparisons = answer.json()["comparisons"]
        verdicts = {c["kpi"]: c["verdict"] for c in comparisons}
        # Six pickers cost more than five and deliver more on time, clearly, in 20 pairs.
        sign = 1 if baseline == 1 else -1
        assert verdicts["total_labor_costs"] == ("worse" if sign > 0 else "better")
        assert verdicts["ontime_delivery_rate"] == ("better" if sign > 0 else "worse")
        rows = section.locator("tbody tr")
        expect(rows).to_have_count(len(comparisons))
        expect(rows.locator("th")).to_have_text([other] * len(comparisons))
        shown = [c["verdict"].replace("_", " ") for c in comparisons]
        expect(rows.locator(".verdict")).to_have_text(shown)
    section.scroll_into_view_if_needed()
    screenshot(page, "dashboard-comparison")


def test_labels_follow_the_browser_language_and_the_switch(open_page: OpenPage) -> None:
    page = open_page(locale="ja-JP")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.get_by_role("heading", level=2, name="シナリオ", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="実行開始")).to_be_visible()
    screenshot(page, "dashboard-japanese")
    page.get_by_label("言語").select_option("en")
    expect(page.get_by_role("button", name="Start run")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_label("Pickers on the shift")).to_be_visible()
    # The model's description is Markdown: code spans, not backticks.
    expect(page.locator("#model-description code").first).to_have_text("workers")
    assert "`" not in page.locator("#model-description").inner_text()


def test_offline_page_greys_out_says_so_and_resumes_the_interrupted_run(
    open_page: OpenPage, console: Console, server: Server
) -> None:
    # The browser logs each refused connection while the server is down.
    console.expect(r"WebSocket connection to .* failed")
    console.expect(r"Failed to load resource: net::ERR_CONNECTION_REFUSED")
    page = open_page()
    page.get_by_label("Scenario name").fill("入力途中")
    run_id = server.api(
        "POST", "/api/simulations", {"replications": 2000, "pace_s": 0.05, "scenario_ids": [1]}
    ).json()["run_id"]
    item = page.locator(f'#live-list li[data-run-id="{run_id}"]')
    expect(item).to_have_attribute("data-status", "running")
    server.stop()
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    expect(page.locator("#offline")).to_contain_text("Server unreachable")
    expect(page.locator("body")).to_have_class(re.compile(r"\boffline\b"))
    # No button pretends that the stale run can still be cancelled.
    expect(item.get_by_role("button", name=f"Cancel run #{run_id}")).to_be_hidden()
    page.get_by_role("button", name="Start run").click()
    expect(page.locator("#run-form-error")).to_contain_text("Server unreachable: nothing was sent")
    screenshot(page, "dashboard-offline")

    server.start()
    # The page's own backoff may reach the restarted server before this click, hiding the
    # banner; a click then must not open a second socket (the seq check would notice).
    page.locator("#retry-now").dispatch_event("click")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#offline")).to_be_hidden()
    # The server marked the run interrupted; the page stays on it and offers to resume.
    expect(item).to_have_attribute("data-status", "interrupted")
    expect(page.locator("#results")).to_have_attribute("data-run-id", str(run_id))
    item.get_by_role("button", name=f"Resume run #{run_id}").click()
    expect(item).to_have_attribute("data-status", "running")
    server.api("POST", f"/api/simulations/{run_id}/cancel")
    expect(item).to_have_attribute("data-status", "cancelled")
    # A reconnect refreshes the data but leaves what the user was typing alone.
    expect(page.get_by_label("Scenario name")).to_have_value("入力途中")


def test_sign_in_with_a_token_keeps_it_for_the_tab(
    browser: Browser, server: Server, console: Console, tmp_path: Path
) -> None:
    console.expect(r"WebSocket connection to .* failed")
    console.expect(r"status of 401")
    guarded = Server(free_port(), tmp_path / "token.db", token="s3cret-token")
    guarded.start()
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        console.watch(page)
        page.goto(f"{guarded.url}/")
        expect(page.locator("#connection")).to_have_attribute("data-state", "signin")
        token = page.get_by_label("Access token")
        expect(token).to_be_focused()
        assert axe_violations(page) == []
        token.fill("wrong")
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page.locator("#signin-reason")).to_contain_text("did not accept")
        token.fill("s3cret-token")
        page.get_by_role("button", name="Sign in", exact=True).click()
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        expect(page.locator("#signin")).to_be_hidden()
        # Changes carry the token: the server stores the scenario.
        page.get_by_label("Scenario name").fill("トークンで作成")
        page.get_by_role("button", name="Create scenario").click()
        expect(page.locator("#scenario-table tbody")).to_contain_text("トークンで作成")
        # The tab keeps the token across a reload; a new tab (another session) asks again.
        page.reload()
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        other = browser.new_context().new_page()
        console.watch(other)
        other.goto(f"{guarded.url}/")
        expect(other.locator("#signin")).to_be_visible()
        page.get_by_role("button", name="Sign out").click()
        expect(page.locator("#signin")).to_be_visible()
        names = [s["scenario_name"] for s in guarded.api("GET", "/api/scenarios").json()]
        assert "トークンで作成" in names
        other.context.close()
        context.close()
    finally:
        guarded.stop()


def test_api_docs_link_back_to_the_dashboard(open_page: OpenPage, server: Server) -> None:
    page = open_page()
    page.get_by_role("link", name="API").click()
    back = page.get_by_role("link", name="← Back to the dashboard")
    # Swagger UI opens the description's links in a new tab.
    with page.context.expect_page() as opened:
        back.click()
    dashboard = opened.value
    expect(dashboard.locator("#connection")).to_have_attribute("data-state", "live")
    assert dashboard.url == f"{server.url}/"


def test_precision_run_shows_its_half_widths_against_the_targets(
    open_page: OpenPage, server: Server
) -> None:
    page = open_page()
    body = {
        "scenario_ids": [1, 2],
        "pace_s": 0.01,
        "precision": {
            "targets": {"total_labor_costs": {"relative_half_width": 0.001}},
            "min_replications": 10,
            "max_replications": 3000,
        },
    }
    run_id = server.api("POST", "/api/simulations", body).json()["run_id"]
    item = page.locator(f'#live-list li[data-run-id="{run_id}"]')
    precision = item.locator(".precision")
    expect(precision).to_contain_text("per scenario (at most 3,000)")
    expect(precision).to_contain_text("Total labor costs half-width")
    # The bar counts towards the cap, so it only grows from batch to batch.
    seen = []
    for _ in range(4):
        value = int(item.locator("progress").get_attribute("value") or 0)
        seen.append(value)
        expect(item.locator("progress")).not_to_have_attribute("value", str(value), timeout=WAIT_MS)
    assert seen == sorted(seen)
    assert item.locator("progress").get_attribute("max") == "6000"
    server.api("POST", f"/api/simulations/{run_id}/cancel")
    expect(item).to_have_attribute("data-status", "cancelled")


def test_api_docs_render_with_nothing_from_the_network(
    browser: Browser, server: Server, console: Console
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        console.watch(page)
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        # Anything from another origin is refused, as it would be on a machine offline.
        page.route(
            re.compile(r"^(?!" + re.escape(server.url) + r"/|data:|blob:)"),
            lambda route: route.abort(),
        )
        page.goto(f"{server.url}/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("simsvc")
        expect(page.locator(".opblock-summary-path").first).to_be_visible()
    finally:
        context.close()
    external = [u for u in requested if not u.startswith((server.url + "/", "data:", "blob:"))]
    assert external == []
    assert any(u.endswith("/docs/static/swagger-ui-bundle.js") for u in requested)


def test_api_docs_render_and_call_the_api_under_the_content_security_policy(
    browser: Browser, server: Server, console: Console
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        console.watch(page)  # a blocked script or style shows up as a console error
        served = page.goto(f"{server.url}/docs")
        assert served is not None
        assert "frame-ancestors 'none'" in served.headers["content-security-policy"]
        # Swagger UI builds the page from its inline start-up script, allowed by its hash.
        operation = page.locator("#operations-results-post_api_notify_completion")
        expect(operation).to_be_visible(timeout=WAIT_MS)
        operation.locator("button.opblock-summary-control").click()
        page.get_by_role("button", name="Try it out").click()
        # A change from the service's own page passes the Origin check.
        with page.expect_response(lambda r: r.url.endswith("/api/notify-completion")) as answer:
            page.get_by_role("button", name="Execute").click()
        assert answer.value.status == 200, answer.value.text()
        assert answer.value.request.all_headers().get("origin") == server.url
    finally:
        context.close()
