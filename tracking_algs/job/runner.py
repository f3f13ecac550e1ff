"""Running a job: events from a source, through the processor, into the result store.

Events run in this process (``jobs=1``), in worker processes (each building its own processor once), or, with
``[job] executor = "dask"``, as Dask tasks (:mod:`tracking_algs.job.dask_executor`). Whichever runs them, this
process saves each event's outcome as it arrives. A bad event (unreadable file, invalid input) is recorded and
skipped; a backend that stops answering ends the job after recording what finished, so ``--resume`` can continue it
later.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import attrs
from tqdm import tqdm

from tracking_algs.cores import pin_to_share
from tracking_algs.errors import os_error_text
from tracking_algs.job.dask_setup import DaskClusterLost, load_dask_executor
from tracking_algs.job.outcome import LazyProcessor, Outcome
from tracking_algs.job.semaphores import recorded, remove_those_of_a_dead_job
from tracking_algs.job.sources import EventSource
from tracking_algs.job.store import EventFailure, EventResult, ResultStore
from tracking_algs.job_options import JobOptions
from tracking_algs.worker_lifetime import end_with_parent, leave_interrupts_to_parent, sigint_blocked


@attrs.frozen
class JobSummary:
    """What a run did: events processed now, skipped as already done, and failed."""

    processed: tuple[int, ...]
    skipped: tuple[int, ...]
    failed: tuple[EventFailure, ...]
    stopped_by: str | None = None


def run_events(
    options: JobOptions,
    source: EventSource,
    store: ResultStore,
    jobs: int = 1,
    progress: bool = True,
) -> JobSummary:
    """Process every event of ``source`` not yet in ``store``; returns what happened.

    ``jobs`` is the number of worker processes (at most one per event to process): of the local pool, or of the Dask
    ``LocalCluster`` the job starts when ``[job] executor = "dask"`` names no scheduler. Each event is saved as soon
    as its outcome arrives. Raises nothing for bad events (they are recorded; the records of events ``source`` no
    longer holds are dropped). A backend error, an interrupt (``KeyboardInterrupt``), a worker process that dies, a
    lost Dask cluster and a fragment that cannot be written stop the loop, and are reported in
    ``JobSummary.stopped_by`` after the finished events are saved."""
    done = store.finished_ids()
    event_ids = source.event_ids()  # listed once: the job's events, whatever the input directory does meanwhile
    todo = [event_id for event_id in event_ids if event_id not in done]
    store.forget_failures_outside(event_ids)
    skipped = tuple(sorted(done & set(event_ids)))
    processed: list[int] = []
    failed: list[EventFailure] = []
    stopped_by = None
    bar = tqdm(total=len(todo), desc="events", unit="event", disable=not progress)
    workers = max(1, min(jobs, len(todo)))  # no more worker processes than events to give them
    try:
        for outcome in _outcomes(options, source, todo, workers, store.events_dir):
            bar.update()
            if isinstance(outcome, EventResult):
                store.save(outcome)
                processed.append(outcome.event_id)
            else:
                store.save_failure(outcome)
                failed.append(outcome)
                if outcome.stage == "backend":
                    stopped_by = f"a backend error at event {outcome.event_id}: {outcome.error}"
                    break
                bar.write(f"skipped event {outcome.event_id} ({outcome.stage}): {outcome.error}")
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM where the command turns it into one
        stopped_by = "interrupted"
    except BrokenProcessPool:
        stopped_by = "a worker process ended abruptly (killed, or out of memory)"
    except DaskClusterLost as error:  # its scheduler lost, or all its workers for too long
        stopped_by = str(error)
    except OSError as error:  # a fragment that cannot be written: a full disk, an output made read-only or removed
        stopped_by = f"cannot write the output ({os_error_text(error)})"
    finally:
        bar.close()
    return JobSummary(tuple(processed), skipped, tuple(failed), stopped_by)


def _outcomes(
    options: JobOptions, source: EventSource, event_ids: list[int], jobs: int, directory: Path
) -> Iterable[Outcome]:
    remove_those_of_a_dead_job(directory)  # a killed job's worker-pool semaphores, whatever runs this job's events
    if not event_ids:
        return
    if options.job.executor == "dask":
        yield from load_dask_executor().dask_outcomes(options, source, event_ids, jobs, directory)
        return
    if jobs <= 1:
        with LazyProcessor(options) as processor:
            for event_id in event_ids:
                yield processor.process(source, event_id)
        return
    with recorded(directory) as record:
        yield from _pool_outcomes(options, source, event_ids, jobs, record)


def _pool_outcomes(
    options: JobOptions, source: EventSource, event_ids: list[int], jobs: int, record: Callable[[], None]
) -> Iterable[Outcome]:
    context = multiprocessing.get_context("spawn")
    started = context.Value("i", 0)  # numbers the workers as they start, for their share of the cores
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_start_worker,
                                                initargs=(started, jobs)) as pool:  # fmt: skip
        with sigint_blocked():  # the workers start as the first events are given, and leave Ctrl-C to the job
            futures = [pool.submit(_work, options, source, event_id) for event_id in event_ids]
        record()
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


_worker_processor: LazyProcessor | None = None


def _start_worker(started, jobs: int) -> None:
    """Worker start-up: end with the job (a worker outliving a killed job would hold its memory, semaphores and
    cores; :func:`~tracking_algs.worker_lifetime.end_with_parent`), leave Ctrl-C to the job, and pin this worker to
    its share of the cores, so that its ONNX Runtime and KD-tree threads (one per usable core) do not compete with
    the other workers' for the same cores."""
    end_with_parent()
    leave_interrupts_to_parent()
    with started.get_lock():
        index = started.value
        started.value += 1
    pin_to_share(index, jobs)


def _work(options: JobOptions, source: EventSource, event_id: int) -> Outcome:
    """One event in a worker process, which builds its processor on its first event."""
    global _worker_processor
    if _worker_processor is None:
        _worker_processor = LazyProcessor(options)
    return _worker_processor.process(source, event_id)
