"""The built-in track fitter: a Kalman filter batched over tracks, with outlier rejection and perigee output.

For each candidate track: its hits are sorted by distance from the origin (the order a track from the beam line
crosses them), a seed comes from three of them (:mod:`~tracking_algs.fitting.seeding`), the forward filter and
the smoother run (:mod:`~tracking_algs.fitting.filtering`) — twice for a track with two hits a few mm apart (see
``close_hits_mm`` in :class:`~tracking_algs.fitting.config.KalmanConfig`) — and the smoothed state at the first
hit is taken through the beam pipe to the perigee.  A refit (:meth:`KalmanFitter.refit`) of tracks that an earlier fit
measured starts those with two hits a few mm apart from that fit's perigee instead, in one pass.

Where the hits are measured is set by the geometry the fitter is given.  With a module geometry
(:class:`~tracking_algs.modules.ModuleGeometry`: the real ``detectors.csv`` or the built-in TrackML modules), each
hit is a measurement of the local (u, v) on the plane of its own module, with the errors its spacepoint
carries along the module's u and v (the cell pitch / √12 for real hits, the cluster's error for simulated ones;
the long direction of a strip is a weak measurement, not a missing one) and the module's material at the
track's incidence angle; two hits of one layer on overlapping modules are two steps, in the order the track
crosses them.  Without one, each hit is a measurement of (Phi, z) on its layer's nominal cylinder or (Phi, r) on
its disk, with the errors the spacepoints carry.  The material of the layers crossed without a hit comes from the
same geometry, that of the passive cylinders from the detector (its beam pipe) or, with modules, from the TrackML
detector (its beam pipe and pixel support tube; :class:`~tracking_algs.fitting.navigation.MaterialMap`).

Outliers are judged on each hit's predicted χ² — the χ² of the hit against the prediction from *all other*
hits of the track (the unbiased smoothed residual).  The worst hit above the cut is removed and the track is
refitted from a new seed, up to ``max_outlier_refits`` times, so a track with one rejected hit gets exactly the
fit of the track without that hit.  (Gating on the forward filter's prediction alone is not used: with three
or four hits behind it, a prediction that is off by a legitimate 2-3 σ rejects every later hit.)  The step to the
perigee comes after that decision, for the fits that stand: a fit that a wrong hit made diverge there is refitted
without that hit like any other.

A track whose fit failed, or whose p-value still fails afterwards, is refitted without its first hit, without its
last, its first two, its last two, ... (up to ``max_trimmed_hits`` at either end), and takes the passing fit that
keeps the most hits (a variant that would keep fewer than ``min_trimmed_hits``, the fewest a written track holds,
is not fitted): where the track building started a track on another particle's inner hits, or ended it on a
neighbour's outer ones, those drag the seed so far that the outlier refits remove the track's own hits instead.

A fit whose helix is too tight to join its first and last hits
(:func:`~tracking_algs.fitting.helix.spans_chord`) has diverged, whatever its χ²: a filter that runs off to a tiny
radius can absorb every residual in its Jacobians.

With ``processes`` other than 1, an event's tracks are shared out over worker processes
(:mod:`~tracking_algs.fitting.processes`); close the fitter (:meth:`KalmanFitter.close`, or ``with``) to stop them.
"""

from __future__ import annotations

import multiprocessing

import attrs
import numpy as np
from scipy.special import chdtrc

from inference_iface.cores import usable_cores
from tracking_algs.errors import FittingError
from tracking_algs.event import Spacepoints, TrackCandidates
from tracking_algs.fitting.config import KalmanConfig
from tracking_algs.fitting.filtering import (
    ForwardPass,
    Measurements,
    Smoothed,
    finite_states,
    forward_filter,
    smooth,
    to_perigee,
)
from tracking_algs.fitting.following import followed_hits
from tracking_algs.fitting.helix import SurfaceKind, bound_to_free, free_to_bound, propagate, spans_chord
from tracking_algs.fitting.navigation import NO_LAYER, Crossings, MaterialMap, layer_key
from tracking_algs.fitting.processes import FitWorkers, WorkerStopped
from tracking_algs.fitting.results import FitResults, FitStatus, transverse_momentum
from tracking_algs.fitting.seeding import seed_parameters
from tracking_algs.fitting.stacked import transport_sandwich
from tracking_algs.geometry import Detector
from tracking_algs.magnetic_field import MagneticField, UniformField
from tracking_algs.modules import ModuleGeometry
from tracking_algs.ranges import concatenated_ranges

#: the per-track columns of :class:`_Output`
_TRACK_COLUMNS = ("params", "cov", "chi2", "ndf", "status", "n_hits")


def _track_hits(tracks: np.ndarray, offsets: np.ndarray, ordered: np.ndarray) -> np.ndarray:
    """The hits (rows of the hit table) of ``tracks``, track by track in crossing order."""
    return ordered[concatenated_ranges(offsets[tracks], offsets[tracks + 1] - offsets[tracks])]


