"""Held-out evaluation of a finder: track efficiency, fake and duplicate rates (the project's matching)
and edge efficiency/purity after each stage, over simulated events; with a fitter on the finder, also the rates
of the tracks a :class:`~tracking_algs.fitting.selection.TrackSelection` keeps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from tracking_algs.event import Event
from tracking_algs.finding.finder import TrackFinder
from tracking_algs.finding.selected import selected_tracks
from tracking_algs.fitting.results import fitted_pt
from tracking_algs.fitting.selection import TrackSelection
from tracking_algs.modules import TRACKML_BEAM_PIPE, TRACKML_SUPPORT_TUBE
from tracking_algs.performance import MatchResult, ParticleSelection, edge_counts, match_tracks, truth_graph
from tracking_algs.performance.edges import edge_keys
from tracking_algs.performance.lookup import hit_particle_pt, particle_rows
from tracking_algs.simulation.secondaries import PARTICLE_KINDS, particle_kinds

#: pT thresholds (GeV) the figures are quoted for.
PT_THRESHOLDS: tuple[float, ...] = (1.0, 0.5)
#: particles produced at least this far (mm) from the z axis count as secondaries in the split by origin
SECONDARY_RADIUS_MM = 1.0
#: the groups of the split by origin
ORIGINS = ("beam_line", "secondary")
#: the groups of the split by production point: the beam line, the passive cylinders of the TrackML detector (within
#: :data:`ON_CYLINDER_MM` of the beam pipe or the pixel support tube), anywhere else (the modules, a decay in flight)
STARTS = ("beam_line", "beam_pipe", "support_tube", "elsewhere")
ON_CYLINDER_MM = 0.01
#: why a selected particle has no written track, each particle counted in the first that applies
#: (:func:`_lost_causes`)
LOST_CAUSES = ("secondary", "dropped_by_fit_selection", "edges_lost_before_building", "building")
#: a particle whose truth edges the GNN keeps fewer of than this fraction counts as lost before the building
KEPT_EDGES_MIN = 0.9


def evaluate(
    finder: TrackFinder,
    events: Iterable[Event],
    selection: ParticleSelection | None = None,
    track_selection: TrackSelection | None = None,
) -> dict:
    """Run ``finder`` on ``events`` and summarise: per pT threshold the match summary, per stage the
    edge efficiency (of all truth edges, and of those of particles above the first pT threshold) and purity
    (counts summed over events), the efficiency above the first pT threshold for the particles from the beam line
    and for the secondaries apart (``by_origin_pt>1``), for each kind of the simulation's particles
    (``by_kind_pt>1``: :data:`~tracking_algs.simulation.secondaries.PARTICLE_KINDS`, told by their ids) and by
    where they start (``by_start_pt>1``: :data:`STARTS`), and the mean time per stage in ms.  When the finder
    fits, ``"selected"`` holds the match summaries of the tracks ``track_selection`` (default: the defaults)
    keeps, ``lost_pt>1`` why the particles above the first threshold that no kept track finds are lost (each counted
    under the first of :data:`LOST_CAUSES` that applies) and ``lost_secondaries_pt>1`` the secondaries among them by
    the other causes.

    The returned dict also holds ``"matches"`` and, when the finder fits, ``"selected_matches"``: {threshold:
    :class:`MatchResult`} of the candidates and of the kept tracks (for plots and further study)."""
    selection = selection or ParticleSelection()
    track_selection = track_selection or TrackSelection()
    matches: dict[float, list[MatchResult]] = {pt: [] for pt in PT_THRESHOLDS}
    selected: dict[float, list[MatchResult]] = {pt: [] for pt in PT_THRESHOLDS}
    counts: dict[str, np.ndarray] = {}
    origin_counts: dict[str, np.ndarray] = {}
    kind_counts: dict[str, np.ndarray] = {}
    start_counts: dict[str, np.ndarray] = {}
    timing: dict[str, list[float]] = {}
    n_hits = []
    track_pts: list[np.ndarray] = []  # the fitted pT of the kept tracks of each event, in their match's order
    lost = np.zeros(len(LOST_CAUSES), dtype=np.int64)
    lost_secondaries = np.zeros(len(LOST_CAUSES) - 1, dtype=np.int64)
    for event in events:
        result = finder.find(event.spacepoints)
        n_hits.append(len(event.spacepoints))
        kept = None
        if result.fit is not None and finder.fitter is not None:
            kept, kept_fit = selected_tracks(track_selection, result, finder.fitter, event.spacepoints,
                                             finder.config.building, finder.graph.bfield_t)  # fmt: skip
        for pt in PT_THRESHOLDS:
            chosen = ParticleSelection(pt_min=pt, eta_max=selection.eta_max, min_hits=selection.min_hits)
            matches[pt].append(match_tracks(event, result.candidates, chosen))
            if kept is not None:
                selected[pt].append(match_tracks(event, kept, chosen))
        # row-aligned with the particles table, as the particle columns of every MatchResult of this event are
        particles = event.known_particles()
        secondary = np.hypot(particles.vx, particles.vy) >= SECONDARY_RADIUS_MM
        kind = particle_kinds(particles.particle_id)
        start = np.where(secondary, _start(event), 0)
        for key, results in (("tracks", matches[PT_THRESHOLDS[0]]), ("selected", selected[PT_THRESHOLDS[0]])):
            if results:
                origin_counts[key] = origin_counts.get(key, 0) + _group_counts(results[-1], secondary, len(ORIGINS))
                kind_counts[key] = kind_counts.get(key, 0) + _group_counts(results[-1], kind, len(PARTICLE_KINDS))
                start_counts[key] = start_counts.get(key, 0) + _group_counts(results[-1], start, len(STARTS))
        truth = truth_graph(event)
        if kept is not None:
            written = selected[PT_THRESHOLDS[0]][-1]
            track_pts.append(fitted_pt(written.track_id, kept_fit.track_id, kept_fit.params))
            causes = _lost_causes(event, truth, result.edges["gnn"], matches[PT_THRESHOLDS[0]][-1], written, secondary)
            lost += causes[0]
            lost_secondaries += causes[1]
        fast = truth[:, hit_particle_pt(event)[truth[0]] > PT_THRESHOLDS[0]]
        for stage, edges in result.edges.items():
            found = (*edge_counts(edges, truth), *edge_counts(edges, fast)[:2])
            counts[stage] = counts.get(stage, np.zeros(5, np.int64)) + np.array(found)
        for stage, ms in result.timing_ms.items():
            timing.setdefault(stage, []).append(ms)
    combined = {pt: MatchResult.combine(results) for pt, results in matches.items()}
    selected_combined = {pt: MatchResult.combine(results) for pt, results in selected.items() if results}
    fitted = {f"pt>{pt:g}": result.summary() for pt, result in selected_combined.items()}
    if selected_combined:
        above = np.concatenate(track_pts) > PT_THRESHOLDS[0]
        fitted[f"fitted_pt>{PT_THRESHOLDS[0]:g}"] = selected_combined[PT_THRESHOLDS[0]].rates_among(above)
    by_origin = {key: _group_summary(ORIGINS, counts) for key, counts in origin_counts.items()}
    by_kind = {key: _group_summary(PARTICLE_KINDS, counts) for key, counts in kind_counts.items()}
    by_start = {key: _group_summary(STARTS, counts) for key, counts in start_counts.items()}
    losses = {}
    if fitted:
        losses = {
            f"lost_pt>{PT_THRESHOLDS[0]:g}": dict(zip(LOST_CAUSES, lost.tolist(), strict=True)),
            f"lost_secondaries_pt>{PT_THRESHOLDS[0]:g}": dict(
                zip(LOST_CAUSES[1:], lost_secondaries.tolist(), strict=True)
            ),
        }
    return {
        "events": len(n_hits),
        "mean_spacepoints": float(np.mean(n_hits)) if n_hits else 0.0,
        "tracks": {f"pt>{pt:g}": combined[pt].summary() for pt in PT_THRESHOLDS},
        **({"selected": fitted} if fitted else {}),
        **losses,
        f"by_origin_pt>{PT_THRESHOLDS[0]:g}": by_origin,
        f"by_kind_pt>{PT_THRESHOLDS[0]:g}": by_kind,
        f"by_start_pt>{PT_THRESHOLDS[0]:g}": by_start,
        "edges": {
            stage: _edge_summary(n_true, n_truth, n_predicted, n_fast_true, n_fast_truth, n_events=len(n_hits))
            for stage, (n_true, n_truth, n_predicted, n_fast_true, n_fast_truth) in counts.items()
        },
        "timing_ms": {stage: float(np.mean(values)) for stage, values in timing.items()},
        "matches": combined,
        **({"selected_matches": selected_combined} if selected_combined else {}),
    }


def _start(event: Event) -> np.ndarray:
    """Where each of ``event``'s particles starts, as an index into :data:`STARTS` other than the beam line's: on
    the beam pipe, on the pixel support tube, or elsewhere."""
    particles = event.known_particles()
    start = np.full(len(particles), STARTS.index("elsewhere"))
    for name, cylinder in (("beam_pipe", TRACKML_BEAM_PIPE), ("support_tube", TRACKML_SUPPORT_TUBE)):
        start[cylinder.holds(particles.vx, particles.vy, particles.vz, ON_CYLINDER_MM)] = STARTS.index(name)
    return start


def _group_counts(match: MatchResult, group: np.ndarray, n_groups: int) -> np.ndarray:
    """[selected, matched] [n_groups, 2] of ``match``'s particles in each group (``group``: each particle's group
    number, row-aligned with ``match``'s particles; a mask counts as groups 0 and 1)."""
    group = np.asarray(group, dtype=np.int64)
    chosen = match.particle_selected
    return np.column_stack((np.bincount(group[chosen], minlength=n_groups),
                            np.bincount(group[chosen & match.particle_matched], minlength=n_groups)))  # fmt: skip


