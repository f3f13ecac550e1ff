"""Following fitted tracks beyond their ends, layer by layer (``[fitting.selection] follow_tracks``), on real Kalman
fits of simulated particles cut down to a piece of their hits."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from beam_line_particles import beam_line_particles

from tracking_algs.errors import FittingError
from tracking_algs.event import TrackCandidates
from tracking_algs.fitting import KalmanFitter, TrackSelection, follower, refit_on
from tracking_algs.fitting.navigation import layer_key
from tracking_algs.geometry import trackml_detector
from tracking_algs.magnetic_field import SolenoidField
from tracking_algs.modules import trackml_modules
from tracking_algs.simulation import SimulationConfig, simulate_event

DETECTOR = trackml_detector()
#: the hits (in order of distance from the origin) each particle's piece keeps
PIECE = slice(3, 9)
#: hits of other particles a following may take in one of these pile-up-20 events: 0 or 1 on each of the seeds
#: 3 100 000–3 100 007 (of 21–1 632 proposed; both geometries, and in the selection's refits), never more
FOREIGN_HITS = 2


def _long_particles(geometry: str, seed: int):
    """A pile-up-20 event (no noise) in the solenoid, on the TrackML modules or on the cylinders, its particles from
    the beam line above 0.5 GeV with at least 12 hits, and each one's hits in order of distance from the origin."""
    config = SimulationConfig(geometry=geometry, pileup=20.0, noise_fraction=0.0)
    event = simulate_event(config, seed=seed, event_id=0, field=SolenoidField())
    return event, *beam_line_particles(event, 0.5, 12)


def _fitted(event, labels: np.ndarray, geometry: str):
    """The fitter of ``geometry`` in the solenoid, the candidates ``labels`` and their fits."""
    fitter = KalmanFitter(DETECTOR, modules=trackml_modules() if geometry == "modules" else None, field=SolenoidField())
    candidates = TrackCandidates(labels)
    return candidates, fitter, fitter.fit(event.spacepoints, candidates)


def _pieces(geometry: str, seed: int):
    """Every particle of :func:`_long_particles` given as its 4th to 9th hits, the rest of its hits and every other
    hit free; the fitter and the fits of the pieces."""
    event, chosen, hits = _long_particles(geometry, seed)
    labels = np.full(len(event.spacepoints), -1)
    for label, rows in enumerate(hits):
        labels[rows[PIECE]] = label
    return event, chosen, *_fitted(event, labels, geometry)


@pytest.mark.parametrize(("geometry", "least_recall"), [("modules", 0.7), ("cylinders", 0.8)])
def test_following_proposes_the_rest_of_each_particle_to_its_piece(geometry, least_recall):
    """Followed inwards and outwards, the pieces are proposed most of their particles' free hits (measured 0.78–0.82 on
    the modules, where a particle crosses two overlapping modules of many layers, and 0.88–1 on the cylinders, seeds
    3 100 000–3 100 007) and
    hardly ever a hit of another particle (:data:`FOREIGN_HITS`); at most two hits of one layer, on different modules,
    go to a track, and no hit on a track is proposed."""
    event, chosen, candidates, fitter, fit = _pieces(geometry, 3_100_007)
    sp, particle = event.spacepoints, event.truth.particle_id
    assert len(chosen) >= 6
    follow = follower(fitter, sp)
    assert follow is not None
    proposal = follow(candidates, fit, 9.0, 5.0, 50.0)
    proposed = proposal >= 0
    assert (candidates.labels[proposed] == -1).all()
    assert (particle[proposed] != chosen[proposal[proposed]]).sum() <= FOREIGN_HITS
    rest = np.isin(particle, chosen) & (candidates.labels < 0)
    assert proposed.sum() / rest.sum() >= least_recall
    keys = layer_key(sp.volume_id, sp.layer_id)
    for label in np.unique(proposal[proposed]):
        mine = proposal == label
        _, per_layer = np.unique(keys[mine], return_counts=True)
        assert per_layer.max() <= 2
        assert len(np.unique(sp.module_key[mine])) == mine.sum()


