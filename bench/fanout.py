"""WebSocket fan-out: many idle clients, spread over several processes, time each broadcast.

Every client process opens its share of sockets, says it is ready, then records when each
socket receives each message. `time.monotonic()` is one system-wide clock on Linux, so a
receive time in a client process and the notify time in the driver can be subtracted.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

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


async def _clients(
    url: str, count: int, rounds: int, conn: multiprocessing.connection.Connection
) -> None:
    """Open `count` sockets, report ready, then report each round's receive times."""
    received: list[list[float]] = [[] for _ in range(rounds)]
    complete = [asyncio.Event() for _ in range(rounds)]

    async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
        seen = 0
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT or seen >= rounds:
                continue
            received[seen].append(time.monotonic())
            if len(received[seen]) == count:
                complete[seen].set()
            seen += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            for start in range(0, count, CONNECT_BATCH):
                batch = min(CONNECT_BATCH, count - start)
                sockets += await asyncio.gather(*(session.ws_connect(url) for _ in range(batch)))
        readers = [asyncio.create_task(reader(ws)) for ws in sockets]
        conn.send(("ready", count))
        try:
            for index in range(rounds):
                async with asyncio.timeout(ROUND_TIMEOUT_S):
                    await complete[index].wait()
                conn.send(("round", index, received[index]))
        except TimeoutError:
            conn.send(("timeout", len(received[index])))
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


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
        p50_ms=_median([percentile(r, 0.50) for r in latencies]) * 1e3,
        p99_ms=_median([percentile(r, 0.99) for r in latencies]) * 1e3,
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


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
