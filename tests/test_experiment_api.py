"""Experiments over a parameter space, through the HTTP API: sweeps and optimizations."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from pytest_aiohttp import AiohttpClient

from simsvc import db, experiment_handlers, scenario_handlers, sim
from simsvc.experiment_store import ExperimentRow, ExperimentStore
from simsvc.web import Config, create_app

from .conftest import Client, MakeClient, start_run, wait_for_run

ENDINGS = ("experiment.completed", "experiment.failed", "experiment.cancelled")
# The planner's question on the defaults: 5 pickers give about 85% on time, 6 about 97%.
STAFFING: dict[str, Any] = {
    "kind": "optimize",
    "model": "warehouse",
    "seed": 3,
    "factors": {"workers": {"min": 3, "max": 8, "step": 1}},
    "objective": {"kpi": "total_labor_costs", "direction": "min"},
    "constraints": [{"kpi": "ontime_delivery_rate", "op": ">=", "value": 0.95}],
    "confidence": 0.95,
    "indifference": {"total_labor_costs": 100, "ontime_delivery_rate": 0.01},
    "max_replications": 20000,
}
SWEEP: dict[str, Any] = {
    "kind": "sweep",
    "seed": 7,
    "base_params": {"shift_hours": 4},
    "factors": {
        "workers": {"values": [4, 5, 6]},
        "orders_per_hour": {"min": 40, "max": 52, "step": 6},
    },
    "design": "grid",
    "replications": 4,
}


async def start(client: Client, body: Mapping[str, Any]) -> dict[str, Any]:
    resp = await client.post("/api/experiments", json=body)
    assert resp.status == 202, await resp.text()
    answer: dict[str, Any] = await resp.json()
    assert resp.headers["Location"] == f"/api/experiments/{answer['experiment_id']}"
    return answer


async def run_to_end(
    client: Client, body: Mapping[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start an experiment and follow its events to the end; the final view and the events."""
    async with client.ws_connect("/ws/events") as ws:
        await ws.receive(timeout=10)  # hello
        eid = (await start(client, body))["experiment_id"]
        seen = await events_until_end(ws, eid)
    view = await (await client.get(f"/api/experiments/{eid}")).json()
    return view, seen


async def events_until_end(ws: Any, eid: int) -> list[dict[str, Any]]:
    seen = []
    async with asyncio.timeout(60):
        async for msg in ws:
            event = json.loads(msg.data)
            if event.get("experiment_id") == eid:
                seen.append(event)
                if event["type"] in ENDINGS:
                    return seen
    raise AssertionError(f"experiment {eid} did not end")


def _comparable(view: Mapping[str, Any]) -> dict[str, Any]:
    drop = ("experiment_id", "created_at", "started_at", "finished_at")
    return {k: v for k, v in view.items() if k not in drop}


# -- sweeps ---------------------------------------------------------------------------


async def test_grid_sweep_on_a_process_pool_equals_plain_runs_draw_for_draw(
    make_client: MakeClient,
) -> None:
    client = await make_client(executor="process")
    view, seen = await run_to_end(client, SWEEP)
    assert next(e["type"] for e in seen) == "experiment.started"
    assert seen[-1]["type"] == "experiment.completed"
    assert view["status"] == "completed"
    assert view["replications_used"] == 9 * 4
    grid = [(p["params"]["workers"], p["params"]["orders_per_hour"]) for p in view["points"]]
    assert grid == [(w, o) for w in (4, 5, 6) for o in (40, 46, 52)]  # first factor slowest
    assert all(p["params"]["shift_hours"] == 4 and p["replications"] == 4 for p in view["points"])
    assert all(p["feasible"] is None for p in view["points"])
    # point 5 (5 workers, 46 orders/h) against a plain run of the same params and seed
    resp = await client.post(
        "/api/scenarios",
        json={
            "scenario_name": "same",
            "params": {"workers": 5, "orders_per_hour": 46, "shift_hours": 4},
        },
    )
    sid = (await resp.json())["scenario_id"]
    run = await start_run(client, scenario_ids=[sid], replications=4, seed=7)
    await wait_for_run(client, run["run_id"])
    plain = await (await client.get(f"/api/simulations/{run['run_id']}/results")).json()
    rows = await (await client.get(f"/api/experiments/{view['experiment_id']}/results")).json()
    mine = [r for r in rows if r["point_id"] == 5]
    assert [r["total_labor_costs"] for r in mine] == [r["total_labor_costs"] for r in plain]
    assert [r["metrics"] for r in mine] == [r["metrics"] for r in plain]
    assert view["points"][4]["means"]["total_labor_costs"] == pytest.approx(
        np.mean([r["total_labor_costs"] for r in plain]), rel=1e-12
    )


