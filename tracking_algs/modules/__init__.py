"""The detector as flat modules in the TrackML ``detectors.csv`` model: the module geometry, its file format, and
the TrackML detector generated from a compact per-layer description (docs/detector.md).

:mod:`tracking_algs.modules.describe` measures that description from a ``detectors.csv`` file;
:mod:`tracking_algs.modules.compare` compares the generated detector with a file.
"""

from tracking_algs.modules.detectors_csv import DETECTORS_COLUMNS, read_detectors_csv, write_detectors_csv
from tracking_algs.modules.geometry import ModuleGeometry
from tracking_algs.modules.layout import (
    TRACKML_MODULES_TOML,
    BarrelLayer,
    EndcapLayer,
    EndcapRing,
    ModuleLayout,
    build_modules,
    trackml_modules,
)
from tracking_algs.modules.material import (
    TRACKML_BEAM_PIPE,
    TRACKML_SUPPORT_TUBE,
    TRACKML_SUPPORTS,
    SupportCylinder,
    on_supports,
    trackml_x_over_x0,
)

__all__ = [
    "DETECTORS_COLUMNS",
    "TRACKML_BEAM_PIPE",
    "TRACKML_MODULES_TOML",
    "TRACKML_SUPPORTS",
    "TRACKML_SUPPORT_TUBE",
    "BarrelLayer",
    "EndcapLayer",
    "EndcapRing",
    "ModuleGeometry",
    "ModuleLayout",
    "SupportCylinder",
    "build_modules",
    "on_supports",
    "read_detectors_csv",
    "trackml_modules",
    "trackml_x_over_x0",
    "write_detectors_csv",
]
