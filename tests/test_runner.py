"""The runner on its own, with a recording sink instead of storage and sockets."""

from __future__ import annotations

from simsvc import sim


class RecordingSink:
    """Keeps what the runner reports."""

    def __init__(self) -> None:
        self.rows: list[sim.Replication] = []
        self.events: list[tuple[str, int, str | None]] = []

    async def run_started(self, run_id: int) -> None:
        self.events.append(("started", run_id, None))

    async def results_ready(self, run_id: int, rows: list[sim.Replication]) -> None:
        self.rows.extend(rows)

    async def run_finished(
        self, run_id: int, status: str, error: str | None, stopped_because: str | None
    ) -> None:
        self.events.append((status, run_id, error))


def job(run_id: int, replications: int) -> sim.RunJob:
    params = sim.WAREHOUSE.defaults
    return sim.RunJob(
        run_id=run_id,
        seed=1,
        scenarios={1: (sim.WAREHOUSE, params)},
        pairs=sim.pending_pairs([1], range(1, replications + 1), set()),
    )


async def test_cancel_before_the_first_step_still_reports_cancelled() -> None:
    sink = RecordingSink()
    runner = sim.Runner(sim.PoolBackend("inline", 1), sink)
    task = runner.start(job(7, 100))
    assert runner.cancel(7)
    await task
    assert sink.events == [("cancelled", 7, None)]
    assert sink.rows == []
    await runner.close()


async def test_a_run_reports_every_pair_once_then_completes() -> None:
    sink = RecordingSink()
    runner = sim.Runner(sim.PoolBackend("thread", 2), sink)
    await runner.start(job(3, 57))
    assert sorted(r["replication"] for r in sink.rows) == list(range(1, 58))
    assert sink.events == [("started", 3, None), ("completed", 3, None)]
    await runner.close()


def test_pending_pairs_skip_what_is_stored() -> None:
    assert sim.pending_pairs([1, 2], range(1, 3), {(1, 1), (2, 2)}) == [(2, 1), (1, 2)]
