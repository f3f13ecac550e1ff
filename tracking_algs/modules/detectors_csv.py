"""The TrackML ``detectors.csv`` format (``.csv`` or gzipped ``.csv.gz``): one row per module,

``volume_id, layer_id, module_id`` (int), the centre ``cx, cy, cz`` (mm), the rotation ``rot_xu, rot_xv, rot_xw,
rot_yu, …, rot_zw`` (row = global x, y, z; column = local u, v, w), ``module_t`` (half thickness, mm),
``module_minhu, module_maxhu, module_hv`` (half widths, mm) and ``pitch_u, pitch_v`` (cell pitch, mm), as the
TrackML challenge distributes it (Amrouche et al., arXiv:1904.06778). The material is not in the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tracking_algs.errors import EventFormatError
from tracking_algs.event import ID_LIMITS, MAX_COORDINATE
from tracking_algs.io.csv_table import check_rows, read_table, write_table
from tracking_algs.modules.geometry import MAX_MODULE_SIZE_MM, MODULE_ID_LIMITS, ROTATION_TOLERANCE, ModuleGeometry
from tracking_algs.modules.material import trackml_layer_material

_ROTATION = tuple(f"rot_{axis}{local}" for axis in "xyz" for local in "uvw")
#: The columns, in the file's order, and their dtypes.
DETECTORS_COLUMNS = {
    **dict.fromkeys(("volume_id", "layer_id", "module_id"), "int64"),
    **dict.fromkeys(("cx", "cy", "cz", *_ROTATION), "float64"),
    **dict.fromkeys(("module_t", "module_minhu", "module_maxhu", "module_hv", "pitch_u", "pitch_v"), "float64"),
}
#: ModuleGeometry's column of each file column (besides the centre and the rotation).
_SCALARS = {"volume_id": "volume_id", "layer_id": "layer_id", "module_id": "module_id",
            "module_t": "half_thickness", "module_minhu": "min_half_u", "module_maxhu": "max_half_u",
            "module_hv": "half_v", "pitch_u": "pitch_u", "pitch_v": "pitch_v"}  # fmt: skip
#: The ids a module may have: those of a hit (:data:`~tracking_algs.event.ID_LIMITS`) that the module key holds.
_ID_LIMITS = {name: min(limit, MODULE_ID_LIMITS[name]) for name, limit in ID_LIMITS.items()}


def read_detectors_csv(path: str | Path, x_over_x0: float | np.ndarray | None = None) -> ModuleGeometry:
    """The modules of a ``detectors.csv`` (or ``.csv.gz``) file, in the file's row order.

    ``x_over_x0`` is the material per module (a value or one per row); None gives each module the TrackML
    material of its layer (:func:`~tracking_algs.modules.material.trackml_x_over_x0`). Raises
    :class:`~tracking_algs.errors.EventFormatError` naming the file, row and column for a malformed file (see
    :func:`~tracking_algs.io.csv_table.read_table`), a file without modules, an id outside [0, its limit), a
    module that appears twice, a thickness, half width or pitch that is not positive or above
    :data:`MAX_MODULE_SIZE_MM`, a rotation that is not orthonormal, a layer whose modules do not all face the same
    way (normals all transverse or all along z, as the simulation's navigation needs), or (with ``x_over_x0`` None)
    a layer the TrackML detector does not have.
    """
    path = Path(path)
    table = read_table(path, DETECTORS_COLUMNS)
    n = len(table["module_id"])
    rot = np.stack([table[name] for name in _ROTATION], axis=-1).reshape(n, 3, 3)
    _check_modules(path, table, rot)
    if x_over_x0 is None:
        x_over_x0, known = trackml_layer_material(table["volume_id"], table["layer_id"])
        if not known.all():
            row = int(np.argmin(known)) + 1
            raise EventFormatError(
                f"{path}: row {row} (line {row + 1}), columns 'volume_id','layer_id': ({table['volume_id'][row - 1]}, "
                f"{table['layer_id'][row - 1]}) is not a layer of the TrackML detector, whose material the modules "
                "take (the file has none)"
            )
    return ModuleGeometry(
        **{field: table[column] for column, field in _SCALARS.items()},
        c=np.stack([table["cx"], table["cy"], table["cz"]], axis=-1),
        rot=rot,
        x_over_x0=np.broadcast_to(x_over_x0, (n,)),
    )


def write_detectors_csv(path: str | Path, geometry: ModuleGeometry) -> None:
    """Write ``geometry`` as a ``detectors.csv`` file (gzip when the name ends in ``.gz``); floats as the shortest
    decimal that reads back to the same float64, so :func:`read_detectors_csv` reads it back exactly (all but
    the material, which the format does not hold)."""
    rotation = geometry.rot.reshape(len(geometry), 9)
    columns = {
        **{column: getattr(geometry, field) for column, field in _SCALARS.items()},
        "cx": geometry.c[:, 0], "cy": geometry.c[:, 1], "cz": geometry.c[:, 2],
        **{name: rotation[:, k] for k, name in enumerate(_ROTATION)},
    }  # fmt: skip
    write_table(Path(path), {name: columns[name] for name in DETECTORS_COLUMNS})


def _check_modules(path: Path, table: dict[str, np.ndarray], rot: np.ndarray) -> None:
    """The checks of :func:`read_detectors_csv` on the file's values (``rot``: the rotations, [M, 3, 3])."""
    if not len(rot):
        raise EventFormatError(f"{path}: no modules; expected one row per module after the header")
    check_rows(path, table, {name: (table[name] >= 0) & (table[name] < limit) for name, limit in _ID_LIMITS.items()},
               {name: f"an id in [0, {limit})" for name, limit in _ID_LIMITS.items()})  # fmt: skip
    sizes = ("module_t", "module_minhu", "module_maxhu", "module_hv", "pitch_u", "pitch_v")
    check_rows(path, table, {name: (table[name] > 0) & (table[name] <= MAX_MODULE_SIZE_MM) for name in sizes},
               f"a positive number (mm) of at most {MAX_MODULE_SIZE_MM:g}, a detector's size")  # fmt: skip
    check_rows(path, table, {name: np.abs(table[name]) <= MAX_COORDINATE for name in ("cx", "cy", "cz")},
               f"a coordinate within float32's range (|value| ≤ {MAX_COORDINATE:.6g} mm), as a hit's")  # fmt: skip
    deviation = np.abs(np.einsum("nji,njk->nik", rot, rot) - np.eye(3)).max(axis=(1, 2))
    if (deviation > ROTATION_TOLERANCE).any():
        row = int(np.argmax(deviation > ROTATION_TOLERANCE)) + 1
        raise EventFormatError(
            f"{path}: row {row} (line {row + 1}), columns {','.join(map(repr, _ROTATION))}: not a rotation, expected "
            f"orthonormal columns (the local u, v, w axes); RᵀR differs from the identity by {deviation[row - 1]:.3g} "
            f"(at most {ROTATION_TOLERANCE:g})"
        )
    _check_layer_orientation(path, table, rot)
    ids = table["volume_id"], table["layer_id"], table["module_id"]
    _, first, inverse = np.unique(np.stack(ids, axis=-1), axis=0, return_index=True, return_inverse=True)
    repeated = np.flatnonzero(first[inverse.ravel()] != np.arange(len(rot)))
    if repeated.size:
        row, earlier = int(repeated[0]) + 1, int(first[inverse.ravel()[repeated[0]]]) + 1
        raise EventFormatError(
            f"{path}: row {row} (line {row + 1}), columns 'volume_id','layer_id','module_id': module (volume "
            f"{ids[0][row - 1]}, layer {ids[1][row - 1]}, module {ids[2][row - 1]}) appears twice (first at row "
            f"{earlier})"
        )


def _check_layer_orientation(path: Path, table: dict[str, np.ndarray], rot: np.ndarray) -> None:
    """Each layer's modules face the beam (normals transverse, a barrel layer) or face along z (an endcap layer), all
    the same way, as the navigation needs: else :class:`EventFormatError` naming the first module facing otherwise
    than its layer's first."""
    along_z = np.abs(rot[:, 2, 2]) > 0.5  # |normal_z|: the local w axis is the rotation's last column
    keys = np.stack([table["volume_id"], table["layer_id"]], axis=-1)
    _, first, layer = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    odd = np.flatnonzero(along_z != along_z[first[layer.ravel()]])
    if odd.size:
        row, earlier = int(odd[0]) + 1, int(first[layer.ravel()[odd[0]]]) + 1
        faces = ("transverse (a barrel module)", "along z (an endcap module)")
        volume, layer_id = keys[row - 1]
        raise EventFormatError(
            f"{path}: row {row} (line {row + 1}), column 'rot_zw': the module's normal is "
            f"{faces[int(along_z[row - 1])]}, that of row {earlier}, the first of its layer (volume {volume}, layer "
            f"{layer_id}), {faces[int(along_z[earlier - 1])]}; a layer's modules all face the same way"
        )
