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

- **Decays in flight.** Each interaction gives ``Poisson(kshorts_per_particle × its charged particles)`` K⁰_S and
  ``Poisson(lambdas_per_particle × its charged particles)`` Λ or Λ̄ (half each), η and φ uniform as the photons',
  pT from the pions' spectrum by m_T scaling (the same distribution of √(pT² + m²) for every species). Each flies
  straight from its interaction's vertex over an exponential path of mean βγcτ and decays there into its charged
  pair (K⁰_S → π⁺π⁻, Λ → pπ⁻, Λ̄ → p̄π⁺) with the branching fraction of that mode, else into neutrals; the pair is
  isotropic in the rest frame (:data:`KSHORT`, :data:`LAMBDA`: PDG masses, cτ and branching fractions).

Particles under ``pt_min_gev`` are not kept (as in the TrackML files, where no particle has pT < 0.1 GeV), and
secondaries make no secondaries themselves. Ids (the generator's ``(interaction + 1) << 20 | (index + 1)``
below bit 38): a photon sets bit :data:`PHOTON_BIT`, a K⁰_S or Λ bit :data:`DECAYING_BIT`; a secondary is its
parent's id plus ``(k + 1) <<`` :data:`PRODUCT_SHIFT`, k its number among the parent's products (conversions: 0 the
electron, 1 the positron; decays: 0 the positive particle, 1 the negative one).
"""

from __future__ import annotations

import attrs
import numpy as np

from tracking_algs.ranges import ranks_within
from tracking_algs.simulation.config import SimulationConfig
from tracking_algs.simulation.generator import PARTICLE_ID_SHIFT, SimParticles, sample_minimum_bias_pt

PHOTON_BIT = 39
DECAYING_BIT = 38
PRODUCT_SHIFT = 40
#: pair production per radiation length at high energy: 7/9 (the mean free path of a photon is 9/7 X0)
CONVERSIONS_PER_X0 = 7.0 / 9.0
#: mean transverse momentum (GeV) of a nuclear interaction's products relative to the incoming hadron
HADRONIC_PT_GEV = 0.3
#: the share of protons among the products other than the leading one
PROTON_FRACTION = 0.5
ELECTRON_MASS_GEV, PION_MASS_GEV, PROTON_MASS_GEV = 0.000511, 0.13957, 0.93827


@attrs.frozen
class TwoBodyDecay:
    """A neutral particle that decays in flight into a charged pair (values from the PDG Review of Particle
    Physics): its mass (GeV), cτ (mm), the branching fraction of the charged mode, and the masses (GeV) of the
    positive and the negative product of the particle (the antiparticle swaps them)."""

    mass_gev: float
    ctau_mm: float
    charged_fraction: float
    positive_mass_gev: float
    negative_mass_gev: float

    @property
    def momentum_gev(self) -> float:
        """Each product's momentum in the rest frame."""
        m, m1, m2 = self.mass_gev, self.positive_mass_gev, self.negative_mass_gev
        return float(np.sqrt((m**2 - (m1 + m2) ** 2) * (m**2 - (m1 - m2) ** 2)) / (2.0 * m))


#: K⁰_S → π⁺π⁻ (69.2 %), cτ = 26.84 mm
KSHORT = TwoBodyDecay(0.497611, 26.844, 0.692, PION_MASS_GEV, PION_MASS_GEV)
#: Λ → pπ⁻ (63.9 %), cτ = 78.9 mm; Λ̄ → p̄π⁺
LAMBDA = TwoBodyDecay(1.115683, 78.9, 0.639, PROTON_MASS_GEV, PION_MASS_GEV)


#: how a simulated particle was made (the indices :func:`particle_kinds` gives)
PARTICLE_KINDS = ("primary", "nuclear_interaction", "conversion", "decay_in_flight")


