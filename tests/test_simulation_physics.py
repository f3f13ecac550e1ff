"""Physics of the simulation, checked from its output alone (truth and measured hits, particles, geometry)."""

from __future__ import annotations

import attrs
import numpy as np
import pytest

from tracking_algs.event import Event
from tracking_algs.geometry import trackml_detector
from tracking_algs.simulation import SimulationConfig, simulate_event

B_TESLA = 2.0
C_LIGHT = 0.299792458  # GeV / (T · m)
PION_MASS = 0.13957
DETECTOR = trackml_detector(B_TESLA)
CLEAN = SimulationConfig(pileup=20, hit_inefficiency=0.0, noise_fraction=0.0)


def particle_of_hits(event: Event) -> np.ndarray:
    """Row in event.particles of every hit's particle (all hits must belong to a particle)."""
    ids = event.particles.particle_id
    order = np.argsort(ids)
    rows = order[np.searchsorted(ids, event.truth.particle_id, sorter=order)]
    assert np.array_equal(ids[rows], event.truth.particle_id)
    return rows


def surface_table(event: Event, attribute: str) -> np.ndarray:
    """One attribute of each hit's surface, looked up by (volume_id, layer_id)."""
    by_ids = {(s.volume_id, s.layer_id): getattr(s, attribute) for s in DETECTOR.surfaces}
    sp = event.spacepoints
    return np.array([by_ids[key] for key in zip(sp.volume_id.tolist(), sp.layer_id.tolist(), strict=True)])


@pytest.fixture(scope="module")
def unscattered() -> Event:
    return simulate_event(attrs.evolve(CLEAN, multiple_scattering=False), seed=21)


def test_truth_hits_lie_on_the_helix_without_scattering(unscattered):
    event = unscattered
    truth, particles = event.truth, event.particles
    row = particle_of_hits(event)
    pt = particles.pt[row]
    radius = pt / (C_LIGHT * B_TESLA) * 1000.0  # mm
    q = particles.q[row]
    # a positive charge in +z field turns clockwise: the centre lies along (py, -px) from the vertex
    cx = particles.vx[row] + q * radius * particles.py[row] / pt
    cy = particles.vy[row] - q * radius * particles.px[row] / pt
    distance = np.hypot(truth.tx - cx, truth.ty - cy)
    np.testing.assert_allclose(distance, radius, rtol=1e-7, atol=1e-6)
    # z advances linearly with the turning angle: z − vz = (pz/pT) · R · psi
    chord = np.hypot(truth.tx - particles.vx[row], truth.ty - particles.vy[row])
    psi = 2.0 * np.arcsin(np.clip(chord / (2.0 * radius), 0.0, 1.0))
    well_defined = chord < 1.9 * radius  # away from the half-turn point, where arcsin loses precision
    expected_z = particles.vz[row] + particles.pz[row] / pt * radius * psi
    np.testing.assert_allclose(truth.tz[well_defined], expected_z[well_defined], atol=1e-3)
    # momentum: magnitude and pz kept, direction tangent to the circle
    np.testing.assert_allclose(np.hypot(truth.tpx, truth.tpy), pt, rtol=1e-9)
    np.testing.assert_allclose(truth.tpz, particles.pz[row], rtol=1e-12)
    tangent = (truth.tx - cx) * truth.tpx + (truth.ty - cy) * truth.tpy
    np.testing.assert_allclose(tangent / (radius * pt), 0.0, atol=1e-7)


def test_truth_hits_lie_on_their_surfaces(unscattered):
    event = unscattered
    barrel = surface_table(event, "kind") == "barrel"
    position = surface_table(event, "position")
    truth = event.truth
    np.testing.assert_allclose(np.hypot(truth.tx, truth.ty)[barrel], position[barrel], rtol=1e-9)
    np.testing.assert_allclose(truth.tz[~barrel], position[~barrel], rtol=1e-12)
    extent = surface_table(event, "extent")
    along = np.where(barrel, truth.tz, np.hypot(truth.tx, truth.ty))
    assert np.all((along >= extent[:, 0] - 1e-9) & (along <= extent[:, 1] + 1e-9))


def test_smearing_has_the_surface_resolutions():
    event = simulate_event(attrs.evolve(CLEAN, pileup=80), seed=22)
    sp, truth = event.spacepoints, event.truth
    r_true = np.hypot(truth.tx, truth.ty)
    d_rphi = r_true * np.angle(np.exp(1j * (sp.phi - np.arctan2(truth.ty, truth.tx))))
    barrel = surface_table(event, "kind") == "barrel"
    resolution = surface_table(event, "resolution")
    d_second = np.where(barrel, sp.z - truth.tz, sp.r - r_true)
    np.testing.assert_array_equal(sp.sigma, resolution)
    checked = 0
    for kind in (True, False):
        for subsystem in ("pixel", "short_strip", "long_strip"):
            rows = (barrel == kind) & (surface_table(event, "subsystem") == subsystem)
            if rows.sum() < 800:
                continue
            for delta, column in ((d_rphi, 0), (d_second, 1)):
                width = np.std(delta[rows])
                assert width == pytest.approx(resolution[rows, column][0], rel=0.06), (kind, subsystem, column)
                assert abs(np.mean(delta[rows])) < 4 * width / np.sqrt(rows.sum())
            checked += 1
    assert checked >= 4
    # measurements stay on their surface
    np.testing.assert_allclose(np.where(barrel, sp.r, sp.z), surface_table(event, "position"), rtol=1e-9)


