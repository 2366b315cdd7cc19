"""`python -m simsvc run|results|experiment`: the client's command line, for scripts and CI.

Parsing needs only the standard library, so `--help` answers at once; the client (and
aiohttp) is imported once a command runs. Nothing of the service itself is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

CLIENT_COMMANDS = ("run", "results", "experiment")
FORMATS = ("table", "csv", "json")
DEFAULT_URL = "http://127.0.0.1:8000"


def _id_list(value: str) -> list[int]:
    """A --scenarios value: ids separated by commas."""
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a comma-separated list of ids"
        ) from None


def _common() -> argparse.ArgumentParser:
    """The options every client command takes."""
    common = argparse.ArgumentParser(add_help=False)
    url = os.environ.get("SIMSVC_URL") or DEFAULT_URL
    common.add_argument("--url", default=url, help=f"the service [SIMSVC_URL; default: {url}]")
    common.add_argument(
        "--token",
        default=os.environ.get("SIMSVC_TOKEN") or None,
        help="bearer token, when the service requires one [SIMSVC_TOKEN]",
    )
    common.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default: table)"
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for a run or experiment to end (default: no limit)",
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar or notes on stderr"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simsvc",
        description="Drive a running simsvc service: start runs and experiments, print "
        "results as tables, CSV or JSON. Exit status: 0 when what was asked for completed, "
        "1 when it failed, was cancelled or the service refused or could not be reached.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()
    _add_run(commands.add_parser("run", parents=[common], help="start a run and wait for it"))
    _add_results(commands.add_parser("results", parents=[common], help="print a run's results"))
    _add_experiment(commands.add_parser("experiment", help="sweep or optimize params"), common)
    return parser


def _add_run(run: argparse.ArgumentParser) -> None:
    run.description = (
        "Start a run, wait for it (following the service's events), then print each "
        "scenario's means and 95% confidence half-widths."
    )
    run.add_argument(
        "-s", "--scenarios", type=_id_list, default=None, help="ids, e.g. 1,2 (default: all)"
    )
    run.add_argument("-n", "--replications", type=int, default=None, help="per scenario")
    run.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    run.add_argument("--pace", type=float, default=None, help="seconds after each replication")
    run.add_argument(
        "--precision", default=None, help='run until precise: JSON, e.g. {"targets": {...}}'
    )
    run.add_argument("--no-wait", action="store_true", help="print the new run and return at once")


def _add_results(results: argparse.ArgumentParser) -> None:
    results.description = (
        "Each scenario's statistics for one run (or, without RUN_ID, over every run), or "
        "the run's rows, a comparison with a baseline, or a subset selection."
    )
    results.add_argument("run_id", metavar="RUN_ID", type=int, nargs="?", default=None)
    shown = results.add_mutually_exclusive_group()
    shown.add_argument("--rows", action="store_true", help="one row per replication")
    shown.add_argument(
        "--compare", metavar="BASELINE", type=int, help="paired and Welch intervals vs a scenario"
    )
    shown.add_argument("--select", metavar="KPI", help="the scenarios that may be best on KPI")
    results.add_argument("--indifference", type=float, default=None, help="with --select")
    results.add_argument("--confidence", type=float, default=None, help="with --select")


def _add_experiment(experiment: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    experiment.description = "Experiments over a parameter space (sweep or optimize)."
    actions = experiment.add_subparsers(dest="action", required=True, metavar="ACTION")
    start = actions.add_parser("start", parents=[common], help="start one and wait for it")
    start.add_argument(
        "spec", metavar="SPEC", help="the request: a JSON file, JSON text, or - for stdin"
    )
    for name, text in [
        ("show", "print its points and recommendation"),
        ("results", "one row per replication"),
        ("cancel", "stop it"),
        ("resume", "run what it still lacks, and wait"),
    ]:
        action = actions.add_parser(name, parents=[common], help=text)
        action.add_argument("experiment_id", metavar="EXPERIMENT_ID", type=int)
    for name in ("start", "resume"):
        actions.choices[name].add_argument("--no-wait", action="store_true", help="return at once")
    actions.add_parser("list", parents=[common], help="every experiment")


def main(argv: Sequence[str]) -> int:
    """Run one client command; its exit status."""
    args = build_parser().parse_args(argv)
    from .client import Client, SimsvcError
    from .client.commands import COMMANDS, Printer

    printer = Printer(args.format, args.quiet, sys.stdout, sys.stderr)
    try:
        with Client(args.url, args.token) as client:
            return COMMANDS[args.command](client, args, printer)
    except (SimsvcError, TimeoutError, ValueError, OSError) as exc:
        sys.stderr.write(f"simsvc {args.command}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
