"""JSON text as every reader can parse it: never NaN or Infinity.

Python's `json` writes non-finite floats as the bare words `NaN` and `Infinity`, which
are not JSON: a browser's `JSON.parse` rejects the whole message. Input is checked, but a
statistic can still overflow (a model with extreme params); such a value goes out as
`null`, the same as a statistic that cannot be computed.
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
