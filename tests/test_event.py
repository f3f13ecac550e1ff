"""The spacepoints refuse, when they are made, the values the tracking cannot take, naming the first such row."""

from __future__ import annotations

import re

import attrs
import numpy as np
import pytest

from tracking_algs.errors import EventFormatError
from tracking_algs.event import ID_LIMITS, MAX_COORDINATE, Spacepoints
from tracking_algs.simulation import SimulationConfig, simulate_event


@pytest.fixture(scope="module")
def spacepoints() -> Spacepoints:
    return simulate_event(SimulationConfig(pileup=1.0), seed=5, event_id=2).spacepoints.take(np.arange(200))


def _spoiled(spacepoints: Spacepoints, column: str, value: float, rows: list[int]) -> np.ndarray:
    spoiled = getattr(spacepoints, column).copy()
    spoiled[rows] = value
    return spoiled


@pytest.mark.parametrize("column", ["x", "y", "z"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -1e300])
def test_positions_that_are_not_finite_numbers_within_float32_are_refused(spacepoints, column, value):
    """A NaN, an infinite coordinate or one beyond float32's range (the finders' features are float32, and the graph's
    KD-tree would refuse it with no word of which hit) is an ``EventFormatError`` naming the first such row, its hit
    id, its position and how many rows are bad."""
    hit = spacepoints.hit_id[17]
    expected = rf"^spacepoint row 17 \(hit_id {hit}\): x, y, z must be finite and within float32's range .*; got "
    with pytest.raises(EventFormatError, match=rf"{expected}.*{column}={re.escape(str(value))}.*\(2 such rows\)$"):
        attrs.evolve(spacepoints, **{column: _spoiled(spacepoints, column, value, [17, 90])})
    largest = attrs.evolve(spacepoints, **{column: _spoiled(spacepoints, column, -MAX_COORDINATE, [17])})
    assert getattr(largest, column)[17] == -MAX_COORDINATE


@pytest.mark.parametrize("value", [np.nan, 0.0, -0.01, np.inf])
def test_errors_that_are_not_positive_are_refused(spacepoints, value):
    """A NaN, zero, negative or (along the first direction) infinite ``sigma`` is an ``EventFormatError`` naming the
    first such row: the track building weighs its links by the errors, and a NaN left it with fewer candidates. An
    infinite second error (a hit that measures one direction only) is taken, as the fitter takes it."""
    sigma = spacepoints.sigma.copy()
    sigma[[17, 90], 0] = value
    expected = rf"^spacepoint row 17 \(hit_id {spacepoints.hit_id[17]}\): sigma must be positive, the first finite .*"
    with pytest.raises(EventFormatError, match=rf"{expected}; got \[{re.escape(str(value))}, .*\(2 such rows\)$"):
        attrs.evolve(spacepoints, sigma=sigma)
    one_dimensional = spacepoints.sigma.copy()
    one_dimensional[17, 1] = np.inf
    assert attrs.evolve(spacepoints, sigma=one_dimensional).sigma[17, 1] == np.inf


@pytest.mark.parametrize("column", sorted(ID_LIMITS))
def test_ids_outside_their_range_are_refused(spacepoints, column):
    """A volume, layer or module id below 0 or at its bound (:data:`ID_LIMITS`, where the layer and module keys stop
    being one integer per layer and per module) is refused; the largest id below the bound is taken."""
    limit = ID_LIMITS[column]
    for value in (-1, limit):
        expected = rf"^spacepoint row 4 \(hit_id {spacepoints.hit_id[4]}\): {column} must be in \[0, {limit}\); "
        with pytest.raises(EventFormatError, match=rf"{expected}got {value} \(1 such rows\)$"):
            attrs.evolve(spacepoints, **{column: _spoiled(spacepoints, column, value, [4])})
    largest = attrs.evolve(spacepoints, **{column: _spoiled(spacepoints, column, limit - 1, [4])})
    assert getattr(largest, column)[4] == limit - 1


def test_an_empty_table_is_taken(spacepoints):
    """An event may have no hits in Python (a job refuses it when it reads or writes the event's files)."""
    assert len(spacepoints.take(np.arange(0))) == 0
