"""The job on Dask distributed (``[job] executor = "dask"``): every event a task, run by Dask workers on this machine
or across a cluster, and every outcome saved by the client (``trkx run``) as its future completes.

The job registers a worker plugin, :class:`JobPlugin`, which carries the job options and the event source to every
worker (workers that join later included) and keeps one :class:`LazyProcessor` per worker thread: a worker builds
its processor once, with its first event, and the job's end (or the worker's) closes it. A task reads its event
from the shared input (the workers must see ``--input`` at the same path; a simulated event is simulated where it
runs) and returns the :class:`EventResult` or :class:`EventFailure` that a local run would save.

The workers get the options and the source with their relative paths (``--input``, ``[finding] model_dir``, model and
certificate files, ...) made absolute against the client's working directory, so that a worker started elsewhere reads
the files the client checked.

A worker that dies mid-event does not lose the event: the scheduler runs the dead worker's tasks on other workers.
An event whose task has killed every worker that ran it (``distributed.scheduler.allowed-failures`` + 1 of them) is
recorded as failed, with stage ``"worker"``. A scheduler that has no worker for ``trkx.no-workers-timeout`` (Dask
configuration, 60 s by default) stops the job: before any event, as a setup error (nothing written); during the job,
with :class:`~tracking_algs.job.dask_setup.DaskClusterLost`, as does a scheduler the client loses (resumable).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import attrs
import dask.config
from dask.utils import parse_timedelta
from distributed import Client, Future, KilledWorker, LocalCluster, Worker, WorkerPlugin, as_completed, get_worker
from distributed.comm import connect
from tqdm import tqdm

from tracking_algs.cores import pin_to_share
from tracking_algs.errors import JobSetupError
from tracking_algs.job import dask_worker_start
from tracking_algs.job.dask_logs import (
    CLIENT_LOGGER,
    LOOP_CALLBACK_LOGGER,
    ClientLogFilter,
    InterruptedCallFilter,
    filtered,
)
from tracking_algs.job.dask_setup import DaskClusterLost
from tracking_algs.job.outcome import LazyProcessor, Outcome
from tracking_algs.job.sources import DirectorySource, EventSource
from tracking_algs.job.store import EventFailure
from tracking_algs.job_options import JobOptions
from tracking_algs.simd import VARIABLE

#: The Dask configuration key of how long a job waits while its scheduler has no worker: for the first one before any
#: event (then the job stops as a setup error, exit status 2), and for one to come back when all are lost (then it
#: stops early, exit status 3). A time (``"60s"``, ``"10 minutes"``, seconds as a number) or None (for ever); from
#: the environment, ``DASK_TRKX__NO_WORKERS_TIMEOUT``.
NO_WORKERS_TIMEOUT = "trkx.no-workers-timeout"
#: Its default.
DEFAULT_NO_WORKERS_TIMEOUT = "60s"
#: Seconds between two looks at the scheduler's workers while the job runs.
WATCH_INTERVAL_S = 1.0


def dask_outcomes(
    options: JobOptions, source: EventSource, event_ids: list[int], workers: int, directory: Path
) -> Iterator[Outcome]:
    """The outcome of every event in ``event_ids``, in the order they finish, computed on the Dask scheduler of
    ``options.job.scheduler`` (empty: a ``LocalCluster`` of ``workers`` processes, one thread each, on loopback).

    Unfinished tasks are cancelled when the caller stops early; the job's plugin leaves the workers at the end.

    Raises:
        JobSetupError: the scheduler cannot be reached, or has no worker within ``trkx.no-workers-timeout``; a
            worker runs numpy otherwise than this process.
        DaskClusterLost: the scheduler was lost, or has had no worker for ``trkx.no-workers-timeout``.
        Exception: what a task raised while building its processor (a model that cannot be loaded, ...).
    """
    timeout = _no_workers_timeout()
    token = _job_token(options, source, directory)
    options, source = _anchored(options, source, Path.cwd())
    with _client(options.job.scheduler, workers) as (client, own_cluster):
        address = client.scheduler.address
        name = f"trkx-job-{token}"
        plugin = JobPlugin(options, source, os.environ.get(VARIABLE), workers if own_cluster else 0)
        pending: dict[Future, int] = {}
        watch = _WorkerWatch(client, address, timeout, pending)
        _wait_for_a_worker(client, address, timeout)
        try:
            client.register_plugin(plugin, name=name)  # raises the setup error of a worker running numpy otherwise
            if "dashboard" in client.scheduler_info().get("services", {}):
                tqdm.write(f"trkx run: Dask dashboard at {client.dashboard_link}", file=sys.stderr)
            with watch.lock:
                for event_id in event_ids:
                    key = f"trkx-event-{token}-{event_id:09d}"
                    pending[client.submit(_run_event, name, event_id, key=key, pure=False)] = event_id
            watch.start()
            for future in as_completed(list(pending)):
                outcome = _outcome(future, pending[future], address, watch)  # pending: the watch may cancel it
                with watch.lock:
                    del pending[future]
                future.release()
                yield outcome
        finally:
            watch.stop()
            if client.status == "running":  # not after a lost scheduler: each call would wait to reconnect
                if pending:
                    client.cancel(list(pending))
                # KeyError: a worker that lost the plugin (restarted); ValueError: a scheduler that did
                with contextlib.suppress(OSError, TimeoutError, KeyError, ValueError):
                    client.unregister_worker_plugin(name)


def _no_workers_timeout() -> float | None:
    """``trkx.no-workers-timeout`` in seconds (None: for ever).

    Raises:
        JobSetupError: the setting is not a time.
    """
    value = dask.config.get(NO_WORKERS_TIMEOUT, DEFAULT_NO_WORKERS_TIMEOUT)
    if value is None:
        return None
    try:
        seconds = parse_timedelta(value, "s")
    except (ValueError, KeyError, TypeError, AttributeError):
        seconds = None
    if seconds is None or not seconds > 0:
        raise JobSetupError(
            f"Dask setting {NO_WORKERS_TIMEOUT} (DASK_TRKX__NO_WORKERS_TIMEOUT): expected a time such as '60s' or "
            f"'10 minutes', or None to wait for ever, got {value!r}"
        )
    return float(seconds)


def _anchored(options: JobOptions, source: EventSource, cwd: Path) -> tuple[JobOptions, EventSource]:
    """``options`` and ``source`` with the relative paths they name made absolute against ``cwd``
    (:meth:`JobOptions.anchored`): what the workers get, since a worker resolves a path against its own working
    directory."""
    if isinstance(source, DirectorySource) and not source.directory.is_absolute():
        source = attrs.evolve(source, directory=cwd / source.directory)
    return options.anchored(cwd), source


@contextlib.contextmanager
def _client(scheduler: str, workers: int) -> Iterator[tuple[Client, bool]]:
    """A client of the scheduler at ``scheduler``, or of a new ``LocalCluster`` (closed at the end); and whether the
    cluster is the job's own. Dask's log leaves out what the job reports itself (:mod:`tracking_algs.job.dask_logs`)."""
    with filtered(LOOP_CALLBACK_LOGGER, InterruptedCallFilter()):
        if scheduler:
            _check_answers(scheduler)
            try:
                client = Client(scheduler)
            except (OSError, TimeoutError) as error:
                raise JobSetupError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from None
            with filtered(CLIENT_LOGGER, ClientLogFilter(client)), client:
                yield client, False
            return
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address="127.0.0.1:0", preload=[dask_worker_start.__name__])  # fmt: skip
        with cluster, Client(cluster) as client:
            yield client, True


def _check_answers(address: str) -> None:
    """Raises :class:`JobSetupError` unless a Dask server answers at ``address``: one that connects within Dask's
    connect timeout (``distributed.comm.timeouts.connect``) and gives Dask's handshake within as long again. Dask's
    own client would wait for ever on a server that accepts the connection and never answers, and fail with a
    traceback on one that answers in another protocol."""
    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), "s")

    async def handshake() -> None:
        comm = await connect(address, timeout=timeout)  # OSError after ``timeout`` without a connection
        comm.abort()

    problem = f"cannot reach the Dask scheduler at {address}"
    try:
        _in_a_thread(lambda: asyncio.run(asyncio.wait_for(handshake(), 2 * timeout)))
    except (TimeoutError, asyncio.TimeoutError):  # connected, but no handshake (the two differ on Python 3.10)
        raise JobSetupError(
            f"{problem}: a server there took the connection but gave no Dask handshake within {2 * timeout:g} s; is "
            "it a Dask scheduler's address?"
        ) from None
    except OSError as error:
        raise JobSetupError(f"{problem}: {error}") from None
    except Exception as error:  # what a server that is not Dask's sends breaks Dask's reader anywhere
        raise JobSetupError(
            f"{problem}: the server there does not speak Dask's protocol ({type(error).__name__}); is it a Dask "
            "scheduler's address?"
        ) from None


def _in_a_thread(call: Callable[[], object]) -> None:
    """``call()`` in a thread of its own (it may run an event loop where the caller's thread runs one), re-raising
    what it raised; the thread is a daemon, so that Ctrl-C ends the wait and does not wait for the thread."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:  # handed to the caller
            raised.append(error)

    thread = threading.Thread(target=run, name="trkx-dask-handshake", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)  # a bounded join: Ctrl-C is taken between two
    if raised:
        raise raised[0]


def _wait_for_a_worker(client: Client, address: str, timeout: float | None) -> None:
    """Returns when the scheduler has a worker; says on stderr when it waits.

    Raises:
        JobSetupError: none joined within ``timeout`` seconds.
    """
    if client.nthreads():
        return
    within = "" if timeout is None else f" (up to {timeout:g} s, {NO_WORKERS_TIMEOUT})"
    tqdm.write(f"trkx run: waiting for a worker to join the Dask scheduler at {address}{within}", file=sys.stderr)
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, asyncio.TimeoutError):
        raise JobSetupError(
            f"the Dask scheduler at {address} has no worker: none joined within {timeout:g} s; start workers "
            f"(dask worker {address}), or wait longer with the Dask setting {NO_WORKERS_TIMEOUT} "
            "(DASK_TRKX__NO_WORKERS_TIMEOUT, docs/dask.md)"
        ) from None


