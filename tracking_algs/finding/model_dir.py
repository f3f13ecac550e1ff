"""Where the finding models live: a trained model directory, or one of the sets shipped inside the package.

A model directory holds ``embedding.onnx``, ``filter.onnx``, ``gnn.onnx`` and ``model_card.json``
(training configuration, data seeds, recommended cuts and held-out metrics), as written by
``trkx train``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
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
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrackingError(f"model card {str(path)!r} does not exist (train with 'trkx train')") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TrackingError(f"model card {str(path)!r} is not valid JSON: {error}") from None
    except OSError as error:
        raise TrackingError(f"model card {str(path)!r} cannot be read ({error.strerror or error})") from None
    if not isinstance(card, dict):
        raise TrackingError(f"model card {str(path)!r} must hold a JSON object, got {type(card).__name__}")
    return card


def working_point(model_dir: str | Path, radius: float = 0.0, filter_cut: float = 0.0) -> tuple[float, float]:
    """The graph ``radius`` and the ``filter_cut``, each taken from the model card of ``model_dir`` where it is 0.

    Raises:
        TrackingError: a value taken from the card is missing or out of its range (a radius above 0, a cut from 0
            to below 1, as the options take them), naming the card and the key.
    """
    if radius and filter_cut:
        return radius, filter_cut
    card = load_model_card(model_dir)
    where = f"model card {str(resolve_model_dir(model_dir) / CARD_NAME)!r}"
    return (
        radius or _recommended(card, "radius", lambda value: value > 0.0, "a finite number above 0", where),
        filter_cut or _recommended(card, "filter_cut", lambda value: 0.0 <= value < 1.0, "a number from 0 to below 1",
                                   where),
    )  # fmt: skip


def _recommended(card: dict[str, Any], key: str, valid: Callable[[float], bool], expected: str, where: str) -> float:
    """The card's ``recommended[key]``, a float for which ``valid`` holds (``expected`` says which)."""
    try:
        value = card["recommended"][key]
    except (KeyError, TypeError):
        raise TrackingError(f"{where} has no recommended[{key!r}] value") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not valid(value):
        raise TrackingError(f"{where}: recommended[{key!r}] must be {expected}, got {value!r}")
    return float(value)
