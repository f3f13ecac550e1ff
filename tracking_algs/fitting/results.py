"""What a fitter returns: :class:`FitResults`, one row per track, with :class:`FitStatus` codes."""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

import attrs
import numpy as np

from tracking_algs.event import TrackCandidates, float_column, int_column, whole_numbers
from tracking_algs.ranges import concatenated_ranges

#: names of the five perigee parameters, in the order of ``FitResults.params`` (mm, mm, rad, rad, e/GeV)
PARAMETER_NAMES = ("d0", "z0", "phi", "theta", "qop")
#: column names of :meth:`FitResults.cov_upper_triangle`: cov_00, cov_01, ..., cov_04, cov_11, ..., cov_44
COVARIANCE_NAMES = tuple(f"cov_{i}{j}" for i in range(5) for j in range(i, 5))


def transverse_momentum(params: np.ndarray) -> np.ndarray:
    """Transverse momentum (GeV) [N] of perigee parameters [N, 5] of unit charge: sin(theta) / |q/p|."""
    return np.sin(params[:, 3]) / np.maximum(np.abs(params[:, 4]), 1e-12)


def closest_points(params: np.ndarray) -> np.ndarray:
    """The points of closest approach to the z axis [N, 3] (mm) of perigee parameters [N, 5]:
    ``(-d0 sin phi, d0 cos phi, z0)``."""
    d0, z0, phi = params[:, 0], params[:, 1], params[:, 2]
    return np.column_stack((-d0 * np.sin(phi), d0 * np.cos(phi), z0))


