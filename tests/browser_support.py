"""What the browser tests share: a live `python -m simsvc`, Debian's chromium driven by
Playwright, a console watcher, and axe-core for the accessibility checks.

Without the browser (or axe-core) the tests skip, except under CI=true, where a missing
tool is a failure. `./scripts/test` installs both.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, expect, sync_playwright

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    # Without these, chromium keeps calling home, which this kind of machine refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_LIMIT_S = 20.0
WAIT_MS = 15_000


AXE_PATH = ROOT / "tests" / ".axe" / "node_modules" / "axe-core" / "axe.min.js"


def missing_tool(message: str) -> None:
    """Skip, or fail under CI, where every tool must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def chromium_path() -> str:
    """The system chromium, or skip (fail under CI) when there is none."""
    found = os.environ.get("SIMSVC_CHROMIUM") or shutil.which("chromium")
    if found and Path(found).is_file():
        return found
    missing_tool(f"no chromium at {found}" if found else "chromium is not installed (apt install)")
    raise AssertionError("unreachable")


# -- the server -----------------------------------------------------------------------


@dataclass
class Server:
    port: int
    db_path: Path
    token: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.db_path.with_suffix(".log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "simsvc",
                    "--port",
                    str(self.port),
                    "--db",
                    str(self.db_path),
                    *(["--token", self.token] if self.token else []),
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_until_healthy()

    def _wait_until_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + STARTUP_LIMIT_S
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/api/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            # Waiting on the process paces the retries and notices a crash at once.
            try:
                self.proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            break
        self.stop()
        raise AssertionError(f"simsvc did not come up:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def api(self, method: str, path: str, body: Any = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return requests.request(method, f"{self.url}{path}", json=body, headers=headers, timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    live = Server(free_port(), tmp_path_factory.mktemp("browser") / "simsvc.db")
    live.start()
    yield live
    live.stop()


# -- the browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Console:
    """Console errors and uncaught exceptions of every page a test opens."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.expected: list[re.Pattern[str]] = []

    def watch(self, page: Page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _on_console(self, msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            self.errors.append(f"{msg.type}: {msg.text} ({msg.location.get('url')})")

    def expect(self, pattern: str) -> None:
        """Allow one kind of message, e.g. the network log of a deliberately refused request."""
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


@pytest.fixture
def console() -> Iterator[Console]:
    watcher = Console()
    yield watcher
    unexpected = watcher.unexpected()
    assert not unexpected, unexpected


OpenPage = Callable[..., Page]


@pytest.fixture
def open_page(browser: Browser, server: Server, console: Console) -> Iterator[OpenPage]:
    """Open the dashboard in a fresh context and wait until its socket is live."""
    contexts = []

    def open_(
        locale: str = "en-US",
        url: str | None = None,
        routes: Mapping[str | re.Pattern[str], Callable[[Route], None]] | None = None,
        width: int = 1280,
        prepare: Callable[[Page], None] | None = None,
    ) -> Page:
        context = browser.new_context(locale=locale, viewport={"width": width, "height": 900})
        contexts.append(context)
        page = context.new_page()
        for pattern, handler in (routes or {}).items():
            page.route(pattern, handler)
        if prepare is not None:
            prepare(page)  # e.g. routes for the WebSocket, which must be set before it opens
        console.watch(page)
        page.goto(f"{url or server.url}/")
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        return page

    yield open_
    for context in contexts:
        context.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def start_run_from_form(page: Page, replications: int, **advanced: str) -> int:
    page.get_by_label("Replications per scenario").fill(str(replications))
    if advanced:
        page.get_by_text("Advanced: pacing and precision targets").click()
        for label, value in advanced.items():
            page.get_by_label(label).fill(value)
    with page.expect_response(
        lambda r: r.url.endswith("/api/simulations") and r.request.method == "POST"
    ) as answer:
        page.get_by_role("button", name="Start run").click()
    assert answer.value.status == 202, answer.value.text()
    run_id: int = answer.value.json()["run_id"]
    return run_id


def wait_until_ended(page: Page, run_id: int, status: str = "completed") -> None:
    """Wait until the results panel shows the run in its final state."""
    done = page.locator(f'#results[data-run-id="{run_id}"][data-status="{status}"]')
    expect(done).to_have_count(1, timeout=WAIT_MS)


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.x A/AA violations on the page as it is now."""
    if not AXE_PATH.is_file():
        missing_tool(f"axe-core is not installed at {AXE_PATH} (./scripts/test installs it)")
    # Evaluated through the debugging protocol, which a Content-Security-Policy does not block.
    page.evaluate(AXE_PATH.read_text(encoding="utf-8") + "\n;undefined")
    result: dict[str, Any] = page.evaluate(
        "(tags) => axe.run(document, {runOnly: tags})",
        ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"],
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
    ]
