"""The three neural networks of the Exa.TrkX-style chain, in torch (training and export only).

* :class:`EmbeddingNet` maps per-spacepoint features to a low-dimensional space in which hits of one
  particle lie close together (metric learning).
* :class:`FilterNet` scores a candidate edge from the features and embeddings of its two hits and
  their doublet geometry (:func:`pair_features`, computed inside the model).
* :class:`InteractionGNN` is an interaction network: node and edge encoders, several message-passing
  iterations with residual node and edge updates and sum + max aggregation, and an edge classifier.

Edges are ``edge_index`` [2, E] int64 tensors (row 0: inner hit, row 1: outer hit). Every model returns
probabilities (sigmoid applied) so that the exported ONNX graph is the whole stage. The aggregation
(:func:`sum_max_aggregate`) is ``scatter_add``/``scatter_reduce(amax)`` on a zero base: the max therefore
includes 0 (it is the max of the non-negative part of the messages), and a node without edges aggregates
to 0. Outside training it runs as the custom op ``trkx::sum_max_aggregate``, which the export writes in
the gather-and-reduce form of :mod:`tracking_algs.finding.aggregation_onnx` (ONNX Runtime runs the
scatter form one element at a time).
"""

from __future__ import annotations

import torch
from torch import nn


def mlp(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    """Linear layers with LayerNorm + ReLU between them and a plain linear output layer."""
    layers: list[nn.Module] = []
    width = n_in
    for size in hidden:
        layers += [nn.Linear(width, size), nn.LayerNorm(size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


#: Number of columns :func:`pair_features` adds for an edge.
N_PAIR_FEATURES = 7


def pair_features(inner: torch.Tensor, outer: torch.Tensor) -> torch.Tensor:
    """Doublet geometry of edges from the hit features (``r/1000, cos, sin, z/1000, eta/3``) of both ends:
    dr, dz, sin(dphi), deta, the beam-line intercept z0 of the straight line through both hits (×10,
    clipped to ±10) and the azimuthal slopes sin(dphi)/|dr| and sin(dphi)/|dz| (curvature proxies)."""
    r_i, cos_i, sin_i, z_i, eta_i = inner[:, 0], inner[:, 1], inner[:, 2], inner[:, 3], inner[:, 4]
    r_j, cos_j, sin_j, z_j, eta_j = outer[:, 0], outer[:, 1], outer[:, 2], outer[:, 3], outer[:, 4]
    dr, dz = r_j - r_i, z_j - z_i
    sin_dphi = sin_j * cos_i - cos_j * sin_i
    z0 = torch.clamp(10.0 * (z_i * r_j - z_j * r_i) * torch.sign(dr) / (dr.abs() + 0.02), -10.0, 10.0)
    columns = (dr, dz, sin_dphi, eta_j - eta_i, z0, sin_dphi / (dr.abs() + 0.02), sin_dphi / (dz.abs() + 0.02))
    return torch.stack(columns, dim=1)


def _edge_mlp(
    net: nn.Sequential, nodes: torch.Tensor, inner: torch.Tensor, outer: torch.Tensor, edges: torch.Tensor
) -> torch.Tensor:
    """``net(cat([nodes[inner], nodes[outer], edges], 1))`` of an :func:`mlp`, computed without the
    [E, 3H] concatenation: the first layer's node blocks act on the N nodes and their results are
    gathered to the E ≫ N edges (the same sum of products, in another order)."""
    first = net[0]
    width = nodes.shape[1]
    w_inner, w_outer, w_edge = first.weight.split([width, width, first.in_features - 2 * width], dim=1)
    hidden = (
        torch.index_select(nn.functional.linear(nodes, w_inner), 0, inner)
        + torch.index_select(nn.functional.linear(nodes, w_outer), 0, outer)
        + nn.functional.linear(edges, w_edge, first.bias)
    )
    return net[1:](hidden)


class EmbeddingNet(nn.Module):
    """Per-spacepoint features [N, F] → embedding [N, D]."""

    def __init__(self, n_features: int, hidden: tuple[int, ...] = (64, 64), dim: int = 8) -> None:
        super().__init__()
        self.n_features, self.dim = n_features, dim
        self.net = mlp(n_features, hidden, dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class FilterNet(nn.Module):
    """Edge score from both hits' features and embeddings: ([N, F], [N, D], [2, E]) → [E] in (0, 1)."""

    def __init__(self, n_features: int, dim: int, hidden: tuple[int, ...] = (64, 64)) -> None:
        super().__init__()
        self.n_features, self.dim = n_features, dim
        self.net = mlp(2 * (n_features + dim) + N_PAIR_FEATURES, hidden, 1)

    def logits(self, features: torch.Tensor, embedding: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Scores before the sigmoid (for training with BCE-with-logits)."""
        nodes = torch.cat([features, embedding], dim=1)
        inner, outer = (torch.index_select(nodes, 0, row) for row in edge_index)  # one gather per end
        n = features.shape[1]
        pairs = torch.cat([inner, outer, pair_features(inner[:, :n], outer[:, :n])], dim=1)
        return self.net(pairs).squeeze(-1)

    def forward(self, features: torch.Tensor, embedding: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(features, embedding, edge_index))


def _scatter_aggregate(
    messages: torch.Tensor, index: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and (non-negative) max of edge ``messages`` [E, H] onto nodes ``index`` [E] of N nodes, N the
    number of ``rows`` (any tensor with one row per node)."""
    expanded = index.unsqueeze(1).expand_as(messages)
    base = messages.new_zeros((rows.shape[0], messages.shape[1]))
    summed = base.scatter_add(0, expanded, messages)
    maxed = base.scatter_reduce(0, expanded, messages, reduce="amax", include_self=True)
    return summed, maxed


@torch.library.custom_op("trkx::sum_max_aggregate", mutates_args=())
def sum_max_aggregate(
    messages: torch.Tensor, index: torch.Tensor, rows: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The aggregation as one op (no autograd), so that the ONNX export can give it its own form."""
    return _scatter_aggregate(messages, index, rows)


@sum_max_aggregate.register_fake
def _(messages: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (rows.shape[0], messages.shape[1])
    return messages.new_empty(shape), messages.new_empty(shape)


def _aggregate(messages: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum and max of ``messages`` onto the nodes: differentiable scatters in training, the op otherwise."""
    if messages.requires_grad:
        return _scatter_aggregate(messages, index, rows)
    return sum_max_aggregate(messages, index, rows)


class InteractionGNN(nn.Module):
    """Interaction network edge classifier: ([N, F], [2, E]) → [E] in (0, 1).

    Each iteration updates edges residually from (inner node, outer node, edge) and nodes residually
    from (node, sum and max of messages from inner neighbours, sum and max from outer neighbours).
    """

    def __init__(self, n_features: int, hidden: int = 48, iterations: int = 4) -> None:
        super().__init__()
        self.n_features = n_features
        self.node_encoder = mlp(n_features, (hidden,), hidden)
        self.edge_encoder = mlp(2 * n_features + N_PAIR_FEATURES, (hidden,), hidden)
        self.edge_updates = nn.ModuleList(mlp(3 * hidden, (hidden,), hidden) for _ in range(iterations))
        self.node_updates = nn.ModuleList(mlp(5 * hidden, (hidden,), hidden) for _ in range(iterations))
        self.classifier = mlp(3 * hidden, (hidden,), 1)

    def logits(self, features: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Scores before the sigmoid (for training with BCE-with-logits)."""
        inner, outer = edge_index[0], edge_index[1]
        nodes = self.node_encoder(features)
        ends = (torch.index_select(features, 0, inner), torch.index_select(features, 0, outer))
        edges = self.edge_encoder(torch.cat([*ends, pair_features(*ends)], dim=1))
        for edge_update, node_update in zip(self.edge_updates, self.node_updates, strict=True):
            edges = edges + _edge_mlp(edge_update, nodes, inner, outer, edges)
            to_outer = _aggregate(edges, outer, features)  # features: the same N rows in every iteration
            to_inner = _aggregate(edges, inner, features)
            nodes = nodes + node_update(torch.cat([nodes, *to_outer, *to_inner], dim=1))
        return _edge_mlp(self.classifier, nodes, inner, outer, edges).squeeze(-1)

    def forward(self, features: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(features, edge_index))