def test_the_selection_takes_the_followed_hits_its_refits_keep():
    """With ``follow_tracks`` and the fitter's follower, the kept pieces take back hundreds of their particles' hits,
    hardly any of another particle (:data:`FOREIGN_HITS`), and keep their own; without a follower (a fitter that cannot
    follow) or without the option the selection keeps the pieces as they are."""
    event, chosen, candidates, fitter, fit = _pieces("modules", 3_100_008)
    sp, particle = event.spacepoints, event.truth.particle_id

    refit = refit_on(fitter, sp)
    plain = TrackSelection().apply(candidates, fit, refit, sp)[0]
    following = TrackSelection(follow_tracks=True)
    assert (following.apply(candidates, fit, refit, sp)[0].labels == plain.labels).all()
    kept, kept_fit = following.apply(candidates, fit, refit, sp, follower(fitter, sp))
    on_plain = plain.labels >= 0
    assert (kept.labels[on_plain] == plain.labels[on_plain]).all()
    gained = (kept.labels >= 0) & ~on_plain
    assert gained.sum() >= 500  # measured 1 288
    assert (particle[gained] != chosen[kept.labels[gained]]).sum() <= FOREIGN_HITS
    assert set(kept_fit.track_id.tolist()) == set(np.unique(plain.labels[on_plain]).tolist())
    fitted_hits = np.zeros(len(sp), dtype=bool)
    fitted_hits[kept_fit.hit_rows] = True
    assert (fitted_hits == (kept.labels >= 0)).all()  # each kept track holds the hits its refit used


def test_a_track_takes_over_the_piece_of_its_particle_beyond_it():
    """Every particle from the beam line above 0.5 GeV with at least 12 hits (pile-up 20, modules, solenoid) as two
    tracks, its 7 innermost hits and its next 5, the rest of its hits free; the split-track rule off, so that both
    pieces stay.  With ``follow_tracks`` nearly every particle ends as one track (one where both pieces stayed, of
    136 measured), and hardly any track holds a hit of another particle (:data:`FOREIGN_HITS`; none on this seed and
    on the seeds 3 100 000–3 100 005, one on 3 100 012): a piece that follows its way into the hits of another track
    stops there instead of taking the free hits around them."""
    event, chosen, hits = _long_particles("modules", 3_100_010)
    particle, sp = event.truth.particle_id, event.spacepoints
    labels = np.full(len(particle), -1)
    for k, rows in enumerate(hits):
        labels[rows[:7]], labels[rows[7:12]] = 2 * k, 2 * k + 1
    candidates, fitter, fit = _fitted(event, labels, "modules")

    refit = refit_on(fitter, sp)

    def pieces_left(kept: TrackCandidates) -> int:
        tracks = set(np.unique(kept.labels[kept.labels >= 0]).tolist())
        return sum(2 * k in tracks and 2 * k + 1 in tracks for k in range(len(chosen)))

    apart = TrackSelection(max_split_chi2=0.0).apply(candidates, fit, refit, sp)[0]
    assert pieces_left(apart) >= 0.8 * len(chosen)
    kept, kept_fit = TrackSelection(follow_tracks=True, max_split_chi2=0.0).apply(candidates, fit, refit, sp,
                                                                                   follower(fitter, sp))  # fmt: skip
    assert pieces_left(kept) <= 0.03 * len(chosen)
    assert len(kept_fit) >= 0.9 * len(chosen)
    on_track = kept.labels >= 0
    assert (particle[on_track] != chosen[kept.labels[on_track] // 2]).sum() <= FOREIGN_HITS


def test_a_free_hit_the_fitter_cannot_measure_is_never_proposed():
    """A free hit on a module the geometry lacks and one on the z axis (two of the rest of a piece's particle) are
    passed over without an error, where the fit of a track holding them stops with one naming the row; the other
    free hits are proposed as before."""
    event, chosen, candidates, fitter, fit = _pieces("modules", 3_100_007)
    sp, particle = event.spacepoints, event.truth.particle_id
    before = follower(fitter, sp)(candidates, fit, 9.0, 5.0, 50.0)
    proposed = np.flatnonzero(before >= 0)
    off_module, on_axis = proposed[:2]
    module_id, x, y = sp.module_id.copy(), sp.x.copy(), sp.y.copy()
    module_id[off_module], x[on_axis], y[on_axis] = 999_999, 0.0, 0.0
    broken = attrs.evolve(sp, module_id=module_id, x=x, y=y)
    after = follower(fitter, broken)(candidates, fit, 9.0, 5.0, 50.0)
    assert after[off_module] == after[on_axis] == -1
    assert (after >= 0).sum() >= 0.95 * len(proposed)
    assert (particle[after >= 0] != chosen[after[after >= 0]]).sum() <= FOREIGN_HITS
    for row in (off_module, on_axis):
        with pytest.raises(FittingError, match=f"spacepoint row {row} "):
            fitter.fit(broken, TrackCandidates(np.where(np.arange(len(sp)) == row, 0, candidates.labels)))
