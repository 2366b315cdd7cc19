"""Experiment analysis: precision targets, paired comparisons and selection of the best.

Everything here is a pure function of stored replications. Replication `r` of every
scenario of a run draws from the same random stream (common random numbers), so the
replications of two scenarios with the same number form a pair; the paired interval
and the screening procedure rely on that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import numpy as np
from scipy import stats as scipy_stats

from .db import Moments, ResultRow, kpi_values
from .schema import FieldError, InvalidInput
from .stats import half_width, std, t_quantile

Direction = Literal["min", "max"]
Verdict = Literal["better", "worse", "no_significant_difference"]
Familywise = Literal["holm", "bonferroni", "none"]
FAMILYWISE_METHODS: tuple[Familywise, ...] = ("holm", "bonferroni", "none")
# kpi -> scenario_id -> replication -> value
Samples = dict[str, dict[int, dict[int, float]]]

DEFAULT_MIN_REPLICATIONS = 10
# The smallest first batch of a sequential procedure: Law & Kelton ("Simulation Modeling
# and Analysis", section 9.4.1) advise n0 >= 10, so that the variance estimate behind the
# stopping rule is not too noisy; with n0 = 2 coverage fell to 0.87-0.89.
MIN_FIRST_BATCH = 10
DEFAULT_MAX_REPLICATIONS = 5000
# What a precision run says of its final interval (docs/analytics.md, bench/coverage.py).
FINAL_INTERVAL_NOTE = {
    "approximate": True,
    "nominal_coverage": 0.95,
    # bench/coverage.py, first batch 10: the seeded scenarios, and one almost always on time
    "measured_coverage": {"seeded_scenarios": [0.923, 0.97], "almost_always_on_time": 0.963},
    "note": (
        "The run stopped when its own data met the targets, so its final 95% t-intervals "
        "are approximate: a sequential procedure's stopping time depends on the variance "
        "estimate. A zero sample variance never meets a target."
    ),
}
# Each precision batch grows the count by at least this share, so that a projection that
# keeps falling just short does not cost one round trip per replication.
MIN_GROWTH = 0.05

SCREENING_PROCEDURE = (
    "Screening procedure of Nelson, Swann, Goldsman & Song (2001), 'Simple procedures for "
    "selecting the best simulated system when the number of alternatives is large', "
    "Operations Research 49(6):950-963, in its common-random-numbers form: pairwise "
    "difference variances S_ij^2 and the Bonferroni quantile t(1-alpha/(k-1), n-1)"
)


class NotEnoughData(Exception):
    """Too few stored replications for the statistic asked for."""


def samples_of(rows: Iterable[ResultRow]) -> Samples:
    """Every finite numeric KPI of every row, by KPI, scenario and replication."""
    out: Samples = {}
    for row in rows:
        for kpi, value in kpi_values(row).items():
            out.setdefault(kpi, {}).setdefault(row["scenario_id"], {})[row["replication"]] = value
    return out


def _moments(values: Iterable[float]) -> Moments:
    # Sorted, so that a statistic never depends on the order rows were stored in.
    return Moments.of(sorted(values))


# -- run until precise ----------------------------------------------------------------


class TargetCheck(TypedDict):
    scenario_id: int
    kpi: str
    n: int
    mean: float | None
    half_width: float | None
    required_half_width: float | None
    met: bool


@dataclass(frozen=True)
class Precision:
    """Half-width targets of the 95% intervals, and the bounds on the replication count."""

    targets: dict[str, dict[str, float]]  # kpi -> {"half_width"?, "relative_half_width"?}
    min_replications: int = DEFAULT_MIN_REPLICATIONS
    max_replications: int = DEFAULT_MAX_REPLICATIONS

    def as_json(self) -> dict[str, Any]:
        return {
            "targets": self.targets,
            "min_replications": self.min_replications,
            "max_replications": self.max_replications,
            "final_interval": FINAL_INTERVAL_NOTE,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Precision:
        most = int(value.get("max_replications", DEFAULT_MAX_REPLICATIONS))
        # A small max_replications lowers the default first batch rather than clash with it.
        least = int(value.get("min_replications", min(DEFAULT_MIN_REPLICATIONS, most)))
        return cls(
            targets={k: dict(v) for k, v in value["targets"].items()},
            min_replications=least,
            max_replications=most,
        )


def parse_precision(value: Mapping[str, Any], outputs: Mapping[int, Sequence[str]]) -> Precision:
    """A schema-checked precision request, checked against the outputs of each scenario."""
    precision = Precision.from_json(value)
    errors: list[FieldError] = []
    if precision.max_replications < MIN_FIRST_BATCH:
        errors.append(
            FieldError(
                field="precision.max_replications",
                message=f"{precision.max_replications} is less than {MIN_FIRST_BATCH}: a "
                f"precision run needs a first batch of at least {MIN_FIRST_BATCH}",
            )
        )
    elif precision.min_replications < MIN_FIRST_BATCH:
        errors.append(
            FieldError(
                field="precision.min_replications",
                message=f"the first batch (min_replications, or replications beside "
                f"precision) is {precision.min_replications}; it must be at least "
                f"{MIN_FIRST_BATCH} (Law & Kelton)",
            )
        )
    if precision.min_replications > precision.max_replications:
        errors.append(
            FieldError(
                field="precision.min_replications",
                message=f"{precision.min_replications} is more than max_replications "
                f"({precision.max_replications})",
            )
        )
    for kpi in precision.targets:
        lacking = [sid for sid, names in outputs.items() if kpi not in names]
        if lacking:
            known = ", ".join(outputs[lacking[0]])
            errors.append(
                FieldError(
                    field=f"precision.targets.{kpi}",
                    message=f"unknown KPI {kpi!r}: the model of scenario {lacking[0]} "
                    f"produces {known}",
                )
            )
    if errors:
        raise InvalidInput(errors)
    return precision


def _required(target: Mapping[str, float], mean: float) -> float:
    """The half-width a KPI must reach: the tightest of its absolute and relative targets."""
    bounds = [target["half_width"]] if "half_width" in target else []
    if "relative_half_width" in target:
        bounds.append(target["relative_half_width"] * abs(mean))
    return min(bounds)


def precision_report(
    samples: Samples, scenario_ids: Sequence[int], precision: Precision
) -> list[TargetCheck]:
    """Each scenario's 95% half-width of each targeted KPI against its target."""
    report = []
    for sid in scenario_ids:
        for kpi, target in precision.targets.items():
            m = _moments(samples.get(kpi, {}).get(sid, {}).values())
            hw = half_width(m)
            required = _required(target, m.mean) if m.n else None
            report.append(
                TargetCheck(
                    scenario_id=sid,
                    kpi=kpi,
                    n=m.n,
                    mean=_finite(m.mean) if m.n else None,
                    half_width=_finite(hw),
                    required_half_width=_finite(required),
                    met=_met(m.n, hw, required),
                )
            )
    return report


