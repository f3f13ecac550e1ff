"""Primary particles: pile-up interactions, an optional jet-like signal, beam-spot vertices."""

from __future__ import annotations

import attrs
import numpy as np

from tracking_algs.simulation.config import SimulationConfig

#: ``particle_id = (interaction + 1) << PARTICLE_ID_SHIFT | (index within the interaction + 1)``; the ids of
#: particles made in the material add bits above (:mod:`tracking_algs.simulation.secondaries`).
PARTICLE_ID_SHIFT = 20


@attrs.frozen
class SimParticles:
    """Simulated particles (row-aligned arrays): id, interaction number, production vertex, momentum there,
    charge and mass."""

    particle_id: np.ndarray
    interaction: np.ndarray
    vertex: np.ndarray  # [N, 3] mm
    momentum: np.ndarray  # [N, 3] GeV
    charge: np.ndarray  # [N] ±1 (0: a photon)
    mass: np.ndarray  # [N] GeV

    def __len__(self) -> int:
        return len(self.particle_id)

    def take(self, rows: np.ndarray) -> SimParticles:
        """The selected rows (an index array or a mask) of every column."""
        return SimParticles(*(getattr(self, f.name)[rows] for f in attrs.fields(SimParticles)))

    @classmethod
    def concatenate(cls, parts: list[SimParticles]) -> SimParticles:
        """One table holding every part's rows in order."""
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in attrs.fields(cls)))


def sample_minimum_bias_pt(rng: np.random.Generator, n: int, config: SimulationConfig) -> np.ndarray:
    """``n`` transverse momenta from ``pt (1 + pt/p0)^-power`` above ``pt_min_gev``.

    That density is a beta-prime distribution (alpha 2, beta power − 2) scaled by p0, sampled as
    p0·B/(1 − B) with B ~ Beta; values under the threshold are drawn again.
    """
    pt = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        b = rng.beta(2.0, config.pt_spectrum_power - 2.0, size=todo.size)
        pt[todo] = config.pt_spectrum_p0_gev * b / (1.0 - b)
        todo = todo[pt[todo] < config.pt_min_gev]
    return pt


def generate_primaries(rng: np.random.Generator, config: SimulationConfig) -> SimParticles:
    """All charged primaries of one event; interaction 0 is the signal interaction when ``config.signal``; all
    with the mass ``config.particle_mass_gev``."""
    n_interactions = rng.poisson(config.pileup) + int(config.signal)
    counts = rng.poisson(config.particles_per_interaction, size=n_interactions)
    interaction = np.repeat(np.arange(n_interactions), counts)
    n = interaction.size
    pt = sample_minimum_bias_pt(rng, n, config)
    eta = rng.uniform(-config.eta_max, config.eta_max, size=n)
    phi = rng.uniform(-np.pi, np.pi, size=n)

    n_jet_tracks = config.signal_jets * config.signal_tracks_per_jet if config.signal else 0
    if n_jet_tracks:
        jet_eta = rng.uniform(-config.signal_jet_eta_max, config.signal_jet_eta_max, size=config.signal_jets)
        jet_phi = rng.uniform(-np.pi, np.pi, size=config.signal_jets)
        jet = np.repeat(np.arange(config.signal_jets), config.signal_tracks_per_jet)
        signal_eta = jet_eta[jet] + rng.normal(0.0, config.signal_jet_width, size=n_jet_tracks)
        signal_phi = jet_phi[jet] + rng.normal(0.0, config.signal_jet_width, size=n_jet_tracks)
        signal_pt = config.signal_pt_min_gev + rng.exponential(config.signal_pt_slope_gev, size=n_jet_tracks)
        # the jets belong to interaction 0, which comes first
        interaction = np.concatenate((np.zeros(n_jet_tracks, dtype=np.int64), interaction))
        pt = np.concatenate((signal_pt, pt))
        eta = np.concatenate((signal_eta, eta))
        phi = np.concatenate((np.angle(np.exp(1j * signal_phi)), phi))
        n += n_jet_tracks

    vertices = np.column_stack(
        (
            rng.normal(0.0, config.beam_spot_sigma_xy_mm, size=n_interactions),
            rng.normal(0.0, config.beam_spot_sigma_xy_mm, size=n_interactions),
            rng.normal(0.0, config.beam_spot_sigma_z_mm, size=n_interactions),
        )
    )
    charge = rng.choice(np.array([-1, 1]), size=n)
    momentum = np.column_stack((pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)))

    starts = np.searchsorted(interaction, np.arange(n_interactions))
    index_in_interaction = np.arange(n) - starts[interaction]
    particle_id = ((interaction + 1) << PARTICLE_ID_SHIFT) | (index_in_interaction + 1)
    return SimParticles(
        particle_id=particle_id.astype(np.int64),
        interaction=interaction,
        vertex=vertices[interaction],
        momentum=momentum,
        charge=charge.astype(np.int64),
        mass=np.full(n, config.particle_mass_gev),
    )
