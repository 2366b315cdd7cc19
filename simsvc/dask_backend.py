"""Dask distributed as a place to compute replications, for when one machine is not enough.

`--executor dask://HOST:PORT` sends chunks of replications to an existing cluster;
`--executor dask-local` starts a `LocalCluster` on this machine. Needs the optional
extra: `pip install simsvc[dask]`. Every worker must have simsvc (and any plug-in
models) installed, because chunks name their models by import path.

Results stay bit-identical to the other executors: a chunk is the same
`sim.simulate_chunk` call, and each replication draws only from `sim.stream(seed, r)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from distributed import Client, LocalCluster

log = logging.getLogger(__name__)

T = TypeVar("T")
SCHEME = "dask://"
LOCAL = "dask-local"
CONNECT_TIMEOUT_S = 30.0


def is_dask(executor: str) -> bool:
    return executor == LOCAL or executor.startswith(SCHEME)


def scheduler_address(executor: str) -> str:
    """`dask://host:port` -> the scheduler's TCP address."""
    return "tcp://" + executor.removeprefix(SCHEME)


class DaskBackend:
    """A `sim.Backend` on a Dask cluster; `workers` is the cluster's thread count."""

    def __init__(self, client: Client, workers: int, cluster: LocalCluster | None = None) -> None:
        self._client = client
        self._cluster = cluster
        self.workers = max(1, workers)

    @classmethod
    async def _on(cls, client: Client, cluster: LocalCluster | None = None) -> DaskBackend:
        threads: dict[str, int] = await client.nthreads()
        return cls(client, sum(threads.values()), cluster)

    @classmethod
    async def open(cls, executor: str, workers: int) -> DaskBackend:
        """Connect to the cluster `executor` names, or start a local one."""
        if executor == LOCAL:
            # One thread per worker process: the models hold the GIL.
            cluster = await LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                # Even without a dashboard the scheduler serves HTTP (health, metrics), on
                # 8787 unless told otherwise; a busy 8787 must not stop the service.
                scheduler_kwargs={"dashboard_address": ":0"},
                asynchronous=True,
            )
            client = await Client(cluster, asynchronous=True)
            log.info("started a local Dask cluster with %d workers", workers)
            return await cls._on(client, cluster)
        address = scheduler_address(executor)
        client = await Client(address, asynchronous=True, timeout=CONNECT_TIMEOUT_S)
        backend = await cls._on(client)
        log.info("connected to the Dask scheduler at %s (%d threads)", address, backend.workers)
        return backend

    async def submit(self, fn: Callable[..., T], *args: Any) -> T:
        # pure=False: two chunks with equal arguments are still two computations.
        future = self._client.submit(fn, *args, pure=False)
        try:
            result: T = await future
        except asyncio.CancelledError:
            await self._client.cancel([future])
            raise
        return result

    async def close(self) -> None:
        await self._client.close()
        closing = self._cluster.close() if self._cluster is not None else None
        if closing is not None:  # an asynchronous cluster answers with an awaitable
            with contextlib.suppress(TimeoutError):
                await closing
