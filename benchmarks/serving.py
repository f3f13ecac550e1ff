"""The tracking chain run locally vs served by the embedded Triton server in three ways.

Variants, on the same simulated events (small pile-up, so the whole run takes minutes on 2 cores):

``local``
    :class:`TrackFinder` with every neural stage on local ONNX Runtime;
``stages``
    the same finder with every neural stage on Triton (``embedding``, ``filter``, ``gnn`` served on their
    own; graph and track building in the client): three round trips per event;
``ensemble``
    ``tracking_ensemble``: one request per event, Triton runs the seven steps (three ONNX models and four
    Python-backend steps) and moves the tensors between them;
``chain``
    ``tracking_chain``: one request per event, one Python-backend model runs the whole finder in-process.

Every variant is first checked to give exactly the local labels. Then:

1. latency — ms per event with one client, events interleaved across variants (order rotated every
   round) so the drifts of a shared machine hit all variants alike;
2. throughput — events per second with 1, 2 and 4 concurrent clients (threads, each with its own finder)
   for servers whose models have 1 and 2 instances (``local``: 1, 2, 4 threads in this process); both
   servers run side by side and every cell runs in slices, all cells once per round in a rotated order.

ONNX Runtime runs with the same intra-op thread count locally and in every served model. The models are
the shipped ones, or untrained networks of the same architecture when the package has none
(``tests/finding_models.py``), which is noted in the results.

Usage::

    .venv/bin/python benchmarks/serving.py [--pileup 10] [--events 4] [--rounds 3] [--seconds 8]
        [--throughput-rounds 4] [--threads 1]
"""

from __future__ import annotations

import tracking_algs  # noqa: F401  (first: pins numpy's kernels before numpy loads, as the trkx command does)

# isort: split

import argparse
import concurrent.futures
import contextlib
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from bench_common import RESULTS, run_script, write_results  # noqa: E402
from finding_models import finding_model_dir, has_shipped_models  # noqa: E402  (tests/ holds the model helper)

from backends.triton_server import TritonServer, TritonServerConfig  # noqa: E402
from inference_iface import create_inference  # noqa: E402
from tracking_algs.commands.arg_types import (  # noqa: E402
    non_negative_float,
    non_negative_int,
    output_directory,
    positive_float,
    positive_int,
)
from tracking_algs.event import Event  # noqa: E402
from tracking_algs.finding.config import FindingConfig  # noqa: E402
from tracking_algs.finding.finder import TrackFinder  # noqa: E402
from tracking_algs.finding.model_dir import STAGES  # noqa: E402
from tracking_algs.finding.served import SERVED_MODELS, ServedTrackFinder  # noqa: E402
from tracking_algs.job_options import JobOptions  # noqa: E402
from tracking_algs.serving.repository import TrackingRepositoryOptions, add_tracking  # noqa: E402
from tracking_algs.simulation import SimulationConfig, simulate_event  # noqa: E402

VARIANTS = ("local", "stages", "ensemble", "chain")
INSTANCES = (1, 2)
CLIENTS = (1, 2, 4)
SEED = 3_000_000  # never used for training

Finder = TrackFinder | ServedTrackFinder


def make_finder(variant: str, config: FindingConfig, url: str, threads: int) -> Finder:
    """A finder of one variant (a new one per client thread)."""
    if variant == "local":
        onnxruntime = {"device": "cpu", "intra_op_threads": threads}
        local = JobOptions(finding=config, inference={"backend": "onnxruntime", "onnxruntime": onnxruntime})
        return TrackFinder.from_options(config, {stage: local.stage_inference(stage) for stage in STAGES})
    remote = {"url": url, "timeout_s": 600}
    if variant == "stages":
        served = JobOptions(finding=config, inference={"backend": "triton", "triton": remote})
        return TrackFinder.from_options(config, {stage: served.stage_inference(stage) for stage in STAGES})
    return ServedTrackFinder(create_inference({"backend": "triton", **remote, "model_name": SERVED_MODELS[variant]}))