async def test_results_are_rows_with_the_params_as_columns_in_json_and_csv(client: Client) -> None:
    view, _ = await run_to_end(client, SWEEP)
    path = f"/api/experiments/{view['experiment_id']}/results"
    rows = await (await client.get(path)).json()
    assert len(rows) == 36
    assert {"point_id", "replication", "seed", "workers", "orders_per_hour", "shift_hours"} <= set(
        rows[0]
    )
    resp = await client.get(path, params={"format": "csv"})
    assert resp.content_type == "text/csv"
    table = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(table) == 36
    assert table[0]["workers"] == str(rows[0]["workers"])
    assert float(table[0]["total_labor_costs"]) == rows[0]["total_labor_costs"]
    assert "mean_wait_minutes" in table[0]  # metrics are columns too


async def test_results_stream_in_batches_with_the_same_content_as_one_batch(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    view, _ = await run_to_end(client, SWEEP)
    path = f"/api/experiments/{view['experiment_id']}/results"
    encode = experiment_handlers._experiment_rows_text
    batches: list[int] = []

    def encode_spy(rows: list[ExperimentRow], *rest: Any) -> bytes:
        batches.append(len(rows))
        return encode(rows, *rest)

    monkeypatch.setattr(experiment_handlers, "_experiment_rows_text", encode_spy)
    answers: dict[int, tuple[str, str]] = {}
    for batch_rows in (1_000_000, 5, 1):  # one batch; several, the last one short; one a row
        monkeypatch.setattr(db, "EXPORT_BATCH_ROWS", batch_rows)
        batches.clear()
        text = await (await client.get(path)).text()
        table = await (await client.get(path, params={"format": "csv"})).text()
        answers[batch_rows] = (text, table)
        assert sum(batches) == 2 * 36
        assert max(batches) == min(batch_rows, 36), batches  # read and sent a batch at a time
    whole_json, whole_csv = answers[1_000_000]
    rows = json.loads(whole_json)
    assert len(rows) == 36
    assert [(r["replication"], r["point_id"]) for r in rows] == sorted(
        (r, p) for r in range(1, 5) for p in range(1, 10)
    )
    assert whole_csv.count("point_id,") == 1  # one header line
    assert len(list(csv.DictReader(io.StringIO(whole_csv)))) == 36
    for batch_rows in (5, 1):
        assert answers[batch_rows] == (whole_json, whole_csv), batch_rows


async def test_latin_hypercube_puts_one_point_in_each_stratum_and_repeats_with_the_seed(
    client: Client,
) -> None:
    body = {
        "kind": "sweep",
        "seed": 5,
        "factors": {"orders_per_hour": {"min": 30, "max": 60}, "workers": {"min": 3, "max": 12}},
        "design": "lhs",
        "points": 10,
        "replications": 1,
    }
    first, _ = await run_to_end(client, body)
    again, _ = await run_to_end(client, body)
    rates = [p["params"]["orders_per_hour"] for p in first["points"]]
    assert sorted(int((r - 30) / 3) for r in rates) == list(range(10))  # one per tenth
    assert all(isinstance(p["params"]["workers"], int) for p in first["points"])
    assert [p["params"] for p in again["points"]] == [p["params"] for p in first["points"]]


async def test_points_are_not_scenarios_but_one_can_be_saved_as_one(client: Client) -> None:
    before = await (await client.get("/api/scenarios")).json()
    view, _ = await run_to_end(client, SWEEP)
    assert await (await client.get("/api/scenarios")).json() == before
    eid = view["experiment_id"]
    resp = await client.post(
        f"/api/experiments/{eid}/points/5/scenario", json={"scenario_name": "5人・46件"}
    )
    assert resp.status == 201, await resp.text()
    scenario = await resp.json()
    assert scenario["params"] == view["points"][4]["params"]
    assert scenario["scenario_name"] == "5人・46件"
    missing = await client.post(
        f"/api/experiments/{eid}/points/99/scenario", json={"scenario_name": "x"}
    )
    assert missing.status == 404


async def test_a_saved_point_is_announced_located_and_counted_like_a_new_scenario(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    view, _ = await run_to_end(client, SWEEP)
    path = f"/api/experiments/{view['experiment_id']}/points/5/scenario"
    async with client.ws_connect("/ws/events") as ws:
        await ws.receive(timeout=10)  # hello
        resp = await client.post(path, json={"scenario_name": "五人"})
        assert resp.status == 201, await resp.text()
        event = json.loads((await ws.receive(timeout=10)).data)
    scenario = await resp.json()
    assert resp.headers["Location"] == f"/api/scenarios/{scenario['scenario_id']}"
    assert (event["type"], event["action"]) == ("scenario.changed", "created")
    assert event["scenario"] == scenario
    # The same limit as POST /api/scenarios: four stored now, so a fifth is refused.
    monkeypatch.setattr(scenario_handlers, "MAX_SCENARIOS", 4)
    refused = await client.post(path, json={"scenario_name": "六人"})
    assert refused.status == 409
    assert "limit of 4 scenarios" in (await refused.json())["detail"]
    assert len(await (await client.get("/api/scenarios")).json()) == 4


# -- optimization ---------------------------------------------------------------------


async def test_optimize_finds_the_cheapest_staffing_that_meets_the_service_level(
    make_client: MakeClient,
) -> None:
    client = await make_client(executor="process")
    view, seen = await run_to_end(client, STAFFING)
    assert view["stopped_because"] == "decided", view
    best = view["recommendation"]
    assert best["params"]["workers"] == 6
    assert best["means"]["ontime_delivery_rate"] > 0.95
    assert "With probability at least 0.95" in best["statement"]
    assert str(view["replications_used"]) in best["statement"]
    by_workers = {p["params"]["workers"]: p for p in view["points"]}
    assert [by_workers[w]["feasible"] for w in (3, 4, 5)] == [False, False, False]
    assert by_workers[6]["feasible"] is True
    assert view["replications_used"] == sum(p["replications"] for p in view["points"])
    progress = [e for e in seen if e["type"] == "experiment.progress"]
    assert progress
    assert progress[-1]["best"]["point_id"] == by_workers[6]["point_id"]
    assert view["pareto"]["ontime_delivery_rate"]


async def test_same_request_and_seed_give_the_same_answer_bit_for_bit(client: Client) -> None:
    first, _ = await run_to_end(client, STAFFING)
    second, _ = await run_to_end(client, STAFFING)
    assert _comparable(first) == _comparable(second)


async def test_a_budget_that_runs_out_recommends_without_a_guarantee(client: Client) -> None:
    view, _ = await run_to_end(client, {**STAFFING, "max_replications": 70})
    assert view["stopped_because"] == "max_replications"
    assert view["replications_used"] <= 70
    assert "no guarantee" in view["recommendation"]["statement"]


async def test_no_point_meets_the_constraints(client: Client) -> None:
    body = {**STAFFING, "factors": {"workers": {"values": [2, 3]}}}
    view, _ = await run_to_end(client, body)
    assert view["stopped_because"] == "decided"
    assert view["recommendation"]["point_id"] is None
    assert "no point" in view["recommendation"]["statement"]


class GatedWarehouse(sim.WarehouseModel):
    """The warehouse, except that calls past the first `free` wait for a gate."""

    name = "gated"
    free: ClassVar[int] = 60  # calls let through before the gate
    gate: ClassVar[threading.Event] = threading.Event()
    waiting: ClassVar[threading.Event] = threading.Event()
    calls: ClassVar[list[int]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        with self.lock:
            self.calls.append(1)
            gated = len(self.calls) > self.free
        if gated:
            self.waiting.set()
            if not self.gate.wait(timeout=30):
                raise TimeoutError("gate never opened")
        return super().simulate(params, rng)


SEARCH = {
    **STAFFING,
    "factors": {"workers": {"min": 3, "max": 12}},  # no step: a search
    "search": {"trials": 16, "candidates": 4},
}


@pytest.mark.parametrize(
    ("body", "free"),
    [
        # cancelled once the first stage (6 points x 10) was stored and judged
        (STAFFING, 60),
        # cancelled inside the search, after its first trials: a resume asks them again
        (SEARCH, 25),
    ],
)
async def test_cancelled_then_resumed_optimization_matches_an_uninterrupted_one(
    aiohttp_client: AiohttpClient, config: Config, body: dict[str, Any], free: int
) -> None:
    """The resumed procedure replays its decisions from the stored rows."""
    GatedWarehouse.gate.clear()
    GatedWarehouse.waiting.clear()
    GatedWarehouse.calls.clear()
    GatedWarehouse.free = free
    models = {"warehouse": sim.WAREHOUSE, "gated": GatedWarehouse()}
    client = await aiohttp_client(create_app(config, models=models))
    body = {**body, "model": "gated"}
    eid = (await start(client, body))["experiment_id"]
    assert await asyncio.to_thread(GatedWarehouse.waiting.wait, 30)
    cancelled = await (await client.post(f"/api/experiments/{eid}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    assert 0 < cancelled["replications_used"] <= free
    stopped = await (await client.get(f"/api/experiments/{eid}")).json()  # now cached
    assert stopped["replications_used"] == cancelled["replications_used"]
    GatedWarehouse.gate.set()
    async with client.ws_connect("/ws/events") as ws:
        await ws.receive(timeout=10)
        resp = await client.post(f"/api/experiments/{eid}/resume")
        assert resp.status == 202
        await events_until_end(ws, eid)
    resumed = await (await client.get(f"/api/experiments/{eid}")).json()
    assert resumed["stopped_because"] == "decided"
    reference, _ = await run_to_end(client, body)
    assert _comparable(resumed) == _comparable(reference)
    assert (await client.post(f"/api/experiments/{eid}/resume")).status == 409
    assert (await client.post(f"/api/experiments/{eid}/cancel")).status == 409


async def test_a_continuous_space_is_searched_then_cleaned_up_with_the_guarantee(
    client: Client,
) -> None:
    body = SEARCH
    view, _ = await run_to_end(client, body)
    assert view["stopped_because"] == "decided", view
    best = view["recommendation"]
    assert best["params"]["workers"] == 6
    assert "the guarantee covers those points" in best["statement"]
    evaluated = {p["params"]["workers"] for p in view["points"]}
    assert 6 in evaluated
    assert len(evaluated) == len(view["points"])
    compared = [p for p in view["points"] if p["feasible"] is not None]
    assert 1 <= len(compared) <= 4
    again, _ = await run_to_end(client, body)
    assert _comparable(again) == _comparable(view)


# -- bad input ------------------------------------------------------------------------

OPT = {k: v for k, v in STAFFING.items() if k != "factors"}
# (body, the field the answer must name)
BAD_EXPERIMENTS: list[tuple[dict[str, Any], str]] = [
    # a param the model does not have
    ({**SWEEP, "factors": {"pickers": {"values": [1, 2]}}}, "factors.pickers"),
    # an empty range: min above max
    ({**SWEEP, "factors": {"workers": {"min": 6, "max": 4, "step": 1}}}, "factors.workers"),
    # a step that is zero or negative
    ({**SWEEP, "factors": {"workers": {"min": 4, "max": 6, "step": 0}}}, "factors.workers.step"),
    ({**SWEEP, "factors": {"workers": {"min": 4, "max": 6, "step": -1}}}, "factors.workers.step"),
    # a value out of the param's range, and a fractional step for an integer param
    ({**SWEEP, "factors": {"workers": {"values": [5, 0]}}}, "factors.workers.values[1]"),
    ({**SWEEP, "factors": {"workers": {"min": 4, "max": 6, "step": 0.5}}}, "factors.workers.step"),
    # neither values nor a full range
    ({**SWEEP, "factors": {"workers": {"min": 4}}}, "factors.workers"),
    # a grid past the documented limit of points (the space is not built to find out)
    (
        {**SWEEP, "factors": {"hourly_wage": {"min": 0, "max": 1e9, "step": 1}}},
        "factors.hourly_wage.step",
    ),
    (
        {
            **SWEEP,
            "factors": {
                "workers": {"min": 1, "max": 1000, "step": 1},
                "orders_per_hour": {"min": 1, "max": 100, "step": 1},
            },
        },
        "factors",
    ),
    # total work past the limit: points x replications
    (
        {
            **SWEEP,
            "factors": {"workers": {"min": 1, "max": 1000, "step": 1}},
            "replications": 10000,
        },
        "replications",
    ),
    # a range without a step has no grid
    ({**SWEEP, "factors": {"orders_per_hour": {"min": 40, "max": 50}}}, "factors.orders_per_hour"),
    # a Latin hypercube needs its number of points
    ({**SWEEP, "design": "lhs"}, "points"),
    # an unknown base param
    ({**SWEEP, "base_params": {"pickers": 3}}, "base_params.pickers"),
    # an unknown model
    ({**SWEEP, "model": "factory"}, "model"),
    # an unknown KPI as objective, an unknown op, a constraint on an undeclared KPI
    ({**STAFFING, "objective": {"kpi": "profit"}}, "objective.kpi"),
    (
        {**STAFFING, "constraints": [{"kpi": "ontime_delivery_rate", "op": ">", "value": 0.9}]},
        "constraints[0].op",
    ),
    (
        {**STAFFING, "constraints": [{"kpi": "happiness", "op": ">=", "value": 0.9}]},
        "constraints[0].kpi",
    ),
    # an indifference amount missing, unknown, or not positive
    ({**STAFFING, "indifference": {"total_labor_costs": 100}}, "indifference.ontime_delivery_rate"),
    (
        {**STAFFING, "indifference": {**STAFFING["indifference"], "orders": 1}},
        "indifference.orders",
    ),
    (
        {**STAFFING, "indifference": {**STAFFING["indifference"], "total_labor_costs": 0}},
        "indifference.total_labor_costs",
    ),
    # a budget that cannot pay for the first stage (6 points x 10)
    ({**STAFFING, "max_replications": 59}, "max_replications"),
    # a space past the finite limit is searched: its budget must pay for every trial
    (
        {
            **OPT,
            "factors": {
                "workers": {"min": 1, "max": 1000, "step": 1},
                "shift_hours": {"values": [7, 8]},
            },
            "max_replications": 1000,
        },
        "max_replications",
    ),
    # search settings out of range
    ({**STAFFING, "search": {"trials": 0}}, "search.trials"),
    ({**STAFFING, "search": {"candidates": 1}}, "search.candidates"),
    # an optimization needs an objective; sweep fields do not apply to it, nor the reverse
    ({k: v for k, v in STAFFING.items() if k != "objective"}, "objective"),
    ({**STAFFING, "replications": 5}, "replications"),
    ({**SWEEP, "confidence": 0.9}, "confidence"),
    # confidence outside [0.5, 0.999]
    ({**STAFFING, "confidence": 1.0}, "confidence"),
    # an unknown kind
    ({**SWEEP, "kind": "search"}, "kind"),
    # one replication past the work bound: only the combination of two factors is too dear
    (
        {
            **SWEEP,
            "factors": {
                "orders_per_hour": {"values": [46, 100000]},
                "shift_hours": {"values": [8, 24]},
            },
        },
        "factors.orders_per_hour",
    ),
    # total work past the bound of a run: dear replications, many of them
    (
        {
            **SWEEP,
            "base_params": {"orders_per_hour": 50000},
            "factors": {"workers": {"min": 1, "max": 10, "step": 1}},
            "replications": 1000,
        },
        "replications",
    ),
    ({**STAFFING, "base_params": {"orders_per_hour": 50000}}, "max_replications"),
]


@pytest.mark.parametrize(("body", "field"), BAD_EXPERIMENTS)
async def test_bad_experiment_is_422_naming_the_field_and_stores_nothing(
    client: Client, body: dict[str, Any], field: str
) -> None:
    resp = await client.post("/api/experiments", json=body)
    assert resp.status == 422, await resp.text()
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert field in [e["field"] for e in problem["errors"]], problem
    assert await (await client.get("/api/experiments")).json() == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/experiments/9"),
        ("POST", "/api/experiments/9/cancel"),
        ("POST", "/api/experiments/9/resume"),
        ("GET", "/api/experiments/9/results"),
    ],
)
async def test_unknown_experiment_is_404(client: Client, method: str, path: str) -> None:
    resp = await client.request(method, path)
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"


async def test_concurrent_cancels_all_get_the_cancelled_experiment(client: Client) -> None:
    body = {**SWEEP, "factors": {"workers": {"min": 1, "max": 100, "step": 1}}, "replications": 200}
    async with client.ws_connect("/ws/events") as ws:
        await ws.receive(timeout=10)  # hello
        eid = (await start(client, body))["experiment_id"]
        answers = await asyncio.gather(
            *(client.post(f"/api/experiments/{eid}/cancel") for _ in range(3))
        )
        seen = await events_until_end(ws, eid)
    assert [e["type"] for e in seen if e["type"] in ENDINGS] == ["experiment.cancelled"]
    assert [a.status for a in answers] == [200, 200, 200]
    assert {(await a.json())["status"] for a in answers} == {"cancelled"}
    view = await (await client.get(f"/api/experiments/{eid}")).json()
    assert view["status"] == "cancelled"
    assert view["replications_used"] < 100 * 200


README = Path(__file__).resolve().parents[1] / "README.md"


async def test_the_readme_example_answers_as_the_readme_says(make_client: MakeClient) -> None:
    readme = await asyncio.to_thread(README.read_text, encoding="utf-8")
    section = readme.split("### Which settings? An experiment", 1)[1]
    body = json.loads(section.split("-d '", 1)[1].split("'", 1)[0])
    shown = section.split('"statement": "', 1)[1].split('"}', 1)[0]
    client = await make_client(executor="process")
    view, _ = await run_to_end(client, body)
    statement = view["recommendation"]["statement"]
    assert " ".join(statement.split()) == " ".join(shown.split())
    assert view["recommendation"]["params"]["workers"] == 6


async def test_an_experiment_left_running_by_a_crash_is_interrupted_and_resumes(
    make_client: MakeClient, tmp_path: Path
) -> None:
    path = tmp_path / "crashed.db"
    database = await db.Database.open(path)
    store = ExperimentStore(database)
    points = [{**sim.WAREHOUSE.defaults, "workers": w, "shift_hours": 4} for w in (4, 5)]
    request = {**SWEEP, "factors": {"workers": {"values": [4, 5]}}, "replications": 3}
    created = await store.create_experiment("sweep", "warehouse", "1.0.0", 7, request, points)
    await store.set_experiment_status(created["experiment_id"], "running")
    await database.close()
    client = await make_client(db_path=str(path))
    eid = created["experiment_id"]
    view = await (await client.get(f"/api/experiments/{eid}")).json()
    assert view["status"] == "interrupted"
    async with client.ws_connect("/ws/events") as ws:
        await ws.receive(timeout=10)
        assert (await client.post(f"/api/experiments/{eid}/resume")).status == 202
        await events_until_end(ws, eid)
    view = await (await client.get(f"/api/experiments/{eid}")).json()
    assert (view["status"], view["replications_used"]) == ("completed", 6)
