"""The handlers of scenarios and the models they name, and of results stored from outside
(`POST /api/results`, a scenario's ingested results)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from . import db
from .http_io import json_response, path_id, read_json
from .openapi import MAX_SCENARIOS
from .resources import CHECKERS, DB, EVENTS_HUB, MODELS, PARAMS

log = logging.getLogger(__name__)


def _scenario_event(app: web.Application, action: str, scenario_id: int, scenario: Any) -> None:
    app[EVENTS_HUB].broadcast_event(
        "scenario.changed", {"action": action, "scenario_id": scenario_id, "scenario": scenario}
    )


async def store_scenario(
    app: web.Application, name: str, model: str, params: Mapping[str, Any]
) -> web.Response:
    """Store a new scenario, tell the sockets, and answer 201 with where it lives."""
    scenario = await app[DB].create_scenario(name, model, params, limit=MAX_SCENARIOS)
    _scenario_event(app, "created", scenario["scenario_id"], scenario)
    return json_response(
        scenario, status=201, headers={"Location": f"/api/scenarios/{scenario['scenario_id']}"}
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
    return await store_scenario(app, body["scenario_name"], model, params)


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


async def list_models(request: web.Request) -> web.Response:
    return json_response([m.describe() for m in request.app[MODELS].values()])


# -- results stored from outside ------------------------------------------------------


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
