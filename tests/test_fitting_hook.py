"""The fitting hook: resolving "kalman", "none" and "package.module:factory", and the [fitting] options."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import attrs
import numpy as np
import pytest
from fitting_plugins import spoiling
from helix_tracks import helix_tracks

from inference_iface.errors import ConfigError
from inference_iface.options import structure
from tracking_algs.cli import main
from tracking_algs.commands.run import EXIT_EVENTS_FAILED
from tracking_algs.errors import FittingError
from tracking_algs.event import TrackCandidates
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
from tracking_algs.fitting.hook import CheckedFitter, fit_problem
from tracking_algs.geometry import trackml_detector
from tracking_algs.job_options import local_finder
from tracking_algs.simulation import SimulationConfig, simulate_event

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
    assert isinstance(fitter, CheckedFitter)  # the factory's fitter, its results checked at the hook's boundary
    assert isinstance(fitter.fitter, KalmanFitter)
    assert fitter.fitter.config.min_hits == 6
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


# A plug-in's mistakes in a real job (`trkx run`, shipped models, local ONNX Runtime): the event fails (exit status 4)
# with a FittingError naming the hook and what is wrong, no traceback, and the job writes what it finished.
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "local_onnx.toml"


def _run_job(output: Path, hook: str, *sets: str, events: int = 1, resume: bool = False) -> int:
    argv = ["run", str(CONFIG), "--no-progress", "--simulate", str(events), "--output", str(output),
            "--set=simulation.pileup=5", "--set=job.seed=2000000", f"--set=fitting.hook={hook}"]  # fmt: skip
    return main(argv + [f"--set={item}" for item in sets] + (["--resume"] if resume else []))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


def _failures(output: Path) -> list[dict[str, object]]:
    return json.loads((output / "performance.json").read_text())["failed_events"]


def test_a_plugin_fitter_gives_the_built_in_fitters_tracks(tmp_path):
    """The checks at the hook's boundary pass the built-in fitter's results, its refits and its following as they
    are: the built-in fitter plugged in by its factory writes the tracks of hook = "kalman" byte for byte."""
    assert _run_job(tmp_path / "kalman", "kalman", events=2) == 0
    assert _run_job(tmp_path / "plugin", "fitting_plugins:strict_kalman", events=2) == 0
    for name in ("tracks.csv", "fitted_tracks.csv"):
        assert (tmp_path / "plugin" / name).read_bytes() == (tmp_path / "kalman" / name).read_bytes(), name


@pytest.mark.parametrize(("spoil", "message"), [
    ("none", "fit returned NoneType; expected FitResults"),
    ("one_short", r"fit returned \d+ tracks, track_id none at row \d+; expected the \d+ candidates' ids"),
    ("nan_params", r"fit returned non-finite params for track 0 \(row 0, 1 tracks in all\); expected finite"),
    ("negative_ndf", "fit returned ndf -[0-9]+ for track 0 .*expected 0 or more"),
    ("unknown_status", "fit returned status 9 for track 0 .*expected a FitStatus code, 0 OK, 1 TOO_FEW_HITS"),
    ("not_positive_definite", "fit returned a covariance that is not positive definite for track"),
    ("covariance_triangle", r"fit failed with ValueError: FitResults.cov: shape \(\d+, 15\), expected \(\d+, 5, 5\)"),
    ("fractional_ids", "fit failed with ValueError: FitResults.track_id: 0.5 at row 0 is not a whole number"),
    ("failed_with_params", r"fit returned params\[0\] \S+ with status 1 TOO_FEW_HITS for track \d+ \(row \d+, 1 "
                           r"tracks in all\); expected params 0 for a track that is not OK \(params, cov, chi2, "
                           r"pvalue, ndf all 0\)"),
    ("mutate", "fit failed with ValueError: assignment destination is read-only"),
])  # fmt: skip
def test_a_plugin_fit_breaking_the_contract_fails_the_event_naming_the_hook(tmp_path, capsys, spoil, message):
    output = tmp_path / "out"
    assert _run_job(output, "fitting_plugins:spoiling", f"fitting.options.spoil={spoil!r}") == EXIT_EVENTS_FAILED
    (failure,) = _failures(output)
    assert failure["stage"] == "process"
    assert re.match(rf"FittingError: \[fitting\] hook 'fitting_plugins:spoiling': {message}", failure["error"])
    assert "Traceback" not in capsys.readouterr().err
    assert (output / "tracks.csv").read_text().startswith("event_id,")  # the job's files are written, and valid


def test_a_plugin_fit_failing_on_one_event_fails_that_event_and_the_job_resumes(tmp_path):
    output, flag = tmp_path / "out", tmp_path / "fail"
    flag.touch()
    hook, option = "fitting_plugins:spoiling", f"fitting.options.fail_while={str(flag)!r}"
    assert _run_job(output, hook, option, events=2) == EXIT_EVENTS_FAILED
    (failure,) = _failures(output)
    assert failure["error"] == ("FittingError: [fitting] hook 'fitting_plugins:spoiling': fit failed with "
                                "RuntimeError: the fitter's first call fails")  # fmt: skip
    assert {row["event_id"] for row in _rows(output / "tracks.csv")} == {"1"}
    flag.unlink()
    assert _run_job(output, hook, option, events=2, resume=True) == 0
    assert _failures(output) == []
    assert {row["event_id"] for row in _rows(output / "tracks.csv")} == {"0", "1"}


@pytest.mark.parametrize(("source", "message"), [
    ("def make_fitter(:\n", "failed with SyntaxError: invalid syntax"),
    ("raise RuntimeError('no licence file')\n", "failed with RuntimeError: no licence file"),
])  # fmt: skip
def test_a_hook_module_failing_to_import_is_a_fitting_error(tmp_path, monkeypatch, capsys, source, message):
    (tmp_path / "broken_fitters.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    hook = "broken_fitters:make_fitter"
    with pytest.raises(FittingError, match=f"hook '{hook}': importing module 'broken_fitters' {message}"):
        make_fitter(hook, DETECTOR, {})
    sys.modules.pop("broken_fitters", None)
    assert _run_job(tmp_path / "out", hook) == 2
    err = capsys.readouterr().err
    assert "importing module 'broken_fitters'" in err
    assert "Traceback" not in err


def test_fit_results_refuse_integer_columns_that_are_not_whole_numbers():
    fit = KalmanFitter(DETECTOR).fit(_tracks().spacepoints, _tracks().candidates)
    assert attrs.evolve(fit, track_id=fit.track_id.astype(float)).track_id.dtype == np.int64
    for bad, shown in ((fit.track_id + 0.5, "0.5 at row 0"), (np.where(fit.ok, np.nan, 0.0), "nan at row 0")):
        with pytest.raises(ValueError, match=f"FitResults.track_id: {shown} is not a whole number; expected integers"):
            attrs.evolve(fit, track_id=bad)
    with pytest.raises(ValueError, match=r"FitResults\.hit_rows: 3\.25 at row 7 is not a whole number"):
        attrs.evolve(fit, hit_rows=np.where(np.arange(len(fit.hit_rows)) == 7, 3.25, fit.hit_rows))


def test_the_kalman_fitter_refuses_options_it_cannot_use():
    """A mapping for a ``KalmanConfig`` is a FittingError saying what was expected, not an error deep in the fitter;
    labels that are not one per spacepoint are refused as the candidates are made."""
    with pytest.raises(FittingError, match="KalmanFitter config: got dict; expected a KalmanConfig"):
        KalmanFitter(DETECTOR, {"min_hits": 4})
    tracks = _tracks()
    with pytest.raises(ValueError, match=r"TrackCandidates.labels: shape \[\d+, 1\]; expected \[N\], one a spacepoint"):
        TrackCandidates(tracks.candidates.labels[:, None])


def test_tracks_not_fitted_must_carry_the_sentinel_values():
    """The built-in fitter gives a track it could not fit params, cov, chi2, pvalue and ndf 0 (docs/fitting.md,
    ``FitStatus``), and the check at the hook's boundary passes it; a plug-in's track not fitted with any of them
    other than 0 is named, with its status, the value and the 0 expected."""
    tracks = _tracks()
    fit = KalmanFitter(DETECTOR, KalmanConfig(min_hits=10)).fit(tracks.spacepoints, tracks.candidates)
    failed = np.flatnonzero(~fit.ok)
    assert list(failed) == [6]  # the one track of 9 hits
    assert fit_problem(fit, tracks.spacepoints, tracks.candidates) is None
    spoils = (("params", (6, 1), 2.5, "params[1] 2.5"), ("cov", (6, 4, 3), 2.5, "cov[4][3] 2.5"),
              ("chi2", 6, 2.5, "chi2 2.5"), ("pvalue", 6, 0.25, "pvalue 0.25"), ("ndf", 6, 3, "ndf 3"))  # fmt: skip
    for name, where, value, shown in spoils:
        column = getattr(fit, name).copy()
        column[where] = value
        problem = fit_problem(attrs.evolve(fit, **{name: column}), tracks.spacepoints, tracks.candidates)
        assert problem == (f"{shown} with status 1 TOO_FEW_HITS for track 6 (row 6, 1 tracks in all); expected {name} "
                           "0 for a track that is not OK (params, cov, chi2, pvalue, ndf all 0)")  # fmt: skip
    negative_zero = attrs.evolve(fit, params=np.where(fit.ok[:, None], fit.params, -0.0))
    assert fit_problem(negative_zero, tracks.spacepoints, tracks.candidates) is None


def test_the_boundary_refuses_negative_p_values_hit_counts_the_hits_do_not_hold_and_a_hit_twice():
    """A plug-in's negative p-values (the selection then drops every track), ``n_hits`` or ``n_outliers`` that its
    hits and outlier flags do not hold (both are written to fitted_tracks.csv), and a hit given twice in one track
    were taken; each is named, with the track and what was expected. The built-in fitter's results pass."""
    tracks = _tracks()
    fit = KalmanFitter(DETECTOR).fit(tracks.spacepoints, tracks.candidates)
    assert fit_problem(fit, tracks.spacepoints, tracks.candidates) is None
    hits = int(fit.hit_offsets[1])
    twice = fit.hit_rows.copy()
    twice[1] = twice[0]
    for spoiled, expected in (
        (attrs.evolve(fit, pvalue=-fit.pvalue), r"pvalue -\S+ for track 0 .*; expected a p-value in \[0, 1\]"),
        (attrs.evolve(fit, n_hits=fit.n_hits + 1000), rf"n_hits {fit.n_hits[0] + 1000} for track 0 .*; expected at "
                                                      rf"most its hits less its outliers, {hits - fit.n_outliers[0]}"),
        (attrs.evolve(fit, n_outliers=fit.n_outliers + 1), rf"n_outliers {fit.n_outliers[0] + 1} for track 0 .*; "
                                                           rf"expected its outlier hits, {fit.n_outliers[0]}"),
        (attrs.evolve(fit, hit_rows=twice), rf"hit_rows {twice[0]} twice for track 0; expected each hit once"),
    ):  # fmt: skip
        problem = fit_problem(spoiled, tracks.spacepoints, tracks.candidates)
        assert problem is not None
        assert re.fullmatch(expected, problem), problem


