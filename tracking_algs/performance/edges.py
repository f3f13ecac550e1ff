"""Truth graph and edge efficiency/purity on undirected edges (Exa.TrkX definitions)."""

from __future__ import annotations

import math

import numpy as np

from tracking_algs.event import Event, whole_numbers
from tracking_algs.performance.lookup import particle_rows


def truth_graph(event: Event) -> np.ndarray:
    """True edges [2, E] (int64 spacepoint row indices): each particle's hits ordered by the distance of their
    true positions from the particle's production vertex (from the origin when the event has no particles
    table), consecutive hits joined. Noise hits (particle_id 0) have no edges. Needs ``event.truth``."""
    truth = event.truth
    if truth is None:
        raise ValueError(f"event {event.event_id}: the truth graph needs truth")
    vertex = np.zeros((len(truth), 3))
    if event.particles is not None:
        row = particle_rows(event.particles.particle_id, truth.particle_id)
        found = row >= 0
        particles = event.particles
        vertex[found] = np.column_stack((particles.vx, particles.vy, particles.vz))[row[found]]
    distance = np.linalg.norm(np.column_stack((truth.tx, truth.ty, truth.tz)) - vertex, axis=1)
    rows = np.flatnonzero(truth.particle_id != 0)
    rows = rows[np.lexsort((distance[rows], truth.particle_id[rows]))]
    same = truth.particle_id[rows[1:]] == truth.particle_id[rows[:-1]]
    return np.stack((rows[:-1][same], rows[1:][same])).astype(np.int64).reshape(2, -1)


#: The node indices an edge key holds: each below 2³² (lo · 2³² + hi).
MAX_NODES = 2**32


def edge_array(edges: np.ndarray, name: str = "edges") -> np.ndarray:
    """``edges`` as int64 [2, E] node indices; ``ValueError`` naming ``name`` for another shape (an [E, 2] array
    would pair the wrong nodes), indices that are not whole numbers (a cast would cut 0.7 to node 0, NaN to a huge
    negative number), or outside [0, 2³²)."""
    array = np.asarray(edges)
    if array.ndim != 2 or len(array) != 2:
        raise ValueError(f"{name}: shape {list(array.shape)}; expected [2, E], one column per edge")
    indices = whole_numbers(array.T, name)
    if indices.size and not (indices.min() >= 0 and indices.max() < MAX_NODES):
        raise ValueError(f"{name}: node indices from {indices.min()} to {indices.max()}; expected 0 to {MAX_NODES - 1}")
    return indices.T


def edge_keys(edges: np.ndarray, unique: bool = True, name: str = "edges") -> np.ndarray:
    """Int64 keys of undirected edges [2, E] of node indices in [0, 2³²): lo · 2³² + hi; sorted and without
    repeats, or (``unique`` false) one per edge in its order (``ValueError`` naming ``name`` for other edges,
    :func:`edge_array`)."""
    edges = edge_array(edges, name)
    low, high = np.minimum(edges[0], edges[1]), np.maximum(edges[0], edges[1])
    keys = (low << 32) | high
    return np.unique(keys) if unique else keys


def edge_counts(predicted: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    """(true predicted edges, truth edges, predicted edges), all counted as unique undirected edges; ``ValueError``
    naming ``predicted`` or ``truth`` for edges that are not [2, E] node indices (:func:`edge_array`)."""
    predicted_keys, truth_keys = edge_keys(predicted, name="predicted"), edge_keys(truth, name="truth")
    n_true = len(np.intersect1d(predicted_keys, truth_keys, assume_unique=True))
    return n_true, len(truth_keys), len(predicted_keys)


def edge_metrics(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(efficiency, purity) of predicted edges against truth edges, undirected and without repeats:
    efficiency = |pred ∩ truth| / |truth|, purity = |pred ∩ truth| / |pred| (NaN for an empty denominator)."""
    n_true, n_truth, n_predicted = edge_counts(predicted, truth)
    return (n_true / n_truth if n_truth else math.nan, n_true / n_predicted if n_predicted else math.nan)