def _lost_causes(
    event: Event,
    truth: np.ndarray,
    gnn_edges: np.ndarray,
    candidates: MatchResult,
    written: MatchResult,
    secondary: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """How many of the selected particles of ``event`` no written track finds, by :data:`LOST_CAUSES`: secondaries
    (mask ``secondary`` over the particles); found by a candidate the fit selection drops; fewer than
    :data:`KEPT_EDGES_MIN` of their ``truth`` edges left after the GNN; and the rest, which the building splits or
    leaves out.  Second, the secondaries among them by the other causes (``LOST_CAUSES[1:]``).  ``candidates`` and
    ``written`` match the candidates and the written tracks (row-aligned with the event's particles)."""
    particles = event.known_particles()
    truth_particle = particle_rows(particles.particle_id, event.known_truth().particle_id[truth[0]])
    known = truth_particle >= 0
    kept = np.isin(edge_keys(truth[:, known], unique=False), edge_keys(gnn_edges))
    n_particles = len(particles.particle_id)
    edges_of = np.bincount(truth_particle[known], minlength=n_particles)
    kept_of = np.bincount(truth_particle[known], weights=kept, minlength=n_particles)
    missed = written.particle_selected & ~written.particle_matched
    causes = (candidates.particle_matched, kept_of < KEPT_EDGES_MIN * np.maximum(edges_of, 1))
    return _first_causes(missed, (secondary, *causes)), _first_causes(missed & secondary, causes)


def _first_causes(missed: np.ndarray, causes: tuple[np.ndarray, ...]) -> np.ndarray:
    """How many of the ``missed`` particles (mask) each of ``causes`` (masks, in order) takes first, and how many
    none takes."""
    counts = []
    for cause in causes:
        counts.append(int((missed & cause).sum()))
        missed = missed & ~cause
    return np.array([*counts, int(missed.sum())])


def _group_summary(names: tuple[str, ...], counts: np.ndarray) -> dict[str, dict[str, Any]]:
    return {
        name: {"n_selected": int(n), "n_matched": int(matched), "efficiency": matched / n if n else None}
        for name, (n, matched) in zip(names, counts, strict=True)
    }


def _edge_summary(
    n_true: int, n_truth: int, n_predicted: int, n_fast_true: int, n_fast_truth: int, n_events: int
) -> dict[str, Any]:
    return {
        "efficiency": n_true / n_truth if n_truth else None,
        f"efficiency_pt>{PT_THRESHOLDS[0]:g}": n_fast_true / n_fast_truth if n_fast_truth else None,
        "purity": n_true / n_predicted if n_predicted else None,
        "edges_per_event": n_predicted / n_events,
    }


def without_matches(summary: dict) -> dict:
    """The summary without the ``matches`` and ``selected_matches`` objects (JSON-ready)."""
    return {key: value for key, value in summary.items() if key not in ("matches", "selected_matches")}
