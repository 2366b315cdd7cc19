"""Start-up on a database that cannot or must not be used: one clear reason, nothing touched."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from simsvc import StartupError, db
from simsvc.web import Config, create_app

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
PROCESS_LIMIT_S = 30.0


def config_for(path: Path | str) -> Config:
    return Config(db_path=str(path), workers=1, executor="thread")


@contextlib.asynccontextmanager
async def serving(path: Path | str) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    client = TestClient(TestServer(create_app(config_for(path))))
    try:
        await client.start_server()
        yield client
    finally:
        await client.close()


async def refusal(path: Path | str) -> str:
    """The StartupError an app on `path` stops with."""
    with pytest.raises(StartupError) as refused:
        async with serving(path):
            pass
    reason = str(refused.value)
    assert "\n" not in reason
    return reason


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def has_wal(path: Path) -> bool:
    return Path(f"{path}-wal").exists()


def foreign_database(path: Path, application_id: int = 0) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('Ada')")
        conn.execute(f"PRAGMA application_id={application_id}")
        conn.commit()
    return path


async def simsvc_database(path: Path) -> Path:
    database = await db.Database.open(path, [("s", "warehouse", {"workers": 5})])
    await database.close()
    return path


# -- files that are not ours ---------------------------------------------------------


@pytest.mark.parametrize(
    "application_id",
    [
        0,  # an ordinary SQLite file of another program
        0x4D504B47,  # a file that declares another application (GeoPackage's id)
    ],
)
async def test_a_foreign_sqlite_file_is_refused_untouched(
    tmp_path: Path, application_id: int
) -> None:
    path = foreign_database(tmp_path / "crm.db", application_id)
    before = digest(path)
    reason = await refusal(path)
    assert "is not a simsvc database" in reason
    assert "customers" in reason
    assert digest(path) == before
    assert not has_wal(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"customers"}


async def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"shopping list: eggs, milk\n" * 100)
    before = digest(path)
    reason = await refusal(path)
    assert "is not a SQLite database" in reason
    assert digest(path) == before


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = await simsvc_database(tmp_path / "future.db")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version={db.SCHEMA_VERSION + 1}")
    assert "newer than this simsvc" in await refusal(path)


# -- our own files -------------------------------------------------------------------


async def test_a_new_database_is_stamped_as_simsvc(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    async with serving(path) as client:
        assert (await client.get("/api/scenarios")).status == 200
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA application_id").fetchone() == (db.APPLICATION_ID,)


async def test_a_database_made_before_application_ids_opens_and_is_stamped(
    tmp_path: Path,
) -> None:
    path = await simsvc_database(tmp_path / "old.db")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA application_id=0")
        conn.execute("INSERT INTO scenarios VALUES (99, 'kept', 'warehouse', '{}', 'x', 'x')")
        conn.commit()
    async with serving(path) as client:
        names = [s["scenario_name"] for s in await (await client.get("/api/scenarios")).json()]
    assert "kept" in names
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA application_id").fetchone() == (db.APPLICATION_ID,)


# -- files we cannot use -------------------------------------------------------------


async def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "simsvc.db"
    reason = await refusal(path)
    assert "does not exist" in reason
    assert str(path.parent) in reason
    assert not (tmp_path / "no").exists()


@pytest.fixture
def unwritable(tmp_path: Path) -> Iterator[Path]:
    """A simsvc database this process cannot write (chmod, or chattr +i under root)."""
    path = tmp_path / "readonly.db"
    asyncio.run(simsvc_database(path))
    path.chmod(0o444)
    immutable = False
    if os.access(path, os.W_OK) and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(path)], check=False).returncode == 0
    try:
        if not immutable and os.access(path, os.W_OK):
            pytest.skip("cannot make a file read-only for this user")
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o644)


async def test_a_read_only_database_is_named(unwritable: Path) -> None:
    reason = await refusal(unwritable)
    assert "read-only" in reason
    assert str(unwritable) in reason


async def test_a_database_locked_by_another_program_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 50)
    path = await simsvc_database(tmp_path / "locked.db")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        reason = await refusal(path)
        holder.execute("ROLLBACK")
    assert "locked by another program" in reason


# -- two services, one file ----------------------------------------------------------


async def test_a_second_service_on_the_same_database_refuses_and_leaves_the_first_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    async with serving(path) as first:
        resp = await first.post("/api/simulations", json={"replications": 1000, "pace_s": 0.05})
        run_id = (await resp.json())["run_id"]
        reason = await refusal(path)
        assert "in use by another simsvc" in reason
        assert f"pid {os.getpid()}" in reason
        run = await (await first.get(f"/api/simulations/{run_id}")).json()
        assert run["status"] in ("queued", "running")
        assert (await first.post(f"/api/simulations/{run_id}/cancel")).status == 200
    # The lock goes with the service: the file can be served again.
    async with serving(path) as again:
        assert (await again.get("/api/health")).status == 200


@pytest.mark.parametrize("case", ["foreign", "second"])
def test_the_command_exits_1_with_one_line(tmp_path: Path, case: str) -> None:
    path = foreign_database(tmp_path / "crm.db") if case == "foreign" else tmp_path / "s.db"
    first = None
    if case == "second":
        first = subprocess.Popen(
            [sys.executable, "-m", "simsvc", "--port", str(free_port()), "--db", str(path)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert first.stderr is not None
        # The first service logs its address once it listens (and holds the lock).
        for line in first.stderr:
            if b"listening" in line:
                break
    try:
        done = subprocess.run(
            [sys.executable, "-m", "simsvc", "--port", str(free_port()), "--db", str(path)],
            cwd=ROOT,
            capture_output=True,
            timeout=PROCESS_LIMIT_S,
            check=False,
        )
        if first is not None:
            assert first.poll() is None, "the first service must keep running"
    finally:
        if first is not None:
            first.terminate()
            first.wait(timeout=PROCESS_LIMIT_S)
            assert first.stderr is not None
            first.stderr.close()
    errors = [line for line in done.stderr.decode().splitlines() if line.startswith("simsvc: ")]
    assert done.returncode == 1, done.stderr.decode()
    assert len(errors) == 1, done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()
