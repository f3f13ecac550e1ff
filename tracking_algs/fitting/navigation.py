"""Which material surfaces a track crosses between two of its points: the layers it passes without a hit.

The fitter adds each crossed surface's multiple scattering, so that a track with a missing hit, a rejected outlier
or a fragment that starts at an outer layer (a candidate the finder split) is not fitted as if the material of the
skipped layers were absent.

A segment is the straight line between two points in the (r, z) plane; a barrel cylinder (beam pipe included) is
crossed where the line passes its radius inside its z extent, a disk where the line passes its z inside its r
extent.  Between two measurements the helix and that line differ by far less than the gaps between layers, so
the straight line picks the same surfaces; surfaces within :data:`END_TOLERANCE_MM` of either end are the
segment's own end surfaces and are not listed.
"""

from __future__ import annotations

import attrs
import numpy as np

from tracking_algs.fitting.helix import SurfaceKind, propagate
from tracking_algs.fitting.scattering import scattering_variances
from tracking_algs.fitting.stacked import transport_sandwich
from tracking_algs.geometry import Detector

#: surfaces closer than this (mm, in r for cylinders, in z for disks) to a segment's end are its end surfaces
END_TOLERANCE_MM = 1.0


@attrs.frozen
class Crossings:
    """C surface crossings of N segments, sorted by segment and then along it (from its start):
    ``segment`` [C] the segment index, ``rank`` [C] the crossing's number within its segment (0 first),
    ``kind``/``position``/``x_over_x0`` [C] the crossed surface."""

    segment: np.ndarray
    rank: np.ndarray
    kind: np.ndarray
    position: np.ndarray
    x_over_x0: np.ndarray

    @classmethod
    def none(cls) -> Crossings:
        """No crossings."""
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0))

    def take(self, mask: np.ndarray) -> Crossings:
        """The crossings where ``mask`` [C] holds (ranks kept as they are)."""
        return Crossings(*(getattr(self, field.name)[mask] for field in attrs.fields(Crossings)))


@attrs.frozen
class _SurfaceTable:
    """Surfaces of one kind sorted by ``position`` (radius or z), with their ``extent`` [S, 2] along the other
    coordinate and material."""

    position: np.ndarray
    extent: np.ndarray
    x_over_x0: np.ndarray

    @classmethod
    def of(cls, position, extent, x_over_x0) -> _SurfaceTable:
        order = np.argsort(position, kind="stable")
        return cls(np.asarray(position, float)[order], np.asarray(extent, float).reshape(-1, 2)[order],
                   np.asarray(x_over_x0, float)[order])  # fmt: skip


class MaterialMap:
    """The material surfaces of a detector (its layers and the beam pipe) for :meth:`crossings`."""

    def __init__(self, detector: Detector) -> None:
        barrels = [s for s in detector.surfaces if s.kind == "barrel"]
        disks = [s for s in detector.surfaces if s.kind == "endcap"]
        pipe = detector.beam_pipe
        self._cylinders = _SurfaceTable.of(
            [s.position for s in barrels] + [pipe.radius],
            [s.extent for s in barrels] + [(-np.inf, np.inf)],
            [s.x_over_x0 for s in barrels] + [pipe.x_over_x0],
        )
        self._disks = _SurfaceTable.of([s.position for s in disks], [s.extent for s in disks],
                                       [s.x_over_x0 for s in disks])  # fmt: skip

    def crossings(self, r_start: np.ndarray, z_start: np.ndarray, r_end: np.ndarray, z_end: np.ndarray) -> Crossings:
        """The surfaces with material that the N segments from (``r_start``, ``z_start``) to (``r_end``, ``z_end``)
        cross strictly between their ends, in the order met from the start."""
        r_start, z_start, r_end, z_end = (np.asarray(a, dtype=np.float64) for a in (r_start, z_start, r_end, z_end))
        cylinders = _crossed(self._cylinders, r_start, z_start, r_end, z_end)
        disks = _crossed(self._disks, z_start, r_start, z_end, r_end)
        segment = np.concatenate((cylinders[0], disks[0]))
        along = np.concatenate((cylinders[1], disks[1]))
        kind = np.repeat([SurfaceKind.CYLINDER, SurfaceKind.DISK], [len(cylinders[0]), len(disks[0])])
        position = np.concatenate((cylinders[2], disks[2]))
        x_over_x0 = np.concatenate((cylinders[3], disks[3]))
        has_material = x_over_x0 > 0.0
        order = np.lexsort((along, segment))
        order = order[has_material[order]]
        segment = segment[order]
        first = np.searchsorted(segment, segment, side="left")
        return Crossings(segment, np.arange(len(segment)) - first, kind[order], position[order], x_over_x0[order])


