"""Seeds from three spacepoints are exact on noiseless helices."""

from __future__ import annotations

import numpy as np
import pytest
from helix_tracks import helix_tracks

from tracking_algs.fitting.helix import SurfaceKind
from tracking_algs.fitting.seeding import seed_parameters
from tracking_algs.geometry import trackml_detector

DETECTOR = trackml_detector()


@pytest.mark.parametrize("charge", [1, -1])
@pytest.mark.parametrize("pt", [0.3, 1.0, 10.0, 1000.0])
def test_seed_is_exact_on_noiseless_helices(charge, pt):
    theta = np.linspace(0.05, np.pi - 0.05, 60)
    phi0 = np.linspace(-np.pi, np.pi, 60)
    tracks = helix_tracks(DETECTOR, phi0, theta, pt, charge, z0=np.linspace(-50, 50, 60))
    sp = tracks.spacepoints
    xyz = np.column_stack((sp.x, sp.y, sp.z))
    distance = np.einsum("ij,ij->i", xyz, xyz)
    order = np.lexsort((distance, tracks.track))
    counts = np.bincount(tracks.track, minlength=len(theta))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    usable = counts >= 3
    first = order[starts[usable]]
    middle = order[starts[usable] + counts[usable] // 2]
    last = order[starts[usable] + counts[usable] - 1]
    kind = np.where(tracks.kind[first] == "barrel", SurfaceKind.CYLINDER, SurfaceKind.DISK)
    seed, ok = seed_parameters(xyz[first], xyz[middle], xyz[last], kind, DETECTOR.bfield_t)
    assert usable.sum() > 40
    assert ok.all()
    truth = tracks.params[usable]
    np.testing.assert_allclose(seed[:, 0], np.arctan2(xyz[first, 1], xyz[first, 0]), atol=1e-12)
    expected_l1 = np.where(kind == SurfaceKind.DISK, np.hypot(xyz[first, 0], xyz[first, 1]), xyz[first, 2])
    np.testing.assert_allclose(seed[:, 1], expected_l1, atol=1e-9)
    np.testing.assert_allclose(np.angle(np.exp(1j * (seed[:, 2] - tracks.direction[first]))), 0.0, atol=1e-9)
    np.testing.assert_allclose(seed[:, 3], truth[:, 3], atol=1e-9)
    np.testing.assert_allclose(seed[:, 4], truth[:, 4], rtol=1e-7, atol=1e-9 / pt)


def test_degenerate_triplets_are_flagged():
    point = np.array([[30.0, 5.0, 10.0]])
    other = np.array([[60.0, 9.0, 30.0]])
    seed, ok = seed_parameters(np.vstack((point, point)), np.vstack((point, other)), np.vstack((other, other)),
                               np.full(2, SurfaceKind.CYLINDER), 2.0)  # fmt: skip
    assert not ok.any()
    assert np.isfinite(seed).all()
