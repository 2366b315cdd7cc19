"""The dashboard against the orderings a fast run makes possible: a run that ends before
the answer to its start arrives, a socket that says nothing of a run, and progress of a
run whose start the page never heard. Each ordering is made certain, not likely: the
tests hold the answer or the socket's messages back until the run is where they need it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from playwright.sync_api import Page, Route, WebSocketRoute, expect

from .browser_support import WAIT_MS, OpenPage, Server, start_run_from_form, wait_until_ended

SNAPSHOT_RUNS = 50  # the runs a socket's hello holds, newest first
HEARD = """([type, id]) => performance.getEntriesByName("simsvc:event")
  .some((m) => m.detail.type === type && m.detail.runId === id)"""

HELLOS = """(n) => performance.getEntriesByName("simsvc:event")
  .filter((m) => m.detail.type === "hello").length === n"""


def wait_for_event(page: Page, kind: str, run_id: int) -> None:
    """Wait until the page has handled an event of this kind for this run."""
    page.wait_for_function(HEARD, arg=[kind, run_id], timeout=WAIT_MS)


def hold_start_until(heard_by: Callable[[], Page], kind: str) -> Callable[[Route], None]:
    """A route that answers a run's start only once `heard_by()` has handled `kind` for it."""

    def handle(route: Route) -> None:
        if route.request.method != "POST":
            route.continue_()
            return
        response = route.fetch()
        wait_for_event(heard_by(), kind, response.json()["run_id"])
        route.fulfill(response=response)

    return handle


def expect_completed_in_place(page: Page, run_id: int) -> None:
    item = page.locator(f'#live-list li[data-run-id="{run_id}"]')
    expect(item.locator(".pct")).to_have_text("100%", timeout=WAIT_MS)
    expect(item).to_have_attribute("data-status", "completed")
    wait_until_ended(page, run_id)
    expect(page.locator("#results-table tbody tr")).not_to_have_count(0)


def test_a_run_that_ends_before_its_start_is_answered_shows_as_completed(
    open_page: OpenPage,
) -> None:
    pages: list[Page] = []
    held: list[Route] = []
    page = open_page(
        routes={
            "**/api/simulations": hold_start_until(lambda: pages[0], "run.completed"),
            # The run as stored is never answered: the events alone must carry the page.
            "**/api/simulations/*": lambda route: held.append(route),
        }
    )
    pages.append(page)
    # The page hears started, progress and completed; only then the answer "queued".
    run_id = start_run_from_form(page, 20)
    expect_completed_in_place(page, run_id)
    history = page.locator(f'#history-table tr[data-run-id="{run_id}"]')
    expect(history).to_contain_text("completed")
    assert [r.request.url for r in held] == [f"{page.url}api/simulations/{run_id}"]


def test_a_run_the_socket_says_nothing_of_is_read_over_http(open_page: OpenPage) -> None:
    watcher = open_page()
    held: list[str | bytes] = []

    def hello_only(ws: WebSocketRoute) -> None:
        # The socket is live (its hello arrives) but what follows is held back.
        upstream = ws.connect_to_server()

        def relay(message: str | bytes) -> None:
            if json.loads(message)["type"] == "hello":
                ws.send(message)
            else:
                held.append(message)

        upstream.on_message(relay)

    page = open_page(
        routes={"**/api/simulations": hold_start_until(lambda: watcher, "run.completed")},
        prepare=lambda p: p.route_web_socket("**/ws/events", hello_only),
    )
    run_id = start_run_from_form(page, 20)
    expect_completed_in_place(page, run_id)
    assert held, "the socket should have had news to hold back"


