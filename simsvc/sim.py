"""The models: pure functions of params and a random stream, their registry and their cost.

A model is a pure function of (params, random stream). Replication `r` of a run with
seed `s` always draws from `stream(s, r)`, that is `numpy.random.default_rng([s, r])`,
whichever scenario, worker or executor computes it, so scenarios share common random
numbers and a seed reproduces a run bit for bit.

Here too: checking a scenario's params against its model (`ParamsChecker`) and the
bounds on what one replication and one run may cost (`Model.work`). A plug-in model
subclasses `Model` (docs/plugins.md). `chunks` computes replications of these models,
`backends` says where, and `runner` decides which.
"""

from __future__ import annotations

import functools
import heapq
import logging
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal, TypedDict

import numpy as np

from .schema import Checker, FieldError, InvalidInput
from .streams import Streams

log = logging.getLogger(__name__)

# Work units (see `Model.work`): one is about the cost of picking one order in `warehouse`.
REPLICATION_OVERHEAD = 20.0  # what any replication costs: the call, the stream, the row
MAX_REPLICATION_WORK = 1_000_000.0  # one replication: about a second
MAX_RUN_WORK = 4_000_000_000.0  # one run or experiment: one to two hours of one core
SEED_SCHEME = "numpy.random.default_rng([seed, replication]) (PCG64 seeded by SeedSequence)"
HEADLINE_KPIS = ("total_labor_costs", "ontime_delivery_rate")


class ModelError(Exception):
    """A model broke its contract, for example by returning a non-finite KPI."""


class Kpi(TypedDict):
    name: str
    direction: Literal["min", "max"]


def stream(seed: int, replication: int) -> np.random.Generator:
    """The random stream of one replication, shared by every scenario of the run."""
    return np.random.default_rng([seed, replication])


# -- models ---------------------------------------------------------------------------


