"""Configuration of the detector simulation."""

from __future__ import annotations

import math
from typing import Any, Literal

import attrs
from attrs import validators as v

from inference_iface.options import finite, integer
from tracking_algs.magnetic_field import Stepping

_non_negative = [finite, v.ge(0.0)]
#: The largest mean pile-up and mean particles per interaction taken (five times the HL-LHC's 200 interactions): a
#: larger mean would only exhaust the memory, or the Poisson draw's range (about 1e19)
MAX_MEAN_COUNT = 1000.0
_mean_count = [*_non_negative, v.le(MAX_MEAN_COUNT)]
_probability = [*_non_negative, v.le(1.0)]
#: The largest |η| range taken (``eta_max``, ``signal_jet_eta_max``, ``signal_jet_width``): the TrackML detector
#: covers |η| < 4; beyond |η| ≈ 700 ``pT·sinh(η)`` is no longer a number
MAX_ETA = 10.0
_eta = [finite, v.gt(0.0), v.le(MAX_ETA)]
#: The largest momentum scale or mass taken (GeV): beyond the LHC's 7 TeV beams
MAX_MOMENTUM_GEV = 1.0e4
_momentum = [finite, v.gt(0.0), v.le(MAX_MOMENTUM_GEV)]
#: The largest count of signal jets, and of tracks per jet (as :data:`MAX_MEAN_COUNT`)
MAX_SIGNAL_COUNT = 1000
_signal_count = [integer, v.ge(0), v.le(MAX_SIGNAL_COUNT)]
#: The largest rate per particle (noise hits per particle hit, photons, K⁰_S, Λ per charged particle): tens of
#: times the real ones (0.18, 0.8, 0.06, 0.03); a larger one would only exhaust the memory
MAX_PER_PARTICLE = 10.0
_per_particle = [*_non_negative, v.le(MAX_PER_PARTICLE)]
#: The largest mean number of hadrons out of a nuclear interaction (about 3 in silicon)
MAX_HADRONIC_MULTIPLICITY = 100.0
#: The largest charge sharing beyond a path (mm): twenty pixel pitches of 50 µm; a wider one walks millions of cells
MAX_CHARGE_SHARING_MM = 1.0
#: The least share of the minimum-bias pT spectrum above ``pt_min_gev`` taken: it is sampled by drawing again
#: what falls under the threshold, about 1/share draws per particle
MIN_PT_ACCEPTANCE = 1e-3

#: Noise hits per particle hit of the event, per volume, in the real TrackML data: measured on the challenge's
#: ``event000000001`` sub-sample (``../shared/trackml/sample``: 548 particles, 4698 particle hits, 829 noise hits,
#: particle_id 0): (noise hits in the volume) / (all particle hits of the event). The sum, 0.176, makes noise
#: 15.0 % of all hits, as in the full pile-up-200 events (``../shared/trackml/full/event00000100{1,3}``: 93 680 and
#: 104 451 hits, about 15 % noise), so the ratios scale from the sub-sample to a full event unchanged. Noise hits
#: per volume (particle hits there): 7: 37 (693), 8: 82 (1255), 9: 33 (683), 12: 54 (321), 13: 246 (1020),
#: 14: 49 (298), 16: 24 (119), 17: 266 (196), 18: 38 (113).
TRACKML_NOISE_VOLUMES = (7, 8, 9, 12, 13, 14, 16, 17, 18)
TRACKML_NOISE_PER_PARTICLE_HIT = (0.00788, 0.01745, 0.00702, 0.01149, 0.05236, 0.01043, 0.00511, 0.05662, 0.00809)


#: Charged particles per minimum-bias interaction: the cylinder simulation's value (unchanged, bit for bit) and the
#: module simulation's, ≈ dN/dη × 8 units of η: about 5.5 charged particles per unit of η at η = 0 in inelastic
#: pp collisions at 13 TeV (CMS, Phys. Lett. B 751 (2015) 143), about 80 % of them above pT 0.1 GeV, over |η| < 4
#: (docs/simulation.md, "Tuning of the module simulation").
CYLINDER_PARTICLES_PER_INTERACTION = 50.0
MODULE_PARTICLES_PER_INTERACTION = 35.0
#: X0 / λ_I of silicon (X0 = 95.7 mm, λ_I = 465.2 mm, the material of the ACTS generic detector behind TrackML):
#: nuclear interaction lengths per radiation length of module material.
SILICON_X0_OVER_LAMBDA = 95.7 / 465.2


def _default_particles_per_interaction(config: SimulationConfig) -> float:
    return MODULE_PARTICLES_PER_INTERACTION if config.geometry == "modules" else CYLINDER_PARTICLES_PER_INTERACTION


