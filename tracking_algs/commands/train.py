"""``trkx train CONFIG.toml --output MODELDIR [--set k=v ...]``: train the finding models on simulated
events, export them to ONNX and write ``model_card.json`` with the held-out metrics.

Running it again on the same ``--output`` resumes from the checkpoints in ``MODELDIR/checkpoints``; Ctrl-C or
SIGTERM stops it with status 3, the checkpoints kept whole.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference_iface.errors import ConfigError
from tracking_algs.commands.arg_types import existing_file, output_directory
from tracking_algs.commands.interrupts import EXIT_STOPPED, terminate_as_interrupt
from tracking_algs.errors import TrackingError

if TYPE_CHECKING:
    from tracking_algs.finding.training import TrainConfig

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
    from inference_iface.options import load_toml, structure, with_overrides
    from tracking_algs.finding.training import TrainConfig, has_checkpoints, train

    def build(data: dict[str, Any], where: str) -> TrainConfig:
        """The options, their field map read (before the output directory is made), a fault blamed on ``where``."""
        config = structure(data, TrainConfig, where=where)
        try:
            config.data.magnetic_field()
        except TrackingError as error:
            raise ConfigError(f"{where}: [data.field]: {error}") from None
        return config

    config = with_overrides(load_toml(args.config), args.overrides, build, where=str(args.config))
    refuse_models_without_checkpoints(args.output)
    with terminate_as_interrupt():
        try:
            card = train(config, args.output, validate=held_out_metrics)
        except KeyboardInterrupt:
            checkpoints = args.output / "checkpoints"
            kept = (f"the checkpoints are kept in {checkpoints}; the same command resumes from them"
                    if has_checkpoints(checkpoints) else "before its first checkpoint; a training into the same "
                    "--output starts from step 0, with its own options")  # fmt: skip
            print(f"trkx train: stopped early: interrupted; {kept}", file=sys.stderr)
            return EXIT_STOPPED
    print(json.dumps(card.get("held_out_metrics", {}), indent=2))
    return 0


def refuse_models_without_checkpoints(output: Path) -> None:
    """A ``--output`` that holds models but no ``checkpoints/`` was not written by a training that can be resumed
    (the shipped models, a copy, models whose checkpoints were removed): training would replace its models, so it is
    refused (:class:`ConfigError`, nothing written)."""
    from tracking_algs.finding.model_dir import CARD_NAME, STAGES

    if (output / "checkpoints").exists():
        return
    models = [name for name in (CARD_NAME, *(f"{stage}.onnx" for stage in STAGES)) if (output / name).exists()]
    if models:
        raise ConfigError(
            f"--output {output} holds models ({', '.join(models)}) but no checkpoints/ to resume from; training "
            "would replace them: choose another --output, or remove them"
        )


def held_out_metrics(model_dir: Path, config: TrainConfig) -> dict[str, Any]:
    """Figures of the exported models (every stage on ONNX Runtime, default working point) on the validation events,
    at each of ``validation_pileups``."""
    from tracking_algs.finding.config import FindingConfig
    from tracking_algs.finding.training import VALIDATION_SEED_MIN, simulated_events
    from tracking_algs.finding.validation import evaluate, without_matches
    from tracking_algs.job_options import local_finder

    assert config.data.validation_seed >= VALIDATION_SEED_MIN > config.data.train_seed
    metrics = {}
    with local_finder(FindingConfig(model_dir=str(model_dir))) as finder:
        for pileup in config.data.validation_pileups:
            simulations = [config.data.validation_simulation(pileup)] * config.data.validation_events
            events = simulated_events(config.data.validation_seed, simulations, config.data.magnetic_field())
            summary = without_matches(evaluate(finder, events))
            metrics[f"pileup_{pileup:g}"] = {"seed": config.data.validation_seed, **summary}
    return metrics
