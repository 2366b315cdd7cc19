"""Experiments through the API: run until precise, compare, select, extend, resume, replay."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from pytest_aiohttp import AiohttpClient
from scipy import stats as scipy_stats

from simsvc import sim
from simsvc.web import Config, create_app

from .conftest import Client, MakeClient, start_run, wait_for_run

TERMINAL = ("run.completed", "run.failed", "run.cancelled")
Json = dict[str, Any]


async def follow(
    client: Client, method: str, path: str, body: Any = None, limit_s: float = 30.0
) -> tuple[Json, list[Json]]:
    """Make a request that starts a run (202), and collect that run's events until it ends."""
    async with client.ws_connect("/ws/events") as ws:
        assert (await ws.receive_json(timeout=limit_s))["type"] == "hello"
        resp = await client.request(method, path, json=body)
        assert resp.status == 202, await resp.text()
        answer: Json = await resp.json()
        events: list[Json] = []
        async with asyncio.timeout(limit_s):
            async for msg in ws:
                event = json.loads(msg.data)
                if event.get("run_id") == answer["run_id"]:
                    events.append(event)
                    if event["type"] in TERMINAL:
                        return answer, events
    raise AssertionError("the events socket closed before the run ended")


async def get(client: Client, path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def rows_and_aggregates(client: Client, run_id: int) -> tuple[Any, Any]:
    rows = await get(client, f"/api/simulations/{run_id}/results")
    return rows, await get(client, f"/api/results?run_id={run_id}")


async def assert_same_as_one_uninterrupted_run(client: Client, run_id: int, **body: Any) -> Json:
    """Start a fresh run with `body`; its rows and aggregates must equal run_id's, bit for bit."""
    whole = await start_run(client, **body)
    reference = await wait_for_run(client, whole["run_id"])
    rows, aggregates = await rows_and_aggregates(client, run_id)
    whole_rows, whole_aggregates = await rows_and_aggregates(client, whole["run_id"])
    assert rows == whole_rows
    # Equal but for the run each entry says it covers.
    assert [{**a, "run_ids": None} for a in aggregates] == [
        {**a, "run_ids": None} for a in whole_aggregates
    ]
    return reference


async def finished_run(client: Client, **body: Any) -> Json:
    """Start a run and wait until it has ended; returns the POST answer."""
    answer = await start_run(client, **body)
    await wait_for_run(client, answer["run_id"])
    return answer


async def wait_for_progress(client: Client, run_id: int, at_least: int) -> None:
    async with client.ws_connect("/ws/events") as ws, asyncio.timeout(30):
        async for msg in ws:
            event = json.loads(msg.data)
            is_progress = event["type"] == "run.progress" and event["run_id"] == run_id
            if is_progress and event["done"] >= at_least:
                return
    raise AssertionError(f"run {run_id} never reached {at_least} replications")


def assert_lifecycle(events: list[Json]) -> None:
    """What every run sends on /ws/events: started, progress ending at done == total, ended."""
    kinds = [e["type"] for e in events]
    assert kinds[0] == "run.started"
    assert kinds[-1] == "run.completed"
    progress = [e for e in events if e["type"] == "run.progress"]
    assert progress
    assert progress[-1]["done"] == progress[-1]["total"]


PRECISE = {
    "targets": {
        "ontime_delivery_rate": {"half_width": 0.03},
        "total_labor_costs": {"relative_half_width": 0.02},
    },
    "min_replications": 10,
    "max_replications": 2000,
}

# -- run until precise ----------------------------------------------------------------


async def test_precision_run_stops_once_every_scenario_meets_every_target(
    client: Client,
) -> None:
    answer, events = await follow(
        client, "POST", "/api/simulations", {"seed": 314, "precision": PRECISE}
    )
    assert answer["run"]["replications"] == 10
    assert_lifecycle(events)
    run = events[-1]["run"]
    assert run["stopped_because"] == "precision_met"
    n = run["replications"]
    assert n > 10  # ten replications were not enough, so at least one more batch ran
    assert run["total"] == run["done"] == 3 * n
    aggregates = await get(client, f"/api/results?run_id={run['run_id']}")
    assert [a["replications"] for a in aggregates] == [n, n, n]
    for a in aggregates:
        assert a["delivery_rate_ci95"] <= 0.03
        assert a["total_costs_ci95"] <= 0.02 * a["average_total_costs"]
    assert all(check["met"] for check in run["precision_report"])
    assert run["precision"]["targets"] == PRECISE["targets"]
    final = run["precision"]["final_interval"]
    assert final["approximate"] is True
    assert final["nominal_coverage"] == 0.95
    assert "sequential" in final["note"]


async def test_a_kpi_without_spread_never_meets_its_target(client: Client) -> None:
    # Almost no orders: every shift is empty and on time (rate 1.0 by convention), so the
    # on-time rate has no spread; a zero-width interval must not count as precise.
    created = await client.post(
        "/api/scenarios", json={"scenario_name": "閑散", "params": {"orders_per_hour": 1e-9}}
    )
    sid = (await created.json())["scenario_id"]
    precision = {
        "targets": {"ontime_delivery_rate": {"half_width": 0.01}},
        "max_replications": 40,
    }
    answer = await start_run(client, seed=1, scenario_ids=[sid], precision=precision)
    run = await wait_for_run(client, answer["run_id"])
    assert (run["stopped_because"], run["replications"]) == ("max_replications", 40)
    (check,) = run["precision_report"]
    assert (check["half_width"], check["met"]) == (0.0, False)


@pytest.mark.parametrize(
    ("bounds", "final"),
    [
        # Batches of 10, then capped at 12.
        ({"min_replications": 10, "max_replications": 12}, 12),
        # The first batch is the max: one batch.
        ({"max_replications": 10}, 10),
    ],
)
async def test_precision_run_stops_at_max_replications_when_targets_are_out_of_reach(
    client: Client, bounds: Json, final: int
) -> None:
    precision = {"targets": {"total_labor_costs": {"half_width": 1e-9}}, **bounds}
    answer = await start_run(client, seed=1, precision=precision)
    run = await wait_for_run(client, answer["run_id"])
    assert (run["status"], run["stopped_because"]) == ("completed", "max_replications")
    assert (run["replications"], run["done"], run["total"]) == (final, 3 * final, 3 * final)


async def test_replications_beside_precision_is_the_first_batch(client: Client) -> None:
    precision = {"targets": {"total_labor_costs": {"half_width": 1e-9}}, "max_replications": 30}
    answer = await start_run(client, seed=1, replications=17, precision=precision)
    assert answer["run"]["replications"] == 17
    run = await wait_for_run(client, answer["run_id"])
    assert (run["replications"], run["stopped_because"]) == (30, "max_replications")


async def test_precision_target_may_name_a_metric(client: Client) -> None:
    precision = {"targets": {"utilization": {"half_width": 0.02}}, "min_replications": 10}
    answer = await start_run(client, seed=2, scenario_ids=[1, 3], precision=precision)
    run = await wait_for_run(client, answer["run_id"])
    assert run["stopped_because"] == "precision_met"
    report = run["precision_report"]
    assert {(c["scenario_id"], c["kpi"]) for c in report} == {
        (1, "utilization"),
        (3, "utilization"),
    }


async def test_same_seed_precision_runs_agree_on_every_value(client: Client) -> None:
    first, second = [
        await wait_for_run(client, (await start_run(client, seed=77, precision=PRECISE))["run_id"])
        for _ in range(2)
    ]
    # The same draws give the same batches, the same stop, and the same numbers.
    assert first["replications"] == second["replications"] > PRECISE["min_replications"]
    assert first["stopped_because"] == second["stopped_because"] == "precision_met"
    assert first["precision_report"] == second["precision_report"]
    rows, aggregates = await rows_and_aggregates(client, first["run_id"])
    assert len(rows) == 3 * first["replications"]
    assert len({row["total_labor_costs"] for row in rows}) > first["replications"]
    second_rows, second_aggregates = await rows_and_aggregates(client, second["run_id"])
    assert rows == second_rows
    # Equal but for the run each entry says it covers.
    assert [{**a, "run_ids": None} for a in aggregates] == [
        {**a, "run_ids": None} for a in second_aggregates
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        # A KPI no model produces.
        ({"precision": {"targets": {"profit": {"half_width": 1}}}}, "precision.targets.profit"),
        # A negative target.
        (
            {"precision": {"targets": {"ontime_delivery_rate": {"half_width": -0.01}}}},
            "precision.targets.ontime_delivery_rate.half_width",
        ),
        # Zero can never be guaranteed by a noisy KPI.
        (
            {"precision": {"targets": {"total_labor_costs": {"relative_half_width": 0}}}},
            "precision.targets.total_labor_costs.relative_half_width",
        ),
        # A target that names no bound.
        (
            {"precision": {"targets": {"total_labor_costs": {}}}},
            "precision.targets.total_labor_costs",
        ),
        # min_replications above max_replications.
        (
            {
                "precision": {
                    "targets": {"total_labor_costs": {"half_width": 10}},
                    "min_replications": 50,
                    "max_replications": 10,
                }
            },
            "precision.min_replications",
        ),
        # One replication has no interval.
        (
            {"precision": {"targets": {"orders": {"half_width": 1}}, "min_replications": 1}},
            "precision.min_replications",
        ),
        # A first batch (given as replications) above the cap.
        (
            {
                "replications": 30,
                "precision": {"targets": {"orders": {"half_width": 1}}, "max_replications": 20},
            },
            "precision.min_replications",
        ),
        ({"precision": {}}, "precision.targets"),
        # A first batch under 10: its variance estimate would drive the stopping rule.
        (
            {"precision": {"targets": {"orders": {"half_width": 1}}, "min_replications": 5}},
            "precision.min_replications",
        ),
        # The same first batch given as replications beside precision.
        (
            {"replications": 3, "precision": {"targets": {"orders": {"half_width": 1}}}},
            "precision.min_replications",
        ),
        # A cap that leaves no room for a first batch of 10.
        (
            {"precision": {"targets": {"orders": {"half_width": 1}}, "max_replications": 4}},
            "precision.max_replications",
        ),
    ],
)
async def test_bad_precision_is_refused_naming_the_field_and_starts_nothing(
    client: Client, body: Json, field: str
) -> None:
    resp = await client.post("/api/simulations", json=body)
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert field in [e["field"] for e in problem["errors"]], problem
    assert await get(client, "/api/simulations") == []


