"""The HTTP and WebSocket edge: the app, its routes, validation and error mapping."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from . import (
    StartupError,
    __version__,
    analysis,
    db,
    experiment_request,
    experiment_store,
    experiment_view,
    explore,
    exports,
    jsontext,
    lockfile,
    runs,
    security,
    sim,
    stats,
)
from .hub import Hub, encode_event_fragment
from .openapi import (
    COMPARE_QUERY,
    EXTEND_REQUEST,
    INGEST_REQUEST,
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    MAX_SCENARIOS,
    MAX_SQLITE_INT,
    MAX_WS_MESSAGE_BYTES,
    RUN_REQUEST,
    SAVE_POINT_REQUEST,
    SCENARIO_CREATE,
    SCENARIO_PATCH,
    SELECT_QUERY,
    build_spec,
)
from .runner import DEFAULT_CHUNK_TIMEOUT_S, Runner
from .runs import run_view
from .schema import Checker, FieldError, InvalidInput, query_values
from .security import warn_if_exposed as warn_if_exposed

log = logging.getLogger(__name__)

default_workers = sim.default_workers
POOL_EXECUTORS = sim.POOL_EXECUTORS
STATIC_DIR = Path(__file__).parent / "static"
PROGRESS_INTERVAL_S = 0.1
# the scenarios of a new database: the warehouse model's defaults but for `workers`
SEED_SCENARIOS = (("現状シナリオ", 5), ("人員1名追加", 6), ("人員1名削減", 4))
_ID_PATTERN = r"{%s:\d{1,18}}"
QUERIES = {"compare": COMPARE_QUERY, "select": SELECT_QUERY}
REPLAY_ROUTE = "replay"  # a GET that computes: it needs the token when one is set
BAD_QUERY = "the query string is not valid"
FLOAT_MAX = sys.float_info.max
RESULT_FORMATS = ("json", "csv", "parquet")
TRACE_FRAMES = 3  # frames of an unhandled error's traceback that go into its log line


@dataclass(frozen=True)
class Config:
    """Everything the app is configured with; `create_app` does no I/O with it."""

    db_path: str = "simsvc.db"
    workers: int = field(default_factory=sim.default_workers)
    executor: str = "process"  # process, thread, inline, dask-local or dask://HOST:PORT
    heartbeat_s: float = 30.0
    max_ws_message_bytes: int = MAX_WS_MESSAGE_BYTES
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    # Host names (or the address) the service is reached by besides the loopback ones;
    # "0.0.0.0" or "::" accepts any address literal, "*" any name (see security.Policy).
    allowed_hosts: tuple[str, ...] = ()
    # After the sockets are closed, how long a shutdown waits for requests still running.
    shutdown_timeout_s: float = 3.0
    # A chunk of replications still computing after this long fails its run.
    chunk_timeout_s: float = DEFAULT_CHUNK_TIMEOUT_S
    # How a Dask executor follows its cluster: reconnects, waiting runs, their time limit.
    cluster: sim.ClusterTimeouts = field(default_factory=sim.ClusterTimeouts)


CONFIG = web.AppKey("config", Config)
BACKEND = web.AppKey("backend", sim.Executor)
DB = web.AppKey("db", db.Database)
EXPERIMENTS = web.AppKey("experiments", experiment_store.ExperimentStore)
RUNS = web.AppKey("runs", runs.Runs)
MODELS = web.AppKey("models", dict[str, sim.Model])
RESULTS_HUB = web.AppKey("results_hub", Hub)
EVENTS_HUB = web.AppKey("events_hub", Hub)
AGGREGATES = web.AppKey("aggregates", stats.AggregateCache)
CHECKERS = web.AppKey("checkers", dict[str, Checker])
SPEC = web.AppKey("spec", dict[str, Any])
PARAMS = web.AppKey("params", sim.ParamsChecker)
REPLAY_SLOT = web.AppKey("replay_slot", asyncio.Lock)
EXPLORER = web.AppKey("explorer", explore.Explorer)
EXPERIMENT_VIEWS = web.AppKey("experiment_views", experiment_view.ViewCache)


class BadRequest(Exception):
    """A request that cannot be read at all: malformed JSON, bad encoding, bad query."""


class TooBusy(Exception):
    """A bounded resource is in use; the client may retry shortly."""


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
        default_text = f"{exc.status}: {exc.reason}"
        detail = exc.text if exc.text and exc.text != default_text else None
        # RFC 9110: a 405 must list the methods the resource does allow.
        kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
        return problem(exc.status, detail or _http_detail(exc, request), headers=kept or None)
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


def log_unhandled(request: web.Request, exc: BaseException) -> None:
    """One log line for a bug, whatever the request: a deep traceback must not flood the log."""
    log.error("unhandled error on %s %.200s: %s", request.method, request.path, one_line(exc))
    log.debug("the traceback", exc_info=exc)


def one_line(exc: BaseException) -> str:
    """An exception as one bounded line: its type, message and last few frames."""
    frames = traceback.extract_tb(exc.__traceback__)[-TRACE_FRAMES:]
    where = "; ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames)
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text} (last frames: {where})"


class OneLineTracebacks(logging.Filter):
    """Fold a record's traceback into its message: what aiohttp's server logs about a
    request (a body that does not decode, a broken connection) stays one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {one_line(record.exc_info[1])}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