class _WorkerWatch:
    """A thread that looks at the scheduler's workers every :data:`WATCH_INTERVAL_S` while the job runs: when it has
    had none for ``timeout`` seconds, it says why in :attr:`lost` and cancels the ``pending`` futures, which wakes the
    job up wherever it waits for them (a task waits on a scheduler without workers for ever)."""

    def __init__(self, client: Client, address: str, timeout: float | None, pending: Collection[Future]) -> None:
        self.client = client
        self.address = address
        self.timeout = timeout
        self.pending = pending
        #: held while ``pending`` changes
        self.lock = threading.Lock()
        #: why the futures were cancelled; empty while they were not
        self.lost = ""
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trkx-dask-worker-watch", daemon=True)

    def start(self) -> None:
        if self.timeout is not None:
            self._thread.start()

    def stop(self) -> None:
        """Stops the watch at once. A look at the scheduler in progress is not waited for: one that a lost or hung
        scheduler holds up waits for Dask's connect timeout (``distributed.comm.timeouts.connect``, 30 s by default),
        or until the client closes, and the watch then does nothing more."""
        self._stopped.set()

    def _run(self) -> None:
        assert self.timeout is not None
        since = None
        while not self._stopped.wait(WATCH_INTERVAL_S):
            if self.client.status != "running":  # the scheduler was lost: the client cancels the futures itself
                continue
            try:
                workers = len(self.client.nthreads())
            except (OSError, TimeoutError):
                continue
            if self._stopped.is_set():
                return
            if workers:
                since = None
                continue
            since = time.monotonic() if since is None else since
            if time.monotonic() - since >= self.timeout:
                self.lost = f"the Dask scheduler at {self.address} has had no worker for {self.timeout:g} s"
                with self.lock:
                    futures = list(self.pending)
                with contextlib.suppress(OSError, TimeoutError):
                    self.client.cancel(futures)
                return


