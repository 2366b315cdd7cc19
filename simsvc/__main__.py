"""`python -m simsvc`: serve the API, the WebSockets and the dashboard (or `run`,
`results` and `experiment` against a running service: see simsvc/cli.py).

Only the standard library is imported here, so that `--help` and a bad flag answer at
once; aiohttp, NumPy and SciPy are imported when the service starts.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import StartupError
from .cli import CLIENT_COMMANDS
from .cli import main as client_main

log = logging.getLogger("simsvc")

# The same names as simsvc.backends.POOL_EXECUTORS, kept here so that parsing imports no NumPy.
POOL_EXECUTORS = ("process", "thread", "inline")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DESCRIPTION = (
    "Runs simulation experiments (scenarios x replications) as a service: an HTTP API, "
    "live WebSockets and a dashboard. Every flag can also be set through the environment "
    "variable shown with it."
)


def port_number(value: str) -> int:
    """A --port value: an integer from 1 to 65535."""
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (1 to 65535)")
    return port


def seconds(value: str) -> float:
    """A duration in seconds: a finite number, 0 or more."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds (0 or more)")
    return number


def worker_count(value: str) -> int:
    """A --workers value: a positive integer."""
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return count


def executor_name(value: str) -> str:
    """An --executor value: a pool kind, dask-local, or dask://HOST:PORT."""
    if value in POOL_EXECUTORS or value == "dask-local":
        return value
    if value.startswith("dask://") and len(value) > len("dask://"):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r} is not one of {', '.join(POOL_EXECUTORS)}, dask-local or dask://HOST:PORT"
    )


def log_level(value: str) -> str:
    """A --log-level value: a logging level name, in any case."""
    if value.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def origin_list(value: str) -> list[str]:
    """A --cors-origin value: one origin, or several separated by commas."""
    return [origin.strip() for origin in value.split(",") if origin.strip()]


# flag, environment variable, type, default, help (shown with the default).
SERVE_FLAGS: list[tuple[str, str, Callable[[str], Any], str | None, str]] = [
    ("--host", "SIMSVC_HOST", str, "127.0.0.1", "address to bind"),
    ("--port", "SIMSVC_PORT", port_number, "8000", "port to listen on"),
    ("--db", "SIMSVC_DB", str, "simsvc.db", "SQLite file, or :memory:"),
    (
        "--workers",
        "SIMSVC_WORKERS",
        worker_count,
        str(os.cpu_count() or 1),
        "executor workers (the CPU count unless set)",
    ),
    (
        "--executor",
        "SIMSVC_EXECUTOR",
        executor_name,
        "process",
        "process, thread, inline, dask-local, or dask://HOST:PORT for a Dask scheduler "
        "(the last two need the extra: `pip install '.[dask]'` in the simsvc source tree)",
    ),
    (
        "--executor-wait",
        "SIMSVC_EXECUTOR_WAIT",
        seconds,
        "120",
        "seconds a run waits for a Dask worker (or an unreachable scheduler) before it "
        "fails; its finished replications stay stored",
    ),
    ("--log-level", "SIMSVC_LOG_LEVEL", log_level, "INFO", "logging level"),
    (
        "--token",
        "SIMSVC_TOKEN",
        str,
        None,
        "require `Authorization: Bearer <token>` on every change and WebSocket handshake",
    ),
]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the service; a bad environment value is refused like a bad flag."""
    refused: list[str] = []
    for flag, variable, convert, fallback, text in SERVE_FLAGS:
        default = _from_environment(variable, convert, fallback, refused)
        shown = "none" if default is None else "%(default)s"
        if flag == "--token" and default is not None:
            shown = "set, hidden"  # --help must not show a secret
        parser.add_argument(
            flag, type=convert, default=default, help=f"{text} [{variable}; default: {shown}]"
        )
    origins = _from_environment("SIMSVC_CORS_ORIGINS", origin_list, "", refused)
    parser.add_argument(
        "--cors-origin",
        dest="cors_origins",
        type=origin_list,
        action="extend",
        default=None,
        help="an origin (https://host:port) allowed to call the API and open WebSockets from "
        "a browser; repeat, or comma-separate [SIMSVC_CORS_ORIGINS; default: "
        f"{', '.join(origins) or 'none'}]",
    )
    hosts = _from_environment("SIMSVC_ALLOWED_HOSTS", origin_list, "", refused)
    parser.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        type=origin_list,
        action="extend",
        default=None,
        help="a host name (or address) clients reach the service by, besides loopback names "
        "and --host; repeat, or comma-separate; '*' for any [SIMSVC_ALLOWED_HOSTS; default: "
        f"{', '.join(hosts) or 'none'}]",
    )
    parser.set_defaults(environment_origins=origins, environment_hosts=hosts)
    if refused:
        parser.error(refused[0])


def _from_environment(
    variable: str, convert: Callable[[str], Any], fallback: str | None, refused: list[str]
) -> Any:
    """The variable's value (or the fallback) converted; a refusal is added to `refused`."""
    raw = os.environ.get(variable) or fallback
    if raw is None:
        return None
    try:
        return convert(raw)
    except argparse.ArgumentTypeError as exc:
        refused.append(f"environment variable {variable}: {exc}")
        return None


