"""`python -m simsvc` as an operator meets it: --help, bad values, and start-up failures."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from simsvc import __main__ as cli
from simsvc import backends

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


async def run_simsvc(*args: str, code: str | None = None) -> tuple[int, str]:
    """Run `python -m simsvc ARGS` (or `python -c CODE ARGS`) to its end: exit code, stderr."""
    command = ["-c", code, *args] if code else ["-m", "simsvc", *args]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, stderr = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, stderr.decode()


# The same start-up with the early check skipped: the bind inside aiohttp's run_app fails,
# as when another process takes the port between the check and the bind.
SKIPS_THE_EARLY_CHECK = textwrap.dedent(
    """
    import sys
    from simsvc import __main__

    __main__._check_can_listen = lambda host, port: None
    sys.exit(__main__.main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize(
    "code",
    [
        # python -m simsvc: refused before the database is opened.
        pytest.param(None, id="early-check"),
        # Refused by the bind itself, after start-up.
        pytest.param(SKIPS_THE_EARLY_CHECK, id="bind-in-run-app"),
    ],
)
async def test_a_port_in_use_is_one_line_and_a_failure(tmp_path: Path, code: str | None) -> None:
    db_path = tmp_path / "x.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exit_code, stderr = await run_simsvc(
            "--port", str(port), "--db", str(db_path), "--executor", "thread", code=code
        )
    assert exit_code == 1
    assert db_path.exists() is (code is not None)
    (line,) = stderr.splitlines()
    assert line.startswith(f"simsvc: port {port} is in use; try --port ")
    suggested = int(line.rsplit(" ", 1)[1])
    assert suggested > port
    # Nothing claimed the service was up: no URL was logged before the bind failed.
    assert "listening" not in stderr
    assert "dashboard" not in stderr


# A StartupError raised while the app starts (here by the database) must reach the operator
# as one line, through aiohttp's run_app and the app's clean-up.
RAISES_AT_STARTUP = textwrap.dedent(
    """
    import sys
    from simsvc import StartupError, __main__, db

    async def refuse(*args, **kwargs):
        raise StartupError("the database x.db was written by a newer simsvc")

    db.Database.open = refuse
    sys.exit(__main__.main(sys.argv[1:]))
    """
)


async def test_a_startup_error_is_one_line_on_stderr_and_exit_1() -> None:
    code, stderr = await run_simsvc(
        "--port", str(free_port()), "--executor", "thread", code=RAISES_AT_STARTUP
    )
    assert (code, stderr) == (1, "simsvc: the database x.db was written by a newer simsvc\n")


@pytest.mark.parametrize(
    ("variable", "value", "flag"),
    [
        ("SIMSVC_PORT", "xyz", "--port"),  # not a number
        ("SIMSVC_PORT", "70000", "--port"),  # past the last port
        ("SIMSVC_WORKERS", "0", "--workers"),  # a pool needs at least one worker
        ("SIMSVC_WORKERS", "many", "--workers"),
        ("SIMSVC_EXECUTOR", "gpu", "--executor"),  # not an executor
        ("SIMSVC_LOG_LEVEL", "loud", "--log-level"),  # not a logging level
    ],
)
def test_a_bad_environment_value_is_refused_like_a_bad_flag(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    variable: str,
    value: str,
    flag: str,
) -> None:
    with pytest.raises(SystemExit) as from_flag:
        cli.parse_args([flag, value])
    flag_error = capsys.readouterr().err.splitlines()[-1]
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as from_environment:
        cli.parse_args([])
    environment_error = capsys.readouterr().err.splitlines()[-1]
    assert from_flag.value.code == from_environment.value.code == 2
    assert environment_error.startswith(f"python -m simsvc: error: environment variable {variable}")
    # The same reason, whichever way the value came in.
    assert environment_error.split(": ", 3)[-1] == flag_error.split(": ", 3)[-1]
    assert repr(value) in environment_error


def test_a_valid_environment_value_is_used_and_a_flag_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SIMSVC_WORKERS", "3")
    monkeypatch.setenv("SIMSVC_LOG_LEVEL", "debug")
    args = cli.parse_args([])
    assert (args.workers, args.log_level) == (3, "DEBUG")
    assert cli.parse_args(["--workers", "7"]).workers == 7


def test_help_gives_every_flag_a_description_and_its_default() -> None:
    parser = cli.build_parser()
    assert parser.description
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, action.dest
            assert "default: " in action.help, action.dest


def test_help_does_not_show_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMSVC_TOKEN", "s3cret-token")
    assert "s3cret-token" not in cli.build_parser().format_help()


def test_help_imports_no_heavy_module() -> None:
    # What makes --help fast: aiohttp, NumPy and SciPy load only when the service starts.
    probe = (
        "import sys, contextlib, io\n"
        "from simsvc.__main__ import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in ('aiohttp', 'numpy', 'scipy') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_command_line_knows_every_pool_executor() -> None:
    assert cli.POOL_EXECUTORS == backends.POOL_EXECUTORS
