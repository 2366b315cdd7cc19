"""Stored moments: batches merged inside SQLite agree bit for bit with `Moments.merge`."""

from __future__ import annotations

import math
import random
import sqlite3
from pathlib import Path

import pytest

from simsvc import db as db_module
from simsvc import db_stats
from simsvc.db import Database, Moments, ResultRow


def _rows(rng: random.Random, replications: range) -> list[ResultRow]:
    return [
        ResultRow(
            scenario_id=sid,
            replication=r,
            seed=1,
            total_labor_costs=rng.uniform(8000, 12000),
            ontime_delivery_rate=rng.uniform(0.75, 0.95),
            metrics={"orders": rng.randint(300, 420)},
        )
        for r in replications
        for sid in (1, 2)
    ]


def _value(row: ResultRow, kpi: str) -> float:
    if kpi == "total_labor_costs":
        return row["total_labor_costs"]
    if kpi == "ontime_delivery_rate":
        return row["ontime_delivery_rate"]
    return float(row["metrics"][kpi])


async def test_batches_merged_in_sqlite_equal_moments_merge_exactly() -> None:
    db = await Database.open(":memory:", [("a", "uniform", {}), ("b", "uniform", {})])
    try:
        run = await db.create_run([1, 2], 60, 1, 0.0, {}, {})
        rng = random.Random(8)
        expected: dict[tuple[int, str], Moments] = {}
        # Uneven batches, as chunks return from an executor.
        for start, stop in ((1, 8), (8, 9), (9, 40), (40, 61)):
            batch = _rows(rng, range(start, stop))
            await db.store_results(run["run_id"], batch)
            for sid in (1, 2):
                for kpi in ("total_labor_costs", "ontime_delivery_rate", "orders"):
                    values = [_value(r, kpi) for r in batch if r["scenario_id"] == sid]
                    old = expected.get((sid, kpi), Moments(0, 0.0, 0.0))
                    expected[(sid, kpi)] = old.merge(Moments.of(values))
        stored = await db.scenario_stats(run["run_id"])
        assert {(sid, kpi): m for sid, per in stored.items() for kpi, m in per.items()} == expected
    finally:
        await db.close()


async def test_a_small_finished_run_has_the_exact_moments_read_in_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db_stats, "STATS_BATCH_ROWS", 7)  # several batches, one partial
    monkeypatch.setattr(db_module, "EXACT_FINISH_ROWS", 50)  # exactly the rows stored
    db = await Database.open(":memory:", [("a", "uniform", {}), ("b", "uniform", {})])
    try:
        run = await db.create_run([1, 2], 25, 1, 0.0, {}, {})
        rows = _rows(random.Random(9), range(1, 26))
        for start in range(0, len(rows), 10):
            await db.store_results(run["run_id"], rows[start : start + 10])
        await db.finish_run(run["run_id"], "completed")
        stats = await db.scenario_stats(run["run_id"])
        for sid in (1, 2):
            for kpi in ("total_labor_costs", "ontime_delivery_rate", "orders"):
                values = [_value(r, kpi) for r in rows if r["scenario_id"] == sid]
                assert stats[sid][kpi] == Moments.of(values)
    finally:
        await db.close()


def _close(merged: Moments, exact: Moments) -> None:
    """Chunk moments merged pairwise agree with a two-pass to about 1e-12 relative."""
    assert merged.n == exact.n
    spread = math.sqrt(exact.m2 / exact.n)
    assert merged.mean == pytest.approx(exact.mean, rel=1e-12, abs=1e-12 * spread)
    assert merged.m2 == pytest.approx(exact.m2, rel=1e-12)
    # The third moment of a symmetric sample is near 0: compare on its own scale (the
    # skewness, m3 / (n spread^3)); cubes of deviations lose more digits to an offset.
    assert abs(merged.m3 - exact.m3) <= 1e-11 * exact.n * spread**3


