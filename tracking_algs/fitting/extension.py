"""Free hits proposed to the kept tracks whose trajectory they continue (``[fitting.selection] extend_tracks``).

The track building can end a particle's chain early (an edge the graph or the GNN lost, a hit another chain took)
and leave the rest of its hits on no track; the piece it writes then holds fewer than half of the particle's hits
and counts as a fake.  For each track this module fits a circle in the transverse plane (an algebraic fit of all
its hits, in coordinates centred on them) and a line of z against the arc length along that circle, follows both
beyond the track's first and last hit for ``reach_mm`` of path, and proposes to it the free hits there that lie on
a layer the track has no hit on, within ``circle_mm`` of the circle and ``line_mm`` of the line; a hit near
several tracks goes to the one it fits best (the sum of its two distances over their tolerances).  The fit decides
which proposals stay (:meth:`~tracking_algs.fitting.selection.TrackSelection.apply`).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from tracking_algs.event import Spacepoints
from tracking_algs.fitting.helix import wrap_angle
from tracking_algs.ranges import first_of_runs

#: spacing (mm of path) of the points along a track's extrapolation around which free hits are looked for
SAMPLE_MM = 20.0


def proposed_hits(
    spacepoints: Spacepoints, labels: np.ndarray, reach_mm: float, circle_mm: float, line_mm: float
) -> np.ndarray:
    """For each spacepoint [N], the track label (of ``labels``, −1 for free hits) whose trajectory the free hit is
    proposed to join, or −1; tracks of fewer than three hits get none."""
    proposal = np.full(len(labels), -1, dtype=np.int64)
    free = np.flatnonzero(labels < 0)
    on_track = np.flatnonzero(labels >= 0)
    if not len(free) or not len(on_track):
        return proposal
    x, y, z = spacepoints.x, spacepoints.y, spacepoints.z
    track_ids, track = np.unique(labels[on_track], return_inverse=True)
    circle = _circles(x[on_track], y[on_track], track, len(track_ids))
    usable = np.isfinite(circle).all(axis=1) & (np.bincount(track, minlength=len(track_ids)) >= 3)
    order = np.lexsort((spacepoints.distance[on_track], track))  # hits of each track, nearest to the origin first
    ends_at = np.flatnonzero(first_of_runs(track[order]))
    first, last = on_track[order[ends_at]], on_track[order[np.r_[ends_at[1:] - 1, len(order) - 1]]]
    start_angle = np.arctan2(y[first] - circle[:, 1], x[first] - circle[:, 0])
    arc = _arc_length(x[on_track], y[on_track], circle[track], start_angle[track])
    slope, offset = _lines(arc, z[on_track], track, len(track_ids))

    def arc_of(ends: np.ndarray) -> np.ndarray:
        return _arc_length(x[ends], y[ends], circle, start_angle)

    # points along each track's circle and line beyond its first and last hit, every SAMPLE_MM of path, up to
    # reach_mm; the free hits within half a sample spacing and the tolerances of them are the candidates
    way = np.sign(arc_of(last) - arc_of(first))
    way = np.where(way == 0, 1.0, way)
    samples = np.arange(1, int(np.ceil(reach_mm / SAMPLE_MM)) + 1) * SAMPLE_MM
    per_arc = 1.0 / np.sqrt(1.0 + slope * slope)  # transverse arc length per mm of path
    sample_track = np.tile(np.arange(len(track_ids)), 2 * len(samples))
    end_arc = np.concatenate([np.tile(arc_of(last), len(samples)), np.tile(arc_of(first), len(samples))])
    direction = np.concatenate([np.tile(way, len(samples)), np.tile(-way, len(samples))])
    path = np.concatenate([np.repeat(samples, len(track_ids))] * 2)
    sample_arc = end_arc + direction * path * per_arc[sample_track]
    angle = start_angle[sample_track] + sample_arc / circle[sample_track, 2]
    points = np.column_stack((circle[sample_track, 0] + circle[sample_track, 2] * np.cos(angle),
                              circle[sample_track, 1] + circle[sample_track, 2] * np.sin(angle),
                              slope[sample_track] * sample_arc + offset[sample_track]))  # fmt: skip
    usable_samples = usable[sample_track] & np.isfinite(points).all(axis=1)
    tree = cKDTree(np.column_stack((x[free], y[free], z[free])))
    near = tree.query_ball_point(points[usable_samples], 0.5 * SAMPLE_MM + max(circle_mm, line_mm))
    sizes = np.fromiter((len(found) for found in near), dtype=np.int64, count=len(near))
    if not sizes.sum():
        return proposal
    pair_track = np.repeat(sample_track[usable_samples], sizes)
    pair_hit = free[np.concatenate([np.asarray(found, dtype=np.int64) for found in near])]
    pair = np.unique(pair_track * len(labels) + pair_hit)
    pair_track, pair_hit = pair // len(labels), pair % len(labels)
    keys = spacepoints.layer_key.astype(np.int64)
    stride = keys.max() + 1
    taken = np.unique(track * stride + keys[on_track])
    fresh = ~np.isin(pair_track * stride + keys[pair_hit], taken)
    pair_track, pair_hit = pair_track[fresh], pair_hit[fresh]

    centre = circle[pair_track]
    off_circle = np.abs(np.hypot(x[pair_hit] - centre[:, 0], y[pair_hit] - centre[:, 1]) - centre[:, 2])
    along = _arc_length(x[pair_hit], y[pair_hit], centre, start_angle[pair_track])
    off_line = np.abs(z[pair_hit] - (slope[pair_track] * along + offset[pair_track]))
    close = (off_circle < circle_mm) & (off_line < line_mm)
    pair_track, pair_hit = pair_track[close], pair_hit[close]
    score = off_circle[close] / circle_mm + off_line[close] / line_mm
    best = np.lexsort((score, pair_hit))
    best = best[first_of_runs(pair_hit[best])]
    proposal[pair_hit[best]] = track_ids[pair_track[best]]
    return proposal


def _circles(x: np.ndarray, y: np.ndarray, track: np.ndarray, n_tracks: int) -> np.ndarray:
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