def test_fit_results_select_tracks_and_drop_hits_only_by_what_they_hold():
    """``tracks`` took a negative index (one track's id with another's hits), a fraction (cut off) and a mask of the
    wrong length; ``without_hits`` an integer mask (its ``~`` is -1, an index); each is a ValueError naming the
    argument and what was expected."""
    fit = KalmanFitter(DETECTOR).fit(_tracks().spacepoints, _tracks().candidates)
    n, hits = len(fit), len(fit.hit_rows)
    assert fit.tracks(np.array([1, 0])).track_id.tolist() == fit.track_id[[1, 0]].tolist()
    for rows, shown in (
        (np.array([-3]), f"indices from -3 to -3 of shape [1]; expected [K] in [0, {n})"),
        (np.array([n]), f"indices from {n} to {n} of shape [1]; expected [K] in [0, {n})"),
        (np.array([0.7]), "0.7 at row 0 is not a whole number"),
        (np.ones(n - 1, dtype=bool), f"a mask of shape [{n - 1}]; expected [{n}]"),
    ):
        with pytest.raises(ValueError, match=re.escape(f"FitResults.tracks: rows: {shown}")):
            fit.tracks(rows)
    for dropped in (np.zeros(hits, dtype=np.int64), np.zeros(hits - 1, dtype=bool)):
        with pytest.raises(ValueError, match=re.escape(f"expected a boolean mask [{hits}] over the hits")):
            fit.without_hits(dropped)


