"""SIGTERM taken as Ctrl-C by the commands that run long (``trkx run``, ``trkx serve``, ``trkx simulate``,
``trkx train``), and the exit status of a command stopped so."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

#: Exit status of a command stopped early (Ctrl-C, SIGTERM): what it finished is kept, and running it again goes on.
EXIT_STOPPED = 3


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does, so that the command stops the same
    way for both (a job keeps its finished events and writes their report; a server is stopped); the handler before
    is put back after. Outside the main thread (a command called from a library's thread) SIGTERM is left as it is."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    try:
        before = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signal handlers cannot be set there
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