class Model:
    """Base of every model: a name, a version, a params schema, KPIs and `simulate`."""

    name: ClassVar[str]
    version: ClassVar[str]
    description: ClassVar[str] = ""
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    kpis: ClassVar[tuple[Kpi, ...]] = (
        Kpi(name="total_labor_costs", direction="min"),
        Kpi(name="ontime_delivery_rate", direction="max"),
    )
    # Other numeric outputs, with no better or worse direction; precision targets may name them.
    metrics: ClassVar[tuple[str, ...]] = ()
    # How an output is defined where its formula has no value, e.g. a ratio with nothing
    # to count: {"output", "when", "value", "note"}.
    conventions: ClassVar[tuple[dict[str, Any], ...]] = ()
    # The params `work` grows with: a replication too dear is refused naming the first.
    work_params: ClassVar[tuple[str, ...]] = ()

    def work(self, params: Mapping[str, Any]) -> float:
        """The expected cost of one replication in work units (about a microsecond each).

        Runs and experiments are bounded by it: see `MAX_REPLICATION_WORK` and
        `MAX_RUN_WORK`. A plug-in model whose cost grows with its params overrides this.
        """
        return REPLICATION_OVERHEAD

    @property
    def defaults(self) -> dict[str, Any]:
        props = self.params_schema.get("properties", {})
        return {k: v["default"] for k, v in props.items() if "default" in v}

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError

    def simulate_batch(
        self, params: Mapping[str, Any], streams: Streams
    ) -> Mapping[str, Sequence[float] | np.ndarray[Any, Any]] | None:
        """Every replication of `streams` at once, or None where the model has no batch form.

        Optional: a column of outputs per name, one value per replication in the order of
        `streams.replications`, each exactly what `simulate(params, stream(seed, r))` gives
        for that replication. None (the default) runs `simulate` once per replication.
        """
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "params": self.params_schema,
            "kpis": list(self.kpis),
            "metrics": list(self.metrics),
            "conventions": list(self.conventions),
        }

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every numeric output the model declares: its KPIs, then its metrics."""
        return tuple(k["name"] for k in self.kpis) + self.metrics


def _number(
    minimum: float | None = None, *, exclusive: bool = False, **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "number", **extra}
    if minimum is not None:
        schema["exclusiveMinimum" if exclusive else "minimum"] = minimum
    return schema


class WarehouseModel(Model):
    """One shift of order picking: Poisson orders, exponential picks, FCFS pickers."""

    name = "warehouse"
    version = "1.0.0"
    description = (
        "One shift of order picking. Orders arrive as a Poisson process during the shift; "
        "`workers` pickers serve them first-come first-served with exponential pick times; "
        "everyone stays until the last order is done, and overtime is paid at a premium."
    )
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "workers": {
                "type": "integer",
                "minimum": 1,
                "maximum": 1000,
                "default": 5,
                "description": "pickers on the shift",
            },
            "shift_hours": _number(
                0, exclusive=True, maximum=24, default=8, description="paid shift length (hours)"
            ),
            "hourly_wage": _number(
                0, maximum=1e12, default=225, description="wage per worker-hour"
            ),
            "overtime_premium": _number(
                1, maximum=1000, default=1.25, description="multiplier on overtime hours"
            ),
            "orders_per_hour": _number(
                0,
                exclusive=True,
                maximum=100000,
                default=46,
                description="Poisson arrival rate of orders during the shift",
            ),
            "mean_pick_minutes": _number(
                0,
                exclusive=True,
                maximum=1e6,
                default=6,
                description="mean of the exponential pick time of one order (minutes)",
            ),
            "due_minutes": _number(
                0,
                exclusive=True,
                maximum=1e9,
                default=25,
                description="an order is on time if done within this many minutes of arrival",
            ),
        },
    }
    kpis = (
        *Model.kpis,
        Kpi(name="overtime_hours", direction="min"),
        Kpi(name="mean_wait_minutes", direction="min"),
    )
    metrics = ("orders", "utilization")
    conventions = (
        {
            "output": "ontime_delivery_rate",
            "when": "no order arrives during the shift",
            "value": 1.0,
            "note": "An empty shift counts as fully on time. Each replication's rate is the "
            "share of that shift's orders, so the mean over replications weighs an empty "
            "shift like a full one. With the default 46 orders/hour over 8 hours an empty "
            "shift has probability e^-368 and changes nothing; at a few orders per shift "
            "(orders_per_hour * shift_hours below about 5, where P(empty) = "
            "e^-(orders_per_hour * shift_hours) exceeds 0.7%) it pulls the mean on-time rate "
            "towards 1.0, and it is not the share of all orders that were on time.",
        },
        {
            "output": "mean_wait_minutes",
            "when": "no order arrives during the shift",
            "value": 0.0,
            "note": "An empty shift counts as no wait; the same caution as for the on-time "
            "rate applies at tiny order rates.",
        },
    )

    work_params = ("orders_per_hour", "shift_hours")

    def work(self, params: Mapping[str, Any]) -> float:
        # Each order is one heap step whatever the pick times, workers or due time.
        orders = float(params["orders_per_hour"]) * float(params["shift_hours"])
        return REPLICATION_OVERHEAD + orders

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        workers = int(params["workers"])
        shift_hours = float(params["shift_hours"])
        shift_minutes = shift_hours * 60.0
        orders = int(rng.poisson(float(params["orders_per_hour"]) * shift_hours))
        arrivals = np.sort(rng.uniform(0.0, shift_minutes, orders))
        picks = rng.exponential(float(params["mean_pick_minutes"]), orders)
        starts, end_minutes = _fcfs_starts(arrivals.tolist(), picks.tolist(), workers)
        overtime = max(0.0, end_minutes / 60.0 - shift_hours)
        paid_hours = shift_hours + overtime
        wage = float(params["hourly_wage"])
        if orders:
            start = np.asarray(starts)
            late = start + picks - arrivals > float(params["due_minutes"])
            ontime = 1.0 - float(np.count_nonzero(late)) / orders
            mean_wait = float(np.mean(start - arrivals))
        else:
            ontime, mean_wait = 1.0, 0.0
        return {
            "total_labor_costs": wage
            * workers
            * (shift_hours + float(params["overtime_premium"]) * overtime),
            "ontime_delivery_rate": ontime,
            "orders": orders,
            "overtime_hours": overtime,
            "mean_wait_minutes": mean_wait,
            "utilization": float(np.sum(picks)) / (workers * 60.0 * paid_hours),
        }


def _fcfs_starts(
    arrivals: list[float], picks: list[float], servers: int
) -> tuple[list[float], float]:
    """Start times of a FCFS multi-server queue, and when the last job ends.

    The heap holds each picker's next free time; the oldest waiting order goes to the
    picker free soonest, which is exactly first-come first-served with idle pickers
    taking the oldest order.
    """
    free = [0.0] * min(servers, max(len(arrivals), 1))
    starts: list[float] = []
    append = starts.append
    replace = heapq.heapreplace
    for arrival, pick in zip(arrivals, picks, strict=True):
        soonest = free[0]
        start = arrival if arrival > soonest else soonest
        append(start)
        replace(free, start + pick)
    return starts, (max(free) if arrivals else 0.0)


class UniformModel(Model):
    """The original virtual client's stand-in: two uniform draws."""

    name = "uniform"
    version = "1.0.0"
    description = "Cost uniform on [8000, 12000] and on-time rate uniform on [0.75, 0.95]."
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {},
    }

    COST = (8000.0, 12000.0)
    RATE = (0.75, 0.95)

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return {
            "total_labor_costs": float(rng.uniform(*self.COST)),
            "ontime_delivery_rate": float(rng.uniform(*self.RATE)),
        }

    def simulate_batch(
        self, params: Mapping[str, Any], streams: Streams
    ) -> dict[str, np.ndarray[Any, Any]] | None:
        return self.columns(streams) if _uniform_batch_is_exact() else None

    def columns(self, streams: Streams) -> dict[str, np.ndarray[Any, Any]]:
        """`simulate` as arrays: `uniform(low, high)` is `low + (high - low) * random()`."""
        draws = streams.doubles(2)
        (cost_low, cost_high), (rate_low, rate_high) = self.COST, self.RATE
        return {
            "total_labor_costs": cost_low + (cost_high - cost_low) * draws[:, 0],
            "ontime_delivery_rate": rate_low + (rate_high - rate_low) * draws[:, 1],
        }


