"""What the service says about itself and shows a browser: health, the OpenAPI document
and its interactive docs, the dashboard page and its static files."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from . import __version__
from .http_io import json_response
from .resources import BACKEND, SPEC

STATIC_DIR = Path(__file__).parent / "static"


async def health(request: web.Request) -> web.Response:
    executor = request.app[BACKEND].status()
    # Still 200 when degraded: the service answers; only new computations wait.
    status = "ok" if executor["state"] in ("ready", "connected") else "degraded"
    return json_response({"status": status, "version": __version__, "executor": executor})


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(request.app[SPEC])


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.exists():
        raise web.HTTPFound("/docs")
    return web.FileResponse(page)


def add_docs(app: web.Application) -> None:
    from swagger_ui import api_doc

    api_doc(app, config=app[SPEC], url_prefix="/docs", title="simsvc API", host_inject=False)
