"""Gaussian multiple scattering with the Highland width."""

from __future__ import annotations

import numpy as np


def highland_theta0(
    p_gev: np.ndarray, beta: np.ndarray, x_over_x0: np.ndarray | float, cos_incidence: np.ndarray | float
) -> np.ndarray:
    """Projected scattering width (rad): 13.6 MeV/(βp) · √x · (1 + 0.038 ln(x/β²)), x = (x/X0)/|cos(incidence)|."""
    x = np.asarray(x_over_x0) / np.abs(cos_incidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta0 = 0.0136 / (beta * p_gev) * np.sqrt(x) * (1.0 + 0.038 * np.log(x / beta**2))
    return np.where(x > 0.0, theta0, 0.0)


def scatter(momentum: np.ndarray, theta0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Momenta [N, 3] deflected by two independent Gaussian projected angles of width ``theta0`` [N]
    (one along the azimuthal direction, one along the polar direction), keeping |p|."""
    return deflect(momentum, rng.normal(size=(len(momentum), 2)) * theta0[:, None])


def deflect(momentum: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Momenta [N, 3] deflected by the projected angles ``angles`` [N, 2] (rad; along the azimuthal and the polar
    direction), keeping |p|."""
    p = np.linalg.norm(momentum, axis=1)
    direction = momentum / p[:, None]
    phi = np.arctan2(direction[:, 1], direction[:, 0])
    cos_theta = direction[:, 2]
    sin_theta = np.hypot(direction[:, 0], direction[:, 1])
    e_phi = np.column_stack((-np.sin(phi), np.cos(phi), np.zeros_like(phi)))
    e_theta = np.column_stack((cos_theta * np.cos(phi), cos_theta * np.sin(phi), -sin_theta))
    total = np.hypot(angles[:, 0], angles[:, 1])
    kick = angles[:, :1] * e_phi + angles[:, 1:] * e_theta
    deflected = np.cos(total)[:, None] * direction + np.sinc(total / np.pi)[:, None] * kick
    return deflected * p[:, None]
