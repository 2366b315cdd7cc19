"""How long after a run's last replication the dashboard's chart shows it, and asset sizes.

    python -m bench.dashboard_latency [--runs 12] [--replications 200]

Starts `python -m simsvc` on a free port with a fresh database, opens the dashboard in
Debian's chromium, starts runs through the API and reads the page's performance marks.
The server stamps a run's `finished_at` just after its last replication is stored; the
page marks each redraw (`simsvc:results-rendered`) and each event it receives
(`simsvc:event`). Both clocks are this machine's wall clock.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
from playwright.sync_api import Page, expect, sync_playwright

from .servers import free_port

log = logging.getLogger("bench.dashboard_latency")
ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "simsvc" / "static"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MARKS = """(runId) => {
  const at = (m) => performance.timeOrigin + m.startTime;
  const mine = (name) => performance.getEntriesByName(name).filter((m) => m.detail.runId === runId);
  return {
    events: mine('simsvc:event').map((m) => [m.detail.type, m.detail.done, at(m)]),
    renders: mine('simsvc:results-rendered').map((m) => [m.detail.status, m.detail.done, at(m)]),
  };
}"""


def wait_healthy(url: str, proc: subprocess.Popen[bytes], limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/api/health", timeout=1).ok:
                return
        except requests.ConnectionError:
            pass
        try:
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        break
    raise RuntimeError("simsvc did not start")


def epoch_ms(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


def measure_run(page: Page, url: str, replications: int, seed: int) -> dict[str, float]:
    run_id = requests.post(
        f"{url}/api/simulations", json={"replications": replications, "seed": seed}, timeout=10
    ).json()["run_id"]
    done = page.locator(f'#results[data-run-id="{run_id}"][data-status="completed"]')
    expect(done).to_have_count(1, timeout=60_000)
    run = requests.get(f"{url}/api/simulations/{run_id}", timeout=10).json()
    marks: dict[str, Any] = page.evaluate(MARKS, run_id)
    finished = epoch_ms(run["finished_at"])
    full = min(t for _, d, t in marks["renders"] if d == run["total"])
    received = next(t for kind, _, t in marks["events"] if kind == "run.completed")
    drawn = next(t for status, _, t in marks["renders"] if status == "completed")
    return {
        "all replications drawn": full - finished,
        "run.completed received": received - finished,
        "run.completed drawn": drawn - finished,
        "redraw after receipt": drawn - received,
    }


def asset_sizes() -> None:
    raw = {p.name: p.read_bytes() for p in sorted(STATIC.iterdir()) if p.is_file()}
    for name, body in raw.items():
        log.info("%-12s %7d bytes, %6d gzipped", name, len(body), len(gzip.compress(body, 9)))
    everything = b"".join(raw.values())
    log.info(
        "%-12s %7d bytes, %6d gzipped", "total", len(everything), len(gzip.compress(everything, 9))
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    asset_sizes()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "simsvc", "--port", str(port), "--db", f"{tmp}/bench.db"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)
        try:
            wait_healthy(url, proc)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page()
                page.goto(f"{url}/")
                expect(page.locator("#connection")).to_have_attribute("data-state", "live")
                # The first two runs warm up the worker pool and the page.
                rows = [measure_run(page, url, args.replications, s) for s in range(args.runs)][2:]
                browser.close()
        finally:
            proc.terminate()
            proc.wait()
    log.info("ms after finished_at, over %d runs (median, min, max):", len(rows))
    for key in rows[0]:
        values = [r[key] for r in rows]
        log.info(
            "  %-24s %6.1f %6.1f %6.1f",
            key,
            statistics.median(values),
            min(values),
            max(values),
        )


if __name__ == "__main__":
    main()
