"""Helix propagation of bound track parameters in a solenoid field along z, with analytic Jacobians.

Every function works on N tracks at once; each track may go between surfaces of a different kind.

**Free parameters** (7): position ``x, y, z`` (mm), unit direction ``tx, ty, tz`` and ``q/p`` (e/GeV).

**Bound parameters** (5) on a surface, ``(l0, l1, phi, theta, q/p)`` with ``phi, theta`` the direction:

=============  ==============================  =====================================================
kind           surface                         local coordinates ``(l0, l1)``
=============  ==============================  =====================================================
``CYLINDER``   radius ``position`` about z     ``(Phi, z)``, Phi = atan2(y, x) the position azimuth
``DISK``       the plane z = ``position``      ``(Phi, r)``
``PERIGEE``    the z axis (``position`` unused) ``(d0, z0)``, the point of closest approach (PCA)
``PLANE``      a flat module, given by ``plane``  ``(u, v)``, the position along the module's local axes
=============  ==============================  =====================================================

A plane is described by an array ``plane`` [N, 4, 3]: its centre and its local u, v and w (normal) axes, unit
vectors in global coordinates (the rows of :data:`PLANE_CENTRE` … :data:`PLANE_W`); ``position`` is unused
there, and ``plane`` is unused (and may be None) for the other kinds.

``d0`` is signed as in ACTS/ATLAS: the PCA is ``(-d0 sin phi, d0 cos phi, z0)``.

Motion: with ``k = c·B·(q/p)`` (c = :data:`~tracking_algs.geometry.HELIX_CONSTANT`) the direction turns as
``dT/ds = k (T × ẑ)``, so after a path ``s`` the transverse direction has turned by ``u = k·s`` (clockwise for
k > 0).  The transport Jacobian is the exact derivative of that closed form; the bound-to-bound Jacobian is
``J = ∂bound/∂free · (1 − (dF/ds) ⊗ ∇g / (∇g · dF/ds)) · D · ∂free/∂bound``, the middle factor moving the end
point back onto the target surface ``g = 0`` (ACTS's path correction).

The field ``B`` may be a number (tesla, uniform), an array [N] (one per track) or a
:class:`~tracking_algs.magnetic_field.MagneticField`.  In a non-uniform field :func:`propagate` takes each step
as a helix in the mean of the bending fields at its two ends (the end found by a first helix in the start's
field), and a long step through a changing field in several such pieces; the Jacobian is the single step's
helix's, the field's own variation with the track state left out (as in ACTS's steppers).
"""

from __future__ import annotations

from enum import IntEnum
from typing import TypeGuard

import attrs
import numpy as np

from tracking_algs.fitting.stacked import matmul
from tracking_algs.geometry import HELIX_CONSTANT
from tracking_algs.magnetic_field import ONE_STEP, MagneticField, Stepping, step_miss, with_polar_component
from tracking_algs.ranges import ranks_within

#: below this |turning angle| the helix functions use their Taylor series (relative error < 1e-13)
_SERIES_LIMIT = 1e-2
#: transverse direction components below this count as a track along the z axis (no transverse motion)
_MIN_SIN_THETA = 1e-9


class SurfaceKind(IntEnum):
    """The kinds of surface a bound state lives on (see the module docstring for the local coordinates)."""

    CYLINDER = 0
    DISK = 1
    PERIGEE = 2
    PLANE = 3


#: rows of a ``plane`` array [N, 4, 3]: its centre, then its local u, v and w axes
PLANE_CENTRE, PLANE_U, PLANE_V, PLANE_W = 0, 1, 2, 3


#: the kinds as plain ints for the array comparisons of the hot paths (each attribute access on the enum class
#: runs a Python-level lookup, a cost that shows in the fitter's many small calls)
_CYLINDER, _DISK, _PERIGEE, _PLANE = (int(kind) for kind in SurfaceKind)
#: Newton steps of the helix-plane intersection (from the straight-line crossing; quadratic convergence)
_PLANE_NEWTON_STEPS = 4
#: a plane crossing is accepted when the end point lies this close (mm) to the plane before Newton's last step
_PLANE_TOLERANCE_MM = 1e-6
#: how much longer than a helix's diameter the transverse chord between two of its points may be in
#: :func:`spans_chord`: the chord is at most the diameter in a uniform field; the margin covers a weaker field
#: between the points than at them
CHORD_MARGIN = 1.5


