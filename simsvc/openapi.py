"""The OpenAPI 3.1 description of the HTTP interface.

The request schemas here are the ones `web` validates bodies with, so the documented
and the enforced interface cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import __version__
from .experiment_request import EXPERIMENT_REQUEST
from .hub import MAX_QUEUED_BYTES, MAX_QUEUED_MESSAGES
from .runner import DEFAULT_CHUNK_TIMEOUT_S
from .sim import MAX_REPLICATION_WORK, MAX_RUN_WORK, Model

MAX_SQLITE_INT = 2**63 - 1
MAX_REPLICATIONS = 100_000
MAX_SCENARIOS_PER_RUN = 1_000
# No more stored than one run may name, so a run of every scenario is always allowed.
MAX_SCENARIOS = MAX_SCENARIOS_PER_RUN
MAX_INGEST_ROWS = 100_000
MAX_BODY_BYTES = 1 << 20
MAX_NAME_LENGTH = 200
MAX_WS_MESSAGE_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32  # arrays and objects nested in one body
# |value| of a KPI or numeric metric sent to POST /api/results: far above any cost or
# count, exact for integers, and small enough that no sum or square of them overflows.
MAX_INGEST_MAGNITUDE = 1e15

LIMITS_TEXT = (
    f"Limits (a refusal names the one it hit): a request body holds at most "
    f"{MAX_BODY_BYTES} bytes (413); a run has at most {MAX_REPLICATIONS} replications per "
    f"scenario and names at most {MAX_SCENARIOS_PER_RUN} scenarios (422); at most "
    f"{MAX_SCENARIOS_PER_RUN} scenarios are stored (409); a scenario name has at most "
    f"{MAX_NAME_LENGTH} characters and one ingestion at most {MAX_INGEST_ROWS} rows (422); "
    f"a WebSocket message from a client has at most {MAX_WS_MESSAGE_BYTES} bytes (close "
    f"1009). A client that falls {MAX_QUEUED_MESSAGES} messages or {MAX_QUEUED_BYTES} bytes "
    "behind is closed with 1008. Work (a model's `work(params)`, about a microsecond of one "
    f"core per unit; warehouse: 20 + orders_per_hour * shift_hours): one replication at most "
    f"{MAX_REPLICATION_WORK:.0f} units (422 naming the param), one run at most "
    f"{MAX_RUN_WORK:.0f} units over all its scenarios and replications (422 naming "
    f"`replications` or `precision.max_replications`); a chunk of replications still "
    f"computing after {DEFAULT_CHUNK_TIMEOUT_S:g} s (by default) fails its run. "
    f"A body nests at most {MAX_JSON_DEPTH} levels (400), is "
    "sent as application/json (415), and holds no number beyond a double's range (422); "
    f"ingested KPIs and numeric metrics lie within ±{MAX_INGEST_MAGNITUDE:.0e} (422). "
    "Answers never hold NaN or Infinity: a statistic that overflows is null. Requests must "
    "name this service in Host (421), and changes from a browser must come from its own "
    "origin or an allowed one (403). One replay computes at a time (429)."
)

_ID = {"type": "integer", "minimum": 1, "maximum": MAX_SQLITE_INT}
_NULLABLE_NUMBER = {"type": ["number", "null"]}
_KPI_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH}
_POSITIVE = {"type": "number", "exclusiveMinimum": 0}

PRECISION_TARGET: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "half_width": {**_POSITIVE, "description": "the 95% CI half-width must be at most this"},
        "relative_half_width": {
            **_POSITIVE,
            "description": "the 95% CI half-width must be at most this share of |mean|",
        },
    },
    "description": "one or both bounds; the tighter one applies",
}

PRECISION: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["targets"],
    "properties": {
        "targets": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 100,
            "propertyNames": _KPI_NAME,
            "additionalProperties": PRECISION_TARGET,
            "description": "KPI (or numeric metric) name -> its half-width target",
        },
        "min_replications": {
            "type": "integer",
            "minimum": 10,
            "maximum": MAX_REPLICATIONS,
            "default": 10,
            "description": "replications per scenario of the first batch (default and "
            "least 10, as Law & Kelton advise for sequential procedures)",
        },
        "max_replications": {
            "type": "integer",
            "minimum": 10,
            "maximum": MAX_REPLICATIONS,
            "default": 5000,
            "description": "stop here even if a target is not met",
        },
    },
    "description": (
        "Run in batches until every target is met for every scenario, or max_replications. "
        "Every scenario gets the same count, so common random numbers stay paired. "
        "A `replications` given alongside stands for min_replications, unless that is given."
    ),
}

RUN_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "scenario_ids": {
            "type": "array",
            "items": _ID,
            "minItems": 1,
            "maxItems": MAX_SCENARIOS_PER_RUN,
            "uniqueItems": True,
            "description": "scenarios to run (default: all)",
        },
        "replications": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_REPLICATIONS,
            "default": 3,
            "description": "replications per scenario",
        },
        "seed": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_SQLITE_INT,
            "description": "base seed (default: random, recorded on the run)",
        },
        "pace_s": {
            "type": "number",
            "minimum": 0,
            "maximum": 60,
            "default": 0,
            "description": "seconds to wait after each replication, for demos",
        },
        "precision": PRECISION,
    },
}

EXTEND_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["replications"],
    "properties": {
        "replications": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_REPLICATIONS,
            "description": "replications to add to every scenario: n+1 .. n+K",
        },
    },
}

# Query strings are checked against these after numbers are parsed (schema.query_values).
COMPARE_QUERY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["baseline"],
    "properties": {
        "baseline": {**_ID, "description": "a scenario_id of the run"},
        "familywise": {
            "enum": ["holm", "bonferroni", "none"],
            "default": "holm",
            "description": "how familywise_verdict controls the chance of any false verdict "
            "among all the comparisons of the answer: Holm's step-down (default), Bonferroni, "
            "or none; `verdict` is always the single 95% paired interval's",
        },
    },
}

SELECT_QUERY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kpi"],
    "properties": {
        "kpi": {**_KPI_NAME, "description": "a KPI with a direction (see GET /api/models)"},
        "indifference": {
            "type": "number",
            "minimum": 0,
            "default": 0,
            "description": "differences smaller than this do not matter",
        },
        "confidence": {
            "type": "number",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1,
            "default": 0.95,
            "description": "probability that the subset holds the best scenario",
        },
    },
}

SCENARIO_FIELDS: dict[str, Any] = {
    "scenario_name": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_NAME_LENGTH,
        "pattern": r"\S",
    },
    "model": {"type": "string", "description": "a name from GET /api/models"},
    "params": {
        "type": "object",
        "description": "the model's params; missing ones take the model's defaults",
    },
}

SCENARIO_CREATE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["scenario_name"],
    "properties": SCENARIO_FIELDS,
}

SCENARIO_PATCH: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": SCENARIO_FIELDS,
}

INGEST_ROW: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["scenario_id", "replication", "total_labor_costs", "ontime_delivery_rate"],
    "properties": {
        "scenario_id": _ID,
        "replication": {"type": "integer", "minimum": 1, "maximum": MAX_SQLITE_INT},
        "seed": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_SQLITE_INT},
        "total_labor_costs": {"type": "number", "minimum": 0, "maximum": MAX_INGEST_MAGNITUDE},
        "ontime_delivery_rate": {"type": "number", "minimum": 0, "maximum": 1},
        "metrics": {
            "type": "object",
            "additionalProperties": {
                "if": {"type": "number"},
                "then": {"minimum": -MAX_INGEST_MAGNITUDE, "maximum": MAX_INGEST_MAGNITUDE},
            },
            "description": "more outputs; numbers among them are aggregated like KPIs "
            f"and must lie within ±{MAX_INGEST_MAGNITUDE:.0e}",
        },
    },
}

INGEST_REQUEST: dict[str, Any] = {
    "type": "array",
    "items": INGEST_ROW,
    "minItems": 1,
    "maxItems": MAX_INGEST_ROWS,
}

PROBLEM: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

SUMMARY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "n": {"type": "integer"},
        "mean": _NULLABLE_NUMBER,
        "std": _NULLABLE_NUMBER,
        "ci95": {**_NULLABLE_NUMBER, "description": "Student-t 95% half-width"},
        "skewness": {
            **_NULLABLE_NUMBER,
            "description": "adjusted Fisher-Pearson sample skewness G1 (null below 3 values "
            "or without spread)",
        },
        "normal_doubtful": {
            "type": ["boolean", "null"],
            "description": "true when a t-interval is doubtful for this n: no spread at all, "
            "or n < 25 * skewness^2 (Cochran's rule); null below 3 values",
        },
        "interval95": {
            "type": ["array", "null"],
            "items": {"type": "number"},
            "description": "the 95% interval of the mean of the kind asked for (?interval=)",
        },
    },
}

AGGREGATE: dict[str, Any] = {
    "type": "object",
    "required": [
        "scenario_id",
        "scenario_name",
        "replications",
        "average_total_costs",
        "average_delivery_rate",
        "total_costs_std",
        "delivery_rate_std",
        "total_costs_ci95",
        "delivery_rate_ci95",
    ],
    "properties": {
        "scenario_id": {"type": "integer"},
        "scenario_name": {"type": "string"},
        "replications": {"type": "integer"},
        "average_total_costs": {"type": "number"},
        "average_delivery_rate": {"type": "number"},
        "total_costs_std": _NULLABLE_NUMBER,
        "delivery_rate_std": _NULLABLE_NUMBER,
        "total_costs_ci95": _NULLABLE_NUMBER,
        "delivery_rate_ci95": _NULLABLE_NUMBER,
        "model": {"type": "string"},
        "params": {
            "type": "object",
            "description": "the params the entry's results were computed with: the run's "
            "snapshot (?run_id=) or the scenario's current params (pooled)",
        },
        "run_ids": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "the runs whose results the entry holds",
        },
        "excluded_run_ids": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "runs of the scenario left out of the pooled entry: other params "
            "or another model version",
        },
        "ingested_replications": {
            "type": "integer",
            "description": "replications from POST /api/results in the entry",
        },
        "interval": {"enum": ["t", "johnson"], "description": "the kind of interval95"},
        "doubtful": {
            "type": "array",
            "items": {"type": "string"},
            "description": "KPIs and metrics whose normal approximation is doubtful",
        },
        "metrics": {
            "type": "object",
            "additionalProperties": {"$ref": "#/components/schemas/Summary"},
            "description": "n, mean, std, ci95, skewness, normal_doubtful and interval95 of "
            "every numeric KPI and metric",
        },
    },
}

SAVE_POINT_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["scenario_name"],
    "properties": {
        "scenario_name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH}
    },
}

SCENARIO: dict[str, Any] = {
    "type": "object",
    "required": ["scenario_id", "scenario_name", "model", "params"],
    "properties": {
        "scenario_id": {"type": "integer"},
        "scenario_name": {"type": "string"},
        "model": {"type": "string"},
        "params": {"type": "object"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}

_TIME = {"type": ["string", "null"], "format": "date-time"}
EXECUTOR_STATUS: dict[str, Any] = {
    "type": "object",
    "required": ["executor", "state", "workers", "threads"],
    "properties": {
        "executor": {"enum": ["process", "thread", "inline", "dask"]},
        "state": {
            "enum": ["ready", "connected", "reconnecting", "no workers", "closed"],
            "description": "ready: a local pool; connected, reconnecting or no workers: a"
            " Dask cluster",
        },
        "workers": {"type": "integer", "description": "worker processes (pool or cluster)"},
        "threads": {"type": "integer", "description": "replications computed at once"},
        "since": {"type": "string", "format": "date-time", "description": "when `state` began"},
        "scheduler": {"type": "string", "description": "the Dask scheduler's address"},
    },
}

RUN: dict[str, Any] = {
    "type": "object",
    "required": [
        "run_id",
        "status",
        "scenario_ids",
        "replications",
        "seed",
        "done",
        "total",
        "created_at",
        "started_at",
        "finished_at",
        "error",
    ],
    "properties": {
        "run_id": {"type": "integer"},
        "status": {
            "type": "string",
            "enum": ["queued", "running", "completed", "failed", "cancelled", "interrupted"],
        },
        "scenario_ids": {"type": "array", "items": {"type": "integer"}},
        "replications": {"type": "integer"},
        "seed": {"type": "integer"},
        "pace_s": {"type": "number"},
        "done": {"type": "integer"},
        "total": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": _TIME,
        "finished_at": _TIME,
        "error": {"type": ["string", "null"]},
        "waiting_for_workers": {
            "type": "boolean",
            "description": "the run is running but its Dask cluster has no worker (or no"
            " scheduler); it fails after --executor-wait seconds of this",
        },
        "waiting_since": {**_TIME, "description": "since when the run has had no worker"},
        "stopped_because": {
            "enum": ["precision_met", "max_replications", None],
            "description": "why a run with `precision` stopped",
        },
        "seed_scheme": {"type": "string"},
        "scenarios": {
            "type": "object",
            "description": "the params snapshot the run used, by scenario_id",
        },
        "precision": {
            **PRECISION,
            "properties": {
                **PRECISION["properties"],
                "final_interval": {
                    "type": "object",
                    "description": "the final intervals of a sequential run are approximate: "
                    "their measured coverage of the nominal 95%",
                },
            },
        },
        "precision_report": {
            "type": "array",
            "items": {"type": "object"},
            "description": "each scenario's half-width of each targeted KPI at the last check",
        },
        "environment": {
            "type": "object",
            "description": "simsvc, numpy and Python versions the run was started with",
        },
        "extensions": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "replications added by each extend",
        },
        "manifest": {
            "type": "object",
            "description": "what recomputing any replication needs: models and versions, "
            "params per scenario, seed, seed scheme and the software versions of the run "
            "(only on GET /api/simulations/{run_id})",
        },
        "results": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/Aggregate"},
            "description": "the run's aggregate list (only on GET /api/simulations/{run_id})",
        },
    },
}

_INTERVAL = {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 2, "maxItems": 2}
COMPARISON: dict[str, Any] = {
    "type": "object",
    "required": [
        "scenario_id",
        "kpi",
        "n",
        "mean_difference",
        "paired_ci95",
        "welch_ci95",
        "verdict",
    ],
    "properties": {
        "scenario_id": {"type": "integer"},
        "kpi": {"type": "string"},
        "direction": {"enum": ["min", "max"]},
        "n": {"type": "integer", "description": "replications common to both scenarios"},
        "baseline_mean": _NULLABLE_NUMBER,
        "scenario_mean": _NULLABLE_NUMBER,
        "mean_difference": {
            **_NULLABLE_NUMBER,
            "description": "mean of scenario minus baseline, replication by replication",
        },
        "paired_ci95": {**_INTERVAL, "description": "95% Student-t CI of the paired mean"},
        "welch_ci95": {**_INTERVAL, "description": "95% Welch CI, ignoring the pairing"},
        "paired_half_width": _NULLABLE_NUMBER,
        "welch_half_width": _NULLABLE_NUMBER,
        "paired_to_welch_width": {
            **_NULLABLE_NUMBER,
            "description": "paired CI width / Welch CI width: below 1, pairing narrowed it",
        },
        "correlation": {
            **_NULLABLE_NUMBER,
            "description": "correlation of the paired replications (common random numbers)",
        },
        "verdict": {"enum": ["better", "worse", "no_significant_difference"]},
        "p_value": {**_NULLABLE_NUMBER, "description": "two-sided paired t-test p-value"},
        "familywise_p_value": {
            **_NULLABLE_NUMBER,
            "description": "p-value adjusted for the family (Holm or Bonferroni)",
        },
        "familywise_ci95": {
            **_INTERVAL,
            "description": "Bonferroni simultaneous interval over the family",
        },
        "familywise_verdict": {
            "enum": ["better", "worse", "no_significant_difference"],
            "description": "the verdict with the family's error rate at most 5%",
        },
    },
}

SELECTION: dict[str, Any] = {
    "type": "object",
    "required": ["kpi", "direction", "confidence", "indifference", "subset", "procedure"],
    "properties": {
        "run_id": {"type": "integer"},
        "kpi": {"type": "string"},
        "direction": {"enum": ["min", "max"]},
        "confidence": {"type": "number"},
        "indifference": {"type": "number"},
        "n": {"type": "integer", "description": "replications common to every scenario"},
        "subset": {"type": "array", "items": {"type": "integer"}},
        "procedure": {"type": "string"},
        "scenarios": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "scenario_id": {"type": "integer"},
                    "mean": {"type": "number"},
                    "eliminated_by": {"type": ["integer", "null"]},
                },
            },
        },
    },
}

RESULT_ROW: dict[str, Any] = {
    "type": "object",
    "required": [
        "scenario_id",
        "replication",
        "seed",
        "total_labor_costs",
        "ontime_delivery_rate",
        "metrics",
    ],
    "properties": {
        "scenario_id": {"type": "integer"},
        "scenario_name": {
            "type": "string",
            "description": "the name the run's snapshot recorded (run results only)",
        },
        "replication": {"type": "integer"},
        "seed": {"type": ["integer", "null"]},
        "total_labor_costs": {"type": "number"},
        "ontime_delivery_rate": {"type": "number"},
        "metrics": {"type": "object"},
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Mapping[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "malformed request (bad JSON, invalid UTF-8, bad query parameter)",
        401: "missing or wrong bearer token",
        403: "sent from a browser page of another origin (see --cors-origin)",
        404: "no such resource",
        406: "a format this installation cannot produce (Parquet without pyarrow)",
        409: "conflicts with the current state",
        413: f"body over {MAX_BODY_BYTES} bytes",
        415: "a body whose Content-Type is not application/json",
        421: "the Host header names a host this service does not answer to (see --allowed-host)",
        422: "a field with a wrong name, type or range; `errors` names each field",
        429: "busy with the same kind of request; retry after Retry-After seconds",
    }
    problem = {"content": {"application/problem+json": {"schema": _ref("Problem")}}}
    return {str(c): {"description": reasons[c], **problem} for c in codes}


def _body(schema: Mapping[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ID}


def _query_parameters(schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", ()))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema["properties"].items()
    ]


def _operation(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": responses, **extra}


_TAGS = (
    ("/api/scenarios/{scenario_id}/ingested-results", "results"),
    ("/api/scenarios", "scenarios"),
    ("/api/experiments", "experiments"),
    ("/api/simulations", "runs"),
    ("/api/results", "results"),
    ("/api/notify-completion", "results"),
    ("/api", "service"),
)


def _tag_operations(paths: dict[str, Any]) -> None:
    """Group the operations in the docs UI by the resource their path names."""
    for path, item in paths.items():
        tag = next(t for prefix, t in _TAGS if path.startswith(prefix))
        for key, operation in item.items():
            if key != "parameters":
                operation.setdefault("tags", [tag])


def _add_edge_responses(paths: dict[str, Any]) -> None:
    """The refusals of the edge, before any handler: a foreign Host, a foreign Origin."""
    for item in paths.values():
        for key, operation in item.items():
            if key == "parameters":
                continue
            codes = (403, 421) if key in ("post", "patch", "delete") else (421,)
            for code, response in _problems(*codes).items():
                operation["responses"].setdefault(code, response)


def build_spec(models: Mapping[str, Model]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every HTTP route."""
    run_id, scenario_id = _path_id("run_id"), _path_id("scenario_id")
    run_query = {
        "name": "run_id",
        "in": "query",
        "required": False,
        "schema": _ID,
        "description": "restrict the aggregates to one run",
    }
    interval_query = {
        "name": "interval",
        "in": "query",
        "required": False,
        "schema": {"enum": ["t", "johnson"], "default": "t"},
        "description": "the kind of each metric's interval95: Student-t, or Johnson's "
        "modified t, which corrects for skewness (the *_ci95 fields stay Student-t)",
    }
    paths: dict[str, Any] = {
        "/api/health": {
            "get": _operation(
                "Liveness and version",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "status": {
                                    "enum": ["ok", "degraded"],
                                    "description": "degraded: the executor cannot compute"
                                    " now (no Dask scheduler or no worker); runs wait",
                                },
                                "version": {"type": "string"},
                                "executor": EXECUTOR_STATUS,
                            },
                        }
                    )
                },
            )
        },
        "/api/models": {
            "get": _operation(
                "The models and their params schemas",
                {
                    "200": _json({"type": "array", "items": _ref("Model")}),
                },
            )
        },
        "/api/scenarios": {
            "get": _operation(
                "List scenarios", {"200": _json({"type": "array", "items": _ref("Scenario")})}
            ),
            "post": _operation(
                "Create a scenario",
                {"201": _json(_ref("Scenario"), "Created"), **_problems(400, 409, 413, 415, 422)},
                requestBody=_body(_ref("ScenarioCreate")),
            ),
        },
        "/api/scenarios/{scenario_id}": {
            "parameters": [scenario_id],
            "get": _operation("One scenario", {"200": _json(_ref("Scenario")), **_problems(404)}),
            "patch": _operation(
                "Change a scenario (stored results keep the params they were run with)",
                {"200": _json(_ref("Scenario")), **_problems(400, 404, 409, 413, 415, 422)},
                requestBody=_body(_ref("ScenarioPatch")),
            ),
            "delete": _operation(
                "Delete a scenario that has no results",
                {"204": {"description": "Deleted"}, **_problems(404, 409)},
            ),
        },
        "/api/scenarios/{scenario_id}/ingested-results": {
            "parameters": [scenario_id],
            "get": _operation(
                "The replications POST /api/results stored for this scenario",
                {
                    "200": _json({"type": "array", "items": _ref("ResultRow")}),
                    **_problems(404),
                },
            ),
            "delete": _operation(
                "Remove every replication POST /api/results stored for this scenario; "
                "results of runs stay. The aggregates no longer count them",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["scenario_id", "deleted"],
                            "properties": {
                                "scenario_id": {"type": "integer"},
                                "deleted": {"type": "integer", "minimum": 0},
                            },
                        }
                    ),
                    **_problems(404),
                },
            ),
        },
        "/api/scenarios/{scenario_id}/ingested-results/{replication}": {
            "parameters": [scenario_id, _path_id("replication")],
            "delete": _operation(
                "Remove one replication POST /api/results stored for this scenario",
                {"204": {"description": "Deleted"}, **_problems(404)},
            ),
        },
        "/api/simulations": {
            "get": _operation(
                "The runs, newest first", {"200": _json({"type": "array", "items": _ref("Run")})}
            ),
            "post": _operation(
                "Start a run: every scenario (or those named) x replications, in the background",
                {
                    "202": {
                        **_json(
                            {
                                "type": "object",
                                "required": ["message", "run_id", "run"],
                                "properties": {
                                    "message": {"const": "Simulation started."},
                                    "run_id": {"type": "integer"},
                                    "run": _ref("Run"),
                                },
                            },
                            "Accepted",
                        ),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **_problems(400, 409, 413, 415, 422),
                },
                requestBody=_body(_ref("RunRequest"), required=False),
            ),
        },
        "/api/simulations/{run_id}": {
            "parameters": [run_id],
            "get": _operation("One run", {"200": _json(_ref("Run")), **_problems(404)}),
        },
        "/api/simulations/{run_id}/cancel": {
            "parameters": [run_id],
            "post": _operation(
                "Stop a queued or running run; finished replications stay stored",
                {"200": _json(_ref("Run")), **_problems(404, 409)},
            ),
        },
        "/api/simulations/{run_id}/compare": {
            "parameters": [run_id],
            "get": _operation(
                "Compare every other scenario of the run with a baseline, KPI by KPI: "
                "paired (common random numbers) and Welch 95% intervals, and a verdict",
                {"200": _json(_ref("CompareResponse")), **_problems(404, 409, 422)},
                parameters=_query_parameters(COMPARE_QUERY),
            ),
        },
        "/api/simulations/{run_id}/select": {
            "parameters": [run_id],
            "get": _operation(
                "The subset of the run's scenarios that holds the best one on a KPI, with the "
                "stated confidence (screening of Nelson, Swann, Goldsman & Song, 2001)",
                {"200": _json(_ref("Selection")), **_problems(404, 409, 422)},
                parameters=_query_parameters(SELECT_QUERY),
            ),
        },
        "/api/simulations/{run_id}/extend": {
            "parameters": [run_id],
            "post": _operation(
                "Add replications n+1..n+K to every scenario of a finished run",
                {
                    "202": _json(_ref("Run"), "Accepted"),
                    **_problems(400, 404, 409, 413, 415, 422),
                },
                requestBody=_body(_ref("ExtendRequest")),
            ),
        },
        "/api/simulations/{run_id}/resume": {
            "parameters": [run_id],
            "post": _operation(
                "Run exactly the replications an interrupted, failed or cancelled run lacks",
                {"202": _json(_ref("Run"), "Accepted"), **_problems(404, 409)},
            ),
        },
        "/api/simulations/{run_id}/replications/{scenario_id}/{replication}": {
            "parameters": [run_id, scenario_id, _path_id("replication")],
            "get": _operation(
                "Recompute one replication now from the run's manifest, and say whether it "
                "matches the stored row. It costs a replication's CPU: it needs the token "
                "when one is set, and one replay runs at a time (429 meanwhile)",
                {"200": _json(_ref("Replay")), **_problems(401, 404, 409, 429)},
            ),
        },
        "/api/simulations/{run_id}/results": {
            "parameters": [
                run_id,
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["json", "csv", "parquet"]},
                },
            ],
            "get": _operation(
                "One row per replication, streamed (CSV with Accept: text/csv or ?format=csv; "
                "Parquet with Accept: application/vnd.apache.parquet or ?format=parquet, "
                "which needs the optional extra simsvc[parquet], else 406)",
                {
                    "200": {
                        "description": "OK",
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": _ref("ResultRow")}
                            },
                            "text/csv": {"schema": {"type": "string"}},
                            "application/vnd.apache.parquet": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                        },
                    },
                    **_problems(400, 404, 406),
                },
            ),
        },
        "/api/results": {
            "get": _operation(
                "Per-scenario aggregates of one run, or pooled over the stored results "
                "computed with each scenario's current params, each draw (seed, r) once",
                {
                    "200": _json({"type": "array", "items": _ref("Aggregate")}),
                    **_problems(400, 404, 422),
                },
                parameters=[run_query, interval_query],
            ),
            "post": _operation(
                "Store replications computed elsewhere, all or nothing; a replication already "
                "stored for the scenario's current params is 409",
                {
                    "201": _json(
                        {"type": "object", "properties": {"inserted": {"type": "integer"}}},
                        "Created",
                    ),
                    **_problems(400, 409, 413, 415, 422),
                },
                requestBody=_body(_ref("IngestRequest")),
            ),
        },
        "/api/notify-completion": {
            "post": _operation(
                "Broadcast the aggregate list to every /ws/results client",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"message": {"const": "Notification sent."}},
                        }
                    )
                },
            ),
        },
    }
    schemas: dict[str, Any] = {
        "Problem": PROBLEM,
        "Summary": SUMMARY,
        "Aggregate": AGGREGATE,
        "Scenario": SCENARIO,
        "ScenarioCreate": SCENARIO_CREATE,
        "ScenarioPatch": SCENARIO_PATCH,
        "Run": RUN,
        "RunRequest": RUN_REQUEST,
        "ResultRow": RESULT_ROW,
        "IngestRow": INGEST_ROW,
        "IngestRequest": {**INGEST_REQUEST, "items": _ref("IngestRow")},
        "Precision": PRECISION,
        "ExtendRequest": EXTEND_REQUEST,
        "Comparison": COMPARISON,
        "CompareResponse": {
            "type": "object",
            "required": ["run_id", "baseline", "comparisons"],
            "properties": {
                "run_id": {"type": "integer"},
                "baseline": {"type": "integer"},
                "confidence": {"type": "number"},
                "familywise": {"enum": ["holm", "bonferroni", "none"]},
                "family_size": {"type": "integer"},
                "comparisons": {"type": "array", "items": _ref("Comparison")},
            },
        },
        "Selection": SELECTION,
        "Replay": {
            "type": "object",
            "required": ["run_id", "scenario_id", "replication", "stored", "recomputed", "matches"],
            "properties": {
                "run_id": {"type": "integer"},
                "scenario_id": {"type": "integer"},
                "replication": {"type": "integer"},
                "seed": {"type": "integer"},
                "model": {"type": "string"},
                "model_version": {"type": "string"},
                "params": {"type": "object"},
                "stored": {"oneOf": [_ref("ResultRow"), {"type": "null"}]},
                "recomputed": _ref("ResultRow"),
                "matches": {
                    "type": ["boolean", "null"],
                    "description": "null when the replication is not stored",
                },
                "differences": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Model": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "params": {"type": "object"},
                "kpis": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "direction": {"enum": ["min", "max"]},
                        },
                    },
                },
                "metrics": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "other numeric outputs (no direction)",
                },
                "conventions": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "output": {"type": "string"},
                            "when": {"type": "string"},
                            "value": {"type": "number"},
                            "note": {"type": "string"},
                        },
                    },
                    "description": "how an output is defined where its formula has no value "
                    "(for example a rate over zero orders), and when that biases its mean",
                },
            },
        },
    }
    for name, model in models.items():
        schemas[f"Params.{name}"] = model.params_schema
    _add_experiments(paths, schemas)
    _tag_operations(paths)
    _add_edge_responses(paths)
    _add_links(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "simsvc",
            "version": __version__,
            "description": (
                "[← Back to the dashboard](/)\n\n"
                "Runs simulation experiments: scenarios x replications in the background, "
                "every replication committed to SQLite, per-scenario statistics with 95% "
                "Student-t intervals, and live updates over WebSocket (`/ws/results` sends "
                "the aggregate list; `/ws/events` sends typed events). Errors are "
                "`application/problem+json` (RFC 9457). The params of each model are "
                "described under `components.schemas.Params.<model>`.\n\n" + LIMITS_TEXT
            ),
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }


# (source path, method, status) -> links to operations on the resource it created
_LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, str, str]]] = {
    ("/api/scenarios", "post", "201"): {
        "GetScenario": ("/api/scenarios/{scenario_id}", "get", "scenario_id", "scenario_id"),
        "PatchScenario": ("/api/scenarios/{scenario_id}", "patch", "scenario_id", "scenario_id"),
        "DeleteScenario": (
            "/api/scenarios/{scenario_id}",
            "delete",
            "scenario_id",
            "scenario_id",
        ),
    },
    ("/api/simulations", "post", "202"): {
        "GetRun": ("/api/simulations/{run_id}", "get", "run_id", "run_id"),
        "CancelRun": ("/api/simulations/{run_id}/cancel", "post", "run_id", "run_id"),
        "GetRunResults": ("/api/simulations/{run_id}/results", "get", "run_id", "run_id"),
        "GetRunAggregates": ("/api/results", "get", "run_id", "run_id"),
    },
}


def _add_links(paths: dict[str, Any]) -> None:
    """OpenAPI links from each create to what can be done with the id it returns."""
    for (path, method, status), links in _LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        response["links"] = {
            name: {
                "operationRef": f"#/paths/{_pointer(target)}/{target_method}",
                "parameters": {param: f"$response.body#/{field}"},
            }
            for name, (target, target_method, param, field) in links.items()
            if target_method in paths.get(target, {})
        }