ONE_LINE_TRACEBACKS = OneLineTracebacks()


def _http_detail(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no resource at {request.path}"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return f"the body is larger than the limit of {MAX_BODY_BYTES} bytes"
    return exc.reason


# -- request parsing ------------------------------------------------------------------


def _unstorable(value: Any) -> list[FieldError]:
    """Values JSON can carry but the service cannot keep: NaN, infinities, integers past
    a double's range, lone surrogates. Walked without recursion; deep nesting is a 400."""
    errors: list[FieldError] = []
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        where = path or "body"
        if isinstance(item, float) and not math.isfinite(item):
            errors.append(FieldError(field=where, message=f"{item} is not a finite number"))
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) > FLOAT_MAX:
            message = f"{_digits(item)} is too large: numbers are limited to ±{FLOAT_MAX:.4g}"
            errors.append(FieldError(field=where, message=message))
        elif isinstance(item, str):
            errors.extend(_surrogates(item, where))
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise BadRequest(
                    f"the JSON is nested too deeply: the limit is {MAX_JSON_DEPTH} levels"
                )
            stack.extend(reversed(_children(item, path, where, depth + 1, errors)))
    return errors


def _children(
    item: dict[str, Any] | list[Any], path: str, where: str, depth: int, errors: list[FieldError]
) -> list[tuple[Any, str, int]]:
    if isinstance(item, list):
        return [(v, f"{path}[{i}]", depth) for i, v in enumerate(item)]
    # A bad key is reported on its parent: it must not leak into a field name.
    bad_keys = [e for k in item for e in _surrogates(k, where)]
    errors.extend(bad_keys)
    if bad_keys:
        return []
    return [(v, f"{path}.{k}" if path else k, depth) for k, v in item.items()]


def _digits(number: int) -> str:
    text = str(number)
    return text if len(text) <= 20 else f"an integer of {len(text)} digits"


def _surrogates(text: str, where: str) -> list[FieldError]:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = f"\\u{ord(text[exc.start]):04x}"
        return [FieldError(field=where, message=f"holds a lone surrogate {char}: not Unicode")]
    return []


