"""A model that holds its worker until the test lets go, and the test's end of it.

Each replication of `holding` connects to the test's `Holder` on `params.port`, says
which process it runs in, and waits until the test closes the connection. So a test
knows, by events alone, which worker processes are busy, and sees one of them end
(its connection reaches end-of-file) the moment that process is killed.

The model module is imported by worker processes: it imports nothing heavy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from simsvc import sim

ENTRY_POINT = "holding = tests.holding_model:HOLDING"


class HoldingModel(sim.Model):
    """Holds its worker process until the test closes the connection it opens."""

    name = "holding"
    version = "1.0.0"
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 9}},
    }

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        with socket.create_connection(("127.0.0.1", int(params["port"]))) as sock:
            sock.sendall(f"{os.getpid()}\n".encode())
            sock.recv(1)  # until the test lets go (or this process is killed)
        return {"total_labor_costs": 1.0, "ontime_delivery_rate": 1.0}


HOLDING = HoldingModel()


def hold_once(port: int) -> int:
    """Connect to a test's server on `port` and wait until it closes; the worker's pid."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"!")
        sock.recv(1)
    return os.getpid()


@dataclass
class Held:
    """One replication holding its worker: the worker's pid and the test's end."""

    pid: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def ended(self) -> None:
        """Until the worker's end of the connection is closed: its process has died."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(1024):
                pass


class Holder:
    """The test's end: a loopback server that each held replication connects to."""

    def __init__(self) -> None:
        self.arrivals: asyncio.Queue[Held] = asyncio.Queue()
        self._held: list[Held] = []
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> Holder:
        self._server = await asyncio.start_server(self._arrived, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _arrived(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held = Held(int(await reader.readline()), reader, writer)
        self._held.append(held)
        self.arrivals.put_nowait(held)

    async def next(self, limit_s: float = 30.0) -> Held:
        """The next replication to start holding its worker."""
        async with asyncio.timeout(limit_s):
            return await self.arrivals.get()

    def release(self) -> None:
        """Let every held replication finish."""
        for held in self._held:
            held.writer.close()


def install_entry_point(site: Path) -> dict[str, str]:
    """Register `holding` as a plug-in in `site`; the environment a child process needs."""
    info = site / "simsvc_holding_model-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: simsvc-holding-model\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(f"[simsvc.models]\n{ENTRY_POINT}\n", encoding="utf-8")
    root = Path(__file__).resolve().parents[1]
    paths = [str(site), str(root), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
