"""``trkx repo add-onnx MODEL.onnx --name N --repository DIR [--instances K] [--flavour python|onnxruntime]``.

Writes a standard Triton model directory whose ``config.pbtxt`` is generated from the ONNX signature
(see :mod:`backends.model_repository`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "repo"
HELP = "manage Triton model repositories (add-onnx: a model directory for an ONNX file)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trkx repo``."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add-onnx", help="write REPOSITORY/NAME serving an ONNX file")
    add.add_argument("model", type=Path, help="the .onnx file")
    add.add_argument("--name", required=True, help="model name in the repository")
    add.add_argument("--repository", type=Path, required=True, help="model repository directory (created if needed)")
    add.add_argument("--instances", type=int, default=1, help="model instances (default: %(default)s)")
    add.add_argument(
        "--flavour",
        choices=("python", "onnxruntime"),
        default="python",
        help="python: Python backend running onnxruntime (embedded server); onnxruntime: platform onnxruntime_onnx "
        "(full Triton server). Default: %(default)s",
    )
    add.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="instance kind (default: %(default)s)")
    add.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads per instance (0: auto)")
    add.add_argument("--version", type=int, default=1, help="model version directory (default: %(default)s)")
    add.add_argument("--force", action="store_true", help="replace an existing model directory")


def run(args: argparse.Namespace) -> int:
    """Write the model directory and print its path."""
    from backends.model_repository import add_onnx_model

    model_dir = add_onnx_model(
        args.model,
        args.repository,
        args.name,
        flavour=args.flavour,
        instances=args.instances,
        instance_kind=args.kind,
        version=args.version,
        intra_op_threads=args.threads,
        overwrite=args.force,
    )
    print(model_dir)
    return 0
