"""What an experiment request may say, and the plan it is turned into.

`EXPERIMENT_REQUEST` is the JSON Schema `web` checks a body against (and the OpenAPI
document shows); `parse_plan` then checks what a schema cannot (params and KPIs the
model declares, the size of the space, the work it asks for) and builds the plan:
every point's params, and for an optimization the selection problem.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .schema import FieldError, InvalidInput
from .selection import Constraint, Problem
from .sim import Model, ParamsChecker
from .space import (
    MAX_EXPERIMENT_REPLICATIONS,
    MAX_FACTOR_VALUES,
    MAX_FACTORS,
    MAX_OPTIMIZE_POINTS,
    MAX_SWEEP_POINTS,
    Space,
    build_space,
    design_points,
)

MAX_SQLITE_INT = 2**63 - 1
MAX_CONSTRAINTS = 20
MAX_SWEEP_REPLICATIONS = 100_000
MAX_FIRST_STAGE = 1_000
MAX_SEARCH_TRIALS = 5_000
MAX_CANDIDATES = MAX_OPTIMIZE_POINTS
_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
_SWEEP_ONLY = ("design", "points", "replications")
_OPTIMIZE_ONLY = (
    "search",
    "objective",
    "constraints",
    "confidence",
    "indifference",
    "max_replications",
    "first_stage",
)

FACTOR: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "values": {"type": "array", "minItems": 1, "maxItems": MAX_FACTOR_VALUES},
        "min": {"type": "number"},
        "max": {"type": "number"},
        "step": {"type": "number", "description": "positive; without it, a continuous range"},
    },
    "description": "`values`, or a range `min`..`max` with an optional `step`",
}

EXPERIMENT_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "factors"],
    "properties": {
        "kind": {"enum": ["sweep", "optimize"]},
        "model": {**_NAME, "default": "warehouse"},
        "seed": {"type": "integer", "minimum": 0, "maximum": MAX_SQLITE_INT},
        "base_params": {"type": "object", "description": "params every point shares"},
        "factors": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": MAX_FACTORS,
            "propertyNames": _NAME,
            "additionalProperties": FACTOR,
        },
        "design": {"enum": ["grid", "lhs"], "default": "grid"},
        "points": {"type": "integer", "minimum": 1, "maximum": MAX_SWEEP_POINTS},
        "replications": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_SWEEP_REPLICATIONS,
            "default": 10,
        },
        "objective": {
            "type": "object",
            "additionalProperties": False,
            "required": ["kpi"],
            "properties": {"kpi": _NAME, "direction": {"enum": ["min", "max"]}},
        },
        "constraints": {
            "type": "array",
            "maxItems": MAX_CONSTRAINTS,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["kpi", "op", "value"],
                "properties": {
                    "kpi": _NAME,
                    "op": {"enum": [">=", "<="]},
                    "value": {"type": "number"},
                },
            },
        },
        "confidence": {"type": "number", "minimum": 0.5, "maximum": 0.999, "default": 0.95},
        "indifference": {
            "type": "object",
            "propertyNames": _NAME,
            "additionalProperties": {"type": "number", "exclusiveMinimum": 0},
        },
        "max_replications": {
            "type": "integer",
            "minimum": 2,
            "maximum": MAX_EXPERIMENT_REPLICATIONS,
            "default": 100_000,
        },
        "first_stage": {
            "type": "integer",
            "minimum": 3,
            "maximum": MAX_FIRST_STAGE,
            "default": 10,
        },
        "search": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "trials": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_SEARCH_TRIALS,
                    "default": 100,
                },
                "candidates": {
                    "type": "integer",
                    "minimum": 2,
                    "maximum": MAX_CANDIDATES,
                    "default": 10,
                },
            },
            "description": "for a space too large or continuous to enumerate (needs Optuna): "
            "`trials` points proposed by Optuna's TPE sampler, each run for the first stage; "
            "then the best `candidates` are compared with the guarantee",
        },
    },
}


@dataclass(frozen=True)
class Search:
    """How a search spends its trials, and how many of its best points it compares."""

    trials: int
    candidates: int


@dataclass(frozen=True)
class Plan:
    """An accepted request: the points, and how to spend replications on them."""

    kind: Literal["sweep", "optimize"]
    model: Model
    seed: int
    space: Space
    points: list[dict[str, Any]]  # empty for a search, which finds its points as it goes
    replications: int  # per point for a sweep; the first stage for an optimization
    budget: int  # replications the whole experiment may use
    problem: Problem | None
    search: Search | None = None


def parse_plan(
    body: Mapping[str, Any], models: Mapping[str, Model], checker: ParamsChecker, seed: int
) -> Plan:
    """The plan a schema-valid request describes; InvalidInput names every field at fault."""
    model = _model(models, body.get("model", "warehouse"))
    _kind_fields(body)
    space = build_space(checker, model, body.get("base_params", {}), body["factors"])
    if body["kind"] == "sweep":
        limit, design = MAX_SWEEP_POINTS, body.get("design", "grid")
        points = design_points(space, design, body.get("points"), seed, limit)
        replications = int(body.get("replications", 10))
        _bounded("replications", len(points) * replications, f"{len(points)} points x ")
        work = len(points) * replications
        return Plan("sweep", model, seed, space, points, replications, work, None)
    problem = _problem(body, model)
    budget = int(body.get("max_replications", 100_000))
    finite = all(f.finite for f in space.factors)
    if "search" in body or not finite or space.size() > MAX_OPTIMIZE_POINTS:
        search = _search(body.get("search", {}), budget, problem.first_stage)
        n0 = problem.first_stage
        return Plan("optimize", model, seed, space, [], n0, budget, problem, search)
    points = design_points(space, "grid", None, seed, MAX_OPTIMIZE_POINTS)
    _first_stage_paid(budget, len(points), problem.first_stage)
    return Plan("optimize", model, seed, space, points, problem.first_stage, budget, problem)


def _first_stage_paid(budget: int, points: int, n0: int) -> None:
    if budget < points * n0:
        message = (
            f"{budget} cannot pay for the first stage: {points} points x "
            f"{n0} replications = {points * n0}"
        )
        raise InvalidInput([FieldError(field="max_replications", message=message)])


def _search(body: Mapping[str, Any], budget: int, n0: int) -> Search:
    """A search for a space too large or continuous to enumerate; needs Optuna."""
    if importlib.util.find_spec("optuna") is None:
        message = (
            f"a space past {MAX_OPTIMIZE_POINTS} points or with a continuous range is "
            "searched with Optuna: pip install 'simsvc[optimize]'"
        )
        raise InvalidInput([FieldError(field="factors", message=message)])
    search = Search(int(body.get("trials", 100)), int(body.get("candidates", 10)))
    _first_stage_paid(budget, search.trials + search.candidates, n0)
    return search


def _model(models: Mapping[str, Model], name: str) -> Model:
    if name not in models:
        known = ", ".join(sorted(models))
        raise InvalidInput(
            [FieldError(field="model", message=f"unknown model {name!r}; known: {known}")]
        )
    return models[name]


def _kind_fields(body: Mapping[str, Any]) -> None:
    other = _OPTIMIZE_ONLY if body["kind"] == "sweep" else _SWEEP_ONLY
    errors = [
        FieldError(field=key, message=f"does not apply to kind {body['kind']!r}")
        for key in other
        if key in body
    ]
    if body["kind"] == "optimize" and "objective" not in body:
        errors.append(FieldError(field="objective", message="an optimization needs an objective"))
    if errors:
        raise InvalidInput(errors)


def _bounded(field: str, work: int, what: str) -> None:
    if work > MAX_EXPERIMENT_REPLICATIONS:
        message = (
            f"{what}replications = {work} replications, over the limit of "
            f"{MAX_EXPERIMENT_REPLICATIONS} per experiment"
        )
        raise InvalidInput([FieldError(field=field, message=message)])


def problem_of(body: Mapping[str, Any], model: Model) -> Problem | None:
    """The selection problem of a stored optimization request, None for a sweep."""
    return _problem(body, model) if body["kind"] == "optimize" else None


def _problem(body: Mapping[str, Any], model: Model) -> Problem:
    """The selection problem; InvalidInput for a KPI, direction or amount that is wrong."""
    kpi = body["objective"]["kpi"]
    directions = {k["name"]: k["direction"] for k in model.kpis}
    direction = body["objective"].get("direction", directions.get(kpi))
    errors = _kpi_errors(body, model)
    if kpi in model.outputs and direction is None:
        message = f"{kpi} has no direction of its own: give min or max"
        errors.append(FieldError(field="objective.direction", message=message))
    if errors:
        raise InvalidInput(errors)
    indifference = body["indifference"]
    constraints = tuple(
        Constraint(c["kpi"], c["op"], float(c["value"]), float(indifference[c["kpi"]]))
        for c in body.get("constraints", [])
    )
    confidence, n0 = float(body.get("confidence", 0.95)), int(body.get("first_stage", 10))
    return Problem(kpi, direction, float(indifference[kpi]), constraints, confidence, n0)


def _kpi_errors(body: Mapping[str, Any], model: Model) -> list[FieldError]:
    """Unknown KPIs, and indifference amounts missing or given for KPIs not in play."""
    outputs = set(model.outputs)
    kpi = body["objective"]["kpi"]
    errors = [] if kpi in outputs else [_unknown_kpi("objective.kpi", kpi, model)]
    for i, c in enumerate(body.get("constraints", [])):
        if c["kpi"] not in outputs:
            errors.append(_unknown_kpi(f"constraints[{i}].kpi", c["kpi"], model))
    indifference = body.get("indifference", {})
    named = [kpi, *(c["kpi"] for c in body.get("constraints", []))]
    for k in indifference:
        if k not in named:
            message = f"{k} is neither the objective nor constrained"
            errors.append(FieldError(field=f"indifference.{k}", message=message))
    for k in dict.fromkeys(named):
        if k in outputs and k not in indifference:
            message = f"an indifference amount for {k} is required"
            errors.append(FieldError(field=f"indifference.{k}", message=message))
    return errors


def _unknown_kpi(field: str, kpi: str, model: Model) -> FieldError:
    known = ", ".join(model.outputs)
    return FieldError(field=field, message=f"{model.name} does not declare {kpi!r}; it has {known}")
