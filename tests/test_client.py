"""The Python client against a real service: runs, results, analytics, errors, tokens."""

from __future__ import annotations

import asyncio
import csv
import io
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from simsvc import sim
from simsvc.client import (
    ApiError,
    AsyncClient,
    Client,
    FieldError,
    RunFailed,
    ServiceUnreachable,
)

from .conftest import free_port
from .served import served
from .test_runs import ExplodingModel

TOKEN = "s3cret-token"


@pytest.fixture
def url() -> Iterator[str]:
    with served() as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url) as blocking:
        yield blocking


def test_run_wait_results_compare_select(client: Client) -> None:
    run = client.run(scenario_ids=[1, 2], replications=20, seed=1)
    assert run.status in ("queued", "running", "completed")
    info = run.wait(timeout=60)
    assert info["status"] == "completed"
    assert (info["done"], info["total"]) == (40, 40)
    rows = run.results()
    assert len(rows) == 40
    assert {(r["scenario_id"], r["replication"]) for r in rows} == {
        (s, r) for s in (1, 2) for r in range(1, 21)
    }
    comparison = run.compare(baseline=1)
    assert {(c["scenario_id"], c["kpi"]) for c in comparison["comparisons"]} >= {
        (2, "total_labor_costs"),
        (2, "ontime_delivery_rate"),
    }
    # A sixth picker costs more on every draw (common random numbers): a sure verdict.
    cost = next(c for c in comparison["comparisons"] if c["kpi"] == "total_labor_costs")
    assert cost["verdict"] == "worse"
    selection = run.select("ontime_delivery_rate", indifference=0.01)
    assert selection["subset"] == [2]
    aggregates = run.aggregates()
    assert [a["scenario_id"] for a in aggregates] == [1, 2]
    assert all(a["replications"] == 20 for a in aggregates)


def test_results_frame_has_metrics_and_scenario_names(client: Client) -> None:
    run = client.run(scenario_ids=[1, 3], replications=5, seed=2)
    run.wait(timeout=60)
    frame = run.results_frame()
    assert len(frame) == 10
    assert {"scenario_id", "scenario_name", "replication", "orders", "utilization"} <= set(
        frame.columns
    )
    names = dict(zip(frame["scenario_id"], frame["scenario_name"], strict=True))
    assert names == {1: "現状シナリオ", 3: "人員1名削減"}
    means = frame.groupby("scenario_id")["total_labor_costs"].mean()
    aggregates = {a["scenario_id"]: a["average_total_costs"] for a in run.aggregates()}
    assert means.to_dict() == pytest.approx(aggregates)


