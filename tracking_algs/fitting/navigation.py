"""Which material surfaces a track crosses between two of its points: the layers it passes without a hit.

The fitter adds each crossed surface's multiple scattering, so that a track with a missing hit, a rejected outlier
or a fragment that starts at an outer layer (a candidate the finder split) is not fitted as if the material of the
skipped layers were absent.

A segment is the straight line between two points in the (r, z) plane; a barrel cylinder (beam pipe included) is
crossed where the line passes its radius inside its z extent, a disk where the line passes its z inside its r
extent.  Between two measurements the helix and that line differ by far less than the gaps between layers, so
the straight line picks the same surfaces; surfaces within :data:`END_TOLERANCE_MM` of either end are the
segment's own end surfaces and are not listed, and neither is the layer of an end given by its key (a hit on a
tilted or staggered module may lie a few mm from its layer's nominal surface, on either side of it).
"""

from __future__ import annotations

import attrs
import numpy as np

from tracking_algs.fitting.config import KalmanConfig
from tracking_algs.fitting.helix import SurfaceKind, no_planes, propagate
from tracking_algs.fitting.scattering import path_in_x0, through_material
from tracking_algs.fitting.stacked import transport_sandwich
from tracking_algs.geometry import Detector
from tracking_algs.magnetic_field import MagneticField, Stepping
from tracking_algs.modules import TRACKML_BEAM_PIPE, TRACKML_SUPPORT_TUBE, ModuleGeometry
from tracking_algs.ranges import concatenated_ranges

#: surfaces closer than this (mm, in r for cylinders, in z for disks) to a segment's end are its end surfaces
END_TOLERANCE_MM = 1.0
_LAYER_BITS = 32
#: the :func:`layer_key` of the beam pipe, the one to give a segment's end that lies on no layer, and that of the
#: pixel support tube
BEAM_PIPE_KEY, NO_LAYER, SUPPORT_TUBE_KEY = -1, -2, -3


def layer_key(volume_id: np.ndarray | int, layer_id: np.ndarray | int) -> np.ndarray:
    """One int64 per (volume, layer), as :meth:`MaterialMap.crossings` takes the layers of a segment's ends."""
    return (np.asarray(volume_id, dtype=np.int64) << _LAYER_BITS) + np.asarray(layer_id, dtype=np.int64)


@attrs.frozen
class Crossings:
    """C surface crossings of N segments, sorted by segment and then along it (from its start):
    ``segment`` [C] the segment index, ``rank`` [C] the crossing's number within its segment (0 first),
    ``kind``/``position``/``x_over_x0`` [C] the crossed surface and ``key`` [C] its :func:`layer_key`
    (:data:`BEAM_PIPE_KEY` for the beam pipe, :data:`SUPPORT_TUBE_KEY` for the pixel support tube)."""

    segment: np.ndarray
    rank: np.ndarray
    kind: np.ndarray
    position: np.ndarray
    x_over_x0: np.ndarray
    key: np.ndarray

    @classmethod
    def none(cls) -> Crossings:
        """No crossings."""
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), np.empty(0),
                   np.empty(0, np.int64))  # fmt: skip

    def take(self, mask: np.ndarray) -> Crossings:
        """The crossings where ``mask`` [C] holds (ranks kept as they are)."""
        return Crossings(*(getattr(self, field.name)[mask] for field in attrs.fields(Crossings)))


#: one material surface for :class:`_SurfaceTable`: (position, extent, x_over_x0, layer key)
_SurfaceRow = tuple[float, tuple[float, float], float, int | np.ndarray]


@attrs.frozen
class _SurfaceTable:
    """Surfaces of one kind sorted by ``position`` (radius or z), with their ``extent`` [S, 2] along the other
    coordinate, material and layer ``key``."""

    position: np.ndarray
    extent: np.ndarray
    x_over_x0: np.ndarray
    key: np.ndarray

    @classmethod
    def of(cls, rows: list[_SurfaceRow]) -> _SurfaceTable:
        """The table of ``rows`` of (position, extent, x_over_x0, key), none or many."""
        position, extent, x_over_x0, key = zip(*rows, strict=True) if rows else ((), (), (), ())
        order = np.argsort(position, kind="stable")
        return cls(np.asarray(position, float)[order], np.asarray(extent, float).reshape(-1, 2)[order],
                   np.asarray(x_over_x0, float)[order], np.asarray(key, np.int64)[order])  # fmt: skip


