"""Seed parameters for the Kalman fitter from three spacepoints per track.

The transverse circle through the three points (the exact solution of the conformal-map circle fit for three
points, written with the signed Menger curvature so that it stays finite for straight tracks) gives the
curvature and the direction at the first point; a straight-line fit of z against the transverse arc length
gives theta.
"""

from __future__ import annotations

import numpy as np

from tracking_algs.fitting.helix import SurfaceKind, wrap_angle
from tracking_algs.geometry import HELIX_CONSTANT


def _arc_over_chord(half_angle_sine: np.ndarray) -> np.ndarray:
    """asin(x)/x, 1 at x = 0."""
    small = np.abs(half_angle_sine) < 1e-4
    safe = np.where(small, 1.0, half_angle_sine)
    return np.where(small, 1.0 + half_angle_sine**2 / 6.0, np.arcsin(safe) / safe)


def seed_parameters(
    first: np.ndarray, middle: np.ndarray, last: np.ndarray, kind: np.ndarray, bfield_t: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Bound parameters [N, 5] on the first point's surface (``kind`` [N]: cylinder or disk) of the helix through
    the points ``first``, ``middle``, ``last`` [N, 3] (mm), travelling from first to last, and ``ok`` [N] (False
    for degenerate triplets); ``bfield_t`` is the bending field (tesla), one or one per track [N]."""
    d12 = middle[:, :2] - first[:, :2]
    d13 = last[:, :2] - first[:, :2]
    d23 = last[:, :2] - middle[:, :2]
    n12, n13, n23 = (np.hypot(d[:, 0], d[:, 1]) for d in (d12, d13, d23))
    cross = d12[:, 0] * d13[:, 1] - d12[:, 1] * d13[:, 0]
    denominator = n12 * n13 * n23
    ok = denominator > 0.0
    # signed curvature: positive when the track turns clockwise (the sense of a positive charge in +B)
    kappa = -2.0 * cross / np.where(ok, denominator, 1.0)
    half_13 = 0.5 * kappa * n13
    half_12 = 0.5 * kappa * n12
    ok &= (np.abs(half_13) <= 1.0) & (np.abs(half_12) <= 1.0)
    half_13 = np.clip(half_13, -1.0, 1.0)
    half_12 = np.clip(half_12, -1.0, 1.0)
    phi = wrap_angle(np.arctan2(d13[:, 1], d13[:, 0]) + np.arcsin(half_13))

    arc = np.column_stack((np.zeros(len(first)), n12 * _arc_over_chord(half_12), n13 * _arc_over_chord(half_13)))
    z = np.column_stack((first[:, 2], middle[:, 2], last[:, 2]))
    arc_centred = arc - arc.mean(axis=1, keepdims=True)
    spread = np.einsum("ni,ni->n", arc_centred, arc_centred)
    ok &= spread > 0.0
    slope = np.einsum("ni,ni->n", arc_centred, z - z.mean(axis=1, keepdims=True)) / np.where(ok, spread, 1.0)
    theta = np.arctan2(1.0, slope)
    qop = np.sin(theta) * kappa / (HELIX_CONSTANT * bfield_t)

    r = np.hypot(first[:, 0], first[:, 1])
    l1 = np.where(kind == SurfaceKind.DISK, r, first[:, 2])
    params = np.column_stack((np.arctan2(first[:, 1], first[:, 0]), l1, phi, theta, qop))
    ok &= np.isfinite(params).all(axis=1) & (r > 0.0)
    return np.where(ok[:, None], params, 0.0), ok
