"""What `python -m simsvc run|results|experiment` do through a Client: rows out, exit code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

from .frames import flat_rows, scenario_names
from .records import Aggregate, ExperimentInfo, RunInfo
from .sync import Client
from .tables import write

AGGREGATE_COLUMNS = [
    "scenario_id",
    "scenario_name",
    "replications",
    "average_total_costs",
    "total_costs_ci95",
    "average_delivery_rate",
    "delivery_rate_ci95",
]
COMPARE_COLUMNS = [
    "scenario_id",
    "kpi",
    "n",
    "mean_difference",
    "paired_ci95_lo",
    "paired_ci95_hi",
    "welch_ci95_lo",
    "welch_ci95_hi",
    "verdict",
]
RUN_COLUMNS = ["run_id", "status", "scenario_ids", "replications", "seed", "done", "total"]
EXPERIMENT_COLUMNS = [
    "experiment_id",
    "kind",
    "status",
    "seed",
    "replications_used",
    "stopped_because",
    "created_at",
]


class Printer:
    """Rows to stdout in the chosen format; notes for people to stderr (unless quiet)."""

    def __init__(self, fmt: str, quiet: bool, out: TextIO, err: TextIO) -> None:
        self.fmt, self.quiet, self.out, self.err = fmt, quiet, out, err

    def rows(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str] | None = None,
        raw: Any = None,
    ) -> None:
        """Print `rows` (only `columns`, in a table or CSV); JSON prints `raw` when given."""
        if self.fmt == "json" and raw is not None:
            json.dump(raw, self.out, ensure_ascii=False, indent=2)
            self.out.write("\n")
            return
        write(rows, self.fmt, self.out, columns)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.err.write(text + "\n")


Command = Callable[[Client, argparse.Namespace, Printer], int]


def _progress(args: argparse.Namespace) -> bool | None:
    return False if args.quiet else None


# -- runs -----------------------------------------------------------------------------


def run(client: Client, args: argparse.Namespace, out: Printer) -> int:
    """Start a run; unless told not to wait, wait and print each scenario's statistics."""
    precision = json.loads(args.precision) if args.precision else None
    started = client.run(
        args.scenarios, args.replications, args.seed, pace_s=args.pace, precision=precision
    )
    info = started.info
    if args.no_wait:
        out.rows([info], RUN_COLUMNS, raw=info)
        return 0
    out.note(f"run {started.run_id}: {info['total']} replications, seed {info['seed']}")
    info = started.wait(timeout=args.timeout, progress=_progress(args))
    return _finished_run(info, started.aggregates(), out)


def _finished_run(info: RunInfo, aggregates: list[Aggregate], out: Printer) -> int:
    out.note(f"run {info['run_id']} {info['status']}: {info['done']} of {info['total']} done")
    out.rows(aggregates, AGGREGATE_COLUMNS, raw={"run": info, "results": aggregates})
    return 0 if info["status"] == "completed" else 1


def results(client: Client, args: argparse.Namespace, out: Printer) -> int:
    """A run's statistics, rows, comparison or selection; without a run, every scenario's."""
    if args.run_id is None:
        if args.rows or args.compare is not None or args.select is not None:
            raise ValueError("--rows, --compare and --select need a RUN_ID")
        aggregates = client.aggregates()
        out.rows(aggregates, [*AGGREGATE_COLUMNS, "run_ids"], raw=aggregates)
    elif args.rows:
        rows = client.results(args.run_id)
        names = scenario_names(client.run_info(args.run_id))
        out.rows(flat_rows(rows, names), raw=rows)
    elif args.compare is not None:
        answer = client.compare(args.run_id, args.compare)
        flat = [_interval_columns(c) for c in answer["comparisons"]]
        out.rows(flat, COMPARE_COLUMNS, raw=answer)
    elif args.select is not None:
        selection = client.select(
            args.run_id, args.select, indifference=args.indifference, confidence=args.confidence
        )
        row = {k: selection.get(k) for k in ("kpi", "direction", "confidence", "indifference")}
        row["subset"] = " ".join(map(str, selection["subset"]))
        out.rows([row], raw=selection)
    else:
        out.rows(client.aggregates(args.run_id), AGGREGATE_COLUMNS)
    return 0


def _interval_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """A comparison with each [lo, hi] interval as two columns."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if key.endswith("_ci95") and isinstance(value, list) and len(value) == 2:
            flat[f"{key}_lo"], flat[f"{key}_hi"] = value
        else:
            flat[key] = value
    return flat


# -- experiments ----------------------------------------------------------------------


def experiment(client: Client, args: argparse.Namespace, out: Printer) -> int:
    """start, show, results, list, cancel or resume an experiment."""
    action = args.action
    if action == "list":
        listed = client.experiments()
        out.rows(listed, EXPERIMENT_COLUMNS, raw=listed)
        return 0
    if action == "results":
        rows = client.experiment_results(args.experiment_id)
        out.rows(flat_rows(rows), raw=rows)
        return 0
    if action == "start":
        handle = client.experiment(read_spec(args.spec, sys.stdin))
    elif action == "resume":
        handle = client.get_experiment(args.experiment_id)
        handle.resume()
    elif action == "cancel":
        handle = client.get_experiment(args.experiment_id)
        handle.cancel()
    else:
        handle = client.get_experiment(args.experiment_id)
    info = handle.info
    if action in ("start", "resume") and not args.no_wait:
        out.note(f"experiment {handle.experiment_id} {handle.status}")
        info = handle.wait(timeout=args.timeout, progress=_progress(args))
    if action != "show" and "points" not in info:
        info = handle.refresh()
    return _experiment_state(info, out)


def _experiment_state(info: ExperimentInfo, out: Printer) -> int:
    out.note(
        f"experiment {info['experiment_id']} {info['status']}: "
        f"{info['replications_used']} replications"
        + (f", stopped because {info['stopped_because']}" if info.get("stopped_because") else "")
    )
    out.rows(point_rows(info), raw=info)
    recommendation = info.get("recommendation")
    if recommendation:
        out.note(f"recommended: point {recommendation['point_id']}: {recommendation['statement']}")
    return 1 if info["status"] in ("failed", "cancelled", "interrupted") else 0


def point_rows(info: ExperimentInfo) -> list[dict[str, Any]]:
    """One row per point: the params that vary, replications, each mean and its CI."""
    points = info.get("points") or []
    # The service may name the params that vary; otherwise they are found from the points.
    named: list[str] | None = cast(dict[str, Any], info).get("varied")
    varied = named or _varied([p["params"] for p in points])
    rows = []
    for point in points:
        row: dict[str, Any] = {"point_id": point["point_id"]}
        row.update({name: point["params"].get(name) for name in varied})
        row["replications"] = point["replications"]
        for kpi, mean in point["means"].items():
            row[kpi] = mean
            row[f"{kpi}_ci95"] = point["ci95"].get(kpi)
        row["feasible"] = point.get("feasible")
        rows.append(row)
    return rows


def _varied(params: Sequence[Mapping[str, Any]]) -> list[str]:
    names = list(params[0]) if params else []
    return [n for n in names if len({json.dumps(p.get(n)) for p in params}) > 1]


def read_spec(spec: str, stdin: TextIO) -> dict[str, Any]:
    """An experiment request from JSON text, a file, or `-` (standard input)."""
    if spec == "-":
        text = stdin.read()
    elif spec.lstrip().startswith("{"):
        text = spec
    else:
        text = Path(spec).read_text(encoding="utf-8")
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("an experiment request is a JSON object")
    return value


COMMANDS: dict[str, Command] = {"run": run, "results": results, "experiment": experiment}
