"""Truth matching, rates, edge metrics and plots on hand-built events with known answers."""

from __future__ import annotations

import math
import re

import attrs
import numpy as np
import pytest

from tracking_algs.errors import EventFormatError
from tracking_algs.event import Cells, Event, Particles, Spacepoints, TrackCandidates, Truth
from tracking_algs.fitting.results import fitted_pt
from tracking_algs.job.report import kept_by_selection
from tracking_algs.job_options import JobOptions
from tracking_algs.performance import (
    MatchResult,
    ParticleSelection,
    PerformanceAccumulator,
    TrackStatus,
    edge_counts,
    edge_metrics,
    efficiency_vs_eta,
    efficiency_vs_pt,
    fake_rate_vs_eta,
    match_tracks,
    plot_performance,
    truth_graph,
)
from tracking_algs.performance.edges import edge_keys

M, D, F = TrackStatus.MATCHED, TrackStatus.DUPLICATE, TrackStatus.FAKE


def make_event(hit_particles, pt=None, z=None, vertex_z=None) -> Event:
    """An event whose hit i belongs to particle ``hit_particles[i]`` (0 = noise); particles 1..P at eta 0."""
    hit_particles = np.asarray(hit_particles)
    n = len(hit_particles)
    n_particles = int(hit_particles.max())
    pt = np.full(n_particles, 2.0) if pt is None else np.asarray(pt, dtype=float)
    radius = 30.0 + 10.0 * np.arange(n)
    z = np.zeros(n) if z is None else np.asarray(z, dtype=float)
    spacepoints = Spacepoints(hit_id=np.arange(1, n + 1), x=radius, y=np.zeros(n), z=z, volume_id=np.full(n, 8),
                              layer_id=np.full(n, 2), module_id=np.ones(n), sigma=np.full((n, 2), 0.01))  # fmt: skip
    zeros = np.zeros(n)
    truth = Truth(hit_id=spacepoints.hit_id, particle_id=hit_particles, tx=radius, ty=zeros, tz=z, tpx=zeros,
                  tpy=zeros, tpz=zeros, weight=zeros)  # fmt: skip
    ids = np.arange(1, n_particles + 1)
    nhits = np.array([(hit_particles == i).sum() for i in ids])
    vz = np.zeros(n_particles) if vertex_z is None else np.asarray(vertex_z, dtype=float)
    none = np.zeros(n_particles)
    particles = Particles(particle_id=ids, vx=none, vy=none, vz=vz, px=pt, py=none, pz=none, q=none + 1, nhits=nhits)
    return Event(event_id=1, spacepoints=spacepoints, truth=truth, particles=particles)


def run(hit_particles, labels, **kwargs) -> MatchResult:
    return match_tracks(make_event(hit_particles), TrackCandidates(np.asarray(labels)), **kwargs)


def test_perfect_tracks():
    result = run([1] * 6 + [2] * 7, [10] * 6 + [20] * 7)
    assert result.track_status.tolist() == [M, M]
    assert result.track_particle.tolist() == [1, 2]
    assert (result.n_selected, result.n_matched, result.n_tracks, result.n_fake, result.n_duplicate) == (2, 2, 2, 0, 0)
    assert result.efficiency == 1.0
    assert result.fake_rate == 0.0
    assert result.duplicate_rate == 0.0


def test_split_track_short_piece_is_fake():
    # 8 hits split 5 + 3: 5/8 ≥ 0.5 matched; 3/8 < 0.5 of the particle's hits: fake
    result = run([1] * 8, [0] * 5 + [1] * 3)
    assert result.track_status.tolist() == [M, F]
    assert result.efficiency == 1.0
    assert result.fake_rate == 0.5
    assert result.n_fragment == 1  # the fake is a piece of particle 1
    assert result.track_particle_nhits.tolist() == [8, 8]


