"""A truck loading dock in SimPy, packaged as a simsvc model plug-in.

Trucks arrive as a Poisson process during the shift; `crews` loading crews serve them
first come, first served; each loading takes an exponential time. A truck is on time if
it leaves within `due_minutes` of arriving. Crews stay until the last truck has left.

Common random numbers: each source of randomness has a stream of its own (arrivals,
loading times), split from the replication's stream with `rng.spawn`, and a truck's
loading time is drawn when it arrives. So replication r shows the same trucks, with the
same loads, in every scenario, whatever the crews do, and scenario differences are
measured on the same trucks.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any, ClassVar

import numpy as np
import simpy

from simsvc.sim import Kpi, Model


class LoadingDock(Model):
    name = "loading_dock"
    version = "1.1.0"
    description = "Trucks loaded by crews at a dock (SimPy), overtime paid at a premium."
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "crews": {"type": "integer", "minimum": 1, "maximum": 50, "default": 3},
            "shift_hours": {"type": "number", "exclusiveMinimum": 0, "maximum": 24, "default": 8},
            "trucks_per_hour": {"type": "number", "exclusiveMinimum": 0, "default": 5},
            "mean_load_minutes": {"type": "number", "exclusiveMinimum": 0, "default": 30},
            "due_minutes": {"type": "number", "exclusiveMinimum": 0, "default": 60},
            "crew_hourly_cost": {"type": "number", "minimum": 0, "default": 400},
            "overtime_premium": {"type": "number", "minimum": 1, "default": 1.5},
        },
    }
    kpis = (
        Kpi(name="total_labor_costs", direction="min"),
        Kpi(name="ontime_delivery_rate", direction="max"),
        Kpi(name="mean_wait_minutes", direction="min"),
    )
    metrics = ("trucks", "overtime_hours")

    def simulate(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        arrival_rng, load_rng = rng.spawn(2)  # one stream per source of randomness
        env = simpy.Environment()
        dock = simpy.Resource(env, capacity=int(params["crews"]))
        shift = float(params["shift_hours"]) * 60.0
        waits: list[float] = []
        ontime: list[bool] = []

        def truck(load_minutes: float) -> Generator[simpy.Event, Any, None]:
            arrived = env.now
            with dock.request() as turn:
                yield turn
                waits.append(env.now - arrived)
                yield env.timeout(load_minutes)
            ontime.append(env.now - arrived <= float(params["due_minutes"]))

        def arrivals() -> Generator[simpy.Event, Any, None]:
            gap = 60.0 / float(params["trucks_per_hour"])
            mean_load = float(params["mean_load_minutes"])
            while True:
                yield env.timeout(float(arrival_rng.exponential(gap)))
                if env.now >= shift:
                    return
                # Drawn on arrival, in arrival order: the nth truck's load does not depend
                # on when a crew becomes free.
                env.process(truck(float(load_rng.exponential(mean_load))))

        env.process(arrivals())
        env.run()  # until the last truck has left
        overtime = max(0.0, env.now - shift) / 60.0
        hours = float(params["shift_hours"]) + float(params["overtime_premium"]) * overtime
        return {
            "total_labor_costs": float(params["crew_hourly_cost"]) * int(params["crews"]) * hours,
            "ontime_delivery_rate": sum(ontime) / len(ontime) if ontime else 1.0,
            "mean_wait_minutes": sum(waits) / len(waits) if waits else 0.0,
            "trucks": len(ontime),
            "overtime_hours": overtime,
        }
