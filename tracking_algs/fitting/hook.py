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
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from inference_iface.errors import ConfigError
from inference_iface.options import structure
from tracking_algs.errors import FittingError
from tracking_algs.event import Spacepoints, TrackCandidates
from tracking_algs.fitting.config import KalmanConfig
from tracking_algs.fitting.results import FitResults
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

    hook: str = attrs.field(default="kalman")
    kalman: KalmanConfig = attrs.field(factory=KalmanConfig)
    options: dict[str, Any] = attrs.field(factory=dict)
    selection: TrackSelection = attrs.field(factory=TrackSelection)

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
    return fitter
