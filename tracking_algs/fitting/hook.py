"""The fitting hook: the :class:`TrackFitter` protocol, its :class:`FitResults`, and how job options pick a fitter.

``[fitting] hook`` selects the fitter the track finder calls after track building:

- ``"kalman"`` — the built-in :class:`~tracking_algs.fitting.kalman.KalmanFitter`, configured by
  ``[fitting.kalman]`` (:class:`~tracking_algs.fitting.config.KalmanConfig`);
- ``"none"`` — no fitting;
- ``"package.module:factory"`` — any importable callable ``factory(detector, options) -> TrackFitter``, given the
  free-form ``[fitting.options]`` table; this is how another fitter (e.g. one wrapping ACTS's Python bindings)
  plugs in without editing this project.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, runtime_checkable

import attrs
import numpy as np

from inference_iface.errors import BackendUnavailableError, ConfigError, InferenceTimeoutError
from inference_iface.options import mapping, structure
from tracking_algs.errors import FittingError
from tracking_algs.event import Spacepoints, TrackCandidates
from tracking_algs.fitting.config import KalmanConfig
from tracking_algs.fitting.results import FitResults, FitStatus, fit_candidates_problem
from tracking_algs.fitting.selection import Follow, Refit, TrackSelection
from tracking_algs.geometry import Detector
from tracking_algs.magnetic_field import MagneticField
from tracking_algs.modules import ModuleGeometry


@runtime_checkable
class TrackFitter(Protocol):
    """Anything that fits found track candidates.  A fitter that holds resources (worker processes, a
    connection) may also have a ``close()`` method: the finder that uses it calls it when it closes
    (:func:`close_fitter`); one with a cheaper way to refit tracks of clean hits may have a ``refitter()`` method
    that returns the fitter for that (:func:`refitter`), one that can start refits from earlier fits of the same
    tracks a ``refit(spacepoints, candidates, earlier)`` method (:func:`refit_on`), and one that can follow its
    fitted tracks beyond their ends a ``followed_hits(spacepoints, candidates, fit, chi2_cut, window_sigmas,
    max_window_mm, pool)`` method (:func:`follower`)."""

    def fit(self, spacepoints: Spacepoints, candidates: TrackCandidates) -> FitResults:
        """Fit every candidate track (``candidates.labels`` row-aligned with ``spacepoints``)."""
        ...


def refitter(fitter: TrackFitter) -> TrackFitter:
    """The fitter for refits of tracks whose hits earlier fits have cleaned already (``[fitting.selection]
    merge_split``: the union of split pieces, less the hits their own fits rejected; ``rescue_outliers``: the hits a
    track's fit rejected): ``fitter.refitter()`` where the
    fitter offers one (the built-in fitter's allows one outlier refit and no trimming), otherwise ``fitter``."""
    make = getattr(fitter, "refitter", None)
    return make() if callable(make) else fitter


def refit_on(fitter: TrackFitter, spacepoints: Spacepoints) -> Refit:
    """What refits tracks of the event of ``spacepoints`` in the selection after the fit (its
    :data:`~tracking_algs.fitting.selection.Refit`, ``refit(candidates, earlier)``): the ``refit(spacepoints,
    candidates, earlier)`` of :func:`refitter`'s fitter where it has one (the built-in fitter's starts the tracks
    ``earlier`` fitted from their earlier perigees, :meth:`~tracking_algs.fitting.kalman.KalmanFitter.refit`),
    otherwise its ``fit``, which does without ``earlier``."""
    chosen = refitter(fitter)
    from_earlier = getattr(chosen, "refit", None)
    if callable(from_earlier):
        return functools.partial(from_earlier, spacepoints)
    return lambda candidates, earlier: chosen.fit(spacepoints, candidates)


def follower(fitter: TrackFitter, spacepoints: Spacepoints) -> Follow | None:
    """What follows the fitted tracks of the event of ``spacepoints`` beyond their ends (``[fitting.selection]
    follow_tracks``): ``fitter.followed_hits`` on those spacepoints where the fitter has it (the built-in fitter),
    otherwise None (the selection then skips the step)."""
    follow = getattr(fitter, "followed_hits", None)
    return functools.partial(follow, spacepoints) if callable(follow) else None


def close_fitter(fitter: TrackFitter | None) -> None:
    """Call ``fitter.close()`` where the fitter has one."""
    close = getattr(fitter, "close", None)
    if callable(close):
        close()


@attrs.frozen(kw_only=True)
class FittingConfig:
    """The ``[fitting]`` table: ``hook`` ("kalman", "none" or "package.module:factory"), ``kalman`` (the built-in
    fitter's options, :class:`~tracking_algs.fitting.config.KalmanConfig`), ``options`` (a free-form table
    handed to a plug-in factory) and ``selection`` (which fitted tracks the job keeps,
    :class:`~tracking_algs.fitting.selection.TrackSelection`; any fitter's results)."""

    hook: str = attrs.field(default="kalman", validator=attrs.validators.instance_of(str))
    kalman: KalmanConfig = attrs.field(factory=KalmanConfig, validator=attrs.validators.instance_of(KalmanConfig))
    options: dict[str, Any] = attrs.field(factory=dict, validator=mapping)
    selection: TrackSelection = attrs.field(
        factory=TrackSelection, validator=attrs.validators.instance_of(TrackSelection)
    )

    @hook.validator
    def _valid_hook(self, _attribute: attrs.Attribute, value: str) -> None:
        _check_hook(value)

    def make_fitter(
        self, detector: Detector, modules: ModuleGeometry | None = None, field: MagneticField | None = None
    ) -> TrackFitter | None:
        """The fitter these options select for ``detector`` and, when given, its ``modules`` and ``field``; None
        for ``hook = "none"``."""
        options = self.kalman if self.hook == "kalman" else self.options
        return make_fitter(self.hook, detector, options, modules, field)


def _check_hook(hook: str) -> None:
    if hook in ("kalman", "none"):
        return
    module, sep, name = hook.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"[fitting] hook {hook!r}: expected 'kalman', 'none' or 'package.module:factory'")


def make_fitter(
    hook: str,
    detector: Detector,
    options: Any = None,
    modules: ModuleGeometry | None = None,
    field: MagneticField | None = None,
) -> TrackFitter | None:
    """Resolve a fitting hook.

    ``"kalman"``: a :class:`~tracking_algs.fitting.kalman.KalmanFitter` with ``options`` (a ``KalmanConfig``, a
    mapping of its fields, or None for the defaults), measuring on the planes of ``modules`` when given, in
    ``field`` (None: the detector's uniform field).
    ``"none"``: None.  ``"package.module:factory"``: imports the factory and returns
    ``factory(detector, options or {})``, which must satisfy :class:`TrackFitter`.
    Raises :class:`~tracking_algs.errors.FittingError` naming the hook when it cannot be resolved or its factory
    fails, and :class:`~inference_iface.errors.ConfigError` for ``"kalman"`` options that are not
    ``KalmanConfig``'s.
    """
    if hook == "none":
        return None
    if hook == "kalman":
        from tracking_algs.fitting.kalman import KalmanFitter

        if options is None:
            options = KalmanConfig()
        elif isinstance(options, Mapping):
            options = structure(options, KalmanConfig, where="[fitting.kalman]")
        return KalmanFitter(detector, options, modules, field)
    try:
        _check_hook(hook)
    except ConfigError as error:
        raise FittingError(str(error)) from None
    module_name, _, factory_name = hook.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise FittingError(f"[fitting] hook {hook!r}: cannot import module {module_name!r}: {error}") from None
    except Exception as error:  # the user's module (a syntax error, a failing statement): reported as the hook's
        raise FittingError(
            f"[fitting] hook {hook!r}: importing module {module_name!r} failed with {type(error).__name__}: {error}"
        ) from error
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise FittingError(f"[fitting] hook {hook!r}: module {module_name!r} has no callable {factory_name!r}")
    try:
        fitter = factory(detector, dict(options or {}))
    except Exception as error:  # the user's code: whatever it raises, the job reports it as the hook's
        raise FittingError(
            f"[fitting] hook {hook!r}: the factory failed with {type(error).__name__}: {error}; expected a callable "
            "factory(detector, options) returning the fitter"
        ) from error
    if not isinstance(fitter, TrackFitter):
        raise FittingError(
            f"[fitting] hook {hook!r}: the factory returned {type(fitter).__name__}, which has no "
            "fit(spacepoints, candidates) -> FitResults method"
        )
    return CheckedFitter(hook, fitter)


def checked_fitter(fitter: TrackFitter | None, user: str) -> TrackFitter | None:
    """``fitter`` as ``user`` (a finder, e.g. ``"TrackFinder"``) holds it: None, the built-in
    :class:`~tracking_algs.fitting.kalman.KalmanFitter` (that class itself, not a subclass) and a
    :class:`CheckedFitter` as they are; any other fitter (one handed to the finder in Python, not through
    :func:`make_fitter`) as a :class:`CheckedFitter` named by its class, so that what it returns is checked as a
    plug-in hook's is.  Raises :class:`~tracking_algs.errors.FittingError` for an object without a ``fit`` method."""
    from tracking_algs.fitting.kalman import KalmanFitter

    if fitter is None or type(fitter) is KalmanFitter or isinstance(fitter, CheckedFitter):
        return fitter
    name = f"{type(fitter).__module__}.{type(fitter).__qualname__}"
    if not isinstance(fitter, TrackFitter):
        raise FittingError(f"{user} fitter {name!r}: a {type(fitter).__name__} has no fit(spacepoints, candidates) -> "
                           "FitResults method")  # fmt: skip
    return CheckedFitter(name, fitter, where=f"{user} fitter {name!r}")


_T = TypeVar("_T")
#: the event's and the fit's attrs column types that a plug-in fitter gets read-only views of (:func:`_read_only`)
_Columns = TypeVar("_Columns", Spacepoints, TrackCandidates, FitResults)


class CheckedFitter:
    """A plug-in hook's fitter as :func:`make_fitter` hands it out: calls go to ``fitter`` (the factory's object),
    given read-only views of the event's arrays, and what it returns is checked against the :class:`FitResults`
    contract (:func:`fit_problem`).  Whatever its ``fit``, ``refit`` or ``followed_hits`` raises, and results that
    break the contract, become a :class:`~tracking_algs.errors.FittingError` naming the hook, so the job fails that
    event (and can resume it) instead of writing bad numbers; a backend lost under the fitter stays what it is.
    ``where`` is how the messages name the fitter (default ``[fitting] hook 'HOOK'``; :func:`checked_fitter` names a
    fitter handed to a finder in Python by its finder and class)."""

    def __init__(self, hook: str, fitter: TrackFitter, where: str | None = None) -> None:
        #: the hook ("package.module:factory"); for a fitter handed to a finder, its class ("package.module.Class")
        self.hook = hook
        #: the object the factory returned
        self.fitter = fitter
        #: the start of every message about this fitter
        self.where = f"[fitting] hook {hook!r}" if where is None else where

    def fit(self, spacepoints: Spacepoints, candidates: TrackCandidates) -> FitResults:
        """``fitter.fit``, checked."""
        fit = self._call("fit", self.fitter.fit, _read_only(spacepoints), _read_only(candidates))
        return self._checked("fit", fit, spacepoints, candidates)

    @property
    def refit(self) -> Callable[[Spacepoints, TrackCandidates, FitResults | None], FitResults] | None:
        """``fitter.refit``, checked; None where the fitter has none (:func:`refit_on` then uses ``fit``)."""
        refit = getattr(self.fitter, "refit", None)
        if not callable(refit):
            return None

        def checked(spacepoints: Spacepoints, candidates: TrackCandidates, earlier: FitResults | None) -> FitResults:
            views = (_read_only(spacepoints), _read_only(candidates), None if earlier is None else _read_only(earlier))
            return self._checked("refit", self._call("refit", refit, *views), spacepoints, candidates)

        return checked

    @property
    def refitter(self) -> Callable[[], CheckedFitter] | None:
        """``fitter.refitter``, its fitter checked as this one; None where the fitter has none."""
        make = getattr(self.fitter, "refitter", None)
        if not callable(make):
            return None
        return lambda: CheckedFitter(self.hook, self._call("refitter", make), self.where)

    @property
    def followed_hits(self) -> Callable[..., np.ndarray] | None:
        """``fitter.followed_hits``, checked (one label or -1 per spacepoint); None where the fitter has none."""
        follow = getattr(self.fitter, "followed_hits", None)
        if not callable(follow):
            return None

        def checked(spacepoints: Spacepoints, candidates: TrackCandidates, fit: FitResults, *args: Any) -> np.ndarray:
            views = (_read_only(spacepoints), _read_only(candidates), _read_only(fit))
            proposal = np.asarray(self._call("followed_hits", follow, *views, *args))
            if proposal.shape != (len(spacepoints),) or proposal.dtype.kind not in "iu":
                raise FittingError(
                    f"{self.where}: followed_hits returned {proposal.dtype} of shape "
                    f"{proposal.shape}; expected integer labels of shape ({len(spacepoints)},)"
                )
            return proposal

        return checked

    def close(self) -> None:
        """``fitter.close()`` where it has one."""
        close_fitter(self.fitter)

    def _call(self, what: str, method: Callable[..., _T], *args: Any) -> _T:
        try:
            return method(*args)
        except (BackendUnavailableError, InferenceTimeoutError):
            raise  # the job stops for a lost backend, and resumes, whichever code met it
        except Exception as error:  # the user's code: whatever it raises fails the event, as the hook's
            raise FittingError(f"{self.where}: {what} failed with {type(error).__name__}: {error}") from error

    def _checked(self, what: str, fit: object, spacepoints: Spacepoints, candidates: TrackCandidates) -> FitResults:
        problem = fit_problem(fit, spacepoints, candidates)
        if problem is not None:
            raise FittingError(f"{self.where}: {what} returned {problem}")
        assert isinstance(fit, FitResults)
        return fit


def _read_only(value: _Columns) -> _Columns:
    """``value`` (an attrs value type of numpy columns) with read-only views of its arrays: a fitter that writes into
    its input raises instead of changing the event under the job."""
    views = {}
    for field in attrs.fields(type(value)):
        array = getattr(value, field.name)
        if isinstance(array, np.ndarray):
            view = array.view()
            view.flags.writeable = False
            views[field.name] = view
    return attrs.evolve(value, **views)


#: the relative tolerance of a covariance's symmetry, and how far below 0 the least eigenvalue of its correlation
#: matrix may lie (rounding); the built-in fitter's stay far inside both
_COV_RTOL = 1e-6


def fit_problem(fit: object, spacepoints: Spacepoints, candidates: TrackCandidates) -> str | None:
    """What makes ``fit`` not the :class:`FitResults` of fitting ``candidates`` on ``spacepoints`` (``None`` when
    nothing does), in words that name the first bad track and what was expected: its type, the tracks (the
    candidates' ids in :meth:`~tracking_algs.event.TrackCandidates.groups` order), each track's hits (spacepoint rows
    of that track, each once), the status codes (:class:`FitStatus`), finite numbers, ndf, χ² and hit counts not
    negative, p-values in [0, 1], ``n_outliers`` the track's hits flagged ``outlier`` and ``n_hits`` at most its
    other hits, for tracks not fitted (status other than ``OK``) the sentinel values (params, cov, chi2,
    pvalue and ndf 0), and for fitted (``OK``) tracks a symmetric, positive-definite covariance."""
    if not isinstance(fit, FitResults):
        return f"{type(fit).__name__}; expected FitResults"
    if len(candidates.labels) != len(spacepoints):
        return f"a fit of {len(candidates.labels)} labels; expected one label per spacepoint, {len(spacepoints)}"
    problem = fit_candidates_problem(fit, candidates)
    if problem is not None:
        return problem
    offsets, hit_track = fit.hit_offsets, fit.track_of_hit()
    bad = ~np.isin(fit.status, [int(status) for status in FitStatus])
    if bad.any():
        return _first_track(fit, bad, f"status {fit.status[bad][0]}", f"a FitStatus code, {_codes()}")
    for name in ("params", "cov", "chi2", "pvalue"):
        column = getattr(fit, name)
        bad = ~np.isfinite(column.reshape(len(fit), -1)).all(axis=1)
        if bad.any():
            return _first_track(fit, bad, f"non-finite {name}", "finite numbers (0 for tracks not fitted)")
    for name in ("ndf", "chi2", "n_hits", "n_outliers"):
        bad = getattr(fit, name) < 0
        if bad.any():
            return _first_track(fit, bad, f"{name} {getattr(fit, name)[bad][0]}", "0 or more")
    bad = (fit.pvalue < 0) | (fit.pvalue > 1)
    if bad.any():
        return _first_track(fit, bad, f"pvalue {fit.pvalue[bad][0]}", "a p-value in [0, 1]")
    hits = np.diff(offsets)
    outliers = np.bincount(hit_track[fit.outlier], minlength=len(fit))
    bad = fit.n_outliers != outliers
    if bad.any():
        return _first_track(fit, bad, f"n_outliers {fit.n_outliers[bad][0]}", f"its outlier hits, {outliers[bad][0]}")
    bad = fit.n_hits > hits - outliers
    if bad.any():
        return _first_track(fit, bad, f"n_hits {fit.n_hits[bad][0]}",
                            f"at most its hits less its outliers, {(hits - outliers)[bad][0]}")  # fmt: skip
    return _sentinel_problem(fit) or _covariance_problem(fit)


#: the columns that a track not fitted (status other than ``OK``) carries as 0 (:class:`FitStatus`)
_SENTINEL_COLUMNS = ("params", "cov", "chi2", "pvalue", "ndf")


def _sentinel_problem(fit: FitResults) -> str | None:
    """The first track not fitted (status other than ``OK``) that does not carry the sentinel values, 0 in every
    column of :data:`_SENTINEL_COLUMNS`; None when every such track does."""
    failed = ~fit.ok
    for name in _SENTINEL_COLUMNS:
        column = getattr(fit, name).reshape(len(fit), -1)
        bad = failed & (column != 0).any(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            entry = int(np.flatnonzero(column[row])[0])
            shape = getattr(fit, name).shape[1:]
            index = "".join(f"[{int(i)}]" for i in np.unravel_index(entry, shape)) if shape else ""
            status = FitStatus(int(fit.status[row]))
            return _first_track(
                fit,
                bad,
                f"{name}{index} {column[row, entry]} with status {int(status)} {status.name}",
                f"{name} 0 for a track that is not OK ({', '.join(_SENTINEL_COLUMNS)} all 0)",
            )
    return None


def _covariance_problem(fit: FitResults) -> str | None:
    ok = fit.ok
    cov = fit.cov[ok]
    variances = np.diagonal(cov, axis1=1, axis2=2)
    bad = np.zeros(len(fit), dtype=bool)
    bad[ok] = (variances <= 0).any(axis=1)
    if bad.any():
        return _first_track(fit, bad, "a covariance with a variance <= 0", "positive variances for an OK track")
    scale = np.sqrt(variances[:, :, None] * variances[:, None, :])
    correlation = cov / scale
    bad[ok] = (np.abs(correlation - np.swapaxes(correlation, 1, 2)) > _COV_RTOL).any(axis=(1, 2))
    if bad.any():
        return _first_track(fit, bad, "a covariance that is not symmetric", "a symmetric 5x5 covariance")
    if ok.any():
        bad[ok] = np.linalg.eigvalsh(correlation)[:, 0] <= -_COV_RTOL
    if bad.any():
        return _first_track(fit, bad, "a covariance that is not positive definite",
                            "a positive-definite 5x5 covariance for an OK track")  # fmt: skip
    return None


def _first_track(fit: FitResults, bad: np.ndarray, what: str, expected: str) -> str:
    row = int(np.flatnonzero(bad)[0])
    return f"{what} for track {fit.track_id[row]} (row {row}, {int(bad.sum())} tracks in all); expected {expected}"


def _codes() -> str:
    return ", ".join(f"{int(status)} {status.name}" for status in FitStatus)
