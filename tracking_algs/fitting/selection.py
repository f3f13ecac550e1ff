"""Track selection after the fit: the found tracks a job keeps, judged by their fit.

With ``drop_outliers`` the hits the fit rejected leave their track, so each kept track holds exactly the hits its
fit used.  A track the fitter could not fit (status other than OK), whose fit p-value is below ``min_pvalue``,
that keeps fewer than ``min_hits`` hits or whose fitted transverse momentum is below ``min_pt_gev`` is dropped:
its hits become unassigned.  The p-value removes the chains of hits from several particles that the track building
can link in dense events (no helix goes through them); the pT threshold, the reconstruction threshold of a
tracking chain, removes the pieces of low-pT particles that curl through the detector.  Last, of two kept tracks
whose perigees agree within their errors (``max_split_chi2``), the one with fewer hits (of equals, the worse fit) is
dropped: a particle the track building cut in two, or built twice (:mod:`~tracking_algs.fitting.split_tracks`).
"""

from __future__ import annotations

import attrs
import numpy as np
from attrs import validators as v

from tracking_algs.event import TrackCandidates
from tracking_algs.fitting.results import FitResults, FitStatus, transverse_momentum
from tracking_algs.fitting.split_tracks import redundant_pieces


@attrs.frozen(kw_only=True)
class TrackSelection:
    """The ``[fitting.selection]`` table: whether to select (``enabled``), the smallest fit p-value kept
    (``min_pvalue``), whether the hits the fit rejected leave their track (``drop_outliers``), the fewest hits
    a kept track holds (``min_hits``, counted after that), the smallest fitted transverse momentum kept
    (``min_pt_gev``; 0 keeps all) and the χ² below which a track whose perigee agrees with that of a better kept
    track (more hits, or as many and a higher p-value) is dropped as a split piece or a duplicate of it
    (``max_split_chi2``, :mod:`~tracking_algs.fitting.split_tracks`; 20.52 is the χ² quantile of p = 1e-3 for the 5
    perigee parameters; 0 keeps them)."""

    enabled: bool = True
    min_pvalue: float = attrs.field(default=1e-3, validator=[v.ge(0.0), v.le(1.0)])
    drop_outliers: bool = True
    min_hits: int = attrs.field(default=5, validator=v.ge(1))
    min_pt_gev: float = attrs.field(default=0.4, validator=v.ge(0.0))
    max_split_chi2: float = attrs.field(default=20.52, validator=v.ge(0.0))

    def apply(self, candidates: TrackCandidates, fit: FitResults) -> tuple[TrackCandidates, FitResults]:
        """The kept tracks (labels of dropped tracks and rejected hits set to -1) and their rows of ``fit``,
        hit columns regrouped to the kept hits; unchanged when not ``enabled``."""
        if not self.enabled:
            return candidates, fit
        track_of_hit = np.repeat(np.arange(len(fit)), np.diff(fit.hit_offsets))
        leaving = fit.outlier if self.drop_outliers else np.zeros(len(fit.outlier), dtype=bool)
        remaining = np.bincount(track_of_hit[~leaving], minlength=len(fit))
        kept = (fit.status == FitStatus.OK) & (fit.pvalue >= self.min_pvalue) & (remaining >= self.min_hits)
        kept &= transverse_momentum(fit.params) >= self.min_pt_gev
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
        return TrackCandidates(labels), selected
