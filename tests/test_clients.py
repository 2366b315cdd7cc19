"""WebSocket clients that misbehave: stalled readers, dead peers, garbage frames."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from typing import Any

import aiohttp
import psutil
import pytest

from simsvc.hub import Hub
from simsvc.resources import DB, EVENTS_HUB, RESULTS_HUB

from .conftest import Client, MakeClient
from .rawsocket import masked_frame, open_raw_websocket, read_until_closed

BROADCASTS = 12
STALLED_CLOSE_LIMIT_S = 10.0


def _address(client: Client) -> tuple[str, int]:
    assert client.port is not None
    return client.host, client.port


async def add_scenarios_with_results(client: Client, scenarios: int) -> None:
    """Grow the aggregate list to `scenarios` entries (about 0.5 MB at 1,000)."""
    database = client.app[DB]
    existing = len(await database.scenario_names())
    for i in range(existing, scenarios):
        await database.create_scenario(f"scenario {i + 1:04d}", "warehouse", {"workers": 5})
    rows = [
        {
            "scenario_id": sid,
            "replication": r,
            "total_labor_costs": 9000.0 + sid + r,
            "ontime_delivery_rate": 0.5 + r / 10,
        }
        for sid in range(1, scenarios + 1)
        for r in (1, 2, 3)
    ]
    resp = await client.post("/api/results", json=rows)
    assert resp.status == 201, await resp.text()


async def test_stalled_clients_are_closed_and_do_not_delay_others(client: Client) -> None:
    app = client.app
    await add_scenarios_with_results(client, 1000)
    host, port = _address(client)
    stalled = [
        await open_raw_websocket(host, port, path, receive_buffer=1024)
        for path in ("/ws/results", "/ws/events") * 3
    ]
    healthy_results = [await client.ws_connect("/ws/results") for _ in range(2)]
    healthy_events = [await client.ws_connect("/ws/events") for _ in range(3)]
    for ws in healthy_events:
        assert json.loads((await ws.receive(timeout=10)).data)["type"] == "hello"
    expected = await (await client.get("/api/results")).text()
    assert len(expected) > 400_000
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        for i in range(BROADCASTS):
            # The seed's notify hung behind stalled tabs; here it must answer at once.
            async with asyncio.timeout(2):
                assert (await client.post("/api/notify-completion")).status == 200
            for ws in healthy_results:
                assert (await ws.receive(timeout=10)).data == expected
            for ws in healthy_events:
                event = json.loads((await ws.receive(timeout=10)).data)
                assert (event["type"], event["seq"]) == ("results.updated", i + 2)
        async with asyncio.timeout(STALLED_CLOSE_LIMIT_S - (loop.time() - started)):
            await app[RESULTS_HUB].evictions_done()
            await app[EVENTS_HUB].evictions_done()
            # The server holds no socket for them any more, backlog and all.
            assert not _server_sockets_for(port, stalled)
    finally:
        for sock in stalled:
            sock.close()
    assert (len(app[RESULTS_HUB]), len(app[EVENTS_HUB])) == (2, 3)
    assert all(not ws.closed for ws in healthy_results + healthy_events)


def _server_sockets_for(port: int, peers: list[socket.socket]) -> list[Any]:
    """This process's server-side connections to the given client sockets."""
    peer_ports = {sock.getsockname()[1] for sock in peers}
    return [
        c
        for c in psutil.Process().net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.raddr and c.raddr.port in peer_ports
    ]


async def test_a_message_larger_than_the_backlog_bound_still_reaches_an_idle_client(
    client: Client,
) -> None:
    client.app[RESULTS_HUB].max_bytes = 100
    await add_scenarios_with_results(client, 3)
    async with client.ws_connect("/ws/results") as ws:
        assert (await client.post("/api/notify-completion")).status == 200
        message = json.loads((await ws.receive(timeout=10)).data)
    assert [row["scenario_id"] for row in message] == [1, 2, 3]


