"""The geometric pair cuts of graph construction, on simulated events, in the field of the job's detector."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pytest

from inference_iface.errors import ConfigError
from tracking_algs.finding.config import OVERLAP_MM, GraphConfig, PairCuts
from tracking_algs.finding.graph import candidate_edges, radius_graph
from tracking_algs.finding.pairs import PairGeometry
from tracking_algs.geometry import trackml_detector
from tracking_algs.job.process import EventProcessor
from tracking_algs.job_options import load_job_options
from tracking_algs.performance import truth_graph
from tracking_algs.performance.lookup import hit_particle_pt
from tracking_algs.simulation import SimulationConfig, simulate_event

SERVICE_OPTIONS = Path(__file__).resolve().parents[1] / "configs" / "service.toml"


@pytest.fixture(scope="module")
def event():
    return simulate_event(SimulationConfig(pileup=5.0), 424242, 0)


def test_true_edges_of_tracks_above_the_pt_cut_pass(event):
    truth = truth_graph(event)
    pt = hit_particle_pt(event)[truth[0]]
    geometry = PairGeometry(event.spacepoints, PairCuts())
    passed = geometry.compatible(truth[0], truth[1])
    assert PairCuts().min_pt_gev == 0.5
    assert passed[pt > 1.0].mean() > 0.998
    # the cut is on the pair's own bending: particles well below 0.5 GeV fail on most of their edges
    assert passed[(pt > 0) & (pt < 0.25)].mean() < 0.5


def test_each_cut_rejects_what_it_names(event):
    spacepoints = event.spacepoints
    layer = spacepoints.volume_id * 1000 + spacepoints.layer_id
    rng = np.random.default_rng(3)
    first, second = rng.integers(len(spacepoints), size=(2, 200_000))
    same_layer = layer[first] == layer[second]
    apart = np.sqrt((spacepoints.x[first] - spacepoints.x[second]) ** 2
                    + (spacepoints.y[first] - spacepoints.y[second]) ** 2
                    + (spacepoints.z[first] - spacepoints.z[second]) ** 2)  # fmt: skip
    overlap = same_layer & (spacepoints.module_id[first] != spacepoints.module_id[second]) & (apart <= OVERLAP_MM)
    assert overlap.any()
    assert (
        PairGeometry(spacepoints, PairCuts(min_pt_gev=0, max_z0_mm=0)).compatible(first, second).tolist()
        == (~same_layer | overlap).tolist()
    )
    no_overlaps = PairCuts(min_pt_gev=0, max_z0_mm=0, max_overlap_mm=0)
    assert PairGeometry(spacepoints, no_overlaps).compatible(first, second).tolist() == (~same_layer).tolist()
    # random pairs: the pT and z0 cuts each remove a large share, and switched off they remove nothing
    off = PairCuts(different_layers=False, min_pt_gev=0, max_z0_mm=0)
    assert PairGeometry(spacepoints, off).compatible(first, second).all()
    pt_only = PairGeometry(spacepoints, attrs.evolve(off, min_pt_gev=0.3)).compatible(first, second)
    z0_only = PairGeometry(spacepoints, attrs.evolve(off, max_z0_mm=400)).compatible(first, second)
    assert 0.2 < pt_only.mean() < 0.9
    assert 0.2 < z0_only.mean() < 0.9


def test_z0_cut_against_a_hand_computed_pair(event):
    # hits at r = 100 and 300 mm in one azimuth; the line through (100, z1) and (300, z2) meets r = 0 at
    # z0 = z1 - 100 (z2 - z1) / 200
    spacepoints = attrs.evolve(
        event.spacepoints.take(np.arange(4)),
        x=[100.0, 300.0, 100.0, 300.0],
        y=[0.0, 0.0, 0.0, 0.0],
        z=[0.0, 300.0, -500.0, -500.0],
        layer_id=[1, 2, 1, 2],
    )
    cuts = PairCuts(different_layers=False, min_pt_gev=0, max_z0_mm=200)
    geometry = PairGeometry(spacepoints, cuts)
    # pair (0, 1): z0 = -150 passes; pair (2, 3): z0 = -500 fails; pair (0, 3): z0 = 250 fails
    assert geometry.compatible(np.array([0, 2, 0]), np.array([1, 3, 3])).tolist() == [True, False, False]


@pytest.mark.parametrize("bfield_t", [2.0, -1.0])
def test_pt_cut_against_hand_computed_pairs(event, bfield_t):
    """Hits at r = 100 and 300 mm on circles through the origin whose radius is that of a particle of 0.45, 0.55,
    0.9 and 5 GeV in the field (R = pT / (0.299792458 GeV/(T m) · |B|), either sign): the 0.5 GeV cut keeps the
    pairs above it and drops the one below."""
    pt = np.array([0.45, 0.55, 0.9, 5.0])
    radius = pt / (0.299792458e-3 * abs(bfield_t))  # mm
    x, y = [], []
    for d in (100.0, 300.0):  # a point at distance d from the origin on the circle x² + (y − R)² = R²
        height = d**2 / (2 * radius)
        x.append(np.sqrt(d**2 - height**2))
        y.append(height)
    spacepoints = attrs.evolve(
        event.spacepoints.take(np.arange(8)),
        x=np.concatenate(x),
        y=np.concatenate(y),
        z=np.zeros(8),
        layer_id=np.repeat([1, 2], 4),
    )
    cuts = PairCuts(different_layers=False, min_pt_gev=0.5, max_z0_mm=0)
    passed = PairGeometry(spacepoints, cuts, bfield_t=bfield_t).compatible(np.arange(4), np.arange(4, 8))
    assert passed.tolist() == [False, True, True, True]


def test_a_column_of_hits_against_a_block_of_partners_gives_the_flat_answer(event):
    """The graph passes each query hit as a column against its block of neighbours; the mask is that of the flat
    pairs, cut by cut."""
    rng = np.random.default_rng(4)
    n = len(event.spacepoints)
    first = rng.integers(n, size=3000)
    second = rng.integers(n, size=(3000, 40))
    geometry = PairGeometry(event.spacepoints, PairCuts(max_z0_mm=600))
    block = geometry.compatible(first[:, None], second)
    assert block.shape == (3000, 40)
    assert 0.01 < block.mean() < 0.5
    assert block.ravel().tolist() == geometry.compatible(np.repeat(first, 40), second.ravel()).tolist()


def test_the_graph_keeps_only_the_pairs_that_pass_the_cuts_and_looks_deep_enough_for_them(event):
    """``candidate_edges`` joins neighbours in the embedding (here the positions in units of 100 mm) only where the
    pair passes the cuts, and each hit looks at its ``query_k`` nearest for the ``k_max`` it keeps: where the nearest
    fail the cuts, a deeper look finds others that pass."""
    spacepoints = event.spacepoints
    embedding = np.column_stack((spacepoints.x, spacepoints.y, spacepoints.z)) / 100.0
    cuts = PairCuts(min_pt_gev=0.5, max_z0_mm=200.0)
    shallow = GraphConfig(k_max=2, query_k=2, eps=0.0, cuts=cuts)
    edges = candidate_edges(embedding, spacepoints, 1.0, shallow)
    compatible = PairGeometry(spacepoints, cuts).compatible
    assert edges.shape[1] > 100
    assert compatible(edges[0], edges[1]).all()
    uncut = candidate_edges(
        embedding, spacepoints, 1.0, attrs.evolve(shallow, cuts=PairCuts(min_pt_gev=0, max_z0_mm=0))
    )
    assert not compatible(uncut[0], uncut[1]).all()  # the neighbours in the embedding that the cuts leave out
    deep = candidate_edges(embedding, spacepoints, 1.0, attrs.evolve(shallow, query_k=16))
    assert compatible(deep[0], deep[1]).all()
    assert deep.shape[1] > 1.2 * edges.shape[1]


def test_two_points_within_the_radius_are_joined():
    assert radius_graph(np.array([[0.0, 0.0], [0.1, 0.0]]), 0.5, 4).tolist() == [[0], [1]]
    assert radius_graph(np.array([[0.0, 0.0], [0.6, 0.0]]), 0.5, 4).shape == (2, 0)


# --- overlapping modules: two hits of one particle on one layer ----------------------------------------------------


@pytest.fixture(scope="module")
def module_event():
    return simulate_event(SimulationConfig(geometry="modules", pileup=20.0), 424243, 0)


def test_truth_edges_between_overlapping_modules_pass(module_event):
    """On the module simulation a quarter of the truth edges join two hits of one layer (a particle crossing two
    overlapping modules).  The layer cut alone would drop them all, and with them every such particle's chance to be
    built whole; the overlap rule lets them through, so the fast particles' truth edges pass as on the cylinders."""
    truth = truth_graph(module_event)
    truth = truth[:, hit_particle_pt(module_event)[truth[0]] > 1.0]
    layer = module_event.spacepoints.layer_key
    within = layer[truth[0]] == layer[truth[1]]
    assert within.mean() > 0.15  # measured 0.26 (429 of 1639)
    passed = PairGeometry(module_event.spacepoints, PairCuts()).compatible(truth[0], truth[1])
    without = PairGeometry(module_event.spacepoints, PairCuts(max_overlap_mm=0)).compatible(truth[0], truth[1])
    assert passed.mean() > 0.99  # measured 0.993
    assert passed[within].mean() > 0.97
    assert not without[within].any()


