"""Plug-in models: a real package, pip-installed, found through `simsvc.models`."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from pytest_aiohttp import AiohttpClient

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
    assert dock["version"] == "1.0.0"
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
    assert run["scenarios"][str(ids[0])]["model_version"] == "1.0.0"
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
