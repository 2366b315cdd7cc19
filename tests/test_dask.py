"""Dask distributed as an executor: real clusters, the same rows as the process pool."""

from __future__ import annotations

import argparse
import contextlib
import socket
from typing import Any

import pytest
from distributed import LocalCluster

from simsvc.__main__ import executor_name

from .conftest import MakeClient, start_run, wait_for_run

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
    finally:
        await client.close()
    assert len(rows) == 36
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