def test_overlap_rule_against_hand_placed_hits(module_event):
    """One layer: hits on two modules 10 mm apart pass (and skip the pT and z0 cuts, which fail for hits at one
    radius); hits on one module 10 mm apart fail, and so do hits on two modules 50 mm apart; another layer is
    untouched by the rule."""
    spacepoints = attrs.evolve(
        module_event.spacepoints.take(np.arange(6)),
        x=[32.0, 32.5, 32.0, 32.0, 32.0, 72.0],
        y=[0.0, 10.0, 10.0, 50.0, 0.0, 0.0],
        z=[0.0, 0.0, 0.0, 0.0, 5.0, 0.0],
        volume_id=[8] * 6,
        layer_id=[2, 2, 2, 2, 2, 4],
        module_id=[1, 2, 1, 3, 1, 7],
    )
    geometry = PairGeometry(spacepoints, PairCuts())
    first, second = np.array([0, 0, 0, 1, 0]), np.array([1, 2, 3, 4, 5])
    assert geometry.compatible(first, second).tolist() == [True, False, False, True, True]
    assert geometry.overlap(first, second).tolist() == [True, False, False, True, False]
    assert geometry.compatible(np.array([0, 1]), np.array([0, 1])).tolist() == [False, False]  # one module
    cut = PairGeometry(spacepoints, PairCuts(max_overlap_mm=5.0))
    assert cut.compatible(first, second).tolist() == [False, False, False, False, True]