def no_planes(n: int) -> np.ndarray:
    """A ``plane`` array [n, 4, 3] for states on no plane (all zero)."""
    return np.zeros((n, 4, 3))


def _planes(plane: np.ndarray | None, n: int) -> np.ndarray:
    return no_planes(n) if plane is None else plane


def _per_track(bfield_t: float | np.ndarray) -> TypeGuard[np.ndarray]:
    """Whether ``bfield_t`` is one field per track (an array [N]) rather than one for all."""
    return np.ndim(bfield_t) != 0


@attrs.frozen
class Propagation:
    """The result of :func:`propagate` for N tracks: bound parameters [N, 5] on the target surface, the
    Jacobian [N, 5, 5] d(target)/d(start), the signed path length [N] (mm) and ``ok`` [N] (False where the
    helix misses the target surface; the other outputs are then meaningless but finite)."""

    params: np.ndarray
    jacobian: np.ndarray
    path: np.ndarray
    ok: np.ndarray


def columns(table: np.ndarray) -> np.ndarray:
    """The columns of ``table`` [N, k] as the rows of a contiguous [k, N] array: elementwise arithmetic on
    contiguous rows runs about twice as fast as on the strided column views of ``table.T``."""
    return np.ascontiguousarray(table.T)


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """``angle`` mapped into [-pi, pi)."""
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def angular_components(kind: np.ndarray) -> np.ndarray:
    """Boolean mask [N, 5] of the bound components that are angles (differences must be wrapped)."""
    mask = np.zeros((len(kind), 5), dtype=bool)
    mask[:, 0] = (kind != _PERIGEE) & (kind != _PLANE)
    mask[:, 2] = True
    return mask


