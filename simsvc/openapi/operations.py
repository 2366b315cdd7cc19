"""Every documented operation as a row of one table; `paths` turns the table into paths.

The table follows the routes of `web.create_app`, one row per route, in the order the
document lists them; a test holds the two to each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .request_schemas import COMPARE_QUERY, ID, SELECT_QUERY
from .resource_schemas import HEALTH, INGESTED, INGESTED_DELETED, NOTIFIED, RUN_STARTED
from .result_schemas import ref

Schema = Mapping[str, Any]
Method = Literal["get", "post", "patch", "delete"]


@dataclass(frozen=True)
class Answer:
    """The success response: its status, and the body of each media type it offers."""

    status: int
    description: str = "OK"
    schema: Schema | None = None  # of the application/json body
    formats: Mapping[str, Schema] = field(default_factory=dict)  # more media types
    location: bool = False  # a Location header names what was created


@dataclass(frozen=True)
class Query:
    """One query string parameter."""

    name: str
    schema: Schema
    required: bool = False
    description: str | None = None


@dataclass(frozen=True)
class Link:
    """An operation on what the answer created, its `param` taken from the answer's body."""

    name: str
    method: Method
    path: str
    param: str


@dataclass(frozen=True)
class Operation:
    """One route: what it does, what it takes, and what it answers."""

    method: Method
    path: str  # {name} segments are ids, documented as path parameters
    tag: str
    summary: str
    answer: Answer
    problems: tuple[int, ...] = ()  # the problem+json statuses its handler may answer
    query: tuple[Query, ...] = ()
    body: str | None = None  # the component schema of its JSON body
    body_required: bool = True
    links: tuple[Link, ...] = ()


def ok(schema: Schema) -> Answer:
    return Answer(200, schema=schema)


def array_of(name: str) -> Answer:
    return ok({"type": "array", "items": ref(name)})


def accepted(name: str) -> Answer:
    return Answer(202, "Accepted", ref(name))


def query_of(schema: Schema) -> tuple[Query, ...]:
    """The query parameters of a query schema that `web` checks query strings against."""
    required = set(schema.get("required", ()))
    return tuple(
        Query(name, prop, required=name in required) for name, prop in schema["properties"].items()
    )


DELETED = Answer(204, "Deleted")
SCENARIO = "/api/scenarios/{scenario_id}"
INGESTED_RESULTS = "/api/scenarios/{scenario_id}/ingested-results"
RUN = "/api/simulations/{run_id}"
EXPERIMENT = "/api/experiments/{experiment_id}"
# the refusals of a JSON body: malformed, conflicting, too large, not JSON, invalid
_BODY_ERRORS = (400, 409, 413, 415, 422)
_RUN_QUERY = Query("run_id", ID, description="restrict the aggregates to one run")
_INTERVAL_QUERY = Query(
    "interval",
    {"enum": ["t", "johnson"], "default": "t"},
    description="the kind of each metric's interval95: Student-t, or Johnson's "
    "modified t, which corrects for skewness (the *_ci95 fields stay Student-t)",
)
_RESULT_ROWS = {"type": "array", "items": ref("ResultRow")}

SERVICE = (
    Operation("get", "/api/health", "service", "Liveness and version", ok(HEALTH)),
    Operation(
        "get", "/api/models", "service", "The models and their params schemas", array_of("Model")
    ),
)

SCENARIOS = (
    Operation("get", "/api/scenarios", "scenarios", "List scenarios", array_of("Scenario")),
    Operation(
        "post",
        "/api/scenarios",
        "scenarios",
        "Create a scenario",
        Answer(201, "Created", ref("Scenario")),
        _BODY_ERRORS,
        body="ScenarioCreate",
        links=(
            Link("GetScenario", "get", SCENARIO, "scenario_id"),
            Link("PatchScenario", "patch", SCENARIO, "scenario_id"),
            Link("DeleteScenario", "delete", SCENARIO, "scenario_id"),
        ),
    ),
    Operation("get", SCENARIO, "scenarios", "One scenario", ok(ref("Scenario")), (404,)),
    Operation(
        "patch",
        SCENARIO,
        "scenarios",
        "Change a scenario (stored results keep the params they were run with)",
        ok(ref("Scenario")),
        (400, 404, 409, 413, 415, 422),
        body="ScenarioPatch",
    ),
    Operation(
        "delete",
        SCENARIO,
        "scenarios",
        "Delete a scenario that has no results",
        DELETED,
        (404, 409),
    ),
)

INGESTED_ROWS = (
    Operation(
        "get",
        INGESTED_RESULTS,
        "results",
        "The replications POST /api/results stored for this scenario",
        ok(_RESULT_ROWS),
        (404,),
    ),
    Operation(
        "delete",
        INGESTED_RESULTS,
        "results",
        "Remove every replication POST /api/results stored for this scenario; "
        "results of runs stay. The aggregates no longer count them",
        ok(INGESTED_DELETED),
        (404,),
    ),
    Operation(
        "delete",
        INGESTED_RESULTS + "/{replication}",
        "results",
        "Remove one replication POST /api/results stored for this scenario",
        DELETED,
        (404,),
    ),
)