# -- compare with a baseline ----------------------------------------------------------


async def test_compare_gives_paired_and_welch_intervals_and_verdicts(client: Client) -> None:
    answer = await start_run(client, seed=2025, replications=60)
    run_id = answer["run_id"]
    await wait_for_run(client, run_id)
    body = await get(client, f"/api/simulations/{run_id}/compare?baseline=1")
    assert (body["run_id"], body["baseline"]) == (run_id, 1)
    found = {(c["scenario_id"], c["kpi"]): c for c in body["comparisons"]}
    kpis = {"total_labor_costs", "ontime_delivery_rate", "overtime_hours", "mean_wait_minutes"}
    assert set(found) == {(s, k) for s in (2, 3) for k in kpis}
    rows = await get(client, f"/api/simulations/{run_id}/results")
    for (sid, kpi), c in found.items():
        x = np.array([_value(r, kpi) for r in rows if r["scenario_id"] == sid])
        y = np.array([_value(r, kpi) for r in rows if r["scenario_id"] == 1])
        paired = scipy_stats.ttest_rel(x, y).confidence_interval(0.95)
        welch = scipy_stats.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
        assert c["n"] == 60
        assert c["mean_difference"] == pytest.approx(float(np.mean(x - y)))
        assert c["paired_ci95"] == pytest.approx([paired.low, paired.high], rel=1e-9, abs=1e-12)
        assert c["welch_ci95"] == pytest.approx([welch.low, welch.high], rel=1e-9, abs=1e-12)
    # One more picker costs more and delivers more on time; one fewer, the reverse.
    verdicts = {key: c["verdict"] for key, c in found.items()}
    assert verdicts[(2, "total_labor_costs")] == "worse"
    assert verdicts[(2, "ontime_delivery_rate")] == "better"
    assert verdicts[(3, "total_labor_costs")] == "better"
    assert verdicts[(3, "ontime_delivery_rate")] == "worse"
    # Common random numbers make the paired interval the narrower one.
    assert found[(2, "total_labor_costs")]["paired_to_welch_width"] < 1


