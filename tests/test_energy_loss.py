"""The mean ionisation energy loss: the Bethe formula against the PDG's silicon figures, and what the simulation
takes from a particle crossing the detector."""

from __future__ import annotations

import numpy as np
import pytest

from tracking_algs.energy_loss import mean_energy_loss_gev, momentum_after, stopping_power_mev_per_cm
from tracking_algs.geometry import trackml_detector
from tracking_algs.simulation.propagation import propagate

PION_MASS, MUON_MASS = 0.13957, 0.10566
SILICON_DENSITY = 2.329


def test_the_minimum_of_ionisation_is_the_pdg_value_for_silicon():
    """PDG table of atomic and nuclear properties, silicon: minimum ionisation 1.664 MeV cm²/g, at βγ ≈ 3.5."""
    beta_gamma = np.logspace(-0.5, 3.0, 2000)
    per_gram = stopping_power_mev_per_cm(beta_gamma * MUON_MASS, MUON_MASS) / SILICON_DENSITY
    assert per_gram.min() == pytest.approx(1.664, rel=0.005)
    assert 3.0 < beta_gamma[per_gram.argmin()] < 4.0


def test_slow_particles_lose_more_and_the_loss_rises_slowly_at_high_momentum():
    p = np.array([0.1, 0.3, 1.0, 10.0, 100.0])
    loss = stopping_power_mev_per_cm(p, PION_MASS)
    assert loss[0] > 1.5 * loss[2]  # 1/β² below the minimum
    assert np.all(np.diff(loss[2:]) > 0.0)  # the relativistic rise, held down by the density effect
    assert loss[-1] < 1.5 * loss[2]


def test_loss_scales_with_path_and_is_given_back_backwards():
    p = np.full(3, 0.8)
    path = np.array([0.01, 0.02, 0.04])
    loss = mean_energy_loss_gev(path, p, PION_MASS)
    np.testing.assert_allclose(loss / path, loss[0] / path[0])
    assert 1e-3 * 0.3 < loss[0] < 1e-3 * 0.5  # about 0.4 MeV in 1 % of X0 (0.94 mm of silicon)
    after = momentum_after(p, PION_MASS, path)
    assert np.all(after < p)
    back = momentum_after(after, PION_MASS, path, direction=-1)
    np.testing.assert_allclose(back, p, rtol=1e-5)


def test_the_simulation_takes_the_mean_loss_of_every_layer_crossed():
    """A 10 GeV pion at η = 0 crosses every barrel layer at normal incidence: its momentum at each hit falls by
    the loss of the beam pipe and the layers inside it, and with ``energy_loss`` off it keeps its momentum."""
    detector = trackml_detector()
    momentum = np.array([[10.0, 0.0, 0.0]])
    kwargs = {"multiple_scattering": False, "mass_gev": PION_MASS}
    rng = np.random.default_rng(0)
    crossings = propagate(np.zeros((1, 3)), momentum, np.ones(1), detector, rng, energy_loss=True, **kwargs)
    lossless = propagate(np.zeros((1, 3)), momentum, np.ones(1), detector, rng, **kwargs)
    p = np.linalg.norm(crossings.momentum, axis=1)
    np.testing.assert_allclose(np.linalg.norm(lossless.momentum, axis=1), 10.0, rtol=1e-12)
    barrels = sorted((s for s in detector.surfaces if s.kind == "barrel"), key=lambda s: s.position)
    materials = [detector.beam_pipe.x_over_x0, *(s.x_over_x0 for s in barrels)]
    assert len(p) == len(barrels)
    expected = 10.0 - np.cumsum([mean_energy_loss_gev(x, 10.0, PION_MASS) for x in materials])[:-1]
    np.testing.assert_allclose(p, expected, rtol=2e-5)
