"""Real TrackML events read as the challenge distributes them, with each hit's measurement errors from its own
module (the challenge's ``detectors.csv``: pitch / √12, projected at the hit), and whole jobs on them through the
CLI.

Every test needs ``../shared/trackml`` (:mod:`real_trackml`: skipped with the reason in a clone without it, failed
under CI).
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest
from real_trackml import FULL, REAL_DETECTORS, SAMPLE, needs_real_trackml

from tracking_algs.cli import main
from tracking_algs.errors import EventFormatError
from tracking_algs.io.csv_table import read_table
from tracking_algs.io.trackml import read_event

ROOT = Path(__file__).resolve().parents[1]
#: the field real events are read in: the solenoid of [detector.field] (docs/fitting.md, "Magnetic field")
SOLENOID = ("--set", "detector.field.kind=solenoid")
pytestmark = needs_real_trackml

PIXEL, SHORT_STRIPS, LONG_STRIPS = (7, 8, 9), (12, 13, 14), (16, 17, 18)
BARRELS = (8, 13, 17)
SQRT12 = np.sqrt(12.0)


@pytest.fixture(scope="module")
def modules():
    from tracking_algs.modules import read_detectors_csv

    return read_detectors_csv(REAL_DETECTORS)


@pytest.fixture(scope="module")
def sample(modules):
    """The sample event read with the real modules (its cells file beside it, ignored) and each hit's module row."""
    event = read_event(SAMPLE, 1, modules=modules)
    sp = event.spacepoints
    return event, modules.lookup(sp.volume_id, sp.layer_id, sp.module_id)


# --- the module axes against the φ direction: u is r·φ and v is z or r, as the finder reads sigma ---------------------


def test_module_axes_against_phi_on_the_real_geometry(modules):
    """Barrel modules: v along z exactly, u in the transverse plane but turned from the φ direction at the module
    centre by the layer's tilt (8.0° pixels, 8.6° strips); endcap modules: u along φ and v along r at the centre
    (within 0.07°)."""
    phi = np.arctan2(modules.c[:, 1], modules.c[:, 0])
    e_phi = np.stack([-np.sin(phi), np.cos(phi), np.zeros_like(phi)], axis=-1)
    e_r = np.stack([np.cos(phi), np.sin(phi), np.zeros_like(phi)], axis=-1)
    u, v = modules.rot[:, :, 0], modules.rot[:, :, 1]

    def angle(a, b):
        return np.degrees(np.arccos(np.clip(np.abs(np.einsum("ni,ni->n", a, b)), 0.0, 1.0)))

    barrel = np.isin(modules.volume_id, BARRELS)
    assert np.array_equal(barrel, np.abs(modules.normal(np.arange(len(modules)))[:, 2]) < 0.5)
    u_phi = angle(u, e_phi)
    assert np.abs(v[barrel] - [0.0, 0.0, 1.0]).max() < 1e-6
    assert np.abs(u[barrel, 2]).max() < 1e-6
    pixel_barrel = modules.volume_id == 8
    assert u_phi[pixel_barrel].min() > 7.9
    assert u_phi[pixel_barrel].max() < 8.1
    strip_barrel = np.isin(modules.volume_id, (13, 17))
    assert u_phi[strip_barrel].min() > 8.5
    assert u_phi[strip_barrel].max() < 8.7
    assert u_phi[~barrel].max() < 0.07
    assert angle(v[~barrel], e_r[~barrel]).max() < 0.07


# --- per-module errors ------------------------------------------------------------------------------------------------


def test_every_hit_gets_its_modules_errors(sample, modules):
    """Every hit: its module's pitch / √12 along the module's u and v (pixels 0.05 × 0.05625 mm)."""
    event, rows = sample
    sp = event.spacepoints
    assert len(sp) == 5527
    assert (rows >= 0).all()
    local = np.stack([modules.pitch_u[rows], modules.pitch_v[rows]], axis=-1) / SQRT12
    np.testing.assert_allclose(modules.resolution(rows), local, rtol=1e-15)
    pixel = np.isin(sp.volume_id, PIXEL)
    np.testing.assert_allclose(local[pixel], np.tile([0.05, 0.05625], (pixel.sum(), 1)) / SQRT12)
    np.testing.assert_allclose(sp.sigma, local, rtol=1e-15)


