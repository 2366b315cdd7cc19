"""`python -m simsvc`: serve the API, the WebSockets and the dashboard."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from . import StartupError
from .web import POOL_EXECUTORS, Config, create_app, default_workers, warn_if_exposed

log = logging.getLogger("simsvc")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python -m simsvc",
        description="Simulation experiments as a service. Every flag can also be set "
        "through the SIMSVC_<FLAG> environment variable.",
    )
    parser.add_argument("--host", default=env("SIMSVC_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("SIMSVC_PORT", "8000")))
    parser.add_argument(
        "--db", default=env("SIMSVC_DB", "simsvc.db"), help="SQLite file, or :memory:"
    )
    parser.add_argument(
        "--workers", type=int, default=int(env("SIMSVC_WORKERS", str(default_workers())))
    )
    parser.add_argument(
        "--executor",
        type=executor_name,
        default=env("SIMSVC_EXECUTOR", "process"),
        help="process, thread, inline, dask-local, or dask://HOST:PORT for a Dask scheduler"
        " (the last two need `pip install simsvc[dask]`)",
    )
    parser.add_argument("--log-level", default=env("SIMSVC_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--token",
        default=env("SIMSVC_TOKEN") or None,
        help="require Authorization: Bearer <token> on every change and WebSocket",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        dest="cors_origins",
        default=None,
        help="an origin (https://host:port) allowed to call the API and open WebSockets "
        "from a browser; repeat for several (SIMSVC_CORS_ORIGINS: comma-separated)",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        dest="allowed_hosts",
        default=None,
        help="a host name (or address) clients reach the service by, besides loopback names "
        "and --host; repeat for several, '*' for any (SIMSVC_ALLOWED_HOSTS: comma-separated)",
    )
    args = parser.parse_args(argv)
    if args.cors_origins is None:
        listed = env("SIMSVC_CORS_ORIGINS", "")
        args.cors_origins = [o.strip() for o in listed.split(",") if o.strip()]
    if args.allowed_hosts is None:
        listed = env("SIMSVC_ALLOWED_HOSTS", "")
        args.allowed_hosts = [h.strip() for h in listed.split(",") if h.strip()]
    return args


def executor_name(value: str) -> str:
    """An --executor value: a pool kind, dask-local, or dask://HOST:PORT."""
    if value in POOL_EXECUTORS or value == "dask-local":
        return value
    if value.startswith("dask://") and len(value) > len("dask://"):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r} is not one of {', '.join(POOL_EXECUTORS)}, dask-local or dask://HOST:PORT"
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = Config(
        db_path=args.db,
        workers=max(1, args.workers),
        executor=args.executor,
        token=args.token,
        cors_origins=tuple(args.cors_origins),
        allowed_hosts=(args.host, *args.allowed_hosts),
    )
    warn_if_exposed(args.host, args.token)
    base = f"http://{args.host}:{args.port}"
    log.info("dashboard: %s/   API docs: %s/docs", base, base)
    try:
        web.run_app(
            create_app(config),
            host=args.host,
            port=args.port,
            print=_log_listening,
            shutdown_timeout=config.shutdown_timeout_s,
        )
    except StartupError as exc:
        print(f"simsvc: {exc}", file=sys.stderr)  # noqa: T201 - the operator's one line
        sys.exit(1)


def _log_listening(message: str) -> None:
    log.info("listening: %s", message.splitlines()[0].strip("= "))


if __name__ == "__main__":
    main()