def check_labels(finders: dict[str, Finder], events: list[Event]) -> None:
    """Every variant gives exactly the local labels on every event."""
    for event in events:
        reference = finders["local"].find(event.spacepoints).candidates.labels
        for name, finder in finders.items():
            if not np.array_equal(finder.find(event.spacepoints).candidates.labels, reference):
                raise AssertionError(f"{name} does not reproduce the local labels of event {event.event_id}")


def latency(finders: dict[str, Finder], events: list[Event], rounds: int) -> dict[str, dict[str, float]]:
    """ms per event with one client: every round runs each event through each variant, order rotated."""
    names = list(finders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for event in events:
            shift = index % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                finders[name].find(event.spacepoints)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {
        name: {"median_ms": float(np.median(values)), "mean_ms": float(np.mean(values)),
               "min_ms": float(np.min(values)), "events": len(values)}
        for name, values in times.items()
    }  # fmt: skip


def throughput_slice(
    make: Callable[[], Finder], events: list[Event], clients: int, seconds: float
) -> tuple[int, float]:
    """Events done and seconds taken by ``clients`` threads, each with its own warmed finder, in about
    ``seconds``."""
    warm = threading.Barrier(clients + 1)
    go = threading.Event()
    stop = [0.0]

    def client(offset: int) -> int:
        with make() as finder:
            finder.find(events[offset % len(events)].spacepoints)  # warm this client's sessions/connection
            warm.wait()
            go.wait()
            done = 0
            while time.perf_counter() < stop[0]:
                finder.find(events[(offset + done) % len(events)].spacepoints)
                done += 1
            return done

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, offset) for offset in range(clients)]
        warm.wait()
        start = time.perf_counter()
        stop[0] = start + seconds
        go.set()
        total = sum(future.result() for future in futures)
        elapsed = time.perf_counter() - start
    return total, elapsed


def throughput(
    makers: dict[tuple[str, int], Callable[[], Finder]], events: list[Event], seconds: float, rounds: int
) -> list[dict[str, object]]:
    """Events/s of every (variant, instances) × clients cell. The cells run in slices of
    ``seconds / rounds``, all cells once per round in a rotated order, so load drifts hit all alike."""
    cells = [(key, clients) for key in makers for clients in CLIENTS]
    done = dict.fromkeys(cells, 0)
    spent = dict.fromkeys(cells, 0.0)
    for index in range(rounds):
        shift = index % len(cells)
        for key, clients in cells[shift:] + cells[:shift]:
            events_done, elapsed = throughput_slice(makers[key], events, clients, seconds / rounds)
            done[key, clients] += events_done
            spent[key, clients] += elapsed
    return [
        {"variant": variant, "instances": instances,
         "cells": [{"clients": c, "events": done[(variant, instances), c],
                    "events_per_s": done[(variant, instances), c] / spent[(variant, instances), c]} for c in CLIENTS]}
        for variant, instances in makers
    ]  # fmt: skip


