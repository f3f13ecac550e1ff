"""The job's report: ``tracks.csv``, ``fitted_tracks.csv``, ``performance.json`` and ``plots/`` from the
finished event fragments, and the summary table printed at the end of ``trkx run``.

``tracks.csv`` (TrackML submission format) lists every hit of every finished event once; hits the
finder left unassigned get ``track_id = -1``. ``fitted_tracks.csv`` has one row per fitted track with
the perigee parameters w.r.t. the z axis (mm, rad, e/GeV), the 15 upper-triangle covariance values
``cov_ij`` (i ≤ j, in the order d0, z0, phi, theta, qop), chi2, ndf, hit and outlier counts and the
fit status (0 = OK, see :class:`tracking_algs.fitting.results.FitStatus`).

The files are written into ``OUT/.report.tmp/`` first, then renamed into place one by one (:func:`write_report`).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from rich.console import Console
from rich.table import Table

from tracking_algs.fitting.results import COVARIANCE_NAMES, PARAMETER_NAMES, fitted_pt, transverse_momentum
from tracking_algs.io.csv_table import TableWriter
from tracking_algs.job.plots import plot_pulls, plot_resolutions, plot_timing
from tracking_algs.job.process import CANDIDATES
from tracking_algs.job.runner import JobSummary
from tracking_algs.job.store import EventResult, ResultStore
from tracking_algs.job_options import JobOptions
from tracking_algs.performance.histograms import efficiency_vs_eta, efficiency_vs_pt, fake_rate_vs_eta
from tracking_algs.performance.matching import MatchResult
from tracking_algs.performance.plots import plot_performance

#: Columns of ``fitted_tracks.csv`` after ``event_id`` (the output format of docs/configuration.md).
FITTED_COLUMNS: tuple[str, ...] = (
    "track_id",
    *PARAMETER_NAMES,
    *COVARIANCE_NAMES,
    "chi2",
    "ndf",
    "n_hits",
    "n_outliers",
    "status",
)
#: pT bin edges (GeV) of the resolution plots.
RESOLUTION_PT_BINS = np.array([0.5, 1.0, 2.0, 5.0, 10.0, 100.0])
#: The directory in the output where :func:`write_report` writes the report before it moves each file into place.
STAGING = ".report.tmp"
#: pulls and p-values are reported for fitted tracks with at least this many degrees of freedom
MIN_PULL_NDF = 3


def write_report(store: ResultStore, options: JobOptions, event_ids: Collection[int] | None = None) -> dict[str, Any]:
    """Write every output file from the finished fragments (of the events in ``event_ids``, when given: those the
    job's input holds); returns the ``performance.json`` content.

    The files are written into :data:`STAGING` (whatever is there first is removed: the leftover of a job killed
    there, or a file), then the previous ``performance.json`` is removed and each file renamed into place:
    ``tracks.csv``, ``fitted_tracks.csv``, the plots, ``performance.json`` last. A job stopped while it writes the
    report leaves the previous report as it was; one stopped while it renames leaves no ``performance.json``: a
    ``performance.json`` means that the files beside it are of the same run, and no file is ever seen half-written.
    An ``OSError`` while a file is renamed into place names that file (:func:`_move`).
    """
    staging = store.output / STAGING
    if staging.is_dir() and not staging.is_symlink():
        shutil.rmtree(staging)
    else:
        staging.unlink(missing_ok=True)
    try:
        performance = _write_files(store, options, staging, event_ids)
        (store.output / "performance.json").unlink(missing_ok=True)
        (store.output / "plots").mkdir(exist_ok=True)
        plots = [f"plots/{path.name}" for path in sorted((staging / "plots").iterdir())]
        for name in ("tracks.csv", "fitted_tracks.csv", *plots, "performance.json"):
            _move(staging / name, store.output / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return performance


def _move(source: Path, target: Path) -> None:
    """Rename ``source`` to ``target``; an ``OSError`` names ``target`` (not the staged file), and says when a
    directory stands in its way."""
    try:
        os.replace(source, target)
    except OSError as error:
        why = "a directory is in the way; remove it" if target.is_dir() else error.strerror
        raise OSError(error.errno, why, str(target)) from None


def _write_files(
    store: ResultStore, options: JobOptions, output: Path, event_ids: Collection[int] | None
) -> dict[str, Any]:
    """The report files from the finished fragments, in the directory ``output``; the ``performance.json`` content."""
    results = list(store.results(event_ids))
    output.mkdir()
    _write_tracks(output / "tracks.csv", results)
    _write_fitted(output / "fitted_tracks.csv", results)
    plots = output / "plots"
    performance: dict[str, Any] = {
        "events": [result.event_id for result in results],
        "tracks_per_event": [int(np.unique(result.track_label[result.track_label >= 0]).size) for result in results],
        "failed_events": [attrs.asdict(failure) for failure in store.failures()],
        "backend": results[0].backend if results else {},
        "timing_ms": _timing(results),
        "edges": _edges(results),
    }
    plot_timing(performance["timing_ms"], plots / "timing.png")
    with_truth = [result for result in results if result.truth]
    if with_truth:
        match = MatchResult.combine([_match(result) for result in with_truth])
        performance["tracking"] = _tracking(match, options)
        if all(result.fitted for result in with_truth):
            track_pt = np.concatenate([_fitted_pt(result) for result in with_truth])
            above = {"pt_min": options.performance.pt_min} | match.rates_among(track_pt > options.performance.pt_min)
            performance["tracking"]["fitted_above_pt_min"] = above
        if all(f"{CANDIDATES}track_id" in result.truth for result in with_truth):
            candidates = MatchResult.combine([_match(result, CANDIDATES) for result in with_truth])
            performance["tracking_candidates"] = _tracking(candidates, options)
            performance["tracking"]["kept_by_selection"] = kept_by_selection(candidates, match, options)
        plot_performance(match, plots)
        fits = _fit_quality(with_truth)
        if fits:
            performance["fitting"] = fits["summary"]
            plot_pulls(
                fits["pulls"],
                fits["pvalues"],
                plots / "pulls.png",
                title="found tracks matched to a particle, all hits from it",
            )
            plot_resolutions(fits["summary"]["resolution_vs_pt"], plots / "resolution_vs_pt.png")
    (output / "performance.json").write_text(json.dumps(_plain(performance), indent=2) + "\n")
    return performance


def _write_tracks(path: Path, results: list[EventResult]) -> None:
    with TableWriter(path, {"event_id": np.int64, "hit_id": np.int64, "track_id": np.int64}) as writer:
        for result in results:
            event_id = np.full(len(result.hit_id), result.event_id)
            writer.write({"event_id": event_id, "hit_id": result.hit_id, "track_id": result.track_label})


def _write_fitted(path: Path, results: list[EventResult]) -> None:
    integers = {"event_id", "track_id", "ndf", "n_hits", "n_outliers", "status"}
    dtypes = {name: np.int64 if name in integers else np.float64 for name in ("event_id", *FITTED_COLUMNS)}
    with TableWriter(path, dtypes) as writer:
        for result in results:
            if not result.fitted:
                continue
            event_id = np.full(len(result.fitted["track_id"]), result.event_id)
            writer.write({"event_id": event_id, **{name: result.fitted[name] for name in FITTED_COLUMNS}})


def _timing(results: list[EventResult]) -> dict[str, dict[str, float]]:
    stages = dict.fromkeys(stage for result in results for stage in result.timing_ms)
    summary = {}
    for stage in stages:
        values = np.array([result.timing_ms[stage] for result in results if stage in result.timing_ms])
        summary[stage] = _stats(values)
    totals = np.array([sum(result.timing_ms.values()) for result in results])
    if len(totals):
        summary["total"] = _stats(totals)
    return summary


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"mean": values.mean(), "std": values.std(), "min": values.min(), "max": values.max()}


def _edges(results: list[EventResult]) -> dict[str, dict[str, float]]:
    stages = dict.fromkeys(stage for result in results for stage in result.edges)
    return {
        stage: {key: float(np.mean([r.edges[stage][key] for r in results if key in r.edges.get(stage, {})]))
                for key in dict.fromkeys(k for r in results for k in r.edges.get(stage, {}))}
        for stage in stages
    }  # fmt: skip


def _match(result: EventResult, prefix: str = "") -> MatchResult:
    return MatchResult(**{field.name: result.truth[prefix + field.name] for field in attrs.fields(MatchResult)})


def _fitted_pt(result: EventResult) -> np.ndarray:
    """The fitted pT of the tracks of ``result``'s match, in its order (NaN for a track without a fit)."""
    fitted = result.fitted
    params = np.column_stack([fitted[name] for name in PARAMETER_NAMES])
    return fitted_pt(result.truth["track_id"], fitted["track_id"], params)


#: the lower pT threshold (GeV) the report gives efficiencies at beside the job's ``pt_min`` (keys ``..._pt_gt_0p5``)
LOW_PT_GEV = 0.5


def _chosen(match: MatchResult, options: JobOptions, pt_min: float) -> np.ndarray:
    """Mask of ``match``'s particles that the job's particle selection chooses with ``pt_min`` instead of its own."""
    selection = attrs.evolve(options.performance, pt_min=pt_min)
    return selection.select(match.particle_pt, match.particle_eta, match.particle_nhits)


def _tracking(match: MatchResult, options: JobOptions) -> dict[str, Any]:
    selection = options.performance
    low_pt = _chosen(match, options, LOW_PT_GEV)
    low_pt_matched = int((low_pt & match.particle_matched).sum())
    return {
        **match.summary(),
        "selection": attrs.asdict(selection),
        "efficiency_pt_gt_0p5": low_pt_matched / int(low_pt.sum()) if low_pt.any() else None,  # as summary()'s
        "efficiency_vs_pt": efficiency_vs_pt(match).to_dict(),
        "efficiency_vs_eta": efficiency_vs_eta(match).to_dict(),
        "fake_rate_vs_eta": fake_rate_vs_eta(match).to_dict(),
    }


def kept_by_selection(candidates: MatchResult, written: MatchResult, options: JobOptions) -> dict[str, Any]:
    """What the selection after the fit keeps of what the candidates found: of the selected particles a candidate
    matches (``n_matched_candidates``), those a written track matches too (``n_kept``, ``fraction``), and those a
    written track matches that no candidate did (``n_gained``: the selection's own tracks, e.g. the rebuilt ones),
    for the particles above ``pt_min`` and, under ``pt_gt_0p5``, above 0.5 GeV.  Both results must hold the same
    particles in the same order (the same events' truth)."""
    if not np.array_equal(candidates.particle_id, written.particle_id):
        raise ValueError("kept_by_selection: the candidates' and the written tracks' particles differ")

    def counts(pt_min: float) -> dict[str, Any]:
        chosen = _chosen(written, options, pt_min)
        found_before = chosen & candidates.particle_matched
        n_before, n_kept = int(found_before.sum()), int((found_before & written.particle_matched).sum())
        n_gained = int((chosen & written.particle_matched & ~candidates.particle_matched).sum())
        fraction = n_kept / n_before if n_before else None
        return {"n_matched_candidates": n_before, "n_kept": n_kept, "n_gained": n_gained, "fraction": fraction}

    pt_min = options.performance.pt_min
    return {"pt_min": pt_min, **counts(pt_min), "pt_gt_0p5": counts(LOW_PT_GEV)}


def _fit_quality(results: list[EventResult]) -> dict[str, Any]:
    """Pulls, p-values and resolutions of fitted tracks (fit status OK) matched to a particle: over all matched
    tracks, and over the pure ones (every hit from the matched particle), which isolate the fitter from the
    finder's wrong hits. Pulls and p-values take the tracks with ndf ≥ :data:`MIN_PULL_NDF` (as the truth-track
    validation does: a 3-hit fragment, ndf ≤ 1, is all but determined by its hits, and its linearised errors do
    not hold over the long way to the perigee). Resolutions vs pT are of the pure tracks."""
    fitted = [r for r in results if r.fitted and "fit_true_params" in r.truth]
    if not fitted:
        return {}
    params = np.concatenate([np.column_stack([r.fitted[n] for n in PARAMETER_NAMES]) for r in fitted])
    true = np.concatenate([r.truth["fit_true_params"] for r in fitted])
    errors = np.sqrt(np.concatenate([np.column_stack([r.fitted[f"cov_{k}{k}"] for k in range(5)]) for r in fitted]))
    status = np.concatenate([r.fitted["status"] for r in fitted])
    pvalue = np.concatenate([r.fitted["pvalue"] for r in fitted])
    pure = np.concatenate([r.truth["fit_pure"] for r in fitted])
    redundant = np.concatenate([r.fitted["ndf"] for r in fitted]) >= MIN_PULL_NDF
    matched = (status == 0) & np.isfinite(true).all(axis=1)
    residual = params - np.where(matched[:, None], true, params)
    residual[:, 2] = np.angle(np.exp(1j * residual[:, 2]))
    with np.errstate(divide="ignore", invalid="ignore"):  # failed fits carry zeros; they are masked below
        pulls = residual / errors
        true_pt = transverse_momentum(true)
        qopt_residual = params[:, 4] / np.sin(params[:, 3]) - true[:, 4] / np.sin(true[:, 3])
    clean = matched & pure
    pulled, pulled_clean = matched & redundant, clean & redundant
    summary = {
        "n_fitted": len(status),
        "n_ok": int((status == 0).sum()),
        "n_matched_ok": int(matched.sum()),
        "n_pure_matched_ok": int(clean.sum()),
        "pull_min_ndf": MIN_PULL_NDF,
        "n_pulls": int(pulled.sum()),
        "n_pulls_pure": int(pulled_clean.sum()),
        "pulls": _pull_stats(pulls[pulled]),
        "pulls_pure": _pull_stats(pulls[pulled_clean]),
        "pvalue_mean": float(np.mean(pvalue[pulled])) if pulled.any() else None,
        "pvalue_mean_pure": float(np.mean(pvalue[pulled_clean])) if pulled_clean.any() else None,
        "resolution": _resolution(residual[matched], qopt_residual[matched]),
        "resolution_pure": _resolution(residual[clean], qopt_residual[clean]),
    }
    columns = (("d0 [mm]", residual[:, 0]), ("z0 [mm]", residual[:, 1]), ("q/pT [1/GeV]", qopt_residual))
    resolution_vs_pt = {
        name: [_robust_std(values[clean & (true_pt >= lo) & (true_pt < hi)])
               for lo, hi in itertools.pairwise(RESOLUTION_PT_BINS)]
        for name, values in columns
    }  # fmt: skip
    summary["resolution_vs_pt"] = {"pt_bins": RESOLUTION_PT_BINS.tolist(), **resolution_vs_pt}
    return {"summary": summary, "pulls": pulls[pulled_clean], "pvalues": pvalue[pulled_clean]}


def _resolution(residual: np.ndarray, qopt_residual: np.ndarray) -> dict[str, float]:
    """Central-68 % widths of the d0, z0 and q/pT residuals."""
    return {"d0_mm": _robust_std(residual[:, 0]), "z0_mm": _robust_std(residual[:, 1]),
            "qopt_per_gev": _robust_std(qopt_residual)}  # fmt: skip


def _pull_stats(pulls: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each parameter's pulls; empty for fewer than two tracks, whose pulls have no
    spread to measure (one track's standard deviation would read as a width of 0)."""
    if len(pulls) < 2:
        return {}
    return {name: {"mean": float(np.mean(pulls[:, k])), "std": float(np.std(pulls[:, k]))}
            for k, name in enumerate(PARAMETER_NAMES)}  # fmt: skip


def _robust_std(values: np.ndarray) -> float:
    """Standard deviation from the central 68 % (half the 16-84 % quantile range); NaN for fewer than two values."""
    if len(values) < 2:
        return math.nan
    low, high = np.percentile(values, [15.865, 84.135])
    return float(0.5 * (high - low))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def print_summary(performance: dict[str, Any], summary: JobSummary, console: Console | None = None) -> None:
    """The end-of-job table: events, efficiency, fake and duplicate rates, resolutions, ms/event per stage."""
    console = console or Console()
    table = Table(title="trkx run", show_header=False)
    table.add_row("events processed / resumed / failed",
                  f"{len(summary.processed)} / {len(summary.skipped)} / {len(summary.failed)}")  # fmt: skip
    tracking = performance.get("tracking")
    if tracking:
        table.add_row(
            f"track efficiency (pT > {tracking['selection']['pt_min']:g} GeV)", _percent(tracking["efficiency"])
        )
        table.add_row("track efficiency (pT > 0.5 GeV)", _percent(tracking["efficiency_pt_gt_0p5"]))
        table.add_row("fake rate", _percent(tracking["fake_rate"]))
        table.add_row("duplicate rate", _percent(tracking["duplicate_rate"]))
        above = tracking.get("fitted_above_pt_min")
        if above:
            table.add_row(f"fake / duplicate rate (fitted pT > {above['pt_min']:g} GeV)",
                          f"{_percent(above['fake_rate'])} / {_percent(above['duplicate_rate'])}")  # fmt: skip
    candidates = performance.get("tracking_candidates")
    if candidates:
        table.add_row("before the fit selection: efficiency / fake rate",
                      f"{_percent(candidates['efficiency'])} / {_percent(candidates['fake_rate'])}")  # fmt: skip
    kept = (tracking or {}).get("kept_by_selection")
    if kept:
        table.add_row(f"kept by the fit selection (pT > {kept['pt_min']:g} / 0.5 GeV)",
                      f"{_percent(kept['fraction'])} / {_percent(kept['pt_gt_0p5']['fraction'])}")  # fmt: skip
    fitting = performance.get("fitting")
    if fitting:
        resolution = fitting["resolution_pure"]
        table.add_row(
            "resolution d0 / z0 (pure tracks)",
            f"{_measure(resolution['d0_mm'] * 1e3, '.1f', 'µm')} / {_measure(resolution['z0_mm'] * 1e3, '.1f', 'µm')}",
        )
        table.add_row("resolution q/pT (pure tracks)", _measure(resolution["qopt_per_gev"], ".2e", "/GeV"))
        pure = fitting["pulls_pure"]
        if pure:
            widths = " / ".join(f"{pure[name]['std']:.2f}" for name in PARAMETER_NAMES)
            table.add_row("pull widths d0/z0/phi/theta/qop (pure tracks)", widths)
            table.add_row("fit p-value mean (pure tracks)", f"{fitting['pvalue_mean_pure']:.3f}")
    for stage, stats in performance["timing_ms"].items():
        table.add_row(f"{stage} [ms/event]", f"{stats['mean']:.1f} ± {stats['std']:.1f}")
    console.print(table)
    for failure in summary.failed:
        console.print(f"[yellow]event {failure.event_id} failed ({failure.stage}): {failure.error}[/yellow]")


def _measure(value: float, spec: str, unit: str) -> str:
    """``value`` in ``spec`` with its unit, or n/a for a resolution too few tracks give (NaN)."""
    return "n/a" if math.isnan(value) else f"{value:{spec}} {unit}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f} %"