def _value(row: Json, kpi: str) -> float:
    return float(row[kpi] if kpi in row else row["metrics"][kpi])


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("baseline=9", "baseline"),  # a scenario outside the run
        ("", "baseline"),  # missing
        ("baseline=abc", "baseline"),  # not an integer
        ("baseline=1&kpi=x", "kpi"),  # not a parameter of compare
    ],
)
async def test_bad_compare_query_is_refused_naming_the_field(
    client: Client, query: str, field: str
) -> None:
    answer = await finished_run(client, seed=1, replications=2, scenario_ids=[1, 2])
    resp = await client.get(f"/api/simulations/{answer['run_id']}/compare?{query}")
    assert resp.status == 422
    problem = await resp.json()
    assert field in [e["field"] for e in problem["errors"]]
    assert problem["detail"] == "the query string is not valid"


async def test_compare_of_an_unknown_run_is_404(client: Client) -> None:
    resp = await client.get("/api/simulations/999/compare?baseline=1")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"


# -- select the best ------------------------------------------------------------------


class ShiftedModel(sim.Model):
    """Cost = 100 + offset + noise shared by all scenarios + the scenario's own noise."""

    name = "shifted"
    version = "1"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "offset": {"type": "number", "default": 0},
            "salt": {"type": "integer", "minimum": 0, "maximum": 100, "default": 0},
        },
    }

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        common = float(rng.normal(0.0, 3.0))
        # A different draw of the shared stream per scenario: noise of its own.
        own = float(rng.normal(0.0, 1.0, int(params["salt"]) + 1)[-1])
        cost = 100.0 + float(params["offset"]) + common + own
        return {"total_labor_costs": cost, "ontime_delivery_rate": 0.9}


