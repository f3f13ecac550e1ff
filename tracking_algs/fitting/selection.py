"""Track selection after the fit: the found tracks a job keeps, judged by their fit.

With ``drop_outliers`` the hits the fit rejected leave their track, so each kept track holds exactly the hits its
fit used.  A track the fitter could not fit (status other than OK), whose fit p-value is below ``min_pvalue``,
that keeps fewer than ``min_hits`` hits or whose fitted transverse momentum is below ``min_pt_gev`` is dropped:
its hits become unassigned.  The p-value removes the chains of hits from several particles that the track building
can link in dense events (no helix goes through them); the pT threshold, the reconstruction threshold of a
tracking chain, removes the pieces of low-pT particles that curl through the detector.  Last, of two kept tracks
whose perigees agree within their errors (``max_split_chi2``), the one with fewer hits (of equals, the worse fit) is
dropped: a particle the track building cut in two, or built twice (:mod:`~tracking_algs.fitting.split_tracks`).
With ``merge_split``, such tracks are first refitted as one (their hits together, less those their own fits
rejected) and written as one track where that fit passes the cuts: the two pieces of a particle then make one track
that holds most of its hits.  With ``rescue_outliers``, the hits a kept track's fit rejected, where they are at least
``min_hits``, are fitted as a track of their own and written as one where that fit passes the cuts: the track
building can join a particle to the one it came from (a hadron and the leading product of its nuclear interaction
in a module, say), and the fit of the joined chain keeps one of them and rejects the other's hits.  With
``extend_tracks`` each kept track then takes the free hits along its trajectory beyond its ends
(:mod:`~tracking_algs.fitting.extension`) that its refit keeps: the building can end a particle's chain early and
leave the rest of its hits on no track.  With ``join_pieces`` two kept tracks one of which runs on through
the other's hits are refitted as one and written as one where that fit passes: the two pieces of a particle whose
perigees disagree too much for ``merge_split``.  With ``slow_pt_gev``, a track fitted below that transverse
momentum is then dropped where it holds fewer than ``slow_min_hits`` hits: a slow particle from the beam line crosses
most layers of the detector before it curls, and a short track fitted slow is mostly a piece of a slower one.  Last,
with ``rebuild_free_hits``, the hits no written track holds are built into tracks once more.  (``follow_tracks``,
which follows the kept tracks beyond their ends before the extension, is described on the class.)
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np
from attrs import validators as v
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from inference_iface.options import finite, integer
from tracking_algs.errors import FittingError
from tracking_algs.event import Spacepoints, TrackCandidates
from tracking_algs.fitting.extension import proposed_hits
from tracking_algs.fitting.results import (
    FitResults,
    FitStatus,
    closest_points,
    combined,
    fit_candidates_problem,
    transverse_momentum,
)
from tracking_algs.fitting.split_tracks import agreeing_pairs, redundant_pieces

#: ``refit(tracks, earlier)``: the fit of the candidate tracks ``tracks`` of the event being selected (the job's
#: refitter on that event's spacepoints, :func:`~tracking_algs.fitting.hook.refit_on`); ``earlier``, when not None,
#: holds earlier fits of some of those tracks (by track id), which the refitter may start from
Refit = Callable[[TrackCandidates, FitResults | None], FitResults]
#: ``follow(tracks, fit, chi2_cut, window_sigmas, max_window_mm, pool)``: per spacepoint of the event being selected,
#: the label of the fitted track (of ``tracks``, fitted in ``fit``) that following it beyond its ends proposes the
#: hit to, or -1, among the free hits (``pool`` None) or the hits ``pool`` marks (the built-in fitter's
#: :meth:`~tracking_algs.fitting.kalman.KalmanFitter.followed_hits`)
Follow = Callable[[TrackCandidates, FitResults, float, float, float, np.ndarray | None], np.ndarray]
#: ``rebuild(free, min_score, min_pt_gev)``: the track candidates built anew over the GNN edges scored at least
#: ``min_score`` between the spacepoints ``free`` [N] marks, of the event being selected, each a chain that may hold a
#: track of ``min_pt_gev`` or more (:func:`~tracking_algs.finding.free_hits.free_hit_chains`)
Rebuild = Callable[[np.ndarray, float, float], TrackCandidates]

#: the fewest hits of another track that a kept track's extension must run through for the two to be refitted as
#: one (``join_pieces``, :meth:`TrackSelection._joined`)
JOIN_MIN_HITS = 2
#: the fewest hits of another kept track that following a track must take for it to take that track over
#: (``follow_tracks``, :meth:`TrackSelection._taken_over`)
TAKE_OVER_MIN_HITS = 2
#: how far (mm of path) beyond its last hit a track is followed for ``join_pieces`` (a piece's other half starts
#: near its end)
JOIN_REACH_MM = 200.0


@attrs.frozen(kw_only=True)
class TrackSelection:
    """The ``[fitting.selection]`` table: whether to select (``enabled``), the smallest fit p-value kept
    (``min_pvalue``), whether the hits the fit rejected leave their track (``drop_outliers``), the fewest hits
    a kept track holds (``min_hits``, counted after that), the smallest fitted transverse momentum kept
    (``min_pt_gev``; 0 keeps all) and the χ² below which a track whose perigee agrees with that of a better kept
    track (more hits, or as many and a higher p-value) is dropped as a split piece or a duplicate of it
    (``max_split_chi2``, :mod:`~tracking_algs.fitting.split_tracks`; 20.52 is the χ² quantile of p = 1e-3 for the 5
    perigee parameters; 0 keeps them). With ``merge_split`` the tracks whose perigees so agree are refitted as one
    track (each group of them that agree pairwise, through ``refit`` in :meth:`apply`) and, where that fit passes the
    cuts above, written as one under the smallest of their track ids.  With ``rescue_outliers`` the hits a passing
    track's fit rejected, where they are at least ``min_hits``, are refitted as one new track (ids above every
    candidate's, in the order of the tracks they came from) and move to it where that fit passes the cuts; this
    comes first, so a rescued track can be merged too.  With ``follow_tracks`` the kept tracks are then followed
    beyond their ends, layer by layer, by ``follow`` in :meth:`apply`
    (:mod:`~tracking_algs.fitting.following`: on each layer the best free hit within ``follow_window_sigmas`` of the
    prediction, at most ``follow_max_window_mm``, whose χ² is below ``follow_chi2``) and take the hits found where
    their refit passes and keeps them, as an extension does (:meth:`_grown`); followed once more through the other
    kept tracks' hits, they then take over the pieces of a few hits left on their way (:meth:`_taken_over`).  With
    ``extend_tracks`` the kept tracks are then extended
    onto the free hits :func:`~tracking_algs.fitting.extension.proposed_hits` proposes to them within
    ``extension_reach_mm``, ``extension_circle_mm`` and ``extension_line_mm``, ``extension_rounds`` times over
    (:meth:`_extended`).  With ``join_pieces`` two kept tracks are refitted as one where one runs on through the
    other's hits, followed as an extension is (:meth:`_joined`).  Then a kept track whose fitted transverse
    momentum is below ``slow_pt_gev`` (0: none) and that holds fewer than ``slow_min_hits`` hits is dropped.  Last,
    with ``rebuild_free_hits``, the hits no kept track holds are built into tracks once more, by ``rebuild`` in
    :meth:`apply` over their GNN edges scored at least ``rebuild_min_score``, and the chains whose refit passes the
    cuts above with a fitted transverse momentum of at least ``rebuild_min_pt_gev`` and a p-value of at least
    ``rebuild_min_pvalue`` are written as new tracks (:meth:`_rebuilt`)."""

    enabled: bool = attrs.field(default=True, validator=v.instance_of(bool))
    min_pvalue: float = attrs.field(default=1e-3, validator=[finite, v.ge(0.0), v.le(1.0)])
    drop_outliers: bool = attrs.field(default=True, validator=v.instance_of(bool))
    min_hits: int = attrs.field(default=5, validator=[integer, v.ge(1)])
    min_pt_gev: float = attrs.field(default=0.4, validator=[finite, v.ge(0.0)])
    max_split_chi2: float = attrs.field(default=20.52, validator=[finite, v.ge(0.0)])
    merge_split: bool = attrs.field(default=False, validator=v.instance_of(bool))
    rescue_outliers: bool = attrs.field(default=False, validator=v.instance_of(bool))
    follow_tracks: bool = attrs.field(default=False, validator=v.instance_of(bool))
    follow_chi2: float = attrs.field(default=9.0, validator=[finite, v.gt(0.0)])
    follow_window_sigmas: float = attrs.field(default=5.0, validator=[finite, v.gt(0.0)])
    follow_max_window_mm: float = attrs.field(default=50.0, validator=[finite, v.gt(0.0)])
    extend_tracks: bool = attrs.field(default=False, validator=v.instance_of(bool))
    extension_reach_mm: float = attrs.field(default=800.0, validator=[finite, v.gt(0.0)])
    extension_circle_mm: float = attrs.field(default=3.0, validator=[finite, v.gt(0.0)])
    extension_line_mm: float = attrs.field(default=5.0, validator=[finite, v.gt(0.0)])
    extension_rounds: int = attrs.field(default=1, validator=[integer, v.ge(1)])
    join_pieces: bool = attrs.field(default=False, validator=v.instance_of(bool))
    slow_pt_gev: float = attrs.field(default=0.0, validator=[finite, v.ge(0.0)])
    slow_min_hits: int = attrs.field(default=7, validator=[integer, v.ge(1)])
    rebuild_free_hits: bool = attrs.field(default=False, validator=v.instance_of(bool))
    rebuild_min_score: float = attrs.field(default=0.5, validator=[finite, v.ge(0.0), v.le(1.0)])
    rebuild_min_pt_gev: float = attrs.field(default=1.0, validator=[finite, v.ge(0.0)])
    rebuild_min_pvalue: float = attrs.field(default=0.1, validator=[finite, v.ge(0.0), v.le(1.0)])

    def apply(
        self,
        candidates: TrackCandidates,
        fit: FitResults,
        refit: Refit | None = None,
        spacepoints: Spacepoints | None = None,
        follow: Follow | None = None,
        rebuild: Rebuild | None = None,
    ) -> tuple[TrackCandidates, FitResults]:
        """The kept tracks (labels of dropped tracks and rejected hits set to -1) and their rows of ``fit``,
        hit columns regrouped to the kept hits; unchanged when not ``enabled``. ``refit`` fits candidate tracks of
        the same event, for ``rescue_outliers``, ``merge_split``, ``follow_tracks``, ``extend_tracks``,
        ``join_pieces`` and ``rebuild_free_hits`` (which are skipped without it); ``follow_tracks``,
        ``extend_tracks`` and ``join_pieces`` also need the event's ``spacepoints``, ``follow_tracks`` needs
        ``follow`` too (the fitter's, :func:`~tracking_algs.fitting.hook.follower`) and ``rebuild_free_hits`` needs
        ``rebuild`` (the finder's, :func:`~tracking_algs.finding.free_hits.free_hit_rebuild`)."""
        if not self.enabled:
            return candidates, fit
        problem = fit_candidates_problem(fit, candidates)
        if problem is not None:
            raise FittingError(f"TrackSelection.apply: a fit of other candidates: {problem}")
        if self.rescue_outliers and refit is not None:
            candidates, fit = self._rescued_outliers(candidates, fit, refit)
        if self.merge_split and self.max_split_chi2 > 0 and refit is not None:
            candidates, fit = self._merged_pieces(candidates, fit, refit)
        track_of_hit, leaving, remaining, kept = self._passing(fit)
        if self.max_split_chi2 > 0:
            chosen = np.flatnonzero(kept)
            split = redundant_pieces(fit.params[chosen], fit.cov[chosen], remaining[chosen], fit.pvalue[chosen],
                                     self.max_split_chi2)  # fmt: skip
            kept[chosen[split]] = False
        leaving = leaving | ~kept[track_of_hit]
        labels = candidates.labels.copy()
        labels[fit.hit_rows[leaving]] = -1
        staying = ~leaving
        offsets = np.concatenate(([0], np.cumsum(np.bincount(track_of_hit[staying], minlength=len(fit)))))
        selected = FitResults(
            track_id=fit.track_id[kept],
            params=fit.params[kept],
            cov=fit.cov[kept],
            chi2=fit.chi2[kept],
            ndf=fit.ndf[kept],
            pvalue=fit.pvalue[kept],
            n_hits=fit.n_hits[kept],
            n_outliers=fit.n_outliers[kept],
            status=fit.status[kept],
            hit_offsets=offsets[np.concatenate((np.flatnonzero(kept), [len(fit)]))],
            hit_rows=fit.hit_rows[staying],
            outlier=fit.outlier[staying],
        )
        kept_tracks = TrackCandidates(labels)
        if self.follow_tracks and refit is not None and spacepoints is not None and follow is not None:
            proposal = follow(kept_tracks, selected, self.follow_chi2, self.follow_window_sigmas,
                              self.follow_max_window_mm, None)  # fmt: skip
            grown = self._grown(labels, proposal, refit, spacepoints, selected)
            kept_tracks, selected = _with_grown(kept_tracks, selected, grown)
            kept_tracks, selected = self._taken_over(kept_tracks, selected, refit, follow)
        if self.extend_tracks and refit is not None and spacepoints is not None:
            kept_tracks, selected = self._extended(kept_tracks, selected, refit, spacepoints)
        if self.join_pieces and refit is not None and spacepoints is not None:
            kept_tracks, selected = self._joined(kept_tracks, selected, refit, spacepoints)
        kept_tracks, selected = self._without_short_slow(kept_tracks, selected)
        if self.rebuild_free_hits and refit is not None and rebuild is not None:
            kept_tracks, selected = self._rebuilt(kept_tracks, selected, refit, rebuild)
        return kept_tracks, selected

    def _without_short_slow(self, candidates: TrackCandidates, fit: FitResults) -> tuple[TrackCandidates, FitResults]:
        """``candidates`` and ``fit`` without the tracks fitted below ``slow_pt_gev`` that hold fewer than
        ``slow_min_hits`` hits (their hits become unassigned)."""
        short_slow = self._short_slow(fit)
        if not short_slow.any():
            return candidates, fit
        labels = candidates.labels.copy()
        labels[np.isin(labels, fit.track_id[short_slow])] = -1
        return TrackCandidates(labels), fit.tracks(~short_slow)

    def _short_slow(self, fit: FitResults) -> np.ndarray:
        """Mask [T] of the tracks of ``fit`` fitted below ``slow_pt_gev`` that hold fewer than ``slow_min_hits``
        hits."""
        return (transverse_momentum(fit.params) < self.slow_pt_gev) & (np.diff(fit.hit_offsets) < self.slow_min_hits)

    def _extended(
        self, candidates: TrackCandidates, fit: FitResults, refit: Refit, spacepoints: Spacepoints
    ) -> tuple[TrackCandidates, FitResults]:
        """The kept tracks with the free hits :func:`~tracking_algs.fitting.extension.proposed_hits` proposes to
        them, where ``refit`` of a track with its proposals passes the cuts without rejecting any of the track's
        own hits: the proposed hits the refit keeps join the track, the others stay free (:meth:`_grown`).
        Repeated, from the extended tracks, up to ``extension_rounds`` times while a track grows."""
        for _ in range(self.extension_rounds):
            labels = candidates.labels
            proposal = proposed_hits(spacepoints, labels, self.extension_reach_mm, self.extension_circle_mm,
                                     self.extension_line_mm, (fit.track_id, closest_points(fit.params)))  # fmt: skip
            grown = self._grown(labels, proposal, refit, spacepoints, fit)
            if not len(grown):
                break
            candidates, fit = _with_grown(candidates, fit, grown)
        return candidates, fit

    def _grown(
        self,
        labels: np.ndarray,
        proposal: np.ndarray,
        refit: Refit,
        spacepoints: Spacepoints,
        earlier: FitResults | None,
    ) -> FitResults:
        """The refits of the tracks that take proposed hits (``proposal`` [N], the track label each free hit is
        proposed to, or -1), without the proposed hits each refit rejects.  All of a track's proposals are tried
        first; where that refit fails (one hit of another particle among them can spoil it, most often in the
        first layers, where it also spoils the start of the fit), the track is tried once more: without the
        proposals that refit rejected where it rejected some, otherwise with its outward proposals only (those no
        nearer the origin than its own hits).  ``earlier``: the tracks' fits so far, which the refits start from (None:
        from seeds of their hits)."""
        passing, failed, rejected = self._extension_try(labels, proposal, refit, earlier)
        if not len(failed):
            return passing
        on_track = labels >= 0
        nearest = np.full(int(labels.max()) + 1, np.inf)
        np.minimum.at(nearest, labels[on_track], spacepoints.distance[on_track])
        inward = spacepoints.distance < nearest[np.maximum(proposal, 0)]
        again = np.isin(proposal, failed)
        rejecting = np.zeros(int(labels.max()) + 1, dtype=bool)
        rejecting[proposal[rejected & again]] = True
        fewer = np.where(rejecting[np.maximum(proposal, 0)], ~rejected, ~inward)
        retried = self._extension_try(labels, np.where(again & fewer, proposal, -1), refit, earlier)[0]
        return combined([passing, retried])

    def _extension_try(
        self, labels: np.ndarray, proposal: np.ndarray, refit: Refit, earlier: FitResults | None
    ) -> tuple[FitResults, np.ndarray, np.ndarray]:
        """Refit the tracks proposed hits (``proposal`` [N]) with them: ``(the refits that pass the cuts, reject none
        of the track's own hits and keep a proposed hit, without the proposed hits they reject; the ids of the
        tracks whose refit fails; the proposed hits [N] a refit rejects)``.  The refits start from the tracks' fits so
        far, ``earlier`` (None: from seeds of their hits)."""
        rejected = np.zeros(len(labels), dtype=bool)
        extended = np.unique(proposal[proposal >= 0])
        trial = np.where(np.isin(labels, extended), labels, -1)
        trial[proposal >= 0] = proposal[proposal >= 0]
        tried = refit(TrackCandidates(trial), earlier)
        track_of_hit = tried.track_of_hit()
        own = labels[tried.hit_rows] >= 0
        spoiled = np.bincount(track_of_hit[own & tried.outlier], minlength=len(tried)) > 0
        good = self._passing(tried)[3] & ~spoiled
        joining = good[track_of_hit] & ~own & ~tried.outlier
        rejected[tried.hit_rows[~own & tried.outlier]] = True
        grown = good & (np.bincount(track_of_hit[joining], minlength=len(tried)) > 0)
        passing = tried.without_hits(~own & tried.outlier).tracks(grown)
        return passing, tried.track_id[~good], rejected

    def _rebuilt(
        self, candidates: TrackCandidates, fit: FitResults, refit: Refit, rebuild: Rebuild
    ) -> tuple[TrackCandidates, FitResults]:
        """``candidates`` and ``fit`` with the chains ``rebuild`` builds over the free hits written as new tracks
        (ids above every track's, in the order of the chains' labels) where ``refit`` of a chain passes the cuts,
        ``rebuild_min_pt_gev``, ``rebuild_min_pvalue`` and the rule for short slow tracks; the hits that refit
        rejects stay free (with ``drop_outliers``)."""
        labels = candidates.labels
        chains = rebuild(labels < 0, self.rebuild_min_score, self.rebuild_min_pt_gev)
        if not (chains.labels >= 0).any():
            return candidates, fit
        tried = refit(chains, None)
        _, leaving, _, passing = self._passing(tried)
        passing &= transverse_momentum(tried.params) >= self.rebuild_min_pt_gev
        passing &= tried.pvalue >= self.rebuild_min_pvalue
        first_id = max(int(labels.max(initial=-1)), int(fit.track_id.max(initial=-1))) + 1
        written = tried.without_hits(leaving).tracks(passing)
        written = written.tracks(~self._short_slow(written))
        written = attrs.evolve(written, track_id=first_id + np.arange(len(written)))
        new_labels = labels.copy()
        new_labels[written.hit_rows] = written.track_id[written.track_of_hit()]
        return TrackCandidates(new_labels), combined([fit, written])

    def _passing(self, fit: FitResults) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(track of each hit [H], hits leaving their track [H], hits remaining per track [T], tracks passing the
        cuts [T])`` for ``fit``, before the split tracks are dropped."""
        track_of_hit = fit.track_of_hit()
        leaving = fit.outlier if self.drop_outliers else np.zeros(len(fit.outlier), dtype=bool)
        remaining = np.bincount(track_of_hit[~leaving], minlength=len(fit))
        kept = (fit.status == FitStatus.OK) & (fit.pvalue >= self.min_pvalue) & (remaining >= self.min_hits)
        kept &= transverse_momentum(fit.params) >= self.min_pt_gev
        return track_of_hit, leaving, remaining, kept

    def _merged_pieces(
        self, candidates: TrackCandidates, fit: FitResults, refit: Refit
    ) -> tuple[TrackCandidates, FitResults]:
        """``candidates`` and ``fit`` with each group of passing tracks whose perigees agree (pairwise, joined into
        groups) replaced by one track of their hits, under the smallest of their ids, where ``refit`` of that track
        passes the cuts.  The hits a piece's own fit rejected stay out of it (unassigned, with ``drop_outliers``):
        fewer outlier refits, and fewer failed fits to trim."""
        chosen = np.flatnonzero(self._passing(fit)[3])
        first, second = agreeing_pairs(fit.params[chosen], fit.cov[chosen], self.max_split_chi2)
        return self._merged_groups(candidates, fit, refit, chosen[first], chosen[second])

    def _joined(
        self, candidates: TrackCandidates, fit: FitResults, refit: Refit, spacepoints: Spacepoints
    ) -> tuple[TrackCandidates, FitResults]:
        """The kept tracks with each pair of tracks one of which runs on through the other's hits (at least
        :data:`JOIN_MIN_HITS` of them proposed to it as free hits are to an extension, within
        :data:`JOIN_REACH_MM` outwards) refitted as one track, under the smaller id, where that refit passes the
        cuts and rejects at most one hit per track joined: a particle the building split in two whose perigees
        disagree too much for ``merge_split``.  A track joins one other at most, the one it shares the most such
        hits with."""
        labels = candidates.labels
        proposal = proposed_hits(spacepoints, labels, JOIN_REACH_MM, self.extension_circle_mm, self.extension_line_mm,
                                 (fit.track_id, closest_points(fit.params)), labels >= 0)  # fmt: skip
        through = proposal >= 0
        pairs: np.ndarray  # [P, 2] (track, track): np.searchsorted of it gives an array
        pairs, counts = np.unique(np.column_stack((proposal[through], labels[through])), axis=0, return_counts=True)
        pairs, counts = pairs[counts >= JOIN_MIN_HITS], counts[counts >= JOIN_MIN_HITS]
        row = _disjoint(np.searchsorted(fit.track_id, pairs), counts)
        joined, joined_fit = self._merged_groups(candidates, fit, refit, row[:, 0], row[:, 1], max_rejected_per_track=1)
        rejected = joined_fit.outlier
        labels = joined.labels.copy()
        labels[joined_fit.hit_rows[rejected]] = -1
        return TrackCandidates(labels), joined_fit.without_hits(rejected)

    def _taken_over(
        self, candidates: TrackCandidates, fit: FitResults, refit: Refit, follow: Follow
    ) -> tuple[TrackCandidates, FitResults]:
        """``candidates`` and ``fit`` with the kept tracks that another one takes over: where following a track A
        through the hits of the other kept tracks takes at least :data:`TAKE_OVER_MIN_HITS` hits of a track B, more
        than it leaves B and so many that B keeps fewer than ``min_hits``, A is refitted with those hits; where that
        refit passes the cuts, rejects none of A's own hits and keeps at least :data:`TAKE_OVER_MIN_HITS` of B's, the
        hits of B it keeps join A and B is dropped (its other hits become free).  A track takes over one other at
        most, and is not taken over itself."""
        labels = candidates.labels
        proposal = follow(candidates, fit, self.follow_chi2, self.follow_window_sigmas, self.follow_max_window_mm,
                          labels >= 0)  # fmt: skip
        through = proposal >= 0
        if not through.any():
            return candidates, fit
        pairs, counts = np.unique(np.column_stack((proposal[through], labels[through])), axis=0, return_counts=True)
        sizes = np.bincount(labels[labels >= 0])
        left = sizes[pairs[:, 1]] - counts
        over = (counts >= TAKE_OVER_MIN_HITS) & (left < counts) & (left < self.min_hits)
        rows = _disjoint(np.searchsorted(fit.track_id, pairs[over]), counts[over])
        if not len(rows):
            return candidates, fit
        taker, taken = fit.track_id[rows[:, 0]], fit.track_id[rows[:, 1]]
        taken_by = np.full(len(sizes), -1)
        taken_by[taken] = taker
        moving = through & (labels >= 0) & (taken_by[np.maximum(labels, 0)] == proposal)
        # B's hits count as free for the refit of A with them: it must reject none of A's own
        freed = np.where(np.isin(labels, taken), -1, labels)
        grown = self._extension_try(freed, np.where(moving, proposal, -1), refit, fit)[0]
        joined = np.bincount(grown.track_of_hit()[freed[grown.hit_rows] < 0], minlength=len(grown))
        grown = grown.tracks(joined >= TAKE_OVER_MIN_HITS)
        dropped = taken[np.isin(taker, grown.track_id)]
        new_labels = np.where(np.isin(labels, dropped), -1, labels)
        return _with_grown(TrackCandidates(new_labels), fit.tracks(~np.isin(fit.track_id, dropped)), grown)

    def _merged_groups(
        self,
        candidates: TrackCandidates,
        fit: FitResults,
        refit: Refit,
        first: np.ndarray,
        second: np.ndarray,
        max_rejected_per_track: int | None = None,
    ) -> tuple[TrackCandidates, FitResults]:
        """``candidates`` and ``fit`` with each group of the tracks (rows of ``fit``) that the pairs ``first``,
        ``second`` [P] link replaced by one track of their hits, under the smallest of their ids, where ``refit`` of
        that track passes the cuts (and rejects at most ``max_rejected_per_track`` hits per track of the group); the
        refit starts from the fit of the track whose id it takes.  The hits a track's own fit rejected stay out of it
        (unassigned, with ``drop_outliers``)."""
        if not len(first):
            return candidates, fit
        track_of_hit, leaving, _, _ = self._passing(fit)
        chosen = np.unique(np.concatenate((first, second)))
        first, second = np.searchsorted(chosen, first), np.searchsorted(chosen, second)
        links = coo_matrix((np.ones(len(first), dtype=np.int8), (first, second)), shape=(len(chosen), len(chosen)))
        group = np.full(len(fit), -1)
        group[chosen] = connected_components(links, directed=False)[1]
        in_group = group >= 0
        in_group[chosen] = np.bincount(group[chosen])[group[chosen]] > 1
        group_id = np.full(len(chosen), np.iinfo(np.int64).max)
        np.minimum.at(group_id, group[in_group], fit.track_id[in_group])
        merged_id = np.where(in_group, group_id[np.maximum(group, 0)], -1)  # per track: the id of its merged track
        union = np.full(len(candidates.labels), -1, dtype=np.int64)
        member_hit = in_group[track_of_hit] & ~leaving
        union[fit.hit_rows[member_hit]] = merged_id[track_of_hit[member_hit]]
        tried = refit(TrackCandidates(union), fit)
        good = self._passing(tried)[3]
        if max_rejected_per_track is not None:
            members = np.bincount(merged_id[in_group])[tried.track_id]
            good &= tried.n_outliers <= max_rejected_per_track * members
        replaced = in_group & np.isin(merged_id, tried.track_id[good])
        labels = candidates.labels.copy()
        moved = replaced[track_of_hit]
        labels[fit.hit_rows[moved]] = np.where(leaving[moved], -1, merged_id[track_of_hit[moved]])
        return TrackCandidates(labels), combined([fit.tracks(~replaced), tried.tracks(good)])

    def _rescued_outliers(
        self, candidates: TrackCandidates, fit: FitResults, refit: Refit
    ) -> tuple[TrackCandidates, FitResults]:
        """``candidates`` and ``fit`` with the rejected hits of each passing track, where they are at least
        ``min_hits``, moved to a track of their own where ``refit`` of them passes the cuts."""
        track_of_hit, _, _, passing = self._passing(fit)
        rejected = fit.outlier & passing[track_of_hit]
        donors = np.flatnonzero(np.bincount(track_of_hit[rejected], minlength=len(fit)) >= self.min_hits)
        if not len(donors):
            return candidates, fit
        first_id = max(int(candidates.labels.max(initial=-1)), int(fit.track_id.max(initial=-1))) + 1
        new_id = np.full(len(fit), -1, dtype=np.int64)
        new_id[donors] = first_id + np.arange(len(donors))
        moving = rejected & (new_id[track_of_hit] >= 0)
        pieces = np.full(len(candidates.labels), -1, dtype=np.int64)
        pieces[fit.hit_rows[moving]] = new_id[track_of_hit[moving]]
        tried = refit(TrackCandidates(pieces), None)
        rescued = tried.tracks(self._passing(tried)[3])
        moved = moving & np.isin(new_id[track_of_hit], rescued.track_id)
        labels = candidates.labels.copy()
        labels[fit.hit_rows[moved]] = new_id[track_of_hit[moved]]
        return TrackCandidates(labels), combined([fit.without_hits(moved), rescued])


def _with_grown(candidates: TrackCandidates, fit: FitResults, grown: FitResults) -> tuple[TrackCandidates, FitResults]:
    """``candidates`` and ``fit`` with the tracks of ``grown`` (refits of some of them with free hits added) in
    place of their own: the free hits they hold take their labels."""
    if not len(grown):
        return candidates, fit
    labels = candidates.labels
    joining = labels[grown.hit_rows] < 0
    new_labels = labels.copy()
    new_labels[grown.hit_rows[joining]] = grown.track_id[grown.track_of_hit()[joining]]
    return TrackCandidates(new_labels), combined([fit.tracks(~np.isin(fit.track_id, grown.track_id)), grown])


def _disjoint(pairs: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Of the pairs [P, 2] (of their ``counts`` [P] shared hits), those that take no track another pair took
    before them, the pairs with the most shared hits first (of equals, the first in order)."""
    taken: set[int] = set()
    chosen = []
    for index in np.lexsort((np.arange(len(pairs)), -counts)):
        first, second = (int(track) for track in pairs[index])
        if first not in taken and second not in taken:
            taken.update((first, second))
            chosen.append(index)
    return pairs[np.sort(np.asarray(chosen, dtype=np.int64))]
