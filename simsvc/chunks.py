"""Computing a chunk of replications: (unit, replication) pairs in, stored rows out.

`simulate_chunk` runs on a worker (a process or thread of `backends.PoolBackend`, or
Dask), shipped by reference, so it lives at module level. A chunk's streams are computed
together (`streams.Streams`): a model's `simulate` gets one reused generator set to each
replication's stream in turn, and a model with a batch form (`Model.simulate_batch`, as
`uniform`) computes all of a unit's replications at once. Every output is checked here
(`ModelError`), encoded as the row storage inserts, and summed up into each unit's
moments.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from typing import Any, TypedDict, overload

import numpy as np

from .jsontext import MetricKinds, add_kinds
from .moments import Moments, UnitMoments, kpi_moments, kpi_values
from .sim import HEADLINE_KPIS, Model, ModelError, ScenarioPlan
from .streams import Streams


class Replication(TypedDict):
    """One computed replication, as a chunk reads its row back."""

    scenario_id: int
    replication: int
    seed: int | None
    total_labor_costs: float
    ontime_delivery_rate: float
    metrics: dict[str, Any]


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
    Golub and LeVeque); `keys` each metrics key of the rows with the JSON types its
    values take, which storage records so that an export's header needs no scan of the
    rows. Read as a sequence, a chunk gives its rows as `Replication`s.
    """

    __slots__ = ("keys", "moments", "rows")

    def __init__(
        self, rows: list[EncodedRow], moments: UnitMoments, keys: MetricKinds | None = None
    ) -> None:
        self.rows = rows
        self.moments = moments
        self.keys: MetricKinds = {} if keys is None else keys

    def __reduce__(
        self,
    ) -> tuple[type[Chunk], tuple[list[EncodedRow], UnitMoments, MetricKinds]]:
        return (Chunk, (self.rows, self.moments, self.keys))

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


def simulate_chunk(
    scenarios: ScenarioPlan, seed: int, pairs: Sequence[tuple[int, int]] | np.ndarray[Any, Any]
) -> Chunk:
    """Run (scenario_id, replication) pairs; module-level so that any executor can ship it.

    `pairs` is a sequence of pairs or an (n, 2) integer array of them, as the runner
    sends. Everything per row happens here, where the chunk is computed: the metrics
    JSON and each unit's moments. The streams of the chunk's replications are computed
    together, and a model with a batch form (`Model.simulate_batch`) computes a unit's
    replications at once. The rows come back unit by unit, units in the order they first
    appear in `pairs`, each unit's rows in the order of its pairs: stored so, a unit's
    rows of a chunk are neighbours in the table, which an export reads unit by unit.
    """
    if not len(pairs):
        return Chunk([], {})
    table = np.asarray(pairs, dtype=np.int64).reshape(len(pairs), 2)
    replications, position = np.unique(table[:, 1], return_inverse=True)
    streams = Streams(seed, replications)
    rows: list[EncodedRow] = []
    moments: UnitMoments = {}
    keys: MetricKinds = {}
    for unit, at in _by_unit(table[:, 0]):
        model, params = scenarios[unit]
        part, moments[unit] = _unit_rows(model, params, unit, streams.take(position[at]), keys)
        rows += part
    return Chunk(rows, moments, keys)


def _by_unit(units: np.ndarray[Any, Any]) -> list[tuple[int, np.ndarray[Any, Any]]]:
    """Each unit with the positions of its pairs, units in order of first appearance."""
    order = np.argsort(units, kind="stable")
    ordered = units[order]
    starts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    groups = sorted(np.split(order, starts), key=lambda group: int(group[0]))
    return [(int(units[group[0]]), group) for group in groups]


def _unit_rows(
    model: Model, params: dict[str, Any], unit: int, streams: Streams, keys: MetricKinds
) -> tuple[list[EncodedRow], dict[str, Moments]]:
    """One unit's rows of a chunk, and the moments of its KPIs over them; the kinds of
    their metrics values are added to `keys` (rows of the headline KPIs alone add none)."""
    columns = model.simulate_batch(params, streams)
    if columns is None:
        outs = (model.simulate(params, streams.generator(i)) for i in range(len(streams)))
        return _encoded(model, unit, streams, outs, keys)
    arrays = {name: _column(model, name, values, len(streams)) for name, values in columns.items()}
    if set(arrays) == set(HEADLINE_KPIS) and all(a.dtype.kind in "iuf" for a in arrays.values()):
        return _kpi_rows(model, unit, streams, arrays)
    # Metrics, or values to check one at a time: each row as `simulate` would give it.
    names, listed = list(arrays), [a.tolist() for a in arrays.values()]
    outs = (dict(zip(names, row, strict=True)) for row in zip(*listed, strict=True))
    return _encoded(model, unit, streams, outs, keys)


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
    model: Model,
    unit: int,
    streams: Streams,
    outs: Iterable[Mapping[str, Any]],
    keys: MetricKinds,
) -> tuple[list[EncodedRow], dict[str, Moments]]:
    """Rows from one output dict per replication: checked, encoded, and their moments;
    the kinds of their metrics values, as encoded, are added to `keys`."""
    rows: list[EncodedRow] = []
    values: list[dict[str, float]] = []
    seed = streams.seed
    for replication, out in zip(streams.replications.tolist(), outs, strict=True):
        row = _replication(model, unit, replication, seed, out)
        cost, rate, metrics = row["total_labor_costs"], row["ontime_delivery_rate"], row["metrics"]
        rows.append((unit, replication, seed, cost, rate, _ENCODER.encode(metrics)))
        add_kinds(keys, metrics)
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
