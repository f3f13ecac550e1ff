"""Simulated events on a module detector: module crossings become measurements (the cell centre on the module's
mid-plane), noise hits fall uniformly on random modules of each volume, and everything is packed into an
:class:`~tracking_algs.event.Event` in the TrackML format with the modules' ids (docs/simulation.md).

Random numbers: the particles come from the event's generator exactly as in the cylinder simulation; the
scattering and the inefficiency from counter-based streams (:mod:`~tracking_algs.simulation.streams`) keyed by
(seed, event id, stream) and indexed by (particle, crossing); the noise from its own ``SeedSequence`` child.
"""

from __future__ import annotations

import numpy as np

from tracking_algs.geometry import Detector
from tracking_algs.modules import ModuleGeometry
from tracking_algs.simulation.config import SimulationConfig
from tracking_algs.simulation.digitization import Hits
from tracking_algs.simulation.generator import Primaries
from tracking_algs.simulation.module_navigation import ModuleLayers, propagate_modules
from tracking_algs.simulation.streams import counter_uniform, stream_key

#: the streams of an event besides its own generator (``SeedSequence(seed, spawn_key=(event_id, stream))``)
SCATTERING_STREAM, INEFFICIENCY_STREAM, NOISE_STREAM = 1, 2, 3


def cell_centres(
    geometry: ModuleGeometry, rows: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The centre (u, v) of the cell holding local (u, v) on module ``rows[k]``: cells of ``pitch_u`` ×
    ``pitch_v`` counted from the module's edge at u = −``max_half_u``, v = −``half_v``; a centre outside the
    module (a partial cell at an edge) is moved onto the module's bounds."""
    pitch_u, pitch_v = geometry.pitch_u[rows], geometry.pitch_v[rows]
    half_v, low, high = geometry.half_v[rows], geometry.min_half_u[rows], geometry.max_half_u[rows]
    v_cell = -half_v + (np.floor((v + half_v) / pitch_v) + 0.5) * pitch_v
    v_cell = np.clip(v_cell, -half_v, half_v)
    u_cell = -high + (np.floor((u + high) / pitch_u) + 0.5) * pitch_u
    half_u = low + (high - low) * (v_cell + half_v) / (2 * half_v)
    return np.clip(u_cell, -half_u, half_u), v_cell


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
    primaries: Primaries,
    detector: Detector,
    layers: ModuleLayers,
) -> tuple[Hits, np.ndarray]:
    """The hits of an event's particles and its noise on the modules of ``layers``, and the module row of each
    hit (``Hits.surface`` holds the same rows)."""
    geometry = layers.geometry
    crossings = propagate_modules(
        primaries.vertex,
        primaries.momentum,
        primaries.charge,
        detector,
        layers,
        stream_key(seed, event_id, SCATTERING_STREAM),
        max_turns=config.looper_max_turns,
        multiple_scattering=config.multiple_scattering,
        mass_gev=config.particle_mass_gev,
    )
    draw = counter_uniform(stream_key(seed, event_id, INEFFICIENCY_STREAM), crossings.particle, crossings.index)
    kept = draw >= config.hit_inefficiency
    module = crossings.module[kept]
    u, v = crossings.u[kept], crossings.v[kept]
    if config.hit_smearing:
        u, v = cell_centres(geometry, module, u, v)
        measured = geometry.to_global(module, u, v)
    else:
        measured = crossings.position[kept]
    particle_hits = Hits(
        surface=module,
        measured=measured,
        true_position=crossings.position[kept],
        true_momentum=crossings.momentum[kept],
        particle=crossings.particle[kept],
        sigma=geometry.resolution(module),
    )
    rates = np.asarray(config.module_noise_per_particle_hit, dtype=np.float64)
    counts = np.round(rates * len(module)).astype(np.int64)
    noise_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(event_id, NOISE_STREAM)))
    noise_module, noise_u, noise_v = module_noise(geometry, config.module_noise_volumes, counts, noise_rng)
    if config.hit_smearing:
        noise_u, noise_v = cell_centres(geometry, noise_module, noise_u, noise_v)
    noise_position = geometry.to_global(noise_module, noise_u, noise_v)
    noise = Hits(
        surface=noise_module,
        measured=noise_position,
        true_position=noise_position.copy(),
        true_momentum=np.zeros((len(noise_module), 3)),
        particle=np.full(len(noise_module), -1, dtype=np.int64),
        sigma=geometry.resolution(noise_module),
    )
    hits = Hits.concatenate([particle_hits, noise])
    return hits, hits.surface
