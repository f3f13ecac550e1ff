"""The CPU cores a process may use, and sharing them among worker processes."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """How many CPU cores this process may run on: its CPU affinity (a container's cpuset, a worker's share), or
    ``os.cpu_count()`` where the platform keeps none."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def pin_to_share(index: int, workers: int) -> None:
    """Restrict this process to worker ``index``'s share of the cores it may use now, among ``workers`` workers:
    every ``workers``-th core from the ``index``-th on, or one core (shared) when there are more workers than
    cores.  Thread pools sized by :func:`usable_cores` then stop competing for the same cores.  No effect where the
    platform cannot set an affinity."""
    if not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    share = cores[index % len(cores) :: workers] if workers <= len(cores) else [cores[index % len(cores)]]
    os.sched_setaffinity(0, share)
