"""A second track building over the hits the written tracks leave free (``[fitting.selection] rebuild_free_hits``).

The first building links every GNN edge, and a particle whose hits it spreads over chains of other particles, which
the fit selection then drops, ends with its hits on no track.  Built again over the GNN edges between the free hits
alone, such a particle's chain no longer competes with the kept tracks' hits, as in the later passes of iterative
tracking.  Most chains of that second building are pieces of slow particles and mixtures of hits; a circle fitted to
each chain's hits in the transverse plane keeps those worth a Kalman fit: within :data:`MAX_CIRCLE_RESIDUAL_MM` of
every hit, and no tighter than :data:`CIRCLE_PT_FRACTION` of the transverse momentum the rebuilt tracks must reach.
"""

from __future__ import annotations

import functools

import numpy as np

from tracking_algs.event import Spacepoints, TrackCandidates
from tracking_algs.finding.building import TrackBuilding
from tracking_algs.finding.config import BuildingConfig
from tracking_algs.finding.result import FindingResult
from tracking_algs.fitting.extension import fitted_circles
from tracking_algs.fitting.selection import Rebuild
from tracking_algs.geometry import HELIX_CONSTANT, trackml_detector

#: largest distance (mm) of a chain's hit from the circle fitted to the chain's hits for the chain to be fitted: on
#: the validation seed (six events at pile-up 200), of the chains that make tracks when every chain is fitted, all but
#: one lie within 0.5 mm of their circle and that one, which holds a hit its fit rejects, within 2.7 mm; with the pT
#: condition below, 3 mm leaves about one chain in five
MAX_CIRCLE_RESIDUAL_MM = 3.0
#: a chain is fitted only where its circle's transverse momentum is at least this fraction of the rebuilt tracks'
#: smallest (the circle ignores the errors and the scattering that the fit weighs)
CIRCLE_PT_FRACTION = 0.9


def free_hit_chains(
    building: TrackBuilding,
    spacepoints: Spacepoints,
    edges: np.ndarray,
    scores: np.ndarray,
    bfield_t: float | None,
    free: np.ndarray,
    min_score: float,
    min_pt_gev: float,
) -> TrackCandidates:
    """The chains ``building`` builds over the GNN ``edges`` [2, E] (inner hit first) scored at least ``min_score``
    (``scores`` [E]) whose two hits are ``free`` [N], less those whose fitted circle misses a hit by more than
    :data:`MAX_CIRCLE_RESIDUAL_MM` or bends more than a track of ``min_pt_gev`` × :data:`CIRCLE_PT_FRACTION` in
    the field ``bfield_t`` (tesla; None: the default detector's)."""
    use = free[edges[0]] & free[edges[1]] & (scores >= min_score)
    chains = building.run(spacepoints, edges[:, use], scores[use])
    track_ids, offsets, rows = chains.groups()
    if not len(track_ids):
        return chains
    track = np.repeat(np.arange(len(track_ids)), np.diff(offsets))
    x, y = spacepoints.x[rows], spacepoints.y[rows]
    circle = fitted_circles(x, y, track, len(track_ids))
    residual = np.abs(np.hypot(x - circle[track, 0], y - circle[track, 1]) - circle[track, 2])
    worst = np.zeros(len(track_ids))
    np.maximum.at(worst, track, np.nan_to_num(residual, nan=0.0))  # no circle: judged below
    field = abs(trackml_detector().bfield_t if bfield_t is None else bfield_t)
    round_enough = HELIX_CONSTANT * field * circle[:, 2] >= CIRCLE_PT_FRACTION * min_pt_gev
    # a chain too straight for the algebraic fit (no finite circle: a fast track) is left to the Kalman fit
    kept = ~np.isfinite(circle[:, 2]) | ((worst <= MAX_CIRCLE_RESIDUAL_MM) & round_enough)
    return TrackCandidates(np.where(np.isin(chains.labels, track_ids[kept]), chains.labels, -1))


def free_hit_rebuild(
    building: BuildingConfig, spacepoints: Spacepoints, found: FindingResult, bfield_t: float | None
) -> Rebuild:
    """The :data:`~tracking_algs.fitting.selection.Rebuild` of one event: :func:`free_hit_chains` over the GNN edges
    (above the GNN cut) and scores that ``found`` holds for its ``spacepoints``."""
    return functools.partial(free_hit_chains, TrackBuilding(building), spacepoints, found.edges["gnn"],
                             found.scores["gnn"], bfield_t)  # fmt: skip
