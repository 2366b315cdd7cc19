"""Bad input everywhere: each is a problem+json 4xx, stores nothing, and leaves the service up."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from simsvc import errorlog, scenario_handlers
from simsvc.openapi import MAX_BODY_BYTES
from simsvc.resources import DB

from .conftest import Client

JSON_TYPE = {"Content-Type": "application/json"}
ROW = {"scenario_id": 1, "replication": 1, "total_labor_costs": 9000.0, "ontime_delivery_rate": 0.9}


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _row(**fields: Any) -> bytes:
    """One ingestion row with `fields` changed, as JSON (big integers stay exact)."""
    return _json({**ROW, **fields})


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


# (method, path, raw body, expected status, a fragment the answer must hold)
BAD_BODIES: list[tuple[str, str, bytes, int, str]] = [
    # Malformed JSON: cut off, trailing garbage, single quotes, a bare word.
    ("POST", "/api/scenarios", b'{"scenario_name": ', 400, "malformed JSON"),
    ("POST", "/api/simulations", b"{} {}", 400, "malformed JSON"),
    ("POST", "/api/results", b"[{'scenario_id': 1}]", 400, "malformed JSON"),
    ("PATCH", "/api/scenarios/1", b"hello", 400, "malformed JSON"),
    # Nested so deep that a recursive parser would blow its stack.
    ("POST", "/api/scenarios", b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    # Nested deep enough to exhaust a recursive walk, not deep enough for the parser.
    *[
        ("POST", path, b"[" * depth + b"]" * depth, 400, "nested too deeply")
        for depth in (33, 500, 700, 900)
        for path in ("/api/scenarios", "/api/results")
    ],
    ("POST", "/api/results", _json([{**ROW, "metrics": _nested(600)}]), 400, "nested too deeply"),
    # Integers no double can hold: float() of them raises OverflowError.
    ("POST", "/api/results", b"[" + _row(total_labor_costs=10**400) + b"]", 422, "too large"),
    ("POST", "/api/results", b"[" + _row(total_labor_costs=2**1024) + b"]", 422, "too large"),
    (
        "POST",
        "/api/results",
        b"[" + _row(metrics={"orders": 10**400}) + b"]",
        422,
        "[0].metrics.orders",
    ),
    (
        "POST",
        "/api/simulations",
        b'{"replications": ' + str(2**1024).encode() + b"}",
        422,
        "too large",
    ),
    # Past the documented bound of ingested values: sums and squares would overflow.
    (
        "POST",
        "/api/results",
        _json([{**ROW, "total_labor_costs": 1.797e308}]),
        422,
        "maximum of 1000000000000000",
    ),
    ("POST", "/api/results", _json([{**ROW, "metrics": {"x": -2e15}}]), 422, "[0].metrics.x"),
    # Not UTF-8: a Latin-1 byte, and an overlong encoding of "/".
    ("POST", "/api/scenarios", b'{"scenario_name": "caf\xe9"}', 400, "not valid UTF-8"),
    ("POST", "/api/results", b'[{"scenario_id": "\xc0\xaf"}]', 400, "not valid UTF-8"),
    # Valid JSON escapes that decode to a lone surrogate, which SQLite cannot store.
    ("POST", "/api/scenarios", b'{"scenario_name": "\\ud800"}', 422, "lone surrogate"),
    ("POST", "/api/results", _json([{**ROW, "metrics": {"\udc00": 1}}]), 422, "surrogate"),
    # JSON that is not an object (or, for ingestion, not a list).
    ("POST", "/api/scenarios", b"[1, 2]", 422, "is not of type 'object'"),
    ("POST", "/api/simulations", b'"run everything"', 422, "is not of type 'object'"),
    ("POST", "/api/simulations", b"null", 422, "is not of type 'object'"),
    ("PATCH", "/api/scenarios/1", b"42", 422, "is not of type 'object'"),
    ("POST", "/api/results", _json(ROW), 422, "is not of type 'array'"),
    # Wrong types.
    ("POST", "/api/simulations", _json({"replications": "30"}), 422, "replications"),
    ("POST", "/api/simulations", _json({"replications": True}), 422, "replications"),
    ("POST", "/api/simulations", _json({"seed": 1.5}), 422, "seed"),
    ("POST", "/api/simulations", _json({"scenario_ids": 1}), 422, "scenario_ids"),
    ("POST", "/api/scenarios", _json({"scenario_name": 7}), 422, "scenario_name"),
    ("POST", "/api/scenarios", _json({"scenario_name": "w", "params": []}), 422, "params"),
    ("POST", "/api/results", _json([{**ROW, "scenario_id": "1"}]), 422, "[0].scenario_id"),
    # NaN and infinities: Python's json module reads them; JSON has no such numbers.
    ("POST", "/api/simulations", b'{"pace_s": NaN}', 422, "not a finite number"),
    ("POST", "/api/simulations", b'{"pace_s": Infinity}', 422, "not a finite number"),
    (
        "POST",
        "/api/results",
        b'[{"scenario_id": 1, "replication": 1, '
        b'"total_labor_costs": -Infinity, "ontime_delivery_rate": 0.5}]',
        422,
        "finite",
    ),
    (
        "POST",
        "/api/scenarios",
        b'{"scenario_name": "n", "params": {"workers": 1e999}}',
        422,
        "not a finite number",
    ),  # 1e999 overflows to infinity while parsing
    # Huge integers: past the limits, past 64 bits, past Python's digit limit.
    ("POST", "/api/simulations", _json({"replications": 100_001}), 422, "maximum of 100000"),
    ("POST", "/api/simulations", _json({"seed": 2**64}), 422, "seed"),
    ("POST", "/api/simulations", _json({"scenario_ids": [2**70]}), 422, "scenario_ids[0]"),
    ("POST", "/api/results", _json([{**ROW, "replication": 10**30}]), 422, "replication"),
    (
        "POST",
        "/api/simulations",
        b'{"replications": 1' + b"0" * 5000 + b"}",
        422,
        "limit of 4300 digits",
    ),
    # Negative and zero counts.
    ("POST", "/api/simulations", _json({"replications": 0}), 422, "minimum of 1"),
    ("POST", "/api/simulations", _json({"replications": -5}), 422, "minimum of 1"),
    ("POST", "/api/simulations", _json({"scenario_ids": []}), 422, "minimum of 1 items"),
    ("POST", "/api/simulations", _json({"pace_s": -1}), 422, "pace_s"),
    ("POST", "/api/results", _json([{**ROW, "replication": 0}]), 422, "replication"),
    ("POST", "/api/results", _json([{**ROW, "total_labor_costs": -1}]), 422, "total_labor"),
    ("POST", "/api/results", b"[]", 422, "minimum of 1 items"),
    (
        "POST",
        "/api/scenarios",
        _json({"scenario_name": "z", "params": {"workers": 0}}),
        422,
        "params.workers",
    ),
    # Names: empty, blank, and 10,000 characters (the refusal names the 200 limit).
    ("POST", "/api/scenarios", _json({"scenario_name": ""}), 422, "scenario_name"),
    ("POST", "/api/scenarios", _json({"scenario_name": "   "}), 422, "scenario_name"),
    (
        "POST",
        "/api/scenarios",
        _json({"scenario_name": "x" * 10_000}),
        422,
        "limit of 200 characters",
    ),
    (
        "PATCH",
        "/api/scenarios/1",
        _json({"scenario_name": "名" * 10_000}),
        422,
        "limit of 200 characters",
    ),
    # Too many scenarios in one run: the refusal names the limit.
    (
        "POST",
        "/api/simulations",
        _json({"scenario_ids": list(range(1, 1002))}),
        422,
        "limit of 1000 items",
    ),
    # Unknown fields and unknown references.
    ("POST", "/api/simulations", _json({"replication": 3}), 422, "replication"),
    ("POST", "/api/simulations", _json({"scenario_ids": [999]}), 422, "does not exist"),
    ("POST", "/api/results", _json([{**ROW, "scenario_id": 999}]), 422, "does not exist"),
    # A body is required where there is nothing to default to.
    ("POST", "/api/scenarios", b"", 400, "body is required"),
]


async def _state(client: Client) -> list[Any]:
    """Everything a refused request must leave untouched."""
    paths = ("/api/scenarios", "/api/simulations", "/api/results")
    return [await (await client.get(p)).json() for p in paths]


async def _assert_refused_cleanly(resp: Any, status: int) -> str:
    text: str = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/problem+json"
    problem = json.loads(text)
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert "Traceback" not in text
    assert 'File "' not in text
    return text


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), BAD_BODIES)
async def test_bad_bodies_are_refused_with_problem_json_and_change_nothing(
    client: Client, method: str, path: str, body: bytes, status: int, fragment: str
) -> None:
    before = await _state(client)
    resp = await client.request(
        method, path, data=body, headers={"Content-Type": "application/json"}
    )
    text = await _assert_refused_cleanly(resp, status)
    assert fragment in json.loads(text)["detail"] + json.dumps(
        json.loads(text).get("errors", []), ensure_ascii=False
    )
    assert await _state(client) == before
    assert (await client.get("/api/health")).status == 200


# (method, path, expected status): ids that are not ids.
BAD_IDS = [
    ("GET", "/api/simulations/abc", 404),  # not a number
    ("GET", "/api/simulations/1.5", 404),  # not an integer
    ("GET", "/api/simulations/-1", 404),  # negative
    ("GET", "/api/simulations/0", 404),  # ids start at 1
    ("GET", "/api/simulations/99999999999999999999999", 404),  # past 64 bits
    ("GET", "/api/simulations/999999999999999999", 404),  # fits, but no such run
    ("POST", "/api/simulations/1e3/cancel", 404),  # exponent notation
    ("GET", "/api/simulations/%00/results", 404),  # a NUL byte
    ("GET", "/api/scenarios/%ED%A0%80", 404),  # a UTF-8-encoded surrogate
    ("GET", "/api/scenarios/%FF", 404),  # a byte that is not UTF-8
    ("PATCH", "/api/scenarios/" + "9" * 400, 404),  # 400 digits
    ("DELETE", "/api/scenarios/1;DROP TABLE scenarios", 404),  # SQL in the path
    ("GET", "/api/results?run_id=abc", 400),  # a query id that is not a number
    ("GET", "/api/results?run_id=" + "9" * 30, 400),  # a query id past 64 bits
    ("GET", "/api/results?run_id=-3", 400),  # a negative query id
    ("GET", "/api/results?run_id=12345", 404),  # a run that does not exist
    ("GET", "/api/simulations/1/results?format=xml", 400),  # an unknown format
]


@pytest.mark.parametrize(("method", "path", "status"), BAD_IDS)
async def test_ids_that_are_not_ids_get_4xx_problem_json(
    client: Client, method: str, path: str, status: int
) -> None:
    before = await _state(client)
    resp = await client.request(method, path)
    await _assert_refused_cleanly(resp, status)
    assert await _state(client) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/simulations"),
        ("POST", "/api/scenarios"),
        ("PATCH", "/api/scenarios/1"),
        ("POST", "/api/results"),
    ],
)
async def test_body_over_one_mebibyte_is_413_naming_the_limit(
    client: Client, method: str, path: str
) -> None:
    body = b'{"scenario_name": "' + b"x" * MAX_BODY_BYTES + b'"}'
    # BytesIO: aiohttp's client warns about large raw bytes bodies.
    resp = await client.request(method, path, data=io.BytesIO(body), headers=JSON_TYPE)
    text = await _assert_refused_cleanly(resp, 413)
    assert str(MAX_BODY_BYTES) in json.loads(text)["detail"]
    assert (await client.get("/api/health")).status == 200


@pytest.mark.parametrize(
    "name",
    [
        "x'); DROP TABLE scenarios; --",  # classic injection
        "Robert'); DELETE FROM results WHERE ('1'='1",  # little Bobby Tables
        '" OR 1=1 --',  # double-quoted variant
        "%' UNION SELECT sqlite_version() --",  # LIKE wildcard plus UNION
        "a\x00b",  # an embedded NUL, which C string APIs would cut
        "<script>alert(1)</script>",  # markup, for the dashboard's sake
        "現状シナリオ (コピー)",  # non-ASCII must round-trip too
    ],
)
async def test_sql_looking_names_are_stored_verbatim(client: Client, name: str) -> None:
    resp = await client.post("/api/scenarios", json={"scenario_name": name})
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    fetched = await (await client.get(f"/api/scenarios/{created['scenario_id']}")).json()
    assert fetched["scenario_name"] == name
    names = [s["scenario_name"] for s in await (await client.get("/api/scenarios")).json()]
    assert names[:3] == ["現状シナリオ", "人員1名追加", "人員1名削減"]
    assert name in names


async def test_scenario_count_limit_is_a_409_naming_the_limit(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scenario_handlers, "MAX_SCENARIOS", 4)
    assert (await client.post("/api/scenarios", json={"scenario_name": "4th"})).status == 201
    resp = await client.post("/api/scenarios", json={"scenario_name": "5th"})
    text = await _assert_refused_cleanly(resp, 409)
    assert "limit of 4 scenarios" in json.loads(text)["detail"]
    assert len(await (await client.get("/api/scenarios")).json()) == 4


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PUT", "/api/health", 405),  # a method the resource does not have
        ("DELETE", "/api/simulations", 405),  # runs are never deleted
        ("TRACE", "/api/results", 405),  # a method nothing here speaks
        ("GET", "/api/nothing-here", 404),  # no such resource at all
    ],
)
async def test_unknown_routes_and_methods_are_problem_json(
    client: Client, method: str, path: str, status: int
) -> None:
    resp = await client.request(method, path)
    await _assert_refused_cleanly(resp, status)
    if status == 405:
        assert "GET" in resp.headers["Allow"] or "POST" in resp.headers["Allow"]


@pytest.mark.parametrize(
    "encoding",
    [
        "gzip",  # claims gzip, sends plain bytes
        "deflate",  # claims deflate, sends a broken stream
    ],
)
async def test_a_body_that_does_not_match_its_content_encoding_is_400(
    client: Client, encoding: str
) -> None:
    before = await _state(client)
    resp = await client.post(
        "/api/scenarios",
        data=b"\x00\x01 not compressed at all",
        headers={**JSON_TYPE, "Content-Encoding": encoding, "Connection": "close"},
    )
    text = await _assert_refused_cleanly(resp, 400)
    assert encoding in json.loads(text)["detail"]
    assert await _state(client) == before


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (b"[" * 700 + b"]" * 700, None),  # deep nesting: a RecursionError traceback
        (b"\x00\x01 not compressed", "deflate"),  # a body aiohttp fails to decode
    ],
)
async def test_no_request_makes_the_log_grow_by_more_than_a_few_lines(
    client: Client, caplog: pytest.LogCaptureFixture, body: bytes, encoding: str | None
) -> None:
    # text/plain is refused before the body is read; aiohttp then drains it itself.
    headers = {"Content-Type": "text/plain", "Connection": "close"}
    if encoding:
        headers["Content-Encoding"] = encoding
    with caplog.at_level(logging.INFO):
        for path in ("/api/scenarios", "/api/results", "/api/notify-completion"):
            await client.post(path, data=body, headers=headers)
            await client.post(path, data=body, headers={**headers, **JSON_TYPE})
    lines = [line for r in caplog.records for line in caplog.handler.format(r).splitlines()]
    assert len(lines) <= 3 * 6, "\n".join(lines[:40])
    assert not any("Traceback" in line for line in lines)
    assert (await client.get("/api/health")).status == 200


def test_an_unhandled_error_is_logged_as_one_bounded_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        raise RecursionError("x" * 10_000 + "\nsecond line")

    try:
        deep(500)
    except RecursionError as exc:
        error = exc
    line = errorlog.one_line(error)
    assert "\n" not in line
    assert len(line) < 700
    assert line.startswith("RecursionError: xxx")


async def test_an_unexpected_error_costs_the_log_one_line(
    client: Client, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def deep(n: int) -> None:
        if n:
            deep(n - 1)
        raise RecursionError("maximum recursion depth exceeded\nwith a second line")

    async def broken(*_: object) -> None:
        deep(800)

    app = client.app
    assert app is not None
    monkeypatch.setattr(app[DB], "list_scenarios", broken)
    with caplog.at_level(logging.INFO):
        resp = await client.get("/api/scenarios")
    assert resp.status == 500
    lines = [line for r in caplog.records for line in caplog.handler.format(r).splitlines()]
    errors = [line for line in lines if "ERROR" in line]
    assert len(errors) == 1, lines[:20]
    assert len(lines) <= 3, lines[:20]
    assert "RecursionError" in errors[0]
