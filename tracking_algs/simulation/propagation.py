"""Helix propagation from surface to surface through the cylinders and disks, vectorised over particles.

Every step finds, for all particles still going, the nearest crossing ahead with each barrel cylinder
(a quadratic in tan(psi/2), psi being the turning angle) and each endcap disk (z is linear in psi), moves
them there (in a non-uniform field by midpoint steps, in pieces where one would miss the Lorentz force), records
sensitive crossings and applies multiple scattering and, where enabled, the energy loss.  A particle stops when nothing
is ahead or after ``max_turns`` full turns (half a turn by default: loopers stop on their way back).
"""

from __future__ import annotations

import functools
from typing import TypeGuard

import attrs
import numpy as np

from tracking_algs.energy_loss import slowed
from tracking_algs.geometry import HELIX_CONSTANT, Detector
from tracking_algs.magnetic_field import ONE_STEP, MagneticField, Stepping, step_miss, with_polar_component
from tracking_algs.simulation.scattering import highland_theta0, scatter

_TWO_PI = 2.0 * np.pi
#: a particle leaving a cylinder must turn at least this far (rad) before it can cross that cylinder again
_RECROSS_TOLERANCE = 1e-6
#: grazing crossings count as if at this |cos(incidence)| at most, to keep the material finite
_MIN_COS_INCIDENCE = 0.05
_MAX_STEPS = 10_000


@attrs.frozen
class Crossings:
    """Sensitive-surface crossings in the order they happen per particle.

    ``particle`` indexes the propagated particles, ``surface`` indexes ``detector.surfaces``;
    ``position`` [M, 3] mm and ``momentum`` [M, 3] GeV (arriving at the surface, before scattering).
    """

    particle: np.ndarray
    surface: np.ndarray
    position: np.ndarray
    momentum: np.ndarray


@attrs.frozen
class _Layers:
    """The beam pipe and the detector surfaces as arrays: cylinders first, then disks."""

    cylinder_radius: np.ndarray
    cylinder_z_range: np.ndarray  # [nc, 2]
    disk_z: np.ndarray
    disk_r_range: np.ndarray  # [nd, 2]
    x_over_x0: np.ndarray  # [nc + nd]
    surface_index: np.ndarray  # [nc + nd], -1 for the beam pipe

    @classmethod
    def of(cls, detector: Detector) -> _Layers:
        barrels = [i for i, s in enumerate(detector.surfaces) if s.kind == "barrel"]
        disks = [i for i, s in enumerate(detector.surfaces) if s.kind == "endcap"]
        surfaces = detector.surfaces
        return cls(
            cylinder_radius=np.array([detector.beam_pipe.radius] + [surfaces[i].position for i in barrels]),
            cylinder_z_range=np.array([(-np.inf, np.inf)] + [surfaces[i].extent for i in barrels]).reshape(-1, 2),
            disk_z=np.array([surfaces[i].position for i in disks]),
            disk_r_range=np.array([surfaces[i].extent for i in disks]).reshape(-1, 2),
            x_over_x0=np.array(
                [detector.beam_pipe.x_over_x0] + [surfaces[i].x_over_x0 for i in barrels + disks], dtype=np.float64
            ),
            surface_index=np.array([-1, *barrels, *disks], dtype=np.int64),
        )


