"""Helix propagation of bound parameters: round trips and the analytic transport Jacobian."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tracking_algs.fitting.helix import SurfaceKind, angular_components, propagate, spans_chord, wrap_angle
from tracking_algs.geometry import HELIX_CONSTANT
from tracking_algs.magnetic_field import SolenoidField, UniformField

BFIELD_T = 2.0
PERIGEE = (SurfaceKind.PERIGEE, 0.0)
ROUTES = {
    "barrel": [PERIGEE, (SurfaceKind.CYLINDER, 32.0), (SurfaceKind.CYLINDER, 72.0), (SurfaceKind.CYLINDER, 500.0)],
    "endcap+z": [PERIGEE, (SurfaceKind.DISK, 1500.0), (SurfaceKind.DISK, 1800.0)],
    "endcap-z": [PERIGEE, (SurfaceKind.DISK, -1220.0), (SurfaceKind.DISK, -2950.0)],
    "barrel to endcap": [PERIGEE, (SurfaceKind.CYLINDER, 32.0), (SurfaceKind.DISK, 600.0)],
}


def _perigees(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack((
        rng.normal(0.0, 0.5, n),
        rng.normal(0.0, 30.0, n),
        rng.uniform(-np.pi, np.pi, n),
        rng.uniform(0.1, np.pi - 0.1, n),
        rng.choice([-1.0, 1.0], n) / rng.uniform(0.3, 50.0, n),
    ))  # fmt: skip


def _step(params, start, end, direction=0):
    n = len(params)
    return propagate(params, np.full(n, start[0]), np.full(n, start[1]), np.full(n, end[0]), np.full(n, end[1]),
                     BFIELD_T, direction)  # fmt: skip


def _difference(a, b, kind):
    return np.where(angular_components(np.full(len(a), kind)), wrap_angle(a - b), a - b)


def _relative_jacobian_error(step, start: np.ndarray, kind_to, h: float) -> np.ndarray:
    """|analytic − central finite-difference Jacobian| / (|numeric| + 0.01) [N, 5, 5] of ``step`` (bound parameters
    [N, 5] → :class:`Propagation` onto surfaces of ``kind_to``) at ``start``."""
    numeric = np.zeros((len(start), 5, 5))
    for j in range(5):
        up, down = start.copy(), start.copy()
        up[:, j] += h
        down[:, j] -= h
        numeric[:, :, j] = _difference(step(up).params, step(down).params, kind_to) / (2 * h)
    return np.abs(step(start).jacobian - numeric) / (np.abs(numeric) + 1e-2)


def _walk(route):
    """Yield (start surface, end surface, start params, forward step, mask of tracks that reach it within
    ~0.8 turns of half a circle) along a route."""
    params = _perigees(3000)
    reached = np.ones(len(params), dtype=bool)
    for start, end in itertools.pairwise(route):
        step = _step(params, start, end, direction=1)
        turn = np.abs(HELIX_CONSTANT * BFIELD_T * params[:, 4] * step.path)
        reached &= step.ok & (turn < 2.5)
        yield start, end, params, step, reached.copy()
        params = np.where(reached[:, None], step.params, params)


@pytest.mark.parametrize("route", ROUTES)
def test_forward_then_back_returns_to_the_start(route):
    for start, end, params, step, reached in _walk(ROUTES[route]):
        back = _step(step.params, end, start, direction=-1)
        assert reached.sum() > 500
        assert back.ok[reached].all()
        error = _difference(back.params, params, start[0])[reached]
        assert np.abs(error).max() < 1e-9
        np.testing.assert_allclose(back.path[reached], -step.path[reached], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("route", ROUTES)
def test_analytic_jacobian_matches_finite_differences(route):
    for start, end, params, _, reached in _walk(ROUTES[route]):
        relative = _relative_jacobian_error(lambda values, a=start, b=end: _step(values, a, b, 1), params, end[0],
                                            1e-6)  # fmt: skip
        assert relative[reached].max() < 2e-3, (start, end)
        assert np.median(relative[reached]) < 1e-6


def test_straight_tracks_and_zero_curvature_are_finite():
    params = _perigees(100)
    params[:, 4] = 0.0
    step = _step(params, PERIGEE, (SurfaceKind.CYLINDER, 100.0), direction=1)
    assert step.ok.all()
    assert np.isfinite(step.jacobian).all()
    free_end = np.hypot(100.0, 0.0)
    # a straight line from (d0, z0) reaches r = 100 at transverse distance sqrt(100² − d0²)
    expected = np.sqrt(free_end**2 - params[:, 0] ** 2) / np.sin(params[:, 3])
    np.testing.assert_allclose(step.path, expected, rtol=1e-12)


def test_a_helix_that_cannot_reach_a_cylinder_is_not_ok():
    params = np.array([[0.0, 0.0, 0.3, 1.2, 1.0 / 0.1]])  # pT ≈ 0.093 GeV: 2R ≈ 155 mm < 500 mm
    step = _step(params, PERIGEE, (SurfaceKind.CYLINDER, 500.0), direction=1)
    assert not step.ok[0]
    assert np.isfinite(step.params).all()
    assert np.isfinite(step.jacobian).all()


def _tilted_planes(params: np.ndarray, radius: float, tilt: float, seed: int) -> np.ndarray:
    """Per track a module plane near where it crosses the cylinder ``radius``: centred a few mm off the crossing
    (in the plane), its normal the radial direction turned by ``tilt`` about z, its v axis along z."""
    rng = np.random.default_rng(seed)
    n = len(params)
    crossing = _step(params, PERIGEE, (SurfaceKind.CYLINDER, radius), direction=1)
    position_phi = crossing.params[:, 0]
    w = np.column_stack((np.cos(position_phi + tilt), np.sin(position_phi + tilt), np.zeros(n)))
    v = np.tile([0.0, 0.0, 1.0], (n, 1))
    u = np.cross(v, w)
    point = np.column_stack((radius * np.cos(position_phi), radius * np.sin(position_phi), crossing.params[:, 1]))
    centre = point + rng.uniform(-5.0, 5.0, (n, 1)) * u + rng.uniform(-20.0, 20.0, (n, 1)) * v
    return np.stack((centre, u, v, w), axis=1), crossing.ok


def _plane_step(params, kind_from, plane_from, kind_to, plane_to, direction):
    n = len(params)
    return propagate(params, np.full(n, kind_from), np.zeros(n), np.full(n, kind_to), np.zeros(n), BFIELD_T,
                     direction, plane_from=plane_from, plane_to=plane_to)  # fmt: skip


def _plane_route(seed: int = 5):
    """Tracks from the perigee to a tilted plane near r = 32 mm, then to one near r = 72 mm: ``(params at the
    perigee, first planes, second planes, tracks that reach both)``."""
    params = _perigees(2000, seed)
    params[:, 3] = np.clip(params[:, 3], 0.6, np.pi - 0.6)  # inside the barrel planes' reach
    params[:, 4] = np.clip(np.abs(params[:, 4]), 0.0, 1.0) * np.sign(params[:, 4])  # pT above ~1 GeV·sin(theta)
    first, ok_first = _tilted_planes(params, 32.0, 0.25, seed)
    second, ok_second = _tilted_planes(params, 72.0, -0.2, seed + 1)
    return params, first, second, ok_first & ok_second


def test_planes_forward_then_back_return_to_the_start():
    params, first, second, reached = _plane_route()
    on_first = _plane_step(params, SurfaceKind.PERIGEE, None, SurfaceKind.PLANE, first, 1)
    on_second = _plane_step(on_first.params, SurfaceKind.PLANE, first, SurfaceKind.PLANE, second, 1)
    reached &= on_first.ok & on_second.ok
    assert reached.sum() > 1500
    back = _plane_step(on_second.params, SurfaceKind.PLANE, second, SurfaceKind.PLANE, first, -1)
    assert back.ok[reached].all()
    error = _difference(back.params, on_first.params, SurfaceKind.PLANE)[reached]
    assert np.abs(error).max() < 1e-9
    # the local (u, v) on a plane is the position along its axes: the point lies on the plane
    free_point = first[:, 0] + on_first.params[:, :1] * first[:, 1] + on_first.params[:, 1:2] * first[:, 2]
    cylinder = _step(params, PERIGEE, (SurfaceKind.CYLINDER, 32.0), direction=1)
    assert np.all(np.abs(np.hypot(free_point[reached, 0], free_point[reached, 1]) - 32.0) < 10.0)
    assert cylinder.ok[reached].all()


@pytest.mark.parametrize("leg", ["perigee to plane", "plane to plane", "plane to cylinder"])
def test_plane_jacobian_matches_finite_differences(leg):
    params, first, second, reached = _plane_route()
    on_first = _plane_step(params, SurfaceKind.PERIGEE, None, SurfaceKind.PLANE, first, 1)
    reached &= on_first.ok
    start, route = {
        "perigee to plane": (params, (SurfaceKind.PERIGEE, None, SurfaceKind.PLANE, first)),
        "plane to plane": (on_first.params, (SurfaceKind.PLANE, first, SurfaceKind.PLANE, second)),
        "plane to cylinder": (on_first.params, (SurfaceKind.PLANE, first, SurfaceKind.CYLINDER, None)),
    }[leg]
    kind_from, plane_from, kind_to, plane_to = route

    def step(values):
        if kind_to == SurfaceKind.CYLINDER:
            n = len(values)
            return propagate(values, np.full(n, kind_from), np.zeros(n), np.full(n, kind_to), np.full(n, 200.0),
                             BFIELD_T, 1, plane_from=plane_from)  # fmt: skip
        return _plane_step(values, kind_from, plane_from, kind_to, plane_to, 1)

    reached &= step(start).ok
    relative = _relative_jacobian_error(step, start, kind_to, 1e-6)
    assert reached.sum() > 1000
    assert relative[reached].max() < 2e-3
    assert np.median(relative[reached]) < 1e-6


def _disk_planes(params: np.ndarray, z: float, rng: np.random.Generator) -> np.ndarray:
    """Per track an endcap-like module plane near where it crosses the disk at ``z``: normal z tilted by 0.05
    towards the track's azimuth, v radial, centred a few mm off the crossing."""
    n = len(params)
    crossing = _step(params, PERIGEE, (SurfaceKind.DISK, z), direction=1)
    azimuth = crossing.params[:, 0]
    w = np.column_stack((0.05 * np.cos(azimuth), 0.05 * np.sin(azimuth), np.ones(n)))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    v = np.column_stack((np.cos(azimuth), np.sin(azimuth), np.zeros(n)))
    v -= np.einsum("ni,ni->n", v, w)[:, None] * w
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    u = np.cross(v, w)
    point = np.column_stack((crossing.params[:, 1] * np.cos(azimuth), crossing.params[:, 1] * np.sin(azimuth),
                             np.full(n, z)))  # fmt: skip
    centre = point + rng.uniform(-5.0, 5.0, (n, 1)) * u + rng.uniform(-10.0, 10.0, (n, 1)) * v
    return np.stack((centre, u, v, w), axis=1)


