"""Physics validation of the track finder on held-out simulated events (seeds ≥ 1 000 000, never used in
training): track efficiency (pT > 1 and > 0.5 GeV), fake and duplicate rates (the project's double-majority
matching), edge efficiency/purity after each stage, the pT > 1 GeV efficiency of the particles from the beam line
and of the secondaries (produced 1 mm or more from the z axis) apart and of each kind of particle the simulation
makes (``by_kind_pt>1``: primaries, hadrons out of nuclear interactions, conversion electrons, decay products), at
several pile-ups; the candidates as built and, after the Kalman fit, the tracks the default track selection keeps
(``--no-fit`` skips the fit), with the fake and duplicate rates of the kept tracks whose fitted pT is above 1 GeV
apart, and why the particles above 1 GeV that no kept track finds are lost (``lost_pt>1`` in the JSON: secondaries,
dropped by the fit selection, edges lost before the building, the building; ``lost_secondaries_pt>1``: the
secondaries among them by the other three).

    .venv/bin/python benchmarks/physics_validation.py [--model-dir DIR] [--events 3] [--pileups 0 20 200]
        [--geometry cylinders|modules] [--field uniform|solenoid|map [--field-map FILE]] [--filter-cut C]
        [--gnn-cut C] [--weak-gnn-cut C]
        [--max-weak-triplet-cost C] [--overlap-mm MM]
        [--max-z0-mm MM] [--link-overlaps] [--energy-loss] [--score-weight W] [--max-crossing-cost C]
        [--shared-hits best_fit] [--revive-chains] [--complete-by-overlaps] [--max-trimmed-hits N]
        [--min-trimmed-hits N] [--max-outlier-refits N] [--min-pvalue P] [--query-k K] [--merge-split]

``--geometry modules`` simulates the held-out events on the TrackML module layout (overlapping modules, TrackML
noise, secondaries) and fits on the module planes; ``--field solenoid`` simulates and fits in the solenoid
(docs/fitting.md, "Magnetic field"), ``--field map --field-map FILE`` in a field map; ``--energy-loss`` simulates
and fits with the mean energy loss (as ``configs/trackml.toml`` does); ``--model-dir`` evaluates models other than
the shipped ones.

Writes benchmarks/results/physics_validation.json and .md, and plots into docs/plots/.
"""

from __future__ import annotations

import tracking_algs  # noqa: F401  (first: pins numpy's kernels before numpy loads, as the trkx command does)

# isort: split

import argparse
import json
import typing
from pathlib import Path

import attrs
import matplotlib
import mplhep
import numpy as np
from bench_common import check_results_directory, run_script
from matplotlib.figure import Figure

from tracking_algs.commands.arg_types import (
    existing_directory,
    existing_file,
    non_negative_float,
    non_negative_int,
    output_directory,
    positive_int,
    unit_interval,
)
from tracking_algs.errors import TrackingError
from tracking_algs.finding.config import (
    OVERLAP_MM,
    BuildingConfig,
    FilterConfig,
    FindingConfig,
    GNNConfig,
    GraphConfig,
    PairCuts,
)
from tracking_algs.finding.training import VALIDATION_SEED_MIN
from tracking_algs.finding.validation import evaluate, without_matches
from tracking_algs.fitting import KalmanConfig, KalmanFitter
from tracking_algs.fitting.selection import TrackSelection
from tracking_algs.geometry import trackml_detector
from tracking_algs.job_options import local_finder
from tracking_algs.magnetic_field import FieldConfig
from tracking_algs.modules import trackml_modules
from tracking_algs.performance import plot_performance
from tracking_algs.performance.matching import MatchResult
from tracking_algs.simulation import SimulationConfig, simulate_event