def particle_kinds(particle_id: np.ndarray) -> np.ndarray:
    """The index into :data:`PARTICLE_KINDS` of each simulated particle id (the ids of this module's doc): a
    particle of the generator, a hadron out of a nuclear interaction, an electron of a photon conversion, or a
    product of a K⁰_S or Λ decaying in flight."""
    ids = np.asarray(particle_id, dtype=np.int64)
    parent = ids & ((1 << PRODUCT_SHIFT) - 1)
    secondary = (ids >> PRODUCT_SHIFT) > 0
    conversion = secondary & (((parent >> PHOTON_BIT) & 1) == 1)
    decay = secondary & ~conversion & (((parent >> DECAYING_BIT) & 1) == 1)
    return np.select([conversion, decay, secondary], [2, 3, 1], default=0)


def generate_photons(rng: np.random.Generator, charged: SimParticles, config: SimulationConfig) -> SimParticles:
    """The photons of an event whose charged primaries are ``charged`` (ordered by interaction), from the
    interactions' vertices; charge 0, mass 0."""
    n_photons = rng.poisson(config.photons_per_particle * np.bincount(charged.interaction))
    n = int(n_photons.sum())
    pt = rng.uniform(size=n) * sample_minimum_bias_pt(rng, n, config)
    photons = _neutrals(rng, charged, n_photons, pt, np.zeros(n), PHOTON_BIT, config)
    return photons.take(pt >= config.pt_min_gev)


def _neutrals(
    rng: np.random.Generator,
    charged: SimParticles,
    per_interaction: np.ndarray,
    pt: np.ndarray,
    mass: np.ndarray,
    bit: int,
    config: SimulationConfig,
) -> SimParticles:
    """Neutral particles from the vertices of the interactions of ``charged`` (ordered by interaction),
    ``per_interaction`` of each in order, with transverse momenta ``pt`` and masses ``mass`` (GeV), η uniform in
    ±``eta_max`` and φ uniform; ids the generator's ``(interaction + 1) << 20 | (index + 1)`` with ``bit`` set."""
    n = len(pt)
    eta = rng.uniform(-config.eta_max, config.eta_max, size=n)
    phi = rng.uniform(-np.pi, np.pi, size=n)
    interaction = np.repeat(np.arange(len(per_interaction)), per_interaction)
    particle_id = (1 << bit) | ((interaction + 1) << PARTICLE_ID_SHIFT) | (ranks_within(per_interaction) + 1)
    vertex = charged.vertex[np.searchsorted(charged.interaction, interaction)]
    momentum = np.column_stack((pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)))
    return SimParticles(particle_id.astype(np.int64), interaction, vertex, momentum, np.zeros(n, np.int64), mass)


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
    cos_theta = np.sqrt(1.0 - sin_theta**2)
    return cos_theta[:, None] * w + sin_theta[:, None] * _across(w, azimuth)


def _across(w: np.ndarray, azimuth: np.ndarray) -> np.ndarray:
    """Unit vectors [n, 3] perpendicular to the unit vectors ``w`` [n, 3], at ``azimuth`` about each."""
    helper = np.where((np.abs(w[:, 2]) < 0.9)[:, None], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])
    e1 = np.cross(w, helper)
    e1 /= np.linalg.norm(e1, axis=1)[:, None]
    e2 = np.cross(w, e1)
    return np.cos(azimuth)[:, None] * e1 + np.sin(azimuth)[:, None] * e2


def generate_decaying(rng: np.random.Generator, charged: SimParticles, config: SimulationConfig) -> SimParticles:
    """The K⁰_S, Λ and Λ̄ of an event whose charged primaries are ``charged`` (ordered by interaction), from the
    interactions' vertices (each interaction's K⁰_S first): charge 0, their own mass (a Λ and a Λ̄ are told apart
    where they decay, :func:`decay_products`)."""
    counts = np.bincount(charged.interaction)
    n_kshorts = rng.poisson(config.kshorts_per_particle * counts)
    per_interaction = n_kshorts + rng.poisson(config.lambdas_per_particle * counts)
    interaction = np.repeat(np.arange(len(counts)), per_interaction)
    is_lambda = ranks_within(per_interaction) >= n_kshorts[interaction]
    mass = np.where(is_lambda, LAMBDA.mass_gev, KSHORT.mass_gev)
    return _neutrals(rng, charged, per_interaction, _mt_scaled_pt(rng, mass, config), mass, DECAYING_BIT, config)