class KalmanFitter:
    """Kalman fitter for the layers of ``detector`` and, when given, the module planes of ``modules`` (see the
    module docstring); satisfies :class:`~tracking_algs.fitting.hook.TrackFitter`."""

    def __init__(
        self,
        detector: Detector,
        config: KalmanConfig | None = None,
        modules: ModuleGeometry | None = None,
        field: MagneticField | None = None,
    ) -> None:
        self.field = UniformField(detector.bfield_t) if field is None else field
        if self.field.centre_t == 0.0:
            raise FittingError("KalmanFitter needs a magnetic field to measure momentum; the field is 0 T")
        if config is not None and not isinstance(config, KalmanConfig):
            raise FittingError(
                f"KalmanFitter config: got {type(config).__name__}; expected a KalmanConfig (KalmanConfig(**options), "
                "or make_fitter('kalman', detector, options) for a mapping)"
            )
        self.detector = detector
        self.config = config or KalmanConfig()
        self.modules = modules
        surfaces = detector.surfaces
        keys = np.array([layer_key(s.volume_id, s.layer_id) for s in surfaces], dtype=np.int64)
        self._order = np.argsort(keys)
        self._keys = keys[self._order]
        self._kind = np.array([SurfaceKind.CYLINDER if s.kind == "barrel" else SurfaceKind.DISK for s in surfaces])
        self._position = np.array([s.position for s in surfaces], dtype=np.float64)
        self._x_over_x0 = np.array([s.x_over_x0 for s in surfaces], dtype=np.float64)
        material_effects = self.config.multiple_scattering or self.config.energy_loss
        self._layers = MaterialMap(detector, modules)
        self._material = self._layers if material_effects else None
        self._workers: FitWorkers | None = None
        self._refitter: KalmanFitter | None = None

    def fit(self, spacepoints: Spacepoints, candidates: TrackCandidates) -> FitResults:
        """Fit every candidate track; see :class:`~tracking_algs.fitting.results.FitResults` for the output."""
        return self.refit(spacepoints, candidates, None)

    def refit(self, spacepoints: Spacepoints, candidates: TrackCandidates, earlier: FitResults | None) -> FitResults:
        """Fit every candidate track as :meth:`fit` does, except the tracks with two consecutive hits closer than
        ``close_hits_mm``, which :meth:`fit` filters and smooths twice, that ``earlier`` (fits of the same tracks, by
        track id; None: none) fitted: each of those is filtered and smoothed once, from its earlier perigee state
        taken out to its first hit, with that state's covariance × ``second_pass_cov_inflation`` (the start of the
        second pass, :class:`~tracking_algs.fitting.config.KalmanConfig`), instead of from a seed of three of its hits
        and then again from the first pass's state.  The earlier fit has measured most of the track's hits (a track
        refitted with more hits, pieces of one particle refitted as one), so it stands in for the first pass.  A
        track whose earlier perigee does not lead forwards to its first hit's surface is fitted as :meth:`fit` fits
        it."""
        if len(candidates.labels) != len(spacepoints):
            raise FittingError(
                f"track candidates have {len(candidates.labels)} labels but there are {len(spacepoints)} spacepoints"
            )
        track_ids, offsets, rows = candidates.groups()
        shares = self.worker_shares(len(track_ids))
        if shares > 1:
            workers = self._started_workers()
            try:
                return workers.fit(spacepoints, candidates, track_ids, np.diff(offsets), shares, earlier)
            except WorkerStopped:
                self.close()  # the next event starts new workers
                raise
        hits = self.hit_table(spacepoints, rows)
        n_tracks = len(track_ids)
        counts = np.diff(offsets)
        track_of_hit = np.repeat(np.arange(n_tracks), counts)
        # hits of each track in crossing order: ordered[offsets[k]:offsets[k+1]] index the rows of `hits`; one
        # stable sort on (track, distance), which no other track's hits can change
        ordered = np.lexsort((hits["distance"], track_of_hit))

        out = _Output(n_tracks, len(rows))
        removed = np.zeros(len(rows), dtype=bool)  # hits (rows of `hits`) dropped as outliers
        refits = np.zeros(n_tracks, dtype=np.int64)  # outliers removed so far, per track
        self._fit_tracks(np.argsort(counts, kind="stable"), offsets, ordered, hits, removed, refits, out,
                         self.config.min_hits, _earlier_perigees(track_ids, earlier))  # fmt: skip
        self._trim_failed(offsets, ordered, hits, out)
        return out.results(track_ids, offsets, rows)

    def material_map(self) -> MaterialMap:
        """The layers (and the passive cylinders) of this fitter's geometry, as the navigation crosses them."""
        return self._layers

    #: the hits found by following fitted tracks beyond their ends, layer by layer, among the free hits or those a
    #: ``pool`` marks (:func:`~tracking_algs.fitting.following.followed_hits`, with this fitter as its first argument)
    followed_hits = followed_hits

    def refitter(self) -> KalmanFitter:
        """The fitter for tracks whose hits earlier fits have cleaned already (the union of split pieces, less the
        hits their own fits rejected, :func:`~tracking_algs.fitting.hook.refitter`): this one's options with at most
        one outlier refit and no trimming, in this process.  A union that fails then stays apart, where the full
        procedure would try up to 2 × ``max_trimmed_hits`` variants of it, each with its outlier refits: passes
        that cost about as much for a few dozen tracks as for thousands."""
        if self._refitter is None:
            config = attrs.evolve(self.config, max_outlier_refits=min(self.config.max_outlier_refits, 1),
                                  max_trimmed_hits=0, processes=1)  # fmt: skip
            self._refitter = KalmanFitter(self.detector, config, self.modules, self.field)
        return self._refitter

    @property
    def worker_processes(self) -> int:
        """How many worker processes this fitter has running (0 until an event large enough starts them)."""
        return 0 if self._workers is None else self._workers.processes

    def close(self) -> None:
        """Stop the worker processes, if any started; the fitter can still fit (and starts them again)."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    def __enter__(self) -> KalmanFitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def worker_shares(self, n_tracks: int) -> int:
        """Into how many worker processes' shares an event of ``n_tracks`` tracks is dealt: as many as give each at
        least ``min_tracks_per_process`` tracks, up to ``processes`` (0: the usable cores); 1 (fitted in this
        process) where that is fewer than two, or in a daemonic process, which cannot start processes of its own."""
        shares = min(self._worker_count(), n_tracks // self.config.min_tracks_per_process)
        if shares < 2 or multiprocessing.current_process().daemon:
            return 1
        return shares

    def _worker_count(self) -> int:
        """The worker processes of the pool: ``processes``, or one per usable core for 0."""
        return self.config.processes or usable_cores()

    def _started_workers(self) -> FitWorkers:
        """The worker processes (:meth:`_worker_count` of them), started at the first event that needs them."""
        if self._workers is None:
            alone = KalmanFitter(self.detector, attrs.evolve(self.config, processes=1), self.modules, self.field)
            self._workers = FitWorkers(alone, self._worker_count())
        return self._workers

    def _fit_tracks(
        self, todo, offsets, ordered, hits, removed, refits: np.ndarray, out: _Output, fewest_hits: int,
        earlier: _Perigees | None = None,
    ) -> None:  # fmt: skip
        """Fit the tracks ``todo`` (in that order, in batches) with their outlier refits; a track whose refit would
        leave fewer than ``fewest_hits`` hits fails (see :meth:`_fit_batch`); ``earlier``: the perigees of their
        earlier fits (:meth:`refit`)."""
        # the few tracks of a batch that lose an outlier are refitted with the next batch (a pass of a few tracks
        # costs the fixed overhead of a whole one), the last batch's in passes of their own
        pending = todo[:0]
        for start in range(0, len(todo), self.config.batch_size):
            batch = np.concatenate((pending, todo[start : start + self.config.batch_size]))
            pending = self._fit_batch(batch, offsets, ordered, hits, removed, refits, out, fewest_hits, earlier)
        while len(pending):
            pending = self._fit_batch(pending, offsets, ordered, hits, removed, refits, out, fewest_hits, earlier)

    def _trim_failed(self, offsets, ordered, hits, out: _Output) -> None:
        """Refit the tracks whose fit failed, whose p-value is below ``trim_below_pvalue`` or whose outlier refits
        left them fewer than ``min_trimmed_hits`` hits: without their first hit, without their last, their first two,
        their last two, ... up to ``max_trimmed_hits`` (in crossing order, outlier refits included; none left with
        fewer than ``min_trimmed_hits`` hits); a track takes the passing fit that keeps the most hits (of equals, the
        first in that order), or keeps its own when none passes.  The trimmed hits count as outliers.  The variants
        of all the failing tracks are fitted together, in one set of batches."""
        config = self.config
        counts = np.diff(offsets)
        fewest_hits = max(config.min_hits, config.min_trimmed_hits)
        # a fit whose outliers took it below fewest_hits is failing too: a few hits of another particle at one end
        # can pull the fit so that the outlier refits reject the track's own hits instead
        poor = (out.pvalue() < config.trim_below_pvalue) | (out.n_hits < fewest_hits)
        failing = np.flatnonzero((counts > fewest_hits) & poor)
        # variant k · 2 + at_end trims k + 1 hits, from the last hit when at_end; per failing track, in that order
        trims = np.repeat(np.arange(1, config.max_trimmed_hits + 1), 2)
        at_end = np.tile([False, True], config.max_trimmed_hits)
        track = np.repeat(failing, len(trims))
        trim, from_end = np.tile(trims, len(failing)), np.tile(at_end, len(failing))
        possible = counts[track] - trim >= fewest_hits
        track, trim, from_end = track[possible], trim[possible], from_end[possible]
        if not len(track):
            return
        # each variant's hits: its track's, in crossing order, less the trimmed ones
        variant_counts = counts[track] - trim
        variant_offsets = np.concatenate(([0], np.cumsum(variant_counts)))
        skipped = np.where(from_end, 0, trim)
        slots = concatenated_ranges(offsets[track] + skipped, variant_counts)
        variant_hits = {name: column[ordered[slots]] for name, column in hits.items()}
        n_variants, n_slots = len(track), len(slots)
        tried = _Output(n_variants, n_slots)
        self._fit_tracks(np.argsort(variant_counts, kind="stable"), variant_offsets, np.arange(n_slots), variant_hits,
                         np.zeros(n_slots, dtype=bool), np.zeros(n_variants, dtype=np.int64), tried,
                         fewest_hits)  # fmt: skip
        passed = np.flatnonzero((tried.status == FitStatus.OK) & (tried.pvalue() >= config.trim_below_pvalue))
        # per track, the passing variant that keeps the most hits; of those, the first
        passed = passed[np.lexsort((passed, -tried.n_hits[passed], track[passed]))]
        chosen = passed[np.unique(track[passed], return_index=True)[1]]
        out.take(track[chosen], tried, chosen)
        out.outlier[_track_hits(track[chosen], offsets, ordered)] = True
        chosen_slots = _track_hits(chosen, variant_offsets, np.arange(n_slots))
        out.outlier[ordered[slots[chosen_slots]]] = tried.outlier[chosen_slots]

    def hit_table(self, spacepoints: Spacepoints, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Per-hit surface and measurement arrays for spacepoint ``rows``; a hit on the z axis or on no surface of the
        fitter's geometry raises FittingError naming its row."""
        bad, place = self._located(spacepoints, rows)
        unknown = place < 0
        if bad.any():
            row = int(rows[np.argmax(bad)])
            raise FittingError(
                f"spacepoint row {row} (hit_id {spacepoints.hit_id[row]}): x, y must not both be 0 (a hit on the z "
                f"axis has no azimuth to measure); got x={spacepoints.x[row]}, y={spacepoints.y[row]}, "
                f"z={spacepoints.z[row]}"
            )
        if unknown.any():
            row = int(rows[np.argmax(unknown)])
            where = (f"no module (volume_id={spacepoints.volume_id[row]}, layer_id={spacepoints.layer_id[row]}, "
                     f"module_id={spacepoints.module_id[row]}) in the fitter's module geometry"
                     if self.modules is not None else f"no detector surface with volume_id="
                     f"{spacepoints.volume_id[row]}, layer_id={spacepoints.layer_id[row]}")  # fmt: skip
            raise FittingError(f"spacepoint row {row} (hit_id {spacepoints.hit_id[row]}): {where}")
        x, y, z = spacepoints.x[rows], spacepoints.y[rows], spacepoints.z[rows]
        sigma = spacepoints.sigma[rows]
        xyz = np.column_stack((x, y, z))
        keys = layer_key(spacepoints.volume_id[rows], spacepoints.layer_id[rows])
        if self.modules is not None:
            return self._module_hits(place, xyz, sigma) | {"layer": keys}
        kind = self._kind[place]
        r = np.hypot(x, y)
        return {
            "kind": kind,
            "position": self._position[place],
            "x_over_x0": self._x_over_x0[place],
            "xyz": xyz,
            "value": np.column_stack((np.arctan2(y, x), np.where(kind == SurfaceKind.DISK, r, z))),
            "variance": np.column_stack(((sigma[:, 0] / r) ** 2, sigma[:, 1] ** 2)),
            "distance": r * r + z * z,
            "layer": keys,
        }

    def measurable(self, spacepoints: Spacepoints, rows: np.ndarray) -> np.ndarray:
        """Mask [len(rows)] of the spacepoint ``rows`` this fitter can measure (:meth:`hit_table` takes them): positions
        off the z axis, on a surface (a module) of its geometry (the :class:`Spacepoints` hold finite positions and
        positive errors only)."""
        bad, place = self._located(spacepoints, rows)
        return ~bad & (place >= 0)

    def _located(self, spacepoints: Spacepoints, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(bad, place)`` [len(rows)] of the spacepoint ``rows``: whether a row lies on the z axis, and its module
        (with a module geometry) or its surface (an index into the detector's surfaces), −1 where the fitter's
        geometry has none."""
        bad = (spacepoints.x[rows] == 0.0) & (spacepoints.y[rows] == 0.0)
        if self.modules is not None:
            return bad, self.modules.lookup(spacepoints.volume_id[rows], spacepoints.layer_id[rows],
                                            spacepoints.module_id[rows])  # fmt: skip
        keys = layer_key(spacepoints.volume_id[rows], spacepoints.layer_id[rows])
        where = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return bad, np.where(self._keys[where] == keys, self._order[where], -1)

    def _module_hits(self, module: np.ndarray, xyz: np.ndarray, sigma: np.ndarray) -> dict[str, np.ndarray]:
        """The hit table of hits at ``xyz`` on ``module`` (indices into the module geometry) measured on their
        modules' planes, with errors ``sigma`` along the modules' u and v."""
        modules = self.modules
        assert modules is not None
        u, v, _ = modules.to_local(module, xyz)
        plane = np.concatenate((modules.c[module, None, :], modules.rot[module].transpose(0, 2, 1)), axis=1)
        return {
            "kind": np.full(len(module), SurfaceKind.PLANE),
            "position": np.zeros(len(module)),
            "plane": plane,
            "x_over_x0": modules.x_over_x0[module],
            "xyz": xyz,
            "value": np.column_stack((u, v)),
            "variance": sigma**2,
            "distance": np.einsum("ni,ni->n", xyz, xyz),
        }

    def _fit_batch(
        self, tracks, offsets, ordered, hits, removed, refits: np.ndarray, out: _Output, fewest_hits: int,
        earlier: _Perigees | None = None,
    ) -> np.ndarray:  # fmt: skip
        """Fit ``tracks`` (indices into the candidate groups) without their ``removed`` hits; store the finished
        ones and return those to refit (fewer than ``max_outlier_refits`` outliers removed so far, counted in
        ``refits``), with their worst outlier marked in ``removed``.  A track whose refit would leave fewer than
        ``fewest_hits`` hits (above ``min_hits``) is not refitted: it ends with status ``TOO_FEW_HITS``.  Tracks
        with a perigee in ``earlier`` start from it (:meth:`refit`)."""
        config = self.config
        starts, counts = offsets[tracks], offsets[tracks + 1] - offsets[tracks]
        length = int(counts.max(initial=0))
        slot = np.arange(length)
        valid = slot[None, :] < counts[:, None]
        # hit_index[t, j]: the j-th hit (in crossing order) of track t, as an index into `hits`; -1 on padding
        hit_index = np.where(valid, ordered[np.minimum(starts[:, None] + slot[None, :], len(ordered) - 1)], -1)
        kept = valid & ~removed[hit_index]
        fitted = self._filter_and_smooth(hit_index, kept, hits, None if earlier is None else earlier.take(tracks))
        status, hit_chi2 = fitted.status.copy(), fitted.hit_chi2
        cut = np.where(np.isfinite(hits["variance"][hit_index, 1]), config.outlier_chi2_cut_2d,
                       config.outlier_chi2_cut_1d)  # fmt: skip
        ratio = np.where(kept, hit_chi2 / cut, 0.0)
        worst = np.argmax(ratio, axis=1)
        n_kept = kept.sum(axis=1)
        refit = (
            (status == FitStatus.OK)
            & (ratio[np.arange(len(tracks)), worst] > 1.0)
            & (n_kept > config.min_hits)
            & (refits[tracks] < config.max_outlier_refits)
        )
        too_few = refit & (n_kept <= fewest_hits)
        status[too_few] = FitStatus.TOO_FEW_HITS
        refit &= ~too_few
        done = ~refit
        # only the fits that stand and have not failed go on to the perigee (a refitted track's would be thrown
        # away, a failed one's is not written)
        going = np.flatnonzero(done & (status == FitStatus.OK))
        params, cov = np.zeros((len(tracks), 5)), np.zeros((len(tracks), 5, 5))
        if len(going):
            status[going], params[going], cov[going] = self._perigee(fitted, going)
        out.store(tracks[done], hit_index[done], kept[done], fitted.used[done], status[done], params[done],
                  cov[done], fitted.chi2[done], fitted.ndf[done])  # fmt: skip
        removed[hit_index[refit, worst[refit]]] = True
        refits[tracks[refit]] += 1
        return tracks[refit]

    def _filter_and_smooth(self, hit_index, kept, hits, earlier: _Perigees | None = None) -> _Filtered:
        """Filter and smooth each row's ``kept`` hits once (twice for a track with a close pair of hits, unless it
        starts from its perigee in ``earlier``: :meth:`refit`), up to the smoothed state at the first hit (see
        :class:`_Filtered`)."""
        config = self.config
        n_tracks, length = kept.shape
        count = kept.sum(axis=1)
        # compact the kept hits to the front of each row, keeping their order
        order = np.argsort(~kept, axis=1, kind="stable")
        compact = np.take_along_axis(hit_index, order, axis=1)
        compact_valid = np.arange(length)[None, :] < count[:, None]
        safe = np.where(compact_valid, compact, compact[:, :1])
        measurements, hit_step = self._steps(hits, safe, compact_valid)
        status = np.full(n_tracks, FitStatus.OK, dtype=np.int64)
        status[count < config.min_hits] = FitStatus.TOO_FEW_HITS
        status[_layer_crossings(hits["layer"][safe], compact_valid) < config.min_layers] = FitStatus.TOO_FEW_HITS
        rows = np.arange(n_tracks)
        last = np.maximum(count - 1, 0)
        xyz = hits["xyz"]
        seed, seeded = self._seed(xyz[safe[:, 0]], xyz[safe[rows, count // 2]], xyz[safe[rows, last]], measurements)
        seed_cov = self._seed_covariance(seed, measurements.variance[:, 0])
        close_pair = _close_hits(xyz[safe], compact_valid, config.close_hits_mm)
        started = self._started_from(earlier, close_pair, measurements, status, seed, seed_cov)
        status[(status == FitStatus.OK) & ~seeded & ~started] = FitStatus.SEED_FAILED

        forward = forward_filter(measurements, seed, seed_cov, status, self.field, config)
        smoothed = smooth(measurements, forward, without_first=True)
        without_first, without_first_cov = smoothed.without_first, smoothed.without_first_cov
        assert without_first is not None  # asked for, as without_first_cov
        assert without_first_cov is not None
        close = close_pair & finite_states(without_first, without_first_cov) & ~started
        if close.any():
            forward, smoothed = self._second_pass(measurements, status, forward, smoothed, np.flatnonzero(close))
        status = forward.status.copy()
        status[(status == FitStatus.OK) & (forward.dims <= 5)] = FitStatus.TOO_FEW_HITS

        # map per-hit results back from the steps to the compact layout, and from there to hit_index's
        inverse = np.argsort(order, axis=1)
        processed = hit_step < forward.processed[:, None]
        used = np.take_along_axis(processed, inverse, axis=1) & kept
        compact_chi2 = np.where(compact_valid, np.take_along_axis(smoothed.hit_chi2, hit_step, axis=1), 0.0)
        hit_chi2 = np.take_along_axis(compact_chi2, inverse, axis=1)
        return _Filtered(status=status, used=used, hit_chi2=hit_chi2, chi2=forward.chi2, ndf=forward.dims - 5,
                         first=smoothed.first, first_cov=smoothed.first_cov, measurements=measurements,
                         first_layer=hits["layer"][safe[:, 0]], first_xyz=xyz[safe[:, 0]],
                         last_xyz=xyz[safe[rows, last]])  # fmt: skip

    def _perigee(self, fitted: _Filtered, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(status, params, cov)`` at the perigee of the ``fitted`` tracks ``rows`` (fits that have not failed):
        their smoothed state at the first hit taken through the material inside it to the perigee.  A track that
        does not reach it fails (``PROPAGATION_FAILED``); one whose state there or whose χ² is not finite, or whose
        helix is too tight to join its first and last hits, has diverged (``DIVERGED``)."""
        steps = fitted.measurements
        params, cov, reached = to_perigee(fitted.first[rows], fitted.first_cov[rows], steps.kind[rows, 0],
                                          steps.position[rows, 0], steps.planes(rows, 0), fitted.first_layer[rows],
                                          self._material, self.field, self.config)  # fmt: skip
        diverged = ~finite_states(params, cov) | ~np.isfinite(fitted.chi2[rows])
        diverged |= ~spans_chord(transverse_momentum(params), fitted.first_xyz[rows], fitted.last_xyz[rows],
                                 self.field)  # fmt: skip
        status = np.where(reached, np.where(diverged, FitStatus.DIVERGED, FitStatus.OK), FitStatus.PROPAGATION_FAILED)
        return status, params, cov

    def _second_pass(
        self, measurements: Measurements, status: np.ndarray, forward: ForwardPass, smoothed: Smoothed, rows: np.ndarray
    ) -> tuple[ForwardPass, Smoothed]:
        """Filter and smooth tracks ``rows`` again, from their first pass's smoothed state at the first hit without
        that hit, with that state's covariance × ``second_pass_cov_inflation``; the per-track results of both passes
        with those of ``rows`` replaced (the step-by-step arrays of the forward pass, which only the smoother reads,
        and the state without the first hit are the first pass's)."""
        inflation = self.config.second_pass_cov_inflation
        steps = measurements.take(rows)
        without_first, without_first_cov = smoothed.without_first, smoothed.without_first_cov
        assert without_first is not None  # the first pass was smoothed with them
        assert without_first_cov is not None
        again = forward_filter(steps, without_first[rows], without_first_cov[rows] * inflation,
                               status[rows], self.field, self.config)  # fmt: skip
        again_smoothed = smooth(steps, again)

        def merged(first_pass, second_pass, names):
            columns = {}
            for name in names:
                column = getattr(first_pass, name).copy()
                column[rows] = getattr(second_pass, name)
                columns[name] = column
            return attrs.evolve(first_pass, **columns)

        return (merged(forward, again, ("status", "chi2", "dims", "processed")),
                merged(smoothed, again_smoothed, ("first", "first_cov", "hit_chi2")))  # fmt: skip

    def _started_from(
        self, earlier: _Perigees | None, close_pair: np.ndarray, measurements: Measurements, status, seed, seed_cov
    ) -> np.ndarray:
        """Mask [T] of the tracks with a ``close_pair`` of hits that start from their perigee in ``earlier``
        (:meth:`refit`): taken forwards to the surface of the first step of ``measurements``, its covariance ×
        ``second_pass_cov_inflation``, in place of their ``seed`` and ``seed_cov``.  Tracks that have failed already
        (``status``), that ``earlier`` lacks or whose perigee does not reach that surface keep their seed."""
        started = np.zeros(len(seed), dtype=bool)
        if earlier is None:
            return started
        rows = np.flatnonzero(earlier.found & close_pair & (status == FitStatus.OK))
        if not len(rows):
            return started
        moved = propagate(earlier.params[rows], np.full(len(rows), SurfaceKind.PERIGEE), np.zeros(len(rows)),
                          measurements.kind[rows, 0], measurements.position[rows, 0], self.field, direction=1,
                          plane_to=measurements.planes(rows, 0), stepping=self.config.stepping)  # fmt: skip
        moved_cov = transport_sandwich(moved.jacobian, earlier.cov[rows]) * self.config.second_pass_cov_inflation
        ok = moved.ok & finite_states(moved.params, moved_cov)
        seed[rows[ok]], seed_cov[rows[ok]] = moved.params[ok], moved_cov[ok]
        started[rows[ok]] = True
        return started

    def _seed(self, first, middle, last, measurements: Measurements) -> tuple[np.ndarray, np.ndarray]:
        """Seed parameters on the first hit's surface from three hits per track, and ``ok``."""
        kind = measurements.kind[:, 0]
        on_plane = kind == SurfaceKind.PLANE
        seed_kind = np.where(on_plane, SurfaceKind.CYLINDER, kind)
        chord = last - first
        chord /= np.maximum(np.linalg.norm(chord, axis=1, keepdims=True), 1e-9)
        seed, seeded = seed_parameters(first, middle, last, seed_kind, self.field.bending_t(middle, chord))
        if on_plane.any():  # the seed on the cylinder through the first hit, moved into the module's frame
            radius = np.hypot(first[:, 0], first[:, 1])
            free, _ = bound_to_free(seed, seed_kind, radius)
            seed, _ = free_to_bound(free, kind, measurements.planes(slice(None), 0))
        return seed, seeded

    def _steps(self, hits, safe: np.ndarray, valid: np.ndarray) -> tuple[Measurements, np.ndarray]:
        """The steps of each track: its hits ``safe`` [T, L] (rows of ``hits``, where ``valid``) in order, with
        the holes between them; and the step of each hit [T, L] (padding included, after the track's steps)."""
        n_tracks, length = valid.shape
        holes = self._holes(hits["xyz"][safe], hits["layer"][safe], valid)
        hit_of_hole, track_of_hole = np.divmod(holes.segment, n_tracks)
        # holes just before each hit
        before = np.bincount(track_of_hole * length + hit_of_hole, minlength=n_tracks * length)
        before = before.reshape(n_tracks, length)
        hit_step = np.arange(length) + np.cumsum(before, axis=1)
        hole_step = hit_step[track_of_hole, hit_of_hole] - before[track_of_hole, hit_of_hole] + holes.rank
        width = int(hit_step[:, -1].max(initial=-1)) + 1
        with_holes = np.flatnonzero(before.any(axis=1))

        def spread(on_hits: np.ndarray, on_holes: np.ndarray | float, padding: float) -> np.ndarray:
            steps = np.full((n_tracks, width, *on_hits.shape[2:]), padding, dtype=on_hits.dtype)
            steps[:, :length] = on_hits  # in place for the tracks without holes; the others are laid out again
            steps[with_holes[:, None], hit_step[with_holes]] = on_hits[with_holes]
            steps[track_of_hole, hole_step] = on_holes
            return steps

        variance = np.where(valid[..., None], hits["variance"][safe], 1.0)
        # a layer's material is crossed once, after the last of its modules on the track's way: a module-plane hit
        # right before another of its layer (two overlapping modules) adds none, as in the simulation
        # (tracking_algs.simulation.module_navigation)
        layer = hits["layer"][safe]
        overlap = np.zeros_like(valid)
        overlap[:, :-1] = (
            valid[:, 1:] & (layer[:, 1:] == layer[:, :-1]) & (hits["kind"][safe[:, :-1]] == SurfaceKind.PLANE)
        )
        x_over_x0 = np.where(overlap, 0.0, hits["x_over_x0"][safe])
        measurements = Measurements(
            kind=spread(hits["kind"][safe], holes.kind, SurfaceKind.CYLINDER),
            position=spread(hits["position"][safe], holes.position, 1.0),
            x_over_x0=spread(x_over_x0, holes.x_over_x0, 0.0),
            value=spread(hits["value"][safe], 0.0, 0.0),
            variance=spread(variance, np.inf, 1.0),  # a hole measures nothing
            count=valid.sum(axis=1) + np.bincount(track_of_hole, minlength=n_tracks),
            plane=spread(hits["plane"][safe], 0.0, 0.0) if "plane" in hits else None,
        )
        return measurements, hit_step

    def _holes(self, xyz: np.ndarray, layer: np.ndarray, valid: np.ndarray) -> Crossings:
        """Surfaces crossed without a hit between consecutive hits ``xyz`` [T, L, 3] on layers ``layer`` [T, L]
        (where ``valid`` [T, L]), as crossings of segment ``i · T + t`` (hits ``i - 1`` → ``i`` of track ``t``;
        none without scattering)."""
        n_tracks, length = valid.shape
        if self._material is None or length < 2:
            return Crossings.none()
        # every pair of consecutive slots, step-major (segment (i - 1) · T + t ends at hit i of track t); a pair
        # that ends on padding is made zero-length, so it crosses nothing
        r = np.hypot(xyz[..., 0], xyz[..., 1]).T
        z = np.ascontiguousarray(xyz[..., 2].T)
        end_r, end_z = np.where(valid[:, 1:].T, r[1:], r[:-1]), np.where(valid[:, 1:].T, z[1:], z[:-1])
        ends = (layer[:, :-1].T.ravel(), np.where(valid[:, 1:], layer[:, 1:], NO_LAYER).T.ravel())
        crossings = self._material.crossings(r[:-1].ravel(), z[:-1].ravel(), end_r.ravel(), end_z.ravel(), ends)
        return attrs.evolve(crossings, segment=crossings.segment + n_tracks)

    def _seed_covariance(self, seed: np.ndarray, first_variance: np.ndarray) -> np.ndarray:
        config = self.config
        variances = np.column_stack((
            first_variance[:, 0] * config.seed_position_inflation,
            np.where(np.isfinite(first_variance[:, 1]), first_variance[:, 1] * config.seed_position_inflation, 1e6),
            np.full(len(seed), config.seed_sigma_phi**2 * config.seed_cov_inflation),
            np.full(len(seed), config.seed_sigma_theta**2 * config.seed_cov_inflation),
            (config.seed_sigma_qop_rel * np.maximum(np.abs(seed[:, 4]), 1e-2)) ** 2 * config.seed_cov_inflation,
        ))  # fmt: skip
        cov = np.zeros((len(seed), 5, 5))
        cov[:, np.arange(5), np.arange(5)] = variances
        return cov


@attrs.frozen
class _Perigees:
    """Per track being fitted [T]: whether an earlier fit of it ended OK (``found``), and that fit's perigee
    ``params`` [T, 5] and ``cov`` [T, 5, 5] (zero where not found)."""

    found: np.ndarray
    params: np.ndarray
    cov: np.ndarray

    def take(self, tracks: np.ndarray) -> _Perigees:
        """The rows of ``tracks``."""
        return _Perigees(self.found[tracks], self.params[tracks], self.cov[tracks])


def _earlier_perigees(track_ids: np.ndarray, earlier: FitResults | None) -> _Perigees | None:
    """The perigees of the tracks ``track_ids`` [T] in ``earlier`` (None: none)."""
    if earlier is None or not len(earlier.track_id):
        return None
    order = np.argsort(earlier.track_id, kind="stable")
    row = order[np.minimum(np.searchsorted(earlier.track_id, track_ids, sorter=order), len(order) - 1)]
    found = (earlier.track_id[row] == track_ids) & (earlier.status[row] == FitStatus.OK)
    return _Perigees(found, earlier.params[row], earlier.cov[row])


def _close_hits(xyz: np.ndarray, valid: np.ndarray, limit_mm: float) -> np.ndarray:
    """Mask [T] of the tracks with two consecutive hits (``xyz`` [T, L, 3], where ``valid``) closer than
    ``limit_mm``."""
    gap = np.linalg.norm(np.diff(xyz, axis=1), axis=2)
    return ((gap < limit_mm) & valid[:, 1:]).any(axis=1)


def _layer_crossings(layer: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per track [T], the crossings of layers by its hits in crossing order (``layer`` [T, L] keys, where
    ``valid``, the valid ones first): runs of consecutive hits on one layer count once."""
    return valid[:, :1].sum(axis=1) + (valid[:, 1:] & (layer[:, 1:] != layer[:, :-1])).sum(axis=1)


@attrs.frozen
class _Filtered:
    """One filter-and-smoother pass over T tracks, before the perigee: ``status`` [T] (OK, or why the fit failed
    so far), per hit in the batch's layout [T, L] whether the filter ``used`` it and its ``hit_chi2`` against the
    other hits, the filter's ``chi2`` and ``ndf`` [T]; and for the step to the perigee the smoothed state at the
    first hit (``first`` [T, 5], ``first_cov`` [T, 5, 5]), the tracks' steps (``measurements``), the layer of the
    first hit and the first and last hits' positions [T, 3]."""

    status: np.ndarray
    used: np.ndarray
    hit_chi2: np.ndarray
    chi2: np.ndarray
    ndf: np.ndarray
    first: np.ndarray
    first_cov: np.ndarray
    measurements: Measurements
    first_layer: np.ndarray
    first_xyz: np.ndarray
    last_xyz: np.ndarray


class _Output:
    """Accumulates per-track and per-hit results of the batches."""

    def __init__(self, n_tracks: int, n_hits: int) -> None:
        self.params = np.zeros((n_tracks, 5))
        self.cov = np.zeros((n_tracks, 5, 5))
        self.chi2 = np.zeros(n_tracks)
        self.ndf = np.zeros(n_tracks, dtype=np.int64)
        self.status = np.zeros(n_tracks, dtype=np.int64)
        self.n_hits = np.zeros(n_tracks, dtype=np.int64)
        self.outlier = np.zeros(n_hits, dtype=bool)

    def store(self, tracks, hit_index, kept, used, status, params, cov, chi2, ndf) -> None:
        ok = status == FitStatus.OK
        self.status[tracks] = status
        self.params[tracks] = np.where(ok[:, None], params, 0.0)
        self.cov[tracks] = np.where(ok[:, None, None], cov, 0.0)
        self.chi2[tracks] = np.where(ok, chi2, 0.0)
        self.ndf[tracks] = np.where(ok, ndf, 0)
        flagged = np.where(ok[:, None], ~used, ~kept) & (hit_index >= 0)
        self.outlier[hit_index[flagged]] = True
        self.n_hits[tracks] = (hit_index >= 0).sum(axis=1) - flagged.sum(axis=1)

    def pvalue(self, tracks: np.ndarray | slice = slice(None)) -> np.ndarray:
        """The fit p-value of ``tracks`` (0 unless the fit is OK)."""
        ok = self.status[tracks] == FitStatus.OK
        return np.where(ok, chdtrc(np.maximum(self.ndf[tracks], 1), self.chi2[tracks]), 0.0)

    def take(self, tracks: np.ndarray, other: _Output, others: np.ndarray) -> None:
        """The results of ``other``'s tracks ``others`` for ``tracks`` (their hits' outlier flags left as they
        are)."""
        for name in _TRACK_COLUMNS:
            getattr(self, name)[tracks] = getattr(other, name)[others]

    def results(self, track_ids, offsets, rows) -> FitResults:
        pvalue = self.pvalue()
        track_of_hit = np.repeat(np.arange(len(track_ids)), np.diff(offsets))
        n_outliers = np.bincount(track_of_hit, weights=self.outlier, minlength=len(track_ids)).astype(np.int64)
        return FitResults(
            track_id=track_ids,
            params=self.params,
            cov=self.cov,
            chi2=self.chi2,
            ndf=self.ndf,
            pvalue=pvalue,
            n_hits=self.n_hits,
            n_outliers=n_outliers,
            status=self.status,
            hit_offsets=offsets,
            hit_rows=rows,
            outlier=self.outlier,
        )
