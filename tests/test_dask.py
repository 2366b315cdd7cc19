"""Dask distributed as an executor: real clusters, the same rows as the process pool."""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from distributed import LocalCluster

import simsvc
from simsvc import StartupError
from simsvc.__main__ import executor_name
from simsvc.backends import ClusterTimeouts
from simsvc.dask_backend import DaskBackend
from simsvc.exports import CSV_FIXED
from simsvc.resources import BACKEND
from simsvc.web import Config, create_app

from .conftest import MakeClient, free_port, start_run, wait_for_run

SEED = 31337


async def _rows_of_a_run(make_client: MakeClient, executor: str) -> list[dict[str, Any]]:
    """Run every scenario x 12 replications on `executor` and return the stored rows."""
    client = await make_client(executor=executor, workers=2)
    try:
        run = await start_run(client, replications=12, seed=SEED)
        ended = await wait_for_run(client, run["run_id"], limit_s=45)
        assert ended["status"] == "completed", ended["error"]
        resp = await client.get(f"/api/simulations/{run['run_id']}/results")
        rows: list[dict[str, Any]] = await resp.json()
        # The metrics keys the chunks brought back, recorded as they were stored.
        resp = await client.get(f"/api/simulations/{run['run_id']}/results?format=csv")
        header = (await resp.text()).split("\n", 1)[0].split(",")
    finally:
        await client.close()
    assert len(rows) == 36
    keys = sorted({key for row in rows for key in row["metrics"]})
    assert keys
    assert header == [*CSV_FIXED, *keys]
    return rows


async def test_dask_local_cluster_gives_the_same_rows_as_the_process_executor(
    make_client: MakeClient,
) -> None:
    on_processes = await _rows_of_a_run(make_client, "process")
    # Dask's usual HTTP port taken (by another cluster, say) must not matter.
    with socket.socket() as taken:
        with contextlib.suppress(OSError):  # already taken by someone else: just as good
            taken.bind(("0.0.0.0", 8787))
            taken.listen()
        on_dask = await _rows_of_a_run(make_client, "dask-local")
    assert on_dask == on_processes


async def test_existing_dask_scheduler_gives_the_same_rows_as_the_process_executor(
    make_client: MakeClient,
) -> None:
    # A scheduler reached over TCP, as a remote cluster would be; threads keep it quick.
    async with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": ":0"},  # not Dask's usual 8787
        asynchronous=True,
    ) as cluster:
        address = cluster.scheduler_address.removeprefix("tcp://")
        on_dask = await _rows_of_a_run(make_client, f"dask://{address}")
    assert on_dask == await _rows_of_a_run(make_client, "process")


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("process", True),  # the default pool kinds stay valid
        ("inline", True),
        ("dask-local", True),
        ("dask://10.0.0.5:8786", True),  # a remote scheduler
        ("dask://", False),  # a scheme without an address
        ("dask", False),  # neither a pool kind nor an address
        ("tcp://10.0.0.5:8786", False),  # Dask addresses are spelled dask://
    ],
)
def test_executor_flag_accepts_pool_kinds_and_dask_addresses(value: str, accepted: bool) -> None:
    if accepted:
        assert executor_name(value) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            executor_name(value)


async def test_dask_local_serves_no_diagnostics_on_the_dashboard_port(
    make_client: MakeClient,
) -> None:
    client = await make_client(executor="dask-local", workers=1)
    backend = client.app[BACKEND]
    assert isinstance(backend, DaskBackend)
    assert backend.status()["workers"] == 1
    http = backend._cluster.scheduler.http_server  # type: ignore[union-attr]
    # Dask's HTTP server (health, metrics) only on loopback, on a port of its own.
    assert (http.address, http.port != 8787) == ("127.0.0.1", True)
    await client.close()


async def failed_start_up(app: web.Application) -> pytest.ExceptionInfo[StartupError]:
    server = TestServer(app)
    try:
        with pytest.raises(StartupError) as raised:
            await server.start_server()
    finally:
        await server.close()
    return raised


async def test_no_scheduler_fails_start_up_in_one_line_before_creating_the_database(
    tmp_path: Path,
) -> None:
    database = tmp_path / "simsvc.db"
    config = Config(
        db_path=str(database),
        executor=f"dask://127.0.0.1:{free_port()}",
        cluster=ClusterTimeouts(connect_s=0.5),
    )
    raised = await failed_start_up(create_app(config))
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not database.exists()


@pytest.mark.parametrize("executor", ["dask-local", "dask://10.0.0.5:8786"])
async def test_missing_dask_extra_fails_start_up_with_the_install_hint(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    executor: str,
) -> None:
    # What an environment without the [dask] extra sees: distributed cannot be imported.
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.setitem(sys.modules, "simsvc.dask_backend", None)
    monkeypatch.delattr(simsvc, "dask_backend", raising=False)
    database = tmp_path / "simsvc.db"
    raised = await failed_start_up(create_app(Config(db_path=str(database), executor=executor)))
    message = str(raised.value)
    assert "pip install '.[dask]'" in message
    assert "\n" not in message
    assert not database.exists()
