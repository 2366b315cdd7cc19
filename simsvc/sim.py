"""Simulation: the models, their registry, and the runner that executes runs.

A model is a pure function of (params, random stream). Replication `r` of a run with
seed `s` always draws from `numpy.random.default_rng([s, r])`, whichever scenario,
worker or executor computes it, so scenarios share common random numbers and a seed
reproduces a run bit for bit.

`simulate_chunk` computes a chunk of (unit, replication) pairs on a `Backend` (a process
or thread pool here, or Dask); `runner` decides which chunks, and `runs` owns the run.
A chunk's streams are computed together (`streams.Streams`): a model's `simulate` gets
one reused generator set to each replication's stream in turn, and a model with a batch
form (`Model.simulate_batch`, as `uniform`) computes all of a unit's replications at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import heapq
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from itertools import chain, repeat
from typing import (
    Any,
    ClassVar,
    Literal,
    Protocol,
    TypedDict,
    TypeVar,
    cast,
    get_args,
    overload,
)

import numpy as np

from . import StartupError
from .moments import Moments, UnitMoments, kpi_moments, kpi_values
from .schema import Checker, FieldError, InvalidInput
from .streams import Streams
from .workers import WorkerPool

log = logging.getLogger(__name__)

# Work units (see `Model.work`): one is about the cost of picking one order in `warehouse`.
REPLICATION_OVERHEAD = 20.0  # what any replication costs: the call, the stream, the row
MAX_REPLICATION_WORK = 1_000_000.0  # one replication: about a second
MAX_RUN_WORK = 4_000_000_000.0  # one run or experiment: one to two hours of one core
SEED_SCHEME = "numpy.random.default_rng([seed, replication]) (PCG64 seeded by SeedSequence)"
HEADLINE_KPIS = ("total_labor_costs", "ontime_delivery_rate")
T = TypeVar("T")


class ModelError(Exception):
    """A model broke its contract, for example by returning a non-finite KPI."""


class Kpi(TypedDict):
    name: str
    direction: Literal["min", "max"]


class Replication(TypedDict):
    scenario_id: int
    replication: int
    seed: int | None
    total_labor_costs: float
    ontime_delivery_rate: float
    metrics: dict[str, Any]


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


# -- replications ---------------------------------------------------------------------

# scenario_id -> (model, params)
ScenarioPlan = dict[int, tuple[Model, dict[str, Any]]]


# A row as the insert binds it: (scenario_id, replication, seed, total_labor_costs,
# ontime_delivery_rate, metrics as JSON text).
EncodedRow = tuple[int, int, int, float, float, str]
# One encoder for every row: json.dumps with options builds a new one per call. The same
# text storage wrote when it encoded rows itself.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class Chunk(Sequence[Replication]):
    """A computed chunk, ready to store without touching each row again.

    `rows` are bound to the insert as they are; `moments` holds each unit's count, mean
    and M2 of every KPI over the chunk, which storage merges into the stored ones (Chan,
    Golub and LeVeque). Read as a sequence, a chunk gives its rows as `Replication`s.
    """

    __slots__ = ("moments", "rows")

    def __init__(self, rows: list[EncodedRow], moments: UnitMoments) -> None:
        self.rows = rows
        self.moments = moments

    def __reduce__(self) -> tuple[type[Chunk], tuple[list[EncodedRow], UnitMoments]]:
        return (Chunk, (self.rows, self.moments))

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> Replication: ...

    @overload
    def __getitem__(self, index: slice) -> list[Replication]: ...

    def __getitem__(self, index: int | slice) -> Replication | list[Replication]:
        if isinstance(index, slice):
            return [_decoded(row) for row in self.rows[index]]
        return _decoded(self.rows[index])


def _decoded(row: EncodedRow) -> Replication:
    sid, replication, seed, cost, rate, metrics = row
    return Replication(
        scenario_id=sid,
        replication=replication,
        seed=seed,
        total_labor_costs=cost,
        ontime_delivery_rate=rate,
        metrics=json.loads(metrics),
    )


def simulate_chunk(scenarios: ScenarioPlan, seed: int, pairs: Sequence[tuple[int, int]]) -> Chunk:
    """Run (scenario_id, replication) pairs; module-level so that any executor can ship it.

    Everything per row happens here, where the chunk is computed: the metrics JSON and
    each unit's moments. The streams of the chunk's replications are computed together,
    and a model with a batch form (`Model.simulate_batch`) computes a unit's
    replications at once. The rows come back in the order of `pairs`.
    """
    if not pairs:
        return Chunk([], {})
    flat = np.fromiter(chain.from_iterable(pairs), dtype=np.int64, count=2 * len(pairs))
    table = flat.reshape(len(pairs), 2)
    replications, position = np.unique(table[:, 1], return_inverse=True)
    streams = Streams(seed, replications)
    parts: list[tuple[np.ndarray[Any, Any], list[EncodedRow]]] = []
    moments: UnitMoments = {}
    for unit, at in _by_unit(table[:, 0]):
        model, params = scenarios[unit]
        rows, moments[unit] = _unit_rows(model, params, unit, streams.take(position[at]))
        parts.append((at, rows))
    if len(parts) == 1:
        return Chunk(parts[0][1], moments)
    rows = [row for _, part in parts for row in part]
    order = np.argsort(np.concatenate([at for at, _ in parts]))
    return Chunk([rows[i] for i in order.tolist()], moments)


def _by_unit(units: np.ndarray[Any, Any]) -> list[tuple[int, np.ndarray[Any, Any]]]:
    """Each unit with the positions of its pairs, units in order of first appearance."""
    order = np.argsort(units, kind="stable")
    ordered = units[order]
    starts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    groups = sorted(np.split(order, starts), key=lambda group: int(group[0]))
    return [(int(units[group[0]]), group) for group in groups]


def _unit_rows(
    model: Model, params: dict[str, Any], unit: int, streams: Streams
) -> tuple[list[EncodedRow], dict[str, Moments]]:
    """One unit's rows of a chunk, and the moments of its KPIs over them."""
    columns = model.simulate_batch(params, streams)
    if columns is None:
        outs = (model.simulate(params, streams.generator(i)) for i in range(len(streams)))
        return _encoded(model, unit, streams, outs)
    arrays = {name: _column(model, name, values, len(streams)) for name, values in columns.items()}
    if set(arrays) == set(HEADLINE_KPIS) and all(a.dtype.kind in "iuf" for a in arrays.values()):
        return _kpi_rows(model, unit, streams, arrays)
    # Metrics, or values to check one at a time: each row as `simulate` would give it.
    names, listed = list(arrays), [a.tolist() for a in arrays.values()]
    outs = (dict(zip(names, row, strict=True)) for row in zip(*listed, strict=True))
    return _encoded(model, unit, streams, outs)


