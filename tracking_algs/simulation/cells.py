"""Clusters of cells: the charge a crossing leaves on the cells of its module, and the hit position it gives
(docs/simulation.md, "Simulation on modules").

A particle crossing a module at local (u, v) with local direction (d_u, d_v, d_w) drifts charge from a straight
path through the sensor's depth D: projected onto the module, a segment of length D · tan α along (d_u, d_v),
centred on the crossing (α the angle to the normal, |cos α| floored at 0.05 as for the material). The depth is
the module's ``half_thickness`` (``module_t`` of ``detectors.csv``), which is the full sensor thickness of the ACTS
generic detector that made the TrackML events: 0.15 mm pixels, 0.25 mm short and 0.35 mm long strips. Charge
sharing (diffusion): the charge spreads ``sharing_mm`` beyond the segment's ends, in u and in v, so a crossing
that close to a cell edge fires the neighbouring cell too.

The cluster is every cell the spread segment passes through (cells of ``pitch_u`` × ``pitch_v`` counted from
u = −``max_half_u`` (``ch0``) and v = −``half_v`` (``ch1``), clipped into the module's grid); a cell's ``value``
is the charge in it, in units of a perpendicular crossing's (1/|cos α| in all, shared in proportion to the
segment's length in each cell). The hit is the value-weighted centroid of the cluster's cell centres, moved onto
the module's bounds where it falls outside a trapezoid.
"""

from __future__ import annotations

import attrs
import numpy as np

from tracking_algs.modules import ModuleGeometry
from tracking_algs.ranges import ranks_within
from tracking_algs.simulation.module_navigation import MIN_COS_INCIDENCE


@attrs.frozen
class Clusters:
    """Cells of hits: ``hit`` (row of the clustered hits), ``ch0``, ``ch1`` (cell along u and v), ``value``
    (charge); ordered by hit, then along the path. ``u``, ``v`` [H]: each hit's centroid (mm, local)."""

    hit: np.ndarray
    ch0: np.ndarray
    ch1: np.ndarray
    value: np.ndarray
    u: np.ndarray
    v: np.ndarray


def cluster(
    geometry: ModuleGeometry,
    module: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    direction: np.ndarray,
    sharing_mm: float,
) -> Clusters:
    """The clusters of crossings at local (``u``, ``v``) of modules ``module`` with global ``direction`` [H, 3]
    (any length), charge spreading ``sharing_mm`` beyond each path's ends (see the module docstring)."""
    start, end, charge = _paths(geometry, module, u, v, direction, sharing_mm)
    low = np.column_stack((-geometry.max_half_u[module], -geometry.half_v[module]))
    pitch = np.column_stack((geometry.pitch_u[module], geometry.pitch_v[module]))
    hit, cells, share = _cells_crossed(start, end, low, pitch)
    size = np.ceil(2.0 * np.column_stack((geometry.max_half_u[module], geometry.half_v[module])) / pitch - 1e-9)
    cells = np.clip(cells, 0, np.maximum(size, 1).astype(np.int64)[hit] - 1)
    # pieces clipped into the same edge cell become one cell (a hit's pieces come in their order along the path)
    repeated = np.zeros(len(hit), dtype=bool)
    repeated[1:] = (hit[1:] == hit[:-1]) & np.all(cells[1:] == cells[:-1], axis=1)
    value = np.bincount(np.cumsum(~repeated) - 1, weights=share * charge[hit])
    hit, cells = hit[~repeated], cells[~repeated]

    centres = low[hit] + (cells + 0.5) * pitch[hit]
    total = np.bincount(hit, weights=value, minlength=len(module))
    centroid = [np.bincount(hit, weights=value * centres[:, axis], minlength=len(module)) / total for axis in (0, 1)]
    cu, cv = _onto_module(geometry, module, *centroid)
    return Clusters(hit=hit, ch0=cells[:, 0], ch1=cells[:, 1], value=value, u=cu, v=cv)


def _paths(
    geometry: ModuleGeometry,
    module: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    direction: np.ndarray,
    sharing_mm: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ends [H, 2] of each crossing's path through the sensor depth projected onto its module and spread by
    ``sharing_mm``, and its charge (1/|cos α|)."""
    local = np.einsum("nji,nj->ni", geometry.rot[module], np.asarray(direction, dtype=np.float64))
    local /= np.linalg.norm(local, axis=1)[:, None]
    cos_alpha = np.maximum(np.abs(local[:, 2]), MIN_COS_INCIDENCE)
    in_plane = np.hypot(local[:, 0], local[:, 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        reach = np.where(in_plane > 0.0, np.sqrt(1.0 - cos_alpha**2) / cos_alpha / in_plane, 0.0)
    half = 0.5 * geometry.half_thickness[module][:, None] * reach[:, None] * local[:, :2]
    half += sharing_mm * np.where(half >= 0.0, 1.0, -1.0)
    centre = np.column_stack((u, v))
    return centre - half, centre + half, 1.0 / cos_alpha


def _cells_crossed(
    start: np.ndarray, end: np.ndarray, low: np.ndarray, pitch: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The cells that the segments from ``start`` to ``end`` [H, 2] pass through, in grids of ``pitch`` [H, 2]
    counted from ``low`` [H, 2]: (segment, cell [n, 2], the share of the segment's length in the cell), ordered
    by segment and along it. The pieces between the cell edges a segment crosses, as fractions t of its length."""
    n = len(start)
    first, last = np.floor((start - low) / pitch), np.floor((end - low) / pitch)
    steps = np.abs(last - first).astype(np.int64)  # edges crossed along u and along v
    t, segment = [np.zeros(n)], [np.arange(n)]
    for axis in (0, 1):
        edge_of = np.repeat(np.arange(n), steps[:, axis])
        k = ranks_within(steps[:, axis])
        edge = low[edge_of, axis] + (np.minimum(first, last)[edge_of, axis] + 1 + k) * pitch[edge_of, axis]
        t.append((edge - start[edge_of, axis]) / (end[edge_of, axis] - start[edge_of, axis]))
        segment.append(edge_of)
    t, segment = np.concatenate([*t, np.ones(n)]), np.concatenate([*segment, np.arange(n)])
    order = np.lexsort((t, segment))
    t, segment = t[order], segment[order]
    piece = (segment[1:] == segment[:-1]) & (t[1:] > t[:-1])
    segment, middle, share = segment[:-1][piece], 0.5 * (t[1:] + t[:-1])[piece], (t[1:] - t[:-1])[piece]
    point = start[segment] + middle[:, None] * (end[segment] - start[segment])
    return segment, np.floor((point - low[segment]) / pitch[segment]).astype(np.int64), share


def _onto_module(
    geometry: ModuleGeometry, module: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Local points moved onto the trapezoid of their module where they lie outside it."""
    half_v, low, high = geometry.half_v[module], geometry.min_half_u[module], geometry.max_half_u[module]
    v = np.clip(v, -half_v, half_v)
    half_u = low + (high - low) * (v + half_v) / (2 * half_v)
    return np.clip(u, -half_u, half_u), v
