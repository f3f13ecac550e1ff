"""Compaction of an embedding onto its principal axes: the axes kept, and models that keep their distances and scores
(in torch and through the exported ONNX files)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_iface import create_inference
from tracking_algs.finding.compaction import compact_models, principal_axes
from tracking_algs.finding.export import example_inputs, export_onnx
from tracking_algs.finding.features import FEATURE_NAMES
from tracking_algs.finding.models import EmbeddingNet, FilterNet

N_FEATURES = len(FEATURE_NAMES)
#: Spread of the synthetic embeddings along their three real axes, and of the small ones
LARGE, SMALL = (3.0, 2.0, 1.0), 1e-4


def _flat_points(n: int, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points [n, dim] spread along three random orthonormal axes (``LARGE``) and by ``SMALL`` along the rest;
    and those three axes [dim, 3]."""
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    spreads = np.array([*LARGE, *[SMALL] * (dim - 3)])
    points = (rng.normal(size=(n, dim)) * spreads) @ basis.T + 5.0
    return points, basis[:, :3]


def test_principal_axes_keep_the_axes_with_spread():
    points, large_axes = _flat_points(20_000)
    principal = principal_axes(points, min_spread=0.05)
    assert principal.axes.shape == (8, 3)
    np.testing.assert_allclose(principal.spread[:3], LARGE, rtol=0.03)
    assert principal.spread[3] == pytest.approx(SMALL, rel=0.1)  # the largest dropped spread
    np.testing.assert_allclose(principal.axes.T @ principal.axes, np.eye(3), atol=1e-12)
    # the kept axes span the points' three large axes
    np.testing.assert_allclose(np.linalg.svd(large_axes.T @ principal.axes, compute_uv=False), 1.0, atol=1e-6)
    np.testing.assert_allclose(principal.mean, 5.0, atol=0.05)


def test_principal_axes_keep_every_axis_at_zero_spread_and_at_least_one():
    points, _ = _flat_points(2_000)
    assert principal_axes(points, min_spread=0.0).axes.shape == (8, 8)
    assert principal_axes(points, min_spread=100.0).axes.shape == (8, 1)


@pytest.fixture(scope="module")
def flat_models():
    """An embedding network whose outputs fill three of their eight dimensions, a filter on it, and both compacted
    on the principal axes of its embedding of random features."""
    torch.manual_seed(2)
    embedding = EmbeddingNet(N_FEATURES, (32, 32), 8).eval()
    filter_model = FilterNet(N_FEATURES, 8, (32, 32)).eval()
    _, flat = _flat_points(10)
    projector = torch.as_tensor(flat @ flat.T, dtype=torch.float32)
    with torch.no_grad():  # outputs in a three-dimensional affine subspace
        embedding.net[-1].weight.copy_(projector @ embedding.net[-1].weight)
        embedding.net[-1].bias.copy_(projector @ embedding.net[-1].bias + 0.5)
        points = embedding(torch.rand((5_000, N_FEATURES), generator=torch.Generator().manual_seed(3))).numpy()
    principal = principal_axes(points, min_spread=1e-3)
    return embedding, filter_model, *compact_models(embedding, filter_model, principal)


def test_compacted_models_keep_distances_and_filter_scores(flat_models):
    embedding, filter_model, compact_embedding, compact_filter = flat_models
    assert (compact_embedding.dim, compact_filter.dim) == (3, 3)
    features, _, edges = example_inputs("filter", filter_model, n_nodes=300, n_edges=2_000)
    with torch.no_grad():
        full, compact = embedding(features), compact_embedding(features)
        assert compact.shape == (300, 3)
        exact = "donot_use_mm_for_euclid_dist"
        np.testing.assert_allclose(torch.cdist(compact, compact, compute_mode=exact),
                                   torch.cdist(full, full, compute_mode=exact), atol=2e-5)  # fmt: skip
        expected = filter_model(features, full, edges)
        np.testing.assert_allclose(compact_filter(features, compact, edges), expected, atol=2e-6)
    # the originals are left as they were
    assert embedding.dim == filter_model.dim == 8


def test_compacted_models_export_and_run_in_onnx_runtime(flat_models, tmp_path):
    embedding, filter_model, compact_embedding, compact_filter = flat_models
    features, _, edges = example_inputs("filter", filter_model, n_nodes=200, n_edges=900)
    with torch.no_grad():
        expected = filter_model(features, embedding(features), edges).numpy()
    with (
        create_inference({"backend": "onnxruntime", "model_path": str(
            export_onnx("embedding", compact_embedding, tmp_path / "embedding.onnx"))}) as embed,
        create_inference({"backend": "onnxruntime", "model_path": str(
            export_onnx("filter", compact_filter, tmp_path / "filter.onnx"))}) as score,
    ):  # fmt: skip
        points = embed.infer(features=features.numpy()).embedding
        assert points.shape == (200, 3)
        got = score.infer(features=features.numpy(), embedding=points, edge_index=edges.numpy()).score
    np.testing.assert_allclose(got, expected, atol=1e-5)
