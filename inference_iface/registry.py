"""Finding backends and building interfaces from configuration.

Backends are classes deriving from :class:`~inference_iface.interface.InferenceInterface` with a
class attribute ``config_class`` (an attrs class deriving from :class:`BackendConfig`) and a
constructor taking one instance of it. They are found through the entry-point group
``inference_iface.backends`` (name → ``module:Class``) or registered at run time with
:func:`register_backend`. A third party adds a backend by declaring, in its own ``pyproject.toml``::

    [project.entry-points."inference_iface.backends"]
    mybackend = "mypackage.module:MyInference"
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs

from inference_iface.errors import BackendUnavailableError, ConfigError
from inference_iface.interface import InferenceInterface
from inference_iface.options import structure
from inference_iface.validation import CastPolicy

ENTRY_POINT_GROUP = "inference_iface.backends"

_lock = threading.Lock()
_registered: dict[str, type[InferenceInterface]] = {}


@attrs.frozen(kw_only=True)
class BackendConfig:
    """Options every backend understands; backend configs derive from it."""

    cast_policy: CastPolicy = "strict"


def register_backend(name: str, backend: type[InferenceInterface]) -> None:
    """Make ``backend`` available as ``name`` (overrides an entry point of the same name)."""
    if not (isinstance(backend, type) and issubclass(backend, InferenceInterface)):
        raise ConfigError(
            f"backend {name!r}: expected a backend class (a subclass of InferenceInterface), got {backend!r}"
        )
    if not hasattr(backend, "config_class"):
        raise ConfigError(f"backend {name!r}: {backend.__qualname__} has no 'config_class' attribute")
    with _lock:
        _registered[name] = backend


def available_backends() -> tuple[str, ...]:
    """Names of every backend known from entry points and run-time registration, sorted."""
    names = {entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)} | set(_registered)
    return tuple(sorted(names))


def backend_class(name: str) -> type[InferenceInterface]:
    """The backend class registered as ``name``.

    Raises:
        ConfigError: no backend has that name (the message lists the valid names).
        BackendUnavailableError: the backend's module cannot be imported (a missing extra, say).
    """
    with _lock:
        if name in _registered:
            return _registered[name]
    matches = [entry for entry in entry_points(group=ENTRY_POINT_GROUP) if entry.name == name]
    if not matches:
        raise ConfigError(f"unknown backend {name!r}; valid backends are {', '.join(available_backends())}")
    try:
        backend = matches[0].load()
    except ImportError as error:
        raise BackendUnavailableError(
            f"backend {name!r} cannot be loaded: {error}{_install_hint(matches[0], error)}"
        ) from error
    register_backend(name, backend)
    return backend


def _install_hint(entry: EntryPoint, error: ImportError) -> str:
    """``"; install it with: pip install 'dist[extra]'"`` when the module missing for ``entry`` is required by an
    extra of the distribution that declares the backend (the package name, ``-`` and ``.`` read as ``_``, starts
    with the module's: ``onnxruntime-gpu`` provides ``onnxruntime``), else ``""``."""
    missing = getattr(error, "name", None)
    dist = entry.dist
    if not missing or dist is None:
        return ""
    module = missing.partition(".")[0].lower()
    extras = []
    for requirement in dist.requires or ():
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        package = re.match(r"[A-Za-z0-9._-]+", requirement)
        if extra and package and re.sub(r"[-.]", "_", package.group().lower()).startswith(module):
            extras.append(extra.group(1))
    if not extras:
        return ""
    # the extra named after the backend, else one made for it rather than "all"
    narrowest = min(extras, key=lambda name: (name != entry.name, name == "all"))
    return f"; install it with: pip install '{dist.metadata['Name']}[{narrowest}]'"


def backend_name(config: BackendConfig) -> str:
    """The registered name of the backend whose ``config_class`` is ``type(config)``; the backends that cannot be
    loaded (a missing extra) are passed over, as they cannot be the one asked for unless none other is.

    Raises:
        BackendUnavailableError: no loadable backend takes such a config, and some backend cannot be loaded (the
            message gives each one's reason).
        ConfigError: no registered backend takes such a config.
    """
    unavailable = []
    for name in available_backends():
        try:
            backend = backend_class(name)
        except BackendUnavailableError as error:
            unavailable.append(str(error))
            continue
        if backend.config_class is type(config):
            return name
    wanted = type(config).__qualname__
    if unavailable:
        raise BackendUnavailableError(f"no loadable backend takes a {wanted}; {'; '.join(unavailable)}")
    raise ConfigError(f"no registered backend takes a {wanted}")


def make_config(options: Mapping[str, Any] | BackendConfig) -> tuple[str, BackendConfig]:
    """Resolve a mapping with a ``backend`` key (or a config instance) into (backend name, config)."""
    if isinstance(options, BackendConfig):
        return backend_name(options), options
    if not isinstance(options, Mapping):
        raise ConfigError(f"inference options must be a mapping or a backend config, got {type(options).__name__}")
    settings = dict(options)
    name = settings.pop("backend", None)
    if not isinstance(name, str):
        what = "need a 'backend' key" if name is None else f"name the backend as a string, got {name!r}"
        raise ConfigError(f"inference options {what}; valid backends are {', '.join(available_backends())}")
    return name, structure(settings, backend_class(name).config_class, where=f"backend {name!r}")


def create_inference(options: Mapping[str, Any] | BackendConfig) -> InferenceInterface:
    """Build an :class:`InferenceInterface` from a mapping (``{"backend": ..., ...}``) or a config instance.

    Raises:
        ConfigError: unknown backend or key, or a bad value (valid choices are listed).
        BackendUnavailableError, ModelError: the backend or model cannot be loaded.
    """
    name, config = make_config(options)
    backend: Any = backend_class(name)  # a registered backend's constructor takes its config (module docstring)
    return backend(config)
