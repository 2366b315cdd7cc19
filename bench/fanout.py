"""WebSocket fan-out: many idle clients, spread over several processes, time each broadcast.

Every client process opens its share of sockets, says it is ready, then records when each
socket receives each message. `time.monotonic()` is one system-wide clock on Linux, so a
receive time in a client process and the notify time in the driver can be subtracted.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import multiprocessing
import multiprocessing.connection
import os
import statistics
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

CONNECT_BATCH = 200
CONNECT_TIMEOUT_S = 120.0
ROUND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Fanout:
    """Latency from the notify call to delivery, over every client of every round."""

    clients: int
    rounds: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    delivered: int
    rss_per_client_bytes: float | None


def _client_process(
    url: str, count: int, rounds: int, conn: multiprocessing.connection.Connection
) -> None:
    asyncio.run(_clients(url, count, rounds, conn))


class _Rounds:
    """Receive times per round, shared by one process's sockets."""

    def __init__(self, count: int, rounds: int) -> None:
        self.count = count
        self.received: list[list[float]] = [[] for _ in range(rounds)]
        self.complete = [asyncio.Event() for _ in range(rounds)]

    def got(self, index: int) -> None:
        if index >= len(self.received):
            return
        self.received[index].append(time.monotonic())
        if len(self.received[index]) == self.count:
            self.complete[index].set()


class _LeanSocket(asyncio.Protocol):
    """A minimal WebSocket client: the handshake, then it counts whole server messages.

    aiohttp's client spends tens of microseconds per message; with 10,000 sockets on a
    2-core machine that would measure the clients rather than the server. This one
    timestamps a message when its last byte arrives and answers pings.
    """

    def __init__(self, path: str, host: str, rounds: _Rounds) -> None:
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
        ).encode()
        self._rounds = rounds
        self._buffer = bytearray()
        self._upgraded = False
        self._seen = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed during the handshake: {exc}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self._buffer.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(ConnectionError(bytes(self._buffer[:80]).decode()))
                return
            del self._buffer[: end + 4]
            self._upgraded = True
            self.ready.set_result(None)
        self._frames()

    def _frames(self) -> None:
        while len(self._buffer) >= 2:
            first, size = self._buffer[0], self._buffer[1] & 0x7F
            start = 2
            if size == 126:
                start, size = 4, int.from_bytes(self._buffer[2:4], "big")
            elif size == 127:
                start, size = 10, int.from_bytes(self._buffer[2:10], "big")
            if len(self._buffer) < start + size:
                return
            payload = bytes(self._buffer[start : start + size])
            del self._buffer[: start + size]
            opcode = first & 0x0F
            if opcode == 0x9 and self.transport is not None:  # ping: a masked pong
                self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            elif first & 0x80 and opcode in (0x0, 0x1, 0x2):  # the last frame of a message
                self._rounds.got(self._seen)
                self._seen += 1


async def _clients(
    url: str, count: int, rounds: int, conn: multiprocessing.connection.Connection
) -> None:
    """Open `count` sockets, report ready, then report each round's receive times."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    tally = _Rounds(count, rounds)
    loop = asyncio.get_running_loop()

    async def connect() -> _LeanSocket:
        _, protocol = await loop.create_connection(
            lambda: _LeanSocket(parts.path, f"{host}:{port}", tally), host, port
        )
        await protocol.ready
        return protocol

    sockets: list[_LeanSocket] = []
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            for start in range(0, count, CONNECT_BATCH):
                batch = min(CONNECT_BATCH, count - start)
                sockets += await asyncio.gather(*(connect() for _ in range(batch)))
        conn.send(("ready", count))
        for index in range(rounds):
            async with asyncio.timeout(ROUND_TIMEOUT_S):
                await tally.complete[index].wait()
            conn.send(("round", index, tally.received[index]))
    except TimeoutError:
        conn.send(("timeout", [len(r) for r in tally.received]))
    finally:
        for sock in sockets:
            if sock.transport is not None:
                sock.transport.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    ws_url: str,
    notify: Callable[[], Awaitable[None]],
    clients: int,
    processes: int,
    rounds: int,
    rss: Callable[[], int] | None = None,
) -> Fanout:
    """Connect `clients` sockets from `processes` processes, then time `rounds` broadcasts."""
    context = multiprocessing.get_context("spawn")
    pipes: list[multiprocessing.connection.Connection] = []
    children = []
    rss_before = rss() if rss else 0
    share = [clients // processes + (i < clients % processes) for i in range(processes)]
    for count in share:
        ours, theirs = context.Pipe()
        child = context.Process(target=_client_process, args=(ws_url, count, rounds, theirs))
        child.start()
        pipes.append(ours)
        children.append(child)
    try:
        for pipe in pipes:
            message = await _receive(pipe, CONNECT_TIMEOUT_S)
            if message[0] != "ready":
                raise RuntimeError(f"a client process failed to connect: {message}")
        per_client = (rss() - rss_before) / clients if rss else None
        latencies = await _rounds(pipes, notify, rounds)
    finally:
        for child in children:
            await asyncio.to_thread(child.join, 10)
            if child.is_alive():
                child.kill()
    return Fanout(
        clients=clients,
        rounds=rounds,
        p50_ms=statistics.median([percentile(r, 0.50) for r in latencies]) * 1e3,
        p99_ms=statistics.median([percentile(r, 0.99) for r in latencies]) * 1e3,
        max_ms=max(max(r) for r in latencies) * 1e3,
        delivered=sum(len(r) for r in latencies),
        rss_per_client_bytes=per_client,
    )


async def _rounds(
    pipes: list[multiprocessing.connection.Connection],
    notify: Callable[[], Awaitable[None]],
    rounds: int,
) -> list[list[float]]:
    latencies: list[list[float]] = []
    for index in range(rounds):
        await asyncio.sleep(0.3)  # let the previous round's writes settle
        began = time.monotonic()
        await notify()
        got: list[float] = []
        for pipe in pipes:
            message = await _receive(pipe, ROUND_TIMEOUT_S + 5)
            if message[0] != "round" or message[1] != index:
                raise RuntimeError(f"round {index}: a client process reported {message}")
            times: list[float] = message[2]  # type: ignore[assignment]
            got += [t - began for t in times]
        latencies.append(got)
    return latencies


async def _receive(
    pipe: multiprocessing.connection.Connection, timeout_s: float
) -> tuple[object, ...]:
    ready = await asyncio.to_thread(pipe.poll, timeout_s)
    if not ready:
        raise TimeoutError("a client process did not answer")
    message: tuple[object, ...] = pipe.recv()
    return message
