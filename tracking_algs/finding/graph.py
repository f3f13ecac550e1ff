"""Graph construction: embed the spacepoints through an inference interface, then join pairs closer than a radius
in the embedding space (scipy KD-tree by default, FAISS flat index selectable) that pass the geometric pair cuts of
:mod:`tracking_algs.finding.pairs`, at most ``k_max`` per spacepoint."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
from scipy.sparse import csr_matrix
from scipy.spatial import cKDTree

from inference_iface import InferenceInterface
from inference_iface.cores import usable_cores
from tracking_algs.cores import map_on_cores
from tracking_algs.event import Spacepoints
from tracking_algs.finding.config import GraphConfig
from tracking_algs.finding.pairs import PairGeometry
from tracking_algs.ranges import first_of_runs, ranks_within

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
    n = len(points)
    depth = max(query_k, k_max) if accept is not None else k_max

    def select(query: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query, neighbour) pairs from the points ``query`` [m] and their neighbours [m, k] (nearest first, ``n``
        for none): the first ``depth`` others, of those the ones ``accept`` passes, at most ``k_max`` per point."""
        found = (neighbours < n) & (neighbours != query[:, None])
        found &= np.cumsum(found, axis=1, dtype=np.int32) <= depth  # at most depth, even when duplicates hide the point
        if accept is not None:  # the query side as a column: one value per point, broadcast along its neighbours
            found &= accept(query[:, None], np.where(found, neighbours, query[:, None]))
        found &= np.cumsum(found, axis=1, dtype=np.int32) <= k_max
        return np.repeat(query, np.count_nonzero(found, axis=1)), neighbours[found]

    if method == "kdtree":
        query, neighbour = _kdtree_pairs(points, radius, depth, eps, select)
    elif method == "faiss":
        query, neighbour = select(np.arange(n, dtype=np.int64), _faiss_neighbours(points, radius, depth))
    else:
        raise ValueError(f"graph method {method!r} is unknown; expected 'kdtree' or 'faiss'")
    low = np.minimum(query, neighbour)
    high = np.maximum(query, neighbour)
    # a sparse matrix merges the pairs found from both ends and sorts them (by low, then high) per row,
    # about twice as fast as np.unique on the combined keys
    pairs = csr_matrix((np.ones(len(low), dtype=np.int8), (low, high)), shape=(n, n))
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(pairs.indptr))
    return np.stack((rows, pairs.indices.astype(np.int64)))


def _ranks(query: np.ndarray) -> np.ndarray:
    """Position of each entry within its run of equal ``query`` values (``query`` grouped, nearest first)."""
    starts = np.flatnonzero(first_of_runs(query))
    lengths = np.diff(np.r_[starts, len(query)])
    return ranks_within(lengths)


#: ``select(query, neighbours)`` → the (query, neighbour) pairs to keep of the points ``query`` [m] and their
#: nearest-first neighbours [m, k] (the number of points where there are fewer than k).
PairSelection = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _kdtree_pairs(
    points: np.ndarray, radius: float, depth: int, eps: float, select: PairSelection
) -> tuple[np.ndarray, np.ndarray]:
    """(query, neighbour): what ``select`` keeps of each point's nearest ``depth`` others inside ``radius`` (nearest
    first; approximately, for ``eps`` > 0).  Each usable core queries and selects for its own share of the points."""
    n = len(points)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    k = min(depth + 1, n)  # +1: every point finds itself first
    tree = cKDTree(points, leafsize=32)  # larger leaves than the default 16: faster k-NN queries in 5-12 dims

    def neighbours_of(query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, index = tree.query(points[query], k=k, distance_upper_bound=radius, eps=eps)
        # n < 2**31: the sparse matrix of the pairs takes int32 as it is
        return select(query, index.reshape(len(query), k).astype(np.int32))

    # shares in strides of the core count: each holds a part of every region, so the cores finish together
    shares = usable_cores()
    found = map_on_cores(neighbours_of, [np.arange(start, n, shares, dtype=np.int32) for start in range(shares)])
    return np.concatenate([query for query, _ in found]), np.concatenate([neighbour for _, neighbour in found])


def _faiss_neighbours(points: np.ndarray, radius: float, depth: int) -> np.ndarray:
    """[N, depth + 1]: each point's nearest ``depth`` + 1 points inside ``radius`` (itself among them), nearest first,
    from an exact range search; N where a point has fewer."""
    import faiss  # optional at import time: only this method needs it

    n = len(points)
    index = faiss.IndexFlatL2(points.shape[1])
    index.add(points)
    limits, distance2, found = index.range_search(points, radius * radius)
    query = np.repeat(np.arange(n, dtype=np.int64), np.diff(limits).astype(np.int64))
    order = np.lexsort((distance2, query))  # nearest first within each query
    query, found = query[order], found[order].astype(np.int64)
    rank = _ranks(query)
    keep = rank <= depth
    neighbours = np.full((n, depth + 1), n, dtype=np.int64)
    neighbours[query[keep], rank[keep]] = found[keep]
    return neighbours


class GraphConstruction:
    """Stage 1: features → embedding (through ``inference``) → candidate edges [2, E]."""

    def __init__(
        self, inference: InferenceInterface, config: GraphConfig, radius: float, bfield_t: float | None = None
    ) -> None:
        self.inference = inference
        self.config = config
        self.radius = radius
        #: the detector's field, for the pT cut on pairs (None: the default detector's)
        self.bfield_t = bfield_t

    def run(self, features: np.ndarray, spacepoints: Spacepoints) -> tuple[np.ndarray, np.ndarray]:
        """The embedding [N, D] and the undirected candidate edges [2, E] of one event."""
        embedding = np.asarray(self.inference.infer(features=features, outputs=["embedding"]).embedding)
        return embedding, candidate_edges(embedding, spacepoints, self.radius, self.config, self.bfield_t)


def candidate_edges(
    embedding: np.ndarray, spacepoints: Spacepoints, radius: float, config: GraphConfig, bfield_t: float | None = None
) -> np.ndarray:
    """The undirected candidate edges [2, E] of one event: :func:`radius_graph` of ``embedding`` with the
    pair cuts of ``config`` on the spacepoints' geometry, in the detector's field ``bfield_t`` (None: the default
    detector's). ``ValueError`` for an embedding that is not one finite row per spacepoint (an embedding model that
    gives NaN is named here, not deep in the KD-tree), or a radius that is not a positive number."""
    embedding = np.asarray(embedding)
    if embedding.ndim != 2 or len(embedding) != len(spacepoints):
        raise ValueError(f"graph stage: an embedding of shape {list(embedding.shape)}; expected one row per "
                         f"spacepoint, [{len(spacepoints)}, D]")  # fmt: skip
    finite = np.isfinite(embedding).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise ValueError(f"graph stage: the embedding of spacepoint row {row} (hit_id {spacepoints.hit_id[row]}) is "
                         f"not finite, {embedding[row].tolist()} ({int((~finite).sum())} such rows)")  # fmt: skip
    if not (isinstance(radius, numbers.Real) and 0 < radius < math.inf):
        raise ValueError(f"graph stage: radius {radius!r}; expected a positive number")
    accept = PairGeometry(spacepoints, config.cuts, bfield_t).compatible
    return radius_graph(embedding, radius, config.k_max, config.method, config.query_k, accept, config.eps)
