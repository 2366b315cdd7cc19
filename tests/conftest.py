"""Shared fixtures: a fresh app per test on an in-memory database."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from simsvc.web import Config, create_app

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture
def config() -> Config:
    return Config(db_path=":memory:", workers=2, executor="thread", heartbeat_s=30.0)


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient, config: Config) -> MakeClient:
    """Start an app with the test config, optionally overriding fields."""

    async def make(**overrides: Any) -> Client:
        fields = {**config.__dict__, **overrides}
        return await aiohttp_client(create_app(Config(**fields)))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client()


async def wait_for_run(
    client: Client, run_id: int, limit_s: float = 30.0, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """Wait until a run has ended, through the events socket rather than by polling."""
    async with client.ws_connect("/ws/events", headers=headers) as ws:
        async with asyncio.timeout(limit_s):
            resp = await client.get(f"/api/simulations/{run_id}", headers=headers)
            run: dict[str, Any] = await resp.json()
            if run["status"] not in ("queued", "running"):
                return run
            async for msg in ws:
                event = json.loads(msg.data)
                if event.get("run_id") == run_id and event["type"] in (
                    "run.completed",
                    "run.failed",
                    "run.cancelled",
                ):
                    return dict(event["run"])
    raise AssertionError(f"run {run_id} did not end")


async def start_run(client: Client, **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/simulations", json=body)
    assert resp.status == 202, await resp.text()
    return dict(await resp.json())


def free_port() -> int:
    """A loopback port that is free now, for a real `python -m simsvc`."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# The browser tests' fixtures: a live server, chromium, and a watcher of the page console.
from .browser_support import browser, console, open_page, server  # noqa: E402, F401
