"""ONNX export of the three finding models with dynamic node and edge counts.

Tensor names are the contract between the models and the pipeline stages (and a Triton model
repository): see :data:`SIGNATURES`. All float tensors are float32, ``edge_index`` is int64 [2, E].
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

from tracking_algs.finding import (
    aggregation_onnx,
    models,  # noqa: F401  (registers the trkx::sum_max_aggregate op)
)

#: ONNX opset: 18 is the first with ``ScatterElements(reduction="min")`` (used by the GNN aggregation).
OPSET = 18

#: Model name → (input names, output names) of the exported graphs.
SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "embedding": (("features",), ("embedding",)),
    "filter": (("features", "embedding", "edge_index"), ("score",)),
    "gnn": (("features", "edge_index"), ("score",)),
}


def example_inputs(name: str, model: nn.Module, n_nodes: int = 50, n_edges: int = 120) -> tuple[torch.Tensor, ...]:
    """Random inputs of the right shapes for model ``name`` (for tracing and for tests)."""
    generator = torch.Generator().manual_seed(0)
    n_features = model.n_features
    features = torch.rand((n_nodes, n_features), generator=generator)
    edges = torch.randint(0, n_nodes, (2, n_edges), generator=generator, dtype=torch.int64)
    if name == "embedding":
        return (features,)
    if name == "filter":
        return features, torch.randn((n_nodes, model.dim), generator=generator), edges
    return features, edges


def export_onnx(name: str, model: nn.Module, path: str | Path) -> Path:
    """Write ``model`` (one of :data:`SIGNATURES`) to ``path`` as ONNX with dynamic N and E; returns the path."""
    if name not in SIGNATURES:
        raise ValueError(f"unknown finding model {name!r}; expected one of {', '.join(SIGNATURES)}")
    inputs, outputs = SIGNATURES[name]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_nodes, n_edges = Dim("n_nodes"), Dim("n_edges")
    axes = {"features": {0: n_nodes}, "embedding": {0: n_nodes}, "edge_index": {1: n_edges}}
    model = model.eval()
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            example_inputs(name, model),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_shapes=tuple(axes[key] for key in inputs),
            opset_version=OPSET,
            dynamo=True,
            custom_translation_table={torch.ops.trkx.sum_max_aggregate.default: aggregation_onnx.sum_max_aggregate},
            verbose=False,
        )
    program.save(str(path))
    return path
