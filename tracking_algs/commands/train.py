"""``trkx train CONFIG.toml --output MODELDIR [--set k=v ...]``: train the finding models on simulated
events, export them to ONNX and write ``model_card.json`` with the held-out metrics.

Running it again on the same ``--output`` resumes from the checkpoints in ``MODELDIR/checkpoints``.
"""

from __future__ import annotations

import argparse
import json

from tracking_algs.commands.arg_types import existing_file, output_directory

NAME = "train"
HELP = "train the embedding, filter and GNN on simulated events and export them to ONNX with a model card"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``trkx train``."""
    parser.add_argument(
        "config", type=existing_file("training options file"), help="training options (TOML), e.g. configs/train.toml"
    )
    parser.add_argument(
        "--output", type=output_directory, required=True, help="model directory (resumed when it has checkpoints)"
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override an option"
    )


def run(args: argparse.Namespace) -> int:
    """Train, export, validate on held-out events; print the held-out metrics."""
    # torch is imported only when training runs, so the other commands start fast.
    from inference_iface.options import apply_overrides, load_toml, structure
    from tracking_algs.finding.training import TrainConfig, held_out_metrics, train

    data = apply_overrides(load_toml(args.config), args.overrides)
    config = structure(data, TrainConfig, where=str(args.config))
    card = train(config, args.output, validate=held_out_metrics)
    print(json.dumps(card.get("held_out_metrics", {}), indent=2))
    return 0
