"""Per-spacepoint input features of the finding models, and the orientation of edges.

Features (float32, one row per spacepoint), in :data:`FEATURE_NAMES` order:
``r/1000``, ``cos(phi)``, ``sin(phi)``, ``z/1000`` and ``eta/3`` (eta of the hit position seen from the
origin). The reference pipeline uses ``phi/pi``; it is replaced here by ``cos``/``sin`` because ``phi/pi``
jumps from 1 to -1 across phi = ±pi and would cut tracks there. Positions in mm.
"""

from __future__ import annotations

import numpy as np

from tracking_algs.event import Spacepoints

FEATURE_NAMES: tuple[str, ...] = ("r/1000", "cos(phi)", "sin(phi)", "z/1000", "eta/3")


def spacepoint_features(spacepoints: Spacepoints) -> np.ndarray:
    """The [N, 5] float32 feature matrix of :data:`FEATURE_NAMES`."""
    r = spacepoints.r
    phi = spacepoints.phi
    z = spacepoints.z
    eta = np.arcsinh(z / np.maximum(r, 1e-6))
    columns = (r / 1000.0, np.cos(phi), np.sin(phi), z / 1000.0, eta / 3.0)
    return np.ascontiguousarray(np.column_stack(columns), dtype=np.float32)


def orient_edges(edges: np.ndarray, spacepoints: Spacepoints) -> np.ndarray:
    """Edges [2, E] turned so that row 0 holds the hit nearer the origin (by sqrt(r² + z²))."""
    distance = spacepoints.distance
    swap = distance[edges[0]] > distance[edges[1]]
    return np.where(swap, edges[::-1], edges).astype(np.int64)
