"""The detector description shared by the simulation and the Kalman fitter.

A detector is a uniform solenoid field along z, a beam pipe, and a list of surfaces: barrel cylinders
(at a radius, over a z range) and endcap disks (at a signed z, over an r range). Each surface has its
material thickness in radiation lengths, its two local measurement resolutions and its module
segmentation. :func:`trackml_detector` gives the TrackML-like default (radii, z positions and pitches
from the TrackML / ACTS GenericDetector layout); :meth:`Detector.from_toml` reads another one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import attrs
import numpy as np

from inference_iface.options import load_toml, structure, unstructure

#: Helix constant c in GeV / (T · mm): a unit charge with transverse momentum pT in a field B bends
#: on a circle of radius pT / (c · B).
HELIX_CONSTANT = 2.99792458e-4


def curvature_radius(pt_gev: np.ndarray | float, bfield_t: float) -> np.ndarray | float:
    """Radius of the transverse circle in mm for a unit charge: pT / (c · B), c = :data:`HELIX_CONSTANT`."""
    return pt_gev / (HELIX_CONSTANT * bfield_t)


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
    kind: Literal["barrel", "endcap"]
    position: float
    extent: tuple[float, float]
    x_over_x0: float
    resolution: tuple[float, float]
    modules: tuple[int, int] = (32, 8)

    def module_id(self, phi: np.ndarray, along: np.ndarray) -> np.ndarray:
        """Module number (1-based) of points at azimuth ``phi`` and at ``along`` (z for barrels, r for disks)."""
        n_phi, n_along = self.modules
        i_phi = np.clip(((phi + math.pi) / (2 * math.pi) * n_phi).astype(np.int64), 0, n_phi - 1)
        low, high = self.extent
        i_along = np.clip(((along - low) / (high - low) * n_along).astype(np.int64), 0, n_along - 1)
        return 1 + i_phi * n_along + i_along


@attrs.frozen
class BeamPipe:
    """A thin cylinder of material at ``radius`` mm."""

    radius: float = 25.0
    x_over_x0: float = 0.0023


@attrs.frozen
class Detector:
    """Surfaces in a uniform field ``bfield_t`` (tesla) along z."""

    surfaces: tuple[Surface, ...]
    bfield_t: float = 2.0
    beam_pipe: BeamPipe = BeamPipe()

    @property
    def barrels(self) -> tuple[Surface, ...]:
        """Barrel surfaces, innermost first."""
        return tuple(sorted((s for s in self.surfaces if s.kind == "barrel"), key=lambda s: s.position))

    @property
    def endcaps(self) -> tuple[Surface, ...]:
        """Endcap disks ordered by signed z."""
        return tuple(sorted((s for s in self.surfaces if s.kind == "endcap"), key=lambda s: s.position))

    def surface(self, volume_id: int, layer_id: int) -> Surface:
        """The surface with these ids."""
        for candidate in self.surfaces:
            if candidate.volume_id == volume_id and candidate.layer_id == layer_id:
                return candidate
        raise KeyError(f"no surface with volume_id={volume_id}, layer_id={layer_id}")

    def without_material(self) -> Detector:
        """The same detector with zero material everywhere (for resolution tests)."""
        return attrs.evolve(
            self,
            surfaces=tuple(attrs.evolve(s, x_over_x0=0.0) for s in self.surfaces),
            beam_pipe=attrs.evolve(self.beam_pipe, x_over_x0=0.0),
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> Detector:
        """Read a detector written by :meth:`to_dict` (a ``[[surfaces]]`` array of tables)."""
        return structure(load_toml(path), cls, where=f"detector file {str(path)!r}")

    def to_dict(self) -> dict:
        """Plain data (for TOML/JSON)."""
        return unstructure(self)

    def to_toml(self) -> str:
        """TOML text that :meth:`from_toml` reads back into an equal detector."""
        return _toml_table(self.to_dict(), ())


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


_SUBSYSTEMS = {
    # name: (barrel volume, endcap volumes (-z, +z), barrel radii, barrel half length, endcap |z|,
    #        endcap r range, pitch (mm) along r·phi and along z/r, x/X0)
    "pixel": (8, (7, 9), (32.0, 72.0, 116.0, 172.0), 490.0, (600.0, 700.0, 820.0, 960.0, 1100.0, 1300.0, 1500.0),
              (30.0, 176.0), (0.05, 0.05), 0.012),
    "short_strip": (13, (12, 14), (260.0, 360.0, 500.0, 660.0), 1080.0,
                    (1220.0, 1500.0, 1800.0, 2150.0, 2550.0, 2950.0), (230.0, 710.0), (0.08, 1.2), 0.020),
    "long_strip": (17, (16, 18), (820.0, 1020.0), 1080.0,
                   (1220.0, 1500.0, 1800.0, 2150.0, 2550.0, 2950.0), (720.0, 1030.0), (0.12, 10.8), 0.025),
}  # fmt: skip


def trackml_detector(bfield_t: float = 2.0) -> Detector:
    """The TrackML-like detector: pixel, short-strip and long-strip barrels and endcaps (FACTS.md layout).

    Volume ids follow TrackML (7/8/9 pixel, 12/13/14 short strip, 16/17/18 long strip; endcap
    volumes at -z then +z); layer ids are 2, 4, 6, ... counted outwards from the interaction point.
    Resolutions are pitch/sqrt(12).
    """
    surfaces: list[Surface] = []
    for name, (barrel_volume, endcap_volumes, radii, half_length, disks, r_range, pitch, x0) in _SUBSYSTEMS.items():
        resolution = (pitch[0] / math.sqrt(12), pitch[1] / math.sqrt(12))
        for index, radius in enumerate(radii):
            surfaces.append(
                Surface(barrel_volume, 2 * (index + 1), name, "barrel", radius, (-half_length, half_length), x0,
                        resolution, modules=(max(16, int(radius / 4)), 14))
            )  # fmt: skip
        for sign, volume in zip((-1, 1), endcap_volumes, strict=True):
            for index, z in enumerate(disks):
                surfaces.append(
                    Surface(volume, 2 * (index + 1), name, "endcap", sign * z, r_range, x0, resolution,
                            modules=(48, 4))
                )  # fmt: skip
    return Detector(surfaces=tuple(surfaces), bfield_t=bfield_t)
