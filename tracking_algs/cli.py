"""The ``trkx`` command line: one sub-command per module in :mod:`tracking_algs.commands`.

Each command module exposes ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from inference_iface.errors import InferenceError
from tracking_algs.errors import TrackingError

#: Command modules, in the order ``trkx --help`` lists them.
COMMANDS: tuple[str, ...] = ("run", "simulate", "info", "infer", "repo", "serve", "train", "bench")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="trkx", description="GNN track finding on a generic inference interface.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMANDS:
        module = importlib.import_module(f"tracking_algs.commands.{module_name}")
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trkx`` console script; errors of the library become one line on stderr, exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (InferenceError, TrackingError) as error:
        print(f"trkx {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