async def read_json(request: web.Request, checker: Checker, empty: Any = None) -> Any:
    """The body as JSON checked against a schema; `empty` stands in for no body."""
    try:
        raw = await request.read()
    except web.RequestPayloadError as exc:
        # A Content-Encoding (gzip, deflate) whose data does not decode.
        encoding = request.headers.get("Content-Encoding", "its Content-Encoding")
        raise BadRequest(f"the body is not valid {encoding} data") from exc
    if not raw.strip():
        if empty is None:
            raise BadRequest("a JSON body is required")
        return empty
    value = _parse_json(raw)
    errors = _unstorable(value)
    if errors:
        raise InvalidInput(errors)
    checker.check(value)
    return value


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise BadRequest(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        message = f"the JSON is nested too deeply: the limit is {MAX_JSON_DEPTH} levels"
        raise BadRequest(message) from exc
    except ValueError as exc:
        # Well-formed JSON whose integer is longer than Python's conversion limit.
        message = f"a number is longer than the limit of {sys.get_int_max_str_digits()} digits"
        raise InvalidInput([FieldError(field="body", message=message)]) from exc


def path_id(request: web.Request, name: str) -> int:
    return int(request.match_info[name])


def query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"\d{1,19}", raw) or int(raw) > MAX_SQLITE_INT:
        raise BadRequest(f"query parameter {name} must be an integer from 0 to {MAX_SQLITE_INT}")
    return int(raw)


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=jsontext.dumps(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


# -- runs -----------------------------------------------------------------------------


def waiting(backend: sim.Executor) -> dict[str, Any]:
    """Whether active runs wait for workers of a Dask cluster, and since when."""
    since = backend.waiting_since()
    return {"waiting_for_workers": since is not None, "waiting_since": since}


async def start_run(request: web.Request) -> web.Response:
    app = request.app
    body = await read_json(request, app[CHECKERS]["run"], empty={})
    run = await app[RUNS].start(
        runs.RunRequest(
            scenario_ids=body.get("scenario_ids"),
            replications=int(body["replications"]) if "replications" in body else None,
            seed=int(body["seed"]) if "seed" in body else None,
            pace_s=float(body.get("pace_s", 0)),
            precision=body.get("precision"),
        )
    )
    return json_response(
        {"message": "Simulation started.", "run_id": run["run_id"], "run": run_view(run)},
        status=202,
        headers={"Location": f"/api/simulations/{run['run_id']}"},
    )


async def list_runs(request: web.Request) -> web.Response:
    return json_response([run_view(r) for r in await request.app[DB].list_runs()])


async def get_run(request: web.Request) -> web.Response:
    run = await request.app[DB].get_run(path_id(request, "run_id"))
    view = run_view(run)
    if request.app[RUNS].runner.is_active(run["run_id"]):
        view.update(waiting(request.app[BACKEND]))
    else:
        view.update(waiting_for_workers=False, waiting_since=None)
    view["manifest"] = runs.manifest(run)
    view["results"] = await request.app[AGGREGATES].compute(run["run_id"])
    return json_response(view)


async def cancel_run(request: web.Request) -> web.Response:
    run = await request.app[RUNS].cancel(path_id(request, "run_id"))
    return json_response(run_view(run))


async def run_results(request: web.Request) -> web.StreamResponse:
    """A run's rows as JSON, CSV or Parquet, streamed batch by batch (see `exports`)."""
    run_id = path_id(request, "run_id")
    fmt = _results_format(request)
    database = request.app[DB]
    if fmt == "parquet":
        export = await exports.parquet_export(database, run_id)
    elif fmt == "csv":
        export = await exports.csv_export(database, run_id)
    else:
        export = await exports.json_export(database, run_id)
    return await stream_export(request, export)


def _results_format(request: web.Request) -> str:
    """`?format=` if given, else the Accept header: CSV, Parquet, or JSON by default."""
    fmt = request.query.get("format")
    if fmt is not None:
        if fmt not in RESULT_FORMATS:
            raise BadRequest(f"format must be one of {', '.join(RESULT_FORMATS)}")
        return fmt
    accept = request.headers.get("Accept", "")
    if exports.PARQUET_MEDIA_TYPE in accept:
        return "parquet"
    return "csv" if "text/csv" in accept else "json"


async def stream_export(request: web.Request, export: exports.Export) -> web.StreamResponse:
    """Send an export as it is encoded; a failure midway cuts the connection short."""
    disposition = "attachment" if export.content_type != "application/json" else "inline"
    resp = web.StreamResponse(
        headers={"Content-Disposition": f'{disposition}; filename="{export.filename}"'}
    )
    resp.content_type = export.content_type
    if export.content_type.startswith(("text/", "application/json")):
        resp.charset = "utf-8"
    await resp.prepare(request)
    try:
        async for piece in export.body:
            await resp.write(piece)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as exc:
        # The status line is gone: all that is left is not to end the body cleanly.
        log_unhandled(request, exc)
        if request.transport is not None:
            request.transport.close()
        return resp
    await resp.write_eof()
    return resp


# -- analysis: extend, resume, replay, compare, select --------------------------------


def _accepted(run: db.Run) -> web.Response:
    location = {"Location": f"/api/simulations/{run['run_id']}"}
    return json_response(run_view(run), status=202, headers=location)


async def extend_run(request: web.Request) -> web.Response:
    app = request.app
    run_id = path_id(request, "run_id")
    await app[DB].get_run(run_id)  # an unknown run is 404 whatever the body
    added = int((await read_json(request, app[CHECKERS]["extend"]))["replications"])
    return _accepted(await app[RUNS].extend(run_id, added))


async def resume_run(request: web.Request) -> web.Response:
    return _accepted(await request.app[RUNS].resume(path_id(request, "run_id")))


async def replay_replication(request: web.Request) -> web.Response:
    run_id = path_id(request, "run_id")
    sid, r = path_id(request, "scenario_id"), path_id(request, "replication")
    slot = request.app[REPLAY_SLOT]
    # One replay at a time: it shares the executor with runs, and a GET must not be
    # able to fill it.
    if slot.locked():
        raise TooBusy("another replay is being computed; retry in a moment")
    async with slot:
        return json_response(await request.app[RUNS].replay(run_id, sid, r))


def read_query(request: web.Request, name: str) -> dict[str, Any]:
    """The query string checked against QUERIES[name], with the schema's defaults filled in."""
    schema = QUERIES[name]
    values = query_values(request.query, schema)
    errors = request.app[CHECKERS][name].errors(values)
    if errors:
        raise InvalidInput(errors, BAD_QUERY)
    defaults = {k: p["default"] for k, p in schema["properties"].items() if "default" in p}
    return {**defaults, **values}


async def compare_scenarios(request: web.Request) -> web.Response:
    app = request.app
    run = await app[DB].get_run(path_id(request, "run_id"))
    query = read_query(request, "compare")
    baseline, familywise = query["baseline"], query["familywise"]
    if baseline not in run["scenario_ids"]:
        message = f"scenario {baseline} is not part of run {run['run_id']} {run['scenario_ids']}"
        raise InvalidInput([FieldError(field="baseline", message=message)], BAD_QUERY)
    directions = app[RUNS].directions(run)
    rows = await app[DB].run_results(run["run_id"])
    comparisons = await asyncio.to_thread(
        analysis.compare_run, rows, run["scenario_ids"], baseline, directions
    )
    family_size = analysis.adjust_familywise(comparisons, familywise)
    return json_response(
        {
            "run_id": run["run_id"],
            "baseline": baseline,
            "confidence": 0.95,
            "familywise": familywise,
            "family_size": family_size,
            "comparisons": comparisons,
        }
    )


async def select_best(request: web.Request) -> web.Response:
    app = request.app
    run = await app[DB].get_run(path_id(request, "run_id"))
    query = read_query(request, "select")
    kpi = query["kpi"]
    directions = app[RUNS].directions(run)
    lacking = [sid for sid in run["scenario_ids"] if kpi not in directions[sid]]
    if lacking:
        known = ", ".join(directions[lacking[0]])
        message = f"unknown KPI {kpi!r}: the model of scenario {lacking[0]} ranks {known}"
        raise InvalidInput([FieldError(field="kpi", message=message)], BAD_QUERY)
    direction = directions[run["scenario_ids"][0]][kpi]
    values = await app[DB].run_kpi_values(run["run_id"], kpi)
    args = (values, run["scenario_ids"], kpi, direction, query["confidence"], query["indifference"])
    try:
        selection = await asyncio.to_thread(analysis.select_best_of, *args)
    except analysis.NotEnoughData as exc:
        raise db.Conflict(f"run {run['run_id']}: {exc}") from exc
    return json_response({"run_id": run["run_id"], **selection})


# -- experiments over a parameter space -----------------------------------------------


def _experiment_location(experiment: experiment_store.Experiment) -> dict[str, str]:
    return {"Location": f"/api/experiments/{experiment['experiment_id']}"}


async def _experiment_view(
    app: web.Application, experiment: experiment_store.Experiment
) -> dict[str, Any]:
    store, eid = app[EXPERIMENTS], experiment["experiment_id"]
    points = await store.experiment_points(eid)
    point_stats = await store.experiment_stats(eid)
    model = app[MODELS].get(experiment["model"])
    problem = None if model is None else experiment_request.problem_of(experiment["request"], model)
    # Off the loop: a sweep can have 10,000 points.
    views = await asyncio.to_thread(
        experiment_view.point_views, points, point_stats, experiment["outcome"]
    )
    return await asyncio.to_thread(experiment_view.experiment_view, experiment, problem, views)


async def start_experiment(request: web.Request) -> web.Response:
    app = request.app
    body = await read_json(request, app[CHECKERS]["experiment"])
    experiment = await app[EXPLORER].create(body)
    view = explore.summary(experiment)
    return json_response(view, status=202, headers=_experiment_location(experiment))


async def list_experiments(request: web.Request) -> web.Response:
    experiments_ = await request.app[EXPERIMENTS].list_experiments()
    return json_response([explore.summary(e) for e in experiments_])


async def get_experiment(request: web.Request) -> web.Response:
    app = request.app
    experiment = await app[EXPERIMENTS].get_experiment(path_id(request, "experiment_id"))
    # A finished experiment no longer changes: its answer is built once.
    key = experiment_view.cache_key(experiment)
    body = app[EXPERIMENT_VIEWS].get(key) if key is not None else None
    if body is None:
        view = await _experiment_view(app, experiment)
        body = await asyncio.to_thread(_encode, view)
        if key is not None:
            app[EXPERIMENT_VIEWS].put(key, body)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def _encode(value: Any) -> bytes:
    return jsontext.dumps(value).encode("utf-8")


async def cancel_experiment(request: web.Request) -> web.Response:
    experiment = await request.app[EXPLORER].cancel(path_id(request, "experiment_id"))
    return json_response(explore.summary(experiment))


async def resume_experiment(request: web.Request) -> web.Response:
    experiment = await request.app[EXPLORER].resume(path_id(request, "experiment_id"))
    return json_response(
        explore.summary(experiment), status=202, headers=_experiment_location(experiment)
    )


async def experiment_results(request: web.Request) -> web.StreamResponse:
    """Every replication, the point's params as columns; streamed a batch at a time."""
    app, eid = request.app, path_id(request, "experiment_id")
    fmt = request.query.get("format")
    if fmt not in (None, "json", "csv"):
        raise BadRequest("format must be json or csv")
    experiment = await app[EXPERIMENTS].get_experiment(eid)
    points = await app[EXPERIMENTS].experiment_points(eid)
    model = app[MODELS].get(experiment["model"])
    metrics = [o for o in model.outputs if o not in sim.HEADLINE_KPIS] if model else []
    wants_csv = fmt == "csv" or (fmt is None and "text/csv" in request.headers.get("Accept", ""))
    response = web.StreamResponse(
        headers={"Content-Type": "text/csv; charset=utf-8" if wants_csv else "application/json"}
    )
    if wants_csv:
        response.headers["Content-Disposition"] = (
            f'attachment; filename="experiment-{eid}-results.csv"'
        )
    await response.prepare(request)
    columns = experiment_view.result_columns(points, metrics)
    first = True
    await response.write(b"" if wants_csv else b"[")
    async for rows in app[EXPERIMENTS].experiment_rows(eid, db.EXPORT_BATCH_ROWS):
        # Encoded in a worker thread, as a run's export is: the loop only passes bytes on.
        piece = await asyncio.to_thread(
            _experiment_rows_text, rows, points, experiment["seed"], columns, wants_csv, first
        )
        first = False
        await response.write(piece)
    if wants_csv and first:
        await response.write(experiment_view.csv_lines([], columns, header=True).encode())
    await response.write(b"" if wants_csv else b"]")
    await response.write_eof()
    return response


def _experiment_rows_text(
    rows: list[experiment_store.ExperimentRow],
    points: list[dict[str, Any]],
    seed: int,
    columns: list[str],
    wants_csv: bool,
    first: bool,
) -> bytes:
    """One batch of an experiment's rows as CSV lines or as JSON objects joined by commas."""
    flat = experiment_view.flat_rows(rows, points, seed)
    if wants_csv:
        return experiment_view.csv_lines(flat, columns, header=first).encode("utf-8")
    return (("" if first else ", ") + jsontext.dumps(flat)[1:-1]).encode("utf-8")


async def save_point(request: web.Request) -> web.Response:
    """Store one point of an experiment as a named scenario."""
    app = request.app
    eid, pid = path_id(request, "experiment_id"), path_id(request, "point_id")
    experiment = await app[EXPERIMENTS].get_experiment(eid)
    params = await app[EXPERIMENTS].experiment_point(eid, pid)
    body = await read_json(request, app[CHECKERS]["save_point"])
    scenario = await app[DB].create_scenario(
        body["scenario_name"], experiment["model"], params, limit=MAX_SCENARIOS
    )
    _scenario_event(app, "created", scenario["scenario_id"], scenario)
    return json_response(
        scenario, status=201, headers={"Location": f"/api/scenarios/{scenario['scenario_id']}"}
    )


# -- results --------------------------------------------------------------------------


async def get_results(request: web.Request) -> web.Response:
    run_id = query_int(request, "run_id")
    kind = request.query.get("interval", "t")
    if kind not in stats.INTERVAL_KINDS:
        message = f"{kind!r} is not one of {', '.join(stats.INTERVAL_KINDS)}"
        raise InvalidInput([FieldError(field="interval", message=message)], BAD_QUERY)
    if run_id is not None:
        await request.app[DB].get_run(run_id)
    body = await request.app[AGGREGATES].body(run_id, kind)  # type: ignore[arg-type]
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def ingest_results(request: web.Request) -> web.Response:
    body = await read_json(request, request.app[CHECKERS]["ingest"])
    rows = [
        db.ResultRow(
            scenario_id=r["scenario_id"],
            replication=r["replication"],
            seed=r.get("seed"),
            total_labor_costs=float(r["total_labor_costs"]),
            ontime_delivery_rate=float(r["ontime_delivery_rate"]),
            metrics=r.get("metrics", {}),
        )
        for r in body
    ]
    inserted = await request.app[DB].ingest_results(rows)
    request.app[EVENTS_HUB].broadcast_event("results.updated", {"inserted": inserted})
    return json_response({"inserted": inserted}, status=201)


async def list_ingested(request: web.Request) -> web.Response:
    return json_response(await request.app[DB].ingested_results(path_id(request, "scenario_id")))


async def delete_ingested(request: web.Request) -> web.Response:
    """Remove every replication stored for a scenario by POST /api/results."""
    scenario_id = path_id(request, "scenario_id")
    deleted = await request.app[DB].delete_ingested(scenario_id)
    _ingested_removed(request.app, scenario_id, deleted)
    return json_response({"scenario_id": scenario_id, "deleted": deleted})


async def delete_ingested_replication(request: web.Request) -> web.Response:
    scenario_id, replication = path_id(request, "scenario_id"), path_id(request, "replication")
    deleted = await request.app[DB].delete_ingested(scenario_id, replication)
    if not deleted:
        raise db.NotFound(f"scenario {scenario_id} has no ingested replication {replication}")
    _ingested_removed(request.app, scenario_id, deleted)
    return web.Response(status=204)


def _ingested_removed(app: web.Application, scenario_id: int, deleted: int) -> None:
    if deleted:
        log.info("removed %d ingested results of scenario %d", deleted, scenario_id)
        app[EVENTS_HUB].broadcast_event(
            "results.updated", {"deleted": deleted, "scenario_id": scenario_id}
        )


async def notify_completion(request: web.Request) -> web.Response:
    app = request.app
    text = await app[AGGREGATES].encoded()
    app[RESULTS_HUB].broadcast(text)
    app[EVENTS_HUB].broadcast_event("results.updated", {"results": json.loads(text)})
    return json_response({"message": "Notification sent."})


# -- scenarios ------------------------------------------------------------------------


def _scenario_event(app: web.Application, action: str, scenario_id: int, scenario: Any) -> None:
    app[EVENTS_HUB].broadcast_event(
        "scenario.changed", {"action": action, "scenario_id": scenario_id, "scenario": scenario}
    )


async def list_scenarios(request: web.Request) -> web.Response:
    return json_response(await request.app[DB].list_scenarios())


async def get_scenario(request: web.Request) -> web.Response:
    return json_response(await request.app[DB].get_scenario(path_id(request, "scenario_id")))


async def create_scenario(request: web.Request) -> web.Response:
    app = request.app
    body = await read_json(request, app[CHECKERS]["scenario_create"])
    model = body.get("model", "warehouse")
    params = app[PARAMS].complete(model, body.get("params", {}))
    scenario = await app[DB].create_scenario(
        body["scenario_name"], model, params, limit=MAX_SCENARIOS
    )
    _scenario_event(app, "created", scenario["scenario_id"], scenario)
    return json_response(
        scenario, status=201, headers={"Location": f"/api/scenarios/{scenario['scenario_id']}"}
    )


async def patch_scenario(request: web.Request) -> web.Response:
    app = request.app
    scenario_id = path_id(request, "scenario_id")
    current = await app[DB].get_scenario(scenario_id)
    body = await read_json(request, app[CHECKERS]["scenario_patch"])
    model = body.get("model", current["model"])
    base = current["params"] if model == current["model"] else {}
    params = app[PARAMS].complete(model, {**base, **body.get("params", {})})
    name = body.get("scenario_name", current["scenario_name"])
    scenario = await app[DB].update_scenario(scenario_id, name, model, params)
    _scenario_event(app, "updated", scenario_id, scenario)
    return json_response(scenario)


async def delete_scenario(request: web.Request) -> web.Response:
    scenario_id = path_id(request, "scenario_id")
    await request.app[DB].delete_scenario(scenario_id)
    _scenario_event(request.app, "deleted", scenario_id, None)
    return web.Response(status=204)


# -- misc -----------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    executor = request.app[BACKEND].status()
    # Still 200 when degraded: the service answers; only new computations wait.
    status = "ok" if executor["state"] in ("ready", "connected") else "degraded"
    return json_response({"status": status, "version": __version__, "executor": executor})


async def list_models(request: web.Request) -> web.Response:
    return json_response([m.describe() for m in request.app[MODELS].values()])


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(request.app[SPEC])


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.exists():
        raise web.HTTPFound("/docs")
    return web.FileResponse(page)


# -- WebSockets -----------------------------------------------------------------------


class _Socket(web.WebSocketResponse):
    """A WebSocket whose close for an oversized message names the limit it hit."""

    def __init__(self, *, heartbeat: float, max_msg_size: int) -> None:
        # aiohttp refuses a message of exactly max_msg_size; the documented limit is inclusive.
        super().__init__(heartbeat=heartbeat, max_msg_size=max_msg_size + 1)
        self._limit = max_msg_size

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not message:
            message = f"messages are limited to {self._limit} bytes".encode()
        return await super().close(code=code, message=message, drain=drain)


async def _serve_socket(
    request: web.Request,
    hub: Hub,
    first: Callable[[], Awaitable[tuple[str, dict[str, Any]] | None]],
) -> web.WebSocketResponse:
    config = request.app[CONFIG]
    ws = _Socket(heartbeat=config.heartbeat_s, max_msg_size=config.max_ws_message_bytes)
    await ws.prepare(request)
    client = hub.attach(request, ws)
    # Attached before the snapshot is read, so nothing broadcast meanwhile is lost;
    # held back until the snapshot is queued, so the snapshot is still the first message.
    client.hold()
    try:
        hello = await first()
        client.release_hold(encode_event_fragment(*hello) if hello is not None else None)
        async for msg in ws:
            if msg.type == WSMsgType.ERROR:
                log.info("%s client %s: %s", hub.name, request.remote, ws.exception())
    finally:
        await hub.release(client)
    return ws


async def ws_results(request: web.Request) -> web.WebSocketResponse:
    async def nothing() -> None:
        return None

    return await _serve_socket(request, request.app[RESULTS_HUB], nothing)


async def ws_events(request: web.Request) -> web.WebSocketResponse:
    app = request.app

    async def hello() -> tuple[str, dict[str, Any]]:
        return "hello", {
            "version": __version__,
            "runs": [run_view(r) for r in await app[DB].list_runs(limit=50)],
            "experiments": [
                explore.summary(e) for e in await app[EXPERIMENTS].list_experiments(limit=50)
            ],
            "results": await app[AGGREGATES].compute(),
            "scenarios": await app[DB].list_scenarios(),
            "models": [m.describe() for m in app[MODELS].values()],
        }

    return await _serve_socket(request, app[EVENTS_HUB], hello)


# -- the app --------------------------------------------------------------------------


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    initial = [
        (name, "warehouse", app[PARAMS].complete("warehouse", {"workers": workers}))
        for name, workers in SEED_SCENARIOS
    ]
    path = app[CONFIG].db_path
    lock = _lock_database(path)
    try:
        database = await db.Database.open(path, initial)
    except db.UnusableDatabase as exc:
        if lock is not None:
            lock.release()
        raise StartupError(str(exc)) from None
    interrupted = await database.interrupt_active_runs()
    if interrupted:
        log.warning(
            "runs %s were left unfinished by a previous process: now interrupted", interrupted
        )
    app[DB] = database
    app[EXPERIMENTS] = experiment_store.ExperimentStore(database)
    app[AGGREGATES] = stats.AggregateCache(database)
    try:
        yield
    finally:
        await database.close()
        if lock is not None:
            lock.release()


def _lock_database(path: str) -> lockfile.LockFile | None:
    """Hold `<db>.lock` while serving, so that a second service on one file refuses to start."""
    if path == ":memory:":
        return None
    lock_path = Path(f"{path}.lock")
    if not lock_path.parent.is_dir():
        raise StartupError(
            f"cannot open database {path}: directory {lock_path.parent} does not exist"
        )
    try:
        return lockfile.LockFile.acquire(lock_path)
    except lockfile.Held as exc:
        raise StartupError(
            f"database {path} is in use by another simsvc ({exc}); stop it first, "
            "or give this one its own --db"
        ) from None
    except OSError as exc:
        raise StartupError(f"cannot create the lock file {lock_path}: {exc.strerror}") from None


async def executor_ctx(app: web.Application) -> AsyncIterator[None]:
    # Before the database: a service that cannot compute fails before it creates a file.
    config = app[CONFIG]
    backend = await sim.open_backend(config.executor, config.workers, config.cluster)
    app[BACKEND] = backend
    try:
        yield
    finally:
        await backend.close()  # a second close (after the runner's) does nothing


async def runner_ctx(app: web.Application) -> AsyncIterator[None]:
    config, backend = app[CONFIG], app[BACKEND]
    runner = Runner(backend, config.chunk_timeout_s)
    sink = runs.RunEvents(
        app[DB], app[AGGREGATES], app[EVENTS_HUB], app[RESULTS_HUB], lambda: waiting(backend)
    )
    app[RUNS] = runs.Runs(app[DB], runner, app[MODELS], app[PARAMS], sink)
    pending: set[asyncio.Task[None]] = set()

    def waiting_changed() -> None:
        task = asyncio.create_task(sink.waiting_changed(runner.is_active))
        pending.add(task)
        task.add_done_callback(pending.discard)

    backend.subscribe(waiting_changed)
    try:
        yield
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await runner.close()
        interrupted = await app[DB].interrupt_active_runs()
        if interrupted:
            log.warning("runs %s interrupted by shutdown", interrupted)


async def explorer_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[EXPERIMENTS]
    interrupted = await store.interrupt_active_experiments()
    if interrupted:
        log.warning("experiments %s were left unfinished: now interrupted", interrupted)
    hub = app[EVENTS_HUB]
    models: dict[str, sim.Model] = app[MODELS]

    def runner() -> Runner:
        return app[RUNS].runner

    app[EXPLORER] = explore.Explorer(store, runner, models, app[PARAMS], hub.broadcast_event)
    try:
        yield
    finally:
        # The runner has closed by now (it opened later), stopping every experiment.
        interrupted = await store.interrupt_active_experiments()
        if interrupted:
            log.warning("experiments %s interrupted by shutdown", interrupted)


async def close_sockets(app: web.Application) -> None:
    await asyncio.gather(app[RESULTS_HUB].close_all(), app[EVENTS_HUB].close_all())


async def interrupt_runs(app: web.Application) -> None:
    # At once, not after the grace period for requests: no worker computes past a signal.
    if RUNS in app:
        await app[RUNS].runner.interrupt()


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
    app[CHECKERS] = {
        "run": Checker(RUN_REQUEST),
        "scenario_create": Checker(SCENARIO_CREATE),
        "scenario_patch": Checker(SCENARIO_PATCH),
        "ingest": Checker(INGEST_REQUEST),
        "extend": Checker(EXTEND_REQUEST),
        "experiment": Checker(experiment_request.EXPERIMENT_REQUEST),
        "save_point": Checker(SAVE_POINT_REQUEST),
        **{name: Checker(schema) for name, schema in QUERIES.items()},
    }
    app[REPLAY_SLOT] = asyncio.Lock()
    app[EXPERIMENT_VIEWS] = experiment_view.ViewCache()
    app[RESULTS_HUB] = Hub("/ws/results")
    app[EVENTS_HUB] = Hub("/ws/events")
    app.cleanup_ctx.extend([executor_ctx, database_ctx, explorer_ctx, runner_ctx])
    app.on_shutdown.extend([interrupt_runs, close_sockets])
    run, scenario = _ID_PATTERN % "run_id", _ID_PATTERN % "scenario_id"
    experiment, point = _ID_PATTERN % "experiment_id", _ID_PATTERN % "point_id"
    app.add_routes(
        [
            web.get("/", index),
            web.get("/openapi.json", openapi_json),
            web.get("/api/health", health),
            web.get("/api/models", list_models),
            web.get("/api/scenarios", list_scenarios),
            web.post("/api/scenarios", create_scenario),
            web.get(f"/api/scenarios/{scenario}", get_scenario),
            web.patch(f"/api/scenarios/{scenario}", patch_scenario),
            web.delete(f"/api/scenarios/{scenario}", delete_scenario),
            web.get(f"/api/scenarios/{scenario}/ingested-results", list_ingested),
            web.delete(f"/api/scenarios/{scenario}/ingested-results", delete_ingested),
            web.delete(
                f"/api/scenarios/{scenario}/ingested-results/{_ID_PATTERN % 'replication'}",
                delete_ingested_replication,
            ),
            web.get("/api/simulations", list_runs),
            web.post("/api/simulations", start_run),
            web.get(f"/api/simulations/{run}", get_run),
            web.post(f"/api/simulations/{run}/cancel", cancel_run),
            web.get(f"/api/simulations/{run}/results", run_results),
            web.get(f"/api/simulations/{run}/compare", compare_scenarios),
            web.get(f"/api/simulations/{run}/select", select_best),
            web.post(f"/api/simulations/{run}/extend", extend_run),
            web.post(f"/api/simulations/{run}/resume", resume_run),
            web.get(
                f"/api/simulations/{run}/replications/{scenario}/{_ID_PATTERN % 'replication'}",
                replay_replication,
                name=REPLAY_ROUTE,
            ),
            web.get("/api/experiments", list_experiments),
            web.post("/api/experiments", start_experiment),
            web.get(f"/api/experiments/{experiment}", get_experiment),
            web.post(f"/api/experiments/{experiment}/cancel", cancel_experiment),
            web.post(f"/api/experiments/{experiment}/resume", resume_experiment),
            web.get(f"/api/experiments/{experiment}/results", experiment_results),
            web.post(f"/api/experiments/{experiment}/points/{point}/scenario", save_point),
            web.get("/api/results", get_results),
            web.post("/api/results", ingest_results),
            web.post("/api/notify-completion", notify_completion),
            web.get("/ws/results", ws_results),
            web.get("/ws/events", ws_events),
        ]
    )
    if STATIC_DIR.is_dir():
        app.router.add_static("/static", STATIC_DIR)
    _add_docs(app)
    policy = security.Policy(
        config.token, config.cors_origins, config.allowed_hosts, frozenset({REPLAY_ROUTE})
    )
    security.setup(app, policy)
    return app


def _add_docs(app: web.Application) -> None:
    from swagger_ui import api_doc

    api_doc(app, config=app[SPEC], url_prefix="/docs", title="simsvc API", host_inject=False)
