"""The particles of a simulated event that tests cut into pieces: those from the beam line, fast and long enough."""

from __future__ import annotations

import numpy as np

from tracking_algs.event import Event
from tracking_algs.performance.lookup import particle_rows


def beam_line_particles(event: Event, min_pt_gev: float, min_hits: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The ids of the particles of ``event`` produced within 1 mm of the z axis, above ``min_pt_gev`` with at least
    ``min_hits`` hits, and each one's hits (spacepoint rows) in order of distance from the origin."""
    particle, sp = event.truth.particle_id, event.spacepoints
    rows_of = particle_rows(event.particles.particle_id, particle)
    from_beam_line = np.hypot(event.particles.vx, event.particles.vy)[rows_of] < 1.0
    fast = event.particles.pt[rows_of] > min_pt_gev
    ids, counts = np.unique(particle[(particle > 0) & from_beam_line & fast], return_counts=True)
    chosen = ids[counts >= min_hits]
    hits = [np.flatnonzero(particle == owner) for owner in chosen]
    return chosen, [rows[np.argsort(sp.distance[rows])] for rows in hits]
