"""Simulation on the TrackML modules (``SimulationConfig(geometry="modules")``): hits on the module planes,
secondaries, clusters of cells, statistics near the real TrackML events; and the cylinder simulation unchanged by
it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs
import numpy as np
import pytest
from scipy.spatial import cKDTree

from tracking_algs.geometry import trackml_detector
from tracking_algs.io.trackml import read_event, write_event
from tracking_algs.magnetic_field import SolenoidField
from tracking_algs.modules import TRACKML_BEAM_PIPE, TRACKML_SUPPORT_TUBE, on_supports, trackml_modules
from tracking_algs.performance.scattering import polar_turns
from tracking_algs.simulation import SimulationConfig, simulate_event
from tracking_algs.simulation.cells import cluster
from tracking_algs.simulation.config import SILICON_X0_OVER_LAMBDA
from tracking_algs.simulation.generator import PARTICLE_ID_SHIFT
from tracking_algs.simulation.module_navigation import module_layers, propagate_modules
from tracking_algs.simulation.secondaries import (
    DECAYING_BIT,
    KSHORT,
    LAMBDA,
    PARTICLE_KINDS,
    PHOTON_BIT,
    PRODUCT_SHIFT,
    particle_kinds,
)
from tracking_algs.simulation.streams import counter_normal, counter_uniform

MODULES = SimulationConfig(pileup=50, geometry="modules")
#: the real TrackML figures (docs/benchmarks.md, "Simulated detector against real TrackML events"): hits per
#: interaction of the full pile-up-200 events (99 066 hits, about 201 interactions), hits per particle with hits,
#: (particle, layer) pairs with 2+ hits, cells per hit (the truth sample)
REAL_HITS_PER_INTERACTION, REAL_HITS_PER_PARTICLE, REAL_DOUBLE_FRACTION, REAL_CELLS_PER_HIT = 493.0, 10.0, 0.28, 3.4


@pytest.fixture(scope="module")
def event():
    return simulate_event(MODULES, 11, 3)


def _local(event):
    geometry = trackml_modules()
    sp = event.spacepoints
    rows = geometry.lookup(sp.volume_id, sp.layer_id, sp.module_id)
    assert np.all(rows >= 0)
    measured = geometry.to_local(rows, np.column_stack((sp.x, sp.y, sp.z)))
    truth = geometry.to_local(rows, np.column_stack((event.truth.tx, event.truth.ty, event.truth.tz)))
    return geometry, rows, measured, truth


def _secondary(particles) -> np.ndarray:
    return (particles.particle_id >> PRODUCT_SHIFT) > 0


def _kind(particles, name: str) -> np.ndarray:
    return particle_kinds(particles.particle_id) == PARTICLE_KINDS.index(name)


def _converted(particles) -> np.ndarray:
    return _kind(particles, "conversion")


def _decayed(particles) -> np.ndarray:
    """The products of the K⁰_S and Λ decaying in flight."""
    return _kind(particles, "decay_in_flight")


def _hadronic(particles) -> np.ndarray:
    return _kind(particles, "nuclear_interaction")


def test_every_secondary_is_of_one_kind(event):
    """The kinds told by the ids: the primaries are the particles without a parent, the photons' products come in
    e⁻e⁺ pairs' charges, and every other secondary is a hadron out of a nuclear interaction or a decay product."""
    particles = event.particles
    kinds = particle_kinds(particles.particle_id)
    assert np.array_equal(kinds == 0, ~_secondary(particles))
    assert set(np.unique(kinds)) == set(range(len(PARTICLE_KINDS)))
    product = particles.particle_id >> PRODUCT_SHIFT
    assert np.all(particles.q[_converted(particles)] == np.where(product[_converted(particles)] == 1, -1, 1))
    assert np.all(((particles.particle_id[_decayed(particles)] >> DECAYING_BIT) & 1) == 1)
    assert np.all(((particles.particle_id[_hadronic(particles)] >> PHOTON_BIT) & 1) == 0)


def test_hits_lie_on_their_module_plane_inside_its_bounds(event):
    geometry, rows, (u, v, w), (tu, tv, tw) = _local(event)
    assert np.abs(w).max() < 1e-6
    assert np.abs(tw).max() < 1e-6
    assert geometry.inside(rows, u, v, tolerance=1e-9).all()
    assert geometry.inside(rows, tu, tv, tolerance=1e-9).all()
    # the measurement is the centroid of the cluster: within half a pitch of the true crossing when the cluster
    # does not reach the module's edge (a cluster cut by the edge pulls its centroid inwards); in u, plus how far
    # the trapezoid's slanted edge moves over half a cell in v
    cells = event.cells
    size_u = np.ceil(2 * geometry.max_half_u / geometry.pitch_u - 1e-9).astype(np.int64)
    size_v = np.ceil(2 * geometry.half_v / geometry.pitch_v - 1e-9).astype(np.int64)
    row_of_cell = rows[np.searchsorted(event.spacepoints.hit_id, cells.hit_id)]
    at_edge = (cells.ch0 == 0) | (cells.ch1 == 0) | (cells.ch0 == size_u[row_of_cell] - 1)
    at_edge |= cells.ch1 == size_v[row_of_cell] - 1
    particle = event.truth.particle_id != 0
    inner = ~np.isin(event.spacepoints.hit_id, cells.hit_id[at_edge]) & particle
    assert inner.sum() > 0.95 * particle.sum()
    pitch_u, pitch_v = geometry.pitch_u[rows], geometry.pitch_v[rows]
    slant = (geometry.max_half_u - geometry.min_half_u)[rows] / (2 * geometry.half_v[rows]) * pitch_v / 2
    assert np.all((np.abs(u - tu) <= pitch_u / 2 + slant + 1e-9)[inner])
    assert np.all((np.abs(v - tv) <= pitch_v / 2 + 1e-9)[inner])
    # each hit's error is its cluster's (at most the cell's pitch / √12) and describes the centroids' spread
    sigma = event.spacepoints.sigma
    assert np.all((sigma > 0.0) & (sigma <= geometry.resolution(rows) + 1e-12))
    pulls = np.column_stack((u - tu, v - tv))[particle] / sigma[particle]
    assert np.all(np.abs(pulls.std(axis=0) - 1.0) < 0.15)


