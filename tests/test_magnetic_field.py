"""The magnetic fields: the solenoid's field against closed forms, and steps in it against a Runge-Kutta
integration of the Lorentz force."""

from __future__ import annotations

import numpy as np
import pytest

from inference_iface.errors import ConfigError
from tracking_algs.cli import main
from tracking_algs.fitting import KalmanConfig
from tracking_algs.fitting.helix import SurfaceKind, bound_to_free, propagate
from tracking_algs.geometry import HELIX_CONSTANT, trackml_detector
from tracking_algs.io.trackml import read_event
from tracking_algs.job_options import load_job_options
from tracking_algs.magnetic_field import (
    ONE_STEP,
    FieldConfig,
    SolenoidField,
    Stepping,
    UniformField,
    loop_sum_field,
    step_miss,
)
from tracking_algs.simulation import SimulationConfig

RADIUS, LENGTH = 1200.0, 6000.0


def _on_axis(z: np.ndarray) -> np.ndarray:
    """B_z on the axis of an ideal finite solenoid, relative to its centre (the textbook closed form)."""

    def shape(z):
        return (z + LENGTH / 2) / np.hypot(z + LENGTH / 2, RADIUS) - (z - LENGTH / 2) / np.hypot(z - LENGTH / 2, RADIUS)

    return shape(z) / shape(np.zeros(1))


def test_the_loop_sum_matches_the_closed_form_on_the_axis():
    z = np.linspace(-4000.0, 4000.0, 41)
    b_r, b_z = loop_sum_field(np.zeros_like(z), z, RADIUS, LENGTH)
    np.testing.assert_allclose(b_z, _on_axis(z), rtol=0, atol=2e-4)
    np.testing.assert_allclose(b_r, 0.0, atol=1e-12)


def test_the_field_is_free_of_divergence():
    """(1/r) ∂(r B_r)/∂r + ∂B_z/∂z = 0 inside the tracker, by central differences of the loop sum."""
    rng = np.random.default_rng(5)
    r, z, h = rng.uniform(50.0, 1050.0, 40), rng.uniform(-3000.0, 3000.0, 40), 0.5
    rb_r_out = (r + h) * loop_sum_field(r + h, z, RADIUS, LENGTH)[0]
    rb_r_in = (r - h) * loop_sum_field(r - h, z, RADIUS, LENGTH)[0]
    dbz = loop_sum_field(r, z + h, RADIUS, LENGTH)[1] - loop_sum_field(r, z - h, RADIUS, LENGTH)[1]
    divergence = (rb_r_out - rb_r_in) / (2 * h * r) + dbz / (2 * h)
    # against the size of the field's gradients, about 1/metre
    assert np.abs(divergence).max() < 1e-6


def test_the_table_interpolates_the_loop_sum_inside_the_tracker():
    """Within 2 mT in the tracker's volume (r ≤ 1.03 m, |z| ≤ 3 m)."""
    rng = np.random.default_rng(6)
    r, z = rng.uniform(0.0, 1030.0, 500), rng.uniform(-3000.0, 3000.0, 500)
    field = SolenoidField(2.0, RADIUS, LENGTH)
    b_r, b_z = field.components_t(r, z)
    exact_r, exact_z = loop_sum_field(r, z, RADIUS, LENGTH)
    assert np.abs(b_r - 2.0 * exact_r).max() < 2e-3
    assert np.abs(b_z - 2.0 * exact_z).max() < 2e-3
    assert field.components_t(np.zeros(1), np.zeros(1))[1][0] == pytest.approx(2.0, abs=1e-9)


def test_the_bending_field_of_a_forward_track_is_weaker_than_bz():
    """B_bend = B_z − B_r cot θ for a track going straight out from the axis; B_z alone in the mid plane, where
    B_r = 0; the centre field everywhere in a uniform field; and no turn of T_z for a radial track."""
    field = SolenoidField()
    theta = np.array([np.pi / 2, 0.4, 0.2])
    r, z = np.array([500.0, 800.0, 400.0]), np.array([0.0, 2000.0, 2500.0])
    position = np.column_stack((r, np.zeros(3), z))
    direction = np.column_stack((np.sin(theta), np.zeros(3), np.cos(theta)))
    b_r, b_z = field.components_t(r, z)
    np.testing.assert_allclose(field.bending_t(position, direction), b_z - b_r / np.tan(theta), rtol=1e-12)
    assert b_r[0] == pytest.approx(0.0, abs=1e-9)
    assert (field.bending_t(position, direction)[1:] < b_z[1:] - 0.1).all()
    np.testing.assert_allclose(field.turning_t(position, direction)[1], 0.0, atol=1e-12)
    np.testing.assert_array_equal(UniformField(2.0).bending_t(position, direction), 2.0)


