"""``trkx run`` on a Dask cluster started by hand, as a user starts one: a ``dask scheduler`` process and ``dask
worker`` processes (with their nannies) on free loopback ports, each test with its own, killed with their process
groups at the end.

What a job does when the cluster is missing or breaks: no scheduler, a server that is not a scheduler, a scheduler
without workers (one line, exit status 2, nothing written, within ``trkx.no-workers-timeout``); a worker killed
mid-event (restarted by its nanny: nothing lost), every worker killed and the scheduler killed mid-job (one line,
exit status 3, the finished events kept, and ``--resume`` on a new cluster writes the local results). Workers
started in another directory than the job's get its relative paths made absolute. Faults are set off by the job
itself at a given event (:mod:`interrupted_job`); nothing is timed but the no-worker timeout the tests set short.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import dask
import pytest
from distributed import Client
from job_outputs import assert_same_results
from triton_helpers import wait_for

from backends.triton_server import free_port
from tracking_algs.cli import main
from tracking_algs.commands.run import EXIT_BAD_INPUT, EXIT_STOPPED
from tracking_algs.finding.model_dir import SHIPPED_DIR
from tracking_algs.job.dask_executor import NO_WORKERS_TIMEOUT, WATCH_INTERVAL_S, _anchored, _WorkerWatch
from tracking_algs.job.sources import DirectorySource
from tracking_algs.job_options import load_job_options
from tracking_algs.simd import VARIABLE

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "local_onnx.toml"
EVENTS = 4
SETS = ["--set=simulation.pileup=5", "--set=job.seed=2000000"]
INTERRUPTED = [sys.executable, str(ROOT / "tests" / "interrupted_job.py")]
DASK = str(Path(sys.executable).with_name("dask"))
#: The environment of the cluster's processes: numpy's kernels as the job's (:mod:`tracking_algs.simd`, set in this
#: process by conftest's import of tracking_algs), and this directory on the path, for :mod:`interrupted_job`.
ENVIRONMENT = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"), os.getenv("PYTHONPATH")]))}
#: How long the jobs of these tests wait while their scheduler has no worker.
NO_WORKERS_S = 3


def _job(output: Path | str, *args: str, source: tuple[str, ...] = ("--simulate", str(EVENTS))) -> list[str]:
    return ["run", str(CONFIG), *source, "--output", str(output), "--no-progress", *SETS, *args]


def _lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if not line.startswith("trkx run: Dask dashboard at")]


def _only_line(text: str) -> str:
    """The one line of ``text`` (as :func:`_lines` counts them); a failure shows the whole text."""
    lines = _lines(text)
    assert len(lines) == 1, text
    return lines[0]


class Cluster:
    """A ``dask scheduler`` process on a free loopback port, and the ``dask worker`` processes started on it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.processes: list[subprocess.Popen] = []
        port = self.address.rpartition(":")[2]
        self.scheduler = self._start(DASK, "scheduler", "--host", "127.0.0.1", "--port", port, "--dashboard-address",
                                     "127.0.0.1:0", cwd=directory)  # fmt: skip

    def _start(self, *command: str, cwd: Path, env: dict[str, str] = ENVIRONMENT) -> subprocess.Popen:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        self.processes.append(process)
        return process

    def start_workers(self, count: int, cwd: Path | None = None) -> subprocess.Popen:
        """``dask worker`` with ``count`` worker processes of one thread (nannies included) in ``cwd``; returns when
        the scheduler has that many workers more."""
        with Client(self.address) as client:
            before = len(client.nthreads())
            workers = self._start(DASK, "worker", self.address, "--nworkers", str(count), "--nthreads", "1",
                                  "--no-dashboard", cwd=cwd or self.directory)  # fmt: skip
            client.wait_for_workers(before + count, timeout=120)
        return workers

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    """A scheduler, no workers yet."""
    (tmp_path / "cluster").mkdir()
    running = Cluster(tmp_path / "cluster")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def local_job(tmp_path_factory) -> Path:
    """The reference: the same simulated job in this process, without Dask."""
    output = tmp_path_factory.mktemp("local")
    assert main(_job(output)) == 0
    return output


@pytest.fixture
def short_wait() -> Iterator[None]:
    """Jobs in this process wait :data:`NO_WORKERS_S` while their scheduler has no worker."""
    with dask.config.set({NO_WORKERS_TIMEOUT: f"{NO_WORKERS_S}s"}):
        yield