def propagate(
    vertex: np.ndarray,
    momentum: np.ndarray,
    charge: np.ndarray,
    detector: Detector,
    rng: np.random.Generator,
    *,
    max_turns: float = 0.5,
    multiple_scattering: bool = True,
    energy_loss: bool = False,
    mass_gev: float = 0.13957,
    field: MagneticField | None = None,
    stepping: Stepping = ONE_STEP,
) -> Crossings:
    """Propagate particles (vertex [N, 3] mm, momentum [N, 3] GeV, charge [N] ±1) through ``detector``, in
    ``field`` (None: the detector's uniform field; in a non-uniform one each step is a :func:`midpoint_step`, in
    pieces where one would miss the Lorentz force by more than ``stepping`` allows),
    scattering in each layer's material and, with ``energy_loss``, losing its mean ionisation energy there."""
    layers = _Layers.of(detector)
    n_cylinders = len(layers.cylinder_radius)
    position = np.array(vertex, dtype=np.float64).reshape(-1, 3)
    mom = np.array(momentum, dtype=np.float64).reshape(-1, 3)
    q = np.asarray(charge, dtype=np.float64)
    particle = np.arange(len(position))
    turned = np.zeros(len(position))
    last = np.full(len(position), -1)
    budget = max_turns * _TWO_PI
    records: list[tuple[np.ndarray, ...]] = []

    in_field_steps = varies(field)
    for _ in range(_MAX_STEPS):
        if not len(particle):
            break
        bend: float | np.ndarray = uniform_bending(field, detector.bfield_t)
        if in_field_steps:
            assert field is not None  # varies(field): a field
            step = midpoint_step(field, position, mom, q, functools.partial(
                _next_turn, position, mom, q, layers=layers, last=last, budget=budget - turned), stepping)  # fmt: skip
            bend, mom, tilt, limit = step.bending, step.momentum, step.tilt, step.turn_limit(q)
        psi, layer = _next_crossing(position, mom, q, bend, layers, last, budget - turned)
        going = np.isfinite(psi)
        position, mom, q, particle, turned, psi, layer, last = (
            a[going] for a in (position, mom, q, particle, turned, psi, layer, last)
        )
        crossing = np.ones(len(psi), dtype=bool)
        if in_field_steps:
            bend, tilt, limit = step.bending[going], tilt[going], limit[going]  # bend is step.bending here
            crossing = psi <= limit  # the others stop on their way, crossing nothing: a piece of a long step
            psi = np.minimum(psi, limit)
        position, mom = move_along_helix(position, mom, q, bend, psi)
        if in_field_steps:
            mom = turn_polar(mom, 0.5 * psi * tilt)
        turned = turned + psi
        at = np.flatnonzero(crossing)
        crossed = layer[at]
        surface = layers.surface_index[crossed]
        sensitive = surface >= 0
        records.append((particle[at][sensitive], surface[sensitive], position[at][sensitive], mom[at][sensitive]))
        if multiple_scattering or energy_loss:
            path_x0 = layers.x_over_x0[crossed] / _cos_incidence(position[at], mom[at], crossed < n_cylinders)
        if multiple_scattering:
            p = np.linalg.norm(mom[at], axis=1)
            mom[at] = scatter(mom[at], highland_theta0(p, p / np.hypot(p, mass_gev), path_x0, 1.0), rng)
        if energy_loss:
            mom[at] = slowed(mom[at], mass_gev, path_x0)
        last = np.where(crossing, layer, last)

    if not records:
        return Crossings(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3)))
    return Crossings(*(np.concatenate(column) for column in zip(*records, strict=True)))


def varies(field: MagneticField | None) -> TypeGuard[MagneticField]:
    """Whether ``field`` needs the midpoint steps of :func:`midpoint_step` (a non-uniform field)."""
    return field is not None and not field.uniform


def uniform_bending(field: MagneticField | None, bfield_t: float) -> float:
    """The field (tesla) of a uniform ``field``: its centre field, or ``bfield_t`` when it is None."""
    return bfield_t if field is None else field.centre_t


@attrs.frozen
class MidpointStep:
    """One step of N particles in a non-uniform field (:func:`midpoint_step`): the ``bending`` field [N] its
    helix turns in, the ``momentum`` [N, 3] it starts with (the polar direction turned half-way), ``tilt`` [N],
    the change of ``T_z`` per radian turned (:func:`turn_polar` puts it into the momentum on arrival), and
    ``max_path`` [N], how far (mm) the step may go before the particle stops for a new step (inf: up to the next
    surface)."""

    bending: np.ndarray
    momentum: np.ndarray
    tilt: np.ndarray
    max_path: np.ndarray

    def turn_limit(self, q: np.ndarray) -> np.ndarray:
        """The turning angle [N] of ``max_path`` along this step's helix, for charges ``q`` [N]."""
        p = np.linalg.norm(self.momentum, axis=1)
        return self.max_path * HELIX_CONSTANT * np.abs(self.bending * q) / p


