"""Magnetic field maps on a regular (r, z) grid, as CSV: one row per grid node, columns ``r`` and ``z`` (mm) and
``br`` and ``bz`` (tesla), the layout of ACTS's r-z field maps with named columns.  The nodes may come in any order;
together they must fill the grid (every r of the map with every z of it, once), with equal spacing in r from the
axis (r = 0) and equal spacing in z.  A name ending in ``.gz`` is read and written as gzip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tracking_algs.errors import EventFormatError
from tracking_algs.io.csv_table import read_table, write_table
from tracking_algs.magnetic_field import FieldGrid

#: the columns of a field map, in the order :func:`write_field_map` writes them
FIELD_MAP_COLUMNS = {"r": np.float64, "z": np.float64, "br": np.float64, "bz": np.float64}
#: the strongest field component a map may give (tesla): far above any detector magnet, so a larger value is a
#: map in other units (gauss) or a damaged one
MAX_FIELD_T = 100.0
#: how far (as a fraction of the spacing) a node may sit from its place on the regular grid (decimal rounding)
_NODE_TOLERANCE = 1e-6


def read_field_map(path: str | Path, mirror_z: bool = False) -> FieldGrid:
    """The field map in the CSV file ``path`` (module docstring).  With ``mirror_z`` the map gives the nodes from
    z = 0 up, and its mirror image below (B_z(r, −z) = B_z(r, z), B_r(r, −z) = −B_r(r, z)) completes the grid.

    Raises :class:`~tracking_algs.errors.EventFormatError` naming the file, and the row or node at fault, for an
    unreadable file, a missing column, a value that is not a finite number, a field component beyond
    :data:`MAX_FIELD_T`, a negative r, a grid that does not start on the axis (or, with ``mirror_z``, at z = 0),
    uneven spacing, a node given twice or missing, or fewer than two nodes in r or z."""
    path = Path(path)
    table = read_table(path, FIELD_MAP_COLUMNS)
    r, z = table["r"], table["z"]
    if (negative := np.flatnonzero(r < 0)).size:
        row = int(negative[0]) + 1
        raise EventFormatError(f"{path}: row {row} (line {row + 1}), column 'r': {r[row - 1]} is negative")
    for column in ("br", "bz"):
        if (strong := np.flatnonzero(np.abs(table[column]) > MAX_FIELD_T)).size:
            row = int(strong[0]) + 1
            raise EventFormatError(f"{path}: row {row} (line {row + 1}), column {column!r}: {table[column][row - 1]} "
                                   f"T is beyond {MAX_FIELD_T:g} T; expected the field in tesla")  # fmt: skip
    r_nodes, z_nodes = np.unique(r), np.unique(z)
    for name, nodes in (("r", r_nodes), ("z", z_nodes)):
        if len(nodes) < 2:
            raise EventFormatError(f"{path}: the map has {len(nodes)} value(s) of {name}; expected a grid of at least "
                                   f"two nodes in r and in z")  # fmt: skip
    if r_nodes[0] != 0:
        raise EventFormatError(f"{path}: the smallest r is {r_nodes[0]} mm; expected the grid to start on the axis, "
                               "r = 0")  # fmt: skip
    r_step, r_index = _grid_index(path, "r", r, r_nodes)
    z_step, z_index = _grid_index(path, "z", z, z_nodes)
    n_r, n_z = int(r_index.max()) + 1, int(z_index.max()) + 1
    node = r_index * n_z + z_index
    order = np.argsort(node, kind="stable")
    repeated = np.flatnonzero(np.diff(node[order]) == 0)
    if repeated.size:
        first, again = sorted(order[repeated[0] : repeated[0] + 2] + 1)
        raise EventFormatError(f"{path}: row {again} (line {again + 1}) gives the node r = {r[again - 1]}, z = "
                               f"{z[again - 1]} mm again (first at row {first})")  # fmt: skip
    if len(node) != n_r * n_z:
        absent = int(np.flatnonzero(np.bincount(node, minlength=n_r * n_z) == 0)[0])
        raise EventFormatError(
            f"{path}: the node r = {r_nodes[0] + absent // n_z * r_step:g}, z = {z_nodes[0] + absent % n_z * z_step:g}"
            f" mm is missing; expected every r of the map with every z ({n_r} × {n_z} nodes, found {len(node)})"
        )
    grid = np.empty((2, n_r * n_z))
    grid[:, node] = table["br"], table["bz"]
    b_r, b_z = grid[0].reshape(n_r, n_z), grid[1].reshape(n_r, n_z)
    if not mirror_z:
        return FieldGrid(r_step, float(z_nodes[0]), z_step, b_r, b_z)
    if z_nodes[0] != 0:
        raise EventFormatError(f"{path}: the smallest z is {z_nodes[0]} mm; a map mirrored about z = 0 (map_mirror_z) "
                               "starts at z = 0")  # fmt: skip
    below = slice(n_z - 1, 0, -1)  # the nodes above z = 0, from the top down, become those below it
    return FieldGrid(r_step, -float(z_nodes[-1]), z_step, np.hstack((-b_r[:, below], b_r)),
                     np.hstack((b_z[:, below], b_z)))  # fmt: skip


def _grid_index(path: Path, name: str, values: np.ndarray, nodes: np.ndarray) -> tuple[float, np.ndarray]:
    """The spacing of the sorted distinct ``nodes`` of the column ``name`` and each row's node number; raises
    :class:`EventFormatError` where the nodes are not evenly spaced."""
    step = float(nodes[-1] - nodes[0]) / (len(nodes) - 1)
    index = np.rint((values - nodes[0]) / step).astype(np.int64)
    off = np.abs(values - (nodes[0] + index * step)) > _NODE_TOLERANCE * step
    if off.any() or len(nodes) != index.max() + 1:
        gaps = np.diff(nodes)
        raise EventFormatError(f"{path}: the values of {name} are not evenly spaced (steps from {gaps.min():g} to "
                               f"{gaps.max():g} mm); expected a regular grid")  # fmt: skip
    return step, index


def write_field_map(path: str | Path, r_nodes: np.ndarray, z_nodes: np.ndarray, b_r: np.ndarray,
                    b_z: np.ndarray) -> None:  # fmt: skip
    """Write the field ``b_r``, ``b_z`` [len(r_nodes), len(z_nodes)] (tesla) at the nodes of the grid
    ``r_nodes`` × ``z_nodes`` (mm) as a field map that :func:`read_field_map` reads back exactly."""
    r_grid, z_grid = np.meshgrid(np.asarray(r_nodes, float), np.asarray(z_nodes, float), indexing="ij")
    write_table(Path(path), {"r": r_grid.ravel(), "z": z_grid.ravel(), "br": np.ravel(b_r), "bz": np.ravel(b_z)})
