"""Waiting for a run or an experiment to end, by following `/ws/events` (no polling)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import RunFailed, SimsvcError
from .records import FINAL_STATUSES
from .transport import Transport, next_event

# Reconnections in a row, without a single event between them, before giving up.
MAX_QUIET_RECONNECTS = 5
ENDINGS = ("completed", "failed", "cancelled")

ProgressCallback = Callable[[int, "int | None"], None]
ProgressOption = bool | ProgressCallback | None


class Progress(Protocol):
    def update(self, done: int, total: int | None) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Watched:
    """What is waited for: `run` 3 or `experiment` 5, and how its progress is counted."""

    kind: str
    ident: int

    def __str__(self) -> str:
        return f"{self.kind} {self.ident}"

    def concerns(self, event: dict[str, Any]) -> bool:
        return bool(event.get(f"{self.kind}_id") == self.ident)

    def counts(self, data: dict[str, Any]) -> tuple[int, int | None] | None:
        """(done, total) from an event or a state; None when it holds no count."""
        done = data.get("done", data.get("replications_used"))
        if not isinstance(done, int):
            return None
        total = data.get("total", data.get("max_replications"))
        return done, total if isinstance(total, int) else None


class _Tqdm:
    def __init__(self, label: str) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(desc=label, unit="rep", file=sys.stderr, dynamic_ncols=True)

    def update(self, done: int, total: int | None) -> None:
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()


class _Callback:
    def __init__(self, callback: ProgressCallback) -> None:
        self._callback = callback

    def update(self, done: int, total: int | None) -> None:
        self._callback(done, total)

    def close(self) -> None:
        pass


class _Forward:
    """Passes counts on only as they grow: an event queued before a fresher fetch is stale."""

    def __init__(self, bar: Progress | None) -> None:
        self._bar = bar
        self._done = -1

    def update(self, done: int, total: int | None) -> None:
        if self._bar is not None and done > self._done:
            self._done = done
            self._bar.update(done, total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def make_progress(option: ProgressOption, label: str) -> Progress | None:
    """A tqdm bar (True; None: only on a terminal and if tqdm is installed) or a callback."""
    if callable(option):
        return _Callback(option)
    if option is False or (option is None and not sys.stderr.isatty()):
        return None
    try:
        return _Tqdm(label)
    except ImportError:
        if option:
            raise ImportError(
                "a progress bar needs tqdm: pip install '.[client]' in the simsvc source tree"
            ) from None
        return None


async def wait_final(
    transport: Transport,
    watched: Watched,
    fetch: Callable[[], Awaitable[Any]],
    progress: ProgressOption,
    timeout: float | None,
) -> Any:
    """The final state of `watched`, once it has ended; RunFailed if it failed."""
    bar = _Forward(make_progress(progress, str(watched)))
    try:
        async with asyncio.timeout(timeout):
            info = await _follow(transport, watched, fetch, bar)
    except TimeoutError:
        raise TimeoutError(f"{watched} did not end within {timeout} s") from None
    finally:
        bar.close()
    if info["status"] == "failed":
        raise RunFailed(str(watched), info)
    return info


async def _follow(
    transport: Transport,
    watched: Watched,
    fetch: Callable[[], Awaitable[Any]],
    bar: Progress,
) -> Any:
    quiet = 0
    while quiet <= MAX_QUIET_RECONNECTS:
        async with transport.events() as ws:
            # The first message says we are subscribed: nothing said after the fetch is lost.
            subscribed = await next_event(ws) is not None
            info = await fetch()
            _report(bar, watched, info)
            if info["status"] in FINAL_STATUSES:
                return info
            seen, ended = await _until_end(ws, watched, bar) if subscribed else (0, False)
            if ended:
                info = await fetch()
                _report(bar, watched, info)
                return info
        quiet = 0 if seen else quiet + 1
    raise SimsvcError(f"the event stream keeps closing while waiting for {watched}")


async def _until_end(ws: Any, watched: Watched, bar: Progress) -> tuple[int, bool]:
    """Read events until `watched` ends (True) or the socket closes (False); count them."""
    seen = 0
    endings = {f"{watched.kind}.{e}" for e in ENDINGS}
    while (event := await next_event(ws)) is not None:
        seen += 1
        if not watched.concerns(event):
            continue
        if event.get("type") in endings:
            return seen, True
        _report(bar, watched, event)
    return seen, False


def _report(bar: Progress, watched: Watched, data: dict[str, Any]) -> None:
    counts = watched.counts(data)
    if counts is not None:
        bar.update(*counts)
