"""Results from outside simulators: bounded values, answers that stay JSON, and removal."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from pytest_aiohttp import AiohttpClient

from simsvc import jsontext, sim
from simsvc.openapi import MAX_INGEST_MAGNITUDE
from simsvc.web import Config, create_app

from .conftest import Client, start_run, wait_for_run


def row(scenario_id: int, replication: int, cost: float, **metrics: Any) -> dict[str, Any]:
    return {
        "scenario_id": scenario_id,
        "replication": replication,
        "total_labor_costs": cost,
        "ontime_delivery_rate": 0.9,
        "metrics": metrics,
    }


def strict_json(text: str) -> Any:
    """Parse as a browser's JSON.parse would: NaN and Infinity are errors."""

    def refuse(word: str) -> None:
        raise AssertionError(f"{word} in an answer: not JSON")

    return json.loads(text, parse_constant=refuse)


async def ingest(client: Client, rows: list[dict[str, Any]], status: int = 201) -> Any:
    resp = await client.post("/api/results", json=rows)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def every_reader(client: Client) -> list[Any]:
    """What GET /api/results, a /ws/results broadcast and the /ws/events hello carry."""
    texts = [await (await client.get("/api/results")).text()]
    async with client.ws_connect("/ws/events") as events, client.ws_connect("/ws/results") as ws:
        texts.append((await events.receive(timeout=5)).data)
        assert (await client.post("/api/notify-completion")).status == 200
        texts.append((await ws.receive(timeout=5)).data)
    return [strict_json(t) for t in texts]


@pytest.mark.parametrize(
    "values",
    [
        [1.797e308, 0.0],  # the largest double, then zero: the mean's update overflows
        [1.797e308, 1.797e308],  # two in one body: math.fsum raised OverflowError (500)
        [1e300],  # far past any cost
    ],
)
async def test_values_past_the_bound_are_422_and_readers_stay_json(
    client: Client, values: list[float]
) -> None:
    body = [row(1, i + 1, v) for i, v in enumerate(values)]
    problem = await ingest(client, body, 422)
    assert "1000000000000000" in problem["errors"][0]["message"]
    results, hello, broadcast = await every_reader(client)
    assert results == broadcast == hello["results"] == []


async def test_values_at_the_bound_aggregate_without_overflow(client: Client) -> None:
    # 10^5 rows of the largest allowed magnitude, in both directions: every sum and
    # square of them stays far inside a double.
    body = [row(1, r, MAX_INGEST_MAGNITUDE, x=-MAX_INGEST_MAGNITUDE) for r in range(1, 3)]
    body += [row(1, 3, 0.0, x=MAX_INGEST_MAGNITUDE)]
    await ingest(client, body)
    results, hello, broadcast = await every_reader(client)
    assert results == broadcast == hello["results"]
    entry = results[0]
    assert entry["replications"] == 3
    assert entry["average_total_costs"] == pytest.approx(2 / 3 * MAX_INGEST_MAGNITUDE)
    assert entry["total_costs_std"] == pytest.approx(MAX_INGEST_MAGNITUDE / np.sqrt(3))
    assert entry["metrics"]["x"]["std"] is not None


class HugeModel(sim.Model):
    """Finite outputs near the largest double, as extreme params can give."""

    name = "huge"
    version = "1"

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return {
            "total_labor_costs": 1.7e308 * float(rng.integers(0, 2)),
            "ontime_delivery_rate": 0.5,
        }


