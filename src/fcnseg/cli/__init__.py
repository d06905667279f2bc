"""The `fcnseg` command: train, eval, predict, models, data check, export, import-caffe, bench,
demo, serve, report, crf-search.

One module per command, each with `add_parser(subparsers)` and `run(args) -> int`: it parses,
calls the library, prints. Why the parser imports nothing heavy: `fcnseg --help`, `fcnseg CMD
--help` and a mistyped flag must answer at once, so only argparse, `fcnseg.choices` and
`fcnseg.errors` are imported here; each command imports its library code (torch with it) in `run`.

Every command turns bad input (unknown model, missing data, wrong class count, invalid recipe or
override) into one line on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from fcnseg.cli import (
    bench,
    crf_search,
    data,
    demo,
    eval,
    export,
    import_caffe,
    models,
    predict,
    report,
    serve,
    train,
)
from fcnseg.cli.messages import describe_os_error, error_line
from fcnseg.errors import FcnsegError
from fcnseg.version import __version__

__all__ = ["EXIT_BAD_INPUT", "build_parser", "describe_os_error", "main"]

#: Exit status for bad input (argparse uses the same for usage errors).
EXIT_BAD_INPUT = 2

#: Command name -> its module, in the order `fcnseg --help` lists them.
COMMANDS: dict[str, ModuleType] = {
    "train": train,
    "eval": eval,
    "predict": predict,
    "models": models,
    "data": data,
    "export": export,
    "import-caffe": import_caffe,
    "bench": bench,
    "demo": demo,
    "serve": serve,
    "report": report,
    "crf-search": crf_search,
}


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; builds without importing torch (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="fcnseg", description="Fully Convolutional Networks for semantic segmentation."
    )
    parser.add_argument("--version", action="version", version=f"fcnseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 0 on success, 1 when some inputs failed, 2 on bad input.

    The error model (fcnseg.errors): an `FcnsegError` is the user's to fix and the filesystem
    failing (missing, read-only, full) is the machine's; both become one line on stderr with exit
    status 2. Anything else is a bug in fcnseg and keeps its traceback.
    """
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], int] = COMMANDS[args.command].run
    try:
        return run(args)
    except FcnsegError as error:
        print(error_line(args.command, error), file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as error:
        print(error_line(args.command, error), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("fcnseg: interrupted", file=sys.stderr)
        return 130


def entry() -> None:  # pragma: no cover - console-script shim
    sys.exit(main())
