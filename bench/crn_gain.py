"""Common random numbers in the plug-in example: paired against Welch interval widths.

Runs the documented SimPy plug-in (tests/plugins/simsvc-loading-dock) and, for contrast,
the same model drawing everything from one shared stream, over the same replications.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable, Generator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import simpy
from scipy import stats

from simsvc import sim

from .measures import Row, Settings

PLUGIN = Path(__file__).resolve().parents[1] / "tests" / "plugins" / "simsvc-loading-dock"
SEED = 12345
KPIS = ("total_labor_costs", "ontime_delivery_rate", "mean_wait_minutes")


def shared_stream(params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """The example as first written: one stream, loading times drawn when a crew starts."""
    env = simpy.Environment()
    dock = simpy.Resource(env, capacity=int(params["crews"]))
    shift = float(params["shift_hours"]) * 60.0
    waits: list[float] = []
    ontime: list[bool] = []

    def truck() -> Generator[simpy.Event, Any, None]:
        arrived = env.now
        with dock.request() as turn:
            yield turn
            waits.append(env.now - arrived)
            yield env.timeout(float(rng.exponential(float(params["mean_load_minutes"]))))
        ontime.append(env.now - arrived <= float(params["due_minutes"]))

    def arrivals() -> Generator[simpy.Event, Any, None]:
        while True:
            yield env.timeout(float(rng.exponential(60.0 / float(params["trucks_per_hour"]))))
            if env.now >= shift:
                return
            env.process(truck())

    env.process(arrivals())
    env.run()
    overtime = max(0.0, env.now - shift) / 60.0
    hours = float(params["shift_hours"]) + float(params["overtime_premium"]) * overtime
    return {
        "total_labor_costs": float(params["crew_hourly_cost"]) * int(params["crews"]) * hours,
        "ontime_delivery_rate": sum(ontime) / len(ontime) if ontime else 1.0,
        "mean_wait_minutes": sum(waits) / len(waits) if waits else 0.0,
    }


def width_ratio(x: np.ndarray[Any, Any], base: np.ndarray[Any, Any]) -> float:
    """Paired 95% half-width of mean(x - base), as a share of the Welch half-width."""
    n = len(x)
    paired = stats.t.ppf(0.975, n - 1) * np.std(x - base, ddof=1) / np.sqrt(n)
    vx, vb = np.var(x, ddof=1) / n, np.var(base, ddof=1) / n
    df = (vx + vb) ** 2 / (vx**2 / (n - 1) + vb**2 / (n - 1))
    return float(paired / (stats.t.ppf(0.975, df) * np.sqrt(vx + vb)))


async def crn(settings: Settings) -> list[Row]:
    sys.path.insert(0, str(PLUGIN))
    model: sim.Model = importlib.import_module("simsvc_loading_dock").LoadingDock()
    n = 30 if settings.quick else 100
    variants: dict[str, Callable[[Mapping[str, Any], np.random.Generator], dict[str, Any]]] = {
        "one stream per source": model.simulate,
        "one shared stream": shared_stream,
    }
    rows = []
    for kpi in KPIS:
        cells = []
        for simulate in variants.values():
            out = {
                c: np.array(
                    [
                        simulate({**model.defaults, "crews": c}, sim.stream(SEED, r))[kpi]
                        for r in range(1, n + 1)
                    ]
                )
                for c in (2, 3)
            }
            cells.append(width_ratio(out[3], out[2]))
        rows.append(
            Row(
                f"loading dock, {kpi}, 3 vs 2 crews: paired / Welch half-width",
                f"{cells[0]:.2f}",
                f"shared stream {cells[1]:.2f}",
                "",
                "< 1, smaller is better",
                cells[0] < cells[1],
                f"{n} replications, seed {SEED}",
            )
        )
    return rows


MEASURES: dict[str, Callable[[Settings], Awaitable[list[Row]]]] = {"crn": crn}
