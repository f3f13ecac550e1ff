"""Track fitting: the fitting hook (:mod:`~tracking_algs.fitting.hook`), the built-in batched Kalman fitter and
the track selection after the fit."""

from tracking_algs.fitting.config import KalmanConfig
from tracking_algs.fitting.hook import FittingConfig, TrackFitter, follower, make_fitter, refit_on, refitter
from tracking_algs.fitting.kalman import KalmanFitter
from tracking_algs.fitting.results import COVARIANCE_NAMES, PARAMETER_NAMES, FitResults, FitStatus
from tracking_algs.fitting.selection import TrackSelection

__all__ = [
    "COVARIANCE_NAMES",
    "PARAMETER_NAMES",
    "FitResults",
    "FitStatus",
    "FittingConfig",
    "KalmanConfig",
    "KalmanFitter",
    "TrackFitter",
    "TrackSelection",
    "follower",
    "make_fitter",
    "refit_on",
    "refitter",
]
