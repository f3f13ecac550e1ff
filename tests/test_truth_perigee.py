"""The true perigee of a particle, checked against points stepped along its helix."""

from __future__ import annotations

import numpy as np
import pytest

from tracking_algs.event import Particles
from tracking_algs.geometry import curvature_radius
from tracking_algs.performance.truth_perigee import truth_perigee

BFIELD_T = 2.0


def _helix_points(vertex, momentum, charge, steps):
    """Positions along the helix at transverse path lengths ``steps`` (independent parametrisation)."""
    pt = np.hypot(momentum[0], momentum[1])
    radius = curvature_radius(pt, BFIELD_T)
    phi0 = np.arctan2(momentum[1], momentum[0])
    phi = phi0 - charge * steps / radius
    x = vertex[0] + charge * radius * (np.sin(phi0) - np.sin(phi))
    y = vertex[1] - charge * radius * (np.cos(phi0) - np.cos(phi))
    z = vertex[2] + steps * momentum[2] / pt
    return np.column_stack((x, y, z)), phi


@pytest.mark.parametrize("charge", [1, -1])
@pytest.mark.parametrize(("vertex", "momentum"), [
    ((0.3, -0.2, 12.0), (0.8, 0.4, 1.5)),
    ((-1.5, 2.0, -40.0), (-0.3, 2.5, -0.7)),
    ((0.0, 0.0, 5.0), (3.0, -3.0, 10.0)),
])  # fmt: skip
def test_perigee_is_the_closest_approach_on_the_helix(charge, vertex, momentum):
    particles = Particles(particle_id=[1], vx=[vertex[0]], vy=[vertex[1]], vz=[vertex[2]], px=[momentum[0]],
                          py=[momentum[1]], pz=[momentum[2]], q=[charge], nhits=[10])  # fmt: skip
    d0, z0, phi, theta, qop = truth_perigee(particles, BFIELD_T)[0]
    steps = np.linspace(-20.0, 20.0, 400_001)
    points, directions = _helix_points(vertex, momentum, charge, steps)
    closest = np.argmin(np.hypot(points[:, 0], points[:, 1]))
    assert abs(abs(d0) - np.hypot(*points[closest, :2])) < 1e-4
    assert points[closest, 0] == pytest.approx(-d0 * np.sin(phi), abs=1e-3)
    assert points[closest, 1] == pytest.approx(d0 * np.cos(phi), abs=1e-3)
    assert z0 == pytest.approx(points[closest, 2], abs=1e-3)
    assert np.angle(np.exp(1j * (phi - directions[closest]))) == pytest.approx(0.0, abs=1e-4)
    assert theta == pytest.approx(np.arctan2(np.hypot(*momentum[:2]), momentum[2]))
    assert qop == pytest.approx(charge / np.linalg.norm(momentum))
