"""Track building: the accepted GNN edges → track candidates.

Three methods (``[finding.building] method``):

* ``triplets`` (default): link each edge to the edge that continues it best as a *triplet* of hits — the
  polar direction and the transverse curvature must agree along the three hits, within widths that allow for
  resolution and multiple scattering — keeping a link only when each edge is the other's best partner; the chains
  of linked edges are the tracks (a hit in two chains goes to the longer, or with ``shared_hits = "best_fit"`` of
  two chains long enough to keep to the one whose links fit it better; with ``revive_chains`` a chain dropped there
  takes back the hits no kept chain holds).  Inside a dense jet the GNN scores
  edges to jet-mates as high as true ones; the triplet geometry tells them apart.  Edges between two hits of one
  layer (a particle crossing two overlapping modules leaves both, a and a') take no links: hits millimetres apart
  measure no direction.  With ``link_overlaps``, an edge z → a links to an edge a' → b as if they shared a hit
  (:func:`overlap_triplets`), so the chain holds both hits; with it or without, a hit left out that such an edge
  joins to a candidate's hit is added to that candidate when it continues the track in the partner's direction
  (:func:`_with_overlap_hits`: the overlap on a track's first or last layer, which no link reaches; with
  ``complete_by_overlaps`` to the chains one hit short of ``min_hits`` too).  Two chains of
  one particle that cross (parallel paths through overlapping modules) are joined where the shorter would otherwise
  give up its hits (:func:`_with_crossing_chains`).
* ``walkthrough``: keep an edge only if it is the best-scoring edge leaving its inner hit and arriving at its
  outer hit, then connected components.
* ``components``: plain connected components (``scipy.sparse.csgraph``).

Candidates with fewer than ``min_hits`` hits are dropped.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from inference_iface.cores import usable_cores
from tracking_algs.cores import core_slices, map_on_cores
from tracking_algs.event import Spacepoints, TrackCandidates
from tracking_algs.finding.config import BuildingConfig
from tracking_algs.ranges import concatenated_ranges, first_of_runs, ranks_within

#: Width of the change of polar direction between the two edges of a true triplet (rad): a floor for the hit
#: resolution, and a term that grows with the curvature (per metre) for multiple scattering
THETA_WIDTH = (0.004, 0.04)
#: Width of the difference between the curvatures of the two edges' circles through the origin (1/mm): a floor, and
#: a fraction of the curvature
CURVATURE_WIDTH = (0.05e-3, 0.3)
#: Widths of the helix parameters (polar angle, cos and sin of the azimuth at the origin, curvature in 1/mm, z at the
#: beam line in mm) within which a chain's last edge and another chain's first edge are tried as one track
BRIDGE_WIDTHS = (0.02, 0.02, 0.02, 2e-4, 30.0)
#: Times the hits shared by several chains are assigned again after recounting the chains' sizes (triplets building)
ASSIGNMENT_PASSES = 3
#: Above every ``layer_key`` (volume_id · 10⁶ + layer_id): chain · span + layer_key is one key per chain and layer
LAYER_KEY_SPAN = 10**9
#: Times the hits of overlapping modules left out of the chains are added to the candidates (triplets building): two
#: reach a third module of one layer, or the partner of a hit added in the first pass
OVERLAP_PASSES = 2
#: Largest triplet cost between a candidate's edge u–w and the edge v–w from a hit v on a module overlapping u's, for v
#: to join the candidate (triplets building).  On the validation seed (module simulation, 2 events at pile-up 200,
#: models trained on modules) 25, 9, 4, 1 and 0.3 gave 77.3, 82.8, 86.5, 89.4 and 90.0 % of the pT > 1 GeV particles
#: after the fit selection (85.4 % adding no hits): hits beside the track spoil its fit. 1 keeps 85 % of the particles
#: whole given their truth edges (0.3: 76 %)
ATTACH_COST = 1.0
#: Fewest triplets (or chain ends) per thread: below it, spreading a pass over the cores costs more than it saves
#: (the building of a pile-up-0 event took 4.3 ms with threads instead of 2.4 ms)
MIN_PER_THREAD = 50_000


def component_labels(n_nodes: int, edges: np.ndarray, min_hits: int) -> np.ndarray:
    """Connected-component label per node [N]; components smaller than ``min_hits`` get -1 and the
    others are numbered 0, 1, ... in order of their first node."""
    graph = coo_matrix((np.ones(edges.shape[1], dtype=np.int8), (edges[0], edges[1])), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    return _numbered(labels, min_hits)


def _numbered(labels: np.ndarray, min_hits: int) -> np.ndarray:
    """``labels`` [N] (-1: none) with groups smaller than ``min_hits`` set to -1 and the others numbered 0, 1, ...
    in order of their old labels."""
    assigned = labels >= 0
    sizes = np.bincount(labels[assigned], minlength=1)
    big = assigned & (sizes[np.where(assigned, labels, 0)] >= min_hits)
    result = np.full(len(labels), -1, dtype=np.int64)
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


def _grouped(n_nodes: int, hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The edges ordered by ``hit`` [E] (each edge's inner or outer hit), and where each hit's edges start there
    [n_nodes + 1]."""
    order = np.argsort(hit, kind="stable")
    return order, np.searchsorted(hit[order], np.arange(n_nodes + 1))


