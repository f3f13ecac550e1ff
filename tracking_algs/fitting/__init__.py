"""Track fitting: the fitting hook (:mod:`~tracking_algs.fitting.hook`) and the built-in batched Kalman fitter."""

from tracking_algs.fitting.config import KalmanConfig
from tracking_algs.fitting.hook import (
    COVARIANCE_NAMES,
    PARAMETER_NAMES,
    FitResults,
    FitStatus,
    FittingConfig,
    TrackFitter,
    make_fitter,
)
from tracking_algs.fitting.kalman import KalmanFitter

__all__ = [
    "COVARIANCE_NAMES",
    "PARAMETER_NAMES",
    "FitResults",
    "FitStatus",
    "FittingConfig",
    "KalmanConfig",
    "KalmanFitter",
    "TrackFitter",
    "make_fitter",
]
