"""What the machine itself gives two processes: the service's replications, no service.

The same `warehouse` replications a run computes, in chunks of the same function
(`simsvc.chunks.simulate_chunk`), by a pool of bare worker processes that store nothing
and send nothing back but a row count. Measured beside the service in the same minute,
its 2-vs-1 ratio is the most any service could reach on this machine then: a shared
machine whose other tenants take CPU, or whose cores slow each other, lowers it for
every program alike.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType

import numpy as np

from simsvc.chunks import simulate_chunk
from simsvc.sim import WAREHOUSE, ScenarioPlan

UNITS = (1, 2, 3)
# Pairs a task computes (about 15 ms of `warehouse`): small enough that two workers end
# within a few ms of each other, large enough that shipping a task costs under 1%.
TASK_PAIRS = 150
SEED = 1


def _plan() -> ScenarioPlan:
    return {unit: (WAREHOUSE, dict(WAREHOUSE.defaults)) for unit in UNITS}


def _compute(first: int, last: int) -> int:
    """Replications first..last of every unit, computed and thrown away: the row count."""
    reps = np.arange(first, last + 1, dtype=np.int64)
    pairs = np.column_stack((np.tile(np.array(UNITS), len(reps)), np.repeat(reps, len(UNITS))))
    return len(simulate_chunk(_plan(), SEED, pairs))


def _warm() -> None:
    _compute(1, 2)


class BarePool:
    """`workers` bare processes, started and warmed before the first measure."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, initializer=_warm)

    async def __aenter__(self) -> BarePool:
        await self.seconds(2 * self.workers * TASK_PAIRS // len(UNITS))  # every worker started
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pool.shutdown(cancel_futures=True)

    async def seconds(self, replications: int) -> float:
        """Wall seconds to compute replications 1..n of each unit, tasks shared by the pool."""
        loop = asyncio.get_running_loop()
        step = max(1, TASK_PAIRS // len(UNITS))
        began = time.perf_counter()
        tasks = [
            loop.run_in_executor(self._pool, _compute, first, min(replications, first + step - 1))
            for first in range(1, replications + 1, step)
        ]
        rows = sum(await asyncio.gather(*tasks))
        assert rows == replications * len(UNITS), rows
        return time.perf_counter() - began