def test_a_mixed_track_is_fake_but_not_a_fragment():
    # a track of 2 hits each of particles 1, 2 and 3 (7 hits each): no particle holds half of it
    result = run([1] * 7 + [2] * 7 + [3] * 7, ([0] * 2 + [-1] * 5) * 3)
    assert result.track_status.tolist() == [F]
    assert (result.n_fake, result.n_fragment) == (1, 0)


def test_even_split_gives_a_duplicate_and_the_longest_track_wins():
    # 10 hits: track 0 has 5 of them; track 1 has the other 5 plus a noise hit, so it is longer and wins
    result = run([1] * 10 + [0], [0] * 5 + [1] * 5 + [1])
    assert result.track_status.tolist() == [D, M]
    assert result.track_nhits.tolist() == [5, 6]
    assert result.track_nmajority.tolist() == [5, 5]
    assert (result.n_matched, result.n_duplicate, result.n_fake) == (1, 1, 0)
    assert result.duplicate_rate == 0.5


def test_equal_duplicates_keep_the_smaller_track_id():
    result = run([1] * 10, [7] * 5 + [3] * 5)
    assert result.track_id.tolist() == [3, 7]
    assert result.track_status.tolist() == [M, D]


def test_merged_track_matches_one_particle_and_loses_the_other():
    # 6 + 6 hits in one track: majority tie goes to the smaller particle id; 6/12 and 6/6 pass
    result = run([1] * 6 + [2] * 6, [4] * 12)
    assert result.track_status.tolist() == [M]
    assert result.track_particle.tolist() == [1]
    assert result.particle_matched.tolist() == [True, False]
    assert result.efficiency == 0.5
    # one more hit of particle 2 makes it the majority, 7/13 ≥ 0.5 and 7/7
    result = run([1] * 6 + [2] * 7, [4] * 13)
    assert result.track_particle.tolist() == [2]
    assert result.particle_matched.tolist() == [False, True]


def test_fake_track_of_mixed_hits_and_noise():
    # track 9: 2 hits of particle 1, 2 of particle 2, 1 noise: nMaj/nTrack = 2/5 < 0.5
    hits = [1] * 6 + [2] * 6 + [0]
    labels = [5] * 4 + [9] * 2 + [6] * 4 + [9] * 2 + [9]
    result = run(hits, labels)
    assert result.track_id.tolist() == [5, 6, 9]
    assert result.track_status.tolist() == [M, M, F]
    assert result.track_nmajority.tolist() == [4, 4, 2]
    assert result.n_fake == 1
    assert result.fake_rate == pytest.approx(1 / 3)


def test_rates_among_count_only_the_chosen_tracks():
    # tracks 5 and 6 matched, 7 a duplicate (particle 2 split 4 + 4), 9 fake (2 of particle 3's 6 hits, 2 noise)
    hits = [1] * 6 + [2] * 8 + [3] * 6 + [0] * 2
    labels = [5] * 6 + [6] * 4 + [7] * 4 + [9] * 2 + [-1] * 4 + [9] * 2
    result = run(hits, labels)
    assert result.track_status.tolist() == [M, M, D, F]
    assert result.rates_among(np.array([True, False, True, True])) == {
        "n_tracks": 3, "n_fake": 1, "n_duplicate": 1, "fake_rate": pytest.approx(1 / 3),
        "duplicate_rate": pytest.approx(1 / 3)}  # fmt: skip
    nothing = {"n_tracks": 0, "n_fake": 0, "n_duplicate": 0, "fake_rate": None, "duplicate_rate": None}
    assert result.rates_among(np.zeros(4, dtype=bool)) == nothing


def test_fitted_pt_is_looked_up_by_track_id():
    # fitted tracks 3 and 8: theta pi/2, q/p 0.5 and -0.25 e/GeV -> 2 and 4 GeV; track 5 has no fit
    params = np.array([[0.0, 0.0, 0.0, math.pi / 2, 0.5], [0.0, 0.0, 0.0, math.pi / 2, -0.25]])
    pt = fitted_pt(np.array([8, 5, 3]), np.array([3, 8]), params)
    assert pt[[0, 2]] == pytest.approx([4.0, 2.0])
    assert math.isnan(pt[1])
    assert math.isnan(fitted_pt(np.array([1]), np.zeros(0, dtype=np.int64), np.zeros((0, 5)))[0])