@pytest.mark.parametrize("leg", ["perigee to plane", "plane to plane", "plane to perigee"])
def test_endcap_plane_jacobian_matches_finite_differences(leg):
    rng = np.random.default_rng(9)
    params = _perigees(2000, 9)
    params[:, 3] = rng.uniform(0.03, 0.4, len(params))  # forward tracks, towards +z
    first, second = _disk_planes(params, 600.0, rng), _disk_planes(params, 700.0, rng)
    on_first = _plane_step(params, SurfaceKind.PERIGEE, None, SurfaceKind.PLANE, first, 1)
    start, kind_from, plane_from, kind_to, plane_to = {
        "perigee to plane": (params, SurfaceKind.PERIGEE, None, SurfaceKind.PLANE, first),
        "plane to plane": (on_first.params, SurfaceKind.PLANE, first, SurfaceKind.PLANE, second),
        "plane to perigee": (on_first.params, SurfaceKind.PLANE, first, SurfaceKind.PERIGEE, None),
    }[leg]

    def step(values):
        return _plane_step(values, kind_from, plane_from, kind_to, plane_to, 0)

    reached = on_first.ok & step(start).ok
    relative = _relative_jacobian_error(step, start, kind_to, 1e-7)
    assert reached.sum() > 1900
    assert relative[reached].max() < 2e-3
    assert np.median(relative[reached]) < 1e-6


def test_a_helix_spans_a_chord_up_to_its_diameter_in_the_weaker_field_of_its_ends():
    """In the detector's 2 T a 1 GeV helix is 3.3 m wide: a 1 m chord fits; a 0.1 GeV one (0.33 m) holds 0.45 m (within
    the 1.5 margin) but not 0.6 m; in the solenoid, whose field falls off beyond its end at |z| = 3 m, the same
    0.6 m chord fits where one end lies out there; without a field every chord fits."""
    first = np.zeros((4, 3))
    last = np.array([[1000.0, 0.0, 0.0], [450.0, 0.0, 0.0], [600.0, 0.0, 0.0], [0.0, 600.0, 3000.0]])
    pt = np.array([1.0, 0.1, 0.1, 0.1])
    np.testing.assert_array_equal(spans_chord(pt, first, last, UniformField(2.0)), [True, True, False, False])
    near_the_end, beyond_it = first[2:] + np.array([0.0, 0.0, 2900.0]), last[2:] + np.array([0.0, 0.0, 1000.0])
    assert spans_chord(pt[2:], near_the_end, beyond_it, SolenoidField()).all()
    assert spans_chord(pt, first, last, UniformField(0.0)).all()
