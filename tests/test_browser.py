"""The dashboard in a real browser, against a live `python -m simsvc`.

Debian's chromium, driven by Playwright. Without the browser these tests skip, except
under CI=true, where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, expect, sync_playwright

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    # Without these, chromium keeps calling home, which this kind of machine refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_LIMIT_S = 20.0
WAIT_MS = 15_000


def chromium_path() -> str:
    """The system chromium, or skip (fail under CI) when there is none."""
    found = os.environ.get("SIMSVC_CHROMIUM") or shutil.which("chromium")
    if found and Path(found).is_file():
        return found
    message = f"no chromium at {found}" if found else "chromium is not installed (apt install)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


# -- the server -----------------------------------------------------------------------


@dataclass
class Server:
    port: int
    db_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.db_path.with_suffix(".log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "simsvc",
                    "--port",
                    str(self.port),
                    "--db",
                    str(self.db_path),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_healthy()

    def _wait_until_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/api/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            # Waiting on the process paces the retries and notices a crash at once.
            try:
                self.proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            break
        self.stop()
        raise AssertionError(f"simsvc did not come up:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def api(self, method: str, path: str, body: Any = None) -> requests.Response:
        return requests.request(method, f"{self.url}{path}", json=body, timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    live = Server(free_port(), tmp_path_factory.mktemp("browser") / "simsvc.db")
    live.start()
    yield live
    live.stop()


# -- the browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Console:
    """Console errors and uncaught exceptions of every page a test opens."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.expected: list[re.Pattern[str]] = []

    def watch(self, page: Page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _on_console(self, msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            self.errors.append(f"{msg.type}: {msg.text} ({msg.location.get('url')})")

    def expect(self, pattern: str) -> None:
        """Allow one kind of message, e.g. the network log of a deliberately refused request."""
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


@pytest.fixture
def console() -> Iterator[Console]:
    watcher = Console()
    yield watcher
    assert watcher.unexpected() == []


OpenPage = Callable[..., Page]


@pytest.fixture
def open_page(browser: Browser, server: Server, console: Console) -> Iterator[OpenPage]:
    """Open the dashboard in a fresh context and wait until its socket is live."""
    contexts = []

    def open_(
        locale: str = "en-US",
        url: str | None = None,
        routes: Mapping[str | re.Pattern[str], Callable[[Route], None]] | None = None,
    ) -> Page:
        context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        for pattern, handler in (routes or {}).items():
            page.route(pattern, handler)
        console.watch(page)
        page.goto(f"{url or server.url}/")
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        return page

    yield open_
    for context in contexts:
        context.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def start_run_from_form(page: Page, replications: int, **advanced: str) -> int:
    page.get_by_label("Replications per scenario").fill(str(replications))
    if advanced:
        page.get_by_text("Advanced: pacing and precision targets").click()
        for label, value in advanced.items():
            page.get_by_label(label).fill(value)
    with page.expect_response(
        lambda r: r.url.endswith("/api/simulations") and r.request.method == "POST"
    ) as answer:
        page.get_by_role("button", name="Start run").click()
    assert answer.value.status == 202, answer.value.text()
    run_id: int = answer.value.json()["run_id"]
    return run_id


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


def test_cancel_button_stops_a_long_run(open_page: OpenPage, server: Server) -> None:
    page = open_page()
    run_id = start_run_from_form(
        page, 1000, **{"Pause after each replication (seconds, for demos)": "0.05"}
    )
    item = page.locator(f'#live-list li[data-run-id="{run_id}"]')
    expect(item).to_have_attribute("data-status", "running")
    item.get_by_role("button", name=f"Cancel run #{run_id}").click()
    expect(item).to_have_attribute("data-status", "cancelled")
    expect(item.get_by_role("button")).to_have_count(0)
    history = page.locator(f'#history-table tr[data-run-id="{run_id}"]')
    expect(history).to_contain_text("cancelled")
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


def test_bad_input_shows_the_api_message_next_to_the_field(
    open_page: OpenPage, server: Server, console: Console
) -> None:
    console.expect(r"status of 422")
    page = open_page()
    body = {"scenario_name": "不正な人数", "model": "warehouse", "params": {"workers": 0}}
    refused = server.api("POST", "/api/scenarios", body)
    assert refused.status_code == 422
    message = next(e["message"] for e in refused.json()["errors"] if e["field"] == "params.workers")

    page.get_by_label("Scenario name").fill("不正な人数")
    workers = page.get_by_label("Pickers on the shift")
    workers.fill("0")
    page.get_by_role("button", name="Create scenario").click()
    expect(page.locator('[id="err-scenario-params.workers"]')).to_have_text(message)
    expect(workers).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#scenario-form-error")).to_be_empty()

    page.get_by_label("Replications per scenario").fill("0")
    page.get_by_role("button", name="Start run").click()
    expect(page.locator("#err-run-replications")).to_contain_text("less than the minimum of 1")
    screenshot(page, "dashboard-bad-input")
    names = [s["scenario_name"] for s in server.api("GET", "/api/scenarios").json()]
    assert "不正な人数" not in names


def test_precision_targets_are_sent_only_when_filled_and_errors_land_beside_them(
    open_page: OpenPage, console: Console
) -> None:
    console.expect(r"status of 422")
    page = open_page()
    sent: list[dict[str, Any]] = []
    field_name = "precision.targets.total_labor_costs"

    def refuse(route: Route) -> None:
        sent.append(json.loads(route.request.post_data or "{}"))
        problem = {"type": "about:blank", "title": "Unprocessable Content", "status": 422}
        problem |= {"detail": "invalid", "errors": [{"field": field_name, "message": "too wide"}]}
        route.fulfill(status=422, content_type="application/problem+json", body=json.dumps(problem))

    page.route("**/api/simulations", refuse)
    page.get_by_role("button", name="Start run").click()
    slot = page.locator(f'[id="err-run-{field_name}"]')
    expect(slot).to_have_text("too wide")
    page.get_by_text("Advanced: pacing and precision targets").click()
    target = page.get_by_label("Target for Total labor costs", exact=True)
    target.fill("0.01")
    page.get_by_label("Maximum replications").fill("500")
    with page.expect_request("**/api/simulations"):
        page.get_by_role("button", name="Start run").click()
    expect(slot).to_have_text("too wide")
    expect(target).to_have_attribute("aria-invalid", "true")
    assert "precision" not in sent[0]
    assert sent[1]["precision"] == {
        "targets": {"total_labor_costs": {"relative_half_width": 0.01}},
        "max_replications": 500,
    }


COMPARE_URL = re.compile(r"/api/simulations/\d+/compare\?")


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


def test_comparison_formats_differences_in_the_kpi_units(
    open_page: OpenPage, server: Server
) -> None:
    spec = server.api("GET", "/openapi.json").json()
    spec["paths"]["/api/simulations/{run_id}/compare"] = {"get": {}}
    asked: list[tuple[int, int]] = []

    def compare(route: Route) -> None:
        url = urlparse(route.request.url)
        baseline = int(parse_qs(url.query)["baseline"][0])
        asked.append((int(url.path.split("/")[3]), baseline))
        other = 2 if baseline == 1 else 1
        rows = [
            {"scenario_id": other, "kpi": "total_labor_costs", "n": 5, "mean_difference": 1650.0}
            | {"paired_ci95": [1500.0, 1800.0], "welch_ci95": [1300.0, 2000.0], "verdict": "worse"},
            {"scenario_id": other, "kpi": "ontime_delivery_rate", "n": 5}
            | {"mean_difference": 0.12, "paired_ci95": [0.08, 0.16]}
            | {"welch_ci95": [0.02, 0.22], "verdict": "better"},
        ]
        route.fulfill(json={"run_id": 0, "baseline": baseline, "comparisons": rows})

    page = open_page(
        routes={"**/openapi.json": lambda route: route.fulfill(json=spec), COMPARE_URL: compare}
    )
    run = server.api("POST", "/api/simulations", {"scenario_ids": [1, 2], "replications": 5})
    run_id = run.json()["run_id"]
    done = page.locator(f'#results[data-run-id="{run_id}"][data-status="completed"]')
    expect(done).to_have_count(1)
    section = page.locator("#compare")
    expect(section).to_be_visible()
    expect(section.locator("tbody tr")).to_have_count(2)
    expect(section.locator("tbody")).to_contain_text("worse")
    expect(section.locator("tbody")).to_contain_text("12.0%")
    page.get_by_label("Baseline scenario").select_option(label="人員1名追加")
    expect(section.locator("tbody tr").first).to_contain_text("現状シナリオ")
    assert [b for r, b in asked if r == run_id] == [1, 2]


def test_comparison_stays_hidden_when_the_server_has_none(
    open_page: OpenPage, server: Server, console: Console
) -> None:
    console.expect(r"status of 404")
    spec = server.api("GET", "/openapi.json").json()
    spec["paths"]["/api/simulations/{run_id}/compare"] = {"get": {}}
    page = open_page(
        routes={
            "**/openapi.json": lambda route: route.fulfill(json=spec),
            COMPARE_URL: lambda route: route.fulfill(status=404, json={"status": 404}),
        }
    )
    run = server.api("POST", "/api/simulations", {"scenario_ids": [1, 2], "replications": 5})
    with page.expect_response(COMPARE_URL):
        done = page.locator(f'#results[data-run-id="{run.json()["run_id"]}"]')
        expect(done).to_have_attribute("data-status", "completed")
    expect(page.locator("#compare")).to_be_hidden()
    expect(page.locator("#results-table")).to_be_visible()


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


def test_page_reconnects_by_itself_after_a_server_restart(
    open_page: OpenPage, console: Console, server: Server
) -> None:
    # The browser logs each refused reconnection attempt while the server is down.
    console.expect(r"WebSocket connection to .* failed")
    page = open_page()
    page.get_by_label("Scenario name").fill("入力途中")
    server.stop()
    expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    server.start()
    # The page's next attempt may be up to its longest backoff (10 s, plus jitter) away.
    expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    server.api("POST", "/api/scenarios", {"scenario_name": "再起動後"})
    expect(page.locator("#scenario-table tbody")).to_contain_text("再起動後")
    # A reconnect refreshes the data but leaves what the user was typing alone.
    expect(page.get_by_label("Scenario name")).to_have_value("入力途中")


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
