"""The selection after the fit (``[fitting.selection]``) applied to one event's finding result, with what it takes
from the event: the fitter's refitter and follower on the event's spacepoints, and the second building over the
event's free hits.  The job (:mod:`tracking_algs.job.process`) and the validation
(:mod:`tracking_algs.finding.validation`) both select through :func:`selected_tracks`."""

from __future__ import annotations

from tracking_algs.event import Spacepoints, TrackCandidates
from tracking_algs.finding.config import BuildingConfig
from tracking_algs.finding.free_hits import free_hit_rebuild
from tracking_algs.finding.result import FindingResult
from tracking_algs.fitting.hook import TrackFitter, follower, refit_on
from tracking_algs.fitting.results import FitResults
from tracking_algs.fitting.selection import TrackSelection


def selected_tracks(
    selection: TrackSelection,
    found: FindingResult,
    fitter: TrackFitter,
    spacepoints: Spacepoints,
    building: BuildingConfig,
    bfield_t: float | None,
) -> tuple[TrackCandidates, FitResults]:
    """The tracks ``selection`` keeps of ``found``'s candidates and their fit (``found.fit``, by ``fitter``) on the
    event's ``spacepoints``: refits by the fitter's refitter, the fitter's follower, and, with ``rebuild_free_hits``,
    the chains the building of ``building`` makes over the free hits in the field ``bfield_t`` (tesla; None: the
    default detector's)."""
    if found.fit is None:
        raise ValueError("selected_tracks: the finding result holds no fit (a finder without a fitter)")
    refit = refit_on(fitter, spacepoints)
    follow = follower(fitter, spacepoints)
    rebuild = free_hit_rebuild(building, spacepoints, found, bfield_t) if selection.rebuild_free_hits else None
    return selection.apply(found.candidates, found.fit, refit, spacepoints, follow, rebuild)
