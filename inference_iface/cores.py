"""How many CPU cores this process may use: backends size their thread pools by it, so a process given a share of
the machine (a container's cpuset, a worker pinned to some cores) does not oversubscribe it."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """How many CPU cores this process may run on: its CPU affinity (a container's cpuset, a worker's share), or
    ``os.cpu_count()`` where the platform keeps none."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1
