"""The ``trkx`` command line: one sub-command per module in :mod:`tracking_algs.commands`.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``; it may
also expose ``EPILOG`` (text shown at the end of its ``--help``).

Errors never reach the user as a traceback: a bad argument, a library error (:class:`InferenceError`,
:class:`TrackingError`) or a file the system refuses (:class:`OSError`) becomes one line
``trkx COMMAND: error: ...`` on stderr and exit status 2; Ctrl-C one line ``trkx COMMAND: stopped early: ...`` and
exit status 3.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

from inference_iface.errors import InferenceError
from tracking_algs.commands.interrupts import EXIT_STOPPED
from tracking_algs.errors import TrackingError, os_error_text

#: Command modules, in the order ``trkx --help`` lists them.
COMMANDS: tuple[str, ...] = ("run", "simulate", "info", "infer", "repo", "serve", "train", "bench")
#: The distribution that installs ``trkx``.
DISTRIBUTION = "inference-iface"
#: Exit status of a bad argument, option or input (also argparse's).
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as the one line ``PROG: error: MESSAGE`` (the usage is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the command and the problem, and exit with status 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def package_version() -> str:
    """The installed version of ``trkx`` (``unknown`` when the package is not installed, e.g. run from a bare
    source tree)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = _Parser(prog="trkx", description="GNN track finding on a generic inference interface.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        module = importlib.import_module(f"tracking_algs.commands.{module_name}")
        sub = subparsers.add_parser(
            module.NAME,
            help=module.HELP,
            description=module.HELP,
            epilog=getattr(module, "EPILOG", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trkx`` console script; returns the exit status.

    Bad arguments (argparse), errors of the library and refused file operations become one line on stderr
    and status 2, Ctrl-C and running out of memory one line and status 3; ``--help`` and ``--version`` return 0.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # argparse: --help, --version, or a bad argument (already reported)
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else EXIT_USAGE)
    command = " ".join(filter(None, (args.command, getattr(args, "action", None))))  # "repo add-onnx", as argparse
    try:
        return int(args.handler(args) or 0)
    except (InferenceError, TrackingError) as error:
        print(f"trkx {command}: error: {error}", file=sys.stderr)
    except OSError as error:
        print(f"trkx {command}: error: {os_error_text(error)}", file=sys.stderr)
    except KeyboardInterrupt:  # Ctrl-C where the command has nothing to add (run, simulate and train say what is kept)
        print(f"trkx {command}: stopped early: interrupted", file=sys.stderr)
        return EXIT_STOPPED
    except MemoryError as error:  # values within their bounds, but more than this machine holds
        print(f"trkx {command}: stopped early: out of memory ({error or 'an allocation failed'}); files written whole "
              "are kept; ask for less (fewer particles, hits or events at a time) or use a machine with more memory",
              file=sys.stderr)  # fmt: skip
        return EXIT_STOPPED
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