@pytest.mark.parametrize(
    ("path", "hub_key"), [("/ws/results", RESULTS_HUB), ("/ws/events", EVENTS_HUB)]
)
async def test_dead_peer_is_dropped_within_one_and_a_half_heartbeats(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, path: str, hub_key: Any
) -> None:
    heartbeat = 0.4
    client = await make_client(heartbeat_s=heartbeat)
    hub: Hub = client.app[hub_key]
    dropped = asyncio.Event()
    detach = hub.detach

    def detach_and_tell(member: Any) -> None:
        detach(member)
        if not len(hub):
            dropped.set()

    monkeypatch.setattr(hub, "detach", detach_and_tell)
    loop = asyncio.get_running_loop()
    # Reads, so that nothing backs up, but never answers a ping: a peer that vanished.
    peer = await open_raw_websocket(*_address(client), path)
    started = loop.time()
    try:
        async with asyncio.timeout(1.5 * heartbeat + 0.1):
            await read_until_closed(peer)
            await dropped.wait()
    finally:
        peer.close()
    assert loop.time() - started <= 1.5 * heartbeat + 0.1
    assert len(hub) == 0


def _close_code(data: bytes) -> tuple[int, bytes]:
    """The code and reason of the close frame in what the server sent to /ws/results."""
    assert data, "the server sent no close frame"
    assert data[0] & 0x0F == 0x8, f"not a close frame: {data[:16]!r}"
    size = data[1] & 0x7F
    return struct.unpack("!H", data[2:4])[0], data[4 : 2 + size]


# (frame bytes, expected close code): each breaks RFC 6455 in its own way.
GARBAGE_FRAMES: list[tuple[bytes, int | None]] = [
    (masked_frame(0x1, b"\xff\xfe\xfd"), 1007),  # text that is not UTF-8
    # A client frame without a mask: aiohttp tolerates it, so it is read and ignored.
    (masked_frame(0x1, b"hi", mask=False), None),
    (masked_frame(0x3, b"x"), 1002),  # a reserved opcode
    (bytes([0xF1]) + masked_frame(0x1, b"x")[1:], 1002),  # reserved bits set
    (masked_frame(0x0, b"orphan"), 1002),  # a continuation with nothing to continue
    (masked_frame(0x9, b"p" * 126), 1002),  # a ping longer than 125 bytes
    (masked_frame(0x8, b"\x00"), 1002),  # a close frame with a one-byte payload
    (masked_frame(0x1, b"x" * (64 * 1024 + 1)), 1009),  # over the message size limit
    (masked_frame(0x1, b"x" * (64 * 1024)), None),  # exactly the limit: "at most" allows it
]


@pytest.mark.parametrize(("frame", "code"), GARBAGE_FRAMES)
async def test_garbage_websocket_frames_close_that_socket_only(
    client: Client, frame: bytes, code: int | None
) -> None:
    loop = asyncio.get_running_loop()
    async with client.ws_connect("/ws/results") as bystander:
        host, port = _address(client)
        sock = await open_raw_websocket(host, port, "/ws/results")
        try:
            await loop.sock_sendall(sock, frame)
            if code is None:
                # Tolerated: the socket is still open, so a proper close gets a proper reply.
                await loop.sock_sendall(sock, masked_frame(0x8, struct.pack("!H", 1000)))
            async with asyncio.timeout(5):
                data = await _read_all(sock)
        finally:
            sock.close()
        got, reason = _close_code(data)
        assert got == (code or 1000)
        if code == 1009:
            assert b"limited to 65536 bytes" in reason
        assert (await client.post("/api/notify-completion")).status == 200
        assert json.loads((await bystander.receive(timeout=5)).data) == []
    assert (await client.get("/api/health")).status == 200


async def _read_all(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    data = b""
    while True:
        try:
            chunk = await loop.sock_recv(sock, 1 << 16)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


async def test_random_bytes_after_the_handshake_close_only_that_socket(client: Client) -> None:
    loop = asyncio.get_running_loop()
    host, port = _address(client)
    sock = await open_raw_websocket(host, port, "/ws/events")
    try:
        await loop.sock_sendall(sock, os.urandom(4096))
        async with asyncio.timeout(5):
            await read_until_closed(sock)
    finally:
        sock.close()
    assert (await client.get("/api/health")).status == 200


async def test_binary_and_text_from_clients_are_ignored(client: Client) -> None:
    async with client.ws_connect("/ws/results") as ws:
        await ws.send_bytes(os.urandom(1000))
        await ws.send_str("not json {")
        await ws.send_str(json.dumps({"type": "subscribe", "run_id": 10**30}))
        assert (await client.post("/api/notify-completion")).status == 200
        assert json.loads((await ws.receive(timeout=5)).data) == []
        assert not ws.closed


async def test_oversized_message_from_a_library_client_closes_1009(client: Client) -> None:
    async with client.ws_connect("/ws/results") as ws:
        await ws.send_str("x" * (64 * 1024 + 1))
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == 1009
        assert "65536" in str(msg.extra)
