"""Rows as analysts read them: metrics as columns of their own, and pandas when installed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas


def flat_rows(
    rows: Sequence[Mapping[str, Any]], names: Mapping[int, str] | None = None
) -> list[dict[str, Any]]:
    """Each row with its `metrics` spread into columns (as the service's CSV has them).

    With `names` (scenario id to name), a `scenario_name` column follows `scenario_id`.
    """
    flat_list = []
    for row in rows:
        flat: dict[str, Any] = {}
        for key, value in row.items():
            if key == "metrics":
                continue
            flat[key] = value
            if key == "scenario_id" and names is not None:
                flat["scenario_name"] = names.get(value)
        for key, value in (row.get("metrics") or {}).items():
            flat[f"metrics.{key}" if key in flat else key] = value
        flat_list.append(flat)
    return flat_list


def to_frame(rows: Sequence[Mapping[str, Any]]) -> pandas.DataFrame:
    """A pandas DataFrame of flat rows; ImportError with the install hint without pandas."""
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "results_frame() needs pandas: pip install '.[pandas]' in the simsvc source tree"
        ) from None
    return pandas.DataFrame(list(rows))


def scenario_names(info: Mapping[str, Any]) -> dict[int, str]:
    """Scenario id to name, from the snapshot a run keeps of its scenarios."""
    snapshot = info.get("scenarios") or {}
    return {int(sid): str(s.get("scenario_name", "")) for sid, s in snapshot.items()}
