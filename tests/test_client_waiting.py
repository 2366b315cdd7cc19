"""How the client waits: an event stream that closes mid-run is reopened, not trusted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from simsvc.client import AsyncClient, RunFailed, SimsvcError
from simsvc.client.waiting import MAX_QUIET_RECONNECTS


class FlakyService:
    """/ws/events says hello and hangs up `drops` times, then reports the run's end."""

    def __init__(self, drops: int) -> None:
        self.drops = drops
        self.connections = 0
        self.status = "running"

    async def events(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        await ws.send_json({"type": "hello", "seq": 1})
        if self.connections > self.drops:
            self.status = "completed"
            await ws.send_json({"type": "run.completed", "seq": 2, "run_id": 1})
        await ws.close()
        return ws

    async def run(self, request: web.Request) -> web.Response:
        state = {"run_id": 1, "status": self.status, "done": 0, "total": 4}
        return web.json_response(state)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ws/events", self.events)
        app.router.add_get("/api/simulations/1", self.run)
        return app


async def test_wait_reconnects_when_the_event_stream_closes(
    aiohttp_server: AiohttpServer,
) -> None:
    service = FlakyService(drops=2)
    server = await aiohttp_server(service.app())
    async with AsyncClient(str(server.make_url(""))) as client:
        info = await client.wait(1, timeout=30)
    assert info["status"] == "completed"
    assert service.connections == 3


async def test_wait_gives_up_on_a_stream_that_keeps_closing(
    aiohttp_server: AiohttpServer,
) -> None:
    service = FlakyService(drops=1000)
    server = await aiohttp_server(service.app())
    async with AsyncClient(str(server.make_url(""))) as client:
        with pytest.raises(SimsvcError, match="keeps closing while waiting for run 1"):
            await client.wait(1, timeout=30)
    # Each reconnection saw a hello, but nothing about the run: that counts as quiet.
    assert service.connections == MAX_QUIET_RECONNECTS + 1


async def test_only_this_runs_fresh_events_count(aiohttp_server: AiohttpServer) -> None:
    """The first stream tells of other runs and stale counts, then closes; the second ends it."""
    fetched = asyncio.Event()
    connections = 0

    async def events(request: web.Request) -> web.WebSocketResponse:
        nonlocal connections
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        connections += 1
        await ws.send_json({"type": "hello", "seq": 1})
        if connections == 1:
            await fetched.wait()
            script: list[dict[str, Any]] = [
                # queued before the client's fetch, which already saw 3: stale, not shown
                {"type": "run.progress", "run_id": 1, "done": 2, "total": 4},
                {"type": "run.completed", "run_id": 2},
                {"type": "run.progress", "run_id": 1, "done": 4, "total": 4},
            ]
            for seq, event in enumerate(script, start=2):
                await ws.send_json({**event, "seq": seq})
            await ws.close()
        async for _ in ws:
            pass
        return ws

    async def run(request: web.Request) -> web.Response:
        fetched.set()
        status, done = ("failed", 4) if connections > 1 else ("running", 3)
        state = {"run_id": 1, "status": status, "done": done, "total": 4, "error": "boom"}
        return web.json_response(state)

    app = web.Application()
    app.router.add_get("/ws/events", events)
    app.router.add_get("/api/simulations/1", run)
    server = await aiohttp_server(app)
    seen: list[tuple[int, int | None]] = []
    async with AsyncClient(str(server.make_url(""))) as client:
        with pytest.raises(RunFailed, match="run 1 failed: boom"):
            await client.wait(1, timeout=30, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(3, 4), (4, 4)]
    assert connections == 2
