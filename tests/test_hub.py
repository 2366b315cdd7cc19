"""The hub's broadcast: direct frame writes to idle sockets, the queue for clogged ones."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any, cast

import pytest
from aiohttp import web

from simsvc.hub import Hub, text_frame

from .conftest import Client


class FakeTransport:
    """Collects written bytes; `buffered` pretends that much is waiting in the kernel."""

    def __init__(self, buffered: int = 0) -> None:
        self.buffered = buffered
        self.written = bytearray()

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def abort(self) -> None:
        pass


class FakeSocket:
    """A WebSocketResponse whose send_str never finishes: a peer that stopped reading."""

    def __init__(self) -> None:
        self.closed = False
        self.sends: list[str] = []
        self.close_codes: list[int] = []
        self.sending = asyncio.Event()
        self.closed_event = asyncio.Event()

    async def send_str(self, text: str) -> None:
        self.sends.append(text)
        self.sending.set()
        await asyncio.Event().wait()

    async def close(self, code: int, message: bytes = b"") -> bool:
        self.close_codes.append(code)
        self.closed = True
        self.closed_event.set()
        return True


class FakeRequest:
    def __init__(self, transport: FakeTransport) -> None:
        self.remote = "127.0.0.1"
        self.transport = transport


def attach(hub: Hub, transport: FakeTransport) -> FakeSocket:
    ws = FakeSocket()
    hub.attach(cast(web.Request, FakeRequest(transport)), cast(web.WebSocketResponse, ws))
    return ws


def frames(data: bytes) -> list[str]:
    """Split unmasked server frames back into texts."""
    texts = []
    while data:
        size, start = data[1] & 0x7F, 2
        if size == 126:
            size, start = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            size, start = struct.unpack("!Q", data[2:10])[0], 10
        texts.append(data[start : start + size].decode())
        data = data[start + size :]
    return texts


@pytest.mark.parametrize(
    "size",
    [
        5,  # one length byte
        126,  # the first size that needs a 16-bit length
        70_000,  # past 64 KiB: a 64-bit length
    ],
)
def test_text_frame_encodes_each_length_form(size: int) -> None:
    text = "あ" * (size // 3) + "x" * (size % 3)
    assert frames(text_frame(text.encode())) == [text]


async def test_idle_sockets_get_frames_written_directly_in_order() -> None:
    hub = Hub("/ws/test")
    transports = [FakeTransport() for _ in range(3)]
    sockets = [attach(hub, t) for t in transports]
    for i in range(5):
        hub.broadcast(f"message {i}")
    hub.broadcast_event("ping", {"n": 1})
    expected = [f"message {i}" for i in range(5)]
    for transport, ws in zip(transports, sockets, strict=True):
        received = frames(bytes(transport.written))
        assert received[:5] == expected
        assert json.loads(received[5]) == {"seq": 1, "type": "ping", "n": 1}
        assert ws.sends == []  # no writer task was involved
    await hub.close_all()


async def test_clogged_socket_is_queued_then_evicted_while_others_still_receive() -> None:
    hub = Hub("/ws/test", max_messages=3)
    healthy = FakeTransport()
    clogged = FakeTransport(buffered=hub.direct_write_limit + 1)
    attach(hub, healthy)
    stalled = attach(hub, clogged)
    hub.broadcast("message 0")
    async with asyncio.timeout(5):
        await stalled.sending.wait()  # its writer task is now stuck inside send_str
        for i in range(1, 6):
            hub.broadcast(f"message {i}")
        await stalled.closed_event.wait()
    assert frames(bytes(healthy.written)) == [f"message {i}" for i in range(6)]
    assert clogged.written == b""
    assert stalled.sends == ["message 0"]
    assert stalled.close_codes == [1008]
    assert len(hub) == 1
    await hub.close_all()


async def test_results_socket_receives_the_aggregate_list_after_notify(client: Client) -> None:
    rows: list[dict[str, Any]] = [
        {"scenario_id": 1, "replication": r, "total_labor_costs": 9000.0 + r,
         "ontime_delivery_rate": 0.9}
        for r in (1, 2)
    ]  # fmt: skip
    assert (await client.post("/api/results", json=rows)).status == 201
    async with (
        client.ws_connect("/ws/results") as first,
        client.ws_connect("/ws/results") as second,
    ):
        resp = await client.post("/api/notify-completion")
        assert resp.status == 200
        expected = await (await client.get("/api/results")).json()
        assert json.loads((await first.receive(timeout=5)).data) == expected
        assert json.loads((await second.receive(timeout=5)).data) == expected