def _job_token(options: JobOptions, source: EventSource, directory: Path) -> str:
    """A name for the job's tasks and plugin: the same for a resumed job, so that it replaces the plugin a killed
    client left on the workers of a cluster that outlived it."""
    described = {
        "options": options.to_dict(execution=False),
        "source": source.describe(),
        "out": str(directory.resolve()),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def _outcome(future: Future, event_id: int, address: str, watch: _WorkerWatch) -> Outcome:
    """The outcome the task of ``event_id`` returned; a failure record when its workers died.

    Raises:
        DaskClusterLost: the task was cancelled: the scheduler was lost, or had no worker for too long; or a worker
            that joined the running job refused the event (its numpy runs otherwise than the job's): the job stops,
            resumable once that worker is started as the message says.
    """
    try:
        if not future.cancelled():
            return future.result()
    except KilledWorker:
        return EventFailure(event_id, "worker", "KilledWorker: every Dask worker that ran the event died")
    except JobSetupError as error:  # only a worker that joined after the job's start raises it from a task
        raise DaskClusterLost(f"{error} (it joined the running job at event {event_id})") from None
    except Exception:
        if not future.cancelled():  # what the task raised
            raise
    # cancelled by the watch, or by the client as it lost the scheduler
    raise DaskClusterLost(watch.lost or f"lost the Dask scheduler at {address} before event {event_id} finished")


def _run_event(plugin_name: str, event_id: int) -> Outcome:
    """The task of one event, on a Dask worker: processed by this worker thread's processor."""
    plugin: JobPlugin = get_worker().plugins[plugin_name]
    return plugin.process(event_id)


class JobPlugin(WorkerPlugin):
    """One job on a Dask worker: its options and event source, and one processor per worker thread, built by the
    thread's first event and closed when the plugin leaves the worker.

    ``numpy_setting`` is the client's ``NPY_DISABLE_CPU_FEATURES`` (None: unset): a worker whose numpy was loaded
    with another setting could pick other CPU kernels and give other results, so it refuses the job
    (:mod:`tracking_algs.simd`). With ``pin_workers`` > 0 (the job's own ``LocalCluster`` of that many workers), the
    worker named ``i`` pins its event threads to its share of the cores, as the local worker pool does.
    """

    def __init__(self, options: JobOptions, source: EventSource, numpy_setting: str | None, pin_workers: int) -> None:
        self.options = options
        self.source = source
        self.numpy_setting = numpy_setting
        self.pin_workers = pin_workers

    def setup(self, worker: Worker) -> None:
        """Start on ``worker``; raises :class:`JobSetupError` when its numpy setting is not the client's."""
        self._processors: dict[int, LazyProcessor] = {}
        self._lock = threading.Lock()
        self._worker_name = worker.name
        self._problem = _numpy_problem(self.numpy_setting, worker.address)
        if self._problem:
            raise JobSetupError(self._problem)

    def process(self, event_id: int) -> Outcome:
        """Event ``event_id`` through this thread's processor."""
        if self._problem:  # a worker that joined later: its failed setup did not stop it
            raise JobSetupError(self._problem)
        thread = threading.get_ident()
        with self._lock:
            processor = self._processors.get(thread)
            if processor is None:
                if self.pin_workers and isinstance(self._worker_name, int):
                    pin_to_share(self._worker_name, self.pin_workers)  # this thread, and those its processor starts
                processor = self._processors[thread] = LazyProcessor(self.options)
        return processor.process(self.source, event_id)

    def teardown(self, worker: Worker) -> None:
        """Close every processor."""
        with self._lock:
            for processor in self._processors.values():
                processor.close()
            self._processors.clear()


def _numpy_problem(expected: str | None, worker: str) -> str:
    """Why numpy on this worker may compute otherwise than on the client, or ``""``."""
    actual = os.environ.get(VARIABLE)
    if actual == expected:
        return ""
    fix = f'{VARIABLE}="{expected}"' if expected is not None else f"no {VARIABLE}"
    return (
        f"Dask worker {worker} runs numpy with {VARIABLE}={actual!r}, this job with {expected!r}: its numpy may pick "
        f"other CPU kernels and give other results; start the workers with {fix} in their environment (docs/dask.md)"
    )