def _pointer(path: str) -> str:
    """A path as one JSON Pointer segment (RFC 6901)."""
    return path.replace("~", "~0").replace("/", "~1")


_POINT: dict[str, Any] = {
    "type": "object",
    "required": ["point_id", "params", "replications", "means", "ci95", "feasible"],
    "properties": {
        "point_id": {"type": "integer"},
        "params": {"type": "object", "description": "every param of the point"},
        "replications": {"type": "integer"},
        "means": {"type": "object", "additionalProperties": _NULLABLE_NUMBER},
        "ci95": {
            "type": "object",
            "additionalProperties": _NULLABLE_NUMBER,
            "description": "half-width of the 95% Student-t interval of each mean",
        },
        "feasible": {"type": ["boolean", "null"], "description": "null while undecided"},
        "eliminated_by": {"type": ["integer", "null"]},
    },
}
_EXPERIMENT: dict[str, Any] = {
    "type": "object",
    "required": [
        "experiment_id",
        "kind",
        "status",
        "seed",
        "replications_used",
        "stopped_because",
    ],
    "properties": {
        "experiment_id": {"type": "integer"},
        "kind": {"enum": ["sweep", "optimize"]},
        "status": {
            "enum": ["queued", "running", "completed", "failed", "cancelled", "interrupted"]
        },
        "model": {"type": "string"},
        "seed": {"type": "integer"},
        "point_count": {"type": "integer"},
        "replications_used": {"type": "integer"},
        "stopped_because": {"enum": ["decided", "max_replications", None]},
        "error": {"type": ["string", "null"]},
        "points": {
            "type": "array",
            "items": _POINT,
            "description": "only on GET /api/experiments/{experiment_id}",
        },
        "recommendation": {
            "type": ["object", "null"],
            "properties": {
                "point_id": {"type": ["integer", "null"]},
                "params": {"type": ["object", "null"]},
                "means": {"type": ["object", "null"]},
                "ci95": {"type": ["object", "null"]},
                "statement": {"type": "string"},
            },
        },
        "pareto": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "integer"}},
            "description": "per constraint KPI, the points no other beats on it and the objective",
        },
    },
}


