"""Truth-based performance: double-majority track matching, rates, edge metrics, histograms and plots."""

from tracking_algs.performance.edges import edge_counts, edge_metrics, truth_graph
from tracking_algs.performance.histograms import (
    BinnedRatio,
    binned_ratio,
    efficiency_vs_eta,
    efficiency_vs_pt,
    fake_rate_vs_eta,
)
from tracking_algs.performance.matching import (
    MatchResult,
    ParticleSelection,
    PerformanceAccumulator,
    TrackStatus,
    match_tracks,
)

__all__ = [
    "BinnedRatio",
    "MatchResult",
    "ParticleSelection",
    "PerformanceAccumulator",
    "TrackStatus",
    "binned_ratio",
    "edge_counts",
    "edge_metrics",
    "efficiency_vs_eta",
    "efficiency_vs_pt",
    "fake_rate_vs_eta",
    "match_tracks",
    "plot_binned_ratio",
    "plot_performance",
    "truth_graph",
]

#: The names of :mod:`tracking_algs.performance.plots` this package gives, imported on first use: matplotlib and
#: mplhep take about a second to load, which a job that stops at a bad option, or a worker, need not pay.
_PLOTS = ("plot_binned_ratio", "plot_performance")


def __getattr__(name: str) -> object:
    if name in _PLOTS:
        from tracking_algs.performance import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
