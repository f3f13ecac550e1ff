"""Plug-in fitter factories for the fitting-hook tests (importable as ``fitting_plugins:...``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np

from tracking_algs.event import Spacepoints, TrackCandidates
from tracking_algs.fitting import KalmanConfig, KalmanFitter
from tracking_algs.geometry import Detector


def strict_kalman(detector: Detector, options: dict[str, Any]) -> KalmanFitter:
    """A Kalman fitter with its own choice of options, the way a third-party factory would build one."""
    return KalmanFitter(detector, KalmanConfig(**options))


def not_a_fitter(detector: Detector, options: dict[str, Any]) -> dict[str, Any]:
    """Returns something that cannot fit."""
    return {"detector": detector, **options}


class _Spoiling:
    """A Kalman fitter whose ``fit`` spoils its results the way ``spoil`` says (a plug-in's mistakes)."""

    def __init__(self, detector: Detector, spoil: str, fail_while: str) -> None:
        self.kalman = KalmanFitter(detector, KalmanConfig())
        self.spoil = spoil
        self.fail_while = Path(fail_while) if fail_while else None
        self.calls = 0

    def fit(self, spacepoints: Spacepoints, candidates: TrackCandidates) -> Any:
        self.calls += 1
        if self.fail_while is not None and self.fail_while.exists() and self.calls == 1:
            raise RuntimeError("the fitter's first call fails")
        if self.spoil == "mutate":
            candidates.labels[:] = -1
        fit = self.kalman.fit(spacepoints, candidates)
        first = np.arange(len(fit)) == 0
        match self.spoil:
            case "none":
                return None
            case "one_short":
                return fit.tracks(np.arange(len(fit) - 1))
            case "nan_params":
                return attrs.evolve(fit, params=np.where(first[:, None], np.nan, fit.params))
            case "negative_ndf":
                return attrs.evolve(fit, ndf=-fit.ndf - 1)
            case "unknown_status":
                return attrs.evolve(fit, status=np.where(first, 9, fit.status))
            case "not_positive_definite":
                cov = fit.cov.copy()  # a correlation of 2 between d0 and z0
                cov[fit.ok, 0, 1] = cov[fit.ok, 1, 0] = 2 * np.sqrt(fit.cov[fit.ok, 0, 0] * fit.cov[fit.ok, 1, 1])
                return attrs.evolve(fit, cov=cov)
            case "covariance_triangle":
                return attrs.evolve(fit, cov=fit.cov_upper_triangle())
            case "fractional_ids":
                return attrs.evolve(fit, track_id=fit.track_id + 0.5)
            case "failed_with_params":  # the first fitted track marked not fitted, its numbers kept
                return attrs.evolve(fit, status=np.where(np.arange(len(fit)) == np.argmax(fit.ok), 1, fit.status))
        return fit


def spoiling(detector: Detector, options: dict[str, Any]) -> _Spoiling:
    """A fitter that spoils its results (``options["spoil"]``), or fails its first ``fit`` call while the file
    ``options["fail_while"]`` exists."""
    return _Spoiling(detector, options.get("spoil", ""), options.get("fail_while", ""))
