"""Index ranges laid out one after another, the flat layout of ragged groups (tracks' hits, crossings per segment,
modules per bin) that the chain uses throughout."""

from __future__ import annotations

import numpy as np


def ranks_within(counts: np.ndarray) -> np.ndarray:
    """Each item's place in its group, for groups of ``counts`` [G] items laid out one after another:
    ``0, 1, …, counts[0] − 1, 0, 1, …, counts[1] − 1, …`` (int64, ``counts.sum()`` items)."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def first_of_runs(keys: np.ndarray) -> np.ndarray:
    """Mask [N] of the first item of each run of equal values in ``keys`` [N] (grouped keys: each group's start)."""
    keys = np.asarray(keys)
    return np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, dtype=bool)


def concatenated_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``starts[g], starts[g] + 1, …, starts[g] + counts[g] − 1`` for every group g, one range after another (the
    indices of ragged groups given by their first index and size)."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.repeat(np.asarray(starts, dtype=np.int64), counts) + ranks_within(counts)
