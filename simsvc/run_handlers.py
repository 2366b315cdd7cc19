"""The handlers of runs: start, list, show, cancel, export their rows; extend, resume and
replay them; compare and select their scenarios; the aggregate list and its broadcast."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from aiohttp import web

from . import analysis, db, exports, runs, stats
from .errorlog import log_unhandled
from .http_io import (
    BAD_QUERY,
    BadRequest,
    TooBusy,
    json_response,
    path_id,
    query_int,
    read_json,
    read_query,
)
from .resources import (
    AGGREGATES,
    BACKEND,
    CHECKERS,
    DB,
    EVENTS_HUB,
    EXPORT_SLOTS,
    REPLAY_SLOT,
    RESULTS_HUB,
    RUNS,
    waiting,
)
from .runs import run_view
from .schema import FieldError, InvalidInput

RESULT_FORMATS = ("json", "csv", "parquet")

log = logging.getLogger(__name__)


# -- runs and their rows --------------------------------------------------------------


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
    database, slots = request.app[DB], request.app[EXPORT_SLOTS]
    if slots.locked():
        raise TooBusy(f"{exports.EXPORTS_AT_ONCE} exports are streaming; retry in a moment")
    async with slots:
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
        # Closed here, however it ends: a client that goes away frees the export's reads.
        async with contextlib.aclosing(export.body) as body:
            async for piece in body:
                await resp.write(piece)
    except ConnectionResetError:
        log.debug("the client of %s left before the end", request.path)
        return resp  # nothing went wrong here, and nothing more can be sent
    except asyncio.CancelledError:
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


# -- the aggregate list ---------------------------------------------------------------


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


async def notify_completion(request: web.Request) -> web.Response:
    app = request.app
    text = await app[AGGREGATES].encoded()
    app[RESULTS_HUB].broadcast(text)
    app[EVENTS_HUB].broadcast_event("results.updated", {"results": json.loads(text)})
    return json_response({"message": "Notification sent."})
