"""Validation of the Kalman fitter on module planes, on the module simulation and on the real TrackML sample.

Every track is a particle's truth hits (no finding), so what is measured is the fit alone:

- **simulation**: every particle from the beam line of held-out pile-up-200 events on the built-in TrackML
  modules (no noise hits, no inefficiency), fitted on the module planes;
- **simulation in the solenoid**: the same, simulated and fitted in the solenoid field of ``[detector.field]``,
  without and with the mean energy loss (``[simulation] energy_loss``, ``[fitting.kalman] energy_loss``); with
  the energy loss also with one midpoint step per surface in the simulation and in the fitter
  (``step_tolerance_mm = 0``), to show what taking the long steps in pieces changes;
- **real**: every particle from the beam line of ``../shared/trackml/sample`` (the real event, with its truth and
  particles), read and fitted with the real ``detectors.csv``, in the uniform field, in the solenoid, and in the
  solenoid with the energy loss; in the uniform field and in the solenoid with the energy loss also without the
  fitter's trimming (``max_trimmed_hits = 0``), side by side.

Reported: pull means and widths of d0, z0, phi, theta, q/p (tracks with ndf ≥ 3), mean p-value and the number of
fits below p = 1e-3, resolution (central-68 % half width) of d0, z0 and q/pT per true-pT bin, split by |η| on the
real event; and, on the real event, the field a particle sees: between consecutive truth hits, the turn of its true
transverse momentum over the transverse chord gives B = pT·dφ/(c·chord), binned in |z|, beside the bending field the
solenoid model gives for the same pairs; the energy a particle loses per hit, from its true momentum at its
first and last hits, and how far its polar angle turns between consecutive hits in the barrels (on overlapping
modules of one layer, and on consecutive layers) against the Highland width of the modules' material, on the real
event and on the simulation with the energy loss. No number here is used to choose
anything: the real event is a judge.  Per |η| range of the solenoid simulation with the energy loss, with the
steps in pieces and with one step per surface: the share of the truth hits the fit rejects as outliers and the
robust width of the q/p pulls.  On the simulation in the uniform field, the pulls of the tracks whose first two hits
are a few mm apart (``close_hits_mm``: two overlapping modules of the first layer crossed) and of those with such a
pair only further out, with the fitter's second pass and without it (``close_hits_mm = 0``).

    .venv/bin/python benchmarks/fit_validation.py [--events 2] [--trackml ../shared/trackml] [--field-map FILE]

With ``--field-map``, a field map of the real detector (``[detector.field] kind = "map"``; none comes with the
TrackML data): the real event is fitted in it as well (with the energy loss, rows "field map"), and its bending
field is set beside the field the real particles see.

Writes benchmarks/results/fit_validation.{json,md} and docs/plots/fitting/{simulation,real}_{pulls,resolution}.png.
"""

from __future__ import annotations

import tracking_algs  # noqa: F401  (first: pins numpy's kernels before numpy loads, as the trkx command does)

# isort: split

import argparse
import itertools
from pathlib import Path

import attrs
import numpy as np
from bench_common import add_real_trackml_argument, check_results_directory, run_script, write_results

from tracking_algs.commands.arg_types import existing_file, positive_int
from tracking_algs.errors import TrackingError
from tracking_algs.event import Event, TrackCandidates
from tracking_algs.finding.training import VALIDATION_SEED_MIN
from tracking_algs.fitting import KalmanConfig, KalmanFitter
from tracking_algs.geometry import HELIX_CONSTANT, trackml_detector
from tracking_algs.io.trackml import read_event
from tracking_algs.job.plots import plot_pulls, plot_resolutions
from tracking_algs.magnetic_field import FieldConfig, MagneticField, SolenoidField
from tracking_algs.modules import ModuleGeometry, read_detectors_csv, trackml_modules
from tracking_algs.performance.scattering import polar_turns
from tracking_algs.performance.truth_perigee import truth_perigee
from tracking_algs.ranges import first_of_runs
from tracking_algs.simulation import SimulationConfig, simulate_event

