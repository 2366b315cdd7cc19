"""What every handler reads and writes: a JSON body checked against its schema, ids from
the path, query strings, JSON answers, and the errors of a request that cannot be read."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from . import jsontext
from .openapi import COMPARE_QUERY, MAX_JSON_DEPTH, MAX_SQLITE_INT, SELECT_QUERY
from .resources import CHECKERS
from .schema import Checker, FieldError, InvalidInput, query_values

FLOAT_MAX = sys.float_info.max
QUERIES = {"compare": COMPARE_QUERY, "select": SELECT_QUERY}
BAD_QUERY = "the query string is not valid"


class BadRequest(Exception):
    """A request that cannot be read at all: malformed JSON, bad encoding, bad query."""


class TooBusy(Exception):
    """A bounded resource is in use; the client may retry shortly."""


def _unstorable(value: Any) -> list[FieldError]:
    """Values JSON can carry but the service cannot keep: NaN, infinities, integers past
    a double's range, lone surrogates. Walked without recursion; deep nesting is a 400."""
    errors: list[FieldError] = []
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        where = path or "body"
        if isinstance(item, float) and not math.isfinite(item):
            errors.append(FieldError(field=where, message=f"{item} is not a finite number"))
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > FLOAT_MAX:
            message = f"{_digits(item)} is too large: numbers are limited to ±{FLOAT_MAX:.4g}"
            errors.append(FieldError(field=where, message=message))
        elif isinstance(item, str):
            errors.extend(_surrogates(item, where))
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise BadRequest(
                    f"the JSON is nested too deeply: the limit is {MAX_JSON_DEPTH} levels"
                )
            stack.extend(reversed(_children(item, path, where, depth + 1, errors)))
    return errors


def _children(
    item: dict[str, Any] | list[Any], path: str, where: str, depth: int, errors: list[FieldError]
) -> list[tuple[Any, str, int]]:
    if isinstance(item, list):
        return [(v, f"{path}[{i}]", depth) for i, v in enumerate(item)]
    # A bad key is reported on its parent: it must not leak into a field name.
    bad_keys = [e for k in item for e in _surrogates(k, where)]
    errors.extend(bad_keys)
    if bad_keys:
        return []
    return [(v, f"{path}.{k}" if path else k, depth) for k, v in item.items()]


def _digits(number: int) -> str:
    text = str(number)
    return text if len(text) <= 20 else f"an integer of {len(text)} digits"


def _surrogates(text: str, where: str) -> list[FieldError]:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = f"\\u{ord(text[exc.start]):04x}"
        return [FieldError(field=where, message=f"holds a lone surrogate {char}: not Unicode")]
    return []


async def read_json(request: web.Request, checker: Checker, empty: Any = None) -> Any:
    """The body as JSON checked against a schema; `empty` stands in for no body."""
    try:
        raw = await request.read()
    except web.RequestPayloadError as exc:
        # A Content-Encoding (gzip, deflate) whose data does not decode.
        encoding = request.headers.get("Content-Encoding", "its Content-Encoding")
        raise BadRequest(f"the body is not valid {encoding} data") from exc
    if not raw.strip():
        if empty is None:
            raise BadRequest("a JSON body is required")
        return empty
    value = _parse_json(raw)
    errors = _unstorable(value)
    if errors:
        raise InvalidInput(errors)
    checker.check(value)
    return value


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        message = f"the JSON is nested too deeply: the limit is {MAX_JSON_DEPTH} levels"
        raise BadRequest(message) from exc
    except ValueError as exc:
        # Well-formed JSON whose integer is longer than Python's conversion limit.
        message = f"a number is longer than the limit of {sys.get_int_max_str_digits()} digits"
        raise InvalidInput([FieldError(field="body", message=message)]) from exc


def path_id(request: web.Request, name: str) -> int:
    return int(request.match_info[name])


def query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"\d{1,19}", raw) or int(raw) > MAX_SQLITE_INT:
        raise BadRequest(f"query parameter {name} must be an integer from 0 to {MAX_SQLITE_INT}")
    return int(raw)


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=jsontext.dumps(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def read_query(request: web.Request, name: str) -> dict[str, Any]:
    """The query string checked against QUERIES[name], with the schema's defaults filled in."""
    schema = QUERIES[name]
    values = query_values(request.query, schema)
    errors = request.app[CHECKERS][name].errors(values)
    if errors:
        raise InvalidInput(errors, BAD_QUERY)
    defaults = {k: p["default"] for k, p in schema["properties"].items() if "default" in p}
    return {**defaults, **values}