@functools.cache
def _uniform_batch_is_exact() -> bool:
    """Whether numpy here draws `uniform` as `UniformModel.columns` computes it, bit for bit.

    A C compiler may fuse numpy's multiply-add on some platforms; there the model runs
    one replication at a time, as before.
    """
    streams = Streams(2**40 + 3, range(1, 65))
    columns = UNIFORM.columns(streams)
    expected = [UNIFORM.simulate({}, stream(streams.seed, r)) for r in range(1, 65)]
    exact = all(columns[kpi].tolist() == [out[kpi] for out in expected] for kpi in HEADLINE_KPIS)
    if not exact:
        log.warning("numpy's uniform draws differ from their batch form here; batches are off")
    return exact


WAREHOUSE = WarehouseModel()
UNIFORM = UniformModel()


def load_models() -> dict[str, Model]:
    """The built-in models plus every model registered under `simsvc.models`.

    Called by whoever serves (never at import): a plug-in imports this module, so loading
    plug-ins at import would import them half-initialised on every fresh worker.
    """
    models: dict[str, Model] = {WAREHOUSE.name: WAREHOUSE, UNIFORM.name: UNIFORM}
    for entry in entry_points(group="simsvc.models"):
        try:
            loaded = entry.load()
            model = loaded() if isinstance(loaded, type) else loaded
        except Exception:
            log.exception("could not load model plug-in %s", entry.value)
            continue
        if not isinstance(model, Model):
            log.error("plug-in %s is not a simsvc.sim.Model; skipped", entry.value)
            continue
        models[model.name] = model
    return models


class ParamsChecker:
    """Validates a scenario's params against its model, filling in defaults."""

    def __init__(self, models: Mapping[str, Model]) -> None:
        self._checkers = {name: Checker(m.params_schema, "params") for name, m in models.items()}
        self._models = models

    def complete(
        self, model: str, params: Mapping[str, Any], where: str = "params"
    ) -> dict[str, Any]:
        if model not in self._models:
            known = ", ".join(sorted(self._models))
            raise InvalidInput(
                [FieldError(field="model", message=f"unknown model {model!r}; known: {known}")]
            )
        merged = {**self._models[model].defaults, **params}
        self._checkers[model].check(merged)
        props = self._models[model].params_schema.get("properties", {})
        complete = {
            k: int(v) if props.get(k, {}).get("type") == "integer" else v for k, v in merged.items()
        }
        check_replication_work(self._models[model], complete, where)
        return complete


def check_replication_work(model: Model, params: Mapping[str, Any], where: str = "params") -> None:
    """Refuse params whose one replication would cost more than `MAX_REPLICATION_WORK`."""
    work = model.work(params)
    if work <= MAX_REPLICATION_WORK:
        return
    names = model.work_params or tuple(params)[:1]
    name = f"{where}.{names[0]}" if names else where
    drivers = ", ".join(f"{k}={params[k]}" for k in model.work_params if k in params)
    message = (
        f"one replication would cost {work:.3g} work units ({drivers or model.name}), "
        f"above the limit of {MAX_REPLICATION_WORK:.3g} per replication"
    )
    raise InvalidInput([FieldError(field=name, message=message)])


# scenario_id -> (model, params)
ScenarioPlan = dict[int, tuple[Model, dict[str, Any]]]
