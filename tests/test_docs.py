"""The commands the README and docs/ tell a user to type work as written."""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest
from distributed.cli import dask_scheduler, dask_worker

from simsvc import cli
from simsvc.__main__ import parse_args

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A command line in a page: indented or after a `$ ` prompt, possibly after `&&`.
# Environment settings and `nice` before it are not part of the command.
COMMAND = re.compile(
    r"^(?:\s{4,}|\$ )(?:.*&& )?(?:[A-Z_]+=\S+ )*(?:nice -n \d+ )?(?P<cmd>(?:pip|python|dask) .*)$",
    re.M,
)


def commands(program: str) -> list[tuple[str, list[str]]]:
    """Every documented command line that starts with `program`, as (page, argv)."""
    found = []
    for page in PAGES:
        for match in COMMAND.finditer(page.read_text(encoding="utf-8")):
            line = match["cmd"].split(" #", 1)[0].split(" && ")[0]
            argv, words = shlex.split(line), program.split()
            if argv[: len(words)] == words:
                found.append((page.name, argv))
    return found


def extras() -> set[str]:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg", encoding="utf-8")
    return set(setup["options.extras_require"])


def test_every_documented_install_of_simsvc_is_from_the_source_tree() -> None:
    # simsvc is not on PyPI: `pip install simsvc[dask]` finds nothing.
    installs = commands("pip install")
    assert installs, "no pip install command found in the docs"
    for page, argv in installs:
        for arg in argv[2:]:
            if arg.startswith("-") or ("simsvc" not in arg and not arg.startswith(".")):
                continue
            target, _, extra = arg.partition("[")
            assert target.startswith((".", "dist/")), f"{page}: {arg} is not a local path"
            assert extra.rstrip("]") in extras() | {""}, f"{page}: no extra {extra} in {arg}"


def test_the_documented_dask_install_resolves_from_the_checkout() -> None:
    # Verbatim but for pip's offline flags: the extra exists and its requirements resolve.
    assert ["pip", "install", ".[dask]"] in [argv for _, argv in commands("pip install")]
    done = subprocess.run(
        [*PIP, "install", ".[dask]", "--dry-run", "--no-index", "--no-build-isolation"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, done.stderr
    assert "does not provide the extra" not in done.stdout + done.stderr


@pytest.mark.parametrize(("page", "argv"), commands("python -m simsvc"))
def test_documented_service_command_lines_parse(page: str, argv: list[str]) -> None:
    # argparse exits on a flag it does not know
    words = argv[3:]
    if words[:1] and words[0] in cli.CLIENT_COMMANDS:
        cli.build_parser().parse_args(words)
    else:
        parse_args(words[1:] if words[:1] == ["serve"] else words)


def test_documented_dask_command_lines_use_real_flags() -> None:
    clis = {"scheduler": dask_scheduler.main, "worker": dask_worker.main}
    documented = commands("dask scheduler") + commands("dask worker")
    assert len(documented) >= 3  # scheduler, worker, and the worker beside the service
    for page, argv in documented:
        command = clis[argv[1]]
        usage = command.get_help(click.Context(command))
        for flag in (a for a in argv[2:] if a.startswith("--")):
            assert flag in usage, f"{page}: dask {argv[1]} has no {flag}"
