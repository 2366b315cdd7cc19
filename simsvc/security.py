"""Access control at the edge: names, origins, bearer tokens, CORS and browser headers.

Every request must name this service in its `Host` header: a loopback name, an address
it listens on, or a name allowed with `--allowed-host`. That defeats DNS rebinding, where
a web page resolves its own name to 127.0.0.1 and then reads or changes the service as a
"same-origin" page. A request that changes state, and every WebSocket handshake, is
refused when its `Origin` belongs to another site, because a browser sends those
cross-site with the user's network position (cross-site request forgery and WebSocket
hijacking); clients that are not browsers send no `Origin`.

A token, when configured, guards every call that changes state, every WebSocket
handshake and the reads that cost CPU; other reads stay open so that health checks and
dashboards keep working. Browsers cannot set headers on a WebSocket handshake, so there
a `?token=` query parameter is accepted too. CORS headers go only to the configured
origins.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote_plus, urlsplit

import aiohttp_cors
from aiohttp import hdrs, web

log = logging.getLogger(__name__)

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# --host values that mean every interface: then any address literal reaches the service.
WILDCARD_ADDRESSES = frozenset({"0.0.0.0", "::", ""})
JSON_MEDIA_TYPE = re.compile(r"application/([\w.-]+\+)?json", re.IGNORECASE)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Unauthorized(Exception):
    """A request that needs the bearer token and did not carry it."""


class Forbidden(Exception):
    """A request from somewhere that is not allowed, whatever its credentials."""


class UnsupportedMediaType(Exception):
    """A body sent to the API that does not declare itself as JSON."""


class MisdirectedHost(Exception):
    """A request whose Host header names something other than this service."""


@dataclass(frozen=True)
class Policy:
    """Who may call: the token (None: anyone), other origins allowed, and our host names.

    `allowed_hosts` holds the names (and the address) the service is reached by besides
    the loopback ones; `"*"` turns the Host check off (behind a proxy that checks it).
    `token_routes` names GET routes that need the token too, because they cost CPU.
    """

    token: str | None = None
    origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    token_routes: frozenset[str] = frozenset()

    def check(self, request: web.Request) -> None:
        """Raise MisdirectedHost, Forbidden or Unauthorized unless the request may proceed."""
        self._check_host(request)
        is_socket = _is_websocket_handshake(request)
        changes = request.method in MUTATING_METHODS
        if is_socket or changes:
            self._check_origin(request)
        if changes and request.body_exists:
            _check_json_body(request)
        if self.token is None or not (is_socket or changes or self._costly(request)):
            return
        presented = _bearer(request) or (request.query.get("token") if is_socket else None)
        if presented is None:
            raise Unauthorized("this call needs an Authorization: Bearer <token> header")
        if not hmac.compare_digest(_utf8(presented), self.token.encode()):
            raise Unauthorized("the bearer token is not valid")

    def _costly(self, request: web.Request) -> bool:
        return request.match_info.route.name in self.token_routes

    def _check_host(self, request: web.Request) -> None:
        host = request.headers.get(hdrs.HOST)
        # HTTP/1.0 clients may send no Host; browsers always do.
        if host is None or host_allowed(host, self.allowed_hosts):
            return
        raise MisdirectedHost(
            f"this service does not answer to the host name {host[:200]!r}; "
            "name it with --allowed-host (SIMSVC_ALLOWED_HOSTS) if it is one of ours"
        )

    def _check_origin(self, request: web.Request) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or origin in self.origins:
            return
        # The Host was checked above, so an origin equal to it is our own page.
        host = request.headers.get(hdrs.HOST, "").lower()
        if host and _netloc(origin) == host:
            return
        log.warning(
            "refused %s %s from origin %.200s (%s)",
            request.method,
            request.path,
            origin,
            request.remote,
        )
        raise Forbidden(
            f"requests from origin {origin[:200]} are not allowed; "
            "allow a browser origin with --cors-origin"
        )


def _check_json_body(request: web.Request) -> None:
    """A body must say it is JSON: a cross-site form or beacon cannot without a preflight."""
    declared = request.headers.get(hdrs.CONTENT_TYPE)
    if declared is not None and JSON_MEDIA_TYPE.fullmatch(request.content_type):
        return
    said = "no Content-Type" if declared is None else f"Content-Type {declared[:100]!r}"
    raise UnsupportedMediaType(f"a body must be sent as application/json, not with {said}")


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Whether a Host header value names this service (see `Policy`)."""
    name = _host_name(host)
    if name is None:
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = _address(name)
    if address is not None and address.is_loopback:
        return True
    for entry in allowed:
        wanted = entry.strip().strip("[]").lower().rstrip(".")
        if wanted in ("*", name) or (wanted.startswith(".") and name.endswith(wanted)):
            return True
        if address is not None and wanted in WILDCARD_ADDRESSES:
            return True
    return False