def edge_triplets(n_nodes: int, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of edges (e, f) [T] where f leaves the outer hit of e (hits a → b → c), ordered by e, then by f."""
    order, start = _grouped(n_nodes, edges[0])  # where each hit's outgoing edges start in ``order``
    count = np.diff(start)[edges[1]]
    first = np.repeat(np.arange(edges.shape[1]), count)
    # slot t of ``order``: the start of e's successors there, plus t's rank among e's triplets
    return first, order[concatenated_ranges(start[edges[1]], count)]


def _sorted_union(sorted_keys: np.ndarray, others: np.ndarray) -> np.ndarray:
    """``np.unique`` of the keys ``sorted_keys`` (sorted, without repeats) and ``others``: the two sorted runs
    concatenated are merged by the stable sort (timsort finds the runs) in linear time instead of sorted again."""
    keys = np.sort(np.concatenate((sorted_keys, np.sort(others))), kind="stable")
    return keys[first_of_runs(keys)]


def overlap_triplets(n_nodes: int, edges: np.ndarray, overlaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of edges (e, f) [T] where f leaves the outer hit of an edge of ``overlaps`` whose inner hit e
    reaches (hits z → a, a' → b with a, a' on overlapping modules of one layer, a' the farther from the origin, as the
    edges are oriented: a particle from the beam line crosses a first); unordered."""
    a, b = overlaps
    arriving, arriving_start = _grouped(n_nodes, edges[1])
    leaving, leaving_start = _grouped(n_nodes, edges[0])
    n_in, n_out = np.diff(arriving_start)[a], np.diff(leaving_start)[b]
    count = n_in * n_out
    pair = np.repeat(np.arange(len(a)), count)
    offset = ranks_within(count)
    i, j = np.divmod(offset, np.maximum(n_out[pair], 1))
    return arriving[arriving_start[a[pair]] + i], leaving[leaving_start[b[pair]] + j]


def triplet_costs(spacepoints: Spacepoints, edges: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """χ²-like mismatch [T] of triplets a → b → c (edges ``first`` then ``second``): the change of polar direction
    from one edge to the next, and the difference of the curvatures of the circles through the origin and each
    edge's two hits (a track from the beam line bends on one circle), each over its width (:data:`THETA_WIDTH`,
    :data:`CURVATURE_WIDTH`, which grow with the curvature for multiple scattering; the curvature's also with the
    measurement error of both edges' curvatures, see :func:`_curvature_error`)."""
    x, y, z, r = spacepoints.x, spacepoints.y, spacepoints.z, spacepoints.r
    inner, outer = edges
    polar = np.arctan2(r[outer] - r[inner], z[outer] - z[inner])
    curvature = _curvature_through_origin(x[inner], y[inner], x[outer], y[outer])
    error2 = _curvature_error(spacepoints, edges) ** 2
    # per edge what depends on the first edge only, then in place over the T triplets, a slice per core
    theta_width = THETA_WIDTH[0] + THETA_WIDTH[1] * np.abs(curvature) * 1e3
    curvature_variance = (CURVATURE_WIDTH[0] + CURVATURE_WIDTH[1] * np.abs(curvature)) ** 2 + error2
    costs = np.empty(len(first))

    def fill(part: slice) -> None:
        before, after = first[part], second[part]
        cost = polar[after]
        cost -= polar[before]
        cost /= theta_width[before]
        cost *= cost
        bend = curvature[after]
        bend -= curvature[before]
        bend *= bend
        variance = curvature_variance[before]
        variance += error2[after]
        bend /= variance
        cost += bend
        costs[part] = cost

    map_on_cores(fill, core_slices(len(first), MIN_PER_THREAD))
    return costs


def _curvature_error(spacepoints: Spacepoints, edges: np.ndarray) -> np.ndarray:
    """Measurement error [E] of each edge's curvature through the origin, 2 sin Δφ / |Δp| for hits Δφ apart in
    azimuth and |Δp| apart in the transverse plane: 2 σ(Δφ) / |Δp|, with σ(φ) = σ(r·φ) / r of each hit.  It
    matters where hits are close in the transverse plane (the forward disks: a few mm), not in the barrel."""
    x, y, r = spacepoints.x, spacepoints.y, spacepoints.r
    inner, outer = edges
    sigma_phi = spacepoints.sigma[:, 0] / np.maximum(r, 1e-6)
    transverse = np.hypot(x[outer] - x[inner], y[outer] - y[inner])
    return 2.0 * np.hypot(sigma_phi[inner], sigma_phi[outer]) / np.maximum(transverse, 1e-3)


def _curvature_through_origin(x1, y1, x2, y2) -> np.ndarray:
    """Signed curvature (1/mm) of the circle through the origin and two points (Menger: 4·area / product of the
    sides)."""
    twice_area = x1 * y2 - y1 * x2
    sides = np.hypot(x1, y1) * np.hypot(x2, y2) * np.hypot(x2 - x1, y2 - y1)
    return 2.0 * twice_area / np.maximum(sides, 1e-12)


def triplet_labels(
    spacepoints: Spacepoints,
    edges: np.ndarray,
    max_cost: float,
    min_hits: int,
    bridge_cost: float = 0.0,
    bypass_cost: float = 0.0,
    overlap_mm: float = 0.0,
    link_overlaps: bool = False,
    scores: np.ndarray | None = None,
    score_weight: float = 0.0,
    crossing_cost: float = 0.0,
    shared_hits_by_fit: bool = False,
    revive_chains: bool = False,
    complete_by_overlaps: bool = False,
) -> np.ndarray:
    """Track label per spacepoint [N] (-1: none) from chains of mutually best triplet links (see the module doc);
    with ``bridge_cost`` > 0, chains are joined across a missing edge (:func:`_bridged`; also from one module to an
    overlapping one of the same layer, hits at most ``overlap_mm`` apart); with ``bypass_cost`` > 0, an edge a → c
    that a triplet a → b → c cheaper than ``bypass_cost`` goes around takes no links (:func:`_bypassed`). Edges
    between different modules of one layer at most ``overlap_mm`` apart take no links; with ``link_overlaps`` the
    edges on either side link across them (:func:`overlap_triplets`); the hits of overlapping modules that the
    chains leave out are added to the candidates (:func:`_with_overlap_hits`); ``overlap_mm`` 0 treats every edge
    alike.  With ``score_weight`` > 0, the links are chosen (each edge's best partner, and a shared hit's chain) by
    the triplet cost plus ``score_weight`` × (−ln score) of both edges (``scores`` [E], the edges' GNN scores).
    With ``crossing_cost`` > 0, a chain too short to keep gives its free hits to a kept chain that it crosses and
    continues (:func:`_with_crossing_chains`).  With ``shared_hits_by_fit``, a hit claimed by several chains of at
    least ``min_hits`` hits goes to the one whose links fit best there, not to the longest (:func:`_assign_hits`).
    With ``revive_chains``, a chain dropped there whose hits no kept chain holds takes them back
    (:func:`_with_revived_chains`).  With ``complete_by_overlaps``, the hits of overlapping modules are added to the
    chains one hit short of ``min_hits`` as well, before the cut (a particle with five hits, two of them on one layer,
    whose chain holds four).
    """
    overlap = _overlapping(spacepoints, edges, overlap_mm)
    overlaps, edges = edges[:, overlap], edges[:, ~overlap]
    n_nodes, n_edges = len(spacepoints), edges.shape[1]
    first, second = edge_triplets(n_nodes, edges)
    if overlaps.shape[1] and link_overlaps:
        across = overlap_triplets(n_nodes, edges, overlaps)
        keys = _sorted_union(first * n_edges + second, across[0] * n_edges + across[1])
        first, second = np.divmod(keys, n_edges)
    cost = triplet_costs(spacepoints, edges, first, second)
    good = cost < max_cost
    if bypass_cost > 0:
        around = cost < bypass_cost
        bypassed = _bypassed(n_nodes, edges, first[around], second[around])
        good &= ~bypassed[first] & ~bypassed[second]
    kept = np.flatnonzero(good)
    first, second, cost = first[kept], second[kept], cost[kept]
    if score_weight > 0 and scores is not None:
        distrust = -np.log(np.maximum(np.asarray(scores, dtype=np.float64)[~overlap], np.finfo(np.float64).tiny))
        cost = cost + score_weight * (distrust[first] + distrust[second])
    triplet_keys = first * n_edges + second  # sorted: the triplets come ordered by first, then second edge
    predecessor = _best_partner(second, first, cost, n_edges)
    successor = _best_partner(first, second, cost, n_edges, grouped=True)
    first = np.flatnonzero(successor >= 0)
    second = successor[first]
    linked = predecessor[second] == first  # each edge's best successor, whose best predecessor it is
    first, second = first[linked], second[linked]
    link_cost = cost[np.searchsorted(triplet_keys, first * n_edges + second)]
    links = coo_matrix((np.ones(len(first), dtype=np.int8), (first, second)), shape=(n_edges, n_edges))
    _, chain = connected_components(links, directed=False)
    if bridge_cost > 0:
        chain = _bridged(spacepoints, edges, first, second, chain, bridge_cost, overlap_mm)
    # the (chain, hit) pairs of the links' hits (three, or four across an overlap), each with the cost of the chain's
    # best link at that hit
    keys = np.tile(chain[first].astype(np.int64), 4) * n_nodes
    keys += np.concatenate((edges[0][first], edges[1][first], edges[0][second], edges[1][second]))
    by_key = np.argsort(keys)
    keys = keys[by_key]
    starts = np.flatnonzero(np.diff(keys, prepend=-1))  # the keys are ≥ 0
    best_cost = np.minimum.reduceat(np.tile(link_cost, 4)[by_key], starts) if len(keys) else link_cost
    owner, hit = np.divmod(keys[starts], n_nodes)
    chosen = _assign_hits(owner, hit, best_cost, n_edges, min_hits, shared_hits_by_fit)
    if revive_chains:
        chosen = _with_revived_chains(owner, hit, best_cost, chosen, n_edges, min_hits)
    labels = np.full(n_nodes, -1, dtype=np.int64)
    labels[hit[chosen]] = owner[chosen]
    if crossing_cost > 0:
        links = (edges, np.unique(np.concatenate((first, second))), chain)
        labels = _with_crossing_chains(spacepoints, labels, (owner, hit, best_cost), links, min_hits, overlap_mm,
                                       crossing_cost)  # fmt: skip
    # the chains one hit short of min_hits take part with complete_by_overlaps: an overlap hit can complete them
    labels = _numbered(labels, min_hits - 1 if complete_by_overlaps else min_hits)
    for _ in range(OVERLAP_PASSES):  # a hit added in one pass can bring in its own overlap partner in the next
        added = _with_overlap_hits(spacepoints, labels, edges, overlaps, ATTACH_COST)
        if (added == labels).all():
            break
        labels = added
    return _numbered(labels, min_hits)


def _with_crossing_chains(
    spacepoints: Spacepoints,
    labels: np.ndarray,
    claims: tuple[np.ndarray, np.ndarray, np.ndarray],
    links: tuple[np.ndarray, np.ndarray, np.ndarray],
    min_hits: int,
    overlap_mm: float,
    max_cost: float,
) -> np.ndarray:
    """``labels`` (a chain per hit, -1: none) with the free hits of the chains too short to keep (fewer than
    ``min_hits`` hits won) given to a kept chain that crosses them.

    Where a particle crosses two or three overlapping modules per layer, its edges form parallel paths, and the
    mutually best links can make two chains of it that cross: one holds hits a, b, c, d and the other b′, d, e, f,
    g. The longer wins the shared hit d, the shorter falls under ``min_hits`` and gives its hits up, and the
    particle's track loses a, b and c.  A short chain's free hits join the kept chain that won its shared hits
    when that is one chain, an edge of the one arriving at a shared hit and an edge of the other leaving it make a
    triplet cheaper than ``max_cost`` (the short chain continues the kept one), and none of its free hits
    lies on a layer the kept chain crosses farther than ``overlap_mm`` from its hit there.  The free hits on the
    layers the kept chain does not cross join it; those beside its hit (an overlapping module) are left to
    :func:`_with_overlap_hits`.  A hit offered by several short chains goes to the one whose links fit best there.
    ``claims`` are the (chain, hit, cost) triples of :func:`_assign_hits`; ``links`` the edges [2, E], the edges in
    chains and each edge's chain."""
    chain, hit, cost = claims
    sizes = np.bincount(labels[labels >= 0], minlength=int(chain.max(initial=-1)) + 1)
    kept = sizes >= min_hits
    winner = labels[hit]
    won_by_kept = winner >= 0
    won_by_kept[won_by_kept] = kept[winner[won_by_kept]]
    shared = np.flatnonzero(~kept[chain] & won_by_kept)
    if not len(shared):
        return labels
    # the one kept chain that won each short chain's shared hits (-1: none, or several), where the two continue
    n_chains = len(sizes)
    lowest = np.full(n_chains, n_chains, dtype=np.int64)
    highest = np.full(n_chains, -1, dtype=np.int64)
    np.minimum.at(lowest, chain[shared], winner[shared])
    np.maximum.at(highest, chain[shared], winner[shared])
    shared = shared[lowest[chain[shared]] == highest[chain[shared]]]
    continues = _continuing(spacepoints, links, chain[shared], winner[shared], hit[shared]) < max_cost
    target = np.full(n_chains, -1, dtype=np.int64)
    target[chain[shared[continues]]] = winner[shared[continues]]
    offer = np.flatnonzero(~kept[chain] & ~won_by_kept & (target[chain] >= 0))
    if not len(offer):
        return labels
    # an offered hit on a layer the target crosses must lie within overlap_mm of the target's hit there
    members = np.flatnonzero(labels >= 0)
    members = members[kept[labels[members]]]
    layer = spacepoints.layer_key.astype(np.int64)
    member_key = labels[members] * LAYER_KEY_SPAN + layer[members]
    by_key = np.argsort(member_key, kind="stable")
    member_key, members = member_key[by_key], members[by_key]
    offer_key = target[chain[offer]] * LAYER_KEY_SPAN + layer[hit[offer]]
    first = np.searchsorted(member_key, offer_key)
    count = np.searchsorted(member_key, offer_key, side="right") - first
    pair = np.repeat(np.arange(len(offer)), count)
    here, other = hit[offer[pair]], members[concatenated_ranges(first, count)]
    beside = np.zeros(len(offer), dtype=bool)
    beside[pair[_distance(spacepoints, here, other) <= overlap_mm]] = True
    refused = np.zeros(n_chains, dtype=bool)
    refused[chain[offer[(count > 0) & ~beside]]] = True
    offer = offer[(count == 0) & ~refused[chain[offer]]]  # a hit beside the target's is left to the overlap passes
    offer = offer[np.lexsort((chain[offer], cost[offer], hit[offer]))]  # per hit, the best fit first
    offer = offer[first_of_runs(hit[offer])]
    result = labels.copy()
    result[hit[offer]] = target[chain[offer]]
    return result


def _continuing(
    spacepoints: Spacepoints,
    links: tuple[np.ndarray, np.ndarray, np.ndarray],
    one: np.ndarray,
    other: np.ndarray,
    at_hit: np.ndarray,
) -> np.ndarray:
    """For the chain pairs (``one``, ``other``) [P] meeting at hits ``at_hit`` [P], the cheapest triplet [P] of an
    edge of one chain arriving at the hit and an edge of the other leaving it (inf where there is none).
    ``links``: the edges [2, E], the edges in chains and each edge's chain."""
    edges, linked, edge_chain = links
    n_nodes = len(spacepoints)
    owner = edge_chain[linked]
    arriving_key, leaving_key = owner * n_nodes + edges[1][linked], owner * n_nodes + edges[0][linked]
    by_arriving, by_leaving = np.argsort(arriving_key, kind="stable"), np.argsort(leaving_key, kind="stable")
    arriving_key, leaving_key = arriving_key[by_arriving], leaving_key[by_leaving]
    result = np.full(len(one), np.inf)
    for inner, outer in ((one, other), (other, one)):
        arriving_at, leaving_at = inner * n_nodes + at_hit, outer * n_nodes + at_hit
        arriving_start = np.searchsorted(arriving_key, arriving_at)
        n_in = np.searchsorted(arriving_key, arriving_at, side="right") - arriving_start
        leaving_start = np.searchsorted(leaving_key, leaving_at)
        n_out = np.searchsorted(leaving_key, leaving_at, side="right") - leaving_start
        count = n_in * n_out
        pair = np.repeat(np.arange(len(one)), count)
        i, j = np.divmod(ranks_within(count), np.maximum(n_out[pair], 1))
        before = linked[by_arriving[arriving_start[pair] + i]]
        after = linked[by_leaving[leaving_start[pair] + j]]
        local = np.concatenate((edges[:, before], edges[:, after]), axis=1)
        index = np.arange(len(pair))
        np.minimum.at(result, pair, triplet_costs(spacepoints, local, index, index + len(pair)))
    return result


def _with_overlap_hits(
    spacepoints: Spacepoints, labels: np.ndarray, edges: np.ndarray, overlaps: np.ndarray, max_cost: float
) -> np.ndarray:
    """``labels`` with the hits left out (-1) added to a candidate when an edge of ``overlaps`` (pairs of hits on one
    layer) joins them to one of its hits u, and the hit continues the track as u does: for some edge of the candidate
    between u and a hit w of another layer, the edge from the left-out hit to w has the polar direction and the
    curvature through the origin of the edge u–w (triplet cost below ``max_cost``, :func:`triplet_costs`).  That is
    the second hit of a particle crossing two overlapping modules where no link reaches it (the track's first or last
    layer, or a third module of one layer); a hit beside the track, not along it, fails.  A hit offered to several
    candidates goes to the one it fits best.  A particle leaves at most one hit on a module: a candidate takes no hit
    on a module it holds a hit on already, and of the hits offered to it on one module only the one it fits best."""
    hit, partner = np.concatenate((overlaps[0], overlaps[1])), np.concatenate((overlaps[1], overlaps[0]))
    offered = (labels[hit] < 0) & (labels[partner] >= 0)
    hit, partner = hit[offered], partner[offered]
    inside = (labels[edges[0]] >= 0) & (labels[edges[0]] == labels[edges[1]])  # the candidates' own edges
    ends = np.concatenate((edges[0][inside], edges[1][inside]))
    other = np.concatenate((edges[1][inside], edges[0][inside]))
    if not len(hit) or not len(ends):
        return labels
    by_end = np.argsort(ends, kind="stable")
    start = np.searchsorted(ends[by_end], np.arange(len(labels) + 1))
    count = np.diff(start)[partner]
    offer = np.repeat(np.arange(len(hit)), count)  # each offer with each edge of the candidate at its partner
    slot = concatenated_ranges(start[partner], count)
    far = other[by_end[slot]]
    distance = spacepoints.distance
    track_edge = np.stack((partner[offer], far))
    new_edge = np.stack((hit[offer], far))
    local = np.concatenate([np.where(distance[e[0]] > distance[e[1]], e[::-1], e) for e in (track_edge, new_edge)],
                           axis=1)  # fmt: skip
    index = np.arange(len(offer))
    cost = triplet_costs(spacepoints, local, index, index + len(offer))
    module = np.unique(spacepoints.module_key, return_inverse=True)[1]  # modules numbered from 0
    n_modules = int(module.max()) + 1
    on_track = labels >= 0
    held = np.unique(labels[on_track] * n_modules + module[on_track])  # the (candidate, module) pairs taken
    good = (cost < max_cost) & ~np.isin(labels[partner[offer]] * n_modules + module[hit[offer]], held)
    offer, cost = offer[good], cost[good]
    order = np.lexsort((cost, hit[offer]))  # per left-out hit, the best fit first
    offer, cost = offer[order], cost[order]
    first = first_of_runs(hit[offer])
    offer, cost = offer[first], cost[first]
    # per candidate and module, the hit it fits best
    candidate_module = labels[partner[offer]] * n_modules + module[hit[offer]]
    order = np.lexsort((cost, candidate_module))
    offer = offer[order[first_of_runs(candidate_module[order])]]
    result = labels.copy()
    result[hit[offer]] = labels[partner[offer]]
    return result


def _bypassed(n_nodes: int, edges: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Mask [E] of the edges a → c that the triplets (``first``, ``second``) a → b → c go around.

    Such an edge skips a layer where the track has a hit.  Left in, it competes with the two edges for the links:
    when it wins at one end and loses at the other, the track's chain splits in two at the skipped hit."""
    around = edges[0][first].astype(np.int64) * n_nodes + edges[1][second]
    return np.isin(edges[0].astype(np.int64) * n_nodes + edges[1], around)


def _edge_parameters(spacepoints: Spacepoints, edges: np.ndarray) -> np.ndarray:
    """[E, 5] track parameters of each edge's helix through the origin: polar angle, cos and sin of the azimuth at
    the origin, curvature (1/mm) and z at the beam line (mm)."""
    x, y, z, r = spacepoints.x, spacepoints.y, spacepoints.z, spacepoints.r
    inner, outer = edges
    curvature = _curvature_through_origin(x[inner], y[inner], x[outer], y[outer])
    phi0 = np.arctan2(y[inner], x[inner]) - np.arcsin(np.clip(curvature * r[inner] / 2, -1.0, 1.0))
    dr = r[outer] - r[inner]
    slope = (z[outer] - z[inner]) / np.where(np.abs(dr) > 1e-3, dr, 1e-3)
    theta = np.arctan2(dr, z[outer] - z[inner])
    return np.column_stack((theta, np.cos(phi0), np.sin(phi0), curvature, z[inner] - r[inner] * slope))


def _bridged(
    spacepoints: Spacepoints,
    edges: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    chain: np.ndarray,
    max_cost: float,
    overlap_mm: float = 0.0,
) -> np.ndarray:
    """``chain`` (per edge) with chains joined across a missing edge. The last edge of one chain and the first edge of
    another are joined when their helices through the origin agree within :data:`BRIDGE_WIDTHS`, the second starts
    farther out on another layer, both triplets through the virtual edge between them (from the one's last hit to
    the other's first) cost less than ``max_cost``, and each is the other's best such partner.  When the one's last
    hit and the other's first are on different modules of one layer at most ``overlap_mm`` apart (overlapping
    modules, either nearer the origin), the virtual edge measures no direction: the triplet of the two chains' edges
    themselves must cost less than ``max_cost``."""
    n_edges = edges.shape[1]
    in_chain, has_next, has_prev = (np.zeros(n_edges, dtype=bool) for _ in range(3))
    in_chain[first] = in_chain[second] = has_next[first] = has_prev[second] = True
    ends = np.flatnonzero(in_chain & ~has_next)
    starts = np.flatnonzero(in_chain & ~has_prev)
    if not len(ends) or not len(starts):
        return chain
    scale = 1.0 / np.asarray(BRIDGE_WIDTHS)
    k = min(8, len(starts))
    # a sliding-midpoint tree builds about 30 % faster than the default balanced one, and the query is as exact
    tree = cKDTree(_edge_parameters(spacepoints, edges[:, starts]) * scale, balanced_tree=False)
    ends_scaled = _edge_parameters(spacepoints, edges[:, ends]) * scale
    workers = usable_cores() if len(ends) >= 2 * MIN_PER_THREAD else 1
    _, near = tree.query(ends_scaled, k=k, distance_upper_bound=1.0, workers=workers)
    found = near.ravel() < len(starts)
    end, start = np.repeat(ends, k)[found], starts[near.ravel()[found]]
    gap = np.stack((edges[1][end], edges[0][start]))  # the virtual edge: last hit of one chain → first of the other
    distance, layer = spacepoints.distance, spacepoints.layer_key
    overlap = _overlapping(spacepoints, gap, overlap_mm)
    outwards = (distance[gap[1]] > distance[gap[0]]) & (layer[gap[1]] != layer[gap[0]])
    ok = (chain[end] != chain[start]) & (outwards | overlap)
    end, start, gap, overlap = end[ok], start[ok], gap[:, ok], overlap[ok]
    m = len(end)
    local = np.concatenate((edges[:, end], gap, edges[:, start]), axis=1)
    index = np.arange(m)
    cost = np.maximum(
        triplet_costs(spacepoints, local, index, index + m), triplet_costs(spacepoints, local, index + m, index + 2 * m)
    )
    if overlap.any():
        cost[overlap] = triplet_costs(spacepoints, local, index[overlap], index[overlap] + 2 * m)
    good = cost < max_cost
    end, start, cost = end[good], start[good], cost[good]
    best_start = _best_partner(end, start, cost, n_edges)
    best_end = _best_partner(start, end, cost, n_edges)
    joined = np.flatnonzero(best_start >= 0)
    joined = joined[best_end[best_start[joined]] == joined]
    n_chains = int(chain.max()) + 1
    pairs = (chain[joined], chain[best_start[joined]])
    joins = coo_matrix((np.ones(len(joined), dtype=np.int8), pairs), shape=(n_chains, n_chains))
    return connected_components(joins, directed=False)[1][chain]


def _overlapping(spacepoints: Spacepoints, pairs: np.ndarray, overlap_mm: float) -> np.ndarray:
    """Mask over the hit ``pairs`` [2, P] that lie on different modules of one layer at most ``overlap_mm`` apart."""
    a, b = pairs
    other_module = (spacepoints.layer_key[a] == spacepoints.layer_key[b]) & (
        spacepoints.module_id[a] != spacepoints.module_id[b]
    )
    return other_module & (_distance(spacepoints, a, b) <= overlap_mm)


def _distance(spacepoints: Spacepoints, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (mm) between the hits ``a`` and ``b`` (row indices, pairwise)."""
    return np.sqrt((spacepoints.x[a] - spacepoints.x[b]) ** 2 + (spacepoints.y[a] - spacepoints.y[b]) ** 2
                   + (spacepoints.z[a] - spacepoints.z[b]) ** 2)  # fmt: skip


def _assign_hits(
    chain: np.ndarray, hit: np.ndarray, cost: np.ndarray, n_chains: int, min_hits: int, by_fit: bool = False
) -> np.ndarray:
    """Indices of the (``chain``, ``hit``) pairs that win their hit: a hit in several chains goes to the chain with
    most hits, and among those to the one whose links fit best there (lowest ``cost``); with ``by_fit``, every chain
    of at least ``min_hits`` hits counts as long as the longest, so that among those the fit decides.  Chain sizes
    count the hits a chain wins: after a first assignment by all its hits, the sizes are recounted (a chain left
    with fewer than ``min_hits`` counts 0 and gives up all its hits) and the hits assigned again,
    :data:`ASSIGNMENT_PASSES` times."""
    by_cost = np.lexsort((chain, cost, hit))  # once; each pass re-sorts by size within a hit, stably
    chain, hit = chain[by_cost], hit[by_cost]
    first_of_hit = np.ones(len(hit), dtype=bool)
    first_of_hit[1:] = hit[1:] != hit[:-1]
    size = np.bincount(chain, minlength=n_chains)
    for _ in range(ASSIGNMENT_PASSES + 1):
        if by_fit:
            size = np.minimum(size, min_hits)
        largest = int(size.max(initial=0))
        order = np.argsort(hit * (largest + 1) + (largest - size[chain]), kind="stable")
        won = order[first_of_hit]  # the hits' runs keep their places: the sort moves rows within a hit only
        size = np.bincount(chain[won], minlength=n_chains)
        size[size < min_hits] = 0
    return by_cost[won]


def _with_revived_chains(
    chain: np.ndarray, hit: np.ndarray, cost: np.ndarray, won: np.ndarray, n_chains: int, min_hits: int
) -> np.ndarray:
    """``won`` (the indices of the (``chain``, ``hit``) pairs that won their hit, :func:`_assign_hits`) with the
    chains that were dropped there (fewer than ``min_hits`` hits won) revived where at least ``min_hits`` of their
    hits are held by no kept chain.

    The assignment decides every shared hit at once, so a chain can lose a hit or two to each of several others,
    fall under ``min_hits`` and give up the rest, while those others lose theirs in the same way: the hits then lie
    on no candidate.  (A particle with a few more hits than ``min_hits`` whose chain runs through a dense region,
    losing hits to pieces of other particles' tracks, is lost whole.)  The dropped chains with at least ``min_hits``
    such free hits take them one chain after another, the chain with most free hits first (of equals, the lower
    mean link cost at those hits, then the lower chain number); a chain whose free hits, less those taken before it,
    fall under ``min_hits`` stays dropped.  The same order is reached in rounds: each round revives every chain that
    no better-placed chain still in the running shares a hit with.  The fit decides which revived chains are
    tracks."""
    won_size = np.bincount(chain[won], minlength=n_chains)
    kept = won_size >= min_hits
    held = np.zeros(int(hit.max(initial=-1)) + 1, dtype=bool)
    held[hit[won[kept[chain[won]]]]] = True
    pairs = np.flatnonzero(~kept[chain] & ~held[hit])  # the dropped chains' claims on free hits
    free = np.bincount(chain[pairs], minlength=n_chains)
    mean_cost = np.bincount(chain[pairs], weights=cost[pairs], minlength=n_chains) / np.maximum(free, 1)
    running = np.flatnonzero(free >= min_hits)
    if not len(running):
        return won
    place = np.full(n_chains, n_chains)  # n_chains: out of the running
    place[running[np.lexsort((running, mean_cost[running], -free[running]))]] = np.arange(len(running))
    pairs = pairs[place[chain[pairs]] < n_chains]
    revived = []
    while len(pairs):
        best = np.full(len(held), n_chains)
        np.minimum.at(best, hit[pairs], place[chain[pairs]])
        waiting = np.zeros(n_chains, dtype=bool)
        waiting[chain[pairs[best[hit[pairs]] < place[chain[pairs]]]]] = True
        taken = pairs[~waiting[chain[pairs]]]
        held[hit[taken]] = True
        revived.append(taken)
        pairs = pairs[~held[hit[pairs]]]
        pairs = pairs[np.bincount(chain[pairs], minlength=n_chains)[chain[pairs]] >= min_hits]
    revived_pairs = np.concatenate(revived)
    on_revived = np.zeros(len(held), dtype=bool)
    on_revived[hit[revived_pairs]] = True
    return np.concatenate((won[~on_revived[hit[won]]], revived_pairs))


def _best_partner(
    key: np.ndarray, partner: np.ndarray, cost: np.ndarray, size: int, grouped: bool = False
) -> np.ndarray:
    """For each of ``size`` keys, the partner with the lowest cost (-1 where the key has none; of equal costs, the
    highest partner index); ``grouped``: ``key`` is sorted already."""
    best = np.full(size, -1, dtype=np.int64)
    if len(key) == 0:
        return best
    if not grouped:  # a sparse matrix sorts by key in one pass, keeping the order within a key
        table = csr_matrix((cost, (key, np.arange(len(key)))), shape=(size, len(key)))
        key, partner, cost = np.repeat(np.arange(size), np.diff(table.indptr)), partner[table.indices], table.data
    starts = np.flatnonzero(np.diff(key, prepend=-1))
    wins = cost == np.repeat(np.minimum.reduceat(cost, starts), np.diff(starts, append=len(key)))
    best[key[starts]] = np.maximum.reduceat(np.where(wins, partner, -1), starts)
    return best


def admitted_weak_edges(
    spacepoints: Spacepoints, edges: np.ndarray, weak: np.ndarray, max_cost: float, overlap_mm: float
) -> np.ndarray:
    """Mask [E] of the ``edges`` [2, E] to build with: those not ``weak`` [E], and each weak edge that a triplet
    cheaper than ``max_cost`` (:func:`triplet_costs`) joins to an edge arriving at its inner hit and one to an edge
    leaving its outer hit (either may be weak).  Where the GNN scored one edge of a particle just under its cut, the
    chain would break there, and the building's links leave each piece to other chains.  Edges between overlapping
    modules (at most ``overlap_mm`` apart) are not admitted: hits millimetres apart measure no direction."""
    use = ~weak
    plain = np.flatnonzero(~_overlapping(spacepoints, edges, overlap_mm))
    local = edges[:, plain]
    tried = np.flatnonzero(weak[plain])
    if not len(tried):
        return use
    arriving, arriving_start = _grouped(len(spacepoints), local[1])
    leaving, leaving_start = _grouped(len(spacepoints), local[0])
    inner, outer = local[:, tried]
    n_in = arriving_start[inner + 1] - arriving_start[inner]
    n_out = leaving_start[outer + 1] - leaving_start[outer]
    # the triplets (edge arriving, weak edge), then (weak edge, edge leaving), in one call
    n_before = int(n_in.sum())
    first = np.concatenate((arriving[concatenated_ranges(arriving_start[inner], n_in)], np.repeat(tried, n_out)))
    second = np.concatenate((np.repeat(tried, n_in), leaving[concatenated_ranges(leaving_start[outer], n_out)]))
    cheap = triplet_costs(spacepoints, local, first, second) < max_cost
    joined_in, joined_out = second[:n_before][cheap[:n_before]], first[n_before:][cheap[n_before:]]
    use[plain[np.intersect1d(joined_in, joined_out)]] = True
    return use


class TrackBuilding:
    """Stage 4: accepted edges and their scores → :class:`TrackCandidates`."""

    def __init__(self, config: BuildingConfig) -> None:
        self.config = config

    def run(
        self, spacepoints: Spacepoints, edges: np.ndarray, scores: np.ndarray, weak: np.ndarray | None = None
    ) -> TrackCandidates:
        """Track candidates of one event from its accepted edges [2, E] (inner hit first) and their scores; ``weak``
        [E] marks the weak edges among them (``[finding.gnn] weak_cut``), which the ``triplets`` building takes only
        where :func:`admitted_weak_edges` admits them, and the other methods not at all."""
        config = self.config
        if weak is not None and weak.any():
            use = ~weak
            if config.method == "triplets":
                use = admitted_weak_edges(spacepoints, edges, weak, config.max_weak_triplet_cost, config.max_overlap_mm)
            edges, scores = edges[:, use], scores[use]
        if config.method == "triplets":
            bridge_cost = config.max_bridge_cost if config.bridge_gaps else 0.0
            labels = triplet_labels(spacepoints, edges, config.max_triplet_cost, config.min_hits, bridge_cost,
                                    config.max_bypass_cost, config.max_overlap_mm, config.link_overlaps, scores,
                                    config.score_weight, config.max_crossing_cost,
                                    config.shared_hits == "best_fit", config.revive_chains,
                                    config.complete_by_overlaps)  # fmt: skip
            return TrackCandidates(labels=labels)
        if config.method == "walkthrough":
            edges = edges[:, best_edges(edges, scores)]
        return TrackCandidates(labels=component_labels(len(spacepoints), edges, config.min_hits))
