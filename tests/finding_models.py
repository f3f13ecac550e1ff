"""Finding model directories for tests and benchmarks: the shipped models when the package has them,
otherwise the three networks untrained (fixed torch seed) and exported with the project's exporter.

Untrained networks are real ONNX models of the right signatures; they serve comparisons (local vs served
give the same labels) and timings of the chain's plumbing, not physics.
"""

from __future__ import annotations

import json
from pathlib import Path

from tracking_algs.finding.model_dir import CARD_NAME, SHIPPED_DIR, STAGES

#: The untrained models' working point: radius and filter cut that give them a sparse graph.
UNTRAINED_WORKING_POINT = {"radius": 0.07, "filter_cut": 0.5, "gnn_cut": 0.5}


def has_shipped_models() -> bool:
    """Whether the package holds the shipped ONNX files and model card."""
    return all((SHIPPED_DIR / name).is_file() for name in [f"{stage}.onnx" for stage in STAGES] + [CARD_NAME])


def untrained_model_dir(path: Path) -> Path:
    """Write the three untrained networks and a model card into ``path``; returns ``path``."""
    import torch

    from tracking_algs.finding.export import export_onnx
    from tracking_algs.finding.features import FEATURE_NAMES
    from tracking_algs.finding.models import EmbeddingNet, FilterNet, InteractionGNN

    torch.manual_seed(0)
    n_features = len(FEATURE_NAMES)
    models = (EmbeddingNet(n_features), FilterNet(n_features, 8), InteractionGNN(n_features))
    path.mkdir(parents=True, exist_ok=True)
    for name, model in zip(STAGES, models, strict=True):
        export_onnx(name, model, path / f"{name}.onnx")
    card = {"note": "untrained, for tests and benchmarks", "recommended": UNTRAINED_WORKING_POINT}
    (path / CARD_NAME).write_text(json.dumps(card))
    return path


def finding_model_dir(scratch: Path) -> Path:
    """The shipped model directory, or untrained models written into ``scratch``."""
    return SHIPPED_DIR if has_shipped_models() else untrained_model_dir(scratch)
