"""The HTTP and WebSocket edge: `create_app()`, every route in one list, and the mapping
from errors to problem+json. The handlers live in `run_handlers`, `experiment_handlers`,
`scenario_handlers`, `socket_handlers` and `service_handlers`; what they read and write in
`http_io`; the resources they share, with their keys, in `resources`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web

from . import (
    db,
    experiment_handlers,
    experiment_request,
    experiment_view,
    exports,
    run_handlers,
    scenario_handlers,
    security,
    service_handlers,
    sim,
    socket_handlers,
)
from .config import Config as Config
from .errorlog import ONE_LINE_TRACEBACKS, log_unhandled
from .http_io import QUERIES, BadRequest, TooBusy
from .hub import Hub
from .openapi import (
    EXTEND_REQUEST,
    INGEST_REQUEST,
    MAX_BODY_BYTES,
    RUN_REQUEST,
    SAVE_POINT_REQUEST,
    SCENARIO_CREATE,
    SCENARIO_PATCH,
    build_spec,
)
from .resources import (
    CHECKERS,
    CONFIG,
    EVENTS_HUB,
    EXPERIMENT_VIEWS,
    EXPORT_SLOTS,
    MODELS,
    PARAMS,
    REPLAY_SLOT,
    RESULTS_HUB,
    SPEC,
    close_sockets,
    database_ctx,
    executor_ctx,
    explorer_ctx,
    interrupt_runs,
    runner_ctx,
)
from .schema import Checker, FieldError, InvalidInput
from .security import warn_if_exposed as warn_if_exposed

_ID_PATTERN = r"{%s:\d{1,18}}"
REPLAY_ROUTE = "replay"  # a GET that computes: it needs the token when one is set


# -- errors as problem+json -----------------------------------------------------------


def problem(
    status: int,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _reason(status),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    # backslashreplace: a detail that quotes a client's broken text must not break the answer.
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False).encode("utf-8", "backslashreplace"),
        content_type="application/problem+json",
        charset="utf-8",
        headers=headers,
    )


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Map every failure under /api to application/problem+json, in one place."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if not request.path.startswith("/api") or exc.status < 400:
            raise
        return _http_problem(exc, request)
    except InvalidInput as exc:
        return problem(422, exc.detail, exc.errors)
    except db.InvalidRows as exc:
        errors = [FieldError(field=e["field"], message=e["message"]) for e in exc.errors]
        return problem(422, "the request body is not valid", errors)
    except BadRequest as exc:
        return problem(400, str(exc))
    except security.UnsupportedMediaType as exc:
        return problem(415, str(exc))
    except exports.ParquetUnavailable as exc:
        return problem(406, str(exc))
    except TooBusy as exc:
        return problem(429, str(exc), headers={"Retry-After": "1"})
    except db.NotFound as exc:
        return problem(404, str(exc))
    except db.Conflict as exc:
        return problem(409, str(exc))
    except security.Unauthorized as exc:
        return problem(401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="simsvc"'})
    except security.Forbidden as exc:
        return problem(403, str(exc))
    except security.MisdirectedHost as exc:
        return problem(421, str(exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log_unhandled(request, exc)
        return problem(500, "internal error; the service log has the details")


def _http_problem(exc: web.HTTPException, request: web.Request) -> web.Response:
    """aiohttp's own 4xx and 5xx (no route, wrong method, body too large) as problem+json."""
    default_text = f"{exc.status}: {exc.reason}"
    detail = exc.text if exc.text and exc.text != default_text else None
    # RFC 9110: a 405 must list the methods the resource does allow.
    kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
    return problem(exc.status, detail or _http_detail(exc, request), headers=kept or None)


def _http_detail(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no resource at {request.path}"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return f"the body is larger than the limit of {MAX_BODY_BYTES} bytes"
    return exc.reason


# -- the app --------------------------------------------------------------------------


def create_app(
    config: Config | None = None, models: Mapping[str, sim.Model] | None = None
) -> web.Application:
    """The service as an aiohttp application; opening resources waits for startup.

    `models` replaces the installed models (the built-ins and the `simsvc.models`
    entry points), for embedding and tests.
    """
    config = config or Config()
    for name in ("aiohttp.server", "aiohttp.web", "aiohttp.websocket"):
        logging.getLogger(name).addFilter(ONE_LINE_TRACEBACKS)
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[problem_middleware])
    # Loaded here, once per app: plug-ins import `simsvc.sim`, so it must not load them.
    models = dict(models) if models is not None else sim.load_models()
    app[CONFIG] = config
    app[MODELS] = models
    app[SPEC] = build_spec(models)
    app[PARAMS] = sim.ParamsChecker(models)
    app[CHECKERS] = _checkers()
    app[REPLAY_SLOT] = asyncio.Lock()
    app[EXPORT_SLOTS] = asyncio.Semaphore(exports.EXPORTS_AT_ONCE)
    app[EXPERIMENT_VIEWS] = experiment_view.ViewCache()
    app[RESULTS_HUB] = Hub("/ws/results")
    app[EVENTS_HUB] = Hub("/ws/events")
    app.cleanup_ctx.extend([executor_ctx, database_ctx, explorer_ctx, runner_ctx])
    app.on_shutdown.extend([interrupt_runs, close_sockets])
    _add_routes(app)
    service_handlers.add_docs(app)
    policy = security.Policy(
        config.token, config.cors_origins, config.allowed_hosts, frozenset({REPLAY_ROUTE})
    )
    security.setup(app, policy)
    return app


