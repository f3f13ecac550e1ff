"""Particles made in the material of the modules: photons from the interactions, their conversions into e⁺e⁻
pairs, and the hadrons out of nuclear interactions (docs/simulation.md, "Simulation on modules").

- **Photons.** Each interaction gives ``Poisson(photons_per_particle × its charged particles)`` photons (π⁰ → γγ):
  η uniform in ±``eta_max``, φ uniform, pT = U · (a pT of the minimum-bias spectrum), U uniform in (0, 1) (the
  photon's share of its π⁰, flat for a two-body decay in flight). Photons under ``pt_min_gev`` are dropped: none
  of their electrons could pass it.
- **Conversions.** A photon converts in a layer it crosses (at the layer's last module on its way, where the
  layer's material is) with probability 1 − exp(−7/9 · x/X0 / |cos α|)
  (:data:`CONVERSIONS_PER_X0`, the high-energy pair-production cross section, PDG "Passage of particles through
  matter"); the electron takes a share x ~ U(0, 1) of its momentum, the positron 1 − x, both along the photon.
- **Nuclear interactions.** A hadron that ends in a layer's material (rate ``nuclear_interactions_per_x0`` per
  radiation length) leaves ``max(1, Poisson(hadronic_multiplicity))`` charged hadrons at the crossing point. They
  share its momentum as uniform spacings (exponential weights, normalised); each leaves at a polar angle θ from the
  hadron's direction with sin θ = min(1, t / p), t exponential of mean :data:`HADRONIC_PT_GEV`, at a uniform
  azimuth. The first keeps the hadron's charge and mass (the leading particle); each other is a proton with
  probability :data:`PROTON_FRACTION` (nuclear fragments), else a pion of random charge.

Particles under ``pt_min_gev`` are not kept (as in the TrackML files, where no particle has pT < 0.1 GeV), and
secondaries make no secondaries themselves. Ids (the generator's ``(interaction + 1) << 20 | (index + 1)``
below bit 39): a photon sets bit :data:`PHOTON_BIT`; a secondary is its parent's id plus ``(k + 1) <<``
:data:`PRODUCT_SHIFT`, k its number among the parent's products (conversions: 0 the electron, 1 the positron).
"""

from __future__ import annotations

import numpy as np

from tracking_algs.ranges import ranks_within
from tracking_algs.simulation.config import SimulationConfig
from tracking_algs.simulation.generator import PARTICLE_ID_SHIFT, SimParticles, sample_minimum_bias_pt

PHOTON_BIT = 39
PRODUCT_SHIFT = 40
#: pair production per radiation length at high energy: 7/9 (the mean free path of a photon is 9/7 X0)
CONVERSIONS_PER_X0 = 7.0 / 9.0
#: mean transverse momentum (GeV) of a nuclear interaction's products relative to the incoming hadron
HADRONIC_PT_GEV = 0.3
#: the share of protons among the products other than the leading one
PROTON_FRACTION = 0.5
ELECTRON_MASS_GEV, PION_MASS_GEV, PROTON_MASS_GEV = 0.000511, 0.13957, 0.93827


def generate_photons(rng: np.random.Generator, charged: SimParticles, config: SimulationConfig) -> SimParticles:
    """The photons of an event whose charged primaries are ``charged`` (ordered by interaction), from the
    interactions' vertices; charge 0, mass 0."""
    counts = np.bincount(charged.interaction)
    n_photons = rng.poisson(config.photons_per_particle * counts)
    interaction = np.repeat(np.arange(len(counts)), n_photons)
    n = len(interaction)
    pt = rng.uniform(size=n) * sample_minimum_bias_pt(rng, n, config)
    eta = rng.uniform(-config.eta_max, config.eta_max, size=n)
    phi = rng.uniform(-np.pi, np.pi, size=n)
    index = ranks_within(n_photons)
    particle_id = (1 << PHOTON_BIT) | ((interaction + 1) << PARTICLE_ID_SHIFT) | (index + 1)
    vertex = charged.vertex[np.searchsorted(charged.interaction, interaction)]
    momentum = np.column_stack((pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)))
    photons = SimParticles(particle_id.astype(np.int64), interaction, vertex, momentum, np.zeros(n, np.int64),
                           np.zeros(n))  # fmt: skip
    return photons.take(pt >= config.pt_min_gev)