def test_event_is_ordered_and_consistent(event):
    sp, truth, particles = event.spacepoints, event.truth, event.particles
    assert np.array_equal(sp.hit_id, np.arange(1, len(sp) + 1))
    order = np.lexsort((sp.module_id, sp.layer_id, sp.volume_id))
    assert np.array_equal(order, np.arange(len(sp)))
    noise = truth.particle_id == 0
    assert truth.weight.sum() == pytest.approx(1.0)
    assert particles.nhits.sum() == (~noise).sum()
    momentum = np.hypot(truth.tpx, truth.tpy)[~noise]
    assert np.all(momentum > 0)


def test_per_layer_hit_counts(event):
    sp, noise = event.spacepoints, event.truth.particle_id == 0
    layers = np.unique(np.stack([trackml_modules().volume_id, trackml_modules().layer_id], axis=-1), axis=0)
    key = sp.volume_id * 100 + sp.layer_id
    counts = {(int(vol), int(lay)): int(((key == vol * 100 + lay) & ~noise).sum()) for vol, lay in layers}
    assert len(counts) == 48
    assert min(counts.values()) > 0  # every layer gets particle hits
    pixel_barrel = [counts[(8, layer)] for layer in (2, 4, 6, 8)]
    n_particles = len(event.particles)
    # the innermost pixel layer: about one hit per central particle (|η| < ~2.6 of a flat ±4), times the overlaps
    assert 0.5 * n_particles < pixel_barrel[0] < 1.2 * n_particles
    # fewer particles reach the outer barrel layers (low pT, acceptance in z)
    assert pixel_barrel[0] > pixel_barrel[3]
    assert counts[(17, 2)] > counts[(17, 4)]


def test_noise_per_volume_follows_the_configured_rates(event):
    sp, noise = event.spacepoints, event.truth.particle_id == 0
    n_particle_hits = int((~noise).sum())
    for volume, rate in zip(MODULES.module_noise_volumes, MODULES.module_noise_per_particle_hit, strict=True):
        assert ((sp.volume_id == volume) & noise).sum() == round(rate * n_particle_hits)
    assert 0.13 < noise.mean() < 0.17  # the real TrackML 15 %


def test_overlaps_give_two_hits_per_layer_as_often_as_in_trackml(event):
    truth, sp = event.truth, event.spacepoints
    particle = truth.particle_id != 0
    key = np.stack([truth.particle_id, sp.volume_id, sp.layer_id], axis=-1)[particle]
    _, counts = np.unique(key, axis=0, return_counts=True)
    assert 0.15 < np.mean(counts >= 2) < 0.40  # real TrackML: 28 % of (particle, layer) pairs


def test_a_layers_material_scatters_once_after_its_last_module(event):
    """In the uniform field only scattering turns a particle's polar angle: between two hits on overlapping modules
    of one layer it stays (the layer's material lies after its last module), and between the last hit of a barrel
    layer and the next layer's it turns by the Highland width of that module's material (RMS over the pairs)."""
    particle_ids = np.unique(event.truth.particle_id)
    primaries = particle_ids[(particle_ids != 0) & ((particle_ids >> PRODUCT_SHIFT) == 0)]
    turns = polar_turns(event, trackml_modules(), primaries)
    assert turns.same_layer.sum() > 1000
    assert np.abs(turns.turn[turns.same_layer]).max() < 1e-12
    volume = event.spacepoints.volume_id
    next_layer = np.isin(volume[turns.first], (8, 13, 17)) & (volume[turns.first] == volume[turns.second])
    next_layer &= ~turns.same_layer & (turns.p > 2.0)  # β ≈ 1 for every species
    relative = turns.turn[next_layer] / turns.highland[next_layer]
    assert len(relative) > 300
    assert np.sqrt(np.mean(relative**2)) == pytest.approx(1.0, abs=0.1)


def test_same_seed_same_event_other_event_differs(event):
    again = simulate_event(MODULES, 11, 3)
    for name in ("spacepoints", "truth", "particles", "cells"):
        a, b = getattr(event, name), getattr(again, name)
        for field in attrs.fields(type(a)):
            assert np.array_equal(getattr(a, field.name), getattr(b, field.name)), (name, field.name)
    other = simulate_event(MODULES, 11, 4)
    assert len(other.spacepoints) != len(event.spacepoints) or not np.array_equal(other.spacepoints.x,
                                                                                   event.spacepoints.x)  # fmt: skip


