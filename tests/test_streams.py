"""Streams computed for many replications at once equal `default_rng([seed, r])` bit for bit."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np
import pytest

from simsvc import sim, streams
from simsvc.chunks import simulate_chunk
from simsvc.moments import Moments
from simsvc.streams import Streams

from .conftest import Client, start_run, wait_for_run

MAX_SEED = 2**63 - 1  # the largest seed a request may give
SEEDS = [
    0,  # one entropy word, and zero is a word of its own
    1,
    2**32 - 1,  # the largest one-word seed
    2**32,  # the smallest two-word seed
    MAX_SEED,
    2**64 - 1,  # the largest two-word seed
    2**64 + 5,  # three words: seed and replication overflow the pool of four
    *np.random.default_rng(20261129).integers(0, MAX_SEED, 5).tolist(),
]
REPLICATIONS = [
    0,
    1,
    2,
    100_000,  # the most a run asks for at once
    2**32 - 1,  # the largest one-word replication
    2**32,  # two words, the high one 1
    2**63 - 1,  # the largest SQLite integer
    *np.random.default_rng(7).integers(0, 2**63, 8).tolist(),
    *np.random.default_rng(8).integers(0, 2**32, 8).tolist(),
]


def _reference(seed: int, replication: int) -> np.random.Generator:
    return np.random.default_rng([seed, replication])


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_words_and_pcg64_states_equal_numpy(seed: int) -> None:
    words = streams.seed_states(seed, np.array(REPLICATIONS, dtype=np.uint64))
    state, inc = streams.pcg64_seeded(words)
    states, incs = streams.as_int(state), streams.as_int(inc)
    for i, r in enumerate(REPLICATIONS):
        expected = np.random.SeedSequence([seed, r]).generate_state(8, np.uint32)
        assert [int(column[i]) for column in words] == expected.tolist(), (seed, r)
        pcg = _reference(seed, r).bit_generator.state["state"]
        assert (states[i], incs[i]) == (pcg["state"], pcg["inc"]), (seed, r)


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_draws_equal_numpy_draws(seed: int) -> None:
    drawn = Streams(seed, REPLICATIONS).doubles(5)
    expected = [_reference(seed, r).random(5).tolist() for r in REPLICATIONS]
    assert drawn.tolist() == expected


def test_a_part_of_the_streams_is_the_streams_of_its_replications() -> None:
    whole = Streams(MAX_SEED, REPLICATIONS)
    whole.doubles(3)  # computed first, then shared
    part = whole.take([4, 2, 4]).take([1, 2])
    assert part.replications.tolist() == [REPLICATIONS[2], REPLICATIONS[4]]
    expected = [_reference(MAX_SEED, r).random(4).tolist() for r in part.replications.tolist()]
    assert part.doubles(4).tolist() == expected  # more draws than were computed
    assert part.generator(1).random() == _reference(MAX_SEED, REPLICATIONS[4]).random()


def _use_every_part(rng: np.random.Generator) -> list[Any]:
    """Draws that leave buffered bits behind, spawned children and the seed sequence."""
    drawn: list[Any] = rng.integers(0, 2**32, 3, dtype=np.uint32).tolist()  # one word left over
    drawn += [rng.normal(), rng.poisson(4.0), rng.uniform(1, 2, 2).tolist()]
    first, second = rng.spawn(2)
    (third,) = rng.spawn(1)  # spawning again gives new children
    drawn += [first.random(), second.exponential(), third.integers(10**9)]
    seed_seq = rng.bit_generator.seed_seq
    drawn += [seed_seq.entropy, seed_seq.spawn_key, seed_seq.n_children_spawned]  # type: ignore[attr-defined]
    return drawn


def test_the_reused_generator_leaks_nothing_between_replications() -> None:
    reps = [5, 2**32 + 1, 0, 5, 17]  # 5 twice: coming back to a stream starts it over
    shared = Streams(123, reps)
    drawn = [_use_every_part(shared.generator(i)) for i in range(len(reps))]
    assert drawn == [_use_every_part(_reference(123, r)) for r in reps]


# -- chunks -----------------------------------------------------------------------------


class OneByOne(sim.Model):
    """A model computed one replication at a time, whatever batch form it wraps has."""

    def __init__(self, model: sim.Model) -> None:
        self.model = model
        self.name = model.name  # type: ignore[misc]

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return self.model.simulate(params, rng)


class MetricsBatch(sim.Model):
    """A batch form with metrics: ints, flags, and a metric that is sometimes NaN."""

    name = "metrics-batch"
    version = "1.0.0"
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        x, y = rng.random(), rng.random()
        return {
            "ontime_delivery_rate": x,
            "count": int(y * 1000),
            "total_labor_costs": 100 + 10 * y,
            "flag": bool(x > 0.5),
            "odd": float("nan") if y > 0.7 else y,
        }

    def simulate_batch(
        self, params: Mapping[str, Any], streams: Streams
    ) -> dict[str, np.ndarray[Any, Any]]:
        x, y = streams.doubles(2).T
        return {
            "ontime_delivery_rate": x,
            "count": (y * 1000).astype(np.int64),
            "total_labor_costs": 100 + 10 * y,
            "flag": x > 0.5,
            "odd": np.where(y > 0.7, np.nan, y),
        }


def _both_ways(plan: sim.ScenarioPlan, seed: int, pairs: list[tuple[int, int]]) -> None:
    batch = simulate_chunk(plan, seed, pairs)
    single = simulate_chunk({u: (OneByOne(m), p) for u, (m, p) in plan.items()}, seed, pairs)
    assert batch.rows == single.rows
    assert repr(batch.moments) == repr(single.moments)  # NaN third moments compare as text
    # Unit by unit, in the order units first appear; each unit's rows in pair order.
    first = {unit: i for i, (unit, _) in reversed(list(enumerate(pairs)))}
    by_unit = sorted(pairs, key=lambda pair: first[pair[0]])
    assert [(row[0], row[1]) for row in batch.rows] == by_unit


def test_the_uniform_batch_form_is_used_here() -> None:
    assert sim._uniform_batch_is_exact()
    assert sim.UNIFORM.simulate_batch({}, Streams(1, [1, 2])) is not None


@pytest.mark.parametrize(
    "pairs",
    [
        [(1, r) for r in range(1, 301)],  # one unit
        [(u, r) for r in range(1, 101) for u in (1, 2, 3)],  # replication-major, as a run
        [(2, 9), (1, 4), (3, 2**40), (1, 1), (2, 4)],  # gaps and any order, as a resume
        [(3, 7)],  # one pair
    ],
)
@pytest.mark.parametrize("seed", [0, 4242, MAX_SEED])
def test_a_chunk_in_batches_equals_it_one_by_one(pairs: list[tuple[int, int]], seed: int) -> None:
    _both_ways({1: (sim.UNIFORM, {}), 2: (sim.UNIFORM, {}), 3: (sim.UNIFORM, {})}, seed, pairs)


def test_batch_and_one_by_one_units_mix_in_one_chunk() -> None:
    plan: sim.ScenarioPlan = {
        1: (sim.WAREHOUSE, sim.WAREHOUSE.defaults),
        2: (sim.UNIFORM, {}),
        3: (MetricsBatch(), {}),
    }
    _both_ways(plan, 99, [(u, r) for r in range(1, 41) for u in (3, 1, 2)])


def test_chunks_computed_on_threads_at_once_equal_those_computed_alone() -> None:
    plan: sim.ScenarioPlan = {1: (sim.UNIFORM, {}), 2: (sim.WAREHOUSE, sim.WAREHOUSE.defaults)}
    chunks = [
        [(u, r) for r in range(start, start + 30) for u in (1, 2)] for start in range(1, 241, 30)
    ]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns within a replication, not between chunks
    try:
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda pairs: simulate_chunk(plan, 11, pairs), chunks))
    finally:
        sys.setswitchinterval(interval)
    alone = [simulate_chunk(plan, 11, pairs) for pairs in chunks]
    assert [c.rows for c in together] == [c.rows for c in alone]


@pytest.mark.parametrize("replications", [[-1], [2**63], [1.5], [[1, 2]]])
def test_streams_refuse_what_is_not_a_replication_number(replications: list[Any]) -> None:
    with pytest.raises(ValueError, match="replications must be"):
        Streams(1, replications)


def test_chunk_rows_are_the_replications_of_default_rng() -> None:
    seed, reps = MAX_SEED, [1, 2, 3, 2**32, 100_000]
    plan: sim.ScenarioPlan = {1: (sim.UNIFORM, {}), 2: (sim.WAREHOUSE, sim.WAREHOUSE.defaults)}
    chunk = simulate_chunk(plan, seed, [(u, r) for r in reps for u in (1, 2)])
    for row in chunk:
        model, params = plan[row["scenario_id"]]
        out = model.simulate(params, _reference(seed, row["replication"]))
        assert row["total_labor_costs"] == out["total_labor_costs"]
        assert row["ontime_delivery_rate"] == out["ontime_delivery_rate"]
        assert row["metrics"] == {k: v for k, v in out.items() if k not in sim.HEADLINE_KPIS}


def test_without_an_exact_batch_form_uniform_runs_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sim, "_uniform_batch_is_exact", lambda: False)
    assert sim.UNIFORM.simulate_batch({}, Streams(1, [1])) is None
    _both_ways({1: (sim.UNIFORM, {})}, 3, [(1, r) for r in range(1, 20)])


class BadBatch(MetricsBatch):
    def __init__(self, change: str) -> None:
        self.change = change

    def simulate_batch(
        self, params: Mapping[str, Any], streams: Streams
    ) -> dict[str, np.ndarray[Any, Any]]:
        columns = {
            k: v
            for k, v in super().simulate_batch(params, streams).items()
            if k in ("ontime_delivery_rate", "total_labor_costs")
        }
        if self.change == "nan":
            columns["total_labor_costs"][1] = np.nan
        elif self.change == "short":
            columns["ontime_delivery_rate"] = columns["ontime_delivery_rate"][1:]
        else:
            del columns["total_labor_costs"]
        return columns


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("nan", "returned total_labor_costs=nan"),  # a KPI must be finite
        ("short", r"ontime_delivery_rate of shape \(2,\) for 3 replications"),
        ("missing", "returned total_labor_costs=None"),  # as if `simulate` left it out
    ],
)
def test_a_batch_form_that_breaks_the_contract_fails_the_chunk(change: str, message: str) -> None:
    with pytest.raises(sim.ModelError, match=message):
        simulate_chunk({1: (BadBatch(change), {})}, 1, [(1, 1), (1, 2), (1, 3)])


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).uniform(8000, 12000, 999),
        np.random.default_rng(2).normal(0, 1e150, 40),  # cubes overflow: m3 unknown
        np.array([1.7e308, -1.7e308, 1.0]),  # the spread overflows
        # Deviations whose `** 2` (the C library's pow) is not their product d * d.
        np.array([29.095164169873968, -29.095164169873968, 4260.57889958634, -4260.57889958634]),
        np.array([5.0]),
        np.array([]),
    ],
)
def test_moments_of_an_array_equal_moments_of_its_values(values: np.ndarray[Any, Any]) -> None:
    assert repr(Moments.of_array(values)) == repr(Moments.of(values.tolist()))


async def test_a_run_stores_the_draws_of_default_rng(client: Client) -> None:
    resp = await client.post("/api/scenarios", json={"scenario_name": "u", "model": "uniform"})
    scenario = await resp.json()
    run = await start_run(
        client, scenario_ids=[scenario["scenario_id"]], replications=300, seed=MAX_SEED
    )
    assert (await wait_for_run(client, run["run_id"]))["status"] == "completed"
    rows = await (await client.get(f"/api/simulations/{run['run_id']}/results")).json()
    assert len(rows) == 300
    for row in rows:
        rng = _reference(MAX_SEED, row["replication"])
        expected = (rng.uniform(8000.0, 12000.0), rng.uniform(0.75, 0.95))
        assert (row["total_labor_costs"], row["ontime_delivery_rate"]) == expected
