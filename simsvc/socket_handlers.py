"""The WebSocket endpoints: `/ws/results` (the aggregate list) and `/ws/events` (typed
events after a hello snapshot), each socket served by its hub until it closes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from . import __version__, explore
from .hub import Hub, encode_event_fragment
from .resources import AGGREGATES, CONFIG, DB, EVENTS_HUB, EXPERIMENTS, MODELS, RESULTS_HUB
from .runs import run_view

log = logging.getLogger(__name__)


class _Socket(web.WebSocketResponse):
    """A WebSocket whose close for an oversized message names the limit it hit."""

    def __init__(self, *, heartbeat: float, max_msg_size: int) -> None:
        # aiohttp refuses a message of exactly max_msg_size; the documented limit is inclusive.
        super().__init__(heartbeat=heartbeat, max_msg_size=max_msg_size + 1)
        self._limit = max_msg_size

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message:
            message = f"messages are limited to {self._limit} bytes".encode()
        return await super().close(code=code, message=message, drain=drain)


async def _serve_socket(
    request: web.Request,
    hub: Hub,
    first: Callable[[], Awaitable[tuple[str, dict[str, Any]] | None]],
) -> web.WebSocketResponse:
    config = request.app[CONFIG]
    ws = _Socket(heartbeat=config.heartbeat_s, max_msg_size=config.max_ws_message_bytes)
    await ws.prepare(request)
    client = hub.attach(request, ws)
    # Attached before the snapshot is read, so nothing broadcast meanwhile is lost;
    # held back until the snapshot is queued, so the snapshot is still the first message.
    client.hold()
    try:
        hello = await first()
        client.release_hold(encode_event_fragment(*hello) if hello is not None else None)
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                log.info("%s client %s: %s", hub.name, request.remote, ws.exception())
    finally:
        await hub.release(client)
    return ws


async def ws_results(request: web.Request) -> web.WebSocketResponse:
    async def nothing() -> None:
        return None

    return await _serve_socket(request, request.app[RESULTS_HUB], nothing)


async def ws_events(request: web.Request) -> web.WebSocketResponse:
    app = request.app

    async def hello() -> tuple[str, dict[str, Any]]:
        return "hello", {
            "version": __version__,
            "runs": [run_view(r) for r in await app[DB].list_runs(limit=50)],
            "experiments": [
                explore.summary(e) for e in await app[EXPERIMENTS].list_experiments(limit=50)
            ],
            "results": await app[AGGREGATES].compute(),
            "scenarios": await app[DB].list_scenarios(),
            "models": [m.describe() for m in app[MODELS].values()],
        }

    return await _serve_socket(request, app[EVENTS_HUB], hello)
