"""Stopping the Dask executor at the awkward moments, against a stand-in for the client.

A stand-in answers each of the backend's questions only when the test says so, so that
an answer and a stop can be made to land in the same turn of the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from simsvc import dask_backend
from simsvc.backends import ClusterTimeouts
from simsvc.dask_backend import DaskBackend

TIMEOUTS = ClusterTimeouts(connect_s=5.0, poll_s=0.05, give_up_s=60.0)


class HeldClient:
    """Answers `nthreads` with a future the test resolves; stands in for `distributed.Client`."""

    status = "running"

    def __init__(self) -> None:
        self._questions: asyncio.Queue[asyncio.Future[dict[str, int]]] = asyncio.Queue()

    def nthreads(self) -> asyncio.Future[dict[str, int]]:
        answer: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()
        self._questions.put_nowait(answer)
        return answer

    async def question(self) -> asyncio.Future[dict[str, int]]:
        """The next `nthreads` call still waiting for its answer."""
        return await self._questions.get()

    async def close(self) -> None:
        self.status = "closed"


async def opened(monkeypatch: pytest.MonkeyPatch, client: HeldClient) -> DaskBackend:
    async def connect(*args: Any, **kwargs: Any) -> HeldClient:
        return client

    monkeypatch.setattr(dask_backend, "Client", connect)
    opening = asyncio.ensure_future(DaskBackend.open("dask://127.0.0.1:8786", 1, TIMEOUTS))
    (await client.question()).set_result({"tcp://127.0.0.1:9000": 1})
    return await opening


async def test_closing_as_the_cluster_size_arrives_stops_the_watcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = HeldClient()
    backend = await opened(monkeypatch, client)
    watcher = backend._watcher
    assert watcher is not None
    # The watcher's next look at the cluster is answered in the very turn the service
    # stops: the stop must end the watcher all the same.
    (await client.question()).set_result({"tcp://127.0.0.1:9000": 1})
    closing = asyncio.ensure_future(backend.close())
    asked_again = asyncio.ensure_future(client.question())
    done, _ = await asyncio.wait({closing, asked_again}, return_when=asyncio.FIRST_COMPLETED)
    stopped = closing in done
    watcher.cancel()  # a watcher that went on polling would otherwise outlive the test
    await asyncio.gather(closing, return_exceptions=True)
    asked_again.cancel()
    assert stopped, "the watcher went on polling the cluster after close()"
    assert watcher.cancelled()
    assert client.status == "closed"
