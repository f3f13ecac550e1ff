"""``trkx run`` on Dask distributed: a real scheduler and real worker processes on loopback, jobs run through the
command line, outputs compared with a local run's (the reproducibility contract, :mod:`job_outputs`).

Faults are set off by the job itself at a given event (:mod:`interrupted_job`): a worker that kills itself as it
starts an event (the first time only), a client killed by the worker that loads an event, a Triton server of the
farm killed by it. Nothing is timed: each test waits on definite events (a job's exit, workers registered, a process
reaped) and asserts on the outputs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster
from distributed.utils import LoopRunner, sync
from job_outputs import assert_same_results
from triton_helpers import model_counts, processes_mentioning, wait_exited

from backends.triton_server import TritonServer, TritonServerConfig, free_port
from tracking_algs.cli import main
from tracking_algs.commands.run import EXIT_EVENTS_FAILED, EXIT_STOPPED
from tracking_algs.job.dask_logs import LOOP_CALLBACK_LOGGER, InterruptedCallFilter, filtered
from tracking_algs.simd import VARIABLE

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "local_onnx.toml"
REMOTE = ROOT / "configs" / "remote_triton.toml"
EVENTS = 4
SETS = ["--set=simulation.pileup=5", "--set=job.seed=2000000"]
INTERRUPTED = [sys.executable, str(ROOT / "tests" / "interrupted_job.py")]


def _job(config: Path, output: Path, *args: str) -> list[str]:
    return ["run", str(config), "--simulate", str(EVENTS), "--output", str(output), "--no-progress", *SETS, *args]


def _performance(output: Path) -> dict:
    return json.loads((output / "performance.json").read_text())


def _interrupted(kill_at: str, pid: str, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """``trkx run argv`` in its own process, with the kill of :mod:`interrupted_job`."""
    command = [*INTERRUPTED, kill_at, pid, *argv]
    return subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
                          env=os.environ | env)  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A scheduler and two worker processes (one thread each) on loopback, as a cluster outside the job."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as running:  # fmt: skip
        yield running


@pytest.fixture(scope="module")
def local_job(tmp_path_factory) -> Path:
    """The reference: the same job in this process, without Dask."""
    output = tmp_path_factory.mktemp("local")
    assert main(_job(CONFIG, output)) == 0
    return output


def _worker_pids(cluster: LocalCluster) -> set[int]:
    """The processes of the cluster's workers now."""
    with Client(cluster) as client:
        return set(client.run(os.getpid).values())


def _worker_plugins(cluster: LocalCluster) -> list[str]:
    """The job plugins on the cluster's workers now (a killed client's stay until its job resumes there)."""
    with Client(cluster) as client:
        plugins = client.run(lambda dask_worker: list(dask_worker.plugins))
    return sorted(name for names in plugins.values() for name in names if name.startswith("trkx-job-"))


def test_a_job_on_a_dask_scheduler_writes_the_local_results(cluster, local_job, tmp_path):
    output, before = tmp_path / "dask", _worker_plugins(cluster)
    assert main(_job(CONFIG, output, "--scheduler", cluster.scheduler_address)) == 0
    assert _performance(output)["events"] == list(range(EVENTS))
    assert_same_results(output, local_job)
    assert _worker_plugins(cluster) == before, "the job left its plugin (and processors) on the workers"


def test_executor_dask_without_a_scheduler_starts_a_local_cluster(local_job, tmp_path, capsys):
    output = tmp_path / "own_cluster"
    assert main(_job(CONFIG, output, "--set=job.executor=dask", "--jobs", "2")) == 0
    dashboard = [line for line in capsys.readouterr().err.splitlines() if "dashboard" in line]
    assert len(dashboard) == 1
    assert dashboard[0].startswith("trkx run: Dask dashboard at http://127.0.0.1:")
    assert_same_results(output, local_job)


def test_ctrl_c_stops_a_job_on_its_own_cluster_cleanly_and_it_resumes(local_job, tmp_path):
    """Ctrl-C (SIGINT to the process group: the job, its ``LocalCluster``'s nannies and workers) as a worker loads
    event 2: the workers leave the interrupt to the job, which stops with status 3, one line and no traceback from any
    process, keeping what it finished; ``--resume`` completes the job with the local results."""
    output = tmp_path / "interrupted"
    argv = _job(CONFIG, output, "--set=job.executor=dask", "--jobs", "2")
    command = [*INTERRUPTED, "2", "group/INT", *argv]
    stopped = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
                             start_new_session=True, timeout=600)  # fmt: skip
    assert stopped.returncode == EXIT_STOPPED, stopped.stderr
    lines = stopped.stderr.splitlines()  # the job's own lines only: no worker warns of the event it was running
    assert [line for line in lines if not line.startswith("trkx run: ")] == [], stopped.stderr
    assert "stopped early: interrupted" in lines[-1]
    assert set(_performance(output)["events"]) < set(range(EVENTS))
    assert main(_job(CONFIG, output, "--resume")) == 0
    assert_same_results(output, local_job)


