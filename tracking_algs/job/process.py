"""Processing one event: find, fit, and (when truth exists) measure against it."""

from __future__ import annotations

import time

import attrs
import numpy as np

from inference_iface import ModelChecksumError, ModelError, create_inference
from tracking_algs.event import Event
from tracking_algs.finding.finder import TrackFinder
from tracking_algs.finding.model_dir import STAGES
from tracking_algs.finding.result import FindingResult
from tracking_algs.finding.selected import selected_tracks
from tracking_algs.finding.served import ServedTrackFinder
from tracking_algs.fitting.results import COVARIANCE_NAMES, PARAMETER_NAMES, FitResults
from tracking_algs.job.store import EventResult
from tracking_algs.job_options import JobOptions
from tracking_algs.performance.edges import edge_metrics, truth_graph
from tracking_algs.performance.lookup import particle_rows
from tracking_algs.performance.matching import MatchResult, TrackStatus, match_tracks
from tracking_algs.performance.truth_perigee import truth_perigee


class EventProcessor:
    """The finder (and its fitting hook) built once from job options, applied event by event."""

    def __init__(self, options: JobOptions) -> None:
        self.options = options
        self.detector = options.cylinder_detector()
        fitter = options.fitting.make_fitter(self.detector, options.module_geometry(), options.magnetic_field())
        serving = options.finding.serving
        self.finder: TrackFinder | ServedTrackFinder
        if serving == "stages":
            stage_options = {stage: options.stage_inference(stage) for stage in STAGES}
            try:
                self.finder = TrackFinder.from_options(
                    options.finding, stage_options, fitter=fitter, bfield_t=self.detector.bfield_t
                )
            except ModelError as error:
                raise _with_hint(error, "the served models must be the ONNX files of this job's [finding] model_dir: "
                                 "write the repository with 'trkx repo add-tracking --model-dir' that directory (or "
                                 "--config and the job's options file)") from None  # fmt: skip
            inferences = (self.finder.graph.inference, self.finder.filter.inference, self.finder.gnn.inference)
            #: Each neural stage's inference backend (or the served chain's), as its interface describes itself.
            self.backend = {stage: inference.describe() for stage, inference in zip(STAGES, inferences, strict=True)}
        else:
            try:
                served = create_inference(options.served_inference())
            except ModelError as error:
                raise _with_hint(error, f"the served {serving} must run this job's [finding] options and "
                                 "models: write its repository with 'trkx repo add-tracking --config' and the job's "
                                 "options file") from None  # fmt: skip
            self.finder = ServedTrackFinder(served, fitter=fitter,
                                            with_edges=options.fitting.selection.rebuild_free_hits)  # fmt: skip
            self.backend = {serving: self.finder.inference.describe()}

    def process(self, event: Event) -> EventResult:
        """Find and fit the tracks of one event, keep those the ``[fitting.selection]`` passes; match them (and,
        when the selection is on, the candidates before it) to truth when the event has it."""
        found = self.finder.find(event.spacepoints)
        kept = found
        fitter = self.finder.fitter
        if found.fit is not None and self.options.fitting.selection.enabled and fitter is not None:
            start = time.perf_counter()
            candidates, fit = selected_tracks(self.options.fitting.selection, found, fitter,
                                              event.spacepoints, self.options.finding.building,
                                              self.detector.bfield_t)  # fmt: skip
            timing = found.timing_ms | {"fitting": found.timing_ms["fitting"] + 1e3 * (time.perf_counter() - start)}
            kept = attrs.evolve(found, candidates=candidates, fit=fit, timing_ms=timing)
        edges = {stage: {"count": float(array.shape[1])} for stage, array in found.edges.items()}
        truth: dict[str, np.ndarray] = {}
        if event.truth is not None and event.particles is not None:
            truth = self._measure(event, kept, edges)
            if kept is not found:
                before = match_tracks(event, found.candidates, self.options.performance)
                truth |= {f"{CANDIDATES}{key}": value for key, value in _match_columns(before).items()}
        return EventResult(
            event_id=event.event_id,
            hit_id=event.spacepoints.hit_id,
            track_label=kept.candidates.labels,
            timing_ms=kept.timing_ms,
            edges=edges,
            backend=self.backend,
            fitted=fit_columns(kept.fit) if kept.fit is not None else {},
            truth=truth,
        )

    def _measure(self, event: Event, found: FindingResult, edges: dict[str, dict[str, float]]) -> dict[str, np.ndarray]:
        reference = truth_graph(event)
        for stage, array in found.edges.items():
            efficiency, purity = edge_metrics(array, reference)
            edges[stage] |= {"efficiency": efficiency, "purity": purity}
        match = match_tracks(event, found.candidates, self.options.performance)
        truth = _match_columns(match)
        if found.fit is not None:
            truth["fit_true_params"], truth["fit_pure"] = self._fit_truth(event, found.fit, match)
        return truth

    def _fit_truth(self, event: Event, fit: FitResults, match: MatchResult) -> tuple[np.ndarray, np.ndarray]:
        """For each fitted track: the truth perigee of its matched particle (NaN rows for unmatched tracks), and
        whether the track is pure (matched, every hit from that particle)."""
        true_params = np.full((len(fit.track_id), 5), np.nan)
        row_in_match = np.searchsorted(match.track_id, fit.track_id)
        found = row_in_match < len(match.track_id)
        found[found] &= match.track_id[row_in_match[found]] == fit.track_id[found]
        matched = np.zeros(len(fit.track_id), dtype=bool)
        matched[found] = match.track_status[row_in_match[found]] == TrackStatus.MATCHED
        rows = row_in_match[matched]
        known = event.known_particles()
        particles = particle_rows(known.particle_id, match.track_particle[rows])
        true_params[matched] = truth_perigee(known.take(particles), self.detector.bfield_t)
        pure = np.zeros(len(fit.track_id), dtype=bool)
        pure[matched] = match.track_nmajority[rows] == match.track_nhits[rows]
        return true_params, pure

    def close(self) -> None:
        """Release the finder's inference interfaces."""
        self.finder.close()

    def __enter__(self) -> EventProcessor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


#: prefix of the truth arrays that match the track candidates as built, before the selection after the fit
CANDIDATES = "candidates."


def _match_columns(match: MatchResult) -> dict[str, np.ndarray]:
    return {key: np.asarray(value) for key, value in attrs.asdict(match, recurse=False).items()}


def fit_columns(fit: FitResults) -> dict[str, np.ndarray]:
    """The fitted-track columns of ``fitted_tracks.csv`` (covariance as its 15 upper-triangle values), plus
    the fit p-value."""
    columns = {"track_id": fit.track_id}
    columns |= {name: fit.params[:, k] for k, name in enumerate(PARAMETER_NAMES)}
    columns |= dict(zip(COVARIANCE_NAMES, fit.cov_upper_triangle().T, strict=True))
    columns |= {"chi2": fit.chi2, "ndf": fit.ndf, "pvalue": fit.pvalue, "n_hits": fit.n_hits}
    columns |= {"n_outliers": fit.n_outliers, "status": fit.status}
    return columns


def _with_hint(error: ModelError, hint: str) -> ModelError:
    """``error`` with ``hint`` added when a served model is not the job's (its checksum differs)."""
    return ModelChecksumError(f"{error} ({hint})") if isinstance(error, ModelChecksumError) else error
