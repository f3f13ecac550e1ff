"""Exa.TrkX-style GNN track finding on the inference interface.

Pipeline (no torch needed): :class:`~tracking_algs.finding.finder.TrackFinder` composes
:class:`~tracking_algs.finding.graph.GraphConstruction` (embedding + fixed-radius neighbours),
:class:`~tracking_algs.finding.stages.EdgeFiltering`, :class:`~tracking_algs.finding.stages.GNNClassification`
and :class:`~tracking_algs.finding.building.TrackBuilding`; configured by
:class:`~tracking_algs.finding.config.FindingConfig`; models from a model directory or the shipped ones.
Training and export (torch): :mod:`tracking_algs.finding.training`, :mod:`tracking_algs.finding.export`.
"""

from tracking_algs.finding.config import BuildingConfig, FilterConfig, FindingConfig, GNNConfig, GraphConfig
from tracking_algs.finding.result import FindingResult

__all__ = [
    "BuildingConfig",
    "FilterConfig",
    "FindingConfig",
    "FindingResult",
    "GNNConfig",
    "GraphConfig",
    "TrackFinder",
]


def __getattr__(name: str) -> object:
    # the finder is loaded on first use: its stages load scipy's sparse graphs and the inference backends, which a job
    # that stops at a bad option, or a user of the configuration classes alone, need not pay
    if name == "TrackFinder":
        from tracking_algs.finding.finder import TrackFinder

        return TrackFinder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
