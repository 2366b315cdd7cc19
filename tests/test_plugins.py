"""Plug-in models: a real package, pip-installed, found through `simsvc.models`."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from pytest_aiohttp import AiohttpClient

from simsvc.sim import stream
from simsvc.web import Config, create_app

from .conftest import Client, start_run, wait_for_run

PLUGIN = Path(__file__).parent / "plugins" / "simsvc-loading-dock"
DISTRIBUTION = "simsvc-loading-dock"


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        check=True,
        timeout=50,
    )


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Install the plug-in as a user would, from a copy so that no build files land in tests/."""
    source = tmp_path_factory.mktemp("plugin") / PLUGIN.name
    shutil.copytree(PLUGIN, source)
    # No build isolation and no deps: the test machine may have no package index.
    _pip("install", "--no-deps", "--no-build-isolation", str(source))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        _pip("uninstall", "-y", DISTRIBUTION)
        importlib.invalidate_caches()


@pytest.fixture
async def dock_client(
    installed_plugin: None, aiohttp_client: AiohttpClient, config: Config
) -> Client:
    # No `models=`: the app loads what is installed, as `python -m simsvc` does.
    return await aiohttp_client(create_app(config))


def test_installed_package_registers_the_entry_point(installed_plugin: None) -> None:
    names = {e.name: e.value for e in entry_points(group="simsvc.models")}
    assert names["loading_dock"] == "simsvc_loading_dock:LoadingDock"


async def test_models_lists_the_plugin_with_its_schema_and_kpis(dock_client: Client) -> None:
    models = {m["name"]: m for m in await (await dock_client.get("/api/models")).json()}
    dock = models["loading_dock"]
    assert dock["version"] == "1.1.0"
    assert dock["params"]["properties"]["crews"]["default"] == 3
    assert {"name": "ontime_delivery_rate", "direction": "max"} in dock["kpis"]
    assert dock["metrics"] == ["trucks", "overtime_hours"]
    spec = await (await dock_client.get("/openapi.json")).json()
    assert "Params.loading_dock" in spec["components"]["schemas"]


async def test_plugin_params_are_validated_against_its_schema(dock_client: Client) -> None:
    resp = await dock_client.post(
        "/api/scenarios",
        json={"scenario_name": "no crew", "model": "loading_dock", "params": {"crews": 0}},
    )
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "params.crews"


async def test_plugin_model_runs_to_precision_compares_and_replays(dock_client: Client) -> None:
    ids = []
    for crews in (2, 3):
        resp = await dock_client.post(
            "/api/scenarios",
            json={
                "scenario_name": f"{crews} crews",
                "model": "loading_dock",
                "params": {"crews": crews},
            },
        )
        assert resp.status == 201
        ids.append((await resp.json())["scenario_id"])
    precision = {"targets": {"trucks": {"relative_half_width": 0.05}}, "min_replications": 10}
    answer = await start_run(dock_client, seed=9, scenario_ids=ids, precision=precision)
    run = await wait_for_run(dock_client, answer["run_id"])
    assert (run["status"], run["stopped_because"]) == ("completed", "precision_met")
    assert run["scenarios"][str(ids[0])]["model_version"] == "1.1.0"
    compare = await (
        await dock_client.get(f"/api/simulations/{run['run_id']}/compare?baseline={ids[0]}")
    ).json()
    verdicts = {c["kpi"]: c["verdict"] for c in compare["comparisons"]}
    assert verdicts["mean_wait_minutes"] == "better"  # a third crew cuts the waiting
    replay = await (
        await dock_client.get(f"/api/simulations/{run['run_id']}/replications/{ids[1]}/2")
    ).json()
    assert replay["matches"] is True


def test_plugin_docs_show_the_tested_package_verbatim() -> None:
    docs = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text(encoding="utf-8")
    for name in ("pyproject.toml", "simsvc_loading_dock/__init__.py"):
        assert (PLUGIN / name).read_text(encoding="utf-8").strip() in docs, name


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
        env={**os.environ, **env},
    )


def test_importing_a_plugin_first_imports_it_cleanly(installed_plugin: None) -> None:
    # What a fresh Dask worker does when it unpickles a chunk of a plug-in model.
    done = _python(
        "import logging; logging.basicConfig()\n"
        "import simsvc_loading_dock\n"
        "print(simsvc_loading_dock.LoadingDock().name)"
    )
    assert (done.stdout.strip(), done.stderr) == ("loading_dock", "")


BROKEN_SERVICE = """
import asyncio, logging
logging.basicConfig()
from simsvc import backends, chunks
from simsvc.sim import stream
from simsvc.web import Config, create_app

async def main() -> None:
    create_app(Config(db_path=":memory:"))
    pool = backends.PoolBackend("process", 2)  # fresh workers import simsvc.sim
    await asyncio.gather(*(pool.submit(chunks.simulate_chunk, {}, 1, []) for _ in range(4)))
    await pool.close()

asyncio.run(main())
"""


def test_a_broken_plugin_is_reported_once(tmp_path: Path) -> None:
    # An installed distribution whose entry point names a module that does not exist.
    info = tmp_path / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[simsvc.models]\nbroken = no_such_module_for_simsvc:Model\n", encoding="utf-8"
    )
    done = _python(BROKEN_SERVICE, PYTHONPATH=str(tmp_path))
    assert done.stderr.count("could not load model plug-in") == 1, done.stderr


def test_plugin_example_uses_common_random_numbers(installed_plugin: None) -> None:
    # The documented example: every scenario of replication r sees the same trucks, and
    # the paired interval of a difference is much narrower than Welch's.
    from simsvc_loading_dock import LoadingDock

    model, n = LoadingDock(), 60
    crews = {
        c: [model.simulate({**model.defaults, "crews": c}, stream(7, r)) for r in range(n)]
        for c in (2, 3)
    }
    assert [o["trucks"] for o in crews[2]] == [o["trucks"] for o in crews[3]]
    two = np.array([o["total_labor_costs"] for o in crews[2]])
    three = np.array([o["total_labor_costs"] for o in crews[3]])
    paired = np.std(three - two, ddof=1)
    welch = np.sqrt(np.var(three, ddof=1) + np.var(two, ddof=1))
    assert paired < 0.75 * welch  # the shared streams' gain; about 0.9 or more without them
