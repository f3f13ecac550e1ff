"""The gain-matrix update against the ACTS GainMatrixUpdater regression numbers."""

from __future__ import annotations

import numpy as np
import pytest

from tracking_algs.fitting.filtering import gain_update


def _predicted():
    params = np.array([[0.3, 0.5, 0.5 * np.pi, 0.3 * np.pi, 0.01]])
    cov = np.diag([0.08, 0.3, 1.0, 1.0, 1.0])[None]
    return params, cov


def test_acts_gain_matrix_update_regression():
    params, cov = _predicted()
    measurement = np.array([[-0.1, 0.45]])
    update = gain_update(params, cov, measurement - params[:, :2], np.array([[0.04, 0.1]]))
    np.testing.assert_allclose(update.params[0, :2], [0.0333333, 0.4625], rtol=1e-5)
    np.testing.assert_allclose(update.params[0, 2:], params[0, 2:])
    np.testing.assert_allclose(np.diag(update.cov[0]), [0.0266667, 0.075, 1.0, 1.0, 1.0], rtol=1e-5)
    assert update.chi2[0] == pytest.approx(1.33958, rel=1e-5)


def test_one_dimensional_measurement_leaves_the_second_coordinate_alone():
    params, cov = _predicted()
    update = gain_update(params, cov, np.array([[-0.4, 7.0]]), np.array([[0.04, np.inf]]))
    assert update.params[0, 0] == pytest.approx(0.0333333, rel=1e-5)
    assert update.params[0, 1] == pytest.approx(0.5)
    assert update.cov[0, 1, 1] == pytest.approx(0.3)
    assert update.chi2[0] == pytest.approx(0.4**2 / 0.12)


def test_joseph_form_keeps_the_covariance_symmetric_positive_definite():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(500, 5, 5))
    cov = a @ a.transpose(0, 2, 1) + 1e-6 * np.eye(5)
    params = rng.normal(size=(500, 5))
    update = gain_update(params, cov, rng.normal(size=(500, 2)), rng.uniform(1e-6, 1.0, size=(500, 2)))
    np.testing.assert_array_equal(update.cov, update.cov.transpose(0, 2, 1))
    assert (np.linalg.eigvalsh(update.cov) > 0).all()
    # updating can only shrink the variances
    assert (np.diagonal(update.cov, axis1=1, axis2=2) <= np.diagonal(cov, axis1=1, axis2=2) + 1e-12).all()
