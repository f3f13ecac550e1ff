"""Helix navigation through a detector of flat modules (:class:`~tracking_algs.modules.ModuleGeometry`),
vectorised over particles, in the uniform solenoid field of the cylinder :class:`~tracking_algs.geometry.Detector`
or a :class:`~tracking_algs.magnetic_field.MagneticField`; besides the modules the only material is that of the
passive cylinders around the beam line (:data:`~tracking_algs.modules.TRACKML_SUPPORTS`: the beam pipe and the
pixel support tube).

Each (volume, layer) of modules is a layer with a nominal surface: a cylinder at the mean module-centre radius
(barrel: module normals transverse) or a plane at the mean module-centre z (endcap: normals along z). Every step
takes, for each particle still going, the nearest nominal surface ahead that the particle has not yet been through
in that direction (the same quadratic in tan(ψ/2) and linear z(ψ) as :mod:`~tracking_algs.simulation.propagation`,
ψ the turning angle), and there picks the few modules whose φ × (z or r) extent lies near the crossing point (a
per-layer binning of the module extents, precomputed). For those candidates it solves the helix–plane
intersection exactly (Newton on ψ) and keeps the crossings inside the module bounds; the particle then goes
through them one after the other in order of path length, scattering in the layer's material at the last module of
the layer on its way (where the layer's material is) and solving the remaining candidates again from the new
direction: where two modules overlap a particle crosses
both. Loopers stop after ``max_turns`` turns, as in the cylinder simulation. A particle may end in a module it
crosses (a nuclear interaction, a photon conversion): with probability 1 − exp(−k · x/X0 / |cos α|), k its own
rate per radiation length; the crossing is recorded and flagged, and the particle goes no further. It may end
in a passive cylinder alike, where a hadron's x/X0 is that of silicon with the cylinder's nuclear interaction
lengths (beryllium holds 4.2 times as many per radiation length); that end is recorded with no module (−1).

The scattering angles come from :mod:`~tracking_algs.simulation.streams`: a hash of (key, particle, number of
the particle's scatterings), so no draw depends on how many particles are still going; the draw that decides
whether a particle ends in a module is a hash of (its own key, particle, crossing number).
"""

from __future__ import annotations

import functools

import attrs
import numpy as np

from tracking_algs.energy_loss import slowed
from tracking_algs.errors import EventFormatError
from tracking_algs.event import Columns
from tracking_algs.geometry import Detector
from tracking_algs.magnetic_field import ONE_STEP, MagneticField, Stepping
from tracking_algs.modules import TRACKML_SUPPORTS, ModuleGeometry, SupportCylinder, trackml_modules
from tracking_algs.ranges import ranks_within
from tracking_algs.simulation.config import SILICON_X0_OVER_LAMBDA
from tracking_algs.simulation.propagation import (
    HelixFrame,
    chord,
    helix_parameters,
    midpoint_step,
    move_along_helix,
    turn_polar,
    uniform_bending,
    varies,
)
from tracking_algs.simulation.scattering import deflect, highland_theta0
from tracking_algs.simulation.streams import counter_normal, counter_uniform

_TWO_PI = 2.0 * np.pi
#: a crossing must be at least this far ahead (rad of turning) to count: the module just crossed is behind
_AHEAD = 1e-9
#: Newton iterations on ψ for a helix–plane intersection, and how close to the plane (mm) the result must be
_NEWTON_ITERATIONS = 6
_ON_PLANE_MM = 1e-7
#: grazing crossings count as if at this |cos(incidence)| at most (as in the cylinder simulation)
MIN_COS_INCIDENCE = 0.05
#: a nominal surface counts when its crossing lies within the layer's extent grown by this much (mm) plus the
#: distance the track travels along it while crossing the layer's thickness of modules (twice, for safety)
_EXTENT_MARGIN_MM = 5.0
#: module extents are grown by this (mm) when binned and when matched against a crossing
_BIN_MARGIN_MM = 1.0
#: The most bins, and the most (bin, module) entries, one layer's lookup table may have (the TrackML layers have
#: at most 3105 bins and 20 951 in all): modules far smaller or larger than their layer's extent would only
#: exhaust the memory
MAX_LAYER_BINS = 1_000_000
MAX_LAYER_ENTRIES = 10_000_000
_MAX_STEPS = 10_000


@attrs.frozen
class ModuleCrossings(Columns):
    """Module crossings in the order they happen per particle: ``particle`` (row of the propagated particles),
    ``module`` (row of the geometry), ``position`` [M, 3] mm on the module's mid-plane, ``momentum`` [M, 3] GeV
    arriving (before scattering), local ``u``, ``v`` (mm), ``index`` (the crossing's number along its particle,
    from 0) and ``ended`` (the particle ended in this module). A particle that ends in a passive cylinder has a last
    record there with ``module`` −1, ``u`` = ``v`` = 0 and the ``index`` its next module crossing would have had."""

    particle: np.ndarray
    module: np.ndarray
    position: np.ndarray
    momentum: np.ndarray
    u: np.ndarray
    v: np.ndarray
    index: np.ndarray
    ended: np.ndarray