async def shifted_client(aiohttp_client: AiohttpClient, config: Config) -> tuple[Client, list[int]]:
    models = {**sim.load_models(), "shifted": ShiftedModel()}
    client = await aiohttp_client(create_app(config, models=models))
    ids = []
    for salt, offset in enumerate((4.0, 0.0, 8.0, 1.5)):
        resp = await client.post(
            "/api/scenarios",
            json={
                "scenario_name": f"offset {offset}",
                "model": "shifted",
                "params": {"offset": offset, "salt": salt},
            },
        )
        ids.append((await resp.json())["scenario_id"])
    return client, ids


async def test_select_returns_a_subset_holding_the_known_best(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    client, ids = await shifted_client(aiohttp_client, config)
    answer = await finished_run(client, seed=11, replications=30, scenario_ids=ids)
    body = await get(
        client,
        f"/api/simulations/{answer['run_id']}/select"
        "?kpi=total_labor_costs&indifference=1&confidence=0.95",
    )
    best, clearly_worse = ids[1], {ids[0], ids[2]}  # offsets 0, and 4 and 8
    assert best in body["subset"]
    assert not clearly_worse & set(body["subset"])
    assert body["direction"] == "min"
    assert (body["confidence"], body["indifference"], body["n"]) == (0.95, 1, 30)
    assert "Nelson, Swann, Goldsman & Song (2001)" in body["procedure"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("kpi=profit", "kpi"),  # no model has it
        ("kpi=orders", "kpi"),  # a metric with no direction cannot be best
        ("indifference=1", "kpi"),  # missing
        ("kpi=total_labor_costs&confidence=1", "confidence"),  # certainty is not on offer
        ("kpi=total_labor_costs&confidence=high", "confidence"),
        ("kpi=total_labor_costs&indifference=-1", "indifference"),
    ],
)
async def test_bad_select_query_is_refused_naming_the_field(
    client: Client, query: str, field: str
) -> None:
    answer = await finished_run(client, seed=1, replications=3)
    resp = await client.get(f"/api/simulations/{answer['run_id']}/select?{query}")
    assert resp.status == 422
    assert field in [e["field"] for e in (await resp.json())["errors"]]


