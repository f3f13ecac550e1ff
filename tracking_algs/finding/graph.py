"""Graph construction: embed the spacepoints through an inference interface, then join pairs closer than a radius
in the embedding space (scipy KD-tree by default, FAISS flat index selectable) that pass the geometric pair cuts of
:mod:`tracking_algs.finding.pairs`, at most ``k_max`` per spacepoint."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.sparse import csr_matrix
from scipy.spatial import cKDTree

from inference_iface import InferenceInterface
from inference_iface.cores import usable_cores
from tracking_algs.event import Spacepoints
from tracking_algs.finding.config import GraphConfig
from tracking_algs.finding.pairs import PairGeometry

#: ``accept(query, neighbour)``: a boolean mask over pairs of point indices, True for the pairs to keep.
PairFilter = Callable[[np.ndarray, np.ndarray], np.ndarray]


def radius_graph(
    points: np.ndarray,
    radius: float,
    k_max: int,
    method: str = "kdtree",
    query_k: int = 0,
    accept: PairFilter | None = None,
    eps: float = 0.0,
) -> np.ndarray:
    """Undirected pairs [2, E] (low, high) of points closer than ``radius``.

    Each point contributes at most its ``k_max`` nearest neighbours inside the radius; the result is
    the union of those pairs, without repeats. With ``accept``, each point looks at its ``query_k``
    nearest neighbours (at least ``k_max``), drops the pairs ``accept`` rejects and contributes the
    ``k_max`` nearest of the rest. ``method`` is ``"kdtree"`` (scipy cKDTree) or ``"faiss"``
    (``faiss.IndexFlatL2`` range search, exact but quadratic in the number of points). ``eps`` > 0 makes the
    KD-tree search approximate (scipy's ``eps``: the k-th neighbour returned is within (1 + eps) times the
    distance of the true k-th); FAISS is always exact.
    """
    points = np.ascontiguousarray(points, dtype=np.float32)
    depth = max(query_k, k_max) if accept is not None else k_max
    if method == "kdtree":
        query, neighbour, rank = _kdtree_neighbours(points, radius, depth, eps)
    elif method == "faiss":
        query, neighbour, rank = _faiss_neighbours(points, radius, depth)
    else:
        raise ValueError(f"graph method {method!r} is unknown; expected 'kdtree' or 'faiss'")
    if accept is not None:
        keep = accept(query, neighbour)
        query, neighbour, rank = query[keep], neighbour[keep], _ranks(query[keep])
    if depth > k_max:
        keep = rank < k_max
        query, neighbour = query[keep], neighbour[keep]
    low = np.minimum(query, neighbour)
    high = np.maximum(query, neighbour)
    # a sparse matrix merges the pairs found from both ends and sorts them (by low, then high) per row,
    # about twice as fast as np.unique on the combined keys
    n = len(points)
    pairs = csr_matrix((np.ones(len(low), dtype=np.int8), (low, high)), shape=(n, n))
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(pairs.indptr))
    return np.stack((rows, pairs.indices.astype(np.int64)))


def _ranks(query: np.ndarray) -> np.ndarray:
    """Position of each entry within its run of equal ``query`` values (``query`` grouped, nearest first)."""
    starts = np.flatnonzero(np.r_[True, query[1:] != query[:-1]]) if len(query) else np.empty(0, np.int64)
    lengths = np.diff(np.r_[starts, len(query)])
    return np.arange(len(query)) - np.repeat(starts, lengths)


def _kdtree_neighbours(
    points: np.ndarray, radius: float, k_max: int, eps: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, neighbour, rank): each point's nearest ``k_max`` others inside ``radius``, nearest first
    (approximately, for ``eps`` > 0)."""
    n = len(points)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    k = min(k_max + 1, n)  # +1: every point finds itself first
    tree = cKDTree(points, leafsize=32)  # larger leaves than the default 16: faster k-NN queries in 8-12 dims
    # the query is split into one contiguous range per worker; taking the points in strides of the worker count
    # gives each range a share of every region, so the workers finish together (the pairs do not depend on it)
    workers = usable_cores()
    query = np.concatenate([np.arange(start, n, workers, dtype=np.int32) for start in range(workers)])
    _, index = tree.query(points[query], k=k, distance_upper_bound=radius, workers=workers, eps=eps)
    index = index.reshape(n, k).astype(np.int32)  # n < 2**31: the sparse matrix of the pairs takes int32 as it is
    found = (index < n) & (index != query[:, None])
    rank = np.cumsum(found, axis=1, dtype=np.int32)
    found &= rank <= k_max  # at most k_max, even when duplicates hide the point
    return np.repeat(query, np.count_nonzero(found, axis=1)), index[found], rank[found] - 1


def _faiss_neighbours(points: np.ndarray, radius: float, k_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, neighbour, rank) as :func:`_kdtree_neighbours`, from an exact range search."""
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
    rank = _ranks(query)
    keep = rank < k_max
    return query[keep], found[keep], rank[keep]


class GraphConstruction:
    """Stage 1: features → embedding (through ``inference``) → candidate edges [2, E]."""

    def __init__(self, inference: InferenceInterface, config: GraphConfig, radius: float) -> None:
        self.inference = inference
        self.config = config
        self.radius = radius

    def run(self, features: np.ndarray, spacepoints: Spacepoints) -> tuple[np.ndarray, np.ndarray]:
        """The embedding [N, D] and the undirected candidate edges [2, E] of one event."""
        embedding = np.asarray(self.inference.infer(features=features, outputs=["embedding"]).embedding)
        return embedding, candidate_edges(embedding, spacepoints, self.radius, self.config)


def candidate_edges(embedding: np.ndarray, spacepoints: Spacepoints, radius: float, config: GraphConfig) -> np.ndarray:
    """The undirected candidate edges [2, E] of one event: :func:`radius_graph` of ``embedding`` with the
    pair cuts of ``config`` on the spacepoints' geometry."""
    accept = PairGeometry(spacepoints, config.cuts).compatible
    return radius_graph(embedding, radius, config.k_max, config.method, config.query_k, accept, config.eps)
