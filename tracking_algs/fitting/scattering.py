"""Material effects for the Kalman fitter on a crossed surface: multiple-scattering noise (the Highland width, as
bound-parameter variances) and the mean ionisation energy loss (:mod:`tracking_algs.energy_loss`)."""

from __future__ import annotations

import numpy as np

from tracking_algs.energy_loss import momentum_after
from tracking_algs.fitting.config import KalmanConfig
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


def path_in_x0(
    params: np.ndarray, kind: np.ndarray, x_over_x0: np.ndarray, plane: np.ndarray | None = None
) -> np.ndarray:
    """Radiation lengths [N] on the way of bound states ``params`` [N, 5] through surfaces of ``kind`` (``plane``
    [N, 4, 3] for planes) with thickness ``x_over_x0`` [N]: the thickness over |cos(incidence)|."""
    position_phi, _, phi, theta, _ = columns(params)
    sin_theta = np.sin(theta)
    cos_incidence = np.where(kind == SurfaceKind.DISK, np.cos(theta), sin_theta * np.cos(phi - position_phi))
    on_plane = kind == SurfaceKind.PLANE
    if on_plane.any():
        assert plane is not None  # given wherever a surface is a plane
        normal = plane[on_plane, PLANE_W]
        direction = np.column_stack((sin_theta * np.cos(phi), sin_theta * np.sin(phi), np.cos(theta)))[on_plane]
        cos_incidence[on_plane] = np.einsum("ni,ni->n", direction, normal)
    return x_over_x0 / np.maximum(np.abs(cos_incidence), MIN_COS_INCIDENCE)


def scattering_variances(params: np.ndarray, path_x0: np.ndarray, mass_gev: float) -> tuple[np.ndarray, np.ndarray]:
    """Variances added to ``phi`` and ``theta`` [N] when bound states ``params`` [N, 5] go through ``path_x0`` [N]
    radiation lengths: var(phi) = θ0²/sin²θ, var(theta) = θ0²."""
    theta0_sq = highland_theta0(path_x0, params[:, 4], mass_gev) ** 2
    return theta0_sq / np.maximum(np.sin(params[:, 3]) ** 2, 1e-12), theta0_sq


def lose_energy(
    params: np.ndarray, cov: np.ndarray, path_x0: np.ndarray, mass_gev: float, direction: int
) -> np.ndarray:
    """Apply the mean energy loss of ``path_x0`` [N] radiation lengths to states ``params`` [N, 5] and their
    ``cov`` [N, 5, 5] in place (``direction`` +1 along the track, −1 backwards, where energy is given back), and
    return d(q/p)'/d(q/p) [N] at fixed loss, p³E'/(p'³E), which scales the q/p row and column of the covariance."""
    qop = params[:, 4]
    p = 1.0 / np.maximum(np.abs(qop), 1e-12)
    p_after = momentum_after(p, mass_gev, path_x0, direction)
    energy, energy_after = np.hypot(p, mass_gev), np.hypot(p_after, mass_gev)
    factor = (p / p_after) ** 3 * energy_after / energy
    params[:, 4] = np.sign(qop) / p_after
    cov[:, 4, :] *= factor[:, None]
    cov[:, :, 4] *= factor[:, None]
    return factor


def through_material(
    params: np.ndarray, cov: np.ndarray, path_x0: np.ndarray, config: KalmanConfig, direction: int
) -> np.ndarray | None:
    """Apply the material of ``path_x0`` [N] radiation lengths to states ``params`` [N, 5] and ``cov`` in place, as
    ``config`` turns them on: the multiple-scattering variances, then the mean energy loss (``direction`` as for
    :func:`lose_energy`); return the energy loss's q/p factor, or None without it."""
    if config.multiple_scattering:
        var_phi, var_theta = scattering_variances(params, path_x0, config.mass_gev)
        cov[:, 2, 2] += var_phi
        cov[:, 3, 3] += var_theta
    return lose_energy(params, cov, path_x0, config.mass_gev, direction) if config.energy_loss else None
