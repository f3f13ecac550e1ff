"""Free hits found by following kept tracks beyond their ends, layer by layer, with a Kalman filter.

The track building can end a particle's chain early and leave the rest of its hits on no track; the piece it
writes then holds fewer than half of the particle's hits and counts as a fake.  A piece of five or six hits fits
with a wide error on its way beyond its ends (five endcap disks measure the radius to a third of a millimetre over a
few centimetres), so fixed windows around its extrapolation (:mod:`~tracking_algs.fitting.extension`) either miss
the particle's next hits or take other particles' hits.  Here each kept track's fitted state is followed across the
layers beyond its first hit (inwards, from the outermost of them) and beyond its last hit (outwards): on each layer
the free hits around the predicted crossing are judged by their χ² against the prediction, on each hit's own surface
with the prediction's covariance; the best one below the cut updates the state, which then goes on through the
layer's material to the next layer.  Each hit taken narrows the prediction for the next layer, as in a
combinatorial Kalman filter, without its branching: a track takes at most one hit per layer, or two on two
overlapping modules of it (the second judged against the state updated with the first), and a hit goes to one
track.  The layers are those the straight line in (r, z) crosses
(:class:`~tracking_algs.fitting.navigation.MaterialMap`): inwards from the first hit to the perigee's point on the
beam line, outwards from the last hit along the track's polar direction.  The way inwards starts from the fitted
perigee, taken out to the outermost layer inside the first hit; the way outwards from the perigee taken through the
material of the track's own layers to its last hit.  What is found is proposed to the track, and its refit decides
(:meth:`~tracking_algs.fitting.selection.TrackSelection.apply`, ``follow_tracks``).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from tracking_algs.event import Spacepoints, TrackCandidates
from tracking_algs.fitting.extension import track_ends
from tracking_algs.fitting.filtering import gain_update, measurement_residual
from tracking_algs.fitting.helix import bound_to_free, propagate
from tracking_algs.fitting.navigation import BEAM_PIPE_KEY, NO_LAYER, BoundStates, Crossings, layer_key, traverse
from tracking_algs.fitting.results import FitResults
from tracking_algs.fitting.scattering import path_in_x0, through_material
from tracking_algs.fitting.stacked import transport_sandwich
from tracking_algs.ranges import first_of_runs

if TYPE_CHECKING:
    from tracking_algs.fitting.kalman import KalmanFitter

#: how far (mm) a module's centre may lie from its layer's nominal surface (5.6 mm in the TrackML layout, along the
#: radius in the barrels and along z in the endcaps)
LAYER_DEPTH_MM = 6.0
#: added to the window across a track (mm): the track's curvature over the depth of a layer, and the modules' thickness
CURVE_MARGIN_MM = 1.0
#: how far (mm, straight in r and z) beyond its last hit a track is followed outwards
OUTWARD_REACH_MM = 3000.0


def followed_hits(
    fitter: KalmanFitter,
    spacepoints: Spacepoints,
    candidates: TrackCandidates,
    fit: FitResults,
    chi2_cut: float,
    window_sigmas: float,
    max_window_mm: float,
    pool: np.ndarray | None = None,
) -> np.ndarray:
    """For each spacepoint [N], the track label (of ``candidates``) that following the track from its fitted perigee
    (``fit``, rows by ``track_id``; the tracks fitted OK) proposes the hit to, or −1 (see the module docstring): the
    free hits (label −1), or with ``pool`` [N] the hits it marks (never a track's own).  Without ``pool`` the hits of
    the other tracks are judged as well, and a track whose best hit on a layer is another track's stops there: its
    way on is that track's (a piece of a particle whose other hits another track holds would otherwise take other
    particles' free hits around them).  On each layer the offered hits of that layer within ``window_sigmas``
    standard deviations of the predicted crossing across the track and the layer's depth along it
    (:data:`LAYER_DEPTH_MM`), at most ``max_window_mm`` away, are judged, and the best one whose χ² is below
    ``chi2_cut`` is taken.  ``fitter`` gives the geometry, the field and the material effects."""
    labels = candidates.labels
    proposal = np.full(len(labels), -1, dtype=np.int64)
    offered = np.arange(len(labels)) if pool is None else np.flatnonzero(pool)
    offered = offered[fitter.measurable(spacepoints, offered)]  # a hit the fitter cannot measure is never proposed
    if not len(offered) or not len(fit):
        return proposal
    # each fitted track's first and last hits (nearest the origin and farthest from it)
    track_ids, first, last = track_ends(labels, spacepoints.distance)
    row = np.searchsorted(fit.track_id, track_ids)
    fitted = row < len(fit)
    fitted[fitted] = (fit.track_id[row[fitted]] == track_ids[fitted]) & fit.ok[row[fitted]]
    first, last, row = first[fitted], last[fitted], row[fitted]
    if not len(row):
        return proposal
    follower = _Follower(fitter, spacepoints, offered, labels[offered], fit.track_id[row], chi2_cut, window_sigmas,
                         max_window_mm, stop_at_owned=pool is None)  # fmt: skip
    material = fitter.material_map()
    n = len(row)
    no_layer = np.full(n, NO_LAYER)
    start = BoundStates.at_perigee(fit.params[row], fit.cov[row])
    r, z = spacepoints.r, spacepoints.z
    first_layer = layer_key(spacepoints.volume_id[first], spacepoints.layer_id[first])
    inwards = material.crossings(r[first], z[first], np.zeros(n), fit.params[row, 1], (first_layer, no_layer))
    found = follower.follow(start, inwards.take(inwards.key != BEAM_PIPE_KEY), first_direction=1, direction=-1)
    # outwards: through the material of the track's own layers, then on beyond its last hit along its polar direction
    last_layer = layer_key(spacepoints.volume_id[last], spacepoints.layer_id[last])
    span = material.crossings(np.zeros(n), fit.params[row, 1], r[last], z[last], (no_layer, last_layer))
    at_last = traverse(start.params, start.cov, start.kind, start.position, span, fitter.field, fitter.config, 1)
    theta = fit.params[row, 3]
    beyond = material.crossings(r[last], z[last], r[last] + OUTWARD_REACH_MM * np.sin(theta),
                                z[last] + OUTWARD_REACH_MM * np.cos(theta), (last_layer, no_layer))  # fmt: skip
    found_out = follower.follow(at_last, beyond, first_direction=1, direction=1)
    for hits_found in (found, found_out):
        track, hit = hits_found
        proposal[offered[hit]] = fit.track_id[row[track]]
    return proposal


class _Follower:
    """Follows the states of the tracks ``track_label`` [M] through layer crossings, taking the best hit of each
    layer among the spacepoints ``offered`` (those of track ``owner``, −1 for free hits; never a state's own track's;
    see the module docstring); a hit goes to one state at most, over every :meth:`follow`.  With ``stop_at_owned`` a
    state whose best hit is another track's takes it not and stops."""

    def __init__(
        self, fitter, spacepoints, offered, owner, track_label, chi2_cut, window_sigmas, max_window_mm, stop_at_owned
    ) -> None:
        self.fitter = fitter
        self.hits = fitter.hit_table(spacepoints, offered)
        self.tree = cKDTree(self.hits["xyz"])
        self.module = spacepoints.module_key[offered]
        self.owner, self.track_label = owner, track_label
        self.taken = np.zeros(len(offered), dtype=bool)
        self.stop_at_owned = stop_at_owned
        self.stopped = np.zeros(len(track_label), dtype=bool)
        self.chi2_cut, self.window_sigmas, self.max_window_mm = chi2_cut, window_sigmas, max_window_mm

    def follow(self, states: BoundStates, crossings: Crossings, first_direction: int, direction: int):
        """Take ``states`` through their ``crossings`` (``segment`` indexes the states) in rank order, the first
        step ``first_direction`` (+1 forward along the track, −1 backward), the others ``direction``; returns
        ``(track, hit)``: the states and the hits (indices into the offered hits) taken on the way.  On a layer
        where a state takes a hit it may take a second one, on another module (two overlapping modules of the layer
        crossed), judged against the state updated with the first."""
        states = states.copy()
        self.stopped[:] = False
        moved_yet = np.zeros(len(states.params), dtype=bool)
        tracks, taken_hits = [], []
        for rank in range(int(crossings.rank.max(initial=-1)) + 1):
            at_rank = crossings.take(crossings.rank == rank)
            at_rank = at_rank.take(~self.stopped[at_rank.segment])
            way = np.where(moved_yet[at_rank.segment], direction, first_direction)
            # the states that take no hit here stay on the layer's nominal surface
            rows, at_rank = states.move_to(at_rank.segment, at_rank, self.fitter.field, self.fitter.config.stepping,
                                           way)  # fmt: skip
            moved_yet[rows] = True
            with_hit, first_hits = self._take_best_hits(states, rows, at_rank.key)
            twins, twin_hits = self._take_best_hits(states, with_hit, at_rank.key[np.isin(rows, with_hit)],
                                                    other_module_than=self.module[first_hits])  # fmt: skip
            tracks += [with_hit, twins]
            taken_hits += [first_hits, twin_hits]
            params, cov = states.params[rows], states.cov[rows]
            path = path_in_x0(params, states.kind[rows], at_rank.x_over_x0, states.plane[rows])
            through_material(params, cov, path, self.fitter.config, direction=direction)
            states.params[rows], states.cov[rows] = params, cov
        if not tracks:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        return np.concatenate(tracks), np.concatenate(taken_hits)

    def _take_best_hits(
        self, states: BoundStates, rows: np.ndarray, layer: np.ndarray, other_module_than: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """For ``states`` ``rows`` [M], each on (or near) layer ``layer`` [M]: the best offered hit of that layer below
        the χ² cut that no state has taken yet (on another module than ``other_module_than`` [M] where given), one
        state per hit; the states that find one are updated with it, onto its surface, and the hit is taken.
        Returns ``(rows, hits)`` of the states that took a hit (hits as indices into the offered hits)."""
        hits = self.hits
        params, cov = states.params[rows], states.cov[rows]
        kind, position, plane = states.kind[rows], states.position[rows], states.plane[rows]
        predicted, to_free = bound_to_free(params, kind, position, plane)
        spread = np.einsum("nij,njk,nik->n", to_free[:, :3], cov, to_free[:, :3])  # trace of the xyz covariance
        across = self.window_sigmas * np.sqrt(np.maximum(spread, 0.0)) + CURVE_MARGIN_MM
        # a hit lies on its module, up to LAYER_DEPTH_MM from the layer's nominal surface: along the track, that much
        # over the cosine of the incidence angle
        along = LAYER_DEPTH_MM * path_in_x0(params, kind, np.ones(len(rows)), plane) + across
        near = self.tree.query_ball_point(predicted[:, :3], np.minimum(np.hypot(across, along), self.max_window_mm))
        counts = np.fromiter((len(found) for found in near), dtype=np.int64, count=len(near))
        state = np.repeat(np.arange(len(rows)), counts)
        hit = np.fromiter(itertools.chain.from_iterable(near), dtype=np.int64, count=int(counts.sum()))
        keep = (
            (hits["layer"][hit] == layer[state]) & ~self.taken[hit] & (self.owner[hit] != self.track_label[rows[state]])
        )
        # within the window across the track's straight line through the prediction, and along it
        offset = hits["xyz"][hit] - predicted[state, :3]
        heading = predicted[state, 3:6]
        ahead = np.einsum("ni,ni->n", offset, heading)
        aside = np.linalg.norm(offset - ahead[:, None] * heading, axis=1)
        keep &= (aside <= np.minimum(across[state], self.max_window_mm)) & (np.abs(ahead) <= along[state])
        if other_module_than is not None:
            keep &= self.module[hit] != other_module_than[state]
        state, hit = state[keep], hit[keep]
        if not len(state):
            return rows[:0], hit
        planes = hits["plane"][hit] if "plane" in hits else None
        step = propagate(params[state], kind[state], position[state], hits["kind"][hit], hits["position"][hit],
                         self.fitter.field, plane_from=plane[state], plane_to=planes,
                         stepping=self.fitter.config.stepping)  # fmt: skip
        residual = measurement_residual(hits["value"][hit], step.params, hits["kind"][hit])
        update = gain_update(step.params, transport_sandwich(step.jacobian, cov[state]), residual,
                             hits["variance"][hit])  # fmt: skip
        pair = np.flatnonzero(step.ok & (update.chi2 < self.chi2_cut) & np.isfinite(update.chi2))
        # the best hit per state, then the best state per hit
        pair = pair[np.lexsort((update.chi2[pair], state[pair]))]
        pair = pair[first_of_runs(state[pair])]
        if self.stop_at_owned:
            owned = self.owner[hit[pair]] >= 0
            self.stopped[rows[state[pair[owned]]]] = True
            pair = pair[~owned]
        pair = pair[np.lexsort((update.chi2[pair], hit[pair]))]
        pair = pair[first_of_runs(hit[pair])]
        pair = pair[np.argsort(state[pair])]
        took, hit = rows[state[pair]], hit[pair]
        self.taken[hit] = True
        states.params[took], states.cov[took] = update.params[pair], update.cov[pair]
        states.kind[took], states.position[took] = hits["kind"][hit], hits["position"][hit]
        if planes is not None:
            states.plane[took] = planes[pair]
        return took, hit
