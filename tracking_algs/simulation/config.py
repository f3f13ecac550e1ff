"""Configuration of the detector simulation."""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

_non_negative = v.ge(0.0)
_probability = [v.ge(0.0), v.le(1.0)]

#: Noise hits per particle hit of the event, per volume, in the real TrackML data: measured on the challenge's
#: ``event000000001`` sub-sample (``../shared/trackml/sample``: 548 particles, 4698 particle hits, 829 noise hits,
#: particle_id 0): (noise hits in the volume) / (all particle hits of the event). The sum, 0.176, makes noise
#: 15.0 % of all hits, as in the full pile-up-200 events (``../shared/trackml/full/event00000100{1,3}``: 93 680 and
#: 104 451 hits, about 15 % noise), so the ratios scale from the sub-sample to a full event unchanged. Noise hits
#: per volume (particle hits there): 7: 37 (693), 8: 82 (1255), 9: 33 (683), 12: 54 (321), 13: 246 (1020),
#: 14: 49 (298), 16: 24 (119), 17: 266 (196), 18: 38 (113).
TRACKML_NOISE_VOLUMES = (7, 8, 9, 12, 13, 14, 16, 17, 18)
TRACKML_NOISE_PER_PARTICLE_HIT = (0.00788, 0.01745, 0.00702, 0.01149, 0.05236, 0.01043, 0.00511, 0.05662, 0.00809)


def _same_length_as_volumes(instance: SimulationConfig, attribute: attrs.Attribute, value: tuple) -> None:
    if len(value) != len(instance.module_noise_volumes):
        raise ValueError(f"{attribute.name} needs one value per module_noise_volumes entry "
                         f"({len(instance.module_noise_volumes)}), got {len(value)}")  # fmt: skip
    if any(x < 0 for x in value):
        raise ValueError(f"{attribute.name} must be non-negative, got {value}")


@attrs.frozen(kw_only=True)
class SimulationConfig:
    """What :func:`tracking_algs.simulation.simulate_event` generates. Units: GeV, mm, rad.

    Pile-up: ``Poisson(pileup)`` minimum-bias interactions, each with ``Poisson(particles_per_interaction)``
    charged particles, pT from ``pt * (1 + pt / p0) ** -power`` above ``pt_min_gev`` (mean ≈ 2·p0/(power − 3)),
    eta uniform in ``±eta_max``, each interaction at its own beam-spot vertex.  With ``signal`` on, interaction 0
    additionally holds ``signal_jets`` jets of ``signal_tracks_per_jet`` tracks, pT = ``signal_pt_min_gev`` plus an
    exponential of mean ``signal_pt_slope_gev``, spread by ``signal_jet_width`` in eta and phi around the jet axis.

    ``geometry``: ``"cylinders"`` (the default) simulates the ideal cylinders and disks of
    :mod:`tracking_algs.geometry`; ``"modules"`` the flat modules of :mod:`tracking_algs.modules` (TrackML-format
    hits on module planes, overlaps giving two hits per layer; see docs/simulation.md). With ``"modules"``, noise
    is ``module_noise_per_particle_hit[k]`` × (the event's particle hits) hits in volume ``module_noise_volumes[k]``
    (the real TrackML rates by default) and ``noise_fraction`` is not used.
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
    geometry: Literal["cylinders", "modules"] = attrs.field(
        default="cylinders", validator=v.in_(("cylinders", "modules"))
    )
    module_noise_volumes: tuple[int, ...] = attrs.field(default=TRACKML_NOISE_VOLUMES, converter=tuple)
    module_noise_per_particle_hit: tuple[float, ...] = attrs.field(
        default=TRACKML_NOISE_PER_PARTICLE_HIT, converter=tuple, validator=_same_length_as_volumes
    )