def test_the_job_leaves_out_the_traceback_of_an_interrupted_client_call(caplog):
    """Ctrl-C as a Dask client call waits for the client's event loop, before the loop has started the call: Dask's
    cancelling of the call fails (a ``NameError`` in a loop callback, which Tornado logs with its traceback). Under
    the job's filter that record is left out; the interrupt still reaches the caller."""
    runner = LoopRunner(asynchronous=False)
    runner.start()

    async def answer() -> int:
        return 42

    def interrupted_call() -> list[logging.LogRecord]:
        caplog.clear()
        runner.loop.add_callback(time.sleep, 0.5)  # the loop is busy: the call's coroutine waits for it
        main = threading.main_thread().ident  # a signal, as Ctrl-C sends: it breaks the wait on Dask's loop
        threading.Timer(0.1, signal.pthread_kill, (main, signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            sync(runner.loop, answer)
        assert sync(runner.loop, answer) == 42  # after the cancelling callback: the loop runs on
        return [record for record in caplog.records if record.name == LOOP_CALLBACK_LOGGER]

    try:
        with caplog.at_level(logging.ERROR, logger=LOOP_CALLBACK_LOGGER):
            unfiltered = interrupted_call()
            with filtered(LOOP_CALLBACK_LOGGER, InterruptedCallFilter()):
                assert interrupted_call() == []
    finally:
        runner.stop()
    # Dask's failure itself, without the filter (when a Dask release binds the future first, the filter can go)
    assert [type(record.exc_info[1]) for record in unfiltered if record.exc_info] == [NameError]


def test_a_worker_killed_mid_event_loses_no_event_and_repeats_none(cluster, local_job, tmp_path):
    """The worker that starts event 2 kills itself (SIGKILL) the first time: the scheduler gives the event to a
    worker again, and every event is in the results once."""
    output, marker = tmp_path / "worker_killed", tmp_path / "killed"
    before = _worker_pids(cluster)
    job = _interrupted(f"2:{marker}", "0", _job(CONFIG, output, "--scheduler", cluster.scheduler_address))
    assert job.returncode == 0, job.stderr
    killed = int(marker.read_text())
    assert killed in before
    assert killed not in _worker_pids(cluster)
    performance = _performance(output)
    assert performance["events"] == list(range(EVENTS))
    assert performance["failed_events"] == []
    assert_same_results(output, local_job)  # tracks.csv byte for byte: each event's hits once


@pytest.mark.parametrize("resume", ["dask", "local"])
def test_a_killed_client_resumes_to_the_local_results(cluster, local_job, tmp_path, resume):
    """The worker that loads event 2 kills the client (``trkx run``): the events it saved stay, event 2 is not among
    them, and ``--resume``, on the same scheduler or locally, completes the job with the local results."""
    output = tmp_path / "client_killed"
    job = _interrupted("2", "client", _job(CONFIG, output, "--scheduler", cluster.scheduler_address))
    assert job.returncode == -signal.SIGKILL, job.stderr
    saved = {path.name for path in (output / "events").glob("*.npz")}
    assert "event000000002.npz" not in saved
    assert not (output / "tracks.csv").exists()
    again = ["--resume", "--scheduler", cluster.scheduler_address] if resume == "dask" else ["--resume"]
    assert main(_job(CONFIG, output, *again)) == 0
    assert_same_results(output, local_job)


def test_an_event_that_kills_every_worker_is_recorded_once_as_failed(local_job, tmp_path):
    """With no second chance for a task whose worker died (``allowed-failures`` 0), event 1 kills its worker every
    time: it is recorded as failed (stage ``worker``), as is any event that was waiting on that worker, each once;
    the others finish (exit status 4), and ``--resume`` completes the job with the local results."""
    output = tmp_path / "poison"
    argv = _job(CONFIG, output, "--set=job.executor=dask", "--jobs", "2")
    job = _interrupted("1", "0", argv, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES="0")
    assert job.returncode == EXIT_EVENTS_FAILED, job.stderr
    performance = _performance(output)
    failed = [failure["event_id"] for failure in performance["failed_events"]]
    assert 1 in failed
    assert {failure["stage"] for failure in performance["failed_events"]} == {"worker"}
    assert sorted(performance["events"] + failed) == list(range(EVENTS))
    assert main(_job(CONFIG, output, "--resume")) == 0
    assert_same_results(output, local_job)


def test_a_backend_that_does_not_answer_stops_the_job_resumably(cluster, tmp_path, capsys):
    """No server at the configured address: as with a local run, exit status 3 and the failure recorded once."""
    output, before = tmp_path / "no_server", _worker_plugins(cluster)
    unreachable = ["--set=inference.triton.url=127.0.0.1:1", "--set=inference.triton.connect_timeout_s=1",
                   "--set=inference.triton.timeout_s=2"]  # fmt: skip
    assert main(_job(REMOTE, output, "--scheduler", cluster.scheduler_address, *unreachable)) == 3
    assert "--resume" in capsys.readouterr().err
    performance = _performance(output)
    assert performance["events"] == []
    (failure,) = performance["failed_events"]
    assert failure["stage"] == "backend"
    assert "BackendUnavailableError" in failure["error"]
    assert _worker_plugins(cluster) == before


@pytest.fixture(scope="module")
def tracking_repository(tmp_path_factory) -> Path:
    repository = tmp_path_factory.mktemp("tracking_repository")
    assert main(["repo", "add-tracking", "--repository", str(repository), "--serving", "models", "--threads", "1"]) == 0
    return repository


@pytest.mark.server
def test_a_job_on_a_triton_farm_survives_a_killed_server(cluster, local_job, tracking_repository, tmp_path):
    """Two servers, used round-robin by every worker's backend; the worker that loads event 2 kills the first
    server (SIGKILL to its process group): the calls fail over to the second, and the job completes."""
    servers = [TritonServer(TritonServerConfig(repository=str(tracking_repository))).start() for _ in range(2)]
    try:
        urls = ", ".join(f'"{server.grpc_url}"' for server in servers)
        farm = [
            "--set=inference.triton.url=",
            f"--set=inference.triton.urls=[{urls}]",
            "--set=inference.triton.retries=4",
        ]
        output = tmp_path / "farm"
        argv = _job(REMOTE, output, "--scheduler", cluster.scheduler_address, *farm)
        stubs = processes_mentioning(str(tracking_repository))
        job = _interrupted("2", str(-servers[0].process.pid), argv)
        assert job.returncode == 0, job.stderr
        assert not servers[0].is_alive()
        assert model_counts(servers[1].grpc_url, "gnn")["success"] >= 1
    finally:
        for server in servers:
            server.stop()
    wait_exited(stubs)
    assert _performance(output)["events"] == list(range(EVENTS))
    assert_same_results(output, local_job)


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1:8786", "no tcp:// in front"),
        ("http://127.0.0.1:8786", "the scheme must be tcp"),
        ("tcp://127.0.0.1", "no port"),
        ("tcp://127.0.0.1:99999", "out of range"),
        ("tcp://127.0.0.1:8786/path", "nothing may follow the port"),
        ("tcp://bad_host:8786", "bad host 'bad_host'"),
    ],
)
def test_a_bad_scheduler_address_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, address, problem):
    output = tmp_path / "out"
    assert main(_job(CONFIG, output, "--scheduler", address)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("trkx run: error: argument --scheduler: expected a Dask scheduler address tcp://")
    assert problem in lines[0]
    assert not output.exists()


@pytest.mark.parametrize(
    ("sets", "problem"),
    [
        (
            ["job.executor=dask", "job.scheduler=tcp://h"],
            "--set job.scheduler=tcp://h: [job] scheduler: expected a Dask",
        ),
        (["job.scheduler=tcp://127.0.0.1:8786"], "executor = 'local'; set executor = \"dask\""),
        (["job.executor=spark"], "--set job.executor=spark: expected one of 'local', 'dask', got 'spark'"),
    ],
)
def test_bad_executor_options_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, sets, problem):
    output = tmp_path / "out"
    assert main(_job(CONFIG, output, *[f"--set={item}" for item in sets])) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert problem in lines[0]
    assert not output.exists()