def _interrupted(kill_at: str, pid: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    """``trkx run argv`` in its own process, with the kill of :mod:`interrupted_job`, waiting
    :data:`NO_WORKERS_S` while the scheduler has no worker."""
    environment = os.environ | {"DASK_TRKX__NO_WORKERS_TIMEOUT": f"{NO_WORKERS_S}s"}
    return subprocess.run([*INTERRUPTED, kill_at, pid, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, check=False, env=environment, timeout=300)  # fmt: skip


def test_the_worker_watch_stops_at_once_while_a_hung_scheduler_holds_up_its_look(cluster):
    """The job's watch of the scheduler's workers, stopped while its look at the scheduler waits on one that does not
    answer (stopped here; a scheduler that died as the look began is the same wait, for Dask's connect timeout), does
    not hold up the job's end: a job that lost its scheduler stops at once."""
    cluster.start_workers(1)
    client = Client(cluster.address)
    watch = _WorkerWatch(client, cluster.address, timeout=60.0, pending=())
    try:
        watch.start()
        os.kill(cluster.scheduler.pid, signal.SIGSTOP)
        time.sleep(3 * WATCH_INTERVAL_S)  # the watch has begun a look, which waits
        started = time.monotonic()
        watch.stop()
        assert time.monotonic() - started < WATCH_INTERVAL_S
    finally:
        os.killpg(cluster.scheduler.pid, signal.SIGKILL)
        client.close()
    assert not watch.lost


def _saved(output: Path) -> set[int]:
    return {int(path.stem.removeprefix("event")) for path in (output / "events").glob("event*.npz")}


def test_a_scheduler_without_workers_is_one_line_exit_2_and_writes_nothing(cluster, short_wait, tmp_path, capsys):
    """The job waits for a worker (saying so), then gives up: it does not wait for ever on tasks no one runs."""
    output = tmp_path / "out"
    assert main(_job(output, "--scheduler", cluster.address)) == EXIT_BAD_INPUT
    waiting, error = _lines(capsys.readouterr().err)
    assert waiting == (f"trkx run: waiting for a worker to join the Dask scheduler at {cluster.address} (up to "
                       f"{NO_WORKERS_S} s, {NO_WORKERS_TIMEOUT})")  # fmt: skip
    assert error.startswith(f"trkx run: error: the Dask scheduler at {cluster.address} has no worker: none joined "
                            f"within {NO_WORKERS_S} s; start workers (dask worker {cluster.address})")  # fmt: skip
    assert not output.exists()


def test_a_bad_no_workers_timeout_is_one_line_exit_2(tmp_path, capsys):
    output = tmp_path / "out"
    with dask.config.set({NO_WORKERS_TIMEOUT: "ten minutes"}):
        assert main(_job(output, "--scheduler", f"tcp://127.0.0.1:{free_port()}")) == EXIT_BAD_INPUT
    line = _only_line(capsys.readouterr().err)
    assert line.startswith(f"trkx run: error: Dask setting {NO_WORKERS_TIMEOUT} (DASK_TRKX__NO_WORKERS_TIMEOUT): "
                           "expected a time")  # fmt: skip
    assert not output.exists()


@pytest.fixture(params=["silent", "http"])
def not_a_scheduler(request) -> Iterator[str]:
    """A loopback server that takes connections and never answers, or answers as an HTTP server."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)  # to look at ``done`` now and then: closing the socket would not end a waiting accept
    done = threading.Event()
    taken: list[socket.socket] = []

    def serve() -> None:
        while not done.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            taken.append(connection)
            if request.param == "http":
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        done.set()
        thread.join()
        server.close()
        for connection in taken:
            connection.close()


def test_a_server_that_is_not_a_scheduler_is_one_line_exit_2_and_writes_nothing(not_a_scheduler, tmp_path, capsys):
    """Dask's client alone would wait for ever on the silent server, and end with a traceback on the other."""
    output = tmp_path / "out"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(_job(output, "--scheduler", not_a_scheduler)) == EXIT_BAD_INPUT
    line = _only_line(capsys.readouterr().err)
    assert line.startswith(f"trkx run: error: cannot reach the Dask scheduler at {not_a_scheduler}: ")
    assert line.endswith("is it a Dask scheduler's address?")
    assert not output.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_relative_paths_reach_workers_started_elsewhere_and_the_results_are_the_local_ones(
    cluster, tmp_path, monkeypatch, workers
):
    """The job, run from its directory with ``--input``, ``--output`` and ``[finding] model_dir`` relative, on
    workers whose working directory is another (empty) one, writes the results of a local run."""
    client_dir, elsewhere = tmp_path / "client", tmp_path / "elsewhere"
    client_dir.mkdir()
    elsewhere.mkdir()
    assert main(["simulate", "--events", "3", "--pileup", "5", "--seed", "2000000", "--output",
                 str(client_dir / "events")]) == 0  # fmt: skip
    (client_dir / "models").mkdir()
    for model in SHIPPED_DIR.iterdir():
        (client_dir / "models" / model.name).write_bytes(model.read_bytes())
    relative = ("--input", "events")
    monkeypatch.chdir(client_dir)
    assert main(_job("local", "--set=finding.model_dir=models", source=relative)) == 0
    cluster.start_workers(workers, cwd=elsewhere)
    argv = _job("dask", "--set=finding.model_dir=models", "--scheduler", cluster.address, source=relative)
    assert main(argv) == 0
    assert sorted(_saved(client_dir / "dask")) == [0, 1, 2]
    assert_same_results(client_dir / "dask", client_dir / "local")
    assert not any(elsewhere.iterdir()), "a worker wrote into its working directory"


def test_the_workers_get_every_relative_path_made_absolute(tmp_path):
    """Every option naming a file or directory, and ``--input``: what a worker resolves against its own directory.
    (The options are built as they are, without the files: ``load_job_options`` would look for them.)"""
    loaded = load_job_options(CONFIG)
    triton = {"root_certificates": "ca.pem", "private_key": "key.pem", "certificate_chain": "chain.pem",
              "fallback_model_path": "fallback.onnx", "fallback_repository": "repository"}  # fmt: skip
    options = attrs.evolve(
        loaded,
        job=attrs.evolve(loaded.job, detector="detector.toml"),
        detector=attrs.evolve(loaded.detector, file="detectors.csv",
                              field=attrs.evolve(loaded.detector.field, kind="map", map_file="field.csv")),
        finding=attrs.evolve(loaded.finding, model_dir="models"),
        inference={**loaded.inference, "onnxruntime": {"model_path": "onnx/{stage}.onnx"}, "triton": triton},
        stages={"gnn": {"model_path": "gnn.onnx"}, "filter": {"model_path": "{model_dir}/other_filter.onnx"}},
    )  # fmt: skip
    anchored, source = _anchored(options, DirectorySource(Path("events"), None), tmp_path)
    assert source.directory == tmp_path / "events"
    assert anchored.job.detector == str(tmp_path / "detector.toml")
    assert anchored.detector.file == str(tmp_path / "detectors.csv")
    assert anchored.detector.field.map_file == str(tmp_path / "field.csv")
    assert anchored.finding.model_dir == str(tmp_path / "models")
    assert anchored.inference["onnxruntime"]["model_path"] == str(tmp_path / "onnx" / "{stage}.onnx")
    assert anchored.inference["triton"] == {key: str(tmp_path / name) for key, name in triton.items()}
    assert anchored.stages == {"gnn": {"model_path": str(tmp_path / "gnn.onnx")},
                               "filter": {"model_path": "{model_dir}/other_filter.onnx"}}  # fmt: skip
    assert anchored.to_dict()["simulation"] == options.to_dict()["simulation"]
    # absolute paths and the shipped models stay as they are
    unchanged, source = _anchored(loaded, DirectorySource(tmp_path, None), Path("/elsewhere"))
    assert unchanged == loaded
    assert source.directory == tmp_path


def test_a_worker_killed_mid_event_is_restarted_by_its_nanny_and_nothing_is_lost(cluster, local_job, tmp_path):
    """SIGKILL to the worker process that starts event 2 (the first time): its nanny starts another, which runs
    the event again; the job completes with every event once."""
    cluster.start_workers(1)
    output, marker = tmp_path / "worker_killed", tmp_path / "killed"
    job = _interrupted(f"2:{marker}", "0", _job(output, "--scheduler", cluster.address))
    assert job.returncode == 0, job.stderr
    assert marker.exists()
    assert "Traceback" not in job.stderr
    assert sorted(_saved(output)) == list(range(EVENTS))
    assert_same_results(output, local_job)


def test_every_worker_killed_stops_the_job_which_resumes_on_new_workers(cluster, local_job, tmp_path):
    """SIGKILL to the whole ``dask worker`` (nannies and workers) as event 2 starts: no worker is left to run the
    events, so the job stops after :data:`NO_WORKERS_S` with one line and exit status 3, keeping what it finished;
    ``--resume`` on new workers writes the local results."""
    workers = cluster.start_workers(2)
    output = tmp_path / "workers_killed"
    argv = _job(output, "--scheduler", cluster.address)
    job = _interrupted("2", str(-workers.pid), argv)
    assert job.returncode == EXIT_STOPPED, job.stderr
    line = _only_line(job.stderr)
    assert line.startswith(f"trkx run: stopped early: the Dask scheduler at {cluster.address} has had no worker for "
                           f"{NO_WORKERS_S} s; the finished events are kept in {output}")  # fmt: skip
    assert _saved(output) < set(range(EVENTS))
    cluster.start_workers(1)
    assert main([*argv, "--resume"]) == 0
    assert_same_results(output, local_job)


def test_a_worker_of_another_numpy_setting_that_joins_the_running_job_stops_it_resumably(cluster, local_job, tmp_path):
    """The job's workers are killed as event 2 starts, and a ``dask worker`` started without numpy's kernel setting
    takes their place: it refuses the events, so the job stops with exit status 3 and one line naming the setting to
    give it, keeping what it finished (the refusal at the job's start is exit status 2, before any work); ``--resume``
    on a worker started right writes the local results."""
    workers = cluster.start_workers(1)
    output = tmp_path / "late_worker"
    argv = _job(output, "--scheduler", cluster.address)
    environment = os.environ | {"DASK_TRKX__NO_WORKERS_TIMEOUT": "120s"}  # the job waits for the new worker
    job = subprocess.Popen([*INTERRUPTED, "2", str(-workers.pid), *argv], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, env=environment)  # fmt: skip
    try:
        workers.wait(timeout=300)  # killed by the job as event 2 starts
        otherwise = {key: value for key, value in ENVIRONMENT.items() if key != VARIABLE}
        late = cluster._start(DASK, "worker", cluster.address, "--nthreads", "1", "--no-dashboard",
                              cwd=cluster.directory, env=otherwise)  # fmt: skip
        _, stderr = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == EXIT_STOPPED, stderr
    line = _only_line(stderr)
    assert line.startswith("trkx run: stopped early: Dask worker tcp://"), line
    assert f'start the workers with {VARIABLE}="{os.environ[VARIABLE]}"' in line
    assert "(it joined the running job at event " in line
    assert f"the finished events are kept in {output}" in line
    assert _saved(output) < set(range(EVENTS))
    os.killpg(late.pid, signal.SIGKILL)
    late.wait()
    with Client(cluster.address) as client:  # the scheduler lets the killed worker go before another is counted
        wait_for(lambda: len(client.nthreads()), lambda count: count == 0, "the killed worker's departure")
    cluster.start_workers(1)
    assert main([*argv, "--resume"]) == 0
    assert_same_results(output, local_job)


def test_a_killed_scheduler_stops_the_job_which_resumes_on_a_new_cluster(cluster, local_job, tmp_path):
    """SIGKILL to the scheduler as event 2 starts: the client loses it and the job stops at once (it does not wait
    for Dask's reconnection) with one line and exit status 3, without Dask's tracebacks; ``--resume`` on a new
    cluster writes the local results."""
    cluster.start_workers(1)
    output = tmp_path / "scheduler_killed"
    job = _interrupted("2", str(cluster.scheduler.pid), _job(output, "--scheduler", cluster.address))
    assert job.returncode == EXIT_STOPPED, job.stderr
    line = _only_line(job.stderr)
    assert line.startswith(f"trkx run: stopped early: lost the Dask scheduler at {cluster.address} before event ")
    assert _saved(output) < set(range(EVENTS))
    cluster.stop()
    (tmp_path / "again").mkdir()
    again = Cluster(tmp_path / "again")
    try:
        again.start_workers(1)
        assert main(_job(output, "--scheduler", again.address, "--resume")) == 0
    finally:
        again.stop()
    assert_same_results(output, local_job)
