"""The client's commands as a shell runs them: `python -m simsvc run` against `python -m simsvc`."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import aiohttp

from .test_process import ROOT, running_service

DOC = ROOT / "docs" / "client.md"
CONSOLE = re.compile(r"```console\n\$ (.*?)\n(.*?)```\n", re.DOTALL)
LIMIT_S = 60.0


async def simsvc(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of `python -m simsvc ARGS`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simsvc",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    async with asyncio.timeout(LIMIT_S):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8"), err.decode("utf-8")


async def test_run_command_prints_what_the_docs_show(tmp_path: Path) -> None:
    command, shown = CONSOLE.findall(DOC.read_text(encoding="utf-8"))[0]
    argv = command.split()[3:]  # after "python -m simsvc"
    async with (
        aiohttp.ClientSession() as session,
        running_service(tmp_path, session, "--executor", "thread") as service,
    ):
        status, out, err = await simsvc(*argv, env={"SIMSVC_URL": service.url})
    assert status == 0, err
    # The notes (stderr) come first on a terminal; the rows are stdout.
    notes = [line for line in shown.splitlines() if not line.startswith(("scenario_id", "-", " "))]
    assert err.splitlines() == notes
    assert out == "".join(line + "\n" for line in shown.splitlines() if line not in notes)


async def test_unreachable_service_is_one_line_and_exit_1() -> None:
    status, out, err = await simsvc("results", "--url", "http://127.0.0.1:9")
    assert (status, out) == (1, "")
    assert err.startswith("simsvc results: the simsvc service is unreachable at http://127.0.0.1:9")
    assert len(err.splitlines()) == 1


async def test_client_commands_import_nothing_of_the_service_for_help() -> None:
    for command in ("run", "results", "experiment"):
        status, out, err = await simsvc(command, "--help", env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert status == 0
        assert "--url" in out or "ACTION" in out
        imported = {line.split("|")[-1].strip() for line in err.splitlines()}
        heavy = {m for m in imported if m.split(".")[0] in ("aiohttp", "numpy", "scipy")}
        assert not heavy, heavy
        assert not {m for m in imported if m.startswith("simsvc.") and m != "simsvc.cli"}


SCRIPT = """
import sys
from simsvc.client import Client

client = Client(sys.argv[1])  # never closed: the interpreter's exit must not hang or warn
run = client.run(scenario_ids=[1, 2], replications=5, seed=3)
run.wait(timeout=60)
print(run.status, len(run.results()))
"""


async def test_a_plain_script_that_never_closes_its_client_exits_cleanly(
    tmp_path: Path,
) -> None:
    script = tmp_path / "analysis.py"
    script.write_text(SCRIPT, encoding="utf-8")
    async with (
        aiohttp.ClientSession() as session,
        running_service(tmp_path, session, "--executor", "thread") as service,
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-X",
            "dev",  # shows unclosed sessions and sockets as warnings
            str(script),
            service.url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(LIMIT_S):
            out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode() == "completed 10\n"
    assert err.decode() == ""
