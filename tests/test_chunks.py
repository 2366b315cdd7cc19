"""Chunks computed ready to store: the same rows and statistics as storing row by row."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from simsvc import backends, chunks, db, sim
from simsvc.db import Database

from .conftest import Client, start_run, wait_for_run
from .test_exports import OddMetricsModel

PLAN: sim.ScenarioPlan = {
    1: (sim.WAREHOUSE, sim.WAREHOUSE.defaults),
    2: (sim.UNIFORM, {}),
    3: (OddMetricsModel(), {}),
}
_RAW = (
    "SELECT scenario_id, replication, seed, total_labor_costs, ontime_delivery_rate, metrics"
    " FROM results WHERE run_id = ? ORDER BY scenario_id, replication"
)
PAIRS = [(unit, r) for r in range(1, 41) for unit in (1, 2, 3)]


def _as_stored(chunk: chunks.Chunk) -> list[dict[str, Any]]:
    return [dict(row) for row in chunk]


def test_a_chunk_reads_as_the_replications_it_holds() -> None:
    chunk = chunks.simulate_chunk(PLAN, 5, PAIRS)
    assert len(chunk) == len(PAIRS)
    first = chunk[0]
    assert (first["scenario_id"], first["replication"], first["seed"]) == (1, 1, 5)
    assert set(first["metrics"]) == {"orders", "overtime_hours", "mean_wait_minutes", "utilization"}
    assert chunk[1:3] == [chunk[1], chunk[2]]
    again = pickle.loads(pickle.dumps(chunk))
    assert again.rows == chunk.rows
    assert repr(again.moments) == repr(chunk.moments)
    assert again.keys == chunk.keys
    assert chunk.keys["orders"] == {"integer"}


def test_chunk_moments_equal_those_storage_computed_from_the_rows() -> None:
    chunk = chunks.simulate_chunk(PLAN, 5, PAIRS)
    rows = [db.ResultRow(**row) for row in _as_stored(chunk)]  # type: ignore[typeddict-item]
    # repr: a third moment that overflowed is NaN on both sides, and NaN != NaN.
    assert repr(chunk.moments) == repr(db.stats_of_rows(rows))


@pytest.mark.parametrize("kind", ["process", "thread", "inline"])
async def test_a_chunk_is_bit_identical_on_every_executor(kind: backends.ExecutorKind) -> None:
    plan = {k: v for k, v in PLAN.items() if k != 3}  # a test-module model cannot be spawned
    pairs = [p for p in PAIRS if p[0] != 3]
    backend = backends.PoolBackend(kind, 2)
    try:
        chunk = await backend.submit(chunks.simulate_chunk, plan, 9, pairs)
    finally:
        await backend.close()
    expected = chunks.simulate_chunk(plan, 9, pairs)
    assert chunk.rows == expected.rows
    assert repr(chunk.moments) == repr(expected.moments)
    assert chunk.keys == expected.keys


async def test_a_stored_chunk_equals_the_same_rows_stored_one_by_one() -> None:
    database = await Database.open(":memory:", [("a", "warehouse", {}), ("b", "uniform", {})])
    try:
        odd_free = [p for p in PAIRS if p[0] != 3]
        chunk = chunks.simulate_chunk(PLAN, 5, odd_free)
        by_chunk = await database.create_run([1, 2], 40, 5, 0.0, {}, {})
        by_rows = await database.create_run([1, 2], 40, 5, 0.0, {}, {})
        half = len(chunk) // 2
        done = 0
        for part in (chunk.rows[:half], chunk.rows[half:]):
            part_chunk = chunks.simulate_chunk(PLAN, 5, [(r[0], r[1]) for r in part])
            done, _ = await database.store_chunk(
                by_chunk["run_id"], part_chunk.rows, part_chunk.moments, part_chunk.keys
            )
            await database.store_results(by_rows["run_id"], list(part_chunk))
        assert done == len(chunk)
        assert await database.run_results(by_chunk["run_id"]) == await database.run_results(
            by_rows["run_id"]
        )
        # Byte for byte, as stored: the metrics text too.
        raw = [
            [tuple(r) for r in await database._all(_RAW, (run["run_id"],))]
            for run in (by_chunk, by_rows)
        ]
        assert raw[0] == raw[1]
        # The moments merged chunk by chunk, before the run's end recomputes them.
        stats = [await database.scenario_stats(run["run_id"]) for run in (by_chunk, by_rows)]
        assert repr(stats[0]) == repr(stats[1])
    finally:
        await database.close()


async def test_a_failing_chunk_store_leaves_nothing_of_it() -> None:
    database = await Database.open(":memory:", [("a", "uniform", {})])
    try:
        run = await database.create_run([1], 10, 5, 0.0, {}, {})
        chunk = chunks.simulate_chunk({1: (sim.UNIFORM, {})}, 5, [(1, 1), (1, 2)])
        await database.store_chunk(run["run_id"], chunk.rows, chunk.moments, chunk.keys)
        again = chunks.simulate_chunk({1: (sim.UNIFORM, {})}, 5, [(1, 3), (1, 2)])
        with pytest.raises(Exception, match="UNIQUE"):
            await database.store_chunk(run["run_id"], again.rows, again.moments, again.keys)
        assert len(await database.run_results(run["run_id"])) == 2
        assert (await database.get_run(run["run_id"]))["done"] == 2
        assert (await database.scenario_stats(run["run_id"]))[1]["total_labor_costs"].n == 2
    finally:
        await database.close()


_IN_ORDER = (
    "SELECT run_id, scenario_id, replication, seed, total_labor_costs, ontime_delivery_rate,"
    " metrics, created_at FROM results ORDER BY result_id"
)


@pytest.mark.parametrize("size", [1, 31, 32, 33, 64, 97])
async def test_a_chunk_of_any_size_is_stored_row_for_row_in_its_order(size: int) -> None:
    # Blocks of rows to a statement, then the rest a row at a time: every row, every
    # value in its column, in the chunk's order, and one time for the chunk.
    database = await Database.open(":memory:", [("a", "odd", {}), ("b", "uniform", {})])
    plan: sim.ScenarioPlan = {1: (OddMetricsModel(), {}), 2: (sim.UNIFORM, {})}
    try:
        run = await database.create_run([1, 2], size, 5, 0.0, {}, {})
        pairs = [(unit, r) for r in range(1, size + 1) for unit in (1, 2)][:size]
        chunk = chunks.simulate_chunk(plan, 5, pairs)
        done, _ = await database.store_chunk(run["run_id"], chunk.rows, chunk.moments, chunk.keys)
        stored = [tuple(row) for row in await database._all(_IN_ORDER)]
        assert done == size
        assert [row[1:7] for row in stored] == chunk.rows
        assert {row[0] for row in stored} == {run["run_id"]}
        assert len({row[7] for row in stored}) == 1
    finally:
        await database.close()


@pytest.mark.parametrize("twice", [3, 40], ids=["in-a-block", "after-the-blocks"])
async def test_a_chunk_failing_anywhere_in_its_rows_leaves_nothing_of_it(twice: int) -> None:
    database = await Database.open(":memory:", [("a", "uniform", {})])
    try:
        run = await database.create_run([1], 100, 5, 0.0, {}, {})
        first = chunks.simulate_chunk({1: (sim.UNIFORM, {})}, 5, [(1, twice)])
        await database.store_chunk(run["run_id"], first.rows, first.moments, first.keys)
        pairs = [(1, r) for r in range(1, 43)]  # 32 in a block, then 10 one by one
        again = chunks.simulate_chunk({1: (sim.UNIFORM, {})}, 5, pairs)
        with pytest.raises(Exception, match="UNIQUE"):
            await database.store_chunk(run["run_id"], again.rows, again.moments, again.keys)
        assert len(await database.run_results(run["run_id"])) == 1
        assert (await database.get_run(run["run_id"]))["done"] == 1
    finally:
        await database.close()


async def test_a_precision_run_decides_exactly_as_with_row_by_row_storage(client: Client) -> None:
    # The figures the service gave for this request when it stored each row itself.
    targets = {
        "ontime_delivery_rate": {"half_width": 0.02},
        "total_labor_costs": {"relative_half_width": 0.01},
    }
    precision = {"targets": targets, "max_replications": 2000}
    run = await start_run(
        client, scenario_ids=[1, 2, 3], seed=4242, replications=10, precision=precision
    )
    ended = await wait_for_run(client, run["run_id"], limit_s=60)
    assert (ended["replications"], ended["stopped_because"]) == (449, "precision_met")
    aggregates = await (await client.get(f"/api/results?run_id={run['run_id']}")).json()
    # A run this small ends with the exact two-pass moments: the same figures however
    # its chunks were cut.
    assert [
        (a["scenario_id"], a["average_total_costs"], a["delivery_rate_std"]) for a in aggregates
    ] == [
        (1, 9538.21926503904, 0.1932164148392403),
        (2, 11194.850192290693, 0.025461065130876096),
        (3, 8891.108752729368, 0.21167882301220903),
    ]