def _each_once(instance: SimulationConfig, attribute: attrs.Attribute, value: tuple) -> None:
    """Refuse a volume named twice: its two rates would add up unseen."""
    twice = sorted({volume for volume in value if value.count(volume) > 1})
    if twice:
        raise ValueError(f"{attribute.name} names volume {', '.join(map(str, twice))} more than once; give each once")


def _same_length_as_volumes(instance: SimulationConfig, attribute: attrs.Attribute, value: tuple) -> None:
    if len(value) != len(instance.module_noise_volumes):
        raise ValueError(f"{attribute.name} needs one value per module_noise_volumes entry "
                         f"({len(instance.module_noise_volumes)}), got {len(value)}")  # fmt: skip
    if any(not 0 <= x <= MAX_PER_PARTICLE for x in value):
        raise ValueError(f"{attribute.name} must each be from 0 to {MAX_PER_PARTICLE:g}, got {value}")


def pt_acceptance(p0_gev: float, power: float, pt_min_gev: float) -> float:
    """The share of the spectrum ``pt (1 + pt/p0)^-power`` above ``pt_min_gev``: with B ~ Beta(2, β), β = power − 2,
    and t = pt_min/(p0 + pt_min), P(B > t) = (1 − t)^β (1 + β t)."""
    beta = power - 2.0
    t = pt_min_gev / (p0_gev + pt_min_gev)
    return math.exp(-beta * (math.log(p0_gev + pt_min_gev) - math.log(p0_gev))) * (1.0 + beta * t)


def _spectrum_accepted(instance: SimulationConfig, _attribute: attrs.Attribute, _value: Any) -> None:
    """Refuse a ``pt_min_gev`` so far in the spectrum's tail that sampling it would never end."""
    share = pt_acceptance(instance.pt_spectrum_p0_gev, instance.pt_spectrum_power, instance.pt_min_gev)
    if share < MIN_PT_ACCEPTANCE:
        raise ValueError(
            f"pt_min_gev={instance.pt_min_gev:g} keeps only {share:.3g} of the pT spectrum of "
            f"pt_spectrum_p0_gev={instance.pt_spectrum_p0_gev:g} and pt_spectrum_power={instance.pt_spectrum_power:g} "
            f"(at least {MIN_PT_ACCEPTANCE:g} is needed): lower pt_min_gev or pt_spectrum_power, or raise "
            "pt_spectrum_p0_gev"
        )