ROOT = Path(__file__).resolve().parent.parent
SEED = VALIDATION_SEED_MIN + 2024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=existing_directory("model directory"),
                        help="model directory (default: the shipped models)")  # fmt: skip
    parser.add_argument("--events", type=positive_int, default=3, help="events per pile-up")
    parser.add_argument("--seed", type=non_negative_int, default=SEED,
                        help=f"held-out seed (≥ {VALIDATION_SEED_MIN}; working points are chosen on the training "
                             "config's validation seed, figures reported on the default)")  # fmt: skip
    parser.add_argument("--pileups", type=non_negative_float, nargs="+", default=[0.0, 20.0, 200.0])
    parser.add_argument("--building", choices=typing.get_args(typing.get_type_hints(BuildingConfig)["method"]),
                        default=BuildingConfig().method)  # fmt: skip
    parser.add_argument("--gnn-cut", type=unit_interval, default=GNNConfig().cut)
    parser.add_argument("--weak-gnn-cut", type=unit_interval, default=GNNConfig().weak_cut,
                        help="gnn.weak_cut (0: no weak edges)")  # fmt: skip
    parser.add_argument("--max-weak-triplet-cost", type=float, default=BuildingConfig().max_weak_triplet_cost,
                        help="building.max_weak_triplet_cost")  # fmt: skip
    parser.add_argument("--filter-cut", type=unit_interval, default=0.0, help="filter cut (0: the model card's)")
    parser.add_argument("--overlap-mm", type=float, default=OVERLAP_MM,
                        help="max_overlap_mm of the pair cuts and the building (0: no overlap rules)")  # fmt: skip
    parser.add_argument("--max-z0-mm", type=float, default=PairCuts().max_z0_mm,
                        help="max_z0_mm of the pair cuts (0: no cut on z0)")  # fmt: skip
    parser.add_argument("--min-pt-gev", type=float, default=PairCuts().min_pt_gev,
                        help="min_pt_gev of the pair cuts (0: no cut on the bend through the beam line)")  # fmt: skip
    parser.add_argument("--link-overlaps", action="store_true", help="building.link_overlaps on")
    parser.add_argument("--max-crossing-cost", type=float, default=BuildingConfig().max_crossing_cost,
                        help="building.max_crossing_cost (0: a short chain gives up its hits)")  # fmt: skip
    parser.add_argument("--shared-hits", choices=typing.get_args(typing.get_type_hints(BuildingConfig)["shared_hits"]),
                        default=BuildingConfig().shared_hits, help="building.shared_hits")  # fmt: skip
    parser.add_argument("--revive-chains", action="store_true", help="building.revive_chains on")
    parser.add_argument("--complete-by-overlaps", action="store_true", help="building.complete_by_overlaps on")
    parser.add_argument("--score-weight", type=float, default=BuildingConfig().score_weight,
                        help="building.score_weight (0: links chosen by their geometry alone)")  # fmt: skip
    parser.add_argument("--geometry", choices=typing.get_args(typing.get_type_hints(SimulationConfig)["geometry"]),
                        default=SimulationConfig().geometry, help="simulation of the held-out events")  # fmt: skip
    parser.add_argument(
        "--field",
        choices=("uniform", "solenoid", "map"),
        default="uniform",
        help="the field the held-out events are simulated and fitted in (map: --field-map)",
    )
    parser.add_argument(
        "--field-map",
        type=existing_file("field map"),
        help='with --field map: a field map ([detector.field] kind = "map")',
    )
    parser.add_argument("--energy-loss", action="store_true", help="simulate and fit with the mean energy loss")
    parser.add_argument(
        "--min-hits", type=positive_int, default=BuildingConfig().min_hits, help="shortest candidate kept"
    )
    parser.add_argument("--max-trimmed-hits", type=non_negative_int, default=KalmanConfig().max_trimmed_hits,
                        help="fitting.kalman.max_trimmed_hits: hits a failed fit gives up at either end")  # fmt: skip
    parser.add_argument("--min-trimmed-hits", type=positive_int, default=KalmanConfig().min_trimmed_hits,
                        help="fitting.kalman.min_trimmed_hits: fewest hits a trimmed variant keeps")  # fmt: skip
    parser.add_argument("--max-outlier-refits", type=non_negative_int, default=KalmanConfig().max_outlier_refits,
                        help="fitting.kalman.max_outlier_refits: outliers a fit removes one by one")  # fmt: skip
    parser.add_argument("--merge-split", action="store_true",
                        help="fitting.selection.merge_split on: split pieces refitted as one track")  # fmt: skip
    parser.add_argument("--rescue-outliers", action="store_true",
                        help="fitting.selection.rescue_outliers on: rejected hits fitted as a track")  # fmt: skip
    parser.add_argument("--extend-tracks", action="store_true",
                        help="fitting.selection.extend_tracks on: free hits along a track join it")  # fmt: skip
    parser.add_argument("--follow-tracks", action="store_true",
                        help="fitting.selection.follow_tracks on: tracks followed beyond their ends")  # fmt: skip
    parser.add_argument("--follow-chi2", type=float, default=TrackSelection().follow_chi2,
                        help="fitting.selection.follow_chi2: the largest χ² of a hit taken when following")  # fmt: skip
    parser.add_argument("--join-pieces", action="store_true",
                        help="fitting.selection.join_pieces on: two pieces of one track joined")  # fmt: skip
    parser.add_argument("--extension-reach-mm", type=float, default=TrackSelection().extension_reach_mm,
                        help="fitting.selection.extension_reach_mm: path searched beyond a track's ends")  # fmt: skip
    parser.add_argument("--extension-circle-mm", type=float, default=TrackSelection().extension_circle_mm,
                        help="fitting.selection.extension_circle_mm: a free hit's distance to the circle")  # fmt: skip
    parser.add_argument("--extension-line-mm", type=float, default=TrackSelection().extension_line_mm,
                        help="fitting.selection.extension_line_mm: a free hit's distance to the line in z")  # fmt: skip
    parser.add_argument("--extension-rounds", type=positive_int, default=TrackSelection().extension_rounds,
                        help="fitting.selection.extension_rounds")  # fmt: skip
    parser.add_argument("--query-k", type=positive_int, default=GraphConfig().query_k,
                        help="finding.graph.query_k: nearest embedding neighbours each hit looks at")  # fmt: skip
    parser.add_argument("--k-max", type=positive_int, default=GraphConfig().k_max,
                        help="finding.graph.k_max: of those, the most that pass the pair cuts a hit adds")  # fmt: skip
    parser.add_argument("--radius", type=float, default=GraphConfig().radius,
                        help="finding.graph.radius: the graph's embedding radius (0: the model card's)")  # fmt: skip
    parser.add_argument("--min-pvalue", type=unit_interval, default=TrackSelection().min_pvalue,
                        help="fitting.selection.min_pvalue: the smallest fit p-value a written track has")  # fmt: skip
    parser.add_argument("--slow-pt-gev", type=float, default=TrackSelection().slow_pt_gev,
                        help="fitting.selection.slow_pt_gev: below it a track needs --slow-min-hits hits")  # fmt: skip
    parser.add_argument("--slow-min-hits", type=positive_int, default=TrackSelection().slow_min_hits,
                        help="fitting.selection.slow_min_hits: fewest hits of a track below --slow-pt-gev")  # fmt: skip
    parser.add_argument("--rebuild-free-hits", action="store_true",
                        help="fitting.selection.rebuild_free_hits on: tracks built over the free hits")  # fmt: skip
    parser.add_argument("--rebuild-min-score", type=unit_interval, default=TrackSelection().rebuild_min_score,
                        help="fitting.selection.rebuild_min_score: least GNN score of an edge rebuilt")  # fmt: skip
    parser.add_argument("--output", default="physics_validation", help="name of the results in benchmarks/results")
    parser.add_argument("--no-plots", action="store_true", help="leave docs/plots as they are")
    parser.add_argument("--plot-dir", type=output_directory, default=ROOT / "docs/plots",
                        help="where the plots of the largest pile-up go (default docs/plots)")  # fmt: skip
    parser.add_argument("--no-fit", action="store_true", help="candidates only, no fit and no track selection")
    args = parser.parse_args(argv)
    check_results_directory(parser)
    if Path(args.output).name != args.output or args.output in ("", ".", ".."):
        parser.error(f"--output {args.output!r}: expected a plain name for the results in benchmarks/results")
    if args.seed < VALIDATION_SEED_MIN:
        parser.error(f"--seed {args.seed} is a training seed; held-out seeds are ≥ {VALIDATION_SEED_MIN}")
    try:  # every option checked by the configurations' own validators before any work
        config, fit_config, selection = _configs(args)
    except ValueError as error:
        parser.error(str(error))
    results, rows = {}, []
    modules = trackml_modules() if args.geometry == "modules" else None
    if (args.field == "map") != (args.field_map is not None):
        parser.error("--field map takes its field from --field-map FILE, and --field-map goes with --field map")
    try:
        field = FieldConfig(kind=args.field, map_file=str(args.field_map or "")).build(trackml_detector())
    except TrackingError as error:
        parser.error(str(error))
    fitter = None if args.no_fit else KalmanFitter(trackml_detector(), fit_config, modules=modules, field=field)
    with local_finder(config, fitter) as finder:
        for pileup in args.pileups:
            simulation = SimulationConfig(geometry=args.geometry, pileup=pileup, energy_loss=args.energy_loss)
            events = (simulate_event(simulation, args.seed, i, field=field) for i in range(args.events))
            summary = evaluate(finder, events, track_selection=selection)
            results[f"pileup_{pileup:g}"] = without_matches(summary)
            if "selected_matches" in summary:
                results[f"pileup_{pileup:g}"]["fragments"] = fragment_quartiles(summary["selected_matches"][1.0])
            rows.append(_row(pileup, summary))
            print(rows[-1], flush=True)
            if pileup == max(args.pileups) and not args.no_plots:
                _plots(summary, pileup, args.plot_dir)
    output = {"seed": args.seed, "events_per_pileup": args.events, "geometry": args.geometry, "field": args.field,
              "field_map": None if args.field_map is None else str(args.field_map),
              "energy_loss": args.energy_loss,
              "finding": attrs.asdict(config), "results": results}  # fmt: skip
    (ROOT / f"benchmarks/results/{args.output}.json").write_text(json.dumps(output, indent=2))
    header = ("| pile-up | hits/event | eff pT>1 | eff pT>0.5 | fake | duplicate | fit-selected: eff pT>1 | "
              "eff pT>0.5 | fake | duplicate | edge eff all / pT>1 / purity: graph | filter | GNN | "
              "fit-selected, fitted pT>1: fake / duplicate | fit-selected fakes that are fragments | "
              "eff pT>1 from the beam line / of secondaries |\n"
              f"|{'---|' * 16}\n")  # fmt: skip
    (ROOT / f"benchmarks/results/{args.output}.md").write_text(header + "\n".join(rows) + "\n")
    print(header + "\n".join(rows))
    return 0