def _met(n: int, hw: float | None, required: float | None) -> bool:
    """A target is met by a positive half-width within it, from a full first batch on:
    a zero sample variance says the batch was too small to show the spread, not that
    the mean is known exactly."""
    if n < MIN_FIRST_BATCH or hw is None or required is None:
        return False
    return 0 < hw <= required


def _finite(value: float | None) -> float | None:
    # JSON has no infinity: a bound that overflowed is reported as unknown.
    return value if value is not None and math.isfinite(value) else None


def next_count(
    precision: Precision, report: Sequence[TargetCheck], n: int
) -> tuple[int, str | None]:
    """The next replication count per scenario, or (n, why the run stops)."""
    if all(check["met"] for check in report):
        return n, "precision_met"
    if n >= precision.max_replications:
        return n, "max_replications"
    projected = max(_projected(check, n) for check in report if not check["met"])
    floor = n + max(1, math.ceil(n * MIN_GROWTH))
    return min(precision.max_replications, max(floor, min(2 * n, projected))), None


def _projected(check: TargetCheck, n: int) -> int:
    """Replications that would meet the target if the standard deviation held (h ~ 1/sqrt(n))."""
    hw, required = check["half_width"], check["required_half_width"]
    if not hw or not required:
        return 2 * n
    return math.ceil(n * (hw / required) ** 2)


