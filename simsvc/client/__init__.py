"""A Python client for simsvc: `Client` (blocking) and `AsyncClient` (asyncio).

    from simsvc.client import Client

    with Client("http://127.0.0.1:8000") as client:
        run = client.run(scenario_ids=[1, 2], replications=200, seed=1)
        run.wait()
        frame = run.results_frame()        # needs pandas: pip install '.[pandas]'

It needs only aiohttp, and imports nothing of the service itself.
"""

from .aio import AsyncClient, AsyncExperiment, AsyncRun
from .errors import ApiError, FieldError, RunFailed, ServiceUnreachable, SimsvcError
from .sync import Client, Experiment, Run

__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncExperiment",
    "AsyncRun",
    "Client",
    "Experiment",
    "FieldError",
    "Run",
    "RunFailed",
    "ServiceUnreachable",
    "SimsvcError",
]
