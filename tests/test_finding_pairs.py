"""The geometric pair cuts of graph construction, on simulated events, in the field of the job's detector."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pytest

from inference_iface.errors import ConfigError
from tracking_algs.finding.config import PairCuts
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
    assert (
        PairGeometry(spacepoints, PairCuts(min_pt_gev=0, max_z0_mm=0)).compatible(first, second).tolist()
        == (~same_layer).tolist()
    )
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
