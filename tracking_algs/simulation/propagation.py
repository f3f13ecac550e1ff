"""Helix propagation in a uniform solenoid field from surface to surface, vectorised over particles.

Every step finds, for all particles still going, the nearest crossing ahead with each barrel cylinder
(a quadratic in tan(psi/2), psi being the turning angle) and each endcap disk (z is linear in psi), moves
them there, records sensitive crossings and applies multiple scattering.  A particle stops when nothing
is ahead or after ``max_turns`` full turns (half a turn by default: loopers stop on their way back).
"""

from __future__ import annotations

import attrs
import numpy as np

from tracking_algs.geometry import HELIX_CONSTANT, Detector
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
    mass_gev: float = 0.13957,
) -> Crossings:
    """Propagate particles (vertex [N, 3] mm, momentum [N, 3] GeV, charge [N] ±1) through ``detector``."""
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

    for _ in range(_MAX_STEPS):
        if not len(particle):
            break
        psi, layer = _next_crossing(position, mom, q, detector.bfield_t, layers, last, budget - turned)
        going = np.isfinite(psi)
        position, mom, q, particle, turned, psi, layer = (
            a[going] for a in (position, mom, q, particle, turned, psi, layer)
        )
        position, mom = move_along_helix(position, mom, q, detector.bfield_t, psi)
        surface = layers.surface_index[layer]
        sensitive = surface >= 0
        records.append((particle[sensitive], surface[sensitive], position[sensitive], mom[sensitive]))
        if multiple_scattering:
            mom = _scatter_at(position, mom, layer, n_cylinders, layers.x_over_x0, mass_gev, rng)
        turned = turned + psi
        last = layer

    if not records:
        return Crossings(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros((0, 3)))
    return Crossings(*(np.concatenate(column) for column in zip(*records, strict=True)))


def helix_parameters(position: np.ndarray, mom: np.ndarray, q: np.ndarray, bfield_t: float):
    """(pT, radius, φ of the momentum, turning sign) of helices at ``position`` with momentum ``mom`` and charge
    ``q`` in a field of ``bfield_t`` along z."""
    pt = np.hypot(mom[:, 0], mom[:, 1])
    radius = pt / (HELIX_CONSTANT * abs(bfield_t) * np.abs(q))
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


def _scatter_at(position, mom, layer, n_cylinders, x_over_x0, mass_gev, rng):
    p = np.linalg.norm(mom, axis=1)
    on_cylinder = layer < n_cylinders
    r = np.hypot(position[:, 0], position[:, 1])
    cos_cylinder = (position[:, 0] * mom[:, 0] + position[:, 1] * mom[:, 1]) / (r * p)
    cos_incidence = np.abs(np.where(on_cylinder, cos_cylinder, mom[:, 2] / p))
    cos_incidence = np.maximum(cos_incidence, _MIN_COS_INCIDENCE)
    beta = p / np.hypot(p, mass_gev)
    theta0 = highland_theta0(p, beta, x_over_x0[layer], cos_incidence)
    return scatter(mom, theta0, rng)