async def test_statistics_that_overflow_go_out_as_null_never_infinity(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    models = {**sim.load_models(), "huge": HugeModel()}
    client = await aiohttp_client(create_app(config, models=models))
    resp = await client.post("/api/scenarios", json={"scenario_name": "huge", "model": "huge"})
    sid = (await resp.json())["scenario_id"]
    run = await start_run(client, scenario_ids=[sid], replications=20, seed=1)
    assert (await wait_for_run(client, run["run_id"]))["status"] == "completed"
    results, hello, broadcast = await every_reader(client)
    assert results == broadcast == hello["results"]
    entry = results[0]
    assert entry["replications"] == 20
    assert entry["total_costs_std"] is None  # it overflowed: unknown, not Infinity
    run_text = await (await client.get(f"/api/simulations/{run['run_id']}")).text()
    strict_json(run_text)


def test_json_text_turns_non_finite_floats_into_null() -> None:
    value = {"a": [1.0, float("inf"), {"b": float("nan")}], "c": (float("-inf"),), "d": "x"}
    assert json.loads(jsontext.dumps(value)) == {
        "a": [1.0, None, {"b": None}],
        "c": [None],
        "d": "x",
    }
    assert jsontext.dumps({"a": 1.5}) == json.dumps({"a": 1.5})


# -- removing ingested results -----------------------------------------------------------


async def aggregates(client: Client) -> dict[int, int]:
    """scenario_id -> replications of the pooled aggregate list."""
    entries = await (await client.get("/api/results")).json()
    return {e["scenario_id"]: e["replications"] for e in entries}


async def test_ingested_results_can_be_listed_and_removed(client: Client) -> None:
    await ingest(client, [row(1, r, 9000.0 + r) for r in (1, 2, 3)] + [row(2, 1, 8000.0)])
    run = await start_run(client, scenario_ids=[1], replications=2, seed=4)
    await wait_for_run(client, run["run_id"])
    assert await aggregates(client) == {1: 5, 2: 1}

    listed = await (await client.get("/api/scenarios/1/ingested-results")).json()
    assert [r["replication"] for r in listed] == [1, 2, 3]
    assert listed[1]["total_labor_costs"] == 9002.0

    one = await client.delete("/api/scenarios/1/ingested-results/2")
    assert one.status == 204
    assert await aggregates(client) == {1: 4, 2: 1}
    entry = (await (await client.get("/api/results")).json())[0]
    run_costs = [
        r["total_labor_costs"]
        for r in await (await client.get(f"/api/simulations/{run['run_id']}/results")).json()
    ]
    assert entry["average_total_costs"] == pytest.approx(np.mean([9001.0, 9003.0, *run_costs]))
    again = await client.delete("/api/scenarios/1/ingested-results/2")
    assert again.status == 404
    assert "no ingested replication 2" in (await again.json())["detail"]

    every = await client.delete("/api/scenarios/1/ingested-results")
    assert every.status == 200
    assert await every.json() == {"scenario_id": 1, "deleted": 2}
    # The run's own results stay; the other scenario's ingested ones too.
    assert await aggregates(client) == {1: 2, 2: 1}
    assert await (await client.get("/api/scenarios/1/ingested-results")).json() == []
    assert (await client.get(f"/api/simulations/{run['run_id']}/results")).status == 200


async def test_removing_ingested_results_frees_the_scenario_for_deletion(client: Client) -> None:
    await ingest(client, [row(3, 1, 1.0)])
    assert (await client.delete("/api/scenarios/3")).status == 409
    async with client.ws_connect("/ws/events") as events:
        await events.receive(timeout=5)  # hello
        resp = await client.delete("/api/scenarios/3/ingested-results")
        assert (await resp.json())["deleted"] == 1
        event = json.loads((await events.receive(timeout=5)).data)
    assert event["type"] == "results.updated"
    assert event["deleted"] == 1
    assert await aggregates(client) == {}
    assert (await client.delete("/api/scenarios/3")).status == 204


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/scenarios/99/ingested-results"),  # an unknown scenario
        ("DELETE", "/api/scenarios/99/ingested-results"),
        ("DELETE", "/api/scenarios/99/ingested-results/1"),
        ("DELETE", "/api/scenarios/1/ingested-results/1"),  # a replication never ingested
    ],
)
async def test_removing_what_does_not_exist_is_404(client: Client, method: str, path: str) -> None:
    resp = await client.request(method, path)
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"


async def test_an_empty_scenario_removes_nothing(client: Client) -> None:
    resp = await client.delete("/api/scenarios/2/ingested-results")
    assert await resp.json() == {"scenario_id": 2, "deleted": 0}
