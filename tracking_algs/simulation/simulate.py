"""Simulate whole events: generate, propagate, digitise, and pack into an :class:`Event` with TrackML truth."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tracking_algs.event import Cells, Event, Particles, Spacepoints, Truth
from tracking_algs.geometry import Detector, trackml_detector
from tracking_algs.magnetic_field import MagneticField
from tracking_algs.modules import ModuleGeometry
from tracking_algs.simulation.cells import Clusters
from tracking_algs.simulation.config import SimulationConfig
from tracking_algs.simulation.digitization import Hits, module_ids, noise_hits, smear
from tracking_algs.simulation.generator import SimParticles, generate_primaries
from tracking_algs.simulation.module_hits import check_noise_volumes, module_event_hits
from tracking_algs.simulation.module_navigation import module_layers
from tracking_algs.simulation.propagation import propagate


def event_rng(seed: int, event_id: int) -> np.random.Generator:
    """The random generator of event ``event_id`` under ``seed``: the ``event_id``-th child of
    ``SeedSequence(seed)``, so an event does not depend on which other events were made.

    Raises:
        ValueError: ``seed`` or ``event_id`` is not an integer ≥ 0 (naming which).
    """
    for name, value in (("seed", seed), ("event_id", event_id)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"simulation {name} must be an integer ≥ 0, got {value!r}")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(event_id,)))


def check_setup(config: SimulationConfig, modules: ModuleGeometry | None = None) -> None:
    """Raise now what :func:`simulate_event` would raise for ``config`` on ``modules`` before it simulates anything,
    so that a caller can refuse them before it writes anything: :class:`~tracking_algs.errors.EventFormatError` for a
    layer of modules the navigation cannot use, :class:`~inference_iface.errors.ConfigError` for noise in a volume
    without modules (each naming the layer or volume)."""
    if config.geometry == "modules":
        check_noise_volumes(module_layers(modules).geometry, config)


def simulate_event(
    config: SimulationConfig,
    seed: int,
    event_id: int = 0,
    detector: Detector | None = None,
    modules: ModuleGeometry | None = None,
    field: MagneticField | None = None,
) -> Event:
    """One simulated event with truth; the same (config, seed, event_id, detector, modules, field) always gives
    the same event.  Particles move in ``field`` (None: ``detector``'s uniform field).

    Hits get ids 1..N ordered by (volume_id, layer_id, module_id, creation order); noise hits have
    particle_id 0; truth weights are 1/(number of particle hits) for particle hits and 0 for noise.
    With ``config.geometry == "modules"`` the hits lie on the flat modules of ``modules`` (None: the TrackML
    modules, :func:`tracking_algs.modules.trackml_modules`) and the particles cross the TrackML beam pipe and pixel
    support tube (:data:`tracking_algs.modules.TRACKML_SUPPORTS`), in ``detector``'s field
    (:mod:`tracking_algs.simulation.module_hits`); the particles include the secondaries (after the primaries)
    and the event has cells; ``modules`` is not used otherwise.
    """
    detector = detector or trackml_detector()
    rng = event_rng(seed, event_id)
    primaries = generate_primaries(rng, config)
    if config.geometry == "modules":
        layers = module_layers(modules)
        hits, particles, clusters = module_event_hits(config, seed, event_id, primaries, detector, layers, field)
        geometry = layers.geometry
        rows = hits.surface
        ids = (geometry.volume_id[rows], geometry.layer_id[rows], geometry.module_id[rows])
        return _pack(event_id, hits, particles, *ids, clusters)
    crossings = propagate(
        primaries.vertex,
        primaries.momentum,
        primaries.charge,
        detector,
        rng,
        max_turns=config.looper_max_turns,
        multiple_scattering=config.multiple_scattering,
        energy_loss=config.energy_loss,
        mass_gev=config.particle_mass_gev,
        field=field,
        stepping=config.stepping,
    )
    kept = rng.uniform(size=len(crossings.surface)) >= config.hit_inefficiency
    surface = crossings.surface[kept]
    measured, sigma = smear(crossings.position[kept], surface, detector, rng, enabled=config.hit_smearing)
    particle_hits = Hits(
        surface=surface,
        measured=measured,
        true_position=crossings.position[kept],
        true_momentum=crossings.momentum[kept],
        particle=crossings.particle[kept],
        sigma=sigma,
    )
    n_noise = round(config.noise_fraction * len(surface))
    hits = Hits.concatenate([particle_hits, noise_hits(n_noise, detector, rng)])
    volume = np.array([s.volume_id for s in detector.surfaces], dtype=np.int64)[hits.surface]
    layer = np.array([s.layer_id for s in detector.surfaces], dtype=np.int64)[hits.surface]
    return _pack(event_id, hits, primaries, volume, layer, module_ids(hits.measured, hits.surface, detector))


def simulate_events(
    config: SimulationConfig,
    seed: int,
    n: int,
    detector: Detector | None = None,
    modules: ModuleGeometry | None = None,
    field: MagneticField | None = None,
) -> Iterator[Event]:
    """Events 0..n−1 of ``seed``; event i equals ``simulate_event(config, seed, i, detector, modules, field)``;
    ``ValueError`` for an ``n`` that is not an integer ≥ 0."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"simulate_events: n must be an integer ≥ 0, got {n!r}")
    detector = detector or trackml_detector()
    for event_id in range(n):
        yield simulate_event(config, seed, event_id, detector, modules, field)


def _pack(
    event_id: int,
    hits: Hits,
    particles: SimParticles,
    volume: np.ndarray,
    layer: np.ndarray,
    module: np.ndarray,
    clusters: Clusters | None = None,
) -> Event:
    """Order the hits (their ``volume``, ``layer`` and ``module`` ids given), number them 1..N and build the
    spacepoints, truth, particles and (given ``clusters`` of the hits) cells tables."""
    particle_id = particles.particle_id
    order = np.lexsort((np.arange(len(volume)), module, layer, volume))
    hits = hits.take(order)
    hit_id = np.arange(1, len(order) + 1)
    is_noise = hits.particle < 0
    n_particle_hits = int((~is_noise).sum())
    spacepoints = Spacepoints(
        hit_id=hit_id,
        x=hits.measured[:, 0],
        y=hits.measured[:, 1],
        z=hits.measured[:, 2],
        volume_id=volume[order],
        layer_id=layer[order],
        module_id=module[order],
        sigma=hits.sigma,
    )
    truth = Truth(
        hit_id=hit_id,
        particle_id=np.where(is_noise, 0, particle_id[np.maximum(hits.particle, 0)]),
        tx=hits.true_position[:, 0],
        ty=hits.true_position[:, 1],
        tz=hits.true_position[:, 2],
        tpx=hits.true_momentum[:, 0],
        tpy=hits.true_momentum[:, 1],
        tpz=hits.true_momentum[:, 2],
        weight=np.where(is_noise, 0.0, 1.0 / max(n_particle_hits, 1)),
    )
    table = Particles(
        particle_id=particle_id,
        vx=particles.vertex[:, 0],
        vy=particles.vertex[:, 1],
        vz=particles.vertex[:, 2],
        px=particles.momentum[:, 0],
        py=particles.momentum[:, 1],
        pz=particles.momentum[:, 2],
        q=particles.charge,
        nhits=np.bincount(hits.particle[~is_noise], minlength=len(particle_id)),
    )
    cells = None
    if clusters is not None:
        hit_of_row = np.empty(len(order), dtype=np.int64)
        hit_of_row[order] = hit_id
        cell_hit = hit_of_row[clusters.hit]
        by_hit = np.argsort(cell_hit, kind="stable")  # each hit's cells stay in their order along the path
        cells = Cells(hit_id=cell_hit[by_hit], ch0=clusters.ch0[by_hit], ch1=clusters.ch1[by_hit],
                      value=clusters.value[by_hit])  # fmt: skip
    return Event(event_id=event_id, spacepoints=spacepoints, truth=truth, particles=table, cells=cells)
