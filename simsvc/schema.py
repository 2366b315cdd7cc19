"""JSON Schema validation that reports each problem as a field and a message."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, TypedDict

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError


class FieldError(TypedDict):
    field: str
    message: str


class InvalidInput(Exception):
    """A well-formed value that breaks its schema: a wrong field, type or range."""

    def __init__(
        self, errors: list[FieldError], detail: str = "the request body is not valid"
    ) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors
        self.detail = detail


def _field(error: ValidationError, prefix: str) -> str:
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    path = prefix
    for part in error.absolute_path:
        path = f"{path}[{part}]" if isinstance(part, int) else (f"{path}.{part}" if path else part)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = schema.get("properties", {})
        extra = sorted(k for k in error.instance if k not in allowed)
        if extra:
            return f"{path}.{extra[0]}" if path else extra[0]
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in schema.get("required", []) if k not in error.instance]
        if missing:
            return f"{path}.{missing[0]}" if path else missing[0]
    return path or "body"


_LIMITS = {
    "maxLength": ("is longer than the limit of {} characters", len),
    "minLength": ("is shorter than the minimum of {} characters", len),
    "maxItems": ("has more than the limit of {} items", len),
    "minItems": ("has fewer than the minimum of {} items", len),
}


def _message(error: ValidationError) -> str:
    """jsonschema's message, except that a size refusal names the limit it hit."""
    limit = _LIMITS.get(str(error.validator))
    if limit is None or not isinstance(error.instance, str | list):
        return _short(error.message)
    template, size = limit
    return f"{template.format(error.validator_value)} ({size(error.instance)} given)"


def _short(message: str, limit: int = 300) -> str:
    return message if len(message) <= limit else message[: limit - 1] + "…"


class Checker:
    """A compiled schema: `check(value)` raises InvalidInput with every field at fault."""

    def __init__(self, schema: Mapping[str, Any], prefix: str = "") -> None:
        Draft202012Validator.check_schema(schema)
        self._validator = Draft202012Validator(schema)
        self._prefix = prefix

    def errors(self, value: Any) -> list[FieldError]:
        found = sorted(self._validator.iter_errors(value), key=lambda e: list(map(str, e.path)))
        return [FieldError(field=_field(e, self._prefix), message=_message(e)) for e in found]

    def check(self, value: Any) -> None:
        errors = self.errors(value)
        if errors:
            raise InvalidInput(errors)


def query_values(query: Mapping[str, str], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Query-string values, with numbers parsed where the schema declares a number.

    A value that does not parse stays a string, so that checking it against the same
    schema reports the parameter by name.
    """
    props = schema.get("properties", {})
    return {key: _parsed(raw, props.get(key, {}).get("type")) for key, raw in query.items()}


def _parsed(raw: str, kind: Any) -> Any:
    text = raw.strip()
    if kind == "integer" and re.fullmatch(r"[+-]?\d{1,19}", text):
        return int(text)
    if kind == "number" and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", text):
        value = float(text)
        return value if math.isfinite(value) else raw
    return raw
