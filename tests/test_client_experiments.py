"""Experiments through the client and the command line, against a real service."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simsvc.cli import main
from simsvc.client import ApiError, Client
from simsvc.client.commands import point_rows

from .served import served

SWEEP = {
    "kind": "sweep",
    "model": "warehouse",
    "seed": 7,
    "factors": {"workers": {"values": [4, 5, 6]}},
    "replications": 8,
}


@pytest.fixture
def client() -> Iterator[Client]:
    with served() as base, Client(base) as blocking:
        yield blocking


def test_sweep_waits_and_reads_points_and_rows(client: Client) -> None:
    experiment = client.sweep({"workers": {"values": [4, 5, 6]}}, replications=8, seed=7)
    seen: list[int] = []
    info = experiment.wait(timeout=60, progress=lambda done, total: seen.append(done))
    assert (info["status"], info["replications_used"]) == ("completed", 24)
    assert [p["params"]["workers"] for p in info["points"]] == [4, 5, 6]
    assert all(p["replications"] == 8 for p in info["points"])
    assert seen[-1] == 24
    rows = experiment.results()
    assert len(rows) == 24
    frame = experiment.results_frame()
    means = frame.groupby("workers")["total_labor_costs"].mean()
    points = {p["params"]["workers"]: p["means"]["total_labor_costs"] for p in info["points"]}
    assert means.to_dict() == pytest.approx(points)
    assert len(experiment.results_csv().splitlines()) == 25


def test_a_point_equals_a_plain_run_with_the_same_params_and_seed(client: Client) -> None:
    experiment = client.experiment(SWEEP)
    experiment.wait(timeout=60)
    run = client.run(scenario_ids=[2], replications=8, seed=7)  # scenario 2: six pickers
    run.wait(timeout=60)
    six = [r for r in experiment.results() if r["workers"] == 6]
    assert [r["total_labor_costs"] for r in six] == [r["total_labor_costs"] for r in run.results()]


def test_optimize_recommends_with_a_statement(client: Client) -> None:
    experiment = client.optimize(
        {"workers": {"min": 4, "max": 7, "step": 1}},
        objective={"kpi": "total_labor_costs", "direction": "min"},
        constraints=[{"kpi": "ontime_delivery_rate", "op": ">=", "value": 0.95}],
        indifference={"total_labor_costs": 100, "ontime_delivery_rate": 0.01},
        max_replications=20000,
        seed=1,
    )
    info = experiment.wait(timeout=120)
    assert info["status"] == "completed"
    recommendation = info["recommendation"]
    assert recommendation is not None
    assert recommendation["params"]["workers"] == 6
    assert recommendation["statement"]
    assert [e["experiment_id"] for e in client.experiments()] == [experiment.experiment_id]


def test_experiment_refusals_are_api_errors(client: Client) -> None:
    with pytest.raises(ApiError) as caught:
        client.sweep({"pickers": {"values": [1, 2]}}, replications=2)
    assert caught.value.status == 422
    assert any("pickers" in e.message or "pickers" in e.field for e in caught.value.errors)
    experiment = client.experiment(SWEEP)
    experiment.wait(timeout=60)
    with pytest.raises(ApiError) as conflict:
        experiment.cancel()
    assert conflict.value.status == 409
    with pytest.raises(ApiError) as missing:
        client.experiment_info(99)
    assert missing.value.status == 404


def test_cancel_then_resume_completes_the_sweep(client: Client) -> None:
    spec = {**SWEEP, "replications": 1000}
    experiment = client.experiment(spec)
    assert experiment.cancel()["status"] == "cancelled"
    experiment.resume()
    info = experiment.wait(timeout=120)
    assert (info["status"], info["replications_used"]) == ("completed", 3000)


def test_command_line_starts_a_sweep_and_prints_points(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps(SWEEP), encoding="utf-8")
    with served() as url:
        status = main(["experiment", "start", str(spec), "--url", url, "--format", "csv"])
        out, err = capsys.readouterr()
        assert status == 0, err
        points = list(csv.DictReader(io.StringIO(out)))
        assert [p["workers"] for p in points] == ["4", "5", "6"]
        assert {"replications", "total_labor_costs", "total_labor_costs_ci95"} <= set(points[0])
        assert "experiment 1 completed: 24 replications" in err
        assert main(["experiment", "results", "1", "--url", url, "--format", "csv"]) == 0
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert len(rows) == 24
        assert main(["experiment", "list", "--url", url, "--format", "json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(e["experiment_id"], e["status"]) for e in listed] == [(1, "completed")]


def test_point_rows_find_the_varied_params_when_the_answer_does_not_name_them() -> None:
    base = {"workers": 5, "shift_hours": 8}
    info: Any = {
        "points": [
            {
                "point_id": i + 1,
                "params": {**base, "workers": w},
                "replications": 3,
                "means": {"total_labor_costs": 9000.0 + w},
                "ci95": {"total_labor_costs": None},
                "feasible": None,
            }
            for i, w in enumerate([4, 5])
        ]
    }
    assert point_rows(info) == [
        {
            "point_id": i + 1,
            "workers": w,
            "replications": 3,
            "total_labor_costs": 9000.0 + w,
            "total_labor_costs_ci95": None,
            "feasible": None,
        }
        for i, w in enumerate([4, 5])
    ]