def test_noise_only_track_is_fake_with_no_particle():
    result = run([1] * 6 + [0] * 4, [1] * 6 + [2] * 4)
    assert result.track_status.tolist() == [M, F]
    assert result.track_particle.tolist() == [1, 0]
    assert result.track_nmajority.tolist() == [6, 0]


def test_an_event_without_particles_has_fake_tracks_only():
    """All noise and no particles (a TrackML particles file of only its header): the matching finds nothing."""
    result = run([0] * 8, [1] * 4 + [2] * 4)
    assert result.track_status.tolist() == [F, F]
    assert result.track_particle.tolist() == result.track_particle_nhits.tolist() == [0, 0]
    assert (len(result.particle_id), result.n_selected, result.n_tracks, result.n_fake) == (0, 0, 2, 2)
    assert math.isnan(result.efficiency)


def test_short_tracks_and_unassigned_hits_are_ignored():
    result = run([1] * 6 + [2] * 6, [1] * 6 + [-1] * 4 + [2] * 2)
    assert result.track_id.tolist() == [1]
    assert result.n_tracks == 1
    result = run([1] * 6 + [2] * 6, [1] * 6 + [-1] * 4 + [2] * 2, min_track_hits=2)
    assert result.track_id.tolist() == [1, 2]
    assert result.track_status.tolist() == [M, F]  # 2/6 of particle 2's hits


def test_selection_counts_only_selected_particles():
    # particle 2 (0.5 GeV) is below pT 1 GeV, particle 3 has 4 < 5 hits; their tracks are still matched
    event = make_event([1] * 6 + [2] * 6 + [3] * 4, pt=[2.0, 0.5, 3.0])
    result = match_tracks(event, TrackCandidates(np.array([1] * 6 + [2] * 6 + [3] * 4)))
    assert result.particle_selected.tolist() == [True, False, False]
    assert result.track_status.tolist() == [M, M, M]
    assert (result.n_selected, result.n_matched) == (1, 1)
    loose = match_tracks(event, TrackCandidates(np.array([-1] * 6 + [2] * 6 + [3] * 4)),
                         ParticleSelection(pt_min=0.1, min_hits=4))  # fmt: skip
    assert loose.particle_selected.tolist() == [True, True, True]
    assert loose.efficiency == pytest.approx(2 / 3)


def test_the_particle_selection_is_strict_at_its_cuts_and_takes_either_sign_of_eta():
    selection = ParticleSelection(pt_min=1.0, eta_max=2.0, min_hits=5)
    pt, eta = np.array([1.0, 1.001, 2.0, 2.0, 2.0, 2.0, 2.0]), np.array([0.0, 0.0, -2.5, 2.5, -1.9, 2.0, 0.0])
    nhits = np.array([5, 5, 5, 5, 5, 5, 4])
    assert selection.select(pt, eta, nhits).tolist() == [False, True, False, False, True, False, False]


def test_a_fake_holding_half_its_hits_from_one_particle_is_a_fragment():
    """Hits 5-7 of an 8-hit particle with 2 hits of another and a noise hit: 3 of 6 (half) from the particle, too few
    of the particle's 8 to match it, so a fake, and a fragment of it."""
    result = run([1] * 8 + [2] * 2 + [0], [0] * 5 + [1] * 6)
    assert result.track_status.tolist() == [M, F]
    assert result.track_nmajority.tolist() == [5, 3]
    assert result.n_fragment == 1


def test_of_two_matched_tracks_of_one_size_the_one_with_more_of_the_particle_wins():
    """At ``ratio`` 0.3 two 5-hit tracks match a 10-hit particle, holding 4 and 3 of its hits: the one with 4 is the
    match, though the other has the smaller track id."""
    labels = [7] * 4 + [3] * 3 + [-1] * 3 + [7] + [3] * 2
    result = run([1] * 10 + [2] + [3] * 2, labels, ratio=0.3)
    assert result.track_id.tolist() == [3, 7]
    assert result.track_status.tolist() == [D, M]


