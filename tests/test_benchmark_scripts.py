"""The benchmark scripts run: every one's command line parses, and those that can write their results outside the
repository measure with the smallest arguments and write them.  The figures themselves belong to
docs/benchmarks.md and are not checked here; what is checked is that a documented command does not break when the
library under it changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(path.stem for path in BENCHMARKS.glob("*.py") if path.stem != "bench_common")


def _python(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in the repository root, as the documented commands run (a process of its own: the scripts
    set thread counts in the environment at import)."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy())  # fmt: skip


def test_every_benchmark_script_imports_and_parses_its_command_line():
    """``--help`` of each script, all in one process: its imports resolve and its parser builds."""
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(BENCHMARKS)!r})\n"
        f"for name in {SCRIPTS!r}:\n"
        "    try:\n"
        "        importlib.import_module(name).main(['--help'])\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code == 0, (name, stop.code)\n"
        "    else:\n"
        "        raise AssertionError(name + ': --help did not exit')\n"
        "    print('parsed', name)\n"
    )
    done = _python("-c", code, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("parsed ")] == [
        f"parsed {name}" for name in SCRIPTS
    ]


def test_fitting_benchmark_runs_with_batch_sizes_other_than_the_default(tmp_path):
    """``benchmarks/fitting.py`` with a batch size that is not the fitter's default (the worker processes and the
    per-track loop fit at the default): every geometry's rows, written to ``--output-dir``."""
    done = _python("benchmarks/fitting.py", "--tracks", "64", "--loop-tracks", "2", "--batch-sizes", "32",
                   "--processes", "2", "--repeat", "1", "--output-dir", str(tmp_path), timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "fitting.json").read_text())["results"]
    variants = {row["variant"] for row in rows}
    for prefix in ("", "modules: ", "solenoid: "):
        assert {f"{prefix}batched, batch_size=32, 1 process", f"{prefix}batched, batch_size=4096, 2 processes",
                f"{prefix}per-track loop, 1 process"} <= variants  # fmt: skip
    assert all(row["tracks_per_s"] > 0 for row in rows)
    assert (tmp_path / "fitting.md").is_file()


def test_serving_benchmark_builds_its_local_finder_as_a_job_does():
    """``benchmarks/serving.py``'s local variant: a finder whose stages load the model directory's files, giving the
    job's labels on a simulated event (its served variants are the job's too: tests/test_triton_tracking_chain.py)."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(BENCHMARKS)!r})\n"
        "import numpy as np, serving\n"
        "from tracking_algs.finding.config import FindingConfig\n"
        "from tracking_algs.job_options import local_finder\n"
        "from tracking_algs.simulation import SimulationConfig, simulate_event\n"
        "event = simulate_event(SimulationConfig(pileup=5.0), 3_000_000, 0)\n"
        "config = FindingConfig()\n"
        "with serving.make_finder('local', config, '', 1) as finder, local_finder(config) as reference:\n"
        "    labels = finder.find(event.spacepoints).candidates.labels\n"
        "    assert np.array_equal(labels, reference.find(event.spacepoints).candidates.labels)\n"
        "    print('tracks', len(np.unique(labels[labels >= 0])))\n"
    )
    done = _python("-c", code, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) > 0