def test_progress_of_a_run_whose_start_went_unseen_brings_its_bar(
    open_page: OpenPage, server: Server
) -> None:
    def without_run_started(ws: WebSocketRoute) -> None:
        # Drops every run.started and renumbers what follows, so no gap gives it away.
        upstream = ws.connect_to_server()
        dropped = 0

        def relay(message: str | bytes) -> None:
            nonlocal dropped
            event = json.loads(message)
            if event["type"] == "run.started":
                dropped += 1
                return
            event["seq"] -= dropped
            ws.send(json.dumps(event))

        upstream.on_message(relay)

    page = open_page(prepare=lambda p: p.route_web_socket("**/ws/events", without_run_started))
    started = server.api(
        "POST", "/api/simulations", {"scenario_ids": [1], "replications": 5000, "pace_s": 0.05}
    )
    run_id = started.json()["run_id"]
    try:
        wait_for_event(page, "run.progress", run_id)
        item = page.locator(f'#live-list li[data-run-id="{run_id}"]')
        expect(item).to_have_attribute("data-status", "running")
        expect(page.locator(f'#history-table tr[data-run-id="{run_id}"]')).to_contain_text(
            "running"
        )
    finally:
        server.api("POST", f"/api/simulations/{run_id}/cancel")
    expect(item).to_have_attribute("data-status", "cancelled")


def test_a_reconnect_reads_the_followed_run_the_snapshot_left_out(
    open_page: OpenPage, server: Server
) -> None:
    sockets: list[WebSocketRoute] = []
    deaf: list[bool] = []

    def first_goes_deaf(ws: WebSocketRoute) -> None:
        upstream = ws.connect_to_server()
        sockets.append(ws)
        first = len(sockets) == 1
        upstream.on_message(lambda message: None if first and deaf else ws.send(message))

    page = open_page(prepare=lambda p: p.route_web_socket("**/ws/events", first_goes_deaf))
    run_id = start_run_from_form(
        page, 5000, **{"Pause after each replication (seconds, for demos)": "0.05"}
    )
    item = page.locator(f'#live-list li[data-run-id="{run_id}"]')
    expect(item).to_have_attribute("data-status", "running")
    # While the page hears nothing, its run is cancelled and enough newer runs push it
    # out of the snapshot a new socket starts with.
    deaf.append(True)
    assert server.api("POST", f"/api/simulations/{run_id}/cancel").ok
    for _ in range(SNAPSHOT_RUNS):
        assert server.api("POST", "/api/simulations", {"scenario_ids": [1], "replications": 1}).ok
    sockets[0].close()
    page.wait_for_function(HELLOS, arg=2, timeout=WAIT_MS)
    assert len(sockets) == 2
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    # Read over HTTP once the new socket is live: allow for a loaded machine.
    expect(item).to_have_attribute("data-status", "cancelled", timeout=WAIT_MS)
    history = page.locator(f'#history-table tr[data-run-id="{run_id}"]')
    expect(history).to_contain_text("cancelled", timeout=WAIT_MS)


PROGRESS_SEEN = """(id) => performance.getEntriesByName("simsvc:event")
  .filter((m) => m.detail.type === "run.progress" && m.detail.runId === id).length"""
PROGRESS_PAST = f"([id, n]) => ({PROGRESS_SEEN})(id) > n"


def test_a_resumed_run_shows_as_running_from_its_progress_alone(
    open_page: OpenPage, server: Server
) -> None:
    page = open_page()
    run_id = server.api(
        "POST", "/api/simulations", {"scenario_ids": [1], "replications": 5000, "pace_s": 0.05}
    ).json()["run_id"]
    try:
        wait_for_event(page, "run.progress", run_id)
        assert server.api("POST", f"/api/simulations/{run_id}/cancel").ok
        item = page.locator(f'#live-list li[data-run-id="{run_id}"]')
        expect(item).to_have_attribute("data-status", "cancelled")
        heard: int = page.evaluate(PROGRESS_SEEN, run_id)
        held: list[Route] = []

        def answer_once_progress_is_heard(route: Route) -> None:
            # The restart's event and this answer say no more than the page knew at the
            # cancel; later progress is what tells it the run is running again.
            response = route.fetch()
            page.wait_for_function(PROGRESS_PAST, arg=[run_id, heard], timeout=WAIT_MS)
            route.fulfill(response=response)

        page.route(f"**/api/simulations/{run_id}/resume", answer_once_progress_is_heard)
        # The run as stored is never answered: the events alone must carry the page.
        page.route(f"**/api/simulations/{run_id}", lambda route: held.append(route))
        page.get_by_role("button", name=f"Resume run #{run_id}").click()
        expect(item).to_have_attribute("data-status", "running")
    finally:
        server.api("POST", f"/api/simulations/{run_id}/cancel")
    expect(item).to_have_attribute("data-status", "cancelled")
