"""The batched Kalman filter: gain-matrix update, forward filter, smoother and the step to the perigee.

All tracks of a batch advance hit by hit together; track ``t`` takes part in step ``i`` while
``i < count[t]`` and its status is still OK.  States are bound parameters on each hit's surface (see
:mod:`tracking_algs.fitting.helix`); a hit measures the first two components: ``(Phi, z)`` on a cylinder,
``(Phi, r)`` on a disk, the local ``(u, v)`` on a module plane.  Multiple scattering of a surface is added to the
covariance right after the hit on it is used (the hit measures the position where the track arrives; the kick
changes the direction it leaves with).

The smoother is the modified Bryson-Frazier form of the Rauch-Tung-Striebel smoother: a backward recursion of
the adjoint (λ, Λ) that needs no 5×5 inversion; the smoothed state at hit ``i`` is
``x_i|n = x_i|i-1 − P_i|i-1 λ̃_i``, ``P_i|n = P_i|i-1 − P_i|i-1 Λ̃_i P_i|i-1``.
"""

from __future__ import annotations

import attrs
import numpy as np

from tracking_algs.fitting.config import KalmanConfig
from tracking_algs.fitting.helix import SurfaceKind, bound_to_free, propagate, wrap_angle
from tracking_algs.fitting.navigation import NO_LAYER, MaterialMap, traverse
from tracking_algs.fitting.results import FitStatus
from tracking_algs.fitting.scattering import path_in_x0, through_material
from tracking_algs.fitting.stacked import matmul, sandwich, transport_sandwich
from tracking_algs.magnetic_field import MagneticField


@attrs.frozen
class Measurements:
    """The steps of T tracks, padded to L: the first ``count[t]`` entries of row ``t`` are the surfaces track
    ``t`` crosses, in order: its hits, and between them its holes (surfaces with material crossed without a
    hit, see :mod:`~tracking_algs.fitting.navigation`).  ``kind``, ``position`` and ``x_over_x0`` [T, L] describe
    each step's surface, ``plane`` [T, L, 4, 3] the module planes (None when no step is on one); ``value``
    [T, L, 2] is the measured (Phi, z), (Phi, r) or (u, v); ``variance`` [T, L, 2] their variances, the second one
    infinite for a hit that measures Phi only and both infinite on a hole."""

    kind: np.ndarray
    position: np.ndarray
    x_over_x0: np.ndarray
    value: np.ndarray
    variance: np.ndarray
    count: np.ndarray
    plane: np.ndarray | None = None

    def planes(self, rows: slice | np.ndarray, step: int) -> np.ndarray | None:
        """The planes [n, 4, 3] of step ``step`` of tracks ``rows`` (None without planes)."""
        return None if self.plane is None else self.plane[rows, step]

    def take(self, rows: np.ndarray) -> Measurements:
        """The steps of tracks ``rows`` only."""
        plane = None if self.plane is None else self.plane[rows]
        return Measurements(self.kind[rows], self.position[rows], self.x_over_x0[rows], self.value[rows],
                            self.variance[rows], self.count[rows], plane)  # fmt: skip

    def dims(self) -> np.ndarray:
        """Measured dimensions per step [T, L] (0 on a hole, 1 or 2 on a hit)."""
        return np.isfinite(self.variance).sum(axis=2)


@attrs.frozen
class Update:
    """A gain-matrix update of N states: updated ``params`` [N, 5] and ``cov`` [N, 5, 5], the predicted ``chi2``
    [N], the ``reduction`` 1 − KH [N, 5, 5] of the gain K and the inverse residual covariance ``precision``
    [N, 2, 2] (zero in the rows/columns of an unmeasured second dimension)."""

    params: np.ndarray
    cov: np.ndarray
    chi2: np.ndarray
    reduction: np.ndarray
    precision: np.ndarray