def fragment_quartiles(match: MatchResult) -> dict:
    """Quartiles of the hits, of the majority particle's hits and of |η| of the fragments among ``match``'s
    tracks (:meth:`~tracking_algs.performance.matching.MatchResult.fragments`)."""
    fragment = match.fragments()
    columns = {"track_hits": match.track_nhits, "particle_hits": match.track_particle_nhits,
               "abs_eta": np.abs(match.track_eta)}  # fmt: skip
    return {"count": int(fragment.sum())} | {
        name: np.percentile(values[fragment], [25, 50, 75]).round(2).tolist() if fragment.any() else None
        for name, values in columns.items()
    }


def _row(pileup: float, summary: dict) -> str:
    edges = summary["edges"]
    stage = " | ".join(
        f"{edges[s]['efficiency']:.3f} / {edges[s]['efficiency_pt>1']:.3f} / {edges[s]['purity']:.3f}"
        for s in ("graph", "filter", "gnn")
    )
    rates = [_rates(summary[key]) if key in summary else "– | – | – | –" for key in ("tracks", "selected")]
    written = summary.get("selected", {}).get("pt>1", {})
    fragments = f"{written['n_fragment']} / {written['n_fake']}" if written else "–"
    origin = _origin(summary["by_origin_pt>1"])
    above = summary.get("selected", {}).get("fitted_pt>1")
    fast = f"{above['fake_rate']:.4f} / {above['duplicate_rate']:.4f}" if above and above["n_tracks"] else "–"
    return (f"| {pileup:g} | {summary['mean_spacepoints']:.0f} | {rates[0]} | {rates[1]} | {stage} | {fast} | "
            f"{fragments} | {origin} |")  # fmt: skip


