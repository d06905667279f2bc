"""`fcnseg --help`, `fcnseg CMD --help` and usage errors answer without importing torch.

Why a test: the parser once took its choices from the modules that implement them, and the
package `__init__` imported the model registry, so every answer paid for torch and torchvision
(seconds; tens of seconds on a loaded machine). One careless top-level import brings that back,
and only a fresh interpreter shows it: each case runs `python -m fcnseg.cli ...` in its own
process and reports which heavy modules it ended up with.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fcnseg
from fcnseg.choices import INFERENCE_MODES, RUNTIME_CHOICES
from fcnseg.cli import COMMANDS, build_parser

#: Modules that cost seconds (or pull those that do) and that no parsing may import.
HEAVY = ("torch", "torchvision", "numpy", "PIL", "yaml", "matplotlib", "onnxruntime", "timm")

#: Runs the command line as the console script does, then reports the exit status and the
#: heavy modules loaded, as one JSON line on stderr (stdout belongs to argparse).
PROBE = """
import json, runpy, sys
watched = json.loads(sys.argv[2])
sys.argv = ["fcnseg", *json.loads(sys.argv[1])]
code = 0
try:
    runpy.run_module("fcnseg.cli", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
heavy = sorted(name for name in watched if name in sys.modules)
sys.stderr.write("\\nPROBE " + json.dumps({"code": code, "heavy": heavy}) + "\\n")
"""


def _probe(*argv: str) -> dict:
    """Exit status and heavy modules of `fcnseg ARGV` in a fresh interpreter."""
    source = str(Path(fcnseg.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(argv)), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("PROBE "), done.stderr
    return json.loads(last.removeprefix("PROBE "))


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        *[[name, "--help"] for name in COMMANDS],
        ["data", "check", "--help"],
        [],  # no command: a usage error
        ["evaluate"],  # unknown command
        ["eval", "--weights", "w.safetensors", "--engine", "tensorrt"],  # bad choice
        ["predict", "x.png"],  # required model source missing
        ["export", "--run", "r", "--to", "onnx"],  # --out missing
    ],
    ids=lambda argv: " ".join(argv) or "(nothing)",
)
def test_help_and_usage_errors_import_no_torch(argv):
    result = _probe(*argv)
    assert result["code"] == (0 if "--help" in argv else 2)
    assert result["heavy"] == []


def test_the_probe_sees_what_a_command_imports():
    # The check above must be able to fail: running a command imports its library code, and the
    # probe reports it (yaml here: the option parser of import-caffe refuses before any torch).
    result = _probe("import-caffe", "x.caffemodel", "--model", "m", "--out", "o", "--options", "x")
    assert result["code"] == 2 and result["heavy"] == ["yaml"]


def test_import_fcnseg_is_light_and_still_exports_the_registry():
    source = str(Path(fcnseg.__file__).resolve().parent.parent)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, fcnseg; print(sorted(set(sys.argv[1:]) & set(sys.modules)))",
            *HEAVY,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": source},
        timeout=300,
        check=True,
    )
    assert done.stdout.strip() == "[]"
    from fcnseg import models

    assert fcnseg.build_model is models.build_model
    assert fcnseg.list_models is models.list_models
    assert fcnseg.model_info is models.model_info
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        fcnseg.nothing  # noqa: B018
    assert {"build_model", "list_models", "model_info"} <= set(dir(fcnseg))


def _choices(command: str, flag: str) -> tuple[str, ...] | None:
    subparsers = build_parser()._subparsers._group_actions[0]
    actions = subparsers.choices[command]._actions
    return next(action.choices for action in actions if flag in action.option_strings)


def test_choices_come_from_the_one_vocabulary():
    for command in ("eval", "predict", "serve"):
        assert _choices(command, "--engine") is RUNTIME_CHOICES
        assert _choices(command, "--mode") is INFERENCE_MODES


def test_version_prints_the_package_version_without_torch():
    import subprocess
    import sys

    from fcnseg.version import __version__

    code = (
        "import sys\nfrom fcnseg.cli import main\ntry:\n    main(['--version'])\n"
        "except SystemExit:\n    pass\nprint('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [f"fcnseg {__version__}", "False"]
