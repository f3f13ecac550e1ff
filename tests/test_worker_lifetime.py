"""Worker processes end with the process that started them: the fitter's worker pool and a job's workers (its own
pool, or a Dask ``LocalCluster``), their parent killed with SIGKILL (no clean-up), leave no process behind; a
fitter's pool started from a thread that has ended keeps its workers.  Real processes, found through /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from triton_helpers import is_running, wait_exited

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "local_onnx.toml"
SMALL = ["simulation.pileup=5", "job.seed=2000000"]

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")

#: a process that starts a fitter's two worker processes from a thread, lets the thread end, says so and waits
FIT_WORKERS_IN_A_THREAD = """
import threading, time
import tracking_algs
from tracking_algs.fitting import KalmanConfig, KalmanFitter
from tracking_algs.fitting.processes import FitWorkers
from tracking_algs.geometry import trackml_detector

pools = []
thread = threading.Thread(target=lambda: pools.append(
    FitWorkers(KalmanFitter(trackml_detector(), KalmanConfig(processes=1)), 2)))
thread.start()
thread.join()
print("started", flush=True)
time.sleep(600)
"""


def _processes(field: int, value: int) -> list[int]:
    """The running processes whose /proc stat field ``field`` after the command name (1: parent, 2: process group)
    is ``value``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split() if entry.name.isdigit() else None
        except OSError:  # ended meanwhile
            continue
        if fields is not None and int(fields[field]) == value and is_running(int(entry.name)):
            found.append(int(entry.name))
    return found


def _workers(parent: int) -> list[int]:
    """The worker processes ``parent`` started (its children but multiprocessing's resource tracker)."""
    return [pid for pid in _processes(1, parent)
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()]  # fmt: skip


def _assert_exited(pids: list[int]) -> None:
    """Wait (30 s at most) until every process in ``pids`` has exited; those that have not fail the test, killed
    first so that no stray process outlives it."""
    try:
        wait_exited(pids, timeout_s=30.0)
    except AssertionError:
        left = [pid for pid in pids if is_running(pid)]
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"processes left running: {commands}") from None


def test_fit_workers_end_with_their_process_whichever_thread_started_them():
    """Worker processes started from a thread that has ended keep running (Linux's ``PR_SET_PDEATHSIG`` would have
    killed them with that thread); SIGKILL to their process ends them too."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", FIT_WORKERS_IN_A_THREAD], stdout=subprocess.PIPE, text=True,
                               env=env)  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "started", "the process failed to start its workers"
        time.sleep(1.0)  # the starting thread has ended a while ago
        workers = _workers(process.pid)
        assert len(workers) == 2
        assert all(is_running(pid) for pid in workers)
    finally:
        process.kill()
        process.wait()
    _assert_exited(workers)


@pytest.mark.parametrize("executor", ["local", "dask"])
def test_job_workers_end_with_a_killed_job(tmp_path, executor):
    """SIGKILL to a ``--jobs 2`` job's own process, as a worker reaches its third event, leaves no process of the
    job behind: its workers (the local pool's, or those of the Dask ``LocalCluster`` it started) and
    multiprocessing's resource tracker end with it."""
    command = [sys.executable, str(ROOT / "tests" / "interrupted_job.py"), "2", "client", "run", str(CONFIG),
               "--simulate", "3", "--jobs", "2", "--output", str(tmp_path / "killed"), "--no-progress",
               f"--set=job.executor='{executor}'", *[f"--set={item}" for item in SMALL]]  # fmt: skip
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as errors:  # a file, not a pipe: a worker left behind would hold a pipe open
        job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, start_new_session=True)
        assert job.wait(timeout=600) == -signal.SIGKILL, stderr.read_text()
    _assert_exited(_processes(2, job.pid))  # the job's session: the processes it started