def test_truth_graph_joins_the_hits_of_overlapping_modules(module_event):
    """The truth graph orders a particle's hits by their distance from its vertex, so the two hits a particle leaves
    on overlapping modules of one layer are consecutive: a truth edge joins them."""
    truth = truth_graph(module_event)
    keys = set(zip(np.minimum(*truth).tolist(), np.maximum(*truth).tolist(), strict=True))
    spacepoints, particle = module_event.spacepoints, module_event.truth.particle_id
    rows = np.flatnonzero(particle > 0)
    rows = rows[np.lexsort((spacepoints.layer_key[rows], particle[rows]))]
    group = particle[rows] * 10**8 + spacepoints.layer_key[rows]
    _, start, count = np.unique(group, return_index=True, return_counts=True)
    a, b = rows[start[count == 2]], rows[start[count == 2] + 1]  # the (particle, layer) pairs with two hits
    geometry = PairGeometry(spacepoints, PairCuts())
    overlap = geometry.overlap(a, b)
    assert overlap.sum() > 1000  # measured 2086
    joined = [(min(x, y), max(x, y)) in keys for x, y in zip(a[overlap].tolist(), b[overlap].tolist(), strict=True)]
    assert all(joined)


# --- the field of the pT cut is the detector's ----------------------------------------------------------------------


def test_the_pt_cut_is_computed_in_the_field_it_is_given(event):
    """R_min = pT / (c B): 0.5 GeV in 4 T cuts as 0.25 GeV in 2 T; without a field nothing bends and the cut is off;
    without a field given, the default detector's."""
    spacepoints = event.spacepoints
    rng = np.random.default_rng(5)
    first, second = rng.integers(len(spacepoints), size=(2, 100_000))
    pt_only = PairCuts(different_layers=False, max_z0_mm=0)
    strong = PairGeometry(spacepoints, pt_only, bfield_t=4.0).compatible(first, second)
    weak = PairGeometry(spacepoints, attrs.evolve(pt_only, min_pt_gev=0.25), bfield_t=2.0).compatible(first, second)
    assert strong.tolist() == weak.tolist()
    assert strong.mean() > PairGeometry(spacepoints, pt_only, bfield_t=2.0).compatible(first, second).mean()
    assert PairGeometry(spacepoints, pt_only, bfield_t=0.0).compatible(first, second).all()
    assert PairGeometry(spacepoints, pt_only).bfield_t == trackml_detector().bfield_t == 2.0


def test_the_cuts_have_no_field_of_their_own():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) bfield_t"):
        load_job_options(None, ["finding.graph.cuts.bfield_t=3.8"])


def test_the_job_finder_takes_the_field_of_the_job_detector(tmp_path):
    path = tmp_path / "detector.toml"
    path.write_text(trackml_detector(3.8).to_toml())
    processor = EventProcessor(load_job_options(None, [f"job.detector={str(path)!r}"]))
    assert processor.finder.graph.bfield_t == 3.8
    processor.finder.close()
    # a served chain computes the cuts on the server, in the default detector's field: refused for another field
    with pytest.raises(ConfigError, match=r"has a 3\.8 T field, but \[finding\] serving = 'chain'"):
        load_job_options(SERVICE_OPTIONS, [f"job.detector={str(path)!r}"])