def test_same_primaries_as_the_cylinder_simulation_then_the_secondaries(event):
    cylinders = simulate_event(attrs.evolve(MODULES, geometry="cylinders"), 11, 3)
    n = len(cylinders.particles)
    assert np.array_equal(cylinders.particles.particle_id, event.particles.particle_id[:n])
    assert np.array_equal(cylinders.particles.px, event.particles.px[:n])
    assert _secondary(event.particles)[n:].all()
    assert len(np.unique(event.particles.particle_id)) == len(event.particles)


def test_tuned_multiplicity_applies_to_the_modules_only():
    assert SimulationConfig().particles_per_interaction == 50.0
    assert SimulationConfig(geometry="modules").particles_per_interaction == 35.0
    assert SimulationConfig(geometry="modules", particles_per_interaction=7).particles_per_interaction == 7


def _on_a_module(points: np.ndarray) -> np.ndarray:
    """Whether each point lies on the mid-plane of some module, inside its bounds."""
    geometry = trackml_modules()
    reach = float(np.hypot(geometry.max_half_u, geometry.half_v).max()) + 1e-3
    found = np.zeros(len(points), dtype=bool)
    for k, near in enumerate(cKDTree(geometry.c).query_ball_point(points, reach)):
        rows = np.asarray(near, dtype=np.int64)
        u, v, w = geometry.to_local(rows, np.repeat(points[k : k + 1], len(rows), axis=0))
        found[k] = np.any((np.abs(w) < 1e-6) & geometry.inside(rows, u, v, tolerance=1e-6))
    return found


def _on_a_support(points: np.ndarray) -> np.ndarray:
    """Whether each point lies on one of the passive cylinders (the beam pipe, the pixel support tube)."""
    return on_supports(*points.T, reach_mm=1e-6)


def test_secondaries_are_made_on_module_surfaces_and_passive_cylinders_off_the_beam_line(event):
    particles = event.particles
    secondary = _secondary(particles) & ~_decayed(particles)
    converted = _converted(particles)
    assert _hadronic(particles).sum() > 50  # nuclear interactions
    assert converted.sum() > 50  # photon conversions
    vertex = np.column_stack((particles.vx, particles.vy, particles.vz))[secondary]
    on_support = _on_a_support(vertex)
    assert 0.05 < on_support.mean() < 0.6  # the beam pipe and the support tube, besides the modules
    assert np.hypot(vertex[:, 0], vertex[:, 1]).min() > TRACKML_BEAM_PIPE.radius - 1e-6
    assert _on_a_module(vertex[~on_support]).all()
    primary_vertex = np.column_stack((particles.vx, particles.vy, particles.vz))[~secondary]
    assert not _on_a_module(primary_vertex[:200]).any()
    # secondaries have hits of their own, under their own ids, and pT above the generator's threshold
    assert (particles.nhits[secondary] > 0).mean() > 0.5
    assert particles.pt[secondary].min() >= MODULES.pt_min_gev


def test_hadrons_and_photons_end_in_the_beam_pipe_at_the_rates_of_its_material():
    """Straight particles at η = 0 cross the beam pipe at normal incidence: a hadron ends there with probability
    1 − exp(−k · (x/λ) / (X0/λ of silicon)), a photon with 1 − exp(−k · x/X0), k the rate per silicon X0."""
    n, rate = 20_000, 20.0
    phi = np.linspace(-np.pi, np.pi, n, endpoint=False)
    momentum = 1.0e5 * np.column_stack((np.cos(phi), np.sin(phi), np.zeros(n)))
    hadronic = np.arange(n) % 2 == 0
    crossings = propagate_modules(np.zeros((n, 3)), momentum, np.ones(n), trackml_detector(), module_layers(), 1,
                                  ends_per_x0=np.full(n, rate), ending_key=2, hadronic=hadronic)  # fmt: skip
    ends = crossings.take(crossings.module < 0)
    assert ends.ended.all()
    at_pipe = np.zeros(n, dtype=bool)
    at_pipe[ends.particle[TRACKML_BEAM_PIPE.holds(*ends.position.T, reach_mm=1e-6)]] = True
    assert TRACKML_SUPPORT_TUBE.holds(*ends.position.T, reach_mm=1e-6).any()  # some go on to end in the tube
    for chosen, reach in ((hadronic, TRACKML_BEAM_PIPE.x_over_lambda / SILICON_X0_OVER_LAMBDA),
                          (~hadronic, TRACKML_BEAM_PIPE.x_over_x0)):  # fmt: skip
        expected = -np.expm1(-rate * reach)
        tolerance = 4.0 * np.sqrt(expected * (1.0 - expected) / chosen.sum())
        assert abs(at_pipe[chosen].mean() - expected) < tolerance


