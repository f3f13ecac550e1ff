"""One event's tracks fitted in worker processes (``[fitting.kalman] processes``).

The batched fitter spends its time in many numpy calls on arrays of a few thousand rows: threads take turns at the
GIL between the calls and gain nothing, processes gain.  :class:`FitWorkers` holds a pool of worker processes
(started once, with the ``spawn`` method: the finder's inference sessions have threads of their own, which a fork
would copy mid-flight), each with its own copy of the fitter.  Each call deals the event's tracks out to the
workers, longest first and in turn, so that the shares cost alike; every worker fits its share of the candidates
in one call, and the shares' results are put back into track order
(:func:`~tracking_algs.fitting.results.combined`).  A track's fit does not depend on the other tracks of its batch,
so the result is the one the fitter gives in this process, bit for bit.

A worker ends with the process that started the pool, however that process ends
(:func:`~tracking_algs.worker_lifetime.end_with_parent`), whichever thread started the pool. Ctrl-C, which reaches the
workers with the job, ends a fit in progress at once and is ignored by a worker that waits or starts
(:func:`~tracking_algs.worker_lifetime.interrupt_tasks_only`): the job stops the workers itself.

A worker runs numpy single-threaded (``OMP_NUM_THREADS`` and its kin set to 1 for the workers, unless they are set
already): the idle threads of a BLAS pool spin after every call they serve, and with one pool per worker they take
the cores the other workers need.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from tracking_algs.errors import FittingError
from tracking_algs.event import Spacepoints, TrackCandidates
from tracking_algs.fitting.results import FitResults, combined
from tracking_algs.worker_lifetime import end_with_parent, interrupt_tasks_only, interruptible_task, sigint_blocked

if TYPE_CHECKING:
    from tracking_algs.fitting.kalman import KalmanFitter

#: the variables that size the thread pools of numpy's BLAS and OpenMP, set to 1 for the workers
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

#: the fitter of this worker process, set by :func:`_start_worker`
_WORKER_FITTER: list[KalmanFitter] = []


class WorkerStopped(FittingError):
    """A worker process died while it fitted (killed, out of memory): its pool cannot fit any more."""


def _start_worker(fitter: KalmanFitter) -> None:
    end_with_parent()  # a worker outliving its process (a killed job) would hold its memory for good
    interrupt_tasks_only()  # Ctrl-C, which reaches the workers with the job, ends a fit at once, and nothing else
    _WORKER_FITTER[:] = [fitter]


def _fit_share(spacepoints: Spacepoints, labels: np.ndarray, earlier: FitResults | None) -> FitResults:
    with interruptible_task():
        return _WORKER_FITTER[0].refit(spacepoints, TrackCandidates(labels), earlier)  # `fit` where earlier is None


def _started(_: int) -> int:
    return os.getpid()


@contextlib.contextmanager
def _single_threaded_children() -> Iterator[None]:
    """Within the block, processes started inherit :data:`THREAD_VARIABLES` = 1 (where this process sets none)."""
    added = [name for name in THREAD_VARIABLES if name not in os.environ]
    os.environ.update(dict.fromkeys(added, "1"))
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


class FitWorkers:
    """``processes`` worker processes, each fitting with a copy of ``fitter`` (which must fit in its own process:
    a :class:`~tracking_algs.fitting.kalman.KalmanFitter` with ``processes = 1``)."""

    def __init__(self, fitter: KalmanFitter, processes: int) -> None:
        if processes < 2:
            raise ValueError(f"FitWorkers needs at least 2 processes, got {processes}")
        self.processes = processes
        context = multiprocessing.get_context("spawn")
        self._pool = concurrent.futures.ProcessPoolExecutor(processes, mp_context=context, initializer=_start_worker,
                                                            initargs=(fitter,))  # fmt: skip
        with _single_threaded_children(), sigint_blocked():  # the workers start as the first tasks are given
            started = self._pool.map(_started, range(processes))
        list(started)

    def fit(
        self,
        spacepoints: Spacepoints,
        candidates: TrackCandidates,
        track_ids: np.ndarray,
        counts: np.ndarray,
        n_shares: int,
        earlier: FitResults | None = None,
    ) -> FitResults:
        """The fit of every candidate (the tracks ``track_ids`` [T], of ``counts`` [T] hits), its tracks dealt out in
        ``n_shares`` shares (at most one per worker), each fitted by one worker; with ``earlier``, the workers' fitter's
        ``refit`` from those fits (:meth:`~tracking_algs.fitting.kalman.KalmanFitter.refit`)."""
        labels = candidates.labels
        n_shares = min(n_shares, self.processes)
        longest_first = track_ids[np.argsort(-counts, kind="stable")]
        shares = [longest_first[k::n_shares] for k in range(n_shares)]
        share_labels = [np.where(np.isin(labels, share), labels, -1) for share in shares if len(share)]
        try:
            parts = list(self._pool.map(_fit_share, [spacepoints] * len(share_labels), share_labels,
                                        [earlier] * len(share_labels)))  # fmt: skip
        except concurrent.futures.process.BrokenProcessPool as error:
            raise WorkerStopped(f"a fitting worker process stopped ({error}); the event was not fitted") from None
        return combined(parts)

    def close(self) -> None:
        """Stop the workers."""
        self._pool.shutdown(cancel_futures=True)
