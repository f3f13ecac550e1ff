"""Free hits proposed to the kept tracks whose trajectory they continue (``[fitting.selection] extend_tracks``).

The track building can end a particle's chain early (an edge the graph or the GNN lost, a hit another chain took)
and leave the rest of its hits on no track; the piece it writes then holds fewer than half of the particle's hits
and counts as a fake.  For each track this module fits a circle in the transverse plane (an algebraic fit, in
coordinates centred on the points) and a line of z against the arc length along that circle: through its hits,
followed beyond its last hit for ``reach_mm`` of path, and through its hits and its fitted point of closest
approach to the z axis, followed beyond its first hit down to that point.  It proposes to the track the free hits
there that lie on a layer the track has no hit on, within ``circle_mm`` of the circle and ``line_mm`` of the line.
Only the outgoing branch of the circle counts: a track leaves the beam line and moves away from it, so the way
inwards stops at the circle's point of closest approach to the z axis (beyond it the circle comes back out, on the
far side of the beam line, through hits of other particles).  A module holds at most one hit of a particle, so a track
is proposed at most one hit per module, the one it fits best (the sum of the hit's two distances over their
tolerances); a hit near several tracks goes to the one it fits best.  The fit decides which proposals stay
(:meth:`~tracking_algs.fitting.selection.TrackSelection.apply`).
"""

from __future__ import annotations

import attrs
import numpy as np
from scipy.spatial import cKDTree

from tracking_algs.event import Spacepoints
from tracking_algs.fitting.helix import wrap_angle
from tracking_algs.ranges import first_of_runs, ranks_within

#: spacing (mm of path) of the points along a track's extrapolation around which free hits are looked for
SAMPLE_MM = 20.0
#: the longest way inwards (mm of path) a track is followed to its point of closest approach
MAX_INWARD_MM = 4000.0


