"""The /ws/events protocol: a snapshot first, then typed events numbered without gaps."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse

from simsvc.resources import DB, EVENTS_HUB

from .conftest import Client, start_run

ENDINGS = ("run.completed", "run.failed", "run.cancelled")


class EventReader:
    """Reads events off one socket and checks that seq grows by exactly one each time."""

    def __init__(self, ws: ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0

    async def next(self, limit_s: float = 30.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=limit_s)
        event: dict[str, Any] = json.loads(msg.data)
        assert event["seq"] == self.seq + 1, f"gap after seq {self.seq}: {event}"
        self.seq = event["seq"]
        return event

    async def until(self, *types: str, run_id: int | None = None) -> list[dict[str, Any]]:
        """Every event up to and including the first of `types` (for `run_id`, if given)."""
        seen = []
        while True:
            event = await self.next()
            seen.append(event)
            if event["type"] in types and run_id in (None, event.get("run_id")):
                return seen


@asynccontextmanager
async def events(client: Client) -> AsyncIterator[EventReader]:
    """A connected reader whose hello has been read and checked."""
    async with client.ws_connect("/ws/events") as ws:
        reader = EventReader(ws)
        hello = await reader.next()
        assert hello["type"] == "hello"
        yield reader


async def test_hello_comes_first_with_seq_one_and_a_snapshot(client: Client) -> None:
    async with client.ws_connect("/ws/events") as ws:
        hello = json.loads((await ws.receive(timeout=10)).data)
    assert (hello["type"], hello["seq"]) == ("hello", 1)
    assert [s["scenario_name"] for s in hello["scenarios"]][:1] == ["現状シナリオ"]
    assert (hello["runs"], hello["results"]) == ([], [])
    models = {m["name"]: m for m in hello["models"]}
    assert models["warehouse"]["params"]["properties"]["workers"]["default"] == 5
    assert {"name": "total_labor_costs", "direction": "min"} in models["warehouse"]["kpis"]
    assert hello["version"]


async def test_hello_snapshot_includes_past_runs_newest_first(client: Client) -> None:
    first = await start_run(client, scenario_ids=[1], replications=2, seed=1)
    second = await start_run(client, scenario_ids=[2], replications=2, seed=1)
    async with client.ws_connect("/ws/events") as ws:
        hello = json.loads((await ws.receive(timeout=10)).data)
    assert [r["run_id"] for r in hello["runs"]] == [second["run_id"], first["run_id"]]


async def test_run_sends_started_progress_to_total_then_completed(client: Client) -> None:
    async with events(client) as reader:
        run = await start_run(client, replications=200, seed=5)
        run_id = run["run_id"]
        seen = [e for e in await reader.until(*ENDINGS, run_id=run_id) if e.get("run_id")]
    types = [e["type"] for e in seen]
    assert types[0] == "run.started"
    assert types[-1] == "run.completed"
    progress = [e for e in seen if e["type"] == "run.progress"]
    assert types[1:-1] == ["run.progress"] * len(progress)
    assert progress[-1]["done"] == progress[-1]["total"] == 600
    dones = [e["done"] for e in progress]
    assert dones == sorted(dones)
    expected = await (await client.get(f"/api/results?run_id={run_id}")).json()
    assert seen[-1]["results"] == expected
    # Progress moments are running sums; the completed ones are recomputed exactly.
    last = progress[-1]["results"]
    assert [r["replications"] for r in last] == [r["replications"] for r in expected]
    assert [r["average_total_costs"] for r in last] == pytest.approx(
        [r["average_total_costs"] for r in expected], rel=1e-9
    )
    assert seen[-1]["run"]["status"] == "completed"


async def test_progress_is_at_most_ten_a_second_plus_the_final_one(client: Client) -> None:
    async with events(client) as reader:
        run = await start_run(client, scenario_ids=[1], replications=80, pace_s=0.004)
        await reader.until("run.started", run_id=run["run_id"])
        started = time.monotonic()
        seen = await reader.until(*ENDINGS, run_id=run["run_id"])
        elapsed = time.monotonic() - started
    progress = [e for e in seen if e["type"] == "run.progress"]
    # One per replication without the throttle: 80 here.
    assert 1 <= len(progress) <= elapsed * 10 + 2
    assert progress[-1]["done"] == 80


async def test_cancel_sends_run_cancelled_with_the_run(client: Client) -> None:
    async with events(client) as reader:
        run = await start_run(client, scenario_ids=[1], replications=1000, pace_s=0.05)
        await reader.until("run.started", run_id=run["run_id"])
        resp = await client.post(f"/api/simulations/{run['run_id']}/cancel")
        assert resp.status == 200
        ended = (await reader.until(*ENDINGS, run_id=run["run_id"]))[-1]
    assert ended["type"] == "run.cancelled"
    assert ended["run"]["status"] == "cancelled"


async def test_scenario_create_update_delete_each_send_scenario_changed(client: Client) -> None:
    async with events(client) as reader:
        resp = await client.post("/api/scenarios", json={"scenario_name": "夜勤", "params": {}})
        sid = (await resp.json())["scenario_id"]
        created = await reader.next()
        await client.patch(f"/api/scenarios/{sid}", json={"params": {"workers": 7}})
        updated = await reader.next()
        await client.delete(f"/api/scenarios/{sid}")
        deleted = await reader.next()
    assert created["type"] == updated["type"] == deleted["type"] == "scenario.changed"
    assert (created["action"], created["scenario"]["scenario_name"]) == ("created", "夜勤")
    assert (updated["action"], updated["scenario"]["params"]["workers"]) == ("updated", 7)
    assert (deleted["action"], deleted["scenario_id"], deleted["scenario"]) == (
        "deleted",
        sid,
        None,
    )


async def test_refused_scenario_sends_no_event(client: Client) -> None:
    async with events(client) as reader:
        bad = await client.post(
            "/api/scenarios", json={"scenario_name": "x", "params": {"workers": 0}}
        )
        assert bad.status == 422
        await client.post("/api/scenarios", json={"scenario_name": "ok"})
        event = await reader.next()
    assert (event["action"], event["scenario"]["scenario_name"]) == ("created", "ok")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        # An outside simulator stores rows: clients learn how many.
        (
            "/api/results",
            [
                {
                    "scenario_id": 1,
                    "replication": 1,
                    "total_labor_costs": 1,
                    "ontime_delivery_rate": 1,
                }
            ],
            "inserted",
        ),
        # notify-completion carries the aggregate list itself.
        ("/api/notify-completion", None, "results"),
    ],
)
async def test_ingest_and_notify_send_results_updated(
    client: Client, path: str, body: Any, field: str
) -> None:
    async with events(client) as reader:
        resp = await client.post(path, json=body)
        assert resp.status in (200, 201)
        event = await reader.next()
    assert event["type"] == "results.updated"
    assert field in event


async def test_event_sent_while_the_snapshot_is_read_follows_it(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = client.app
    assert app is not None
    database = app[DB]
    list_runs = database.list_runs

    async def list_runs_while_a_scenario_changes(limit: int = 1000) -> Any:
        app[EVENTS_HUB].broadcast_event("scenario.changed", {"action": "updated"})
        return await list_runs(limit=limit)

    monkeypatch.setattr(database, "list_runs", list_runs_while_a_scenario_changes)
    async with client.ws_connect("/ws/events") as ws:
        reader = EventReader(ws)
        hello = await reader.next()
        following = await reader.next(limit_s=5)
    assert hello["type"] == "hello"
    assert following["type"] == "scenario.changed"
