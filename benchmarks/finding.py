"""Finding benchmark: ms/event per stage for events of about 1k, 10k, 30k and 100k spacepoints (local
ONNX Runtime, shipped models), the cost exponent of the total, KD-tree vs FAISS flat graph building side by
side on the same embeddings (and the bare neighbour searches at 100k: FAISS's range search against the
KD-tree's query, without pair cuts or merging), and the
end-to-end time of a pile-up-200 event: its latency (one finder using every core) and the job rate (one finder
per core, each on its own events).

Each size starts with an untimed event of that size (ONNX Runtime's memory arena grows to it on the first),
then times ``--repeat`` events and reports the median per stage.

    .venv/bin/python benchmarks/finding.py [--repeat 3] [--job-events 3] [--no-faiss-100k]

Writes benchmarks/results/finding.json and finding.md.
"""

from __future__ import annotations

import tracking_algs  # noqa: F401  (first: pins numpy's kernels before numpy loads, as the trkx command does)

# isort: split

import argparse
import json
import multiprocessing
import os
import time
from pathlib import Path

import attrs
import numpy as np
from bench_common import check_results_directory, run_script, start_worker_quietly
from scipy.spatial import cKDTree

from inference_iface import create_inference
from inference_iface.cores import usable_cores
from tracking_algs.commands.arg_types import positive_int
from tracking_algs.cores import pin_to_share
from tracking_algs.finding.features import spacepoint_features
from tracking_algs.finding.graph import candidate_edges
from tracking_algs.finding.model_dir import model_path
from tracking_algs.job_options import local_finder
from tracking_algs.simulation import SimulationConfig, simulate_event
from tracking_algs.worker_lifetime import sigint_blocked

ROOT = Path(__file__).resolve().parent.parent
SEED = 2_000_000
#: Pile-ups that give about 1k, 10k, 30k and 100k spacepoints with the default simulation.
SIZES = {"1k": 0.0, "10k": 15.0, "30k": 60.0, "100k": 200.0}
STAGES = ("features", "graph", "filter", "gnn", "building")
#: Index of the untimed event that starts each size.
WARM_UP_EVENT = 99


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=positive_int, default=3, help="timed events per size")
    parser.add_argument(
        "--job-events", type=positive_int, default=3, help="pile-up-200 events per core for the job rate"
    )
    parser.add_argument("--no-faiss-100k", action="store_true", help="skip FAISS flat at 100k (it is quadratic)")
    args = parser.parse_args(argv)
    check_results_directory(parser)
    rows, results = [], {}
    gnn_inputs = []  # (features, filter edges) of the 100k events, for the memory-pattern comparison
    searches = {}
    with local_finder() as finder:
        for name, pileup in SIZES.items():
            finder.find(simulate_event(SimulationConfig(pileup=pileup), SEED, WARM_UP_EVENT).spacepoints)
            timings, hits, graph_times = [], [], {"kdtree": [], "faiss": []}
            for index in range(args.repeat):
                spacepoints = simulate_event(SimulationConfig(pileup=pileup), SEED, index).spacepoints
                result = finder.find(spacepoints)
                timings.append(result.timing_ms)
                hits.append(len(spacepoints))
                features = spacepoint_features(spacepoints)
                if name == "100k":
                    gnn_inputs.append((features, result.edges["filter"]))
                embedding = np.asarray(finder.graph.inference.infer(features=features).embedding)
                if name == "100k" and index == 0 and not args.no_faiss_100k:
                    searches = search_only_ms(embedding, finder.graph.radius, finder.config.graph.query_k)
                for method in ("kdtree", "faiss"):
                    if method == "faiss" and ((name == "100k" and args.no_faiss_100k) or index > 0):
                        continue
                    began = time.perf_counter()
                    config = attrs.evolve(finder.config.graph, method=method)
                    candidate_edges(embedding, spacepoints, finder.graph.radius, config)
                    graph_times[method].append((time.perf_counter() - began) * 1e3)
            stage_ms = {stage: float(np.median([t[stage] for t in timings])) for stage in STAGES}
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
    memory_pattern = gnn_memory_pattern_ms(gnn_inputs)
    n = np.array([r["spacepoints"] for r in results.values()])
    total = np.array([r["total_ms"] for r in results.values()])
    exponent = float(np.polyfit(np.log(n[1:]), np.log(total[1:]), 1)[0])  # 10k..100k (1k is overhead-bound)
    workers = usable_cores()
    job_s = job_seconds_per_event(SIZES["100k"], workers, args.job_events)
    job = {"finders": workers, "events": workers * args.job_events, "s_per_event": job_s}
    output = {"threads": os.cpu_count(), "seed": SEED, "sizes": results, "cost_exponent_10k_100k": exponent,
              "pileup200_end_to_end_s": results["100k"]["total_ms"] / 1e3, "pileup200_job": job,
              "pileup200_gnn_memory_pattern_ms": memory_pattern, "search_only_100k_ms": searches}  # fmt: skip
    (ROOT / "benchmarks/results/finding.json").write_text(json.dumps(output, indent=2))
    columns = ["event", "spacepoints", "features", "graph", "filter", "GNN", "building", "total ms",
               "edges graph/filter/GNN", "radius graph KD-tree ms", "FAISS flat ms", "FAISS/KD-tree"]  # fmt: skip
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    footer = (f"\nMedians of {args.repeat} events per size, after an untimed one. "
              f"Cost exponent of the total (10k→100k spacepoints): {exponent:.2f}. "
              f"Pile-up 200 end to end: {output['pileup200_end_to_end_s']:.2f} s/event with one finder on "
              f"{workers} cores; {job_s:.2f} s/event with {workers} finders of one core each, side by side "
              f"({workers * args.job_events} events).\n\n"
              "The GNN of the pile-up-200 events, each event in turn on two sessions, ONNX Runtime's memory patterns "
              f"{_spread(memory_pattern['on'])} (on) and {_spread(memory_pattern['off'])} (off, the finder's default) "
              "ms per call.\n\n" + _searches(searches))  # fmt: skip
    (ROOT / "benchmarks/results/finding.md").write_text(header + "\n".join(rows) + "\n" + footer)
    print(header + "\n".join(rows) + footer)
    return 0


