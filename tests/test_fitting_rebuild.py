"""The second building over the free hits (``[fitting.selection] rebuild_free_hits``), on real Kalman fits of a
simulated event whose GNN edges are its truth edges."""

from __future__ import annotations

import re

import attrs
import numpy as np
import pytest
from fitting_plugins import spoiling
from onnx_models import served_chain_with_edges

from inference_iface import create_inference
from inference_iface.errors import ModelError
from tracking_algs.errors import EventFormatError, FittingError
from tracking_algs.event import TrackCandidates
from tracking_algs.finding.config import BuildingConfig
from tracking_algs.finding.features import orient_edges
from tracking_algs.finding.free_hits import free_hit_rebuild
from tracking_algs.finding.result import FindingResult
from tracking_algs.finding.served import (
    CHAIN_SIGNATURE,
    GNN_EDGES,
    GNN_SCORES,
    ServedTrackFinder,
    check_chain_signature,
)
from tracking_algs.fitting import KalmanFitter, TrackSelection, refit_on
from tracking_algs.fitting.results import transverse_momentum
from tracking_algs.geometry import trackml_detector
from tracking_algs.performance import truth_graph
from tracking_algs.performance.lookup import particle_rows
from tracking_algs.simulation import SimulationConfig, simulate_event

DETECTOR = trackml_detector()
#: the GNN score given to the truth edges, and to those of the particles whose edges the rebuild must not use
STRONG, WEAK = 0.9, 0.3


@pytest.fixture(scope="module")
def setting():
    """A pile-up-20 event: the particles above 1.2 GeV with 8 hits or more taken in turn as found (their truth
    tracks, fitted) and as lost (their hits free); the truth edges as the GNN's, scored ``STRONG`` but for every third
    lost particle's, scored ``WEAK``."""
    event = simulate_event(SimulationConfig(pileup=20.0, noise_fraction=0.0), seed=3_100_010, event_id=0)
    particle = event.truth.particle_id
    ids, counts = np.unique(particle[particle > 0], return_counts=True)
    pt = event.particles.pt[particle_rows(event.particles.particle_id, ids)]
    chosen = ids[(counts >= 8) & (pt > 1.2)]
    found, lost = chosen[0::2], chosen[1::2]
    weak, strong = lost[0::3], np.setdiff1d(lost, lost[0::3])
    labels = np.where(np.isin(particle, found), np.searchsorted(found, particle), -1)
    candidates = TrackCandidates(labels)
    edges = orient_edges(truth_graph(event), event.spacepoints)
    scores = np.where(np.isin(particle[edges[0]], weak), WEAK, STRONG).astype(np.float32)
    fitter = KalmanFitter(DETECTOR)
    result = FindingResult(candidates=candidates, edges={"gnn": edges}, scores={"gnn": scores}, timing_ms={},
                           fit=fitter.fit(event.spacepoints, candidates))  # fmt: skip

    refit = refit_on(fitter, event.spacepoints)
    rebuild = free_hit_rebuild(BuildingConfig(), event.spacepoints, result, DETECTOR.bfield_t)
    return event, result, refit, rebuild, strong, weak


