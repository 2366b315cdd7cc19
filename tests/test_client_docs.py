"""docs/client.md runs as written against a fresh service, and prints what it shows."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path
from typing import Any

from .served import served

DOC = Path(__file__).resolve().parents[1] / "docs" / "client.md"
DOC_URL = "http://127.0.0.1:8000"
CELL = re.compile(r"```python\n(.*?)```\n(?:\s*```text\n(.*?)```\n)?", re.DOTALL)


def cells(markdown: str) -> list[tuple[str, str | None]]:
    """Each python block of the page, and the text block that shows its output, if any."""
    return [(m.group(1), m.group(2)) for m in CELL.finditer(markdown)]


def run_cells(markdown: str, url: str) -> list[str]:
    """Run the cells in one namespace, as a notebook would; what each one printed."""
    namespace: dict[str, Any] = {}
    printed = []
    for code, _ in cells(markdown):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code.replace(DOC_URL, url), str(DOC), "exec"), namespace)
        printed.append(out.getvalue())
    return printed


def test_the_walkthrough_prints_what_the_page_shows() -> None:
    markdown = DOC.read_text(encoding="utf-8")
    assert DOC_URL in markdown
    with served() as url:
        printed = run_cells(markdown, url)
    for (code, shown), actual in zip(cells(markdown), printed, strict=True):
        assert actual == (shown or ""), f"the cell\n{code}\nprinted\n{actual}"