def midpoint_step(
    field: MagneticField, position: np.ndarray, mom: np.ndarray, q: np.ndarray, ahead, stepping: Stepping = ONE_STEP
) -> MidpointStep:
    """The step of particles at ``position`` with momentum ``mom`` and charge ``q`` to the next surface, by the
    midpoint rule: ``ahead(bending)`` gives the turning angle [N] (inf: none) to that surface in a field [N]; a
    first helix in the start's field finds the step's end, and the step is a helix in the mean of the fields at
    its start and end (:mod:`tracking_algs.magnetic_field`), from the start with the polar direction turned by
    half the step's turn of ``T_z``.  Where that step would miss the Lorentz force by more than ``stepping``
    allows, only the first of its equal pieces is taken (``max_path``)."""
    unit = mom / np.linalg.norm(mom, axis=1, keepdims=True)
    start, start_lift = field.turning_t(position, unit)
    psi = ahead(start)
    reached = np.isfinite(psi)
    turn = np.where(reached, psi, 0.0)
    # c·(q/p)·path = ψ·sign(q)/|B| for a turn ψ: T_z changes by ψ·sign(q)·lift/|B|
    per_turn = np.sign(q) / np.maximum(np.abs(start), 1e-9)
    end_bending, end_lift = _end_field(field, position, mom, q, start, start_lift, turn, per_turn)
    max_path = np.full(len(position), np.inf)
    if stepping.max_pieces > 1:
        p = np.linalg.norm(mom, axis=1)
        path = turn * p / (HELIX_CONSTANT * np.maximum(np.abs(start * q), 1e-9))
        pieces = stepping.pieces(step_miss(q / p, path, start, start_lift, end_bending, end_lift))
        cut = np.flatnonzero(pieces > 1)
        if len(cut):
            turn[cut] /= pieces[cut]
            max_path[cut] = path[cut] / pieces[cut]
            end_bending[cut], end_lift[cut] = _end_field(field, position[cut], mom[cut], q[cut], start[cut],
                                                         start_lift[cut], turn[cut], per_turn[cut])  # fmt: skip
    bending = np.where(reached, 0.5 * (start + end_bending), start)
    lift = np.where(reached, 0.5 * (start_lift + end_lift), 0.0)
    tilt = np.sign(q) * lift / np.maximum(np.abs(bending), 1e-9)
    return MidpointStep(bending, turn_polar(mom, 0.5 * turn * tilt), tilt, max_path)


def _end_field(field, position, mom, q, start, start_lift, turn, per_turn) -> tuple[np.ndarray, np.ndarray]:
    """The bending field and ``(T × B)_z`` [N] where the helix in the start's field ``start`` ends after ``turn``."""
    end, end_mom = move_along_helix(position, mom, q, start, turn)
    end_mom = turn_polar(end_mom, turn * per_turn * start_lift)
    return field.turning_t(end, end_mom / np.linalg.norm(end_mom, axis=1, keepdims=True))


def turn_polar(mom: np.ndarray, change: np.ndarray) -> np.ndarray:
    """Momenta [N, 3] with the z component of their direction changed by ``change`` [N] (the magnitude and the
    transverse direction kept)."""
    p = np.linalg.norm(mom, axis=1, keepdims=True)
    unit = mom / p
    return p * with_polar_component(unit, unit[:, 2] + change)


def _next_turn(position, mom, q, bfield_t, *, layers, last, budget) -> np.ndarray:
    """The turning angle [N] of :func:`_next_crossing`."""
    return _next_crossing(position, mom, q, bfield_t, layers, last, budget)[0]


def helix_parameters(position: np.ndarray, mom: np.ndarray, q: np.ndarray, bfield_t: float | np.ndarray):
    """(pT, radius, φ of the momentum, turning sign) of helices at ``position`` with momentum ``mom`` and charge
    ``q`` in a field of ``bfield_t`` along z (one, or one per helix)."""
    pt = np.hypot(mom[:, 0], mom[:, 1])
    radius = pt / (HELIX_CONSTANT * np.abs(bfield_t) * np.abs(q))
    phi0 = np.arctan2(mom[:, 1], mom[:, 0])
    omega = -np.sign(q * bfield_t)  # +1: counter-clockwise seen from +z
    return pt, radius, phi0, omega


def chord(position, radius, phi0, omega, psi):
    """Transverse position after turning by psi: x0 + 2R sin(psi/2) · (cos, sin)(phi0 + omega psi/2)."""
    length = 2.0 * radius * np.sin(0.5 * psi)
    angle = phi0 + omega * 0.5 * psi
    return position[..., 0] + length * np.cos(angle), position[..., 1] + length * np.sin(angle)


