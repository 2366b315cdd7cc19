"""WebSocket peers that misbehave on purpose, built on bare sockets.

A library client reads whatever arrives and answers pings; these do not, which is how
a frozen browser tab or a vanished laptop looks from the server's side.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

HANDSHAKE = (
    "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def open_raw_websocket(
    host: str, port: int, path: str, receive_buffer: int | None = None
) -> socket.socket:
    """Complete a WebSocket handshake and return the socket, with nothing read past it."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        # Set before connect, so the advertised TCP window is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, (host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = HANDSHAKE.format(path=path, host=host, port=port, key=key)
        await loop.sock_sendall(sock, request.encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            # One byte at a time: the frames after the headers must stay unread.
            byte = await loop.sock_recv(sock, 1)
            if not byte:
                raise ConnectionError(f"closed during the handshake: {head!r}")
            head += byte
    except BaseException:
        sock.close()
        raise
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(f"handshake refused: {head.splitlines()[0]!r}")
    return sock


async def read_until_closed(sock: socket.socket) -> int:
    """Read everything until the server closes or resets the connection; returns the bytes."""
    loop = asyncio.get_running_loop()
    total = 0
    while True:
        try:
            chunk = await loop.sock_recv(sock, 1 << 16)
        except ConnectionResetError:
            return total
        if not chunk:
            return total
        total += len(chunk)


def masked_frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True) -> bytes:
    """One client-to-server frame, masked as RFC 6455 requires (unless told otherwise)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, (0x80 if mask else 0) | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, size)
    else:
        header = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, size)
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def raw_http(host: str, port: int, request: bytes) -> bytes:
    """Send bytes as they are (headers no client library would send) and read the answer."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
