"""`AsyncClient`: every simsvc call as a typed coroutine, and handles on runs and experiments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from .frames import flat_rows, scenario_names, to_frame
from .records import (
    Aggregate,
    CompareResult,
    ExperimentInfo,
    ModelInfo,
    ResultRow,
    RunInfo,
    Scenario,
    Selection,
)
from .transport import DEFAULT_TIMEOUT_S, Transport
from .waiting import ProgressOption, Watched, wait_final

if TYPE_CHECKING:
    import pandas


def _fields(**values: Any) -> dict[str, Any]:
    """A request body of the values that were given (None: leave it to the service)."""
    return {k: v for k, v in values.items() if v is not None}


class AsyncClient:
    """An asynchronous client of one simsvc service.

    Use it as `async with AsyncClient("http://127.0.0.1:8000", token=...) as client:`,
    or call `await client.close()` when done. `timeout` bounds each HTTP call (seconds);
    waiting for a run has its own limit. Errors: `ApiError` for an answer the service
    refused, `ServiceUnreachable` when it cannot be reached.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._http = Transport(base_url, token, timeout)

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the service and its models ------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return cast(dict[str, Any], await self._http.call("GET", "/api/health"))

    async def models(self) -> list[ModelInfo]:
        """The installed models, with their params schema and KPIs."""
        return cast(list[ModelInfo], await self._http.call("GET", "/api/models"))

    # -- scenarios -----------------------------------------------------------------------

    async def scenarios(self) -> list[Scenario]:
        return cast(list[Scenario], await self._http.call("GET", "/api/scenarios"))

    async def scenario(self, scenario_id: int) -> Scenario:
        return cast(Scenario, await self._http.call("GET", f"/api/scenarios/{scenario_id}"))

    async def create_scenario(
        self, name: str, params: Mapping[str, Any] | None = None, *, model: str | None = None
    ) -> Scenario:
        """A new scenario; missing params take the model's defaults (`warehouse` by default)."""
        body = _fields(scenario_name=name, model=model, params=params)
        return cast(Scenario, await self._http.call("POST", "/api/scenarios", body=body))

    async def update_scenario(
        self,
        scenario_id: int,
        *,
        name: str | None = None,
        params: Mapping[str, Any] | None = None,
        model: str | None = None,
    ) -> Scenario:
        """Change a scenario's name, model or some of its params (the others are kept)."""
        body = _fields(scenario_name=name, model=model, params=params)
        path = f"/api/scenarios/{scenario_id}"
        return cast(Scenario, await self._http.call("PATCH", path, body=body))

    async def delete_scenario(self, scenario_id: int) -> None:
        await self._http.call("DELETE", f"/api/scenarios/{scenario_id}")

    # -- runs ----------------------------------------------------------------------------

    async def run(
        self,
        scenario_ids: Sequence[int] | None = None,
        replications: int | None = None,
        seed: int | None = None,
        *,
        pace_s: float | None = None,
        precision: Mapping[str, Any] | None = None,
    ) -> AsyncRun:
        """Start a run (every scenario and 3 replications unless told); it goes on alone."""
        ids = list(scenario_ids) if scenario_ids is not None else None
        body = _fields(
            scenario_ids=ids,
            replications=replications,
            seed=seed,
            pace_s=pace_s,
            precision=precision,
        )
        answer = await self._http.call("POST", "/api/simulations", body=body)
        return AsyncRun(self, answer["run"])

    async def runs(self) -> list[RunInfo]:
        """Every run, newest first."""
        return cast(list[RunInfo], await self._http.call("GET", "/api/simulations"))

    async def run_info(self, run_id: int) -> RunInfo:
        return cast(RunInfo, await self._http.call("GET", f"/api/simulations/{run_id}"))

    async def get_run(self, run_id: int) -> AsyncRun:
        """A handle on an existing run."""
        return AsyncRun(self, await self.run_info(run_id))

    async def wait(
        self, run_id: int, *, timeout: float | None = None, progress: ProgressOption = None
    ) -> RunInfo:
        """The run once it has ended, following /ws/events; RunFailed if it failed.

        `progress`: True for a tqdm bar, None for one only on a terminal, or a
        callable taking (done, total).
        """
        watched = Watched("run", run_id)
        info = await wait_final(
            self._http, watched, lambda: self.run_info(run_id), progress, timeout
        )
        return cast(RunInfo, info)

    async def cancel(self, run_id: int) -> RunInfo:
        path = f"/api/simulations/{run_id}/cancel"
        return cast(RunInfo, await self._http.call("POST", path))

    async def extend(self, run_id: int, replications: int) -> RunInfo:
        """Add `replications` to every scenario of a finished run; it runs again."""
        path, body = f"/api/simulations/{run_id}/extend", {"replications": replications}
        return cast(RunInfo, await self._http.call("POST", path, body=body))

    async def resume(self, run_id: int) -> RunInfo:
        """Run the replications an interrupted or cancelled run still lacks."""
        return cast(RunInfo, await self._http.call("POST", f"/api/simulations/{run_id}/resume"))

    async def results(self, run_id: int) -> list[ResultRow]:
        """One row per replication of the run."""
        path = f"/api/simulations/{run_id}/results"
        return cast(list[ResultRow], await self._http.call("GET", path))

    async def results_csv(self, run_id: int) -> str:
        path = f"/api/simulations/{run_id}/results"
        return cast(str, await self._http.call("GET", path, csv=True))

    async def aggregates(self, run_id: int | None = None) -> list[Aggregate]:
        """Per scenario: mean, sample std and 95% CI half-width (of one run, or of all)."""
        query = {"run_id": run_id}
        return cast(list[Aggregate], await self._http.call("GET", "/api/results", query=query))

    async def compare(self, run_id: int, baseline: int) -> CompareResult:
        """Every other scenario of the run against `baseline`: paired and Welch intervals."""
        path, query = f"/api/simulations/{run_id}/compare", {"baseline": baseline}
        return cast(CompareResult, await self._http.call("GET", path, query=query))

    async def select(
        self,
        run_id: int,
        kpi: str,
        *,
        indifference: float | None = None,
        confidence: float | None = None,
    ) -> Selection:
        """The subset of scenarios that holds the best on `kpi` with the given confidence."""
        path = f"/api/simulations/{run_id}/select"
        query = _fields(kpi=kpi, indifference=indifference, confidence=confidence)
        return cast(Selection, await self._http.call("GET", path, query=query))

    async def ingest(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Store replications computed elsewhere (all or nothing); the number stored."""
        answer = await self._http.call("POST", "/api/results", body=list(rows))
        return int(answer["inserted"])

    async def notify_completion(self) -> None:
        """Send the aggregate list to every /ws/results client."""
        await self._http.call("POST", "/api/notify-completion")

    # -- experiments over a parameter space ------------------------------------------------

    async def experiment(self, spec: Mapping[str, Any]) -> AsyncExperiment:
        """Start an experiment from its full request body (`kind` sweep or optimize)."""
        answer = await self._http.call("POST", "/api/experiments", body=dict(spec))
        return AsyncExperiment(self, answer)

    async def sweep(
        self,
        factors: Mapping[str, Any],
        *,
        replications: int,
        model: str = "warehouse",
        design: str | None = None,
        points: int | None = None,
        seed: int | None = None,
        base_params: Mapping[str, Any] | None = None,
    ) -> AsyncExperiment:
        """Run `replications` at every point of the space (`design` grid or lhs)."""
        spec = _fields(
            kind="sweep",
            model=model,
            factors=factors,
            replications=replications,
            design=design,
            points=points,
            seed=seed,
            base_params=base_params,
        )
        return await self.experiment(spec)

    async def optimize(
        self,
        factors: Mapping[str, Any],
        *,
        objective: Mapping[str, str],
        model: str = "warehouse",
        constraints: Sequence[Mapping[str, Any]] | None = None,
        confidence: float | None = None,
        indifference: Mapping[str, float] | None = None,
        max_replications: int | None = None,
        seed: int | None = None,
        base_params: Mapping[str, Any] | None = None,
    ) -> AsyncExperiment:
        """Search the space for the best point that meets `constraints`."""
        spec = _fields(
            kind="optimize",
            model=model,
            factors=factors,
            objective=objective,
            constraints=list(constraints) if constraints is not None else None,
            confidence=confidence,
            indifference=indifference,
            max_replications=max_replications,
            seed=seed,
            base_params=base_params,
        )
        return await self.experiment(spec)

    async def experiments(self) -> list[ExperimentInfo]:
        return cast(list[ExperimentInfo], await self._http.call("GET", "/api/experiments"))

    async def experiment_info(self, experiment_id: int) -> ExperimentInfo:
        path = f"/api/experiments/{experiment_id}"
        return cast(ExperimentInfo, await self._http.call("GET", path))

    async def get_experiment(self, experiment_id: int) -> AsyncExperiment:
        return AsyncExperiment(self, await self.experiment_info(experiment_id))

    async def wait_experiment(
        self, experiment_id: int, *, timeout: float | None = None, progress: ProgressOption = None
    ) -> ExperimentInfo:
        """The experiment once it has ended, following /ws/events; RunFailed if it failed."""
        watched = Watched("experiment", experiment_id)
        fetch = lambda: self.experiment_info(experiment_id)  # noqa: E731
        return cast(ExperimentInfo, await wait_final(self._http, watched, fetch, progress, timeout))

    async def cancel_experiment(self, experiment_id: int) -> ExperimentInfo:
        path = f"/api/experiments/{experiment_id}/cancel"
        return cast(ExperimentInfo, await self._http.call("POST", path))

    async def resume_experiment(self, experiment_id: int) -> ExperimentInfo:
        path = f"/api/experiments/{experiment_id}/resume"
        return cast(ExperimentInfo, await self._http.call("POST", path))

    async def experiment_results(self, experiment_id: int) -> list[dict[str, Any]]:
        """One row per replication, with the point's params as columns."""
        path = f"/api/experiments/{experiment_id}/results"
        return cast(list[dict[str, Any]], await self._http.call("GET", path))

    async def experiment_results_csv(self, experiment_id: int) -> str:
        path = f"/api/experiments/{experiment_id}/results"
        return cast(str, await self._http.call("GET", path, csv=True))


class AsyncRun:
    """A run on the service: its last known state (`info`) and what can be done with it."""

    def __init__(self, client: AsyncClient, info: RunInfo) -> None:
        self.client = client
        self.info = info

    @property
    def run_id(self) -> int:
        return self.info["run_id"]

    @property
    def status(self) -> str:
        return self.info["status"]

    def __repr__(self) -> str:
        return f"<run {self.run_id} {self.status} {self.info['done']}/{self.info['total']}>"

    async def refresh(self) -> RunInfo:
        self.info = await self.client.run_info(self.run_id)
        return self.info

    async def wait(
        self, *, timeout: float | None = None, progress: ProgressOption = None
    ) -> RunInfo:
        """Until the run ends (see AsyncClient.wait)."""
        self.info = await self.client.wait(self.run_id, timeout=timeout, progress=progress)
        return self.info

    async def cancel(self) -> RunInfo:
        self.info = await self.client.cancel(self.run_id)
        return self.info

    async def extend(self, replications: int) -> RunInfo:
        self.info = await self.client.extend(self.run_id, replications)
        return self.info

    async def resume(self) -> RunInfo:
        self.info = await self.client.resume(self.run_id)
        return self.info

    async def results(self) -> list[ResultRow]:
        return await self.client.results(self.run_id)

    async def results_csv(self) -> str:
        return await self.client.results_csv(self.run_id)

    async def results_frame(self) -> pandas.DataFrame:
        """The rows as a DataFrame, metrics as columns and each scenario's name (needs pandas)."""
        rows = await self.results()
        return to_frame(flat_rows(rows, scenario_names(self.info)))

    async def aggregates(self) -> list[Aggregate]:
        return await self.client.aggregates(self.run_id)

    async def compare(self, baseline: int) -> CompareResult:
        return await self.client.compare(self.run_id, baseline)

    async def select(
        self, kpi: str, *, indifference: float | None = None, confidence: float | None = None
    ) -> Selection:
        return await self.client.select(
            self.run_id, kpi, indifference=indifference, confidence=confidence
        )


class AsyncExperiment:
    """An experiment on the service: its last known state (`info`) and its actions."""

    def __init__(self, client: AsyncClient, info: ExperimentInfo) -> None:
        self.client = client
        self.info = info

    @property
    def experiment_id(self) -> int:
        return self.info["experiment_id"]

    @property
    def status(self) -> str:
        return self.info["status"]

    def __repr__(self) -> str:
        return f"<experiment {self.experiment_id} {self.info.get('kind')} {self.status}>"

    async def refresh(self) -> ExperimentInfo:
        self.info = await self.client.experiment_info(self.experiment_id)
        return self.info

    async def wait(
        self, *, timeout: float | None = None, progress: ProgressOption = None
    ) -> ExperimentInfo:
        self.info = await self.client.wait_experiment(
            self.experiment_id, timeout=timeout, progress=progress
        )
        return self.info

    async def cancel(self) -> ExperimentInfo:
        self.info = await self.client.cancel_experiment(self.experiment_id)
        return self.info

    async def resume(self) -> ExperimentInfo:
        self.info = await self.client.resume_experiment(self.experiment_id)
        return self.info

    async def results(self) -> list[dict[str, Any]]:
        return await self.client.experiment_results(self.experiment_id)

    async def results_csv(self) -> str:
        return await self.client.experiment_results_csv(self.experiment_id)

    async def results_frame(self) -> pandas.DataFrame:
        """The rows as a DataFrame, one column per param and metric (needs pandas)."""
        return to_frame(flat_rows(await self.results()))