def test_the_free_hits_of_lost_particles_become_tracks_and_the_kept_tracks_stay(setting):
    event, result, refit, rebuild, strong, weak = setting
    particle = event.truth.particle_id
    plain, plain_fit = TrackSelection().apply(result.candidates, result.fit, refit, event.spacepoints)
    selection = TrackSelection(rebuild_free_hits=True)
    kept, kept_fit = selection.apply(result.candidates, result.fit, refit, event.spacepoints, None, rebuild)
    # the tracks kept before stay as they were
    before = plain.labels >= 0
    assert before.sum() > 200
    assert np.array_equal(kept.labels[before], plain.labels[before])
    # new tracks on free hits only, under ids above every track's, fitted above rebuild_min_pt_gev with a p-value of
    # at least rebuild_min_pvalue
    new_ids = np.setdiff1d(kept_fit.track_id, plain_fit.track_id)
    assert new_ids.min() > max(result.candidates.labels.max(), plain_fit.track_id.max())
    assert set(np.unique(kept.labels[~before])) - {-1} == set(new_ids.tolist())
    new = kept_fit.tracks(np.isin(kept_fit.track_id, new_ids))
    assert (new.pvalue >= selection.rebuild_min_pvalue).all()
    assert (transverse_momentum(new.params) >= selection.rebuild_min_pt_gev).all()
    # each strongly scored lost particle (nearly all of them) comes back as one track that holds most of its hits;
    # no weakly scored one does
    rebuilt = 0
    for owner in strong:
        rows = np.flatnonzero(particle == owner)
        labels, votes = np.unique(kept.labels[rows], return_counts=True)
        best = labels[np.argmax(votes)]
        if best >= 0 and votes.max() > 0.5 * len(rows) and (particle[kept.labels == best] == owner).mean() > 0.5:
            rebuilt += 1
    assert len(strong) >= 20
    assert rebuilt >= 0.9 * len(strong)
    assert (kept.labels[np.isin(particle, weak)] == -1).all()
    # the other new tracks are the free particles outside the chosen ones (below 1.2 GeV, or of fewer hits), each
    # track one particle's hits
    for track in new_ids:
        owners, votes = np.unique(particle[kept.labels == track], return_counts=True)
        assert len(owners) == 1, track
        assert owners[0] > 0, track


def test_without_the_option_or_the_rebuild_nothing_changes(setting):
    event, result, refit, rebuild, _, _ = setting
    plain = TrackSelection().apply(result.candidates, result.fit, refit, event.spacepoints)[0]
    off = TrackSelection().apply(result.candidates, result.fit, refit, event.spacepoints, None, rebuild)[0]
    unasked = TrackSelection(rebuild_free_hits=True).apply(result.candidates, result.fit, refit, event.spacepoints)[0]
    assert np.array_equal(off.labels, plain.labels)
    assert np.array_equal(unasked.labels, plain.labels)


