"""Files written whole or not at all, and interrupts held while a short write finishes."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

#: The signals :func:`interrupts_held` holds: Ctrl-C, and the polite request to stop.
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def write_atomically(path: Path, content: bytes) -> None:
    """Write ``path`` whole or not at all: to a temporary name beside it (``NAME.tmp``), then renamed; the temporary
    file is removed when the write fails or is interrupted (a full disk, Ctrl-C), and ``path`` stays as it was."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_bytes(content)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM wait; when it ends, the handlers before are put back and each signal
    that arrived meanwhile is raised again, once, in the order they came, so that it does what it would have done
    (``KeyboardInterrupt`` for Ctrl-C). For a block that must not stop half-way, such as saving a finished event:
    an interrupt there would lose the event and could leave a half-built zip writer behind, which complains on
    stderr when it is collected. Outside the main thread, or where a handler was set outside Python, nothing is
    held."""
    if threading.current_thread() is not threading.main_thread() or None in map(signal.getsignal, HELD_SIGNALS):
        yield  # handlers can be set only in the main thread, and one set outside Python cannot be put back
        return
    arrived: list[int] = []

    def hold(signum: int, _frame: object) -> None:
        if signum not in arrived:
            arrived.append(signum)

    before = {signum: signal.signal(signum, hold) for signum in HELD_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        for held in arrived:
            signal.raise_signal(held)