def test_results_frame_without_pandas_says_how_to_get_it(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = client.run(scenario_ids=[1], replications=2, seed=2)
    run.wait(timeout=60)
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install '\.\[pandas\]'"):
        run.results_frame()


def test_results_csv_is_the_services_csv(client: Client) -> None:
    run = client.run(scenario_ids=[2], replications=3, seed=4)
    run.wait(timeout=60)
    table = list(csv.DictReader(io.StringIO(run.results_csv())))
    assert [(int(r["replication"]), float(r["total_labor_costs"])) for r in table] == [
        (r["replication"], r["total_labor_costs"]) for r in run.results()
    ]


def test_progress_reaches_the_total(client: Client) -> None:
    seen: list[tuple[int, int | None]] = []
    run = client.run(scenario_ids=[1, 2, 3], replications=30, seed=5)
    run.wait(timeout=60, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (90, 90)
    dones = [done for done, _ in seen]
    assert dones == sorted(dones)


def test_progress_bar_draws_on_stderr(client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    run = client.run(scenario_ids=[1], replications=12, seed=5)
    run.wait(timeout=60, progress=True)
    drawn = capsys.readouterr().err
    assert f"run {run.run_id}" in drawn
    assert "12/12" in drawn


def test_wait_on_a_finished_run_answers_at_once(client: Client) -> None:
    run = client.run(scenario_ids=[1], replications=2, seed=6)
    run.wait(timeout=60)
    again = client.get_run(run.run_id)
    assert again.wait(timeout=5)["status"] == "completed"


def test_wait_times_out_then_cancel_keeps_the_run(client: Client) -> None:
    # One replication, then a minute of pacing: the run stays running.
    run = client.run(scenario_ids=[1], replications=2, seed=7, pace_s=60)
    with pytest.raises(TimeoutError, match=f"run {run.run_id} did not end within 0.3 s"):
        run.wait(timeout=0.3)
    assert run.cancel()["status"] == "cancelled"
    assert run.wait(timeout=5)["status"] == "cancelled"


def test_resume_and_extend_complete_the_run(client: Client) -> None:
    # Paced to take two seconds at least: the cancel lands long before the end.
    run = client.run(scenario_ids=[1], replications=100, seed=8, pace_s=0.02)
    assert run.cancel()["status"] == "cancelled"
    assert run.resume()["status"] == "queued"
    assert run.wait(timeout=60)["status"] == "completed"
    run.extend(3)
    assert run.wait(timeout=60)["replications"] == 103
    assert len(run.results()) == 103


def test_failed_run_raises_run_failed_with_the_reason() -> None:
    models = {**sim.load_models(), "exploding": ExplodingModel()}
    with served(models=models) as base, Client(base) as client:
        scenario = client.create_scenario("breaks", model="exploding")
        run = client.run(scenario_ids=[scenario["scenario_id"]], replications=20, seed=3)
        with pytest.raises(RunFailed, match="the model fell over") as caught:
            run.wait(timeout=60)
    assert caught.value.info["status"] == "failed"


# -- errors -----------------------------------------------------------------------------


def test_invalid_params_raise_api_error_with_field_errors(client: Client) -> None:
    with pytest.raises(ApiError) as caught:
        client.create_scenario("too few", {"workers": 0})
    error = caught.value
    assert error.status == 422
    assert error.errors
    assert any("workers" in e.field for e in error.errors)
    assert "workers" in str(error)
    assert [s["scenario_name"] for s in client.scenarios()] == [
        "現状シナリオ",
        "人員1名追加",
        "人員1名削減",
    ]


@pytest.mark.parametrize(
    ("call", "status"),
    [
        # an unknown run id
        (lambda c: c.run_info(999), 404),
        # a scenario name that is taken
        (lambda c: c.create_scenario("現状シナリオ"), 409),
        # a baseline outside the run is a bad query, reported on its field
        (lambda c: c.compare(c.run([1], 2, 1).run_id, baseline=3), 422),
    ],
)
def test_refusals_carry_status_and_detail(client: Client, call: Any, status: int) -> None:
    with pytest.raises(ApiError) as caught:
        call(client)
    assert caught.value.status == status
    assert caught.value.detail
    assert str(status) in str(caught.value)


def test_an_answer_that_is_not_problem_json_is_still_an_api_error() -> None:
    # A proxy in front of the service answers in HTML.
    error = ApiError.from_answer(
        502, "Bad Gateway", "<html><body><h1>502 Bad Gateway</h1></body></html>", "GET", "/x"
    )
    assert (error.status, error.errors) == (502, ())
    assert "502 Bad Gateway" in error.detail
    problem = '{"status": 422, "title": "Unprocessable Content", "detail": "bad", '
    problem += '"errors": [{"field": "seed", "message": "must be an integer"}]}'
    error = ApiError.from_answer(422, "x", problem, "POST", "/api/simulations")
    assert error.errors == (FieldError("seed", "must be an integer"),)


def test_unreachable_service_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url) as client, pytest.raises(ServiceUnreachable, match=url) as caught:
        client.health()
    assert "unreachable" in str(caught.value)
    assert isinstance(caught.value, ConnectionError)


# -- tokens -----------------------------------------------------------------------------


def test_token_is_sent_on_calls_and_on_the_event_stream() -> None:
    with served(token=TOKEN) as base:
        with Client(base) as anonymous:
            with pytest.raises(ApiError) as caught:
                anonymous.run(scenario_ids=[1], replications=2)
            assert caught.value.status == 401
            assert anonymous.runs() == []  # reads stay open, and nothing was started
        with Client(base, token=TOKEN) as client:
            run = client.run(scenario_ids=[1], replications=2, seed=1)
            assert run.wait(timeout=60)["status"] == "completed"
        with Client(base) as anonymous, pytest.raises(ApiError) as refused:
            anonymous.wait(run.run_id, timeout=60)
        assert refused.value.status == 401


# -- asyncio ----------------------------------------------------------------------------


async def test_async_client_runs_and_reads_results(url: str) -> None:
    async with AsyncClient(url) as client:
        run = await client.run(scenario_ids=[1, 2], replications=10, seed=9)
        info = await run.wait(timeout=60)
        assert info["status"] == "completed"
        rows = await run.results()
        assert len(rows) == 20
        comparison = await run.compare(baseline=1)
        assert comparison["baseline"] == 1
        frame = await run.results_frame()
        assert len(frame) == 20


async def test_blocking_client_works_where_an_event_loop_already_runs(url: str) -> None:
    # As in a notebook cell: the calling thread runs a loop, and the client blocks it.
    asyncio.get_running_loop()
    with Client(url) as client:
        run = client.run(scenario_ids=[1], replications=4, seed=10)
        assert run.wait(timeout=60)["status"] == "completed"
        assert len(run.results()) == 4


def test_same_seed_through_the_client_gives_the_same_rows(client: Client) -> None:
    first = client.run(scenario_ids=[1, 2], replications=5, seed=77)
    second = client.run(scenario_ids=[1, 2], replications=5, seed=77)
    first.wait(timeout=60)
    second.wait(timeout=60)
    assert first.results() == second.results()
