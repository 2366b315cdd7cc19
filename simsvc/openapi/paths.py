"""The `paths` of the OpenAPI document, built from the table of operations."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .limits import MAX_BODY_BYTES
from .operations import Link, Operation, Query
from .request_schemas import ID
from .result_schemas import ref

PROBLEM_REASONS = {
    400: "malformed request (bad JSON, invalid UTF-8, bad query parameter)",
    401: "missing or wrong bearer token",
    403: "sent from a browser page of another origin (see --cors-origin)",
    404: "no such resource",
    406: "a format this installation cannot produce (Parquet without pyarrow)",
    409: "conflicts with the current state",
    413: f"body over {MAX_BODY_BYTES} bytes",
    415: "a body whose Content-Type is not application/json",
    421: "the Host header names a host this service does not answer to (see --allowed-host)",
    422: "a field with a wrong name, type or range; `errors` names each field",
    429: "busy with the same kind of request; retry after Retry-After seconds",
}
# The edge refuses these before any handler: a foreign Host always, a foreign Origin on changes.
_EDGE_PROBLEMS = {"get": (421,), "post": (403, 421), "patch": (403, 421), "delete": (403, 421)}
_PATH_ID = re.compile(r"{(\w+)}")


def build_paths(operations: Sequence[Operation]) -> dict[str, Any]:
    """Each path with its id parameters and its operations, in the order of the table."""
    paths: dict[str, Any] = {}
    for operation in operations:
        item = paths.setdefault(operation.path, _path_item(operation.path))
        if operation.method in item:
            raise ValueError(f"{operation.method} {operation.path} is in the table twice")
        item[operation.method] = _operation(operation)
    for operation in operations:
        for link in operation.links:
            if link.method not in paths.get(link.path, {}):
                raise LookupError(f"link {link.name} names no operation: {link.method} {link.path}")
    return paths


def _problems(*codes: int) -> dict[str, Any]:
    """The problem+json responses of these statuses."""
    content = {"application/problem+json": {"schema": ref("Problem")}}
    return {str(code): {"description": PROBLEM_REASONS[code], "content": content} for code in codes}


def _path_item(path: str) -> dict[str, Any]:
    ids = _PATH_ID.findall(path)
    if not ids:
        return {}
    return {"parameters": [{"name": n, "in": "path", "required": True, "schema": ID} for n in ids]}


def _operation(operation: Operation) -> dict[str, Any]:
    answer = operation.answer
    edge = [code for code in _EDGE_PROBLEMS[operation.method] if code not in operation.problems]
    spec: dict[str, Any] = {
        "summary": operation.summary,
        "responses": {
            str(answer.status): _success(operation),
            **_problems(*operation.problems, *edge),
        },
    }
    if operation.query:
        spec["parameters"] = [_query(query) for query in operation.query]
    if operation.body is not None:
        content = {"application/json": {"schema": ref(operation.body)}}
        spec["requestBody"] = {"required": operation.body_required, "content": content}
    spec["tags"] = [operation.tag]
    return spec


def _success(operation: Operation) -> dict[str, Any]:
    answer = operation.answer
    response: dict[str, Any] = {"description": answer.description}
    media = {"application/json": answer.schema} if answer.schema is not None else {}
    media.update(answer.formats)
    if media:
        response["content"] = {kind: {"schema": schema} for kind, schema in media.items()}
    if answer.location:
        response["headers"] = {"Location": {"schema": {"type": "string"}}}
    if operation.links:
        response["links"] = {link.name: _link(link) for link in operation.links}
    return response


def _query(query: Query) -> dict[str, Any]:
    spec = {"name": query.name, "in": "query", "required": query.required, "schema": query.schema}
    if query.description is not None:
        spec["description"] = query.description
    return spec


def _link(link: Link) -> dict[str, Any]:
    """An OpenAPI link: the target by JSON Pointer (RFC 6901), its id from the answer's body."""
    pointer = link.path.replace("~", "~0").replace("/", "~1")
    return {
        "operationRef": f"#/paths/{pointer}/{link.method}",
        "parameters": {link.param: f"$response.body#/{link.param}"},
    }