# A fitter handed to the finder in Python (TrackFinder(fitter=...)), not through [fitting] hook, is checked the same.
@pytest.fixture(scope="module")
def small_event():
    return simulate_event(SimulationConfig(pileup=5.0), 2_000_077, 0)


@pytest.mark.parametrize(("spoil", "message"), [
    ("none", "fit returned NoneType; expected FitResults"),
    ("one_short", r"fit returned \d+ tracks, track_id none at row \d+; expected the \d+ candidates' ids"),
    ("nan_params", r"fit returned non-finite params for track 0 \(row 0, 1 tracks in all\); expected finite"),
    ("failed_with_params", r"fit returned params\[0\] \S+ with status 1 TOO_FEW_HITS for track \d+ .*expected params"),
    ("mutate", "fit failed with ValueError: assignment destination is read-only"),
])  # fmt: skip
def test_a_fitter_handed_to_the_track_finder_is_checked_as_a_plugin_hook(small_event, spoil, message):
    with local_finder(fitter=spoiling(DETECTOR, {"spoil": spoil})) as finder:
        assert isinstance(finder.fitter, CheckedFitter)
        with pytest.raises(FittingError, match=rf"^TrackFinder fitter 'fitting_plugins._Spoiling': {message}"):
            finder.find(small_event.spacepoints)


