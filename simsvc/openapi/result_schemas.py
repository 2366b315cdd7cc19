"""What the result and statistics routes answer: rows, aggregates, comparisons, selections."""

from __future__ import annotations

from typing import Any

NULLABLE_NUMBER = {"type": ["number", "null"]}
_INTERVAL = {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 2, "maxItems": 2}


def ref(name: str) -> dict[str, str]:
    """A reference to the schema `name` of the document's components."""
    return {"$ref": f"#/components/schemas/{name}"}


SUMMARY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "n": {"type": "integer"},
        "mean": NULLABLE_NUMBER,
        "std": NULLABLE_NUMBER,
        "ci95": {**NULLABLE_NUMBER, "description": "Student-t 95% half-width"},
        "skewness": {
            **NULLABLE_NUMBER,
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
        "total_costs_std": NULLABLE_NUMBER,
        "delivery_rate_std": NULLABLE_NUMBER,
        "total_costs_ci95": NULLABLE_NUMBER,
        "delivery_rate_ci95": NULLABLE_NUMBER,
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
            "additionalProperties": ref("Summary"),
            "description": "n, mean, std, ci95, skewness, normal_doubtful and interval95 of "
            "every numeric KPI and metric",
        },
    },
}


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
        "baseline_mean": NULLABLE_NUMBER,
        "scenario_mean": NULLABLE_NUMBER,
        "mean_difference": {
            **NULLABLE_NUMBER,
            "description": "mean of scenario minus baseline, replication by replication",
        },
        "paired_ci95": {**_INTERVAL, "description": "95% Student-t CI of the paired mean"},
        "welch_ci95": {**_INTERVAL, "description": "95% Welch CI, ignoring the pairing"},
        "paired_half_width": NULLABLE_NUMBER,
        "welch_half_width": NULLABLE_NUMBER,
        "paired_to_welch_width": {
            **NULLABLE_NUMBER,
            "description": "paired CI width / Welch CI width: below 1, pairing narrowed it",
        },
        "correlation": {
            **NULLABLE_NUMBER,
            "description": "correlation of the paired replications (common random numbers)",
        },
        "verdict": {"enum": ["better", "worse", "no_significant_difference"]},
        "p_value": {**NULLABLE_NUMBER, "description": "two-sided paired t-test p-value"},
        "familywise_p_value": {
            **NULLABLE_NUMBER,
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


COMPARE_RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["run_id", "baseline", "comparisons"],
    "properties": {
        "run_id": {"type": "integer"},
        "baseline": {"type": "integer"},
        "confidence": {"type": "number"},
        "familywise": {"enum": ["holm", "bonferroni", "none"]},
        "family_size": {"type": "integer"},
        "comparisons": {"type": "array", "items": ref("Comparison")},
    },
}

REPLAY: dict[str, Any] = {
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
        "stored": {"oneOf": [ref("ResultRow"), {"type": "null"}]},
        "recomputed": ref("ResultRow"),
        "matches": {
            "type": ["boolean", "null"],
            "description": "null when the replication is not stored",
        },
        "differences": {"type": "array", "items": {"type": "string"}},
    },
}
