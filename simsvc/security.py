"""Access control at the edge: bearer tokens, WebSocket origins and CORS.

A token, when configured, guards every call that changes state and every WebSocket
handshake; reads stay open so that health checks and dashboards keep working. Browsers
cannot set headers on a WebSocket handshake, so there a `?token=` query parameter is
accepted too. A handshake whose `Origin` belongs to another site is refused, because a
browser sends the user's cookies and network position along with it (cross-site
WebSocket hijacking). CORS headers go only to the configured origins.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import aiohttp_cors
from aiohttp import hdrs, web

log = logging.getLogger(__name__)

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Unauthorized(Exception):
    """A request that needs the bearer token and did not carry it."""


class Forbidden(Exception):
    """A request from somewhere that is not allowed, whatever its credentials."""


@dataclass(frozen=True)
class Policy:
    """Who may call: the bearer token (None: anyone) and the origins allowed besides our own."""

    token: str | None = None
    origins: tuple[str, ...] = ()

    def check(self, request: web.Request) -> None:
        """Raise Unauthorized or Forbidden unless the request may proceed."""
        is_socket = _is_websocket_handshake(request)
        if is_socket:
            self._check_origin(request)
        if self.token is None or not (is_socket or request.method in MUTATING_METHODS):
            return
        presented = _bearer(request) or (request.query.get("token") if is_socket else None)
        if presented is None:
            raise Unauthorized("this call needs an Authorization: Bearer <token> header")
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            raise Unauthorized("the bearer token is not valid")

    def _check_origin(self, request: web.Request) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        # Clients that are not browsers send no Origin; the token covers them.
        if origin is None or origin in self.origins:
            return
        own = f"{request.scheme}://{request.host}"
        if origin.lower() == own.lower():
            return
        log.warning("refused a WebSocket handshake from origin %s (%s)", origin, request.remote)
        raise Forbidden(f"WebSocket connections from origin {origin} are not allowed")


def _is_websocket_handshake(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _bearer(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


class RedactTokens(logging.Filter):
    """Blank out `?token=` values, which would otherwise land in the access log."""

    _PATTERN = re.compile(r"([?&]token=)[^&\s\"]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = self._PATTERN.sub(r"\1[redacted]", record.msg)
        return True


REDACT_TOKENS = RedactTokens()


def setup(app: web.Application, policy: Policy) -> None:
    """Guard every route of `app` with `policy`; call after the routes are added."""
    logging.getLogger("aiohttp.access").addFilter(REDACT_TOKENS)

    @web.middleware
    async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        policy.check(request)
        return await handler(request)

    app.middlewares.append(access_middleware)
    if policy.origins:
        _setup_cors(app, policy.origins)


def _setup_cors(app: web.Application, origins: Iterable[str]) -> None:
    options = aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_credentials=False,
        expose_headers=("Location",),
        allow_headers=("Authorization", "Content-Type"),
        allow_methods=sorted(MUTATING_METHODS | {"GET"}),
    )
    cors = aiohttp_cors.setup(app, defaults=dict.fromkeys(origins, options))
    for route in list(app.router.routes()):
        # HEAD routes share their resource with GET, which already carries the config.
        if route.method != "HEAD" and isinstance(route.resource, web.Resource):
            cors.add(route)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warn_if_exposed(host: str, token: str | None) -> bool:
    """Log a warning when the service listens beyond this machine with no token; True if so."""
    if token or is_loopback(host):
        return False
    log.warning(
        "listening on %s without a token: anyone who can reach this address can start runs "
        "and change scenarios; set --token or SIMSVC_TOKEN",
        host,
    )
    return True