def test_the_track_finder_checks_a_fitter_once_and_the_built_in_fitter_not_at_all(small_event):
    """A plug-in that keeps the contract gives the built-in fitter's results through the check; the built-in
    ``KalmanFitter`` and what ``make_fitter`` made (a ``CheckedFitter`` already) are held as they are, not wrapped
    again; a subclass of the built-in fitter is someone else's code and is checked; an object without ``fit`` is a
    ``FittingError`` when the finder is made."""
    kalman = KalmanFitter(DETECTOR)
    with local_finder(fitter=kalman) as finder:
        assert finder.fitter is kalman
        expected = finder.find(small_event.spacepoints).fit
    plugin = spoiling(DETECTOR, {})
    with local_finder(fitter=plugin) as finder:
        assert isinstance(finder.fitter, CheckedFitter)
        assert finder.fitter.fitter is plugin
        fit = finder.find(small_event.spacepoints).fit
    assert plugin.calls == 1
    for name in attrs.fields_dict(FitResults):
        np.testing.assert_array_equal(getattr(fit, name), getattr(expected, name), err_msg=name)
    hooked = make_fitter("fitting_plugins:spoiling", DETECTOR, {})
    with local_finder(fitter=hooked) as finder:
        assert finder.fitter is hooked
        assert finder.fitter.where == "[fitting] hook 'fitting_plugins:spoiling'"
        finder.find(small_event.spacepoints)
    assert hooked.fitter.calls == 1

    class Subclass(KalmanFitter):
        pass

    with local_finder(fitter=Subclass(DETECTOR)) as finder:
        assert isinstance(finder.fitter, CheckedFitter)
    with pytest.raises(FittingError, match=r"TrackFinder fitter 'builtins.dict': a dict has no fit\(spacepoints"):
        local_finder(fitter={"min_hits": 5})
