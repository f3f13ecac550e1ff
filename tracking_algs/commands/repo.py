"""``trkx repo add-onnx`` and ``trkx repo add-tracking``: write Triton model repositories.

``add-onnx MODEL.onnx --name N --repository DIR [--instances K] [--flavour python|onnxruntime]`` writes a
standard Triton model directory whose ``config.pbtxt`` is generated from the ONNX signature (see
:mod:`backends.model_repository`).

``add-tracking --repository DIR [--config JOB.toml] [--set K=V] [--model-dir MD]
[--serving models|ensemble|chain|all] [--flavour F] [--instances K]`` writes the tracking chain's models:
each neural model on its own, the chain as a Triton ensemble, and/or the whole chain as one Python-backend
model (see :mod:`tracking_algs.serving.repository`), configured by the job options' ``[finding]`` table.
"""

from __future__ import annotations

import argparse

from tracking_algs.commands.arg_types import existing_file, non_negative_int, output_directory, positive_int

NAME = "repo"
HELP = "manage Triton model repositories (add-onnx: one ONNX model; add-tracking: the tracking chain)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trkx repo``."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add-onnx", help="write REPOSITORY/NAME serving an ONNX file")
    add.add_argument("model", type=existing_file("ONNX model"), help="the .onnx file")
    add.add_argument("--name", required=True, help="model name in the repository")
    add.add_argument(
        "--repository", type=output_directory, required=True, help="model repository directory (created if needed)"
    )
    add.add_argument("--instances", type=positive_int, default=1, help="model instances, ≥ 1 (default: %(default)s)")
    add.add_argument(
        "--flavour",
        choices=("python", "onnxruntime"),
        default="python",
        help="python: Python backend running onnxruntime (embedded server); onnxruntime: platform onnxruntime_onnx "
        "(full Triton server). Default: %(default)s",
    )
    add.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="instance kind (default: %(default)s)")
    add.add_argument(
        "--threads", type=non_negative_int, default=0, help="ONNX Runtime intra-op threads per instance (0: auto)"
    )
    add.add_argument(
        "--version", type=positive_int, default=1, help="model version directory, ≥ 1 (default: %(default)s)"
    )
    add.add_argument("--force", action="store_true", help="replace an existing model directory")

    tracking = actions.add_parser("add-tracking", help="write the tracking chain's models into REPOSITORY")
    tracking.add_argument("--repository", type=output_directory, required=True, help="model repository directory")
    tracking.add_argument(
        "--config",
        type=existing_file("job options file"),
        help="job options whose [finding] table the served chain uses (default: the defaults)",
    )
    tracking.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a job option"
    )
    tracking.add_argument("--model-dir", help="trained model directory (default: [finding] model_dir or the shipped)")
    tracking.add_argument(
        "--serving",
        choices=("models", "ensemble", "chain", "all"),
        default="all",
        help="models: embedding, filter, gnn on their own; ensemble: tracking_ensemble (Triton ensemble); "
        "chain: tracking_chain (one Python-backend model); all: every one (default: %(default)s)",
    )
    tracking.add_argument(
        "--flavour",
        choices=("python", "onnxruntime"),
        default="python",
        help="how the neural models are served (as for add-onnx; default: %(default)s)",
    )
    tracking.add_argument(
        "--instances", type=positive_int, default=1, help="instances of every model, ≥ 1 (default: %(default)s)"
    )
    tracking.add_argument("--kind", choices=("cpu", "gpu"), default="cpu", help="instance kind (default: %(default)s)")
    tracking.add_argument(
        "--threads", type=non_negative_int, default=0, help="ONNX Runtime intra-op threads per instance (0: auto)"
    )
    tracking.add_argument("--force", action="store_true", help="replace existing model directories")


def run(args: argparse.Namespace) -> int:
    """Write the model directory (or directories) and print the path(s)."""
    if args.action == "add-tracking":
        return _add_tracking(args)
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


def _add_tracking(args: argparse.Namespace) -> int:
    import attrs

    from tracking_algs.job_options import load_job_options
    from tracking_algs.serving.repository import TrackingRepositoryOptions, add_tracking

    finding = load_job_options(args.config, args.overrides).finding
    if args.model_dir is not None:
        finding = attrs.evolve(finding, model_dir=args.model_dir)
    options = TrackingRepositoryOptions(
        serving=args.serving,
        flavour=args.flavour,
        instances=args.instances,
        instance_kind=args.kind,
        intra_op_threads=args.threads,
        finding=finding,
        overwrite=args.force,
    )
    for model_dir in add_tracking(args.repository, options):
        print(model_dir)
    return 0
