"""The systems under measurement: simsvc and the seed's peer, each as a loopback subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
PEER_SOURCE = Path(os.environ.get("BENCH_PEER_DIR", REPO.parent / "shared/peer/seed_fastapi"))
PEER_VENV = Path(os.environ.get("BENCH_PEER_VENV", "/tmp/simsvc-peer-venv"))
PEER_PACKAGES = ("fastapi", "uvicorn[standard]", "sqlalchemy", "requests", "websockets")
HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now and not given to another server of this bench, which may not be up yet."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found")


@dataclass
class Server:
    """One service process on loopback; `url` is its base address."""

    name: str
    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    ready_path: str
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_bytes(self) -> int:
        """Resident memory of the service process and its children (worker processes)."""
        return int(psutil.Process(self.pid).memory_info().rss)

    def launch(self) -> Path:
        """Start the process; its output goes to a log file whose path is returned."""
        log_path = Path(tempfile.gettempdir()) / f"bench-{self.name}-{self.port}.log"
        with log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [*self.argv], cwd=self.cwd, env={**os.environ, **self.env}, stdout=out, stderr=out
            )
        return log_path

    async def start(self) -> None:
        log_path = self.launch()
        await self._wait_ready(log_path)
        log.info("%s is up at %s (pid %d, log %s)", self.name, self.url, self.pid, log_path)

    async def _wait_ready(self, log_path: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited at start; see {log_path}")
                try:
                    async with session.get(self.url + self.ready_path) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {START_TIMEOUT_S} s")

    async def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("%s did not stop within %s s; killing it", self.name, STOP_TIMEOUT_S)
            process.kill()
            await asyncio.to_thread(process.wait)


def simsvc(
    workdir: Path,
    workers: int = 2,
    executor: str = "process",
    source: Path | None = None,
    db_path: Path | None = None,
) -> Server:
    """simsvc on a fresh database in `workdir`: from this checkout, or from `source`
    (a directory holding another version's `simsvc` package, see `baseline_source`)."""
    env = {} if source is None else {"PYTHONPATH": str(source)}
    server = Server("simsvc", [], source or REPO, env, "/api/health")
    db_path = db_path or workdir / f"simsvc-{server.port}.db"
    argv = [sys.executable, "-m", "simsvc", "--host", HOST, "--db", str(db_path)]
    argv += ["--workers", str(workers), "--executor", executor, "--log-level", "WARNING"]
    server.argv = [*argv, "--port", str(server.port)]
    return server


def baseline_source(workdir: Path, revision: str) -> Path:
    """The `simsvc` package as it was at `revision`, extracted from git into `workdir`."""
    target = workdir / f"simsvc-{revision}"
    if not (target / "simsvc").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", revision, "simsvc"],
            check=True,
            capture_output=True,
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def thread_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds of a process's main thread (its event loop) and of the whole process."""
    process = psutil.Process(pid)
    main = next((t for t in process.threads() if t.id == pid), None)
    times = process.cpu_times()
    loop = 0.0 if main is None else main.user_time + main.system_time
    return loop, times.user + times.system


def main_thread_cpu_s(pid: int) -> float:
    """CPU seconds of a process's main thread (its event loop), to the nanosecond on Linux."""
    path = Path(f"/proc/{pid}/task/{pid}/schedstat")
    if path.exists():
        return _scheduled_ns(path) / 1e9
    return thread_cpu_s(pid)[0]


def tasks_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds of a process's live threads, and of its children's, to the nanosecond.

    Read from Linux's scheduler statistics (`/proc/<pid>/task/<tid>/schedstat`), where
    psutil counts 10 ms ticks: a tick is 0.7 µs a row of a 15,000-row run. Threads that
    have ended are not counted; the service's and its workers' live as long as they do.
    Elsewhere, psutil's counts.
    """
    process = psutil.Process(pid)
    children = process.children(recursive=True)
    if not Path(f"/proc/{pid}/task").is_dir():
        return sum(process.cpu_times()[:2]), sum(sum(c.cpu_times()[:2]) for c in children)
    return _schedstat_s(pid), sum(_schedstat_s(child.pid) for child in children)


def _schedstat_s(pid: int) -> float:
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError):  # the thread or the process has just ended
            total += _scheduled_ns(task)
    return total / 1e9


def _scheduled_ns(schedstat: Path) -> int:
    """A task's time on a CPU: the first field of its `schedstat`."""
    return int(schedstat.read_text().split()[0])


def peer(workdir: Path, reps: int = 3) -> Server:
    """The seed's FastAPI system, copied to `workdir` so that its database lands there."""
    ensure_peer_venv()
    server = Server("peer", [], workdir, {}, "/api/results")
    home = server.cwd = workdir / f"peer-{server.port}"
    shutil.copytree(PEER_SOURCE, home, ignore=shutil.ignore_patterns("*.db", "__pycache__"))
    server.env = {
        "PEER_PORT": str(server.port),
        "PEER_SLEEP": "0",
        "PEER_REPS": str(reps),
        "PEER_DB_URL": f"sqlite:///{home / 'peer.db'}",
    }
    uvicorn = str(PEER_VENV / "bin" / "uvicorn")
    server.argv = [uvicorn, "main:app", "--host", HOST, "--port", str(server.port)]
    server.argv += ["--log-level", "warning"]
    return server


def peer_db(server: Server) -> Path:
    return server.cwd / "peer.db"


def ensure_peer_venv() -> None:
    """Create the peer's own virtual environment once, as its README says."""
    if (PEER_VENV / "bin" / "uvicorn").exists():
        return
    log.info("creating the peer's virtual environment in %s", PEER_VENV)
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(PEER_VENV / "bin" / "pip"), "install", "-q", *PEER_PACKAGES]
    subprocess.run(pip, check=True)


def seed_peer_rows(server: Server, scenarios: int, replications: int) -> None:
    """Fill the peer's tables directly: `scenarios` scenarios x `replications` rows each."""
    import random

    rng = random.Random(1)
    with sqlite3.connect(peer_db(server)) as conn:
        existing = {int(r[0]) for r in conn.execute("SELECT scenario_id FROM scenarios")}
        conn.executemany(
            "INSERT INTO scenarios (scenario_id, scenario_name) VALUES (?, ?)",
            [(s, f"scenario {s}") for s in range(1, scenarios + 1) if s not in existing],
        )
        rows: list[tuple[Any, ...]] = [
            (s, r, round(rng.uniform(8000, 12000), 2), round(rng.uniform(0.75, 0.95), 4))
            for s in range(1, scenarios + 1)
            for r in range(1, replications + 1)
        ]
        conn.executemany(
            "INSERT INTO simulation_results"
            " (scenario_id, replication, total_labor_costs, ontime_delivery_rate)"
            " VALUES (?, ?, ?, ?)",
            rows,
        )