# -- compare with a baseline ----------------------------------------------------------


class Comparison(TypedDict):
    scenario_id: int
    kpi: str
    direction: Direction
    n: int
    baseline_mean: float | None
    scenario_mean: float | None
    mean_difference: float | None
    paired_ci95: list[float] | None
    welch_ci95: list[float] | None
    paired_half_width: float | None
    welch_half_width: float | None
    paired_to_welch_width: float | None
    correlation: float | None
    verdict: Verdict
    p_value: float | None
    familywise_p_value: float | None
    familywise_ci95: list[float] | None
    familywise_verdict: Verdict


def _interval(centre: float, hw: float | None) -> list[float] | None:
    return None if hw is None else [centre - hw, centre + hw]


def welch_half_width(x: Moments, y: Moments, confidence: float = 0.95) -> float | None:
    """Half-width of Welch's interval for mean(x) - mean(y), Satterthwaite's df."""
    sx, sy = std(x), std(y)
    if sx is None or sy is None:
        return None
    vx, vy = sx * sx / x.n, sy * sy / y.n
    if vx + vy == 0:
        return 0.0
    df = (vx + vy) ** 2 / (vx * vx / (x.n - 1) + vy * vy / (y.n - 1))
    return t_quantile(0.5 + confidence / 2, df) * math.sqrt(vx + vy)


def verdict(ci: Sequence[float] | None, direction: Direction) -> Verdict:
    """Judge scenario minus baseline: an interval clear of zero on the good side is better."""
    if ci is None or ci[0] <= 0 <= ci[1]:
        return "no_significant_difference"
    increased = ci[0] > 0
    return "better" if increased == (direction == "max") else "worse"


def compare_run(
    rows: Iterable[ResultRow],
    scenario_ids: Sequence[int],
    baseline: int,
    directions: Mapping[int, Mapping[str, Direction]],
) -> list[Comparison]:
    """One comparison per other scenario and per KPI the baseline's model declares."""
    samples = samples_of(rows)
    out = []
    for sid in scenario_ids:
        if sid == baseline:
            continue
        for kpi, direction in directions[baseline].items():
            if kpi in directions[sid]:
                per_scenario = samples.get(kpi, {})
                out.append(
                    compare_pair(
                        sid,
                        kpi,
                        direction,
                        per_scenario.get(baseline, {}),
                        per_scenario.get(sid, {}),
                    )
                )
    return out


def compare_pair(
    scenario_id: int,
    kpi: str,
    direction: Direction,
    baseline: Mapping[int, float],
    scenario: Mapping[int, float],
) -> Comparison:
    """Paired and Welch 95% intervals of scenario minus baseline over common replications."""
    reps = sorted(baseline.keys() & scenario.keys())
    x = [scenario[r] for r in reps]
    y = [baseline[r] for r in reps]
    diff = _moments(a - b for a, b in zip(x, y, strict=True))
    mx, my = _moments(x), _moments(y)
    paired, welch = half_width(diff), welch_half_width(mx, my)
    paired_ci = _interval(diff.mean, paired)
    judged = verdict(paired_ci, direction)
    return Comparison(
        scenario_id=scenario_id,
        kpi=kpi,
        direction=direction,
        n=len(reps),
        baseline_mean=my.mean if reps else None,
        scenario_mean=mx.mean if reps else None,
        mean_difference=diff.mean if reps else None,
        paired_ci95=paired_ci,
        welch_ci95=_interval(mx.mean - my.mean, welch),
        paired_half_width=paired,
        welch_half_width=welch,
        paired_to_welch_width=paired / welch if paired is not None and welch else None,
        correlation=_correlation(x, y),
        verdict=judged,
        p_value=_paired_p_value(diff),
        familywise_p_value=None,
        familywise_ci95=paired_ci,
        familywise_verdict=judged,
    )


