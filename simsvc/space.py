"""The space of an experiment: factors over a model's params, and the designs over them.

A factor names one param and either lists its `values` or gives a range `min`, `max`
and optionally `step`. A grid design is every combination, in the order the factors
and their values are given; a Latin hypercube (`lhs`) draws `points` settings from
`scipy.stats.qmc.LatinHypercube`, seeded by the experiment's seed. Every problem with
a request is reported as a field and a message before anything is stored.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import qmc

from .schema import FieldError, InvalidInput
from .sim import Model, ParamsChecker

MAX_SWEEP_POINTS = 10_000
MAX_OPTIMIZE_POINTS = 1_000
MAX_FACTORS = 20
MAX_FACTOR_VALUES = 10_000
# Replications one experiment may compute in all: points x replications for a sweep,
# `max_replications` for an optimization.
MAX_EXPERIMENT_REPLICATIONS = 2_000_000
DESIGN_STREAM = 0  # the design draws from default_rng([seed, 0, DESIGN_STREAM + 1])

Design = Literal["grid", "lhs"]


@dataclass(frozen=True)
class Factor:
    """One varied param: its listed values, or a range with an optional step."""

    name: str
    values: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    integer: bool = False

    @property
    def finite(self) -> bool:
        return self.values is not None or self.step is not None

    def count(self) -> int:
        """How many settings a grid takes from this factor, without listing them."""
        if self.values is not None:
            return len(self.values)
        assert self.low is not None
        assert self.high is not None
        assert self.step is not None
        return math.floor((self.high - self.low) / self.step + 1e-9) + 1

    def levels(self) -> list[Any]:
        if self.values is not None:
            return list(self.values)
        assert self.low is not None
        assert self.step is not None
        return [self._cast(self.low + i * self.step) for i in range(self.count())]

    def at(self, u: float) -> Any:
        """The setting at quantile `u` in [0, 1) of this factor's range or levels."""
        if self.finite:
            levels = self.levels()
            return levels[min(int(u * len(levels)), len(levels) - 1)]
        assert self.low is not None
        assert self.high is not None
        if self.integer:
            span = int(self.high) - int(self.low) + 1
            return int(self.low) + min(int(u * span), span - 1)
        return self.low + u * (self.high - self.low)

    def _cast(self, value: float) -> Any:
        # Rounded so that 0.1-steps give 0.3, not 0.30000000000000004.
        return round(value) if self.integer else round(value, 12)


