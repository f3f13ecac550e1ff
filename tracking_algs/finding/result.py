"""What the finder made of one event (:class:`FindingResult`): a value type of its own, so that its users need not
load the finder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import numpy as np

from tracking_algs.event import TrackCandidates

if TYPE_CHECKING:
    from tracking_algs.fitting.results import FitResults


@attrs.frozen(kw_only=True)
class FindingResult:
    """What the finder made of one event.

    ``edges[stage]`` are the edges [2, E] (row 0 the inner hit) leaving each stage: ``"graph"`` (all
    candidates), ``"filter"`` (score > filter cut), ``"gnn"`` (score > GNN cut); ``scores`` holds the
    scores of the ``filter`` and ``gnn`` edges. ``timing_ms`` has one entry per stage (``features``,
    ``graph``, ``filter``, ``gnn``, ``building`` and ``fitting`` when a fitter is set).
    """

    candidates: TrackCandidates
    edges: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    timing_ms: dict[str, float]
    fit: FitResults | None = None

    @property
    def edge_counts(self) -> dict[str, int]:
        """Number of edges after each stage."""
        return {stage: int(edges.shape[1]) for stage, edges in self.edges.items()}