def test_photon_conversions_give_opposite_charge_pairs(event):
    particles = event.particles.take(_converted(event.particles))
    photon = particles.particle_id & ((1 << PRODUCT_SHIFT) - 1)
    product = particles.particle_id >> PRODUCT_SHIFT
    assert set(np.unique(product)) == {1, 2}
    assert np.all(particles.q[product == 1] == -1)
    assert np.all(particles.q[product == 2] == 1)
    ids, counts = np.unique(photon, return_counts=True)
    assert (counts == 2).sum() > 20  # pairs with both above the pT threshold
    pairs = np.flatnonzero(np.isin(photon, ids[counts == 2]))
    pairs = pairs[np.argsort(photon[pairs], kind="stable")].reshape(-1, 2)
    electron, positron = pairs[:, 0], pairs[:, 1]
    assert np.all(particles.q[electron] + particles.q[positron] == 0)
    for name in ("vx", "vy", "vz"):
        assert np.array_equal(getattr(particles, name)[electron], getattr(particles, name)[positron])
    momentum = np.column_stack((particles.px, particles.py, particles.pz))
    cross = np.cross(momentum[electron], momentum[positron])
    assert np.all(np.linalg.norm(cross, axis=1) <= 1e-9 * np.prod(np.linalg.norm(momentum[pairs], axis=2), axis=1))


def test_a_hadron_leaves_no_hit_beyond_its_nuclear_interaction(event):
    particles, truth = event.particles, event.truth
    hadronic = _hadronic(particles)
    parent = particles.particle_id[hadronic] & ((1 << PRODUCT_SHIFT) - 1)
    parents, first = np.unique(parent, return_index=True)
    rows = np.flatnonzero(hadronic)[first]
    vertex = np.column_stack((particles.vx, particles.vy, particles.vz))
    at = dict(zip(parents.tolist(), vertex[rows], strict=True))
    row_of = {int(p): i for i, p in enumerate(particles.particle_id)}
    origin = {pid: vertex[row_of[pid]] for pid in at}
    hit = np.column_stack((truth.tx, truth.ty, truth.tz))
    in_module = {pid: not _on_a_support(point[None])[0] for pid, point in at.items()}
    assert 0 < sum(in_module.values()) < len(at)  # some end in a passive cylinder
    ended_at_a_hit = 0
    for pid in at:
        own = hit[truth.particle_id == pid]
        reach = np.linalg.norm(at[pid] - origin[pid])
        assert np.all(np.linalg.norm(own - origin[pid], axis=1) <= reach + 1e-6)
        ended_at_a_hit += bool(np.any(np.linalg.norm(own - at[pid], axis=1) < 1e-9))
    # in a module, its last crossing is a hit (unless lost to the inefficiency)
    assert ended_at_a_hit >= 0.9 * sum(in_module.values())


def _decay_pairs(particles):
    """Rows [n, 2] (positive, negative product) of the decays whose two products are both in ``particles``."""
    decayed = np.flatnonzero(_decayed(particles))
    parent = particles.particle_id[decayed] & ((1 << PRODUCT_SHIFT) - 1)
    ids, counts = np.unique(parent, return_counts=True)
    both = np.isin(parent, ids[counts == 2])
    rows, parent = decayed[both], parent[both]
    return rows[np.lexsort((particles.particle_id[rows] >> PRODUCT_SHIFT, parent))].reshape(-1, 2)


def _pair_kinds(particles, pairs):
    """Masks over ``pairs``: a K⁰_S (π⁺π⁻ of its mass) and a Λ or Λ̄ (pπ⁻ or p̄π⁺ of its mass)."""
    momentum = np.column_stack((particles.px, particles.py, particles.pz))
    p2 = np.sum(momentum**2, axis=1)
    total = momentum[pairs[:, 0]] + momentum[pairs[:, 1]]

    def mass(m_positive, m_negative):
        energy = np.sqrt(p2[pairs[:, 0]] + m_positive**2) + np.sqrt(p2[pairs[:, 1]] + m_negative**2)
        return np.sqrt(energy**2 - np.sum(total**2, axis=1))

    pion, proton = KSHORT.positive_mass_gev, LAMBDA.positive_mass_gev
    kshort = np.abs(mass(pion, pion) - KSHORT.mass_gev) < 1e-6
    lam = (np.abs(mass(proton, pion) - LAMBDA.mass_gev) < 1e-6) | (np.abs(mass(pion, proton) - LAMBDA.mass_gev) < 1e-6)
    return kshort, lam


def _flights(particles, pairs):
    """The flight [n, 3] (mm) of the decaying particle of each pair, from its interaction's vertex (that of the
    interaction's primaries) to the pair's vertex, and its momentum [n, 3] (GeV: the pair's total)."""
    vertex = np.column_stack((particles.vx, particles.vy, particles.vz))
    momentum = np.column_stack((particles.px, particles.py, particles.pz))
    primary = ~_secondary(particles)
    at = dict(zip((particles.particle_id[primary] >> PARTICLE_ID_SHIFT).tolist(), vertex[primary], strict=False))
    interaction = (particles.particle_id[pairs[:, 0]] & ((1 << DECAYING_BIT) - 1)) >> PARTICLE_ID_SHIFT
    origin = np.array([at[i] for i in interaction.tolist()])
    return vertex[pairs[:, 0]] - origin, momentum[pairs[:, 0]] + momentum[pairs[:, 1]]


