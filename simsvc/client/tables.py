"""Rows printed for people (aligned tables), for spreadsheets (CSV) or for programs (JSON)."""

from __future__ import annotations

import csv
import json
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

FORMATS = ("table", "csv", "json")


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of the rows, in the order they first appear."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def write(
    rows: Sequence[Mapping[str, Any]],
    fmt: str,
    out: TextIO,
    columns: Sequence[str] | None = None,
) -> None:
    """`rows` in `fmt`: an aligned table, CSV with a header, or a JSON list."""
    columns = list(columns) if columns is not None else columns_of(rows)
    if fmt == "json":
        json.dump([dict(r) for r in rows], out, ensure_ascii=False, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_csv_cell(r.get(c)) for c in columns] for r in rows])
    else:
        out.write(table(rows, columns))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """An aligned text table: numbers to the right, text to the left."""
    cells = [[_text(r.get(c)) for c in columns] for r in rows]
    numeric = [all(_is_number(r.get(c)) for r in rows) for c in columns]
    widths = [max([_width(c), *(_width(line[i]) for line in cells)]) for i, c in enumerate(columns)]
    lines = [
        _line(list(columns), widths, numeric),
        _line(["-" * w for w in widths], widths, numeric),
    ]
    lines += [_line(line, widths, numeric) for line in cells]
    return "".join(line.rstrip() + "\n" for line in lines)


def _line(cells: list[str], widths: list[int], numeric: list[bool]) -> str:
    padded = []
    for cell, width, right in zip(cells, widths, numeric, strict=True):
        pad = " " * (width - _width(cell))
        padded.append(pad + cell if right else cell + pad)
    return "  ".join(padded)


def _width(text: str) -> int:
    """Columns `text` takes on a terminal: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return value
