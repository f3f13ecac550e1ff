"""The non-neural steps of the finder, one call each, for a chain split into separately served models
(the ``tracking_ensemble`` Triton ensemble: its Python-backend steps call these between the neural
models ``embedding``, ``filter`` and ``gnn``).

Each step is the library code :class:`~tracking_algs.finding.finder.TrackFinder` runs at that point
(:func:`spacepoint_features`, :func:`candidate_edges` + :func:`orient_edges`, the score cuts,
:class:`TrackBuilding`), so an ensemble gives the local finder's labels. The filter model in an ensemble
scores all edges in one call instead of in ``chunk_size`` chunks; each edge's score depends only on its
own two hits, so the scores are the same.
"""

from __future__ import annotations

import attrs
import numpy as np

from tracking_algs.event import Spacepoints
from tracking_algs.finding.building import TrackBuilding
from tracking_algs.finding.config import FindingConfig
from tracking_algs.finding.features import orient_edges, spacepoint_features
from tracking_algs.finding.graph import candidate_edges
from tracking_algs.finding.model_dir import working_point
from tracking_algs.finding.stages import above_gnn_cuts


def with_working_point(config: FindingConfig) -> FindingConfig:
    """``config`` with the graph radius and filter cut filled in from the model card where they are 0
    (as :class:`TrackFinder` does), so that the steps need no model directory."""
    radius, filter_cut = working_point(config.model_dir, config.graph.radius, config.filter.cut)
    graph = attrs.evolve(config.graph, radius=radius)
    return attrs.evolve(config, graph=graph, filter=attrs.evolve(config.filter, cut=filter_cut))


class EnsembleSteps:
    """The steps around the neural models, configured by a :class:`FindingConfig` whose radius and filter
    cut are set (see :func:`with_working_point`)."""

    def __init__(self, config: FindingConfig) -> None:
        if not (config.graph.radius and config.filter.cut):
            raise ValueError("EnsembleSteps needs graph.radius and filter.cut set; use with_working_point(config)")
        self.config = config
        self.building = TrackBuilding(config.building)

    @staticmethod
    def features(spacepoints: Spacepoints) -> np.ndarray:
        """Network input features [N, F] (float32) of the spacepoints."""
        return spacepoint_features(spacepoints)

    def graph(self, spacepoints: Spacepoints, embedding: np.ndarray) -> np.ndarray:
        """Candidate edges [2, E] (int64, inner hit first) joining hits closer than the radius in ``embedding``."""
        graph = self.config.graph
        return orient_edges(candidate_edges(embedding, spacepoints, graph.radius, graph), spacepoints)

    def select_filtered(self, edges: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The edges whose filter score passes the filter cut."""
        return np.ascontiguousarray(edges[:, scores > self.config.filter.cut])

    def build(
        self, spacepoints: Spacepoints, edges: np.ndarray, gnn_scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Track labels [N] from the filtered edges and their GNN scores (GNN cuts, then track building), and the
        edges [2, E'] scored above the GNN cut with their scores [E'] (those of the local finder's ``"gnn"``)."""
        built, scores, weak = above_gnn_cuts(edges, gnn_scores, self.config.gnn)
        labels = self.building.run(spacepoints, built, scores, weak).labels
        return labels, np.ascontiguousarray(built[:, ~weak]), scores[~weak]