def test_kshorts_and_lambdas_decay_in_flight_into_pairs_of_their_mass(event):
    """Each pair of decay products comes from one point on the straight line from its interaction's vertex along
    the pair's total momentum, with opposite charges and the invariant mass of a K⁰_S (π⁺π⁻) or a Λ (pπ⁻, p̄π⁺)."""
    particles = event.particles
    pairs = _decay_pairs(particles)
    assert len(pairs) > 50
    assert np.all(particles.q[pairs[:, 0]] == 1)
    assert np.all(particles.q[pairs[:, 1]] == -1)
    for name in ("vx", "vy", "vz"):
        assert np.array_equal(getattr(particles, name)[pairs[:, 0]], getattr(particles, name)[pairs[:, 1]])
    kshort, lam = _pair_kinds(particles, pairs)
    assert np.all(kshort ^ lam)
    assert kshort.sum() > lam.sum() > 0
    flight, momentum = _flights(particles, pairs)
    sine = np.linalg.norm(np.cross(flight, momentum), axis=1)
    sine /= np.linalg.norm(flight, axis=1) * np.linalg.norm(momentum, axis=1)
    assert np.all(sine < 1e-6)


def test_decay_lengths_follow_the_lifetimes():
    """The flight length over βγcτ is exponential of mean 1 (the standard error of the mean of n draws: 1/√n)."""
    particles = simulate_event(attrs.evolve(MODULES, pileup=200), 31, 0).particles
    pairs = _decay_pairs(particles)
    kshort, lam = _pair_kinds(particles, pairs)
    flight, momentum = _flights(particles, pairs)
    beta_gamma_ctau = np.linalg.norm(momentum, axis=1) * np.where(
        lam, LAMBDA.ctau_mm / LAMBDA.mass_gev, KSHORT.ctau_mm / KSHORT.mass_gev
    )
    scaled = np.linalg.norm(flight, axis=1) / beta_gamma_ctau
    for chosen in (kshort, lam):
        assert chosen.sum() > 50
        assert abs(scaled[chosen].mean() - 1.0) < 4.0 / np.sqrt(chosen.sum())


def test_no_decays_in_flight_at_zero_rates(event):
    config = attrs.evolve(MODULES, kshorts_per_particle=0.0, lambdas_per_particle=0.0)
    particles = simulate_event(config, 11, 3).particles
    assert not _decayed(particles).any()
    assert _hadronic(particles).sum() == _hadronic(event.particles).sum()  # the other secondaries stay as they were


def test_cells_are_written_and_read_back(event, tmp_path):
    cells = event.cells
    assert np.array_equal(np.unique(cells.hit_id), event.spacepoints.hit_id)  # every hit has a cluster
    assert np.all(cells.value > 0)
    assert np.all(np.diff(cells.hit_id) >= 0)
    write_event(tmp_path, event)
    assert (tmp_path / f"event{event.event_id:09d}-cells.csv").is_file()
    back = read_event(tmp_path, event.event_id, cells=True)
    for field in attrs.fields(type(cells)):
        assert np.array_equal(getattr(back.cells, field.name), getattr(cells, field.name)), field.name
    assert read_event(tmp_path, event.event_id).cells is None


def test_cluster_size_grows_with_incidence_angle():
    geometry = trackml_modules()
    row = int(np.flatnonzero((geometry.volume_id == 8) & (geometry.layer_id == 2))[0])
    angles = np.radians([0.0, 20.0, 45.0, 60.0, 70.0, 80.0])
    local = np.column_stack((np.zeros(len(angles)), np.sin(angles), np.cos(angles)))  # tilted along v
    rows = np.full(len(angles), row)
    direction = np.einsum("nij,nj->ni", geometry.rot[rows], local)
    offsets = np.linspace(-0.5, 0.5, 41) * geometry.pitch_v[row]  # crossing points all over a cell
    sizes = []
    for offset in offsets:
        clusters = cluster(geometry, rows, np.full(len(angles), 0.01), np.full(len(angles), offset), direction, 0.0)
        sizes.append(np.bincount(clusters.hit, minlength=len(angles)))
        assert np.allclose(np.bincount(clusters.hit, weights=clusters.value), 1 / np.cos(angles))
    mean = np.mean(sizes, axis=0)
    extent = geometry.half_thickness[row] * np.tan(angles) / geometry.pitch_v[row]  # the path's extent in cells
    assert np.all(np.diff(mean) > 0)
    assert np.allclose(mean, 1 + extent, atol=0.1)  # a segment of e cells covers 1 + e cells on average


