"""Compaction of a trained embedding onto the principal axes that carry its spread.

The embedding MLP maps each hit's handful of features into ``dim`` dimensions, but its outputs fill only a few of
them: the shipped 12-dimensional embedding has five axes with a spread of 0.45–4.7 and seven below 0.012, against a
graph radius of 0.7.  The axes without spread hardly change any distance, yet the KD-tree of the graph construction
and the filter's input pay for all of them.  :func:`compact_models` therefore projects the embedding onto the
principal axes whose standard deviation is at least a fraction of the radius, and folds the projection into the
embedding's last layer and into the filter's first layer, so that both models keep their signatures (only the
width of ``embedding`` shrinks) and the filter's scores stay those of the full embedding up to the dropped spread.
"""

from __future__ import annotations

import copy

import attrs
import numpy as np
import torch
from torch import nn

from tracking_algs.finding.models import EmbeddingNet, FilterNet


@attrs.frozen
class PrincipalAxes:
    """The kept axes of an embedding: ``mean`` [D], ``axes`` [D, K] (orthonormal columns, largest spread first) and
    the standard deviation along every principal axis, kept or not (``spread`` [D], descending)."""

    mean: np.ndarray
    axes: np.ndarray
    spread: np.ndarray


def principal_axes(embeddings: np.ndarray, min_spread: float) -> PrincipalAxes:
    """The principal axes of ``embeddings`` [M, D] with a standard deviation of at least ``min_spread`` (at least
    one axis is kept; ``min_spread`` 0 keeps all of them)."""
    points = np.asarray(embeddings, dtype=np.float64)
    mean = points.mean(axis=0)
    variance, vectors = np.linalg.eigh(np.cov(points, rowvar=False))
    spread = np.sqrt(np.clip(variance[::-1], 0.0, None))
    kept = max(1, int(np.count_nonzero(spread >= min_spread)))
    return PrincipalAxes(mean=mean, axes=np.ascontiguousarray(vectors[:, ::-1][:, :kept]), spread=spread)


def compact_models(
    embedding: EmbeddingNet, filter_model: FilterNet, principal: PrincipalAxes
) -> tuple[EmbeddingNet, FilterNet]:
    """Copies of both models for the embedding ``(embedding(x) − mean) @ axes``: the projection folded into the
    embedding's last linear layer, and its transpose into the embedding columns of the filter's first layer."""
    mean = torch.as_tensor(principal.mean, dtype=torch.float64)
    axes = torch.as_tensor(principal.axes, dtype=torch.float64)
    n_kept = axes.shape[1]
    compact_embedding = copy.deepcopy(embedding)
    last = embedding.net[-1]
    weight = axes.T @ last.weight.detach().double()
    bias = axes.T @ (last.bias.detach().double() - mean)
    compact_embedding.net[-1] = _linear(weight, bias)
    compact_embedding.dim = n_kept

    # the filter's first layer reads [inner features, inner embedding, outer features, outer embedding, pair]
    compact_filter = copy.deepcopy(filter_model)
    first = filter_model.net[0]
    weight, bias = first.weight.detach().double(), first.bias.detach().double().clone()
    n_features, dim = filter_model.n_features, filter_model.dim
    blocks = []
    for start in (0, n_features + dim):
        on_embedding = weight[:, start + n_features : start + n_features + dim]
        blocks += [weight[:, start : start + n_features], on_embedding @ axes]
        bias += on_embedding @ mean
    blocks.append(weight[:, 2 * (n_features + dim) :])
    compact_filter.net[0] = _linear(torch.cat(blocks, dim=1), bias)
    compact_filter.dim = n_kept
    return compact_embedding, compact_filter


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """A float32 linear layer with the given weight [out, in] and bias [out]."""
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight.float())
        layer.bias.copy_(bias.float())
    return layer
