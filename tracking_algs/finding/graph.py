"""Graph construction: embed the spacepoints through an inference interface, then join every pair
closer than a radius in the embedding space (scipy KD-tree by default, FAISS flat index selectable)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.spatial import cKDTree

from inference_iface import InferenceInterface
from inference_iface.cores import usable_cores
from tracking_algs.finding.config import GraphConfig


def radius_graph(points: np.ndarray, radius: float, k_max: int, method: str = "kdtree") -> np.ndarray:
    """Undirected pairs [2, E] (low, high) of points closer than ``radius``.

    Each point contributes at most its ``k_max`` nearest neighbours inside the radius; the result is
    the union of those pairs, without repeats. ``method`` is ``"kdtree"`` (scipy cKDTree) or
    ``"faiss"`` (``faiss.IndexFlatL2`` range search, exact but quadratic in the number of points).
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    if method == "kdtree":
        query, neighbour = _kdtree_neighbours(points, radius, k_max)
    elif method == "faiss":
        query, neighbour = _faiss_neighbours(points, radius, k_max)
    else:
        raise ValueError(f"graph method {method!r} is unknown; expected 'kdtree' or 'faiss'")
    low = np.minimum(query, neighbour)
    high = np.maximum(query, neighbour)
    # a sparse matrix merges the pairs found from both ends and sorts them (by low, then high) per row,
    # about twice as fast as np.unique on the combined keys
    n = len(points)
    pairs = csr_matrix((np.ones(len(low), dtype=np.int8), (low, high)), shape=(n, n))
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(pairs.indptr))
    return np.stack((rows, pairs.indices.astype(np.int64)))


def _kdtree_neighbours(points: np.ndarray, radius: float, k_max: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(points)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    k = min(k_max + 1, n)  # +1: every point finds itself first
    tree = cKDTree(points, leafsize=32)  # larger leaves than the default 16: faster k-NN queries in 8-12 dims
    # the query is split into one contiguous range per worker; taking the points in strides of the worker count
    # gives each range a share of every region, so the workers finish together (the pairs do not depend on it)
    workers = usable_cores()
    query = np.concatenate([np.arange(start, n, workers, dtype=np.int32) for start in range(workers)])
    _, index = tree.query(points[query], k=k, distance_upper_bound=radius, workers=workers)
    index = index.reshape(n, k).astype(np.int32)  # n < 2**31: the sparse matrix of the pairs takes int32 as it is
    found = (index < n) & (index != query[:, None])
    found &= np.cumsum(found, axis=1, dtype=np.int32) <= k_max  # at most k_max, even when duplicates hide the point
    return np.repeat(query, np.count_nonzero(found, axis=1)), index[found]


def _faiss_neighbours(points: np.ndarray, radius: float, k_max: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss  # optional at import time: only this method needs it

    index = faiss.IndexFlatL2(points.shape[1])
    index.add(points)
    limits, distance2, found = index.range_search(points, radius * radius)
    counts = np.diff(limits).astype(np.int64)
    query = np.repeat(np.arange(len(points), dtype=np.int64), counts)
    found = found.astype(np.int64)
    # nearest first within each query, then keep the first k_max that are not the point itself
    order = np.lexsort((distance2, query))
    query, found = query[order], found[order]
    keep = found != query
    query, found = query[keep], found[keep]
    starts = np.searchsorted(query, query, side="left")
    rank = np.arange(len(query)) - starts
    keep = rank < k_max
    return query[keep], found[keep]


class GraphConstruction:
    """Stage 1: features → embedding (through ``inference``) → candidate edges [2, E]."""

    def __init__(self, inference: InferenceInterface, config: GraphConfig, radius: float) -> None:
        self.inference = inference
        self.config = config
        self.radius = radius

    def run(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The embedding [N, D] and the undirected candidate edges [2, E] of one event."""
        embedding = np.asarray(self.inference.infer(features=features, outputs=["embedding"]).embedding)
        edges = radius_graph(embedding, self.radius, self.config.k_max, self.config.method)
        return embedding, edges
