"""The flat layout of ragged groups: each item's place in its group, index ranges one after another, and where
each run of equal keys starts."""

from __future__ import annotations

import numpy as np

from tracking_algs.ranges import concatenated_ranges, first_of_runs, ranks_within


def test_ranks_and_ranges_match_the_groups_written_out_one_by_one_including_empty_groups():
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 6, size=200)
    counts[:3] = 0  # empty groups at the start, and wherever the draw gave them
    starts = rng.integers(0, 1000, size=200)
    expected_ranks = [k for count in counts for k in range(count)]
    expected_ranges = [start + k for start, count in zip(starts, counts, strict=True) for k in range(count)]
    assert ranks_within(counts).tolist() == expected_ranks
    assert concatenated_ranges(starts, counts).tolist() == expected_ranges
    assert ranks_within(counts).dtype == concatenated_ranges(starts, counts).dtype == np.int64


def test_no_groups_or_only_empty_ones_give_no_items():
    assert ranks_within(np.zeros(0, dtype=np.int64)).shape == (0,)
    assert concatenated_ranges(np.array([5, 9]), np.array([0, 0])).shape == (0,)


def test_first_of_runs_marks_where_each_group_of_equal_keys_starts():
    assert first_of_runs(np.array([4, 4, 1, 1, 1, 4, 7])).tolist() == [True, False, True, False, False, True, True]
    assert first_of_runs(np.array([3])).tolist() == [True]
    assert first_of_runs(np.zeros(0, dtype=np.int64)).dtype == bool
    assert len(first_of_runs(np.zeros(0, dtype=np.int64))) == 0
