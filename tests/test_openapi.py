"""The OpenAPI document: one operation per served route, and the schemas validation uses."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from aiohttp import web

from simsvc.openapi import build_spec, request_schemas
from simsvc.openapi.operations import OPERATIONS, Answer, Link, Operation
from simsvc.openapi.paths import build_paths
from simsvc.sim import load_models

from .conftest import Client

Route = tuple[str, str]


def served_routes(app: web.Application) -> Counter[Route]:
    """(method, path) of every /api route the app serves, HEAD aside (aiohttp adds it)."""
    served: Counter[Route] = Counter()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = str(info.get("path") or info.get("formatter", ""))
        if path.startswith("/api/") and route.method != "HEAD":
            served[(route.method, path)] += 1
    return served


def documented_operations(spec: dict[str, Any]) -> Counter[Route]:
    return Counter(
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if method != "parameters"
    )


async def test_every_documented_operation_is_one_served_route_and_back(client: Client) -> None:
    spec = await (await client.get("/openapi.json")).json()
    assert client.app is not None
    served = served_routes(client.app)
    table = Counter((op.method.upper(), op.path) for op in OPERATIONS)
    assert spec["openapi"].startswith("3.1")
    assert served, "no /api route found: the route listing is broken, not the table"
    assert max(served.values()) == 1, [r for r, n in served.items() if n > 1]
    assert sorted(table - served) == [], "documented but not served"
    assert sorted(served - table) == [], "served but not documented"
    assert documented_operations(spec) == served


def test_the_document_shows_the_schemas_web_validates_with() -> None:
    schemas = build_spec(load_models())["components"]["schemas"]
    # The same objects, not copies: a change to a validator changes the document.
    for name, schema in (
        ("RunRequest", request_schemas.RUN_REQUEST),
        ("ScenarioCreate", request_schemas.SCENARIO_CREATE),
        ("ScenarioPatch", request_schemas.SCENARIO_PATCH),
        ("ExtendRequest", request_schemas.EXTEND_REQUEST),
        ("SavePointRequest", request_schemas.SAVE_POINT_REQUEST),
        ("IngestRow", request_schemas.INGEST_ROW),
    ):
        assert schemas[name] is schema, name
    paths = build_spec(load_models())["paths"]
    queries = {"compare": request_schemas.COMPARE_QUERY, "select": request_schemas.SELECT_QUERY}
    for tail, query in queries.items():
        parameters = paths[f"/api/simulations/{{run_id}}/{tail}"]["get"]["parameters"]
        assert [p["schema"] for p in parameters] == list(query["properties"].values())


async def test_every_operation_with_a_body_documents_the_415_it_answers(client: Client) -> None:
    spec = await (await client.get("/openapi.json")).json()
    with_body = [op for op in OPERATIONS if op.body is not None]
    assert with_body
    for op in with_body:
        url = re.sub(r"{\w+}", "1", op.path)
        resp = await client.request(
            op.method, url, data="{}", headers={"Content-Type": "text/plain"}
        )
        assert resp.status == 415, (op.method, url, await resp.text())
        assert "415" in spec["paths"][op.path][op.method]["responses"], (op.method, op.path)


ANSWER = Answer(200, schema={"type": "object"})


@pytest.mark.parametrize(
    ("operations", "error"),
    [
        # a link whose target is not in the table would send a client nowhere
        (
            [Operation("post", "/api/a", "t", "s", ANSWER, links=(Link("L", "get", "/b", "id"),))],
            LookupError,
        ),
        # a route listed twice: the second row would silently replace the first
        ([Operation("get", "/api/a", "t", "s", ANSWER)] * 2, ValueError),
    ],
)
def test_a_table_that_contradicts_itself_is_refused(
    operations: list[Operation], error: type[Exception]
) -> None:
    with pytest.raises(error):
        build_paths(operations)
