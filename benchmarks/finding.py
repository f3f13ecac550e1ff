"""Finding benchmark: ms/event per stage for events of about 1k, 10k, 30k and 100k spacepoints (local
ONNX Runtime, shipped models), the cost exponent of the total, KD-tree vs FAISS flat graph building side by
side on the same embeddings, and the end-to-end time of a pile-up-200 event.

    .venv/bin/python benchmarks/finding.py [--repeat 2] [--no-faiss-100k]

Writes benchmarks/results/finding.json and finding.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import attrs
import numpy as np

from tracking_algs.finding.features import spacepoint_features
from tracking_algs.finding.finder import TrackFinder
from tracking_algs.finding.graph import candidate_edges
from tracking_algs.simulation import SimulationConfig, simulate_event

ROOT = Path(__file__).resolve().parent.parent
SEED = 2_000_000
#: Pile-ups that give about 1k, 10k, 30k and 100k spacepoints with the default simulation.
SIZES = {"1k": 0.0, "10k": 15.0, "30k": 60.0, "100k": 200.0}
STAGES = ("features", "graph", "filter", "gnn", "building")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="events per size")
    parser.add_argument("--no-faiss-100k", action="store_true", help="skip FAISS flat at 100k (it is quadratic)")
    args = parser.parse_args(argv)
    rows, results = [], {}
    with TrackFinder.local() as finder:
        finder.find(simulate_event(SimulationConfig(pileup=0.0), SEED, 99).spacepoints)  # warm-up
        for name, pileup in SIZES.items():
            timings, hits, graph_times = [], [], {"kdtree": [], "faiss": []}
            for index in range(args.repeat):
                spacepoints = simulate_event(SimulationConfig(pileup=pileup), SEED, index).spacepoints
                result = finder.find(spacepoints)
                timings.append(result.timing_ms)
                hits.append(len(spacepoints))
                embedding = np.asarray(
                    finder.graph.inference.infer(features=spacepoint_features(spacepoints)).embedding
                )
                for method in ("kdtree", "faiss"):
                    if method == "faiss" and ((name == "100k" and args.no_faiss_100k) or index > 0):
                        continue
                    began = time.perf_counter()
                    config = attrs.evolve(finder.config.graph, method=method)
                    candidate_edges(embedding, spacepoints, finder.graph.radius, config)
                    graph_times[method].append((time.perf_counter() - began) * 1e3)
            stage_ms = {stage: float(np.mean([t[stage] for t in timings])) for stage in STAGES}
            total = sum(stage_ms.values())
            results[name] = {
                "pileup": pileup,
                "spacepoints": float(np.mean(hits)),
                "stage_ms": stage_ms,
                "total_ms": total,
                "edges": result.edge_counts,
                "radius_graph_ms": {m: float(np.mean(v)) if v else None for m, v in graph_times.items()},
            }
            rows.append(_row(name, results[name]))
            print(rows[-1], flush=True)
    n = np.array([r["spacepoints"] for r in results.values()])
    total = np.array([r["total_ms"] for r in results.values()])
    exponent = float(np.polyfit(np.log(n[1:]), np.log(total[1:]), 1)[0])  # 10k..100k (1k is overhead-bound)
    output = {"threads": os.cpu_count(), "seed": SEED, "sizes": results, "cost_exponent_10k_100k": exponent,
              "pileup200_end_to_end_s": results["100k"]["total_ms"] / 1e3}  # fmt: skip
    (ROOT / "benchmarks/results/finding.json").write_text(json.dumps(output, indent=2))
    columns = ["event", "spacepoints", "features", "graph", "filter", "GNN", "building", "total ms",
               "edges graph/filter/GNN", "radius graph KD-tree ms", "FAISS flat ms", "FAISS/KD-tree"]  # fmt: skip
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    footer = (f"\nCost exponent of the total (10k→100k spacepoints): {exponent:.2f}. "
              f"Pile-up 200 end to end: {output['pileup200_end_to_end_s']:.2f} s/event.\n")  # fmt: skip
    (ROOT / "benchmarks/results/finding.md").write_text(header + "\n".join(rows) + "\n" + footer)
    print(header + "\n".join(rows) + footer)
    return 0


def _row(name: str, r: dict) -> str:
    s = r["stage_ms"]
    g = r["radius_graph_ms"]
    ratio = f"{g['faiss'] / g['kdtree']:.0f}×" if g["faiss"] else "not run"
    faiss = f"{g['faiss']:.0f}" if g["faiss"] else "not run"
    edges = "/".join(str(r["edges"][k]) for k in ("graph", "filter", "gnn"))
    return (f"| {name} | {r['spacepoints']:.0f} | {s['features']:.1f} | {s['graph']:.1f} | {s['filter']:.1f} | "
            f"{s['gnn']:.1f} | {s['building']:.1f} | {r['total_ms']:.0f} | {edges} | {g['kdtree']:.1f} | {faiss} | "
            f"{ratio} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