def bound_to_free(
    params: np.ndarray, kind: np.ndarray, position: np.ndarray, plane: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Free parameters [N, 7] of bound ``params`` [N, 5] on surfaces ``kind``/``position`` [N] (``plane``
    [N, 4, 3] for planes), and the Jacobian d(free)/d(bound) [N, 7, 5]."""
    l0, l1, phi, theta, qop = columns(params)
    cos_phi, sin_phi = np.cos(phi), np.sin(phi)
    cos_theta, sin_theta = np.cos(theta), np.sin(theta)
    cylinder = kind == _CYLINDER
    disk = kind == _DISK
    perigee = kind == _PERIGEE
    cos_l0, sin_l0 = np.cos(l0), np.sin(l0)
    radius = np.where(cylinder, position, l1)  # r of the point on cylinders and disks
    x = np.where(perigee, -l0 * sin_phi, radius * cos_l0)
    y = np.where(perigee, l0 * cos_phi, radius * sin_l0)
    z = np.where(disk, position, l1)
    on_plane = kind == _PLANE
    if on_plane.any():
        planes = _planes(plane, len(params))
        point = planes[:, PLANE_CENTRE] + l0[:, None] * planes[:, PLANE_U] + l1[:, None] * planes[:, PLANE_V]
        x, y, z = (np.where(on_plane, point[:, axis], coordinate) for axis, coordinate in enumerate((x, y, z)))
    free = np.column_stack((x, y, z, sin_theta * cos_phi, sin_theta * sin_phi, cos_theta, qop))

    jac = np.zeros((len(params), 7, 5))
    jac[:, 0, 0] = np.where(perigee, -sin_phi, -y)
    jac[:, 1, 0] = np.where(perigee, cos_phi, x)
    jac[:, 0, 1] = np.where(disk, cos_l0, 0.0)
    jac[:, 1, 1] = np.where(disk, sin_l0, 0.0)
    jac[:, 2, 1] = np.where(disk, 0.0, 1.0)
    jac[:, 0, 2] = np.where(perigee, -y, 0.0)
    jac[:, 1, 2] = np.where(perigee, x, 0.0)
    jac[:, 3, 2] = -sin_theta * sin_phi
    jac[:, 4, 2] = sin_theta * cos_phi
    jac[:, 3, 3] = cos_theta * cos_phi
    jac[:, 4, 3] = cos_theta * sin_phi
    jac[:, 5, 3] = -sin_theta
    jac[:, 6, 4] = 1.0
    if on_plane.any():
        jac[on_plane, :3, 0] = planes[on_plane, PLANE_U]
        jac[on_plane, :3, 1] = planes[on_plane, PLANE_V]
    return free, jac


def free_to_bound(free: np.ndarray, kind: np.ndarray, plane: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bound parameters [N, 5] of free parameters [N, 7] that lie on surfaces of ``kind`` [N] (``plane``
    [N, 4, 3] for planes), and the Jacobian d(bound)/d(free) [N, 5, 7]."""
    x, y, z, tx, ty, tz, qop = columns(free)
    disk = kind == _DISK
    perigee = kind == _PERIGEE
    r2 = x * x + y * y
    r = np.sqrt(r2)
    st2 = tx * tx + ty * ty
    st = np.sqrt(st2)
    t2 = st2 + tz * tz
    phi = np.arctan2(ty, tx)
    transverse = st > 0.0
    safe_st = np.where(transverse, st, 1.0)
    cos_phi, sin_phi = np.where(transverse, tx / safe_st, 1.0), ty / safe_st  # cos and sin of phi
    d0 = -x * sin_phi + y * cos_phi
    position_phi = np.arctan2(y, x)
    params = np.column_stack((np.where(perigee, d0, position_phi), np.where(disk, r, z), phi, np.arctan2(st, tz), qop))

    safe_r2 = np.where(r2 > 0.0, r2, 1.0)
    safe_st2 = np.where(st2 > 0.0, st2, 1.0)
    dphi_dtx = -ty / safe_st2
    dphi_dty = tx / safe_st2
    dd0_dphi = -x * cos_phi - y * sin_phi
    jac = np.zeros((len(free), 5, 7))
    jac[:, 0, 0] = np.where(perigee, -sin_phi, -y / safe_r2)
    jac[:, 0, 1] = np.where(perigee, cos_phi, x / safe_r2)
    jac[:, 0, 3] = np.where(perigee, dd0_dphi * dphi_dtx, 0.0)
    jac[:, 0, 4] = np.where(perigee, dd0_dphi * dphi_dty, 0.0)
    safe_r = np.where(r > 0.0, r, 1.0)
    jac[:, 1, 0] = np.where(disk, x / safe_r, 0.0)
    jac[:, 1, 1] = np.where(disk, y / safe_r, 0.0)
    jac[:, 1, 2] = np.where(disk, 0.0, 1.0)
    jac[:, 2, 3] = dphi_dtx
    jac[:, 2, 4] = dphi_dty
    jac[:, 3, 3] = tx * tz / (safe_st * t2)
    jac[:, 3, 4] = ty * tz / (safe_st * t2)
    jac[:, 3, 5] = -st / t2
    jac[:, 4, 6] = 1.0
    on_plane = kind == _PLANE
    if on_plane.any():
        plane = _planes(plane, len(free))[on_plane]
        offset = free[on_plane, :3] - plane[:, PLANE_CENTRE]
        params[on_plane, 0] = np.einsum("ni,ni->n", offset, plane[:, PLANE_U])
        params[on_plane, 1] = np.einsum("ni,ni->n", offset, plane[:, PLANE_V])
        jac[on_plane, :2, :3] = plane[:, PLANE_U : PLANE_V + 1]
    return params, jac


def path_to_surface(
    free: np.ndarray,
    kind: np.ndarray,
    position: np.ndarray,
    bfield_t: float | np.ndarray,
    direction: int | np.ndarray = 0,
    plane: np.ndarray | None = None,
    rough: bool = False,
):
    """Signed path length [N] (mm) from free states [N, 7] to the nearest crossing (smallest |s|, within half a
    turn) with the target surfaces (``plane`` [N, 4, 3] for planes), and ``ok`` [N] (False where the helix does
    not reach the surface).

    ``direction`` +1 (or -1) accepts only crossings ahead of (behind) the start; 0 accepts both; an array [N]
    gives each track its own.  ``rough``: one Newton step to a plane, its end point within a few µm of it (what
    a field look-up needs)."""
    on_plane = kind == _PLANE
    if on_plane.all():  # modules only (the fitter's hit steps): none of the other kinds' arithmetic
        path, ok = _path_to_plane(free, _planes(plane, len(free)), bfield_t, rough)
        ok &= direction * path >= 0.0
        return np.where(ok, path, 0.0), ok
    x, y, z, tx, ty, tz, qop = columns(free)
    st = np.hypot(tx, ty)
    moving = st > _MIN_SIN_THETA
    safe_st = np.where(moving, st, 1.0)
    kappa = HELIX_CONSTANT * bfield_t * qop / safe_st  # signed transverse curvature, 1/mm
    ux, uy = tx / safe_st, ty / safe_st
    along = x * ux + y * uy  # p0 · t
    across = x * uy - y * ux  # p0 · n, n = (sin phi, -cos phi) points to the circle centre for kappa > 0
    curved = kappa != 0.0
    safe_kappa = np.where(curved, kappa, 1.0)

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # cylinder: with tan(u/2) = kappa·sigma/2:  A sigma² + 2 a sigma − D = 0
        d = position * position - x * x - y * y
        a_coef = 1.0 + across * kappa - 0.25 * d * kappa * kappa
        disc = along * along + a_coef * d
        q = -(along + np.copysign(np.sqrt(np.maximum(disc, 0.0)), along))
        roots = np.stack((q / a_coef, -d / q))
        roots = np.where(np.isfinite(roots) & (direction * roots >= 0.0), roots, np.inf)
        sigma = roots[np.argmin(np.abs(roots), axis=0), np.arange(len(free))]
        turn = 2.0 * np.arctan(0.5 * kappa * sigma)
        s_cylinder = np.where(curved, turn / safe_kappa, sigma)
        ok_cylinder = moving & (disc >= 0.0) & np.isfinite(sigma)

        # disk: z is linear in s
        s_disk = (position - z) / np.where(tz != 0.0, tz, 1.0)
        ok_disk = tz != 0.0

        # perigee: the transverse PCA to the origin
        turn = np.arctan2(-along * kappa, 1.0 + across * kappa)
        s_perigee = np.where(curved, turn / safe_kappa, -along)

    cylinder = kind == _CYLINDER
    disk = kind == _DISK
    s_transverse = np.where(cylinder, s_cylinder, s_perigee)
    path = np.where(disk, s_disk, s_transverse / safe_st)
    ok = np.where(disk, ok_disk, np.where(cylinder, ok_cylinder, moving))
    if on_plane.any():
        plane_field = bfield_t[on_plane] if _per_track(bfield_t) else bfield_t
        plane_path, plane_ok = _path_to_plane(free[on_plane], _planes(plane, len(free))[on_plane], plane_field, rough)
        path[on_plane], ok[on_plane] = plane_path, plane_ok
    ok &= np.isfinite(path)
    ok &= direction * path >= 0.0
    return np.where(ok, path, 0.0), ok


def _path_to_plane(
    free: np.ndarray, plane: np.ndarray, bfield_t: float | np.ndarray, rough: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Path [N] from free states [N, 7] to the planes [N, 4, 3] along their helices, and ``ok`` [N]: Newton's
    method on the distance to the plane, from the straight-line crossing (for the few-degree turns between
    neighbouring modules it converges to machine precision in two or three steps).  A track stops once its end
    point lies within :data:`_PLANE_TOLERANCE_MM` of its plane, after one more step (Newton converges
    quadratically: from there the step lands far closer still); the others go on, at most
    :data:`_PLANE_NEWTON_STEPS` steps.  ``rough``: one step, and every finite path counts."""
    normal = plane[:, PLANE_W]
    centre = plane[:, PLANE_CENTRE]
    gap = np.einsum("ni,ni->n", centre - free[:, :3], normal)
    distance = np.full(len(free), np.inf)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        path = gap / np.einsum("ni,ni->n", free[:, 3:6], normal)
        path = np.where(np.isfinite(path), path, 0.0)
        active = np.arange(len(free))
        for _ in range(1 if rough else _PLANE_NEWTON_STEPS):
            field = bfield_t[active] if _per_track(bfield_t) else bfield_t
            end, _ = transport(free[active], path[active], field, jacobian=False)
            gone = np.einsum("ni,ni->n", end[:, :3] - centre[active], normal[active])
            path[active] -= gone / np.einsum("ni,ni->n", end[:, 3:6], normal[active])
            distance[active] = gone
            active = active[~(np.abs(gone) < _PLANE_TOLERANCE_MM)]  # NaN (no crossing) stays: it fails below
            if not len(active):
                break
    return path, np.isfinite(path) & (rough | (np.abs(distance) < _PLANE_TOLERANCE_MM))


def _helix_functions(u: np.ndarray) -> tuple[np.ndarray, ...]:
    """sin(u), cos(u), sin(u)/u and (1 − cos u)/u, with Taylor series near u = 0."""
    sin_u, cos_u = np.sin(u), np.cos(u)
    small = np.abs(u) < _SERIES_LIMIT
    safe = np.where(small, 1.0, u)
    u2 = u * u
    f1 = np.where(small, 1.0 - u2 / 6.0 + u2 * u2 / 120.0, sin_u / safe)
    f2 = np.where(small, u * (0.5 - u2 / 24.0 + u2 * u2 / 720.0), (1.0 - cos_u) / safe)
    return sin_u, cos_u, f1, f2


def _helix_derivatives(u: np.ndarray, sin_u: np.ndarray, cos_u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The derivatives in u of sin(u)/u and (1 − cos u)/u (:func:`_helix_functions`), for the transport Jacobian."""
    small = np.abs(u) < _SERIES_LIMIT
    safe = np.where(small, 1.0, u)
    u2 = u * u
    f1p = np.where(small, u * (-1.0 / 3.0 + u2 / 30.0 - u2 * u2 / 840.0), (safe * cos_u - sin_u) / (safe * safe))
    f2p = np.where(small, 0.5 - u2 / 8.0 + u2 * u2 / 144.0, (safe * sin_u - (1.0 - cos_u)) / (safe * safe))
    return f1p, f2p


def transport(
    free: np.ndarray, path: np.ndarray, bfield_t: float | np.ndarray, jacobian: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Free states [N, 7] moved by ``path`` [N] (mm, signed) along their helices, and the transport
    Jacobian d(end)/d(start) [N, 7, 7] at fixed path length (None without ``jacobian``); ``bfield_t`` is one
    field or one per track [N]."""
    x, y, z, tx, ty, tz, qop = columns(free)
    g = HELIX_CONSTANT * bfield_t
    u = g * qop * path
    sin_u, cos_u, f1, f2 = _helix_functions(u)
    big_s, big_c = path * f1, path * f2  # sin(u)/k and (1 − cos u)/k
    tx1 = tx * cos_u + ty * sin_u
    ty1 = -tx * sin_u + ty * cos_u
    end = np.empty((len(free), 7))
    end[:, 0] = x + tx * big_s + ty * big_c
    end[:, 1] = y - tx * big_c + ty * big_s
    end[:, 2] = z + tz * path
    end[:, 3], end[:, 4], end[:, 5], end[:, 6] = tx1, ty1, tz, qop
    if not jacobian:
        return end, None
    f1p, f2p = _helix_derivatives(u, sin_u, cos_u)
    jac = np.zeros((len(free), 7, 7))
    jac[:, [0, 1, 2, 5, 6], [0, 1, 2, 5, 6]] = 1.0
    jac[:, 0, 3], jac[:, 0, 4] = big_s, big_c
    jac[:, 1, 3], jac[:, 1, 4] = -big_c, big_s
    jac[:, 2, 5] = path
    jac[:, 3, 3], jac[:, 3, 4] = cos_u, sin_u
    jac[:, 4, 3], jac[:, 4, 4] = -sin_u, cos_u
    s2g = g * path * path
    jac[:, 0, 6] = s2g * (tx * f1p + ty * f2p)
    jac[:, 1, 6] = s2g * (-tx * f2p + ty * f1p)
    jac[:, 3, 6] = g * path * ty1
    jac[:, 4, 6] = -g * path * tx1
    return end, jac


def _surface_gradient(free: np.ndarray, kind: np.ndarray, plane: np.ndarray | None) -> np.ndarray:
    """Gradient [N, 7] of the target surface's constraint g(free) = 0 (any scale)."""
    x, y, _, tx, ty, _, _ = columns(free)
    grad = np.zeros_like(free)
    cylinder = kind == _CYLINDER
    perigee = kind == _PERIGEE
    grad[:, 0] = np.where(cylinder, x, np.where(perigee, tx, 0.0))
    grad[:, 1] = np.where(cylinder, y, np.where(perigee, ty, 0.0))
    grad[:, 2] = (kind == _DISK).astype(np.float64)
    grad[:, 3] = np.where(perigee, x, 0.0)
    grad[:, 4] = np.where(perigee, y, 0.0)
    on_plane = kind == _PLANE
    if on_plane.any():
        grad[on_plane, :3] = _planes(plane, len(free))[on_plane, PLANE_W]
    return grad


def _with_polar_direction(free: np.ndarray, tz: np.ndarray) -> np.ndarray:
    """Free states [N, 7] with their direction's z component set to ``tz`` [N] (the transverse direction
    kept)."""
    moved = free.copy()
    moved[:, 3:6] = with_polar_component(free[:, 3:6], tz)
    return moved


@attrs.frozen
class _MidpointField:
    """The field of one midpoint step (:func:`_field_step`) for N tracks: the ``start`` [N, 7] to take the helix
    from (``T_z`` turned half-way), the bending field and ``(T × B)_z`` [N] at the step's start
    (``start_bending``, ``start_lift``) and at its end found by the helix in the start's field (``end_bending``,
    ``end_lift``), that helix's path to the surface (``rough_path`` [N], mm) and ``miss`` [N], the estimated
    distance (mm) by which the step's end misses the path of the Lorentz force
    (:func:`~tracking_algs.magnetic_field.step_miss`).  The step is a helix in the mean ``bending`` field; the
    end's ``T_z`` is the start's plus ``c·(q/p)·path·lift``, ``lift`` the mean ``(T × B)_z``."""

    start: np.ndarray
    start_bending: np.ndarray
    start_lift: np.ndarray
    end_bending: np.ndarray
    end_lift: np.ndarray
    rough_path: np.ndarray
    miss: np.ndarray
    ok: np.ndarray

    @property
    def bending(self) -> np.ndarray:
        """The mean bending field of the step [N] (the start's where the helix misses the surface)."""
        return np.where(self.ok, 0.5 * (self.start_bending + self.end_bending), self.start_bending)

    @property
    def lift(self) -> np.ndarray:
        """The mean ``(T × B)_z`` of the step [N] (0 where the helix misses the surface)."""
        return np.where(self.ok, 0.5 * (self.start_lift + self.end_lift), 0.0)

    def take(self, rows: np.ndarray) -> _MidpointField:
        """The steps of tracks ``rows``."""
        return _MidpointField(*(getattr(self, name)[rows] for name in attrs.fields_dict(_MidpointField)))


def _field_step(
    free: np.ndarray,
    kind_to: np.ndarray,
    position_to: np.ndarray,
    field: MagneticField,
    direction: int | np.ndarray,
    plane_to: np.ndarray | None,
) -> _MidpointField:
    """One step in a non-uniform field, by the midpoint rule: a first helix in the start's field finds the
    step's end; the step is then taken as a helix in the mean bending field of start and end, from the start with
    ``T_z`` turned half-way (so that z follows the mean polar direction)."""
    position, heading = free[:, :3], free[:, 3:6]
    start, start_lift = field.turning_t(position, heading)
    path, ok = path_to_surface(free, kind_to, position_to, start, direction, plane_to, rough=True)
    end, _ = transport(free, path, start, jacobian=False)
    end = _with_polar_direction(end, free[:, 5] + HELIX_CONSTANT * free[:, 6] * path * start_lift)
    end_bending, end_lift = field.turning_t(end[:, :3], end[:, 3:6])
    lift = np.where(ok, 0.5 * (start_lift + end_lift), 0.0)
    middle = _with_polar_direction(free, free[:, 5] + 0.5 * HELIX_CONSTANT * free[:, 6] * path * lift)
    return _MidpointField(middle, start, start_lift, end_bending, end_lift, path,
                          step_miss(free[:, 6], path, start, start_lift, end_bending, end_lift), ok)  # fmt: skip


def propagate(
    params: np.ndarray,
    kind_from: np.ndarray,
    position_from: np.ndarray,
    kind_to: np.ndarray,
    position_to: np.ndarray,
    field: float | MagneticField,
    direction: int | np.ndarray = 0,
    plane_from: np.ndarray | None = None,
    plane_to: np.ndarray | None = None,
    stepping: Stepping = ONE_STEP,
) -> Propagation:
    """Bound parameters [N, 5] on surfaces (``kind_from``, ``position_from``, ``plane_from``) propagated to the
    nearest crossing with surfaces (``kind_to``, ``position_to``, ``plane_to``) (only ahead for ``direction`` +1,
    only behind for -1; an array [N] gives each track its own) in ``field`` (tesla or a field, module
    docstring), with the analytic bound-to-bound Jacobian.

    In a non-uniform field, a track whose midpoint step would miss the Lorentz force by more than ``stepping``
    allows (:class:`~tracking_algs.magnetic_field.Stepping`; by default never) goes there in several midpoint
    steps instead: equal pieces of its path, the last one to the surface.  Its Jacobian stays the single step's
    (a linearisation about a path a fraction of a millimetre away)."""
    free, to_free = bound_to_free(params, kind_from, position_from, plane_from)
    if isinstance(field, (int, float)):
        return _helix_step(free, to_free, kind_to, position_to, float(field), direction, plane_to)
    if field.uniform:
        return _helix_step(free, to_free, kind_to, position_to, field.centre_t, direction, plane_to)
    step = _field_step(free, kind_to, position_to, field, direction, plane_to)
    once = _helix_step(step.start, to_free, kind_to, position_to, step.bending, direction, plane_to, step.lift)
    pieces = stepping.pieces(step.miss)
    cut = np.flatnonzero((pieces > 1) & once.ok)
    if len(cut):
        targets = _planes(plane_to, len(params))[cut]
        ways = np.broadcast_to(np.asarray(direction), len(params))[cut]
        end, path, ok = _in_pieces(free[cut], kind_to[cut], position_to[cut], targets, ways, field,
                                   step.take(cut), pieces[cut])  # fmt: skip
        once.params[cut] = free_to_bound(end, kind_to[cut], targets)[0]
        once.path[cut], once.ok[cut] = path, ok
    return once


def _in_pieces(free, kind_to, position_to, plane_to, direction, field, whole: _MidpointField, pieces):
    """Free states [N, 7] taken to their target surfaces in ``pieces`` [N] midpoint steps instead of the single
    step ``whole``: the first ones each ``whole.rough_path / pieces`` long, the last one to the surface.  The field
    at the ends of the pieces is looked up once, along the single step's helix (a fraction of a millimetre from
    the track there).  Returns the end states, their paths and ``ok``."""
    n, most = len(free), int(pieces.max())
    length = whole.rough_path / pieces
    qop = free[:, 6]
    # the field at each piece's start and end, [N, most + 1] (only as far as each track's pieces go)
    bending, lift = np.zeros((n, most + 1)), np.zeros((n, most + 1))
    bending[:, 0], lift[:, 0] = whole.start_bending, whole.start_lift
    track = np.repeat(np.arange(n), pieces)
    end = ranks_within(pieces) + 1
    along = length[track] * end
    rough, _ = transport(whole.start[track], along, whole.bending[track], jacobian=False)
    turned = free[track, 5] + HELIX_CONSTANT * (qop * whole.lift)[track] * along
    bending[track, end], lift[track, end] = field.turning_t(rough[:, :3], with_polar_component(rough[:, 3:6], turned))
    travelled = np.zeros(n)
    last_bending, last_lift = np.zeros(n), np.zeros(n)
    for piece in range(most):
        rows = np.flatnonzero(pieces > piece)
        mean_bending = 0.5 * (bending[rows, piece] + bending[rows, piece + 1])
        mean_lift = 0.5 * (lift[rows, piece] + lift[rows, piece + 1])
        half_turn = 0.5 * HELIX_CONSTANT * qop[rows] * length[rows] * mean_lift
        free[rows] = _with_polar_direction(free[rows], free[rows, 5] + half_turn)
        on_the_way = pieces[rows] > piece + 1
        last = rows[~on_the_way]
        last_bending[last], last_lift[last] = mean_bending[~on_the_way], mean_lift[~on_the_way]
        going = rows[on_the_way]
        if len(going):
            moved, _ = transport(free[going], length[going], mean_bending[on_the_way], jacobian=False)
            free[going] = _with_polar_direction(moved, moved[:, 5] + half_turn[on_the_way])
            travelled[going] += length[going]
    # the last pieces, from their start with T_z turned half-way, in their mean fields
    path, ok = path_to_surface(free, kind_to, position_to, last_bending, direction, plane_to)
    end, _ = transport(free, path, last_bending, jacobian=False)
    end = _with_polar_direction(end, free[:, 5] + 0.5 * HELIX_CONSTANT * qop * path * last_lift)
    return end, travelled + path, ok


def _helix_step(
    free: np.ndarray,
    to_free: np.ndarray,
    kind_to: np.ndarray,
    position_to: np.ndarray,
    bfield_t: float | np.ndarray,
    direction: int | np.ndarray,
    plane_to: np.ndarray | None,
    lift: np.ndarray | None = None,
) -> Propagation:
    """One helix step of free states [N, 7] (with ∂free/∂bound ``to_free`` of their start) in the field
    ``bfield_t`` to the target surfaces, with the path-corrected bound-to-bound Jacobian; with ``lift`` (a
    midpoint step, :func:`_field_step`), ``T_z`` at the end turned by the other half of the step's turn."""
    path, ok = path_to_surface(free, kind_to, position_to, bfield_t, direction, plane_to)
    end, transport_jac = transport(free, path, bfield_t)
    assert transport_jac is not None  # transport with its jacobian
    if lift is not None:
        end = _with_polar_direction(end, free[:, 5] + 0.5 * HELIX_CONSTANT * free[:, 6] * path * lift)
    bound, to_bound = free_to_bound(end, kind_to, plane_to)

    k = HELIX_CONSTANT * bfield_t * end[:, 6]
    derivative = np.column_stack((end[:, 3], end[:, 4], end[:, 5], k * end[:, 4], -k * end[:, 3],
                                  np.zeros(len(end)), np.zeros(len(end))))  # fmt: skip
    grad = _surface_gradient(end, kind_to, plane_to)
    denominator = (grad * derivative).sum(axis=1)
    ok &= np.abs(denominator) > 1e-12
    denominator = np.where(ok, denominator, 1.0)
    # theta and q/p are constants of the motion: rows 3 and 4 of the Jacobian are unit rows, the others a product
    # C T F of the path-corrected projection C, the transport T and F = d(free)/d(bound).  The first three bound
    # parameters and the surface constraint depend on position and transverse direction only, so C is zero in
    # its last two columns (tz, q/p) and is built 3 × 5.
    projection = to_bound[:, :3, :5]
    bound_rate = np.einsum("nij,nj->ni", projection, derivative[:, :5])  # d(bound)/ds
    corrected = projection - bound_rate[:, :, None] * (grad[:, :5] / denominator[:, None])[:, None, :]
    transported = np.empty((len(free), 3, 7))
    transported[:, :, :3] = corrected[:, :, :3]  # T is the identity in its first three columns (positions)
    transported[:, :, 3:] = matmul(corrected, transport_jac[:, :5, 3:])
    jacobian = np.zeros((len(free), 5, 5))
    jacobian[:, :3] = matmul(transported, to_free)
    jacobian[:, 3, 3] = jacobian[:, 4, 4] = 1.0
    return Propagation(params=bound, jacobian=jacobian, path=path, ok=ok)


def spans_chord(pt_gev: np.ndarray, first: np.ndarray, last: np.ndarray, field: MagneticField) -> np.ndarray:
    """Whether helices of transverse momentum ``pt_gev`` [N] (unit charge) are wide enough to join points ``first``
    and ``last`` [N, 3]: their transverse chord at most :data:`CHORD_MARGIN` times the helix diameter in the weaker
    of the two points' bending fields (always, where either field is zero)."""
    chord = last - first
    heading = chord / np.maximum(np.linalg.norm(chord, axis=1, keepdims=True), 1e-9)
    bending = np.minimum(np.abs(field.bending_t(first, heading)), np.abs(field.bending_t(last, heading)))
    with np.errstate(divide="ignore", invalid="ignore"):
        diameter = 2.0 * pt_gev / (HELIX_CONSTANT * bending)
    return ~(np.hypot(chord[:, 0], chord[:, 1]) > CHORD_MARGIN * diameter)
