"""Scaling out on Dask: the throughput of one ``trkx run`` job on 1, 2 and 4 Dask workers, by backend.

One job is the job runner as ``trkx run --scheduler`` runs it (:func:`tracking_algs.job.runner.run_events`): every
event a task, read by a worker from the shared input directory, processed there, and saved by the client as its
future completes. The workers are processes (one thread each) of loopback ``LocalCluster`` s started beforehand, one
per worker count, all running side by side; each cell is one whole job, so it includes the workers' building of
their processors (ONNX Runtime sessions, or Triton clients). Backends:

``onnxruntime``
    every neural stage on local ONNX Runtime in the worker;
``triton ×1``
    every neural stage on one embedded Triton server;
``triton ×2``
    the same on two embedded servers, each worker's backend using them round-robin (``inference.triton.urls``).

ONNX Runtime runs one intra-op thread everywhere (in the workers and in every served model). Every cell runs once
per round, cells in a rotated order, so the drifts of a shared machine hit all alike; every job is checked to give
the same track labels as the first.

Usage::

    .venv/bin/python benchmarks/dask_scaling.py [--events 8] [--pileup 10] [--rounds 2]
"""

from __future__ import annotations

import tracking_algs  # noqa: F401  (first: numpy's kernels pinned before numpy loads, here and in the workers)

# isort: split
import argparse
import contextlib
import importlib
import os
import tempfile
import time
from pathlib import Path

from bench_common import RESULTS, run_script, write_results
from distributed import Client, LocalCluster

from backends.triton_server import TritonServer, TritonServerConfig
from tracking_algs.commands.arg_types import non_negative_float, output_directory, positive_int
from tracking_algs.commands.bench import machine_description
from tracking_algs.io.trackml import write_event
from tracking_algs.job.runner import run_events
from tracking_algs.job.sources import DirectorySource
from tracking_algs.job.store import ResultStore
from tracking_algs.job_options import JobOptions, load_job_options
from tracking_algs.serving.repository import TrackingRepositoryOptions, add_tracking
from tracking_algs.simulation import SimulationConfig, simulate_event

ROOT = Path(__file__).resolve().parents[1]

WORKERS = (1, 2, 4)
BACKENDS = ("onnxruntime", "triton ×1", "triton ×2")
SEED = 3_100_000  # never used for training


def job_options(backend: str, urls: list[str], scheduler: str) -> JobOptions:
    """The job's options: one intra-op thread, and the backend's server list."""
    sets = ["job.executor=dask", f"job.scheduler={scheduler}"]
    if backend == "onnxruntime":
        local = ["inference.onnxruntime.device=cpu", "inference.onnxruntime.intra_op_threads=1"]
        return load_job_options(ROOT / "configs" / "local_onnx.toml", [*sets, *local])
    listed = ", ".join(f'"{url}"' for url in urls[: int(backend[-1])])
    remote = ["inference.triton.url=", f"inference.triton.urls=[{listed}]"]
    return load_job_options(ROOT / "configs" / "remote_triton.toml", [*sets, *remote])


def import_chain() -> None:
    """Load the tracking chain and both backends in a worker (once, before the timed jobs)."""
    for name in ("backends.onnxruntime", "backends.triton", "tracking_algs.job.process"):
        importlib.import_module(name)


def run_job(options: JobOptions, source: DirectorySource, output: Path) -> tuple[float, dict[int, bytes]]:
    """Seconds the job took, and its track labels by event."""
    store = ResultStore(output)
    store.prepare({"options": options.to_dict(execution=False), "source": source.describe()}, resume=False)
    start = time.perf_counter()
    summary = run_events(options, source, store, progress=False)
    elapsed = time.perf_counter() - start
    if summary.failed or len(summary.processed) != len(source.event_ids()):
        raise RuntimeError(f"job in {output} did not process every event: {summary}")
    return elapsed, {result.event_id: result.track_label.tobytes() for result in store.results()}


def markdown(report: dict, machine: str, load_average: float) -> str:
    """The result table as a markdown fragment, with the machine it was measured on."""
    lines = [
        "## Scaling out on Dask: one job on 1, 2 and 4 workers",
        "",
        f"Throughput of one `trkx run --scheduler` job (events/s; {report['events']} events of pile-up "
        f"{report['pileup']:g} read from a shared directory, {report['rounds']} jobs per cell, the cells of a round in "
        "a rotated order) on a loopback `LocalCluster` of 1, 2 and 4 worker processes, one thread each; a job "
        "includes the workers' building of their processors. ONNX Runtime runs one intra-op thread in the workers and "
        "in every served model (`trkx repo add-tracking --serving models --threads 1`); every job gave the same "
        "track labels.",
        "",
        "| backend | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}" for w in WORKERS) + " |",
        "|---|" + "---|" * len(WORKERS),
    ]
    for backend in BACKENDS:
        cells = [f"{report['events_per_s'][backend][str(w)]:.2f}" for w in WORKERS]
        lines.append(f"| {backend} | " + " | ".join(cells) + " |")
    lines += ["", f"Machine: {machine}; load average (1 min) at the end: {load_average:.1f} (a shared machine)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write ``benchmarks/results/dask_scaling.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=positive_int, default=8, help="events per job")
    parser.add_argument("--pileup", type=non_negative_float, default=10.0, help="pile-up of the simulated events")
    parser.add_argument("--rounds", type=positive_int, default=2, help="jobs per cell")
    parser.add_argument("--output-dir", type=output_directory, default=str(RESULTS))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
        scratch = Path(directory)
        config = SimulationConfig(pileup=args.pileup)
        for event_id in range(args.events):
            write_event(scratch / "events", simulate_event(config, seed=SEED, event_id=event_id))
        source = DirectorySource.open(scratch / "events", JobOptions().cylinder_detector())
        repository = scratch / "repository"
        add_tracking(repository, TrackingRepositoryOptions(serving="models", intra_op_threads=1))
        servers = [stack.enter_context(TritonServer(TritonServerConfig(repository=str(repository)))) for _ in range(2)]
        urls = [server.grpc_url for server in servers]
        clusters = {
            workers: stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                      host="127.0.0.1", dashboard_address="127.0.0.1:0"))
            for workers in WORKERS
        }  # fmt: skip
        for cluster in clusters.values():
            with Client(cluster) as client:
                client.run(import_chain)
        cells = [(backend, workers) for workers in WORKERS for backend in BACKENDS]
        seconds = {cell: 0.0 for cell in cells}
        reference: dict[int, bytes] | None = None
        for index in range(args.rounds):
            shift = index % len(cells)
            for backend, workers in cells[shift:] + cells[:shift]:
                options = job_options(backend, urls, clusters[workers].scheduler_address)
                output = scratch / "jobs" / f"{index}-{backend}-{workers}"
                elapsed, labels = run_job(options, source, output)
                reference = reference or labels
                if labels != reference:
                    raise AssertionError(f"{backend} on {workers} workers gave other track labels")
                seconds[backend, workers] += elapsed
                print(f"round {index}: {backend:12s} {workers} workers  {args.events / elapsed:6.2f} events/s")

    report = {
        "events": args.events,
        "pileup": args.pileup,
        "rounds": args.rounds,
        "events_per_s": {
            backend: {str(w): args.events * args.rounds / seconds[backend, w] for w in WORKERS} for backend in BACKENDS
        },
    }
    table = markdown(report, machine_description(), os.getloadavg()[0])
    print(table)
    write_results("dask_scaling", report, table, args.output_dir)
    return 0


if __name__ == "__main__":
    run_script(main)