def test_strip_hits_get_pitch_errors(sample, modules):
    """Short strips 0.08 × 1.2 mm, long strips 0.12 × 10.8 (barrel) or 10.4 (endcap) mm: pitch / √12 for every strip
    hit, whatever its cluster; the cells change nothing (the same errors read with them)."""
    event, _ = sample
    sp = event.spacepoints
    expected = {12: (0.08, 1.2), 13: (0.08, 1.2), 14: (0.08, 1.2), 16: (0.12, 10.4), 17: (0.12, 10.8),
                18: (0.12, 10.4)}  # fmt: skip
    for volume, (pitch_u, pitch_v) in expected.items():
        on = sp.volume_id == volume
        assert on.sum() > 50
        np.testing.assert_allclose(sp.sigma[on], np.tile([pitch_u, pitch_v], (on.sum(), 1)) / SQRT12)
    with_cells = read_event(SAMPLE, 1, modules=modules, cells=True)
    assert with_cells.cells is not None
    assert np.array_equal(with_cells.spacepoints.sigma, sp.sigma)


def test_pitch_errors_do_not_underestimate_the_pixel_residuals(sample, modules):
    """The pixel hits of the sample's particles, residual (hit − truth) in the module's u and v: RMS 0.86 and 0.65
    of pitch / √12 over all pixel hits, at most 0.93 in any pixel volume and direction. So pitch / √12 does not
    underestimate them (the bound here: 1.2); it overestimates them, most for clusters of several cells
    (docs/simulation.md, "Reading real events")."""
    event, rows = sample
    sp, truth = event.spacepoints, event.truth
    residual = np.stack([sp.x - truth.tx, sp.y - truth.ty, sp.z - truth.tz], axis=-1)
    local = np.einsum("ni,nik->nk", residual, modules.rot[rows][:, :, :2])  # along u and v
    pitch = np.stack([modules.pitch_u[rows], modules.pitch_v[rows]], axis=-1) / SQRT12
    for volumes in (PIXEL, *((volume,) for volume in PIXEL)):
        hits = np.isin(sp.volume_id, volumes) & (truth.particle_id != 0)
        assert hits.sum() > 500
        rms = np.sqrt(np.mean(local[hits] ** 2, axis=0))
        assert (rms <= 1.2 * pitch[hits].max(axis=0)).all(), (volumes, rms / pitch[hits].max(axis=0))


def test_without_modules_the_errors_are_per_layer_as_before(sample):
    """Without the module geometry each hit's errors are its layer's (the detector TOML's): pixels 0.05 × 0.05 mm,
    where the modules give 0.05 × 0.05625, and long endcap strips 0.12 × 10.8, where the modules give 10.4."""
    event, _ = sample
    per_layer = read_event(SAMPLE, 1).spacepoints
    assert np.array_equal(per_layer.hit_id, event.spacepoints.hit_id)
    pitches = {(7, 8, 9): (0.05, 0.05), (12, 13, 14): (0.08, 1.2), (16, 17, 18): (0.12, 10.8)}
    for volumes, pitch in pitches.items():
        on = np.isin(per_layer.volume_id, volumes)
        assert on.sum() > 50
        np.testing.assert_allclose(per_layer.sigma[on], np.tile(pitch, (on.sum(), 1)) / SQRT12)
    differ = np.isin(per_layer.volume_id, (7, 8, 9, 16, 18))
    assert (per_layer.sigma[differ, 1] != event.spacepoints.sigma[differ, 1]).all()


# --- errors -----------------------------------------------------------------------------------------------------------


def _sample_copy(directory: Path, kinds=("hits", "truth", "particles")) -> Path:
    """The sample event gunzipped into ``directory`` (plain CSV files, to edit)."""
    for kind in kinds:
        source = SAMPLE / f"event000000001-{kind}.csv.gz"
        (directory / f"event000000001-{kind}.csv").write_bytes(gzip.decompress(source.read_bytes()))
    return directory


