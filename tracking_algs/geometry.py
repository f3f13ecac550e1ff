"""The detector description shared by the simulation and the Kalman fitter.

A detector is a uniform solenoid field along z, a beam pipe, and a list of surfaces: barrel cylinders
(at a radius, over a z range) and endcap disks (at a signed z, over an r range). Each surface has its
material thickness in radiation lengths, its two local measurement resolutions and its module
segmentation. :func:`trackml_detector` gives the TrackML-like default (radii, z positions and pitches
from the TrackML / ACTS GenericDetector layout: the TrackML challenge's ``detectors.csv``, Amrouche et al.,
arXiv:1904.06778); :meth:`Detector.from_toml` reads another one.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Literal

import attrs
import numpy as np

from inference_iface.options import finite, load_toml, structure, unstructure

#: Helix constant c in GeV / (T · mm): a unit charge with transverse momentum pT in a field B bends
#: on a circle of radius pT / (c · B).
HELIX_CONSTANT = 2.99792458e-4


def curvature_radius(pt_gev: np.ndarray | float, bfield_t: float) -> np.ndarray | float:
    """Radius of the transverse circle in mm for a unit charge: pT / (c · B), c = :data:`HELIX_CONSTANT`."""
    return pt_gev / (HELIX_CONSTANT * bfield_t)


def _increasing_pair(_instance: object, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    if len(value) != 2 or not all(math.isfinite(end) for end in value) or not value[0] < value[1]:
        raise ValueError(
            f"'{attribute.name}' must be two finite numbers [low, high] with low < high, got {list(value)!r}"
        )


def _positive_pair(_instance: object, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    if len(value) != 2 or not all(math.isfinite(item) and item > 0.0 for item in value):
        raise ValueError(f"'{attribute.name}' must be two finite numbers above 0, got {list(value)!r}")


def _module_counts(_instance: object, attribute: attrs.Attribute, value: tuple[int, int]) -> None:
    if len(value) != 2 or not all(count >= 1 for count in value):
        raise ValueError(f"'{attribute.name}' must be two module counts of 1 or more, got {list(value)!r}")


def _nonzero(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value == 0.0:
        raise ValueError(f"'{attribute.name}' must not be 0: the simulation and the fitter follow helices in the field")


@attrs.frozen
class Surface:
    """One sensitive layer.

    ``kind == "barrel"``: a cylinder of radius ``position`` spanning z in ``extent``; local
    measurements (r·phi, z).  ``kind == "endcap"``: a disk at z = ``position`` spanning r in
    ``extent``; local measurements (r·phi, r).
    """

    volume_id: int
    layer_id: int
    subsystem: str
    kind: Literal["barrel", "endcap"] = attrs.field(validator=attrs.validators.in_(("barrel", "endcap")))
    position: float = attrs.field(validator=finite)
    extent: tuple[float, float] = attrs.field(validator=_increasing_pair)
    x_over_x0: float = attrs.field(validator=[finite, attrs.validators.ge(0.0)])
    resolution: tuple[float, float] = attrs.field(validator=_positive_pair)
    modules: tuple[int, int] = attrs.field(default=(32, 8), validator=_module_counts)

    def __attrs_post_init__(self) -> None:
        if self.kind == "barrel" and self.position <= 0.0:
            raise ValueError(f"'position' of a barrel is its radius and must be above 0 mm, got {self.position!r}")
        if self.kind == "endcap" and self.extent[0] < 0.0:
            raise ValueError(f"'extent' of an endcap is its radius range and must start at 0 mm or above, got "
                             f"{list(self.extent)!r}")  # fmt: skip

    def module_id(self, phi: np.ndarray, along: np.ndarray) -> np.ndarray:
        """Module number (1-based) of points at azimuth ``phi`` and at ``along`` (z for barrels, r for disks)."""
        n_phi, n_along = self.modules
        i_phi = np.clip(((phi + math.pi) / (2 * math.pi) * n_phi).astype(np.int64), 0, n_phi - 1)
        low, high = self.extent
        i_along = np.clip(((along - low) / (high - low) * n_along).astype(np.int64), 0, n_along - 1)
        return 1 + i_phi * n_along + i_along


def _distinct_layers(_instance: object, attribute: attrs.Attribute, surfaces: tuple[Surface, ...]) -> None:
    """Hits name their surface by (volume_id, layer_id): two surfaces with one pair could not be told apart."""
    keys = [(surface.volume_id, surface.layer_id) for surface in surfaces]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"'{attribute.name}' must have one surface per (volume_id, layer_id); repeated: "
                         f"{', '.join(map(str, repeated))}")  # fmt: skip


@attrs.frozen
class BeamPipe:
    """A thin cylinder of material at ``radius`` mm (the cylinder detector's; on the modules the fitter and the
    simulation take the ACTS generic detector's beam pipe at 19 mm, :mod:`tracking_algs.modules.material`)."""

    radius: float = 25.0
    x_over_x0: float = 0.0023


@attrs.frozen
class Detector:
    """Surfaces in a uniform field ``bfield_t`` (tesla) along z."""

    surfaces: tuple[Surface, ...] = attrs.field(validator=[attrs.validators.min_len(1), _distinct_layers])
    bfield_t: float = attrs.field(default=2.0, validator=[finite, _nonzero])
    beam_pipe: BeamPipe = BeamPipe()

    def reach_mm(self) -> tuple[float, float]:
        """How far the surfaces reach: the largest radius and the largest |z| of any of them (mm)."""
        barrels = [surface for surface in self.surfaces if surface.kind == "barrel"]
        disks = [surface for surface in self.surfaces if surface.kind == "endcap"]
        radius = max([s.position for s in barrels] + [s.extent[1] for s in disks], default=0.0)
        length = max([max(abs(s.extent[0]), abs(s.extent[1])) for s in barrels] + [abs(s.position) for s in disks],
                     default=0.0)  # fmt: skip
        return float(radius), float(length)

    @classmethod
    def from_toml(cls, path: str | Path) -> Detector:
        """Read a detector written by :meth:`to_toml` (a ``[[surfaces]]`` array of tables)."""
        return structure(load_toml(path), cls, where=f"detector file {str(path)!r}")

    def to_toml(self) -> str:
        """TOML text that :meth:`from_toml` reads back into an equal detector."""
        return _toml_table(unstructure(self), ())


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # Python's repr of a float (also inf, nan) is valid TOML and exact
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _toml_table(table: dict, path: tuple[str, ...]) -> str:
    """Keys with values first, then sub-tables ``[a.b]`` and arrays of tables ``[[a.b]]``."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in table.items()
             if not isinstance(value, dict) and not _is_table_array(value)]  # fmt: skip
    blocks = ["\n".join(lines)] if lines else []
    for key, value in table.items():
        name = ".".join((*path, key))
        if isinstance(value, dict):
            blocks.append(f"[{name}]\n" + _toml_table(value, (*path, key)).rstrip("\n"))
        elif _is_table_array(value):
            blocks.extend(f"[[{name}]]\n" + _toml_table(item, (*path, key)).rstrip("\n") for item in value)
    return "\n\n".join(blocks) + "\n"


#: The TrackML-like detector, shipped with the package: the one description :func:`trackml_detector` reads.
TRACKML_TOML = Path(__file__).resolve().parent / "detectors" / "trackml.toml"


@functools.cache
def _shipped_trackml() -> Detector:
    return Detector.from_toml(TRACKML_TOML)


def trackml_detector(bfield_t: float | None = None) -> Detector:
    """The TrackML-like detector of :data:`TRACKML_TOML`: pixel, short-strip and long-strip barrels and endcaps
    (the TrackML / ACTS GenericDetector layout, described in the file), in the file's field or in ``bfield_t``.
    """
    detector = _shipped_trackml()
    return detector if bfield_t is None else attrs.evolve(detector, bfield_t=bfield_t)
