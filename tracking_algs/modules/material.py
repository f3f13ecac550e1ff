"""The material of the TrackML modules, which ``detectors.csv`` does not carry.

The project's own assumption, one value per layer: the ``x_over_x0`` of the same (volume, layer) in the
cylinder description of the TrackML detector (:func:`tracking_algs.geometry.trackml_detector`): 1.2 % of a
radiation length for the pixel modules, 2 % for the short strips and 2.5 % for the long strips.
"""

from __future__ import annotations

import numpy as np

from tracking_algs.geometry import trackml_detector


def trackml_x_over_x0(volume_id: np.ndarray, layer_id: np.ndarray) -> np.ndarray:
    """Material (radiation lengths at normal incidence) of modules in the TrackML layers (``volume_id``,
    ``layer_id``); raises ``ValueError`` naming the first layer that the TrackML detector does not have."""
    volume_id, layer_id = np.broadcast_arrays(np.asarray(volume_id, np.int64), np.asarray(layer_id, np.int64))
    surfaces = trackml_detector().surfaces
    known = np.array([(surface.volume_id, surface.layer_id) for surface in surfaces], dtype=np.int64)
    material = np.array([surface.x_over_x0 for surface in surfaces])
    match = (volume_id[..., None] == known[:, 0]) & (layer_id[..., None] == known[:, 1])
    found = match.any(axis=-1)
    if not found.all():
        first = np.flatnonzero(~found.ravel())[0]
        raise ValueError(f"no TrackML material for volume {volume_id.ravel()[first]}, layer "
                         f"{layer_id.ravel()[first]}: give x_over_x0 explicitly")  # fmt: skip
    return material[match.argmax(axis=-1)]
