"""The OpenAPI 3.1 description of the HTTP interface, and the limits and schemas it states.

`limits` holds what one request may ask for; `request_schemas` the JSON Schemas `web`
checks bodies and query strings with (the document shows the same objects, so the
documented and the enforced interface cannot drift apart); `result_schemas` and
`resource_schemas` what the routes answer; `operations` the table of every route, and
`paths` the document's paths built from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import __version__
from ..experiment_request import EXPERIMENT_REQUEST
from ..sim import Model
from . import request_schemas, resource_schemas, result_schemas
from .limits import (
    LIMITS_TEXT,
    MAX_BODY_BYTES,
    MAX_INGEST_MAGNITUDE,
    MAX_INGEST_ROWS,
    MAX_JSON_DEPTH,
    MAX_NAME_LENGTH,
    MAX_REPLICATIONS,
    MAX_SCENARIOS,
    MAX_SCENARIOS_PER_RUN,
    MAX_SQLITE_INT,
    MAX_WS_MESSAGE_BYTES,
)
from .operations import OPERATIONS
from .paths import build_paths
from .request_schemas import (
    COMPARE_QUERY,
    EXTEND_REQUEST,
    INGEST_REQUEST,
    RUN_REQUEST,
    SAVE_POINT_REQUEST,
    SCENARIO_CREATE,
    SCENARIO_PATCH,
    SELECT_QUERY,
)

__all__ = [
    "COMPARE_QUERY",
    "EXTEND_REQUEST",
    "INGEST_REQUEST",
    "LIMITS_TEXT",
    "MAX_BODY_BYTES",
    "MAX_INGEST_MAGNITUDE",
    "MAX_INGEST_ROWS",
    "MAX_JSON_DEPTH",
    "MAX_NAME_LENGTH",
    "MAX_REPLICATIONS",
    "MAX_SCENARIOS",
    "MAX_SCENARIOS_PER_RUN",
    "MAX_SQLITE_INT",
    "MAX_WS_MESSAGE_BYTES",
    "RUN_REQUEST",
    "SAVE_POINT_REQUEST",
    "SCENARIO_CREATE",
    "SCENARIO_PATCH",
    "SELECT_QUERY",
    "build_spec",
]

DESCRIPTION = (
    "[← Back to the dashboard](/)\n\n"
    "Runs simulation experiments: scenarios x replications in the background, "
    "every replication committed to SQLite, per-scenario statistics with 95% "
    "Student-t intervals, and live updates over WebSocket (`/ws/results` sends "
    "the aggregate list; `/ws/events` sends typed events). Errors are "
    "`application/problem+json` (RFC 9457). The params of each model are "
    "described under `components.schemas.Params.<model>`.\n\n" + LIMITS_TEXT
)


def build_spec(models: Mapping[str, Model]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every HTTP route."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "simsvc", "version": __version__, "description": DESCRIPTION},
        "paths": build_paths(OPERATIONS),
        "components": {"schemas": component_schemas(models)},
    }


def component_schemas(models: Mapping[str, Model]) -> dict[str, Any]:
    """The named schemas: bodies, answers, and each model's params as `Params.<model>`."""
    return {
        "Problem": resource_schemas.PROBLEM,
        "Summary": result_schemas.SUMMARY,
        "Aggregate": result_schemas.AGGREGATE,
        "Scenario": resource_schemas.SCENARIO,
        "ScenarioCreate": request_schemas.SCENARIO_CREATE,
        "ScenarioPatch": request_schemas.SCENARIO_PATCH,
        "Run": resource_schemas.RUN,
        "RunRequest": request_schemas.RUN_REQUEST,
        "ResultRow": result_schemas.RESULT_ROW,
        "IngestRow": request_schemas.INGEST_ROW,
        "IngestRequest": {
            **request_schemas.INGEST_REQUEST,
            "items": result_schemas.ref("IngestRow"),
        },
        "Precision": request_schemas.PRECISION,
        "ExtendRequest": request_schemas.EXTEND_REQUEST,
        "Comparison": result_schemas.COMPARISON,
        "CompareResponse": result_schemas.COMPARE_RESPONSE,
        "Selection": result_schemas.SELECTION,
        "Replay": result_schemas.REPLAY,
        "Model": resource_schemas.MODEL,
        **{f"Params.{name}": model.params_schema for name, model in models.items()},
        "ExperimentRequest": EXPERIMENT_REQUEST,
        "Experiment": resource_schemas.EXPERIMENT,
        "SavePointRequest": request_schemas.SAVE_POINT_REQUEST,
    }
