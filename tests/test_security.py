"""Access control: bearer tokens, WebSocket origins, CORS and the exposure warning."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from simsvc.__main__ import parse_args
from simsvc.security import warn_if_exposed

from .conftest import Client, MakeClient, wait_for_run

TOKEN = "s3cret-token"
ALLOWED_ORIGIN = "https://dashboard.example"

# Every call that changes state, with a body that would otherwise be accepted or refused
# for its own reasons: the token check must come first either way.
MUTATING_CALLS = [
    ("POST", "/api/simulations", {}),  # starts a run
    ("POST", "/api/simulations/1/cancel", None),  # cancels (would be 404 without a token check)
    ("POST", "/api/scenarios", {"scenario_name": "new"}),  # creates a scenario
    ("PATCH", "/api/scenarios/1", {"scenario_name": "renamed"}),  # edits one
    ("DELETE", "/api/scenarios/3", None),  # deletes one
    (
        "POST",
        "/api/results",
        [{"scenario_id": 1, "replication": 1, "total_labor_costs": 1, "ontime_delivery_rate": 1}],
    ),  # ingests rows
    ("POST", "/api/notify-completion", None),  # broadcasts to every socket
    ("POST", "/api/simulations/1/extend", {"replications": 1}),  # adds replications
    ("POST", "/api/simulations/1/resume", None),  # restarts a stopped run
]
AUTHORISED = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def guarded(make_client: MakeClient) -> Client:
    return await make_client(token=TOKEN, cors_origins=(ALLOWED_ORIGIN,))


@pytest.mark.parametrize(("method", "path", "body"), MUTATING_CALLS)
@pytest.mark.parametrize(
    "authorization",
    [
        None,  # no header at all
        f"Bearer wrong-{TOKEN}",  # a wrong token
        f"Basic {TOKEN}",  # the right secret in the wrong scheme
        "Bearer ",  # the scheme with nothing after it
    ],
)
async def test_mutating_calls_without_the_token_get_401_and_change_nothing(
    guarded: Client, method: str, path: str, body: Any, authorization: str | None
) -> None:
    before = await (await guarded.get("/api/scenarios")).json()
    headers = {"Authorization": authorization} if authorization is not None else {}
    resp = await guarded.request(method, path, json=body, headers=headers)
    assert resp.status == 401
    assert resp.content_type == "application/problem+json"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await resp.json())["status"] == 401
    assert await (await guarded.get("/api/scenarios")).json() == before
    assert await (await guarded.get("/api/simulations")).json() == []


async def authorised(
    client: Client, method: str, path: str, status: int, body: Any = None
) -> dict[str, Any]:
    """Make a change with the token; it must succeed with `status`."""
    resp = await client.request(method, path, json=body, headers=AUTHORISED)
    assert resp.status == status, await resp.text()
    return dict(await resp.json()) if resp.status != 204 else {}


async def read(client: Client, path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def starts_a_run(client: Client) -> None:
    run = await authorised(client, "POST", "/api/simulations", 202, {"replications": 2})
    ended = await wait_for_run(client, run["run_id"], headers=AUTHORISED)
    assert (ended["status"], ended["done"]) == ("completed", 6)


async def cancels_and_resumes_a_run(client: Client) -> None:
    body = {"replications": 1000, "pace_s": 1}
    run_id = (await authorised(client, "POST", "/api/simulations", 202, body))["run_id"]
    cancelled = await authorised(client, "POST", f"/api/simulations/{run_id}/cancel", 200)
    assert cancelled["status"] == "cancelled"
    assert (await read(client, f"/api/simulations/{run_id}"))["status"] == "cancelled"
    await authorised(client, "POST", f"/api/simulations/{run_id}/resume", 202)
    assert (await read(client, f"/api/simulations/{run_id}"))["status"] in ("queued", "running")


async def extends_a_run(client: Client) -> None:
    run = await authorised(client, "POST", "/api/simulations", 202, {"replications": 2})
    await wait_for_run(client, run["run_id"], headers=AUTHORISED)
    path = f"/api/simulations/{run['run_id']}"
    await authorised(client, "POST", f"{path}/extend", 202, {"replications": 3})
    ended = await wait_for_run(client, run["run_id"], headers=AUTHORISED)
    assert (ended["status"], ended["replications"], ended["done"]) == ("completed", 5, 15)


async def creates_edits_and_deletes_scenarios(client: Client) -> None:
    created = await authorised(client, "POST", "/api/scenarios", 201, {"scenario_name": "new"})
    await authorised(client, "PATCH", "/api/scenarios/1", 200, {"scenario_name": "renamed"})
    await authorised(client, "DELETE", "/api/scenarios/3", 204)
    names = {s["scenario_id"]: s["scenario_name"] for s in await read(client, "/api/scenarios")}
    assert names == {1: "renamed", 2: "人員1名追加", created["scenario_id"]: "new"}


async def ingests_and_broadcasts_results(client: Client) -> None:
    row = {"scenario_id": 1, "replication": 1, "total_labor_costs": 9000.0}
    body = [{**row, "ontime_delivery_rate": 0.9}]
    assert await authorised(client, "POST", "/api/results", 201, body) == {"inserted": 1}
    async with client.ws_connect(f"/ws/results?token={TOKEN}") as ws:
        await authorised(client, "POST", "/api/notify-completion", 200)
        pushed = json.loads((await ws.receive(timeout=10)).data)
    assert [(a["scenario_id"], a["average_total_costs"]) for a in pushed] == [(1, 9000.0)]


@pytest.mark.parametrize(
    "change",
    [
        starts_a_run,
        cancels_and_resumes_a_run,
        extends_a_run,
        creates_edits_and_deletes_scenarios,
        ingests_and_broadcasts_results,
    ],
)
async def test_changes_with_the_token_succeed_and_take_effect(
    guarded: Client, change: Callable[[Client], Awaitable[None]]
) -> None:
    await change(guarded)


async def test_reads_stay_open_when_a_token_is_set(guarded: Client) -> None:
    for path in ("/api/health", "/api/results", "/api/scenarios", "/api/simulations"):
        assert (await guarded.get(path)).status == 200, path


@pytest.mark.parametrize("path", ["/ws/results", "/ws/events"])
async def test_websocket_handshake_needs_the_token(guarded: Client, path: str) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await guarded.ws_connect(path)
    assert refused.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as wrong:
        await guarded.ws_connect(f"{path}?token=nope")
    assert wrong.value.status == 401
    # Browsers cannot set headers on a handshake, so the query parameter counts too.
    async with guarded.ws_connect(f"{path}?token={TOKEN}") as ws:
        assert not ws.closed
    async with guarded.ws_connect(path, headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert not ws.closed


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser: no Origin header at all
        (ALLOWED_ORIGIN, True),  # listed with --cors-origin
        ("https://evil.example", False),  # another site: cross-site WebSocket hijacking
        ("null", False),  # sandboxed iframes and file:// pages send "null"
        (f"{ALLOWED_ORIGIN}.evil.example", False),  # a prefix of an allowed origin is not it
    ],
)
async def test_websocket_handshake_from_a_foreign_origin_gets_403(
    make_client: MakeClient, origin: str | None, allowed: bool
) -> None:
    client = await make_client(cors_origins=(ALLOWED_ORIGIN,))
    headers = {"Origin": origin} if origin is not None else {}
    if allowed:
        async with client.ws_connect("/ws/events", headers=headers) as ws:
            assert not ws.closed
        return
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws/events", headers=headers)
    assert refused.value.status == 403
    assert (await client.get("/api/health")).status == 200


async def test_websocket_handshake_from_the_service_own_origin_is_allowed(
    client: Client,
) -> None:
    own = f"http://{client.server.host}:{client.server.port}"
    async with client.ws_connect("/ws/results", headers={"Origin": own}) as ws:
        assert not ws.closed


async def test_cors_headers_go_only_to_configured_origins(guarded: Client) -> None:
    allowed = await guarded.get("/api/results", headers={"Origin": ALLOWED_ORIGIN})
    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    foreign = await guarded.get("/api/results", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in foreign.headers
    preflight = await guarded.options(
        "/api/simulations",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert preflight.status == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "AUTHORIZATION" in preflight.headers["Access-Control-Allow-Headers"].upper()


async def test_no_cors_headers_without_configured_origins(client: Client) -> None:
    resp = await client.get("/api/results", headers={"Origin": "https://any.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


@pytest.mark.parametrize(
    ("host", "token", "warns"),
    [
        ("127.0.0.1", None, False),  # the default: loopback only
        ("localhost", None, False),  # loopback by name
        ("::1", None, False),  # IPv6 loopback
        ("0.0.0.0", None, True),  # every interface, open to the network
        ("192.168.1.20", None, True),  # one LAN address
        ("0.0.0.0", TOKEN, False),  # exposed, but guarded by a token
    ],
)
def test_binding_beyond_loopback_without_a_token_warns(
    caplog: pytest.LogCaptureFixture, host: str, token: str | None, warns: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="simsvc.security"):
        assert warn_if_exposed(host, token) is warns
    assert any("without a token" in r.getMessage() for r in caplog.records) is warns


def test_command_line_defaults_to_loopback_and_reads_token_from_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("SIMSVC_HOST", "SIMSVC_TOKEN", "SIMSVC_CORS_ORIGINS"):
        monkeypatch.delenv(name, raising=False)
    defaults = parse_args([])
    assert (defaults.host, defaults.token, defaults.cors_origins) == ("127.0.0.1", None, [])
    monkeypatch.setenv("SIMSVC_TOKEN", TOKEN)
    monkeypatch.setenv("SIMSVC_CORS_ORIGINS", f"{ALLOWED_ORIGIN}, http://localhost:3000")
    from_env = parse_args([])
    assert from_env.token == TOKEN
    assert from_env.cors_origins == [ALLOWED_ORIGIN, "http://localhost:3000"]
    flags = parse_args(["--token", "x", "--cors-origin", "http://a", "--cors-origin", "http://b"])
    assert (flags.token, flags.cors_origins) == ("x", ["http://a", "http://b"])


async def test_query_tokens_are_redacted_from_the_access_log(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(token=TOKEN)
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        async with client.ws_connect(f"/ws/results?token={TOKEN}") as ws:
            assert not ws.closed
        await client.get(f"/api/health?x=1&token={TOKEN}")
    logged = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any("token=[redacted]" in line for line in logged), logged
    assert not any(TOKEN in line for line in logged)
