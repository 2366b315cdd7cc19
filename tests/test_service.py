"""The real `python -m simsvc`: the seed's flow, start-up recovery and the command line."""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient
from scipy import stats as scipy_stats

from simsvc import db
from simsvc.__main__ import parse_args
from simsvc.web import Config, create_app

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
# The seed's own test program, kept in a `shared/` folder beside the checkout (or beside
# one of its parent folders); a clone on its own does not have it.
SEED_TEST_PROGRAM = next(
    (
        found
        for folder in ROOT.parents
        if (found := folder / "shared" / "peer" / "seed_fastapi" / "test_websocket.py").exists()
    ),
    ROOT.parent / "shared" / "peer" / "seed_fastapi" / "test_websocket.py",
)


async def start_service(*args: str) -> asyncio.subprocess.Process:
    """`python -m simsvc` with these flags, its stderr piped (where logging goes)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simsvc", *args, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )


@pytest.fixture
async def live_service(tmp_path: Path) -> AsyncIterator[str]:
    """A real `python -m simsvc` on a free port, ready once it logs that it is listening."""
    port = free_port()
    proc = await start_service(
        "--port", str(port), "--db", str(tmp_path / "live.db"), "--workers", "2"
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            async for line in proc.stderr:
                if b"listening on " in line:
                    assert f"dashboard: http://127.0.0.1:{port}/".encode() in line
                    break
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            await proc.wait()


async def test_seed_test_program_passes_against_python_m_simsvc(live_service: str) -> None:
    # The seed's own program lives beside this repository, not in it; a clone on its own
    # relies on test_seed_flow_against_python_m_simsvc below, which covers the same flow.
    if not SEED_TEST_PROGRAM.exists():
        pytest.skip(f"the seed's test program is not beside this clone ({SEED_TEST_PROGRAM})")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SEED_TEST_PROGRAM),
        env={**os.environ, "SIM_BASE": live_service},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        output, _ = await proc.communicate()
    assert proc.returncode == 0, output.decode()
    assert "テスト成功" in output.decode()


def expected_aggregate(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """One scenario's entry of the aggregate list, computed here from its rows."""
    costs = [r["total_labor_costs"] for r in rows]
    rates = [r["ontime_delivery_rate"] for r in rows]
    t = float(scipy_stats.t.ppf(0.975, len(rows) - 1))
    root_n = math.sqrt(len(rows))
    return {
        "scenario_id": rows[0]["scenario_id"],
        "scenario_name": name,
        "replications": len(rows),
        "average_total_costs": pytest.approx(statistics.fmean(costs), rel=1e-12),
        "average_delivery_rate": pytest.approx(statistics.fmean(rates), rel=1e-12),
        "total_costs_std": pytest.approx(statistics.stdev(costs), rel=1e-9),
        "delivery_rate_std": pytest.approx(statistics.stdev(rates), rel=1e-9),
        "total_costs_ci95": pytest.approx(t * statistics.stdev(costs) / root_n, rel=1e-9),
        "delivery_rate_ci95": pytest.approx(t * statistics.stdev(rates) / root_n, rel=1e-9),
    }


async def test_seed_flow_against_python_m_simsvc(live_service: str) -> None:
    """The seed's flow: a dashboard on /ws/results sees a plain run's aggregate list."""
    ws_url = live_service.replace("http", "ws", 1) + "/ws/results"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        resp = await session.post(f"{live_service}/api/simulations")
        assert resp.status == 202
        started = await resp.json()
        assert started["message"] == "Simulation started."
        assert resp.headers["Location"] == f"/api/simulations/{started['run_id']}"
        pushed = json.loads((await ws.receive(timeout=30)).data)
        rows = await (await session.get(f"{live_service}{resp.headers['Location']}/results")).json()
        notified = await session.post(f"{live_service}/api/notify-completion")
        assert await notified.json() == {"message": "Notification sent."}
        again = json.loads((await ws.receive(timeout=30)).data)
    names = ["現状シナリオ", "人員1名追加", "人員1名削減"]
    expected = [
        expected_aggregate([r for r in rows if r["scenario_id"] == sid], name)
        for sid, name in enumerate(names, start=1)
    ]
    assert [{k: entry[k] for k in expected[0]} for entry in pushed] == expected
    assert again == pushed


async def test_process_executor_completes_a_run_end_to_end(live_service: str) -> None:
    ws_url = live_service.replace("http", "ws", 1) + "/ws/results"
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        resp = await session.post(f"{live_service}/api/simulations", json={"replications": 50})
        assert resp.status == 202
        message = json.loads((await ws.receive(timeout=30)).data)
    assert [m["replications"] for m in message] == [50, 50, 50]


async def test_runs_left_running_by_a_crash_become_interrupted(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "crashed.db"
    database = await db.Database.open(path)
    run = await database.create_run([1], 10, 1, 0.0, {}, {})
    await database.mark_started(run["run_id"])
    await database.close()
    client = await aiohttp_client(create_app(Config(db_path=str(path), executor="thread")))
    stored = await (await client.get(f"/api/simulations/{run['run_id']}")).json()
    assert stored["status"] == "interrupted"
    assert stored["finished_at"] is not None


async def test_database_file_uses_wal_and_a_schema_version(tmp_path: Path) -> None:
    database = await db.Database.open(tmp_path / "x.db")
    try:
        assert await database.pragma("journal_mode") == "wal"
        assert await database.pragma("user_version") == db.SCHEMA_VERSION
        assert await database.pragma("foreign_keys") == 1
        assert await database.pragma("busy_timeout") > 0
    finally:
        await database.close()


def test_flags_default_to_loopback_and_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert parse_args([]).host == "127.0.0.1"
    assert parse_args([]).port == 8000
    monkeypatch.setenv("SIMSVC_PORT", "9123")
    monkeypatch.setenv("SIMSVC_EXECUTOR", "thread")
    monkeypatch.setenv("SIMSVC_DB", ":memory:")
    args = parse_args([])
    assert (args.port, args.executor, args.db) == (9123, "thread", ":memory:")
    assert parse_args(["--port", "9000"]).port == 9000
