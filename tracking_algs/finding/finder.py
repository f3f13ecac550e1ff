"""The :class:`TrackFinder`: spacepoints → track candidates through the four finding stages, with
per-stage edges, timing and an optional fitting hook (a :class:`~tracking_algs.finding.result.FindingResult`)."""

from __future__ import annotations

import numbers
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from inference_iface import ConfigError, InferenceInterface, create_inference
from tracking_algs.event import Spacepoints
from tracking_algs.finding.building import TrackBuilding
from tracking_algs.finding.config import FindingConfig
from tracking_algs.finding.features import orient_edges, spacepoint_features
from tracking_algs.finding.graph import GraphConstruction
from tracking_algs.finding.model_dir import STAGES, working_point
from tracking_algs.finding.result import FindingResult
from tracking_algs.finding.stages import EdgeFiltering, GNNClassification, check_stage_model
from tracking_algs.fitting.hook import checked_fitter, close_fitter
from tracking_algs.io.field_map import MAX_FIELD_T

if TYPE_CHECKING:
    from tracking_algs.fitting.hook import TrackFitter


class TrackFinder:
    """Graph construction → edge filtering → GNN classification → track building (→ fitting).

    Each neural stage holds its own :class:`InferenceInterface`, so each can run on its own backend. ``bfield_t`` is
    the field of the detector the events come from, for the pT cut on hit pairs (None: the default detector's).
    ``fitter`` (None: no fit) is held as :func:`~tracking_algs.fitting.hook.checked_fitter` gives it: the built-in
    ``KalmanFitter`` and what :func:`~tracking_algs.fitting.hook.make_fitter` made as they are, any other fitter as
    a ``CheckedFitter``, whose results are checked as a plug-in hook's.
    """

    def __init__(
        self,
        config: FindingConfig,
        embedding: InferenceInterface,
        filter: InferenceInterface,
        gnn: InferenceInterface,
        fitter: TrackFitter | None = None,
        bfield_t: float | None = None,
    ) -> None:
        for stage, inference in zip(STAGES, (embedding, filter, gnn), strict=True):
            check_stage_model(stage, inference)
        if bfield_t is not None and (isinstance(bfield_t, bool) or not isinstance(bfield_t, numbers.Real)
                                     or not abs(bfield_t) <= MAX_FIELD_T):  # fmt: skip
            raise ConfigError(f"{type(self).__name__}: bfield_t must be a field in tesla from -{MAX_FIELD_T:g} to "
                              f"{MAX_FIELD_T:g} (0: none, no pT cut on pairs), got {bfield_t!r}")  # fmt: skip
        self.fitter = checked_fitter(fitter, type(self).__name__)
        radius, filter_cut = working_point(config.model_dir, config.graph.radius, config.filter.cut)
        self.config = config
        self.graph = GraphConstruction(embedding, config.graph, radius, bfield_t)
        self.filter = EdgeFiltering(filter, config.filter, filter_cut)
        self.gnn = GNNClassification(gnn, config.gnn)
        self.building = TrackBuilding(config.building)

    @classmethod
    def from_options(
        cls,
        config: FindingConfig,
        inference_options: Mapping[str, Mapping[str, Any]],
        fitter: TrackFitter | None = None,
        bfield_t: float | None = None,
    ) -> TrackFinder:
        """Build the three inference interfaces from per-stage options (keys ``embedding``, ``filter``, ``gnn``;
        each a complete mapping for :func:`~inference_iface.create_inference`, model included: the job options
        make them, :meth:`tracking_algs.job_options.JobOptions.stage_inference`)."""
        missing = [stage for stage in STAGES if stage not in inference_options]
        if missing:
            raise ConfigError(f"inference options lack the stage(s) {', '.join(missing)}; expected {', '.join(STAGES)}")
        interfaces = {stage: create_inference(inference_options[stage]) for stage in STAGES}
        return cls(config, **interfaces, fitter=fitter, bfield_t=bfield_t)

    def find(self, spacepoints: Spacepoints) -> FindingResult:
        """Run every stage on one event's spacepoints (which :class:`~tracking_algs.event.Spacepoints` checks when they
        are made: ids within range, finite positions, positive errors)."""
        timing: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timing[stage] = (now - clock) * 1e3
            clock = now

        features = spacepoint_features(spacepoints)
        lap("features")
        embedding, graph_edges = self.graph.run(features, spacepoints)
        graph_edges = orient_edges(graph_edges, spacepoints)
        lap("graph")
        filter_edges, filter_scores = self.filter.run(features, embedding, graph_edges)
        lap("filter")
        built_edges, built_scores, weak = self.gnn.run(features, filter_edges)
        gnn_edges, gnn_scores = built_edges[:, ~weak], built_scores[~weak]
        lap("gnn")
        candidates = self.building.run(spacepoints, built_edges, built_scores, weak)
        lap("building")
        fit = None
        if self.fitter is not None:
            fit = self.fitter.fit(spacepoints, candidates)
            lap("fitting")
        return FindingResult(
            candidates=candidates,
            edges={"graph": graph_edges, "filter": filter_edges, "gnn": gnn_edges},
            scores={"filter": filter_scores, "gnn": gnn_scores},
            timing_ms=timing,
            fit=fit,
        )

    def close(self) -> None:
        """Release the three inference interfaces and the fitter's resources."""
        for stage in (self.graph, self.filter, self.gnn):
            stage.inference.close()
        close_fitter(self.fitter)

    def __enter__(self) -> TrackFinder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
