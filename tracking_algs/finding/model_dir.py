"""Where the finding models live: a trained model directory, or one of the sets shipped inside the package.

A model directory holds ``embedding.onnx``, ``filter.onnx``, ``gnn.onnx`` and ``model_card.json``
(training configuration, data seeds, recommended cuts and held-out metrics), as written by
``trkx train``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tracking_algs.errors import TrackingError

#: The models trained for this package and shipped inside it (on the default, cylinder simulation).
SHIPPED_DIR = Path(__file__).parent / "shipped"
#: The shipped models trained on the simulation of the TrackML modules in the solenoid field, named
#: ``model_dir = "shipped:modules"`` (their model card holds the training settings).
SHIPPED_MODULES_DIR = Path(__file__).parent / "shipped_modules"
#: The names of the shipped sets a ``model_dir`` may give instead of a directory.
SHIPPED_SETS = {"": SHIPPED_DIR, "shipped:modules": SHIPPED_MODULES_DIR}

#: The neural stages, in pipeline order; each has ``<stage>.onnx`` in a model directory.
STAGES: tuple[str, ...] = ("embedding", "filter", "gnn")

CARD_NAME = "model_card.json"


def resolve_model_dir(model_dir: str | Path = "") -> Path:
    """The directory of a shipped set (:data:`SHIPPED_SETS`: empty for the default models,
    ``"shipped:modules"``), or ``model_dir`` itself."""
    return SHIPPED_SETS.get(str(model_dir), Path(model_dir))


def model_path(model_dir: str | Path, stage: str) -> Path:
    """The ONNX file of ``stage`` in ``model_dir`` (empty: the shipped models)."""
    if stage not in STAGES:
        raise TrackingError(f"unknown finding stage {stage!r}; expected one of {', '.join(STAGES)}")
    return resolve_model_dir(model_dir) / f"{stage}.onnx"


def load_model_card(model_dir: str | Path = "") -> dict[str, Any]:
    """The model card of ``model_dir`` (empty: the shipped models)."""
    path = resolve_model_dir(model_dir) / CARD_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TrackingError(f"model card {str(path)!r} does not exist (train with 'trkx train')") from None
    except json.JSONDecodeError as error:
        raise TrackingError(f"model card {str(path)!r} is not valid JSON: {error}") from None


def recommended(card: dict[str, Any], key: str) -> float:
    """A recommended working point (``radius``, ``filter_cut``) from a model card."""
    try:
        return float(card["recommended"][key])
    except (KeyError, TypeError, ValueError):
        raise TrackingError(f"model card has no recommended[{key!r}] value") from None