RUNS = (
    Operation("get", "/api/simulations", "runs", "The runs, newest first", array_of("Run")),
    Operation(
        "post",
        "/api/simulations",
        "runs",
        "Start a run: every scenario (or those named) x replications, in the background",
        Answer(202, "Accepted", RUN_STARTED, location=True),
        _BODY_ERRORS,
        body="RunRequest",
        body_required=False,
        links=(
            Link("GetRun", "get", RUN, "run_id"),
            Link("CancelRun", "post", RUN + "/cancel", "run_id"),
            Link("GetRunResults", "get", RUN + "/results", "run_id"),
            Link("GetRunAggregates", "get", "/api/results", "run_id"),
        ),
    ),
    Operation("get", RUN, "runs", "One run", ok(ref("Run")), (404,)),
    Operation(
        "post",
        RUN + "/cancel",
        "runs",
        "Stop a queued or running run; finished replications stay stored",
        ok(ref("Run")),
        (404, 409),
    ),
    Operation(
        "get",
        RUN + "/compare",
        "runs",
        "Compare every other scenario of the run with a baseline, KPI by KPI: "
        "paired (common random numbers) and Welch 95% intervals, and a verdict",
        ok(ref("CompareResponse")),
        (404, 409, 422),
        query=query_of(COMPARE_QUERY),
    ),
    Operation(
        "get",
        RUN + "/select",
        "runs",
        "The subset of the run's scenarios that holds the best one on a KPI, with the "
        "stated confidence (screening of Nelson, Swann, Goldsman & Song, 2001)",
        ok(ref("Selection")),
        (404, 409, 422),
        query=query_of(SELECT_QUERY),
    ),
    Operation(
        "post",
        RUN + "/extend",
        "runs",
        "Add replications n+1..n+K to every scenario of a finished run",
        accepted("Run"),
        (400, 404, 409, 413, 415, 422),
        body="ExtendRequest",
    ),
    Operation(
        "post",
        RUN + "/resume",
        "runs",
        "Run exactly the replications an interrupted, failed or cancelled run lacks",
        accepted("Run"),
        (404, 409),
    ),
    Operation(
        "get",
        RUN + "/replications/{scenario_id}/{replication}",
        "runs",
        "Recompute one replication now from the run's manifest, and say whether it "
        "matches the stored row. It costs a replication's CPU: it needs the token "
        "when one is set, and one replay runs at a time (429 meanwhile)",
        ok(ref("Replay")),
        (401, 404, 409, 429),
    ),
    Operation(
        "get",
        RUN + "/results",
        "runs",
        "One row per replication, streamed (CSV with Accept: text/csv or ?format=csv; "
        "Parquet with Accept: application/vnd.apache.parquet or ?format=parquet, "
        "which needs the optional extra simsvc[parquet], else 406); a few exports stream "
        "at once (429 past them)",
        Answer(
            200,
            schema=_RESULT_ROWS,
            formats={
                "text/csv": {"type": "string"},
                "application/vnd.apache.parquet": {"type": "string", "format": "binary"},
            },
        ),
        (400, 404, 406, 429),
        query=(Query("format", {"type": "string", "enum": ["json", "csv", "parquet"]}),),
    ),
)

RESULTS = (
    Operation(
        "get",
        "/api/results",
        "results",
        "Per-scenario aggregates of one run, or pooled over the stored results "
        "computed with each scenario's current params, each draw (seed, r) once",
        array_of("Aggregate"),
        (400, 404, 422),
        query=(_RUN_QUERY, _INTERVAL_QUERY),
    ),
    Operation(
        "post",
        "/api/results",
        "results",
        "Store replications computed elsewhere, all or nothing; a replication already "
        "stored for the scenario's current params is 409",
        Answer(201, "Created", INGESTED),
        _BODY_ERRORS,
        body="IngestRequest",
    ),
    Operation(
        "post",
        "/api/notify-completion",
        "results",
        "Broadcast the aggregate list to every /ws/results client",
        ok(NOTIFIED),
    ),
)

EXPERIMENTS = (
    Operation(
        "get",
        "/api/experiments",
        "experiments",
        "The experiments, newest first (without their points)",
        array_of("Experiment"),
    ),
    Operation(
        "post",
        "/api/experiments",
        "experiments",
        "Start a sweep or an optimization over a space of params",
        Answer(202, "Accepted", ref("Experiment"), location=True),
        (400, 413, 415, 422),
        body="ExperimentRequest",
    ),
    Operation(
        "get",
        EXPERIMENT,
        "experiments",
        "One experiment with its points and recommendation",
        ok(ref("Experiment")),
        (404,),
    ),
    Operation(
        "post",
        EXPERIMENT + "/cancel",
        "experiments",
        "Stop a queued or running experiment",
        ok(ref("Experiment")),
        (404, 409),
    ),
    Operation(
        "post",
        EXPERIMENT + "/resume",
        "experiments",
        "Compute what a stopped experiment lacks",
        accepted("Experiment"),
        (404, 409),
    ),
    Operation(
        "get",
        EXPERIMENT + "/results",
        "experiments",
        "One row per replication, the point's params as columns (CSV with ?format=csv)",
        Answer(
            200,
            schema={"type": "array", "items": {"type": "object"}},
            formats={"text/csv": {"type": "string"}},
        ),
        (400, 404),
        query=(Query("format", {"type": "string", "enum": ["json", "csv"]}),),
    ),
    Operation(
        "post",
        EXPERIMENT + "/points/{point_id}/scenario",
        "experiments",
        "Save one point of an experiment as a named scenario",
        Answer(201, "Created", ref("Scenario")),
        (400, 404, 409, 413, 415, 422),
        body="SavePointRequest",
    ),
)

OPERATIONS: tuple[Operation, ...] = (
    SERVICE + SCENARIOS + INGESTED_ROWS + RUNS + RESULTS + EXPERIMENTS
)