def fitted_pt(track_ids: np.ndarray, fit_track_ids: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Fitted transverse momentum (GeV) [N] of tracks ``track_ids`` [N], from the perigee ``params`` [T, 5] of the
    fitted tracks ``fit_track_ids`` [T] (sorted); NaN for a track without a fit."""
    pt = np.full(len(track_ids), np.nan)
    if not len(fit_track_ids):
        return pt
    where = np.minimum(np.searchsorted(fit_track_ids, track_ids), len(fit_track_ids) - 1)
    found = fit_track_ids[where] == track_ids
    pt[found] = transverse_momentum(params[where[found]])
    return pt


class FitStatus(IntEnum):
    """Outcome of fitting one track. Tracks with a status other than ``OK`` carry sentinel values:
    params, cov, chi2 and pvalue 0, ndf 0 (never NaN)."""

    OK = 0
    #: fewer usable hits than ``min_hits``, hits on fewer layers than ``min_layers``, too few measurement
    #: dimensions for five parameters, or outlier refits that would leave fewer than the fewest hits allowed
    TOO_FEW_HITS = 1
    #: the three seed spacepoints are degenerate (coincident in the transverse plane, or no helix through them)
    SEED_FAILED = 2
    #: the smoothed state at the first hit does not reach the perigee (a hit the helix cannot reach only ends the
    #: track there)
    PROPAGATION_FAILED = 3
    #: the perigee state or the χ² is not finite, or the fitted helix is too tight to join the first and last hits
    DIVERGED = 4


@attrs.frozen
class FitResults:
    """Fitted tracks as numpy columns, one row per track (``T`` tracks), plus per-hit outlier flags.

    Track columns: ``track_id`` [T]; ``params`` [T, 5] perigee (d0, z0, phi, theta, q/p) w.r.t. the z axis through the
    origin, in mm, mm, rad, rad, e/GeV; ``cov`` [T, 5, 5]; ``chi2`` [T]; ``ndf`` [T] (the measured dimensions of the
    hits used, 2 per 2-D hit and 1 per 1-D hit, minus 5); ``pvalue`` [T]; ``n_hits`` [T] hits used in the fit;
    ``n_outliers`` [T] hits rejected; ``status`` [T] :class:`FitStatus` codes.

    Per-hit columns (``H`` hits, grouped by track as in :meth:`TrackCandidates.groups`): the spacepoint row of
    each hit is ``hit_rows[hit_offsets[k]:hit_offsets[k + 1]]`` for track ``k``, and ``outlier`` [H] is True for
    the hits the fit rejected.
    """

    track_id: np.ndarray = attrs.field(converter=int_column)
    params: np.ndarray = attrs.field(converter=float_column)
    cov: np.ndarray = attrs.field(converter=float_column)
    chi2: np.ndarray = attrs.field(converter=float_column)
    ndf: np.ndarray = attrs.field(converter=int_column)
    pvalue: np.ndarray = attrs.field(converter=float_column)
    n_hits: np.ndarray = attrs.field(converter=int_column)
    n_outliers: np.ndarray = attrs.field(converter=int_column)
    status: np.ndarray = attrs.field(converter=int_column)
    hit_offsets: np.ndarray = attrs.field(converter=int_column)
    hit_rows: np.ndarray = attrs.field(converter=int_column)
    outlier: np.ndarray = attrs.field(converter=lambda value: np.asarray(value, dtype=bool))

    def __attrs_post_init__(self) -> None:
        n = len(self.track_id)
        shapes = {
            "params": (self.params.shape, (n, 5)),
            "cov": (self.cov.shape, (n, 5, 5)),
            "hit_offsets": (self.hit_offsets.shape, (n + 1,)),
            "outlier": (self.outlier.shape, self.hit_rows.shape),
        }
        shapes.update({name: (getattr(self, name).shape, (n,))
                       for name in ("chi2", "ndf", "pvalue", "n_hits", "n_outliers", "status")})  # fmt: skip
        for name, (actual, expected) in shapes.items():
            if actual != expected:
                raise ValueError(f"FitResults.{name}: shape {actual}, expected {expected}")

    def __len__(self) -> int:
        return len(self.track_id)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask [T] of the tracks fitted successfully."""
        return self.status == FitStatus.OK

    def cov_upper_triangle(self) -> np.ndarray:
        """The 15 upper-triangle covariance entries per track [T, 15], in the order of :data:`COVARIANCE_NAMES`."""
        rows, cols = np.triu_indices(5)
        return self.cov[:, rows, cols]

    def track_of_hit(self) -> np.ndarray:
        """The index [H] of each hit's track (into the per-track columns)."""
        return np.repeat(np.arange(len(self)), np.diff(self.hit_offsets))

    def tracks(self, rows: np.ndarray) -> FitResults:
        """The tracks ``rows`` (indices in [0, T) or a mask [T]), in that order, with their hits; ``ValueError`` for
        other ``rows`` (a negative index would give one track's id with another's hits)."""
        rows = _indices(rows, len(self), "FitResults.tracks: rows")
        counts = np.diff(self.hit_offsets)[rows]
        hits = concatenated_ranges(self.hit_offsets[rows], counts)
        return FitResults(
            track_id=self.track_id[rows],
            **{name: getattr(self, name)[rows] for name in _TRACK_COLUMNS},
            hit_offsets=np.concatenate(([0], np.cumsum(counts))),
            hit_rows=self.hit_rows[hits],
            outlier=self.outlier[hits],
        )

    def without_hits(self, dropped: np.ndarray) -> FitResults:
        """The same tracks without the hits ``dropped`` (mask [H] over the hits; their track columns as they were,
        apart from ``n_outliers``, which no longer counts the dropped hits the fit rejected); ``ValueError`` for
        another ``dropped``."""
        dropped = np.asarray(dropped)
        if dropped.dtype != bool or dropped.shape != self.hit_rows.shape:
            raise ValueError(
                f"FitResults.without_hits: dropped of dtype {dropped.dtype} and shape {list(dropped.shape)}; expected "
                f"a boolean mask [{len(self.hit_rows)}] over the hits"
            )
        track_of_hit = self.track_of_hit()
        kept = ~dropped
        counts = np.bincount(track_of_hit[kept], minlength=len(self))
        n_outliers = self.n_outliers - np.bincount(track_of_hit[dropped & self.outlier], minlength=len(self))
        return attrs.evolve(self, n_outliers=n_outliers, hit_offsets=np.concatenate(([0], np.cumsum(counts))),
                            hit_rows=self.hit_rows[kept], outlier=self.outlier[kept])  # fmt: skip


def fit_candidates_problem(fit: FitResults, candidates: TrackCandidates) -> str | None:
    """What makes ``fit`` not a fit of ``candidates`` (``None`` when nothing does), in words naming the first bad
    track: its tracks must be the candidates' ids in :meth:`~tracking_algs.event.TrackCandidates.groups` order, and
    each track's hits rows of that track's candidate, each once."""
    track_ids = candidates.groups()[0]
    if not np.array_equal(fit.track_id, track_ids):
        differ = np.flatnonzero(fit.track_id[: len(track_ids)] != track_ids[: len(fit)])
        first = int(differ[0]) if len(differ) else min(len(fit), len(track_ids))
        return (f"{len(fit)} tracks, track_id {_at(fit.track_id, first)} at row {first}; expected the "
                f"{len(track_ids)} candidates' ids in candidates.groups() order, {_at(track_ids, first)} "
                "there")  # fmt: skip
    offsets, rows = fit.hit_offsets, fit.hit_rows
    if offsets[0] != 0 or offsets[-1] != len(rows) or (np.diff(offsets) < 0).any():
        return f"hit_offsets running from {offsets[0]} to {offsets[-1]}; expected 0 up to len(hit_rows) = {len(rows)}"
    hit_track = fit.track_of_hit()
    outside = np.flatnonzero((rows < 0) | (rows >= len(candidates.labels)))
    if len(outside):
        return (f"hit_rows {rows[outside[0]]} for track {fit.track_id[hit_track[outside[0]]]}; expected spacepoint "
                f"rows 0 to {len(candidates.labels) - 1}")  # fmt: skip
    foreign = np.flatnonzero(candidates.labels[rows] != fit.track_id[hit_track])
    if len(foreign):
        return (f"hit_rows {rows[foreign[0]]} for track {fit.track_id[hit_track[foreign[0]]]}, a spacepoint "
                f"labelled {candidates.labels[rows[foreign[0]]]}; expected rows of that track's candidate")  # fmt: skip
    _, first_seen = np.unique(rows, return_index=True)
    if len(first_seen) != len(rows):
        again = np.setdiff1d(np.arange(len(rows)), first_seen)[0]
        return f"hit_rows {rows[again]} twice for track {fit.track_id[hit_track[again]]}; expected each hit once"
    return None


def _at(values: np.ndarray, index: int) -> str:
    """``values[index]`` for a message, or "none" past the end."""
    return str(values[index]) if index < len(values) else "none"


def _indices(selection: np.ndarray, size: int, what: str) -> np.ndarray:
    """The indices [K] that ``selection`` (a boolean mask [size], or whole-number indices in [0, size)) selects;
    ``ValueError`` naming ``what`` otherwise."""
    array = np.asarray(selection)
    if array.dtype == bool:
        if array.shape != (size,):
            raise ValueError(f"{what}: a mask of shape {list(array.shape)}; expected [{size}]")
        return np.flatnonzero(array)
    indices = whole_numbers(array, what)
    if indices.ndim != 1 or (indices.size and not (indices.min() >= 0 and indices.max() < size)):
        shown = f"from {indices.min()} to {indices.max()}" if indices.size else "none"
        raise ValueError(f"{what}: indices {shown} of shape {list(indices.shape)}; expected [K] in [0, {size})")
    return indices


#: the per-track columns of :class:`FitResults` besides ``track_id``
_TRACK_COLUMNS = ("params", "cov", "chi2", "ndf", "pvalue", "n_hits", "n_outliers", "status")


def combined(parts: Sequence[FitResults]) -> FitResults:
    """One :class:`FitResults` of the tracks of ``parts`` (disjoint track ids), in the order of the track ids, each
    track's hits in the order its part gave them."""
    if not parts:
        raise ValueError("combined needs at least one part")
    track_id = np.concatenate([part.track_id for part in parts])
    order = np.argsort(track_id, kind="stable")
    hit_base = np.cumsum([0] + [len(part.hit_rows) for part in parts[:-1]])
    starts = np.concatenate([part.hit_offsets[:-1] + base for part, base in zip(parts, hit_base, strict=True)])
    counts = np.concatenate([np.diff(part.hit_offsets) for part in parts])[order]
    hits = concatenated_ranges(starts[order], counts)

    def joined(name: str) -> np.ndarray:
        return np.concatenate([getattr(part, name) for part in parts])

    return FitResults(
        track_id=track_id[order],
        **{name: joined(name)[order] for name in _TRACK_COLUMNS},
        hit_offsets=np.concatenate(([0], np.cumsum(counts))),
        hit_rows=joined("hit_rows")[hits],
        outlier=joined("outlier")[hits],
    )
