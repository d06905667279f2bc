"""Every command in the README's ```bash blocks runs as written in a fresh shell.

A fresh shell has no activated virtual environment, so a bare `fcnseg` is "command not found":
each command must name its executable as a path relative to the repository (`.venv/bin/fcnseg`,
found here in the bin folder of the interpreter running the tests, which is that venv after the
README's install line) or be one of the few system tools the set-up itself needs. Each `fcnseg`
command line (and the one torchrun runs with `-m fcnseg.cli`) must parse with the real parser,
and the recipe and weights files it names must exist; the cheap ones run for real.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fcnseg.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
#: Executables a fresh machine has before the README's first line (it creates the venv with them).
SYSTEM_TOOLS = {"python3", "bash"}
#: Arguments that name files shipped in the repository (they must exist as written).
SHIPPED_PREFIXES = ("configs/", "weights/")


def readme_commands(text: str) -> list[list[str]]:
    """The commands of the ```bash blocks as argument lists: continuation lines joined, comments
    dropped, `a && b` split into two commands."""
    commands: list[list[str]] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            command: list[str] = []
            for word in [*words, "&&"]:
                if word == "&&":
                    if command:
                        commands.append(command)
                    command = []
                else:
                    command.append(word)
    return commands


def _executable(word: str) -> Path | None:
    """Where `word` is found in a fresh shell after the install line; None when it is not."""
    if word.startswith(".venv/bin/"):
        path = VENV_BIN / word.removeprefix(".venv/bin/")
        return path if path.exists() else None
    if "/" in word:
        path = ROOT / word
        return path if path.exists() else None
    if word in SYSTEM_TOOLS:
        found = shutil.which(word)
        return Path(found) if found else None
    return None  # a bare name: found only inside an activated venv


def _fcnseg_arguments(command: list[str]) -> list[str] | None:
    """The arguments given to fcnseg's parser by `command`, or None when it runs something else."""
    if Path(command[0]).name == "fcnseg":
        return command[1:]
    if "-m" in command and command[command.index("-m") + 1] == "fcnseg.cli":
        return command[command.index("-m") + 2 :]
    return None


COMMANDS = readme_commands(README.read_text())


def test_readme_commands_are_found():
    # The set-up stays the exact two lines at the top.
    assert COMMANDS[0][:3] == ["python3", "-m", "venv"]
    assert ["bash", ".ci/run"] in COMMANDS[:5]
    assert len(COMMANDS) > 30
    assert sum(_fcnseg_arguments(c) is not None for c in COMMANDS) > 25


def test_readme_extraction_joins_continuations_and_splits_and():
    text = "```bash\na x && .venv/bin/fcnseg demo  # note\nb --flag \\\n    value\n```\n"
    assert readme_commands(text) == [
        ["a", "x"],
        [".venv/bin/fcnseg", "demo"],
        ["b", "--flag", "value"],
    ]
    assert _executable("fcnseg") is None  # bare: not found without activating the venv


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c)[:60])
def test_readme_command_runs_as_written(command):
    assert _executable(command[0]) is not None, (
        f"README: {command[0]!r} is not found in a fresh shell (write .venv/bin/{command[0]})"
    )
    arguments = _fcnseg_arguments(command)
    if arguments is None:
        return
    try:
        build_parser().parse_args(arguments)
    except SystemExit as stop:
        pytest.fail(f"README: `fcnseg {' '.join(arguments)}` does not parse (exit {stop.code})")
    for word in arguments:
        value = word.split("=", 1)[-1]
        if value.startswith(SHIPPED_PREFIXES):
            assert (ROOT / value).exists(), f"README names {value}, which is not in the repository"


CHEAP = [["--version"], ["--help"], ["models"]]


@pytest.mark.parametrize("arguments", CHEAP, ids=" ".join)
def test_readme_cheap_commands_run(arguments):
    if arguments != ["--version"]:  # the README states the version nowhere; the others it runs
        assert [".venv/bin/fcnseg", *arguments] in COMMANDS or arguments == ["--help"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "fcnseg.cli", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    if arguments == ["models"]:
        assert "fcn8s_efficientnet_lite0" in done.stdout
    if arguments == ["--version"]:
        assert done.stdout.startswith("fcnseg ")