def test_cluster_size_follows_the_incidence_in_the_event(event):
    geometry, rows, _, _ = _local(event)
    sp, truth = event.spacepoints, event.truth
    barrel_pixel = np.flatnonzero((sp.volume_id == 8) & (truth.particle_id != 0))
    momentum = np.column_stack((truth.tpx, truth.tpy, truth.tpz))[barrel_pixel]
    rows = rows[barrel_pixel]
    local = np.einsum("nji,nj->ni", geometry.rot[rows], momentum)
    extent = geometry.half_thickness[rows] * np.abs(local[:, 1] / local[:, 2]) / geometry.pitch_v[rows]
    _, first = np.unique(event.cells.hit_id, return_index=True)
    along_v = np.array([len(np.unique(c)) for c in np.split(event.cells.ch1, first[1:])])[barrel_pixel]
    bins = np.digitize(extent, [0.5, 2.0, 5.0, 10.0])
    means = [along_v[bins == b].mean() for b in range(5)]
    assert np.all(np.diff(means) > 0)


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_statistics_are_near_the_real_trackml_events(seed):
    """Bounds several standard deviations wide around the simulation's own figures, which lie within ±25 % of the
    real TrackML ones: they hold for any seed. Hits per interaction are 1.23 ± 0.04 times the real ones at pile-up
    50 (seeds 20–35; the photon conversions the real events lack)."""
    event = simulate_event(MODULES, seed, 0)
    particles, truth, sp = event.particles, event.truth, event.spacepoints
    interactions = len(np.unique(particles.particle_id[~_secondary(particles)] >> PARTICLE_ID_SHIFT))
    assert 0.8 < len(sp) / interactions / REAL_HITS_PER_INTERACTION < 1.4
    assert 0.85 < particles.nhits[particles.nhits > 0].mean() / REAL_HITS_PER_PARTICLE < 1.25
    particle = truth.particle_id != 0
    key = np.stack([truth.particle_id, sp.volume_id, sp.layer_id], axis=-1)[particle]
    _, counts = np.unique(key, axis=0, return_counts=True)
    assert 0.8 < np.mean(counts >= 2) / REAL_DOUBLE_FRACTION < 1.25
    with_hits = particles.nhits > 0
    assert 0.15 < _secondary(particles)[with_hits].mean() < 0.35  # real 0.24, simulated 0.26 at pile-up 200
    _, cells = np.unique(event.cells.hit_id, return_counts=True)
    assert np.median(cells) == 2
    assert 0.75 < cells.mean() / REAL_CELLS_PER_HIT < 1.25


