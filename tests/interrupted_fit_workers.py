"""Ctrl-C reaching the fitting worker processes (``[fitting.kalman] processes``) with the process that started them, as
they start, as they wait for work and as they fit: ``python tests/interrupted_fit_workers.py``, in a session of its
own (it signals its whole process group).

Each SIGINT interrupts this process (which says so on stdout, as a job stops); the workers must neither die nor print
anything: after each one the fitter fits again, in the same worker processes, the fit of this process. Exits with 0
when every step went so, with 1 naming the step that did not.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time

import numpy as np

from tracking_algs.event import TrackCandidates
from tracking_algs.fitting import KalmanConfig, KalmanFitter
from tracking_algs.geometry import trackml_detector
from tracking_algs.simulation import SimulationConfig, simulate_event

DETECTOR = trackml_detector()


def _interrupt_group() -> None:
    os.killpg(0, signal.SIGINT)


def _interrupted(step: str, call) -> None:
    """Run ``call`` and wait for the SIGINT it sends to reach this process."""
    try:
        call()
        time.sleep(60)
    except KeyboardInterrupt:
        print(f"{step}: interrupted", flush=True)
        return
    sys.exit(f"{step}: no KeyboardInterrupt in the process that started the workers")


def _workers() -> set[int]:
    return {process.pid for process in multiprocessing.active_children() if process.name.startswith("SpawnProcess")}


def main() -> int:
    """Interrupt the workers as they start, as they wait and as they fit; check that they fit on unchanged."""
    event = simulate_event(SimulationConfig(pileup=50.0), seed=5, event_id=0, detector=DETECTOR)
    particle = event.truth.particle_id
    _, labels = np.unique(particle, return_inverse=True)
    candidates = TrackCandidates(np.where(particle == 0, -1, labels).astype(np.int64))
    alone = KalmanFitter(DETECTOR).fit(event.spacepoints, candidates)
    clock = time.perf_counter()
    KalmanFitter(DETECTOR).fit(event.spacepoints, candidates)
    fit_seconds = time.perf_counter() - clock  # in this process, warm: the workers' fit, on two, takes about half
    with KalmanFitter(DETECTOR, KalmanConfig(processes=2, min_tracks_per_process=10)) as fitter:
        results = []
        first = threading.Thread(target=lambda: results.append(fitter.fit(event.spacepoints, candidates)))

        def interrupt_as_they_start() -> None:
            first.start()
            while len(_workers()) < 2:  # spawned: they are importing their modules now
                time.sleep(0.01)
            _interrupt_group()

        _interrupted("starting", interrupt_as_they_start)
        first.join()
        started = _workers()
        _interrupted("waiting", _interrupt_group)
        timer = threading.Timer(fit_seconds / 8, _interrupt_group)  # well within the fit of the event in the workers
        try:
            timer.start()
            results.append(fitter.fit(event.spacepoints, candidates))
            sys.exit("fitting: the fit ended before the interrupt reached it")
        except KeyboardInterrupt:
            print("fitting: interrupted", flush=True)
        timer.join()
        results.append(fitter.fit(event.spacepoints, candidates))
        if _workers() != started or fitter.worker_processes != 2:
            sys.exit(f"the workers {sorted(started)} did not last: {sorted(_workers())}")
    for fitted in results:
        if not np.array_equal(fitted.params, alone.params) or not np.array_equal(fitted.outlier, alone.outlier):
            sys.exit("a fit in the workers is not the fit of this process")
    print(f"{len(results)} fits, {len(alone)} tracks each, in workers {sorted(started)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
