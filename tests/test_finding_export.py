"""The exported ONNX finding models agree with torch (through ONNX Runtime and the interface)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_iface import create_inference
from tracking_algs.finding.export import SIGNATURES, example_inputs, export_onnx
from tracking_algs.finding.features import FEATURE_NAMES
from tracking_algs.finding.models import EmbeddingNet, FilterNet, InteractionGNN, _aggregate

N_FEATURES = len(FEATURE_NAMES)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(1)
    if name == "embedding":
        return EmbeddingNet(N_FEATURES, (32, 32), 8)
    if name == "filter":
        return FilterNet(N_FEATURES, 8, (32, 32))
    return InteractionGNN(N_FEATURES, hidden=16, iterations=3)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """Each model (fixed seed) and its ONNX file, exported once for the module."""
    directory = tmp_path_factory.mktemp("finding_onnx")
    models = {name: _model(name).eval() for name in SIGNATURES}
    return {name: (model, export_onnx(name, model, directory / f"{name}.onnx")) for name, model in models.items()}


@pytest.mark.parametrize("name", sorted(SIGNATURES))
@pytest.mark.parametrize(("n_nodes", "n_edges"), [(7, 3), (400, 2500)])
def test_onnx_matches_torch(exported, name, n_nodes, n_edges):
    model, path = exported[name]
    inputs = example_inputs(name, model, n_nodes=n_nodes, n_edges=n_edges)  # other sizes than the trace
    with torch.no_grad():
        expected = model(*inputs).numpy()
    input_names, output_names = SIGNATURES[name]
    with create_inference({"backend": "onnxruntime", "model_path": str(path)}) as iface:
        assert iface.signature.input_names == input_names
        got = iface.infer({key: value.numpy() for key, value in zip(input_names, inputs, strict=True)})
    assert got._fields == tuple(output_names)
    np.testing.assert_allclose(got[0], expected, atol=1e-5, rtol=1e-5)


def test_gnn_max_aggregation_is_exported(exported):
    """An isolated node and a node with several edges: sum and max both reach the classifier."""
    model, path = exported["gnn"]
    features = torch.rand((6, N_FEATURES), generator=torch.Generator().manual_seed(3))
    edges = torch.tensor([[0, 0, 0, 1], [1, 2, 3, 4]])
    with torch.no_grad():
        expected = model(features, edges).numpy()
    with create_inference({"backend": "onnxruntime", "model_path": str(path)}) as iface:
        got = iface.infer(features=features.numpy(), edge_index=edges.numpy()).score
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    "edges",
    [
        [[0] * 21 + [1, 1], [*range(1, 22), 5, 5]],  # 21 edges onto node 0: three blocks; a repeated edge
        [[], []],  # no edges: every node aggregates 0
    ],
    ids=["high-degree", "no-edges"],
)
def test_gnn_aggregation_layout(exported, edges):
    """The exported aggregation (blocks of BLOCK edges per node) matches the scatter form beyond one block."""
    model, path = exported["gnn"]
    features = torch.rand((25, N_FEATURES), generator=torch.Generator().manual_seed(4))
    edge_index = torch.tensor(edges, dtype=torch.int64).reshape(2, -1)
    with torch.no_grad():
        expected = model(features, edge_index).numpy()
    with create_inference({"backend": "onnxruntime", "model_path": str(path)}) as iface:
        got = iface.infer(features=features.numpy(), edge_index=edge_index.numpy()).score
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_aggregate_op_matches_training_form():
    """The inference op and the differentiable scatters (training) give the same sum and max."""
    generator = torch.Generator().manual_seed(5)
    messages = torch.randn((300, 6), generator=generator)
    index = torch.randint(0, 40, (300,), generator=generator)
    rows = torch.empty((45, 1))  # five nodes without edges
    trained = _aggregate(messages.clone().requires_grad_(), index, rows)
    inferred = _aggregate(messages, index, rows)
    for a, b in zip(trained, inferred, strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.numpy(), atol=1e-6)
    assert torch.all(inferred[1] >= 0)
    assert torch.all(inferred[0][40:] == 0)


def test_unknown_model_name(tmp_path):
    with pytest.raises(ValueError, match="unknown finding model 'gcn'"):
        export_onnx("gcn", _model("gnn"), tmp_path / "x.onnx")
