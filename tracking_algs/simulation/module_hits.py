"""Simulated events on a module detector: the particles' module crossings, their secondaries (photon conversions,
nuclear interactions and decays in flight, :mod:`~tracking_algs.simulation.secondaries`), noise hits uniform on
random modules of each volume, and a cluster of cells for every hit (:mod:`~tracking_algs.simulation.cells`) whose
centroid is the measured position (docs/simulation.md).

Two passes of the navigation: first the charged primaries and the photons (followed as straight lines: charged
probes of :data:`PHOTON_PROBE_GEV` along their direction, which stay within 0.01 mm of the photon's line over the
3.2 m of the tracker), each ending in a module with its own rate; then the secondaries made where they ended and
the charged products of the K⁰_S and Λ decaying in flight.

Random numbers: the primaries come from the event's generator exactly as in the cylinder simulation; the
scattering, the inefficiency and the ending of a particle in a module from counter-based streams
(:mod:`~tracking_algs.simulation.streams`) keyed by (seed, event id, stream) and indexed by (particle, crossing);
the photons, the secondaries' momenta, the decaying particles and the noise from generators of their own
``SeedSequence`` children.
"""

from __future__ import annotations

import attrs
import numpy as np

from inference_iface.errors import ConfigError
from tracking_algs.geometry import Detector
from tracking_algs.magnetic_field import MagneticField
from tracking_algs.modules import ModuleGeometry
from tracking_algs.simulation.cells import Clusters, cluster
from tracking_algs.simulation.cluster_errors import cluster_errors, cluster_sizes
from tracking_algs.simulation.config import SimulationConfig
from tracking_algs.simulation.digitization import Hits
from tracking_algs.simulation.generator import SimParticles
from tracking_algs.simulation.module_navigation import ModuleCrossings, ModuleLayers, propagate_modules
from tracking_algs.simulation.secondaries import (
    CONVERSIONS_PER_X0,
    conversion_pairs,
    decay_products,
    generate_decaying,
    generate_photons,
    hadronic_products,
)
from tracking_algs.simulation.streams import counter_uniform, stream_key

#: the streams of an event besides its own generator (``SeedSequence(seed, spawn_key=(event_id, stream))``)
SCATTERING_STREAM, INEFFICIENCY_STREAM, NOISE_STREAM, ENDING_STREAM = 1, 2, 3, 4
PHOTON_STREAM, PRODUCTS_STREAM, SECONDARY_SCATTERING_STREAM, SECONDARY_INEFFICIENCY_STREAM = 5, 6, 7, 8
DECAYS_STREAM = 9
#: the momentum (GeV) of the charged probe that follows a photon's straight line through the navigation
PHOTON_PROBE_GEV = 1.0e5
#: a crossing more inclined than this |cos α| (84° from the module's normal) leaves no hit: none of the TrackML
#: sample's hits has a smaller one (0.102 at the least, pixel barrel)
MIN_HIT_COS_INCIDENCE = 0.1


def check_noise_volumes(geometry: ModuleGeometry, config: SimulationConfig) -> None:
    """:class:`ConfigError` naming each volume of ``module_noise_volumes`` with noise (a rate above 0) that
    ``geometry`` has no module in: its noise would be dropped silently."""
    rates = dict(zip(config.module_noise_volumes, config.module_noise_per_particle_hit, strict=True))
    missing = [volume for volume, rate in rates.items() if rate > 0 and not np.any(geometry.volume_id == volume)]
    if missing:
        present = ", ".join(map(str, np.unique(geometry.volume_id).tolist()))
        raise ConfigError(
            f"module_noise_volumes: the modules have no volume {', '.join(map(str, missing))} for its noise "
            f"(their volumes: {present}); remove it, or set its module_noise_per_particle_hit to 0"
        )


