"""Helix propagation of bound parameters: round trips and the analytic transport Jacobian."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tracking_algs.fitting.helix import SurfaceKind, angular_components, propagate, wrap_angle
from tracking_algs.geometry import HELIX_CONSTANT

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
    for start, end, params, step, reached in _walk(ROUTES[route]):
        numeric = np.zeros((len(params), 5, 5))
        h = 1e-6
        for j in range(5):
            up, down = params.copy(), params.copy()
            up[:, j] += h
            down[:, j] -= h
            numeric[:, :, j] = _difference(_step(up, start, end, 1).params, _step(down, start, end, 1).params,
                                           end[0]) / (2 * h)  # fmt: skip
        scale = np.abs(numeric) + 1e-2
        relative = np.abs(step.jacobian - numeric) / scale
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