def _paired_p_value(diff: Moments) -> float | None:
    """Two-sided p-value of the paired t-test of a zero mean difference."""
    s = std(diff)
    if s is None:
        return None
    if s == 0:
        return 1.0 if diff.mean == 0 else 0.0
    t = abs(diff.mean) / (s / math.sqrt(diff.n))
    return float(2.0 * scipy_stats.t.sf(t, diff.n - 1))


def adjust_familywise(
    comparisons: Sequence[Comparison], method: Familywise, confidence: float = 0.95
) -> int:
    """Judge the comparisons as one family, in place; returns the family size m.

    Holm's (1979) step-down and Bonferroni both keep the chance of any false verdict
    among the m tests at most 1 - confidence. `familywise_ci95` is the Bonferroni
    simultaneous interval (t at 1 - alpha / (2m)) under either; Holm, which rejects at
    least what Bonferroni rejects, has no simple intervals of its own.
    """
    family = [c for c in comparisons if c["p_value"] is not None]
    m = len(family)
    if method == "none" or m == 0:
        return m
    alpha = 1.0 - confidence
    running = 0.0
    for rank, c in enumerate(sorted(family, key=lambda c: c["p_value"] or 0.0)):
        p = c["p_value"] or 0.0
        factor = m - rank if method == "holm" else m
        running = max(running, min(1.0, factor * p)) if method == "holm" else min(1.0, m * p)
        c["familywise_p_value"] = running
        hw = half_width_of(c, 1.0 - alpha / m)
        c["familywise_ci95"] = _interval(c["mean_difference"] or 0.0, hw)
        if running > alpha:
            c["familywise_verdict"] = "no_significant_difference"
        else:
            c["familywise_verdict"] = verdict(_side(c["mean_difference"] or 0.0), c["direction"])
    return m


def half_width_of(c: Comparison, confidence: float) -> float | None:
    """The paired half-width of a comparison at another confidence, from its 95% one."""
    hw, n = c["paired_half_width"], c["n"]
    if hw is None or n < 2:
        return None
    return hw / t_quantile(0.975, n - 1) * t_quantile(0.5 + confidence / 2, n - 1)


def _side(difference: float) -> list[float]:
    # An interval clear of zero on the difference's side, for `verdict`.
    return [difference, difference] if difference != 0 else [-1.0, 1.0]


def _correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


# -- select the best ------------------------------------------------------------------


class Screened(TypedDict):
    scenario_id: int
    mean: float
    eliminated_by: int | None


def screen_best(
    samples: Mapping[int, Mapping[int, float]],
    direction: Direction,
    confidence: float,
    indifference: float,
) -> tuple[list[int], int, list[Screened]]:
    """Nelson et al.'s (2001) screening: a subset holding the best with the given confidence.

    With k scenarios and n common replications, t = t(1-alpha/(k-1), n-1) and
    W_ij = t * S_ij / sqrt(n), where S_ij^2 is the sample variance of the differences
    X_i - X_j. Scenario i stays unless some j beats it by more than (W_ij - indifference)^+.
    If the best mean is at least `indifference` better than every other, the subset holds
    it with probability >= confidence. Returns (subset, n, per-scenario detail).
    """
    ids = list(samples)
    reps = sorted(set.intersection(*(set(samples[sid]) for sid in ids))) if ids else []
    x = np.array([[samples[sid][r] for r in reps] for sid in ids], dtype=float)
    return _screen_matrix(ids, x, direction, confidence, indifference)


