"""Magnetic fields along the beam axis: uniform, the field of a finite solenoid, or a field map.

A field gives the fitter and the simulation one number per step: the **bending field** ``B_bend`` (tesla), the
field that turns a track's transverse direction.  A track with unit direction ``T`` in a field
``B = (B_r r̂ + B_z ẑ)`` turns in the transverse plane as ``dφ/ds = −c·(q/p)·B_bend`` with

    B_bend = B_z − B_r · (T_z / sin²θ) · (T_t · r̂),

``T_t`` the transverse part of ``T`` and ``r̂`` the radial unit vector at the track's position.  For a track
from the beam line (``T_t`` nearly radial) that is ``B_z − B_r cot θ``: near the ends of a solenoid, where the
field lines open, a forward track bends far less than ``B_z`` alone says.  The field's pull on the polar angle
(``dT_z/ds = c·(q/p)·(T × B)_z``, which vanishes for a radial ``T_t``) turns the direction at each step
(:meth:`MagneticField.turning_t`, :func:`with_polar_component`); within a step the path is a helix about z whose
curvature comes from ``B_bend``.

:class:`SolenoidField` is an ideal current sheet of radius ``radius_mm`` and length ``length_mm`` centred on
the origin, scaled to ``centre_t`` at the centre (the model of ACTS's ``SolenoidBField``).  The field is the sum
of the fields of :data:`SOLENOID_LOOPS` circular loops (complete elliptic integrals), tabulated once on an
(r, z) grid and interpolated bilinearly.  :class:`MappedField` interpolates a field map given on such a grid (a
detector's computed or measured field).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal, Protocol

import attrs
import numpy as np
from scipy.special import ellipe, ellipk

from inference_iface.options import finite, integer
from tracking_algs.errors import EventFormatError
from tracking_algs.geometry import HELIX_CONSTANT, Detector

#: circular loops that make up the current sheet (their spacing, 10 mm for a 6 m solenoid, is far below the
#: distance from any tracking surface to the sheet: the ripple falls as exp(−2π·distance/spacing))
SOLENOID_LOOPS = 600
#: points per chunk of the loop sum (bounds its memory)
_CHUNK = 2048
#: closer than this (mm) to the axis B_r is 0 (the loop formula's cancellation leaves ~1e-5 there)
_AXIS_MM = 1e-6
#: the largest |T_z| a turn of the polar direction leaves (a track along z has no transverse direction to keep)
MAX_POLAR = 1.0 - 1e-9
#: how far a field map's B_z at the origin may differ from the detector's field (a fraction of it)
MAP_CENTRE_TOLERANCE = 0.01
#: spacing (mm) of the (r, z) table the field is interpolated from
_GRID_STEP_MM = 40.0
#: the table reaches this far beyond the solenoid's ends (mm)
_GRID_MARGIN_MM = 1000.0


class MagneticField(Protocol):
    """What the fitter and the simulation ask of a field."""

    @property
    def centre_t(self) -> float:
        """B_z at the origin (tesla)."""

    @property
    def uniform(self) -> bool:
        """True when ``bending_t`` is ``centre_t`` everywhere (the helix needs no per-step field)."""

    def bending_t(self, position: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """The bending field [N] (tesla, module docstring) at ``position`` [N, 3] (mm) for unit ``direction``
        [N, 3]."""

    def turning_t(self, position: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bending field [N] and ``(T × B)_z`` [N] (tesla; ``dT_z/ds = c·(q/p)·(T × B)_z``, module
        docstring), from one look-up of the field."""


def with_polar_component(direction: np.ndarray, tz: np.ndarray) -> np.ndarray:
    """Unit directions [N, 3] with their z component set to ``tz`` [N] (clipped to ±:data:`MAX_POLAR`), the
    transverse direction kept: how the fitter and the simulation turn a track's polar direction in a step."""
    tz = np.clip(tz, -MAX_POLAR, MAX_POLAR)
    st = np.hypot(direction[:, 0], direction[:, 1])
    scale = np.sqrt(1.0 - tz * tz) / np.where(st > 0.0, st, 1.0)
    turned = np.empty((len(direction), 3))
    np.multiply(direction[:, :2], scale[:, None], out=turned[:, :2])
    turned[:, 2] = tz
    return turned


