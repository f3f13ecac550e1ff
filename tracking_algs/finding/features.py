"""Per-spacepoint input features of the finding models, and the orientation of edges.

Features (float32, one row per spacepoint), in :data:`FEATURE_NAMES` order:
``r/1000``, ``cos(phi)``, ``sin(phi)``, ``z/1000`` and ``eta/3`` (eta of the hit position seen from the
origin). The reference pipeline uses ``phi/pi``; it is replaced here by ``cos``/``sin`` because ``phi/pi``
jumps from 1 to -1 across phi = ±pi and would cut tracks there. Positions in mm.
"""

from __future__ import annotations

import numpy as np

from tracking_algs.errors import EventFormatError
from tracking_algs.event import MAX_COORDINATE, Spacepoints

FEATURE_NAMES: tuple[str, ...] = ("r/1000", "cos(phi)", "sin(phi)", "z/1000", "eta/3")


def check_spacepoints(spacepoints: Spacepoints) -> None:
    """Raises :class:`~tracking_algs.errors.EventFormatError` naming the first spacepoint (row and ``hit_id``) whose
    x, y or z is not a finite number within float32's range (:data:`~tracking_algs.event.MAX_COORDINATE`): the
    finders' features are float32, and their graph search takes finite positions only; or whose errors are not
    positive (the first finite, the second may be inf for a 1-D hit, as the fitter takes them): the track building
    weighs its links by them."""
    within = [np.abs(coordinate) <= MAX_COORDINATE for coordinate in (spacepoints.x, spacepoints.y, spacepoints.z)]
    bad = ~(within[0] & within[1] & within[2])  # NaN is within no range
    if bad.any():
        row = int(np.argmax(bad))
        raise EventFormatError(
            f"spacepoint row {row} (hit_id {spacepoints.hit_id[row]}): x, y, z must be finite and within float32's "
            f"range (|value| ≤ {MAX_COORDINATE:.6g} mm); got "
            f"x={spacepoints.x[row]}, y={spacepoints.y[row]}, z={spacepoints.z[row]} ({int(bad.sum())} such rows)"
        )
    sigma = spacepoints.sigma
    bad = ~((sigma[:, 0] > 0) & np.isfinite(sigma[:, 0]) & (sigma[:, 1] > 0))  # NaN is > 0 nowhere
    if bad.any():
        row = int(np.argmax(bad))
        raise EventFormatError(
            f"spacepoint row {row} (hit_id {spacepoints.hit_id[row]}): sigma must be positive, the first finite (the "
            f"second may be inf for a 1-D hit); got {sigma[row].tolist()} ({int(bad.sum())} such rows)"
        )


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