@attrs.frozen(kw_only=True)
class SimulationConfig:
    """What :func:`tracking_algs.simulation.simulate_event` generates. Units: GeV, mm, rad.

    Pile-up: ``Poisson(pileup)`` minimum-bias interactions, each with ``Poisson(particles_per_interaction)`` charged
    particles, pT from ``pt * (1 + pt / p0) ** -power`` above ``pt_min_gev`` (mean ≈ 2·p0/(power − 3)), eta uniform in
    ``±eta_max``, each interaction at its own beam-spot vertex.  With ``signal`` on, one interaction more, interaction
    0, additionally holds ``signal_jets`` jets of ``signal_tracks_per_jet`` tracks, pT = ``signal_pt_min_gev`` plus an
    exponential of mean ``signal_pt_slope_gev``, spread by ``signal_jet_width`` in eta and phi around the jet axis.

    ``geometry``: ``"cylinders"`` (the default) simulates the ideal cylinders and disks of
    :mod:`tracking_algs.geometry`; ``"modules"`` the flat modules of :mod:`tracking_algs.modules` (TrackML-format
    hits on module planes, overlaps giving two hits per layer, clusters of cells, secondaries; see
    docs/simulation.md). ``particles_per_interaction`` defaults to :data:`CYLINDER_PARTICLES_PER_INTERACTION`
    with ``"cylinders"`` and to :data:`MODULE_PARTICLES_PER_INTERACTION` with ``"modules"`` when not given.

    Used with ``"modules"`` only: noise is ``module_noise_per_particle_hit[k]`` × (the event's particle hits) hits
    in volume ``module_noise_volumes[k]`` (the real TrackML rates by default; ``noise_fraction`` is not used).
    Secondaries (:mod:`tracking_algs.simulation.secondaries`): a hadron ends in a layer it crosses (at the
    layer's last module on its way, where the layer's material is) with probability
    1 − exp(−``nuclear_interactions_per_x0`` · x/X0 / |cos α|) and leaves ``Poisson(hadronic_multiplicity)`` (at
    least one) charged hadrons there; ``photons_per_particle`` photons per charged particle of each interaction
    (π⁰ decays) convert into e⁺e⁻ pairs with probability 1 − exp(−7/9 · x/X0 / |cos α|) per layer crossed;
    ``kshorts_per_particle`` K⁰_S and ``lambdas_per_particle`` Λ or Λ̄ per charged particle of each interaction
    decay in flight into their charged pairs; secondaries under ``pt_min_gev`` are not followed. Zero turns each
    off.
    Every hit is a cluster of cells (:mod:`tracking_algs.simulation.cells`) whose charge spreads
    ``cell_charge_sharing_mm`` beyond the particle's path in u and v.

    ``energy_loss`` (off by default, which keeps the simulation as it was): every crossing of material takes the
    particle's mean ionisation loss there (:mod:`tracking_algs.energy_loss`, no fluctuation).

    ``step_tolerance_mm`` and ``max_step_pieces``: in a non-uniform field, a step from surface to surface whose
    single midpoint step would miss the Lorentz force by more than ``step_tolerance_mm`` is taken in up to
    ``max_step_pieces`` pieces (:class:`~tracking_algs.magnetic_field.Stepping`; ``max_step_pieces`` 1 or
    ``step_tolerance_mm`` 0: one step per surface).
    """

    geometry: Literal["cylinders", "modules"] = attrs.field(
        default="cylinders", validator=v.in_(("cylinders", "modules"))
    )
    pileup: float = attrs.field(default=200.0, validator=_mean_count)
    particles_per_interaction: float = attrs.field(
        default=attrs.Factory(_default_particles_per_interaction, takes_self=True), validator=_mean_count
    )
    pt_spectrum_p0_gev: float = attrs.field(default=1.0, validator=_momentum)
    pt_spectrum_power: float = attrs.field(default=7.0, validator=[finite, v.gt(3.0)])
    pt_min_gev: float = attrs.field(default=0.1, validator=[*_momentum, _spectrum_accepted])
    eta_max: float = attrs.field(default=4.0, validator=_eta)
    beam_spot_sigma_xy_mm: float = attrs.field(default=0.0125, validator=_non_negative)
    beam_spot_sigma_z_mm: float = attrs.field(default=50.0, validator=_non_negative)
    signal: bool = attrs.field(default=True, validator=v.instance_of(bool))
    signal_jets: int = attrs.field(default=4, validator=_signal_count)
    signal_tracks_per_jet: int = attrs.field(default=10, validator=_signal_count)
    signal_pt_min_gev: float = attrs.field(default=1.0, validator=_momentum)
    signal_pt_slope_gev: float = attrs.field(default=5.0, validator=_momentum)
    signal_jet_eta_max: float = attrs.field(default=2.5, validator=_eta)
    signal_jet_width: float = attrs.field(default=0.1, validator=[*_non_negative, v.le(MAX_ETA)])
    hit_inefficiency: float = attrs.field(default=0.01, validator=_probability)
    noise_fraction: float = attrs.field(default=0.05, validator=_per_particle)
    multiple_scattering: bool = attrs.field(default=True, validator=v.instance_of(bool))
    energy_loss: bool = attrs.field(default=False, validator=v.instance_of(bool))
    step_tolerance_mm: float = attrs.field(default=0.002, validator=_non_negative)
    max_step_pieces: int = attrs.field(default=16, validator=[integer, v.ge(1)])
    hit_smearing: bool = attrs.field(default=True, validator=v.instance_of(bool))
    looper_max_turns: float = attrs.field(default=0.5, validator=[finite, v.gt(0.0)])
    particle_mass_gev: float = attrs.field(default=0.13957, validator=[*_non_negative, v.le(MAX_MOMENTUM_GEV)])
    module_noise_volumes: tuple[int, ...] = attrs.field(
        default=TRACKML_NOISE_VOLUMES, converter=tuple, validator=[v.deep_iterable(integer), _each_once]
    )
    module_noise_per_particle_hit: tuple[float, ...] = attrs.field(
        default=TRACKML_NOISE_PER_PARTICLE_HIT,
        converter=tuple,
        validator=[v.deep_iterable(finite), _same_length_as_volumes],
    )
    nuclear_interactions_per_x0: float = attrs.field(default=SILICON_X0_OVER_LAMBDA, validator=_non_negative)
    hadronic_multiplicity: float = attrs.field(default=3.0, validator=[*_non_negative, v.le(MAX_HADRONIC_MULTIPLICITY)])
    photons_per_particle: float = attrs.field(default=0.8, validator=_per_particle)
    kshorts_per_particle: float = attrs.field(default=0.061, validator=_per_particle)
    lambdas_per_particle: float = attrs.field(default=0.031, validator=_per_particle)
    cell_charge_sharing_mm: float = attrs.field(default=0.003, validator=[*_non_negative, v.le(MAX_CHARGE_SHARING_MM)])

    @property
    def stepping(self) -> Stepping:
        """How finely particles are followed through a non-uniform field."""
        return Stepping(self.step_tolerance_mm, self.max_step_pieces)
