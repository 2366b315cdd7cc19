"""The handlers of experiments over a parameter space: start, list, show, cancel, resume,
export their replications, and save one of their points as a scenario."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from . import db, experiment_request, experiment_store, experiment_view, explore, jsontext, sim
from .http_io import BadRequest, json_response, path_id, read_json
from .resources import CHECKERS, EXPERIMENT_VIEWS, EXPERIMENTS, EXPLORER, MODELS
from .scenario_handlers import store_scenario


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
    response = await _prepare_rows(request, eid, wants_csv)
    columns = experiment_view.result_columns(points, metrics)
    batches = app[EXPERIMENTS].experiment_rows(eid, db.EXPORT_BATCH_ROWS)
    await _write_rows(response, batches, points, experiment["seed"], columns, wants_csv)
    return response


async def _prepare_rows(request: web.Request, eid: int, wants_csv: bool) -> web.StreamResponse:
    """The headers of an experiment's rows, sent before the first row is read."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/csv; charset=utf-8" if wants_csv else "application/json"}
    )
    if wants_csv:
        response.headers["Content-Disposition"] = (
            f'attachment; filename="experiment-{eid}-results.csv"'
        )
    await response.prepare(request)
    return response


async def _write_rows(
    response: web.StreamResponse,
    batches: AsyncIterator[list[experiment_store.ExperimentRow]],
    points: list[dict[str, Any]],
    seed: int,
    columns: list[str],
    wants_csv: bool,
) -> None:
    """The rows as CSV under one header, or as one JSON array, a batch at a time."""
    first = True
    await response.write(b"" if wants_csv else b"[")
    async for rows in batches:
        # Encoded in a worker thread, as a run's export is: the loop only passes bytes on.
        piece = await asyncio.to_thread(
            _experiment_rows_text, rows, points, seed, columns, wants_csv, first
        )
        first = False
        await response.write(piece)
    if wants_csv and first:
        await response.write(experiment_view.csv_lines([], columns, header=True).encode())
    await response.write(b"" if wants_csv else b"]")
    await response.write_eof()


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
    return await store_scenario(app, body["scenario_name"], experiment["model"], params)