def conversion_pairs(
    rng: np.random.Generator, photons: SimParticles, position: np.ndarray, direction: np.ndarray
) -> SimParticles:
    """The e⁻ and e⁺ of ``photons`` converting at ``position`` [n, 3] (mm) with ``direction`` [n, 3] (any
    length): rows e⁻ then e⁺ of the first photon, of the second, and so on."""
    share = rng.uniform(size=len(photons))
    unit = direction / np.linalg.norm(direction, axis=1)[:, None]
    p = np.linalg.norm(photons.momentum, axis=1)
    fractions = np.column_stack((share, 1.0 - share)).ravel()
    parent = np.repeat(np.arange(len(photons)), 2)
    return SimParticles(
        particle_id=photons.particle_id[parent] | (np.tile([1, 2], len(photons)) << PRODUCT_SHIFT),
        interaction=photons.interaction[parent],
        vertex=position[parent],
        momentum=(fractions * p[parent])[:, None] * unit[parent],
        charge=np.tile(np.array([-1, 1], dtype=np.int64), len(photons)),
        mass=np.full(len(parent), ELECTRON_MASS_GEV),
    )


def hadronic_products(
    rng: np.random.Generator,
    hadrons: SimParticles,
    position: np.ndarray,
    momentum: np.ndarray,
    config: SimulationConfig,
) -> SimParticles:
    """The charged hadrons out of nuclear interactions of ``hadrons`` at ``position`` [n, 3] (mm), arriving with
    ``momentum`` [n, 3] (GeV): each hadron's products in a block, its leading particle first."""
    n_products = np.maximum(rng.poisson(config.hadronic_multiplicity, size=len(hadrons)), 1)
    parent = np.repeat(np.arange(len(hadrons)), n_products)
    first = np.cumsum(n_products) - n_products
    k = np.arange(len(parent)) - first[parent]
    weight = rng.exponential(size=len(parent))
    p = weight / np.bincount(parent, weights=weight)[parent] * np.linalg.norm(momentum, axis=1)[parent]
    sin_theta = np.minimum(rng.exponential(HADRONIC_PT_GEV, size=len(parent)) / p, 1.0)
    azimuth = rng.uniform(-np.pi, np.pi, size=len(parent))
    proton = (k > 0) & (rng.uniform(size=len(parent)) < PROTON_FRACTION)
    random_charge = rng.choice(np.array([-1, 1], dtype=np.int64), size=len(parent))
    charge = np.where(k == 0, hadrons.charge[parent], np.where(proton, 1, random_charge))
    mass = np.where(k == 0, hadrons.mass[parent], np.where(proton, PROTON_MASS_GEV, PION_MASS_GEV))
    direction = _turned(momentum[parent], sin_theta, azimuth)
    return SimParticles(
        particle_id=hadrons.particle_id[parent] | ((k + 1) << PRODUCT_SHIFT),
        interaction=hadrons.interaction[parent],
        vertex=position[parent],
        momentum=p[:, None] * direction,
        charge=charge.astype(np.int64),
        mass=mass,
    )


def _turned(axis: np.ndarray, sin_theta: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """Unit vectors [n, 3] at polar angle θ (given sin θ, θ ≤ 90°) and ``azimuth`` about each ``axis`` [n, 3]."""
    w = axis / np.linalg.norm(axis, axis=1)[:, None]
    helper = np.where((np.abs(w[:, 2]) < 0.9)[:, None], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])
    e1 = np.cross(w, helper)
    e1 /= np.linalg.norm(e1, axis=1)[:, None]
    e2 = np.cross(w, e1)
    cos_theta = np.sqrt(1.0 - sin_theta**2)
    across = np.cos(azimuth)[:, None] * e1 + np.sin(azimuth)[:, None] * e2
    return cos_theta[:, None] * w + sin_theta[:, None] * across