def _origin(by_origin: dict) -> str:
    """Efficiency of the particles from the beam line and of the secondaries (of how many), candidates and, when
    fitted, → written tracks."""

    def groups(split: dict) -> str:
        return " / ".join(
            f"{part['efficiency']:.4f} ({part['n_selected']})" if part["efficiency"] is not None else "–"
            for part in split.values()
        )

    return " → ".join(groups(by_origin[key]) for key in ("tracks", "selected") if key in by_origin)


def _rates(tracks: dict) -> str:
    one, half = tracks["pt>1"], tracks["pt>0.5"]
    return f"{one['efficiency']:.4f} | {half['efficiency']:.4f} | {one['fake_rate']:.4f} | {one['duplicate_rate']:.4f}"


def _plots(summary: dict, pileup: float, plots: Path) -> None:
    """Efficiency and fake rate against pT and η of the candidates (``pt1``, ``pt0.5``) and, with the fit, of the
    written tracks (``written_pt1``, ``written_pt0.5``), and the edge metrics per stage, in ``plots``."""
    label = f"pile-up {pileup:g}"
    paths = []
    for prefix, key, what in (("", "matches", "candidates"), ("written_", "selected_matches", "written tracks")):
        for pt, name in ((0.5, "pt0.5"), (1.0, "pt1")):
            if key in summary:
                paths += plot_performance(summary[key][pt], plots / f"{prefix}{name}",
                                          label=f"{label}, {what}, $p_T$ > {pt:g} GeV")  # fmt: skip
    with matplotlib.style.context(mplhep.style.ROOT):
        figure = Figure(figsize=(8, 6), layout="constrained")
        axes = figure.add_subplot()
        stages = list(summary["edges"])
        x = np.arange(len(stages))
        for offset, key in ((-0.27, "efficiency"), (0.0, "efficiency_pt>1"), (0.27, "purity")):
            axes.bar(x + offset, [summary["edges"][s][key] for s in stages], width=0.27, label=key)
        axes.set_xticks(x, stages)
        axes.set_ylim(0, 1.05)
        axes.set_ylabel("edge efficiency / purity")
        axes.legend(title=label)
        figure.savefig(plots / "edge_metrics.png", dpi=100)
    print("plots:", *[str(p) for p in [*paths, plots / "edge_metrics.png"]])