def test_counter_streams_do_not_depend_on_which_particles_are_drawn():
    particle, index = np.arange(1000), np.full(1000, 7)
    all_at_once = counter_normal(5, particle, index)
    some = counter_normal(5, particle[::3], index[::3])
    assert np.array_equal(all_at_once[::3], some)
    uniform = counter_uniform(5, np.arange(200_000) % 1000, np.arange(200_000) // 1000)
    assert uniform.min() > 0.0
    assert uniform.max() < 1.0
    assert abs(uniform.mean() - 0.5) < 0.005
    normal = counter_normal(9, np.arange(100_000), np.zeros(100_000, dtype=np.int64))
    assert np.allclose(normal.std(axis=0), 1.0, atol=0.01)


def test_layer_binning_finds_every_module():
    layers = module_layers()
    geometry = layers.geometry
    # a point at each module's centre projected on the layer's nominal surface finds that module
    layer_of = np.unique(np.stack([geometry.volume_id, geometry.layer_id], axis=-1), axis=0, return_inverse=True)[1]
    layer_of = layer_of.reshape(-1)
    point = geometry.c.copy()
    barrel = layers.barrel[layer_of]
    scale = np.where(barrel, layers.nominal[layer_of] / np.hypot(point[:, 0], point[:, 1]), 1.0)
    point[:, :2] *= scale[:, None]
    point[:, 2] = np.where(barrel, point[:, 2], layers.nominal[layer_of])
    found = layers.candidates(layer_of, point, np.zeros(len(point)), np.zeros(len(point)))
    assert np.all((found == np.arange(len(point))[:, None]).any(axis=1))


def _fast_particle_hits_in_the_solenoid(**stepping) -> dict[tuple[int, ...], np.ndarray]:
    """True hit positions of the particles above 1 GeV of a pile-up-20 event on the modules in the solenoid,
    without scattering or secondaries, by (particle, volume, layer, module)."""
    config = SimulationConfig(geometry="modules", pileup=20.0, multiple_scattering=False, hit_inefficiency=0.0,
                              noise_fraction=0.0, nuclear_interactions_per_x0=0.0, photons_per_particle=0.0,
                              **stepping)  # fmt: skip
    event = simulate_event(config, 7, 0, field=SolenoidField())
    truth, spacepoints = event.truth, event.spacepoints
    fast = np.isin(truth.particle_id, event.particles.particle_id[event.particles.pt > 1.0])
    keys = zip(truth.particle_id, spacepoints.volume_id, spacepoints.layer_id, spacepoints.module_id, strict=True)
    position = np.column_stack((truth.tx, truth.ty, truth.tz))
    return {tuple(map(int, key)): position[row] for row, key in enumerate(keys) if fast[row]}


def test_long_steps_in_the_solenoid_are_taken_in_pieces():
    """In the strip endcaps (volumes 14 and 18) one midpoint step from disk to disk puts the hits of particles
    above 1 GeV tenths of a millimetre from where far finer steps put them (the field changes fastest there);
    the simulation's steps in pieces put them within a few µm (docs/simulation.md)."""
    reference = _fast_particle_hits_in_the_solenoid(step_tolerance_mm=0.0005, max_step_pieces=64)

    def median_offset(volume: int, **stepping) -> float:
        hits = _fast_particle_hits_in_the_solenoid(**stepping)
        shared = [key for key in hits if key in reference and key[1] == volume]
        assert len(shared) > 30
        return float(np.median([np.linalg.norm(hits[key] - reference[key]) for key in shared]))

    assert median_offset(14) < 0.01
    assert median_offset(18) < 0.02
    assert median_offset(14, step_tolerance_mm=0.0) > 0.05
    assert median_offset(18, step_tolerance_mm=0.0) > 0.2


def test_particles_taken_in_pieces_cross_as_many_modules():
    """A pile-up-0 event in the solenoid without scattering or secondaries: with the steps in pieces the particles
    leave as many hits as with one step per surface, also when every particle still going is on its way between
    two surfaces at once; a hit or two move to a neighbouring module."""
    config = SimulationConfig(geometry="modules", pileup=0.0, multiple_scattering=False, hit_inefficiency=0.0,
                              noise_fraction=0.0, nuclear_interactions_per_x0=0.0,
                              photons_per_particle=0.0)  # fmt: skip
    counts = []
    for stepping in ({}, {"step_tolerance_mm": 0.0}):
        event = simulate_event(attrs.evolve(config, **stepping), 1002024, 0, field=SolenoidField())
        counts.append(np.unique(event.truth.particle_id, return_counts=True)[1])
    in_pieces, one_step = counts
    assert len(in_pieces) == len(one_step) > 50
    assert abs(int(in_pieces.sum()) - int(one_step.sum())) <= 3
    assert (in_pieces != one_step).sum() <= 3


# sha256 of every column of simulate_event(config, seed, event_id) computed with the code before the module
# simulation was added: the cylinder simulation must stay bit-identical
CYLINDER_HASHES = [
    (SimulationConfig(pileup=5), 3, 1, "6b936478239670751dcae8c7df862f4026a12baafe61e6895979b0ed9e8b2978"),
    (SimulationConfig(pileup=20, noise_fraction=0.1), 7, 4,
     "b760af8be7a979a34c8026ff3e5d56830bb9cc4c8343e1a4c38a2b8ebd3ef790"),
]  # fmt: skip


@pytest.mark.parametrize(("config", "seed", "event_id", "expected"), CYLINDER_HASHES)
def test_cylinder_simulation_unchanged(config, seed, event_id, expected):
    event = simulate_event(config, seed, event_id)
    digest = hashlib.sha256()
    for columns in (event.spacepoints, event.truth, event.particles):
        for field in attrs.fields(type(columns)):
            digest.update(np.ascontiguousarray(getattr(columns, field.name)).tobytes())
    assert digest.hexdigest() == expected


def test_trkx_simulate_on_modules_writes_events_that_read_back_on_their_modules(tmp_path):
    """``trkx simulate --set geometry=modules``: TrackML files (cells included) whose every hit is found by its
    (volume, layer, module) in the built-in module layout (the real TrackML numbering) and lies on that module's
    plane, and that a job reads with per-module errors (``[detector] file``: the layout written as
    ``detectors.csv``)."""
    from tracking_algs.cli import main
    from tracking_algs.modules import write_detectors_csv

    events = tmp_path / "events"
    assert main(["simulate", "--events", "1", "--pileup", "2", "--seed", "7", "--output", str(events),
                 "--set", "geometry=modules"]) == 0  # fmt: skip
    modules = trackml_modules()
    event = read_event(events, 0, modules=modules, cells=True)
    sp = event.spacepoints
    assert np.array_equal(np.unique(event.cells.hit_id), sp.hit_id)  # eventNNNNNNNNN-cells.csv: every hit's cluster
    rows = modules.lookup(sp.volume_id, sp.layer_id, sp.module_id)
    assert (rows >= 0).all()
    _, _, w = modules.to_local(rows, np.stack([sp.x, sp.y, sp.z], axis=-1))
    assert np.abs(w).max() < 1e-6
    detectors = tmp_path / "detectors.csv.gz"
    write_detectors_csv(detectors, modules)
    output = tmp_path / "job"
    config = Path(__file__).resolve().parents[1] / "configs" / "local_onnx.toml"
    assert main(["run", str(config), "--input", str(events), "--output", str(output), "--no-progress",
                 f"--set=detector.file={detectors}"]) == 0  # fmt: skip
    assert (output / "tracks.csv").read_text().count("\n") == len(sp) + 1


def test_trkx_simulate_on_a_detectors_csv_and_a_job_simulating_on_modules(tmp_path, capsys):
    """``trkx simulate --detector detectors.csv.gz`` simulates on that file's modules (the same events as the
    built-in layout, which the file holds); a job with ``[simulation] geometry = "modules"`` simulates on the
    built-in modules and fits on their planes; a module file with a cylinder simulation is refused (exit 2)."""
    from tracking_algs.cli import main
    from tracking_algs.modules import write_detectors_csv

    detectors = tmp_path / "detectors.csv.gz"
    write_detectors_csv(detectors, trackml_modules())
    arguments = ["simulate", "--events", "1", "--pileup", "2", "--seed", "7"]
    assert main([*arguments, "--output", str(tmp_path / "from_file"), "--detector", str(detectors)]) == 0
    assert main([*arguments, "--output", str(tmp_path / "built_in"), "--set", "geometry=modules"]) == 0
    for kind in ("hits", "truth", "particles", "cells"):
        name = f"event000000000-{kind}.csv"
        assert (tmp_path / "from_file" / name).read_bytes() == (tmp_path / "built_in" / name).read_bytes(), kind

    config = Path(__file__).resolve().parents[1] / "configs" / "local_onnx.toml"
    output = tmp_path / "job"
    assert main(["run", str(config), "--simulate", "1", "--output", str(output), "--no-progress",
                 "--set", "simulation.geometry=modules", "--set", "simulation.pileup=2"]) == 0  # fmt: skip
    fitted = (output / "fitted_tracks.csv").read_text().splitlines()
    assert len(fitted) > 10
    capsys.readouterr()
    refused = tmp_path / "refused"
    assert main(["run", str(config), "--simulate", "1", "--output", str(refused), "--no-progress",
                 "--set", f"detector.file={detectors}"]) == 2  # fmt: skip
    assert 'set [simulation] geometry = "modules"' in capsys.readouterr().err
    assert not refused.exists()


def _barrel_module_changed(tmp_path: Path, **columns: float) -> tuple[Path, int]:
    """The TrackML modules as a ``detectors.csv``, the second module of the first barrel layer changed to ``columns``
    (the file's columns; the file is edited as text, as a geometry built in Python refuses such modules), and that
    module's row number in the file."""
    from tracking_algs.modules import write_detectors_csv

    geometry = trackml_modules()
    row = int(np.flatnonzero(np.abs(geometry.rot[:, 2, 2]) < 0.5)[1])
    path = tmp_path / "detectors.csv"
    write_detectors_csv(path, geometry)
    lines = path.read_text().splitlines()
    header, fields = lines[0].split(","), lines[row + 1].split(",")
    for name, value in columns.items():
        fields[header.index(name)] = repr(value)
    lines[row + 1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    return path, row + 1


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        # a barrel module facing along z: the navigation raised a ValueError traceback
        (
            {f"rot_{axis}{local}": float(axis == "xyz"["uvw".index(local)]) for axis in "xyz" for local in "uvw"},
            "the module's normal is along z (an endcap module), that of row ",
        ),
        # an OverflowError, and a 2 TiB allocation
        ({"module_hv": 1e30}, "column 'module_hv': 1e+30 is not a positive number (mm) of at most 100000"),
        ({"module_hv": 1e12}, "column 'module_hv': 1000000000000.0 is not a positive number (mm) of at most 100000"),
        ({"pitch_u": 1e7}, "column 'pitch_u': 10000000.0 is not a positive number (mm) of at most 100000"),
    ],
)
def test_simulate_refuses_a_detectors_csv_whose_modules_it_cannot_navigate(tmp_path, capsys, columns, expected):
    from tracking_algs.cli import main

    path, row = _barrel_module_changed(tmp_path, **columns)
    output = tmp_path / "events"
    assert main(["simulate", "--events", "1", "--pileup", "0", "--seed", "1", "--output", str(output),
                 "--detector", str(path)]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert f"{path}: row {row} (line {row + 1}), " in error, error
    assert expected in error, error
    assert not output.exists()


def test_noise_in_a_volume_the_modules_lack_is_refused_naming_it(tmp_path, capsys):
    """``module_noise_volumes`` naming a volume without modules used to drop its noise silently: it is refused before
    anything is written; a rate of 0 there is taken."""
    from tracking_algs.cli import main

    arguments = ["simulate", "--events", "1", "--pileup", "0", "--seed", "1", "--set", "geometry=modules",
                 "--set", "module_noise_volumes=[8,99]"]  # fmt: skip
    assert main([*arguments, "--output", str(tmp_path / "a"), "--set", "module_noise_per_particle_hit=[0.1,0.2]"]) == 2
    error = capsys.readouterr().err
    assert "module_noise_volumes: the modules have no volume 99 for its noise" in error, error
    assert not (tmp_path / "a").exists()  # not even the record of the options
    assert main([*arguments, "--output", str(tmp_path / "b"), "--set", "module_noise_per_particle_hit=[0.1,0]"]) == 0
    capsys.readouterr()


def test_modules_too_small_for_their_layer_are_refused_naming_the_layer(tmp_path, capsys):
    """A layer of 0.1 µm modules would need about 10¹³ bins in the navigation's lookup table (a MemoryError, or an
    OverflowError): one line naming the layer, status 2, nothing written."""
    from tracking_algs.cli import main
    from tracking_algs.modules import write_detectors_csv

    geometry = trackml_modules()
    layer = (geometry.volume_id == 8) & (geometry.layer_id == 2)
    tiny = {name: np.where(layer, 1e-4, getattr(geometry, name)) for name in ("min_half_u", "max_half_u", "half_v")}
    path = tmp_path / "detectors.csv"
    write_detectors_csv(path, attrs.evolve(geometry, **tiny))
    output = tmp_path / "events"
    assert main(["simulate", "--events", "1", "--pileup", "0", "--seed", "1", "--output", str(output),
                 "--detector", str(path)]) == 2  # fmt: skip
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("trkx simulate: error: volume 8, layer 2: its modules would need "), line
    assert "bins in the navigation's lookup table (at most 1000000)" in line, line
    assert not output.exists()