ROOT = Path(__file__).resolve().parent.parent
PLOTS = ROOT / "docs" / "plots" / "fitting"
SEED = VALIDATION_SEED_MIN + 4242
PT_BINS = np.array([0.1, 0.5, 1.0, 2.0, 5.0, 100.0])
ETA_BINS = ((0.0, 1.0), (1.0, 2.0), (2.0, 4.0))
Z_BINS = ((0.0, 500.0), (500.0, 1000.0), (1000.0, 2000.0), (2000.0, 3000.0))
NAMES = ("d0", "z0", "phi", "theta", "qop")


def fit_truth_tracks(
    event: Event, modules: ModuleGeometry, field: MagneticField | None = None, config: KalmanConfig | None = None
) -> dict[str, np.ndarray]:
    """Fit every particle from the beam line (production vertex within 1 mm of the z axis) from its truth hits
    in ``field`` (None: uniform) with the fitter's ``config``: pulls [T, 5], p-values, residuals, true pT, charge
    and η of the tracks fitted OK with ndf ≥ 3."""
    detector = trackml_detector()
    particles = event.particles.take(np.argsort(event.particles.particle_id))
    primary = particles.particle_id[np.hypot(particles.vx, particles.vy) < 1.0]
    particle_ids, labels = np.unique(event.truth.particle_id, return_inverse=True)
    labels = np.where(np.isin(event.truth.particle_id, primary), labels, -1)
    fitter = KalmanFitter(detector, config, modules=modules, field=field)
    fit = fitter.fit(event.spacepoints, TrackCandidates(labels))
    close_pair = first_close_pair(event, fit.hit_rows, fit.hit_offsets, KalmanConfig().close_hits_mm)
    truth = truth_perigee(particles.take(np.searchsorted(particles.particle_id, particle_ids[fit.track_id])),
                          detector.bfield_t)  # fmt: skip
    kept = fit.ok & (fit.ndf >= 3)
    params, cov, truth = fit.params[kept], fit.cov[kept], truth[kept]
    residual = params - truth
    residual[:, 2] = np.angle(np.exp(1j * residual[:, 2]))
    true_pt = np.abs(np.sin(truth[:, 3]) / truth[:, 4])
    qopt_residual = params[:, 4] / np.sin(params[:, 3]) - np.sign(truth[:, 4]) / true_pt
    return {
        "pulls": residual / np.sqrt(np.diagonal(cov, axis1=1, axis2=2)),
        "pvalue": fit.pvalue[kept],
        "residual": np.column_stack((residual[:, :2], qopt_residual)),
        "pt": true_pt,
        "charge": np.sign(truth[:, 4]),
        "eta": -np.log(np.tan(0.5 * truth[:, 3])),
        "n_hits": fit.n_hits[kept],
        "n_outliers": fit.n_outliers[kept],
        "first_close_pair": close_pair[kept],
        "n_fitted": np.asarray(len(fit)),
        "n_ok": np.asarray(int(fit.ok.sum())),
    }


def first_close_pair(event: Event, hit_rows: np.ndarray, hit_offsets: np.ndarray, limit_mm: float) -> np.ndarray:
    """Per track (its spacepoint rows ``hit_rows[hit_offsets[k]:hit_offsets[k + 1]]``), the place in crossing order
    (distance from the origin) of the first of its first two consecutive hits closer than ``limit_mm`` (two
    overlapping modules of one layer: 0 for the track's first two hits), -1 where none are."""
    spacepoints = event.spacepoints
    track = np.repeat(np.arange(len(hit_offsets) - 1), np.diff(hit_offsets))
    order = np.lexsort((spacepoints.distance[hit_rows], track))
    xyz = np.column_stack((spacepoints.x, spacepoints.y, spacepoints.z))[hit_rows[order]]
    close = (np.linalg.norm(np.diff(xyz, axis=0), axis=1) < limit_mm) & (track[1:] == track[:-1])
    pairs = np.flatnonzero(close)
    pairs = pairs[first_of_runs(track[pairs])]  # each track's first close pair
    first = np.full(len(hit_offsets) - 1, -1)
    first[track[pairs]] = pairs - hit_offsets[track[pairs]]
    return first


