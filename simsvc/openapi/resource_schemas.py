"""The resources as the API shows them: scenarios, runs, experiments, models, problems."""

from __future__ import annotations

from typing import Any

from .request_schemas import PRECISION
from .result_schemas import NULLABLE_NUMBER, ref

_TIME = {"type": ["string", "null"], "format": "date-time"}

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
            "items": ref("Aggregate"),
            "description": "the run's aggregate list (only on GET /api/simulations/{run_id})",
        },
    },
}


MODEL: dict[str, Any] = {
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
}

POINT: dict[str, Any] = {
    "type": "object",
    "required": ["point_id", "params", "replications", "means", "ci95", "feasible"],
    "properties": {
        "point_id": {"type": "integer"},
        "params": {"type": "object", "description": "every param of the point"},
        "replications": {"type": "integer"},
        "means": {"type": "object", "additionalProperties": NULLABLE_NUMBER},
        "ci95": {
            "type": "object",
            "additionalProperties": NULLABLE_NUMBER,
            "description": "half-width of the 95% Student-t interval of each mean",
        },
        "feasible": {"type": ["boolean", "null"], "description": "null while undecided"},
        "eliminated_by": {"type": ["integer", "null"]},
    },
}
EXPERIMENT: dict[str, Any] = {
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
            "items": POINT,
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


# Answers of one operation each, shown inline rather than as components.
HEALTH: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {
            "enum": ["ok", "degraded"],
            "description": "degraded: the executor cannot compute now (no Dask scheduler or"
            " no worker); runs wait",
        },
        "version": {"type": "string"},
        "executor": EXECUTOR_STATUS,
    },
}

INGESTED_DELETED: dict[str, Any] = {
    "type": "object",
    "required": ["scenario_id", "deleted"],
    "properties": {
        "scenario_id": {"type": "integer"},
        "deleted": {"type": "integer", "minimum": 0},
    },
}

RUN_STARTED: dict[str, Any] = {
    "type": "object",
    "required": ["message", "run_id", "run"],
    "properties": {
        "message": {"const": "Simulation started."},
        "run_id": {"type": "integer"},
        "run": ref("Run"),
    },
}

INGESTED: dict[str, Any] = {"type": "object", "properties": {"inserted": {"type": "integer"}}}

NOTIFIED: dict[str, Any] = {
    "type": "object",
    "properties": {"message": {"const": "Notification sent."}},
}
