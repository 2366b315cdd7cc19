"""The HTTP interface: the seed's flow, scenarios, ingestion, and the documented 4xx answers."""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from .conftest import Client, start_run, wait_for_run

PROBLEM = "application/problem+json"
JSON_TYPE = {"Content-Type": "application/json"}


async def problem_of(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == PROBLEM
    body: dict[str, Any] = await resp.json(content_type=PROBLEM)
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


# Three replications of scenario 1 and two of scenario 2, as an outside simulator sends them.
INGESTED = [
    {"scenario_id": 1, "replication": 1, "total_labor_costs": 9000.0, "ontime_delivery_rate": 0.8},
    {"scenario_id": 1, "replication": 2, "total_labor_costs": 9500.0, "ontime_delivery_rate": 0.9},
    {"scenario_id": 1, "replication": 3, "total_labor_costs": 10000.0, "ontime_delivery_rate": 1.0},
    {"scenario_id": 2, "replication": 1, "total_labor_costs": 11000.0, "ontime_delivery_rate": 0.9},
    {"scenario_id": 2, "replication": 2, "total_labor_costs": 12000.0, "ontime_delivery_rate": 1.0},
]
# By hand: scenario 1 has mean 9500, s = 500 (costs) and 0.1 (rates), t(0.975, 2) = 4.302653;
# scenario 2 has mean 11500, s = sqrt(2) * 500 and sqrt(2) * 0.05, t(0.975, 1) = 12.706205.
EXPECTED_AGGREGATES = [
    {
        "scenario_id": 1,
        "scenario_name": "現状シナリオ",
        "replications": 3,
        "average_total_costs": pytest.approx(9500.0),
        "average_delivery_rate": pytest.approx(0.9),
        "total_costs_std": pytest.approx(500.0),
        "delivery_rate_std": pytest.approx(0.1),
        "total_costs_ci95": pytest.approx(4.302653 * 500.0 / 3**0.5, rel=1e-6),
        "delivery_rate_ci95": pytest.approx(4.302653 * 0.1 / 3**0.5, rel=1e-6),
    },
    {
        "scenario_id": 2,
        "scenario_name": "人員1名追加",
        "replications": 2,
        "average_total_costs": pytest.approx(11500.0),
        "average_delivery_rate": pytest.approx(0.95),
        "total_costs_std": pytest.approx(2**0.5 * 500.0),
        "delivery_rate_std": pytest.approx(2**0.5 * 0.05),
        "total_costs_ci95": pytest.approx(12.706205 * 500.0, rel=1e-6),
        "delivery_rate_ci95": pytest.approx(12.706205 * 0.05, rel=1e-6),
    },
]


async def test_seed_flow_notify_completion_broadcasts_the_aggregate_list(client: Client) -> None:
    resp = await client.post("/api/results", json=INGESTED)
    assert resp.status == 201, await resp.text()
    async with client.ws_connect("/ws/results") as ws:
        resp = await client.post("/api/notify-completion")
        assert resp.status == 200
        assert await resp.json() == {"message": "Notification sent."}
        message = json.loads((await ws.receive(timeout=5)).data)
    assert [{key: entry[key] for key in EXPECTED_AGGREGATES[0]} for entry in message] == (
        EXPECTED_AGGREGATES
    )
    assert message == await (await client.get("/api/results")).json()


async def test_empty_database_gives_empty_results_and_seeded_scenarios(client: Client) -> None:
    assert await (await client.get("/api/results")).json() == []
    scenarios = await (await client.get("/api/scenarios")).json()
    assert [(s["scenario_id"], s["scenario_name"], s["params"]["workers"]) for s in scenarios] == [
        (1, "現状シナリオ", 5),
        (2, "人員1名追加", 6),
        (3, "人員1名削減", 4),
    ]
    assert all(s["model"] == "warehouse" for s in scenarios)
    assert scenarios[0]["params"]["hourly_wage"] == 225


async def test_health_answers_ok_with_version_and_executor(client: Client) -> None:
    assert await (await client.get("/api/health")).json() == {
        "status": "ok",
        "version": "0.1.0",
        "executor": {"executor": "thread", "state": "ready", "workers": 2, "threads": 2},
    }


async def test_aggregates_match_the_rows(client: Client) -> None:
    run = await start_run(client, replications=6, seed=11)
    await wait_for_run(client, run["run_id"])
    rows = await (await client.get(f"/api/simulations/{run['run_id']}/results")).json()
    aggregates = await (await client.get(f"/api/results?run_id={run['run_id']}")).json()
    for agg in aggregates:
        costs = [r["total_labor_costs"] for r in rows if r["scenario_id"] == agg["scenario_id"]]
        mean = sum(costs) / len(costs)
        std = (sum((c - mean) ** 2 for c in costs) / (len(costs) - 1)) ** 0.5
        assert agg["replications"] == 6
        assert agg["average_total_costs"] == pytest.approx(mean, rel=1e-12)
        assert agg["total_costs_std"] == pytest.approx(std, rel=1e-9)
        # t(0.975, 5) = 2.570581835636314
        assert agg["total_costs_ci95"] == pytest.approx(2.570581835636314 * std / 6**0.5, rel=1e-9)
    assert await (await client.get("/api/results")).json() == aggregates


async def test_single_replication_has_null_spread(client: Client) -> None:
    run = await start_run(client, replications=1, seed=5)
    await wait_for_run(client, run["run_id"])
    aggregates = await (await client.get("/api/results")).json()
    assert all(a["total_costs_std"] is None and a["delivery_rate_ci95"] is None for a in aggregates)


async def test_runs_are_listed_newest_first(client: Client) -> None:
    first = await start_run(client, replications=1, seed=1)
    second = await start_run(client, replications=1, seed=2)
    await wait_for_run(client, first["run_id"])
    await wait_for_run(client, second["run_id"])
    runs = await (await client.get("/api/simulations")).json()
    assert [r["run_id"] for r in runs] == [second["run_id"], first["run_id"]]
    keys = {"run_id", "status", "scenario_ids", "replications", "seed", "done", "total"}
    assert keys | {"created_at", "started_at", "finished_at", "error"} <= runs[0].keys()


# -- scenarios ------------------------------------------------------------------------


async def test_scenario_lifecycle_keeps_unicode_and_fills_defaults(client: Client) -> None:
    resp = await client.post(
        "/api/scenarios", json={"scenario_name": "夜勤シフト", "params": {"workers": 7}}
    )
    assert resp.status == 201
    created = await resp.json()
    assert resp.headers["Location"] == f"/api/scenarios/{created['scenario_id']}"
    assert created["scenario_name"] == "夜勤シフト"
    assert created["params"] == {
        "workers": 7,
        "shift_hours": 8,
        "hourly_wage": 225,
        "overtime_premium": 1.25,
        "orders_per_hour": 46,
        "mean_pick_minutes": 6,
        "due_minutes": 25,
    }
    url = f"/api/scenarios/{created['scenario_id']}"
    patched = await (await client.patch(url, json={"params": {"shift_hours": 10}})).json()
    assert patched["params"]["workers"] == 7
    assert patched["params"]["shift_hours"] == 10
    assert (await client.delete(url)).status == 204
    await problem_of(await client.get(url), 404)


async def test_editing_a_scenario_does_not_change_stored_runs(client: Client) -> None:
    run = await start_run(client, scenario_ids=[1], replications=2, seed=4)
    await wait_for_run(client, run["run_id"])
    await client.patch("/api/scenarios/1", json={"params": {"workers": 9}})
    stored = await (await client.get(f"/api/simulations/{run['run_id']}")).json()
    assert stored["scenarios"]["1"]["params"]["workers"] == 5


async def test_scenario_with_results_cannot_be_deleted(client: Client) -> None:
    run = await start_run(client, scenario_ids=[2], replications=1, seed=4)
    await wait_for_run(client, run["run_id"])
    await problem_of(await client.delete("/api/scenarios/2"), 409)
    assert (await client.get("/api/scenarios/2")).status == 200


async def test_uniform_model_scenario_runs(client: Client) -> None:
    resp = await client.post("/api/scenarios", json={"scenario_name": "u", "model": "uniform"})
    sid = (await resp.json())["scenario_id"]
    run = await start_run(client, scenario_ids=[sid], replications=50, seed=8)
    await wait_for_run(client, run["run_id"])
    rows = await (await client.get(f"/api/simulations/{run['run_id']}/results")).json()
    assert all(8000 <= r["total_labor_costs"] <= 12000 for r in rows)
    assert all(0.75 <= r["ontime_delivery_rate"] <= 0.95 for r in rows)


# -- ingestion ------------------------------------------------------------------------


def ingest_row(**overrides: Any) -> dict[str, Any]:
    return {
        "scenario_id": 1,
        "replication": 1,
        "total_labor_costs": 9000.0,
        "ontime_delivery_rate": 0.9,
        **overrides,
    }


async def test_ingested_rows_are_aggregated_and_broadcast(client: Client) -> None:
    rows = [ingest_row(replication=r, total_labor_costs=9000.0 + r) for r in (1, 2, 3)]
    resp = await client.post("/api/results", json=rows)
    assert resp.status == 201
    assert await resp.json() == {"inserted": 3}
    async with client.ws_connect("/ws/results") as ws:
        await client.post("/api/notify-completion")
        message = json.loads((await ws.receive(timeout=5)).data)
    assert message[0]["average_total_costs"] == pytest.approx(9002.0)
    assert message[0]["replications"] == 3


@pytest.mark.parametrize(
    ("bad_row", "field"),
    [
        # an unknown scenario: nothing may be stored
        (ingest_row(scenario_id=99), "[1].scenario_id"),
        # rates are shares
        (ingest_row(ontime_delivery_rate=1.5), "[1].ontime_delivery_rate"),
        # costs are never negative
        (ingest_row(total_labor_costs=-1), "[1].total_labor_costs"),
        # a string where a number belongs
        (ingest_row(total_labor_costs="9000"), "[1].total_labor_costs"),
        # a misspelt field must not be dropped silently
        ({**ingest_row(), "ontime_rate": 0.9}, "[1].ontime_rate"),
    ],
)
async def test_ingestion_is_all_or_nothing(client: Client, bad_row: Any, field: str) -> None:
    resp = await client.post("/api/results", json=[ingest_row(), bad_row])
    body = await problem_of(resp, 422)
    assert field in [e["field"] for e in body["errors"]]
    assert await (await client.get("/api/results")).json() == []


async def test_ingestion_refuses_non_finite_costs(client: Client) -> None:
    body = (
        '[{"scenario_id": 1, "replication": 1, "total_labor_costs": NaN,'
        ' "ontime_delivery_rate": 0.9}]'
    )
    resp = await client.post("/api/results", data=body, headers=JSON_TYPE)
    problem = await problem_of(resp, 422)
    assert problem["errors"][0]["field"] == "[0].total_labor_costs"
    assert await (await client.get("/api/results")).json() == []


# -- the contract's 4xx answers -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        # malformed JSON
        ("POST", "/api/simulations", b'{"replications": ', 400),
        # a JSON body that is not an object
        ("POST", "/api/simulations", b"[1, 2]", 422),
        # replications out of range, both ends
        ("POST", "/api/simulations", b'{"replications": 0}', 422),
        ("POST", "/api/simulations", b'{"replications": 100001}', 422),
        # a wrong type
        ("POST", "/api/simulations", b'{"replications": "3"}', 422),
        # pace_s out of range
        ("POST", "/api/simulations", b'{"pace_s": 61}', 422),
        # an unknown field
        ("POST", "/api/simulations", b'{"replication": 3}', 422),
        # a scenario that does not exist
        ("POST", "/api/simulations", b'{"scenario_ids": [1, 42]}', 422),
        # invalid UTF-8
        ("POST", "/api/scenarios", b'{"scenario_name": "\xff\xfe"}', 400),
        # a duplicate scenario name
        ("POST", "/api/scenarios", '{"scenario_name": "現状シナリオ"}'.encode(), 409),
        # an unknown model
        ("POST", "/api/scenarios", b'{"scenario_name": "a", "model": "nope"}', 422),
        # an unknown param
        ("POST", "/api/scenarios", b'{"scenario_name": "a", "params": {"pickers": 3}}', 422),
        # a param out of range
        ("POST", "/api/scenarios", b'{"scenario_name": "a", "params": {"workers": 0}}', 422),
        ("POST", "/api/scenarios", b'{"scenario_name": "a", "params": {"shift_hours": 25}}', 422),
        # a blank name
        ("POST", "/api/scenarios", b'{"scenario_name": "   "}', 422),
        # unknown ids and non-numeric ids
        ("GET", "/api/simulations/999", None, 404),
        ("GET", "/api/simulations/abc", None, 404),
        ("GET", "/api/scenarios/999", None, 404),
        ("PATCH", "/api/scenarios/999", b"{}", 404),
        ("DELETE", "/api/scenarios/999", None, 404),
        ("POST", "/api/simulations/999/cancel", None, 404),
        ("GET", "/api/simulations/999/results", None, 404),
        ("GET", "/api/results?run_id=999", None, 404),
        # a bad query parameter
        ("GET", "/api/results?run_id=x", None, 400),
        # an unknown route
        ("GET", "/api/nothing-here", None, 404),
        # a method the route does not have
        ("PUT", "/api/results", None, 405),
    ],
)
async def test_client_mistakes_get_problem_json(
    client: Client, method: str, path: str, body: bytes | None, status: int
) -> None:
    resp = await client.request(method, path, data=body, headers=JSON_TYPE)
    problem = await problem_of(resp, status)
    if status == 422:
        assert problem["errors"], problem
        assert all(e["field"] and e["message"] for e in problem["errors"])
    assert "Traceback" not in json.dumps(problem)