def gain_update(params: np.ndarray, cov: np.ndarray, residual: np.ndarray, variance: np.ndarray) -> Update:
    """Update states ``params`` [N, 5], ``cov`` [N, 5, 5] with measurements of their first two components:
    ``residual`` [N, 2] = measurement − prediction, measurement ``variance`` [N, 2] (second infinite for a 1-D
    measurement, both for none: the state is left as it is).  Joseph form: P' = (1 − KH) P (1 − KH)ᵀ + K V Kᵀ."""
    one = np.isfinite(variance[:, 0])
    two = one & np.isfinite(variance[:, 1])
    r0, r1 = np.where(one, residual[:, 0], 0.0), np.where(two, residual[:, 1], 0.0)
    v0, v1 = np.where(one, variance[:, 0], 0.0), np.where(two, variance[:, 1], 0.0)
    s00 = np.where(one, cov[:, 0, 0] + v0, 1.0)
    s01 = np.where(two, cov[:, 0, 1], 0.0)
    s11 = np.where(two, cov[:, 1, 1] + v1, 1.0)
    det = s00 * s11 - s01 * s01
    det = np.where(one & (det > 0.0), det, np.inf)
    precision = np.empty((len(params), 2, 2))
    precision[:, 0, 0] = s11 / det
    precision[:, 0, 1] = precision[:, 1, 0] = -s01 / det
    precision[:, 1, 1] = np.where(two, s00 / det, 0.0)
    gain = matmul(cov[:, :, :2], precision)
    new_params = params + gain[:, :, 0] * r0[:, None] + gain[:, :, 1] * r1[:, None]
    # H selects the first two components, so 1 − KH is the identity with −K in its first two columns; it is built
    # explicitly (1 − K computed first) rather than expanded, which would cancel where the hit dominates (K ≈ 1).
    # With A = (1 − KH) P the Joseph form is A (1 − KH)ᵀ + K V Kᵀ = A + (K V − A Hᵀ) Kᵀ, exactly and for any K:
    # one 5×5 product and a 5×2 one instead of two 5×5 products.
    reduction = _reduction(gain)
    reduced = matmul(reduction, cov)
    correction = gain * np.stack((v0, v1), axis=1)[:, None, :]
    correction -= reduced[:, :, :2]
    new_cov = reduced + matmul(correction, gain.transpose(0, 2, 1))
    chi2 = precision[:, 0, 0] * r0 * r0 + 2.0 * precision[:, 0, 1] * r0 * r1 + precision[:, 1, 1] * r1 * r1
    new_cov += new_cov.transpose(0, 2, 1)
    new_cov *= 0.5
    return Update(new_params, new_cov, chi2, reduction, precision)


def _reduction(gain: np.ndarray) -> np.ndarray:
    """1 − K H [N, 5, 5] for gains K [N, 5, 2] and H selecting the first two components."""
    reduction = np.zeros((len(gain), 5, 5))
    reduction[:, :, :2] = -gain
    reduction.reshape(len(gain), 25)[:, ::6] += 1.0  # the diagonal, through a strided view
    return reduction


@attrs.frozen
class ForwardPass:
    """What the forward filter leaves for the smoother, stored step-major ([L, T, ...]): per step the
    ``predicted`` state and ``predicted_cov``, the predicted ``residual``, the update's ``precision`` and the
    ``transport`` J (1 − KH) of the update and the Jacobian J to the next step (zero where there is none); per
    track [T] the total ``chi2``, the measurement dimensions used (``dims``), the number of steps ``processed``
    and the ``status``.

    A track whose helix misses the surface of its next hit (a low-pT track nearly tangent to a cylinder) stops
    there: its remaining steps are not used and ``processed`` counts the steps before."""

    predicted: np.ndarray
    predicted_cov: np.ndarray
    residual: np.ndarray
    precision: np.ndarray
    transport: np.ndarray
    chi2: np.ndarray
    dims: np.ndarray
    processed: np.ndarray
    status: np.ndarray