def _crossed(table: _SurfaceTable, u_start, v_start, u_end, v_end):
    """Surfaces of ``table`` (at u = position, spanning v in extent) that the segments from (u, v) start to end
    cross: ``(segment, fraction along it, position, x_over_x0)`` per crossing."""
    low = np.minimum(u_start, u_end) + END_TOLERANCE_MM
    high = np.maximum(u_start, u_end) - END_TOLERANCE_MM
    first = np.searchsorted(table.position, low, side="left")
    count = np.maximum(np.searchsorted(table.position, high, side="right") - first, 0)
    segment = np.repeat(np.arange(len(u_start)), count)
    surface = first[segment] + np.arange(len(segment)) - np.repeat(np.cumsum(count) - count, count)
    position = table.position[surface]
    along = (position - u_start[segment]) / (u_end[segment] - u_start[segment])
    v = v_start[segment] + along * (v_end[segment] - v_start[segment])
    inside = (v >= table.extent[surface, 0]) & (v <= table.extent[surface, 1])
    return segment[inside], along[inside], position[inside], table.x_over_x0[surface[inside]]


@attrs.frozen
class Traversal:
    """N states after :func:`traverse`: bound ``params`` [N, 5] and ``cov`` [N, 5, 5] on the surfaces ``kind``
    and ``position`` [N] of each state's last crossing (its starting surface where it crossed none)."""

    params: np.ndarray
    cov: np.ndarray
    kind: np.ndarray
    position: np.ndarray


def traverse(
    params: np.ndarray,
    cov: np.ndarray,
    kind: np.ndarray,
    position: np.ndarray,
    crossings: Crossings,
    bfield_t: float,
    mass_gev: float,
    direction: int,
) -> Traversal:
    """Take N bound states (``params``, ``cov`` on surfaces ``kind``, ``position``) through their ``crossings``
    (``segment`` indexes the N states), in rank order, adding each crossed surface's multiple scattering.

    ``direction`` +1 goes forward along the track, -1 backward.  A crossing the helix does not reach (the
    straight-line navigation was wrong for a strongly bent track) is skipped, with its material."""
    state = Traversal(params.copy(), cov.copy(), kind.copy(), position.copy())
    for rank in range(int(crossings.rank.max(initial=-1)) + 1):
        at_rank = crossings.rank == rank
        crossing, rows = crossings.take(at_rank), crossings.segment[at_rank]
        step = propagate(state.params[rows], state.kind[rows], state.position[rows], crossing.kind,
                         crossing.position, bfield_t, direction)  # fmt: skip
        rows, crossing = rows[step.ok], crossing.take(step.ok)
        arrived = step.params[step.ok]
        var_phi, var_theta = scattering_variances(arrived, crossing.kind, crossing.x_over_x0, mass_gev)
        moved = transport_sandwich(step.jacobian[step.ok], state.cov[rows])
        moved[:, 2, 2] += var_phi
        moved[:, 3, 3] += var_theta
        state.params[rows], state.cov[rows] = arrived, moved
        state.kind[rows], state.position[rows] = crossing.kind, crossing.position
    return state