def _configs(args: argparse.Namespace) -> tuple[FindingConfig, KalmanConfig, TrackSelection]:
    """The finding, fit and track-selection configurations of the command line (their validators raise
    ``ValueError`` for a value out of range)."""
    building = BuildingConfig(method=args.building, min_hits=args.min_hits, max_overlap_mm=args.overlap_mm,
                              link_overlaps=args.link_overlaps, score_weight=args.score_weight,
                              max_crossing_cost=args.max_crossing_cost, shared_hits=args.shared_hits,
                              revive_chains=args.revive_chains,
                              complete_by_overlaps=args.complete_by_overlaps,
                              max_weak_triplet_cost=args.max_weak_triplet_cost)  # fmt: skip
    cuts = PairCuts(max_overlap_mm=args.overlap_mm, max_z0_mm=args.max_z0_mm, min_pt_gev=args.min_pt_gev)
    graph = GraphConfig(cuts=cuts, k_max=args.k_max, query_k=args.query_k, radius=args.radius)
    config = FindingConfig(model_dir=str(args.model_dir or ""), building=building,
                           gnn=GNNConfig(cut=args.gnn_cut, weak_cut=args.weak_gnn_cut),
                           filter=FilterConfig(cut=args.filter_cut), graph=graph)  # fmt: skip
    fit_config = KalmanConfig(energy_loss=args.energy_loss, max_trimmed_hits=args.max_trimmed_hits,
                              min_trimmed_hits=args.min_trimmed_hits,
                              max_outlier_refits=args.max_outlier_refits)  # fmt: skip
    selection = TrackSelection(
        merge_split=args.merge_split,
        rescue_outliers=args.rescue_outliers,
        follow_tracks=args.follow_tracks,
        follow_chi2=args.follow_chi2,
        extend_tracks=args.extend_tracks,
        join_pieces=args.join_pieces,
        extension_reach_mm=args.extension_reach_mm,
        extension_circle_mm=args.extension_circle_mm,
        extension_line_mm=args.extension_line_mm,
        extension_rounds=args.extension_rounds,
        min_pvalue=args.min_pvalue,
        slow_pt_gev=args.slow_pt_gev,
        slow_min_hits=args.slow_min_hits,
        rebuild_free_hits=args.rebuild_free_hits,
        rebuild_min_score=args.rebuild_min_score,
    )
    return config, fit_config, selection


if __name__ == "__main__":
    run_script(main)