async def test_method_not_allowed_names_the_allowed_methods(client: Client) -> None:
    resp = await client.put("/api/results")
    await problem_of(resp, 405)
    assert set(resp.headers["Allow"].split(",")) >= {"GET", "POST"}


async def test_body_over_one_mebibyte_is_413(client: Client) -> None:
    big = json.dumps([ingest_row(replication=i) for i in range(15000)])
    assert len(big) > 1 << 20
    resp = await client.post("/api/results", data=io.BytesIO(big.encode()), headers=JSON_TYPE)
    await problem_of(resp, 413)


async def test_validation_names_the_field(client: Client) -> None:
    resp = await client.post(
        "/api/scenarios", json={"scenario_name": "a", "params": {"workers": 1.5}}
    )
    problem = await problem_of(resp, 422)
    assert [e["field"] for e in problem["errors"]] == ["params.workers"]


async def test_refused_requests_change_nothing(client: Client) -> None:
    before = await (await client.get("/api/scenarios")).json()
    await client.patch("/api/scenarios/1", json={"params": {"workers": -3}})
    await client.patch("/api/scenarios/1", json={"scenario_name": "人員1名追加"})
    await client.post("/api/scenarios", json={"scenario_name": "x", "params": {"due_minutes": 0}})
    assert await (await client.get("/api/scenarios")).json() == before
    assert await (await client.get("/api/simulations")).json() == []


# -- docs -----------------------------------------------------------------------------


class _Links(HTMLParser):
    """Every src and href of a page, and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("src", "href") and value]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def _is_local(url: str) -> bool:
    return url.startswith("data:") or (url.startswith("/") and not url.startswith("//"))


async def test_docs_page_is_served_offline(client: Client) -> None:
    page = _Links()
    page.feed(await (await client.get("/docs")).text())
    # The spec Swagger UI loads is named in its inline configuration.
    page.links += re.findall(r"""\burl:\s*["']([^"']+)""", "".join(page.scripts))
    assert any("swagger-ui-bundle" in link for link in page.links)
    assert [link for link in page.links if not _is_local(link)] == []
    for link in page.links:
        resp = await client.get(link)
        assert resp.status == 200, link
        if resp.content_type == "text/css":
            # What a stylesheet loads: its url(...) and @import.
            css = await resp.text()
            loaded = re.findall(r"""url\(\s*["']?([^"')]+)|@import\s+["']([^"']+)""", css)
            external = [u for pair in loaded for u in pair if u and "://" in u]
            assert external == [], link