def _merge(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([np.atleast_1d(part[key]) for part in parts]) for key in parts[0]}


def _robust_width(values: np.ndarray) -> float | None:
    if len(values) < 10:
        return None
    low, high = np.percentile(values, [15.865, 84.135])
    return float(0.5 * (high - low))


def summarise(tracks: dict[str, np.ndarray], select: np.ndarray | None = None) -> dict:
    """Pull means and widths, mean p-value, the number below p = 1e-3 and track count of the tracks ``select`` (all
    by default)."""
    select = np.ones(len(tracks["pvalue"]), dtype=bool) if select is None else select
    pulls = tracks["pulls"][select]
    return {
        "tracks": int(select.sum()),
        "pull_mean": dict(zip(NAMES, pulls.mean(axis=0).round(3).tolist(), strict=True)),
        "pull_width": dict(zip(NAMES, pulls.std(axis=0).round(3).tolist(), strict=True)),
        "pvalue_mean": round(float(tracks["pvalue"][select].mean()), 3),
        "below_1e-3": int((tracks["pvalue"][select] < 1e-3).sum()),
    }


def resolution_vs_pt(tracks: dict[str, np.ndarray]) -> dict:
    """Resolution of d0 [mm], z0 [mm] and q/pT [1/GeV] per true-pT bin."""
    names = ("d0 [mm]", "z0 [mm]", "q/pT [1/GeV]")
    return {"pt_bins": PT_BINS.tolist()} | {
        name: [_robust_width(tracks["residual"][(tracks["pt"] >= lo) & (tracks["pt"] < hi), column])
               for lo, hi in itertools.pairwise(PT_BINS)]
        for column, name in enumerate(names)
    }  # fmt: skip


def field_seen(event: Event, model: MagneticField, min_pt: float = 1.0, min_chord: float = 50.0) -> list[dict]:
    """Per |z| bin, the median field B = pT·|dφ|/(c·chord) between consecutive truth hits (chord ≥ ``min_chord``
    mm) of particles whose true pT stays above ``min_pt`` GeV, and the median of the bending field of ``model``
    at the pairs' midpoints for their mean true direction."""
    truth = event.truth
    order = np.lexsort((truth.tx**2 + truth.ty**2, truth.particle_id))
    pid, x, y, z = truth.particle_id[order], truth.tx[order], truth.ty[order], truth.tz[order]
    px, py, pz = truth.tpx[order], truth.tpy[order], truth.tpz[order]
    pt = np.hypot(px, py)
    pair = (pid[1:] == pid[:-1]) & (pid[1:] != 0) & (np.minimum(pt[1:], pt[:-1]) > min_pt)
    turn = np.abs(np.angle(np.exp(1j * (np.arctan2(py[1:], px[1:]) - np.arctan2(py[:-1], px[:-1])))))
    chord = np.hypot(x[1:] - x[:-1], y[1:] - y[:-1])
    pair &= chord >= min_chord
    field = 0.5 * (pt[1:] + pt[:-1]) * turn / (HELIX_CONSTANT * np.where(pair, chord, 1.0))
    middle = 0.5 * np.column_stack((x[1:] + x[:-1], y[1:] + y[:-1], z[1:] + z[:-1]))
    heading = 0.5 * np.column_stack((px[1:] + px[:-1], py[1:] + py[:-1], pz[1:] + pz[:-1]))
    heading /= np.maximum(np.linalg.norm(heading, axis=1, keepdims=True), 1e-12)
    modelled = np.abs(model.bending_t(middle, heading))
    rows = []
    for low, high in Z_BINS:
        chosen = pair & (np.abs(middle[:, 2]) >= low) & (np.abs(middle[:, 2]) < high)

        def median(values, chosen=chosen):
            return round(float(np.median(values[chosen])), 2) if chosen.any() else None

        rows.append({"z_mm": [low, high], "pairs": int(chosen.sum()), "median_bz_t": median(field),
                     "model_bending_t": median(modelled)})  # fmt: skip
    return rows


