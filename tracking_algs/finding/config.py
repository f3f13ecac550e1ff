"""Configuration of the track finder (the ``[finding]`` table of the job options)."""

from __future__ import annotations

from typing import Literal

import attrs
from attrs import validators as v

from inference_iface.options import finite, integer

#: Largest distance (mm) between two hits of one layer on different modules that can be one particle crossing two
#: overlapping modules.  In the module simulation (pile-up 20, seed 1000) 99 % of the truth edges within a layer are
#: shorter than 22 mm; the rest are loopers coming back to the layer (docs/physics.md, "Overlapping modules").
OVERLAP_MM = 30.0


@attrs.frozen(kw_only=True)
class PairCuts:
    """Geometric cuts on a candidate pair of hits, applied to the embedding neighbours before the ``k_max`` cap
    (:mod:`tracking_algs.finding.pairs`): the two hits on different layers; the circle through the beam line
    and both hits no tighter than a track of ``min_pt_gev`` in the field of the detector (the job's ``[job]
    detector``); the line through both hits in r-z within ``max_z0_mm`` of the origin along the beam line.
    0 / ``false`` switches a cut off.

    With ``different_layers``, a pair on one layer still passes when its hits lie on different modules at most
    ``max_overlap_mm`` apart (an *overlap pair*: one particle crossing two overlapping modules of the layer); the pT
    and z₀ cuts do not apply to it (hits millimetres apart do not measure a direction).  ``max_overlap_mm`` 0
    drops every pair on one layer."""

    different_layers: bool = attrs.field(default=True, validator=v.instance_of(bool))
    max_overlap_mm: float = attrs.field(default=OVERLAP_MM, validator=[finite, v.ge(0.0)])
    min_pt_gev: float = attrs.field(default=0.5, validator=[finite, v.ge(0.0)])
    max_z0_mm: float = attrs.field(default=400.0, validator=[finite, v.ge(0.0)])


@attrs.frozen(kw_only=True)
class GraphConfig:
    """Graph construction: fixed-radius neighbours in the embedding space.

    ``radius`` 0 means the radius recommended in the model card. Each spacepoint's query looks at its
    ``query_k`` nearest neighbours inside the radius, drops those that fail the pair ``cuts`` and adds the
    ``k_max`` nearest of the rest (``query_k`` below ``k_max`` counts as ``k_max``). ``eps`` > 0 makes the
    KD-tree's search approximate: each neighbour it returns is within (1 + ``eps``) times the distance of the
    true one of that rank (0: exact; ``faiss`` is always exact).
    """

    method: Literal["kdtree", "faiss"] = attrs.field(default="kdtree", validator=v.in_(("kdtree", "faiss")))
    radius: float = attrs.field(default=0.0, validator=[finite, v.ge(0.0)])
    k_max: int = attrs.field(default=64, validator=[integer, v.gt(0)])
    query_k: int = attrs.field(default=80, validator=[integer, v.gt(0)])
    eps: float = attrs.field(default=0.05, validator=[finite, v.ge(0.0)])
    cuts: PairCuts = attrs.field(default=PairCuts(), validator=v.instance_of(PairCuts))


@attrs.frozen(kw_only=True)
class FilterConfig:
    """Edge filtering: keep edges with score > ``cut`` (0 means the model card's cut); ``chunk_size``
    edges per inference call bound the memory."""

    cut: float = attrs.field(default=0.0, validator=[finite, v.ge(0.0), v.lt(1.0)])
    chunk_size: int = attrs.field(default=500_000, validator=[integer, v.gt(0)])


@attrs.frozen(kw_only=True)
class GNNConfig:
    """GNN edge classification: edges with score > ``cut`` go on to track building. The default suits the
    ``triplets`` building, which sorts out the wrong edges by their geometry; plain ``components`` needs a cut
    near 0.5 or above. With ``weak_cut`` > 0 (below ``cut``), the edges scored above it but not above ``cut`` go to
    the ``triplets`` building as *weak* edges, which it takes only where one continues the track on both sides
    (``[finding.building] max_weak_triplet_cost``); 0 gives it none."""

    cut: float = attrs.field(default=0.15, validator=[finite, v.gt(0.0), v.lt(1.0)])
    weak_cut: float = attrs.field(default=0.0, validator=[finite, v.ge(0.0)])

    @weak_cut.validator
    def _below_cut(self, _attribute: attrs.Attribute, value: float) -> None:
        if value >= self.cut:
            raise ValueError(f"weak_cut {value} must be below cut {self.cut} (0: no weak edges)")


