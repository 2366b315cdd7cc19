"""An experiment as the API shows it: its points, the recommendation and its statement."""

from __future__ import annotations

import csv
import io
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import db, stats
from .experiment_store import Experiment, ExperimentRow
from .selection import Constraint, Problem, best_estimate

CACHED_VIEWS = 8


class ViewCache:
    """The encoded answers of the few finished experiments read last."""

    def __init__(self, size: int = CACHED_VIEWS) -> None:
        self._size = size
        self._bodies: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
        return body

    def put(self, key: tuple[Any, ...], body: bytes) -> None:
        self._bodies[key] = body
        while len(self._bodies) > self._size:
            self._bodies.popitem(last=False)


def cache_key(experiment: Experiment) -> tuple[Any, ...] | None:
    """What identifies a finished experiment's answer; None while it may still change."""
    if experiment["status"] in db.ACTIVE:
        return None
    return (
        experiment["experiment_id"],
        experiment["status"],
        experiment["finished_at"],
        experiment["replications_used"],
    )


def point_views(
    points: Sequence[Mapping[str, Any]], point_stats: db.ScenarioStats, outcome: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Each point with its replications, means, 95% half-widths and feasibility."""
    feasible = outcome.get("feasible", {})
    eliminated = outcome.get("eliminated_by", {})
    views = []
    for i, params in enumerate(points, start=1):
        per_kpi = point_stats.get(i, {})
        views.append(
            {
                "point_id": i,
                "params": params,
                "replications": max((m.n for m in per_kpi.values()), default=0),
                "means": {k: m.mean if m.n else None for k, m in per_kpi.items()},
                "ci95": {k: stats.half_width(m) for k, m in per_kpi.items()},
                "feasible": feasible.get(str(i)),
                "eliminated_by": eliminated.get(str(i)),
            }
        )
    return views


def experiment_view(
    experiment: Experiment, problem: Problem | None, points: list[dict[str, Any]]
) -> dict[str, Any]:
    """The whole answer of GET /api/experiments/{id}, given its point views."""
    view: dict[str, Any] = {k: v for k, v in experiment.items() if k != "outcome"}
    view["varied"] = list(experiment["request"]["factors"])
    view["points"] = points
    view["recommendation"] = None
    if problem is not None:
        view["procedure"] = experiment["outcome"].get("procedure")
        view["pareto"] = pareto_fronts(problem, points)
        view["recommendation"] = recommendation(experiment, problem, points, view["varied"])
    return view


def recommendation(
    experiment: Experiment,
    problem: Problem,
    points: list[dict[str, Any]],
    varied: Sequence[str],
) -> dict[str, Any] | None:
    """The recommended point and the statement of what is known about it."""
    stopped = experiment["stopped_because"]
    if experiment["status"] != "completed" and stopped is None:
        return None
    search = experiment["outcome"].get("search")
    compared = set(search["candidates"]) if search and search["candidates"] else None
    alive = np.array(
        [
            p["eliminated_by"] is None
            and p["feasible"] is not False
            and (compared is None or p["point_id"] in compared)
            for p in points
        ]
    )
    if stopped == "decided":
        winners = [p for p in points if p["feasible"] and p["eliminated_by"] is None]
        chosen = winners[0] if winners else None
    else:
        index = best_estimate(problem, [p["means"] for p in points], alive)
        chosen = None if index is None else points[index]
    text = statement(problem, chosen, stopped, experiment["replications_used"], varied)
    if search:
        text += (
            f" The search tried {search['trials']} settings ({search['points_evaluated']} "
            f"distinct points) and compared its best {len(search['candidates'])} on fresh "
            "replications: the guarantee covers those points, not the rest of the space."
        )
    if chosen is None:
        return {"point_id": None, "params": None, "means": None, "ci95": None, "statement": text}
    keep = ("point_id", "params", "means", "ci95")
    return {**{k: chosen[k] for k in keep}, "statement": text}


def statement(
    problem: Problem,
    point: Mapping[str, Any] | None,
    stopped: str | None,
    used: int,
    varied: Sequence[str],
) -> str:
    """What the answer means, in words and numbers."""
    conf = f"{problem.confidence:.4g}".rstrip("0")
    if stopped != "decided":
        if point is None:
            return (
                f"The budget of {used} replications ran out before a decision, and no "
                "point's estimated means meet every constraint. This carries no guarantee."
            )
        return (
            f"The budget ran out after {used} replications before a decision. Point "
            f"{point['point_id']} ({_params(point, varied)}) is the best estimate: its estimated "
            f"means meet every constraint ({_constraints_text(problem, point)}) with the best "
            f"{problem.objective} ({_estimate(point, problem.objective)}). This carries no "
            "guarantee: it may miss a constraint or be beaten by another point."
        )
    if point is None:
        return (
            f"With probability at least {conf}, no point of the space meets every "
            f"constraint by its indifference amount ({_bounds(problem)}); "
            f"{used} replications were used."
        )
    better = "lower" if problem.direction == "min" else "higher"
    return (
        f"With probability at least {conf}: point {point['point_id']} ({_params(point, varied)}) "
        f"meets every constraint up to its indifference amount "
        f"({_constraints_text(problem, point)}), and no point that meets every constraint by "
        f"at least its indifference amount has a {better} {problem.objective} by more than "
        f"{problem.indifference:g} (this point: {_estimate(point, problem.objective)}). "
        f"{used} replications were used."
    )


def _params(point: Mapping[str, Any], varied: Sequence[str]) -> str:
    return ", ".join(f"{k}={point['params'][k]}" for k in varied)


def _estimate(point: Mapping[str, Any], kpi: str) -> str:
    mean, hw = point["means"].get(kpi), point["ci95"].get(kpi)
    if mean is None:
        return "no estimate"
    return _number(mean, 4) + ("" if hw is None else f" ± {_number(hw, 2)}")


def _number(x: float, digits: int) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.{digits}g}"


def _constraint_text(c: Constraint) -> str:
    edge = c.value - c.tolerance if c.op == ">=" else c.value + c.tolerance
    return f"{c.kpi} {c.op} {c.value:g} up to {c.tolerance:g}, that is {c.op} {edge:g}"


def _constraints_text(problem: Problem, point: Mapping[str, Any]) -> str:
    if not problem.constraints:
        return "there are none"
    return "; ".join(
        f"{_constraint_text(c)}: estimated {_estimate(point, c.kpi)}" for c in problem.constraints
    )


def _bounds(problem: Problem) -> str:
    return "; ".join(
        f"{c.kpi} {c.op} {c.value + c.tolerance if c.op == '>=' else c.value - c.tolerance:g}"
        for c in problem.constraints
    )


def pareto_fronts(problem: Problem, points: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Per constraint KPI, the points no other point beats on both it and the objective."""
    fronts: dict[str, list[int]] = {}
    sign = 1.0 if problem.direction == "min" else -1.0
    for c in problem.constraints:
        other = -1.0 if c.op == ">=" else 1.0  # smaller is better after the sign
        scored = [
            (sign * p["means"][problem.objective], other * p["means"][c.kpi], p["point_id"])
            for p in points
            if p["means"].get(problem.objective) is not None and p["means"].get(c.kpi) is not None
        ]
        front, best = [], float("inf")
        for _, y, pid in sorted(scored):
            if y < best:
                front.append(pid)
                best = y
        fronts[c.kpi] = sorted(front)
    return fronts


# -- rows -----------------------------------------------------------------------------


def result_columns(points: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[str]:
    params = list(dict.fromkeys(k for p in points[:1] for k in p))
    return [
        "point_id",
        "replication",
        "seed",
        *params,
        "total_labor_costs",
        "ontime_delivery_rate",
        *metrics,
    ]


def flat_rows(
    rows: Sequence[ExperimentRow], points: Sequence[Mapping[str, Any]], seed: int
) -> list[dict[str, Any]]:
    """Rows with the point's params as columns of their own."""
    return [
        {
            "point_id": r["point_id"],
            "replication": r["replication"],
            "seed": seed,
            **points[r["point_id"] - 1],
            "total_labor_costs": r["total_labor_costs"],
            "ontime_delivery_rate": r["ontime_delivery_rate"],
            "metrics": r["metrics"],
        }
        for r in rows
    ]


def csv_lines(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        merged = {**row["metrics"], **{k: v for k, v in row.items() if k != "metrics"}}
        writer.writerow([_cell(merged.get(k)) for k in columns])
    return out.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else value
