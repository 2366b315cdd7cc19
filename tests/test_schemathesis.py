"""Property-based fuzzing of every documented operation, one by one and in linked sequences.

Schemathesis reads /openapi.json from a live server and checks every answer: no 5xx,
status codes, content types and bodies as documented, invalid input refused, valid
input accepted. The server runs in a thread of this process on a free port.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.schemas import OpenApiSchema

from simsvc.web import Config, create_app

MAX_EXAMPLES = 15
CASES: Counter[str] = Counter()
log = logging.getLogger(__name__)

# A request can be well-formed by its schema yet refer to rows that do not exist
# (scenario_ids, ingested scenario ids) or hold params the chosen model refuses; the
# service answers those 422, which no JSON Schema of the body can express.
CONFIG = f"""
[generation]
max-examples = {MAX_EXAMPLES}

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "404", "409", "422"]

[phases.stateful]
max-steps = 8
"""


class LiveServer:
    """The app served from a thread with its own event loop; `restart` empties its state."""

    def __init__(self) -> None:
        self.url = ""
        self._port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-server")

    def __enter__(self) -> LiveServer:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *_: object) -> None:
        try:
            self._call(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def restart(self) -> None:
        """A fresh app on the same port: state left by earlier examples is gone."""
        self._call(self._stop())
        self._call(self._start())

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _start(self) -> None:
        config = Config(db_path=":memory:", executor="thread", workers=1)
        self._runner = web.AppRunner(create_app(config), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self._port).start()
        host, self._port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{self._port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    with LiveServer() as server:
        yield server
    log.info("schemathesis cases run: %s", dict(CASES))


@pytest.fixture(scope="module")
def live_url(live_server: LiveServer) -> str:
    return live_server.url


@pytest.fixture(scope="module")
def api_schema(live_url: str) -> OpenApiSchema:
    config = schemathesis.Config.from_str(CONFIG)
    return schemathesis.openapi.from_url(f"{live_url}/openapi.json", config=config)


def stop_runs_started_by(response: Any, base_url: str) -> None:
    """Cancel a run a fuzzed request started, so that fuzzing does not queue CPU work."""
    if response.status_code != 202 or not isinstance(response.json(), dict):
        return
    run_id = response.json().get("run_id")
    if isinstance(run_id, int):
        requests.post(f"{base_url}/api/simulations/{run_id}/cancel", timeout=10)


schema = schemathesis.pytest.from_fixture("api_schema")
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@schema.parametrize()
@SETTINGS
def test_every_operation_survives_fuzzing(case: schemathesis.Case[Any], live_url: str) -> None:
    response = case.call_and_validate()
    CASES["single"] += 1
    stop_runs_started_by(response, live_url)
    # Bytes, not text: an answer may be binary (Parquet).
    assert b"Traceback" not in response.content


def test_linked_sequences_survive_fuzzing(
    api_schema: OpenApiSchema, live_server: LiveServer, live_url: str
) -> None:
    machine = api_schema.as_state_machine()

    class Sequences(machine):  # type: ignore[valid-type,misc]
        def setup(self) -> None:
            # Each sequence starts from a fresh database, so that Hypothesis sees the same
            # answers when it replays one (a scenario name taken by an earlier sequence
            # would turn a 201 into a 409 and change which links can be followed).
            live_server.restart()

        def after_call(self, response: Any, case: schemathesis.Case[Any]) -> None:
            CASES["in sequences"] += 1
            stop_runs_started_by(response, live_url)

    Sequences.run(
        settings=settings(max_examples=MAX_EXAMPLES, deadline=None, stateful_step_count=8)
    )
    assert requests.get(f"{live_url}/api/health", timeout=10).status_code == 200
