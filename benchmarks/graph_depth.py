"""Graph depth: how many neighbours each hit must add for the graph to hold the fast particles' truth edges, at
pile-up 20 and 200 (validation seed 1 000 001, shipped models): why the finding cost grows faster than the hits.

For caps K on the neighbours a hit adds (nearest first in the embedding, after the pair cuts; the finder's
``k_max`` is 64 and its query looks ``query_k`` = 80 deep), the graph's edges per hit and the share of the
pT > 1 GeV truth edges it holds; and, of each hit's query neighbours inside the radius, the share each pair cut
passes.

    .venv/bin/python benchmarks/graph_depth.py [--events 2]

Writes benchmarks/results/graph_depth.json and .md.
"""

from __future__ import annotations

import tracking_algs  # noqa: F401  (first: pins numpy's kernels before numpy loads, as the trkx command does)

# isort: split

import argparse

import attrs
import numpy as np
from bench_common import check_results_directory, run_script, write_results
from scipy.spatial import cKDTree

from tracking_algs.commands.arg_types import positive_int
from tracking_algs.finding.features import spacepoint_features
from tracking_algs.finding.graph import candidate_edges
from tracking_algs.finding.pairs import PairGeometry
from tracking_algs.job_options import local_finder
from tracking_algs.performance import edge_counts, truth_graph
from tracking_algs.performance.lookup import hit_particle_pt
from tracking_algs.simulation import SimulationConfig, simulate_event

SEED = 1_000_001
PILEUPS = (20.0, 200.0)
CAPS = (4, 8, 12, 16, 24, 32, 64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=positive_int, default=2, help="events per pile-up")
    args = parser.parse_args(argv)
    check_results_directory(parser)
    report: dict[str, dict] = {}
    with local_finder() as finder:
        graph, radius = finder.config.graph, finder.graph.radius
        cut_sets = {
            "pT": attrs.evolve(graph.cuts, different_layers=False, max_z0_mm=0.0),
            "z0": attrs.evolve(graph.cuts, different_layers=False, min_pt_gev=0.0),
            "layer": attrs.evolve(graph.cuts, min_pt_gev=0.0, max_z0_mm=0.0),
            "all": graph.cuts,
        }
        for pileup in PILEUPS:
            kept = {cap: np.zeros(3) for cap in CAPS}  # fast truth edges found, fast truth edges, edges
            passed = {name: np.zeros(2) for name in cut_sets}  # pairs passing, pairs inside the radius
            hits = 0
            for index in range(args.events):
                event = simulate_event(SimulationConfig(pileup=pileup), SEED, index)
                spacepoints = event.spacepoints
                features = spacepoint_features(spacepoints)
                embedding = np.asarray(finder.graph.inference.infer(features=features).embedding)
                truth = truth_graph(event)
                fast = truth[:, hit_particle_pt(event)[truth[0]] > 1.0]
                hits += len(spacepoints)
                for cap in CAPS:
                    edges = candidate_edges(embedding, spacepoints, radius, attrs.evolve(graph, k_max=cap))
                    kept[cap] += edge_counts(edges, fast)
                query, neighbour = _inside_radius(embedding, radius, graph.query_k)
                for name, cuts in cut_sets.items():
                    mask = PairGeometry(spacepoints, cuts).compatible(query, neighbour)
                    passed[name] += (np.count_nonzero(mask), len(mask))
            report[f"pileup_{pileup:g}"] = {
                "hits_per_event": hits / args.events,
                "query_neighbours_inside_radius_per_hit": float(passed["all"][1] / hits),
                "pass_share": {name: float(p / n) for name, (p, n) in passed.items()},
                "caps": {str(cap): _cap_figures(counts, hits) for cap, counts in kept.items()},
            }
    table = _table(report, args.events)
    write_results("graph_depth", {"seed": SEED, "events_per_pileup": args.events, "pileups": report}, table)
    print(table)
    return 0


def _cap_figures(counts: np.ndarray, hits: int) -> dict[str, float]:
    """Edges per hit and fast truth-edge efficiency from (fast truth edges found, fast truth edges, edges)."""
    return {"edges_per_hit": float(counts[2] / hits), "fast_truth_edge_efficiency": float(counts[0] / counts[1])}


def _inside_radius(points: np.ndarray, radius: float, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """(query, neighbour) of each point's nearest ``depth`` others inside ``radius`` (exact KD-tree search)."""
    n = len(points)
    _, index = cKDTree(points).query(points, k=depth + 1, distance_upper_bound=radius, workers=-1)
    query = np.repeat(np.arange(n), index.shape[1])
    neighbour = index.ravel()
    found = (neighbour < n) & (neighbour != query)
    return query[found], neighbour[found]


def _table(report: dict[str, dict], events: int) -> str:
    pileups = list(report)
    header = "| neighbours added per hit (K) | " + " | ".join(
        f"pile-up {p.split('_')[1]}: edges per hit | fast truth edges kept" for p in pileups
    )
    lines = [header + " |", "|---|" + "---|---|" * len(pileups)]
    for cap in CAPS:
        figures = [report[p]["caps"][str(cap)] for p in pileups]
        cells = [f"{f['edges_per_hit']:.2f} | {f['fast_truth_edge_efficiency']:.4f}" for f in figures]
        lines.append(f"| {cap} | " + " | ".join(cells) + " |")
    shares = "; ".join(
        f"pile-up {p.split('_')[1]} ({report[p]['hits_per_event']:.0f} hits): "
        f"{report[p]['query_neighbours_inside_radius_per_hit']:.1f} query neighbours inside the radius per hit, "
        + ", ".join(f"{name} {share:.0%}" for name, share in report[p]["pass_share"].items())
        for p in pileups
    )
    return (
        "\n".join(lines)
        + f"\n\nValidation seed {SEED}, {events} events per pile-up, shipped models, the finder's graph settings but K "
        f"(it adds K = 64). Share of the query neighbours inside the radius (exact search) that each pair cut passes — "
        f"{shares}.\n"
    )


if __name__ == "__main__":
    run_script(main)
