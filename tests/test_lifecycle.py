"""A run's life through the API: concurrent cancels, huge runs, and what one run may cost."""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import pytest

from simsvc import sim
from simsvc.resources import DB

from .conftest import Client, MakeClient, start_run, wait_for_run

HEAVY = {"orders_per_hour": 5000, "shift_hours": 24}  # 120,000 orders a replication


async def test_concurrent_cancels_all_answer_the_final_state_and_the_run_ends_cancelled(
    client: Client,
) -> None:
    for _ in range(6):
        run = await start_run(client, replications=1000, pace_s=0.01)
        url = f"/api/simulations/{run['run_id']}/cancel"
        answers = await asyncio.gather(*(client.post(url) for _ in range(4)))
        assert [a.status for a in answers] == [200] * 4
        assert {(await a.json())["status"] for a in answers} == {"cancelled"}
        stored = await (await client.get(f"/api/simulations/{run['run_id']}")).json()
        assert stored["status"] == "cancelled"


async def test_a_huge_run_is_accepted_without_building_its_work(make_client: MakeClient) -> None:
    client = await make_client(workers=1)
    database = client.app[DB]
    for i in range(997):  # with the three seeded ones, the limit of 1,000 stored scenarios
        await database.create_scenario(f"u{i}", "uniform", {})
    tracemalloc.start()
    try:
        resp = await client.post("/api/simulations", json={"replications": 100_000})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.status == 202
    run = (await resp.json())["run"]
    assert run["total"] == 100_000_000
    health = await client.get("/api/health")
    assert health.status == 200
    # 10^8 (scenario, replication) pairs would be gigabytes; the plan of 1,000 is not.
    assert peak < 30_000_000
    cancelled = await client.post(f"/api/simulations/{run['run_id']}/cancel")
    assert (await cancelled.json())["status"] == "cancelled"


async def _heavy_scenario(client: Client) -> int:
    resp = await client.post("/api/scenarios", json={"scenario_name": "heavy", "params": HEAVY})
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["scenario_id"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # 120,000 orders x 100,000 replications: far past the work of one run
        ({"replications": 100_000}, "replications"),
        # a precision run is bounded by the most it may run
        (
            {"precision": {"targets": {"total_labor_costs": {"half_width": 1}}}},
            "precision.max_replications",
        ),
    ],
)
async def test_a_run_past_the_work_limit_is_refused_naming_the_field(
    client: Client, body: dict[str, Any], field: str
) -> None:
    sid = await _heavy_scenario(client)
    if "precision" in body:
        body["precision"]["max_replications"] = 100_000
    resp = await client.post("/api/simulations", json={"scenario_ids": [sid], **body})
    assert resp.status == 422
    problem = await resp.json()
    assert problem["errors"][0]["field"] == field
    assert f"{sim.MAX_RUN_WORK:.3g}" in problem["errors"][0]["message"]
    assert (await (await client.get("/api/simulations")).json()) == []


async def test_extending_past_the_work_limit_is_refused(client: Client) -> None:
    sid = await _heavy_scenario(client)
    run = await start_run(client, scenario_ids=[sid], replications=1)
    await wait_for_run(client, run["run_id"])
    resp = await client.post(
        f"/api/simulations/{run['run_id']}/extend", json={"replications": 99_000}
    )
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "replications"
    after = await (await client.get(f"/api/simulations/{run['run_id']}")).json()
    assert after["replications"] == 1
    assert after["status"] == "completed"


@pytest.mark.parametrize(
    "params",
    [
        # the extreme: 2.4 million orders in one replication
        {"orders_per_hour": 100_000, "shift_hours": 24, "workers": 1000},
        # just past the bound: 1,000,000 orders plus the replication's own cost
        {"orders_per_hour": 50_000, "shift_hours": 20},
    ],
)
async def test_a_replication_past_the_size_bound_is_refused(
    client: Client, params: dict[str, Any]
) -> None:
    resp = await client.post("/api/scenarios", json={"scenario_name": "x", "params": params})
    assert resp.status == 422
    error = (await resp.json())["errors"][0]
    assert error["field"] == "params.orders_per_hour"
    assert f"{sim.MAX_REPLICATION_WORK:.3g} per replication" in error["message"]


async def test_a_stored_scenario_past_the_size_bound_cannot_run(client: Client) -> None:
    # As a database written before the bound existed could hold.
    scenario = await client.app[DB].create_scenario(
        "old",
        "warehouse",
        {**sim.WAREHOUSE.defaults, "orders_per_hour": 100_000, "shift_hours": 24},
    )
    body = {"scenario_ids": [1, scenario["scenario_id"]]}
    resp = await client.post("/api/simulations", json=body)
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "scenario_ids[1].orders_per_hour"


def test_a_long_pick_time_does_not_make_a_replication_dear() -> None:
    # Pick times move the clock, not the number of steps: the work is the orders.
    slow = {**sim.WAREHOUSE.defaults, "mean_pick_minutes": 1e6, "workers": 1000}
    assert sim.WAREHOUSE.work(slow) == sim.WAREHOUSE.work(sim.WAREHOUSE.defaults)