def step_miss(
    qop: np.ndarray,
    path: np.ndarray,
    start_bending: np.ndarray,
    start_lift: np.ndarray,
    end_bending: np.ndarray,
    end_lift: np.ndarray,
) -> np.ndarray:
    """Estimated miss (mm) of a midpoint step (a helix in the mean of the fields at its two ends) of ``path`` [N]
    (mm) for tracks of ``qop`` [N] (e/GeV), with the bending field and ``(T × B)_z`` [N] (tesla) at its start and
    its end: in a field that changes linearly along the step that helix ends c·|q/p|·|ΔB|·s²/12 sideways of the
    Lorentz force's path, ΔB the change of both together.  Cut into n equal pieces, the step misses by about 1/n²
    of that."""
    change = np.abs(end_bending - start_bending) + np.abs(end_lift - start_lift)
    return HELIX_CONSTANT * np.abs(qop) * change * path * path / 12.0


@attrs.frozen
class Stepping:
    """How finely the simulation and the fitter follow a track through a non-uniform field: a step from surface
    to surface whose single midpoint step would miss the Lorentz force by more than ``tolerance_mm``
    (:func:`step_miss`) is taken in as many equal pieces as bring it within that, at most ``max_pieces``.  The
    default takes one step per surface."""

    tolerance_mm: float = attrs.field(default=0.0, validator=[finite, attrs.validators.ge(0.0)])
    max_pieces: int = attrs.field(default=1, validator=[integer, attrs.validators.ge(1)])

    def pieces(self, miss_mm: np.ndarray) -> np.ndarray:
        """Into how many pieces [N] to cut steps whose single midpoint step misses by ``miss_mm`` [N]."""
        if self.tolerance_mm <= 0.0 or self.max_pieces == 1:
            return np.ones(len(miss_mm), dtype=np.int64)
        with np.errstate(invalid="ignore"):
            pieces = np.ceil(np.sqrt(np.maximum(miss_mm, 0.0) / self.tolerance_mm))
        return np.clip(np.nan_to_num(pieces, nan=1.0), 1, self.max_pieces).astype(np.int64)


#: one midpoint step from surface to surface, never cut
ONE_STEP = Stepping()


