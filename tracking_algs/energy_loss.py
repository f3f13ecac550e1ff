"""Mean ionisation energy loss in the detector's material, shared by the simulation and the fitter.

Every module and passive surface is described by its thickness in radiation lengths only (``x_over_x0``); for the
energy loss it is taken to be silicon, the material of the TrackML modules. The mean loss per unit length is the
Bethe formula with the density-effect correction (PDG, "Passage of particles through matter", eq. 34.5, with
Sternheimer's parametrisation of δ), for a singly charged particle of the given mass:

    −⟨dE/dx⟩ = K (Z/A) ρ / β² · [½ ln(2 mₑc² β²γ² W_max / I²) − β² − δ(βγ)/2]

with the silicon constants of the PDG's table of atomic and nuclear properties (Z/A = 0.49848, I = 173 eV,
ρ = 2.329 g/cm³, X0 = 9.370 cm; Sternheimer C̄ = 4.4355, x0 = 0.2015, x1 = 2.8716, a = 0.14921, k = 3.2546,
δ0 = 0.14). A minimum-ionising particle loses 3.88 MeV/cm, 0.36 MeV in 1 % of a radiation length.

Only the mean is applied: no fluctuation (Landau straggling) in the simulation, and no energy-loss variance in
the fitter. Electrons (the conversions of the module simulation) take the same formula with their mass, which
approximates their ionisation; their bremsstrahlung is not modelled.
"""

from __future__ import annotations

import numpy as np

#: K = 4π N_A r_e² m_e c² (MeV mol⁻¹ cm²)
BETHE_K = 0.307075
ELECTRON_MASS_MEV = 0.51099895
SILICON_Z_OVER_A = 0.49848
SILICON_I_MEV = 173.0e-6
SILICON_DENSITY = 2.329  # g/cm³
SILICON_X0_CM = 9.370
# Sternheimer density-effect parameters of silicon
_C_BAR, _X0, _X1, _A, _K, _DELTA0 = 4.4355, 0.2015, 2.8716, 0.14921, 3.2546, 0.14


def density_effect(beta_gamma: np.ndarray) -> np.ndarray:
    """Sternheimer's δ(βγ) for silicon."""
    x = np.log10(np.maximum(beta_gamma, 1e-12))
    high = 2.0 * np.log(10.0) * x - _C_BAR
    middle = high + _A * np.clip(_X1 - x, 0.0, None) ** _K
    low = _DELTA0 * 10.0 ** (2.0 * (x - _X0))
    return np.where(x >= _X1, high, np.where(x >= _X0, middle, low))


def stopping_power_mev_per_cm(p_gev: np.ndarray, mass_gev: np.ndarray | float) -> np.ndarray:
    """Mean energy loss per unit length −⟨dE/dx⟩ (MeV/cm) in silicon of particles of momentum ``p_gev`` and mass
    ``mass_gev`` (the Bethe formula of the module docstring)."""
    p = np.maximum(np.asarray(p_gev, dtype=np.float64), 1e-6)
    mass = np.maximum(np.asarray(mass_gev, dtype=np.float64), 1e-9)
    beta_gamma = p / mass
    gamma = np.sqrt(1.0 + beta_gamma**2)
    beta_sq = beta_gamma**2 / gamma**2
    mass_ratio = ELECTRON_MASS_MEV / (1000.0 * mass)
    w_max = 2.0 * ELECTRON_MASS_MEV * beta_gamma**2 / (1.0 + 2.0 * gamma * mass_ratio + mass_ratio**2)
    log_term = 0.5 * np.log(2.0 * ELECTRON_MASS_MEV * beta_gamma**2 * w_max / SILICON_I_MEV**2)
    bracket = log_term - beta_sq - 0.5 * density_effect(beta_gamma)
    return BETHE_K * SILICON_Z_OVER_A * SILICON_DENSITY / beta_sq * np.maximum(bracket, 0.0)


def mean_energy_loss_gev(path_x0: np.ndarray, p_gev: np.ndarray, mass_gev: np.ndarray | float) -> np.ndarray:
    """Mean energy (GeV) lost on a path of ``path_x0`` radiation lengths of silicon (already divided by the
    incidence cosine) at momentum ``p_gev``."""
    return 1e-3 * stopping_power_mev_per_cm(p_gev, mass_gev) * np.asarray(path_x0) * SILICON_X0_CM


def momentum_after(
    p_gev: np.ndarray, mass_gev: np.ndarray | float, path_x0: np.ndarray, direction: int | np.ndarray = 1
) -> np.ndarray:
    """Momentum (GeV) after a path of ``path_x0`` radiation lengths: the mean loss at ``p_gev`` taken away
    (``direction`` +1, along the motion) or given back (−1, tracing a track backwards). A particle that would stop
    keeps 1 MeV."""
    p = np.asarray(p_gev, dtype=np.float64)
    mass = np.asarray(mass_gev, dtype=np.float64)
    energy = np.hypot(p, mass) - np.asarray(direction) * mean_energy_loss_gev(path_x0, p, mass)
    return np.sqrt(np.maximum(energy**2 - mass**2, 1e-6))


def slowed(momentum: np.ndarray, mass_gev: np.ndarray | float, path_x0: np.ndarray) -> np.ndarray:
    """Momentum vectors [N, 3] after the mean loss of ``path_x0`` [N] radiation lengths, direction kept."""
    p = np.linalg.norm(momentum, axis=1)
    return momentum * (momentum_after(p, mass_gev, path_x0) / p)[:, None]
