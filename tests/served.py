"""A real simsvc app on a free port, served from a thread of its own.

The blocking client must be tested while the calling thread waits; the service therefore
cannot share that thread's event loop.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from simsvc import sim
from simsvc.client.sync import LoopThread
from simsvc.web import Config, create_app

TEST_CONFIG = Config(db_path=":memory:", workers=2, executor="thread", heartbeat_s=30.0)


@contextmanager
def served(models: Mapping[str, sim.Model] | None = None, **overrides: Any) -> Iterator[str]:
    """The base URL of an app with the test config (and `overrides`), until the block ends."""
    config = Config(**{**TEST_CONFIG.__dict__, **overrides})
    portal = LoopThread()
    server: TestServer | None = None
    try:
        server = portal.call(_start(create_app(config, models=models)))
        yield str(server.make_url("")).rstrip("/")
    finally:
        if server is not None:
            portal.call(server.close())
        portal.stop()


async def _start(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server
