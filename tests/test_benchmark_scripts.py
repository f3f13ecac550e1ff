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


# A bad argument of each script: argparse's one-line error (exit status 2) before any work, never a traceback after
# minutes of it, nor results overwritten with NaN (graph_depth.py --events -1 used to exit 0 having done so).
BAD_ARGUMENTS = [
    ("graph_depth", ["--events", "-1"], "argument --events: expected an integer ≥ 1, got -1"),
    ("graph_depth", ["--events", "0"], "argument --events: expected an integer ≥ 1, got 0"),
    ("event_speed", ["--repeat", "0"], "argument --repeat: expected an integer ≥ 1, got 0"),
    ("event_speed", ["--trackml", "nowhere"], "argument --trackml: real TrackML data 'nowhere' does not exist"),
    ("fitting", ["--tracks", "0"], "argument --tracks: expected an integer ≥ 1, got 0"),
    ("fitting", ["--batch-sizes", "1024", "0"], "argument --batch-sizes: expected an integer ≥ 1, got 0"),
    ("fitting", ["--processes", "-1"], "argument --processes: expected an integer ≥ 1, got -1"),
    ("fitting", ["--output-dir", "pyproject.toml"], "argument --output-dir: 'pyproject.toml' exists and is not a"),
    ("simulation", ["--events", "0"], "argument --events: expected an integer ≥ 1, got 0"),
    ("simulation", ["--pileups", "-5"], "argument --pileups: expected a finite number ≥ 0, got -5"),
    ("remote_overhead", ["--threads", "-1"], "argument --threads: expected an integer ≥ 0, got -1"),
    ("serving", ["--seconds", "0"], "argument --seconds: expected a finite number > 0, got 0"),
    ("interface_overhead", ["--small-calls", "0"], "argument --small-calls: expected an integer ≥ 1, got 0"),
    ("dask_scaling", ["--rounds", "0"], "argument --rounds: expected an integer ≥ 1, got 0"),
    ("finding", ["--job-events", "0"], "argument --job-events: expected an integer ≥ 1, got 0"),
    ("job_throughput", ["--trackml", "nowhere"], "argument --trackml: real TrackML data 'nowhere' does not exist"),
    ("detector_comparison", ["--real", "README.md"], "argument --real: real TrackML data 'README.md' is not a"),
    ("fit_validation", ["--field-map", "nowhere.csv"], "argument --field-map: field map 'nowhere.csv' does not exist"),
    ("physics_validation", ["--gnn-cut", "2"], "argument --gnn-cut: expected a number from 0 to 1, got 2"),
    ("physics_validation", ["--model-dir", "nowhere"], "argument --model-dir: model directory 'nowhere' does not"),
    ("physics_validation", ["--max-weak-triplet-cost", "0"], "'max_weak_triplet_cost' must be > 0"),
    ("physics_validation", ["--output", "../x"], "--output '../x': expected a plain name"),
]


def test_every_benchmark_script_refuses_a_bad_argument_before_any_work():
    """All in one process (each ``main`` stops in its parser, so none measures anything): exit status 2 and the
    error naming the argument."""
    code = (
        "import contextlib, importlib, io, json, sys\n"
        f"sys.path.insert(0, {str(BENCHMARKS)!r})\n"
        f"for name, argv, _ in {BAD_ARGUMENTS!r}:\n"
        "    error = io.StringIO()\n"
        "    try:\n"
        "        with contextlib.redirect_stderr(error):\n"
        "            importlib.import_module(name).main(argv)\n"
        "    except SystemExit as stop:\n"
        "        print(json.dumps([name, argv, stop.code, error.getvalue()]))\n"
        "    else:\n"
        "        print(json.dumps([name, argv, 'ran', error.getvalue()]))\n"
    )
    done = _python("-c", code, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(found) == len(BAD_ARGUMENTS)
    for (name, argv, code_, error), (_, _, expected) in zip(found, BAD_ARGUMENTS, strict=True):
        assert code_ == 2, (name, argv, code_, error[-500:])
        assert expected in error, (name, argv, error)
        assert "Traceback" not in error, (name, argv, error)


def test_results_holding_a_nan_are_not_written(tmp_path):
    """``write_results`` refuses a figure that is NaN or infinite, naming it, and leaves the results there as they
    were; finite ones are written."""
    code = (
        "import math, sys\n"
        f"sys.path.insert(0, {str(BENCHMARKS)!r})\n"
        "from pathlib import Path\n"
        "from bench_common import write_results\n"
        f"out = Path({str(tmp_path)!r})\n"
        "write_results('demo', {'results': [{'rate': 1.5}]}, 'table\\n', out)\n"
        "try:\n"
        "    write_results('demo', {'results': [{'rate': math.nan}]}, 'nan table\\n', out)\n"
        "except ValueError as error:\n"
        "    print(error)\n"
    )
    done = _python("-c", code, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("demo: results[0].rate is not a finite number"), done.stdout
    assert json.loads((tmp_path / "demo.json").read_text())["results"] == [{"rate": 1.5}]
    assert (tmp_path / "demo.md").read_text() == "table\n"


def test_a_benchmark_script_stopped_exits_quietly_with_status_3():
    """SIGTERM (what ``trkx bench`` passes on for Ctrl-C, to the script's process group) or SIGINT (Ctrl-C) while a
    script measures with worker processes (``benchmarks/fitting.py``'s pool): status 3 and no traceback, neither the
    script's (``bench_common.run_script``) nor its workers' (``bench_common.start_worker_quietly``: a forked worker
    used to raise the script's ``KeyboardInterrupt`` with a traceback of its own)."""
    import signal

    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(BENCHMARKS)!r})\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from bench_common import run_script, start_worker_quietly\n"
        "from tracking_algs.worker_lifetime import sigint_blocked\n"
        "def main():\n"
        "    with ProcessPoolExecutor(2, initializer=start_worker_quietly) as pool:\n"
        "        with sigint_blocked():  # forked, the workers all start with the first task\n"
        "            waiting = [pool.submit(time.sleep, 0.5) for _ in range(2)]\n"
        "        [future.result() for future in waiting]\n"
        "        print('started', flush=True)\n"
        "        time.sleep(60)\n"
        "    return 0\n"
        "run_script(main)\n"
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        with subprocess.Popen([sys.executable, "-u", "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as process:  # fmt: skip
            assert process.stdout.readline() == "started\n"
            os.killpg(process.pid, signum)
            _, err = process.communicate(timeout=60)
        assert process.returncode == 3, (signum, err)
        assert err == "", (signum, err)