async def test_select_with_one_replication_is_a_conflict(client: Client) -> None:
    answer = await finished_run(client, seed=1, replications=1)
    resp = await client.get(f"/api/simulations/{answer['run_id']}/select?kpi=total_labor_costs")
    assert resp.status == 409


# -- extend and resume ----------------------------------------------------------------


async def test_extended_run_is_bit_identical_to_one_run_of_the_final_count(client: Client) -> None:
    first = await start_run(client, seed=11, replications=6)
    run_id = first["run_id"]
    await wait_for_run(client, run_id)
    answer, events = await follow(
        client, "POST", f"/api/simulations/{run_id}/extend", {"replications": 4}
    )
    assert (answer["status"], answer["replications"], answer["total"]) == ("queued", 10, 30)
    assert_lifecycle(events)
    assert events[-1]["run"]["extensions"] == [4]
    await assert_same_as_one_uninterrupted_run(client, run_id, seed=11, replications=10)


async def test_resumed_cancelled_precision_run_matches_an_uninterrupted_one(
    client: Client,
) -> None:
    precision = {
        "targets": {"ontime_delivery_rate": {"half_width": 0.04}},
        "min_replications": 10,
    }
    answer = await start_run(client, seed=21, pace_s=0.003, precision=precision)
    run_id = answer["run_id"]
    await wait_for_progress(client, run_id, at_least=20)
    cancelled = await (await client.post(f"/api/simulations/{run_id}/cancel")).json()
    assert (cancelled["status"], cancelled["stopped_because"]) == ("cancelled", None)
    resumed, events = await follow(client, "POST", f"/api/simulations/{run_id}/resume")
    assert resumed["status"] == "queued"
    assert_lifecycle(events)
    finished = events[-1]["run"]
    assert finished["stopped_because"] == "precision_met"
    assert finished["done"] > cancelled["done"]  # the loop carried on after the resume
    reference = await assert_same_as_one_uninterrupted_run(
        client, run_id, seed=21, precision=precision
    )
    assert finished["replications"] == reference["replications"]


