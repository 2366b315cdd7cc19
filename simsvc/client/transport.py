"""HTTP and WebSocket calls to one simsvc service, with its errors mapped to the client's."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from .errors import ApiError, ServiceUnreachable, SimsvcError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0


def normalize_url(base_url: str) -> str:
    """`host:port` or `http://host:port/prefix/`, as `http://host:port/prefix`."""
    url = base_url.strip()
    if not url:
        raise ValueError("the service URL is empty")
    if "://" not in url:
        url = f"http://{url}"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"the service URL must start with http:// or https://, not {base_url!r}")
    return url.rstrip("/")


class Transport:
    """One aiohttp session to the service at `base_url`, opened on first use."""

    def __init__(
        self, base_url: str, token: str | None = None, timeout: float | None = DEFAULT_TIMEOUT_S
    ) -> None:
        self.base_url = normalize_url(base_url)
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        csv: bool = False,
    ) -> Any:
        """The answer's JSON (or text, with `csv`); ApiError or ServiceUnreachable otherwise."""
        url = f"{self.base_url}{path}"
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        if csv:
            params["format"] = "csv"
        try:
            async with self._open().request(method, url, json=body, params=params or None) as resp:
                text = await resp.text(encoding="utf-8", errors="replace")
                status, reason = resp.status, resp.reason or ""
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise self.unreachable(exc) from exc
        if status >= 400:
            raise ApiError.from_answer(status, reason, text, method, path)
        if csv:
            return text
        return json.loads(text) if text.strip() else None

    def unreachable(self, exc: BaseException) -> ServiceUnreachable:
        if isinstance(exc, TimeoutError):
            return ServiceUnreachable(self.base_url, f"no answer within {self.timeout} s")
        return ServiceUnreachable(self.base_url, str(exc) or type(exc).__name__)

    @asynccontextmanager
    async def events(self) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """The `/ws/events` socket, open for the duration of the block."""
        ws_url = "ws" + self.base_url[len("http") :] + "/ws/events"
        try:
            # The overall wait has its own limit; a quiet socket is not a failure.
            ws = await self._open().ws_connect(ws_url, timeout=aiohttp.ClientWSTimeout())
        except aiohttp.WSServerHandshakeError as exc:
            detail = f"the event stream refused the connection: {exc.message}"
            raise ApiError(
                exc.status, detail, title=exc.message, method="GET", url="/ws/events"
            ) from exc
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise self.unreachable(exc) from exc
        try:
            yield ws
        finally:
            await ws.close()


async def next_event(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any] | None:
    """The next event on the socket, or None once it is closed."""
    msg = await ws.receive()
    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
        return None
    if msg.type == aiohttp.WSMsgType.ERROR:
        log.info("event stream error: %s", ws.exception())
        return None
    if msg.type != aiohttp.WSMsgType.TEXT:
        raise SimsvcError(f"unexpected {msg.type.name} message on /ws/events")
    event: dict[str, Any] = json.loads(msg.data)
    return event
