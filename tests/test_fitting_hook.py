"""The fitting hook: resolving "kalman", "none" and "package.module:factory", and the [fitting] options."""

from __future__ import annotations

import numpy as np
import pytest
from helix_tracks import helix_tracks

from inference_iface.errors import ConfigError
from inference_iface.options import structure
from tracking_algs.errors import FittingError
from tracking_algs.fitting import (
    COVARIANCE_NAMES,
    FitResults,
    FittingConfig,
    KalmanConfig,
    KalmanFitter,
    TrackFitter,
    follower,
    make_fitter,
    refit_on,
    refitter,
)
from tracking_algs.geometry import trackml_detector

DETECTOR = trackml_detector()


def _tracks():
    rng = np.random.default_rng(0)
    n = 20
    return helix_tracks(DETECTOR, rng.uniform(-3, 3, n), rng.uniform(0.5, 2.6, n), 2.0, rng.choice([-1.0, 1.0], n),
                        np.zeros(n), rng)  # fmt: skip


def test_kalman_hook_builds_a_configured_kalman_fitter():
    fitter = make_fitter("kalman", DETECTOR, {"min_hits": 5, "outlier_chi2_cut_2d": 20.0})
    assert isinstance(fitter, KalmanFitter)
    assert isinstance(fitter, TrackFitter)
    assert fitter.config == KalmanConfig(min_hits=5, outlier_chi2_cut_2d=20.0)
    tracks = _tracks()
    result = fitter.fit(tracks.spacepoints, tracks.candidates)
    assert isinstance(result, FitResults)
    assert result.ok.all()
    assert result.cov_upper_triangle().shape == (len(result), len(COVARIANCE_NAMES))


def test_none_hook_means_no_fitting():
    assert make_fitter("none", DETECTOR) is None
    assert FittingConfig(hook="none").make_fitter(DETECTOR) is None


def test_plugin_factory_is_imported_and_called_with_the_options():
    config = structure({"hook": "fitting_plugins:strict_kalman", "options": {"min_hits": 6}}, FittingConfig)
    fitter = config.make_fitter(DETECTOR)
    assert isinstance(fitter, KalmanFitter)
    assert fitter.config.min_hits == 6
    tracks = _tracks()
    np.testing.assert_array_equal(fitter.fit(tracks.spacepoints, tracks.candidates).track_id, np.arange(20))


def test_the_kalman_fitter_refits_clean_tracks_with_one_outlier_refit_and_no_trimming():
    """``refitter`` gives the built-in fitter's own refitter (built once: the same options but at most one outlier
    refit, no trimming, no worker processes) and any other fitter itself; the refitter fits clean tracks as the
    fitter does.  ``refit_on`` refits through the refitter's ``refit``, which starts the tracks of earlier fits from
    them, and through ``fit`` for a fitter without one, which does without the earlier fits."""
    fitter = KalmanFitter(DETECTOR, KalmanConfig(max_trimmed_hits=5, processes=0, min_hits=4))
    quick = refitter(fitter)
    assert isinstance(quick, KalmanFitter)
    assert quick is refitter(fitter)
    assert quick.config == KalmanConfig(max_outlier_refits=1, max_trimmed_hits=0, processes=1, min_hits=4)
    tracks = _tracks()
    full, refitted = (f.fit(tracks.spacepoints, tracks.candidates) for f in (fitter, quick))
    np.testing.assert_array_equal(refitted.params, full.params)
    np.testing.assert_array_equal(refitted.status, full.status)

    class Plain:
        def fit(self, spacepoints, candidates):
            return fitter.fit(spacepoints, candidates)

    plain = Plain()
    assert refitter(plain) is plain
    # refit_on: the refitter's refit from earlier fits where it has one, its fit (without them) otherwise
    earlier = full.tracks(full.track_id < 10)
    from_earlier = refit_on(fitter, tracks.spacepoints)(tracks.candidates, earlier)
    expected = quick.refit(tracks.spacepoints, tracks.candidates, earlier)
    np.testing.assert_array_equal(from_earlier.params, expected.params)
    np.testing.assert_array_equal(from_earlier.params[10:], refitted.params[10:])  # no earlier fit: as fit fits them
    np.testing.assert_array_equal(refit_on(plain, tracks.spacepoints)(tracks.candidates, earlier).params, full.params)
    assert follower(plain, tracks.spacepoints) is None  # no followed_hits: the selection skips following
    follow = follower(fitter, tracks.spacepoints)
    assert follow is not None
    proposal = follow(tracks.candidates, full, 9.0, 5.0, 50.0)
    assert proposal.shape == (len(tracks.spacepoints),)
    assert (proposal == -1).all()  # every hit is on a track: none free to follow onto


@pytest.mark.parametrize(("hook", "message"), [
    ("fitting_plugins:not_a_fitter", "returned dict, which has no fit"),
    ("fitting_plugins:missing", "has no callable 'missing'"),
    ("os:getcwd", "the factory failed with TypeError: .*takes no arguments"),
    ("no_such_package.fitters:make", "cannot import module 'no_such_package.fitters'"),
    ("kalmann", "expected 'kalman', 'none' or 'package.module:factory'"),
])  # fmt: skip
def test_bad_hooks_raise_fitting_errors_naming_the_hook(hook, message):
    with pytest.raises(FittingError, match=message) as error:
        make_fitter(hook, DETECTOR, {})
    assert repr(hook) in str(error.value)


def test_fitting_options_are_strict():
    config = structure({"hook": "kalman", "kalman": {"max_outlier_refits": 1}}, FittingConfig, where="[fitting]")
    assert config.kalman.max_outlier_refits == 1
    assert isinstance(config.make_fitter(DETECTOR), KalmanFitter)
    with pytest.raises(ConfigError, match="outlier_cut"):
        structure({"kalman": {"outlier_cut": 3.0}}, FittingConfig, where="[fitting]")
    with pytest.raises(ConfigError, match="min_hits"):
        structure({"kalman": {"min_hits": 2}}, FittingConfig, where="[fitting]")
    with pytest.raises(ConfigError, match="hook"):
        structure({"hook": "kalmann"}, FittingConfig, where="[fitting]")
