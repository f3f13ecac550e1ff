"""How far particles scatter between their consecutive truth hits, against the Highland width of the material
the detector model assumes: a check of the material model on simulated and on real events (docs/detector.md,
"The module model")."""

from __future__ import annotations

import attrs
import numpy as np

from tracking_algs.event import Event
from tracking_algs.fitting.config import KalmanConfig
from tracking_algs.fitting.scattering import MIN_COS_INCIDENCE, highland_theta0
from tracking_algs.modules import ModuleGeometry


@attrs.frozen
class PolarTurns:
    """Consecutive truth hits (``first``, ``second`` [K], rows of the event, ordered by distance from the origin)
    of one particle: the momentum at the first (``p`` [K], GeV), the turn of the true momentum's polar angle from the
    first to the second (``turn`` [K], rad), the Highland width of the first hit's module material at the first
    hit's incidence for the fitter's mass hypothesis (``highland`` [K], rad), and whether both lie on one layer
    (``same_layer`` [K]: overlapping modules)."""

    first: np.ndarray
    second: np.ndarray
    p: np.ndarray
    turn: np.ndarray
    highland: np.ndarray
    same_layer: np.ndarray


def polar_turns(event: Event, modules: ModuleGeometry, particle_ids: np.ndarray) -> PolarTurns:
    """:class:`PolarTurns` of every pair of consecutive truth hits of the particles ``particle_ids`` in ``event``
    (its truth and spacepoints on ``modules``).  In a field along z only scattering turns the polar angle."""
    truth, spacepoints = event.known_truth(), event.spacepoints
    order = np.lexsort((truth.tx**2 + truth.ty**2 + truth.tz**2, truth.particle_id))
    order = order[np.isin(truth.particle_id[order], particle_ids)]
    first, second = order[:-1], order[1:]
    one_particle = truth.particle_id[first] == truth.particle_id[second]
    first, second = first[one_particle], second[one_particle]
    momentum = np.column_stack((truth.tpx, truth.tpy, truth.tpz))
    p = np.linalg.norm(momentum[first], axis=1)
    polar = np.arctan2(np.hypot(momentum[:, 0], momentum[:, 1]), momentum[:, 2])
    module = modules.lookup(spacepoints.volume_id, spacepoints.layer_id, spacepoints.module_id)[first]
    cos_incidence = np.abs(np.einsum("ij,ij->i", modules.normal(module), momentum[first])) / p
    highland = highland_theta0(modules.x_over_x0[module] / np.maximum(cos_incidence, MIN_COS_INCIDENCE), 1.0 / p,
                               KalmanConfig().mass_gev)  # fmt: skip
    volume, layer = spacepoints.volume_id, spacepoints.layer_id
    same_layer = (volume[first] == volume[second]) & (layer[first] == layer[second])
    return PolarTurns(first, second, p, polar[second] - polar[first], highland, same_layer)