@attrs.frozen(kw_only=True)
class BuildingConfig:
    """Track building (:mod:`tracking_algs.finding.building`): ``triplets`` (the default: chains of edges linked where
    the polar direction and the curvature agree along three hits, each link the best for both its edges;
    ``max_triplet_cost`` bounds the χ²-like mismatch of a link), ``walkthrough`` (components after keeping, at each hit,
    only its best-scoring edge outwards and inwards) or ``components`` (plain connected components); candidates with
    fewer than ``min_hits`` hits are dropped. With ``bridge_gaps`` (``triplets``), chains whose helices agree are joined
    across a missing edge when both triplets through the gap cost less than ``max_bridge_cost``. An edge that skips a
    layer where a triplet of two edges cheaper than ``max_bypass_cost`` goes around it is left out of the links
    (``triplets``; 0 keeps it). An edge between two modules of one layer at most ``max_overlap_mm`` apart (overlapping
    modules) takes no links; with ``link_overlaps`` the edges arriving at one of its hits link to those leaving the
    other (better with models trained on the module simulation, worse with the shipped cylinder-trained ones, whose GNN
    keeps many false such edges); with it or without, a hit it joins to a candidate's hit that no link reaches is added
    to that candidate when it continues the track in that hit's direction; a chain ending on one module and another
    starting on an overlapping module of the same layer may be bridged (``triplets``; 0 treats those edges like any
    other). With ``score_weight`` > 0 (``triplets``) an edge's GNN score counts when links are chosen: each link costs
    its triplet mismatch plus ``score_weight`` × (−ln s) for the score s of each of its two edges, so that of two
    partners that fit alike the edge the GNN trusts more wins; which triplets may link (``max_triplet_cost``,
    ``max_bypass_cost``) stays a matter of geometry. A chain left with fewer than ``min_hits`` hits after the shared
    hits are assigned gives its other hits to the kept chain that won them where the two continue each other (a triplet
    cheaper than ``max_crossing_cost`` at a shared hit: two chains of one particle through overlapping modules that
    cross; ``triplets``; 0 drops the short chain's hits).
    ``shared_hits`` (``triplets``) says which chain wins a hit several chains claim: ``"longest"`` (the default;
    of equal lengths the one whose links fit best there) or ``"best_fit"`` (of the chains of at least ``min_hits``
    hits, whatever their lengths, the one whose links fit best there; a shorter chain loses to them, and among such
    chains the longest wins). With ``revive_chains`` (``triplets``), a chain that the assignment of shared hits drops
    (it won fewer than ``min_hits``) takes back the hits no kept chain holds, where at least ``min_hits`` are free
    (chains whose rivals for their hits were dropped as well; the chains with most free hits first). With
    ``complete_by_overlaps`` (``triplets``, with ``max_overlap_mm`` > 0), the hits of overlapping modules join the
    chains one hit short of ``min_hits`` too, before the cut, not only the candidates kept (a particle of five
    hits, two on one layer, whose chain holds the other four). A weak edge (``[finding.gnn] weak_cut``;
    ``triplets``) is built with where a triplet cheaper than ``max_weak_triplet_cost`` joins it to an edge on each
    side, weak or not (an edge of a particle whose score fell just under the cut, between two that did not). The
    measured effect of each: docs/physics.md."""

    method: Literal["triplets", "walkthrough", "components"] = attrs.field(
        default="triplets", validator=v.in_(("triplets", "walkthrough", "components"))
    )
    min_hits: int = attrs.field(default=5, validator=[integer, v.ge(1)])
    max_triplet_cost: float = attrs.field(default=25.0, validator=[finite, v.gt(0.0)])
    bridge_gaps: bool = attrs.field(default=True, validator=v.instance_of(bool))
    max_bridge_cost: float = attrs.field(default=9.0, validator=[finite, v.gt(0.0)])
    max_bypass_cost: float = attrs.field(default=9.0, validator=[finite, v.ge(0.0)])
    max_overlap_mm: float = attrs.field(default=OVERLAP_MM, validator=[finite, v.ge(0.0)])
    link_overlaps: bool = attrs.field(default=False, validator=v.instance_of(bool))
    score_weight: float = attrs.field(default=0.0, validator=[finite, v.ge(0.0)])
    max_crossing_cost: float = attrs.field(default=1.0, validator=[finite, v.ge(0.0)])
    max_weak_triplet_cost: float = attrs.field(default=2.0, validator=[finite, v.gt(0.0)])
    shared_hits: Literal["longest", "best_fit"] = attrs.field(
        default="longest", validator=v.in_(("longest", "best_fit"))
    )
    revive_chains: bool = attrs.field(default=False, validator=v.instance_of(bool))
    complete_by_overlaps: bool = attrs.field(default=False, validator=v.instance_of(bool))


@attrs.frozen(kw_only=True)
class FindingConfig:
    """The whole finder. ``model_dir`` empty means the models shipped with the package.

    ``serving`` says where the chain runs: ``"stages"`` (default) runs graph and track building in the job and
    each neural stage on its configured backend; ``"chain"`` or ``"ensemble"`` sends each event whole to the
    ``tracking_chain`` model or the ``tracking_ensemble`` ensemble on the ``[inference]`` backend's server
    (written by ``trkx repo add-tracking``; see :mod:`tracking_algs.finding.served`).
    """

    model_dir: str = attrs.field(default="", validator=v.instance_of(str))
    serving: Literal["stages", "chain", "ensemble"] = attrs.field(
        default="stages", validator=v.in_(("stages", "chain", "ensemble"))
    )
    graph: GraphConfig = attrs.field(default=GraphConfig(), validator=v.instance_of(GraphConfig))
    filter: FilterConfig = attrs.field(default=FilterConfig(), validator=v.instance_of(FilterConfig))
    gnn: GNNConfig = attrs.field(default=GNNConfig(), validator=v.instance_of(GNNConfig))
    building: BuildingConfig = attrs.field(default=BuildingConfig(), validator=v.instance_of(BuildingConfig))