def test_a_tracks_eta_is_the_median_of_its_hits():
    """A 4-hit track's eta is the mean of its two middle hits' (0.2 and 0.5), a 5-hit track's that of its middle
    hit."""
    eta = np.array([0.1, 0.5, 0.2, 0.9, -1.0, -0.4, -0.3, -0.2, 2.0])
    radius = 30.0 + 10.0 * np.arange(len(eta))  # as make_event places the hits
    event = make_event([1] * 4 + [2] * 5, z=radius * np.sinh(eta))
    result = match_tracks(event, TrackCandidates(np.array([0] * 4 + [1] * 5)), min_track_hits=4)
    np.testing.assert_allclose(result.track_eta, [0.35, -0.3], rtol=1e-12)


def test_accumulator_sums_events():
    accumulator = PerformanceAccumulator()
    accumulator.add(run([1] * 6 + [2] * 7, [10] * 6 + [20] * 7))  # 2 of 2, 2 tracks
    accumulator.add(run([1] * 8, [0] * 5 + [1] * 3))  # 1 of 1, 1 fake of 2 tracks
    accumulator.add(run([1] * 6 + [2] * 6, [4] * 12))  # 1 of 2
    total = accumulator.result()
    assert total.summary() == {"n_selected": 5, "n_matched": 4, "n_tracks": 5, "n_fake": 1, "n_fragment": 1,
                               "n_duplicate": 0,
                               "efficiency": 0.8, "fake_rate": 0.2, "duplicate_rate": 0.0}  # fmt: skip
    empty = PerformanceAccumulator().result()
    assert math.isnan(empty.efficiency)
    assert empty.summary()["efficiency"] is None


def test_matching_needs_truth_and_aligned_labels():
    event = make_event([1] * 6)
    with pytest.raises(ValueError, match="5 track labels for 6 hits"):
        match_tracks(event, TrackCandidates(np.zeros(5)))
    with pytest.raises(ValueError, match="7 track labels for 6 hits"):
        match_tracks(event, TrackCandidates(np.zeros(7)))
    with pytest.raises(ValueError, match="needs truth"):
        match_tracks(Event(event_id=3, spacepoints=event.spacepoints), TrackCandidates(np.zeros(6)))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"ratio": math.nan}, "ratio must be a number in (0, 1], got nan"),
        ({"ratio": 2}, "ratio must be a number in (0, 1], got 2"),
        ({"ratio": 0.0}, "ratio must be a number in (0, 1], got 0.0"),
        ({"ratio": "0.5"}, "ratio must be a number in (0, 1], got '0.5'"),
        ({"min_track_hits": -3}, "min_track_hits must be an integer ≥ 1, got -3"),
        ({"min_track_hits": 0}, "min_track_hits must be an integer ≥ 1, got 0"),
        ({"min_track_hits": 2.5}, "min_track_hits must be an integer ≥ 1, got 2.5"),
    ],
)
def test_matching_refuses_a_ratio_or_a_track_size_that_means_nothing(options, expected):
    """A NaN or out-of-range ``ratio`` made every track a fake and found no particle, with no error."""
    with pytest.raises(ValueError, match=re.escape(f"match_tracks: {expected}")):
        run([1] * 6, [0] * 6, **options)
    assert run([1] * 6, [0] * 6, ratio=1, min_track_hits=np.int64(6)).efficiency == 1.0


