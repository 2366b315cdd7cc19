"""The real `python -m simsvc`: command line, start-up recovery, and the seed's test program."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from pytest_aiohttp import AiohttpClient

from simsvc import db
from simsvc.__main__ import parse_args
from simsvc.web import Config, create_app

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
SEED_TEST_PROGRAM = ROOT.parent / "shared" / "peer" / "seed_fastapi" / "test_websocket.py"


@pytest.fixture
async def live_service(tmp_path: Path) -> AsyncIterator[str]:
    """A real `python -m simsvc` on a free port, ready once it logs that it is listening."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simsvc",
        "--port",
        str(port),
        "--db",
        str(tmp_path / "live.db"),
        "--workers",
        "2",
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            async for line in proc.stderr:
                if b"listening: " in line:
                    break
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            await proc.wait()


async def test_seed_test_program_passes_against_python_m_simsvc(live_service: str) -> None:
    if not SEED_TEST_PROGRAM.exists():
        pytest.fail(f"the seed's test program is missing at {SEED_TEST_PROGRAM}")
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
