"""Plug-in fitter factories for the fitting-hook tests (importable as ``fitting_plugins:...``)."""

from __future__ import annotations

from typing import Any

from tracking_algs.fitting import KalmanConfig, KalmanFitter
from tracking_algs.geometry import Detector


def strict_kalman(detector: Detector, options: dict[str, Any]) -> KalmanFitter:
    """A Kalman fitter with its own choice of options, the way a third-party factory would build one."""
    return KalmanFitter(detector, KalmanConfig(**options))


def not_a_fitter(detector: Detector, options: dict[str, Any]) -> dict[str, Any]:
    """Returns something that cannot fit."""
    return {"detector": detector, **options}