def proposed_hits(
    spacepoints: Spacepoints,
    labels: np.ndarray,
    reach_mm: float,
    circle_mm: float,
    line_mm: float,
    closest_approach: tuple[np.ndarray, np.ndarray] | None = None,
    pool: np.ndarray | None = None,
) -> np.ndarray:
    """For each spacepoint [N], the track label (of ``labels``, −1 for free hits) whose trajectory the free hit is
    proposed to join, or −1; tracks of fewer than three hits get none.  ``closest_approach`` (track labels [K],
    points [K, 3]) gives tracks their fitted point of closest approach to the z axis, which then joins their hits
    in the circle and line followed inwards.  ``pool`` [N] marks the hits that may be proposed (default: the free
    hits; hits of other tracks where a track runs on through another's hits)."""
    proposal = np.full(len(labels), -1, dtype=np.int64)
    offered = np.flatnonzero(labels < 0 if pool is None else pool)  # the hits that may be proposed
    on_track = np.flatnonzero(labels >= 0)
    if not len(offered) or not len(on_track):
        return proposal
    x, y, z = spacepoints.x, spacepoints.y, spacepoints.z
    track_ids, first, last = track_ends(labels, spacepoints.distance)
    track = np.searchsorted(track_ids, labels[on_track])
    n_tracks = len(track_ids)
    points = np.column_stack((x[on_track], y[on_track], z[on_track]))
    outwards = _Trajectories.fit(points, track, n_tracks, first, last, spacepoints)
    inwards = outwards
    if closest_approach is not None:
        known = np.isin(closest_approach[0], track_ids)
        anchor_track = np.searchsorted(track_ids, closest_approach[0][known])
        anchored = np.concatenate((points, closest_approach[1][known]))
        inwards = _Trajectories.fit(anchored, np.r_[track, anchor_track], n_tracks, first, last, spacepoints)
    usable = (np.bincount(track, minlength=n_tracks) >= 3) & outwards.usable & inwards.usable
    # a leg per track and way: the first n_tracks follow the outward trajectory beyond the last hit, the others the
    # inward one beyond the first hit
    leg = _Trajectories.legs(outwards, inwards)
    leg_track = np.tile(np.arange(n_tracks), 2)
    end_arc = np.concatenate((outwards.arc_of(last, spacepoints), inwards.arc_of(first, spacepoints)))
    heading = np.concatenate((leg.way[:n_tracks], -leg.way[n_tracks:]))

    # points along each leg, every SAMPLE_MM of path: outwards up to reach_mm, inwards down to the point of closest
    # approach (up to reach_mm where the first hit does not lie beyond it); the offered hits within half a sample
    # spacing and the tolerances of them are the candidates
    per_arc = 1.0 / np.sqrt(1.0 + leg.slope * leg.slope)  # transverse arc length per mm of path
    to_closest = np.abs(end_arc - leg.closest_arc) / np.where(per_arc > 0, per_arc, 1.0)
    inward_reach = np.where(leg.outgoing[n_tracks:] & usable, to_closest[n_tracks:], reach_mm)
    leg_reach = np.r_[np.full(n_tracks, reach_mm), np.minimum(inward_reach, MAX_INWARD_MM)]
    n_samples = np.ceil(leg_reach / SAMPLE_MM).astype(np.int64)
    sample_leg = np.repeat(np.arange(2 * n_tracks), n_samples)
    path = (ranks_within(n_samples) + 1) * SAMPLE_MM
    sample_arc = end_arc[sample_leg] + heading[sample_leg] * path * per_arc[sample_leg]
    on_leg = leg.at(sample_leg, sample_arc)
    radius = 0.5 * SAMPLE_MM + max(circle_mm, line_mm)
    usable_samples = usable[leg_track[sample_leg]] & np.isfinite(on_leg).all(axis=1)
    usable_samples &= leg.on_branch(sample_leg, sample_arc)
    # a sample farther than the search radius beyond the outermost offered hits (in r or in |z|) finds none
    usable_samples &= np.hypot(on_leg[:, 0], on_leg[:, 1]) <= spacepoints.r[offered].max() + radius
    usable_samples &= np.abs(on_leg[:, 2]) <= np.abs(z[offered]).max() + radius
    # every (sample, offered hit) pair within the radius, from the two point sets' trees in one traversal (as an
    # array: a ball query per sample returns a Python list per sample, which costs more than the search)
    hits = cKDTree(np.column_stack((x[offered], y[offered], z[offered])))
    near = cKDTree(on_leg[usable_samples]).sparse_distance_matrix(hits, radius, output_type="ndarray")
    if not len(near):
        return proposal
    pair_leg = sample_leg[usable_samples][near["i"]]
    pair_hit = offered[near["j"]]
    pair = np.unique(pair_leg * len(labels) + pair_hit)
    pair_leg, pair_hit = pair // len(labels), pair % len(labels)
    keys = spacepoints.layer_key.astype(np.int64)
    stride = keys.max() + 1
    taken = np.unique(track * stride + keys[on_track])
    fresh = ~np.isin(leg_track[pair_leg] * stride + keys[pair_hit], taken)
    pair_leg, pair_hit = pair_leg[fresh], pair_hit[fresh]

    off_circle, off_line, along = leg.distances(pair_leg, x[pair_hit], y[pair_hit], z[pair_hit])
    close = (off_circle < circle_mm) & (off_line < line_mm) & leg.on_branch(pair_leg, along)
    pair_track, pair_hit = leg_track[pair_leg[close]], pair_hit[close]
    score = off_circle[close] / circle_mm + off_line[close] / line_mm
    # one hit per track and module (the best; a hit two legs reach counts once, with its best score), then one
    # track per hit
    module = spacepoints.module_key[pair_hit]
    per_module = np.lexsort((score, module, pair_track))
    per_module = per_module[first_of_runs(pair_track[per_module]) | first_of_runs(module[per_module])]
    pair_track, pair_hit, score = pair_track[per_module], pair_hit[per_module], score[per_module]
    best = np.lexsort((score, pair_hit))
    best = best[first_of_runs(pair_hit[best])]
    proposal[pair_hit[best]] = track_ids[pair_track[best]]
    return proposal


