"""Track building: connected components of the accepted edges, optionally after a walkthrough that
splits components at junctions, keeping for each hit only its best-scoring edge outwards and inwards."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tracking_algs.event import TrackCandidates
from tracking_algs.finding.config import BuildingConfig


def component_labels(n_nodes: int, edges: np.ndarray, min_hits: int) -> np.ndarray:
    """Connected-component label per node [N]; components smaller than ``min_hits`` get -1 and the
    others are numbered 0, 1, ... in order of their first node."""
    graph = coo_matrix((np.ones(edges.shape[1], dtype=np.int8), (edges[0], edges[1])), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels, minlength=labels.max() + 1 if n_nodes else 0)
    big = sizes[labels] >= min_hits
    result = np.full(n_nodes, -1, dtype=np.int64)
    _, result[big] = np.unique(labels[big], return_inverse=True)
    return result


def best_edges(edges: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mask [E] of the edges that are both the best-scoring edge leaving their inner hit (row 0) and
    the best-scoring edge arriving at their outer hit (row 1): junctions are resolved by score."""
    return _is_best(edges[0], scores) & _is_best(edges[1], scores)


def _is_best(node: np.ndarray, scores: np.ndarray) -> np.ndarray:
    order = np.lexsort((-scores, node))  # by node, best score first
    first = np.ones(len(order), dtype=bool)
    first[1:] = node[order][1:] != node[order][:-1]
    mask = np.zeros(len(order), dtype=bool)
    mask[order[first]] = True
    return mask


class TrackBuilding:
    """Stage 4: accepted edges and their scores → :class:`TrackCandidates`."""

    def __init__(self, config: BuildingConfig) -> None:
        self.config = config

    def run(self, n_nodes: int, edges: np.ndarray, scores: np.ndarray) -> TrackCandidates:
        """Track candidates of one event with ``n_nodes`` spacepoints."""
        if self.config.method == "walkthrough":
            edges = edges[:, best_edges(edges, scores)]
        return TrackCandidates(labels=component_labels(n_nodes, edges, self.config.min_hits))
