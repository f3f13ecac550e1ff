"""Events per second of a whole ``trkx run configs/trackml.toml`` job on the real full TrackML events, with
``--jobs 1`` and ``--jobs 2``.

A job reads the events of a directory, finds and fits their tracks and writes its output (``tracks.csv`` and the
rest), as a user runs it; each job is its own ``trkx`` process. The events are those of ``../shared/trackml/full``
(about 100 000 hits each, the real ``detectors.csv``), linked into one directory under ``--copies`` sets of new
event numbers, and once more into a directory of one set. The fixed cost of a job (starting Python, loading the
models, the fit's worker processes) is the same for both, so the difference of their times over the difference
of their event counts is the time per event of a running job, the inverse of its throughput. ``--jobs 2``
processes two events side by side, one per core, each with its fit in its own process; ``--jobs 1`` one event at a
time with the fit dealt out over two worker processes, as ``configs/trackml.toml`` asks. Every job is checked to
write the same ``tracks.csv`` as the first.

Each round runs every (jobs, directory) cell once, in a rotated order; the medians over ``--rounds`` are reported.

Usage::

    .venv/bin/python benchmarks/job_throughput.py [--copies 3] [--rounds 2]
"""

from __future__ import annotations

import tracking_algs  # noqa: F401  (first: pins numpy's kernels before numpy loads, as the trkx command does)

# isort: split

import argparse
import hashlib
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import add_real_trackml_argument, check_results_directory, run_script, write_results

from tracking_algs.commands.arg_types import positive_int
from tracking_algs.io.trackml import event_path, find_event_file, list_events

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "trackml.toml"
JOBS = (1, 2)
#: the event numbers of copy c are the original ones plus c times this
COPY_STRIDE = 100_000


def linked_events(source: Path, target: Path, copies: int) -> int:
    """Link the hits file of every event of ``source`` into ``target`` ``copies`` times under new event numbers;
    return how many events ``target`` holds."""
    target.mkdir(parents=True)
    event_ids = list_events(source)
    for event_id in event_ids:
        original = find_event_file(source, event_id, "hits")
        assert original is not None  # list_events found its hits file
        for copy in range(copies):
            link = event_path(target, event_id + copy * COPY_STRIDE, "hits")
            if original.suffix == ".gz":
                link = link.with_name(link.name + ".gz")
            link.symlink_to(original.resolve())
    return copies * len(event_ids)


def run_job(events: Path, output: Path, jobs: int, detectors: Path) -> tuple[float, float, str]:
    """Wall and CPU seconds (the job's processes) of one ``trkx run`` job, and a digest of its ``tracks.csv``."""
    command = [str(Path(sys.executable).parent / "trkx"), "run", str(CONFIG), "--input", str(events), "--output",
               str(output), "--jobs", str(jobs), "--no-progress", "--set", f"detector.file='{detectors}'"]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, hashlib.sha256((output / "tracks.csv").read_bytes()).hexdigest()


def markdown(report: dict) -> str:
    """The table of ``report`` (see :func:`main`)."""
    small, large = report["events_small"], report["events_large"]
    lines = [
        f"`trkx run configs/trackml.toml` on the real full events (`../shared/trackml/full`, jobs of {small} and "
        f"{large} events: each of the {small} linked {report['copies']} times), medians of {report['rounds']} rounds; "
        f"s per event of a running job = (time of the {large}-event job − time of the {small}-event job) / "
        f"{large - small}. Every job wrote the same `tracks.csv`.",
        "",
        f"| `--jobs` | job of {small} events (s) | job of {large} events (s) | "
        "s per event (wall) | events/s | CPU s per event | vs `--jobs 1` |",
        "|---|---|---|---|---|---|---|",
    ]
    single = report["cells"]["1"]["seconds_per_event"]
    for jobs, cell in report["cells"].items():
        lines.append(
            f"| {jobs} | {cell['small_s']:.1f} | {cell['large_s']:.1f} | {cell['seconds_per_event']:.2f} | "
            f"{1 / cell['seconds_per_event']:.3f} | {cell['cpu_seconds_per_event']:.2f} | "
            f"{single / cell['seconds_per_event']:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--copies", type=positive_int, default=3, help="sets of the real events in the larger job (≥ 2)"
    )
    parser.add_argument("--rounds", type=positive_int, default=2)
    add_real_trackml_argument(parser)
    args = parser.parse_args(argv)
    check_results_directory(parser)
    if args.copies < 2:
        parser.error("--copies must be at least 2")
    detectors = args.trackml / "detectors.csv.gz"
    with tempfile.TemporaryDirectory(prefix="job_throughput_") as scratch:
        work = Path(scratch)
        small = linked_events(args.trackml / "full", work / "small", 1)
        large = linked_events(args.trackml / "full", work / "large", args.copies)
        cells = [(jobs, name) for jobs in JOBS for name in ("small", "large")]
        times: dict[tuple[int, str], list[tuple[float, float]]] = {cell: [] for cell in cells}
        digests: dict[str, set[str]] = {"small": set(), "large": set()}
        for index in range(args.rounds):
            shift = index % len(cells)
            for jobs, name in cells[shift:] + cells[:shift]:
                wall, cpu, digest = run_job(work / name, work / f"out_{jobs}_{name}_{index}", jobs, detectors)
                times[jobs, name].append((wall, cpu))
                digests[name].add(digest)
                print(f"--jobs {jobs}, {name}: {wall:.1f} s", flush=True)
    if any(len(found) != 1 for found in digests.values()):
        print("job_throughput: the jobs wrote different tracks.csv", file=sys.stderr)
        return 1
    report: dict = {"copies": args.copies, "rounds": args.rounds, "events_small": small, "events_large": large,
                    "cells": {}}  # fmt: skip
    for jobs in JOBS:
        small_wall, small_cpu = np.median(times[jobs, "small"], axis=0)
        large_wall, large_cpu = np.median(times[jobs, "large"], axis=0)
        report["cells"][str(jobs)] = {
            "small_s": float(small_wall),
            "large_s": float(large_wall),
            "seconds_per_event": float((large_wall - small_wall) / (large - small)),
            "cpu_seconds_per_event": float((large_cpu - small_cpu) / (large - small)),
        }
    table = markdown(report)
    write_results("job_throughput", report, table)
    print(table)
    return 0


if __name__ == "__main__":
    run_script(main)