def measurement_residual(value: np.ndarray, params: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Measured minus predicted first two components; the first wrapped where it is an angle (Phi)."""
    residual = value - params[:, :2]
    residual[:, 0] = np.where(kind == SurfaceKind.PLANE, residual[:, 0], wrap_angle(residual[:, 0]))
    return residual


def finite_states(params: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Mask [N] of states whose parameters and covariance are finite, with positive variances."""
    diagonal = np.diagonal(cov, axis1=1, axis2=2)
    return np.isfinite(params).all(axis=1) & np.isfinite(cov).all(axis=(1, 2)) & (diagonal > 0.0).all(axis=1)


def _rows(mask: np.ndarray) -> slice | np.ndarray:
    """The rows where ``mask`` holds, as a slice when they are contiguous (views instead of copies)."""
    rows = np.flatnonzero(mask)
    if rows.size and rows[-1] - rows[0] + 1 == rows.size:
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def _covers(rows: slice | np.ndarray, n_rows: int) -> bool:
    """Whether ``rows`` (from :func:`_rows`) is every one of ``n_rows`` rows."""
    return isinstance(rows, slice) and rows == slice(0, n_rows)


def _matvec(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    return np.einsum("nij,nj->ni", matrix, vector)


def forward_filter(
    hits: Measurements,
    seed: np.ndarray,
    seed_cov: np.ndarray,
    status: np.ndarray,
    field: MagneticField,
    config: KalmanConfig,
) -> ForwardPass:
    """Run the filter over every track's steps, from the seed (bound parameters on the first hit's surface);
    tracks whose ``status`` [T] is not OK are skipped.

    A hole the helix does not reach (the straight-line navigation was wrong for a strongly bent track) is
    skipped, with its material: its step keeps the state where it was, with a unit Jacobian."""
    n_tracks, length = hits.kind.shape
    predicted = np.zeros((length, n_tracks, 5))
    predicted_cov = np.zeros((length, n_tracks, 5, 5))
    residual = np.zeros((length, n_tracks, 2))
    precision = np.zeros((length, n_tracks, 2, 2))
    transport = np.zeros((length, n_tracks, 5, 5))
    reduction = np.zeros((n_tracks, 5, 5))  # 1 − KH of each track's last update
    chi2 = np.zeros(n_tracks)
    dims = np.zeros(n_tracks, dtype=np.int64)
    processed = np.zeros(n_tracks, dtype=np.int64)
    hit_dims = hits.dims()
    hole = hit_dims == 0
    x_over_x0 = hits.x_over_x0.copy()  # zeroed on the holes that are skipped
    state, state_cov = seed.copy(), seed_cov.copy()
    state_kind, state_position = hits.kind[:, 0].copy(), hits.position[:, 0].copy()  # the surface of each state
    state_plane = None if hits.plane is None else hits.plane[:, 0].copy()

    for i in range(length):
        rows = _rows((hits.count > i) & (processed == i) & (status == FitStatus.OK))
        if isinstance(rows, np.ndarray) and not rows.size:
            break
        params, cov = state[rows], state_cov[rows]
        if i > 0:
            to_hole = hole[rows, i]
            step = propagate(params, state_kind[rows], state_position[rows], hits.kind[rows, i],
                             hits.position[rows, i], field, direction=to_hole.astype(np.int64),
                             plane_from=None if state_plane is None else state_plane[rows],
                             plane_to=hits.planes(rows, i), stepping=config.stepping)  # fmt: skip
            jac = step.jacobian
            missed = to_hole & ~step.ok
            if missed.any():
                step.params[missed], jac[missed] = params[missed], np.eye(5)
                x_over_x0[np.arange(n_tracks)[rows][missed], i] = 0.0
            params, cov = step.params, transport_sandwich(jac, cov)
            reached = step.ok | missed
            if not reached.all():  # a hit the helix does not reach ends its track here
                rows = np.arange(n_tracks)[rows][reached]
                params, jac, cov = params[reached], jac[reached], cov[reached]
            transport[i - 1, rows] = _through_update(jac, reduction[rows])
            state_kind[rows] = np.where(missed[reached], state_kind[rows], hits.kind[rows, i])
            state_position[rows] = np.where(missed[reached], state_position[rows], hits.position[rows, i])
            if state_plane is not None:
                assert hits.plane is not None  # state_plane is None without it
                state_plane[rows] = np.where(missed[reached, None, None], state_plane[rows], hits.plane[rows, i])
        res = measurement_residual(hits.value[rows, i], params, hits.kind[rows, i])
        update = gain_update(params, cov, res, hits.variance[rows, i])
        processed[rows] = i + 1
        predicted[i, rows] = params
        predicted_cov[i, rows] = cov
        residual[i, rows] = res
        reduction[rows] = update.reduction
        precision[i, rows] = update.precision
        chi2[rows] += update.chi2
        dims[rows] += hit_dims[rows, i]

        new_cov = update.cov
        if config.multiple_scattering or config.energy_loss:
            path = path_in_x0(update.params, hits.kind[rows, i], x_over_x0[rows, i], hits.planes(rows, i))
            factor = through_material(update.params, new_cov, path, config, direction=1)
            if factor is not None:  # the smoother's transport J (1 − KH) takes the loss's q/p factor
                reduction[rows, 4] *= factor[:, None]
        if _covers(rows, n_tracks):  # every track took this step: keep the new arrays instead of copying them
            state, state_cov = update.params, new_cov
        else:
            state[rows], state_cov[rows] = update.params, new_cov
    return ForwardPass(predicted, predicted_cov, residual, precision, transport, chi2, dims, processed,
                       status.copy())  # fmt: skip


@attrs.frozen
class Smoothed:
    """The smoother's results: the state at the first hit using all hits (``first`` [T, 5], ``first_cov``
    [T, 5, 5]), per step [T, L] the χ² of the hit against the smoothed prediction from all *other* hits
    (``hit_chi2``; 0 on holes, padding and steps not processed) and, where asked for, the state at the first hit from
    the seed and every hit but the first (``without_first``, ``without_first_cov``; None otherwise)."""

    first: np.ndarray
    first_cov: np.ndarray
    hit_chi2: np.ndarray
    without_first: np.ndarray | None = None
    without_first_cov: np.ndarray | None = None


def smooth(hits: Measurements, forward: ForwardPass, without_first: bool = False) -> Smoothed:
    """Modified Bryson-Frazier smoothing of a forward pass (tracks with a failed status are left at zero); with
    ``without_first`` also the state at the first hit without that hit (the start of the fitter's second pass)."""
    n_tracks, length = hits.kind.shape
    # the adjoint (λ̃, Λ̃) of the hit after: zero where there is none (the jacobian to an unreached hit is zero)
    after = np.zeros((n_tracks, 5))
    after_info = np.zeros((n_tracks, 5, 5))
    first = np.zeros((n_tracks, 5))
    first_cov = np.zeros((n_tracks, 5, 5))
    others = np.zeros((n_tracks, 5)) if without_first else None
    others_cov = np.zeros((n_tracks, 5, 5)) if without_first else None
    hit_chi2 = np.zeros((n_tracks, length))
    ok = forward.status == FitStatus.OK

    for i in range(length - 1, -1, -1):
        rows = _rows((forward.processed > i) & ok)
        if isinstance(rows, np.ndarray) and not rows.size:
            continue
        precision = forward.precision[i, rows]
        pred, pred_cov = forward.predicted[i, rows], forward.predicted_cov[i, rows]
        if i + 1 < length:
            # the adjoint of the hit after, taken back through the transport J_i+1 and the update (1 − KH):
            # Λ = (1 − KH)ᵀ J_i+1ᵀ Λ̃_i+1 J_i+1 (1 − KH), λ = (1 − KH)ᵀ J_i+1ᵀ λ̃_i+1
            transport = forward.transport[i, rows]
            info = sandwich(transport.transpose(0, 2, 1), after_info[rows])
            lam = np.einsum("nki,nk->ni", transport, after[rows])
        else:
            info = np.zeros_like(pred_cov)
            lam = np.zeros_like(pred)
        if i == 0 and others is not None:  # the adjoint of the hits after alone: the state from the seed and those
            assert others_cov is not None  # made with others
            others[rows] = pred - _matvec(pred_cov, lam)
            others_cov[rows] = _symmetric(pred_cov - matmul(matmul(pred_cov, info), pred_cov))
        info[:, :2, :2] += precision
        lam[:, :2] -= _matvec(precision, forward.residual[i, rows])

        params = pred - _matvec(pred_cov, lam)
        cov_rows = pred_cov[:, :2, :]
        smoothed_block = pred_cov[:, :2, :2] - sandwich(cov_rows, info)
        hit_chi2[rows, i] = _hit_chi2(hits.value[rows, i], hits.variance[rows, i], params, smoothed_block,
                                      hits.kind[rows, i])  # fmt: skip
        if i == 0:
            first[rows] = params
            first_cov[rows] = _symmetric(pred_cov - matmul(matmul(pred_cov, info), pred_cov))
        else:
            if _covers(rows, n_tracks):
                after_info, after = info, lam
            else:
                after_info[rows], after[rows] = info, lam
    return Smoothed(first, first_cov, hit_chi2, others, others_cov)


def _symmetric(cov: np.ndarray) -> np.ndarray:
    """The symmetric part of stacked matrices [N, 5, 5] (rounding leaves a covariance product slightly off)."""
    return 0.5 * (cov + cov.transpose(0, 2, 1))


def _through_update(jacobian: np.ndarray, reduction: np.ndarray) -> np.ndarray:
    """J (1 − KH) for transport Jacobians J with unit rows 3 and 4 (see :func:`~.stacked.transport_sandwich`)."""
    product = np.empty_like(reduction)
    product[:, :3] = matmul(jacobian[:, :3], reduction)
    product[:, 3:] = reduction[:, 3:]
    return product


def _hit_chi2(value, variance, params, smoothed_block, kind):
    """χ² of each hit against the prediction from all other hits, from its smoothed residual r_s:
    r_sᵀ (V − H P_s Hᵀ)⁻¹ r_s (the χ² of the unbiased residual); 0 on holes."""
    one = np.isfinite(variance[:, 0])
    two = one & np.isfinite(variance[:, 1])
    res = measurement_residual(value, params, kind)
    r00 = np.where(one, variance[:, 0], 1.0) - smoothed_block[:, 0, 0]
    r01 = np.where(two, -smoothed_block[:, 0, 1], 0.0)
    r11 = np.where(two, variance[:, 1] - smoothed_block[:, 1, 1], 1.0)
    det = r00 * r11 - r01 * r01
    r1 = np.where(two, res[:, 1], 0.0)
    chi2 = (r11 * res[:, 0] ** 2 - 2.0 * r01 * res[:, 0] * r1 + r00 * r1**2) / np.where(det > 0.0, det, np.inf)
    return np.where(one & (det > 0.0) & (r00 > 0.0), chi2, 0.0)


def to_perigee(
    params: np.ndarray, cov: np.ndarray, kind: np.ndarray, position: np.ndarray, plane: np.ndarray | None,
    first_layer: np.ndarray, material: MaterialMap | None, field: MagneticField, config: KalmanConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """States on the first hit's surface (``kind``, ``position``, ``plane``; on the layer with key
    ``first_layer``) taken inwards to the perigee through the material of every surface crossed on the way (the
    layers inside the first hit and the beam pipe; none when ``material`` is None), as ``config`` says:
    ``(params [N, 5], cov [N, 5, 5], reached [N])``."""
    if material is not None:
        free, _ = bound_to_free(params, kind, position, plane)
        r, z = np.hypot(free[:, 0], free[:, 1]), free[:, 2]
        inner = material.crossings(r, z, np.zeros(len(params)), _beam_line_z(r, z, params[:, 3]),
                                   end_layers=(first_layer, np.full(len(params), NO_LAYER)))  # fmt: skip
        passed = traverse(params, cov, kind, position, inner, field, config, direction=-1, plane=plane)
        params, cov, kind, position, plane = passed.params, passed.cov, passed.kind, passed.position, passed.plane
    perigee = np.full(len(params), SurfaceKind.PERIGEE)
    final = propagate(params, kind, position, perigee, np.zeros(len(params)), field, plane_from=plane,
                      stepping=config.stepping)  # fmt: skip
    final_cov = transport_sandwich(final.jacobian, cov)
    final_cov = 0.5 * (final_cov + final_cov.transpose(0, 2, 1))
    return final.params, final_cov, final.ok


def _beam_line_z(r: np.ndarray, z: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Where the straight line through (``r``, ``z``) with polar direction ``theta`` meets the beam line (r = 0)."""
    return z - r * np.cos(theta) / np.maximum(np.sin(theta), 1e-6)
