"""Runs: start, progress to completion, cancel, results as JSON and CSV, reproducibility."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from pytest_aiohttp import AiohttpClient

from simsvc import sim
from simsvc.web import Config, create_app

from .conftest import Client, MakeClient, start_run, wait_for_run


async def test_post_without_body_runs_every_scenario_three_times(client: Client) -> None:
    async with client.ws_connect("/ws/results") as ws:
        resp = await client.post("/api/simulations")
        assert resp.status == 202
        body = await resp.json()
        assert body["message"] == "Simulation started."
        assert resp.headers["Location"] == f"/api/simulations/{body['run_id']}"
        assert body["run"]["status"] == "queued"
        assert body["run"]["total"] == 9
        message = json.loads((await ws.receive(timeout=30)).data)
    assert [row["scenario_id"] for row in message] == [1, 2, 3]
    assert [row["replications"] for row in message] == [3, 3, 3]
    assert message[0]["scenario_name"] == "現状シナリオ"
    run = await (await client.get(f"/api/simulations/{body['run_id']}")).json()
    assert run["status"] == "completed"
    assert (run["done"], run["total"]) == (9, 9)


async def test_results_rows_and_csv_agree(client: Client) -> None:
    run = await start_run(client, replications=4, seed=7)
    await wait_for_run(client, run["run_id"])
    rows = await (await client.get(f"/api/simulations/{run['run_id']}/results")).json()
    assert len(rows) == 12
    assert {(r["scenario_id"], r["replication"]) for r in rows} == {
        (s, r) for s in (1, 2, 3) for r in (1, 2, 3, 4)
    }
    assert all(r["seed"] == 7 and "utilization" in r["metrics"] for r in rows)
    resp = await client.get(
        f"/api/simulations/{run['run_id']}/results", headers={"Accept": "text/csv"}
    )
    assert resp.content_type == "text/csv"
    table = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(table) == 12
    assert float(table[0]["total_labor_costs"]) == rows[0]["total_labor_costs"]
    assert float(table[0]["utilization"]) == rows[0]["metrics"]["utilization"]
    same = await client.get(f"/api/simulations/{run['run_id']}/results?format=csv")
    assert await same.text() == await resp.text()


async def test_cancel_stops_a_paced_run_and_keeps_finished_replications(client: Client) -> None:
    run = await start_run(client, replications=1000, pace_s=0.05)
    resp = await client.post(f"/api/simulations/{run['run_id']}/cancel")
    assert resp.status == 200
    cancelled = await resp.json()
    assert cancelled["status"] == "cancelled"
    rows = await (await client.get(f"/api/simulations/{run['run_id']}/results")).json()
    assert len(rows) == cancelled["done"] < cancelled["total"]
    # Cancel is idempotent: asking again answers the same final state.
    again = await client.post(f"/api/simulations/{run['run_id']}/cancel")
    assert again.status == 200
    assert (await again.json())["status"] == "cancelled"


async def test_cancel_of_a_completed_run_is_a_conflict(client: Client) -> None:
    run = await start_run(client, replications=2)
    await wait_for_run(client, run["run_id"])
    resp = await client.post(f"/api/simulations/{run['run_id']}/cancel")
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"


@pytest.mark.parametrize("executor", ["thread", "process"])
async def test_same_seed_gives_identical_rows_whatever_the_worker_count(
    make_client: MakeClient, executor: str
) -> None:
    outputs = []
    for workers in (1, 2):
        client = await make_client(workers=workers, executor=executor)
        run = await start_run(client, replications=40, seed=2024)
        await wait_for_run(client, run["run_id"])
        outputs.append(await (await client.get(f"/api/simulations/{run['run_id']}/results")).json())
        await client.close()
    assert outputs[0] == outputs[1]


async def test_common_random_numbers_share_streams_across_scenarios(client: Client) -> None:
    run = await start_run(client, replications=5, seed=99)
    await wait_for_run(client, run["run_id"])
    rows = await (await client.get(f"/api/simulations/{run['run_id']}/results")).json()
    orders: dict[int, set[int]] = {}
    for row in rows:
        orders.setdefault(row["replication"], set()).add(row["metrics"]["orders"])
    # Same stream per replication: every scenario sees the same arrivals.
    assert all(len(counts) == 1 for counts in orders.values())


class ExplodingModel(sim.Model):
    """A model that breaks on replication 2, to show a run failing cleanly."""

    name = "exploding"
    version = "0"

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if rng.integers(0, 2**31) % 2 == 0:
            raise ValueError("the model fell over")
        return {"total_labor_costs": 1.0, "ontime_delivery_rate": 1.0}


async def test_model_failure_marks_run_failed_and_service_carries_on(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    models = {**sim.load_models(), "exploding": ExplodingModel()}
    client = await aiohttp_client(create_app(config, models=models))
    resp = await client.post("/api/scenarios", json={"scenario_name": "x", "model": "exploding"})
    assert resp.status == 201
    sid = (await resp.json())["scenario_id"]
    run = await start_run(client, scenario_ids=[sid], replications=20, seed=3)
    ended = await wait_for_run(client, run["run_id"])
    assert ended["status"] == "failed"
    assert "ValueError: the model fell over" in ended["error"]
    again = await start_run(client, scenario_ids=[1], replications=2, seed=3)
    assert (await wait_for_run(client, again["run_id"]))["status"] == "completed"


async def test_pace_waits_after_each_replication(client: Client) -> None:
    run = await start_run(client, scenario_ids=[1], replications=3, pace_s=0.25)
    progress = []
    async with client.ws_connect("/ws/events") as ws, asyncio.timeout(30):
        async for msg in ws:
            event = json.loads(msg.data)
            if event.get("run_id") != run["run_id"]:
                continue
            if event["type"] == "run.progress":
                progress.append(event["done"])
            if event["type"] == "run.completed":
                ended = event["run"]
                break
    started = datetime.fromisoformat(ended["started_at"].replace("Z", "+00:00"))
    finished = datetime.fromisoformat(ended["finished_at"].replace("Z", "+00:00"))
    # At least the two pauses between three replications; replications arrive one by one.
    assert (finished - started).total_seconds() >= 2 * 0.25
    assert sorted(set(progress)) == [1, 2, 3]
