"""The exception hierarchy shared by every backend.

Every error raised by the interface and its backends (a bad input, model, backend, deadline or option) derives
from :class:`InferenceError`, so a framework can catch one type; only looking a tensor up by a name the signature
lacks (:meth:`~inference_iface.signature.ModelSignature.input`, ``output``) raises ``KeyError``, as a mapping
does. Messages name the tensor, model, file or key involved and say what was expected.
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base class of every error raised by ``inference_iface`` and its backends."""


class InputError(InferenceError, ValueError):
    """The caller's inputs do not match the model signature (name, dtype, rank or dimension)."""


class ModelError(InferenceError):
    """The model cannot be loaded, its signature is unusable, or the model failed while running."""


class ModelChecksumError(ModelError):
    """A served model is not the one the configuration names: its checksum differs from ``model_checksum``."""


class BackendUnavailableError(InferenceError):
    """The backend (library, device or server) cannot be reached or loaded."""


class InferenceTimeoutError(InferenceError, TimeoutError):
    """A call did not finish within its deadline (``timeout_s``)."""


class ConfigError(InferenceError, ValueError):
    """A configuration or job-options value is invalid, unknown, or missing."""