def _kpi_rows(
    model: Model, unit: int, streams: Streams, arrays: Mapping[str, np.ndarray[Any, Any]]
) -> tuple[list[EncodedRow], dict[str, Moments]]:
    """Rows of the two headline KPIs and no metrics, checked and summed up as arrays."""
    cost, rate = (_finite(model, kpi, arrays[kpi]) for kpi in HEADLINE_KPIS)
    reps, seed, no_metrics = streams.replications.tolist(), streams.seed, _ENCODER.encode({})
    columns = (cost.tolist(), rate.tolist())
    rows = list(zip(repeat(unit), reps, repeat(seed), *columns, repeat(no_metrics)))
    return rows, {
        kpi: Moments.of_array(a) for kpi, a in zip(HEADLINE_KPIS, (cost, rate), strict=True)
    }


def _encoded(
    model: Model, unit: int, streams: Streams, outs: Iterable[Mapping[str, Any]]
) -> tuple[list[EncodedRow], dict[str, Moments]]:
    """Rows from one output dict per replication: checked, encoded, and their moments."""
    rows: list[EncodedRow] = []
    values: list[dict[str, float]] = []
    seed = streams.seed
    for replication, out in zip(streams.replications.tolist(), outs, strict=True):
        row = _replication(model, unit, replication, seed, out)
        cost, rate, metrics = row["total_labor_costs"], row["ontime_delivery_rate"], row["metrics"]
        rows.append((unit, replication, seed, cost, rate, _ENCODER.encode(metrics)))
        values.append(kpi_values(cost, rate, metrics))
    return rows, kpi_moments(values)


def _column(model: Model, name: str, values: Any, n: int) -> np.ndarray[Any, Any]:
    column = np.asarray(values)
    if column.shape != (n,):
        raise ModelError(
            f"model {model.name} returned {name} of shape {column.shape} for {n} replications"
        )
    return column