def momentum_bias(tracks: dict[str, np.ndarray]) -> list[dict]:
    """Per true-pT bin, for |η| < 1: mean and its error of q·Δ(q/pT)·pT, the relative excess of the fitted
    curvature (positive: the fitted momentum is low, as when the energy lost is not given back)."""
    rows = []
    for low, high in ((0.5, 1.0), (1.0, 100.0)):
        chosen = (tracks["pt"] > low) & (tracks["pt"] < high) & (np.abs(tracks["eta"]) < 1.0)
        relative = (tracks["residual"][:, 2] * tracks["pt"] * tracks["charge"])[chosen]
        rows.append({"pt_gev": [low, high], "tracks": int(chosen.sum()), "mean": round(float(relative.mean()), 4),
                     "error": round(float(relative.std() / np.sqrt(max(len(relative), 1))), 4)})  # fmt: skip
    return rows


def energy_lost_per_hit(event: Event, min_p: float = 0.5) -> dict:
    """Median and quartiles (MeV) of the energy a particle from the beam line above ``min_p`` GeV with 4 hits or
    more loses per hit: (|p| at its first hit − |p| at its last) / (hits − 1), hits ordered by distance from the
    origin."""
    truth, particles = event.truth, event.particles
    from_beam_line = particles.particle_id[np.hypot(particles.vx, particles.vy) < 1.0]
    p = np.sqrt(truth.tpx**2 + truth.tpy**2 + truth.tpz**2)
    chosen = np.isin(truth.particle_id, from_beam_line) & (p > min_p)
    _, track = np.unique(truth.particle_id[chosen], return_inverse=True)
    order = np.lexsort((truth.tx[chosen] ** 2 + truth.ty[chosen] ** 2 + truth.tz[chosen] ** 2, track))
    track, p = track[order], p[chosen][order]
    first = np.r_[True, track[1:] != track[:-1]]
    last = np.r_[track[1:] != track[:-1], True]
    hits = np.bincount(track)
    per_hit = 1e3 * (p[first] - p[last]) / np.maximum(hits - 1, 1)
    quartiles = np.percentile(per_hit[hits >= 4], [25, 50, 75]).round(3).tolist()
    return {"particles": int((hits >= 4).sum()), "mev_per_hit_quartiles": quartiles}


#: the barrel volumes of the TrackML detector (pixels, short strips, long strips)
BARREL_VOLUMES = (8, 13, 17)


def scattering_seen(event: Event, modules: ModuleGeometry, min_p: float = 1.0, max_p: float = 10.0) -> list[dict]:
    """Per barrel volume, how far the polar angle of the true momentum turns between two consecutive truth hits
    (ordered by distance from the origin) of a particle from the beam line with ``min_p`` < p < ``max_p`` GeV at the
    first, in units of the Highland width of the first hit's module material at its incidence: the RMS over pairs
    of hits on overlapping modules of one layer (``"overlap"``) and over pairs on consecutive layers (``"next
    layer"``, the second hit in the same volume)."""
    particles = event.particles
    turns = polar_turns(event, modules, particles.particle_id[np.hypot(particles.vx, particles.vy) < 1.0])
    volume = event.spacepoints.volume_id
    chosen = (turns.p > min_p) & (turns.p < max_p) & (volume[turns.first] == volume[turns.second])
    relative = turns.turn / turns.highland
    rows = []
    for barrel in BARREL_VOLUMES:
        for label, kind in (("overlap", turns.same_layer), ("next layer", ~turns.same_layer)):
            where = chosen & kind & (volume[turns.first] == barrel)
            rms = float(np.sqrt(np.mean(relative[where] ** 2))) if where.any() else None
            rows.append({"volume": barrel, "pairs": label, "count": int(where.sum()),
                         "rms_over_highland": None if rms is None else round(rms, 3)})  # fmt: skip
    return rows