def markdown(report: dict) -> str:
    """The result tables as a markdown fragment."""
    lat = report["latency_ms"]
    models = "shipped models" if report["shipped_models"] else "untrained models of the shipped architecture"
    lines = [
        "## Serving the tracking chain",
        "",
        f"The tracking chain, local vs served by the embedded Triton server ({models}; pile-up "
        f"{report['pileup']:g}, {report['mean_spacepoints']:.0f} spacepoints per event; ONNX Runtime intra-op "
        f"threads = {report['intra_op_threads']} everywhere; every variant checked to give the local labels).",
        "",
        "Latency, one client (ms per event, events interleaved across variants):",
        "",
        "| variant | median | mean | min | vs local (median) |",
        "|---|---|---|---|---|",
    ]
    for name in VARIANTS:
        row = lat[name]
        lines.append(
            f"| {name} | {row['median_ms']:.0f} | {row['mean_ms']:.0f} | {row['min_ms']:.0f} | "
            f"{row['median_ms'] / lat['local']['median_ms']:.2f} |"
        )
    lines += [
        "",
        "Throughput (events/s; model instances per served model × concurrent clients):",
        "",
        "| variant | instances | " + " | ".join(f"{c} client{'s' if c > 1 else ''}" for c in CLIENTS) + " |",
        "|---|---|" + "---|" * len(CLIENTS),
    ]
    for row in report["throughput"]:
        cells = [f"{cell['events_per_s']:.2f}" for cell in row["cells"]]
        lines.append(f"| {row['variant']} | {row['instances'] or '—'} | " + " | ".join(cells) + " |")
    if "chain_over_ensemble" in report:
        lines += ["", f"chain / ensemble throughput (best cell each): {report['chain_over_ensemble']:.2f}×."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, write ``benchmarks/results/serving.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pileup", type=non_negative_float, default=10.0, help="pile-up of the simulated events")
    parser.add_argument("--events", type=positive_int, default=4, help="distinct events")
    parser.add_argument("--rounds", type=positive_int, default=3, help="latency rounds over all events")
    parser.add_argument("--seconds", type=positive_float, default=8.0, help="duration of each throughput cell")
    parser.add_argument(
        "--throughput-rounds", type=positive_int, default=4, help="slices each throughput cell is cut into"
    )
    parser.add_argument(
        "--threads", type=non_negative_int, default=1, help="ONNX Runtime intra-op threads, local and served"
    )
    parser.add_argument("--output-dir", type=output_directory, default=str(RESULTS))
    args = parser.parse_args(argv)

    events = [simulate_event(SimulationConfig(pileup=args.pileup), seed=SEED, event_id=i) for i in range(args.events)]
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
        model_dir = finding_model_dir(Path(directory) / "models")
        config = FindingConfig(model_dir=str(model_dir))
        urls = {}
        for instances in INSTANCES:  # one server per instance count, all running side by side
            repository = Path(directory) / f"repository_{instances}"
            options = TrackingRepositoryOptions(finding=config, instances=instances, intra_op_threads=args.threads)
            add_tracking(repository, options)
            server = TritonServer(TritonServerConfig(repository=str(repository), startup_timeout_s=300))
            urls[instances] = stack.enter_context(server).grpc_url
        finders = {name: make_finder(name, config, urls[INSTANCES[0]], args.threads) for name in VARIANTS}
        check_labels(finders, events)
        latency_ms = latency(finders, events, args.rounds)
        for finder in finders.values():
            finder.close()
        makers = {("local", 0): lambda: make_finder("local", config, "", args.threads)}
        for instances in INSTANCES:
            for name in VARIANTS[1:]:
                makers[name, instances] = lambda name=name, url=urls[instances]: make_finder(
                    name, config, url, args.threads
                )
        throughput_rows = throughput(makers, events, args.seconds, args.throughput_rounds)

    best = {row["variant"]: 0.0 for row in throughput_rows}
    for row in throughput_rows:
        best[row["variant"]] = max(best[row["variant"]], *(cell["events_per_s"] for cell in row["cells"]))
    report = {
        "server": "embedded tritonserver 2.51 (nvidia-pytriton); neural models: Python backend running onnxruntime",
        "shipped_models": has_shipped_models(),
        "pileup": args.pileup,
        "mean_spacepoints": float(np.mean([len(event.spacepoints) for event in events])),
        "events": args.events,
        "intra_op_threads": args.threads,
        "latency_ms": latency_ms,
        "throughput": throughput_rows,
        "best_events_per_s": best,
        "chain_over_ensemble": best["chain"] / best["ensemble"],
    }
    table = markdown(report)
    print(table)
    write_results("serving", report, table, args.output_dir)
    return 0


if __name__ == "__main__":
    run_script(main)
