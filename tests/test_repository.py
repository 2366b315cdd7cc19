"""The repository on its own: CI runs the README's test command at pinned versions."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """The normalised project name of a requirement such as `pytest>=8.3,<9.2`."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _commands(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"\n\n((?:    .+\n)+)", section)
    test_command = next(b.strip() for b in blocks if "test" in b)
    ci = _commands(ROOT / ".ci" / "run")
    assert ci[-1] == test_command
    assert all(line.startswith(("set ", "cd ")) for line in ci[:-1]), ci


def test_the_test_command_installs_the_pinned_set_and_fails_on_no_tests() -> None:
    script = _commands(ROOT / "scripts" / "test")
    assert "set -euo pipefail" in script
    installs = [line for line in script if "pip install" in line]
    assert installs
    assert all("-c constraints/test.txt" in line for line in installs), installs


@pytest.mark.skipif(os.name == "nt", reason="scripts/test is a bash script")
@pytest.mark.parametrize(("pytest_exit", "script_exit"), [(0, 0), (1, 1), (5, 5)])
def test_the_test_command_ends_with_pytest_exit_code(
    tmp_path: Path, pytest_exit: int, script_exit: int
) -> None:
    # A stand-in python: pip, ruff and mypy succeed; pytest exits as asked (5: no tests).
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\n[ "$2" = pytest ] && exit {pytest_exit}\nexit 0\n')
    fake.chmod(0o755)
    (tmp_path / "chromium").symlink_to(fake)  # so that the script installs no browser
    env = {**os.environ, "PYTHON": str(fake), "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "test")], env=env, capture_output=True, check=False
    )
    assert done.returncode == script_exit, done.stdout.decode() + done.stderr.decode()


def test_every_dependency_is_pinned_for_the_tests() -> None:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg", encoding="utf-8")
    wanted = setup["options"]["install_requires"].splitlines()
    for extra in ("test", "bench", "dask"):
        wanted += setup["options.extras_require"][extra].splitlines()
    names = {_name(r) for r in wanted if r.strip() and not r.strip().startswith("#")}
    pinned = {
        _name(line.split("==")[0])
        for line in _commands(ROOT / "constraints" / "test.txt")
        if "==" in line
    }
    assert names - pinned == set()
