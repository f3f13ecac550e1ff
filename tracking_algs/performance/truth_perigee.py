"""True perigee parameters of generated particles, for pulls and resolutions of fitted tracks.

The perigee is taken w.r.t. the z axis through the origin, in the ACTS convention: at the point of
closest approach P in the transverse plane, with phi the momentum direction there,
P = (-d0·sin(phi), d0·cos(phi)) and z0 = P_z; theta is the polar angle and qop = q/p in e/GeV
(no energy loss, so theta and q/p are those at the vertex).
"""

from __future__ import annotations

import numpy as np

from tracking_algs.event import Particles
from tracking_algs.geometry import curvature_radius


def truth_perigee(particles: Particles, bfield_t: float) -> np.ndarray:
    """(d0, z0, phi, theta, qop) [P, 5] of each particle's helix in a uniform field ``bfield_t`` along z.

    A charged particle turns with dphi/ds = -q/R (R the transverse radius, s the transverse path), so
    its circle centre lies at vertex + q·R·(sin phi, -cos phi).
    """
    charge = np.sign(particles.q).astype(np.float64)
    pt = particles.pt
    radius = curvature_radius(pt, bfield_t)
    phi_vertex = np.arctan2(particles.py, particles.px)
    centre_x = particles.vx + charge * radius * np.sin(phi_vertex)
    centre_y = particles.vy - charge * radius * np.cos(phi_vertex)
    centre_distance = np.hypot(centre_x, centre_y)
    # The closest point to the z axis lies on the line from the axis to the circle centre.
    scale = 1.0 - radius / centre_distance
    pca_x, pca_y = centre_x * scale, centre_y * scale
    sin_phi = charge * (centre_x - pca_x) / radius
    cos_phi = -charge * (centre_y - pca_y) / radius
    phi = np.arctan2(sin_phi, cos_phi)
    turned = np.angle(np.exp(1j * (phi - phi_vertex)))
    path = -charge * radius * turned
    theta = np.arctan2(pt, particles.pz)
    z0 = particles.vz + path * particles.pz / pt
    d0 = -pca_x * sin_phi + pca_y * cos_phi
    qop = charge / np.sqrt(pt**2 + particles.pz**2)
    return np.column_stack((d0, z0, phi, theta, qop))
