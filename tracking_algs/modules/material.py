"""The material of the TrackML detector, which ``detectors.csv`` does not carry.

The modules: the project's own assumption, one value per layer: the ``x_over_x0`` of the same (volume, layer) in
the cylinder description of the TrackML detector (:func:`tracking_algs.geometry.trackml_detector`): 1.2 % of a
radiation length for the pixel modules, 2 % for the short strips and 2.5 % for the long strips.

The passive cylinders without modules (:data:`TRACKML_SUPPORTS`): the beam pipe and the pixel support tube of the
ACTS generic detector, whose layout the TrackML detector has (the same layer radii and disk positions): beryllium
0.8 mm thick at r = 19 mm over |z| < 3 m and 1.8 mm thick at r = 200 mm over |z| < 2.8 m (ACTS,
``Examples/Detectors/GenericDetector``: ``BuildGenericDetector`` / ``GenericDetectorBuilder``).
"""

from __future__ import annotations

import attrs
import numpy as np

from tracking_algs.geometry import trackml_detector


def trackml_x_over_x0(volume_id: np.ndarray, layer_id: np.ndarray) -> np.ndarray:
    """Material (radiation lengths at normal incidence) of modules in the TrackML layers (``volume_id``,
    ``layer_id``); raises ``ValueError`` naming the first layer that the TrackML detector does not have."""
    volume_id, layer_id = np.broadcast_arrays(np.asarray(volume_id, np.int64), np.asarray(layer_id, np.int64))
    material, found = trackml_layer_material(volume_id, layer_id)
    if not found.all():
        first = np.flatnonzero(~found.ravel())[0]
        raise ValueError(f"no TrackML material for volume {volume_id.ravel()[first]}, layer "
                         f"{layer_id.ravel()[first]}: give x_over_x0 explicitly")  # fmt: skip
    return material


def trackml_layer_material(volume_id: np.ndarray, layer_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The material of :func:`trackml_x_over_x0` (NaN where unknown), and whether each (``volume_id``,
    ``layer_id``) is a layer of the TrackML detector."""
    volume_id, layer_id = np.broadcast_arrays(np.asarray(volume_id, np.int64), np.asarray(layer_id, np.int64))
    surfaces = trackml_detector().surfaces
    known = np.array([(surface.volume_id, surface.layer_id) for surface in surfaces], dtype=np.int64)
    material = np.array([surface.x_over_x0 for surface in surfaces])
    match = (volume_id[..., None] == known[:, 0]) & (layer_id[..., None] == known[:, 1])
    found = match.any(axis=-1)
    return np.where(found, material[match.argmax(axis=-1)], np.nan), found


#: beryllium's radiation length and nuclear interaction length (mm), as the ACTS generic detector gives them
BERYLLIUM_X0_MM, BERYLLIUM_LAMBDA_MM = 352.8, 407.0


@attrs.frozen
class SupportCylinder:
    """A passive cylinder of material around the beam line: ``radius`` and ``half_length`` (mm), and its
    thickness in radiation lengths (``x_over_x0``) and nuclear interaction lengths (``x_over_lambda``) at normal
    incidence."""

    radius: float
    half_length: float
    x_over_x0: float
    x_over_lambda: float

    @classmethod
    def beryllium(cls, radius: float, half_length: float, thickness: float) -> SupportCylinder:
        """A beryllium cylinder ``thickness`` mm thick."""
        return cls(radius, half_length, thickness / BERYLLIUM_X0_MM, thickness / BERYLLIUM_LAMBDA_MM)

    def holds(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, reach_mm: float) -> np.ndarray:
        """Whether each point (mm) lies within ``reach_mm`` of the cylinder radially, along its length."""
        return (np.abs(np.hypot(x, y) - self.radius) < reach_mm) & (np.abs(z) <= self.half_length)


#: the beam pipe and the pixel support tube of the TrackML detector (the module docstring)
TRACKML_BEAM_PIPE = SupportCylinder.beryllium(radius=19.0, half_length=3000.0, thickness=0.8)
TRACKML_SUPPORT_TUBE = SupportCylinder.beryllium(radius=200.0, half_length=2800.0, thickness=1.8)
TRACKML_SUPPORTS = (TRACKML_BEAM_PIPE, TRACKML_SUPPORT_TUBE)


def on_supports(x: np.ndarray, y: np.ndarray, z: np.ndarray, reach_mm: float) -> np.ndarray:
    """Whether each point (mm) lies within ``reach_mm`` of one of :data:`TRACKML_SUPPORTS`
    (:meth:`SupportCylinder.holds`)."""
    return np.logical_or.reduce([cylinder.holds(x, y, z, reach_mm) for cylinder in TRACKML_SUPPORTS])
