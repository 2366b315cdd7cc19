"""The WebSocket hub: fan-out of broadcasts that never waits on any one client.

Each client has a bounded outgoing queue drained by its own writer task. A broadcast
only appends to queues, so a stalled client cannot delay the others; one whose
backlog passes the bound is closed with 1008 (policy violation) and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections import deque
from typing import Any

from aiohttp import WSCloseCode, web

log = logging.getLogger(__name__)

MAX_QUEUED_MESSAGES = 256
MAX_QUEUED_BYTES = 1 << 20
CLOSE_TIMEOUT_S = 2.0


class Client:
    """One socket's outgoing side: a queue, its byte count and the writer that drains it."""

    def __init__(self, hub: Hub, ws: web.WebSocketResponse, peer: str) -> None:
        self.hub = hub
        self.ws = ws
        self.peer = peer
        self.seq = 0
        self._queue: deque[str] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._held: list[str] | None = None
        self._writer = asyncio.create_task(self._drain(), name=f"simsvc-ws-writer-{peer}")

    def push(self, text: str) -> None:
        """Queue one message, or evict the client if its backlog is over the bound."""
        if self._closing:
            return
        if (
            len(self._queue) >= self.hub.max_messages
            or self._queued_bytes + len(text) > self.hub.max_bytes
        ):
            log.warning(
                "%s client %s is not reading (%d messages, %d bytes queued); closing it",
                self.hub.name,
                self.peer,
                len(self._queue),
                self._queued_bytes,
            )
            self.hub.detach(self)
            self.hub.evict(self)
            return
        self._queue.append(text)
        self._queued_bytes += len(text)
        self._wakeup.set()

    def push_event(self, fragment: str) -> None:
        """Queue an event whose JSON body (minus the opening brace) was encoded once."""
        if self._held is not None:
            self._held.append(fragment)
            return
        self.seq += 1
        self.push(f'{{"seq":{self.seq},{fragment}')

    def hold(self) -> None:
        """Keep events back until `release_hold`, so that a snapshot can go first."""
        if self._held is None:
            self._held = []

    def release_hold(self, first: str | None = None) -> None:
        """Send `first` (an event fragment), then every event held since `hold`."""
        held, self._held = self._held or [], None
        if first is not None:
            self.push_event(first)
        for fragment in held:
            self.push_event(fragment)

    async def _drain(self) -> None:
        try:
            while True:
                while not self._queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                text = self._queue.popleft()
                self._queued_bytes -= len(text)
                await self.ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:
            log.info("%s client %s went away: %s", self.hub.name, self.peer, exc)
            self.hub.detach(self)

    async def close(self, code: int, message: bytes = b"") -> None:
        """Stop writing and close the socket, aborting it if the close handshake stalls."""
        if self._closing:
            return
        self._closing = True
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message), CLOSE_TIMEOUT_S)
        except (TimeoutError, ConnectionError, RuntimeError):
            transport = self.hub.transport_of(self)
            if transport is not None:
                transport.abort()


class Hub:
    """The clients of one WebSocket endpoint."""

    def __init__(
        self, name: str, max_messages: int = MAX_QUEUED_MESSAGES, max_bytes: int = MAX_QUEUED_BYTES
    ) -> None:
        self.name = name
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._clients: set[Client] = set()
        self._evictions: set[asyncio.Task[None]] = set()
        self._transports: weakref.WeakKeyDictionary[Client, asyncio.Transport] = (
            weakref.WeakKeyDictionary()
        )

    def __len__(self) -> int:
        return len(self._clients)

    def attach(self, request: web.Request, ws: web.WebSocketResponse) -> Client:
        client = Client(self, ws, request.remote or "?")
        self._clients.add(client)
        if request.transport is not None:
            self._transports[client] = request.transport
        return client

    def transport_of(self, client: Client) -> asyncio.Transport | None:
        return self._transports.get(client)

    def evict(self, client: Client) -> None:
        """Close a client that cannot keep up, without waiting for it."""
        task = asyncio.create_task(client.close(WSCloseCode.POLICY_VIOLATION, b"too slow"))
        self._evictions.add(task)
        task.add_done_callback(self._evictions.discard)

    def detach(self, client: Client) -> None:
        self._clients.discard(client)

    async def release(self, client: Client) -> None:
        """The handler's `finally`: forget the client and stop its writer."""
        self.detach(client)
        await client.close(WSCloseCode.GOING_AWAY)

    def broadcast(self, text: str) -> None:
        """Hand one pre-encoded message to every client; returns without waiting."""
        for client in list(self._clients):
            client.push(text)

    def broadcast_event(self, event_type: str, payload: dict[str, Any]) -> None:
        """Hand `{"type", "seq", **payload}` to every client, encoding the payload once."""
        fragment = encode_event_fragment(event_type, payload)
        for client in list(self._clients):
            client.push_event(fragment)

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY) -> None:
        clients = list(self._clients)
        self._clients.clear()
        await asyncio.gather(
            *(c.close(code, b"server shutdown") for c in clients), return_exceptions=True
        )


def encode_event_fragment(event_type: str, payload: dict[str, Any]) -> str:
    body = json.dumps({"type": event_type, **payload}, ensure_ascii=False, separators=(",", ":"))
    return body[1:]
