"""The TrackML ``detectors.csv`` format (``.csv`` or gzipped ``.csv.gz``): one row per module,

``volume_id, layer_id, module_id`` (int), the centre ``cx, cy, cz`` (mm), the rotation ``rot_xu, rot_xv, rot_xw,
rot_yu, …, rot_zw`` (row = global x, y, z; column = local u, v, w), ``module_t`` (half thickness, mm),
``module_minhu, module_maxhu, module_hv`` (half widths, mm) and ``pitch_u, pitch_v`` (cell pitch, mm), as the
TrackML challenge distributes it (Amrouche et al., arXiv:1904.06778). The material is not in the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tracking_algs.io.csv_table import read_table, write_table
from tracking_algs.modules.geometry import ModuleGeometry
from tracking_algs.modules.material import trackml_x_over_x0

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


def read_detectors_csv(path: str | Path, x_over_x0: float | np.ndarray | None = None) -> ModuleGeometry:
    """The modules of a ``detectors.csv`` (or ``.csv.gz``) file, in the file's row order.

    ``x_over_x0`` is the material per module (a value or one per row); None gives each module the TrackML
    material of its layer (:func:`~tracking_algs.modules.material.trackml_x_over_x0`). Raises
    :class:`~tracking_algs.errors.EventFormatError` naming the file, row and column for a malformed file.
    """
    table = read_table(Path(path), DETECTORS_COLUMNS)
    n = len(table["module_id"])
    material = trackml_x_over_x0(table["volume_id"], table["layer_id"]) if x_over_x0 is None else x_over_x0
    return ModuleGeometry(
        **{field: table[column] for column, field in _SCALARS.items()},
        c=np.stack([table["cx"], table["cy"], table["cz"]], axis=-1),
        rot=np.stack([table[name] for name in _ROTATION], axis=-1).reshape(n, 3, 3),
        x_over_x0=np.broadcast_to(material, (n,)),
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