class MaterialMap:
    """The material surfaces of a detector (its layers and the passive cylinders) for :meth:`crossings`.

    The layers are those of ``detector`` with its beam pipe, or with ``modules`` those of the module geometry, each
    layer as the cylinder (barrel) or disk (endcap) through the mean of its module centres, spanning its modules,
    with their mean material, and the TrackML detector's beam pipe and pixel support tube
    (:data:`~tracking_algs.modules.TRACKML_SUPPORTS`)."""

    def __init__(self, detector: Detector, modules: ModuleGeometry | None = None) -> None:
        if modules is None:
            barrels = [s for s in detector.surfaces if s.kind == "barrel"]
            disks = [s for s in detector.surfaces if s.kind == "endcap"]
            cylinders: list[_SurfaceRow] = [
                (s.position, s.extent, s.x_over_x0, layer_key(s.volume_id, s.layer_id)) for s in barrels
            ]
            planes: list[_SurfaceRow] = [
                (s.position, s.extent, s.x_over_x0, layer_key(s.volume_id, s.layer_id)) for s in disks
            ]
            pipe = detector.beam_pipe
            cylinders.append((pipe.radius, (-np.inf, np.inf), pipe.x_over_x0, BEAM_PIPE_KEY))
        else:
            cylinders, planes = _module_layers(modules)
            for support, key in ((TRACKML_BEAM_PIPE, BEAM_PIPE_KEY), (TRACKML_SUPPORT_TUBE, SUPPORT_TUBE_KEY)):
                extent = (-support.half_length, support.half_length)
                cylinders.append((support.radius, extent, support.x_over_x0, key))
        self._cylinders = _SurfaceTable.of(cylinders)
        self._disks = _SurfaceTable.of(planes)

    def crossings(
        self,
        r_start: np.ndarray,
        z_start: np.ndarray,
        r_end: np.ndarray,
        z_end: np.ndarray,
        end_layers: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Crossings:
        """The surfaces with material that the N segments from (``r_start``, ``z_start``) to (``r_end``, ``z_end``)
        cross strictly between their ends, in the order met from the start; ``end_layers`` (the
        :func:`layer_key` [N] of the start's and the end's layer, :data:`NO_LAYER` for none) are never listed."""
        r_start, z_start, r_end, z_end = (np.asarray(a, dtype=np.float64) for a in (r_start, z_start, r_end, z_end))
        cylinders = _crossed(self._cylinders, r_start, z_start, r_end, z_end, end_layers)
        disks = _crossed(self._disks, z_start, r_start, z_end, r_end, end_layers)
        segment = np.concatenate((cylinders[0], disks[0]))
        along = np.concatenate((cylinders[1], disks[1]))
        kind = np.repeat([SurfaceKind.CYLINDER, SurfaceKind.DISK], [len(cylinders[0]), len(disks[0])])
        position = np.concatenate((cylinders[2], disks[2]))
        x_over_x0 = np.concatenate((cylinders[3], disks[3]))
        key = np.concatenate((cylinders[4], disks[4]))
        has_material = x_over_x0 > 0.0
        order = np.lexsort((along, segment))
        order = order[has_material[order]]
        segment = segment[order]
        first = np.searchsorted(segment, segment, side="left")
        return Crossings(segment, np.arange(len(segment)) - first, kind[order], position[order], x_over_x0[order],
                         key[order])  # fmt: skip


def _module_layers(modules: ModuleGeometry) -> tuple[list[_SurfaceRow], list[_SurfaceRow]]:
    """The layers of ``modules`` as (position, extent, x_over_x0, key) of barrel cylinders and of endcap disks."""
    keys = layer_key(modules.volume_id, modules.layer_id)
    radius = np.hypot(modules.c[:, 0], modules.c[:, 1])
    reach = np.hypot(modules.half_v, modules.max_half_u)  # how far a module extends from its centre
    cylinders: list[_SurfaceRow] = []
    disks: list[_SurfaceRow] = []
    for key in np.unique(keys):
        rows = keys == key
        x_over_x0 = float(modules.x_over_x0[rows].mean())
        z, r, half = modules.c[rows, 2], radius[rows], reach[rows]
        facing_z = np.abs(modules.normal(np.flatnonzero(rows))[:, 2]).mean() > 0.5
        if facing_z:
            disks.append((float(z.mean()), (float((r - half).min()), float((r + half).max())), x_over_x0, key))
        else:
            cylinders.append((float(r.mean()), (float((z - half).min()), float((z + half).max())), x_over_x0, key))
    return cylinders, disks


def _crossed(table: _SurfaceTable, u_start, v_start, u_end, v_end, end_layers):
    """Surfaces of ``table`` (at u = position, spanning v in extent) that the segments from (u, v) start to end
    cross, other than their ``end_layers``: ``(segment, fraction along it, position, x_over_x0, key)`` per
    crossing."""
    low = np.minimum(u_start, u_end) + END_TOLERANCE_MM
    high = np.maximum(u_start, u_end) - END_TOLERANCE_MM
    first = np.searchsorted(table.position, low, side="left")
    count = np.maximum(np.searchsorted(table.position, high, side="right") - first, 0)
    segment = np.repeat(np.arange(len(u_start)), count)
    surface = concatenated_ranges(first, count)
    position = table.position[surface]
    along = (position - u_start[segment]) / (u_end[segment] - u_start[segment])
    v = v_start[segment] + along * (v_end[segment] - v_start[segment])
    inside = (v >= table.extent[surface, 0]) & (v <= table.extent[surface, 1])
    key = table.key[surface]
    if end_layers is not None:
        inside &= (key != end_layers[0][segment]) & (key != end_layers[1][segment])
    return segment[inside], along[inside], position[inside], table.x_over_x0[surface[inside]], key[inside]


@attrs.frozen
class BoundStates:
    """N bound states: ``params`` [N, 5] and ``cov`` [N, 5, 5] on the surfaces ``kind``, ``position`` [N] and ``plane``
    [N, 4, 3] (zero for surfaces other than planes); after :func:`traverse`, those of each state's last crossing (its
    starting surface where it crossed none)."""

    params: np.ndarray
    cov: np.ndarray
    kind: np.ndarray
    position: np.ndarray
    plane: np.ndarray

    @classmethod
    def at_perigee(cls, params: np.ndarray, cov: np.ndarray) -> BoundStates:
        """Copies of the states ``params``, ``cov`` at the perigee."""
        n = len(params)
        return cls(params.copy(), cov.copy(), np.full(n, SurfaceKind.PERIGEE), np.zeros(n), no_planes(n))

    def copy(self) -> BoundStates:
        """A copy that shares no array with these states."""
        return BoundStates(*(value.copy() for value in attrs.astuple(self, recurse=False)))

    def move_to(
        self,
        rows: np.ndarray,
        crossings: Crossings,
        field: MagneticField,
        stepping: Stepping,
        direction: int | np.ndarray,
    ) -> tuple[np.ndarray, Crossings]:
        """Take the states ``rows`` [M] to their ``crossings`` [M] along the helix (``direction`` +1 forward along
        the track, -1 backward; one for all or one per state), their covariances with them; a state that reaches its
        crossing is then on its surface, before its material, and one that does not stays where it was.  Returns
        the rows that moved and their crossings."""
        step = propagate(self.params[rows], self.kind[rows], self.position[rows], crossings.kind, crossings.position,
                         field, direction, plane_from=self.plane[rows], stepping=stepping)  # fmt: skip
        rows, crossings = rows[step.ok], crossings.take(step.ok)
        self.params[rows] = step.params[step.ok]
        self.cov[rows] = transport_sandwich(step.jacobian[step.ok], self.cov[rows])
        self.kind[rows], self.position[rows], self.plane[rows] = crossings.kind, crossings.position, 0.0
        return rows, crossings


def traverse(
    params: np.ndarray,
    cov: np.ndarray,
    kind: np.ndarray,
    position: np.ndarray,
    crossings: Crossings,
    field: MagneticField,
    config: KalmanConfig,
    direction: int,
    plane: np.ndarray | None = None,
) -> BoundStates:
    """Take N bound states (``params``, ``cov`` on surfaces ``kind``, ``position``, ``plane``) through their
    ``crossings`` (``segment`` indexes the N states), in rank order, through each crossed surface's material:
    its multiple scattering and mean energy loss, as ``config`` turns them on.

    ``direction`` +1 goes forward along the track, -1 backward.  A crossing the helix does not reach (the
    straight-line navigation was wrong for a strongly bent track) is skipped, with its material."""
    planes = no_planes(len(params)) if plane is None else plane.copy()
    state = BoundStates(params.copy(), cov.copy(), kind.copy(), position.copy(), planes)
    for rank in range(int(crossings.rank.max(initial=-1)) + 1):
        at_rank = crossings.rank == rank
        rows, crossing = state.move_to(crossings.segment[at_rank], crossings.take(at_rank), field, config.stepping,
                                       direction)  # fmt: skip
        arrived, moved = state.params[rows], state.cov[rows]
        through_material(arrived, moved, path_in_x0(arrived, crossing.kind, crossing.x_over_x0), config, direction)
        state.params[rows], state.cov[rows] = arrived, moved
    return state
