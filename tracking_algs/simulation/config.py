"""Configuration of the detector simulation."""

from __future__ import annotations

import attrs
from attrs import validators as v

_non_negative = v.ge(0.0)
_probability = [v.ge(0.0), v.le(1.0)]


@attrs.frozen(kw_only=True)
class SimulationConfig:
    """What :func:`tracking_algs.simulation.simulate_event` generates. Units: GeV, mm, rad.

    Pile-up: ``Poisson(pileup)`` minimum-bias interactions, each with ``Poisson(particles_per_interaction)``
    charged particles, pT from ``pt * (1 + pt / p0) ** -power`` above ``pt_min_gev`` (mean ≈ 2·p0/(power − 3)),
    eta uniform in ``±eta_max``, each interaction at its own beam-spot vertex.  With ``signal`` on, interaction 0
    additionally holds ``signal_jets`` jets of ``signal_tracks_per_jet`` tracks, pT = ``signal_pt_min_gev`` plus an
    exponential of mean ``signal_pt_slope_gev``, spread by ``signal_jet_width`` in eta and phi around the jet axis.
    """

    pileup: float = attrs.field(default=200.0, validator=_non_negative)
    particles_per_interaction: float = attrs.field(default=50.0, validator=_non_negative)
    pt_spectrum_p0_gev: float = attrs.field(default=1.0, validator=v.gt(0.0))
    pt_spectrum_power: float = attrs.field(default=7.0, validator=v.gt(3.0))
    pt_min_gev: float = attrs.field(default=0.1, validator=v.gt(0.0))
    eta_max: float = attrs.field(default=4.0, validator=v.gt(0.0))
    beam_spot_sigma_xy_mm: float = attrs.field(default=0.0125, validator=_non_negative)
    beam_spot_sigma_z_mm: float = attrs.field(default=50.0, validator=_non_negative)
    signal: bool = True
    signal_jets: int = attrs.field(default=4, validator=v.ge(0))
    signal_tracks_per_jet: int = attrs.field(default=10, validator=v.ge(0))
    signal_pt_min_gev: float = attrs.field(default=1.0, validator=v.gt(0.0))
    signal_pt_slope_gev: float = attrs.field(default=5.0, validator=v.gt(0.0))
    signal_jet_eta_max: float = attrs.field(default=2.5, validator=v.gt(0.0))
    signal_jet_width: float = attrs.field(default=0.1, validator=_non_negative)
    hit_inefficiency: float = attrs.field(default=0.01, validator=_probability)
    noise_fraction: float = attrs.field(default=0.05, validator=_non_negative)
    multiple_scattering: bool = True
    hit_smearing: bool = True
    looper_max_turns: float = attrs.field(default=0.5, validator=v.gt(0.0))
    particle_mass_gev: float = attrs.field(default=0.13957, validator=_non_negative)