#: |η| ranges of the comparison of the steps in the solenoid
STEP_ETA_BINS = ((0.0, 1.5), (1.5, 2.0), (2.0, 2.5), (2.5, 3.0))


def steps_by_eta(tracks: dict[str, np.ndarray]) -> list[dict]:
    """Per |η| range of :data:`STEP_ETA_BINS`, the tracks above 0.5 GeV: their number, the share of their hits
    rejected as outliers and the robust width of their q/p pulls."""
    rows = []
    for low, high in STEP_ETA_BINS:
        chosen = (tracks["pt"] > 0.5) & (np.abs(tracks["eta"]) >= low) & (np.abs(tracks["eta"]) < high)
        hits = tracks["n_hits"][chosen].sum() + tracks["n_outliers"][chosen].sum()
        rows.append({"eta": [low, high], "tracks": int(chosen.sum()),
                     "outliers": round(float(tracks["n_outliers"][chosen].sum() / max(hits, 1)), 4),
                     "qop_pull_width": _robust_width(tracks["pulls"][chosen, NAMES.index("qop")])})  # fmt: skip
    return rows


def _table(report: dict) -> str:
    lines = ["| sample | tracks | " + " | ".join(f"{name} mean / width" for name in NAMES) + " | p-value | p < 1e-3 |",
             "|---" * (len(NAMES) + 4) + "|"]  # fmt: skip
    for label, summary in report["summaries"].items():
        cells = [f"{summary['pull_mean'][name]:+.2f} / {summary['pull_width'][name]:.2f}" for name in NAMES]
        lines.append(f"| {label} | {summary['tracks']} | " + " | ".join(cells)
                     + f" | {summary['pvalue_mean']:.2f} | {summary['below_1e-3']} |")  # fmt: skip
    mapped = [None] * len(report["real_field"]) if report["field_map"] is None else report["field_map"]["real_field"]
    lines += ["", "| \\|z\\| (mm) | hit pairs | median B seen (T) | solenoid model (T) |"
              + (" field map (T) |" if report["field_map"] else ""), "|---|---|---|---|"
              + ("---|" if report["field_map"] else "")]  # fmt: skip
    lines += [f"| {row['z_mm'][0]:.0f}–{row['z_mm'][1]:.0f} | {row['pairs']} | {row['median_bz_t']} | "
              f"{row['model_bending_t']} |" + (f" {in_map['model_bending_t']} |" if in_map else "")
              for row, in_map in zip(report["real_field"], mapped, strict=True)]  # fmt: skip
    lines += ["", "| energy lost per hit (MeV), p > 0.5 GeV | particles | median | quartiles |", "|---|---|---|---|"]
    lines += [f"| {label} | {row['particles']} | {row['mev_per_hit_quartiles'][1]} | "
              f"{row['mev_per_hit_quartiles'][0]}–{row['mev_per_hit_quartiles'][2]} |"
              for label, row in report["energy_lost_per_hit"].items()]  # fmt: skip
    lines += ["", "| polar turn between consecutive hits / Highland width of the module material | volume | pairs | "
              "count | RMS |", "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {label} | {row['volume']} | {row['pairs']} | {row['count']} | {row['rms_over_highland']} |"
              for label, rows in report["scattering_seen"].items() for row in rows]  # fmt: skip
    lines += ["", "| real, \\|η\\| < 1: q·Δ(q/pT)·pT | pT (GeV) | tracks | mean ± error |", "|---|---|---|---|"]
    lines += [f"| {label} | {row['pt_gev'][0]:g}–{row['pt_gev'][1]:g} | {row['tracks']} | "
              f"{row['mean']:+.4f} ± {row['error']:.4f} |"
              for label, rows in report["central_momentum_bias"].items() for row in rows]  # fmt: skip
    steps = report["steps_in_the_solenoid"]
    one, pieces = steps["one step per surface"], steps["in pieces"]
    lines += [
        "",
        "| solenoid and energy loss, pT > 0.5 GeV, \\|η\\| | tracks | outliers, one step per surface | "
        "outliers, in pieces | q/p pull width, one step | in pieces |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {row['eta'][0]:g}–{row['eta'][1]:g} | {row['tracks']} | {100 * row['outliers']:.2f} % | "
              f"{100 * cut['outliers']:.2f} % | {row['qop_pull_width']:.2f} | {cut['qop_pull_width']:.2f} |"
              for row, cut in zip(one, pieces, strict=True)]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=positive_int, default=2, help="simulated pile-up-200 events (default 2)")
    add_real_trackml_argument(parser)
    parser.add_argument("--field-map", type=existing_file("field map"),
                        help='a field map of the real detector ([detector.field] kind = "map"): the real rows fitted '
                             "in it too, its bending field beside the field seen")  # fmt: skip
    args = parser.parse_args(argv)
    check_results_directory(parser)
    mapped = None
    if args.field_map is not None:
        try:
            mapped = FieldConfig(kind="map", map_file=str(args.field_map)).build(trackml_detector())
        except TrackingError as error:
            parser.error(str(error))

    config = SimulationConfig(geometry="modules", pileup=200.0, hit_inefficiency=0.0, noise_fraction=0.0)
    modules = trackml_modules()
    solenoid = SolenoidField()
    simulated_events = [simulate_event(config, SEED, event_id) for event_id in range(args.events)]
    simulated = _merge([fit_truth_tracks(event, modules) for event in simulated_events])
    one_pass = _merge([fit_truth_tracks(event, modules, config=KalmanConfig(close_hits_mm=0.0))
                       for event in simulated_events])  # fmt: skip
    in_solenoid = _merge([fit_truth_tracks(simulate_event(config, SEED, event_id, field=solenoid), modules, solenoid)
                          for event_id in range(args.events)])  # fmt: skip
    losing = attrs.evolve(config, energy_loss=True)
    with_loss = KalmanConfig(energy_loss=True)
    losing_events = [simulate_event(losing, SEED, event_id, field=solenoid) for event_id in range(args.events)]
    with_energy_loss = _merge([fit_truth_tracks(event, modules, solenoid, with_loss) for event in losing_events])
    one_step = {"step_tolerance_mm": 0.0}
    in_one_step = _merge([
        fit_truth_tracks(simulate_event(attrs.evolve(losing, **one_step), SEED, event_id, field=solenoid), modules,
                         solenoid, attrs.evolve(with_loss, **one_step))
        for event_id in range(args.events)
    ])  # fmt: skip
    real_modules = read_detectors_csv(args.trackml / "detectors.csv.gz")
    real_event = read_event(args.trackml / "sample", 1, modules=real_modules)
    real_uniform = fit_truth_tracks(real_event, real_modules)
    real = fit_truth_tracks(real_event, real_modules, solenoid)
    real_loss = fit_truth_tracks(real_event, real_modules, solenoid, with_loss)
    untrimmed = KalmanConfig(max_trimmed_hits=0)
    real_uniform_untrimmed = fit_truth_tracks(real_event, real_modules, config=untrimmed)
    real_loss_untrimmed = fit_truth_tracks(real_event, real_modules, solenoid,
                                           attrs.evolve(with_loss, max_trimmed_hits=0))  # fmt: skip

    summaries = {"simulation, all": summarise(simulated)}
    summaries["simulation, |η| < 3"] = summarise(simulated, np.abs(simulated["eta"]) < 3.0)
    summaries["simulation, |η| ≥ 3"] = summarise(simulated, np.abs(simulated["eta"]) >= 3.0)
    summaries["simulation, pT > 1 GeV"] = summarise(simulated, simulated["pt"] > 1.0)
    summaries["simulation in the solenoid, |η| < 3"] = summarise(in_solenoid, np.abs(in_solenoid["eta"]) < 3.0)
    summaries["simulation in the solenoid with energy loss, |η| < 3"] = summarise(
        with_energy_loss, np.abs(with_energy_loss["eta"]) < 3.0
    )
    for label, first_close in (("first two hits", 0), ("later hits only", 1)):
        for tracks, fitted in ((simulated, ""), (one_pass, ", without the second pass")):
            place = np.minimum(tracks["first_close_pair"], 1) == first_close
            summaries[f"simulation, {label} a few mm apart{fitted}"] = summarise(tracks, place)
    summaries["real, uniform field, pT > 1 GeV"] = summarise(real_uniform, real_uniform["pt"] > 1.0)
    summaries["real, solenoid, pT > 1 GeV"] = summarise(real, real["pt"] > 1.0)
    summaries["real, solenoid and energy loss, pT > 1 GeV"] = summarise(real_loss, real_loss["pt"] > 1.0)
    for label, tracks in (("uniform field", real_uniform_untrimmed), ("solenoid and energy loss", real_loss_untrimmed)):
        summaries[f"real, {label}, pT > 1 GeV, without trimming"] = summarise(tracks, tracks["pt"] > 1.0)
    for low, high in ((0.5, 1.0), (1.0, 100.0)):
        for label, tracks in (("solenoid", real), ("solenoid and energy loss", real_loss)):
            chosen = (tracks["pt"] > low) & (tracks["pt"] < high) & (np.abs(tracks["eta"]) < 1.0)
            summaries[f"real, {label}, {low:g} < pT < {high:g} GeV, |η| < 1"] = summarise(tracks, chosen)
    in_fields, in_map = {"solenoid": real_loss}, None
    if mapped is not None:
        in_fields["field map"] = fit_truth_tracks(real_event, real_modules, mapped, with_loss)
        summaries["real, field map and energy loss, pT > 1 GeV"] = summarise(
            in_fields["field map"], in_fields["field map"]["pt"] > 1.0
        )
        in_map = {"file": str(args.field_map), "real_field": field_seen(real_event, mapped)}
    for (label, tracks), (low, high) in itertools.product(in_fields.items(), ETA_BINS):
        chosen = (tracks["pt"] > 0.5) & (np.abs(tracks["eta"]) >= low) & (np.abs(tracks["eta"]) < high)
        summaries[f"real, {label} and energy loss, pT > 0.5 GeV, {low:g} ≤ |η| < {high:g}"] = summarise(tracks, chosen)
    report = {
        "simulation": {"seed": SEED, "events": args.events, "pileup": 200.0},
        "solenoid": attrs.asdict(solenoid),
        "summaries": summaries,
        "resolution_vs_pt": {"simulation": resolution_vs_pt(simulated), "real": resolution_vs_pt(real_loss)},
        "real_field": field_seen(real_event, solenoid),
        "field_map": in_map,
        "scattering_seen": {
            "real": scattering_seen(real_event, real_modules),
            "simulation with energy loss": scattering_seen(losing_events[0], modules),
        },
        "energy_lost_per_hit": {
            "real": energy_lost_per_hit(real_event),
            "simulation with energy loss": energy_lost_per_hit(losing_events[0]),
        },
        "steps_in_the_solenoid": {
            "one step per surface": steps_by_eta(in_one_step),
            "in pieces": steps_by_eta(with_energy_loss),
        },
        "central_momentum_bias": {
            label: momentum_bias(tracks)
            for label, tracks in (("real, solenoid", real), ("real, solenoid and energy loss", real_loss))
        },
    }
    for label, tracks, where in (("simulation", simulated, ""),
                                 ("real", real_loss, " in the solenoid, with energy loss")):  # fmt: skip
        plot_pulls(tracks["pulls"], tracks["pvalue"], PLOTS / f"{label}_pulls.png",
                   title=f"{label}: truth tracks fitted on module planes{where}")  # fmt: skip
        plot_resolutions(report["resolution_vs_pt"][label], PLOTS / f"{label}_resolution.png")
    table = _table(report)
    write_results("fit_validation", report, table)
    print(table)
    return 0


if __name__ == "__main__":
    run_script(main)
