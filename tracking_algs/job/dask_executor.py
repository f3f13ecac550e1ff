"""The job on Dask distributed (``[job] executor = "dask"``): every event a task, run by Dask workers on this machine
or across a cluster, and every outcome saved by the client (``trkx run``) as its future completes.

The job registers a worker plugin, :class:`JobPlugin`, which carries the job options and the event source to every
worker (workers that join later included) and keeps one :class:`LazyProcessor` per worker thread: a worker builds
its processor once, with its first event, and the job's end (or the worker's) closes it. A task reads its event
from the shared input (the workers must see ``--input`` at the same path; a simulated event is simulated where it
runs) and returns the :class:`EventResult` or :class:`EventFailure` that a local run would save.

A worker that dies mid-event does not lose the event: the scheduler runs the dead worker's tasks on other workers.
An event whose task has killed every worker that ran it (``distributed.scheduler.allowed-failures`` + 1 of them) is
recorded as failed, with stage ``"worker"``; a scheduler lost for good stops the job like a lost backend (resumable).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from distributed import Client, Future, KilledWorker, LocalCluster, Worker, WorkerPlugin, as_completed, get_worker
from tqdm import tqdm

from tracking_algs.cores import pin_to_share
from tracking_algs.errors import JobSetupError
from tracking_algs.job import dask_worker_start
from tracking_algs.job.outcome import LazyProcessor, Outcome
from tracking_algs.job.sources import EventSource
from tracking_algs.job.store import EventFailure
from tracking_algs.job_options import JobOptions
from tracking_algs.simd import VARIABLE


def dask_outcomes(
    options: JobOptions, source: EventSource, event_ids: list[int], workers: int, directory: Path
) -> Iterator[Outcome]:
    """The outcome of every event in ``event_ids``, in the order they finish, computed on the Dask scheduler of
    ``options.job.scheduler`` (empty: a ``LocalCluster`` of ``workers`` processes, one thread each, on loopback).

    Unfinished tasks are cancelled when the caller stops early; the job's plugin leaves the workers at the end.

    Raises:
        JobSetupError: the scheduler cannot be reached, or a worker runs numpy otherwise than this process.
        Exception: what a task raised while building its processor (a model that cannot be loaded, ...).
    """
    with _client(options.job.scheduler, workers) as (client, own_cluster):
        token = _job_token(options, source, directory)
        name = f"trkx-job-{token}"
        plugin = JobPlugin(options, source, os.environ.get(VARIABLE), workers if own_cluster else 0)
        pending: dict[Future, int] = {}
        try:
            client.register_plugin(plugin, name=name)  # raises the setup error of a worker running numpy otherwise
            if "dashboard" in client.scheduler_info().get("services", {}):
                tqdm.write(f"trkx run: Dask dashboard at {client.dashboard_link}", file=sys.stderr)
            for event_id in event_ids:
                future = client.submit(_run_event, name, event_id, key=f"trkx-event-{token}-{event_id:09d}", pure=False)
                pending[future] = event_id
            for future in as_completed(list(pending)):
                outcome = _outcome(future, pending.pop(future))
                future.release()
                yield outcome
        finally:
            if pending:
                client.cancel(list(pending))
            with contextlib.suppress(OSError, TimeoutError, KeyError):  # KeyError: a worker that lost it (restarted)
                client.unregister_worker_plugin(name)


@contextlib.contextmanager
def _client(scheduler: str, workers: int) -> Iterator[tuple[Client, bool]]:
    """A client of the scheduler at ``scheduler``, or of a new ``LocalCluster`` (closed at the end); and whether the
    cluster is the job's own."""
    if scheduler:
        try:
            client = Client(scheduler)
        except (OSError, TimeoutError) as error:
            raise JobSetupError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from None
        with client:
            yield client, False
        return
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0", preload=[dask_worker_start.__name__])  # fmt: skip
    with cluster, Client(cluster) as client:
        yield client, True


def _job_token(options: JobOptions, source: EventSource, directory: Path) -> str:
    """A name for the job's tasks and plugin: the same for a resumed job, so that it replaces the plugin a killed
    client left on the workers of a cluster that outlived it."""
    described = {
        "options": options.to_dict(execution=False),
        "source": source.describe(),
        "out": str(directory.resolve()),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def _outcome(future: Future, event_id: int) -> Outcome:
    """The outcome the task of ``event_id`` returned; a failure record when its workers died, or when the scheduler
    was lost (then the job stops, as with a lost backend)."""
    if future.cancelled():
        return EventFailure(event_id, "backend", "the Dask scheduler was lost before the event finished")
    try:
        return future.result()
    except KilledWorker:
        return EventFailure(event_id, "worker", "KilledWorker: every Dask worker that ran the event died")


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
