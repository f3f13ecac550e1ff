"""Shared pytest fixtures: a session-wide directory of real ONNX models built by :mod:`onnx_models`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import tracking_algs  # noqa: F401  (first: pins numpy's kernels before numpy loads, as the trkx command does)

sys.path.insert(0, str(Path(__file__).parent))

import onnx_models
from real_trackml import real_trackml  # noqa: F401  (the fixture of the tests that read ../shared/trackml)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory (shared by the whole session) to write ONNX models into."""
    return tmp_path_factory.mktemp("onnx_models")


@pytest.fixture(scope="session")
def two_in_two_out_path(model_dir: Path) -> Path:
    """Path of :func:`onnx_models.two_in_two_out`."""
    return onnx_models.two_in_two_out(model_dir)