def _check_table_size(key: np.ndarray, what: str, count: float, limit: int) -> None:
    """:class:`EventFormatError` naming the layer ``key`` (volume, layer) when its lookup table would need ``count``
    (NaN or infinite too) ``what`` (bins, entries), more than ``limit``."""
    if not count <= limit:
        raise EventFormatError(
            f"volume {key[0]}, layer {key[1]}: its modules would need {count:.3g} {what} in the navigation's lookup "
            f"table (at most {limit}): modules far smaller or larger than the layer's extent"
        )


@attrs.frozen(eq=False)
class ModuleLayers:
    """The layers of a module geometry as flat arrays (L layers), and a binning of their module extents.

    ``barrel`` [L]; ``nominal`` [L]: radius (barrel) or z (endcap) of the nominal surface; ``extent`` [L, 2]: the
    range of the modules along z (barrel) or r (endcap); ``spread`` [L]: how far module points lie from the
    nominal surface (radially on a barrel, in z on an endcap). Per module: ``phi`` (of the centre), ``phi_extent``
    [M, 2] (relative to ``phi``), ``along_extent`` [M, 2] (z or r). Bins: layer l has ``n_phi[l]`` × ``n_along[l]``
    bins of widths ``phi_width[l]`` × ``along_width[l]`` starting at φ = −π and ``along_low[l]``; the bin (i, j)
    lists the modules whose grown extent overlaps it in ``table[offset[l] + i · n_along[l] + j]`` (padded with
    -1).
    """

    geometry: ModuleGeometry
    barrel: np.ndarray
    nominal: np.ndarray
    extent: np.ndarray
    spread: np.ndarray
    phi: np.ndarray
    phi_extent: np.ndarray
    along_extent: np.ndarray
    n_phi: np.ndarray
    n_along: np.ndarray
    phi_width: np.ndarray
    along_width: np.ndarray
    along_low: np.ndarray
    offset: np.ndarray
    table: np.ndarray

    @classmethod
    def of(cls, geometry: ModuleGeometry) -> ModuleLayers:
        """The layers of ``geometry``; a (volume, layer) whose normals are neither all transverse nor all along z,
        or whose modules would need more than :data:`MAX_LAYER_BINS` bins or :data:`MAX_LAYER_ENTRIES` entries in
        the lookup table, raises :class:`~tracking_algs.errors.EventFormatError` (a ``ValueError``) naming it."""
        keys = np.stack([geometry.volume_id, geometry.layer_id], axis=-1)
        _, layer_of = np.unique(keys, axis=0, return_inverse=True)
        layer_of = layer_of.reshape(-1)
        n_layers = int(layer_of.max()) + 1 if len(geometry) else 0
        points = _outline(geometry)  # [M, 9, 3]
        r_points = np.hypot(points[..., 0], points[..., 1])
        phi = np.arctan2(geometry.c[:, 1], geometry.c[:, 0])
        relative = _wrap(np.arctan2(points[..., 1], points[..., 0]) - phi[:, None])
        phi_extent = np.stack([relative.min(axis=1), relative.max(axis=1)], axis=-1)
        normal_z = np.abs(geometry.normal(np.arange(len(geometry)))[:, 2])
        barrel = np.zeros(n_layers, dtype=bool)
        nominal, spread = np.zeros(n_layers), np.zeros(n_layers)
        along_extent = np.zeros((len(geometry), 2))
        for layer in range(n_layers):
            rows = np.flatnonzero(layer_of == layer)
            if np.all(normal_z[rows] < 0.5):
                barrel[layer] = True
                nominal[layer] = np.hypot(geometry.c[rows, 0], geometry.c[rows, 1]).mean()
                closest = np.abs(np.einsum("ij,ij->i", geometry.c[rows], geometry.normal(rows)))
                spread[layer] = max(np.abs(r_points[rows] - nominal[layer]).max(),
                                    np.abs(closest - nominal[layer]).max())  # fmt: skip
                along = points[rows, :, 2]
            elif np.all(normal_z[rows] > 0.5):
                nominal[layer] = geometry.c[rows, 2].mean()
                spread[layer] = np.abs(points[rows, :, 2] - nominal[layer]).max()
                along = r_points[rows]
            else:
                volume, layer_id = keys[rows[0]]
                raise EventFormatError(f"volume {volume}, layer {layer_id}: module normals neither all transverse "
                                       "nor all along z")  # fmt: skip
            along_extent[rows] = np.stack([along.min(axis=1), along.max(axis=1)], axis=-1)
        extent = np.array([[along_extent[layer_of == k, 0].min(), along_extent[layer_of == k, 1].max()]
                           for k in range(n_layers)]).reshape(-1, 2)  # fmt: skip
        # the bins: about the median module width in φ and along
        n_phi = np.zeros(n_layers, dtype=np.int64)
        n_along = np.zeros(n_layers, dtype=np.int64)
        phi_width, along_width, along_low = np.zeros(n_layers), np.zeros(n_layers), np.zeros(n_layers)
        entries_bin, entries_module = [], []
        offset = np.zeros(n_layers, dtype=np.int64)
        total = 0
        for layer in range(n_layers):
            rows = np.flatnonzero(layer_of == layer)
            with np.errstate(divide="ignore", invalid="ignore"):
                phi_bins = max(1.0, np.floor(_TWO_PI / np.median(np.diff(phi_extent[rows], axis=1))))
                along_width[layer] = np.median(np.diff(along_extent[rows], axis=1))
                along_bins = np.ceil((extent[layer, 1] - extent[layer, 0]) / along_width[layer]) + 2
            _check_table_size(keys[rows[0]], "bins", phi_bins * along_bins, MAX_LAYER_BINS)
            n_phi[layer], n_along[layer] = int(phi_bins), int(along_bins)
            phi_width[layer] = _TWO_PI / n_phi[layer]
            along_low[layer] = extent[layer, 0] - along_width[layer]
            offset[layer] = total
            total += n_phi[layer] * n_along[layer]
            reference = nominal[layer] if barrel[layer] else np.maximum(along_extent[rows].mean(axis=1), 1.0)
            grow = _BIN_MARGIN_MM / reference
            low = np.floor((phi[rows] + phi_extent[rows, 0] - grow + np.pi) / phi_width[layer]).astype(np.int64)
            high = np.floor((phi[rows] + phi_extent[rows, 1] + grow + np.pi) / phi_width[layer]).astype(np.int64)
            a_low = np.floor((along_extent[rows, 0] - _BIN_MARGIN_MM - along_low[layer]) / along_width[layer])
            a_high = np.floor((along_extent[rows, 1] + _BIN_MARGIN_MM - along_low[layer]) / along_width[layer])
            a_low = np.clip(a_low, 0, n_along[layer] - 1).astype(np.int64)
            a_high = np.clip(a_high, 0, n_along[layer] - 1).astype(np.int64)
            n_i, n_j = high - low + 1, a_high - a_low + 1
            per_module = n_i * n_j
            _check_table_size(keys[rows[0]], "entries", float(per_module.sum()), MAX_LAYER_ENTRIES)
            module = np.repeat(np.arange(len(rows)), per_module)
            within = ranks_within(per_module)
            i = np.mod(low[module] + within // n_j[module], n_phi[layer])
            j = a_low[module] + within % n_j[module]
            entries_bin.append(offset[layer] + i * n_along[layer] + j)
            entries_module.append(rows[module])
        bins = np.concatenate(entries_bin) if entries_bin else np.zeros(0, np.int64)
        modules = np.concatenate(entries_module) if entries_module else np.zeros(0, np.int64)
        order = np.lexsort((modules, bins))
        bins, modules = bins[order], modules[order]
        counts = np.bincount(bins, minlength=total)
        width = int(counts.max()) if len(counts) else 0
        table = np.full((total, width), -1, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        table[bins, np.arange(len(bins)) - starts[bins]] = modules
        return cls(geometry, barrel, nominal, extent, spread, phi, phi_extent, along_extent, n_phi, n_along,
                   phi_width, along_width, along_low, offset, table)  # fmt: skip

    def candidates(self, layer: np.ndarray, point: np.ndarray, phi_margin: np.ndarray, along_margin: np.ndarray):
        """Modules [n, K] (-1 padded, each at most once per row) of layer ``layer[k]`` whose extent, grown by
        :data:`_BIN_MARGIN_MM`, overlaps the box around ``point[k]`` (on the nominal surface) of half widths
        ``phi_margin`` (rad) and ``along_margin`` (mm); the margins are capped at half a bin (2 × 2 bins looked
        at)."""
        phi = np.arctan2(point[:, 1], point[:, 0])
        r = np.hypot(point[:, 0], point[:, 1])
        along = np.where(self.barrel[layer], point[:, 2], r)
        phi_margin = np.minimum(phi_margin, 0.5 * self.phi_width[layer])
        along_margin = np.minimum(along_margin, 0.5 * self.along_width[layer])
        n_phi, n_along = self.n_phi[layer], self.n_along[layer]
        i0 = np.floor((phi - phi_margin + np.pi) / self.phi_width[layer]).astype(np.int64)
        i1 = np.floor((phi + phi_margin + np.pi) / self.phi_width[layer]).astype(np.int64)
        j0 = np.floor((along - along_margin - self.along_low[layer]) / self.along_width[layer])
        j1 = np.floor((along + along_margin - self.along_low[layer]) / self.along_width[layer])
        j0 = np.clip(j0, 0, n_along - 1).astype(np.int64)
        j1 = np.clip(j1, 0, n_along - 1).astype(np.int64)
        rows = [
            self.table[self.offset[layer] + np.mod(np.minimum(i0 + di, i1), n_phi) * n_along + np.minimum(j0 + dj, j1)]
            for di in range(2)
            for dj in range(2)
        ]
        found = np.concatenate(rows, axis=1)
        module = np.maximum(found, 0)
        dphi = _wrap(phi[:, None] - self.phi[module])
        reference = np.where(self.barrel[layer], self.nominal[layer], np.maximum(r, 1.0))[:, None]
        grow = _BIN_MARGIN_MM / reference
        ok = (found >= 0) & (dphi + phi_margin[:, None] >= self.phi_extent[module, 0] - grow)
        ok &= dphi - phi_margin[:, None] <= self.phi_extent[module, 1] + grow
        ok &= along[:, None] + along_margin[:, None] >= self.along_extent[module, 0] - _BIN_MARGIN_MM
        ok &= along[:, None] - along_margin[:, None] <= self.along_extent[module, 1] + _BIN_MARGIN_MM
        found = np.sort(np.where(ok, found, np.iinfo(np.int64).max), axis=1)
        repeated = np.zeros(found.shape, dtype=bool)
        repeated[:, 1:] = found[:, 1:] == found[:, :-1]
        found[repeated] = np.iinfo(np.int64).max
        found = np.sort(found, axis=1)
        width = int((found < np.iinfo(np.int64).max).sum(axis=1).max()) if len(found) else 0
        found = found[:, :width]
        return np.where(found == np.iinfo(np.int64).max, -1, found)


#: the last geometry :func:`module_layers` was asked for, and its layers (held, so the identity stays valid)
_LAST_LAYERS: list[tuple[ModuleGeometry, ModuleLayers]] = []


def module_layers(geometry: ModuleGeometry | None = None) -> ModuleLayers:
    """The :class:`ModuleLayers` of ``geometry`` (None: the built-in TrackML modules), built once for the geometry
    object the events of a run share (its arrays are not compared: a geometry is not modified once built)."""
    geometry = trackml_modules() if geometry is None else geometry
    if not _LAST_LAYERS or _LAST_LAYERS[0][0] is not geometry:
        _LAST_LAYERS[:] = [(geometry, ModuleLayers.of(geometry))]
    return _LAST_LAYERS[0][1]


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angles wrapped into [−π, π)."""
    return np.mod(angle + np.pi, _TWO_PI) - np.pi


def _outline(geometry: ModuleGeometry) -> np.ndarray:
    """[M, 9, 3]: the corners, edge midpoints and centre of each module (global)."""
    v = np.multiply.outer(geometry.half_v, [-1.0, 0.0, 1.0])  # [M, 3]
    along = (v + geometry.half_v[:, None]) / (2 * geometry.half_v[:, None])
    half_u = geometry.min_half_u[:, None] + (geometry.max_half_u - geometry.min_half_u)[:, None] * along
    u = half_u[:, :, None] * np.array([-1.0, 0.0, 1.0])  # [M, 3 (v), 3 (u)]
    local = np.stack(np.broadcast_arrays(u, v[:, :, None], 0.0), axis=-1).reshape(len(geometry), 9, 3)
    return geometry.c[:, None, :] + np.einsum("mij,mkj->mki", geometry.rot, local)


def propagate_modules(
    vertex: np.ndarray,
    momentum: np.ndarray,
    charge: np.ndarray,
    detector: Detector,
    layers: ModuleLayers,
    scattering_key: int,
    *,
    max_turns: float = 0.5,
    multiple_scattering: bool = True,
    energy_loss: bool = False,
    mass_gev: float | np.ndarray = 0.13957,
    ends_per_x0: np.ndarray | None = None,
    ending_key: int = 0,
    hadronic: np.ndarray | None = None,
    field: MagneticField | None = None,
    stepping: Stepping = ONE_STEP,
    supports: tuple[SupportCylinder, ...] = TRACKML_SUPPORTS,
) -> ModuleCrossings:
    """Propagate particles (vertex [N, 3] mm, momentum [N, 3] GeV, charge [N] ±1, mass (one or [N]) GeV) through
    the modules of ``layers`` in ``detector``'s field, scattering in the passive cylinders ``supports`` and once in
    every layer crossed:
    a layer's material (``x_over_x0`` of its modules) lies on the last of its modules a particle crosses on its
    way through the layer, and the modules it crosses before (overlaps) add none, as in the ACTS generic detector
    (the TrackML layout), whose layers carry their material on a layer surface beside thin silicon modules.  The
    scattering angles of particle k's i-th scattering come from
    ``counter_normal(scattering_key, k, i)``. With ``energy_loss`` each scattering also takes its mean ionisation
    loss (:mod:`tracking_algs.energy_loss`).

    ``ends_per_x0`` [N] (None: all 0): particle k ends in a layer it crosses with probability
    1 − exp(−``ends_per_x0[k]`` · x/X0 / |cos α|), drawn as ``counter_uniform(ending_key, k, crossing number)``;
    in a passive cylinder likewise, drawn as ``counter_uniform(ending_key, k, crossing number, 1 + 2 · cylinder +
    inwards)``, with x/X0 that cylinder's, or for the ``hadronic`` [N] particles (None: none) the silicon radiation
    lengths of as many nuclear interaction lengths as the cylinder has (``ends_per_x0`` is a rate in silicon).

    ``field`` (None: the detector's uniform field): each step from surface to surface is a helix in
    :func:`~tracking_algs.simulation.propagation.midpoint_step`, taken in pieces where a single one would miss the
    Lorentz force by more than ``stepping`` allows."""
    geometry = layers.geometry
    n = len(np.asarray(charge))
    mass = np.broadcast_to(np.asarray(mass_gev, dtype=np.float64), (n,))
    rate = np.zeros(n) if ends_per_x0 is None else np.asarray(ends_per_x0, dtype=np.float64)
    by_lambda = np.zeros(n, dtype=bool) if hadronic is None else np.asarray(hadronic, dtype=bool)
    position = np.array(vertex, dtype=np.float64).reshape(-1, 3).copy()
    mom = np.array(momentum, dtype=np.float64).reshape(-1, 3).copy()
    q = np.asarray(charge, dtype=np.float64)
    turned = np.zeros(n)
    scatterings = np.zeros(n, dtype=np.int64)
    crossed = np.zeros(n, dtype=np.int64)
    n_layers, n_supports = len(layers.nominal), len(supports)
    # per (particle, surface) whether it was gone through outwards / inwards; surfaces 0 .. n_supports − 1 are the
    # passive cylinders, the layers follow
    done_out = np.zeros((n, n_supports + n_layers), dtype=bool)
    done_in = np.zeros((n, n_supports + n_layers), dtype=bool)
    alive = np.ones(n, dtype=bool)
    budget = max_turns * _TWO_PI
    records: list[tuple[np.ndarray, ...]] = []
    support_x0 = np.array([support.x_over_x0 for support in supports])
    # the silicon radiation lengths with as many nuclear interaction lengths: how far a hadron's rate reaches there
    support_nuclear_x0 = np.array([support.x_over_lambda / SILICON_X0_OVER_LAMBDA for support in supports])
    bending = np.full(n, uniform_bending(field, detector.bfield_t))  # each particle's field for its current step
    # each particle's change of T_z per radian turned in its current step, and the part of the step's turn not yet
    # taken into its polar direction (a midpoint step starts with T_z turned half-way)
    tilt, pending = np.zeros(n), np.zeros(n)
    turn_limit = np.full(n, np.inf)  # how far each particle may turn in its current step (a piece of a long one)

    def material(rows: np.ndarray, normal: np.ndarray, x_over_x0: np.ndarray) -> np.ndarray:
        """Radiation lengths on the way of particles ``rows`` through material of ``x_over_x0`` with ``normal``."""
        p = np.linalg.norm(mom[rows], axis=1)
        cos_incidence = np.maximum(np.abs(np.einsum("ij,ij->i", normal, mom[rows])) / p, MIN_COS_INCIDENCE)
        return x_over_x0 / cos_incidence

    def through_material(rows: np.ndarray, path_x0: np.ndarray) -> None:
        """Particles ``rows`` go through ``path_x0`` radiation lengths: they scatter, then lose energy."""
        if not len(rows):
            return
        if multiple_scattering:
            p = np.linalg.norm(mom[rows], axis=1)
            beta = p / np.hypot(p, mass[rows])
            theta0 = highland_theta0(p, beta, path_x0, 1.0)
            angles = counter_normal(scattering_key, rows, scatterings[rows]) * theta0[:, None]
            mom[rows] = deflect(mom[rows], angles)
            scatterings[rows] += 1
        if energy_loss:
            mom[rows] = slowed(mom[rows], mass[rows], path_x0)

    def through_module(rows: np.ndarray, module: np.ndarray, index: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Particles ``rows`` have just crossed ``module`` (their crossing number ``index``), the ``last`` module of
        its layer on their way or not: whether each ends there; those at the last that do not, scatter through the
        layer's material."""
        ended = np.zeros(len(rows), dtype=bool)
        leaving = np.flatnonzero(last)
        path = material(rows[leaving], geometry.normal(module[leaving]), geometry.x_over_x0[module[leaving]])
        ended[leaving] = counter_uniform(ending_key, rows[leaving], index[leaving]) < -np.expm1(
            -rate[rows[leaving]] * path
        )
        alive[rows[ended]] = False
        through_material(rows[leaving[~ended[leaving]]], path[~ended[leaving]])
        return ended

    def through_support(rows: np.ndarray, support: np.ndarray, outward: np.ndarray) -> None:
        """Particles ``rows`` are at passive cylinder ``support`` (crossing it ``outward`` or not): those that end
        there are recorded and stop; the others scatter through it."""
        radial = position[rows].copy()
        radial[:, 2] = 0.0
        radial /= np.maximum(np.linalg.norm(radial, axis=1), 1e-300)[:, None]
        slant = material(rows, radial, np.ones(len(rows)))  # 1 / |cos α|
        reach = np.where(by_lambda[rows], support_nuclear_x0[support], support_x0[support]) * slant
        slot = 1 + 2 * support + (~outward).astype(np.int64)
        ended = counter_uniform(ending_key, rows, crossed[rows], slot) < -np.expm1(-rate[rows] * reach)
        if ended.any():
            end = rows[ended]
            zeros = np.zeros(len(end))
            records.append((end, np.full(len(end), -1), position[end].copy(), mom[end].copy(), zeros, zeros,
                            crossed[end].copy(), np.ones(len(end), dtype=bool)))  # fmt: skip
            alive[end] = False
        through_material(rows[~ended], support_x0[support[~ended]] * slant[~ended])

    for _ in range(_MAX_STEPS):
        rows = np.flatnonzero(alive)
        if not len(rows):
            break
        if varies(field):
            step = midpoint_step(field, position[rows], mom[rows], q[rows], functools.partial(
                _next_turn, position[rows], mom[rows], q[rows], layers=layers, supports=supports,
                done_out=done_out[rows], done_in=done_in[rows], budget=budget - turned[rows]), stepping)  # fmt: skip
            bending[rows], mom[rows], tilt[rows], pending[rows] = step.bending, step.momentum, step.tilt, 0.5
            turn_limit[rows] = step.turn_limit(q[rows])
        bfield = bending[rows]
        psi, surface, outward = _next_surface(position[rows], mom[rows], q[rows], bfield, layers, supports,
                                              done_out[rows], done_in[rows], budget - turned[rows])  # fmt: skip
        stops = np.isfinite(psi) & (turn_limit[rows] < psi)
        if stops.any():  # a piece of a long step: the particle stops on its way, crossing nothing
            stop_rows, stop_turn = rows[stops], turn_limit[rows[stops]]
            moved = move_along_helix(position[stop_rows], mom[stop_rows], q[stop_rows], bfield[stops], stop_turn)
            position[stop_rows], mom[stop_rows] = moved[0], _arrived(moved[1], stop_rows, stop_turn, tilt, pending)
            turned[stop_rows] += stop_turn
            rows, psi, surface, outward = rows[~stops], psi[~stops], surface[~stops], outward[~stops]
        going = np.isfinite(psi)
        alive[rows[~going]] = False
        rows, psi, surface, outward = rows[going], psi[going], surface[going], outward[going]
        bfield = bending[rows]
        if not len(rows):
            continue
        done_out[rows[outward], surface[outward]] = True
        done_in[rows[~outward], surface[~outward]] = True

        at_support = surface < n_supports
        if at_support.any():
            at = rows[at_support]
            moved = move_along_helix(position[at], mom[at], q[at], bfield[at_support], psi[at_support])
            position[at], mom[at] = moved[0], _arrived(moved[1], at, psi[at_support], tilt, pending)
            turned[at] += psi[at_support]
            through_support(at, surface[at_support], outward[at_support])

        keep = ~at_support
        rows, psi, layer, bfield = rows[keep], psi[keep], surface[keep] - n_supports, bfield[keep]
        if not len(rows):
            continue
        point, direction = move_along_helix(position[rows], mom[rows], q[rows], bfield, psi)
        candidates = layers.candidates(layer, point, *_margins(point, direction, layers, layer))
        _cross_layer(rows, candidates, psi, position, mom, q, turned, crossed, bending, budget, geometry, records,
                     through_module, tilt, pending)  # fmt: skip

    if not records:
        empty = np.zeros(0, np.int64)
        return ModuleCrossings(empty, empty, np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0), empty,
                               np.zeros(0, dtype=bool))  # fmt: skip
    return ModuleCrossings(*(np.concatenate(column) for column in zip(*records, strict=True)))


def _arrived(mom: np.ndarray, rows: np.ndarray, psi: np.ndarray, tilt: np.ndarray, pending: np.ndarray) -> np.ndarray:
    """The momenta [n, 3] of particles ``rows`` arriving after a turn ``psi`` along their helix, with the turn
    of their polar direction added (``tilt`` per radian, ``pending`` of it still to come in the current step's
    first crossing; none in a uniform field)."""
    if not tilt[rows].any():
        return mom
    arrived = turn_polar(mom, pending[rows] * psi * tilt[rows])
    pending[rows] = 1.0
    return arrived


def _cross_layer(rows, candidates, psi_nominal, position, mom, q, turned, crossed, bending, budget, geometry, records,
                 through_module, tilt, pending) -> None:  # fmt: skip
    """Take particles ``rows`` (in the fields ``bending[rows]``, their polar directions turning by ``tilt`` per
    radian, :func:`_arrived`) through the candidate modules [n, K] of one layer, nearest crossing first,
    re-solving the others that the track crosses from each crossing (Newton from the nominal
    surface's crossing ``psi_nominal``, then from the previous solution); records the crossings. A candidate that
    the track misses before the first scattering is not tried again after it; a particle that ends in a module
    (``through_module``) crosses no more."""
    guess = np.repeat(psi_nominal[:, None], candidates.shape[1], axis=1)
    while len(rows) and candidates.shape[1]:
        psi = _solve(position[rows], mom[rows], q[rows], bending[rows], geometry, candidates, guess)
        psi = np.where(turned[rows, None] + psi <= budget, psi, np.inf)
        pick = np.argmin(psi, axis=1)
        best = psi[np.arange(len(rows)), pick]
        going = np.isfinite(best)
        rows, candidates, psi, pick, best = (a[going] for a in (rows, candidates, psi, pick, best))
        if not len(rows):
            return
        at = np.arange(len(rows))
        module = candidates[at, pick]
        position[rows], arriving = move_along_helix(position[rows], mom[rows], q[rows], bending[rows], best)
        arriving = _arrived(arriving, rows, best, tilt, pending)
        mom[rows] = arriving
        turned[rows] += best
        u, v, _ = geometry.to_local(module, position[rows])
        # the last module of the layer on the particle's way (no other candidate ahead) carries the layer's material
        last = ~np.isfinite(np.where(np.arange(psi.shape[1]) == pick[:, None], np.inf, psi)).any(axis=1)
        ended = through_module(rows, module, crossed[rows], last)
        records.append((rows, module, position[rows].copy(), arriving.copy(), u, v, crossed[rows].copy(), ended))
        crossed[rows] += 1
        # what is left: the other candidates ahead, solved again from this crossing
        psi[at, pick] = np.inf
        candidates = np.where(np.isfinite(psi), candidates, -1)
        guess = psi - best[:, None]
        keep = (candidates >= 0).any(axis=1) & ~ended
        rows, candidates, guess = rows[keep], candidates[keep], guess[keep]
        width = int((candidates >= 0).sum(axis=1).max()) if len(rows) else 0
        order = np.argsort(candidates < 0, axis=1, kind="stable")[:, :width]
        candidates = np.take_along_axis(candidates, order, axis=1)
        guess = np.take_along_axis(guess, order, axis=1)


def _solve(position, mom, q, bfield, geometry: ModuleGeometry, candidates, guess) -> np.ndarray:
    """Turning angle [n, K] from each particle's state to the plane of each candidate module, where the crossing
    lies ahead and inside the module's bounds; inf elsewhere (and for padding)."""
    pt, radius, phi0, omega = helix_parameters(position, mom, q, bfield)
    dz_dpsi = radius * mom[:, 2] / pt
    valid = candidates >= 0
    module = np.maximum(candidates, 0)
    normal = geometry.rot[module, :, 2]  # [n, K, 3]
    offset = position[:, None, :] - geometry.c[module]  # state relative to the module centre
    psi = np.where(np.isfinite(guess), guess, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        f, heading = _plane_distance(psi, offset, normal, radius, phi0, omega, dz_dpsi)
        for _ in range(_NEWTON_ITERATIONS):
            slope = radius[:, None] * (normal[..., 0] * np.cos(heading) + normal[..., 1] * np.sin(heading))
            slope = slope + dz_dpsi[:, None] * normal[..., 2]
            psi = psi - f / slope
            f, heading = _plane_distance(psi, offset, normal, radius, phi0, omega, dz_dpsi)
            if not np.any(valid & (np.abs(f) >= _ON_PLANE_MM) & np.isfinite(f)):
                break
        ok = valid & np.isfinite(psi) & (psi > _AHEAD) & (np.abs(f) < _ON_PLANE_MM)
        # where on the module: local (u, v) of the crossing point
        length = 2.0 * radius[:, None] * np.sin(0.5 * psi)
        angle = phi0[:, None] + omega[:, None] * 0.5 * psi
        rel = offset + np.stack([length * np.cos(angle), length * np.sin(angle), psi * dz_dpsi[:, None]], axis=-1)
        local = np.einsum("nkji,nkj->nki", geometry.rot[module], rel)
    rows_flat = module.ravel()
    inside = geometry.inside(rows_flat, local[..., 0].ravel(), local[..., 1].ravel()).reshape(module.shape)
    return np.where(ok & inside, psi, np.inf)


def _plane_distance(psi, offset, normal, radius, phi0, omega, dz_dpsi):
    """Signed distance [n, K] of the helix point at ``psi`` from each module plane, and the heading there."""
    length = 2.0 * radius[:, None] * np.sin(0.5 * psi)
    angle = phi0[:, None] + omega[:, None] * 0.5 * psi
    f = (
        normal[..., 0] * (offset[..., 0] + length * np.cos(angle))
        + normal[..., 1] * (offset[..., 1] + length * np.sin(angle))
        + normal[..., 2] * (offset[..., 2] + psi * dz_dpsi[:, None])
    )
    return f, phi0[:, None] + omega[:, None] * psi


def _margins(point, direction, layers: ModuleLayers, layer):
    """Half widths (φ in rad, along in mm) of the box on the nominal surface where the layer's modules can be
    crossed: how far φ and z (barrel) or r (endcap) move while the track crosses the layer's spread."""
    r = np.maximum(np.hypot(point[:, 0], point[:, 1]), 1e-9)
    p_r = (point[:, 0] * direction[:, 0] + point[:, 1] * direction[:, 1]) / r
    p_phi = (point[:, 0] * direction[:, 1] - point[:, 1] * direction[:, 0]) / r
    p_z = direction[:, 2]
    travel = 2.0 * layers.spread[layer] + _BIN_MARGIN_MM
    with np.errstate(divide="ignore", invalid="ignore"):
        # per unit of the layer's thickness direction (r on a barrel, z on an endcap)
        across = np.where(layers.barrel[layer], np.abs(p_r), np.abs(p_z))
        along_rate = np.where(layers.barrel[layer], np.abs(p_z), np.abs(p_r)) / across
        phi_rate = np.abs(p_phi) / (r * across)
    along_margin = np.nan_to_num(travel * along_rate, nan=np.inf, posinf=np.inf) + _BIN_MARGIN_MM
    phi_margin = np.nan_to_num(travel * phi_rate, nan=np.inf, posinf=np.inf) + _BIN_MARGIN_MM / r
    return phi_margin, along_margin


def _next_turn(position, mom, q, bfield, *, layers, supports, done_out, done_in, budget) -> np.ndarray:
    """The turning angle [n] of :func:`_next_surface`."""
    return _next_surface(position, mom, q, bfield, layers, supports, done_out, done_in, budget)[0]


def _next_surface(position, mom, q, bfield, layers: ModuleLayers, supports, done_out, done_in, budget):
    """Turning angle to the nearest nominal surface ahead not yet gone through in that direction (inf if none
    within ``budget``), its index (s < S: the passive cylinder ``supports[s]``, S + l: layer l) and whether the
    particle crosses it going outwards (radially on a cylinder, in |z| on a plane)."""
    frame = HelixFrame.of(position, mom, q, bfield)
    pt, radius, phi0, omega, z, dz_dpsi = frame.pt, frame.radius, frame.phi0, frame.omega, frame.z, frame.dz_dpsi
    n = len(position)
    barrel = np.flatnonzero(layers.barrel)
    endcap = np.flatnonzero(~layers.barrel)
    n_supports = len(supports)
    cylinder_radius = np.concatenate([[support.radius for support in supports], layers.nominal[barrel]])
    cylinder_surface = np.concatenate([np.arange(n_supports), barrel + n_supports])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        psi_cyl, d = frame.cylinder_crossings(cylinder_radius)  # [2, n, C], [n, C]
        z_cyl = z[None, :, None] + psi_cyl * dz_dpsi[None, :, None]
        # along the circle, the crossings alternate: from inside (d > 0) the first one goes outwards
        first = np.stack((psi_cyl[0] <= psi_cyl[1], psi_cyl[1] < psi_cyl[0]))
        out_cyl = first == (d > 0.0)[None]
        half_length = np.array([support.half_length for support in supports])
        z_low = np.concatenate([-half_length, layers.extent[barrel, 0]])
        z_high = np.concatenate([half_length, layers.extent[barrel, 1]])
        spread = np.concatenate([np.zeros(n_supports), layers.spread[barrel]])
        margin = np.concatenate([np.zeros(n_supports), np.full(len(barrel), _EXTENT_MARGIN_MM)])
        margin = (2.0 * spread[None, :] * np.abs(mom[:, 2] / pt)[:, None] + margin[None, :])[None]
        ok = (psi_cyl > _AHEAD) & (z_cyl >= z_low - margin) & (z_cyl <= z_high + margin)
        ok &= ~np.where(out_cyl, done_out[None, :, cylinder_surface], done_in[None, :, cylinder_surface])
        psi_cyl = np.where(ok, psi_cyl, np.inf)
        pick = np.argmin(psi_cyl, axis=0)  # which root, [n, C]
        psi_cyl = np.take_along_axis(psi_cyl, pick[None], axis=0)[0]
        out_cyl = np.take_along_axis(out_cyl, pick[None], axis=0)[0]

        # planes: z is linear in psi
        disk_z = layers.nominal[endcap]
        psi_disk = (disk_z[None, :] - z[:, None]) / dz_dpsi[:, None]
        out_disk = mom[:, 2, None] * np.sign(disk_z)[None, :] > 0.0
        ok = np.isfinite(psi_disk) & (psi_disk > _AHEAD) & (psi_disk <= budget[:, None] + _TWO_PI * 0.01)
        ok &= ~np.where(out_disk, done_out[:, endcap + n_supports], done_in[:, endcap + n_supports])
        ok &= psi_disk < psi_cyl.min(axis=1, initial=np.inf)[:, None]  # only planes before the nearest cylinder
        row, disk = np.nonzero(ok)
        xd, yd = chord(position[row], radius[row], phi0[row], omega[row], psi_disk[row, disk])
        rd = np.hypot(xd, yd)
        r_margin = 2.0 * layers.spread[endcap[disk]] * pt[row] / np.abs(mom[row, 2]) + _EXTENT_MARGIN_MM
        ok[row, disk] = (rd >= layers.extent[endcap[disk], 0] - r_margin) & (
            rd <= layers.extent[endcap[disk], 1] + r_margin
        )
        psi_disk = np.where(ok, psi_disk, np.inf)

    candidates = np.concatenate((psi_cyl, psi_disk), axis=1)
    surfaces = np.concatenate([cylinder_surface, endcap + n_supports])
    outward = np.concatenate((out_cyl, out_disk), axis=1)
    pick = np.argmin(candidates, axis=1) if n else np.zeros(0, np.int64)
    psi = candidates[np.arange(n), pick]
    psi[psi > budget + _TWO_PI * 0.01] = np.inf
    return psi, surfaces[pick], outward[np.arange(n), pick]
