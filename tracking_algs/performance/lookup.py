"""Row lookup of particle ids, and per-hit particle quantities."""

from __future__ import annotations

import numpy as np

from tracking_algs.event import Event


def particle_rows(particle_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Row of each of ``values`` in ``particle_ids`` (unique ids), -1 where absent; 0 (noise) is never found."""
    if not len(particle_ids):
        return np.full(len(values), -1, dtype=np.int64)
    order = np.argsort(particle_ids)
    slot = order[np.minimum(np.searchsorted(particle_ids, values, sorter=order), len(particle_ids) - 1)]
    return np.where((particle_ids[slot] == values) & (values != 0), slot, -1)


def hit_particle_pt(event: Event) -> np.ndarray:
    """Transverse momentum (GeV) of each hit's particle, row-aligned with the spacepoints; 0 for noise hits and
    when the event has no particles table. Needs ``event.truth``."""
    truth_ids = np.asarray(event.known_truth().particle_id)
    pt = np.zeros(len(truth_ids))
    particles = event.particles
    if particles is not None:
        row = particle_rows(particles.particle_id, truth_ids)
        found = row >= 0
        pt[found] = particles.pt[row[found]]
    return pt