async def test_a_large_finished_runs_moments_agree_with_a_two_pass_over_its_rows() -> None:
    assert db_module.EXACT_FINISH_ROWS < 2 * 6000  # kept as merged chunk by chunk
    db = await Database.open(":memory:", [("a", "uniform", {}), ("b", "uniform", {})])
    try:
        run = await db.create_run([1, 2], 6000, 1, 0.0, {}, {})
        rng = random.Random(11)
        rows = _rows(rng, range(1, 6001))
        for row in rows:  # an offset 10^4 times the spread: where a naive sum loses digits
            row["total_labor_costs"] = 1e4 + rng.gauss(0, 1)
        start = 0
        while start < len(rows):  # uneven chunks, as an executor returns them
            size = rng.choice((1, 2, 17, 500, 1999))
            await db.store_results(run["run_id"], rows[start : start + size])
            start += size
        await db.finish_run(run["run_id"], "completed")
        stored = await db.scenario_stats(run["run_id"])
        for sid in (1, 2):
            for kpi in ("total_labor_costs", "ontime_delivery_rate", "orders"):
                values = [_value(r, kpi) for r in rows if r["scenario_id"] == sid]
                _close(stored[sid][kpi], Moments.of(values))
    finally:
        await db.close()


async def test_finishing_a_large_run_keeps_its_merged_moments_and_reads_no_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db_module, "EXACT_FINISH_ROWS", 79)  # one row fewer than stored
    db = await Database.open(":memory:", [("a", "uniform", {}), ("b", "uniform", {})])
    try:
        run = await db.create_run([1, 2], 40, 1, 0.0, {}, {})
        rows = _rows(random.Random(12), range(1, 41))
        for start in range(0, len(rows), 30):
            await db.store_results(run["run_id"], rows[start : start + 30])
        merged = await db.scenario_stats(run["run_id"])

        def unread(*_: object) -> None:
            raise AssertionError("finishing a run read its rows")

        monkeypatch.setattr(db_module, "collect_samples", unread)
        for status in ("completed", "cancelled", "failed"):
            await db.finish_run(run["run_id"], status)
            assert repr(await db.scenario_stats(run["run_id"])) == repr(merged)
    finally:
        await db.close()


async def test_a_version_1_database_is_upgraded_with_duplicates_counted_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(db_module._SCHEMA + "PRAGMA user_version=1;")
    conn.execute(
        "INSERT INTO scenarios VALUES (1, 'a', 'uniform', '{}', '2026-01-01', '2026-01-01')"
    )
    # Replication 2 was ingested twice under version 1; the later row is the one kept.
    ingested = [(1, 10.0), (2, 99.0), (2, 20.0), (3, 30.0)]
    conn.executemany(
        "INSERT INTO results (run_id, scenario_id, replication, seed, total_labor_costs,"
        " ontime_delivery_rate, metrics, created_at) VALUES (NULL, 1, ?, NULL, ?, 0.5, '{}', '')",
        ingested,
    )
    conn.execute("INSERT INTO kpi_stats VALUES (0, 1, 'total_labor_costs', 4, 39.75, 4864.75)")
    conn.commit()
    conn.close()
    db = await Database.open(path)
    try:
        stats, coverage = await db.pooled_stats()
        assert stats[1]["total_labor_costs"] == Moments.of([10.0, 20.0, 30.0])
        assert coverage[1]["ingested_replications"] == 3
        assert await db.pragma("user_version") == db_module.SCHEMA_VERSION
    finally:
        await db.close()


async def test_one_kpi_of_a_run_is_read_as_the_rows_hold_it() -> None:
    db = await Database.open(":memory:", [("a", "uniform", {}), ("b", "uniform", {})])
    try:
        run = await db.create_run([1, 2], 3, 1, 0.0, {}, {})
        rows = _rows(random.Random(3), range(1, 4))
        rows[0]["metrics"]["flag"] = True  # a bool is not a number, as kpi_values has it
        rows[1]["metrics"]["flag"] = 2.5
        await db.store_results(run["run_id"], rows)
        for kpi in ("total_labor_costs", "ontime_delivery_rate", "orders", "flag"):
            expected = sorted(
                (r["scenario_id"], r["replication"], db_module.kpi_values(r)[kpi])
                for r in rows
                if kpi in db_module.kpi_values(r)
            )
            assert sorted(await db.run_kpi_values(run["run_id"], kpi)) == expected, kpi
    finally:
        await db.close()


async def test_a_database_made_with_the_scenario_index_stores_without_it(tmp_path: Path) -> None:
    path = tmp_path / "indexed.db"
    db = await Database.open(path, [("a", "uniform", {})])
    await db.close()
    conn = sqlite3.connect(path)
    conn.execute("CREATE INDEX results_by_scenario ON results (scenario_id)")  # as made before
    conn.close()
    db = await Database.open(path)
    try:
        indexes = await db._all("SELECT name FROM sqlite_master WHERE type = 'index'")
        assert "results_by_scenario" not in {r[0] for r in indexes}
    finally:
        await db.close()
