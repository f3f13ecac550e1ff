"""Multiple-scattering noise for the Kalman fitter: the Highland width on a surface, as bound-parameter variances."""

from __future__ import annotations

import numpy as np

from tracking_algs.fitting.helix import PLANE_W, SurfaceKind, columns

#: grazing crossings count as if at this |cos(incidence)|, to keep the material finite (as the simulation does)
MIN_COS_INCIDENCE = 0.05


def highland_theta0(x_over_x0: np.ndarray, qop: np.ndarray, mass_gev: float) -> np.ndarray:
    """Projected scattering width (rad) for path length ``x_over_x0`` (radiation lengths, already divided by
    |cos(incidence)|) and ``q/p`` (e/GeV): 13.6 MeV/(βp)·√x·(1 + 0.038 ln(x/β²)); 0 where x = 0."""
    p = 1.0 / np.maximum(np.abs(qop), 1e-12)
    beta = p / np.hypot(p, mass_gev)
    positive = x_over_x0 > 0.0
    x = np.where(positive, x_over_x0, 1.0)
    theta0 = 0.0136 / (beta * p) * np.sqrt(x) * np.maximum(1.0 + 0.038 * np.log(x / beta**2), 0.0)
    return np.where(positive, theta0, 0.0)


def scattering_variances(
    params: np.ndarray, kind: np.ndarray, x_over_x0: np.ndarray, mass_gev: float, plane: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Variances added to ``phi`` and ``theta`` [N] when bound states ``params`` [N, 5] cross surfaces of ``kind``
    (``plane`` [N, 4, 3] for planes) with thickness ``x_over_x0`` [N]: var(phi) = θ0²/sin²θ, var(theta) = θ0²."""
    position_phi, _, phi, theta, qop = columns(params)
    sin_theta = np.sin(theta)
    cos_incidence = np.where(kind == SurfaceKind.DISK, np.cos(theta), sin_theta * np.cos(phi - position_phi))
    on_plane = kind == SurfaceKind.PLANE
    if on_plane.any():
        normal = plane[on_plane, PLANE_W]
        direction = np.column_stack((sin_theta * np.cos(phi), sin_theta * np.sin(phi), np.cos(theta)))[on_plane]
        cos_incidence[on_plane] = np.einsum("ni,ni->n", direction, normal)
    path = x_over_x0 / np.maximum(np.abs(cos_incidence), MIN_COS_INCIDENCE)
    theta0_sq = highland_theta0(path, qop, mass_gev) ** 2
    return theta0_sq / np.maximum(sin_theta**2, 1e-12), theta0_sq
