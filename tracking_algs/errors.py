"""Errors raised by the tracking layer (inference errors come from :mod:`inference_iface.errors`)."""

from __future__ import annotations


class TrackingError(Exception):
    """Base class of the tracking layer's errors."""


class EventFormatError(TrackingError, ValueError):
    """An event (its files, or the arrays given in Python) is malformed; the message names the file where there is one,
    and the row and column where known."""


class FittingError(TrackingError):
    """The fitting hook cannot be built or used (bad hook name, factory returning the wrong type)."""


class JobInputError(TrackingError):
    """A job's input cannot be used before any work starts: a missing input directory, or one without events.
    The message names the directory and what was looked for."""


class JobSetupError(TrackingError):
    """The job cannot run as set up: the executor's extra is not installed, its Dask scheduler cannot be reached, or
    a Dask worker runs numpy otherwise than the job. The message names what to change."""


class CheckpointError(TrackingError):
    """A training checkpoint cannot be resumed: it cannot be read (truncated, damaged), or it holds a model of another
    shape than the training options give. The message names the file and what to do."""


def os_error_text(error: OSError) -> str:
    """An ``OSError`` in words for a one-line message: the file it concerns, where it names one, and the system's
    reason (``"/out/tracks.csv: No space left on device"``)."""
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}"
