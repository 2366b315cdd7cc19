"""`python -m simsvc run|results|experiment` against a real service: tables, CSV, JSON, errors."""

from __future__ import annotations

import argparse
import csv
import io
import json
import unicodedata
from collections.abc import Iterator

import pytest

from simsvc import __main__ as simsvc_main
from simsvc.cli import main
from simsvc.client import Client

from .conftest import free_port
from .served import served

Output = tuple[int, str, str]


@pytest.fixture
def url() -> Iterator[str]:
    with served() as base:
        yield base


def display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Output:
    """Exit status, stdout and stderr of one command."""
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_run_waits_and_prints_csv_statistics(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = cli(
        capsys, "run", "--url", url, "-s", "1,2", "-n", "20", "--seed", "1", "--format", "csv"
    )
    assert status == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["scenario_id"], r["scenario_name"], r["replications"]) for r in rows] == [
        ("1", "現状シナリオ", "20"),
        ("2", "人員1名追加", "20"),
    ]
    with Client(url) as client:
        expected = client.aggregates(1)
    assert [float(r["average_total_costs"]) for r in rows] == [
        a["average_total_costs"] for a in expected
    ]
    assert "run 1 completed: 40 of 40 done" in err


def test_table_aligns_japanese_names(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cli(capsys, "run", "--url", url, "-s", "1,2", "-n", "3", "--seed", "2")
    assert status == 0
    header, rule, *lines = out.splitlines()
    assert header.split() == [
        "scenario_id",
        "scenario_name",
        "replications",
        "average_total_costs",
        "total_costs_ci95",
        "average_delivery_rate",
        "delivery_rate_ci95",
    ]
    assert [line.split()[1] for line in lines] == ["現状シナリオ", "人員1名追加"]
    # Wide characters take two columns on a terminal; the last column (numbers, to the
    # right) ends under its header on every line only if they were counted so.
    assert {display_width(line) for line in out.splitlines()} == {display_width(rule)}


def test_results_rows_compare_and_select(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "run", "--url", url, "-s", "1,2", "-n", "10", "--seed", "3", "-q")[0] == 0
    status, out, _ = cli(capsys, "results", "1", "--url", url, "--rows", "--format", "csv")
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 20
    assert {"scenario_name", "orders", "utilization"} <= set(rows[0])
    status, out, _ = cli(capsys, "results", "1", "--url", url, "--compare", "1", "--format", "csv")
    comparisons = {r["kpi"]: r for r in csv.DictReader(io.StringIO(out))}
    assert comparisons["total_labor_costs"]["verdict"] == "worse"
    assert float(comparisons["total_labor_costs"]["paired_ci95_lo"]) > 0
    status, out, _ = cli(
        capsys, "results", "1", "--url", url, "--select", "ontime_delivery_rate", "--format", "json"
    )
    assert json.loads(out)["subset"] == [2]


def test_no_wait_prints_the_run_as_json(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = cli(
        capsys, "run", "--url", url, "-s", "3", "-n", "2", "--no-wait", "--format", "json"
    )
    assert status == 0
    run = json.loads(out)
    assert (run["run_id"], run["scenario_ids"], run["total"]) == (1, [3], 2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # a validation failure names the field and the limit
        (["run", "-s", "1", "-n", "0"], "422 Unprocessable Entity: the request body is not valid"),
        # an unknown run
        (["results", "42"], "404 Not Found: run 42 does not exist"),
        # rows need a run id
        (["results", "--rows"], "--rows, --compare and --select need a RUN_ID"),
    ],
)
def test_refusals_exit_1_with_one_line(
    url: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = cli(capsys, *argv, "--url", url)
    assert status == 1
    assert out == ""
    assert message in err
    assert len(err.splitlines()) == 1


def test_unreachable_service_exits_1_naming_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    status, _, err = cli(capsys, "results", "--url", url)
    assert status == 1
    assert f"unreachable at {url}" in err


def test_url_and_token_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with served(token="tok") as base:
        monkeypatch.setenv("SIMSVC_URL", base)
        status, _, err = cli(capsys, "run", "-s", "1", "-n", "2", "-q")
        assert status == 1
        assert "401 Unauthorized" in err
        monkeypatch.setenv("SIMSVC_TOKEN", "tok")
        status, out, _ = cli(capsys, "run", "-s", "1", "-n", "2", "-q", "--format", "csv")
    assert status == 0
    assert len(out.splitlines()) == 2


def test_a_run_that_outlasts_the_timeout_exits_1(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # One replication, then a minute of pacing.
    argv = ["run", "--url", url, "-s", "1", "-n", "2", "--pace", "60", "--timeout", "0.3"]
    status, out, err = cli(capsys, *argv)
    assert status == 1
    assert out == ""
    assert "run 1 did not end within 0.3 s" in err
    with Client(url) as client:
        assert client.cancel(1)["status"] == "cancelled"


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "9001", "--db", ":memory:"],  # no command: serve, as it always did
        ["serve", "--port", "9001", "--db", ":memory:"],  # the same, named
    ],
)
def test_serve_is_the_default_command(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    served_with: list[argparse.Namespace] = []
    monkeypatch.setattr(simsvc_main, "serve", served_with.append)
    assert simsvc_main.main(argv) == 0
    (args,) = served_with
    assert (args.port, args.db) == (9001, ":memory:")


def test_client_commands_do_not_start_the_service(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(simsvc_main, "serve", pytest.fail)
    url = f"http://127.0.0.1:{free_port()}"
    assert simsvc_main.main(["results", "--url", url]) == 1
    assert f"unreachable at {url}" in capsys.readouterr().err