def _checkers() -> dict[str, Checker]:
    """A validator for each request body and query string, by the name handlers ask for."""
    return {
        "run": Checker(RUN_REQUEST),
        "scenario_create": Checker(SCENARIO_CREATE),
        "scenario_patch": Checker(SCENARIO_PATCH),
        "ingest": Checker(INGEST_REQUEST),
        "extend": Checker(EXTEND_REQUEST),
        "experiment": Checker(experiment_request.EXPERIMENT_REQUEST),
        "save_point": Checker(SAVE_POINT_REQUEST),
        **{name: Checker(schema) for name, schema in QUERIES.items()},
    }


def _add_routes(app: web.Application) -> None:
    """Every route of the service; the API docs at /docs are added by `add_docs`."""
    runs, scenarios = run_handlers, scenario_handlers
    experiments, service, sockets = experiment_handlers, service_handlers, socket_handlers
    run, scenario = _ID_PATTERN % "run_id", _ID_PATTERN % "scenario_id"
    experiment, point = _ID_PATTERN % "experiment_id", _ID_PATTERN % "point_id"
    replication = _ID_PATTERN % "replication"
    static = service.STATIC_DIR
    app.add_routes(
        [
            web.get("/", service.index),
            web.get("/openapi.json", service.openapi_json),
            web.get("/api/health", service.health),
            web.get("/api/models", scenarios.list_models),
            web.get("/api/scenarios", scenarios.list_scenarios),
            web.post("/api/scenarios", scenarios.create_scenario),
            web.get(f"/api/scenarios/{scenario}", scenarios.get_scenario),
            web.patch(f"/api/scenarios/{scenario}", scenarios.patch_scenario),
            web.delete(f"/api/scenarios/{scenario}", scenarios.delete_scenario),
            web.get(f"/api/scenarios/{scenario}/ingested-results", scenarios.list_ingested),
            web.delete(f"/api/scenarios/{scenario}/ingested-results", scenarios.delete_ingested),
            web.delete(
                f"/api/scenarios/{scenario}/ingested-results/{replication}",
                scenarios.delete_ingested_replication,
            ),
            web.get("/api/simulations", runs.list_runs),
            web.post("/api/simulations", runs.start_run),
            web.get(f"/api/simulations/{run}", runs.get_run),
            web.post(f"/api/simulations/{run}/cancel", runs.cancel_run),
            web.get(f"/api/simulations/{run}/results", runs.run_results),
            web.get(f"/api/simulations/{run}/compare", runs.compare_scenarios),
            web.get(f"/api/simulations/{run}/select", runs.select_best),
            web.post(f"/api/simulations/{run}/extend", runs.extend_run),
            web.post(f"/api/simulations/{run}/resume", runs.resume_run),
            web.get(
                f"/api/simulations/{run}/replications/{scenario}/{replication}",
                runs.replay_replication,
                name=REPLAY_ROUTE,
            ),
            web.get("/api/experiments", experiments.list_experiments),
            web.post("/api/experiments", experiments.start_experiment),
            web.get(f"/api/experiments/{experiment}", experiments.get_experiment),
            web.post(f"/api/experiments/{experiment}/cancel", experiments.cancel_experiment),
            web.post(f"/api/experiments/{experiment}/resume", experiments.resume_experiment),
            web.get(f"/api/experiments/{experiment}/results", experiments.experiment_results),
            web.post(
                f"/api/experiments/{experiment}/points/{point}/scenario", experiments.save_point
            ),
            web.get("/api/results", runs.get_results),
            web.post("/api/results", scenarios.ingest_results),
            web.post("/api/notify-completion", runs.notify_completion),
            web.get("/ws/results", sockets.ws_results),
            web.get("/ws/events", sockets.ws_events),
            *([web.static("/static", static)] if static.is_dir() else []),
        ]
    )
