"""Overhead of ``InferenceInterface.infer`` over a raw ``onnxruntime.InferenceSession.run``.

Two models, built with ``onnx.helper`` (see ``tests/onnx_models.py``): a small one (1000 rows × 3 → 8, one
Gemm) where fixed per-call costs dominate, and a medium one (100 000 rows × 12 → 64 → 64 → 8 MLP) where the
model's work dominates. Both are timed in one process, with the same intra-op thread count, calls
interleaved (raw, interface, raw with IO binding, in an order rotated every round) so that drifts of a
shared machine hit all variants alike. Reported: medians and the interface/raw ratio.

Usage::

    .venv/bin/python benchmarks/interface_overhead.py [--threads 1] [--small-calls 3000] [--medium-calls 60]
"""

from __future__ import annotations

import tracking_algs  # noqa: F401  (first: pins numpy's kernels before numpy loads, as the trkx command does)

# isort: split

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import onnx_models  # noqa: E402  (tests/ holds the model builders)
from bench_common import RESULTS, run_script, time_interleaved, write_results  # noqa: E402

from inference_iface import create_inference  # noqa: E402
from tracking_algs.commands.arg_types import non_negative_int, output_directory, positive_int  # noqa: E402


def raw_session(path: Path, threads: int) -> ort.InferenceSession:
    """The reference session, configured like the interface's (CPU, same thread count, all optimisations)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def io_binding_call(session: ort.InferenceSession, features: np.ndarray) -> Callable[[], object]:
    """A call through ``run_with_iobinding`` (input bound once, output allocated by ORT on the CPU each call)."""
    binding = session.io_binding()
    binding.bind_cpu_input("features", features)

    def call() -> object:
        binding.bind_output("embedding", "cpu")
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    return call


def measure(label: str, path: Path, rows: int, width: int, threads: int, rounds: int) -> dict[str, object]:
    """Time one model; returns the row of the results table."""
    features = np.random.default_rng(1).standard_normal((rows, width)).astype(np.float32)
    session = raw_session(path, threads)
    iface = create_inference(
        {"backend": "onnxruntime", "model_path": str(path), "device": "cpu", "intra_op_threads": threads}
    )
    reference = session.run(None, {"features": features})[0]
    np.testing.assert_array_equal(iface.infer(features=features).embedding, reference)  # same work in both
    calls = {
        "raw": lambda: session.run(None, {"features": features}),
        "interface": lambda: iface.infer(features=features),
        "raw_io_binding": io_binding_call(session, features),
    }
    times = time_interleaved(calls, rounds, warmup=max(5, rounds // 20))
    iface.close()
    median = {name: float(np.median(values)) for name, values in times.items()}
    return {
        "model": label,
        "rows": rows,
        "input_width": width,
        "calls_per_variant": rounds,
        "intra_op_threads": threads,
        "median_raw_us": median["raw"] * 1e6,
        "median_interface_us": median["interface"] * 1e6,
        "median_raw_io_binding_us": median["raw_io_binding"] * 1e6,
        "p90_raw_us": float(np.percentile(times["raw"], 90)) * 1e6,
        "p90_interface_us": float(np.percentile(times["interface"], 90)) * 1e6,
        "ratio": median["interface"] / median["raw"],
        "extra_us": (median["interface"] - median["raw"]) * 1e6,
        "io_binding_ratio": median["raw_io_binding"] / median["raw"],
    }


def markdown(rows: list[dict[str, object]]) -> str:
    """The results as a markdown table fragment."""
    lines = [
        "| model | rows × width | calls | threads | raw `session.run` median (µs) | `iface.infer` median (µs) "
        "| ratio | extra (µs) | raw IO binding median (µs) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {row['model']} | {row['rows']} × {row['input_width']} | {row['calls_per_variant']} | "
        f"{row['intra_op_threads']} | {row['median_raw_us']:.1f} | {row['median_interface_us']:.1f} | "
        f"{row['ratio']:.3f} | {row['extra_us']:.1f} | {row['median_raw_io_binding_us']:.1f} |"
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the table, write ``benchmarks/results/interface_overhead.{json,md}``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=non_negative_int, default=1, help="intra-op threads for both sessions")
    parser.add_argument("--small-calls", type=positive_int, default=3000, help="timed calls per variant, small model")
    parser.add_argument("--medium-calls", type=positive_int, default=60, help="timed calls per variant, medium model")
    parser.add_argument("--output-dir", type=output_directory, default=str(RESULTS))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as directory:
        rows = [
            measure("small", onnx_models.small_mlp(directory), 1_000, 3, args.threads, args.small_calls),
            measure("medium", onnx_models.medium_mlp(directory), 100_000, 12, args.threads, args.medium_calls),
        ]
    table = markdown(rows)
    print(table)
    write_results("interface_overhead", {"results": rows}, table, args.output_dir)
    return 0


if __name__ == "__main__":
    run_script(main)
