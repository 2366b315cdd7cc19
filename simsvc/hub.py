"""The WebSocket hub: fan-out of broadcasts that never waits on any one client.

Each client has a bounded outgoing queue drained by its own writer task. A broadcast
only appends to queues, so a stalled client cannot delay the others; one whose
backlog passes the bound is closed with 1008 (policy violation) and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import weakref
from collections import deque
from typing import Any

from aiohttp import WSCloseCode, web

from . import jsontext

log = logging.getLogger(__name__)

MAX_QUEUED_MESSAGES = 256
MAX_QUEUED_BYTES = 1 << 20
CLOSE_TIMEOUT_S = 2.0
DIRECT_WRITE_LIMIT = 64 * 1024  # bytes buffered in a transport before sends queue instead


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
        self._sending = False  # the writer task is inside send_str
        self.transport: asyncio.Transport | None = None  # for direct writes; set by the hub
        self._held: list[str] | None = None
        self._writer = asyncio.create_task(self._drain(), name=f"simsvc-ws-writer-{peer}")

    def push(self, text: str, frame: bytes | None = None) -> None:
        """Send one message now if the socket can take it, else queue it (or evict)."""
        if self._closing:
            return
        if not self._queue and not self._sending and self._write_now(text, frame):
            return
        # The bound is on backlog: one message larger than it still goes to an idle client.
        if self._queue and (
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

    def _write_now(self, text: str, frame: bytes | None) -> bool:
        """Write a whole frame straight to an idle, unclogged socket: no task switch.

        With 10,000 clients a broadcast is then one buffered write per socket, in
        order with the writer task's sends because it is used only when nothing is
        queued or being sent. A socket whose buffer is filling takes the queue path,
        whose `send_str` waits for the drain and whose bound evicts a stalled client.
        """
        transport = self.transport
        if (
            transport is None
            or self.ws.closed
            or transport.is_closing()
            or transport.get_write_buffer_size() > self.hub.direct_write_limit
        ):
            return False
        transport.write(frame if frame is not None else text_frame(text.encode("utf-8")))
        return True

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
                self._sending = True
                try:
                    await self.ws.send_str(text)
                finally:
                    self._sending = False
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
        except asyncio.CancelledError:
            # aiohttp shares one drain future per connection, and cancelling the writer
            # above cancels it when the writer was draining; only our own cancellation counts.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            self._abort_if_stuck()

    def _abort_if_stuck(self) -> None:
        """Drop the connection if unsent bytes remain: a peer that does not read never will."""
        transport = self.hub.transport_of(self)
        if transport is not None and transport.get_write_buffer_size() > 0:
            log.info(
                "%s client %s: dropping %d unsent bytes",
                self.hub.name,
                self.peer,
                transport.get_write_buffer_size(),
            )
            transport.abort()


class Hub:
    """The clients of one WebSocket endpoint."""

    def __init__(
        self, name: str, max_messages: int = MAX_QUEUED_MESSAGES, max_bytes: int = MAX_QUEUED_BYTES
    ) -> None:
        self.name = name
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.direct_write_limit = DIRECT_WRITE_LIMIT
        self._clients: set[Client] = set()
        self._evictions: set[asyncio.Task[None]] = set()
        self._shut = False
        self._transports: weakref.WeakKeyDictionary[Client, asyncio.Transport] = (
            weakref.WeakKeyDictionary()
        )

    def __len__(self) -> int:
        return len(self._clients)

    def attach(self, request: web.Request, ws: web.WebSocketResponse) -> Client:
        client = Client(self, ws, request.remote or "?")
        if request.transport is not None:
            self._transports[client] = request.transport
            client.transport = request.transport
        if self._shut:
            # The handshake finished after shutdown began (during the hello, say).
            self._close_soon(client, WSCloseCode.GOING_AWAY, b"server shutdown")
            return client
        self._clients.add(client)
        return client

    def transport_of(self, client: Client) -> asyncio.Transport | None:
        return self._transports.get(client)

    def evict(self, client: Client) -> None:
        """Close a client that cannot keep up, without waiting for it."""
        self._close_soon(client, WSCloseCode.POLICY_VIOLATION, b"too slow")

    def _close_soon(self, client: Client, code: int, message: bytes) -> None:
        task = asyncio.create_task(client.close(code, message))
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
        frame = text_frame(text.encode("utf-8"))  # one frame for all clients
        for client in list(self._clients):
            client.push(text, frame)

    def broadcast_event(self, event_type: str, payload: dict[str, Any]) -> None:
        """Hand `{"type", "seq", **payload}` to every client, encoding the payload once."""
        fragment = encode_event_fragment(event_type, payload)
        for client in list(self._clients):
            client.push_event(fragment)

    async def evictions_done(self) -> None:
        """Wait until every client being evicted is closed."""
        await asyncio.gather(*self._evictions, return_exceptions=True)

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY) -> None:
        self._shut = True
        clients = list(self._clients)
        self._clients.clear()
        await asyncio.gather(
            *(c.close(code, b"server shutdown") for c in clients), return_exceptions=True
        )
        await self.evictions_done()


def encode_event_fragment(event_type: str, payload: dict[str, Any]) -> str:
    body = jsontext.dumps({"type": event_type, **payload}, separators=(",", ":"))
    return body[1:]


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (RFC 6455 section 5.2), as a server sends.

    Uncompressed frames are valid even where permessage-deflate was negotiated
    (RFC 7692 section 6), and they leave the compressor's context untouched.
    """
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload
