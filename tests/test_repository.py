"""The repository on its own: CI runs the README's test command at pinned versions."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

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
    # pytest's own exit code (5 when nothing was collected) is the script's exit code.
    assert script[-1].startswith('"$PYTHON" -m pytest')


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