def test_an_event_refuses_tables_that_do_not_fit_together():
    """What ``read_event`` refuses in files was taken from Python, and the matching then counted the hits of a
    particle the particles lack as noise (its tracks fakes): a truth particle_id the particles lack, a particle or a
    hit id twice, cells of a hit the spacepoints lack, an event id that is not an integer ≥ 0. Each is refused
    naming the event, the table and the first id."""
    event = make_event([1] * 3 + [2] * 3)
    cells = Cells(hit_id=[1, 99], ch0=[0, 0], ch1=[0, 0], value=[1.0, 1.0])
    twice = attrs.evolve(event.spacepoints, hit_id=[1, 2, 3, 4, 5, 1])
    for change, expected in (
        ({"particles": event.particles.take(np.array([0]))}, "event 1: truth.particle_id 2 at row 3 is not 0 (noise) "
                                                             "or a particle_id of the particles"),
        ({"particles": attrs.evolve(event.particles, particle_id=[1, 1])}, "event 1: particles.particle_id: 1 at rows "
                                                                          "0 and 1; expected each once"),
        ({"spacepoints": twice, "truth": attrs.evolve(event.truth, hit_id=twice.hit_id)}, "event 1: spacepoints.hit_id:"
                                                                                         " 1 at rows 0 and 5"),
        ({"cells": cells}, "event 1: cells.hit_id 99 at row 1 is not a hit of the spacepoints"),
    ):  # fmt: skip
        with pytest.raises(EventFormatError, match=re.escape(expected)):
            attrs.evolve(event, **change)
    for event_id in (-1, 1.5, True):
        with pytest.raises((TypeError, ValueError), match="event_id"):
            attrs.evolve(event, event_id=event_id)
    with pytest.raises(TypeError, match="'truth' must be"):
        attrs.evolve(event, truth=np.ones(6))


def test_histograms_bin_the_particles_and_tracks():
    # hits of particle 1 at eta ≈ 0, a fake noise track far forward
    hits = [1] * 6 + [2] * 6 + [0] * 3
    z = [0.0] * 12 + [3000.0] * 3
    event = make_event(hits, pt=[1.2, 7.0], z=z)
    result = match_tracks(event, TrackCandidates(np.array([1] * 6 + [-1] * 6 + [3] * 3)))
    by_pt = efficiency_vs_pt(result)
    assert by_pt.total.sum() == 2
    assert by_pt.passed[0] == 1  # 1.2 GeV bin [1, 1.5)
    assert by_pt.total[5] == 1  # 7 GeV bin [6, 10)
    assert by_pt.passed[5] == 0
    by_eta = efficiency_vs_eta(result)
    assert by_eta.total[8] == 2  # eta 0 bin [0, 0.5)
    fake = fake_rate_vs_eta(result)
    assert fake.total.sum() == 2
    assert fake.passed.sum() == 1
    assert fake.ratio[8] == 0.0
    low, high = by_pt.interval()
    assert low[0] < 1.0 <= high[0]
    assert np.isnan(by_pt.ratio[1])


