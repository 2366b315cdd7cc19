"""The shapes of what the service answers, as typed dictionaries (plain dicts at run time)."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

# Statuses after which a run or an experiment changes no more on its own.
FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "interrupted"})


class Scenario(TypedDict):
    scenario_id: int
    scenario_name: str
    model: str
    params: dict[str, Any]


class ModelInfo(TypedDict):
    name: str
    version: str
    params: dict[str, Any]
    kpis: list[dict[str, str]]


class RunInfo(TypedDict):
    run_id: int
    status: str
    scenario_ids: list[int]
    replications: int
    seed: int
    done: int
    total: int
    created_at: str
    started_at: str | None
    finished_at: str | None
    error: str | None
    stopped_because: NotRequired[str | None]
    scenarios: NotRequired[dict[str, dict[str, Any]]]
    results: NotRequired[list[Aggregate]]


class ResultRow(TypedDict):
    scenario_id: int
    replication: int
    seed: int | None
    total_labor_costs: float
    ontime_delivery_rate: float
    metrics: dict[str, Any]


class Aggregate(TypedDict):
    scenario_id: int
    scenario_name: str
    replications: int
    average_total_costs: float
    average_delivery_rate: float
    total_costs_std: float | None
    delivery_rate_std: float | None
    total_costs_ci95: float | None
    delivery_rate_ci95: float | None
    run_ids: NotRequired[list[int]]
    metrics: NotRequired[dict[str, Any]]


class Comparison(TypedDict):
    scenario_id: int
    kpi: str
    n: int
    mean_difference: float
    paired_ci95: list[float]
    welch_ci95: list[float]
    verdict: str


class CompareResult(TypedDict):
    run_id: int
    baseline: int
    comparisons: list[Comparison]


class Selection(TypedDict):
    kpi: str
    direction: str
    confidence: float
    indifference: float
    subset: list[int]
    procedure: str


class ExperimentPoint(TypedDict):
    point_id: int
    params: dict[str, Any]
    replications: int
    means: dict[str, float]
    ci95: dict[str, float | None]
    feasible: bool | None


class Recommendation(TypedDict):
    point_id: int
    params: dict[str, Any]
    means: dict[str, float]
    ci95: dict[str, float | None]
    statement: str


class ExperimentInfo(TypedDict):
    experiment_id: int
    kind: str
    status: str
    seed: int
    replications_used: int
    stopped_because: str | None
    points: list[ExperimentPoint]
    recommendation: Recommendation | None
    error: NotRequired[str | None]