def test_the_real_cells_read_with_the_event():
    """``read_event(..., cells=True)``: every hit of the sample has its cluster; median 2, mean 3.4 cells per hit."""
    event = read_event(SAMPLE, 1, cells=True)
    hit_ids, counts = np.unique(event.cells.hit_id, return_counts=True)
    assert np.array_equal(hit_ids, np.sort(event.spacepoints.hit_id))
    assert np.median(counts) == 2
    assert 3.3 < counts.mean() < 3.45
    assert read_event(SAMPLE, 1).cells is None


def _set_field(path: Path, row: int, column: int, value: str) -> None:
    lines = path.read_text().splitlines()
    fields = lines[row].split(",")
    fields[column] = value
    lines[row] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")


def test_a_hit_on_an_unknown_module_names_file_row_and_module(modules, tmp_path):
    directory = _sample_copy(tmp_path)
    hits = directory / "event000000001-hits.csv"
    volume, layer = hits.read_text().splitlines()[42].split(",")[4:6]
    _set_field(hits, 42, 6, "99999")
    expected = (f"{hits}: row 42 (line 43), columns 'volume_id','layer_id','module_id': module (volume {volume}, "
                f"layer {layer}, module 99999) is not in the module geometry")  # fmt: skip
    with pytest.raises(EventFormatError, match=f"^{re.escape(expected)}$"):
        read_event(directory, 1, modules=modules)
    read_event(directory, 1)  # without a module geometry only (volume, layer) matters


# --- whole jobs -------------------------------------------------------------------------------------------------------


def _run(*args: str) -> int:
    return main(["run", str(ROOT / "configs" / "local_onnx.toml"), "--no-progress", *args])


def _track_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def test_the_sample_event_runs_with_the_real_module_geometry(tmp_path):
    output = tmp_path / "out"
    assert _run("--input", str(SAMPLE), "--output", str(output), "--set", f"detector.file={REAL_DETECTORS}",
                *SOLENOID) == 0  # fmt: skip
    rows = _track_rows(output / "tracks.csv")
    hits = read_table(SAMPLE / "event000000001-hits.csv.gz", {"hit_id": "int64"})["hit_id"]
    assert sorted(int(row["hit_id"]) for row in rows) == sorted(hits.tolist())
    performance = json.loads((output / "performance.json").read_text())
    assert performance["events"] == [1]
    assert performance["tracks_per_event"] == [performance["tracking"]["n_tracks"]]
    assert performance["tracking"]["n_tracks"] > 0
    options = json.loads((output / "job_options.json").read_text())
    assert options["options"]["detector"] == {
        "file": str(REAL_DETECTORS),
        "field": {
            "kind": "solenoid",
            "solenoid_radius_mm": 1200.0,
            "solenoid_length_mm": 6000.0,
            "map_file": "",
            "map_mirror_z": False,
        },
    }


def test_the_trackml_job_options_find_most_of_the_sample_particles(tmp_path):
    """configs/trackml.toml (the models trained on the module simulation, the solenoid, the built-in modules)
    on the real sample: every hit once in tracks.csv and most particles above 1 GeV found, candidates and written
    tracks alike (docs/physics.md gives the figures)."""
    output = tmp_path / "out"
    assert main(["run", str(ROOT / "configs" / "trackml.toml"), "--no-progress", "--input", str(SAMPLE),
                 "--output", str(output)]) == 0  # fmt: skip
    hits = read_table(SAMPLE / "event000000001-hits.csv.gz", {"hit_id": "int64"})["hit_id"]
    assert sorted(int(row["hit_id"]) for row in _track_rows(output / "tracks.csv")) == sorted(hits.tolist())
    performance = json.loads((output / "performance.json").read_text())
    assert performance["tracking_candidates"]["efficiency"] > 0.85
    assert performance["tracking"]["efficiency"] > 0.8
    assert performance["tracking"]["fake_rate"] < 0.15
    # the fit selection keeps the particles the candidates found above 1 GeV (docs/fitting.md: 52 of 52)
    assert performance["tracking"]["kept_by_selection"]["fraction"] >= 0.99