@attrs.frozen
class UniformField:
    """A uniform field of ``centre_t`` tesla along z."""

    centre_t: float = 2.0

    @property
    def uniform(self) -> bool:
        """Always True."""
        return True

    def bending_t(self, position: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """``centre_t`` for every track."""
        return np.full(len(position), self.centre_t)

    def turning_t(self, position: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``centre_t`` and zero (a field along z does not turn T_z) for every track."""
        return self.bending_t(position, direction), np.zeros(len(position))


class AxialField:
    """The steps of a field symmetric about the beam axis, from its ``components_t(r, z)``: (B_r, B_z) [N] (tesla) at
    radius ``r`` and ``z`` [N] (mm)."""

    __slots__ = ()

    def components_t(self, r: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B_r, B_z) [N] (tesla) at radius ``r`` and ``z`` (mm)."""
        raise NotImplementedError

    def bending_t(self, position: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """The bending field [N] (module docstring)."""
        return self.turning_t(position, direction)[0]

    def turning_t(self, position: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The bending field ``B_z − B_r (T_z / sin²θ)(T_t · r̂)`` [N] and ``(T × B)_z = B_r (T_x y − T_y x) / r``
        [N] (module docstring)."""
        x, y, z = position[:, 0], position[:, 1], position[:, 2]
        tx, ty, tz = direction[:, 0], direction[:, 1], direction[:, 2]
        r = np.hypot(x, y)
        b_r, b_z = self.components_t(r, z)
        b_r_over_r = b_r / np.where(r > 0.0, r, 1.0)
        transverse2 = np.maximum(tx * tx + ty * ty, 1e-12)
        bending = b_z - b_r_over_r * tz * (tx * x + ty * y) / transverse2
        return bending, b_r_over_r * (tx * y - ty * x)


@attrs.frozen
class SolenoidField(AxialField):
    """The field of an ideal finite solenoid along z (module docstring), ``centre_t`` tesla at the origin."""

    centre_t: float = 2.0
    radius_mm: float = attrs.field(default=1200.0, validator=[finite, attrs.validators.gt(0.0)])
    length_mm: float = attrs.field(default=6000.0, validator=[finite, attrs.validators.gt(0.0)])

    @property
    def uniform(self) -> bool:
        """False: the field falls off towards the solenoid's ends."""
        return False

    def components_t(self, r: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B_r, B_z) [N] (tesla) at radius ``r`` and ``z`` (mm), interpolated from the table."""
        table = _solenoid_table(self.radius_mm, self.length_mm)
        return table.interpolate(r, z, self.centre_t)


@attrs.frozen
class MappedField(AxialField):
    """The field of a map (``[detector.field] kind = "map"``): B_r and B_z on an (r, z) grid, interpolated
    bilinearly (:class:`FieldGrid`; read by :func:`~tracking_algs.io.field_map.read_field_map`)."""

    grid: FieldGrid
    #: B_z at the origin (tesla), from the map
    centre_t: float = attrs.field(init=False)

    @centre_t.default
    def _map_centre(self) -> float:
        return float(self.grid.interpolate(np.zeros(1), np.zeros(1))[1][0])

    @property
    def uniform(self) -> bool:
        """False: a map is followed step by step, whatever it holds."""
        return False

    def components_t(self, r: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B_r, B_z) [N] (tesla) at radius ``r`` and ``z`` (mm), interpolated from the map."""
        return self.grid.interpolate(r, z)


@attrs.frozen(kw_only=True)
class FieldConfig:
    """``[detector.field]``: the field's shape.  ``kind = "uniform"`` (the default): the detector's field
    everywhere; ``"solenoid"``: a :class:`SolenoidField` of ``solenoid_radius_mm`` and ``solenoid_length_mm``
    with the detector's field at its centre.  The defaults, 1.2 m and 6 m, are the solenoid of ACTS's examples
    for its generic (TrackML) detector (``acts.SolenoidBField(radius=1200 mm, length=6000 mm, bMagCenter=2 T)``).
    ``"map"``: the :class:`MappedField` of the field map ``map_file``
    (:func:`~tracking_algs.io.field_map.read_field_map`), as it is; its field at the origin must be the detector's
    within :data:`MAP_CENTRE_TOLERANCE` (the pair cuts and the seeds take the detector's), and its grid must reach
    as far as the detector's surfaces.  With ``map_mirror_z``
    the map gives z ≥ 0 only, and the field at −z is its mirror image (B_z the same, B_r reversed), as a field
    symmetric about z = 0 is.  ``map_file`` and ``map_mirror_z`` go with ``kind = "map"`` only (a
    ``ValueError`` otherwise, and for a map without its file).
    """

    kind: Literal["uniform", "solenoid", "map"] = attrs.field(
        default="uniform", validator=attrs.validators.in_(("uniform", "solenoid", "map"))
    )
    solenoid_radius_mm: float = attrs.field(default=1200.0, validator=[finite, attrs.validators.gt(0.0)])
    solenoid_length_mm: float = attrs.field(default=6000.0, validator=[finite, attrs.validators.gt(0.0)])
    map_file: str = attrs.field(default="", validator=attrs.validators.instance_of(str))
    map_mirror_z: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    @map_file.validator
    def _map_file_with_kind(self, _attribute: attrs.Attribute, map_file: str) -> None:
        """A map needs its file, and a file is read only for a map: a ``map_file`` beside another kind would be
        left unread, the job running in a field the user did not ask for."""
        if self.kind == "map" and not map_file:
            raise ValueError('kind = "map" needs map_file, a field map CSV (r, z, br, bz)')
        if self.kind != "map" and map_file:
            raise ValueError(f'map_file {map_file!r} is read only with kind = "map", but kind = "{self.kind}"; '
                             'set kind = "map" to follow the map, or leave map_file out')  # fmt: skip

    @map_mirror_z.validator
    def _mirror_with_map(self, _attribute: attrs.Attribute, mirror: bool) -> None:
        """``map_mirror_z`` describes a map: with another kind it would be left unread."""
        if mirror and self.kind != "map":
            raise ValueError(f'map_mirror_z is read only with kind = "map", but kind = "{self.kind}"')

    def build(self, detector: Detector) -> MagneticField:
        """The field these options describe in ``detector``: its ``bfield_t`` tesla at the origin.

        Raises :class:`~tracking_algs.errors.EventFormatError` for ``kind = "map"`` when ``map_file`` is
        malformed (naming the file and the row or node), when the map's field at the origin is not the detector's
        (within :data:`MAP_CENTRE_TOLERANCE`), or when its grid does not reach as far as the detector's surfaces."""
        centre_t = detector.bfield_t
        if self.kind == "uniform":
            return UniformField(centre_t)
        if self.kind == "solenoid":
            return SolenoidField(centre_t, self.solenoid_radius_mm, self.solenoid_length_mm)
        from tracking_algs.io.field_map import read_field_map  # imported here: it imports this module (FieldGrid)

        field = MappedField(read_field_map(self.map_file, self.map_mirror_z))
        if abs(field.centre_t - centre_t) > MAP_CENTRE_TOLERANCE * abs(centre_t):
            raise EventFormatError(
                f"{Path(self.map_file)}: the map's field at the origin is {field.centre_t:.4g} T, but the detector's "
                f"is {centre_t:g} T; expected them to agree within {MAP_CENTRE_TOLERANCE:.0%} (the detector's "
                "bfield_t sets the pair cuts and the seeds)"
            )
        radius, length = detector.reach_mm()
        grid = field.grid
        r_max = (grid.b_r.shape[0] - 1) * grid.r_step
        z_max = grid.z_min + (grid.b_r.shape[1] - 1) * grid.z_step
        if r_max < radius or grid.z_min > -length or z_max < length:
            raise EventFormatError(
                f"{Path(self.map_file)}: the map covers r up to {r_max:g} mm and z from {grid.z_min:g} to {z_max:g} mm,"
                f" but the detector's surfaces reach r = {radius:g} and |z| = {length:g} mm; expected a map over the "
                "whole tracker (beyond its grid a map gives the field at its edge)"
            )
        return field


@attrs.frozen(eq=False)
class FieldGrid:
    """B_r and B_z (tesla, or relative to the centre for a solenoid's table) on a regular (r, z) grid: ``r_step``
    (mm; the first r node on the axis), ``z_min`` and ``z_step`` (mm), and the field at the nodes, ``b_r`` and
    ``b_z`` [n_r, n_z].  Interpolated bilinearly; outside the grid, the field at its nearest edge."""

    r_step: float
    z_min: float
    z_step: float
    b_r: np.ndarray
    b_z: np.ndarray

    def interpolate(self, r: np.ndarray, z: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """``scale`` × (B_r, B_z) [N] at radius ``r`` and ``z`` [N] (mm)."""
        n_r, n_z = self.b_r.shape
        fr = np.clip(np.asarray(r, dtype=np.float64) / self.r_step, 0.0, n_r - 1.000001)
        fz = np.clip((np.asarray(z, dtype=np.float64) - self.z_min) / self.z_step, 0.0, n_z - 1.000001)
        i, j = fr.astype(np.int64), fz.astype(np.int64)
        wr, wz = fr - i, fz - j
        node = i * n_z + j  # the node (i, j) in the flattened grids: flat look-ups cost half the 2-D ones
        below_r, below_z = 1.0 - wr, 1.0 - wz

        def bilinear(grid: np.ndarray) -> np.ndarray:
            flat = grid.ravel()
            low = flat.take(node) * below_z + flat.take(node + 1) * wz
            high = flat.take(node + n_z) * below_z + flat.take(node + n_z + 1) * wz
            return scale * (low * below_r + high * wr)

        return bilinear(self.b_r), bilinear(self.b_z)


def loop_sum_field(r: np.ndarray, z: np.ndarray, radius_mm: float, length_mm: float) -> tuple[np.ndarray, ...]:
    """(B_r, B_z) [N] at ``r``, ``z`` (mm) of :data:`SOLENOID_LOOPS` equal loops spread evenly over the solenoid,
    in units of the field at the origin."""

    def loops(r: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        loop_z = (np.arange(SOLENOID_LOOPS) + 0.5) / SOLENOID_LOOPS * length_mm - 0.5 * length_mm
        rr = np.maximum(np.asarray(r, dtype=np.float64), 1e-9)[:, None]
        dz = np.asarray(z, dtype=np.float64)[:, None] - loop_z[None, :]
        far = (radius_mm + rr) ** 2 + dz * dz
        near = (radius_mm - rr) ** 2 + dz * dz
        m = 4.0 * radius_mm * rr / far
        k, e = ellipk(m), ellipe(m)
        root = np.sqrt(far)
        b_z = (k + (radius_mm**2 - rr * rr - dz * dz) / near * e) / root
        b_r = dz / rr * (-k + (radius_mm**2 + rr * rr + dz * dz) / near * e) / root
        return np.where(rr[:, 0] > _AXIS_MM, b_r.sum(axis=1), 0.0), b_z.sum(axis=1)

    r, z = np.ravel(r), np.ravel(z)
    norm = loops(np.zeros(1), np.zeros(1))[1][0]
    parts = [loops(r[start : start + _CHUNK], z[start : start + _CHUNK]) for start in range(0, len(r), _CHUNK)]
    return np.concatenate([part[0] for part in parts]) / norm, np.concatenate([part[1] for part in parts]) / norm


@functools.cache
def _solenoid_table(radius_mm: float, length_mm: float) -> FieldGrid:
    r_nodes = np.arange(0.0, radius_mm - _GRID_STEP_MM, _GRID_STEP_MM)
    z_max = 0.5 * length_mm + _GRID_MARGIN_MM
    z_nodes = np.arange(-z_max, z_max + 0.5 * _GRID_STEP_MM, _GRID_STEP_MM)
    r_grid, z_grid = np.meshgrid(r_nodes, z_nodes, indexing="ij")
    b_r, b_z = loop_sum_field(r_grid.ravel(), z_grid.ravel(), radius_mm, length_mm)
    shape = r_grid.shape
    return FieldGrid(_GRID_STEP_MM, -z_max, _GRID_STEP_MM, b_r.reshape(shape), b_z.reshape(shape))