def test_a_scheduler_that_does_not_answer_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    output, address = tmp_path / "out", f"tcp://127.0.0.1:{free_port()}"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(_job(CONFIG, output, "--scheduler", address)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"trkx run: error: cannot reach the Dask scheduler at {address}")
    assert not output.exists()


def test_a_worker_whose_numpy_was_loaded_otherwise_is_refused(tmp_path, capsys):
    """A ``dask worker`` started without numpy's kernel setting (numpy loaded before ``tracking_algs``): the job
    refuses to start (exit status 2, one line naming the setting to give the workers), and writes nothing."""
    environment = {key: value for key, value in os.environ.items() if key != VARIABLE}
    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address="127.0.0.1:0") as scheduler:
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", scheduler.scheduler_address,
                                   "--no-nanny", "--nthreads", "1", "--no-dashboard"], env=environment,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            with Client(scheduler) as client:
                client.wait_for_workers(1, timeout=120)
            output = tmp_path / "out"
            assert main(_job(CONFIG, output, "--scheduler", scheduler.scheduler_address)) == 2
        finally:
            worker.kill()
            worker.wait()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert f'start the workers with {VARIABLE}="{os.environ[VARIABLE]}"' in lines[0]
    assert not output.exists()


def test_without_dask_installed_the_job_names_the_extra(tmp_path):
    """Dask's import fails as in an install without the extra: one line naming it, exit status 2, nothing written."""
    output = tmp_path / "out"
    code = (
        "import sys, tracking_algs\n"
        "sys.modules['distributed'] = None  # what an install without Dask distributed gives: ModuleNotFoundError\n"
        "from tracking_algs.cli import main\n"
        f"sys.exit(main({_job(CONFIG, output, '--set=job.executor=dask')!r}))"
    )
    job = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert job.returncode == 2, job.stderr
    (line,) = job.stderr.strip().splitlines()
    assert line.startswith('trkx run: error: [job] executor = "dask" needs Dask distributed')
    assert line.endswith("pip install 'inference-iface[dask]'")
    assert not output.exists()