_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<name>[^:\[\]]+))(?::\d{1,5})?")


def _host_name(host: str) -> str | None:
    """The name or address of a Host header, lowercased, without port or brackets."""
    match = _HOST.fullmatch(host.strip())
    if match is None:
        return None
    return (match["v6"] or match["name"]).lower().rstrip(".")


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _netloc(origin: str) -> str:
    try:
        return urlsplit(origin).netloc.lower()
    except ValueError:
        return ""


def _is_websocket_handshake(request: web.Request) -> bool:
    return request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def _bearer(request: web.Request) -> str | None:
    scheme, _, credentials = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def _utf8(text: str) -> bytes:
    """The token as sent; bytes that were not UTF-8 can only be a wrong token."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise Unauthorized("the bearer token is not valid") from None


class RedactTokens(logging.Filter):
    """Blank out `?token=` values, which would otherwise land in the access log.

    A query key is compared once percent-decoded (`%74oken` is `token` to the server).
    """

    _PAIR = re.compile(r"([?&])([^=&\s\"#]*)=([^&\s\"#]*)")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "=" in message:
            record.msg, record.args = self._PAIR.sub(self._redact, message), ()
        return True

    @staticmethod
    def _redact(match: re.Match[str]) -> str:
        if unquote_plus(match[2]).strip().lower() != "token":
            return match[0]
        return f"{match[1]}{match[2]}=[redacted]"


REDACT_TOKENS = RedactTokens()


def setup(app: web.Application, policy: Policy) -> None:
    """Guard every route of `app` with `policy`; call after the routes are added."""
    logging.getLogger("aiohttp.access").addFilter(REDACT_TOKENS)

    @web.middleware
    async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        policy.check(request)
        return await handler(request)

    app.middlewares.append(access_middleware)
    app.on_response_prepare.append(add_browser_headers)
    if policy.origins:
        _setup_cors(app, policy.origins)


# -- headers for browsers ------------------------------------------------------------

_PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SAFE_HOST = re.compile(r"[A-Za-z0-9.:\[\]-]{1,255}")
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


async def add_browser_headers(request: web.Request, response: web.StreamResponse) -> None:
    """No sniffing, no framing, and a Content-Security-Policy on every answer."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault(hdrs.CONTENT_SECURITY_POLICY, _csp(request, response))


def _csp(request: web.Request, response: web.StreamResponse) -> str:
    host = request.headers.get(hdrs.HOST, "")
    # 'self' covers ws:// to the same host in current browsers; older ones need it named.
    sockets = f" ws://{host} wss://{host}" if _SAFE_HOST.fullmatch(host) else ""
    policy = f"{_PAGE_POLICY}; connect-src 'self'{sockets}"
    if isinstance(response, web.Response) and response.content_type == "text/html":
        # The API docs page starts Swagger UI with one inline script: allow exactly it.
        body = response.body
        hashes = _script_hashes(bytes(body)) if isinstance(body, bytes | bytearray) else ""
        # Swagger UI sets style attributes from its scripts.
        policy += f"; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'"
    return policy


@lru_cache(maxsize=8)
def _script_hashes(page: bytes) -> str:
    return "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(page)
    )


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
