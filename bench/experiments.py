"""How well `optimize` answers staffing questions whose true answers are known.

    python -m bench.experiments [--macro 100] [--population 4000] [--only NAME]

For each problem, the `warehouse` model is run `--population` times at every point
(replication r of every point from stream (seed, r), as the service does): these rows
are the population, and their means are the true answers. A macro-replication then
draws replication indices uniformly with replacement from the population, one index per
replication shared by every point (common random numbers), and runs against them:

- `sequential`: the procedure of `simsvc.selection`, exactly as the service runs it;
- `fixed`: a two-stage fixed-sample procedure with the same guarantee: the same first
  stage, then one count for every point (equal allocation), large enough for Bonferroni
  one-sided t bounds on every feasibility decision and every paired comparison;
- `optuna`: Optuna's TPE sampler with constraints (`Trial.set_constraint`) alone, given
  the mean budget the sequential procedure used, 10 replications per trial, recommending
  the best point whose running means meet the constraints.

A macro-replication is `correct` when it recommends the true best feasible point
(best objective among points whose true means meet every constraint), and `good` when
the recommended point meets every constraint up to its indifference amount and no
point meeting them by that amount beats it by more than the objective's indifference
amount: the event the guarantee covers. Prints a Markdown table and the load average.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats as scipy_stats

from simsvc import sim
from simsvc.selection import (
    Batch,
    Constraint,
    FloatArray,
    Problem,
    Sequential,
    best_estimate,
    constants,
    run_to_end,
)

log = logging.getLogger("bench.experiments")
CACHE = Path(__file__).resolve().parent / ".cache"
POPULATION_SEED = 20261129
TRIAL_REPLICATIONS = 10  # Optuna: replications per trial
ONTIME = "ontime_delivery_rate"
COST = "total_labor_costs"
SERVICE_95 = Constraint(ONTIME, ">=", 0.95, 0.01)


@dataclass(frozen=True)
class Case:
    base: dict[str, Any]
    factors: dict[str, list[Any]]
    problem: Problem

    def points(self) -> list[dict[str, Any]]:
        names = list(self.factors)
        grids = np.array(np.meshgrid(*self.factors.values(), indexing="ij")).reshape(len(names), -1)
        defaults = sim.WAREHOUSE.defaults
        return [
            {**defaults, **self.base, **{n: _plain(v) for n, v in zip(names, col, strict=True)}}
            for col in grids.T
        ]


CASES = {
    # the planner's question at a busier 60 orders/h: how many pickers, how long a shift
    "staffing-60": Case(
        {"orders_per_hour": 60},
        {"workers": list(range(6, 12)), "shift_hours": [7, 8, 9]},
        Problem(COST, "min", 100.0, (SERVICE_95,), 0.95, 10),
    ),
    # a service level the 7-picker shifts sit right on (about 0.953-0.955)
    "on-the-edge": Case(
        {"orders_per_hour": 60},
        {"workers": list(range(6, 12)), "shift_hours": [7, 8, 9]},
        Problem(COST, "min", 100.0, (Constraint(ONTIME, ">=", 0.955, 0.005),), 0.95, 10),
    ),
    # the seeded warehouse (46 orders/h): pickers only
    "staffing-46": Case(
        {}, {"workers": list(range(3, 11))}, Problem(COST, "min", 100.0, (SERVICE_95,), 0.95, 10)
    ),
    # two constraints: on time and a bound on the mean wait
    "two-constraints": Case(
        {"orders_per_hour": 60},
        {"workers": list(range(6, 13)), "shift_hours": [7, 8, 9]},
        Problem(
            COST,
            "min",
            100.0,
            (Constraint(ONTIME, ">=", 0.9, 0.01), Constraint("mean_wait_minutes", "<=", 2.0, 0.25)),
            0.95,
            10,
        ),
    ),
}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# -- the population -------------------------------------------------------------------


def _population_chunk(params: dict[str, Any], first: int, last: int, kpis: list[str]) -> FloatArray:
    rows = []
    for r in range(first, last + 1):
        out = sim.WAREHOUSE.simulate(params, sim.stream(POPULATION_SEED, r))
        rows.append([float(out[k]) for k in kpis])
    return np.asarray(rows, dtype=np.float64)


def population(case: Case, size: int, kpis: list[str]) -> FloatArray:
    """points x size x kpis, computed on every core once and cached on disk."""
    text = repr((case, size, kpis, POPULATION_SEED, sim.WAREHOUSE.version))
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = CACHE / f"population-{key}.npy"
    if path.exists():
        return np.load(path)  # type: ignore[no-any-return]
    points = case.points()
    step = 500
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:
        futures = [
            [
                pool.submit(_population_chunk, p, f, min(size, f + step - 1), kpis)
                for f in range(1, size + 1, step)
            ]
            for p in points
        ]
        table = np.stack([np.concatenate([f.result() for f in per]) for per in futures])
    CACHE.mkdir(exist_ok=True)
    np.save(path, table)
    return table


@dataclass(frozen=True)
class Truth:
    means: FloatArray  # points x kpis
    best: int | None  # the true best feasible point
    good: npt.NDArray[np.bool_]  # points whose recommendation counts as good


def truth(problem: Problem, means: FloatArray, kpis: list[str]) -> Truth:
    col = {k: i for i, k in enumerate(kpis)}
    sign = 1.0 if problem.direction == "min" else -1.0
    obj = sign * means[:, col[problem.objective]]

    def meets(shift: float) -> npt.NDArray[np.bool_]:
        ok = np.ones(len(means), dtype=bool)
        for c in problem.constraints:
            edge = c.value + shift * c.tolerance * (1 if c.op == ">=" else -1)
            v = means[:, col[c.kpi]]
            ok &= v >= edge if c.op == ">=" else v <= edge
        return ok

    feasible, desirable, acceptable = meets(0.0), meets(1.0), meets(-1.0)
    best = int(np.argmin(np.where(feasible, obj, np.inf))) if feasible.any() else None
    bar = obj[desirable].min() + problem.indifference if desirable.any() else np.inf
    good = acceptable & (obj <= bar)
    return Truth(means, best, good)


# -- the three procedures -------------------------------------------------------------


def sampler(
    table: FloatArray, kpis: list[str], index: npt.NDArray[np.int64]
) -> Callable[[Batch], Mapping[str, FloatArray]]:
    def sample(batch: Batch) -> Mapping[str, FloatArray]:
        rows = index[batch.first - 1 : batch.last]
        block = table[np.asarray(batch.points)][:, rows, :]
        return {k: block[:, :, i] for i, k in enumerate(kpis)}

    return sample


def run_sequential(
    problem: Problem, table: FloatArray, kpis: list[str], index: npt.NDArray[np.int64]
) -> tuple[int | None, int]:
    k = table.shape[0]
    done = run_to_end(Sequential(problem, k, 10**9), sampler(table, kpis, index))
    return done.best([]), done.used


def run_fixed(
    problem: Problem, table: FloatArray, kpis: list[str], index: npt.NDArray[np.int64]
) -> tuple[int | None, int]:
    """Two stages: n0, then n for every point from Bonferroni t bounds; decide on the means."""
    k, n0, col = table.shape[0], problem.first_stage, {x: i for i, x in enumerate(kpis)}
    consts = constants(problem, k)
    first = table[:, index[:n0], :]
    n = n0
    s = len(problem.constraints)
    if s:
        t = scipy_stats.t.ppf(1 - consts.alpha_feasibility / (k * s), n0 - 1)
        for c in problem.constraints:
            sd = first[:, :, col[c.kpi]].std(axis=1, ddof=1)
            n = max(n, math.ceil(float(((t * sd / c.tolerance) ** 2).max())))
    if k > 1:
        t = scipy_stats.t.ppf(1 - consts.alpha_selection / (k - 1), n0 - 1)
        obj = first[:, :, col[problem.objective]]
        diff_var = np.var(obj[:, None, :] - obj[None, :, :], axis=2, ddof=1)
        n = max(n, math.ceil(float((t**2 * diff_var / problem.indifference**2).max())))
    means = table[:, index[:n], :].mean(axis=1)
    views = [{kpi: float(means[i, col[kpi]]) for kpi in kpis} for i in range(k)]
    return best_estimate(problem, views, np.ones(k, dtype=bool)), k * n


def run_optuna(
    case: Case,
    table: FloatArray,
    kpis: list[str],
    index: npt.NDArray[np.int64],
    budget: int,
    seed: int,
) -> tuple[int | None, int]:
    """TPE with constraints proposes points; each trial adds replications to its point."""
    import optuna

    problem, points = case.problem, case.points()
    col = {x: i for i, x in enumerate(kpis)}
    position = {tuple(p[f] for f in case.factors): i for i, p in enumerate(points)}
    sums, counts = np.zeros((len(points), len(kpis))), np.zeros(len(points), dtype=np.int64)

    def means(i: int) -> FloatArray:
        return sums[i] / max(counts[i], 1)  # type: ignore[no-any-return]

    def objective(trial: optuna.Trial) -> float:
        key = tuple(trial.suggest_categorical(f, values) for f, values in case.factors.items())
        i = position[key]
        rows = index[counts[i] : counts[i] + TRIAL_REPLICATIONS]
        sums[i] += table[i, rows, :].sum(axis=0)
        counts[i] += len(rows)
        m = means(i)
        for j, c in enumerate(problem.constraints):
            trial.set_constraint(f"c{j}", _violation(c, m[col[c.kpi]]))
        return float(m[col[problem.objective]])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = (
        optuna.study.StudyDirection.MINIMIZE
        if problem.direction == "min"
        else optuna.study.StudyDirection.MAXIMIZE
    )
    study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=max(1, budget // TRIAL_REPLICATIONS))
    views = [
        {kpi: float(means(i)[col[kpi]]) for kpi in kpis} if counts[i] else {}
        for i in range(len(points))
    ]
    return best_estimate(problem, views, counts > 0), int(counts.sum())


def _violation(c: Constraint, mean: float) -> float:
    return float(c.value - mean if c.op == ">=" else mean - c.value)


# -- the table ------------------------------------------------------------------------


@dataclass
class Tally:
    correct: int = 0
    good: int = 0
    used: list[int] | None = None

    def add(self, chosen: int | None, used: int, t: Truth) -> None:
        self.correct += chosen == t.best
        self.good += bool(t.good[chosen]) if chosen is not None else not t.good.any()
        self.used = [*(self.used or []), used]


def bench_case(name: str, case: Case, macro: int, size: int, use_optuna: bool) -> list[str]:
    kpis = case.problem.kpis
    table = population(case, size, kpis)
    t = truth(case.problem, table.mean(axis=1), kpis)
    tallies = {"sequential": Tally(), "fixed": Tally(), "optuna": Tally()}
    began = time.perf_counter()
    for m in range(macro):
        index = np.random.default_rng([POPULATION_SEED, m]).integers(0, size, size=2_000_000)
        chosen, used = run_sequential(case.problem, table, kpis, index)
        tallies["sequential"].add(chosen, used, t)
        tallies["fixed"].add(*run_fixed(case.problem, table, kpis, index), t)
    budget = math.ceil(statistics.fmean(tallies["sequential"].used or [0]))
    if use_optuna:
        for m in range(macro):
            index = np.random.default_rng([POPULATION_SEED, m, 1]).integers(
                0, size, size=budget + 100
            )
            tallies["optuna"].add(*run_optuna(case, table, kpis, index, budget, m), t)
    log.info("%s: %d macro-replications in %.0f s", name, macro, time.perf_counter() - began)
    return _rows(name, case, t, tallies, macro)


def _rows(name: str, case: Case, t: Truth, tallies: Mapping[str, Tally], macro: int) -> list[str]:
    best = "none" if t.best is None else _describe(case.points()[t.best], case)
    rows = []
    for procedure, tally in tallies.items():
        if not tally.used:
            continue
        used = tally.used
        rows.append(
            f"| {name} ({len(t.means)} points; true best {best}) | {procedure} | "
            f"{tally.correct / macro:.3f} | {tally.good / macro:.3f} | "
            f"{statistics.fmean(used):,.0f} | {statistics.median(used):,.0f} |"
        )
    return rows


def _describe(point: Mapping[str, Any], case: Case) -> str:
    return ", ".join(f"{f}={point[f]}" for f in case.factors)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.experiments", description=__doc__)
    parser.add_argument("--macro", type=int, default=100, help="macro-replications per problem")
    parser.add_argument("--population", type=int, default=4000, help="replications per point")
    parser.add_argument("--only", action="append", choices=sorted(CASES))
    parser.add_argument("--no-optuna", action="store_true", help="skip the search library")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    load_before = os.getloadavg()
    lines = [
        "| problem | procedure | P(true best) | P(good) | mean replications | median |",
        "|---|---|---|---|---|---|",
    ]
    for name in args.only or list(CASES):
        lines += bench_case(name, CASES[name], args.macro, args.population, not args.no_optuna)
    load_after = os.getloadavg()
    report = "\n".join(lines)
    load = f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
    sys.stdout.write(f"{report}\n\n{load} ({os.cpu_count()} cores)\n")


if __name__ == "__main__":
    main()
