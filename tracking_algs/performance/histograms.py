"""Binned efficiency and fake rate (numpy histograms with Clopper-Pearson intervals)."""

from __future__ import annotations

import attrs
import numpy as np
from scipy.special import betaincinv

from tracking_algs.performance.matching import MatchResult, TrackStatus

#: Default transverse-momentum bin edges (GeV) for efficiency vs pT.
PT_BINS = np.array([1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0, 20.0, 50.0, 100.0])
#: Default pseudorapidity bin edges.
ETA_BINS = np.linspace(-4.0, 4.0, 17)
_ONE_SIGMA = 0.682689492


@attrs.frozen
class BinnedRatio:
    """``passed`` out of ``total`` entries per bin between ``edges`` (values outside the edges are dropped)."""

    edges: np.ndarray
    passed: np.ndarray
    total: np.ndarray

    @property
    def ratio(self) -> np.ndarray:
        """passed/total per bin, NaN for empty bins."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.total > 0, self.passed / self.total, np.nan)

    def interval(self, level: float = _ONE_SIGMA) -> tuple[np.ndarray, np.ndarray]:
        """Clopper-Pearson (exact binomial) interval per bin at ``level`` (NaN for empty bins)."""
        alpha = 1.0 - level
        k, n = self.passed, self.total
        with np.errstate(invalid="ignore", divide="ignore"):
            # the beta distribution's quantiles, as scipy.stats.beta.ppf gives them bit for bit, without loading
            # scipy.stats (almost a second), which a job would pay before it has even read its options
            low = np.where(k > 0, betaincinv(k, n - k + 1, alpha / 2), 0.0)
            high = np.where(k < n, betaincinv(k + 1, n - k, 1 - alpha / 2), 1.0)
        empty = n == 0
        return np.where(empty, np.nan, low), np.where(empty, np.nan, high)

    def to_dict(self) -> dict[str, list]:
        """Plain lists for JSON (NaN ratios as ``None``)."""
        return {
            "edges": self.edges.tolist(),
            "passed": self.passed.tolist(),
            "total": self.total.tolist(),
            "ratio": [None if np.isnan(r) else float(r) for r in self.ratio],
        }


def binned_ratio(values: np.ndarray, passed: np.ndarray, edges: np.ndarray) -> BinnedRatio:
    """Histogram ``values`` into ``edges``, counting all entries and those where ``passed`` is true."""
    edges = np.asarray(edges, dtype=np.float64)
    total, _ = np.histogram(values, bins=edges)
    hits, _ = np.histogram(values[passed], bins=edges)
    return BinnedRatio(edges=edges, passed=hits, total=total)


def efficiency_vs_pt(result: MatchResult, edges: np.ndarray = PT_BINS) -> BinnedRatio:
    """Efficiency of the selected particles in bins of their pT (GeV)."""
    selected = result.particle_selected
    return binned_ratio(result.particle_pt[selected], result.particle_matched[selected], edges)


def efficiency_vs_eta(result: MatchResult, edges: np.ndarray = ETA_BINS) -> BinnedRatio:
    """Efficiency of the selected particles in bins of their pseudorapidity."""
    selected = result.particle_selected
    return binned_ratio(result.particle_eta[selected], result.particle_matched[selected], edges)


def fake_rate_vs_eta(result: MatchResult, edges: np.ndarray = ETA_BINS) -> BinnedRatio:
    """Fake rate of the tracks in bins of their (hit-based) pseudorapidity."""
    return binned_ratio(result.track_eta, result.track_status == TrackStatus.FAKE, edges)
