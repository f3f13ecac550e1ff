"""Sharing the cores among worker processes: each worker's affinity, and the thread counts that follow it."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from inference_iface.cores import usable_cores
from tracking_algs.cores import core_slices, map_on_cores, pin_to_share

CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
needs_two_cores = pytest.mark.skipif(len(CORES) < 2 or not hasattr(os, "sched_setaffinity"),
                                     reason="needs CPU affinity and two cores")  # fmt: skip


def _share(index: int, workers: int) -> tuple[list[int], int]:
    pin_to_share(index, workers)
    return sorted(os.sched_getaffinity(0)), usable_cores()


def _in_fresh_process(index: int, workers: int) -> tuple[list[int], int]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_share, index, workers).result()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_usable_cores_is_this_process_affinity():
    """A process allowed one core (one share of as many as there are cores) counts one, whatever the machine has."""
    cores, usable = _in_fresh_process(0, len(CORES))
    assert len(cores) == usable == 1


@needs_two_cores
def test_two_workers_get_disjoint_shares_covering_the_cores():
    shares = [_in_fresh_process(index, 2) for index in range(2)]
    assert set(shares[0][0]).isdisjoint(shares[1][0])
    assert sorted(shares[0][0] + shares[1][0]) == CORES
    assert [count for _, count in shares] == [len(cores) for cores, _ in shares]


@needs_two_cores
def test_more_workers_than_cores_each_get_one_core():
    workers = len(CORES) + 1
    cores, count = _in_fresh_process(workers - 1, workers)
    assert count == 1
    assert cores == [CORES[(workers - 1) % len(CORES)]]


@pytest.mark.parametrize("n_items", [0, 1, 2, 7, 1000])
def test_core_slices_cover_the_items_once_in_order(n_items):
    slices = core_slices(n_items)
    assert 1 <= len(slices) <= max(1, min(usable_cores(), n_items))
    assert np.array_equal(np.concatenate([np.arange(n_items)[part] for part in slices]), np.arange(n_items))
    assert max(part.stop - part.start for part in slices) - min(part.stop - part.start for part in slices) <= 1


def test_core_slices_stay_whole_below_the_minimum_per_slice():
    assert core_slices(999, min_items=1000) == [slice(0, 999)]
    assert len(core_slices(10_000, min_items=1000)) == min(usable_cores(), 10)


def test_map_on_cores_keeps_the_order_and_uses_threads_when_there_are_cores():
    items = [np.arange(n) for n in (5, 50, 500, 5000)]
    threads = set()

    def total(item: np.ndarray) -> int:
        threads.add(threading.get_ident())
        return int(item.sum())

    assert map_on_cores(total, items) == [int(item.sum()) for item in items]
    assert (threading.get_ident() in threads) is (usable_cores() == 1)
    assert map_on_cores(total, []) == []