def _mt_scaled_pt(rng: np.random.Generator, mass: np.ndarray, config: SimulationConfig) -> np.ndarray:
    """Transverse momenta of particles of ``mass`` (GeV) whose transverse mass mT = √(pT² + m²) follows the
    distribution of the charged pions' mT (m_T scaling): pion pTs from the minimum-bias spectrum, kept where their
    mT reaches the particle's mass (drawn again otherwise), then pT = √(mT² − m²)."""
    pt = np.empty(len(mass))
    todo = np.arange(len(mass))
    while todo.size:
        mt2 = sample_minimum_bias_pt(rng, todo.size, config) ** 2 + PION_MASS_GEV**2
        reached = mt2 >= mass[todo] ** 2
        pt[todo[reached]] = np.sqrt(mt2[reached] - mass[todo[reached]] ** 2)
        todo = todo[~reached]
    return pt


def decay_products(rng: np.random.Generator, decaying: SimParticles) -> SimParticles:
    """The charged pairs of the ``decaying`` particles of :func:`generate_decaying` that decay into one: rows the
    positive then the negative product of each, from the decay point, momenta boosted from the isotropic decay in
    the rest frame. Half the Λ are Λ̄."""
    n = len(decaying)
    is_lambda = decaying.mass > KSHORT.mass_gev
    antiparticle = is_lambda & (rng.uniform(size=n) < 0.5)
    p = np.linalg.norm(decaying.momentum, axis=1)
    unit = decaying.momentum / p[:, None]
    ctau = np.where(is_lambda, LAMBDA.ctau_mm, KSHORT.ctau_mm)
    flight = rng.exponential(size=n) * p / decaying.mass * ctau
    charged_mode = rng.uniform(size=n) < np.where(is_lambda, LAMBDA.charged_fraction, KSHORT.charged_fraction)
    cos_theta = rng.uniform(-1.0, 1.0, size=n)
    azimuth = rng.uniform(-np.pi, np.pi, size=n)
    rest_momentum = np.where(is_lambda, LAMBDA.momentum_gev, KSHORT.momentum_gev)
    # the positive product leaves at polar angle θ about the flight direction in the rest frame, the negative one
    # opposite; the antiparticle (Λ̄) swaps the products' masses
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    across = _across(unit, azimuth)
    particle_mass = np.where(is_lambda, LAMBDA.positive_mass_gev, KSHORT.positive_mass_gev)  # the particle's p, π⁺
    partner_mass = np.where(is_lambda, LAMBDA.negative_mass_gev, KSHORT.negative_mass_gev)  # its π⁻
    positive_mass = np.where(antiparticle, partner_mass, particle_mass)
    negative_mass = np.where(antiparticle, particle_mass, partner_mass)
    gamma, beta_gamma = np.sqrt(p**2 + decaying.mass**2) / decaying.mass, p / decaying.mass
    momenta = []
    for sign, mass in ((1.0, positive_mass), (-1.0, negative_mass)):
        lab_along = gamma * (sign * rest_momentum * cos_theta) + beta_gamma * np.sqrt(rest_momentum**2 + mass**2)
        momenta.append(lab_along[:, None] * unit + (sign * rest_momentum * sin_theta)[:, None] * across)
    kept = np.flatnonzero(charged_mode)
    rows = np.repeat(kept, 2)
    momentum = np.stack(momenta, axis=1)[kept].reshape(-1, 3)
    return SimParticles(
        particle_id=decaying.particle_id[rows] | (np.tile([1, 2], len(kept)) << PRODUCT_SHIFT),
        interaction=decaying.interaction[rows],
        vertex=(decaying.vertex + flight[:, None] * unit)[rows],
        momentum=momentum,
        charge=np.tile(np.array([1, -1], dtype=np.int64), len(kept)),
        mass=np.column_stack((positive_mass, negative_mass))[kept].ravel(),
    )
