"""Cost of serving a model through the embedded Triton server instead of running it locally.

The medium model of the interface benchmark (``tests/onnx_models.py``: 12 → 64 → 64 → 8 MLP) on payloads of
10 000 and 100 000 rows (spacepoints):

1. latency — median per call of local ONNX Runtime (``backend = "onnxruntime"``), Triton over gRPC, and
   Triton over gRPC with system shared memory, calls interleaved in one run (order rotated every round) so
   the drifts of a shared machine hit all variants alike; the served model runs the same ONNX file with the
   same intra-op thread count inside Triton's Python backend;
2. throughput — inferences per second on the 10 000-row payload with 1, 2 and 4 model instances and
   1, 2, 4 and 8 concurrent client threads (shared memory on).

Usage::

    .venv/bin/python benchmarks/remote_overhead.py [--threads 1] [--rounds-10k 60] [--rounds-100k 30]
        [--throughput-seconds 3]
"""

from __future__ import annotations

import tracking_algs  # noqa: F401  (first: pins numpy's kernels before numpy loads, as the trkx command does)

# isort: split

import argparse
import concurrent.futures
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import onnx_models  # noqa: E402  (tests/ holds the model builders)
from bench_common import RESULTS, run_script, time_interleaved, write_results  # noqa: E402

from backends.model_repository import add_onnx_model  # noqa: E402
from backends.triton_server import TritonServer, TritonServerConfig  # noqa: E402
from inference_iface import InferenceInterface, create_inference  # noqa: E402
from tracking_algs.commands.arg_types import non_negative_int, output_directory, positive_float, positive_int  # noqa: E402

INSTANCES = (1, 2, 4)
CLIENTS = (1, 2, 4, 8)


def latency(variants: dict[str, InferenceInterface], rows: int, rounds: int) -> dict[str, object]:
    """One latency row: medians (ms) per variant and ratios to local, after checking identical outputs."""
    features = np.random.default_rng(rows).standard_normal((rows, 12)).astype(np.float32)
    reference = variants["local"].infer(features=features).embedding
    for name, iface in variants.items():
        if iface.infer(features=features).embedding.tobytes() != reference.tobytes():
            raise AssertionError(f"{name} does not reproduce the local output bit for bit")
    calls = {name: (lambda iface=iface: iface.infer(features=features)) for name, iface in variants.items()}
    times = time_interleaved(calls, rounds, warmup=3)
    median = {name: float(np.median(values)) * 1e3 for name, values in times.items()}
    return {
        "rows": rows,
        "calls_per_variant": rounds,
        "median_local_ms": median["local"],
        "median_grpc_ms": median["grpc"],
        "median_grpc_shm_ms": median["grpc_shm"],
        "p90_grpc_shm_ms": float(np.percentile(times["grpc_shm"], 90)) * 1e3,
        "ratio_grpc": median["grpc"] / median["local"],
        "ratio_grpc_shm": median["grpc_shm"] / median["local"],
    }


def throughput(url: str, model_name: str, clients: int, seconds: float, rows: int) -> dict[str, object]:
    """Inferences per second with ``clients`` threads sharing one interface (shared memory on)."""
    features = np.random.default_rng(7).standard_normal((rows, 12)).astype(np.float32)
    iface = create_inference(
        {"backend": "triton", "url": url, "model_name": model_name, "shared_memory": "system", "timeout_s": 300}
    )
    barrier = threading.Barrier(clients)

    def client() -> int:
        iface.infer(features=features)  # warm this thread's connection and shared-memory regions
        barrier.wait()
        done, stop = 0, time.perf_counter() + seconds
        while time.perf_counter() < stop:
            iface.infer(features=features)
            done += 1
        return done

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(lambda _: client(), range(clients)))
    elapsed = time.perf_counter() - start
    iface.close()
    return {"model_name": model_name, "clients": clients, "rows": rows, "calls": total,
            "inferences_per_s": total / elapsed, "rows_per_s": total * rows / elapsed}  # fmt: skip


def markdown(latency_rows: list[dict[str, object]], throughput_rows: list[dict[str, object]], threads: int) -> str:
    """Both result tables as a markdown fragment."""
    lines = [
        f"Latency (median ms per call; ONNX Runtime intra-op threads = {threads} locally and in the server):",
        "",
        "| rows | calls | local ONNX | Triton gRPC | Triton gRPC + shm | gRPC/local | gRPC+shm/local |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['rows']} | {row['calls_per_variant']} | {row['median_local_ms']:.2f} | {row['median_grpc_ms']:.2f} | "
        f"{row['median_grpc_shm_ms']:.2f} | {row['ratio_grpc']:.3f} | {row['ratio_grpc_shm']:.3f} |"
        for row in latency_rows
    ]
    lines += ["", "Throughput (inferences/s, 10k rows, gRPC + shm):", ""]
    lines += [
        "| instances | " + " | ".join(f"{c} client{'s' if c > 1 else ''}" for c in CLIENTS) + " |",
        "|---|" + "---|" * len(CLIENTS),
    ]
    for instances in INSTANCES:
        cells = [f"{row['inferences_per_s']:.1f}" for row in throughput_rows if row["instances"] == instances]
        lines.append(f"| {instances} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables, write ``benchmarks/results/remote_overhead.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads", type=non_negative_int, default=1, help="ONNX Runtime intra-op threads, local and served"
    )
    parser.add_argument("--rounds-10k", type=positive_int, default=60, help="timed calls per variant at 10k rows")
    parser.add_argument("--rounds-100k", type=positive_int, default=30, help="timed calls per variant at 100k rows")
    parser.add_argument(
        "--throughput-seconds", type=positive_float, default=3.0, help="duration of each throughput cell"
    )
    parser.add_argument("--output-dir", type=output_directory, default=str(RESULTS))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as directory:
        model = onnx_models.medium_mlp(directory)
        repository = Path(directory) / "repository"
        for instances in INSTANCES:
            add_onnx_model(model, repository, f"medium_{instances}", instances=instances, intra_op_threads=args.threads)
        with TritonServer(TritonServerConfig(repository=str(repository), startup_timeout_s=300)) as server:
            local = create_inference(
                {"backend": "onnxruntime", "model_path": str(model), "device": "cpu", "intra_op_threads": args.threads}
            )
            served = {
                mode: create_inference(
                    {"backend": "triton", "url": server.grpc_url, "model_name": "medium_1", "shared_memory": mode}
                )
                for mode in ("none", "system")
            }
            variants = {"local": local, "grpc": served["none"], "grpc_shm": served["system"]}
            latency_rows = [
                latency(variants, 10_000, args.rounds_10k),
                latency(variants, 100_000, args.rounds_100k),
            ]
            for iface in variants.values():
                iface.close()
            throughput_rows = [
                {"instances": instances, **throughput(server.grpc_url, f"medium_{instances}", clients,
                                                      args.throughput_seconds, 10_000)}
                for instances in INSTANCES
                for clients in CLIENTS
            ]  # fmt: skip
    table = markdown(latency_rows, throughput_rows, args.threads)
    print(table)
    report = {
        "model": "medium_mlp 12 → 64 → 64 → 8 (tests/onnx_models.py)",
        "server": "embedded tritonserver 2.51 (nvidia-pytriton), Python backend running onnxruntime",
        "intra_op_threads": args.threads,
        "latency": latency_rows,
        "throughput": throughput_rows,
    }
    write_results("remote_overhead", report, table, args.output_dir)
    return 0


if __name__ == "__main__":
    run_script(main)