def _finite(model: Model, kpi: str, column: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    values = column.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        raise ModelError(f"model {model.name} returned {kpi}={values[~finite][0].item()!r}")
    return values


def _replication(
    model: Model, scenario_id: int, replication: int, seed: int, out: Mapping[str, Any]
) -> Replication:
    kpis = {}
    for kpi in HEADLINE_KPIS:
        value = out.get(kpi)
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ModelError(f"model {model.name} returned {kpi}={value!r}")
        kpis[kpi] = float(value)
    metrics = {k: _plain(v) for k, v in out.items() if k not in HEADLINE_KPIS}
    return Replication(
        scenario_id=scenario_id,
        replication=replication,
        seed=seed,
        total_labor_costs=kpis["total_labor_costs"],
        ontime_delivery_rate=kpis["ontime_delivery_rate"],
        metrics=metrics,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- executors ------------------------------------------------------------------------

ExecutorKind = Literal["process", "thread", "inline"]
POOL_EXECUTORS: tuple[str, ...] = get_args(ExecutorKind)
# What every chunk needs: imported by a new worker process before it takes work.
WORKER_PRELOAD = ("simsvc.runner",)


class InlineExecutor(concurrent.futures.Executor):
    """Runs each call at once in the caller's thread: for debugging only, it blocks the loop."""

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


ExecutorState = Literal["ready", "connected", "reconnecting", "no workers", "closed"]


class ExecutorStatus(TypedDict, total=False):
    """What `/api/health` says about where replications are computed."""

    executor: str
    state: ExecutorState
    workers: int
    threads: int
    since: str  # when `state` began (Dask only)
    scheduler: str  # the Dask scheduler's address


@dataclass(frozen=True)
class ClusterTimeouts:
    """How a Dask executor follows its cluster (the pools ignore it)."""

    connect_s: float = 10.0  # to reach the scheduler, at start-up and on each reconnect
    poll_s: float = 1.0  # how often the cluster's size and health are read
    waiting_after_s: float = 10.0  # no worker this long: runs are reported as waiting
    give_up_s: float = 120.0  # no worker or scheduler this long: the waiting runs fail
    reconnect_first_s: float = 0.5  # backoff between reconnect attempts: first...
    reconnect_max_s: float = 30.0  # ...and longest


class Backend(Protocol):
    """Where chunks of replications are computed."""

    @property
    def workers(self) -> int:
        """How many chunks it computes at once now; read again at every top-up."""
        ...

    async def submit(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def close(self) -> None: ...


class Executor(Backend, Protocol):
    """A backend as the service runs it: it can say how it is."""

    def status(self) -> ExecutorStatus: ...

    def waiting_since(self) -> str | None:
        """Since when (ISO time) runs have been waiting for a worker, or None."""
        ...

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` when `waiting_since` changes."""
        ...


class PoolBackend:
    """Worker processes (stopped one by one when their chunk is abandoned), threads or inline."""

    def __init__(self, kind: ExecutorKind, workers: int) -> None:
        self.kind = kind
        self.workers = workers
        self._processes: WorkerPool | None = None
        self._pool: concurrent.futures.Executor | None = None
        if kind == "process":
            method = "spawn" if sys.platform == "win32" else "forkserver"
            self._processes = WorkerPool(workers, method, preload=WORKER_PRELOAD)
        elif kind == "thread":
            self._pool = concurrent.futures.ThreadPoolExecutor(workers, "simsvc-sim")
        else:
            self._pool = InlineExecutor()

    async def submit(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a worker; cancelling it kills the worker process computing it.

        A thread cannot be stopped: a cancelled call on the thread pool runs to its end.
        """
        if self._processes is not None:
            return await self._processes.submit(fn, *args)
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def warm_up(self) -> None:
        """Start the worker processes now, so that the first run does not pay for them."""
        if self._processes is not None:
            self._processes.warm_up()

    def status(self) -> ExecutorStatus:
        return ExecutorStatus(
            executor=self.kind, state="ready", workers=self.workers, threads=self.workers
        )

    def waiting_since(self) -> str | None:
        return None  # a local pool always has its workers

    def subscribe(self, listener: Callable[[], None]) -> None:
        pass

    async def close(self) -> None:
        """Stop at once: worker processes are killed, threads finish their current call."""
        if self._processes is not None:
            await self._processes.close()
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)


async def open_backend(
    executor: str, workers: int, timeouts: ClusterTimeouts | None = None
) -> Executor:
    """The backend an executor name selects: process, thread, inline, dask-local or dask://."""
    if executor in POOL_EXECUTORS:
        backend = PoolBackend(cast(ExecutorKind, executor), workers)
        backend.warm_up()
        return backend
    if executor != "dask-local" and not executor.startswith("dask://"):
        raise ValueError(f"unknown executor {executor!r}")
    try:
        from . import dask_backend  # an optional extra: imported only when asked for
    except ImportError as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise StartupError(
            f"--executor {executor} needs Dask ({reason}); install the extra from the"
            " simsvc source tree: pip install '.[dask]'"
        ) from None
    return await dask_backend.DaskBackend.open(executor, workers, timeouts or ClusterTimeouts())


def default_workers() -> int:
    return os.cpu_count() or 1
