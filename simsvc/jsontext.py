"""JSON text as every reader can parse it: never NaN or Infinity.

Python's `json` writes non-finite floats as the bare words `NaN` and `Infinity`, which
are not JSON: a browser's `JSON.parse` rejects the whole message. Input is checked, but a
statistic can still overflow (a model with extreme params); such a value goes out as
`null`, the same as a statistic that cannot be computed.

Also here: the JSON type each stored metrics value takes, as SQLite's `json_each` names
it, which a run records so that its export knows its columns before its first row.
"""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(value: Any, *, separators: tuple[str, str] | None = None) -> str:
    """`json.dumps(value, ensure_ascii=False)`, with every non-finite float as null."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=separators)
    except ValueError:
        # Only on the rare non-finite value: the walk costs a copy of the value.
        return json.dumps(finite(value), ensure_ascii=False, separators=separators)


def finite(value: Any) -> Any:
    """A copy of `value` with NaN and infinities replaced by None, walked without recursion."""
    root: list[Any] = [value]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while stack:
        parent, key, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            parent[key] = None
        elif isinstance(item, dict):
            copy = dict(item)
            parent[key] = copy
            stack.extend((copy, k, v) for k, v in copy.items())
        elif isinstance(item, list | tuple):
            items = list(item)
            parent[key] = items
            stack.extend((items, i, v) for i, v in enumerate(items))
    return root[0]


# A value's JSON type as SQLite's json_each names it, by Python type: what the encoded
# metrics of a row hold. An integer outside 64 bits is "bigint": SQLite reads it as real.
MetricKinds = dict[str, set[str]]  # metrics key -> the JSON types its values take
_KIND_OF_TYPE = {float: "real", str: "text", dict: "object", list: "array", type(None): "null"}
_INT64 = (-(2**63), 2**63 - 1)


def json_kind(value: Any) -> str:
    """The json_each type of `value` as encoded (non-finite floats are written as null)."""
    kind = _KIND_OF_TYPE.get(type(value))
    if kind == "real":
        return "real" if math.isfinite(value) else "null"
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return "integer" if _INT64[0] <= value <= _INT64[1] else "bigint"
    if isinstance(value, float):
        return "real" if math.isfinite(value) else "null"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return "text"


def add_kinds(kinds: MetricKinds, metrics: dict[str, Any]) -> None:
    """Record the JSON type of each of one row's metrics values in `kinds`."""
    for key, value in metrics.items():
        kind = _KIND_OF_TYPE.get(type(value)) or json_kind(value)
        if kind == "real" and not math.isfinite(value):
            kind = "null"
        if key in kinds:
            kinds[key].add(kind)
        else:
            kinds[key] = {kind}