def test_a_chain_off_its_circle_or_too_tight_is_not_fitted(setting):
    """Built as connected components (one chain per lost particle, whatever its geometry): a particle's chain is
    offered; with one of its hits moved 5 mm across the track, which its circle then misses by more than
    ``MAX_CIRCLE_RESIDUAL_MM``, it is not; nor is a chain whose circle is tighter than the rebuilt tracks' pT."""
    event, result, _, _, strong, weak = setting
    particle = event.truth.particle_id
    free = result.candidates.labels < 0
    components = BuildingConfig(method="components")
    score, min_pt = TrackSelection().rebuild_min_score, TrackSelection().rebuild_min_pt_gev

    def offered(spacepoints, pt_gev=min_pt):
        return free_hit_rebuild(components, spacepoints, result, DETECTOR.bfield_t)(free, score, pt_gev).labels

    chains = offered(event.spacepoints)
    assert all((chains[particle == owner] >= 0).all() for owner in strong)
    assert (chains[np.isin(particle, weak)] == -1).all()
    rows = np.flatnonzero(particle == strong[0])
    middle = rows[np.argsort(event.spacepoints.distance[rows])][len(rows) // 2]
    x, y, r = event.spacepoints.x.copy(), event.spacepoints.y.copy(), event.spacepoints.r[middle]
    x[middle], y[middle] = x[middle] - 5.0 * y[middle] / r, y[middle] + 5.0 * x[middle] / r
    moved = offered(attrs.evolve(event.spacepoints, x=x, y=y))
    assert (moved[rows] == -1).all()
    others = ~np.isin(particle, strong[0])
    assert np.array_equal(moved[others] >= 0, chains[others] >= 0)
    # asked for tracks above 10 TeV, the chains left are those too straight for the algebraic circle fit (left to the
    # Kalman fit): of particles far above 1 GeV
    straight = particle[offered(event.spacepoints, pt_gev=1e4) >= 0]
    assert len(straight) < 0.2 * (chains >= 0).sum()
    assert (event.particles.pt[particle_rows(event.particles.particle_id, straight)] > 5.0).all()


def test_a_served_chain_without_the_gnn_edges_is_refused_where_they_are_needed():
    check_chain_signature(CHAIN_SIGNATURE, "tracking_chain")
    with pytest.raises(ModelError, match=GNN_EDGES):
        check_chain_signature(CHAIN_SIGNATURE, "tracking_chain", with_edges=True)


@pytest.mark.parametrize(
    ("edges", "scores", "message"),
    [
        (np.array([[0], [10**6]]), np.array([0.9]), f"{GNN_EDGES} holds rows outside 0..99"),
        (np.array([[0, 1], [1, 2]]), np.array([0.9]), f"{GNN_SCORES} has shape \\[1\\], expected \\[2\\]"),
    ],
)
def test_bad_gnn_edges_from_a_served_chain_are_a_model_error(setting, tmp_path, edges, scores, message):
    """A served chain (here an ONNX model with its tensors, on ONNX Runtime) whose GNN edges name rows the event does
    not have, or whose scores do not match them, is refused with a ModelError naming the tensor."""
    path = served_chain_with_edges(tmp_path, edges, scores)
    spacepoints = setting[0].spacepoints.take(np.arange(100))
    options = {"backend": "onnxruntime", "model_path": str(path), "device": "cpu"}
    with (
        ServedTrackFinder(create_inference(options), with_edges=True) as finder,
        pytest.raises(ModelError, match=message),
    ):
        finder.find(spacepoints)
    with ServedTrackFinder(create_inference(options)) as finder:
        assert (finder.find(spacepoints).candidates.labels == -1).all()


def test_labels_below_minus_one_from_a_served_chain_are_a_model_error(setting, tmp_path):
    """A served chain that labels rows below -1 (which the candidates counted as no track, as -1) is refused with a
    ModelError naming the tensor and the first such row; candidates made in Python refuse them too."""
    path = served_chain_with_edges(tmp_path, np.array([[0, 1], [1, 2]]), np.array([0.9, 0.9]), label=-2)
    options = {"backend": "onnxruntime", "model_path": str(path), "device": "cpu"}
    expected = "LABELS: TrackCandidates.labels: -2 at row 0 (100 such rows); expected a track id ≥ 0, or -1 for a"
    with ServedTrackFinder(create_inference(options)) as finder, pytest.raises(ModelError, match=re.escape(expected)):
        finder.find(setting[0].spacepoints.take(np.arange(100)))
    with pytest.raises(EventFormatError, match=r"^TrackCandidates.labels: -5 at row 2 \(1 such rows\); expected"):
        TrackCandidates([-1, 0, -5, 3])


def test_a_fitter_handed_to_the_served_finder_is_checked_as_a_plugin_hook(setting, tmp_path):
    """``ServedTrackFinder(fitter=...)`` holds a fitter other than the built-in one as a ``CheckedFitter``: results
    that break the ``FitResults`` contract fail with a ``FittingError`` naming the finder and the fitter's class."""
    path = served_chain_with_edges(tmp_path, np.array([[0, 1], [1, 2]]), np.array([0.9, 0.9]))
    spacepoints = setting[0].spacepoints.take(np.arange(100))
    options = {"backend": "onnxruntime", "model_path": str(path), "device": "cpu"}
    expected = r"^ServedTrackFinder fitter 'fitting_plugins\._Spoiling': fit returned NoneType; expected FitResults"
    fitter = spoiling(DETECTOR, {"spoil": "none"})
    with (
        ServedTrackFinder(create_inference(options), fitter=fitter) as finder,
        pytest.raises(FittingError, match=expected),
    ):
        finder.find(spacepoints)