@attrs.frozen
class HelixFrame:
    """Helices (one per row) in the frame of their starting point: pT, radius, φ of the momentum, turning sign,
    the start's coordinates along and across the momentum, its z and dz per turning angle."""

    pt: np.ndarray
    radius: np.ndarray
    phi0: np.ndarray
    omega: np.ndarray
    along: np.ndarray
    across: np.ndarray
    rho2: np.ndarray
    z: np.ndarray
    dz_dpsi: np.ndarray

    @classmethod
    def of(cls, position: np.ndarray, mom: np.ndarray, q: np.ndarray, bfield_t: float) -> HelixFrame:
        """The frame of helices starting at ``position`` with momentum ``mom`` and charge ``q``."""
        pt, radius, phi0, omega = helix_parameters(position, mom, q, bfield_t)
        x, y, z = position.T
        cos0, sin0 = np.cos(phi0), np.sin(phi0)
        return cls(pt, radius, phi0, omega, x * cos0 + y * sin0, -x * sin0 + y * cos0, x * x + y * y, z,
                   radius * mom[:, 2] / pt)  # fmt: skip

    def cylinder_crossings(self, cylinder_radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Turning angles [2, n, C] in [0, 2π) at which each helix meets each cylinder about z (NaN where it does
        not), and D = r_cylinder² − r_start² [n, C] (> 0: the helix starts inside).  With u = tan(ψ/2):
        (2k − D) u² + 4Ra u − D = 0, k = 2R(R + ω·across).  Call under ``np.errstate`` ignoring division."""
        d = cylinder_radius[None, :] ** 2 - self.rho2[:, None]
        a2 = (4.0 * self.radius * (self.radius + self.omega * self.across))[:, None] - d
        b2 = (4.0 * self.radius * self.along)[:, None]
        disc = b2 * b2 + 4.0 * a2 * d
        root = np.sqrt(np.where(disc >= 0.0, disc, np.nan))
        qq = -0.5 * (b2 + np.copysign(root, b2))
        roots = np.stack((qq / a2, -d / qq))
        return np.mod(2.0 * np.arctan(roots), _TWO_PI), d


def _next_crossing(position, mom, q, bfield_t, layers: _Layers, last, budget):
    """Turning angle to the nearest layer ahead (inf if none within ``budget``) and that layer's index."""
    frame = HelixFrame.of(position, mom, q, bfield_t)
    radius, phi0, omega, z, dz_dpsi = frame.radius, frame.phi0, frame.omega, frame.z, frame.dz_dpsi

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        psi_cyl, _ = frame.cylinder_crossings(layers.cylinder_radius)
        z_cyl = z[:, None] + psi_cyl * dz_dpsi[:, None]
        ok = (psi_cyl > 0.0) & (z_cyl >= layers.cylinder_z_range[:, 0]) & (z_cyl <= layers.cylinder_z_range[:, 1])
        same = (last[:, None] == np.arange(len(layers.cylinder_radius)))[None]
        ok &= ~same | ((psi_cyl > _RECROSS_TOLERANCE) & (psi_cyl < _TWO_PI - _RECROSS_TOLERANCE))
        psi_cyl = np.where(ok, psi_cyl, np.inf).min(axis=0)

        # disks: z is linear in psi
        psi_disk = (layers.disk_z[None, :] - z[:, None]) / dz_dpsi[:, None]
        ok = np.isfinite(psi_disk) & (psi_disk > 0.0) & (psi_disk <= budget[:, None])
        ok &= last[:, None] != len(layers.cylinder_radius) + np.arange(len(layers.disk_z))
        row, disk = np.nonzero(ok)  # only the reachable (particle, disk) pairs need a position
        xd, yd = chord(position[row], radius[row], phi0[row], omega[row], psi_disk[row, disk])
        rd = np.hypot(xd, yd)
        ok[row, disk] = (rd >= layers.disk_r_range[disk, 0]) & (rd <= layers.disk_r_range[disk, 1])
        psi_disk = np.where(ok, psi_disk, np.inf)

    candidates = np.concatenate((psi_cyl, psi_disk), axis=1)
    layer = np.argmin(candidates, axis=1)
    psi = candidates[np.arange(len(layer)), layer]
    psi[psi > budget] = np.inf
    return psi, layer


def move_along_helix(position, mom, q, bfield_t, psi):
    """Position and momentum after turning by ``psi`` along the helices."""
    pt, radius, phi0, omega = helix_parameters(position, mom, q, bfield_t)
    x, y = chord(position, radius, phi0, omega, psi)
    z = position[:, 2] + psi * radius * mom[:, 2] / pt
    phi = phi0 + omega * psi
    return np.column_stack((x, y, z)), np.column_stack((pt * np.cos(phi), pt * np.sin(phi), mom[:, 2]))


def _cos_incidence(position: np.ndarray, mom: np.ndarray, on_cylinder: np.ndarray) -> np.ndarray:
    """|cos| of the angle between ``mom`` and the normal of the cylinder (``on_cylinder``) or disk crossed at
    ``position``, floored at ``_MIN_COS_INCIDENCE``."""
    p = np.linalg.norm(mom, axis=1)
    r = np.hypot(position[:, 0], position[:, 1])
    cos_cylinder = (position[:, 0] * mom[:, 0] + position[:, 1] * mom[:, 1]) / (r * p)
    cos_incidence = np.abs(np.where(on_cylinder, cos_cylinder, mom[:, 2] / p))
    return np.maximum(cos_incidence, _MIN_COS_INCIDENCE)
