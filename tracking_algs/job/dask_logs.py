"""What Dask logs that the job says in its own words, or that is no news to the user, left out of its log.

Each filter is narrow: it drops the records of one situation that the job handles and reports itself, and keeps
everything else Dask logs.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import PurePath

from distributed import Client, Worker
from distributed.core import Status

#: Dask's client log.
CLIENT_LOGGER = "distributed.client"
#: Tornado's log of the exceptions raised by callbacks of the event loop that Dask's client runs in a thread.
LOOP_CALLBACK_LOGGER = "tornado.application"
#: Dask's log of a worker's state machine, which warns of each task still running when the worker closes.
STATE_MACHINE_LOGGER = "distributed.worker.state_machine"


class ClientLogFilter(logging.Filter):
    """Leaves out what the job reports of a scheduler it connects to: the client's reports of a lost scheduler (its
    failed reconnection and the tracebacks of its closing, logged while it is not running) and of a result lost with
    its worker, which the scheduler computes again."""

    def __init__(self, client: Client) -> None:
        super().__init__()
        self.client = client

    def filter(self, record: logging.LogRecord) -> bool:
        return self.client.status == "running" and not str(record.msg).startswith("Couldn't gather")


class InterruptedCallFilter(logging.Filter):
    """Leaves out the traceback of Dask's failed cancelling of a call that Ctrl-C interrupted before it started.

    The client's blocking calls (``distributed.utils.sync``) hand a coroutine to the client's event loop and wait;
    on ``KeyboardInterrupt`` the wait schedules a callback that cancels the coroutine's future. Where the loop has not
    yet started the coroutine, that future is not yet bound, and the callback fails with ``NameError`` (Dask
    2026.8), which Tornado logs with its traceback. The interrupt itself goes on to stop the job, which says so and
    keeps what it finished; the call it interrupted only fetched a result or released a future of the job's."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is None or not isinstance(record.exc_info[1], NameError):
            return True
        trace = record.exc_info[2]
        while trace is not None and trace.tb_next is not None:
            trace = trace.tb_next
        if trace is None:
            return True
        code = trace.tb_frame.f_code
        return not (code.co_name == "cancel" and PurePath(code.co_filename).parts[-2:] == ("distributed", "utils.py"))


class ClosingWorkerFilter(logging.Filter):
    """Leaves out the warning ``Async instruction for <Task ...> ended with CancelledError`` while a worker closes:
    Dask logs it for each task the closing worker cancels (``Worker.close`` is the one place that cancels them), which
    is what an interrupted job's closing of its own cluster does to the events its workers were running."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self._worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        closing = self._worker.status in (Status.closing, Status.closing_gracefully, Status.closed)
        return not (closing and record.getMessage().endswith("ended with CancelledError"))


@contextlib.contextmanager
def filtered(logger_name: str, log_filter: logging.Filter) -> Iterator[None]:
    """``log_filter`` on the logger ``logger_name`` while the block runs."""
    logger = logging.getLogger(logger_name)
    logger.addFilter(log_filter)
    try:
        yield
    finally:
        logger.removeFilter(log_filter)
