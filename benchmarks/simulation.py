"""Speed of the detector simulation: seconds per event and hits per second at pile-up 0, 50 and 200.

Each pile-up point simulates ``--events`` events (default config: jet-like signal on, 1 % inefficiency, 5 %
noise, multiple scattering) on one core, after one warm-up event, and times writing them as TrackML CSV.
Target (issue 4): an event at pile-up 200 (≈10k particles, ≈100k hits) in ≤ 5 s on one core.

Usage::

    .venv/bin/python benchmarks/simulation.py [--events 5] [--pileups 0 50 200]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: keep BLAS from spreading
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import sys
import tempfile
import time
from pathlib import Path

import attrs
import numpy as np
from bench_common import RESULTS, write_results

from tracking_algs.geometry import trackml_detector
from tracking_algs.io.trackml import read_event, write_event
from tracking_algs.simulation import SimulationConfig, simulate_event

TARGET_S = 5.0


def measure(pileup: float, events: int, seed: int) -> dict[str, object]:
    """Simulate, write and read back ``events`` events at one pile-up; times per event."""
    config = attrs.evolve(SimulationConfig(), pileup=pileup)
    detector = trackml_detector()
    simulate_event(config, seed, 10_000, detector)  # warm-up
    sim, write, read, hits, particles = [], [], [], [], []
    with tempfile.TemporaryDirectory() as directory:
        for event_id in range(events):
            start = time.perf_counter()
            event = simulate_event(config, seed, event_id, detector)
            sim.append(time.perf_counter() - start)
            start = time.perf_counter()
            write_event(directory, event)
            write.append(time.perf_counter() - start)
            start = time.perf_counter()
            read_event(directory, event_id, detector)
            read.append(time.perf_counter() - start)
            hits.append(len(event.spacepoints))
            particles.append(len(event.particles))
    sim_s = np.array(sim)
    return {
        "pileup": pileup,
        "events": events,
        "mean_particles": float(np.mean(particles)),
        "mean_hits": float(np.mean(hits)),
        "median_s_per_event": float(np.median(sim_s)),
        "max_s_per_event": float(np.max(sim_s)),
        "hits_per_s": float(np.sum(hits) / np.sum(sim_s)),
        "median_write_s": float(np.median(write)),
        "median_read_s": float(np.median(read)),
    }


def markdown(rows: list[dict[str, object]], load: float) -> str:
    """The results as a markdown section; ``load`` is the machine's 1-minute load average during the run."""
    lines = [
        "## Detector simulation",
        "",
        f"One core; target: pile-up 200 in ≤ {TARGET_S:.0f} s/event. Reading and writing are the TrackML CSV files. "
        f"Load average during the run: {load:.1f}.",
        "",
        "| pile-up | events | particles/event | hits/event | simulation s/event (median) | max s/event | hits/s "
        "| CSV write s/event | CSV read s/event |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['pileup']:g} | {row['events']} | {row['mean_particles']:.0f} | {row['mean_hits']:.0f} | "
        f"{row['median_s_per_event']:.3f} | {row['max_s_per_event']:.3f} | {row['hits_per_s']:.3g} | "
        f"{row['median_write_s']:.3f} | {row['median_read_s']:.3f} |"
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write ``benchmarks/results/simulation.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5, help="events per pile-up point")
    parser.add_argument("--pileups", type=float, nargs="+", default=[0.0, 50.0, 200.0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    rows = [measure(pileup, args.events, args.seed) for pileup in args.pileups]
    load = os.getloadavg()[0]
    table = markdown(rows, load)
    print(table)
    write_results("simulation", {"target_s_per_event_at_pileup_200": TARGET_S, "results": rows}, table, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