@dataclass(frozen=True)
class Space:
    """A model, the params every point shares, and the factors that vary."""

    model: Model
    base: dict[str, Any]
    factors: tuple[Factor, ...]

    def size(self) -> int:
        return math.prod(f.count() for f in self.factors)

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every combination, the first factor varying slowest."""
        names = [f.name for f in self.factors]
        for combo in itertools.product(*(f.levels() for f in self.factors)):
            yield {**self.base, **dict(zip(names, combo, strict=True))}

    def lhs(self, points: int, seed: int) -> list[dict[str, Any]]:
        """A Latin hypercube sample of `points` settings, the same for the same seed."""
        rng = np.random.default_rng([seed, 0, DESIGN_STREAM + 1])
        sample = qmc.LatinHypercube(d=len(self.factors), rng=rng).random(points)
        return [
            {
                **self.base,
                **{f.name: f.at(float(u)) for f, u in zip(self.factors, row, strict=True)},
            }
            for row in sample
        ]


def build_space(
    checker: ParamsChecker,
    model: Model,
    base_params: Mapping[str, Any],
    factors: Mapping[str, Mapping[str, Any]],
) -> Space:
    """The space a request describes; InvalidInput names every field at fault."""
    base = _checked_base(checker, model, base_params)
    props = model.params_schema.get("properties", {})
    errors: list[FieldError] = []
    built: list[Factor] = []
    if len(factors) > MAX_FACTORS:
        errors.append(_error("factors", f"has more than the limit of {MAX_FACTORS} factors"))
    for name, spec in factors.items():
        where = f"factors.{name}"
        if name not in props:
            known = ", ".join(sorted(props)) or "none"
            errors.append(_error(where, f"{model.name} has no param {name!r}; known: {known}"))
            continue
        factor, problems = _factor(checker, model, base, name, spec, where)
        errors.extend(problems)
        if factor is not None:
            built.append(factor)
    if errors:
        raise InvalidInput(errors)
    return Space(model, base, tuple(built))


def _checked_base(
    checker: ParamsChecker, model: Model, base_params: Mapping[str, Any]
) -> dict[str, Any]:
    try:
        return checker.complete(model.name, base_params)
    except InvalidInput as exc:
        errors = [FieldError(field="base_" + e["field"], message=e["message"]) for e in exc.errors]
        raise InvalidInput(errors) from exc


def _factor(
    checker: ParamsChecker,
    model: Model,
    base: Mapping[str, Any],
    name: str,
    spec: Mapping[str, Any],
    where: str,
) -> tuple[Factor | None, list[FieldError]]:
    integer = model.params_schema["properties"][name].get("type") == "integer"
    if "values" in spec and not {"min", "max", "step"} & spec.keys():
        return _listed(checker, model, base, name, spec["values"], where)
    if "values" in spec or "min" not in spec or "max" not in spec:
        both = "values" in spec
        message = "give `values` or a range, not both" if both else "a range needs `min` and `max`"
        return None, [_error(where, message)]
    low, high, step = float(spec["min"]), float(spec["max"]), spec.get("step")
    errors: list[FieldError] = []
    if low > high:
        errors.append(_error(where, f"the range is empty: min {low:g} is above max {high:g}"))
    if step is not None and step <= 0:
        errors.append(_error(f"{where}.step", f"must be positive, not {step:g}"))
    elif step is not None and integer and float(step) != int(step):
        errors.append(_error(f"{where}.step", f"{name} is an integer; the step must be too"))
    if integer and (low != int(low) or high != int(high)):
        errors.append(_error(where, f"{name} is an integer; min and max must be integers"))
    for key, value in (("min", low), ("max", high)):
        errors += _param(checker, model, base, name, value, f"{where}.{key}")[1]
    if errors:
        return None, errors
    factor = Factor(name, low=low, high=high, step=step, integer=integer)
    if factor.finite and factor.count() > MAX_FACTOR_VALUES:
        message = f"gives {factor.count()} values, over the limit of {MAX_FACTOR_VALUES}"
        return None, [_error(f"{where}.step", message)]
    return factor, []


def _listed(
    checker: ParamsChecker,
    model: Model,
    base: Mapping[str, Any],
    name: str,
    listed: Sequence[Any],
    where: str,
) -> tuple[Factor | None, list[FieldError]]:
    values: list[Any] = []
    errors: list[FieldError] = []
    for i, raw in enumerate(listed):
        value, problems = _param(checker, model, base, name, raw, f"{where}.values[{i}]")
        values.append(value)
        errors += problems
    integer = model.params_schema["properties"][name].get("type") == "integer"
    return Factor(name, values=tuple(values), integer=integer), errors


def _param(
    checker: ParamsChecker, model: Model, base: Mapping[str, Any], name: str, value: Any, where: str
) -> tuple[Any, list[FieldError]]:
    """The value as the model takes it (integers cast), and what is wrong with it."""
    try:
        return checker.complete(model.name, {**base, name: value})[name], []
    except InvalidInput as exc:
        errors = [_error(where, e["message"]) for e in exc.errors if e["field"] == f"params.{name}"]
        return value, errors or [_error(where, exc.errors[0]["message"])]


def design_points(
    space: Space, design: Design, points: int | None, seed: int, limit: int
) -> list[dict[str, Any]]:
    """Every point's complete params; InvalidInput if the design cannot be built."""
    if design == "lhs":
        if points is None:
            raise InvalidInput([_error("points", "a Latin hypercube needs `points`")])
        if points > limit:
            raise InvalidInput([_error("points", f"{points} is over the limit of {limit}")])
        if not space.factors:
            raise InvalidInput([_error("factors", "a Latin hypercube needs at least one factor")])
        return space.lhs(points, seed)
    open_ranges = [f.name for f in space.factors if not f.finite]
    if open_ranges:
        message = "a range without `step` has no grid; give a step or use design lhs"
        raise InvalidInput([_error(f"factors.{open_ranges[0]}", message)])
    size = space.size()
    if size > limit:
        message = f"the grid has {size} points, over the limit of {limit}"
        raise InvalidInput([_error("factors", message)])
    return list(space.grid())


def varied(space: Space) -> Sequence[str]:
    """The names of the params that vary, in the order the request gave them."""
    return [f.name for f in space.factors]


def _error(field: str, message: str) -> FieldError:
    return FieldError(field=field, message=message)