def _screen_matrix(
    ids: Sequence[int], x: np.ndarray, direction: Direction, confidence: float, indifference: float
) -> tuple[list[int], int, list[Screened]]:
    """`screen_best` on a k x n matrix: row i holds scenario ids[i]'s common replications."""
    k, n = len(ids), (x.shape[1] if x.ndim == 2 else 0)
    if n < 2:
        raise NotEnoughData(
            f"screening needs at least 2 replications common to every scenario; found {n}"
        )
    sign = 1.0 if direction == "max" else -1.0
    x = sign * x
    means = x.mean(axis=1)
    t = t_quantile(1 - (1 - confidence) / (k - 1), n - 1) if k > 1 else 0.0
    beaten = _beaten(means, t * np.sqrt(_difference_variances(x, means) / n), indifference)
    detail = [
        Screened(
            scenario_id=sid,
            mean=float(sign * means[i]),
            eliminated_by=ids[int(np.argmax(beaten[i]))] if beaten[i].any() else None,
        )
        for i, sid in enumerate(ids)
    ]
    subset = [d["scenario_id"] for d in detail if d["eliminated_by"] is None]
    return subset, n, detail


def _difference_variances(x: np.ndarray, means: np.ndarray) -> np.ndarray:
    """S_ij^2 for every pair at once: |c_i|^2 + |c_j|^2 - 2 c_i.c_j over centred rows.

    A k x k matrix product instead of k^2 passes over the replications: 1,000 scenarios
    of 100 replications take milliseconds. Centring keeps the cancellation harmless.
    """
    centred = x - means[:, None]
    squares = np.einsum("ij,ij->i", centred, centred)
    spread = squares[:, None] + squares[None, :] - 2.0 * (centred @ centred.T)
    result: np.ndarray = np.maximum(spread, 0.0) / (x.shape[1] - 1)
    return result


def _beaten(means: np.ndarray, w: np.ndarray, indifference: float) -> np.ndarray:
    """beaten[i, j]: scenario j beats i by more than (W_ij - indifference)^+."""
    beaten: np.ndarray = means[:, None] < means[None, :] - np.maximum(w - indifference, 0.0)
    np.fill_diagonal(beaten, False)
    return beaten


def select_best(
    rows: Iterable[ResultRow],
    scenario_ids: Sequence[int],
    kpi: str,
    direction: Direction,
    confidence: float,
    indifference: float,
) -> dict[str, Any]:
    """The screening of `screen_best` on one KPI of a run's rows, as the API answers it."""
    values = [
        (sid, rep, value)
        for sid, per_rep in samples_of(rows).get(kpi, {}).items()
        for rep, value in per_rep.items()
    ]
    return select_best_of(values, scenario_ids, kpi, direction, confidence, indifference)


def _common_matrix(values: Iterable[tuple[int, int, float]], ids: Sequence[int]) -> np.ndarray:
    """Values of the replications every scenario has, one row per scenario, built in NumPy.

    The triples are unique per (scenario_id, replication), as a run stores them.
    """
    table = np.array(list(values), dtype=float).reshape(-1, 3)
    if not ids:
        return np.empty((0, 0))
    order = np.argsort(ids)
    sorted_ids = np.asarray(ids, dtype=float)[order]
    where = np.searchsorted(sorted_ids, table[:, 0]).clip(0, max(len(ids) - 1, 0))
    keep = np.isfinite(table[:, 2]) & (sorted_ids[where] == table[:, 0])
    table, rows = table[keep], order[where[keep]]
    reps, column, counts = np.unique(table[:, 1], return_inverse=True, return_counts=True)
    matrix = np.full((len(ids), len(reps)), np.nan)
    matrix[rows, column] = table[:, 2]
    common: np.ndarray = matrix[:, counts == len(ids)]
    return common


def select_best_of(
    values: Iterable[tuple[int, int, float]],
    scenario_ids: Sequence[int],
    kpi: str,
    direction: Direction,
    confidence: float,
    indifference: float,
) -> dict[str, Any]:
    """`select_best` from (scenario_id, replication, value) triples of the one KPI."""
    ids = list(scenario_ids)
    subset, n, detail = _screen_matrix(
        ids, _common_matrix(values, ids), direction, confidence, indifference
    )
    return {
        "kpi": kpi,
        "direction": direction,
        "confidence": confidence,
        "indifference": indifference,
        "n": n,
        "subset": subset,
        "procedure": SCREENING_PROCEDURE,
        "scenarios": detail,
    }
