"""The pooled aggregate list is a valid statistic, and a run keeps its own names and params."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import Any

from simsvc.db import Moments
from simsvc.stats import half_width

from .conftest import Client, start_run, wait_for_run
from .test_experiments import wait_for_progress

Json = dict[str, Any]


async def _get(client: Client, path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def _finished(client: Client, **body: Any) -> int:
    run_id = int((await start_run(client, **body))["run_id"])
    assert (await wait_for_run(client, run_id))["status"] == "completed"
    return run_id


def _entry(results: list[Json], scenario_id: int) -> Json:
    (entry,) = [e for e in results if e["scenario_id"] == scenario_id]
    return entry


async def test_runs_with_the_same_seed_count_each_draw_once(client: Client) -> None:
    first = await _finished(client, scenario_ids=[1], replications=20, seed=5)
    second = await _finished(client, scenario_ids=[1], replications=20, seed=5)
    longer = await _finished(client, scenario_ids=[1], replications=30, seed=5)
    one = _entry(await _get(client, f"/api/results?run_id={longer}"), 1)
    pooled = _entry(await _get(client, "/api/results"), 1)
    # The three runs share draws (5, 1..20); together they hold 30 distinct draws.
    assert pooled["replications"] == 30
    assert pooled["average_total_costs"] == one["average_total_costs"]
    assert pooled["total_costs_ci95"] == one["total_costs_ci95"]
    assert pooled["run_ids"] == [first, second, longer]


async def test_runs_with_different_seeds_are_pooled(client: Client) -> None:
    a = await _finished(client, scenario_ids=[1], replications=10, seed=1)
    b = await _finished(client, scenario_ids=[1], replications=15, seed=2)
    rows = [
        r["total_labor_costs"]
        for run_id in (a, b)
        for r in await _get(client, f"/api/simulations/{run_id}/results")
    ]
    pooled = _entry(await _get(client, "/api/results"), 1)
    assert pooled["replications"] == 25
    assert pooled["run_ids"] == [a, b]
    whole = Moments.of(rows)
    assert abs(pooled["average_total_costs"] - whole.mean) < 1e-9 * whole.mean
    assert abs(pooled["total_costs_ci95"] - (half_width(whole) or 0)) < 1e-9 * whole.mean


async def test_a_run_with_the_same_seed_still_running_with_holes_counts_each_draw_once(
    client: Client,
) -> None:
    # A cancelled run may hold any subset of its replications, and the finished run holds
    # only 1..12: no run holds every draw of the seed, so the pool falls back on rows.
    full = await _finished(client, scenario_ids=[1], replications=12, seed=9)
    answer = await start_run(client, scenario_ids=[1], replications=500, seed=9, pace_s=0.02)
    run_id = answer["run_id"]
    await wait_for_progress(client, run_id, at_least=20)
    await client.post(f"/api/simulations/{run_id}/cancel")
    stored = {r["replication"] for r in await _get(client, f"/api/simulations/{run_id}/results")}
    assert len(stored) >= 20
    pooled = _entry(await _get(client, "/api/results"), 1)
    assert pooled["replications"] == len(stored | set(range(1, 13)))
    assert pooled["run_ids"] == [full, run_id]


async def test_pooled_entry_covers_only_the_current_params(client: Client) -> None:
    old = await _finished(client, scenario_ids=[1], replications=10, seed=1)
    resp = await client.patch("/api/scenarios/1", json={"params": {"workers": 8}})
    assert resp.status == 200
    # No result with 8 workers yet: the scenario has no entry, rather than the old mixture.
    assert [e["scenario_id"] for e in await _get(client, "/api/results")] == []
    new = await _finished(client, scenario_ids=[1], replications=10, seed=2)
    pooled = _entry(await _get(client, "/api/results"), 1)
    only_new = _entry(await _get(client, f"/api/results?run_id={new}"), 1)
    assert pooled["replications"] == 10
    assert pooled["average_total_costs"] == only_new["average_total_costs"]
    assert pooled["run_ids"] == [new]
    assert pooled["excluded_run_ids"] == [old]
    assert pooled["params"]["workers"] == 8
    # Back to 5 workers: the old run is the current params again.
    await client.patch("/api/scenarios/1", json={"params": {"workers": 5}})
    assert _entry(await _get(client, "/api/results"), 1)["run_ids"] == [old]


def _ingest_row(replication: int, cost: float) -> Json:
    return {
        "scenario_id": 2,
        "replication": replication,
        "total_labor_costs": cost,
        "ontime_delivery_rate": 0.9,
    }


async def test_an_ingested_replication_sent_twice_is_refused_and_counted_once(
    client: Client,
) -> None:
    rows = [_ingest_row(r, 9000.0 + r) for r in (1, 2, 3)]
    assert (await client.post("/api/results", json=rows)).status == 201
    again = await client.post("/api/results", json=[_ingest_row(4, 1.0), _ingest_row(2, 5.0)])
    assert again.status == 409
    problem = await again.json()
    assert "replication 2" in problem["detail"]
    entry = _entry(await _get(client, "/api/results"), 2)
    assert entry["replications"] == 3
    assert entry["average_total_costs"] == 9002.0
    assert entry["ingested_replications"] == 3
    assert entry["run_ids"] == []


async def test_an_ingested_batch_naming_a_replication_twice_is_422(client: Client) -> None:
    resp = await client.post("/api/results", json=[_ingest_row(1, 1.0), _ingest_row(1, 2.0)])
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "[1].replication"
    assert await _get(client, "/api/results") == []


async def test_ingested_rows_follow_the_params_they_were_sent_under(client: Client) -> None:
    assert (await client.post("/api/results", json=[_ingest_row(1, 100.0)])).status == 201
    await client.patch("/api/scenarios/2", json={"params": {"workers": 9}})
    assert await _get(client, "/api/results") == []
    # Under the new params replication 1 is a new draw, not a duplicate.
    assert (await client.post("/api/results", json=[_ingest_row(1, 300.0)])).status == 201
    assert _entry(await _get(client, "/api/results"), 2)["average_total_costs"] == 300.0


async def test_a_run_keeps_the_names_it_ran_with_after_a_rename(client: Client) -> None:
    run_id = await _finished(client, scenario_ids=[1, 2], replications=3, seed=1)
    await client.patch(
        "/api/scenarios/1", json={"scenario_name": "改名後", "params": {"workers": 7}}
    )
    entry = _entry(await _get(client, f"/api/results?run_id={run_id}"), 1)
    assert entry["scenario_name"] == "現状シナリオ"
    assert entry["params"]["workers"] == 5
    run = await _get(client, f"/api/simulations/{run_id}")
    assert [e["scenario_name"] for e in run["results"]] == ["現状シナリオ", "人員1名追加"]
    rows = await _get(client, f"/api/simulations/{run_id}/results")
    assert {r["scenario_name"] for r in rows if r["scenario_id"] == 1} == {"現状シナリオ"}
    resp = await client.get(f"/api/simulations/{run_id}/results?format=csv")
    table = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [row["scenario_name"] for row in table[:3]] == ["現状シナリオ"] * 3
    assert list(table[0])[:2] == ["scenario_id", "scenario_name"]


async def test_run_events_keep_the_names_the_run_started_with(client: Client) -> None:
    async with client.ws_connect("/ws/events") as ws:
        assert (await ws.receive_json(timeout=30))["type"] == "hello"
        answer = await start_run(client, scenario_ids=[1], replications=20, seed=1, pace_s=0.05)
        renamed = await client.patch("/api/scenarios/1", json={"scenario_name": "改名後"})
        assert renamed.status == 200
        async with asyncio.timeout(30):
            async for msg in ws:
                event = json.loads(msg.data)
                if event.get("run_id") == answer["run_id"] and event["type"] == "run.completed":
                    break
    assert [e["scenario_name"] for e in event["results"]] == ["現状シナリオ"]


async def test_a_deleted_ingested_replication_can_be_sent_again(client: Client) -> None:
    assert (await client.post("/api/results", json=[_ingest_row(1, 100.0)])).status == 201
    await client.patch("/api/scenarios/2", json={"params": {"workers": 9}})
    rows = [_ingest_row(1, 300.0), _ingest_row(2, 500.0)]
    assert (await client.post("/api/results", json=rows)).status == 201
    deleted = await client.delete("/api/scenarios/2/ingested-results/2")
    assert deleted.status in (200, 204)
    # Only the rows sent under the current params are pooled, before and after the delete.
    assert _entry(await _get(client, "/api/results"), 2)["average_total_costs"] == 300.0
    assert (await client.post("/api/results", json=[_ingest_row(2, 700.0)])).status == 201
    entry = _entry(await _get(client, "/api/results"), 2)
    assert (entry["replications"], entry["average_total_costs"]) == (2, 500.0)