def module_noise(
    geometry: ModuleGeometry, volumes: tuple[int, ...], counts: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``counts[k]`` points in volume ``volumes[k]``, each on a module drawn with probability ∝ its area and
    uniform over the module's trapezoid: (module rows, u, v)."""
    area = 2.0 * geometry.half_v * (geometry.min_half_u + geometry.max_half_u)
    chosen = []
    for volume, count in zip(volumes, counts, strict=True):
        rows = np.flatnonzero(geometry.volume_id == volume)
        if count and len(rows):
            chosen.append(rng.choice(rows, size=int(count), p=area[rows] / area[rows].sum()))
    module = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    n = len(module)
    low, high, half_v = geometry.min_half_u[module], geometry.max_half_u[module], geometry.half_v[module]
    # v: density ∝ the half width h(t) = low + (high − low) t at t = (v + half_v) / (2 half_v), by inversion
    x = rng.uniform(size=n)
    slope = high - low
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(np.abs(slope) > 1e-12 * high,
                     (np.sqrt(low**2 + x * (high**2 - low**2)) - low) / slope, x)  # fmt: skip
    v = -half_v + 2.0 * half_v * t
    u = (2.0 * rng.uniform(size=n) - 1.0) * (low + slope * t)
    return module, u, v


def module_event_hits(
    config: SimulationConfig,
    seed: int,
    event_id: int,
    primaries: SimParticles,
    detector: Detector,
    layers: ModuleLayers,
    field: MagneticField | None = None,
) -> tuple[Hits, SimParticles, Clusters]:
    """The hits of an event's particles and its noise on the modules of ``layers`` (``Hits.surface``: module
    rows; ``Hits.particle``: rows of the returned particles, the primaries followed by their secondaries) and the
    cluster of each hit, the particles moving in ``field`` (None: the detector's uniform field)."""
    geometry = layers.geometry
    check_noise_volumes(geometry, config)
    crossings, secondaries, second = _follow(config, seed, event_id, primaries, detector, layers, field)
    crossings = _kept(crossings, geometry, stream_key(seed, event_id, INEFFICIENCY_STREAM), config)
    second = _kept(second, geometry, stream_key(seed, event_id, SECONDARY_INEFFICIENCY_STREAM), config)
    particle = np.concatenate([crossings.particle, second.particle + len(primaries)])

    rates = np.asarray(config.module_noise_per_particle_hit, dtype=np.float64)
    counts = np.round(rates * len(particle)).astype(np.int64)
    noise_module, noise_u, noise_v = module_noise(geometry, config.module_noise_volumes, counts,
                                                  _generator(seed, event_id, NOISE_STREAM))  # fmt: skip
    noise_position = geometry.to_global(noise_module, noise_u, noise_v)
    n_noise = len(noise_module)

    module = np.concatenate([crossings.module, second.module, noise_module])
    true_position = np.concatenate([crossings.position, second.position, noise_position])
    true_momentum = np.concatenate([crossings.momentum, second.momentum, np.zeros((n_noise, 3))])
    u, v, _ = geometry.to_local(module, true_position)
    # noise: the cluster of a straight track from the origin
    direction = np.concatenate([crossings.momentum, second.momentum, noise_position])
    clusters = cluster(geometry, module, u, v, direction, config.cell_charge_sharing_mm)
    measured = geometry.to_global(module, clusters.u, clusters.v) if config.hit_smearing else true_position
    size = cluster_sizes(clusters.hit, clusters.ch0, clusters.ch1, len(module))
    hits = Hits(
        surface=module,
        measured=measured,
        true_position=true_position,
        true_momentum=true_momentum,
        particle=np.concatenate([particle, np.full(n_noise, -1, dtype=np.int64)]),
        sigma=cluster_errors().sigma(geometry, module, size),
    )
    return hits, SimParticles.concatenate([primaries, secondaries]), clusters


def _follow(
    config: SimulationConfig,
    seed: int,
    event_id: int,
    primaries: SimParticles,
    detector: Detector,
    layers: ModuleLayers,
    field: MagneticField | None,
) -> tuple[ModuleCrossings, SimParticles, ModuleCrossings]:
    """The two passes of the navigation: the module crossings of the primaries (followed with the photons, each
    ending in a module or a passive cylinder with its own rate), the secondaries made where they ended (above
    ``pt_min_gev``), and the secondaries' crossings."""
    photons = generate_photons(_generator(seed, event_id, PHOTON_STREAM), primaries, config)
    unit = photons.momentum / np.linalg.norm(photons.momentum, axis=1)[:, None]
    probes = attrs.evolve(photons, momentum=unit * PHOTON_PROBE_GEV, charge=np.ones(len(photons), dtype=np.int64))
    n = len(primaries)
    ends_per_x0 = np.repeat([config.nuclear_interactions_per_x0, CONVERSIONS_PER_X0], [n, len(photons)])
    hadronic = np.arange(n + len(photons)) < n
    crossings = _propagate(config, detector, layers, field, SimParticles.concatenate([primaries, probes]),
                           stream_key(seed, event_id, SCATTERING_STREAM), ends_per_x0,
                           stream_key(seed, event_id, ENDING_STREAM), hadronic)  # fmt: skip
    interacted = crossings.take(crossings.ended & (crossings.particle < n))
    converted = crossings.take(crossings.ended & (crossings.particle >= n))
    rng = _generator(seed, event_id, PRODUCTS_STREAM)
    decays = _generator(seed, event_id, DECAYS_STREAM)
    made = SimParticles.concatenate([
        hadronic_products(rng, primaries.take(interacted.particle), interacted.position, interacted.momentum,
                          config),
        conversion_pairs(rng, photons.take(converted.particle - n), converted.position, converted.momentum),
        decay_products(decays, generate_decaying(decays, primaries, config)),
    ])  # fmt: skip
    secondaries = made.take(np.hypot(made.momentum[:, 0], made.momentum[:, 1]) >= config.pt_min_gev)
    second = _propagate(config, detector, layers, field, secondaries,
                        stream_key(seed, event_id, SECONDARY_SCATTERING_STREAM))  # fmt: skip
    return crossings.take((crossings.particle < n) & (crossings.module >= 0)), secondaries, second


def _generator(seed: int, event_id: int, stream: int) -> np.random.Generator:
    """The generator of stream ``stream`` of event ``event_id``: ``SeedSequence(seed, spawn_key=(event_id,
    stream))``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(event_id, stream)))


def _propagate(
    config: SimulationConfig,
    detector: Detector,
    layers: ModuleLayers,
    field: MagneticField | None,
    particles: SimParticles,
    scattering_key: int,
    ends_per_x0: np.ndarray | None = None,
    ending_key: int = 0,
    hadronic: np.ndarray | None = None,
) -> ModuleCrossings:
    """The module crossings of ``particles`` (:func:`propagate_modules` with the settings of ``config``)."""
    return propagate_modules(
        particles.vertex,
        particles.momentum,
        particles.charge,
        detector,
        layers,
        scattering_key,
        max_turns=config.looper_max_turns,
        multiple_scattering=config.multiple_scattering,
        energy_loss=config.energy_loss,
        mass_gev=particles.mass,
        ends_per_x0=ends_per_x0,
        ending_key=ending_key,
        hadronic=hadronic,
        field=field,
        stepping=config.stepping,
    )


def _kept(crossings: ModuleCrossings, geometry: ModuleGeometry, key: int, config: SimulationConfig) -> ModuleCrossings:
    """The crossings that make a hit: those at |cos α| ≥ :data:`MIN_HIT_COS_INCIDENCE`, each lost with probability
    ``hit_inefficiency``, drawn as ``counter_uniform(key, particle, crossing number)``."""
    draw = counter_uniform(key, crossings.particle, crossings.index)
    normal = geometry.normal(crossings.module)
    cos_incidence = np.abs(np.einsum("ij,ij->i", normal, crossings.momentum))
    cos_incidence /= np.linalg.norm(crossings.momentum, axis=1)
    return crossings.take((draw >= config.hit_inefficiency) & (cos_incidence >= MIN_HIT_COS_INCIDENCE))