def test_plots_are_written(tmp_path):
    result = run([1] * 6 + [2] * 7, [10] * 6 + [-1] * 7)
    paths = plot_performance(result, tmp_path / "plots", label="hand case")
    assert [p.name for p in paths] == ["efficiency_vs_pt.png", "efficiency_vs_eta.png", "fake_rate_vs_eta.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_truth_graph_orders_hits_by_distance_from_the_vertex():
    # particle 1's hits (rows 0, 2, 3, 5) at r = 30, 50, 60, 80 but listed out of order in z; noise row 1
    hits = [1, 0, 1, 1, 2, 1, 2]
    event = make_event(hits, vertex_z=[0.0, 0.0])
    graph = truth_graph(event)
    assert graph.dtype == np.int64
    assert graph.T.tolist() == [[0, 2], [2, 3], [3, 5], [4, 6]]
    # particle 2 produced far away at large x: its hits are now ordered backwards from that vertex
    far = attrs.evolve(event, particles=attrs.evolve(event.particles, vx=np.array([0.0, 1000.0])))
    assert truth_graph(far).T.tolist() == [[0, 2], [2, 3], [3, 5], [6, 4]]


def test_noise_hits_have_no_truth_edges():
    assert truth_graph(make_event([0, 1, 0, 1, 0])).T.tolist() == [[1, 3]]


def test_edge_keys_one_per_edge_in_order_or_sorted_without_repeats():
    edges = np.array([[3, 0, 1], [4, 1, 0]])
    assert edge_keys(edges, unique=False).tolist() == [(3 << 32) | 4, 1, 1]
    assert edge_keys(edges).tolist() == [1, (3 << 32) | 4]


def test_edge_metrics_on_undirected_edges():
    truth = np.array([[0, 1, 3], [1, 2, 4]])
    predicted = np.array([[1, 2, 2, 1, 7], [0, 1, 3, 0, 8]])  # 0-1 twice (both directions), 1-2, 2-3, 7-8
    assert edge_counts(predicted, truth) == (2, 3, 4)
    efficiency, purity = edge_metrics(predicted, truth)
    assert efficiency == pytest.approx(2 / 3)
    assert purity == pytest.approx(2 / 4)
    assert edge_metrics(truth, truth) == (1.0, 1.0)
    empty = np.zeros((2, 0), dtype=np.int64)
    assert edge_metrics(empty, truth)[0] == 0.0
    assert math.isnan(edge_metrics(empty, truth)[1])


@pytest.mark.parametrize(
    ("predicted", "expected"),
    [
        (np.array([[0, 1], [1, 2], [3, 4]]), "predicted: shape [3, 2]; expected [2, E], one column per edge"),
        (np.zeros((3, 4), dtype=np.int64), "predicted: shape [3, 4]; expected [2, E]"),
        (np.array([[0.7], [1.2]]), "predicted: 0.7 at row 0 is not a whole number"),
        (np.array([[np.nan], [1.0]]), "predicted: nan at row 0 is not a whole number"),
        (np.array([[1], [2**32 + 2]]), "predicted: node indices from 1 to 4294967298; expected 0 to 4294967295"),
        (np.array([[1], [2**32]]), "predicted: node indices from 1 to 4294967296; expected 0 to 4294967295"),
        (np.array([[-1], [2]]), "predicted: node indices from -1 to 2"),
    ],
)
def test_edge_metrics_refuse_edges_that_are_not_pairs_of_node_indices(predicted, expected):
    """Edges given as [E, 2], with fractions or NaN (which a cast made a true edge), or with nodes beyond what a key
    holds (which made other edges' keys) gave figures with no error; each is a ValueError naming the array."""
    with pytest.raises(ValueError, match=re.escape(expected)):
        edge_metrics(predicted, np.array([[0, 1, 3], [1, 2, 4]]))
    with pytest.raises(ValueError, match=re.escape(expected.replace("predicted", "truth"))):
        edge_counts(np.array([[0], [1]]), predicted)


def test_kept_by_selection_counts_what_the_written_tracks_keep_and_gain():
    # particles 1, 2, 4 above 1 GeV, 3 and 5 at 0.7 GeV; the candidates find 1, 2 and 3, the written tracks 1, 3, 4, 5
    event = make_event(np.repeat([1, 2, 3, 4, 5], 6), pt=[2.0, 2.0, 0.7, 2.0, 0.7])
    candidates = match_tracks(event, TrackCandidates(np.repeat([1, 2, 3, -1, -1], 6)))
    written = match_tracks(event, TrackCandidates(np.repeat([1, -1, 3, 4, 5], 6)))
    kept = kept_by_selection(candidates, written, JobOptions())
    above_half = {"n_matched_candidates": 3, "n_kept": 2, "n_gained": 2, "fraction": 2 / 3}
    assert kept == {"pt_min": 1.0, "n_matched_candidates": 2, "n_kept": 1, "n_gained": 1, "fraction": 0.5,
                    "pt_gt_0p5": above_half}  # fmt: skip
    nothing_before = match_tracks(event, TrackCandidates(np.full(30, -1)))
    assert kept_by_selection(nothing_before, written, JobOptions())["fraction"] is None
    other_event = match_tracks(make_event(np.repeat([1, 2], 6)), TrackCandidates(np.repeat([1, 2], 6)))
    with pytest.raises(ValueError, match="particles differ"):
        kept_by_selection(other_event, written, JobOptions())
