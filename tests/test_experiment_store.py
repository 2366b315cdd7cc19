"""Experiment storage on the service's one connection, without the service."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import pytest

from simsvc import db
from simsvc.experiment_store import ExperimentRow, ExperimentStore


@pytest.fixture
async def store() -> AsyncIterator[ExperimentStore]:
    database = await db.Database.open(":memory:")
    try:
        yield ExperimentStore(database)
    finally:
        await database.close()


def _row(point_id: int, replication: int) -> ExperimentRow:
    return ExperimentRow(
        point_id=point_id,
        replication=replication,
        total_labor_costs=100.0 * point_id + replication,
        ontime_delivery_rate=0.9,
        metrics={},
    )


async def test_a_batch_with_a_stored_replication_stores_none_of_its_rows(
    store: ExperimentStore,
) -> None:
    created = await store.create_experiment("sweep", "warehouse", "1.0.0", 7, {}, [{}, {}])
    eid = created["experiment_id"]
    assert await store.store_experiment_results(eid, [_row(1, 1)]) == 1
    with pytest.raises(sqlite3.IntegrityError):
        await store.store_experiment_results(eid, [_row(2, 1), _row(1, 1)])
    assert await store.experiment_stored(eid, [1, 2], 1, 1) == {(1, 1)}
    assert (await store.get_experiment(eid))["replications_used"] == 1
    assert (await store.experiment_stats(eid))[1]["total_labor_costs"].n == 1
    assert 2 not in await store.experiment_stats(eid)
