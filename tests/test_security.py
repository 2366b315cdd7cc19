"""Access control: bearer tokens, WebSocket origins, CORS and the exposure warning."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from simsvc.__main__ import parse_args
from simsvc.security import warn_if_exposed

from .conftest import Client, MakeClient, wait_for_run
from .rawsocket import raw_http

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


# -- Host names: DNS rebinding -----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed_hosts", "answered"),
    [
        ("127.0.0.1:8000", (), True),  # the default address
        ("localhost:8000", (), True),  # loopback by name
        ("[::1]:8000", (), True),  # IPv6 loopback
        ("app.localhost", (), True),  # *.localhost resolves to loopback (RFC 6761)
        ("evil.example:8000", (), False),  # DNS rebinding: a foreign name on our address
        ("evil.example", ("planner.lan",), False),  # still foreign with other names allowed
        ("planner.lan:8000", ("planner.lan",), True),  # a configured name
        ("PLANNER.LAN.", ("planner.lan",), True),  # names compare without case or final dot
        ("a.corp.example", (".corp.example",), True),  # a leading dot allows subdomains
        ("192.168.1.20:8000", ("192.168.1.20",), True),  # the address bound with --host
        ("192.168.1.20:8000", (), False),  # an address nobody configured
        ("10.0.0.7", ("0.0.0.0",), True),  # bound to every interface: any address literal
        ("evil.example", ("0.0.0.0",), False),  # ... but still no foreign name
        ("anything.example", ("*",), True),  # the check turned off
        ("bad host:1:2", (), False),  # not a host at all
    ],
)
async def test_requests_naming_a_foreign_host_get_421(
    make_client: MakeClient, host: str, allowed_hosts: tuple[str, ...], answered: bool
) -> None:
    client = await make_client(allowed_hosts=allowed_hosts)
    read = await client.get("/api/results", headers={"Host": host})
    change = await client.post(
        "/api/scenarios", json={"scenario_name": "rebound"}, headers={"Host": host}
    )
    if answered:
        assert (read.status, change.status) == (200, 201)
        return
    assert (read.status, change.status) == (421, 421)
    assert read.content_type == "application/problem+json"
    assert "--allowed-host" in (await read.json())["detail"]
    names = [s["scenario_name"] for s in await (await client.get("/api/scenarios")).json()]
    assert "rebound" not in names


async def test_websocket_handshake_with_a_foreign_host_and_matching_origin_gets_421(
    client: Client,
) -> None:
    # The page of a rebound name sends an Origin that matches its own Host header.
    headers = {"Host": "evil.example:8000", "Origin": "http://evil.example:8000"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect("/ws/events", headers=headers)
    assert refused.value.status == 421


# -- cross-site requests ---------------------------------------------------------------

CROSS_SITE_CALLS = [
    ("POST", "/api/scenarios", b'{"scenario_name": "csrf"}'),  # creates a scenario
    ("POST", "/api/simulations", b"{}"),  # starts a run
    ("POST", "/api/simulations", None),  # the body-less form the seed's client uses
    ("PATCH", "/api/scenarios/1", b'{"scenario_name": "csrf"}'),  # renames one
    ("DELETE", "/api/scenarios/3", None),  # deletes one
    ("POST", "/api/notify-completion", None),  # broadcasts
]


@pytest.mark.parametrize(("method", "path", "body"), CROSS_SITE_CALLS)
@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",  # another site
        "null",  # a sandboxed frame or a file:// page
        f"{ALLOWED_ORIGIN}.evil.example",  # a prefix of an allowed origin is not it
    ],
)
async def test_changes_from_a_foreign_origin_get_403_and_change_nothing(
    make_client: MakeClient, method: str, path: str, body: bytes | None, origin: str
) -> None:
    client = await make_client(cors_origins=(ALLOWED_ORIGIN,))
    before = await (await client.get("/api/scenarios")).json()
    headers = {"Origin": origin, "Content-Type": "application/json"}
    resp = await client.request(method, path, data=body, headers=headers)
    assert resp.status == 403, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert "--cors-origin" in (await resp.json())["detail"]
    assert await (await client.get("/api/scenarios")).json() == before
    assert await (await client.get("/api/simulations")).json() == []


@pytest.mark.parametrize(
    "origin",
    [
        None,  # not a browser
        ALLOWED_ORIGIN,  # listed with --cors-origin
        "own",  # the service's own page (the dashboard, /docs)
    ],
)
async def test_changes_from_allowed_origins_pass(
    make_client: MakeClient, origin: str | None
) -> None:
    client = await make_client(cors_origins=(ALLOWED_ORIGIN,))
    own = f"http://{client.server.host}:{client.server.port}"
    headers = {} if origin is None else {"Origin": own if origin == "own" else origin}
    resp = await client.post("/api/scenarios", json={"scenario_name": "ok"}, headers=headers)
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/scenarios", b'{"scenario_name": "form"}'),
        ("POST", "/api/simulations", b'{"replications": 1}'),
        ("PATCH", "/api/scenarios/1", b'{"scenario_name": "form"}'),
        ("POST", "/api/simulations/1/extend", b'{"replications": 1}'),
        (
            "POST",
            "/api/results",
            b'[{"scenario_id": 1, "replication": 1, "total_labor_costs": 1,'
            b' "ontime_delivery_rate": 1}]',
        ),
    ],
)
@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",  # what a cross-site fetch may send without a preflight
        "application/x-www-form-urlencoded",  # an HTML form
        "multipart/form-data; boundary=x",  # an HTML form with files
        None,  # a Blob body without a type
    ],
)
async def test_json_bodies_with_another_content_type_get_415(
    client: Client, method: str, path: str, body: bytes, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    # aiohttp's client labels raw bytes itself unless told otherwise.
    resp = await client.request(
        method, path, data=body, headers=headers, skip_auto_headers=["Content-Type"]
    )
    assert resp.status == 415, await resp.text()
    assert "application/json" in (await resp.json())["detail"]
    assert [s["scenario_name"] for s in await (await client.get("/api/scenarios")).json()] == [
        "現状シナリオ",
        "人員1名追加",
        "人員1名削減",
    ]
    assert await (await client.get("/api/results")).json() == []


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",  # with its charset parameter
        "Application/JSON",  # media types compare without case
        "application/merge-patch+json",  # a structured +json type
    ],
)
async def test_json_content_types_are_accepted(client: Client, content_type: str) -> None:
    resp = await client.post(
        "/api/scenarios", data=b'{"scenario_name": "typed"}', headers={"Content-Type": content_type}
    )
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize("path", ["/api/simulations", "/api/notify-completion"])
async def test_body_less_posts_of_the_seed_client_still_work(client: Client, path: str) -> None:
    # requests.post(url) sends no Content-Type and an empty body.
    resp = await client.post(path, skip_auto_headers=["Content-Type"])
    assert resp.status in (200, 202), await resp.text()


# -- small ones: odd tokens, the access log, browser headers -------------------------


async def test_an_authorization_header_that_is_not_utf8_is_401(guarded: Client) -> None:
    assert guarded.port is not None
    request = (
        b"POST /api/notify-completion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
        b"Authorization: Bearer \xff\xfe\x80token\r\nConnection: close\r\n\r\n"
    )
    answer = await raw_http(guarded.host, guarded.port, request)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"application/problem+json" in answer


@pytest.mark.parametrize(
    "query",
    [
        "token={}",  # plain
        "%74oken={}",  # a percent-encoded letter: the server decodes it to "token"
        "x=1&t%6F%6Ben={}",  # more of them, after another parameter
        "TOKEN={}",  # another case
    ],
)
async def test_query_tokens_are_redacted_from_the_access_log_however_spelled(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture, query: str
) -> None:
    client = await make_client(token=TOKEN)
    assert client.port is not None
    # Raw bytes: a client library would normalise %74 back to "t" before sending.
    request = f"GET /api/health?{query.format(TOKEN)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    with caplog.at_level(logging.INFO, logger="aiohttp.access"):
        answer = await raw_http(
            client.host, client.port, f"{request}Connection: close\r\n\r\n".encode()
        )
    assert answer.startswith(b"HTTP/1.1 200")
    logged = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert any("=[redacted]" in line for line in logged), logged
    assert not any(TOKEN in line for line in logged), logged


async def test_replay_needs_the_token_when_one_is_set(guarded: Client) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    resp = await guarded.post("/api/simulations", json={"replications": 1, "seed": 3}, headers=auth)
    run_id = (await resp.json())["run_id"]
    path = f"/api/simulations/{run_id}/replications/1/1"
    refused = await guarded.get(path)
    assert refused.status == 401
    assert (await guarded.get(path, headers=auth)).status == 200


async def test_only_one_replay_runs_at_a_time(client: Client) -> None:
    run_id = (
        (await client.post("/api/simulations", json={"replications": 1}))
        .headers["Location"]
        .rsplit("/", 1)[1]
    )
    app = client.app
    assert app is not None
    from simsvc.resources import REPLAY_SLOT

    async with app[REPLAY_SLOT]:  # a replay in progress
        busy = await client.get(f"/api/simulations/{run_id}/replications/1/1")
    assert busy.status == 429
    assert busy.headers["Retry-After"] == "1"
    assert (await client.get(f"/api/simulations/{run_id}/replications/1/1")).status == 200


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/docs", "/docs/", "/api/results"])
async def test_pages_carry_csp_nosniff_and_frame_protection(client: Client, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    csp = resp.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'self'" in csp
    assert "'unsafe-eval'" not in csp
    if path.startswith("/docs"):
        # Swagger UI's one inline start-up script is allowed by its hash, nothing else.
        assert re.search(r"script-src 'self' 'sha256-[A-Za-z0-9+/=]{44}'(;|$)", csp), csp
        assert "script-src 'self' 'unsafe-inline'" not in csp