def _add_experiments(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """The routes of experiments over a parameter space (sweeps and optimizations)."""
    eid = _path_id("experiment_id")
    schemas.update(
        {
            "ExperimentRequest": EXPERIMENT_REQUEST,
            "Experiment": _EXPERIMENT,
            "SavePointRequest": SAVE_POINT_REQUEST,
        }
    )
    accepted = {
        **_json(_ref("Experiment"), "Accepted"),
        "headers": {"Location": {"schema": {"type": "string"}}},
    }
    paths["/api/experiments"] = {
        "get": _operation(
            "The experiments, newest first (without their points)",
            {"200": _json({"type": "array", "items": _ref("Experiment")})},
        ),
        "post": _operation(
            "Start a sweep or an optimization over a space of params",
            {"202": accepted, **_problems(400, 413, 422)},
            requestBody=_body(_ref("ExperimentRequest")),
        ),
    }
    paths["/api/experiments/{experiment_id}"] = {
        "parameters": [eid],
        "get": _operation(
            "One experiment with its points and recommendation",
            {"200": _json(_ref("Experiment")), **_problems(404)},
        ),
    }
    for action, summary, code, errors in (
        ("cancel", "Stop a queued or running experiment", "200", (404, 409)),
        ("resume", "Compute what a stopped experiment lacks", "202", (404, 409)),
    ):
        paths[f"/api/experiments/{{experiment_id}}/{action}"] = {
            "parameters": [eid],
            "post": _operation(summary, {code: _json(_ref("Experiment")), **_problems(*errors)}),
        }
    paths["/api/experiments/{experiment_id}/results"] = {
        "parameters": [
            eid,
            {
                "name": "format",
                "in": "query",
                "required": False,
                "schema": {"type": "string", "enum": ["json", "csv"]},
            },
        ],
        "get": _operation(
            "One row per replication, the point's params as columns (CSV with ?format=csv)",
            {
                "200": {
                    "description": "OK",
                    "content": {
                        "application/json": {
                            "schema": {"type": "array", "items": {"type": "object"}}
                        },
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                **_problems(400, 404),
            },
        ),
    }
    paths["/api/experiments/{experiment_id}/points/{point_id}/scenario"] = {
        "parameters": [eid, _path_id("point_id")],
        "post": _operation(
            "Save one point of an experiment as a named scenario",
            {"201": _json(_ref("Scenario"), "Created"), **_problems(400, 404, 409, 413, 422)},
            requestBody=_body(_ref("SavePointRequest")),
        ),
    }
