"""Truth matching of found tracks (ACTS double-majority definition) and the rates built on it.

For each track the majority particle is the particle owning most of its hits (noise hits own none; ties
go to the smaller particle id).  A track is *matched* when nMaj/nTrackHits ≥ ratio and
nMaj/nParticleHits ≥ ratio (ratio 0.5), otherwise it is *fake*.  When several matched tracks share a
particle, the longest (then the one with more majority hits, then the smaller track id) stays matched and the
others are *duplicates*.  Efficiency = selected particles with a matched track / selected particles; fake
rate = fake tracks / tracks; duplicate rate = duplicate tracks / tracks.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import attrs
import numpy as np

from inference_iface.options import finite, integer
from tracking_algs.event import Event, TrackCandidates
from tracking_algs.performance.lookup import particle_rows
from tracking_algs.ranges import first_of_runs


class TrackStatus(enum.IntEnum):
    """Outcome of matching one track."""

    MATCHED = 0
    DUPLICATE = 1
    FAKE = 2


@attrs.frozen(kw_only=True)
class ParticleSelection:
    """Particles the efficiency is measured on: pT > ``pt_min`` GeV, |eta| < ``eta_max``, ≥ ``min_hits`` hits.

    Raises ``TypeError`` or ``ValueError`` for a value that is not a finite number ≥ 0 (``pt_min``), > 0
    (``eta_max``), or an integer ≥ 1 (``min_hits``)."""

    pt_min: float = attrs.field(default=1.0, validator=[finite, attrs.validators.ge(0.0)])
    eta_max: float = attrs.field(default=4.0, validator=[finite, attrs.validators.gt(0.0)])
    min_hits: int = attrs.field(default=5, validator=[integer, attrs.validators.ge(1)])

    def select(self, pt: np.ndarray, eta: np.ndarray, nhits: np.ndarray) -> np.ndarray:
        """Boolean mask of the particles passing the selection."""
        return (pt > self.pt_min) & (np.abs(eta) < self.eta_max) & (nhits >= self.min_hits)


@attrs.frozen(kw_only=True)
class MatchResult:
    """Per-particle and per-track outcome of matching, for one event or several combined.

    Particle arrays (length P): ``particle_id``, ``particle_pt``, ``particle_eta``, ``particle_nhits`` (hits
    in the truth), ``particle_selected``, ``particle_matched`` (has a matched track).
    Track arrays (length T): ``track_id``, ``track_status`` (:class:`TrackStatus` values), ``track_particle``
    (majority particle id, 0 when the track holds only noise), ``track_nhits``, ``track_nmajority``,
    ``track_particle_nhits`` (the majority particle's hits in the truth, 0 for noise), ``track_eta`` (median
    pseudorapidity of the track's hit positions seen from the origin).

    A *fragment* is a fake track that is a piece of one particle: its majority particle holds at least half of
    its hits, but it holds less than half of that particle's (:attr:`n_fragment`).
    """

    particle_id: np.ndarray
    particle_pt: np.ndarray
    particle_eta: np.ndarray
    particle_nhits: np.ndarray
    particle_selected: np.ndarray
    particle_matched: np.ndarray
    track_id: np.ndarray
    track_status: np.ndarray
    track_particle: np.ndarray
    track_nhits: np.ndarray
    track_nmajority: np.ndarray
    track_particle_nhits: np.ndarray
    track_eta: np.ndarray

    @classmethod
    def combine(cls, results: Sequence[MatchResult]) -> MatchResult:
        """All particles and tracks of several results (e.g. events) as one result."""
        return cls(**{f.name: np.concatenate([getattr(r, f.name) for r in results]) for f in attrs.fields(cls)})

    @property
    def n_selected(self) -> int:
        """Number of selected particles."""
        return int(self.particle_selected.sum())

    @property
    def n_matched(self) -> int:
        """Number of selected particles with a matched track."""
        return int((self.particle_selected & self.particle_matched).sum())

    @property
    def n_tracks(self) -> int:
        """Number of tracks considered."""
        return len(self.track_id)

    @property
    def n_fake(self) -> int:
        """Number of fake tracks."""
        return int((self.track_status == TrackStatus.FAKE).sum())

    @property
    def n_duplicate(self) -> int:
        """Number of duplicate tracks."""
        return int((self.track_status == TrackStatus.DUPLICATE).sum())

    def fragments(self) -> np.ndarray:
        """Mask [T] of the fake tracks that are fragments of one particle (see the class docstring)."""
        fake = self.track_status == TrackStatus.FAKE
        return fake & (self.track_particle != 0) & (2 * self.track_nmajority >= self.track_nhits)

    @property
    def n_fragment(self) -> int:
        """Number of fragments."""
        return int(self.fragments().sum())

    @property
    def efficiency(self) -> float:
        """Matched selected particles / selected particles (NaN without selected particles)."""
        return _ratio(self.n_matched, self.n_selected)

    @property
    def fake_rate(self) -> float:
        """Fake tracks / tracks (NaN without tracks)."""
        return _ratio(self.n_fake, self.n_tracks)

    @property
    def duplicate_rate(self) -> float:
        """Duplicate tracks / tracks (NaN without tracks)."""
        return _ratio(self.n_duplicate, self.n_tracks)

    def rates_among(self, tracks: np.ndarray) -> dict[str, float | int | None]:
        """Counts and rates of fake and duplicate tracks among the tracks of mask ``tracks`` [T] (the tracks fitted
        above a transverse momentum, say): ``n_tracks``, ``n_fake``, ``n_duplicate``, ``fake_rate``,
        ``duplicate_rate`` (``None`` without tracks)."""
        status = self.track_status[tracks]
        n_tracks = len(status)
        n_fake = int((status == TrackStatus.FAKE).sum())
        n_duplicate = int((status == TrackStatus.DUPLICATE).sum())
        rates = {"fake_rate": _ratio(n_fake, n_tracks), "duplicate_rate": _ratio(n_duplicate, n_tracks)}
        counts = {"n_tracks": n_tracks, "n_fake": n_fake, "n_duplicate": n_duplicate}
        return {**counts, **{name: None if math.isnan(value) else value for name, value in rates.items()}}

    def summary(self) -> dict[str, float | int | None]:
        """Counts and rates as plain JSON-ready values (an undefined rate is ``None``)."""
        rates = {"efficiency": self.efficiency, "fake_rate": self.fake_rate, "duplicate_rate": self.duplicate_rate}
        counts = {"n_selected": self.n_selected, "n_matched": self.n_matched, "n_tracks": self.n_tracks,
                  "n_fake": self.n_fake, "n_fragment": self.n_fragment, "n_duplicate": self.n_duplicate}  # fmt: skip
        return {**counts, **{name: None if math.isnan(value) else value for name, value in rates.items()}}


@attrs.define
class PerformanceAccumulator:
    """Collects the match results of many events; :meth:`result` combines them."""

    results: list[MatchResult] = attrs.field(factory=list)

    def add(self, result: MatchResult) -> None:
        """Add one event's result."""
        self.results.append(result)

    def result(self) -> MatchResult:
        """All events so far as one :class:`MatchResult`."""
        if not self.results:
            return _empty_result()
        return MatchResult.combine(self.results)


def match_tracks(
    event: Event,
    candidates: TrackCandidates,
    selection: ParticleSelection | None = None,
    *,
    min_track_hits: int = 3,
    ratio: float = 0.5,
) -> MatchResult:
    """Match the candidates of ``event`` to its truth particles (double majority, see the module doc).

    Only tracks with at least ``min_track_hits`` hits are considered. Needs ``event.truth`` and
    ``event.particles``; raises ``ValueError`` otherwise, when the labels do not cover the spacepoints, or for a
    ``min_track_hits`` that is not an integer ≥ 1 or a ``ratio`` outside (0, 1] (NaN included).
    """
    if isinstance(min_track_hits, bool) or not isinstance(min_track_hits, (int, np.integer)) or min_track_hits < 1:
        raise ValueError(f"match_tracks: min_track_hits must be an integer ≥ 1, got {min_track_hits!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.floating)) or not 0.0 < ratio <= 1.0:
        raise ValueError(f"match_tracks: ratio must be a number in (0, 1], got {ratio!r}")
    selection = selection or ParticleSelection()
    if event.truth is None or event.particles is None:
        raise ValueError(f"event {event.event_id}: matching needs truth and particles")
    labels = candidates.labels
    if len(labels) != len(event.spacepoints):
        raise ValueError(f"event {event.event_id}: {len(labels)} track labels for {len(event.spacepoints)} hits")

    particles = event.particles
    hit_row = particle_rows(particles.particle_id, event.truth.particle_id)  # -1: noise or unknown particle
    particle_nhits = np.bincount(hit_row[hit_row >= 0], minlength=len(particles))

    track_id, offsets, rows = candidates.groups()
    all_sizes = np.diff(offsets)
    keep = all_sizes >= min_track_hits
    rows = rows[np.repeat(keep, all_sizes)]
    track_id, sizes = track_id[keep], all_sizes[keep]
    track_of_row = np.repeat(np.arange(len(track_id)), sizes)
    n_tracks = len(track_id)

    # majority particle per track: count (track, particle) pairs, keep the largest count per track
    owned = hit_row[rows] >= 0
    stride = len(particles) + 1
    pairs, counts = np.unique(track_of_row[owned] * stride + hit_row[rows][owned], return_counts=True)
    pair_track, pair_particle = np.divmod(pairs, stride)
    best = np.lexsort((particles.particle_id[pair_particle], -counts, pair_track))
    best = best[first_of_runs(pair_track[best])]
    majority = np.full(n_tracks, -1)
    n_majority = np.zeros(n_tracks, dtype=np.int64)
    majority[pair_track[best]] = pair_particle[best]
    n_majority[pair_track[best]] = counts[best]

    has_majority = majority >= 0
    matched = has_majority.copy()
    matched[has_majority] = (n_majority[has_majority] >= ratio * sizes[has_majority]) & (
        n_majority[has_majority] >= ratio * particle_nhits[majority[has_majority]]
    )
    status = np.full(n_tracks, TrackStatus.FAKE, dtype=np.int8)
    status[matched] = TrackStatus.DUPLICATE
    winners = np.flatnonzero(matched)
    winners = winners[np.lexsort((track_id[winners], -n_majority[winners], -sizes[winners], majority[winners]))]
    winners = winners[first_of_runs(majority[winners])]
    status[winners] = TrackStatus.MATCHED
    particle_matched = np.zeros(len(particles), dtype=bool)
    particle_matched[majority[winners]] = True

    track_particle = np.zeros(n_tracks, dtype=np.int64)
    track_particle[has_majority] = particles.particle_id[majority[has_majority]]
    track_particle_nhits = np.zeros(n_tracks, dtype=np.int64)  # indexed only where a particle is: there may be none
    track_particle_nhits[has_majority] = particle_nhits[majority[has_majority]]
    sp = event.spacepoints
    hit_eta = np.arcsinh(sp.z[rows] / np.maximum(sp.r[rows], 1e-12))
    pt, eta = particles.pt, particles.eta
    return MatchResult(
        particle_id=particles.particle_id,
        particle_pt=pt,
        particle_eta=eta,
        particle_nhits=particle_nhits,
        particle_selected=selection.select(pt, eta, particle_nhits),
        particle_matched=particle_matched,
        track_id=track_id,
        track_status=status,
        track_particle=track_particle,
        track_nhits=sizes,
        track_nmajority=n_majority,
        track_particle_nhits=track_particle_nhits,
        track_eta=_group_median(hit_eta, track_of_row, sizes),
    )


def _group_median(values: np.ndarray, group: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Median of ``values`` per group; ``group`` is sorted ascending, ``sizes`` the group lengths (all > 0)."""
    ordered = values[np.lexsort((values, group))]
    start = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    return 0.5 * (ordered[start + (sizes - 1) // 2] + ordered[start + sizes // 2]) if len(sizes) else np.zeros(0)


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _empty_result() -> MatchResult:
    empty_f, empty_i, empty_b = np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    return MatchResult(
        particle_id=empty_i, particle_pt=empty_f, particle_eta=empty_f, particle_nhits=empty_i,
        particle_selected=empty_b, particle_matched=empty_b, track_id=empty_i,
        track_status=np.zeros(0, dtype=np.int8), track_particle=empty_i, track_nhits=empty_i,
        track_nmajority=empty_i, track_particle_nhits=empty_i, track_eta=empty_f,
    )  # fmt: skip
