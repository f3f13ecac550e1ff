"""One event's outcome, the same whichever executor runs it: its :class:`EventResult`, or an :class:`EventFailure`.

Every executor (this process, the ``--jobs N`` worker pool, Dask workers) runs its events through
:class:`LazyProcessor`: the processor is built by the first event that needs it, in the process or thread that runs
the events, and a bad event or a lost backend becomes a failure record instead of an exception.
"""

from __future__ import annotations

import traceback

from inference_iface.errors import BackendUnavailableError, InferenceTimeoutError, InputError
from tracking_algs.errors import EventFormatError, FittingError
from tracking_algs.job.process import EventProcessor
from tracking_algs.job.sources import EventSource
from tracking_algs.job.store import EventFailure, EventResult
from tracking_algs.job_options import JobOptions

#: Errors that make one event bad without saying anything about the next one (a plug-in fitter's included).
EVENT_ERRORS = (EventFormatError, FittingError, InputError)
#: Errors that mean the backend is gone: the job stops (finished events are kept) and can be resumed.
BACKEND_ERRORS = (BackendUnavailableError, InferenceTimeoutError)

Outcome = EventResult | EventFailure


class LazyProcessor:
    """An :class:`EventProcessor` built from ``options`` by the first event it processes.

    A backend that cannot be reached while it is built fails that event with stage ``"backend"`` (the job then stops,
    as for a backend lost mid-job) and the next event tries again; any other error while building it, such as a model
    file that cannot be loaded, propagates: the job cannot start.
    """

    def __init__(self, options: JobOptions) -> None:
        self.options = options
        self._processor: EventProcessor | None = None

    def process(self, source: EventSource, event_id: int) -> Outcome:
        """Load event ``event_id`` from ``source`` and process it; the result, or the failure of this event."""
        if self._processor is None:
            try:
                self._processor = EventProcessor(self.options)
            except BACKEND_ERRORS as error:
                return EventFailure(event_id, "backend", f"{type(error).__name__}: {error}")
        return _process_one(self._processor, source, event_id)

    def close(self) -> None:
        """Release the processor's inference interfaces (when it was built)."""
        if self._processor is not None:
            self._processor.close()
            self._processor = None

    def __enter__(self) -> LazyProcessor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _process_one(processor: EventProcessor, source: EventSource, event_id: int) -> Outcome:
    stage = "read"
    try:
        event = source.load(event_id)
        stage = "process"
        return processor.process(event)
    except BACKEND_ERRORS as error:
        return EventFailure(event_id, "backend", f"{type(error).__name__}: {error}")
    except EVENT_ERRORS as error:
        return EventFailure(event_id, stage, f"{type(error).__name__}: {error}")
    except Exception as error:  # an unexpected failure of one event must not lose the others
        return EventFailure(event_id, stage, traceback.format_exception_only(error)[-1].strip())
