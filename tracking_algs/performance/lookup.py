"""Row lookup of particle ids."""

from __future__ import annotations

import numpy as np


def particle_rows(particle_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Row of each of ``values`` in ``particle_ids`` (unique ids), -1 where absent; 0 (noise) is never found."""
    if not len(particle_ids):
        return np.full(len(values), -1, dtype=np.int64)
    order = np.argsort(particle_ids)
    slot = order[np.minimum(np.searchsorted(particle_ids, values, sorter=order), len(particle_ids) - 1)]
    return np.where((particle_ids[slot] == values) & (values != 0), slot, -1)
