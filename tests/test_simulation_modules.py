"""Simulation on the TrackML modules (``SimulationConfig(geometry="modules")``), and the cylinder simulation
unchanged by it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import attrs
import numpy as np
import pytest

from tracking_algs.modules import trackml_modules
from tracking_algs.simulation import SimulationConfig, simulate_event
from tracking_algs.simulation.module_navigation import module_layers
from tracking_algs.simulation.streams import counter_normal, counter_uniform

MODULES = SimulationConfig(pileup=50, geometry="modules")


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


def test_hits_lie_on_their_module_plane_inside_its_bounds(event):
    geometry, rows, (u, v, w), (tu, tv, tw) = _local(event)
    assert np.abs(w).max() < 1e-6
    assert np.abs(tw).max() < 1e-6
    assert geometry.inside(rows, u, v, tolerance=1e-9).all()
    assert geometry.inside(rows, tu, tv, tolerance=1e-9).all()
    particle = event.truth.particle_id != 0
    # measured at the cell centre: within half a pitch of the true crossing (in u, plus how far the trapezoid's
    # slanted edge moves over half a cell in v, where a cell centre outside the module is moved onto its edge)
    pitch_u, pitch_v = geometry.pitch_u[rows], geometry.pitch_v[rows]
    slant = (geometry.max_half_u - geometry.min_half_u)[rows] / (2 * geometry.half_v[rows]) * pitch_v / 2
    assert np.all((np.abs(u - tu) <= pitch_u / 2 + slant + 1e-9)[particle])
    assert np.all((np.abs(v - tv) <= pitch_v / 2 + 1e-9)[particle])
    assert np.allclose(event.spacepoints.sigma, geometry.resolution(rows))


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


def test_same_seed_same_event_other_event_differs(event):
    again = simulate_event(MODULES, 11, 3)
    for name in ("spacepoints", "truth", "particles"):
        a, b = getattr(event, name), getattr(again, name)
        for field in attrs.fields(type(a)):
            assert np.array_equal(getattr(a, field.name), getattr(b, field.name)), (name, field.name)
    other = simulate_event(MODULES, 11, 4)
    assert len(other.spacepoints) != len(event.spacepoints) or not np.array_equal(other.spacepoints.x,
                                                                                   event.spacepoints.x)  # fmt: skip


def test_same_particles_as_the_cylinder_simulation(event):
    cylinders = simulate_event(attrs.evolve(MODULES, geometry="cylinders"), 11, 3)
    assert np.array_equal(cylinders.particles.particle_id, event.particles.particle_id)
    assert np.array_equal(cylinders.particles.px, event.particles.px)


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
    """``trkx simulate --set geometry=modules``: TrackML files whose every hit is found by its (volume, layer,
    module) in the built-in module layout (the real TrackML numbering) and lies on that module's plane, and that a
    job reads with per-module errors (``[detector] file``: the layout written as ``detectors.csv``)."""
    from tracking_algs.cli import main
    from tracking_algs.io.trackml import read_event
    from tracking_algs.modules import write_detectors_csv

    events = tmp_path / "events"
    assert main(["simulate", "--events", "1", "--pileup", "2", "--seed", "7", "--output", str(events),
                 "--set", "geometry=modules"]) == 0  # fmt: skip
    modules = trackml_modules()
    sp = read_event(events, 0, modules=modules).spacepoints
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