def gnn_memory_pattern_ms(inputs: list[tuple[np.ndarray, np.ndarray]], rounds: int = 3) -> dict[str, list[float]]:
    """ms per call of the shipped GNN on ``inputs`` (features, edges), with ONNX Runtime's memory patterns on and off:
    two sessions, called in turn on each event for ``rounds`` rounds (the first round of each is left out)."""
    gnn = {"backend": "onnxruntime", "model_path": str(model_path("", "gnn"))}
    sessions = {setting: create_inference({**gnn, "memory_pattern": setting == "on"}) for setting in ("on", "off")}
    times: dict[str, list[float]] = {setting: [] for setting in sessions}
    for round_index in range(rounds):
        for features, edges in inputs:
            for setting, session in sessions.items():
                began = time.perf_counter()
                session.infer(features=features, edge_index=np.ascontiguousarray(edges))
                if round_index > 0:
                    times[setting].append((time.perf_counter() - began) * 1e3)
    for session in sessions.values():
        session.close()
    return times


def search_only_ms(points: np.ndarray, radius: float, query_k: int) -> dict[str, float]:
    """ms of the bare neighbour searches on one event's embedding (no pair cuts, no merging): FAISS flat range search,
    and the cKDTree query (exact, on every core) 32 deep and as deep as the finder's (``query_k``), each with the
    tree's construction (built once)."""
    import faiss

    times = {}
    began = time.perf_counter()
    index = faiss.IndexFlatL2(points.shape[1])
    index.add(points)
    index.range_search(points, radius * radius)
    times["faiss_range_search"] = (time.perf_counter() - began) * 1e3
    began = time.perf_counter()
    tree = cKDTree(points, leafsize=32)
    build = time.perf_counter() - began
    for depth in (32, query_k):
        began = time.perf_counter()
        tree.query(points, k=depth + 1, distance_upper_bound=radius, workers=-1)
        times[f"kdtree_query_{depth}"] = (build + time.perf_counter() - began) * 1e3
    return times


def _searches(searches: dict[str, float]) -> str:
    """The bare searches' line of the footer (empty when they were not run)."""
    if not searches:
        return ""
    faiss, depths = searches["faiss_range_search"], [key for key in searches if key.startswith("kdtree_query_")]
    figures = ", ".join(f"{key.rsplit('_', 1)[1]}-deep query {searches[key]:.0f} ms ({faiss / searches[key]:.0f}×)"
                        for key in depths)  # fmt: skip
    return (
        f"The bare searches on the first 100k event's embedding (no pair cuts, no merging): "
        f"FAISS flat range search {faiss:.0f} ms; KD-tree {figures}.\n\n"
    )


def _spread(values: list[float]) -> str:
    return f"median {np.median(values):.0f}, range {min(values):.0f}–{max(values):.0f}"


def job_seconds_per_event(pileup: float, workers: int, events: int) -> float:
    """Wall seconds per event of ``workers`` finder processes, each pinned to its share of the cores (as ``trkx run
    --jobs``) and finding ``events`` events of its own, timed from a barrier they pass together."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(workers + 1), context.Queue()
    finders = [context.Process(target=_job_worker, args=(index, workers, pileup, events, barrier, results),
                               daemon=True) for index in range(workers)]  # fmt: skip
    with sigint_blocked():
        for process in finders:
            process.start()
    barrier.wait()  # every finder has its events and has run one: the clock starts with all of them
    began = time.perf_counter()
    finished = [results.get() for _ in finders]
    elapsed = time.perf_counter() - began
    for process in finders:
        process.join()
    assert sum(finished) == workers * events, finished
    return elapsed / (workers * events)


def _job_worker(index: int, workers: int, pileup: float, events: int, barrier, results) -> None:
    start_worker_quietly()
    pin_to_share(index, workers)
    first = 100 + index * events  # events of their own, none of them timed in the latency table
    event_list = [simulate_event(SimulationConfig(pileup=pileup), SEED, first + i).spacepoints for i in range(events)]
    with local_finder() as finder:
        finder.find(simulate_event(SimulationConfig(pileup=pileup), SEED, WARM_UP_EVENT).spacepoints)
        barrier.wait()
        for spacepoints in event_list:
            finder.find(spacepoints)
    results.put(len(event_list))


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
    run_script(main)