COMMANDS_EPILOG = (
    "`python -m simsvc serve [flags]` is the same as `python -m simsvc [flags]`. Commands "
    f"for a running service, each with its own --help: {', '.join(CLIENT_COMMANDS)}."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simsvc", description=DESCRIPTION, epilog=COMMANDS_EPILOG
    )
    add_serve_arguments(parser)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.cors_origins is None:
        args.cors_origins = args.environment_origins
    if args.allowed_hosts is None:
        args.allowed_hosts = args.environment_hosts
    return args


def serve(args: argparse.Namespace) -> None:
    """Start the service and block until it is stopped; StartupError if it cannot start."""
    _check_can_listen(args.host, args.port)  # before the database is created or opened
    from aiohttp import web

    from .backends import ClusterTimeouts
    from .web import Config, create_app, warn_if_exposed

    config = Config(
        db_path=args.db,
        workers=args.workers,
        executor=args.executor,
        token=args.token,
        cors_origins=tuple(args.cors_origins),
        allowed_hosts=(args.host, *args.allowed_hosts),
        cluster=ClusterTimeouts(give_up_s=args.executor_wait),
    )
    warn_if_exposed(args.host, args.token)
    try:
        web.run_app(
            create_app(config),
            host=args.host,
            port=args.port,
            print=_log_listening,
            shutdown_timeout=config.shutdown_timeout_s,
        )
    except OSError as exc:
        # Taken between the check above and the bind: the same one line.
        reason = _bind_failure(exc, args.host, args.port)
        if reason is None:
            raise
        raise StartupError(reason) from exc


def _check_can_listen(host: str, port: int) -> None:
    """StartupError now, rather than after start-up, when the address cannot be bound."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in addresses:
            with socket.socket(family, kind, proto) as probe:
                if os.name != "nt":  # as asyncio's create_server does
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
    except OSError as exc:
        reason = _bind_failure(exc, host, port) or f"cannot listen on {host}:{port}: {exc}"
        raise StartupError(reason) from exc


def _bind_failure(exc: OSError, host: str, port: int) -> str | None:
    """The one-line reason a bind failed, or None when the error was not about binding."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve --host {host!r}: {exc.strerror}"
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is in use; try --port {_next_free_port(host, port)}"
    if exc.errno in (errno.EACCES, errno.EADDRNOTAVAIL):
        return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def _next_free_port(host: str, port: int) -> int:
    """The first port after `port` that can be bound now (a suggestion, not a promise)."""
    for candidate in range(port + 1, min(port + 100, 65536)):
        with socket.socket() as probe:
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            return candidate
    return port + 1


def _log_listening(message: str) -> None:
    # aiohttp calls this once the sockets listen: "======== Running on URL ========".
    base = message.split("Running on", 1)[-1].split()[0]
    log.info("listening on %s   dashboard: %s/   API docs: %s/docs", base, base, base)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve (the default, or `serve`), or run one of the client's commands."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in CLIENT_COMMANDS:
        return client_main(argv)
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        serve(args)
    except StartupError as exc:
        print(f"simsvc: {exc}", file=sys.stderr)  # noqa: T201 - the operator's one line
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