def test_scattering_angles_follow_highland():
    """Between consecutive hits of a particle the polar angle of the momentum changes only by scattering
    in the first of the two layers (the field does not change it): compare with Highland."""
    event = simulate_event(attrs.evolve(CLEAN, pileup=60), seed=23)
    truth = event.truth
    sp = event.spacepoints
    distance = np.hypot(truth.tx, truth.ty) + np.abs(truth.tz)
    order = np.lexsort((distance, truth.particle_id))
    first, second = order[:-1], order[1:]
    pair = truth.particle_id[first] == truth.particle_id[second]
    first, second = first[pair], second[pair]

    momentum = np.column_stack((truth.tpx, truth.tpy, truth.tpz))[first]
    p = np.linalg.norm(momentum, axis=1)
    theta_in = np.arctan2(np.hypot(truth.tpx, truth.tpy), truth.tpz)
    d_theta = theta_in[second] - theta_in[first]

    barrel = (surface_table(event, "kind") == "barrel")[first]
    x0 = surface_table(event, "x_over_x0")[first]
    radial = (truth.tx * truth.tpx + truth.ty * truth.tpy)[first] / (np.hypot(truth.tx, truth.ty)[first] * p)
    cos_incidence = np.abs(np.where(barrel, radial, momentum[:, 2] / p))
    beta = p / np.hypot(p, PION_MASS)
    x = x0 / cos_incidence
    theta0 = 0.0136 / (beta * p) * np.sqrt(x) * (1 + 0.038 * np.log(x / beta**2))
    keep = (cos_incidence > 0.2) & (theta0 < 0.05)
    assert keep.sum() > 5000
    pulls = d_theta[keep] / theta0[keep]
    assert np.std(pulls) == pytest.approx(1.0, rel=0.1)
    # and per material budget: pixel (x/X0 0.012) and strips (0.020, 0.025) separately
    for value in np.unique(x0[keep]):
        chosen = x0[keep] == value
        assert np.std(pulls[chosen]) == pytest.approx(1.0, rel=0.1), value
    assert len(sp) == len(truth)


def test_loopers_stop_after_half_a_turn(unscattered):
    def recrossings(event: Event) -> int:
        sp = event.spacepoints
        keys = np.column_stack((event.truth.particle_id, sp.volume_id, sp.layer_id))
        return len(keys) - len(np.unique(keys, axis=0))

    event = unscattered
    truth, particles = event.truth, event.particles
    row = particle_of_hits(event)
    radius = particles.pt[row] / (C_LIGHT * B_TESLA) * 1000.0
    # half a turn: no hit beyond the circle's diameter, each layer crossed once, moving outwards in r
    assert np.all(np.hypot(truth.tx - particles.vx[row], truth.ty - particles.vy[row]) <= 2 * radius * (1 + 1e-9))
    assert recrossings(event) == 0
    loopers = particles.pt[row] < 0.25
    assert loopers.sum() > 100
    radial = truth.tx * truth.tpx + truth.ty * truth.tpy
    assert np.all(radial[loopers] > -1e-3 * np.hypot(truth.tx, truth.ty)[loopers])
    # letting them loop one and a half turns makes low-pT particles cross their layers again
    looping = simulate_event(attrs.evolve(CLEAN, multiple_scattering=False, looper_max_turns=1.5), seed=21)
    assert recrossings(looping) > 100
    assert len(looping.spacepoints) > len(event.spacepoints)


def test_inefficiency_and_noise_fractions():
    config = attrs.evolve(CLEAN, hit_inefficiency=0.1, noise_fraction=0.2)
    event = simulate_event(config, seed=21)
    reference = simulate_event(attrs.evolve(CLEAN, noise_fraction=0.2), seed=21)
    noise = event.truth.particle_id == 0
    assert noise.sum() == pytest.approx(0.2 * (~noise).sum(), abs=1)
    n_ref = (reference.truth.particle_id != 0).sum()
    assert (~noise).sum() / n_ref == pytest.approx(0.9, abs=0.02)
    np.testing.assert_array_equal(event.truth.tpx[noise], 0.0)


def test_generated_spectrum_and_beam_spot():
    event = simulate_event(SimulationConfig(pileup=200, signal=False), seed=3)
    particles = event.particles
    assert np.all(particles.pt >= 0.1)
    assert np.mean(particles.pt) == pytest.approx(0.57, abs=0.05)
    assert np.mean(particles.pt > 2.0) < 0.05  # a falling spectrum with a tail
    assert np.max(particles.pt) > 3.0
    assert np.all(np.abs(particles.eta) <= 4.0)
    assert abs(np.mean(particles.eta)) < 0.1
    _, first = np.unique(particles.particle_id >> 20, return_index=True)
    vz = particles.vz[first]
    assert len(vz) == pytest.approx(200, abs=60)
    assert np.std(vz) == pytest.approx(50.0, rel=0.2)
    assert np.std(particles.vx[first]) == pytest.approx(0.0125, rel=0.25)


def test_signal_adds_high_pt_jets():
    config = SimulationConfig(pileup=0, signal=True, signal_jets=3, signal_tracks_per_jet=8)
    event = simulate_event(config, seed=4)
    hard = event.particles.pt >= 1.0
    assert hard.sum() >= 24
    assert np.mean(event.particles.pt[hard]) > 3.0
    assert np.all(event.particles.particle_id >> 20 == 1)  # all from interaction 0
