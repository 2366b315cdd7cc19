"""What the service is configured with: one frozen `Config`, read by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import backends
from .openapi import MAX_WS_MESSAGE_BYTES
from .runner import DEFAULT_CHUNK_TIMEOUT_S


@dataclass(frozen=True)
class Config:
    """Everything the app is configured with; `create_app` does no I/O with it."""

    db_path: str = "simsvc.db"
    workers: int = field(default_factory=backends.default_workers)
    executor: str = "process"  # process, thread, inline, dask-local or dask://HOST:PORT
    heartbeat_s: float = 30.0
    max_ws_message_bytes: int = MAX_WS_MESSAGE_BYTES
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    # Host names (or the address) the service is reached by besides the loopback ones;
    # "0.0.0.0" or "::" accepts any address literal, "*" any name (see security.Policy).
    allowed_hosts: tuple[str, ...] = ()
    # After the sockets are closed, how long a shutdown waits for requests still running.
    shutdown_timeout_s: float = 3.0
    # A chunk of replications still computing after this long fails its run.
    chunk_timeout_s: float = DEFAULT_CHUNK_TIMEOUT_S
    # How a Dask executor follows its cluster: reconnects, waiting runs, their time limit.
    cluster: backends.ClusterTimeouts = field(default_factory=backends.ClusterTimeouts)