def _snapshot(source: Path, target: Path) -> None:
    """What a crash leaves on disk: every committed transaction, nothing in flight."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


async def test_run_killed_halfway_resumes_to_the_uninterrupted_result(
    make_client: MakeClient, tmp_path: Path
) -> None:
    live, crashed = tmp_path / "live.db", tmp_path / "crashed.db"
    before = await make_client(db_path=str(live))
    answer = await start_run(before, seed=5, replications=40, pace_s=0.005)
    run_id = answer["run_id"]
    await wait_for_progress(before, run_id, at_least=10)
    await asyncio.to_thread(_snapshot, live, crashed)
    # The live service may finish; the snapshot keeps the run as a crash would leave it.
    await wait_for_run(before, run_id)
    await before.close()

    after = await make_client(db_path=str(crashed))
    run = await get(after, f"/api/simulations/{run_id}")
    assert run["status"] == "interrupted"
    assert 10 <= run["done"] < run["total"] == 120
    _, events = await follow(after, "POST", f"/api/simulations/{run_id}/resume")
    assert_lifecycle(events)
    assert (events[-1]["run"]["done"], events[-1]["run"]["total"]) == (120, 120)
    await assert_same_as_one_uninterrupted_run(after, run_id, seed=5, replications=40)


async def test_extend_and_resume_refuse_a_running_run_and_change_nothing(
    client: Client,
) -> None:
    answer = await start_run(client, seed=3, replications=1000, pace_s=0.05)
    run_id = answer["run_id"]
    before = await get(client, f"/api/simulations/{run_id}")
    extend = await client.post(f"/api/simulations/{run_id}/extend", json={"replications": 5})
    resume = await client.post(f"/api/simulations/{run_id}/resume")
    assert (extend.status, resume.status) == (409, 409)
    after = await get(client, f"/api/simulations/{run_id}")
    assert (after["replications"], after["total"], after["status"]) == (1000, 3000, "running")
    assert "extensions" not in after
    assert before["replications"] == 1000
    await client.post(f"/api/simulations/{run_id}/cancel")


async def test_resume_refuses_a_completed_run_and_changes_nothing(client: Client) -> None:
    answer = await finished_run(client, seed=3, replications=2)
    before = await get(client, f"/api/simulations/{answer['run_id']}")
    resp = await client.post(f"/api/simulations/{answer['run_id']}/resume")
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"
    assert await get(client, f"/api/simulations/{answer['run_id']}") == before


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"replications": 0}, 422),  # nothing to add
        ({}, 422),  # how many is required
        ({"replications": 100_000}, 422),  # past the limit once added to the 2 there
        ({"replications": "5"}, 422),
    ],
)
async def test_bad_extend_is_refused_and_changes_nothing(
    client: Client, body: Json, status: int
) -> None:
    answer = await finished_run(client, seed=3, replications=2)
    resp = await client.post(f"/api/simulations/{answer['run_id']}/extend", json=body)
    assert resp.status == status
    assert "replications" in [e["field"] for e in (await resp.json())["errors"]]
    run = await get(client, f"/api/simulations/{answer['run_id']}")
    assert (run["replications"], run["status"], run["done"]) == (2, "completed", 6)


async def test_two_concurrent_extends_start_the_run_once(client: Client) -> None:
    answer = await finished_run(client, seed=3, replications=2)
    path = f"/api/simulations/{answer['run_id']}/extend"
    responses = await asyncio.gather(
        client.post(path, json={"replications": 3}), client.post(path, json={"replications": 3})
    )
    assert sorted(r.status for r in responses) == [202, 409]
    run = await wait_for_run(client, answer["run_id"])
    assert (run["replications"], run["done"], run["extensions"]) == (5, 15, [3])


class ShiftedModelV2(ShiftedModel):
    version = "2"


async def test_a_changed_model_version_refuses_extend_and_replay(
    aiohttp_client: AiohttpClient, config: Config, tmp_path: Path
) -> None:
    shared = replace(config, db_path=str(tmp_path / "runs.db"))
    client, ids = await shifted_client(aiohttp_client, shared)
    answer = await finished_run(client, seed=1, replications=2, scenario_ids=ids[:2])
    await client.close()
    upgraded = await aiohttp_client(
        create_app(shared, models={**sim.load_models(), "shifted": ShiftedModelV2()})
    )
    path = f"/api/simulations/{answer['run_id']}"
    before = await get(upgraded, path)
    extend = await upgraded.post(f"{path}/extend", json={"replications": 1})
    replay = await upgraded.get(f"{path}/replications/{ids[0]}/1")
    assert (extend.status, replay.status) == (409, 409)
    assert "shifted 1" in (await extend.json())["detail"]
    assert await get(upgraded, path) == before


async def test_extend_or_resume_of_an_unknown_run_is_404(client: Client) -> None:
    extend = await client.post("/api/simulations/42/extend", json={"replications": 1})
    resume = await client.post("/api/simulations/42/resume")
    assert (extend.status, resume.status) == (404, 404)


# -- manifest and replay --------------------------------------------------------------


async def test_manifest_is_enough_to_recompute_a_replication_with_the_model_alone(
    client: Client,
) -> None:
    answer = await finished_run(client, seed=8, replications=3)
    run = await get(client, f"/api/simulations/{answer['run_id']}")
    manifest = run["manifest"]
    assert manifest["models"] == [{"name": "warehouse", "version": "1.0.0"}]
    assert manifest["seed"] == 8
    assert "default_rng([seed, replication])" in manifest["seed_scheme"]
    assert manifest["environment"]["numpy"] == np.__version__
    row = (await get(client, f"/api/simulations/{answer['run_id']}/results"))[4]
    params = manifest["scenarios"][str(row["scenario_id"])]["params"]
    again = sim.WAREHOUSE.simulate(params, np.random.default_rng([8, row["replication"]]))
    assert again["total_labor_costs"] == row["total_labor_costs"]
    assert again["utilization"] == row["metrics"]["utilization"]


async def test_replay_recomputes_a_replication_and_confirms_the_stored_row(
    client: Client,
) -> None:
    answer = await finished_run(client, seed=8, replications=3)
    body = await get(client, f"/api/simulations/{answer['run_id']}/replications/2/3")
    assert (body["matches"], body["differences"]) == (True, [])
    assert body["stored"] == body["recomputed"]
    assert (body["scenario_id"], body["replication"], body["params"]["workers"]) == (2, 3, 6)


class DriftingModel(sim.Model):
    """Breaks the model contract on purpose: each call returns something new."""

    name = "drifting"
    version = "1"

    def __init__(self) -> None:
        self._calls = itertools.count()

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return {
            "total_labor_costs": float(rng.uniform(0, 100)) + next(self._calls),
            "ontime_delivery_rate": 0.5,
            "note": "steady",
        }


async def test_replay_reports_a_model_that_no_longer_reproduces_its_rows(
    aiohttp_client: AiohttpClient, config: Config
) -> None:
    client = await aiohttp_client(
        create_app(config, models={**sim.load_models(), "drifting": DriftingModel()})
    )
    resp = await client.post("/api/scenarios", json={"scenario_name": "d", "model": "drifting"})
    sid = (await resp.json())["scenario_id"]
    answer = await finished_run(client, seed=1, replications=2, scenario_ids=[sid])
    body = await get(client, f"/api/simulations/{answer['run_id']}/replications/{sid}/1")
    assert (body["matches"], body["differences"]) == (False, ["total_labor_costs"])


@pytest.mark.parametrize(
    "path",
    [
        "replications/1/4",  # past the run's count
        "replications/1/0",  # replications count from 1
        "replications/7/1",  # a scenario outside the run
    ],
)
async def test_replay_outside_the_run_is_404(client: Client, path: str) -> None:
    answer = await finished_run(client, seed=1, replications=3, scenario_ids=[1, 2])
    resp = await client.get(f"/api/simulations/{answer['run_id']}/{path}")
    assert resp.status == 404


async def test_run_view_carries_every_kpi_and_metric_aggregated(client: Client) -> None:
    answer = await finished_run(client, seed=4, replications=5)
    run = await get(client, f"/api/simulations/{answer['run_id']}")
    rows = await get(client, f"/api/simulations/{answer['run_id']}/results")
    first = run["results"][0]
    utilization = [r["metrics"]["utilization"] for r in rows if r["scenario_id"] == 1]
    summary = first["metrics"]["utilization"]
    assert summary["n"] == 5
    assert summary["mean"] == pytest.approx(float(np.mean(utilization)))
    assert summary["std"] == pytest.approx(float(np.std(utilization, ddof=1)))
    assert set(first["metrics"]) >= {"total_labor_costs", "orders", "overtime_hours"}


async def test_openapi_documents_every_analytics_route_and_body(client: Client) -> None:
    spec = await get(client, "/openapi.json")
    paths = spec["paths"]
    for tail in ("compare", "select", "extend", "resume"):
        assert f"/api/simulations/{{run_id}}/{tail}" in paths
    assert "/api/simulations/{run_id}/replications/{scenario_id}/{replication}" in paths
    schemas = spec["components"]["schemas"]
    assert schemas["RunRequest"]["properties"]["precision"] == schemas["Precision"]
    assert schemas["ExtendRequest"]["required"] == ["replications"]
    select = paths["/api/simulations/{run_id}/select"]["get"]["parameters"]
    assert {p["name"] for p in select} == {"kpi", "indifference", "confidence"}
