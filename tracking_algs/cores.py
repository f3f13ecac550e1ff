"""The tracking job's use of the CPU cores: worker processes each pinned to a share of them, and work spread over
the cores of one process in threads."""

from __future__ import annotations

import concurrent.futures
import itertools
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from inference_iface.cores import usable_cores

T = TypeVar("T")
R = TypeVar("R")


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


def core_slices(n_items: int, min_items: int = 1) -> list[slice]:
    """``range(n_items)`` cut into contiguous slices of near-equal length, one per :func:`usable_cores`, but fewer
    where a slice would hold fewer than ``min_items`` (threads cost more than they save on small arrays), for
    :func:`map_on_cores`."""
    parts = max(1, min(usable_cores(), n_items // max(min_items, 1)))
    bounds = np.linspace(0, n_items, parts + 1).astype(int).tolist()
    return [slice(start, stop) for start, stop in itertools.pairwise(bounds)]


def map_on_cores(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[function(item) for item in items]``, computed on up to :func:`usable_cores` threads (one item per thread at
    a time), in the order of ``items``.  Worth it for functions that spend their time in code that releases the GIL
    (numpy on large arrays, scipy's KD-tree queries); one item, or one usable core, runs in this thread."""
    workers = min(usable_cores(), len(items))
    if workers <= 1:
        return [function(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="map-on-cores") as pool:
        return list(pool.map(function, items))
