"""The JSON Schemas that `web` checks request bodies and query strings against.

The OpenAPI document shows these same objects, so the documented and the enforced
interface cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from .limits import (
    MAX_INGEST_MAGNITUDE,
    MAX_INGEST_ROWS,
    MAX_NAME_LENGTH,
    MAX_REPLICATIONS,
    MAX_SCENARIOS_PER_RUN,
    MAX_SQLITE_INT,
)

# a row id, in a path or a body
ID = {"type": "integer", "minimum": 1, "maximum": MAX_SQLITE_INT}
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
            "items": ID,
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
        "baseline": {**ID, "description": "a scenario_id of the run"},
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
        "scenario_id": ID,
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


SAVE_POINT_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["scenario_name"],
    "properties": {
        "scenario_name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH}
    },
}