def track_ends(labels: np.ndarray, distance: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The labels of the tracks of ``labels`` [N] (those ≥ 0, sorted) and each one's first and last spacepoint row:
    its hit nearest to the origin and its farthest (``distance`` [N] from it)."""
    on_track = np.flatnonzero(labels >= 0)
    order = on_track[np.lexsort((distance[on_track], labels[on_track]))]
    starts = np.flatnonzero(first_of_runs(labels[order]))
    ends = np.r_[starts[1:], len(order)][: len(starts)] - 1
    return labels[order[starts]], order[starts], order[ends]


@attrs.frozen
class _Trajectories:
    """Per track (or leg): a circle in the transverse plane, ``circle`` [T, 3] (centre x, y and radius), and a line
    z = ``slope`` · arc + ``offset`` of the arc length along it, counted from the angle ``start_angle`` [T] (that of
    the track's first hit); ``way`` [T] the sign of the arc length from its first to its last hit, and
    ``closest_arc`` [T] the arc length of the circle's point of closest approach to the z axis."""

    circle: np.ndarray
    start_angle: np.ndarray
    slope: np.ndarray
    offset: np.ndarray
    way: np.ndarray
    closest_arc: np.ndarray

    @classmethod
    def fit(
        cls,
        points: np.ndarray,
        track: np.ndarray,
        n_tracks: int,
        first: np.ndarray,
        last: np.ndarray,
        spacepoints: Spacepoints,
    ) -> _Trajectories:
        """The circle and line that fit ``points`` [P, 3] of each track (``track`` [P]), the arc length counted
        from the spacepoint ``first`` [T] of each track towards ``last`` [T]."""
        circle = fitted_circles(points[:, 0], points[:, 1], track, n_tracks)
        start_angle = np.arctan2(spacepoints.y[first] - circle[:, 1], spacepoints.x[first] - circle[:, 0])
        arc = _arc_length(points[:, 0], points[:, 1], circle[track], start_angle[track])
        slope, offset = _lines(arc, points[:, 2], track, n_tracks)
        way = np.sign(_arc_length(spacepoints.x[last], spacepoints.y[last], circle, start_angle))
        closest_arc = circle[:, 2] * wrap_angle(np.arctan2(-circle[:, 1], -circle[:, 0]) - start_angle)
        return cls(circle, start_angle, slope, offset, np.where(way == 0, 1.0, way), closest_arc)

    @property
    def usable(self) -> np.ndarray:
        """Tracks [T] whose circle is not degenerate."""
        return np.isfinite(self.circle).all(axis=1)

    def arc_of(self, rows: np.ndarray, spacepoints: Spacepoints) -> np.ndarray:
        """Arc length [T] of the spacepoint ``rows`` [T], one per track."""
        return _arc_length(spacepoints.x[rows], spacepoints.y[rows], self.circle, self.start_angle)

    @staticmethod
    def legs(*parts: _Trajectories) -> _Trajectories:
        """The trajectories of ``parts`` one after another."""
        names = [field.name for field in attrs.fields(_Trajectories)]
        return _Trajectories(*(np.concatenate([getattr(part, name) for part in parts]) for name in names))

    def at(self, rows: np.ndarray, arc: np.ndarray) -> np.ndarray:
        """The points [N, 3] at arc length ``arc`` [N] along trajectories ``rows`` [N]."""
        circle = self.circle[rows]
        angle = self.start_angle[rows] + arc / circle[:, 2]
        x, y = circle[:, 0] + circle[:, 2] * np.cos(angle), circle[:, 1] + circle[:, 2] * np.sin(angle)
        return np.column_stack((x, y, self.slope[rows] * arc + self.offset[rows]))

    def distances(
        self, rows: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(distance from the circle, distance from the line in z, arc length)`` [N] of points (x, y, z) from
        trajectories ``rows`` [N]."""
        circle = self.circle[rows]
        off_circle = np.abs(np.hypot(x - circle[:, 0], y - circle[:, 1]) - circle[:, 2])
        along = _arc_length(x, y, circle, self.start_angle[rows])
        return off_circle, np.abs(z - (self.slope[rows] * along + self.offset[rows])), along

    @property
    def outgoing(self) -> np.ndarray:
        """Trajectories [T] whose first hit lies beyond their point of closest approach to the z axis (every
        trajectory that leaves the beam line)."""
        return self.closest_arc * self.way < 0

    def on_branch(self, rows: np.ndarray, arc: np.ndarray) -> np.ndarray:
        """Whether arc lengths ``arc`` [N] lie on the outgoing branch of trajectories ``rows`` [N]: beyond the point
        of closest approach to the z axis for the outgoing trajectories; anywhere for the others."""
        closest, way = self.closest_arc[rows], self.way[rows]
        return ~self.outgoing[rows] | ((arc - closest) * way > 0)


def fitted_circles(x: np.ndarray, y: np.ndarray, track: np.ndarray, n_tracks: int) -> np.ndarray:
    """Per track [T, 3]: the centre (x, y) and radius of the circle x² + y² + D x + E y + F = 0 that fits its hits
    best in the least-squares sense, solved in coordinates centred on the hits' mean; NaN where it is degenerate."""
    count = np.maximum(np.bincount(track, minlength=n_tracks), 1)
    mean_x = np.bincount(track, x, n_tracks) / count
    mean_y = np.bincount(track, y, n_tracks) / count
    u, v = x - mean_x[track], y - mean_y[track]
    w = u * u + v * v

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(track, values, n_tracks)

    matrix = np.stack([np.stack([total(u * u), total(u * v), total(u)], axis=-1),
                       np.stack([total(u * v), total(v * v), total(v)], axis=-1),
                       np.stack([total(u), total(v), count.astype(np.float64)], axis=-1)], axis=1)  # fmt: skip
    rhs = -np.stack([total(w * u), total(w * v), total(w)], axis=-1)
    solvable = np.abs(np.linalg.det(matrix)) > 1e-9 * np.abs(matrix).max(axis=(1, 2)) ** 3
    solution = np.full((n_tracks, 3), np.nan)
    solution[solvable] = np.linalg.solve(matrix[solvable], rhs[solvable][..., None])[..., 0]
    centre_u, centre_v = -0.5 * solution[:, 0], -0.5 * solution[:, 1]
    radius = np.sqrt(np.maximum(centre_u * centre_u + centre_v * centre_v - solution[:, 2], 0.0))
    return np.column_stack((centre_u + mean_x, centre_v + mean_y, np.where(solvable, radius, np.nan)))


def _arc_length(x: np.ndarray, y: np.ndarray, circle: np.ndarray, start_angle: np.ndarray) -> np.ndarray:
    """Signed arc length [N] along the circles [N, 3] from the angle ``start_angle`` [N] to the points (x, y)."""
    angle = np.arctan2(y - circle[:, 1], x - circle[:, 0]) - start_angle
    return circle[:, 2] * wrap_angle(angle)


def _lines(arc: np.ndarray, z: np.ndarray, track: np.ndarray, n_tracks: int) -> tuple[np.ndarray, np.ndarray]:
    """Per track: the slope and offset of the least-squares line z = slope · arc + offset of its hits."""
    count = np.maximum(np.bincount(track, minlength=n_tracks), 1)
    mean_arc = np.bincount(track, arc, n_tracks) / count
    mean_z = np.bincount(track, z, n_tracks) / count
    d_arc = arc - mean_arc[track]
    spread = np.bincount(track, d_arc * d_arc, n_tracks)
    slope = np.bincount(track, d_arc * (z - mean_z[track]), n_tracks) / np.where(spread > 0, spread, 1.0)
    return slope, mean_z - slope * mean_arc