def test_two_full_pileup_200_events_run_with_the_real_module_geometry(tmp_path):
    """Two complete events without truth (93 680 and 104 451 hits): exit 0, every hit once in tracks.csv, the
    track count of each event in performance.json (their speed: benchmarks/event_speed.py)."""
    output = tmp_path / "out"
    assert _run("--input", str(FULL), "--output", str(output), "--set", f"detector.file={REAL_DETECTORS}",
                *SOLENOID) == 0  # fmt: skip
    rows = _track_rows(output / "tracks.csv")
    for event_id, n_hits in ((1001, 93_680), (1003, 104_451)):
        hits = sorted(int(row["hit_id"]) for row in rows if int(row["event_id"]) == event_id)
        assert len(hits) == n_hits
        assert len(set(hits)) == n_hits
    assert len(rows) == 93_680 + 104_451
    performance = json.loads((output / "performance.json").read_text())
    assert performance["events"] == [1001, 1003]
    assert performance["failed_events"] == []
    assert "tracking" not in performance  # no truth
    for event_id, count in zip(performance["events"], performance["tracks_per_event"], strict=True):
        labels = {int(row["track_id"]) for row in rows if int(row["event_id"]) == event_id} - {-1}
        assert count == len(labels) > 1000


def test_a_bad_module_geometry_file_stops_the_job_before_any_work(tmp_path, capsys):
    output = tmp_path / "out"
    absent = tmp_path / "absent.csv.gz"
    assert _run("--input", str(SAMPLE), "--output", str(output), "--set", f"detector.file={absent}") == 2
    error = capsys.readouterr().err.strip()
    assert f"[detector] file '{absent}' does not exist" in error
    malformed = tmp_path / "detectors.csv"
    malformed.write_text("volume_id,layer_id\n1,2\n")
    assert _run("--input", str(SAMPLE), "--output", str(output), "--set", f"detector.file={malformed}") == 2
    assert f"{malformed}" in capsys.readouterr().err
    assert not output.exists()


def test_no_fit_of_the_samples_truth_tracks_ends_on_a_helix_too_tight_for_its_hits(sample, modules):
    """Every particle from the beam line of the sample event, fitted from its truth hits in the solenoid with the
    energy loss (as the TrackML job options fit): at |η| < 3 the fits that end OK have a fitted pT of at least half the
    true one (nearly all within a few per cent; beyond, in the weak field at the ends of the solenoid, pT is measured
    poorly).  In a process whose numpy ran its AVX-512 kernels (loaded before ``tracking_algs``), one forward particle
    (2 GeV, 14 hits) ended OK on a helix of 11 mm radius with a p-value of 0.99, its filter run off to a radius that
    absorbed every residual; a helix too tight to join the first and last hits now counts as diverged
    (``test_fitting_propagation.py`` tests that rule)."""
    from tracking_algs.event import TrackCandidates
    from tracking_algs.fitting import KalmanConfig, KalmanFitter
    from tracking_algs.fitting.results import transverse_momentum
    from tracking_algs.geometry import trackml_detector
    from tracking_algs.magnetic_field import SolenoidField
    from tracking_algs.performance.lookup import particle_rows

    event = sample[0]
    particles = event.particles
    primary = particles.particle_id[np.hypot(particles.vx, particles.vy) < 1.0]
    ids, labels = np.unique(event.truth.particle_id, return_inverse=True)
    labels = np.where(np.isin(event.truth.particle_id, primary), labels, -1)
    fitter = KalmanFitter(trackml_detector(), KalmanConfig(energy_loss=True), modules=modules, field=SolenoidField())
    fit = fitter.fit(event.spacepoints, TrackCandidates(labels))
    rows = particle_rows(particles.particle_id, ids[fit.track_id])
    central = fit.ok & (np.abs(np.arcsinh(particles.pz[rows] / particles.pt[rows])) < 3.0)
    ratio = transverse_momentum(fit.params[central]) / particles.pt[rows][central]
    assert central.sum() >= 250
    assert ratio.min() > 0.5
    assert np.median(np.abs(ratio - 1.0)) < 0.05
