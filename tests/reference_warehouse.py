"""An independent SimPy reference of the `warehouse` model (README, "The models").

It exists only to check `simsvc.sim` against: it shares no code with the service and builds
the arrival process differently (exponential inter-arrival gaps instead of a Poisson count
plus sorted uniforms), so agreement in distribution is evidence that both follow the
model's description rather than each other.
"""

from collections.abc import Generator

import numpy as np
import simpy

DEFAULTS: dict[str, float] = {
    "workers": 5,
    "shift_hours": 8,
    "hourly_wage": 225,
    "overtime_premium": 1.25,
    "orders_per_hour": 46,
    "mean_pick_minutes": 6,
    "due_minutes": 25,
}


class _Tally:
    """What the order processes record; time is in minutes throughout."""

    def __init__(self) -> None:
        self.orders = 0
        self.ontime = 0
        self.wait_minutes = 0.0
        self.pick_minutes = 0.0
        self.last_done = 0.0


def _order(
    env: simpy.Environment,
    pickers: simpy.Resource,
    pick_minutes: float,
    due_minutes: float,
    tally: _Tally,
) -> Generator[simpy.Event, object, None]:
    arrived = env.now
    with pickers.request() as turn:
        yield turn
        tally.wait_minutes += env.now - arrived
        yield env.timeout(pick_minutes)
    tally.pick_minutes += pick_minutes
    tally.ontime += env.now - arrived <= due_minutes
    tally.last_done = max(tally.last_done, env.now)


def _arrivals(
    env: simpy.Environment,
    pickers: simpy.Resource,
    params: dict[str, float],
    rng: np.random.Generator,
    tally: _Tally,
) -> Generator[simpy.Event, object, None]:
    shift_minutes = 60.0 * params["shift_hours"]
    mean_gap = 60.0 / params["orders_per_hour"]
    while True:
        gap = float(rng.exponential(mean_gap))
        if env.now + gap >= shift_minutes:
            return
        yield env.timeout(gap)
        tally.orders += 1
        pick = float(rng.exponential(params["mean_pick_minutes"]))
        env.process(_order(env, pickers, pick, params["due_minutes"], tally))


def simulate_simpy(params: dict[str, float], rng: np.random.Generator) -> dict[str, float]:
    """Run one shift of the warehouse model in SimPy and return the model's outputs.

    `params` must hold every key of `DEFAULTS`; the simulation runs until the last order
    that arrived during the shift is done.
    """
    workers = int(params["workers"])
    shift_hours = float(params["shift_hours"])
    env = simpy.Environment()
    pickers = simpy.Resource(env, capacity=workers)
    tally = _Tally()
    env.process(_arrivals(env, pickers, params, rng, tally))
    env.run()
    overtime_hours = max(0.0, tally.last_done / 60.0 - shift_hours)
    paid_hours = shift_hours + overtime_hours
    return {
        "total_labor_costs": float(
            params["hourly_wage"]
            * workers
            * (shift_hours + params["overtime_premium"] * overtime_hours)
        ),
        "ontime_delivery_rate": tally.ontime / tally.orders if tally.orders else 1.0,
        "orders": float(tally.orders),
        "overtime_hours": overtime_hours,
        "mean_wait_minutes": tally.wait_minutes / tally.orders if tally.orders else 0.0,
        "utilization": tally.pick_minutes / (workers * 60.0 * paid_hours),
    }
