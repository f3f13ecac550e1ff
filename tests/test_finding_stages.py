"""The finding stages on small real inputs: graph building, filtering in chunks, track building."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from tracking_algs.finding.building import TrackBuilding, best_edges, component_labels
from tracking_algs.finding.config import BuildingConfig
from tracking_algs.finding.graph import radius_graph


def _pairs(edges: np.ndarray) -> set[tuple[int, int]]:
    return set(zip(edges[0].tolist(), edges[1].tolist(), strict=True))


@pytest.fixture
def points() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.uniform(0, 1, size=(3000, 8)).astype(np.float32)


def test_kdtree_without_cap_is_every_pair_in_radius(points):
    edges = radius_graph(points, 0.45, k_max=3000, method="kdtree")
    expected = cKDTree(points.astype(np.float64)).query_pairs(0.45, output_type="ndarray")
    assert len(edges[0]) > 1000
    assert _pairs(edges) == {tuple(pair) for pair in expected.tolist()}
    assert (edges[0] < edges[1]).all()


@pytest.mark.parametrize("k_max", [2, 10, 3000])
def test_kdtree_and_faiss_give_the_same_edges(points, k_max):
    kdtree = radius_graph(points, 0.45, k_max=k_max, method="kdtree")
    faiss = radius_graph(points, 0.45, k_max=k_max, method="faiss")
    assert _pairs(kdtree) == _pairs(faiss)


def test_k_cap_keeps_each_points_nearest(points):
    k_max = 3
    edges = radius_graph(points, 0.6, k_max=k_max)
    _, nearest = cKDTree(points).query(points, k=k_max + 1)
    allowed = {(min(i, j), max(i, j)) for i, row in enumerate(nearest) for j in row[1:]}
    found = _pairs(edges)
    assert found <= allowed  # only pairs some point chose among its k nearest
    within = {pair for pair in allowed if np.linalg.norm(points[pair[0]] - points[pair[1]]) < 0.6}
    assert found == within  # and all of those inside the radius
    assert len(found) <= len(points) * k_max


def test_unknown_graph_method(points):
    with pytest.raises(ValueError, match="graph method 'annoy'"):
        radius_graph(points, 0.1, 4, method="annoy")


def test_connected_components_on_a_hand_graph():
    # two chains 0-1-2-3 and 4-5-6, a pair 7-8 (too short) and an isolated hit 9
    edges = np.array([[0, 1, 2, 4, 5, 7], [1, 2, 3, 5, 6, 8]])
    labels = component_labels(10, edges, min_hits=3)
    assert labels.tolist() == [0, 0, 0, 0, 1, 1, 1, -1, -1, -1]


def test_walkthrough_splits_a_junction_by_best_score():
    # hit 1 has two outward edges: to 2 (score 0.9) and to 5 (score 0.6); 5 continues to 6 and 7
    edges = np.array([[0, 1, 1, 2, 5, 6], [1, 2, 5, 3, 6, 7]])
    scores = np.array([0.9, 0.9, 0.6, 0.9, 0.8, 0.8])
    assert best_edges(edges, scores).tolist() == [True, True, False, True, True, True]
    merged = TrackBuilding(BuildingConfig(method="components", min_hits=3)).run(8, edges, scores)
    split = TrackBuilding(BuildingConfig(method="walkthrough", min_hits=3)).run(8, edges, scores)
    assert len(merged) == 1
    assert len(split) == 2
    assert split.labels[[0, 1, 2, 3]].tolist() == [0] * 4
    assert split.labels[[5, 6, 7]].tolist() == [1] * 3
    assert split.labels[4] == -1