def _runge_kutta_to_disk(field: SolenoidField, free: np.ndarray, z_end: float, step_mm: float = 1.0):
    """Positions and directions where the tracks ``free`` [N, 7] reach z = ``z_end`` (> their z), integrating
    dT/ds = c·(q/p)·T × B with classical fourth-order Runge-Kutta steps of ``step_mm``."""

    def field_vector(x):
        r = np.hypot(x[:, 0], x[:, 1])
        b_r, b_z = field.components_t(r, x[:, 2])
        safe = np.where(r > 0.0, r, 1.0)
        return np.column_stack((b_r * x[:, 0] / safe, b_r * x[:, 1] / safe, b_z))

    def rate(x, t):
        return t, HELIX_CONSTANT * free[:, 6, None] * np.cross(t, field_vector(x))

    x, t = free[:, :3].copy(), free[:, 3:6].copy()
    position, direction = np.zeros_like(x), np.zeros_like(t)
    done = np.zeros(len(x), dtype=bool)
    while not done.all():
        k1 = rate(x, t)
        k2 = rate(x + 0.5 * step_mm * k1[0], t + 0.5 * step_mm * k1[1])
        k3 = rate(x + 0.5 * step_mm * k2[0], t + 0.5 * step_mm * k2[1])
        k4 = rate(x + step_mm * k3[0], t + step_mm * k3[1])
        x_next = x + step_mm / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        t_next = t + step_mm / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        t_next /= np.linalg.norm(t_next, axis=1, keepdims=True)
        crossing = ~done & (x_next[:, 2] >= z_end)
        fraction = (z_end - x[crossing, 2]) / (x_next[crossing, 2] - x[crossing, 2])
        position[crossing] = x[crossing] + fraction[:, None] * (x_next[crossing] - x[crossing])
        direction[crossing] = t[crossing] + fraction[:, None] * (t_next[crossing] - t[crossing])
        done |= crossing
        x, t = x_next, t_next
    return position, direction / np.linalg.norm(direction, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("disk_spacing_mm", "stepping", "max_miss_mm", "max_polar_miss"),
    [
        (100.0, ONE_STEP, 0.1, 2e-5),
        (300.0, ONE_STEP, 1.0, 2e-4),
        (300.0, KalmanConfig().stepping, 0.3, 1e-5),
        (300.0, SimulationConfig().stepping, 0.05, 1e-5),
    ],
)
def test_steps_in_the_solenoid_follow_the_lorentz_force(disk_spacing_mm, stepping, max_miss_mm, max_polar_miss):
    """1 GeV tracks of both charges at η = 2–3 from the origin to z = 2.95 m through disks ``disk_spacing_mm``
    apart, each step a midpoint helix (:func:`propagate`), or in pieces as the fitter's and the simulation's
    ``stepping`` cut them: where they arrive, against Runge-Kutta on the Lorentz force; the helix in the centre
    field would miss by 3–20 mm."""
    field = SolenoidField()
    eta = np.array([2.0, 2.5, 3.0, 2.0, 2.5, 3.0])
    theta = 2.0 * np.arctan(np.exp(-eta))
    charge = np.array([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    n = len(eta)
    params = np.column_stack((np.zeros(n), np.zeros(n), np.full(n, 0.3), theta, charge * np.sin(theta) / 1.0))
    free, _ = bound_to_free(params, np.full(n, SurfaceKind.PERIGEE), np.zeros(n))
    z_end = 2950.0
    position, direction = _runge_kutta_to_disk(field, free, z_end)

    def follow(step_field):
        state, kind, at = params, np.full(n, SurfaceKind.PERIGEE), np.zeros(n)
        for z in [*np.arange(disk_spacing_mm, z_end, disk_spacing_mm), z_end]:
            step = propagate(state, kind, at, np.full(n, SurfaceKind.DISK), np.full(n, z), step_field, direction=1,
                             stepping=stepping)  # fmt: skip
            assert step.ok.all()
            state, kind, at = step.params, np.full(n, SurfaceKind.DISK), np.full(n, z)
        return bound_to_free(state, kind, at)[0]

    end = follow(field)
    assert np.hypot(*(end[:, :2] - position[:, :2]).T).max() < max_miss_mm
    assert np.abs(end[:, 5] - direction[:, 2]).max() < max_polar_miss
    assert np.hypot(*(follow(2.0)[:, :2] - position[:, :2]).T).min() > 2.0


def test_a_step_is_cut_into_as_many_pieces_as_bring_its_miss_within_the_tolerance():
    """The miss of a midpoint step falls as the square of its length: n pieces for a miss n² times the tolerance,
    never more than ``max_pieces``; one piece without a tolerance, where the field does not change, and for a
    miss that is not a number."""
    stepping = Stepping(tolerance_mm=0.01, max_pieces=8)
    miss = np.array([0.0, 0.009, 0.011, 0.09, 0.1, 10.0, np.nan])
    np.testing.assert_array_equal(stepping.pieces(miss), [1, 1, 2, 3, 4, 8, 1])
    np.testing.assert_array_equal(ONE_STEP.pieces(miss), 1)
    np.testing.assert_array_equal(Stepping(tolerance_mm=0.01).pieces(miss), 1)
    # 1 GeV, a 400 mm step across which the bending field changes by 0.3 T: c·|q/p|·|ΔB|·s²/12 = 1.2 mm
    one = np.array([1.0])
    miss = step_miss(one, 400.0 * one, 2.0 * one, 0.1 * one, 1.8 * one, 0.2 * one)  # ΔB = 0.2 + 0.1 T
    assert miss[0] == pytest.approx(1.199, rel=1e-3)


def test_the_field_options_build_the_field(tmp_path):
    options = load_job_options(None, ["detector.field.kind=solenoid", "detector.field.solenoid_length_mm=5800"])
    assert options.magnetic_field() == SolenoidField(2.0, 1200.0, 5800.0)
    assert load_job_options(None).magnetic_field() == UniformField(2.0)
    assert FieldConfig().build(trackml_detector(1.5)) == UniformField(1.5)
    with pytest.raises(ConfigError, match=r"detector\.field\.kind=dipole.*kind"):
        load_job_options(None, ["detector.field.kind=dipole"])
    with pytest.raises(ConfigError, match=r"solenoid_radius_mm"):
        load_job_options(None, ["detector.field.solenoid_radius_mm=0"])


def test_simulate_in_the_solenoid_moves_the_forward_hits(tmp_path):
    """``trkx simulate --field solenoid``: the same particles (same seed) cross the central layers where they did
    in the uniform field and reach the forward disks mm away."""
    settings = ["--set", "noise_fraction=0", "--set", "hit_inefficiency=0", "--set", "multiple_scattering=false",
                "--set", "hit_smearing=false"]  # fmt: skip
    hits = {}
    for field in ("uniform", "solenoid"):
        output = tmp_path / field
        argv = ["simulate", "--events", "1", "--pileup", "2", "--seed", "4", "--output", str(output), "--field", field]
        assert main([*argv, *settings]) == 0
        event = read_event(output, 0)
        truth, spacepoints = event.truth, event.spacepoints  # row for row
        key = truth.particle_id * 10_000 + spacepoints.volume_id * 100 + spacepoints.layer_id
        hits[field] = dict(zip(key.tolist(), np.column_stack((truth.tx, truth.ty, truth.tz)), strict=True))
    shared = sorted(set(hits["uniform"]) & set(hits["solenoid"]))
    uniform = np.array([hits["uniform"][key] for key in shared])
    moved = np.linalg.norm(np.array([hits["solenoid"][key] for key in shared]) - uniform, axis=1)
    central = (np.hypot(uniform[:, 0], uniform[:, 1]) < 200.0) & (np.abs(uniform[:, 2]) < 300.0)
    forward = np.abs(uniform[:, 2]) > 2000.0
    assert central.sum() > 20
    assert forward.sum() > 20
    assert np.median(moved[central]) < 0.05
    assert np.median(moved[forward]) > 1.0
