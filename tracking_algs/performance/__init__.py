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
from tracking_algs.performance.plots import plot_binned_ratio, plot_performance

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
